//! The control server over real sockets. Ordinary requests go through an independent client
//! (ureq); the edge cases (malformed heads, pipelining, smuggling attempts, slowloris, stalled
//! bodies) are written byte for byte on a raw `TcpStream` on purpose: they are attack inputs that
//! no well-behaved client library would send.

use super::*;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

const CHUNKED: &[u8] = b"POST /v1/publish?topic=a HTTP/1.1\r\nHost: x\r\n\
    Transfer-Encoding: chunked\r\n\r\n\
    5;name=value;flag\r\nhello\r\n7 ; ext\r\n, world\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n";

const IDLE: Duration = Duration::from_secs(5);

struct EchoHandler;

#[derive(serde::Serialize)]
struct Echo<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    body: String,
    mixed_case: Option<&'a str>,
}

impl Handler for EchoHandler {
    fn screen(&self, head: &Request) -> Option<Response> {
        (head.path == "/guarded" && head.header("x-key") != Some("k"))
            .then(|| Response::error(401, "unauthorized", "no key"))
    }

    async fn handle(&self, req: Request) -> Response {
        match req.path.as_str() {
            "/missing" => return Response::error(404, "not_found", "no such route"),
            "/empty" => return Response::empty(204),
            "/evil" => {
                let mut response = Response::text(200, "text/plain", "hi");
                response
                    .headers
                    .push(("X-Evil", "a\r\nSet-Cookie: b".to_owned()));
                response.headers.push(("content-length", "999".to_owned()));
                return response;
            }
            "/big" => return Response::text(200, "text/plain", vec![b'x'; BIG_RESPONSE_BYTES]),
            "/slow" => tokio::time::sleep(Duration::from_millis(300)).await,
            _ => {}
        }
        // Yield once so the handler really is asynchronous.
        tokio::time::sleep(Duration::from_millis(1)).await;
        Response::json(
            200,
            &Echo {
                method: req.method.as_str(),
                path: &req.path,
                query: req.query.as_deref(),
                body: String::from_utf8_lossy(&req.body).into_owned(),
                mixed_case: req.header("X-MIXED-CASE"),
            },
        )
    }
}

const BIG_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

fn options(limits: HttpLimits, idle_timeout: Duration) -> ServeOptions {
    ServeOptions {
        limits,
        idle_timeout,
        shutdown_grace: Duration::from_secs(5),
        connections_max: 64,
    }
}

/// Runs `client` on a plain thread against a server on a tokio current-thread runtime, as the
/// control thread runs it; the server shuts down when the client is done.
fn with_server(options: ServeOptions, client: fn(SocketAddr)) {
    serve_while(options, move |addr, _stop| client(addr));
}

/// Runs `client` on a plain thread against a server that shuts down when the client drops (or
/// sends on) its stop handle, or returns. Returns the address the server listened on.
fn serve_while(
    options: ServeOptions,
    client: impl FnOnce(SocketAddr, tokio::sync::oneshot::Sender<()>) + Send + 'static,
) -> SocketAddr {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let client_thread = std::thread::spawn(move || client(addr, stop_tx));
        serve(listener, Rc::new(EchoHandler), options, None, stop_rx).await;
        if let Err(panic) = client_thread.join() {
            std::panic::resume_unwind(panic);
        }
        addr
    })
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn body_json(response: &mut ureq::http::Response<ureq::Body>) -> serde_json::Value {
    response.body_mut().read_json().expect("JSON body")
}

/// A raw socket that writes exactly the bytes given and parses what comes back.
struct RawClient {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct RawResponse {
    status: u16,
    version: u8,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header_name, _)| header_name.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|value| value.eq_ignore_ascii_case("close"))
    }
}

