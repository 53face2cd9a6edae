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

pub mod dm_policy;
mod rewrite;
pub use rewrite::{prepare_rewrite, rewrite, rewrite_store_error, rewritten_reply, RewriteAsk};

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
        hashed_name(DM_NAMESPACE, &self.a, &self.b)
    }
}

/// `namespace:` and the lower-case, unpadded base32 of the first 16 bytes
/// of SHA-256(`len16(first) ‖ first ‖ second`): 26 characters.
fn hashed_name(namespace: &str, first: &str, second: &str) -> String {
    // SHA-256 from ring, the engine's crypto provider already.
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    // User ids are at most 250 bytes (`USER_ID_BYTES_MAX`).
    let len = u16::try_from(first.len()).unwrap_or(u16::MAX);
    context.update(&len.to_be_bytes());
    context.update(first.as_bytes());
    context.update(second.as_bytes());
    let digest = context.finish();
    let mut name = String::with_capacity(namespace.len() + 1 + 26);
    name.push_str(namespace);
    name.push(':');
    base32_lower(
        digest.as_ref().get(..DM_HASH_BYTES).unwrap_or_default(),
        &mut name,
    );
    name
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

/// Whether `channel` names a group.
pub fn is_group(channel: &str) -> bool {
    ringcast_protocol::client::is_group_conv(channel)
}

/// Whether `channel` names a conversation (a DM or a group).
pub fn is_conv(channel: &str) -> bool {
    channel
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
    im_durability(config, DM_NAMESPACE)
}

/// The durability of group streams: a `grp` namespace's, when configured,
/// else `sync`.
pub fn group_durability(config: &Config) -> Durability {
    im_durability(config, GROUP_NAMESPACE)
}

/// The store's retention of DM streams (`im.dm_retention_*`; 0: no limit).
pub fn dm_retention(config: &Config) -> ringcast_store::Retention {
    retention(config.im.dm_retention_count, config.im.dm_retention_age)
}

/// The store's retention of group streams (`im.group_retention_*`).
pub fn group_retention(config: &Config) -> ringcast_store::Retention {
    retention(
        config.im.group_retention_count,
        config.im.group_retention_age,
    )
}

fn retention(count_max: u64, age_max: std::time::Duration) -> ringcast_store::Retention {
    let unlimited = ringcast_store::Retention::UNLIMITED;
    ringcast_store::Retention {
        count_max: if count_max == 0 {
            unlimited.count_max
        } else {
            count_max
        },
        age_max: if age_max.is_zero() {
            unlimited.age_max
        } else {
            age_max
        },
    }
}

fn im_durability(config: &Config, name: &str) -> Durability {
    let namespace = config
        .namespaces
        .iter()
        .find(|namespace| namespace.name == name);
    match namespace.map(|namespace| namespace.durability) {
        Some(config::Durability::Buffered) => Durability::Buffered,
        Some(config::Durability::Sync) | None => Durability::Sync,
    }
}

/// The pairs of the DMs this process has touched: what the commit sink
/// routes a DM entry by (to every connection of both users), and what a
/// command naming a conversation checks membership against. A pair is
/// remembered only once the store holds the conversation: the commit sink
/// learns a new one from the store's answer (`ImAppended::pair`, after
/// the commit), and a list page, a sync or a point read names only stored
/// ones; a refused first message leaves nothing. Never trusted beyond
/// that: the store checks every append's pair against the conversation's
/// record. About 100 bytes per conversation touched.
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

    /// The name and pair of the DM between `one` and `other`, without
    /// remembering it: a message to a user may start a conversation, and
    /// only the store says whether it did.
    pub fn pair_of(&self, one: &str, other: &str) -> (String, Arc<DmPair>) {
        let pair = DmPair::new(one, other);
        let name = pair.conv_name();
        let pair = self.get(&name).unwrap_or_else(|| Arc::new(pair));
        (name, pair)
    }

    /// The pair of `conv`, whose entry the store just committed with the
    /// users `stored` (sorted): the one remembered, or this one from now on.
    pub fn committed(&self, conv: &str, stored: &(String, String)) -> Arc<DmPair> {
        if let Some(pair) = self.get(conv) {
            return pair;
        }
        self.remember(DmPair::new(&stored.0, &stored.1)).1
    }

    /// Records a pair found in `user`'s conversation list.
    pub fn remember_listed(&self, user: &str, peer: &str, conv: &str) {
        if self.by_conv.pin().contains_key(conv) {
            return;
        }
        let pair = DmPair::new(user, peer);
        // A name that is not this pair's is not a DM this layer made.
        if pair.conv_name() == conv {
            self.remember(pair);
        }
    }
}

