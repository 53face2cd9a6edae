//! Presence. This file: online and offline webhook events, a user's first
//! connection on this node and the last one gone. `book.rs`: the node's
//! presence state that clients watch and query (online, last seen, flap
//! damping, the cluster seam); `watch.rs`: one shard's watchers and
//! offline deadlines; `stored.rs`: last seen kept in the store across
//! restarts.
//!
//! Every connection of a user joins the personal channel `user:<id>`, so
//! the node-wide [`Interest`] mask of that channel goes from 0 to non-0 at
//! the user's first connection and back to 0 when the last one closes.
//! `Interest::add`/`remove` report those transitions atomically, each with
//! a sequence number taken inside the same atomic step, so a user's
//! transitions are numbered in the order they happened. The shard that
//! makes a transition hands the event to the store
//! (`Store::submit_presence`) with that number.
//!
//! **Order.** Two shards can make opposite transitions of one user at
//! nearly the same time (the last connection closes on one while a new one
//! opens on another), and their events can reach the store's writer in
//! either order; holding a lock over the transition and the submit would
//! order them, but shards never wait on locks. The number orders them
//! instead: the writer drops a presence event whose number is not above
//! the user's last one (it was overtaken), so the outbox, the webhooks and
//! the store's presence set (which writes an Offline at the next start for
//! a user still online when the process died) always end on the user's
//! latest state. An app may see a user online twice in a row that way,
//! never offline while connected. The number is in each body as
//! `presence_seq`.

pub mod book;
pub mod stored;
pub mod watch;

use std::sync::atomic::{AtomicU64, Ordering};

use ringcast_store::{OutboxEvent, OutboxKind, Store};

use crate::config::{Config, WebhookEvent};
use crate::interest::Interest;
use crate::outbox::{enabled, inbox_user};

/// The presence events' switches and counters; one per node.
pub struct Presence {
    online: bool,
    offline: bool,
    node_id: u8,
    /// Events the store refused (queue full, store down): counted and
    /// logged, not retried (the store's presence set still answers a
    /// missing Offline at the next start).
    lost: AtomicU64,
    /// When the last warning about lost events was logged (unix ms).
    lost_logged_ms: AtomicU64,
    /// In a cluster, every node-wide transition of a channel is told to
    /// the cluster thread (bucket subscriptions, the user directory).
    cluster: Option<std::sync::Arc<crate::cluster::Cluster>>,
}

/// At most one warning about lost presence events per this long: a store
/// refusing everything would otherwise log once per connection change.
const LOST_LOG_INTERVAL_MS: u64 = 10_000;

/// The connection whose subscribe or unsubscribe may be a transition.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    pub channel: &'a str,
    pub shard_idx: usize,
    pub client_id: u64,
}

impl Presence {
    pub fn new(
        config: &Config,
        cluster: Option<std::sync::Arc<crate::cluster::Cluster>>,
    ) -> Presence {
        Presence {
            online: enabled(config, WebhookEvent::Online),
            offline: enabled(config, WebhookEvent::Offline),
            node_id: config.server.node_id.get(),
            lost: AtomicU64::new(0),
            lost_logged_ms: AtomicU64::new(0),
            cluster,
        }
    }

    /// Presence events the store refused since start.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// The shard gained its first local subscriber of `change.channel`:
    /// registers its interest, and for a user's first connection on the
    /// node writes Online.
    pub fn add(&self, interest: &Interest, store: &Store, change: Change<'_>) {
        let transition = interest.add(change.channel, change.shard_idx);
        self.tell_cluster(transition.is_some(), change.channel);
        if let (Some(transition), true) = (transition, self.online) {
            self.submit(store, change, OutboxKind::Online, transition.seq);
        }
    }

    /// The shard lost its last local subscriber of `change.channel`:
    /// withdraws its interest, and when the user's last connection on the
    /// node is gone writes Offline.
    pub fn remove(&self, interest: &Interest, store: &Store, change: Change<'_>) {
        let transition = interest.remove(change.channel, change.shard_idx);
        self.tell_cluster(transition.is_some(), change.channel);
        if let (Some(transition), true) = (transition, self.offline) {
            self.submit(store, change, OutboxKind::Offline, transition.seq);
        }
    }

    fn tell_cluster(&self, transition: bool, channel: &str) {
        if let (true, Some(cluster)) = (transition, &self.cluster) {
            cluster.interest_changed(channel);
        }
    }

    fn submit(&self, store: &Store, change: Change<'_>, kind: OutboxKind, presence_seq: u64) {
        let Some(user) = inbox_user(change.channel) else {
            return;
        };
        let mut body = serde_json::json!({
            "client": change.client_id.to_string(),
            "node": self.node_id,
            "presence_seq": presence_seq,
        });
        if kind == OutboxKind::Offline {
            body["reason"] = "disconnect".into();
        }
        let event = OutboxEvent {
            kind,
            key: user.to_owned(),
            due_ms: 0,
            body: body.to_string().into_bytes(),
        };
        if let Err(error) = store.submit_presence(event, presence_seq) {
            let lost = self.lost.fetch_add(1, Ordering::Relaxed) + 1;
            let now_ms = crate::shard::unix_ms();
            let logged_ms = self.lost_logged_ms.load(Ordering::Relaxed);
            // One shard wins the slot; the others only count.
            if now_ms.saturating_sub(logged_ms) >= LOST_LOG_INTERVAL_MS
                && self
                    .lost_logged_ms
                    .compare_exchange(logged_ms, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(
                    %error,
                    user,
                    ?kind,
                    lost_since_start = lost,
                    "presence webhook events not written (logged at most every 10 s; \
                     counted in ringcast_webhook_presence_lost_total)"
                );
            }
        }
    }
}
