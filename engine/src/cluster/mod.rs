//! The cluster: several engine processes, on one host or many, acting as
//! one system through a NATS server (docs/cluster.md).
//!
//! Each process runs one more thread, `ringcast-cluster`: a tokio
//! current-thread runtime with the NATS client (async-nats), the only
//! place that talks to NATS. Everything else reaches it through one
//! bounded queue ([`Outbound`], `try_send`: a shard never waits) and a
//! doorbell; it reaches the shards through its own row of the mesh, like
//! the store's writer does.
//!
//! What crosses between nodes:
//! - publications of live channels, from the node where they were
//!   published, and of durable channels, from the owner of their store
//!   partition after the commit, to the channel's bucket subject
//!   `<prefix>.c.<b>` (`routing::bucket_of`), which the nodes holding
//!   subscribers of a channel in that bucket subscribe;
//! - inbox entries (`user:<id>`), from the partition's owner to the node
//!   subjects `<prefix>.n.<node>` of the nodes its user directory lists;
//! - store requests for a partition another node owns (append, read,
//!   cursors), as NATS request-reply to `<prefix>.s.<p>`
//!   (`crate::partition`);
//! - heartbeats, broadcasts (disconnect a user, server-side subscribe),
//!   and scatter-gather queries (stats, channel presence);
//! - with the IM layer on: every IM store call, to the owner of the IM
//!   partition (`im_wire`, `crate::partition::ImStore`), and from it the
//!   conversation entries and IM events for each node's users, on
//!   `<prefix>.i.<node>` (`thread/im.rs`).

pub mod im_wire;
mod routing;
mod thread;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ringcast_protocol::cluster::{Broadcast, Query, QueryReply, StoreRequest};
use ringcast_protocol::envelope::EncodedPush;
use ringcast_store::{Appended, ReadResult, StoreError, StoredCursor};

use crate::config::Config;
use crate::limits::{CLUSTER_QUEUE_BYTES_MAX, CLUSTER_QUEUE_EVENTS};

pub use routing::{bucket_of, partition_of, stream_partition};

/// What the other threads hand the cluster thread.
#[derive(Debug)]
pub enum Outbound {
    /// A publication of a channel (not an inbox): to the channel's bucket
    /// subject, for the other nodes' subscribers.
    Publish(Arc<EncodedPush>),
    /// A new entry of an inbox this node owns: to the nodes holding
    /// connections of its user.
    UserEntry(Arc<EncodedPush>),
    /// A new entry of a conversation, on the IM partition's owner: to the
    /// nodes holding connections of `users` (a DM's pair, with `pair`;
    /// a group's recipients).
    ImEntry {
        push: Arc<EncodedPush>,
        to: ImRecipients,
    },
    /// An IM event for connections of users on other nodes: routed by the
    /// IM partition's owner (this node, or through it).
    ImEvent(Box<ringcast_protocol::cluster::ImEventWire>),
    /// A channel's node-wide interest changed (its first subscriber on the
    /// node came or its last one went): the thread reads which, now.
    Interest(Box<str>),
    /// The node's first watcher of a user came or its last one went
    /// (`crate::presence::book`): the thread reads which, now.
    Watch(Box<str>),
    /// A request to the owner of store partition `partition`.
    Store {
        partition: u32,
        request: StoreRequest,
        reply: ReplyTo,
    },
    /// To every node (this one acts on its own connections itself).
    Broadcast(Broadcast),
    /// To every live node but this one; the answers that came in time.
    Query {
        query: Query,
        reply: futures_channel::oneshot::Sender<QueryAnswers>,
    },
    /// Which live nodes hold connections of `user`, asked of the owner of
    /// its inbox's partition. With `barrier`, this node's registration of
    /// the user goes out first, so the answer says the owner has it.
    UserNodes {
        user: String,
        /// The partition to ask (`None`: the user's inbox's).
        partition: Option<u32>,
        barrier: bool,
        reply: futures_channel::oneshot::Sender<Result<Vec<u8>, StoreError>>,
    },
}

