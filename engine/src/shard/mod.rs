//! One shard: a pinned thread running one monoio runtime, whose single task
//! is this event loop over the connections the shard owns outright.
//!
//! The loop handles a closed set of events (`Wake`): readiness and send
//! completions from the poller (`poller.rs`: io_uring or epoll), events
//! from other shards, the control thread and the store (`mesh.rs`), store
//! replies to this shard's requests, and the coarse timer tick. Each turn
//! takes what is ready without waiting, then writes every connection with
//! something queued (one send per connection, one submit per turn), then
//! parks in monoio until the next wake. All state is owned by the loop
//! (`&mut Shard`): no task per connection, no `RefCell`, no locks, no
//! fjall, no sleeping.

mod commands;
pub mod conn;
mod connect;
mod fanout;
mod im;
mod im_delivery;
mod im_echo;
mod im_receipts;
mod im_route;
mod im_signals;
mod im_sync;
pub(crate) mod im_typing;
mod io;
pub mod poller;
mod presence;
mod rate;
mod recovery;
mod server_subscriptions;
pub mod tls;

/// The fan-out loop, for `benches/benches/fanout.rs` only: not part of the
/// engine's API, so it exists only with the `bench-internals` feature.
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub use fanout::deliver;

use std::collections::{HashMap, HashSet};
use std::future::{poll_fn, Future};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use ringcast_protocol::close::CloseCode;
use ringcast_protocol::deflate::Inflater;
use ringcast_protocol::envelope::MessageIdGen;
use slab::Slab;

use crate::engine::Shared;
use crate::limits::{SWEEPS_PER_PERIOD, SWEEP_TICK_MS_MAX, SWEEP_TICK_MS_MIN};
use crate::mesh::{MeshReceiver, MeshSender, PresenceEntry, ShardEvent, MESH_DRAIN_MAX};
use crate::session::{CloseReason, SessionConfig};
use conn::Conn;
use poller::{Event, Poller};

/// A store reply on its way back to the loop.
type StoreFuture = Pin<Box<dyn Future<Output = commands::StoreDone>>>;

