//! [`Store`], the handle: opens fjall, starts the writer and reader threads,
//! and turns calls into queued requests. Nothing here waits on fjall; every
//! call is a `try_send` on a bounded queue.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};
use futures_channel::oneshot;

use crate::api::{
    AppendRequest, Appended, CommitSink, ConvPage, DeadRecord, Health, ImAppend, ImAppended,
    ImDelivery, ImReadState, ImSync, OutboxEvent, OutboxKind, OutboxRecord, ReadRequest,
    ReadResult, ReceiptPage, StoreConfig, StoredCursor, SyncToken, TimeSeek, Unreadable,
    CURSOR_ID_BYTES_MAX, STREAM_NAME_BYTES_MAX,
};
use crate::clock::EpochGen;
use crate::error::StoreError;
use crate::outbox::{close_presence, cut_error, validate_events};
use crate::reader::{self, ReaderMsg};
use crate::recovery::open_and_recover;
use crate::writer::{validate_cursor, Reply, Shared, Writer, WriterMsg, WriterParts};

mod group;
mod last_seen;

/// The durable-streams store. `Sync`: share it by reference or `Arc`.
///
/// Every method except [`Store::open`] and [`Store::close`] returns at once:
/// either an error (the queue is full, the store is poisoned or closed) or a
/// oneshot receiver that resolves when the request is done. Dropping the
/// receiver does not cancel the request.
pub struct Store {
    writer_requests: Sender<WriterMsg>,
    reader_requests: Sender<ReaderMsg>,
    shared: Arc<Shared>,
    capacity: usize,
    /// The sink takes answers to tagged requests.
    takes_answers: bool,
    // Behind mutexes only so `close` works through a shared reference (the
    // engine shares the store across threads); taken once, at close.
    writer_thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    reader_threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

fn try_send<T>(sender: &Sender<T>, msg: T, capacity: usize) -> Result<(), StoreError> {
    sender.try_send(msg).map_err(|error| match error {
        TrySendError::Full(_) => StoreError::Overloaded { capacity },
        TrySendError::Disconnected(_) => StoreError::Closed,
    })
}

fn validate_im_names(user: &str, conv: &str) -> Result<(), StoreError> {
    if user.is_empty() || user.len() > CURSOR_ID_BYTES_MAX {
        return Err(StoreError::InvalidRequest {
            reason: "user ids must be 1..=1024 bytes",
        });
    }
    if conv.is_empty() || conv.len() > STREAM_NAME_BYTES_MAX {
        return Err(StoreError::InvalidRequest {
            reason: "conversation name must be 1..=1024 bytes",
        });
    }
    Ok(())
}

/// A page of 0 could never make progress: `im_sync` would answer `more`
/// with the same token forever, and `conv_list` an empty page that reads
/// as the end of the list.
fn validate_page_limit(limit: usize) -> Result<(), StoreError> {
    if limit == 0 {
        return Err(StoreError::InvalidRequest {
            reason: "a page limit must be at least 1",
        });
    }
    Ok(())
}

impl Store {
    /// Opens (or creates) the store with a sink that ignores what is stored.
    ///
    /// Blocks: opens fjall, replays its journal and checks every stream's
    /// meta (see `recovery.rs`). Call it at startup, not on a shard.
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        Store::open_with_sink(config, |_: &Appended| {})
    }

