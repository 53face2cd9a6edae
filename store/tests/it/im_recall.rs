//! Recall and edit on the store side (`docs/im.md`, "Recall, edit,
//! delete", "Unread counts"): the event appended and the original
//! overwritten in one batch, the rights (sender in its window; a group's
//! owner any message, an admin members'), edits counted, unread and the
//! last message kept exact, and a real SIGKILL during traffic.

use std::collections::HashMap;
use std::time::Duration;

use ringcast_protocol::envelope::{EncodedPush, Envelope};
use ringcast_store::{
    Durability, GroupActor, GroupAppend, GroupOp, GroupOpRequest, GroupRole, ImRewrite,
    ImRewritten, RewriteOp, Store, StoreError,
};

use crate::im::{conv_name, fresh_store, im_request, list, read_to, send};
use crate::im_delivery::recount;
use crate::kill::{next_random, run_and_kill, test_seed};
use crate::util::{block_on, config, data, envelope, read_all};

/// The window the tests allow when they mean "within it".
const WINDOW_MS: u64 = 3_600_000;

fn actor_of(actor: &str) -> GroupActor {
    if actor.is_empty() {
        GroupActor::System
    } else {
        GroupActor::User(actor.to_owned())
    }
}

fn push(conv: &str, sender: &str, text: &str) -> EncodedPush {
    EncodedPush::encode(&Envelope {
        sender: sender.to_owned(),
        ..envelope(conv, text)
    })
}

/// A recall (`text` None) or an edit to `text` of entry `offset` (whose id
/// is `id`) by `actor`, the tombstone's data `recalled`. `author` is the
/// original's sender, kept in the replacement's header.
pub fn rewrite_request(
    conv: &str,
    actor: &str,
    author: &str,
    offset: u64,
    id: u64,
    text: Option<&str>,
    window_ms: u64,
) -> ImRewrite {
    let (op, event, replacement) = match text {
        None => (
            RewriteOp::Recall,
            format!("recall:{offset}"),
            "recalled".to_owned(),
        ),
        Some(text) => (RewriteOp::Edit, format!("edit:{offset}"), text.to_owned()),
    };
    ImRewrite {
        conv: conv.to_owned(),
        actor: actor_of(actor),
        op,
        ref_offset: offset,
        ref_id: id,
        push: push(conv, actor, &event),
        // The caller keeps the original's sender; the store stamps the
        // id, offset, epoch and time.
        replacement: push(conv, author, &replacement),
        window_ms,
        edits_max: 2,
        durability: Durability::Sync,
    }
}

pub fn rewrite(store: &Store, request: ImRewrite) -> Result<ImRewritten, StoreError> {
    block_on(store.im_rewrite(request)?).map_err(|_| StoreError::Closed)?
}

/// The entry at `offset` of `conv`: (sender, id, data).
fn entry(store: &Store, conv: &str, offset: u64) -> (String, u64, String) {
    let stored = read_all(store, conv);
    let at = stored
        .entries
        .iter()
        .position(|push| push.envelope().offset.to_native() == offset)
        .expect("entry stored");
    let push = &stored.entries[at];
    (
        push.envelope().sender.as_str().to_owned(),
        push.envelope().id.to_native(),
        data(&stored.entries)[at].clone(),
    )
}

fn unread_of(store: &Store, user: &str) -> (u64, u64) {
    let page = list(store, user, None, 10);
    (
        page.convs.first().map_or(0, |conv| conv.unread),
        page.total_unread,
    )
}

