//! File descriptors: a flood of TCP connections that never upgrade cannot
//! take the descriptors the store and the API need (issue 11, defect 1,
//! the engine's half). The real binary runs under a small `ulimit -n`.

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{api_raw, free_port, held_and_closed, API_KEY, SECRET};

const NOFILE: usize = 400;
const RESERVE: usize = 200;
const FLOOD: usize = 300;

fn publish(api: SocketAddr, n: usize) -> u16 {
    let body = json!({"channel": "hist:fd", "data": {"n": n}}).to_string();
    api_raw(api, "POST", "/api/publish", Some(&body), Some(API_KEY)).0
}

#[test]
fn a_connection_flood_leaves_the_reserve_to_durable_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (ws_port, api_port) = (free_port(), free_port());
    let config = dir.path().join("ringcast.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[server]\nshards = 2\npin_cores = false\nfd_reserve = {RESERVE}\n\
             data_dir = {:?}\n[websocket]\nlisten = \"127.0.0.1:{ws_port}\"\n\
             handshake_timeout_ms = 30000\n[api]\nlisten = \"127.0.0.1:{api_port}\"\n\
             key = \"{API_KEY}\"\n[auth]\njwt_secret = \"{SECRET}\"\n\
             [[namespace]]\nname = \"hist\"\nhistory = true\n[log]\nlevel = \"error\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {NOFILE} && exec \"$0\" --config=\"$1\""))
        .arg(env!("CARGO_BIN_EXE_ringcast"))
        .arg(&config)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn ringcast under ulimit -n");
    let api: SocketAddr = format!("127.0.0.1:{api_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(api).is_err() {
        assert!(Instant::now() < deadline, "engine did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(publish(api, 0), 200);

    // More connections than the budget, none of them upgrading.
    let ws: SocketAddr = format!("127.0.0.1:{ws_port}").parse().unwrap();
    let flood: Vec<TcpStream> = (0..FLOOD)
        .map(|_| TcpStream::connect(ws).expect("the kernel's backlog takes the connection"))
        .collect();
    // Those over the budget are accepted and closed at once: they read EOF.
    std::thread::sleep(Duration::from_millis(500));
    let (held, refused) = held_and_closed(&flood);
    eprintln!("fd budget: {held} flood connections held, {refused} refused");
    assert_eq!(held, NOFILE - RESERVE, "exactly the budget is held");
    assert_eq!(refused, FLOOD - held);
    // During the flood, durable writes still get descriptors.
    for n in 1..=20 {
        assert_eq!(publish(api, n), 200, "durable publish {n} during the flood");
    }
    drop(flood);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(publish(api, 21), 200, "and after it");
    let (status, page) = api_raw(
        api,
        "POST",
        "/api/history",
        Some(&json!({"stream": "hist:fd", "limit": 100}).to_string()),
        Some(API_KEY),
    );
    assert_eq!(status, 200);
    assert_eq!(page["publications"].as_array().unwrap().len(), 22);
    child.kill().unwrap();
    child.wait().unwrap();
}
