//! Channel names and the rules that say who may subscribe and publish.
//!
//! A channel is `<namespace>:<rest>`; its namespace's rules come from config.
//! The `user` namespace is the engine's own: `user:<id>` is the personal
//! channel every connection of user `<id>` joins at connect, so a message
//! sent to a user reaches all of their devices.
//!
//! [`check_subscribe`] is the one answer to "may this connection read this
//! channel": the `subscribe` command and the `history` command of a channel
//! it has not joined both ask it.

use ringcast_protocol::client::ErrorCode;

use crate::auth::{AuthError, Authenticator};
use crate::config::{Config, PublishPolicy, SubscribePolicy};

pub const PERSONAL_NAMESPACE: &str = "user";
/// Longest channel name, in bytes.
pub const CHANNEL_BYTES_MAX: usize = 255;

pub fn personal_channel(user: &str) -> String {
    format!("{PERSONAL_NAMESPACE}:{user}")
}

/// Whether `channel` is some user's personal channel (inbox).
pub fn is_personal(channel: &str) -> bool {
    split(channel).0 == PERSONAL_NAMESPACE
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

/// A channel the server may subscribe connections to (`/api/subscribe`, the
/// `subs` claim): one the API may use, but not a personal channel, which
/// every connection has joined already.
pub fn check_server_subscription(config: &Config, channel: &str) -> Result<(), String> {
    match check_api_channel(config, channel) {
        Err(ApiChannelRefusal::Invalid) => Err(format!("{channel:?} is not a valid channel")),
        Err(ApiChannelRefusal::UnknownNamespace) => {
            Err(format!("{channel:?} is in no configured namespace"))
        }
        Ok(()) if split(channel).0 == PERSONAL_NAMESPACE => Err(format!(
            "{channel:?} is a personal channel, joined at connect by its user only"
        )),
        Ok(()) if crate::im::is_reserved(config, channel) => Err(format!(
            "{channel:?} is in a namespace the IM layer reserves: conversations need no subscribe"
        )),
        Ok(()) => Ok(()),
    }
}

/// A refused subscribe: the code and the message the client gets.
pub type SubscribeRefusal = (ErrorCode, String);

/// Who asks to read a channel.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    /// "" for an anonymous connection.
    pub user: &'a str,
    /// The connection token's `channels` claim.
    pub grants: &'a [Box<str>],
    /// The subscription token sent with the command, if any.
    pub token: Option<&'a str>,
}

/// Whether `reader` may subscribe to `channel` (and so read its history).
///
/// On a `"token"` namespace a grant in the connection token's `channels`
/// claim is enough; otherwise the subscription token must verify (the same
/// path as connection tokens) and name exactly this channel and this user.
/// The claim and the token play no part on the other policies: `"public"`
/// is open to every connection anyway, and `"owner"` and `"none"` mean what
/// they say whatever a token holds.
pub fn check_subscribe(
    config: &Config,
    auth: &Authenticator,
    reader: &Reader<'_>,
    channel: &str,
) -> Result<(), SubscribeRefusal> {
    let refuse = |code: ErrorCode| (code, code.message().to_string());
    validate_name(channel).map_err(refuse)?;
    if crate::im::is_reserved(config, channel) {
        return Err((
            ErrorCode::PermissionDenied,
            format!(
                "{channel} is a conversation: its messages reach its members without a subscribe"
            ),
        ));
    }
    let (namespace, rest) = split(channel);
    if namespace == PERSONAL_NAMESPACE {
        // Joined at connect; nobody may join another user's.
        return Err(refuse(if rest == reader.user {
            ErrorCode::AlreadySubscribed
        } else {
            ErrorCode::PermissionDenied
        }));
    }
    let rules = config
        .namespace(channel)
        .ok_or_else(|| refuse(ErrorCode::UnknownChannel))?;
    let user = reader.user;
    match rules.subscribe {
        SubscribePolicy::Public => Ok(()),
        SubscribePolicy::Owner if !user.is_empty() && rest == user => Ok(()),
        SubscribePolicy::Owner | SubscribePolicy::ServerOnly => {
            Err(refuse(ErrorCode::PermissionDenied))
        }
        SubscribePolicy::Token
            if reader
                .grants
                .iter()
                .any(|grant| grant_matches(grant, channel)) =>
        {
            Ok(())
        }
        SubscribePolicy::Token => match reader.token {
            None => Err((
                ErrorCode::PermissionDenied,
                format!(
                    "{channel} needs a subscription token (the `token` param) or a \
                     matching `channels` claim in the connection token"
                ),
            )),
            Some(token) => check_subscription_token(auth, user, channel, token),
        },
    }
}

