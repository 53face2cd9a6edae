//! The control plane: the HTTP API thread. It runs off the shard threads, on
//! its own single-threaded tokio runtime (hyper's home; the shards stay on
//! monoio), and reaches the shards only through its row of the mesh and the
//! read-only shared state (interest map, metrics).

pub mod api;
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

/// Runs the control thread's runtime and serves the API on `listener` until
/// the engine shuts down; returns once in-flight requests have been answered
/// (or the shutdown grace has passed). Errs only when the runtime or the
/// listener cannot be set up.
pub fn run(
    shared: Arc<Shared>,
    sender: MeshSender,
    listener: std::net::TcpListener,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    // The handler holds `Rc`s and `RefCell`s: its tasks are local to this thread.
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(shared, sender, listener))
}

/// The API's share of `server.fd_reserve`: half (at least 8; the reserve is at least 16).
pub fn api_connections_max(fd_reserve: usize) -> usize {
    (fd_reserve / 2).max(8)
}

async fn serve(
    shared: Arc<Shared>,
    sender: MeshSender,
    listener: std::net::TcpListener,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
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
    let shutdown = async move { mesh.wait_shutdown().await };
    let tls = shared.tls.clone().filter(|tls| tls.api_enabled);
    http::serve(listener, api, options, tls, shutdown).await;
    Ok(())
}
