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
    assert_eq!(status, 400, "no im.dm_policy_proxy to ask: {body}");

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
    group_op(
        engine,
        conv,
        ringcast_store::GroupOp::Create {
            owner: owner.to_owned(),
            name: "team".to_owned(),
            info: String::new(),
            members: members.iter().map(|user| (*user).to_owned()).collect(),
            members_max: None,
            history_from_join: false,
            members_can_invite: false,
        },
    );
}

/// Applies `op` to group `conv` as the system, through the engine's store.
fn group_op(engine: &ringcast_engine::Engine, conv: &str, op: ringcast_store::GroupOp) {
    use ringcast_protocol::envelope::{EncodedPush, Envelope};
    use ringcast_store::{Durability, GroupActor, GroupOpRequest};
    let envelope = Envelope {
        id: 1,
        offset: 0,
        epoch: 0,
        channel: conv.to_owned(),
        sender: String::new(),
        time_ms: 1,
        data_is_json: true,
        data: br#"{"kind":"member","data":{"op":"test"}}"#.to_vec(),
    };
    let request = GroupOpRequest {
        conv: conv.to_owned(),
        actor: GroupActor::System,
        op,
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
        "the group change was stored in time"
    );
    answer.unwrap().expect("stored");
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

/// `counter` of shard `shard` (`/api/stats`).
fn shard_stat(engine: &ringcast_engine::Engine, shard: usize, counter: &str) -> u64 {
    let (_, stats) = api(engine, "GET", "/api/stats", None);
    stats["shards"][shard][counter]
        .as_u64()
        .unwrap_or_else(|| panic!("no {counter} in {stats}"))
}

/// The typing signal of `user` in `conv`.
fn typing_signal(conv: &str, user: &str) -> Value {
    json!({"typing": {"conv": conv, "user": user, "state": "typing"}})
}

crate::e2e!(
    cycling_conversations_does_not_get_past_a_connections_typing_bucket,
    |driver| {
        let mut config = im_config(driver);
        // No conversation's interval ever comes due here: only the bucket
        // over all of them limits.
        config.im.typing_interval = Duration::from_secs(60);
        config.im.typing_rate = 1;
        config.im.typing_burst = 3;
        let engine = start(config);
        // More conversations than one connection's interval remembers (32),
        // the way around a per-conversation limit alone.
        let convs: Vec<String> = (0..40).map(|i| format!("grp:cycle{i:02}")).collect();
        for conv in &convs {
            create_group(&engine, conv, "alice", &["bob"]);
        }
        create_group(&engine, "grp:marker", "alice", &["bob"]);
        let (mut alice, _) = im_connect(&engine, "alice", "", Some(0));
        let (mut bob, _) = im_connect(&engine, "bob", "", Some(1));

        let started = std::time::Instant::now();
        let mut id = 1;
        for _round in 0..2 {
            for conv in &convs {
                let reply = typing(&mut alice, id, conv, "typing");
                assert_eq!(reply["result"], json!({}), "dropped or not: {reply}");
                id += 1;
            }
        }
        let cycling_s = started.elapsed().as_secs();
        // The bucket's share over the cycling: its burst, and one a second.
        let allowed = 3 + cycling_s + 1;

        // A last signal, once a token is back, on the same mesh lane: what
        // came before it is everything that got through.
        std::thread::sleep(Duration::from_millis(1100));
        let reply = typing(&mut alice, id, "grp:marker", "typing");
        assert_eq!(reply["result"], json!({}));
        let mut delivered = 0u64;
        loop {
            let message = read_json(&mut bob);
            assert!(message["typing"].is_object(), "only typing: {message}");
            if message["typing"]["conv"] == "grp:marker" {
                break;
            }
            assert_eq!(message["typing"]["user"], "alice");
            delivered += 1;
        }
        assert!(
            (3..=allowed).contains(&delivered),
            "80 signals over 40 conversations in {cycling_s} s: {delivered} got through, \
             the burst of 3 and at most {allowed}"
        );
        assert!(shard_stat_sum(&engine, "im_typing_dropped_total") >= 80 - allowed);
        // Dropped before any lookup: the store read one group per signal
        // that got through, and the marker's.
        assert!(shard_stat_sum(&engine, "im_typing_group_reads_total") <= allowed + 1);
        engine.shutdown();
    }
);

/// Reads until the reply `id`, returning it and what came before it.
fn reply_among(ws: &mut Ws, id: u64) -> (Value, Vec<Value>) {
    let mut before = Vec::new();
    loop {
        let message = read_json(ws);
        if message["id"] == id {
            return (message, before);
        }
        before.push(message);
    }
}

crate::e2e!(
    group_typing_is_one_mesh_event_per_shard_one_read_per_group_and_none_past_the_size_gate,
    |driver| {
        let mut config = im_config(driver);
        config.im.typing_interval = Duration::from_secs(60);
        config.im.group_typing_members_max = 20;
        let engine = start(config);
        let small: Vec<String> = (0..12).map(|i| format!("m{i:02}")).collect();
        let small_refs: Vec<&str> = small.iter().map(String::as_str).collect();
        create_group(&engine, "grp:small", "alice", &small_refs);
        let large: Vec<String> = (0..25).map(|i| format!("l{i:02}")).collect();
        let large_refs: Vec<&str> = large.iter().map(String::as_str).collect();
        create_group(&engine, "grp:large", "alice", &large_refs);

        let (mut alice, _) = im_connect(&engine, "alice", "", Some(0));
        // Six members on shard 1, six on shard 2.
        let mut members: Vec<Ws> = small
            .iter()
            .enumerate()
            .map(|(i, user)| im_connect(&engine, user, "", Some(1 + (i as u64) / 6)).0)
            .collect();
        let (mut outsider, _) = im_connect(&engine, "l00", "", Some(1));

        // Six members of shard 1 type at once, before any reply is read:
        // shard 1 reads the group once for all six.
        for (i, ws) in members.iter_mut().take(6).enumerate() {
            send_json(
                ws,
                json!({"id": 100 + i, "method": "typing",
                       "params": {"conv": "grp:small", "state": "typing"}}),
            );
        }
        let mut heard: Vec<Vec<Value>> = vec![Vec::new(); 12];
        for (i, ws) in members.iter_mut().take(6).enumerate() {
            let (reply, before) = reply_among(ws, 100 + i as u64);
            assert_eq!(reply["result"], json!({}), "{reply}");
            heard[i].extend(before);
        }
        assert_eq!(
            shard_stat(&engine, 1, "im_typing_group_reads_total"),
            1,
            "six signals, one read of the group"
        );
        // Each went to shard 0 (alice) and shard 2 (six members): two mesh
        // events per signal, not one per member.
        assert_eq!(shard_stat(&engine, 1, "im_typing_mesh_events_total"), 12);
        // Every member but the typist heard each signal.
        let typists: Vec<Value> = small[..6]
            .iter()
            .map(|user| typing_signal("grp:small", user))
            .collect();
        let mut from_alice_ws = Vec::new();
        for _ in 0..6 {
            from_alice_ws.push(read_json(&mut alice));
        }
        for signal in &typists {
            assert!(from_alice_ws.contains(signal), "alice heard {signal}");
        }
        for (i, ws) in members.iter_mut().enumerate() {
            let expected = if i < 6 { 5 } else { 6 };
            while heard[i].len() < expected {
                heard[i].push(read_json(ws));
            }
            for (j, signal) in typists.iter().enumerate() {
                assert_eq!(
                    heard[i].contains(signal),
                    i != j,
                    "member {i} and the signal of member {j}: {:?}",
                    heard[i]
                );
            }
        }

        // Alice's signal: one mesh event to each of the two other shards.
        let reply = typing(&mut alice, 1, "grp:small", "typing");
        assert_eq!(reply["result"], json!({}), "{reply}");
        let signal = typing_signal("grp:small", "alice");
        for ws in members.iter_mut() {
            assert_eq!(read_json(ws), signal);
        }
        assert_eq!(shard_stat(&engine, 0, "im_typing_mesh_events_total"), 2);
        nothing_waiting(&mut outsider, 2);

        // Past the size gate: answered, counted as dropped, sent nowhere,
        // and the members are never read (only the group's record).
        let dropped = shard_stat_sum(&engine, "im_typing_dropped_total");
        let reply = typing(&mut alice, 3, "grp:large", "typing");
        assert_eq!(reply["result"], json!({}), "{reply}");
        assert_eq!(
            shard_stat_sum(&engine, "im_typing_dropped_total"),
            dropped + 1
        );
        assert_eq!(shard_stat(&engine, 0, "im_typing_mesh_events_total"), 2);
        nothing_waiting(&mut outsider, 4);
        for ws in members.iter_mut() {
            nothing_waiting(ws, 5);
        }
        engine.shutdown();
    }
);

crate::e2e!(
    a_muted_member_may_not_type_and_mute_all_silences_plain_members_only,
    |driver| {
        use ringcast_store::{GroupOp, GroupRole};
        let mut config = im_config(driver);
        config.im.typing_interval = Duration::from_secs(60);
        let engine = start(config);
        create_group(&engine, "grp:quiet", "alice", &["bob", "carol", "dave"]);
        group_op(
            &engine,
            "grp:quiet",
            GroupOp::Role {
                user: "dave".to_owned(),
                role: GroupRole::Admin,
            },
        );
        let hour_ahead = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            + 3_600_000;
        group_op(
            &engine,
            "grp:quiet",
            GroupOp::Mute {
                user: "bob".to_owned(),
                until_ms: hour_ahead,
            },
        );
        group_op(&engine, "grp:quiet", GroupOp::MuteAll);
        let (mut alice, _) = im_connect(&engine, "alice", "", Some(0));
        let (mut bob, _) = im_connect(&engine, "bob", "", Some(1));
        let (mut carol, _) = im_connect(&engine, "carol", "", Some(2));
        let (mut dave, _) = im_connect(&engine, "dave", "", Some(1));

        // Muted alone: 122, saying until when.
        let refused = typing(&mut bob, 1, "grp:quiet", "typing");
        assert_eq!(refused["error"]["code"], 122, "{refused}");
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("muted") && message.contains(&hour_ahead.to_string()),
            "{message}"
        );
        // A plain member under mute-all: 122 too.
        let refused = typing(&mut carol, 2, "grp:quiet", "typing");
        assert_eq!(refused["error"]["code"], 122, "{refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("mute-all"),
            "{refused}"
        );
        for ws in [&mut alice, &mut dave] {
            nothing_waiting(ws, 3);
        }
        // An admin types under mute-all; muted members still hear it.
        let reply = typing(&mut dave, 4, "grp:quiet", "typing");
        assert_eq!(reply["result"], json!({}), "{reply}");
        for ws in [&mut alice, &mut bob, &mut carol] {
            assert_eq!(read_json(ws), typing_signal("grp:quiet", "dave"));
        }
        // So does the owner.
        let reply = typing(&mut alice, 5, "grp:quiet", "typing");
        assert_eq!(reply["result"], json!({}), "{reply}");
        for ws in [&mut bob, &mut carol, &mut dave] {
            assert_eq!(read_json(ws), typing_signal("grp:quiet", "alice"));
        }

        // The API twin, for a user: the same checks and the same signal.
        let api_typing = |as_user: &str, conv: &str| {
            let body = json!({"as_user": as_user, "conv": conv});
            api(&engine, "POST", "/api/im/typing", Some(body))
        };
        let (status, reply) = api_typing("bob", "grp:quiet");
        assert_eq!(status, 400, "{reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains("muted"),
            "{reply}"
        );
        let (status, reply) = api_typing("mallory", "grp:quiet");
        assert_eq!(status, 403, "a stranger: {reply}");
        let (status, reply) = api_typing("dave", "grp:quiet");
        assert_eq!((status, &reply), (200, &json!({})), "{reply}");
        for ws in [&mut alice, &mut bob, &mut carol] {
            assert_eq!(read_json(ws), typing_signal("grp:quiet", "dave"));
        }
        nothing_waiting(&mut dave, 6);
        engine.shutdown();
    }
);

