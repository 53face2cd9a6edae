//! One shard: a pinned thread running one monoio runtime that owns a slice of
//! the connections outright.
//!
//! All shard state lives in `Shard` behind `RefCell`s that only this thread
//! touches; tasks on the thread interleave only at `.await` points, and no
//! borrow is held across one. The shard runs four kinds of task: the accept
//! loop, one task per connection (`io.rs`), the heartbeat sweep, and the mesh
//! loop that drains cross-shard events. Nothing here blocks: no locks, no
//! fjall, no `thread::sleep`.

mod commands;
pub mod conn;
mod fanout;
mod io;
mod recovery;

/// The fan-out loop, for `benches/benches/fanout.rs` only: not part of the
/// engine's API, so it exists only with the `bench-internals` feature.
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub use fanout::deliver;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use ringcast_protocol::close::CloseCode;
use ringcast_protocol::envelope::MessageIdGen;
use slab::Slab;

use crate::engine::Shared;
use crate::mesh::{MeshReceiver, MeshSender, PresenceEntry, ShardEvent, MESH_DRAIN_MAX};
use conn::{CloseReason, Conn};

/// Sweeps per heartbeat period: each connection is checked this many times
/// per `min(ping_interval, pong_timeout)`.
const SWEEPS_PER_PERIOD: u64 = 10;

/// Events parked because the destination's mesh queue was full, per
/// destination shard, so order per destination is kept.
const BACKLOG_EVENTS_MAX: usize = 65_536;

