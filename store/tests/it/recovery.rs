//! Clean restarts: everything acknowledged is there, contiguous, same epoch.

use ringcast_store::{Durability, Store};

use crate::util::{config, data, offsets, read_all, request, submit};

#[test]
fn sync_appends_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let mut epoch = 0;
    for idx in 0..200 {
        let stream = if idx % 2 == 0 { "even" } else { "odd" };
        let appended = submit(&store, request(stream, &idx.to_string(), Durability::Sync)).unwrap();
        if stream == "even" {
            epoch = appended.epoch;
        }
    }
    store.close().unwrap();

    let store = Store::open(config(dir.path())).unwrap();
    let even = read_all(&store, "even");
    assert_eq!(even.epoch, epoch);
    assert_eq!(offsets(&even.entries), (1..=100).collect::<Vec<_>>());
    let want: Vec<String> = (0..200)
        .step_by(2)
        .map(|idx: i32| idx.to_string())
        .collect();
    assert_eq!(data(&even.entries), want);
    assert_eq!(read_all(&store, "odd").entries.len(), 100);
    store.close().unwrap();
}

#[test]
fn drop_without_close_still_persists_acknowledged_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for idx in 0..50 {
        submit(&store, request("s", &idx.to_string(), Durability::Buffered)).unwrap();
    }
    drop(store);
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(
        offsets(&read_all(&store, "s").entries),
        (1..=50).collect::<Vec<_>>()
    );
    store.close().unwrap();
}
