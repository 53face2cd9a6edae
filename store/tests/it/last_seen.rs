//! Users' last seen: the latest time wins whatever order the reports come
//! in, and it survives a reopen.

use ringcast_store::Store;

use crate::util::{block_on, config, flush};

fn last_seen(store: &Store, users: &[&str]) -> Vec<u64> {
    let users = users.iter().map(|user| (*user).to_owned()).collect();
    block_on(store.last_seen(users).unwrap())
        .expect("reader answered")
        .expect("last seen read")
}

#[test]
fn last_seen_never_goes_backwards_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(last_seen(&store, &["alice", "bob"]), vec![0, 0]);
    store.submit_last_seen("alice", 1_000).unwrap();
    store.submit_last_seen("bob", 500).unwrap();
    flush(&store);
    assert_eq!(last_seen(&store, &["alice", "bob"]), vec![1_000, 500]);

    // An older report in a later batch changes nothing; in one batch the
    // latest wins whatever the order.
    store.submit_last_seen("alice", 900).unwrap();
    flush(&store);
    assert_eq!(last_seen(&store, &["alice"]), vec![1_000]);
    store.submit_last_seen("alice", 1_200).unwrap();
    store.submit_last_seen("alice", 1_100).unwrap();
    flush(&store);
    assert_eq!(
        last_seen(&store, &["alice", "bob", "carol"]),
        vec![1_200, 500, 0]
    );
    store.close().unwrap();

    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(
        last_seen(&store, &["bob", "alice", "carol"]),
        vec![500, 1_200, 0]
    );
    store.submit_last_seen("alice", 1_150).unwrap();
    flush(&store);
    assert_eq!(last_seen(&store, &["alice"]), vec![1_200]);
    store.close().unwrap();
}

#[test]
fn last_seen_refuses_an_empty_user_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    assert!(store.submit_last_seen("", 1).is_err());
    assert!(store.last_seen(vec![String::new()]).is_err());
    store.close().unwrap();
}
