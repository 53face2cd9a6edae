//! Per-channel permissions: `subscribe = "token"` namespaces (subscription
//! tokens and the connection token's `channels` claim), history readable
//! only by who may subscribe, and server-side subscriptions (`/api/subscribe`,
//! `/api/unsubscribe`, the token's `subs` claim) across shards.
//!
//! Tokens are minted with jsonwebtoken, as an app backend would; clients are
//! tungstenite.

use std::collections::HashMap;

use ringcast_engine::config::{Config, Driver, SubscribePolicy};
use ringcast_protocol::client::{
    decode_server_binary, encode_binary_command, BinaryCommand, BinaryCommandBody, ServerMessage,
    SUBPROTOCOL_BINARY,
};
use serde_json::{json, Value};
use tungstenite::Message;

use crate::e2e;
use crate::util::*;

/// The test config with `chat` (history, `publish = "subscribers"`) made a
/// `subscribe = "token"` namespace: `chat:g1` is a private group.
fn token_config(driver: Driver, shards: u16) -> Config {
    let mut config = config(driver, shards);
    let chat = config
        .namespaces
        .iter_mut()
        .find(|ns| ns.name == "chat")
        .expect("test config has chat");
    chat.subscribe = SubscribePolicy::Token;
    config
}

/// A JWT over `claims`, signed with `secret` as the backend would.
fn sign_with(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn sign(claims: &Value) -> String {
    sign_with(SECRET, claims)
}

/// A subscription token for `user` and `channel`, valid for an hour.
fn subscription_token(user: &str, channel: &str) -> String {
    sign(&json!({"sub": user, "channel": channel, "exp": now_s() + 3600}))
}

fn subscribe_with(ws: &mut Ws, id: u64, channel: &str, token: Option<&str>) -> Value {
    let mut params = json!({"channel": channel});
    if let Some(token) = token {
        params["token"] = json!(token);
    }
    command(
        ws,
        json!({"id": id, "method": "subscribe", "params": params}),
    )
}

#[track_caller]
fn assert_error(reply: &Value, code: u64, message_part: &str) {
    assert_eq!(reply["error"]["code"], code, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(message_part),
        "{message_part:?} in {reply}"
    );
}

/// The upgrade's status and error code for `token`.
fn upgrade_refusal(engine: &ringcast_engine::Engine, token: &str) -> (u16, String) {
    let request =
        tungstenite::client::IntoClientRequest::into_client_request(ws_url(engine, token)).unwrap();
    let stream = std::net::TcpStream::connect(engine.ws_addr).unwrap();
    match tungstenite::client(request, stream) {
        Ok(_) => (101, String::new()),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let body = response.body().clone().unwrap_or_default();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            (
                response.status().as_u16(),
                format!(
                    "{} {}",
                    body["error"]["code"].as_str().unwrap_or(""),
                    body["error"]["message"].as_str().unwrap_or("")
                ),
            )
        }
        Err(other) => panic!("upgrade failed: {other:?}"),
    }
}

