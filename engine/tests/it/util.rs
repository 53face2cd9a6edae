//! Shared test plumbing: start an engine, mint tokens, connect clients,
//! call the API.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringcast_engine::config::{Config, Driver};
use ringcast_engine::Engine;
use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode as TCloseCode;
use tungstenite::{Message, WebSocket};

pub type Ws = WebSocket<TcpStream>;

/// Runs the test body once per I/O driver.
#[macro_export]
macro_rules! e2e {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn io_uring() {
                let body: fn(ringcast_engine::config::Driver) = $body;
                body(ringcast_engine::config::Driver::IoUring);
            }
            #[test]
            fn epoll() {
                let body: fn(ringcast_engine::config::Driver) = $body;
                body(ringcast_engine::config::Driver::Epoll);
            }
        }
    };
}

pub const SECRET: &str = "test-jwt-secret-0123456789abcdef0123456789";
pub const API_KEY: &str = "test-api-key-0123456789";

/// `Config::test_min` with heartbeats slow enough not to interfere with
/// tests that are not about them.
pub fn config(driver: Driver, shards: u16) -> Config {
    let mut config = Config::test_min();
    config.server.driver = driver;
    config.server.shards = ringcast_engine::config::ShardCount::new(shards).expect("shard count");
    config.websocket.ping_interval = Duration::from_secs(30);
    config.websocket.pong_timeout = Duration::from_secs(30);
    config.websocket.slow_consumer_timeout = Duration::from_secs(2);
    config.websocket.connections_max_per_shard = 2_000;
    config.websocket.subscriptions_max_per_connection = 64;
    config.auth.leeway = Duration::ZERO;
    assert_eq!(config.auth.jwt_secret.expose(), SECRET);
    config
}

/// A running engine with its own store directory, removed afterwards.
pub struct TestEngine {
    engine: Option<Engine>,
    _data_dir: tempfile::TempDir,
}

impl std::ops::Deref for TestEngine {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        self.engine.as_ref().expect("engine running")
    }
}

impl TestEngine {
    pub fn shutdown(mut self) {
        if let Some(engine) = self.engine.take() {
            engine.shutdown();
        }
    }
}

impl Drop for TestEngine {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.shutdown();
        }
    }
}

pub fn start(mut config: Config) -> TestEngine {
    let data_dir = tempfile::tempdir().expect("temp dir");
    config.server.data_dir = data_dir.path().to_path_buf();
    TestEngine {
        engine: Some(Engine::start(config).expect("engine starts")),
        _data_dir: data_dir,
    }
}

pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn token_for(user: &str, exp: u64) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn token(user: &str) -> String {
    token_for(user, now_s() + 3600)
}

pub fn ws_url(engine: &Engine, token: &str) -> String {
    format!("ws://{}/connection/websocket?token={token}", engine.ws_addr)
}

/// Connects with tungstenite, optionally offering a subprotocol, and
/// returns the socket and the `connect` message.
pub fn connect_with(engine: &Engine, token: &str, protocol: Option<&str>) -> (Ws, Value) {
    let mut request = ws_url(engine, token).into_client_request().unwrap();
    if let Some(protocol) = protocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    }
    let stream = TcpStream::connect(engine.ws_addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (mut ws, _response) = tungstenite::client(request, stream).expect("upgrade");
    let first = if protocol == Some(ringcast_protocol::client::SUBPROTOCOL_BINARY) {
        match ws.read().unwrap() {
            Message::Binary(bytes) => {
                match ringcast_protocol::client::decode_server_binary(&bytes).unwrap() {
                    ringcast_protocol::client::ServerMessage::Connect(info) => {
                        serde_json::json!({"connect": {"client": info.client_id.to_string(), "user": info.user, "shard": info.shard}})
                    }
                    other => panic!("first message was {other:?}"),
                }
            }
            other => panic!("first message was {other:?}"),
        }
    } else {
        read_json(&mut ws)
    };
    assert!(
        first.get("connect").is_some(),
        "first message is connect: {first}"
    );
    (ws, first)
}

pub fn connect(engine: &Engine, user: &str) -> (Ws, Value) {
    connect_with(engine, &token(user), None)
}

