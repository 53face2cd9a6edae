//! HTTP/1.1 server for the control plane: the API that app backends call to publish, send, query
//! presence and stats, and that Prometheus scrapes (`/metrics`, `/health`).
//!
//! The protocol is hyper's (`hyper::server::conn::http1`): request parsing, body framing
//! (`Content-Length`, chunked, trailers), pipelining, `Expect: 100-continue` and response
//! encoding. This module owns what hyper leaves to the server: the limits from the config, the
//! JSON error bodies, the idle and write deadlines, lingering close, graceful shutdown, and the
//! accept loop. Routing and the handlers live elsewhere behind the [`Handler`] trait.
//!
//! The control thread runs a tokio current-thread runtime (see `docs/dependencies.md`), so the
//! handler's futures need not be `Send`: every connection is a local task on that one thread.
//!
//! The connection is generic over its transport: [`serve_connection`] takes any
//! `AsyncRead + AsyncWrite` stream, so TLS (`tokio-rustls`, with the configuration of
//! `crate::tls`) is a wrapper around the accepted `TcpStream` in [`serve`], nothing more.
//!
//! What hyper refuses while reading a request head (a malformed request line or header field, a
//! head over `header_bytes_max` or over [`HEADERS_COUNT_MAX`] fields, `Transfer-Encoding` in an
//! HTTP/1.0 request, an unparseable or conflicting `Content-Length`) it answers itself, with 400
//! or 431 and an empty body, and closes the connection; every refusal made here (body too large,
//! unsupported transfer coding) carries the JSON error body.
#![deny(unsafe_code)]

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;

use crate::tls::TlsConfigs;

pub use hyper::header::HeaderMap;
pub use hyper::Method;

/// Most header fields in one request head (and, separately, in a chunked trailer section).
pub const HEADERS_COUNT_MAX: usize = 100;
pub const CONTENT_TYPE_JSON: &str = "application/json";

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

/// Everything a connection needs besides its transport and handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    pub limits: HttpLimits,
    /// Bounds every wait on the peer: for the next request head (from the end of the previous
    /// response; this is also the slowloris bound on a head that trickles in), for each piece of
    /// a request body, and for the peer to take each write of a response.
    pub idle_timeout: Duration,
    /// On shutdown, how long in-flight requests get to finish before their connections are cut.
    pub shutdown_grace: Duration,
    /// Connections served at once; one accepted beyond this is closed at once (each holds a file
    /// descriptor and up to `body_bytes_max` of buffered body).
    pub connections_max: usize,
}

/// A request with its body read whole. Header names are lowercase (hyper's `HeaderMap`).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// The request target's path, up to (not including) `?`.
    pub path: String,
    /// Everything after the first `?`, undecoded; `None` when the target has no `?`.
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why [`serve_connection`] ended a connection abnormally. A clean close (the peer hung up
/// between requests, or a `Connection: close` exchange finished) is `Ok(())`. A keep-alive
/// connection that went idle ends as hyper's header-read timeout (`hyper::Error::is_timeout`),
/// the same error as a head that trickled in too slowly: hyper does not tell them apart.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("control listener accept failed (retrying after a backoff): {0}")]
    Accept(std::io::Error),
    /// Malformed request, idle or header-read timeout, stalled body, I/O failure: hyper's
    /// account of why the connection ended. For a malformed request hyper already answered.
    #[error("control connection failed: {0}")]
    Http(#[from] hyper::Error),
    /// A connection arrived with `connections_max` already served; it was closed at once.
    #[error("control connection refused: {connections_max} connections are served already")]
    AtCapacity { connections_max: usize },
    /// The TLS handshake failed or did not finish within the idle timeout (https only).
    #[error("control connection TLS handshake failed: {0}")]
    Tls(std::io::Error),
}

/// Why a request body could not be read; the service answers or aborts on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    #[error("request body exceeds {body_bytes_max} bytes")]
    TooLarge { body_bytes_max: usize },
    #[error("request body not received whole within the idle timeout ({timeout_ms} ms)")]
    Stalled { timeout_ms: u128 },
    #[error("malformed request body: {0}")]
    Malformed(hyper::Error),
}

/// A response built by a handler. `Content-Length`, `Transfer-Encoding` and `Connection` are
/// hyper's to write; handler-supplied copies are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

/// Application logic behind the control API.
pub trait Handler {
    /// Answers one request. Called on the control thread; the future need not be `Send` because
    /// the control runtime is single-threaded.
    fn handle(&self, req: Request) -> impl Future<Output = Response>;

