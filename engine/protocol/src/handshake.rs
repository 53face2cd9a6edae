//! The HTTP/1.1 upgrade that opens a WebSocket (RFC 6455 §4): parsing and
//! checking the client's request, rendering the 101 and the JSON error
//! responses, and the client half (request builder and response check) that
//! the load generator uses.
//!
//! It is sans-IO like the rest of the crate: callers feed the bytes read so
//! far and get `Ok(None)` until the header block is complete. Every refusal
//! is a [`HandshakeError`] carrying the HTTP status and a stable error code,
//! so the engine can answer and count refusals without string matching.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// Bounds on the request header block; enforced while it is still arriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Largest header block (request line through the blank line). → 431.
    pub header_bytes_max: usize,
    /// Most header fields. → 431.
    pub headers_count_max: usize,
}

/// A checked WebSocket upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// The request path as sent (not percent-decoded), without the query.
    pub path: String,
    /// The raw query string after `?`, if any (not decoded; see
    /// [`UpgradeRequest::query_param`]).
    pub query: Option<String>,
    /// `Sec-WebSocket-Key`, trimmed; base64 of 16 bytes.
    pub key: String,
    /// `Sec-WebSocket-Protocol` values in order, across repeated headers.
    pub protocols: Vec<String>,
    /// `Origin`, if sent (browsers always send it).
    pub origin: Option<String>,
    /// `Authorization`, if sent, verbatim (e.g. `Bearer <token>`).
    pub authorization: Option<String>,
    /// `User-Agent`, if sent (lossily decoded: it is only logged).
    pub user_agent: Option<String>,
    /// `Sec-WebSocket-Extensions` values in order, across repeated headers
    /// (lossily decoded; `deflate::negotiate` reads them).
    pub extensions: Vec<String>,
}

/// A refused handshake: what to answer and why.
///
/// `code` is stable and machine-readable (for clients and metrics labels);
/// `message` is for humans and says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HTTP {status} {code}: {message}")]
#[non_exhaustive]
pub struct HandshakeError {
    /// The HTTP status to answer with (server side). On the client side: the
    /// server's status when it refused the upgrade, else 502.
    pub status: u16,
    /// Stable error code, e.g. `unsupported_websocket_version`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Headers the response must carry (e.g. `Sec-WebSocket-Version: 13`
    /// on a 426), in addition to the standard ones.
    pub headers: &'static [(&'static str, &'static str)],
}

/// The client's view of a successful upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHandshake {
    /// Always 101: any other status is an error.
    pub status: u16,
    /// The subprotocol the server selected, if any.
    pub protocol: Option<String>,
    /// The server's `Sec-WebSocket-Extensions` answer, if any.
    pub extensions: Option<String>,
}

