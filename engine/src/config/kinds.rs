//! Kinds of keys: how a value of each kind is read from flag or env text,
//! checked, converted into its `Config` type, and described in
//! `docs/config.md`.
//!
//! A key in the table (`table.rs`) names its kind with the kind's bounds,
//! e.g. `Bytes { default: 65536, min: 128, max: SIZE_BYTES_MAX }`. The file
//! side is plain serde: `Kind::File` is what the TOML holds, so type errors
//! (a string for a number) come from toml with a line and column, and range
//! errors come from `check` with the key and its origin.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::types::{
    shards_for_cores, Choice, NodeId, Secret, ShardCount, WebhookEvent, WebhookEvents,
};
use super::{NAMESPACE_NAME_BYTES_MAX, NODE_ID_MAX, RESERVED_NAMESPACE_USER, SHARDS_MAX};

/// How one kind of key is read, checked and documented.
pub(super) trait Kind {
    /// The value as the TOML file holds it.
    type File: DeserializeOwned + DocValue;
    /// The checked value that `Config` holds.
    type Value;

    /// The built-in default, or `None` for a key that must be set.
    fn default_value(&self) -> Option<Self::File>;
    /// A flag's or env var's text as the file would hold it. `Err` is the
    /// problem, phrased to follow the key: "must be ...".
    fn parse_text(&self, text: &str) -> Result<Self::File, String>;
    /// Checks a value from any source, defaults included.
    fn check(&self, value: Self::File) -> Result<Self::Value, Rejection>;
    /// The Type cell of the key's row in docs/config.md.
    fn doc_type(&self) -> String;
    /// The Default cell of the key's row in docs/config.md.
    fn doc_default(&self) -> String {
        self.default_value()
            .map_or_else(|| "**required**".to_owned(), |value| value.doc())
    }
}

/// A value as docs/config.md shows it in a Default cell: TOML in backticks.
pub(super) trait DocValue {
    fn doc(&self) -> String;
}

/// A kind whose file value is a whole number: its bounds, and how a number
/// in them becomes the `Config` type. All such kinds read, check and
/// document the same way (the blanket `Kind` impl below).
pub(super) trait Whole {
    type Value;
    fn bounds(&self) -> Bounds;
    /// `value` is in `bounds()`.
    fn convert(&self, value: u64) -> Result<Self::Value, Rejection>;
}

pub(super) struct Bounds {
    default: u64,
    min: u64,
    max: u64,
    /// What is counted, in error messages ("bytes"); empty for a bare number.
    unit: &'static str,
    /// The unit in docs/config.md's Type cell (" ms"); empty for none.
    doc_unit: &'static str,
}

/// Why `Kind::check` refused a value.
#[derive(Debug)]
pub(super) enum Rejection {
    /// The value breaks the key's rule; the text follows the key.
    Problem(String),
    /// `server.shards = 0` and the host cannot say how many cores it has.
    Cores(std::io::Error),
}

/// A count in `min..=max`, converted to `T`. `unit` names what is counted in
/// error messages ("items"); empty for a bare number.
pub(super) struct Count<T> {
    pub default: T,
    pub min: T,
    pub max: T,
    pub unit: &'static str,
}

/// A size in bytes.
pub(super) struct Bytes {
    pub default: u64,
    pub min: u64,
    pub max: u64,
}

/// A duration given in whole milliseconds (keys ending in `_ms`).
pub(super) struct Millis {
    pub default: u64,
    pub min: u64,
    pub max: u64,
}

/// A duration given in whole microseconds (keys ending in `_us`).
pub(super) struct Micros {
    pub default: u64,
    pub min: u64,
    pub max: u64,
}

/// A duration given in whole seconds (keys ending in `_s`).
pub(super) struct Seconds {
    pub default: u64,
    pub min: u64,
    pub max: u64,
}

/// `server.shards`: 0..=SHARDS_MAX, where 0 means one shard per core.
pub(super) struct Shards {
    pub default: u64,
}

/// `server.node_id`: 0..=NODE_ID_MAX.
pub(super) struct Node {
    pub default: u8,
}

/// `true` or `false`.
pub(super) struct Bool {
    pub default: bool,
}

/// One of an enum's names (see [`Choice`]).
pub(super) struct Pick<T> {
    pub default: T,
}