    /// Looks at a request's head (its `body` still empty) before the body is read; a refusal is
    /// sent at once and the connection closed, so a caller without credentials never makes the
    /// server buffer a body. The default lets every request through.
    fn screen(&self, head: &Request) -> Option<Response> {
        let _ = head;
        None
    }

    /// Called once per connection that ended abnormally, and for each failed accept, so the
    /// control plane can count or log it. Per-connection failures are operating errors, never
    /// fatal, so the default ignores them.
    fn on_connection_error(&self, err: &ServeError) {
        let _ = err;
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_bytes_max: 16 * 1024,
            headers_count_max: HEADERS_COUNT_MAX,
            body_bytes_max: 1024 * 1024,
        }
    }
}

impl Request {
    /// The first value of header `name` (case-insensitive); `None` when absent or not visible
    /// ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
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

    /// Converts to hyper's response. `close` asks hyper to close the connection after it (a
    /// refused request whose body may not have been read).
    fn into_hyper(self, close: bool) -> hyper::Response<Full<Bytes>> {
        let mut response = hyper::Response::new(Full::new(self.body));
        *response.status_mut() = hyper::StatusCode::from_u16(self.status)
            .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(hyper::header::SERVER, HeaderValue::from_static("ringcast"));
        for (name, value) in self.headers {
            // Framing is hyper's: a second Content-Length or Connection from a handler would make
            // the response ambiguous to the client.
            if FRAMING_HEADERS
                .iter()
                .any(|framing| framing.eq_ignore_ascii_case(name))
            {
                continue;
            }
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            // A CR or LF in a value (e.g. echoed user input) would let it inject headers; blank
            // every control byte rather than trust every handler to validate.
            let value: Vec<u8> = value
                .bytes()
                .map(|byte| {
                    if byte.is_ascii_control() && byte != b'\t' {
                        b' '
                    } else {
                        byte
                    }
                })
                .collect();
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                headers.append(name, value);
            }
        }
        if close {
            headers.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// Accepts connections and serves each on its own local task until `shutdown` completes; then
/// stops accepting, lets in-flight requests finish (idle keep-alive connections close at once),
/// and returns once every connection has ended or `options.shutdown_grace` has passed, cutting
/// those still open. Must run inside a `tokio::task::LocalSet`.
///
/// With `tls`, every connection first completes a TLS handshake (under the same
/// `idle_timeout` as a request head) with the configuration current at its accept, so a
/// certificate reloaded on SIGHUP takes effect at the next connection.
pub async fn serve<H: Handler + 'static>(
    listener: TcpListener,
    handler: Rc<H>,
    options: ServeOptions,
    tls: Option<Arc<TlsConfigs>>,
    shutdown: impl Future,
) {
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            // Shutdown first so a flood of connections cannot starve it.
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        // Reap finished connections so the set holds only live ones.
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, _peer)) if connections.len() >= options.connections_max => {
                // Closed unanswered: answering would take a task and buffers from the very
                // budget the cap protects.
                drop(stream);
                handler.on_connection_error(&ServeError::AtCapacity {
                    connections_max: options.connections_max,
                });
            }
            Ok((stream, _peer)) => {
                // Responses are written whole; Nagle would only delay the tail of pipelined
                // batches behind the client's delayed ACK. Failure just costs latency.
                let _ = stream.set_nodelay(true);
                let handler = Rc::clone(&handler);
                let stopping = stopping_rx.clone();
                let acceptor = tls
                    .as_ref()
                    .map(|tls| tokio_rustls::TlsAcceptor::from(tls.api()));
                connections.spawn_local(async move {
                    let stopping = async move {
                        let mut stopping = stopping;
                        // A dropped sender also means stop.
                        let _ = stopping.wait_for(|stopping| *stopping).await;
                    };
                    let served = match acceptor {
                        None => {
                            serve_connection(stream, Rc::clone(&handler), options, stopping).await
                        }
                        Some(acceptor) => {
                            match tokio::time::timeout(
                                options.idle_timeout,
                                acceptor.accept(stream),
                            )
                            .await
                            {
                                Ok(Ok(stream)) => {
                                    serve_connection(stream, Rc::clone(&handler), options, stopping)
                                        .await
                                }
                                Ok(Err(err)) => Err(ServeError::Tls(err)),
                                Err(_) => Err(ServeError::Tls(std::io::Error::new(
                                    std::io::ErrorKind::TimedOut,
                                    "TLS handshake not finished within api.idle_timeout_ms",
                                ))),
                            }
                        }
                    };
                    if let Err(err) = served {
                        handler.on_connection_error(&err);
                    }
                });
            }
            Err(err) => {
                // Out of file descriptors and similar: retrying immediately would spin the
                // control thread, so back off; shutdown is still honored on the next turn.
                handler.on_connection_error(&ServeError::Accept(err));
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    let drained = tokio::time::timeout(options.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "API connections still open after the shutdown grace; closing them"
        );
    }
    // Dropping the set aborts what is left.
}

