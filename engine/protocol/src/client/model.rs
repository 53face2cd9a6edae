//! The client protocol's model: what a command asks for, what a reply
//! says, and the one enum whose rkyv archive is everything the server sends
//! a binary client. Both wire forms decode into and encode from these types;
//! nothing here knows a wire form.

use rkyv::rancor::BoxedError;
use rkyv::with::{AsBox, Map};

use super::im::{ImCommand, ImEvent, ImReply};
use crate::envelope::Envelope;

/// One client command, from either wire form.
///
/// This is also the binary form: binary clients send an rkyv archive of a
/// `Command` (under its wire name [`BinaryCommand`]), so its archived layout
/// is the `ringcast.rkyv.v1` command format. Adding a variant or field
/// changes it and needs a new subprotocol version.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Command {
    /// Client-chosen id, echoed in the reply. Never 0.
    pub id: u64,
    pub body: CommandBody,
}

/// What a command asks for.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[non_exhaustive]
pub enum CommandBody {
    /// With `since`, the server first replays every stored publication after
    /// that position, then goes live; the reply's [`Recovery`] says how it went.
    Subscribe {
        channel: String,
        since: Option<StreamPosition>,
    },
    Unsubscribe {
        channel: String,
    },
    /// `data_is_json` means `data` is valid UTF-8 JSON text.
    /// `client_msg_id` is an idempotency key: 1 to [`CLIENT_MSG_ID_BYTES_MAX`](super::CLIENT_MSG_ID_BYTES_MAX)
    /// bytes of printable ASCII (`0x20..=0x7e`), checked by the decoders.
    Publish {
        channel: String,
        data: Vec<u8>,
        data_is_json: bool,
        client_msg_id: Option<String>,
    },
    /// To every connection of `user`. `client_msg_id` as for `Publish`.
    Send {
        user: String,
        data: Vec<u8>,
        data_is_json: bool,
        client_msg_id: Option<String>,
    },
    Refresh {
        token: String,
    },
    Ping,
    /// Cumulative acknowledgement: this device has processed every
    /// publication of `stream` up to and including `offset`.
    Ack {
        stream: String,
        offset: u64,
    },
    /// Up to `limit` (1..=[`HISTORY_LIMIT_MAX`](super::HISTORY_LIMIT_MAX)) stored publications of
    /// `stream`. Forward (`reverse == false`): offsets after `since`, oldest
    /// first, from the stream's start when `since` is `None`. Reverse: the
    /// newest offsets after `since`, newest first (paging back below an
    /// offset is [`CommandBody::HistoryBefore`]).
    /// Answered with [`encode_history_json`](super::encode_history_json) / [`encode_history_binary`](super::encode_history_binary).
    /// The JSON form defaults `limit` to
    /// [`HISTORY_LIMIT_DEFAULT`](super::HISTORY_LIMIT_DEFAULT); the binary
    /// form has no defaults.
    History {
        stream: String,
        since: Option<u64>,
        limit: u32,
        reverse: bool,
    },
    /// Backward paging: up to `limit` stored publications of `stream` with
    /// offsets below `before` (and above `since` when given), newest first.
    /// The last entry's offset is the next page's `before`; older entries
    /// exist exactly when it is above the reply's `start_offset` (and
    /// `since + 1`). The JSON form is `history` with `before`; a separate
    /// variant, last, so the binary form of every older command keeps its
    /// bytes; `since` is a plain offset (0: from the start, the same as
    /// none) so the variant is no larger than the largest older one and the
    /// archived size of every command is unchanged.
    HistoryBefore {
        stream: String,
        before: u64,
        since: u64,
        limit: u32,
    },
    /// `Subscribe` with a subscription token: a JWT the app backend signed
    /// for this user and this channel, checked on namespaces with
    /// `subscribe = "token"` (ignored elsewhere). The JSON form is
    /// `subscribe` with a `token` param. A variant of its own, appended,
    /// rather than a field of `Subscribe`, so every earlier command keeps
    /// its `ringcast.rkyv.v1` bytes; `since` is boxed so the variant is no
    /// larger than `Subscribe` and the archived command keeps its size.
    SubscribeWithToken {
        channel: String,
        token: String,
        #[rkyv(with = Map<AsBox>)]
        since: Option<StreamPosition>,
    },
    /// Forwarded to the app's backend (`websocket.rpc_proxy`); the backend's
    /// answer is the reply ([`ReplyResult::Rpc`]). `method` is the app's own
    /// name, 1 to [`RPC_METHOD_BYTES_MAX`](super::RPC_METHOD_BYTES_MAX)
    /// bytes. Appended to the `v1` layout: archives of the earlier variants
    /// are unchanged.
    Rpc {
        method: String,
        data: Vec<u8>,
        data_is_json: bool,
    },
    /// An IM command (`docs/im.md`, [`super::im`]). One appended variant
    /// for every IM command, present and future: later IM commands are
    /// appended to [`ImCommand`], so neither this enum nor the archived
    /// size of a command grows again (the box is a relative pointer).
    Im(Box<ImCommand>),
    /// Presence: watch, unwatch or query users' online state
    /// (`docs/im.md`, "Presence"). One appended variant holding its own
    /// sub-enum, so later presence commands (a query by conversation) are
    /// appended there and this enum, and every archived command, keep
    /// their layout and size.
    Presence(PresenceCommand),
    /// `history` by time: up to `limit` stored publications of `stream`
    /// whose time is in the window `from_time_ms <= time < before_time_ms`
    /// (Unix ms; `0` and `u64::MAX` leave that side open), oldest first,
    /// or newest first with `reverse`. `offset_bound` bounds the page on
    /// the side it starts from, in offsets: forward, only offsets after it
    /// (`since`; 0: from the start); reverse, only offsets below it
    /// (`before`; `u64::MAX`: from the newest). So the first page of a walk
    /// is found by time, and each next page keeps the window and takes the
    /// last entry's offset as `offset_bound`: time never decreases along a
    /// stream (the store stamps it so), so the pages meet without gaps or
    /// duplicates. `from_time_ms < before_time_ms` (107 otherwise).
    ///
    /// The JSON form is `history` with `from_time` and/or `before_time`.
    /// Appended last, so every older command keeps its `ringcast.rkyv.v1`
    /// bytes; the small fields come first and the one offset serves both
    /// directions so the variant is no larger than the largest older one
    /// and the archived command keeps its size
    /// (`history_by_time_keeps_the_archived_command_size`).
    HistoryByTime {
        reverse: bool,
        limit: u32,
        stream: String,
        from_time_ms: u64,
        before_time_ms: u64,
        offset_bound: u64,
    },
}

