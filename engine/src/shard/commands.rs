//! Client commands on a shard: permission checks, subscription changes,
//! publishing (live, or through the store for durable streams), recovery,
//! acks, history and token refresh. Each command gets exactly one reply,
//! either at once or, for commands that wait on the store, from a task that
//! replies when the store answers.

use std::future::Future;
use std::rc::Rc;

use ringcast_protocol::client::{
    encode_history_binary, encode_history_json, Command, CommandBody, ErrorCode, Reply, ReplyResult,
};
use ringcast_protocol::envelope::Envelope;
use ringcast_protocol::frame::{encode_frame, OpCode};
use ringcast_store::{AppendRequest, ReadRequest};

use super::fanout::Routed;
use super::io::{send_reply, End};
use super::recovery::{self, store_reply, CommandError};
use super::Shard;
use crate::channels;
use crate::streams;

/// Most entries one history request returns.
const HISTORY_LIMIT_MAX: u32 = 1000;

/// What a command produced.
enum Outcome {
    /// Reply now with this result.
    Now(ReplyResult),
    /// A task replies once the store has answered.
    Later,
}

type CommandResult = Result<Outcome, CommandError>;

/// Handles `command` from connection `key` and queues (or schedules) its
/// reply. Commands never end the connection.
pub(super) fn handle(shard: &Rc<Shard>, key: usize, command: Command) -> Option<End> {
    let id = command.id;
    let reply = match run(shard, key, id, command.body) {
        Ok(Outcome::Now(result)) => Reply::Ok { id, result },
        Ok(Outcome::Later) => return None,
        Err((code, message)) => Reply::Error { id, code, message },
    };
    send_reply(shard, key, &reply);
    None
}

fn refuse(code: ErrorCode) -> CommandError {
    (code, code.message().to_string())
}

/// Runs `work` on its own task and replies to command `id` with its result,
/// if the connection is still the one that asked.
fn reply_later(
    shard: &Rc<Shard>,
    key: usize,
    id: u64,
    work: impl Future<Output = Result<ReplyResult, CommandError>> + 'static,
) -> CommandResult {
    let client_id = shard
        .conns
        .borrow()
        .get(key)
        .map(|c| c.client_id)
        .ok_or_else(|| refuse(ErrorCode::Internal))?;
    spawn_reply(shard, key, client_id, id, work);
    Ok(Outcome::Later)
}

/// Replies to command `id` with `work`'s result once it completes, if slot
/// `key` still holds connection `client_id` (it may have closed and the slot
/// been reused meanwhile).
pub(super) fn spawn_reply(
    shard: &Rc<Shard>,
    key: usize,
    client_id: u64,
    id: u64,
    work: impl Future<Output = Result<ReplyResult, CommandError>> + 'static,
) {
    let shard = shard.clone();
    monoio::spawn(async move {
        let reply = match work.await {
            Ok(result) => Reply::Ok { id, result },
            Err((code, message)) => Reply::Error { id, code, message },
        };
        if shard
            .conns
            .borrow()
            .get(key)
            .is_some_and(|c| c.client_id == client_id)
        {
            send_reply(&shard, key, &reply);
            shard.flush_dirty();
        }
    });
}

