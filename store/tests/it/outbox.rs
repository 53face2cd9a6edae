//! The webhook outbox: events written in the same batch as their append,
//! standalone events, delivery (done), dead letters and replay, seqs and
//! event ids across reopens, the presence set, and SIGKILL.

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::Duration;

use ringcast_store::{
    Answer, AppendRequest, Appended, CommitSink, DeadRecord, Durability, OutboxEvent, OutboxKind,
    OutboxRecord, Store, StoreConfig, StoreError, Unreadable, DEAD_ERROR_BYTES_MAX,
};

use crate::kill::{run_and_kill, test_seed};
use crate::util::{block_on, config, eventually, flush, request, submit};

fn event(kind: OutboxKind, key: &str, body: &str) -> OutboxEvent {
    OutboxEvent {
        kind,
        key: key.to_owned(),
        due_ms: 0,
        body: body.as_bytes().to_vec(),
    }
}

/// An append to `stream` carrying `events`.
fn with_events(stream: &str, data: &str, events: Vec<OutboxEvent>) -> AppendRequest {
    AppendRequest {
        outbox: events,
        ..request(stream, data, Durability::Sync)
    }
}

pub fn outbox_all(store: &Store) -> Vec<OutboxRecord> {
    outbox_items(store)
        .into_iter()
        .map(|item| item.expect("a readable record"))
        .collect()
}

fn outbox_items(store: &Store) -> Vec<Result<OutboxRecord, Unreadable>> {
    let receiver = store.outbox_read(0, usize::MAX).expect("read queued");
    block_on(receiver)
        .expect("reader alive")
        .expect("outbox read")
}

fn dead_all(store: &Store) -> Vec<DeadRecord> {
    dead_items(store)
        .into_iter()
        .map(|item| item.expect("a readable dead record"))
        .collect()
}

fn dead_items(store: &Store) -> Vec<Result<DeadRecord, Unreadable>> {
    let receiver = store.dead_read(0, usize::MAX).expect("read queued");
    block_on(receiver)
        .expect("reader alive")
        .expect("dead read")
}

fn seqs(records: &[OutboxRecord]) -> Vec<u64> {
    records.iter().map(|record| record.seq).collect()
}

#[test]
fn events_ride_their_append_with_the_stamped_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let appended = submit(
        &store,
        with_events(
            "user:bob",
            "hello",
            vec![
                event(OutboxKind::Message, "alice", r#"{"client":"c1"}"#),
                OutboxEvent {
                    due_ms: 12_345,
                    ..event(OutboxKind::Undelivered, "bob", "{}")
                },
            ],
        ),
    )
    .unwrap();
    let records = outbox_all(&store);
    assert_eq!(records.len(), 2);
    let [message, undelivered] = &records[..] else {
        unreachable!()
    };
    assert!(message.seq < undelivered.seq);
    assert_ne!(message.event_id, undelivered.event_id);
    assert_eq!(
        (message.kind, message.key.as_str()),
        (OutboxKind::Message, "alice")
    );
    assert_eq!(message.body, br#"{"client":"c1"}"#);
    assert_eq!(
        (
            undelivered.kind,
            undelivered.key.as_str(),
            undelivered.due_ms
        ),
        (OutboxKind::Undelivered, "bob", 12_345)
    );
    for record in &records {
        let entry = record.entry.as_ref().expect("the entry rode along");
        assert_eq!(entry.as_bytes(), appended.push.as_bytes());
        assert_eq!(entry.envelope().offset.to_native(), appended.offset);
        assert_eq!(entry.envelope().id.to_native(), appended.message_id.0);
        assert!(record.time_ms > 0);
    }
    assert_eq!(store.health().outbox_len, 2);
    // After the first record: only the second.
    let receiver = store.outbox_read(message.seq, 10).unwrap();
    let receiver = async move {
        receiver.await.map(|page| {
            page.map(|items| {
                items
                    .into_iter()
                    .map(|item| item.expect("readable"))
                    .collect::<Vec<_>>()
            })
        })
    };
    let after = block_on(receiver).unwrap().unwrap();
    assert_eq!(seqs(&after), vec![undelivered.seq]);
    store.close().unwrap();
}

#[test]
fn a_duplicate_append_writes_no_second_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let with_id = || AppendRequest {
        client_msg_id: Some("m1".to_owned()),
        ..with_events(
            "chat:a",
            "x",
            vec![event(OutboxKind::Message, "alice", "{}")],
        )
    };
    let original = submit(&store, with_id()).unwrap();
    let retry = submit(&store, with_id()).unwrap();
    assert!(retry.duplicate && !original.duplicate);
    let records = outbox_all(&store);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(store.health().outbox_len, 1);
    store.close().unwrap();
}

