//! The commit sink: what the writer hands back per group commit, and in
//! what order, for requests submitted with a tag.

use std::sync::mpsc;
use std::time::Duration;

use ringcast_store::{Answer, Appended, CommitSink, Durability, Store, StoreError};

use crate::util::{config, read_all, request};

/// Everything a sink is handed, in order.
#[derive(Debug)]
enum Seen {
    Appended {
        stream: String,
        offset: u64,
    },
    Answered {
        tag: u64,
        offset: Result<u64, String>,
    },
    BatchDone,
}

struct Recorder(mpsc::Sender<Seen>);

impl CommitSink for Recorder {
    fn appended(&mut self, appended: &Appended) {
        let stream = appended.push.envelope().channel.as_str().to_owned();
        drop(self.0.send(Seen::Appended {
            stream,
            offset: appended.offset,
        }));
    }

    fn answered(&mut self, tag: u64, answer: Answer) {
        let offset = match answer {
            Answer::Appended(result) => result.map(|a| a.offset),
            Answer::Cursor(result) => result,
            Answer::ImAppended(result) => result.map(|im| im.appended.offset),
            Answer::ImRead(result) => result.map(|read| read.read_offset),
            Answer::ImAck(result) => result.map(|ack| ack.cursor),
            Answer::Group(result) => result.map(|group| group.appended.offset),
            Answer::Rewritten(result) => result.map(|rewrite| rewrite.appended.offset),
        };
        drop(self.0.send(Seen::Answered {
            tag,
            offset: offset.map_err(|e| e.to_string()),
        }));
    }

    fn batch_done(&mut self) {
        drop(self.0.send(Seen::BatchDone));
    }
}

fn next(seen: &mpsc::Receiver<Seen>) -> Seen {
    seen.recv_timeout(Duration::from_secs(10))
        .expect("the sink is handed the batch")
}

/// Tagged requests are answered through the sink, never twice, each after
/// the new entries of its batch; every batch ends with `batch_done`; a
/// refused request is answered (with its error) in its batch like the rest.
#[test]
fn tagged_answers_follow_their_batch_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, seen) = mpsc::channel();
    let mut config = config(dir.path());
    // Fsync pacing makes the batches larger; the order must hold anyway.
    config.sync_interval_min = Duration::from_millis(5);
    // Several batches.
    config.group_commit_entries_max = 16;
    let store = Store::open_with_sink(config, Recorder(tx)).unwrap();
    let n = 200u64;
    for tag in 0..n {
        let stream = format!("user:{}", tag % 7);
        store
            .submit_append(request(&stream, &tag.to_string(), Durability::Sync), tag)
            .unwrap();
    }
    // Refused by the writer's validation: answered through the sink too.
    store
        .submit_append(request("", "refused", Durability::Sync), n)
        .unwrap();
    store
        .submit_cursor("alice", "phone", "user:0", 3, n + 1)
        .unwrap();
    let mut answered = vec![None; (n + 2) as usize];
    let mut stored_in_batch = Vec::new();
    let mut stored_before: Vec<(String, u64)> = Vec::new();
    let mut batches = 0;
    while answered.iter().any(Option::is_none) {
        match next(&seen) {
            Seen::Appended { stream, offset } => {
                assert!(
                    stored_in_batch.iter().all(|(_, answered)| !answered),
                    "an entry after an answer of its batch"
                );
                stored_in_batch.push(((stream, offset), false));
            }
            Seen::Answered { tag, offset } => {
                let slot = &mut answered[tag as usize];
                assert!(slot.is_none(), "tag {tag} answered twice");
                if let Ok(offset) = offset {
                    if tag < n {
                        // Its entry was handed over earlier in this batch.
                        let stream = format!("user:{}", tag % 7);
                        let entry = stored_in_batch
                            .iter_mut()
                            .find(|((s, o), _)| *s == stream && *o == offset)
                            .expect("an answered append's entry came first, in its batch");
                        entry.1 = true;
                    }
                }
                *slot = Some(offset);
            }
            Seen::BatchDone => {
                batches += 1;
                stored_before.extend(stored_in_batch.drain(..).map(|(entry, _)| entry));
            }
        }
    }
    assert!(
        matches!(next(&seen), Seen::BatchDone),
        "the last batch ends"
    );
    batches += 1;
    stored_before.extend(stored_in_batch.drain(..).map(|(entry, _)| entry));
    assert_eq!(stored_before.len() as u64, n, "one entry per new append");
    assert!(batches > (n / 16), "{n} appends in {batches} batches");
    // Offsets per stream are 1.. in submission order.
    for tag in 0..n {
        let expected = tag / 7 + 1;
        assert_eq!(answered[tag as usize], Some(Ok(expected)), "tag {tag}");
    }
    let refused = answered[n as usize].clone().unwrap();
    assert!(
        refused.unwrap_err().contains("stream name"),
        "a refusal says why"
    );
    // The cursor is clamped to the stream's end (user:0 has 29 entries).
    assert_eq!(answered[(n + 1) as usize], Some(Ok(3)));
    assert_eq!(read_all(&store, "user:3").entries.len(), 29);
    store.close().unwrap();
}

