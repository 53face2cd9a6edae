//! The JSON form (`ringcast.json.v1`, text frames): commands are parsed with
//! serde into per-method parameter structs that borrow from the frame, then
//! into the model. Those structs are the JSON form's schema rather than a
//! second model of a command: the JSON form has shapes the model has not
//! (`data` or `b64data`, epochs as numbers or decimal strings, a default
//! `limit`), and a serde derive on [`CommandBody`] itself, tagged by
//! `method`, would buffer `params` whenever it comes before `method`, and a
//! buffered `data` can no longer be borrowed as the client's exact bytes.
//!
//! Replies, `connect` and history pages are written by hand
//! straight into the output buffer, which measured 1.2x to 2.5x faster than
//! serde_json with derived `Serialize` (figures on each encoder).

use std::borrow::Cow;

use base64::Engine as _;
use serde::de::Unexpected;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::model::{
    Command, CommandBody, CommandError, ConnectInfo, ErrorCode, PresenceCommand, PresenceState,
    Reply, ReplyResult, StreamPosition,
};
use super::validate::{id_zero_error, validate_command};
use super::HISTORY_LIMIT_DEFAULT;
use crate::envelope::{push_envelope_json, ArchivedEnvelope};

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
            match params.token {
                None => CommandBody::Subscribe {
                    channel: params.channel,
                    since,
                },
                Some(token) => CommandBody::SubscribeWithToken {
                    channel: params.channel,
                    token,
                    since,
                },
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
            let by_time = params.from_time.is_some() || params.before_time.is_some();
            match params.before {
                _ if by_time => {
                    let bounds = HistoryBounds {
                        since: params.since,
                        before: params.before,
                        from_time: params.from_time,
                        before_time: params.before_time,
                        reverse: params.reverse_given,
                    };
                    history_by_time(params.stream, params.limit, bounds).map_err(|message| {
                        CommandError::new(Some(id), ErrorCode::BadRequest, message)
                    })?
                }
                // Backward paging is newest first by definition: `reverse`
                // adds nothing, and `false` would ask for what `before` is not.
                Some(_) if params.reverse_given == Some(false) => {
                    return Err(CommandError::new(
                        Some(id),
                        ErrorCode::BadRequest,
                        BEFORE_NEWEST_FIRST.to_owned(),
                    ))
                }
                Some(before) => CommandBody::HistoryBefore {
                    stream: params.stream,
                    before,
                    since: params.since.unwrap_or(0),
                    limit: params.limit,
                },
                None => CommandBody::History {
                    stream: params.stream,
                    since: params.since,
                    limit: params.limit,
                    reverse: params.reverse_given.unwrap_or(false),
                },
            }
        }
        "rpc" => {
            let params: RpcParams<'_> = parse_params(id, command.params)?;
            let (data, data_is_json) = if params.data.is_none() && params.b64data.is_none() {
                (b"null".to_vec(), true)
            } else {
                json_payload(id, params.data, params.b64data)?
            };
            CommandBody::Rpc {
                method: params.method,
                data,
                data_is_json,
            }
        }
        "msg_send" => {
            let params: super::im::MsgSendParams<'_> = parse_params(id, command.params)?;
            CommandBody::Im(Box::new(params.into_command(id)?))
        }
        "conv_list" => {
            let params: super::im::ConvListParams = match command.params {
                Some(_) => parse_params(id, command.params)?,
                None => parse_object(id, "params", empty_object())?,
            };
            CommandBody::Im(Box::new(params.into_command()))
        }
        "read" => {
            let params: super::im::ReadParams = parse_params(id, command.params)?;
            CommandBody::Im(Box::new(params.into_command()))
        }
        "block" | "unblock" => {
            let params: super::im::BlockParams = parse_params(id, command.params)?;
            CommandBody::Im(Box::new(
                params.into_command(command.method.as_ref() == "block"),
            ))
        }
        "blocks_list" => {
            let params: super::im::BlocksListParams = match command.params {
                Some(_) => parse_params(id, command.params)?,
                None => parse_object(id, "params", empty_object())?,
            };
            CommandBody::Im(Box::new(params.into_command()))
        }
        "typing" => {
            let params: super::im::TypingParams = parse_params(id, command.params)?;
            CommandBody::Im(Box::new(params.into_command(id)?))
        }
        "group_create" => {
            let params: super::im_group::GroupCreateParams = parse_params(id, command.params)?;
            CommandBody::Im(Box::new(params.into_command()))
        }
        "group_add" | "group_remove" | "group_leave" | "group_role" | "group_transfer"
        | "group_update" | "group_mute" | "group_unmute" | "group_mute_all" | "group_dissolve" => {
            let params: super::im_group::GroupChangeParams = parse_params(id, command.params)?;
            CommandBody::Im(Box::new(params.into_command(id, &command.method)?))
        }
        "group_members" => {
            let params: super::im_group::GroupMembersParams = parse_params(id, command.params)?;
            CommandBody::Im(Box::new(params.into_command()))
        }
        "group_info" => {
            let params: super::im_group::GroupInfoParams = parse_params(id, command.params)?;
            CommandBody::Im(Box::new(params.into_command()))
        }
        "receipts" => {
            let params: super::im_delivery::ReceiptsParams = parse_params(id, command.params)?;
            CommandBody::Im(Box::new(params.into_command()))
        }
        "catchup" => {
            let params: super::im_delivery::CatchupParams = parse_params(id, command.params)?;
            CommandBody::Im(Box::new(params.into_command(id)?))
        }
        "recall" => {
            let params: super::im::ReadParams = parse_params(id, command.params)?;
            CommandBody::Im(Box::new(params.into_recall()))
        }
        "clear" => {
            let params: super::im::ClearParams = parse_params(id, command.params)?;
            CommandBody::Im(Box::new(params.into_command()))
        }
        "edit" => {
            let params: super::im::EditParams<'_> = parse_params(id, command.params)?;
            CommandBody::Im(Box::new(params.into_command(id)?))
        }
        "presence_watch" | "presence_unwatch" | "presence_query" => {
            let params: PresenceParams = parse_params(id, command.params)?;
            match (params.users, params.conv) {
                (None, Some(conv)) if command.method == "presence_query" => {
                    CommandBody::Im(Box::new(super::im::ImCommand::PresenceConv { conv }))
                }
                (Some(users), None) => CommandBody::Presence(match command.method.as_ref() {
                    "presence_watch" => PresenceCommand::Watch { users },
                    "presence_unwatch" => PresenceCommand::Unwatch { users },
                    _ => PresenceCommand::Query { users },
                }),
                (_, Some(_)) => {
                    return Err(CommandError::new(
                        Some(id),
                        ErrorCode::BadRequest,
                        "`conv` is for presence_query alone, without `users`".to_owned(),
                    ))
                }
                (None, None) => {
                    return Err(CommandError::new(
                        Some(id),
                        ErrorCode::BadRequest,
                        "missing field `users`".to_owned(),
                    ))
                }
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

/// Renders a reply as JSON: `{"id":7,"result":{...}}` or
/// `{"id":7,"error":{"code":103,"message":"permission denied"}}`.
///
/// Hand-written because it is measurably faster than serde_json over
/// derived `Serialize` types giving the same bytes (`cargo bench -p
/// ringcast-benches --bench client -- client_reply_json`, d369cb0, 2-core
/// dev host, two runs): a publish reply, sent for every publish, 81 to 82 ns
/// against 141 ns; a subscribe reply with recovery 118 to 122 ns against 194
/// to 217 ns; an error reply 52 to 53 ns against 61 to 63 ns.
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
                ReplyResult::Rpc { data, data_is_json } => {
                    out.push(b'{');
                    crate::envelope::push_data_field(&mut out, data, *data_is_json);
                    out.push(b'}');
                }
                ReplyResult::Im(reply) => super::im::push_im_reply_json(&mut out, reply),
                ReplyResult::Presence { users } => {
                    out.extend_from_slice(b"{\"users\":[");
                    for (index, state) in users.iter().enumerate() {
                        if index != 0 {
                            out.push(b',');
                        }
                        push_presence_state(&mut out, state);
                    }
                    out.extend_from_slice(b"]}");
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
        Reply::Error { id, code, message } => push_error(&mut out, *id, *code, message, None),
        Reply::ErrorRetry {
            id,
            code,
            message,
            retry_after_ms,
        } => push_error(&mut out, *id, *code, message, Some(*retry_after_ms)),
    }
    out
}

/// `{"id":1,"error":{"code":114,"message":"...","retry_after_ms":250}}`;
/// `retry_after_ms` only when given.
fn push_error(
    out: &mut Vec<u8>,
    id: u64,
    code: ErrorCode,
    message: &str,
    retry_after_ms: Option<u64>,
) {
    out.extend_from_slice(b"{\"id\":");
    push_u64(out, id);
    out.extend_from_slice(b",\"error\":{\"code\":");
    push_u64(out, u64::from(code.as_u16()));
    out.extend_from_slice(b",\"message\":");
    push_json_str(out, message);
    if let Some(retry_after_ms) = retry_after_ms {
        out.extend_from_slice(b",\"retry_after_ms\":");
        push_u64(out, retry_after_ms);
    }
    out.extend_from_slice(b"}}");
}

/// Renders the connect message as JSON:
/// `{"connect":{"client":"123","user":"alice","expires":1700000000000,"ping_interval_ms":25000,"shard":0}}`.
/// `client` is a decimal string (JavaScript precision); `expires` is omitted
/// when the token never expires.
///
/// Hand-written, as [`encode_reply_json`]: 86 to 101 ns against 138 to 146 ns
/// derived (`client_connect_json`, same runs), once per connection.
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

/// Renders a server-side subscription change as JSON:
/// `{"subscribed":{"channel":"chat:g1"}}` (`subscribed == true`) or
/// `{"unsubscribed":{"channel":"chat:g1"}}`.
pub fn encode_subscription_json(channel: &str, subscribed: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(36 + channel.len());
    out.extend_from_slice(if subscribed {
        b"{\"subscribed\":{\"channel\":"
    } else {
        b"{\"unsubscribed\":{\"channel\":"
    });
    push_json_str(&mut out, channel);
    out.extend_from_slice(b"}}");
    out
}

/// Renders a watched user's change as JSON:
/// `{"presence":{"user":"bob","online":false,"last_seen_ms":1700000000000}}`.
pub fn encode_presence_json(state: &PresenceState) -> Vec<u8> {
    let mut out = Vec::with_capacity(72 + state.user.len());
    out.extend_from_slice(b"{\"presence\":");
    push_presence_state(&mut out, state);
    out.push(b'}');
    out
}

/// `{"user":"bob","online":true,"last_seen_ms":0}`: the one shape of a
/// user's presence, in replies, events and the API.
pub fn push_presence_state(out: &mut Vec<u8>, state: &PresenceState) {
    out.extend_from_slice(b"{\"user\":");
    push_json_str(out, &state.user);
    out.extend_from_slice(if state.online {
        b",\"online\":true,\"last_seen_ms\":"
    } else {
        b",\"online\":false,\"last_seen_ms\":"
    });
    push_u64(out, state.last_seen_ms);
    out.push(b'}');
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
///
/// Hand-written, like the push JSON it embeds: serde can only write `data`
/// verbatim through `RawValue`, which re-parses it and trims surrounding
/// whitespace (so it would change the bytes), and even on payloads it does
/// not change it measured 2.4x slower: 1.1 µs against 2.7 to 2.8 µs for 10
/// entries, 9.9 to 10.2 µs against 23.4 to 23.7 µs for 100
/// (`client_history_json`, same runs).
pub fn encode_history_json(
    id: u64,
    stream: &str,
    epoch: u64,
    start_offset: u64,
    next_offset: u64,
    pushes: &[&ArchivedEnvelope],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(history_len_hint(stream, pushes) + 32);
    out.extend_from_slice(b"{\"id\":");
    push_u64(&mut out, id);
    out.extend_from_slice(b",\"result\":");
    push_history_result(&mut out, stream, epoch, start_offset, next_offset, pushes);
    out.push(b'}');
    out
}

/// The `result` object of [`encode_history_json`] alone, as the HTTP API
/// answers a history read: rendered, never re-parsed, so a stored payload
/// cannot make a page fail.
pub fn encode_history_result_json(
    stream: &str,
    epoch: u64,
    start_offset: u64,
    next_offset: u64,
    pushes: &[&ArchivedEnvelope],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(history_len_hint(stream, pushes));
    push_history_result(&mut out, stream, epoch, start_offset, next_offset, pushes);
    out
}

fn history_len_hint(stream: &str, pushes: &[&ArchivedEnvelope]) -> usize {
    let entries_len: usize = pushes
        .iter()
        .map(|env| crate::envelope::envelope_json_len_hint(env) + 1)
        .sum();
    160 + stream.len() + entries_len
}

fn push_history_result(
    out: &mut Vec<u8>,
    stream: &str,
    epoch: u64,
    start_offset: u64,
    next_offset: u64,
    pushes: &[&ArchivedEnvelope],
) {
    out.extend_from_slice(b"{\"stream\":");
    push_json_str(out, stream);
    out.extend_from_slice(b",\"epoch\":\"");
    push_u64(out, epoch);
    out.extend_from_slice(b"\",\"start_offset\":");
    push_u64(out, start_offset);
    out.extend_from_slice(b",\"next_offset\":");
    push_u64(out, next_offset);
    out.extend_from_slice(b",\"publications\":[");
    for (index, env) in pushes.iter().enumerate() {
        if index != 0 {
            out.push(b',');
        }
        push_envelope_json(out, env);
    }
    out.extend_from_slice(b"]}");
}

/// The end of a page of results: `items` as the JSON array that the
/// caller opened the key of (`…"key":` then this writes `[…]`), the
/// cursor of the next page as `,"next":"…"` when there is one, and the
/// object's closing brace.
pub(crate) fn push_page_tail<T>(
    out: &mut Vec<u8>,
    items: &[T],
    mut push_item: impl FnMut(&mut Vec<u8>, &T),
    next: Option<&str>,
) {
    out.push(b'[');
    for (index, item) in items.iter().enumerate() {
        if index != 0 {
            out.push(b',');
        }
        push_item(out, item);
    }
    out.push(b']');
    if let Some(next) = next {
        out.extend_from_slice(b",\"next\":");
        push_json_str(out, next);
    }
    out.push(b'}');
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

/// `{}`, for a command whose params may be left out.
fn empty_object() -> &'static RawValue {
    static EMPTY: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| {
        RawValue::from_string("{}".to_owned())
            .unwrap_or_else(|_| unreachable!("an empty object is JSON"))
    })
}

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
    /// A subscription token (a JWT); `null` is absent.
    #[serde(default)]
    token: Option<String>,
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
struct RpcParams<'a> {
    method: String,
    #[serde(borrow, default, deserialize_with = "raw_present")]
    data: Option<&'a RawValue>,
    #[serde(default)]
    b64data: Option<String>,
}

