//! Recovering from a transient failure without a restart.
//!
//! fjall refuses every write after any failed journal write or background
//! job (it "poisons" the database, and a poisoned `Database` stays so), so
//! running out of file descriptors when fjall needs a new file (a memtable
//! flush, a compaction, a journal rotation) used to poison this store until
//! the process restarted. Now the writer tells two kinds of failure apart:
//!
//! - **Transient**: the OS refused a file descriptor or memory (EMFILE,
//!   ENFILE, ENOMEM, EAGAIN). The writer answers the failed batch with
//!   [`StoreError::Unavailable`], lets go of the database (readers answer
//!   `Unavailable` meanwhile), and reopens it with backoff: fjall replays
//!   its journal, `recovery.rs` reloads every stream, and writing resumes.
//!   Nothing acknowledged is lost: every acknowledged batch is in the
//!   journal, which the reopen replays.
//! - **Anything else** (a failed fsync, EIO, ENOSPC, corruption): the store
//!   is poisoned for good, as before. A failed fsync is never retried:
//!   after one the page cache may say "written" for pages the disk never
//!   got, and a retry could acknowledge data that is gone.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use crate::error::{errno_reason, transient_reason, StoreError, EMFILE_REASON};
use crate::recovery::{open_and_recover, Fjall};
use crate::writer::{
    poison, refuse_batch, PoisonOnPanic, Writer, WriterExit, WriterMsg, WriterParts,
};

/// What [`StoreError::Unavailable`] says while the database is reopened.
pub(crate) const REOPENING_REASON: &str =
    "the store is reopening its database after running short of file descriptors or memory";

/// First wait between two reopen attempts; doubles up to
/// [`REOPEN_BACKOFF_MAX`] while the shortage lasts.
const REOPEN_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest wait between two reopen attempts: how late, at worst, the store
/// notices that the shortage is over.
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often a reopen waits to check whether the readers let go of the
/// old database (each finishes the one request it is serving).
const READERS_RELEASE_POLL: Duration = Duration::from_millis(1);
/// Least time between two logged transient failures; the ones between are
/// counted and reported with the next.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How close to `RLIMIT_NOFILE` counts as out of file descriptors when
/// fjall does not say why it failed: more than a flush or a compaction
/// holds at once, far below any limit a server runs with.
const FD_SHORTAGE_MARGIN: u64 = 64;

const _: () = assert!(REOPEN_BACKOFF_MIN.as_nanos() > 0);
const _: () = assert!(REOPEN_BACKOFF_MIN.as_nanos() <= REOPEN_BACKOFF_MAX.as_nanos());

/// Whether a failed write is transient, and if so what ran short.
///
/// An error that carries an OS error says so itself. fjall's
/// `Error::Poisoned` carries nothing: fjall poisons itself when one of its
/// background workers fails (writing a memtable to a new table file,
/// compacting, rotating the journal) and only logs the worker's error. The
/// store then judges by whether the process is short of file descriptors
/// *now* (see [`fd_shortage`]): a background job that failed for want of a file
/// descriptor failed moments ago (the writer asks fjall after every batch
/// and every `maintenance_interval` when idle), while one that failed on an
/// fsync or a bad disk leaves descriptors free, and is taken as fatal.
/// The judgement errs on the side of poisoning: a shortage that is over
/// before the writer asks is taken for a disk failure.
pub(crate) fn classify(error: &fjall::Error, db_path: &Path) -> Option<&'static str> {
    if matches!(error, fjall::Error::Poisoned) {
        return fd_shortage(db_path);
    }
    transient_reason(error)
}

/// Whether the process is out of file descriptors now, or within
/// [`FD_SHORTAGE_MARGIN`] of its limit: a failed background job closes the
/// files it did open, so one free descriptor does not prove that the job
/// had enough.
fn fd_shortage(db_path: &Path) -> Option<&'static str> {
    if let Err(probe) = std::fs::File::open(db_path) {
        return probe.raw_os_error().and_then(errno_reason);
    }
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current?;
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count();
    let open = u64::try_from(open).ok()?;
    (open.saturating_add(FD_SHORTAGE_MARGIN) >= limit).then_some(EMFILE_REASON)
}

/// Logs transient failures at most once per [`FAILURE_LOG_INTERVAL`], so a
/// long shortage makes a line every few seconds, not one per batch.
#[derive(Debug, Default)]
pub(crate) struct FailureLog {
    logged_at: Option<Instant>,
    suppressed: u64,
}

