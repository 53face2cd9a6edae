//! The kernel floor: the least a fan-out server can do per publication on
//! this machine, so an engine's latency can be read as a multiple of it.
//!
//! ```text
//! kernel_floor --listen=127.0.0.1:19600 --frame-bytes=64 --stats-out=floor.json
//! ```
//!
//! One thread, one `mio` loop, no runtime, no queue, no per-connection
//! state beyond the socket. It speaks what the load generator's `nchan`
//! profile speaks, on one port:
//!
//! - `GET /sub/<anything>` with `Upgrade: websocket` gets the `101` and
//!   becomes a subscriber (the channel is ignored: every subscriber gets
//!   every publication);
//! - `POST /pub/<anything>` (keep-alive) is a publication: the answer
//!   `201` goes out first, then the body, padded with spaces to
//!   `--frame-bytes` (a JSON payload with trailing whitespace still parses),
//!   is written as one unmasked text frame to every subscriber in a plain
//!   loop of blocking `send`s. Nothing else happens between two sends.
//!
//! The loop itself is timed on every publication (a *round*): its total
//! time and that time over the subscribers written, the direct measurement
//! of what `N` loopback sends cost on these very sockets. Those figures go
//! to `--stats-out` (JSON) whenever a publisher connection closes and at
//! exit (SIGTERM, SIGINT or `--max-seconds`), and to stdout at exit. The
//! load generator's latency against this server is the floor a real engine
//! is compared with (same client, same sockets, same schedule).
//!
//! Sockets are non-blocking so the loop can accept and read; a send that
//! would block (a full socket buffer, which 64-byte frames at a fixed rate
//! never fill) switches that socket to blocking for the rest of the frame,
//! and is counted. A subscriber's close frame is answered and the socket
//! closed, so the load generator's clean close does not wait on its grace
//! period; a failed send drops the subscriber.

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use hdrhistogram::Histogram;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use ringcast_protocol::frame::{encode_frame, OpCode};
use ringcast_protocol::handshake::response_101;
use slab::Slab;

/// `listen(2)` backlog, as the other servers of the comparison.
const BACKLOG_LISTEN: i32 = 4096;
/// Bytes of an HTTP request head (upgrade or publish) before it is refused.
const REQUEST_BYTES_MAX: usize = 16 * 1024;
/// The answer to a publish: Nchan answers 201 too.
const PUBLISH_RESPONSE: &[u8] = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
/// A close frame without a status, the reply to a subscriber's close.
const CLOSE_FRAME: [u8; 2] = [0x88, 0x00];
const LISTENER: Token = Token(usize::MAX);
/// How often the loop looks at the stop flag and the deadline when idle.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// The histograms' range: 1 ns to 100 s.
const HISTOGRAM_NS_MAX: u64 = 100_000_000_000;

#[derive(Debug, Parser)]
#[command(
    name = "kernel_floor",
    about = "Minimal fan-out server: one blocking send per subscriber per publication, timed"
)]
struct Cli {
    /// Address for both the WebSocket upgrades and the publishes.
    #[arg(long, default_value = "127.0.0.1:19600")]
    listen: SocketAddr,
    /// Size of each frame written (header included); the publication's body
    /// is padded with spaces up to it. A longer body is sent as it is.
    #[arg(long, default_value_t = 64)]
    frame_bytes: usize,
    /// Where to write the round statistics (JSON).
    #[arg(long)]
    stats_out: Option<PathBuf>,
    /// Exit after this long, whatever happens.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
}

/// A connection: an HTTP client until it upgrades, then a subscriber.
struct Conn {
    stream: TcpStream,
    /// The bytes of an HTTP request being read (an upgrade, or publishes on
    /// a keep-alive connection); `None` once upgraded: a subscriber.
    request: Option<Vec<u8>>,
}

/// What one round cost, over all rounds.
struct Rounds {
    frame_bytes: usize,
    round_ns: Histogram<u64>,
    per_socket_ns: Histogram<u64>,
    rounds: u64,
    /// Sends over all rounds (subscribers written to).
    sends: u64,
    sends_blocked: u64,
    send_errors: u64,
    subscribers_min: Option<usize>,
    subscribers_max: usize,
    /// Sum of round times, for the mean per send.
    round_ns_total: u128,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        cli.frame_bytes >= 2,
        "--frame-bytes must hold a frame header (at least 2)"
    );
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;
    let listener = listen(cli.listen)?;
    eprintln!(
        "kernel_floor listening on {} (frames of {} bytes)",
        cli.listen, cli.frame_bytes
    );
    let mut poll = Poll::new()?;
    poll.registry().register(
        &mut SourceFd(&listener.as_raw_fd()),
        LISTENER,
        Interest::READABLE,
    )?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<Conn> = Slab::new();
    let mut rounds = Rounds::new(cli.frame_bytes)?;
    let deadline = Instant::now() + Duration::from_secs(cli.max_seconds);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        match poll.poll(&mut events, Some(POLL_TIMEOUT)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error.into()),
        }
        for event in &events {
            if event.token() == LISTENER {
                accept_all(&listener, &poll, &mut conns)?;
            } else {
                on_readable(&poll, &mut conns, &mut rounds, event.token().0, &cli)?;
            }
        }
    }
    rounds.write(cli.stats_out.as_deref())?;
    println!("{}", rounds.to_json());
    Ok(())
}

