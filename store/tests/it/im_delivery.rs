//! Delivery positions, the receipts query and the per-user DM unread
//! total (`docs/im.md`, "Unread counts", "Who receives what"), on a real
//! fjall in a temp dir, across a reopen.

use ringcast_store::{ImDelivery, MemberReceipt, ReceiptPage, Store};

use crate::im::{conv_name, fresh_store, list, read_to, send};
use crate::im_groups::{create, msg};
use crate::util::{block_on, config};

fn ack(store: &Store, user: &str, device: &str, conv: &str, offset: u64) -> ImDelivery {
    block_on(store.im_ack(user, device, conv, offset).unwrap())
        .unwrap()
        .unwrap()
}

fn receipts(
    store: &Store,
    user: &str,
    conv: &str,
    after: Option<&str>,
    limit: usize,
) -> Option<ReceiptPage> {
    block_on(store.im_receipts(user, conv, after, limit).unwrap())
        .unwrap()
        .unwrap()
}

fn receipt(user: &str, read_offset: u64, recv_offset: u64) -> MemberReceipt {
    MemberReceipt {
        user: user.to_owned(),
        read_offset,
        recv_offset,
    }
}

/// The total unread recomputed from every conversation in the list.
pub fn recount(store: &Store, user: &str) -> u64 {
    list(store, user, None, 100)
        .convs
        .iter()
        .map(|summary| summary.unread)
        .sum()
}

#[test]
fn an_ack_raises_the_delivery_position_once_monotonic_and_clamped() {
    let (_dir, store) = fresh_store();
    for text in ["a", "b", "c"] {
        send(&store, "alice", "bob", text);
    }
    let conv = conv_name("alice", "bob");
    let first = ack(&store, "bob", "phone", &conv, 2);
    assert_eq!(
        first,
        ImDelivery {
            cursor: 2,
            recv_offset: 2,
            advanced: true,
            peer: Some("alice".to_owned()),
            member_count: 0,
        }
    );
    // Another device at or below the position: its cursor moves, the
    // user's position does not, and no receipt is due.
    let laptop = ack(&store, "bob", "laptop", &conv, 1);
    assert_eq!(
        (laptop.cursor, laptop.recv_offset, laptop.advanced),
        (1, 2, false)
    );
    let again = ack(&store, "bob", "phone", &conv, 2);
    assert!(!again.advanced);
    // Past the end: clamped to the last offset.
    let past = ack(&store, "bob", "laptop", &conv, 99);
    assert_eq!((past.cursor, past.recv_offset, past.advanced), (3, 3, true));
    // The device cursor is the plain one: `get_cursor` reads it.
    let cursor = block_on(store.get_cursor("bob", "phone", &conv).unwrap())
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(cursor.offset, 2);
    // Delivery is not read: bob's unread stays.
    assert_eq!(list(&store, "bob", None, 10).total_unread, 3);
    // A stranger's ack is refused, and writes nothing.
    assert!(block_on(store.im_ack("eve", "d", &conv, 1).unwrap())
        .unwrap()
        .is_err());
    // alice's own send keeps her delivery position.
    ack(&store, "alice", "d", &conv, 3);
    send(&store, "alice", "bob", "d");
    assert_eq!(
        receipts(&store, "bob", &conv, None, 10),
        Some(ReceiptPage {
            receipts: vec![receipt("alice", 4, 3), receipt("bob", 0, 3)],
            next: None,
        })
    );
}

