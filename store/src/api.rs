//! The request, reply and configuration types of the public API. Plain data:
//! no fjall types leak out, so the engine depends on this crate's contract,
//! not on the storage engine behind it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::StoreError;

use ringcast_protocol::envelope::{EncodedPush, MessageId};

/// Longest stream name, in bytes. Keeps meta keys small and bounds what a
/// bad caller can make the store hold per request.
pub const STREAM_NAME_BYTES_MAX: usize = 1024;
/// Name prefixes of IM conversations (`docs/im.md`, "Names"): the store
/// refuses plain appends to them, so a stream of such a name is only ever
/// made by its first IM message and cannot block the conversation.
pub const IM_NAME_PREFIXES: [&str; 2] = ["dm:", "grp:"];
/// Default of [`StoreConfig::conversations_per_user_max`].
pub const CONVERSATIONS_PER_USER_MAX_DEFAULT: usize = 10_000;
/// Longest `client_msg_id`, in bytes.
pub const CLIENT_MSG_ID_BYTES_MAX: usize = 256;
/// Longest user or device id in a cursor, in bytes.
pub const CURSOR_ID_BYTES_MAX: usize = 1024;

/// Longest [`OutboxEvent::body`], in bytes: the engine writes small JSON
/// objects; the bound keeps a bad caller from filling the outbox.
pub const OUTBOX_BODY_BYTES_MAX: usize = 64 * 1024;
/// Longest `last_error` kept with a dead-lettered event, in bytes (longer
/// ones are cut at a character boundary).
pub const DEAD_ERROR_BYTES_MAX: usize = 1024;
/// Most dead-lettered events one [`crate::Store::dead_replay`] moves back
/// (each is rewritten in one batch with the others): call it again while it
/// answers this many.
pub const DEAD_REPLAY_MAX: usize = 1024;

/// Default of [`StoreConfig::sync_interval_min`], in microseconds.
pub const SYNC_INTERVAL_MIN_DEFAULT_US: u64 = 1000;

/// Default of [`StoreConfig::memtable_bytes_max`]: fjall's own default.
pub const MEMTABLE_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;

/// Store configuration. Build with [`StoreConfig::new`] and override fields.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory of the fjall database (created if missing).
    pub path: PathBuf,
    /// Most requests the writer folds into one fjall batch (and one fsync).
    pub group_commit_entries_max: usize,
    /// How long the writer sleeps after the first request of a batch
    /// before taking what arrived meanwhile. Adds this much latency to
    /// every batch, even a lone append. The default is zero: a batch is
    /// everything queued when the writer gets to it, what arrives during
    /// one fsync makes the next batch, and [`StoreConfig::sync_interval_min`]
    /// paces fsyncs under load without delaying a lone append.
    pub group_commit_delay_max: Duration,
    /// How long a `(stream, client_msg_id)` pair is remembered for
    /// idempotent retries.
    pub dedup_window: Duration,
    /// Capacity of each bounded request queue (writer and readers). A full
    /// queue answers [`crate::StoreError::Overloaded`].
    pub queue_capacity: usize,
    /// Node id (< 64) for message ids; the store uses shard field 62.
    pub node_id: u8,
    /// Reader threads serving [`crate::Store::read`] and
    /// [`crate::Store::get_cursor`].
    pub reader_threads: usize,
    /// Most entries one read returns, whatever `limit` asks for.
    pub read_entries_max: usize,
    /// Most keys the writer deletes per trimming step (retention, dedup
    /// expiry, garbage of reset streams), so trimming never stalls appends
    /// for long.
    pub trim_keys_per_step_max: usize,
    /// How often the writer runs age retention and dedup expiry.
    pub maintenance_interval: Duration,
    /// Most streams age retention looks at per maintenance step (each look
    /// opens a range over the stream's entries). Round-robin, so a stream
    /// is looked at every `streams / this × maintenance_interval`; without
    /// the bound every step looked at every stream with an age limit, which
    /// with 10,000 user inboxes was 100,000 range scans a second on the
    /// writer thread.
    pub age_streams_per_step_max: usize,
    /// Least time between the starts of two fsyncs. A batch that must be
    /// synced sooner keeps collecting requests until then, so under load
    /// one fsync covers more appends (and the writer pays for fewer of
    /// them); after a quiet spell nothing waits. Adds at most this much to
    /// an acknowledgement, and only while fsyncs follow one another.
    pub sync_interval_min: Duration,
    /// Size at which a keyspace's memtable is sealed and written to a
    /// table file (a new file on disk). Applies to keyspaces created from
    /// now on; fjall keeps what an existing one was created with. Small
    /// values make many small files; the tests use them to make the store
    /// need new files quickly.
    pub memtable_bytes_max: u64,
    /// Keep the presence set (`online` keyspace): the users online now,
    /// for whom an Offline event is written at the next open after a crash.
    /// Off when the app wants no Offline events: Online events then leave
    /// the set alone (it would only grow), and open empties any set an
    /// earlier run left, writing no events.
    pub presence_set: bool,
    /// Most conversations one user may have (`docs/im.md`,
    /// `conversations_per_user_max`): an IM append that would start one
    /// more for either user of the pair is refused with
    /// [`crate::StoreError::ConversationLimit`]. Bounds what a user's list,
    /// total unread and sync read (each reads all of the user's
    /// conversations), and what strangers can make a victim's list hold.
    pub conversations_per_user_max: usize,
    /// Members a group may have unless the system set its own limit
    /// (`im.group_members_max`): a change past it is refused with
    /// [`crate::StoreError::MemberLimit`].
    pub group_members_max: u32,
    /// Groups one user may be a member of at once: a join past it is
    /// refused with [`crate::StoreError::ConversationLimit`]. Bounds the
    /// part of the conversation list merged from the user's groups at
    /// each read (`docs/im.md`, "Groups in the list").
    pub groups_per_user_max: usize,
    /// Retention of every DM's stream (`im.dm_retention_*`), applied with
    /// each entry as a plain append's is; unread counts never exceed what
    /// it kept. [`Retention::UNLIMITED`] (the default) keeps everything.
    pub dm_retention: Retention,
    /// Retention of every group's stream (`im.group_retention_*`).
    pub group_retention: Retention,
}

