//! Proxies to the backend: a real HTTP backend in the test process records
//! every call and answers allow, deny, override, disconnect, or stalls.

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::e2e;
use crate::util::*;
use ringcast_engine::config::{Config, ConnectProxyMode, Driver, Proxy, SubscribePolicy};
use ringcast_engine::Engine;
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;

/// How the backend answers one call: after a delay, this body.
pub(crate) type Answer = Arc<dyn Fn(&Value) -> (Duration, Value) + Send + Sync>;

/// A keep-alive HTTP/1.1 backend on a thread per connection.
pub(crate) struct Backend {
    pub(crate) url: String,
    calls: Arc<Mutex<Vec<(String, Value)>>>,
    in_flight_max: Arc<AtomicUsize>,
}

impl Backend {
    pub(crate) fn start(
        answer: impl Fn(&Value) -> (Duration, Value) + Send + Sync + 'static,
    ) -> Backend {
        let answer: Answer = Arc::new(answer);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/proxy", listener.local_addr().unwrap());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let in_flight_max = Arc::new(AtomicUsize::new(0));
        let (c, f, m) = (calls.clone(), in_flight.clone(), in_flight_max.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (c, f, m, a) = (c.clone(), f.clone(), m.clone(), answer.clone());
                std::thread::spawn(move || serve(stream, &*a, &c, &f, &m));
            }
        });
        Backend {
            url,
            calls,
            in_flight_max,
        }
    }

    pub(crate) fn calls(&self) -> Vec<(String, Value)> {
        self.calls.lock().unwrap().clone()
    }
}

