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
