//! Target profiles: what the load generator knows about each server's
//! protocol, so that `client.rs` (the connection state machine) and
//! `publisher.rs` (the HTTP publisher) stay protocol-agnostic.
//!
//! A profile decides, for one connection: the upgrade's path and
//! subprotocol, whether the 101 already means connected and subscribed,
//! the bytes of a subscribe (and, for chat, of a send or publish), and how
//! one inbound WebSocket message maps to an [`Inbound`] the client acts on.
//! For the publisher it builds the HTTP request of one publication. It does
//! no I/O: everything here is bytes in, bytes or values out.
//!
//! Profiles:
//! - `ringcast`: Ringcast's JSON protocol (`ringcast.json.v1`).
//! - `ringcast-binary`: Ringcast's rkyv protocol (`ringcast.rkyv.v1`),
//!   through `ringcast-protocol`'s own encoder and decoder.
//! - `nchan`: a raw pub/sub server: the subscriber URL names the channel,
//!   every frame is one publication's body, the publisher POSTs the body.
//!   Nchan and a plain broadcast baseline speak it.
//! - `pushpin`: subscribers as `nchan`; the publisher POSTs a GRIP item.
//! - `pusher`: the Pusher Channels protocol v7 (sockudo speaks it), with
//!   signed publishes to `/apps/<id>/events`.

use std::net::SocketAddr;

use clap::ValueEnum;
use hmac::{Hmac, Mac as _};
use md5::{Digest as _, Md5};
use ringcast_protocol::client::{
    decode_server_binary, encode_binary_command, BinaryCommand, BinaryCommandBody, ImCommand,
    ImEvent, MsgKind, ReplyResult, ServerMessage,
};
use ringcast_protocol::frame::{Message, OpCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::Sha256;

/// Which server (and protocol) the run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// Ringcast, JSON text frames (`ringcast.json.v1`).
    Ringcast,
    /// Ringcast, rkyv binary frames (`ringcast.rkyv.v1`).
    RingcastBinary,
    /// A raw pub/sub server (Nchan, a broadcast baseline): `{channel}` in
    /// `--target` and `--publish-url`, every frame is one payload.
    Nchan,
    /// Pushpin: subscribers as nchan, publishes as GRIP `ws-message` items.
    Pushpin,
    /// Pusher Channels protocol v7 (sockudo).
    Pusher,
}

/// One message to write to the server (the client masks and frames it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub opcode: OpCode,
    pub payload: Vec<u8>,
}

/// One publication as a subscriber received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub seq: u64,
    /// The intended (scheduled) send time, unix microseconds.
    pub intended_us: u64,
    /// chat: the sending user's index within its worker.
    pub from: Option<u32>,
    /// Durable streams (Ringcast inboxes): the position in the stream.
    pub offset: Option<u64>,
    pub epoch: Option<String>,
    /// IM: the conversation (`dm:<h>`) of a message that came as an IM
    /// entry (`{"kind":..,"data":<payload>}`).
    pub conv: Option<String>,
}