fn serve(
    stream: TcpStream,
    answer: &(dyn Fn(&Value) -> (Duration, Value) + Send + Sync),
    calls: &Mutex<Vec<(String, Value)>>,
    in_flight: &AtomicUsize,
    in_flight_max: &AtomicUsize,
) {
    stream.set_nodelay(true).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    while let Some(request) = read_backend_request(&mut reader) {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        in_flight_max.fetch_max(now, Ordering::SeqCst);
        calls
            .lock()
            .unwrap()
            .push((request.request_line, body.clone()));
        let (delay, reply) = answer(&body);
        std::thread::sleep(delay);
        in_flight.fetch_sub(1, Ordering::SeqCst);
        let reply = reply.to_string();
        // One write: a head and a body in two would meet Nagle and the
        // client's delayed ACK (40 ms a call).
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// Rpc answers: `echo` returns the call it got; `fail` denies.
fn rpc_backend(body: &Value) -> (Duration, Value) {
    match body["method"].as_str() {
        Some("echo") => (Duration::ZERO, json!({"result": {"data": {"got": body}}})),
        Some("bytes") => (Duration::ZERO, json!({"result": {"b64data": "AP8="}})),
        _ => (
            Duration::ZERO,
            json!({"error": {"code": 7, "message": "no such method"}}),
        ),
    }
}

/// By the data's `act` (or a `room:<act>` channel): allow, deny, rewrite,
/// kick, stall (5 s), slow (150 ms), garbage (not an answer).
fn by_act(body: &Value) -> (Duration, Value) {
    let from_channel = || body["channel"].as_str()?.strip_prefix("room:");
    let act = body["data"]["act"]
        .as_str()
        .or_else(from_channel)
        .unwrap_or("allow");
    let now = Duration::ZERO;
    match act {
        "deny" => (
            now,
            json!({"error": {"code": 1001, "message": "not on my watch"}}),
        ),
        "rewrite" => (now, json!({"result": {"data": {"rewritten": true}}})),
        "kick" => (
            now,
            json!({"disconnect": {"code": 4600, "reason": "banned"}}),
        ),
        "stall" => (Duration::from_secs(5), json!({"result": {}})),
        "slow" => (Duration::from_millis(150), json!({"result": {}})),
        "garbage" => (now, json!(["not", "an", "answer"])),
        _ => (now, json!({"result": {}})),
    }
}

/// Namespace `room` goes through proxy `p`; `free` (publish any) does not.
pub(crate) fn proxied_config(
    driver: Driver,
    shards: u16,
    url: &str,
    timeout_ms: u64,
    max: u32,
) -> Config {
    let mut config = config(driver, shards);
    config.proxies = vec![Proxy {
        name: "p".into(),
        url: url.into(),
        timeout: Duration::from_millis(timeout_ms),
        concurrency_max: max,
    }];
    let room = config
        .namespaces
        .iter_mut()
        .find(|ns| ns.name == "room")
        .unwrap();
    room.publish_proxy = "p".into();
    let mut free = room.clone();
    free.name = "free".into();
    free.publish_proxy = String::new();
    config.namespaces.push(free);
    config.websocket.send_proxy = "p".into();
    config
}

pub(crate) fn publish_cmd(id: u64, channel: &str, data: Value) -> Value {
    json!({"id": id, "method": "publish", "params": {"channel": channel, "data": data}})
}

e2e!(
    publish_proxy_allows_denies_rewrites_and_disconnects,
    |driver| {
        let backend = Backend::start(by_act);
        let engine = start(proxied_config(driver, 2, &backend.url, 2000, 8));
        let (mut alice, hello) = connect(&engine, "alice");
        let (mut bob, _) = connect(&engine, "bob");
        subscribe(&mut bob, 1, "room:1");

        let reply = command(
            &mut alice,
            publish_cmd(1, "room:1", json!({"act": "allow", "n": 1})),
        );
        assert!(reply["result"]["id"].as_str().is_some(), "{reply}");
        assert_eq!(read_json(&mut bob)["push"]["data"]["n"], 1);

        let reply = command(&mut alice, publish_cmd(2, "room:1", json!({"act": "deny"})));
        assert_eq!(reply["error"]["code"], 118, "{reply}");
        assert_eq!(reply["error"]["message"], "not on my watch");

        let reply = command(
            &mut alice,
            publish_cmd(3, "room:1", json!({"act": "rewrite"})),
        );
        assert!(reply["result"]["id"].as_str().is_some(), "{reply}");
        let push = read_json(&mut bob);
        assert_eq!(
            push["push"]["data"],
            json!({"rewritten": true}),
            "the backend's data"
        );
        assert_eq!(push["push"]["sender"], "alice");

        // The denied publication reached nobody: the next push is the rewrite
        // (checked above), and a ping's reply comes next.
        let reply = command(&mut bob, json!({"id": 7, "method": "ping"}));
        assert!(
            reply.get("result").is_some(),
            "nothing else queued: {reply}"
        );

        send_json(&mut alice, publish_cmd(4, "room:1", json!({"act": "kick"})));
        assert_eq!(read_close_code(&mut alice), Some(4600));

        let calls = backend.calls();
        assert_eq!(calls.len(), 4, "{calls:?}");
        let client = hello["connect"]["client"].as_str().unwrap();
        for (line, call) in &calls {
            assert_eq!(line, "POST /proxy HTTP/1.1");
            assert_eq!(call["user"], "alice");
            assert_eq!(call["client"], client);
            assert_eq!(call["channel"], "room:1");
        }
        assert_eq!(calls[0].1["data"], json!({"act": "allow", "n": 1}));
        engine.shutdown();
    }
);

e2e!(subscribe_proxy_allows_denies_and_disconnects, |driver| {
    let backend = Backend::start(by_act);
    let mut config = proxied_config(driver, 2, &backend.url, 2000, 8);
    for namespace in config.namespaces.iter_mut() {
        if namespace.name == "room" {
            namespace.subscribe_proxy = "p".into();
            namespace.history = true;
        }
    }
    let engine = start(config);
    let (mut alice, _) = connect(&engine, "alice");
    let (mut bob, _) = connect(&engine, "bob");
    let sub = |id: u64, channel: &str| json!({"id": id, "method": "subscribe", "params": {"channel": channel}});
    let reply = command(&mut alice, sub(1, "room:deny"));
    assert_eq!(reply["error"]["code"], 118, "{reply}");
    let reply = command(&mut alice, sub(2, "room:open"));
    assert_eq!(reply["result"]["channel"], "room:open", "{reply}");
    // Subscribed for real: a publication reaches alice.
    let reply = command(&mut bob, publish_cmd(2, "room:open", json!({"n": 5})));
    assert!(reply.get("result").is_some(), "{reply}");
    assert_eq!(read_json(&mut alice)["push"]["data"]["n"], 5);
    // History follows the backend's word: alice, whom it let subscribe,
    // reads it; bob, never asked about, may not.
    let history = |id: u64| json!({"id": id, "method": "history", "params": {"stream": "room:open", "limit": 10}});
    let reply = command(&mut alice, history(5));
    assert_eq!(
        reply["result"]["publications"][0]["data"]["n"], 5,
        "{reply}"
    );
    let reply = command(&mut bob, history(3));
    assert_eq!(reply["error"]["code"], 103, "{reply}");
    // Already subscribed: refused by Ringcast, the backend is not asked.
    let reply = command(&mut alice, sub(3, "room:open"));
    assert_eq!(reply["error"]["code"], 105, "{reply}");
    send_json(&mut alice, sub(4, "room:kick"));
    assert_eq!(read_close_code(&mut alice), Some(4600));
    let subscribes: Vec<_> = backend
        .calls()
        .into_iter()
        .filter(|(_, call)| call.get("data").is_none())
        .map(|(_, call)| call["channel"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(subscribes, ["room:deny", "room:open", "room:kick"]);
    engine.shutdown();
});

e2e!(send_proxy_checks_every_send, |driver| {
    let backend = Backend::start(by_act);
    let engine = start(proxied_config(driver, 2, &backend.url, 2000, 8));
    let (mut alice, _) = connect(&engine, "alice");
    let (mut bob, _) = connect(&engine, "bob");
    let send = |id: u64, data: Value| json!({"id": id, "method": "send", "params": {"user": "bob", "data": data}});
    let reply = command(&mut alice, send(1, json!({"act": "deny"})));
    assert_eq!(reply["error"]["code"], 118, "{reply}");
    let reply = command(&mut alice, send(2, json!({"act": "rewrite"})));
    assert!(reply["result"]["id"].as_str().is_some(), "{reply}");
    let push = read_json(&mut bob);
    assert_eq!(push["push"]["channel"], "user:bob");
    assert_eq!(push["push"]["data"], json!({"rewritten": true}));
    let calls = backend.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].1["to"], "bob");
    assert_eq!(calls[0].1["user"], "alice");
    assert!(calls[0].1.get("channel").is_none());
    engine.shutdown();
});

e2e!(
    stalled_backend_times_out_one_command_and_the_shard_serves_on,
    |driver| {
        let backend = Backend::start(by_act);
        // One shard: the stalled command and the others share it.
        let engine = start(proxied_config(driver, 1, &backend.url, 400, 8));
        let (mut alice, _) = connect(&engine, "alice");
        let (mut carol, _) = connect(&engine, "carol");
        let (mut dave, _) = connect(&engine, "dave");
        subscribe(&mut dave, 1, "free:1");
        send_json(
            &mut alice,
            publish_cmd(1, "room:1", json!({"act": "stall"})),
        );
        // Wait until the backend holds the call, then publish around it.
        assert!(wait_until(Duration::from_secs(5), || backend.calls().len() == 1));
        for n in 0..20 {
            let reply = command(&mut carol, publish_cmd(10 + n, "free:1", json!({"n": n})));
            assert!(reply["result"]["id"].as_str().is_some(), "{reply}");
            assert_eq!(read_json(&mut dave)["push"]["data"]["n"], n);
        }
        let reply = read_json(&mut alice);
        assert_eq!(reply["id"], 1);
        assert_eq!(reply["error"]["code"], 116, "proxy timeout: {reply}");
        // Alice's connection is still good.
        let reply = command(&mut alice, json!({"id": 2, "method": "ping"}));
        assert!(reply.get("result").is_some(), "{reply}");
        engine.shutdown();
    }
);

e2e!(backend_down_is_proxy_unavailable, |driver| {
    let url = format!("http://127.0.0.1:{}/proxy", free_port());
    let engine = start(proxied_config(driver, 1, &url, 1000, 8));
    let (mut alice, _) = connect(&engine, "alice");
    let reply = command(
        &mut alice,
        publish_cmd(1, "room:1", json!({"act": "allow"})),
    );
    assert_eq!(reply["error"]["code"], 117, "connection refused: {reply}");
    engine.shutdown();
});

e2e!(concurrency_max_bounds_calls_in_flight, |driver| {
    let backend = Backend::start(by_act);
    let engine = start(proxied_config(driver, 2, &backend.url, 5000, 1));
    let (mut alice, _) = connect(&engine, "alice");
    for id in 1..=4 {
        send_json(
            &mut alice,
            publish_cmd(id, "room:1", json!({"act": "slow"})),
        );
    }
    for _ in 1..=4 {
        let reply = read_json(&mut alice);
        assert!(reply["result"]["id"].as_str().is_some(), "{reply}");
    }
    assert_eq!(backend.calls().len(), 4);
    assert_eq!(backend.in_flight_max.load(Ordering::SeqCst), 1);
    engine.shutdown();
});

e2e!(rpc_goes_to_the_backend_and_returns_its_answer, |driver| {
    let backend = Backend::start(rpc_backend);
    let mut config = proxied_config(driver, 2, &backend.url, 2000, 8);
    config.websocket.rpc_proxy = "p".into();
    let engine = start(config);
    let (mut alice, hello) = connect(&engine, "alice");
    let reply = command(
        &mut alice,
        json!({"id": 1, "method": "rpc", "params": {"method": "echo", "data": {"q": [1, 2]}}}),
    );
    let got = &reply["result"]["data"]["got"];
    assert_eq!(got["method"], "echo", "{reply}");
    assert_eq!(got["user"], "alice");
    assert_eq!(got["client"], hello["connect"]["client"]);
    assert_eq!(got["data"], json!({"q": [1, 2]}));
    let reply = command(
        &mut alice,
        json!({"id": 2, "method": "rpc", "params": {"method": "bytes"}}),
    );
    assert_eq!(reply["result"]["b64data"], "AP8=", "{reply}");
    let reply = command(
        &mut alice,
        json!({"id": 3, "method": "rpc", "params": {"method": "nope", "data": null}}),
    );
    assert_eq!(reply["error"]["code"], 118, "{reply}");
    assert_eq!(reply["error"]["message"], "no such method");
    assert_eq!(backend.calls().len(), 3);
    engine.shutdown();
});

e2e!(rpc_without_a_proxy_is_method_not_found, |driver| {
    let engine = start(config(driver, 1));
    let (mut alice, _) = connect(&engine, "alice");
    let reply = command(
        &mut alice,
        json!({"id": 1, "method": "rpc", "params": {"method": "echo"}}),
    );
    assert_eq!(reply["error"]["code"], 104, "{reply}");
    engine.shutdown();
});

#[test]
fn rpc_in_the_binary_protocol() {
    use ringcast_protocol::client::{
        decode_server_binary, encode_binary_command, BinaryCommand, BinaryCommandBody, ReplyResult,
        ServerMessage, SUBPROTOCOL_BINARY,
    };
    let backend = Backend::start(rpc_backend);
    let mut config = proxied_config(Driver::Epoll, 1, &backend.url, 2000, 8);
    config.websocket.rpc_proxy = "p".into();
    let engine = start(config);
    let (mut ws, _) = connect_with(&engine, &token("alice"), Some(SUBPROTOCOL_BINARY));
    let command = BinaryCommand {
        id: 5,
        body: BinaryCommandBody::Rpc {
            method: "bytes".into(),
            data: vec![1, 2, 3],
            data_is_json: false,
        },
    };
    ws.send(tungstenite::Message::Binary(encode_binary_command(
        &command,
    )))
    .unwrap();
    let reply = match ws.read().unwrap() {
        tungstenite::Message::Binary(bytes) => decode_server_binary(&bytes).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        reply,
        ServerMessage::Reply {
            id: 5,
            result: ReplyResult::Rpc {
                data: vec![0, 255],
                data_is_json: false
            }
        }
    );
    let calls = backend.calls();
    assert_eq!(calls[0].1["b64data"], "AQID", "binary data goes as base64");
    engine.shutdown();
}

/// Not a test: client publish round trips with the publish proxy on
/// (`room:`, a trivial backend that allows everything) and off (`free:`),
/// interleaved on one engine, one connection. Prints p50/p99 per side:
/// `cargo test --release -p ringcast-engine --test it proxy_overhead -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, not a check; run by hand"]
fn proxy_overhead() {
    const ROUNDS: usize = 5000;
    let backend = Backend::start(|_| (Duration::ZERO, json!({"result": {}})));
    let engine = start(proxied_config(Driver::IoUring, 2, &backend.url, 2000, 64));
    let (mut alice, _) = connect(&engine, "alice");
    let mut on = Vec::with_capacity(ROUNDS);
    let mut off = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS as u64 {
        for (channel, sink) in [("room:1", &mut on), ("free:1", &mut off)] {
            let started = std::time::Instant::now();
            let reply = command(
                &mut alice,
                publish_cmd(round + 1, channel, json!({"n": round})),
            );
            sink.push(started.elapsed());
            assert!(reply.get("result").is_some(), "{reply}");
        }
    }
    let pct = |samples: &mut Vec<Duration>, p: f64| {
        samples.sort();
        samples[((samples.len() as f64 - 1.0) * p) as usize]
    };
    let (on50, on99) = (pct(&mut on, 0.50), pct(&mut on, 0.99));
    let (off50, off99) = (pct(&mut off, 0.50), pct(&mut off, 0.99));
    println!(
        "publish round trip over {ROUNDS} each: proxy on p50 {on50:?} p99 {on99:?}; \
         off p50 {off50:?} p99 {off99:?}; ratio p50 {:.2} p99 {:.2}; backend calls {}",
        on50.as_secs_f64() / off50.as_secs_f64(),
        on99.as_secs_f64() / off99.as_secs_f64(),
        backend.calls().len()
    );
    engine.shutdown();
}

// The connect and refresh proxies.

/// Connect answers by the `sid` cookie (or, with none, allow as the token's
/// user); refresh answers by the user (`by_refresh`), each backend counting
/// its own calls.
fn by_session() -> impl Fn(&Value) -> (Duration, Value) + Send + Sync + 'static {
    let refreshes = AtomicUsize::new(0);
    move |body| {
        if body.get("transport").is_none() {
            by_refresh(body, &refreshes)
        } else {
            by_cookie(body)
        }
    }
}

/// Refresh answers: `rita` is extended once, then denied; `ruth` is denied
/// after 1 s; `rex` is extended by one second (still within any margin);
/// `rick` is disconnected with the backend's reason.
fn by_refresh(body: &Value, refreshes: &AtomicUsize) -> (Duration, Value) {
    let now = Duration::ZERO;
    let deny = json!({"error": {"code": 1, "message": "session over"}});
    match body["user"].as_str() {
        Some("ruth") => (Duration::from_secs(1), deny),
        Some("rex") => (
            now,
            json!({"result": {"expire_at": body["expire_at"].as_u64().unwrap() + 1}}),
        ),
        Some("rick") => (
            now,
            json!({"disconnect": {"code": 4600, "reason": "banned at refresh"}}),
        ),
        _ if refreshes.fetch_add(1, Ordering::SeqCst) == 0 => {
            (now, json!({"result": {"expire_at": now_s() + 8}}))
        }
        _ => (now, deny),
    }
}

/// Connect answers by the `sid` cookie.
fn by_cookie(body: &Value) -> (Duration, Value) {
    let now = Duration::ZERO;
    match body["cookies"]["sid"].as_str() {
        None => (now, json!({"result": {}})),
        Some("s-alice") => (now, json!({"result": {"user": "alice"}})),
        Some("s-bob") => (now, json!({"result": {"user": "bob"}})),
        Some("s-sam") => (
            now,
            json!({"result": {"user": "sam", "subs": ["news:1"], "channels": ["chat:g*"],
                "info": {"name": "Sam"}}}),
        ),
        Some("s-rita") => (
            now,
            json!({"result": {"user": "rita", "expire_at": now_s() + 3}}),
        ),
        Some("s-deny") => (
            now,
            json!({"error": {"code": 403, "message": "session expired: log in again"}}),
        ),
        Some("s-kick") => (
            now,
            json!({"disconnect": {"code": 4567, "reason": "banned"}}),
        ),
        Some("s-stall") => (Duration::from_secs(5), json!({"result": {"user": "late"}})),
        Some("s-slow") => (
            Duration::from_millis(300),
            json!({"result": {"user": "slow"}}),
        ),
        Some("s-past") => (
            now,
            json!({"result": {"user": "past", "expire_at": now_s() - 10}}),
        ),
        Some(sid @ ("s-ruth" | "s-rick")) => (
            now,
            json!({"result": {"user": &sid[2..], "expire_at": now_s() + 3}}),
        ),
        Some("s-rex") => (
            now,
            json!({"result": {"user": "rex", "expire_at": now_s() + 30}}),
        ),
        Some("s-nouser") => (now, json!({"result": {}})),
        Some(_) => (
            now,
            json!({"error": {"code": 401, "message": "unknown session"}}),
        ),
    }
}

/// One shard (unless told), the connect proxy `p` in `mode`, `chat:`
/// subscribable by grant only.
fn connect_config(driver: Driver, url: &str, mode: ConnectProxyMode, timeout_ms: u64) -> Config {
    let mut config = proxied_config(driver, 1, url, timeout_ms, 8);
    config.websocket.connect_proxy = "p".into();
    config.websocket.connect_proxy_mode = mode;
    config.websocket.send_proxy = String::new();
    for namespace in config.namespaces.iter_mut() {
        if namespace.name == "chat" {
            namespace.subscribe = SubscribePolicy::Token;
        }
    }
    config
}

/// Upgrades with a `Cookie` header (and `?token=` when given); the socket
/// after the 101, whatever follows it.
fn upgrade_with_cookie(engine: &Engine, cookie: &str, token: Option<&str>) -> Ws {
    let url = match token {
        Some(token) => format!(
            "ws://{}/connection/websocket?token={token}&app=web",
            engine.ws_addr
        ),
        None => format!("ws://{}/connection/websocket?app=web", engine.ws_addr),
    };
    let mut request = url.into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("Cookie", cookie.parse().unwrap());
    headers.insert("User-Agent", "connect-test/1".parse().unwrap());
    headers.insert("X-Secret", "not forwarded".parse().unwrap());
    let stream = TcpStream::connect(engine.ws_addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (ws, response) = tungstenite::client(request, stream).expect("upgrade");
    assert_eq!(response.status(), 101);
    ws
}

/// The `connect` message of a socket `upgrade_with_cookie` opened.
fn connected(ws: &mut Ws) -> Value {
    let hello = read_json(ws);
    assert!(hello.get("connect").is_some(), "first message: {hello}");
    hello
}

/// Reads until the server's close frame: its code and reason.
fn read_close(ws: &mut Ws) -> (u16, String) {
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(Some(frame))) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            Ok(tungstenite::Message::Close(None)) => panic!("a close without a code"),
            Ok(_) => continue,
            Err(err) => panic!("no close frame: {err:?}"),
        }
    }
}

