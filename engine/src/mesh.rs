//! The cross-shard mesh: one bounded lock-free lane per (producer, consumer)
//! pair, and one doorbell per consumer.
//!
//! Every lane has exactly one producer thread, so there is no contention
//! between producers; a consumer drains its column round-robin. Producers
//! are the shards, the control thread and the store's writer.
//!
//! A lane is a `crossbeam_queue::ArrayQueue` ring (the fast path) plus a
//! bounded overflow list (`SegQueue`) used only while the ring is full. The
//! producer never waits: it pushes to the ring while the overflow is empty,
//! else to the overflow; the consumer takes the ring first, then the
//! overflow, which keeps per-lane order (whenever the overflow holds
//! anything, everything in the ring is older). Because a lane has one
//! producer, the room the producer sees can only grow until it pushes
//! again, so `MeshSender::publish` can check every destination first and
//! then send to all: a publication reaches every interested shard or none
//! (see `docs/ARCHITECTURE.md`, "One publish path").
//!
//! The doorbell is an `AtomicWaker` guarded by a `parked` flag. A shard that
//! finds every queue empty registers its waker, sets `parked`, and checks the
//! queues once more; a producer pushes, then rings only if it sees `parked`
//! (and clears it). SeqCst fences on both sides make this Dekker-style
//! handshake lose no wakeup: either the producer sees `parked`, or the
//! consumer's re-check sees the event. While a shard is busy, a push costs no
//! write to the consumer's cache lines beyond the queue slot itself, so wakes
//! are per park, not per message (monoio's `sync` feature carries the wake
//! to the owner thread through its eventfd).
//!
//! Beside the lanes, each shard has one queue of store answers: the
//! store's writer hands each group commit's answers to the shards that
//! asked (see `crate::streams::StoreSink`), then rings each of those shards
//! once, so a commit of many requests costs each shard one wake-up, not
//! one per request. The queue is unbounded on purpose: an answer must never
//! be refused, and each one answers a request its shard submitted, so the
//! store's own request queue bounds them (a shard takes all of its answers
//! every turn).
//!
//! What crosses is an `Arc<Publication>`: the rkyv envelope and the frames
//! built from it once, shared by reference, never copied per shard or per
//! recipient.

use std::future::poll_fn;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use atomic_waker::AtomicWaker;
use crossbeam_queue::{ArrayQueue, SegQueue};
use crossbeam_utils::CachePadded;
use ringcast_protocol::close::CloseCode;

use crate::interest::shard_indexes;
pub use crate::limits::MESH_DRAIN_MAX;
use crate::limits::MESH_QUEUE_CAPACITY;
use crate::publication::Publication;

/// A publication was refused because some interested shard's lane from
/// this producer is full: it was delivered to no shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

/// A client as the presence query reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PresenceEntry {
    pub client: String,
    pub user: String,
    pub shard: usize,
    /// What the connect proxy attached to the connection, as it gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<Box<serde_json::value::RawValue>>,
}

/// A store answer on its way to the shard that asked: the request's slot
/// in that shard's table of requests waiting for the store.
#[derive(Debug)]
pub struct StoreAnswer {
    pub slot: usize,
    pub answer: ringcast_store::Answer,
}

/// Where a shard sends its answer to a presence query.
pub type PresenceReply = futures_channel::oneshot::Sender<Vec<PresenceEntry>>;

/// Where a shard answers a server-side subscription change: how many of its
/// connections it changed.
pub type SubscriptionReply = futures_channel::oneshot::Sender<usize>;

