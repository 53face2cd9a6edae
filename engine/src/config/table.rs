//! The key table: every config key, written once, with its type, kind,
//! bounds, default and flag help. Everything else (the file structs, the
//! flags, the env vars, `--help`, the resolve steps, the docs check) is
//! derived from it by [`config_table!`]. Checks that span several keys follow
//! the table.
//!
//! Adding a key: add a row here and a row to docs/config.md (the
//! `docs_match_the_key_table` test says what the row must contain).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{invalid, ConfigError};
use super::keys::{config_table, KeyInfo, Section};
use super::kinds::{
    nats_url, optional_addr, proxy_name, proxy_ref, proxy_url, subject_token, webhook_url, Addr,
    Bool, Bytes, Count, DirPath, FilePath, Filter, HeaderNames, Micros, Millis, NamespaceName,
    Node, OptionalSecret, Origins, Pick, Seconds, SecretKey, Shards, Text, UrlPath,
    WebhookEventList,
};
use super::sources::Layers;
use super::types::{
    ConnectProxyMode, Driver, Durability, JwtAlgorithm, LogFormat, NodeId, PublishPolicy, Secret,
    ShardCount, SubscribePolicy, WebhookEvents,
};
use super::{API_KEY_BYTES_MIN, JWT_SECRET_BYTES_MIN, NAMESPACES_MAX, WEBHOOK_SECRET_BYTES_MIN};

/// The Type cell of the keys that name the `[[proxy]]` an event goes to.
const PROXY_REF_DOC: &str = "proxy name, or `\"\"` for none";

/// Timeouts are driven by a wheel with 10 ms ticks; shorter values cannot be
/// honored, so they are rejected rather than silently rounded.
const TIMEOUT_MS_MIN: u64 = 10;
const TIMEOUT_MS_MAX: u64 = 86_400_000;
const SIZE_BYTES_MAX: u64 = 64 * 1024 * 1024;
const HEAD_BYTES_MAX: u64 = 1024 * 1024;
/// Largest IM message data limit: a message is one publication, which a
/// frame must carry whole.
const IM_DATA_BYTES_MAX: u64 = 1024 * 1024;
/// Ten years: retention longer than that is a typo for "forever".
const RETENTION_S_MAX: u64 = 315_360_000;
/// Longest recall or edit window: a year.
const IM_REWRITE_WINDOW_S_MAX: u64 = 31_536_000;
/// Highest typing rate and burst per connection: typing is a hint, and a
/// client past a few a second is a bug or an attack.
const TYPING_RATE_MAX: u32 = 1000;
/// Largest group that can get typing signals: its members are read in
/// one store page (`shard/im_typing.rs`) and each signal costs a lookup
/// per member on every shard it reaches.
const GROUP_TYPING_MEMBERS_CEILING: u32 = 1000;

/// serde_json refuses input nested deeper than 128 while it parses a
/// whole command, whose own object and `params` take two of those levels.
const JSON_DEPTH_MAX_LIMIT: usize = 120;

/// Highest rate (per second) and burst a rate limit takes: the token
/// bucket's arithmetic (`crate::ratelimit`) is sized for it.
const RATE_MAX: u32 = crate::ratelimit::RATE_MAX;

/// Most channel buckets (NATS subjects `<prefix>.c.<b>`): a node's
/// subscriptions are bounded by it.
const CHANNEL_BUCKETS_MAX: u32 = 65_536;
/// Store partitions: a partition is owned by the node of the same id,
/// and node ids are 0..=63 (the message id's node field).
const STORES_MAX: u32 = 64;
const _: () = assert!(STORES_MAX == ringcast_protocol::envelope::MESSAGE_ID_NODE_COUNT as u32);

const _: () = assert!(TIMEOUT_MS_MIN < TIMEOUT_MS_MAX);
const _: () = assert!(SIZE_BYTES_MAX <= usize::MAX as u64);

/// The tables whose keys have flags and env vars; a `RINGCAST_<TABLE>_*`
/// variable that names no key of one of them is a typo and an error.
pub(super) const OVERRIDE_TABLES: &[&str] = &[
    "server",
    "websocket",
    "api",
    "auth",
    "tls",
    "webhook",
    "im",
    "cluster",
    "log",
];

