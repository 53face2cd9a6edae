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
use crate::metrics::NodeMetric;

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

/// `POST /api/drain`: every shard closes its listener and its clients
/// (1012) at its next tick; the node keeps serving its partition and the
/// API.
pub(super) fn drain(shared: &Shared) -> Response {
    let first = shared.drain();
    if first {
        tracing::info!("draining (POST /api/drain): listeners close, clients get 1012");
    }
    Response::json(
        200,
        &json!({"draining": true, "node": shared.config.server.node_id.get(), "already": !first}),
    )
}

/// The cluster's lines of `/metrics`; none on a single node.
pub(super) fn metrics(shared: &Shared) -> Vec<NodeMetric<'static>> {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(cluster) = &shared.cluster else {
        return Vec::new();
    };
    let state = &cluster.state;
    let metric = |name, help, is_gauge, value| NodeMetric {
        name,
        help,
        is_gauge,
        value,
    };
    vec![
        metric(
            "cluster_connected",
            "1 while the node's NATS connection is up.",
            true,
            u64::from(state.connected.load(Relaxed)),
        ),
        metric(
            "cluster_live_nodes",
            "Other nodes heard from within cluster.node_timeout_ms.",
            true,
            u64::from(state.live_nodes.load(Relaxed).count_ones()),
        ),
        metric(
            "cluster_pushes_out_total",
            "Publications sent to other nodes (each in a batch counts).",
            false,
            state.pushes_out.load(Relaxed),
        ),
        metric(
            "cluster_bytes_out_total",
            "Payload bytes of the NATS messages the node published.",
            false,
            state.bytes_out.load(Relaxed),
        ),
        metric(
            "cluster_pushes_in_total",
            "Publications received from other nodes.",
            false,
            state.pushes_in.load(Relaxed),
        ),
        metric(
            "cluster_pushes_unwanted_total",
            "Received publications no local subscriber wanted (other channels of a bucket).",
            false,
            state.pushes_unwanted.load(Relaxed),
        ),
        metric(
            "cluster_dropped_total",
            "Publications for other nodes dropped: NATS cut off, or the cluster queue full.",
            false,
            state.dropped.load(Relaxed),
        ),
        metric(
            "cluster_requests_total",
            "Store requests forwarded to the owners of other partitions.",
            false,
            state.requests.load(Relaxed),
        ),
        metric(
            "cluster_request_errors_total",
            "Forwarded store requests that failed (owner down, timeout, its error).",
            false,
            state.request_errors.load(Relaxed),
        ),
        metric(
            "cluster_reconnects_total",
            "Times the NATS connection came back after a cut.",
            false,
            state.reconnects.load(Relaxed),
        ),
        metric(
            "cluster_slow_consumer_total",
            "Times a NATS subscription of the node overflowed (messages lost on the way in).",
            false,
            state.slow_consumer.load(Relaxed),
        ),
        metric(
            "cluster_buckets_subscribed",
            "Channel buckets the node subscribes on NATS.",
            true,
            state.buckets_subscribed.load(Relaxed),
        ),
    ]
}