#[test]
fn standalone_events_are_read_and_done_deletes_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    store
        .submit_outbox(vec![
            event(OutboxKind::Online, "alice", r#"{"presence_seq":1}"#),
            event(OutboxKind::Online, "bob", r#"{"presence_seq":2}"#),
        ])
        .unwrap();
    store
        .submit_outbox(vec![event(
            OutboxKind::Offline,
            "bob",
            r#"{"presence_seq":3}"#,
        )])
        .unwrap();
    eventually("standalone events stored", || outbox_all(&store).len() == 3);
    let records = outbox_all(&store);
    let kinds: Vec<(OutboxKind, &str)> = records
        .iter()
        .map(|record| (record.kind, record.key.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (OutboxKind::Online, "alice"),
            (OutboxKind::Online, "bob"),
            (OutboxKind::Offline, "bob")
        ]
    );
    assert!(records.iter().all(|record| record.entry.is_none()));
    let ids: HashSet<u64> = records.iter().map(|record| record.event_id).collect();
    assert_eq!(ids.len(), 3, "event ids are unique");

    // Done twice, and a seq that never existed: each counted once.
    store.outbox_done(vec![records[0].seq, 999_999]).unwrap();
    store
        .outbox_done(vec![records[0].seq, records[2].seq])
        .unwrap();
    flush(&store);
    assert_eq!(seqs(&outbox_all(&store)), vec![records[1].seq]);
    assert_eq!(store.health().outbox_len, 1);

    // Events with a bad key or body are refused at once.
    let refused = store.submit_outbox(vec![event(OutboxKind::Online, "", "{}")]);
    assert!(
        matches!(refused, Err(StoreError::InvalidRequest { .. })),
        "{refused:?}"
    );
    let big = OutboxEvent {
        body: vec![b'x'; ringcast_store::OUTBOX_BODY_BYTES_MAX + 1],
        ..event(OutboxKind::Online, "alice", "")
    };
    let refused = submit(&store, with_events("chat:a", "x", vec![big]));
    assert!(
        matches!(refused, Err(StoreError::InvalidRequest { .. })),
        "{refused:?}"
    );
    store.close().unwrap();
}

#[test]
fn dead_letters_keep_their_event_id_and_replay_under_new_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for user in ["a", "b", "c"] {
        submit(
            &store,
            with_events("chat:x", user, vec![event(OutboxKind::Message, user, "{}")]),
        )
        .unwrap();
    }
    let records = outbox_all(&store);
    assert_eq!(records.len(), 3);
    let long_error = "é".repeat(DEAD_ERROR_BYTES_MAX);
    let first = store.outbox_dead(records[0].seq, 10, long_error).unwrap();
    let second = store
        .outbox_dead(records[1].seq, 7, "HTTP 500".to_owned())
        .unwrap();
    // Answered once written: moved, and the same seq again moves nothing.
    assert_eq!(block_on(first).unwrap().unwrap(), 1);
    assert_eq!(block_on(second).unwrap().unwrap(), 1);
    let again = store.outbox_dead(records[1].seq, 8, "x".into()).unwrap();
    assert_eq!(block_on(again).unwrap().unwrap(), 0);
    let health = store.health();
    assert_eq!((health.outbox_len, health.dead_len), (1, 2));
    assert_eq!(seqs(&outbox_all(&store)), vec![records[2].seq]);
    let dead = dead_all(&store);
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].record.seq, records[0].seq);
    assert_eq!(dead[0].record.event_id, records[0].event_id);
    assert_eq!(dead[0].attempts, 10);
    assert!(
        dead[0].last_error.len() <= DEAD_ERROR_BYTES_MAX && dead[0].last_error.starts_with('é')
    );
    assert_eq!(
        (dead[1].attempts, dead[1].last_error.as_str()),
        (7, "HTTP 500")
    );
    assert!(dead[1].dead_at_ms >= records[1].time_ms);
    assert!(dead[1].record.entry.is_some(), "the entry is kept");

    // Replay one by seq, then the rest.
    let moved = block_on(
        store
            .dead_replay(Some(vec![records[1].seq, 424_242]))
            .unwrap(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(moved, 1);
    let moved = block_on(store.dead_replay(None).unwrap()).unwrap().unwrap();
    assert_eq!(moved, 1);
    assert!(dead_all(&store).is_empty());
    let back = outbox_all(&store);
    assert_eq!(back.len(), 3);
    let replayed_b = &back[1];
    let replayed_a = &back[2];
    assert_eq!(replayed_b.event_id, records[1].event_id);
    assert_eq!(replayed_a.event_id, records[0].event_id);
    assert!(
        replayed_b.seq > records[2].seq,
        "a sender past the old seq sees it"
    );
    assert!(replayed_a.seq > replayed_b.seq);
    assert_eq!(replayed_a.body, records[0].body);
    assert_eq!(replayed_a.key, "a");
    let health = store.health();
    assert_eq!((health.outbox_len, health.dead_len), (3, 0));
    store.close().unwrap();

    // The counts are rebuilt at open.
    let store = Store::open(config(dir.path())).unwrap();
    let health = store.health();
    assert_eq!((health.outbox_len, health.dead_len), (3, 0));
    store.close().unwrap();
}

#[test]
fn seqs_keep_increasing_across_reopen_even_when_the_outbox_emptied() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    submit(
        &store,
        with_events("chat:x", "1", vec![event(OutboxKind::Message, "a", "{}")]),
    )
    .unwrap();
    let first = outbox_all(&store);
    store.outbox_done(seqs(&first)).unwrap();
    flush(&store);
    assert!(outbox_all(&store).is_empty());
    store.close().unwrap();

    let store = Store::open(config(dir.path())).unwrap();
    submit(
        &store,
        with_events("chat:x", "2", vec![event(OutboxKind::Message, "a", "{}")]),
    )
    .unwrap();
    let second = outbox_all(&store);
    assert_eq!(second.len(), 1);
    assert!(second[0].seq > first[0].seq, "{second:?} after {first:?}");
    assert_ne!(second[0].event_id, first[0].event_id);
    store.close().unwrap();
}

