//! The IM commands, replies and events (`docs/im.md`; step 1: direct
//! conversations), in both wire forms.
//!
//! Every IM command travels in the one appended [`super::CommandBody::Im`]
//! variant, every IM reply in [`super::ReplyResult::Im`] and every IM event
//! in [`super::ServerMessage::Im`], each boxed: later IM commands and events
//! are appended to these enums, so the command, reply and server-message
//! enums and their archived sizes stay as they are.
//!
//! The decoders check what the wire can check: exactly one of `to` and
//! `conv`, the shape of each message kind's data, the list limit. The byte
//! limits of a kind are configuration (`[im]`) and are checked by the engine.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::im_group::{ConvGroup, GroupChange, GroupDetails, GroupMemberInfo};
use super::json::{push_json_str, push_page_tail, push_u64};
use super::model::{CommandError, ErrorCode};

/// Most conversations one `conv_list` page returns (the least is 1).
pub const CONV_LIST_LIMIT_MAX: u32 = 100;
/// `limit` of a `conv_list` when the JSON form leaves it out.
pub const CONV_LIST_LIMIT_DEFAULT: u32 = 50;

/// An IM command.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[non_exhaustive]
pub enum ImCommand {
    /// A message to a direct conversation: to the peer `to`, or into the
    /// conversation `conv` (a `dm:` name the sender is one of). `data` is
    /// UTF-8 JSON whose shape `kind` fixes. `echo: false`: the sending
    /// connection gets no push of its own message (its other devices do).
    MsgSend {
        to: Option<String>,
        conv: Option<String>,
        kind: MsgKind,
        data: Vec<u8>,
        client_msg_id: Option<String>,
        echo: bool,
    },
    /// A page of the user's conversations, newest activity first, after
    /// `cursor` (the previous page's `next`); `limit` 1..=[`CONV_LIST_LIMIT_MAX`].
    ConvList {
        cursor: Option<ConvCursor>,
        limit: u32,
    },
    /// The user has read `conv` up to and including `offset`.
    Read { conv: String, offset: u64 },
    /// The user blocks `user`: DMs between them are refused both ways (120).
    Block { user: String },
    /// The user lifts its block of `user`.
    Unblock { user: String },
    /// A page of the users the user blocked, in id order after `cursor`
    /// (the previous page's `next`); `limit` 1..=[`BLOCKS_LIST_LIMIT_MAX`].
    BlocksList { cursor: Option<String>, limit: u32 },
    /// The user is typing in `conv`, or stopped: never stored, delivered
    /// to the conversation's other members' connections.
    Typing { conv: String, state: TypingState },
    /// A new group (`grp:<gid>`, the gid made by the server) that the
    /// sender owns, with `members` (at most [`super::GROUP_USERS_MAX`]) as members.
    /// `members_can_invite`: `None` takes `im.members_can_invite`.
    GroupCreate {
        name: String,
        info: String,
        members: Vec<String>,
        members_can_invite: Option<bool>,
        client_msg_id: Option<String>,
    },
    /// A change to group `conv` (`group_add`, `group_remove`, ...): one
    /// `member` entry, checked by the store against the roles.
    Group {
        conv: String,
        change: GroupChange,
        client_msg_id: Option<String>,
    },
    /// A page of group `conv`'s members in id order after `after`.
    GroupMembers {
        conv: String,
        after: Option<String>,
        limit: u32,
    },
    /// Group `conv`'s record.
    GroupInfo { conv: String },
    /// `presence_query` by conversation: the presence of `conv`'s members
    /// (a DM's two users; a group's first
    /// [`PRESENCE_USERS_MAX`](super::PRESENCE_USERS_MAX) in id order), for
    /// a member; answered with [`super::ReplyResult::Presence`].
    PresenceConv { conv: String },
    /// The read and delivery positions of `conv`'s users (a DM's two, a
    /// group's members of any size) in user id order after `cursor` (the
    /// previous page's `next`); `limit` 1..=[`super::RECEIPTS_LIMIT_MAX`].
    Receipts {
        conv: String,
        cursor: Option<String>,
        limit: u32,
    },
    /// Replays each conversation after the client's position, merged with
    /// its live entries as a subscribe with `since` is; at most
    /// `limit_per_conv` entries each (0, or past `im.catchup_per_conv_max`:
    /// that maximum).
    Catchup {
        convs: Vec<super::CatchupFrom>,
        limit_per_conv: u32,
    },
    /// Recalls the message at `offset` of `conv`: it becomes a tombstone
    /// for everyone (`docs/im.md`, "Recall, edit, delete").
    Recall { conv: String, offset: u64 },
    /// Replaces the data of the user's message at `offset` of `conv`;
    /// `kind`, when given, must be the message's.
    Edit {
        conv: String,
        offset: u64,
        kind: Option<MsgKind>,
        data: Vec<u8>,
    },
    /// Hides `conv`'s entries up to and including `upto` from this user
    /// (its other users' history does not change).
    Clear { conv: String, upto: u64 },
}