#[test]
fn a_recalled_dm_becomes_a_tombstone_and_stops_counting() {
    let (_dir, store) = fresh_store();
    let conv = conv_name("alice", "bob");
    let sent: Vec<_> = (1..=3)
        .map(|n| send(&store, "alice", "bob", &format!("m{n}")))
        .collect();
    assert_eq!(unread_of(&store, "bob"), (3, 3));
    let second = &sent[1].appended;
    let recalled = rewrite(
        &store,
        rewrite_request(
            &conv,
            "alice",
            "alice",
            2,
            second.message_id.as_u64(),
            None,
            WINDOW_MS,
        ),
    )
    .expect("the sender recalls in its window");
    assert_eq!(recalled.appended.offset, 4);
    assert_eq!(&*recalled.members, ["alice".to_owned(), "bob".to_owned()]);
    // The original's header, the tombstone's data; the event after it.
    let (sender, id, text) = entry(&store, &conv, 2);
    assert_eq!(
        (sender.as_str(), id, text.as_str()),
        ("alice", second.message_id.as_u64(), "recalled")
    );
    assert_eq!(recalled.replacement.envelope().offset.to_native(), 2);
    assert_eq!(entry(&store, &conv, 4).2, "recall:2");
    assert!(!data(&read_all(&store, &conv).entries).contains(&"m2".to_owned()));
    // Unread drops by one; the recall event does not count.
    assert_eq!(unread_of(&store, "bob"), (2, 2));
    assert_eq!(unread_of(&store, "alice"), (0, 0));
    let summary = &list(&store, "bob", None, 10).convs[0];
    assert_eq!(
        (
            summary.last_offset,
            summary.last_msg_offset,
            summary.count_total
        ),
        (4, 3, 3)
    );
    // The newest message recalled: the last message is the one before it.
    let third = sent[2].appended.message_id.as_u64();
    rewrite(
        &store,
        rewrite_request(&conv, "alice", "alice", 3, third, None, WINDOW_MS),
    )
    .unwrap();
    let summary = &list(&store, "bob", None, 10).convs[0];
    assert_eq!((summary.last_msg_offset, summary.unread), (1, 1));
    // A read answers the same count; reading past the recalled ones leaves none.
    assert_eq!(read_to(&store, "bob", &conv, 1).unread, 0);
    // Refusals write nothing.
    let next = read_all(&store, &conv).next_offset;
    let again = rewrite(
        &store,
        rewrite_request(&conv, "alice", "alice", 3, third, None, WINDOW_MS),
    );
    assert!(
        matches!(again, Err(StoreError::InvalidRequest { .. })),
        "{again:?}"
    );
    let first = sent[0].appended.message_id.as_u64();
    let wrong_id = rewrite(
        &store,
        rewrite_request(&conv, "alice", "alice", 1, first + 1, None, WINDOW_MS),
    );
    assert!(
        matches!(wrong_id, Err(StoreError::InvalidRequest { .. })),
        "{wrong_id:?}"
    );
    let by_peer = rewrite(
        &store,
        rewrite_request(&conv, "bob", "alice", 1, first, None, WINDOW_MS),
    );
    assert!(
        matches!(by_peer, Err(StoreError::NotAllowed { .. })),
        "{by_peer:?}"
    );
    let stranger = rewrite(
        &store,
        rewrite_request(&conv, "eve", "alice", 1, first, None, WINDOW_MS),
    );
    assert!(
        matches!(stranger, Err(StoreError::NotMember { .. })),
        "{stranger:?}"
    );
    std::thread::sleep(Duration::from_millis(5));
    let late = rewrite(
        &store,
        rewrite_request(&conv, "alice", "alice", 1, first, None, 1),
    );
    assert!(
        matches!(late, Err(StoreError::WindowPassed { .. })),
        "{late:?}"
    );
    assert_eq!(read_all(&store, &conv).next_offset, next);
    assert_eq!(entry(&store, &conv, 1).2, "m1");
    // The system recalls at any time.
    rewrite(
        &store,
        rewrite_request(&conv, "", "alice", 1, first, None, 0),
    )
    .unwrap();
    let summary = &list(&store, "bob", None, 10).convs[0];
    assert_eq!((summary.last_msg_offset, summary.unread), (0, 0));
    store.close().unwrap();
}

