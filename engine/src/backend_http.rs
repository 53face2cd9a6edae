//! The HTTP/1.1 client side shared by the threads that call the app's
//! backend (the proxy thread, the webhook thread): a thread running one
//! tokio current-thread runtime, hyper-util's pooled client over it, and
//! one POST whose response body is read under a bound.

use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Idle keep-alive connections kept per backend host.
const POOL_IDLE_PER_HOST_MAX: usize = 256;
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub type BackendClient = Client<HttpConnector, Full<Bytes>>;

/// Why a POST got no complete response.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PostError {
    /// No response: the request could not be built, the connection was
    /// refused or broke.
    #[error("{0}")]
    Unavailable(String),
    /// A response whose body could not be read whole (or was too large).
    #[error("reading the body: {0}")]
    Body(String),
}

/// A pooled HTTP/1.1 client with `TCP_NODELAY` (one write per request).
pub fn pooled_client() -> BackendClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(POOL_IDLE_PER_HOST_MAX)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector)
}

/// POSTs a JSON `body` with extra `headers`; the status and at most
/// `response_bytes_max` of the response body.
pub async fn post_json(
    client: &BackendClient,
    uri: hyper::Uri,
    headers: &[(&'static str, String)],
    body: Bytes,
    response_bytes_max: usize,
) -> Result<(hyper::StatusCode, Bytes), PostError> {
    let response = send_json(client, uri, headers, body).await?;
    let status = response.status();
    let body = read_body(response, response_bytes_max).await?;
    Ok((status, body))
}

/// POSTs a JSON `body` with extra `headers`; the response, its body not
/// read yet.
pub async fn send_json(
    client: &BackendClient,
    uri: hyper::Uri,
    headers: &[(&'static str, String)],
    body: Bytes,
) -> Result<hyper::Response<hyper::body::Incoming>, PostError> {
    let mut request =
        hyper::Request::post(uri).header(hyper::header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request
        .body(Full::new(body))
        .map_err(|err| PostError::Unavailable(err.to_string()))?;
    client.request(request).await.map_err(|err| {
        let mut text = err.to_string();
        if let Some(source) = std::error::Error::source(&err) {
            text = format!("{text}: {source}");
        }
        PostError::Unavailable(text)
    })
}

/// At most `bytes_max` of a response's body; reading it whole also lets
/// the connection go back to the pool.
pub async fn read_body(
    response: hyper::Response<hyper::body::Incoming>,
    bytes_max: usize,
) -> Result<Bytes, PostError> {
    let limited = http_body_util::Limited::new(response.into_body(), bytes_max);
    Ok(limited
        .collect()
        .await
        .map_err(|err| PostError::Body(err.to_string()))?
        .to_bytes())
}

/// A thread running a tokio current-thread runtime until stopped; work is
/// spawned onto it through `handle`. Dropping it stops the runtime (tasks
/// still pending are dropped) without waiting for the thread.
pub struct RuntimeThread {
    pub handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RuntimeThread {
    pub fn spawn(name: &str) -> std::io::Result<RuntimeThread> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = handle_tx.send(Err(err));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                let _ = runtime.block_on(stop_rx);
            })?;
        let handle = handle_rx
            .recv()
            .map_err(|_| std::io::Error::other(format!("the {name} thread died at start")))??;
        Ok(RuntimeThread {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops the runtime and waits for the thread to end.
    pub fn stop_and_join(mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
