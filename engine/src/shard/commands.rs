//! Client commands on a shard: permission checks, subscription changes,
//! publishing, token refresh. Each command gets exactly one reply.

use ringcast_protocol::client::{Command, CommandBody, ErrorCode, Reply, ReplyResult};
use ringcast_protocol::envelope::Envelope;

use super::fanout::Routed;
use super::io::send_reply;
use super::Shard;
use crate::channels;

/// Handles `command` from connection `key` and queues its reply. Commands
/// never end the connection, so this returns no `End`; the signature keeps
/// room for commands that will.
pub(super) fn handle(shard: &Shard, key: usize, command: Command) -> Option<super::io::End> {
    let id = command.id;
    let reply = match run(shard, key, command.body) {
        Ok(result) => Reply::Ok { id, result },
        Err((code, message)) => Reply::Error { id, code, message },
    };
    send_reply(shard, key, &reply);
    None
}

type CommandResult = Result<ReplyResult, (ErrorCode, String)>;

fn refuse(code: ErrorCode) -> (ErrorCode, String) {
    (code, code.message().to_string())
}

fn run(shard: &Shard, key: usize, body: CommandBody) -> CommandResult {
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
    match body {
        CommandBody::Subscribe { channel } => {
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
            shard.subscribe(key, &channel);
            Ok(ReplyResult::Subscribed { channel })
        }
        CommandBody::Unsubscribe { channel } => {
            if channel == channels::personal_channel(&user) || !is_subscribed(&channel) {
                return Err(refuse(ErrorCode::NotSubscribed));
            }
            shard.unsubscribe(key, &channel);
            Ok(ReplyResult::Empty)
        }
        CommandBody::Publish {
            channel,
            data,
            data_is_json,
        } => {
            channels::check_publish(config, &channel, is_subscribed(&channel)).map_err(refuse)?;
            publish(shard, &user, channel, data.to_vec(), data_is_json)
        }
        CommandBody::Send {
            user: to,
            data,
            data_is_json,
        } => {
            if user.is_empty() {
                return Err((
                    ErrorCode::PermissionDenied,
                    "anonymous connections cannot send to users".into(),
                ));
            }
            channels::validate_user_id(&to).map_err(refuse)?;
            publish(
                shard,
                &user,
                channels::personal_channel(&to),
                data.to_vec(),
                data_is_json,
            )
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
            Ok(ReplyResult::Refreshed { expires_at_ms })
        }
        CommandBody::Ping => Ok(ReplyResult::Empty),
        _ => Err(refuse(ErrorCode::MethodNotFound)),
    }
}

fn publish(
    shard: &Shard,
    sender: &str,
    channel: String,
    data: Vec<u8>,
    data_is_json: bool,
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
    match shard.publish(&envelope) {
        Routed::Delivered => Ok(ReplyResult::Published {
            message_id,
            offset: 0,
            epoch: 0,
        }),
        Routed::Overloaded => Err((
            ErrorCode::LimitExceeded,
            "shards are overloaded; publication not delivered everywhere, retry later".into(),
        )),
    }
}