/// `conv` (a query by conversation) is not accepted yet: it comes with
/// the engine's conversations (docs/im.md, "Presence").
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceParams {
    #[serde(default)]
    users: Option<Vec<String>>,
    /// `presence_query` only: a conversation's members instead of `users`.
    #[serde(default)]
    conv: Option<String>,
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
    #[serde(default)]
    before: Option<u64>,
    #[serde(default = "history_limit_default")]
    limit: u32,
    #[serde(default, rename = "reverse")]
    reverse_given: Option<bool>,
    #[serde(default)]
    from_time: Option<u64>,
    #[serde(default)]
    before_time: Option<u64>,
}

/// Why `before` with `"reverse": false` is refused.
const BEFORE_NEWEST_FIRST: &str = "`before` pages newest first: drop `reverse` or set it to true";

/// The bounds of a history read by time as a client gives them: the JSON
/// command's `history` params, and the HTTP API's `/api/history` body.
#[derive(Debug, Clone, Copy, Default)]
pub struct HistoryBounds {
    pub since: Option<u64>,
    pub before: Option<u64>,
    pub from_time: Option<u64>,
    pub before_time: Option<u64>,
    /// `None`: newest first when `before` or `before_time` is given.
    pub reverse: Option<bool>,
}

/// The [`CommandBody::HistoryByTime`] of a history read with a time bound,
/// or the message of the 107 error that refuses it. Newest first when
/// `reverse` says so, or by default when `before` or `before_time` is given
/// (as `before` alone does); the page's offset bound is `since` going
/// forward and `before` going back, so giving the other one contradicts the
/// direction.
pub fn history_by_time(
    stream: String,
    limit: u32,
    bounds: HistoryBounds,
) -> Result<CommandBody, String> {
    let reverse = bounds
        .reverse
        .unwrap_or(bounds.before.is_some() || bounds.before_time.is_some());
    let offset_bound = match (reverse, bounds.since, bounds.before) {
        (false, since, None) => since.unwrap_or(0),
        (true, None, before) => before.unwrap_or(u64::MAX),
        (false, _, Some(_)) => return Err(BEFORE_NEWEST_FIRST.to_owned()),
        (true, Some(_), _) => {
            return Err(
                "`since` pages oldest first, and `before` or `before_time` newest \
                first unless `reverse` is false: page a time window forward with \
                `\"reverse\": false`, back with `before`"
                    .to_owned(),
            )
        }
    };
    let from_time_ms = bounds.from_time.unwrap_or(0);
    let before_time_ms = bounds.before_time.unwrap_or(u64::MAX);
    if let Some(message) = history_window_error(from_time_ms, before_time_ms) {
        return Err(message);
    }
    Ok(CommandBody::HistoryByTime {
        reverse,
        limit,
        stream,
        from_time_ms,
        before_time_ms,
        offset_bound,
    })
}

/// Why a history time window is refused, if it is: it must hold a time.
pub(super) fn history_window_error(from_time_ms: u64, before_time_ms: u64) -> Option<String> {
    (from_time_ms >= before_time_ms).then(|| {
        format!(
            "`from_time` ({from_time_ms}) must be below `before_time` ({before_time_ms}): \
            the window is from_time <= time < before_time"
        )
    })
}

fn history_limit_default() -> u32 {
    HISTORY_LIMIT_DEFAULT
}

/// A u64 given as a JSON number or as a string of decimal digits.
pub(super) fn u64_or_decimal_string<'de, D>(deserializer: D) -> Result<u64, D::Error>
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
) -> Result<(Vec<u8>, bool), CommandError> {
    match (data, b64data) {
        (Some(data), None) => Ok((data.get().as_bytes().to_vec(), true)),
        (None, Some(b64data)) => base64::engine::general_purpose::STANDARD
            .decode(b64data.as_bytes())
            .map(|bytes| (bytes, false))
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
