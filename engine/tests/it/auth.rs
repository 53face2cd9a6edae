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

/// A token signed with the test secret from a hand-written header and
/// claims (jsonwebtoken cannot write a `crit` header).
fn signed(header: &str, claims: &serde_json::Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let message = format!("{}.{}", b64.encode(header), b64.encode(claims.to_string()));
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{signature}")
}

e2e!(not_yet_valid_and_critical_tokens_get_401, |driver| {
    let engine = start(config(driver, 2));
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let early = signed(
        header,
        &serde_json::json!({"sub": "alice", "exp": now_s() + 7200, "nbf": now_s() + 3600}),
    );
    let (status, body) = upgrade_status(&engine, Some(&early));
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "token_not_yet_valid");

    // RFC 7515 §4.1.11: `crit` naming anything the server does not
    // understand makes the token invalid, signature or not.
    let critical = signed(
        r#"{"alg":"HS256","typ":"JWT","crit":["x-ext"],"x-ext":true}"#,
        &serde_json::json!({"sub": "alice", "exp": now_s() + 60}),
    );
    let (status, body) = upgrade_status(&engine, Some(&critical));
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "token_invalid");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("crit"),
        "{body}"
    );

    // The same helper with an `nbf` in the past and no `crit` connects.
    let fine = signed(
        header,
        &serde_json::json!({"sub": "alice", "exp": now_s() + 60, "nbf": now_s() - 60}),
    );
    let (_ws, connect) = connect_with(&engine, &fine, None);
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