e2e!(
    subscription_tokens_good_expired_other_channel_other_user_bad_signature,
    |driver| {
        let engine = start(token_config(driver, 2));
        let (mut alice, _) = connect(&engine, "alice");

        let reply = subscribe_with(&mut alice, 1, "chat:g1", None);
        assert_error(&reply, 103, "needs a subscription token");

        let expired = sign(&json!({"sub": "alice", "channel": "chat:g1", "exp": now_s() - 60}));
        let reply = subscribe_with(&mut alice, 2, "chat:g1", Some(&expired));
        assert_error(&reply, 112, "expired");

        let other_channel = subscription_token("alice", "chat:g2");
        let reply = subscribe_with(&mut alice, 3, "chat:g1", Some(&other_channel));
        assert_error(&reply, 113, "chat:g2");

        let other_user = subscription_token("bob", "chat:g1");
        let reply = subscribe_with(&mut alice, 4, "chat:g1", Some(&other_user));
        assert_error(&reply, 113, "another user");

        let forged = sign_with(
            "not-the-secret-not-the-secret-not-the-secret",
            &json!({"sub": "alice", "channel": "chat:g1", "exp": now_s() + 60}),
        );
        let reply = subscribe_with(&mut alice, 5, "chat:g1", Some(&forged));
        assert_error(&reply, 113, "InvalidSignature");

        // None of the refusals subscribed: a publication does not arrive.
        publish(&engine, "chat:g1", json!({"n": 0}));
        assert_nothing_queued(&mut alice, 50);
        let good = subscription_token("alice", "chat:g1");
        let reply = subscribe_with(&mut alice, 6, "chat:g1", Some(&good));
        assert_eq!(reply["result"]["channel"], "chat:g1", "{reply}");
        publish(&engine, "chat:g1", json!({"n": 1}));
        let push = read_json(&mut alice);
        assert_eq!(push["push"]["data"]["n"], 1, "only what came after: {push}");

        // A subscription token is not a connection token.
        let (status, why) = upgrade_refusal(&engine, &good);
        assert_eq!(status, 401, "{why}");
        assert!(why.contains("subscription token"), "{why}");

        // The binary form carries the token too.
        let (mut binary, _) = connect_with(&engine, &token("carol"), Some(SUBPROTOCOL_BINARY));
        let command = BinaryCommand {
            id: 7,
            body: BinaryCommandBody::SubscribeWithToken {
                channel: "chat:g1".into(),
                token: subscription_token("carol", "chat:g1"),
                since: None,
            },
        };
        binary
            .send(Message::Binary(encode_binary_command(&command)))
            .unwrap();
        match binary.read().unwrap() {
            Message::Binary(bytes) => assert!(
                matches!(
                    decode_server_binary(&bytes).unwrap(),
                    ServerMessage::Reply { id: 7, .. }
                ),
                "subscribed"
            ),
            other => panic!("expected a binary reply, got {other:?}"),
        }
        engine.shutdown();
    }
);

e2e!(channels_claim_patterns_allow_and_deny, |driver| {
    let engine = start(token_config(driver, 2));
    let claims = json!({
        "sub": "alice",
        "exp": now_s() + 3600,
        "channels": ["chat:team1-*", "chat:g1"],
    });
    let (mut alice, _) = connect_with(&engine, &sign(&claims), None);
    for (id, channel) in [(1, "chat:team1-ops"), (2, "chat:team1-"), (3, "chat:g1")] {
        let reply = subscribe_with(&mut alice, id, channel, None);
        assert_eq!(reply["result"]["channel"], channel, "{reply}");
    }
    for (id, channel) in [(4, "chat:team2-ops"), (5, "chat:g10"), (6, "chat:team1")] {
        let reply = subscribe_with(&mut alice, id, channel, None);
        assert_error(&reply, 103, "subscription token");
    }
    // The claim does not restrict public namespaces, nor grant on others.
    subscribe(&mut alice, 7, "news:world");

    // Patterns that would reach past a namespace are refused at connect.
    for bad in ["*", "ch*", "user:*"] {
        let claims = json!({"sub": "alice", "exp": now_s() + 3600, "channels": [bad]});
        let (status, why) = upgrade_refusal(&engine, &sign(&claims));
        assert_eq!(status, 401, "{bad}: {why}");
        assert!(why.contains("channels[0]"), "{bad}: {why}");
    }
    engine.shutdown();
});

