//! The IM layer's store side (`docs/im.md`): direct conversations, read
//! positions, the conversation list and sync, on a real fjall in a temp
//! dir, across reopens and a real SIGKILL.

use std::collections::{HashMap, HashSet};

use ringcast_protocol::envelope::{EncodedPush, Envelope};
use ringcast_store::{
    ConvPage, ConvSummary, Durability, ImAppend, ImAppended, ImReadState, ImSync, Store,
    StoreConfig, StoreError, SyncToken,
};

use crate::kill::{next_random, run_and_kill, test_seed};
use crate::util::{block_on, config, envelope, read_all, request, submit};

pub fn conv_name(a: &str, b: &str) -> String {
    let (a, b) = if a <= b { (a, b) } else { (b, a) };
    format!("dm:{a}-{b}")
}

pub fn im_request(from: &str, to: &str, text: &str, time_ms: u64) -> ImAppend {
    let conv = conv_name(from, to);
    ImAppend {
        push: EncodedPush::encode(&Envelope {
            sender: from.to_owned(),
            time_ms,
            ..envelope(&conv, text)
        }),
        conv,
        pair: (from.to_owned(), to.to_owned()),
        sender: from.to_owned(),
        client_msg_id: None,
        durability: Durability::Sync,
        backend_allowed: false,
    }
}

pub fn im_submit(store: &Store, request: ImAppend) -> Result<ImAppended, StoreError> {
    block_on(store.im_append(request)?).map_err(|_| StoreError::Closed)?
}

pub fn send(store: &Store, from: &str, to: &str, text: &str) -> ImAppended {
    im_submit(store, im_request(from, to, text, 0)).expect("IM append")
}

pub fn read_to(store: &Store, user: &str, conv: &str, offset: u64) -> ImReadState {
    block_on(store.im_read(user, conv, offset).unwrap())
        .unwrap()
        .unwrap()
}

pub fn list(store: &Store, user: &str, cursor: Option<(u64, u64)>, limit: usize) -> ConvPage {
    block_on(store.conv_list(user, cursor, limit).unwrap())
        .unwrap()
        .unwrap()
}

pub fn sync(store: &Store, user: &str, since: Option<SyncToken>, limit: usize) -> ImSync {
    block_on(store.im_sync(user, since, limit).unwrap())
        .unwrap()
        .unwrap()
}

/// A store on a new temp dir (kept alive by the returned guard).
pub fn fresh_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    (dir, store)
}

fn by_conv(page: &ConvPage) -> HashMap<String, ConvSummary> {
    page.convs
        .iter()
        .map(|summary| (summary.conv.clone(), summary.clone()))
        .collect()
}

#[test]
fn an_append_creates_the_conversation_for_both_users() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(list(&store, "alice", None, 10).convs, Vec::new());
    let sent = send(&store, "alice", "bob", "hi");
    assert_eq!((sent.appended.offset, sent.count), (1, 1));
    assert!(sent.gseq > 0 && !sent.appended.duplicate);
    let conv = conv_name("alice", "bob");
    for (user, peer, unread) in [("alice", "bob", 0), ("bob", "alice", 1)] {
        let page = list(&store, user, None, 10);
        assert_eq!(page.convs.len(), 1, "{user}");
        let summary = &page.convs[0];
        assert_eq!(summary.conv, conv);
        assert_eq!(summary.peer, peer);
        assert_eq!((summary.last_offset, summary.count_total), (1, 1));
        assert_eq!(summary.last_msg_offset, 1);
        assert_eq!(summary.epoch, sent.appended.epoch);
        assert_eq!(summary.unread, unread, "{user}");
        assert_eq!(page.total_unread, unread);
        assert_eq!(summary.changed_gseq, sent.gseq);
        assert_eq!(page.next, None);
    }
    // The entry is an ordinary stream entry: history reads it.
    let stored = read_all(&store, &conv);
    assert_eq!(stored.entries.len(), 1);
    assert_eq!(stored.entries[0].envelope().sender.as_str(), "alice");
    // The pair is the conversation's: another pair under its name is refused.
    let mut wrong = im_request("alice", "eve", "x", 0);
    wrong.conv = conv.clone();
    assert!(matches!(
        im_submit(&store, wrong),
        Err(StoreError::InvalidRequest { .. })
    ));
    let mut not_in_pair = im_request("alice", "bob", "x", 0);
    not_in_pair.sender = "eve".to_owned();
    assert!(matches!(
        im_submit(&store, not_in_pair),
        Err(StoreError::InvalidRequest { .. })
    ));
    store.close().unwrap();
}