    /// Opens the store; after each group commit the writer hands `sink`
    /// every newly stored entry, then the answers to tagged requests (see
    /// [`CommitSink`]).
    pub fn open_with_sink(
        config: StoreConfig,
        sink: impl CommitSink + 'static,
    ) -> Result<Store, StoreError> {
        if config.group_commit_entries_max == 0
            || config.queue_capacity == 0
            || config.reader_threads == 0
            || config.trim_keys_per_step_max == 0
        {
            return Err(StoreError::InvalidRequest {
                reason: "group_commit_entries_max, queue_capacity, reader_threads and \
                         trim_keys_per_step_max must be at least 1",
            });
        }
        if config.node_id >= ringcast_protocol::envelope::MESSAGE_ID_NODE_COUNT {
            return Err(StoreError::InvalidRequest {
                reason: "node_id must be < 64",
            });
        }
        let mut epochs = EpochGen::new();
        let (fjall, mut recovered) = open_and_recover(&config, &mut epochs)?;
        let fjall = Arc::new(fjall);
        tracing::info!(
            path = %config.path.display(),
            streams = recovered.streams.len(),
            "store opened"
        );
        let shared = Arc::new(Shared::default());
        shared.fjall.replace(Some(fjall.clone()));
        let capacity = config.queue_capacity;
        let (writer_requests, writer_rx) = crossbeam_channel::bounded(capacity);
        let (reader_requests, reader_rx) = crossbeam_channel::bounded(capacity);
        let mut reader_threads = Vec::with_capacity(config.reader_threads);
        for reader_idx in 0..config.reader_threads {
            let shared = shared.clone();
            let requests = reader_rx.clone();
            let read_entries_max = config.read_entries_max;
            let thread = std::thread::Builder::new()
                .name(format!("ringcast-read-{reader_idx}"))
                .spawn(move || reader::run(&shared, &requests, read_entries_max))
                .map_err(|error| StoreError::io("spawning a reader thread", error.into()))?;
            reader_threads.push(thread);
        }
        let takes_answers = sink.takes_answers();
        let mut parts = WriterParts::new(config, writer_rx, shared.clone(), Box::new(sink), epochs);
        // Once per process, not on a reopen: the users the last process
        // left online are offline now.
        close_presence(
            &fjall,
            &mut recovered.outbox,
            &mut parts.message_ids,
            parts.config.presence_set,
        )?;
        let writer = Writer::new(fjall, parts, recovered);
        let writer_thread = std::thread::Builder::new()
            .name("ringcast-writer".to_owned())
            .spawn(move || crate::reopen::run_writer_thread(writer))
            .map_err(|error| StoreError::io("spawning the writer thread", error.into()))?;
        Ok(Store {
            writer_requests,
            reader_requests,
            shared,
            capacity,
            takes_answers,
            writer_thread: std::sync::Mutex::new(Some(writer_thread)),
            reader_threads: std::sync::Mutex::new(reader_threads),
        })
    }

    fn check_tagged(&self) -> Result<(), StoreError> {
        if !self.takes_answers {
            return Err(StoreError::InvalidRequest {
                reason: "tagged requests need a commit sink that takes answers",
            });
        }
        Ok(())
    }

    /// Refuses at once what the writer would refuse: writes to a poisoned
    /// store, and writes while it reopens its database.
    fn check_writable(&self) -> Result<(), StoreError> {
        if self.shared.is_poisoned() || self.shared.is_recovering() {
            return Err(self.shared.closed_error());
        }
        Ok(())
    }

    /// Queues a write that gets no answer.
    fn tell_writer(&self, msg: WriterMsg) -> Result<(), StoreError> {
        self.check_writable()?;
        try_send(&self.writer_requests, msg, self.capacity)
    }

    /// Queues a write that is answered; the receiver resolves to its answer.
    fn ask_writer<T>(
        &self,
        msg: impl FnOnce(Reply<T>) -> WriterMsg,
    ) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError> {
        self.check_writable()?;
        let (reply, receiver) = oneshot::channel();
        try_send(
            &self.writer_requests,
            msg(Reply::Future(reply)),
            self.capacity,
        )?;
        Ok(receiver)
    }

    /// Queues a read; the receiver resolves to its answer.
    fn ask_reader<T>(
        &self,
        msg: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> ReaderMsg,
    ) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError> {
        let (reply, receiver) = oneshot::channel();
        try_send(&self.reader_requests, msg(reply), self.capacity)?;
        Ok(receiver)
    }

    /// Appends one publication. See [`AppendRequest`] for what the store
    /// fills in and [`crate::Durability`] for when the receiver resolves.
    pub fn append(
        &self,
        request: AppendRequest,
    ) -> Result<oneshot::Receiver<Result<Appended, StoreError>>, StoreError> {
        self.check_writable()?;
        let (reply, receiver) = oneshot::channel();
        try_send(
            &self.writer_requests,
            WriterMsg::Append {
                request,
                reply: Reply::Future(reply),
            },
            self.capacity,
        )?;
        Ok(receiver)
    }

    /// Like [`Store::append`], but the answer goes to the store's
    /// [`CommitSink`] with `tag`, batched with the rest of its group commit
    /// (no future, no wake-up per request).
    pub fn submit_append(&self, request: AppendRequest, tag: u64) -> Result<(), StoreError> {
        self.check_tagged()?;
        self.check_writable()?;
        try_send(
            &self.writer_requests,
            WriterMsg::Append {
                request,
                reply: Reply::Tag(tag),
            },
            self.capacity,
        )
    }