impl RawClient {
    fn connect(addr: SocketAddr) -> Self {
        let stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            // The server's RST after its FIN also means closed.
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(err) => panic!("read: {err}"),
        }
    }

    /// The status of a response, or `None` when the server closes first.
    fn try_read_status(&mut self) -> Option<u16> {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 32];
            let mut raw = httparse::Response::new(&mut slots);
            if let Ok(httparse::Status::Complete(_)) = raw.parse(&self.buf) {
                return raw.code;
            }
            if self.fill() == 0 {
                return None;
            }
        }
    }

    fn read_response(&mut self, head_only: bool) -> RawResponse {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 32];
            let mut raw = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(head_len) = raw.parse(&self.buf).expect("head") {
                let headers: Vec<(String, String)> = raw
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let status = raw.code.expect("code");
                let version = raw.version.expect("version");
                let body_len = if head_only {
                    0
                } else {
                    headers
                        .iter()
                        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                        .map_or(0, |(_, value)| value.parse().expect("length"))
                };
                while self.buf.len() < head_len + body_len {
                    assert!(self.fill() > 0, "eof inside body");
                }
                let body = self.buf[head_len..head_len + body_len].to_vec();
                self.buf.drain(..head_len + body_len);
                return RawResponse {
                    status,
                    version,
                    headers,
                    body,
                };
            }
            assert!(self.fill() > 0, "eof before response head");
        }
    }

    fn assert_closed(&mut self) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        assert_eq!(self.fill(), 0, "server kept the connection open");
    }

    /// Reads a response that announces the close, and checks that the close follows.
    fn read_last_response(&mut self) -> RawResponse {
        let response = self.read_response(false);
        assert!(response.closes(), "{response:?}");
        self.assert_closed();
        response
    }

    /// The connection is still usable: a further request gets an answer.
    fn assert_open(&mut self) {
        self.send(b"GET /still-open HTTP/1.1\r\n\r\n");
        assert_eq!(self.read_response(false).json()["path"], "/still-open");
    }
}

/// Sends `input` on a fresh connection; expects one refusal with `status` and then a close.
fn assert_refused(addr: SocketAddr, input: &[u8], status: u16) -> RawResponse {
    let mut client = RawClient::connect(addr);
    client.send(input);
    let response = client.read_response(false);
    assert_eq!(
        response.status,
        status,
        "{:?}: {response:?}",
        String::from_utf8_lossy(input)
    );
    client.assert_closed();
    response
}

#[test]
fn content_length_body_query_and_headers() {
    with_server(options(HttpLimits::default(), IDLE), |addr| {
        let mut response = agent()
            .post(format!("http://{addr}/v1/send?a=1&b=2"))
            .header("X-Mixed-Case", "V")
            .send("hello")
            .expect("request");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers().get("server").map(|v| v.as_bytes()),
            Some(&b"ringcast"[..])
        );
        assert_eq!(
            body_json(&mut response),
            serde_json::json!({"method":"POST","path":"/v1/send","query":"a=1&b=2","body":"hello","mixed_case":"V"})
        );
        let mut response = agent()
            .get(format!("http://{addr}/health"))
            .call()
            .expect("request");
        let echo = body_json(&mut response);
        assert_eq!(
            (echo["body"].as_str(), echo["query"].as_null()),
            (Some(""), Some(()))
        );
    });
}

#[test]
fn methods_are_passed_through() {
    with_server(options(HttpLimits::default(), IDLE), |addr| {
        for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
            let request = ureq::http::Request::builder()
                .method(method)
                .uri(format!("http://{addr}/m"))
                .body(())
                .expect("request");
            let mut response = agent().run(request).expect("response");
            assert_eq!(body_json(&mut response)["method"], method);
        }
        // HEAD: the length the body would have, and no body.
        let mut client = RawClient::connect(addr);
        client.send(b"HEAD /m HTTP/1.1\r\n\r\n");
        let head = client.read_response(true);
        assert_eq!(head.status, 200);
        assert!(head.header("content-length").is_some_and(|len| len != "0"));
        client.assert_open();
    });
}