#[test]
fn own_messages_are_never_unread_and_read_clears_the_peers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let conv = conv_name("alice", "bob");
    for text in ["1", "2", "3"] {
        send(&store, "alice", "bob", text);
    }
    let unread = |user: &str| by_conv(&list(&store, user, None, 10))[&conv].unread;
    assert_eq!((unread("alice"), unread("bob")), (0, 3));
    assert_eq!(
        read_to(&store, "bob", &conv, 2),
        ImReadState {
            read_offset: 2,
            unread: 1,
            visible_from: 0,
        }
    );
    // Monotonic: a lower position changes nothing.
    assert_eq!(read_to(&store, "bob", &conv, 1).read_offset, 2);
    // Clamped to the last offset.
    assert_eq!(
        read_to(&store, "bob", &conv, 99),
        ImReadState {
            read_offset: 3,
            unread: 0,
            visible_from: 0,
        }
    );
    // Bob answers: his message moves his own position, alice gets one unread.
    let reply = send(&store, "bob", "alice", "4");
    assert_eq!((reply.appended.offset, reply.count), (4, 4));
    assert_eq!((unread("alice"), unread("bob")), (1, 0));
    let bob = by_conv(&list(&store, "bob", None, 10))[&conv].clone();
    assert_eq!(bob.read_offset, 4);
    // Someone outside the pair has no read position to move.
    assert!(matches!(
        block_on(store.im_read("eve", &conv, 1).unwrap()).unwrap(),
        Err(StoreError::InvalidRequest { .. })
    ));
    assert!(matches!(
        block_on(store.im_read("bob", "dm:none", 1).unwrap()).unwrap(),
        Err(StoreError::InvalidRequest { .. })
    ));
    // A conversation with oneself: one user, nothing unread.
    send(&store, "carol", "carol", "note");
    let page = list(&store, "carol", None, 10);
    assert_eq!(page.convs.len(), 1);
    assert_eq!(
        (page.convs[0].peer.as_str(), page.total_unread),
        ("carol", 0)
    );
    store.close().unwrap();
}

/// Every page of `user`'s list, following the cursors.
fn list_all(store: &Store, user: &str, limit: usize) -> Vec<ConvSummary> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = list(store, user, cursor, limit);
        assert!(page.convs.len() <= limit);
        all.extend(page.convs);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
}

