//! The IM layer between nodes (docs/cluster.md, "The IM layer in a
//! cluster"). Every IM record lives in the IM partition; its owner's
//! directory holds every user of the cluster (each node registers its
//! users with the IM partition's owner too), so the owner alone knows
//! where a conversation entry or an IM event must go:
//! - a new conversation entry, from the owner's commit sink, to each node
//!   holding one of its recipients, with the recipients on that node;
//! - an IM event (typing, read, receipt) made on any node, which delivers
//!   it to its own connections and hands it to the owner (`ImRelay`), to
//!   each other node holding one of its users.
//!
//! Both go in one batch per node per pass, on `<prefix>.i.<node>`, in the
//! order the owner handed them over; the receiver gives them to its shards
//! as its own sink and commands would.

use std::collections::VecDeque;

use ringcast_protocol::cluster::{ImBatch, ImEventWire, ImItem};

use super::*;
use crate::cluster::ImRecipients;

/// On a node that is not the IM partition's owner: the answer to a
/// shard's IM write (a message, a group operation, a recall or edit) and
/// the entry it stored come from the owner by two ways (the request's
/// answer, and the batch on `<prefix>.i.<node>`), either first. The
/// protocol promises the sending connection its push before the reply
/// (docs/protocol.md, `msg_send`), so an answer whose entry has not come
/// yet waits for it here, at most `cluster.request_timeout_ms` (an entry
/// lost on the way cuts the connection anyway). The entry always comes:
/// the sender's user has a connection here, registered at connect.
pub(super) struct ImOrder {
    /// Message ids of the entries that came, with when (ms), for as long
    /// as an answer may lag behind its entry.
    seen: HashMap<u64, u64>,
    seen_order: VecDeque<(u64, u64)>,
    /// Answers waiting for their entry: by message id, with their tag and
    /// deadline.
    waiting: HashMap<u64, (u64, Answer, u64)>,
    window_ms: u64,
}

impl ImOrder {
    pub(super) fn new(window: Duration) -> ImOrder {
        ImOrder {
            seen: HashMap::new(),
            seen_order: VecDeque::new(),
            waiting: HashMap::new(),
            window_ms: window.as_millis() as u64,
        }
    }

    /// The answer to a shard's tagged IM call, for tag `tag`.
    pub(super) fn answered(&mut self, tag: u64, answer: Answer, sender: &MeshSender) {
        let new_entry = match &answer {
            Answer::ImAppended(Ok(stored)) => {
                (!stored.appended.duplicate).then_some(stored.appended.message_id.0)
            }
            Answer::Group(Ok(stored)) => {
                (!stored.appended.duplicate).then_some(stored.appended.message_id.0)
            }
            Answer::Rewritten(Ok(stored)) => Some(stored.appended.message_id.0),
            _ => None,
        };
        match new_entry {
            Some(id) if !self.seen.contains_key(&id) => {
                let deadline = crate::shard::unix_ms() + self.window_ms;
                self.waiting.insert(id, (tag, answer, deadline));
            }
            _ => super::forward::tagged_answer(sender, tag, answer),
        }
    }

    /// The entry `id` was handed to the shards: an answer waiting for it
    /// follows it now.
    fn entry_came(&mut self, id: u64, now_ms: u64, sender: &MeshSender) {
        if let Some((tag, answer, _)) = self.waiting.remove(&id) {
            super::forward::tagged_answer(sender, tag, answer);
            return;
        }
        self.seen.insert(id, now_ms);
        self.seen_order.push_back((now_ms, id));
        self.expire(now_ms, sender);
    }

    /// Forgets entries older than the window; answers past their deadline
    /// go out without their entry.
    pub(super) fn expire(&mut self, now_ms: u64, sender: &MeshSender) {
        while let Some(&(at, id)) = self.seen_order.front() {
            if at + self.window_ms > now_ms {
                break;
            }
            self.seen_order.pop_front();
            if self.seen.get(&id) == Some(&at) {
                self.seen.remove(&id);
            }
        }
        if self.waiting.is_empty() {
            return;
        }
        let late: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, (_, _, deadline))| *deadline <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some((tag, answer, _)) = self.waiting.remove(&id) {
                super::forward::tagged_answer(sender, tag, answer);
            }
        }
    }
}