e2e!(non_member_cannot_read_history_join_or_post, |driver| {
    let engine = start(token_config(driver, 2));
    publish(&engine, "chat:g1", json!({"secret": 1}));
    let (mut mallory, _) = connect(&engine, "mallory");
    let reply = command(
        &mut mallory,
        json!({"id": 1, "method": "history", "params": {"stream": "chat:g1", "limit": 10}}),
    );
    assert_error(&reply, 103, "needs a subscription token");
    let reply = command(
        &mut mallory,
        json!({"id": 2, "method": "subscribe", "params": {"channel": "chat:g1", "since": {"offset": 0, "epoch": 0}}}),
    );
    assert_error(&reply, 103, "needs a subscription token");
    let reply = command(
        &mut mallory,
        json!({"id": 3, "method": "publish", "params": {"channel": "chat:g1", "data": {"x": 1}}}),
    );
    assert_eq!(reply["error"]["code"], 103, "{reply}");

    // A member (by the `channels` claim) reads it, joins, recovers and posts.
    let claims = json!({"sub": "alice", "exp": now_s() + 3600, "channels": ["chat:g1"]});
    let (mut alice, _) = connect_with(&engine, &sign(&claims), None);
    let reply = command(
        &mut alice,
        json!({"id": 1, "method": "history", "params": {"stream": "chat:g1", "limit": 10}}),
    );
    assert_eq!(
        reply["result"]["publications"][0]["data"]["secret"], 1,
        "{reply}"
    );
    let reply = command(
        &mut alice,
        json!({"id": 2, "method": "subscribe", "params": {"channel": "chat:g1", "since": {"offset": 0, "epoch": reply["result"]["epoch"]}}}),
    );
    let mut reply = reply;
    // The replayed publication may come before the reply.
    while reply.get("push").is_some() {
        reply = read_json(&mut alice);
    }
    assert_eq!(reply["result"]["recovery"]["recovered"], true, "{reply}");
    let reply = command(
        &mut alice,
        json!({"id": 3, "method": "publish", "params": {"channel": "chat:g1", "data": {"x": 2}}}),
    );
    assert!(reply["result"]["offset"].as_u64().is_some(), "{reply}");
    engine.shutdown();
});

/// Connects `user` until it has a connection on each of `shards` shards.
fn one_connection_per_shard(
    engine: &ringcast_engine::Engine,
    token: &str,
    shards: usize,
) -> Vec<Ws> {
    let mut by_shard: HashMap<u64, Ws> = HashMap::new();
    for _ in 0..200 {
        if by_shard.len() == shards {
            break;
        }
        let (ws, connect) = connect_with(engine, token, None);
        let shard = connect["connect"]["shard"].as_u64().unwrap();
        by_shard.entry(shard).or_insert(ws);
    }
    assert_eq!(by_shard.len(), shards, "a connection on each shard");
    by_shard.into_values().collect()
}

/// `/api/subscribe` or `/api/unsubscribe` (`path`) of `user` to `channel`.
fn server_subscription(
    engine: &ringcast_engine::Engine,
    path: &str,
    user: &str,
    channel: &str,
) -> (u16, Value) {
    api(
        engine,
        "POST",
        path,
        Some(json!({"user": user, "channel": channel})),
    )
}

