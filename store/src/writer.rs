//! The writer thread: the only code that writes to fjall. It owns the
//! stream metas (offsets, epochs, retention), folds requests into group
//! commits, hands each batch to the commit sink, and between batches does bounded
//! background work (`writer/maintenance.rs`): retention trimming, dedup
//! expiry and deleting the garbage of reset streams.
//!
//! One writer makes per-stream order total without locks: offsets are
//! assigned in the order requests leave the queue, and a batch's metas are
//! applied to the in-memory cache only once fjall accepted the batch, so a
//! failed batch leaves no offset gap behind.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use fjall::{OwnedWriteBatch, PersistMode};
use futures_channel::oneshot;
use ringcast_protocol::envelope::{EncodedPush, MessageIdGen};

use crate::api::{
    Answer, AppendRequest, Appended, CommitSink, Durability, GroupAppend, GroupAppended,
    GroupOpRequest, ImAppend, ImAppended, ImDelivery, ImReadState, ImRewrite, ImRewritten,
    OutboxEvent, Retention, StoreConfig, CLIENT_MSG_ID_BYTES_MAX, CURSOR_ID_BYTES_MAX,
    IM_NAME_PREFIXES, STREAM_NAME_BYTES_MAX,
};
use crate::clock::{now_unix_ms, EpochGen};
use crate::error::StoreError;
use crate::im::{ImBatch, ImState};
use crate::keys::{
    dedup_key, dedup_time_key, entry_key, meta_id_key, meta_name_key, CursorRecord, DedupRecord,
    StreamMeta, META_KEY_NEXT_STREAM_ID, META_PREFIX_STREAM,
};
use crate::last_seen::LastSeenBatch;
use crate::outbox::{validate_events, OutboxBatch};
use crate::recovery::{Fjall, FjallSlot, OutboxState, Recovered};
use crate::reopen::{FailureLog, REOPENING_REASON};

mod collect;
mod conv_trim;
mod failure;
mod group;
mod im;
mod maintenance;
mod requests;
mod rewrite;

pub(crate) use failure::{poison, refuse_batch};

pub(crate) use im::ImUserChange;

/// The shard field of message ids issued by the store (see
/// `ringcast_protocol::limits`).
pub(crate) const STORE_MESSAGE_ID_SHARD: u8 = ringcast_protocol::limits::ID_SHARD_STORE;

/// Where a request's answer goes: a future the caller awaits, or the
/// commit sink with the caller's tag.
pub(crate) enum Reply<T> {
    Future(oneshot::Sender<Result<T, StoreError>>),
    Tag(u64),
}

/// A result the commit sink can take as an [`Answer`].
pub(crate) trait IntoAnswer: Sized {
    fn into_answer(result: Result<Self, StoreError>) -> Answer;
}

/// Each result type with the [`Answer`] variant that carries it.
macro_rules! into_answer {
    ($($result:ty => $variant:ident),* $(,)?) => {
        $(impl IntoAnswer for $result {
            fn into_answer(result: Result<$result, StoreError>) -> Answer {
                Answer::$variant(result)
            }
        })*
    };
}

into_answer!(
    Appended => Appended,
    u64 => Cursor,
    ImAppended => ImAppended,
    ImReadState => ImRead,
    GroupAppended => Group,
    ImDelivery => ImAck,
    ImRewritten => Rewritten,
);

impl<T: IntoAnswer> Reply<T> {
    fn send(self, sink: &mut dyn CommitSink, result: Result<T, StoreError>) {
        match self {
            // A dropped receiver means the caller stopped waiting.
            Reply::Future(sender) => drop(sender.send(result)),
            Reply::Tag(tag) => sink.answered(tag, T::into_answer(result)),
        }
    }
}

