//! Server-side subscriptions: channels the server joins a user's
//! connections to, without a command from the client (`/api/subscribe` and
//! `/api/unsubscribe` through the mesh, the token's `subs` claim at
//! connect). Each change is told to the client with a `subscribed` or
//! `unsubscribed` message, so it knows which pushes to expect.
//!
//! The server's decision is the permission: namespace rules are not checked
//! again, only that the channel is one the server may subscribe to
//! (`channels::check_server_subscription`, done before the event is sent).

use ringcast_protocol::client::{encode_subscription_binary, encode_subscription_json};
use ringcast_protocol::frame::{encode_frame, OpCode};

use super::Shard;
use crate::channels;

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
                self.subscribe(key, channel);
            } else {
                self.unsubscribe(key, channel);
            }
            self.send_subscription_change(key, channel, subscribe);
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
                self.subscribe(key, channel);
                self.send_subscription_change(key, channel, true);
            }
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