/// Parse and check an upgrade request from the front of `buf`.
///
/// `Ok(None)` while the header block is incomplete and still within
/// `limits`; `Ok(Some((request, consumed)))` once it is complete, where
/// `consumed` is the header block's length (bytes after it belong to the
/// WebSocket stream). Errors carry the status to answer with.
pub fn parse_upgrade(
    buf: &[u8],
    limits: &HandshakeLimits,
) -> Result<Option<(UpgradeRequest, usize)>, HandshakeError> {
    let mut headers = vec![httparse::EMPTY_HEADER; limits.headers_count_max];
    let mut request = httparse::Request::new(&mut headers);
    let consumed = match request.parse(buf) {
        Ok(httparse::Status::Complete(consumed)) => consumed,
        // A partial block already at the limit can only end over it.
        Ok(httparse::Status::Partial) if buf.len() >= limits.header_bytes_max => {
            return Err(header_too_large(limits));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::new(
                431,
                "too_many_headers",
                format!(
                    "the request has more than {} header fields; send fewer",
                    limits.headers_count_max
                ),
            ));
        }
        Err(httparse::Error::Version) => return Err(http_version_error()),
        Err(err) => {
            return Err(HandshakeError::new(
                400,
                "malformed_request",
                format!("malformed HTTP request: {err}"),
            ));
        }
    };
    if consumed > limits.header_bytes_max {
        return Err(header_too_large(limits));
    }
    let headers = &*request.headers;

    if request.method != Some("GET") {
        return Err(HandshakeError {
            headers: &[("Allow", "GET")],
            ..HandshakeError::new(
                405,
                "method_not_allowed",
                "a WebSocket upgrade must use GET".to_owned(),
            )
        });
    }
    if request.version != Some(1) {
        return Err(http_version_error());
    }
    if single_header(headers, "Host")?.is_none() {
        return Err(HandshakeError::new(
            400,
            "missing_host",
            "the request has no Host header".to_owned(),
        ));
    }
    if !has_token(headers, "Upgrade", "websocket") {
        return Err(HandshakeError {
            headers: &[("Upgrade", "websocket")],
            ..HandshakeError::new(
                426,
                "upgrade_required",
                "this endpoint only speaks WebSocket: send Upgrade: websocket".to_owned(),
            )
        });
    }
    if !has_token(headers, "Connection", "upgrade") {
        return Err(HandshakeError::new(
            400,
            "connection_not_upgrade",
            "the Connection header must include the token Upgrade".to_owned(),
        ));
    }
    if single_header(headers, "Sec-WebSocket-Version")?.map(str::trim) != Some("13") {
        return Err(HandshakeError {
            headers: &[("Sec-WebSocket-Version", "13")],
            ..HandshakeError::new(
                426,
                "unsupported_websocket_version",
                "only WebSocket version 13 (RFC 6455) is supported".to_owned(),
            )
        });
    }
    let key = single_header(headers, "Sec-WebSocket-Key")?
        .map(str::trim)
        .unwrap_or_default();
    if BASE64.decode(key).map(|nonce| nonce.len()) != Ok(16) {
        return Err(HandshakeError::new(
            400,
            "invalid_websocket_key",
            "Sec-WebSocket-Key must be the base64 encoding of 16 random bytes".to_owned(),
        ));
    }

    let (path, query) = split_target(request.path.unwrap_or_default())?;
    let protocols = header_values(headers, "Sec-WebSocket-Protocol")
        .flat_map(|value| {
            String::from_utf8_lossy(value)
                .split(',')
                .map(str::trim)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|protocol| !protocol.is_empty())
        .collect();
    let request = UpgradeRequest {
        path,
        query,
        key: key.to_owned(),
        protocols,
        origin: single_header(headers, "Origin")?.map(str::to_owned),
        authorization: single_header(headers, "Authorization")?.map(str::to_owned),
        user_agent: header_values(headers, "User-Agent")
            .next()
            .map(|v| String::from_utf8_lossy(v).into_owned()),
        extensions: header_values(headers, "Sec-WebSocket-Extensions")
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect(),
    };
    Ok(Some((request, consumed)))
}

impl UpgradeRequest {
    /// The percent-decoded value of the first query parameter named `name`
    /// (names are compared after decoding). `None` when absent or when its
    /// value is not valid percent-encoded UTF-8. A parameter without `=`
    /// has the empty value. `+` stays a literal plus: our tokens are
    /// base64-like and may contain it.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query
            .as_deref()?
            .split('&')
            .find_map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(key).as_deref() == Some(name)).then(|| percent_decode(value))
            })
            .flatten()
    }
}

/// Decode `%XX` escapes (RFC 3986). `None` when a `%` is not followed by two
/// hex digits or the result is not UTF-8. `+` is kept as is (this is not
/// form encoding).
pub fn percent_decode(input: &str) -> Option<String> {
    if !input.contains('%') {
        return Some(input.to_owned());
    }
    let mut out = Vec::with_capacity(input.len());
    let mut bytes = input.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'%' {
            let high = hex_value(bytes.next()?)?;
            let low = hex_value(bytes.next()?)?;
            out.push((high << 4) | low);
        } else {
            out.push(byte);
        }
    }
    String::from_utf8(out).ok()
}

impl HandshakeError {
    fn new(status: u16, code: &'static str, message: String) -> Self {
        Self {
            status,
            code,
            message,
            headers: &[],
        }
    }

    /// The complete HTTP error response to write before closing.
    pub fn to_http_response(&self) -> Vec<u8> {
        http_error_response(self.status, self.code, &self.message, self.headers)
    }
}

