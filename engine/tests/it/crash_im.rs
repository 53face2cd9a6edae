//! Crash recovery of IM direct conversations with the real binary
//! (`docs/im.md`, "How it will be held"): pairs of users send each other
//! `msg_send`s (several in flight) and `read`s while the engine is killed
//! with SIGKILL; after the last restart every acknowledged message is in its
//! conversation at the offset its reply gave, offsets gap-free from 1, no
//! message twice, and each user's unread count per conversation (and in
//! total) equals the one recomputed from the stream and the user's read
//! position, which is at least every read that was acknowledged.
//! `ci/crash-stress.sh` runs it with many rounds.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::Message;

use crate::crash::{
    dm_connect, kill_under_load, next_text, start_node_with, write_text, xorshift, Run,
};
use crate::util::Ws;

/// Pairs of users writing to each other, each user on one connection.
const IM_PAIRS: usize = 6;
/// Unanswered commands one connection keeps in flight.
const IM_IN_FLIGHT_MAX: usize = 8;
/// One `read` of the newest pushed offset after this many sends.
const IM_SENDS_PER_READ: u64 = 7;
const IM_CONFIG: &str = "[im]\nenabled = true\n";

fn im_user(idx: usize) -> String {
    format!("im-{idx}")
}

/// What one client saw in one round.
#[derive(Default)]
struct ImLog {
    /// `data.n` of every `msg_send` written, answered or not.
    issued: Vec<u64>,
    /// (offset, n) of every `msg_send` answered with a result.
    acked: Vec<(u64, u64)>,
    /// The conversation, once a reply or a push named it.
    conv: Option<String>,
    /// The highest read position acknowledged.
    read_acked: u64,
    early_end: Option<String>,
}

enum Waiting {
    Send(u64),
    Read,
}

fn im_client(
    ws_addr: SocketAddr,
    user: String,
    peer: String,
    next_n: &AtomicU64,
    stop: &AtomicBool,
    ready: mpsc::Sender<()>,
    seed: u64,
) -> ImLog {
    let mut log = ImLog::default();
    let mut ws = match dm_connect(ws_addr, &user) {
        Ok(ws) => ws,
        Err(_) if stop.load(Ordering::SeqCst) => return log,
        Err(err) => panic!("{user} could not connect: {err} (seed {seed})"),
    };
    let _ = ready.send(());
    let mut in_flight: HashMap<u64, Waiting> = HashMap::new();
    let (mut next_id, mut peer_offset, mut sends) = (1u64, 0u64, 0u64);
    loop {
        while in_flight.len() < IM_IN_FLIGHT_MAX && !stop.load(Ordering::SeqCst) {
            let id = next_id;
            next_id += 1;
            let command = match &log.conv {
                Some(conv)
                    if sends % IM_SENDS_PER_READ == IM_SENDS_PER_READ - 1 && peer_offset > 0 =>
                {
                    in_flight.insert(id, Waiting::Read);
                    json!({"id": id, "method": "read", "params": {"conv": conv, "offset": peer_offset}})
                }
                _ => {
                    let n = next_n.fetch_add(1, Ordering::Relaxed);
                    log.issued.push(n);
                    in_flight.insert(id, Waiting::Send(n));
                    json!({"id": id, "method": "msg_send", "params": {"to": peer, "kind": "custom",
                        "data": {"n": n}, "client_msg_id": format!("n{n}")}})
                }
            };
            sends += 1;
            if !write_text(&mut ws, &command, stop, &mut log.early_end) {
                return log;
            }
        }
        let Some(text) = next_text(&mut ws, stop, &mut log.early_end) else {
            return log;
        };
        let message: Value = serde_json::from_str(&text).unwrap();
        if let Some(push) = message.get("push") {
            if push["sender"] == peer.as_str() {
                peer_offset = peer_offset.max(push["offset"].as_u64().unwrap());
                log.conv = push["channel"].as_str().map(str::to_owned);
            }
            continue;
        }
        if ["im_sync", "read", "receipt"]
            .iter()
            .any(|event| message.get(*event).is_some())
        {
            continue;
        }
        let id = message["id"].as_u64().unwrap_or(0);
        let waiting = in_flight
            .remove(&id)
            .unwrap_or_else(|| panic!("{user}: reply to nothing: {message} (seed {seed})"));
        let Some(result) = message.get("result") else {
            assert!(message.get("error").is_some(), "{message} (seed {seed})");
            continue;
        };
        match waiting {
            Waiting::Send(n) => {
                log.acked.push((result["offset"].as_u64().unwrap(), n));
                log.conv = result["conv"].as_str().map(str::to_owned);
            }
            Waiting::Read => {
                log.read_acked = log.read_acked.max(result["offset"].as_u64().unwrap());
            }
        }
    }
}

/// A command on a connection made after the restart, skipping what the
/// server sends unasked.
fn ask(ws: &mut Ws, command: Value) -> Value {
    ws.send(Message::Text(command.to_string())).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                let message: Value = serde_json::from_str(&text).unwrap();
                if message["id"] == command["id"] {
                    return message;
                }
            }
            Ok(_) => continue,
            Err(tungstenite::Error::Io(err))
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(err) => panic!("reading a reply: {err}"),
        }
    }
}