/// An upgrade with `cookie` on its own thread, which answers the close
/// code and reason that follow the 101.
fn upgrade_in_background(
    ws_addr: std::net::SocketAddr,
    cookie: &'static str,
) -> std::thread::JoinHandle<(u16, String)> {
    std::thread::spawn(move || {
        let url = format!("ws://{ws_addr}/connection/websocket");
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Cookie", cookie.parse().unwrap());
        let stream = TcpStream::connect(ws_addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (mut ws, _) = tungstenite::client(request, stream).expect("upgrade");
        read_close(&mut ws)
    })
}

fn connect_calls(backend: &Backend) -> Vec<Value> {
    backend
        .calls()
        .into_iter()
        .map(|(_, call)| call)
        .filter(|call| call.get("transport").is_some())
        .collect()
}

e2e!(
    connect_proxy_replaces_the_token_with_a_cookie_session,
    |driver| {
        let backend = Backend::start(by_session());
        let config = connect_config(driver, &backend.url, ConnectProxyMode::ReplaceToken, 2000);
        let engine = start(config);
        let mut alice = upgrade_with_cookie(&engine, "sid=s-alice; theme=dark", None);
        let hello = connected(&mut alice);
        assert_eq!(
            hello["connect"]["user"], "alice",
            "the backend named the user"
        );
        // A send to the user the backend named reaches this connection.
        let (status, body) = api(
            &engine,
            "POST",
            "/api/send",
            Some(json!({"user": "alice", "data": {"hi": 1}})),
        );
        assert_eq!(status, 200, "{body}");
        let push = read_json(&mut alice);
        assert_eq!(push["push"]["channel"], "user:alice", "{push}");
        assert_eq!(push["push"]["data"], json!({"hi": 1}));

        let calls = connect_calls(&backend);
        assert_eq!(calls.len(), 1, "{calls:?}");
        let call = &calls[0];
        assert_eq!(call["user"], "", "no token, no user yet");
        assert_eq!(call["client"], hello["connect"]["client"]);
        assert_eq!(call["transport"], "websocket");
        assert_eq!(call["path"], "/connection/websocket");
        assert_eq!(call["query"], json!({"app": "web"}));
        assert_eq!(call["remote_addr"], "127.0.0.1");
        assert_eq!(call["cookies"], json!({"sid": "s-alice", "theme": "dark"}));
        assert_eq!(call["headers"]["cookie"], "sid=s-alice; theme=dark");
        assert_eq!(call["headers"]["user-agent"], "connect-test/1");
        assert!(
            call["headers"].get("x-secret").is_none(),
            "not a forwarded header: {call}"
        );

        // No user named and no anonymous connections: refused as a bad answer.
        let mut nobody = upgrade_with_cookie(&engine, "sid=s-nouser", None);
        let (code, reason) = read_close(&mut nobody);
        assert_eq!(
            (code, reason.as_str()),
            (1013, "connect proxy: bad response")
        );
        engine.shutdown();
    }
);

e2e!(connect_proxy_after_token_gets_the_token_user, |driver| {
    let backend = Backend::start(by_session());
    let config = connect_config(driver, &backend.url, ConnectProxyMode::AfterToken, 2000);
    let engine = start(config);
    // A bad token is refused before the backend is asked.
    let bad = format!("ws://{}/connection/websocket?token=nope", engine.ws_addr);
    let refused = tungstenite::connect(bad.as_str());
    assert!(
        matches!(refused, Err(tungstenite::Error::Http(ref r)) if r.status() == 401),
        "{refused:?}"
    );
    let mut carol = upgrade_with_cookie(&engine, "lang=en", Some(&token("carol")));
    let hello = connected(&mut carol);
    assert_eq!(hello["connect"]["user"], "carol");
    let calls = connect_calls(&backend);
    assert_eq!(calls.len(), 1, "only the good token reached the backend");
    assert_eq!(calls[0]["user"], "carol");
    assert_eq!(
        calls[0]["query"],
        json!({"app": "web"}),
        "the token is not forwarded"
    );
    // The backend may also rename the token's user.
    let mut renamed = upgrade_with_cookie(&engine, "sid=s-bob", Some(&token("carol")));
    assert_eq!(connected(&mut renamed)["connect"]["user"], "bob");
    engine.shutdown();
});

e2e!(
    connect_proxy_subs_channels_and_info_apply_at_connect,
    |driver| {
        let backend = Backend::start(by_session());
        let config = connect_config(driver, &backend.url, ConnectProxyMode::ReplaceToken, 2000);
        let engine = start(config);
        let mut sam = upgrade_with_cookie(&engine, "sid=s-sam", None);
        assert_eq!(connected(&mut sam)["connect"]["user"], "sam");
        assert_eq!(
            read_json(&mut sam),
            json!({"subscribed": {"channel": "news:1"}})
        );
        publish(&engine, "news:1", json!({"n": 1}));
        assert_eq!(read_json(&mut sam)["push"]["data"]["n"], 1);
        // The grant lets sam into chat:g1 (token-only) but not chat:h1.
        subscribe(&mut sam, 2, "chat:g1");
        let reply = command(
            &mut sam,
            json!({"id": 3, "method": "subscribe", "params": {"channel": "chat:h1"}}),
        );
        assert!(
            reply.get("error").is_some(),
            "no grant for chat:h1: {reply}"
        );
        let (status, body) = api(&engine, "GET", "/api/presence?channel=news%3A1", None);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["clients"][0]["user"], "sam", "{body}");
        assert_eq!(body["clients"][0]["info"], json!({"name": "Sam"}), "{body}");
        engine.shutdown();
    }
);