/// A request for the writer. A closed set: the writer matches on it rather
/// than running closures.
pub(crate) enum WriterMsg {
    Append {
        request: AppendRequest,
        reply: Reply<Appended>,
    },
    SetCursor {
        user: String,
        device: String,
        stream: String,
        offset: u64,
        reply: Reply<u64>,
    },
    Reset {
        stream: String,
        reply: Reply<u64>,
    },
    /// Standalone outbox events (validated by the caller).
    Outbox {
        events: Vec<OutboxEvent>,
    },
    /// An Online or Offline event with its transition's sequence.
    Presence {
        event: OutboxEvent,
        presence_seq: u64,
    },
    /// A user's last seen (Unix ms), from the engine's offline report.
    LastSeen {
        user: String,
        ms: u64,
    },
    /// Delivered outbox records to delete.
    OutboxDone {
        seqs: Vec<u64>,
    },
    /// An outbox record to move to the dead-letter list; answered with
    /// how many moved (0: not in the outbox) once the batch is written.
    OutboxDead {
        seq: u64,
        attempts: u32,
        last_error: String,
        reply: Reply<u64>,
    },
    /// Dead records to move back into the outbox (`None`: all, bounded).
    DeadReplay {
        seqs: Option<Vec<u64>>,
        reply: Reply<u64>,
    },
    /// An IM message to a direct conversation.
    ImAppend {
        request: ImAppend,
        reply: Reply<ImAppended>,
    },
    /// A user's read position in a conversation.
    ImRead {
        user: String,
        conv: String,
        offset: u64,
        /// Also hide everything up to `offset` from the user (`clear`).
        clear: bool,
        reply: Reply<ImReadState>,
    },
    /// A device's acknowledgement of a conversation: its cursor and the
    /// user's delivery position.
    ImAck {
        user: String,
        device: String,
        conv: String,
        offset: u64,
        reply: Reply<ImDelivery>,
    },
    /// A group operation.
    GroupOp {
        request: GroupOpRequest,
        reply: Reply<GroupAppended>,
    },
    /// A message to a group.
    GroupAppend {
        request: GroupAppend,
        reply: Reply<GroupAppended>,
    },
    /// A recall or an edit.
    ImRewrite {
        request: ImRewrite,
        reply: Reply<ImRewritten>,
    },
    /// A change to a user's blocks, contacts or DM policy; answered with
    /// 1 if it changed something.
    ImUser {
        change: ImUserChange,
        reply: Reply<u64>,
    },
    /// Finish what is queued, persist, exit.
    Shutdown,
}

impl WriterMsg {
    /// Whether the batch holding this request must be fsynced.
    fn needs_sync(&self) -> bool {
        match self {
            WriterMsg::Append { request, .. } => request.durability == Durability::Sync,
            WriterMsg::ImAppend { request, .. } => request.durability == Durability::Sync,
            WriterMsg::GroupOp { request, .. } => request.durability == Durability::Sync,
            WriterMsg::GroupAppend { request, .. } => request.durability == Durability::Sync,
            WriterMsg::ImRewrite { request, .. } => request.durability == Durability::Sync,
            _ => false,
        }
    }

    /// What is lost, and no caller told, if this request is not written:
    /// standalone and presence events, done seqs (sent again after a
    /// restart). The rest have an answer to carry the failure.
    fn unanswered(&self) -> u64 {
        match self {
            WriterMsg::Outbox { events } => events.len() as u64,
            WriterMsg::Presence { .. } => 1,
            WriterMsg::OutboxDone { seqs } => seqs.len() as u64,
            WriterMsg::Append { .. }
            | WriterMsg::SetCursor { .. }
            | WriterMsg::Reset { .. }
            | WriterMsg::OutboxDead { .. }
            | WriterMsg::DeadReplay { .. }
            | WriterMsg::ImAppend { .. }
            | WriterMsg::ImRead { .. }
            | WriterMsg::ImAck { .. }
            | WriterMsg::GroupOp { .. }
            | WriterMsg::GroupAppend { .. }
            | WriterMsg::ImUser { .. }
            | WriterMsg::ImRewrite { .. }
            // A hint, not an event: an app loses nothing if it is not
            // written (`crate::last_seen`).
            | WriterMsg::LastSeen { .. }
            | WriterMsg::Shutdown => 0,
        }
    }
}

/// State shared by the handle and the threads.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) poisoned: AtomicBool,
    /// The database the readers use; empty while the writer reopens it.
    pub(crate) fjall: FjallSlot,
    /// The writer is reopening the database after a transient failure.
    pub(crate) recovering: AtomicBool,
    pub(crate) recoveries: WriterCounter,
    pub(crate) transient_failures: WriterCounter,
    /// The writer thread has ended (closed, or died): no more answers
    /// will come, so a caller still waiting for a tagged answer must give
    /// up on it.
    pub(crate) writer_stopped: AtomicBool,
    pub(crate) commits: WriterCounter,
    pub(crate) appends: WriterCounter,
    pub(crate) syncs: WriterCounter,
    pub(crate) outbox_len: WriterCounter,
    pub(crate) dead_len: WriterCounter,
    /// See [`crate::Health::outbox_dropped`].
    pub(crate) outbox_dropped: WriterCounter,
}

/// A counter only the writer thread raises: a relaxed load and store, no
/// locked read-modify-write; readers may see a slightly old value.
#[derive(Debug, Default)]
pub(crate) struct WriterCounter(AtomicU64);

