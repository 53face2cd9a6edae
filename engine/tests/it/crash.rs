//! Crash recovery with real processes: the `ringcast` binary is killed with
//! SIGKILL while clients are writing, restarted on the same data directory,
//! and every acknowledged message must be there exactly once, at the offset
//! its acknowledgement gave, with offsets contiguous from 1 and the same
//! epoch. Two writers: one publisher sending through the HTTP API one request
//! at a time, and WebSocket clients sending each other DMs with several
//! `send` commands in flight. A longer run:
//! `RINGCAST_CRASH_ROUNDS=50 cargo test -p ringcast-engine --test it crash`
//! (or `ci/crash-stress.sh`).

use ringcast_engine::streams::INBOX_RETENTION_COUNT;
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;

use crate::util::{api_raw, free_port, token, Ws, API_KEY, SECRET};

pub struct Node {
    pub child: Child,
    pub api: SocketAddr,
    pub ws: SocketAddr,
}

/// A test that fails part-way does not leave the engine running.
impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(data_dir: &std::path::Path, config_path: &std::path::Path) -> Node {
    start_node_with(data_dir, config_path, "")
}

/// Starts the binary with `extra` TOML tables after the test's own.
pub fn start_node_with(
    data_dir: &std::path::Path,
    config_path: &std::path::Path,
    extra: &str,
) -> Node {
    let ws_port = free_port();
    let api_port = free_port();
    std::fs::write(
        config_path,
        format!(
            "version = 1\n[server]\nshards = 2\npin_cores = false\ndata_dir = {data_dir:?}\n\
             [websocket]\nlisten = \"127.0.0.1:{ws_port}\"\n[api]\nlisten = \"127.0.0.1:{api_port}\"\nkey = \"{API_KEY}\"\n\
             [auth]\njwt_secret = \"{SECRET}\"\n[log]\nlevel = \"warn\"\n{extra}"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .arg(format!("--config={}", config_path.display()))
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn ringcast");
    let api: SocketAddr = format!("127.0.0.1:{api_port}").parse().unwrap();
    let ws: SocketAddr = format!("127.0.0.1:{ws_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for addr in [api, ws] {
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "engine did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Node { child, api, ws }
}

/// A tiny deterministic PRNG so a failing seed can be replayed.
pub fn xorshift(state: &mut u64) -> u64 {
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

/// Every entry of `stream` as (offset, `data.n`), paging through the history
/// API, and the stream's epoch.
fn read_all(api: SocketAddr, stream: &str) -> (String, Vec<(u64, u64)>) {
    let mut since = 0u64;
    let mut entries = Vec::new();
    loop {
        let body = json!({"stream": stream, "since": since, "limit": 1000}).to_string();
        let (status, page) = api_raw(api, "POST", "/api/history", Some(&body), Some(API_KEY));
        assert_eq!(status, 200, "{stream}: {page}");
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

/// Kill rounds: `RINGCAST_CRASH_ROUNDS`, 4 by default.
pub fn crash_rounds() -> u64 {
    std::env::var("RINGCAST_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

/// `RINGCAST_CRASH_SEED`, else one from the clock; printed so that a failing
/// run can be replayed.
pub fn crash_seed(test: &str) -> u64 {
    let seed = std::env::var("RINGCAST_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("{test} seed: RINGCAST_CRASH_SEED={seed}");
    seed
}

/// Waits for `clients` to say they are connected, lets the load run for
/// `kill_after`, sets `stop` and kills the node with SIGKILL (no shutdown,
/// no flush). Clients see the stop flag first, so a connection that ends
/// before it is an error. Returns whether every client connected.
pub fn kill_under_load(
    node: &mut Node,
    clients: usize,
    ready: &mpsc::Receiver<()>,
    stop: &AtomicBool,
    kill_after: Duration,
) -> bool {
    // The kill comes kill_after into the load, not into the connects.
    let connected = (0..clients).all(|_| ready.recv_timeout(Duration::from_secs(20)).is_ok());
    if connected {
        std::thread::sleep(kill_after);
    }
    stop.store(true, Ordering::SeqCst);
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    connected
}

/// What every kill test starts from: its rounds, its seed (and a PRNG
/// from it), a data directory and a config file in a temp dir.
pub struct Run {
    pub rounds: u64,
    pub seed: u64,
    pub rng: u64,
    pub dir: tempfile::TempDir,
    pub data_dir: std::path::PathBuf,
    pub config_path: std::path::PathBuf,
}

impl Run {
    pub fn new(test: &str) -> Run {
        let seed = crash_seed(test);
        let dir = tempfile::tempdir().unwrap();
        Run {
            rounds: crash_rounds(),
            seed,
            rng: seed,
            data_dir: dir.path().join("data"),
            config_path: dir.path().join("ringcast.toml"),
            dir,
        }
    }
}

#[test]
fn acknowledged_messages_survive_kill_9_exactly_once_in_order() {
    let Run {
        rounds,
        seed,
        mut rng,
        dir: _dir,
        data_dir,
        config_path,
    } = Run::new("crash test");
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
    let (stored_epoch, stored) = read_all(node.api, "user:crash");
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

/// Users in the DM load test: pairs that send each other DMs, each user on
/// its own WebSocket connection.
const DM_PAIRS: usize = 8;
/// Unanswered `send` commands one connection keeps in flight.
const DM_IN_FLIGHT_MAX: usize = 8;
/// Rounds that write to the same inboxes; a longer run moves on to new
/// users, so that every round can keep the engine busy until the kill and
/// no inbox reaches the retention count however many rounds there are.
const DM_ROUNDS_PER_USERS: u64 = 4;
/// Sends one user issues in one round. What can reach an inbox over its
/// rounds (acknowledged or not) stays below INBOX_RETENTION_COUNT, so nothing
/// is trimmed and every inbox is checked from offset 1.
const DM_SENDS_PER_ROUND_MAX: u64 = (INBOX_RETENTION_COUNT - 1) / DM_ROUNDS_PER_USERS;
const _: () = assert!(DM_SENDS_PER_ROUND_MAX * DM_ROUNDS_PER_USERS < INBOX_RETENTION_COUNT);
const _: () = assert!(DM_SENDS_PER_ROUND_MAX >= 100 * DM_IN_FLIGHT_MAX as u64);
/// How long a client's read waits before it looks at the stop flag.
const DM_READ_TIMEOUT: Duration = Duration::from_millis(50);

/// What one client saw in one round.
struct DmLog {
    user: String,
    /// The inbox this client sends to (its peer's).
    inbox: String,
    /// `data.n` of every `send` written to the socket, answered or not: each
    /// of them may be stored.
    issued: Vec<u64>,
    /// (offset, n, epoch) of every `send` answered with a result.
    acked: Vec<(u64, u64, String)>,
    /// `send`s answered with an error (nothing stored, e.g. a full store queue).
    refused: u64,
    /// The round's cap on sends stopped this client before the kill.
    capped: bool,
    /// Pushes received (the peer's DMs to this user).
    pushes: u64,
    /// How the connection ended, when that happened before the kill.
    early_end: Option<String>,
}

fn dm_user(generation: u64, idx: usize) -> String {
    format!("dm{generation}-{idx}")
}

/// Connects as `user` to a spawned engine and reads the `connect` message.
pub fn dm_connect(ws_addr: SocketAddr, user: &str) -> Result<Ws, String> {
    let url = format!("ws://{ws_addr}/connection/websocket?token={}", token(user));
    let stream = TcpStream::connect(ws_addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let (mut ws, _) = tungstenite::client(url, stream).map_err(|e| format!("upgrade: {e}"))?;
    let first = loop {
        match ws.read().map_err(|e| format!("read connect: {e}"))? {
            Message::Text(text) => break text,
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return Err(format!("first message was {other:?}")),
        }
    };
    let first: Value = serde_json::from_str(&first).map_err(|e| format!("{first}: {e}"))?;
    if first.get("connect").is_none() {
        return Err(format!("first message is not connect: {first}"));
    }
    ws.get_ref()
        .set_read_timeout(Some(DM_READ_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// One user's client for a round: sends DMs to `peer` with up to
/// DM_IN_FLIGHT_MAX unanswered, reads replies and pushes as they come, until
/// `stop` is set (the engine is about to be killed) or the connection ends.
fn dm_client(
    ws_addr: SocketAddr,
    user: String,
    peer: String,
    next_n: &AtomicU64,
    stop: &AtomicBool,
    ready: mpsc::Sender<()>,
    seed: u64,
) -> DmLog {
    let mut log = DmLog {
        inbox: format!("user:{peer}"),
        user,
        issued: Vec::new(),
        acked: Vec::new(),
        refused: 0,
        capped: false,
        pushes: 0,
        early_end: None,
    };
    let mut ws = match dm_connect(ws_addr, &log.user) {
        Ok(ws) => ws,
        // Too slow to connect before the kill: nothing sent, nothing to check.
        Err(_) if stop.load(Ordering::SeqCst) => return log,
        Err(err) => panic!("{} could not connect: {err} (seed {seed})", log.user),
    };
    let _ = ready.send(());
    // id -> n of the sends not answered yet.
    let mut in_flight: HashMap<u64, u64> = HashMap::new();
    let mut next_id = 1u64;
    loop {
        while in_flight.len() < DM_IN_FLIGHT_MAX && !stop.load(Ordering::SeqCst) {
            if log.issued.len() as u64 == DM_SENDS_PER_ROUND_MAX {
                log.capped = true;
                break;
            }
            let n = next_n.fetch_add(1, Ordering::Relaxed);
            let id = next_id;
            next_id += 1;
            let command = json!({"id": id, "method": "send",
                "params": {"user": peer, "data": {"n": n, "from": log.user}}});
            // Counted before the write: a send the kill cut off may be stored.
            log.issued.push(n);
            in_flight.insert(id, n);
            if !write_text(&mut ws, &command, stop, &mut log.early_end) {
                return log;
            }
        }
        let Some(text) = next_text(&mut ws, stop, &mut log.early_end) else {
            return log;
        };
        let message: Value = serde_json::from_str(&text).unwrap();
        if message.get("push").is_some() {
            log.pushes += 1;
            continue;
        }
        let id = message["id"].as_u64();
        let n = id.and_then(|id| in_flight.remove(&id));
        let n =
            n.unwrap_or_else(|| panic!("{}: reply to no send: {message} (seed {seed})", log.user));
        match message.get("result") {
            Some(result) => log.acked.push((
                result["offset"].as_u64().unwrap(),
                n,
                result["epoch"].as_str().unwrap().to_string(),
            )),
            None => {
                assert!(message.get("error").is_some(), "{message} (seed {seed})");
                log.refused += 1;
            }
        }
    }
}

/// Writes a load client's command; `false` once it should end (as
/// [`next_text`]).
pub fn write_text(
    ws: &mut Ws,
    command: &Value,
    stop: &AtomicBool,
    early_end: &mut Option<String>,
) -> bool {
    match ws.send(Message::Text(command.to_string())) {
        Ok(()) => true,
        Err(err) => {
            if !stop.load(Ordering::SeqCst) {
                *early_end = Some(format!("write: {err}"));
            }
            false
        }
    }
}

/// A load client's next text message; `None` once it should end: the
/// stop flag is set (the kill is due), or the connection ended, which
/// `early_end` then describes.
pub fn next_text(ws: &mut Ws, stop: &AtomicBool, early_end: &mut Option<String>) -> Option<String> {
    loop {
        let ended = match ws.read() {
            Ok(Message::Text(text)) => return Some(text.to_string()),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            Ok(other) => format!("received {other:?}"),
            Err(tungstenite::Error::Io(err))
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    return None;
                }
                continue;
            }
            Err(err) => format!("read: {err}"),
        };
        if !stop.load(Ordering::SeqCst) {
            *early_end = Some(ended);
        }
        return None;
    }
}

/// What the rounds sent to one inbox.
#[derive(Default)]
struct DmInbox {
    issued: Vec<u64>,
    /// (offset, n, epoch) of the acknowledged sends.
    acked: Vec<(u64, u64, String)>,
}

#[test]
fn acknowledged_dms_survive_kill_9_under_load() {
    let rounds = crash_rounds();
    let seed = crash_seed("DM crash test");
    let mut rng = seed;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config_path = dir.path().join("ringcast.toml");
    let next_n = Arc::new(AtomicU64::new(0));
    let mut inboxes: BTreeMap<String, DmInbox> = BTreeMap::new();
    let (mut refused, mut capped, mut pushes) = (0u64, 0u64, 0u64);
    for round in 0..rounds {
        let generation = round / DM_ROUNDS_PER_USERS;
        let kill_after = Duration::from_millis(100 + xorshift(&mut rng) % 400);
        let mut node = start_node(&data_dir, &config_path);
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let clients: Vec<_> = (0..2 * DM_PAIRS)
            .map(|idx| {
                let (user, peer) = (dm_user(generation, idx), dm_user(generation, idx ^ 1));
                let (ws_addr, next_n, stop, ready) =
                    (node.ws, next_n.clone(), stop.clone(), ready_tx.clone());
                std::thread::spawn(move || {
                    dm_client(ws_addr, user, peer, &next_n, &stop, ready, seed)
                })
            })
            .collect();
        drop(ready_tx);
        let connected = kill_under_load(&mut node, clients.len(), &ready_rx, &stop, kill_after);
        let logs: Vec<DmLog> = clients
            .into_iter()
            .map(|client| {
                client
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect();
        assert!(
            connected,
            "a client did not connect in round {round} (seed {seed})"
        );
        for log in logs {
            assert!(
                log.early_end.is_none(),
                "{}'s connection ended before the kill in round {round}: {:?} (seed {seed})",
                log.user,
                log.early_end
            );
            refused += log.refused;
            capped += u64::from(log.capped);
            pushes += log.pushes;
            let inbox = inboxes.entry(log.inbox).or_default();
            inbox.issued.extend(log.issued);
            inbox.acked.extend(log.acked);
        }
    }
    let node = start_node(&data_dir, &config_path);
    let (mut issued, mut acked, mut stored_total) = (0, 0, 0);
    for (stream, inbox) in &inboxes {
        let (stored_epoch, stored) = read_all(node.api, stream);
        issued += inbox.issued.len();
        acked += inbox.acked.len();
        stored_total += stored.len();
        assert!(
            (inbox.issued.len() as u64) < INBOX_RETENTION_COUNT,
            "{stream}: {} sends could trim the inbox (seed {seed})",
            inbox.issued.len()
        );
        for (offset, n, epoch) in &inbox.acked {
            assert_eq!(
                epoch, &stored_epoch,
                "{stream}: the epoch of the ack of n={n} at offset {offset} is not the stored one: \
                 one epoch across rounds (seed {seed})"
            );
        }
        let offsets: Vec<u64> = stored.iter().map(|(offset, _)| *offset).collect();
        assert!(
            offsets.iter().copied().eq(1..=stored.len() as u64),
            "{stream}: offsets not contiguous from 1: {:?}..{:?} for {} entries (seed {seed})",
            offsets.first(),
            offsets.last(),
            stored.len()
        );
        let mut ns: Vec<u64> = stored.iter().map(|(_, n)| *n).collect();
        ns.sort_unstable();
        let mut issued_ns = inbox.issued.clone();
        issued_ns.sort_unstable();
        for pair in ns.windows(2) {
            assert_ne!(
                pair[0], pair[1],
                "{stream}: n={} stored twice (seed {seed})",
                pair[0]
            );
        }
        for n in &ns {
            assert!(
                issued_ns.binary_search(n).is_ok(),
                "{stream}: n={n} stored but never sent to this inbox (seed {seed})"
            );
        }
        for (offset, n, _) in &inbox.acked {
            assert_eq!(
                stored.get((*offset - 1) as usize),
                Some(&(*offset, *n)),
                "{stream}: acknowledged n={n} at offset {offset} is not there, {} stored \
                 (seed {seed})",
                stored.len()
            );
        }
    }
    drop(node);
    eprintln!(
        "DM crash test: {rounds} kills, {} inboxes, {issued} sent, {acked} acknowledged, \
         {stored_total} stored, {refused} refused, {pushes} pushes, {capped} of {} client \
         rounds reached the cap of {DM_SENDS_PER_ROUND_MAX} sends (seed {seed})",
        inboxes.len(),
        rounds * 2 * DM_PAIRS as u64
    );
    assert!(acked > 0, "nothing was acknowledged (seed {seed})");
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
