//! Acks: cursors are monotonic, clamped to the stream end, and scoped to
//! the stream's epoch.

use proptest::prelude::*;
use ringcast_store::Store;

use crate::util::{append, block_on, config};

fn set(store: &Store, offset: u64) -> u64 {
    block_on(
        store
            .set_cursor("alice", "phone", "user:alice", offset)
            .unwrap(),
    )
    .unwrap()
    .unwrap()
}

fn get_with_epoch(store: &Store) -> Option<ringcast_store::StoredCursor> {
    block_on(store.get_cursor("alice", "phone", "user:alice").unwrap())
        .unwrap()
        .unwrap()
}

fn get(store: &Store) -> Option<u64> {
    get_with_epoch(store).map(|cursor| cursor.offset)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Whatever order acks arrive in, the cursor is the running maximum.
    #[test]
    fn cursor_never_moves_backwards(acks in prop::collection::vec(0u64..25, 1..20)) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        for idx in 0..20 {
            append(&store, "user:alice", &idx.to_string());
        }
        let mut max = 0;
        for ack in acks {
            max = max.max(ack.min(20));
            prop_assert_eq!(set(&store, ack), max);
            prop_assert_eq!(get(&store), Some(max));
        }
        store.close().unwrap();
    }
}

#[test]
fn cursor_survives_reopen_and_is_dropped_by_reset() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(get(&store), None);
    for idx in 0..5 {
        append(&store, "user:alice", &idx.to_string());
    }
    assert_eq!(set(&store, 100), 5, "clamped to the stream end");
    assert_eq!(set(&store, 3), 5, "never backwards");
    // Other devices are independent.
    let tablet = block_on(store.get_cursor("alice", "tablet", "user:alice").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(tablet, None);
    store.close().unwrap();

    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(get(&store), Some(5));
    let acked_epoch = get_with_epoch(&store).unwrap().epoch;
    let new_epoch = block_on(store.reset_stream("user:alice").unwrap())
        .unwrap()
        .unwrap();
    // The old cursor comes back with its old epoch, so the caller can tell
    // "stream reset" from "nothing acknowledged".
    let stale = get_with_epoch(&store).unwrap();
    assert_eq!(stale.epoch, acked_epoch);
    assert_ne!(
        stale.epoch, new_epoch,
        "a cursor from an old epoch is marked as such"
    );
    append(&store, "user:alice", "new");
    assert_eq!(set(&store, 1), 1, "a new epoch starts a new cursor");
    store.close().unwrap();
}

#[test]
fn max_cursor_is_the_highest_device_of_the_user_in_the_current_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let max = |user: &str, stream: &str| {
        block_on(store.max_cursor(user, stream).unwrap())
            .unwrap()
            .unwrap()
            .map(|cursor| cursor.offset)
    };
    assert_eq!(max("alice", "user:alice"), None, "no stream yet");
    for idx in 0..9 {
        append(&store, "user:alice", &idx.to_string());
        append(&store, "user:al", &idx.to_string());
    }
    assert_eq!(max("alice", "user:alice"), None, "no cursor yet");
    let ack = |user: &str, device: &str, stream: &str, offset: u64| {
        block_on(store.set_cursor(user, device, stream, offset).unwrap())
            .unwrap()
            .unwrap();
    };
    ack("alice", "phone", "user:alice", 3);
    ack("alice", "laptop", "user:alice", 7);
    ack("alice", "tablet", "user:al", 9);
    // Another user whose id and device would spell the same bytes without
    // the length prefixes.
    ack("al", "iceXphone", "user:alice", 9);
    ack("bob", "phone", "user:alice", 9);
    assert_eq!(max("alice", "user:alice"), Some(7));
    assert_eq!(max("alice", "user:al"), Some(9));
    assert_eq!(max("al", "user:alice"), Some(9));
    assert_eq!(max("carol", "user:alice"), None);
    // After a reset the old epoch's cursors no longer count.
    block_on(store.reset_stream("user:alice").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(max("alice", "user:alice"), None);
    append(&store, "user:alice", "new");
    ack("alice", "phone", "user:alice", 1);
    let cursor = block_on(store.max_cursor("alice", "user:alice").unwrap())
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(cursor.offset, 1);
    assert_eq!(
        cursor.epoch,
        crate::util::read_all(&store, "user:alice").epoch
    );
    store.close().unwrap();
}
