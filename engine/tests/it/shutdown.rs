//! Graceful shutdown: clients get 1001 after their queued pushes.

use crate::e2e;
use crate::util::*;
use serde_json::json;

e2e!(shutdown_flushes_then_closes_with_1001, |driver| {
    let engine = start(config(driver, 2));
    let mut clients: Vec<_> = (0..6)
        .map(|i| connect(&engine, &format!("d{i}")).0)
        .collect();
    for ws in clients.iter_mut() {
        subscribe(ws, 1, "news:last");
    }
    publish(&engine, "news:last", json!("final words"));
    let ws_addr = engine.ws_addr;
    engine.shutdown();
    for ws in clients.iter_mut() {
        assert_eq!(
            read_json(ws)["push"]["data"],
            "final words",
            "queued push flushed before close"
        );
        assert_eq!(read_close_code(ws), Some(1001));
    }
    assert!(
        std::net::TcpStream::connect(ws_addr).is_err(),
        "listener closed"
    );
});
