//! The "afternoon" baseline for the peer comparison (`benches/compare/`):
//! the WebSocket fan-out server a developer writes with tokio + axum, with no
//! tuning at all.
//!
//! ```text
//! ws_baseline --listen 127.0.0.1:18300 [--publish-listen 127.0.0.1:18301] [--threads N]
//! ```
//!
//! - `GET /sub/<channel>` upgrades to WebSocket and subscribes the
//!   connection to `<channel>`.
//! - `POST /pub/<channel>` sends the request body, as one text frame, to every
//!   subscriber of `<channel>` and answers `200` with the number of
//!   subscribers it reached.
//!
//! The URL shape is Nchan's, so the load generator's `nchan` profile drives
//! both. One `tokio::sync::broadcast` channel per channel name, in a
//! `Mutex<HashMap>`; a subscriber that falls more than [`BACKLOG`] messages
//! behind skips what it missed (`RecvError::Lagged`), which the load
//! generator counts as lost.
//!
//! A second mode is the origin behind Pushpin (`--grip-origin`): it speaks
//! Pushpin's WebSocket-over-HTTP protocol and answers each connection's
//! `OPEN` with a GRIP `subscribe` control message for the channel named by
//! the path (`/sub/<channel>`), so Pushpin holds the WebSocket and delivers
//! what is published to its publish API:
//!
//! ```text
//! ws_baseline --grip-origin 127.0.0.1:18310
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use clap::Parser;
use tokio::sync::broadcast;

/// Messages a subscriber may fall behind before it starts skipping.
const BACKLOG: usize = 1024;
/// `listen(2)` backlog, as in the Ringcast and Nchan configs of the comparison.
const BACKLOG_LISTEN: u32 = 4096;

#[derive(Debug, Parser)]
#[command(
    name = "ws_baseline",
    about = "Plain tokio/axum WebSocket fan-out server (benchmark baseline)"
)]
struct Cli {
    /// WebSocket (and, without --publish-listen, publish) address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Separate address for `POST /pub/<channel>`.
    #[arg(long)]
    publish_listen: Option<SocketAddr>,
    /// Run as Pushpin's WebSocket-over-HTTP origin on this address instead.
    #[arg(long)]
    grip_origin: Option<SocketAddr>,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

type Channels = Arc<Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>>;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(threads);
    }
    runtime.build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(addr) = cli.grip_origin {
        let app = Router::new().fallback(any(grip_origin));
        return serve(addr, app).await;
    }
    let listen = cli
        .listen
        .context("--listen <addr> (or --grip-origin <addr>) is required")?;
    let channels = Channels::default();
    let app = Router::new()
        .route("/sub/{channel}", get(subscribe))
        .route("/pub/{channel}", post(publish))
        .with_state(channels);
    match cli.publish_listen {
        None => serve(listen, app).await,
        Some(publish) => {
            tokio::try_join!(serve(listen, app.clone()), serve(publish, app))?;
            Ok(())
        }
    }
}

async fn serve(addr: SocketAddr, app: Router) -> anyhow::Result<()> {
    // The one departure from the defaults: the same listen backlog as every
    // other server in the comparison (std's default is 128).
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr).with_context(|| format!("bind {addr}"))?;
    let listener = socket.listen(BACKLOG_LISTEN)?;
    eprintln!("ws_baseline listening on {addr}");
    axum::serve(listener, app).await?;
    Ok(())
}

async fn subscribe(
    ws: WebSocketUpgrade,
    Path(channel): Path<String>,
    State(channels): State<Channels>,
) -> Response {
    let rx = channels
        .lock()
        .unwrap()
        .entry(channel.clone())
        .or_insert_with(|| broadcast::channel(BACKLOG).0)
        .subscribe();
    ws.on_upgrade(move |socket| async move {
        pump(socket, rx).await;
        // Forget the channel when its last subscriber leaves.
        let mut map = channels.lock().unwrap();
        if map.get(&channel).is_some_and(|tx| tx.receiver_count() == 0) {
            map.remove(&channel);
        }
    })
}

/// Forward the channel's messages to the socket until either side closes.
async fn pump(mut socket: WebSocket, mut rx: broadcast::Receiver<Utf8Bytes>) {
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(text) => {
                    if socket.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                // Pings are answered by tungstenite; anything else is ignored.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn publish(
    Path(channel): Path<String>,
    State(channels): State<Channels>,
    body: Bytes,
) -> Response {
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return (StatusCode::BAD_REQUEST, "body is not UTF-8\n").into_response();
    };
    let sender = channels.lock().unwrap().get(&channel).cloned();
    let reached = match sender {
        Some(tx) => tx.send(Utf8Bytes::from(text)).unwrap_or(0),
        None => 0,
    };
    (StatusCode::OK, format!("{reached}\n")).into_response()
}

/// Pushpin origin: one HTTP request per batch of WebSocket events.
async fn grip_origin(uri: axum::http::Uri, headers: HeaderMap, body: Bytes) -> Response {
    let is_ws_events = headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/websocket-events"));
    if !is_ws_events {
        return (
            StatusCode::BAD_REQUEST,
            "this origin speaks WebSocket-over-HTTP only\n",
        )
            .into_response();
    }
    let channel = uri.path().strip_prefix("/sub/").unwrap_or("default");
    let mut out = Vec::new();
    let mut rest = &body[..];
    while !rest.is_empty() {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            break;
        };
        let line = &rest[..eol];
        rest = &rest[eol + 2..];
        let (kind, len) = match line.iter().position(|&b| b == b' ') {
            Some(sp) => (
                &line[..sp],
                std::str::from_utf8(&line[sp + 1..])
                    .ok()
                    .and_then(|h| usize::from_str_radix(h, 16).ok())
                    .unwrap_or(0),
            ),
            None => (line, 0),
        };
        let payload = &rest[..len.min(rest.len())];
        rest = &rest[(len + 2).min(rest.len())..];
        match kind {
            b"OPEN" => {
                let control = format!(r#"c:{{"type":"subscribe","channel":"{channel}"}}"#);
                out.extend_from_slice(b"OPEN\r\n");
                out.extend_from_slice(format!("TEXT {:x}\r\n", control.len()).as_bytes());
                out.extend_from_slice(control.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            b"CLOSE" => {
                out.extend_from_slice(format!("CLOSE {:x}\r\n", payload.len()).as_bytes());
                out.extend_from_slice(payload);
                out.extend_from_slice(b"\r\n");
            }
            // TEXT/BINARY/PING/PONG/DISCONNECT from clients: nothing to do.
            _ => {}
        }
    }
    let mut response = out.into_response();
    let h = response.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/websocket-events"),
    );
    h.insert("sec-websocket-extensions", HeaderValue::from_static("grip"));
    response
}