impl WriterCounter {
    pub(crate) fn add(&self, n: u64) {
        let value = self.0.load(Ordering::Relaxed).wrapping_add(n);
        self.0.store(value, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

impl Shared {
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    pub(crate) fn is_recovering(&self) -> bool {
        self.recovering.load(Ordering::Acquire)
    }

    /// Why the database is not there: poisoned for good, or being reopened.
    pub(crate) fn closed_error(&self) -> StoreError {
        if self.is_poisoned() {
            StoreError::Poisoned
        } else {
            StoreError::Unavailable {
                reason: REOPENING_REASON,
            }
        }
    }
}

/// Poisons the store if the writer thread unwinds, so callers get
/// `Poisoned` instead of `Closed` forever without an explanation.
pub(crate) struct PoisonOnPanic(pub(crate) Arc<Shared>);

impl Drop for PoisonOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("store writer panicked: poisoning the store");
            self.0.poisoned.store(true, Ordering::Release);
        }
        // A panic drops the batch in hand and the queue with it: oneshot
        // callers see their sender dropped; tagged callers learn it here.
        self.0.writer_stopped.store(true, Ordering::Release);
    }
}

/// An answer waiting for its batch to become durable (or a refusal of a
/// request of the batch, answered with the rest).
enum PendingReply {
    Append {
        reply: Reply<Appended>,
        result: Result<Appended, StoreError>,
    },
    Value {
        reply: Reply<u64>,
        result: Result<u64, StoreError>,
    },
    ImAppend {
        reply: Reply<ImAppended>,
        result: Result<ImAppended, StoreError>,
    },
    ImRead {
        reply: Reply<ImReadState>,
        result: Result<ImReadState, StoreError>,
    },
    Group {
        reply: Reply<GroupAppended>,
        result: Result<GroupAppended, StoreError>,
    },
    ImAck {
        reply: Reply<ImDelivery>,
        result: Result<ImDelivery, StoreError>,
    },
    Rewrite {
        reply: Reply<ImRewritten>,
        result: Result<ImRewritten, StoreError>,
    },
}

impl PendingReply {
    /// The newly stored entry this reply acknowledges, if any.
    fn stored(&self) -> Option<&Appended> {
        let appended = match self {
            PendingReply::Append {
                result: Ok(appended),
                ..
            } => appended,
            PendingReply::ImAppend { result: Ok(im), .. } => &im.appended,
            PendingReply::Group {
                result: Ok(group), ..
            } => &group.appended,
            PendingReply::Rewrite {
                result: Ok(rewrite),
                ..
            } => &rewrite.appended,
            _ => return None,
        };
        (!appended.duplicate).then_some(appended)
    }

    /// The newly stored DM entry this reply acknowledges, if any.
    fn stored_dm(&self) -> Option<&ImAppended> {
        match self {
            PendingReply::ImAppend { result: Ok(im), .. } if !im.appended.duplicate => Some(im),
            _ => None,
        }
    }

    /// The newly stored group entry this reply acknowledges, if any: a
    /// group's message or change, or the recall or edit of one of its
    /// messages (routed by the members as a message is).
    fn stored_group(&self) -> Option<Cow<'_, GroupAppended>> {
        match self {
            PendingReply::Group {
                result: Ok(group), ..
            } if !group.appended.duplicate => Some(Cow::Borrowed(group)),
            PendingReply::Rewrite {
                result: Ok(rewrite),
                ..
            } => rewrite.as_group_entry().map(Cow::Owned),
            _ => None,
        }
    }

    /// Sends the answer; `failed` (the batch's error) replaces a success.
    fn send(self, sink: &mut dyn CommitSink, failed: Option<&StoreError>) {
        fn settle<T>(
            result: Result<T, StoreError>,
            failed: Option<&StoreError>,
        ) -> Result<T, StoreError> {
            match failed {
                Some(error) => result.and(Err(error.clone())),
                None => result,
            }
        }
        match self {
            PendingReply::Append { reply, result } => reply.send(sink, settle(result, failed)),
            PendingReply::Value { reply, result } => reply.send(sink, settle(result, failed)),
            PendingReply::ImAppend { reply, result } => reply.send(sink, settle(result, failed)),
            PendingReply::ImRead { reply, result } => reply.send(sink, settle(result, failed)),
            PendingReply::Group { reply, result } => reply.send(sink, settle(result, failed)),
            PendingReply::ImAck { reply, result } => reply.send(sink, settle(result, failed)),
            PendingReply::Rewrite { reply, result } => reply.send(sink, settle(result, failed)),
        }
    }
}

