//! The IM review's findings 4, 5, 8 and 10 over real sockets and a real
//! store (`/work/review-im-findings.md`; `docs/im.md`): a retried
//! `group_create` names the same group, across a restart too; `echo:
//! false` drops the sender's own pushes by message id and holds nothing
//! else back; `read` answers the total unread of DMs and groups across
//! devices and a restart; a DM's first message refused or taken leaves
//! the routing right.

use serde_json::{json, Value};

use crate::im_dm::{im_config, im_connect, next_push, nothing_waiting, send_text};
use crate::util::*;

/// An engine on a data directory kept for a restart with `config`.
fn start_to_restart() -> (
    tempfile::TempDir,
    ringcast_engine::config::Config,
    ringcast_engine::Engine,
) {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = im_config(ringcast_engine::config::Driver::Epoll);
    config.server.data_dir = data_dir.path().to_path_buf();
    let engine = ringcast_engine::Engine::start(config.clone()).expect("starts");
    (data_dir, config, engine)
}

fn group_create(ws: &mut Ws, id: u64, members: &[&str], client_msg_id: &str) -> Value {
    command(
        ws,
        json!({"id": id, "method": "group_create", "params": {"name": "team",
            "members": members, "client_msg_id": client_msg_id}}),
    )
}

fn conv_list(ws: &mut Ws, id: u64) -> Value {
    command(
        ws,
        json!({"id": id, "method": "conv_list", "params": {"limit": 100}}),
    )["result"]
        .clone()
}

fn groups_in(list: &Value) -> Vec<String> {
    list["convs"]
        .as_array()
        .expect("convs")
        .iter()
        .filter_map(|conv| conv["conv"].as_str())
        .filter(|conv| conv.starts_with("grp:"))
        .map(str::to_owned)
        .collect()
}

/// A retried `group_create` (the same `client_msg_id`) is answered with
/// the group it created, which is stored once: on the same connection, on
/// another device, after a restart, and through the API; another user's
/// same id, or another id, makes another group (review finding 4).
#[test]
fn a_retried_group_create_names_the_same_group_even_after_a_restart() {
    let (_data_dir, config, engine) = start_to_restart();
    let (mut alice, _) = im_connect(&engine, "alice", "", Some(0));
    let first = group_create(&mut alice, 1, &["bob"], "create-1");
    let conv = first["result"]["conv"].as_str().expect("conv").to_owned();
    assert_eq!(first["result"]["offset"], 1, "{first}");
    assert_ne!(first["result"]["duplicate"], true, "{first}");
    let retry = group_create(&mut alice, 2, &["bob"], "create-1");
    assert_eq!(retry["result"]["conv"], conv.as_str(), "{retry}");
    assert_eq!(retry["result"]["duplicate"], true, "{retry}");
    assert_eq!(retry["result"]["id"], first["result"]["id"]);
    let (mut alice2, _) = im_connect(&engine, "alice", "", Some(1));
    let other_device = group_create(&mut alice2, 1, &["bob"], "create-1");
    assert_eq!(other_device["result"]["conv"], conv.as_str());
    assert_eq!(other_device["result"]["duplicate"], true);
    let (mut bob, _) = im_connect(&engine, "bob", "", Some(2));
    let bobs = group_create(&mut bob, 1, &["alice"], "create-1");
    assert_ne!(
        bobs["result"]["conv"],
        conv.as_str(),
        "another creator's id"
    );
    let another = group_create(&mut alice, 3, &["bob"], "create-2");
    assert_ne!(another["result"]["conv"], conv.as_str(), "another id");
    assert_eq!(groups_in(&conv_list(&mut alice, 4)).len(), 3);
    drop((alice, alice2, bob));
    engine.shutdown();

    let engine = ringcast_engine::Engine::start(config).expect("restarts");
    let (mut alice, _) = im_connect(&engine, "alice", "", None);
    let after = group_create(&mut alice, 1, &["bob"], "create-1");
    assert_eq!(after["result"]["conv"], conv.as_str(), "{after}");
    assert_eq!(after["result"]["duplicate"], true, "{after}");
    assert_eq!(after["result"]["offset"], 1);
    let body = json!({"as_user": "alice", "name": "team", "members": ["bob"],
        "client_msg_id": "create-1"});
    let (status, reply) = api(&engine, "POST", "/api/im/group_create", Some(body));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["conv"], conv.as_str(), "{reply}");
    assert_eq!(reply["duplicate"], true, "{reply}");
    let groups = groups_in(&conv_list(&mut alice, 2));
    assert_eq!(groups.len(), 3, "nothing new: {groups:?}");
    assert!(groups.contains(&conv));
    // The system creating for two owners with one id makes two groups,
    // each its owner's; a retry for one owner is its original.
    let system_create = |owner: &str| {
        let body = json!({"owner": owner, "name": "welcome", "members": [],
            "client_msg_id": "welcome"});
        let (status, reply) = api(&engine, "POST", "/api/im/group_create", Some(body));
        assert_eq!(status, 200, "{reply}");
        reply
    };
    let carols = system_create("carol");
    let daves = system_create("dave");
    assert_ne!(carols["conv"], daves["conv"], "{carols} {daves}");
    assert_ne!(daves["duplicate"], true, "{daves}");
    let retried = system_create("carol");
    assert_eq!(retried["conv"], carols["conv"]);
    assert_eq!(retried["duplicate"], true, "{retried}");
    for (owner, reply) in [("carol", &carols), ("dave", &daves)] {
        let conv = reply["conv"].as_str().expect("conv");
        let body = json!({"conv": conv});
        let (status, info) = api(&engine, "POST", "/api/im/group_info", Some(body));
        assert_eq!(status, 200, "{info}");
        assert_eq!(info["owner"], owner, "{info}");
    }
    engine.shutdown();
}

