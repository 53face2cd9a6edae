//! Blocks, the contacts policy and typing over real sockets, on several
//! shards (`docs/im.md`, "Blocks and DM policy", "Typing"): a block
//! refuses DMs both ways with 120 and says who blocked; the blocker's other
//! devices hear of it; a contacts-only user takes DMs from contacts only
//! (103); typing reaches the other member's devices, not the typist's own
//! other connection, at most once per interval, and is never stored; in a
//! group it reaches the other members and a non-member gets 123.

use std::time::Duration;

use serde_json::{json, Value};

use crate::im_dm::{im_config, im_connect, next_push, nothing_waiting, send_text};
use crate::util::*;

fn block(ws: &mut Ws, id: u64, method: &str, user: &str) -> Value {
    command(
        ws,
        json!({"id": id, "method": method, "params": {"user": user}}),
    )
}

fn typing(ws: &mut Ws, id: u64, conv: &str, state: &str) -> Value {
    command(
        ws,
        json!({"id": id, "method": "typing", "params": {"conv": conv, "state": state}}),
    )
}

/// The conversation's entries as `history` returns them.
fn history(ws: &mut Ws, id: u64, conv: &str) -> Value {
    let page = command(
        ws,
        json!({"id": id, "method": "history", "params": {"stream": conv}}),
    );
    page["result"].clone()
}