fn wall_ms() -> u64 {
    let now = std::time::SystemTime::now();
    let since = now.duration_since(std::time::UNIX_EPOCH).unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

#[test]
fn conv_list_pages_in_exact_activity_order_with_equal_times() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    // The writer stamps the time: conversations queued together share the
    // batch's millisecond. Rounds of twelve until two times are equal.
    let mut peers: Vec<String> = Vec::new();
    let mut shared = false;
    for round in 0..10 {
        let receivers: Vec<_> = (0..12)
            .map(|idx| {
                let peer = format!("peer{round:02}{idx:02}");
                let mut request = im_request(&peer, "alice", "hi", 0);
                request.durability = Durability::Buffered;
                peers.push(peer);
                store.im_append(request).unwrap()
            })
            .collect();
        for receiver in receivers {
            block_on(receiver).unwrap().unwrap();
        }
        let all = list_all(&store, "alice", 1_000);
        if all
            .windows(2)
            .any(|w| w[0].last_time_ms == w[1].last_time_ms)
        {
            shared = true;
            break;
        }
    }
    assert!(shared, "no two conversations shared a time");
    let total = peers.len();
    let check_order = |all: &[ConvSummary]| {
        for pair in all.windows(2) {
            assert!(
                (pair[0].last_time_ms, pair[0].sid) > (pair[1].last_time_ms, pair[1].sid),
                "{:?} before {:?}",
                (pair[0].last_time_ms, pair[0].sid),
                (pair[1].last_time_ms, pair[1].sid)
            );
        }
    };
    for limit in [1, 2, 5, 12, 50] {
        let all = list_all(&store, "alice", limit);
        assert_eq!(all.len(), total, "limit {limit}");
        check_order(&all);
        let convs: HashSet<&str> = all.iter().map(|summary| summary.conv.as_str()).collect();
        assert_eq!(convs.len(), total);
        assert_eq!(
            all.iter().map(|summary| summary.unread).sum::<u64>(),
            total as u64
        );
    }
    // A newer message moves its conversation to the front. The push's own
    // time is not trusted: one a day ahead is stamped with the writer's
    // clock, and one in the past with the conversation's last time or now,
    // so time never goes back along the stream.
    let oldest = list_all(&store, "alice", 50).last().unwrap().clone();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let future = wall_ms() + 86_400_000;
    let ahead = im_submit(&store, im_request(&oldest.peer, "alice", "ahead", future)).unwrap();
    let ahead_ms = ahead.appended.push.envelope().time_ms.to_native();
    assert!(ahead_ms > oldest.last_time_ms && ahead_ms <= wall_ms());
    let past = im_submit(&store, im_request(&oldest.peer, "alice", "late", 1)).unwrap();
    let past_ms = past.appended.push.envelope().time_ms.to_native();
    assert!(past_ms >= ahead_ms && past_ms <= wall_ms());
    let all = list_all(&store, "alice", 4);
    check_order(&all);
    assert_eq!(all.len(), total);
    assert_eq!(all[0].conv, oldest.conv);
    assert_eq!((all[0].last_time_ms, all[0].unread), (past_ms, 3));
    let page = list(&store, "alice", None, 3);
    assert_eq!(page.total_unread, total as u64 + 2);
    // Each peer sees only its own conversation.
    assert_eq!(list_all(&store, &peers[3], 10).len(), 1);
    store.close().unwrap();
}

#[test]
fn im_sync_returns_exactly_what_changed_since_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for peer in ["p1", "p2", "p3", "p4"] {
        send(&store, peer, "alice", "hi");
    }
    let first = sync(&store, "alice", None, 100);
    assert_eq!(
        (first.convs.len(), first.more, first.reset),
        (4, false, false)
    );
    assert_eq!(first.total_unread, 4);
    let token = first.token;
    // Nothing changed: nothing returned, same token.
    let idle = sync(&store, "alice", Some(token), 100);
    assert!(idle.convs.is_empty() && !idle.more);
    assert_eq!(idle.token, token);
    // Another user's conversation moves the sequence, not alice's sync.
    send(&store, "p1", "p2", "aside");
    let aside = sync(&store, "alice", Some(token), 100);
    assert!(aside.convs.is_empty());
    assert!(aside.token.gseq > token.gseq);
    // A message, a read and a new conversation: exactly those three.
    send(&store, "p2", "alice", "again");
    read_to(&store, "alice", &conv_name("p3", "alice"), 1);
    send(&store, "alice", "p5", "new");
    let changed = sync(&store, "alice", Some(token), 100);
    let convs: HashSet<String> = changed.convs.iter().map(|c| c.conv.clone()).collect();
    let expected: HashSet<String> = ["p2", "p3", "p5"]
        .iter()
        .map(|peer| conv_name(peer, "alice"))
        .collect();
    assert_eq!(convs, expected);
    assert_eq!(changed.total_unread, 1 + 2 + 1);
    // Paged: two then one, no change lost between the pages.
    let page1 = sync(&store, "alice", Some(token), 2);
    assert_eq!((page1.convs.len(), page1.more), (2, true));
    let page2 = sync(&store, "alice", Some(page1.token), 2);
    assert_eq!((page2.convs.len(), page2.more), (1, false));
    let paged: HashSet<String> = page1
        .convs
        .iter()
        .chain(&page2.convs)
        .map(|c| c.conv.clone())
        .collect();
    assert_eq!(paged, expected);
    assert_eq!(page2.token, changed.token);
    // A token of another store is a full sync, flagged.
    let foreign = SyncToken {
        store_id: token.store_id ^ 1,
        gseq: token.gseq,
    };
    let full = sync(&store, "alice", Some(foreign), 100);
    assert!(full.reset);
    assert_eq!(full.convs.len(), 5);
    store.close().unwrap();
}

