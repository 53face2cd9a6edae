//! File descriptors: a flood of TCP connections that never upgrade cannot
//! take the descriptors the store and the API need (issue 11, defect 1,
//! the engine's half). The real binary runs under a small `ulimit -n`.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::json;

use crate::util::{api_raw, held_and_closed, start_under_nofile, API_KEY};

const NOFILE: usize = 400;
const RESERVE: usize = 200;
const FLOOD: usize = 300;

fn publish(api: SocketAddr, n: usize) -> u16 {
    let body = json!({"channel": "hist:fd", "data": {"n": n}}).to_string();
    api_raw(api, "POST", "/api/publish", Some(&body), Some(API_KEY)).0
}

#[test]
fn a_connection_flood_leaves_the_reserve_to_durable_writes() {
    let engine = start_under_nofile(
        NOFILE,
        &format!("fd_reserve = {RESERVE}"),
        "handshake_timeout_ms = 30000",
    );
    let (api, ws) = (engine.api, engine.ws);
    assert_eq!(publish(api, 0), 200);

    // More connections than the budget, none of them upgrading.
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
}
