//! Running out of a resource the OS lends, for real: a child process (this
//! test binary again, with `CHILD_ENV` naming the test) lowers its own
//! limits, so the rest of the suite keeps its file descriptors.
//!
//! - Out of file descriptors when fjall needs a new file (a memtable
//!   flush): requests fail with the retryable `Unavailable`, never
//!   `Poisoned`, and once descriptors are free again the same `Store`
//!   writes again, with every acknowledged append still there.
//! - A background write failing for a reason other than a shortage (a
//!   table file past `RLIMIT_FSIZE`: EFBIG) still poisons the store.
//!   A failed fsync cannot be caused for real without a faulty device; it
//!   takes the same path as this (fjall poisons itself, the store finds
//!   file descriptors free and poisons itself too), and fsync(2) never
//!   fails with one of the errnos taken as transient.

use std::fs::File;
use std::time::{Duration, Instant};

use ringcast_store::{Durability, ErrorSource, Store, StoreConfig, StoreError};

use crate::util::{config, read_all, request, submit};

/// Names the test a child process runs.
const CHILD_ENV: &str = "RINGCAST_STORE_TEST_CHILD";
/// Memtable size for these tests: a few appends of `PAYLOAD_BYTES` fill
/// one, so the store needs a new file every few appends.
const MEMTABLE_BYTES: u64 = 16 * 1024;
const PAYLOAD_BYTES: usize = 1024;
/// Most appends a phase makes before giving up on seeing what it waits for.
const APPENDS_PER_PHASE_MAX: usize = 5_000;

/// Runs the test `name` in a child process and checks that it passed, or,
/// in that child, returns `true`: run the body.
fn in_child(name: &str) -> bool {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        return true;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "child {name} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // `--exact` with a wrong name runs nothing and passes.
    assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
    false
}

/// In the child process running test `name`, a store with small
/// memtables in a new temp dir; in the parent, `None` (it ran the child).
fn store_in_child(name: &str) -> Option<(tempfile::TempDir, Store)> {
    if !in_child(name) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_memtables(dir.path())).unwrap();
    Some((dir, store))
}

fn small_memtables(path: &std::path::Path) -> StoreConfig {
    let mut config = config(path);
    config.memtable_bytes_max = MEMTABLE_BYTES;
    config
}

fn payload(n: usize) -> String {
    format!("{n:0width$}", width = PAYLOAD_BYTES)
}

/// Sets the soft limit of `resource`, keeping the hard one.
fn set_soft_limit(resource: libc::__rlimit_resource_t, soft: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut limit) }, 0);
    limit.rlim_cur = soft.min(limit.rlim_max);
    // SAFETY: `limit` is a valid rlimit; lowering a soft limit is allowed.
    assert_eq!(unsafe { libc::setrlimit(resource, &limit) }, 0);
}

/// Opens `/dev/null` until the process is out of file descriptors.
fn exhaust_fds() -> Vec<File> {
    let mut held = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(file) => held.push(file),
            Err(error) => {
                assert_eq!(error.raw_os_error(), Some(libc::EMFILE), "{error}");
                return held;
            }
        }
    }
}

/// An acknowledged append: what must be readable later.
#[derive(Debug, PartialEq, Eq)]
struct Acked {
    offset: u64,
    message_id: u64,
    data: String,
}

fn acked_entries(store: &Store, stream: &str) -> Vec<Acked> {
    read_all(store, stream)
        .entries
        .iter()
        .map(|push| {
            let envelope = push.envelope();
            Acked {
                offset: envelope.offset.to_native(),
                message_id: envelope.id.to_native(),
                data: String::from_utf8(envelope.data.as_slice().to_vec()).unwrap(),
            }
        })
        .collect()
}

/// Every acknowledged append is stored, with its offset and id.
fn assert_all_stored(store: &Store, stream: &str, acked: &[Acked]) {
    let stored = acked_entries(store, stream);
    for entry in acked {
        assert!(
            stored.contains(entry),
            "acknowledged entry {entry:?} is missing ({} stored)",
            stored.len()
        );
    }
}

/// Appends to one stream, remembering what was acknowledged.
struct Appender {
    stream: &'static str,
    acked: Vec<Acked>,
    next: usize,
}

