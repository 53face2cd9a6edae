//! The request, reply and configuration types of the public API. Plain data:
//! no fjall types leak out, so the engine depends on this crate's contract,
//! not on the storage engine behind it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ringcast_protocol::envelope::{EncodedPush, Envelope, MessageId};

/// Longest stream name, in bytes. Keeps meta keys small and bounds what a
/// bad caller can make the store hold per request.
pub const STREAM_NAME_BYTES_MAX: usize = 1024;
/// Longest `client_msg_id`, in bytes.
pub const CLIENT_MSG_ID_BYTES_MAX: usize = 256;
/// Longest user or device id in a cursor, in bytes.
pub const CURSOR_ID_BYTES_MAX: usize = 1024;

/// Store configuration. Build with [`StoreConfig::new`] and override fields.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory of the fjall database (created if missing).
    pub path: PathBuf,
    /// Most requests the writer folds into one fjall batch (and one fsync).
    pub group_commit_entries_max: usize,
    /// Longest the writer waits after the first request of a batch for more
    /// to arrive. Adds at most this much latency to a lone append. The
    /// default is zero: a batch is everything queued when the writer gets to
    /// it, and what arrives during one fsync makes the next batch, so the
    /// batch grows with the load by itself. A wait only pays off when
    /// requests trickle in slower than an fsync takes and every fsync saved
    /// matters more than latency.
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
        }
    }
}

/// How durable an append must be before it is acknowledged. See
/// `store/README.md` for the exact promise of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// The publication. The store overwrites `id`, `offset` and `epoch`, and
    /// sets `time_ms` to now when it is 0.
    pub envelope: Envelope,
    /// When to acknowledge.
    pub durability: Durability,
    /// Idempotency key: a retry with the same `(stream, client_msg_id)`
    /// within the dedup window returns the original [`Appended`].
    pub client_msg_id: Option<String>,
    /// Retention of the stream from now on.
    pub retention: Retention,
}

/// An acknowledged append.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The id the store assigned.
    pub message_id: MessageId,
    /// The entry's offset in its stream (first entry: 1).
    pub offset: u64,
    /// The stream's epoch.
    pub epoch: u64,
    /// The stored bytes, `offset` and `epoch` filled in: what the engine fans out.
    pub push: Arc<EncodedPush>,
    /// This was a retry of an earlier append: nothing new was stored and
    /// the `on_appended` hook was not called again.
    pub duplicate: bool,
}

/// A history read: entries with `offset > since`.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    /// Stream name.
    pub stream: String,
    /// Return entries after this offset; `None` reads from the beginning.
    pub since: Option<u64>,
    /// Most entries to return (capped by `read_entries_max`).
    pub limit: usize,
    /// `false`: the oldest entries after `since`, ascending. `true`: the
    /// newest entries after `since`, newest first.
    pub reverse: bool,
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

/// Called by the writer thread for every newly stored entry, after its
/// batch is durable and before the append is acknowledged, in offset order
/// per stream. It runs on the writer thread: it must not block.
pub type OnAppended = Box<dyn FnMut(&Appended) + Send>;

/// A point-in-time view of the store's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// A write failed; the store refuses all writes until restarted.
    pub poisoned: bool,
    /// Requests waiting for the writer.
    pub writer_queue_len: usize,
    /// Requests waiting for a reader.
    pub reader_queue_len: usize,
}

/// A device's acknowledged position in a stream, with the epoch it was
/// acknowledged in: a cursor from an older epoch tells the caller that the
/// stream was reset since, which it must not treat as "nothing to replay".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredCursor {
    pub offset: u64,
    pub epoch: u64,
}