// The wire's limits are the store's: one definition each, checked here.
const _: () = assert!(
    ringcast_protocol::client::GROUP_USERS_MAX == ringcast_store::GROUP_TARGETS_MAX
        && ringcast_protocol::client::GROUP_TEXT_BYTES_MAX == ringcast_store::GROUP_TEXT_BYTES_MAX
);

/// Who a group entry goes to, as the writer decided at its offset: every
/// connection of `members` and of `removed` (the users this entry removed,
/// who get it and nothing after it).
#[derive(Debug)]
pub struct GroupRecipients {
    pub members: Arc<[String]>,
    pub removed: Vec<String>,
}

impl GroupRecipients {
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.members
            .iter()
            .chain(self.removed.iter())
            .map(String::as_str)
    }

    /// How many users get the entry.
    pub fn count(&self) -> usize {
        self.members.len() + self.removed.len()
    }
}

/// The name of a group `actor` creates (`""`: the system): with a
/// `client_msg_id`, `grp:` and 26 base32 characters of SHA-256 of the
/// actor and the id, so a retry names the same group and the store answers
/// it with its original, even after a restart (review finding 4); without
/// one, [`group_conv_name`] of `message_id`. The two forms differ in
/// length, so they never meet.
pub fn created_group_name(actor: &str, client_msg_id: Option<&str>, message_id: u64) -> String {
    match client_msg_id {
        Some(client_msg_id) => hashed_name(GROUP_NAMESPACE, actor, client_msg_id),
        None => group_conv_name(message_id),
    }
}

/// The name of a group the system creates for `owner`: as
/// [`created_group_name`] by the system (`""`), with the owner (its
/// length first, so no two owner-and-id pairs read alike) in what is
/// hashed, so one `client_msg_id` sent for two owners names two groups,
/// while a retry for the same owner names the same one.
pub fn system_group_name(owner: &str, client_msg_id: Option<&str>, message_id: u64) -> String {
    let keyed = client_msg_id.map(|id| format!("{}:{owner}{id}", owner.len()));
    created_group_name("", keyed.as_deref(), message_id)
}

/// A new group's name: `grp:` and the 13 lower-case base32 characters of
/// a message id (unique on the node, as message ids are).
pub fn group_conv_name(message_id: u64) -> String {
    let mut name = String::with_capacity(GROUP_NAMESPACE.len() + 1 + 13);
    name.push_str(GROUP_NAMESPACE);
    name.push(':');
    base32_lower(&message_id.to_be_bytes(), &mut name);
    name
}

/// The data of a `member` entry, in the shape of a message's
/// (`{"kind":"member","data":{...}}`): `{op, actor, targets, ...}` with
/// the op's own fields (`docs/im.md`, "What a conversation stream holds").
/// `actor` is empty for the system.
pub fn member_entry_data(actor: &str, op: &ringcast_store::GroupOp) -> Vec<u8> {
    use ringcast_store::GroupOp;
    let strings = |users: &[String]| serde_json::Value::from(users.to_vec());
    let mut data = serde_json::Map::new();
    let (name, targets): (&str, serde_json::Value) = match op {
        GroupOp::Create {
            owner,
            name,
            info,
            members,
            members_can_invite,
            ..
        } => {
            data.insert("owner".into(), owner.as_str().into());
            data.insert("name".into(), name.as_str().into());
            data.insert("info".into(), info.as_str().into());
            data.insert("members_can_invite".into(), (*members_can_invite).into());
            ("create", strings(members))
        }
        GroupOp::Add { users } => ("add", strings(users)),
        GroupOp::Remove { users } => ("remove", strings(users)),
        GroupOp::Leave => ("leave", strings(&[actor.to_owned()])),
        GroupOp::Role { user, role } => {
            data.insert("role".into(), wire_role(*role).as_str().into());
            ("role", strings(std::slice::from_ref(user)))
        }
        GroupOp::Transfer { to } => ("transfer", strings(std::slice::from_ref(to))),
        GroupOp::Mute { user, until_ms } => {
            data.insert("until_ms".into(), (*until_ms).into());
            ("mute", strings(std::slice::from_ref(user)))
        }
        GroupOp::Unmute { user } => ("unmute", strings(std::slice::from_ref(user))),
        GroupOp::MuteAll => {
            data.insert("on".into(), true.into());
            ("mute_all", strings(&[]))
        }
        GroupOp::UnmuteAll => {
            data.insert("on".into(), false.into());
            ("mute_all", strings(&[]))
        }
        GroupOp::Update { name, info } => {
            if let Some(name) = name {
                data.insert("name".into(), name.as_str().into());
            }
            if let Some(info) = info {
                data.insert("info".into(), info.as_str().into());
            }
            ("update", strings(&[]))
        }
        GroupOp::SetMembersMax { members_max } => {
            data.insert("members_max".into(), (*members_max).into());
            ("members_max", strings(&[]))
        }
        GroupOp::Dissolve => ("dissolve", strings(&[])),
    };
    data.insert("op".into(), name.into());
    data.insert("actor".into(), actor.into());
    data.insert("targets".into(), targets);
    let inner = serde_json::Value::Object(data).to_string();
    let mut out = Vec::with_capacity(inner.len() + 32);
    out.extend_from_slice(b"{\"kind\":\"member\",\"data\":");
    out.extend_from_slice(inner.as_bytes());
    out.push(b'}');
    out
}