#[test]
fn keep_alive_pipelining_and_close() {
    with_server(options(HttpLimits::default(), IDLE), |addr| {
        let mut client = RawClient::connect(addr);
        client.send(b"POST /v1/publish?t=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirst");
        let first = client.read_response(false);
        assert_eq!(first.status, 200);
        assert!(!first.closes());
        assert_eq!(first.header("server"), Some("ringcast"));
        assert_eq!(first.json()["body"], "first");
        client.send(b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n");
        let second = client.read_response(false);
        assert_eq!(second.status, 404);
        assert_eq!(second.json()["error"]["code"], "not_found");

        // Pipelined requests plus a HEAD in one write, answered in order; the last one asks to
        // close.
        client.send(
            b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n\
              HEAD /c HTTP/1.1\r\n\r\n\
              POST /d HTTP/1.1\r\nContent-Length: 1\r\nConnection: close\r\n\r\nz",
        );
        let a = client.read_response(false).json();
        assert_eq!((&a["path"], &a["body"]), (&"/a".into(), &"abc".into()));
        assert_eq!(client.read_response(false).json()["path"], "/b");
        assert_eq!(client.read_response(true).status, 200);
        assert_eq!(client.read_last_response().json()["body"], "z");
    });
}

#[test]
fn keep_alive_rules() {
    const CASES: [(&[u8], bool); 6] = [
        (b"GET / HTTP/1.1\r\n\r\n", true),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
        (
            b"GET / HTTP/1.1\r\nConnection: Upgrade, Close\r\n\r\n",
            false,
        ),
        (b"GET / HTTP/1.0\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        (
            b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
            false,
        ),
    ];
    with_server(options(HttpLimits::default(), IDLE), |addr| {
        for (input, keep_alive) in CASES {
            let mut client = RawClient::connect(addr);
            client.send(input);
            let response = client.read_response(false);
            assert_eq!(response.status, 200, "{:?}", String::from_utf8_lossy(input));
            if keep_alive {
                client.assert_open();
            } else {
                client.assert_closed();
            }
        }
    });
}

#[test]
fn chunked_body_and_expect_continue() {
    with_server(options(HttpLimits::default(), IDLE), |addr| {
        let mut client = RawClient::connect(addr);
        client.send(&CHUNKED[..60]);
        std::thread::sleep(Duration::from_millis(20));
        client.send(&CHUNKED[60..]);
        let response = client.read_response(false);
        assert_eq!(response.status, 200);
        let echo = response.json();
        assert_eq!(
            (&echo["body"], &echo["query"]),
            (&"hello, world".into(), &"topic=a".into())
        );

        client.send(b"PUT /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
        let interim = client.read_response(false);
        assert_eq!(interim.status, 100);
        client.send(b"data");
        let response = client.read_response(false);
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["body"], "data");

        // No 100 when there is no body to wait for.
        client.send(b"POST /none HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(client.read_response(false).status, 200);
    });
}

#[test]
fn split_at_every_byte_yields_same_request() {
    with_server(options(HttpLimits::default(), IDLE), |addr| {
        let content_length: &[u8] = b"PUT /x?y HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world";
        for (input, body) in [(content_length, "hello world"), (CHUNKED, "hello, world")] {
            let mut client = RawClient::connect(addr);
            for &byte in input {
                client.send(&[byte]);
            }
            let response = client.read_response(false);
            assert_eq!(response.status, 200);
            assert_eq!(response.json()["body"], body);
        }
    });
}

#[test]
fn malformed_requests_are_refused_and_closed() {
    with_server(options(HttpLimits::default(), IDLE), |addr| {
        // Refused by hyper while reading the head: its own 400, no body.
        for input in [
            &b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"[..],
            b"G@T / HTTP/1.1\r\n\r\n",
            b"GET / FOO/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: \x01\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
        ] {
            assert_refused(addr, input, 400);
        }
        // Refused here, with the JSON error body.
        for (input, status, code) in [
            (
                &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"[..],
                400,
                "bad_request",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
                501,
                "not_implemented",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                400,
                "bad_request",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX",
                400,
                "bad_request",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n",
                400,
                "bad_request",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nnocolon\r\n\r\n",
                400,
                "bad_request",
            ),
        ] {
            let response = assert_refused(addr, input, status);
            assert!(response.closes(), "{response:?}");
            assert_eq!(response.header("content-type"), Some("application/json"));
            assert_eq!(response.json()["error"]["code"], code);
        }
    });
}

// RFC 9112 §6.1: the framing of an HTTP/1.0 message with Transfer-Encoding cannot be trusted, so
// it is refused and the connection closed; a request pipelined behind it is never answered.
#[test]
fn transfer_encoding_in_http_1_0_is_refused_and_closed() {
    with_server(options(HttpLimits::default(), IDLE), |addr| {
        let input =
            b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n\
            2\r\n{}\r\n0\r\n\r\nGET /pipelined HTTP/1.1\r\n\r\n";
        assert_refused(addr, input, 400);
    });
}

// RFC 9112 §6.3: with both Transfer-Encoding and Content-Length, the chunked framing wins and
// the connection is closed after the answer, so no bytes a front proxy might frame differently
// are read as a next request.
#[test]
fn content_length_with_transfer_encoding_closes_after_the_answer() {
    with_server(options(HttpLimits::default(), IDLE), |addr| {
        for input in [
            &b"POST /te HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"[..],
            b"POST /te HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n2\r\nok\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        ] {
            let mut client = RawClient::connect(addr);
            client.send(input);
            assert_eq!(client.read_last_response().json()["body"], "ok");
        }
    });
}

#[test]
fn header_limits() {
    let limits = HttpLimits {
        header_bytes_max: 64,
        headers_count_max: 4,
        body_bytes_max: 16,
    };
    with_server(options(limits, IDLE), |addr| {
        // A head that has not ended within the limit is refused without waiting for the rest.
        let long = format!("GET / HTTP/1.1\r\nX-Long: {}", "a".repeat(64));
        assert_refused(addr, long.as_bytes(), 431);
        let complete_but_long = format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(40));
        assert_refused(addr, complete_but_long.as_bytes(), 431);
        assert_refused(
            addr,
            b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n",
            431,
        );
        // Exactly at the limit is accepted.
        let exact = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(64 - 23));
        assert_eq!(exact.len(), 64);
        let mut client = RawClient::connect(addr);
        client.send(exact.as_bytes());
        assert_eq!(client.read_response(false).status, 200);
    });
}

