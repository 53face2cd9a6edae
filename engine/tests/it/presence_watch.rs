//! Issue 13, presence: watchers see a watched user's online and offline
//! changes whatever shard either side is on, offline only after the
//! user's last connection closed and the grace passed, never for a
//! reconnect within the grace; unwatch and the end of a watcher, the watch
//! limit (106), the query and its API twin (`POST /api/presence/users`), a
//! binary watcher, a burst over full mesh lanes (the resync), anonymous
//! connections (103), over real sockets (tungstenite, ureq) on two shards.
//! The grace's state machine is tested on a virtual clock in
//! `engine/src/presence/book.rs`.

use std::time::Duration;

use crate::e2e;
use crate::util::*;
use ringcast_protocol::client::{
    decode_server_binary, encode_binary_command, BinaryCommand, BinaryCommandBody, PresenceCommand,
    PresenceState, ServerMessage, SUBPROTOCOL_BINARY,
};
use serde_json::{json, Value};
use tungstenite::Message;

const GRACE_MS: u64 = 300;

fn presence_config(driver: ringcast_engine::config::Driver, grace_ms: u64) -> TestEngine {
    let mut config = config(driver, 2);
    config.im.presence_offline_grace = Duration::from_millis(grace_ms);
    config.im.presence_watch_max = 100;
    start(config)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Connects `prefix<i>` users until one lands on `shard`; returns the
/// socket and the user.
fn connect_on_shard(engine: &TestEngine, prefix: &str, shard: u64) -> (Ws, String) {
    for i in 0..200 {
        let user = format!("{prefix}{i}");
        let (ws, connect) = connect(engine, &user);
        if connect["connect"]["shard"] == shard {
            return (ws, user);
        }
    }
    panic!("no connection landed on shard {shard}");
}

/// The next presence event, skipping nothing else: any other message
/// first is a failure.
fn next_presence(ws: &mut Ws) -> Value {
    let message = read_json(ws);
    message
        .get("presence")
        .cloned()
        .unwrap_or_else(|| panic!("expected a presence event, got {message}"))
}

fn watch(ws: &mut Ws, id: u64, users: &[&str]) -> Value {
    command(
        ws,
        json!({"id": id, "method": "presence_watch", "params": {"users": users}}),
    )
}

fn query(ws: &mut Ws, id: u64, users: &[&str]) -> Vec<Value> {
    let reply = command(
        ws,
        json!({"id": id, "method": "presence_query", "params": {"users": users}}),
    );
    reply["result"]["users"]
        .as_array()
        .unwrap_or_else(|| panic!("query reply: {reply}"))
        .clone()
}

/// Two pings answered in turn: the watcher's shard has run a whole turn
/// (its mesh drained) since the first was sent, so a presence event
/// handed to it before then would have come first.
fn no_event_pending(ws: &mut Ws, id: u64) {
    for id in [id, id + 1] {
        let reply = command(ws, json!({"id": id, "method": "ping"}));
        assert_eq!(reply["result"], json!({}), "{reply}");
    }
}

/// Closes `ws` and waits for the server's close.
fn close(mut ws: Ws) {
    ws.close(None).unwrap();
    read_close_code(&mut ws);
}

e2e!(
    a_watcher_sees_a_user_on_another_shard_go_online_and_offline,
    |driver| {
        let engine = presence_config(driver, GRACE_MS);
        let (mut watcher, _) = connect_on_shard(&engine, "w", 0);
        let candidates: Vec<String> = (0..60).map(|i| format!("b{i}")).collect();
        let names: Vec<&str> = candidates.iter().map(String::as_str).collect();
        let reply = watch(&mut watcher, 1, &names);
        let states = reply["result"]["users"].as_array().expect("states");
        assert_eq!(states.len(), names.len());
        assert!(states
            .iter()
            .all(|s| s["online"] == false && s["last_seen_ms"] == 0));
        // Candidates connect until one lands on shard 1; all stay open.
        let mut open = Vec::new();
        let mut on_other = None;
        for name in &names {
            let (ws, connect) = crate::util::connect(&engine, name);
            let event = next_presence(&mut watcher);
            assert_eq!(
                event,
                json!({"user": name, "online": true, "last_seen_ms": 0})
            );
            if connect["connect"]["shard"] == 1 {
                on_other = Some((ws, name.to_string()));
                break;
            }
            open.push(ws);
        }
        let (ws, user) = on_other.expect("a candidate on shard 1");
        let closed_at = unix_ms();
        close(ws);
        let event = next_presence(&mut watcher);
        let told_at = unix_ms();
        assert_eq!(event["user"], user.as_str());
        assert_eq!(event["online"], false);
        let last_seen = event["last_seen_ms"].as_u64().expect("last seen");
        assert!(
            last_seen >= closed_at && last_seen <= told_at,
            "last seen {last_seen} is when the connection closed ({closed_at}..{told_at})"
        );
        assert!(
            told_at >= last_seen + GRACE_MS,
            "reported after the grace: last seen {last_seen}, told at {told_at}"
        );
        // The other candidates are still online: nothing more came.
        no_event_pending(&mut watcher, 50);
        let states = query(&mut watcher, 60, &[&user]);
        assert_eq!(
            states,
            [json!({"user": user, "online": false, "last_seen_ms": last_seen})]
        );
        drop(open);
    }
);

e2e!(offline_only_after_the_last_device_closes, |driver| {
    let engine = presence_config(driver, GRACE_MS);
    let (mut watcher, _) = connect(&engine, "watcher");
    watch(&mut watcher, 1, &["dana"]);
    let (phone, _) = connect(&engine, "dana");
    assert_eq!(next_presence(&mut watcher)["online"], true);
    let (laptop, _) = connect(&engine, "dana");
    close(phone);
    std::thread::sleep(Duration::from_millis(GRACE_MS * 3));
    // No event: the laptop is still connected.
    no_event_pending(&mut watcher, 10);
    let states = query(&mut watcher, 20, &["dana"]);
    assert_eq!(states[0]["online"], true, "{states:?}");
    close(laptop);
    let event = next_presence(&mut watcher);
    assert_eq!(event["user"], "dana");
    assert_eq!(event["online"], false);
    assert!(event["last_seen_ms"].as_u64().unwrap() > 0);
});

e2e!(a_reconnect_within_the_grace_is_never_reported, |driver| {
    let grace_ms = 2_000;
    let engine = presence_config(driver, grace_ms);
    let (mut watcher, _) = connect(&engine, "watcher");
    watch(&mut watcher, 1, &["erin"]);
    let (ws, _) = connect(&engine, "erin");
    assert_eq!(next_presence(&mut watcher)["online"], true);
    close(ws);
    let (ws, _) = connect(&engine, "erin");
    // Past the first close's deadline.
    std::thread::sleep(Duration::from_millis(grace_ms + 500));
    no_event_pending(&mut watcher, 10);
    let states = query(&mut watcher, 20, &["erin"]);
    assert_eq!(
        states,
        [json!({"user": "erin", "online": true, "last_seen_ms": 0})]
    );
    close(ws);
    let event = next_presence(&mut watcher);
    assert_eq!(
        (event["user"].clone(), event["online"].clone()),
        (json!("erin"), json!(false))
    );
});

e2e!(
    unwatch_stops_the_events_and_watches_end_with_the_connection,
    |driver| {
        let engine = presence_config(driver, 0);
        let (mut watcher, _) = connect(&engine, "watcher");
        watch(&mut watcher, 1, &["frank", "gus"]);
        let reply = command(
            &mut watcher,
            json!({"id": 2, "method": "presence_unwatch", "params": {"users": ["frank"]}}),
        );
        assert_eq!(reply["result"], json!({}), "{reply}");
        let (frank, _) = connect(&engine, "frank");
        no_event_pending(&mut watcher, 10);
        close(frank);
        no_event_pending(&mut watcher, 20);
        // Still watching gus.
        let (gus, _) = connect(&engine, "gus");
        assert_eq!(
            next_presence(&mut watcher),
            json!({"user": "gus", "online": true, "last_seen_ms": 0})
        );
        // A watcher that goes leaves nothing behind for the next one.
        close(watcher);
        let (mut second, _) = connect(&engine, "second");
        let reply = watch(&mut second, 1, &["gus"]);
        assert_eq!(reply["result"]["users"][0]["online"], true);
        close(gus);
        assert_eq!(next_presence(&mut second)["online"], false);
    }
);

e2e!(watching_past_the_limit_is_refused_whole, |driver| {
    let mut config = config(driver, 2);
    config.im.presence_watch_max = 3;
    let engine = start(config);
    let (mut watcher, _) = connect(&engine, "watcher");
    let reply = watch(&mut watcher, 1, &["a", "b", "c", "d"]);
    assert_eq!(reply["error"]["code"], 106, "{reply}");
    let reply = watch(&mut watcher, 2, &["a", "b", "c"]);
    assert_eq!(reply["result"]["users"].as_array().unwrap().len(), 3);
    // Watching one again is not one more.
    let reply = watch(&mut watcher, 3, &["a"]);
    assert!(reply.get("result").is_some(), "{reply}");
    let reply = watch(&mut watcher, 4, &["d"]);
    assert_eq!(reply["error"]["code"], 106, "{reply}");
    command(
        &mut watcher,
        json!({"id": 5, "method": "presence_unwatch", "params": {"users": ["a"]}}),
    );
    let reply = watch(&mut watcher, 6, &["d"]);
    assert!(reply.get("result").is_some(), "{reply}");
    // Ids are checked: 110 for one that is not a user id.
    let reply = watch(&mut watcher, 7, &["not a user"]);
    assert_eq!(reply["error"]["code"], 110, "{reply}");
});

e2e!(the_query_and_its_api_twin_agree, |driver| {
    let mut config = config(driver, 2);
    config.im.presence_offline_grace = Duration::ZERO;
    // Room for 1,001 ids in a body.
    config.api.body_bytes_max = 64 * 1024;
    let engine = start(config);
    let (mut asker, _) = connect(&engine, "asker");
    let (_gina, _) = connect(&engine, "gina");
    let before = unix_ms();
    let (hank, _) = connect(&engine, "hank");
    close(hank);
    let users = ["gina", "hank", "nobody", "gina"];
    let mut states = Vec::new();
    assert!(wait_until(Duration::from_secs(5), || {
        states = query(&mut asker, 1, &users);
        states[1]["online"] == false
    }));
    assert_eq!(states.len(), 3, "each user once: {states:?}");
    assert_eq!(
        states[0],
        json!({"user": "gina", "online": true, "last_seen_ms": 0})
    );
    assert_eq!(states[1]["user"], "hank");
    assert!(states[1]["last_seen_ms"].as_u64().unwrap() >= before);
    assert_eq!(
        states[2],
        json!({"user": "nobody", "online": false, "last_seen_ms": 0})
    );
    let (status, body) = api(
        &engine,
        "POST",
        "/api/presence/users",
        Some(json!({"users": users})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["users"], Value::Array(states));
    let (status, body) = api(
        &engine,
        "POST",
        "/api/presence/users",
        Some(json!({"users": []})),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = api(
        &engine,
        "POST",
        "/api/presence/users",
        Some(json!({"users": ["bad id"]})),
    );
    assert_eq!(status, 400, "{body}");
    // asker and gina online, hank remembered for his last seen.
    let (status, metrics) = api(&engine, "GET", "/metrics", None);
    assert_eq!(status, 200);
    let text = metrics.as_str().expect("metrics text");
    let users: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("ringcast_presence_users "))
        .expect("ringcast_presence_users")
        .parse()
        .unwrap();
    assert_eq!(users, 3, "{text}");
    let too_many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let (status, _) = api(
        &engine,
        "POST",
        "/api/presence/users",
        Some(json!({"users": too_many})),
    );
    assert_eq!(status, 400);
});

e2e!(a_binary_watcher_gets_binary_events, |driver| {
    let engine = presence_config(driver, 0);
    let (mut watcher, _) = connect_with(&engine, &token("bw"), Some(SUBPROTOCOL_BINARY));
    let watch = BinaryCommand {
        id: 1,
        body: BinaryCommandBody::Presence(PresenceCommand::Watch {
            users: vec!["ivy".into()],
        }),
    };
    watcher
        .send(Message::Binary(encode_binary_command(&watch)))
        .unwrap();
    let read = |ws: &mut Ws| loop {
        if let Message::Binary(bytes) = ws.read().unwrap() {
            return decode_server_binary(&bytes).unwrap();
        }
    };
    match read(&mut watcher) {
        ServerMessage::Reply { id: 1, result } => assert_eq!(
            result,
            ringcast_protocol::client::ReplyResult::Presence {
                users: vec![PresenceState {
                    user: "ivy".into(),
                    online: false,
                    last_seen_ms: 0
                }]
            }
        ),
        other => panic!("expected the watch reply, got {other:?}"),
    }
    let (ivy, _) = connect(&engine, "ivy");
    assert_eq!(
        read(&mut watcher),
        ServerMessage::Presence(PresenceState {
            user: "ivy".into(),
            online: true,
            last_seen_ms: 0
        })
    );
    close(ivy);
    match read(&mut watcher) {
        ServerMessage::Presence(state) => {
            assert!(!state.online && state.last_seen_ms > 0, "{state:?}")
        }
        other => panic!("expected an offline event, got {other:?}"),
    }
});

e2e!(
    under_a_burst_over_full_lanes_each_user_is_told_online_then_offline,
    |driver| {
        let mut config = config(driver, 2);
        config.im.presence_offline_grace = Duration::ZERO;
        // Lanes of 8 events: a burst of changes on one shard can overrun
        // the lane to the watcher's, which then reads its users again.
        config.server.mesh_lane_events = 8;
        let engine = start(config);
        let (mut watcher, _) = connect_on_shard(&engine, "w", 0);
        let users: Vec<String> = (0..40).map(|i| format!("burst{i}")).collect();
        let names: Vec<&str> = users.iter().map(String::as_str).collect();
        watch(&mut watcher, 1, &names);
        // All at once, from threads: many opens land in one shard turn.
        let sockets: Vec<Ws> = std::thread::scope(|scope| {
            let threads: Vec<_> = users
                .iter()
                .map(|user| scope.spawn(|| crate::util::connect(&engine, user).0))
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let mut seen: std::collections::HashMap<String, Vec<bool>> = Default::default();
        let collect = |watcher: &mut Ws,
                       seen: &mut std::collections::HashMap<String, Vec<bool>>,
                       online: bool| {
            while seen
                .values()
                .filter(|events| events.last() == Some(&online))
                .count()
                < users.len()
            {
                let event = next_presence(watcher);
                let user = event["user"].as_str().unwrap().to_owned();
                seen.entry(user)
                    .or_default()
                    .push(event["online"].as_bool().unwrap());
            }
        };
        collect(&mut watcher, &mut seen, true);
        std::thread::scope(|scope| {
            for ws in sockets {
                scope.spawn(|| close(ws));
            }
        });
        collect(&mut watcher, &mut seen, false);
        for user in &users {
            assert_eq!(
                seen[user],
                [true, false],
                "{user}: once online, then offline"
            );
        }
        no_event_pending(&mut watcher, 10);
    }
);

e2e!(anonymous_connections_have_no_presence, |driver| {
    let mut config = config(driver, 2);
    config.auth.allow_anonymous = true;
    let engine = start(config);
    let url = format!("ws://{}/connection/websocket", engine.ws_addr);
    let (mut anonymous, _) = tungstenite::connect(url).expect("anonymous connect");
    let connect = read_json(&mut anonymous);
    assert_eq!(connect["connect"]["user"], "", "{connect}");
    for method in ["presence_watch", "presence_query"] {
        let reply = command(
            &mut anonymous,
            json!({"id": 1, "method": method, "params": {"users": ["bob"]}}),
        );
        assert_eq!(reply["error"]["code"], 103, "{method}: {reply}");
    }
    // Nor is an anonymous connection anyone's presence.
    let (status, body) = api(
        &engine,
        "POST",
        "/api/presence/users",
        Some(json!({"users": ["bob"]})),
    );
    assert_eq!(status, 200);
    assert_eq!(body["users"][0]["online"], false);
});

/// Connects as `user` to a spawned engine, reads waiting up to 5 s.
fn connect_to(addr: std::net::SocketAddr, user: &str) -> Ws {
    let ws = crate::crash::dm_connect(addr, user).expect("connect");
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    ws
}

/// Last seen survives kill -9 of the real binary: a user leaves, the
/// offline report (after the grace) is written by the store's writer, the
/// engine is killed and restarted on the same data, and a query, a watch
/// and `POST /api/presence/users` answer the stored time; a user never
/// seen stays 0. The book stays first: the user's next visit gives a newer
/// last seen.
#[test]
fn last_seen_survives_kill_9_and_is_answered_from_the_store() {
    use crate::crash::start_node_with;
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, config_path) = (dir.path().join("data"), dir.path().join("ringcast.toml"));
    let extra = format!("[im]\npresence_offline_grace_ms = {GRACE_MS}\n");
    let mut node = start_node_with(&data_dir, &config_path, &extra);
    let mut watcher = connect_to(node.ws, "ls-watcher");
    watch(&mut watcher, 1, &["ls-alice"]);
    let alice = connect_to(node.ws, "ls-alice");
    assert_eq!(next_presence(&mut watcher)["online"], true);
    close(alice);
    let event = next_presence(&mut watcher);
    assert_eq!(event["online"], false, "{event}");
    let last_seen = event["last_seen_ms"].as_u64().expect("last seen");
    assert!(last_seen > 0);
    // The store took the last seen before the watcher was told; this
    // append is behind it in the writer's queue and answered only after
    // its batch was written.
    let body = json!({"user": "ls-flush", "data": {}}).to_string();
    let (status, reply) = api_raw(node.api, "POST", "/api/send", Some(&body), Some(API_KEY));
    assert_eq!(status, 200, "{reply}");
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    drop((node, watcher));

    let node = start_node_with(&data_dir, &config_path, &extra);
    let expected = [
        json!({"user": "ls-alice", "online": false, "last_seen_ms": last_seen}),
        json!({"user": "ls-never", "online": false, "last_seen_ms": 0}),
    ];
    let mut watcher = connect_to(node.ws, "ls-watcher");
    assert_eq!(query(&mut watcher, 1, &["ls-alice", "ls-never"]), expected);
    let (status, body) = api_raw(
        node.api,
        "POST",
        "/api/presence/users",
        Some(&json!({"users": ["ls-alice", "ls-never"]}).to_string()),
        Some(API_KEY),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["users"], json!(expected));
    let reply = watch(&mut watcher, 2, &["ls-alice", "ls-never"]);
    assert_eq!(reply["result"]["users"], json!(expected), "{reply}");

    let alice = connect_to(node.ws, "ls-alice");
    assert_eq!(
        next_presence(&mut watcher),
        json!({"user": "ls-alice", "online": true, "last_seen_ms": 0})
    );
    close(alice);
    let event = next_presence(&mut watcher);
    let newer = event["last_seen_ms"].as_u64().expect("last seen");
    assert!(newer > last_seen, "{newer} after {last_seen}");
    let states = query(&mut watcher, 3, &["ls-alice"]);
    assert_eq!(states[0]["last_seen_ms"], newer);
}

e2e!(
    presence_commands_over_the_connection_rate_get_114,
    |driver| {
        let (rate, burst) = (1u32, 3u32);
        let mut config = config(driver, 1);
        config.websocket.presence_rate = rate;
        config.websocket.presence_burst = burst;
        config.websocket.rate_limit_refusals_max = 0;
        let engine = start(config);
        let (mut ws, _) = connect(&engine, "pr-flood");
        let n = 10u64;
        let started = std::time::Instant::now();
        for id in 1..=n {
            let method = if id % 2 == 0 {
                "presence_watch"
            } else {
                "presence_query"
            };
            let command = json!({"id": id, "method": method, "params": {"users": ["pr-x"]}});
            ws.write(Message::text(command.to_string())).unwrap();
        }
        ws.flush().unwrap();
        let (mut accepted, mut refused) = (0usize, 0usize);
        while accepted + refused < n as usize {
            let reply = read_json(&mut ws);
            if reply.get("result").is_some() {
                accepted += 1;
            } else {
                assert_eq!(reply["error"]["code"], 114, "{reply}");
                assert!(reply["error"]["retry_after_ms"].as_u64().unwrap() > 0);
                refused += 1;
            }
        }
        let refilled_max = (f64::from(rate) * started.elapsed().as_secs_f64()).ceil() as usize + 1;
        assert!(accepted >= burst as usize, "the burst is let through");
        assert!(
            accepted <= burst as usize + refilled_max,
            "{accepted} accepted"
        );
        assert!(refused > 0);
        // Another connection of the same user has its own bucket.
        let (mut other, _) = connect(&engine, "pr-flood");
        assert_eq!(query(&mut other, 1, &["pr-x"]).len(), 1);
    }
);