    /// Appends an IM message to a direct conversation and, in the same
    /// batch, creates the conversation if new, updates its record, makes
    /// the message read for its sender (one's own message is never unread)
    /// and marks the conversation changed for both users (see
    /// `docs/im.md`). Resolves like [`Store::append`] with the entry's
    /// `count` and the write's gseq.
    pub fn im_append(
        &self,
        request: ImAppend,
    ) -> Result<oneshot::Receiver<Result<ImAppended, StoreError>>, StoreError> {
        self.ask_writer(|reply| WriterMsg::ImAppend { request, reply })
    }

    /// Like [`Store::im_append`], but the answer goes to the store's
    /// [`CommitSink`] with `tag` ([`crate::Answer::ImAppended`]).
    pub fn submit_im_append(&self, request: ImAppend, tag: u64) -> Result<(), StoreError> {
        self.check_tagged()?;
        self.tell_writer(WriterMsg::ImAppend {
            request,
            reply: Reply::Tag(tag),
        })
    }

    /// Moves `user`'s read position in `conv` to `offset`: monotonic (a
    /// lower offset changes nothing), clamped to the last offset. Resolves
    /// to the position now stored and the conversation's unread count, with
    /// Buffered durability (or fsynced with a Sync append of the same
    /// batch): a power cut can bring a badge back, never skip a message.
    pub fn im_read(
        &self,
        user: &str,
        conv: &str,
        offset: u64,
    ) -> Result<oneshot::Receiver<Result<ImReadState, StoreError>>, StoreError> {
        validate_im_names(user, conv)?;
        self.ask_writer(|reply| WriterMsg::ImRead {
            user: user.to_owned(),
            conv: conv.to_owned(),
            offset,
            clear: false,
            reply,
        })
    }

    /// `user` clears `conv` up to `upto` (`docs/im.md`, "Recall, edit,
    /// delete"): its history starts after it from now on (other users'
    /// does not change), and its read position moves to it as
    /// [`Store::im_read`] would. Monotonic, clamped to the last offset.
    pub fn im_clear(
        &self,
        user: &str,
        conv: &str,
        upto: u64,
    ) -> Result<oneshot::Receiver<Result<ImReadState, StoreError>>, StoreError> {
        validate_im_names(user, conv)?;
        self.ask_writer(|reply| WriterMsg::ImRead {
            user: user.to_owned(),
            conv: conv.to_owned(),
            offset: upto,
            clear: true,
            reply,
        })
    }

    /// Like [`Store::im_read`], but the answer goes to the store's
    /// [`CommitSink`] with `tag` ([`crate::Answer::ImRead`]).
    pub fn submit_im_read(
        &self,
        user: &str,
        conv: &str,
        offset: u64,
        tag: u64,
    ) -> Result<(), StoreError> {
        self.check_tagged()?;
        validate_im_names(user, conv)?;
        self.tell_writer(WriterMsg::ImRead {
            user: user.to_owned(),
            conv: conv.to_owned(),
            offset,
            clear: false,
            reply: Reply::Tag(tag),
        })
    }

    /// Records that `(user, device)` has conversation `conv` up to
    /// `offset` (its cursor, as [`Store::set_cursor`]) and raises the
    /// user's delivery position to it (monotonic, clamped to the last
    /// offset the user may see). Refused with `InvalidRequest` if the user
    /// has no view of `conv`.
    pub fn im_ack(
        &self,
        user: &str,
        device: &str,
        conv: &str,
        offset: u64,
    ) -> Result<oneshot::Receiver<Result<ImDelivery, StoreError>>, StoreError> {
        validate_im_names(user, conv)?;
        validate_cursor(user, device, conv)?;
        self.ask_writer(|reply| WriterMsg::ImAck {
            user: user.to_owned(),
            device: device.to_owned(),
            conv: conv.to_owned(),
            offset,
            reply,
        })
    }