#[test]
fn an_edit_replaces_the_data_up_to_edits_max() {
    let (_dir, store) = fresh_store();
    let conv = conv_name("alice", "bob");
    let id = send(&store, "alice", "bob", "helo")
        .appended
        .message_id
        .as_u64();
    for (n, text) in ["hello", "hello!"].iter().enumerate() {
        let edited = rewrite(
            &store,
            rewrite_request(&conv, "alice", "alice", 1, id, Some(text), WINDOW_MS),
        )
        .expect("edit");
        assert_eq!(edited.edits, n as u32 + 1);
        assert_eq!(entry(&store, &conv, 1).2, *text);
        assert_eq!(entry(&store, &conv, 1).1, id, "the original's id is kept");
    }
    let third = rewrite(
        &store,
        rewrite_request(&conv, "alice", "alice", 1, id, Some("x"), WINDOW_MS),
    );
    assert!(
        matches!(
            third,
            Err(StoreError::WindowPassed {
                what: "the edit count",
                ..
            })
        ),
        "{third:?}"
    );
    let by_peer = rewrite(
        &store,
        rewrite_request(&conv, "bob", "alice", 1, id, Some("x"), WINDOW_MS),
    );
    assert!(
        matches!(by_peer, Err(StoreError::NotAllowed { .. })),
        "{by_peer:?}"
    );
    std::thread::sleep(Duration::from_millis(5));
    let late = rewrite(
        &store,
        rewrite_request(&conv, "alice", "alice", 1, id, Some("x"), 1),
    );
    assert!(matches!(
        late,
        Err(StoreError::WindowPassed {
            what: "the edit window",
            ..
        })
    ));
    // Edits do not count; the message still does, once.
    assert_eq!(unread_of(&store, "bob"), (1, 1));
    assert_eq!(
        data(&read_all(&store, &conv).entries),
        ["hello!", "edit:1", "edit:1"]
    );
    // A recalled message takes no edit; the store survives a reopen with it.
    rewrite(
        &store,
        rewrite_request(&conv, "alice", "alice", 1, id, None, WINDOW_MS),
    )
    .unwrap();
    let on_tombstone = rewrite(
        &store,
        rewrite_request(&conv, "", "alice", 1, id, Some("x"), WINDOW_MS),
    );
    assert!(matches!(
        on_tombstone,
        Err(StoreError::InvalidRequest { .. })
    ));
    assert_eq!(unread_of(&store, "bob"), (0, 0));
    store.close().unwrap();
    let store = Store::open(config(_dir.path())).unwrap();
    assert_eq!(unread_of(&store, "bob"), (0, 0));
    assert_eq!(entry(&store, &conv, 1).2, "recalled");
    store.close().unwrap();
}

fn group_op(store: &Store, conv: &str, actor: &str, op: GroupOp) {
    let request = GroupOpRequest {
        conv: conv.to_owned(),
        actor: actor_of(actor),
        op,
        push: push(conv, actor, "member"),
        client_msg_id: None,
        durability: Durability::Sync,
    };
    block_on(store.group_op(request).unwrap()).unwrap().unwrap();
}

/// A message of `sender` to group `conv`: (offset, id, sender).
fn group_msg(store: &Store, conv: &str, sender: &'static str) -> (u64, u64, &'static str) {
    let request = GroupAppend {
        conv: conv.to_owned(),
        sender: sender.to_owned(),
        push: push(conv, sender, "msg"),
        counts: true,
        client_msg_id: None,
        durability: Durability::Sync,
    };
    let sent = block_on(store.group_append(request).unwrap())
        .unwrap()
        .unwrap();
    (
        sent.appended.offset,
        sent.appended.message_id.as_u64(),
        sender,
    )
}

