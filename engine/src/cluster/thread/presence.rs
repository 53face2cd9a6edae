//! Presence across nodes, on the cluster thread (docs/cluster.md,
//! "Presence").
//!
//! The owner of a user's inbox partition knows which nodes hold the
//! user's connections (the directory). A node whose shards watch a user
//! registers the watch with that owner; the owner then tells it, now and
//! on every change, which *other* nodes hold the user (`PresenceUpdates`
//! on `<prefix>.w.<node>`). The watching node's presence book takes that
//! as the user's remote nodes (`PresenceBook::set_remote`), and reports
//! online and offline to its watchers as for a local change, the flap
//! damping included. A node found dead leaves every remote set at once,
//! so the staleness is bounded by `cluster.node_timeout_ms` plus the
//! offline grace.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use ringcast_protocol::cluster::{decode, encode, PresenceUpdates, StoreRequest, UserChange};

use super::Node;
use crate::cluster::partition_of;
use crate::interest::shard_indexes;
use crate::mesh::ShardEvent;
use crate::presence::book::{RemoteStep, Report};

impl Node {
    /// The node's watching of `user` changed (its first watcher came or
    /// its last went): registered with the user's inbox owner.
    pub(super) fn watch_event(&mut self, user: &str) {
        let watching = self.shared.presence_book.is_watched(user);
        let partition = partition_of(&crate::channels::personal_channel(user), self.stores);
        let me = self.cluster.node;
        if partition == u32::from(me) {
            self.set_watcher(user, me, watching);
            if watching {
                let held = self.held(user) & !(1u64 << me);
                self.apply_remote(user, held);
            }
            return;
        }
        if partition >= self.stores {
            return;
        }
        self.watches.entry(partition).or_default().push(UserChange {
            user: user.to_owned(),
            present: watching,
        });
    }

    fn set_watcher(&mut self, user: &str, node: u8, watching: bool) {
        let bit = 1u64 << node;
        if watching {
            *self.watchers.entry(user.into()).or_default() |= bit;
        } else if let Some(mask) = self.watchers.get_mut(user) {
            *mask &= !bit;
            if *mask == 0 {
                self.watchers.remove(user);
            }
        }
    }

    /// The nodes holding a connection of `user`, a user of this node's
    /// partition: the directory's live ones, and this node.
    fn held(&self, user: &str) -> u64 {
        let mut mask = self.directory.nodes(user);
        let channel = crate::channels::personal_channel(user);
        if self.shared.interest.shards(&channel) != 0 {
            mask |= 1u64 << self.cluster.node;
        }
        mask
    }

    /// The nodes holding `user` may have changed: every node watching it
    /// gets the set of the others (an absolute set: saying it twice is
    /// harmless).
    pub(super) fn notify_watchers(&mut self, user: &str) {
        let Some(&watchers) = self.watchers.get(user) else {
            return;
        };
        let held = self.held(user);
        let me = self.cluster.node;
        for node in shard_indexes(watchers) {
            let node = node as u8;
            let others = held & !(1u64 << node);
            if node == me {
                self.apply_remote(user, others);
            } else {
                self.presence_out
                    .entry(node)
                    .or_default()
                    .push((user.to_owned(), others));
            }
        }
    }

    /// A node's watches of users of this node's partition.
    pub(super) fn serve_watches(&mut self, node: u8, full: bool, changes: Vec<UserChange>) {
        let bit = 1u64 << node;
        if full {
            self.watchers.retain(|_, mask| {
                *mask &= !bit;
                *mask != 0
            });
        }
        for change in changes {
            self.set_watcher(&change.user, node, change.present);
            if change.present {
                let others = self.held(&change.user) & !bit;
                self.presence_out
                    .entry(node)
                    .or_default()
                    .push((change.user, others));
            }
        }
    }

    /// Sends the watch registrations waiting for each partition's owner
    /// and the presence updates waiting for each watching node.
    pub(super) async fn flush_presence(&mut self) {
        let partitions: Vec<u32> = self.watches.keys().copied().collect();
        for partition in partitions {
            if let Some(changes) = self.watches.remove(&partition) {
                self.send_watches(partition, false, changes).await;
            }
        }
        let out: Vec<_> = self.presence_out.drain().collect();
        for (node, changes) in out {
            let subject = self.subjects.watch(node);
            let payload = Bytes::from(encode(&PresenceUpdates { changes }).into_vec());
            if !self.publish(subject, payload).await {
                tracing::debug!(node, "cluster: presence updates not sent (NATS cut off)");
            }
        }
    }

