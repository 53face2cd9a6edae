//! The cluster thread's bookkeeping, sans-IO: which channel buckets this
//! node subscribes, which nodes hold which users (for the partition this
//! node owns), which nodes are alive. Tested on a virtual clock.

use std::collections::{HashMap, HashSet};

/// FNV-1a, 64 bits. Fixed forever: it decides which node owns a stream's
/// data and which subject a channel travels on, across versions
/// (`tests::the_hash_is_pinned`).
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

/// The bucket of `channel` among `buckets` (a power of two).
pub fn bucket_of(channel: &str, buckets: u32) -> u32 {
    debug_assert!(buckets.is_power_of_two());
    (fnv1a64(channel.as_bytes()) & u64::from(buckets - 1)) as u32
}

/// The store partition of `stream` among `stores`.
pub fn partition_of(stream: &str, stores: u32) -> u32 {
    debug_assert!(stores >= 1);
    (fnv1a64(stream.as_bytes()) % u64::from(stores.max(1))) as u32
}

/// The partition a durable stream lives in: `fnv1a64(name) mod stores`,
/// except a conversation's (`dm:`, `grp:`) while the IM layer runs, which
/// lives in the IM partition with every other IM record.
pub fn stream_partition(stream: &str, stores: u32, im_partition: Option<u32>) -> u32 {
    match im_partition {
        Some(partition) if crate::im::is_conv(stream) => partition,
        _ => partition_of(stream, stores),
    }
}

/// A hash of the settings every node of a cluster must share: where a
/// stream lives (`cluster.stores`), where a channel travels
/// (`cluster.channel_buckets`), and how each namespace stores
/// (`history`, durability, retention). Heartbeats carry it; a node that
/// hears another value reports `conflict` (docs/cluster.md).
pub fn settings_hash(config: &crate::config::Config) -> u64 {
    let mut text = format!(
        "stores={};buckets={}",
        config.cluster.stores, config.cluster.channel_buckets
    );
    if config.im.enabled {
        // Where the IM records live; absent without the IM layer, so the
        // hash of a cluster without it did not change.
        text.push_str(&format!(";im={}", config.cluster.im_partition));
    }
    for ns in &config.namespaces {
        text.push_str(&format!(
            ";{}:{}:{:?}:{}:{}",
            ns.name,
            ns.history,
            ns.durability,
            ns.retention_count,
            ns.retention_age.as_secs()
        ));
    }
    fnv1a64(text.as_bytes())
}

/// How long a bucket stays subscribed after its last channel went: a
/// channel that empties and fills again (a user reconnecting) costs no
/// UNSUB/SUB pair.
pub const BUCKET_LINGER_MS: u64 = 2000;

/// What to do with a bucket's NATS subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketAction {
    Subscribe(u32),
    Unsubscribe(u32),
}

/// The channels of this node with subscribers, counted per bucket.
#[derive(Debug, Default)]
pub struct Buckets {
    live: HashSet<Box<str>>,
    counts: HashMap<u32, u32>,
    subscribed: HashSet<u32>,
    /// Buckets whose count fell to 0, with when to unsubscribe them.
    lingering: HashMap<u32, u64>,
}

impl Buckets {
    /// `channel` (in `bucket`) now has (`live`) or no longer has local
    /// subscribers. Idempotent: the caller reads the truth and says it.
    pub fn set(&mut self, channel: &str, bucket: u32, live: bool) -> Option<BucketAction> {
        if live {
            if !self.live.insert(channel.into()) {
                return None;
            }
            let count = self.counts.entry(bucket).or_default();
            *count += 1;
            self.lingering.remove(&bucket);
            self.subscribed
                .insert(bucket)
                .then_some(BucketAction::Subscribe(bucket))
        } else {
            if !self.live.remove(channel) {
                return None;
            }
            let count = self.counts.entry(bucket).or_default();
            debug_assert!(*count > 0, "bucket {bucket} counted below zero");
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.counts.remove(&bucket);
                // Decided at the next `expire` after the linger.
                self.lingering.insert(bucket, u64::MAX);
            }
            None
        }
    }

    /// Unsubscribes the buckets empty since `BUCKET_LINGER_MS` before
    /// `now_ms`.
    pub fn expire(&mut self, now_ms: u64) -> Vec<BucketAction> {
        let mut actions = Vec::new();
        self.lingering.retain(|bucket, since| {
            if *since == u64::MAX {
                *since = now_ms;
            }
            if now_ms.saturating_sub(*since) < BUCKET_LINGER_MS {
                return true;
            }
            if self.subscribed.remove(bucket) {
                actions.push(BucketAction::Unsubscribe(*bucket));
            }
            false
        });
        actions
    }

    /// The channels this book holds as live (the resync checks each).
    pub fn live_channels(&self) -> Vec<Box<str>> {
        self.live.iter().cloned().collect()
    }

    /// The buckets wanted subscribed (after a connect, each without a
    /// subscription gets one).
    pub fn subscribed_buckets(&self) -> impl Iterator<Item = u32> + '_ {
        self.subscribed.iter().copied()
    }

    /// Buckets subscribed now.
    pub fn subscribed(&self) -> usize {
        self.subscribed.len()
    }
}