#[test]
fn group_recalls_follow_the_roles_table() {
    let (_dir, store) = fresh_store();
    let conv = "grp:recall";
    group_op(
        &store,
        conv,
        "o",
        GroupOp::Create {
            owner: "o".to_owned(),
            name: "team".to_owned(),
            info: "{}".to_owned(),
            members: ["a", "b", "m", "n"]
                .iter()
                .map(|u| (*u).to_owned())
                .collect(),
            members_max: None,
            history_from_join: false,
            members_can_invite: false,
        },
    );
    for admin in ["a", "b"] {
        let role = GroupOp::Role {
            user: admin.to_owned(),
            role: GroupRole::Admin,
        };
        group_op(&store, conv, "o", role);
    }
    let n_unread = |store: &Store| {
        let page = list(store, "n", None, 10);
        page.convs
            .iter()
            .find(|c| c.conv == conv)
            .map_or(0, |c| c.unread)
    };
    let by_m = group_msg(&store, conv, "m");
    let by_a = group_msg(&store, conv, "a");
    let by_o = group_msg(&store, conv, "o");
    let by_m2 = group_msg(&store, conv, "m");
    assert_eq!(n_unread(&store), 4);
    // Past every window (0 ms), only the roles decide.
    let past = |actor: &str, (offset, id, author): (u64, u64, &str)| {
        std::thread::sleep(Duration::from_millis(2));
        rewrite(
            &store,
            rewrite_request(conv, actor, author, offset, id, None, 0),
        )
    };
    assert!(
        matches!(past("n", by_m), Err(StoreError::NotAllowed { .. })),
        "a member, another's"
    );
    assert!(
        matches!(past("b", by_a), Err(StoreError::NotAllowed { .. })),
        "an admin, an admin's"
    );
    assert!(
        matches!(past("a", by_o), Err(StoreError::NotAllowed { .. })),
        "an admin, the owner's"
    );
    assert!(
        matches!(past("m", by_m), Err(StoreError::WindowPassed { .. })),
        "own, late"
    );
    assert!(
        matches!(past("x", by_m), Err(StoreError::NotMember { .. })),
        "not a member"
    );
    past("b", by_m).expect("an admin recalls a member's message at any time");
    past("o", by_a).expect("the owner recalls an admin's message at any time");
    assert_eq!(n_unread(&store), 2);
    // Its own, in the window.
    rewrite(
        &store,
        rewrite_request(conv, "m", "m", by_m2.0, by_m2.1, None, WINDOW_MS),
    )
    .unwrap();
    assert_eq!(n_unread(&store), 1);
    // Only the sender edits, whatever its role.
    let edit = rewrite(
        &store,
        rewrite_request(conv, "o", "m", by_m2.0, by_m2.1, Some("x"), WINDOW_MS),
    );
    assert!(
        matches!(edit, Err(StoreError::InvalidRequest { .. })),
        "recalled: {edit:?}"
    );
    let by_n = group_msg(&store, conv, "n");
    let edit = rewrite(
        &store,
        rewrite_request(conv, "o", "n", by_n.0, by_n.1, Some("x"), WINDOW_MS),
    );
    assert!(
        matches!(edit, Err(StoreError::NotAllowed { .. })),
        "{edit:?}"
    );
    rewrite(
        &store,
        rewrite_request(conv, "n", "n", by_n.0, by_n.1, Some("x"), WINDOW_MS),
    )
    .unwrap();
    let page = list(&store, "o", None, 10);
    let summary = page.convs.iter().find(|c| c.conv == conv).unwrap();
    assert_eq!(summary.last_msg_offset, by_n.0);
    assert_eq!(
        (summary.unread, entry(&store, conv, by_n.0).2.as_str()),
        (1, "x")
    );
    store.close().unwrap();
}

const KILL_USERS: [&str; 3] = ["r0", "r1", "r2"];