#[test]
fn users_left_online_get_an_offline_event_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    store
        .submit_outbox(vec![
            event(OutboxKind::Online, "alice", "{}"),
            event(OutboxKind::Online, "bob", "{}"),
            event(OutboxKind::Online, "carol", "{}"),
        ])
        .unwrap();
    // Bob goes offline in a later batch, carol in the same batch as her online.
    flush(&store);
    store
        .submit_outbox(vec![event(OutboxKind::Offline, "bob", "{}")])
        .unwrap();
    store
        .submit_outbox(vec![
            event(OutboxKind::Online, "carol", "{}"),
            event(OutboxKind::Offline, "carol", "{}"),
        ])
        .unwrap();
    flush(&store);
    let before = outbox_all(&store);
    assert_eq!(before.len(), 6);
    let seq_max = before.iter().map(|record| record.seq).max().unwrap();
    drop(store);

    let store = Store::open(config(dir.path())).unwrap();
    let after = outbox_all(&store);
    let restart: Vec<&OutboxRecord> = after.iter().filter(|record| record.seq > seq_max).collect();
    assert_eq!(restart.len(), 1, "{restart:?}");
    assert_eq!(
        (restart[0].kind, restart[0].key.as_str()),
        (OutboxKind::Offline, "alice")
    );
    assert_eq!(restart[0].body, br#"{"reason":"restart"}"#);
    store.close().unwrap();

    // Alice left the set with her Offline: the next open writes nothing.
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(outbox_all(&store).len(), after.len());
    store.close().unwrap();
}

