//! What engine processes say to each other over NATS (docs/cluster.md).
//!
//! Every message is one rkyv archive, read with checked access: the bytes
//! come from the network. A publication crosses as the archived push the
//! publisher or the store encoded, byte for byte (`pushes`), so it is
//! encoded once in the whole cluster; the receiver validates it
//! (`EncodedPush::from_untrusted`) before anything reads it.

use rkyv::rancor;
use rkyv::util::AlignedVec;

/// Publications for one destination subject (a channel bucket or a
/// node), in the order the sender handed them over.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PushBatch {
    /// The sending node.
    pub node: u8,
    /// Each an archived `ServerMessage::Push`.
    pub pushes: Vec<Vec<u8>>,
}

/// A node's heartbeat on `<prefix>.hb`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub node: u8,
    /// Picked at start: a restarted node is a new incarnation, whose
    /// routes and presence start from nothing.
    pub incarnation: u64,
    /// Counts heartbeats of this incarnation.
    pub seq: u64,
    /// The node stopped taking connections (`/api/drain`).
    pub draining: bool,
    /// The node owns its store partition (its `node_id` is below
    /// `cluster.stores`).
    pub owns_store: bool,
    /// Open client connections.
    pub connections: u64,
    /// A hash of the settings every node of the cluster must share
    /// (`cluster.stores`, `cluster.channel_buckets`, the namespaces'
    /// storage): a node that hears another value says `conflict`.
    pub settings: u64,
}

/// Broadcast on `<prefix>.all`: what every node does to its own
/// connections.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Broadcast {
    /// Close every connection of `user` with `code`.
    DisconnectUser { user: String, code: u16 },
    /// Subscribe or unsubscribe every connection of `user` to `channel`.
    SubscribeUser {
        user: String,
        channel: String,
        subscribe: bool,
    },
    /// Publications of durable streams the node sent may have been lost
    /// on their way (its NATS connection was cut, or its queue to NATS was
    /// full): every node cuts its subscribers of durable streams, who
    /// recover from the owners (docs/cluster.md, "NATS failure").
    PublicationsLost { node: u8, incarnation: u64 },
    /// The owner of partition `owner` asks `node` for its whole set of
    /// users and watches of that partition (the owner forgot them: it
    /// took the node for dead, or it just started).
    Resend { owner: u8, node: u8 },
}

/// A request to the owner of a store partition, on `<prefix>.s.<p>`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum StoreRequest {
    Append(AppendWire),
    Read(ReadWire),
    /// Set the cursor of `(user, device)` in `stream` to `offset`.
    SetCursor {
        user: String,
        device: String,
        stream: String,
        offset: u64,
    },
    /// The cursor of `(user, device)` in `stream`.
    GetCursor {
        user: String,
        device: String,
        stream: String,
    },
    /// Users whose first connection opened or last one closed on `node`,
    /// for the owner's user directory.
    Users {
        node: u8,
        incarnation: u64,
        /// Whether this is the node's whole set for the partition (after
        /// the owner restarted): the owner replaces what it held.
        full: bool,
        changes: Vec<UserChange>,
    },
    /// Which nodes hold connections of `user`.
    UserNodes {
        user: String,
    },
    /// An IM store call for the owner of the IM partition: an archived
    /// `ImCall` of the engine (its arguments are the store's own types,
    /// which this crate does not know), answered with [`StoreReply::Im`].
    Im(Vec<u8>),
    /// An IM event (a typing signal, a read, a receipt) for the
    /// connections of `users` on other nodes, sent to the IM partition's
    /// owner, which knows where they are and passes it on (not answered).
    ImRelay(ImEventWire),
    /// Users `node` starts (`present`) or stops watching: the owner tells
    /// it which other nodes hold their connections, now and on every
    /// change ([`PresenceUpdates`]).
    Watches {
        node: u8,
        incarnation: u64,
        /// The node's whole set for the partition: the owner replaces
        /// what it held.
        full: bool,
        changes: Vec<UserChange>,
    },
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UserChange {
    pub user: String,
    /// Whether the node holds a connection of the user now.
    pub present: bool,
}

/// An append, as `ringcast_store::AppendRequest` carries it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AppendWire {
    pub stream: String,
    pub push: Vec<u8>,
    /// 0: buffered, 1: sync.
    pub durability: u8,
    pub client_msg_id: Option<String>,
    pub retention_count: u64,
    pub retention_age_ms: u64,
    pub outbox: Vec<OutboxWire>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct OutboxWire {
    pub kind: u8,
    pub key: String,
    pub due_ms: u64,
    pub body: Vec<u8>,
}

/// A history read, as `ringcast_store::ReadRequest` carries it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReadWire {
    pub stream: String,
    pub since: Option<u64>,
    pub before: Option<u64>,
    pub limit: u32,
    pub reverse: bool,
    pub from_time_ms: Option<u64>,
    pub before_time_ms: Option<u64>,
}

/// The owner's answer to a [`StoreRequest`].
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum StoreReply {
    Appended {
        message_id: u64,
        offset: u64,
        epoch: u64,
        /// The stored entry, id, offset and epoch stamped.
        push: Vec<u8>,
        duplicate: bool,
    },
    Read {
        entries: Vec<Vec<u8>>,
        epoch: u64,
        first_offset: u64,
        next_offset: u64,
    },
    Offset(u64),
    /// A cursor: `None` when there is none in the stream's current epoch.
    Cursor(Option<(u64, u64)>),
    Done,
    UserNodes {
        /// Every live node holding a connection of the user.
        nodes: Vec<u8>,
    },
    /// An archived `ImAnswer` of the engine.
    Im(Vec<u8>),
    /// The owner's store refused: who is at fault (`ErrorSource` as
    /// 0 caller, 1 load, 2 resource, 3 disk, 4 shutdown) and what it said.
    Error {
        source: u8,
        message: String,
    },
}

