//! Durable streams: offsets and epochs, recovery after reconnect with no gap
//! and no duplicate, device cursors, history, idempotent publish.

use std::time::Duration;

use crate::e2e;
use crate::util::*;
use serde_json::{json, Value};

fn send_api(engine: &ringcast_engine::Engine, user: &str, n: u64) -> Value {
    let (status, body) = api(
        engine,
        "POST",
        "/api/send",
        Some(json!({"user": user, "data": {"n": n}})),
    );
    assert_eq!(status, 200, "{body}");
    body["results"][0].clone()
}

/// Sends `msg` and returns its reply plus every push that arrived before
/// it, as (offset, n). Replayed messages come before a subscribe's reply.
fn command_collecting(ws: &mut Ws, msg: Value) -> (Value, Vec<(u64, u64)>) {
    let id = msg["id"].clone();
    send_json(ws, msg);
    let mut pushes = Vec::new();
    loop {
        let message = read_json(ws);
        match message.get("push") {
            Some(push) => pushes.push((
                push["offset"].as_u64().expect("offset"),
                push["data"]["n"].as_u64().expect("n"),
            )),
            None => {
                assert_eq!(message["id"], id, "{message}");
                return (message, pushes);
            }
        }
    }
}

fn subscribe_since(
    ws: &mut Ws,
    id: u64,
    channel: &str,
    since: Option<(u64, &str)>,
) -> (Value, Vec<(u64, u64)>) {
    let mut params = json!({"channel": channel});
    if let Some((offset, epoch)) = since {
        params["since"] = json!({"offset": offset, "epoch": epoch});
    }
    let (reply, pushes) = command_collecting(
        ws,
        json!({"id": id, "method": "subscribe", "params": params}),
    );
    assert!(reply.get("result").is_some(), "{reply}");
    (reply["result"]["recovery"].clone(), pushes)
}

/// After a connect with an inbox position: the replayed pushes, then the
/// id-0 reply with the recovery summary.
fn connect_recovery(ws: &mut Ws) -> (Value, Vec<(u64, u64)>) {
    let mut pushes = Vec::new();
    loop {
        let message = read_json(ws);
        match message.get("push") {
            Some(push) => pushes.push((
                push["offset"].as_u64().unwrap(),
                push["data"]["n"].as_u64().unwrap(),
            )),
            None => {
                assert_eq!(message["id"], 0, "{message}");
                return (message["result"]["recovery"].clone(), pushes);
            }
        }
    }
}

/// Reads pushes until `count` arrived; returns their (offset, n).
fn read_pushes(ws: &mut Ws, count: usize) -> Vec<(u64, u64)> {
    (0..count)
        .map(|_| {
            let push = read_json(ws);
            let push = &push["push"];
            (
                push["offset"].as_u64().expect("offset"),
                push["data"]["n"].as_u64().expect("n"),
            )
        })
        .collect()
}

e2e!(
    durable_publishes_return_contiguous_offsets_and_one_epoch,
    |driver| {
        let engine = start(config(driver, 2));
        let first = send_api(&engine, "ivy", 1);
        let second = send_api(&engine, "ivy", 2);
        assert_eq!(first["offset"], 1);
        assert_eq!(second["offset"], 2);
        assert_eq!(first["epoch"], second["epoch"]);
        assert_ne!(first["epoch"], "0");
        // A client publish to a channel with history (chat, sync) too.
        let (mut ws, _) = connect(&engine, "ivy");
        subscribe_since(&mut ws, 1, "chat:room", None);
        let (reply, pushes) = command_collecting(
            &mut ws,
            json!({"id": 2, "method": "publish", "params": {"channel": "chat:room", "data": {"n": 7}}}),
        );
        assert_eq!(reply["result"]["offset"], 1, "{reply}");
        // The subscribers got it once it was durable, before the sender's ack.
        let push = match pushes.first() {
            Some(push) => *push,
            None => read_pushes(&mut ws, 1)[0],
        };
        assert_eq!(push, (1, 7));
        engine.shutdown();
    }
);

