//! The durable store: `sync` appends with group commit, and replay of one
//! stream from the start, on a real fjall store in a temporary directory on
//! the same disk as the baselines.
//!
//! Appends (group `store_append_sync`): K appends in flight at once (K
//! concurrent publishers with one request each), all awaited. Baselines,
//! same run, same record bytes:
//! - `baseline_file_fsync_each`: a plain `File`, each record appended and
//!   then `sync_all`, the store's fsync (fjall's `PersistMode::SyncAll`):
//!   what durability costs without group commit. Preallocated like fjall's
//!   journal, so neither side pays for growing the file.
//! - `baseline_file_fsync_batch`: the K records in one `write` and one
//!   `sync_all`: the floor for any group commit on this disk.
//!
//! Writer path (group `writer_path`): the same K appends over the same 64
//! inbox streams, with what the writer hands back after each group commit,
//! per element; `sync` (the inbox's durability, fsync included) and
//! `_buffered` (no fsync: the writer's own work per message, which fsync
//! times that vary 20x on a shared disk would hide). Its physical reference is the two plain-file
//! baselines of `store_append_sync` (run them in the same invocation, e.g.
//! filter `'writer_path|append'`).
//! - `bare_futures`: `Store::append` with a oneshot future per request and
//!   the no-op sink of `Store::open`; the same code as
//!   `store_append_sync/ringcast_group_commit`, repeated here so the two
//!   variants sit side by side in one group.
//! - `engine_sink_tagged`: the store opened with the engine's own
//!   `StoreSink` over a real `Mesh` of 2 consumer shards (the store's
//!   sender is the last producer, as `engine.rs` builds it), every stream
//!   with subscribers on one shard (`Interest`), requests submitted with
//!   `Store::submit_append` and `request_tag(shard, slot)` tags alternating
//!   between the two shards. Per commit the sink builds an
//!   `Arc<Publication>` per entry (no frames: shards build those), pushes it
//!   into the store's lane to the interested shard, queues each answer in
//!   the asking shard's answer queue and rings each touched shard once. The
//!   bench thread stands in for both shards: it drains their answer queues
//!   and their publication lanes (dropping the publications, so no lane
//!   fills), and parks on their doorbells (`MeshReceiver::wait`) while
//!   nothing is queued, until all K answers are in.
//!
//! Both stores take `StoreConfig::new`'s defaults, as `store_append_sync`
//! does: fsyncs paced at least `sync_interval_min` (1 ms, the engine's
//! default `server.store_sync_interval_us`) apart, so a burst that takes
//! two commits lasts at least 1 ms plus the second fsync, whatever the sink
//! costs.
//!
//! It lives in this file rather than a file of its own because it shares
//! the append helpers (`inbox_request`, `append_burst`) and the record
//! size (`PAYLOAD`) with `store_append_sync`.
//!
//! Replay: read the first n entries of a 10,000-entry stream, as one read
//! and in the engine's recovery pages of 256. Baseline: the same stored
//! bytes read sequentially from a plain file of length-prefixed records,
//! each copied out, with no validation.