impl StoreConfig {
    /// Defaults: batches of up to 4096 requests, no added wait, a 5 minute
    /// dedup window, queues of 65 536 requests, node 0.
    pub fn new(path: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            path: path.into(),
            group_commit_entries_max: 4096,
            group_commit_delay_max: Duration::ZERO,
            dedup_window: Duration::from_secs(5 * 60),
            queue_capacity: 65_536,
            node_id: 0,
            reader_threads: 2,
            read_entries_max: 10_000,
            trim_keys_per_step_max: 1024,
            maintenance_interval: Duration::from_millis(100),
            age_streams_per_step_max: 256,
            sync_interval_min: Duration::from_micros(SYNC_INTERVAL_MIN_DEFAULT_US),
            memtable_bytes_max: MEMTABLE_BYTES_MAX_DEFAULT,
            presence_set: true,
            conversations_per_user_max: CONVERSATIONS_PER_USER_MAX_DEFAULT,
            group_members_max: GROUP_MEMBERS_MAX_DEFAULT,
            groups_per_user_max: GROUPS_PER_USER_MAX_DEFAULT,
            dm_retention: Retention::UNLIMITED,
            group_retention: Retention::UNLIMITED,
        }
    }
}

/// How durable an append must be before it is acknowledged. See
/// `store/README.md` for the exact promise of each.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged after the batch is fsynced: survives power loss.
    Sync,
    /// Acknowledged after the batch reached the OS (written to the journal
    /// file, not fsynced): survives a crash of this process, not an OS crash
    /// or a power cut.
    Buffered,
}

/// Retention of a stream. Stored in the stream's meta; the latest append's
/// retention wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most the newest `count_max` entries (>= 1).
    pub count_max: u64,
    /// Drop entries whose envelope `time_ms` is older than this.
    pub age_max: Duration,
}

impl Retention {
    /// Keep everything.
    pub const UNLIMITED: Retention = Retention {
        count_max: u64::MAX,
        age_max: Duration::MAX,
    };
}