config_table! {
    flags "server";
    #[derive(Debug, Clone)]
    pub struct ServerConfig, file FileServer {
        /// Number of shard threads, resolved (never 0).
        shards: ShardCount = Shards { default: 0 },
            "N", "Shard threads; 0 = one per core";
        /// Pin shard `i` to core `i`.
        pin_cores: bool = Bool { default: true },
            "BOOL", "Pin each shard to a core";
        /// Let the kernel back the heap with transparent huge pages (off:
        /// `PR_SET_THP_DISABLE` at start, see docs/tuning.md).
        transparent_huge_pages: bool = Bool { default: false },
            "BOOL", "Allow transparent huge pages";
        driver: Driver = Pick<Driver> { default: Driver::Auto },
            "auto|io_uring|epoll", "I/O driver";
        node_id: NodeId = Node { default: 0 },
            "0..63", "Node id";
        /// Directory of the embedded store. Created by the store, not here.
        data_dir: PathBuf = DirPath { default: "./data" },
            "PATH", "Store directory";
        /// How long shutdown waits for connections to drain before closing them.
        shutdown_grace as "shutdown_grace_ms": Duration
            = Millis { default: 5000, min: 0, max: TIMEOUT_MS_MAX },
            "MS", "Drain time at shutdown";
        /// How long a durable publish's `client_msg_id` is remembered: a retry
        /// inside it is stored once and answered with the original ids.
        dedup_window as "dedup_window_ms": Duration
            = Millis { default: 300_000, min: 1000, max: TIMEOUT_MS_MAX },
            "MS", "client_msg_id dedup window";
        /// Deepest nesting of arrays and objects accepted in a
        /// publication's JSON `data` (client `publish`/`send`, API bodies).
        json_depth_max: usize
            = Count<usize> { default: 64, min: 1, max: JSON_DEPTH_MAX_LIMIT, unit: "levels" },
            "N", "Deepest JSON nesting accepted in data";
        /// File descriptors kept free for the store, the API and the logs:
        /// shards accept connections (upgrading ones included) only while
        /// all of them together hold fewer than `RLIMIT_NOFILE` minus this.
        fd_reserve: usize
            = Count<usize> { default: 1024, min: 16, max: 1_000_000, unit: "descriptors" },
            "N", "File descriptors kept free of connections";
        /// Least time between the starts of two store fsyncs: under load a
        /// batch waits for the interval to end, so one fsync covers more
        /// appends; after a quiet spell nothing waits.
        store_sync_interval as "store_sync_interval_us": Duration
            = Micros { default: ringcast_store::SYNC_INTERVAL_MIN_DEFAULT_US, min: 0, max: 100_000 },
            "US", "Least time between two store fsyncs";
        /// Size at which each of the store's keyspaces seals its memtable
        /// and writes it to a new table file: memory held per keyspace, and
        /// how often the store needs a new file.
        store_memtable_bytes_max: usize
            = Bytes { default: ringcast_store::MEMTABLE_BYTES_MAX_DEFAULT, min: 65_536, max: 1_073_741_824 },
            "BYTES", "Store memtable size per keyspace";
        /// Events one producer (a shard, the API, the store) may have
        /// outstanding at one shard before its publications are refused
        /// (the mesh lane: a ring of up to `MESH_QUEUE_CAPACITY`, the rest
        /// an overflow list).
        mesh_lane_events: usize
            = Count<usize> { default: crate::limits::MESH_LANE_EVENTS_DEFAULT, min: crate::limits::MESH_LANE_EVENTS_MIN, max: crate::limits::MESH_LANE_EVENTS_MAX, unit: "events" },
            "N", "Mesh lane capacity per producer and shard";
    }
}

