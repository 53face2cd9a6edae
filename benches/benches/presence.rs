//! What presence adds to a connection's open and close on a shard, and
//! what a watch costs, against the baseline every connection already pays:
//! the interest step of its personal channel (`Interest::add`/`remove`).
//!
//! - `open_close/interest_empty_map`: the baseline, one `add` and one
//!   `remove` of one channel, nothing else in the map.
//! - `open_close/interest`: the same among 100,000 other channels: the
//!   same key removed and inserted again, as a user reconnecting does.
//! - `open_close/interest_distinct_keys`: a new channel each time, same map.
//! - `open_close/book`: `PresenceBook::connected` and `closed` (with a
//!   grace, so the close leaves a deadline), among 100,000 other users; the
//!   entry stays, so nothing is removed.
//! - `lookup`: one user's state (`presence_query`, the API), same book.
//! - `watch_1000`: one connection watching 1,000 online users then closing
//!   (`ShardPresence::watch` + `forget_conn`).
//! - `watch_1000_unknown`: the same with users never seen, through an idle
//!   list of 1,024, so most iterations forget (remove) and re-create entries.
//!
//! One run on the 2-core dev host, shared with other builds (`cargo bench
//! -p ringcast-benches --bench presence -- --warm-up-time 1
//! --measurement-time 3`): interest_empty_map 302 ns, interest 1.04 ms (!),
//! interest_distinct_keys 617 ns, book 175 ns, lookup 23 ns, watch_1000
//! 501 µs, watch_1000_unknown 1.50 ms.
//!
//! The `interest` case is papaya's tombstones: removing a key and inserting
//! it again leaves a tombstone on its probe chain each cycle, so the cost
//! grows with the cycles (13 µs per cycle over the first 2,000 on a
//! 100,000-entry map, 67 µs by 12,000) until a resize; criterion's millions
//! of cycles reach a millisecond. The book never removes on the open/close
//! path for that reason, and an unwatched entry waits in the idle list.
//! `Interest` now keeps an emptied channel's entry too (see
//! `benches/interest.rs` for the before and after).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ringcast_engine::interest::Interest;
use ringcast_engine::presence::book::PresenceBook;
use ringcast_engine::presence::watch::ShardPresence;

const USERS: usize = 100_000;

fn filled_book() -> PresenceBook {
    let book = PresenceBook::new(5_000, 2);
    for n in 0..USERS {
        book.connected(&format!("user-{n}"));
    }
    book
}

fn bench_open_close(c: &mut Criterion) {
    let mut group = c.benchmark_group("presence_open_close");
    let interest = Interest::new();
    for n in 0..USERS {
        interest.add(&format!("user:user-{n}"), 0);
    }
    let empty = Interest::new();
    group.bench_function("interest_empty_map", |b| {
        b.iter(|| {
            black_box(empty.add(black_box("user:probe"), 1));
            black_box(empty.remove(black_box("user:probe"), 1));
        })
    });
    group.bench_function("interest", |b| {
        b.iter(|| {
            black_box(interest.add(black_box("user:probe"), 1));
            black_box(interest.remove(black_box("user:probe"), 1));
        })
    });
    let mut seq = 0u64;
    group.bench_function("interest_distinct_keys", |b| {
        b.iter(|| {
            seq += 1;
            let channel = format!("user:probe-{seq}");
            black_box(interest.add(&channel, 1));
            black_box(interest.remove(&channel, 1));
        })
    });
    let book = filled_book();
    let mut now_ms = 1_000u64;
    group.bench_function("book", |b| {
        b.iter(|| {
            now_ms += 1;
            black_box(book.connected(black_box("probe")));
            black_box(book.closed(black_box("probe"), now_ms));
        })
    });
    group.finish();
    c.bench_function("presence_lookup", |b| {
        b.iter(|| black_box(book.lookup(black_box("user-500"))))
    });
}

/// One connection watching 1,000 users (`prefix-0..999`) and closing.
fn bench_watch(c: &mut Criterion) {
    let book = filled_book();
    for (name, prefix) in [
        ("presence_watch_1000", "user"),
        ("presence_watch_1000_unknown", "ghost"),
    ] {
        let users: Vec<String> = (0..1000).map(|n| format!("{prefix}-{n}")).collect();
        let names: Vec<&str> = users.iter().map(String::as_str).collect();
        let mut local = ShardPresence::new(1024);
        c.bench_function(name, |b| {
            b.iter(|| {
                black_box(local.watch(&book, 0, 1, &names, 1000).is_ok());
                local.forget_conn(&book, 0, 1);
            })
        });
    }
}

criterion_group!(benches, bench_open_close, bench_watch);
criterion_main!(benches);