e2e!(connect_proxy_denials_are_readable_close_codes, |driver| {
    let backend = Backend::start(by_session());
    let config = connect_config(driver, &backend.url, ConnectProxyMode::ReplaceToken, 2000);
    let engine = start(config);
    let mut denied = upgrade_with_cookie(&engine, "sid=s-deny", None);
    assert_eq!(
        read_close(&mut denied),
        (4403, "session expired: log in again".to_owned())
    );
    let mut kicked = upgrade_with_cookie(&engine, "sid=s-kick", None);
    assert_eq!(read_close(&mut kicked), (4567, "banned".to_owned()));
    // Neither was ever a connection.
    let (status, stats) = api(&engine, "GET", "/api/stats", None);
    assert_eq!(status, 200);
    assert_eq!(stats["connections"], 0, "{stats}");
    let (_, metrics) = api_raw(engine.api_addr, "GET", "/metrics", None, None);
    let metrics = metrics.as_str().unwrap().to_owned();
    for line in [
        "ringcast_proxy_calls_total{shard=\"0\",event=\"connect\"} 2",
        "ringcast_proxy_denied_total{shard=\"0\",event=\"connect\"} 1",
        "ringcast_proxy_disconnects_total{shard=\"0\",event=\"connect\"} 1",
        "ringcast_proxy_latency_seconds_count{shard=\"0\",event=\"connect\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    engine.shutdown();
});

e2e!(
    stalled_connect_proxy_fails_one_upgrade_and_the_shard_serves_on,
    |driver| {
        let backend = Backend::start(by_session());
        // One shard: the waiting upgrade and the others share it.
        let config = connect_config(driver, &backend.url, ConnectProxyMode::ReplaceToken, 500);
        let engine = start(config);
        let mut alice = upgrade_with_cookie(&engine, "sid=s-alice", None);
        connected(&mut alice);
        let mut bob = upgrade_with_cookie(&engine, "sid=s-bob", None);
        connected(&mut bob);
        subscribe(&mut bob, 1, "free:1");
        let ws_addr = engine.ws_addr;
        let stalled = upgrade_in_background(ws_addr, "sid=s-stall");
        assert!(wait_until(Duration::from_secs(5), || {
            connect_calls(&backend)
                .iter()
                .any(|call| call["cookies"]["sid"] == "s-stall")
        }));
        // While the backend holds the call, the shard serves the others.
        for n in 0..20 {
            let reply = command(&mut alice, publish_cmd(10 + n, "free:1", json!({"n": n})));
            assert!(reply["result"]["id"].as_str().is_some(), "{reply}");
            assert_eq!(read_json(&mut bob)["push"]["data"]["n"], n);
        }
        assert_eq!(
            stalled.join().unwrap(),
            (1013, "connect proxy: timeout".to_owned())
        );
        let reply = command(&mut alice, json!({"id": 99, "method": "ping"}));
        assert!(reply.get("result").is_some(), "{reply}");
        engine.shutdown();
    }
);

e2e!(connect_proxy_down_is_try_again_later, |driver| {
    let url = format!("http://127.0.0.1:{}/proxy", free_port());
    let engine = start(connect_config(
        driver,
        &url,
        ConnectProxyMode::ReplaceToken,
        1000,
    ));
    let mut ws = upgrade_with_cookie(&engine, "sid=s-alice", None);
    assert_eq!(
        read_close(&mut ws),
        (1013, "connect proxy: unavailable".to_owned())
    );
    engine.shutdown();
});

#[test]
fn refresh_proxy_extends_then_its_denial_closes_with_4001() {
    let backend = Backend::start(by_session());
    let mut config = connect_config(
        Driver::Epoll,
        &backend.url,
        ConnectProxyMode::ReplaceToken,
        2000,
    );
    config.websocket.refresh_proxy = "p".into();
    config.websocket.refresh_proxy_margin = Duration::from_millis(2000);
    let engine = start(config);
    let connected_at = now_s();
    let mut rita = upgrade_with_cookie(&engine, "sid=s-rita", None);
    let hello = connected(&mut rita);
    let expires_at_ms = hello["connect"]["expires"].as_u64().unwrap();
    assert!(expires_at_ms / 1000 <= connected_at + 4, "{hello}");
    let refreshes = |backend: &Backend| backend.calls().len() - connect_calls(backend).len();
    assert!(wait_until(Duration::from_secs(5), || refreshes(&backend) >= 1));
    // Past the first expiry, the connection lives on: it was extended.
    while now_s() * 1000 < expires_at_ms + 1000 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let reply = command(&mut rita, json!({"id": 1, "method": "ping"}));
    assert!(reply.get("result").is_some(), "{reply}");
    // The second refresh is denied: 4001.
    assert_eq!(read_close(&mut rita), (4001, "refresh denied".to_owned()));
    let calls = backend.calls();
    let refresh = calls
        .iter()
        .map(|(_, call)| call)
        .find(|call| call.get("transport").is_none())
        .unwrap();
    assert_eq!(refresh["user"], "rita");
    assert_eq!(refresh["client"], hello["connect"]["client"]);
    assert_eq!(refreshes(&backend), 2);
    engine.shutdown();
}

/// An epoll engine with the connect proxy `p` in `mode` and, given a
/// margin, `p` as the refresh proxy asked that long before expiry.
fn proxy_engine(backend: &Backend, mode: ConnectProxyMode, margin_ms: Option<u64>) -> TestEngine {
    let mut config = connect_config(Driver::Epoll, &backend.url, mode, 2000);
    if let Some(margin_ms) = margin_ms {
        config.websocket.refresh_proxy = "p".into();
        config.websocket.refresh_proxy_margin = Duration::from_millis(margin_ms);
    }
    start(config)
}

fn refresh_engine(backend: &Backend, margin_ms: u64) -> TestEngine {
    proxy_engine(backend, ConnectProxyMode::ReplaceToken, Some(margin_ms))
}

fn refresh_calls(backend: &Backend) -> Vec<Value> {
    backend
        .calls()
        .into_iter()
        .map(|(_, call)| call)
        .filter(|call| call.get("transport").is_none())
        .collect()
}

#[test]
fn a_refresh_answer_that_leaves_the_connection_within_the_margin_is_not_asked_again_at_once() {
    let backend = Backend::start(by_session());
    // Everything is within a minute's margin: rex (30 s left) is asked at
    // once, and each answer adds only a second.
    let engine = refresh_engine(&backend, 60_000);
    let mut rex = upgrade_with_cookie(&engine, "sid=s-rex", None);
    let hello = connected(&mut rex);
    assert!(wait_until(Duration::from_secs(5), || {
        !refresh_calls(&backend).is_empty()
    }));
    // Sweeps pass about once a second: without a backoff each asked again.
    std::thread::sleep(Duration::from_secs(3));
    let calls = refresh_calls(&backend);
    assert_eq!(calls.len(), 1, "asked again within 3 s: {calls:?}");
    assert_eq!(calls[0]["client"], hello["connect"]["client"]);
    let reply = command(&mut rex, json!({"id": 1, "method": "ping"}));
    assert!(reply.get("result").is_some(), "{reply}");
    engine.shutdown();
}

#[test]
fn a_client_refresh_while_the_refresh_proxy_is_asked_is_not_undone_by_its_answer() {
    let backend = Backend::start(by_session());
    let engine = refresh_engine(&backend, 2000);
    let mut ruth = upgrade_with_cookie(&engine, "sid=s-ruth", None);
    connected(&mut ruth);
    // The backend holds ruth's refresh call for a second, then denies it.
    assert!(wait_until(Duration::from_secs(5), || {
        !refresh_calls(&backend).is_empty()
    }));
    let reply = command(
        &mut ruth,
        json!({"id": 1, "method": "refresh", "params": {"token": token("ruth")}}),
    );
    assert!(reply.get("result").is_some(), "{reply}");
    // Past the denial's arrival and the old expiry, ruth is still open.
    std::thread::sleep(Duration::from_secs(4));
    let reply = command(&mut ruth, json!({"id": 2, "method": "ping"}));
    assert!(reply.get("result").is_some(), "{reply}");
    assert_eq!(refresh_calls(&backend).len(), 1);
    engine.shutdown();
}

#[test]
fn a_refresh_disconnect_closes_with_the_backends_code_and_reason() {
    let backend = Backend::start(by_session());
    let engine = refresh_engine(&backend, 2000);
    let mut rick = upgrade_with_cookie(&engine, "sid=s-rick", None);
    connected(&mut rick);
    assert_eq!(
        read_close(&mut rick),
        (4600, "banned at refresh".to_owned())
    );
    engine.shutdown();
}

#[test]
fn a_renamed_user_refreshes_with_its_original_tokens() {
    let backend = Backend::start(by_session());
    let engine = proxy_engine(&backend, ConnectProxyMode::AfterToken, None);
    let mut renamed = upgrade_with_cookie(&engine, "sid=s-bob", Some(&token("carol")));
    assert_eq!(connected(&mut renamed)["connect"]["user"], "bob");
    let reply = command(
        &mut renamed,
        json!({"id": 1, "method": "refresh", "params": {"token": token("carol")}}),
    );
    assert!(reply["result"].is_object(), "{reply}");
    // Anyone else's token is still refused.
    let reply = command(
        &mut renamed,
        json!({"id": 2, "method": "refresh", "params": {"token": token("dave")}}),
    );
    assert_eq!(
        reply["error"]["message"], "token is for another user",
        "{reply}"
    );
    engine.shutdown();
}

/// The value of the metric line starting with `name` (labels included).
fn metric(engine: &TestEngine, name: &str) -> Option<u64> {
    let (_, metrics) = api_raw(engine.api_addr, "GET", "/metrics", None, None);
    let metrics = metrics.as_str().unwrap().to_owned();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
}

#[test]
fn a_client_gone_while_awaiting_admission_is_never_opened() {
    let backend = Backend::start(by_session());
    let engine = proxy_engine(&backend, ConnectProxyMode::ReplaceToken, None);
    // An upgrade whose answer takes 300 ms; the client hangs up first.
    let mut raw = TcpStream::connect(engine.ws_addr).unwrap();
    write!(
        raw,
        "GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nCookie: sid=s-slow\r\n\r\n"
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        !connect_calls(&backend).is_empty()
    }));
    drop(raw);
    // The answer came back (counted) ...
    let answered = "ringcast_proxy_latency_seconds_count{shard=\"0\",event=\"connect\"}";
    assert!(wait_until(Duration::from_secs(5), || {
        metric(&engine, answered) == Some(1)
    }));
    // ... and found no connection to open.
    let accepted = metric(&engine, "ringcast_connections_accepted_total{shard=\"0\"}");
    assert_eq!(accepted, Some(0));
    engine.shutdown();
}

