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

/// Where a client's messages go.
#[derive(Clone)]
enum Target {
    /// A DM to this user.
    Peer(String),
    /// This group.
    Group(String),
}

fn im_client(
    ws_addr: SocketAddr,
    user: String,
    target: Target,
    next_n: &AtomicU64,
    stop: &AtomicBool,
    ready: mpsc::Sender<()>,
    seed: u64,
) -> ImLog {
    let mut log = ImLog::default();
    if let Target::Group(conv) = &target {
        log.conv = Some(conv.clone());
    }
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
                    let mut params = json!({"kind": "custom", "data": {"n": n},
                        "client_msg_id": format!("n{n}")});
                    match &target {
                        Target::Peer(peer) => params["to"] = json!(peer),
                        Target::Group(conv) => params["conv"] = json!(conv),
                    }
                    json!({"id": id, "method": "msg_send", "params": params})
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
            let from_other = match &target {
                Target::Peer(peer) => push["sender"] == peer.as_str(),
                Target::Group(_) => push["sender"] != user.as_str(),
            };
            if from_other {
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

/// One round: each (user, target) on a client of its own, the node
/// killed `kill_after` into the load; what each client saw is added to
/// `logs`.
fn kill_round(
    node: &mut crate::crash::Node,
    clients: Vec<(String, Target)>,
    next_n: &Arc<AtomicU64>,
    kill_after: Duration,
    (round, seed): (u64, u64),
    logs: &mut BTreeMap<String, ImLog>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let clients: Vec<_> = clients
        .into_iter()
        .map(|(user, target)| {
            let (ws_addr, next_n, stop, ready) =
                (node.ws, next_n.clone(), stop.clone(), ready_tx.clone());
            std::thread::spawn(move || {
                let log = im_client(ws_addr, user.clone(), target, &next_n, &stop, ready, seed);
                (user, log)
            })
        })
        .collect();
    drop(ready_tx);
    let connected = kill_under_load(node, clients.len(), &ready_rx, &stop, kill_after);
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

/// Every message `user` had acknowledged is in `stored` at its offset,
/// and every stored message of `user` is one it sent.
fn check_sent(conv: &str, stored: &[(u64, u64, String)], user: &str, log: &ImLog, seed: u64) {
    for (offset, n) in &log.acked {
        let entry = stored.get((*offset - 1) as usize);
        assert_eq!(
            entry.map(|e| (e.0, e.1, e.2.as_str())),
            Some((*offset, *n, user)),
            "{conv}: {user}'s acknowledged n={n} at offset {offset} (seed {seed})"
        );
    }
    // n = 0: a member entry, no message.
    for (_, n, _) in stored.iter().filter(|e| e.2 == user && e.1 != 0) {
        assert!(
            log.issued.contains(n),
            "{conv}: n={n} stored but {user} never sent it (seed {seed})"
        );
    }
}

/// The rounds of a kill test: `clients()` on a fresh start of the node
/// each, killed at a random moment; what every client saw.
fn kill_rounds(
    run: &mut Run,
    next_n: &Arc<AtomicU64>,
    clients: impl Fn() -> Vec<(String, Target)>,
) -> BTreeMap<String, ImLog> {
    let mut logs = BTreeMap::new();
    for round in 0..run.rounds {
        let kill_after = Duration::from_millis(100 + xorshift(&mut run.rng) % 400);
        let mut node = start_node_with(&run.data_dir, &run.config_path, IM_CONFIG);
        let round = (round, run.seed);
        kill_round(&mut node, clients(), next_n, kill_after, round, &mut logs);
    }
    logs
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
                // A group's member entries carry no n: 0, never a message's.
                p["data"]["data"]["n"].as_u64().unwrap_or(0),
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
    let next_n = Arc::new(AtomicU64::new(1));
    let logs = kill_rounds(&mut run, &next_n, || {
        (0..2 * IM_PAIRS)
            .map(|idx| (im_user(idx), Target::Peer(im_user(idx ^ 1))))
            .collect()
    });
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
            check_sent(&conv, &stored, user, log, seed);
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

/// Members of the crash test's group, each on one connection.
const GROUP_MEMBERS: usize = 8;

fn group_user(idx: usize) -> String {
    format!("g-{idx}")
}

/// Group fan-out under kill -9: every member sends to one group (several
/// in flight) and reads while the engine is killed; after the last restart
/// every acknowledged message is in the group's stream at the offset its
/// reply gave, offsets gap-free, none twice, the member table is whole
/// (every member, the owner's role), and each member's unread equals the
/// recount from the stream past its read position.
#[test]
fn acknowledged_group_messages_survive_kill_9_with_member_tables_and_unread_intact() {
    let mut run = Run::new("IM group crash test");
    let (rounds, seed) = (run.rounds, run.seed);
    let (data_dir, config_path) = (run.data_dir.clone(), run.config_path.clone());
    let next_n = Arc::new(AtomicU64::new(1));
    let conv = {
        let node = start_node_with(&data_dir, &config_path, IM_CONFIG);
        let mut owner = dm_connect(node.ws, &group_user(0)).unwrap();
        let members: Vec<String> = (1..GROUP_MEMBERS).map(group_user).collect();
        let created = ask(
            &mut owner,
            json!({"id": 1, "method": "group_create", "params": {"name": "crash", "members": members}}),
        );
        created["result"]["conv"]
            .as_str()
            .unwrap_or_else(|| panic!("{created}"))
            .to_owned()
    };
    let logs = kill_rounds(&mut run, &next_n, || {
        (0..GROUP_MEMBERS)
            .map(|idx| (group_user(idx), Target::Group(conv.clone())))
            .collect()
    });
    let node = start_node_with(&data_dir, &config_path, IM_CONFIG);
    let mut ws = dm_connect(node.ws, &group_user(0)).unwrap();
    let stored = read_conv(&mut ws, &conv);
    assert!(
        stored.iter().map(|e| e.0).eq(1..=stored.len() as u64),
        "{conv}: offsets not gap-free from 1 (seed {seed})"
    );
    let messages: Vec<_> = stored.iter().filter(|e| e.1 != 0).collect();
    assert_eq!(
        stored.len(),
        messages.len() + 1,
        "one member entry, the create"
    );
    let mut ns: Vec<u64> = messages.iter().map(|e| e.1).collect();
    ns.sort_unstable();
    assert!(
        ns.windows(2).all(|w| w[0] != w[1]),
        "{conv}: a message stored twice (seed {seed})"
    );
    let page = ask(
        &mut ws,
        json!({"id": 9, "method": "group_members", "params": {"conv": conv}}),
    );
    let mut members: Vec<(String, String)> = page["result"]["members"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap().to_owned(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    members.sort();
    let expected: Vec<(String, String)> = (0..GROUP_MEMBERS)
        .map(|idx| {
            (
                group_user(idx),
                if idx == 0 { "owner" } else { "member" }.to_owned(),
            )
        })
        .collect();
    assert_eq!(members, expected, "the member table (seed {seed})");
    let (mut acked_total, mut unread_total) = (0, 0);
    for idx in 0..GROUP_MEMBERS {
        let user = group_user(idx);
        let log = &logs[&user];
        acked_total += log.acked.len();
        check_sent(&conv, &stored, &user, log, seed);
        let mut ws = dm_connect(node.ws, &user).unwrap();
        let list = ask(
            &mut ws,
            json!({"id": 1, "method": "conv_list", "params": {"limit": 10}}),
        );
        let view = &list["result"]["convs"][0];
        assert_eq!(view["conv"], conv.as_str(), "{user}: {list} (seed {seed})");
        assert_eq!(
            view["last_offset"],
            stored.len() as u64,
            "{user} (seed {seed})"
        );
        assert_eq!(view["group"]["member_count"], GROUP_MEMBERS as u64);
        let read_offset = view["read_offset"].as_u64().unwrap();
        assert!(
            read_offset >= log.read_acked,
            "{user}: read position {read_offset} below the acknowledged {} (seed {seed})",
            log.read_acked
        );
        let unread = messages.iter().filter(|e| e.0 > read_offset).count();
        assert_eq!(
            view["unread"], unread as u64,
            "{user}: unread in {conv} (seed {seed})"
        );
        unread_total += unread;
    }
    drop(node);
    eprintln!(
        "IM group crash test: {rounds} kills, {GROUP_MEMBERS} members, {acked_total} acknowledged, \
         {} stored, {unread_total} unread at the end (seed {seed})",
        messages.len()
    );
    assert!(acked_total > 0, "nothing was acknowledged (seed {seed})");
}
