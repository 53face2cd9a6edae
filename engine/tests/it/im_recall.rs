//! Recall and edit of direct messages over real sockets (`docs/im.md`,
//! "Recall, edit, delete"), on several shards: a recalled message is a
//! tombstone in history and after a reconnect, every device of both users
//! gets the recall as a push, unread drops on every device, the content is
//! gone; the windows (125), the rights (103, 123), edits and `edits_max`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::im_dm::{im_config, im_connect, next_push, nothing_waiting, send_text};
use crate::util::*;

fn recall_config() -> ringcast_engine::config::Config {
    let mut config = im_config(ringcast_engine::config::Driver::Epoll);
    config.im.recall_window = Duration::from_secs(1);
    config.im.edits_max = 2;
    config
}

fn unread(ws: &mut Ws, id: u64) -> (Value, Value) {
    let page = command(ws, json!({"id": id, "method": "conv_list"}));
    let conv = &page["result"]["convs"][0];
    (conv["unread"].clone(), conv["last_msg_offset"].clone())
}

fn history(ws: &mut Ws, id: u64, conv: &str) -> Vec<Value> {
    let page = command(
        ws,
        json!({"id": id, "method": "history", "params": {"stream": conv}}),
    );
    page["result"]["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("publications: {page}"))
        .clone()
}

#[test]
fn a_recalled_dm_is_a_tombstone_on_every_device_and_in_history() {
    let engine = start(recall_config());
    let (mut alice1, _) = im_connect(&engine, "alice", "", Some(0));
    let (mut alice2, _) = im_connect(&engine, "alice", "", Some(1));
    let (mut bob1, sync) = im_connect(&engine, "bob", "", Some(2));
    let token = sync["token"].as_str().unwrap().to_owned();
    let (mut bob2, _) = im_connect(&engine, "bob", "", Some(0));
    let first = send_text(&mut alice1, 1, "bob", "one", None);
    let second = send_text(&mut alice1, 2, "bob", "secret", None);
    let conv = second["result"]["conv"].as_str().unwrap().to_owned();
    for ws in [&mut alice2, &mut bob1, &mut bob2] {
        for _ in 0..2 {
            next_push(ws);
        }
    }
    assert_eq!(unread(&mut bob1, 3), (json!(2), json!(2)));

    // The sender's recall: its push to every connection, then the reply.
    let reply = command(
        &mut alice1,
        json!({"id": 4, "method": "recall", "params": {"conv": conv, "offset": 2}}),
    );
    assert_eq!(
        reply["result"],
        json!({"conv": conv, "offset": 3, "ref_offset": 2, "edits": 0}),
        "{reply}"
    );
    let event =
        json!({"kind": "recall", "data": {"ref_offset": 2, "ref_id": second["result"]["id"]}});
    for ws in [&mut alice2, &mut bob1, &mut bob2] {
        let push = next_push(ws);
        assert_eq!(push["data"], event, "{push}");
        assert_eq!(
            (push["offset"].clone(), push["sender"].clone()),
            (json!(3), json!("alice"))
        );
    }
    // Unread drops by one on every device; the last message is the first.
    assert_eq!(unread(&mut bob1, 5), (json!(1), json!(1)));
    assert_eq!(unread(&mut bob2, 5), (json!(1), json!(1)));
    assert_eq!(unread(&mut alice2, 5), (json!(0), json!(1)));
    // History: the tombstone keeps the original's id, the content is gone.
    let page = history(&mut bob2, 6, &conv);
    assert_eq!(page.len(), 3);
    assert_eq!(page[0]["data"]["data"]["text"], "one");
    assert_eq!(
        page[1]["data"],
        json!({"kind": "text", "state": "recalled"})
    );
    assert_eq!(page[1]["id"], second["result"]["id"]);
    assert_eq!(page[2]["data"], event);
    assert!(!Value::Array(page).to_string().contains("secret"));
    // A reconnect: the sync carries the lowered unread, history the tombstone.
    drop(bob1);
    let (mut bob3, sync) = im_connect(&engine, "bob", &format!("im_since={token}"), None);
    assert_eq!(sync["convs"][0]["unread"], 1, "{sync}");
    assert_eq!(sync["total_unread"], 1);
    assert_eq!(history(&mut bob3, 7, &conv)[1]["data"]["state"], "recalled");

    // Refusals: the peer (103), a third user (123), recalled already (107).
    let by_peer = command(
        &mut bob3,
        json!({"id": 8, "method": "recall", "params": {"conv": conv, "offset": 1}}),
    );
    assert_eq!(by_peer["error"]["code"], 103, "{by_peer}");
    let (mut carol, _) = im_connect(&engine, "carol", "", None);
    let stranger = command(
        &mut carol,
        json!({"id": 1, "method": "recall", "params": {"conv": conv, "offset": 1}}),
    );
    assert_eq!(stranger["error"]["code"], 123, "{stranger}");
    let again = command(
        &mut alice1,
        json!({"id": 9, "method": "recall", "params": {"conv": conv, "offset": 2}}),
    );
    assert_eq!(again["error"]["code"], 107, "{again}");
    // Past the window (1 s here).
    std::thread::sleep(Duration::from_millis(1100));
    let late = command(
        &mut alice1,
        json!({"id": 10, "method": "recall", "params": {"conv": conv, "offset": 1}}),
    );
    assert_eq!(late["error"]["code"], 125, "{late}");
    assert_eq!(
        history(&mut bob3, 11, &conv)[0]["data"]["data"]["text"],
        "one"
    );
    assert_eq!(first["result"]["offset"], 1);
    nothing_waiting(&mut bob2, 12);
    engine.shutdown();
}

#[test]
fn an_edit_changes_history_and_pushes_the_new_data() {
    let engine = start(recall_config());
    let (mut alice, _) = im_connect(&engine, "alice", "", Some(0));
    let (mut bob, _) = im_connect(&engine, "bob", "", Some(1));
    let sent = send_text(&mut alice, 1, "bob", "helo", None);
    let conv = sent["result"]["conv"].as_str().unwrap().to_owned();
    next_push(&mut bob);
    for (n, text) in ["hello", "hello!"].iter().enumerate() {
        let id = 2 + n as u64;
        let reply = command(
            &mut alice,
            json!({"id": id, "method": "edit", "params": {"conv": conv, "offset": 1, "data": {"text": text}}}),
        );
        assert_eq!(reply["result"]["edits"], n + 1, "{reply}");
        let push = next_push(&mut bob);
        assert_eq!(
            push["data"],
            json!({"kind": "edit", "data": {"ref_offset": 1, "ref_id": sent["result"]["id"], "data": {"text": text}}})
        );
    }
    let page = history(&mut bob, 1, &conv);
    assert_eq!(
        page[0]["data"],
        json!({"kind": "text", "data": {"text": "hello!"}, "state": "edited"})
    );
    assert_eq!(page[0]["id"], sent["result"]["id"]);
    // Edits do not count as unread.
    assert_eq!(unread(&mut bob, 2).0, json!(1));
    let third = command(
        &mut alice,
        json!({"id": 4, "method": "edit", "params": {"conv": conv, "offset": 1, "data": {"text": "x"}}}),
    );
    assert_eq!(third["error"]["code"], 125, "edits_max: {third}");
    let by_peer = command(
        &mut bob,
        json!({"id": 3, "method": "edit", "params": {"conv": conv, "offset": 1, "data": {"text": "x"}}}),
    );
    assert_eq!(by_peer["error"]["code"], 103, "{by_peer}");
    let other_kind = command(
        &mut alice,
        json!({"id": 5, "method": "edit", "params": {"conv": conv, "offset": 1, "kind": "custom", "data": {}}}),
    );
    assert_eq!(other_kind["error"]["code"], 107, "{other_kind}");
    let not_a_message = command(
        &mut alice,
        json!({"id": 6, "method": "recall", "params": {"conv": conv, "offset": 2}}),
    );
    assert_eq!(
        not_a_message["error"]["code"], 107,
        "an edit event: {not_a_message}"
    );
    engine.shutdown();
}

#[test]
fn the_api_recalls_as_the_system_and_edits_as_a_user() {
    let engine = start(recall_config());
    let (mut alice, _) = im_connect(&engine, "alice", "", Some(0));
    let (mut bob, _) = im_connect(&engine, "bob", "", Some(1));
    let first = send_text(&mut alice, 1, "bob", "one", None);
    let conv = first["result"]["conv"].as_str().unwrap().to_owned();
    send_text(&mut alice, 2, "bob", "two", None);
    for _ in 0..2 {
        next_push(&mut bob);
    }
    let edit = json!({"as_user": "alice", "conv": conv, "offset": 2, "data": {"text": "deux"}});
    let (status, reply) = api(&engine, "POST", "/api/im/edit", Some(edit));
    assert_eq!((status, reply["edits"].clone()), (200, json!(1)), "{reply}");
    assert_eq!(next_push(&mut bob)["data"]["kind"], "edit");
    let by_peer = json!({"as_user": "bob", "conv": conv, "offset": 2, "data": {"text": "x"}});
    let (status, error) = api(&engine, "POST", "/api/im/edit", Some(by_peer));
    assert_eq!(status, 403, "{error}");
    // The system recalls past the sender's window.
    std::thread::sleep(Duration::from_millis(1100));
    let late = json!({"as_user": "alice", "conv": conv, "offset": 1});
    let (status, error) = api(&engine, "POST", "/api/im/recall", Some(late));
    assert_eq!(status, 409, "{error}");
    let system = json!({"conv": conv, "offset": 1});
    let (status, reply) = api(&engine, "POST", "/api/im/recall", Some(system));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["ref_offset"], 1);
    let push = next_push(&mut bob);
    assert_eq!(
        (push["data"]["kind"].clone(), push["sender"].clone()),
        (json!("recall"), json!(""))
    );
    assert_eq!(unread(&mut bob, 3), (json!(1), json!(2)));
    let page = history(&mut alice, 4, &conv);
    assert_eq!(page[0]["data"]["state"], "recalled");
    assert_eq!(page[1]["data"]["data"]["text"], "deux");
    engine.shutdown();
}

