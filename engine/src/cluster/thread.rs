//! The cluster thread: a tokio current-thread runtime running the NATS
//! client, the only code that talks to NATS (see the module docs of
//! `crate::cluster`).
//!
//! One task (`Node::run`) owns all the state: it takes the other threads'
//! events from the queue, the messages of every subscription (each
//! subscription's own small task forwards them), and a tick. What must
//! wait on NATS (a forwarded request's answer, a query's answers, a
//! store write before a reply) runs in a task of its own, so the loop
//! never waits on a round trip. Order matters in two places and holds
//! because everything leaves through one NATS connection in the order
//! the loop hands it over: a bucket's SUB goes out before the read
//! request of the subscriber that caused it, and a user's registration
//! with its inbox's owner before the inbox read (docs/cluster.md,
//! "Barriers").

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use ringcast_protocol::close::CloseCode;
use ringcast_protocol::cluster::{
    decode, encode, read_push_batch, AppendWire, Broadcast, Heartbeat, PushBatch, Query,
    QueryReply, ReadWire, StoreReply, StoreRequest, UserChange,
};
use ringcast_protocol::envelope::EncodedPush;
use ringcast_store::{Answer, StoreError};

use super::routing::{BucketAction, Buckets, Directory, NodeChange, NodeInfo, Nodes};
use super::wire;
use super::{
    bucket_of, partition_of, stream_partition, Cluster, ClusterStartError, Outbound, QueryAnswers,
};
use super::{ReplyTo, TaggedKind, ThreadParts};
use crate::engine::Shared;
use crate::interest::shard_indexes;
use crate::mesh::{MeshSender, ShardEvent, StoreAnswer};
use crate::publication::Publication;

mod forward;
mod im;
mod liveness;
mod presence;
mod serve;

/// Events the loop takes from the queue per pass before it sends what
/// they produced.
const OUTBOUND_PASS_MAX: usize = 4096;
/// Messages waiting between the subscriptions' tasks and the loop.
const INBOUND_QUEUE: usize = 4096;
/// The loop's tick: heartbeats, expiries, the connection's state.
const TICK: Duration = Duration::from_millis(100);
/// Channel interest is read again from `Interest` this often, repairing a
/// change the full queue could not carry.
const RESYNC_EVERY_MS: u64 = 10_000;
/// Least time between two cuts of the durable subscribers after lost
/// publications (several nodes reconnecting at once cut once).
const CUT_INTERVAL_MS: u64 = 1000;
/// Room kept in a NATS message for the batch's own framing.
pub(super) const BATCH_FRAMING_BYTES: usize = 1024;
/// Longest the loop waits on the NATS client for one command to be taken
/// (a subscribe, a publish): it takes none while it reconnects.
const CLIENT_CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Node ids: the message id's node field. Every id read from NATS is
/// checked against it before it indexes a bitmask.
const NODES_MAX: usize = ringcast_protocol::envelope::MESSAGE_ID_NODE_COUNT as usize;
const _: () = assert!(NODES_MAX <= 64, "node sets are u64 bitmasks");

/// How long the thread waits at shutdown for what it queued to be
/// written to NATS.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// The NATS client's events waiting for the loop.
const EVENTS_QUEUE: usize = 64;
/// How long a node waits for its shards to answer a presence query.
const SHARD_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a received message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Pushes,
    Heartbeat,
    Broadcast,
    Query,
    Store,
    Presence,
    Im,
}

/// Starts the cluster thread. Returns once the thread runs; the NATS
/// connection is made (and remade) in the background.
pub fn spawn(
    cluster: Arc<Cluster>,
    parts: ThreadParts,
    shared: Arc<Shared>,
    sender: MeshSender,
) -> Result<std::thread::JoinHandle<()>, ClusterStartError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| ClusterStartError(error.to_string()))?;
    std::thread::Builder::new()
        .name("ringcast-cluster".into())
        .spawn(move || {
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, run(cluster, parts, shared, sender));
        })
        .map_err(|error| ClusterStartError(error.to_string()))
}