/// Replies read from the sending connection (`echo: false` sends kept
/// `WINDOW` in flight, a new one sent for each reply) before another
/// member's message must have arrived: holding the conversation's pushes
/// while a send is in flight would never let it through.
const REPLIES_BEFORE_A_PUSH_MAX: usize = 64;
const WINDOW: usize = 6;

// `echo: false` drops exactly the sender's own pushes (by message id) on
// the sending connection, whenever they come, and holds nothing else:
// while its sends stay in flight without a pause, another member's
// messages keep reaching it; the sender's other device gets every message
// (review finding 5).
crate::e2e!(
    echo_false_drops_own_pushes_and_holds_no_one_elses,
    |driver| {
        let engine = start(im_config(driver));
        let (mut sender, _) = im_connect(&engine, "sam", "", Some(0));
        let (mut other_device, _) = im_connect(&engine, "sam", "", Some(1));
        let (mut olga, _) = im_connect(&engine, "olga", "", Some(2));
        let created = group_create(&mut sender, 1, &["olga"], "echo-group");
        let conv = created["result"]["conv"].as_str().expect("conv").to_owned();
        assert_eq!(next_push(&mut other_device)["offset"], 1);
        assert_eq!(next_push(&mut olga)["offset"], 1);

        let mut next_id = 10u64;
        let mut sent = 0usize;
        let quiet = |ws: &mut Ws, next_id: &mut u64| {
            *next_id += 1;
            send_json(
                ws,
                json!({"id": *next_id, "method": "msg_send", "params": {"conv": conv,
                    "kind": "text", "data": {"text": "quiet"}, "echo": false}}),
            );
        };
        for _ in 0..WINDOW {
            quiet(&mut sender, &mut next_id);
            sent += 1;
        }
        let mut replies = 0usize;
        let olga_messages = 12u64;
        for n in 0..olga_messages {
            let words = format!("olga {n}");
            let reply = command(
                &mut olga,
                json!({"id": 1000 + n, "method": "msg_send", "params": {"conv": conv,
                    "kind": "text", "data": {"text": words}}}),
            );
            let offset = reply["result"]["offset"].clone();
            assert!(offset.is_u64(), "{reply}");
            // Stored: it reaches the sender while its sends stay in flight.
            let mut waited = 0;
            loop {
                let message = read_json(&mut sender);
                if let Some(push) = message.get("push") {
                    assert_eq!(push["sender"], "olga", "no own push: {push}");
                    if push["offset"] == offset {
                        assert_eq!(push["data"]["data"]["text"], words.as_str());
                        break;
                    }
                    continue;
                }
                assert!(message["result"]["offset"].is_u64(), "{message}");
                replies += 1;
                waited += 1;
                assert!(
                    waited <= REPLIES_BEFORE_A_PUSH_MAX,
                    "olga's message {n} held back behind the sender's own sends"
                );
                quiet(&mut sender, &mut next_id);
                sent += 1;
            }
        }
        // The last sends' replies, and no push of the sender's own.
        while replies < sent {
            let message = read_json(&mut sender);
            assert!(message.get("push").is_none(), "no own push: {message}");
            assert!(message["result"]["offset"].is_u64(), "{message}");
            replies += 1;
        }
        nothing_waiting(&mut sender, 9_999);
        // The sender's other device got every message, its own included.
        let (mut own, mut olgas) = (0usize, 0u64);
        while own < sent || olgas < olga_messages {
            let push = next_push(&mut other_device);
            match push["sender"].as_str() {
                Some("sam") => own += 1,
                Some("olga") => olgas += 1,
                other => panic!("unexpected sender {other:?}"),
            }
        }
        nothing_waiting(&mut other_device, 9_998);
        engine.shutdown();
    }
);

