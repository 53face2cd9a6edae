//! The write side of a shard: queueing shared frames on connections,
//! flushing them with one vectored write per connection, delivering
//! publications to local subscribers, and routing new publications to the
//! shards that have subscribers.
//!
//! Delivery never writes per frame: it queues a reference-counted frame and
//! marks the connection dirty; the shard flushes every dirty connection once
//! per batch, so a connection that received ten pushes in one batch gets one
//! `sendmsg` with ten iovecs.

use std::io::IoSlice;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use ringcast_protocol::close::CloseCode;
use ringcast_protocol::envelope::Envelope;
use slab::Slab;

use super::conn::{CloseReason, Conn};
use super::Shard;
use crate::interest::shard_indexes;
use crate::mesh::ShardEvent;
use crate::metrics::ShardMetrics;
use crate::publication::Publication;
use crate::sys::{self, IOV_MAX};

/// A blocked connection this many times over its bound is cut off at once,
/// without waiting for the slow-consumer timeout, so memory stays bounded.
const QUEUE_HARD_LIMIT_FACTOR: usize = 4;

/// Queues `frame` on `conn` and marks it dirty. Applies the outbound bound.
pub(super) fn enqueue(
    conn: &mut Conn,
    key: usize,
    frame: Bytes,
    dirty: &mut Vec<usize>,
    queue_bytes_max: usize,
    metrics: &ShardMetrics,
    now_ms: u64,
) {
    if conn.closing.is_some() {
        return;
    }
    conn.out_bytes += frame.len();
    conn.out.push_back(frame);
    metrics.messages_out.add(1);
    if conn.out_bytes > queue_bytes_max {
        if conn.stalled_since_ms == 0 {
            conn.stalled_since_ms = now_ms;
        }
        // Only a connection whose socket is full counts: one that is merely
        // waiting for the end-of-batch flush may briefly hold a burst.
        if conn.write_blocked && conn.out_bytes > queue_bytes_max * QUEUE_HARD_LIMIT_FACTOR {
            metrics.slow_consumer_disconnects.add(1);
            conn.request_close(CloseReason {
                code: CloseCode::TRY_AGAIN_LATER,
                reason: "slow consumer",
                flush_queue: false,
            });
            return;
        }
    }
    if !conn.in_dirty {
        conn.in_dirty = true;
        dirty.push(key);
    }
}

/// Queues `publication`'s frame (JSON or binary, per connection) on every
/// connection in `keys` and marks each dirty: the whole per-recipient cost
/// of a publication on a shard, short of the flush.
///
/// Public only so `benches/benches/fanout.rs` can time exactly this loop; it
/// is re-exported under the `bench-internals` feature (see `shard/mod.rs`).
pub fn deliver(
    conns: &mut Slab<Conn>,
    keys: &[usize],
    publication: &Arc<Publication>,
    dirty: &mut Vec<usize>,
    queue_bytes_max: usize,
    metrics: &ShardMetrics,
    now_ms: u64,
) {
    metrics.publications.add(1);
    for &key in keys {
        let Some(conn) = conns.get_mut(key) else {
            continue;
        };
        if super::recovery::hold(conn, publication) {
            continue;
        }
        let frame = if conn.binary {
            &publication.binary_frame
        } else {
            &publication.json_frame
        };
        enqueue(
            conn,
            key,
            frame.clone(),
            dirty,
            queue_bytes_max,
            metrics,
            now_ms,
        );
    }
}

/// Writes as much of `conn`'s queue as the socket takes. Returns false when
/// the socket failed and the connection must close.
pub(super) fn flush_conn(
    conn: &mut Conn,
    queue_bytes_max: usize,
    metrics: &ShardMetrics,
    now_ms: u64,
) -> bool {
    conn.in_dirty = false;
    if conn.write_blocked {
        // The connection's task is waiting for writability and will flush.
        return true;
    }
    while !conn.out.is_empty() {
        let mut slices: [IoSlice<'_>; IOV_MAX] = [IoSlice::new(&[]); IOV_MAX];
        let mut n_slices = 0;
        for (slot, frame) in slices.iter_mut().zip(conn.out.iter()) {
            *slot = IoSlice::new(frame);
            n_slices += 1;
        }
        let offered: usize = slices[..n_slices].iter().map(|s| s.len()).sum();
        match sys::send_vectored(conn.fd, &slices[..n_slices]) {
            Ok(sys::Io::Done(written)) => {
                conn.consume_written(written);
                metrics.bytes_out.add(written as u64);
                if conn.out_bytes <= queue_bytes_max {
                    conn.stalled_since_ms = 0;
                }
                if written < offered {
                    // The socket buffer is full; the next call would block.
                    conn.write_blocked = true;
                    break;
                }
            }
            Ok(sys::Io::WouldBlock) => {
                conn.write_blocked = true;
                break;
            }
            Err(_) => return false,
        }
    }
    if conn.write_blocked {
        if conn.stalled_since_ms == 0 {
            conn.stalled_since_ms = now_ms;
        }
        conn.wake();
    }
    true
}

/// Outcome of routing a publication.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Routed {
    Delivered,
    /// Some shard's queue and backlog were both full.
    Overloaded,
}