pub fn read_json<S: Read + Write>(ws: &mut WebSocket<S>) -> Value {
    loop {
        match ws.read().expect("read") {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

pub fn send_json<S: Read + Write>(ws: &mut WebSocket<S>, value: Value) {
    ws.send(Message::Text(value.to_string())).unwrap();
}

/// Sends a command and returns its reply, skipping pushes that arrive first.
pub fn command<S: Read + Write>(ws: &mut WebSocket<S>, value: Value) -> Value {
    let id = value["id"].clone();
    send_json(ws, value);
    loop {
        let message = read_json(ws);
        if message.get("push").is_none() {
            assert_eq!(message["id"], id, "reply id");
            return message;
        }
    }
}

pub fn subscribe<S: Read + Write>(ws: &mut WebSocket<S>, id: u64, channel: &str) {
    let reply = command(
        ws,
        serde_json::json!({"id": id, "method": "subscribe", "params": {"channel": channel}}),
    );
    assert!(
        reply.get("result").is_some(),
        "subscribe {channel}: {reply}"
    );
}

/// Reads until the server closes; returns the close code.
pub fn read_close_code<S: Read + Write>(ws: &mut WebSocket<S>) -> Option<u16> {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => return None,
            Err(tungstenite::Error::Protocol(_)) | Err(tungstenite::Error::Io(_)) => return None,
            Err(err) => panic!("unexpected error {err:?}"),
        }
    }
}

pub fn _code(code: TCloseCode) -> u16 {
    u16::from(code)
}

/// One request to the API, with the API key.
pub fn api(engine: &Engine, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    api_raw(
        engine.api_addr,
        method,
        path,
        body.map(|b| b.to_string()).as_deref(),
        Some(API_KEY),
    )
}

/// The tests' HTTP client (ureq, an independent implementation): every
/// status is an answer, not an error.
pub fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// One request to the API at `addr`, with `key` as the API key if given;
/// the answer's status and its body, parsed when it is JSON, else as text.
pub fn api_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    key: Option<&str>,
) -> (u16, Value) {
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("Content-Type", "application/json");
    if let Some(key) = key {
        request = request.header("Authorization", format!("apikey {key}"));
    }
    let sent = match body {
        Some(body) => http_agent().run(request.body(body.to_owned()).unwrap()),
        None => http_agent().run(request.body(()).unwrap()),
    };
    let mut response = sent.unwrap_or_else(|err| panic!("{method} {path}: {err}"));
    let status = response.status().as_u16();
    let is_json = response
        .headers()
        .get("content-type")
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/json"));
    let text = response.body_mut().read_to_string().unwrap();
    let value = if is_json {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON body {text:?}: {e}"))
    } else {
        Value::String(text)
    };
    (status, value)
}

pub fn publish(engine: &Engine, channel: &str, data: Value) -> Value {
    let (status, body) = api(
        engine,
        "POST",
        "/api/publish",
        Some(serde_json::json!({"channel": channel, "data": data})),
    );
    assert_eq!(status, 200, "publish: {body}");
    body
}

