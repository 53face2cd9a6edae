//! Idempotent publish: a retry within the window returns the original and
//! stores nothing; after the window it is a new append.

use std::time::Duration;

use ringcast_store::{AppendRequest, Durability, Store};

use crate::util::{block_on, config, read_all, request, submit};

fn with_id(stream: &str, data: &str, client_msg_id: &str) -> AppendRequest {
    AppendRequest {
        client_msg_id: Some(client_msg_id.to_owned()),
        ..request(stream, data, Durability::Sync)
    }
}

#[test]
fn retry_within_window_returns_original_and_stores_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let original = submit(&store, with_id("s", "x", "c1")).unwrap();
    let retry = submit(&store, with_id("s", "x", "c1")).unwrap();
    assert!(!original.duplicate);
    assert!(retry.duplicate);
    assert_eq!(retry.message_id, original.message_id);
    assert_eq!(
        (retry.offset, retry.epoch),
        (original.offset, original.epoch)
    );
    assert_eq!(retry.push.as_bytes(), original.push.as_bytes());
    // Same client id on another stream is a different message.
    let other = submit(&store, with_id("t", "x", "c1")).unwrap();
    assert!(!other.duplicate);
    assert_eq!(read_all(&store, "s").entries.len(), 1, "stored once");
    store.close().unwrap();

    // The index is durable.
    let store = Store::open(config(dir.path())).unwrap();
    let retry = submit(&store, with_id("s", "x", "c1")).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.message_id, original.message_id);
    assert_eq!(read_all(&store, "s").entries.len(), 1);
    store.close().unwrap();
}

#[test]
fn retries_in_the_same_batch_store_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.group_commit_delay_max = Duration::from_millis(50);
    let store = Store::open(config).unwrap();
    let receivers: Vec<_> = (0..5)
        .map(|_| store.append(with_id("s", "x", "c1")).unwrap())
        .collect();
    let results: Vec<_> = receivers
        .into_iter()
        .map(|receiver| block_on(receiver).unwrap().unwrap())
        .collect();
    assert_eq!(
        results
            .iter()
            .filter(|appended| !appended.duplicate)
            .count(),
        1
    );
    assert!(results
        .iter()
        .all(|appended| appended.message_id == results[0].message_id));
    assert_eq!(read_all(&store, "s").entries.len(), 1);
    store.close().unwrap();
}

#[test]
fn retry_after_window_stores_again_and_index_expires() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.dedup_window = Duration::from_millis(50);
    let store = Store::open(config).unwrap();
    let first = submit(&store, with_id("s", "x", "c1")).unwrap();
    std::thread::sleep(Duration::from_millis(120));
    let second = submit(&store, with_id("s", "x", "c1")).unwrap();
    assert!(!second.duplicate, "window passed: a new append");
    assert_eq!(second.offset, first.offset + 1);
    assert_ne!(second.message_id, first.message_id);
    // And the new one is deduplicated in its own window.
    let third = submit(&store, with_id("s", "x", "c1")).unwrap();
    assert!(third.duplicate);
    assert_eq!(third.message_id, second.message_id);
    assert_eq!(read_all(&store, "s").entries.len(), 2);
    store.close().unwrap();
}
