//! Configuration: command line, environment and TOML file, resolved into one
//! validated, typed [`Config`] before any shard starts.
//!
//! Two stages, as in ripgrep's `lowargs`/`hiargs`:
//!
//! 1. [`RawArgs`]: what the operator typed. Long flags parsed by clap
//!    ([`RawFlags`]) plus a snapshot of the `RINGCAST_*` environment
//!    variables. Everything is still a string; no syscalls beyond reading
//!    argv and the environment.
//! 2. [`Config`]: built by [`Config::load`]. It reads the TOML file
//!    ([`FileConfig`], `deny_unknown_fields` everywhere), layers the values
//!    per key with the precedence **flag > env > file > default**, validates
//!    every value against a stated range, and resolves `server.shards = 0` to
//!    the number of available cores. Every error names the key, where the
//!    value came from (file path, `--flag` or env var) and what is allowed.
//!
//! Environment variables are looked up here, not by clap's `env` feature, so
//! that the environment is an injectable map: tests pass their own map via
//! [`RawArgs::try_parse_from_with_env`] and never touch the process
//! environment (which is shared by all test threads). As with clap, an empty
//! environment variable counts as unset. A `RINGCAST_<SECTION>_*` variable
//! for a known section that matches no key is rejected, the environment
//! counterpart of `deny_unknown_fields`; other `RINGCAST_*` names are left
//! alone so tools such as loadgen may use the prefix too.
//!
//! The key reference for operators is `docs/config.md`; keep it in sync with
//! the `override_flags!` table and the `resolve_*` functions below.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The config file format version this build reads. A file may say
/// `version = 1` at top level; a missing `version` means 1.
pub const CONFIG_VERSION: u64 = 1;

/// Upper bound for `server.shards` and for the resolved core count.
pub const SHARDS_MAX: u16 = ringcast_protocol::limits::SHARDS_MAX as u16;

/// Highest `server.node_id`. Node ids are packed into 6 bits of message ids.
pub const NODE_ID_MAX: u8 = ringcast_protocol::limits::NODE_ID_MAX;

/// Minimum length of `auth.jwt_secret`: 256 bits for HS256 (RFC 7518 §3.2).
pub const JWT_SECRET_BYTES_MIN: usize = 32;

/// Minimum length of `api.key`.
pub const API_KEY_BYTES_MIN: usize = 16;

/// The namespace name that the engine owns for `user:<id>` personal channels.
pub const RESERVED_NAMESPACE_USER: &str = "user";

/// Longest namespace name.
pub const NAMESPACE_NAME_BYTES_MAX: usize = 64;

/// Most `[[namespace]]` tables; namespace lookup is a linear scan.
pub const NAMESPACES_MAX: usize = 256;

/// Timeouts are driven by a wheel with 10 ms ticks; shorter values cannot be
/// honored, so they are rejected rather than silently rounded.
const TIMEOUT_MS_MIN: u64 = 10;
const TIMEOUT_MS_MAX: u64 = 86_400_000;
const SIZE_BYTES_MAX: u64 = 64 * 1024 * 1024;

const _: () = assert!(SHARDS_MAX as u32 <= u16::MAX as u32);
const _: () = assert!(JWT_SECRET_BYTES_MIN >= 32);
const _: () = assert!(TIMEOUT_MS_MIN < TIMEOUT_MS_MAX);

/// The validated configuration. Built only by [`Config::load`],
/// [`Config::from_toml_str`] or [`Config::test_min`].
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub websocket: WebSocketConfig,
    pub api: ApiConfig,
    pub auth: AuthConfig,
    /// `[[namespace]]` tables in file order. Names are unique.
    pub namespaces: Vec<Namespace>,
    pub log: LogConfig,
    /// The file the config was read from, if any (for the startup log line).
    pub file_path: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Number of shard threads, resolved (never 0).
    pub shards: ShardCount,
    /// Pin shard `i` to core `i`.
    pub pin_cores: bool,
    pub driver: Driver,
    pub node_id: NodeId,
    /// Directory of the embedded store. Created by the store, not here.
    pub data_dir: PathBuf,
    /// How long shutdown waits for connections to drain before closing them.
    pub shutdown_grace: Duration,
    /// How long a durable publish's `client_msg_id` is remembered: a retry
    /// inside it is stored once and answered with the original ids.
    pub dedup_window: Duration,
}

#[derive(Debug, Clone)]
pub struct WebSocketConfig {
    pub listen: SocketAddr,
    /// HTTP path of the upgrade request; starts with '/'.
    pub path: String,
    pub handshake_timeout: Duration,
    pub header_bytes_max: usize,
    pub headers_count_max: usize,
    pub frame_bytes_max: usize,
    pub message_bytes_max: usize,
    pub outbound_queue_bytes_max: usize,
    /// Close with 1013 when the outbound queue stays over its bound, or no
    /// write progress is made, for this long.
    pub slow_consumer_timeout: Duration,
    pub ping_interval: Duration,
    /// Close with 4005 when nothing arrives within this after a ping.
    pub pong_timeout: Duration,
    pub connections_max_per_shard: u32,
    pub subscriptions_max_per_connection: u32,
    pub backlog: u32,
    /// Lowercased `scheme://host[:port]` origins. Empty means any origin.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Bearer key for the server API. At least [`API_KEY_BYTES_MIN`] bytes.
    pub key: Secret,
    pub body_bytes_max: usize,
    pub header_bytes_max: usize,
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// HMAC key. At least [`JWT_SECRET_BYTES_MIN`] bytes.
    pub jwt_secret: Secret,
    /// Fixed by config; never taken from the token header.
    pub algorithm: JwtAlgorithm,
    /// Clock skew tolerated on `exp`/`nbf`.
    pub leeway: Duration,
    pub allow_anonymous: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// `[a-z0-9_-]+`, or "" for the default namespace (channels without ':').
    pub name: String,
    pub subscribe: SubscribePolicy,
    pub publish: PublishPolicy,
    pub history: bool,
    pub durability: Durability,
    pub retention_count: u64,
    pub retention_age: Duration,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `tracing_subscriber::EnvFilter` directives, stored unparsed.
    pub level: String,
    pub format: LogFormat,
}

/// Number of shards: 1..=[`SHARDS_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardCount(NonZeroU16);

/// This node's id in a cluster: 0..=[`NODE_ID_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeId(u8);

/// A secret string. `Debug` never prints it, so `{:?}` of a [`Config`] is
/// safe to log.
#[derive(Clone)]
pub struct Secret(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring when the kernel supports it, else epoll.
    Auto,
    IoUring,
    Epoll,
}

/// The only supported algorithm. An enum so that adding one is a type change
/// every match has to face.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    Hs256,
}

/// Who may subscribe to a namespace's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribePolicy {
    /// `"public"`: any authenticated client.
    Public,
    /// `"owner"`: only when the part after `<namespace>:` equals the user id.
    Owner,
    /// `"none"`: clients cannot subscribe; only the server API.
    ServerOnly,
}

/// Who may publish to a namespace's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishPolicy {
    /// `"none"`: only the server API.
    ServerOnly,
    /// `"subscribers"`: clients subscribed to the channel.
    Subscribers,
    /// `"any"`: any authenticated client.
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Fsync before acknowledging a publish.
    Sync,
    /// Acknowledge once queued to the store.
    Buffered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where a value came from; every validation error names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag(String),
    Env(String),
    File(PathBuf),
    Default,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config error: cannot read config file {path} {given_by}: {source}")]
    Read {
        path: PathBuf,
        given_by: Origin,
        #[source]
        source: std::io::Error,
    },
    #[error("config error in {path}{location}: {message}")]
    Parse {
        path: PathBuf,
        /// " (line L, column C, in [section])", or empty when toml gave no span.
        location: String,
        message: String,
    },
    #[error("config error: {key} {problem} {origin}")]
    Invalid {
        key: String,
        origin: Origin,
        problem: String,
    },
    #[error(
        "config error: {key} is required and was not set; set it in the config file{file_hint}, \
         with {flag}=..., or with the environment variable {env}"
    )]
    Missing {
        key: String,
        flag: String,
        env: String,
        /// " (PATH)" or " (none was given: pass --config=PATH)".
        file_hint: String,
    },
    #[error(
        "config error: unknown environment variable {name}; RINGCAST_<SECTION>_<KEY> variables \
         must name a key listed in docs/config.md"
    )]
    UnknownEnv { name: String },
    #[error("config error: environment variable {name} is not valid UTF-8")]
    EnvNotUtf8 { name: String },
    #[error(
        "config error: server.shards = 0 asks for one shard per core, but the core count is \
         unknown ({source}); set server.shards explicitly"
    )]
    Cores {
        #[source]
        source: std::io::Error,
    },
}

/// Stage one: flags and environment, unvalidated. Does not implement
/// `clap::Parser` itself so that no caller can parse flags and forget the
/// environment.
#[derive(Debug, Clone, Default)]
pub struct RawArgs {
    pub flags: RawFlags,
    /// `RINGCAST_*` variables only, values as given.
    pub env: BTreeMap<String, String>,
    /// `RINGCAST_*` variables whose value is not UTF-8 (rejected at load).
    pub env_not_utf8: Vec<String>,
}

