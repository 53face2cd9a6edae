//! Tokens at the upgrade and during the connection's life.

use std::time::Duration;

use crate::e2e;
use crate::util::*;

/// Sends an upgrade with `token` and returns (status, JSON body).
fn upgrade_status(
    engine: &ringcast_engine::Engine,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(engine.ws_addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let query = token.map(|t| format!("?token={t}")).unwrap_or_default();
    write!(
        stream,
        "GET /connection/websocket{query} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

e2e!(good_token_connects_as_its_user, |driver| {
    let engine = start(config(driver, 2));
    let (_ws, connect) = connect(&engine, "alice");
    assert_eq!(connect["connect"]["user"], "alice");
    engine.shutdown();
});

e2e!(
    bad_expired_missing_tokens_get_401_with_json_reason,
    |driver| {
        let engine = start(config(driver, 2));
        let (status, body) = upgrade_status(&engine, None);
        assert_eq!(status, 401);
        assert_eq!(body["error"]["code"], "token_missing");

        let (status, body) = upgrade_status(&engine, Some(&token_for("alice", now_s() - 10)));
        assert_eq!(status, 401);
        assert_eq!(body["error"]["code"], "token_expired");

        let forged = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"sub": "alice", "exp": now_s() + 60}),
            &jsonwebtoken::EncodingKey::from_secret(b"some-other-secret-some-other-secret"),
        )
        .unwrap();
        let (status, body) = upgrade_status(&engine, Some(&forged));
        assert_eq!(status, 401);
        assert_eq!(body["error"]["code"], "token_invalid");

        let (status, _) = upgrade_status(&engine, Some("garbage"));
        assert_eq!(status, 401);
        let (_, stats) = api(&engine, "GET", "/api/stats", None);
        let failures: u64 = stats["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["auth_failures_total"].as_u64().unwrap())
            .sum();
        assert_eq!(failures, 4);
        engine.shutdown();
    }
);

e2e!(
    connection_closes_when_token_expires_unless_refreshed,
    |driver| {
        let engine = start(config(driver, 2));
        let exp = now_s() + 2;
        let (mut lapsing, _) = connect_with(&engine, &token_for("lapse", exp), None);
        let (mut refreshed, _) = connect_with(&engine, &token_for("fresh", exp), None);
        let reply = command(
            &mut refreshed,
            serde_json::json!({"id": 1, "method": "refresh", "params": {"token": token("fresh")}}),
        );
        assert!(
            reply["result"]["expires"].as_u64().unwrap() > exp * 1000,
            "{reply}"
        );

        // Refreshing with another user's token is refused.
        let reply = command(
            &mut refreshed,
            serde_json::json!({"id": 2, "method": "refresh", "params": {"token": token("mallory")}}),
        );
        assert_eq!(reply["error"]["code"], 101);

        lapsing
            .get_mut()
            .set_read_timeout(Some(Duration::from_secs(6)))
            .unwrap();
        assert_eq!(read_close_code(&mut lapsing), Some(4001));

        // The refreshed connection is still usable after the old expiry.
        let reply = command(
            &mut refreshed,
            serde_json::json!({"id": 3, "method": "ping"}),
        );
        assert!(reply.get("result").is_some(), "{reply}");
        engine.shutdown();
    }
);