fn run(shard: &Rc<Shard>, key: usize, id: u64, body: CommandBody) -> CommandResult {
    let config = &shard.shared.config;
    let (user, subscribed_count) = {
        let conns = shard.conns.borrow();
        let conn = conns.get(key).ok_or_else(|| refuse(ErrorCode::Internal))?;
        (conn.user.clone(), conn.subscriptions.len())
    };
    let is_subscribed = |channel: &str| {
        shard
            .conns
            .borrow()
            .get(key)
            .is_some_and(|c| c.is_subscribed(channel))
    };
    let personal = |channel: &str| !user.is_empty() && channel == channels::personal_channel(&user);
    match body {
        CommandBody::Subscribe { channel, since } => {
            let own_inbox = personal(&channel);
            if !own_inbox {
                channels::check_subscribe(config, &user, &channel).map_err(refuse)?;
                if is_subscribed(&channel) {
                    return Err(refuse(ErrorCode::AlreadySubscribed));
                }
                if subscribed_count >= config.websocket.subscriptions_max_per_connection as usize {
                    return Err((
                        ErrorCode::LimitExceeded,
                        format!(
                            "at most {} subscriptions per connection",
                            config.websocket.subscriptions_max_per_connection
                        ),
                    ));
                }
            }
            if streams::policy(config, &channel).is_none() {
                if since.is_some() {
                    return Err((
                        ErrorCode::BadRequest,
                        format!("{channel} keeps no history; nothing to recover"),
                    ));
                }
                shard.subscribe(key, &channel);
                return Ok(Outcome::Now(ReplyResult::Subscribed {
                    channel,
                    recovery: None,
                }));
            }
            // Durable: live first (held back), then the replay, then the
            // held publications (recovery.rs).
            recovery::begin(shard, key, &channel);
            if !own_inbox {
                shard.subscribe(key, &channel);
            }
            let client_id = shard
                .conns
                .borrow()
                .get(key)
                .map(|c| c.client_id)
                .unwrap_or_default();
            let work = recovery::run(shard.clone(), key, client_id, channel, since, own_inbox);
            reply_later(shard, key, id, work)
        }
        CommandBody::Unsubscribe { channel } => {
            if personal(&channel) || !is_subscribed(&channel) {
                return Err(refuse(ErrorCode::NotSubscribed));
            }
            shard.unsubscribe(key, &channel);
            Ok(Outcome::Now(ReplyResult::Empty))
        }
        CommandBody::Publish {
            channel,
            data,
            data_is_json,
            client_msg_id,
        } => {
            channels::check_publish(config, &channel, is_subscribed(&channel)).map_err(refuse)?;
            publish(
                shard,
                key,
                id,
                &user,
                channel,
                data.to_vec(),
                data_is_json,
                client_msg_id,
            )
        }
        CommandBody::Send {
            user: to,
            data,
            data_is_json,
            client_msg_id,
        } => {
            if user.is_empty() {
                return Err((
                    ErrorCode::PermissionDenied,
                    "anonymous connections cannot send to users".into(),
                ));
            }
            channels::validate_user_id(&to).map_err(refuse)?;
            let inbox = channels::personal_channel(&to);
            publish(
                shard,
                key,
                id,
                &user,
                inbox,
                data.to_vec(),
                data_is_json,
                client_msg_id,
            )
        }
        CommandBody::Ack { stream, offset } => {
            let ackable = personal(&stream)
                || (is_subscribed(&stream) && streams::policy(config, &stream).is_some());
            if !ackable {
                return Err((
                    ErrorCode::NotSubscribed,
                    "ack your inbox or a subscribed channel with history".into(),
                ));
            }
            let device = shard
                .conns
                .borrow()
                .get(key)
                .map(|c| shard.device_id(c))
                .ok_or_else(|| refuse(ErrorCode::Internal))?;
            let request = shard
                .shared
                .store
                .set_cursor(&user, &device, &stream, offset);
            reply_later(shard, key, id, async move {
                store_reply(request).await?;
                Ok(ReplyResult::Empty)
            })
        }
        CommandBody::History {
            stream,
            since,
            limit,
            reverse,
        } => {
            if !personal(&stream) {
                if !is_subscribed(&stream) {
                    channels::check_subscribe(config, &user, &stream).map_err(refuse)?;
                }
                if streams::policy(config, &stream).is_none() {
                    return Err((ErrorCode::BadRequest, format!("{stream} keeps no history")));
                }
            }
            if limit == 0 || limit > HISTORY_LIMIT_MAX {
                return Err((
                    ErrorCode::BadRequest,
                    format!("limit must be 1 to {HISTORY_LIMIT_MAX}"),
                ));
            }
            history(shard, key, id, stream, since, limit, reverse)
        }
        CommandBody::Refresh { token } => {
            let claims = shard.shared.auth.verify(&token).map_err(|err| {
                let code = if err == crate::auth::AuthError::Expired {
                    ErrorCode::TokenExpired
                } else {
                    ErrorCode::Unauthorized
                };
                (code, err.to_string())
            })?;
            if *claims.sub != *user {
                return Err((ErrorCode::Unauthorized, "token is for another user".into()));
            }
            let expires_at_ms = claims.exp.saturating_mul(1000);
            if let Some(conn) = shard.conns.borrow_mut().get_mut(key) {
                conn.expires_at_ms = expires_at_ms;
            }
            Ok(Outcome::Now(ReplyResult::Refreshed { expires_at_ms }))
        }
        CommandBody::Ping => Ok(Outcome::Now(ReplyResult::Empty)),
        _ => Err(refuse(ErrorCode::MethodNotFound)),
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "a publish command's fields, passed apart rather than through a one-use struct"
)]
fn publish(
    shard: &Rc<Shard>,
    key: usize,
    id: u64,
    sender: &str,
    channel: String,
    data: Vec<u8>,
    data_is_json: bool,
    client_msg_id: Option<String>,
) -> CommandResult {
    let message_id = shard.message_ids.borrow_mut().next(shard.now_ms()).0;
    let envelope = Envelope {
        id: message_id,
        offset: 0,
        epoch: 0,
        channel,
        sender: sender.to_string(),
        time_ms: shard.now_ms(),
        data_is_json,
        data,
    };
    if let Some(policy) = streams::policy(&shard.shared.config, &envelope.channel) {
        // The store assigns the offset and fans out once durable; the
        // sender's acknowledgement waits for that.
        let request = shard.shared.store.append(AppendRequest {
            stream: envelope.channel.clone(),
            envelope,
            durability: policy.durability,
            client_msg_id,
            retention: policy.retention,
        });
        return reply_later(shard, key, id, async move {
            let appended = store_reply(request).await?;
            Ok(ReplyResult::Published {
                message_id: appended.message_id.0,
                offset: appended.offset,
                epoch: appended.epoch,
                duplicate: appended.duplicate,
            })
        });
    }
    match shard.publish(&envelope) {
        Routed::Delivered => Ok(Outcome::Now(ReplyResult::Published {
            message_id,
            offset: 0,
            epoch: 0,
            duplicate: false,
        })),
        Routed::Overloaded => Err((
            ErrorCode::LimitExceeded,
            "shards are overloaded; publication not delivered everywhere, retry later".into(),
        )),
    }
}