pub struct Shard {
    pub idx: usize,
    shared: Arc<Shared>,
    sender: MeshSender,
    session_config: SessionConfig,
    conns: Slab<Conn>,
    /// channel → keys of local connections subscribed to it.
    subscribers: HashMap<Rc<str>, Vec<usize>>,
    /// The personal channels (`user:<id>`) among `subscribers`: the side a
    /// large group's routing walks when it is the smaller (`im_route.rs`).
    inboxes: HashSet<Rc<str>>,
    /// Connections with something to send or to finish this turn.
    dirty: Vec<usize>,
    /// Connections that hit the per-turn read cap with more to read.
    read_again: Vec<usize>,
    /// The shard's one read buffer.
    scratch: Box<[u8]>,
    /// The shard's one inflater for permessage-deflate messages, reset per
    /// message (every client agreed to `client_no_context_takeover`);
    /// `None` when `websocket.compression` is off.
    inflater: Option<Box<Inflater>>,
    message_ids: MessageIdGen,
    /// Unix milliseconds, refreshed at the start of every turn.
    now_ms: u64,
    next_client_seq: u64,
    /// Unix milliseconds when this shard started; part of default device ids.
    started_unix_ms: u64,
    poller: Poller,
    /// `None` once the shard stopped accepting.
    listener: Option<OwnedFd>,
    /// The shard's copy of the TLS configuration when the WebSocket
    /// listener serves `wss://`.
    tls: Option<crate::tls::ShardTls>,
    /// Accept again next turn: the turn's accept budget was spent.
    accept_next_turn: bool,
    /// Accept again at the next tick: accepting failed (out of fds).
    accept_at_tick: bool,
    /// When accept last logged a failure, to log it once per interval.
    accept_error_logged_ms: u64,
    store_replies: FuturesUnordered<StoreFuture>,
    /// Requests waiting in the store's writer; their answers come through
    /// the mesh's answer queue, batched per group commit.
    pending_store: Slab<commands::StoreWait>,
    /// Connections still upgrading, per source address.
    handshakes: crate::admission::Handshakes,
    /// Connection attempts per source address (`accept_rate_per_source`).
    source_buckets: crate::ratelimit::SourceBuckets,
    /// Per-user command limits of the users on this shard.
    user_buckets: crate::ratelimit::UserBuckets,
    /// Some command rate limit is configured (else commands skip the check).
    command_limits_on: bool,
    /// Store answers taken this turn (kept to reuse its allocation).
    answers: Vec<crate::mesh::StoreAnswer>,
    /// IM state per connection slot (`im.rs`).
    im: im::ImShard,
    /// Replays waiting for their connection's queue to drain.
    paused_replays: Vec<recovery::Job>,
    sweep_cursor: usize,
    next_sweep_ms: u64,
    /// Open (upgraded) connections.
    n_open: usize,
    /// Events taken from the poller this turn (kept to reuse its allocation).
    events: Vec<Event>,
    /// This shard's presence watchers and offline deadlines.
    presence: crate::presence::watch::ShardPresence,
    stopping: bool,
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Shard {
    pub fn new(
        idx: usize,
        shared: Arc<Shared>,
        sender: MeshSender,
        listener: OwnedFd,
    ) -> std::io::Result<Shard> {
        let config = &shared.config;
        let ws = &config.websocket;
        // A whole frame plus its header must fit the scratch buffer, since
        // frames are decoded in place.
        let scratch_bytes = (ws.frame_bytes_max + 14).max(64 * 1024);
        let node_id = config.server.node_id.get();
        let id_shard = ringcast_protocol::limits::id_shard_of(idx)
            .unwrap_or_else(|| panic!("shard index {idx} is over SHARDS_MAX"));
        let mut poller = Poller::new(shared.driver)?;
        poller.register(std::os::fd::AsRawFd::as_raw_fd(&listener), 0)?;
        let now = unix_ms();
        Ok(Shard {
            idx,
            message_ids: MessageIdGen::new(node_id, id_shard),
            sender,
            session_config: SessionConfig::new(config),
            // Sized for the configured maximum up front: the pages are only
            // committed as slots are used, and the slab never reallocates
            // (a doubling copy at 16k connections costs more than the
            // connections themselves).
            conns: Slab::with_capacity(ws.connections_max_per_shard as usize),
            subscribers: HashMap::new(),
            inboxes: HashSet::new(),
            dirty: Vec::new(),
            read_again: Vec::new(),
            scratch: vec![0; scratch_bytes].into_boxed_slice(),
            inflater: ws.compression.then(Box::default),
            now_ms: now,
            next_client_seq: 1,
            started_unix_ms: now,
            poller,
            listener: Some(listener),
            tls: shared
                .tls
                .as_ref()
                .filter(|tls| tls.websocket_enabled)
                .map(|tls| crate::tls::ShardTls::new(tls.clone())),
            accept_next_turn: false,
            accept_at_tick: false,
            accept_error_logged_ms: 0,
            store_replies: FuturesUnordered::new(),
            pending_store: Slab::new(),
            handshakes: crate::admission::Handshakes::new(
                ws.handshakes_per_source_max,
                u32::from(config.server.shards.get()),
            ),
            source_buckets: crate::ratelimit::SourceBuckets::new(
                crate::ratelimit::Rate::new(ws.accept_rate_per_source, ws.accept_burst_per_source),
                u32::from(config.server.shards.get()),
                crate::limits::RATE_LIMIT_SOURCES_MAX,
            ),
            user_buckets: crate::ratelimit::UserBuckets::default(),
            command_limits_on: crate::ratelimit::command_limits_configured(config),
            answers: Vec::new(),
            im: im::ImShard::default(),
            paused_replays: Vec::new(),
            sweep_cursor: 0,
            next_sweep_ms: now,
            n_open: 0,
            events: Vec::new(),
            presence: crate::presence::watch::ShardPresence::new(
                crate::limits::PRESENCE_IDLE_USERS_MAX / config.server.shards.as_usize(),
            ),
            stopping: false,
            shared,
        })
    }

    pub fn metrics(&self) -> &crate::metrics::ShardMetrics {
        &self.shared.metrics[self.idx]
    }

    fn next_client_id(&mut self) -> u64 {
        let seq = self.next_client_seq;
        self.next_client_seq += 1;
        let node_id = u64::from(self.shared.config.server.node_id.get());
        (node_id << 58) | ((self.idx as u64) << 52) | (seq & ((1 << 52) - 1))
    }

    /// The device id acknowledgements of `conn` are stored under: its
    /// `?device=`, or one unique to the connection. Client ids restart with
    /// the process, so the shard's start time is part of the default and a
    /// cursor acked under it can never be read back by another connection.
    fn device_id(&self, conn: &Conn) -> String {
        match conn.device() {
            Some(device) => device.to_string(),
            None => format!("conn-{}-{}", self.started_unix_ms, conn.client_id),
        }
    }

    /// The sweep tick: each connection is visited `SWEEPS_PER_PERIOD` times
    /// per the shortest of its timeouts.
    fn tick_ms(&self) -> u64 {
        let c = &self.session_config;
        let period = c
            .ping_interval_ms
            .min(c.pong_timeout_ms)
            .min(c.slow_consumer_timeout_ms)
            .min(c.read_progress_timeout_ms)
            .min(c.handshake_timeout_ms)
            .min(c.close_linger_ms);
        (period / u64::from(SWEEPS_PER_PERIOD)).clamp(SWEEP_TICK_MS_MIN, SWEEP_TICK_MS_MAX)
    }

    /// Runs the shard until shutdown has been asked and every connection
    /// has closed (or the grace period ran out).
    pub async fn run(mut self, mut receiver: MeshReceiver) {
        let waiter = match self.poller.waiter() {
            Ok(waiter) => waiter,
            Err(err) => {
                tracing::error!(shard = self.idx, error = %err, "poller cannot join the runtime");
                return;
            }
        };
        let tick = Duration::from_millis(self.tick_ms());
        let mut grace_deadline_ms = u64::MAX;
        loop {
            let busy = self.turn(&mut receiver);
            if self.shared.mesh.is_shutting_down() && !self.stopping {
                // Publications already handed to this shard were
                // acknowledged to their publishers: queue them before the
                // connections close (the turn above may have drained the
                // mesh before the last of them arrived).
                self.now_ms = unix_ms();
                while receiver.drain(MESH_DRAIN_MAX, |event| self.handle_event(event)) > 0 {}
                self.begin_shutdown();
                grace_deadline_ms =
                    self.now_ms + self.shared.config.server.shutdown_grace.as_millis() as u64;
            }
            if self.stopping {
                if self.conns.is_empty() {
                    break;
                }
                if self.now_ms >= grace_deadline_ms {
                    tracing::warn!(
                        shard = self.idx,
                        left = self.conns.len(),
                        "shutdown grace ran out; dropping connections"
                    );
                    break;
                }
            }
            if busy {
                yield_now().await;
                continue;
            }
            let mut done = None;
            {
                let store_replies = &mut self.store_replies;
                let next_reply = poll_fn(|cx| {
                    if store_replies.is_empty() {
                        return Poll::Pending;
                    }
                    match store_replies.poll_next_unpin(cx) {
                        Poll::Ready(Some(reply)) => Poll::Ready(reply),
                        _ => Poll::Pending,
                    }
                });
                // Once shutdown was asked `wait` reports ready for good (the
                // flag is up), so a stopping shard waits only for what is
                // queued for it (store answers to its last requests above
                // all), or the loop would spin.
                let stopping = self.stopping;
                let mesh_wait = async {
                    if stopping {
                        receiver.wait_queued().await
                    } else {
                        receiver.wait().await
                    }
                };
                monoio::select! {
                    _ = waiter.readable(false) => {},
                    _ = mesh_wait => {},
                    reply = next_reply => done = Some(reply),
                    _ = monoio::time::sleep(tick) => {},
                }
            }
            if let Some(reply) = done {
                self.now_ms = unix_ms();
                self.on_store_done(reply);
            }
        }
        self.release_all(&waiter).await;
    }

    /// One turn: everything ready, without waiting. Returns true when work
    /// was left for the next turn (more mesh events or reads).
    fn turn(&mut self, receiver: &mut MeshReceiver) -> bool {
        self.now_ms = unix_ms();
        let mut busy = false;
        if self.shared.mesh.take_lagged(self.idx) {
            self.cut_durable_subscribers();
        }
        // Answers are taken before the lanes are drained and handled after:
        // the store queues a batch's publications before its answers, so a
        // publisher subscribed to its own channel gets the push queued
        // before its acknowledgement (unless the drain cap cuts in). All
        // of them: each answers a request this shard made.
        let mut answers = std::mem::take(&mut self.answers);
        receiver.drain_answers(usize::MAX, |answer| answers.push(answer));
        let taken = receiver.drain(MESH_DRAIN_MAX, |event| self.handle_event(event));
        busy |= taken == MESH_DRAIN_MAX;
        for answer in answers.drain(..) {
            self.on_store_answer(answer);
        }
        self.answers = answers;
        if std::mem::take(&mut self.accept_next_turn) {
            self.accept();
        }
        let mut events = std::mem::take(&mut self.events);
        if let Err(err) = self.poller.poll(&mut events) {
            tracing::error!(shard = self.idx, error = %err, "poller failed");
        }
        for event in events.drain(..) {
            match event {
                Event::Ready(0, _) => self.accept(),
                Event::Ready(token, hangup) => self.on_ready(conn::key_of(token), hangup),
                Event::Sent(token, result) => self.on_sent(conn::key_of(token), result),
            }
        }
        self.events = events;
        for key in std::mem::take(&mut self.read_again) {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.in_read_again = false;
                self.on_ready(key, true);
            }
        }
        busy |= !self.read_again.is_empty() || self.accept_next_turn;
        while let Some(Some(reply)) = self.store_replies.next().now_or_never() {
            self.on_store_done(reply);
        }
        if self.now_ms >= self.next_sweep_ms {
            self.next_sweep_ms = self.now_ms + self.tick_ms();
            self.sweep();
            if self.listener.is_some() && self.shared.is_draining() {
                // `Shared::drain`: the listener leaves the port's
                // `SO_REUSEPORT` group, so new connections go to the other
                // processes; the clients reconnect there.
                tracing::info!(
                    shard = self.idx,
                    "draining: listener closed, clients told 1012"
                );
                self.close_all(CloseCode::SERVICE_RESTART, "node draining, reconnect");
            }
            self.presence_tick();
            self.read_receipts_tick();
            if !self.pending_store.is_empty() && self.shared.store.health().writer_stopped {
                self.fail_pending_store();
            }
            if std::mem::take(&mut self.accept_at_tick) {
                self.accept();
            }
        }
        self.flush();
        if let Err(err) = self.poller.submit() {
            tracing::error!(shard = self.idx, error = %err, "submitting to the ring failed");
        }
        // A flush can queue more: a paused replay resumes once its
        // connection's queue drains (`resume_replay`). On io_uring the
        // send's completion wakes the loop; the epoll driver's sends are
        // done in place and nothing would, so the frames waited for the
        // next tick (a replay of 10,000 entries took ~75 s instead of ~1).
        busy |= !self.dirty.is_empty();
        busy
    }

