//! HTTP/1.1 server for the control plane: the API that app backends call to publish, send, query
//! presence and stats, and that Prometheus scrapes (`/metrics`, `/health`).
//!
//! This module owns the wire protocol only: a sans-IO request parser ([`RequestParser`]), response
//! encoding ([`Response`], [`write_response`]) and a small monoio accept/serve loop ([`serve`],
//! [`serve_connection`]). Routing and the handlers live elsewhere behind the [`Handler`] trait.
//!
//! Why hand-rolled instead of hyper: the engine runs on monoio (thread-per-core, io_uring, owned
//! buffers), the control API is a handful of JSON endpoints, and the security-relevant parts of
//! HTTP/1.1 framing (request smuggling, size limits) are small enough to own, test exhaustively
//! and keep free of a second async runtime. Header parsing is delegated to `httparse`; this module
//! decides body framing, limits and connection reuse.
//!
//! The parser is strict where leniency enables request smuggling: `Content-Length` together with
//! `Transfer-Encoding` is rejected, conflicting `Content-Length` values are rejected, chunk lines
//! must end in CRLF, and any parse error closes the connection after a JSON error response.
//! Every input is bounded by [`HttpLimits`], and an oversized body is refused from its declared
//! size, before any of it is read.
#![deny(unsafe_code)]

use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{
    AsyncWriteRent, CancelHandle, CancelableAsyncReadRent, CancelableAsyncWriteRent, Canceller,
};
use monoio::net::{TcpListener, TcpStream};

/// Size limits applied to every request. A request over any of them is refused with the matching
/// 4xx status and the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Request line plus header fields, including their CRLFs (and, separately, chunked trailers).
    pub header_bytes_max: usize,
    /// Number of header fields (and, separately, chunked trailer fields).
    pub headers_count_max: usize,
    /// Decoded body size, whether framed by `Content-Length` or chunked.
    pub body_bytes_max: usize,
}

/// A parsed request. Header names are lowercased; values are kept as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The request target up to (not including) `?`.
    pub path: String,
    /// Everything after the first `?`, undecoded; `None` when the target has no `?`.
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Whether the client allows the connection to be reused after this request.
    pub keep_alive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    Head,
    Options,
    /// Any other syntactically valid method token, as sent (methods are case-sensitive).
    Other(String),
}

/// A request the parser refused. `status` and `code` go straight into the JSON error response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HTTP {status} {code}: {message}")]
pub struct HttpError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

/// Why [`serve_connection`] ended a connection abnormally. A clean close (peer hung up or went
/// idle between requests, or a `Connection: close` exchange finished) is `Ok(())`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("control connection I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("control listener accept failed (retrying after a backoff): {0}")]
    Accept(std::io::Error),
    /// The peer sent a request the parser refused; the error response was already sent.
    #[error("refused malformed control request: {0}")]
    Http(#[from] HttpError),
    #[error("peer stalled mid-request for longer than the idle timeout ({timeout_ms} ms)")]
    RequestTimeout { timeout_ms: u128 },
    #[error("peer did not read its response within the idle timeout ({timeout_ms} ms)")]
    ResponseTimeout { timeout_ms: u128 },
    #[error("peer closed the connection mid-request with {buffered_bytes} bytes unparsed")]
    Truncated { buffered_bytes: usize },
}

/// An encoded-on-write response. `Content-Length`, `Connection` and `Server` are added by
/// [`write_response`]; handler-supplied copies of the framing headers are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

/// Application logic behind the control API.
pub trait Handler {
    /// Answers one request. Called on the control thread; the future need not be `Send` because
    /// monoio never moves tasks between threads.
    fn handle(&self, req: Request) -> impl Future<Output = Response>;

    /// Called once per connection that ended abnormally, and for each failed accept, so the
    /// control plane can count or log it. Per-connection failures are operating errors, never
    /// fatal, so the default ignores them.
    fn on_connection_error(&self, err: &ServeError) {
        let _ = err;
    }
}

