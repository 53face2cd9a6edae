//! Group messages/s into groups of 2, 50, 500 and 2,000 members, next to
//! DMs, same disk, same run: a group message writes O(1) keys whatever the
//! group's size (`docs/im.md`, "Groups in the list"), so the rate should
//! not fall with the size.
//!
//! `cargo run --release -p ringcast-store --example group_throughput -- [DIR] [N]`
//!
//! DMs run twice: 10 pairs one way (a handful of hot keys: the writer's
//! floor) and 4,500 pairs taking turns both ways, as the chat benchmark's
//! 9,000 users do (every message touches cold keys, and its sender had
//! its peer's last message unread). `PAIRS=10,1000,4500` runs only the
//! second kind, once per count, on one store (later runs find the
//! conversations started).
//!
//! Every append is `Durability::Sync`; all N are queued at once (as many
//! concurrent senders would), then awaited. Up to ten members take turns
//! sending.

use std::time::Instant;

use futures_channel::oneshot::Receiver;
use futures_executor::block_on;
use ringcast_protocol::envelope::{EncodedPush, Envelope};
use ringcast_store::{
    Durability, GroupActor, GroupAppend, GroupOp, GroupOpRequest, ImAppend, Store, StoreConfig,
    StoreError, GROUP_TARGETS_MAX,
};

fn push(conv: &str, sender: &str) -> EncodedPush {
    EncodedPush::encode(&Envelope {
        id: 0,
        offset: 0,
        epoch: 0,
        channel: conv.to_owned(),
        sender: sender.to_owned(),
        time_ms: 0,
        data_is_json: true,
        data: br#"{"text":"a 100-byte-ish chat message body for the throughput run ....."}"#
            .to_vec(),
    })
}

fn member(idx: usize) -> String {
    format!("member-{idx:05}")
}

/// A group of `size` members made by the system, 100 at a time.
fn make_group(store: &Store, conv: &str, size: usize) {
    let system_op = |op| GroupOpRequest {
        conv: conv.to_owned(),
        actor: GroupActor::System,
        op,
        push: push(conv, ""),
        client_msg_id: None,
        durability: Durability::Buffered,
    };
    let create = GroupOp::Create {
        owner: member(0),
        name: "bench".to_owned(),
        info: String::new(),
        members: Vec::new(),
        members_max: Some(u32::try_from(size).expect("size")),
        history_from_join: false,
        members_can_invite: false,
    };
    let receiver = store.group_op(system_op(create)).expect("queued");
    block_on(receiver).expect("writer").expect("create");
    let others: Vec<String> = (1..size).map(member).collect();
    for chunk in others.chunks(GROUP_TARGETS_MAX) {
        let add = GroupOp::Add {
            users: chunk.to_vec(),
        };
        let receiver = store.group_op(system_op(add)).expect("queued");
        block_on(receiver).expect("writer").expect("add");
    }
}

/// Messages/s of `count` requests queued at once by `queue`, then awaited.
fn rate<T>(
    count: usize,
    queue: impl FnMut(usize) -> Result<Receiver<Result<T, StoreError>>, StoreError>,
) -> f64 {
    let started = Instant::now();
    let receivers: Vec<_> = (0..count).map(queue).collect();
    for receiver in receivers {
        block_on(receiver.expect("queued"))
            .expect("writer alive")
            .expect("stored");
    }
    count as f64 / started.elapsed().as_secs_f64()
}

fn group_rate(store: &Store, conv: &str, size: usize, count: usize) -> f64 {
    rate(count, |idx| {
        let sender = member(idx % size.min(10));
        store.group_append(GroupAppend {
            conv: conv.to_owned(),
            push: push(conv, &sender),
            sender,
            counts: true,
            client_msg_id: None,
            durability: Durability::Sync,
        })
    })
}

fn dm_rate(store: &Store, count: usize) -> f64 {
    rate(count, |idx| {
        let (from, to) = (member(idx % 10), member(10 + idx % 10));
        let conv = format!("dm:{to}");
        store.im_append(ImAppend {
            push: push(&conv, &from),
            conv,
            pair: (from.clone(), to),
            sender: from,
            client_msg_id: None,
            durability: Durability::Sync,
            backend_allowed: false,
        })
    })
}

/// DMs over `pairs` pairs taking turns both ways, as chat does: the
/// sender has its peer's last message unread, so its own message reads it.
fn dm_pairs_rate(store: &Store, pairs: usize, count: usize) -> f64 {
    rate(count, |idx| {
        let pair = idx % pairs;
        let (mut from, mut to) = (format!("a-{pair:05}"), format!("b-{pair:05}"));
        if (idx / pairs) % 2 == 1 {
            std::mem::swap(&mut from, &mut to);
        }
        let conv = format!("dm:pair-{pair:05}");
        store.im_append(ImAppend {
            push: push(&conv, &from),
            conv,
            pair: (format!("a-{pair:05}"), format!("b-{pair:05}")),
            sender: from,
            client_msg_id: None,
            durability: Durability::Sync,
            backend_allowed: false,
        })
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let dir = base.join(format!(
        "ringcast-store-bench-groups-{}",
        std::process::id()
    ));
    let store = Store::open(StoreConfig::new(&dir)).expect("open");
    println!(
        "DMs (10 pairs):          {:.0} messages/s over {count}",
        dm_rate(&store, count)
    );
    if let Ok(list) = std::env::var("PAIRS") {
        for pairs in list.split(',').filter_map(|n| n.parse().ok()) {
            let rate = dm_pairs_rate(&store, pairs, count);
            println!("DMs ({pairs} pairs, both ways): {rate:.0} messages/s over {count}");
        }
        return;
    }
    println!(
        "DMs (4,500 pairs, both ways): {:.0} messages/s over {count}",
        dm_pairs_rate(&store, 4_500, count)
    );
    for size in [2, 50, 500, 2_000] {
        let conv = format!("grp:bench-{size}");
        make_group(&store, &conv, size);
        let rate = group_rate(&store, &conv, size, count);
        println!("group of {size:>5} members: {rate:.0} messages/s over {count}");
    }
    store.close().expect("close");
    drop(std::fs::remove_dir_all(dir));
}
