//! The control plane: the HTTP API thread. It runs off the shard threads, on
//! its own single-threaded tokio runtime (hyper's home; the shards stay on
//! monoio), and reaches the shards only through its row of the mesh and the
//! read-only shared state (interest map, metrics).

pub mod api;
mod cluster_api;
pub mod http;
mod idempotency;
mod im_api;
mod im_group_api;
mod im_signals_api;
mod webhooks;

use std::rc::Rc;
use std::sync::Arc;

use crate::engine::Shared;
use crate::mesh::MeshSender;

/// Runs the control thread's runtime and serves the API on `listener` (and
/// on `node_listener`, `api.node_listen`, when set) until
/// the engine shuts down; returns once in-flight requests have been answered
/// (or the shutdown grace has passed). Errs only when the runtime or the
/// listener cannot be set up.
pub fn run(
    shared: Arc<Shared>,
    sender: MeshSender,
    listener: std::net::TcpListener,
    node_listener: Option<std::net::TcpListener>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    // The handler holds `Rc`s and `RefCell`s: its tasks are local to this thread.
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(shared, sender, listener, node_listener))
}

/// Connections the node's own API address takes at once: an operator's
/// and a scraper's, not the backend's traffic.
const NODE_API_CONNECTIONS_MAX: usize = 64;

/// The API's share of `server.fd_reserve`: half (at least 8; the reserve is at least 16).
pub fn api_connections_max(fd_reserve: usize) -> usize {
    (fd_reserve / 2).max(8)
}

async fn serve(
    shared: Arc<Shared>,
    sender: MeshSender,
    listener: std::net::TcpListener,
    node_listener: Option<std::net::TcpListener>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let node_listener = match node_listener {
        Some(node_listener) => {
            node_listener.set_nonblocking(true)?;
            Some(tokio::net::TcpListener::from_std(node_listener)?)
        }
        None => None,
    };
    let api_config = &shared.config.api;
    let options = http::ServeOptions {
        limits: http::HttpLimits {
            header_bytes_max: api_config.header_bytes_max,
            headers_count_max: http::HEADERS_COUNT_MAX,
            body_bytes_max: api_config.body_bytes_max,
        },
        idle_timeout: api_config.idle_timeout,
        shutdown_grace: shared.config.server.shutdown_grace,
        // The API lives off the fd reserve the shards leave free (see `admission::FdBudget`):
        // half of it, so the store and the logs keep the rest whatever the API is sent.
        connections_max: api_connections_max(shared.config.server.fd_reserve),
    };
    let mesh = sender.mesh().clone();
    let api = Rc::new(api::Api::new(shared.clone(), sender));
    let tls = shared.tls.clone().filter(|tls| tls.api_enabled);
    let node_api = node_listener.map(|node_listener| {
        let node_options = http::ServeOptions {
            connections_max: NODE_API_CONNECTIONS_MAX,
            ..options
        };
        let mesh = mesh.clone();
        http::serve(
            node_listener,
            api.clone(),
            node_options,
            tls.clone(),
            async move { mesh.wait_shutdown().await },
        )
    });
    let shutdown = async move { mesh.wait_shutdown().await };
    let shared_api = http::serve(listener, api, options, tls, shutdown);
    match node_api {
        Some(node_api) => drop(tokio::join!(shared_api, node_api)),
        None => shared_api.await,
    }
    Ok(())
}

/// This node's `/api/stats` object (in a cluster, one of the nodes'
/// entries; `crate::cluster` gathers the others').
pub fn node_stats(shared: &crate::engine::Shared) -> serde_json::Value {
    let shards: Vec<_> = shared
        .metrics
        .iter()
        .enumerate()
        .map(|(idx, m)| {
            let mut obj = serde_json::Map::new();
            obj.insert("shard".into(), idx.into());
            for (name, value) in m.snapshot() {
                obj.insert(name.into(), value.into());
            }
            serde_json::Value::Object(obj)
        })
        .collect();
    let connections: u64 = shared.metrics.iter().map(|m| m.connections.get()).sum();
    let mut stats = serde_json::json!({
        "node": shared.config.server.node_id.get(),
        "driver": shared.driver.as_str(),
        "uptime_s": shared.started_at.elapsed().as_secs(),
        "connections": connections,
        "channels": shared.interest.n_channels(),
        "shards": shards,
    });
    if let Some(cluster) = &shared.cluster {
        stats["cluster"] = cluster.stats_json();
    }
    stats
}