// `POST /api/im/typing` in a DM: the peer's devices on every shard get
// the signal, the typist's own connections do not, nothing is stored; a
// user outside the pair is refused, and so is an unknown state.
crate::e2e!(
    the_api_types_for_a_user_in_a_dm_and_stores_nothing,
    |driver| {
        let engine = start(im_config(driver));
        let (mut alice, _) = im_connect(&engine, "alice", "", Some(0));
        let (mut bob1, _) = im_connect(&engine, "bob", "", Some(1));
        let (mut bob2, _) = im_connect(&engine, "bob", "", Some(2));
        let first = send_text(&mut alice, 1, "bob", "hi", None);
        let conv = first["result"]["conv"].as_str().unwrap().to_owned();
        for ws in [&mut bob1, &mut bob2] {
            next_push(ws);
        }
        let commits_before = store_commits(&engine);
        let body = json!({"as_user": "alice", "conv": conv, "state": "stopped"});
        let (status, reply) = api(&engine, "POST", "/api/im/typing", Some(body));
        assert_eq!((status, &reply), (200, &json!({})), "{reply}");
        let stopped = json!({"typing": {"conv": conv, "user": "alice", "state": "stopped"}});
        for ws in [&mut bob1, &mut bob2] {
            assert_eq!(read_json(ws), stopped, "the peer's devices");
        }
        nothing_waiting(&mut alice, 2);
        assert_eq!(
            store_commits(&engine),
            commits_before,
            "typing is never stored"
        );
        let body = json!({"as_user": "carol", "conv": conv});
        let (status, reply) = api(&engine, "POST", "/api/im/typing", Some(body));
        assert_eq!(status, 403, "not one of the pair: {reply}");
        let body = json!({"as_user": "alice", "conv": conv, "state": "dancing"});
        let (status, reply) = api(&engine, "POST", "/api/im/typing", Some(body));
        assert_eq!(status, 400, "{reply}");
        engine.shutdown();
    }
);

