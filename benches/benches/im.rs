//! The IM conversation list: `Store::conv_list` for one user with 1,000
//! and 10,000 direct conversations, a first page and a deep page (the
//! cursor of the conversation 100 from the end, as a client paging the
//! whole list reaches it). Each call is one reader-thread round trip from
//! one snapshot, with the total unread over all the user's conversations.
//!
//! Besides criterion's mean, each case prints its per-call p50 and p99
//! (every timed call goes into a histogram): the figures
//! docs/benchmarks.md "IM" reports.
//!
//! `cargo bench -p ringcast-benches --bench im`

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use futures_executor::block_on;
use hdrhistogram::Histogram;
use ringcast_protocol::envelope::{EncodedPush, Envelope};
use ringcast_store::{ConvPage, Durability, ImAppend, Store, StoreConfig};

const CONVERSATIONS: [usize; 2] = [1_000, 10_000];
/// The engine's default page (`CONV_LIST_LIMIT_DEFAULT`).
const PAGE: usize = ringcast_protocol::client::CONV_LIST_LIMIT_DEFAULT as usize;
/// Appends queued before awaiting any while the list is made.
const SETUP_IN_FLIGHT: usize = 1_000;
/// The deep page starts this many conversations before the end.
const DEEP_FROM_END: usize = 100;

fn hub(conversations: usize) -> String {
    format!("hub-{conversations}")
}

/// `user` talks once with each of `conversations` peers (Buffered: the
/// list's shape, not the disk, is what is measured).
fn make_conversations(store: &Store, user: &str, conversations: usize) {
    let requests: Vec<usize> = (0..conversations).collect();
    for chunk in requests.chunks(SETUP_IN_FLIGHT) {
        let receivers: Vec<_> = chunk
            .iter()
            .map(|idx| {
                let peer = format!("peer-{idx:05}");
                let conv = format!("dm:{user}-{peer}");
                let push = EncodedPush::encode(&Envelope {
                    id: 0,
                    offset: 0,
                    epoch: 0,
                    channel: conv.clone(),
                    sender: user.to_owned(),
                    time_ms: 0,
                    data_is_json: true,
                    data: br#"{"kind":"text","data":{"text":"hello"}}"#.to_vec(),
                });
                store
                    .im_append(ImAppend {
                        conv,
                        pair: (user.to_owned(), peer),
                        sender: user.to_owned(),
                        push,
                        client_msg_id: None,
                        durability: Durability::Buffered,
                        backend_allowed: false,
                    })
                    .expect("append queued")
            })
            .collect();
        for receiver in receivers {
            block_on(receiver)
                .expect("store writer alive")
                .expect("append stored");
        }
    }
}

fn page(store: &Store, user: &str, cursor: Option<(u64, u64)>) -> ConvPage {
    block_on(store.conv_list(user, cursor, PAGE).expect("list queued"))
        .expect("store reader alive")
        .expect("list read")
}

/// The cursor a client holds after paging to `DEEP_FROM_END` from the end.
fn deep_cursor(store: &Store, user: &str, conversations: usize) -> Option<(u64, u64)> {
    let mut cursor = None;
    let mut seen = 0;
    while seen + PAGE <= conversations - DEEP_FROM_END {
        let listed = page(store, user, cursor);
        seen += listed.convs.len();
        cursor = listed.next;
    }
    cursor
}

fn conv_list(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(StoreConfig::new(dir.path())).expect("open the store");
    let mut group = c.benchmark_group("conv_list");
    for conversations in CONVERSATIONS {
        let user = hub(conversations);
        make_conversations(&store, &user, conversations);
        let first = page(&store, &user, None);
        assert_eq!(first.convs.len(), PAGE, "a full first page");
        let deep = deep_cursor(&store, &user, conversations);
        assert!(deep.is_some(), "a cursor into the list");
        for (name, cursor) in [("first_page", None), ("deep_page", deep)] {
            // Fixed bounds (1 µs to 60 s): an auto-resizing histogram's
            // saturating record would clamp to its current top.
            let mut latencies =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            group.bench_function(BenchmarkId::new(name, conversations), |b| {
                b.iter_custom(|iterations| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        let started = Instant::now();
                        black_box(page(&store, &user, cursor));
                        let took = started.elapsed();
                        total += took;
                        latencies.saturating_record(took.as_micros() as u64);
                    }
                    total
                });
            });
            println!(
                "conv_list {name} of {conversations} conversations: p50 {} us, p99 {} us over {} calls",
                latencies.value_at_quantile(0.5),
                latencies.value_at_quantile(0.99),
                latencies.len()
            );
        }
    }
    group.finish();
    store.close().expect("close the store");
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
}

criterion_group! {
    name = benches;
    config = config();
    targets = conv_list
}
criterion_main!(benches);
