//! [`StoreError`]: every way a store request can fail, with a [`ErrorSource`]
//! tag so callers (the engine's metrics, its retry and close decisions) can
//! branch on *who* is at fault without matching every variant.

use std::sync::Arc;

/// Why a store request failed.
///
/// `Clone` because one failed group commit answers every request in it with
/// the same error; the fjall error is shared behind an `Arc`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The request queue is full: the store is behind. Nothing was written.
    #[error(
        "store queue is full ({capacity} requests): the store is behind; \
         shed load, retry later, or raise the queue capacity"
    )]
    Overloaded {
        /// Capacity of the queue that was full.
        capacity: usize,
    },
    /// A write or fsync failed earlier, so fjall (and this store) refuse
    /// every later durable write: after a failed fsync the page cache may
    /// no longer match the disk, and retrying could acknowledge lost data.
    #[error(
        "store is poisoned by an earlier failed write or fsync and refuses all writes; \
         check the disk and the logs, then restart the process"
    )]
    Poisoned,
    /// fjall reported an I/O or storage error. For a write this means the
    /// request was *not* acknowledged and the store is now poisoned.
    #[error("store I/O error while {op}: {source}")]
    Io {
        /// What the store was doing.
        op: &'static str,
        /// The fjall error.
        #[source]
        source: Arc<fjall::Error>,
    },
    /// Bytes read back from disk failed validation.
    #[error("corrupt data in stream {stream:?} at offset {offset}: {reason}")]
    Corrupt {
        /// Stream name (or `""` if unknown).
        stream: String,
        /// Offset of the bad entry, or 0 for stream metadata.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// The store is shut down (or its worker thread died).
    #[error("store is closed")]
    Closed,
    /// The request itself is invalid (empty stream name, oversized id, ...).
    #[error("invalid store request: {reason}")]
    InvalidRequest {
        /// What was wrong.
        reason: &'static str,
    },
}

/// Who is at fault, for metrics and retry decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorSource {
    /// The caller sent a bad request; retrying the same request is pointless.
    Caller,
    /// The store is busy; retrying later may succeed.
    Load,
    /// The disk or the data on it; the operator has to look.
    Disk,
    /// The store is shutting down.
    Shutdown,
}

impl StoreError {
    /// Who is at fault.
    pub fn source_tag(&self) -> ErrorSource {
        match self {
            StoreError::InvalidRequest { .. } => ErrorSource::Caller,
            StoreError::Overloaded { .. } => ErrorSource::Load,
            StoreError::Poisoned | StoreError::Io { .. } | StoreError::Corrupt { .. } => {
                ErrorSource::Disk
            }
            StoreError::Closed => ErrorSource::Shutdown,
        }
    }

    pub(crate) fn io(op: &'static str, error: fjall::Error) -> StoreError {
        if matches!(error, fjall::Error::Poisoned) {
            return StoreError::Poisoned;
        }
        StoreError::Io {
            op,
            source: Arc::new(error),
        }
    }
}