/// Reads a page of history and answers with the stored publications as
/// they are (their data is not re-encoded).
fn history(
    shard: &Rc<Shard>,
    key: usize,
    id: u64,
    stream: String,
    since: Option<u64>,
    limit: u32,
    reverse: bool,
) -> CommandResult {
    let request = shard.shared.store.read(ReadRequest {
        stream: stream.clone(),
        since,
        limit: limit as usize,
        reverse,
    });
    let client_id = shard
        .conns
        .borrow()
        .get(key)
        .map(|c| c.client_id)
        .ok_or_else(|| refuse(ErrorCode::Internal))?;
    let shard = shard.clone();
    monoio::spawn(async move {
        let result = store_reply(request).await;
        let Some(binary) = shard
            .conns
            .borrow()
            .get(key)
            .filter(|c| c.client_id == client_id)
            .map(|c| c.binary)
        else {
            return;
        };
        match result {
            Ok(page) => {
                let envelopes: Vec<_> = page.entries.iter().map(|e| e.envelope()).collect();
                let (epoch, first, next) = (page.epoch, page.first_offset, page.next_offset);
                let (opcode, payload) = if binary {
                    (
                        OpCode::Binary,
                        encode_history_binary(id, &stream, epoch, first, next, &envelopes),
                    )
                } else {
                    (
                        OpCode::Text,
                        encode_history_json(id, &stream, epoch, first, next, &envelopes),
                    )
                };
                let frame = encode_frame(opcode, &payload, None);
                shard.send_frame(key, frame);
            }
            Err((code, message)) => send_reply(&shard, key, &Reply::Error { id, code, message }),
        }
        shard.flush_dirty();
    });
    Ok(Outcome::Later)
}
