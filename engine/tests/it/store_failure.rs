//! Store failure: the data directory fills up while the engine runs.
//! Durable publishes must then be refused with 503 and a JSON reason (never
//! acknowledged unwritten), and everything acknowledged before must be
//! intact after a restart. And the engine runs out of file descriptors
//! while the store needs a new file: 503, retryable, and once descriptors
//! are free again publishes succeed without a restart (issue 11 defect 1).
//!
//! The full-disk test:
//!
//! The engine runs in a private mount namespace (`unshare --mount`) whose
//! data directory is a small tmpfs, mostly taken by a ballast file, so the
//! disk fills quickly and the host's mounts are untouched. Needs root (CI
//! and this project's machines run as root); elsewhere the test says so and
//! does not run.

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{api_raw, free_port, start_under_nofile, API_KEY, SECRET};

fn wait_for(api: SocketAddr, up: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(api).is_ok() != up {
        assert!(
            Instant::now() < deadline,
            "engine did not {}",
            if up { "start" } else { "stop" }
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn full_disk_refuses_publishes_and_keeps_acknowledged_data() {
    // Root check: the effective uid from /proc.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root || Command::new("unshare").arg("--version").output().is_err() {
        eprintln!("store_failure: needs root and unshare(1) to mount a tmpfs in a private namespace; not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pid_file = dir.path().join("engine.pid");
    let go_file = dir.path().join("restart");
    std::fs::create_dir(&data).unwrap();
    let api_port = free_port();
    let ws_port = free_port();
    let config = dir.path().join("ringcast.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[server]\nshards = 2\npin_cores = false\ndata_dir = {data:?}\n\
             [websocket]\nlisten = \"127.0.0.1:{ws_port}\"\n[api]\nlisten = \"127.0.0.1:{api_port}\"\nkey = \"{API_KEY}\"\n\
             [auth]\njwt_secret = \"{SECRET}\"\n[log]\nlevel = \"error\"\n"
        ),
    )
    .unwrap();
    // Inside the namespace: a 32 MiB tmpfs, 30 MiB of it ballast; run the
    // engine; when it exits, wait for the test's go, free the ballast, and
    // run it again on the same data.
    let script = format!(
        "set -e\n\
         mount -t tmpfs -o size=32m tmpfs {data:?}\n\
         dd if=/dev/zero of={data:?}/ballast bs=1M count=30 status=none\n\
         {bin:?} --config={config:?} & echo $! > {pid:?}; wait $! || true\n\
         while [ ! -e {go:?} ]; do sleep 0.05; done\n\
         rm -f {data:?}/ballast\n\
         exec {bin:?} --config={config:?}\n",
        bin = env!("CARGO_BIN_EXE_ringcast"),
        pid = pid_file,
        go = go_file,
    );
    let mut holder = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdout(Stdio::null())
        .spawn()
        .expect("unshare");
    let api: SocketAddr = format!("127.0.0.1:{api_port}").parse().unwrap();
    wait_for(api, true);

    // Publish 4 KiB messages to an inbox (sync) until the store refuses.
    let blob = "z".repeat(4096);
    let mut acked = Vec::new();
    let mut refusal = None;
    for n in 0..20_000u64 {
        let body = json!({"user": "full", "data": {"n": n, "blob": blob}}).to_string();
        let (status, value) = api_raw(api, "POST", "/api/send", Some(&body), Some(API_KEY));
        match status {
            200 => acked.push((value["results"][0]["offset"].as_u64().unwrap(), n)),
            _ => {
                refusal = Some((status, value));
                break;
            }
        }
    }
    let (status, value) = refusal.expect("the disk never filled");
    assert_eq!(status, 503, "{value}");
    assert_eq!(value["error"]["code"], "store_unavailable", "{value}");
    // A full disk is not a shortage the store waits out: poisoned, not retryable.
    assert_eq!(value["error"]["retryable"], false, "{value}");
    assert!(!acked.is_empty());
    // Later publishes keep being refused, cleanly.
    let body = json!({"user": "full", "data": {"n": -1}}).to_string();
    let (status, value) = api_raw(api, "POST", "/api/send", Some(&body), Some(API_KEY));
    assert_eq!(status, 503, "{value}");

    // Stop, free space, restart on the same data, and read everything back.
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    wait_for(api, false);
    std::fs::write(&go_file, b"").unwrap();
    wait_for(api, true);
    let mut stored = Vec::new();
    let mut since = 0u64;
    loop {
        let body = json!({"stream": "user:full", "since": since, "limit": 1000}).to_string();
        let (status, page) = api_raw(api, "POST", "/api/history", Some(&body), Some(API_KEY));
        assert_eq!(status, 200, "{page}");
        let publications = page["publications"].as_array().unwrap().clone();
        for p in &publications {
            since = p["offset"].as_u64().unwrap();
            stored.push((since, p["data"]["n"].as_u64().unwrap()));
        }
        if publications.len() < 1000 {
            break;
        }
    }
    let _ = holder.kill();
    let _ = holder.wait();
    eprintln!(
        "store_failure: {} acknowledged before the disk filled, {} stored",
        acked.len(),
        stored.len()
    );
    for (offset, n) in &acked {
        assert_eq!(
            stored.get(*offset as usize - 1),
            Some(&(*offset, *n)),
            "acknowledged message lost"
        );
    }
}

/// A keep-alive API connection, opened while descriptors are free: the API
/// cannot accept a new one while the process is out of them.
struct KeepAlive(std::io::BufReader<TcpStream>);

impl KeepAlive {
    fn connect(api: SocketAddr) -> KeepAlive {
        let stream = TcpStream::connect(api).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        KeepAlive(std::io::BufReader::new(stream))
    }

    /// One request; returns the status, the lowercased head and the JSON body.
    fn post(&mut self, path: &str, body: &str) -> (u16, String, serde_json::Value) {
        use std::io::{BufRead, Read, Write};
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: apikey {API_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.0.get_mut().write_all(request.as_bytes()).unwrap();
        let mut head = String::new();
        loop {
            let mut line = String::new();
            assert!(
                self.0.read_line(&mut line).unwrap() > 0,
                "connection closed"
            );
            if line == "\r\n" {
                break;
            }
            head.push_str(&line.to_ascii_lowercase());
        }
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .expect("content-length")
            .trim()
            .parse()
            .unwrap();
        let mut body = vec![0; length];
        self.0.read_exact(&mut body).unwrap();
        (status, head, serde_json::from_slice(&body).unwrap())
    }
}

#[test]
fn out_of_fds_is_a_retryable_503_and_publishes_resume_without_a_restart() {
    const NOFILE: usize = 256;
    const FLOOD: usize = 320;
    // The smallest fd reserve and memtables of 64 KiB: the flood takes
    // every descriptor, and a few 4 KiB publishes make the store write a
    // memtable to a new file.
    let engine = start_under_nofile(
        NOFILE,
        "fd_reserve = 16\nstore_memtable_bytes_max = 65536",
        "handshake_timeout_ms = 60000\nhandshakes_per_source_max = 100000",
    );
    let (api, ws) = (engine.api, engine.ws);
    let mut conn = KeepAlive::connect(api);
    let blob = "f".repeat(4096);
    let publish = |conn: &mut KeepAlive, n: u64| {
        let body = json!({"channel": "hist:fds", "data": {"n": n, "blob": blob}}).to_string();
        conn.post("/api/publish", &body)
    };
    assert_eq!(publish(&mut conn, 0).0, 200);

    // Take every descriptor: more connections than the process may open.
    let flood: Vec<TcpStream> = (0..FLOOD)
        .map(|_| TcpStream::connect(ws).expect("the kernel's backlog takes the connection"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut acked = vec![0u64];
    let mut refusal = None;
    for n in 1..2000u64 {
        let (status, head, value) = publish(&mut conn, n);
        match status {
            200 => acked.push(n),
            _ => {
                refusal = Some((status, head, value));
                break;
            }
        }
    }
    let (status, head, value) = refusal.expect("the store never ran out of descriptors");
    assert_eq!(status, 503, "{value}");
    assert_eq!(value["error"]["code"], "store_unavailable", "{value}");
    assert_eq!(value["error"]["retryable"], true, "{value}");
    assert!(head.contains("retry-after: 1"), "{head}");
    let message = value["error"]["message"].as_str().unwrap();
    assert!(message.contains("temporarily unavailable"), "{message}");
    eprintln!("out of fds: {} acknowledged, then {value}", acked.len());

    // Free the descriptors: publishes succeed again, same process.
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(20);
    let n = 10_000;
    loop {
        let (status, _, value) = publish(&mut conn, n);
        if status == 200 {
            acked.push(n);
            break;
        }
        assert_eq!(value["error"]["retryable"], true, "{value}");
        assert!(
            Instant::now() < deadline,
            "publishes did not resume: {value}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stored = Vec::new();
    let mut since = 0u64;
    loop {
        let body = json!({"stream": "hist:fds", "since": since, "limit": 1000}).to_string();
        let (status, _, page) = conn.post("/api/history", &body);
        assert_eq!(status, 200, "{page}");
        let publications = page["publications"].as_array().unwrap().clone();
        for p in &publications {
            since = p["offset"].as_u64().unwrap();
            stored.push(p["data"]["n"].as_u64().unwrap());
        }
        if publications.len() < 1000 {
            break;
        }
    }
    for n in &acked {
        assert!(
            stored.contains(n),
            "acknowledged publication {n} is missing"
        );
    }
    let (status, metrics) = api_raw(api, "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ringcast_store_recoveries_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(metrics.contains("ringcast_store_poisoned 0"), "{metrics}");
}
