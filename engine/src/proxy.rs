//! Proxies to the app's backend: synchronous hooks on client commands.
//!
//! A shard never touches the network for a proxy. It builds the JSON body,
//! hands it to [`Proxies::call`] and parks the command: the call runs on the
//! proxy thread (one tokio runtime, hyper-util's pooled HTTP/1.1 client,
//! one semaphore per backend bounding the calls in flight), and its answer
//! comes back as a oneshot the shard polls among its store replies, so the
//! shard's loop wakes for it like for a history page. A stalled backend
//! costs the asking command its timeout and nothing else.
//!
//! The same thread asks the `connect` proxy whether (and as whom) an
//! upgrade is let in, and the `refresh` proxy whether a connection near its
//! expiry may go on: one answer format ([`parse_answer`]) for every event,
//! whose `result` may carry [`Overrides`] for those two.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use crate::backend_http::{post_json, BackendClient, PostError, RuntimeThread};
use crate::config::Config;

/// Largest backend response body read; a larger one is a bad response.
pub const PROXY_RESPONSE_BYTES_MAX: usize = 1024 * 1024;

/// Calls a backend may have outstanding (in flight and waiting for a slot)
/// per unit of its `concurrency_max`; past that a call is refused at once
/// (117) rather than queued on the proxy thread without bound.
pub const PROXY_OUTSTANDING_PER_SLOT_MAX: usize = 64;

/// Why a call produced no answer from the backend.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("the backend did not answer within {0} ms")]
    Timeout(u64),
    #[error("the backend is unreachable: {0}")]
    Unavailable(String),
    #[error("the backend's answer is not valid: {0}")]
    BadResponse(String),
    #[error("the proxy thread has stopped")]
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyStartError {
    #[error("cannot start the proxy thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("[[proxy]] {name}: url {url:?} is not a valid URI")]
    Url { name: String, url: String },
}

/// The events a backend can be asked about, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyEvent {
    Connect,
    Refresh,
    Subscribe,
    Publish,
    Send,
    Rpc,
    /// A message that would start a DM to a user whose DM policy is
    /// `backend` (`crate::im::dm_policy`).
    DmPolicy,
}

impl ProxyEvent {
    pub const ALL: [ProxyEvent; 7] = [
        ProxyEvent::Connect,
        ProxyEvent::Refresh,
        ProxyEvent::Subscribe,
        ProxyEvent::Publish,
        ProxyEvent::Send,
        ProxyEvent::Rpc,
        ProxyEvent::DmPolicy,
    ];

    /// The `event` label in `/metrics`.
    pub const fn name(self) -> &'static str {
        match self {
            ProxyEvent::Connect => "connect",
            ProxyEvent::Refresh => "refresh",
            ProxyEvent::Subscribe => "subscribe",
            ProxyEvent::Publish => "publish",
            ProxyEvent::Send => "send",
            ProxyEvent::Rpc => "rpc",
            ProxyEvent::DmPolicy => "dm_policy",
        }
    }

    /// The index in [`ProxyEvent::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// What the backend decided, parsed on the proxy thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on; `data` replaces the command's data when set; `overrides` is
    /// what a `connect` or `refresh` answer set (other events ignore it);
    /// `skip_history`: a `publish` answer's "deliver, do not store".
    Allow {
        data: Option<Data>,
        overrides: Option<Box<Overrides>>,
        skip_history: bool,
    },
    /// Refuse the command with this message.
    Deny { code: u32, message: String },
    /// Close the connection with this close code and reason.
    Disconnect { code: u16, reason: String },
}

/// Data a backend returned: raw JSON (`data`) or bytes (`b64data`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    pub bytes: Vec<u8>,
    pub is_json: bool,
}

/// What a `connect` (all of it) or `refresh` (`expire_at`) backend may set
/// when it allows. Checked by the shard (`admission::apply_overrides`), not
/// here: the rules are the config's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// The connection's user id (replaces the token's).
    pub user: Option<String>,
    /// Raw JSON the app attaches to the connection (shown by presence).
    pub info: Option<Box<str>>,
    /// Channel grants, like the token's `channels` claim (replace it).
    pub channels: Option<Vec<String>>,
    /// Channels joined at connect, like the token's `subs` claim (added).
    pub subs: Vec<String>,
    /// When the connection expires, Unix seconds; 0 for never.
    pub expire_at: Option<u64>,
}