/// What a presence command asks for. Each takes 1 to
/// [`PRESENCE_USERS_MAX`](super::PRESENCE_USERS_MAX) user ids.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[non_exhaustive]
pub enum PresenceCommand {
    /// Watch `users`: the reply is their state now
    /// ([`ReplyResult::Presence`]), then each change of a watched user
    /// arrives as a [`ServerMessage::Presence`] until the connection
    /// unwatches it or closes.
    Watch { users: Vec<String> },
    /// Stop watching `users` (ids not watched are ignored).
    Unwatch { users: Vec<String> },
    /// The state of `users` now, without watching them.
    Query { users: Vec<String> },
}

impl PresenceCommand {
    pub fn users(&self) -> &[String] {
        match self {
            PresenceCommand::Watch { users }
            | PresenceCommand::Unwatch { users }
            | PresenceCommand::Query { users } => users,
        }
    }
}

/// One user's presence as a client sees it: `online` while any of its
/// connections is open (or closed less than the offline grace ago);
/// `last_seen_ms` is when its last connection closed (Unix ms), 0 while it
/// is online or when this node does not know (never seen since start, or
/// forgotten: see `docs/im.md`).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub struct PresenceState {
    pub user: String,
    pub online: bool,
    pub last_seen_ms: u64,
}