/// An IP address and port. Host names are not resolved: resolving would be
/// a syscall with its own failure modes at config time.
pub(super) struct Addr {
    pub default: &'static str,
}

/// An HTTP path starting with '/'.
pub(super) struct UrlPath {
    pub default: &'static str,
}

/// A non-empty directory path. The store creates it, not the config.
pub(super) struct DirPath {
    pub default: &'static str,
}

/// An optional file path: `""` (the default) for none. Whether the file
/// exists and what it holds is checked by whoever reads it (TLS files are
/// read at startup and on every reload, `crate::tls`), not here.
pub(super) struct FilePath {}

/// `tracing` `EnvFilter` directives, non-empty. Parsed when the logger
/// starts, so that the config does not depend on tracing-subscriber.
pub(super) struct Filter {
    pub default: &'static str,
}

/// Allowed `Origin` header values, lowercased. Comma-separated in flags and
/// env vars, an array in the file.
pub(super) struct Origins {}

/// HTTP header names, lowercased. Comma-separated in flags and env vars, an
/// array in the file.
pub(super) struct HeaderNames {
    pub default: &'static [&'static str],
}

/// A secret of at least `bytes_min` bytes, with no default. Never echoed.
pub(super) struct SecretKey {
    pub bytes_min: usize,
}

/// A secret of at least `bytes_min` bytes, or `""` (the default) for none;
/// whether it is needed depends on other keys (checked across the table).
pub(super) struct OptionalSecret {
    pub bytes_min: usize,
}

/// `webhook.events`: names of [`WebhookEvent`]s, all by default.
/// Comma-separated in flags and env vars, an array in the file.
pub(super) struct WebhookEventList {}

/// A `[[namespace]]` name: required, `[a-z0-9_-]*`, not reserved.
pub(super) struct NamespaceName {}

/// Longest `[[proxy]]` name.
pub(super) const PROXY_NAME_BYTES_MAX: usize = 64;

fn is_proxy_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= PROXY_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// "a whole number of {unit} from {min} to {max}".
fn whole_number(bounds: &Bounds) -> String {
    let Bounds { min, max, unit, .. } = bounds;
    if unit.is_empty() {
        format!("a whole number from {min} to {max}")
    } else {
        format!("a whole number of {unit} from {min} to {max}")
    }
}

/// A list given as one flag or env var: comma-separated, blanks dropped.
fn comma_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|part| part.trim().to_owned())
        .filter(|part| !part.is_empty())
        .collect()
}

fn quoted(text: &str) -> String {
    format!("`\"{text}\"`")
}

impl<W: Whole> Kind for W {
    type File = u64;
    type Value = W::Value;

    fn default_value(&self) -> Option<u64> {
        Some(self.bounds().default)
    }

    fn parse_text(&self, text: &str) -> Result<u64, String> {
        text.parse::<u64>()
            .map_err(|_| format!("must be {} (got {text:?})", whole_number(&self.bounds())))
    }

    fn check(&self, value: u64) -> Result<W::Value, Rejection> {
        let bounds = self.bounds();
        if !(bounds.min..=bounds.max).contains(&value) {
            return Err(Rejection::Problem(format!(
                "must be {} (got {value})",
                whole_number(&bounds)
            )));
        }
        self.convert(value)
    }

    fn doc_type(&self) -> String {
        let Bounds {
            min, max, doc_unit, ..
        } = self.bounds();
        format!("integer {min}..={max}{doc_unit}")
    }
}

impl<T> Whole for Count<T>
where
    T: Copy + TryFrom<u64>,
    u64: TryFrom<T>,
{
    type Value = T;

    fn bounds(&self) -> Bounds {
        // The bounds are Ts that fit u64 (u32, usize and u64 on 64-bit).
        let wide = |value: T| u64::try_from(value).unwrap_or(u64::MAX);
        Bounds {
            default: wide(self.default),
            min: wide(self.min),
            max: wide(self.max),
            unit: self.unit,
            doc_unit: "",
        }
    }

    fn convert(&self, value: u64) -> Result<T, Rejection> {
        T::try_from(value)
            .map_err(|_| Rejection::Problem(format!("{value} does not fit this platform")))
    }
}

impl Whole for Bytes {
    type Value = usize;

