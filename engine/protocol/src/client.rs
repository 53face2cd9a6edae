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
use rkyv::rancor::{self, BoxedError};
use rkyv::util::AlignedVec;
use rkyv::with::Inline;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::envelope::Envelope;

/// Subprotocol for JSON text frames. Also used when the client offers none.
pub const SUBPROTOCOL_JSON: &str = "ringcast.json.v1";
/// Subprotocol for rkyv binary frames ([`BinaryCommand`] in, [`ServerMessage`] out).
pub const SUBPROTOCOL_BINARY: &str = "ringcast.rkyv.v1";

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
    Subscribe {
        channel: String,
    },
    Unsubscribe {
        channel: String,
    },
    /// `data_is_json` means `data` is valid UTF-8 JSON text.
    Publish {
        channel: String,
        data: Bytes,
        data_is_json: bool,
    },
    /// To every connection of `user`.
    Send {
        user: String,
        data: Bytes,
        data_is_json: bool,
    },
    Refresh {
        token: String,
    },
    Ping,
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
    },
    Unsubscribe {
        channel: String,
    },
    Publish {
        channel: String,
        data: Vec<u8>,
        data_is_json: bool,
    },
    Send {
        user: String,
        data: Vec<u8>,
        data_is_json: bool,
    },
    Refresh {
        token: String,
    },
    Ping,
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
pub enum ReplyResult {
    /// Unsubscribe, ping.
    Empty,
    /// Publish and send. `offset`/`epoch` are 0 when the channel is not stored.
    Published {
        message_id: u64,
        offset: u64,
        epoch: u64,
    },
    /// Refresh. `expires_at_ms` is 0 when the new token never expires.
    Refreshed { expires_at_ms: u64 },
    /// Subscribe.
    Subscribed { channel: String },
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
/// version and a store migration.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ServerMessage {
    Connect(ConnectInfo),
    Reply { id: u64, result: ReplyResult },
    Error { id: u64, code: u16, message: String },
    Push(Envelope),
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
            let params: ChannelParams = parse_params(id, command.params)?;
            CommandBody::Subscribe {
                channel: params.channel,
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
            }
        }
        "send" => {
            let params: SendParams<'_> = parse_params(id, command.params)?;
            let (data, data_is_json) = json_payload(id, params.data, params.b64data)?;
            CommandBody::Send {
                user: params.user,
                data,
                data_is_json,
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
        BinaryCommandBody::Subscribe { channel } => CommandBody::Subscribe { channel },
        BinaryCommandBody::Unsubscribe { channel } => CommandBody::Unsubscribe { channel },
        BinaryCommandBody::Publish {
            channel,
            data,
            data_is_json,
        } => {
            validate_binary_payload(id, &data, data_is_json)?;
            CommandBody::Publish {
                channel,
                data: Bytes::from(data),
                data_is_json,
            }
        }
        BinaryCommandBody::Send {
            user,
            data,
            data_is_json,
        } => {
            validate_binary_payload(id, &data, data_is_json)?;
            CommandBody::Send {
                user,
                data: Bytes::from(data),
                data_is_json,
            }
        }
        BinaryCommandBody::Refresh { token } => CommandBody::Refresh { token },
        BinaryCommandBody::Ping => CommandBody::Ping,
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
                } => {
                    out.extend_from_slice(b"{\"id\":\"");
                    push_u64(&mut out, *message_id);
                    out.extend_from_slice(b"\",\"offset\":");
                    push_u64(&mut out, *offset);
                    out.extend_from_slice(b",\"epoch\":");
                    push_u64(&mut out, *epoch);
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
                ReplyResult::Subscribed { channel } => {
                    out.extend_from_slice(b"{\"channel\":");
                    push_json_str(&mut out, channel);
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

const UNKNOWN_METHOD_MESSAGE: &str =
    "unknown method; expected subscribe, unsubscribe, publish, send, refresh or ping";

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
struct PublishParams<'a> {
    channel: String,
    #[serde(borrow, default, deserialize_with = "raw_present")]
    data: Option<&'a RawValue>,
    #[serde(default)]
    b64data: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendParams<'a> {
    user: String,
    #[serde(borrow, default, deserialize_with = "raw_present")]
    data: Option<&'a RawValue>,
    #[serde(default)]
    b64data: Option<String>,
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
    // serde's derive would also accept a JSON array for a struct.
    if !starts_json_object(params.get().as_bytes()) {
        return Err(CommandError::new(
            Some(id),
            ErrorCode::BadRequest,
            "invalid params: expected a JSON object".to_owned(),
        ));
    }
    serde_json::from_str(params.get()).map_err(|error| {
        CommandError::new(
            Some(id),
            ErrorCode::BadRequest,
            format!("invalid params: {error}"),
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
    let (field, value) = match &command.body {
        CommandBody::Subscribe { channel }
        | CommandBody::Unsubscribe { channel }
        | CommandBody::Publish { channel, .. } => ("channel", channel),
        CommandBody::Send { user, .. } => ("user", user),
        CommandBody::Refresh { token } => ("token", token),
        CommandBody::Ping => return Ok(()),
    };
    if value.is_empty() {
        return Err(CommandError::new(
            Some(command.id),
            ErrorCode::BadRequest,
            format!("`{field}` must not be empty"),
        ));
    }
    Ok(())
}

/// Runs `f` on an aligned view of `bytes`, copying only when the network
/// buffer is not already aligned. rkyv's checked access rejects unaligned
/// archives, so this is about success, not safety.
fn with_aligned<R>(bytes: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    if bytes.as_ptr().addr() % ARCHIVE_ALIGNMENT == 0 {
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
                    },
                ),
                command(
                    1,
                    CommandBody::Subscribe {
                        channel: "news".into(),
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
                    },
                ),
                command(
                    3,
                    CommandBody::Publish {
                        channel: "news".into(),
                        data: Bytes::from_static(br#"{"a": [1, 2.50]}"#),
                        data_is_json: true,
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
                    },
                ),
                command(
                    4,
                    CommandBody::Publish {
                        channel: "news".into(),
                        data: Bytes::from_static(&[0, 1, 2, 255]),
                        data_is_json: false,
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
                    },
                ),
                command(
                    5,
                    CommandBody::Send {
                        user: "alice".into(),
                        data: Bytes::from_static(br#""hi""#),
                        data_is_json: true,
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
                    },
                ),
                command(
                    6,
                    CommandBody::Send {
                        user: "alice".into(),
                        data: Bytes::new(),
                        data_is_json: false,
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
        ]
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
                    data_is_json: true
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
                },
                BinaryCommandBody::Send {
                    user: "u".into(),
                    data: bad.to_vec(),
                    data_is_json: true,
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
            },
        }));
        assert_eq!(
            value,
            serde_json::json!({"id": 7, "result": {"id": "18446744073709551615", "offset": 0, "epoch": 0}})
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
            },
        }));
        assert_eq!(
            value,
            serde_json::json!({"id": 7, "result": {"channel": "news\n"}})
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
            },
            ReplyResult::Refreshed { expires_at_ms: 4 },
            ReplyResult::Subscribed {
                channel: "c".into(),
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
