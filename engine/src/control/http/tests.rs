use super::*;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn parse_all(input: &[u8]) -> Result<Option<Request>, HttpError> {
    RequestParser::new(HttpLimits::default()).parse(&mut BytesMut::from(input))
}

fn parse_one(input: &[u8]) -> Request {
    match parse_all(input) {
        Ok(Some(request)) => request,
        other => panic!("expected a complete request, got {other:?}"),
    }
}

fn parse_status(input: &[u8], limits: HttpLimits) -> u16 {
    match RequestParser::new(limits).parse(&mut BytesMut::from(input)) {
        Err(err) => err.status,
        other => panic!(
            "expected an error for {:?}, got {other:?}",
            String::from_utf8_lossy(input)
        ),
    }
}

const CHUNKED: &[u8] = b"POST /v1/publish?topic=a HTTP/1.1\r\nHost: x\r\n\
    Transfer-Encoding: chunked\r\n\r\n\
    5;name=value;flag\r\nhello\r\n7 ; ext\r\n, world\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n";

#[test]
fn content_length_body() {
    let request = parse_one(
        b"POST /v1/send?a=1&b=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Mixed-Case: V\r\n\r\nhello",
    );
    assert_eq!(request.method, Method::Post);
    assert_eq!(request.path, "/v1/send");
    assert_eq!(request.query.as_deref(), Some("a=1&b=2"));
    assert_eq!(request.body, Bytes::from_static(b"hello"));
    assert!(request.keep_alive);
    assert_eq!(request.header("x-mixed-case"), Some("V"));
    assert_eq!(request.header("X-MIXED-CASE"), Some("V"));
    assert!(request
        .headers
        .iter()
        .any(|(name, _)| name == "x-mixed-case"));
}

#[test]
fn no_body_without_framing_headers() {
    let mut buf = BytesMut::from(&b"GET /health HTTP/1.1\r\n\r\nleftover"[..]);
    let request = RequestParser::new(HttpLimits::default()).parse(&mut buf);
    let request = request.expect("parses").expect("complete");
    assert_eq!(request.method, Method::Get);
    assert!(request.body.is_empty());
    assert_eq!(request.query, None);
    assert_eq!(&buf[..], b"leftover");
}

#[test]
fn methods() {
    for (token, method) in [
        ("GET", Method::Get),
        ("POST", Method::Post),
        ("PUT", Method::Put),
        ("DELETE", Method::Delete),
        ("HEAD", Method::Head),
        ("OPTIONS", Method::Options),
        ("PATCH", Method::Other("PATCH".to_owned())),
    ] {
        let request = parse_one(format!("{token} / HTTP/1.1\r\n\r\n").as_bytes());
        assert_eq!(request.method, method);
        assert_eq!(request.method.as_str(), token);
    }
}

#[test]
fn chunked_with_extensions_and_trailers() {
    let request = parse_one(CHUNKED);
    assert_eq!(request.body, Bytes::from_static(b"hello, world"));
    assert_eq!(request.path, "/v1/publish");
    assert_eq!(request.query.as_deref(), Some("topic=a"));
}

#[test]
fn pipelined_requests_parse_in_order() {
    let mut buf = BytesMut::from(
        &b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\nGET /c"[..],
    );
    let mut parser = RequestParser::new(HttpLimits::default());
    let first = parser.parse(&mut buf).expect("ok").expect("first");
    assert_eq!((first.path.as_str(), &first.body[..]), ("/a", &b"abc"[..]));
    let second = parser.parse(&mut buf).expect("ok").expect("second");
    assert_eq!(second.path, "/b");
    assert!(parser.parse(&mut buf).expect("ok").is_none());
    assert_eq!(&buf[..], b"GET /c");
}

#[test]
fn split_at_every_byte_yields_same_request() {
    let content_length: &[u8] =
        b"PUT /x?y HTTP/1.1\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world";
    for input in [content_length, CHUNKED] {
        let expected = parse_one(input);
        for split in 0..input.len() {
            let mut parser = RequestParser::new(HttpLimits::default());
            let mut buf = BytesMut::from(&input[..split]);
            assert_eq!(parser.parse(&mut buf), Ok(None), "split at {split}");
            buf.extend_from_slice(&input[split..]);
            assert_eq!(parser.parse(&mut buf), Ok(Some(expected.clone())));
            assert!(buf.is_empty());
        }
        // And one byte at a time, which exercises every intermediate chunked phase.
        let mut parser = RequestParser::new(HttpLimits::default());
        let mut buf = BytesMut::new();
        let mut parsed = None;
        for &byte in input {
            assert!(parsed.is_none(), "request completed early");
            buf.extend_from_slice(&[byte]);
            parsed = parser.parse(&mut buf).expect("valid");
        }
        assert_eq!(parsed, Some(expected));
    }
}

