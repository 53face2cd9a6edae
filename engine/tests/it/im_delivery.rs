//! Delivery over real sockets (`docs/im.md`, "Who receives what", "What
//! each device replays"), on several shards: an `ack` of a DM by the peer's
//! device tells the sender `delivered` once per advance; `receipts` and its
//! API twin answer both users' positions; `catchup` replays two DMs after
//! missed messages, merged with live ones, with no gap and no duplicate.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::im_dm::{im_config, im_connect, next_push, nothing_waiting, send_text};
use crate::util::*;

/// Sends `command` and reads until its reply; returns the reply and what
/// came before it.
fn ask(ws: &mut Ws, command: Value) -> (Value, Vec<Value>) {
    let id = command["id"].clone();
    send_json(ws, command);
    let mut before = Vec::new();
    loop {
        let message = read_json(ws);
        if message.get("id") == Some(&id) {
            return (message, before);
        }
        before.push(message);
    }
}

crate::e2e!(
    an_ack_of_a_dm_tells_the_sender_delivered_once_per_advance,
    |driver| {
        let engine = start(im_config(driver));
        let (mut alice, _) = im_connect(&engine, "alice", "device=a1", Some(0));
        let (mut bob_phone, _) = im_connect(&engine, "bob", "device=phone", Some(1));
        let (mut bob_laptop, _) = im_connect(&engine, "bob", "device=laptop", Some(2));
        let mut conv = String::new();
        for (id, text) in [(1, "one"), (2, "two")] {
            send_json(
                &mut alice,
                json!({"id": id, "method": "msg_send", "params": {"to": "bob", "kind": "text", "data": {"text": text}}}),
            );
            next_push(&mut alice);
            let reply = read_json(&mut alice);
            conv = reply["result"]["conv"].as_str().expect("conv").to_owned();
            next_push(&mut bob_phone);
            next_push(&mut bob_laptop);
        }
        // The phone acknowledges the first message: alice is told.
        let ack = command(
            &mut bob_phone,
            json!({"id": 10, "method": "ack", "params": {"stream": conv, "offset": 1}}),
        );
        assert_eq!(ack, json!({"id": 10, "result": {}}));
        assert_eq!(
            read_json(&mut alice),
            json!({"delivered": {"conv": conv, "user": "bob", "offset": 1}})
        );
        // The laptop at the same position: bob's delivery did not move,
        // nobody is told.
        let ack = command(
            &mut bob_laptop,
            json!({"id": 11, "method": "ack", "params": {"stream": conv, "offset": 1}}),
        );
        assert_eq!(ack["result"], json!({}));
        nothing_waiting(&mut alice, 12);
        // Past the end: clamped to the last message.
        command(
            &mut bob_laptop,
            json!({"id": 13, "method": "ack", "params": {"stream": conv, "offset": 99}}),
        );
        assert_eq!(
            read_json(&mut alice),
            json!({"delivered": {"conv": conv, "user": "bob", "offset": 2}})
        );
        nothing_waiting(&mut bob_phone, 14);

        // A stranger can neither ack nor query the conversation.
        let (mut eve, _) = im_connect(&engine, "eve", "", None);
        let refused = command(
            &mut eve,
            json!({"id": 15, "method": "ack", "params": {"stream": conv, "offset": 1}}),
        );
        assert_eq!(refused["error"]["code"], 123, "{refused}");
        let refused = command(
            &mut eve,
            json!({"id": 16, "method": "receipts", "params": {"conv": conv}}),
        );
        assert_eq!(refused["error"]["code"], 123, "{refused}");

        // Receipts: both users' read and delivery positions, paged.
        let expected = json!([
            {"user": "alice", "read": 2, "delivered": 0},
            {"user": "bob", "read": 0, "delivered": 2},
        ]);
        let page = command(
            &mut alice,
            json!({"id": 17, "method": "receipts", "params": {"conv": conv}}),
        );
        assert_eq!(page["result"], json!({"conv": conv, "receipts": expected}));
        let first = command(
            &mut alice,
            json!({"id": 18, "method": "receipts", "params": {"conv": conv, "limit": 1}}),
        );
        assert_eq!(first["result"]["receipts"], json!([expected[0]]));
        assert_eq!(first["result"]["next"], "alice");
        let second = command(
            &mut alice,
            json!({"id": 19, "method": "receipts", "params": {"conv": conv, "cursor": "alice", "limit": 1}}),
        );
        assert_eq!(second["result"]["receipts"], json!([expected[1]]));
        // The API twin answers the same for the backend acting as bob.
        let (status, body) = api(
            &engine,
            "POST",
            "/api/im/receipts",
            Some(json!({"as_user": "bob", "conv": conv})),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"conv": conv, "receipts": expected}));
        let (status, _) = api(
            &engine,
            "POST",
            "/api/im/receipts",
            Some(json!({"as_user": "eve", "conv": conv})),
        );
        assert_eq!(status, 403);
    }
);

