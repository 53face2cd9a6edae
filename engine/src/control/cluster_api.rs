//! The API in a cluster (docs/cluster.md, "The API on any node"): what
//! the other nodes add to this node's answer, and `/api/drain`.
//!
//! - `/health` says the cluster's state; 503 while the node is cut off
//!   from NATS (it cannot reach the other partitions or nodes);
//! - `/api/stats` adds every live node's stats (asked on NATS, with a
//!   deadline), and names the nodes that did not answer;
//! - `/api/presence` adds the other nodes' subscribers of the channel;
//! - `/api/disconnect`, `/api/subscribe`, `/api/unsubscribe` reach every
//!   node's connections of the user (a broadcast);
//! - `/api/presence/users` asks each user's inbox owner which nodes hold
//!   its connections;
//! - `POST /api/drain` closes the node's listeners and its clients with
//!   1012, so they reconnect to the other processes of the port.

use ringcast_protocol::cluster::{Broadcast, Query};
use serde_json::json;

use super::http::Response;
use crate::cluster::{Outbound, QueryAnswers};
use crate::engine::Shared;
use crate::mesh::{MeshSender, ShardEvent};

/// `GET /health`.
pub(super) fn health(shared: &Shared) -> Response {
    let Some(cluster) = &shared.cluster else {
        return Response::json(200, &json!({"status": "ok"}));
    };
    let state = cluster.state_name();
    let status = if state == "disconnected" || state == "conflict" {
        503
    } else {
        200
    };
    Response::json(
        status,
        &json!({
            "status": if status == 200 { "ok" } else { "degraded" },
            "node": shared.config.server.node_id.get(),
            "cluster": cluster.stats_json(),
        }),
    )
}

/// Asks every other live node; `None` on a single node.
async fn ask_all(shared: &Shared, query: Query) -> Option<QueryAnswers> {
    let cluster = shared.cluster.as_ref()?;
    let (reply, answers) = futures_channel::oneshot::channel();
    if cluster.send(Outbound::Query { query, reply }).is_err() {
        let live = cluster
            .state
            .live_nodes
            .load(std::sync::atomic::Ordering::Acquire);
        return Some(QueryAnswers {
            replies: Vec::new(),
            missing: crate::interest::shard_indexes(live)
                .map(|node| node as u8)
                .collect(),
        });
    }
    Some(answers.await.unwrap_or_default())
}

/// `GET /api/stats`: this node's stats, and in a cluster every node's
/// under `nodes` with the totals.
pub(super) async fn stats(shared: &Shared) -> Response {
    let local = super::node_stats(shared);
    let Some(answers) = ask_all(shared, Query::Stats).await else {
        return Response::json(200, &local);
    };
    let mut nodes = vec![local.clone()];
    nodes.extend(
        answers
            .replies
            .iter()
            .filter_map(|reply| serde_json::from_str::<serde_json::Value>(&reply.json).ok()),
    );
    let total = |key: &str| -> u64 { nodes.iter().filter_map(|n| n[key].as_u64()).sum() };
    let mut answer = local;
    answer["cluster_connections"] = total("connections").into();
    answer["cluster_channels"] = total("channels").into();
    answer["missing_nodes"] = json!(answers.missing);
    answer["nodes"] = serde_json::Value::Array(nodes);
    Response::json(200, &answer)
}

/// The other nodes' subscribers of `channel`, and the nodes that did not
/// answer; nothing on a single node.
pub(super) async fn presence(shared: &Shared, channel: &str) -> (Vec<serde_json::Value>, Vec<u8>) {
    let query = Query::ChannelPresence {
        channel: channel.to_owned(),
    };
    let Some(answers) = ask_all(shared, query).await else {
        return (Vec::new(), Vec::new());
    };
    let clients = answers
        .replies
        .iter()
        .filter_map(|reply| serde_json::from_str::<Vec<serde_json::Value>>(&reply.json).ok())
        .flatten()
        .collect();
    (clients, answers.missing)
}

/// Hands `broadcast` to every other node. `false` when it could not be
/// queued (the caller answers 503).
pub(super) fn broadcast(shared: &Shared, broadcast: Broadcast) -> bool {
    match &shared.cluster {
        Some(cluster) => cluster.send(Outbound::Broadcast(broadcast)).is_ok(),
        None => true,
    }
}

/// Whether some other node holds a connection of each of `users` (asked
/// of each user's inbox owner); `None` for a user whose owner did not
/// answer. Empty on a single node.
pub(super) async fn online_elsewhere(shared: &Shared, users: &[&str]) -> Vec<Option<bool>> {
    let Some(cluster) = &shared.cluster else {
        return Vec::new();
    };
    let mut receivers = Vec::with_capacity(users.len());
    for user in users {
        let (reply, receiver) = futures_channel::oneshot::channel();
        let sent = cluster
            .send(Outbound::UserNodes {
                user: (*user).to_owned(),
                reply,
            })
            .is_ok();
        receivers.push(sent.then_some(receiver));
    }
    let me = cluster.node();
    let mut online = Vec::with_capacity(users.len());
    for receiver in receivers {
        let nodes = match receiver {
            Some(receiver) => receiver.await.ok().and_then(Result::ok),
            None => None,
        };
        online.push(nodes.map(|nodes| nodes.iter().any(|node| *node != me)));
    }
    online
}

/// `POST /api/drain`: every shard closes its listener and its clients
/// (1012); the node keeps serving its partition and the API.
pub(super) fn drain(shared: &Shared, sender: &MeshSender) -> Response {
    let mut shards = 0;
    for shard in 0..shared.mesh.n_consumers() {
        if sender.send(shard, ShardEvent::Drain).is_err() {
            return Response::error(
                503,
                "overloaded",
                &format!("shard {shard} is not keeping up; the drain was not handed to it, retry"),
            );
        }
        shards += 1;
    }
    if let Some(cluster) = &shared.cluster {
        cluster
            .state
            .draining
            .store(true, std::sync::atomic::Ordering::Release);
    }
    tracing::info!("draining: listeners closed, clients closed with 1012");
    Response::json(
        200,
        &json!({"draining": true, "node": shared.config.server.node_id.get(), "shards": shards}),
    )
}