#[test]
fn both_users_of_a_dm_may_send_the_same_client_msg_id() {
    let (_dir, store) = fresh_store();
    let with_id = |from: &str, to: &str, text: &str| {
        let mut request = im_request(from, to, text, 0);
        request.client_msg_id = Some("1".to_owned());
        im_submit(&store, request).unwrap()
    };
    let alice = with_id("alice", "bob", "from alice");
    let bob = with_id("bob", "alice", "from bob");
    assert!(
        !bob.appended.duplicate,
        "bob's message is his own, not alice's"
    );
    assert_eq!((alice.appended.offset, bob.appended.offset), (1, 2));
    assert_eq!(bob.appended.push.envelope().sender.as_str(), "bob");
    // Each sender's retry still finds that sender's own message.
    let alice_retry = with_id("alice", "bob", "from alice");
    let bob_retry = with_id("bob", "alice", "from bob");
    assert!(alice_retry.appended.duplicate && bob_retry.appended.duplicate);
    assert_eq!(alice_retry.appended.offset, 1);
    assert_eq!(bob_retry.appended.offset, 2);
    // Both messages are stored: bob's message is unread for alice, and
    // bob, having sent last, has read everything.
    for (user, unread) in [("alice", 1), ("bob", 0)] {
        let page = list(&store, user, None, 10);
        assert_eq!(
            (page.convs[0].count_total, page.convs[0].unread),
            (2, unread)
        );
    }
    store.close().unwrap();
}

#[test]
fn a_first_sync_gets_the_newest_page_and_the_rest_pages_with_conv_list() {
    let (_dir, store) = fresh_store();
    let peers: Vec<String> = (0..7).map(|idx| format!("p{idx}")).collect();
    for peer in &peers {
        send(&store, peer, "alice", "hi");
    }
    // The oldest conversation becomes the newest.
    send(&store, &peers[0], "alice", "again");
    let newest = list(&store, "alice", None, 3);
    let first = sync(&store, "alice", None, 3);
    assert_eq!((first.more, first.reset), (true, false));
    assert_eq!(first.convs, newest.convs, "the newest page of the list");
    assert_eq!(first.convs[0].conv, conv_name(&peers[0], "alice"));
    // The rest of the list from the last conversation of the page.
    let last = first.convs.last().unwrap();
    let mut all = first.convs.clone();
    let mut cursor = Some((last.last_time_ms, last.sid));
    while let Some(next) = cursor {
        let page = list(&store, "alice", Some(next), 3);
        all.extend(page.convs);
        cursor = page.next;
    }
    let convs: HashSet<String> = all.iter().map(|c| c.conv.clone()).collect();
    assert_eq!((all.len(), convs.len()), (7, 7));
    // The token covers everything up to the snapshot: nothing is left.
    let after = sync(&store, "alice", Some(first.token), 3);
    assert!(after.convs.is_empty() && !after.more);
    // A token of another store gets the same newest page, flagged.
    let foreign = SyncToken {
        store_id: first.token.store_id ^ 1,
        gseq: first.token.gseq,
    };
    let again = sync(&store, "alice", Some(foreign), 3);
    assert!(again.reset && again.more);
    assert_eq!(again.convs, newest.convs);
    assert_eq!(again.token, first.token);
    store.close().unwrap();
}