/// An IM event for the connections of `users` but `skip_user`'s ("" for
/// none) on every node but `origin`, which delivered it to its own.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ImEventWire {
    pub users: Vec<String>,
    pub skip_user: String,
    pub origin: u8,
    pub event: crate::client::ImEvent,
}

/// From the IM partition's owner to one node, on `<prefix>.i.<node>`: the
/// IM entries and events for that node's connections, in the order the
/// owner committed or relayed them.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ImBatch {
    pub node: u8,
    pub items: Vec<ImItem>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ImItem {
    /// A stored entry of a conversation (an archived push) for the
    /// receiver's connections of `users`; a DM's carries its pair, which
    /// the receiver remembers as the owner's sink does.
    Entry {
        push: Vec<u8>,
        users: Vec<String>,
        pair: Option<(String, String)>,
    },
    Event(ImEventWire),
}

/// From a partition's owner to a node watching some of its users, on
/// `<prefix>.w.<node>`: for each user, the nodes other than the receiver
/// holding a connection of it (a bitmask of node ids).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PresenceUpdates {
    pub changes: Vec<(String, u64)>,
}

/// A scatter-gather question to every node, on `<prefix>.q`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// The node's `/api/stats` object.
    Stats,
    /// The node's local subscribers of `channel`.
    ChannelPresence { channel: String },
}

/// A node's answer to a [`Query`]: JSON, as the API will print it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct QueryReply {
    pub node: u8,
    pub json: String,
}

/// Bytes that are not a valid archive of the expected message.
#[derive(Debug, thiserror::Error)]
#[error("invalid cluster message: {0}")]
pub struct WireError(String);

/// Encodes one message.
///
/// # Panics
///
/// If the message is too large for rkyv's 32-bit relative pointers (about
/// 2 GiB); batches are bounded by NATS's `max_payload` long before.
pub fn encode<T>(message: &T) -> AlignedVec
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    match rkyv::to_bytes::<rancor::Error>(message) {
        Ok(bytes) => bytes,
        Err(error) => panic!("encoding a cluster message failed: {error}"),
    }
}

/// Decodes one message from untrusted bytes (validated, then copied out
/// of the archive).
pub fn decode<T>(bytes: &[u8]) -> Result<T, WireError>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rancor::Error>(&aligned).map_err(|error| WireError(error.to_string()))
}

/// Reads a batch of publications in place (checked access; the bytes are
/// copied once, to align them): `f` gets the sending node and each
/// archived push's bytes, without a copy per push.
pub fn read_push_batch<R>(
    bytes: &[u8],
    f: impl FnOnce(u8, &mut dyn Iterator<Item = &[u8]>) -> R,
) -> Result<R, WireError> {
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    let batch = rkyv::access::<ArchivedPushBatch, rancor::Error>(&aligned)
        .map_err(|error| WireError(error.to_string()))?;
    let mut pushes = batch.pushes.iter().map(|push| push.as_slice());
    Ok(f(batch.node, &mut pushes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_decodes_as_encoded() {
        let batch = PushBatch {
            node: 3,
            pushes: vec![vec![1, 2, 3], vec![]],
        };
        assert_eq!(
            decode::<PushBatch>(&encode(&batch)).expect("decodes"),
            batch
        );
        let read = read_push_batch(&encode(&batch), |node, pushes| {
            (node, pushes.map(<[u8]>::to_vec).collect::<Vec<_>>())
        })
        .expect("reads");
        assert_eq!(read, (batch.node, batch.pushes.clone()));
        assert!(read_push_batch(&[1, 2, 3], |_, _| ()).is_err());
        let request = StoreRequest::Append(AppendWire {
            stream: "user:a".into(),
            push: vec![9; 40],
            durability: 1,
            client_msg_id: Some("k".into()),
            retention_count: 10,
            retention_age_ms: 1000,
            outbox: vec![OutboxWire {
                kind: 4,
                key: "a".into(),
                due_ms: 5,
                body: b"{}".to_vec(),
            }],
        });
        assert_eq!(
            decode::<StoreRequest>(&encode(&request)).expect("decodes"),
            request
        );
        let reply = StoreReply::UserNodes { nodes: vec![1, 63] };
        assert_eq!(
            decode::<StoreReply>(&encode(&reply)).expect("decodes"),
            reply
        );
    }

    #[test]
    fn garbage_and_truncated_archives_are_refused() {
        let bytes = encode(&Broadcast::DisconnectUser {
            user: "bob".into(),
            code: 4000,
        });
        for cut in 0..bytes.len() {
            // A cut archive must fail or decode to something valid; it
            // must never panic or read out of bounds.
            let _ = decode::<Broadcast>(&bytes[..cut]);
        }
        assert!(decode::<StoreRequest>(&[0xff; 7]).is_err());
        assert!(decode::<Heartbeat>(b"").is_err());
        let beat = Heartbeat {
            node: 1,
            incarnation: 2,
            seq: 3,
            draining: false,
            owns_store: true,
            connections: 4,
            settings: 5,
        };
        assert_eq!(decode::<Heartbeat>(&encode(&beat)).expect("decodes"), beat);
    }
}