/// The DM policy backend of the tests: by the sender, `friend*` allowed,
/// `pest*` denied with a message, `slow*` answered after the timeout.
fn dm_policy_answer(body: &Value) -> (Duration, Value) {
    let sender = body["user"].as_str().unwrap_or_default();
    if sender.starts_with("pest") {
        let message = format!("{sender} may not write to {}", body["to"].as_str().unwrap());
        (
            Duration::ZERO,
            json!({"error": {"code": 403, "message": message}}),
        )
    } else if sender.starts_with("slow") {
        (Duration::from_millis(1500), json!({"result": {}}))
    } else {
        (Duration::ZERO, json!({"result": {}}))
    }
}

fn dm_policy_config(
    driver: ringcast_engine::config::Driver,
    url: &str,
) -> ringcast_engine::config::Config {
    let mut config = im_config(driver);
    config.proxies = vec![ringcast_engine::config::Proxy {
        name: "app".into(),
        url: url.into(),
        timeout: Duration::from_millis(300),
        concurrency_max: 8,
    }];
    config.im.dm_policy_proxy = "app".into();
    config.im.dm_policy_cache = Duration::from_secs(60);
    config
}

fn set_backend_policy(engine: &ringcast_engine::Engine, user: &str) {
    let (status, body) = api(
        engine,
        "POST",
        "/api/im/dm_policy",
        Some(json!({"as_user": user, "policy": "backend"})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["policy"], "backend", "{body}");
}

crate::e2e!(
    a_backend_policy_asks_the_app_once_per_new_pair_and_fails_closed,
    |driver| {
        let backend = crate::proxy::Backend::start(dm_policy_answer);
        let dir = tempfile::tempdir().unwrap();
        let mut config = dm_policy_config(driver, &backend.url);
        config.server.data_dir = dir.path().to_path_buf();
        let engine = ringcast_engine::Engine::start(config.clone()).expect("starts");
        set_backend_policy(&engine, "dave");
        let (_, read) = api(
            &engine,
            "POST",
            "/api/im/dm_policy",
            Some(json!({"as_user": "dave"})),
        );
        assert_eq!(read["policy"], "backend", "{read}");
        let (mut dave, _) = im_connect(&engine, "dave", "", Some(0));
        let (mut friend, _) = im_connect(&engine, "friend", "", Some(1));
        let (mut pest, _) = im_connect(&engine, "pest", "", Some(2));
        let (mut slow, _) = im_connect(&engine, "slow", "", Some(1));
        let calls_to_dave = || {
            backend
                .calls()
                .into_iter()
                .filter(|(_, body)| body["to"] == "dave")
                .map(|(_, body)| body)
                .collect::<Vec<Value>>()
        };

        // Allowed: the conversation starts; the backend heard who and to whom.
        let first = send_text(&mut friend, 1, "dave", "hi", None);
        assert_eq!(first["result"]["offset"], 1, "{first}");
        assert_eq!(next_push(&mut dave)["sender"], "friend");
        let calls = calls_to_dave();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0]["user"], "friend");
        assert!(calls[0]["client"].as_str().is_some_and(|c| !c.is_empty()));
        // The conversation exists: its messages ask nothing, either way.
        let more = send_text(&mut friend, 2, "dave", "more", None);
        assert_eq!(more["result"]["offset"], 2, "{more}");
        next_push(&mut dave);
        let back = send_text(&mut dave, 3, "friend", "back", None);
        assert_eq!(back["result"]["offset"], 3, "{back}");
        next_push(&mut friend);
        assert_eq!(calls_to_dave().len(), 1, "asked once for the pair");

        // Denied: 103 with the backend's message, nothing stored; the
        // denial is kept for the pair, so a retry asks nothing.
        let refused = send_text(&mut pest, 4, "dave", "hey", None);
        assert_eq!(refused["error"]["code"], 103, "{refused}");
        assert_eq!(refused["error"]["message"], "pest may not write to dave");
        let refused = send_text(&mut pest, 5, "dave", "hey again", None);
        assert_eq!(refused["error"]["code"], 103, "{refused}");
        assert_eq!(calls_to_dave().len(), 2, "the denial was reused");
        nothing_waiting(&mut dave, 6);

        // No answer in time: fail closed (116), nothing stored, and a
        // failure is not kept: the next message asks again.
        let refused = send_text(&mut slow, 8, "dave", "hi", None);
        assert_eq!(refused["error"]["code"], 116, "{refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("DM policy backend"),
            "{refused}"
        );
        let refused = send_text(&mut slow, 9, "dave", "hi", None);
        assert_eq!(refused["error"]["code"], 116, "{refused}");
        assert_eq!(calls_to_dave().len(), 4);
        nothing_waiting(&mut dave, 10);

        // The API's msg_send asks the same backend, and shares the answers.
        let (status, body) = api(
            &engine,
            "POST",
            "/api/im/msg_send",
            Some(json!({"as_user": "pest", "to": "dave", "kind": "text", "data": {"text": "x"}})),
        );
        assert_eq!(status, 403, "{body}");
        assert_eq!(calls_to_dave().len(), 4, "pest's denial is node-wide");
        let (status, body) = api(
            &engine,
            "POST",
            "/api/im/msg_send",
            Some(
                json!({"as_user": "friend2", "to": "dave", "kind": "text", "data": {"text": "x"}}),
            ),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["offset"], 1, "{body}");
        assert_eq!(next_push(&mut dave)["sender"], "friend2");
        let calls = calls_to_dave();
        assert_eq!(calls.len(), 5);
        assert_eq!(calls[4]["user"], "friend2");

        // The policy is the recipient's: dave writes to pest freely; the
        // conversation then exists, and pest's answers in it ask nothing.
        let out = send_text(&mut dave, 11, "pest", "what?", None);
        assert_eq!(out["result"]["offset"], 1, "{out}");
        next_push(&mut pest);
        let reply = send_text(&mut pest, 12, "dave", "sorry", None);
        assert_eq!(reply["result"]["offset"], 2, "{reply}");
        assert_eq!(next_push(&mut dave)["sender"], "pest");
        assert_eq!(calls_to_dave().len(), 5);
        engine.shutdown();

        // After a restart this process knows no pair: existing
        // conversations are found in the store and not asked about; a new
        // pair is.
        let engine = ringcast_engine::Engine::start(config).expect("restarts");
        let (mut dave, _) = im_connect(&engine, "dave", "", Some(0));
        let (mut pest, _) = im_connect(&engine, "pest", "", Some(2));
        let again = send_text(&mut pest, 1, "dave", "still here", None);
        assert_eq!(again["result"]["offset"], 3, "{again}");
        assert_eq!(next_push(&mut dave)["sender"], "pest");
        assert_eq!(
            calls_to_dave().len(),
            5,
            "an existing conversation asks nothing"
        );
        let (mut pest2, _) = im_connect(&engine, "pest2", "", Some(1));
        let refused = send_text(&mut pest2, 2, "dave", "hi", None);
        assert_eq!(refused["error"]["code"], 103, "{refused}");
        assert_eq!(calls_to_dave().len(), 6);
        engine.shutdown();

        // An unreachable backend: fail closed too (117), nothing stored.
        let engine = start(dm_policy_config(driver, "http://127.0.0.1:1/dm"));
        set_backend_policy(&engine, "dave");
        let (mut dave, _) = im_connect(&engine, "dave", "", Some(0));
        let (mut friend, _) = im_connect(&engine, "friend", "", Some(1));
        let refused = send_text(&mut friend, 1, "dave", "hi", None);
        assert_eq!(refused["error"]["code"], 117, "{refused}");
        nothing_waiting(&mut dave, 2);
        let (status, body) = api(
            &engine,
            "POST",
            "/api/im/conv_list",
            Some(json!({"as_user": "dave"})),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["convs"], json!([]), "nothing was stored");
        engine.shutdown();
    }
);

