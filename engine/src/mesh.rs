//! The cross-shard mesh: one bounded lock-free queue per (producer, consumer)
//! pair, and one doorbell per consumer.
//!
//! Every queue has exactly one producer thread, so there is no contention
//! between producers on a `crossbeam_queue::ArrayQueue`; a consumer drains its
//! column round-robin. Producers are the shards plus the control thread.
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
//! What crosses is an `Arc<Publication>`: the rkyv envelope and the frames
//! built from it once, shared by reference, never copied per shard or per
//! recipient.

use std::future::poll_fn;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use ringcast_protocol::close::CloseCode;

use crate::publication::Publication;

/// Most events a shard takes from the mesh before it lets its sockets run.
pub const MESH_DRAIN_MAX: usize = 256;

/// A client as the presence query reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PresenceEntry {
    pub client: String,
    pub user: String,
    pub shard: usize,
}

/// Where a shard sends its answer to a presence query.
pub type PresenceReply = futures_channel::oneshot::Sender<Vec<PresenceEntry>>;

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
}

pub struct Mesh {
    n_consumers: usize,
    n_producers: usize,
    /// Index `producer * n_consumers + consumer`.
    queues: Box<[CachePadded<ArrayQueue<ShardEvent>>]>,
    doorbells: Box<[CachePadded<Doorbell>]>,
    shutdown: AtomicBool,
}

/// One shard's wake-up: its registered waker and whether it is parked.
#[derive(Default)]
struct Doorbell {
    waker: AtomicWaker,
    parked: AtomicBool,
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
        capacity: usize,
    ) -> (Arc<Mesh>, Vec<MeshSender>, Vec<MeshReceiver>) {
        assert!(n_consumers > 0 && n_producers >= n_consumers);
        assert!(capacity > 0);
        let queues = (0..n_consumers * n_producers)
            .map(|_| CachePadded::new(ArrayQueue::new(capacity)))
            .collect();
        let doorbells = (0..n_consumers)
            .map(|_| CachePadded::new(Doorbell::default()))
            .collect();
        let mesh = Arc::new(Mesh {
            n_consumers,
            n_producers,
            queues,
            doorbells,
            shutdown: AtomicBool::new(false),
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
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    fn queue(&self, producer_idx: usize, consumer_idx: usize) -> &ArrayQueue<ShardEvent> {
        &self.queues[producer_idx * self.n_consumers + consumer_idx]
    }
}

impl MeshSender {
    /// Hands `event` to shard `dst`. Gives the event back when that pair's
    /// queue is full, so the caller decides between retrying and refusing.
    pub fn send(&self, dst: usize, event: ShardEvent) -> Result<(), ShardEvent> {
        debug_assert!(dst < self.mesh.n_consumers);
        self.mesh.queue(self.producer_idx, dst).push(event)?;
        // Pairs with the fence in `MeshReceiver::wait`.
        fence(Ordering::SeqCst);
        let doorbell = &self.mesh.doorbells[dst];
        if doorbell.parked.load(Ordering::Relaxed) && doorbell.parked.swap(false, Ordering::AcqRel)
        {
            doorbell.waker.wake();
        }
        Ok(())
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
            match self.mesh.queue(producer_idx, self.consumer_idx).pop() {
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

    fn has_pending(&self) -> bool {
        (0..self.mesh.n_producers)
            .any(|producer_idx| !self.mesh.queue(producer_idx, self.consumer_idx).is_empty())
    }

    /// Parks until some producer has pushed or shutdown was asked.
    pub async fn wait(&self) {
        let doorbell = &self.mesh.doorbells[self.consumer_idx];
        poll_fn(|cx| {
            if self.has_pending() || self.mesh.is_shutting_down() {
                doorbell.parked.store(false, Ordering::Relaxed);
                return Poll::Ready(());
            }
            doorbell.waker.register(cx.waker());
            doorbell.parked.store(true, Ordering::Relaxed);
            // Pairs with the fence in `MeshSender::send`: a push that missed
            // `parked` is seen by this re-check.
            fence(Ordering::SeqCst);
            if self.has_pending() || self.mesh.is_shutting_down() {
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

    #[test]
    fn full_queue_gives_the_event_back() {
        let (_mesh, senders, _receivers) = Mesh::build(2, 3, 2);
        senders[0].send(1, disconnect("a")).unwrap();
        senders[0].send(1, disconnect("b")).unwrap();
        let refused = senders[0].send(1, disconnect("c")).unwrap_err();
        assert_eq!(user_of(refused), "c");
        // Another producer's queue to the same shard is independent.
        senders[2].send(1, disconnect("d")).unwrap();
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
        const N: usize = 20_000;
        let (_mesh, senders, mut receivers) = Mesh::build(1, 2, 64);
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
}