    async fn send_watches(&self, partition: u32, full: bool, changes: Vec<UserChange>) {
        let request = StoreRequest::Watches {
            node: self.cluster.node,
            incarnation: self.cluster.incarnation,
            full,
            changes,
        };
        let subject = self.subjects.store(partition);
        if !self
            .publish(subject, Bytes::from(encode(&request).into_vec()))
            .await
        {
            tracing::debug!(
                partition,
                "cluster: watches not sent; resent in full on reconnect"
            );
        }
    }

    /// Every watched user of `partition`: the whole set, for an owner that
    /// (re)started or after a reconnect.
    pub(super) async fn send_all_watches(&mut self, partition: u32) {
        let mut changes = Vec::new();
        let stores = self.stores;
        self.shared.presence_book.watched_users(|user| {
            if partition_of(&crate::channels::personal_channel(user), stores) == partition {
                changes.push(UserChange {
                    user: user.to_owned(),
                    present: true,
                });
            }
        });
        self.watches.remove(&partition);
        self.send_watches(partition, true, changes).await;
    }

    /// An owner's word on users this node watches.
    pub(super) fn presence_updates(&mut self, payload: &[u8]) {
        let Ok(updates) = decode::<PresenceUpdates>(payload) else {
            tracing::warn!("cluster: dropped undecodable presence updates");
            return;
        };
        // As the owner says: a node found dead here leaves every set on
        // its own (`node_gone`), and one not heard here yet is alive.
        for (user, nodes) in updates.changes {
            self.apply_remote(&user, nodes & !(1u64 << self.cluster.node));
        }
    }

    /// The other nodes holding `user` are now `nodes`: into the book, and
    /// whatever it reports to the watching shards.
    pub(super) fn apply_remote(&mut self, user: &str, nodes: u64) {
        let now_ms = crate::shard::unix_ms();
        match self.shared.presence_book.set_remote(user, nodes, now_ms) {
            Some(RemoteStep::Report(report)) => self.dispatch_presence(user, report),
            Some(RemoteStep::OfflineAt { due_ms }) => {
                self.presence_due.push((due_ms, user.into()));
            }
            None => {}
        }
    }

    fn dispatch_presence(&mut self, user: &str, report: Report) {
        let user: Arc<str> = user.into();
        for shard in shard_indexes(report.watch_mask) {
            let event = ShardEvent::PresenceChanged {
                user: user.clone(),
                snapshot: report.snapshot,
            };
            if self.sender.send(shard, event).is_err() {
                self.shared.presence_book.mark_resync(shard);
            }
        }
    }

    /// Offline deadlines of users last held by other nodes.
    pub(super) fn presence_tick(&mut self, now_ms: u64) {
        if self.presence_due.is_empty() {
            return;
        }
        let due: Vec<_>;
        (due, self.presence_due) = std::mem::take(&mut self.presence_due)
            .into_iter()
            .partition(|(at, _)| *at <= now_ms);
        for (_, user) in due {
            if let Some((report, _idle)) = self.shared.presence_book.expire(&user, now_ms) {
                crate::presence::stored::keep(&self.shared.store, &user, report.snapshot);
                self.dispatch_presence(&user, report);
            }
        }
    }

    /// `node` died or restarted: the users it held leave the directory
    /// (their watchers are told), its watches end, and the users this node
    /// watches lose it from their remote sets.
    pub(super) fn node_gone(&mut self, node: u8) {
        let bit = 1u64 << node;
        for user in self.directory.forget_node(node) {
            self.notify_watchers(&user);
        }
        self.watchers.retain(|_, mask| {
            *mask &= !bit;
            *mask != 0
        });
        for (user, nodes) in self.shared.presence_book.remote_users_of(bit) {
            self.apply_remote(&user, nodes);
        }
        self.cluster
            .state
            .directory_users
            .store(self.directory.users() as u64, Ordering::Relaxed);
    }
}