/// The store's op for a `group_create` (`members_can_invite` `None`:
/// `im.members_can_invite`; `members_max` `None`: `im.group_members_max`).
/// New members see the history from their join on.
pub fn create_op(
    config: &Config,
    owner: String,
    command: ringcast_protocol::client::ImCommand,
    members_max: Option<u32>,
) -> Option<(ringcast_store::GroupOp, Option<String>)> {
    let ringcast_protocol::client::ImCommand::GroupCreate {
        name,
        info,
        members,
        members_can_invite,
        client_msg_id,
    } = command
    else {
        return None;
    };
    let op = ringcast_store::GroupOp::Create {
        owner,
        name,
        info,
        members,
        members_max,
        history_from_join: true,
        members_can_invite: members_can_invite.unwrap_or(config.im.members_can_invite),
    };
    Some((op, client_msg_id))
}

/// `group_members`' reply for a page the store read with `limit`: a full
/// page names its last member as the next page's `after`.
pub fn members_reply(
    conv: String,
    page: Vec<ringcast_store::GroupMember>,
    limit: u32,
) -> ringcast_protocol::client::ImReply {
    let next = (page.len() == limit as usize)
        .then(|| page.last().map(|member| member.user.clone()))
        .flatten();
    ringcast_protocol::client::ImReply::GroupMembers {
        conv,
        members: page.into_iter().map(member_info).collect(),
        next,
    }
}

/// A wire change as the store's op; `None` for a change this engine does
/// not serve (the wire enum is non-exhaustive).
pub fn store_op(change: ringcast_protocol::client::GroupChange) -> Option<ringcast_store::GroupOp> {
    use ringcast_protocol::client::GroupChange;
    use ringcast_store::{GroupOp, GroupRole};
    Some(match change {
        GroupChange::Add { users } => GroupOp::Add { users },
        GroupChange::Remove { users } => GroupOp::Remove { users },
        GroupChange::Leave => GroupOp::Leave,
        GroupChange::Role { user, admin } => GroupOp::Role {
            user,
            role: if admin {
                GroupRole::Admin
            } else {
                GroupRole::Member
            },
        },
        GroupChange::Transfer { to } => GroupOp::Transfer { to },
        GroupChange::Update { name, info } => GroupOp::Update { name, info },
        GroupChange::Mute { user, until_ms } => GroupOp::Mute { user, until_ms },
        GroupChange::Unmute { user } => GroupOp::Unmute { user },
        GroupChange::MuteAll { on: true } => GroupOp::MuteAll,
        GroupChange::MuteAll { on: false } => GroupOp::UnmuteAll,
        GroupChange::Dissolve => GroupOp::Dissolve,
        _ => return None,
    })
}