/// The owner's user directory: which nodes hold connections of each user
/// whose inbox lives in this node's partition. This node itself is never
/// in it (its own connections get entries through the mesh).
#[derive(Debug, Default)]
pub struct Directory {
    nodes_of: HashMap<Box<str>, u64>,
}

impl Directory {
    pub fn set(&mut self, user: &str, node: u8, present: bool) {
        let bit = 1u64 << node;
        if present {
            *self.nodes_of.entry(user.into()).or_default() |= bit;
        } else if let Some(mask) = self.nodes_of.get_mut(user) {
            *mask &= !bit;
            if *mask == 0 {
                self.nodes_of.remove(user);
            }
        }
    }

    /// Forgets every user of `node` (it died, restarted, or sends its
    /// whole set again); returns the users it held.
    pub fn forget_node(&mut self, node: u8) -> Vec<Box<str>> {
        let bit = 1u64 << node;
        let mut forgotten = Vec::new();
        self.nodes_of.retain(|user, mask| {
            if *mask & bit != 0 {
                forgotten.push(user.clone());
            }
            *mask &= !bit;
            *mask != 0
        });
        forgotten
    }

    /// The nodes holding connections of `user`, as a bitmask.
    pub fn nodes(&self, user: &str) -> u64 {
        self.nodes_of.get(user).copied().unwrap_or(0)
    }

    pub fn users(&self) -> usize {
        self.nodes_of.len()
    }
}

/// A node as its heartbeats describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeInfo {
    pub incarnation: u64,
    pub last_heard_ms: u64,
    pub draining: bool,
    pub owns_store: bool,
    pub connections: u64,
}

/// What a heartbeat changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeChange {
    /// Nothing new.
    Same,
    /// A node not known before, or a new incarnation of one (it
    /// restarted: what it held before is gone).
    Joined,
}

/// The other nodes, from their heartbeats.
#[derive(Debug, Default)]
pub struct Nodes {
    nodes: HashMap<u8, NodeInfo>,
}

impl Nodes {
    pub fn heard(&mut self, node: u8, info: NodeInfo) -> NodeChange {
        match self.nodes.insert(node, info) {
            Some(old) if old.incarnation == info.incarnation => NodeChange::Same,
            _ => NodeChange::Joined,
        }
    }

