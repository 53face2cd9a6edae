//! Publish and send: every subscriber once, in order, across shards.

use std::collections::HashMap;

use crate::e2e;
use crate::util::*;
use serde_json::json;

e2e!(
    publish_reaches_every_subscriber_exactly_once_across_shards,
    |driver| {
        let engine = start(config(driver, 3));
        let mut clients: Vec<_> = (0..12)
            .map(|i| connect(&engine, &format!("u{i}")).0)
            .collect();
        for ws in clients.iter_mut() {
            subscribe(ws, 1, "news:sport");
        }
        let (_, stats) = api(&engine, "GET", "/api/stats", None);
        let shards_used = stats["shards"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["connections"].as_u64().unwrap() > 0)
            .count();
        assert!(shards_used >= 2, "connections spread over shards: {stats}");

        const N: u64 = 40;
        for seq in 0..N {
            publish(&engine, "news:sport", json!({"seq": seq}));
        }
        for ws in clients.iter_mut() {
            for seq in 0..N {
                let push = read_json(ws);
                assert_eq!(push["push"]["channel"], "news:sport");
                assert_eq!(
                    push["push"]["data"]["seq"], seq,
                    "in order, no gap, no duplicate"
                );
            }
        }
        // Nothing more: a ping's reply is the very next message.
        for ws in clients.iter_mut() {
            let reply = command(ws, json!({"id": 9, "method": "ping"}));
            assert!(reply.get("result").is_some());
        }
        engine.shutdown();
    }
);

e2e!(client_publish_follows_namespace_rules, |driver| {
    let engine = start(config(driver, 2));
    let (mut alice, _) = connect(&engine, "alice");
    let (mut bob, _) = connect(&engine, "bob");
    subscribe(&mut bob, 1, "chat:lobby");
    subscribe(&mut bob, 2, "room:1");

    // news: subscribe-only for clients.
    let reply = command(
        &mut alice,
        json!({"id": 1, "method": "publish", "params": {"channel": "news:x", "data": 1}}),
    );
    assert_eq!(reply["error"]["code"], 103);
    // chat: members publish; alice is not a member yet.
    let reply = command(
        &mut alice,
        json!({"id": 2, "method": "publish", "params": {"channel": "chat:lobby", "data": 1}}),
    );
    assert_eq!(reply["error"]["code"], 103);
    subscribe(&mut alice, 3, "chat:lobby");
    let reply = command(
        &mut alice,
        json!({"id": 4, "method": "publish", "params": {"channel": "chat:lobby", "data": {"text": "hi"}}}),
    );
    assert!(reply["result"]["id"].as_str().is_some(), "{reply}");
    let push = read_json(&mut bob);
    assert_eq!(push["push"]["data"]["text"], "hi");
    assert_eq!(push["push"]["sender"], "alice");
    // room: anyone may publish.
    let reply = command(
        &mut alice,
        json!({"id": 5, "method": "publish", "params": {"channel": "room:1", "data": "x"}}),
    );
    assert!(reply.get("result").is_some(), "{reply}");
    assert_eq!(read_json(&mut bob)["push"]["channel"], "room:1");
    // Unknown namespace, other users' personal channels, duplicates.
    let reply = command(
        &mut alice,
        json!({"id": 6, "method": "subscribe", "params": {"channel": "nope:x"}}),
    );
    assert_eq!(reply["error"]["code"], 102);
    let reply = command(
        &mut alice,
        json!({"id": 7, "method": "subscribe", "params": {"channel": "user:bob"}}),
    );
    assert_eq!(reply["error"]["code"], 103);
    let reply = command(
        &mut alice,
        json!({"id": 8, "method": "subscribe", "params": {"channel": "chat:lobby"}}),
    );
    assert_eq!(reply["error"]["code"], 105);
    let reply = command(
        &mut alice,
        json!({"id": 9, "method": "unsubscribe", "params": {"channel": "room:zzz"}}),
    );
    assert_eq!(reply["error"]["code"], 108);
    let reply = command(
        &mut alice,
        json!({"id": 10, "method": "unsubscribe", "params": {"channel": "chat:lobby"}}),
    );
    assert!(reply.get("result").is_some());
    let reply = command(&mut alice, json!({"id": 11, "method": "frobnicate"}));
    assert_eq!(reply["error"]["code"], 104);
    engine.shutdown();
});

e2e!(
    send_reaches_all_three_devices_on_different_shards,
    |driver| {
        let engine = start(config(driver, 3));
        // SO_REUSEPORT spreads connections by hash; connect until bob has a
        // device on every shard.
        let mut devices: HashMap<u64, Ws> = HashMap::new();
        for _ in 0..200 {
            if devices.len() == 3 {
                break;
            }
            let (ws, connect) = connect(&engine, "bob");
            let shard = connect["connect"]["shard"].as_u64().unwrap();
            devices.entry(shard).or_insert(ws);
        }
        assert_eq!(devices.len(), 3, "bob has a device on each of 3 shards");
        let (mut alice, _) = connect(&engine, "alice");
        let reply = command(
            &mut alice,
            json!({"id": 1, "method": "send", "params": {"user": "bob", "data": {"text": "hello bob"}}}),
        );
        assert!(reply["result"]["id"].as_str().is_some(), "{reply}");
        let (status, body) = api(
            &engine,
            "POST",
            "/api/send",
            Some(json!({"users": ["bob"], "data": {"text": "from server"}})),
        );
        assert_eq!(status, 200, "{body}");
        for ws in devices.values_mut() {
            let first = read_json(ws);
            assert_eq!(first["push"]["channel"], "user:bob");
            assert_eq!(first["push"]["sender"], "alice");
            assert_eq!(first["push"]["data"]["text"], "hello bob");
            let second = read_json(ws);
            assert_eq!(second["push"]["data"]["text"], "from server");
            let reply = command(ws, json!({"id": 5, "method": "ping"}));
            assert!(reply.get("result").is_some(), "no third copy: {reply}");
        }
        engine.shutdown();
    }
);
