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
    /// The process ran short of something the OS lends (file descriptors,
    /// memory) while the store needed it. Nothing in the request was
    /// acknowledged, and nothing acknowledged earlier was lost: the store
    /// reopens its database by itself once there is enough again, so a
    /// retry shortly after may succeed (with the same `client_msg_id` it
    /// cannot store the publication twice).
    #[error(
        "store is temporarily unavailable: {reason}; nothing was acknowledged, \
         retry shortly (the store recovers by itself)"
    )]
    Unavailable {
        /// What ran short.
        reason: &'static str,
    },
    /// The store is shut down (or its worker thread died).
    #[error("store is closed")]
    Closed,
    /// An IM append would start a new conversation for a user who already
    /// has the most conversations one user may have
    /// ([`crate::StoreConfig::conversations_per_user_max`]). Nothing was
    /// written. For the engine to answer with error 126 (`docs/im.md`).
    #[error(
        "user {user:?} already has {limit} conversations, the most one user may have; \
         nothing was written"
    )]
    ConversationLimit {
        /// The user at the cap (the sender or the peer).
        user: String,
        /// The cap.
        limit: usize,
    },
    /// A direct message between two users one of whom blocked the other.
    /// Nothing was written. For the engine to answer with 120.
    #[error("user {blocker:?} blocked user {blocked:?}; nothing was written")]
    Blocked {
        /// Who blocked (the sender or the peer).
        blocker: String,
        /// Whom.
        blocked: String,
    },
    /// A direct message to a user who takes them from contacts only, from
    /// a user not in its contacts. Nothing was written. For the engine to
    /// answer with 103 (not allowed).
    #[error(
        "user {user:?} takes direct messages from contacts only and {sender:?} is not one; \
         nothing was written"
    )]
    NotContact {
        /// The recipient.
        user: String,
        /// The sender.
        sender: String,
    },
    /// The recipient's DM policy is the app's backend's and the request
    /// does not say the backend allowed this new conversation. Nothing was
    /// written. For the engine to ask the backend (or answer 103).
    #[error(
        "{user:?} takes new direct messages the app's backend allows, and {sender:?} was not \
         allowed; nothing was written"
    )]
    BackendDecides {
        /// The recipient.
        user: String,
        /// The sender.
        sender: String,
    },
    /// The user is not a member of the group (or the group does not
    /// exist). Nothing was written. For the engine to answer with 123.
    #[error("user {user:?} is not a member of {conv:?}; nothing was written")]
    NotMember { conv: String, user: String },
    /// The sender is muted in the group, alone (until `until_ms`) or by the
    /// group's mute-all (`all`). Nothing was written. For 122.
    #[error("user {user:?} is muted in {conv:?} (mute-all: {all}); nothing was written")]
    Muted {
        conv: String,
        user: String,
        /// Unix ms the user's own mute ends (0 under mute-all alone).
        until_ms: u64,
        all: bool,
    },
    /// The group is dissolved: it takes no write. For 121.
    #[error("group {conv:?} is dissolved; nothing was written")]
    Dissolved { conv: String },
    /// The change would take the group past its member limit. For 124.
    #[error("group {conv:?} may have at most {limit} members; nothing was written")]
    MemberLimit { conv: String, limit: u32 },
    /// The actor's role does not allow the action (`docs/im.md`, "Roles").
    /// Nothing was written. For 103.
    #[error("user {user:?} may not {action} in {conv:?}; nothing was written")]
    NotAllowed {
        conv: String,
        user: String,
        /// What was refused ("remove an admin", "dissolve", ...).
        action: &'static str,
    },
    /// A recall or edit too late: past the sender's window, or an edit
    /// past the most edits one message may have. Nothing was written.
    /// For 125.
    #[error("{what} of entry {offset} of {conv:?} has passed; nothing was written")]
    WindowPassed {
        conv: String,
        offset: u64,
        /// "the recall window", "the edit window", "the edit count".
        what: &'static str,
    },
    /// The stream lives in a store partition another node of the cluster
    /// owns, and that node could not be reached or answered with an error
    /// (the engine's cluster layer builds this; the store never does).
    /// Nothing was acknowledged: a retry with the same `client_msg_id`
    /// stores the publication at most once.
    #[error("store partition {partition} (on another node): {reason}")]
    Remote {
        /// The partition the stream lives in.
        partition: u32,
        /// What went wrong: unreachable, timed out, or the owner's error.
        reason: String,
        /// Who is at fault on the owner's side ([`ErrorSource::Resource`]
        /// for an owner that could not be reached).
        tag: ErrorSource,
    },
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
    /// The process is short of file descriptors or memory; the store
    /// recovers by itself, so retrying later may succeed.
    Resource,
    /// The disk or the data on it; the operator has to look.
    Disk,
    /// The store is shutting down.
    Shutdown,
}