async fn run(cluster: Arc<Cluster>, parts: ThreadParts, shared: Arc<Shared>, sender: MeshSender) {
    let config = &shared.config.cluster;
    let (inbound_tx, inbound_rx) = tokio::sync::mpsc::channel(INBOUND_QUEUE);
    // The client's events (a subscription overflowing above all). They
    // are hints: the client drops them when this queue is full, and the
    // tick reads the connection's state and its count of connects anyway.
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(EVENTS_QUEUE);
    let options = async_nats::ConnectOptions::new()
        .event_callback(move |event| {
            let events = events_tx.clone();
            async move {
                let _ = events.try_send(event);
            }
        })
        .name(format!("ringcast-{}", cluster.node))
        .no_echo()
        // Two unanswered pings drop the connection: a dead link shows in
        // about two heartbeats, not the default two minutes.
        .ping_interval(config.heartbeat)
        .connection_timeout(Duration::from_secs(2))
        .retry_on_initial_connect()
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64).saturating_mul(100).min(1000))
        })
        .client_capacity(crate::limits::CLUSTER_CLIENT_COMMANDS)
        .subscription_capacity(crate::limits::CLUSTER_SUBSCRIPTION_MESSAGES);
    let client = match options.connect(config.nats_url.as_str()).await {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, url = %config.nats_url, "cluster: cannot use the NATS URL");
            return;
        }
    };
    let prefix = config.subject_prefix.clone();
    let mut node = Node {
        subjects: Subjects {
            prefix: prefix.clone(),
        },
        stores: config.stores,
        buckets_n: config.channel_buckets,
        request_timeout: config.request_timeout,
        heartbeat_ms: config.heartbeat.as_millis() as u64,
        node_timeout_ms: config.node_timeout.as_millis() as u64,
        cluster,
        shared: shared.clone(),
        sender: Arc::new(sender),
        client,
        inbound_tx,
        buckets: Buckets::default(),
        bucket_tasks: HashMap::new(),
        directory: Directory::default(),
        nodes: Nodes::default(),
        batches: HashMap::new(),
        im_batches: HashMap::new(),
        im_relayed: Vec::new(),
        im_order: std::rc::Rc::new(std::cell::RefCell::new(im::ImOrder::new(
            config.request_timeout,
        ))),
        users: HashMap::new(),
        watches: HashMap::new(),
        watchers: HashMap::new(),
        presence_out: HashMap::new(),
        presence_due: Vec::new(),
        registered: HashMap::new(),
        resend: Vec::new(),
        resend_all: false,
        heartbeat_seq: 0,
        settings: super::routing::settings_hash(&shared.config),
        conflict_heard_ms: 0,
        last_heartbeat_ms: 0,
        last_resync_ms: 0,
        last_cut_ms: 0,
        cut_pending: 0,
        seen: 0,
        users_sent: 0,
        was_connected: false,
        connects_seen: 0,
    };
    node.subscribe_fixed().await;
    node.run(parts, inbound_rx, events_rx).await;
}

struct Subjects {
    prefix: String,
}

impl Subjects {
    fn bucket(&self, bucket: u32) -> String {
        format!("{}.c.{bucket}", self.prefix)
    }
    fn node(&self, node: u8) -> String {
        format!("{}.n.{node}", self.prefix)
    }
    fn store(&self, partition: u32) -> String {
        format!("{}.s.{partition}", self.prefix)
    }
    fn heartbeat(&self) -> String {
        format!("{}.hb", self.prefix)
    }
    fn all(&self) -> String {
        format!("{}.all", self.prefix)
    }
    fn query(&self) -> String {
        format!("{}.q", self.prefix)
    }
    fn watch(&self, node: u8) -> String {
        format!("{}.w.{node}", self.prefix)
    }
    fn im(&self, node: u8) -> String {
        format!("{}.i.{node}", self.prefix)
    }
}

