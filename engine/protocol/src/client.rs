//! The client protocol: commands in, replies and pushes out, in two wire
//! forms (JSON text frames and rkyv binary frames) over one internal model.
//!
//! The engine never sees a wire form past this module: [`decode_json`] and
//! [`decode_binary`] both produce an owned [`Command`], and one [`Reply`] /
//! [`ConnectInfo`] value is rendered by a JSON or a binary encoder depending
//! on the connection's subprotocol. Keeping the two forms behind one model is
//! what keeps them from drifting apart. `docs/protocol.md` is the reference
//! for clients; keep it in step with this file.
//!
//! Validation happens here, once: every binary archive from the network goes
//! through rkyv's checked `access`, and every payload flagged as JSON is
//! proven to be valid UTF-8 JSON, so the JSON pushes built from it later
//! ([`crate::envelope::encode_push_json`]) are valid without re-checking.

use std::borrow::Cow;

use base64::Engine as _;
use bytes::Bytes;
use rkyv::rancor::{self, BoxedError, Fallible, Source};
use rkyv::ser::{Allocator, Writer};
use rkyv::string::{ArchivedString, StringResolver};
use rkyv::util::AlignedVec;
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::with::{AsBox, Inline, Map};
use rkyv::Place;
use serde::de::{IgnoredAny, Unexpected};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::envelope::{push_envelope_json, ArchivedEnvelope, Envelope};

/// Subprotocol for JSON text frames. Also used when the client offers none.
pub const SUBPROTOCOL_JSON: &str = "ringcast.json.v1";
/// Subprotocol for rkyv binary frames ([`BinaryCommand`] in, [`ServerMessage`] out).
///
/// The archived layout is part of the name: a layout change gets a new one.
pub const SUBPROTOCOL_BINARY: &str = "ringcast.rkyv.v1";

/// `limit` of a history command when the JSON form leaves it out.
pub const HISTORY_LIMIT_DEFAULT: u32 = 100;
/// Largest `limit` a history command may ask for (the smallest is 1).
pub const HISTORY_LIMIT_MAX: u32 = 1000;
/// Longest `client_msg_id`, in bytes (the shortest is 1).
pub const CLIENT_MSG_ID_BYTES_MAX: usize = 64;

/// One client command, from either wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Client-chosen id, echoed in the reply. Never 0.
    pub id: u64,
    pub body: CommandBody,
}

/// What a command asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// `client_msg_id` is an idempotency key: 1 to [`CLIENT_MSG_ID_BYTES_MAX`]
    /// bytes of printable ASCII (`0x20..=0x7e`), checked by the decoders.
    Publish {
        channel: String,
        data: Bytes,
        data_is_json: bool,
        client_msg_id: Option<String>,
    },
    /// To every connection of `user`. `client_msg_id` as for `Publish`.
    Send {
        user: String,
        data: Bytes,
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
    /// Up to `limit` (1..=[`HISTORY_LIMIT_MAX`]) stored publications of
    /// `stream`. Forward (`reverse == false`): offsets after `since`, oldest
    /// first, from the stream's start when `since` is `None`. Reverse:
    /// offsets before `since`, newest first, from the newest when `None`.
    /// Answered with [`encode_history_json`] / [`encode_history_binary`].
    History {
        stream: String,
        since: Option<u64>,
        limit: u32,
        reverse: bool,
    },
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
}

/// The binary form of a command: clients send an rkyv archive of this.
///
/// The archived layout is the `ringcast.rkyv.v1` wire format. Adding a
/// variant or field changes it and needs a new subprotocol version.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct BinaryCommand {
    pub id: u64,
    pub body: BinaryCommandBody,
}

/// See [`CommandBody`]; same meaning, archivable field types.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[non_exhaustive]
pub enum BinaryCommandBody {
    Subscribe {
        channel: String,
        since: Option<StreamPosition>,
    },
    Unsubscribe {
        channel: String,
    },
    Publish {
        channel: String,
        data: Vec<u8>,
        data_is_json: bool,
        client_msg_id: Option<String>,
    },
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
    Ack {
        stream: String,
        offset: u64,
    },
    /// No defaults in this form: `limit` must be 1..=[`HISTORY_LIMIT_MAX`].
    History {
        stream: String,
        since: Option<u64>,
        limit: u32,
        reverse: bool,
    },
}

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
}

/// What a successful command returns.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
///
/// History replies are not a `ReplyResult`: they embed stored publications
/// as they are, so they are built by [`encode_history_json`] and
/// [`encode_history_binary`] ([`ServerMessage::History`]).
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
    },
    Push(Envelope),
    /// The reply to a history command; see [`encode_history_binary`].
    History {
        id: u64,
        stream: String,
        epoch: u64,
        start_offset: u64,
        next_offset: u64,
        entries: Vec<Envelope>,
    },
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

/// Decodes one JSON command (the payload of one text frame):
/// `{"id": 7, "method": "subscribe", "params": {"channel": "news"}}`.
///
/// Publish and send `data` is kept as the exact bytes the client sent (not
/// re-serialized). Unknown fields, missing fields, wrong types and id 0 are
/// [`ErrorCode::BadRequest`]; an unknown method is
/// [`ErrorCode::MethodNotFound`]. The error carries the id whenever it could
/// still be read.
pub fn decode_json(bytes: &[u8]) -> Result<Command, CommandError> {
    if !starts_json_object(bytes) {
        return Err(CommandError::new(
            None,
            ErrorCode::BadRequest,
            "invalid command: expected a JSON object".to_owned(),
        ));
    }
    let command: JsonCommand<'_> = match serde_json::from_slice(bytes) {
        Ok(command) => command,
        Err(error) => {
            return Err(CommandError::new(
                probe_json_id(bytes),
                ErrorCode::BadRequest,
                format!("invalid command: {error}"),
            ))
        }
    };
    let id = command.id;
    if id == 0 {
        return Err(id_zero_error());
    }
    let body = match command.method.as_ref() {
        "subscribe" => {
            let params: SubscribeParams<'_> = parse_params(id, command.params)?;
            let since = match params.since {
                Some(since) => {
                    let since: JsonStreamPosition = parse_object(id, "since", since)?;
                    Some(StreamPosition {
                        offset: since.offset,
                        epoch: since.epoch,
                    })
                }
                None => None,
            };
            CommandBody::Subscribe {
                channel: params.channel,
                since,
            }
        }
        "unsubscribe" => {
            let params: ChannelParams = parse_params(id, command.params)?;
            CommandBody::Unsubscribe {
                channel: params.channel,
            }
        }
        "publish" => {
            let params: PublishParams<'_> = parse_params(id, command.params)?;
            let (data, data_is_json) = json_payload(id, params.data, params.b64data)?;
            CommandBody::Publish {
                channel: params.channel,
                data,
                data_is_json,
                client_msg_id: params.client_msg_id,
            }
        }
        "send" => {
            let params: SendParams<'_> = parse_params(id, command.params)?;
            let (data, data_is_json) = json_payload(id, params.data, params.b64data)?;
            CommandBody::Send {
                user: params.user,
                data,
                data_is_json,
                client_msg_id: params.client_msg_id,
            }
        }
        "refresh" => {
            let params: RefreshParams = parse_params(id, command.params)?;
            CommandBody::Refresh {
                token: params.token,
            }
        }
        "ping" => {
            if command.params.is_some() {
                let _: EmptyParams = parse_params(id, command.params)?;
            }
            CommandBody::Ping
        }
        "ack" => {
            let params: AckParams = parse_params(id, command.params)?;
            CommandBody::Ack {
                stream: params.stream,
                offset: params.offset,
            }
        }
        "history" => {
            let params: HistoryParams = parse_params(id, command.params)?;
            CommandBody::History {
                stream: params.stream,
                since: params.since,
                limit: params.limit,
                reverse: params.reverse,
            }
        }
        _ => {
            return Err(CommandError::new(
                Some(id),
                ErrorCode::MethodNotFound,
                UNKNOWN_METHOD_MESSAGE.to_owned(),
            ))
        }
    };
    let command = Command { id, body };
    validate_command(&command)?;
    Ok(command)
}

