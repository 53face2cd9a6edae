//! The IM layer on the engine side (`docs/im.md`; step 1: direct
//! conversations), shared by the shards, the store's commit sink and the
//! API: DM names, the pairs of the DMs touched since start (for routing),
//! and what a message must meet before it is stored.
//!
//! The shard side of the commands is `shard/im.rs`; the API twins are
//! `control/im_api.rs`.

use std::sync::Arc;

use ringcast_protocol::client::{check_msg_data, ErrorCode, MsgKind};
use ringcast_store::Durability;

use crate::config::{self, Config};

mod rewrite;
pub use rewrite::{rewrite, rewrite_store_error, RewriteAsk};

/// The namespace of direct conversations.
pub const DM_NAMESPACE: &str = "dm";
/// The namespace of groups (reserved now, built in step 2).
pub const GROUP_NAMESPACE: &str = "grp";
/// Bytes of the SHA-256 that name a DM: 2^64 conversations before a
/// collision is likely.
const DM_HASH_BYTES: usize = 16;

/// The two users of a DM, sorted bytewise (`a <= b`; equal for a
/// conversation with oneself).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DmPair {
    pub a: Arc<str>,
    pub b: Arc<str>,
}

impl DmPair {
    pub fn new(one: &str, other: &str) -> DmPair {
        let (a, b) = if one <= other {
            (one, other)
        } else {
            (other, one)
        };
        DmPair {
            a: a.into(),
            b: b.into(),
        }
    }

    pub fn has(&self, user: &str) -> bool {
        &*self.a == user || &*self.b == user
    }

    /// The other user of the pair (`user` itself in a DM with oneself).
    pub fn peer_of(&self, user: &str) -> &str {
        if &*self.a == user {
            &self.b
        } else {
            &self.a
        }
    }

    /// Both users, once each.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        let second = (self.a != self.b).then_some(&*self.b);
        std::iter::once(&*self.a).chain(second)
    }

    /// The conversation's stream name: `dm:` and the lower-case, unpadded
    /// base32 of the first 16 bytes of SHA-256(`len16(a) ‖ a ‖ b`), 29
    /// bytes whatever the ids.
    pub fn conv_name(&self) -> String {
        // SHA-256 from ring, the engine's crypto provider already.
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        // User ids are at most 250 bytes (`USER_ID_BYTES_MAX`).
        let len = u16::try_from(self.a.len()).unwrap_or(u16::MAX);
        context.update(&len.to_be_bytes());
        context.update(self.a.as_bytes());
        context.update(self.b.as_bytes());
        let digest = context.finish();
        let mut name = String::with_capacity(DM_NAMESPACE.len() + 1 + 26);
        name.push_str(DM_NAMESPACE);
        name.push(':');
        base32_lower(
            digest.as_ref().get(..DM_HASH_BYTES).unwrap_or_default(),
            &mut name,
        );
        name
    }
}

/// RFC 4648 base32, lower case, no padding.
fn base32_lower(bytes: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            let index = ((buffer >> bits) & 31) as usize;
            out.push(char::from(ALPHABET.get(index).copied().unwrap_or(b'a')));
        }
    }
    if bits > 0 {
        let index = ((buffer << (5 - bits)) & 31) as usize;
        out.push(char::from(ALPHABET.get(index).copied().unwrap_or(b'a')));
    }
}

/// Whether `channel` is in a namespace the IM layer reserves (only while
/// `im.enabled`): plain publish and subscribe are refused there.
pub fn is_reserved(config: &Config, channel: &str) -> bool {
    config.im.enabled
        && channel
            .split_once(':')
            .is_some_and(|(ns, _)| ns == DM_NAMESPACE || ns == GROUP_NAMESPACE)
}

/// Whether `channel` names a DM.
pub fn is_dm(channel: &str) -> bool {
    channel
        .split_once(':')
        .is_some_and(|(ns, _)| ns == DM_NAMESPACE)
}

