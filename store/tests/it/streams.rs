//! Offsets, order, epochs, reads and the commit sink.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use ringcast_store::{Appended, Durability, ErrorSource, Store, StoreError};

use crate::util::{append, block_on, config, data, offsets, read_all, read_range, request, submit};

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Interleaved appends to many streams, all in flight at once (so they
    /// share group commits): offsets are contiguous from 1 per stream, in
    /// submission order, stored in that order, and the hook sees them in
    /// offset order per stream.
    #[test]
    fn offsets_contiguous_and_ordered_per_stream(
        ops in prop::collection::vec((0usize..6, any::<bool>()), 1..80),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let seen: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let hook_seen = seen.clone();
        let store = Store::open_with_sink(
            config(dir.path()),
            move |appended: &Appended| {
                let channel = appended.push.envelope().channel.as_str().to_owned();
                hook_seen.lock().unwrap().push((channel, appended.offset));
            },
        )
        .unwrap();
        let mut receivers = Vec::new();
        for (idx, &(stream_idx, sync)) in ops.iter().enumerate() {
            let durability = if sync { Durability::Sync } else { Durability::Buffered };
            let stream = format!("s{stream_idx}");
            let receiver = store.append(request(&stream, &idx.to_string(), durability)).unwrap();
            receivers.push((stream, idx, receiver));
        }
        let mut expected: HashMap<String, Vec<String>> = HashMap::new();
        for (stream, idx, receiver) in receivers {
            let appended = block_on(receiver).unwrap().unwrap();
            let list = expected.entry(stream).or_default();
            list.push(idx.to_string());
            prop_assert_eq!(appended.offset, list.len() as u64);
            prop_assert!(!appended.duplicate);
            prop_assert_eq!(appended.push.envelope().offset.to_native(), appended.offset);
            prop_assert_eq!(appended.push.envelope().epoch.to_native(), appended.epoch);
        }
        for (stream, want) in &expected {
            let result = read_all(&store, stream);
            prop_assert_eq!(offsets(&result.entries), (1..=want.len() as u64).collect::<Vec<_>>());
            prop_assert_eq!(&data(&result.entries), want);
            prop_assert_eq!(result.first_offset, 1);
            prop_assert_eq!(result.next_offset, want.len() as u64 + 1);
            let hooked: Vec<u64> = seen
                .lock()
                .unwrap()
                .iter()
                .filter(|(channel, _)| channel == stream)
                .map(|&(_, offset)| offset)
                .collect();
            prop_assert_eq!(hooked, (1..=want.len() as u64).collect::<Vec<_>>());
        }
        store.close().unwrap();
    }

    /// Forward and reverse reads with `since`, `before` and `limit` match a model.
    #[test]
    fn reads_match_model(
        count in 0u64..30,
        since in prop::option::of(0u64..35),
        before in prop::option::of(0u64..35),
        limit in 0usize..40,
        reverse in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        for idx in 1..=count {
            append(&store, "history", &idx.to_string());
        }
        let result = read_range(&store, "history", since, before, limit, reverse);
        let mut want: Vec<u64> = (1..=count)
            .filter(|&offset| offset > since.unwrap_or(0) && offset < before.unwrap_or(u64::MAX))
            .collect();
        if reverse {
            want.reverse();
        }
        want.truncate(limit);
        prop_assert_eq!(offsets(&result.entries), want);
        prop_assert_eq!(result.next_offset, count + 1);
        prop_assert_eq!(result.epoch != 0, count > 0);
        store.close().unwrap();
    }
}

/// Paging back with `before` from the newest entry visits every entry once,
/// newest first, and stops at the oldest stored one, also after retention
/// trimmed the start of the stream.
#[test]
fn before_pages_back_through_every_entry_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for idx in 1..=250u64 {
        append(&store, "paged", &idx.to_string());
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = read_range(&store, "paged", None, before, 100, true);
        assert!(page.entries.len() <= 100);
        let Some(last) = page.entries.last() else {
            break;
        };
        let last_offset = last.envelope().offset.to_native();
        seen.extend(offsets(&page.entries));
        // More exist exactly when the page stopped above the oldest entry.
        if last_offset <= page.first_offset {
            break;
        }
        before = Some(last_offset);
    }
    assert_eq!(seen, (1..=250u64).rev().collect::<Vec<_>>());
    // `before` past the end reads from the newest; `before` at the oldest reads nothing.
    let newest = read_range(&store, "paged", None, Some(u64::MAX), 1, true);
    assert_eq!(offsets(&newest.entries), vec![250]);
    let none = read_range(&store, "paged", None, Some(1), 10, true);
    assert!(none.entries.is_empty());
    store.close().unwrap();
}