/// The batches the store's writer has committed (`/metrics`).
fn store_commits(engine: &ringcast_engine::Engine) -> u64 {
    let (status, metrics) = api_raw(engine.api_addr, "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap().to_owned();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("ringcast_store_commits_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no store_commits_total in {metrics}"))
}

crate::e2e!(
    a_block_refuses_dms_both_ways_with_120_until_unblocked,
    |driver| {
        let engine = start(im_config(driver));
        let (mut alice1, _) = im_connect(&engine, "alice", "", Some(0));
        let (mut alice2, _) = im_connect(&engine, "alice", "", Some(1));
        let (mut bob, _) = im_connect(&engine, "bob", "", Some(2));

        let first = send_text(&mut alice1, 1, "bob", "hi", None);
        assert_eq!(first["result"]["offset"], 1, "{first}");
        next_push(&mut alice2);
        next_push(&mut bob);

        let reply = block(&mut alice1, 2, "block", "bob");
        assert_eq!(
            reply["result"],
            json!({"user": "bob", "blocked": true, "changed": true})
        );
        // The blocker's other device hears of it; the blocked user does not.
        assert_eq!(
            read_json(&mut alice2),
            json!({"block": {"user": "bob", "blocked": true}})
        );
        nothing_waiting(&mut alice1, 3);
        nothing_waiting(&mut bob, 3);
        let again = block(&mut alice1, 4, "block", "bob");
        assert_eq!(again["result"]["changed"], false, "{again}");
        nothing_waiting(&mut alice2, 4);

        // Both ways, and the message says who blocked whom.
        let from_bob = send_text(&mut bob, 5, "alice", "hello?", None);
        assert_eq!(from_bob["error"]["code"], 120, "{from_bob}");
        let message = from_bob["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("alice blocked bob"), "{message}");
        let from_alice = send_text(&mut alice1, 6, "bob", "still there?", None);
        assert_eq!(from_alice["error"]["code"], 120, "{from_alice}");
        // Nothing was stored or pushed.
        for ws in [&mut alice1, &mut alice2, &mut bob] {
            nothing_waiting(ws, 7);
        }
        let conv = first["result"]["conv"].as_str().unwrap().to_owned();
        let stored = history(&mut bob, 8, &conv);
        assert_eq!(stored["publications"].as_array().unwrap().len(), 1);

        // The API sees the same block and refuses the same way.
        let (status, body) = api(
            &engine,
            "POST",
            "/api/im/msg_send",
            Some(json!({"as_user": "bob", "to": "alice", "kind": "text", "data": {"text": "x"}})),
        );
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "blocked", "{body}");

        // blocks_list pages in id order.
        let (status, _) = api(
            &engine,
            "POST",
            "/api/im/block",
            Some(json!({"as_user": "alice", "user": "carol"})),
        );
        assert_eq!(status, 200);
        assert_eq!(
            read_json(&mut alice1),
            json!({"block": {"user": "carol", "blocked": true}}),
            "the API's block reaches every device of its user"
        );
        assert_eq!(
            read_json(&mut alice2),
            json!({"block": {"user": "carol", "blocked": true}})
        );
        let page = command(
            &mut alice1,
            json!({"id": 9, "method": "blocks_list", "params": {"limit": 1}}),
        );
        let users = &page["result"]["users"];
        assert_eq!(users.as_array().unwrap().len(), 1, "{page}");
        assert_eq!(users[0]["user"], "bob");
        assert!(users[0]["time_ms"].as_u64().unwrap() > 0);
        assert_eq!(page["result"]["next"], "bob");
        let page = command(
            &mut alice1,
            json!({"id": 10, "method": "blocks_list", "params": {"cursor": "bob", "limit": 1}}),
        );
        assert_eq!(page["result"]["users"][0]["user"], "carol", "{page}");
        let (status, body) = api(
            &engine,
            "POST",
            "/api/im/blocks_list",
            Some(json!({"as_user": "alice"})),
        );
        assert_eq!(status, 200);
        let listed: Vec<_> = body["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["user"].clone())
            .collect();
        assert_eq!(listed, [json!("bob"), json!("carol")], "{body}");
        assert!(body.get("next").is_none(), "{body}");

        // Unblocking restores DMs.
        let reply = block(&mut alice1, 11, "unblock", "bob");
        assert_eq!(
            reply["result"],
            json!({"user": "bob", "blocked": false, "changed": true})
        );
        assert_eq!(
            read_json(&mut alice2),
            json!({"block": {"user": "bob", "blocked": false}})
        );
        let after = send_text(&mut bob, 12, "alice", "back", None);
        assert_eq!(after["result"]["offset"], 2, "{after}");
        for ws in [&mut alice1, &mut alice2] {
            assert_eq!(next_push(ws)["offset"], 2);
        }
        let refused = block(&mut alice1, 13, "block", "alice");
        assert_eq!(refused["error"]["code"], 107, "{refused}");
        engine.shutdown();
    }
);

crate::e2e!(a_contacts_policy_takes_dms_from_contacts_only, |driver| {
    let engine = start(im_config(driver));
    let (mut dave, _) = im_connect(&engine, "dave", "", Some(0));
    let (mut erin, _) = im_connect(&engine, "erin", "", Some(1));
    let (mut stranger, _) = im_connect(&engine, "stranger", "", Some(2));

    let (status, body) = api(
        &engine,
        "POST",
        "/api/im/dm_policy",
        Some(json!({"as_user": "dave", "policy": "contacts"})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"user": "dave", "policy": "contacts", "changed": true})
    );
    let (_, body) = api(
        &engine,
        "POST",
        "/api/im/dm_policy",
        Some(json!({"as_user": "dave"})),
    );
    assert_eq!(body, json!({"user": "dave", "policy": "contacts"}));
    let (status, body) = api(
        &engine,
        "POST",
        "/api/im/dm_policy",
        Some(json!({"as_user": "dave", "policy": "backend"})),
    );
    assert_eq!(status, 400, "the backend policy is not built: {body}");

    let (status, body) = api(
        &engine,
        "POST",
        "/api/im/contacts",
        Some(json!({"as_user": "dave", "op": "add", "user": "erin"})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"user": "erin", "contact": true, "changed": true})
    );
    let (_, body) = api(
        &engine,
        "POST",
        "/api/im/contacts",
        Some(json!({"as_user": "dave", "op": "list"})),
    );
    assert_eq!(body["users"][0]["user"], "erin", "{body}");
    assert_eq!(body["users"].as_array().unwrap().len(), 1);

    let refused = send_text(&mut stranger, 1, "dave", "hi", None);
    assert_eq!(refused["error"]["code"], 103, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("contacts only") && message.contains("stranger"),
        "{message}"
    );
    nothing_waiting(&mut dave, 2);
    let allowed = send_text(&mut erin, 3, "dave", "hi", None);
    assert_eq!(allowed["result"]["offset"], 1, "{allowed}");
    assert_eq!(next_push(&mut dave)["sender"], "erin");
    // Dave writes to whom it likes; the stranger takes DMs from anyone.
    let out = send_text(&mut dave, 4, "stranger", "who?", None);
    assert_eq!(out["result"]["offset"], 1, "{out}");
    next_push(&mut stranger);

    // Removing the contact refuses again; anyone reopens.
    let (status, _) = api(
        &engine,
        "POST",
        "/api/im/contacts",
        Some(json!({"as_user": "dave", "op": "remove", "user": "erin"})),
    );
    assert_eq!(status, 200);
    let refused = send_text(&mut erin, 5, "dave", "again", None);
    assert_eq!(refused["error"]["code"], 103, "{refused}");
    let (status, _) = api(
        &engine,
        "POST",
        "/api/im/dm_policy",
        Some(json!({"as_user": "dave", "policy": "anyone"})),
    );
    assert_eq!(status, 200);
    let allowed = send_text(&mut erin, 6, "dave", "again", None);
    assert_eq!(allowed["result"]["offset"], 2, "{allowed}");
    engine.shutdown();
});

