//! Ringcast's durable streams: offline delivery, history and acks.
//!
//! A *stream* is a named, append-only log of publications (a user inbox is
//! `user:<id>`, a history channel is its channel name). Every entry has a
//! per-stream offset (1, 2, 3, ...) assigned by a single writer thread, so the
//! order within a stream is total, and every stream has an *epoch* that
//! changes only when the stream is reset or found lost, so a client holding
//! `(epoch, offset)` can tell "resume from here" from "start over".
//!
//! fjall may block (fsync, write stalls), so it only ever runs on this
//! crate's own threads: one writer (group commit, retention, expiry) and a
//! few readers (history replay). The public API ([`Store`]) never blocks:
//! requests travel over bounded crossbeam channels with `try_send` and
//! replies come back on `futures_channel::oneshot` receivers that any async
//! task can await. See `store/README.md` for the durability promises.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

mod api;
mod clock;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod im;
mod keys;
mod last_seen;
mod outbox;
mod reader;
mod recovery;
mod reopen;
mod store;
mod writer;

pub use api::{
    Answer, AppendRequest, Appended, CommitSink, ConvPage, ConvSummary, DeadRecord, DmPolicy,
    Durability, GroupActor, GroupAppend, GroupAppended, GroupInfo, GroupMember, GroupOp,
    GroupOpRequest, GroupRole, GroupSummary, Health, ImAppend, ImAppended, ImDelivery, ImReadState,
    ImRewrite, ImRewritten, ImSync, MemberReceipt, OutboxEvent, OutboxKind, OutboxRecord,
    ReadRequest, ReadResult, ReceiptPage, Retention, RewriteOp, StoreConfig, StoredCursor,
    SyncToken, TimeSeek, Unreadable, CLIENT_MSG_ID_BYTES_MAX, CONVERSATIONS_PER_USER_MAX_DEFAULT,
    CURSOR_ID_BYTES_MAX, DEAD_ERROR_BYTES_MAX, DEAD_REPLAY_MAX, GROUPS_PER_USER_MAX_DEFAULT,
    GROUP_MEMBERS_MAX_CEILING, GROUP_MEMBERS_MAX_DEFAULT, GROUP_TARGETS_MAX, GROUP_TEXT_BYTES_MAX,
    IM_NAME_PREFIXES, MEMTABLE_BYTES_MAX_DEFAULT, OUTBOX_BODY_BYTES_MAX, STREAM_NAME_BYTES_MAX,
    SYNC_INTERVAL_MIN_DEFAULT_US,
};
pub use error::{ErrorSource, StoreError};
pub use store::Store;
