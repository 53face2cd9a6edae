//! Issue 12, API completeness: idempotency keys on publish, send and
//! broadcast (also across a restart), `sender` on API publications, and
//! backward history paging with `before`, through the API (ureq) and the
//! client protocol (tungstenite).

use std::net::SocketAddr;

use crate::e2e;
use crate::util::*;
use ringcast_engine::Engine;
use serde_json::{json, Value};

/// A POST to the API with an `Idempotency-Key` header.
fn post_keyed(addr: SocketAddr, path: &str, key: &str, body: &Value) -> (u16, Value, bool) {
    let request = ureq::http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("Content-Type", "application/json")
        .header("Authorization", format!("apikey {API_KEY}"))
        .header("Idempotency-Key", key)
        .body(body.to_string())
        .unwrap();
    let mut response = http_agent().run(request).expect("API answers");
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).expect("JSON"), replayed)
}

fn history_api(engine: &Engine, body: Value) -> Value {
    let (status, page) = api(engine, "POST", "/api/history", Some(body));
    assert_eq!(status, 200, "{page}");
    page
}

fn offsets_of(page: &Value) -> Vec<u64> {
    page["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect()
}

e2e!(
    api_publish_retry_is_stored_once_and_answered_the_same,
    |driver| {
        let engine = start(config(driver, 2));
        let body = json!({"channel": "chat:idem", "data": {"n": 1}});
        let (status, first, replayed) =
            post_keyed(engine.api_addr, "/api/publish", "order-1", &body);
        assert_eq!(status, 200, "{first}");
        assert!(!replayed);
        assert!(first.get("duplicate").is_none(), "{first}");
        let (status, again, replayed) =
            post_keyed(engine.api_addr, "/api/publish", "order-1", &body);
        assert_eq!(status, 200, "{again}");
        assert!(replayed, "a replay says so in Idempotent-Replayed");
        assert_eq!(again["duplicate"], true);
        for field in ["id", "offset", "epoch"] {
            assert_eq!(first[field], again[field], "{field}: {first} vs {again}");
        }
        // Another key is another publication.
        let (status, other, _) = post_keyed(engine.api_addr, "/api/publish", "order-2", &body);
        assert_eq!(status, 200);
        assert_eq!(other["offset"], 2);
        let page = history_api(&engine, json!({"stream": "chat:idem"}));
        assert_eq!(offsets_of(&page), [1, 2], "stored once per key: {page}");
        // The key with another body: 422, nothing stored.
        let changed = json!({"channel": "chat:idem", "data": {"n": 2}});
        let (status, refused, _) = post_keyed(engine.api_addr, "/api/publish", "order-1", &changed);
        assert_eq!(status, 422, "{refused}");
        assert_eq!(refused["error"]["code"], "idempotency_key_reused");
        // The header and a different body key at once: refused.
        let both = json!({"channel": "chat:idem", "data": 1, "client_msg_id": "x"});
        let (status, _, _) = post_keyed(engine.api_addr, "/api/publish", "order-3", &both);
        assert_eq!(status, 400);
        let page = history_api(&engine, json!({"stream": "chat:idem"}));
        assert_eq!(offsets_of(&page), [1, 2]);
        engine.shutdown();
    }
);

e2e!(api_dedup_survives_a_restart_for_durable_targets, |driver| {
    let data_dir = tempfile::tempdir().unwrap();
    let mut cfg = config(driver, 2);
    cfg.server.data_dir = data_dir.path().to_path_buf();
    let publish = json!({"channel": "chat:restart", "data": {"n": 1}});
    let send = json!({"users": ["ann", "bob"], "data": {"n": 1}});
    let engine = Engine::start(cfg.clone()).expect("engine starts");
    let (_, published, _) = post_keyed(engine.api_addr, "/api/publish", "p-1", &publish);
    let (status, sent, _) = post_keyed(engine.api_addr, "/api/send", "s-1", &send);
    assert_eq!(status, 200, "{sent}");
    engine.shutdown();
    // The in-memory answers are gone; the store's dedup index is not.
    let engine = Engine::start(cfg).expect("engine restarts");
    let (status, again, _) = post_keyed(engine.api_addr, "/api/publish", "p-1", &publish);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["id"], published["id"]);
    assert_eq!(again["offset"], published["offset"]);
    let (status, resent, _) = post_keyed(engine.api_addr, "/api/send", "s-1", &send);
    assert_eq!(status, 200, "{resent}");
    assert_eq!(resent["duplicate"], true, "{resent}");
    for idx in 0..2 {
        assert_eq!(resent["results"][idx]["id"], sent["results"][idx]["id"]);
        assert_eq!(resent["results"][idx]["duplicate"], true);
    }
    let page = history_api(&engine, json!({"stream": "chat:restart"}));
    assert_eq!(offsets_of(&page), [1]);
    for user in ["ann", "bob"] {
        let inbox = history_api(&engine, json!({"stream": format!("user:{user}")}));
        assert_eq!(offsets_of(&inbox), [1], "{user}'s inbox holds one: {inbox}");
    }
    engine.shutdown();
});