config_table! {
    flags "websocket";
    #[derive(Debug, Clone)]
    pub struct WebSocketConfig, file FileWebSocket {
        listen: SocketAddr = Addr { default: "127.0.0.1:8080" },
            "ADDR", "WebSocket listen address";
        /// HTTP path of the upgrade request; starts with '/'.
        path: String = UrlPath { default: "/connection/websocket" },
            "PATH", "WebSocket upgrade path";
        handshake_timeout as "handshake_timeout_ms": Duration
            = Millis { default: 5000, min: TIMEOUT_MS_MIN, max: TIMEOUT_MS_MAX },
            "MS", "Handshake deadline";
        header_bytes_max: usize = Bytes { default: 8192, min: 512, max: HEAD_BYTES_MAX },
            "BYTES", "Largest handshake request head";
        headers_count_max: usize
            = Count<usize> { default: 64, min: 8, max: 1024, unit: "headers" },
            "N", "Most handshake headers";
        frame_bytes_max: usize = Bytes { default: 65536, min: 128, max: SIZE_BYTES_MAX },
            "BYTES", "Largest inbound frame payload";
        message_bytes_max: usize
            = Bytes { default: 1_048_576, min: 1024, max: SIZE_BYTES_MAX },
            "BYTES", "Largest inbound message";
        outbound_queue_bytes_max: usize
            = Bytes { default: 1_048_576, min: 4096, max: 1024 * 1024 * 1024 },
            "BYTES", "Per-connection send queue bound";
        /// Close with 1013 when the outbound queue stays over its bound, or no
        /// write progress is made, for this long.
        slow_consumer_timeout as "slow_consumer_timeout_ms": Duration
            = Millis { default: 5000, min: TIMEOUT_MS_MIN, max: TIMEOUT_MS_MAX },
            "MS", "Close slow consumers after";
        ping_interval as "ping_interval_ms": Duration
            = Millis { default: 25000, min: TIMEOUT_MS_MIN, max: TIMEOUT_MS_MAX },
            "MS", "Ping interval";
        /// Close with 4007 when part of a frame arrived and nothing more
        /// within this (a stalled or slowloris sender), well before the
        /// heartbeat would.
        read_progress_timeout as "read_progress_timeout_ms": Duration
            = Millis { default: 10000, min: TIMEOUT_MS_MIN, max: TIMEOUT_MS_MAX },
            "MS", "Close if a frame stalls this long";
        /// Close with 4005 when nothing arrives within this after a ping.
        pong_timeout as "pong_timeout_ms": Duration
            = Millis { default: 10000, min: TIMEOUT_MS_MIN, max: TIMEOUT_MS_MAX },
            "MS", "Close if silent this long after a ping";
        /// Connections still in their upgrade from one source address, per
        /// node (each shard enforces its share, rounded up); more are closed
        /// at accept. Upgraded connections do not count.
        handshakes_per_source_max: u32
            = Count<u32> { default: 1024, min: 1, max: 10_000_000, unit: "connections" },
            "N", "Upgrading connections per source address";
        connections_max_per_shard: u32
            = Count<u32> { default: 100_000, min: 1, max: 10_000_000, unit: "items" },
            "N", "Connection slab size per shard";
        subscriptions_max_per_connection: u32
            = Count<u32> { default: 1024, min: 1, max: 1_000_000, unit: "items" },
            "N", "Subscriptions per connection";
        backlog: u32 = Count<u32> { default: 4096, min: 1, max: 1_048_576, unit: "items" },
            "N", "listen(2) backlog";
        /// Lowercased `scheme://host[:port]` origins. Empty means any origin.
        allowed_origins: Vec<String> = Origins {},
            "ORIGIN,...", "Allowed Origin values, comma-separated; empty = any";
        /// Accept permessage-deflate (RFC 7692) from clients that offer it.
        compression: bool = Bool { default: false },
            "BOOL", "Negotiate permessage-deflate with clients that offer it";
        /// Pushes whose frame (header included) is shorter than this go
        /// uncompressed.
        compression_min_bytes: usize = Bytes { default: 256, min: 0, max: SIZE_BYTES_MAX },
            "BYTES", "Smallest push frame sent compressed";
        /// Client `send` commands one connection may make per second, on
        /// average (its token bucket's refill); 0 = no limit.
        send_rate: u32 = Count<u32> { default: 0, min: 0, max: RATE_MAX, unit: "messages per second" },
            "N", "Client sends per second per connection; 0 = no limit";
        /// Sends one connection may make at once with a full bucket.
        send_burst: u32 = Count<u32> { default: 20, min: 1, max: RATE_MAX, unit: "messages" },
            "N", "Client send burst per connection";
        /// As `send_rate`, for all of one user's connections on one shard.
        user_send_rate: u32 = Count<u32> { default: 0, min: 0, max: RATE_MAX, unit: "messages per second" },
            "N", "Client sends per second per user and shard; 0 = no limit";
        user_send_burst: u32 = Count<u32> { default: 20, min: 1, max: RATE_MAX, unit: "messages" },
            "N", "Client send burst per user and shard";
        /// Client `rpc` commands one connection may make per second; 0 = no limit.
        rpc_rate: u32 = Count<u32> { default: 0, min: 0, max: RATE_MAX, unit: "messages per second" },
            "N", "Client rpcs per second per connection; 0 = no limit";
        rpc_burst: u32 = Count<u32> { default: 20, min: 1, max: RATE_MAX, unit: "messages" },
            "N", "Client rpc burst per connection";
        user_rpc_rate: u32 = Count<u32> { default: 0, min: 0, max: RATE_MAX, unit: "messages per second" },
            "N", "Client rpcs per second per user and shard; 0 = no limit";
        user_rpc_burst: u32 = Count<u32> { default: 20, min: 1, max: RATE_MAX, unit: "messages" },
            "N", "Client rpc burst per user and shard";
        /// Presence commands (`presence_watch`, `presence_unwatch`,
        /// `presence_query`) one connection may make per second; 0 = no limit.
        presence_rate: u32 = Count<u32> { default: 0, min: 0, max: RATE_MAX, unit: "commands per second" },
            "N", "Presence commands per second per connection; 0 = no limit";
        presence_burst: u32 = Count<u32> { default: 20, min: 1, max: RATE_MAX, unit: "commands" },
            "N", "Presence command burst per connection";
        /// Commands refused by a rate limit (114) within
        /// `RATE_LIMIT_REFUSALS_WINDOW_MS` at which the connection is
        /// closed with 4008; 0 = never closed for it.
        rate_limit_refusals_max: u32
            = Count<u32> { default: 100, min: 0, max: RATE_MAX, unit: "refusals" },
            "N", "Rate-limit refusals in 10 s before closing with 4008; 0 = never";
        /// New connections one source address may open per second, per
        /// node (each shard enforces its share, rounded up); more are
        /// closed at accept. 0 = no limit.
        accept_rate_per_source: u32
            = Count<u32> { default: 0, min: 0, max: RATE_MAX, unit: "messages per second" },
            "N", "Connection attempts per second per source address; 0 = no limit";
        accept_burst_per_source: u32
            = Count<u32> { default: 100, min: 1, max: RATE_MAX, unit: "connections" },
            "N", "Connection attempt burst per source address";
        /// The `[[proxy]]` that checks every client `send` first; "" for none.
        send_proxy: String = Text { default: Some(""), check: proxy_ref, doc_type: PROXY_REF_DOC },
            "NAME", "[[proxy]] that checks client send; empty = none";
        /// The `[[proxy]]` that answers client `rpc` commands; "" for none
        /// (then `rpc` is refused with 104).
        rpc_proxy: String = Text { default: Some(""), check: proxy_ref, doc_type: PROXY_REF_DOC },
            "NAME", "[[proxy]] that answers client rpc; empty = none";
        /// The `[[proxy]]` asked at every upgrade whether (and as whom) the
        /// connection is let in; "" for none.
        connect_proxy: String = Text { default: Some(""), check: proxy_ref, doc_type: PROXY_REF_DOC },
            "NAME", "[[proxy]] asked at every upgrade; empty = none";
        connect_proxy_mode: ConnectProxyMode
            = Pick<ConnectProxyMode> { default: ConnectProxyMode::AfterToken },
            "MODE", "after_token (token, then backend) or replace_token (backend only)";
        /// Request headers forwarded to the connect proxy (lowercased).
        connect_proxy_headers: Vec<String> = HeaderNames {
            default: &["cookie", "user-agent", "origin", "x-forwarded-for", "x-real-ip"],
        },
            "NAME,...", "Headers forwarded to the connect proxy, comma-separated";
        /// The `[[proxy]]` asked to extend a connection near its expiry;
        /// "" for none (the client sends `refresh` itself).
        refresh_proxy: String = Text { default: Some(""), check: proxy_ref, doc_type: PROXY_REF_DOC },
            "NAME", "[[proxy]] asked to extend expiring connections; empty = none";
        /// How long before a connection's expiry the refresh proxy is first
        /// asked; a failed call is retried until the expiry.
        refresh_proxy_margin as "refresh_proxy_margin_ms": Duration
            = Millis { default: 30_000, min: 1000, max: TIMEOUT_MS_MAX },
            "MS", "Ask the refresh proxy this long before expiry";
    }
}