use std::fs::File;
use std::future::{poll_fn, Future};
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use criterion::{
    black_box, criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use futures_executor::block_on;
use ringcast_engine::interest::Interest;
use ringcast_engine::limits::{MESH_DRAIN_MAX, MESH_LANE_EVENTS_DEFAULT};
use ringcast_engine::mesh::{Mesh, MeshReceiver, ShardEvent};
use ringcast_engine::streams::{request_tag, StoreSink};
use ringcast_protocol::envelope::{EncodedPush, Envelope};
use ringcast_store::{
    Answer, AppendRequest, Appended, Durability, ReadRequest, Retention, Store, StoreConfig,
};

const IN_FLIGHT: [usize; 2] = [64, 256];
/// Streams the appends spread over, as many user inboxes would.
const APPEND_STREAMS: usize = 64;
/// Consumer shards of the writer-path bench's mesh.
const WRITER_PATH_SHARDS: usize = 2;
const REPLAY_STREAM: &str = "user:replay";
const REPLAY_STORED: usize = 10_000;
const REPLAY_COUNTS: [usize; 2] = [1_000, 10_000];
/// fjall's journal preallocation (`PRE_ALLOCATED_BYTES`); the baseline
/// logs outgrow it only in very long runs.
const LOG_PREALLOCATED_BYTES: u64 = 64 * 1024 * 1024;
/// The engine's `REPLAY_PAGE_ENTRIES` (`engine/src/shard/recovery.rs`).
const REPLAY_PAGE_ENTRIES: usize = 256;
/// A chat-message-sized JSON body, as in `store/examples/append_throughput.rs`.
const PAYLOAD: &[u8] =
    br#"{"text":"a 100-byte-ish chat message body for the throughput run ....."}"#;

fn envelope(stream: &str) -> Envelope {
    Envelope {
        id: 0,
        offset: 0,
        epoch: 0,
        channel: stream.to_owned(),
        sender: String::new(),
        time_ms: 0,
        data_is_json: true,
        data: PAYLOAD.to_vec(),
    }
}

fn open_store(dir: &Path) -> Store {
    Store::open(StoreConfig::new(dir)).expect("open the store")
}

/// Queues every request before awaiting any, so they can share batches.
fn append_all(store: &Store, requests: impl Iterator<Item = AppendRequest>) -> Vec<Appended> {
    let receivers: Vec<_> = requests
        .map(|request| store.append(request).expect("append queued"))
        .collect();
    receivers
        .into_iter()
        .map(|receiver| {
            block_on(receiver)
                .expect("store writer alive")
                .expect("append stored")
        })
        .collect()
}

fn append_request(stream: String, durability: Durability) -> AppendRequest {
    AppendRequest {
        push: EncodedPush::encode(&envelope(&stream)),
        stream,
        durability,
        client_msg_id: None,
        retention: Retention::UNLIMITED,
        outbox: Vec::new(),
    }
}

/// The append of the `next`-th message, to inbox `user:<next % 64>`.
fn inbox_request(next: usize, durability: Durability) -> AppendRequest {
    append_request(format!("user:{}", next % APPEND_STREAMS), durability)
}

/// K appends in flight through `Store::append`, all awaited.
fn append_burst(
    store: &Store,
    in_flight: usize,
    next: &mut usize,
    durability: Durability,
) -> Vec<Appended> {
    let requests = (0..in_flight).map(|_| {
        *next += 1;
        inbox_request(*next, durability)
    });
    append_all(store, requests)
}

/// One length-prefixed record, as a plain log would frame it.
fn put_record(out: &mut Vec<u8>, record: &[u8]) {
    let len = u32::try_from(record.len()).expect("record under 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(record);
}

/// A log file preallocated the way fjall preallocates its journal
/// (`set_len`, then `sync_all`), so both sides fsync into a file whose size
/// does not change.
fn preallocated_log(path: &Path) -> File {
    let file = File::create(path).expect("create the log");
    file.set_len(LOG_PREALLOCATED_BYTES)
        .expect("preallocate the log");
    file.sync_all().expect("fsync the new log");
    file
}

fn append(c: &mut Criterion) {
    // The bytes the store keeps per entry, so both sides write the same.
    let record = {
        let mut record = Vec::new();
        put_record(
            &mut record,
            EncodedPush::encode(&envelope("user:0")).as_bytes(),
        );
        record
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = open_store(&dir.path().join("store"));
    let mut log_each = preallocated_log(&dir.path().join("log-each"));
    let mut log_batch = preallocated_log(&dir.path().join("log-batch"));
    let mut next = 0usize;

    let mut group = c.benchmark_group("store_append_sync");
    // Every iteration is at least one fsync; flat sampling keeps the
    // per-message baseline to a few hundred of them per sample.
    group.sampling_mode(SamplingMode::Flat);
    for in_flight in IN_FLIGHT {
        group.throughput(Throughput::Elements(in_flight as u64));
        group.bench_function(BenchmarkId::new("ringcast_group_commit", in_flight), |b| {
            b.iter(|| black_box(append_burst(&store, in_flight, &mut next, Durability::Sync)));
        });
        group.bench_function(
            BenchmarkId::new("baseline_file_fsync_each", in_flight),
            |b| {
                b.iter(|| {
                    for _ in 0..in_flight {
                        log_each.write_all(&record).expect("write");
                        log_each.sync_all().expect("fsync");
                    }
                });
            },
        );
        let mut batch = Vec::with_capacity(record.len() * in_flight);
        group.bench_function(
            BenchmarkId::new("baseline_file_fsync_batch", in_flight),
            |b| {
                b.iter(|| {
                    batch.clear();
                    for _ in 0..in_flight {
                        batch.extend_from_slice(&record);
                    }
                    log_batch.write_all(&batch).expect("write");
                    log_batch.sync_all().expect("fsync");
                });
            },
        );
    }
    group.finish();
    store.close().expect("close the store");
}

/// The store's writer with the engine's commit sink attached, and the two
/// shards it hands commits to, played by the calling thread.
struct EngineSinkStore {
    store: Store,
    mesh: Arc<Mesh>,
    receivers: Vec<MeshReceiver>,
}

impl EngineSinkStore {
    /// The mesh as `engine.rs` builds it (a row per shard, then the control
    /// thread, then the store's writer, last), with every inbox subscribed
    /// on one shard.
    fn open(dir: &Path) -> EngineSinkStore {
        let (mesh, mut senders, receivers) = Mesh::build(
            WRITER_PATH_SHARDS,
            WRITER_PATH_SHARDS + 2,
            MESH_LANE_EVENTS_DEFAULT,
        );
        let store_sender = senders.pop().expect("the store's mesh sender");
        assert_eq!(store_sender.producer_idx(), WRITER_PATH_SHARDS + 1);
        let interest = Arc::new(Interest::new());
        for stream in 0..APPEND_STREAMS {
            interest.add(&format!("user:{stream}"), stream % WRITER_PATH_SHARDS);
        }
        let store = Store::open_with_sink(
            StoreConfig::new(dir),
            StoreSink::new(store_sender, interest, Arc::default(), Arc::default(), None),
        )
        .expect("open the store");
        EngineSinkStore {
            store,
            mesh,
            receivers,
        }
    }

    /// K `sync` appends submitted with tags, request `slot` asked for by
    /// shard `slot % 2`; returns once every answer is in, with every
    /// publication drained from the lanes.
    fn append_burst(&mut self, in_flight: usize, next: &mut usize, durability: Durability) {
        for slot in 0..in_flight {
            *next += 1;
            self.store
                .submit_append(
                    inbox_request(*next, durability),
                    request_tag(slot % WRITER_PATH_SHARDS, slot),
                )
                .expect("append queued");
        }
        let mut answered = 0;
        let mut published = 0;
        loop {
            for receiver in &mut self.receivers {
                published += drain_publications(receiver);
                answered += receiver.drain_answers(usize::MAX, |answer| match answer.answer {
                    Answer::Appended(result) => {
                        black_box(result.expect("append stored"));
                    }
                    // Any other answer (cursor, IM, group) was never asked for.
                    _ => unreachable!("only appends were asked for"),
                });
            }
            if answered == in_flight {
                break;
            }
            wait_any(&self.receivers);
        }
        // The sink queues a batch's publications before its answers, so
        // the last ones are in the lanes by now.
        for receiver in &mut self.receivers {
            published += drain_publications(receiver);
        }
        // Each stream has subscribers on one shard: one publication each.
        assert_eq!(published, in_flight, "publications handed to the shards");
    }

    fn close(self) {
        for shard in 0..WRITER_PATH_SHARDS {
            assert!(
                !self.mesh.take_lagged(shard),
                "shard {shard}'s lane from the store overflowed"
            );
        }
        self.store.close().expect("close the store");
    }
}

/// Takes every queued publication off `receiver`'s lanes and drops it, as
/// a shard with no connections to deliver to would; returns how many.
fn drain_publications(receiver: &mut MeshReceiver) -> usize {
    let mut taken = 0;
    loop {
        let batch = receiver.drain(MESH_DRAIN_MAX, |event| match event {
            ShardEvent::Publish(publication) => drop(black_box(publication)),
            _ => unreachable!("only the store publishes in this bench"),
        });
        taken += batch;
        if batch < MESH_DRAIN_MAX {
            return taken;
        }
    }
}

/// Parks the thread until some shard's doorbell rings (or it has something
/// queued already), as an idle shard parks on its own.
fn wait_any(receivers: &[MeshReceiver]) {
    let mut waits: Vec<_> = receivers
        .iter()
        .map(|receiver| Box::pin(receiver.wait()))
        .collect();
    block_on(poll_fn(|cx| {
        if waits
            .iter_mut()
            .any(|wait| wait.as_mut().poll(cx).is_ready())
        {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }));
}

fn writer_path(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let bare = open_store(&dir.path().join("bare"));
    let mut engine = EngineSinkStore::open(&dir.path().join("engine-sink"));
    let mut next = 0usize;

    let mut group = c.benchmark_group("writer_path");
    group.sampling_mode(SamplingMode::Flat);
    // `sync`: what an inbox append costs end to end, fsync included;
    // `buffered`: the writer's own work per message, which fsync times
    // (milliseconds, varying by 20x on a shared disk) would hide.
    for (suffix, durability) in [("", Durability::Sync), ("_buffered", Durability::Buffered)] {
        for in_flight in IN_FLIGHT {
            group.throughput(Throughput::Elements(in_flight as u64));
            let name = format!("bare_futures{suffix}");
            group.bench_function(BenchmarkId::new(name, in_flight), |b| {
                b.iter(|| black_box(append_burst(&bare, in_flight, &mut next, durability)));
            });
            let name = format!("engine_sink_tagged{suffix}");
            group.bench_function(BenchmarkId::new(name, in_flight), |b| {
                b.iter(|| engine.append_burst(in_flight, &mut next, durability));
            });
        }
    }
    group.finish();
    engine.close();
    bare.close().expect("close the store");
}

fn read_store(store: &Store, count: usize, page_entries: usize) -> Vec<EncodedPush> {
    let mut entries = Vec::with_capacity(count);
    while entries.len() < count {
        let since = entries.len() as u64;
        let page = block_on(
            store
                .read(ReadRequest {
                    stream: REPLAY_STREAM.to_owned(),
                    since: Some(since),
                    before: None,
                    limit: page_entries.min(count - entries.len()),
                    reverse: false,
                    from_time_ms: None,
                    before_time_ms: None,
                })
                .expect("read queued"),
        )
        .expect("store reader alive")
        .expect("read");
        assert!(!page.entries.is_empty(), "stream ended at {since}");
        entries.extend(page.entries);
    }
    entries
}

fn read_file(path: &Path, count: usize) -> Vec<Vec<u8>> {
    let mut reader = BufReader::new(File::open(path).expect("open the log"));
    (0..count)
        .map(|_| {
            let mut len = [0u8; 4];
            reader.read_exact(&mut len).expect("record length");
            let mut record = vec![0u8; u32::from_le_bytes(len) as usize];
            reader.read_exact(&mut record).expect("record");
            record
        })
        .collect()
}

fn replay(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = open_store(&dir.path().join("store"));
    // Buffered: the fill is setup, and durability does not change what a
    // read finds.
    let stored = append_all(
        &store,
        (0..REPLAY_STORED).map(|_| append_request(REPLAY_STREAM.to_owned(), Durability::Buffered)),
    );
    let log_path = dir.path().join("log");
    let mut log = Vec::new();
    for appended in &stored {
        put_record(&mut log, appended.push.as_bytes());
    }
    std::fs::write(&log_path, &log).expect("write the log");

    let mut group = c.benchmark_group("store_replay");
    for count in REPLAY_COUNTS {
        group.throughput(Throughput::Elements(count as u64));
        group.bench_with_input(
            BenchmarkId::new("ringcast_one_read", count),
            &count,
            |b, &count| b.iter(|| black_box(read_store(&store, count, count))),
        );
        group.bench_with_input(
            BenchmarkId::new("ringcast_pages_of_256", count),
            &count,
            |b, &count| b.iter(|| black_box(read_store(&store, count, REPLAY_PAGE_ENTRIES))),
        );
        group.bench_with_input(
            BenchmarkId::new("baseline_file_sequential", count),
            &count,
            |b, &count| b.iter(|| black_box(read_file(&log_path, count))),
        );
    }
    group.finish();
    store.close().expect("close the store");
}

fn config() -> Criterion {
    // fsync-bound iterations take milliseconds; criterion's defaults would
    // run for minutes.
    Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = append, writer_path, replay
}
criterion_main!(benches);