e2e!(
    reconnect_replays_missed_messages_then_continues_live,
    |driver| {
        let engine = start(config(driver, 2));
        let (mut ws, _) = connect(&engine, "max");
        let first = send_api(&engine, "max", 0);
        let epoch = first["epoch"].as_str().unwrap().to_string();
        assert_eq!(read_pushes(&mut ws, 1), [(1, 0)]);
        drop(ws);
        for n in 1..50 {
            send_api(&engine, "max", n);
        }
        // Reconnect with the inbox position: replay, then the summary, then live.
        let mut ws = connect_query(&engine, "max", &format!("since=1&epoch={epoch}"));
        let (recovery, got) = connect_recovery(&mut ws);
        assert_eq!(recovery["recovered"], true, "{recovery}");
        assert_eq!(recovery["replayed"], 49);
        assert_eq!(recovery["offset"], 50);
        assert_eq!(
            got,
            (2..=50).zip(1..50).collect::<Vec<_>>(),
            "every missed message, in order"
        );
        send_api(&engine, "max", 50);
        assert_eq!(
            read_pushes(&mut ws, 1),
            [(51, 50)],
            "live continues with no duplicate"
        );
        engine.shutdown();
    }
);

e2e!(
    replay_to_live_switch_has_no_gap_or_duplicate_under_load,
    |driver| {
        let engine = start(config(driver, 2));
        let api_addr = engine.api_addr;
        send_api(&engine, "zed", 0);
        // Publish continuously while the client reconnects and recovers.
        let publisher = std::thread::spawn(move || {
            for n in 1..300u64 {
                let body = json!({"user": "zed", "data": {"n": n}}).to_string();
                let (status, _) =
                    api_raw(api_addr, "POST", "/api/send", Some(&body), Some(API_KEY));
                assert_eq!(status, 200);
            }
        });
        std::thread::sleep(Duration::from_millis(30));
        let mut ws = connect_query(&engine, "zed", "since=0");
        let (recovery, mut got) = connect_recovery(&mut ws);
        assert_eq!(recovery["recovered"], true, "{recovery}");
        publisher.join().unwrap();
        // Offsets 1..=300 exactly once and in order, across replay and live.
        let rest = 300 - got.len();
        got.extend(read_pushes(&mut ws, rest));
        let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, (1..=300).collect::<Vec<_>>());
        assert!(got.iter().all(|(o, n)| *o == n + 1));
        engine.shutdown();
    }
);

e2e!(
    device_cursor_from_acks_resumes_after_the_last_ack,
    |driver| {
        let engine = start(config(driver, 2));
        let mut ws = connect_query(&engine, "kim", "device=phone");
        // No cursor stored yet: the summary only says where the inbox is.
        let (recovery, replayed) = connect_recovery(&mut ws);
        assert_eq!(
            (recovery["replayed"].as_u64(), replayed.len()),
            (Some(0), 0),
            "{recovery}"
        );
        for n in 0..5 {
            send_api(&engine, "kim", n);
        }
        assert_eq!(read_pushes(&mut ws, 5).last(), Some(&(5, 4)));
        let reply = command(
            &mut ws,
            json!({"id": 1, "method": "ack", "params": {"stream": "user:kim", "offset": 3}}),
        );
        assert!(reply.get("result").is_some(), "{reply}");
        drop(ws);
        send_api(&engine, "kim", 5);
        // No `since`: the stored cursor for (kim, phone) says offset 3.
        let mut ws = connect_query(&engine, "kim", "device=phone");
        let (recovery, got) = connect_recovery(&mut ws);
        assert_eq!(recovery["replayed"], 3, "{recovery}");
        assert_eq!(got, [(4, 3), (5, 4), (6, 5)]);
        engine.shutdown();
    }
);