/// Serves one connection over any transport until the peer closes it, it idles out, a
/// `Connection: close` exchange completes, a request is refused, or `stopping` completes (then
/// the request in flight is answered and the connection closed). Ends with a lingering close.
pub async fn serve_connection<S, H>(
    io: S,
    handler: Rc<H>,
    options: ServeOptions,
    stopping: impl Future,
) -> Result<(), ServeError>
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
    H: Handler + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let handler = Rc::clone(&handler);
        let answer: ServiceFuture =
            Box::pin(async move { answer(&*handler, request, options).await });
        answer
    });
    let io = TokioIo::new(WriteDeadline::new(io, options.idle_timeout));
    let mut connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // hyper starts this at the first poll for a head, i.e. right after the previous
        // response: it is both the keep-alive idle limit and the slowloris bound.
        .header_read_timeout(options.idle_timeout)
        .max_header_size(options.limits.header_bytes_max)
        // The read buffer must hold the largest head allowed, or hyper refuses below the limit.
        .max_buf_size(options.limits.header_bytes_max.max(READ_BUF_BYTES_MAX))
        .max_headers(options.limits.headers_count_max)
        .serve_connection(io, service);
    let mut stopping = std::pin::pin!(stopping);
    let mut draining = false;
    let result = std::future::poll_fn(|cx| {
        if !draining && stopping.as_mut().poll(cx).is_ready() {
            draining = true;
            Pin::new(&mut connection).graceful_shutdown();
        }
        // Without shutdown: the transport comes back below for the lingering close.
        connection.poll_without_shutdown(cx)
    })
    .await;
    let io = connection.into_parts().io.into_inner().into_inner();
    linger_close(io, options.idle_timeout).await;
    result.map_err(ServeError::Http)
}

type ServiceFuture = Pin<Box<dyn Future<Output = Result<HyperResponse, BodyError>>>>;
type HyperResponse = hyper::Response<Full<Bytes>>;

const FRAMING_HEADERS: [&str; 4] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "server",
];
/// hyper's default read-buffer cap (`8192 + 4096 * 100`); raised only for a larger head limit.
const READ_BUF_BYTES_MAX: usize = 8192 + 4096 * 100;
/// How long and how much we drain after our FIN before closing (see [`linger_close`]).
const LINGER_DURATION_MAX: Duration = Duration::from_secs(2);
const LINGER_BYTES_MAX: usize = 256 * 1024;
const LINGER_READ_BYTES: usize = 16 * 1024;
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Reads the request's body within the limits and hands the request to the handler. A body over
/// the limit or with an unsupported coding is refused with a JSON error and `Connection: close`;
/// a stalled body aborts the connection without an answer (as a stalled head does).
async fn answer<H: Handler>(
    handler: &H,
    request: hyper::Request<Incoming>,
    options: ServeOptions,
) -> Result<HyperResponse, BodyError> {
    let (parts, body) = request.into_parts();
    if let Err(refusal) = check_transfer_coding(&parts.headers) {
        return Ok(refusal.into_hyper(true));
    }
    let mut request = Request {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body: Bytes::new(),
    };
    if let Some(refusal) = handler.screen(&request) {
        // The body stays unread: the connection cannot be reused.
        return Ok(refusal.into_hyper(true));
    }
    request.body = match read_body(body, options).await {
        Ok(body) => body,
        Err(BodyError::TooLarge { body_bytes_max }) => {
            let refusal = Response::error(
                413,
                "payload_too_large",
                &format!("request body exceeds {body_bytes_max} bytes"),
            );
            return Ok(refusal.into_hyper(true));
        }
        Err(BodyError::Malformed(err)) => {
            let refusal = Response::error(
                400,
                "bad_request",
                &format!("malformed request body: {err}"),
            );
            return Ok(refusal.into_hyper(true));
        }
        Err(stalled) => return Err(stalled),
    };
    Ok(handler.handle(request).await.into_hyper(false))
}