/// An HTTP/1.1 error response with a JSON body
/// `{"error":{"code":...,"message":...}}` and `Connection: close`.
///
/// `extra_headers` are written verbatim; they must not contain CR or LF
/// (asserted: they come from code, never from the peer).
pub fn http_error_response(
    status: u16,
    code: &str,
    message: &str,
    extra_headers: &[(&str, &str)],
) -> Vec<u8> {
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason_phrase(status),
        body.len()
    );
    for (name, value) in extra_headers {
        assert!(
            is_header_safe(name) && is_header_safe(value),
            "header {name:?} contains CR or LF"
        );
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + RFC 6455 GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha1.finalize())
}

/// The `101 Switching Protocols` response accepting `key`, selecting
/// `protocol` when given (it must be one the client offered) and answering
/// with `extensions` (a `Sec-WebSocket-Extensions` value) when given.
pub fn response_101(key: &str, protocol: Option<&str>, extensions: Option<&str>) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        accept_key(key)
    );
    if let Some(protocol) = protocol {
        assert!(is_header_safe(protocol), "subprotocol contains CR or LF");
        out.push_str("Sec-WebSocket-Protocol: ");
        out.push_str(protocol);
        out.push_str("\r\n");
    }
    if let Some(extensions) = extensions {
        assert!(is_header_safe(extensions), "extensions contain CR or LF");
        out.push_str("Sec-WebSocket-Extensions: ");
        out.push_str(extensions);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A client key from 16 caller-provided random bytes (the crate has no RNG).
pub fn client_key(nonce: [u8; 16]) -> String {
    BASE64.encode(nonce)
}

/// A client upgrade request. `key` should come from [`client_key`].
pub fn client_request(host: &str, path_and_query: &str, key: &str, protocols: &[&str]) -> Vec<u8> {
    client_request_with_extensions(host, path_and_query, key, protocols, None)
}

/// [`client_request`] offering `extensions` (a `Sec-WebSocket-Extensions`
/// value, e.g. `permessage-deflate`).
pub fn client_request_with_extensions(
    host: &str,
    path_and_query: &str,
    key: &str,
    protocols: &[&str],
    extensions: Option<&str>,
) -> Vec<u8> {
    let mut out = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if !protocols.is_empty() {
        out.push_str("Sec-WebSocket-Protocol: ");
        out.push_str(&protocols.join(", "));
        out.push_str("\r\n");
    }
    if let Some(extensions) = extensions {
        assert!(is_header_safe(extensions), "extensions contain CR or LF");
        out.push_str("Sec-WebSocket-Extensions: ");
        out.push_str(extensions);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Parse and check the server's answer to [`client_request`].
///
/// `Ok(None)` until the header block is complete. On 101 with the right
/// `Sec-WebSocket-Accept`, returns the handshake and the header block length
/// (bytes after it are WebSocket frames). Any other status is an error whose
/// `status` is the server's and whose message includes the start of the body;
/// when the response has a `Content-Length`, up to [`BODY_PREVIEW_BYTES_MAX`]
/// body bytes are awaited first.
pub fn parse_response(
    buf: &[u8],
    expected_key: &str,
) -> Result<Option<(ClientHandshake, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_COUNT_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let consumed = match response.parse(buf) {
        Ok(httparse::Status::Complete(consumed)) => consumed,
        Ok(httparse::Status::Partial) if buf.len() >= RESPONSE_HEADER_BYTES_MAX => {
            return Err(bad_response(format!(
                "response header block over {RESPONSE_HEADER_BYTES_MAX} bytes"
            )));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => return Err(bad_response(format!("malformed HTTP response: {err}"))),
    };
    let headers = &*response.headers;
    let status = response.code.unwrap_or_default();
    if status != 101 {
        let body = buf.get(consumed..).unwrap_or_default();
        let content_len = header_values(headers, "Content-Length")
            .next()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        let preview_len = content_len
            .unwrap_or(body.len())
            .min(BODY_PREVIEW_BYTES_MAX);
        let Some(preview) = body.get(..preview_len) else {
            return Ok(None);
        };
        return Err(HandshakeError::new(
            status,
            "upgrade_refused",
            format!(
                "server refused the upgrade: HTTP {status} {}: {}",
                response.reason.unwrap_or_default(),
                String::from_utf8_lossy(preview)
            ),
        ));
    }
    if !has_token(headers, "Upgrade", "websocket") || !has_token(headers, "Connection", "upgrade") {
        return Err(bad_response(
            "101 response without Upgrade: websocket and Connection: Upgrade".to_owned(),
        ));
    }
    let accept = header_values(headers, "Sec-WebSocket-Accept")
        .next()
        .map(|v| String::from_utf8_lossy(v));
    if accept.as_deref().map(str::trim) != Some(accept_key(expected_key).as_str()) {
        return Err(HandshakeError::new(
            502,
            "bad_accept_key",
            "Sec-WebSocket-Accept does not match the key sent".to_owned(),
        ));
    }
    let protocol = header_values(headers, "Sec-WebSocket-Protocol")
        .next()
        .map(|v| String::from_utf8_lossy(v).trim().to_owned());
    let extensions = header_values(headers, "Sec-WebSocket-Extensions")
        .next()
        .map(|v| String::from_utf8_lossy(v).trim().to_owned());
    Ok(Some((
        ClientHandshake {
            status,
            protocol,
            extensions,
        },
        consumed,
    )))
}

/// How much of a refusal's body [`parse_response`] quotes in its error.
pub const BODY_PREVIEW_BYTES_MAX: usize = 512;

/// RFC 6455 §1.3: the GUID appended to the key before hashing.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Client-side bounds on the server's response; generous, since the server
/// is ours, but finite so a wrong endpoint cannot make the client buffer
/// forever.
const RESPONSE_HEADER_BYTES_MAX: usize = 16 * 1024;
const RESPONSE_HEADERS_COUNT_MAX: usize = 64;

fn header_too_large(limits: &HandshakeLimits) -> HandshakeError {
    HandshakeError::new(
        431,
        "header_too_large",
        format!(
            "the request header block exceeds {} bytes; send smaller headers",
            limits.header_bytes_max
        ),
    )
}

fn http_version_error() -> HandshakeError {
    HandshakeError::new(
        400,
        "unsupported_http_version",
        "a WebSocket upgrade must use HTTP/1.1".to_owned(),
    )
}

fn bad_response(message: String) -> HandshakeError {
    HandshakeError::new(502, "malformed_response", message)
}

/// The headers of a complete request head at the front of `buf` whose
/// names are in `names` (lowercase), as (lowercase name, value) in order;
/// repeated headers are joined with `, ` (`; ` for `cookie`, RFC 6265 §5.4).
/// Values that are not UTF-8 are left out. Empty when `buf` holds no
/// complete head (the caller parsed it with [`parse_upgrade`] first).
pub fn selected_headers(
    buf: &[u8],
    names: &[String],
    limits: &HandshakeLimits,
) -> Vec<(String, String)> {
    let mut headers = vec![httparse::EMPTY_HEADER; limits.headers_count_max];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(buf), Ok(httparse::Status::Complete(_))) {
        return Vec::new();
    }
    let mut selected: Vec<(String, String)> = Vec::new();
    for name in names {
        let separator = if name == "cookie" { "; " } else { ", " };
        let mut joined: Option<String> = None;
        for value in header_values(request.headers, name) {
            let Ok(value) = std::str::from_utf8(value) else {
                continue;
            };
            match joined.as_mut() {
                Some(joined) => {
                    joined.push_str(separator);
                    joined.push_str(value);
                }
                None => joined = Some(value.to_owned()),
            }
        }
        if let Some(value) = joined {
            selected.push((name.clone(), value));
        }
    }
    selected
}

/// Values of every header named `name` (case-insensitive), in order.
fn header_values<'h>(
    headers: &'h [httparse::Header<'_>],
    name: &'h str,
) -> impl Iterator<Item = &'h [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// A header that must appear at most once, as UTF-8. Duplicates are refused
/// rather than resolved: proxies and servers disagreeing on which copy wins
/// is how request smuggling and auth confusion start.
fn single_header<'h>(
    headers: &'h [httparse::Header<'_>],
    name: &'static str,
) -> Result<Option<&'h str>, HandshakeError> {
    let mut values = header_values(headers, name);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(HandshakeError::new(
            400,
            "duplicate_header",
            format!("the {name} header must appear only once"),
        ));
    }
    match std::str::from_utf8(value) {
        Ok(value) => Ok(Some(value)),
        Err(_) => Err(HandshakeError::new(
            400,
            "invalid_header_value",
            format!("the {name} header is not valid UTF-8"),
        )),
    }
}