#[test]
fn a_connect_expiry_already_past_is_refused_before_the_connection_opens() {
    let backend = Backend::start(by_session());
    let engine = proxy_engine(&backend, ConnectProxyMode::ReplaceToken, None);
    let mut past = upgrade_with_cookie(&engine, "sid=s-past", None);
    // The first frame after the 101 is the close: no `connect` message.
    match past.read() {
        Ok(tungstenite::Message::Close(Some(frame))) => {
            assert_eq!(
                (u16::from(frame.code), frame.reason.as_ref()),
                (4001, "token expired")
            );
        }
        other => panic!("expected the close first: {other:?}"),
    }
    let accepted = metric(&engine, "ringcast_connections_accepted_total{shard=\"0\"}");
    assert_eq!(accepted, Some(0));
    engine.shutdown();
}

e2e!(
    connections_awaiting_admission_hold_their_handshake_slot,
    |driver| {
        let backend = Backend::start(by_session());
        let mut config = connect_config(driver, &backend.url, ConnectProxyMode::ReplaceToken, 1500);
        config.websocket.handshakes_per_source_max = 1;
        let engine = start(config);
        let ws_addr = engine.ws_addr;
        let stalled = upgrade_in_background(ws_addr, "sid=s-stall");
        assert!(wait_until(Duration::from_secs(5), || {
            !connect_calls(&backend).is_empty()
        }));
        // The source's one upgrade slot is held by the waiting connection: a
        // second is closed at accept, before any request is read.
        let url = format!("ws://{ws_addr}/connection/websocket");
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Cookie", "sid=s-alice".parse().unwrap());
        let stream = TcpStream::connect(ws_addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert!(tungstenite::client(request, stream).is_err());
        assert_eq!(
            connect_calls(&backend).len(),
            1,
            "the second never reached the backend"
        );
        assert_eq!(
            stalled.join().unwrap(),
            (1013, "connect proxy: timeout".to_owned())
        );
        // Its slot is free again.
        let mut alice = upgrade_with_cookie(&engine, "sid=s-alice", None);
        assert_eq!(connected(&mut alice)["connect"]["user"], "alice");
        engine.shutdown();
    }
);

/// Not a test: sequential connects (upgrade to the `connect` message, then
/// close) to two engines alive at once, one with a connect proxy in
/// `after_token` mode (a trivial local backend that allows everything) and
/// one without, alternating. Prints connects/s and latency p50/p99 per side:
/// `cargo test --release -p ringcast-engine --test it connect_proxy_overhead -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, not a check; run by hand"]
fn connect_proxy_overhead() {
    const ROUNDS: usize = 3000;
    let backend = Backend::start(|_| (Duration::ZERO, json!({"result": {}})));
    let mut with = connect_config(
        Driver::IoUring,
        &backend.url,
        ConnectProxyMode::AfterToken,
        2000,
    );
    with.server.shards = ringcast_engine::config::ShardCount::new(2).unwrap();
    let mut without = config(Driver::IoUring, 2);
    without.websocket.connections_max_per_shard = 2_000;
    let (on_engine, off_engine) = (start(with), start(without));
    let token = token("alice");
    let mut on = Vec::with_capacity(ROUNDS);
    let mut off = Vec::with_capacity(ROUNDS);
    let mut on_total = Duration::ZERO;
    let mut off_total = Duration::ZERO;
    for _ in 0..ROUNDS {
        for (engine, sink, total) in [
            (&on_engine, &mut on, &mut on_total),
            (&off_engine, &mut off, &mut off_total),
        ] {
            let started = std::time::Instant::now();
            let (ws, hello) = connect_with(engine, &token, None);
            let took = started.elapsed();
            assert_eq!(hello["connect"]["user"], "alice");
            drop(ws);
            sink.push(took);
            *total += took;
        }
    }
    let pct = |samples: &mut Vec<Duration>, p: f64| {
        samples.sort();
        samples[((samples.len() as f64 - 1.0) * p) as usize]
    };
    let rate = |total: Duration| ROUNDS as f64 / total.as_secs_f64();
    let (on50, on99) = (pct(&mut on, 0.50), pct(&mut on, 0.99));
    let (off50, off99) = (pct(&mut off, 0.50), pct(&mut off, 0.99));
    println!(
        "sequential connects over {ROUNDS} each: connect proxy on {:.0}/s p50 {on50:?} p99 {on99:?}; \
         off {:.0}/s p50 {off50:?} p99 {off99:?}; backend calls {}",
        rate(on_total),
        rate(off_total),
        backend.calls().len()
    );
    on_engine.shutdown();
    off_engine.shutdown();
}
