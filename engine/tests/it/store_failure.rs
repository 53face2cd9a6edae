//! Store failure: the data directory fills up while the engine runs.
//! Durable publishes must then be refused with 503 and a JSON reason (never
//! acknowledged unwritten), and everything acknowledged before must be
//! intact after a restart.
//!
//! The engine runs in a private mount namespace (`unshare --mount`) whose
//! data directory is a small tmpfs, mostly taken by a ballast file, so the
//! disk fills quickly and the host's mounts are untouched. Needs root (CI
//! and this project's machines run as root); elsewhere the test says so and
//! does not run.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{api_raw, free_port, API_KEY, SECRET};

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