/// chat, IM: where a `msg_send` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImTarget<'a> {
    /// A DM to this user.
    User(&'a str),
    /// This conversation (a group's `grp:...`).
    Conv(&'a str),
}

/// What one inbound message means to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Not the load generator's business (another payload, an event it
    /// does not track).
    Nothing,
    /// The server's "you are connected" message.
    Connect,
    /// The subscription was confirmed by a message that names no command
    /// id (Pusher's `subscription_succeeded`).
    Subscribed,
    /// The subscription was refused, or the server reported an error about
    /// it (Pusher's `pusher:error`); the detail is the error code.
    SubscribeError(String),
    /// The reply to command `id` (Ringcast).
    Reply {
        id: u64,
        error: Option<String>,
    },
    Push(Push),
    /// IM: the peer read a conversation (a `receipt` event).
    Receipt,
    /// Ringcast: the `"id":0` reply of a connect-time inbox recovery.
    Recovery {
        recovered: bool,
        replayed: u64,
    },
    /// A WebSocket ping (answered with a pong carrying the payload).
    Ping(Vec<u8>),
    /// An application-level message to answer with this (Pusher's ping).
    Answer(Outbound),
    Close(Option<u16>),
    /// The server sent something this protocol forbids (an rkyv archive
    /// that does not validate): fails the connection.
    Invalid(&'static str),
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Ringcast => "ringcast",
            Profile::RingcastBinary => "ringcast-binary",
            Profile::Nchan => "nchan",
            Profile::Pushpin => "pushpin",
            Profile::Pusher => "pusher",
        }
    }

    /// Ringcast profiles need a JWT per connection and may use the
    /// Ringcast-only scenarios (reconnect, chat).
    pub fn is_ringcast(self) -> bool {
        matches!(self, Profile::Ringcast | Profile::RingcastBinary)
    }

    /// The channel fanout (and connect, for URL-named channels) uses when
    /// `--channel` is not given. `news` is the shipped config's namespace
    /// for API-only publishing; other servers have no namespaces.
    pub fn default_channel(self) -> &'static str {
        if self.is_ringcast() {
            "news:load"
        } else {
            "load"
        }
    }

    /// The subprotocol offered at the upgrade, which the server must select.
    pub fn subprotocol(self) -> Option<&'static str> {
        match self {
            Profile::Ringcast => Some("ringcast.json.v1"),
            Profile::RingcastBinary => Some("ringcast.rkyv.v1"),
            Profile::Nchan | Profile::Pushpin | Profile::Pusher => None,
        }
    }

    /// Servers without a "connected" message: the 101 means connected, and
    /// since the URL names the channel, subscribed too.
    pub fn connected_at_upgrade(self) -> bool {
        matches!(self, Profile::Nchan | Profile::Pushpin)
    }

    /// The upgrade request's path and query: `target_path` with `{channel}`
    /// replaced (URL-named channels) and, for Ringcast, the token.
    pub fn connect_path(self, target_path: &str, channel: &str, token: Option<&str>) -> String {
        let path = target_path.replace("{channel}", channel);
        match token {
            Some(token) if self.is_ringcast() => format!(
                "{path}{}token={token}",
                if path.contains('?') { '&' } else { '?' }
            ),
            _ => path,
        }
    }

    /// The subscribe command, `None` where the URL already subscribes.
    pub fn subscribe(self, id: u64, channel: &str) -> Option<Outbound> {
        match self {
            Profile::Ringcast => Some(text(&serde_json::json!({
                "id": id, "method": "subscribe", "params": {"channel": channel}
            }))),
            Profile::RingcastBinary => Some(binary(BinaryCommand {
                id,
                body: BinaryCommandBody::Subscribe {
                    channel: channel.to_owned(),
                    since: None,
                },
            })),
            Profile::Pusher => Some(text(&serde_json::json!({
                "event": "pusher:subscribe", "data": {"channel": channel}
            }))),
            Profile::Nchan | Profile::Pushpin => None,
        }
    }

    /// chat: a Ringcast `send` of `payload` (JSON text) to `user`'s inbox.
    pub fn send(self, id: u64, user: &str, payload: &str) -> Option<Outbound> {
        match self {
            Profile::Ringcast => Some(text_command(id, "send", "user", user, payload)),
            Profile::RingcastBinary => Some(binary(BinaryCommand {
                id,
                body: BinaryCommandBody::Send {
                    user: user.to_owned(),
                    data: payload.as_bytes().to_vec(),
                    data_is_json: true,
                    client_msg_id: None,
                },
            })),
            Profile::Nchan | Profile::Pushpin | Profile::Pusher => None,
        }
    }

    /// chat: a Ringcast `publish` of `payload` (JSON text) on `channel`.
    pub fn publish(self, id: u64, channel: &str, payload: &str) -> Option<Outbound> {
        match self {
            Profile::Ringcast => Some(text_command(id, "publish", "channel", channel, payload)),
            Profile::RingcastBinary => Some(binary(BinaryCommand {
                id,
                body: BinaryCommandBody::Publish {
                    channel: channel.to_owned(),
                    data: payload.as_bytes().to_vec(),
                    data_is_json: true,
                    client_msg_id: None,
                },
            })),
            Profile::Nchan | Profile::Pushpin | Profile::Pusher => None,
        }
    }

    /// chat, IM: a `msg_send` of `payload` (JSON text) to a user or a
    /// conversation, as a `custom` message (any JSON), pushed to the
    /// sending connection too.
    pub fn msg_send(self, id: u64, target: ImTarget<'_>, payload: &str) -> Option<Outbound> {
        let (field, name, to, conv) = match target {
            ImTarget::User(user) => ("to", user, Some(user.to_owned()), None),
            ImTarget::Conv(conv) => ("conv", conv, None, Some(conv.to_owned())),
        };
        match self {
            Profile::Ringcast => {
                let name = serde_json::Value::from(name);
                Some(Outbound {
                    opcode: OpCode::Text,
                    payload: format!(
                        r#"{{"id":{id},"method":"msg_send","params":{{"{field}":{name},"kind":"custom","data":{payload}}}}}"#
                    )
                    .into_bytes(),
                })
            }
            Profile::RingcastBinary => Some(binary(BinaryCommand {
                id,
                body: BinaryCommandBody::Im(Box::new(ImCommand::MsgSend {
                    to,
                    conv,
                    kind: MsgKind::Custom,
                    data: payload.as_bytes().to_vec(),
                    client_msg_id: None,
                    echo: true,
                })),
            })),
            Profile::Nchan | Profile::Pushpin | Profile::Pusher => None,
        }
    }

    /// chat, IM: the user has read `conv` up to `offset`.
    pub fn read(self, id: u64, conv: &str, offset: u64) -> Option<Outbound> {
        match self {
            Profile::Ringcast => Some(text(&serde_json::json!({
                "id": id, "method": "read", "params": {"conv": conv, "offset": offset}
            }))),
            Profile::RingcastBinary => Some(binary(BinaryCommand {
                id,
                body: BinaryCommandBody::Im(Box::new(ImCommand::Read {
                    conv: conv.to_owned(),
                    offset,
                })),
            })),
            Profile::Nchan | Profile::Pushpin | Profile::Pusher => None,
        }
    }

    /// What one complete inbound message means.
    pub fn classify(self, message: Message<'_>) -> Inbound {
        match message {
            Message::Ping(payload) => return Inbound::Ping(payload.to_vec()),
            Message::Close(close) => return Inbound::Close(close.map(|(code, _)| code.0)),
            Message::Pong(_) => return Inbound::Nothing,
            Message::Text(_) | Message::Binary(_) => {}
        }
        match (self, message) {
            (Profile::Ringcast, Message::Text(bytes)) => classify_ringcast_text(bytes),
            (Profile::RingcastBinary, Message::Binary(bytes)) => classify_ringcast_binary(bytes),
            (Profile::Nchan | Profile::Pushpin, Message::Text(bytes) | Message::Binary(bytes)) => {
                classify_raw(bytes)
            }
            (Profile::Pusher, Message::Text(bytes)) => classify_pusher(bytes),
            _ => Inbound::Nothing,
        }
    }
}