/// Checks the pushes of `conv` a connection got: from the first replayed
/// entry (`since + 1`) on, every offset up to `last` exactly once, in
/// order. Entries pushed live before the catchup reached the server (newer
/// than `since`) may come before it; the client drops those by offset.
fn assert_caught_up(pushes: &[u64], since: u64, last: u64, conv: &str) {
    let start = pushes
        .iter()
        .position(|offset| *offset == since + 1)
        .unwrap_or_else(|| panic!("{conv}: no replay from {}: {pushes:?}", since + 1));
    let expected: Vec<u64> = (since + 1..=last).collect();
    assert_eq!(
        &pushes[start..],
        expected.as_slice(),
        "{conv}: a gap or a duplicate"
    );
    assert!(
        pushes[..start].iter().all(|offset| *offset > since),
        "{conv}: {pushes:?}"
    );
}

/// Files a push under its conversation; anything else fails the test.
fn record_push(pushes: &mut HashMap<String, Vec<u64>>, message: &Value) {
    let push = message.get("push").unwrap_or_else(|| panic!("{message}"));
    pushes
        .entry(push["channel"].as_str().unwrap().to_owned())
        .or_default()
        .push(push["offset"].as_u64().unwrap());
}

#[test]
fn catchup_of_two_dms_has_no_gap_or_duplicate_while_live_messages_arrive() {
    let engine = start(im_config(ringcast_engine::config::Driver::IoUring));
    let (mut carol, _) = im_connect(&engine, "carol", "device=c1", Some(0));
    let (mut dave, _) = im_connect(&engine, "dave", "", Some(1));
    let (mut erin, _) = im_connect(&engine, "erin", "", Some(2));
    let first = send_text(&mut dave, 1, "carol", "d1", None);
    let dave_conv = first["result"]["conv"].as_str().expect("conv").to_owned();
    let first = send_text(&mut erin, 1, "carol", "e1", None);
    let erin_conv = first["result"]["conv"].as_str().expect("conv").to_owned();
    // carol has offset 1 of both, acknowledged by its device, then goes.
    for _ in 0..2 {
        next_push(&mut carol);
    }
    for (id, conv) in [(2, &dave_conv), (3, &erin_conv)] {
        command(
            &mut carol,
            json!({"id": id, "method": "ack", "params": {"stream": conv, "offset": 1}}),
        );
    }
    for (ws, conv) in [(&mut dave, &dave_conv), (&mut erin, &erin_conv)] {
        assert_eq!(
            read_json(ws),
            json!({"delivered": {"conv": conv, "user": "carol", "offset": 1}})
        );
    }
    drop(carol);
    // Missed while away: 20 from dave and 30 from erin.
    for index in 0..30 {
        if index < 20 {
            send_text(&mut dave, 100 + index, "carol", "missed", None);
        }
        send_text(&mut erin, 100 + index, "carol", "missed", None);
    }
    let (mut carol, sync) = im_connect(&engine, "carol", "device=c1", Some(2));
    let last: HashMap<String, u64> = sync["convs"]
        .as_array()
        .expect("convs")
        .iter()
        .map(|c| {
            (
                c["conv"].as_str().unwrap().to_owned(),
                c["last_offset"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!((last[&dave_conv], last[&erin_conv]), (21, 31));
    // Live messages keep coming from both while carol catches up: dave's
    // conversation from the acked cursor, erin's from an explicit offset.
    let live = std::thread::spawn({
        let api_addr = engine.api_addr;
        move || {
            for index in 0..40 {
                for from in ["dave", "erin"] {
                    let body = json!({"as_user": from, "to": "carol", "kind": "text", "data": {"text": format!("live {index}")}});
                    let (status, reply) = api_raw(
                        api_addr,
                        "POST",
                        "/api/im/msg_send",
                        Some(&body.to_string()),
                        Some(API_KEY),
                    );
                    assert_eq!(status, 200, "{reply}");
                }
            }
        }
    });
    let (reply, before) = ask(
        &mut carol,
        json!({"id": 50, "method": "catchup", "params": {"convs": [
            {"conv": dave_conv, "since": "cursor"},
            {"conv": erin_conv, "since": 1, "epoch": sync["convs"][0]["epoch"]},
        ]}}),
    );
    live.join().expect("live sender");
    let results = reply["result"]["convs"]
        .as_array()
        .unwrap_or_else(|| panic!("{reply}"));
    assert_eq!(results.len(), 2, "{reply}");
    assert_eq!(results[0]["conv"], dave_conv.as_str());
    assert_eq!(results[1]["conv"], erin_conv.as_str());
    for result in results {
        assert_eq!(result["recovered"], true, "{reply}");
        assert_eq!(result["truncated"], false, "{reply}");
    }
    // Everything up to the last live message (61 = 1 + 20 + 40 for dave,
    // 71 = 1 + 30 + 40 for erin), then nothing more.
    let mut pushes: HashMap<String, Vec<u64>> = HashMap::new();
    for message in &before {
        record_push(&mut pushes, message);
    }
    let done = |pushes: &HashMap<String, Vec<u64>>| {
        pushes.get(&dave_conv).and_then(|p| p.last()) == Some(&61)
            && pushes.get(&erin_conv).and_then(|p| p.last()) == Some(&71)
    };
    while !done(&pushes) {
        let message = read_json(&mut carol);
        record_push(&mut pushes, &message);
    }
    assert_caught_up(&pushes[&dave_conv], 1, 61, &dave_conv);
    assert_caught_up(&pushes[&erin_conv], 1, 71, &erin_conv);
    nothing_waiting(&mut carol, 51);

    // Past the limit: the replay stops and says so; the client pages the
    // rest with history.
    let (reply, _) = ask(
        &mut carol,
        json!({"id": 52, "method": "catchup", "params": {"convs": [{"conv": erin_conv, "since": 10}], "limit_per_conv": 5}}),
    );
    let result = &reply["result"]["convs"][0];
    assert_eq!(
        (
            result["truncated"].clone(),
            result["replayed"].clone(),
            result["offset"].clone()
        ),
        (json!(true), json!(5), json!(15)),
        "{reply}"
    );
    // A conversation carol is not in is refused as a whole.
    let (reply, _) = ask(
        &mut dave,
        json!({"id": 53, "method": "catchup", "params": {"convs": [{"conv": erin_conv, "since": 0}]}}),
    );
    assert_eq!(reply["error"]["code"], 123, "{reply}");
    // A name that is no conversation (a channel the connection may be
    // subscribed to) is refused before anything is held.
    let (reply, _) = ask(
        &mut dave,
        json!({"id": 54, "method": "catchup", "params": {"convs": [{"conv": "chat:lobby", "since": 0}]}}),
    );
    assert_eq!(reply["error"]["code"], 107, "{reply}");
}

crate::e2e!(
    catchup_of_a_cleared_dm_replays_only_after_the_clear,
    |driver| {
        let engine = start(im_config(driver));
        let (mut alice, _) = im_connect(&engine, "alice", "", Some(0));
        let mut conv = String::new();
        for (id, words) in [(1, "one"), (2, "two"), (3, "three")] {
            let reply = send_text(&mut alice, id, "bob", words, None);
            conv = reply["result"]["conv"].as_str().expect("conv").to_owned();
        }
        let (mut bob, _) = im_connect(&engine, "bob", "device=b1", Some(1));
        let (reply, _) = ask(
            &mut bob,
            json!({"id": 1, "method": "clear", "params": {"conv": conv, "upto": 2}}),
        );
        assert_eq!(reply["result"]["visible_from"], 3, "{reply}");
        let (reply, before) = ask(
            &mut bob,
            json!({"id": 2, "method": "catchup", "params": {"convs": [{"conv": conv, "since": 0}]}}),
        );
        assert_eq!(reply["result"]["convs"][0]["replayed"], 1, "{reply}");
        let offsets: Vec<&Value> = before.iter().map(|m| &m["push"]["offset"]).collect();
        assert_eq!(offsets, vec![&json!(3)], "{before:?}");
        nothing_waiting(&mut bob, 3);
        engine.shutdown();
    }
);

crate::e2e!(
    receipts_name_the_user_who_asked_after_its_connection_went,
    |driver| {
        let engine = start(im_config(driver));
        let (mut alice, _) = im_connect(&engine, "alice", "", Some(0));
        let reply = send_text(&mut alice, 1, "bob", "hello", None);
        let conv = reply["result"]["conv"].as_str().expect("conv").to_owned();
        let (mut bob, _) = im_connect(&engine, "bob", "device=b1", Some(1));
        // bob acks and reads, and is gone before the store answers; eve
        // may take its connection's slot meanwhile.
        send_json(
            &mut bob,
            json!({"id": 1, "method": "ack", "params": {"stream": conv, "offset": 1}}),
        );
        send_json(
            &mut bob,
            json!({"id": 2, "method": "read", "params": {"conv": conv, "offset": 1}}),
        );
        bob.get_mut()
            .shutdown(std::net::Shutdown::Both)
            .expect("shutdown");
        drop(bob);
        let (mut eve, _) = im_connect(&engine, "eve", "", Some(1));
        let mut events = vec![read_json(&mut alice), read_json(&mut alice)];
        events.sort_by_key(|event| event.to_string());
        assert_eq!(
            events,
            vec![
                json!({"delivered": {"conv": conv, "user": "bob", "offset": 1}}),
                json!({"receipt": {"conv": conv, "user": "bob", "read": 1}}),
            ]
        );
        nothing_waiting(&mut alice, 3);
        nothing_waiting(&mut eve, 1);
        engine.shutdown();
    }
);