fn read_total(ws: &mut Ws, id: u64, conv: &str, offset: u64) -> Value {
    command(
        ws,
        json!({"id": id, "method": "read", "params": {"conv": conv, "offset": offset}}),
    )["result"]
        .clone()
}

/// The next `read` event on a connection, pushes skipped.
fn next_read_event(ws: &mut Ws) -> Value {
    loop {
        let message = read_json(ws);
        if let Some(read) = message.get("read") {
            return read.clone();
        }
        assert!(message.get("push").is_some(), "{message}");
    }
}

/// `read` answers the user's total unread over its DMs and groups (one
/// reader call, no list page: review finding 8), the same on its other
/// device's `read` event, and the same after a restart, when its DM's
/// membership is a point read of its view.
#[test]
fn read_answers_the_total_unread_across_devices_and_a_restart() {
    let (_data_dir, config, engine) = start_to_restart();
    let (mut ann, _) = im_connect(&engine, "ann", "", Some(0));
    let (mut ann2, _) = im_connect(&engine, "ann", "", Some(1));
    let (mut ben, _) = im_connect(&engine, "ben", "", Some(2));
    let group = group_create(&mut ben, 1, &["ann"], "g");
    let group = group["result"]["conv"].as_str().expect("conv").to_owned();
    let mut dm = String::new();
    for n in 0..3 {
        let sent = send_text(&mut ben, 10 + n, "ann", "dm", None);
        dm = sent["result"]["conv"].as_str().expect("conv").to_owned();
        command(
            &mut ben,
            json!({"id": 20 + n, "method": "msg_send", "params": {"conv": group,
                "kind": "text", "data": {"text": "g"}}}),
        );
    }
    // 3 DMs and 3 group messages unread; the DM read to 2 leaves 1 + 3.
    let read = read_total(&mut ann, 1, &dm, 2);
    assert_eq!(
        (&read["unread"], &read["total_unread"]),
        (&json!(1), &json!(4))
    );
    let event = next_read_event(&mut ann2);
    assert_eq!(
        (&event["conv"], &event["total_unread"]),
        (&json!(dm), &json!(4))
    );
    // The group read to its second message (offset 3): 1 + 1.
    let read = read_total(&mut ann2, 1, &group, 3);
    assert_eq!(
        (&read["unread"], &read["total_unread"]),
        (&json!(1), &json!(2))
    );
    assert_eq!(next_read_event(&mut ann)["total_unread"], 2);
    drop((ann, ann2, ben));
    engine.shutdown();

    let engine = ringcast_engine::Engine::start(config).expect("restarts");
    let (mut ann, sync) = im_connect(&engine, "ann", "", None);
    assert_eq!(sync["total_unread"], 2, "{sync}");
    // No pair is known to a fresh process: the DM's membership is read.
    let read = read_total(&mut ann, 1, &dm, 3);
    assert_eq!(
        (&read["unread"], &read["total_unread"]),
        (&json!(0), &json!(1))
    );
    let (mut carl, _) = im_connect(&engine, "carl", "", None);
    let stranger = command(
        &mut carl,
        json!({"id": 1, "method": "read", "params": {"conv": dm, "offset": 1}}),
    );
    assert_eq!(stranger["error"]["code"], 123, "{stranger}");
    let read = read_total(&mut ann, 2, &group, 4);
    assert_eq!(
        (&read["unread"], &read["total_unread"]),
        (&json!(0), &json!(0))
    );
    engine.shutdown();
}

