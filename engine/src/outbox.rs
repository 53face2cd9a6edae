//! The webhook events a stored publication carries into the store's
//! outbox (`ringcast_store::OutboxEvent`), decided here from the config so
//! the shards and the server API agree.
//!
//! - `message`: a client `publish` or `send` that is stored (a durable
//!   stream); key = the sender's user id. The server API's publications
//!   are the app's own and make none.
//! - `undelivered`: every append to a user inbox (`user:<id>`), from a
//!   client or the API; key = the recipient, `due_ms` = now +
//!   `webhook.undelivered_after_ms`. The sender checks at that time whether
//!   a device of the user acknowledged the entry (its offset rides in the
//!   record's entry) and posts the event only if none did.
//!
//! Events ride the append (`AppendRequest::outbox`): the store writes them
//! in the same group commit as the entry, or not at all. Online and offline
//! events are `crate::presence`'s.

use ringcast_store::{OutboxEvent, OutboxKind};

use crate::channels::PERSONAL_NAMESPACE;
use crate::config::{Config, WebhookEvent};

/// Who made a publication.
#[derive(Debug, Clone, Copy)]
pub enum Cause<'a> {
    /// A client command on connection `client_id` of `user` ("" when
    /// anonymous).
    Client {
        user: &'a str,
        client_id: u64,
        command: ClientCommand,
    },
    /// The server API.
    Api,
}

/// The client command that made a publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCommand {
    Publish,
    Send,
}

impl ClientCommand {
    /// The command of a client publication to `channel`: `send` writes to a
    /// user inbox, which `publish` never may (the `user` namespace is the
    /// engine's).
    pub fn of_channel(channel: &str) -> ClientCommand {
        if inbox_user(channel).is_some() {
            ClientCommand::Send
        } else {
            ClientCommand::Publish
        }
    }

    fn name(self) -> &'static str {
        match self {
            ClientCommand::Publish => "publish",
            ClientCommand::Send => "send",
        }
    }
}

/// The user whose inbox `channel` is, if it is one.
pub fn inbox_user(channel: &str) -> Option<&str> {
    channel
        .split_once(':')
        .filter(|(namespace, user)| *namespace == PERSONAL_NAMESPACE && !user.is_empty())
        .map(|(_, user)| user)
}

/// Whether the config turns webhook event `event` on.
pub fn enabled(config: &Config, event: WebhookEvent) -> bool {
    !config.webhook.url.is_empty() && config.webhook.events.contains(event)
}

/// The events a stored publication to `channel` carries; empty when
/// webhooks are off. Call it only for publications that are stored.
pub fn append_events(
    config: &Config,
    channel: &str,
    cause: Cause<'_>,
    now_ms: u64,
) -> Vec<OutboxEvent> {
    let mut events = Vec::new();
    if let Cause::Client {
        user,
        client_id,
        command,
    } = cause
    {
        if enabled(config, WebhookEvent::Message) {
            let body = serde_json::json!({
                "client": client_id.to_string(),
                "command": command.name(),
            });
            events.push(OutboxEvent {
                kind: OutboxKind::Message,
                // An anonymous publisher has no user id; its connection
                // orders its messages.
                key: if user.is_empty() {
                    format!("anonymous:{client_id}")
                } else {
                    user.to_owned()
                },
                due_ms: 0,
                body: body.to_string().into_bytes(),
            });
        }
    }
    if let Some(recipient) = inbox_user(channel) {
        if enabled(config, WebhookEvent::Undelivered) {
            let after_ms =
                u64::try_from(config.webhook.undelivered_after.as_millis()).unwrap_or(u64::MAX);
            let source = match cause {
                Cause::Client { .. } => "client",
                Cause::Api => "api",
            };
            events.push(OutboxEvent {
                kind: OutboxKind::Undelivered,
                key: recipient.to_owned(),
                due_ms: now_ms.saturating_add(after_ms),
                body: serde_json::json!({ "source": source })
                    .to_string()
                    .into_bytes(),
            });
        }
    }
    assert!(events.len() <= 2);
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(webhook: &str) -> Config {
        let text = format!(
            "[api]\nkey = \"api-key-0123456789\"\n[auth]\njwt_secret = \
             \"0123456789abcdef0123456789abcdef\"\n[webhook]\n{webhook}"
        );
        Config::from_toml_str(&text, std::path::Path::new("test.toml")).expect("valid config")
    }

    const ON: &str =
        "url = \"http://127.0.0.1:9/hook\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n";

    fn client(command: ClientCommand) -> Cause<'static> {
        Cause::Client {
            user: "alice",
            client_id: 7,
            command,
        }
    }

    #[test]
    fn webhooks_off_write_no_events() {
        let config = config("");
        assert!(append_events(&config, "user:bob", client(ClientCommand::Send), 1000).is_empty());
        assert!(append_events(&config, "user:bob", Cause::Api, 1000).is_empty());
    }

    #[test]
    fn a_client_send_carries_message_and_undelivered() {
        let config = config(&format!("{ON}undelivered_after_ms = 500\n"));
        let events = append_events(&config, "user:bob", client(ClientCommand::Send), 1000);
        assert_eq!(events.len(), 2);
        assert_eq!(
            (events[0].kind, events[0].key.as_str(), events[0].due_ms),
            (OutboxKind::Message, "alice", 0)
        );
        let body: serde_json::Value = serde_json::from_slice(&events[0].body).unwrap();
        assert_eq!(body, serde_json::json!({"client": "7", "command": "send"}));
        assert_eq!(
            (events[1].kind, events[1].key.as_str(), events[1].due_ms),
            (OutboxKind::Undelivered, "bob", 1500)
        );
    }

    #[test]
    fn api_and_channel_publications_carry_only_what_applies() {
        let config = config(ON);
        let api = append_events(&config, "user:bob", Cause::Api, 1000);
        assert_eq!(api.len(), 1);
        assert_eq!(api[0].kind, OutboxKind::Undelivered);
        assert!(append_events(&config, "chat:x", Cause::Api, 1000).is_empty());
        let publish = append_events(&config, "chat:x", client(ClientCommand::Publish), 1000);
        assert_eq!(publish.len(), 1);
        assert_eq!(publish[0].kind, OutboxKind::Message);
        let anonymous = Cause::Client {
            user: "",
            client_id: 9,
            command: ClientCommand::Publish,
        };
        let events = append_events(&config, "chat:x", anonymous, 1000);
        assert_eq!(events[0].key, "anonymous:9");
    }

    #[test]
    fn events_left_out_of_the_list_are_not_written() {
        let config = config(&format!("{ON}events = [\"online\"]\n"));
        assert!(append_events(&config, "user:bob", client(ClientCommand::Send), 1000).is_empty());
        assert_eq!(ClientCommand::of_channel("user:bob"), ClientCommand::Send);
        assert_eq!(ClientCommand::of_channel("chat:x"), ClientCommand::Publish);
        assert_eq!(inbox_user("user:"), None);
        assert_eq!(inbox_user("users:x"), None);
    }
}