/// Declares the override flags once: the clap field, the dotted key, the env
/// var and the help text. The `flag_table_matches_key_names` test checks that
/// the flag and env names are derived from the key as documented.
macro_rules! override_flags {
    ($( $field:ident: $key:literal, $env:literal, $value_name:literal, $help:literal; )*) => {
        /// Long flags. Every key flag is `--<section>-<key>=VALUE` and can
        /// also be set with `RINGCAST_<SECTION>_<KEY>`.
        #[derive(Debug, Clone, Default, clap::Parser)]
        #[command(
            name = "ringcast",
            version,
            about = "Ringcast: thread-per-core io_uring WebSocket push engine",
            after_help = "Precedence per key: flag > environment variable > config file > \
                          built-in default. Flags take the form --key=value and may be given \
                          once. See docs/config.md for every key."
        )]
        pub struct RawFlags {
            /// Path of the TOML config file. Without one, built-in defaults are used
            /// (and api.key and auth.jwt_secret must come from flags or env).
            #[arg(long, value_name = "PATH", require_equals = true,
                  help = "Path of the TOML config file [env: RINGCAST_CONFIG]")]
            pub config: Option<PathBuf>,
            $(
                #[arg(long, value_name = $value_name, require_equals = true,
                      help = concat!($help, " [", $key, "; env: ", $env, "]"))]
                pub $field: Option<String>,
            )*
        }

        /// Every key that has a flag and an env var, as `section.key`.
        pub const OVERRIDE_KEYS: &[&str] = &[$($key),*];

        impl RawFlags {
            /// The flag value for a dotted key, if the flag was given.
            fn get(&self, key: &str) -> Option<&str> {
                match key {
                    $($key => self.$field.as_deref(),)*
                    _ => panic!("config key {key:?} has no override flag; add it to override_flags!"),
                }
            }
        }
    };
}

override_flags! {
    server_shards: "server.shards", "RINGCAST_SERVER_SHARDS", "N", "Shard threads; 0 = one per core";
    server_pin_cores: "server.pin_cores", "RINGCAST_SERVER_PIN_CORES", "BOOL", "Pin each shard to a core";
    server_driver: "server.driver", "RINGCAST_SERVER_DRIVER", "auto|io_uring|epoll", "I/O driver";
    server_node_id: "server.node_id", "RINGCAST_SERVER_NODE_ID", "0..63", "Node id";
    server_data_dir: "server.data_dir", "RINGCAST_SERVER_DATA_DIR", "PATH", "Store directory";
    server_shutdown_grace_ms: "server.shutdown_grace_ms", "RINGCAST_SERVER_SHUTDOWN_GRACE_MS", "MS", "Drain time at shutdown";
    server_dedup_window_ms: "server.dedup_window_ms", "RINGCAST_SERVER_DEDUP_WINDOW_MS", "MS", "client_msg_id dedup window";
    websocket_listen: "websocket.listen", "RINGCAST_WEBSOCKET_LISTEN", "ADDR", "WebSocket listen address";
    websocket_path: "websocket.path", "RINGCAST_WEBSOCKET_PATH", "PATH", "WebSocket upgrade path";
    websocket_handshake_timeout_ms: "websocket.handshake_timeout_ms", "RINGCAST_WEBSOCKET_HANDSHAKE_TIMEOUT_MS", "MS", "Handshake deadline";
    websocket_header_bytes_max: "websocket.header_bytes_max", "RINGCAST_WEBSOCKET_HEADER_BYTES_MAX", "BYTES", "Largest handshake request head";
    websocket_headers_count_max: "websocket.headers_count_max", "RINGCAST_WEBSOCKET_HEADERS_COUNT_MAX", "N", "Most handshake headers";
    websocket_frame_bytes_max: "websocket.frame_bytes_max", "RINGCAST_WEBSOCKET_FRAME_BYTES_MAX", "BYTES", "Largest inbound frame payload";
    websocket_message_bytes_max: "websocket.message_bytes_max", "RINGCAST_WEBSOCKET_MESSAGE_BYTES_MAX", "BYTES", "Largest inbound message";
    websocket_outbound_queue_bytes_max: "websocket.outbound_queue_bytes_max", "RINGCAST_WEBSOCKET_OUTBOUND_QUEUE_BYTES_MAX", "BYTES", "Per-connection send queue bound";
    websocket_slow_consumer_timeout_ms: "websocket.slow_consumer_timeout_ms", "RINGCAST_WEBSOCKET_SLOW_CONSUMER_TIMEOUT_MS", "MS", "Close slow consumers after";
    websocket_ping_interval_ms: "websocket.ping_interval_ms", "RINGCAST_WEBSOCKET_PING_INTERVAL_MS", "MS", "Ping interval";
    websocket_pong_timeout_ms: "websocket.pong_timeout_ms", "RINGCAST_WEBSOCKET_PONG_TIMEOUT_MS", "MS", "Close if silent this long after a ping";
    websocket_connections_max_per_shard: "websocket.connections_max_per_shard", "RINGCAST_WEBSOCKET_CONNECTIONS_MAX_PER_SHARD", "N", "Connection slab size per shard";
    websocket_subscriptions_max_per_connection: "websocket.subscriptions_max_per_connection", "RINGCAST_WEBSOCKET_SUBSCRIPTIONS_MAX_PER_CONNECTION", "N", "Subscriptions per connection";
    websocket_backlog: "websocket.backlog", "RINGCAST_WEBSOCKET_BACKLOG", "N", "listen(2) backlog";
    websocket_allowed_origins: "websocket.allowed_origins", "RINGCAST_WEBSOCKET_ALLOWED_ORIGINS", "ORIGIN,...", "Allowed Origin values, comma-separated; empty = any";
    api_listen: "api.listen", "RINGCAST_API_LISTEN", "ADDR", "Server API listen address";
    api_key: "api.key", "RINGCAST_API_KEY", "KEY", "Server API key (prefer the env var: flags show in ps)";
    api_body_bytes_max: "api.body_bytes_max", "RINGCAST_API_BODY_BYTES_MAX", "BYTES", "Largest API request body";
    api_header_bytes_max: "api.header_bytes_max", "RINGCAST_API_HEADER_BYTES_MAX", "BYTES", "Largest API request head";
    api_idle_timeout_ms: "api.idle_timeout_ms", "RINGCAST_API_IDLE_TIMEOUT_MS", "MS", "Close idle API connections after";
    auth_jwt_secret: "auth.jwt_secret", "RINGCAST_AUTH_JWT_SECRET", "SECRET", "HS256 key (prefer the env var: flags show in ps)";
    auth_algorithm: "auth.algorithm", "RINGCAST_AUTH_ALGORITHM", "HS256", "JWT algorithm; only HS256";
    auth_leeway_s: "auth.leeway_s", "RINGCAST_AUTH_LEEWAY_S", "S", "Clock skew allowed on exp/nbf";
    auth_allow_anonymous: "auth.allow_anonymous", "RINGCAST_AUTH_ALLOW_ANONYMOUS", "BOOL", "Accept connections without a token";
    log_level: "log.level", "RINGCAST_LOG_LEVEL", "FILTER", "tracing EnvFilter directives";
    log_format: "log.format", "RINGCAST_LOG_FORMAT", "text|json", "Log format";
}

/// Env var naming the config file.
pub const ENV_CONFIG: &str = "RINGCAST_CONFIG";

/// Prefixes of env vars that must name a key (typos are errors).
const ENV_SECTION_PREFIXES: &[&str] = &[
    "RINGCAST_SERVER_",
    "RINGCAST_WEBSOCKET_",
    "RINGCAST_API_",
    "RINGCAST_AUTH_",
    "RINGCAST_LOG_",
];