/// Incremental HTTP/1.1 request parser. Feed it the connection's receive buffer; it consumes one
/// request at a time from the front and leaves pipelined bytes in place.
///
/// After it returns an error the byte stream can no longer be framed, so every later call returns
/// the same error and the caller must close the connection.
#[derive(Debug)]
pub struct RequestParser {
    limits: HttpLimits,
    /// A request whose head has been consumed from the buffer but whose body is incomplete.
    pending: Option<PendingRequest>,
    continue_state: ContinueState,
    failed: Option<HttpError>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_bytes_max: 16 * 1024,
            headers_count_max: 64,
            body_bytes_max: 1024 * 1024,
        }
    }
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header_name, _)| header_name.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

impl Method {
    fn from_token(token: &str) -> Self {
        match token {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
            Method::Other(token) => token,
        }
    }
}

impl HttpError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            code: "bad_request",
            message: message.into(),
        }
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self {
            status: 413,
            code: "payload_too_large",
            message: message.into(),
        }
    }

    pub fn header_fields_too_large(message: impl Into<String>) -> Self {
        Self {
            status: 431,
            code: "header_fields_too_large",
            message: message.into(),
        }
    }

    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self {
            status: 501,
            code: "not_implemented",
            message: message.into(),
        }
    }

    pub fn version_not_supported(message: impl Into<String>) -> Self {
        Self {
            status: 505,
            code: "http_version_not_supported",
            message: message.into(),
        }
    }

    /// The JSON error response sent to the client before the connection is closed.
    pub fn to_response(&self) -> Response {
        Response::error(self.status, self.code, &self.message)
    }
}

impl Response {
    /// A JSON response. A value that cannot be serialized (a bug in the caller, e.g. a map with
    /// non-string keys) becomes a 500 rather than a panic on the control thread.
    pub fn json(status: u16, value: &impl serde::Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self {
                status,
                headers: vec![("Content-Type", CONTENT_TYPE_JSON.to_owned())],
                body: Bytes::from(body),
            },
            Err(err) => Self::error(
                500,
                "internal",
                &format!("response serialization failed: {err}"),
            ),
        }
    }

    pub fn text(status: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type", content_type.to_owned())],
            body: body.into(),
        }
    }

    /// A bodyless response, e.g. 204.
    pub fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// `{"error":{"code":"<code>","message":"<message>"}}`, built by serde_json so that quotes
    /// and control characters in `message` are escaped.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        #[derive(serde::Serialize)]
        struct ErrorBody<'a> {
            error: ErrorDetail<'a>,
        }
        #[derive(serde::Serialize)]
        struct ErrorDetail<'a> {
            code: &'a str,
            message: &'a str,
        }
        let body = serde_json::to_vec(&ErrorBody {
            error: ErrorDetail { code, message },
        })
        // Serializing two strings cannot fail; the fallback only keeps this path panic-free.
        .unwrap_or_else(|_| {
            br#"{"error":{"code":"internal","message":"error serialization failed"}}"#.to_vec()
        });
        Self {
            status,
            headers: vec![("Content-Type", CONTENT_TYPE_JSON.to_owned())],
            body: Bytes::from(body),
        }
    }
}

/// Appends the encoded response to `out`. `head_only` (a HEAD request) writes the headers,
/// including the `Content-Length` the body would have, but not the body.
pub fn write_response(out: &mut Vec<u8>, resp: &Response, keep_alive: bool, head_only: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, usize::from(resp.status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(resp.status).as_bytes());
    out.extend_from_slice(b"\r\nServer: ringcast\r\n");
    for (name, value) in &resp.headers {
        // Framing is owned here: a second Content-Length or Connection from a handler would make
        // the response ambiguous to the client.
        if FRAMING_HEADERS
            .iter()
            .any(|framing| framing.eq_ignore_ascii_case(name))
        {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        // A CR or LF in a value (e.g. echoed user input) would let it inject headers or split
        // the response; blank them rather than trust every handler to validate.
        out.extend(value.bytes().map(|byte| match byte {
            b'\r' | b'\n' => b' ',
            other => other,
        }));
        out.extend_from_slice(b"\r\n");
    }
    // RFC 9110 §8.6: 1xx and 204 must not carry Content-Length or a body; 304 has no body.
    let bodyless = resp.status < 200 || resp.status == 204 || resp.status == 304;
    if !bodyless {
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(out, resp.body.len());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n".as_slice()
    } else {
        b"Connection: close\r\n\r\n".as_slice()
    });
    if !bodyless && !head_only {
        out.extend_from_slice(&resp.body);
    }
}