/// The child of the SIGKILL test (`kill::child_process`): rounds of queued
/// DMs among three users, reads, and recalls (by the sender) of messages
/// it saw acknowledged; prints each acknowledged message and recall.
pub fn child_recall_traffic(store: &Store, durability: Durability) -> ! {
    let mut random = std::process::id() as u64 | 1;
    let mut pick = |n: usize| (next_random(&mut random) % n as u64) as usize;
    let mut sent: Vec<(String, String, u64, u64)> = Vec::new();
    loop {
        let mut messages = Vec::new();
        for _ in 0..6 {
            let from = KILL_USERS[pick(3)];
            let to = KILL_USERS[pick(3)];
            let mut request = im_request(from, to, "msg", 0);
            request.durability = durability;
            messages.push((
                from,
                request.conv.clone(),
                store.im_append(request).unwrap(),
            ));
        }
        let mut recalls = Vec::new();
        for _ in 0..2 {
            if sent.is_empty() {
                break;
            }
            let (sender, conv, offset, id) = sent.swap_remove(pick(sent.len()));
            let mut request = rewrite_request(&conv, &sender, &sender, offset, id, None, WINDOW_MS);
            request.durability = durability;
            recalls.push((conv, offset, store.im_rewrite(request).unwrap()));
        }
        let reader = KILL_USERS[pick(3)];
        let read = store.im_read(
            reader,
            &conv_name(reader, KILL_USERS[pick(3)]),
            pick(40) as u64,
        );
        for (from, conv, receiver) in messages {
            let appended = block_on(receiver).unwrap().unwrap();
            let offset = appended.appended.offset;
            println!("ACK msg {conv} {offset}");
            sent.push((
                from.to_owned(),
                conv,
                offset,
                appended.appended.message_id.as_u64(),
            ));
        }
        for (conv, offset, receiver) in recalls {
            if block_on(receiver).unwrap().is_ok() {
                println!("ACK recall {conv} {offset}");
            }
        }
        // No conversation yet for this pair is part of the traffic.
        drop(block_on(read.unwrap()));
    }
}

/// kill -9 during DMs and recalls: every acknowledged recall left its
/// tombstone, every recall event its tombstone, and each user's unread
/// equals the recount of messages after its read position, recalled ones
/// excluded.
#[test]
fn sigkill_keeps_tombstones_and_unread_equal_to_the_recount() {
    let seed = test_seed();
    eprintln!("recall sigkill seed: {seed} (rerun with RINGCAST_STORE_SEED={seed})");
    let mut random = seed;
    let dir = tempfile::tempdir().unwrap();
    for (round, mode) in ["im-recall-sync", "im-recall-buffered", "im-recall-sync"]
        .iter()
        .enumerate()
    {
        let (acked, delay) = run_and_kill(mode, dir.path(), &mut random, 300);
        let store = Store::open(config(dir.path())).unwrap();
        let mut recalls = 0;
        for ack in &acked {
            let mut parts = ack.split(' ');
            let (kind, conv, offset) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let offset: u64 = offset.parse().unwrap();
            let text = entry(&store, conv, offset).2;
            match kind {
                "msg" => assert!(
                    text == "msg" || text == "recalled",
                    "{conv} {offset}: {text}"
                ),
                _ => {
                    recalls += 1;
                    assert_eq!(
                        text, "recalled",
                        "seed {seed} round {round}: {conv} {offset}"
                    );
                }
            }
        }
        for (i, a) in KILL_USERS.iter().enumerate() {
            for b in &KILL_USERS[i..] {
                let conv = conv_name(a, b);
                let stored = read_all(&store, &conv);
                let texts = data(&stored.entries);
                let mut messages: HashMap<u64, (String, bool)> = HashMap::new();
                for (push, text) in stored.entries.iter().zip(&texts) {
                    let offset = push.envelope().offset.to_native();
                    if let Some(target) = text.strip_prefix("recall:") {
                        let target: u64 = target.parse().unwrap();
                        assert_eq!(
                            texts[target as usize - 1],
                            "recalled",
                            "{conv}: event at {offset}"
                        );
                    } else {
                        let sender = push.envelope().sender.as_str().to_owned();
                        messages.insert(offset, (sender, text == "msg"));
                    }
                }
                for user in [a, b] {
                    let page = list(&store, user, None, 10);
                    let Some(summary) = page.convs.iter().find(|c| c.conv == conv) else {
                        assert!(stored.entries.is_empty());
                        continue;
                    };
                    let recount = messages
                        .iter()
                        .filter(|(offset, (_, live))| **offset > summary.read_offset && *live)
                        .count() as u64;
                    assert_eq!(
                        summary.unread, recount,
                        "seed {seed} round {round}: {user} in {conv}"
                    );
                    let newest = messages
                        .iter()
                        .filter(|(_, (_, live))| *live)
                        .map(|(offset, _)| *offset)
                        .max()
                        .unwrap_or(0);
                    assert_eq!(summary.last_msg_offset, newest, "{conv}");
                }
            }
        }
        // The DM unread total key (`im_unread`), moved in each batch, is
        // the sum of the conversations' unread after the kill too.
        for user in KILL_USERS {
            assert_eq!(
                list(&store, user, None, 1).total_unread,
                recount(&store, user),
                "seed {seed} round {round}: {user}'s total"
            );
        }
        eprintln!(
            "recall round {round} ({mode}): killed after {delay:?}, acked {}, recalls {recalls}",
            acked.len()
        );
        store.close().unwrap();
    }
}