impl Appender {
    fn new(stream: &'static str) -> Appender {
        Appender {
            stream,
            acked: Vec::new(),
            next: 0,
        }
    }

    fn append(&mut self, store: &Store) -> Result<(), StoreError> {
        self.next += 1;
        let data = payload(self.next);
        let appended = submit(store, request(self.stream, &data, Durability::Buffered))?;
        self.acked.push(Acked {
            offset: appended.offset,
            message_id: appended.message_id.0,
            data,
        });
        Ok(())
    }

    /// A few appends, then the process runs out of file descriptors and
    /// appends go on until ten were refused, all of them retryable. Returns
    /// the descriptors that hold the process at its limit.
    fn run_out_of_fds(&mut self, store: &Store) -> Vec<File> {
        for _ in 0..20 {
            self.append(store).unwrap();
        }
        set_soft_limit(libc::RLIMIT_NOFILE, 256);
        let held = exhaust_fds();
        let mut unavailable = 0;
        for _ in 0..APPENDS_PER_PHASE_MAX {
            match self.append(store) {
                Ok(()) => {}
                Err(error @ StoreError::Unavailable { .. }) => {
                    assert!(error.is_retryable());
                    assert_eq!(error.source_tag(), ErrorSource::Resource);
                    unavailable += 1;
                    if unavailable >= 10 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(error) => panic!("out of fds must be retryable, got {error:?}"),
            }
            let health = store.health();
            assert!(!health.poisoned, "{health:?}");
        }
        assert!(unavailable > 0, "no append failed while out of fds");
        let health = store.health();
        assert!(!health.poisoned, "{health:?}");
        assert!(health.transient_failures > 0, "{health:?}");
        println!("out of fds: {unavailable} appends unavailable, {health:?}");
        held
    }
}

/// In the child running test `name`: a store that ran out of file
/// descriptors while appending to `stream` (see
/// [`Appender::run_out_of_fds`]), and the descriptors that hold it there.
fn out_of_fds_in_child(
    name: &str,
    stream: &'static str,
) -> Option<(tempfile::TempDir, Store, Appender, Vec<File>)> {
    let (dir, store) = store_in_child(name)?;
    let mut appender = Appender::new(stream);
    let held = appender.run_out_of_fds(&store);
    Some((dir, store, appender, held))
}

#[test]
fn out_of_fds_is_retryable_and_the_store_recovers_by_itself() {
    let stream = "history:fds";
    let Some((dir, store, mut appender, held)) = out_of_fds_in_child(
        "resources::out_of_fds_is_retryable_and_the_store_recovers_by_itself",
        stream,
    ) else {
        return;
    };
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match appender.append(&store) {
            Ok(()) => break,
            Err(StoreError::Unavailable { .. }) => {
                assert!(Instant::now() < deadline, "store did not recover");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(error) => panic!("after fds were freed: {error:?}"),
        }
    }
    // Enough appends for more memtable flushes, all succeeding.
    for _ in 0..100 {
        appender.append(&store).unwrap();
    }
    let health = store.health();
    assert!(!health.poisoned && !health.recovering, "{health:?}");
    assert!(health.recoveries >= 1, "{health:?}");
    println!("recovered: {health:?}");
    assert_all_stored(&store, stream, &appender.acked);

    store.close().unwrap();
    drop(store);
    let reopened = Store::open(small_memtables(dir.path())).unwrap();
    assert_all_stored(&reopened, stream, &appender.acked);
    reopened.close().unwrap();
}

#[test]
fn a_background_write_failing_for_another_reason_still_poisons() {
    let Some((_dir, store)) =
        store_in_child("resources::a_background_write_failing_for_another_reason_still_poisons")
    else {
        return;
    };
    let stream = "history:efbig";
    // SAFETY: ignoring a signal installs no handler; writes past the limit
    // then fail with EFBIG instead of killing the process.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    // Below a table file of one memtable; the journal was sized at open.
    set_soft_limit(libc::RLIMIT_FSIZE, 4096);
    let mut poisoned = false;
    for n in 0..APPENDS_PER_PHASE_MAX {
        match submit(&store, request(stream, &payload(n), Durability::Buffered)) {
            Ok(_) => {}
            Err(StoreError::Poisoned | StoreError::Io { .. }) => {
                poisoned = true;
                break;
            }
            Err(error) => panic!("EFBIG must poison, got {error:?}"),
        }
    }
    assert!(poisoned, "no write failed past RLIMIT_FSIZE");
    let health = store.health();
    assert!(health.poisoned, "{health:?}");
    assert_eq!(health.recoveries, 0, "{health:?}");
    let error = submit(&store, request(stream, "after", Durability::Sync)).unwrap_err();
    assert!(matches!(error, StoreError::Poisoned), "{error:?}");
    assert!(!error.is_retryable());
}

#[test]
fn reads_and_close_while_recovering_answer_at_once() {
    let stream = "history:closing";
    let Some((dir, store, appender, held)) = out_of_fds_in_child(
        "resources::reads_and_close_while_recovering_answer_at_once",
        stream,
    ) else {
        return;
    };
    // Still out of descriptors: a read is answered (stored entries, or
    // retryable while the database is being reopened), never left waiting.
    let receiver = store
        .read(ringcast_store::ReadRequest {
            stream: stream.to_owned(),
            since: None,
            before: None,
            limit: 10,
            reverse: false,
            from_time_ms: None,
            before_time_ms: None,
        })
        .unwrap();
    match crate::util::block_on(receiver).unwrap() {
        Ok(_) => {}
        Err(error) => assert!(error.is_retryable(), "{error:?}"),
    }
    // Closing while out of descriptors ends cleanly: not poisoned.
    store.close().unwrap();
    assert!(!store.health().poisoned);
    drop(store);
    drop(held);
    let reopened = Store::open(small_memtables(dir.path())).unwrap();
    assert_all_stored(&reopened, stream, &appender.acked);
    reopened.close().unwrap();
}

/// Every standalone outbox event the store took without an answer is
/// either written or counted as dropped, and every dead-letter request is
/// answered, through running out of descriptors and the reopen after.
#[test]
fn unanswered_outbox_requests_are_written_or_counted_when_out_of_fds() {
    let Some((_dir, store)) = store_in_child(
        "resources::unanswered_outbox_requests_are_written_or_counted_when_out_of_fds",
    ) else {
        return;
    };
    let mut appender = Appender::new("history:outbox-fds");
    for _ in 0..20 {
        appender.append(&store).unwrap();
    }
    set_soft_limit(libc::RLIMIT_NOFILE, 256);
    let held = exhaust_fds();
    let mut accepted = 0u64;
    let mut dead_replies = Vec::new();
    let mut unavailable = 0;
    for n in 0..APPENDS_PER_PHASE_MAX {
        for _ in 0..5 {
            let event = ringcast_store::OutboxEvent {
                kind: ringcast_store::OutboxKind::Online,
                key: format!("u{n}"),
                due_ms: 0,
                body: b"{}".to_vec(),
            };
            if store.submit_outbox(vec![event]).is_ok() {
                accepted += 1;
            }
        }
        if let Ok(reply) = store.outbox_dead(u64::MAX - 1, 1, "x".into()) {
            dead_replies.push(reply);
        }
        if appender.append(&store).is_err() {
            unavailable += 1;
            if unavailable >= 10 {
                break;
            }
        }
    }
    assert!(unavailable > 0, "no append failed while out of fds");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while appender.append(&store).is_err() {
        assert!(Instant::now() < deadline, "store did not recover");
        std::thread::sleep(Duration::from_millis(5));
    }
    for reply in dead_replies {
        let answer = crate::util::block_on(reply).expect("every dead request is answered");
        assert!(matches!(answer, Ok(0) | Err(_)), "{answer:?}");
    }
    let mut written = 0u64;
    let mut after = 0;
    loop {
        let page = crate::util::block_on(store.outbox_read(after, 1000).unwrap())
            .unwrap()
            .unwrap();
        let Some(last) = page.last() else { break };
        after = match last {
            Ok(record) => record.seq,
            Err(unreadable) => unreadable.seq,
        };
        written += page.len() as u64;
    }
    let health = store.health();
    println!("accepted {accepted}, written {written}, {health:?}");
    assert_eq!(accepted, written + health.outbox_dropped, "{health:?}");
}