/// Every entry of `conv` as (offset, n, sender), read as `user` through
/// `history` (after a restart: its membership is looked up in its list).
fn read_conv(ws: &mut Ws, conv: &str) -> Vec<(u64, u64, String)> {
    let (mut since, mut entries) = (0u64, Vec::new());
    for id in 1.. {
        let page = ask(
            ws,
            json!({"id": id, "method": "history", "params": {"stream": conv, "since": since, "limit": 1000}}),
        );
        let publications = page["result"]["publications"]
            .as_array()
            .unwrap_or_else(|| panic!("history of {conv}: {page}"))
            .clone();
        for p in &publications {
            since = p["offset"].as_u64().unwrap();
            entries.push((
                since,
                p["data"]["data"]["n"].as_u64().unwrap(),
                p["sender"].as_str().unwrap().to_owned(),
            ));
        }
        if publications.len() < 1000 {
            break;
        }
    }
    entries
}

#[test]
fn acknowledged_im_messages_survive_kill_9_with_exact_unread_counts() {
    let mut run = Run::new("IM crash test");
    let (rounds, seed) = (run.rounds, run.seed);
    let (data_dir, config_path) = (run.data_dir.clone(), run.config_path.clone());
    let next_n = Arc::new(AtomicU64::new(0));
    let mut logs: BTreeMap<String, ImLog> = BTreeMap::new();
    for round in 0..rounds {
        let kill_after = Duration::from_millis(100 + xorshift(&mut run.rng) % 400);
        let mut node = start_node_with(&data_dir, &config_path, IM_CONFIG);
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let clients: Vec<_> = (0..2 * IM_PAIRS)
            .map(|idx| {
                let (user, peer) = (im_user(idx), im_user(idx ^ 1));
                let (ws_addr, next_n, stop, ready) =
                    (node.ws, next_n.clone(), stop.clone(), ready_tx.clone());
                std::thread::spawn(move || {
                    let log = im_client(ws_addr, user.clone(), peer, &next_n, &stop, ready, seed);
                    (user, log)
                })
            })
            .collect();
        drop(ready_tx);
        let connected = kill_under_load(&mut node, clients.len(), &ready_rx, &stop, kill_after);
        for client in clients {
            let (user, log) = client
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            assert!(
                log.early_end.is_none(),
                "{user}'s connection ended before the kill in round {round}: {:?} (seed {seed})",
                log.early_end
            );
            let total = logs.entry(user).or_default();
            total.issued.extend(log.issued);
            total.acked.extend(log.acked);
            total.read_acked = total.read_acked.max(log.read_acked);
            if log.conv.is_some() {
                total.conv = log.conv;
            }
        }
        assert!(
            connected,
            "a client did not connect in round {round} (seed {seed})"
        );
    }
    let node = start_node_with(&data_dir, &config_path, IM_CONFIG);
    let (mut acked_total, mut stored_total, mut unread_total) = (0, 0, 0);
    for pair in 0..IM_PAIRS {
        let (a, b) = (im_user(2 * pair), im_user(2 * pair + 1));
        let Some(conv) = logs[&a].conv.clone().or_else(|| logs[&b].conv.clone()) else {
            assert!(
                logs[&a].acked.is_empty() && logs[&b].acked.is_empty(),
                "acknowledged messages but no conversation (seed {seed})"
            );
            continue;
        };
        let mut ws = dm_connect(node.ws, &a).unwrap();
        let stored = read_conv(&mut ws, &conv);
        stored_total += stored.len();
        assert!(
            stored.iter().map(|e| e.0).eq(1..=stored.len() as u64),
            "{conv}: offsets not gap-free from 1 (seed {seed})"
        );
        let mut ns: Vec<u64> = stored.iter().map(|e| e.1).collect();
        ns.sort_unstable();
        assert!(
            ns.windows(2).all(|w| w[0] != w[1]),
            "{conv}: a message stored twice (seed {seed})"
        );
        for user in [&a, &b] {
            let log = &logs[user];
            acked_total += log.acked.len();
            for (offset, n) in &log.acked {
                let entry = stored.get((*offset - 1) as usize);
                assert_eq!(
                    entry.map(|e| (e.0, e.1, e.2.as_str())),
                    Some((*offset, *n, user.as_str())),
                    "{conv}: {user}'s acknowledged n={n} at offset {offset} (seed {seed})"
                );
            }
            for (_, n, sender) in stored.iter().filter(|e| e.2 == *user) {
                assert!(
                    log.issued.contains(n),
                    "{conv}: n={n} stored but {sender} never sent it (seed {seed})"
                );
            }
            let mut ws = dm_connect(node.ws, user).unwrap();
            let list = ask(
                &mut ws,
                json!({"id": 1, "method": "conv_list", "params": {"limit": 10}}),
            );
            let convs = list["result"]["convs"].as_array().expect("convs").clone();
            assert_eq!(convs.len(), 1, "{user}: {list} (seed {seed})");
            let view = &convs[0];
            assert_eq!(view["conv"], conv.as_str());
            assert_eq!(
                view["last_offset"],
                stored.len() as u64,
                "{user} (seed {seed})"
            );
            let read_offset = view["read_offset"].as_u64().unwrap();
            assert!(
                read_offset >= log.read_acked,
                "{user}: read position {read_offset} below the acknowledged {} (seed {seed})",
                log.read_acked
            );
            let after: Vec<_> = stored.iter().filter(|e| e.0 > read_offset).collect();
            assert!(
                after.iter().all(|e| e.2 != *user),
                "{user}: its own message after its read position (seed {seed})"
            );
            assert_eq!(
                view["unread"],
                after.len() as u64,
                "{user}: unread in {conv} (seed {seed})"
            );
            assert_eq!(list["result"]["total_unread"], after.len() as u64);
            unread_total += after.len();
        }
    }
    drop(node);
    eprintln!(
        "IM crash test: {rounds} kills, {IM_PAIRS} conversations, {acked_total} acknowledged, \
         {stored_total} stored, {unread_total} unread at the end (seed {seed})"
    );
    assert!(acked_total > 0, "nothing was acknowledged (seed {seed})");
}