crate::e2e!(
    typing_reaches_the_peers_devices_once_per_interval_and_is_never_stored,
    |driver| {
        let mut config = im_config(driver);
        // Long enough that no repeat in this test is due.
        config.im.typing_interval = Duration::from_secs(60);
        let engine = start(config);
        let (mut alice1, _) = im_connect(&engine, "alice", "", Some(0));
        let (mut alice2, _) = im_connect(&engine, "alice", "", Some(1));
        let (mut bob1, _) = im_connect(&engine, "bob", "", Some(2));
        let (mut bob2, _) = im_connect(&engine, "bob", "", Some(1));
        let (mut carol, _) = im_connect(&engine, "carol", "", Some(2));

        let first = send_text(&mut alice1, 1, "bob", "hi", None);
        let conv = first["result"]["conv"].as_str().unwrap().to_owned();
        for ws in [&mut alice2, &mut bob1, &mut bob2] {
            next_push(ws);
        }
        let before = history(&mut bob1, 2, &conv);
        let commits_before = store_commits(&engine);

        let reply = typing(&mut alice1, 3, &conv, "typing");
        assert_eq!(reply["result"], json!({}), "{reply}");
        let signal = json!({"typing": {"conv": conv, "user": "alice", "state": "typing"}});
        for ws in [&mut bob1, &mut bob2] {
            assert_eq!(read_json(ws), signal, "the peer's devices on two shards");
        }
        // Not the typist's own other connection.
        nothing_waiting(&mut alice2, 4);

        // A repeat within the interval is dropped, answered all the same.
        let reply = typing(&mut alice1, 5, &conv, "typing");
        assert_eq!(reply["result"], json!({}), "{reply}");
        nothing_waiting(&mut bob1, 6);
        nothing_waiting(&mut bob2, 6);
        // A stop right after a delivered signal passes; another does not.
        typing(&mut alice1, 7, &conv, "stopped");
        let stopped = json!({"typing": {"conv": conv, "user": "alice", "state": "stopped"}});
        for ws in [&mut bob1, &mut bob2] {
            assert_eq!(read_json(ws), stopped);
        }
        typing(&mut alice1, 8, &conv, "stopped");
        typing(&mut alice1, 9, &conv, "typing");
        nothing_waiting(&mut bob1, 10);
        // Each connection has its own limit.
        typing(&mut alice2, 11, &conv, "typing");
        for ws in [&mut bob1, &mut bob2] {
            assert_eq!(read_json(ws), signal);
        }
        nothing_waiting(&mut alice1, 12);

        // Never stored: the history and its last offset are as before, and
        // the store's writer committed nothing meanwhile.
        let after = history(&mut bob1, 13, &conv);
        assert_eq!(after, before, "typing left no entry");
        assert_eq!(
            store_commits(&engine),
            commits_before,
            "typing never reaches the writer"
        );

        // Not a member: 123, and nothing reaches the pair.
        let refused = typing(&mut carol, 14, &conv, "typing");
        assert_eq!(refused["error"]["code"], 123, "{refused}");
        let refused = typing(&mut carol, 15, "grp:nosuchgroup", "typing");
        assert_eq!(refused["error"]["code"], 123, "{refused}");
        let refused = typing(&mut carol, 16, "news", "typing");
        assert_eq!(refused["error"]["code"], 107, "{refused}");
        let refused = typing(&mut carol, 17, &conv, "dancing");
        assert_eq!(refused["error"]["code"], 107, "{refused}");
        nothing_waiting(&mut bob1, 18);
        engine.shutdown();
    }
);