struct Node {
    subjects: Subjects,
    stores: u32,
    buckets_n: u32,
    request_timeout: Duration,
    heartbeat_ms: u64,
    node_timeout_ms: u64,
    cluster: Arc<Cluster>,
    shared: Arc<Shared>,
    /// The cluster's row of the mesh. Shared with the tasks that answer
    /// forwarded requests; all of them run on this one thread, so the
    /// row keeps its single producer.
    sender: Arc<MeshSender>,
    client: async_nats::Client,
    inbound_tx: tokio::sync::mpsc::Sender<(Source, async_nats::Message)>,
    buckets: Buckets,
    bucket_tasks: HashMap<u32, tokio::task::JoinHandle<()>>,
    directory: Directory,
    nodes: Nodes,
    /// Publications per destination subject, sent at the end of a pass.
    batches: HashMap<String, (Vec<Vec<u8>>, usize)>,
    /// On the IM partition's owner: IM entries and events per node, with
    /// their bytes, sent at the end of a pass (`im.rs`).
    im_batches: HashMap<u8, (Vec<ringcast_protocol::cluster::ImItem>, usize)>,
    /// On the IM partition's owner: events other nodes relayed, handed on
    /// at the end of the pass.
    im_relayed: Vec<ringcast_protocol::cluster::ImEventWire>,
    /// Shards' IM writes answered before their entry came (`im.rs`).
    im_order: std::rc::Rc<std::cell::RefCell<im::ImOrder>>,
    /// User registrations per partition, sent before the next request to
    /// that partition and at the end of a pass.
    users: HashMap<u32, Vec<UserChange>>,
    /// Watch registrations per partition, sent at the end of a pass.
    watches: HashMap<u32, Vec<UserChange>>,
    /// The owner's side: which nodes watch each user of this partition.
    watchers: HashMap<Box<str>, u64>,
    /// Presence updates per watching node, sent at the end of a pass.
    presence_out: HashMap<u8, Vec<(String, u64)>>,
    /// Offline deadlines of users last held elsewhere (`presence.rs`).
    presence_due: Vec<(u64, Box<str>)>,
    /// The owner's side: the incarnation each node's registrations come
    /// from. A later one forgets what the earlier life registered; an
    /// earlier one is stale and ignored.
    registered: HashMap<u8, u64>,
    /// Partitions whose owner asked for this node's whole sets again.
    resend: Vec<u32>,
    /// This owner may have lost registrations (a subscription overflowed):
    /// at the next tick it asks every node for its whole sets.
    resend_all: bool,
    heartbeat_seq: u64,
    /// This node's `routing::settings_hash`.
    settings: u64,
    /// When a heartbeat last showed a conflict (this node's id from
    /// another process, or other settings); cleared after
    /// `node_timeout_ms` without one.
    conflict_heard_ms: u64,
    last_heartbeat_ms: u64,
    last_resync_ms: u64,
    last_cut_ms: u64,
    /// Partitions whose durable subscribers are to be cut (`request_cut`).
    cut_pending: u64,
    /// Every node ever heard (a bitmask): a join of one of them is a
    /// return.
    seen: u64,
    /// Partitions whose owner this node has told of a user of its own
    /// (a bitmask): only those can have skipped forwarding to it.
    users_sent: u64,
    was_connected: bool,
    /// The client's count of connections made, as last handled: a larger
    /// count is a reconnect, even one too short for a tick to see it cut.
    connects_seen: u64,
}

impl Node {
    async fn subscribe_fixed(&mut self) {
        let me = self.cluster.node;
        let mut fixed = vec![
            (self.subjects.node(me), Source::Pushes),
            (self.subjects.heartbeat(), Source::Heartbeat),
            (self.subjects.all(), Source::Broadcast),
            (self.subjects.query(), Source::Query),
            (self.subjects.watch(me), Source::Presence),
        ];
        if self.cluster.owns_partition() {
            fixed.push((self.subjects.store(u32::from(me)), Source::Store));
        }
        if self.cluster.im_partition().is_some() {
            fixed.push((self.subjects.im(me), Source::Im));
        }
        for (subject, source) in fixed {
            // Kept for the life of the thread: the task owns the subscriber.
            drop(self.subscribe(subject, source).await);
        }
    }