    fn handle_event(&mut self, event: ShardEvent) {
        match event {
            ShardEvent::Publish(publication) => {
                // A lagged mark set before this publication was sent means
                // an earlier one of its stream may be missing: cut first, so
                // no subscriber gets a later offset over a gap.
                if self.shared.mesh.take_lagged(self.idx) {
                    self.cut_durable_subscribers();
                }
                if publication.dm().is_some() || publication.group().is_some() {
                    self.deliver_to_users(&publication);
                } else {
                    self.deliver_local(&publication);
                }
            }
            ShardEvent::ImEvent {
                user,
                frames,
                skip_client,
            } => self.deliver_im_event(&user, &frames, skip_client),
            ShardEvent::ImUsersEvent {
                users,
                skip_user,
                frames,
            } => self.deliver_im_event_to_users(&users, &skip_user, &frames),
            ShardEvent::CutPartitions { partitions } => self.cut_partitions(partitions),
            ShardEvent::DisconnectUser { user, code } => {
                let channel = crate::channels::personal_channel(&user);
                let keys = self
                    .subscribers
                    .get(channel.as_str())
                    .cloned()
                    .unwrap_or_default();
                for key in keys {
                    self.close(
                        key,
                        CloseReason {
                            code,
                            reason: "disconnected by server",
                            flush_queue: true,
                        },
                    );
                }
            }
            ShardEvent::SubscribeUser {
                user,
                channel,
                subscribe,
                reply,
            } => {
                let changed = self.subscribe_user(&user, &channel, subscribe);
                // The API may have given up waiting; nothing to do then.
                let _ = reply.send(changed);
            }
            ShardEvent::PresenceChanged { user, snapshot } => self.presence_tell(&user, snapshot),
            ShardEvent::Presence { channel, reply } => {
                let entries = self
                    .subscribers
                    .get(&*channel)
                    .map(|keys| {
                        keys.iter()
                            .filter_map(|key| self.conns.get(*key))
                            .map(|conn| PresenceEntry {
                                client: conn.client_id.to_string(),
                                user: conn.user.to_string(),
                                shard: self.idx,
                                // Validated at the connect answer: a copy.
                                info: conn.info().map(ToOwned::to_owned),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                // The API request may have timed out and dropped the receiver.
                let _ = reply.send(entries);
            }
        }
    }

    /// The store could not hand this shard some stored publications live
    /// (its lane was full): every connection subscribed to a durable stream
    /// may have missed one, so each is closed with 1013 and recovers the
    /// gap from the store when it reconnects with its position.
    fn cut_durable_subscribers(&mut self) {
        tracing::warn!(
            shard = self.idx,
            "fell behind the store's fan-out; closing subscribers of durable streams"
        );
        self.cut_durable_where(|_| true);
    }

    /// In a cluster: closes the subscribers of durable streams whose store
    /// partition is in `partitions`, publications of which may have been
    /// lost between nodes.
    fn cut_partitions(&mut self, partitions: u64) {
        let stores = self.shared.config.cluster.stores;
        let im = self
            .shared
            .config
            .im
            .enabled
            .then_some(self.shared.config.cluster.im_partition);
        // Conversation entries reach a connection through its user's
        // inbox: when the IM partition's may be lost, every connection of
        // a user is cut, and its reconnect syncs its conversations.
        let im_cut = im.is_some_and(|partition| partitions & (1u64 << partition) != 0);
        tracing::warn!(
            shard = self.idx,
            partitions = format!("{partitions:#x}"),
            "publications from other nodes may be lost; closing subscribers of their durable streams"
        );
        self.cut_durable_where(|channel| {
            partitions & (1u64 << crate::cluster::stream_partition(channel, stores, im)) != 0
                || (im_cut && crate::channels::is_personal(channel))
        });
    }

    fn cut_durable_where(&mut self, cut: impl Fn(&str) -> bool) {
        let mut keys = Vec::new();
        for (channel, subscribers) in &self.subscribers {
            if crate::streams::policy(&self.shared.config, channel).is_some() && cut(channel) {
                keys.extend_from_slice(subscribers);
            }
        }
        for key in keys {
            self.close(
                key,
                CloseReason {
                    code: CloseCode::TRY_AGAIN_LATER,
                    reason: "fell behind; reconnect to recover",
                    flush_queue: true,
                },
            );
        }
    }

    /// Visits `1/SWEEPS_PER_PERIOD` of the slab: heartbeats, expiry, slow
    /// consumers, handshake and close deadlines.
    fn sweep(&mut self) {
        let capacity = self.conns.capacity().max(1);
        let chunk = capacity.div_ceil(SWEEPS_PER_PERIOD as usize);
        let now = self.now_ms;
        let refresh_proxy = self
            .shared
            .config
            .proxy_index(&self.shared.config.websocket.refresh_proxy);
        for offset in 0..chunk {
            let key = (self.sweep_cursor + offset) % capacity;
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.session.is_closing() {
                // What the kernel still holds for the peer drains as it
                // reads: that is progress towards our close frame too.
                if let Some(unsent) = crate::sys::unsent_bytes(&conn.fd) {
                    if unsent < conn.unsent_seen {
                        conn.session.on_peer_progress(now, &self.session_config);
                    }
                    conn.unsent_seen = unsent;
                }
            }
            let timeout = conn.session.handle_timeout(now, &self.session_config);
            if let Some(proxy) = refresh_proxy {
                if timeout.is_none() && self.wants_refresh(key) {
                    self.start_refresh(key, proxy);
                }
            }
            let Some(timeout) = timeout else {
                continue;
            };
            let metrics = &self.shared.metrics[self.idx];
            match timeout {
                crate::session::Timeout::Heartbeat => metrics.heartbeat_timeouts.add(1),
                crate::session::Timeout::SlowConsumer => metrics.slow_consumer_disconnects.add(1),
                crate::session::Timeout::Handshake | crate::session::Timeout::Admission => {
                    metrics.handshakes_failed.add(1)
                }
                _ => {}
            }
            self.mark_dirty(key);
        }
        self.sweep_cursor = (self.sweep_cursor + chunk) % capacity;
        if self.sweep_cursor < chunk {
            // Once per sweep period: per-user buckets that refilled.
            self.user_buckets.sweep(&self.shared.config, now);
        }
    }

    /// Graceful stop: no new connections, every open one closed with 1001
    /// after its queue is flushed.
    fn begin_shutdown(&mut self) {
        self.stopping = true;
        self.close_all(CloseCode::GOING_AWAY, "server shutting down");
    }

    /// No new connections (the listener is closed), every open one closed
    /// with `code` after its queue is flushed: shutdown and drain.
    fn close_all(&mut self, code: CloseCode, reason: &'static str) {
        self.now_ms = unix_ms();
        if let Some(listener) = self.listener.take() {
            let _ = self
                .poller
                .deregister(std::os::fd::AsRawFd::as_raw_fd(&listener), 0);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(
                key,
                CloseReason {
                    code,
                    reason,
                    flush_queue: true,
                },
            );
        }
        self.flush();
        let _ = self.poller.submit();
    }

    /// Drops what is left at exit. Sends still in flight hold pointers
    /// into their connections' frames: cancel them and reap their
    /// completions before the frames (and the ring) go.
    async fn release_all(&mut self, waiter: &monoio::net::UnixStream) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for &key in &keys {
            if self.conns[key].send_in_flight() {
                let _ = self.poller.cancel_send(conn::token_of(key));
            }
        }
        let _ = self.poller.submit();
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while self.conns.iter().any(|(_, conn)| conn.send_in_flight()) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = monoio::time::timeout(left, waiter.readable(false)).await;
            let mut events = Vec::new();
            let _ = self.poller.poll(&mut events);
            for event in events {
                if let Event::Sent(token, _) = event {
                    if let Some(conn) = self.conns.get_mut(conn::key_of(token)) {
                        match conn.tls.as_deref_mut() {
                            Some(tls) => tls.in_flight = false,
                            None => conn.session.on_sent(0, self.now_ms, &self.session_config),
                        }
                    }
                }
            }
        }
        if self.conns.iter().any(|(_, conn)| conn.send_in_flight()) {
            // The kernel still owns memory of ours: leaking it is the only
            // safe way out.
            std::mem::forget(std::mem::take(&mut self.conns));
            return;
        }
        for key in keys {
            self.release(key);
        }
        self.subscribers.clear();
        self.inboxes.clear();
    }
}

/// Lets other tasks on this thread run once.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}