pub struct Shard {
    pub idx: usize,
    pub shared: Arc<Shared>,
    sender: MeshSender,
    conns: RefCell<Slab<Conn>>,
    /// channel → keys of local connections subscribed to it.
    subscribers: RefCell<HashMap<Rc<str>, Vec<usize>>>,
    /// Connections with frames queued since the last flush.
    dirty: RefCell<Vec<usize>>,
    /// The shard's one read buffer; see `sys`.
    scratch: RefCell<Box<[u8]>>,
    message_ids: RefCell<MessageIdGen>,
    /// Per destination shard: events the mesh refused, oldest first.
    backlog: RefCell<Vec<VecDeque<ShardEvent>>>,
    backlog_waker: RefCell<Option<Waker>>,
    /// Unix milliseconds, refreshed by the sweep and on every mesh drain.
    now_ms: Cell<u64>,
    next_client_seq: Cell<u64>,
    /// Unix milliseconds when this shard started; part of default device ids.
    started_unix_ms: u64,
    stopping: Cell<bool>,
    accept_waker: RefCell<Option<Waker>>,
    idle_waker: RefCell<Option<Waker>>,
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Shard {
    pub fn new(idx: usize, shared: Arc<Shared>, sender: MeshSender) -> Shard {
        let ws = &shared.config.websocket;
        // A whole frame plus its header must fit the scratch buffer, since
        // frames are decoded in place.
        let scratch_bytes = (ws.frame_bytes_max + 14).max(64 * 1024);
        let n_shards = shared.mesh.n_consumers();
        let node_id = shared.config.server.node_id.get();
        Shard {
            idx,
            message_ids: RefCell::new(MessageIdGen::new(node_id, idx as u8)),
            sender,
            // Sized for the configured maximum up front: the pages are only
            // committed as slots are used, and the slab never reallocates
            // (a doubling copy at 16k connections costs more than the
            // connections themselves).
            conns: RefCell::new(Slab::with_capacity(ws.connections_max_per_shard as usize)),
            subscribers: RefCell::new(HashMap::new()),
            dirty: RefCell::new(Vec::new()),
            scratch: RefCell::new(vec![0; scratch_bytes].into_boxed_slice()),
            backlog: RefCell::new((0..n_shards).map(|_| VecDeque::new()).collect()),
            backlog_waker: RefCell::new(None),
            now_ms: Cell::new(unix_ms()),
            next_client_seq: Cell::new(1),
            started_unix_ms: unix_ms(),
            stopping: Cell::new(false),
            accept_waker: RefCell::new(None),
            idle_waker: RefCell::new(None),
            shared,
        }
    }

    pub fn metrics(&self) -> &crate::metrics::ShardMetrics {
        &self.shared.metrics[self.idx]
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms.get()
    }

    fn next_client_id(&self) -> u64 {
        let seq = self.next_client_seq.get();
        self.next_client_seq.set(seq + 1);
        let node_id = u64::from(self.shared.config.server.node_id.get());
        (node_id << 58) | ((self.idx as u64) << 52) | (seq & ((1 << 52) - 1))
    }

    /// The device id acknowledgements of `conn` are stored under: its
    /// `?device=`, or one unique to the connection. Client ids restart with
    /// the process, so the shard's start time is part of the default and a
    /// cursor acked under it can never be read back by another connection.
    pub(super) fn device_id(&self, conn: &Conn) -> String {
        match &conn.device {
            Some(device) => device.to_string(),
            None => format!("conn-{}-{}", self.started_unix_ms, conn.client_id),
        }
    }

    pub fn n_conns(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Runs the shard until shutdown has been asked and every connection
    /// has closed (or the grace period ran out).
    pub async fn run(
        self: Rc<Self>,
        listener: monoio::net::TcpListener,
        mut receiver: MeshReceiver,
    ) {
        monoio::spawn(self.clone().accept_loop(listener));
        monoio::spawn(self.clone().sweep_loop());
        monoio::spawn(self.clone().backlog_loop());
        loop {
            receiver.wait().await;
            if self.shared.mesh.is_shutting_down() {
                // Publications already handed to this shard were
                // acknowledged to their publishers: deliver them before the
                // connections close.
                self.now_ms.set(unix_ms());
                while receiver.drain(MESH_DRAIN_MAX, |event| self.handle_event(event)) > 0 {}
                self.flush_dirty();
                break;
            }
            self.now_ms.set(unix_ms());
            let taken = receiver.drain(MESH_DRAIN_MAX, |event| self.handle_event(event));
            self.flush_dirty();
            if taken == MESH_DRAIN_MAX {
                yield_now().await;
            }
        }
        self.shutdown().await;
    }

    fn handle_event(&self, event: ShardEvent) {
        match event {
            ShardEvent::Publish(publication) => self.deliver_local(&publication),
            ShardEvent::DisconnectUser { user, code } => {
                let channel = crate::channels::personal_channel(&user);
                let keys = self
                    .subscribers
                    .borrow()
                    .get(channel.as_str())
                    .cloned()
                    .unwrap_or_default();
                let mut conns = self.conns.borrow_mut();
                for key in keys {
                    if let Some(conn) = conns.get_mut(key) {
                        conn.request_close(CloseReason {
                            code,
                            reason: "disconnected by server",
                            flush_queue: true,
                        });
                    }
                }
            }
            ShardEvent::Presence { channel, reply } => {
                let subscribers = self.subscribers.borrow();
                let conns = self.conns.borrow();
                let entries = subscribers
                    .get(&*channel)
                    .map(|keys| {
                        keys.iter()
                            .filter_map(|key| conns.get(*key))
                            .map(|conn| PresenceEntry {
                                client: conn.client_id.to_string(),
                                user: conn.user.to_string(),
                                shard: self.idx,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                // The API request may have timed out and dropped the receiver.
                let _ = reply.send(entries);
            }
        }
    }

    async fn accept_loop(self: Rc<Self>, listener: monoio::net::TcpListener) {
        loop {
            let stopping = poll_fn(|cx| {
                if self.stopping.get() {
                    Poll::Ready(())
                } else {
                    *self.accept_waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            });
            monoio::select! {
                _ = stopping => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        let _ = stream.set_nodelay(true);
                        monoio::spawn(io::serve(self.clone(), stream));
                    }
                    Err(err) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(shard = self.idx, error = %err, "accept failed");
                        monoio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        }
    }

    /// The coarse timer: instead of a timer per connection, visit a slice of
    /// the slab every tick so each connection is checked
    /// `SWEEPS_PER_PERIOD` times per heartbeat period.
    async fn sweep_loop(self: Rc<Self>) {
        let ws = &self.shared.config.websocket;
        let period = ws
            .ping_interval
            .min(ws.pong_timeout)
            .min(ws.slow_consumer_timeout);
        let tick = (period / SWEEPS_PER_PERIOD as u32)
            .clamp(Duration::from_millis(10), Duration::from_millis(1000));
        let mut cursor = 0usize;
        while !self.stopping.get() {
            monoio::time::sleep(tick).await;
            self.now_ms.set(unix_ms());
            cursor = self.sweep(cursor);
            self.flush_dirty();
        }
    }

    /// Checks `1/SWEEPS_PER_PERIOD` of the slab starting at `cursor`; returns
    /// the next cursor.
    fn sweep(&self, cursor: usize) -> usize {
        let ws = &self.shared.config.websocket;
        let now = self.now_ms();
        let ping_interval_ms = ws.ping_interval.as_millis() as u64;
        let pong_timeout_ms = ws.pong_timeout.as_millis() as u64;
        let slow_ms = ws.slow_consumer_timeout.as_millis() as u64;
        let mut conns = self.conns.borrow_mut();
        let capacity = conns.capacity().max(1);
        let chunk = capacity.div_ceil(SWEEPS_PER_PERIOD as usize);
        let mut dirty = self.dirty.borrow_mut();
        let metrics = self.metrics();
        for offset in 0..chunk {
            let key = (cursor + offset) % capacity;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            if conn.closing.is_some() {
                continue;
            }
            if conn.expires_at_ms != 0 && now >= conn.expires_at_ms {
                conn.request_close(CloseReason {
                    code: CloseCode::TOKEN_EXPIRED,
                    reason: "token expired",
                    flush_queue: true,
                });
            } else if conn.stalled_since_ms != 0
                && now.saturating_sub(conn.stalled_since_ms) >= slow_ms
            {
                metrics.slow_consumer_disconnects.add(1);
                conn.request_close(CloseReason {
                    code: CloseCode::TRY_AGAIN_LATER,
                    reason: "slow consumer",
                    flush_queue: false,
                });
            } else if conn.ping_sent_ms != 0 {
                if now.saturating_sub(conn.ping_sent_ms) >= pong_timeout_ms {
                    metrics.heartbeat_timeouts.add(1);
                    conn.request_close(CloseReason {
                        code: CloseCode::HEARTBEAT_TIMEOUT,
                        reason: "heartbeat timeout",
                        flush_queue: false,
                    });
                }
            } else if now.saturating_sub(conn.last_rx_ms) >= ping_interval_ms {
                conn.ping_sent_ms = now;
                fanout::enqueue(
                    conn,
                    key,
                    Bytes::from_static(&PING_FRAME),
                    &mut dirty,
                    ws.outbound_queue_bytes_max,
                    metrics,
                    now,
                );
            }
        }
        (cursor + chunk) % capacity
    }

    /// Retries events the mesh refused, in order, until every backlog is
    /// empty.
    async fn backlog_loop(self: Rc<Self>) {
        loop {
            poll_fn(|cx| {
                if self.backlog.borrow().iter().any(|q| !q.is_empty()) || self.stopping.get() {
                    Poll::Ready(())
                } else {
                    *self.backlog_waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            if self.stopping.get() {
                return;
            }
            monoio::time::sleep(Duration::from_micros(200)).await;
            let mut backlog = self.backlog.borrow_mut();
            for (dst, queue) in backlog.iter_mut().enumerate() {
                while let Some(event) = queue.pop_front() {
                    if let Err(event) = self.sender.send(dst, event) {
                        queue.push_front(event);
                        break;
                    }
                }
            }
        }
    }

    /// Sends `event` to shard `dst`, parking it behind earlier refused
    /// events for the same shard. False when even the backlog is full.
    fn send_to_shard(&self, dst: usize, event: ShardEvent) -> bool {
        let mut backlog = self.backlog.borrow_mut();
        let queue = &mut backlog[dst];
        let event = if queue.is_empty() {
            match self.sender.send(dst, event) {
                Ok(()) => return true,
                Err(event) => event,
            }
        } else {
            event
        };
        self.metrics().mesh_full.add(1);
        if queue.len() >= BACKLOG_EVENTS_MAX {
            return false;
        }
        queue.push_back(event);
        if let Some(waker) = self.backlog_waker.borrow_mut().take() {
            waker.wake();
        }
        true
    }

    /// Graceful stop: no new connections, every open one closed with 1001
    /// after its queue is flushed, bounded by `shutdown_grace`.
    async fn shutdown(&self) {
        self.stopping.set(true);
        if let Some(waker) = self.accept_waker.borrow_mut().take() {
            waker.wake();
        }
        if let Some(waker) = self.backlog_waker.borrow_mut().take() {
            waker.wake();
        }
        for (_, conn) in self.conns.borrow_mut().iter_mut() {
            conn.request_close(CloseReason {
                code: CloseCode::GOING_AWAY,
                reason: "server shutting down",
                flush_queue: true,
            });
        }
        let grace = self.shared.config.server.shutdown_grace;
        let all_closed = poll_fn(|cx| {
            if self.conns.borrow().is_empty() {
                Poll::Ready(())
            } else {
                *self.idle_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        if monoio::time::timeout(grace, all_closed).await.is_err() {
            tracing::warn!(
                shard = self.idx,
                left = self.n_conns(),
                "shutdown grace ran out; dropping connections"
            );
        }
        // Break reference cycles before the runtime is dropped: a task's
        // waker stored in a `Conn` (or in a waker slot here) keeps that
        // task alive, and the task holds an `Rc` of this shard, which holds
        // the engine's shared state and, through it, the store.
        self.conns.borrow_mut().clear();
        self.subscribers.borrow_mut().clear();
        self.dirty.borrow_mut().clear();
        for queue in self.backlog.borrow_mut().iter_mut() {
            queue.clear();
        }
        self.accept_waker.borrow_mut().take();
        self.backlog_waker.borrow_mut().take();
        self.idle_waker.borrow_mut().take();
    }
}

/// An unmasked ping with no payload: `FIN | Ping`, length 0.
const PING_FRAME: [u8; 2] = [0x89, 0x00];

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