/// Who a conversation entry goes to, as the owner's sink has it (shared,
/// not copied: the cluster thread reads the users it routes).
#[derive(Debug, Clone)]
pub enum ImRecipients {
    Pair(Arc<crate::im::DmPair>),
    Group(Arc<crate::im::GroupRecipients>),
}

/// Where the answer to a forwarded store request goes.
pub enum ReplyTo {
    Appended(futures_channel::oneshot::Sender<Result<Appended, StoreError>>),
    Read(futures_channel::oneshot::Sender<Result<ReadResult, StoreError>>),
    Cursor(futures_channel::oneshot::Sender<Result<Option<StoredCursor>, StoreError>>),
    /// A shard's tagged request (`crate::streams::request_tag`): the
    /// answer goes to the shard's queue of store answers, as the store's
    /// own answers do.
    Tagged {
        tag: u64,
        kind: TaggedKind,
    },
    /// An IM call's answer, to the caller's future (`crate::partition::im`).
    Im(Box<dyn FnOnce(Result<im_wire::ImAnswer, StoreError>) + Send>),
    /// A shard's tagged IM call: `wrap` (given the partition) makes the
    /// store answer the shard expects.
    ImTagged {
        tag: u64,
        wrap: fn(u32, Result<im_wire::ImAnswer, StoreError>) -> ringcast_store::Answer,
    },
}

impl std::fmt::Debug for ReplyTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            ReplyTo::Appended(_) => "Appended",
            ReplyTo::Read(_) => "Read",
            ReplyTo::Cursor(_) => "Cursor",
            ReplyTo::Tagged { .. } => "Tagged",
            ReplyTo::Im(_) => "Im",
            ReplyTo::ImTagged { .. } => "ImTagged",
        };
        f.write_str(name)
    }
}

/// Which `ringcast_store::Answer` a tagged request expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaggedKind {
    Appended,
    Cursor,
}

/// The answers of a scatter-gather query: one per node that answered in
/// time, and the live nodes that did not.
#[derive(Debug, Default)]
pub struct QueryAnswers {
    pub replies: Vec<QueryReply>,
    pub missing: Vec<u8>,
}

/// The cluster as the other threads see it. Cheap to read from any thread.
pub struct Cluster {
    node: u8,
    incarnation: u64,
    stores: u32,
    /// The IM partition, when the IM layer runs.
    im_partition: Option<u32>,
    channel_buckets: u32,
    queue: crossbeam_channel::Sender<Outbound>,
    doorbell: Arc<tokio::sync::Notify>,
    /// Set at shutdown: the thread sends what is queued and ends.
    stopping: AtomicBool,
    pub state: Arc<ClusterState>,
}