/// Most users one `blocks_list` page returns (the least is 1).
pub const BLOCKS_LIST_LIMIT_MAX: u32 = 100;
/// `limit` of a `blocks_list` when the JSON form leaves it out.
pub const BLOCKS_LIST_LIMIT_DEFAULT: u32 = 50;

/// What a `typing` signal says.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash,
)]
#[rkyv(derive(Debug))]
pub enum TypingState {
    Typing,
    Stopped,
}

impl TypingState {
    pub fn as_str(self) -> &'static str {
        match self {
            TypingState::Typing => "typing",
            TypingState::Stopped => "stopped",
        }
    }

    pub fn parse(text: &str) -> Option<TypingState> {
        match text {
            "typing" => Some(TypingState::Typing),
            "stopped" => Some(TypingState::Stopped),
            _ => None,
        }
    }
}

/// One user in a `blocks_list` page.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct BlockedUser {
    pub user: String,
    /// When the block was set (Unix ms).
    pub time_ms: u64,
}

/// What a message is; each kind has its data shape (`docs/im.md`, "What a
/// conversation stream holds").
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash,
)]
#[rkyv(derive(Debug))]
pub enum MsgKind {
    /// `{"text": "..."}`.
    Text,
    /// Any JSON.
    Custom,
    /// `{"url", "mime", "size", "name"?, "width"?, "height"?, "duration_ms"?, "thumb_url"?}`.
    Attachment,
}

impl MsgKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MsgKind::Text => "text",
            MsgKind::Custom => "custom",
            MsgKind::Attachment => "attachment",
        }
    }

    pub fn parse(text: &str) -> Option<MsgKind> {
        match text {
            "text" => Some(MsgKind::Text),
            "custom" => Some(MsgKind::Custom),
            "attachment" => Some(MsgKind::Attachment),
            _ => None,
        }
    }
}

/// Where a conversation list page starts: the last conversation of the
/// previous page.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash,
)]
#[rkyv(derive(Debug))]
pub struct ConvCursor {
    pub time_ms: u64,
    pub sid: u64,
}

/// One conversation as its user sees it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ConvInfo {
    /// The stream name (`dm:<h>`).
    pub conv: String,
    /// The stream id: with `last_time_ms`, a list cursor.
    pub sid: u64,
    /// The other user.
    pub peer: String,
    pub epoch: u64,
    pub last_offset: u64,
    pub last_time_ms: u64,
    pub last_msg_offset: u64,
    pub read_offset: u64,
    pub unread: u64,
    /// A group's part (`None` for a DM): boxed, so a DM's entry stays small.
    pub group: Option<Box<ConvGroup>>,
}

