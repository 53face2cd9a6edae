//! Test helpers: `block_on` (the store's replies are futures), a test
//! config with short timers, and blocking wrappers around the API.

use std::time::{Duration, Instant};

use ringcast_protocol::envelope::{EncodedPush, Envelope};
use ringcast_store::{
    AppendRequest, Appended, Durability, ReadRequest, ReadResult, Retention, Store, StoreConfig,
    StoreError,
};

/// Runs a future to completion on this thread (the store's replies are
/// futures).
pub use futures_executor::block_on;

/// Short timers so retention and expiry happen within a test.
pub fn config(path: &std::path::Path) -> StoreConfig {
    let mut config = StoreConfig::new(path);
    config.group_commit_delay_max = Duration::from_micros(200);
    config.maintenance_interval = Duration::from_millis(10);
    config
}

pub fn envelope(stream: &str, data: &str) -> Envelope {
    Envelope {
        id: 0,
        offset: 0,
        epoch: 0,
        channel: stream.to_owned(),
        sender: String::new(),
        time_ms: 0,
        data_is_json: true,
        data: data.as_bytes().to_vec(),
    }
}

pub fn request(stream: &str, data: &str, durability: Durability) -> AppendRequest {
    request_at(stream, data, durability, 0)
}

/// A request whose publication carries `time_ms` (0: the store stamps now).
pub fn request_at(stream: &str, data: &str, durability: Durability, time_ms: u64) -> AppendRequest {
    AppendRequest {
        stream: stream.to_owned(),
        push: EncodedPush::encode(&Envelope {
            time_ms,
            ..envelope(stream, data)
        }),
        durability,
        client_msg_id: None,
        retention: Retention::UNLIMITED,
        outbox: Vec::new(),
    }
}

pub fn submit(store: &Store, request: AppendRequest) -> Result<Appended, StoreError> {
    let receiver = store.append(request)?;
    block_on(receiver).map_err(|_| StoreError::Closed)?
}

pub fn append(store: &Store, stream: &str, data: &str) -> Appended {
    submit(store, request(stream, data, Durability::Sync)).expect("append")
}

pub fn read(
    store: &Store,
    stream: &str,
    since: Option<u64>,
    limit: usize,
    reverse: bool,
) -> ReadResult {
    read_range(store, stream, since, None, limit, reverse)
}

/// A read of the entries with `since < offset < before`.
pub fn read_range(
    store: &Store,
    stream: &str,
    since: Option<u64>,
    before: Option<u64>,
    limit: usize,
    reverse: bool,
) -> ReadResult {
    read_times(store, stream, (since, before), (None, None), limit, reverse)
}

/// A read of the entries with `offsets.0 < offset < offsets.1` and
/// `times.0 <= time < times.1`.
pub fn read_times(
    store: &Store,
    stream: &str,
    offsets: (Option<u64>, Option<u64>),
    times: (Option<u64>, Option<u64>),
    limit: usize,
    reverse: bool,
) -> ReadResult {
    let receiver = store
        .read(ReadRequest {
            stream: stream.to_owned(),
            since: offsets.0,
            before: offsets.1,
            limit,
            reverse,
            from_time_ms: times.0,
            before_time_ms: times.1,
        })
        .expect("read queued");
    block_on(receiver).expect("reader alive").expect("read")
}

pub fn read_all(store: &Store, stream: &str) -> ReadResult {
    read(store, stream, None, usize::MAX, false)
}

pub fn offsets(entries: &[EncodedPush]) -> Vec<u64> {
    entries
        .iter()
        .map(|push| push.envelope().offset.to_native())
        .collect()
}

pub fn data(entries: &[EncodedPush]) -> Vec<String> {
    entries
        .iter()
        .map(|push| String::from_utf8(push.envelope().data.as_slice().to_vec()).expect("utf8"))
        .collect()
}

/// Polls `check` until it returns true or 5 s pass.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the writer has applied what was submitted without an
/// answer: an append behind it is answered after its batch.
pub fn flush(store: &Store) {
    submit(store, request("flush", "x", Durability::Buffered)).expect("flush append");
}