/// Serves one connection until the peer closes it, it idles out, a `Connection: close` exchange
/// completes, or a request is malformed (after sending the JSON error response).
///
/// Pipelined requests are answered in order; responses to requests that were already buffered are
/// written in one batch. `idle_timeout` bounds every wait on the peer: for the next request, for
/// the rest of a request, and for the peer to accept a response.
pub async fn serve_connection<H: Handler>(
    mut stream: TcpStream,
    handler: &H,
    limits: HttpLimits,
    idle_timeout: Duration,
) -> Result<(), ServeError> {
    let timeout_ms = idle_timeout.as_millis();
    let mut parser = RequestParser::new(limits);
    let mut inbound = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut outbound: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    loop {
        match parser.parse(&mut inbound) {
            Ok(Some(request)) => {
                let keep_alive = request.keep_alive;
                let head_only = request.method == Method::Head;
                let response = handler.handle(request).await;
                write_response(&mut outbound, &response, keep_alive, head_only);
                if !keep_alive {
                    write_out(&mut stream, outbound, idle_timeout).await?;
                    linger_close(&mut stream, idle_timeout).await;
                    return Ok(());
                }
                // Batch the answers to already-buffered pipelined requests into one write, but
                // bound the batch so a burst of small requests for big responses (/metrics)
                // cannot pile up memory.
                if outbound.len() >= OUTBOUND_FLUSH_BYTES {
                    outbound = write_out(&mut stream, outbound, idle_timeout).await?;
                }
                continue;
            }
            Ok(None) => {}
            Err(err) => {
                write_response(&mut outbound, &err.to_response(), false, false);
                write_out(&mut stream, outbound, idle_timeout).await?;
                linger_close(&mut stream, idle_timeout).await;
                return Err(ServeError::Http(err));
            }
        }

        // The client is holding its body back until we accept the head (RFC 9110 §10.1.1).
        // Reaching here means the head passed every limit, including the declared body size.
        if parser.expects_continue() {
            outbound.extend_from_slice(CONTINUE_RESPONSE);
            parser.mark_continue_sent();
        }
        if !outbound.is_empty() {
            outbound = write_out(&mut stream, outbound, idle_timeout).await?;
        }

        let idle = inbound.is_empty() && parser.is_idle();
        inbound.reserve(READ_CHUNK_BYTES);
        let (len, capacity) = (inbound.len(), inbound.capacity());
        // Read into the spare capacity so received bytes land after the unparsed ones.
        let receive = std::mem::take(&mut inbound).slice_mut(len..capacity);
        let ((result, slice), timed_out) = run_with_timeout(idle_timeout, |cancel| {
            stream.cancelable_read(receive, cancel)
        })
        .await;
        inbound = slice.into_inner();
        match result {
            Ok(0) if inbound.is_empty() && parser.is_idle() => return Ok(()),
            Ok(0) => {
                return Err(ServeError::Truncated {
                    buffered_bytes: inbound.len(),
                })
            }
            Ok(_) => {}
            Err(_) if timed_out && idle => return Ok(()),
            Err(_) if timed_out => return Err(ServeError::RequestTimeout { timeout_ms }),
            Err(err) => return Err(ServeError::Io(err)),
        }
    }
}

