//! The engine's limits, defined once and tied together by compile-time
//! asserts. Limits shared with other crates (the shard count and the
//! message-id layout) live in `ringcast_protocol::limits` and are
//! re-exported here; values an operator sets live in `Config`, validated
//! against the ranges here.

pub use ringcast_protocol::client::PRESENCE_USERS_MAX;
pub use ringcast_protocol::limits::{
    ID_SHARD_CONTROL, ID_SHARD_STORE, INTEREST_MASK_BITS, NODE_ID_MAX, SHARDS_MAX,
};

/// Capacity of each (producer, shard) mesh ring. With `n` shards the mesh
/// holds `n * (n + 2)` rings (shards, the control thread, the store).
pub const MESH_QUEUE_CAPACITY: usize = 1024;
/// Events one producer may have outstanding at one shard
/// (`server.mesh_lane_events`): the ring, then an overflow list the
/// consumer drains after it, allocated only when used.
pub const MESH_LANE_EVENTS_DEFAULT: usize = MESH_QUEUE_CAPACITY + 64 * 1024;
pub const MESH_LANE_EVENTS_MIN: usize = 8;
pub const MESH_LANE_EVENTS_MAX: usize = 1024 * 1024;
/// Most mesh events a shard handles per loop turn before it serves its
/// sockets again.
pub const MESH_DRAIN_MAX: usize = 256;

/// Events waiting for the cluster thread (`crate::cluster::Outbound`):
/// publications for other nodes, interest changes, forwarded requests.
/// Past it live traffic for other nodes is dropped (counted) and requests
/// are refused; a shard never waits.
pub const CLUSTER_QUEUE_EVENTS: usize = 65_536;
/// Bytes of publications the queue to the cluster thread holds at most:
/// past it live traffic for other nodes is dropped (counted; a stored one
/// makes its subscribers elsewhere recover).
pub const CLUSTER_QUEUE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// NATS messages one subscription of the cluster thread holds before the
/// client drops them (`SlowConsumer`, which cuts the durable subscribers
/// it concerns). Small on purpose: each can be a batch of up to
/// `max_payload` bytes, and a node holds up to `cluster.channel_buckets`
/// subscriptions.
pub const CLUSTER_SUBSCRIPTION_MESSAGES: usize = 256;
/// Commands (publishes, subscribes) waiting for the NATS client's
/// connection task.
pub const CLUSTER_CLIENT_COMMANDS: usize = 16_384;
const _: () = assert!(CLUSTER_SUBSCRIPTION_MESSAGES >= 16);
const _: () = assert!(CLUSTER_CLIENT_COMMANDS >= CLUSTER_SUBSCRIPTION_MESSAGES);
/// Most slices handed to one `sendmsg`; Linux's `UIO_MAXIOV` is 1024.
pub const IOV_MAX: usize = 64;
/// Reads per readiness event before other connections get a turn; a
/// connection with more to read is served again next turn.
pub const READS_PER_WAKE_MAX: usize = 8;
/// Connections accepted per listener readiness before the loop serves
/// others.
pub const ACCEPTS_PER_TURN_MAX: usize = 256;
/// A blocked connection this many times over its outbound bound is cut off
/// at once, without waiting for the slow-consumer timeout.
pub const QUEUE_HARD_LIMIT_FACTOR: usize = 4;
/// The window in which `websocket.rate_limit_refusals_max` refusals (114)
/// close a connection with 4008.
pub const RATE_LIMIT_REFUSALS_WINDOW_MS: u64 = 10_000;
/// Source addresses whose connection attempts one shard tracks for
/// `websocket.accept_rate_per_source` (about 100 bytes each).
pub const RATE_LIMIT_SOURCES_MAX: usize = 65_536;
/// How long the close handshake may take before the socket is dropped.
pub const CLOSE_LINGER_MS: u64 = 1_000;
/// Live publications held for one stream while it replays; past this the
/// connection is too far behind and is closed like a slow consumer.
pub const RECOVERY_HELD_MAX: usize = 65_536;
/// Entries read from the store per replay page.
pub const REPLAY_PAGE_ENTRIES: usize = 256;
/// Most entries one history request returns.
pub const HISTORY_LIMIT_MAX: u32 = 1000;
/// Sweeps per heartbeat period: each connection is checked this many times
/// per `min(ping_interval, pong_timeout, slow_consumer_timeout)`.
pub const SWEEPS_PER_PERIOD: u32 = 10;
/// Bounds of the sweep tick, whatever the configured timeouts.
pub const SWEEP_TICK_MS_MIN: u64 = 10;
pub const SWEEP_TICK_MS_MAX: u64 = 100;
/// Most targets in one API send or broadcast request.
pub const API_TARGETS_MAX: usize = 10_000;
/// Most idempotency keys the API remembers in memory at once (each with
/// its answer, for `server.dedup_window_ms`). Past it the oldest are
/// forgotten early; durable targets stay deduplicated by the store.
pub const API_IDEMPOTENCY_KEYS_MAX: usize = 65_536;
/// Idle presence entries (offline users nobody watches, kept for their
/// last-seen time) the node remembers, shared evenly by the shards; past
/// a shard's share its oldest are forgotten (last seen unknown again).
/// About 100 bytes each (key, entry, map overhead): 10 MB at most.
pub const PRESENCE_IDLE_USERS_MAX: usize = 100_000;
/// Ciphertext a TLS connection holds in rustls before the session's queue
/// stops draining into it: one full TLS record. Past it, plaintext stays in
/// the session's queue, where the outbound bound and the slow-consumer
/// timeout see it (and the shard's own copy of the records taken from
/// rustls, waiting for the socket, holds at most this much again).
pub const TLS_BUFFER_BYTES_MAX: usize = 16 * 1024;
/// io_uring submission queue entries per shard ring (monoio's and ours).
pub const URING_ENTRIES: u32 = 4096;

const _: () = assert!(SHARDS_MAX <= INTEREST_MASK_BITS);
const _: () = assert!(
    PRESENCE_IDLE_USERS_MAX >= SHARDS_MAX,
    "every shard gets a share"
);
const _: () = assert!(PRESENCE_USERS_MAX <= API_TARGETS_MAX);
const _: () = assert!(MESH_DRAIN_MAX <= MESH_QUEUE_CAPACITY);
const _: () = assert!(IOV_MAX <= 1024, "UIO_MAXIOV");
const _: () = assert!(QUEUE_HARD_LIMIT_FACTOR >= 2);
const _: () = assert!(SWEEP_TICK_MS_MIN <= SWEEP_TICK_MS_MAX);
const _: () = assert!(REPLAY_PAGE_ENTRIES <= HISTORY_LIMIT_MAX as usize);
// A replay page's worth of live publications must fit the held buffer, or
// an ordinary replay would trip the "too far behind" cut.
const _: () = assert!(REPLAY_PAGE_ENTRIES < RECOVERY_HELD_MAX);
const _: () = assert!(MESH_LANE_EVENTS_MIN <= MESH_LANE_EVENTS_DEFAULT);
const _: () = assert!(MESH_LANE_EVENTS_DEFAULT <= MESH_LANE_EVENTS_MAX);
const _: () = assert!(MESH_LANE_EVENTS_DEFAULT >= MESH_QUEUE_CAPACITY);
// Each shard's ring must take a whole drain of every producer and still
// hold a turn's worth of completions.
const _: () = assert!(URING_ENTRIES as usize >= IOV_MAX);
const _: () = assert!(
    TLS_BUFFER_BYTES_MAX >= 16 * 1024,
    "one TLS record's payload"
);