/// The close codes a backend may choose for `disconnect`; any other is
/// replaced by [`ringcast_protocol::close::CloseCode::PROXY_DISCONNECT`].
pub const BACKEND_CLOSE_CODES: std::ops::RangeInclusive<u16> = 4500..=4999;

#[derive(Deserialize)]
struct WireAnswer<'a> {
    #[serde(borrow, default)]
    result: Option<WireResult<'a>>,
    #[serde(default)]
    error: Option<WireError>,
    #[serde(default)]
    disconnect: Option<WireDisconnect>,
}

#[derive(Deserialize)]
struct WireResult<'a> {
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    b64data: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(borrow, default)]
    info: Option<&'a RawValue>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    subs: Option<Vec<String>>,
    #[serde(default)]
    expire_at: Option<u64>,
    #[serde(default)]
    skip_history: bool,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    code: u32,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct WireDisconnect {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    reason: String,
}

/// Parses a backend's 200 response body.
pub fn parse_answer(body: &[u8]) -> Result<Decision, ProxyError> {
    let wire: WireAnswer<'_> =
        serde_json::from_slice(body).map_err(|err| ProxyError::BadResponse(err.to_string()))?;
    if let Some(disconnect) = wire.disconnect {
        let code = if BACKEND_CLOSE_CODES.contains(&disconnect.code) {
            disconnect.code
        } else {
            ringcast_protocol::close::CloseCode::PROXY_DISCONNECT.0
        };
        return Ok(Decision::Disconnect {
            code,
            reason: disconnect.reason,
        });
    }
    if let Some(error) = wire.error {
        return Ok(Decision::Deny {
            code: error.code,
            message: error.message,
        });
    }
    let Some(result) = wire.result else {
        return Err(ProxyError::BadResponse(
            "the body has none of result, error, disconnect".into(),
        ));
    };
    let data = match (result.data, result.b64data) {
        (Some(_), Some(_)) => {
            return Err(ProxyError::BadResponse(
                "result has both data and b64data".into(),
            ))
        }
        (Some(raw), None) => Some(Data {
            bytes: raw.get().as_bytes().to_vec(),
            is_json: true,
        }),
        (None, Some(b64)) => {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|err| ProxyError::BadResponse(format!("b64data: {err}")))?;
            Some(Data {
                bytes,
                is_json: false,
            })
        }
        (None, None) => None,
    };
    let has_overrides = result.user.is_some()
        || result.info.is_some()
        || result.channels.is_some()
        || result.subs.is_some()
        || result.expire_at.is_some();
    let overrides = has_overrides.then(|| {
        Box::new(Overrides {
            user: result.user,
            info: result.info.map(|raw| Box::from(raw.get())),
            channels: result.channels,
            subs: result.subs.unwrap_or_default(),
            expire_at: result.expire_at,
        })
    });
    Ok(Decision::Allow {
        data,
        overrides,
        skip_history: result.skip_history,
    })
}

/// The body of a `publish`, `send` or `rpc` call.
#[derive(serde::Serialize)]
struct CallBody<'a> {
    client: String,
    user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    /// `send`: the user the message is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    /// `rpc`: the method the client named.
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    b64data: Option<String>,
}

/// What a call is about, besides who makes it and its data.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    Publish { channel: &'a str },
    Send { to: &'a str },
    Rpc { method: &'a str },
    Subscribe { channel: &'a str },
}

impl Subject<'_> {
    pub fn event(&self) -> ProxyEvent {
        match self {
            Subject::Publish { .. } => ProxyEvent::Publish,
            Subject::Send { .. } => ProxyEvent::Send,
            Subject::Rpc { .. } => ProxyEvent::Rpc,
            Subject::Subscribe { .. } => ProxyEvent::Subscribe,
        }
    }
}

/// The body of a `connect` call: who is knocking and with what.
#[derive(serde::Serialize)]
pub struct ConnectBody<'a> {
    pub client: String,
    pub transport: &'static str,
    /// The token's user (`after_token`), or "" (`replace_token`, or an
    /// anonymous connection).
    pub user: &'a str,
    /// `websocket.connect_proxy_headers` the request carried, by lowercase
    /// name.
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// The `cookie` header parsed, when it is forwarded.
    pub cookies: serde_json::Map<String, serde_json::Value>,
    /// The peer's address (the TCP source; see `x-forwarded-for` behind a
    /// load balancer).
    pub remote_addr: Option<String>,
    pub path: &'a str,
    /// The URL's query parameters, percent-decoded, except `token`.
    pub query: serde_json::Map<String, serde_json::Value>,
}