#[test]
fn unknown_stream_reads_epoch_zero_and_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let result = read_all(&store, "nobody");
    assert_eq!(result.epoch, 0);
    assert!(result.entries.is_empty());
    store.close().unwrap();
}

#[test]
fn stored_bytes_are_the_acknowledged_push() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let appended = append(&store, "user:alice", r#"{"hello":1}"#);
    let result = read_all(&store, "user:alice");
    assert_eq!(result.entries.len(), 1);
    assert_eq!(result.entries[0].as_bytes(), appended.push.as_bytes());
    let env = result.entries[0].envelope();
    assert_eq!(env.id.to_native(), appended.message_id.as_u64());
    assert_eq!(
        appended.message_id.shard(),
        62,
        "store ids use shard field 62"
    );
    assert_ne!(env.time_ms.to_native(), 0, "time filled in");
    store.close().unwrap();
}

#[test]
fn epoch_stable_across_reopen_and_changed_by_reset() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let first = append(&store, "news", "a");
    append(&store, "news", "b");
    store.close().unwrap();

    let store = Store::open(config(dir.path())).unwrap();
    let third = append(&store, "news", "c");
    assert_eq!(third.epoch, first.epoch, "epoch survives reopen");
    assert_eq!(third.offset, 3);

    let new_epoch = block_on(store.reset_stream("news").unwrap())
        .unwrap()
        .unwrap();
    assert_ne!(new_epoch, first.epoch);
    assert_ne!(new_epoch, 0);
    let result = read_all(&store, "news");
    assert_eq!(result.epoch, new_epoch);
    assert!(result.entries.is_empty(), "reset drops the entries");
    let after = append(&store, "news", "d");
    assert_eq!(
        (after.offset, after.epoch),
        (1, new_epoch),
        "offsets restart"
    );
    store.close().unwrap();

    let store = Store::open(config(dir.path())).unwrap();
    let result = read_all(&store, "news");
    assert_eq!(result.epoch, new_epoch, "reset epoch survives reopen");
    assert_eq!(data(&result.entries), vec!["d"]);
    store.close().unwrap();
}

#[test]
fn invalid_requests_are_refused_with_a_caller_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let error = submit(&store, request("", "x", Durability::Sync)).unwrap_err();
    assert!(
        matches!(error, StoreError::InvalidRequest { .. }),
        "{error}"
    );
    assert_eq!(error.source_tag(), ErrorSource::Caller);
    store.close().unwrap();
}

#[test]
fn full_queue_answers_overloaded() {
    let dir = tempfile::tempdir().unwrap();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let mut config = config(dir.path());
    config.queue_capacity = 2;
    config.group_commit_entries_max = 1;
    // The hook stalls the writer until released, so the queue fills.
    let store = Store::open_with_sink(config, move |_: &Appended| {
        let _ = release_rx.lock().unwrap().recv();
    })
    .unwrap();
    let mut receivers = Vec::new();
    let mut overloaded = None;
    for idx in 0..10 {
        match store.append(request("s", &idx.to_string(), Durability::Buffered)) {
            Ok(receiver) => receivers.push(receiver),
            Err(error) => {
                overloaded = Some(error);
                break;
            }
        }
    }
    let error = overloaded.expect("a full queue refuses");
    assert!(
        matches!(error, StoreError::Overloaded { capacity: 2 }),
        "{error}"
    );
    assert_eq!(error.source_tag(), ErrorSource::Load);
    for _ in 0..receivers.len() {
        release_tx.send(()).unwrap();
    }
    for receiver in receivers {
        block_on(receiver).unwrap().unwrap();
    }
    drop(release_tx);
    store.close().unwrap();
}