#[test]
fn clear_hides_older_entries_from_one_user_only() {
    let engine = start(recall_config());
    let (mut alice, _) = im_connect(&engine, "alice", "", Some(0));
    let (mut bob, _) = im_connect(&engine, "bob", "", Some(1));
    let mut conv = String::new();
    for (n, text) in ["a", "b", "c"].iter().enumerate() {
        let sent = send_text(&mut alice, n as u64 + 1, "bob", text, None);
        conv = sent["result"]["conv"].as_str().unwrap().to_owned();
        next_push(&mut bob);
    }
    let reply = command(
        &mut bob,
        json!({"id": 1, "method": "clear", "params": {"conv": conv, "upto": 2}}),
    );
    assert_eq!(
        reply["result"],
        json!({"conv": conv, "visible_from": 3, "unread": 1, "total_unread": 1}),
        "{reply}"
    );
    let texts = |page: Vec<Value>| -> Vec<Value> {
        page.iter()
            .map(|p| p["data"]["data"]["text"].clone())
            .collect()
    };
    assert_eq!(texts(history(&mut bob, 2, &conv)), [json!("c")]);
    assert_eq!(
        texts(history(&mut alice, 4, &conv)),
        [json!("a"), json!("b"), json!("c")]
    );
    // Its own later messages keep it; the API twin moves it on.
    send_text(&mut bob, 3, "alice", "d", None);
    next_push(&mut alice);
    assert_eq!(texts(history(&mut bob, 5, &conv)), [json!("c"), json!("d")]);
    let body = json!({"as_user": "bob", "conv": conv, "upto": 3});
    let (status, reply) = api(&engine, "POST", "/api/im/clear", Some(body));
    assert_eq!(
        (status, reply["visible_from"].clone()),
        (200, json!(4)),
        "{reply}"
    );
    assert_eq!(texts(history(&mut bob, 6, &conv)), [json!("d")]);
    let stranger = json!({"as_user": "carol", "conv": conv, "upto": 3});
    assert_eq!(api(&engine, "POST", "/api/im/clear", Some(stranger)).0, 403);
    engine.shutdown();
}