/// Whether any header `name` holds `token` in its comma-separated list
/// (case-insensitive, e.g. `Connection: keep-alive, Upgrade`).
fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    header_values(headers, name)
        .flat_map(|value| value.split(|&b| b == b','))
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Split a request target into path and raw query. Accepts origin-form
/// (`/path?query`) and, as RFC 7230 §5.3.2 requires of servers, absolute-form
/// (`ws://host/path?query`).
fn split_target(target: &str) -> Result<(String, Option<String>), HandshakeError> {
    // Fragments are never sent by conforming clients; drop one if present.
    let target = target.split_once('#').map_or(target, |(before, _)| before);
    let origin_form = if target.starts_with('/') {
        target
    } else if let Some((_scheme, rest)) = target.split_once("://") {
        match rest.find(['/', '?']) {
            Some(start) => rest.get(start..).unwrap_or_default(),
            None => "/",
        }
    } else {
        return Err(HandshakeError::new(
            400,
            "invalid_request_target",
            "the request target must be a path such as /ws".to_owned(),
        ));
    };
    let (path, query) = match origin_form.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (origin_form, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    Ok((path.to_owned(), query))
}

const fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

fn is_header_safe(text: &str) -> bool {
    !text.bytes().any(|b| b == b'\r' || b == b'\n')
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HandshakeLimits = HandshakeLimits {
        header_bytes_max: 4096,
        headers_count_max: 32,
    };
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request(lines: &[&str]) -> Vec<u8> {
        let mut out = lines.join("\r\n");
        out.push_str("\r\n\r\n");
        out.into_bytes()
    }

    fn valid_lines() -> Vec<&'static str> {
        vec![
            "GET /ws?token=a%2Bb+c&x HTTP/1.1",
            "Host: example.com",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ]
    }

    #[test]
    fn selected_headers_keep_the_named_ones_and_join_repeats() {
        let mut lines = valid_lines();
        lines.extend([
            "Cookie: sid=abc",
            "X-Forwarded-For: 10.0.0.1",
            "cookie: theme=dark",
            "Authorization: Bearer secret",
        ]);
        let mut buf = request(&lines);
        buf.extend_from_slice(&[0x81, 0x80]);
        let names = ["cookie", "x-forwarded-for", "origin"].map(String::from);
        assert_eq!(
            selected_headers(&buf, &names, &LIMITS),
            vec![
                ("cookie".to_owned(), "sid=abc; theme=dark".to_owned()),
                ("x-forwarded-for".to_owned(), "10.0.0.1".to_owned()),
            ],
            "only the named headers, repeats joined, absent ones left out"
        );
        assert!(selected_headers(b"GET / HTTP/1.1\r\n", &names, &LIMITS).is_empty());
    }

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn parses_a_full_request() {
        let mut lines = valid_lines();
        lines.extend([
            "Sec-WebSocket-Protocol: ringcast.json, ringcast.rkyv",
            "sec-websocket-protocol:  v3 ,, v4",
            "Origin: https://app.example.com",
            "Authorization: Bearer abc.def",
            "User-Agent: test/1.0",
        ]);
        let mut buf = request(&lines);
        let header_len = buf.len();
        buf.extend_from_slice(&[0x81, 0x80]); // a frame that arrived early
        let (req, consumed) = parse_upgrade(&buf, &LIMITS)
            .expect("valid")
            .expect("complete");
        assert_eq!(consumed, header_len);
        assert_eq!(
            req,
            UpgradeRequest {
                path: "/ws".into(),
                query: Some("token=a%2Bb+c&x".into()),
                key: KEY.into(),
                protocols: vec![
                    "ringcast.json".into(),
                    "ringcast.rkyv".into(),
                    "v3".into(),
                    "v4".into()
                ],
                origin: Some("https://app.example.com".into()),
                authorization: Some("Bearer abc.def".into()),
                user_agent: Some("test/1.0".into()),
                extensions: vec![],
            }
        );
        assert_eq!(req.query_param("token").as_deref(), Some("a+b+c"));
        assert_eq!(req.query_param("x").as_deref(), Some(""));
        assert_eq!(req.query_param("missing"), None);
    }

    #[test]
    fn split_input_is_incomplete_until_the_blank_line() {
        let buf = request(&valid_lines());
        for end in 0..buf.len() {
            assert_eq!(
                parse_upgrade(&buf[..end], &LIMITS),
                Ok(None),
                "prefix {end}"
            );
        }
        assert!(matches!(parse_upgrade(&buf, &LIMITS), Ok(Some((_, n))) if n == buf.len()));
    }

    #[test]
    fn rejections_carry_status_and_code() {
        let replace = |index: usize, line: &'static str| {
            let mut lines = valid_lines();
            lines[index] = line;
            request(&lines)
        };
        let without = |index: usize| {
            let mut lines = valid_lines();
            lines.remove(index);
            request(&lines)
        };
        let with = |extra: &'static str| {
            let mut lines = valid_lines();
            lines.push(extra);
            request(&lines)
        };
        let many_headers = {
            let mut lines = valid_lines();
            lines.extend(std::iter::repeat_n("X-Filler: 1", 30));
            request(&lines)
        };
        let big_header = {
            let mut text = String::from_utf8(request(&valid_lines())).expect("ascii");
            text.insert_str(text.len() - 2, &format!("X-Big: {}\r\n", "a".repeat(5000)));
            text.into_bytes()
        };
        // (name, input, status, code, a header the response must carry)
        type Rejection = (
            &'static str,
            Vec<u8>,
            u16,
            &'static str,
            Option<&'static str>,
        );
        let cases: Vec<Rejection> = vec![
            (
                "POST",
                replace(0, "POST /ws HTTP/1.1"),
                405,
                "method_not_allowed",
                Some("Allow: GET"),
            ),
            (
                "HTTP/1.0",
                replace(0, "GET /ws HTTP/1.0"),
                400,
                "unsupported_http_version",
                None,
            ),
            (
                "HTTP/2 preface",
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
                400,
                "unsupported_http_version",
                None,
            ),
            ("no Host", without(1), 400, "missing_host", None),
            (
                "two Hosts",
                with("Host: evil.example"),
                400,
                "duplicate_header",
                None,
            ),
            (
                "no Upgrade",
                without(2),
                426,
                "upgrade_required",
                Some("Upgrade: websocket"),
            ),
            (
                "Upgrade h2c",
                replace(2, "Upgrade: h2c"),
                426,
                "upgrade_required",
                None,
            ),
            (
                "Connection keep-alive",
                replace(3, "Connection: keep-alive"),
                400,
                "connection_not_upgrade",
                None,
            ),
            (
                "no Connection",
                without(3),
                400,
                "connection_not_upgrade",
                None,
            ),
            (
                "version 8",
                replace(5, "Sec-WebSocket-Version: 8"),
                426,
                "unsupported_websocket_version",
                Some("Sec-WebSocket-Version: 13"),
            ),
            (
                "no version",
                without(5),
                426,
                "unsupported_websocket_version",
                None,
            ),
            ("no key", without(4), 400, "invalid_websocket_key", None),
            (
                "key not base64",
                replace(4, "Sec-WebSocket-Key: not base64!"),
                400,
                "invalid_websocket_key",
                None,
            ),
            (
                "key of 15 bytes",
                replace(4, "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA"),
                400,
                "invalid_websocket_key",
                None,
            ),
            (
                "two keys",
                with("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="),
                400,
                "duplicate_header",
                None,
            ),
            (
                "target not a path",
                replace(0, "GET ws HTTP/1.1"),
                400,
                "invalid_request_target",
                None,
            ),
            (
                "malformed",
                b"GET /ws HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(),
                400,
                "malformed_request",
                None,
            ),
            (
                "too many headers",
                many_headers,
                431,
                "too_many_headers",
                None,
            ),
            (
                "header block too large",
                big_header.clone(),
                431,
                "header_too_large",
                None,
            ),
            (
                "partial block too large",
                big_header[..4200].to_vec(),
                431,
                "header_too_large",
                None,
            ),
        ];
        for (name, input, status, code, header) in cases {
            let err = parse_upgrade(&input, &LIMITS).expect_err(name);
            assert_eq!((err.status, err.code), (status, code), "{name}: {err}");
            let response = String::from_utf8(err.to_http_response()).expect("ascii response");
            assert!(
                response.starts_with(&format!("HTTP/1.1 {status} ")),
                "{name}: {response}"
            );
            if let Some(header) = header {
                assert!(
                    response.contains(&format!("\r\n{header}\r\n")),
                    "{name}: {response}"
                );
            }
        }
    }

    #[test]
    fn accepts_variants_clients_send() {
        let cases: &[(&[&str], &str, Option<&str>)] = &[
            (
                &["Connection: keep-alive, Upgrade", "Upgrade: WebSocket"],
                "/ws",
                Some("token=a%2Bb+c&x"),
            ),
            (
                &["Connection: keep-alive", "Connection: upgrade"],
                "/ws",
                Some("token=a%2Bb+c&x"),
            ),
            (
                &["GET ws://example.com/live?q=1 HTTP/1.1"],
                "/live",
                Some("q=1"),
            ),
            (&["GET wss://example.com HTTP/1.1"], "/", None),
            (&["GET / HTTP/1.1"], "/", None),
        ];
        for &(overrides, path, query) in cases {
            let mut lines = valid_lines();
            let mut connection_replaced = false;
            for line in overrides {
                if line.starts_with("GET ") {
                    lines[0] = line;
                } else if line.starts_with("Upgrade:") {
                    lines[2] = line;
                } else if !connection_replaced {
                    // The first Connection override replaces the default one,
                    // later ones are repeated headers.
                    lines[3] = line;
                    connection_replaced = true;
                } else {
                    lines.push(line);
                }
            }
            let (req, _) = parse_upgrade(&request(&lines), &LIMITS)
                .expect("valid")
                .expect("complete");
            assert_eq!(
                (req.path.as_str(), req.query.as_deref()),
                (path, query),
                "{overrides:?}"
            );
        }
    }

    #[test]
    fn percent_decoding() {
        let cases: &[(&str, Option<&str>)] = &[
            ("", Some("")),
            ("plain", Some("plain")),
            ("a%20b", Some("a b")),
            ("a+b", Some("a+b")),
            ("%2B%2b", Some("++")),
            ("%E2%82%AC", Some("€")),
            ("%e2%82%ac", Some("€")),
            ("100%", None),
            ("%4", None),
            ("%zz", None),
            ("%ff", None),
            ("%C3", None),
            ("é%20", Some("é ")),
        ];
        for &(input, expected) in cases {
            assert_eq!(percent_decode(input).as_deref(), expected, "{input:?}");
        }
    }

    #[test]
    fn query_params() {
        let req = |query: &str| UpgradeRequest {
            path: "/".into(),
            query: Some(query.into()),
            key: KEY.into(),
            protocols: vec![],
            origin: None,
            authorization: None,
            user_agent: None,
            extensions: vec![],
        };
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("token=abc", "token", Some("abc")),
            ("a=1&token=x%3Dy&token=second", "token", Some("x=y")),
            ("to%6Ben=encoded-name", "token", Some("encoded-name")),
            ("tokenx=1&xtoken=2", "token", None),
            ("token", "token", Some("")),
            ("token=a=b", "token", Some("a=b")),
            ("token=%zz&token=ok", "token", None),
            ("", "token", None),
        ];
        for &(query, name, expected) in cases {
            assert_eq!(
                req(query).query_param(name).as_deref(),
                expected,
                "{query:?}"
            );
        }
        let no_query = UpgradeRequest {
            query: None,
            ..req("")
        };
        assert_eq!(no_query.query_param("token"), None);
    }

    #[test]
    fn error_response_is_escaped_json() {
        let response = http_error_response(
            401,
            "bad_token",
            "token \"x\" expired\n",
            &[("WWW-Authenticate", "Bearer")],
        );
        let text = String::from_utf8(response).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("header block");
        assert!(head.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{head}");
        assert!(head.contains("\r\nContent-Type: application/json\r\n"));
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
        assert!(head.contains("\r\nConnection: close\r\n"));
        assert!(head.ends_with("\r\nWWW-Authenticate: Bearer"));
        let json: serde_json::Value = serde_json::from_str(body).expect("json body");
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "bad_token", "message": "token \"x\" expired\n"}})
        );
    }

    #[test]
    fn client_and_server_halves_agree() {
        let key = client_key([7; 16]);
        let request = client_request(
            "localhost:9000",
            "/ws?token=t%20k",
            &key,
            &["ringcast.json", "ringcast.rkyv"],
        );
        let (req, consumed) = parse_upgrade(&request, &LIMITS)
            .expect("valid")
            .expect("complete");
        assert_eq!(consumed, request.len());
        assert_eq!(req.key, key);
        assert_eq!(req.protocols, ["ringcast.json", "ringcast.rkyv"]);
        assert_eq!(req.query_param("token").as_deref(), Some("t k"));

        let mut response = response_101(&req.key, Some("ringcast.rkyv"), None);
        let header_len = response.len();
        response.extend_from_slice(&[0x82, 0x00]);
        for end in 0..header_len {
            assert_eq!(
                parse_response(&response[..end], &key),
                Ok(None),
                "prefix {end}"
            );
        }
        let (handshake, consumed) = parse_response(&response, &key)
            .expect("valid")
            .expect("complete");
        assert_eq!(consumed, header_len);
        assert_eq!(
            handshake,
            ClientHandshake {
                status: 101,
                protocol: Some("ringcast.rkyv".into()),
                extensions: None,
            }
        );

        let plain = response_101(&key, None, None);
        let (handshake, _) = parse_response(&plain, &key)
            .expect("valid")
            .expect("complete");
        assert_eq!(handshake.protocol, None);
    }

    #[test]
    fn extensions_travel_both_ways() {
        let key = client_key([3; 16]);
        let mut request = client_request_with_extensions(
            "localhost",
            "/ws",
            &key,
            &[],
            Some("permessage-deflate; client_max_window_bits"),
        );
        // A repeated header adds offers after the first one's.
        let end = request.len() - 2;
        request.splice(
            end..end,
            b"Sec-WebSocket-Extensions: x-other\r\n".iter().copied(),
        );
        let (req, _) = parse_upgrade(&request, &LIMITS)
            .expect("valid")
            .expect("complete");
        assert_eq!(
            req.extensions,
            ["permessage-deflate; client_max_window_bits", "x-other"]
        );
        let answer = "permessage-deflate; server_no_context_takeover";
        let response = response_101(&key, None, Some(answer));
        let (handshake, _) = parse_response(&response, &key)
            .expect("valid")
            .expect("complete");
        assert_eq!(handshake.extensions.as_deref(), Some(answer));
    }

    #[test]
    fn client_rejects_bad_responses() {
        let key = client_key([1; 16]);
        let wrong_accept = response_101(&client_key([2; 16]), None, None);
        let err = parse_response(&wrong_accept, &key).expect_err("wrong accept");
        assert_eq!((err.status, err.code), (502, "bad_accept_key"));

        let no_upgrade = format!(
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(&key)
        );
        let err = parse_response(no_upgrade.as_bytes(), &key).expect_err("no upgrade");
        assert_eq!((err.status, err.code), (502, "malformed_response"));

        let refusal = http_error_response(401, "token_expired", "token expired", &[]);
        // Until the (short) body is complete, the client waits for it.
        let head_len = refusal
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head")
            + 4;
        assert_eq!(parse_response(&refusal[..head_len + 3], &key), Ok(None));
        let err = parse_response(&refusal, &key).expect_err("refused");
        assert_eq!((err.status, err.code), (401, "upgrade_refused"));
        assert!(err.message.contains("401 Unauthorized"), "{}", err.message);
        assert!(err.message.contains("token_expired"), "{}", err.message);

        let garbage = parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", &key).expect_err("garbage");
        assert_eq!((garbage.status, garbage.code), (502, "malformed_response"));
    }

    #[test]
    fn response_101_shape() {
        let response =
            String::from_utf8(response_101(KEY, Some("ringcast.json"), None)).expect("ascii");
        assert_eq!(
            response,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: ringcast.json\r\n\r\n"
        );
    }
}