    /// The read and delivery positions of `conv`'s users (a DM's two, a
    /// group's members) in user id order after `after`, at most `limit`
    /// (capped by `read_entries_max`); `None` if `user` is not one of them.
    pub fn im_receipts(
        &self,
        user: &str,
        conv: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<oneshot::Receiver<Result<Option<ReceiptPage>, StoreError>>, StoreError> {
        validate_im_names(user, conv)?;
        validate_page_limit(limit)?;
        self.ask_reader(|reply| ReaderMsg::ImReceipts {
            user: user.to_owned(),
            conv: conv.to_owned(),
            after: after.map(str::to_owned),
            limit,
            reply,
        })
    }

    /// A page of `user`'s conversations, newest activity first, after
    /// `cursor` (the previous page's [`ConvPage::next`]); at most `limit`
    /// (capped by `read_entries_max`), with unread per conversation and in
    /// total, from one snapshot.
    pub fn conv_list(
        &self,
        user: &str,
        cursor: Option<(u64, u64)>,
        limit: usize,
    ) -> Result<oneshot::Receiver<Result<ConvPage, StoreError>>, StoreError> {
        validate_im_names(user, "-")?;
        validate_page_limit(limit)?;
        self.ask_reader(|reply| ReaderMsg::ConvList {
            user: user.to_owned(),
            cursor,
            limit,
            reply,
        })
    }

    /// The conversations whose view changed for `user` since `since`, and
    /// the token to sync from next; at most `limit` per call, oldest change
    /// first ([`ImSync::more`]: call again from the token). Without a token,
    /// or with one this store cannot continue from (then with
    /// [`ImSync::reset`]): the newest `limit` conversations of the list, the
    /// rest paged with [`Store::conv_list`].
    pub fn im_sync(
        &self,
        user: &str,
        since: Option<SyncToken>,
        limit: usize,
    ) -> Result<oneshot::Receiver<Result<ImSync, StoreError>>, StoreError> {
        validate_im_names(user, "-")?;
        validate_page_limit(limit)?;
        self.ask_reader(|reply| ReaderMsg::ImSync {
            user: user.to_owned(),
            since,
            limit,
            reply,
        })
    }

    /// Reads a stream's entries after `since` (see [`ReadRequest`]).
    pub fn read(
        &self,
        request: ReadRequest,
    ) -> Result<oneshot::Receiver<Result<ReadResult, StoreError>>, StoreError> {
        let (reply, receiver) = oneshot::channel();
        try_send(
            &self.reader_requests,
            ReaderMsg::Read { request, reply },
            self.capacity,
        )?;
        Ok(receiver)
    }

    /// Where `time_ms` falls in `stream`: the first offset whose time is at
    /// least `time_ms` and the last whose time is at most it (see
    /// [`TimeSeek`]). Two binary searches over the stored offsets, each
    /// O(log n) point reads of one snapshot.
    pub fn seek_time(
        &self,
        stream: &str,
        time_ms: u64,
    ) -> Result<oneshot::Receiver<Result<TimeSeek, StoreError>>, StoreError> {
        let (reply, receiver) = oneshot::channel();
        try_send(
            &self.reader_requests,
            ReaderMsg::SeekTime {
                stream: stream.to_owned(),
                time_ms,
                reply,
            },
            self.capacity,
        )?;
        Ok(receiver)
    }

    /// Records that `(user, device)` has everything in `stream` up to
    /// `offset`. Monotonic: a lower offset than the stored one is ignored;
    /// an offset past the stream's end is clamped to it. Resolves to the
    /// cursor now stored, once it reached the OS (Buffered durability, or
    /// fsynced if an append in the same batch asked for Sync): a cursor lost
    /// in a power cut only causes redelivery, which clients dedupe by id.
    pub fn set_cursor(
        &self,
        user: &str,
        device: &str,
        stream: &str,
        offset: u64,
    ) -> Result<oneshot::Receiver<Result<u64, StoreError>>, StoreError> {
        let (reply, receiver) = oneshot::channel();
        self.queue_cursor(user, device, stream, offset, Reply::Future(reply))?;
        Ok(receiver)
    }

    /// Like [`Store::set_cursor`], but the answer goes to the store's
    /// [`CommitSink`] with `tag` (see [`Store::submit_append`]).
    pub fn submit_cursor(
        &self,
        user: &str,
        device: &str,
        stream: &str,
        offset: u64,
        tag: u64,
    ) -> Result<(), StoreError> {
        self.check_tagged()?;
        self.queue_cursor(user, device, stream, offset, Reply::Tag(tag))
    }

    fn queue_cursor(
        &self,
        user: &str,
        device: &str,
        stream: &str,
        offset: u64,
        reply: Reply<u64>,
    ) -> Result<(), StoreError> {
        validate_cursor(user, device, stream)?;
        self.check_writable()?;
        try_send(
            &self.writer_requests,
            WriterMsg::SetCursor {
                user: user.to_owned(),
                device: device.to_owned(),
                stream: stream.to_owned(),
                offset,
                reply,
            },
            self.capacity,
        )
    }

    /// The cursor of `(user, device)` in `stream`, or `None` if there is
    /// none in the stream's current epoch.
    pub fn get_cursor(
        &self,
        user: &str,
        device: &str,
        stream: &str,
    ) -> Result<oneshot::Receiver<Result<Option<StoredCursor>, StoreError>>, StoreError> {
        validate_cursor(user, device, stream)?;
        let (reply, receiver) = oneshot::channel();
        try_send(
            &self.reader_requests,
            ReaderMsg::GetCursor {
                user: user.to_owned(),
                device: device.to_owned(),
                stream: stream.to_owned(),
                reply,
            },
            self.capacity,
        )?;
        Ok(receiver)
    }

    /// The highest cursor of any device of `user` in `stream`, in the
    /// stream's current epoch, or `None` if no device has one there: "has
    /// some device of this user acknowledged offset N?".
    pub fn max_cursor(
        &self,
        user: &str,
        stream: &str,
    ) -> Result<oneshot::Receiver<Result<Option<StoredCursor>, StoreError>>, StoreError> {
        validate_cursor(user, "", stream)?;
        let (reply, receiver) = oneshot::channel();
        try_send(
            &self.reader_requests,
            ReaderMsg::MaxCursor {
                user: user.to_owned(),
                stream: stream.to_owned(),
                reply,
            },
            self.capacity,
        )?;
        Ok(receiver)
    }

    /// Drops every entry of `stream` and gives it a new epoch; offsets
    /// restart at 1. Resolves to the new epoch. Old entries are deleted in
    /// the background.
    pub fn reset_stream(
        &self,
        stream: &str,
    ) -> Result<oneshot::Receiver<Result<u64, StoreError>>, StoreError> {
        self.check_writable()?;
        let (reply, receiver) = oneshot::channel();
        try_send(
            &self.writer_requests,
            WriterMsg::Reset {
                stream: stream.to_owned(),
                reply: Reply::Future(reply),
            },
            self.capacity,
        )?;
        Ok(receiver)
    }

    /// Writes standalone outbox events (Online, Offline) in the writer's
    /// next batch, with that batch's durability; no answer. An Online event
    /// also puts its key in the store's presence set and an Offline event
    /// takes it out, in the same batch: at the next open every key still in
    /// it gets an Offline event (body `{"reason":"restart"}`), so a crash
    /// never leaves a user online for good. Events reach the writer in call
    /// order from one thread; callers on several threads that need an
    /// order between them must make it themselves.
    pub fn submit_outbox(&self, events: Vec<OutboxEvent>) -> Result<(), StoreError> {
        validate_events(&events)?;
        if events.is_empty() {
            return Ok(());
        }
        self.tell_writer(WriterMsg::Outbox { events })
    }

    /// Like [`Store::submit_outbox`] for one Online or Offline event made
    /// by a presence transition with sequence `presence_seq`: increasing
    /// per user in the order the transitions happened, whatever order the
    /// events reach the writer in (producers on several threads cannot keep
    /// that order without a lock). The writer drops an event whose sequence
    /// is not above the user's last (it was overtaken by a later one), so
    /// the outbox and the presence set end on the user's latest state.
    /// The last sequence of an online user is kept in the presence set;
    /// of an offline one, for `RECENT_OFFLINE_KEEP` (60 s) in memory.
    pub fn submit_presence(&self, event: OutboxEvent, presence_seq: u64) -> Result<(), StoreError> {
        validate_events(std::slice::from_ref(&event))?;
        if !matches!(event.kind, OutboxKind::Online | OutboxKind::Offline) {
            return Err(StoreError::InvalidRequest {
                reason: "a presence event is Online or Offline",
            });
        }
        self.tell_writer(WriterMsg::Presence {
            event,
            presence_seq,
        })
    }

    /// Outbox records with `seq > after_seq`, ascending, at most `limit`
    /// (capped by `read_entries_max`), from one snapshot: only committed
    /// records, never one the writer is still writing. A record that cannot
    /// be decoded comes as [`Unreadable`] in its place.
    #[expect(
        clippy::type_complexity,
        reason = "a reply per record inside the page's reply"
    )]
    pub fn outbox_read(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<
        oneshot::Receiver<Result<Vec<Result<OutboxRecord, Unreadable>>, StoreError>>,
        StoreError,
    > {
        self.ask_reader(|reply| ReaderMsg::OutboxRead {
            after_seq,
            limit,
            reply,
        })
    }

    /// Deletes delivered outbox records (in the writer's next batch;
    /// buffered). Seqs that are not in the outbox are ignored.
    pub fn outbox_done(&self, seqs: Vec<u64>) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.tell_writer(WriterMsg::OutboxDone { seqs })
    }

    /// Moves outbox record `seq` to the dead-letter list (same seq and
    /// event id) with the attempts made, the last error (cut to
    /// [`crate::DEAD_ERROR_BYTES_MAX`] bytes) and the time. Resolves to
    /// how many moved (0: `seq` is not in the outbox) once the batch is
    /// written, or to the error that kept it from being written.
    pub fn outbox_dead(
        &self,
        seq: u64,
        attempts: u32,
        last_error: String,
    ) -> Result<oneshot::Receiver<Result<u64, StoreError>>, StoreError> {
        self.ask_writer(|reply| WriterMsg::OutboxDead {
            seq,
            attempts,
            last_error: cut_error(last_error),
            reply,
        })
    }

    /// Dead-letter records with `seq > after_seq`, ascending, at most
    /// `limit` (capped by `read_entries_max`); an undecodable one comes as
    /// [`Unreadable`] in its place.
    #[expect(
        clippy::type_complexity,
        reason = "a reply per record inside the page's reply"
    )]
    pub fn dead_read(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<
        oneshot::Receiver<Result<Vec<Result<DeadRecord, Unreadable>>, StoreError>>,
        StoreError,
    > {
        self.ask_reader(|reply| ReaderMsg::DeadRead {
            after_seq,
            limit,
            reply,
        })
    }

    /// Moves dead-letter records back into the outbox under new seqs (so a
    /// sender already past their old seq sees them), event ids unchanged:
    /// the given seqs, or with `None` the oldest ones; at most
    /// [`crate::DEAD_REPLAY_MAX`] per call either way. Resolves to how
    /// many moved once the batch reached the OS.
    pub fn dead_replay(
        &self,
        seqs: Option<Vec<u64>>,
    ) -> Result<oneshot::Receiver<Result<u64, StoreError>>, StoreError> {
        self.ask_writer(|reply| WriterMsg::DeadReplay { seqs, reply })
    }

    /// Whether the store still accepts writes, and its queue depths.
    pub fn health(&self) -> Health {
        Health {
            poisoned: self.shared.is_poisoned(),
            recovering: self.shared.is_recovering(),
            recoveries: self.shared.recoveries.get(),
            transient_failures: self.shared.transient_failures.get(),
            writer_queue_len: self.writer_requests.len(),
            reader_queue_len: self.reader_requests.len(),
            commits: self.shared.commits.get(),
            appends: self.shared.appends.get(),
            syncs: self.shared.syncs.get(),
            writer_stopped: self.shared.writer_stopped.load(Ordering::Acquire),
            outbox_len: self.shared.outbox_len.get(),
            dead_len: self.shared.dead_len.get(),
            outbox_dropped: self.shared.outbox_dropped.get(),
        }
    }

    /// Answers everything queued, fsyncs, and joins the threads. Blocks.
    pub fn close(&self) -> Result<(), StoreError> {
        self.shutdown()
    }

    fn shutdown(&self) -> Result<(), StoreError> {
        // Blocking sends: close is allowed to wait for the queues to drain.
        let writer = self
            .writer_thread
            .lock()
            .map(|mut w| w.take())
            .unwrap_or_default();
        if let Some(writer) = writer {
            drop(self.writer_requests.send(WriterMsg::Shutdown));
            if writer.join().is_err() {
                return Err(StoreError::Poisoned);
            }
        }
        let readers: Vec<JoinHandle<()>> = self
            .reader_threads
            .lock()
            .map(|mut r| r.drain(..).collect())
            .unwrap_or_default();
        for _ in &readers {
            drop(self.reader_requests.send(ReaderMsg::Shutdown));
        }
        for reader in readers {
            if reader.join().is_err() {
                tracing::error!("a store reader thread panicked");
            }
        }
        // The threads are gone; the last handle on the database goes with
        // this one, which closes it (and unlocks its directory).
        drop(self.shared.fjall.replace(None));
        if self.shared.is_poisoned() {
            return Err(StoreError::Poisoned);
        }
        Ok(())
    }
}

impl Drop for Store {
    /// Dropping without [`Store::close`] still answers what is queued and
    /// fsyncs, so a forgotten close loses nothing that was acknowledged.
    fn drop(&mut self) {
        drop(self.shutdown());
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("health", &self.health())
            .finish()
    }
}