#[test]
fn error_statuses() {
    let limits = HttpLimits::default();
    let cases: [(&[u8], u16); 16] = [
        (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"G@T / HTTP/1.1\r\n\r\n", 400),
        (b"GET / FOO/1.1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nnocolon\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            413,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
        ),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nX: \x01\r\n\r\n", 400),
    ];
    for (input, status) in cases {
        assert_eq!(
            parse_status(input, limits),
            status,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    // Identical repeats are one length, not a conflict.
    let request =
        parse_one(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nok");
    assert_eq!(&request.body[..], b"ok");
}

#[test]
fn content_length_with_transfer_encoding_is_refused() {
    for input in [
        &b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n"[..],
        &b"POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\nContent-Length: 0\r\n\r\n"[..],
    ] {
        let err = parse_all(input).expect_err("smuggling attempt");
        assert_eq!((err.status, err.code), (400, "bad_request"));
    }
}

#[test]
fn transfer_encoding_in_http_1_0_is_refused() {
    // RFC 9112 §6.1: the framing of such a message cannot be trusted.
    let input = b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    let err = parse_all(input).expect_err("HTTP/1.0 with Transfer-Encoding");
    assert_eq!((err.status, err.code), (400, "bad_request"));
    assert!(err.message.contains("HTTP/1.0"), "{}", err.message);
}

#[test]
fn errors_are_sticky() {
    let mut parser = RequestParser::new(HttpLimits::default());
    let mut buf = BytesMut::from(&b"GET / HTTP/9.9\r\n\r\n"[..]);
    let first = parser.parse(&mut buf).expect_err("bad version");
    buf.clear();
    buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(parser.parse(&mut buf), Err(first));
}

#[test]
fn keep_alive_rules() {
    let cases: [(&[u8], bool); 6] = [
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
    for (input, keep_alive) in cases {
        assert_eq!(
            parse_one(input).keep_alive,
            keep_alive,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn header_limits() {
    let limits = HttpLimits {
        header_bytes_max: 64,
        headers_count_max: 4,
        body_bytes_max: 16,
    };
    // A head that has not ended within the limit is refused without waiting for the rest.
    let long = format!("GET / HTTP/1.1\r\nX-Long: {}", "a".repeat(64));
    assert_eq!(parse_status(long.as_bytes(), limits), 431);
    let complete_but_long = format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(40));
    assert_eq!(parse_status(complete_but_long.as_bytes(), limits), 431);
    assert_eq!(
        parse_status(
            b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n",
            limits
        ),
        431
    );
    // Exactly at the limit is accepted.
    let exact = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(64 - 23));
    assert_eq!(exact.len(), 64);
    let mut buf = BytesMut::from(exact.as_bytes());
    let parsed = RequestParser::new(limits).parse(&mut buf);
    assert!(matches!(parsed, Ok(Some(_))), "{parsed:?}");
    // Trailers count against the same limits.
    let many_trailers =
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n";
    assert_eq!(parse_status(many_trailers, limits), 431);
    let long_trailer = format!(
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: {}\r\n\r\n",
        "a".repeat(80)
    );
    assert_eq!(parse_status(long_trailer.as_bytes(), limits), 431);
}

#[test]
fn body_limit_reported_before_body_arrives() {
    let limits = HttpLimits {
        body_bytes_max: 16,
        ..HttpLimits::default()
    };
    // Only the head (and the first chunk's size line) has arrived.
    assert_eq!(
        parse_status(b"POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n", limits),
        413
    );
    assert_eq!(
        parse_status(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n11\r\n",
            limits
        ),
        413
    );
    assert_eq!(
        parse_status(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n9\r\n",
            limits
        ),
        413
    );
    // At the limit is fine.
    let mut buf = BytesMut::from(&b"POST / HTTP/1.1\r\nContent-Length: 16\r\n\r\n"[..]);
    let mut parser = RequestParser::new(limits);
    assert_eq!(parser.parse(&mut buf), Ok(None));
    buf.extend_from_slice(&[b'x'; 16]);
    assert!(matches!(parser.parse(&mut buf), Ok(Some(request)) if request.body.len() == 16));
}

#[test]
fn expect_continue_is_flagged_once() {
    let mut parser = RequestParser::new(HttpLimits::default());
    let mut buf = BytesMut::from(
        &b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"[..],
    );
    assert_eq!(parser.parse(&mut buf), Ok(None));
    assert!(parser.expects_continue());
    parser.mark_continue_sent();
    assert!(!parser.expects_continue());
    assert_eq!(parser.parse(&mut buf), Ok(None));
    assert!(!parser.expects_continue());
    buf.extend_from_slice(b"ok");
    assert!(matches!(parser.parse(&mut buf), Ok(Some(_))));
    assert!(!parser.expects_continue());

    // Not for HTTP/1.0, and not when there is no body to wait for.
    for input in [
        &b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"[..],
        &b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n"[..],
    ] {
        let mut parser = RequestParser::new(HttpLimits::default());
        let _ = parser.parse(&mut BytesMut::from(input));
        assert!(!parser.expects_continue());
    }
}

#[test]
fn response_encoding() {
    let mut out = Vec::new();
    let mut response = Response::text(200, "text/plain", "hi");
    response
        .headers
        .push(("X-Evil", "a\r\nSet-Cookie: b".to_owned()));
    response.headers.push(("content-length", "999".to_owned()));
    write_response(&mut out, &response, true, false);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "HTTP/1.1 200 OK\r\nServer: ringcast\r\nContent-Type: text/plain\r\n\
         X-Evil: a  Set-Cookie: b\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi"
    );

    out.clear();
    write_response(
        &mut out,
        &Response::error(404, "not_found", "no \"route\""),
        false,
        true,
    );
    assert_eq!(
        String::from_utf8_lossy(&out),
        "HTTP/1.1 404 Not Found\r\nServer: ringcast\r\nContent-Type: application/json\r\n\
         Content-Length: 55\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(
        &Response::error(404, "not_found", "no \"route\"").body[..],
        br#"{"error":{"code":"not_found","message":"no \"route\""}}"#
    );

    out.clear();
    write_response(&mut out, &Response::empty(204), true, false);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "HTTP/1.1 204 No Content\r\nServer: ringcast\r\nConnection: keep-alive\r\n\r\n"
    );

    let mut map = std::collections::HashMap::new();
    map.insert(vec![1u8], 1);
    assert_eq!(Response::json(200, &map).status, 500);
    assert_eq!(&Response::json(201, &[1, 2]).body[..], b"[1,2]");
}

#[test]
fn decimal_encoding() {
    for value in [0usize, 7, 10, 1234567890, usize::MAX] {
        let mut out = Vec::new();
        push_decimal(&mut out, value);
        assert_eq!(out, value.to_string().into_bytes());
    }
}

// ===== end to end over real sockets =====

struct EchoHandler;

#[derive(serde::Serialize)]
struct Echo<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    body: String,
}

impl Handler for EchoHandler {
    async fn handle(&self, req: Request) -> Response {
        if req.path == "/missing" {
            return Response::error(404, "not_found", "no such route");
        }
        // Yield once so the handler really is asynchronous.
        monoio::time::sleep(Duration::from_millis(1)).await;
        Response::json(
            200,
            &Echo {
                method: req.method.as_str(),
                path: &req.path,
                query: req.query.as_deref(),
                body: String::from_utf8_lossy(&req.body).into_owned(),
            },
        )
    }
}

struct TestClient {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct TestResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl TestResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header_name, _)| header_name.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

impl TestClient {
    fn connect(addr: SocketAddr) -> Self {
        let stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
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
        let n = self.stream.read(&mut chunk).expect("read");
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    fn read_response(&mut self, head_only: bool) -> TestResponse {
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
                return TestResponse {
                    status,
                    headers,
                    body,
                };
            }
            assert!(self.fill() > 0, "eof before response head");
        }
    }

    fn assert_closed(&mut self) {
        assert!(self.buf.is_empty(), "unexpected bytes {:?}", self.buf);
        assert_eq!(self.fill(), 0, "server kept the connection open");
    }
}

/// Runs `client` on a plain thread against a server on each available monoio driver.
fn with_server(limits: HttpLimits, idle_timeout: Duration, client: fn(SocketAddr)) {
    async fn run(limits: HttpLimits, idle_timeout: Duration, client: fn(SocketAddr)) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let done = Arc::new(AtomicBool::new(false));
        struct SetOnDrop(Arc<AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let guard = SetOnDrop(Arc::clone(&done));
        let client_thread = std::thread::spawn(move || {
            let _guard = guard;
            client(addr);
        });
        let shutdown = async move {
            while !done.load(Ordering::Acquire) {
                monoio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        serve(
            listener,
            Rc::new(EchoHandler),
            limits,
            idle_timeout,
            shutdown,
        )
        .await;
        if let Err(panic) = client_thread.join() {
            std::panic::resume_unwind(panic);
        }
    }
    let mut legacy = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("legacy runtime");
    legacy.block_on(run(limits, idle_timeout, client));
    if monoio::utils::detect_uring() {
        let mut uring = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .expect("io_uring runtime");
        uring.block_on(run(limits, idle_timeout, client));
    } else {
        eprintln!("io_uring unavailable here; tested the legacy driver only");
    }
}

const IDLE: Duration = Duration::from_secs(5);

#[test]
fn e2e_keep_alive_two_requests_one_connection() {
    with_server(HttpLimits::default(), IDLE, |addr| {
        let mut client = TestClient::connect(addr);
        client.send(b"POST /v1/publish?t=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirst");
        let first = client.read_response(false);
        assert_eq!(first.status, 200);
        assert_eq!(first.header("connection"), Some("keep-alive"));
        assert_eq!(first.header("server"), Some("ringcast"));
        assert_eq!(
            first.json(),
            serde_json::json!({"method":"POST","path":"/v1/publish","query":"t=1","body":"first"})
        );
        client.send(b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n");
        let second = client.read_response(false);
        assert_eq!(second.status, 404);
        assert_eq!(second.json()["error"]["code"], "not_found");

        // Two pipelined requests plus a HEAD in one write, answered in order; the last one
        // asks to close.
        client.send(
            b"GET /a HTTP/1.1\r\n\r\nHEAD /b HTTP/1.1\r\n\r\n\
              POST /c HTTP/1.1\r\nContent-Length: 1\r\nConnection: close\r\n\r\nz",
        );
        assert_eq!(client.read_response(false).json()["path"], "/a");
        let head = client.read_response(true);
        assert_eq!(head.status, 200);
        assert!(head.header("content-length").is_some_and(|len| len != "0"));
        let last = client.read_response(false);
        assert_eq!(last.json()["body"], "z");
        assert_eq!(last.header("connection"), Some("close"));
        client.assert_closed();
    });
}

#[test]
fn e2e_chunked_and_expect_continue() {
    with_server(HttpLimits::default(), IDLE, |addr| {
        let mut client = TestClient::connect(addr);
        client.send(&CHUNKED[..60]);
        std::thread::sleep(Duration::from_millis(20));
        client.send(&CHUNKED[60..]);
        let response = client.read_response(false);
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["body"], "hello, world");

        client.send(b"PUT /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
        let interim = client.read_response(false);
        assert_eq!(interim.status, 100);
        client.send(b"data");
        let response = client.read_response(false);
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["body"], "data");
    });
}

#[test]
fn e2e_payload_too_large_closes() {
    let limits = HttpLimits {
        body_bytes_max: 8,
        ..HttpLimits::default()
    };
    with_server(limits, IDLE, |addr| {
        let mut client = TestClient::connect(addr);
        // The body never comes: the refusal must not wait for it.
        client.send(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n");
        let response = client.read_response(false);
        assert_eq!(response.status, 413);
        assert_eq!(response.header("connection"), Some("close"));
        assert_eq!(response.json()["error"]["code"], "payload_too_large");
        client.assert_closed();
    });
}

#[test]
fn e2e_malformed_request_gets_json_400_and_close() {
    with_server(HttpLimits::default(), IDLE, |addr| {
        let mut client = TestClient::connect(addr);
        client.send(b"GET / HTTP/1.1\r\nNo Colon Here\r\n\r\n");
        let response = client.read_response(false);
        assert_eq!(response.status, 400);
        assert_eq!(response.header("connection"), Some("close"));
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.json()["error"]["code"], "bad_request");
        client.assert_closed();
    });
}

#[test]
fn e2e_idle_connection_is_closed() {
    with_server(HttpLimits::default(), Duration::from_millis(100), |addr| {
        let mut client = TestClient::connect(addr);
        client.send(b"GET /a HTTP/1.1\r\n\r\n");
        assert_eq!(client.read_response(false).status, 200);
        let started = std::time::Instant::now();
        client.assert_closed();
        assert!(started.elapsed() < Duration::from_secs(3));

        // A request that stalls halfway is cut off too.
        let mut client = TestClient::connect(addr);
        client.send(b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
        let started = std::time::Instant::now();
        client.assert_closed();
        assert!(started.elapsed() < Duration::from_secs(3));
    });
}
