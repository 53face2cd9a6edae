//! Retention per conversation kind (`docs/im.md`, "Unread counts"): a
//! DM's and a group's stream trimmed to their kind's count, unread never
//! more than what was kept, the DM unread total key moved in the trim's
//! batch (recalled messages that were trimmed counted once), the list's
//! last message cleared when it was trimmed, and all of it across a reopen.

use std::time::Duration;

use ringcast_store::{GroupOp, Retention, Store};

use crate::im::{conv_name, list, read_to, send};
use crate::im_delivery::recount;
use crate::im_groups::{create, msg, op};
use crate::im_recall::{rewrite, rewrite_request};
use crate::util::{config, read_all};

/// Entries each conversation keeps in these tests.
const KEPT: u64 = 3;

fn open(path: &std::path::Path) -> Store {
    let mut config = config(path);
    let retention = Retention {
        count_max: KEPT,
        age_max: Duration::MAX,
    };
    config.dm_retention = retention;
    config.group_retention = retention;
    Store::open(config).unwrap()
}

/// A store whose DMs keep 2 s of entries (and no count limit).
fn open_with_dm_age(path: &std::path::Path) -> Store {
    let mut config = config(path);
    config.dm_retention = Retention {
        count_max: u64::MAX,
        age_max: Duration::from_secs(2),
    };
    Store::open(config).unwrap()
}

/// Waits until `conv` starts at `first` (the writer trims after each batch).
fn trimmed_to(store: &Store, conv: &str, first: u64) {
    for _ in 0..500 {
        if read_all(store, conv).first_offset == first {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{conv} was not trimmed to {first}");
}

/// `user`'s unread in `conv`, its last message there, and its total.
fn listed(store: &Store, user: &str, conv: &str) -> (u64, u64, u64) {
    let page = list(store, user, None, 10);
    let summary = page
        .convs
        .iter()
        .find(|summary| summary.conv == conv)
        .unwrap_or_else(|| panic!("{conv} not in {user}'s list"));
    (summary.unread, summary.last_msg_offset, page.total_unread)
}

#[test]
fn trimmed_conversations_keep_unread_within_what_retention_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let dm = conv_name("alice", "bob");
    send(&store, "alice", "bob", "m1");
    let second = send(&store, "alice", "bob", "m2");
    // A recalled unread message that retention then trims: unread loses
    // it once, not twice.
    let id = second.appended.message_id.as_u64();
    let request = rewrite_request(&dm, "alice", "alice", 2, id, None, 3_600_000);
    rewrite(&store, request).expect("recall");
    assert_eq!(listed(&store, "bob", &dm), (1, 1, 1));
    for text in ["m4", "m5", "m6"] {
        send(&store, "alice", "bob", text);
    }
    trimmed_to(&store, &dm, 4);
    // 1 and 2 (recalled) and the recall event are gone: 3 unread kept.
    assert_eq!(listed(&store, "bob", &dm), (3, 6, 3));
    assert_eq!(recount(&store, "bob"), 3);
    assert_eq!(listed(&store, "alice", &dm), (0, 6, 0));
    // A read below the first kept offset changes nothing of it.
    assert_eq!(read_to(&store, "bob", &dm, 2).unread, 3);
    send(&store, "alice", "bob", "m7");
    trimmed_to(&store, &dm, 5);
    assert_eq!(listed(&store, "bob", &dm), (3, 7, 3));

    // A group: the create entry and five messages, three kept.
    let group = "grp:kept";
    create(&store, group, "owner", &["bob"]);
    for _ in 0..5 {
        msg(&store, group, "owner").expect("message");
    }
    trimmed_to(&store, group, 4);
    assert_eq!(listed(&store, "bob", group), (3, 6, 6));
    assert_eq!(recount(&store, "bob"), 6);
    // Three member entries push every message out: no last message, and
    // nothing unread.
    for user in ["carol", "dave", "erin"] {
        let add = GroupOp::Add {
            users: vec![user.to_owned()],
        };
        op(&store, group, "owner", add).expect("add");
    }
    trimmed_to(&store, group, 7);
    assert_eq!(listed(&store, "bob", group), (0, 0, 3));

    // A reopen reads the same; reading everything empties the DM total.
    drop(store);
    let store = open(dir.path());
    assert_eq!(listed(&store, "bob", &dm), (3, 7, 3));
    assert_eq!(read_to(&store, "bob", &dm, 7).unread, 0);
    assert_eq!(listed(&store, "bob", &dm), (0, 7, 0));
    assert_eq!(listed(&store, "bob", group), (0, 0, 0));
}

#[test]
fn age_retention_trims_a_dm_and_its_unread_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_dm_age(dir.path());
    let dm = conv_name("alice", "bob");
    send(&store, "alice", "bob", "old");
    send(&store, "alice", "bob", "old");
    std::thread::sleep(Duration::from_millis(2100));
    send(&store, "alice", "bob", "new");
    // Age retention runs every maintenance interval (10 ms here).
    trimmed_to(&store, &dm, 3);
    assert_eq!(listed(&store, "bob", &dm), (1, 3, 1));
    assert_eq!(recount(&store, "bob"), 1);
}

/// Recalling the last message walks back to the one before it over
/// recalled messages, never below what retention kept: a trimmed message
/// lost its recall key with it and would read as the last message.
#[test]
fn a_recall_after_a_trim_never_names_a_trimmed_message_last() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_dm_age(dir.path());
    let dm = conv_name("alice", "bob");
    send(&store, "alice", "bob", "old");
    std::thread::sleep(Duration::from_millis(2100));
    let second = send(&store, "alice", "bob", "m2");
    trimmed_to(&store, &dm, 2);
    let third = send(&store, "alice", "bob", "m3");
    // Both kept messages recalled, newest last, well within the next
    // trim (2 s away): the last message is none, not the trimmed 1.
    for sent in [&second, &third] {
        let request = rewrite_request(
            &dm,
            "alice",
            "alice",
            sent.appended.offset,
            sent.appended.message_id.as_u64(),
            None,
            3_600_000,
        );
        rewrite(&store, request).expect("recall");
    }
    assert_eq!(read_all(&store, &dm).first_offset, 2, "no trim since");
    assert_eq!(listed(&store, "bob", &dm), (0, 0, 0));
}