// A first message the store refuses leaves no pair behind, while the
// same pair's message the store takes from the other side is routed to
// every device of both users: the pair is remembered from the store's
// commit, not before (review finding 10), over many fresh pairs.
crate::e2e!(
    a_dm_started_from_the_other_side_of_a_refused_one_is_routed,
    |driver| {
        let engine = start(im_config(driver));
        for n in 0..6 {
            let (a, b) = (format!("pa{n}"), format!("pb{n}"));
            let (mut a_ws, _) = im_connect(&engine, &a, "", Some(n % 3));
            let (mut b_ws, _) = im_connect(&engine, &b, "", Some((n + 1) % 3));
            // b takes DMs from contacts only, and a is not one: a's first
            // message is refused; b's to a is taken.
            let (status, reply) = api(
                &engine,
                "POST",
                "/api/im/dm_policy",
                Some(json!({"as_user": b, "policy": "contacts"})),
            );
            assert_eq!(status, 200, "{reply}");
            send_json(
                &mut a_ws,
                json!({"id": 1, "method": "msg_send", "params": {"to": b, "kind": "text",
                    "data": {"text": "refused"}}}),
            );
            send_json(
                &mut b_ws,
                json!({"id": 1, "method": "msg_send", "params": {"to": a, "kind": "text",
                    "data": {"text": "taken"}}}),
            );
            let mut refused = false;
            let mut pushed = false;
            while !(refused && pushed) {
                let message = read_json(&mut a_ws);
                if let Some(push) = message.get("push") {
                    assert_eq!(push["data"]["data"]["text"], "taken", "{push}");
                    pushed = true;
                } else {
                    assert_eq!(message["error"]["code"], 103, "{message}");
                    refused = true;
                }
            }
            let push = next_push(&mut b_ws);
            assert_eq!(push["data"]["data"]["text"], "taken");
            let reply = read_json(&mut b_ws);
            assert_eq!(reply["result"]["offset"], 1, "{reply}");
        }
        engine.shutdown();
    }
);

/// Sends of the busy-conversation test, in two halves around another
/// member's message.
const BUSY_SENDS: usize = 800;

/// A busy conversation: the sender's `echo: false` sends are in flight
/// the whole time (two pipelined halves, another member's message
/// between them). That member's message still reaches the sender when it
/// is stored, with most of the second half's replies after it, not held
/// until the sender's sends drain (review finding 5); the sender gets
/// none of its own pushes.
#[test]
fn echo_false_holds_nothing_back_in_a_busy_conversation() {
    let engine = start(im_config(ringcast_engine::config::Driver::Epoll));
    let (mut sender, _) = im_connect(&engine, "sam", "", Some(0));
    let (mut olga, _) = im_connect(&engine, "olga", "", Some(1));
    let created = group_create(&mut sender, 1, &["olga"], "busy-group");
    let conv = created["result"]["conv"].as_str().expect("conv").to_owned();
    assert_eq!(next_push(&mut olga)["offset"], 1);
    let quiet = |ws: &mut Ws, id: usize| {
        send_json(
            ws,
            json!({"id": 10 + id, "method": "msg_send", "params": {"conv": conv,
                "kind": "text", "data": {"text": "quiet"}, "echo": false}}),
        );
    };
    for id in 0..BUSY_SENDS / 2 {
        quiet(&mut sender, id);
    }
    send_json(
        &mut olga,
        json!({"id": 2, "method": "msg_send", "params": {"conv": conv,
            "kind": "text", "data": {"text": "olga"}}}),
    );
    for id in BUSY_SENDS / 2..BUSY_SENDS {
        quiet(&mut sender, id);
    }
    let (mut replies, mut replies_after) = (0usize, None);
    while replies < BUSY_SENDS {
        let message = read_json(&mut sender);
        if let Some(push) = message.get("push") {
            assert_eq!(push["sender"], "olga", "no own push: {push}");
            assert!(replies_after.is_none(), "olga's message once");
            replies_after = Some(0);
            continue;
        }
        assert!(message["result"]["offset"].is_u64(), "{message}");
        replies += 1;
        if let Some(after) = replies_after.as_mut() {
            *after += 1;
        }
    }
    let replies_after = replies_after.expect("olga's message reached the sender");
    assert!(
        replies_after >= BUSY_SENDS / 8,
        "olga's message came with only {replies_after} of {BUSY_SENDS} replies after it: held back"
    );
    nothing_waiting(&mut sender, 9_999);
    engine.shutdown();
}