/// The store's refusal of a group request, as the client's code and message.
pub fn group_refusal(error: &ringcast_store::StoreError) -> Option<Refusal> {
    use ringcast_store::StoreError;
    let code = match error {
        StoreError::NotMember { .. } => ErrorCode::NotMember,
        StoreError::NotAllowed { .. } => ErrorCode::PermissionDenied,
        StoreError::Dissolved { .. } => ErrorCode::Dissolved,
        StoreError::Muted { .. } => ErrorCode::Muted,
        StoreError::MemberLimit { .. } => ErrorCode::MemberLimit,
        StoreError::ConversationLimit { user, limit } => {
            return Some((
                ErrorCode::TooManyConversations,
                format!("{user} has {limit} conversations or groups, the most allowed (im.conversations_per_user_max, im.groups_per_user_max)"),
            ))
        }
        StoreError::InvalidRequest { reason } => {
            return Some((ErrorCode::BadRequest, (*reason).to_owned()))
        }
        _ => return None,
    };
    Some((code, error.to_string()))
}

/// A group member as the wire shows it.
pub fn member_info(
    member: ringcast_store::GroupMember,
) -> ringcast_protocol::client::GroupMemberInfo {
    ringcast_protocol::client::GroupMemberInfo {
        user: member.user,
        role: wire_role(member.role),
        joined_offset: member.joined_offset,
        joined_ms: member.joined_ms,
        muted_until_ms: member.muted_until_ms,
        added_by: member.added_by,
    }
}

/// A group's record as the wire shows it.
pub fn group_details(info: ringcast_store::GroupInfo) -> ringcast_protocol::client::GroupDetails {
    ringcast_protocol::client::GroupDetails {
        conv: info.conv,
        name: info.name,
        info: info.info,
        owner: info.owner,
        member_count: info.member_count,
        members_max: info.members_max,
        muted_all: info.muted_all,
        dissolved: info.dissolved,
        members_can_invite: info.members_can_invite,
        last_offset: info.last_offset,
    }
}

