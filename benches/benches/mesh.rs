//! Cross-shard handoff: one producer thread to one consumer thread, and
//! all-to-all between 2 threads, carrying `Arc<Publication>` events.
//! Baseline: `std::sync::mpsc::sync_channel` of the same capacity, carrying
//! the same events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ringcast_engine::mesh::{Mesh, ShardEvent};
use ringcast_engine::publication::Publication;
use ringcast_protocol::envelope::Envelope;

const CAPACITY: usize = 1024;
const BATCH: u64 = 100_000;

fn publication() -> Arc<Publication> {
    Arc::new(Publication::new(&Envelope {
        id: 1,
        offset: 0,
        epoch: 0,
        channel: "news:x".into(),
        sender: String::new(),
        time_ms: 0,
        data_is_json: true,
        data: b"1".to_vec(),
    }))
}

/// Moves `BATCH` events from a producer thread to this thread.
fn mesh_pair(iters: u64) -> Duration {
    let publication = publication();
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let (_mesh, senders, mut receivers) = Mesh::build(1, 1, CAPACITY);
        let sender = senders.into_iter().next().unwrap();
        let p = publication.clone();
        let start = Instant::now();
        let producer = std::thread::spawn(move || {
            // A full queue backs off like std's `send` (a real shard parks the
            // event in its backlog instead).
            let backoff = crossbeam_utils::Backoff::new();
            for _ in 0..BATCH {
                let mut event = ShardEvent::Publish(p.clone());
                while let Err(back) = sender.send(0, event) {
                    event = back;
                    backoff.snooze();
                }
                backoff.reset();
            }
        });
        // Back off on an empty queue as std's `recv` does internally;
        // spinning flat out would bounce the queue's cache lines against the
        // producer and measure that instead. (A real shard parks.)
        let backoff = crossbeam_utils::Backoff::new();
        let mut got = 0;
        while got < BATCH {
            match receivers[0].drain(256, |e| drop(black_box(e))) as u64 {
                0 => backoff.snooze(),
                n => {
                    got += n;
                    backoff.reset();
                }
            }
        }
        producer.join().unwrap();
        total += start.elapsed();
    }
    total
}

fn std_pair(iters: u64) -> Duration {
    let publication = publication();
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let (tx, rx) = std::sync::mpsc::sync_channel::<ShardEvent>(CAPACITY);
        let p = publication.clone();
        let start = Instant::now();
        let producer = std::thread::spawn(move || {
            for _ in 0..BATCH {
                tx.send(ShardEvent::Publish(p.clone())).unwrap();
            }
        });
        for _ in 0..BATCH {
            black_box(rx.recv().unwrap());
        }
        producer.join().unwrap();
        total += start.elapsed();
    }
    total
}

/// Two shards, each sending `BATCH` events to the other while draining its
/// own queue: the all-to-all pattern of a real fan-out.
fn mesh_all_to_all(iters: u64) -> Duration {
    let publication = publication();
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let (_mesh, senders, receivers) = Mesh::build(2, 2, CAPACITY);
        let start = Instant::now();
        let handles: Vec<_> = senders
            .into_iter()
            .zip(receivers)
            .enumerate()
            .map(|(idx, (sender, mut receiver))| {
                let p = publication.clone();
                std::thread::spawn(move || {
                    let dst = 1 - idx;
                    let (mut sent, mut got) = (0u64, 0u64);
                    while sent < BATCH || got < BATCH {
                        if sent < BATCH && sender.send(dst, ShardEvent::Publish(p.clone())).is_ok()
                        {
                            sent += 1;
                        }
                        got += receiver.drain(256, |e| drop(black_box(e))) as u64;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        total += start.elapsed();
    }
    total
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("cross_shard_handoff");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    group.bench_function("mesh_one_pair", |b| b.iter_custom(mesh_pair));
    group.bench_function("baseline_std_sync_channel_one_pair", |b| {
        b.iter_custom(std_pair)
    });
    group.throughput(Throughput::Elements(2 * BATCH));
    group.bench_function("mesh_all_to_all_2_shards", |b| {
        b.iter_custom(mesh_all_to_all)
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
