//! The binary form (`ringcast.rkyv.v1`, binary frames): commands are rkyv
//! archives of [`BinaryCommand`] read through rkyv's checked access, and
//! everything the server sends is an archive of [`ServerMessage`], written
//! from borrowed data by the mirror [`ServerMessageRef`].

use rkyv::rancor::{self, BoxedError, Fallible, Source};
use rkyv::ser::{Allocator, Writer};
use rkyv::string::{ArchivedString, StringResolver};
use rkyv::util::AlignedVec;
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::with::Inline;
use rkyv::Place;

use super::model::{
    ArchivedCommand, ArchivedServerMessage, BinaryCommand, Command, CommandBody, CommandError,
    ConnectInfo, DecodeError, ErrorCode, PresenceState, Reply, ReplyResult, ServerMessage,
};
use super::validate::{id_zero_error, validate_binary_payload, validate_command};
use crate::envelope::{ArchivedEnvelope, Envelope};

/// Decodes one binary command (the payload of one binary frame): an rkyv
/// archive of [`BinaryCommand`], validated with rkyv's checked access.
///
/// The bytes may be unaligned; they are copied into an aligned buffer when
/// needed. A payload flagged `data_is_json` must be valid UTF-8 JSON.
pub fn decode_binary(bytes: &[u8]) -> Result<Command, CommandError> {
    let command = with_aligned(bytes, |aligned| {
        let archived = rkyv::access::<ArchivedCommand, BoxedError>(aligned)?;
        rkyv::deserialize::<Command, BoxedError>(archived)
    })
    .map_err(|error| {
        CommandError::new(
            None,
            ErrorCode::BadRequest,
            format!("invalid binary command archive: {error}"),
        )
    })?;
    if command.id == 0 {
        return Err(id_zero_error());
    }
    if let CommandBody::Publish {
        data, data_is_json, ..
    }
    | CommandBody::Send {
        data, data_is_json, ..
    }
    | CommandBody::Rpc {
        data, data_is_json, ..
    } = &command.body
    {
        validate_binary_payload(command.id, data, *data_is_json)?;
    }
    validate_command(&command)?;
    Ok(command)
}

/// Encodes a binary command, as a client would. For clients and tests.
///
/// # Panics
///
/// If the command is too large for rkyv's 32-bit relative pointers (about 2 GiB).
pub fn encode_binary_command(command: &BinaryCommand) -> Vec<u8> {
    archive_to_vec(command)
}

/// Encodes a reply as an archive of [`ServerMessage::Reply`] or
/// [`ServerMessage::Error`].
///
/// Derived: the reply is cloned into the owned [`ServerMessage`] and that is
/// archived. The borrowed mirror (`ServerMessageRef`) saves the clone of
/// at most one short string, which is not a win worth its upkeep here: with
/// both paths in one build (`cargo bench -p ringcast-benches --bench client
/// -- client_reply_binary`, 2-core dev host, three runs) a publish reply took
/// 45 to 48 ns cloned and 41 to 46 ns through the mirror, an error reply 81
/// to 90 ns and 75 to 81 ns; across rebuilds of the bench the cloned path
/// alone moved between 32 and 67 ns. A reply is sent once per command, not
/// once per recipient.
pub fn encode_reply_binary(reply: &Reply) -> Vec<u8> {
    let message = match reply {
        Reply::Ok { id, result } => ServerMessage::Reply {
            id: *id,
            result: result.clone(),
        },
        Reply::Error { id, code, message } => ServerMessage::Error {
            id: *id,
            code: code.as_u16(),
            message: message.clone(),
            retry_after_ms: None,
        },
        Reply::ErrorRetry {
            id,
            code,
            message,
            retry_after_ms,
        } => ServerMessage::Error {
            id: *id,
            code: code.as_u16(),
            message: message.clone(),
            retry_after_ms: Some(*retry_after_ms),
        },
    };
    archive_to_vec(&message)
}

/// Encodes the connect message as an archive of [`ServerMessage::Connect`].
///
/// Derived, as [`encode_reply_binary`]: 48 to 54 ns cloned against 42 to
/// 43 ns through the mirror (`client_connect_binary`, same runs), once per
/// connection.
pub fn encode_connect_binary(info: &ConnectInfo) -> Vec<u8> {
    archive_to_vec(&ServerMessage::Connect(info.clone()))
}

/// Encodes a server-side subscription change as an archive of
/// [`ServerMessage::Subscribed`] (`subscribed == true`) or
/// [`ServerMessage::Unsubscribed`]. Derived, as [`encode_connect_binary`]:
/// sent once per change, not per publication.
pub fn encode_subscription_binary(channel: &str, subscribed: bool) -> Vec<u8> {
    let channel = channel.to_owned();
    archive_to_vec(&if subscribed {
        ServerMessage::Subscribed { channel }
    } else {
        ServerMessage::Unsubscribed { channel }
    })
}