/// The store's read of `stream` kept inside `view`'s window: entries from
/// `visible_from` on, and up to `visible_to` once the user left.
pub fn clamp_to_view(
    request: &mut ringcast_store::ReadRequest,
    group: &ringcast_store::GroupSummary,
) {
    if group.visible_from > 0 {
        let floor = group.visible_from - 1;
        request.since = Some(request.since.map_or(floor, |since| since.max(floor)));
    }
    if group.visible_to > 0 {
        let ceiling = group.visible_to + 1;
        request.before = Some(request.before.map_or(ceiling, |before| before.min(ceiling)));
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

/// The pair of `conv` if `user` is one of it (`None`: not a member): from
/// what this process knows, else from the user's view of it, one point
/// read on a store reader (review finding 8: not a walk of its list), which
/// also remembers the pair.
pub async fn resolve_member(
    shared: &crate::engine::Shared,
    user: &str,
    conv: &str,
) -> Result<Option<Arc<DmPair>>, ringcast_store::StoreError> {
    use ringcast_store::StoreError;
    if let Some(pair) = shared.dm_pairs.get(conv) {
        return Ok(pair.has(user).then_some(pair));
    }
    let view = shared
        .im_store()
        .conv_get(user, conv)?
        .await
        .map_err(|_canceled| StoreError::Closed)??;
    let Some(view) = view.filter(|view| view.group.is_none()) else {
        return Ok(None);
    };
    shared.dm_pairs.remember_listed(user, &view.peer, conv);
    Ok(shared.dm_pairs.get(conv).filter(|pair| pair.has(user)))
}

/// The reply to a stored `msg_send` or group change.
pub fn sent_reply(
    conv: String,
    appended: &ringcast_store::Appended,
) -> ringcast_protocol::client::ImReply {
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
        group: summary.group.map(|group| {
            Box::new(ringcast_protocol::client::ConvGroup {
                name: group.name,
                role: group.role.map(wire_role),
                left: group.left,
                dissolved: group.dissolved,
                muted_all: group.muted_all,
                member_count: group.member_count,
                visible_from: group.visible_from,
                visible_to: group.visible_to,
            })
        }),
    }
}

/// A store role as the wire names it.
pub fn wire_role(role: ringcast_store::GroupRole) -> ringcast_protocol::client::GroupRole {
    use ringcast_protocol::client::GroupRole as Wire;
    match role {
        ringcast_store::GroupRole::Member => Wire::Member,
        ringcast_store::GroupRole::Admin => Wire::Admin,
        ringcast_store::GroupRole::Owner => Wire::Owner,
    }
}

/// A `blocks_list` reply from a store page of at most `limit` users:
/// a full page has a next one to ask for.
pub fn blocks_page(page: Vec<(String, u64)>, limit: u32) -> ringcast_protocol::client::ImReply {
    let next = (page.len() == limit as usize)
        .then(|| page.last().map(|(user, _)| user.clone()))
        .flatten();
    ringcast_protocol::client::ImReply::BlocksList {
        users: page
            .into_iter()
            .map(|(user, time_ms)| ringcast_protocol::client::BlockedUser { user, time_ms })
            .collect(),
        next,
    }
}

/// A store page of receipts as the wire shows it.
pub fn receipts_reply(
    conv: String,
    page: ringcast_store::ReceiptPage,
) -> ringcast_protocol::client::ImReply {
    ringcast_protocol::client::ImReply::Receipts {
        conv,
        receipts: page
            .receipts
            .into_iter()
            .map(|receipt| ringcast_protocol::client::MemberPositions {
                user: receipt.user,
                read: receipt.read_offset,
                delivered: receipt.recv_offset,
            })
            .collect(),
        next: page.next,
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
    fn group_names_are_13_base32_characters_of_a_message_id() {
        let name = group_conv_name(u64::MAX);
        assert_eq!(name.len(), 17, "{name}");
        assert!(is_group(&name) && !is_dm(&name));
        assert_ne!(group_conv_name(1), group_conv_name(2));
    }

    #[test]
    fn a_created_groups_name_follows_its_actor_and_client_id() {
        let retried = created_group_name("alice", Some("c1"), 1);
        assert_eq!(retried, created_group_name("alice", Some("c1"), 2));
        assert_eq!(retried.len(), 4 + 26, "{retried}");
        assert!(is_group(&retried));
        assert_ne!(retried, created_group_name("bob", Some("c1"), 1));
        assert_ne!(retried, created_group_name("alice", Some("c2"), 1));
        // The length prefix keeps ("al", "icec1") and ("alice", "c1") apart.
        assert_ne!(retried, created_group_name("al", Some("icec1"), 1));
        assert_eq!(created_group_name("alice", None, 7), group_conv_name(7));
        // The system's: per owner, still stable for a retry.
        let system = system_group_name("alice", Some("c1"), 1);
        assert_eq!(system, system_group_name("alice", Some("c1"), 2));
        assert_ne!(system, system_group_name("bob", Some("c1"), 1));
        assert_ne!(system, created_group_name("", Some("c1"), 1));
        assert_ne!(
            system_group_name("ab", Some("c"), 1),
            system_group_name("a", Some("bc"), 1)
        );
        assert_eq!(system_group_name("alice", None, 7), group_conv_name(7));
    }

    #[test]
    fn member_entries_carry_op_actor_targets_and_the_ops_fields() {
        let op = ringcast_store::GroupOp::Mute {
            user: "bob".into(),
            until_ms: 7,
        };
        let data: serde_json::Value =
            serde_json::from_slice(&member_entry_data("alice", &op)).unwrap();
        assert_eq!(
            data,
            serde_json::json!({"kind": "member", "data": {"op": "mute", "actor": "alice",
                "targets": ["bob"], "until_ms": 7}})
        );
        let data: serde_json::Value =
            serde_json::from_slice(&member_entry_data("", &ringcast_store::GroupOp::UnmuteAll))
                .unwrap();
        assert_eq!(data["data"]["op"], "mute_all");
        assert_eq!(data["data"]["on"], false);
        assert_eq!(data["data"]["actor"], "");
    }

    #[test]
    fn a_read_keeps_to_the_members_window() {
        let window = |visible_from, visible_to| ringcast_store::GroupSummary {
            name: String::new(),
            role: None,
            left: visible_to > 0,
            dissolved: false,
            muted_all: false,
            member_count: 2,
            visible_from,
            visible_to,
        };
        let request = |since, before| ringcast_store::ReadRequest {
            stream: "grp:x".into(),
            since,
            before,
            limit: 10,
            reverse: false,
            from_time_ms: None,
            before_time_ms: None,
        };
        let mut read = request(None, None);
        clamp_to_view(&mut read, &window(5, 9));
        assert_eq!((read.since, read.before), (Some(4), Some(10)));
        let mut read = request(Some(6), Some(8));
        clamp_to_view(&mut read, &window(5, 9));
        assert_eq!((read.since, read.before), (Some(6), Some(8)));
        let mut read = request(Some(1), None);
        clamp_to_view(&mut read, &window(0, 0));
        assert_eq!((read.since, read.before), (Some(1), None));
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