/// One append.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// Stream name: `user:<id>` for an inbox, the channel name for history.
    pub stream: String,
    /// The publication, encoded by the caller (on its own thread: the
    /// writer never encodes). The store stamps its id, `offset` and
    /// `epoch` in place (see [`EncodedPush::stamp`]), and its time when
    /// that is 0.
    pub push: EncodedPush,
    /// When to acknowledge.
    pub durability: Durability,
    /// Idempotency key: a retry with the same `(stream, client_msg_id)`
    /// within the dedup window returns the original [`Appended`].
    pub client_msg_id: Option<String>,
    /// Retention of the stream from now on.
    pub retention: Retention,
    /// Outbox events that ride this append: written in the same batch as
    /// the entry (each record carries the stamped entry), or not at all. A
    /// duplicate append (dedup hit) writes none again. Empty for none.
    pub outbox: Vec<OutboxEvent>,
}

/// What an outbox event is about. The numbers are stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutboxKind {
    /// A client-originated message was stored.
    Message = 1,
    /// A user's first connection on the node. Also records the user in the
    /// store's presence set (see [`crate::Store::submit_outbox`]).
    Online = 2,
    /// A user's last connection on the node is gone. Also removes the user
    /// from the presence set.
    Offline = 3,
    /// A message in a user's inbox, to check at `due_ms` for an ack.
    Undelivered = 4,
}

impl OutboxKind {
    /// The kind stored as `byte`, if any.
    pub fn from_u8(byte: u8) -> Option<OutboxKind> {
        match byte {
            1 => Some(OutboxKind::Message),
            2 => Some(OutboxKind::Online),
            3 => Some(OutboxKind::Offline),
            4 => Some(OutboxKind::Undelivered),
            _ => None,
        }
    }
}

/// An event to write to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub kind: OutboxKind,
    /// Ordering key: the user the event is about (events of one key are
    /// delivered in outbox order). 1..=[`STREAM_NAME_BYTES_MAX`] bytes.
    pub key: String,
    /// Earliest time (unix ms) to deliver; 0 = at once. `Undelivered`
    /// events carry the append's time + `undelivered_after`.
    pub due_ms: u64,
    /// Engine-defined bytes (a small JSON object), at most
    /// [`OUTBOX_BODY_BYTES_MAX`].
    pub body: Vec<u8>,
}

/// A stored outbox event, as the sender reads it.
#[derive(Debug, Clone)]
pub struct OutboxRecord {
    /// Position in the outbox: strictly increasing per store, across
    /// restarts too (a replayed dead event gets a new one).
    pub seq: u64,
    /// Unique and stable across retries, replays and restarts: a message
    /// id (same layout and generator as the store's message ids, so unique
    /// across nodes with distinct `node_id`s), assigned when first written.
    pub event_id: u64,
    pub kind: OutboxKind,
    pub key: String,
    pub due_ms: u64,
    /// When it was written (writer clock, unix ms).
    pub time_ms: u64,
    pub body: Vec<u8>,
    /// For events that rode an append: the stored entry as fanned out
    /// (id, offset and epoch stamped). `None` for standalone events.
    pub entry: Option<EncodedPush>,
}

/// An outbox or dead-letter record the store holds but cannot decode (a
/// damaged value, or one written by a newer version): reported with its
/// seq so the reader can move past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub seq: u64,
    pub reason: String,
}

/// A dead-lettered outbox event.
#[derive(Debug, Clone)]
pub struct DeadRecord {
    /// The event as it was in the outbox (its `seq` is its dead-list key).
    pub record: OutboxRecord,
    /// Failed attempts before it was given up.
    pub attempts: u32,
    /// Why the last attempt failed (at most [`DEAD_ERROR_BYTES_MAX`] bytes).
    pub last_error: String,
    /// When it was dead-lettered (writer clock, unix ms).
    pub dead_at_ms: u64,
}

/// An acknowledged append.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct Appended {
    /// The id the store assigned.
    pub message_id: MessageId,
    /// The entry's offset in its stream (first entry: 1).
    pub offset: u64,
    /// The stream's epoch.
    pub epoch: u64,
    /// The stored bytes, `offset` and `epoch` filled in: what the engine fans out.
    #[rkyv(with = ringcast_protocol::envelope::push_with::SharedAsBytes)]
    pub push: Arc<EncodedPush>,
    /// This was a retry of an earlier append: nothing new was stored and
    /// the commit sink was not handed it again.
    pub duplicate: bool,
}