/// Stage one, file part: the TOML file as written. Every field is optional so
/// that stage two can tell "set in the file" from "default".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub version: Option<u64>,
    #[serde(default)]
    pub server: FileServer,
    #[serde(default)]
    pub websocket: FileWebSocket,
    #[serde(default)]
    pub api: FileApi,
    #[serde(default)]
    pub auth: FileAuth,
    #[serde(default)]
    pub namespace: Vec<FileNamespace>,
    #[serde(default)]
    pub log: FileLog,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServer {
    pub shards: Option<u64>,
    pub pin_cores: Option<bool>,
    pub driver: Option<String>,
    pub node_id: Option<u64>,
    pub data_dir: Option<String>,
    pub shutdown_grace_ms: Option<u64>,
    pub dedup_window_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWebSocket {
    pub listen: Option<String>,
    pub path: Option<String>,
    pub handshake_timeout_ms: Option<u64>,
    pub header_bytes_max: Option<u64>,
    pub headers_count_max: Option<u64>,
    pub frame_bytes_max: Option<u64>,
    pub message_bytes_max: Option<u64>,
    pub outbound_queue_bytes_max: Option<u64>,
    pub slow_consumer_timeout_ms: Option<u64>,
    pub ping_interval_ms: Option<u64>,
    pub pong_timeout_ms: Option<u64>,
    pub connections_max_per_shard: Option<u64>,
    pub subscriptions_max_per_connection: Option<u64>,
    pub backlog: Option<u64>,
    pub allowed_origins: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileApi {
    pub listen: Option<String>,
    pub key: Option<String>,
    pub body_bytes_max: Option<u64>,
    pub header_bytes_max: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAuth {
    pub jwt_secret: Option<String>,
    pub algorithm: Option<String>,
    pub leeway_s: Option<u64>,
    pub allow_anonymous: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileNamespace {
    pub name: Option<String>,
    pub subscribe: Option<String>,
    pub publish: Option<String>,
    pub history: Option<bool>,
    pub durability: Option<String>,
    pub retention_count: Option<u64>,
    pub retention_age_s: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLog {
    pub level: Option<String>,
    pub format: Option<String>,
}

impl Config {
    /// Reads the config file named by `--config` or `RINGCAST_CONFIG` (if
    /// any), layers flags and env over it, validates, and resolves cores.
    pub fn load(raw: RawArgs) -> Result<Config, ConfigError> {
        raw.check_env()?;
        let env_config = raw.env_value(ENV_CONFIG);
        let config_path: Option<(PathBuf, Origin)> = match (&raw.flags.config, env_config) {
            (Some(path), _) => Some((path.clone(), Origin::Flag("--config".to_owned()))),
            (None, Some(path)) => Some((PathBuf::from(path), Origin::Env(ENV_CONFIG.to_owned()))),
            (None, None) => None,
        };
        match config_path {
            Some((path, given_by)) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    given_by,
                    source,
                })?;
                let file = FileConfig::parse(&text, &path)?;
                Config::resolve(&raw, file, Some(&path))
            }
            None => Config::resolve(&raw, FileConfig::default(), None),
        }
    }

    /// Parses and validates a TOML document with no flag or env overrides.
    /// `path_for_errors` is only used in error messages and `file_path`.
    pub fn from_toml_str(text: &str, path_for_errors: &Path) -> Result<Config, ConfigError> {
        let file = FileConfig::parse(text, path_for_errors)?;
        Config::resolve(&RawArgs::default(), file, Some(path_for_errors))
    }

    /// Small limits so tests reach them: both listeners on 127.0.0.1:0, 2
    /// shards, no pinning, short timeouts, small queues, fixed secrets, and
    /// the namespaces `news` (public/none), `chat` (public/subscribers, with
    /// history) and `room` (public/any). Tests that start a store should
    /// point `server.data_dir` at a temp dir.
    pub fn test_min() -> Config {
        match Config::from_toml_str(TEST_MIN_TOML, Path::new("<Config::test_min>")) {
            Ok(config) => config,
            Err(error) => panic!("Config::test_min is invalid: {error}"),
        }
    }

    /// The namespace that governs `channel`: the part before the first ':'
    /// (`chat:lobby` -> `chat`). A channel without ':' belongs to the
    /// namespace named "" if one is configured. A channel starting with ':'
    /// has no namespace. `user:<id>` channels are the engine's and never
    /// match (the name is reserved).
    pub fn namespace(&self, channel: &str) -> Option<&Namespace> {
        let name = match channel.split_once(':') {
            Some(("", _)) => return None,
            Some((name, _)) => name,
            None => "",
        };
        self.namespaces
            .iter()
            .find(|namespace| namespace.name == name)
    }

    fn resolve(
        raw: &RawArgs,
        file: FileConfig,
        file_path: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let layers = Layers { raw, file_path };
        if let Some(version) = file.version {
            if version != CONFIG_VERSION {
                return Err(ConfigError::Invalid {
                    key: "version".to_owned(),
                    origin: layers.file_origin(),
                    problem: format!(
                        "must be {CONFIG_VERSION}, the only config format this build reads \
                         (got {version})"
                    ),
                });
            }
        }
        let server = resolve_server(&layers, file.server)?;
        let websocket = resolve_websocket(&layers, file.websocket)?;
        let api = resolve_api(&layers, file.api, websocket.listen)?;
        let auth = resolve_auth(&layers, file.auth)?;
        let namespaces = resolve_namespaces(&layers, file.namespace)?;
        let log = resolve_log(&layers, file.log)?;
        Ok(Config {
            server,
            websocket,
            api,
            auth,
            namespaces,
            log,
            file_path: file_path.map(Path::to_path_buf),
        })
    }
}

impl RawArgs {
    /// Parses the process's argv and `RINGCAST_*` environment. Prints help or
    /// the error and exits on bad flags, like `clap::Parser::parse`.
    pub fn parse() -> RawArgs {
        let flags = <RawFlags as clap::Parser>::parse();
        let mut raw = RawArgs {
            flags,
            ..RawArgs::default()
        };
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with("RINGCAST_") {
                continue;
            }
            match value.into_string() {
                Ok(value) => {
                    raw.env.insert(name.to_owned(), value);
                }
                Err(_) => raw.env_not_utf8.push(name.to_owned()),
            }
        }
        raw
    }

    /// Parses `args` (including the binary name) with `env` standing in for
    /// the process environment. Only `RINGCAST_*` entries are kept.
    pub fn try_parse_from_with_env<I, T>(
        args: I,
        env: &BTreeMap<String, String>,
    ) -> Result<RawArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let flags = <RawFlags as clap::Parser>::try_parse_from(args)?;
        let env = env
            .iter()
            .filter(|(name, _)| name.starts_with("RINGCAST_"))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        Ok(RawArgs {
            flags,
            env,
            env_not_utf8: Vec::new(),
        })
    }

    /// A set env var; empty counts as unset, as with clap's `env`.
    fn env_value(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }

    fn check_env(&self) -> Result<(), ConfigError> {
        if let Some(name) = self.env_not_utf8.first() {
            return Err(ConfigError::EnvNotUtf8 { name: name.clone() });
        }
        for name in self.env.keys() {
            let in_section = ENV_SECTION_PREFIXES
                .iter()
                .any(|prefix| name.starts_with(prefix));
            if in_section && !OVERRIDE_KEYS.iter().any(|key| env_name(key) == *name) {
                return Err(ConfigError::UnknownEnv { name: name.clone() });
            }
        }
        Ok(())
    }
}

impl FileConfig {
    /// Parses TOML; errors name `path`, the position and the table.
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            location: error
                .span()
                .map(|span| describe_location(text, span.start))
                .unwrap_or_default(),
            message: error.message().trim_end().to_owned(),
        })
    }
}

impl ShardCount {
    pub const MAX: u16 = SHARDS_MAX;

    /// `None` for 0 or more than [`SHARDS_MAX`].
    pub fn new(count: u16) -> Option<ShardCount> {
        if count > SHARDS_MAX {
            return None;
        }
        NonZeroU16::new(count).map(ShardCount)
    }

    pub fn get(self) -> u16 {
        self.0.get()
    }

    pub fn as_usize(self) -> usize {
        usize::from(self.0.get())
    }
}

impl NodeId {
    pub const MAX: u8 = NODE_ID_MAX;

    /// `None` above [`NODE_ID_MAX`].
    pub fn new(id: u8) -> Option<NodeId> {
        (id <= NODE_ID_MAX).then_some(NodeId(id))
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares in time independent of where the first difference is, so the
    /// API key cannot be guessed byte by byte from response times. The
    /// length is not secret.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        if expected.len() != candidate.len() {
            return false;
        }
        let difference = expected
            .iter()
            .zip(candidate)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b));
        difference == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

impl WebSocketConfig {
    /// Whether a handshake's `Origin` header value is allowed: any when
    /// `allowed_origins` is empty, else an ASCII case-insensitive match.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins.is_empty()
            || self
                .allowed_origins
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "(from {flag})"),
            Origin::Env(name) => write!(f, "(from environment variable {name})"),
            Origin::File(path) => write!(f, "in {}", path.display()),
            Origin::Default => write!(f, "(built-in default)"),
        }
    }
}

/// The string values of a config enum, for parsing and error messages.
trait Choice: Sized + Copy + 'static {
    const CHOICES: &'static [(&'static str, Self)];
}

impl Choice for Driver {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("auto", Driver::Auto),
        ("io_uring", Driver::IoUring),
        ("epoll", Driver::Epoll),
    ];
}

impl Choice for SubscribePolicy {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("public", SubscribePolicy::Public),
        ("owner", SubscribePolicy::Owner),
        ("none", SubscribePolicy::ServerOnly),
    ];
}

impl Choice for PublishPolicy {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("none", PublishPolicy::ServerOnly),
        ("subscribers", PublishPolicy::Subscribers),
        ("any", PublishPolicy::Any),
    ];
}

impl Choice for Durability {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("sync", Durability::Sync),
        ("buffered", Durability::Buffered),
    ];
}

impl Choice for LogFormat {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("text", LogFormat::Text), ("json", LogFormat::Json)];
}

/// Picks each key's value from flag, env, file or default, in that order.
struct Layers<'a> {
    raw: &'a RawArgs,
    file_path: Option<&'a Path>,
}

/// A value chosen for a key, before validation.
enum Picked<T> {
    /// From a flag or env var: text still to parse.
    Text(String, Origin),
    /// From the file, already typed by serde.
    File(T, Origin),
    Default,
}

