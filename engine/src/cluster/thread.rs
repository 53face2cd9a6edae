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
use super::{bucket_of, partition_of, Cluster, ClusterStartError, Outbound, QueryAnswers};
use super::{ReplyTo, TaggedKind, ThreadParts};
use crate::engine::Shared;
use crate::interest::shard_indexes;
use crate::mesh::{MeshSender, ShardEvent, StoreAnswer};
use crate::publication::Publication;

mod presence;

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
        users: HashMap::new(),
        watches: HashMap::new(),
        watchers: HashMap::new(),
        presence_out: HashMap::new(),
        presence_due: Vec::new(),
        registered: HashMap::new(),
        resend: Vec::new(),
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
            Outbound::UserNodes { user, reply } => self.user_nodes(user, reply).await,
        }
    }

    /// A channel's interest on this node changed: a user's registration
    /// with its inbox's owner, or a bucket subscription.
    async fn interest(&mut self, channel: &str) {
        let live = self.shared.interest.shards(channel) != 0;
        if let Some(user) = crate::outbox::inbox_user(channel) {
            let partition = partition_of(channel, self.stores);
            if partition != u32::from(self.cluster.node) {
                self.users.entry(partition).or_default().push(UserChange {
                    user: user.to_owned(),
                    present: live,
                });
            } else {
                // A user of this partition came or went here.
                self.notify_watchers(user);
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
        self.shared.interest.for_each_live(|channel| {
            if let Some(user) = crate::outbox::inbox_user(channel) {
                if partition_of(channel, self.stores) == partition {
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

    /// Forwards a store request; its answer comes back in a task.
    fn request(&self, partition: u32, request: StoreRequest, reply: ReplyTo) {
        let state = self.cluster.state.clone();
        state.requests.fetch_add(1, Ordering::Relaxed);
        let subject = self.subjects.store(partition);
        let payload = Bytes::from(encode(&request).into_vec());
        let client = self.client.clone();
        let timeout = self.request_timeout;
        let sender = self.sender.clone();
        tokio::task::spawn_local(async move {
            let request = async_nats::Request::new()
                .payload(payload)
                .timeout(Some(timeout));
            let answer = match client.send_request(subject, request).await {
                Ok(message) => decode::<StoreReply>(&message.payload).map_err(|error| {
                    wire::unreachable(partition, format!("bad answer from the owner: {error}"))
                }),
                Err(error) => Err(wire::unreachable(
                    partition,
                    match error.kind() {
                        async_nats::RequestErrorKind::NoResponders => {
                            "its owner is not running (no node serves it); nothing was \
                             stored or read, retry later"
                                .to_owned()
                        }
                        async_nats::RequestErrorKind::TimedOut => format!(
                            "its owner did not answer within {} ms; an append may have been \
                             stored: retry with the same client_msg_id",
                            timeout.as_millis()
                        ),
                        _ => format!("the request failed: {error}"),
                    },
                )),
            };
            if answer.is_err() {
                state.request_errors.fetch_add(1, Ordering::Relaxed);
            }
            deliver(partition, answer, reply, &sender);
        });
    }

    fn query(&self, query: Query, reply: futures_channel::oneshot::Sender<QueryAnswers>) {
        let client = self.client.clone();
        let subject = self.subjects.query();
        let expected = self.nodes.mask();
        let timeout = self.request_timeout;
        let connected = self.connected();
        tokio::task::spawn_local(async move {
            let mut answers = QueryAnswers::default();
            let mut heard = 0u64;
            if connected && expected != 0 {
                let inbox = client.new_inbox();
                if let Ok(mut replies) = client.subscribe(inbox.clone()).await {
                    let payload = Bytes::from(encode(&query).into_vec());
                    if client
                        .publish_with_reply(subject, inbox, payload)
                        .await
                        .is_ok()
                    {
                        let deadline = tokio::time::Instant::now() + timeout;
                        while heard & expected != expected {
                            let Ok(Some(message)) =
                                tokio::time::timeout_at(deadline, replies.next()).await
                            else {
                                break;
                            };
                            if let Ok(answer) = decode::<QueryReply>(&message.payload) {
                                if usize::from(answer.node) >= NODES_MAX {
                                    continue;
                                }
                                heard |= 1u64 << answer.node;
                                answers.replies.push(answer);
                            }
                        }
                    }
                }
            }
            answers.missing = shard_indexes(expected & !heard).map(|n| n as u8).collect();
            let _ = reply.send(answers);
        });
    }

    async fn user_nodes(
        &mut self,
        user: String,
        reply: futures_channel::oneshot::Sender<Result<Vec<u8>, StoreError>>,
    ) {
        let channel = crate::channels::personal_channel(&user);
        let partition = partition_of(&channel, self.stores);
        if partition == u32::from(self.cluster.node) {
            let _ = reply.send(Ok(self.local_user_nodes(&user, &channel)));
            return;
        }
        if !self.connected() {
            let _ = reply.send(Err(wire::unreachable(
                partition,
                "the node is cut off from NATS".into(),
            )));
            return;
        }
        self.flush_users(partition).await;
        let subject = self.subjects.store(partition);
        let payload = Bytes::from(encode(&StoreRequest::UserNodes { user }).into_vec());
        let client = self.client.clone();
        let timeout = self.request_timeout;
        tokio::task::spawn_local(async move {
            let request = async_nats::Request::new()
                .payload(payload)
                .timeout(Some(timeout));
            let answer = match client.send_request(subject, request).await {
                Ok(message) => match decode::<StoreReply>(&message.payload) {
                    Ok(StoreReply::UserNodes { nodes }) => Ok(nodes),
                    Ok(other) => Err(wire::unreachable(partition, format!("answered {other:?}"))),
                    Err(error) => Err(wire::unreachable(partition, error.to_string())),
                },
                Err(error) => Err(wire::unreachable(partition, error.to_string())),
            };
            let _ = reply.send(answer);
        });
    }

    /// The nodes holding `user`, from this owner's directory and its own
    /// connections.
    fn local_user_nodes(&self, user: &str, channel: &str) -> Vec<u8> {
        let mut mask = self.directory.nodes(user);
        if self.shared.interest.shards(channel) != 0 {
            mask |= 1u64 << self.cluster.node;
        }
        shard_indexes(mask).map(|node| node as u8).collect()
    }

    // ---- what NATS brings ----------------------------------------------

    async fn inbound(&mut self, source: Source, message: async_nats::Message) {
        match source {
            Source::Pushes => self.pushes(&message.payload),
            Source::Heartbeat => self.heartbeat(&message.payload).await,
            Source::Broadcast => self.broadcast(&message.payload),
            Source::Query => self.answer_query(message),
            Source::Store => self.serve(message),
            Source::Presence => self.presence_updates(&message.payload),
        }
    }

    /// Publications from another node: to the local shards with
    /// subscribers, as the store's sink hands stored ones over.
    fn pushes(&mut self, payload: &[u8]) {
        let shared = &self.shared;
        let sender = &self.sender;
        let state = &self.cluster.state;
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

    async fn heartbeat(&mut self, payload: &[u8]) {
        let Ok(beat) = decode::<Heartbeat>(payload) else {
            tracing::warn!("cluster: dropped an undecodable heartbeat");
            return;
        };
        if usize::from(beat.node) >= NODES_MAX {
            tracing::warn!(
                node = beat.node,
                "cluster: dropped a heartbeat of no valid node"
            );
            return;
        }
        let now_ms = crate::shard::unix_ms();
        let foreign_id =
            beat.node == self.cluster.node && beat.incarnation != self.cluster.incarnation;
        if foreign_id || beat.settings != self.settings {
            self.conflict_heard_ms = now_ms;
            if !self.cluster.state.conflict.swap(true, Ordering::AcqRel) {
                if foreign_id {
                    tracing::error!(
                        node = beat.node,
                        "cluster: another process heartbeats with this node's server.node_id; \
                         node ids must be unique"
                    );
                } else {
                    tracing::error!(
                        node = beat.node,
                        "cluster: a node runs with other cluster.stores, cluster.channel_buckets \
                         or namespace storage settings; every node must share them"
                    );
                }
            }
        }
        if beat.node == self.cluster.node {
            return;
        }
        let info = NodeInfo {
            incarnation: beat.incarnation,
            last_heard_ms: crate::shard::unix_ms(),
            draining: beat.draining,
            owns_store: beat.owns_store,
            connections: beat.connections,
        };
        if self.nodes.heard(beat.node, info) == NodeChange::Joined {
            tracing::info!(
                node = beat.node,
                incarnation = beat.incarnation,
                "cluster: node joined"
            );
            // An earlier life's registrations are gone with it (lives are
            // told apart by their incarnation, never ordered by it: a clock
            // may go back); the ones this life sent, which may have come
            // first, stay.
            if self
                .registered
                .get(&beat.node)
                .is_some_and(|registered| *registered != beat.incarnation)
            {
                self.registered.remove(&beat.node);
                self.node_gone(beat.node);
            }
            let seen_before = self.seen & (1u64 << beat.node) != 0;
            self.seen |= 1u64 << beat.node;
            if seen_before && self.cluster.owns_partition() {
                // What it registered before it was taken for dead is
                // forgotten: ask for all of it again.
                let resend = Broadcast::Resend {
                    owner: self.cluster.node,
                    node: beat.node,
                };
                let subject = self.subjects.all();
                self.publish(subject, Bytes::from(encode(&resend).into_vec()))
                    .await;
            }
            if beat.owns_store && u32::from(beat.node) < self.stores {
                self.send_all_users(u32::from(beat.node)).await;
                self.send_all_watches(u32::from(beat.node)).await;
                if seen_before {
                    // An owner back from a restart or a silence: what it
                    // committed while it did not know this node's users,
                    // or before it died with entries still queued, did not
                    // come here. Its subscribers here recover, after the
                    // registrations above.
                    self.request_cut(1u64 << beat.node);
                }
            }
            self.cluster
                .state
                .live_nodes
                .store(self.nodes.mask(), Ordering::Release);
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

    /// Publications of durable streams of `partitions` (a bitmask) may
    /// have been lost on their way here: their subscribers here are to be
    /// cut (1013) and recover from the owners. Carried out at the tick, at
    /// most once per `CUT_INTERVAL_MS`, so several reasons at once cut
    /// once; a request is never dropped, only merged and deferred.
    fn request_cut(&mut self, partitions: u64) {
        self.cut_pending |= partitions;
    }

    /// Every partition but this node's own (whose entries reach its shards
    /// through the mesh, never through NATS).
    fn remote_partitions(&self) -> u64 {
        let all = if self.stores >= 64 {
            u64::MAX
        } else {
            (1u64 << self.stores) - 1
        };
        all & !(1u64 << self.cluster.node)
    }

    fn cut_due(&mut self, now_ms: u64) {
        if self.cut_pending == 0 || now_ms.saturating_sub(self.last_cut_ms) < CUT_INTERVAL_MS {
            return;
        }
        self.last_cut_ms = now_ms;
        let partitions = std::mem::take(&mut self.cut_pending);
        let mesh = self.sender.mesh().clone();
        for shard in 0..mesh.n_consumers() {
            if self
                .sender
                .send(shard, ShardEvent::CutPartitions { partitions })
                .is_err()
            {
                // A full lane: the shard cuts all its durable subscribers.
                mesh.mark_lagged(shard);
                self.sender.ring(shard);
            }
        }
    }

    fn answer_query(&self, message: async_nats::Message) {
        let Some(reply_to) = message.reply else {
            return;
        };
        let Ok(query) = decode::<Query>(&message.payload) else {
            tracing::warn!("cluster: dropped an undecodable query");
            return;
        };
        let node = self.cluster.node;
        let client = self.client.clone();
        let shared = self.shared.clone();
        let sender = self.sender.clone();
        tokio::task::spawn_local(async move {
            let json = match query {
                Query::Stats => crate::control::node_stats(&shared).to_string(),
                Query::ChannelPresence { channel } => {
                    let clients = local_presence(&shared, &sender, &channel).await;
                    serde_json::Value::Array(clients).to_string()
                }
            };
            let reply = QueryReply { node, json };
            let _ = client
                .publish(reply_to, Bytes::from(encode(&reply).into_vec()))
                .await;
        });
    }

    /// Whether a registration (users, watches) from `node`'s life
    /// `incarnation` is current: a later life than the one registered so
    /// far forgets the earlier life's entries first; an earlier one is
    /// stale.
    fn registration_from(&mut self, node: u8, incarnation: u64) -> bool {
        if usize::from(node) >= NODES_MAX {
            return false;
        }
        if self
            .nodes
            .incarnation(node)
            .is_some_and(|heard| heard != incarnation)
        {
            // Not the life whose heartbeat is heard: an earlier one's late
            // word, or a later one's early word (its heartbeat will come,
            // and the Resend it brings gets everything again).
            return false;
        }
        match self.registered.get(&node).copied() {
            Some(known) if incarnation == known => true,
            Some(_) => {
                self.node_gone(node);
                self.registered.insert(node, incarnation);
                true
            }
            None => {
                self.registered.insert(node, incarnation);
                true
            }
        }
    }

    /// A request to this node's store partition.
    fn serve(&mut self, message: async_nats::Message) {
        let request = match decode::<StoreRequest>(&message.payload) {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%error, "cluster: dropped an undecodable store request");
                return;
            }
        };
        let store = &self.shared.store;
        let me = u32::from(self.cluster.node);
        let stores = self.stores;
        let foreign = |stream: &str| {
            let partition = partition_of(stream, stores);
            (partition != me).then(|| {
                Pending::Now(StoreReply::Error {
                    source: 0,
                    message: format!(
                        "{stream:?} is in partition {partition} by this node's cluster.stores \
                         ({stores}), not in this node's ({me}): the nodes disagree on \
                         cluster.stores"
                    ),
                })
            })
        };
        let pending = match request {
            StoreRequest::Users {
                node,
                incarnation,
                full,
                changes,
            } => {
                if !self.registration_from(node, incarnation) {
                    return;
                }
                if full {
                    for user in self.directory.forget_node(node) {
                        self.notify_watchers(&user);
                    }
                }
                for change in changes {
                    self.directory.set(&change.user, node, change.present);
                    self.notify_watchers(&change.user);
                }
                return;
            }
            StoreRequest::Watches {
                node,
                incarnation,
                full,
                changes,
            } => {
                if !self.registration_from(node, incarnation) {
                    return;
                }
                self.serve_watches(node, full, changes);
                return;
            }
            StoreRequest::UserNodes { user } => {
                let channel = crate::channels::personal_channel(&user);
                let nodes = self.local_user_nodes(&user, &channel);
                Pending::Now(StoreReply::UserNodes { nodes })
            }
            StoreRequest::Append(AppendWire { ref stream, .. })
            | StoreRequest::Read(ReadWire { ref stream, .. })
            | StoreRequest::SetCursor { ref stream, .. }
            | StoreRequest::GetCursor { ref stream, .. }
                if foreign(stream).is_some() =>
            {
                foreign(stream).unwrap_or(Pending::Now(StoreReply::Done))
            }
            StoreRequest::Append(append) => match wire::append_in(append) {
                Ok(request) => Pending::Append(store.append(request)),
                Err(problem) => Pending::Now(wire::error_out(&StoreError::InvalidRequest {
                    reason: leak_reason(problem),
                })),
            },
            StoreRequest::Read(read) => Pending::Read(
                store.read(wire::read_in(read)),
                self.client
                    .max_payload()
                    .saturating_sub(BATCH_FRAMING_BYTES),
            ),
            StoreRequest::SetCursor {
                user,
                device,
                stream,
                offset,
            } => Pending::Offset(store.set_cursor(&user, &device, &stream, offset)),
            StoreRequest::GetCursor {
                user,
                device,
                stream,
            } => Pending::Cursor(store.get_cursor(&user, &device, &stream)),
        };
        let Some(reply_to) = message.reply else {
            return;
        };
        let client = self.client.clone();
        tokio::task::spawn_local(async move {
            let reply = pending.answer().await;
            if let Err(error) = client
                .publish(reply_to.clone(), Bytes::from(encode(&reply).into_vec()))
                .await
            {
                // Never silence: the asker would wait out its deadline and
                // take the owner for unreachable.
                let refused = StoreReply::Error {
                    source: 2,
                    message: format!("the owner could not send its answer: {error}"),
                };
                let _ = client
                    .publish(reply_to, Bytes::from(encode(&refused).into_vec()))
                    .await;
            }
        });
    }

    // ---- the tick -------------------------------------------------------

    async fn tick(&mut self) {
        let now_ms = crate::shard::unix_ms();
        self.connection_state(now_ms).await;
        if now_ms.saturating_sub(self.last_heartbeat_ms) >= self.heartbeat_ms {
            self.last_heartbeat_ms = now_ms;
            self.send_heartbeat().await;
        }
        for node in self.nodes.expire(now_ms, self.node_timeout_ms) {
            tracing::warn!(
                node,
                timeout_ms = self.node_timeout_ms,
                "cluster: node silent past the timeout, taken for dead"
            );
            self.node_gone(node);
        }
        self.presence_tick(now_ms);
        self.cut_due(now_ms);
        let state = &self.cluster.state;
        if self.conflict_heard_ms != 0
            && now_ms.saturating_sub(self.conflict_heard_ms) >= self.node_timeout_ms
        {
            // The other process stopped, or was set right.
            self.conflict_heard_ms = 0;
            state.conflict.store(false, Ordering::Release);
            tracing::info!("cluster: no conflicting heartbeat heard any more");
        }
        state.live_nodes.store(self.nodes.mask(), Ordering::Release);
        state
            .buckets_subscribed
            .store(self.buckets.subscribed() as u64, Ordering::Relaxed);
        state
            .directory_users
            .store(self.directory.users() as u64, Ordering::Relaxed);
        // No UNSUB while cut off: the client takes no commands then.
        let expired = if self.connected() {
            self.buckets.expire(now_ms)
        } else {
            Vec::new()
        };
        for action in expired {
            if let BucketAction::Unsubscribe(bucket) = action {
                if let Some(task) = self.bucket_tasks.remove(&bucket) {
                    task.abort();
                }
            }
        }
        if now_ms.saturating_sub(self.last_resync_ms) >= RESYNC_EVERY_MS {
            self.last_resync_ms = now_ms;
            self.resync().await;
        }
    }

    /// Notices the NATS connection going and coming back.
    async fn connection_state(&mut self, now_ms: u64) {
        let connected = self.connected();
        let state = &self.cluster.state;
        if connected != self.was_connected {
            self.was_connected = connected;
            state.connected.store(connected, Ordering::Release);
            state.changed_ms.store(now_ms, Ordering::Release);
            if !connected {
                tracing::warn!(
                    "cluster: cut off from NATS; live publications for other nodes are \
                     dropped and requests to other partitions refused until it is back"
                );
            }
        }
        if !connected {
            return;
        }
        let connects = self.client.statistics().connects.load(Ordering::Relaxed);
        if connects > self.connects_seen {
            let first = self.connects_seen == 0;
            self.connects_seen = connects;
            self.cluster.state.push_bytes_max.store(
                self.client
                    .max_payload()
                    .saturating_sub(BATCH_FRAMING_BYTES),
                Ordering::Relaxed,
            );
            // At once, not at the next interval: the others route to this
            // node and answer its registrations only once they hear it.
            self.last_heartbeat_ms = now_ms;
            self.send_heartbeat().await;
            // The buckets wanted while the client could not subscribe.
            let wanted: Vec<u32> = self.buckets.subscribed_buckets().collect();
            for bucket in wanted {
                self.subscribe_bucket(bucket).await;
            }
            if first {
                tracing::info!(url = %self.shared.config.cluster.nats_url, "cluster: connected to NATS");
            } else {
                self.reconnected().await;
            }
        }
        if self
            .cluster
            .state
            .durable_lost
            .swap(false, Ordering::AcqRel)
        {
            self.say_publications_lost().await;
        }
    }

    /// Back on NATS after a cut: registrations and publications sent
    /// meanwhile may be lost. The owners get this node's users again,
    /// every node recovers its durable subscribers.
    async fn reconnected(&mut self) {
        self.cluster
            .state
            .reconnects
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            "cluster: reconnected to NATS; re-registering users, recovering durable subscribers"
        );
        self.say_publications_lost().await;
        let owners: Vec<u32> = self
            .nodes
            .iter()
            .filter(|(node, info)| info.owns_store && u32::from(*node) < self.stores)
            .map(|(node, _)| u32::from(node))
            .collect();
        for partition in owners {
            self.send_all_users(partition).await;
            self.send_all_watches(partition).await;
        }
        self.request_cut(self.remote_partitions());
    }

    async fn say_publications_lost(&mut self) {
        let broadcast = Broadcast::PublicationsLost {
            node: self.cluster.node,
            incarnation: self.cluster.incarnation,
        };
        let subject = self.subjects.all();
        if !self
            .publish(subject, Bytes::from(encode(&broadcast).into_vec()))
            .await
        {
            // Said again at the next tick.
            self.cluster
                .state
                .durable_lost
                .store(true, Ordering::Release);
        }
    }

    /// An event of the NATS client.
    fn event(&mut self, event: async_nats::Event) {
        match event {
            async_nats::Event::SlowConsumer(sid) => {
                self.cluster
                    .state
                    .slow_consumer
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    sid,
                    "cluster: a NATS subscription overflowed and lost messages; durable \
                     subscribers recover"
                );
                self.request_cut(self.remote_partitions());
            }
            async_nats::Event::LameDuckMode => {
                tracing::warn!("cluster: the NATS server is in lame duck mode (shutting down)");
            }
            other => tracing::debug!(event = %other, "cluster: NATS client event"),
        }
    }

    async fn send_heartbeat(&mut self) {
        self.heartbeat_seq += 1;
        let connections = self
            .shared
            .metrics
            .iter()
            .map(|m| m.connections.get())
            .sum();
        let beat = Heartbeat {
            node: self.cluster.node,
            incarnation: self.cluster.incarnation,
            seq: self.heartbeat_seq,
            draining: self.cluster.state.draining.load(Ordering::Acquire),
            owns_store: self.cluster.owns_partition(),
            connections,
            settings: self.settings,
        };
        let subject = self.subjects.heartbeat();
        self.publish(subject, Bytes::from(encode(&beat).into_vec()))
            .await;
    }

    /// Reads every channel's interest again: repairs a change a full
    /// queue could not carry.
    async fn resync(&mut self) {
        let mut live = Vec::new();
        self.shared.interest.for_each_live(|channel| {
            if !crate::channels::is_personal(channel) {
                live.push(Box::<str>::from(channel));
            }
        });
        // Both ways: a channel whose last subscriber's change was dropped
        // leaves its bucket too.
        live.extend(self.buckets.live_channels());
        for channel in live {
            self.interest(&channel).await;
        }
        if self.cluster.state.resync.swap(false, Ordering::AcqRel) {
            let owners: Vec<u32> = self
                .nodes
                .iter()
                .filter(|(node, info)| info.owns_store && u32::from(*node) < self.stores)
                .map(|(node, _)| u32::from(node))
                .collect();
            for partition in owners {
                self.send_all_users(partition).await;
                self.send_all_watches(partition).await;
            }
            if self.cluster.owns_partition() {
                // This node's own watches of its own users.
                let mut watched = Vec::new();
                self.shared
                    .presence_book
                    .watched_users(|user| watched.push(Box::<str>::from(user)));
                for user in watched {
                    self.watch_event(&user);
                }
            }
        }
    }
}

/// A store call in progress for another node.
enum Pending {
    Now(StoreReply),
    Append(
        Result<
            futures_channel::oneshot::Receiver<Result<ringcast_store::Appended, StoreError>>,
            StoreError,
        >,
    ),
    /// With the most bytes the answer may take.
    Read(
        Result<
            futures_channel::oneshot::Receiver<Result<ringcast_store::ReadResult, StoreError>>,
            StoreError,
        >,
        usize,
    ),
    Offset(Result<futures_channel::oneshot::Receiver<Result<u64, StoreError>>, StoreError>),
    Cursor(
        Result<
            futures_channel::oneshot::Receiver<
                Result<Option<ringcast_store::StoredCursor>, StoreError>,
            >,
            StoreError,
        >,
    ),
}

impl Pending {
    async fn answer(self) -> StoreReply {
        async fn settle<T>(
            call: Result<futures_channel::oneshot::Receiver<Result<T, StoreError>>, StoreError>,
            out: impl FnOnce(T) -> StoreReply,
        ) -> StoreReply {
            let result = match call {
                Ok(receiver) => receiver.await.unwrap_or(Err(StoreError::Closed)),
                Err(error) => Err(error),
            };
            match result {
                Ok(value) => out(value),
                Err(error) => wire::error_out(&error),
            }
        }
        match self {
            Pending::Now(reply) => reply,
            Pending::Append(call) => settle(call, |a| wire::appended_out(&a)).await,
            Pending::Read(call, bytes_max) => {
                settle(call, |r| wire::read_result_out(&r, bytes_max)).await
            }
            Pending::Offset(call) => settle(call, StoreReply::Offset).await,
            Pending::Cursor(call) => {
                settle(call, |c| {
                    StoreReply::Cursor(c.map(|cursor| (cursor.offset, cursor.epoch)))
                })
                .await
            }
        }
    }
}

/// `InvalidRequest` takes a static reason; a malformed request from
/// another node is rare (a version mismatch), so its text is kept.
fn leak_reason(problem: String) -> &'static str {
    tracing::warn!(problem, "cluster: refused a malformed store request");
    "a malformed request from another node (see the owner's log)"
}

/// Hands a forwarded request's answer to whoever asked.
fn deliver(
    partition: u32,
    answer: Result<StoreReply, StoreError>,
    reply: ReplyTo,
    sender: &MeshSender,
) {
    match reply {
        ReplyTo::Appended(tx) => {
            let _ = tx.send(answer.and_then(|r| wire::appended_in(partition, r)));
        }
        ReplyTo::Read(tx) => {
            let _ = tx.send(answer.and_then(|r| wire::read_result_in(partition, r)));
        }
        ReplyTo::Cursor(tx) => {
            let _ = tx.send(answer.and_then(|r| wire::cursor_in(partition, r)));
        }
        ReplyTo::Tagged { tag, kind } => {
            let answer = match kind {
                TaggedKind::Appended => {
                    Answer::Appended(answer.and_then(|r| wire::appended_in(partition, r)))
                }
                TaggedKind::Cursor => {
                    Answer::Cursor(answer.and_then(|r| wire::offset_in(partition, r)))
                }
            };
            let (shard, slot) = crate::streams::tag_parts(tag);
            if shard >= sender.mesh().n_consumers() {
                tracing::error!(tag, "cluster: a forwarded answer for no shard");
                return;
            }
            sender.answer_quiet(shard, StoreAnswer { slot, answer });
            sender.ring(shard);
        }
    }
}

/// This node's subscribers of `channel`, from its shards.
async fn local_presence(
    shared: &Shared,
    sender: &MeshSender,
    channel: &str,
) -> Vec<serde_json::Value> {
    let channel: Arc<str> = channel.into();
    let mut receivers = Vec::new();
    for shard in shard_indexes(shared.interest.shards(&channel)) {
        let (reply, receiver) = futures_channel::oneshot::channel();
        let event = ShardEvent::Presence {
            channel: channel.clone(),
            reply,
        };
        if sender.send(shard, event).is_ok() {
            receivers.push(receiver);
        }
    }
    let mut clients = Vec::new();
    for receiver in receivers {
        if let Ok(Ok(entries)) = tokio::time::timeout(SHARD_ANSWER_TIMEOUT, receiver).await {
            clients.extend(
                entries
                    .into_iter()
                    .filter_map(|entry| serde_json::to_value(entry).ok()),
            );
        }
    }
    clients
}