/// Calls `path` for alice on chat:g1, expects `connections` changed, and
/// each of `clients` told with a `told` message.
fn change_and_tell(
    engine: &ringcast_engine::Engine,
    path: &str,
    clients: &mut [Ws],
    connections: u64,
    told: &str,
) {
    let (status, body) = server_subscription(engine, path, "alice", "chat:g1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["connections"], connections, "{body}");
    for ws in clients.iter_mut() {
        assert_eq!(read_json(ws), json!({told: {"channel": "chat:g1"}}));
    }
}

/// Pings and expects the pong reply next: nothing else was queued.
#[track_caller]
fn assert_nothing_queued(ws: &mut Ws, id: u64) {
    send_json(ws, json!({"id": id, "method": "ping"}));
    let next = read_json(ws);
    assert_eq!(next["id"], id, "nothing before the ping's reply: {next}");
}

e2e!(
    api_subscribe_reaches_every_connection_on_every_shard,
    |driver| {
        let engine = start(token_config(driver, 2));
        let mut alice = one_connection_per_shard(&engine, &token("alice"), 2);
        let (mut binary, _) = connect_with(&engine, &token("alice"), Some(SUBPROTOCOL_BINARY));
        let (mut bob, _) = connect(&engine, "bob");

        // Two JSON connections and the binary one.
        change_and_tell(&engine, "/api/subscribe", &mut alice, 3, "subscribed");
        match binary.read().unwrap() {
            Message::Binary(bytes) => assert_eq!(
                decode_server_binary(&bytes).unwrap(),
                ServerMessage::Subscribed {
                    channel: "chat:g1".into()
                }
            ),
            other => panic!("expected a binary message, got {other:?}"),
        }
        // Subscribing again changes nothing.
        let (_, body) = server_subscription(&engine, "/api/subscribe", "alice", "chat:g1");
        assert_eq!(body["connections"], 0, "{body}");

        publish(&engine, "chat:g1", json!({"n": 1}));
        for ws in alice.iter_mut() {
            let push = read_json(ws);
            assert_eq!(push["push"]["data"]["n"], 1, "{push}");
        }
        // A server-side subscriber is a member: it may read the history.
        let reply = command(
            &mut alice[0],
            json!({"id": 1, "method": "history", "params": {"stream": "chat:g1", "limit": 10}}),
        );
        assert_eq!(
            reply["result"]["publications"][0]["data"]["n"], 1,
            "{reply}"
        );
        assert_nothing_queued(&mut bob, 1);

        // Two JSON connections and the binary one.
        change_and_tell(&engine, "/api/unsubscribe", &mut alice, 3, "unsubscribed");
        publish(&engine, "chat:g1", json!({"n": 2}));
        for (id, ws) in alice.iter_mut().enumerate() {
            assert_nothing_queued(ws, 10 + id as u64);
        }

        // Personal channels and unknown namespaces are refused.
        for channel in ["user:bob", "nowhere:x"] {
            let (status, body) = server_subscription(&engine, "/api/subscribe", "alice", channel);
            assert_eq!(status, 400, "{channel}: {body}");
        }
        // A user with no connection: nothing to change.
        let (status, body) = server_subscription(&engine, "/api/subscribe", "nobody", "chat:g1");
        assert_eq!(
            (status, body["connections"].as_u64()),
            (200, Some(0)),
            "{body}"
        );
        engine.shutdown();
    }
);

e2e!(subs_claim_is_applied_at_connect, |driver| {
    let engine = start(token_config(driver, 2));
    let claims = json!({"sub": "alice", "exp": now_s() + 3600, "subs": ["chat:g1", "news:world"]});
    let (mut alice, _) = connect_with(&engine, &sign(&claims), None);
    assert_eq!(
        read_json(&mut alice),
        json!({"subscribed": {"channel": "chat:g1"}})
    );
    assert_eq!(
        read_json(&mut alice),
        json!({"subscribed": {"channel": "news:world"}})
    );
    publish(&engine, "chat:g1", json!({"n": 1}));
    let push = read_json(&mut alice);
    assert_eq!(push["push"]["channel"], "chat:g1", "{push}");

    for bad in [json!(["nowhere:x"]), json!(["user:bob"])] {
        let claims = json!({"sub": "alice", "exp": now_s() + 3600, "subs": bad});
        let (status, why) = upgrade_refusal(&engine, &sign(&claims));
        assert_eq!(status, 401, "{why}");
        assert!(why.contains("subs[0]"), "{why}");
    }
    engine.shutdown();
});

/// Connects with `token` and `?device=`, reads the `connect` message.
fn connect_device(engine: &ringcast_engine::Engine, token: &str, device: &str) -> Ws {
    let url = format!("{}&device={device}", ws_url(engine, token));
    let stream = std::net::TcpStream::connect(engine.ws_addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let (mut ws, _) = tungstenite::client(url, stream).expect("upgrade");
    assert!(read_json(&mut ws).get("connect").is_some());
    ws
}

/// Reads until the id-0 recovery reply of `channel`, returning it and the
/// `data.n` of the pushes of `channel` read before it, in order.
fn pushes_then_recovery(ws: &mut Ws, channel: &str) -> (Vec<u64>, Value) {
    let mut pushes = Vec::new();
    loop {
        let message = read_json(ws);
        if message["push"]["channel"] == channel {
            pushes.push(message["push"]["data"]["n"].as_u64().unwrap());
        } else if message["id"] == 0 && message["result"]["channel"] == channel {
            return (pushes, message);
        } else {
            panic!("unexpected: {message}");
        }
    }
}

/// Connects alice's `phone` with the `subs` claim: `subscribed` first, then
/// the replayed pushes of chat:g1 and its id-0 reply, with the inbox's own
/// id-0 reply anywhere among them (both replays run at once). Returns the
/// client, the replayed `data.n` and chat:g1's reply, nothing left unread.
fn connect_phone(engine: &ringcast_engine::Engine, token: &str) -> (Ws, Vec<u64>, Value) {
    let mut phone = connect_device(engine, token, "phone");
    assert_eq!(
        read_json(&mut phone),
        json!({"subscribed": {"channel": "chat:g1"}})
    );
    let (mut pushes, mut reply, mut inbox_done) = (Vec::new(), None, false);
    while reply.is_none() || !inbox_done {
        let message = read_json(&mut phone);
        if message["push"]["channel"] == "chat:g1" {
            assert!(
                reply.is_none(),
                "a push after the recovery reply: {message}"
            );
            pushes.push(message["push"]["data"]["n"].as_u64().unwrap());
        } else if message["id"] == 0 && message["result"]["channel"] == "chat:g1" {
            reply = Some(message);
        } else if message["id"] == 0 && message["result"]["channel"] == "user:alice" {
            inbox_done = true;
        } else {
            panic!("unexpected: {message}");
        }
    }
    (phone, pushes, reply.unwrap())
}

e2e!(
    server_subscriptions_recover_from_the_device_cursor,
    |driver| {
        let engine = start(token_config(driver, 2));
        let with_subs = sign(&json!({"sub": "alice", "exp": now_s() + 3600, "subs": ["chat:g1"]}));

        // First connection of the device: no cursor, nothing replayed.
        let (mut phone, replayed, reply) = connect_phone(&engine, &with_subs);
        assert!(replayed.is_empty(), "{replayed:?}");
        assert_eq!(reply["result"]["recovery"]["replayed"], 0, "{reply}");
        for n in [1, 2] {
            publish(&engine, "chat:g1", json!({"n": n}));
        }
        let mut last_offset = 0;
        for n in [1, 2] {
            let push = read_json(&mut phone);
            assert_eq!(push["push"]["data"]["n"], n, "{push}");
            last_offset = push["push"]["offset"].as_u64().unwrap();
        }
        let ack = json!({"id": 7, "method": "ack", "params": {"stream": "chat:g1", "offset": last_offset}});
        assert!(command(&mut phone, ack).get("result").is_some());
        drop(phone);

        // Away: two publications. Back with the same device: they come
        // first, in order, then the recovery reply, then live ones, once.
        for n in [3, 4] {
            publish(&engine, "chat:g1", json!({"n": n}));
        }
        let (mut phone, replayed, reply) = connect_phone(&engine, &with_subs);
        assert_eq!(replayed, [3, 4]);
        assert_eq!(reply["result"]["recovery"]["recovered"], true, "{reply}");
        assert_eq!(reply["result"]["recovery"]["replayed"], 2, "{reply}");
        publish(&engine, "chat:g1", json!({"n": 5}));
        let push = read_json(&mut phone);
        assert_eq!(push["push"]["data"]["n"], 5, "{push}");
        let ack = json!({"id": 8, "method": "ack", "params": {"stream": "chat:g1", "offset": push["push"]["offset"]}});
        assert!(command(&mut phone, ack).get("result").is_some());
        assert_nothing_queued(&mut phone, 9);
        drop(phone);

        // `/api/subscribe` later in a connection's life recovers the same way.
        publish(&engine, "chat:g1", json!({"n": 6}));
        let mut phone = connect_device(&engine, &token("alice"), "phone");
        let inbox = read_json(&mut phone);
        assert_eq!(inbox["result"]["channel"], "user:alice", "{inbox}");
        let (_, body) = server_subscription(&engine, "/api/subscribe", "alice", "chat:g1");
        assert_eq!(body["connections"], 1, "{body}");
        assert_eq!(
            read_json(&mut phone),
            json!({"subscribed": {"channel": "chat:g1"}})
        );
        let (replayed, reply) = pushes_then_recovery(&mut phone, "chat:g1");
        assert_eq!(replayed, [6]);
        assert_eq!(reply["result"]["recovery"]["replayed"], 1, "{reply}");
        engine.shutdown();
    }
);