/// A history read: entries with `since < offset < before` and
/// `from_time_ms <= time < before_time_ms`. Time never decreases along a
/// stream (see the crate README, "Paging by time"), so the time bounds are
/// turned into offsets by a binary search and the read is the same range
/// scan as without them.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    /// Stream name.
    pub stream: String,
    /// Return entries after this offset; `None` reads from the beginning.
    pub since: Option<u64>,
    /// Return entries before this offset; `None` reads to the newest. With
    /// `reverse`, this pages backwards: the newest entries older than
    /// `before`, and the last one's offset is the next page's `before`.
    pub before: Option<u64>,
    /// Most entries to return (capped by `read_entries_max`).
    pub limit: usize,
    /// `false`: the oldest entries of the range, ascending. `true`: the
    /// newest entries of the range, newest first.
    pub reverse: bool,
    /// Only entries whose envelope time is at least this (Unix ms); `None`:
    /// no lower time bound.
    pub from_time_ms: Option<u64>,
    /// Only entries whose envelope time is below this (Unix ms); `None`: no
    /// upper time bound.
    pub before_time_ms: Option<u64>,
}

/// Where a time falls in a stream ([`crate::Store::seek_time`]), as of one
/// snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeSeek {
    /// The first stored offset whose time is at least the time asked for;
    /// `next_offset` when every stored entry is older.
    pub at_or_after: u64,
    /// The last stored offset whose time is at most the time asked for;
    /// `None` when every stored entry is newer (or none is stored).
    pub at_or_before: Option<u64>,
    /// Stream epoch; 0 if the stream does not exist.
    pub epoch: u64,
    /// Oldest offset still stored (== `next_offset` when empty).
    pub first_offset: u64,
    /// Offset the next append will get.
    pub next_offset: u64,
}

/// The answer to a [`ReadRequest`], consistent as of one snapshot.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Entries, ascending or (for `reverse`) descending by offset.
    pub entries: Vec<EncodedPush>,
    /// Stream epoch; 0 if the stream does not exist.
    pub epoch: u64,
    /// Oldest offset still stored (== `next_offset` when empty). A reader
    /// whose `since` is below `first_offset - 1` missed trimmed entries.
    pub first_offset: u64,
    /// Offset the next append will get.
    pub next_offset: u64,
}

/// The answer to a request submitted with a tag ([`crate::Store::submit_append`],
/// [`crate::Store::submit_cursor`]), handed to [`CommitSink::answered`].
#[derive(Debug)]
pub enum Answer {
    Appended(Result<Appended, StoreError>),
    Cursor(Result<u64, StoreError>),
    ImAppended(Result<ImAppended, StoreError>),
    ImRead(Result<ImReadState, StoreError>),
    Group(Result<GroupAppended, StoreError>),
    ImAck(Result<ImDelivery, StoreError>),
    Rewritten(Result<ImRewritten, StoreError>),
}

/// What the writer hands back after each group commit, on the writer
/// thread. It must not block: it runs between a batch's fsync and the next
/// batch.
///
/// Per batch, in this order: [`CommitSink::appended`] for every newly
/// stored entry (in offset order per stream), then [`CommitSink::answered`]
/// for every tagged request of the batch, then
/// [`CommitSink::outbox_written`] if the batch wrote outbox records, then
/// [`CommitSink::batch_done`] once. So a consumer can queue everything of a batch and wake its
/// readers once, and a subscriber sees an entry before its sender's
/// acknowledgement is handed over.
pub trait CommitSink: Send {
    /// A newly stored entry, durable as its request asked.
    fn appended(&mut self, appended: &Appended);
    /// A newly stored group entry (a message or a `member` entry), with
    /// the members the writer decided it goes to at its offset: a sink
    /// that routes by user needs them, and no other read can give the set
    /// as of that offset. By default, handed on as a plain entry.
    fn group_appended(&mut self, group: &GroupAppended) {
        self.appended(&group.appended);
    }
    /// A newly stored DM entry with its pair ([`ImAppended::pair`]): a
    /// sink that routes by user learns the pair of a new conversation
    /// here, after the store committed it, and of no refused one. By
    /// default, handed on as a plain entry.
    fn dm_appended(&mut self, dm: &ImAppended) {
        self.appended(&dm.appended);
    }
    /// The answer to the request submitted with `tag`.
    fn answered(&mut self, tag: u64, answer: Answer);
    /// The batch is handed over.
    fn batch_done(&mut self);

