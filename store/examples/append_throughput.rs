//! Appends/s with group commit vs one fsync per message, same disk, same run;
//! and group commit with the two webhook outbox events a client `send`
//! carries when webhooks are on (a message event and an undelivered check,
//! each with a copy of the entry).
//!
//! `cargo run --release -p ringcast-store --example append_throughput -- [DIR] [N]`
//!
//! Every append is `Durability::Sync`; all N are queued at once (as many
//! concurrent publishers would), then awaited.

use std::time::Instant;

use futures_executor::block_on;
use ringcast_protocol::envelope::{EncodedPush, Envelope};
use ringcast_store::{
    AppendRequest, Durability, OutboxEvent, OutboxKind, Retention, Store, StoreConfig,
};

/// The events of a client send from `alice` to `user`, as the engine builds them.
fn send_events(user: &str) -> Vec<OutboxEvent> {
    vec![
        OutboxEvent {
            kind: OutboxKind::Message,
            key: "alice".to_owned(),
            due_ms: 0,
            body: br#"{"client":"123456","command":"send"}"#.to_vec(),
        },
        OutboxEvent {
            kind: OutboxKind::Undelivered,
            key: user.to_owned(),
            due_ms: u64::MAX,
            body: br#"{"source":"client"}"#.to_vec(),
        },
    ]
}

fn run(dir: &std::path::Path, entries_max: usize, count: usize, events: bool) -> f64 {
    let mut config = StoreConfig::new(dir);
    config.group_commit_entries_max = entries_max;
    let store = Store::open(config).expect("open");
    let started = Instant::now();
    let receivers: Vec<_> = (0..count)
        .map(|idx| {
            let user = format!("{}", idx % 64);
            let stream = format!("user:{user}");
            store
                .append(AppendRequest {
                    push: EncodedPush::encode(&Envelope {
                        id: 0,
                        offset: 0,
                        epoch: 0,
                        channel: stream.clone(),
                        sender: String::new(),
                        time_ms: 0,
                        data_is_json: true,
                        data: br#"{"text":"a 100-byte-ish chat message body for the throughput run ....."}"#.to_vec(),
                    }),
                    stream,
                    durability: Durability::Sync,
                    client_msg_id: None,
                    retention: Retention::UNLIMITED,
                    outbox: if events {
                        send_events(&user)
                    } else {
                        Vec::new()
                    },
                })
                .expect("queued")
        })
        .collect();
    for receiver in receivers {
        block_on(receiver).expect("writer alive").expect("append");
    }
    let elapsed = started.elapsed();
    store.close().expect("close");
    count as f64 / elapsed.as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(50_000);
    let group_dir = base.join(format!("ringcast-store-bench-group-{}", std::process::id()));
    let single_dir = base.join(format!(
        "ringcast-store-bench-single-{}",
        std::process::id()
    ));
    let events_dir = base.join(format!(
        "ringcast-store-bench-events-{}",
        std::process::id()
    ));
    let single_count = (count / 10).max(100);
    let grouped = run(&group_dir, 4096, count, false);
    let with_events = run(&events_dir, 4096, count, true);
    let single = run(&single_dir, 1, single_count, false);
    println!("group commit (<=4096/batch, Sync): {grouped:.0} appends/s over {count}");
    println!("same, 2 outbox events per append:  {with_events:.0} appends/s over {count}");
    println!("one fsync per message (Sync):      {single:.0} appends/s over {single_count}");
    println!("speedup: {:.1}x", grouped / single);
    drop(std::fs::remove_dir_all(group_dir));
    drop(std::fs::remove_dir_all(single_dir));
    drop(std::fs::remove_dir_all(events_dir));
}