#[test]
fn a_token_ahead_of_the_stores_sequence_is_a_reset() {
    let (_dir, store) = fresh_store();
    send(&store, "p1", "alice", "hi");
    send(&store, "p2", "alice", "hi");
    let token = sync(&store, "alice", None, 10).token;
    // As if the store were restored from a copy taken before this token.
    let ahead = SyncToken {
        gseq: token.gseq + 1_000,
        ..token
    };
    let full = sync(&store, "alice", Some(ahead), 10);
    assert!(full.reset);
    assert_eq!(full.convs.len(), 2);
    assert_eq!(full.token, token, "the token goes back to the store's");
    let from_own = sync(&store, "alice", Some(token), 10);
    assert!(!from_own.reset && from_own.convs.is_empty());
    store.close().unwrap();
}

#[test]
fn a_page_limit_of_zero_is_refused() {
    let (_dir, store) = fresh_store();
    send(&store, "p1", "alice", "hi");
    assert!(matches!(
        store.conv_list("alice", None, 0),
        Err(StoreError::InvalidRequest { .. })
    ));
    assert!(matches!(
        store.im_sync("alice", None, 0),
        Err(StoreError::InvalidRequest { .. })
    ));
    assert_eq!(list(&store, "alice", None, 1).convs.len(), 1);
    store.close().unwrap();
}

#[test]
fn the_push_sender_must_be_the_request_sender() {
    let (_dir, store) = fresh_store();
    let mut forged = im_request("alice", "bob", "hi", 0);
    forged.sender = "bob".to_owned();
    assert!(matches!(
        im_submit(&store, forged),
        Err(StoreError::InvalidRequest { .. })
    ));
    // Nothing was made: no conversation, no stream.
    assert!(list(&store, "alice", None, 10).convs.is_empty());
    assert!(list(&store, "bob", None, 10).convs.is_empty());
    send(&store, "alice", "bob", "hi");
    let summary = &list(&store, "bob", None, 10).convs[0];
    assert_eq!((summary.count_total, summary.unread), (1, 1));
    store.close().unwrap();
}

#[test]
fn plain_appends_to_im_names_are_refused_so_the_conversation_stays_free() {
    let (_dir, store) = fresh_store();
    let conv = conv_name("alice", "bob");
    for name in [conv.as_str(), "grp:team"] {
        assert!(matches!(
            submit(&store, request(name, "plain", Durability::Sync)),
            Err(StoreError::InvalidRequest { .. })
        ));
    }
    // The refused append made no stream: the first IM message makes it.
    let first = send(&store, "alice", "bob", "hi");
    assert_eq!((first.appended.offset, first.count), (1, 1));
    // Other names are plain streams as before.
    submit(&store, request("dmx:plain", "x", Durability::Sync)).unwrap();
    store.close().unwrap();
}

#[test]
fn a_user_at_the_conversation_cap_gets_no_new_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let capped = || StoreConfig {
        conversations_per_user_max: 3,
        ..config(dir.path())
    };
    let store = Store::open(capped()).unwrap();
    for peer in ["p1", "p2", "p3"] {
        send(&store, peer, "alice", "hi");
    }
    // A fourth stranger is refused, and nothing of it is stored.
    match im_submit(&store, im_request("p4", "alice", "hi", 0)) {
        Err(StoreError::ConversationLimit { user, limit }) => {
            assert_eq!((user.as_str(), limit), ("alice", 3));
        }
        other => panic!("expected ConversationLimit, got {other:?}"),
    }
    assert!(list(&store, "p4", None, 10).convs.is_empty());
    // Alice sending to a fourth is refused the same way.
    assert!(matches!(
        im_submit(&store, im_request("alice", "p4", "hi", 0)),
        Err(StoreError::ConversationLimit { .. })
    ));
    // Existing conversations go on; other users are not affected.
    send(&store, "alice", "p1", "still here");
    send(&store, "p4", "p5", "elsewhere");
    assert_eq!(list(&store, "alice", None, 10).convs.len(), 3);
    // New conversations queued together count against the cap in one batch.
    let receivers: Vec<_> = ["q1", "q2", "q3", "q4", "q5"]
        .iter()
        .map(|peer| {
            let mut request = im_request(peer, "bob", "hi", 0);
            request.durability = Durability::Buffered;
            store.im_append(request).unwrap()
        })
        .collect();
    let results: Vec<_> = receivers
        .into_iter()
        .map(|receiver| block_on(receiver).unwrap())
        .collect();
    let stored = results.iter().filter(|result| result.is_ok()).count();
    let refused = results
        .iter()
        .filter(|result| matches!(result, Err(StoreError::ConversationLimit { .. })))
        .count();
    assert_eq!((stored, refused), (3, 2));
    assert_eq!(list(&store, "bob", None, 10).convs.len(), 3);
    store.close().unwrap();
    // The cap holds across a reopen: the count is read from the store.
    let store = Store::open(capped()).unwrap();
    assert!(matches!(
        im_submit(&store, im_request("p6", "alice", "hi", 0)),
        Err(StoreError::ConversationLimit { .. })
    ));
    store.close().unwrap();
}