impl Layers<'_> {
    fn file_origin(&self) -> Origin {
        match self.file_path {
            Some(path) => Origin::File(path.to_path_buf()),
            None => Origin::Default,
        }
    }

    fn pick<T>(&self, key: &'static str, file_value: Option<T>) -> Picked<T> {
        if let Some(value) = self.raw.flags.get(key) {
            return Picked::Text(value.to_owned(), Origin::Flag(flag_name(key)));
        }
        let env = env_name(key);
        if let Some(value) = self.raw.env_value(&env) {
            return Picked::Text(value.to_owned(), Origin::Env(env));
        }
        match file_value {
            Some(value) => Picked::File(value, self.file_origin()),
            None => Picked::Default,
        }
    }

    /// A whole number in `range`, with `unit` for messages ("bytes", "ms").
    fn number(
        &self,
        key: &'static str,
        file_value: Option<u64>,
        default: u64,
        range: RangeInclusive<u64>,
        unit: &str,
    ) -> Result<(u64, Origin), ConfigError> {
        let allowed = format!(
            "a whole number of {unit} from {} to {}",
            range.start(),
            range.end()
        );
        let (value, origin) = match self.pick(key, file_value) {
            Picked::Text(text, origin) => match text.parse::<u64>() {
                Ok(value) => (value, origin),
                Err(_) => {
                    return Err(invalid(
                        key,
                        origin,
                        format!("must be {allowed} (got {text:?})"),
                    ))
                }
            },
            Picked::File(value, origin) => (value, origin),
            Picked::Default => (default, Origin::Default),
        };
        if !range.contains(&value) {
            return Err(invalid(
                key,
                origin,
                format!("must be {allowed} (got {value})"),
            ));
        }
        Ok((value, origin))
    }

    fn size(
        &self,
        key: &'static str,
        file_value: Option<u64>,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<usize, ConfigError> {
        let (value, origin) = self.number(key, file_value, default, range, "bytes")?;
        usize::try_from(value).map_err(|_| {
            invalid(
                key,
                origin,
                format!("{value} bytes does not fit this platform's usize"),
            )
        })
    }

    fn count_u32(
        &self,
        key: &'static str,
        file_value: Option<u64>,
        default: u32,
        range: RangeInclusive<u32>,
    ) -> Result<u32, ConfigError> {
        let range = u64::from(*range.start())..=u64::from(*range.end());
        let (value, _) = self.number(key, file_value, u64::from(default), range, "items")?;
        Ok(u32::try_from(value).unwrap_or(u32::MAX))
    }

    fn millis(
        &self,
        key: &'static str,
        file_value: Option<u64>,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        let (value, _) = self.number(key, file_value, default, range, "milliseconds")?;
        Ok(Duration::from_millis(value))
    }

    fn boolean(
        &self,
        key: &'static str,
        file_value: Option<bool>,
        default: bool,
    ) -> Result<bool, ConfigError> {
        match self.pick(key, file_value) {
            Picked::Text(text, origin) => match text.as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(invalid(
                    key,
                    origin,
                    format!("must be true or false (got {text:?})"),
                )),
            },
            Picked::File(value, _) => Ok(value),
            Picked::Default => Ok(default),
        }
    }

    fn text(
        &self,
        key: &'static str,
        file_value: Option<String>,
        default: &str,
    ) -> (String, Origin) {
        match self.pick(key, file_value) {
            Picked::Text(value, origin) | Picked::File(value, origin) => (value, origin),
            Picked::Default => (default.to_owned(), Origin::Default),
        }
    }

    fn choice<T: Choice>(
        &self,
        key: &'static str,
        file_value: Option<String>,
        default: T,
    ) -> Result<T, ConfigError> {
        let (text, origin) = match self.pick(key, file_value) {
            Picked::Text(value, origin) | Picked::File(value, origin) => (value, origin),
            Picked::Default => return Ok(default),
        };
        parse_choice(&text).ok_or_else(|| invalid(key, origin, choice_problem::<T>(&text)))
    }

    fn socket_addr(
        &self,
        key: &'static str,
        file_value: Option<String>,
        default: &str,
    ) -> Result<(SocketAddr, Origin), ConfigError> {
        let (text, origin) = self.text(key, file_value, default);
        match text.parse::<SocketAddr>() {
            Ok(addr) => Ok((addr, origin)),
            Err(_) => Err(invalid(
                key,
                origin,
                format!(
                    "must be an IP address and port such as 127.0.0.1:8080 or [::1]:8080; host \
                     names are not resolved (got {text:?})"
                ),
            )),
        }
    }

    /// A required secret of at least `bytes_min` bytes. Never echoes it.
    fn secret(
        &self,
        key: &'static str,
        file_value: Option<String>,
        bytes_min: usize,
    ) -> Result<Secret, ConfigError> {
        let (value, origin) = match self.pick(key, file_value) {
            Picked::Text(value, origin) | Picked::File(value, origin) => (value, origin),
            Picked::Default => {
                let file_hint = match self.file_path {
                    Some(path) => format!(" ({})", path.display()),
                    None => " (none was given: pass --config=PATH)".to_owned(),
                };
                return Err(ConfigError::Missing {
                    key: key.to_owned(),
                    flag: flag_name(key),
                    env: env_name(key),
                    file_hint,
                });
            }
        };
        if value.len() < bytes_min {
            return Err(invalid(
                key,
                origin,
                format!("must be at least {bytes_min} bytes (got {})", value.len()),
            ));
        }
        Ok(Secret(value))
    }
}

const TEST_MIN_TOML: &str = r#"
version = 1

[server]
shards = 2
pin_cores = false
data_dir = "./data-test"
shutdown_grace_ms = 200

[websocket]
listen = "127.0.0.1:0"
handshake_timeout_ms = 1000
header_bytes_max = 1024
headers_count_max = 16
frame_bytes_max = 1024
message_bytes_max = 4096
outbound_queue_bytes_max = 4096
slow_consumer_timeout_ms = 200
ping_interval_ms = 500
pong_timeout_ms = 250
connections_max_per_shard = 16
subscriptions_max_per_connection = 8
backlog = 64

[api]
listen = "127.0.0.1:0"
key = "test-api-key-0123456789"
body_bytes_max = 4096
header_bytes_max = 2048
idle_timeout_ms = 1000

[auth]
jwt_secret = "test-jwt-secret-0123456789abcdef0123456789"
leeway_s = 0

[[namespace]]
name = "news"

[[namespace]]
name = "chat"
publish = "subscribers"
history = true
durability = "sync"
retention_count = 16
retention_age_s = 60

[[namespace]]
name = "room"
publish = "any"

[log]
level = "debug"
"#;

fn resolve_server(layers: &Layers<'_>, file: FileServer) -> Result<ServerConfig, ConfigError> {
    let (shards_raw, _) = layers.number(
        "server.shards",
        file.shards,
        0,
        0..=u64::from(SHARDS_MAX),
        "shards",
    )?;
    let shards = match u16::try_from(shards_raw).ok().and_then(ShardCount::new) {
        Some(shards) => shards,
        None => {
            // 0: one shard per available core, capped at SHARDS_MAX.
            let cores = std::thread::available_parallelism()
                .map_err(|source| ConfigError::Cores { source })?;
            let cores = u16::try_from(cores.get())
                .unwrap_or(u16::MAX)
                .min(SHARDS_MAX);
            ShardCount::new(cores.max(1)).unwrap_or(ShardCount(NonZeroU16::MIN))
        }
    };
    assert!(shards.get() >= 1 && shards.get() <= SHARDS_MAX);
    let (node_id, _) = layers.number(
        "server.node_id",
        file.node_id,
        0,
        0..=u64::from(NODE_ID_MAX),
        "ids",
    )?;
    let node_id = NodeId(u8::try_from(node_id).unwrap_or(NODE_ID_MAX));
    assert!(node_id.get() <= NODE_ID_MAX);
    let (data_dir, data_dir_origin) = layers.text("server.data_dir", file.data_dir, "./data");
    if data_dir.trim().is_empty() {
        return Err(invalid(
            "server.data_dir",
            data_dir_origin,
            "must be a non-empty directory path".to_owned(),
        ));
    }
    Ok(ServerConfig {
        shards,
        pin_cores: layers.boolean("server.pin_cores", file.pin_cores, true)?,
        driver: layers.choice("server.driver", file.driver, Driver::Auto)?,
        node_id,
        data_dir: PathBuf::from(data_dir),
        shutdown_grace: layers.millis(
            "server.shutdown_grace_ms",
            file.shutdown_grace_ms,
            5000,
            0..=TIMEOUT_MS_MAX,
        )?,
        dedup_window: layers.millis(
            "server.dedup_window_ms",
            file.dedup_window_ms,
            300_000,
            1000..=TIMEOUT_MS_MAX,
        )?,
    })
}

