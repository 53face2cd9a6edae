//! Server-side subscriptions: channels the server joins a user's
//! connections to, without a command from the client (`/api/subscribe` and
//! `/api/unsubscribe` through the mesh, the token's `subs` claim at
//! connect). Each change is told to the client with a `subscribed` or
//! `unsubscribed` message, so it knows which pushes to expect.
//!
//! The server's decision is the permission: namespace rules are not checked
//! again, only that the channel is one the server may subscribe to
//! (`channels::check_server_subscription`, done before the event is sent).
//!
//! A channel with history is caught up from the device's stored cursor
//! when the connection named a device (`?device=`): the client acks what it
//! processed, as for its inbox, and a reconnect replays what it missed
//! before live pushes resume, with no gap and no duplicate. The replay's
//! result arrives as a subscribe reply with id 0, as the inbox's does.

use ringcast_protocol::client::{encode_subscription_binary, encode_subscription_json};
use ringcast_protocol::frame::{encode_frame, OpCode};

use super::Shard;
use crate::{channels, streams};

impl Shard {
    /// Subscribes or unsubscribes every local connection of `user` to
    /// `channel`; returns how many changed. A connection already in the
    /// wanted state, or at its subscription limit, is left as it is.
    pub(super) fn subscribe_user(&mut self, user: &str, channel: &str, subscribe: bool) -> usize {
        let inbox = channels::personal_channel(user);
        let keys = self
            .subscribers
            .get(inbox.as_str())
            .cloned()
            .unwrap_or_default();
        let max = self
            .shared
            .config
            .websocket
            .subscriptions_max_per_connection as usize;
        let mut changed = 0;
        for key in keys {
            let Some(conn) = self.conns.get(key) else {
                continue;
            };
            if !conn.session.is_open() || conn.is_subscribed(channel) == subscribe {
                continue;
            }
            if subscribe {
                if conn.subscriptions.len() >= max {
                    tracing::debug!(
                        shard = self.idx,
                        user,
                        channel,
                        "server-side subscribe over the limit"
                    );
                    continue;
                }
                self.send_subscription_change(key, channel, true);
                self.server_subscribe(key, channel);
            } else {
                self.unsubscribe(key, channel);
                self.send_subscription_change(key, channel, false);
            }
            changed += 1;
        }
        changed
    }

    /// Joins a new connection to the channels of its token's `subs` claim
    /// (checked at admission), telling the client of each.
    pub(super) fn apply_connect_subscriptions(&mut self, key: usize, subs: &[String]) {
        for channel in subs {
            let joined = self
                .conns
                .get(key)
                .is_some_and(|c| c.is_subscribed(channel));
            if !joined {
                self.send_subscription_change(key, channel, true);
                self.server_subscribe(key, channel);
            }
        }
    }

    /// Joins `key` to `channel`; on a channel with history, for a
    /// connection with a device, first holds the channel's live pushes and
    /// replays from the device's cursor (`recovery.rs`), so the pushes it
    /// missed while away come before the live ones. The `subscribed`
    /// message goes first, so the client knows the channel before its
    /// pushes arrive.
    fn server_subscribe(&mut self, key: usize, channel: &str) {
        let recover = streams::policy(&self.shared.config, channel).is_some()
            && self
                .conns
                .get(key)
                .is_some_and(|c| c.device().is_some() && !c.user.is_empty());
        if recover {
            self.conns[key].session.begin_recovery(channel);
        }
        self.subscribe(key, channel);
        if recover {
            self.start_recovery(key, 0, channel.to_owned(), None, true, false);
        }
    }

    fn send_subscription_change(&mut self, key: usize, channel: &str, subscribed: bool) {
        let Some(binary) = self.conns.get(key).map(|c| c.session.binary()) else {
            return;
        };
        let frame = if binary {
            encode_frame(
                OpCode::Binary,
                &encode_subscription_binary(channel, subscribed),
                None,
            )
        } else {
            encode_frame(
                OpCode::Text,
                &encode_subscription_json(channel, subscribed),
                None,
            )
        };
        self.send_frame(key, frame);
    }
}