/// hyper reads any `Transfer-Encoding` that ends in `chunked` as chunked and passes the rest of
/// the codings through undecoded; the API decodes none, so the only coding it takes is a single
/// `chunked` (RFC 9112 §6.1: 501 for a coding the server does not understand).
fn check_transfer_coding(headers: &HeaderMap) -> Result<(), Response> {
    let mut chunked_count = 0usize;
    for value in headers.get_all(hyper::header::TRANSFER_ENCODING) {
        let value = String::from_utf8_lossy(value.as_bytes());
        for coding in value
            .split(',')
            .map(|coding| coding.trim_matches([' ', '\t']))
        {
            if coding.is_empty() {
                continue;
            }
            if !coding.eq_ignore_ascii_case("chunked") {
                return Err(Response::error(
                    501,
                    "not_implemented",
                    &format!(
                        "transfer coding {coding:?} is not supported; use chunked or Content-Length"
                    ),
                ));
            }
            chunked_count += 1;
        }
    }
    if chunked_count > 1 {
        return Err(Response::error(
            400,
            "bad_request",
            "Transfer-Encoding must name chunked exactly once",
        ));
    }
    Ok(())
}

/// Collects the body, refusing one that declares (`Content-Length`) or reaches more than
/// `body_bytes_max` bytes. A declared oversize is refused before any of the body is read, so an
/// `Expect: 100-continue` client is never told to send it. Each wait for more of the body is
/// bounded by the idle timeout.
/// Reads the body whole within `idle_timeout`, counted from the head: a per-piece deadline alone
/// would let a body trickle in for hours (a byte per interval) while holding its buffer.
async fn read_body(body: Incoming, options: ServeOptions) -> Result<Bytes, BodyError> {
    tokio::time::timeout(options.idle_timeout, read_body_within_limit(body, options))
        .await
        .map_err(|_elapsed| BodyError::Stalled {
            timeout_ms: options.idle_timeout.as_millis(),
        })?
}

async fn read_body_within_limit(
    mut body: Incoming,
    options: ServeOptions,
) -> Result<Bytes, BodyError> {
    use hyper::body::Body as _;
    let body_bytes_max = options.limits.body_bytes_max;
    let too_large = BodyError::TooLarge { body_bytes_max };
    if body
        .size_hint()
        .exact()
        .is_some_and(|declared| declared > body_bytes_max as u64)
    {
        return Err(too_large);
    }
    // Most bodies arrive as one frame: keep it without a copy.
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    loop {
        let Some(frame) = body.frame().await else {
            break;
        };
        let Ok(data) = frame.map_err(BodyError::Malformed)?.into_data() else {
            // Trailers: hyper bounds them by the head limits; the API ignores them.
            continue;
        };
        let received = first.as_ref().map_or(0, Bytes::len) + joined.len();
        if data.len() > body_bytes_max.saturating_sub(received) {
            return Err(too_large);
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            None => joined.extend_from_slice(&data),
            Some(previous) => {
                joined.extend_from_slice(&previous);
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

/// Half-closes and drains the peer before the transport is dropped. Closing with unread bytes in
/// the receive queue makes the kernel send RST, which can destroy the response we just wrote
/// before the client reads it (e.g. a 413 while the client is still sending its body). Best
/// effort and bounded in time and bytes; errors only mean there is nothing left to protect.
async fn linger_close<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, idle_timeout: Duration) {
    let drain = async {
        if io.shutdown().await.is_err() {
            return;
        }
        let mut scratch = vec![0u8; LINGER_READ_BYTES];
        let mut drained = 0usize;
        while drained < LINGER_BYTES_MAX {
            match io.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(idle_timeout.min(LINGER_DURATION_MAX), drain).await;
}

/// A transport whose writes fail with `TimedOut` when the peer leaves its receive window closed
/// for longer than `timeout`: hyper has no write timeout of its own, and a peer that never
/// reads its responses would otherwise hold the connection forever.
struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    /// Armed while a write is blocked; cleared by any write progress.
    blocked_since: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            blocked_since: None,
        }
    }

    fn into_inner(self) -> S {
        self.inner
    }

    /// Turns a pending write into `TimedOut` once it has been pending for `timeout`.
    fn check_blocked<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if poll.is_ready() {
            self.blocked_since = None;
            return poll;
        }
        let timeout = self.timeout;
        let deadline = self
            .blocked_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::ErrorKind::TimedOut.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check_blocked(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.check_blocked(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.check_blocked(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
