//! Per-shard fan-out of one publication to N local subscribers, no sockets:
//! the engine's own delivery loop (`shard::deliver`, what `deliver_local`
//! runs) queueing the shared frame on every `Conn` of a slab, up to but not
//! including the flush and its `sendmsg`.
//!
//! Baselines, same run, same frame bytes, same N:
//! - `baseline_memcpy`: copy the frame into each connection's own `Vec<u8>`
//!   write buffer (capacity kept between publications), the naive design.
//! - `baseline_arc_vecdeque`: push an `Arc<[u8]>` clone onto a bare
//!   `VecDeque` per connection: the same sharing idea with none of the
//!   engine's bookkeeping, so the floor for a refcounted design.
//! - `baseline_bytes_vecdeque`: the same bare loop with the engine's frame
//!   type, `Bytes`, whose clone is an indirect call through its vtable; it
//!   splits the gap to the floor into "refcount type" and "bookkeeping".
//!
//! Only the delivery is timed (`iter_custom`); emptying the queues between
//! publications, which the engine does after the write, is not.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringcast_engine::config::Config;
use ringcast_engine::limits::IOV_MAX;
use ringcast_engine::metrics::ShardMetrics;
use ringcast_engine::publication::Publication;
use ringcast_engine::session::{Session, SessionConfig};
use ringcast_engine::shard::conn::Conn;
use ringcast_engine::shard::deliver;
use ringcast_protocol::envelope::Envelope;
use slab::Slab;

const SUBSCRIBERS: [usize; 3] = [100, 1_000, 10_000];
/// 64 B matches the payloads of the engine-over-sockets runs; 4 KiB shows
/// how the copying baseline scales with size while a refcount does not.
const PAYLOAD_SIZES: [usize; 2] = [64, 4096];
/// The engine's default `websocket.outbound_queue_bytes_max`; one frame
/// per connection never reaches it, so the slow-consumer branch stays cold
/// as it does for healthy subscribers.
const QUEUE_BYTES_MAX: usize = 1_048_576;

/// A JSON string of exactly `len` bytes, quotes included: `data_is_json`
/// promises valid JSON.
fn json_string(len: usize) -> Vec<u8> {
    assert!(len >= 2, "a JSON string needs its quotes");
    let mut data = vec![b'x'; len];
    data[0] = b'"';
    data[len - 1] = b'"';
    data
}

fn publication(payload_bytes: usize) -> Arc<Publication> {
    Arc::new(Publication::new(&Envelope {
        id: 1,
        offset: 0,
        epoch: 0,
        channel: "news:sport".into(),
        sender: String::new(),
        time_ms: 1_700_000_000_000,
        data_is_json: true,
        data: json_string(payload_bytes),
    }))
}

/// A shard's slab and one channel's subscriber list, as `subscribe` builds
/// them: JSON-protocol connections with their keys in subscription order.
/// Each connection owns a real fd (`/dev/null`; nothing is written to it)
/// and an open session, as after an accepted upgrade.
fn subscribers(n_conns: usize, config: &SessionConfig) -> (Slab<Conn>, Vec<usize>) {
    let mut conns = Slab::with_capacity(n_conns);
    let keys = (0..n_conns)
        .map(|idx| {
            let fd = OwnedFd::from(std::fs::File::open("/dev/null").expect("/dev/null"));
            let mut session = Session::new(0, config);
            session.accept(0, Bytes::new(), false, None, 0);
            let mut conn = Conn::new(fd, session, None);
            conn.client_id = idx as u64;
            conn.user = format!("user-{idx}").into();
            conns.insert(conn)
        })
        .collect();
    (conns, keys)
}

fn ringcast(
    iters: u64,
    conns: &mut Slab<Conn>,
    keys: &[usize],
    publication: &Arc<Publication>,
    config: &SessionConfig,
) -> Duration {
    let metrics = ShardMetrics::default();
    let mut dirty = Vec::with_capacity(keys.len());
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        deliver(conns, keys, publication, &mut dirty, config, &metrics, 0);
        total += start.elapsed();
        // What the flush leaves behind after a complete write.
        for key in dirty.drain(..) {
            let conn = &mut conns[key];
            conn.in_dirty = false;
            let mut slices = [IoSlice::new(&[]); IOV_MAX];
            let n_slices = conn.session.start_send(&mut slices);
            let offered = slices[..n_slices].iter().map(|s| s.len()).sum();
            conn.session.on_sent(offered, 0, config);
        }
    }
    black_box(metrics.messages_out.get());
    total
}

fn baseline_memcpy(iters: u64, write_buffers: &mut [Vec<u8>], frame: &[u8]) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        for buffer in write_buffers.iter_mut() {
            buffer.extend_from_slice(frame);
        }
        total += start.elapsed();
        for buffer in write_buffers.iter_mut() {
            black_box(buffer.len());
            buffer.clear();
        }
    }
    total
}

/// Push one clone of `frame` onto every queue: an `Arc<[u8]>` (a bare
/// refcount) or a `Bytes` (the engine's frame type, a vtable call per clone).
fn baseline_clone_vecdeque<T: Clone>(
    iters: u64,
    queues: &mut [VecDeque<T>],
    frame: &T,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        for queue in queues.iter_mut() {
            queue.push_back(frame.clone());
        }
        total += start.elapsed();
        for queue in queues.iter_mut() {
            black_box(queue.len());
            queue.clear();
        }
    }
    total
}

fn fanout(c: &mut Criterion) {
    for payload_bytes in PAYLOAD_SIZES {
        let publication = publication(payload_bytes);
        let frame: Arc<[u8]> = publication.json_frame()[..].into();
        let mut group = c.benchmark_group(format!("fanout_one_publication_{payload_bytes}B"));
        for n_conns in SUBSCRIBERS {
            // Built once per N, outside the closures criterion calls per
            // sample, so every sample sees warm queues that kept their
            // capacity, as a shard's do in steady state.
            let mut config = Config::test_min();
            config.websocket.outbound_queue_bytes_max = QUEUE_BYTES_MAX;
            let config = SessionConfig::new(&config);
            let (mut conns, keys) = subscribers(n_conns, &config);
            let mut write_buffers: Vec<Vec<u8>> = (0..n_conns)
                .map(|_| Vec::with_capacity(frame.len()))
                .collect();
            let mut queues: Vec<VecDeque<Arc<[u8]>>> =
                (0..n_conns).map(|_| VecDeque::with_capacity(4)).collect();
            let mut bytes_queues: Vec<VecDeque<Bytes>> =
                (0..n_conns).map(|_| VecDeque::with_capacity(4)).collect();
            group.throughput(Throughput::Elements(n_conns as u64));
            group.bench_function(BenchmarkId::new("ringcast", n_conns), |b| {
                b.iter_custom(|iters| ringcast(iters, &mut conns, &keys, &publication, &config))
            });
            group.bench_function(BenchmarkId::new("baseline_memcpy", n_conns), |b| {
                b.iter_custom(|iters| baseline_memcpy(iters, &mut write_buffers, &frame))
            });
            group.bench_function(BenchmarkId::new("baseline_arc_vecdeque", n_conns), |b| {
                b.iter_custom(|iters| baseline_clone_vecdeque(iters, &mut queues, &frame))
            });
            group.bench_function(BenchmarkId::new("baseline_bytes_vecdeque", n_conns), |b| {
                b.iter_custom(|iters| {
                    baseline_clone_vecdeque(iters, &mut bytes_queues, publication.json_frame())
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, fanout);
criterion_main!(benches);