/// A position in a durable stream: the offset of the last publication a
/// client has processed, in the stream's epoch. Offsets start at 1; offset 0
/// means "nothing yet".
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash,
)]
#[rkyv(derive(Debug))]
pub struct StreamPosition {
    pub offset: u64,
    pub epoch: u64,
}

/// How a subscribe with `since` went. Failing to recover is not an error:
/// the subscription is made either way.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash,
)]
#[rkyv(derive(Debug))]
pub struct Recovery {
    /// Every publication after the requested offset was replayed (or there
    /// were none): the client has no gap. False when the epoch differs or
    /// the requested offset was already trimmed; then nothing was replayed
    /// and the client must reload its state.
    pub recovered: bool,
    /// The stream's current epoch.
    pub epoch: u64,
    /// The last offset the client now has: the last replayed one, or the
    /// requested one when nothing was replayed.
    pub offset: u64,
    /// The first offset the stream still holds.
    pub start_offset: u64,
    /// How many publications were replayed before the reply.
    pub replayed: u64,
}

/// A command that could not be decoded.
///
/// When `id` is `Some`, the engine answers with [`CommandError::reply`] and
/// keeps the connection; when it is `None` there is nothing to answer to, so
/// the engine closes the connection (close code 4006, bad request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("command rejected with error {code_number} ({code}): {message}", code_number = .code.as_u16())]
#[non_exhaustive]
pub struct CommandError {
    pub id: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
}

/// Error codes sent to clients in replies. Stable: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum ErrorCode {
    Internal = 100,
    Unauthorized = 101,
    UnknownChannel = 102,
    PermissionDenied = 103,
    MethodNotFound = 104,
    AlreadySubscribed = 105,
    LimitExceeded = 106,
    BadRequest = 107,
    NotSubscribed = 108,
    TokenExpired = 109,
    UnknownUser = 110,
    StoreUnavailable = 111,
    /// The subscription token is past its `exp`: get a new one from the
    /// app backend and subscribe again.
    SubscriptionTokenExpired = 112,
    /// The subscription token does not verify, or is for another channel
    /// or another user.
    SubscriptionTokenInvalid = 113,
    /// A rate limit refused the command; the reply carries `retry_after_ms`.
    RateLimited = 114,
    /// The proxy backend did not answer within its `timeout_ms`.
    ProxyTimeout = 116,
    /// The proxy backend could not be reached (refused, reset, no route).
    ProxyUnavailable = 117,
    /// The proxy backend denied the command; the message is the backend's.
    ProxyDenied = 118,
    /// The proxy backend's answer was not a valid one (status, body).
    ProxyBadResponse = 119,
    /// A direct message between two users one of whom blocked the other;
    /// the message says which.
    Blocked = 120,
    /// The group is dissolved: it takes no more writes.
    Dissolved = 121,
    /// The sender is muted in the group (alone, or by mute-all).
    Muted = 122,
    /// The user is not a member of the conversation (a DM's two users, a
    /// group's member table).
    NotMember = 123,
    /// The change would take the group past its member limit.
    MemberLimit = 124,
    /// A recall or an edit too late: past `im.recall_window_s` or
    /// `im.edit_window_s`, or past `im.edits_max` edits of the message.
    WindowPassed = 125,
    /// The command would start a conversation for a user who already has
    /// `im.conversations_per_user_max`.
    TooManyConversations = 126,
}

/// The binary form of a command: the same type as [`Command`], named for
/// the wire (`docs/protocol.md` and binary clients use this name).
pub type BinaryCommand = Command;
/// See [`BinaryCommand`].
pub type BinaryCommandBody = CommandBody;
/// See [`BinaryCommand`].
pub type ArchivedBinaryCommand = ArchivedCommand;
/// See [`BinaryCommand`].
pub type ArchivedBinaryCommandBody = ArchivedCommandBody;
/// See [`BinaryCommand`].
pub type BinaryCommandResolver = CommandResolver;
/// See [`BinaryCommand`].
pub type BinaryCommandBodyResolver = CommandBodyResolver;