config_table! {
    flags "api";
    #[derive(Debug, Clone)]
    pub struct ApiConfig, file FileApi {
        listen: SocketAddr = Addr { default: "127.0.0.1:8081" },
            "ADDR", "Server API listen address";
        /// A second API address of this process alone (never shared with
        /// `SO_REUSEPORT`): in a cluster whose processes share `listen`,
        /// where an operator reaches one node (`/health`, `/metrics`,
        /// `/api/drain`). "" for none.
        node_listen: String = Text { default: Some(""), check: optional_addr, doc_type: "address, or `\"\"` for none" },
            "ADDR", "API address of this process alone (cluster); empty = none";
        /// Bearer key for the server API. At least [`API_KEY_BYTES_MIN`] bytes.
        key: Secret = SecretKey { bytes_min: API_KEY_BYTES_MIN },
            "KEY", "Server API key (prefer the env var: flags show in ps)";
        body_bytes_max: usize = Bytes { default: 1_048_576, min: 1024, max: SIZE_BYTES_MAX },
            "BYTES", "Largest API request body";
        header_bytes_max: usize = Bytes { default: 16384, min: 512, max: HEAD_BYTES_MAX },
            "BYTES", "Largest API request head";
        idle_timeout as "idle_timeout_ms": Duration
            = Millis { default: 60000, min: TIMEOUT_MS_MIN, max: TIMEOUT_MS_MAX },
            "MS", "Close idle API connections after";
    }
}

config_table! {
    flags "auth";
    #[derive(Debug, Clone)]
    pub struct AuthConfig, file FileAuth {
        /// HMAC key. At least [`JWT_SECRET_BYTES_MIN`] bytes.
        jwt_secret: Secret = SecretKey { bytes_min: JWT_SECRET_BYTES_MIN },
            "SECRET", "HS256 key (prefer the env var: flags show in ps)";
        /// Fixed by config; never taken from the token header.
        algorithm: JwtAlgorithm = Pick<JwtAlgorithm> { default: JwtAlgorithm::Hs256 },
            "HS256", "JWT algorithm; only HS256";
        /// Clock skew tolerated on `exp`/`nbf`.
        leeway as "leeway_s": Duration = Seconds { default: 5, min: 0, max: 3600 },
            "S", "Clock skew allowed on exp/nbf";
        allow_anonymous: bool = Bool { default: false },
            "BOOL", "Accept connections without a token";
    }
}

config_table! {
    flags "tls";
    #[derive(Debug, Clone)]
    pub struct TlsConfig, file FileTls {
        /// PEM certificate chain, leaf first. Set with `key_file` or not at
        /// all; re-read on SIGHUP.
        cert_file: Option<PathBuf> = FilePath {},
            "PATH", "PEM certificate chain (leaf first); empty = no TLS";
        /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
        key_file: Option<PathBuf> = FilePath {},
            "PATH", "PEM private key of the certificate";
        /// Serve `wss://` on `websocket.listen` when a certificate is set.
        websocket: bool = Bool { default: true },
            "BOOL", "TLS on the WebSocket listener when a certificate is set";
        /// Serve `https://` on `api.listen` when a certificate is set.
        api: bool = Bool { default: true },
            "BOOL", "TLS on the API listener when a certificate is set";
    }
}

config_table! {
    flags "webhook";
    #[derive(Debug, Clone)]
    pub struct WebhookConfig, file FileWebhook {
        /// Where events are POSTed; "" turns webhooks off (no outbox
        /// events are written either).
        url: String = Text { default: Some(""), check: webhook_url, doc_type: "http:// URL, or `\"\"` for off" },
            "URL", "Webhook endpoint (http://); empty = webhooks off";
        /// HMAC-SHA256 key of the signature header; required with `url`.
        secret: Option<Secret> = OptionalSecret { bytes_min: WEBHOOK_SECRET_BYTES_MIN },
            "SECRET", "Webhook HMAC-SHA256 key (prefer the env var: flags show in ps)";
        events: WebhookEvents = WebhookEventList {},
            "EVENT,...", "Webhook events to send, comma-separated";
        /// Per delivery attempt, connecting included.
        timeout as "timeout_ms": Duration
            = Millis { default: 5000, min: TIMEOUT_MS_MIN, max: 60_000 },
            "MS", "Webhook request timeout";
        /// Requests in flight at once (events of one user go one at a time).
        concurrency_max: u32
            = Count<u32> { default: 64, min: 1, max: 100_000, unit: "calls" },
            "N", "Webhook requests in flight at once";
        /// Attempts before an event moves to the dead-letter list.
        attempts_max: u32
            = Count<u32> { default: 10, min: 1, max: 1000, unit: "attempts" },
            "N", "Webhook attempts before dead-lettering an event";
        /// Wait before the first retry; doubles each attempt up to `backoff_max`.
        backoff_min as "backoff_min_ms": Duration
            = Millis { default: 500, min: TIMEOUT_MS_MIN, max: TIMEOUT_MS_MAX },
            "MS", "Webhook first retry delay";
        backoff_max as "backoff_max_ms": Duration
            = Millis { default: 60_000, min: TIMEOUT_MS_MIN, max: TIMEOUT_MS_MAX },
            "MS", "Webhook longest retry delay";
        /// A message in a user's inbox that no device acknowledged within
        /// this is reported as undelivered.
        undelivered_after as "undelivered_after_ms": Duration
            = Millis { default: 30_000, min: TIMEOUT_MS_MIN, max: TIMEOUT_MS_MAX },
            "MS", "Report inbox messages unacknowledged this long";
    }
}