    fn bounds(&self) -> Bounds {
        Bounds {
            default: self.default,
            min: self.min,
            max: self.max,
            unit: "bytes",
            doc_unit: " bytes",
        }
    }

    fn convert(&self, value: u64) -> Result<usize, Rejection> {
        usize::try_from(value).map_err(|_| {
            Rejection::Problem(format!("{value} bytes does not fit this platform's usize"))
        })
    }
}

/// The three duration kinds differ only in their unit.
macro_rules! duration_kind {
    ($kind:ident, $unit:literal, $doc_unit:literal, $from:path) => {
        impl Whole for $kind {
            type Value = Duration;

            fn bounds(&self) -> Bounds {
                Bounds {
                    default: self.default,
                    min: self.min,
                    max: self.max,
                    unit: $unit,
                    doc_unit: $doc_unit,
                }
            }

            fn convert(&self, value: u64) -> Result<Duration, Rejection> {
                Ok($from(value))
            }
        }
    };
}

duration_kind!(Millis, "milliseconds", " ms", Duration::from_millis);
duration_kind!(Micros, "microseconds", " µs", Duration::from_micros);
duration_kind!(Seconds, "seconds", " s", Duration::from_secs);

impl Whole for Shards {
    type Value = ShardCount;

    fn bounds(&self) -> Bounds {
        Bounds {
            default: self.default,
            min: 0,
            max: u64::from(SHARDS_MAX),
            unit: "shards",
            doc_unit: "",
        }
    }

    fn convert(&self, value: u64) -> Result<ShardCount, Rejection> {
        if let Some(shards) = u16::try_from(value).ok().and_then(ShardCount::new) {
            return Ok(shards);
        }
        // 0: one per core. available_parallelism honors cgroup quotas and
        // the affinity mask, so a container gets its share, not the host's.
        let cores = std::thread::available_parallelism().map_err(Rejection::Cores)?;
        Ok(shards_for_cores(cores.get()))
    }
}

impl Whole for Node {
    type Value = NodeId;

    fn bounds(&self) -> Bounds {
        Bounds {
            default: u64::from(self.default),
            min: 0,
            max: u64::from(NODE_ID_MAX),
            unit: "ids",
            doc_unit: "",
        }
    }

    fn convert(&self, value: u64) -> Result<NodeId, Rejection> {
        u8::try_from(value)
            .ok()
            .and_then(NodeId::new)
            .ok_or_else(|| Rejection::Problem(format!("must be at most {NODE_ID_MAX}")))
    }
}

impl DocValue for u64 {
    fn doc(&self) -> String {
        format!("`{self}`")
    }
}

impl DocValue for bool {
    fn doc(&self) -> String {
        format!("`{self}`")
    }
}

impl DocValue for String {
    fn doc(&self) -> String {
        quoted(self)
    }
}

impl DocValue for Vec<String> {
    fn doc(&self) -> String {
        let items: Vec<String> = self.iter().map(|item| format!("\"{item}\"")).collect();
        format!("`[{}]`", items.join(", "))
    }
}

impl Kind for Bool {
    type File = bool;
    type Value = bool;

    fn default_value(&self) -> Option<bool> {
        Some(self.default)
    }

    fn parse_text(&self, text: &str) -> Result<bool, String> {
        match text {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!("must be true or false (got {text:?})")),
        }
    }

    fn check(&self, value: bool) -> Result<bool, Rejection> {
        Ok(value)
    }

    fn doc_type(&self) -> String {
        "bool".to_owned()
    }
}

impl<T: Choice> Kind for Pick<T> {
    type File = String;
    type Value = T;

    fn default_value(&self) -> Option<String> {
        Some(self.default.name().to_owned())
    }

    fn parse_text(&self, text: &str) -> Result<String, String> {
        Ok(text.to_owned())
    }

    fn check(&self, value: String) -> Result<T, Rejection> {
        T::parse(&value).ok_or_else(|| Rejection::Problem(T::problem(&value)))
    }

    fn doc_type(&self) -> String {
        let names: Vec<String> = T::CHOICES.iter().map(|(name, _)| quoted(name)).collect();
        names.join(" \\| ")
    }
}

impl Kind for Addr {
    type File = String;
    type Value = SocketAddr;

    fn default_value(&self) -> Option<String> {
        Some(self.default.to_owned())
    }

    fn parse_text(&self, text: &str) -> Result<String, String> {
        Ok(text.to_owned())
    }

