//! Serving the other nodes: this node's store partition (forwarded appends,
//! reads and cursors; the users' registrations), and its answers to
//! queries. The owner's side of `crate::partition`.

use super::*;

impl Node {
    /// A node's users of this node's partition, into the directory; their
    /// watchers are told.
    fn serve_users(&mut self, node: u8, full: bool, changes: Vec<UserChange>) {
        if full {
            for user in self.directory.forget_node(node) {
                self.notify_watchers(&user);
            }
        }
        for change in changes {
            self.directory.set(&change.user, node, change.present);
            self.notify_watchers(&change.user);
        }
    }

    pub(super) fn answer_query(&self, message: async_nats::Message) {
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
    pub(super) fn registration_from(&mut self, node: u8, incarnation: u64) -> bool {
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
    pub(super) fn serve(&mut self, message: async_nats::Message) {
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
        let im = self.cluster.im_partition();
        let foreign = |stream: &str| {
            let partition = stream_partition(stream, stores, im);
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
                if self.registration_from(node, incarnation) {
                    self.serve_users(node, full, changes);
                }
                return;
            }
            StoreRequest::Watches {
                node,
                incarnation,
                full,
                changes,
            } => {
                if self.registration_from(node, incarnation) {
                    self.serve_watches(node, full, changes);
                }
                return;
            }
            StoreRequest::ImRelay(event) => {
                // Handed on at the end of the pass; not answered.
                self.im_relayed.push(event);
                return;
            }
            StoreRequest::Im(bytes) => {
                if self.cluster.im_partition() != Some(me) {
                    Pending::Now(StoreReply::Error {
                        source: 0,
                        message: format!(
                            "this node ({me}) does not hold the IM partition: the nodes disagree \
                             on cluster.im_partition or im.enabled"
                        ),
                    })
                } else {
                    match decode::<crate::cluster::im_wire::ImCall>(&bytes) {
                        Ok(call) => Pending::Im(call.run(store, &self.shared.dm_pairs)),
                        Err(error) => Pending::Now(wire::error_out(&StoreError::InvalidRequest {
                            reason: leak_reason(error.to_string()),
                        })),
                    }
                }
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

    /// The nodes holding `user`, from this owner's directory and its own
    /// connections.
    pub(super) fn local_user_nodes(&self, user: &str, channel: &str) -> Vec<u8> {
        let mut mask = self.directory.nodes(user);
        if self.shared.interest.shards(channel) != 0 {
            mask |= 1u64 << self.cluster.node;
        }
        shard_indexes(mask).map(|node| node as u8).collect()
    }

    // ---- what NATS brings ----------------------------------------------
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
    Im(crate::cluster::im_wire::Running),
}

impl Pending {
    pub(super) async fn answer(self) -> StoreReply {
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
            Pending::Im(running) => match running.await {
                Ok(answer) => StoreReply::Im(encode(&answer).into_vec()),
                Err(error) => wire::error_out(&error),
            },
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
pub(super) fn leak_reason(problem: String) -> &'static str {
    tracing::warn!(problem, "cluster: refused a malformed store request");
    "a malformed request from another node (see the owner's log)"
}

/// This node's subscribers of `channel`, from its shards.
pub(super) async fn local_presence(
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