    /// The batch wrote outbox records (new events or replayed dead ones):
    /// called once, before [`CommitSink::batch_done`], so the consumer can
    /// wake the outbox's sender.
    fn outbox_written(&mut self) {}

    /// Whether this sink takes answers to tagged requests; a store whose
    /// sink does not refuses `submit_*` calls.
    fn takes_answers(&self) -> bool {
        true
    }
}

/// A sink for callers that only watch what is stored: a closure called for
/// every newly stored entry. It takes no tagged requests.
impl<F: FnMut(&Appended) + Send> CommitSink for F {
    fn appended(&mut self, appended: &Appended) {
        self(appended);
    }

    fn answered(&mut self, tag: u64, _answer: Answer) {
        // `takes_answers` keeps tagged requests out: unreachable through
        // the store's API.
        tracing::error!(
            tag,
            "a tagged store request, but the store's sink takes no answers"
        );
    }

    fn batch_done(&mut self) {}

    fn takes_answers(&self) -> bool {
        false
    }
}

/// A point-in-time view of the store's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Health {
    /// A write or fsync failed; the store refuses all writes until restarted.
    pub poisoned: bool,
    /// The store is reopening its database after a transient failure (out
    /// of file descriptors or memory); writes and reads answer
    /// [`crate::StoreError::Unavailable`] until it is back.
    pub recovering: bool,
    /// Times the store reopened its database after a transient failure.
    pub recoveries: u64,
    /// Writes that failed for a transient reason (each one's requests were
    /// answered [`crate::StoreError::Unavailable`]).
    pub transient_failures: u64,
    /// Requests waiting for the writer.
    pub writer_queue_len: usize,
    /// Requests waiting for a reader.
    pub reader_queue_len: usize,
    /// Group commits written since open.
    pub commits: u64,
    /// New entries stored since open (appends that were not duplicates).
    pub appends: u64,
    /// fsyncs of the journal since open.
    pub syncs: u64,
    /// The writer thread has ended (closed, or died of a panic): no
    /// request still waiting for a tagged answer will get one.
    pub writer_stopped: bool,
    /// Events in the outbox (written, not yet done or dead-lettered).
    pub outbox_len: u64,
    /// Events in the dead-letter list.
    pub dead_len: u64,
    /// Standalone and presence outbox events, and delivered seqs to
    /// delete, that the store took without an answer and then could not
    /// write (the store was poisoned or reopening, or their batch failed):
    /// lost events, or deliveries sent again after a restart.
    pub outbox_dropped: u64,
}

/// A device's acknowledged position in a stream, with the epoch it was
/// acknowledged in: a cursor from an older epoch tells the caller that the
/// stream was reset since, which it must not treat as "nothing to replay".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredCursor {
    pub offset: u64,
    pub epoch: u64,
}

/// An IM message to a direct conversation ([`crate::Store::im_append`]).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct ImAppend {
    /// The conversation's stream name (`dm:<h>`, see `docs/im.md`); the
    /// caller derives it from the pair. 1..=[`STREAM_NAME_BYTES_MAX`] bytes.
    pub conv: String,
    /// The two users, in any order (the store keeps them sorted); equal for
    /// a conversation with oneself. Each 1..=[`CURSOR_ID_BYTES_MAX`] bytes.
    pub pair: (String, String),
    /// One of the pair.
    pub sender: String,
    /// The publication; the store stamps id, offset, epoch and its time
    /// (`max(the conversation's last time, the push's time or now)`).
    #[rkyv(with = ringcast_protocol::envelope::push_with::AsBytes)]
    pub push: EncodedPush,
    /// Idempotency key, as [`AppendRequest::client_msg_id`].
    pub client_msg_id: Option<String>,
    pub durability: Durability,
    /// The app's backend allowed this pair: a new conversation to a user
    /// with [`DmPolicy::Backend`] may start (the caller asked it).
    pub backend_allowed: bool,
}

/// An acknowledged IM append.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct ImAppended {
    pub appended: Appended,
    /// Counting entries (messages) in the conversation up to this one.
    pub count: u64,
    /// The IM sequence of this write; 0 for a duplicate (nothing changed).
    pub gseq: u64,
    /// The conversation's two users, sorted, as the writer checked them
    /// against its record: what a sink routes the entry by, known for
    /// sure only once the store took it.
    pub pair: (String, String),
}

