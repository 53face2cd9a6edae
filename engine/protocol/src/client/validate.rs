//! The rules a command must meet beyond its wire form's syntax, applied by
//! both decoders after parsing so the two forms accept exactly the same
//! commands: positive ids, non-empty names, `client_msg_id` and history
//! `limit` ranges, and payloads flagged as JSON being JSON.

use serde::de::IgnoredAny;

use super::json::history_window_error;
use super::model::{Command, CommandBody, CommandError, ErrorCode};
use super::{CLIENT_MSG_ID_BYTES_MAX, HISTORY_LIMIT_MAX, PRESENCE_USERS_MAX, RPC_METHOD_BYTES_MAX};

pub(super) fn id_zero_error() -> CommandError {
    CommandError::new(
        None,
        ErrorCode::BadRequest,
        "id must be a positive integer".to_owned(),
    )
}

pub(super) fn validate_binary_payload(
    id: u64,
    data: &[u8],
    data_is_json: bool,
) -> Result<(), CommandError> {
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

pub(super) fn validate_command(command: &Command) -> Result<(), CommandError> {
    let bad_request = |message: String| {
        Err(CommandError::new(
            Some(command.id),
            ErrorCode::BadRequest,
            message,
        ))
    };
    let (field, value) = match &command.body {
        CommandBody::Subscribe { channel, .. }
        | CommandBody::SubscribeWithToken { channel, .. }
        | CommandBody::Unsubscribe { channel }
        | CommandBody::Publish { channel, .. } => ("channel", channel),
        CommandBody::Send { user, .. } => ("user", user),
        CommandBody::Refresh { token } => ("token", token),
        CommandBody::Ack { stream, .. }
        | CommandBody::History { stream, .. }
        | CommandBody::HistoryBefore { stream, .. }
        | CommandBody::HistoryByTime { stream, .. } => ("stream", stream),
        CommandBody::Rpc { method, .. } => ("method", method),
        CommandBody::Im(im) => return super::im::validate_im(command.id, im),
        CommandBody::Ping => return Ok(()),
        CommandBody::Presence(presence) => {
            let users = presence.users();
            if !(1..=PRESENCE_USERS_MAX).contains(&users.len()) {
                return bad_request(format!("`users` must hold 1 to {PRESENCE_USERS_MAX} ids"));
            }
            if users.iter().any(String::is_empty) {
                return bad_request("`users` must not hold an empty id".to_owned());
            }
            return Ok(());
        }
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
        CommandBody::Rpc { method, .. } if method.len() > RPC_METHOD_BYTES_MAX => bad_request(
            format!("`method` must be at most {RPC_METHOD_BYTES_MAX} bytes"),
        ),
        CommandBody::History { limit, .. }
        | CommandBody::HistoryBefore { limit, .. }
        | CommandBody::HistoryByTime { limit, .. }
            if !(1..=HISTORY_LIMIT_MAX).contains(limit) =>
        {
            bad_request(format!("`limit` must be 1 to {HISTORY_LIMIT_MAX}"))
        }
        CommandBody::HistoryByTime {
            from_time_ms,
            before_time_ms,
            ..
        } => history_window_error(*from_time_ms, *before_time_ms).map_or(Ok(()), bad_request),
        _ => Ok(()),
    }
}

pub(super) fn valid_client_msg_id(key: &str) -> bool {
    (1..=CLIENT_MSG_ID_BYTES_MAX).contains(&key.len())
        && key.bytes().all(|byte| matches!(byte, 0x20..=0x7e))
}

/// How deeply `json` nests arrays and objects (a scalar: 0, `[]`: 1,
/// `{"a":[1]}`: 2). Counts brackets outside strings, so it is linear and
/// needs no recursion; meant for text that already parsed as JSON.
pub fn json_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in json {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}