    fn check(&self, value: String) -> Result<SocketAddr, Rejection> {
        value.parse::<SocketAddr>().map_err(|_| {
            Rejection::Problem(format!(
                "must be an IP address and port such as 127.0.0.1:8080 or [::1]:8080; host \
                 names are not resolved (got {value:?})"
            ))
        })
    }

    fn doc_type(&self) -> String {
        "IP socket address".to_owned()
    }
}

impl Kind for UrlPath {
    type File = String;
    type Value = String;

    fn default_value(&self) -> Option<String> {
        Some(self.default.to_owned())
    }

    fn parse_text(&self, text: &str) -> Result<String, String> {
        Ok(text.to_owned())
    }

    fn check(&self, path: String) -> Result<String, Rejection> {
        // '?' and '#' would never match a request path: the handshake
        // compares the path before the query.
        let bad = |c: char| c.is_whitespace() || c.is_control() || c == '?' || c == '#';
        if !path.starts_with('/') || path.contains(bad) {
            return Err(Rejection::Problem(format!(
                "must start with '/' and contain no whitespace, '?' or '#' (got {path:?})"
            )));
        }
        Ok(path)
    }

    fn doc_type(&self) -> String {
        "string starting with `/`".to_owned()
    }
}

impl Kind for DirPath {
    type File = String;
    type Value = PathBuf;

    fn default_value(&self) -> Option<String> {
        Some(self.default.to_owned())
    }

    fn parse_text(&self, text: &str) -> Result<String, String> {
        Ok(text.to_owned())
    }

    fn check(&self, path: String) -> Result<PathBuf, Rejection> {
        if path.trim().is_empty() {
            return Err(Rejection::Problem(
                "must be a non-empty directory path".to_owned(),
            ));
        }
        Ok(PathBuf::from(path))
    }

    fn doc_type(&self) -> String {
        "path, non-empty".to_owned()
    }
}

impl Kind for FilePath {
    type File = String;
    type Value = Option<PathBuf>;

    fn default_value(&self) -> Option<String> {
        Some(String::new())
    }

    fn parse_text(&self, text: &str) -> Result<String, String> {
        Ok(text.to_owned())
    }

    fn check(&self, path: String) -> Result<Option<PathBuf>, Rejection> {
        if path.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(PathBuf::from(path)))
    }

    fn doc_type(&self) -> String {
        "path, or `\"\"` for none".to_owned()
    }
}

impl Kind for Filter {
    type File = String;
    type Value = String;

    fn default_value(&self) -> Option<String> {
        Some(self.default.to_owned())
    }

    fn parse_text(&self, text: &str) -> Result<String, String> {
        Ok(text.to_owned())
    }

    fn check(&self, filter: String) -> Result<String, Rejection> {
        if filter.trim().is_empty() {
            return Err(Rejection::Problem(
                "must be a tracing filter such as \"info\" or \"ringcast=debug,warn\"".to_owned(),
            ));
        }
        Ok(filter)
    }

    fn doc_type(&self) -> String {
        "string".to_owned()
    }
}

impl Kind for Origins {
    type File = Vec<String>;
    type Value = Vec<String>;

    fn default_value(&self) -> Option<Vec<String>> {
        Some(Vec::new())
    }

    fn parse_text(&self, text: &str) -> Result<Vec<String>, String> {
        Ok(comma_list(text))
    }

    fn check(&self, origins: Vec<String>) -> Result<Vec<String>, Rejection> {
        let mut normalized: Vec<String> = Vec::with_capacity(origins.len());
        for allowed in origins {
            let well_formed = !allowed.is_empty()
                && !allowed.ends_with('/')
                && !allowed.contains(|c: char| c.is_whitespace() || c.is_control())
                && allowed.split_once("://").is_some_and(|(scheme, host)| {
                    !scheme.is_empty() && !host.is_empty() && !host.contains('/')
                });
            if !well_formed {
                return Err(Rejection::Problem(format!(
                    "entries must be origins like https://example.com or http://localhost:3000, \
                     with no path or trailing '/'; leave the list empty to allow any origin \
                     (got {allowed:?})"
                )));
            }
            // Browsers send the scheme and host in lower case; comparing
            // lowercased copies makes a config typo in case harmless.
            normalized.push(allowed.to_ascii_lowercase());
        }
        Ok(normalized)
    }