/// Presence events reach the writer in any order from the shards; their
/// sequences say which is later, and an overtaken one is dropped.
#[test]
fn presence_events_overtaken_by_a_later_one_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    // dave: offline at 5 reaches the writer after online at 6.
    store
        .submit_presence(event(OutboxKind::Online, "dave", "{}"), 6)
        .unwrap();
    flush(&store);
    store
        .submit_presence(event(OutboxKind::Offline, "dave", "{}"), 5)
        .unwrap();
    // erin: online at 7 reaches it after offline at 8, in one batch.
    store
        .submit_presence(event(OutboxKind::Online, "erin", "{}"), 3)
        .unwrap();
    store
        .submit_presence(event(OutboxKind::Offline, "erin", "{}"), 8)
        .unwrap();
    store
        .submit_presence(event(OutboxKind::Online, "erin", "{}"), 7)
        .unwrap();
    flush(&store);
    // erin again, later batch: still older than her offline at 8.
    store
        .submit_presence(event(OutboxKind::Online, "erin", "{}"), 8)
        .unwrap();
    flush(&store);
    let records: Vec<(OutboxKind, String)> = outbox_all(&store)
        .into_iter()
        .map(|record| (record.kind, record.key))
        .collect();
    assert_eq!(
        records,
        vec![
            (OutboxKind::Online, "dave".to_owned()),
            (OutboxKind::Online, "erin".to_owned()),
            (OutboxKind::Offline, "erin".to_owned()),
        ]
    );
    let refused = store.submit_presence(event(OutboxKind::Message, "x", "{}"), 1);
    assert!(
        matches!(refused, Err(StoreError::InvalidRequest { .. })),
        "{refused:?}"
    );
    drop(store);

    // Dave is still online in the presence set, erin is not.
    let store = Store::open(config(dir.path())).unwrap();
    let restart: Vec<(OutboxKind, String)> = outbox_all(&store)
        .into_iter()
        .skip(3)
        .map(|record| (record.kind, record.key))
        .collect();
    assert_eq!(restart, vec![(OutboxKind::Offline, "dave".to_owned())]);
    store.close().unwrap();
}

/// Everything a sink is handed, in order.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Appended,
    OutboxWritten,
    BatchDone,
}

struct Recorder(mpsc::Sender<Seen>);

impl CommitSink for Recorder {
    fn appended(&mut self, _appended: &Appended) {
        drop(self.0.send(Seen::Appended));
    }

    fn answered(&mut self, _tag: u64, _answer: Answer) {}

    fn outbox_written(&mut self) {
        drop(self.0.send(Seen::OutboxWritten));
    }

    fn batch_done(&mut self) {
        drop(self.0.send(Seen::BatchDone));
    }
}

#[test]
fn the_sink_hears_of_outbox_writes_once_per_batch_before_batch_done() {
    let dir = tempfile::tempdir().unwrap();
    let (seen_tx, seen) = mpsc::channel();
    let store = Store::open_with_sink(config(dir.path()), Recorder(seen_tx)).unwrap();
    let next = || {
        seen.recv_timeout(Duration::from_secs(10))
            .expect("sink called")
    };
    submit(
        &store,
        with_events(
            "chat:x",
            "1",
            vec![
                event(OutboxKind::Message, "a", "{}"),
                event(OutboxKind::Message, "a", "{}"),
            ],
        ),
    )
    .unwrap();
    assert_eq!(next(), Seen::Appended);
    assert_eq!(next(), Seen::OutboxWritten);
    assert_eq!(next(), Seen::BatchDone);
    // A batch without outbox records does not call it.
    submit(&store, request("chat:x", "2", Durability::Sync)).unwrap();
    assert_eq!(next(), Seen::Appended);
    assert_eq!(next(), Seen::BatchDone);
    store.close().unwrap();
}