    /// Subscribes `subject` and forwards its messages to the loop from a
    /// task of its own; aborting the task unsubscribes.
    async fn subscribe(
        &self,
        subject: String,
        source: Source,
    ) -> Option<tokio::task::JoinHandle<()>> {
        // Bounded: while the client reconnects it takes no commands, and
        // the loop must go on (and see a shutdown).
        let subscribed =
            tokio::time::timeout(CLIENT_CALL_TIMEOUT, self.client.subscribe(subject.clone()))
                .await
                .unwrap_or_else(|_| {
                    Err(async_nats::SubscribeError::with_source(
                        async_nats::client::SubscribeErrorKind::Other,
                        "timed out",
                    ))
                });
        match subscribed {
            Ok(mut subscriber) => {
                let tx = self.inbound_tx.clone();
                Some(tokio::task::spawn_local(async move {
                    while let Some(message) = subscriber.next().await {
                        if tx.send((source, message)).await.is_err() {
                            break;
                        }
                    }
                }))
            }
            Err(error) => {
                tracing::error!(%error, subject, "cluster: subscribe failed");
                None
            }
        }
    }

    async fn run(
        &mut self,
        parts: ThreadParts,
        mut inbound: tokio::sync::mpsc::Receiver<(Source, async_nats::Message)>,
        mut events: tokio::sync::mpsc::Receiver<async_nats::Event>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                // The tick first: a steady stream of messages must not
                // starve the heartbeats (the others would take this node
                // for dead) or the reading of the connection's state.
                _ = tick.tick() => self.tick().await,
                Some(event) = events.recv() => self.event(event),
                Some((source, message)) = inbound.recv() => self.inbound(source, message).await,
                () = parts.doorbell.notified() => {}
            }
            if self.cluster.stopping.load(Ordering::Acquire) {
                break;
            }
            let mut taken = 0;
            while taken < OUTBOUND_PASS_MAX {
                let Ok(event) = parts.receiver.try_recv() else {
                    break;
                };
                taken += 1;
                self.cluster.taken(&event);
                self.outbound(event).await;
            }
            if taken == OUTBOUND_PASS_MAX {
                // More is waiting: come back without waiting for a bell.
                parts.doorbell.notify_one();
            }
            self.flush().await;
        }
        // Whatever is queued is sent before the thread ends, unless NATS
        // is away: a flush waits for the connection, and shutdown must not.
        let _ = tokio::time::timeout(FINAL_FLUSH_TIMEOUT, self.client.flush()).await;
        tracing::info!("cluster: stopped");
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    // ---- what the other threads hand over -------------------------------

    async fn outbound(&mut self, event: Outbound) {
        match event {
            Outbound::Publish(push) => {
                let bucket = bucket_of(push.envelope().channel.as_str(), self.buckets_n);
                let subject = self.subjects.bucket(bucket);
                self.batch(subject, &push).await;
            }
            Outbound::UserEntry(push) => {
                let channel = push.envelope().channel.as_str();
                let Some(user) = crate::outbox::inbox_user(channel) else {
                    return;
                };
                // Every node the directory lists: a node found dead has
                // left it already, and one whose heartbeat has not been
                // heard yet registered, so it is alive.
                let mask = self.directory.nodes(user);
                for node in shard_indexes(mask) {
                    let subject = self.subjects.node(node as u8);
                    self.batch(subject, &push).await;
                }
            }
            Outbound::ImEntry { push, to } => self.im_entry(&push, &to).await,
            Outbound::ImEvent(event) => self.im_event(*event).await,
            Outbound::Interest(channel) => self.interest(&channel).await,
            Outbound::Watch(user) => self.watch_event(&user),
            Outbound::Store {
                partition,
                request,
                reply,
            } => {
                // The barrier, whichever shard made the node-wide
                // transition: the registration or bucket SUB of the stream
                // read goes out before the read (`interest` reads the
                // truth, so doing it twice is harmless).
                if let StoreRequest::Read(ReadWire { stream, .. })
                | StoreRequest::GetCursor { stream, .. } = &request
                {
                    let stream = stream.clone();
                    self.interest(&stream).await;
                }
                self.flush_users(partition).await;
                self.request(partition, request, reply);
            }
            Outbound::Broadcast(broadcast) => {
                let subject = self.subjects.all();
                self.publish(subject, Bytes::from(encode(&broadcast).into_vec()))
                    .await;
            }
            Outbound::Query { query, reply } => self.query(query, reply),
            Outbound::UserNodes {
                user,
                partition,
                barrier,
                reply,
            } => self.user_nodes(user, partition, barrier, reply).await,
        }
    }

    /// A channel's interest on this node changed: a user's registration
    /// with its inbox's owner, or a bucket subscription.
    async fn interest(&mut self, channel: &str) {
        let live = self.shared.interest.shards(channel) != 0;
        if let Some(user) = crate::outbox::inbox_user(channel) {
            let me = u32::from(self.cluster.node);
            let partition = partition_of(channel, self.stores);
            if partition != me {
                self.users.entry(partition).or_default().push(UserChange {
                    user: user.to_owned(),
                    present: live,
                });
            } else {
                // A user of this partition came or went here.
                self.notify_watchers(user);
            }
            // The IM partition's owner routes conversations by every user.
            if let Some(im) = self.cluster.im_partition() {
                if im != partition && im != me {
                    self.users.entry(im).or_default().push(UserChange {
                        user: user.to_owned(),
                        present: live,
                    });
                }
            }
            return;
        }
        let bucket = bucket_of(channel, self.buckets_n);
        if let Some(BucketAction::Subscribe(bucket)) = self.buckets.set(channel, bucket, live) {
            self.subscribe_bucket(bucket).await;
        }
    }

    /// Subscribes `bucket` now if NATS is up; otherwise it stays wanted
    /// (in `Buckets`) and is subscribed on the connect.
    async fn subscribe_bucket(&mut self, bucket: u32) {
        if self.bucket_tasks.contains_key(&bucket) || !self.connected() {
            return;
        }
        let subject = self.subjects.bucket(bucket);
        if let Some(task) = self.subscribe(subject, Source::Pushes).await {
            self.bucket_tasks.insert(bucket, task);
        }
    }

    /// Counts a publication for other nodes that was not sent; one of a
    /// durable stream makes every node recover its durable subscribers.
    fn lost(&self, push_durable: bool, n: u64) {
        let state = &self.cluster.state;
        state.dropped.fetch_add(n, Ordering::Relaxed);
        if push_durable {
            state.durable_lost.store(true, Ordering::Release);
        }
    }

    async fn batch(&mut self, subject: String, push: &EncodedPush) {
        let durable = push.envelope().offset.to_native() > 0;
        if !self.connected() {
            self.lost(durable, 1);
            return;
        }
        let limit = self
            .client
            .max_payload()
            .saturating_sub(BATCH_FRAMING_BYTES);
        if push.len() > limit {
            self.lost(durable, 1);
            tracing::warn!(
                bytes = push.len(),
                max_payload = limit,
                "cluster: a publication over NATS's max_payload is not sent to other nodes"
            );
            return;
        }
        let full = self
            .batches
            .get(&subject)
            .is_some_and(|(_, bytes)| bytes + push.len() > limit);
        if full {
            if let Some((pushes, _)) = self.batches.remove(&subject) {
                self.send_batch(subject.clone(), pushes).await;
            }
        }
        let (pushes, bytes) = self.batches.entry(subject).or_default();
        pushes.push(push.as_bytes().to_vec());
        *bytes += push.len() + 8;
    }

    async fn send_batch(&mut self, subject: String, pushes: Vec<Vec<u8>>) {
        let n = pushes.len() as u64;
        // Only owners' sinks send stored entries, and a batch of a node
        // subject holds inbox entries: count any loss as durable.
        let durable = !subject.contains(".c.") || self.cluster.owns_partition();
        let batch = PushBatch {
            node: self.cluster.node,
            pushes,
        };
        let payload = Bytes::from(encode(&batch).into_vec());
        if self.publish(subject, payload).await {
            self.cluster
                .state
                .pushes_out
                .fetch_add(n, Ordering::Relaxed);
        } else {
            self.lost(durable, n);
        }
    }

    /// Publishes one message; `false` when NATS is cut off or refused it
    /// (the message is lost: live traffic is at most once).
    async fn publish(&self, subject: String, payload: Bytes) -> bool {
        if !self.connected() {
            return false;
        }
        let len = payload.len() as u64;
        let published =
            tokio::time::timeout(CLIENT_CALL_TIMEOUT, self.client.publish(subject, payload))
                .await
                .unwrap_or_else(|_| {
                    Err(async_nats::PublishError::with_source(
                        async_nats::client::PublishErrorKind::Send,
                        "timed out",
                    ))
                });
        match published {
            Ok(()) => {
                let state = &self.cluster.state;
                state.messages_out.fetch_add(1, Ordering::Relaxed);
                state.bytes_out.fetch_add(len, Ordering::Relaxed);
                true
            }
            Err(error) => {
                tracing::debug!(%error, "cluster: publish failed");
                false
            }
        }
    }

    /// Sends every batch and every pending registration.
    async fn flush(&mut self) {
        let batches: Vec<_> = self.batches.drain().collect();
        for (subject, (pushes, _)) in batches {
            self.send_batch(subject, pushes).await;
        }
        for event in std::mem::take(&mut self.im_relayed) {
            self.im_event(event).await;
        }
        self.flush_im().await;
        let partitions: Vec<u32> = self.users.keys().copied().collect();
        for partition in partitions {
            self.flush_users(partition).await;
        }
        for partition in std::mem::take(&mut self.resend) {
            self.send_all_users(partition).await;
            self.send_all_watches(partition).await;
        }
        self.flush_presence().await;
    }

    /// Sends the registrations waiting for `partition`'s owner, ahead of
    /// any request to it.
    async fn flush_users(&mut self, partition: u32) {
        let Some(changes) = self.users.remove(&partition) else {
            return;
        };
        self.send_users(partition, false, changes).await;
    }

    async fn send_users(&mut self, partition: u32, full: bool, changes: Vec<UserChange>) {
        if changes.iter().any(|change| change.present) {
            self.users_sent |= 1u64 << partition;
        }
        let request = StoreRequest::Users {
            node: self.cluster.node,
            incarnation: self.cluster.incarnation,
            full,
            changes,
        };
        let subject = self.subjects.store(partition);
        // No answer needed: the owner applies registrations in the order
        // they arrive, before any later request from this node.
        if !self
            .publish(subject, Bytes::from(encode(&request).into_vec()))
            .await
        {
            tracing::debug!(
                partition,
                "cluster: user registrations not sent (NATS cut off); resent in full on reconnect"
            );
        }
    }

    /// Every user with a connection here whose inbox lives in
    /// `partition`: the whole set, for an owner that (re)started.
    async fn send_all_users(&mut self, partition: u32) {
        let mut changes = Vec::new();
        // The IM partition's owner takes every user.
        let all = self.cluster.im_partition() == Some(partition);
        self.shared.interest.for_each_live(|channel| {
            if let Some(user) = crate::outbox::inbox_user(channel) {
                if all || partition_of(channel, self.stores) == partition {
                    changes.push(UserChange {
                        user: user.to_owned(),
                        present: true,
                    });
                }
            }
        });
        // What was pending is in the full set (or gone since).
        self.users.remove(&partition);
        self.send_users(partition, true, changes).await;
    }

    async fn inbound(&mut self, source: Source, message: async_nats::Message) {
        match source {
            Source::Pushes => self.pushes(&message.payload),
            Source::Heartbeat => self.heartbeat(&message.payload).await,
            Source::Broadcast => self.broadcast(&message.payload),
            Source::Query => self.answer_query(message),
            Source::Store => self.serve(message),
            Source::Presence => self.presence_updates(&message.payload),
            Source::Im => self.im_batch(&message.payload),
        }
    }

    /// Publications from another node: to the local shards with
    /// subscribers, as the store's sink hands stored ones over.
    fn pushes(&mut self, payload: &[u8]) {
        let shared = &self.shared;
        let sender = &self.sender;
        let state = &self.cluster.state;
        // A partition whose subscribers are about to be cut (`cut_due`):
        // its stored publications are not delivered meanwhile, or a
        // subscriber could take one past the gap the cut is for as its
        // position; everyone cut recovers them from the owner.
        let cutting = self.cut_pending;
        let (stores, im) = (self.stores, self.cluster.im_partition());
        let read = read_push_batch(payload, |node, pushes| {
            let mut touched = 0u64;
            for bytes in pushes {
                let push = match EncodedPush::from_untrusted(bytes) {
                    Ok(push) => push,
                    Err(error) => {
                        tracing::warn!(%error, node, "cluster: dropped a bad publication");
                        continue;
                    }
                };
                state.pushes_in.fetch_add(1, Ordering::Relaxed);
                let offset = push.envelope().offset.to_native();
                let channel = push.envelope().channel.as_str();
                if cutting != 0
                    && offset > 0
                    && cutting & (1u64 << stream_partition(channel, stores, im)) != 0
                {
                    continue;
                }
                let publication = Arc::new(Publication::from_push(Arc::new(push)));
                let mask = shared.interest.shards(publication.channel());
                if mask == 0 {
                    state.pushes_unwanted.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if publication.offset() > 0 {
                    // Stored: a shard without room is marked lagged and its
                    // durable subscribers recover from the owner.
                    sender.publish_stored(mask, &publication);
                    touched |= mask;
                } else if sender.publish(mask, &publication, None, |_| {}).is_err() {
                    state.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            touched
        });
        match read {
            Ok(touched) => {
                for shard in shard_indexes(touched) {
                    self.sender.ring(shard);
                }
            }
            Err(error) => tracing::warn!(%error, "cluster: dropped an undecodable batch"),
        }
    }

    fn broadcast(&mut self, payload: &[u8]) {
        let Ok(broadcast) = decode::<Broadcast>(payload) else {
            tracing::warn!("cluster: dropped an undecodable broadcast");
            return;
        };
        match broadcast {
            Broadcast::DisconnectUser { user, code } => {
                let mask = self
                    .shared
                    .interest
                    .shards(&crate::channels::personal_channel(&user));
                let user: Arc<str> = user.into();
                for shard in shard_indexes(mask) {
                    let event = ShardEvent::DisconnectUser {
                        user: user.clone(),
                        code: CloseCode(code),
                    };
                    if self.sender.send(shard, event).is_err() {
                        tracing::warn!(shard, "cluster: a disconnect was dropped (lane full)");
                    }
                }
            }
            Broadcast::SubscribeUser {
                user,
                channel,
                subscribe,
            } => {
                let mask = self
                    .shared
                    .interest
                    .shards(&crate::channels::personal_channel(&user));
                let user: Arc<str> = user.into();
                let channel: Arc<str> = channel.into();
                for shard in shard_indexes(mask) {
                    // The count is the asking node's to report; here it
                    // is dropped.
                    let (reply, _) = futures_channel::oneshot::channel();
                    let event = ShardEvent::SubscribeUser {
                        user: user.clone(),
                        channel: channel.clone(),
                        subscribe,
                        reply,
                    };
                    if self.sender.send(shard, event).is_err() {
                        tracing::warn!(shard, "cluster: a subscribe was dropped (lane full)");
                    }
                }
            }
            Broadcast::Resend { owner, node } => {
                if node == self.cluster.node
                    && u32::from(owner) < self.stores
                    && usize::from(owner) < NODES_MAX
                {
                    // The owner forgot this node's users: it may have
                    // skipped forwarding to them meanwhile (if it ever had
                    // any from this node).
                    self.resend.push(u32::from(owner));
                    if self.users_sent & (1u64 << owner) != 0 {
                        self.request_cut(1u64 << owner);
                    }
                }
            }
            Broadcast::PublicationsLost { node, .. } => {
                // Whoever says it, known or not (a node back after a long
                // cut is not heard yet): only an owner sends stored entries.
                tracing::info!(node, "cluster: a node may have lost durable publications");
                if u32::from(node) < self.stores && usize::from(node) < NODES_MAX {
                    self.request_cut(1u64 << node);
                }
            }
        }
    }
}