#[test]
fn everything_survives_reopen_and_conversations_take_only_im_writes() {
    let dir = tempfile::tempdir().unwrap();
    let conv = conv_name("alice", "bob");
    let (token, before) = {
        let store = Store::open(config(dir.path())).unwrap();
        send(&store, "alice", "bob", "1");
        send(&store, "bob", "alice", "2");
        send(&store, "alice", "bob", "3");
        read_to(&store, "bob", &conv, 1);
        let mut retry = im_request("alice", "bob", "4", 0);
        retry.client_msg_id = Some("m4".to_owned());
        let original = im_submit(&store, retry.clone()).unwrap();
        let duplicate = im_submit(&store, retry).unwrap();
        assert!(duplicate.appended.duplicate);
        assert_eq!(duplicate.appended.offset, original.appended.offset);
        assert_eq!((duplicate.count, duplicate.gseq), (original.count, 0));
        let token = sync(&store, "bob", None, 100).token;
        let before = (
            list(&store, "alice", None, 10),
            list(&store, "bob", None, 10),
        );
        store.close().unwrap();
        (token, before)
    };
    let store = Store::open(config(dir.path())).unwrap();
    let after = (
        list(&store, "alice", None, 10),
        list(&store, "bob", None, 10),
    );
    assert_eq!(after, before);
    assert_eq!(after.1.convs[0].unread, 2);
    let same = sync(&store, "bob", Some(token), 100);
    assert!(same.convs.is_empty() && !same.reset);
    assert_eq!(same.token, token, "the store id and the sequence survive");
    // The sequence goes on from where it was.
    let next = send(&store, "bob", "alice", "5");
    assert!(next.gseq > token.gseq);
    assert_eq!((next.appended.offset, next.count), (5, 5));
    // The stream is the conversation's: plain appends and resets are refused.
    assert!(matches!(
        submit(&store, request(&conv, "plain", Durability::Sync)),
        Err(StoreError::InvalidRequest { .. })
    ));
    assert!(matches!(
        block_on(store.reset_stream(&conv).unwrap()).unwrap(),
        Err(StoreError::InvalidRequest { .. })
    ));
    // And a plain stream is not a conversation.
    submit(&store, request("chat:plain", "x", Durability::Sync)).unwrap();
    let mut over_plain = im_request("alice", "bob", "x", 0);
    over_plain.conv = "chat:plain".to_owned();
    assert!(matches!(
        im_submit(&store, over_plain),
        Err(StoreError::InvalidRequest { .. })
    ));
    store.close().unwrap();
}

const KILL_USERS: [&str; 5] = ["u0", "u1", "u2", "u3", "u4"];

