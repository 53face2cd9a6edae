//! The limits that tie crates together, end to end: the most shards an
//! engine runs, and message ids that never collide between shards, the
//! store writer and the API.

use std::collections::HashSet;

use crate::util::*;
use ringcast_engine::config::{Driver, ShardCount};
use ringcast_engine::limits::{ID_SHARD_CONTROL, ID_SHARD_STORE, SHARDS_MAX};
use ringcast_protocol::envelope::MessageId;
use serde_json::json;

#[test]
fn the_engine_starts_with_the_most_shards_and_ids_never_collide() {
    // Regression: with 63 shards the last shard used the store writer's id
    // field, and `shards = 0` on a host with >= 64 CPUs failed to start.
    let mut config = config(Driver::Epoll, 1);
    config.server.shards = ShardCount::new(SHARDS_MAX as u16).expect("SHARDS_MAX is allowed");
    config.server.pin_cores = false;
    config.websocket.connections_max_per_shard = 64;
    let engine = start(config);
    let (mut ws, _) = connect(&engine, "ids");
    subscribe(&mut ws, 1, "room:ids");
    let mut ids = HashSet::new();
    let mut shards_seen = HashSet::new();
    // Client publishes carry the shard's id field; reconnecting spreads the
    // publisher over shards.
    for round in 0..20 {
        let (mut client, connect) = connect(&engine, &format!("c{round}"));
        shards_seen.insert(connect["connect"]["shard"].as_u64().expect("shard"));
        let reply = command(
            &mut client,
            json!({"id": 1, "method": "publish", "params": {"channel": "room:ids", "data": round}}),
        );
        let id: u64 = reply["result"]["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("decimal id");
        let field = MessageId(id).shard();
        assert!(usize::from(field) < SHARDS_MAX, "shard field {field}");
        assert!(ids.insert(id));
    }
    // Durable (store writer) and API ids use their reserved fields.
    let stored = publish(&engine, "chat:ids", json!(1));
    let api = publish(&engine, "room:ids", json!(2));
    for (reply, field) in [(stored, ID_SHARD_STORE), (api, ID_SHARD_CONTROL)] {
        let id: u64 = reply["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("decimal id");
        assert_eq!(MessageId(id).shard(), field, "{reply}");
        assert!(ids.insert(id));
    }
    assert!(shards_seen.len() > 1, "connections spread over shards");
    engine.shutdown();
}