/// What `/health`, `/api/stats` and the metrics read.
#[derive(Debug, Default)]
pub struct ClusterState {
    /// The NATS connection is up.
    pub connected: AtomicBool,
    /// When `connected` last changed (unix ms).
    pub changed_ms: AtomicU64,
    /// Another process heartbeats with this node's id.
    pub conflict: AtomicBool,
    /// The node was told to drain (`/api/drain`).
    pub draining: AtomicBool,
    /// Live nodes besides this one, as the heartbeats say (a bitmask of
    /// node ids).
    pub live_nodes: AtomicU64,
    /// Publications sent to NATS (each push in a batch counts).
    pub pushes_out: AtomicU64,
    /// NATS messages and payload bytes published.
    pub messages_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Publications received from other nodes.
    pub pushes_in: AtomicU64,
    /// Received publications no local subscriber wanted (the bucket's
    /// other channels).
    pub pushes_unwanted: AtomicU64,
    /// Publications for other nodes dropped: NATS was cut off, or the
    /// queue to the cluster thread was full.
    pub dropped: AtomicU64,
    /// Store requests forwarded to other nodes, and those that failed.
    pub requests: AtomicU64,
    pub request_errors: AtomicU64,
    /// Times the NATS connection came back.
    pub reconnects: AtomicU64,
    /// A publication of a durable stream for other nodes was dropped
    /// (queue full, too large, NATS refused it): the thread tells every
    /// node to recover its durable subscribers.
    pub durable_lost: AtomicBool,
    /// Times a subscription of this node overflowed in the NATS client
    /// (messages lost on the way in).
    pub slow_consumer: AtomicU64,
    /// An interest or watch change was dropped (queue full): the next
    /// resync sends every user and watch set to the owners again.
    pub resync: AtomicBool,
    /// Bytes of the publications waiting in the queue to the cluster
    /// thread (`CLUSTER_QUEUE_BYTES_MAX`).
    pub queued_bytes: std::sync::atomic::AtomicUsize,
    /// The largest stored publication that can cross to other nodes in
    /// one NATS message (`max_payload` less the framing), as the server
    /// said at connect; 0 until then (the default `max_payload` holds).
    pub push_bytes_max: std::sync::atomic::AtomicUsize,
    /// Channel buckets subscribed on NATS now.
    pub buckets_subscribed: AtomicU64,
    /// Users of this node's partition the directory lists on other nodes.
    pub directory_users: AtomicU64,
}

/// NATS's default `max_payload` (1 MiB) less the framing of a batch:
/// what crosses before the server said its own.
const DEFAULT_PUSH_BYTES_MAX: usize = 1024 * 1024 - thread::BATCH_FRAMING_BYTES;

/// The queue to the cluster thread is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// The cluster thread could not start.
#[derive(Debug, thiserror::Error)]
#[error("cluster: cannot start the cluster thread: {0}")]
pub struct ClusterStartError(String);