/// A user's read position in a conversation after [`crate::Store::im_read`].
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImReadState {
    pub read_offset: u64,
    pub unread: u64,
    /// The user's history starts here (0: from the start); moved by
    /// [`crate::Store::im_clear`].
    pub visible_from: u64,
}

/// A device's acknowledgement of a conversation ([`crate::Store::im_ack`]):
/// the device's cursor and the user's delivery position now stored.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ImDelivery {
    /// The device's cursor (monotonic, clamped to the last offset).
    pub cursor: u64,
    /// The user's `recv_offset`: the highest offset any of its devices
    /// acknowledged.
    pub recv_offset: u64,
    /// `recv_offset` moved with this acknowledgement: the senders are told
    /// (a delivery receipt goes out only when it advances). Never for a
    /// group the user left: its cursor is stored, its position stays.
    pub advanced: bool,
    /// The other user of a DM (the user itself in a DM with oneself);
    /// `None` for a group.
    pub peer: Option<String>,
    /// A group's member count (0 for a DM), for the receipts' size gate.
    pub member_count: u32,
}

/// A member's read and delivery positions ([`crate::Store::im_receipts`]).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MemberReceipt {
    pub user: String,
    pub read_offset: u64,
    pub recv_offset: u64,
}

/// A page of [`MemberReceipt`]s in user id order; `next` is the last user
/// of a full page (the next page starts after it), `None` at the end.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReceiptPage {
    pub receipts: Vec<MemberReceipt>,
    pub next: Option<String>,
}

/// A sync token: where a device's view of its conversations stands. Only
/// meaningful with the store it came from.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncToken {
    pub store_id: u64,
    pub gseq: u64,
}

/// One conversation as a user sees it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ConvSummary {
    /// The stream name (`dm:<h>` or `grp:<gid>`).
    pub conv: String,
    /// The stream id: with `last_time_ms`, the conversation list's cursor.
    pub sid: u64,
    /// The other user of the pair (empty for a group).
    pub peer: String,
    pub epoch: u64,
    pub last_offset: u64,
    pub last_time_ms: u64,
    pub last_msg_offset: u64,
    pub count_total: u64,
    pub read_offset: u64,
    pub unread: u64,
    /// The gseq of the last write that changed this user's view of it.
    pub changed_gseq: u64,
    /// The user's history starts at this offset (0: from the start): its
    /// `clear`, or a group's join with `history_from_join`.
    pub visible_from: u64,
    /// A group's name, the user's role and window; `None` for a DM. For a
    /// group the user left, `last_*` and `unread` stop at its window.
    pub group: Option<GroupSummary>,
}

/// A page of a user's conversation list ([`crate::Store::conv_list`]).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ConvPage {
    /// Newest activity first; among equal times, the higher `sid` first.
    pub convs: Vec<ConvSummary>,
    /// The cursor of the next page (`(last_time_ms, sid)` of the last
    /// conversation), `None` when this page reached the end.
    pub next: Option<(u64, u64)>,
    /// Unread over all the user's conversations.
    pub total_unread: u64,
}

/// The conversations changed for a user since a token ([`crate::Store::im_sync`]).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ImSync {
    /// Newest activity first.
    pub convs: Vec<ConvSummary>,
    /// The token to sync from next time.
    pub token: SyncToken,
    /// More than `limit`. After a sync from a token: sync again from
    /// `token`. After a sync without one (or a reset): this was the newest
    /// page of the list, and the rest comes from `conv_list` after the last
    /// conversation's `(last_time_ms, sid)`.
    pub more: bool,
    /// The token given cannot be continued (another store's, or ahead of
    /// this store's sequence): this is a first sync, and the device must
    /// drop what it holds.
    pub reset: bool,
    pub total_unread: u64,
}

/// Longest group name, and longest group info, in bytes (`docs/im.md`,
/// "Keys in the store": name and info ≤ 1 KiB).
pub const GROUP_TEXT_BYTES_MAX: usize = 1024;
/// Most users one `member` entry names (`docs/im.md`, "What a
/// conversation stream holds": 100 targets per entry).
pub const GROUP_TARGETS_MAX: usize = 100;
/// Default of [`StoreConfig::group_members_max`] (`im.group_members_max`).
pub const GROUP_MEMBERS_MAX_DEFAULT: u32 = 2_000;
/// The most members the system may allow one group
/// ([`GroupOp::SetMembersMax`]).
pub const GROUP_MEMBERS_MAX_CEILING: u32 = 100_000;
/// Default of [`StoreConfig::groups_per_user_max`].
pub const GROUPS_PER_USER_MAX_DEFAULT: usize = 1_000;

