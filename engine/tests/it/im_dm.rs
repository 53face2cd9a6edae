//! The IM layer's direct conversations over real sockets (`docs/im.md`,
//! step 1), on several shards: a DM reaches every connection of both users
//! wherever they are, the sender's own included; a user offline meanwhile
//! gets its conversations, order and unread counts in the sync at connect;
//! a read clears the badge on the user's other devices and gives the peer
//! its receipt; a DM is its two users' only.

use std::time::Duration;

use serde_json::{json, Value};

use crate::util::*;

const SHARDS: u16 = 3;

pub(crate) fn im_config(
    driver: ringcast_engine::config::Driver,
) -> ringcast_engine::config::Config {
    let mut config = config(driver, SHARDS);
    config.im.enabled = true;
    config.im.text_bytes_max = 64;
    config
}

/// A connection of `user` on shard `shard` (reconnecting until the kernel's
/// `SO_REUSEPORT` hash puts one there), with extra query parameters; the
/// IM sync it gets at connect is returned beside it.
pub(crate) fn im_connect(
    engine: &ringcast_engine::Engine,
    user: &str,
    query: &str,
    shard: Option<u64>,
) -> (Ws, Value) {
    for _ in 0..200 {
        let url = format!("{}&{query}", ws_url(engine, &token(user)));
        let stream = std::net::TcpStream::connect(engine.ws_addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (mut ws, _) = tungstenite::client(url, stream).expect("upgrade");
        let connect = read_json(&mut ws);
        if shard.is_some_and(|shard| connect["connect"]["shard"] != shard) {
            continue;
        }
        loop {
            let message = read_json(&mut ws);
            if let Some(sync) = message.get("im_sync") {
                return (ws, sync.clone());
            }
            assert_eq!(
                message["id"], 0,
                "only the inbox's reply comes first: {message}"
            );
        }
    }
    panic!("no connection of {user} landed on shard {shard:?}");
}

pub(crate) fn send_text(
    ws: &mut Ws,
    id: u64,
    to: &str,
    text: &str,
    client_msg_id: Option<&str>,
) -> Value {
    let mut params = json!({"to": to, "kind": "text", "data": {"text": text}});
    if let Some(key) = client_msg_id {
        params["client_msg_id"] = json!(key);
    }
    command(
        ws,
        json!({"id": id, "method": "msg_send", "params": params}),
    )
}

/// The next message, which must be a push; returns its body.
pub(crate) fn next_push(ws: &mut Ws) -> Value {
    let message = read_json(ws);
    message
        .get("push")
        .unwrap_or_else(|| panic!("expected a push, got {message}"))
        .clone()
}

/// Nothing but the reply to a ping is waiting: no push, no event.
pub(crate) fn nothing_waiting(ws: &mut Ws, id: u64) {
    send_json(ws, json!({"id": id, "method": "ping"}));
    let message = read_json(ws);
    assert_eq!(
        message,
        json!({"id": id, "result": {}}),
        "nothing before the pong"
    );
}

crate::e2e!(
    a_dm_reaches_every_device_of_both_users_on_every_shard,
    |driver| {
        let engine = start(im_config(driver));
        let (mut alice1, sync) = im_connect(&engine, "alice", "", Some(0));
        assert_eq!(
            sync["convs"],
            json!([]),
            "a first connection with no conversations"
        );
        let (mut alice2, _) = im_connect(&engine, "alice", "", Some(1));
        let (mut bob1, _) = im_connect(&engine, "bob", "", Some(2));
        let (mut bob2, _) = im_connect(&engine, "bob", "", Some(0));

        // The sending connection gets the push, then the reply.
        send_json(
            &mut alice1,
            json!({"id": 1, "method": "msg_send", "params": {"to": "bob", "kind": "text", "data": {"text": "hi"}, "client_msg_id": "m1"}}),
        );
        let own = next_push(&mut alice1);
        let reply = read_json(&mut alice1);
        let result = &reply["result"];
        let conv = result["conv"].as_str().expect("conv").to_owned();
        assert!(conv.starts_with("dm:") && conv.len() == 29, "{reply}");
        assert_eq!(result["offset"], 1);
        assert_eq!(own["channel"], conv.as_str());
        assert_eq!(own["id"], result["id"]);
        assert_eq!(own["sender"], "alice");
        assert_eq!(own["data"], json!({"kind": "text", "data": {"text": "hi"}}));
        for ws in [&mut alice2, &mut bob1, &mut bob2] {
            let push = next_push(ws);
            assert_eq!(push, own, "every device gets the same entry");
        }

        // A retry is answered with the original and stored once.
        let retry = send_text(&mut alice1, 2, "bob", "hi", Some("m1"));
        assert_eq!(retry["result"]["duplicate"], true, "{retry}");
        assert_eq!(retry["result"]["id"], result["id"]);
        assert_eq!(retry["result"]["offset"], 1);

        // echo: false: every device but the sending connection.
        send_json(
            &mut bob1,
            json!({"id": 3, "method": "msg_send", "params": {"conv": conv, "kind": "custom", "data": {"sticker": 7}, "echo": false}}),
        );
        let reply = read_json(&mut bob1);
        assert_eq!(reply["id"], 3, "the reply comes first, no push: {reply}");
        assert_eq!(reply["result"]["offset"], 2, "the retry stored nothing");
        for ws in [&mut alice1, &mut alice2, &mut bob2] {
            let push = next_push(ws);
            assert_eq!(push["offset"], 2);
            assert_eq!(push["sender"], "bob");
            assert_eq!(
                push["data"],
                json!({"kind": "custom", "data": {"sticker": 7}})
            );
        }
        nothing_waiting(&mut bob1, 4);
        for (id, ws) in [(5, &mut alice1), (6, &mut alice2), (7, &mut bob2)] {
            nothing_waiting(ws, id);
        }
        engine.shutdown();
    }
);

crate::e2e!(
    an_offline_user_syncs_its_conversations_unread_and_order,
    |driver| {
        let engine = start(im_config(driver));
        let (mut alice, _) = im_connect(&engine, "alice", "", None);
        let (mut carol, _) = im_connect(&engine, "carol", "", None);
        for (id, text) in [(1, "one"), (2, "two"), (3, "three")] {
            let reply = send_text(&mut alice, id, "bob", text, None);
            assert!(reply.get("result").is_some(), "{reply}");
        }
        std::thread::sleep(Duration::from_millis(5));
        let from_carol = send_text(&mut carol, 1, "bob", "hey", None);
        let carol_conv = from_carol["result"]["conv"].as_str().unwrap().to_owned();

        // Bob's first connection: the newest page of its list.
        let (mut bob, sync) = im_connect(&engine, "bob", "device=phone", None);
        let convs = sync["convs"].as_array().expect("convs");
        assert_eq!(convs.len(), 2, "{sync}");
        assert_eq!(
            convs[0]["conv"],
            carol_conv.as_str(),
            "newest activity first"
        );
        assert_eq!(convs[0]["peer"], "carol");
        assert_eq!(convs[0]["unread"], 1);
        assert_eq!(convs[1]["peer"], "alice");
        assert_eq!(convs[1]["unread"], 3);
        assert_eq!(convs[1]["last_offset"], 3);
        assert_eq!(sync["total_unread"], 4);
        assert_eq!(sync["more"], false);
        let alice_conv = convs[1]["conv"].as_str().unwrap().to_owned();

        let read = command(
            &mut bob,
            json!({"id": 1, "method": "read", "params": {"conv": alice_conv, "offset": 3}}),
        );
        assert_eq!(
            read["result"],
            json!({"conv": alice_conv, "offset": 3, "unread": 0, "total_unread": 1})
        );
        // Bob's token, then one more message while it is away.
        let (bob_again, sync) = im_connect(&engine, "bob", "", None);
        let token = sync["token"].as_str().unwrap().to_owned();
        drop(bob_again);
        drop(bob);
        assert_eq!(
            read_json(&mut alice),
            json!({"receipt": {"conv": alice_conv, "user": "bob", "read": 3}})
        );
        let reply = send_text(&mut alice, 4, "bob", "four", None);
        assert_eq!(reply["result"]["offset"], 4);

        let (_bob, sync) = im_connect(&engine, "bob", &format!("im_since={token}"), None);
        let convs = sync["convs"].as_array().expect("convs");
        assert_eq!(convs.len(), 1, "only what changed since the token: {sync}");
        assert_eq!(convs[0]["conv"], alice_conv.as_str());
        assert_eq!(convs[0]["unread"], 1);
        assert_eq!(convs[0]["read_offset"], 3);
        assert_eq!(sync["total_unread"], 2);
        assert_ne!(sync["token"], token.as_str());

        // The list pages in the same order.
        let (mut bob_list, _) = im_connect(&engine, "bob", "", None);
        let page = command(
            &mut bob_list,
            json!({"id": 1, "method": "conv_list", "params": {"limit": 1}}),
        );
        let first = &page["result"];
        assert_eq!(first["convs"][0]["conv"], alice_conv.as_str(), "{page}");
        assert_eq!(first["total_unread"], 2);
        let next = first["next"].clone();
        let page = command(
            &mut bob_list,
            json!({"id": 2, "method": "conv_list", "params": {"limit": 1, "cursor": next}}),
        );
        assert_eq!(
            page["result"]["convs"][0]["conv"],
            carol_conv.as_str(),
            "{page}"
        );
        engine.shutdown();
    }
);

crate::e2e!(
    a_read_clears_the_badge_on_other_devices_and_gives_the_peer_a_receipt,
    |driver| {
        let engine = start(im_config(driver));
        let (mut alice, _) = im_connect(&engine, "alice", "", Some(0));
        let (mut bob1, _) = im_connect(&engine, "bob", "", Some(1));
        let (mut bob2, _) = im_connect(&engine, "bob", "", Some(2));
        let first = send_text(&mut alice, 1, "bob", "a", None);
        let conv = first["result"]["conv"].as_str().unwrap().to_owned();
        send_text(&mut alice, 2, "bob", "b", None);
        for ws in [&mut bob1, &mut bob2] {
            assert_eq!(next_push(ws)["offset"], 1);
            assert_eq!(next_push(ws)["offset"], 2);
        }
        let reply = command(
            &mut bob1,
            json!({"id": 1, "method": "read", "params": {"conv": conv, "offset": 2}}),
        );
        assert_eq!(reply["result"]["unread"], 0);
        assert_eq!(
            read_json(&mut bob2),
            json!({"read": {"conv": conv, "offset": 2, "unread": 0, "total_unread": 0}})
        );
        assert_eq!(
            read_json(&mut alice),
            json!({"receipt": {"conv": conv, "user": "bob", "read": 2}})
        );
        nothing_waiting(&mut bob1, 2);
        engine.shutdown();
    }
);

crate::e2e!(a_dm_is_its_two_users_only, |driver| {
    let engine = start(im_config(driver));
    let (mut alice, _) = im_connect(&engine, "alice", "", None);
    let (mut bob, _) = im_connect(&engine, "bob", "", None);
    let (mut carol, _) = im_connect(&engine, "carol", "", None);
    let sent = send_text(&mut alice, 1, "bob", "secret", None);
    let conv = sent["result"]["conv"].as_str().unwrap().to_owned();
    next_push(&mut bob);

    let history = |ws: &mut Ws, id: u64| {
        command(
            ws,
            json!({"id": id, "method": "history", "params": {"stream": conv}}),
        )
    };
    assert_eq!(history(&mut carol, 1)["error"]["code"], 123);
    let page = history(&mut bob, 1);
    assert_eq!(
        page["result"]["publications"][0]["data"]["data"]["text"], "secret",
        "{page}"
    );
    let into = command(
        &mut carol,
        json!({"id": 2, "method": "msg_send", "params": {"conv": conv, "kind": "text", "data": {"text": "x"}}}),
    );
    assert_eq!(into["error"]["code"], 123, "{into}");
    let read = command(
        &mut carol,
        json!({"id": 3, "method": "read", "params": {"conv": conv, "offset": 1}}),
    );
    assert_eq!(read["error"]["code"], 123, "{read}");
    let publish = command(
        &mut alice,
        json!({"id": 2, "method": "publish", "params": {"channel": conv, "data": {"text": "x"}}}),
    );
    assert_eq!(publish["error"]["code"], 103, "{publish}");
    let subscribe = command(
        &mut carol,
        json!({"id": 4, "method": "subscribe", "params": {"channel": conv}}),
    );
    assert_eq!(subscribe["error"]["code"], 103, "{subscribe}");
    nothing_waiting(&mut carol, 5);
    engine.shutdown();
});

crate::e2e!(messages_over_the_limits_are_refused, |driver| {
    let mut config = im_config(driver);
    config.im.conversations_per_user_max = 1;
    let engine = start(config);
    let (mut alice, _) = im_connect(&engine, "alice", "", None);
    let long = "x".repeat(65);
    assert_eq!(
        send_text(&mut alice, 1, "bob", &long, None)["error"]["code"],
        106
    );
    let bad = command(
        &mut alice,
        json!({"id": 2, "method": "msg_send", "params": {"to": "bob", "kind": "attachment", "data": {"url": "u"}}}),
    );
    assert_eq!(bad["error"]["code"], 107, "{bad}");
    assert_eq!(
        send_text(&mut alice, 3, "b o b", "hi", None)["error"]["code"],
        110
    );
    assert!(send_text(&mut alice, 4, "bob", "hi", None)
        .get("result")
        .is_some());
    let second = send_text(&mut alice, 5, "carol", "hi", None);
    assert_eq!(second["error"]["code"], 126, "{second}");
    // The existing conversation still takes messages.
    assert_eq!(
        send_text(&mut alice, 6, "bob", "again", None)["result"]["offset"],
        2
    );
    engine.shutdown();
});

crate::e2e!(msg_send_counts_against_the_send_rate, |driver| {
    let mut config = im_config(driver);
    config.websocket.send_rate = 1;
    config.websocket.send_burst = 2;
    let engine = start(config);
    let (mut alice, _) = im_connect(&engine, "alice", "", None);
    for id in 1..=2 {
        assert!(send_text(&mut alice, id, "bob", "hi", None)
            .get("result")
            .is_some());
    }
    let limited = send_text(&mut alice, 3, "bob", "hi", None);
    assert_eq!(limited["error"]["code"], 114, "{limited}");
    assert!(
        limited["error"]["retry_after_ms"].as_u64().is_some(),
        "{limited}"
    );
    engine.shutdown();
});

#[test]
fn im_commands_answer_104_and_the_api_404_when_im_is_off() {
    let engine = start(config(ringcast_engine::config::Driver::Epoll, 1));
    let (mut alice, _) = connect(&engine, "alice");
    let reply = send_text(&mut alice, 1, "bob", "hi", None);
    assert_eq!(reply["error"]["code"], 104, "{reply}");
    let body = json!({"as_user": "alice", "to": "bob", "kind": "text", "data": {"text": "hi"}});
    let (status, _) = api(&engine, "POST", "/api/im/msg_send", Some(body));
    assert_eq!(status, 404);
    engine.shutdown();
}

crate::e2e!(the_api_twins_act_for_a_user, |driver| {
    let engine = start(im_config(driver));
    let (mut alice, _) = im_connect(&engine, "alice", "", Some(0));
    let (mut bob, _) = im_connect(&engine, "bob", "", Some(1));
    let send = json!({"as_user": "alice", "to": "bob", "kind": "text", "data": {"text": "from the backend"}, "client_msg_id": "api-1"});
    let (status, sent) = api(&engine, "POST", "/api/im/msg_send", Some(send.clone()));
    assert_eq!(status, 200, "{sent}");
    let conv = sent["conv"].as_str().unwrap().to_owned();
    assert_eq!(sent["offset"], 1);
    for ws in [&mut alice, &mut bob] {
        let push = next_push(ws);
        assert_eq!(push["sender"], "alice");
        assert_eq!(push["id"], sent["id"]);
    }
    let (status, again) = api(&engine, "POST", "/api/im/msg_send", Some(send));
    assert_eq!(
        (status, &again["duplicate"], &again["offset"]),
        (200, &json!(true), &json!(1))
    );

    let (status, list) = api(
        &engine,
        "POST",
        "/api/im/conv_list",
        Some(json!({"as_user": "bob"})),
    );
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["convs"][0]["conv"], conv.as_str());
    assert_eq!(list["convs"][0]["unread"], 1);
    assert_eq!(list["total_unread"], 1);

    let read = json!({"as_user": "bob", "conv": conv, "offset": 1});
    let (status, state) = api(&engine, "POST", "/api/im/read", Some(read));
    assert_eq!(status, 200, "{state}");
    assert_eq!(
        state,
        json!({"conv": conv, "offset": 1, "unread": 0, "total_unread": 0})
    );
    assert_eq!(
        read_json(&mut bob),
        json!({"read": {"conv": conv, "offset": 1, "unread": 0, "total_unread": 0}})
    );
    assert_eq!(
        read_json(&mut alice),
        json!({"receipt": {"conv": conv, "user": "bob", "read": 1}})
    );

    let stranger = json!({"as_user": "carol", "conv": conv, "offset": 1});
    let (status, error) = api(&engine, "POST", "/api/im/read", Some(stranger));
    assert_eq!(
        (status, &error["error"]["code"]),
        (403, &json!("not_member")),
        "{error}"
    );
    let long =
        json!({"as_user": "alice", "to": "bob", "kind": "text", "data": {"text": "x".repeat(65)}});
    let (status, error) = api(&engine, "POST", "/api/im/msg_send", Some(long));
    assert_eq!(
        (status, &error["error"]["code"]),
        (413, &json!("too_large")),
        "{error}"
    );
    let bad = json!({"as_user": "alice", "to": "bob", "kind": "text", "data": {"txt": "x"}});
    let (status, error) = api(&engine, "POST", "/api/im/msg_send", Some(bad));
    assert_eq!(
        (status, &error["error"]["code"]),
        (400, &json!("bad_request")),
        "{error}"
    );
    engine.shutdown();
});

