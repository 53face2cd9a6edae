//! Configuration: command line, environment and TOML file, resolved into one
//! validated, typed [`Config`] before any shard starts.
//!
//! Two stages, as in ripgrep's `lowargs`/`hiargs`:
//!
//! 1. [`RawArgs`]: what the operator typed. Long flags plus a snapshot of the
//!    `RINGCAST_*` environment variables. Everything is still a string; no
//!    syscalls beyond reading argv and the environment.
//! 2. [`Config`]: built by [`Config::load`]. It reads the TOML file (serde,
//!    `deny_unknown_fields` in every table), layers the values per key with
//!    the precedence **flag > env > file > default**, validates every value
//!    against a stated range, and resolves `server.shards = 0` to the number
//!    of available cores. Every error names the key, where the value came
//!    from (file path, `--flag` or env var) and what is allowed.
//!
//! Each key is written once, as a row of the key table in `table.rs`; the
//! structs, the file structs, the flags, the env vars and the resolve steps
//! are generated from it (`keys.rs`). The modules:
//!
//! - `table.rs`: the key table and the checks that span keys.
//! - `kinds.rs`: how each kind of value is parsed, checked and documented.
//! - `types.rs`: the value types (`ShardCount`, `Secret`, the enums).
//! - `sources.rs`: flags, environment, and the per-key layering.
//! - `error.rs`: [`ConfigError`] and [`Origin`].
//!
//! The key reference for operators is `docs/config.md`; a test checks that it
//! has a row for every key with the flag, env var, range and default that
//! the table gives.

use std::path::{Path, PathBuf};

use serde::Deserialize;

mod error;
mod keys;
mod kinds;
mod sources;
mod table;
#[cfg(test)]
mod table_tests;
#[cfg(test)]
mod tests;
mod types;

pub use error::{ConfigError, Origin};
pub use sources::{RawArgs, RawFlags, ENV_CONFIG};
pub use table::{
    ApiConfig, AuthConfig, ClusterConfig, ImConfig, LogConfig, Namespace, Proxy, ServerConfig,
    TlsConfig, WebSocketConfig, WebhookConfig,
};
pub use types::{
    shards_for_cores, ConnectProxyMode, Driver, Durability, JwtAlgorithm, LogFormat, NodeId,
    PublishPolicy, Secret, ShardCount, SubscribePolicy, WebhookEvent, WebhookEvents,
};

use error::describe_location;
use keys::Section;
use sources::Layers;

/// The config file format version this build reads. A file may say
/// `version = 1` at top level; a missing `version` means 1.
pub const CONFIG_VERSION: u64 = 1;

/// Upper bound for `server.shards` and for the resolved core count.
pub const SHARDS_MAX: u16 = ringcast_protocol::limits::SHARDS_MAX as u16;

/// Highest `server.node_id`. Node ids are packed into 6 bits of message ids.
pub const NODE_ID_MAX: u8 = ringcast_protocol::limits::NODE_ID_MAX;

/// Minimum length of `auth.jwt_secret`: 256 bits for HS256 (RFC 7518 §3.2).
pub const JWT_SECRET_BYTES_MIN: usize = 32;

/// Minimum length of `webhook.secret`: the same 256 bits as the JWT key,
/// for the same HMAC-SHA256.
pub const WEBHOOK_SECRET_BYTES_MIN: usize = JWT_SECRET_BYTES_MIN;

/// Minimum length of `api.key`.
pub const API_KEY_BYTES_MIN: usize = 16;

/// The namespace name that the engine owns for `user:<id>` personal channels.
pub const RESERVED_NAMESPACE_USER: &str = "user";

/// Longest namespace name.
pub const NAMESPACE_NAME_BYTES_MAX: usize = 64;

/// Most `[[namespace]]` tables; namespace lookup is a linear scan.
pub const NAMESPACES_MAX: usize = 256;

const _: () = assert!(ringcast_protocol::limits::SHARDS_MAX <= u16::MAX as usize);
const _: () = assert!(SHARDS_MAX as usize == ringcast_protocol::limits::SHARDS_MAX);
const _: () = assert!(JWT_SECRET_BYTES_MIN >= 32);

/// The validated configuration. Built only by [`Config::load`],
/// [`Config::from_toml_str`] or [`Config::test_min`].
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub websocket: WebSocketConfig,
    pub api: ApiConfig,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    pub webhook: WebhookConfig,
    pub im: ImConfig,
    pub cluster: ClusterConfig,
    /// `[[namespace]]` tables in file order. Names are unique.
    pub namespaces: Vec<Namespace>,
    /// `[[proxy]]` tables in file order. Names are unique; the index is
    /// the backend's index in `crate::proxy::Proxies`.
    pub proxies: Vec<Proxy>,
    pub log: LogConfig,
    /// The file the config was read from, if any (for the startup log line).
    pub file_path: Option<PathBuf>,
}