/// The sum of a per-shard counter of `/api/stats`.
pub fn shard_stat_sum(engine: &Engine, counter: &str) -> u64 {
    let (_, stats) = api(engine, "GET", "/api/stats", None);
    stats["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[counter].as_u64().unwrap())
        .sum()
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// A raw client: does the upgrade by hand, then sends arbitrary bytes.
pub struct Raw {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl Raw {
    pub fn connect(engine: &Engine, user: &str) -> Raw {
        Raw::connect_with_headers(engine, user, "").0
    }

    /// Connects sending `extra_headers` (each ending in CRLF); returns the
    /// client and the 101's head.
    pub fn connect_with_headers(engine: &Engine, user: &str, extra_headers: &str) -> (Raw, String) {
        let mut stream = TcpStream::connect(engine.ws_addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let request = format!(
            "GET /connection/websocket?token={} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n",
            token(user)
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        let head = raw.read_http_head();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        (raw, head)
    }

    pub fn read_http_head(&mut self) -> String {
        loop {
            if let Some(pos) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..pos]).to_string();
                self.buf.drain(..pos + 4);
                return head;
            }
            self.fill();
        }
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break 0,
            }
        };
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Reads one server frame: (opcode, payload). None on EOF.
    pub fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        self.read_frame_first_byte()
            .map(|(first_byte, payload)| (first_byte & 0x0f, payload))
    }

    /// Reads one server frame: (its first byte, payload). None on EOF.
    pub fn read_frame_first_byte(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let first_byte = self.buf[0];
                let len7 = (self.buf[1] & 0x7f) as usize;
                let (len, header) = match len7 {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n, 2),
                };
                if len != usize::MAX && self.buf.len() >= header + len {
                    let payload = self.buf[header..header + len].to_vec();
                    self.buf.drain(..header + len);
                    return Some((first_byte, payload));
                }
            }
            if self.fill() == 0 {
                return None;
            }
        }
    }

    /// Skips frames until a close frame; returns its code.
    pub fn read_close_code(&mut self) -> Option<u16> {
        while let Some((opcode, payload)) = self.read_frame() {
            if opcode == 0x8 {
                return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
        None
    }

    /// Sends a client frame, masked unless `masked` is false.
    pub fn send_frame(&mut self, first_byte: u8, payload: &[u8], masked: bool) {
        let mut frame = vec![first_byte];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = [0x12, 0x34, 0x56, 0x78];
        if masked {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        let _ = self.stream.write_all(&frame);
    }
}

/// A port that was free a moment ago (for processes that need a fixed one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects as `user` with extra query parameters (`since`, `epoch`,
/// `device`) and reads the `connect` message.
pub fn connect_query(engine: &Engine, user: &str, query: &str) -> Ws {
    let url = format!("{}&{query}", ws_url(engine, &token(user)));
    let stream = TcpStream::connect(engine.ws_addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (mut ws, _) = tungstenite::client(url, stream).expect("upgrade");
    assert!(read_json(&mut ws).get("connect").is_some());
    ws
}

/// Of sockets that never sent an upgrade: how many the server still holds
/// (a read times out) and how many it closed (EOF or reset).
pub fn held_and_closed(streams: &[TcpStream]) -> (usize, usize) {
    let (mut held, mut closed) = (0, 0);
    for stream in streams {
        stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        match (&*stream).read(&mut [0u8; 1]) {
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                held += 1;
            }
            Ok(0) | Err(_) => closed += 1,
            Ok(_) => panic!("the server sent something before an upgrade"),
        }
    }
    (held, closed)
}

/// The real binary under `ulimit -n`, with a `hist:` namespace that keeps
/// history; killed when dropped, failed assertions included (an orphan
/// would hold the test's pipes and ports).
pub struct LimitedEngine {
    pub ws: SocketAddr,
    pub api: SocketAddr,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl LimitedEngine {
    /// The engine's process id (the shell `exec`s it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for LimitedEngine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary under `ulimit -n {nofile}` and waits for its API.
/// `server` and `websocket` are extra lines of those config tables.
pub fn start_under_nofile(nofile: usize, server: &str, websocket: &str) -> LimitedEngine {
    let dir = tempfile::tempdir().unwrap();
    let (ws_port, api_port) = (free_port(), free_port());
    let config = dir.path().join("ringcast.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[server]\nshards = 2\npin_cores = false\ndata_dir = {:?}\n{server}\n\
             [websocket]\nlisten = \"127.0.0.1:{ws_port}\"\n{websocket}\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\nkey = \"{API_KEY}\"\n\
             [auth]\njwt_secret = \"{SECRET}\"\n\
             [[namespace]]\nname = \"hist\"\nhistory = true\n[log]\nlevel = \"error\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" --config=\"$1\""))
        .arg(env!("CARGO_BIN_EXE_ringcast"))
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn ringcast under ulimit -n");
    let engine = LimitedEngine {
        ws: format!("127.0.0.1:{ws_port}").parse().unwrap(),
        api: format!("127.0.0.1:{api_port}").parse().unwrap(),
        child,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(engine.api).is_err() {
        assert!(Instant::now() < deadline, "engine did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    engine
}

/// One HTTP/1.1 request as a test backend reads it.
pub struct BackendRequest {
    pub request_line: String,
    /// Header names lower-cased.
    pub headers: std::collections::HashMap<String, String>,
    pub body: Vec<u8>,
}

/// Reads the next request of a keep-alive connection (a `Content-Length`
/// body); `None` once the client closed it.
pub fn read_backend_request(reader: &mut impl std::io::BufRead) -> Option<BackendRequest> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return None;
    }
    let mut headers = std::collections::HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let length: usize = headers
        .get("content-length")
        .map_or(0, |length| length.parse().unwrap());
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(BackendRequest {
        request_line: request_line.trim().to_owned(),
        headers,
        body,
    })
}