/// The body of a `connect` call from the upgrade's parts.
pub fn connect_body(
    client_id: u64,
    user: &str,
    headers: Vec<(String, String)>,
    remote_addr: Option<std::net::IpAddr>,
    path: &str,
    query: Option<&str>,
) -> Vec<u8> {
    let mut cookies = serde_json::Map::new();
    for (name, value) in &headers {
        if name == "cookie" {
            // The first of a repeated name wins, as in browsers' order
            // (most specific path first) and Go, Node and Centrifugo: a
            // cookie a sibling subdomain set (cookie tossing) comes later
            // and cannot shadow the app's own.
            for (name, value) in parse_cookies(value) {
                cookies
                    .entry(name.to_owned())
                    .or_insert_with(|| value.to_owned().into());
            }
        }
    }
    let mut params = serde_json::Map::new();
    for pair in query.unwrap_or_default().split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = ringcast_protocol::handshake::percent_decode(name);
        let value = ringcast_protocol::handshake::percent_decode(value);
        if let (Some(name), Some(value)) = (name, value) {
            // The token is the engine's to check, not the app's to log.
            if !name.is_empty() && name != "token" {
                params.insert(name, value.into());
            }
        }
    }
    let body = ConnectBody {
        client: client_id.to_string(),
        transport: "websocket",
        user,
        headers: headers
            .into_iter()
            .map(|(name, value)| (name, value.into()))
            .collect(),
        cookies,
        remote_addr: remote_addr.map(|ip| ip.to_string()),
        path,
        query: params,
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The body of a `refresh` call.
pub fn refresh_body(client_id: u64, user: &str, expire_at_s: u64) -> Vec<u8> {
    let body = serde_json::json!({
        "client": client_id.to_string(),
        "user": user,
        "expire_at": expire_at_s,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// `name=value` pairs of a `Cookie` header (RFC 6265 §4.2.1), values
/// unquoted; a pair without `=` is skipped.
pub fn parse_cookies(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        let name = name.trim();
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        (!name.is_empty()).then_some((name, value))
    })
}

/// The JSON body of a call: JSON data goes in `data` as it is, binary data
/// base64-encoded in `b64data` (as Centrifugo does).
pub fn call_body(
    client_id: u64,
    user: &str,
    subject: Subject<'_>,
    data: Option<(&[u8], bool)>,
) -> Vec<u8> {
    let raw = match data {
        Some((data, true)) => serde_json::from_slice::<&RawValue>(data).ok(),
        _ => None,
    };
    let b64data = match data {
        Some((data, _)) if raw.is_none() => {
            use base64::Engine as _;
            Some(base64::engine::general_purpose::STANDARD.encode(data))
        }
        _ => None,
    };
    let (channel, to, method) = match subject {
        Subject::Publish { channel } | Subject::Subscribe { channel } => {
            (Some(channel), None, None)
        }
        Subject::Send { to } => (None, Some(to), None),
        Subject::Rpc { method } => (None, None, Some(method)),
    };
    let body = CallBody {
        client: client_id.to_string(),
        user,
        channel,
        to,
        method,
        data: raw,
        b64data,
    };
    // Serializing strings and raw JSON into a Vec cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

struct Backend {
    uri: hyper::Uri,
    timeout: Duration,
    permits: Arc<Semaphore>,
    /// Calls handed over and not yet answered, against `outstanding_max`.
    outstanding: Arc<std::sync::atomic::AtomicUsize>,
    outstanding_max: usize,
}

/// The proxy thread and the configured backends, by `Config::proxies` index.
pub struct Proxies {
    backends: Vec<Backend>,
    client: BackendClient,
    /// Dropped with `Proxies`: the runtime (with calls still pending) goes.
    runtime: RuntimeThread,
}

impl Proxies {
    /// Starts the proxy thread when any `[[proxy]]` is configured.
    pub fn start(config: &Config) -> Result<Option<Proxies>, ProxyStartError> {
        if config.proxies.is_empty() {
            return Ok(None);
        }
        let mut backends = Vec::with_capacity(config.proxies.len());
        for proxy in &config.proxies {
            let uri = proxy.url.parse().map_err(|_| ProxyStartError::Url {
                name: proxy.name.clone(),
                url: proxy.url.clone(),
            })?;
            backends.push(Backend {
                uri,
                timeout: proxy.timeout,
                permits: Arc::new(Semaphore::new(proxy.concurrency_max as usize)),
                outstanding: Arc::default(),
                outstanding_max: (proxy.concurrency_max as usize)
                    .saturating_mul(PROXY_OUTSTANDING_PER_SLOT_MAX),
            });
        }
        let runtime = RuntimeThread::spawn("ringcast-proxy").map_err(ProxyStartError::Thread)?;
        let client = crate::backend_http::pooled_client();
        Ok(Some(Proxies {
            backends,
            client,
            runtime,
        }))
    }

    /// Backend `index`'s timeout (`[[proxy]] timeout_ms`).
    pub fn timeout(&self, index: usize) -> Option<Duration> {
        self.backends.get(index).map(|backend| backend.timeout)
    }

    /// Posts `body` to backend `index` on the proxy thread. Never blocks:
    /// the answer arrives on the returned receiver, within the backend's
    /// timeout (waiting for a free slot of its concurrency included).
    pub fn call(
        &self,
        index: usize,
        body: Vec<u8>,
    ) -> oneshot::Receiver<Result<Decision, ProxyError>> {
        let (tx, rx) = oneshot::channel();
        let Some(backend) = self.backends.get(index) else {
            let _ = tx.send(Err(ProxyError::Unavailable(format!("no backend {index}"))));
            return rx;
        };
        use std::sync::atomic::Ordering;
        if backend.outstanding.fetch_add(1, Ordering::Relaxed) >= backend.outstanding_max {
            backend.outstanding.fetch_sub(1, Ordering::Relaxed);
            let _ = tx.send(Err(ProxyError::Unavailable(format!(
                "{} calls already outstanding",
                backend.outstanding_max
            ))));
            return rx;
        }
        let outstanding = backend.outstanding.clone();
        let client = self.client.clone();
        let uri = backend.uri.clone();
        let timeout = backend.timeout;
        let permits = backend.permits.clone();
        self.runtime.handle.spawn(async move {
            let call = async {
                let _permit = permits
                    .acquire_owned()
                    .await
                    .map_err(|_| ProxyError::Stopped)?;
                post(&client, uri, body).await
            };
            let result = match tokio::time::timeout(timeout, call).await {
                Ok(result) => result,
                Err(_elapsed) => Err(ProxyError::Timeout(timeout.as_millis() as u64)),
            };
            outstanding.fetch_sub(1, Ordering::Relaxed);
            // The shard may have dropped the receiver (its connection went).
            let _ = tx.send(result);
        });
        rx
    }
}

async fn post(
    client: &BackendClient,
    uri: hyper::Uri,
    body: Vec<u8>,
) -> Result<Decision, ProxyError> {
    let (status, body) = post_json(
        client,
        uri,
        &[],
        Bytes::from(body),
        PROXY_RESPONSE_BYTES_MAX,
    )
    .await
    .map_err(|err| match err {
        PostError::Unavailable(text) => ProxyError::Unavailable(text),
        PostError::Body(_) => ProxyError::BadResponse(err.to_string()),
    })?;
    if !status.is_success() {
        return Err(ProxyError::BadResponse(format!("HTTP status {status}")));
    }
    parse_answer(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        assert_eq!(
            parse_answer(br#"{"result":{}}"#),
            Ok(Decision::Allow {
                data: None,
                overrides: None,
                skip_history: false,
            })
        );
        assert_eq!(
            parse_answer(br#"{"result":{"data":{"a":[1, 2]}}}"#),
            Ok(Decision::Allow {
                data: Some(Data {
                    bytes: br#"{"a":[1, 2]}"#.to_vec(),
                    is_json: true
                }),
                overrides: None,
                skip_history: false,
            })
        );
        assert_eq!(
            parse_answer(br#"{"result":{"b64data":"AAE="}}"#),
            Ok(Decision::Allow {
                data: Some(Data {
                    bytes: vec![0, 1],
                    is_json: false
                }),
                overrides: None,
                skip_history: false,
            })
        );
        assert_eq!(
            parse_answer(br#"{"result":{"skip_history":true}}"#),
            Ok(Decision::Allow {
                data: None,
                overrides: None,
                skip_history: true,
            })
        );
        assert_eq!(
            parse_answer(br#"{"error":{"code":1001,"message":"no"}}"#),
            Ok(Decision::Deny {
                code: 1001,
                message: "no".into()
            })
        );
        assert_eq!(
            parse_answer(br#"{"disconnect":{"code":4600,"reason":"banned"}}"#),
            Ok(Decision::Disconnect {
                code: 4600,
                reason: "banned".into()
            })
        );
        // Outside the backend's range: the engine's own code.
        assert!(matches!(
            parse_answer(br#"{"disconnect":{"code":1000}}"#),
            Ok(Decision::Disconnect { code: 4009, .. })
        ));
        assert!(matches!(
            parse_answer(br#"{}"#),
            Err(ProxyError::BadResponse(_))
        ));
        assert!(matches!(
            parse_answer(b"not json"),
            Err(ProxyError::BadResponse(_))
        ));
        assert!(matches!(
            parse_answer(br#"{"result":{"data":1,"b64data":"AA=="}}"#),
            Err(ProxyError::BadResponse(_))
        ));
    }

    #[test]
    fn a_repeated_cookie_name_keeps_the_first() {
        let headers = vec![(
            "cookie".to_owned(),
            "sid=app; theme=dark; sid=tossed".to_owned(),
        )];
        let body = connect_body(1, "", headers, None, "/", None);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body["cookies"],
            serde_json::json!({"sid": "app", "theme": "dark"})
        );
        assert_eq!(body["headers"]["cookie"], "sid=app; theme=dark; sid=tossed");
    }

    #[test]
    fn connect_answers_carry_overrides() {
        let answer = br#"{"result":{"user":"u1","info":{"name":"Ann"},
            "channels":["chat:*"],"subs":["news"],"expire_at":1700000000}}"#;
        assert_eq!(
            parse_answer(answer),
            Ok(Decision::Allow {
                data: None,
                overrides: Some(Box::new(Overrides {
                    user: Some("u1".into()),
                    info: Some(r#"{"name":"Ann"}"#.into()),
                    channels: Some(vec!["chat:*".into()]),
                    subs: vec!["news".into()],
                    expire_at: Some(1_700_000_000),
                })),
                skip_history: false,
            })
        );
        assert!(matches!(
            parse_answer(br#"{"result":{"user":7}}"#),
            Err(ProxyError::BadResponse(_))
        ));
    }

    #[test]
    fn connect_bodies_carry_headers_cookies_and_the_query_less_the_token() {
        let body = connect_body(
            42,
            "",
            vec![
                ("cookie".into(), "sid=abc; theme=\"dark\"; junk".into()),
                ("user-agent".into(), "t/1".into()),
            ],
            Some("10.1.2.3".parse().unwrap()),
            "/ws",
            Some("token=secret&device=ph%20one&x"),
        );
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "client": "42",
                "transport": "websocket",
                "user": "",
                "headers": {"cookie": "sid=abc; theme=\"dark\"; junk", "user-agent": "t/1"},
                "cookies": {"sid": "abc", "theme": "dark"},
                "remote_addr": "10.1.2.3",
                "path": "/ws",
                "query": {"device": "ph one", "x": ""},
            })
        );
    }
}