/// The durability of DM streams: a `dm` namespace's, when configured, else `sync`.
pub fn dm_durability(config: &Config) -> Durability {
    let namespace = config
        .namespaces
        .iter()
        .find(|namespace| namespace.name == DM_NAMESPACE);
    match namespace.map(|namespace| namespace.durability) {
        Some(config::Durability::Buffered) => Durability::Buffered,
        Some(config::Durability::Sync) | None => Durability::Sync,
    }
}

/// The pairs of the DMs this process has touched: what the commit sink
/// routes a DM entry by (to every connection of both users), and what a
/// command naming a conversation checks membership against. Filled when a
/// DM is first sent to or looked up (a conversation list page), never
/// trusted beyond that: the store checks every append's pair against the
/// conversation's record. About 100 bytes per conversation touched.
#[derive(Debug, Default)]
pub struct DmPairs {
    by_conv: papaya::HashMap<Box<str>, Arc<DmPair>>,
}

impl DmPairs {
    pub fn get(&self, conv: &str) -> Option<Arc<DmPair>> {
        self.by_conv.pin().get(conv).cloned()
    }

    /// Records `pair` under its name; returns the name and the pair.
    pub fn remember(&self, pair: DmPair) -> (String, Arc<DmPair>) {
        let name = pair.conv_name();
        let map = self.by_conv.pin();
        let pair = map
            .get_or_insert_with(name.clone().into_boxed_str(), || Arc::new(pair))
            .clone();
        (name, pair)
    }

    /// Forgets the pair of a conversation the store refused to start
    /// (`StoreError::ConversationLimit`: it refuses only a new conversation,
    /// and no other message can have started it), so that refused sends to
    /// ever new users do not grow the map.
    pub fn forget_unstarted(&self, conv: &str) {
        self.by_conv.pin().remove(conv);
    }

    /// Records a pair found in `user`'s conversation list.
    pub fn remember_listed(&self, user: &str, peer: &str, conv: &str) {
        let pair = DmPair::new(user, peer);
        // A name that is not this pair's is not a DM this layer made.
        if pair.conv_name() == conv {
            self.remember(pair);
        }
    }
}

/// An IM event's frames in both forms, built once for all its recipients.
#[derive(Debug)]
pub struct ImFrames {
    pub json: bytes::Bytes,
    pub binary: bytes::Bytes,
}

/// Both frames of an IM event.
pub fn event_frames(event: &ringcast_protocol::client::ImEvent) -> Arc<ImFrames> {
    use ringcast_protocol::client::{encode_im_event_binary, encode_im_event_json};
    use ringcast_protocol::frame::{encode_frame, OpCode};
    Arc::new(ImFrames {
        json: encode_frame(OpCode::Text, &encode_im_event_json(event), None),
        binary: encode_frame(OpCode::Binary, &encode_im_event_binary(event), None),
    })
}

/// Conversations read per page while looking a conversation up in a
/// user's list (at most `im.conversations_per_user_max` in all).
const LOOKUP_PAGE_CONVS: usize = 1000;

/// The pair of `conv` if `user` is one of it (`None`: not a member): from
/// what this process knows, else from the user's conversation list, paged
/// on a store reader (which also remembers every pair it meets).
pub async fn resolve_member(
    shared: &crate::engine::Shared,
    user: &str,
    conv: &str,
) -> Result<Option<Arc<DmPair>>, ringcast_store::StoreError> {
    use ringcast_store::StoreError;
    if let Some(pair) = shared.dm_pairs.get(conv) {
        return Ok(pair.has(user).then_some(pair));
    }
    let mut cursor = None;
    loop {
        let page = shared
            .store
            .conv_list(user, cursor, LOOKUP_PAGE_CONVS)?
            .await
            .map_err(|_canceled| StoreError::Closed)??;
        for summary in &page.convs {
            shared
                .dm_pairs
                .remember_listed(user, &summary.peer, &summary.conv);
        }
        if page.convs.iter().any(|summary| summary.conv == conv) {
            return Ok(shared.dm_pairs.get(conv));
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(None),
        }
    }
}