/// One group commit being assembled. Stream metas and names live in an
/// overlay until the commit succeeds.
struct BatchWork {
    batch: OwnedWriteBatch,
    metas: HashMap<u64, StreamMeta>,
    names: HashMap<String, u64>,
    removed: Vec<u64>,
    next_stream_id: u64,
    dedup_pending: HashMap<(u64, String), Appended>,
    cursors_pending: HashMap<Vec<u8>, CursorRecord>,
    replies: Vec<PendingReply>,
    sync: bool,
    outbox: OutboxBatch,
    im: ImBatch,
    last_seen: LastSeenBatch,
}

/// What the writer keeps when it reopens the database: everything but the
/// database and what it rebuilds from it.
pub(crate) struct WriterParts {
    pub(crate) config: StoreConfig,
    pub(crate) requests: Receiver<WriterMsg>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) sink: Box<dyn CommitSink>,
    pub(crate) epochs: EpochGen,
    /// Kept so ids stay unique and increasing across a reopen. Outbox
    /// event ids come from it too.
    pub(crate) message_ids: MessageIdGen,
    pub(crate) failure_log: FailureLog,
}

impl WriterParts {
    pub(crate) fn new(
        config: StoreConfig,
        requests: Receiver<WriterMsg>,
        shared: Arc<Shared>,
        sink: Box<dyn CommitSink>,
        epochs: EpochGen,
    ) -> WriterParts {
        WriterParts {
            message_ids: MessageIdGen::new(config.node_id, STORE_MESSAGE_ID_SHARD),
            config,
            requests,
            shared,
            sink,
            epochs,
            failure_log: FailureLog::default(),
        }
    }
}

/// Why [`Writer::run`] returned.
pub(crate) enum WriterExit {
    /// Shut down (or every handle is gone).
    Stopped,
    /// A write failed for a transient reason and fjall refuses writes
    /// until it is reopened.
    Reopen(Box<WriterParts>, &'static str),
}

pub(crate) struct Writer {
    fjall: Arc<Fjall>,
    config: StoreConfig,
    requests: Receiver<WriterMsg>,
    shared: Arc<Shared>,
    sink: Box<dyn CommitSink>,
    streams: HashMap<u64, StreamMeta>,
    names: HashMap<String, u64>,
    next_stream_id: u64,
    epochs: EpochGen,
    message_ids: MessageIdGen,
    failure_log: FailureLog,
    /// Set when a write failed for a transient reason: the writer stops
    /// after the batch in hand and the database is reopened.
    reopen: Option<&'static str>,
    /// Streams over their count limit, trimmed a bounded step at a time.
    trim_pending: VecDeque<u64>,
    trim_pending_set: HashSet<u64>,
    /// Streams with an age limit, visited round-robin by maintenance.
    age_streams: BTreeSet<u64>,
    age_next: u64,
    /// Reset streams whose old entries and dedup records are still on disk.
    dropped: VecDeque<u64>,
    maintenance_last: Instant,
    /// When the last fsync started (fsync pacing).
    sync_started: Instant,
    outbox: OutboxState,
    /// Users whose last presence event was a sequenced Offline, with its
    /// sequence and when it was written; kept `RECENT_OFFLINE_KEEP`.
    recent_offline: HashMap<String, (u64, Instant)>,
    im: ImState,
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn validate_append(request: &AppendRequest) -> Result<(), StoreError> {
    if request.stream.is_empty() || request.stream.len() > STREAM_NAME_BYTES_MAX {
        return Err(StoreError::InvalidRequest {
            reason: "stream name must be 1..=1024 bytes",
        });
    }
    if IM_NAME_PREFIXES
        .iter()
        .any(|prefix| request.stream.starts_with(prefix))
    {
        return Err(StoreError::InvalidRequest {
            reason: "dm: and grp: names are IM conversations: only im_append writes them",
        });
    }
    if let Some(client_msg_id) = &request.client_msg_id {
        if client_msg_id.is_empty() || client_msg_id.len() > CLIENT_MSG_ID_BYTES_MAX {
            return Err(StoreError::InvalidRequest {
                reason: "client_msg_id must be 1..=256 bytes",
            });
        }
    }
    if request.retention.count_max == 0 {
        return Err(StoreError::InvalidRequest {
            reason: "retention count_max must be at least 1",
        });
    }
    validate_events(&request.outbox)
}

pub(crate) fn validate_cursor(user: &str, device: &str, stream: &str) -> Result<(), StoreError> {
    if user.len() > CURSOR_ID_BYTES_MAX || device.len() > CURSOR_ID_BYTES_MAX {
        return Err(StoreError::InvalidRequest {
            reason: "cursor user and device ids must be at most 1024 bytes",
        });
    }
    if stream.is_empty() || stream.len() > STREAM_NAME_BYTES_MAX {
        return Err(StoreError::InvalidRequest {
            reason: "stream name must be 1..=1024 bytes",
        });
    }
    Ok(())
}

impl Writer {
    pub(crate) fn new(fjall: Arc<Fjall>, parts: WriterParts, recovered: Recovered) -> Writer {
        let WriterParts {
            config,
            requests,
            shared,
            sink,
            epochs,
            message_ids,
            failure_log,
        } = parts;
        let age_streams = recovered
            .streams
            .iter()
            .filter(|(_, meta)| meta.age_max_ms != u64::MAX)
            .map(|(&id, _)| id)
            .collect();
        let mut writer = Writer {
            message_ids,
            failure_log,
            reopen: None,
            fjall,
            config,
            requests,
            shared,
            sink,
            streams: recovered.streams,
            names: recovered.names,
            next_stream_id: recovered.next_stream_id,
            epochs,
            trim_pending: VecDeque::new(),
            trim_pending_set: HashSet::new(),
            age_streams,
            age_next: 0,
            dropped: recovered.dropped.into(),
            maintenance_last: Instant::now(),
            sync_started: Instant::now(),
            outbox: recovered.outbox,
            recent_offline: HashMap::new(),
            im: recovered.im,
        };
        writer.publish_outbox_lens();
        // Count limits may have been lowered by the last append before a
        // restart without the trim finishing.
        let over: Vec<u64> = writer.streams.keys().copied().collect();
        for id in over {
            writer.schedule_count_trim(id);
        }
        writer
    }