/// Creates group `conv` as the system, owned by `owner`, with `members`,
/// through the engine's own store (the engine's group commands are another
/// part's).
fn create_group(engine: &ringcast_engine::Engine, conv: &str, owner: &str, members: &[&str]) {
    use ringcast_protocol::envelope::{EncodedPush, Envelope};
    use ringcast_store::{Durability, GroupActor, GroupOp, GroupOpRequest};
    let envelope = Envelope {
        id: 1,
        offset: 0,
        epoch: 0,
        channel: conv.to_owned(),
        sender: String::new(),
        time_ms: 1,
        data_is_json: true,
        data: br#"{"kind":"member","data":{"op":"create"}}"#.to_vec(),
    };
    let request = GroupOpRequest {
        conv: conv.to_owned(),
        actor: GroupActor::System,
        op: GroupOp::Create {
            owner: owner.to_owned(),
            name: "team".to_owned(),
            info: String::new(),
            members: members.iter().map(|user| (*user).to_owned()).collect(),
            members_max: None,
            history_from_join: false,
            members_can_invite: false,
        },
        push: EncodedPush::encode(&envelope),
        client_msg_id: None,
        durability: Durability::Sync,
    };
    let mut receiver = engine.shared.store.group_op(request).expect("queued");
    let mut answer = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            answer = receiver.try_recv().expect("answered");
            answer.is_some()
        }),
        "the group was created in time"
    );
    answer.unwrap().expect("created");
}

crate::e2e!(typing_in_a_group_reaches_its_other_members_only, |driver| {
    let mut config = im_config(driver);
    config.im.typing_interval = Duration::from_secs(60);
    let engine = start(config);
    create_group(&engine, "grp:team", "alice", &["bob", "carol"]);
    let (mut alice1, _) = im_connect(&engine, "alice", "", Some(0));
    let (mut alice2, _) = im_connect(&engine, "alice", "", Some(1));
    let (mut bob, _) = im_connect(&engine, "bob", "", Some(1));
    let (mut carol, _) = im_connect(&engine, "carol", "", Some(2));
    let (mut dave, _) = im_connect(&engine, "dave", "", Some(2));

    let reply = typing(&mut alice1, 1, "grp:team", "typing");
    assert_eq!(reply["result"], json!({}), "{reply}");
    let signal = json!({"typing": {"conv": "grp:team", "user": "alice", "state": "typing"}});
    for ws in [&mut bob, &mut carol] {
        assert_eq!(read_json(ws), signal, "every other member, on two shards");
    }
    nothing_waiting(&mut alice2, 2);
    nothing_waiting(&mut dave, 2);
    // From a member on another shard, which reads the list itself.
    typing(&mut bob, 3, "grp:team", "typing");
    let from_bob = json!({"typing": {"conv": "grp:team", "user": "bob", "state": "typing"}});
    for ws in [&mut alice1, &mut alice2, &mut carol] {
        assert_eq!(read_json(ws), from_bob);
    }
    let refused = typing(&mut dave, 4, "grp:team", "typing");
    assert_eq!(refused["error"]["code"], 123, "{refused}");
    for ws in [&mut alice1, &mut bob, &mut carol] {
        nothing_waiting(ws, 5);
    }
    engine.shutdown();
});