/// The closed set of things one shard asks of another.
#[derive(Debug)]
pub enum ShardEvent {
    /// Deliver to the local subscribers of the envelope's channel.
    Publish(Arc<Publication>),
    /// Close every local connection of `user` with `code`.
    DisconnectUser { user: Arc<str>, code: CloseCode },
    /// List the local subscribers of `channel`.
    Presence {
        channel: Arc<str>,
        reply: PresenceReply,
    },
    /// Subscribe (`subscribe == true`) or unsubscribe every local
    /// connection of `user` to `channel`, telling each client, and answer
    /// with how many changed (`/api/subscribe`, `/api/unsubscribe`).
    SubscribeUser {
        user: Arc<str>,
        channel: Arc<str>,
        subscribe: bool,
        reply: SubscriptionReply,
    },
    /// An IM event (a read, a receipt) for every local connection of
    /// `user` but the one with client id `skip_client` (0: none).
    ImEvent {
        user: Arc<str>,
        frames: Arc<crate::im::ImFrames>,
        skip_client: u64,
    },
    /// An IM event (a typing signal) for every local connection of each
    /// of `users` but `skip_user`'s: one event per shard, whatever the
    /// number of users.
    ImUsersEvent {
        users: Arc<[Box<str>]>,
        skip_user: Arc<str>,
        frames: Arc<crate::im::ImFrames>,
    },
    /// In a cluster: publications of durable streams in the store
    /// partitions of `partitions` (a bitmask) may have been lost on their
    /// way from their owners; close the local subscribers of those streams
    /// (1013), who recover from the owners (docs/cluster.md, "NATS
    /// failure").
    CutPartitions { partitions: u64 },
    /// A user this shard watches went online or offline
    /// (`crate::presence::book`): tell the local watchers.
    PresenceChanged {
        user: Arc<str>,
        snapshot: crate::presence::book::Snapshot,
    },
}

pub struct Mesh {
    n_consumers: usize,
    n_producers: usize,
    /// Index `producer * n_consumers + consumer`.
    lanes: Box<[CachePadded<Lane>]>,
    doorbells: Box<[CachePadded<Doorbell>]>,
    /// Store answers, per consumer.
    answers: Box<[CachePadded<SegQueue<StoreAnswer>>]>,
    shutdown: AtomicBool,
    /// Most events in one lane's overflow list.
    overflow_max: usize,
    /// Woken on shutdown, for threads that are not mesh consumers (the
    /// control thread).
    shutdown_waker: AtomicWaker,
}

/// One (producer, consumer) pair's events.
struct Lane {
    ring: ArrayQueue<ShardEvent>,
    overflow: SegQueue<ShardEvent>,
    /// At least the number of events in `overflow`: raised by the producer
    /// before it pushes, lowered by the consumer after it pops.
    overflow_len: std::sync::atomic::AtomicUsize,
}

impl Lane {
    fn new(capacity: usize) -> Lane {
        Lane {
            ring: ArrayQueue::new(capacity),
            overflow: SegQueue::new(),
            overflow_len: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn pop(&self) -> Option<ShardEvent> {
        // Whether the overflow held anything *before* the ring is looked
        // at: the producer only goes back to the ring once the overflow is
        // drained, so while this count is non-zero every ring event is older
        // than every overflow event. Looking at the overflow without it, a
        // ring found empty could refill (and spill) before the overflow is
        // read, and a spilled event would overtake the ring.
        let spilled = self.overflow_len.load(Ordering::Acquire) > 0;
        if let Some(event) = self.ring.pop() {
            return Some(event);
        }
        if !spilled {
            return None;
        }
        let event = self.overflow.pop()?;
        self.overflow_len.fetch_sub(1, Ordering::AcqRel);
        Some(event)
    }

    fn is_empty(&self) -> bool {
        self.ring.is_empty() && self.overflow.is_empty()
    }
}

/// One shard's wake-up: its registered waker and whether it is parked.
#[derive(Default)]
struct Doorbell {
    waker: AtomicWaker,
    parked: AtomicBool,
    /// Set by the store's producer when this shard's lane was full and a
    /// stored publication could not be handed over live.
    lagged: AtomicBool,
}

/// The sending end owned by one producer thread. Not `Clone`: each queue must
/// keep a single producer.
pub struct MeshSender {
    mesh: Arc<Mesh>,
    producer_idx: usize,
}

/// The receiving end owned by one shard.
pub struct MeshReceiver {
    mesh: Arc<Mesh>,
    consumer_idx: usize,
    /// Where the next drain starts, so no producer is starved.
    next_producer_idx: usize,
}

impl Mesh {
    /// Builds the mesh and hands out one sender per producer and one receiver
    /// per consumer. `capacity` bounds each pair's queue.
    pub fn build(
        n_consumers: usize,
        n_producers: usize,
        lane_events: usize,
    ) -> (Arc<Mesh>, Vec<MeshSender>, Vec<MeshReceiver>) {
        assert!(n_consumers > 0 && n_producers >= n_consumers);
        assert!(lane_events > 0);
        let ring_capacity = lane_events.min(MESH_QUEUE_CAPACITY);
        let lanes = (0..n_consumers * n_producers)
            .map(|_| CachePadded::new(Lane::new(ring_capacity)))
            .collect();
        let doorbells = (0..n_consumers)
            .map(|_| CachePadded::new(Doorbell::default()))
            .collect();
        let answers = (0..n_consumers)
            .map(|_| CachePadded::new(SegQueue::new()))
            .collect();
        let mesh = Arc::new(Mesh {
            n_consumers,
            n_producers,
            lanes,
            doorbells,
            answers,
            shutdown: AtomicBool::new(false),
            overflow_max: lane_events - ring_capacity,
            shutdown_waker: AtomicWaker::new(),
        });
        let senders = (0..n_producers)
            .map(|producer_idx| MeshSender {
                mesh: mesh.clone(),
                producer_idx,
            })
            .collect();
        let receivers = (0..n_consumers)
            .map(|consumer_idx| MeshReceiver {
                mesh: mesh.clone(),
                consumer_idx,
                next_producer_idx: 0,
            })
            .collect();
        (mesh, senders, receivers)
    }

    pub fn n_consumers(&self) -> usize {
        self.n_consumers
    }

    /// Asks every shard to drain and stop; rings every doorbell.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        for doorbell in self.doorbells.iter() {
            doorbell.waker.wake();
        }
        self.shutdown_waker.wake();
    }