    fn doc_type(&self) -> String {
        "array of origins".to_owned()
    }
}

impl Kind for HeaderNames {
    type File = Vec<String>;
    type Value = Vec<String>;

    fn default_value(&self) -> Option<Vec<String>> {
        Some(self.default.iter().map(|name| (*name).to_owned()).collect())
    }

    fn parse_text(&self, text: &str) -> Result<Vec<String>, String> {
        Ok(comma_list(text))
    }

    fn check(&self, names: Vec<String>) -> Result<Vec<String>, Rejection> {
        let mut normalized: Vec<String> = Vec::with_capacity(names.len());
        for name in names {
            // RFC 9110 §5.6.2 token characters.
            let well_formed = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !well_formed {
                return Err(Rejection::Problem(format!(
                    "entries must be HTTP header names like \"cookie\" (got {name:?})"
                )));
            }
            let name = name.to_ascii_lowercase();
            if !normalized.contains(&name) {
                normalized.push(name);
            }
        }
        Ok(normalized)
    }

    fn doc_type(&self) -> String {
        "array of header names".to_owned()
    }
}

impl Kind for SecretKey {
    type File = String;
    type Value = Secret;

    fn default_value(&self) -> Option<String> {
        // A default secret would be a shared, public secret.
        None
    }

    fn parse_text(&self, text: &str) -> Result<String, String> {
        Ok(text.to_owned())
    }

    fn check(&self, value: String) -> Result<Secret, Rejection> {
        if value.len() < self.bytes_min {
            return Err(Rejection::Problem(format!(
                "must be at least {} bytes (got {})",
                self.bytes_min,
                value.len()
            )));
        }
        Ok(Secret::new(value))
    }

    fn doc_type(&self) -> String {
        format!("string, ≥ {} bytes", self.bytes_min)
    }
}

impl Kind for OptionalSecret {
    type File = String;
    type Value = Option<Secret>;

    fn default_value(&self) -> Option<String> {
        Some(String::new())
    }

    fn parse_text(&self, text: &str) -> Result<String, String> {
        Ok(text.to_owned())
    }

    fn check(&self, value: String) -> Result<Option<Secret>, Rejection> {
        if value.is_empty() {
            return Ok(None);
        }
        SecretKey {
            bytes_min: self.bytes_min,
        }
        .check(value)
        .map(Some)
    }

    fn doc_type(&self) -> String {
        format!("string, ≥ {} bytes, or `\"\"` for none", self.bytes_min)
    }
}

impl Kind for WebhookEventList {
    type File = Vec<String>;
    type Value = WebhookEvents;

    fn default_value(&self) -> Option<Vec<String>> {
        Some(
            WebhookEvent::CHOICES
                .iter()
                .map(|(name, _)| (*name).to_owned())
                .collect(),
        )
    }

    fn parse_text(&self, text: &str) -> Result<Vec<String>, String> {
        Ok(comma_list(text))
    }

    fn check(&self, names: Vec<String>) -> Result<WebhookEvents, Rejection> {
        let mut events = WebhookEvents::NONE;
        for name in &names {
            let event = WebhookEvent::parse(name).ok_or_else(|| {
                Rejection::Problem(format!(
                    "entries must be {} (got {name:?})",
                    WebhookEvent::quoted_names(", ")
                ))
            })?;
            events = events.with(event);
        }
        Ok(events)
    }

    fn doc_type(&self) -> String {
        let names: Vec<String> = WebhookEvent::CHOICES
            .iter()
            .map(|(name, _)| quoted(name))
            .collect();
        format!("array of {}", names.join(", "))
    }
}

impl Kind for NamespaceName {
    type File = String;
    type Value = String;

    fn default_value(&self) -> Option<String> {
        None
    }

    fn parse_text(&self, text: &str) -> Result<String, String> {
        Ok(text.to_owned())
    }