/// Who asks for a group operation.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum GroupActor {
    /// A user: the roles table of `docs/im.md` applies.
    User(String),
    /// The app's backend: roles are bypassed, limits kept.
    System,
}

/// A member's role in a group.
#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
)]
pub enum GroupRole {
    Member,
    Admin,
    Owner,
}

/// A change to a group, checked by the writer against the roles table in
/// offset order (`docs/im.md`, "Roles").
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum GroupOp {
    /// Creates the group: `owner` owns it (for a user actor, the actor
    /// itself), `members` (≤ [`GROUP_TARGETS_MAX`]) join as members.
    /// `members_max` is the system's alone to set (`None`: the store's
    /// [`StoreConfig::group_members_max`]).
    Create {
        owner: String,
        name: String,
        info: String,
        members: Vec<String>,
        members_max: Option<u32>,
        /// New members see history from their join on, not before.
        history_from_join: bool,
        /// Plain members may add users.
        members_can_invite: bool,
    },
    Add {
        users: Vec<String>,
    },
    Remove {
        users: Vec<String>,
    },
    /// The actor leaves (the owner must transfer first).
    Leave,
    /// Makes `user` an admin or a member again (not [`GroupRole::Owner`]:
    /// that is [`GroupOp::Transfer`]).
    Role {
        user: String,
        role: GroupRole,
    },
    /// `to` owns the group; the old owner becomes an admin.
    Transfer {
        to: String,
    },
    /// `user` may not send until `until_ms` (Unix ms).
    Mute {
        user: String,
        until_ms: u64,
    },
    Unmute {
        user: String,
    },
    MuteAll,
    UnmuteAll,
    /// New name and/or info (`None`: unchanged).
    Update {
        name: Option<String>,
        info: Option<String>,
    },
    /// The system only: the group's member limit, up to
    /// [`GROUP_MEMBERS_MAX_CEILING`].
    SetMembersMax {
        members_max: u32,
    },
    Dissolve,
}

/// A group operation ([`crate::Store::group_op`]): the op and the
/// caller's encoded `member` entry, appended to the group's stream in the
/// batch that changes the member table.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct GroupOpRequest {
    /// `grp:<gid>`, 1..=[`STREAM_NAME_BYTES_MAX`] bytes.
    pub conv: String,
    pub actor: GroupActor,
    pub op: GroupOp,
    /// The `member` entry; for a user actor its sender must be the actor.
    /// The store stamps id, offset, epoch and time, as for a message.
    #[rkyv(with = ringcast_protocol::envelope::push_with::AsBytes)]
    pub push: EncodedPush,
    /// Idempotency key, as [`AppendRequest::client_msg_id`].
    pub client_msg_id: Option<String>,
    pub durability: Durability,
}

/// A message to a group ([`crate::Store::group_append`]).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct GroupAppend {
    /// `grp:<gid>`.
    pub conv: String,
    pub sender: String,
    /// The entry; its sender must be `sender`.
    #[rkyv(with = ringcast_protocol::envelope::push_with::AsBytes)]
    pub push: EncodedPush,
    /// Whether it counts as unread (`false`: a silent `custom`).
    pub counts: bool,
    pub client_msg_id: Option<String>,
    pub durability: Durability,
}

/// An acknowledged group entry (a message or a `member` entry), with what
/// the engine needs to route it without another read.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct GroupAppended {
    pub appended: Appended,
    /// Counting entries (messages) in the conversation up to this one.
    pub count: u64,
    /// The IM sequence of this write; 0 for a duplicate.
    pub gseq: u64,
    /// The members after this entry, sorted: for a message, exactly who
    /// receives it. For a duplicate: the members now.
    pub members: Arc<[String]>,
    /// Users this entry removed (remove, leave): they receive this entry
    /// and nothing after it.
    pub removed: Vec<String>,
}

