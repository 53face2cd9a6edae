//! The server API: auth, routes, errors as JSON.

use crate::e2e;
use crate::util::*;
use serde_json::json;

e2e!(api_refuses_bad_requests_with_json_errors, |driver| {
    let engine = start(config(driver, 2));
    let addr = engine.api_addr;
    let (status, body) = api_raw(
        addr,
        "POST",
        "/api/publish",
        Some(r#"{"channel":"news:x","data":1}"#),
        None,
    );
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = api_raw(
        addr,
        "POST",
        "/api/publish",
        Some(r#"{"channel":"news:x","data":1}"#),
        Some("wrong-key-wrong-key"),
    );
    assert_eq!(status, 401);
    let (status, body) = api(&engine, "POST", "/api/publish", None);
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("JSON"),
        "{body}"
    );
    let (status, body) = api(
        &engine,
        "POST",
        "/api/publish",
        Some(json!({"channel": "news:x"})),
    );
    assert_eq!(status, 400, "{body}");
    let (status, _) = api(
        &engine,
        "POST",
        "/api/publish",
        Some(json!({"channel": "news:x", "data": 1, "extra": true})),
    );
    assert_eq!(status, 400);
    let (status, _) = api(
        &engine,
        "POST",
        "/api/publish",
        Some(json!({"channel": "bad channel", "data": 1})),
    );
    assert_eq!(status, 400);
    let (status, body) = api(&engine, "GET", "/api/nothing", None);
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = api(&engine, "GET", "/api/publish", None);
    assert_eq!(status, 405);
    let big = json!({"channel": "news:x", "data": "z".repeat(10_000)});
    let (status, body) = api(&engine, "POST", "/api/publish", Some(big));
    assert_eq!(status, 413, "{body}");
    let (status, body) = api_raw(addr, "GET", "/health", None, None);
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    engine.shutdown();
});

e2e!(
    api_publish_broadcast_presence_stats_disconnect_metrics,
    |driver| {
        let engine = start(config(driver, 2));
        let (mut a, connect_a) = connect(&engine, "ann");
        let (mut b, _) = connect(&engine, "ben");
        subscribe(&mut a, 1, "news:one");
        subscribe(&mut b, 1, "news:two");

        let (status, body) = api(
            &engine,
            "POST",
            "/api/broadcast",
            Some(json!({"channels": ["news:one", "news:two"], "b64data": "AAEC"})),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["results"].as_array().unwrap().len(), 2);
        let push = read_json(&mut a);
        assert_eq!(push["push"]["b64data"], "AAEC");
        assert_eq!(read_json(&mut b)["push"]["channel"], "news:two");

        let (status, body) = api(&engine, "GET", "/api/presence?channel=news%3Aone", None);
        assert_eq!(status, 200, "{body}");
        let clients = body["clients"].as_array().unwrap();
        assert_eq!(clients.len(), 1);
        assert_eq!(clients[0]["user"], "ann");
        assert_eq!(clients[0]["client"], connect_a["connect"]["client"]);

        let (status, body) = api(&engine, "GET", "/api/stats", None);
        assert_eq!(status, 200);
        assert_eq!(body["connections"], 2);

        // One durable write (an inbox append), acknowledged after its fsync.
        let (status, body) = api(
            &engine,
            "POST",
            "/api/send",
            Some(json!({"user": "offline-cid", "data": {"n": 1}})),
        );
        assert_eq!(status, 200, "{body}");
        let (status, metrics) = api_raw(engine.api_addr, "GET", "/metrics", None, None);
        assert_eq!(status, 200);
        let metrics = metrics.as_str().unwrap().to_string();
        assert!(
            metrics.contains("ringcast_connections{shard=\"0\"}"),
            "{metrics}"
        );
        assert!(metrics.contains("# TYPE ringcast_bytes_out_total counter"));
        assert!(
            metrics.contains(
                "# TYPE ringcast_store_commits_total counter\nringcast_store_commits_total 1\n"
            ),
            "{metrics}"
        );
        assert!(
            metrics.contains("\nringcast_store_appends_total 1\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("\nringcast_store_syncs_total 1\n"),
            "{metrics}"
        );

        let (status, body) = api(
            &engine,
            "POST",
            "/api/disconnect",
            Some(json!({"user": "ben"})),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(read_close_code(&mut b), Some(4003));
        assert!(wait_until(std::time::Duration::from_secs(3), || api(
            &engine,
            "GET",
            "/api/stats",
            None
        )
        .1["connections"]
            == 1));
        engine.shutdown();
    }
);

// Channel names are checked by one rule for every API route: a personal
// channel needs a valid user id after `user:`.
e2e!(api_channel_names_have_one_rule, |driver| {
    let engine = start(config(driver, 1));
    for (channel, status, code) in [
        ("user:", 400, "bad_request"),
        ("user:a b", 400, "bad_request"),
        ("", 400, "bad_request"),
        ("nowhere:x", 400, "unknown_namespace"),
    ] {
        for path in ["/api/publish", "/api/history"] {
            let body = if path == "/api/publish" {
                json!({"channel": channel, "data": {"n": 1}})
            } else {
                json!({"stream": channel})
            };
            let (got, body) = api(&engine, "POST", path, Some(body));
            assert_eq!(got, status, "{path} {channel:?}: {body}");
            assert_eq!(body["error"]["code"], code, "{path} {channel:?}: {body}");
        }
    }
    let (status, body) = api(
        &engine,
        "POST",
        "/api/publish",
        Some(json!({"channel": "user:bob", "data": {"n": 1}})),
    );
    assert_eq!(status, 200, "{body}");
    engine.shutdown();
});

/// `{"a":{"a":...}}` nested `depth` levels deep.
fn nested(depth: usize) -> serde_json::Value {
    let mut value = json!(1);
    for _ in 0..depth {
        value = json!({ "a": value });
    }
    value
}

// Over-deep JSON data is refused at every door with a reason, and data at
// the limit is stored and read back whole.
e2e!(json_data_deeper_than_the_limit_is_refused, |driver| {
    let mut config = config(driver, 2);
    config.server.json_depth_max = 100;
    let engine = start(config);
    let (status, body) = api(
        &engine,
        "POST",
        "/api/send",
        Some(json!({"user": "bob", "data": nested(101)})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("json_depth_max"),
        "{body}"
    );

    let (mut alice, _) = connect(&engine, "alice");
    let reply = command(
        &mut alice,
        json!({"id": 1, "method": "send", "params": {"user": "bob", "data": nested(101)}}),
    );
    assert_eq!(reply["error"]["code"], 107, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("json_depth_max"),
        "{reply}"
    );

    // At the limit: stored, and the history page renders it as it was.
    let reply = command(
        &mut alice,
        json!({"id": 2, "method": "send", "params": {"user": "bob", "data": nested(100)}}),
    );
    assert!(reply["result"]["offset"].as_u64().is_some(), "{reply}");
    let (status, page) = api(
        &engine,
        "POST",
        "/api/history",
        Some(json!({"stream": "user:bob"})),
    );
    assert_eq!(status, 200);
    let stored = page["publications"][0]["data"].to_string();
    assert_eq!(stored.matches('{').count(), 100);
    engine.shutdown();
});

/// A POST with `content_type` (or none).
fn post_with_content_type(
    engine: &ringcast_engine::Engine,
    content_type: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut request = http_agent()
        .post(format!("http://{}/api/publish", engine.api_addr))
        .header("Authorization", format!("apikey {API_KEY}"));
    if let Some(content_type) = content_type {
        request = request.header("Content-Type", content_type);
    }
    let mut response = request.send(body).unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

// The media type is compared as RFC 9110 says (case-insensitive,
// parameters ignored), as docs/api.md says.
e2e!(content_type_is_a_case_insensitive_media_type, |driver| {
    let engine = start(config(driver, 1));
    let body = r#"{"channel":"news:ct","data":{"n":1}}"#;
    for content_type in [
        Some("application/json"),
        Some("Application/JSON"),
        Some("application/json; charset=utf-8"),
        None,
    ] {
        let (status, response) = post_with_content_type(&engine, content_type, body);
        assert_eq!(status, 200, "{content_type:?}: {response}");
    }
    for content_type in ["application/jsonx", "text/json", "text/plain"] {
        let (status, response) = post_with_content_type(&engine, Some(content_type), body);
        assert_eq!(status, 415, "{content_type}: {response}");
        assert!(response.contains("unsupported_media_type"), "{response}");
    }
    engine.shutdown();
});

// RFC 9112 §6.1: an HTTP/1.0 request with Transfer-Encoding is refused and
// the connection closed, so a request pipelined behind it is never read.
e2e!(
    http_1_0_with_transfer_encoding_is_refused_and_closed,
    |driver| {
        use std::io::{Read, Write};
        let engine = start(config(driver, 1));
        let mut stream = std::net::TcpStream::connect(engine.api_addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let body = r#"{"channel":"news:x","data":1}"#;
        write!(
        stream,
        "POST /api/publish HTTP/1.0\r\nConnection: keep-alive\r\nAuthorization: apikey {API_KEY}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\n\r\n",
        body.len()
    )
    .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 400"), "{response}");
        // hyper refuses it while reading the head, with its own empty-bodied 400
        // (docs/api.md, "Errors"), and says it closes.
        assert!(
            response.to_ascii_lowercase().contains("connection: close"),
            "{response}"
        );
        assert_eq!(
            response.matches("HTTP/1.1 ").count(),
            1,
            "one response, then close: {response}"
        );
        engine.shutdown();
    }
);

/// Without the API key a request is refused on its head: the announced
/// body is never waited for (nor buffered), and the connection closes.
#[test]
fn unauthenticated_request_is_refused_before_its_body() {
    use std::io::{Read, Write};
    let engine = start(config(ringcast_engine::config::Driver::Epoll, 1));
    let mut stream = std::net::TcpStream::connect(engine.api_addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(
            b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 900000\r\n\r\n",
        )
        .unwrap();
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("the answer, then the close, without the body being sent");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("\"unauthorized\""), "{answer}");
    engine.shutdown();
}