/// The TOML file as written: one serde struct per table, generated from the
/// key table, with unknown keys rejected at every level.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    version: Option<u64>,
    #[serde(default)]
    server: table::FileServer,
    #[serde(default)]
    websocket: table::FileWebSocket,
    #[serde(default)]
    api: table::FileApi,
    #[serde(default)]
    auth: table::FileAuth,
    #[serde(default)]
    tls: table::FileTls,
    #[serde(default)]
    webhook: table::FileWebhook,
    #[serde(default)]
    im: table::FileIm,
    #[serde(default)]
    cluster: table::FileCluster,
    #[serde(default)]
    namespace: Vec<table::FileNamespace>,
    #[serde(default)]
    proxy: Vec<table::FileProxy>,
    #[serde(default)]
    log: table::FileLog,
}

/// `Config::test_min`'s file, kept as TOML so it reads like an operator's.
const TEST_MIN_TOML: &str = include_str!("test_min.toml");

impl Config {
    /// Reads the config file named by `--config` or `RINGCAST_CONFIG` (if
    /// any), layers flags and env over it, validates, and resolves cores.
    pub fn load(raw: RawArgs) -> Result<Config, ConfigError> {
        raw.check_env()?;
        let config_path: Option<(PathBuf, Origin)> =
            match (&raw.flags.config, raw.env_value(ENV_CONFIG)) {
                (Some(path), _) => Some((path.clone(), Origin::Flag("--config".to_owned()))),
                (None, Some(path)) => {
                    Some((PathBuf::from(path), Origin::Env(ENV_CONFIG.to_owned())))
                }
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
        self.namespace_index(channel)
            .and_then(|idx| self.namespaces.get(idx))
    }

    /// The index in `namespaces` of `channel`'s namespace.
    pub fn namespace_index(&self, channel: &str) -> Option<usize> {
        let name = match channel.split_once(':') {
            Some(("", _)) => return None,
            Some((name, _)) => name,
            None => "",
        };
        self.namespaces
            .iter()
            .position(|namespace| namespace.name == name)
    }

    /// The index in `proxies` of the entry named `name`; `None` for "".
    pub fn proxy_index(&self, name: &str) -> Option<usize> {
        if name.is_empty() {
            return None;
        }
        self.proxies.iter().position(|proxy| proxy.name == name)
    }

    fn resolve(
        raw: &RawArgs,
        file: FileConfig,
        file_path: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let mut layers = Layers::new(raw, file_path);
        if let Some(version) = file.version {
            if version != CONFIG_VERSION {
                return Err(error::invalid(
                    "version",
                    layers.file_origin(),
                    format!(
                        "must be {CONFIG_VERSION}, the only config format this build reads \
                         (got {version})"
                    ),
                ));
            }
        }
        let server = ServerConfig::resolve(&mut layers, "server", file.server)?;
        let websocket = WebSocketConfig::resolve(&mut layers, "websocket", file.websocket)?;
        let api = ApiConfig::resolve(&mut layers, "api", file.api)?;
        table::check_listeners(&layers, &websocket, &api)?;
        let auth = AuthConfig::resolve(&mut layers, "auth", file.auth)?;
        let tls = TlsConfig::resolve(&mut layers, "tls", file.tls)?;
        table::check_tls(&layers, &tls)?;
        let webhook = WebhookConfig::resolve(&mut layers, "webhook", file.webhook)?;
        table::check_webhook(&layers, &webhook)?;
        let im = ImConfig::resolve(&mut layers, "im", file.im)?;
        let cluster = ClusterConfig::resolve(&mut layers, "cluster", file.cluster)?;
        table::check_cluster(&layers, &cluster, &im)?;
        let namespaces = table::resolve_namespaces(file_path, file.namespace)?;
        let proxies = table::resolve_proxies(file_path, file.proxy)?;
        table::check_proxy_refs(&layers, file_path, &websocket, &im, &namespaces, &proxies)?;
        let log = LogConfig::resolve(&mut layers, "log", file.log)?;
        Ok(Config {
            server,
            websocket,
            api,
            auth,
            tls,
            webhook,
            im,
            cluster,
            namespaces,
            proxies,
            log,
            file_path: file_path.map(Path::to_path_buf),
        })
    }
}

impl FileConfig {
    /// Parses TOML; errors name `path`, the position and the table.
    fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
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