#[test]
fn receipts_page_a_dm_and_a_group_and_refuse_strangers() {
    let (dir, store) = fresh_store();
    send(&store, "alice", "bob", "hi");
    let dm = conv_name("alice", "bob");
    read_to(&store, "bob", &dm, 1);
    let first = receipts(&store, "alice", &dm, None, 1).unwrap();
    assert_eq!(first.receipts, vec![receipt("alice", 1, 0)]);
    assert_eq!(first.next.as_deref(), Some("alice"));
    let second = receipts(&store, "alice", &dm, Some("alice"), 1).unwrap();
    assert_eq!(second.receipts, vec![receipt("bob", 1, 0)]);
    assert_eq!(receipts(&store, "eve", &dm, None, 10), None);
    assert_eq!(receipts(&store, "eve", "dm:nothing", None, 10), None);

    let group = "grp:team";
    let members = ["m1", "m2", "m3", "m4"];
    create(&store, group, "m0", &members);
    let sent = msg(&store, group, "m0").unwrap();
    let offset = sent.appended.offset;
    let delivered = ack(&store, "m2", "d", group, offset);
    assert!(delivered.advanced);
    assert_eq!((delivered.peer, delivered.member_count), (None, 5));
    read_to(&store, "m3", group, offset);
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = receipts(&store, "m1", group, after.as_deref(), 2).unwrap();
        seen.extend(page.receipts);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let users: Vec<_> = seen.iter().map(|r| r.user.as_str()).collect();
    assert_eq!(users, ["m0", "m1", "m2", "m3", "m4"]);
    assert_eq!(seen[2].recv_offset, offset);
    assert_eq!(seen[3].read_offset, offset);
    assert_eq!(
        seen[0].read_offset, offset,
        "the sender read its own message"
    );
    assert_eq!(receipts(&store, "bob", group, None, 10), None);
    // Positions survive a reopen.
    store.close().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let page = receipts(&store, "m1", group, Some("m1"), 2).unwrap();
    assert_eq!(page.receipts[0], receipt("m2", seen[2].read_offset, offset));
}

#[test]
fn the_dm_unread_total_key_equals_the_recount_through_sends_reads_and_a_reopen() {
    let (dir, store) = fresh_store();
    let users = ["u0", "u1", "u2", "u3"];
    let mut step = 0u64;
    for round in 0..40u64 {
        // u0 and u1 write to u2 and u3, who answer now and then (an own
        // message reads the conversation).
        let (mut from, mut to) = (
            users[(round % 2) as usize],
            users[2 + ((round / 2) % 2) as usize],
        );
        if round % 5 == 4 {
            (from, to) = (to, from);
        }
        let sent = send(&store, from, to, "x");
        if round % 3 == 0 {
            // The recipient reads all it got but the newest.
            let before = list(&store, to, None, 1).total_unread;
            read_to(&store, to, &conv_name(to, from), sent.appended.offset - 1);
            if list(&store, to, None, 1).total_unread < before {
                step += 1;
            }
        }
        for user in users {
            assert_eq!(
                list(&store, user, None, 1).total_unread,
                recount(&store, user),
                "{user} after round {round}"
            );
        }
    }
    assert!(step > 0, "some reads moved positions");
    let before: Vec<u64> = users
        .iter()
        .map(|user| list(&store, user, None, 1).total_unread)
        .collect();
    assert!(before.iter().any(|total| *total > 0));
    store.close().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for (user, total) in users.iter().zip(before) {
        assert_eq!(list(&store, user, None, 1).total_unread, total, "{user}");
        assert_eq!(recount(&store, user), total, "{user}");
    }
}

