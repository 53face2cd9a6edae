//! The webhook events the engine writes to the store's outbox: a client
//! `publish`/`send` that is stored (message), every inbox append
//! (undelivered), a user's first and last connection (online, offline).
//! Read back from the engine's own store; no sender involved (its retries
//! are pushed out of the tests' way: an unreachable URL, a long backoff,
//! and undelivered checks due in an hour).

use std::time::Duration;

use ringcast_engine::config::{Config, Driver, Secret};
use ringcast_engine::Engine;
use ringcast_store::{OutboxKind, OutboxRecord};
use serde_json::{json, Value};

use crate::e2e;
use crate::util::*;

const UNDELIVERED_AFTER: Duration = Duration::from_secs(3600);

fn webhook_config(driver: Driver, shards: u16) -> Config {
    let mut config = config(driver, shards);
    config.webhook.url = format!("http://127.0.0.1:{}/hooks", free_port());
    config.webhook.secret = Some(Secret::new(
        "webhook-secret-0123456789abcdef0123".to_owned(),
    ));
    config.webhook.attempts_max = 1000;
    config.webhook.backoff_min = Duration::from_secs(3600);
    config.webhook.backoff_max = Duration::from_secs(3600);
    config.webhook.undelivered_after = UNDELIVERED_AFTER;
    config
}

/// Everything in the engine's outbox, oldest first.
fn outbox(engine: &Engine) -> Vec<OutboxRecord> {
    outbox_of(&engine.shared.store)
}

/// Records read per page: below the store's `read_entries_max`, which caps
/// one read.
const OUTBOX_PAGE: usize = 1000;

/// Everything in a store's outbox, oldest first, page after page.
fn outbox_of(store: &ringcast_store::Store) -> Vec<OutboxRecord> {
    let mut records: Vec<OutboxRecord> = Vec::new();
    loop {
        let after = records.last().map_or(0, |record| record.seq);
        let mut receiver = store
            .outbox_read(after, OUTBOX_PAGE)
            .expect("outbox read queued");
        let mut answer = None;
        assert!(wait_until(Duration::from_secs(10), || {
            if let Ok(Some(result)) = receiver.try_recv() {
                answer = Some(result.expect("outbox read"));
            }
            answer.is_some()
        }));
        let page = answer.unwrap_or_default();
        let full = page.len() >= OUTBOX_PAGE;
        records.extend(
            page.into_iter()
                .map(|item| item.expect("a readable record")),
        );
        if !full {
            return records;
        }
    }
}

fn body(record: &OutboxRecord) -> Value {
    serde_json::from_slice(&record.body).expect("JSON body")
}

/// The records of `kind`, as (key, body).
fn of_kind(records: &[OutboxRecord], kind: OutboxKind) -> Vec<(String, Value)> {
    records
        .iter()
        .filter(|record| record.kind == kind)
        .map(|record| (record.key.clone(), body(record)))
        .collect()
}

fn now_ms() -> u64 {
    now_s() * 1000
}