fn text(value: &serde_json::Value) -> Outbound {
    Outbound {
        opcode: OpCode::Text,
        payload: value.to_string().into_bytes(),
    }
}

fn binary(command: BinaryCommand) -> Outbound {
    Outbound {
        opcode: OpCode::Binary,
        payload: encode_binary_command(&command),
    }
}

/// `{"id":..,"method":..,"params":{<target_field>:..,"data":<payload>}}`,
/// with `payload` embedded as the JSON text it is (not re-encoded).
fn text_command(
    id: u64,
    method: &str,
    target_field: &str,
    target: &str,
    payload: &str,
) -> Outbound {
    let target = serde_json::Value::from(target);
    Outbound {
        opcode: OpCode::Text,
        payload: format!(
            r#"{{"id":{id},"method":"{method}","params":{{"{target_field}":{target},"data":{payload}}}}}"#
        )
        .into_bytes(),
    }
}

/// The payload the load generator publishes: `{"seq":..,"t_us":..}`, and
/// in chat also `"from"`.
#[derive(Deserialize)]
struct LoadPayload {
    seq: u64,
    /// fanout and chat send `t_us`, reconnect (`/api/send`) sends `t`.
    #[serde(alias = "t")]
    t_us: u64,
    from: Option<u32>,
}

impl LoadPayload {
    fn into_push(self, offset: Option<u64>, epoch: Option<String>) -> Inbound {
        Inbound::Push(Push {
            seq: self.seq,
            intended_us: self.t_us,
            from: self.from,
            offset,
            epoch,
            conv: None,
        })
    }
}

/// A push's data: the load payload itself, or an IM entry wrapping it
/// (`{"kind":"custom","data":<payload>}`, docs/protocol.md "IM").
#[derive(Deserialize)]
#[serde(untagged)]
enum PushData {
    Im { data: LoadPayload },
    Plain(LoadPayload),
}

impl PushData {
    /// The push; `channel` is kept as the conversation of an IM entry.
    fn into_push(self, offset: Option<u64>, epoch: Option<String>, channel: String) -> Inbound {
        match self {
            PushData::Plain(payload) => payload.into_push(offset, epoch),
            PushData::Im { data } => match data.into_push(offset, epoch) {
                Inbound::Push(push) => Inbound::Push(Push {
                    conv: Some(channel),
                    ..push
                }),
                other => other,
            },
        }
    }
}

/// The server's text messages, as far as the load generator reads them.
/// Typed (not `serde_json::Value`) because every push goes through here;
/// unknown fields are skipped.
#[derive(Deserialize)]
struct ServerText {
    connect: Option<serde::de::IgnoredAny>,
    receipt: Option<serde::de::IgnoredAny>,
    push: Option<PushText>,
    id: Option<u64>,
    error: Option<ErrorText>,
    result: Option<ResultText>,
}

#[derive(Deserialize)]
struct PushText {
    #[serde(default)]
    channel: String,
    data: PushData,
    offset: Option<u64>,
    epoch: Option<String>,
}