/// Encodes a watched user's change as an archive of
/// [`ServerMessage::Presence`]. Derived, as [`encode_connect_binary`]: sent
/// once per watcher per change.
pub fn encode_presence_binary(state: &PresenceState) -> Vec<u8> {
    archive_to_vec(&ServerMessage::Presence(state.clone()))
}

/// Encodes the reply to a history command as an archive of
/// [`ServerMessage::History`], copying each stored envelope straight into
/// the archive (no intermediate [`Envelope`]). Fields as in
/// [`encode_history_json`](super::encode_history_json).
///
/// # Panics
///
/// If the reply is too large for rkyv's 32-bit relative pointers (about 2 GiB).
pub fn encode_history_binary(
    id: u64,
    stream: &str,
    epoch: u64,
    start_offset: u64,
    next_offset: u64,
    pushes: &[&ArchivedEnvelope],
) -> Vec<u8> {
    archive_to_vec(&ServerMessageRef::History {
        id,
        stream: StrRef(stream),
        epoch,
        start_offset,
        next_offset,
        entries: EnvelopesRef(pushes),
    })
}

/// Decodes one binary server message, as a client would. Checked access;
/// the bytes may be unaligned. For clients and tests.
pub fn decode_server_binary(bytes: &[u8]) -> Result<ServerMessage, DecodeError> {
    with_aligned(bytes, |aligned| {
        let archived = rkyv::access::<ArchivedServerMessage, BoxedError>(aligned)?;
        rkyv::deserialize::<ServerMessage, BoxedError>(archived)
    })
    .map_err(DecodeError::InvalidArchive)
}

/// Borrowed mirror of [`ServerMessage`] for encoding without clones, kept
/// for the two per-publication paths, where it is a measured win (`cargo
/// bench -p ringcast-benches --bench client` at d369cb0, 2-core dev host,
/// two runs):
/// - pushes ([`crate::envelope::EncodedPush::encode`], once per
///   publication, 60-byte payload): 68 to 84 ns, against 114 to 115 ns
///   cloning the envelope into `ServerMessage::Push` (`client_push_binary`);
/// - history pages ([`encode_history_binary`]): 0.39 µs for 10 entries and
///   2.5 to 3.7 µs for 100, against 0.97 to 1.08 µs and 10 to 17 µs copying
///   each stored envelope into an owned [`Envelope`] first
///   (`client_history_binary`).
///
/// Replies and the connect message are archived from `ServerMessage` itself
/// (see [`encode_reply_binary`]); their variants stay here only because the
/// archived tag is the variant's index, so this enum must list every variant
/// of `ServerMessage`, in order.
///
/// `#[rkyv(as = ...)]` makes it archive into `ArchivedServerMessage` itself,
/// which is only correct while the variants (order, field order, archived
/// field types) match `ServerMessage` exactly; `Inline` archives `&T` as
/// `T`. The tests compare both encodings byte for byte, and
/// [`crate::envelope::EncodedPush::encode`] re-validates in debug builds.
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedServerMessage)]
pub(crate) enum ServerMessageRef<'a> {
    #[expect(dead_code, reason = "holds the tag of ServerMessage::Connect")]
    Connect(#[rkyv(with = Inline)] &'a ConnectInfo),
    #[expect(dead_code, reason = "holds the tag of ServerMessage::Reply")]
    Reply {
        id: u64,
        #[rkyv(with = Inline)]
        result: &'a ReplyResult,
    },
    #[expect(dead_code, reason = "holds the tag of ServerMessage::Error")]
    Error {
        id: u64,
        code: u16,
        #[rkyv(with = Inline)]
        message: &'a String,
        retry_after_ms: Option<u64>,
    },
    Push(#[rkyv(with = Inline)] &'a Envelope),
    History {
        id: u64,
        stream: StrRef<'a>,
        epoch: u64,
        start_offset: u64,
        next_offset: u64,
        entries: EnvelopesRef<'a>,
    },
    #[expect(dead_code, reason = "holds the tag of ServerMessage::Subscribed")]
    Subscribed {
        channel: StrRef<'a>,
    },
    #[expect(dead_code, reason = "holds the tag of ServerMessage::Unsubscribed")]
    Unsubscribed {
        channel: StrRef<'a>,
    },
    #[expect(dead_code, reason = "holds the tag of ServerMessage::Im")]
    #[expect(
        clippy::borrowed_box,
        reason = "archives as ServerMessage::Im's Box does: a relative pointer"
    )]
    Im(#[rkyv(with = Inline)] &'a Box<super::im::ImEvent>),
    #[expect(dead_code, reason = "holds the tag of ServerMessage::Presence")]
    Presence(#[rkyv(with = Inline)] &'a PresenceState),
}

/// Archives a `&str` as a `String` would be.
pub(crate) struct StrRef<'a>(&'a str);