/// Decodes one binary command (the payload of one binary frame): an rkyv
/// archive of [`BinaryCommand`], validated with rkyv's checked access.
///
/// The bytes may be unaligned; they are copied into an aligned buffer when
/// needed. A payload flagged `data_is_json` must be valid UTF-8 JSON.
pub fn decode_binary(bytes: &[u8]) -> Result<Command, CommandError> {
    let binary = with_aligned(bytes, |aligned| {
        let archived = rkyv::access::<ArchivedBinaryCommand, BoxedError>(aligned)?;
        rkyv::deserialize::<BinaryCommand, BoxedError>(archived)
    })
    .map_err(|error| {
        CommandError::new(
            None,
            ErrorCode::BadRequest,
            format!("invalid binary command archive: {error}"),
        )
    })?;
    let id = binary.id;
    if id == 0 {
        return Err(id_zero_error());
    }
    let body = match binary.body {
        BinaryCommandBody::Subscribe { channel, since } => {
            CommandBody::Subscribe { channel, since }
        }
        BinaryCommandBody::Unsubscribe { channel } => CommandBody::Unsubscribe { channel },
        BinaryCommandBody::Publish {
            channel,
            data,
            data_is_json,
            client_msg_id,
        } => {
            validate_binary_payload(id, &data, data_is_json)?;
            CommandBody::Publish {
                channel,
                data: Bytes::from(data),
                data_is_json,
                client_msg_id,
            }
        }
        BinaryCommandBody::Send {
            user,
            data,
            data_is_json,
            client_msg_id,
        } => {
            validate_binary_payload(id, &data, data_is_json)?;
            CommandBody::Send {
                user,
                data: Bytes::from(data),
                data_is_json,
                client_msg_id,
            }
        }
        BinaryCommandBody::Refresh { token } => CommandBody::Refresh { token },
        BinaryCommandBody::Ping => CommandBody::Ping,
        BinaryCommandBody::Ack { stream, offset } => CommandBody::Ack { stream, offset },
        BinaryCommandBody::History {
            stream,
            since,
            limit,
            reverse,
        } => CommandBody::History {
            stream,
            since,
            limit,
            reverse,
        },
    };
    let command = Command { id, body };
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

/// Renders a reply as JSON: `{"id":7,"result":{...}}` or
/// `{"id":7,"error":{"code":103,"message":"permission denied"}}`.
pub fn encode_reply_json(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match reply {
        Reply::Ok { id, result } => {
            out.extend_from_slice(b"{\"id\":");
            push_u64(&mut out, *id);
            out.extend_from_slice(b",\"result\":");
            match result {
                ReplyResult::Empty => out.extend_from_slice(b"{}"),
                ReplyResult::Published {
                    message_id,
                    offset,
                    epoch,
                    duplicate,
                } => {
                    out.extend_from_slice(b"{\"id\":\"");
                    push_u64(&mut out, *message_id);
                    out.extend_from_slice(b"\",\"offset\":");
                    push_u64(&mut out, *offset);
                    out.extend_from_slice(b",\"epoch\":\"");
                    push_u64(&mut out, *epoch);
                    out.push(b'"');
                    if *duplicate {
                        out.extend_from_slice(b",\"duplicate\":true");
                    }
                    out.push(b'}');
                }
                ReplyResult::Refreshed { expires_at_ms } => {
                    out.push(b'{');
                    if *expires_at_ms != 0 {
                        out.extend_from_slice(b"\"expires\":");
                        push_u64(&mut out, *expires_at_ms);
                    }
                    out.push(b'}');
                }
                ReplyResult::Subscribed { channel, recovery } => {
                    out.extend_from_slice(b"{\"channel\":");
                    push_json_str(&mut out, channel);
                    if let Some(recovery) = recovery {
                        out.extend_from_slice(b",\"recovery\":{\"recovered\":");
                        out.extend_from_slice(if recovery.recovered {
                            b"true"
                        } else {
                            b"false"
                        });
                        out.extend_from_slice(b",\"epoch\":\"");
                        push_u64(&mut out, recovery.epoch);
                        out.extend_from_slice(b"\",\"offset\":");
                        push_u64(&mut out, recovery.offset);
                        out.extend_from_slice(b",\"start_offset\":");
                        push_u64(&mut out, recovery.start_offset);
                        out.extend_from_slice(b",\"replayed\":");
                        push_u64(&mut out, recovery.replayed);
                        out.push(b'}');
                    }
                    out.push(b'}');
                }
            }
            out.push(b'}');
        }
        Reply::Error { id, code, message } => {
            out.extend_from_slice(b"{\"id\":");
            push_u64(&mut out, *id);
            out.extend_from_slice(b",\"error\":{\"code\":");
            push_u64(&mut out, u64::from(code.as_u16()));
            out.extend_from_slice(b",\"message\":");
            push_json_str(&mut out, message);
            out.extend_from_slice(b"}}");
        }
    }
    out
}

/// Renders the connect message as JSON:
/// `{"connect":{"client":"123","user":"alice","expires":1700000000000,"ping_interval_ms":25000,"shard":0}}`.
/// `client` is a decimal string (JavaScript precision); `expires` is omitted
/// when the token never expires.
pub fn encode_connect_json(info: &ConnectInfo) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + info.user.len());
    out.extend_from_slice(b"{\"connect\":{\"client\":\"");
    push_u64(&mut out, info.client_id);
    out.extend_from_slice(b"\",\"user\":");
    push_json_str(&mut out, &info.user);
    if info.expires_at_ms != 0 {
        out.extend_from_slice(b",\"expires\":");
        push_u64(&mut out, info.expires_at_ms);
    }
    out.extend_from_slice(b",\"ping_interval_ms\":");
    push_u64(&mut out, info.ping_interval_ms);
    out.extend_from_slice(b",\"shard\":");
    push_u64(&mut out, u64::from(info.shard));
    out.extend_from_slice(b"}}");
    out
}

/// Encodes a reply as an archive of [`ServerMessage::Reply`] or
/// [`ServerMessage::Error`], without cloning it.
pub fn encode_reply_binary(reply: &Reply) -> Vec<u8> {
    let message = match reply {
        Reply::Ok { id, result } => ServerMessageRef::Reply { id: *id, result },
        Reply::Error { id, code, message } => ServerMessageRef::Error {
            id: *id,
            code: code.as_u16(),
            message,
        },
    };
    archive_to_vec(&message)
}

/// Encodes the connect message as an archive of [`ServerMessage::Connect`].
pub fn encode_connect_binary(info: &ConnectInfo) -> Vec<u8> {
    archive_to_vec(&ServerMessageRef::Connect(info))
}

/// Renders the reply to a history command as JSON:
///
/// `{"id":7,"result":{"stream":"chat:lobby","epoch":"123","start_offset":1,"next_offset":58,"publications":[{"channel":"chat:lobby","id":"...","offset":41,...},...]}}`
///
/// Each publication is the inner object of a push
/// ([`crate::envelope::encode_push_json`]), written from the stored archive
/// with its `data` verbatim. `epoch` is a decimal string; `start_offset` is
/// the first offset the stream still holds and `next_offset` the offset its
/// next publication will get. `pushes` are in the order to send them.
pub fn encode_history_json(
    id: u64,
    stream: &str,
    epoch: u64,
    start_offset: u64,
    next_offset: u64,
    pushes: &[&ArchivedEnvelope],
) -> Vec<u8> {
    let entries_len: usize = pushes
        .iter()
        .map(|env| crate::envelope::envelope_json_len_hint(env) + 1)
        .sum();
    let mut out = Vec::with_capacity(160 + stream.len() + entries_len);
    out.extend_from_slice(b"{\"id\":");
    push_u64(&mut out, id);
    out.extend_from_slice(b",\"result\":{\"stream\":");
    push_json_str(&mut out, stream);
    out.extend_from_slice(b",\"epoch\":\"");
    push_u64(&mut out, epoch);
    out.extend_from_slice(b"\",\"start_offset\":");
    push_u64(&mut out, start_offset);
    out.extend_from_slice(b",\"next_offset\":");
    push_u64(&mut out, next_offset);
    out.extend_from_slice(b",\"publications\":[");
    for (index, env) in pushes.iter().enumerate() {
        if index != 0 {
            out.push(b',');
        }
        push_envelope_json(&mut out, env);
    }
    out.extend_from_slice(b"]}}");
    out
}