    /// Nodes silent for `timeout_ms`: removed and returned.
    pub fn expire(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<u8> {
        let mut dead = Vec::new();
        self.nodes.retain(|node, info| {
            let alive = now_ms.saturating_sub(info.last_heard_ms) < timeout_ms;
            if !alive {
                dead.push(*node);
            }
            alive
        });
        dead
    }

    /// Live nodes as a bitmask.
    pub fn mask(&self) -> u64 {
        self.nodes.keys().fold(0, |mask, node| mask | 1u64 << node)
    }

    /// The incarnation heard last from `node`, if it is alive.
    pub fn incarnation(&self, node: u8) -> Option<u64> {
        self.nodes.get(&node).map(|info| info.incarnation)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u8, &NodeInfo)> {
        self.nodes.iter().map(|(node, info)| (*node, info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversations_live_in_the_im_partition_while_the_im_layer_runs() {
        for conv in ["dm:abc", "grp:xyz"] {
            assert_eq!(stream_partition(conv, 8, Some(5)), 5);
            assert_eq!(stream_partition(conv, 8, None), partition_of(conv, 8));
        }
        let inbox = "user:bob";
        assert_eq!(stream_partition(inbox, 8, Some(5)), partition_of(inbox, 8));
    }

    #[test]
    fn the_hash_is_pinned() {
        // Changing these moves every stream to another partition and every
        // channel to another subject: data written before is lost to reads.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"user:alice"), fnv1a64("user:alice".as_bytes()));
        assert_eq!(partition_of("anything", 1), 0);
        assert_eq!(bucket_of("a", 16), (0xaf63_dc4c_8601_ec8cu64 & 15) as u32);
        assert_eq!(partition_of("a", 3), (0xaf63_dc4c_8601_ec8cu64 % 3) as u32);
    }

    #[test]
    fn the_settings_hash_sees_what_must_agree_and_only_that() {
        let config = crate::config::Config::test_min();
        let mut other = config.clone();
        assert_eq!(settings_hash(&config), settings_hash(&other));
        other.server.shutdown_grace = std::time::Duration::from_secs(9);
        assert_eq!(
            settings_hash(&config),
            settings_hash(&other),
            "a node's own key"
        );
        other.cluster.stores = 3;
        assert_ne!(settings_hash(&config), settings_hash(&other));
        let mut other = config.clone();
        other.namespaces[0].history = !other.namespaces[0].history;
        assert_ne!(settings_hash(&config), settings_hash(&other));
    }

    #[test]
    fn streams_spread_over_partitions() {
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[partition_of(&format!("user:{i}"), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }

    #[test]
    fn a_bucket_is_subscribed_once_and_released_after_the_linger() {
        let mut buckets = Buckets::default();
        assert_eq!(buckets.set("a", 3, true), Some(BucketAction::Subscribe(3)));
        assert_eq!(buckets.set("b", 3, true), None);
        assert_eq!(buckets.set("a", 3, true), None, "idempotent");
        assert_eq!(buckets.set("a", 3, false), None);
        assert_eq!(buckets.set("b", 3, false), None);
        assert_eq!(buckets.expire(1000), vec![], "the linger starts now");
        assert_eq!(buckets.expire(1000 + BUCKET_LINGER_MS - 1), vec![]);
        assert_eq!(
            buckets.expire(1000 + BUCKET_LINGER_MS),
            vec![BucketAction::Unsubscribe(3)]
        );
        assert_eq!(buckets.subscribed(), 0);
        assert_eq!(buckets.set("a", 3, true), Some(BucketAction::Subscribe(3)));
    }

    #[test]
    fn a_channel_back_within_the_linger_keeps_the_subscription() {
        let mut buckets = Buckets::default();
        buckets.set("a", 7, true);
        buckets.set("a", 7, false);
        assert_eq!(buckets.expire(0), vec![]);
        assert_eq!(buckets.set("a", 7, true), None, "still subscribed");
        assert_eq!(buckets.expire(10 * BUCKET_LINGER_MS), vec![]);
        assert_eq!(buckets.subscribed(), 1);
    }

    #[test]
    fn the_directory_forgets_a_dead_node_only() {
        let mut directory = Directory::default();
        directory.set("alice", 1, true);
        directory.set("alice", 2, true);
        directory.set("bob", 2, true);
        assert_eq!(directory.nodes("alice"), 0b110);
        let mut forgotten = directory.forget_node(2);
        forgotten.sort();
        assert_eq!(forgotten, vec!["alice".into(), "bob".into()]);
        assert_eq!(directory.nodes("alice"), 0b010);
        assert_eq!(directory.nodes("bob"), 0);
        assert_eq!(directory.users(), 1);
        directory.set("alice", 1, false);
        assert_eq!(directory.users(), 0);
    }

    #[test]
    fn nodes_expire_after_the_timeout_and_a_restart_is_a_join() {
        let mut nodes = Nodes::default();
        let info = |incarnation, at| NodeInfo {
            incarnation,
            last_heard_ms: at,
            draining: false,
            owns_store: true,
            connections: 0,
        };
        assert_eq!(nodes.heard(1, info(10, 0)), NodeChange::Joined);
        assert_eq!(nodes.heard(1, info(10, 900)), NodeChange::Same);
        assert_eq!(nodes.heard(2, info(20, 1000)), NodeChange::Joined);
        assert_eq!(nodes.expire(5899, 5000), Vec::<u8>::new());
        assert_eq!(nodes.expire(5900, 5000), vec![1]);
        assert_eq!(nodes.mask(), 0b100);
        assert_eq!(nodes.heard(2, info(21, 5901)), NodeChange::Joined);
    }
}
