//! Channel names and the rules that say who may subscribe and publish.
//!
//! A channel is `<namespace>:<rest>`; its namespace's rules come from config.
//! The `user` namespace is the engine's own: `user:<id>` is the personal
//! channel every connection of user `<id>` joins at connect, so a message
//! sent to a user reaches all of their devices.

use ringcast_protocol::client::ErrorCode;

use crate::config::{Config, PublishPolicy, SubscribePolicy};

pub const PERSONAL_NAMESPACE: &str = "user";
/// Longest channel name, in bytes.
pub const CHANNEL_BYTES_MAX: usize = 255;

pub fn personal_channel(user: &str) -> String {
    format!("{PERSONAL_NAMESPACE}:{user}")
}

fn validate_name(name: &str) -> Result<(), ErrorCode> {
    let ok = !name.is_empty()
        && name.len() <= CHANNEL_BYTES_MAX
        && !name.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(ErrorCode::BadRequest)
    }
}

/// Longest user id, in bytes: `user:<id>` must stay a valid channel name.
pub const USER_ID_BYTES_MAX: usize = CHANNEL_BYTES_MAX - PERSONAL_NAMESPACE.len() - 1;

pub fn validate_user_id(user: &str) -> Result<(), ErrorCode> {
    if user.len() > USER_ID_BYTES_MAX {
        return Err(ErrorCode::UnknownUser);
    }
    validate_name(user).map_err(|_| ErrorCode::UnknownUser)
}

fn split(channel: &str) -> (&str, &str) {
    channel.split_once(':').unwrap_or(("", channel))
}

/// Why the server API refuses a channel name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiChannelRefusal {
    /// Not a channel name, or `user:` with no valid user id after it.
    Invalid,
    /// A valid name in no configured namespace.
    UnknownNamespace,
}

/// A channel the server API may publish to or read: a valid name that is
/// either the personal channel of a valid user id or in a configured
/// namespace. The API's one check of channel names.
pub fn check_api_channel(config: &Config, channel: &str) -> Result<(), ApiChannelRefusal> {
    validate_name(channel).map_err(|_| ApiChannelRefusal::Invalid)?;
    let (namespace, rest) = split(channel);
    if namespace == PERSONAL_NAMESPACE {
        return validate_user_id(rest).map_err(|_| ApiChannelRefusal::Invalid);
    }
    match config.namespace(channel) {
        Some(_) => Ok(()),
        None => Err(ApiChannelRefusal::UnknownNamespace),
    }
}

pub fn check_subscribe(config: &Config, user: &str, channel: &str) -> Result<(), ErrorCode> {
    validate_name(channel)?;
    let (namespace, rest) = split(channel);
    if namespace == PERSONAL_NAMESPACE {
        // Joined at connect; nobody may join another user's.
        return Err(if rest == user {
            ErrorCode::AlreadySubscribed
        } else {
            ErrorCode::PermissionDenied
        });
    }
    let rules = config.namespace(channel).ok_or(ErrorCode::UnknownChannel)?;
    match rules.subscribe {
        SubscribePolicy::Public => Ok(()),
        SubscribePolicy::Owner if !user.is_empty() && rest == user => Ok(()),
        SubscribePolicy::Owner | SubscribePolicy::ServerOnly => Err(ErrorCode::PermissionDenied),
    }
}

pub fn check_publish(config: &Config, channel: &str, subscribed: bool) -> Result<(), ErrorCode> {
    validate_name(channel)?;
    if split(channel).0 == PERSONAL_NAMESPACE {
        // Messages to a user go through `send`, which names the sender.
        return Err(ErrorCode::PermissionDenied);
    }
    let rules = config.namespace(channel).ok_or(ErrorCode::UnknownChannel)?;
    match rules.publish {
        PublishPolicy::Any => Ok(()),
        PublishPolicy::Subscribers if subscribed => Ok(()),
        PublishPolicy::Subscribers | PublishPolicy::ServerOnly => Err(ErrorCode::PermissionDenied),
    }
}
