//! The one publish path under overload: a success reply means every
//! interested shard got the publication, an error reply means none did.

use std::collections::BTreeSet;

use crate::e2e;
use crate::util::*;
use serde_json::json;
use tungstenite::Message;

/// Connects `user`s until one lands on `shard` (the kernel spreads
/// connections over the shards' listeners).
fn connect_on_shard(engine: &TestEngine, prefix: &str, shard: u64) -> Ws {
    for i in 0..200 {
        let (ws, connect) = connect(engine, &format!("{prefix}{i}"));
        if connect["connect"]["shard"] == shard {
            return ws;
        }
    }
    panic!("no connection landed on shard {shard}");
}

e2e!(
    an_overloaded_publish_is_delivered_nowhere_and_an_accepted_one_everywhere,
    |driver| {
        let mut config = config(driver, 2);
        // A lane of 8 events per (producer, shard): a burst from one shard
        // to the other overruns it at once.
        config.server.mesh_lane_events = 8;
        let engine = start(config);
        let mut publisher = connect_on_shard(&engine, "p", 0);
        let mut subscriber = connect_on_shard(&engine, "s", 1);
        subscribe(&mut publisher, 1, "room:flood");
        subscribe(&mut subscriber, 1, "room:flood");

        const N: u64 = 3_000;
        for seq in 0..N {
            let command = json!({"id": 100 + seq, "method": "publish",
                "params": {"channel": "room:flood", "data": {"seq": seq}}});
            publisher
                .write(Message::Text(command.to_string()))
                .expect("queue command");
        }
        publisher.flush().expect("send burst");

        // Every command gets one reply: published, or refused with 106.
        let mut accepted = BTreeSet::new();
        let mut refused = 0u64;
        let mut pushed_to_publisher = Vec::new();
        let mut replies = 0;
        while replies < N {
            let message = read_json(&mut publisher);
            if let Some(push) = message.get("push") {
                pushed_to_publisher.push(push["data"]["seq"].as_u64().expect("seq"));
                continue;
            }
            replies += 1;
            let seq = message["id"].as_u64().expect("id") - 100;
            if message.get("result").is_some() {
                accepted.insert(seq);
            } else {
                assert_eq!(message["error"]["code"], 106, "{message}");
                refused += 1;
            }
        }
        assert!(
            refused > 0,
            "a lane of 8 took a burst of {N}: nothing to test"
        );
        assert!(!accepted.is_empty(), "nothing got through");

        // The remote subscriber gets exactly the accepted ones, in order.
        let mut received = Vec::new();
        while received.len() < accepted.len() {
            let message = read_json(&mut subscriber);
            let seq = message["push"]["data"]["seq"].as_u64().expect("a push");
            received.push(seq);
        }
        assert_eq!(
            received,
            accepted.iter().copied().collect::<Vec<_>>(),
            "delivered exactly what was accepted, in order"
        );
        // Nothing else follows: the ping's reply is the next message.
        let reply = command(&mut subscriber, json!({"id": 7, "method": "ping"}));
        assert!(reply.get("result").is_some(), "{reply}");
        // So does the publisher's own shard (it delivers locally).
        while pushed_to_publisher.len() < accepted.len() {
            let message = read_json(&mut publisher);
            pushed_to_publisher.push(message["push"]["data"]["seq"].as_u64().expect("a push"));
        }
        assert_eq!(
            pushed_to_publisher,
            accepted.iter().copied().collect::<Vec<_>>()
        );
        engine.shutdown();
    }
);

e2e!(an_api_publish_refused_for_overload_says_so, |driver| {
    // The API's lane to each shard is as small as it gets; a burst of API
    // publishes either lands everywhere (200) or nowhere (503, Retry-After).
    let mut config = config(driver, 2);
    config.server.mesh_lane_events = 8;
    let engine = start(config);
    let mut a = connect_on_shard(&engine, "a", 0);
    let mut b = connect_on_shard(&engine, "b", 1);
    subscribe(&mut a, 1, "news:api");
    subscribe(&mut b, 1, "news:api");
    let mut accepted = Vec::new();
    for seq in 0..200u64 {
        let (status, body) = api(
            &engine,
            "POST",
            "/api/publish",
            Some(json!({"channel": "news:api", "data": {"seq": seq}})),
        );
        match status {
            200 => accepted.push(seq),
            503 => assert_eq!(body["error"]["code"], "overloaded", "{body}"),
            other => panic!("status {other}: {body}"),
        }
    }
    for ws in [&mut a, &mut b] {
        let mut received = Vec::new();
        while received.len() < accepted.len() {
            let message = read_json(ws);
            received.push(message["push"]["data"]["seq"].as_u64().expect("a push"));
        }
        assert_eq!(received, accepted);
        let reply = command(ws, json!({"id": 7, "method": "ping"}));
        assert!(reply.get("result").is_some(), "{reply}");
    }
    engine.shutdown();
});