    fn check(&self, name: String) -> Result<String, Rejection> {
        let name_ok = name.len() <= NAMESPACE_NAME_BYTES_MAX
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(Rejection::Problem(format!(
                "must be at most {NAMESPACE_NAME_BYTES_MAX} characters of a-z, 0-9, '_' and \
                 '-', or \"\" for the default namespace (got {name:?})"
            )));
        }
        if name == RESERVED_NAMESPACE_USER {
            return Err(Rejection::Problem(
                "must not be \"user\": the engine owns user:<id> personal channels; pick another \
                 name"
                    .to_owned(),
            ));
        }
        Ok(name)
    }

    fn doc_type(&self) -> String {
        "string, **required**".to_owned()
    }

    fn doc_default(&self) -> String {
        String::new()
    }
}

/// A string checked by `check`; the proxy keys' kinds.
pub(super) struct Text {
    /// `None`: required.
    pub default: Option<&'static str>,
    pub check: fn(&str) -> Result<(), String>,
    pub doc_type: &'static str,
}

impl Kind for Text {
    type File = String;
    type Value = String;

    fn default_value(&self) -> Option<String> {
        self.default.map(str::to_owned)
    }

    fn parse_text(&self, text: &str) -> Result<String, String> {
        Ok(text.to_owned())
    }

    fn check(&self, value: String) -> Result<String, Rejection> {
        (self.check)(&value).map_err(Rejection::Problem)?;
        Ok(value)
    }

    fn doc_type(&self) -> String {
        self.doc_type.to_owned()
    }

    fn doc_default(&self) -> String {
        self.default
            .map_or_else(String::new, |value| value.to_owned().doc())
    }
}

/// A `[[proxy]]` name: 1 to 64 of `[a-z0-9_-]`.
pub(super) fn proxy_name(name: &str) -> Result<(), String> {
    if is_proxy_name(name) {
        return Ok(());
    }
    Err(format!(
        "must be 1 to {PROXY_NAME_BYTES_MAX} characters of a-z, 0-9, '_' and '-' (got {name:?})"
    ))
}

/// A `[[proxy]]` URL: `http://host[:port][/path]`.
pub(super) fn proxy_url(url: &str) -> Result<(), String> {
    let parsed = url.parse::<hyper::Uri>().ok();
    let ok = parsed.as_ref().is_some_and(|uri| {
        uri.scheme_str() == Some("http") && uri.host().is_some_and(|host| !host.is_empty())
    });
    if ok {
        return Ok(());
    }
    Err(format!(
        "must be an http:// URL such as http://127.0.0.1:3000/ringcast/publish (https is not \
         supported: run the backend on a private interface) (got {url:?})"
    ))
}

/// `webhook.url`: an http:// URL like a proxy's, or "" for webhooks off.
pub(super) fn webhook_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Ok(());
    }
    proxy_url(url).map_err(|problem| format!("{problem}; or \"\" to turn webhooks off"))
}

/// `cluster.nats_url`: `nats://host:port`, or "" for a single node.
pub(super) fn nats_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Ok(());
    }
    let parsed = url.parse::<hyper::Uri>().ok();
    let ok = parsed.as_ref().is_some_and(|uri| {
        uri.scheme_str() == Some("nats")
            && uri.host().is_some_and(|host| !host.is_empty())
            && uri.port_u16().is_some()
    });
    if ok {
        return Ok(());
    }
    Err(format!(
        "must be a nats://host:port URL such as nats://127.0.0.1:4222, or \"\" for a single \
         node (got {url:?})"
    ))
}

/// An `ip:port` socket address, or "" for none (`api.node_listen`).
pub(super) fn optional_addr(addr: &str) -> Result<(), String> {
    if addr.is_empty() || addr.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    Err(format!(
        "must be an ip:port address such as 127.0.0.1:9081, or \"\" for none (got {addr:?})"
    ))
}

/// A NATS subject token of ours: 1 to 32 of `[A-Za-z0-9_-]` (no `.`, `*`
/// or `>`, which NATS gives a meaning).
pub(super) fn subject_token(token: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&token.len())
        && token
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if ok {
        return Ok(());
    }
    Err(format!(
        "must be 1 to 32 of A-Z, a-z, 0-9, _ and - (got {token:?})"
    ))
}

/// A reference to a `[[proxy]]` entry, or "" for none. That the entry
/// exists is checked across tables (`table::check_proxy_refs`).
pub(super) fn proxy_ref(name: &str) -> Result<(), String> {
    if name.is_empty() || is_proxy_name(name) {
        return Ok(());
    }
    Err(format!(
        "must be the name of a [[proxy]] entry, or \"\" for none (got {name:?})"
    ))
}