/// The reply to a stored `msg_send`.
pub fn sent_reply(
    conv: String,
    stored: &ringcast_store::ImAppended,
) -> ringcast_protocol::client::ImReply {
    let appended = &stored.appended;
    ringcast_protocol::client::ImReply::Sent {
        conv,
        message_id: appended.message_id.0,
        offset: appended.offset,
        epoch: appended.epoch,
        time_ms: appended.push.envelope().time_ms.to_native(),
        duplicate: appended.duplicate,
    }
}

/// A conversation as the wire shows it.
pub fn conv_info(summary: ringcast_store::ConvSummary) -> ringcast_protocol::client::ConvInfo {
    ringcast_protocol::client::ConvInfo {
        conv: summary.conv,
        sid: summary.sid,
        peer: summary.peer,
        epoch: summary.epoch,
        last_offset: summary.last_offset,
        last_time_ms: summary.last_time_ms,
        last_msg_offset: summary.last_msg_offset,
        read_offset: summary.read_offset,
        unread: summary.unread,
    }
}

/// A refusal: the client's error code and message.
pub type Refusal = (ErrorCode, String);

/// Checks a message's data against its kind's shape (107) and the
/// configured byte limit (106).
pub fn check_message(config: &Config, kind: MsgKind, data: &[u8]) -> Result<(), Refusal> {
    let size = check_msg_data(kind, data).map_err(|reason| (ErrorCode::BadRequest, reason))?;
    crate::payload::check(config, data, true).map_err(|reason| (ErrorCode::BadRequest, reason))?;
    let (max, key) = match kind {
        MsgKind::Text => (config.im.text_bytes_max, "im.text_bytes_max"),
        MsgKind::Custom => (config.im.custom_bytes_max, "im.custom_bytes_max"),
        MsgKind::Attachment => (
            config.im.attachment_url_bytes_max,
            "im.attachment_url_bytes_max",
        ),
    };
    if size.bytes > max {
        return Err((
            ErrorCode::LimitExceeded,
            format!(
                "a {} message's {} is {} bytes, over {key} ({max})",
                kind.as_str(),
                if kind == MsgKind::Attachment {
                    "URL"
                } else {
                    "data"
                },
                size.bytes
            ),
        ));
    }
    Ok(())
}

/// What a stream entry of a DM holds as its data: the kind and the
/// client's data, `{"kind":"text","data":{"text":"hi"}}` (step 1 keeps the
/// kind in the data; the `ImEntry` variant of `docs/im.md` comes with the
/// kinds that do not count).
pub fn entry_data(kind: MsgKind, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 32);
    out.extend_from_slice(b"{\"kind\":\"");
    out.extend_from_slice(kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"data\":");
    out.extend_from_slice(data);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dm_names_are_symmetric_fixed_length_and_distinct() {
        let ab = DmPair::new("alice", "bob");
        assert_eq!(ab, DmPair::new("bob", "alice"));
        let name = ab.conv_name();
        assert_eq!(name.len(), 29, "{name}");
        assert!(name.starts_with("dm:"));
        assert!(name[3..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
        // The length prefix keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            DmPair::new("ab", "c").conv_name(),
            DmPair::new("a", "bc").conv_name()
        );
        let long = "x".repeat(250);
        assert_eq!(DmPair::new(&long, "y").conv_name().len(), 29);
    }

    #[test]
    fn base32_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foo", "mzxw6"),
            ("foob", "mzxw6yq"),
            ("fooba", "mzxw6ytb"),
            ("foobar", "mzxw6ytboi"),
        ] {
            let mut out = String::new();
            base32_lower(input.as_bytes(), &mut out);
            assert_eq!(out, expected, "{input}");
        }
    }

    #[test]
    fn a_pair_lists_each_user_once() {
        let own = DmPair::new("me", "me");
        assert_eq!(own.users().collect::<Vec<_>>(), ["me"]);
        assert_eq!(own.peer_of("me"), "me");
        let pair = DmPair::new("b", "a");
        assert_eq!(pair.users().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(pair.peer_of("a"), "b");
        assert!(pair.has("b") && !pair.has("c"));
    }
}
