//! The HTTP upgrade: limits, paths, subprotocols, slow handshakes.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::e2e;
use crate::util::*;

fn send_raw(engine: &ringcast_engine::Engine, request: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(engine.ws_addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).to_string()
}

fn upgrade(path: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path}?token={} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n",
        token("h")
    )
    .into_bytes()
}

e2e!(upgrade_refusals_have_status_and_json, |driver| {
    let engine = start(config(driver, 2));
    let response = send_raw(&engine, &upgrade("/elsewhere", ""));
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(response.contains("\"error\""));

    let response = send_raw(
        &engine,
        &upgrade("/connection/websocket", "Sec-WebSocket-Protocol: mqtt\r\n"),
    );
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("unsupported_subprotocol"));

    let response = send_raw(
        &engine,
        &upgrade(
            "/connection/websocket",
            &format!("X-Big: {}\r\n", "a".repeat(2000)),
        ),
    );
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");

    let response = send_raw(
        &engine,
        b"POST /connection/websocket HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 4"), "{response}");

    let response = send_raw(
        &engine,
        &upgrade(
            "/connection/websocket",
            "Sec-WebSocket-Protocol: ringcast.json.v1\r\n",
        ),
    );
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    assert!(response
        .to_ascii_lowercase()
        .contains("sec-websocket-protocol: ringcast.json.v1"));
    engine.shutdown();
});

e2e!(slow_handshake_is_cut_off, |driver| {
    let engine = start(config(driver, 2)); // handshake_timeout = 1 s
    let mut stream = std::net::TcpStream::connect(engine.ws_addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /connection/websocket HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    let started = Instant::now();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(started.elapsed() < Duration::from_secs(4));
    engine.shutdown();
});

e2e!(frames_sent_right_behind_the_upgrade_are_handled, |driver| {
    let engine = start(config(driver, 2));
    let mut raw_request = upgrade("/connection/websocket", "");
    // A masked ping in the same write as the upgrade request.
    raw_request.extend_from_slice(&[0x89, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
    let mut raw = Raw {
        stream: std::net::TcpStream::connect(engine.ws_addr).unwrap(),
        buf: Vec::new(),
    };
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    raw.stream.write_all(&raw_request).unwrap();
    assert!(raw.read_http_head().starts_with("HTTP/1.1 101"));
    let mut saw_pong = false;
    for _ in 0..2 {
        if let Some((0xA, payload)) = raw.read_frame() {
            assert_eq!(payload, b"hi");
            saw_pong = true;
        }
    }
    assert!(saw_pong);
    engine.shutdown();
});

/// An upgrade by tungstenite with `origin`; Ok(connect message) or the
/// HTTP status it was refused with.
fn upgrade_with_origin(
    engine: &ringcast_engine::Engine,
    origin: &str,
) -> Result<serde_json::Value, u16> {
    use tungstenite::client::IntoClientRequest;
    let mut request = ws_url(engine, &token("alice"))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Origin", origin.parse().unwrap());
    let stream = std::net::TcpStream::connect(engine.ws_addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    match tungstenite::client(request, stream) {
        Ok((mut ws, _)) => Ok(read_json(&mut ws)),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("upgrade failed otherwise: {other}"),
    }
}

// Origins are compared ignoring ASCII case (scheme and host are
// case-insensitive, RFC 6454), as docs/config.md says.
e2e!(allowed_origins_ignore_ascii_case, |driver| {
    let mut config = config(driver, 1);
    config.websocket.allowed_origins = vec!["http://127.0.0.1:9403".to_owned()];
    let engine = start(config);
    for origin in ["http://127.0.0.1:9403", "HTTP://127.0.0.1:9403"] {
        let connect = upgrade_with_origin(&engine, origin).expect(origin);
        assert_eq!(connect["connect"]["user"], "alice", "{origin}");
    }
    for origin in ["http://127.0.0.1:9404", "https://127.0.0.1:9403", "null"] {
        assert_eq!(upgrade_with_origin(&engine, origin), Err(403), "{origin}");
    }
    engine.shutdown();
});

// One source cannot hold more than websocket.handshakes_per_source_max
// connections in their upgrade; other sources still get in, and the source
// gets its slots back as its upgrades end.
e2e!(upgrading_connections_are_capped_per_source, |driver| {
    use std::net::{SocketAddr, TcpStream};
    let mut config = config(driver, 1);
    config.websocket.handshakes_per_source_max = 20;
    config.websocket.handshake_timeout = Duration::from_secs(30);
    let engine = start(config);
    let flood: Vec<TcpStream> = (0..30)
        .map(|_| TcpStream::connect(engine.ws_addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (held, closed) = held_and_closed(&flood);
    assert_eq!((held, closed), (20, 10));
    // Another source address upgrades meanwhile.
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other
        .bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    other.connect(&engine.ws_addr.into()).unwrap();
    let other: TcpStream = other.into();
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (mut ws, _) =
        tungstenite::client(ws_url(&engine, &token("other")), other).expect("upgrade");
    assert_eq!(read_json(&mut ws)["connect"]["user"], "other");
    // The flood ends: its source upgrades again.
    drop(flood);
    assert!(wait_until(Duration::from_secs(5), || {
        let stream = TcpStream::connect(engine.ws_addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        tungstenite::client(ws_url(&engine, &token("again")), stream).is_ok()
    }));
    engine.shutdown();
});