/// The child side of the SIGKILL test (started by `kill::child_process`):
/// marks a user online, then appends with a Message event per append and
/// prints each acknowledged offset.
pub fn child_appends_with_events(store: &Store, durability: Durability) -> ! {
    store
        .submit_outbox(vec![event(OutboxKind::Online, "kill-user", "{}")])
        .unwrap();
    loop {
        let appended = submit(
            store,
            AppendRequest {
                outbox: vec![event(OutboxKind::Message, "kill-user", "{}")],
                ..request(OUTBOX_STREAM, "x", durability)
            },
        )
        .unwrap();
        println!("ACK {} {}", appended.offset, appended.epoch);
    }
}

pub const OUTBOX_STREAM: &str = "chat:kill";

/// kill -9 at a random moment loses no committed event: every acknowledged
/// append's Message event is in the outbox after reopen, exactly once, with
/// its entry; the user the child marked online gets a restart Offline.
#[test]
fn sigkill_loses_no_event_of_an_acknowledged_append() {
    let seed = test_seed();
    eprintln!("outbox sigkill seed: {seed} (rerun with RINGCAST_STORE_SEED={seed})");
    let mut random = seed;
    let dir = tempfile::tempdir().unwrap();
    let mut seq_max = 0u64;
    for (round, mode) in ["outbox-sync", "outbox-buffered", "outbox-sync"]
        .iter()
        .enumerate()
    {
        let (acked, delay) = run_and_kill(mode, dir.path(), &mut random, 300);
        let acked: Vec<u64> = acked
            .iter()
            .filter_map(|ack| ack.split(' ').next()?.parse().ok())
            .collect();
        assert!(!acked.is_empty(), "round {round}: no acks parsed");

        let store = Store::open(config(dir.path())).unwrap();
        let records = outbox_all(&store);
        let this_round: Vec<&OutboxRecord> = records
            .iter()
            .filter(|record| record.seq > seq_max)
            .collect();
        let messages: Vec<u64> = this_round
            .iter()
            .filter(|record| record.kind == OutboxKind::Message)
            .map(|record| {
                let entry = record
                    .entry
                    .as_ref()
                    .expect("a message event has its entry");
                entry.envelope().offset.to_native()
            })
            .collect();
        let unique: HashSet<u64> = messages.iter().copied().collect();
        assert_eq!(
            unique.len(),
            messages.len(),
            "seed {seed} round {round}: an event twice"
        );
        for offset in &acked {
            assert!(
                unique.contains(offset),
                "seed {seed} round {round} ({mode}, killed after {delay:?}): the event of \
                 acknowledged offset {offset} is missing"
            );
        }
        // Events and entries are one batch: no event without its entry.
        let stored_max = crate::util::read_all(&store, OUTBOX_STREAM).next_offset - 1;
        assert!(messages.iter().all(|&offset| offset <= stored_max));
        let restart: Vec<&&OutboxRecord> = this_round
            .iter()
            .filter(|record| record.kind == OutboxKind::Offline)
            .collect();
        assert_eq!(restart.len(), 1, "seed {seed} round {round}: {restart:?}");
        assert_eq!(restart[0].key, "kill-user");
        assert_eq!(restart[0].body, br#"{"reason":"restart"}"#);
        eprintln!(
            "round {round} ({mode}): killed after {delay:?}, acked {}, events {}",
            acked.len(),
            messages.len()
        );
        seq_max = records.iter().map(|record| record.seq).max().unwrap_or(0);
        store.close().unwrap();
    }
}

/// Overwrites outbox record `seq` with bytes no version decodes, with the
/// store closed (fjall opened directly, as a damaged disk would leave it).
fn damage_outbox_record(dir: &std::path::Path, seq: u64) {
    let db = fjall::Database::builder(dir).open().unwrap();
    let outbox = db
        .keyspace("outbox", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    assert!(outbox.get(seq.to_be_bytes()).unwrap().is_some());
    outbox.insert(seq.to_be_bytes(), b"\xffdamaged").unwrap();
    db.persist(fjall::PersistMode::SyncAll).unwrap();
}

#[test]
fn an_undecodable_record_is_reported_in_place_dead_lettered_and_passed_over_by_replay() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for user in ["a", "b", "c"] {
        store
            .submit_outbox(vec![event(OutboxKind::Message, user, "{}")])
            .unwrap();
        flush(&store);
    }
    let written = seqs(&outbox_all(&store));
    assert_eq!(written.len(), 3);
    store.close().unwrap();
    damage_outbox_record(dir.path(), written[0]);

    let store = Store::open(config(dir.path())).unwrap();
    // The page holds the two good records and the bad one in its place.
    let items = outbox_items(&store);
    assert_eq!(items.len(), 3, "{items:?}");
    let bad = items[0].as_ref().expect_err("the damaged record");
    assert_eq!(bad.seq, written[0]);
    assert_eq!(
        items[1..]
            .iter()
            .map(|item| item.as_ref().unwrap().seq)
            .collect::<Vec<_>>(),
        written[1..]
    );
    // Dead-lettered as it is (raw bytes), then a good one behind it.
    let dead_reply = store
        .outbox_dead(written[0], 0, format!("undecodable record: {}", bad.reason))
        .unwrap();
    block_on(dead_reply).unwrap().unwrap();
    let dead_reply = store.outbox_dead(written[1], 3, "HTTP 500".into()).unwrap();
    block_on(dead_reply).unwrap().unwrap();
    let dead = dead_items(&store);
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0].as_ref().expect_err("unreadable").seq, written[0]);
    assert_eq!(dead[1].as_ref().unwrap().record.seq, written[1]);
    // Replaying all passes over the unreadable one at the front.
    let replayed = block_on(store.dead_replay(None).unwrap()).unwrap().unwrap();
    assert_eq!(replayed, 1);
    let dead = dead_items(&store);
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].as_ref().expect_err("left where it is").seq,
        written[0]
    );
    let outbox = outbox_all(&store);
    assert_eq!(
        outbox.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        ["c", "b"],
        "b replayed under a new seq"
    );
    store.close().unwrap();
}