fn read_binary(ws: &mut Ws) -> ringcast_protocol::client::ServerMessage {
    loop {
        match ws.read().expect("read") {
            tungstenite::Message::Binary(bytes) => {
                return ringcast_protocol::client::decode_server_binary(&bytes).expect("archive")
            }
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
            other => panic!("expected binary, got {other:?}"),
        }
    }
}

crate::e2e!(binary_clients_get_the_same_im_messages_archived, |driver| {
    use ringcast_protocol::client::{
        encode_binary_command, BinaryCommand, CommandBody, ImCommand, ImEvent, ImReply, MsgKind,
        ReplyResult, ServerMessage, SUBPROTOCOL_BINARY,
    };
    let engine = start(im_config(driver));
    let (mut bin, _) = connect_with(&engine, &token("bina"), Some(SUBPROTOCOL_BINARY));
    let ServerMessage::Im(sync) = read_binary(&mut bin) else {
        panic!("the sync follows the connect message");
    };
    assert!(
        matches!(*sync, ImEvent::Sync(ref info) if info.convs.is_empty()),
        "{sync:?}"
    );
    let (mut jason, _) = im_connect(&engine, "jason", "", None);
    let send = BinaryCommand {
        id: 9,
        body: CommandBody::Im(Box::new(ImCommand::MsgSend {
            to: Some("jason".into()),
            conv: None,
            kind: MsgKind::Text,
            data: br#"{"text":"archived"}"#.to_vec(),
            client_msg_id: None,
            echo: true,
        })),
    };
    bin.send(tungstenite::Message::Binary(encode_binary_command(&send)))
        .unwrap();
    let ServerMessage::Push(push) = read_binary(&mut bin) else {
        panic!("the push comes before the reply");
    };
    let ServerMessage::Reply { id: 9, result } = read_binary(&mut bin) else {
        panic!("then the reply");
    };
    let ReplyResult::Im(reply) = result else {
        panic!("an IM reply: {result:?}");
    };
    let ImReply::Sent { conv, offset, .. } = *reply else {
        panic!("a sent reply: {reply:?}");
    };
    assert_eq!(
        (push.channel.as_str(), push.offset),
        (conv.as_str(), offset)
    );
    assert_eq!(push.data, br#"{"kind":"text","data":{"text":"archived"}}"#);
    let json_push = next_push(&mut jason);
    assert_eq!(json_push["data"]["data"]["text"], "archived");
    // The peer's read reaches the binary client as an archived receipt.
    let read = command(
        &mut jason,
        json!({"id": 1, "method": "read", "params": {"conv": conv, "offset": offset}}),
    );
    assert!(read.get("result").is_some(), "{read}");
    let ServerMessage::Im(receipt) = read_binary(&mut bin) else {
        panic!("a receipt");
    };
    assert_eq!(
        *receipt,
        ImEvent::Receipt {
            conv,
            user: "jason".into(),
            read: offset
        }
    );
    engine.shutdown();
});

#[test]
fn membership_is_looked_up_in_the_users_list_after_a_restart() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = im_config(ringcast_engine::config::Driver::Epoll);
    config.server.data_dir = data_dir.path().to_path_buf();
    let engine = ringcast_engine::Engine::start(config.clone()).expect("starts");
    let (mut alice, _) = im_connect(&engine, "alice", "", None);
    let sent = send_text(&mut alice, 1, "bob", "before", None);
    let conv = sent["result"]["conv"].as_str().unwrap().to_owned();
    let (_bob, sync) = im_connect(&engine, "bob", "", None);
    let token = sync["token"].as_str().unwrap().to_owned();
    drop(alice);
    engine.shutdown();

    // A fresh process knows no pair; the syncs below list nothing (nothing
    // changed since the token), so every `conv` is looked up in a list.
    let engine = ringcast_engine::Engine::start(config).expect("restarts");
    let query = format!("im_since={token}");
    let (mut carol, _) = im_connect(&engine, "carol", "", None);
    let into = command(
        &mut carol,
        json!({"id": 1, "method": "msg_send", "params": {"conv": conv, "kind": "text", "data": {"text": "x"}}}),
    );
    assert_eq!(into["error"]["code"], 123, "{into}");
    let (mut bob, sync) = im_connect(&engine, "bob", &query, None);
    assert_eq!(sync["convs"], json!([]), "{sync}");
    let reply = command(
        &mut bob,
        json!({"id": 1, "method": "msg_send", "params": {"conv": conv, "kind": "text", "data": {"text": "after"}}}),
    );
    assert_eq!(reply["result"]["offset"], 2, "{reply}");
    let page = command(
        &mut bob,
        json!({"id": 2, "method": "history", "params": {"stream": conv}}),
    );
    let texts: Vec<_> = page["result"]["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p["data"]["data"]["text"].clone())
        .collect();
    assert_eq!(texts, [json!("before"), json!("after")]);
    engine.shutdown();
}

crate::e2e!(
    a_refused_first_message_leaves_no_conversation_to_name,
    |driver| {
        let engine = start(im_config(driver));
        let (mut alice, _) = im_connect(&engine, "alice", "", Some(0));
        let (mut bob, _) = im_connect(&engine, "bob", "", Some(1));
        for (id, user) in [(1, "bob"), (2, "dan")] {
            let reply = command(
                &mut alice,
                json!({"id": id, "method": "block", "params": {"user": user}}),
            );
            assert_eq!(reply["result"]["blocked"], true, "{reply}");
        }
        // Refused on a connection and through the API: no conversation
        // starts, and naming it afterwards is answered as for any stranger.
        let refused = send_text(&mut bob, 1, "alice", "hi", None);
        assert_eq!(refused["error"]["code"], 120, "{refused}");
        let body = json!({"as_user": "dan", "to": "alice", "kind": "text", "data": {"text": "hi"}});
        let (status, reply) = api_raw(
            engine.api_addr,
            "POST",
            "/api/im/msg_send",
            Some(&body.to_string()),
            Some(API_KEY),
        );
        assert_ne!(status, 200, "{reply}");
        let (mut dan, _) = im_connect(&engine, "dan", "", Some(2));
        for (ws, user) in [(&mut bob, "bob"), (&mut dan, "dan")] {
            let conv = ringcast_engine::im::DmPair::new("alice", user).conv_name();
            let reply = command(
                ws,
                json!({"id": 5, "method": "read", "params": {"conv": conv, "offset": 1}}),
            );
            assert_eq!(reply["error"]["code"], 123, "{user}: {reply}");
        }
        engine.shutdown();
    }
);