#[derive(Deserialize)]
struct ResultText {
    recovery: Option<RecoveryText>,
}

#[derive(Deserialize)]
struct RecoveryText {
    recovered: bool,
    #[serde(default)]
    replayed: u64,
}

#[derive(Deserialize)]
struct ErrorText {
    code: Option<serde_json::Value>,
}

fn classify_ringcast_text(bytes: &[u8]) -> Inbound {
    // A message that does not parse as one of these (a push with some other
    // payload, say) is not the load generator's business.
    let Ok(text) = serde_json::from_slice::<ServerText>(bytes) else {
        return Inbound::Nothing;
    };
    if text.connect.is_some() {
        return Inbound::Connect;
    }
    if text.receipt.is_some() {
        return Inbound::Receipt;
    }
    if let Some(push) = text.push {
        return push.data.into_push(push.offset, push.epoch, push.channel);
    }
    if let (Some(0), None, Some(recovery)) = (
        text.id,
        text.error.as_ref(),
        text.result.as_ref().and_then(|r| r.recovery.as_ref()),
    ) {
        return Inbound::Recovery {
            recovered: recovery.recovered,
            replayed: recovery.replayed,
        };
    }
    if let Some(id) = text.id {
        let error = text.error.map(|error| {
            error
                .code
                .map_or_else(|| "unknown".to_owned(), |code| code.to_string())
        });
        return Inbound::Reply { id, error };
    }
    Inbound::Nothing
}

fn classify_ringcast_binary(bytes: &[u8]) -> Inbound {
    let Ok(message) = decode_server_binary(bytes) else {
        return Inbound::Invalid("bad_archive");
    };
    match message {
        ServerMessage::Connect(_) => Inbound::Connect,
        ServerMessage::Reply {
            id: 0,
            result:
                ReplyResult::Subscribed {
                    recovery: Some(recovery),
                    ..
                },
        } => Inbound::Recovery {
            recovered: recovery.recovered,
            replayed: recovery.replayed,
        },
        ServerMessage::Reply { id, .. } => Inbound::Reply { id, error: None },
        ServerMessage::Error { id, code, .. } => Inbound::Reply {
            id,
            error: Some(code.to_string()),
        },
        ServerMessage::Push(envelope) => {
            // A publication made as JSON (the API's, or a client's with
            // `data_is_json`) arrives as the JSON text's bytes.
            let Ok(payload) = serde_json::from_slice::<PushData>(&envelope.data) else {
                return Inbound::Nothing;
            };
            // offset and epoch are 0 on channels without history.
            let stored = envelope.epoch != 0;
            payload.into_push(
                stored.then_some(envelope.offset),
                stored.then(|| envelope.epoch.to_string()),
                envelope.channel,
            )
        }
        ServerMessage::Im(event) if matches!(*event, ImEvent::Receipt { .. }) => Inbound::Receipt,
        ServerMessage::History { .. }
        | ServerMessage::Subscribed { .. }
        | ServerMessage::Unsubscribed { .. }
        | ServerMessage::Im(_)
        | ServerMessage::Presence(_) => Inbound::Nothing,
    }
}

/// nchan, pushpin: the whole frame is the published payload.
fn classify_raw(bytes: &[u8]) -> Inbound {
    match serde_json::from_slice::<LoadPayload>(bytes) {
        Ok(payload) => payload.into_push(None, None),
        Err(_) => Inbound::Nothing,
    }
}

#[derive(Deserialize)]
struct PusherText<'a> {
    event: &'a str,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct PusherError {
    code: Option<serde_json::Value>,
}

/// Pusher: `{"event":..,"channel":..,"data":..}`; an application event's
/// `data` is a JSON string holding the payload (some servers send the
/// object itself; both are read).
fn classify_pusher(bytes: &[u8]) -> Inbound {
    let Ok(message) = serde_json::from_slice::<PusherText<'_>>(bytes) else {
        return Inbound::Nothing;
    };
    let data = message.data.map(RawValue::get);
    match message.event {
        "pusher:connection_established" => Inbound::Connect,
        "pusher_internal:subscription_succeeded" => Inbound::Subscribed,
        "pusher:ping" => Inbound::Answer(text(&serde_json::json!({
            "event": "pusher:pong", "data": {}
        }))),
        "pusher:error" | "pusher:subscription_error" => {
            let code = data
                .and_then(pusher_data::<PusherError>)
                .and_then(|error| error.code)
                .map_or_else(|| "unknown".to_owned(), |code| code.to_string());
            Inbound::SubscribeError(format!("pusher_{code}"))
        }
        event if event.starts_with("pusher") => Inbound::Nothing,
        _ => match data.and_then(pusher_data::<LoadPayload>) {
            Some(payload) => payload.into_push(None, None),
            None => Inbound::Nothing,
        },
    }
}