/// The answer to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok {
        id: u64,
        result: ReplyResult,
    },
    Error {
        id: u64,
        code: ErrorCode,
        message: String,
    },
    /// An error reply that says when to try again: encoded as an error
    /// with `retry_after_ms` (JSON) or `ServerMessage::Error`'s
    /// `retry_after_ms` (binary). A variant of its own, not a field of
    /// `Error`, so the many places that build plain errors stay as they are.
    ErrorRetry {
        id: u64,
        code: ErrorCode,
        message: String,
        retry_after_ms: u64,
    },
}

/// What a successful command returns.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
///
/// History replies are not a `ReplyResult`: they embed stored publications
/// as they are, so they are built by [`encode_history_json`](super::encode_history_json) and
/// [`encode_history_binary`](super::encode_history_binary) ([`ServerMessage::History`]).
pub enum ReplyResult {
    /// Unsubscribe, ping, ack.
    Empty,
    /// Publish and send. `offset`/`epoch` are 0 when the channel is not stored.
    /// `duplicate`: the `client_msg_id` was seen before, nothing new was
    /// published, and the ids are those of the original publication.
    Published {
        message_id: u64,
        offset: u64,
        epoch: u64,
        duplicate: bool,
    },
    /// Refresh. `expires_at_ms` is 0 when the new token never expires.
    Refreshed { expires_at_ms: u64 },
    /// Subscribe. `recovery` is `Some` exactly when the command had `since`.
    Subscribed {
        channel: String,
        /// Archived out of line (a relative pointer) so that this variant,
        /// and with it `ArchivedServerMessage`, stays no larger than a push:
        /// the size of `ArchivedServerMessage` is part of the stored format.
        #[rkyv(with = Map<AsBox>)]
        recovery: Option<Recovery>,
    },
    /// Rpc: the backend's answer data (`data_is_json`: UTF-8 JSON text).
    Rpc { data: Vec<u8>, data_is_json: bool },
    /// The reply to an IM command ([`ImReply`]); boxed, so the archived
    /// reply, and with it a server message, keeps its size.
    Im(Box<ImReply>),
    /// `presence_watch` and `presence_query`: each asked user's state, in
    /// the order asked (duplicates once). Appended.
    Presence { users: Vec<PresenceState> },
}

/// The first message on every connection.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ConnectInfo {
    pub client_id: u64,
    pub user: String,
    /// Unix ms when the token expires; 0 = never.
    pub expires_at_ms: u64,
    pub ping_interval_ms: u64,
    pub shard: u16,
}

/// Everything the server sends a binary client: each binary frame holds an
/// rkyv archive of one `ServerMessage`. The rkyv mirror of [`ConnectInfo`],
/// [`Reply`] and pushes ([`Envelope`]).
///
/// `Push` archives are also the canonical stored form of a publication (see
/// [`crate::envelope::EncodedPush`]), so this layout is a storage format too:
/// variants are only ever appended, and any change needs a new subprotocol
/// version and a store migration. The archive's root sits at the end of the
/// buffer and is `size_of::<ArchivedServerMessage>()` bytes long, so a new
/// variant must not make that larger than the `Push` variant (72 bytes);
/// the `push_archive_layout_is_frozen` test pins it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ServerMessage {
    Connect(ConnectInfo),
    Reply {
        id: u64,
        result: ReplyResult,
    },
    Error {
        id: u64,
        code: u16,
        message: String,
        /// When to try again, for errors that say (114, rate limited).
        /// Appended last: the fields before it keep their archived offsets
        /// and the variant stays smaller than `Push`, so a client built
        /// before the field still reads the rest of the error.
        retry_after_ms: Option<u64>,
    },
    Push(Envelope),
    /// The reply to a history command; see [`encode_history_binary`](super::encode_history_binary).
    History {
        id: u64,
        stream: String,
        epoch: u64,
        start_offset: u64,
        next_offset: u64,
        entries: Vec<Envelope>,
    },
    /// The server subscribed this connection to `channel` (`/api/subscribe`
    /// or the connection token's `subs` claim); pushes of the channel follow.
    Subscribed {
        channel: String,
    },
    /// The server unsubscribed this connection from `channel`
    /// (`/api/unsubscribe`); no push of it follows.
    Unsubscribed {
        channel: String,
    },
    /// An IM event the server sends unasked ([`ImEvent`]: the sync at
    /// connect, a read on another device, a peer's receipt). Boxed: the
    /// archive of a server message stays no larger than a push.
    Im(Box<ImEvent>),
    /// A watched user went online or offline (`presence_watch`). Appended.
    Presence(PresenceState),
}

