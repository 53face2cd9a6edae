//! Recall, edit and clear in groups over real sockets (`docs/im.md`,
//! "Recall, edit, delete"), on three shards: the sender recalls within the
//! window, an admin after it, a plain member is refused (103), a stranger
//! too (123), the sender past the window (125); every member's connection
//! gets the event, history and a reconnecting member's replay show the
//! tombstone, the list's last message moves back; an edit reaches every
//! member; a clear hides entries from its user alone.

use std::time::Duration;

use serde_json::{json, Value};

use crate::im_groups::{call, code, im_config, im_connect, next_push, nothing_waiting, say};
use crate::util::*;

fn recall_config(driver: ringcast_engine::config::Driver) -> ringcast_engine::config::Config {
    let mut config = im_config(driver);
    config.im.recall_window = Duration::from_secs(1);
    config
}

/// A group `name` created by `ws`'s user with `members`: its conversation.
fn create(ws: &mut Ws, name: &str, members: &[&str]) -> String {
    let (reply, _) = call(
        ws,
        1,
        "group_create",
        json!({"name": name, "members": members}),
    );
    reply["result"]["conv"]
        .as_str()
        .unwrap_or_else(|| panic!("{reply}"))
        .to_owned()
}

/// The offsets and data of a history page.
fn history(ws: &mut Ws, id: u64, conv: &str) -> Vec<(u64, Value)> {
    let (page, _) = call(ws, id, "history", json!({"stream": conv}));
    page["result"]["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|p| (p["offset"].as_u64().unwrap(), p["data"].clone()))
        .collect()
}

/// The group's entry in `ws`'s user's list: (unread, last_msg_offset).
fn listed(ws: &mut Ws, id: u64) -> (Value, Value) {
    let (list, _) = call(ws, id, "conv_list", json!({}));
    let conv = &list["result"]["convs"][0];
    (conv["unread"].clone(), conv["last_msg_offset"].clone())
}

const TOMBSTONE: fn() -> Value = || json!({"kind": "text", "state": "recalled"});

/// The test's connections, by index.
const OWNER: usize = 0;
const ADA: usize = 1;
const M1: usize = 2;
const M2: usize = 3;
const PHONE: usize = 4;

/// A recall or edit, and the event's push to the sending connection,
/// which comes before the reply (as a message's does).
fn rewrite(ws: &mut Ws, id: u64, method: &str, params: Value) -> (Value, Value) {
    let (reply, own) = call(ws, id, method, params);
    assert_eq!(own.len(), 1, "the event's push, then the reply: {reply}");
    (reply, own[0].clone())
}

/// The next push of every connection but `but`'s.
fn pushes_but(devices: &mut [Ws], but: usize) -> Vec<Value> {
    devices
        .iter_mut()
        .enumerate()
        .filter(|(index, _)| *index != but)
        .map(|(_, ws)| next_push(ws))
        .collect()
}

crate::e2e!(
    group_recalls_follow_the_roles_and_reach_every_member,
    |driver| {
        let engine = start(recall_config(driver));
        let mut d: Vec<Ws> = [("owner", 0), ("ada", 1), ("m1", 2), ("m2", 0), ("m2", 2)]
            .iter()
            .map(|(user, shard)| im_connect(&engine, user, *shard).0)
            .collect();
        let (mut zed, _) = im_connect(&engine, "zed", 1);

        let conv = create(&mut d[OWNER], "ops", &["ada", "m1", "m2"]);
        let (reply, _) = call(
            &mut d[OWNER],
            2,
            "group_role",
            json!({"conv": conv, "user": "ada", "role": "admin"}),
        );
        assert_eq!(reply["result"]["offset"], 2, "{reply}");
        for offset in [1, 2] {
            for push in pushes_but(&mut d, OWNER) {
                assert_eq!(push["offset"], offset);
            }
        }
        // m1 says one (3), m2 two (4), m1 three (5).
        let mut sent = Vec::new();
        for (n, (who, words)) in [(M1, "one"), (M2, "two"), (M1, "three")].iter().enumerate() {
            let (reply, _) = say(&mut d[*who], 10 + n as u64, &conv, words);
            assert_eq!(reply["result"]["offset"], 3 + n as u64, "{reply}");
            for push in pushes_but(&mut d, *who) {
                assert_eq!(push["data"]["data"]["text"], *words);
            }
            sent.push(reply["result"].clone());
        }
        assert_eq!(listed(&mut d[ADA], 20), (json!(3), json!(5)));

        // The sender within the window: the event (6) to every member's
        // connections on every shard, the sender's own first.
        let (reply, own) = rewrite(&mut d[M1], 21, "recall", json!({"conv": conv, "offset": 5}));
        assert_eq!(
            reply["result"],
            json!({"conv": conv, "offset": 6, "ref_offset": 5, "edits": 0}),
            "{reply}"
        );
        let event = json!({"kind": "recall", "data": {"ref_offset": 5, "ref_id": sent[2]["id"]}});
        assert_eq!(own["data"], event, "the sender's connection gets it first");
        for push in pushes_but(&mut d, M1) {
            assert_eq!(
                (&push["data"], &push["offset"], &push["sender"]),
                (&event, &json!(6), &json!("m1"))
            );
        }
        // History shows the tombstone with the original's id; the list's
        // last message moves back to 4, and unread drops by one.
        let page = history(&mut d[ADA], 22, &conv);
        assert_eq!(page[4], (5, TOMBSTONE()), "{page:?}");
        assert!(!format!("{page:?}").contains("three"));
        assert_eq!(listed(&mut d[ADA], 23), (json!(2), json!(4)));

        // A plain member may not recall another's message; a stranger is
        // no member; a recalled message is recalled already.
        let (reply, _) = call(&mut d[M2], 24, "recall", json!({"conv": conv, "offset": 3}));
        assert_eq!(code(&reply), 103, "{reply}");
        let (reply, _) = call(&mut zed, 25, "recall", json!({"conv": conv, "offset": 3}));
        assert_eq!(code(&reply), 123, "{reply}");
        let (reply, _) = call(&mut d[M1], 26, "recall", json!({"conv": conv, "offset": 5}));
        assert_eq!(code(&reply), 107, "{reply}");

        // An edit by its sender reaches every member.
        let (reply, _) = rewrite(
            &mut d[M2],
            27,
            "edit",
            json!({"conv": conv, "offset": 4, "data": {"text": "deux"}}),
        );
        assert_eq!(reply["result"]["offset"], 7, "{reply}");
        for push in pushes_but(&mut d, M2) {
            assert_eq!(push["data"]["kind"], "edit", "{push}");
            assert_eq!(push["data"]["data"]["data"]["text"], "deux");
        }

        // m2's phone goes away; past the window the sender is refused
        // (125) and the admin recalls m1's message (3) all the same.
        drop(d.remove(PHONE));
        std::thread::sleep(Duration::from_millis(1100));
        let (reply, _) = call(&mut d[M1], 28, "recall", json!({"conv": conv, "offset": 3}));
        assert_eq!(code(&reply), 125, "{reply}");
        let (reply, _) = rewrite(
            &mut d[ADA],
            29,
            "recall",
            json!({"conv": conv, "offset": 3}),
        );
        assert_eq!(reply["result"]["offset"], 8, "{reply}");
        for push in pushes_but(&mut d, ADA) {
            assert_eq!(push["data"]["kind"], "recall", "{push}");
            assert_eq!(push["data"]["data"]["ref_offset"], 3);
            assert_eq!(push["sender"], "ada");
        }
        // The admin may not recall the owner's message.
        let (reply, _) = say(&mut d[OWNER], 30, &conv, "from the owner");
        assert_eq!(reply["result"]["offset"], 9);
        pushes_but(&mut d, OWNER);
        let (reply, _) = call(
            &mut d[ADA],
            31,
            "recall",
            json!({"conv": conv, "offset": 9}),
        );
        assert_eq!(code(&reply), 103, "{reply}");

        // The phone reconnects: its sync carries the lowered unread, its
        // replay and history the tombstones and the edited message.
        let (mut phone, sync) = im_connect(&engine, "m2", 1);
        assert_eq!(sync["convs"][0]["conv"], conv.as_str(), "{sync}");
        assert_eq!(sync["convs"][0]["unread"], 1, "{sync}");
        send_json(
            &mut phone,
            json!({"id": 1, "method": "catchup", "params": {"convs": [{"conv": conv, "since": 0}]}}),
        );
        let mut replayed = Vec::new();
        loop {
            let message = read_json(&mut phone);
            match message.get("push") {
                Some(push) => {
                    replayed.push((push["offset"].as_u64().unwrap(), push["data"].clone()))
                }
                None => {
                    assert_eq!(message["id"], 1, "{message}");
                    break;
                }
            }
        }
        let at = |entries: &[(u64, Value)], offset: u64| {
            entries
                .iter()
                .find(|(o, _)| *o == offset)
                .map(|(_, data)| data.clone())
                .unwrap_or_else(|| panic!("no offset {offset}: {entries:?}"))
        };
        for entries in [replayed, history(&mut phone, 2, &conv)] {
            assert_eq!(at(&entries, 3), TOMBSTONE());
            assert_eq!(at(&entries, 5), TOMBSTONE());
            assert_eq!(
                at(&entries, 4),
                json!({"kind": "text", "data": {"text": "deux"}, "state": "edited"})
            );
            assert!(!format!("{entries:?}").contains("three"));
        }
        nothing_waiting(&mut zed, 40);
        engine.shutdown();
    }
);

crate::e2e!(a_group_clear_hides_entries_from_its_user_alone, |driver| {
    let engine = start(recall_config(driver));
    let (mut owner, _) = im_connect(&engine, "owner", 0);
    let (mut bob, _) = im_connect(&engine, "bob", 1);
    let (mut zed, _) = im_connect(&engine, "zed", 2);
    let conv = create(&mut owner, "c", &["bob"]);
    next_push(&mut bob);
    for n in 0..3 {
        say(&mut owner, 2 + n, &conv, "hello");
        next_push(&mut bob);
    }
    assert_eq!(listed(&mut bob, 1).0, 3);
    let (reply, _) = call(&mut bob, 2, "clear", json!({"conv": conv, "upto": 3}));
    assert_eq!(
        reply["result"],
        json!({"conv": conv, "visible_from": 4, "unread": 1, "total_unread": 1}),
        "{reply}"
    );
    let offsets = |page: Vec<(u64, Value)>| page.into_iter().map(|(o, _)| o).collect::<Vec<_>>();
    assert_eq!(offsets(history(&mut bob, 3, &conv)), [4]);
    assert_eq!(offsets(history(&mut owner, 10, &conv)), [1, 2, 3, 4]);
    let (reply, _) = call(&mut zed, 1, "clear", json!({"conv": conv, "upto": 1}));
    assert_eq!(code(&reply), 123, "{reply}");
    // The API twin, for the owner.
    let (status, reply) = api(
        &engine,
        "POST",
        "/api/im/clear",
        Some(json!({"as_user": "owner", "conv": conv, "upto": 2})),
    );
    assert_eq!(
        (status, &reply["visible_from"]),
        (200, &json!(3)),
        "{reply}"
    );
    assert_eq!(offsets(history(&mut owner, 11, &conv)), [3, 4]);
    assert_eq!(offsets(history(&mut bob, 4, &conv)), [4]);
    engine.shutdown();
});

#[test]
fn the_api_recalls_a_group_message_as_the_system_and_as_a_user() {
    let engine = start(recall_config(ringcast_engine::config::Driver::Epoll));
    let (mut owner, _) = im_connect(&engine, "owner", 0);
    let (mut bob, _) = im_connect(&engine, "bob", 1);
    let conv = create(&mut owner, "api", &["bob"]);
    next_push(&mut bob);
    say(&mut bob, 1, &conv, "one");
    say(&mut bob, 2, &conv, "two");
    for _ in 0..2 {
        next_push(&mut owner);
    }
    std::thread::sleep(Duration::from_millis(1100));
    let post = |body: Value| api(&engine, "POST", "/api/im/recall", Some(body));
    // bob past its window: 409; the system at any time.
    let (status, reply) = post(json!({"as_user": "bob", "conv": conv, "offset": 2}));
    assert_eq!(
        (status, &reply["error"]["code"]),
        (409, &json!("window_passed")),
        "{reply}"
    );
    let (status, reply) = post(json!({"as_user": "zed", "conv": conv, "offset": 2}));
    assert_eq!(
        (status, &reply["error"]["code"]),
        (403, &json!("not_member")),
        "{reply}"
    );
    let (status, reply) = post(json!({"conv": conv, "offset": 2}));
    assert_eq!((status, &reply["ref_offset"]), (200, &json!(2)), "{reply}");
    for ws in [&mut owner, &mut bob] {
        let push = next_push(ws);
        assert_eq!(push["data"]["kind"], "recall", "{push}");
        assert!(
            push.get("sender").is_none_or(|sender| sender == ""),
            "the system: {push}"
        );
    }
    // The owner, as a user, at any time.
    let (status, reply) = post(json!({"as_user": "owner", "conv": conv, "offset": 3}));
    assert_eq!((status, &reply["offset"]), (200, &json!(5)), "{reply}");
    for ws in [&mut owner, &mut bob] {
        assert_eq!(next_push(ws)["data"]["data"]["ref_offset"], 3);
    }
    assert_eq!(listed(&mut bob, 3), (json!(0), json!(0)));
    engine.shutdown();
}

/// The next message of `ws`: a `receipt` event's body.
fn next_receipt(ws: &mut Ws) -> Value {
    let message = read_json(ws);
    message
        .get("receipt")
        .unwrap_or_else(|| panic!("expected a receipt, got {message}"))
        .clone()
}

crate::e2e!(
    a_group_read_is_told_to_the_members_coalesced_per_member,
    |driver| {
        let engine = start(im_config(driver));
        let mut d: Vec<Ws> = [("owner", 0), ("bob", 1), ("bob", 2), ("carol", 2)]
            .iter()
            .map(|(user, shard)| im_connect(&engine, user, *shard).0)
            .collect();
        let (owner, bob, bob2, carol) = (0, 1, 2, 3);
        let conv = create(&mut d[owner], "r", &["bob", "carol"]);
        pushes_but(&mut d, owner);
        for n in 0..3 {
            say(&mut d[owner], 2 + n, &conv, "hello");
            pushes_but(&mut d, owner);
        }
        // carol's first read goes to every other member's connections at
        // once, wherever they are; not to carol.
        let first_read = std::time::Instant::now();
        let (reply, _) = call(&mut d[carol], 1, "read", json!({"conv": conv, "offset": 2}));
        assert_eq!(reply["result"]["unread"], 2, "{reply}");
        let receipt = json!({"conv": conv, "user": "carol", "read": 2});
        for ws in [owner, bob, bob2] {
            assert_eq!(next_receipt(&mut d[ws]), receipt);
        }
        // Two more reads within the interval: one receipt, the newest
        // position, when the interval ends.
        call(&mut d[carol], 2, "read", json!({"conv": conv, "offset": 3}));
        call(&mut d[carol], 3, "read", json!({"conv": conv, "offset": 4}));
        let within = first_read.elapsed() < Duration::from_millis(400);
        for ws in [owner, bob, bob2] {
            let mut seen = Vec::new();
            while seen.last() != Some(&json!(4)) {
                seen.push(next_receipt(&mut d[ws])["read"].clone());
            }
            if within {
                assert_eq!(seen, [json!(4)], "folded into one receipt");
            } else {
                // A slow machine: the second read came after the interval.
                assert_eq!(seen, [json!(3), json!(4)]);
            }
            nothing_waiting(&mut d[ws], 9);
        }
        nothing_waiting(&mut d[carol], 4);
        // bob's read: its other device gets the read event, the others
        // the receipt.
        call(&mut d[bob], 6, "read", json!({"conv": conv, "offset": 4}));
        assert_eq!(read_json(&mut d[bob2])["read"]["offset"], 4);
        for ws in [owner, carol] {
            assert_eq!(
                next_receipt(&mut d[ws]),
                json!({"conv": conv, "user": "bob", "read": 4})
            );
        }
        // The API twin, for the owner.
        let (status, reply) = api(
            &engine,
            "POST",
            "/api/im/read",
            Some(json!({"as_user": "owner", "conv": conv, "offset": 4})),
        );
        assert_eq!(status, 200, "{reply}");
        for ws in [bob, bob2, carol] {
            assert_eq!(next_receipt(&mut d[ws])["user"], "owner");
        }
        engine.shutdown();
    }
);

#[test]
fn groups_over_the_receipts_size_gate_push_no_read_receipts() {
    let mut config = im_config(ringcast_engine::config::Driver::Epoll);
    config.im.group_receipts_members_max = 2;
    let engine = start(config);
    let (mut owner, _) = im_connect(&engine, "owner", 0);
    let (mut bob, _) = im_connect(&engine, "bob", 1);
    let small = create(&mut owner, "two", &["bob"]);
    next_push(&mut bob);
    let large = create(&mut owner, "three", &["bob", "carol"]);
    next_push(&mut bob);
    for conv in [&large, &small] {
        call(&mut bob, 1, "read", json!({"conv": conv, "offset": 1}));
    }
    // Only the small group's read is told.
    assert_eq!(
        next_receipt(&mut owner),
        json!({"conv": small, "user": "bob", "read": 1})
    );
    nothing_waiting(&mut owner, 2);
    engine.shutdown();
}

/// A member removed after two messages asks for the group's history,
/// with `history_after_leave` as given: the offsets it reads, or its error.
fn history_after_removal(history_after_leave: bool) -> Value {
    let mut config = im_config(ringcast_engine::config::Driver::Epoll);
    config.im.history_after_leave = history_after_leave;
    let engine = start(config);
    let (mut owner, _) = im_connect(&engine, "owner", 0);
    let (mut bob, _) = im_connect(&engine, "bob", 1);
    let conv = create(&mut owner, "leave", &["bob", "carol"]);
    next_push(&mut bob);
    say(&mut owner, 2, &conv, "one");
    next_push(&mut bob);
    let (reply, _) = call(
        &mut owner,
        3,
        "group_remove",
        json!({"conv": conv, "users": ["bob"]}),
    );
    assert_eq!(reply["result"]["offset"], 3, "{reply}");
    assert_eq!(next_push(&mut bob)["offset"], 3);
    say(&mut owner, 4, &conv, "after");
    let (page, _) = call(&mut bob, 1, "history", json!({"stream": conv}));
    // Its own view still reads and clears its badge either way.
    let (read, _) = call(&mut bob, 2, "read", json!({"conv": conv, "offset": 9}));
    assert_eq!(read["result"]["offset"], 3, "clamped to its window: {read}");
    engine.shutdown();
    match page["result"]["publications"].as_array() {
        Some(entries) => json!(entries
            .iter()
            .map(|e| e["offset"].clone())
            .collect::<Vec<_>>()),
        None => page["error"]["code"].clone(),
    }
}

#[test]
fn history_after_leave_chooses_what_a_former_member_reads() {
    assert_eq!(history_after_removal(false), json!(123), "the default");
    assert_eq!(history_after_removal(true), json!([1, 2, 3]));
}