/// A Pusher `data` field: a JSON string holding JSON, or the JSON itself.
fn pusher_data<T: serde::de::DeserializeOwned>(raw: &str) -> Option<T> {
    if raw.starts_with('"') {
        let inner: String = serde_json::from_str(raw).ok()?;
        serde_json::from_str(&inner).ok()
    } else {
        serde_json::from_str(raw).ok()
    }
}

/// A parsed `http://ip:port/path` URL (no DNS, no TLS, like `--target`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("publish URL {url:?}: only http:// is supported"))?;
        let (host, path) = match rest.find('/') {
            Some(idx) => (&rest[..idx], &rest[idx..]),
            None => (rest, "/"),
        };
        let addr: SocketAddr = host
            .parse()
            .map_err(|e| format!("publish URL {url:?}: host must be ip:port ({e})"))?;
        Ok(HttpUrl {
            addr,
            host: host.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// Pusher application credentials (publishing needs all three).
#[derive(Debug, Clone)]
pub struct PusherApp {
    pub app_id: String,
    pub key: String,
    pub secret: String,
}

/// Where and how the publisher posts, per profile.
#[derive(Debug, Clone)]
pub struct PublishTarget {
    pub profile: Profile,
    /// Ringcast and Pusher: the HTTP API (`--api`); nchan and pushpin:
    /// `--publish-url`, whose path may hold `{channel}`.
    pub url: HttpUrl,
    /// Ringcast: the API key.
    pub api_key: String,
    /// Pusher: the application's id, key and secret.
    pub pusher: Option<PusherApp>,
}

/// One HTTP request (`POST`), before framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl PublishTarget {
    /// The request that publishes `payload` (JSON text) on `channel`.
    /// `unix_s` is Pusher's `auth_timestamp`.
    pub fn request(&self, channel: &str, payload: &str, unix_s: u64) -> HttpRequest {
        let json = ("Content-Type", "application/json".to_owned());
        match self.profile {
            Profile::Ringcast | Profile::RingcastBinary => HttpRequest {
                path: "/api/publish".to_owned(),
                headers: vec![("Authorization", format!("apikey {}", self.api_key)), json],
                body: format!(
                    r#"{{"channel":{},"data":{payload}}}"#,
                    serde_json::Value::from(channel)
                ),
            },
            Profile::Nchan => HttpRequest {
                path: self.url.path.replace("{channel}", channel),
                headers: vec![json],
                body: payload.to_owned(),
            },
            Profile::Pushpin => HttpRequest {
                path: self.url.path.replace("{channel}", channel),
                headers: vec![json],
                body: serde_json::json!({"items": [{
                    "channel": channel,
                    "formats": {"ws-message": {"content": payload}},
                }]})
                .to_string(),
            },
            Profile::Pusher => {
                let body = serde_json::json!({
                    "name": "load", "channels": [channel], "data": payload,
                })
                .to_string();
                let path = match &self.pusher {
                    Some(app) => {
                        let path = format!("/apps/{}/events", app.app_id);
                        let query = pusher_query(&path, &app.key, &app.secret, &body, unix_s);
                        format!("{path}?{query}")
                    }
                    // Refused by the parent's checks; an unsigned request
                    // would only be answered with 401.
                    None => "/apps/events".to_owned(),
                };
                HttpRequest {
                    path,
                    headers: vec![json],
                    body,
                }
            }
        }
    }
}

/// The signed query string of a Pusher REST request (`POST <path>`):
/// `auth_key`, `auth_timestamp`, `auth_version`, `body_md5` (sorted by
/// name, as the signature requires) and `auth_signature`, the hex
/// HMAC-SHA256 under `secret` of `"POST\n<path>\n<those params>"`.
pub fn pusher_query(path: &str, key: &str, secret: &str, body: &str, unix_s: u64) -> String {
    let body_md5 = hex(&Md5::digest(body.as_bytes()));
    let params =
        format!("auth_key={key}&auth_timestamp={unix_s}&auth_version=1.0&body_md5={body_md5}");
    let to_sign = format!("POST\n{path}\n{params}");
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let signature = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(to_sign.as_bytes());
            hex(&mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    format!("{params}&auth_signature={signature}")
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringcast_protocol::client::{encode_connect_binary, encode_reply_binary, ConnectInfo};
    use ringcast_protocol::client::{ErrorCode, Recovery, Reply};
    use ringcast_protocol::envelope::{EncodedPush, Envelope};

    fn check(profile: Profile, message: Message<'_>) -> String {
        match profile.classify(message) {
            Inbound::Nothing => "nothing".to_owned(),
            Inbound::Connect => "connect".to_owned(),
            Inbound::Subscribed => "subscribed".to_owned(),
            Inbound::SubscribeError(code) => format!("subscribe_error {code}"),
            Inbound::Reply { id, error } => format!("reply {id} {error:?}"),
            Inbound::Push(Push {
                seq,
                intended_us,
                from,
                offset,
                epoch,
                conv: None,
            }) => format!("push {seq} {intended_us} {from:?} {offset:?} {epoch:?}"),
            Inbound::Push(Push {
                seq,
                offset,
                conv: Some(conv),
                ..
            }) => format!("im push {conv} {seq} {offset:?}"),
            Inbound::Receipt => "receipt".to_owned(),
            Inbound::Recovery {
                recovered,
                replayed,
            } => format!("recovery {recovered} {replayed}"),
            Inbound::Ping(payload) => format!("ping {payload:?}"),
            Inbound::Answer(out) => format!("answer {}", String::from_utf8_lossy(&out.payload)),
            Inbound::Close(code) => format!("close {code:?}"),
            Inbound::Invalid(what) => format!("invalid {what}"),
        }
    }

    fn json(text: &str) -> String {
        check(Profile::Ringcast, Message::Text(text.as_bytes()))
    }

    #[test]
    fn ringcast_text_is_classified() {
        assert_eq!(
            json(r#"{"connect":{"client":"1","user":"a","ping_interval_ms":25000,"shard":0}}"#),
            "connect"
        );
        assert_eq!(
            json(
                r#"{"push":{"channel":"news:load","id":"7","offset":0,"data":{"seq":3,"t_us":99}}}"#
            ),
            "push 3 99 None Some(0) None"
        );
        assert_eq!(
            json(r#"{"push":{"channel":"user:a","offset":4,"epoch":"17","data":{"seq":2,"t":5}}}"#),
            "push 2 5 None Some(4) Some(\"17\")"
        );
        assert_eq!(
            json(r#"{"push":{"channel":"room:g","data":{"seq":2,"t_us":5,"from":7}}}"#),
            "push 2 5 Some(7) None None"
        );
        assert_eq!(
            json(
                r#"{"id":0,"result":{"channel":"user:a","recovery":{"recovered":true,"epoch":"17","offset":4,"start_offset":1,"replayed":2}}}"#
            ),
            "recovery true 2"
        );
        assert_eq!(
            json(r#"{"push":{"channel":"user:a","data":{"text":"hi"}}}"#),
            "nothing"
        );
        assert_eq!(
            json(r#"{"id":1,"result":{"channel":"news:load"}}"#),
            "reply 1 None"
        );
        assert_eq!(
            json(r#"{"id":1,"error":{"code":103,"message":"permission denied"}}"#),
            "reply 1 Some(\"103\")"
        );
        // IM: a DM's push wraps the payload in its kind; a peer's receipt.
        assert_eq!(
            json(
                r#"{"push":{"channel":"dm:x","offset":3,"epoch":"9","sender":"a","data":{"kind":"custom","data":{"seq":2,"t_us":5,"from":1}}}}"#
            ),
            "im push dm:x 2 Some(3)"
        );
        // A group's message as well; its member entries are not the load's.
        assert_eq!(
            json(
                r#"{"push":{"channel":"grp:t-w0-g0","offset":7,"epoch":"9","sender":"a","data":{"kind":"custom","data":{"seq":4,"t_us":5,"from":1}}}}"#
            ),
            "im push grp:t-w0-g0 4 Some(7)"
        );
        assert_eq!(
            json(
                r#"{"push":{"channel":"grp:t-w0-g0","offset":2,"epoch":"9","sender":"","data":{"kind":"member","data":{"op":"add","actor":"","targets":["b"]}}}}"#
            ),
            "nothing"
        );
        assert_eq!(
            json(r#"{"receipt":{"conv":"dm:x","user":"a","read":3}}"#),
            "receipt"
        );
        assert_eq!(json("not json"), "nothing");
        // A binary frame on a JSON connection is not read.
        assert_eq!(check(Profile::Ringcast, Message::Binary(b"{}")), "nothing");
    }

    #[test]
    fn ringcast_binary_is_classified() {
        let bin = |bytes: &[u8]| check(Profile::RingcastBinary, Message::Binary(bytes));
        let connect = encode_connect_binary(&ConnectInfo {
            client_id: 1,
            user: "a".to_owned(),
            expires_at_ms: 0,
            ping_interval_ms: 25_000,
            shard: 0,
        });
        assert_eq!(bin(&connect), "connect");
        let push = |offset, epoch, data: &[u8]| {
            EncodedPush::encode(&Envelope {
                id: 9,
                offset,
                epoch,
                channel: "news:load".to_owned(),
                sender: String::new(),
                time_ms: 1,
                data_is_json: true,
                data: data.to_vec(),
            })
            .as_bytes()
            .to_vec()
        };
        assert_eq!(
            bin(&push(0, 0, br#"{"seq":4,"t_us":77}"#)),
            "push 4 77 None None None"
        );
        assert_eq!(
            bin(&push(5, 17, br#"{"seq":4,"t":77,"from":2}"#)),
            "push 4 77 Some(2) Some(5) Some(\"17\")"
        );
        assert_eq!(bin(&push(0, 0, b"[1]")), "nothing");
        assert_eq!(
            bin(&push(
                5,
                17,
                br#"{"kind":"custom","data":{"seq":4,"t_us":7,"from":2}}"#
            )),
            "im push news:load 4 Some(5)"
        );
        let receipt = ringcast_protocol::client::encode_im_event_binary(&ImEvent::Receipt {
            conv: "dm:x".to_owned(),
            user: "a".to_owned(),
            read: 3,
        });
        assert_eq!(bin(&receipt), "receipt");
        let reply = encode_reply_binary(&Reply::Ok {
            id: 1,
            result: ReplyResult::Subscribed {
                channel: "news:load".to_owned(),
                recovery: None,
            },
        });
        assert_eq!(bin(&reply), "reply 1 None");
        let recovery = encode_reply_binary(&Reply::Ok {
            id: 0,
            result: ReplyResult::Subscribed {
                channel: "user:a".to_owned(),
                recovery: Some(Recovery {
                    recovered: true,
                    epoch: 17,
                    offset: 4,
                    start_offset: 1,
                    replayed: 2,
                }),
            },
        });
        assert_eq!(bin(&recovery), "recovery true 2");
        let error = encode_reply_binary(&Reply::error(3, ErrorCode::PermissionDenied));
        assert_eq!(bin(&error), "reply 3 Some(\"103\")");
        assert_eq!(bin(b"garbage"), "invalid bad_archive");
        assert_eq!(
            check(Profile::RingcastBinary, Message::Text(b"{}")),
            "nothing"
        );
    }

    #[test]
    fn binary_commands_decode_as_the_engine_reads_them() {
        let command = Profile::RingcastBinary
            .send(5, "bob", r#"{"seq":1,"t_us":2,"from":3}"#)
            .unwrap();
        assert_eq!(command.opcode, OpCode::Binary);
        let decoded = ringcast_protocol::client::decode_binary(&command.payload).unwrap();
        assert_eq!(decoded.id, 5);
        let command = Profile::Ringcast
            .publish(6, "room:g", r#"{"seq":1,"t_us":2,"from":3}"#)
            .unwrap();
        let decoded = ringcast_protocol::client::decode_json(&command.payload).unwrap();
        assert_eq!(decoded.id, 6);
        let command = Profile::Ringcast.send(7, "a\"b", "{}").unwrap();
        assert!(ringcast_protocol::client::decode_json(&command.payload).is_ok());
    }

    #[test]
    fn im_commands_decode_as_the_engine_reads_them() {
        use ringcast_protocol::client::{decode_binary, decode_json, CommandBody};
        let payload = r#"{"seq":1,"t_us":2,"from":3}"#;
        let msg_send = ImCommand::MsgSend {
            to: Some("bob".to_owned()),
            conv: None,
            kind: MsgKind::Custom,
            data: payload.as_bytes().to_vec(),
            client_msg_id: None,
            echo: true,
        };
        let group_send = ImCommand::MsgSend {
            to: None,
            conv: Some("grp:t-w0-g1".to_owned()),
            kind: MsgKind::Custom,
            data: payload.as_bytes().to_vec(),
            client_msg_id: None,
            echo: true,
        };
        let read = ImCommand::Read {
            conv: "dm:x".to_owned(),
            offset: 4,
        };
        for profile in [Profile::Ringcast, Profile::RingcastBinary] {
            let decode = |out: Outbound| match profile {
                Profile::Ringcast => decode_json(&out.payload).unwrap(),
                _ => decode_binary(&out.payload).unwrap(),
            };
            let command = decode(profile.msg_send(8, ImTarget::User("bob"), payload).unwrap());
            assert_eq!(command.id, 8);
            assert_eq!(command.body, CommandBody::Im(Box::new(msg_send.clone())));
            let command = decode(
                profile
                    .msg_send(10, ImTarget::Conv("grp:t-w0-g1"), payload)
                    .unwrap(),
            );
            assert_eq!(command.id, 10);
            assert_eq!(command.body, CommandBody::Im(Box::new(group_send.clone())));
            let command = decode(profile.read(9, "dm:x", 4).unwrap());
            assert_eq!(command.id, 9);
            assert_eq!(command.body, CommandBody::Im(Box::new(read.clone())));
        }
        assert!(Profile::Nchan
            .msg_send(1, ImTarget::User("bob"), payload)
            .is_none());
    }

    #[test]
    fn raw_and_pusher_frames_are_classified() {
        assert_eq!(
            check(Profile::Nchan, Message::Text(br#"{"seq":1,"t_us":2}"#)),
            "push 1 2 None None None"
        );
        assert_eq!(
            check(Profile::Pushpin, Message::Binary(br#"{"seq":1,"t_us":2}"#)),
            "push 1 2 None None None"
        );
        assert_eq!(check(Profile::Nchan, Message::Text(b"hello")), "nothing");
        let pusher = |text: &str| check(Profile::Pusher, Message::Text(text.as_bytes()));
        assert_eq!(
            pusher(
                r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}"#
            ),
            "connect"
        );
        assert_eq!(
            pusher(
                r#"{"event":"pusher_internal:subscription_succeeded","channel":"load","data":"{}"}"#
            ),
            "subscribed"
        );
        assert_eq!(
            pusher(r#"{"event":"load","channel":"load","data":"{\"seq\":3,\"t_us\":4}"}"#),
            "push 3 4 None None None"
        );
        assert_eq!(
            pusher(r#"{"event":"load","channel":"load","data":{"seq":3,"t_us":4}}"#),
            "push 3 4 None None None"
        );
        assert_eq!(
            pusher(r#"{"event":"pusher:ping","data":{}}"#),
            r#"answer {"data":{},"event":"pusher:pong"}"#
        );
        assert_eq!(
            pusher(r#"{"event":"pusher:error","data":{"message":"Over quota","code":4004}}"#),
            "subscribe_error pusher_4004"
        );
        assert_eq!(
            pusher(r#"{"event":"pusher:subscription_count","data":"{}"}"#),
            "nothing"
        );
    }

    #[test]
    fn pusher_signature_matches_the_documented_vector() {
        // From Pusher's REST API authentication docs.
        let body = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let query = pusher_query(
            "/apps/3/events",
            "278d425bdf160c739803",
            "7ad3773142a6692b25b8",
            body,
            1_353_088_179,
        );
        assert_eq!(
            query,
            "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0\
             &body_md5=ec365a775a4cd0599faeb73354201b6f\
             &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }

    #[test]
    fn publish_requests_per_profile() {
        let url = HttpUrl::parse("http://127.0.0.1:5561/pub/{channel}").unwrap();
        let target = |profile| PublishTarget {
            profile,
            url: url.clone(),
            api_key: "k".to_owned(),
            pusher: Some(PusherApp {
                app_id: "3".to_owned(),
                key: "key".to_owned(),
                secret: "secret".to_owned(),
            }),
        };
        let payload = r#"{"seq":1,"t_us":2}"#;
        let ringcast = target(Profile::Ringcast).request("news:load", payload, 0);
        assert_eq!(ringcast.path, "/api/publish");
        assert_eq!(
            ringcast.body,
            r#"{"channel":"news:load","data":{"seq":1,"t_us":2}}"#
        );
        let nchan = target(Profile::Nchan).request("load", payload, 0);
        assert_eq!(
            (nchan.path.as_str(), nchan.body.as_str()),
            ("/pub/load", payload)
        );
        let pushpin = target(Profile::Pushpin).request("load", payload, 0);
        let grip: serde_json::Value = serde_json::from_str(&pushpin.body).unwrap();
        assert_eq!(grip["items"][0]["channel"], "load");
        assert_eq!(
            grip["items"][0]["formats"]["ws-message"]["content"],
            payload
        );
        let pusher = target(Profile::Pusher).request("load", payload, 1_353_088_179);
        assert!(
            pusher
                .path
                .starts_with("/apps/3/events?auth_key=key&auth_timestamp=1353088179&"),
            "{}",
            pusher.path
        );
        let event: serde_json::Value = serde_json::from_str(&pusher.body).unwrap();
        assert_eq!(event["data"], payload);
        assert_eq!(event["channels"][0], "load");
        assert!(HttpUrl::parse("https://x/").is_err());
    }

    #[test]
    fn connect_paths() {
        assert_eq!(
            Profile::Ringcast.connect_path("/connection/websocket", "news:load", Some("t")),
            "/connection/websocket?token=t"
        );
        assert_eq!(
            Profile::Nchan.connect_path("/sub/{channel}", "load", Some("t")),
            "/sub/load"
        );
        assert_eq!(
            Profile::Pusher.connect_path("/app/k?protocol=7", "load", None),
            "/app/k?protocol=7"
        );
    }
}