config_table! {
    flags "im";
    #[derive(Debug, Clone)]
    pub struct ImConfig, file FileIm {
        /// The IM layer (`docs/im.md`): its commands, and the `dm` and
        /// `grp` namespaces reserved for them.
        enabled: bool = Bool { default: false },
            "BOOL", "IM commands on; reserves the dm and grp namespaces";
        /// Longest text of a `text` message, in bytes.
        text_bytes_max: usize
            = Bytes { default: 4096, min: 1, max: IM_DATA_BYTES_MAX },
            "BYTES", "Longest IM text message";
        /// Longest data of a `custom` message, in bytes.
        custom_bytes_max: usize
            = Bytes { default: 16_384, min: 1, max: IM_DATA_BYTES_MAX },
            "BYTES", "Longest IM custom message data";
        /// Longest URL (`url`, `thumb_url`) of an `attachment` message.
        attachment_url_bytes_max: usize
            = Bytes { default: 2048, min: 1, max: IM_DATA_BYTES_MAX },
            "BYTES", "Longest IM attachment URL";
        /// Most conversations in one sync message at connect.
        sync_convs_max: usize
            = Count<usize> { default: 500, min: 1, max: 10_000, unit: "conversations" },
            "N", "Most conversations in one IM sync message";
        /// Conversations one user may have; a message that would start one
        /// more for either user is refused (126).
        conversations_per_user_max: usize
            = Count<usize> { default: 10_000, min: 1, max: 1_000_000, unit: "conversations" },
            "N", "Most conversations per user";
        /// Users one connection may watch for presence (`presence_watch`).
        presence_watch_max: u32
            = Count<u32> { default: 1000, min: 1, max: 100_000, unit: "users" },
            "N", "Users one connection may watch for presence";
        /// A user whose last connection closed is reported offline only
        /// after this long; a reconnect within it is never reported.
        presence_offline_grace as "presence_offline_grace_ms": Duration
            = Millis { default: 5000, min: 0, max: 3_600_000 },
            "MS", "Wait before reporting a user offline (flap damping)";
        /// Least time between two `typing` signals one connection sends to
        /// one conversation; those between are dropped.
        typing_interval as "typing_interval_ms": Duration
            = Millis { default: 3000, min: 0, max: 60_000 },
            "MS", "Least time between typing signals per connection and conversation";
        /// Typing signals one connection may send a second, over all its
        /// conversations (a token bucket), on top of `typing_interval`.
        typing_rate: u32
            = Count<u32> { default: 2, min: 1, max: TYPING_RATE_MAX, unit: "signals" },
            "N", "Typing signals per second per connection, all conversations";
        /// The size of that bucket: signals one connection may send at once.
        typing_burst: u32
            = Count<u32> { default: 10, min: 1, max: TYPING_RATE_MAX, unit: "signals" },
            "N", "Typing signals one connection may send at once";
        /// Groups up to this many members get typing signals; larger ones
        /// none (their members are read once per cache period, in one page).
        group_typing_members_max: u32
            = Count<u32> { default: 500, min: 0, max: GROUP_TYPING_MEMBERS_CEILING, unit: "members" },
            "N", "Largest group whose typing signals are delivered";
        /// Members one group may have unless the API set its own limit
        /// (the store's `group_members_max`); past it: 124.
        group_members_max: u32
            = Count<u32> {
                default: ringcast_store::GROUP_MEMBERS_MAX_DEFAULT,
                min: 2,
                max: ringcast_store::GROUP_MEMBERS_MAX_CEILING,
                unit: "members",
            },
            "N", "Most members of a group";
        /// Groups one user may be a member of (the store's
        /// `groups_per_user_max`); a change past it: 126.
        groups_per_user_max: usize
            = Count<usize> {
                default: ringcast_store::GROUPS_PER_USER_MAX_DEFAULT,
                min: 1,
                max: 100_000,
                unit: "groups",
            },
            "N", "Most groups per user";
        /// Whether plain members of a new group may add users, when
        /// `group_create` does not say.
        members_can_invite: bool = Bool { default: false },
            "BOOL", "Plain members of new groups may add users";
        /// Groups up to this many members get read and delivery receipts
        /// pushed to their members; larger ones only answer `receipts`.
        group_receipts_members_max: u32
            = Count<u32> { default: 100, min: 0, max: 10_000, unit: "members" },
            "N", "Largest group whose receipts are pushed to its members";
        /// Most entries one `catchup` replays per conversation; past it the
        /// result says `truncated` and the client pages with `history`.
        catchup_per_conv_max: u32
            = Count<u32> { default: 50, min: 1, max: 10_000, unit: "entries" },
            "N", "Most entries a catchup replays per conversation";
        /// How long after sending a user may recall its own message
        /// (owners and admins of a group, and the API as the system, at
        /// any time).
        recall_window as "recall_window_s": Duration
            = Seconds { default: 120, min: 0, max: IM_REWRITE_WINDOW_S_MAX },
            "SECONDS", "How long a sender may recall its message";
        /// How long after sending a user may edit its own message.
        edit_window as "edit_window_s": Duration
            = Seconds { default: 900, min: 0, max: IM_REWRITE_WINDOW_S_MAX },
            "SECONDS", "How long a sender may edit its message";
        /// The `[[proxy]]` that decides new DMs to users whose DM policy is
        /// `backend`; "" for none (then `backend` cannot be set, and such
        /// users take no new DMs).
        dm_policy_proxy: String = Text { default: Some(""), check: proxy_ref, doc_type: PROXY_REF_DOC },
            "NAME", "[[proxy]] that decides new DMs to backend-policy users";
        /// How long the backend's answer for a (sender, recipient) pair is
        /// reused.
        dm_policy_cache as "dm_policy_cache_ms": Duration
            = Millis { default: 60_000, min: 0, max: 86_400_000 },
            "MS", "How long a DM policy backend answer is reused per pair";
        /// Most edits of one message.
        edits_max: u32
            = Count<u32> { default: 10, min: 1, max: 1000, unit: "edits" },
            "N", "Most edits of one IM message";
        /// Whether a user who left a group (or was removed, or saw it
        /// dissolved) still reads its history up to its removal; off, such
        /// a `history` is refused with 123.
        history_after_leave: bool = Bool { default: false },
            "BOOL", "Former members read a group's history up to their removal";
        /// Entries each DM's stream keeps (the newest); 0 keeps all.
        dm_retention_count: u64
            = Count<u64> { default: 0, min: 0, max: 10_000_000, unit: "entries" },
            "N", "Entries kept per DM; 0 keeps all";
        /// DM entries older than this are trimmed; 0: no age limit.
        dm_retention_age as "dm_retention_age_s": Duration
            = Seconds { default: 0, min: 0, max: RETENTION_S_MAX },
            "SECONDS", "Age past which DM entries are trimmed; 0 keeps all";
        /// Entries each group's stream keeps (the newest); 0 keeps all.
        group_retention_count: u64
            = Count<u64> { default: 0, min: 0, max: 10_000_000, unit: "entries" },
            "N", "Entries kept per group; 0 keeps all";
        /// Group entries older than this are trimmed; 0: no age limit.
        group_retention_age as "group_retention_age_s": Duration
            = Seconds { default: 0, min: 0, max: RETENTION_S_MAX },
            "SECONDS", "Age past which group entries are trimmed; 0 keeps all";
    }
}