    /// Resolves once `shutdown` has been called (a wake-up, not a poll).
    pub async fn wait_shutdown(&self) {
        poll_fn(|cx| {
            if self.is_shutting_down() {
                return Poll::Ready(());
            }
            self.shutdown_waker.register(cx.waker());
            if self.is_shutting_down() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Whether the store could not hand shard `consumer_idx` a stored
    /// publication since the last call (clears the mark).
    pub fn take_lagged(&self, consumer_idx: usize) -> bool {
        let doorbell = &self.doorbells[consumer_idx];
        doorbell.lagged.load(Ordering::Relaxed) && doorbell.lagged.swap(false, Ordering::AcqRel)
    }

    /// Marks shard `consumer_idx` lagged, as a full lane from the store
    /// does: it cuts its subscribers of durable streams, who recover from
    /// the store. The cluster thread's answer to publications lost on
    /// their way between nodes. The caller rings the shard.
    pub fn mark_lagged(&self, consumer_idx: usize) {
        self.doorbells[consumer_idx]
            .lagged
            .store(true, Ordering::Release);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    fn lane(&self, producer_idx: usize, consumer_idx: usize) -> &Lane {
        &self.lanes[producer_idx * self.n_consumers + consumer_idx]
    }
}

impl MeshSender {
    /// Whether shard `dst` can take one more event from this producer. Only
    /// this producer fills the lane, so a `true` holds until it sends.
    pub fn has_room(&self, dst: usize) -> bool {
        self.mesh
            .lane(self.producer_idx, dst)
            .overflow_len
            .load(Ordering::Acquire)
            < self.mesh.overflow_max
            // A lane no larger than the ring has no overflow at all.
            || (self.mesh.overflow_max == 0
                && !self.mesh.lane(self.producer_idx, dst).ring.is_full())
    }

    /// The one publish path: hands `publication` to every shard in `mask`,
    /// or, when some shard's lane is full, to none of them. `on_local` is
    /// called instead of sending for `local_idx` (a shard delivering to its
    /// own subscribers directly).
    pub fn publish(
        &self,
        mask: u64,
        publication: &Arc<Publication>,
        local_idx: Option<usize>,
        mut on_local: impl FnMut(&Arc<Publication>),
    ) -> Result<(), Overloaded> {
        let remote = |dst: usize| Some(dst) != local_idx;
        if !shard_indexes(mask)
            .filter(|dst| remote(*dst))
            .all(|dst| self.has_room(dst))
        {
            return Err(Overloaded);
        }
        for dst in shard_indexes(mask) {
            if !remote(dst) {
                on_local(publication);
            } else if self
                .send(dst, ShardEvent::Publish(publication.clone()))
                .is_err()
            {
                unreachable!("lane to shard {dst} had room and has a single producer");
            }
        }
        Ok(())
    }

    /// Like `publish` for a publication that is already stored: shards
    /// with room get it; each shard without room is marked lagged (its
    /// subscribers of durable streams are cut and recover from the store).
    /// Returns how many shards were marked. Rings no doorbell: the caller
    /// (the store's sink) rings each shard in `mask` once per batch.
    pub fn publish_stored(&self, mask: u64, publication: &Arc<Publication>) -> usize {
        let mut lagged = 0;
        for dst in shard_indexes(mask) {
            if self
                .send_quiet(dst, ShardEvent::Publish(publication.clone()))
                .is_err()
            {
                self.mesh.doorbells[dst]
                    .lagged
                    .store(true, Ordering::Release);
                lagged += 1;
            }
        }
        lagged
    }

    /// Queues a store answer for shard `dst` without ringing (see
    /// `publish_stored`). Never refused: see the module docs.
    pub fn answer_quiet(&self, dst: usize, answer: StoreAnswer) {
        self.mesh.answers[dst].push(answer);
    }

    /// Hands `event` to shard `dst`, in the ring or, while the ring is full
    /// or the overflow not yet drained, the overflow. Gives the event back
    /// when the overflow is full too.
    pub fn send(&self, dst: usize, event: ShardEvent) -> Result<(), ShardEvent> {
        self.send_quiet(dst, event)?;
        self.ring(dst);
        Ok(())
    }

    /// `send` without the doorbell: the caller rings `dst` later.
    fn send_quiet(&self, dst: usize, event: ShardEvent) -> Result<(), ShardEvent> {
        debug_assert!(dst < self.mesh.n_consumers);
        let lane = self.mesh.lane(self.producer_idx, dst);
        let overflow_len = lane.overflow_len.load(Ordering::Acquire);
        let event = if overflow_len == 0 {
            lane.ring.push(event).err()
        } else {
            Some(event)
        };
        if let Some(event) = event {
            if lane.overflow_len.load(Ordering::Acquire) >= self.mesh.overflow_max {
                return Err(event);
            }
            // Raised before the push so the consumer's decrement after its
            // pop can never take the count below the true length.
            lane.overflow_len.fetch_add(1, Ordering::AcqRel);
            lane.overflow.push(event);
        }
        Ok(())
    }

    /// Wakes shard `dst` if it is parked; call after queueing for it.
    pub fn ring(&self, dst: usize) {
        // Pairs with the fence in `MeshReceiver::wait`.
        fence(Ordering::SeqCst);
        let doorbell = &self.mesh.doorbells[dst];
        if doorbell.parked.load(Ordering::Relaxed) && doorbell.parked.swap(false, Ordering::AcqRel)
        {
            doorbell.waker.wake();
        }
    }

    pub fn producer_idx(&self) -> usize {
        self.producer_idx
    }

    pub fn mesh(&self) -> &Arc<Mesh> {
        &self.mesh
    }
}

impl MeshReceiver {
    /// Takes up to `max` events, round-robin over producers, and returns how
    /// many it took.
    pub fn drain(&mut self, max: usize, mut on_event: impl FnMut(ShardEvent)) -> usize {
        let n_producers = self.mesh.n_producers;
        let mut taken = 0;
        let mut idle_producers = 0;
        while taken < max && idle_producers < n_producers {
            let producer_idx = self.next_producer_idx;
            self.next_producer_idx = (producer_idx + 1) % n_producers;
            match self.mesh.lane(producer_idx, self.consumer_idx).pop() {
                Some(event) => {
                    idle_producers = 0;
                    taken += 1;
                    on_event(event);
                }
                None => idle_producers += 1,
            }
        }
        taken
    }

    /// Takes up to `max` store answers queued for this shard; returns how
    /// many it took.
    pub fn drain_answers(&mut self, max: usize, mut on_answer: impl FnMut(StoreAnswer)) -> usize {
        let answers = &self.mesh.answers[self.consumer_idx];
        let mut taken = 0;
        while taken < max {
            let Some(answer) = answers.pop() else {
                break;
            };
            taken += 1;
            on_answer(answer);
        }
        taken
    }

    fn has_pending(&self) -> bool {
        self.mesh.doorbells[self.consumer_idx]
            .lagged
            .load(Ordering::Relaxed)
            || !self.mesh.answers[self.consumer_idx].is_empty()
            || (0..self.mesh.n_producers)
                .any(|producer_idx| !self.mesh.lane(producer_idx, self.consumer_idx).is_empty())
    }

    /// Parks until some producer has pushed or shutdown was asked.
    pub async fn wait(&self) {
        self.wait_for(true).await;
    }

    /// Parks until some producer has pushed, shutdown or not: for a shard
    /// that is already stopping.
    pub async fn wait_queued(&self) {
        self.wait_for(false).await;
    }

    async fn wait_for(&self, or_shutdown: bool) {
        let doorbell = &self.mesh.doorbells[self.consumer_idx];
        let ready = || self.has_pending() || (or_shutdown && self.mesh.is_shutting_down());
        poll_fn(|cx| {
            if ready() {
                doorbell.parked.store(false, Ordering::Relaxed);
                return Poll::Ready(());
            }
            doorbell.waker.register(cx.waker());
            doorbell.parked.store(true, Ordering::Relaxed);
            // Pairs with the fence in `MeshSender::ring`: a push that missed
            // `parked` is seen by this re-check.
            fence(Ordering::SeqCst);
            if ready() {
                doorbell.parked.store(false, Ordering::Relaxed);
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    pub fn consumer_idx(&self) -> usize {
        self.consumer_idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disconnect(user: &str) -> ShardEvent {
        ShardEvent::DisconnectUser {
            user: user.into(),
            code: CloseCode::NORMAL,
        }
    }

    fn user_of(event: ShardEvent) -> String {
        match event {
            ShardEvent::DisconnectUser { user, .. } => user.to_string(),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A lane larger than the ring (`MESH_QUEUE_CAPACITY`), so it has an
    /// overflow list behind its ring.
    const LANE: usize = MESH_QUEUE_CAPACITY + 2000;

    #[test]
    fn lanes_no_larger_than_the_ring_have_no_overflow() {
        let (_mesh, senders, _receivers) = Mesh::build(1, 1, 8);
        for _ in 0..8 {
            assert!(senders[0].has_room(0));
            senders[0].send(0, disconnect("a")).unwrap();
        }
        assert!(!senders[0].has_room(0));
        assert!(senders[0].send(0, disconnect("b")).is_err());
    }

    #[test]
    fn a_full_ring_spills_in_order_and_a_full_overflow_gives_the_event_back() {
        let (_mesh, senders, mut receivers) = Mesh::build(2, 3, LANE);
        let n = LANE;
        for i in 0..n {
            senders[0].send(1, disconnect(&i.to_string())).unwrap();
        }
        assert!(!senders[0].has_room(1));
        let refused = senders[0].send(1, disconnect("refused")).unwrap_err();
        assert_eq!(user_of(refused), "refused");
        // Another producer's lane to the same shard is independent.
        assert!(senders[2].has_room(1));
        senders[2].send(1, disconnect("other")).unwrap();
        let mut got = Vec::new();
        let mut sent_late = false;
        while receivers[1].drain(MESH_DRAIN_MAX, |e| got.push(user_of(e))) > 0 {
            // The ring has drained and the overflow has started to: a new
            // event must still come after everything queued before it.
            if !sent_late && got.len() > MESH_QUEUE_CAPACITY + 1 {
                sent_late = true;
                senders[0].send(1, disconnect("late")).unwrap();
            }
        }
        let own: Vec<String> = got.into_iter().filter(|u| u != "other").collect();
        let expected: Vec<String> = (0..n)
            .map(|i| i.to_string())
            .chain(["late".to_string()])
            .collect();
        assert_eq!(own.len(), expected.len());
        let first_difference = own.iter().zip(&expected).position(|(a, b)| a != b);
        assert_eq!(first_difference, None, "lane order broken");
        assert!(senders[0].has_room(1));
    }

    fn publication(channel: &str) -> Arc<Publication> {
        Arc::new(Publication::new(&ringcast_protocol::envelope::Envelope {
            id: 1,
            offset: 0,
            epoch: 0,
            channel: channel.into(),
            sender: String::new(),
            time_ms: 0,
            data_is_json: true,
            data: b"1".to_vec(),
        }))
    }

    #[test]
    fn publish_reaches_every_shard_or_none() {
        let (_mesh, senders, mut receivers) = Mesh::build(3, 4, LANE);
        // Fill shard 2's lane from producer 0 completely.
        for _ in 0..LANE {
            senders[0].send(2, disconnect("x")).unwrap();
        }
        let mut local = 0;
        let refused = senders[0].publish(0b111, &publication("c"), Some(0), |_| local += 1);
        assert_eq!(refused, Err(Overloaded));
        assert_eq!(local, 0, "refused: not delivered locally either");
        assert_eq!(
            receivers[1].drain(8, |_| {}),
            0,
            "refused: shard 1 got nothing"
        );
        // Without the full shard, every shard gets it, the local one directly.
        senders[0]
            .publish(0b011, &publication("c"), Some(0), |_| local += 1)
            .unwrap();
        assert_eq!(local, 1);
        let mut delivered = 0;
        receivers[1].drain(8, |e| {
            assert!(matches!(e, ShardEvent::Publish(_)));
            delivered += 1;
        });
        assert_eq!(delivered, 1);
        // A stored publication cannot be refused: the full shard is marked
        // lagged instead, the others get it.
        assert_eq!(senders[3].publish_stored(0b110, &publication("c")), 0);
        for _ in 0..(LANE - 1) {
            senders[3].send(2, disconnect("y")).unwrap();
        }
        assert_eq!(senders[3].publish_stored(0b110, &publication("c")), 1);
        assert!(_mesh.take_lagged(2));
        assert!(!_mesh.take_lagged(2), "the mark is taken once");
        assert!(!_mesh.take_lagged(1));
    }

    #[test]
    fn drain_is_round_robin_and_bounded() {
        let (_mesh, senders, mut receivers) = Mesh::build(1, 2, 8);
        for user in ["a1", "a2", "a3"] {
            senders[0].send(0, disconnect(user)).unwrap();
        }
        for user in ["b1", "b2"] {
            senders[1].send(0, disconnect(user)).unwrap();
        }
        let mut got = Vec::new();
        assert_eq!(receivers[0].drain(4, |e| got.push(user_of(e))), 4);
        assert_eq!(got, ["a1", "b1", "a2", "b2"]);
        got.clear();
        assert_eq!(receivers[0].drain(4, |e| got.push(user_of(e))), 1);
        assert_eq!(got, ["a3"]);
    }

    #[test]
    fn per_producer_order_is_kept_across_threads() {
        const N: usize = 200_000;
        // A lane with an overflow behind its ring, so order is checked
        // across both while the consumer races the producers.
        let (_mesh, senders, mut receivers) = Mesh::build(1, 2, MESH_QUEUE_CAPACITY + 256);
        let mut senders = senders.into_iter();
        let handles: Vec<_> = (0..2)
            .map(|p| {
                let sender = senders.next().unwrap();
                std::thread::spawn(move || {
                    for i in 0..N {
                        let mut event = disconnect(&format!("{p}:{i}"));
                        while let Err(back) = sender.send(0, event) {
                            event = back;
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut next = [0usize; 2];
        while next.iter().sum::<usize>() < 2 * N {
            receivers[0].drain(MESH_DRAIN_MAX, |e| {
                let user = user_of(e);
                let (p, i) = user.split_once(':').unwrap();
                let p: usize = p.parse().unwrap();
                assert_eq!(
                    i.parse::<usize>().unwrap(),
                    next[p],
                    "producer {p} reordered"
                );
                next[p] += 1;
            });
        }
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn parked_shard_is_woken_by_a_push_from_another_thread() {
        let (mesh, senders, receivers) = Mesh::build(1, 1, 4);
        let sender = senders.into_iter().next().unwrap();
        let receiver = receivers.into_iter().next().unwrap();
        let pusher = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            sender.send(0, disconnect("x")).unwrap();
            sender
        });
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        rt.block_on(receiver.wait());
        assert!(receiver.has_pending());
        let _sender = pusher.join().unwrap();
        drop(mesh);
    }

    #[test]
    fn a_stopping_shard_waits_for_what_is_queued_not_for_the_shutdown_flag() {
        use futures_util::FutureExt;
        let (mesh, senders, mut receivers) = Mesh::build(1, 2, 8);
        mesh.shutdown();
        assert!(
            receivers[0].wait().now_or_never().is_some(),
            "shutdown wakes `wait`"
        );
        assert!(
            receivers[0].wait_queued().now_or_never().is_none(),
            "nothing queued: a stopping shard parks"
        );
        senders[1].answer_quiet(
            0,
            StoreAnswer {
                slot: 3,
                answer: ringcast_store::Answer::Cursor(Ok(1)),
            },
        );
        senders[1].ring(0);
        assert!(
            receivers[0].wait_queued().now_or_never().is_some(),
            "an answer wakes it"
        );
        let mut slots = Vec::new();
        receivers[0].drain_answers(usize::MAX, |answer| slots.push(answer.slot));
        assert_eq!(slots, [3]);
    }
}