impl Cluster {
    /// The cluster handle and what its thread needs, when `cluster.nats_url`
    /// is set; the thread starts with [`thread::spawn`] once the mesh and
    /// the store exist.
    pub fn new(config: &Config) -> Option<(Arc<Cluster>, ThreadParts)> {
        if config.cluster.nats_url.is_empty() {
            return None;
        }
        let (queue, receiver) = crossbeam_channel::bounded(CLUSTER_QUEUE_EVENTS);
        let doorbell = Arc::new(tokio::sync::Notify::new());
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| {
                u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
            });
        let cluster = Arc::new(Cluster {
            node: config.server.node_id.get(),
            incarnation,
            stores: config.cluster.stores,
            im_partition: config.im.enabled.then_some(config.cluster.im_partition),
            channel_buckets: config.cluster.channel_buckets,
            queue,
            doorbell: doorbell.clone(),
            stopping: AtomicBool::new(false),
            state: Arc::new(ClusterState::default()),
        });
        Some((cluster, ThreadParts { receiver, doorbell }))
    }

    pub fn node(&self) -> u8 {
        self.node
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The partition `stream` lives in, when another node owns it.
    pub fn remote_partition(&self, stream: &str) -> Option<u32> {
        let partition = stream_partition(stream, self.stores, self.im_partition);
        (partition != u32::from(self.node)).then_some(partition)
    }

    /// The IM partition, when the IM layer runs and another node owns it.
    pub fn remote_im_partition(&self) -> Option<u32> {
        self.im_partition
            .filter(|partition| *partition != u32::from(self.node))
    }

    /// Hands a conversation entry stored here (the IM partition's owner)
    /// to the other nodes holding its recipients' connections, after the
    /// commit, in commit order.
    pub fn im_entry(&self, push: &Arc<EncodedPush>, to: ImRecipients) {
        self.send_live(Outbound::ImEntry {
            push: push.clone(),
            to,
        });
    }

    /// The IM partition, when the IM layer runs.
    pub fn im_partition(&self) -> Option<u32> {
        self.im_partition
    }

    pub fn stores(&self) -> u32 {
        self.stores
    }

    /// The largest stored publication that can cross to other nodes.
    pub fn push_bytes_max(&self) -> usize {
        match self.state.push_bytes_max.load(Ordering::Relaxed) {
            0 => DEFAULT_PUSH_BYTES_MAX,
            known => known,
        }
    }

    /// Whether this node owns a store partition.
    pub fn owns_partition(&self) -> bool {
        u32::from(self.node) < self.stores
    }

    pub fn channel_buckets(&self) -> u32 {
        self.channel_buckets
    }

    /// Asks the thread to end (after the shards, before the store closes:
    /// it serves the partition's requests until then).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.doorbell.notify_one();
    }

    /// Hands `event` to the cluster thread; `Err` when the queue is full
    /// (the thread is far behind or NATS is slow) and the event was not
    /// taken.
    pub fn send(&self, event: Outbound) -> Result<(), QueueFull> {
        match self.queue.try_send(event) {
            Ok(()) => {
                self.doorbell.notify_one();
                Ok(())
            }
            Err(_) => Err(QueueFull),
        }
    }

    /// Publications for other nodes: a full queue drops one, counted; a
    /// dropped entry of a durable stream makes every node recover its
    /// durable subscribers (`ClusterState::durable_lost`).
    pub fn send_live(&self, event: Outbound) {
        let (durable, bytes) = match &event {
            Outbound::Publish(push) | Outbound::UserEntry(push) => {
                (push.envelope().offset.to_native() > 0, push.len())
            }
            Outbound::ImEntry { push, .. } => (true, push.len()),
            _ => (false, 0),
        };
        // Bounded in bytes as well as in events: once the queue holds the
        // only reference to what it carries, 65,536 large publications
        // would be gigabytes.
        let queued = self.state.queued_bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
        let over = queued > CLUSTER_QUEUE_BYTES_MAX;
        if over || self.send(event).is_err() {
            self.state.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.state.dropped.fetch_add(1, Ordering::Relaxed);
            if durable {
                self.state.durable_lost.store(true, Ordering::Release);
            }
        }
    }

    /// The thread took `event` from the queue: its bytes leave the budget.
    fn taken(&self, event: &Outbound) {
        if let Outbound::Publish(push)
        | Outbound::UserEntry(push)
        | Outbound::ImEntry { push, .. } = event
        {
            self.state
                .queued_bytes
                .fetch_sub(push.len(), Ordering::AcqRel);
        }
    }

    /// Forwards a store request; a full queue refuses it at once.
    pub fn forward(
        &self,
        partition: u32,
        request: StoreRequest,
        reply: ReplyTo,
    ) -> Result<(), StoreError> {
        let refused = |reason: &str| StoreError::Remote {
            partition,
            reason: reason.to_owned(),
            tag: ringcast_store::ErrorSource::Load,
        };
        if !self.state.connected.load(Ordering::Acquire) {
            return Err(StoreError::Remote {
                partition,
                reason: "the node is cut off from NATS; retry shortly".into(),
                tag: ringcast_store::ErrorSource::Resource,
            });
        }
        self.send(Outbound::Store {
            partition,
            request,
            reply,
        })
        .map_err(|_| refused("the queue to the cluster thread is full; retry shortly"))
    }

    /// Tells the cluster thread that the node's watching of `user` changed.
    pub fn watch_changed(&self, user: &str) {
        if self.send(Outbound::Watch(user.into())).is_err() {
            self.resync_needed();
        }
    }

    /// A change of interest or watches could not be queued: the thread
    /// sends every set again at its next resync (logged once per episode).
    fn resync_needed(&self) {
        self.state.dropped.fetch_add(1, Ordering::Relaxed);
        if !self.state.resync.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                "cluster queue full: interest and watch changes wait for the next resync \
                 (at most 10 s)"
            );
        }
    }

    /// Tells the cluster thread that `channel`'s node-wide interest
    /// changed. Never dropped silently: a full queue is logged, and the
    /// thread's periodic resync repairs it.
    pub fn interest_changed(&self, channel: &str) {
        if self.send(Outbound::Interest(channel.into())).is_err() {
            self.resync_needed();
        }
    }
}