config_table! {
    file_only "namespace";
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Namespace, file FileNamespace {
        /// `[a-z0-9_-]+`, or "" for the default namespace (channels without ':').
        name: String = NamespaceName {};
        subscribe: SubscribePolicy = Pick<SubscribePolicy> { default: SubscribePolicy::Public };
        publish: PublishPolicy = Pick<PublishPolicy> { default: PublishPolicy::ServerOnly };
        history: bool = Bool { default: false };
        durability: Durability = Pick<Durability> { default: Durability::Buffered };
        retention_count: u64
            = Count<u64> { default: 1000, min: 1, max: 10_000_000, unit: "" };
        retention_age as "retention_age_s": Duration
            = Seconds { default: 86_400, min: 1, max: RETENTION_S_MAX };
        /// Client publishes to this namespace one connection may make per
        /// second, on average; 0 = no limit.
        publish_rate: u32 = Count<u32> { default: 0, min: 0, max: RATE_MAX, unit: "messages per second" };
        publish_burst: u32 = Count<u32> { default: 20, min: 1, max: RATE_MAX, unit: "messages" };
        /// As `publish_rate`, for all of one user's connections on one shard.
        user_publish_rate: u32 = Count<u32> { default: 0, min: 0, max: RATE_MAX, unit: "messages per second" };
        user_publish_burst: u32 = Count<u32> { default: 20, min: 1, max: RATE_MAX, unit: "messages" };
        /// The `[[proxy]]` that checks client publishes to the namespace.
        publish_proxy: String = Text { default: Some(""), check: proxy_ref, doc_type: PROXY_REF_DOC };
        /// The `[[proxy]]` that checks client subscribes to the namespace.
        subscribe_proxy: String = Text { default: Some(""), check: proxy_ref, doc_type: PROXY_REF_DOC };
    }
}

config_table! {
    file_only "proxy";
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Proxy, file FileProxy {
        /// Unique; namespaces and `websocket.*_proxy` refer to it.
        name: String = Text { default: None, check: proxy_name, doc_type: "string, **required**" };
        url: String = Text { default: None, check: proxy_url, doc_type: "http:// URL, **required**" };
        /// Per call, waiting for a free connection included.
        timeout as "timeout_ms": Duration
            = Millis { default: 1000, min: TIMEOUT_MS_MIN, max: 60_000 };
        /// Calls in flight to this backend at once; more wait (within
        /// their timeout).
        concurrency_max: u32
            = Count<u32> { default: 64, min: 1, max: 100_000, unit: "calls" };
    }
}

config_table! {
    flags "cluster";
    #[derive(Debug, Clone)]
    pub struct ClusterConfig, file FileCluster {
        /// The NATS server the engine processes of one cluster share
        /// (docs/cluster.md); "" runs a single node with no cluster.
        nats_url: String = Text { default: Some(""), check: nats_url, doc_type: "nats:// URL, or `\"\"` for a single node" },
            "URL", "NATS server of the cluster (nats://host:port); empty = single node";
        /// First token of every subject the cluster uses, so several
        /// clusters can share one NATS server.
        subject_prefix: String = Text { default: Some("rc"), check: subject_token, doc_type: "subject token: 1 to 32 of `[A-Za-z0-9_-]`" },
            "TOKEN", "First token of the cluster's NATS subjects";
        /// How often a node tells the others it is alive.
        heartbeat as "heartbeat_ms": Duration
            = Millis { default: 1000, min: 100, max: 60_000 },
            "MS", "Cluster heartbeat interval";
        /// A node not heard from for this long is taken for dead: its
        /// users' presence and routes are dropped.
        node_timeout as "node_timeout_ms": Duration
            = Millis { default: 5000, min: 200, max: 600_000 },
            "MS", "Silence after which a node counts as dead";
        /// Channels are hashed into this many NATS subjects; a node
        /// subscribes the buckets of its channels (a power of two).
        channel_buckets: u32
            = Count<u32> { default: 4096, min: 16, max: CHANNEL_BUCKETS_MAX, unit: "subjects" },
            "N", "NATS subjects the channels are hashed into (power of two)";
        /// How long a request to another node (a forwarded append or read,
        /// a query) may take before it fails.
        request_timeout as "request_timeout_ms": Duration
            = Millis { default: 2000, min: TIMEOUT_MS_MIN, max: 60_000 },
            "MS", "Deadline of a request to another node";
        /// Store partitions of the cluster: a stream lives in partition
        /// `fnv1a64(name) mod stores`, owned by the node whose `node_id`
        /// is that number. Never change it while data exists.
        stores: u32
            = Count<u32> { default: 1, min: 1, max: STORES_MAX, unit: "partitions" },
            "N", "Store partitions of the cluster (nodes 0..N-1 own one each)";
        /// The store partition that holds every IM record (conversations,
        /// lists, groups, read positions) when `im.enabled`: its owner
        /// runs the IM layer's store calls for the whole cluster. Below
        /// `stores`; never change it while data exists.
        im_partition: u32
            = Count<u32> { default: 0, min: 0, max: STORES_MAX - 1, unit: "partition" },
            "P", "Store partition holding the IM layer's records (below cluster.stores)";
    }
}