/// Accepts connections and serves each on its own task until `shutdown` completes. Connections
/// already accepted keep running on the runtime after this returns; they end on their own (idle
/// timeout) or when the runtime is dropped.
pub async fn serve<H: Handler + 'static>(
    listener: TcpListener,
    handler: Rc<H>,
    limits: HttpLimits,
    idle_timeout: Duration,
    shutdown: impl Future,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let canceller = Canceller::new();
        let mut accept = std::pin::pin!(listener.cancelable_accept(canceller.handle()));
        let accepted = monoio::select! {
            // Shutdown first so a flood of connections cannot starve it.
            biased;
            _ = &mut shutdown => {
                // Without cancellation an io_uring accept stays queued in the kernel after the
                // listener is dropped, keeping the port open and leaking the next accepted fd.
                canceller.cancel();
                if let Ok((stream, _peer)) = accept.await {
                    drop(stream);
                }
                return;
            }
            accepted = &mut accept => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                // Responses are written whole; Nagle would only delay the tail of pipelined
                // batches behind the client's delayed ACK. Failure just costs latency.
                let _ = stream.set_nodelay(true);
                let handler = Rc::clone(&handler);
                monoio::spawn(async move {
                    if let Err(err) =
                        serve_connection(stream, &*handler, limits, idle_timeout).await
                    {
                        handler.on_connection_error(&err);
                    }
                });
            }
            Err(err) => {
                // Out of file descriptors and similar: retrying immediately would spin the
                // control thread, so back off; shutdown is still honored on the next turn.
                handler.on_connection_error(&ServeError::Accept(err));
                monoio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Interim response that tells an `Expect: 100-continue` client to send its body.
const CONTINUE_RESPONSE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
pub const CONTENT_TYPE_JSON: &str = "application/json";
const FRAMING_HEADERS: [&str; 4] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "server",
];
/// Receive granularity; control requests are small, so one read usually holds a whole request.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Chunk-size lines carry only a size and ignored extensions; anything longer is abuse.
const CHUNK_SIZE_LINE_BYTES_MAX: usize = 1024;
/// How long and how much we drain after our FIN before closing (see [`linger_close`]).
const LINGER_DURATION_MAX: Duration = Duration::from_secs(2);
const LINGER_BYTES_MAX: usize = 256 * 1024;
/// Pending pipelined responses are flushed once they reach this size.
const OUTBOUND_FLUSH_BYTES: usize = 64 * 1024;
/// After a large response, keep at most this much write buffer for the connection's lifetime.
const OUTBOUND_RETAINED_BYTES_MAX: usize = 64 * 1024;
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

const _: () = assert!(CONTINUE_RESPONSE.len() == 25);
const _: () = assert!(CHUNK_SIZE_LINE_BYTES_MAX < READ_CHUNK_BYTES);

#[derive(Debug)]
struct PendingRequest {
    head: RequestHead,
    body: BodyState,
}

#[derive(Debug)]
struct RequestHead {
    method: Method,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    keep_alive: bool,
}

#[derive(Debug)]
enum BodyState {
    /// Wait until `len` bytes are buffered, then take them in one split (no copy).
    Length {
        len: usize,
    },
    Chunked(ChunkedBody),
}

#[derive(Debug, Default)]
struct ChunkedBody {
    body: BytesMut,
    phase: ChunkPhase,
    trailer_bytes: usize,
    trailer_count: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkPhase {
    #[default]
    Size,
    Data {
        remaining: usize,
    },
    DataEnd,
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContinueState {
    NotExpected,
    Pending,
    Sent,
}

enum LineRead {
    Line(BytesMut),
    Incomplete,
    TooLong,
}

impl RequestParser {
    pub fn new(limits: HttpLimits) -> Self {
        Self {
            limits,
            pending: None,
            continue_state: ContinueState::NotExpected,
            failed: None,
        }
    }

    /// Consumes one complete request from the front of `buf`. `Ok(None)` means more bytes are
    /// needed; whatever was consumed so far is remembered, so call again with the same buffer
    /// after appending to it.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, HttpError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.parse_request(buf);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
            self.pending = None;
            self.continue_state = ContinueState::NotExpected;
        }
        result
    }

    /// True when the current request's head asked for `Expect: 100-continue`, its body is still
    /// outstanding, and the interim response has not been sent yet.
    pub fn expects_continue(&self) -> bool {
        self.continue_state == ContinueState::Pending && self.pending.is_some()
    }

    /// Records that `HTTP/1.1 100 Continue` was written, so it is sent at most once per request.
    pub fn mark_continue_sent(&mut self) {
        if self.continue_state == ContinueState::Pending {
            self.continue_state = ContinueState::Sent;
        }
    }

    /// True between requests: no head has been consumed whose body is still outstanding. (Bytes
    /// of a partial head may still sit in the caller's buffer.)
    pub fn is_idle(&self) -> bool {
        self.pending.is_none()
    }