impl Cluster {
    /// The cluster's part of `/api/stats` and `/health`.
    pub fn stats_json(&self) -> serde_json::Value {
        let state = &self.state;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let live: Vec<u8> =
            crate::interest::shard_indexes(state.live_nodes.load(Ordering::Acquire))
                .map(|node| node as u8)
                .collect();
        serde_json::json!({
            "state": self.state_name(),
            "since_ms": get(&state.changed_ms),
            "incarnation": self.incarnation.to_string(),
            "owns_partition": self.owns_partition(),
            "stores": self.stores,
            "live_nodes": live,
            "pushes_out": get(&state.pushes_out),
            "messages_out": get(&state.messages_out),
            "bytes_out": get(&state.bytes_out),
            "pushes_in": get(&state.pushes_in),
            "pushes_unwanted": get(&state.pushes_unwanted),
            "dropped": get(&state.dropped),
            "requests": get(&state.requests),
            "request_errors": get(&state.request_errors),
            "reconnects": get(&state.reconnects),
            "slow_consumer": get(&state.slow_consumer),
            "buckets_subscribed": get(&state.buckets_subscribed),
            "directory_users": get(&state.directory_users),
        })
    }

    /// `connected`, `disconnected`, `draining` or `conflict` (another
    /// process uses this node's id).
    pub fn state_name(&self) -> &'static str {
        if self.state.conflict.load(Ordering::Acquire) {
            "conflict"
        } else if !self.state.connected.load(Ordering::Acquire) {
            "disconnected"
        } else if self.state.draining.load(Ordering::Acquire) {
            "draining"
        } else {
            "connected"
        }
    }
}

/// A live (not stored) publication made on this node: to the other nodes'
/// subscribers through its channel's bucket. Stored ones go from their
/// partition's owner, after the commit (`crate::streams::StoreSink`).
pub fn publish_live(shared: &crate::engine::Shared, publication: &crate::publication::Publication) {
    if let Some(cluster) = &shared.cluster {
        debug_assert_eq!(
            publication.offset(),
            0,
            "a stored publication is its owner's to send"
        );
        cluster.send_live(Outbound::Publish(publication.push.clone()));
    }
}

/// Whether some other node holds a connection of each of `users` (asked
/// of each user's inbox owner); `None` for a user whose owner did not
/// answer. Empty on a single node.
pub async fn online_elsewhere(shared: &crate::engine::Shared, users: &[&str]) -> Vec<Option<bool>> {
    let Some(cluster) = &shared.cluster else {
        return Vec::new();
    };
    let mut receivers = Vec::with_capacity(users.len());
    for user in users {
        let (reply, receiver) = futures_channel::oneshot::channel();
        let sent = cluster
            .send(Outbound::UserNodes {
                user: (*user).to_owned(),
                partition: None,
                barrier: false,
                reply,
            })
            .is_ok();
        receivers.push(sent.then_some(receiver));
    }
    let me = cluster.node();
    let mut online = Vec::with_capacity(users.len());
    for receiver in receivers {
        let nodes = match receiver {
            Some(receiver) => receiver.await.ok().and_then(Result::ok),
            None => None,
        };
        online.push(nodes.map(|nodes| nodes.iter().any(|node| *node != me)));
    }
    online
}

