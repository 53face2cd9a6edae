//! Crash recovery with real processes: the `ringcast` binary is killed with
//! SIGKILL while a publisher is writing, restarted on the same data
//! directory, and every acknowledged message must be there exactly once,
//! in order, with contiguous offsets and the same epoch. A longer run:
//! `RINGCAST_CRASH_ROUNDS=50 cargo test -p ringcast-engine --test it crash`.

use ringcast_engine::streams::INBOX_RETENTION_COUNT;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{api_raw, free_port, API_KEY, SECRET};

struct Node {
    child: Child,
    api: SocketAddr,
}

fn start_node(data_dir: &std::path::Path, config_path: &std::path::Path) -> Node {
    let ws_port = free_port();
    let api_port = free_port();
    std::fs::write(
        config_path,
        format!(
            "version = 1\n[server]\nshards = 2\npin_cores = false\ndata_dir = {data_dir:?}\n\
             [websocket]\nlisten = \"127.0.0.1:{ws_port}\"\n[api]\nlisten = \"127.0.0.1:{api_port}\"\nkey = \"{API_KEY}\"\n\
             [auth]\njwt_secret = \"{SECRET}\"\n[log]\nlevel = \"warn\"\n"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .arg(format!("--config={}", config_path.display()))
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn ringcast");
    let api: SocketAddr = format!("127.0.0.1:{api_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(api).is_err() {
        assert!(Instant::now() < deadline, "engine did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Node { child, api }
}

/// A tiny deterministic PRNG so a failing seed can be replayed.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn send(api: SocketAddr, n: u64) -> Option<Value> {
    let body = json!({"user": "crash", "data": {"n": n}}).to_string();
    let result =
        std::panic::catch_unwind(|| api_raw(api, "POST", "/api/send", Some(&body), Some(API_KEY)));
    match result {
        Ok((200, value)) => Some(value["results"][0].clone()),
        _ => None,
    }
}

/// Every entry of the inbox, paging through the history API.
fn read_all(api: SocketAddr) -> (String, Vec<(u64, u64)>) {
    let mut since = 0u64;
    let mut entries = Vec::new();
    loop {
        let body = json!({"stream": "user:crash", "since": since, "limit": 1000}).to_string();
        let (status, page) = api_raw(api, "POST", "/api/history", Some(&body), Some(API_KEY));
        assert_eq!(status, 200, "{page}");
        let epoch = page["epoch"].as_str().unwrap_or_default().to_string();
        let publications = page["publications"].as_array().unwrap().clone();
        for p in &publications {
            let offset = p["offset"].as_u64().unwrap();
            entries.push((offset, p["data"]["n"].as_u64().unwrap()));
            since = offset;
        }
        if publications.len() < 1000 {
            return (epoch, entries);
        }
    }
}

#[test]
fn acknowledged_messages_survive_kill_9_exactly_once_in_order() {
    let rounds: u64 = std::env::var("RINGCAST_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("RINGCAST_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed: RINGCAST_CRASH_SEED={seed}");
    let mut rng = seed;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config_path = dir.path().join("ringcast.toml");
    let mut acked: Vec<(u64, u64)> = Vec::new();
    let mut next_n = 0u64;
    let mut epoch: Option<String> = None;
    for round in 0..rounds {
        let mut node = start_node(&data_dir, &config_path);
        let kill_after = Duration::from_millis(100 + xorshift(&mut rng) % 400);
        let started = Instant::now();
        while started.elapsed() < kill_after {
            let n = next_n;
            next_n += 1;
            if let Some(result) = send(node.api, n) {
                acked.push((result["offset"].as_u64().unwrap(), n));
                let this_epoch = result["epoch"].as_str().unwrap().to_string();
                assert_eq!(
                    epoch.get_or_insert(this_epoch.clone()),
                    &this_epoch,
                    "epoch changed in round {round} (seed {seed})"
                );
            }
        }
        // SIGKILL: no shutdown, no flush.
        node.child.kill().unwrap();
        node.child.wait().unwrap();
    }
    let mut node = start_node(&data_dir, &config_path);
    let (stored_epoch, stored) = read_all(node.api);
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    eprintln!(
        "crash test: {rounds} kills, {} acknowledged, {} stored (seed {seed})",
        acked.len(),
        stored.len()
    );
    assert!(!acked.is_empty(), "nothing was acknowledged (seed {seed})");
    assert_eq!(
        Some(&stored_epoch),
        epoch.as_ref(),
        "epoch survives restarts (seed {seed})"
    );
    // An inbox keeps its newest INBOX_RETENTION_COUNT entries: a long run
    // (many rounds at the engine's full speed) trims the oldest, which is
    // retention, not loss. What is stored must be the newest entries,
    // contiguous, and every acknowledged one among them.
    let first = stored.first().map_or(1, |(offset, _)| *offset);
    let last = stored.last().map_or(0, |(offset, _)| *offset);
    assert!(
        first == 1 || stored.len() as u64 == INBOX_RETENTION_COUNT,
        "entries {first}..={last} missing below the retention count (seed {seed})"
    );
    let offsets: Vec<u64> = stored.iter().map(|(o, _)| *o).collect();
    let contiguous = offsets.windows(2).all(|pair| pair[1] == pair[0] + 1);
    assert!(contiguous, "contiguous offsets from {first} (seed {seed})");
    let mut ns: Vec<u64> = stored.iter().map(|(_, n)| *n).collect();
    ns.dedup();
    assert_eq!(
        ns.len(),
        stored.len(),
        "no message stored twice (seed {seed})"
    );
    let mut trimmed = 0;
    for (offset, n) in &acked {
        if *offset < first {
            trimmed += 1;
            continue;
        }
        assert_eq!(
            stored.get((*offset - first) as usize),
            Some(&(*offset, *n)),
            "acknowledged message lost (seed {seed})"
        );
    }
    assert!(
        acked.last().is_none_or(|(offset, _)| *offset <= last),
        "the newest acknowledged message is stored (seed {seed})"
    );
    eprintln!("crash test: {trimmed} acknowledged entries older than the retention count");
}

#[test]
fn client_disconnecting_at_random_points_ends_with_the_full_stream() {
    use crate::util::*;
    let engine = start(config(ringcast_engine::config::Driver::Auto, 2));
    const TOTAL: u64 = 1500;
    let mut epoch = String::new();
    for n in 0..TOTAL {
        let (status, body) = api(
            &engine,
            "POST",
            "/api/send",
            Some(json!({"user": "flaky", "data": {"n": n}})),
        );
        assert_eq!(status, 200);
        epoch = body["results"][0]["epoch"].as_str().unwrap().to_string();
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("disconnect test seed {seed}");
    let mut rng = seed;
    let mut processed: Vec<u64> = Vec::new();
    let mut sessions = 0;
    while (processed.len() as u64) < TOTAL {
        sessions += 1;
        assert!(sessions < 500, "no progress (seed {seed})");
        let last = processed.last().copied().unwrap_or(0);
        // Connect-time recovery of the inbox from the last processed offset.
        let mut ws = connect_query(&engine, "flaky", &format!("since={last}&epoch={epoch}"));
        // Read a random number of messages (the reply may come before or
        // after them), maybe ack, then vanish without a close.
        let take = xorshift(&mut rng) % 200;
        let mut taken = 0;
        while taken < take && (processed.len() as u64) < TOTAL {
            let message = read_json(&mut ws);
            if let Some(push) = message.get("push") {
                let offset = push["offset"].as_u64().unwrap();
                assert_eq!(
                    offset,
                    processed.len() as u64 + 1,
                    "gap or duplicate at {offset} (seed {seed})"
                );
                assert_eq!(push["data"]["n"].as_u64().unwrap(), offset - 1);
                processed.push(offset);
                taken += 1;
            } else {
                assert_eq!(
                    message["result"]["recovery"]["recovered"], true,
                    "{message} (seed {seed})"
                );
            }
        }
        if xorshift(&mut rng).is_multiple_of(2) {
            if let Some(offset) = processed.last() {
                send_json(
                    &mut ws,
                    json!({"id": 2, "method": "ack", "params": {"stream": "user:flaky", "offset": offset}}),
                );
            }
        }
        drop(ws);
    }
    assert_eq!(processed, (1..=TOTAL).collect::<Vec<_>>());
    engine.shutdown();
}
