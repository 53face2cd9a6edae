//! Who is alive and what may be lost: heartbeats and node expiry, the
//! NATS connection going and coming back, the client's events, the
//! periodic resync, and the cuts of durable subscribers (docs/cluster.md,
//! "NATS failure").

use super::*;

impl Node {
    /// This node's whole set of users and watches, to every owner it
    /// hears: after a reconnect, or a change that could not be queued.
    async fn register_with_every_owner(&mut self) {
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
    }

    pub(super) async fn heartbeat(&mut self, payload: &[u8]) {
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

    pub(super) async fn tick(&mut self) {
        let now_ms = crate::shard::unix_ms();
        self.connection_state(now_ms).await;
        if std::mem::take(&mut self.resend_all) {
            self.ask_every_node_to_resend().await;
        }
        self.im_order.borrow_mut().expire(now_ms, &self.sender);
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
    pub(super) async fn connection_state(&mut self, now_ms: u64) {
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
    pub(super) async fn reconnected(&mut self) {
        self.cluster
            .state
            .reconnects
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            "cluster: reconnected to NATS; re-registering users, recovering durable subscribers"
        );
        self.say_publications_lost().await;
        self.register_with_every_owner().await;
        self.request_cut(self.remote_partitions());
    }

    pub(super) async fn say_publications_lost(&mut self) {
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

    /// Asks every live node for its whole sets of users and watches of
    /// this node's partition (each cuts its subscribers of the partition
    /// as on any `Resend`, so what was skipped meanwhile is recovered).
    async fn ask_every_node_to_resend(&mut self) {
        let me = self.cluster.node;
        for node in shard_indexes(self.nodes.mask() & !(1u64 << me)) {
            let resend = Broadcast::Resend {
                owner: me,
                node: node as u8,
            };
            let subject = self.subjects.all();
            self.publish(subject, Bytes::from(encode(&resend).into_vec()))
                .await;
        }
    }

    /// An event of the NATS client.
    pub(super) fn event(&mut self, event: async_nats::Event) {
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
                if self.cluster.owns_partition() {
                    // It may have been the partition's subject, and a lost
                    // registration is a user this owner would not forward
                    // to: every node registers all its users again.
                    self.resend_all = true;
                }
            }
            async_nats::Event::LameDuckMode => {
                tracing::warn!("cluster: the NATS server is in lame duck mode (shutting down)");
            }
            other => tracing::debug!(event = %other, "cluster: NATS client event"),
        }
    }

    pub(super) async fn send_heartbeat(&mut self) {
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
    pub(super) async fn resync(&mut self) {
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
            self.register_with_every_owner().await;
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

    /// Publications of durable streams of `partitions` (a bitmask) may
    /// have been lost on their way here: their subscribers here are to be
    /// cut (1013) and recover from the owners. Carried out at the tick, at
    /// most once per `CUT_INTERVAL_MS`, so several reasons at once cut
    /// once; a request is never dropped, only merged and deferred.
    pub(super) fn request_cut(&mut self, partitions: u64) {
        self.cut_pending |= partitions;
    }

    /// Every partition but this node's own (whose entries reach its shards
    /// through the mesh, never through NATS).
    pub(super) fn remote_partitions(&self) -> u64 {
        let all = if self.stores >= 64 {
            u64::MAX
        } else {
            (1u64 << self.stores) - 1
        };
        all & !(1u64 << self.cluster.node)
    }

    pub(super) fn cut_due(&mut self, now_ms: u64) {
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
}