    fn parse_request(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, HttpError> {
        let mut pending = match self.pending.take() {
            Some(pending) => pending,
            None => match self.parse_head(buf)? {
                Some(pending) => pending,
                None => return Ok(None),
            },
        };
        let body = match &mut pending.body {
            BodyState::Length { len } => {
                if buf.len() < *len {
                    self.pending = Some(pending);
                    return Ok(None);
                }
                buf.split_to(*len).freeze()
            }
            BodyState::Chunked(chunked) => match chunked.decode(buf, &self.limits)? {
                Some(body) => body,
                None => {
                    self.pending = Some(pending);
                    return Ok(None);
                }
            },
        };
        self.continue_state = ContinueState::NotExpected;
        let head = pending.head;
        Ok(Some(Request {
            method: head.method,
            path: head.path,
            query: head.query,
            headers: head.headers,
            body,
            keep_alive: head.keep_alive,
        }))
    }

    /// Parses and consumes the request head, deciding how the body is framed. Leaves `buf`
    /// untouched when the head is incomplete.
    fn parse_head(&mut self, buf: &mut BytesMut) -> Result<Option<PendingRequest>, HttpError> {
        let limits = self.limits;
        // Never look past the limit: a head that does not end within it is refused regardless
        // of what follows, and this bounds the rescans of a head that arrives piecemeal.
        let window = buf.get(..limits.header_bytes_max).unwrap_or(buf.as_ref());
        let mut header_slots = vec![httparse::EMPTY_HEADER; limits.headers_count_max];
        let mut raw = httparse::Request::new(&mut header_slots);
        let head_len = match raw.parse(window) {
            Ok(httparse::Status::Complete(head_len)) => head_len,
            Ok(httparse::Status::Partial) if buf.len() >= limits.header_bytes_max => {
                return Err(HttpError::header_fields_too_large(format!(
                    "request head exceeds {} bytes",
                    limits.header_bytes_max
                )));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HttpError::header_fields_too_large(format!(
                    "request has more than {} header fields",
                    limits.headers_count_max
                )));
            }
            Err(httparse::Error::Version) if names_other_http_version(window) => {
                return Err(HttpError::version_not_supported(
                    "only HTTP/1.0 and HTTP/1.1 are supported",
                ));
            }
            Err(err) => {
                return Err(HttpError::bad_request(format!(
                    "malformed request head: {err}"
                )))
            }
        };
        let (Some(method), Some(target), Some(version)) = (raw.method, raw.path, raw.version)
        else {
            return Err(HttpError::bad_request("incomplete request line"));
        };
        let method = Method::from_token(method);
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
            None => (target.to_owned(), None),
        };
        let mut headers = Vec::with_capacity(raw.headers.len());
        for header in raw.headers.iter() {
            let value = std::str::from_utf8(header.value).map_err(|_| {
                HttpError::bad_request(format!("header {} is not valid UTF-8", header.name))
            })?;
            headers.push((header.name.to_ascii_lowercase(), value.to_owned()));
        }
        buf.advance(head_len);

        // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means its
        // framing cannot be trusted (a 1.0 intermediary may not have
        // decoded it); refuse it and close, rather than guess where the
        // next request starts.
        if version == 0
            && header_values(&headers, "transfer-encoding")
                .next()
                .is_some()
        {
            return Err(HttpError::bad_request(
                "Transfer-Encoding in an HTTP/1.0 request: its framing cannot be trusted",
            ));
        }
        let body = body_framing(&headers, &limits)?;
        let keep_alive = keep_alive(version, &headers);
        let body_expected = match &body {
            BodyState::Length { len } => *len > 0,
            BodyState::Chunked(_) => true,
        };
        // RFC 9110 §10.1.1: never send 100 to an HTTP/1.0 client, and only when a body follows.
        let expects_continue = version == 1
            && body_expected
            && header_values(&headers, "expect")
                .any(|value| value.trim().eq_ignore_ascii_case("100-continue"));
        self.continue_state = if expects_continue {
            ContinueState::Pending
        } else {
            ContinueState::NotExpected
        };
        Ok(Some(PendingRequest {
            head: RequestHead {
                method,
                path,
                query,
                headers,
                keep_alive,
            },
            body,
        }))
    }
}