/// Encodes the reply to a history command as an archive of
/// [`ServerMessage::History`], copying each stored envelope straight into
/// the archive (no intermediate [`Envelope`]). Fields as in
/// [`encode_history_json`].
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
    pub const ALL: [ErrorCode; 12] = [
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

/// Borrowed mirror of [`ServerMessage`] for encoding without clones.
///
/// `#[rkyv(as = ...)]` makes it archive into `ArchivedServerMessage` itself,
/// which is only correct while the variants (order, field order, archived
/// field types) match `ServerMessage` exactly; `Inline` archives `&T` as
/// `T`. The tests compare both encodings byte for byte, and
/// [`crate::envelope::EncodedPush::encode`] re-validates in debug builds.
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedServerMessage)]
pub(crate) enum ServerMessageRef<'a> {
    Connect(#[rkyv(with = Inline)] &'a ConnectInfo),
    Reply {
        id: u64,
        #[rkyv(with = Inline)]
        result: &'a ReplyResult,
    },
    Error {
        id: u64,
        code: u16,
        #[rkyv(with = Inline)]
        message: &'a String,
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

/// Appends `s` as a JSON string literal, escaping `"`, `\` and control characters.
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push(b'"');
    for &byte in s.as_bytes() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x00..=0x1f => {
                // Both nibbles are < 16, so the lookups cannot fail.
                let high = HEX.get(usize::from(byte >> 4)).copied().unwrap_or(b'0');
                let low = HEX.get(usize::from(byte & 0xf)).copied().unwrap_or(b'0');
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', high, low]);
            }
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

/// Appends `n` in decimal.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let start = out.len();
    loop {
        out.push(b'0' + (n % 10) as u8);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if let Some(digits) = out.get_mut(start..) {
        digits.reverse();
    }
}

const UNKNOWN_METHOD_MESSAGE: &str = "unknown method; expected subscribe, unsubscribe, publish, \
     send, refresh, ping, ack or history";

/// Alignment rkyv archives are built with (`AlignedVec`'s default).
const ARCHIVE_ALIGNMENT: usize = 16;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCommand<'a> {
    id: u64,
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct JsonIdProbe {
    id: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelParams {
    channel: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeParams<'a> {
    channel: String,
    /// A [`JsonStreamPosition`], parsed by [`parse_object`]; `null` is absent.
    #[serde(borrow, default)]
    since: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonStreamPosition {
    offset: u64,
    /// A number or a decimal string: epochs are u64, past JavaScript's 2^53.
    #[serde(deserialize_with = "u64_or_decimal_string")]
    epoch: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishParams<'a> {
    channel: String,
    #[serde(borrow, default, deserialize_with = "raw_present")]
    data: Option<&'a RawValue>,
    #[serde(default)]
    b64data: Option<String>,
    #[serde(default)]
    client_msg_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendParams<'a> {
    user: String,
    #[serde(borrow, default, deserialize_with = "raw_present")]
    data: Option<&'a RawValue>,
    #[serde(default)]
    b64data: Option<String>,
    #[serde(default)]
    client_msg_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckParams {
    stream: String,
    offset: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    stream: String,
    #[serde(default)]
    since: Option<u64>,
    #[serde(default = "history_limit_default")]
    limit: u32,
    #[serde(default)]
    reverse: bool,
}

fn history_limit_default() -> u32 {
    HISTORY_LIMIT_DEFAULT
}

/// A u64 given as a JSON number or as a string of decimal digits.
fn u64_or_decimal_string<'de, D>(deserializer: D) -> Result<u64, D::Error>
where
    D: Deserializer<'de>,
{
    struct U64OrString;

    impl serde::de::Visitor<'_> for U64OrString {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a non-negative integer, as a number or a decimal string")
        }

        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<u64, E> {
            Ok(value)
        }

        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<u64, E> {
            if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(E::invalid_value(Unexpected::Str(value), &self));
            }
            value
                .parse()
                .map_err(|_| E::invalid_value(Unexpected::Str(value), &self))
        }
    }

    deserializer.deserialize_any(U64OrString)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshParams {
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyParams {}

/// A present `data` field is `Some`, even when its value is JSON `null`
/// (plain `Option` would turn `null` into "absent").
fn raw_present<'de: 'a, 'a, D>(deserializer: D) -> Result<Option<&'a RawValue>, D::Error>
where
    D: Deserializer<'de>,
{
    <&'a RawValue>::deserialize(deserializer).map(Some)
}

fn parse_params<'a, T: Deserialize<'a>>(
    id: u64,
    params: Option<&'a RawValue>,
) -> Result<T, CommandError> {
    let Some(params) = params else {
        return Err(CommandError::new(
            Some(id),
            ErrorCode::BadRequest,
            "missing field `params`".to_owned(),
        ));
    };
    parse_object(id, "params", params)
}

/// Parses `value` (the field `name`) as a struct, which must be a JSON object.
fn parse_object<'a, T: Deserialize<'a>>(
    id: u64,
    name: &str,
    value: &'a RawValue,
) -> Result<T, CommandError> {
    // serde's derive would also accept a JSON array for a struct.
    if !starts_json_object(value.get().as_bytes()) {
        return Err(CommandError::new(
            Some(id),
            ErrorCode::BadRequest,
            format!("invalid {name}: expected a JSON object"),
        ));
    }
    serde_json::from_str(value.get()).map_err(|error| {
        CommandError::new(
            Some(id),
            ErrorCode::BadRequest,
            format!("invalid {name}: {error}"),
        )
    })
}

fn json_payload(
    id: u64,
    data: Option<&RawValue>,
    b64data: Option<String>,
) -> Result<(Bytes, bool), CommandError> {
    match (data, b64data) {
        (Some(data), None) => Ok((Bytes::copy_from_slice(data.get().as_bytes()), true)),
        (None, Some(b64data)) => base64::engine::general_purpose::STANDARD
            .decode(b64data.as_bytes())
            .map(|bytes| (Bytes::from(bytes), false))
            .map_err(|error| {
                CommandError::new(
                    Some(id),
                    ErrorCode::BadRequest,
                    format!("invalid params: b64data is not standard base64: {error}"),
                )
            }),
        (Some(_), Some(_)) => Err(CommandError::new(
            Some(id),
            ErrorCode::BadRequest,
            "invalid params: give either `data` or `b64data`, not both".to_owned(),
        )),
        (None, None) => Err(CommandError::new(
            Some(id),
            ErrorCode::BadRequest,
            "invalid params: missing field `data` or `b64data`".to_owned(),
        )),
    }
}

/// serde's derived struct visitors also accept arrays (`[7, "ping"]`);
/// the protocol only has objects.
fn starts_json_object(text: &[u8]) -> bool {
    text.trim_ascii_start().first() == Some(&b'{')
}

fn probe_json_id(bytes: &[u8]) -> Option<u64> {
    serde_json::from_slice::<JsonIdProbe>(bytes)
        .ok()
        .map(|probe| probe.id)
        .filter(|&id| id != 0)
}

fn id_zero_error() -> CommandError {
    CommandError::new(
        None,
        ErrorCode::BadRequest,
        "id must be a positive integer".to_owned(),
    )
}

fn validate_binary_payload(id: u64, data: &[u8], data_is_json: bool) -> Result<(), CommandError> {
    if !data_is_json {
        return Ok(());
    }
    // UTF-8 first: serde_json does not check the UTF-8 of strings it skips.
    let text = simdutf8::basic::from_utf8(data).map_err(|_| {
        CommandError::new(
            Some(id),
            ErrorCode::BadRequest,
            "data_is_json is set but data is not valid UTF-8".to_owned(),
        )
    })?;
    serde_json::from_str::<IgnoredAny>(text)
        .map(|_| ())
        .map_err(|error| {
            CommandError::new(
                Some(id),
                ErrorCode::BadRequest,
                format!("data_is_json is set but data is not valid JSON: {error}"),
            )
        })
}

fn validate_command(command: &Command) -> Result<(), CommandError> {
    let bad_request = |message: String| {
        Err(CommandError::new(
            Some(command.id),
            ErrorCode::BadRequest,
            message,
        ))
    };
    let (field, value) = match &command.body {
        CommandBody::Subscribe { channel, .. }
        | CommandBody::Unsubscribe { channel }
        | CommandBody::Publish { channel, .. } => ("channel", channel),
        CommandBody::Send { user, .. } => ("user", user),
        CommandBody::Refresh { token } => ("token", token),
        CommandBody::Ack { stream, .. } | CommandBody::History { stream, .. } => ("stream", stream),
        CommandBody::Ping => return Ok(()),
    };
    if value.is_empty() {
        return bad_request(format!("`{field}` must not be empty"));
    }
    match &command.body {
        CommandBody::Publish {
            client_msg_id: Some(key),
            ..
        }
        | CommandBody::Send {
            client_msg_id: Some(key),
            ..
        } if !valid_client_msg_id(key) => bad_request(format!(
            "`client_msg_id` must be 1 to {CLIENT_MSG_ID_BYTES_MAX} bytes of printable ASCII"
        )),
        CommandBody::History { limit, .. } if !(1..=HISTORY_LIMIT_MAX).contains(limit) => {
            bad_request(format!("`limit` must be 1 to {HISTORY_LIMIT_MAX}"))
        }
        _ => Ok(()),
    }
}

fn valid_client_msg_id(key: &str) -> bool {
    (1..=CLIENT_MSG_ID_BYTES_MAX).contains(&key.len())
        && key.bytes().all(|byte| matches!(byte, 0x20..=0x7e))
}

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
fn archive_to_vec<T>(value: &T) -> Vec<u8>
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Random buffers per fuzz test; fewer under miri, which is ~1000x slower.
    const FUZZ_ROUNDS: usize = if cfg!(miri) { 200 } else { 10_000 };

    fn parse(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).expect("valid JSON")
    }

    fn command(id: u64, body: CommandBody) -> Command {
        Command { id, body }
    }

    fn decode_json_str(text: &str) -> Result<Command, CommandError> {
        decode_json(text.as_bytes())
    }

    fn assert_json_error(text: &str, id: Option<u64>, code: ErrorCode) -> CommandError {
        let error = decode_json_str(text).expect_err(text);
        assert_eq!((error.id, error.code), (id, code), "{text}: {error}");
        error
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// (JSON form, binary form, expected command) for every method.
    fn every_command() -> Vec<(&'static str, BinaryCommand, Command)> {
        let bin = |id, body| BinaryCommand { id, body };
        vec![
            (
                r#"{"id":1,"method":"subscribe","params":{"channel":"news"}}"#,
                bin(
                    1,
                    BinaryCommandBody::Subscribe {
                        channel: "news".into(),
                        since: None,
                    },
                ),
                command(
                    1,
                    CommandBody::Subscribe {
                        channel: "news".into(),
                        since: None,
                    },
                ),
            ),
            (
                r#"{"id":2,"method":"unsubscribe","params":{"channel":"news"}}"#,
                bin(
                    2,
                    BinaryCommandBody::Unsubscribe {
                        channel: "news".into(),
                    },
                ),
                command(
                    2,
                    CommandBody::Unsubscribe {
                        channel: "news".into(),
                    },
                ),
            ),
            (
                r#"{"id":3,"method":"publish","params":{"channel":"news","data":{"a": [1, 2.50]}}}"#,
                bin(
                    3,
                    BinaryCommandBody::Publish {
                        channel: "news".into(),
                        data: br#"{"a": [1, 2.50]}"#.to_vec(),
                        data_is_json: true,
                        client_msg_id: None,
                    },
                ),
                command(
                    3,
                    CommandBody::Publish {
                        channel: "news".into(),
                        data: Bytes::from_static(br#"{"a": [1, 2.50]}"#),
                        data_is_json: true,
                        client_msg_id: None,
                    },
                ),
            ),
            (
                r#"{"id":4,"method":"publish","params":{"channel":"news","b64data":"AAEC/w=="}}"#,
                bin(
                    4,
                    BinaryCommandBody::Publish {
                        channel: "news".into(),
                        data: vec![0, 1, 2, 255],
                        data_is_json: false,
                        client_msg_id: None,
                    },
                ),
                command(
                    4,
                    CommandBody::Publish {
                        channel: "news".into(),
                        data: Bytes::from_static(&[0, 1, 2, 255]),
                        data_is_json: false,
                        client_msg_id: None,
                    },
                ),
            ),
            (
                r#"{"id":5,"method":"send","params":{"user":"alice","data":"hi"}}"#,
                bin(
                    5,
                    BinaryCommandBody::Send {
                        user: "alice".into(),
                        data: br#""hi""#.to_vec(),
                        data_is_json: true,
                        client_msg_id: None,
                    },
                ),
                command(
                    5,
                    CommandBody::Send {
                        user: "alice".into(),
                        data: Bytes::from_static(br#""hi""#),
                        data_is_json: true,
                        client_msg_id: None,
                    },
                ),
            ),
            (
                r#"{"id":6,"method":"send","params":{"user":"alice","b64data":""}}"#,
                bin(
                    6,
                    BinaryCommandBody::Send {
                        user: "alice".into(),
                        data: Vec::new(),
                        data_is_json: false,
                        client_msg_id: None,
                    },
                ),
                command(
                    6,
                    CommandBody::Send {
                        user: "alice".into(),
                        data: Bytes::new(),
                        data_is_json: false,
                        client_msg_id: None,
                    },
                ),
            ),
            (
                r#"{"id":7,"method":"refresh","params":{"token":"eyJ.x.y"}}"#,
                bin(
                    7,
                    BinaryCommandBody::Refresh {
                        token: "eyJ.x.y".into(),
                    },
                ),
                command(
                    7,
                    CommandBody::Refresh {
                        token: "eyJ.x.y".into(),
                    },
                ),
            ),
            (
                r#"{"id":18446744073709551615,"method":"ping"}"#,
                bin(u64::MAX, BinaryCommandBody::Ping),
                command(u64::MAX, CommandBody::Ping),
            ),
            (
                r#"{"id":9,"method":"subscribe","params":{"channel":"chat:a","since":{"offset":41,"epoch":123}}}"#,
                bin(
                    9,
                    BinaryCommandBody::Subscribe {
                        channel: "chat:a".into(),
                        since: Some(StreamPosition {
                            offset: 41,
                            epoch: 123,
                        }),
                    },
                ),
                command(
                    9,
                    CommandBody::Subscribe {
                        channel: "chat:a".into(),
                        since: Some(StreamPosition {
                            offset: 41,
                            epoch: 123,
                        }),
                    },
                ),
            ),
            (
                r#"{"id":10,"method":"subscribe","params":{"since":{"epoch":"18446744073709551615","offset":0},"channel":"chat:a"}}"#,
                bin(
                    10,
                    BinaryCommandBody::Subscribe {
                        channel: "chat:a".into(),
                        since: Some(StreamPosition {
                            offset: 0,
                            epoch: u64::MAX,
                        }),
                    },
                ),
                command(
                    10,
                    CommandBody::Subscribe {
                        channel: "chat:a".into(),
                        since: Some(StreamPosition {
                            offset: 0,
                            epoch: u64::MAX,
                        }),
                    },
                ),
            ),
            (
                r#"{"id":11,"method":"publish","params":{"channel":"news","data":[1],"client_msg_id":"k-1 ~!"}}"#,
                bin(
                    11,
                    BinaryCommandBody::Publish {
                        channel: "news".into(),
                        data: b"[1]".to_vec(),
                        data_is_json: true,
                        client_msg_id: Some("k-1 ~!".into()),
                    },
                ),
                command(
                    11,
                    CommandBody::Publish {
                        channel: "news".into(),
                        data: Bytes::from_static(b"[1]"),
                        data_is_json: true,
                        client_msg_id: Some("k-1 ~!".into()),
                    },
                ),
            ),
            (
                r#"{"id":12,"method":"send","params":{"user":"bob","b64data":"AA==","client_msg_id":"0123456789012345678901234567890123456789012345678901234567890123"}}"#,
                bin(
                    12,
                    BinaryCommandBody::Send {
                        user: "bob".into(),
                        data: vec![0],
                        data_is_json: false,
                        client_msg_id: Some(MAX_KEY.into()),
                    },
                ),
                command(
                    12,
                    CommandBody::Send {
                        user: "bob".into(),
                        data: Bytes::from_static(&[0]),
                        data_is_json: false,
                        client_msg_id: Some(MAX_KEY.into()),
                    },
                ),
            ),
            (
                r#"{"id":13,"method":"ack","params":{"stream":"user:alice","offset":17}}"#,
                bin(
                    13,
                    BinaryCommandBody::Ack {
                        stream: "user:alice".into(),
                        offset: 17,
                    },
                ),
                command(
                    13,
                    CommandBody::Ack {
                        stream: "user:alice".into(),
                        offset: 17,
                    },
                ),
            ),
            (
                r#"{"id":14,"method":"history","params":{"stream":"chat:a","since":10,"limit":1000,"reverse":true}}"#,
                bin(
                    14,
                    BinaryCommandBody::History {
                        stream: "chat:a".into(),
                        since: Some(10),
                        limit: 1000,
                        reverse: true,
                    },
                ),
                command(
                    14,
                    CommandBody::History {
                        stream: "chat:a".into(),
                        since: Some(10),
                        limit: 1000,
                        reverse: true,
                    },
                ),
            ),
            (
                r#"{"id":15,"method":"history","params":{"stream":"chat:a"}}"#,
                bin(
                    15,
                    BinaryCommandBody::History {
                        stream: "chat:a".into(),
                        since: None,
                        limit: HISTORY_LIMIT_DEFAULT,
                        reverse: false,
                    },
                ),
                command(
                    15,
                    CommandBody::History {
                        stream: "chat:a".into(),
                        since: None,
                        limit: 100,
                        reverse: false,
                    },
                ),
            ),
        ]
    }

    /// A `client_msg_id` of the longest allowed length.
    const MAX_KEY: &str = "0123456789012345678901234567890123456789012345678901234567890123";

    #[test]
    fn json_optional_fields_default() {
        assert_eq!(
            decode_json_str(
                r#"{"id":1,"method":"subscribe","params":{"channel":"a","since":null}}"#
            ),
            Ok(command(
                1,
                CommandBody::Subscribe {
                    channel: "a".into(),
                    since: None
                }
            ))
        );
        assert_eq!(
            decode_json_str(
                r#"{"id":1,"method":"publish","params":{"channel":"a","data":1,"client_msg_id":null}}"#
            ),
            Ok(command(
                1,
                CommandBody::Publish {
                    channel: "a".into(),
                    data: Bytes::from_static(b"1"),
                    data_is_json: true,
                    client_msg_id: None
                }
            ))
        );
        assert_eq!(
            decode_json_str(
                r#"{"id":1,"method":"history","params":{"stream":"s","since":null,"reverse":false}}"#
            ),
            Ok(command(
                1,
                CommandBody::History {
                    stream: "s".into(),
                    since: None,
                    limit: HISTORY_LIMIT_DEFAULT,
                    reverse: false
                }
            ))
        );
        assert_eq!(
            decode_json_str(r#"{"id":1,"method":"history","params":{"stream":"s","limit":1}}"#),
            Ok(command(
                1,
                CommandBody::History {
                    stream: "s".into(),
                    since: None,
                    limit: 1,
                    reverse: false
                }
            ))
        );
    }

    #[test]
    fn json_durable_stream_params_are_validated() {
        let long_key = format!("{MAX_KEY}x");
        let mut texts = vec![
            // history: limit range, types, names
            r#"{"id":7,"method":"history","params":{"stream":"s","limit":0}}"#.to_owned(),
            r#"{"id":7,"method":"history","params":{"stream":"s","limit":1001}}"#.to_owned(),
            r#"{"id":7,"method":"history","params":{"stream":"s","limit":4294967296}}"#.to_owned(),
            r#"{"id":7,"method":"history","params":{"stream":"s","limit":"10"}}"#.to_owned(),
            r#"{"id":7,"method":"history","params":{"stream":"s","since":-1}}"#.to_owned(),
            r#"{"id":7,"method":"history","params":{"stream":"s","since":"10"}}"#.to_owned(),
            r#"{"id":7,"method":"history","params":{"stream":"s","reverse":1}}"#.to_owned(),
            r#"{"id":7,"method":"history","params":{"stream":""}}"#.to_owned(),
            r#"{"id":7,"method":"history","params":{"channel":"s"}}"#.to_owned(),
            r#"{"id":7,"method":"history"}"#.to_owned(),
            // ack
            r#"{"id":7,"method":"ack","params":{"stream":"s"}}"#.to_owned(),
            r#"{"id":7,"method":"ack","params":{"offset":1}}"#.to_owned(),
            r#"{"id":7,"method":"ack","params":{"stream":"","offset":1}}"#.to_owned(),
            r#"{"id":7,"method":"ack","params":{"stream":"s","offset":"1"}}"#.to_owned(),
            r#"{"id":7,"method":"ack","params":{"stream":"s","offset":-1}}"#.to_owned(),
            r#"{"id":7,"method":"ack","params":{"stream":"s","offset":1,"epoch":2}}"#.to_owned(),
            // subscribe since: offsets are numbers; epochs numbers or decimal strings
            r#"{"id":7,"method":"subscribe","params":{"channel":"a","since":{"offset":"41","epoch":1}}}"#.to_owned(),
            r#"{"id":7,"method":"subscribe","params":{"channel":"a","since":{"offset":41}}}"#.to_owned(),
            r#"{"id":7,"method":"subscribe","params":{"channel":"a","since":{"epoch":1}}}"#.to_owned(),
            r#"{"id":7,"method":"subscribe","params":{"channel":"a","since":{"offset":1,"epoch":1,"x":1}}}"#.to_owned(),
            r#"{"id":7,"method":"subscribe","params":{"channel":"a","since":41}}"#.to_owned(),
            r#"{"id":7,"method":"subscribe","params":{"channel":"a","since":[41,1]}}"#.to_owned(),
            r#"{"id":7,"method":"subscribe","params":{"channel":"a","since":{"offset":1,"epoch":-1}}}"#.to_owned(),
            r#"{"id":7,"method":"subscribe","params":{"channel":"a","since":{"offset":1,"epoch":1.5}}}"#.to_owned(),
            r#"{"id":7,"method":"subscribe","params":{"channel":"a","since":{"offset":1,"epoch":null}}}"#.to_owned(),
        ];
        for epoch in [
            "",
            "abc",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1.5",
            "1e3",
            "0x10",
            "18446744073709551616",
        ] {
            texts.push(format!(
                r#"{{"id":7,"method":"subscribe","params":{{"channel":"a","since":{{"offset":1,"epoch":"{epoch}"}}}}}}"#
            ));
        }
        // client_msg_id: 1..=64 bytes of printable ASCII
        for key in [
            "\"\"".to_owned(),
            format!("\"{long_key}\""),
            r#""a\nb""#.to_owned(),
            r#""a\tb""#.to_owned(),
            r#""\u007f""#.to_owned(),
            r#""\u0000""#.to_owned(),
            "\"\u{e9}\"".to_owned(),
            r#""\u00e9""#.to_owned(),
            "5".to_owned(),
            "[\"k\"]".to_owned(),
        ] {
            for method in [
                r#""publish","params":{"channel":"c""#,
                r#""send","params":{"user":"u""#,
            ] {
                texts.push(format!(
                    r#"{{"id":7,"method":{method},"data":1,"client_msg_id":{key}}}}}"#
                ));
            }
        }
        for text in &texts {
            assert_json_error(text, Some(7), ErrorCode::BadRequest);
        }
        let error = assert_json_error(&texts[0], Some(7), ErrorCode::BadRequest);
        assert!(error.message.contains("limit"), "{error}");
    }

    #[test]
    fn json_epoch_accepts_number_or_decimal_string() {
        for (epoch, expected) in [
            ("0", 0),
            ("\"0\"", 0),
            ("\"007\"", 7),
            ("9007199254740993", 9_007_199_254_740_993),
            ("\"9007199254740993\"", 9_007_199_254_740_993),
            ("\"18446744073709551615\"", u64::MAX),
        ] {
            let text = format!(
                r#"{{"id":1,"method":"subscribe","params":{{"channel":"a","since":{{"offset":5,"epoch":{epoch}}}}}}}"#
            );
            assert_eq!(
                decode_json_str(&text),
                Ok(command(
                    1,
                    CommandBody::Subscribe {
                        channel: "a".into(),
                        since: Some(StreamPosition {
                            offset: 5,
                            epoch: expected
                        })
                    }
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn binary_durable_stream_commands_are_validated() {
        let long_key = format!("{MAX_KEY}x");
        let mut bodies = vec![
            BinaryCommandBody::History {
                stream: "s".into(),
                since: None,
                limit: 0,
                reverse: false,
            },
            BinaryCommandBody::History {
                stream: "s".into(),
                since: Some(1),
                limit: 1001,
                reverse: true,
            },
            BinaryCommandBody::History {
                stream: String::new(),
                since: None,
                limit: 10,
                reverse: false,
            },
            BinaryCommandBody::Ack {
                stream: String::new(),
                offset: 1,
            },
            BinaryCommandBody::Subscribe {
                channel: String::new(),
                since: Some(StreamPosition {
                    offset: 1,
                    epoch: 1,
                }),
            },
        ];
        for key in ["", long_key.as_str(), "a\nb", "\u{7f}", "\u{e9}", "\0"] {
            bodies.push(BinaryCommandBody::Publish {
                channel: "c".into(),
                data: b"1".to_vec(),
                data_is_json: true,
                client_msg_id: Some(key.into()),
            });
            bodies.push(BinaryCommandBody::Send {
                user: "u".into(),
                data: b"1".to_vec(),
                data_is_json: false,
                client_msg_id: Some(key.into()),
            });
        }
        for body in bodies {
            let bytes = encode_binary_command(&BinaryCommand {
                id: 5,
                body: body.clone(),
            });
            let error = decode_binary(&bytes).expect_err("invalid");
            assert_eq!(
                (error.id, error.code),
                (Some(5), ErrorCode::BadRequest),
                "{body:?}: {error}"
            );
        }
    }

    fn envelope(offset: u64, data_is_json: bool, data: &[u8]) -> Envelope {
        Envelope {
            id: u64::MAX - offset,
            offset,
            epoch: 123,
            channel: "chat:\"a\"".into(),
            sender: "bob".into(),
            time_ms: 1_700_000_000_000 + offset,
            data_is_json,
            data: data.to_vec(),
        }
    }

    fn stored_history() -> Vec<crate::envelope::EncodedPush> {
        [
            envelope(41, true, br#"{"a": [1, 2.50]}"#),
            envelope(42, false, &[0, 0xff, 0x10]),
            envelope(43, true, b" \"x\"\n"),
        ]
        .iter()
        .map(crate::envelope::EncodedPush::encode)
        .collect()
    }

    #[test]
    fn history_json_embeds_stored_publications_verbatim() {
        let stored = stored_history();
        let pushes: Vec<&ArchivedEnvelope> = stored.iter().map(|p| p.envelope()).collect();
        let json = encode_history_json(7, "chat:\"a\"", u64::MAX, 1, 44, &pushes);
        let text = std::str::from_utf8(&json).expect("utf-8");
        assert!(
            text.starts_with(r#"{"id":7,"result":{"stream":"chat:\"a\"","epoch":"18446744073709551615","start_offset":1,"next_offset":44,"publications":[{"channel":"#),
            "{text}"
        );
        assert!(text.contains(r#","data":{"a": [1, 2.50]}}"#), "{text}");
        assert!(text.contains(",\"data\": \"x\"\n}"), "{text}");
        let value = parse(&json);
        assert_eq!(value["id"], 7);
        let result = &value["result"];
        assert_eq!(result["stream"], "chat:\"a\"");
        assert_eq!(result["epoch"], "18446744073709551615");
        assert_eq!(result["start_offset"], 1);
        assert_eq!(result["next_offset"], 44);
        let publications = result["publications"].as_array().expect("array");
        assert_eq!(publications.len(), 3);
        for (publication, push) in publications.iter().zip(&pushes) {
            // Exactly the push object a live subscriber got.
            assert_eq!(
                publication,
                &parse(&crate::envelope::encode_push_json(push))["push"]
            );
            assert_eq!(publication["offset"], push.offset.to_native());
            assert_eq!(publication["epoch"], "123");
        }
        // Data byte for byte: the raw text of each `data` is the stored data.
        #[derive(Deserialize)]
        struct RawHistory<'a> {
            #[serde(borrow)]
            result: RawResult<'a>,
        }
        #[derive(Deserialize)]
        struct RawResult<'a> {
            #[serde(borrow)]
            publications: Vec<RawPublication<'a>>,
        }
        #[derive(Deserialize)]
        struct RawPublication<'a> {
            #[serde(borrow, default)]
            data: Option<&'a RawValue>,
            #[serde(default)]
            b64data: Option<String>,
        }
        let raw: RawHistory<'_> = serde_json::from_slice(&json).expect("valid");
        for (publication, push) in raw.result.publications.iter().zip(&pushes) {
            match (&publication.data, &publication.b64data) {
                (Some(data), None) => {
                    assert!(push.data_is_json);
                    // serde_json's RawValue leaves out surrounding whitespace.
                    assert_eq!(data.get().as_bytes(), push.data.as_slice().trim_ascii());
                }
                (None, Some(b64data)) => {
                    assert!(!push.data_is_json);
                    assert_eq!(
                        base64::engine::general_purpose::STANDARD
                            .decode(b64data)
                            .expect("base64"),
                        push.data.as_slice()
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
        }

        let empty = parse(&encode_history_json(8, "s", 0, 0, 1, &[]));
        assert_eq!(
            empty,
            serde_json::json!({"id": 8, "result": {"stream": "s", "epoch": "0", "start_offset": 0, "next_offset": 1, "publications": []}})
        );
    }

    #[test]
    fn history_binary_round_trips_and_matches_owned_encoding() {
        let stored = stored_history();
        let pushes: Vec<&ArchivedEnvelope> = stored.iter().map(|p| p.envelope()).collect();
        let entries: Vec<Envelope> = pushes.iter().map(|p| p.to_envelope()).collect();
        for count in 0..=pushes.len() {
            let bytes = encode_history_binary(9, "chat:a", 123, 2, 44, &pushes[..count]);
            let owned = ServerMessage::History {
                id: 9,
                stream: "chat:a".into(),
                epoch: 123,
                start_offset: 2,
                next_offset: 44,
                entries: entries[..count].to_vec(),
            };
            assert_eq!(bytes, archive_to_vec(&owned), "{count} entries");
            assert_eq!(decode_server_binary(&bytes).expect("valid"), owned);
            let mut shifted = vec![0_u8];
            shifted.extend_from_slice(&bytes);
            assert_eq!(decode_server_binary(&shifted[1..]).expect("valid"), owned);
        }
    }

    /// Stored publications are `ServerMessage::Push` archives, whose root is
    /// the last `size_of::<ArchivedServerMessage>()` bytes: growing any
    /// variant past a push, or changing the push layout, breaks the store.
    #[test]
    fn push_archive_layout_is_frozen() {
        assert_eq!(std::mem::size_of::<ArchivedServerMessage>(), 72);
        let env = Envelope {
            id: 0x0102_0304_0506_0708,
            offset: 41,
            epoch: 123,
            channel: "news:sport-long-name".into(),
            sender: "bob".into(),
            time_ms: 1_700_000_000_000,
            data_is_json: true,
            data: br#"{"a": [1, 2.50]}"#.to_vec(),
        };
        let bytes = crate::envelope::EncodedPush::encode(&env);
        let hex: String = bytes
            .as_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(
            hex,
            "6e6577733a73706f72742d6c6f6e672d6e616d657b2261223a205b312c20322e35305d7d00000000\
             0300000000000000080706050403020129000000000000007b00000000000000940000\
             00b8ffffff626f62ffffffffff0068e5cf8b01000001000000b0ffffff1000000000000000"
        );
    }

    #[test]
    fn every_command_decodes_in_both_forms() {
        for (json, binary, expected) in every_command() {
            assert_eq!(decode_json_str(json).as_ref(), Ok(&expected), "{json}");
            let bytes = encode_binary_command(&binary);
            assert_eq!(decode_binary(&bytes), Ok(expected), "{binary:?}");
        }
    }

    #[test]
    fn binary_commands_decode_from_unaligned_buffers() {
        for (_, binary, expected) in every_command() {
            let bytes = encode_binary_command(&binary);
            for shift in 0..16 {
                let mut shifted = vec![0xaa_u8; shift];
                shifted.extend_from_slice(&bytes);
                assert_eq!(decode_binary(&shifted[shift..]).as_ref(), Ok(&expected));
            }
        }
    }

    #[test]
    fn json_command_variants_accepted() {
        let ping = command(9, CommandBody::Ping);
        assert_eq!(
            decode_json_str(r#"{"id":9,"method":"ping","params":{}}"#),
            Ok(ping.clone())
        );
        assert_eq!(
            decode_json_str(r#"{"id":9,"method":"ping","params":null}"#),
            Ok(ping.clone())
        );
        assert_eq!(decode_json_str(r#" {"method":"ping", "id":9} "#), Ok(ping));
        // Escapes in strings are decoded; a JSON null payload is a payload.
        assert_eq!(
            decode_json_str(
                r#"{"id":1,"method":"publish","params":{"data":null,"channel":"a\u0062"}}"#
            ),
            Ok(command(
                1,
                CommandBody::Publish {
                    channel: "ab".into(),
                    data: Bytes::from_static(b"null"),
                    data_is_json: true,
                    client_msg_id: None,
                }
            ))
        );
    }

    #[test]
    fn json_data_is_preserved_byte_for_byte() {
        let data = r#"{ "a" : [1, 2.50, 1e3, "\u00e9\n"], "b": {} }"#;
        let text =
            format!(r#"{{"id":1,"method":"publish","params":{{"channel":"c","data":{data}}}}}"#);
        let decoded = decode_json_str(&text).expect("valid");
        let CommandBody::Publish {
            data: got,
            data_is_json: true,
            ..
        } = decoded.body
        else {
            panic!("unexpected {decoded:?}");
        };
        assert_eq!(got, data.as_bytes());
    }

    #[test]
    fn json_malformed_is_bad_request_without_id() {
        assert_json_error("", None, ErrorCode::BadRequest);
        assert_json_error("{", None, ErrorCode::BadRequest);
        assert_json_error(r#"{"id":1,"method":"ping""#, None, ErrorCode::BadRequest);
        assert_json_error(r#"[1,"ping"]"#, None, ErrorCode::BadRequest);
        assert_json_error(r#"{"method":"ping"}"#, None, ErrorCode::BadRequest);
        assert_json_error(r#"{"id":"1","method":"ping"}"#, None, ErrorCode::BadRequest);
        assert_json_error(r#"{"id":-1,"method":"ping"}"#, None, ErrorCode::BadRequest);
        assert_json_error(r#"{"id":1.5,"method":"ping"}"#, None, ErrorCode::BadRequest);
        assert_json_error(r#"{"id":1,"method":"ping"} x"#, None, ErrorCode::BadRequest);
        assert!(decode_json(b"{\"id\":1,\"method\":\"\xff\"}").is_err());
    }

    #[test]
    fn json_id_zero_is_bad_request() {
        let error = assert_json_error(r#"{"id":0,"method":"ping"}"#, None, ErrorCode::BadRequest);
        assert!(error.message.contains("positive"), "{error}");
        assert_json_error(r#"{"id":0,"method":"nope"}"#, None, ErrorCode::BadRequest);
        assert_json_error(
            r#"{"id":0,"method":"ping","x":1}"#,
            None,
            ErrorCode::BadRequest,
        );
    }

    #[test]
    fn json_unknown_method_is_104_with_id() {
        let error = assert_json_error(
            r#"{"id":7,"method":"nope"}"#,
            Some(7),
            ErrorCode::MethodNotFound,
        );
        let reply = error.reply().expect("has id");
        let value = parse(&encode_reply_json(&reply));
        assert_eq!(value["id"], 7);
        assert_eq!(value["error"]["code"], 104);
    }

    #[test]
    fn json_unknown_fields_are_bad_request_with_id() {
        assert_json_error(
            r#"{"id":7,"method":"ping","extra":1}"#,
            Some(7),
            ErrorCode::BadRequest,
        );
        assert_json_error(
            r#"{"id":7,"method":"subscribe","params":{"channel":"a","x":1}}"#,
            Some(7),
            ErrorCode::BadRequest,
        );
        assert_json_error(
            r#"{"id":7,"method":"ping","params":{"x":1}}"#,
            Some(7),
            ErrorCode::BadRequest,
        );
    }

    #[test]
    fn json_missing_fields_and_wrong_types_are_bad_request_with_id() {
        for text in [
            r#"{"id":7,"method":"subscribe"}"#,
            r#"{"id":7,"method":"subscribe","params":{}}"#,
            r#"{"id":7,"method":"subscribe","params":{"channel":5}}"#,
            r#"{"id":7,"method":"subscribe","params":{"channel":""}}"#,
            r#"{"id":7,"method":"subscribe","params":[]}"#,
            r#"{"id":7,"method":"subscribe","params":["news"]}"#,
            r#"{"id":7,"method":"ping","params":[]}"#,
            r#"{"id":7,"method":"publish","params":{"channel":"a"}}"#,
            r#"{"id":7,"method":"publish","params":{"data":1}}"#,
            r#"{"id":7,"method":"publish","params":{"channel":"a","data":1,"b64data":"AA=="}}"#,
            r#"{"id":7,"method":"publish","params":{"channel":"a","b64data":"***"}}"#,
            r#"{"id":7,"method":"publish","params":{"channel":"a","b64data":5}}"#,
            r#"{"id":7,"method":"send","params":{"channel":"a","data":1}}"#,
            r#"{"id":7,"method":"send","params":{"user":"","data":1}}"#,
            r#"{"id":7,"method":"refresh","params":{}}"#,
            r#"{"id":7,"method":"refresh","params":{"token":""}}"#,
            r#"{"id":7,"method":"ping","params":5}"#,
            r#"{"id":7,"method":5}"#,
            r#"{"id":7,"method":"ping","params":"x"}"#,
        ] {
            assert_json_error(text, Some(7), ErrorCode::BadRequest);
        }
    }

    #[test]
    fn json_random_input_never_panics() {
        let mut rng = 0x0123_4567_89ab_cdef_u64;
        let seed =
            br#"{"id":7,"method":"publish","params":{"channel":"a","data":{"k":[1,"\u0041"]}}}"#;
        for round in 0..FUZZ_ROUNDS {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = (xorshift(&mut rng) % 96) as usize;
                (0..len).map(|_| xorshift(&mut rng) as u8).collect()
            } else {
                let mut bytes = seed.to_vec();
                let at = (xorshift(&mut rng) % bytes.len() as u64) as usize;
                bytes[at] = xorshift(&mut rng) as u8;
                bytes
            };
            if let Ok(Command {
                body:
                    CommandBody::Publish {
                        data,
                        data_is_json: true,
                        ..
                    },
                ..
            }) = decode_json(&bytes)
            {
                serde_json::from_slice::<IgnoredAny>(&data).expect("accepted data is JSON");
            }
        }
    }

    #[test]
    fn binary_garbage_and_truncation_are_errors() {
        let valid = encode_binary_command(&BinaryCommand {
            id: 3,
            body: BinaryCommandBody::Publish {
                channel: "news".into(),
                data: b"[1,2]".to_vec(),
                data_is_json: true,
                client_msg_id: None,
            },
        });
        for len in 0..valid.len() {
            let error = decode_binary(&valid[..len]).expect_err("truncated");
            assert_eq!(error.code, ErrorCode::BadRequest);
        }
        let mut rng = 0xdead_beef_cafe_f00d_u64;
        for round in 0..FUZZ_ROUNDS {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = (xorshift(&mut rng) % 128) as usize;
                (0..len).map(|_| xorshift(&mut rng) as u8).collect()
            } else {
                let mut bytes = valid.clone();
                for _ in 0..1 + xorshift(&mut rng) % 3 {
                    let at = (xorshift(&mut rng) % bytes.len() as u64) as usize;
                    bytes[at] = xorshift(&mut rng) as u8;
                }
                bytes
            };
            match decode_binary(&bytes) {
                Ok(Command {
                    body:
                        CommandBody::Publish {
                            data,
                            data_is_json: true,
                            ..
                        },
                    ..
                }) => {
                    serde_json::from_slice::<IgnoredAny>(&data).expect("accepted data is JSON");
                }
                Ok(_) => {}
                Err(error) => assert_eq!(error.code, ErrorCode::BadRequest),
            }
            let _ = decode_server_binary(&bytes);
        }
    }

    #[test]
    fn binary_id_zero_and_empty_names_are_bad_request() {
        let bytes = encode_binary_command(&BinaryCommand {
            id: 0,
            body: BinaryCommandBody::Ping,
        });
        assert_eq!(
            decode_binary(&bytes).map_err(|e| (e.id, e.code)),
            Err((None, ErrorCode::BadRequest))
        );
        let bytes = encode_binary_command(&BinaryCommand {
            id: 4,
            body: BinaryCommandBody::Subscribe {
                channel: String::new(),
                since: None,
            },
        });
        assert_eq!(
            decode_binary(&bytes).map_err(|e| (e.id, e.code)),
            Err((Some(4), ErrorCode::BadRequest))
        );
    }

    #[test]
    fn binary_json_flagged_data_must_be_json() {
        for bad in [&b"{"[..], b"", b"[1,]", b"1 2", b"\"\xff\"", b"{\"a\":1}x"] {
            for body in [
                BinaryCommandBody::Publish {
                    channel: "c".into(),
                    data: bad.to_vec(),
                    data_is_json: true,
                    client_msg_id: None,
                },
                BinaryCommandBody::Send {
                    user: "u".into(),
                    data: bad.to_vec(),
                    data_is_json: true,
                    client_msg_id: None,
                },
            ] {
                let bytes = encode_binary_command(&BinaryCommand { id: 5, body });
                let error = decode_binary(&bytes).expect_err("invalid JSON data");
                assert_eq!(
                    (error.id, error.code),
                    (Some(5), ErrorCode::BadRequest),
                    "{error}"
                );
            }
        }
        // The same bytes are fine as opaque data.
        let bytes = encode_binary_command(&BinaryCommand {
            id: 5,
            body: BinaryCommandBody::Publish {
                channel: "c".into(),
                data: b"\xff{".to_vec(),
                data_is_json: false,
                client_msg_id: None,
            },
        });
        assert!(decode_binary(&bytes).is_ok());
    }

    fn connect_info(expires_at_ms: u64) -> ConnectInfo {
        ConnectInfo {
            client_id: u64::MAX - 1,
            user: "al\"ice".into(),
            expires_at_ms,
            ping_interval_ms: 25_000,
            shard: 3,
        }
    }

    #[test]
    fn reply_json_shapes() {
        let value = parse(&encode_reply_json(&Reply::Ok {
            id: 7,
            result: ReplyResult::Empty,
        }));
        assert_eq!(value, serde_json::json!({"id": 7, "result": {}}));

        let value = parse(&encode_reply_json(&Reply::Ok {
            id: 7,
            result: ReplyResult::Published {
                message_id: u64::MAX,
                offset: 0,
                epoch: 0,
                duplicate: false,
            },
        }));
        assert_eq!(
            value,
            serde_json::json!({"id": 7, "result": {"id": "18446744073709551615", "offset": 0, "epoch": "0"}})
        );

        let value = parse(&encode_reply_json(&Reply::Ok {
            id: 7,
            result: ReplyResult::Refreshed {
                expires_at_ms: 1_700_000_000_000,
            },
        }));
        assert_eq!(
            value,
            serde_json::json!({"id": 7, "result": {"expires": 1_700_000_000_000_u64}})
        );
        let value = parse(&encode_reply_json(&Reply::Ok {
            id: 7,
            result: ReplyResult::Refreshed { expires_at_ms: 0 },
        }));
        assert_eq!(value, serde_json::json!({"id": 7, "result": {}}));

        let value = parse(&encode_reply_json(&Reply::Ok {
            id: 7,
            result: ReplyResult::Subscribed {
                channel: "news\n".into(),
                recovery: None,
            },
        }));
        assert_eq!(
            value,
            serde_json::json!({"id": 7, "result": {"channel": "news\n"}})
        );

        let value = parse(&encode_reply_json(&Reply::Ok {
            id: 7,
            result: ReplyResult::Published {
                message_id: 5,
                offset: 17,
                epoch: 123,
                duplicate: true,
            },
        }));
        assert_eq!(
            value,
            serde_json::json!({"id": 7, "result": {"id": "5", "offset": 17, "epoch": "123", "duplicate": true}})
        );

        let value = parse(&encode_reply_json(&Reply::Ok {
            id: 1,
            result: ReplyResult::Subscribed {
                channel: "chat:a".into(),
                recovery: Some(Recovery {
                    recovered: true,
                    epoch: 123,
                    offset: 57,
                    start_offset: 1,
                    replayed: 16,
                }),
            },
        }));
        assert_eq!(
            value,
            serde_json::json!({"id": 1, "result": {"channel": "chat:a", "recovery": {
                "recovered": true, "epoch": "123", "offset": 57, "start_offset": 1, "replayed": 16
            }}})
        );
        let value = parse(&encode_reply_json(&Reply::Ok {
            id: 1,
            result: ReplyResult::Subscribed {
                channel: "chat:a".into(),
                recovery: Some(Recovery {
                    recovered: false,
                    epoch: u64::MAX,
                    offset: 3,
                    start_offset: 40,
                    replayed: 0,
                }),
            },
        }));
        assert_eq!(
            value["result"]["recovery"],
            serde_json::json!({"recovered": false, "epoch": "18446744073709551615", "offset": 3, "start_offset": 40, "replayed": 0})
        );

        let value = parse(&encode_reply_json(&Reply::error(
            7,
            ErrorCode::PermissionDenied,
        )));
        assert_eq!(
            value,
            serde_json::json!({"id": 7, "error": {"code": 103, "message": "permission denied"}})
        );
    }

    #[test]
    fn connect_json_shape() {
        let value = parse(&encode_connect_json(&connect_info(1_700_000_000_000)));
        assert_eq!(
            value,
            serde_json::json!({"connect": {
                "client": "18446744073709551614",
                "user": "al\"ice",
                "expires": 1_700_000_000_000_u64,
                "ping_interval_ms": 25_000,
                "shard": 3
            }})
        );
        let value = parse(&encode_connect_json(&connect_info(0)));
        assert!(value["connect"].get("expires").is_none());
    }

    #[test]
    fn server_messages_round_trip_in_binary() {
        let info = connect_info(5);
        assert_eq!(
            decode_server_binary(&encode_connect_binary(&info)).expect("valid"),
            ServerMessage::Connect(info)
        );
        let results = [
            ReplyResult::Empty,
            ReplyResult::Published {
                message_id: 1,
                offset: 2,
                epoch: 3,
                duplicate: false,
            },
            ReplyResult::Refreshed { expires_at_ms: 4 },
            ReplyResult::Subscribed {
                channel: "c".into(),
                recovery: None,
            },
            ReplyResult::Published {
                message_id: 1,
                offset: 2,
                epoch: 3,
                duplicate: true,
            },
            ReplyResult::Subscribed {
                channel: "c".into(),
                recovery: Some(Recovery {
                    recovered: true,
                    epoch: u64::MAX,
                    offset: 57,
                    start_offset: 1,
                    replayed: 16,
                }),
            },
        ];
        for result in results {
            let bytes = encode_reply_binary(&Reply::Ok {
                id: 9,
                result: result.clone(),
            });
            assert_eq!(
                decode_server_binary(&bytes).expect("valid"),
                ServerMessage::Reply { id: 9, result }
            );
        }
        let bytes = encode_reply_binary(&Reply::error(9, ErrorCode::StoreUnavailable));
        assert_eq!(
            decode_server_binary(&bytes).expect("valid"),
            ServerMessage::Error {
                id: 9,
                code: 111,
                message: "store unavailable".into()
            }
        );
    }

    #[test]
    fn borrowed_mirror_archives_exactly_like_server_message() {
        let owned = |message: &ServerMessage| archive_to_vec(message);
        let info = connect_info(5);
        assert_eq!(
            encode_connect_binary(&info),
            owned(&ServerMessage::Connect(info.clone()))
        );
        let result = ReplyResult::Published {
            message_id: 1,
            offset: 2,
            epoch: 3,
            duplicate: false,
        };
        assert_eq!(
            encode_reply_binary(&Reply::Ok {
                id: 9,
                result: result.clone()
            }),
            owned(&ServerMessage::Reply { id: 9, result })
        );
        let result = ReplyResult::Subscribed {
            channel: "c".into(),
            recovery: Some(Recovery {
                recovered: false,
                epoch: 1,
                offset: 2,
                start_offset: 3,
                replayed: 0,
            }),
        };
        assert_eq!(
            encode_reply_binary(&Reply::Ok {
                id: 9,
                result: result.clone()
            }),
            owned(&ServerMessage::Reply { id: 9, result })
        );
        assert_eq!(
            encode_reply_binary(&Reply::Error {
                id: 9,
                code: ErrorCode::Internal,
                message: "m".into()
            }),
            owned(&ServerMessage::Error {
                id: 9,
                code: 100,
                message: "m".into()
            })
        );
    }

    #[test]
    fn error_codes_round_trip() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(code.as_u16()), Some(code));
            assert!(!code.message().is_empty());
        }
        assert_eq!(
            ErrorCode::ALL.map(ErrorCode::as_u16),
            std::array::from_fn(|i| 100 + i as u16)
        );
        assert_eq!(ErrorCode::from_u16(99), None);
        assert_eq!(ErrorCode::from_u16(112), None);
        let error = CommandError::new(Some(1), ErrorCode::MethodNotFound, "x".into());
        assert_eq!(
            error.to_string(),
            "command rejected with error 104 (method not found): x"
        );
    }

    #[test]
    fn decode_errors_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<DecodeError>();
        assert_send_sync::<CommandError>();
    }

    #[test]
    fn push_json_str_escapes_every_control_char() {
        let all: String = (0_u8..0x80).map(char::from).collect();
        let mut out = Vec::new();
        push_json_str(&mut out, &all);
        let back: String = serde_json::from_slice(&out).expect("valid JSON string");
        assert_eq!(back, all);
        assert!(!out.iter().any(|&b| b < 0x20));
    }

    #[test]
    fn push_u64_writes_decimal() {
        for n in [0, 1, 9, 10, 12_345, u64::MAX] {
            let mut out = b"x".to_vec();
            push_u64(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }
}
