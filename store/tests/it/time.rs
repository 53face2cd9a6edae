//! Paging by time: the writer keeps time non-decreasing along every
//! stream, `seek_time` finds a time by binary search, and reads take time
//! bounds (`from_time_ms`, `before_time_ms`) with the offset bounds.

use std::time::Duration;

use ringcast_protocol::envelope::EncodedPush;
use ringcast_store::{AppendRequest, Durability, Retention, Store, TimeSeek};

use crate::util::{
    block_on, config, eventually, offsets, read_all, read_times, request_at, submit,
};

fn times(entries: &[EncodedPush]) -> Vec<u64> {
    entries
        .iter()
        .map(|push| push.envelope().time_ms.to_native())
        .collect()
}

fn seek(store: &Store, stream: &str, time_ms: u64) -> TimeSeek {
    block_on(store.seek_time(stream, time_ms).expect("queued"))
        .expect("reader alive")
        .expect("seek")
}

fn append_at(store: &Store, stream: &str, time_ms: u64) -> u64 {
    let appended = submit(
        store,
        request_at(stream, "1", Durability::Buffered, time_ms),
    )
    .unwrap();
    appended.push.envelope().time_ms.to_native()
}

#[test]
fn a_skewed_earlier_clock_gets_the_previous_time_also_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    // A publication carries its shard's clock; one behind the last entry's
    // is stored (and fanned out) with the last entry's time.
    let stamped: Vec<u64> = [1_000, 1_000, 900, 1_200, 1_100, 5]
        .into_iter()
        .map(|time_ms| append_at(&store, "s", time_ms))
        .collect();
    assert_eq!(stamped, vec![1_000, 1_000, 1_000, 1_200, 1_200, 1_200]);
    assert_eq!(times(&read_all(&store, "s").entries), stamped);
    // Every stream, not one: another stream keeps its own times.
    assert_eq!(append_at(&store, "t", 700), 700);
    store.close().unwrap();

    // The last entry's time is read back at open.
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(append_at(&store, "s", 1_150), 1_200);
    assert_eq!(append_at(&store, "s", 1_300), 1_300);
    assert_eq!(append_at(&store, "t", 600), 700);
    store.close().unwrap();
}

/// Every entry's time, for the model.
const TIMES: [u64; 12] = [10, 10, 10, 20, 20, 30, 40, 40, 40, 40, 50, 60];

fn model_seek(time_ms: u64) -> (u64, Option<u64>) {
    let at_or_after = TIMES
        .iter()
        .position(|&t| t >= time_ms)
        .unwrap_or(TIMES.len()) as u64
        + 1;
    let at_or_before = TIMES
        .iter()
        .rposition(|&t| t <= time_ms)
        .map(|i| i as u64 + 1);
    (at_or_after, at_or_before)
}

#[test]
fn seek_time_finds_the_edges_of_runs_of_equal_times() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for time_ms in TIMES {
        append_at(&store, "s", time_ms);
    }
    for time_ms in 0..=70 {
        let found = seek(&store, "s", time_ms);
        assert_eq!(
            (found.at_or_after, found.at_or_before),
            model_seek(time_ms),
            "time {time_ms}"
        );
        assert_eq!((found.first_offset, found.next_offset), (1, 13));
        assert_ne!(found.epoch, 0);
    }
    assert_eq!(seek(&store, "s", u64::MAX).at_or_before, Some(12));
    store.close().unwrap();
}

#[test]
fn reads_by_time_page_both_ways_without_gaps_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for time_ms in TIMES {
        append_at(&store, "s", time_ms);
    }
    for (from, before) in [
        (None, None),
        (Some(10), None),
        (Some(20), None),
        (Some(25), Some(45)),
        (None, Some(40)),
        (Some(40), Some(41)),
        (Some(61), None),
        (None, Some(10)),
    ] {
        let expected: Vec<u64> = (1..=12)
            .filter(|&offset| {
                let time = TIMES[offset as usize - 1];
                from.is_none_or(|from| time >= from) && before.is_none_or(|before| time < before)
            })
            .collect();
        for limit in [1, 2, 5, 100] {
            // Forward: the first page by time, the next ones after the last
            // offset seen, the time bounds kept.
            let mut forward = Vec::new();
            let mut since = None;
            loop {
                let page = read_times(&store, "s", (since, None), (from, before), limit, false);
                let got = offsets(&page.entries);
                assert!(got.len() <= limit);
                let Some(&last) = got.last() else { break };
                forward.extend(got);
                since = Some(last);
            }
            assert_eq!(forward, expected, "forward {from:?}..{before:?} by {limit}");
            // Backward: newest first, the next pages below the last offset.
            let mut backward = Vec::new();
            let mut below = None;
            loop {
                let page = read_times(&store, "s", (None, below), (from, before), limit, true);
                let got = offsets(&page.entries);
                let Some(&last) = got.last() else { break };
                backward.extend(got);
                below = Some(last);
            }
            backward.reverse();
            assert_eq!(
                backward, expected,
                "backward {from:?}..{before:?} by {limit}"
            );
        }
    }
    store.close().unwrap();
}

#[test]
fn seek_time_on_unknown_and_empty_streams() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let unknown = seek(&store, "nothing", 5);
    assert_eq!(
        unknown,
        TimeSeek {
            at_or_after: 1,
            at_or_before: None,
            epoch: 0,
            first_offset: 1,
            next_offset: 1,
        }
    );
    // A reset leaves a stream with an epoch and no entries.
    append_at(&store, "s", 10);
    let epoch = block_on(store.reset_stream("s").unwrap()).unwrap().unwrap();
    let empty = seek(&store, "s", 5);
    assert_eq!((empty.at_or_after, empty.at_or_before), (1, None));
    assert_eq!((empty.epoch, empty.next_offset), (epoch, 1));
    let page = read_times(&store, "s", (None, None), (Some(0), Some(100)), 10, false);
    assert!(page.entries.is_empty());
    // The reset stream starts its times over.
    assert_eq!(append_at(&store, "s", 3), 3);
    store.close().unwrap();
}

#[test]
fn seek_time_after_retention_trimmed_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for time_ms in 1..=20u64 {
        submit(
            &store,
            AppendRequest {
                retention: Retention {
                    count_max: 5,
                    age_max: Duration::MAX,
                },
                ..request_at("s", "1", Durability::Buffered, time_ms * 100)
            },
        )
        .unwrap();
    }
    eventually("count trim", || read_all(&store, "s").first_offset == 16);
    // A time of a trimmed entry: the first stored one is the first at or
    // after it, and nothing stored is at or before it.
    let trimmed = seek(&store, "s", 300);
    assert_eq!((trimmed.at_or_after, trimmed.at_or_before), (16, None));
    assert_eq!(trimmed.first_offset, 16);
    assert_eq!(seek(&store, "s", 1_750).at_or_after, 18);
    assert_eq!(seek(&store, "s", 1_750).at_or_before, Some(17));
    assert_eq!(seek(&store, "s", 2_001).at_or_after, 21);
    let page = read_times(&store, "s", (None, None), (Some(0), None), 100, false);
    assert_eq!(offsets(&page.entries), vec![16, 17, 18, 19, 20]);
    let page = read_times(&store, "s", (None, None), (None, Some(1_700)), 100, true);
    assert_eq!(offsets(&page.entries), vec![16]);
    store.close().unwrap();
}