config_table! {
    flags "log";
    #[derive(Debug, Clone)]
    pub struct LogConfig, file FileLog {
        /// `tracing_subscriber::EnvFilter` directives, stored unparsed.
        level: String = Filter { default: "info" },
            "FILTER", "tracing EnvFilter directives";
        format: LogFormat = Pick<LogFormat> { default: LogFormat::Text },
            "text|json", "Log format";
    }
}

/// Every key of every table, in `--help` order.
pub(super) fn all_keys() -> Vec<KeyInfo> {
    [
        ServerConfig::keys(),
        WebSocketConfig::keys(),
        ApiConfig::keys(),
        AuthConfig::keys(),
        TlsConfig::keys(),
        WebhookConfig::keys(),
        ImConfig::keys(),
        ClusterConfig::keys(),
        Namespace::keys(),
        Proxy::keys(),
        LogConfig::keys(),
    ]
    .concat()
}

/// Both listeners bind `SO_REUSEPORT` sockets, so the same address twice
/// would not fail at bind time: the two services would share connections.
/// Port 0 picks two different ports, so tests may use it for both.
pub(super) fn check_listeners(
    layers: &Layers<'_>,
    websocket: &WebSocketConfig,
    api: &ApiConfig,
) -> Result<(), ConfigError> {
    if api.listen == websocket.listen && api.listen.port() != 0 {
        return Err(invalid(
            "api.listen",
            layers.origin("api.listen"),
            format!(
                "must differ from websocket.listen (both are {})",
                api.listen
            ),
        ));
    }
    if let Ok(node) = api.node_listen.parse::<SocketAddr>() {
        if node.port() != 0 && (node == api.listen || node == websocket.listen) {
            return Err(invalid(
                "api.node_listen",
                layers.origin("api.node_listen"),
                format!(
                    "must differ from api.listen and websocket.listen (got {node}): it is this \
                     process's own address"
                ),
            ));
        }
    }
    Ok(())
}

/// `tls.cert_file` and `tls.key_file` go together, and a certificate must
/// serve at least one listener. The files themselves are read by
/// `crate::tls` at startup (errors name the key and the file there).
pub(super) fn check_tls(layers: &Layers<'_>, tls: &TlsConfig) -> Result<(), ConfigError> {
    match (&tls.cert_file, &tls.key_file) {
        (Some(_), None) => {
            return Err(invalid(
                "tls.key_file",
                layers.origin("tls.cert_file"),
                "must be set when tls.cert_file is: the certificate needs its private key"
                    .to_owned(),
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "tls.cert_file",
                layers.origin("tls.key_file"),
                "must be set when tls.key_file is: the key needs its certificate".to_owned(),
            ))
        }
        (Some(_), Some(_)) if !tls.websocket && !tls.api => {
            return Err(invalid(
                "tls.websocket",
                layers.origin("tls.websocket"),
                "and tls.api are both false while tls.cert_file is set: the certificate would \
                 serve nothing; turn one on or unset the files"
                    .to_owned(),
            ))
        }
        _ => {}
    }
    Ok(())
}

/// `webhook.url` needs `webhook.secret` (every request is signed), and the
/// backoff range must not be upside down.
pub(super) fn check_webhook(
    layers: &Layers<'_>,
    webhook: &WebhookConfig,
) -> Result<(), ConfigError> {
    if !webhook.url.is_empty() && webhook.secret.is_none() {
        return Err(invalid(
            "webhook.secret",
            layers.origin("webhook.url"),
            format!(
                "must be set (at least {WEBHOOK_SECRET_BYTES_MIN} bytes) when webhook.url is: \
                 every webhook request is signed with it"
            ),
        ));
    }
    if webhook.backoff_min > webhook.backoff_max {
        return Err(invalid(
            "webhook.backoff_min_ms",
            layers.origin("webhook.backoff_min_ms"),
            format!(
                "must be at most webhook.backoff_max_ms ({} ms; got {} ms)",
                webhook.backoff_max.as_millis(),
                webhook.backoff_min.as_millis()
            ),
        ));
    }
    Ok(())
}

/// The `[[namespace]]` entries in file order. Each entry is resolved by the
/// table; names must also be unique, and "owner" needs a `<namespace>:` part.
pub(super) fn resolve_namespaces(
    file_path: Option<&Path>,
    entries: Vec<FileNamespace>,
) -> Result<Vec<Namespace>, ConfigError> {
    let mut layers = Layers::file_only(file_path);
    if entries.len() > NAMESPACES_MAX {
        return Err(invalid(
            "namespace",
            layers.file_origin(),
            format!(
                "may have at most {NAMESPACES_MAX} entries (got {})",
                entries.len()
            ),
        ));
    }
    let mut namespaces: Vec<Namespace> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let table = format!("namespace[{index}]");
        let namespace = Namespace::resolve(&mut layers, &table, entry)?;
        if namespaces.iter().any(|other| other.name == namespace.name) {
            return Err(invalid(
                &format!("{table}.name"),
                layers.file_origin(),
                format!(
                    "must be unique, but {:?} is configured twice",
                    namespace.name
                ),
            ));
        }
        if namespace.subscribe == SubscribePolicy::Owner && namespace.name.is_empty() {
            return Err(invalid(
                &format!("{table}.subscribe"),
                layers.file_origin(),
                "cannot be \"owner\" for the default namespace \"\": owner compares the part after \
                 '<namespace>:' with the user id"
                    .to_owned(),
            ));
        }
        namespaces.push(namespace);
    }
    assert!(namespaces.len() <= NAMESPACES_MAX);
    Ok(namespaces)
}