fn listen(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("bind {addr}"))?;
    socket.listen(BACKLOG_LISTEN)?;
    let listener: TcpListener = socket.into();
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn accept_all(listener: &TcpListener, poll: &Poll, conns: &mut Slab<Conn>) -> io::Result<()> {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            // Out of file descriptors or a connection reset before accept:
            // leave it in the backlog for the next wake-up.
            Err(error) => {
                eprintln!("accept: {error}");
                return Ok(());
            }
        };
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        let entry = conns.vacant_entry();
        poll.registry().register(
            &mut SourceFd(&stream.as_raw_fd()),
            Token(entry.key()),
            Interest::READABLE,
        )?;
        entry.insert(Conn {
            stream,
            request: Some(Vec::new()),
        });
    }
}

fn on_readable(
    poll: &Poll,
    conns: &mut Slab<Conn>,
    rounds: &mut Rounds,
    key: usize,
    cli: &Cli,
) -> anyhow::Result<()> {
    let mut chunk = [0u8; 4096];
    // Edge-triggered: read until the socket is empty.
    loop {
        let Some(conn) = conns.get_mut(key) else {
            return Ok(());
        };
        let n = match conn.stream.read(&mut chunk) {
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        let Some(request) = &mut conn.request else {
            // A subscriber sends nothing but its close frame (no pings come
            // from the load generator). Close frame or EOF: answer, drop.
            if n == 0 || chunk.first().is_some_and(|b| b & 0x0f == 0x8) {
                let _ = conn.stream.write(&CLOSE_FRAME);
                drop_conn(poll, conns, key)?;
                return Ok(());
            }
            continue;
        };
        if n == 0 {
            // A publisher closing: the run is over, or nearly.
            drop_conn(poll, conns, key)?;
            rounds.write(cli.stats_out.as_deref())?;
            return Ok(());
        }
        request.extend_from_slice(chunk.get(..n).unwrap_or_default());
        loop {
            match on_request(conns, rounds, key)? {
                Request::Incomplete | Request::Upgraded => break,
                Request::Published => {}
                Request::Bad => {
                    drop_conn(poll, conns, key)?;
                    return Ok(());
                }
            }
        }
    }
}

enum Request {
    Incomplete,
    Upgraded,
    Published,
    Bad,
}

/// Handles one complete request at the front of connection `key`'s buffer.
fn on_request(conns: &mut Slab<Conn>, rounds: &mut Rounds, key: usize) -> io::Result<Request> {
    let Some(Conn {
        stream,
        request: Some(buf),
    }) = conns.get_mut(key)
    else {
        return Ok(Request::Incomplete);
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < REQUEST_BYTES_MAX => {
            return Ok(Request::Incomplete)
        }
        _ => return Ok(Request::Bad),
    };
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    match request.method {
        Some("GET") => {
            let Some(websocket_key) = header("sec-websocket-key") else {
                return Ok(Request::Bad);
            };
            write_all_blocking(stream, &response_101(&websocket_key, None, None))?;
            if let Some(conn) = conns.get_mut(key) {
                conn.request = None;
            }
            Ok(Request::Upgraded)
        }
        Some("POST") => {
            let body_len: usize = match header("content-length").map(|v| v.parse()) {
                Some(Ok(len)) => len,
                _ => return Ok(Request::Bad),
            };
            if buf.len() < head_len + body_len {
                return Ok(Request::Incomplete);
            }
            let body: Vec<u8> = buf.drain(..head_len + body_len).skip(head_len).collect();
            write_all_blocking(stream, PUBLISH_RESPONSE)?;
            let frame = frame_for(&body, rounds.frame_bytes);
            round(conns, rounds, &frame);
            Ok(Request::Published)
        }
        _ => Ok(Request::Bad),
    }
}

/// The publication's body as one text frame of `frame_bytes` (header
/// included), padded with spaces.
fn frame_for(body: &[u8], frame_bytes: usize) -> Vec<u8> {
    let mut payload = body.to_vec();
    // Header: 2 bytes up to 125 payload bytes, 4 up to 65,535.
    let header_len = if frame_bytes <= 2 + 125 { 2 } else { 4 };
    let padded = frame_bytes.saturating_sub(header_len);
    if payload.len() < padded {
        payload.resize(padded, b' ');
    }
    encode_frame(OpCode::Text, &payload, None).to_vec()
}

/// The floor itself: `frame` to every subscriber, one send each, timed.
fn round(conns: &mut Slab<Conn>, rounds: &mut Rounds, frame: &[u8]) {
    let mut failed = Vec::new();
    let mut sent = 0u64;
    let mut blocked = 0u64;
    let started = Instant::now();
    for (key, conn) in conns.iter_mut() {
        if conn.request.is_none() {
            match write_all_blocking(&mut conn.stream, frame) {
                Ok(false) => sent += 1,
                Ok(true) => {
                    sent += 1;
                    blocked += 1;
                }
                Err(_) => failed.push(key),
            }
        }
    }
    let elapsed = started.elapsed();
    rounds.record(elapsed, sent, blocked, failed.len() as u64);
    for key in failed {
        // Closing the socket deregisters it from epoll.
        conns.remove(key);
    }
}

/// Writes all of `bytes`; a socket that would block is switched to
/// blocking for the rest. Returns whether it had to block.
fn write_all_blocking(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<bool> {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(bytes.get(written..).unwrap_or_default()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                stream.set_nonblocking(false)?;
                let result = stream.write_all(bytes.get(written..).unwrap_or_default());
                stream.set_nonblocking(true)?;
                result?;
                return Ok(true);
            }
            Err(error) => return Err(error),
        }
    }
    Ok(false)
}