fn resolve_websocket(
    layers: &Layers<'_>,
    file: FileWebSocket,
) -> Result<WebSocketConfig, ConfigError> {
    let timeouts = TIMEOUT_MS_MIN..=TIMEOUT_MS_MAX;
    let (listen, _) = layers.socket_addr("websocket.listen", file.listen, "127.0.0.1:8080")?;
    let (path, path_origin) = layers.text("websocket.path", file.path, "/connection/websocket");
    if !path.starts_with('/')
        || path.contains(|c: char| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
    {
        return Err(invalid(
            "websocket.path",
            path_origin,
            format!("must start with '/' and contain no whitespace, '?' or '#' (got {path:?})"),
        ));
    }
    let allowed_origins = resolve_allowed_origins(layers, file.allowed_origins)?;
    let websocket = WebSocketConfig {
        listen,
        path,
        handshake_timeout: layers.millis(
            "websocket.handshake_timeout_ms",
            file.handshake_timeout_ms,
            5000,
            timeouts.clone(),
        )?,
        header_bytes_max: layers.size(
            "websocket.header_bytes_max",
            file.header_bytes_max,
            8192,
            512..=1024 * 1024,
        )?,
        headers_count_max: layers
            .number(
                "websocket.headers_count_max",
                file.headers_count_max,
                64,
                8..=1024,
                "headers",
            )?
            .0 as usize,
        frame_bytes_max: layers.size(
            "websocket.frame_bytes_max",
            file.frame_bytes_max,
            65536,
            128..=SIZE_BYTES_MAX,
        )?,
        message_bytes_max: layers.size(
            "websocket.message_bytes_max",
            file.message_bytes_max,
            1_048_576,
            1024..=SIZE_BYTES_MAX,
        )?,
        outbound_queue_bytes_max: layers.size(
            "websocket.outbound_queue_bytes_max",
            file.outbound_queue_bytes_max,
            1_048_576,
            4096..=1024 * 1024 * 1024,
        )?,
        slow_consumer_timeout: layers.millis(
            "websocket.slow_consumer_timeout_ms",
            file.slow_consumer_timeout_ms,
            5000,
            timeouts.clone(),
        )?,
        ping_interval: layers.millis(
            "websocket.ping_interval_ms",
            file.ping_interval_ms,
            25000,
            timeouts.clone(),
        )?,
        pong_timeout: layers.millis(
            "websocket.pong_timeout_ms",
            file.pong_timeout_ms,
            10000,
            timeouts,
        )?,
        connections_max_per_shard: layers.count_u32(
            "websocket.connections_max_per_shard",
            file.connections_max_per_shard,
            100_000,
            1..=10_000_000,
        )?,
        subscriptions_max_per_connection: layers.count_u32(
            "websocket.subscriptions_max_per_connection",
            file.subscriptions_max_per_connection,
            1024,
            1..=1_000_000,
        )?,
        backlog: layers.count_u32("websocket.backlog", file.backlog, 4096, 1..=1_048_576)?,
        allowed_origins,
    };
    Ok(websocket)
}

fn resolve_allowed_origins(
    layers: &Layers<'_>,
    file_value: Option<Vec<String>>,
) -> Result<Vec<String>, ConfigError> {
    const KEY: &str = "websocket.allowed_origins";
    let (origins, origin) = match layers.pick(KEY, file_value) {
        Picked::Text(text, origin) => {
            let origins = text
                .split(',')
                .map(|part| part.trim().to_owned())
                .filter(|part| !part.is_empty())
                .collect();
            (origins, origin)
        }
        Picked::File(origins, origin) => (origins, origin),
        Picked::Default => (Vec::new(), Origin::Default),
    };
    let mut normalized: Vec<String> = Vec::with_capacity(origins.len());
    for allowed in origins {
        let well_formed = !allowed.is_empty()
            && !allowed.ends_with('/')
            && !allowed.contains(|c: char| c.is_whitespace() || c.is_control())
            && allowed.split_once("://").is_some_and(|(scheme, host)| {
                !scheme.is_empty() && !host.is_empty() && !host.contains('/')
            });
        if !well_formed {
            return Err(invalid(
                KEY,
                origin,
                format!(
                    "entries must be origins like https://example.com or http://localhost:3000, \
                     with no path or trailing '/'; leave the list empty to allow any origin \
                     (got {allowed:?})"
                ),
            ));
        }
        normalized.push(allowed.to_ascii_lowercase());
    }
    Ok(normalized)
}

fn resolve_api(
    layers: &Layers<'_>,
    file: FileApi,
    websocket_listen: SocketAddr,
) -> Result<ApiConfig, ConfigError> {
    let (listen, listen_origin) =
        layers.socket_addr("api.listen", file.listen, "127.0.0.1:8081")?;
    if listen == websocket_listen && listen.port() != 0 {
        return Err(invalid(
            "api.listen",
            listen_origin,
            format!("must differ from websocket.listen (both are {listen})"),
        ));
    }
    Ok(ApiConfig {
        listen,
        key: layers.secret("api.key", file.key, API_KEY_BYTES_MIN)?,
        body_bytes_max: layers.size(
            "api.body_bytes_max",
            file.body_bytes_max,
            1_048_576,
            1024..=SIZE_BYTES_MAX,
        )?,
        header_bytes_max: layers.size(
            "api.header_bytes_max",
            file.header_bytes_max,
            16384,
            512..=1024 * 1024,
        )?,
        idle_timeout: layers.millis(
            "api.idle_timeout_ms",
            file.idle_timeout_ms,
            60000,
            TIMEOUT_MS_MIN..=TIMEOUT_MS_MAX,
        )?,
    })
}

fn resolve_auth(layers: &Layers<'_>, file: FileAuth) -> Result<AuthConfig, ConfigError> {
    let jwt_secret = layers.secret("auth.jwt_secret", file.jwt_secret, JWT_SECRET_BYTES_MIN)?;
    let (algorithm, algorithm_origin) = layers.text("auth.algorithm", file.algorithm, "HS256");
    if algorithm != "HS256" {
        return Err(invalid(
            "auth.algorithm",
            algorithm_origin,
            format!(
                "must be \"HS256\": only HS256 is supported, and the algorithm is fixed by config, \
                 never taken from the token (got {algorithm:?})"
            ),
        ));
    }
    let (leeway_s, _) = layers.number("auth.leeway_s", file.leeway_s, 5, 0..=3600, "seconds")?;
    Ok(AuthConfig {
        jwt_secret,
        algorithm: JwtAlgorithm::Hs256,
        leeway: Duration::from_secs(leeway_s),
        allow_anonymous: layers.boolean("auth.allow_anonymous", file.allow_anonymous, false)?,
    })
}

fn resolve_namespaces(
    layers: &Layers<'_>,
    file: Vec<FileNamespace>,
) -> Result<Vec<Namespace>, ConfigError> {
    let origin = layers.file_origin();
    if file.len() > NAMESPACES_MAX {
        return Err(invalid(
            "namespace",
            origin,
            format!(
                "may have at most {NAMESPACES_MAX} entries (got {})",
                file.len()
            ),
        ));
    }
    let mut namespaces: Vec<Namespace> = Vec::with_capacity(file.len());
    for (index, entry) in file.into_iter().enumerate() {
        let key = |field: &str| format!("namespace[{index}].{field}");
        let Some(name) = entry.name else {
            return Err(invalid(
                &key("name"),
                origin,
                "is required: every [[namespace]] needs a name".to_owned(),
            ));
        };
        let name_ok = name.len() <= NAMESPACE_NAME_BYTES_MAX
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(invalid(
                &key("name"),
                origin,
                format!(
                    "must be at most {NAMESPACE_NAME_BYTES_MAX} characters of a-z, 0-9, '_' and \
                     '-', or \"\" for the default namespace (got {name:?})"
                ),
            ));
        }
        if name == RESERVED_NAMESPACE_USER {
            return Err(invalid(
                &key("name"),
                origin,
                "must not be \"user\": the engine owns user:<id> personal channels; pick another name".to_owned(),
            ));
        }
        if namespaces.iter().any(|namespace| namespace.name == name) {
            return Err(invalid(
                &key("name"),
                origin,
                format!("must be unique, but {name:?} is configured twice"),
            ));
        }
        let subscribe = namespace_choice(
            &key("subscribe"),
            &origin,
            entry.subscribe,
            SubscribePolicy::Public,
        )?;
        if subscribe == SubscribePolicy::Owner && name.is_empty() {
            return Err(invalid(
                &key("subscribe"),
                origin,
                "cannot be \"owner\" for the default namespace \"\": owner compares the part after \
                 '<namespace>:' with the user id"
                    .to_owned(),
            ));
        }
        let publish = namespace_choice(
            &key("publish"),
            &origin,
            entry.publish,
            PublishPolicy::ServerOnly,
        )?;
        let durability = namespace_choice(
            &key("durability"),
            &origin,
            entry.durability,
            Durability::Buffered,
        )?;
        let retention_count = entry.retention_count.unwrap_or(1000);
        if !(1..=10_000_000).contains(&retention_count) {
            return Err(invalid(
                &key("retention_count"),
                origin,
                format!("must be a whole number from 1 to 10000000 (got {retention_count})"),
            ));
        }
        let retention_age_s = entry.retention_age_s.unwrap_or(86_400);
        if !(1..=31_536_000 * 10).contains(&retention_age_s) {
            return Err(invalid(
                &key("retention_age_s"),
                origin,
                format!(
                    "must be a whole number of seconds from 1 to 315360000 (got {retention_age_s})"
                ),
            ));
        }
        namespaces.push(Namespace {
            name,
            subscribe,
            publish,
            history: entry.history.unwrap_or(false),
            durability,
            retention_count,
            retention_age: Duration::from_secs(retention_age_s),
        });
    }
    Ok(namespaces)
}

fn namespace_choice<T: Choice>(
    key: &str,
    origin: &Origin,
    value: Option<String>,
    default: T,
) -> Result<T, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => parse_choice(&text)
            .ok_or_else(|| invalid(key, origin.clone(), choice_problem::<T>(&text))),
    }
}

fn resolve_log(layers: &Layers<'_>, file: FileLog) -> Result<LogConfig, ConfigError> {
    let (level, level_origin) = layers.text("log.level", file.level, "info");
    if level.trim().is_empty() {
        return Err(invalid(
            "log.level",
            level_origin,
            "must be a tracing filter such as \"info\" or \"ringcast=debug,warn\"".to_owned(),
        ));
    }
    Ok(LogConfig {
        level,
        format: layers.choice("log.format", file.format, LogFormat::Text)?,
    })
}

fn parse_choice<T: Choice>(text: &str) -> Option<T> {
    T::CHOICES
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, value)| *value)
}