/// Resolves once the owners of `user`'s inbox partition (when
/// `inbox`) and of the IM partition (when the IM layer runs) have this
/// node's registration of the user, or could not be asked; `None` where
/// there is nothing to wait for: no cluster, the partitions are this
/// node's, or the queue to the cluster thread is full (the registration
/// waits for its resync then too).
pub fn registered(
    shared: &crate::engine::Shared,
    user: &str,
    inbox: bool,
) -> Option<impl std::future::Future<Output = ()> + 'static> {
    let cluster = shared.cluster.as_deref()?;
    let mut partitions = Vec::with_capacity(2);
    if inbox {
        if let Some(partition) = cluster.remote_partition(&crate::channels::personal_channel(user))
        {
            partitions.push(partition);
        }
    }
    if let Some(im) = cluster.remote_im_partition() {
        if !partitions.contains(&im) {
            partitions.push(im);
        }
    }
    let mut receivers = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let (reply, receiver) = futures_channel::oneshot::channel();
        let event = Outbound::UserNodes {
            user: user.to_owned(),
            partition: Some(partition),
            barrier: true,
            reply,
        };
        if cluster.send(event).is_ok() {
            receivers.push(receiver);
        }
    }
    if receivers.is_empty() {
        return None;
    }
    Some(async move {
        for receiver in receivers {
            let _ = receiver.await;
        }
    })
}

/// Hands an IM event, delivered to this node's connections, to the other
/// nodes holding connections of `users` (but `skip_user`'s; "" for none).
pub fn im_event(
    shared: &crate::engine::Shared,
    users: impl IntoIterator<Item = String>,
    skip_user: &str,
    event: &ringcast_protocol::client::ImEvent,
) {
    let Some(cluster) = &shared.cluster else {
        return;
    };
    if cluster.im_partition.is_none() {
        return;
    }
    let wire = ringcast_protocol::cluster::ImEventWire {
        users: users.into_iter().collect(),
        skip_user: skip_user.to_owned(),
        origin: cluster.node,
        event: event.clone(),
    };
    if wire.users.is_empty() {
        return;
    }
    if cluster.send(Outbound::ImEvent(Box::new(wire))).is_err() {
        cluster.state.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// The receiving end of the queue, for the thread.
pub struct ThreadParts {
    receiver: crossbeam_channel::Receiver<Outbound>,
    doorbell: Arc<tokio::sync::Notify>,
}

pub use thread::spawn;

#[cfg(test)]
mod tests {
    use super::*;
    use ringcast_protocol::envelope::Envelope;

    fn push(offset: u64, bytes: usize) -> Arc<EncodedPush> {
        let mut push = EncodedPush::encode(&Envelope {
            id: 1,
            offset: 0,
            epoch: 0,
            channel: "news:x".into(),
            sender: String::new(),
            time_ms: 1,
            data_is_json: false,
            data: vec![7; bytes],
        });
        push.stamp(1, offset, 1, 1);
        Arc::new(push)
    }

    #[test]
    fn the_queue_to_the_thread_is_bounded_in_bytes_and_a_stored_loss_is_said() {
        let mut config = Config::test_min();
        config.cluster.nats_url = "nats://127.0.0.1:4222".into();
        let (cluster, parts) = Cluster::new(&config).expect("a cluster");
        let big = push(0, 1024 * 1024);
        let fits = CLUSTER_QUEUE_BYTES_MAX / big.len();
        for _ in 0..fits {
            cluster.send_live(Outbound::Publish(big.clone()));
        }
        assert_eq!(cluster.state.dropped.load(Ordering::Relaxed), 0);
        cluster.send_live(Outbound::Publish(big.clone()));
        assert_eq!(
            cluster.state.dropped.load(Ordering::Relaxed),
            1,
            "over the bytes"
        );
        assert!(
            !cluster.state.durable_lost.load(Ordering::Relaxed),
            "a live one"
        );
        cluster.send_live(Outbound::Publish(push(5, 1024 * 1024)));
        assert!(
            cluster.state.durable_lost.load(Ordering::Relaxed),
            "a stored one is said"
        );
        // The thread taking events gives their bytes back.
        let event = parts.receiver.try_recv().expect("queued");
        cluster.taken(&event);
        cluster.send_live(Outbound::Publish(big.clone()));
        assert_eq!(
            cluster.state.dropped.load(Ordering::Relaxed),
            2,
            "room for one"
        );
    }
}