impl Node {
    /// The other nodes holding a connection of each user, and the users
    /// on each (this node and `skip` left out).
    fn im_route<'a>(
        &self,
        users: impl Iterator<Item = &'a str>,
        skip: u8,
    ) -> HashMap<u8, Vec<String>> {
        let mut by_node: HashMap<u8, Vec<String>> = HashMap::new();
        let not = (1u64 << self.cluster.node) | (1u64 << skip);
        for user in users {
            for node in shard_indexes(self.directory.nodes(user) & !not) {
                by_node.entry(node as u8).or_default().push(user.to_owned());
            }
        }
        by_node
    }

    /// A new conversation entry on the IM partition's owner: to the other
    /// nodes holding its recipients, each with its own, in as many items as
    /// one NATS message needs (a large group's online members).
    pub(super) async fn im_entry(&mut self, push: &EncodedPush, to: &ImRecipients) {
        let me = self.cluster.node;
        let (routes, pair) = match to {
            ImRecipients::Pair(pair) => (
                self.im_route(pair.users(), me),
                Some((pair.a.to_string(), pair.b.to_string())),
            ),
            ImRecipients::Group(recipients) => (self.im_route(recipients.users(), me), None),
        };
        if routes.is_empty() {
            return;
        }
        if !self.connected() {
            self.lost(true, routes.len() as u64);
            return;
        }
        let room = self
            .client
            .max_payload()
            .saturating_sub(BATCH_FRAMING_BYTES + push.len() + 64);
        for (node, users) in routes {
            for users in split_by_bytes(users, room) {
                let bytes = push.len() + users.iter().map(|user| user.len() + 8).sum::<usize>();
                let item = ImItem::Entry {
                    push: push.as_bytes().to_vec(),
                    users,
                    pair: pair.clone(),
                };
                self.im_queue(node, item, bytes, true).await;
            }
        }
    }

    /// An IM event made on `event.origin` (this node, or another one that
    /// relayed it here): to the other nodes holding its users, and, when
    /// it came from another node, to this node's connections.
    pub(super) async fn im_event(&mut self, event: ImEventWire) {
        let Some(partition) = self.cluster.im_partition() else {
            return;
        };
        if usize::from(event.origin) >= NODES_MAX {
            // From the network: it indexes a node bitmask.
            tracing::warn!(
                origin = event.origin,
                "cluster: dropped an IM event of no node"
            );
            return;
        }
        if partition != u32::from(self.cluster.node) {
            // Only the owner knows where the users are: through it.
            let subject = self.subjects.store(partition);
            let request = StoreRequest::ImRelay(event);
            if !self
                .publish(subject, Bytes::from(encode(&request).into_vec()))
                .await
            {
                self.cluster.state.dropped.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        if event.origin != self.cluster.node {
            im_event_to_shards(&self.shared, &self.sender, &event);
        }
        let routes = self.im_route(
            event
                .users
                .iter()
                .map(String::as_str)
                .filter(|user| *user != event.skip_user),
            event.origin,
        );
        for (node, users) in routes {
            let bytes = users.iter().map(|user| user.len() + 8).sum::<usize>() + 256;
            let item = ImItem::Event(ImEventWire {
                users,
                skip_user: event.skip_user.clone(),
                origin: event.origin,
                event: event.event.clone(),
            });
            self.im_queue(node, item, bytes, false).await;
        }
    }

    /// Adds `item` to this pass's batch for `node`, sending the batch first
    /// when `item` would not fit in it.
    async fn im_queue(&mut self, node: u8, item: ImItem, bytes: usize, durable: bool) {
        let limit = self
            .client
            .max_payload()
            .saturating_sub(BATCH_FRAMING_BYTES);
        if bytes > limit {
            self.lost(durable, 1);
            tracing::warn!(
                bytes,
                max_payload = limit,
                "cluster: an IM entry or event over NATS's max_payload is not sent to other nodes"
            );
            return;
        }
        let full = self
            .im_batches
            .get(&node)
            .is_some_and(|(_, taken)| taken + bytes > limit);
        if full {
            if let Some((items, _)) = self.im_batches.remove(&node) {
                self.send_im_batch(node, items).await;
            }
        }
        let (items, taken) = self.im_batches.entry(node).or_default();
        items.push(item);
        *taken += bytes;
    }

    pub(super) async fn flush_im(&mut self) {
        let batches: Vec<_> = self.im_batches.drain().collect();
        for (node, (items, _)) in batches {
            self.send_im_batch(node, items).await;
        }
    }

    async fn send_im_batch(&mut self, node: u8, items: Vec<ImItem>) {
        let entries = items
            .iter()
            .filter(|item| matches!(item, ImItem::Entry { .. }))
            .count() as u64;
        let batch = ImBatch {
            node: self.cluster.node,
            items,
        };
        let subject = self.subjects.im(node);
        let payload = Bytes::from(encode(&batch).into_vec());
        if self.publish(subject, payload).await {
            self.cluster
                .state
                .pushes_out
                .fetch_add(entries, Ordering::Relaxed);
        } else {
            // Entries are stored ones: their recipients here recover.
            self.lost(entries > 0, entries.max(1));
        }
    }

    /// A batch from the IM partition's owner, for this node's connections.
    pub(super) fn im_batch(&mut self, payload: &[u8]) {
        let batch = match decode::<ImBatch>(payload) {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, "cluster: dropped an undecodable IM batch");
                return;
            }
        };
        let mut touched = 0u64;
        // The IM partition's users about to be cut (`cut_due`): its entries
        // wait for their sync after the cut (as `pushes` does).
        let cutting = self
            .cluster
            .im_partition()
            .is_some_and(|partition| self.cut_pending & (1u64 << partition) != 0);
        for item in batch.items {
            match item {
                ImItem::Entry { .. } if cutting => {}
                ImItem::Entry { push, users, pair } => {
                    touched |= self.im_entry_in(&push, users, pair, batch.node);
                }
                ImItem::Event(event) => im_event_to_shards(&self.shared, &self.sender, &event),
            }
        }
        for shard in shard_indexes(touched) {
            self.sender.ring(shard);
        }
    }

    /// A conversation entry from the owner: to the local connections of
    /// `users`, as the owner's sink hands one to its shards. Returns the
    /// shards it went to.
    fn im_entry_in(
        &self,
        bytes: &[u8],
        mut users: Vec<String>,
        pair: Option<(String, String)>,
        node: u8,
    ) -> u64 {
        let push = match EncodedPush::from_untrusted(bytes) {
            Ok(push) => Arc::new(push),
            Err(error) => {
                tracing::warn!(%error, node, "cluster: dropped a bad IM entry");
                return 0;
            }
        };
        self.cluster.state.pushes_in.fetch_add(1, Ordering::Relaxed);
        let mask = users.iter().fold(0, |mask, user| {
            mask | self
                .shared
                .interest
                .shards(&crate::channels::personal_channel(user))
        });
        let id = push.envelope().id.to_native();
        if mask == 0 {
            // Still seen: an answer may wait for it (its connection left).
            self.im_order
                .borrow_mut()
                .entry_came(id, crate::shard::unix_ms(), &self.sender);
            return 0;
        }
        let channel = push.envelope().channel.as_str().to_owned();
        if !crate::im::is_conv(&channel) {
            tracing::warn!(
                node,
                channel,
                "cluster: dropped an IM entry of no conversation"
            );
            return 0;
        }
        let publication = match pair {
            Some(pair) if crate::im::is_dm(&channel) => {
                let pair = self.shared.dm_pairs.committed(&channel, &pair);
                Publication::for_dm(push, pair)
            }
            _ => {
                users.sort_unstable();
                users.dedup();
                let recipients = crate::im::GroupRecipients {
                    members: users.into(),
                    removed: Vec::new(),
                };
                Publication::for_group(push, Arc::new(recipients))
            }
        };
        self.sender.publish_stored(mask, &Arc::new(publication));
        // After the push: an answer waiting for this entry follows it.
        self.im_order
            .borrow_mut()
            .entry_came(id, crate::shard::unix_ms(), &self.sender);
        mask
    }
}

