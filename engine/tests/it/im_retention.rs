//! Retention per conversation kind over real sockets (`docs/im.md`,
//! "Unread counts"; `im.dm_retention_count`, `im.group_retention_count`):
//! once a DM and a group are trimmed, `history` starts at the first kept
//! offset, and unread (per conversation and in total, in `conv_list`)
//! is at most what was kept.

use std::time::Duration;

use serde_json::{json, Value};

use crate::im_groups::{call, im_config, im_connect, next_push, say};
use crate::util::*;

/// Entries each conversation keeps here.
const KEPT: u64 = 3;

/// The first offset `history` of `conv` returns, once it is `first`.
fn history_starts_at(ws: &mut Ws, conv: &str, first: u64) -> Vec<u64> {
    let mut offsets = Vec::new();
    let trimmed = wait_until(Duration::from_secs(5), || {
        let (page, _) = call(ws, 1, "history", json!({"stream": conv}));
        offsets = page["result"]["publications"]
            .as_array()
            .unwrap_or_else(|| panic!("{page}"))
            .iter()
            .map(|entry| entry["offset"].as_u64().unwrap())
            .collect();
        offsets.first() == Some(&first)
    });
    assert!(trimmed, "{conv} starts at {offsets:?}");
    offsets
}

/// `ws`'s user's unread in `conv`, and its total.
fn unread(ws: &mut Ws, conv: &str) -> (Value, Value) {
    let (list, _) = call(ws, 2, "conv_list", json!({}));
    let convs = list["result"]["convs"].as_array().unwrap();
    let entry = convs.iter().find(|entry| entry["conv"] == conv).unwrap();
    (
        entry["unread"].clone(),
        list["result"]["total_unread"].clone(),
    )
}

#[test]
fn trimmed_conversations_start_at_the_first_kept_offset_and_count_no_more_unread() {
    let mut config = im_config(ringcast_engine::config::Driver::Epoll);
    config.im.dm_retention_count = KEPT;
    config.im.group_retention_count = KEPT;
    let engine = start(config);
    let (mut alice, _) = im_connect(&engine, "alice", 0);
    let (mut bob, _) = im_connect(&engine, "bob", 1);
    let mut dm = String::new();
    for n in 1..=5 {
        let (reply, _) = call(
            &mut alice,
            10 + n,
            "msg_send",
            json!({"to": "bob", "kind": "text", "data": {"text": format!("m{n}")}}),
        );
        dm = reply["result"]["conv"].as_str().unwrap().to_owned();
        next_push(&mut bob);
    }
    assert_eq!(history_starts_at(&mut bob, &dm, 3), [3, 4, 5]);
    assert_eq!(unread(&mut bob, &dm), (json!(KEPT), json!(KEPT)));

    let (reply, _) = call(
        &mut alice,
        20,
        "group_create",
        json!({"name": "kept", "members": ["bob"]}),
    );
    let group = reply["result"]["conv"].as_str().unwrap().to_owned();
    next_push(&mut bob);
    for n in 0..5 {
        say(&mut alice, 21 + n, &group, "hello");
        next_push(&mut bob);
    }
    assert_eq!(history_starts_at(&mut bob, &group, 4), [4, 5, 6]);
    assert_eq!(unread(&mut bob, &group), (json!(KEPT), json!(2 * KEPT)));
    // Reading the DM takes exactly its kept messages off the total.
    let (read, _) = call(&mut bob, 3, "read", json!({"conv": dm, "offset": 5}));
    assert_eq!(
        (&read["result"]["unread"], &read["result"]["total_unread"]),
        (&json!(0), &json!(KEPT)),
        "{read}"
    );
    engine.shutdown();
}