/// A closed store refuses a tagged request at the door, as it refuses an
/// untagged one.
#[test]
fn tagged_requests_on_a_closed_store_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _seen) = mpsc::channel();
    let store = Store::open_with_sink(config(dir.path()), Recorder(tx)).unwrap();
    store.close().unwrap();
    let error = store
        .submit_append(request("user:a", "late", Durability::Sync), 1)
        .unwrap_err();
    assert!(matches!(error, StoreError::Closed), "{error}");
}

/// A sink that takes no answers (a closure) makes the store refuse tagged
/// requests, instead of dropping their answers.
#[test]
fn a_closure_sink_refuses_tagged_requests() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let error = store
        .submit_append(request("user:a", "tagged", Durability::Sync), 1)
        .unwrap_err();
    assert!(
        matches!(error, StoreError::InvalidRequest { .. }),
        "{error}"
    );
    let error = store.submit_cursor("a", "d", "user:a", 1, 2).unwrap_err();
    assert!(
        matches!(error, StoreError::InvalidRequest { .. }),
        "{error}"
    );
    store.close().unwrap();
}

/// A writer that dies (here: its sink panics) says so in `health()`, so a
/// caller waiting for tagged answers knows none will come.
#[test]
fn a_dead_writer_is_reported_stopped() {
    struct Panics;
    impl CommitSink for Panics {
        fn appended(&mut self, _: &Appended) {
            panic!("sink failure (on purpose)");
        }
        fn answered(&mut self, _: u64, _: Answer) {}
        fn batch_done(&mut self) {}
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with_sink(config(dir.path()), Panics).unwrap();
    assert!(!store.health().writer_stopped);
    store
        .submit_append(request("user:a", "boom", Durability::Sync), 7)
        .unwrap();
    crate::util::eventually("writer stopped", || store.health().writer_stopped);
    assert!(store.health().poisoned);
    assert!(store.close().is_err(), "closing reports the dead writer");
}

/// Tagged IM requests: the new entry is handed to `appended` before its
/// answer, and `im_read` is answered with the position now stored.
#[test]
fn tagged_im_requests_are_answered_through_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, seen) = mpsc::channel();
    let store = Store::open_with_sink(config(dir.path()), Recorder(tx)).unwrap();
    let conv = crate::im::conv_name("alice", "bob");
    store
        .submit_im_append(crate::im::im_request("alice", "bob", "hi", 0), 7)
        .unwrap();
    let mut entry_seen = false;
    loop {
        match next(&seen) {
            Seen::Appended { stream, offset } => {
                assert_eq!((stream.as_str(), offset), (conv.as_str(), 1));
                entry_seen = true;
            }
            Seen::Answered { tag, offset } => {
                assert!(entry_seen, "the entry before its answer");
                assert_eq!((tag, offset), (7, Ok(1)));
                break;
            }
            Seen::BatchDone => {}
        }
    }
    store.submit_im_read("bob", &conv, 5, 8).unwrap();
    loop {
        match next(&seen) {
            Seen::Answered { tag, offset } => {
                // Clamped to the last offset.
                assert_eq!((tag, offset), (8, Ok(1)));
                break;
            }
            Seen::Appended { stream, .. } => panic!("a read stores no entry ({stream})"),
            Seen::BatchDone => {}
        }
    }
    store.close().unwrap();
}

