//! The durable store: `sync` appends with group commit, and replay of one
//! stream from the start, on a real fjall store in a temporary directory on
//! the same disk as the baselines.
//!
//! Appends: K appends in flight at once (K concurrent publishers with one
//! request each), all awaited. Baselines, same run, same record bytes:
//! - `baseline_file_fsync_each`: a plain `File`, each record appended and
//!   then `sync_all`, the store's fsync (fjall's `PersistMode::SyncAll`):
//!   what durability costs without group commit. Preallocated like fjall's
//!   journal, so neither side pays for growing the file.
//! - `baseline_file_fsync_batch`: the K records in one `write` and one
//!   `sync_all`: the floor for any group commit on this disk.
//!
//! Replay: read the first n entries of a 10,000-entry stream, as one read
//! and in the engine's recovery pages of 256. Baseline: the same stored
//! bytes read sequentially from a plain file of length-prefixed records,
//! each copied out, with no validation.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::time::Duration;

use criterion::{
    black_box, criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use futures_executor::block_on;
use ringcast_protocol::envelope::{EncodedPush, Envelope};
use ringcast_store::{
    AppendRequest, Appended, Durability, ReadRequest, Retention, Store, StoreConfig,
};

const IN_FLIGHT: [usize; 2] = [64, 256];
/// Streams the appends spread over, as many user inboxes would.
const APPEND_STREAMS: usize = 64;
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
    }
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
            b.iter(|| {
                let requests = (0..in_flight).map(|_| {
                    next += 1;
                    append_request(format!("user:{}", next % APPEND_STREAMS), Durability::Sync)
                });
                black_box(append_all(&store, requests));
            });
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

fn read_store(store: &Store, count: usize, page_entries: usize) -> Vec<EncodedPush> {
    let mut entries = Vec::with_capacity(count);
    while entries.len() < count {
        let since = entries.len() as u64;
        let page = block_on(
            store
                .read(ReadRequest {
                    stream: REPLAY_STREAM.to_owned(),
                    since: Some(since),
                    limit: page_entries.min(count - entries.len()),
                    reverse: false,
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
    targets = append, replay
}
criterion_main!(benches);