/// Every write that changes a DM's unread moves the user's total key in
/// its batch: sends, reads, recalls (before and after each user's read
/// position, by the sender and by the system), edits (no change) and
/// clears, checked against the recount after each step and a reopen.
#[test]
fn the_dm_unread_total_key_equals_the_recount_through_recalls_edits_and_clears() {
    let (dir, store) = fresh_store();
    let users = ["u0", "u1", "u2"];
    let mut random = 0x9e37_79b9_7f4a_7c15u64;
    let mut pick = |n: usize| (next_random(&mut random) % n as u64) as usize;
    // (sender, conv, offset, id, recalled)
    let mut sent: Vec<(String, String, u64, u64, bool)> = Vec::new();
    let mut done = [0u32; 4];
    for step in 0..120 {
        let op = if sent.is_empty() { 0 } else { pick(6) };
        match op {
            0 | 1 => {
                let from = users[pick(3)];
                let to = users[(users.iter().position(|u| *u == from).unwrap() + 1 + pick(2)) % 3];
                let appended = send(&store, from, to, "msg");
                sent.push((
                    from.to_owned(),
                    conv_name(from, to),
                    appended.appended.offset,
                    appended.appended.message_id.as_u64(),
                    false,
                ));
            }
            2 => {
                let (sender, conv, offset, ..) = sent[pick(sent.len())].clone();
                let reader = conv
                    .strip_prefix("dm:")
                    .unwrap()
                    .split('-')
                    .find(|user| *user != sender)
                    .unwrap_or(&sender)
                    .to_owned();
                read_to(
                    &store,
                    &reader,
                    &conv,
                    offset.saturating_sub(pick(3) as u64).max(1),
                );
                done[0] += 1;
            }
            3 => {
                let at = pick(sent.len());
                let (sender, conv, offset, id, recalled) = sent[at].clone();
                if !recalled {
                    let actor = if pick(4) == 0 { "" } else { sender.as_str() };
                    rewrite(
                        &store,
                        rewrite_request(&conv, actor, &sender, offset, id, None, WINDOW_MS),
                    )
                    .expect("a recall in the window");
                    sent[at].4 = true;
                    done[1] += 1;
                }
            }
            4 => {
                let (sender, conv, offset, id, recalled) = sent[pick(sent.len())].clone();
                if !recalled {
                    let edited = rewrite(
                        &store,
                        rewrite_request(&conv, &sender, &sender, offset, id, Some("e"), WINDOW_MS),
                    );
                    assert!(
                        matches!(edited, Ok(_) | Err(StoreError::WindowPassed { .. })),
                        "{edited:?}"
                    );
                    done[2] += 1;
                }
            }
            _ => {
                let (sender, conv, offset, ..) = sent[pick(sent.len())].clone();
                let upto = offset.saturating_sub(pick(4) as u64).max(1);
                block_on(store.im_clear(&sender, &conv, upto).unwrap())
                    .unwrap()
                    .unwrap();
                done[3] += 1;
            }
        }
        for user in users {
            assert_eq!(
                list(&store, user, None, 1).total_unread,
                recount(&store, user),
                "{user} after step {step} (op {op})"
            );
        }
    }
    assert!(
        done.iter().all(|n| *n > 0),
        "every kind of write ran: {done:?}"
    );
    let before: Vec<u64> = users.iter().map(|user| recount(&store, user)).collect();
    store.close().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for (user, total) in users.iter().zip(before) {
        assert_eq!(list(&store, user, None, 1).total_unread, total, "{user}");
        assert_eq!(recount(&store, user), total, "{user}");
    }
    // The writer starts again from disk (its record cache empty, its set
    // of conversations with recalls loaded): reads over recalled messages
    // still leave them out, the same as the recount.
    for step in 0..9 {
        let (from, to) = (users[step % 3], users[(step + 1 + step / 3) % 3]);
        let appended = send(&store, from, to, "after the reopen");
        read_to(&store, to, &conv_name(from, to), appended.appended.offset);
        for user in users {
            assert_eq!(
                list(&store, user, None, 1).total_unread,
                recount(&store, user),
                "{user} after the reopen, step {step}"
            );
        }
    }
    store.close().unwrap();
}