#[test]
fn an_ack_below_a_cleared_window_is_floored_at_its_start() {
    let (_dir, store) = fresh_store();
    for text in ["a", "b", "c"] {
        send(&store, "alice", "bob", text);
    }
    let conv = conv_name("alice", "bob");
    let state = block_on(store.im_clear("bob", &conv, 2).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(state.visible_from, 3);
    // A device behind the clear: its cursor starts at the window, and
    // nothing was delivered, so no receipt is due.
    let behind = ack(&store, "bob", "phone", &conv, 1);
    assert_eq!(
        (behind.cursor, behind.recv_offset, behind.advanced),
        (2, 0, false)
    );
    let cursor = block_on(store.get_cursor("bob", "phone", &conv).unwrap())
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(cursor.offset, 2);
    let inside = ack(&store, "bob", "phone", &conv, 3);
    assert_eq!(
        (inside.cursor, inside.recv_offset, inside.advanced),
        (3, 3, true)
    );
}

/// Sets `user`'s DM unread key to `value`, with the store closed (fjall
/// opened directly, as a damaged disk would leave it).
fn set_unread_key(dir: &std::path::Path, user: &str, value: &[u8]) {
    let db = fjall::Database::builder(dir).open().unwrap();
    let unread = db
        .keyspace("im_unread", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    unread.insert(user.as_bytes(), value).unwrap();
    db.persist(fjall::PersistMode::SyncAll).unwrap();
}

#[test]
fn a_new_dm_refused_on_a_damaged_unread_key_can_start_once_it_is_repaired() {
    let (dir, store) = fresh_store();
    send(&store, "carol", "bob", "hi");
    store.close().unwrap();
    set_unread_key(dir.path(), "bob", b"bad");
    let store = Store::open(config(dir.path())).unwrap();
    let refused = crate::im::im_submit(&store, crate::im::im_request("alice", "bob", "a", 0));
    assert!(
        matches!(refused, Err(ringcast_store::StoreError::Corrupt { .. })),
        "{refused:?}"
    );
    store.close().unwrap();
    set_unread_key(dir.path(), "bob", &1u64.to_be_bytes());
    let store = Store::open(config(dir.path())).unwrap();
    // Nothing of the refused one was kept: the pair's conversation starts.
    let sent = send(&store, "alice", "bob", "again");
    assert_eq!(sent.appended.offset, 1);
    assert_eq!(list(&store, "bob", None, 10).total_unread, 2);
    store.close().unwrap();
}

/// A member who left a group still acks its window (its devices replay
/// it, so the cursor is stored), but raises no delivery position and
/// reports nothing to deliver (review finding 13): the members get no
/// `delivered` from someone who is not one of them.
#[test]
fn a_member_who_left_stores_its_cursor_but_no_delivery() {
    let (_dir, store) = fresh_store();
    let group = "grp:left";
    create(&store, group, "m0", &["m1", "m2"]);
    let first = msg(&store, group, "m0").unwrap().appended.offset;
    assert!(ack(&store, "m1", "phone", group, first).advanced);
    let second = msg(&store, group, "m0").unwrap().appended.offset;
    let leave = ringcast_store::GroupOpRequest {
        conv: group.to_owned(),
        actor: ringcast_store::GroupActor::User("m1".to_owned()),
        op: ringcast_store::GroupOp::Leave,
        push: ringcast_protocol::envelope::EncodedPush::encode(
            &ringcast_protocol::envelope::Envelope {
                sender: "m1".to_owned(),
                ..crate::util::envelope(group, "leave")
            },
        ),
        client_msg_id: None,
        durability: ringcast_store::Durability::Sync,
    };
    let left_at = block_on(store.group_op(leave).unwrap())
        .unwrap()
        .unwrap()
        .appended
        .offset;
    msg(&store, group, "m0").unwrap();
    let late = ack(&store, "m1", "laptop", group, 99);
    assert_eq!(
        (late.cursor, late.recv_offset, late.advanced),
        (left_at, first, false),
        "the cursor keeps to the window, the delivery position stays"
    );
    let cursor = block_on(store.get_cursor("m1", "laptop", group).unwrap())
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(cursor.offset, left_at);
    assert!(second < left_at);
    // A current member's ack still advances.
    assert!(ack(&store, "m2", "d", group, left_at + 1).advanced);
    let page = receipts(&store, "m2", group, None, 10).unwrap();
    let users: Vec<_> = page.receipts.iter().map(|r| r.user.as_str()).collect();
    assert_eq!(users, ["m0", "m2"]);
}

fn total_unread(store: &Store, user: &str) -> u64 {
    block_on(store.im_total_unread(user).unwrap())
        .unwrap()
        .unwrap()
}

/// `im_total_unread` (what `read` answers with, review finding 8) is the
/// list's total, DMs and groups, through sends, reads, a group the user
/// left and a reopen; an unknown user has none.
#[test]
fn the_total_unread_alone_equals_the_lists_through_dms_groups_and_a_reopen() {
    let (dir, store) = fresh_store();
    let group = "grp:total";
    create(&store, group, "m0", &["u1", "u2"]);
    for round in 0..12u64 {
        send(&store, "u0", ["u1", "u2"][(round % 2) as usize], "x");
        msg(&store, group, ["m0", "u1", "u2"][(round % 3) as usize]).unwrap();
        if round % 4 == 3 {
            let conv = conv_name("u1", "u0");
            let last = list(&store, "u1", None, 10)
                .convs
                .iter()
                .find(|c| c.conv == conv)
                .map_or(0, |c| c.last_offset);
            read_to(&store, "u1", &conv, last.saturating_sub(1));
            read_to(&store, "u2", group, 2 + round);
        }
        for user in ["m0", "u0", "u1", "u2"] {
            assert_eq!(
                total_unread(&store, user),
                list(&store, user, None, 1).total_unread,
                "{user} after round {round}"
            );
            assert_eq!(total_unread(&store, user), recount(&store, user));
        }
    }
    assert!(total_unread(&store, "u1") > 0 && total_unread(&store, "u2") > 0);
    assert_eq!(total_unread(&store, "nobody"), 0);
    store.close().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for user in ["m0", "u0", "u1", "u2"] {
        assert_eq!(total_unread(&store, user), recount(&store, user), "{user}");
    }
}