fn check_subscription_token(
    auth: &Authenticator,
    user: &str,
    channel: &str,
    token: &str,
) -> Result<(), SubscribeRefusal> {
    let invalid = |why: String| {
        (
            ErrorCode::SubscriptionTokenInvalid,
            format!("subscription token invalid: {why}"),
        )
    };
    let claims = auth.verify_subscription(token).map_err(|err| match err {
        AuthError::Expired => (
            ErrorCode::SubscriptionTokenExpired,
            "subscription token expired: get a new one from the app and subscribe again".into(),
        ),
        other => invalid(other.to_string()),
    })?;
    if claims.channel != channel {
        return Err(invalid(format!(
            "it is for channel {:?}, not {channel:?}",
            claims.channel
        )));
    }
    if user.is_empty() || claims.sub != user {
        return Err(invalid("it is for another user".into()));
    }
    Ok(())
}

/// Whether the `channels` claim entry `grant` covers `channel`. Grammar: an
/// entry ending in `*` matches every channel that starts with what comes
/// before the `*` (`chat:team1-*`, `chat:*`); any other entry matches
/// exactly that channel. `*` elsewhere is literal. [`check_grant`] refuses
/// entries that would match nothing useful at connect.
pub fn grant_matches(grant: &str, channel: &str) -> bool {
    match grant.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => grant == channel,
    }
}

/// An entry of the `channels` claim as it must be: a valid channel name,
/// with a namespace before any trailing `*` (so no entry is a bare `*` or
/// reaches into every namespace), never a personal channel.
pub fn check_grant(grant: &str) -> Result<(), String> {
    validate_name(grant).map_err(|_| format!("{grant:?} is not a channel name"))?;
    let (namespace, _) = split(grant);
    if grant.ends_with('*') && !grant.contains(':') {
        return Err(format!(
            "{grant:?}: a `*` pattern must name its namespace first, as in \"chat:*\""
        ));
    }
    if namespace == PERSONAL_NAMESPACE {
        return Err(format!(
            "{grant:?}: personal channels are joined at connect, never granted"
        ));
    }
    Ok(())
}

pub fn check_publish(config: &Config, channel: &str, subscribed: bool) -> Result<(), ErrorCode> {
    validate_name(channel)?;
    if crate::im::is_reserved(config, channel) {
        // Conversations take IM commands only (`msg_send`).
        return Err(ErrorCode::PermissionDenied);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_match_exact_names_and_trailing_star_prefixes() {
        assert!(grant_matches("chat:g1", "chat:g1"));
        assert!(!grant_matches("chat:g1", "chat:g10"));
        assert!(grant_matches("chat:team1-*", "chat:team1-ops"));
        assert!(grant_matches("chat:team1-*", "chat:team1-"));
        assert!(!grant_matches("chat:team1-*", "chat:team2-ops"));
        assert!(grant_matches("chat:*", "chat:anything"));
        assert!(!grant_matches("chat:*", "news:x"));
        // Only a trailing star is a wildcard.
        assert!(!grant_matches("chat:*-x", "chat:a-x"));
        assert!(grant_matches("chat:*-x", "chat:*-x"));
    }

    #[test]
    fn grant_entries_are_checked() {
        assert!(check_grant("chat:g1").is_ok());
        assert!(check_grant("chat:*").is_ok());
        assert!(check_grant("lobby").is_ok());
        assert!(check_grant("*").unwrap_err().contains("namespace"));
        assert!(check_grant("ch*").unwrap_err().contains("namespace"));
        assert!(check_grant("user:*").unwrap_err().contains("personal"));
        assert!(check_grant("").is_err());
        assert!(check_grant("chat:a b").is_err());
    }
}