/// A sync token: where a device's view of its conversations stands. On the
/// wire in JSON and in the connect URL (`im_since`) as
/// `"<store_id>.<gseq>"`, both decimal.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash,
)]
#[rkyv(derive(Debug))]
pub struct SyncToken {
    pub store_id: u64,
    pub gseq: u64,
}

impl SyncToken {
    /// The text form, `"<store_id>.<gseq>"`.
    pub fn to_text(self) -> String {
        format!("{}.{}", self.store_id, self.gseq)
    }

    /// Parses the text form; `None` if it is not one.
    pub fn parse(text: &str) -> Option<SyncToken> {
        let (store_id, gseq) = text.split_once('.')?;
        let digits = |part: &str| {
            (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u64>().ok())
                .flatten()
        };
        Some(SyncToken {
            store_id: digits(store_id)?,
            gseq: digits(gseq)?,
        })
    }
}

/// The reply to an IM command.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[non_exhaustive]
pub enum ImReply {
    /// `msg_send`, once stored. `duplicate`: the `client_msg_id` was seen,
    /// these are the original message's ids.
    Sent {
        conv: String,
        message_id: u64,
        offset: u64,
        epoch: u64,
        time_ms: u64,
        duplicate: bool,
    },
    /// `conv_list`: `next` is the next page's cursor, `None` at the end.
    ConvList {
        convs: Vec<ConvInfo>,
        next: Option<ConvCursor>,
        total_unread: u64,
    },
    /// `read`: the position now held (monotonic, at most the last offset).
    Read {
        conv: String,
        offset: u64,
        unread: u64,
        total_unread: u64,
    },
    /// `block` / `unblock`: whether `user` is blocked now, and whether
    /// the command changed that.
    Block {
        user: String,
        blocked: bool,
        changed: bool,
    },
    /// `blocks_list`: `next` is the next page's cursor, `None` at the end.
    BlocksList {
        users: Vec<BlockedUser>,
        next: Option<String>,
    },
    /// `group_members`: `next` is the `after` of the next page, `None` at
    /// the end.
    GroupMembers {
        conv: String,
        members: Vec<GroupMemberInfo>,
        next: Option<String>,
    },
    /// `group_info`.
    GroupInfo(Box<GroupDetails>),
    /// `receipts`: `next` is the next page's cursor, `None` at the end.
    Receipts {
        conv: String,
        receipts: Vec<super::MemberPositions>,
        next: Option<String>,
    },
    /// `catchup`: one result per conversation, in the command's order,
    /// after every replayed entry.
    Catchup { convs: Vec<super::CatchupResult> },
    /// `recall` or `edit`, once stored: the event's `offset`, the
    /// message's `ref_offset`, its edits so far (0 for a recall).
    Rewritten {
        conv: String,
        offset: u64,
        ref_offset: u64,
        edits: u32,
    },
    /// `clear`: the user's history of `conv` starts at `visible_from`.
    Cleared {
        conv: String,
        visible_from: u64,
        unread: u64,
        total_unread: u64,
    },
}

/// What the server tells a connection unasked.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[non_exhaustive]
pub enum ImEvent {
    /// After the inbox's reply at connect: the conversations changed since
    /// the connection's `im_since` token (or, without one or after a
    /// `reset`, the newest page of its list), and the token to keep.
    Sync(ImSyncInfo),
    /// The user read `conv` on another device.
    Read {
        conv: String,
        offset: u64,
        unread: u64,
        total_unread: u64,
    },
    /// The peer `user` read `conv` up to `read`.
    Receipt {
        conv: String,
        user: String,
        read: u64,
    },
    /// The user blocked (`blocked`) or unblocked `user` on another device.
    Block { user: String, blocked: bool },
    /// Another member `user` of `conv` is typing or stopped.
    Typing {
        conv: String,
        user: String,
        state: TypingState,
    },
    /// Some device of `user` acknowledged `conv` up to `offset` (sent when
    /// the user's delivery position advances).
    Delivered {
        conv: String,
        user: String,
        offset: u64,
    },
}