e2e!(api_send_and_broadcast_retries_deliver_once, |driver| {
    let engine = start(config(driver, 2));
    let (mut ann, _) = connect(&engine, "ann");
    let (mut bob, _) = connect(&engine, "bob");
    subscribe(&mut ann, 1, "news:live");
    // Live-only channel: deduplicated by the API's memory within the window.
    let broadcast = json!({"channels": ["news:live", "chat:b"], "data": {"n": 7}});
    let (status, first, _) = post_keyed(engine.api_addr, "/api/broadcast", "b-1", &broadcast);
    assert_eq!(status, 200, "{first}");
    let (status, again, _) = post_keyed(engine.api_addr, "/api/broadcast", "b-1", &broadcast);
    assert_eq!(status, 200);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["results"], first["results"]);
    // Send to several users, retried: one push each, with the sender.
    let send = json!({"users": ["ann", "bob"], "data": {"n": 8}, "sender": "shop"});
    let (status, sent, _) = post_keyed(engine.api_addr, "/api/send", "s-1", &send);
    assert_eq!(status, 200, "{sent}");
    let (_, resent, _) = post_keyed(engine.api_addr, "/api/send", "s-1", &send);
    assert_eq!(resent["duplicate"], true);
    assert_eq!(resent["results"], sent["results"]);
    // A different key is a new message.
    let (_, _, _) = post_keyed(engine.api_addr, "/api/send", "s-2", &send);
    let push = read_json(&mut ann);
    assert_eq!(push["push"]["channel"], "news:live", "{push}");
    assert_eq!(push["push"]["data"]["n"], 7);
    for ws in [&mut ann, &mut bob] {
        let first = read_json(ws);
        let second = read_json(ws);
        assert_eq!(first["push"]["sender"], "shop", "{first}");
        assert_eq!(first["push"]["offset"], 1, "{first}");
        assert_eq!(
            second["push"]["offset"], 2,
            "the retry made no push: {second}"
        );
    }
    // Nothing else arrived: a ping is the next thing answered.
    let pong = command(&mut ann, json!({"id": 9, "method": "ping"}));
    assert_eq!(pong["id"], 9, "no third push before the pong: {pong}");
    let inbox = history_api(&engine, json!({"stream": "user:bob"}));
    assert_eq!(offsets_of(&inbox), [1, 2]);
    assert_eq!(inbox["publications"][0]["sender"], "shop");
    engine.shutdown();
});

e2e!(api_publish_sender_is_validated_and_pushed, |driver| {
    let engine = start(config(driver, 2));
    let (mut ws, _) = connect(&engine, "cat");
    subscribe(&mut ws, 1, "chat:s");
    let (status, _) = api(
        &engine,
        "POST",
        "/api/publish",
        Some(json!({"channel": "chat:s", "data": 1, "sender": "dan"})),
    );
    assert_eq!(status, 200);
    let push = read_json(&mut ws);
    assert_eq!(push["push"]["sender"], "dan", "{push}");
    let page = history_api(&engine, json!({"stream": "chat:s"}));
    assert_eq!(page["publications"][0]["sender"], "dan", "{page}");
    let (status, body) = api(
        &engine,
        "POST",
        "/api/publish",
        Some(json!({"channel": "chat:s", "data": 1, "sender": ""})),
    );
    assert_eq!(status, 400, "an empty sender is no user id: {body}");
    engine.shutdown();
});

e2e!(before_pages_back_through_250_entries, |driver| {
    let engine = start(config(driver, 2));
    // An inbox keeps 10,000 entries (the test config's `chat` keeps 16).
    for n in 1..=250u64 {
        let (status, body) = api(
            &engine,
            "POST",
            "/api/send",
            Some(json!({"user": "eve", "data": {"n": n}})),
        );
        assert_eq!(status, 200, "{body}");
    }
    let want: Vec<u64> = (1..=250).rev().collect();
    // Through the API.
    let mut seen: Vec<u64> = Vec::new();
    let mut before = u64::MAX;
    loop {
        let page = history_api(
            &engine,
            json!({"stream": "user:eve", "before": before, "limit": 100}),
        );
        let offsets = offsets_of(&page);
        assert!(offsets.len() <= 100);
        seen.extend(&offsets);
        match offsets.last() {
            Some(&last) if last > page["start_offset"].as_u64().unwrap_or(1) => before = last,
            _ => break,
        }
    }
    assert_eq!(seen, want, "API pages, newest first, each entry once");
    // Through the client protocol.
    let (mut ws, _) = connect(&engine, "eve");
    let mut seen: Vec<u64> = Vec::new();
    let mut before = 251u64;
    for id in 1.. {
        let reply = command(
            &mut ws,
            json!({"id": id, "method": "history", "params": {"stream": "user:eve", "before": before, "limit": 100}}),
        );
        let offsets = offsets_of(&reply["result"]);
        seen.extend(&offsets);
        match offsets.last() {
            Some(&last) if offsets.len() == 100 => before = last,
            _ => break,
        }
    }
    assert_eq!(seen, want, "client pages, newest first, each entry once");
    let reply = command(
        &mut ws,
        json!({"id": 99, "method": "history", "params": {"stream": "user:eve", "before": 10, "reverse": false}}),
    );
    assert!(
        reply.get("error").is_some(),
        "before with reverse:false is refused: {reply}"
    );
    engine.shutdown();
});
