//! The control plane: the HTTP API thread. It runs off the shard threads, on
//! its own monoio runtime, and reaches the shards only through its row of the
//! mesh and the read-only shared state (interest map, metrics).

pub mod api;
pub mod http;

use std::rc::Rc;
use std::sync::Arc;

use crate::engine::Shared;
use crate::mesh::MeshSender;

/// Serves the API on `listener` until the engine shuts down.
pub async fn run(shared: Arc<Shared>, sender: MeshSender, listener: std::net::TcpListener) {
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(error = %err, "API listener could not join the control runtime");
            return;
        }
    };
    let api_config = &shared.config.api;
    let limits = http::HttpLimits {
        header_bytes_max: api_config.header_bytes_max,
        headers_count_max: 100,
        body_bytes_max: api_config.body_bytes_max,
    };
    let idle_timeout = api_config.idle_timeout;
    let mesh = sender.mesh().clone();
    let api = Rc::new(api::Api::new(shared.clone(), sender));
    let shutdown = async move { mesh.wait_shutdown().await };
    http::serve(listener, api, limits, idle_timeout, shutdown).await;
}