impl rkyv::Archive for StrRef<'_> {
    type Archived = ArchivedString;
    type Resolver = StringResolver;

    fn resolve(&self, resolver: StringResolver, out: Place<ArchivedString>) {
        ArchivedString::resolve_from_str(self.0, resolver, out);
    }
}

impl<S: Fallible + Writer + ?Sized> rkyv::Serialize<S> for StrRef<'_>
where
    S::Error: Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<StringResolver, S::Error> {
        ArchivedString::serialize_from_str(self.0, serializer)
    }
}

/// Archives stored envelopes as a `Vec<Envelope>` would be, reading each
/// one from its archive instead of from an owned [`Envelope`].
pub(crate) struct EnvelopesRef<'a>(&'a [&'a ArchivedEnvelope]);

impl rkyv::Archive for EnvelopesRef<'_> {
    type Archived = ArchivedVec<ArchivedEnvelope>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: VecResolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(self.0.len(), resolver, out);
    }
}

impl<S: Fallible + Allocator + Writer + ?Sized> rkyv::Serialize<S> for EnvelopesRef<'_>
where
    S::Error: Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<VecResolver, S::Error> {
        ArchivedVec::<ArchivedEnvelope>::serialize_from_iter::<ArchivedEnvelopeRef<'_>, _, _>(
            self.0.iter().copied().map(ArchivedEnvelopeRef),
            serializer,
        )
    }
}

/// Archives one stored envelope as an [`Envelope`] would be: the same
/// out-of-line data in the same order (channel, sender, data), then the
/// fixed part. The tests compare it byte for byte with the owned encoding.
pub(crate) struct ArchivedEnvelopeRef<'a>(&'a ArchivedEnvelope);

pub(crate) struct ArchivedEnvelopeRefResolver {
    channel: StringResolver,
    sender: StringResolver,
    data: VecResolver,
}

impl rkyv::Archive for ArchivedEnvelopeRef<'_> {
    type Archived = ArchivedEnvelope;
    type Resolver = ArchivedEnvelopeRefResolver;

    fn resolve(&self, resolver: ArchivedEnvelopeRefResolver, out: Place<ArchivedEnvelope>) {
        let env = self.0;
        rkyv::munge::munge!(let ArchivedEnvelope {
            id,
            offset,
            epoch,
            channel,
            sender,
            time_ms,
            data_is_json,
            data,
        } = out);
        env.id.to_native().resolve((), id);
        env.offset.to_native().resolve((), offset);
        env.epoch.to_native().resolve((), epoch);
        ArchivedString::resolve_from_str(env.channel.as_str(), resolver.channel, channel);
        ArchivedString::resolve_from_str(env.sender.as_str(), resolver.sender, sender);
        env.time_ms.to_native().resolve((), time_ms);
        env.data_is_json.resolve((), data_is_json);
        ArchivedVec::<u8>::resolve_from_len(env.data.len(), resolver.data, data);
    }
}

impl<S: Fallible + Allocator + Writer + ?Sized> rkyv::Serialize<S> for ArchivedEnvelopeRef<'_>
where
    S::Error: Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<ArchivedEnvelopeRefResolver, S::Error> {
        let env = self.0;
        Ok(ArchivedEnvelopeRefResolver {
            channel: ArchivedString::serialize_from_str(env.channel.as_str(), serializer)?,
            sender: ArchivedString::serialize_from_str(env.sender.as_str(), serializer)?,
            data: ArchivedVec::<u8>::serialize_from_slice(env.data.as_slice(), serializer)?,
        })
    }
}

/// Alignment rkyv archives are built with (`AlignedVec`'s default).
const ARCHIVE_ALIGNMENT: usize = 16;

/// Runs `f` on an aligned view of `bytes`, copying only when the network
/// buffer is not already aligned. rkyv's checked access rejects unaligned
/// archives, so this is about success, not safety.
fn with_aligned<R>(bytes: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    if bytes.as_ptr().addr().is_multiple_of(ARCHIVE_ALIGNMENT) {
        f(bytes)
    } else {
        let mut aligned = AlignedVec::<ARCHIVE_ALIGNMENT>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        f(aligned.as_slice())
    }
}

/// Serializes an archive into a plain `Vec`. rkyv pads relative to the
/// buffer start, so the bytes are the same as with an `AlignedVec`; the
/// receiver re-aligns them.
pub(super) fn archive_to_vec<T>(value: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            Vec<u8>,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    match rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, Vec::new()) {
        Ok(bytes) => bytes,
        // Only reachable past rkyv's 32-bit relative pointer range (~2 GiB):
        // far above any frame size limit, so a programmer error.
        Err(error) => panic!("rkyv serialization failed: {error}"),
    }
}