impl ChunkedBody {
    /// Consumes as much of the chunked body as `buf` holds; returns the decoded body once the
    /// last chunk and the trailer section (read and discarded) are complete.
    fn decode(
        &mut self,
        buf: &mut BytesMut,
        limits: &HttpLimits,
    ) -> Result<Option<Bytes>, HttpError> {
        loop {
            match self.phase {
                ChunkPhase::Size => {
                    let line = match take_line(buf, CHUNK_SIZE_LINE_BYTES_MAX) {
                        LineRead::Line(line) => line,
                        LineRead::Incomplete => return Ok(None),
                        LineRead::TooLong => {
                            return Err(HttpError::bad_request("chunk size line too long"))
                        }
                    };
                    let size = parse_chunk_size(&line)?;
                    // Refuse on the declared size, before the chunk data is read.
                    if size > limits.body_bytes_max.saturating_sub(self.body.len()) {
                        return Err(body_too_large(limits));
                    }
                    self.phase = if size == 0 {
                        ChunkPhase::Trailers
                    } else {
                        ChunkPhase::Data { remaining: size }
                    };
                }
                ChunkPhase::Data { remaining } => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let taken = remaining.min(buf.len());
                    self.body.extend_from_slice(&buf.split_to(taken));
                    self.phase = if taken == remaining {
                        ChunkPhase::DataEnd
                    } else {
                        ChunkPhase::Data {
                            remaining: remaining - taken,
                        }
                    };
                }
                ChunkPhase::DataEnd => {
                    // Check what has arrived so far, so a wrong byte fails without waiting.
                    let arrived = buf.len().min(2);
                    if buf.get(..arrived) != b"\r\n".get(..arrived) {
                        return Err(HttpError::bad_request("chunk data not followed by CRLF"));
                    }
                    if arrived < 2 {
                        return Ok(None);
                    }
                    buf.advance(2);
                    self.phase = ChunkPhase::Size;
                }
                ChunkPhase::Trailers => {
                    let line_bytes_max = limits.header_bytes_max.saturating_sub(self.trailer_bytes);
                    let line = match take_line(buf, line_bytes_max) {
                        LineRead::Line(line) => line,
                        LineRead::Incomplete => return Ok(None),
                        LineRead::TooLong => {
                            return Err(HttpError::header_fields_too_large(format!(
                                "chunked trailers exceed {} bytes",
                                limits.header_bytes_max
                            )))
                        }
                    };
                    if line.is_empty() {
                        return Ok(Some(std::mem::take(&mut self.body).freeze()));
                    }
                    self.trailer_bytes += line.len() + 2;
                    self.trailer_count += 1;
                    if self.trailer_count > limits.headers_count_max {
                        return Err(HttpError::header_fields_too_large(format!(
                            "more than {} chunked trailer fields",
                            limits.headers_count_max
                        )));
                    }
                    // Trailers are discarded, but a line that is not a field means the framing
                    // is off, and guessing would be a smuggling vector.
                    let is_field =
                        line.iter()
                            .position(|&byte| byte == b':')
                            .is_some_and(|colon| {
                                colon > 0 && line.iter().all(|&byte| is_field_byte(byte))
                            });
                    if !is_field {
                        return Err(HttpError::bad_request("malformed chunked trailer field"));
                    }
                }
            }
        }
    }
}

/// Decides body framing from the head alone (RFC 9112 §6), refusing ambiguous framing that a
/// proxy in front of us might read differently.
fn body_framing(headers: &[(String, String)], limits: &HttpLimits) -> Result<BodyState, HttpError> {
    let has_transfer_encoding = header_values(headers, "transfer-encoding").next().is_some();
    let has_content_length = header_values(headers, "content-length").next().is_some();
    if has_transfer_encoding && has_content_length {
        return Err(HttpError::bad_request(
            "both Content-Length and Transfer-Encoding present; send only one",
        ));
    }
    if has_transfer_encoding {
        let mut chunked_count = 0usize;
        for coding in list_elements(headers, "transfer-encoding") {
            if coding.eq_ignore_ascii_case("chunked") {
                chunked_count += 1;
            } else {
                return Err(HttpError::not_implemented(format!(
                    "transfer coding {coding:?} is not supported; use chunked or Content-Length"
                )));
            }
        }
        if chunked_count != 1 {
            return Err(HttpError::bad_request(
                "Transfer-Encoding must name chunked exactly once",
            ));
        }
        return Ok(BodyState::Chunked(ChunkedBody::default()));
    }
    if has_content_length {
        let len = content_length(headers)?;
        if len > limits.body_bytes_max {
            return Err(body_too_large(limits));
        }
        return Ok(BodyState::Length { len });
    }
    Ok(BodyState::Length { len: 0 })
}