e2e!(
    client_messages_write_message_and_undelivered_events,
    |driver| {
        let engine = start(webhook_config(driver, 2));
        let (mut alice, connect) = connect(&engine, "alice");
        let client = connect["connect"]["client"]
            .as_str()
            .expect("client id")
            .to_owned();
        subscribe(&mut alice, 1, "chat:lobby");
        let reply = command(
            &mut alice,
            json!({"id": 2, "method": "publish", "params": {"channel": "chat:lobby", "data": {"n": 1}}}),
        );
        assert!(reply.get("result").is_some(), "{reply}");
        let sent_at_ms = now_ms();
        let reply = command(
            &mut alice,
            json!({"id": 3, "method": "send", "params": {"user": "bob", "data": {"n": 2}}}),
        );
        assert!(reply.get("result").is_some(), "{reply}");
        // Live only: a namespace without history stores nothing, so no event.
        let reply = command(
            &mut alice,
            json!({"id": 4, "method": "publish", "params": {"channel": "room:x", "data": 3}}),
        );
        assert!(reply.get("result").is_some(), "{reply}");
        // The API: its sends are undelivered checks, never messages.
        let (status, answer) = api(
            &engine,
            "POST",
            "/api/send",
            Some(json!({"user": "carol", "data": {"n": 4}})),
        );
        assert_eq!(status, 200, "{answer}");
        publish(&engine, "chat:lobby", json!({"n": 5}));

        let records = outbox(&engine);
        let messages = of_kind(&records, OutboxKind::Message);
        assert_eq!(
            messages,
            vec![
                (
                    "alice".to_owned(),
                    json!({"client": client, "command": "publish"})
                ),
                (
                    "alice".to_owned(),
                    json!({"client": client, "command": "send"})
                ),
            ],
            "{records:?}"
        );
        let undelivered = of_kind(&records, OutboxKind::Undelivered);
        assert_eq!(
            undelivered,
            vec![
                ("bob".to_owned(), json!({"source": "client"})),
                ("carol".to_owned(), json!({"source": "api"})),
            ]
        );
        // Each event carries the stored entry it is about.
        let entry_of = |kind: OutboxKind, key: &str| {
            let record = records
                .iter()
                .find(|record| record.kind == kind && record.key == key)
                .expect("record");
            let entry = record.entry.as_ref().expect("entry rides along").envelope();
            (
                entry.channel.as_str().to_owned(),
                entry.offset.to_native(),
                String::from_utf8(entry.data.to_vec()).unwrap(),
            )
        };
        assert_eq!(
            entry_of(OutboxKind::Message, "alice"),
            ("chat:lobby".to_owned(), 1, r#"{"n":1}"#.to_owned())
        );
        assert_eq!(
            entry_of(OutboxKind::Undelivered, "bob"),
            ("user:bob".to_owned(), 1, r#"{"n":2}"#.to_owned())
        );
        let bob_check = records
            .iter()
            .find(|record| record.kind == OutboxKind::Undelivered && record.key == "bob")
            .expect("bob's check");
        let after_ms = UNDELIVERED_AFTER.as_millis() as u64;
        assert!(
            bob_check.due_ms >= sent_at_ms.saturating_sub(1000) + after_ms
                && bob_check.due_ms <= now_ms() + 1000 + after_ms,
            "due {} for a send at {sent_at_ms}",
            bob_check.due_ms
        );
        engine.shutdown();
    }
);

e2e!(
    first_and_last_connection_write_online_and_offline,
    |driver| {
        let engine = start(webhook_config(driver, 2));
        let presence = |engine: &Engine| -> Vec<(OutboxKind, String, Value)> {
            outbox(engine)
                .iter()
                .filter(|record| matches!(record.kind, OutboxKind::Online | OutboxKind::Offline))
                .map(|record| (record.kind, record.key.clone(), body(record)))
                .collect()
        };
        // Four connections of one user: with two shards, both usually get some.
        let mut dave: Vec<Ws> = (0..4).map(|_| connect(&engine, "dave").0).collect();
        assert!(wait_until(Duration::from_secs(5), || presence(&engine)
            .len()
            == 1));
        let events = presence(&engine);
        assert_eq!(
            (events[0].0, events[0].1.as_str()),
            (OutboxKind::Online, "dave")
        );
        assert!(
            events[0].2["presence_seq"].as_u64().is_some(),
            "{:?}",
            events[0].2
        );
        assert_eq!(events[0].2["node"], json!(0));

        // All but the last close: still online, no event.
        for mut ws in dave.drain(1..) {
            ws.close(None).unwrap();
            let _ = read_close_code(&mut ws);
        }
        // The last one closes: offline.
        let mut last = dave.pop().expect("one left");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            presence(&engine).len(),
            1,
            "offline before the last connection went"
        );
        last.close(None).unwrap();
        let _ = read_close_code(&mut last);
        assert!(wait_until(Duration::from_secs(5), || presence(&engine)
            .len()
            == 2));
        let events = presence(&engine);
        assert_eq!(
            (events[1].0, events[1].1.as_str()),
            (OutboxKind::Offline, "dave")
        );
        assert_eq!(events[1].2["reason"], json!("disconnect"));
        let seq = |event: &(OutboxKind, String, Value)| event.2["presence_seq"].as_u64().unwrap();
        assert!(seq(&events[1]) > seq(&events[0]));

        // Back again: online once more.
        let (_again, _) = connect(&engine, "dave");
        assert!(wait_until(Duration::from_secs(5), || presence(&engine)
            .len()
            == 3));
        assert_eq!(presence(&engine)[2].0, OutboxKind::Online);
        engine.shutdown();
    }
);

#[test]
fn no_events_while_webhooks_are_off() {
    let engine = start(config(Driver::Auto, 2));
    let (mut erin, _) = connect(&engine, "erin");
    let reply = command(
        &mut erin,
        json!({"id": 1, "method": "send", "params": {"user": "frank", "data": 1}}),
    );
    assert!(reply.get("result").is_some(), "{reply}");
    erin.close(None).unwrap();
    let _ = read_close_code(&mut erin);
    std::thread::sleep(Duration::from_millis(200));
    assert!(outbox(&engine).is_empty());
    assert_eq!(engine.shared.store.health().outbox_len, 0);
    engine.shutdown();
}

/// Only the events `webhook.events` names are written.
#[test]
fn only_the_listed_events_are_written() {
    let mut config = webhook_config(Driver::Auto, 2);
    config.webhook.events = ringcast_engine::config::WebhookEvents::NONE
        .with(ringcast_engine::config::WebhookEvent::Offline);
    let engine = start(config);
    let (mut gina, _) = connect(&engine, "gina");
    let reply = command(
        &mut gina,
        json!({"id": 1, "method": "send", "params": {"user": "hank", "data": 1}}),
    );
    assert!(reply.get("result").is_some(), "{reply}");
    gina.close(None).unwrap();
    let _ = read_close_code(&mut gina);
    assert!(wait_until(Duration::from_secs(5), || !outbox(&engine).is_empty()));
    let records = outbox(&engine);
    let kinds: Vec<(OutboxKind, &str)> = records
        .iter()
        .map(|record| (record.kind, record.key.as_str()))
        .collect();
    assert_eq!(kinds, vec![(OutboxKind::Offline, "gina")]);
    engine.shutdown();
}

/// The client's side of the kill test: sends DMs to `x` one at a time and
/// reports each acknowledged offset, until the engine is gone.
fn send_until_killed(mut ws: Ws, acks: std::sync::mpsc::Sender<u64>) {
    for n in 0u64.. {
        let sent = ws.send(tungstenite::Message::Text(
            json!({"id": n + 1, "method": "send", "params": {"user": "x", "data": {"n": n}}})
                .to_string(),
        ));
        if sent.is_err() {
            return;
        }
        let reply = loop {
            match ws.read() {
                Ok(tungstenite::Message::Text(text)) => {
                    let value: Value = serde_json::from_str(&text).expect("JSON reply");
                    if value.get("push").is_none() {
                        break value;
                    }
                }
                Ok(_) => {}
                // The read timeout (50 ms): keep waiting for the reply.
                Err(tungstenite::Error::Io(error))
                    if error.kind() == std::io::ErrorKind::WouldBlock =>
                {
                    continue
                }
                Err(_) => return,
            }
        };
        let Some(offset) = reply["result"]["offset"].as_u64() else {
            return;
        };
        if acks.send(offset).is_err() {
            return;
        }
    }
}

/// kill -9 of the engine while a client sends: every acknowledged send's
/// events (its message, the recipient's undelivered check) are in the
/// outbox after the restart, with the entry the acknowledgement named, and
/// the sender, online when the process died, gets an Offline at reopen.
#[test]
fn kill_9_loses_no_event_of_an_acknowledged_send() {
    use crate::crash::{crash_seed, dm_connect, start_node_with, xorshift};
    let mut random = crash_seed("outbox kill");
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let extra = format!(
        "[webhook]\nurl = \"http://127.0.0.1:{}/hooks\"\n\
         secret = \"webhook-secret-0123456789abcdef0123\"\nattempts_max = 1000\n\
         backoff_min_ms = 3600000\nbackoff_max_ms = 3600000\nundelivered_after_ms = 3600000\n",
        free_port()
    );
    let mut node = start_node_with(&data_dir, &dir.path().join("ringcast.toml"), &extra);
    let ws = dm_connect(node.ws, "w").expect("connect");
    let (acks_tx, acks) = std::sync::mpsc::channel();
    let client = std::thread::spawn(move || send_until_killed(ws, acks_tx));
    let first = acks
        .recv_timeout(Duration::from_secs(10))
        .expect("a first acknowledged send");
    std::thread::sleep(Duration::from_millis(50 + xorshift(&mut random) % 400));
    node.child.kill().unwrap(); // SIGKILL
    node.child.wait().unwrap();
    client.join().unwrap();
    let mut acked = vec![first];
    acked.extend(acks.try_iter());
    drop(node);

    let store = ringcast_store::Store::open(ringcast_store::StoreConfig::new(&data_dir))
        .expect("store reopens");
    let records = outbox_of(&store);
    let offsets_of = |kind: OutboxKind, key: &str| -> std::collections::HashSet<u64> {
        records
            .iter()
            .filter(|record| record.kind == kind && record.key == key)
            .map(|record| {
                let entry = record.entry.as_ref().expect("entry").envelope();
                assert_eq!(entry.channel.as_str(), "user:x");
                entry.offset.to_native()
            })
            .collect()
    };
    let messages = offsets_of(OutboxKind::Message, "w");
    let checks = offsets_of(OutboxKind::Undelivered, "x");
    for offset in &acked {
        assert!(
            messages.contains(offset),
            "message event of acknowledged offset {offset} lost"
        );
        assert!(
            checks.contains(offset),
            "undelivered check of acknowledged offset {offset} lost"
        );
    }
    let presence: Vec<(OutboxKind, String)> = records
        .iter()
        .filter(|record| record.key == "w" && record.kind != OutboxKind::Message)
        .map(|record| {
            (
                record.kind,
                String::from_utf8_lossy(&record.body).into_owned(),
            )
        })
        .collect();
    assert_eq!(presence.len(), 2, "{presence:?}");
    assert_eq!(presence[0].0, OutboxKind::Online);
    assert_eq!(
        presence[1],
        (OutboxKind::Offline, r#"{"reason":"restart"}"#.to_owned())
    );
    eprintln!(
        "outbox kill: {} sends acknowledged, {} message events stored",
        acked.len(),
        messages.len()
    );
    store.close().unwrap();
}