fn choice_problem<T: Choice>(text: &str) -> String {
    let names: Vec<String> = T::CHOICES
        .iter()
        .map(|(name, _)| format!("{name:?}"))
        .collect();
    format!("must be one of {} (got {text:?})", names.join(", "))
}

fn invalid(key: &str, origin: Origin, problem: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        origin,
        problem,
    }
}

/// `websocket.frame_bytes_max` -> `--websocket-frame-bytes-max`.
fn flag_name(key: &str) -> String {
    format!("--{}", key.replace(['.', '_'], "-"))
}

/// `websocket.frame_bytes_max` -> `RINGCAST_WEBSOCKET_FRAME_BYTES_MAX`.
fn env_name(key: &str) -> String {
    format!("RINGCAST_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// " (line L, column C, in [table])" for a byte offset into `text`.
fn describe_location(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before
        .get(line_start..)
        .map_or(1, |prefix| prefix.chars().count() + 1);
    // The nearest table header at or above the error. Dotted keys and inline
    // tables are not tracked; the line number is exact either way.
    let table = text
        .get(..line_start)
        .unwrap_or("")
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('['))
        .map(|header| header.split('#').next().unwrap_or(header).trim().to_owned());
    match table {
        Some(table) => format!(" (line {line}, column {column}, in {table})"),
        None => format!(" (line {line}, column {column})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const KEY: &str = "api-key-0123456789";

    fn minimal_toml() -> String {
        format!("[api]\nkey = \"{KEY}\"\n[auth]\njwt_secret = \"{SECRET}\"\n")
    }

    fn raw(args: &[&str], env: &[(&str, &str)]) -> RawArgs {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut argv = vec!["ringcast"];
        argv.extend_from_slice(args);
        RawArgs::try_parse_from_with_env(argv, &env).expect("flags parse")
    }

    fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ringcast.toml");
        std::fs::write(&path, text).expect("write config");
        (dir, path)
    }

    fn error_text(result: Result<Config, ConfigError>) -> String {
        match result {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn defaults_load() {
        let config = Config::from_toml_str(&minimal_toml(), Path::new("min.toml")).expect("loads");
        assert!(config.server.shards.get() >= 1);
        assert!(config.server.pin_cores);
        assert_eq!(config.server.driver, Driver::Auto);
        assert_eq!(config.server.node_id.get(), 0);
        assert_eq!(config.server.data_dir, PathBuf::from("./data"));
        assert_eq!(config.server.shutdown_grace, Duration::from_millis(5000));
        let ws = &config.websocket;
        assert_eq!(ws.listen, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(ws.path, "/connection/websocket");
        assert_eq!(ws.handshake_timeout, Duration::from_secs(5));
        assert_eq!((ws.header_bytes_max, ws.headers_count_max), (8192, 64));
        assert_eq!(
            (ws.frame_bytes_max, ws.message_bytes_max),
            (65536, 1_048_576)
        );
        assert_eq!(ws.outbound_queue_bytes_max, 1_048_576);
        assert_eq!(ws.slow_consumer_timeout, Duration::from_secs(5));
        assert_eq!(
            (ws.ping_interval, ws.pong_timeout),
            (Duration::from_secs(25), Duration::from_secs(10))
        );
        assert_eq!(
            (
                ws.connections_max_per_shard,
                ws.subscriptions_max_per_connection,
                ws.backlog
            ),
            (100_000, 1024, 4096)
        );
        assert!(ws.allowed_origins.is_empty());
        assert!(ws.origin_allowed("https://anything.example"));
        assert_eq!(
            config.api.listen,
            "127.0.0.1:8081".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(config.api.key.expose(), KEY);
        assert_eq!(
            (config.api.body_bytes_max, config.api.header_bytes_max),
            (1_048_576, 16384)
        );
        assert_eq!(config.api.idle_timeout, Duration::from_secs(60));
        assert_eq!(config.auth.algorithm, JwtAlgorithm::Hs256);
        assert_eq!(config.auth.leeway, Duration::from_secs(5));
        assert!(!config.auth.allow_anonymous);
        assert!(config.namespaces.is_empty());
        assert_eq!(
            (config.log.level.as_str(), config.log.format),
            ("info", LogFormat::Text)
        );
        assert_eq!(config.file_path.as_deref(), Some(Path::new("min.toml")));
    }

    #[test]
    fn defaults_only_without_file_need_secrets_from_flags_or_env() {
        let text = error_text(Config::load(raw(&[], &[])));
        assert!(text.contains("api.key is required"), "{text}");
        assert!(
            text.contains("--api-key") && text.contains("RINGCAST_API_KEY"),
            "{text}"
        );
        assert!(text.contains("--config=PATH"), "{text}");

        let config = Config::load(raw(
            &[&format!("--api-key={KEY}")],
            &[("RINGCAST_AUTH_JWT_SECRET", SECRET)],
        ))
        .expect("loads");
        assert_eq!(config.auth.jwt_secret.expose(), SECRET);
        assert_eq!(config.file_path, None);
        assert_eq!(config.websocket.frame_bytes_max, 65536);
    }

    #[test]
    fn repo_ringcast_toml_loads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ringcast.toml");
        let config =
            Config::load(raw(&[&format!("--config={path}")], &[])).expect("ringcast.toml loads");
        assert_eq!(
            config.websocket.listen,
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            config.api.listen,
            "127.0.0.1:8081".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(config.server.data_dir, PathBuf::from("./data"));
        let news = config.namespace("news:world").expect("news");
        assert_eq!(
            (news.subscribe, news.publish),
            (SubscribePolicy::Public, PublishPolicy::ServerOnly)
        );
        let chat = config.namespace("chat:lobby").expect("chat");
        assert_eq!(
            (chat.subscribe, chat.publish),
            (SubscribePolicy::Public, PublishPolicy::Subscribers)
        );
        let room = config.namespace("room:1").expect("room");
        assert_eq!(
            (room.subscribe, room.publish),
            (SubscribePolicy::Public, PublishPolicy::Any)
        );
    }

    #[test]
    fn test_min_is_small_and_valid() {
        let config = Config::test_min();
        assert_eq!(config.server.shards.get(), 2);
        assert!(!config.server.pin_cores);
        assert_eq!(config.websocket.listen.port(), 0);
        assert_eq!(config.api.listen.port(), 0);
        assert!(config.auth.jwt_secret.len() >= JWT_SECRET_BYTES_MIN);
        assert!(config.api.key.len() >= API_KEY_BYTES_MIN);
        assert!(config.websocket.connections_max_per_shard <= 16);
        assert!(config.websocket.outbound_queue_bytes_max <= 4096);
        assert!(config.websocket.pong_timeout < Duration::from_secs(1));
        assert!(config.namespace("chat:x").is_some_and(|ns| ns.history));
    }

    #[test]
    fn unknown_key_error_names_key_table_and_file() {
        let (_dir, path) = write_config(&format!(
            "{}[websocket]\nlistn = \"127.0.0.1:1\"\n",
            minimal_toml()
        ));
        let text = error_text(Config::load(raw(
            &[&format!("--config={}", path.display())],
            &[],
        )));
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("unknown field `listn`"), "{text}");
        assert!(text.contains("[websocket]"), "{text}");
        assert!(text.contains("line 6"), "{text}");
        assert!(text.contains("`listen`"), "expected keys listed: {text}");

        let text = error_text(Config::from_toml_str(
            "bogus = 1\n",
            Path::new("/etc/ringcast.toml"),
        ));
        assert!(
            text.starts_with("config error in /etc/ringcast.toml"),
            "{text}"
        );
        assert!(text.contains("unknown field `bogus`"), "{text}");

        let text = error_text(Config::from_toml_str(
            "[[namespace]]\nname = \"a\"\nhistroy = true\n",
            Path::new("x.toml"),
        ));
        assert!(
            text.contains("unknown field `histroy`") && text.contains("[[namespace]]"),
            "{text}"
        );

        let text = error_text(Config::from_toml_str(
            "[sever]\nshards = 1\n",
            Path::new("x.toml"),
        ));
        assert!(text.contains("unknown field `sever`"), "{text}");
    }

    #[test]
    fn missing_explicit_file_names_path() {
        let text = error_text(Config::load(raw(
            &["--config=/nonexistent/ringcast.toml"],
            &[],
        )));
        assert!(
            text.contains("/nonexistent/ringcast.toml") && text.contains("--config"),
            "{text}"
        );
        let text = error_text(Config::load(raw(
            &[],
            &[("RINGCAST_CONFIG", "/nonexistent/env.toml")],
        )));
        assert!(
            text.contains("/nonexistent/env.toml") && text.contains("RINGCAST_CONFIG"),
            "{text}"
        );
    }

    #[test]
    fn short_secret_rejected_naming_key_and_file() {
        let toml = format!("[api]\nkey = \"{KEY}\"\n[auth]\njwt_secret = \"short\"\n");
        let text = error_text(Config::from_toml_str(
            &toml,
            Path::new("/etc/ringcast.toml"),
        ));
        assert_eq!(
            text,
            "config error: auth.jwt_secret must be at least 32 bytes (got 5) in /etc/ringcast.toml"
        );
        assert!(!text.contains("short\""), "secret echoed: {text}");

        let text = error_text(Config::load(raw(
            &[],
            &[
                ("RINGCAST_API_KEY", "tiny"),
                ("RINGCAST_AUTH_JWT_SECRET", SECRET),
            ],
        )));
        assert!(
            text.contains("api.key must be at least 16 bytes (got 4)"),
            "{text}"
        );
        assert!(text.contains("RINGCAST_API_KEY"), "{text}");
    }

    #[test]
    fn algorithm_other_than_hs256_rejected() {
        let toml = format!("{}algorithm = \"RS256\"\n", minimal_toml());
        let text = error_text(Config::from_toml_str(&toml, Path::new("a.toml")));
        assert!(
            text.contains("auth.algorithm") && text.contains("only HS256 is supported"),
            "{text}"
        );
        assert!(
            text.contains("\"RS256\"") && text.contains("in a.toml"),
            "{text}"
        );
        let toml = format!("{}algorithm = \"HS256\"\n", minimal_toml());
        assert!(Config::from_toml_str(&toml, Path::new("a.toml")).is_ok());
    }

    #[test]
    fn version_other_than_1_rejected() {
        let ok = format!("version = 1\n{}", minimal_toml());
        assert!(Config::from_toml_str(&ok, Path::new("v.toml")).is_ok());
        let text = error_text(Config::from_toml_str(
            &format!("version = 2\n{}", minimal_toml()),
            Path::new("v.toml"),
        ));
        assert!(
            text.contains("version must be 1") && text.contains("got 2"),
            "{text}"
        );
    }

    #[test]
    fn precedence_flag_over_env_over_file_over_default() {
        let (_dir, path) = write_config(&format!(
            "{}[websocket]\nlisten = \"127.0.0.1:9000\"\nframe_bytes_max = 2048\nping_interval_ms = 1000\n",
            minimal_toml()
        ));
        let config_flag = format!("--config={}", path.display());

        // File over default.
        let config = Config::load(raw(&[&config_flag], &[])).expect("loads");
        assert_eq!(config.websocket.listen.port(), 9000);
        assert_eq!(config.websocket.frame_bytes_max, 2048);
        assert_eq!(config.websocket.pong_timeout, Duration::from_secs(10));

        // Flag over file.
        let config = Config::load(raw(
            &[&config_flag, "--websocket-listen=127.0.0.1:9100"],
            &[],
        ))
        .expect("loads");
        assert_eq!(config.websocket.listen.port(), 9100);

        // Env over file.
        let env = [
            ("RINGCAST_WEBSOCKET_LISTEN", "127.0.0.1:9200"),
            ("RINGCAST_WEBSOCKET_FRAME_BYTES_MAX", "4096"),
        ];
        let config = Config::load(raw(&[&config_flag], &env)).expect("loads");
        assert_eq!(config.websocket.listen.port(), 9200);
        assert_eq!(config.websocket.frame_bytes_max, 4096);
        assert_eq!(config.websocket.ping_interval, Duration::from_secs(1));

        // Flag over env.
        let config = Config::load(raw(
            &[&config_flag, "--websocket-listen=127.0.0.1:9300"],
            &env,
        ))
        .expect("loads");
        assert_eq!(config.websocket.listen.port(), 9300);
        assert_eq!(config.websocket.frame_bytes_max, 4096);

        // Empty env counts as unset.
        let config = Config::load(raw(&[&config_flag], &[("RINGCAST_WEBSOCKET_LISTEN", "")]))
            .expect("loads");
        assert_eq!(config.websocket.listen.port(), 9000);

        // --config over RINGCAST_CONFIG.
        let config = Config::load(raw(
            &[&config_flag],
            &[("RINGCAST_CONFIG", "/nonexistent.toml")],
        ))
        .expect("loads");
        assert_eq!(config.file_path.as_deref(), Some(path.as_path()));
    }

    #[test]
    fn override_errors_name_flag_or_env() {
        let base = [
            ("RINGCAST_API_KEY", KEY),
            ("RINGCAST_AUTH_JWT_SECRET", SECRET),
        ];
        let text = error_text(Config::load(raw(
            &["--websocket-frame-bytes-max=64"],
            &base,
        )));
        assert!(
            text.contains("websocket.frame_bytes_max must be a whole number of bytes from 128 to"),
            "{text}"
        );
        assert!(
            text.contains("(got 64) (from --websocket-frame-bytes-max)"),
            "{text}"
        );

        let mut env = base.to_vec();
        env.push(("RINGCAST_SERVER_PIN_CORES", "yes"));
        let text = error_text(Config::load(raw(&[], &env)));
        assert!(
            text.contains("server.pin_cores must be true or false")
                && text.contains("RINGCAST_SERVER_PIN_CORES"),
            "{text}"
        );

        let text = error_text(Config::load(raw(&["--server-driver=kqueue"], &base)));
        assert!(
            text.contains("server.driver must be one of \"auto\", \"io_uring\", \"epoll\""),
            "{text}"
        );

        let config = Config::load(raw(
            &[
                "--server-driver=io_uring",
                "--server-pin-cores=false",
                "--server-shards=3",
            ],
            &base,
        ))
        .expect("loads");
        assert_eq!(
            (
                config.server.driver,
                config.server.pin_cores,
                config.server.shards.get()
            ),
            (Driver::IoUring, false, 3)
        );
    }

    #[test]
    fn unknown_env_in_known_section_rejected() {
        let env = [
            ("RINGCAST_API_KEY", KEY),
            ("RINGCAST_AUTH_JWT_SECRET", SECRET),
            ("RINGCAST_WEBSOCKET_LISTN", "x"),
        ];
        let text = error_text(Config::load(raw(&[], &env)));
        assert!(
            text.contains("unknown environment variable RINGCAST_WEBSOCKET_LISTN"),
            "{text}"
        );
        // Other RINGCAST_ names are not ours to judge.
        let env = [
            ("RINGCAST_API_KEY", KEY),
            ("RINGCAST_AUTH_JWT_SECRET", SECRET),
            ("RINGCAST_LOADGEN_URL", "x"),
        ];
        assert!(Config::load(raw(&[], &env)).is_ok());
    }

    #[test]
    fn duplicate_flag_rejected() {
        let env = BTreeMap::new();
        let result = RawArgs::try_parse_from_with_env(
            [
                "ringcast",
                "--websocket-listen=127.0.0.1:1",
                "--websocket-listen=127.0.0.1:2",
            ],
            &env,
        );
        let error = result.expect_err("duplicate flag must be rejected");
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::ArgumentConflict,
            "{error}"
        );
        assert!(error.to_string().contains("--websocket-listen"), "{error}");

        let result = RawArgs::try_parse_from_with_env(
            ["ringcast", "--config=a.toml", "--config=b.toml"],
            &env,
        );
        assert!(result.is_err());
    }

    #[test]
    fn flags_are_long_and_need_equals() {
        let env = BTreeMap::new();
        assert!(RawArgs::try_parse_from_with_env(
            ["ringcast", "--websocket-listen", "127.0.0.1:1"],
            &env
        )
        .is_err());
        assert!(RawArgs::try_parse_from_with_env(["ringcast", "-c=x"], &env).is_err());
    }

    #[test]
    fn flag_table_matches_key_names() {
        let env = BTreeMap::new();
        for key in OVERRIDE_KEYS {
            let (section, field) = key.split_once('.').expect("dotted key");
            assert!(
                ["server", "websocket", "api", "auth", "log"].contains(&section),
                "{key}"
            );
            assert!(!field.is_empty());
            let flag = flag_name(key);
            let raw = RawArgs::try_parse_from_with_env(
                ["ringcast".to_owned(), format!("{flag}=v")],
                &env,
            )
            .unwrap_or_else(|error| panic!("{flag} not accepted: {error}"));
            assert_eq!(raw.flags.get(key), Some("v"), "{flag} does not set {key}");
            assert!(
                ENV_SECTION_PREFIXES
                    .iter()
                    .any(|prefix| env_name(key).starts_with(prefix)),
                "{key}"
            );
        }
        use clap::CommandFactory;
        let command = RawFlags::command();
        command.clone().debug_assert();
        for arg in command.get_arguments() {
            let help = arg
                .get_help()
                .map(|help| help.to_string())
                .unwrap_or_default();
            let Some(long) = arg.get_long() else { continue };
            if long == "config" || long == "help" || long == "version" {
                continue;
            }
            let key = OVERRIDE_KEYS
                .iter()
                .find(|key| flag_name(key) == format!("--{long}"))
                .expect("flag has a key");
            assert!(
                help.contains(&env_name(key)),
                "help for --{long} must name {}: {help}",
                env_name(key)
            );
        }
    }

    #[test]
    fn docs_list_every_key() {
        let docs_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md");
        let docs = std::fs::read_to_string(docs_path).expect("docs/config.md");
        for key in OVERRIDE_KEYS {
            let field = key.split_once('.').map_or(*key, |(_, field)| field);
            assert!(
                docs.contains(&format!("| `{field}` |")),
                "docs/config.md lacks a row for {key}"
            );
            assert!(
                docs.contains(&format!("`{}`", flag_name(key))),
                "docs/config.md lacks {}",
                flag_name(key)
            );
            assert!(
                docs.contains(&format!("`{}`", env_name(key))),
                "docs/config.md lacks {}",
                env_name(key)
            );
        }
    }

    #[test]
    fn namespace_rules_parse() {
        let toml = format!(
            "{}\
             [[namespace]]\nname = \"\"\npublish = \"any\"\n\
             [[namespace]]\nname = \"inbox\"\nsubscribe = \"owner\"\n\
             [[namespace]]\nname = \"chat\"\nsubscribe = \"public\"\npublish = \"subscribers\"\nhistory = true\n\
             durability = \"sync\"\nretention_count = 50\nretention_age_s = 3600\n\
             [[namespace]]\nname = \"ops_internal-2\"\nsubscribe = \"none\"\n",
            minimal_toml()
        );
        let config = Config::from_toml_str(&toml, Path::new("ns.toml")).expect("loads");
        assert_eq!(config.namespaces.len(), 4);
        let default = config.namespace("lobby").expect("default namespace");
        assert_eq!(
            (default.name.as_str(), default.publish),
            ("", PublishPolicy::Any)
        );
        let inbox = config.namespace("inbox:42").expect("inbox");
        assert_eq!(
            (inbox.subscribe, inbox.publish),
            (SubscribePolicy::Owner, PublishPolicy::ServerOnly)
        );
        assert_eq!(
            (inbox.history, inbox.durability),
            (false, Durability::Buffered)
        );
        assert_eq!(
            (inbox.retention_count, inbox.retention_age),
            (1000, Duration::from_secs(86_400))
        );
        let chat = config
            .namespace("chat:a:b")
            .expect("split at the first ':'");
        assert_eq!(chat.name, "chat");
        assert_eq!(
            (chat.history, chat.durability, chat.retention_count),
            (true, Durability::Sync, 50)
        );
        assert_eq!(chat.retention_age, Duration::from_secs(3600));
        assert_eq!(
            config.namespace("ops_internal-2:x").map(|ns| ns.subscribe),
            Some(SubscribePolicy::ServerOnly)
        );
        assert!(config.namespace("missing:x").is_none());
        assert!(config.namespace(":x").is_none());
        assert!(config.namespace("user:42").is_none());

        let without_default = Config::from_toml_str(
            &format!("{}[[namespace]]\nname = \"a\"\n", minimal_toml()),
            Path::new("n"),
        )
        .expect("loads");
        assert!(without_default.namespace("lobby").is_none());
    }

    #[test]
    fn namespace_errors_name_the_entry() {
        let cases: &[(&str, &str)] = &[
            ("name = \"user\"", "namespace[0].name must not be \"user\": the engine owns user:<id>"),
            ("name = \"Chat\"", "namespace[0].name must be at most 64 characters of a-z"),
            ("name = \"a:b\"", "namespace[0].name must be"),
            ("subscribe = \"public\"", "namespace[0].name is required"),
            ("name = \"a\"\nsubscribe = \"everyone\"", "namespace[0].subscribe must be one of \"public\", \"owner\", \"none\" (got \"everyone\")"),
            ("name = \"a\"\npublish = \"all\"", "namespace[0].publish must be one of \"none\", \"subscribers\", \"any\""),
            ("name = \"a\"\ndurability = \"fsync\"", "namespace[0].durability must be one of \"sync\", \"buffered\""),
            ("name = \"a\"\nretention_count = 0", "namespace[0].retention_count must be"),
            ("name = \"\"\nsubscribe = \"owner\"", "namespace[0].subscribe cannot be \"owner\" for the default namespace"),
        ];
        for (body, expected) in cases {
            let toml = format!("{}[[namespace]]\n{body}\n", minimal_toml());
            let text = error_text(Config::from_toml_str(&toml, Path::new("ns.toml")));
            assert!(
                text.contains(expected) && text.ends_with("in ns.toml"),
                "{body}: {text}"
            );
        }
        let toml = format!(
            "{}[[namespace]]\nname = \"a\"\n[[namespace]]\nname = \"a\"\n",
            minimal_toml()
        );
        let text = error_text(Config::from_toml_str(&toml, Path::new("ns.toml")));
        assert!(text.contains("namespace[1].name must be unique"), "{text}");
    }

    #[test]
    fn invalid_socket_addr_names_key() {
        let toml = format!("{}[websocket]\nlisten = \"localhost:80\"\n", minimal_toml());
        let text = error_text(Config::from_toml_str(
            &toml,
            Path::new("/etc/ringcast.toml"),
        ));
        assert!(
            text.contains("websocket.listen must be an IP address and port"),
            "{text}"
        );
        assert!(
            text.contains("\"localhost:80\"") && text.ends_with("in /etc/ringcast.toml"),
            "{text}"
        );

        let base = [
            ("RINGCAST_API_KEY", KEY),
            ("RINGCAST_AUTH_JWT_SECRET", SECRET),
        ];
        let text = error_text(Config::load(raw(&["--api-listen=8081"], &base)));
        assert!(
            text.contains("api.listen must be an IP address") && text.contains("--api-listen"),
            "{text}"
        );

        let text = error_text(Config::load(raw(&["--api-listen=127.0.0.1:8080"], &base)));
        assert!(
            text.contains("api.listen must differ from websocket.listen"),
            "{text}"
        );
    }

    #[test]
    fn value_limits_enforced() {
        let cases: &[(&str, &str)] = &[
            (
                "[server]\nshards = 63",
                "server.shards must be a whole number of shards from 0 to 62 (got 63)",
            ),
            (
                "[server]\nnode_id = 64",
                "server.node_id must be a whole number of ids from 0 to 63 (got 64)",
            ),
            (
                "[server]\ndriver = \"iouring\"",
                "server.driver must be one of",
            ),
            (
                "[server]\ndata_dir = \"\"",
                "server.data_dir must be a non-empty directory path",
            ),
            (
                "[websocket]\npath = \"ws\"",
                "websocket.path must start with '/'",
            ),
            (
                "[websocket]\nmessage_bytes_max = 1023",
                "websocket.message_bytes_max must be a whole number of bytes from 1024",
            ),
            (
                "[websocket]\nframe_bytes_max = 127",
                "websocket.frame_bytes_max must be a whole number of bytes from 128",
            ),
            (
                "[websocket]\noutbound_queue_bytes_max = 4095",
                "websocket.outbound_queue_bytes_max must be a whole number of bytes from 4096",
            ),
            (
                "[websocket]\npong_timeout_ms = 5",
                "websocket.pong_timeout_ms must be a whole number of milliseconds from 10",
            ),
            (
                "[websocket]\nallowed_origins = [\"*\"]",
                "leave the list empty to allow any origin",
            ),
            (
                "[websocket]\nallowed_origins = [\"https://a.example/\"]",
                "websocket.allowed_origins entries must be origins",
            ),
            (
                "[log]\nformat = \"yaml\"",
                "log.format must be one of \"text\", \"json\" (got \"yaml\")",
            ),
        ];
        for (body, expected) in cases {
            let toml = format!("{}{body}\n", minimal_toml());
            let text = error_text(Config::from_toml_str(&toml, Path::new("l.toml")));
            assert!(
                text.contains(expected) && text.ends_with("in l.toml"),
                "{body}: {text}"
            );
        }
        // A type error from serde still names the file and line.
        let text = error_text(Config::from_toml_str(
            "[server]\nshards = -1\n",
            Path::new("l.toml"),
        ));
        assert!(
            text.contains("l.toml (line 2") && text.contains("[server]"),
            "{text}"
        );
        // Message smaller than a frame is allowed.
        let toml = format!(
            "{}[websocket]\nframe_bytes_max = 4096\nmessage_bytes_max = 1024\n",
            minimal_toml()
        );
        assert!(Config::from_toml_str(&toml, Path::new("l.toml")).is_ok());
    }

    #[test]
    fn allowed_origins_from_file_and_env() {
        let toml = format!(
            "{}[websocket]\nallowed_origins = [\"https://App.example\"]\n",
            minimal_toml()
        );
        let config = Config::from_toml_str(&toml, Path::new("o.toml")).expect("loads");
        assert_eq!(
            config.websocket.allowed_origins,
            vec!["https://app.example".to_owned()]
        );
        assert!(config.websocket.origin_allowed("https://APP.example"));
        assert!(!config.websocket.origin_allowed("https://evil.example"));

        let env = [
            ("RINGCAST_API_KEY", KEY),
            ("RINGCAST_AUTH_JWT_SECRET", SECRET),
            (
                "RINGCAST_WEBSOCKET_ALLOWED_ORIGINS",
                "https://a.example, http://localhost:3000",
            ),
        ];
        let config = Config::load(raw(&[], &env)).expect("loads");
        assert_eq!(
            config.websocket.allowed_origins,
            vec!["https://a.example", "http://localhost:3000"]
        );
    }

    #[test]
    fn shards_zero_resolves_to_cores() {
        let toml = format!("{}[server]\nshards = 0\n", minimal_toml());
        let config = Config::from_toml_str(&toml, Path::new("s.toml")).expect("loads");
        let cores = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(usize::from(SHARDS_MAX));
        assert_eq!(config.server.shards.as_usize(), cores);
        assert!(
            ShardCount::new(0).is_none()
                && ShardCount::new(SHARDS_MAX + 1).is_none()
                && ShardCount::new(SHARDS_MAX).is_some()
        );
        assert!(NodeId::new(64).is_none() && NodeId::new(63).is_some());
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let config = Config::test_min();
        let debug = format!("{config:?}");
        assert!(
            !debug.contains(config.auth.jwt_secret.expose()),
            "jwt secret leaked in Debug"
        );
        assert!(
            !debug.contains(config.api.key.expose()),
            "api key leaked in Debug"
        );
        assert!(config.api.key.matches(config.api.key.expose().as_bytes()));
        assert!(!config.api.key.matches(b"test-api-key-012345678X"));
        assert!(!config.api.key.matches(b"short"));
    }
}