/// Most `[[proxy]]` tables.
pub(super) const PROXIES_MAX: usize = 64;

/// The `[[proxy]]` entries in file order, with unique names.
pub(super) fn resolve_proxies(
    file_path: Option<&Path>,
    entries: Vec<FileProxy>,
) -> Result<Vec<Proxy>, ConfigError> {
    let mut layers = Layers::file_only(file_path);
    if entries.len() > PROXIES_MAX {
        return Err(invalid(
            "proxy",
            layers.file_origin(),
            format!(
                "may have at most {PROXIES_MAX} entries (got {})",
                entries.len()
            ),
        ));
    }
    let mut proxies: Vec<Proxy> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let table = format!("proxy[{index}]");
        let proxy = Proxy::resolve(&mut layers, &table, entry)?;
        if proxies.iter().any(|other| other.name == proxy.name) {
            return Err(invalid(
                &format!("{table}.name"),
                layers.file_origin(),
                format!("must be unique, but {:?} is configured twice", proxy.name),
            ));
        }
        proxies.push(proxy);
    }
    Ok(proxies)
}

/// Every proxy an event names is a `[[proxy]]` entry.
pub(super) fn check_proxy_refs(
    layers: &Layers<'_>,
    file_path: Option<&Path>,
    websocket: &WebSocketConfig,
    im: &ImConfig,
    namespaces: &[Namespace],
    proxies: &[Proxy],
) -> Result<(), ConfigError> {
    let known = |name: &str| name.is_empty() || proxies.iter().any(|p| p.name == name);
    let unknown = |key: String, origin, name: &str| {
        let names: Vec<&str> = proxies.iter().map(|p| p.name.as_str()).collect();
        invalid(
            &key,
            origin,
            format!("names no [[proxy]] entry (got {name:?}; configured: {names:?})"),
        )
    };
    for (key, name) in [
        ("websocket.send_proxy", &websocket.send_proxy),
        ("websocket.rpc_proxy", &websocket.rpc_proxy),
        ("websocket.connect_proxy", &websocket.connect_proxy),
        ("websocket.refresh_proxy", &websocket.refresh_proxy),
        ("im.dm_policy_proxy", &im.dm_policy_proxy),
    ] {
        if !known(name) {
            return Err(unknown(key.to_owned(), layers.origin(key), name));
        }
    }
    if websocket.connect_proxy_mode == ConnectProxyMode::ReplaceToken
        && websocket.connect_proxy.is_empty()
    {
        let key = "websocket.connect_proxy_mode";
        return Err(invalid(
            key,
            layers.origin(key),
            "is \"replace_token\" but websocket.connect_proxy is empty: nothing would \
             check who connects"
                .to_owned(),
        ));
    }
    if let Some(refresh) = proxies.iter().find(|p| p.name == websocket.refresh_proxy) {
        // A margin within the call's timeout leaves no time to retry a
        // failed call before the expiry closes the connection.
        if websocket.refresh_proxy_margin <= refresh.timeout {
            let key = "websocket.refresh_proxy_margin_ms";
            return Err(invalid(
                key,
                layers.origin(key),
                format!(
                    "must be longer than the refresh proxy's proxy.timeout_ms ({} ms for {:?})",
                    refresh.timeout.as_millis(),
                    refresh.name
                ),
            ));
        }
    }
    let file_layers = Layers::file_only(file_path);
    for (index, namespace) in namespaces.iter().enumerate() {
        for (key, name) in [
            ("publish_proxy", &namespace.publish_proxy),
            ("subscribe_proxy", &namespace.subscribe_proxy),
        ] {
            if !known(name) {
                return Err(unknown(
                    format!("namespace[{index}].{key}"),
                    file_layers.file_origin(),
                    name,
                ));
            }
        }
    }
    Ok(())
}

/// The cluster keys that depend on each other: the node timeout must
/// span a few heartbeats (one lost heartbeat must not kill a node), and
/// the buckets are a power of two (a mask picks one).
pub(super) fn check_cluster(
    layers: &Layers<'_>,
    cluster: &ClusterConfig,
    im: &ImConfig,
) -> Result<(), ConfigError> {
    if !cluster.nats_url.is_empty() && im.enabled && cluster.im_partition >= cluster.stores {
        return Err(invalid(
            "cluster.im_partition",
            layers.origin("cluster.im_partition"),
            format!(
                "must be below cluster.stores ({}) for a node to own it (got {})",
                cluster.stores, cluster.im_partition
            ),
        ));
    }
    if !cluster.channel_buckets.is_power_of_two() {
        return Err(invalid(
            "cluster.channel_buckets",
            layers.origin("cluster.channel_buckets"),
            format!("must be a power of two (got {})", cluster.channel_buckets),
        ));
    }
    if cluster.node_timeout < cluster.heartbeat * 2 {
        return Err(invalid(
            "cluster.node_timeout_ms",
            layers.origin("cluster.node_timeout_ms"),
            format!(
                "must be at least twice cluster.heartbeat_ms ({} ms; got {} ms)",
                cluster.heartbeat.as_millis(),
                cluster.node_timeout.as_millis()
            ),
        ));
    }
    Ok(())
}