/// `users` in runs of at most `room` bytes (8 of framing each), never
/// empty: one item per run. A user too long for `room` alone still gets a
/// run of its own (refused, counted, by the queue's size check).
fn split_by_bytes(users: Vec<String>, room: usize) -> Vec<Vec<String>> {
    let mut runs = Vec::new();
    let mut run = Vec::new();
    let mut taken = 0;
    for user in users {
        let bytes = user.len() + 8;
        if !run.is_empty() && taken + bytes > room {
            runs.push(std::mem::take(&mut run));
            taken = 0;
        }
        taken += bytes;
        run.push(user);
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// An IM event from another node to this node's connections of its users.
fn im_event_to_shards(shared: &Shared, sender: &MeshSender, event: &ImEventWire) {
    let users: Arc<[Box<str>]> = event
        .users
        .iter()
        .map(|user| Box::from(user.as_str()))
        .collect();
    let mask = shared.interest.shards_of_users(&users, &event.skip_user);
    if mask == 0 {
        return;
    }
    let frames = crate::im::event_frames(&event.event);
    let skip_user: Arc<str> = event.skip_user.as_str().into();
    for shard in shard_indexes(mask) {
        let message = ShardEvent::ImUsersEvent {
            users: users.clone(),
            skip_user: skip_user.clone(),
            frames: frames.clone(),
        };
        if sender.send(shard, message).is_err() {
            tracing::debug!(shard, "cluster: an IM event to a full lane was dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_by_bytes;

    #[test]
    fn recipients_are_split_into_runs_that_fit_one_message() {
        let users: Vec<String> = (0..10).map(|i| format!("user{i}")).collect();
        // 5 bytes + 8 each: 3 per run of 40 bytes.
        let runs = split_by_bytes(users.clone(), 40);
        assert_eq!(runs.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 3, 1]);
        assert_eq!(runs.concat(), users, "every user once, in order");
        assert_eq!(split_by_bytes(users.clone(), 1 << 20), [users]);
        // One user longer than the room still goes, alone.
        let runs = split_by_bytes(vec!["x".repeat(100), "y".into()], 40);
        assert_eq!(runs.len(), 2);
        assert!(split_by_bytes(Vec::new(), 40).is_empty());
    }
}