/// The next message on `ws` that is not a push: an event or a reply.
fn next_non_push(ws: &mut Ws) -> Value {
    loop {
        let message = read_json(ws);
        if message.get("push").is_none() {
            return message;
        }
    }
}

// A member who left a group still acks its window (answered, its cursor
// kept), but the members are told nothing: only a member's ack sends
// `delivered` (review finding 13).
crate::e2e!(
    a_left_members_ack_sends_the_members_no_delivered,
    |driver| {
        let engine = start(im_config(driver));
        let (mut owner, _) = im_connect(&engine, "oona", "", Some(0));
        let (mut leaver, _) = im_connect(&engine, "liam", "", Some(1));
        let (mut member, _) = im_connect(&engine, "mia", "", Some(2));
        let created = group_create(&mut owner, 1, &["liam", "mia"], "left-ack");
        let conv = created["result"]["conv"].as_str().expect("conv").to_owned();
        let said = command(
            &mut owner,
            json!({"id": 2, "method": "msg_send", "params": {"conv": conv, "kind": "text",
                "data": {"text": "hi"}}}),
        );
        assert_eq!(said["result"]["offset"], 2, "{said}");
        let left = command(
            &mut leaver,
            json!({"id": 1, "method": "group_leave", "params": {"conv": conv}}),
        );
        assert_eq!(left["result"]["offset"], 3, "{left}");
        // Every push so far read, on every connection.
        for ws in [&mut owner, &mut member] {
            while next_push(ws)["offset"] != 3 {}
        }
        nothing_waiting(&mut owner, 3);
        nothing_waiting(&mut member, 1);
        nothing_waiting(&mut leaver, 2);
        let ack = command(
            &mut leaver,
            json!({"id": 3, "method": "ack", "params": {"stream": conv, "offset": 2}}),
        );
        assert_eq!(ack["result"], json!({}), "{ack}");
        nothing_waiting(&mut owner, 4);
        nothing_waiting(&mut member, 2);
        // A member's ack is news.
        let ack = command(
            &mut member,
            json!({"id": 3, "method": "ack", "params": {"stream": conv, "offset": 2}}),
        );
        assert_eq!(ack["result"], json!({}), "{ack}");
        assert_eq!(
            next_non_push(&mut owner),
            json!({"delivered": {"conv": conv, "user": "mia", "offset": 2}})
        );
        engine.shutdown();
    }
);

/// After a restart the process knows no pair: commands naming a DM by
/// `conv` wait on a lookup of its pair on a store reader. A connection's
/// sends pipelined there are stored in its order, whatever order the
/// lookups answer in (the later ones wait behind the first).
#[test]
fn pipelined_sends_by_conv_name_keep_their_order_after_a_restart() {
    let (_data_dir, config, engine) = start_to_restart();
    let (mut friend, _) = im_connect(&engine, "friend", "", Some(0));
    let first = send_text(&mut friend, 1, "dave", "m0", None);
    let conv = first["result"]["conv"].as_str().expect("conv").to_owned();
    drop(friend);
    engine.shutdown();

    let engine = ringcast_engine::Engine::start(config).expect("restarts");
    let (mut friend, _) = im_connect(&engine, "friend", "", None);
    const SENDS: u64 = 30;
    for id in 1..=SENDS {
        send_json(
            &mut friend,
            json!({"id": id, "method": "msg_send", "params": {"conv": conv,
                "kind": "text", "data": {"text": format!("m{id}")}, "echo": false}}),
        );
    }
    let mut offsets = vec![0; SENDS as usize];
    while offsets.contains(&0) {
        let reply = read_json(&mut friend);
        let Some(id) = reply["id"].as_u64() else {
            continue;
        };
        offsets[id as usize - 1] = reply["result"]["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("not stored: {reply}"));
    }
    let in_order: Vec<u64> = (2..=SENDS + 1).collect();
    assert_eq!(
        offsets, in_order,
        "each send's offset is its place in the send order"
    );
    engine.shutdown();
}