#[test]
fn a_clear_hides_older_entries_from_one_user_only() {
    let (dir, store) = fresh_store();
    let conv = conv_name("alice", "bob");
    for n in 0..3 {
        send(&store, "alice", "bob", &format!("m{n}"));
    }
    let clear = |store: &Store, upto| {
        block_on(store.im_clear("bob", &conv, upto).unwrap())
            .unwrap()
            .unwrap()
    };
    let state = clear(&store, 2);
    assert_eq!(
        (state.visible_from, state.read_offset, state.unread),
        (3, 2, 1)
    );
    // The clear read bob's first two: its total key moved with it.
    assert_eq!(list(&store, "bob", None, 1).total_unread, 1);
    // Monotonic: an older clear changes nothing.
    assert_eq!(clear(&store, 1).visible_from, 3);
    // Sending, by either user, keeps it; the peer's view is untouched.
    send(&store, "bob", "alice", "reply");
    send(&store, "alice", "bob", "more");
    let visible = |store: &Store, user: &str| list(store, user, None, 10).convs[0].visible_from;
    assert_eq!((visible(&store, "bob"), visible(&store, "alice")), (3, 0));
    store.close().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(visible(&store, "bob"), 3);
    assert_eq!(list(&store, "bob", None, 10).convs[0].unread, 1);
    store.close().unwrap();
}

/// The writer's set of conversations with recalls is loaded at open: a
/// read after a reopen, over a message recalled before it, takes only
/// the messages that still count off the user's DM total.
#[test]
fn a_read_after_a_reopen_leaves_out_what_was_recalled_before_it() {
    let (dir, store) = fresh_store();
    send(&store, "carol", "bob", "one");
    send(&store, "carol", "bob", "two");
    let sent: Vec<_> = (0..3).map(|_| send(&store, "alice", "bob", "hi")).collect();
    let recalled = &sent[1].appended;
    rewrite(
        &store,
        rewrite_request(
            &conv_name("alice", "bob"),
            "alice",
            "alice",
            recalled.offset,
            recalled.message_id.as_u64(),
            None,
            WINDOW_MS,
        ),
    )
    .expect("a recall in the window");
    assert_eq!(list(&store, "bob", None, 1).total_unread, 4);
    store.close().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let last = sent[2].appended.offset;
    read_to(&store, "bob", &conv_name("alice", "bob"), last);
    assert_eq!(
        list(&store, "bob", None, 1).total_unread,
        2,
        "carol's two are left"
    );
    assert_eq!(recount(&store, "bob"), 2);
    store.close().unwrap();
}