/// A server message archive that failed validation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("invalid rkyv archive")]
    InvalidArchive(#[source] BoxedError),
    #[error("expected a push archive, got a {variant} message")]
    NotPush { variant: &'static str },
}

impl CommandError {
    pub fn new(id: Option<u64>, code: ErrorCode, message: String) -> CommandError {
        CommandError { id, code, message }
    }

    /// The error reply to send, or `None` when the command had no readable
    /// id (then the connection is closed with 4006 instead).
    pub fn reply(&self) -> Option<Reply> {
        self.id.map(|id| Reply::Error {
            id,
            code: self.code,
            message: self.message.clone(),
        })
    }
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 26] = [
        ErrorCode::Internal,
        ErrorCode::Unauthorized,
        ErrorCode::UnknownChannel,
        ErrorCode::PermissionDenied,
        ErrorCode::MethodNotFound,
        ErrorCode::AlreadySubscribed,
        ErrorCode::LimitExceeded,
        ErrorCode::BadRequest,
        ErrorCode::NotSubscribed,
        ErrorCode::TokenExpired,
        ErrorCode::UnknownUser,
        ErrorCode::StoreUnavailable,
        ErrorCode::SubscriptionTokenExpired,
        ErrorCode::SubscriptionTokenInvalid,
        ErrorCode::RateLimited,
        ErrorCode::ProxyTimeout,
        ErrorCode::ProxyUnavailable,
        ErrorCode::ProxyDenied,
        ErrorCode::ProxyBadResponse,
        ErrorCode::Blocked,
        ErrorCode::Dissolved,
        ErrorCode::Muted,
        ErrorCode::NotMember,
        ErrorCode::MemberLimit,
        ErrorCode::WindowPassed,
        ErrorCode::TooManyConversations,
    ];

    /// The numeric code on the wire.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// The code for a wire number, if it is one we define.
    pub fn from_u16(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|candidate| candidate.as_u16() == code)
    }

    /// The default human-readable message for this code.
    pub fn message(&self) -> &'static str {
        match self {
            ErrorCode::Internal => "internal server error",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownChannel => "unknown channel",
            ErrorCode::PermissionDenied => "permission denied",
            ErrorCode::MethodNotFound => "method not found",
            ErrorCode::AlreadySubscribed => "already subscribed",
            ErrorCode::LimitExceeded => "limit exceeded",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::NotSubscribed => "not subscribed",
            ErrorCode::TokenExpired => "token expired",
            ErrorCode::UnknownUser => "unknown user",
            ErrorCode::StoreUnavailable => "store unavailable",
            ErrorCode::SubscriptionTokenExpired => "subscription token expired",
            ErrorCode::SubscriptionTokenInvalid => "subscription token invalid",
            ErrorCode::RateLimited => "rate limited",
            ErrorCode::ProxyTimeout => "proxy timeout",
            ErrorCode::ProxyUnavailable => "proxy unavailable",
            ErrorCode::ProxyDenied => "denied by the backend",
            ErrorCode::ProxyBadResponse => "bad answer from the backend",
            ErrorCode::Blocked => "blocked",
            ErrorCode::Dissolved => "the group is dissolved",
            ErrorCode::Muted => "muted in the group",
            ErrorCode::NotMember => "not a member of the conversation",
            ErrorCode::MemberLimit => "the group's member limit",
            ErrorCode::WindowPassed => "recall or edit window passed",
            ErrorCode::TooManyConversations => "too many conversations",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl Reply {
    /// An error reply with the code's default message.
    pub fn error(id: u64, code: ErrorCode) -> Reply {
        Reply::Error {
            id,
            code,
            message: code.message().to_owned(),
        }
    }
}