/// The child side of the SIGKILL test (started by `kill::child_process`):
/// rounds of eight IM appends between random pairs and two reads, queued
/// together so they share batches; prints each acknowledged append.
pub fn child_im_traffic(store: &Store, durability: Durability) -> ! {
    let mut random = std::process::id() as u64 | 1;
    loop {
        let mut appends = Vec::new();
        for _ in 0..8 {
            let from = KILL_USERS[(next_random(&mut random) % 5) as usize];
            let to = KILL_USERS[(next_random(&mut random) % 5) as usize];
            let request = ImAppend {
                durability,
                ..im_request(from, to, "x", 0)
            };
            let conv = request.conv.clone();
            appends.push((conv, store.im_append(request).unwrap()));
        }
        let mut reads = Vec::new();
        for _ in 0..2 {
            let user = KILL_USERS[(next_random(&mut random) % 5) as usize];
            let peer = KILL_USERS[(next_random(&mut random) % 5) as usize];
            let offset = next_random(&mut random) % 50;
            reads.push(store.im_read(user, &conv_name(user, peer), offset).unwrap());
        }
        for (conv, receiver) in appends {
            let appended = block_on(receiver).unwrap().unwrap();
            println!("ACK {conv} {}", appended.appended.offset);
        }
        for receiver in reads {
            // A read of a conversation not created yet is refused; fine.
            drop(block_on(receiver).unwrap());
        }
    }
}

/// kill -9 during IM traffic: every acknowledged IM append is stored; each
/// conversation's record agrees with its stream (count, last offset); each
/// user's unread equals the count recomputed from the entries after its
/// read position, none of which is its own.
#[test]
fn sigkill_keeps_conversations_read_positions_and_streams_consistent() {
    let seed = test_seed();
    eprintln!("im sigkill seed: {seed} (rerun with RINGCAST_STORE_SEED={seed})");
    let mut random = seed;
    let dir = tempfile::tempdir().unwrap();
    for (round, mode) in ["im-sync", "im-buffered", "im-sync"].iter().enumerate() {
        let (acked, delay) = run_and_kill(mode, dir.path(), &mut random, 300);
        let store = Store::open(config(dir.path())).unwrap();
        let mut acked_max: HashMap<String, u64> = HashMap::new();
        for ack in &acked {
            let (conv, offset) = ack.split_once(' ').expect("ACK conv offset");
            let offset: u64 = offset.parse().expect("offset");
            let max = acked_max.entry(conv.to_owned()).or_default();
            *max = (*max).max(offset);
        }
        for (conv, offset) in &acked_max {
            let stored = read_all(&store, conv).next_offset - 1;
            assert!(
                stored >= *offset,
                "seed {seed} round {round} ({mode}, killed after {delay:?}): {conv} acked \
                 {offset}, stored {stored}"
            );
        }
        let mut convs_seen = HashSet::new();
        for user in KILL_USERS {
            let page = list(&store, user, None, 100);
            assert_eq!(page.next, None);
            let mut total = 0;
            for summary in &page.convs {
                convs_seen.insert(summary.conv.clone());
                let stored = read_all(&store, &summary.conv);
                assert_eq!(stored.first_offset, 1, "{}", summary.conv);
                assert_eq!(
                    (summary.count_total, summary.last_offset),
                    (stored.entries.len() as u64, stored.next_offset - 1),
                    "seed {seed} round {round}: {} disagrees with its stream",
                    summary.conv
                );
                let after: Vec<_> = stored
                    .entries
                    .iter()
                    .filter(|entry| entry.envelope().offset.to_native() > summary.read_offset)
                    .collect();
                assert_eq!(
                    summary.unread,
                    after.len() as u64,
                    "seed {seed} round {round}: {user}'s unread in {}",
                    summary.conv
                );
                assert!(
                    after
                        .iter()
                        .all(|entry| entry.envelope().sender.as_str() != user),
                    "seed {seed} round {round}: {user}'s own message unread in {}",
                    summary.conv
                );
                total += summary.unread;
            }
            assert_eq!(page.total_unread, total);
            assert_eq!(sync(&store, user, None, 100).convs.len(), page.convs.len());
        }
        for conv in acked_max.keys() {
            assert!(convs_seen.contains(conv), "{conv} in no list");
        }
        eprintln!(
            "round {round} ({mode}): killed after {delay:?}, acked {}, conversations {}",
            acked.len(),
            convs_seen.len()
        );
        store.close().unwrap();
    }
}