/// What a sink that routes DMs by user sees.
#[derive(Debug, PartialEq)]
enum DmSeen {
    Dm {
        stream: String,
        pair: (String, String),
        id: u64,
    },
    Plain,
    Answered(u64, Result<u64, String>),
    BatchDone,
}

struct DmRecorder(mpsc::Sender<DmSeen>);

impl CommitSink for DmRecorder {
    fn appended(&mut self, _appended: &Appended) {
        drop(self.0.send(DmSeen::Plain));
    }

    fn dm_appended(&mut self, dm: &ringcast_store::ImAppended) {
        drop(self.0.send(DmSeen::Dm {
            stream: dm.appended.push.envelope().channel.as_str().to_owned(),
            pair: dm.pair.clone(),
            id: dm.appended.push.envelope().id.to_native(),
        }));
    }

    fn answered(&mut self, tag: u64, answer: Answer) {
        let offset = match answer {
            Answer::ImAppended(result) => result.map(|im| im.appended.offset),
            _ => Err(StoreError::Closed),
        };
        drop(
            self.0
                .send(DmSeen::Answered(tag, offset.map_err(|e| e.to_string()))),
        );
    }

    fn batch_done(&mut self) {
        drop(self.0.send(DmSeen::BatchDone));
    }
}

/// A stored DM entry reaches the sink through `dm_appended` with the pair
/// the writer checked and the message id its sender gave it, before its
/// answer; a refused first message hands the sink nothing, so a sink
/// learns a conversation's pair only once the store took an entry of it
/// (review findings 10 and 5).
#[test]
fn a_dm_entry_reaches_the_sink_with_its_pair_and_its_senders_id() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, seen) = mpsc::channel();
    let store = Store::open_with_sink(config(dir.path()), DmRecorder(tx)).unwrap();
    // What the sink is handed, batch ends left out.
    let next = || loop {
        let seen = seen
            .recv_timeout(Duration::from_secs(10))
            .expect("the sink is handed the batch");
        if seen != DmSeen::BatchDone {
            return seen;
        }
    };
    crate::util::block_on(store.block("carol", "alice", true).unwrap())
        .unwrap()
        .unwrap();
    // Refused (carol blocked alice): no entry, only the answer.
    store
        .submit_im_append(crate::im::im_request("alice", "carol", "no", 0), 1)
        .unwrap();
    match next() {
        DmSeen::Answered(1, result) => assert!(result.is_err(), "{result:?}"),
        other => panic!("a refused message reached the sink: {other:?}"),
    }
    let mut request = crate::im::im_request("bob", "alice", "hi", 0);
    let given_id = ringcast_protocol::envelope::MessageId::from_parts(5, 1, 3, 7).0;
    let mut envelope = request.push.envelope().to_envelope();
    envelope.id = given_id;
    request.push = ringcast_protocol::envelope::EncodedPush::encode(&envelope);
    store.submit_im_append(request, 2).unwrap();
    let conv = crate::im::conv_name("alice", "bob");
    assert_eq!(
        next(),
        DmSeen::Dm {
            stream: conv,
            pair: ("alice".to_owned(), "bob".to_owned()),
            id: given_id,
        }
    );
    assert_eq!(next(), DmSeen::Answered(2, Ok(1)));
    store.close().unwrap();
}