/// A group member ([`crate::Store::group_members`]).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub user: String,
    pub role: GroupRole,
    /// The offset of the `member` entry that added it.
    pub joined_offset: u64,
    pub joined_ms: u64,
    /// Muted until then (Unix ms); 0: not muted.
    pub muted_until_ms: u64,
    /// Who added it (the empty string: the system).
    pub added_by: String,
}

/// A group's record ([`crate::Store::group_info`]).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub conv: String,
    pub name: String,
    pub info: String,
    pub owner: String,
    pub member_count: u32,
    pub members_max: u32,
    pub muted_all: bool,
    pub dissolved: bool,
    pub history_from_join: bool,
    pub members_can_invite: bool,
    pub last_offset: u64,
    pub count_total: u64,
}

/// What a user sees of a group, in a [`ConvSummary`].
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub name: String,
    /// `None` once the user left or was removed, or the group dissolved.
    pub role: Option<GroupRole>,
    /// The user left or was removed, or the group dissolved: its view
    /// stops at `visible_to`.
    pub left: bool,
    pub dissolved: bool,
    pub muted_all: bool,
    pub member_count: u32,
    /// The user's history starts at this offset (0: from the start).
    pub visible_from: u64,
    /// The user's history ends at this offset (0 while a member).
    pub visible_to: u64,
}

/// Who may send a user direct messages (`docs/im.md`, "Commands and API").
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default,
)]
pub enum DmPolicy {
    /// Anyone not blocked.
    #[default]
    Anyone,
    /// Only users in the user's contacts.
    Contacts,
    /// The app's backend decides each new conversation to the user: the
    /// writer refuses one ([`crate::StoreError::BackendDecides`]) unless
    /// the request says the backend allowed it
    /// ([`ImAppend::backend_allowed`]); an existing one needs nothing.
    Backend,
}

/// What a rewrite does to the original message.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteOp {
    /// The original becomes a tombstone; it no longer counts as unread.
    Recall,
    /// The original takes new data.
    Edit,
}

/// A recall or an edit of a message ([`crate::Store::im_rewrite`],
/// `docs/im.md`, "Recall, edit, delete"): the event is appended and the
/// original overwritten in place, in one batch.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct ImRewrite {
    /// `dm:<h>` or `grp:<gid>`.
    pub conv: String,
    /// A user (a member; the rights of "Roles" apply) or the system (any
    /// message, at any time; `edits_max` still applies).
    pub actor: GroupActor,
    pub op: RewriteOp,
    /// The original's offset.
    pub ref_offset: u64,
    /// The original's message id, as the caller read it: the rewrite is
    /// refused if the entry at `ref_offset` is another one.
    pub ref_id: u64,
    /// The `recall` or `edit` event; for a user actor its sender must be
    /// the actor. Stamped by the store as a message is.
    #[rkyv(with = ringcast_protocol::envelope::push_with::AsBytes)]
    pub push: EncodedPush,
    /// The original's new form: its tombstone or its edited version. The
    /// store stamps the original's id, offset, epoch and time on it.
    #[rkyv(with = ringcast_protocol::envelope::push_with::AsBytes)]
    pub replacement: EncodedPush,
    /// How long after the original its sender may do this (ms).
    pub window_ms: u64,
    /// Most edits of one message (ignored for a recall).
    pub edits_max: u32,
    pub durability: Durability,
}

/// An acknowledged recall or edit.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct ImRewritten {
    /// The event's entry.
    pub appended: Appended,
    /// The original as stored now.
    #[rkyv(with = ringcast_protocol::envelope::push_with::SharedAsBytes)]
    pub replacement: Arc<EncodedPush>,
    /// The IM sequence of this write.
    pub gseq: u64,
    /// The message's edits so far (0 for a recall).
    pub edits: u32,
    /// Who sees it: a group's members now (sorted), or a DM's pair.
    pub members: Arc<[String]>,
    /// Counting entries (messages) in the conversation up to the event.
    pub count: u64,
    /// The conversation is a group: the commit sink is handed the event
    /// as a group entry ([`CommitSink::group_appended`]) with `members`.
    pub group: bool,
}

impl ImRewritten {
    /// The event as a group entry, for routing by its members.
    pub fn as_group_entry(&self) -> Option<GroupAppended> {
        self.group.then(|| GroupAppended {
            appended: self.appended.clone(),
            count: self.count,
            gseq: self.gseq,
            members: Arc::clone(&self.members),
            removed: Vec::new(),
        })
    }
}