impl Shard {
    /// Flushes every connection that got frames since the last flush.
    pub(super) fn flush_dirty(&self) {
        let mut dirty = std::mem::take(&mut *self.dirty.borrow_mut());
        if dirty.is_empty() {
            return;
        }
        let queue_bytes_max = self.shared.config.websocket.outbound_queue_bytes_max;
        let now = self.now_ms();
        let metrics = self.metrics();
        let mut conns = self.conns.borrow_mut();
        for key in dirty.drain(..) {
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            if !flush_conn(conn, queue_bytes_max, metrics, now) {
                conn.request_close(CloseReason {
                    code: CloseCode::GOING_AWAY,
                    reason: "write failed",
                    flush_queue: false,
                });
            }
        }
        // Hand the allocation back so steady state does not allocate.
        let mut slot = self.dirty.borrow_mut();
        if slot.is_empty() {
            *slot = dirty;
        }
    }

    /// Queues a frame on one connection (replies, pongs, close frames).
    pub(super) fn send_frame(&self, key: usize, frame: Bytes) {
        let queue_bytes_max = self.shared.config.websocket.outbound_queue_bytes_max;
        let mut conns = self.conns.borrow_mut();
        if let Some(conn) = conns.get_mut(key) {
            enqueue(
                conn,
                key,
                frame,
                &mut self.dirty.borrow_mut(),
                queue_bytes_max,
                self.metrics(),
                self.now_ms(),
            );
        }
    }

    /// Queues the publication's frame on every local subscriber.
    pub(super) fn deliver_local(&self, publication: &Arc<Publication>) {
        let subscribers = self.subscribers.borrow();
        let Some(keys) = subscribers.get(publication.channel()) else {
            return;
        };
        deliver(
            &mut self.conns.borrow_mut(),
            keys,
            publication,
            &mut self.dirty.borrow_mut(),
            self.shared.config.websocket.outbound_queue_bytes_max,
            self.metrics(),
            self.now_ms(),
        );
    }

    /// Encodes `envelope` once and sends it to every shard with a subscriber
    /// of its channel, this one included.
    pub(super) fn publish(&self, envelope: &Envelope) -> Routed {
        let publication = Arc::new(Publication::new(envelope));
        let mask = self.shared.interest.shards(&envelope.channel);
        let mut routed = Routed::Delivered;
        for shard_idx in shard_indexes(mask) {
            if shard_idx == self.idx {
                self.deliver_local(&publication);
            } else if !self.send_to_shard(shard_idx, ShardEvent::Publish(publication.clone())) {
                routed = Routed::Overloaded;
            }
        }
        routed
    }

    /// Adds `key` to `channel`'s local subscribers; the first local
    /// subscriber registers this shard's interest.
    pub(super) fn subscribe(&self, key: usize, channel: &str) {
        let mut subscribers = self.subscribers.borrow_mut();
        let channel: Rc<str> = match subscribers.get_key_value(channel) {
            Some((existing, _)) => existing.clone(),
            None => {
                self.shared.interest.add(channel, self.idx);
                let channel: Rc<str> = channel.into();
                subscribers.insert(channel.clone(), Vec::new());
                channel
            }
        };
        if let Some(keys) = subscribers.get_mut(&channel) {
            keys.push(key);
        }
        if let Some(conn) = self.conns.borrow_mut().get_mut(key) {
            conn.subscriptions.push(channel);
        }
        self.metrics().subscriptions.add(1);
    }

    /// Removes `key` from `channel`'s local subscribers; the last one
    /// withdraws this shard's interest.
    pub(super) fn unsubscribe(&self, key: usize, channel: &str) {
        if let Some(conn) = self.conns.borrow_mut().get_mut(key) {
            conn.subscriptions.retain(|c| &**c != channel);
            if let Some(streams) = conn.recovering.as_mut() {
                streams.retain(|entry| &*entry.stream != channel);
                if streams.is_empty() {
                    conn.recovering = None;
                }
            }
        }
        self.remove_subscriber(key, channel);
    }

    fn remove_subscriber(&self, key: usize, channel: &str) {
        let mut subscribers = self.subscribers.borrow_mut();
        let Some(keys) = subscribers.get_mut(channel) else {
            return;
        };
        if let Some(pos) = keys.iter().position(|k| *k == key) {
            keys.swap_remove(pos);
            self.metrics().subscriptions.sub(1);
        }
        if keys.is_empty() {
            subscribers.remove(channel);
            self.shared.interest.remove(channel, self.idx);
        }
    }

    /// Drops every subscription of `key` (the connection is closing).
    pub(super) fn unsubscribe_all(&self, key: usize) {
        let channels = match self.conns.borrow_mut().get_mut(key) {
            Some(conn) => std::mem::take(&mut conn.subscriptions),
            None => return,
        };
        for channel in channels {
            self.remove_subscriber(key, &channel);
        }
    }
}