    /// Serves requests until shutdown, or until a transient failure made
    /// fjall refuse writes (then the caller reopens the database).
    pub(crate) fn run(mut self) -> WriterExit {
        let mut msgs = Vec::with_capacity(self.config.group_commit_entries_max);
        let mut shutdown = false;
        while !shutdown {
            if let Some(reason) = self.reopen {
                return WriterExit::Reopen(Box::new(self.into_parts()), reason);
            }
            let first = match self.requests.recv_timeout(self.config.maintenance_interval) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => {
                    self.maintain();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            shutdown = self.collect_batch(first, &mut msgs);
            if !msgs.is_empty() {
                self.commit_batch(std::mem::take(&mut msgs));
            }
            if shutdown {
                // Close drains: everything queued before Shutdown is answered.
                self.requests_drain_then_stop();
                break;
            }
            self.trim_step();
            if self.maintenance_last.elapsed() >= self.config.maintenance_interval {
                self.maintain();
            }
        }
        // After a failed write fjall refuses this too; everything it
        // acknowledged is in its journal already.
        if self.reopen.is_none() {
            if let Err(error) = self.fjall.db.persist(PersistMode::SyncAll) {
                tracing::error!(%error, "store: final fsync at shutdown failed");
            }
        }
        tracing::debug!("store writer stopped");
        WriterExit::Stopped
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn publish_outbox_lens(&self) {
        self.shared.outbox_len.set(self.outbox.outbox_len);
        self.shared.dead_len.set(self.outbox.dead_len);
    }

    /// Gives up the database and the caches built from it.
    fn into_parts(self) -> WriterParts {
        WriterParts {
            config: self.config,
            requests: self.requests,
            shared: self.shared,
            sink: self.sink,
            epochs: self.epochs,
            message_ids: self.message_ids,
            failure_log: self.failure_log,
        }
    }

    /// A write to fjall failed: fjall now refuses writes. A transient
    /// shortage makes the writer reopen the database; anything else
    /// poisons the store for good. Returns the error to answer with.
    fn write_failed(&mut self, op: &'static str, error: fjall::Error) -> StoreError {
        match crate::reopen::classify(&error, &self.config.path) {
            Some(reason) => {
                self.shared.transient_failures.add(1);
                self.failure_log.transient(op, reason, &error);
                self.reopen = Some(reason);
                StoreError::Unavailable { reason }
            }
            None => {
                poison(&self.shared, op, &error);
                StoreError::io(op, error)
            }
        }
    }

    fn commit_batch(&mut self, msgs: Vec<WriterMsg>) {
        if self.shared.is_poisoned() || self.reopen.is_some() {
            refuse_batch(
                &mut *self.sink,
                &self.shared.outbox_dropped,
                msgs,
                &self.shared.closed_error(),
            );
            return;
        }
        let unanswered: u64 = msgs.iter().map(WriterMsg::unanswered).sum();
        let now_ms = now_unix_ms();
        let mut work = BatchWork {
            batch: self.fjall.db.batch(),
            metas: HashMap::new(),
            names: HashMap::new(),
            removed: Vec::new(),
            next_stream_id: self.next_stream_id,
            dedup_pending: HashMap::new(),
            cursors_pending: HashMap::new(),
            replies: Vec::with_capacity(msgs.len()),
            sync: false,
            outbox: OutboxBatch::new(&self.outbox, self.config.presence_set),
            im: ImBatch::new(&mut self.im),
            last_seen: LastSeenBatch::default(),
        };
        for msg in msgs {
            match msg {
                WriterMsg::Append { request, reply } => {
                    if let Err(error) = validate_append(&request) {
                        work.replies.push(PendingReply::Append {
                            reply,
                            result: Err(error),
                        });
                        continue;
                    }
                    self.stage_append(&mut work, request, reply, now_ms);
                }
                WriterMsg::SetCursor {
                    user,
                    device,
                    stream,
                    offset,
                    reply,
                } => {
                    let result = self.stage_cursor(&mut work, &user, &device, &stream, offset);
                    work.replies.push(PendingReply::Value { reply, result });
                }
                WriterMsg::Reset { stream, reply } => self.stage_reset(&mut work, stream, reply),
                WriterMsg::Outbox { events } => {
                    work.outbox.stage_events(
                        &self.fjall,
                        &mut work.batch,
                        &mut self.message_ids,
                        &events,
                        None,
                        now_ms,
                    );
                }
                WriterMsg::Presence {
                    event,
                    presence_seq,
                } => work.outbox.stage_presence(
                    &self.fjall,
                    &mut work.batch,
                    &mut self.message_ids,
                    &event,
                    presence_seq,
                    &self.recent_offline,
                    now_ms,
                ),
                WriterMsg::LastSeen { user, ms } => work.last_seen.stage(user, ms),
                WriterMsg::OutboxDone { seqs } => {
                    work.outbox.stage_done(&self.fjall, &mut work.batch, &seqs);
                }
                WriterMsg::OutboxDead {
                    seq,
                    attempts,
                    last_error,
                    reply,
                } => {
                    let moved = work.outbox.stage_dead(
                        &self.fjall,
                        &mut work.batch,
                        seq,
                        attempts,
                        &last_error,
                        now_ms,
                    );
                    work.replies.push(PendingReply::Value {
                        reply,
                        result: Ok(moved),
                    });
                }
                WriterMsg::DeadReplay { seqs, reply } => {
                    let result =
                        work.outbox
                            .stage_replay(&self.fjall, &mut work.batch, seqs.as_deref());
                    work.replies.push(PendingReply::Value { reply, result });
                }
                WriterMsg::ImAppend { request, reply } => {
                    let result = self.stage_im_append(&mut work, request, now_ms);
                    work.replies.push(PendingReply::ImAppend { reply, result });
                }
                WriterMsg::ImRead {
                    user,
                    conv,
                    offset,
                    clear,
                    reply,
                } => {
                    let result = self.stage_im_read(&mut work, &user, &conv, offset, clear);
                    work.replies.push(PendingReply::ImRead { reply, result });
                }
                WriterMsg::ImAck {
                    user,
                    device,
                    conv,
                    offset,
                    reply,
                } => {
                    let result = self.stage_im_ack(&mut work, &user, &device, &conv, offset);
                    work.replies.push(PendingReply::ImAck { reply, result });
                }
                WriterMsg::GroupOp { request, reply } => {
                    let result = self.stage_group_op(&mut work, request, now_ms);
                    work.replies.push(PendingReply::Group { reply, result });
                }
                WriterMsg::GroupAppend { request, reply } => {
                    let result = self.stage_group_append(&mut work, request, now_ms);
                    work.replies.push(PendingReply::Group { reply, result });
                }
                WriterMsg::ImRewrite { request, reply } => {
                    let result = self.stage_im_rewrite(&mut work, request, now_ms);
                    work.replies.push(PendingReply::Rewrite { reply, result });
                }
                WriterMsg::ImUser { change, reply } => {
                    let result = self.stage_user_change(&mut work, change, now_ms);
                    work.replies.push(PendingReply::Value { reply, result });
                }
                WriterMsg::Shutdown => {}
            }
        }
        work.outbox
            .finish(&self.fjall, &mut work.batch, &self.outbox);
        work.im.finish(&self.fjall, &mut work.batch, &self.im);
        work.last_seen.finish(&self.fjall, &mut work.batch);
        for (&id, meta) in &work.metas {
            work.batch.insert(
                &self.fjall.meta,
                meta_id_key(META_PREFIX_STREAM, id),
                meta.encode(),
            );
        }
        if work.next_stream_id != self.next_stream_id {
            work.batch.insert(
                &self.fjall.meta,
                META_KEY_NEXT_STREAM_ID,
                work.next_stream_id.to_be_bytes(),
            );
        }
        // One journal write for the whole batch, and at most one fsync: the
        // point of group commit.
        // fdatasync: the journal's data and what is needed to read it back
        // (its length, its blocks); the inode's times are not worth a write.
        let mode = if work.sync {
            self.sync_started = Instant::now();
            PersistMode::SyncData
        } else {
            PersistMode::Buffer
        };
        let result = if work.batch.is_empty() {
            // Only duplicates or no-op cursor moves: a Sync retry still
            // promises its original is on disk.
            if work.sync {
                self.fjall.db.persist(PersistMode::SyncData)
            } else {
                Ok(())
            }
        } else {
            let batch = std::mem::replace(&mut work.batch, self.fjall.db.batch());
            batch.durability(Some(mode)).commit()
        };
        if let Err(error) = result {
            let error = self.write_failed("committing a batch", error);
            self.shared.outbox_dropped.add(unanswered);
            let sink = &mut *self.sink;
            for pending in work.replies {
                // Refusals keep their reason; everything else failed with the batch.
                pending.send(sink, Some(&error));
            }
            sink.batch_done();
            return;
        }
        self.apply(&mut work);
        work.outbox.apply(&mut self.outbox);
        work.im.apply(&mut self.im);
        self.publish_outbox_lens();
        let committed_at = Instant::now();
        for (user, online, seq) in work.outbox.presence_changes() {
            if online || seq == 0 {
                self.recent_offline.remove(user);
            } else {
                self.recent_offline
                    .insert(user.clone(), (seq, committed_at));
            }
        }
        self.shared.commits.add(1);
        if work.sync {
            self.shared.syncs.add(1);
        }
        let sink = &mut *self.sink;
        // New entries first, in queue order (= offset order per stream),
        // so a subscriber never sees an ack before the data went out.
        for pending in &work.replies {
            if let Some(group) = pending.stored_group() {
                self.shared.appends.add(1);
                sink.group_appended(&group);
            } else if let Some(dm) = pending.stored_dm() {
                self.shared.appends.add(1);
                sink.dm_appended(dm);
            } else if let Some(appended) = pending.stored() {
                self.shared.appends.add(1);
                sink.appended(appended);
            }
        }
        for pending in work.replies {
            pending.send(sink, None);
        }
        if work.outbox.written {
            sink.outbox_written();
        }
        sink.batch_done();
    }

    /// Moves a committed batch's overlay into the cache.
    fn apply(&mut self, work: &mut BatchWork) {
        for (name, id) in work.names.drain() {
            self.names.insert(name, id);
        }
        for id in work.removed.drain(..) {
            self.streams.remove(&id);
            self.age_streams.remove(&id);
            self.dropped.push_back(id);
        }
        for (id, meta) in work.metas.drain() {
            self.streams.insert(id, meta);
            if meta.age_max_ms == u64::MAX {
                self.age_streams.remove(&id);
            } else {
                self.age_streams.insert(id);
            }
            self.schedule_count_trim(id);
        }
        self.next_stream_id = work.next_stream_id;
    }

    fn stream_id(&self, work: &BatchWork, name: &str) -> Option<u64> {
        work.names
            .get(name)
            .or_else(|| self.names.get(name))
            .copied()
    }

    fn stream_meta(&self, work: &BatchWork, id: u64) -> Option<StreamMeta> {
        work.metas
            .get(&id)
            .or_else(|| self.streams.get(&id))
            .copied()
    }

    /// A new stream (fresh id, fresh epoch other than `previous_epoch`) in the overlay.
    fn create_stream(&mut self, work: &mut BatchWork, name: &str, previous_epoch: u64) -> u64 {
        let id = work.next_stream_id;
        work.next_stream_id = id.checked_add(1).unwrap_or(id);
        assert!(work.next_stream_id > id, "stream ids exhausted");
        work.names.insert(name.to_owned(), id);
        work.batch
            .insert(&self.fjall.meta, meta_name_key(name), id.to_be_bytes());
        work.metas
            .insert(id, StreamMeta::new(self.epochs.next(previous_epoch)));
        id
    }

    fn stage_append(
        &mut self,
        work: &mut BatchWork,
        request: AppendRequest,
        reply: Reply<Appended>,
        now_ms: u64,
    ) {
        let AppendRequest {
            stream,
            push,
            durability,
            client_msg_id,
            retention,
            outbox,
        } = request;
        let id = match self.stream_id(work, &stream) {
            Some(id) => id,
            None => self.create_stream(work, &stream, 0),
        };
        if work.im.is_conv(&self.im, id) {
            work.replies.push(PendingReply::Append {
                reply,
                result: Err(StoreError::InvalidRequest {
                    reason: "a conversation's stream takes only IM appends",
                }),
            });
            return;
        }
        let Some(meta) = self.stream_meta(work, id) else {
            // Every named id has a meta (recovery rebuilds missing ones).
            work.replies.push(PendingReply::Append {
                reply,
                result: Err(StoreError::Corrupt {
                    stream,
                    offset: 0,
                    reason: "stream has a name but no meta".to_owned(),
                }),
            });
            return;
        };
        work.sync |= durability == Durability::Sync;
        if let Some(client_msg_id) = &client_msg_id {
            match self.find_duplicate(work, &stream, id, &meta, client_msg_id, &push, now_ms) {
                Ok(None) => {}
                Ok(Some(appended)) => {
                    work.replies.push(PendingReply::Append {
                        reply,
                        result: Ok(appended),
                    });
                    return;
                }
                Err(error) => {
                    work.replies.push(PendingReply::Append {
                        reply,
                        result: Err(error),
                    });
                    return;
                }
            }
        }
        let appended = self.stage_entry(
            work,
            id,
            meta,
            push,
            client_msg_id,
            retention,
            &outbox,
            now_ms,
            false,
        );
        work.replies.push(PendingReply::Append {
            reply,
            result: Ok(appended),
        });
    }

    /// Stages a new entry of stream `id` (whose current meta is `meta`):
    /// stamps and stores it, the events riding it, its dedup record and the
    /// stream's new meta. With `keep_id` a push carrying an id (not 0)
    /// keeps it: a conversation's entry keeps the id its sender's shard
    /// gave it (unique on the node, as the store's own are), so the sending
    /// connection knows its own message's push before the answer comes
    /// (`echo: false`).
    #[expect(
        clippy::too_many_arguments,
        reason = "an append's parts, taken apart by its two callers"
    )]
    fn stage_entry(
        &mut self,
        work: &mut BatchWork,
        id: u64,
        mut meta: StreamMeta,
        mut push: EncodedPush,
        client_msg_id: Option<String>,
        retention: Retention,
        outbox: &[OutboxEvent],
        now_ms: u64,
        keep_id: bool,
    ) -> Appended {
        let offset = meta.next_offset;
        meta.next_offset = offset.checked_add(1).unwrap_or(offset);
        assert!(meta.next_offset > offset, "stream offsets exhausted");
        meta.count_max = retention.count_max;
        meta.age_max_ms = duration_ms(retention.age_max);
        let given = push.envelope().id.to_native();
        let message_id = if keep_id && given != 0 {
            ringcast_protocol::envelope::MessageId(given)
        } else {
            self.message_ids.next(now_ms)
        };
        push.stamp(message_id.as_u64(), offset, meta.epoch, now_ms);
        // Time never decreases along a stream, so a time is found by a
        // binary search over offsets (`reader::seek_time`). Publications
        // carry their shard's clock; a shard a little behind another, or a
        // clock stepped back, gets the previous entry's time instead.
        let stamped_ms = push.envelope().time_ms.to_native();
        if stamped_ms < meta.last_time_ms {
            push.stamp_time(meta.last_time_ms);
        }
        meta.last_time_ms = stamped_ms.max(meta.last_time_ms);
        let push = Arc::new(push);
        work.batch
            .insert(&self.fjall.entries, entry_key(id, offset), push.as_bytes());
        work.outbox.stage_events(
            &self.fjall,
            &mut work.batch,
            &mut self.message_ids,
            outbox,
            Some(push.as_bytes()),
            now_ms,
        );
        let appended = Appended {
            message_id,
            offset,
            epoch: meta.epoch,
            push,
            duplicate: false,
        };
        if let Some(client_msg_id) = client_msg_id {
            let record = DedupRecord {
                message_id: message_id.as_u64(),
                offset,
                epoch: meta.epoch,
                time_ms: now_ms,
            };
            work.batch.insert(
                &self.fjall.dedup,
                dedup_key(id, &client_msg_id),
                record.encode(),
            );
            work.batch.insert(
                &self.fjall.dedup_by_time,
                dedup_time_key(now_ms, id, &client_msg_id),
                [],
            );
            work.dedup_pending.insert(
                (id, client_msg_id),
                Appended {
                    duplicate: true,
                    ..appended.clone()
                },
            );
        }
        work.metas.insert(id, meta);
        appended
    }
}