/// The body of [`ImEvent::Sync`].
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ImSyncInfo {
    /// Newest activity first.
    pub convs: Vec<ConvInfo>,
    pub token: SyncToken,
    /// More changes (from a token: sync again from `token`), or (without
    /// one, or after a reset) more of the list: page it with `conv_list`.
    pub more: bool,
    /// The token given could not be continued: drop what the device holds.
    pub reset: bool,
    pub total_unread: u64,
}

pub(super) fn bad_request(id: u64, message: String) -> CommandError {
    CommandError::new(Some(id), ErrorCode::BadRequest, message)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MsgSendParams<'a> {
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    conv: Option<String>,
    kind: String,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    client_msg_id: Option<String>,
    #[serde(default = "echo_default")]
    echo: bool,
}

fn echo_default() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConvListParams {
    #[serde(default)]
    cursor: Option<JsonCursor>,
    #[serde(default = "conv_list_limit_default")]
    limit: u32,
}

fn conv_list_limit_default() -> u32 {
    CONV_LIST_LIMIT_DEFAULT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCursor {
    time_ms: u64,
    #[serde(deserialize_with = "super::json::u64_or_decimal_string")]
    sid: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReadParams {
    conv: String,
    offset: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BlockParams {
    user: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BlocksListParams {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default = "blocks_list_limit_default")]
    limit: u32,
}

fn blocks_list_limit_default() -> u32 {
    BLOCKS_LIST_LIMIT_DEFAULT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TypingParams {
    conv: String,
    state: String,
}

impl BlockParams {
    pub(super) fn into_command(self, block: bool) -> ImCommand {
        if block {
            ImCommand::Block { user: self.user }
        } else {
            ImCommand::Unblock { user: self.user }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClearParams {
    conv: String,
    upto: u64,
}

impl ClearParams {
    pub(super) fn into_command(self) -> ImCommand {
        ImCommand::Clear {
            conv: self.conv,
            upto: self.upto,
        }
    }
}

impl BlocksListParams {
    pub(super) fn into_command(self) -> ImCommand {
        ImCommand::BlocksList {
            cursor: self.cursor,
            limit: self.limit,
        }
    }
}

impl TypingParams {
    pub(super) fn into_command(self, id: u64) -> Result<ImCommand, CommandError> {
        let state = TypingState::parse(&self.state).ok_or_else(|| {
            bad_request(
                id,
                format!(
                    "unknown `state` {:?}; expected typing or stopped",
                    self.state
                ),
            )
        })?;
        Ok(ImCommand::Typing {
            conv: self.conv,
            state,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EditParams<'a> {
    conv: String,
    offset: u64,
    #[serde(default)]
    kind: Option<String>,
    #[serde(borrow)]
    data: &'a RawValue,
}

impl MsgSendParams<'_> {
    pub(super) fn into_command(self, id: u64) -> Result<ImCommand, CommandError> {
        let kind = MsgKind::parse(&self.kind).ok_or_else(|| {
            bad_request(
                id,
                format!(
                    "unknown `kind` {:?}; expected text, custom or attachment",
                    self.kind
                ),
            )
        })?;
        Ok(ImCommand::MsgSend {
            to: self.to,
            conv: self.conv,
            kind,
            data: self.data.get().as_bytes().to_vec(),
            client_msg_id: self.client_msg_id,
            echo: self.echo,
        })
    }
}

impl ConvListParams {
    pub(super) fn into_command(self) -> ImCommand {
        ImCommand::ConvList {
            cursor: self.cursor.map(|cursor| ConvCursor {
                time_ms: cursor.time_ms,
                sid: cursor.sid,
            }),
            limit: self.limit,
        }
    }
}

impl ReadParams {
    pub(super) fn into_command(self) -> ImCommand {
        ImCommand::Read {
            conv: self.conv,
            offset: self.offset,
        }
    }

    /// `recall` takes the same params as `read`.
    pub(super) fn into_recall(self) -> ImCommand {
        ImCommand::Recall {
            conv: self.conv,
            offset: self.offset,
        }
    }
}

impl EditParams<'_> {
    pub(super) fn into_command(self, id: u64) -> Result<ImCommand, CommandError> {
        let kind = match self.kind {
            None => None,
            Some(text) => Some(MsgKind::parse(&text).ok_or_else(|| {
                bad_request(
                    id,
                    format!("unknown `kind` {text:?}; expected text, custom or attachment"),
                )
            })?),
        };
        Ok(ImCommand::Edit {
            conv: self.conv,
            offset: self.offset,
            kind,
            data: self.data.get().as_bytes().to_vec(),
        })
    }
}

/// `{"text": "..."}`, nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextData {
    text: String,
}

/// An attachment's description; the file stays with the app.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachmentData {
    url: String,
    mime: String,
    size: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    width: Option<u32>,
    #[serde(default)]
    height: Option<u32>,
    #[serde(default)]
    duration_ms: Option<u64>,
    #[serde(default)]
    thumb_url: Option<String>,
}

/// What the engine's byte limits measure in a message's data: the text of
/// a `text` (its decoded bytes), the whole data of a `custom`, the longest
/// URL of an `attachment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgSize {
    pub kind: MsgKind,
    pub bytes: usize,
}

/// Checks that `data` (valid UTF-8 JSON) has `kind`'s shape; returns what
/// the kind's byte limit applies to.
pub fn check_msg_data(kind: MsgKind, data: &[u8]) -> Result<MsgSize, String> {
    let bytes = match kind {
        MsgKind::Custom => data.len(),
        MsgKind::Text => {
            let text: TextData = serde_json::from_slice(data).map_err(|error| {
                format!("a text message's data is {{\"text\": string}}: {error}")
            })?;
            if text.text.is_empty() {
                return Err("a text message's text must not be empty".to_owned());
            }
            text.text.len()
        }
        MsgKind::Attachment => {
            let attachment: AttachmentData = serde_json::from_slice(data).map_err(|error| {
                format!(
                    "an attachment's data is {{url, mime, size, name?, width?, height?, \
                     duration_ms?, thumb_url?}}: {error}"
                )
            })?;
            if attachment.url.is_empty() || attachment.mime.is_empty() {
                return Err("an attachment's url and mime must not be empty".to_owned());
            }
            let _ = (
                attachment.size,
                attachment.name,
                attachment.width,
                attachment.height,
                attachment.duration_ms,
            );
            attachment
                .url
                .len()
                .max(attachment.thumb_url.map_or(0, |url| url.len()))
        }
    };
    Ok(MsgSize { kind, bytes })
}

/// The IM rules both decoders apply after parsing.
pub(super) fn validate_im(id: u64, command: &ImCommand) -> Result<(), CommandError> {
    match command {
        ImCommand::MsgSend {
            to,
            conv,
            kind,
            data,
            client_msg_id,
            ..
        } => {
            match (to, conv) {
                (Some(to), None) if !to.is_empty() => {}
                (None, Some(conv)) if !conv.is_empty() => {}
                (Some(_), Some(_)) => {
                    return Err(bad_request(
                        id,
                        "give either `to` or `conv`, not both".to_owned(),
                    ))
                }
                _ => return Err(bad_request(
                    id,
                    "`to` (a user) or `conv` (a conversation) is required and must not be empty"
                        .to_owned(),
                )),
            }
            if let Some(key) = client_msg_id {
                if !super::validate::valid_client_msg_id(key) {
                    return Err(bad_request(
                        id,
                        format!(
                            "`client_msg_id` must be 1 to {} bytes of printable ASCII",
                            super::CLIENT_MSG_ID_BYTES_MAX
                        ),
                    ));
                }
            }
            super::validate::validate_binary_payload(id, data, true)?;
            check_msg_data(*kind, data).map_err(|reason| bad_request(id, reason))?;
            Ok(())
        }
        ImCommand::ConvList { limit, .. } => check_limit(id, *limit, CONV_LIST_LIMIT_MAX),
        ImCommand::Receipts { conv, limit, .. } => {
            super::im_delivery::validate_receipts(id, conv, *limit)
        }
        ImCommand::Catchup { convs, .. } => super::im_delivery::validate_catchup(id, convs),
        ImCommand::Edit {
            conv,
            offset,
            kind,
            data,
        } => {
            check_conv_offset(id, conv, *offset)?;
            super::validate::validate_binary_payload(id, data, true)?;
            if let Some(kind) = kind {
                check_msg_data(*kind, data).map_err(|reason| bad_request(id, reason))?;
            }
            Ok(())
        }
        ImCommand::Read { conv, offset }
        | ImCommand::Recall { conv, offset }
        | ImCommand::Clear { conv, upto: offset } => check_conv_offset(id, conv, *offset),
        ImCommand::Block { user } | ImCommand::Unblock { user } => {
            check_not_empty(id, user, "user")
        }
        ImCommand::BlocksList { limit, .. } => check_limit(id, *limit, BLOCKS_LIST_LIMIT_MAX),
        ImCommand::Typing { conv, .. } => check_not_empty(id, conv, "conv"),
        ImCommand::GroupCreate { .. }
        | ImCommand::Group { .. }
        | ImCommand::GroupMembers { .. }
        | ImCommand::GroupInfo { .. } => super::im_group::validate_group(id, command),
        ImCommand::PresenceConv { conv } => {
            if conv.is_empty() {
                Err(bad_request(id, "`conv` must not be empty".to_owned()))
            } else {
                Ok(())
            }
        }
    }
}

/// A page's `limit`, 1..=`max`.
fn check_limit(id: u64, limit: u32, max: u32) -> Result<(), CommandError> {
    if (1..=max).contains(&limit) {
        Ok(())
    } else {
        Err(bad_request(id, format!("`limit` must be 1 to {max}")))
    }
}

fn check_not_empty(id: u64, value: &str, field: &str) -> Result<(), CommandError> {
    if value.is_empty() {
        Err(bad_request(id, format!("`{field}` must not be empty")))
    } else {
        Ok(())
    }
}

/// A command's `conv` and `offset`: a conversation and an entry of it.
fn check_conv_offset(id: u64, conv: &str, offset: u64) -> Result<(), CommandError> {
    if conv.is_empty() {
        Err(bad_request(id, "`conv` must not be empty".to_owned()))
    } else if offset == 0 {
        Err(bad_request(id, "`offset` must be at least 1".to_owned()))
    } else {
        Ok(())
    }
}

fn push_conv_info(out: &mut Vec<u8>, conv: &ConvInfo) {
    out.extend_from_slice(b"{\"conv\":");
    push_json_str(out, &conv.conv);
    out.extend_from_slice(b",\"sid\":\"");
    push_u64(out, conv.sid);
    out.extend_from_slice(b"\",\"peer\":");
    push_json_str(out, &conv.peer);
    out.extend_from_slice(b",\"epoch\":\"");
    push_u64(out, conv.epoch);
    out.extend_from_slice(b"\",\"last_offset\":");
    push_u64(out, conv.last_offset);
    out.extend_from_slice(b",\"last_time_ms\":");
    push_u64(out, conv.last_time_ms);
    out.extend_from_slice(b",\"last_msg_offset\":");
    push_u64(out, conv.last_msg_offset);
    out.extend_from_slice(b",\"read_offset\":");
    push_u64(out, conv.read_offset);
    out.extend_from_slice(b",\"unread\":");
    push_u64(out, conv.unread);
    if let Some(group) = &conv.group {
        super::im_group::push_conv_group(out, group);
    }
    out.push(b'}');
}

fn push_conv_infos(out: &mut Vec<u8>, convs: &[ConvInfo]) {
    out.extend_from_slice(b"\"convs\":[");
    for (index, conv) in convs.iter().enumerate() {
        if index != 0 {
            out.push(b',');
        }
        push_conv_info(out, conv);
    }
    out.push(b']');
}

fn push_read(out: &mut Vec<u8>, conv: &str, offset: u64, unread: u64, total_unread: u64) {
    out.extend_from_slice(b"{\"conv\":");
    push_json_str(out, conv);
    out.extend_from_slice(b",\"offset\":");
    push_u64(out, offset);
    out.extend_from_slice(b",\"unread\":");
    push_u64(out, unread);
    out.extend_from_slice(b",\"total_unread\":");
    push_u64(out, total_unread);
    out.push(b'}');
}

/// The `result` object of an IM reply in JSON.
pub(super) fn push_im_reply_json(out: &mut Vec<u8>, reply: &ImReply) {
    match reply {
        ImReply::Sent {
            conv,
            message_id,
            offset,
            epoch,
            time_ms,
            duplicate,
        } => {
            out.extend_from_slice(b"{\"conv\":");
            push_json_str(out, conv);
            out.extend_from_slice(b",\"id\":\"");
            push_u64(out, *message_id);
            out.extend_from_slice(b"\",\"offset\":");
            push_u64(out, *offset);
            out.extend_from_slice(b",\"epoch\":\"");
            push_u64(out, *epoch);
            out.extend_from_slice(b"\",\"time\":");
            push_u64(out, *time_ms);
            if *duplicate {
                out.extend_from_slice(b",\"duplicate\":true");
            }
            out.push(b'}');
        }
        ImReply::ConvList {
            convs,
            next,
            total_unread,
        } => {
            out.push(b'{');
            push_conv_infos(out, convs);
            if let Some(next) = next {
                out.extend_from_slice(b",\"next\":{\"time_ms\":");
                push_u64(out, next.time_ms);
                out.extend_from_slice(b",\"sid\":\"");
                push_u64(out, next.sid);
                out.extend_from_slice(b"\"}");
            }
            out.extend_from_slice(b",\"total_unread\":");
            push_u64(out, *total_unread);
            out.push(b'}');
        }
        ImReply::Read {
            conv,
            offset,
            unread,
            total_unread,
        } => push_read(out, conv, *offset, *unread, *total_unread),
        ImReply::Block {
            user,
            blocked,
            changed,
        } => {
            out.extend_from_slice(b"{\"user\":");
            push_json_str(out, user);
            out.extend_from_slice(b",\"blocked\":");
            push_bool(out, *blocked);
            out.extend_from_slice(b",\"changed\":");
            push_bool(out, *changed);
            out.push(b'}');
        }
        ImReply::BlocksList { users, next } => {
            out.extend_from_slice(b"{\"users\":");
            let push_blocked = |out: &mut Vec<u8>, blocked: &BlockedUser| {
                out.extend_from_slice(b"{\"user\":");
                push_json_str(out, &blocked.user);
                out.extend_from_slice(b",\"time_ms\":");
                push_u64(out, blocked.time_ms);
                out.push(b'}');
            };
            push_page_tail(out, users, push_blocked, next.as_deref());
        }
        ImReply::GroupMembers {
            conv,
            members,
            next,
        } => super::im_group::push_group_members(out, conv, members, next.as_deref()),
        ImReply::GroupInfo(details) => super::im_group::push_group_details(out, details),
        ImReply::Receipts {
            conv,
            receipts,
            next,
        } => super::im_delivery::push_receipts(out, conv, receipts, next.as_deref()),
        ImReply::Catchup { convs } => super::im_delivery::push_catchup(out, convs),
        ImReply::Rewritten {
            conv,
            offset,
            ref_offset,
            edits,
        } => {
            out.extend_from_slice(b"{\"conv\":");
            push_json_str(out, conv);
            out.extend_from_slice(b",\"offset\":");
            push_u64(out, *offset);
            out.extend_from_slice(b",\"ref_offset\":");
            push_u64(out, *ref_offset);
            out.extend_from_slice(b",\"edits\":");
            push_u64(out, u64::from(*edits));
            out.push(b'}');
        }
        ImReply::Cleared {
            conv,
            visible_from,
            unread,
            total_unread,
        } => {
            out.extend_from_slice(b"{\"conv\":");
            push_json_str(out, conv);
            out.extend_from_slice(b",\"visible_from\":");
            push_u64(out, *visible_from);
            out.extend_from_slice(b",\"unread\":");
            push_u64(out, *unread);
            out.extend_from_slice(b",\"total_unread\":");
            push_u64(out, *total_unread);
            out.push(b'}');
        }
    }
}

fn push_bool(out: &mut Vec<u8>, value: bool) {
    out.extend_from_slice(if value { b"true" } else { b"false" });
}

/// The `result` object of an IM reply alone, as the HTTP API answers it.
pub fn encode_im_reply_result_json(reply: &ImReply) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    push_im_reply_json(&mut out, reply);
    out
}

/// Renders an IM event as JSON: `{"im_sync":{...}}`, `{"read":{...}}`,
/// `{"receipt":{...}}`, `{"block":{...}}` or `{"typing":{...}}` (`docs/protocol.md`, "IM").
pub fn encode_im_event_json(event: &ImEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    match event {
        ImEvent::Sync(sync) => {
            out.extend_from_slice(b"{\"im_sync\":{");
            push_conv_infos(&mut out, &sync.convs);
            out.extend_from_slice(b",\"token\":");
            push_json_str(&mut out, &sync.token.to_text());
            out.extend_from_slice(b",\"more\":");
            out.extend_from_slice(if sync.more { b"true" } else { b"false" });
            if sync.reset {
                out.extend_from_slice(b",\"reset\":true");
            }
            out.extend_from_slice(b",\"total_unread\":");
            push_u64(&mut out, sync.total_unread);
            out.extend_from_slice(b"}}");
        }
        ImEvent::Read {
            conv,
            offset,
            unread,
            total_unread,
        } => {
            out.extend_from_slice(b"{\"read\":");
            push_read(&mut out, conv, *offset, *unread, *total_unread);
            out.push(b'}');
        }
        ImEvent::Receipt { conv, user, read } => {
            out.extend_from_slice(b"{\"receipt\":{\"conv\":");
            push_json_str(&mut out, conv);
            out.extend_from_slice(b",\"user\":");
            push_json_str(&mut out, user);
            out.extend_from_slice(b",\"read\":");
            push_u64(&mut out, *read);
            out.extend_from_slice(b"}}");
        }
        ImEvent::Block { user, blocked } => {
            out.extend_from_slice(b"{\"block\":{\"user\":");
            push_json_str(&mut out, user);
            out.extend_from_slice(b",\"blocked\":");
            push_bool(&mut out, *blocked);
            out.extend_from_slice(b"}}");
        }
        ImEvent::Typing { conv, user, state } => {
            out.extend_from_slice(b"{\"typing\":{\"conv\":");
            push_json_str(&mut out, conv);
            out.extend_from_slice(b",\"user\":");
            push_json_str(&mut out, user);
            out.extend_from_slice(b",\"state\":\"");
            out.extend_from_slice(state.as_str().as_bytes());
            out.extend_from_slice(b"\"}}");
        }
        ImEvent::Delivered { conv, user, offset } => {
            super::im_delivery::push_delivered(&mut out, conv, user, *offset);
        }
    }
    out
}

/// Encodes an IM event as an archive of [`super::ServerMessage::Im`].
pub fn encode_im_event_binary(event: &ImEvent) -> Vec<u8> {
    super::binary::archive_to_vec(&super::ServerMessage::Im(Box::new(event.clone())))
}