e2e!(
    device_start_oldest_replays_the_inbox_to_a_new_device_once_acked,
    |driver| {
        let engine = start(config(driver, 2));
        for n in 0..5 {
            send_api(&engine, "mo", n);
        }
        // The default (and `live`): a device's first connection starts live.
        for query in ["device=phone", "device=phone&device_start=live"] {
            let mut ws = connect_query(&engine, "mo", query);
            let (recovery, replayed) = connect_recovery(&mut ws);
            assert_eq!(replayed, [], "{query}");
            assert_eq!(recovery["offset"], 5, "{recovery}");
        }
        // `oldest`: a device with no cursor gets the inbox's retained
        // history, in order, then goes live.
        let mut ws = connect_query(&engine, "mo", "device=tablet&device_start=oldest");
        let (recovery, replayed) = connect_recovery(&mut ws);
        assert_eq!(replayed, [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4)]);
        assert_eq!(
            (
                &recovery["recovered"],
                &recovery["replayed"],
                &recovery["start_offset"]
            ),
            (&json!(true), &json!(5), &json!(1)),
            "{recovery}"
        );
        send_api(&engine, "mo", 5);
        assert_eq!(read_pushes(&mut ws, 1), [(6, 5)]);
        let reply = command(
            &mut ws,
            json!({"id": 1, "method": "ack", "params": {"stream": "user:mo", "offset": 4}}),
        );
        assert!(reply.get("result").is_some(), "{reply}");
        drop(ws);
        // Once the device has a cursor, the cursor decides, not the option.
        let mut ws = connect_query(&engine, "mo", "device=tablet&device_start=oldest");
        let (recovery, replayed) = connect_recovery(&mut ws);
        assert_eq!(replayed, [(5, 4), (6, 5)], "{recovery}");
        // `since` in the URL wins over both.
        let mut ws = connect_query(&engine, "mo", "device=pad&device_start=oldest&since=5");
        let (_, replayed) = connect_recovery(&mut ws);
        assert_eq!(replayed, [(6, 5)]);
        // A user whose inbox was never written: nothing, and no error.
        let mut ws = connect_query(&engine, "nia", "device=tablet&device_start=oldest");
        let (recovery, replayed) = connect_recovery(&mut ws);
        assert_eq!((replayed.len(), &recovery["recovered"]), (0, &json!(true)));
        // Any other value refuses the upgrade.
        let url = format!(
            "{}&device=x&device_start=first",
            ws_url(&engine, &token("mo"))
        );
        let stream = std::net::TcpStream::connect(engine.ws_addr).unwrap();
        match tungstenite::client(url, stream) {
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                assert_eq!(response.status(), 400);
                let body =
                    String::from_utf8_lossy(response.body().as_deref().unwrap_or(&[])).to_string();
                assert!(body.contains("invalid_device"), "{body}");
            }
            other => panic!("expected a 400, got {:?}", other.map(|_| ())),
        }
        engine.shutdown();
    }
);

// Also the drivers' test of a long replay: 10,000 entries (it took ~75 s
// on epoll until the shard loop took frames queued by a flush for work).
e2e!(
    device_start_oldest_after_retention_trimmed_the_inbox,
    |driver| {
        use ringcast_engine::streams::INBOX_RETENTION_COUNT;
        let engine = start(config(driver, 2));
        let extra = 10;
        let total = INBOX_RETENTION_COUNT + extra;
        // Pipelined sends from one client, then their replies.
        let (mut sender, _) = connect(&engine, "sam");
        for n in 0..total {
            send_json(
                &mut sender,
                json!({"id": n + 1, "method": "send", "params": {"user": "ola", "data": {"n": n}}}),
            );
        }
        for _ in 0..total {
            let reply = read_json(&mut sender);
            assert!(reply.get("result").is_some(), "{reply}");
        }
        let start_offset = || {
            let (status, body) = api(
                &engine,
                "POST",
                "/api/history",
                Some(json!({"stream": "user:ola", "limit": 1})),
            );
            assert_eq!(status, 200, "{body}");
            body["start_offset"].as_u64().unwrap()
        };
        assert!(
            wait_until(Duration::from_secs(10), || start_offset() == extra + 1),
            "count retention trims the inbox to its newest {INBOX_RETENTION_COUNT}"
        );
        // Offset 0 is below the start: for a position that would be a gap
        // (recovered false, nothing replayed); a new device has no position,
        // so it gets every retained publication.
        let mut ws = connect_query(&engine, "ola", "device=new&device_start=oldest");
        let (recovery, replayed) = connect_recovery(&mut ws);
        assert_eq!(recovery["recovered"], true, "{recovery}");
        assert_eq!(recovery["start_offset"], extra + 1);
        assert_eq!(recovery["replayed"], INBOX_RETENTION_COUNT);
        let offsets: Vec<u64> = replayed.iter().map(|&(offset, _)| offset).collect();
        assert_eq!(offsets, (extra + 1..=total).collect::<Vec<_>>());
        // `since=0` still reports the trimmed start.
        let mut ws = connect_query(&engine, "ola", "since=0");
        let (recovery, replayed) = connect_recovery(&mut ws);
        assert_eq!((&recovery["recovered"], replayed.len()), (&json!(false), 0));
        engine.shutdown();
    }
);

