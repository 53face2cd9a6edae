//! How long finding a time in a stream takes (`Store::seek_time`: two
//! binary searches, each O(log n) point reads of entries), against a
//! one-entry read by offset on the same store; decides whether the binary
//! search is fast enough or a time index is needed (store/README.md,
//! "Paging by time").
//!
//! `cargo run --release -p ringcast-store --example time_seek -- [DIR] [N] [SEEKS]`
//!
//! Appends N entries (~100-byte payloads, Buffered, 8 entries per
//! millisecond of time) to one stream, closes and reopens the store (so the
//! entries are read from table files as well as the memtable), then times
//! SEEKS seeks at spread-out times and SEEKS one-entry reads, one at a time.

use std::time::Instant;

use futures_executor::block_on;
use ringcast_protocol::envelope::{EncodedPush, Envelope};
use ringcast_store::{AppendRequest, Durability, ReadRequest, Retention, Store, StoreConfig};

const STREAM: &str = "chat:seek";
const TIME_START_MS: u64 = 1_767_225_600_000;

fn append_all(store: &Store, count: u64) {
    let batch = 4096;
    let mut next = 0;
    while next < count {
        let end = (next + batch).min(count);
        let receivers: Vec<_> = (next..end)
            .map(|index| {
                store
                    .append(AppendRequest {
                        stream: STREAM.to_owned(),
                        push: EncodedPush::encode(&Envelope {
                            id: 0,
                            offset: 0,
                            epoch: 0,
                            channel: STREAM.to_owned(),
                            sender: "alice".to_owned(),
                            time_ms: TIME_START_MS + index / 8,
                            data_is_json: true,
                            data: br#"{"text":"a 100-byte-ish chat message body for the seek run ............"}"#.to_vec(),
                        }),
                        durability: Durability::Buffered,
                        client_msg_id: None,
                        retention: Retention::UNLIMITED,
                        outbox: Vec::new(),
                    })
                    .expect("queued")
            })
            .collect();
        for receiver in receivers {
            block_on(receiver).expect("writer alive").expect("append");
        }
        next = end;
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "/tmp".to_owned());
    let count: u64 = args.next().map_or(1_000_000, |n| n.parse().expect("N"));
    let seeks: u64 = args.next().map_or(2_000, |n| n.parse().expect("SEEKS"));
    let dir = tempfile::tempdir_in(dir).expect("temp dir");

    let store = Store::open(StoreConfig::new(dir.path())).expect("open");
    let started = Instant::now();
    append_all(&store, count);
    println!("appended {count} entries in {:.1?}", started.elapsed());
    store.close().expect("close");
    let store = Store::open(StoreConfig::new(dir.path())).expect("reopen");

    let span_ms = count / 8;
    // A spread of times over the whole stream, the same for every run.
    let time_at = |index: u64| TIME_START_MS + (index * 7_919) % span_ms.max(1);
    let started = Instant::now();
    for index in 0..seeks {
        let time_ms = time_at(index);
        let found = block_on(store.seek_time(STREAM, time_ms).expect("queued"))
            .expect("reader alive")
            .expect("seek");
        assert_eq!(found.at_or_after, (time_ms - TIME_START_MS) * 8 + 1);
    }
    let seek_us = started.elapsed().as_secs_f64() * 1e6 / seeks as f64;

    let started = Instant::now();
    for index in 0..seeks {
        let offset = (time_at(index) - TIME_START_MS) * 8 + 1;
        let page = block_on(
            store
                .read(ReadRequest {
                    stream: STREAM.to_owned(),
                    since: Some(offset - 1),
                    before: None,
                    limit: 1,
                    reverse: false,
                    from_time_ms: None,
                    before_time_ms: None,
                })
                .expect("queued"),
        )
        .expect("reader alive")
        .expect("read");
        assert_eq!(page.entries.len(), 1);
    }
    let read_us = started.elapsed().as_secs_f64() * 1e6 / seeks as f64;
    let reads = 2 * (u64::BITS - count.leading_zeros());
    println!(
        "{count} entries: seek_time {seek_us:.1} µs (two searches, ≤ {reads} point reads), \
         a one-entry read by offset {read_us:.1} µs ({seeks} of each, one at a time)"
    );
    store.close().expect("close");
}