impl FailureLog {
    pub(crate) fn transient(&mut self, op: &str, reason: &str, error: &fjall::Error) {
        let now = Instant::now();
        if self
            .logged_at
            .is_some_and(|at| now.duration_since(at) < FAILURE_LOG_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            op,
            reason,
            %error,
            suppressed = self.suppressed,
            "store write failed for a transient reason: answering \"unavailable\" \
             and reopening the database (nothing acknowledged is lost)"
        );
        self.logged_at = Some(now);
        self.suppressed = 0;
    }
}

/// The writer thread: runs the writer, and reopens the database each time
/// a transient failure stops it.
pub(crate) fn run_writer_thread(mut writer: Writer) {
    let _poison_on_panic = PoisonOnPanic(writer.shared());
    loop {
        match writer.run() {
            WriterExit::Stopped => return,
            WriterExit::Reopen(parts, reason) => match reopen(*parts, reason) {
                Some(reopened) => writer = reopened,
                None => return,
            },
        }
    }
}

/// Lets go of the database, then reopens it with backoff, answering
/// requests [`StoreError::Unavailable`] meanwhile: new ones at once (the
/// store refuses them while `recovering`), those already queued between
/// the backoff's tries; only an attempt in progress (dropping the old
/// database, or opening and replaying the journal) holds them, never until
/// the database is back. Returns the writer on the reopened
/// database, or `None` if the store shut down or the reopen failed for
/// good (then the store is poisoned).
fn reopen(mut parts: WriterParts, reason: &'static str) -> Option<Writer> {
    let shared = parts.shared.clone();
    // The failure was logged (rate-limited) by the writer.
    shared.recovering.store(true, Ordering::Release);
    // fjall locks its directory, so the old database must be gone (every
    // handle dropped, its workers joined) before the new one opens; its
    // file descriptors are freed with it.
    if let Some(old) = shared.fjall.replace(None) {
        release(old);
    }
    let unavailable = StoreError::Unavailable { reason };
    let mut backoff = REOPEN_BACKOFF_MIN;
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        match open_and_recover(&parts.config, &mut parts.epochs) {
            Ok((fjall, recovered)) => {
                let fjall = Arc::new(fjall);
                shared.fjall.replace(Some(fjall.clone()));
                shared.recoveries.add(1);
                shared.recovering.store(false, Ordering::Release);
                tracing::warn!(
                    attempts,
                    streams = recovered.streams.len(),
                    path = %parts.config.path.display(),
                    "store: database reopened after a transient failure; writes resume"
                );
                return Some(Writer::new(fjall, parts, recovered));
            }
            Err(StoreError::Unavailable { .. }) => {}
            // The old database's last handles let go of its directory lock
            // as they drop (fjall's keyspaces hold it too); not a disk fault.
            Err(StoreError::Io { source, .. }) if matches!(*source, fjall::Error::Locked) => {}
            Err(error) => {
                poison(&shared, "reopening the database", &error);
                shared.recovering.store(false, Ordering::Release);
                refuse_until_shutdown(&mut parts, &StoreError::Poisoned, None);
                return None;
            }
        }
        let retry_at = Instant::now() + backoff;
        backoff = (backoff * 2).min(REOPEN_BACKOFF_MAX);
        if !refuse_until_shutdown(&mut parts, &unavailable, Some(retry_at)) {
            shared.recovering.store(false, Ordering::Release);
            return None;
        }
    }
}

/// Waits until `fjall` is the last handle on the database, then drops it.
fn release(fjall: Arc<Fjall>) {
    let mut fjall = fjall;
    loop {
        match Arc::try_unwrap(fjall) {
            Ok(last) => {
                drop(last);
                return;
            }
            Err(shared) => {
                fjall = shared;
                std::thread::sleep(READERS_RELEASE_POLL);
            }
        }
    }
}

/// Answers requests with `error` as they come, until `until` (then returns
/// `true`) or until the store shuts down (then answers what is left and
/// returns `false`).
fn refuse_until_shutdown(
    parts: &mut WriterParts,
    error: &StoreError,
    until: Option<Instant>,
) -> bool {
    loop {
        let msg = match until {
            Some(until) => {
                let now = Instant::now();
                if now >= until {
                    return true;
                }
                parts.requests.recv_timeout(until - now)
            }
            None => parts
                .requests
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
        };
        match msg {
            Ok(WriterMsg::Shutdown) => {
                let rest: Vec<WriterMsg> = parts.requests.try_iter().collect();
                refuse_batch(&mut *parts.sink, &parts.shared.outbox_dropped, rest, error);
                return false;
            }
            Ok(msg) => refuse_batch(
                &mut *parts.sink,
                &parts.shared.outbox_dropped,
                vec![msg],
                error,
            ),
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}