/// The single Content-Length the request declares. Repeats (as separate fields or a list) are
/// tolerated only when identical (RFC 9110 §8.6).
fn content_length(headers: &[(String, String)]) -> Result<usize, HttpError> {
    let mut declared: Option<usize> = None;
    for element in list_elements(headers, "content-length") {
        if element.is_empty() || !element.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(HttpError::bad_request(format!(
                "Content-Length {element:?} is not a decimal number"
            )));
        }
        // All digits, so failure can only be overflow: a size that is certainly over the limit.
        let len = element.parse::<usize>().unwrap_or(usize::MAX);
        if declared.is_some_and(|previous| previous != len) {
            return Err(HttpError::bad_request("conflicting Content-Length values"));
        }
        declared = Some(len);
    }
    declared.ok_or_else(|| HttpError::bad_request("empty Content-Length"))
}

/// HTTP/1.1 (`version == 1`) is persistent unless `Connection: close`; HTTP/1.0 only with
/// `Connection: keep-alive` (RFC 9112 §9.3).
fn keep_alive(version: u8, headers: &[(String, String)]) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for token in list_elements(headers, "connection") {
        close |= token.eq_ignore_ascii_case("close");
        keep_alive |= token.eq_ignore_ascii_case("keep-alive");
    }
    if close {
        false
    } else if version == 1 {
        true
    } else {
        keep_alive
    }
}

fn header_values<'a>(
    headers: &'a [(String, String)],
    name: &'static str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(header_name, _)| header_name == name)
        .map(|(_, value)| value.as_str())
}

/// Elements of a comma-separated list header across all its fields, trimmed, empties skipped.
fn list_elements<'a>(
    headers: &'a [(String, String)],
    name: &'static str,
) -> impl Iterator<Item = &'a str> + 'a {
    header_values(headers, name)
        .flat_map(|value| value.split(','))
        .map(|element| element.trim_matches([' ', '\t']))
        .filter(|element| !element.is_empty())
}

/// Splits off one CRLF-terminated line (CRLF dropped). Bare LF is not a terminator: accepting
/// it where a front proxy does not is a classic chunked-smuggling desync.
fn take_line(buf: &mut BytesMut, line_bytes_max: usize) -> LineRead {
    let window_bytes = line_bytes_max.saturating_add(2);
    let window = buf.get(..window_bytes).unwrap_or(buf.as_ref());
    match window.windows(2).position(|pair| pair == b"\r\n") {
        Some(line_len) => {
            let mut line = buf.split_to(line_len + 2);
            line.truncate(line_len);
            LineRead::Line(line)
        }
        None if buf.len() >= window_bytes => LineRead::TooLong,
        None => LineRead::Incomplete,
    }
}

/// `1*HEXDIG [ BWS ";" chunk-ext ]`; extensions are ignored but must be printable.
fn parse_chunk_size(line: &[u8]) -> Result<usize, HttpError> {
    let mut size = 0usize;
    let mut digits = 0usize;
    for &byte in line {
        let Some(digit) = char::from(byte).to_digit(16) else {
            break;
        };
        digits += 1;
        size = size
            .checked_mul(16)
            .and_then(|size| size.checked_add(digit as usize))
            .ok_or_else(|| HttpError::payload_too_large("chunk size overflows"))?;
    }
    let rest = line.get(digits..).unwrap_or_default();
    let extension = rest
        .iter()
        .position(|&byte| byte != b' ' && byte != b'\t')
        .and_then(|start| rest.get(start..))
        .unwrap_or_default();
    let printable = line
        .iter()
        .all(|&byte| byte == b'\t' || (0x20..0x7f).contains(&byte));
    if digits == 0 || !printable || !(extension.is_empty() || extension.first() == Some(&b';')) {
        return Err(HttpError::bad_request(format!(
            "malformed chunk size line {:?}",
            String::from_utf8_lossy(line)
        )));
    }
    Ok(size)
}

/// Field-value bytes per RFC 9110 §5.5: visible ASCII, SP, HTAB and obs-text; no CR, LF, NUL.
fn is_field_byte(byte: u8) -> bool {
    byte == b'\t' || (0x20..0x7f).contains(&byte) || byte >= 0x80
}