crate::e2e!(
    pipelined_first_dms_keep_their_order_while_the_backend_decides,
    |driver| {
        // Each call answers sooner than the one before it: checks that ran
        // side by side would settle in reverse order.
        let answered = std::sync::atomic::AtomicU64::new(0);
        let backend = crate::proxy::Backend::start(move |body| {
            let n = answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let delay = Duration::from_millis(200 - 10 * n.min(19));
            if body["user"] == "pest" {
                let denied = json!({"error": {"code": 403, "message": "no"}});
                return (delay, denied);
            }
            (delay, json!({"result": {}}))
        });
        let mut config = dm_policy_config(driver, &backend.url);
        config.proxies[0].timeout = Duration::from_secs(5);
        config.proxies[0].concurrency_max = 64;
        let engine = start(config);
        set_backend_policy(&engine, "dave");
        let (mut dave, _) = im_connect(&engine, "dave", "", Some(0));
        let (mut friend, _) = im_connect(&engine, "friend", "", Some(1));

        // 20 sends to a pair the process does not know, none waiting for
        // the one before.
        const SENDS: u64 = 20;
        let texts: Vec<String> = (1..=SENDS).map(|i| format!("m{i}")).collect();
        for (id, text) in (1..).zip(&texts) {
            send_json(
                &mut friend,
                json!({"id": id, "method": "msg_send",
                       "params": {"to": "dave", "kind": "text", "data": {"text": text}}}),
            );
        }
        let mut offsets = vec![0; SENDS as usize];
        let mut own_pushes = Vec::new();
        let mut conv = String::new();
        while offsets.contains(&0) || own_pushes.len() < texts.len() {
            let message = read_json(&mut friend);
            if let Some(push) = message.get("push") {
                own_pushes.push(push["data"]["data"]["text"].clone());
                continue;
            }
            let id = message["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{message}"));
            if let Some(name) = message["result"]["conv"].as_str() {
                conv = name.to_owned();
            }
            let offset = message["result"]["offset"].as_u64();
            offsets[id as usize - 1] = offset.unwrap_or_else(|| panic!("not stored: {message}"));
        }
        let in_order: Vec<u64> = (1..=SENDS).collect();
        assert_eq!(
            offsets, in_order,
            "each send's offset is its place in the send order"
        );
        let texts: Vec<Value> = texts.into_iter().map(Value::from).collect();
        assert_eq!(own_pushes, texts, "the sender's own pushes");
        let pushes: Vec<Value> = (0..SENDS)
            .map(|_| next_push(&mut dave)["data"]["data"]["text"].clone())
            .collect();
        assert_eq!(pushes, texts, "the peer's pushes come in the send order");
        let stored = history(&mut dave, 1, &conv);
        let stored: Vec<Value> = stored["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["data"]["data"]["text"].clone())
            .collect();
        assert_eq!(stored, texts, "the history holds them in the send order");
        let calls = backend.calls();
        assert_eq!(
            calls.len(),
            1,
            "the later sends took the first one's answer: {calls:?}"
        );

        // Denied: the sends queued behind the first get its refusal.
        let (mut pest, _) = im_connect(&engine, "pest", "", Some(1));
        for id in 1..=3 {
            send_json(
                &mut pest,
                json!({"id": id, "method": "msg_send",
                       "params": {"to": "dave", "kind": "text", "data": {"text": "hey"}}}),
            );
        }
        for id in 1..=3 {
            let refused = read_json(&mut pest);
            assert_eq!(refused["id"], id, "{refused}");
            assert_eq!(refused["error"]["code"], 103, "{refused}");
        }
        assert_eq!(backend.calls().len(), 2, "asked once for pest");
        nothing_waiting(&mut dave, 2);
        engine.shutdown();
    }
);