impl StoreError {
    /// Who is at fault.
    pub fn source_tag(&self) -> ErrorSource {
        match self {
            StoreError::InvalidRequest { .. }
            | StoreError::ConversationLimit { .. }
            | StoreError::Blocked { .. }
            | StoreError::NotContact { .. }
            | StoreError::BackendDecides { .. }
            | StoreError::NotMember { .. }
            | StoreError::Muted { .. }
            | StoreError::Dissolved { .. }
            | StoreError::MemberLimit { .. }
            | StoreError::NotAllowed { .. }
            | StoreError::WindowPassed { .. } => ErrorSource::Caller,
            StoreError::Overloaded { .. } => ErrorSource::Load,
            StoreError::Unavailable { .. } => ErrorSource::Resource,
            StoreError::Poisoned | StoreError::Io { .. } | StoreError::Corrupt { .. } => {
                ErrorSource::Disk
            }
            StoreError::Closed => ErrorSource::Shutdown,
            StoreError::Remote { tag, .. } => *tag,
        }
    }

    /// Whether the same request may succeed later without anyone acting:
    /// the store was busy or short of a resource, not broken.
    pub fn is_retryable(&self) -> bool {
        matches!(self.source_tag(), ErrorSource::Load | ErrorSource::Resource)
    }

    /// A fjall error of a request that did not write (a read, a lookup):
    /// a transient shortage is [`StoreError::Unavailable`], the rest is the
    /// disk's.
    pub(crate) fn io(op: &'static str, error: fjall::Error) -> StoreError {
        if matches!(error, fjall::Error::Poisoned) {
            return StoreError::Poisoned;
        }
        if let Some(reason) = transient_reason(&error) {
            return StoreError::Unavailable { reason };
        }
        StoreError::Io {
            op,
            source: Arc::new(error),
        }
    }
}

/// What a transient OS error ran short of, or `None` for any other error.
///
/// Transient: the OS refused a resource the process may get back by itself
/// (a file descriptor, memory), not the disk refusing data. None of these
/// can come from an fsync (fsync(2) fails with EIO, ENOSPC, EDQUOT, EROFS,
/// EINVAL, EBADF or EINTR), so a failed fsync is never taken for one.
pub(crate) fn transient_reason(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return io.raw_os_error().and_then(errno_reason);
        }
        cause = error.source();
    }
    None
}

/// The reason [`StoreError::Unavailable`] gives for a transient errno.
pub(crate) fn errno_reason(errno: i32) -> Option<&'static str> {
    use rustix::io::Errno;
    match Errno::from_raw_os_error(errno) {
        Errno::MFILE => Some(EMFILE_REASON),
        Errno::NFILE => Some("the system is out of file descriptors (ENFILE)"),
        Errno::NOMEM => Some("out of memory (ENOMEM)"),
        Errno::AGAIN => Some("a resource is temporarily unavailable (EAGAIN)"),
        _ => None,
    }
}

/// What [`StoreError::Unavailable`] says when the process is out of file
/// descriptors.
pub(crate) const EMFILE_REASON: &str = "the process is out of file descriptors (EMFILE)";