fn body_too_large(limits: &HttpLimits) -> HttpError {
    HttpError::payload_too_large(format!(
        "request body exceeds {} bytes",
        limits.body_bytes_max
    ))
}

/// httparse reports any unparseable version as `Version`; only a well-formed `HTTP/<digit>` is
/// a real version mismatch (505), anything else is garbage (400).
fn names_other_http_version(head: &[u8]) -> bool {
    let line_end = head
        .iter()
        .position(|&byte| byte == b'\r' || byte == b'\n')
        .unwrap_or(head.len());
    let request_line = head.get(..line_end).unwrap_or_default();
    let version = request_line
        .rsplit(|&byte| byte == b' ')
        .next()
        .unwrap_or_default();
    version
        .strip_prefix(b"HTTP/")
        .and_then(|rest| rest.first())
        .is_some_and(u8::is_ascii_digit)
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        // The reason phrase is informational only (RFC 9112 §4); clients go by the code.
        _ => "Unknown",
    }
}

fn push_decimal(out: &mut Vec<u8>, value: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = value;
    loop {
        start -= 1;
        if let Some(slot) = digits.get_mut(start) {
            *slot = b'0' + (rest % 10) as u8;
        }
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

/// Runs one cancelable I/O op, cancelling it if it has not completed within `timeout`, and
/// returns its output plus whether the deadline passed.
///
/// Plain `monoio::time::timeout` only drops the future, and without monoio's `async-cancel`
/// feature a dropped io_uring op is never cancelled: the kernel keeps the buffer and a reference
/// to the socket, so a timed-out connection would stay open until the peer sends again. Here the
/// op is cancelled and awaited, so the buffer comes back and nothing is left in flight. After a
/// timeout the output is usually `ECANCELED`, but the op may have completed in the race; callers
/// treat an `Ok` as a normal completion.
async fn run_with_timeout<F: Future>(
    timeout: Duration,
    start: impl FnOnce(CancelHandle) -> F,
) -> (F::Output, bool) {
    let canceller = Canceller::new();
    let mut op = std::pin::pin!(start(canceller.handle()));
    let finished = monoio::select! {
        biased;
        output = &mut op => Some(output),
        () = monoio::time::sleep(timeout) => None,
    };
    match finished {
        Some(output) => (output, false),
        None => {
            canceller.cancel();
            (op.await, true)
        }
    }
}

/// Writes all of `outbound` and hands the (cleared) buffer back for reuse. `idle_timeout` bounds
/// each write, i.e. how long the peer may leave its receive window closed.
async fn write_out(
    stream: &mut TcpStream,
    outbound: Vec<u8>,
    idle_timeout: Duration,
) -> Result<Vec<u8>, ServeError> {
    let mut outbound = outbound;
    let mut written = 0usize;
    while written < outbound.len() {
        let end = outbound.len();
        let unwritten = outbound.slice(written..end);
        let ((result, slice), timed_out) = run_with_timeout(idle_timeout, |cancel| {
            stream.cancelable_write(unwritten, cancel)
        })
        .await;
        outbound = slice.into_inner();
        match result {
            Ok(0) => return Err(ServeError::Io(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(_) if timed_out => {
                return Err(ServeError::ResponseTimeout {
                    timeout_ms: idle_timeout.as_millis(),
                })
            }
            Err(err) => return Err(ServeError::Io(err)),
        }
    }
    outbound.clear();
    outbound.shrink_to(OUTBOUND_RETAINED_BYTES_MAX);
    Ok(outbound)
}

/// Half-closes and drains the peer before the socket is dropped. Closing with unread bytes in the
/// receive queue makes the kernel send RST, which can destroy the response we just wrote before
/// the client reads it (e.g. a 413 while the client is still sending its body). Best effort and
/// bounded in time and bytes; errors only mean there is nothing left to protect.
async fn linger_close(stream: &mut TcpStream, idle_timeout: Duration) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = std::time::Instant::now() + idle_timeout.min(LINGER_DURATION_MAX);
    let mut scratch = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut drained = 0usize;
    while drained < LINGER_BYTES_MAX {
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        scratch.clear();
        let ((result, returned), _timed_out) =
            run_with_timeout(remaining, |cancel| stream.cancelable_read(scratch, cancel)).await;
        scratch = returned;
        match result {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

#[cfg(test)]
mod tests;