#[test]
fn a_head_limit_above_the_default_read_buffer_is_honored() {
    let limits = HttpLimits {
        header_bytes_max: 1024 * 1024,
        ..HttpLimits::default()
    };
    with_server(options(limits, IDLE), |addr| {
        let mut client = RawClient::connect(addr);
        let head = format!(
            "GET /big-head HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(600_000)
        );
        client.send(head.as_bytes());
        assert_eq!(client.read_response(false).json()["path"], "/big-head");
    });
}

#[test]
fn body_limit() {
    let limits = HttpLimits {
        body_bytes_max: 16,
        ..HttpLimits::default()
    };
    with_server(options(limits, IDLE), |addr| {
        // A declared oversize is refused before the body arrives, and an Expect: 100-continue
        // client is not told to send it.
        let response = assert_refused(
            addr,
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 17\r\n\r\n",
            413,
        );
        assert!(response.closes());
        assert_eq!(response.json()["error"]["code"], "payload_too_large");
        // Chunked: refused once more than the limit has arrived.
        assert_refused(
            addr,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n9\r\n123456789\r\n0\r\n\r\n",
            413,
        );
        // At the limit is fine, in either framing.
        let mut client = RawClient::connect(addr);
        client.send(b"POST / HTTP/1.1\r\nContent-Length: 16\r\n\r\n");
        client.send(&[b'x'; 16]);
        assert_eq!(client.read_response(false).json()["body"], "x".repeat(16));
        client.send(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n");
        assert_eq!(client.read_response(false).status, 200);
        // The body of a refused request that is already on its way does not turn the 413 into
        // a reset (lingering close).
        let mut client = RawClient::connect(addr);
        let mut input = b"POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n".to_vec();
        input.extend_from_slice(&[b'y'; 100_000]);
        client.send(&input);
        assert_eq!(client.read_response(false).status, 413);
        client.assert_closed();
    });
}

#[test]
fn response_headers_are_sanitized() {
    with_server(options(HttpLimits::default(), IDLE), |addr| {
        let mut client = RawClient::connect(addr);
        client.send(b"GET /evil HTTP/1.1\r\n\r\n");
        let response = client.read_response(false);
        assert_eq!(response.header("x-evil"), Some("a  Set-Cookie: b"));
        assert_eq!(response.header("set-cookie"), None);
        assert_eq!(response.header("content-length"), Some("2"));
        assert_eq!(response.body, b"hi");

        client.send(b"HEAD /missing HTTP/1.1\r\n\r\n");
        let head = client.read_response(true);
        assert_eq!(head.status, 404);
        assert_eq!(head.header("content-type"), Some("application/json"));
        assert_eq!(head.header("content-length"), Some("56"));

        client.send(b"GET /empty HTTP/1.1\r\n\r\n");
        let empty = client.read_response(false);
        assert_eq!(empty.status, 204);
        assert_eq!(empty.header("content-length"), None);
        client.assert_open();
    });
    assert_eq!(
        &Response::error(404, "not_found", "no \"route\"").body[..],
        br#"{"error":{"code":"not_found","message":"no \"route\""}}"#
    );
    let mut map = std::collections::HashMap::new();
    map.insert(vec![1u8], 1);
    assert_eq!(Response::json(200, &map).status, 500);
    assert_eq!(&Response::json(201, &[1, 2]).body[..], b"[1,2]");
}

#[test]
fn http_1_0_is_answered_in_http_1_0() {
    with_server(options(HttpLimits::default(), IDLE), |addr| {
        let mut client = RawClient::connect(addr);
        client.send(b"GET /old HTTP/1.0\r\n\r\n");
        let response = client.read_response(false);
        assert_eq!((response.status, response.version), (200, 0));
        client.assert_closed();
    });
}

#[test]
fn idle_and_stalled_connections_are_closed() {
    with_server(
        options(HttpLimits::default(), Duration::from_millis(100)),
        |addr| {
            // Idle between requests.
            let mut client = RawClient::connect(addr);
            client.send(b"GET /a HTTP/1.1\r\n\r\n");
            assert_eq!(client.read_response(false).status, 200);
            client.assert_closed();

            // A body that stalls halfway is cut off, unanswered.
            let mut client = RawClient::connect(addr);
            client.send(b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
            client.assert_closed();

            // A body that trickles in, each piece well within the idle timeout, is cut off once
            // the whole body has taken longer than it.
            let mut client = RawClient::connect(addr);
            client.send(b"POST /a HTTP/1.1\r\nContent-Length: 100\r\n\r\n");
            let started = Instant::now();
            let mut cut_off = false;
            for _ in 0..100 {
                std::thread::sleep(Duration::from_millis(20));
                if client.stream.write_all(b"x").is_err() {
                    cut_off = true;
                    break;
                }
            }
            let elapsed = started.elapsed();
            if !cut_off {
                client.assert_closed();
            }
            assert!(
                elapsed < Duration::from_secs(2),
                "a trickling body was held {elapsed:?}"
            );

            // Slowloris: a head that keeps trickling in is cut off once the deadline passes, even
            // though no single wait is longer than the idle timeout.
            let mut client = RawClient::connect(addr);
            let started = Instant::now();
            let mut cut_off = false;
            for _ in 0..100 {
                if client.stream.write_all(b"X-Drip: 1\r\n").is_err() {
                    cut_off = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
                let _ = client.stream.set_nonblocking(true);
                let mut byte = [0u8; 1];
                let read = client.stream.read(&mut byte);
                let _ = client.stream.set_nonblocking(false);
                if matches!(read, Ok(0))
                    || read
                        .as_ref()
                        .is_err_and(|err| err.kind() != std::io::ErrorKind::WouldBlock)
                {
                    cut_off = true;
                    break;
                }
            }
            assert!(cut_off, "a trickling head was never cut off");
            assert!(started.elapsed() < Duration::from_secs(2));
        },
    );
}

#[test]
fn a_screened_request_is_refused_before_its_body_is_read() {
    with_server(
        options(HttpLimits::default(), Duration::from_secs(5)),
        |addr| {
            // The head alone, a large body announced and never sent: the refusal comes at once.
            let mut client = RawClient::connect(addr);
            client.send(b"POST /guarded HTTP/1.1\r\nContent-Length: 900000\r\n\r\n");
            let response = client.read_response(false);
            assert_eq!(response.status, 401);
            assert_eq!(response.header("connection"), Some("close"));
            let body: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON");
            assert_eq!(body["error"]["code"], "unauthorized");
            client.assert_closed();

            // With the key the same route reads the body and answers.
            let mut answer = agent()
                .post(format!("http://{addr}/guarded"))
                .header("x-key", "k")
                .send("payload")
                .expect("answer");
            assert_eq!(answer.status(), 200);
            assert_eq!(body_json(&mut answer)["body"], "payload");
        },
    );
}

#[test]
fn connections_over_the_cap_are_closed_at_accept() {
    let mut options = options(HttpLimits::default(), Duration::from_secs(5));
    options.connections_max = 2;
    with_server(options, |addr| {
        let mut held: Vec<RawClient> = (0..2)
            .map(|_| {
                let mut client = RawClient::connect(addr);
                client.send(b"GET /a HTTP/1.1\r\n\r\n");
                assert_eq!(client.read_response(false).status, 200);
                client
            })
            .collect();
        // A third, while two are kept alive, is closed without an answer.
        let mut extra = RawClient::connect(addr);
        let _ = extra.stream.write_all(b"GET /a HTTP/1.1\r\n\r\n");
        extra.assert_closed();
        // Once one of the two goes, a new connection is served.
        drop(held.pop());
        let served = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            let mut client = RawClient::connect(addr);
            client.stream.write_all(b"GET /a HTTP/1.1\r\n\r\n").is_ok()
                && client.try_read_status() == Some(200)
        });
        assert!(served, "a freed slot is served again");
        drop(held);
    });
}

#[test]
fn a_peer_that_never_reads_its_response_is_cut_off() {
    with_server(
        options(HttpLimits::default(), Duration::from_millis(200)),
        |addr| {
            let mut client = RawClient::connect(addr);
            client.send(b"GET /big HTTP/1.1\r\n\r\n");
            // Long enough for the server's write deadline to pass with both socket buffers full.
            std::thread::sleep(Duration::from_secs(1));
            let mut received = 0usize;
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                match client.stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => received += n,
                    Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => break,
                    Err(err) => panic!("read: {err}"),
                }
            }
            assert!(received < BIG_RESPONSE_BYTES, "the whole response arrived");
        },
    );
}

#[test]
fn shutdown_finishes_in_flight_requests_and_stops_accepting() {
    let addr = serve_while(options(HttpLimits::default(), IDLE), |addr, stop| {
        let mut idle = RawClient::connect(addr);
        idle.send(b"GET /warm HTTP/1.1\r\n\r\n");
        assert_eq!(idle.read_response(false).status, 200);
        let mut busy = RawClient::connect(addr);
        busy.send(b"GET /slow HTTP/1.1\r\n\r\n");
        std::thread::sleep(Duration::from_millis(100));
        drop(stop);
        // The request in flight is answered, and that connection then closed.
        assert_eq!(busy.read_last_response().json()["path"], "/slow");
        // The idle keep-alive connection is closed at once.
        idle.assert_closed();
    });
    // The listener is gone: nothing accepts any more.
    assert!(std::net::TcpStream::connect(addr).is_err());
}