fn offline_events(store: &Store) -> Vec<String> {
    outbox_all(store)
        .into_iter()
        .filter(|record| record.kind == OutboxKind::Offline)
        .map(|record| record.key)
        .collect()
}

/// With no Offline events wanted, Online events leave the presence set
/// alone (it would only grow), and a set an earlier run left is emptied at
/// open without writing events.
#[test]
fn without_offline_events_there_is_no_presence_set() {
    let dir = tempfile::tempdir().unwrap();
    let no_set = || StoreConfig {
        presence_set: false,
        ..config(dir.path())
    };
    let store = Store::open(no_set()).unwrap();
    store
        .submit_outbox(vec![event(OutboxKind::Online, "alice", "{}")])
        .unwrap();
    store
        .submit_presence(event(OutboxKind::Online, "bob", "{}"), 1)
        .unwrap();
    flush(&store);
    drop(store);
    // Opened with the set on: nobody was in it.
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(offline_events(&store), Vec::<String>::new());
    // Now carol is in the set; an open without the set empties it.
    store
        .submit_outbox(vec![event(OutboxKind::Online, "carol", "{}")])
        .unwrap();
    flush(&store);
    drop(store);
    let store = Store::open(no_set()).unwrap();
    assert_eq!(offline_events(&store), Vec::<String>::new());
    drop(store);
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(
        offline_events(&store),
        Vec::<String>::new(),
        "carol's entry is gone"
    );
    store.close().unwrap();
}

/// More users online at a crash than one open-time batch closes: every
/// one of them gets exactly one Offline.
#[test]
fn users_left_online_past_one_close_batch_all_get_one_offline() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let users: Vec<String> = (0..2500).map(|n| format!("user{n:05}")).collect();
    for chunk in users.chunks(500) {
        let events = chunk
            .iter()
            .map(|user| event(OutboxKind::Online, user, "{}"))
            .collect();
        store.submit_outbox(events).unwrap();
        flush(&store);
    }
    drop(store);
    let store = Store::open(config(dir.path())).unwrap();
    let mut closed = offline_events(&store);
    closed.sort();
    assert_eq!(closed, users);
    drop(store);
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(
        offline_events(&store).len(),
        users.len(),
        "the set is empty"
    );
    store.close().unwrap();
}