e2e!(
    changed_epoch_or_trimmed_offset_is_never_a_silent_skip,
    |driver| {
        let engine = start(config(driver, 2)); // chat: retention_count = 16
        let (mut ws, _) = connect(&engine, "lea");
        subscribe_since(&mut ws, 1, "chat:busy", None);
        let mut epoch = String::new();
        for n in 0..40 {
            let reply = command(
                &mut ws,
                json!({"id": 10 + n, "method": "publish", "params": {"channel": "chat:busy", "data": {"n": n}}}),
            );
            epoch = reply["result"]["epoch"].as_str().unwrap().to_string();
        }
        drop(ws);
        let (mut ws, _) = connect(&engine, "lea");
        let (recovery, _) = subscribe_since(&mut ws, 1, "chat:busy", Some((1, &epoch)));
        assert_eq!(
            recovery["recovered"], false,
            "trimmed by retention: {recovery}"
        );
        assert!(recovery["start_offset"].as_u64().unwrap() > 2, "{recovery}");
        drop(ws);
        let (mut ws, _) = connect(&engine, "lea");
        let (recovery, _) = subscribe_since(&mut ws, 1, "chat:busy", Some((39, "12345")));
        assert_eq!(recovery["recovered"], false, "other epoch: {recovery}");
        assert_eq!(recovery["epoch"], epoch.as_str());
        engine.shutdown();
    }
);

e2e!(history_and_idempotent_publish, |driver| {
    let engine = start(config(driver, 2));
    let (mut ws, _) = connect(&engine, "ned");
    subscribe_since(&mut ws, 1, "chat:log", None);
    let publish = |ws: &mut Ws, id: u64, n: u64, key: &str| {
        command(
            ws,
            json!({"id": id, "method": "publish", "params": {"channel": "chat:log", "data": {"n": n}, "client_msg_id": key}}),
        )
    };
    let a = publish(&mut ws, 2, 1, "k-1");
    let again = publish(&mut ws, 3, 1, "k-1");
    assert_eq!(
        a["result"]["id"], again["result"]["id"],
        "retry answered with the original ids"
    );
    assert_eq!(a["result"]["offset"], again["result"]["offset"]);
    assert_eq!(again["result"]["duplicate"], true);
    publish(&mut ws, 4, 2, "k-2");
    let reply = command(
        &mut ws,
        json!({"id": 5, "method": "history", "params": {"stream": "chat:log", "limit": 10}}),
    );
    let publications = reply["result"]["publications"]
        .as_array()
        .expect("publications");
    let ns: Vec<u64> = publications
        .iter()
        .map(|p| p["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, [1, 2], "stored once: {reply}");
    let reply = command(
        &mut ws,
        json!({"id": 6, "method": "history", "params": {"stream": "chat:log", "limit": 1, "reverse": true}}),
    );
    assert_eq!(reply["result"]["publications"][0]["offset"], 2);
    let (status, body) = api(
        &engine,
        "POST",
        "/api/history",
        Some(json!({"stream": "chat:log", "since": 1})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["publications"].as_array().unwrap().len(), 1);
    let (status, _) = api(
        &engine,
        "POST",
        "/api/history",
        Some(json!({"stream": "news:x"})),
    );
    assert_eq!(status, 400, "news keeps no history");
    engine.shutdown();
});