fn drop_conn(poll: &Poll, conns: &mut Slab<Conn>, key: usize) -> io::Result<()> {
    if let Some(conn) = conns.try_remove(key) {
        poll.registry()
            .deregister(&mut SourceFd(&conn.stream.as_raw_fd()))?;
    }
    Ok(())
}

impl Rounds {
    fn new(frame_bytes: usize) -> anyhow::Result<Rounds> {
        Ok(Rounds {
            frame_bytes,
            round_ns: Histogram::new_with_bounds(1, HISTOGRAM_NS_MAX, 3)?,
            per_socket_ns: Histogram::new_with_bounds(1, HISTOGRAM_NS_MAX, 3)?,
            rounds: 0,
            sends: 0,
            sends_blocked: 0,
            send_errors: 0,
            subscribers_min: None,
            subscribers_max: 0,
            round_ns_total: 0,
        })
    }

    fn record(&mut self, elapsed: Duration, sent: u64, blocked: u64, errors: u64) {
        self.sends_blocked += blocked;
        self.send_errors += errors;
        if sent == 0 {
            return;
        }
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.round_ns.saturating_record(ns.max(1));
        self.per_socket_ns.saturating_record((ns / sent).max(1));
        self.rounds += 1;
        self.sends += sent;
        self.round_ns_total += elapsed.as_nanos();
        let subscribers = sent as usize;
        self.subscribers_min = Some(
            self.subscribers_min
                .map_or(subscribers, |m| m.min(subscribers)),
        );
        self.subscribers_max = self.subscribers_max.max(subscribers);
    }

    fn to_json(&self) -> serde_json::Value {
        let quantiles = |h: &Histogram<u64>| {
            serde_json::json!({
                "p50": h.value_at_quantile(0.50),
                "p90": h.value_at_quantile(0.90),
                "p99": h.value_at_quantile(0.99),
                "p999": h.value_at_quantile(0.999),
                "max": h.max(),
                "mean": h.mean().round() as u64,
            })
        };
        serde_json::json!({
            "tool": "kernel_floor",
            "frame_bytes": self.frame_bytes,
            "rounds": self.rounds,
            "sends": self.sends,
            "sends_blocked": self.sends_blocked,
            "send_errors": self.send_errors,
            "subscribers_min": self.subscribers_min.unwrap_or(0),
            "subscribers_max": self.subscribers_max,
            // One round: the loop over every subscriber, start to end.
            "round_ns": quantiles(&self.round_ns),
            // One round's time over the subscribers it wrote to.
            "per_socket_ns": quantiles(&self.per_socket_ns),
            // All rounds' time over all sends.
            "send_ns_mean": if self.sends == 0 { 0 } else { (self.round_ns_total / u128::from(self.sends)) as u64 },
        })
    }

    fn write(&self, path: Option<&std::path::Path>) -> anyhow::Result<()> {
        if let Some(path) = path {
            let text = serde_json::to_string_pretty(&self.to_json())?;
            std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_padded_to_the_size_asked_and_still_parse() {
        let body = br#"{"seq":7,"t_us":1764961234567890}"#;
        let frame = frame_for(body, 64);
        assert_eq!(frame.len(), 64);
        assert_eq!(frame[0], 0x81, "FIN + text");
        assert_eq!(usize::from(frame[1]), 62, "unmasked, 62 payload bytes");
        let value: serde_json::Value = serde_json::from_slice(&frame[2..]).unwrap();
        assert_eq!(value["seq"], 7);
        // Larger frames take the 16-bit length; a body longer than the
        // size asked is sent whole.
        assert_eq!(frame_for(body, 200).len(), 200);
        assert_eq!(frame_for(body, 10).len(), 2 + body.len());
    }
}
