//! The write side of a shard: delivering publications to local
//! subscribers, the one publish path for publications that start here,
//! replies, and the subscription index.
//!
//! Delivery never writes per frame: it queues a reference-counted frame on
//! each session and marks the connection dirty; the turn's flush then sends
//! each dirty connection's queue once, so a connection that received ten
//! pushes in one turn gets one vectored send.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use ringcast_protocol::client::{encode_reply_binary, encode_reply_json, Reply};
use ringcast_protocol::envelope::Envelope;
use ringcast_protocol::frame::{encode_frame, OpCode};
use slab::Slab;

use super::conn::Conn;
use super::Shard;
use crate::mesh::Overloaded;
use crate::metrics::ShardMetrics;
use crate::presence::Change;
use crate::publication::Publication;
use crate::session::{Offer, SessionConfig};

/// Offers `publication` to every connection in `keys` and marks each that
/// queued it dirty: the whole per-recipient cost of a publication on a
/// shard, short of the flush.
///
/// Public only so `benches/benches/fanout.rs` can time exactly this loop; it
/// is re-exported under the `bench-internals` feature (see `shard/mod.rs`).
pub fn deliver(
    conns: &mut Slab<Conn>,
    keys: &[usize],
    publication: &Arc<Publication>,
    dirty: &mut Vec<usize>,
    config: &SessionConfig,
    metrics: &ShardMetrics,
    now_ms: u64,
) {
    metrics.publications.add(1);
    for &key in keys {
        let Some(conn) = conns.get_mut(key) else {
            continue;
        };
        match conn.session.offer(publication, now_ms, config) {
            Offer::Queued => metrics.messages_out.add(1),
            Offer::SlowConsumer => metrics.slow_consumer_disconnects.add(1),
            Offer::Held | Offer::Dropped => continue,
        }
        if !conn.in_dirty {
            conn.in_dirty = true;
            dirty.push(key);
        }
    }
}

impl Shard {
    /// Queues a frame on one connection (replies, pushes, pongs).
    pub(super) fn send_frame(&mut self, key: usize, frame: Bytes) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let offer = conn.session.queue(frame, self.now_ms, &self.session_config);
        let metrics = &self.shared.metrics[self.idx];
        match offer {
            Offer::Queued => metrics.messages_out.add(1),
            Offer::SlowConsumer => metrics.slow_consumer_disconnects.add(1),
            Offer::Held | Offer::Dropped => {}
        }
        self.mark_dirty(key);
    }

    pub(super) fn send_reply(&mut self, key: usize, reply: &Reply) {
        let Some(binary) = self.conns.get(key).map(|c| c.session.binary()) else {
            return;
        };
        let frame = if binary {
            encode_frame(OpCode::Binary, &encode_reply_binary(reply), None)
        } else {
            encode_frame(OpCode::Text, &encode_reply_json(reply), None)
        };
        self.send_frame(key, frame);
    }

    /// Offers the publication to every local subscriber.
    pub(super) fn deliver_local(&mut self, publication: &Arc<Publication>) {
        let Some(keys) = self.subscribers.get(publication.channel()) else {
            return;
        };
        deliver(
            &mut self.conns,
            keys,
            publication,
            &mut self.dirty,
            &self.session_config,
            &self.shared.metrics[self.idx],
            self.now_ms,
        );
    }

    /// The one publish path, from a shard: encodes `envelope` once and hands
    /// it to every shard with a subscriber of its channel, this one
    /// included, or to none (`Overloaded`) when some shard's lane from this
    /// shard is full.
    pub(super) fn publish(&mut self, envelope: &Envelope) -> Result<(), Overloaded> {
        let publication = Arc::new(Publication::new(envelope));
        let mask = self.shared.interest.shards(&envelope.channel);
        let sender = &self.sender;
        let mut local = false;
        let routed = sender.publish(mask, &publication, Some(self.idx), |_| local = true);
        if routed.is_err() {
            self.shared.metrics[self.idx].mesh_full.add(1);
        } else {
            // Only what this node took goes to the others: a refused
            // publication is delivered nowhere, so its retry is no
            // duplicate anywhere.
            crate::cluster::publish_live(&self.shared, &publication);
        }
        if local {
            self.deliver_local(&publication);
        }
        routed
    }

    /// Adds `key` to `channel`'s local subscribers; the first local
    /// subscriber registers this shard's interest (before the subscribe is
    /// answered, so any publish after the reply is routed here).
    pub(super) fn subscribe(&mut self, key: usize, channel: &str) {
        let channel: Rc<str> = match self.subscribers.get_key_value(channel) {
            Some((existing, _)) => existing.clone(),
            None => {
                let change = self.presence_change(key, channel);
                self.shared
                    .presence
                    .add(&self.shared.interest, &self.shared.store, change);
                let channel: Rc<str> = channel.into();
                // Most channels of a shard are personal ones with a single
                // subscriber: start at one slot, not the default four.
                self.subscribers
                    .insert(channel.clone(), Vec::with_capacity(1));
                if crate::channels::is_personal(&channel) {
                    self.inboxes.insert(channel.clone());
                }
                channel
            }
        };
        if let Some(keys) = self.subscribers.get_mut(&channel) {
            keys.push(key);
        }
        if let Some(conn) = self.conns.get_mut(key) {
            // Every connection has its personal channel and most have
            // nothing else: one slot first, not the default four.
            if conn.subscriptions.capacity() == 0 {
                conn.subscriptions.reserve_exact(1);
            }
            conn.subscriptions.push(channel);
        }
        self.shared.metrics[self.idx].subscriptions.add(1);
    }

    /// This shard's first subscriber of `channel` came or its last went,
    /// through connection `key`: what `crate::presence` needs to know.
    fn presence_change<'a>(&self, key: usize, channel: &'a str) -> Change<'a> {
        Change {
            channel,
            shard_idx: self.idx,
            client_id: self.conns.get(key).map_or(0, |conn| conn.client_id),
        }
    }

    /// Removes `key` from `channel`'s local subscribers; the last one
    /// withdraws this shard's interest.
    pub(super) fn unsubscribe(&mut self, key: usize, channel: &str) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.subscriptions.retain(|c| &**c != channel);
            conn.session.forget_recovery(channel);
        }
        // A replay of the channel waiting for the queue to drain is over.
        self.paused_replays
            .retain(|job| job.key != key || job.stream != channel);
        self.remove_subscriber(key, channel);
    }

    fn remove_subscriber(&mut self, key: usize, channel: &str) {
        let Some(keys) = self.subscribers.get_mut(channel) else {
            return;
        };
        if let Some(pos) = keys.iter().position(|k| *k == key) {
            keys.swap_remove(pos);
            self.shared.metrics[self.idx].subscriptions.sub(1);
        }
        if keys.is_empty() {
            self.subscribers.remove(channel);
            self.inboxes.remove(channel);
            let change = self.presence_change(key, channel);
            self.shared
                .presence
                .remove(&self.shared.interest, &self.shared.store, change);
        }
    }

    /// Drops every subscription of `key` (the connection is going).
    pub(super) fn unsubscribe_all(&mut self, key: usize) {
        let channels = match self.conns.get_mut(key) {
            Some(conn) => std::mem::take(&mut conn.subscriptions),
            None => return,
        };
        for channel in channels {
            self.remove_subscriber(key, &channel);
        }
    }
}
