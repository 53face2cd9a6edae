//! fanout's publisher: POSTs one publication per tick on a fixed schedule
//! over one keep-alive HTTP/1.1 connection (blocking, on its own thread).
//! What the request looks like (Ringcast's `/api/publish`, a raw body, a
//! GRIP item, a signed Pusher event) is the profile's (`profile.rs`); any
//! 2xx answer counts as published.
//!
//! Two paces: a fixed rate, or closed loop (`--rate=0`: as fast as the
//! target takes, a window of publications ahead of the deliveries).
//!
//! No coordinated omission: publication `i` is due at `t0 + i / rate`, and
//! its payload carries that *intended* time. When the API is slow the
//! publisher falls behind and sends late, and the subscribers' latency
//! includes the lateness, as a real backend's would.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::profile::{HttpRequest, PublishTarget};
use crate::stats::{count_error, ErrorCounts, ErrorKind};
use crate::worker::unix_us;

const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Closed loop: how often the publisher looks at the deliveries while its
/// window is full (the workers report every `worker::PROGRESS_INTERVAL`).
const WINDOW_POLL: Duration = Duration::from_micros(200);

pub struct PublishPlan {
    pub target: PublishTarget,
    /// The base channel; publication `k` goes to
    /// `fanout_channel(channel, channels, k)`.
    pub channel: String,
    pub channels: u32,
    pub pace: Pace,
    pub publications: u64,
}

/// How the publisher paces itself.
pub enum Pace {
    /// Publication `i` is due at `t0 + i / rate`.
    Fixed { rate: f64 },
    /// As fast as the target takes: publish while fewer than `window`
    /// publications are undelivered on average (`delivered` is the
    /// subscribers' summed deliveries, kept current by the parent;
    /// `subscribers` the recipients of one publication), for at most
    /// `limit`.
    Closed {
        window: u64,
        subscribers: u64,
        delivered: Arc<AtomicU64>,
        limit: Duration,
    },
}

#[derive(Debug, Default)]
pub struct PublishOutcome {
    pub published: u64,
    /// Accepted publications per channel index.
    pub published_by_channel: Vec<u64>,
    pub failed: u64,
    pub errors: ErrorCounts,
}

pub fn run(plan: &PublishPlan) -> PublishOutcome {
    let channels = plan.channels.max(1);
    let mut outcome = PublishOutcome {
        published_by_channel: vec![0; channels as usize],
        ..PublishOutcome::default()
    };
    let mut conn: Option<(BufReader<TcpStream>, TcpStream)> = None;
    let started = Instant::now();
    let started_unix_us = unix_us();
    for seq in 0..plan.publications {
        let channel_idx = (seq % u64::from(channels)) as u32;
        let channel = crate::cli::fanout_channel(&plan.channel, channels, channel_idx);
        let intended_us = match &plan.pace {
            Pace::Fixed { rate } => {
                assert!(*rate > 0.0);
                wait_for_tick(started, started_unix_us, seq, *rate)
            }
            Pace::Closed {
                window,
                subscribers,
                delivered,
                limit,
            } => {
                // Wait for the window: accepted publications x recipients
                // minus deliveries, in publications.
                let mut in_time = true;
                while outcome.published * subscribers
                    >= delivered.load(Ordering::Relaxed) + window * subscribers
                {
                    if started.elapsed() >= *limit {
                        in_time = false;
                        break;
                    }
                    std::thread::sleep(WINDOW_POLL);
                }
                if !in_time || started.elapsed() >= *limit {
                    break;
                }
                // No schedule: latency counts from the actual send.
                unix_us()
            }
        };
        let payload = format!(r#"{{"seq":{seq},"t_us":{intended_us}}}"#);
        let request = plan
            .target
            .request(&channel, &payload, unix_us() / 1_000_000);
        let url = &plan.target.url;
        match post(&mut conn, url.addr, &url.host, &request) {
            Ok(200..=299) => {
                outcome.published += 1;
                outcome.published_by_channel[channel_idx as usize] += 1;
            }
            other => {
                outcome.failed += 1;
                count_failure(&mut outcome.errors, &mut conn, "publish", other);
            }
        }
    }
    outcome
}

/// reconnect's sender: one `POST /api/send` per worker per tick, to every
/// user of that worker, tick `k` due at `t0 + k / rate`, payload
/// `{"seq": k, "t": <intended unix microseconds>}`.
pub struct SendPlan {
    pub api: SocketAddr,
    pub api_key: String,
    /// Users per worker.
    pub users: Vec<Vec<String>>,
    pub rate: f64,
    pub ticks: u64,
}

#[derive(Debug, Default)]
pub struct SendOutcome {
    /// Requests answered with 200.
    pub sent: u64,
    pub failed: u64,
    /// Messages expected: the users of every request answered with 200.
    pub expected: u64,
    pub errors: ErrorCounts,
}

pub fn run_send(plan: &SendPlan) -> SendOutcome {
    assert!(plan.rate > 0.0);
    let mut outcome = SendOutcome::default();
    let mut conn: Option<(BufReader<TcpStream>, TcpStream)> = None;
    let started = Instant::now();
    let started_unix_us = unix_us();
    for seq in 0..plan.ticks {
        let intended_us = wait_for_tick(started, started_unix_us, seq, plan.rate);
        for users in &plan.users {
            if users.is_empty() {
                continue;
            }
            let body = serde_json::json!({
                "users": users,
                "data": {"seq": seq, "t": intended_us},
            })
            .to_string();
            let request = HttpRequest {
                path: "/api/send".to_owned(),
                headers: vec![
                    ("Authorization", format!("apikey {}", plan.api_key)),
                    ("Content-Type", "application/json".to_owned()),
                ],
                body,
            };
            match post(&mut conn, plan.api, &plan.api.to_string(), &request) {
                Ok(200) => {
                    outcome.sent += 1;
                    outcome.expected += users.len() as u64;
                }
                other => {
                    outcome.failed += 1;
                    count_failure(&mut outcome.errors, &mut conn, "send", other);
                }
            }
        }
    }
    outcome
}

/// Sleeps until tick `seq` of a fixed schedule at `rate` per second and
/// returns its intended send time (unix µs): latency is measured from the
/// schedule, so a stall shows up as latency, not as a lower rate.
fn wait_for_tick(started: Instant, started_unix_us: u64, seq: u64, rate: f64) -> u64 {
    let offset = Duration::from_secs_f64(seq as f64 / rate);
    let due = started + offset;
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
    started_unix_us + offset.as_micros() as u64
}

/// Counts a request that got no 200: by its status, or by the kind of I/O
/// error, dropping the connection so the next request opens a new one.
fn count_failure(
    errors: &mut ErrorCounts,
    conn: &mut Option<(BufReader<TcpStream>, TcpStream)>,
    what: &str,
    result: io::Result<u16>,
) {
    match result {
        Ok(status) => count_error(
            errors,
            ErrorKind::HandshakeStatus,
            &format!("{what}_{status}"),
        ),
        Err(error) => {
            *conn = None;
            let kind = if matches!(
                error.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) {
                ErrorKind::Timeout
            } else {
                ErrorKind::ConnectRefused
            };
            count_error(errors, kind, what);
        }
    }
}

fn post(
    conn: &mut Option<(BufReader<TcpStream>, TcpStream)>,
    addr: SocketAddr,
    host: &str,
    request: &HttpRequest,
) -> io::Result<u16> {
    if conn.is_none() {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        *conn = Some((BufReader::new(stream.try_clone()?), stream));
    }
    let (reader, writer) = conn.as_mut().expect("connected above");
    let mut head = format!("POST {} HTTP/1.1\r\nHost: {host}\r\n", request.path);
    for (name, value) in &request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\n\r\n{}",
        request.body.len(),
        request.body
    ));
    writer.write_all(head.as_bytes())?;
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "API closed the connection",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {line:?}"),
            )
        })?;
    let mut content_len = 0usize;
    let mut chunked = false;
    let mut close = false;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "API closed mid-headers",
            ));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_len = value.trim().parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            } else if name.eq_ignore_ascii_case("connection")
                && value.trim().eq_ignore_ascii_case("close")
            {
                close = true;
            }
        }
    }
    if chunked {
        skip_chunked_body(reader, &mut line)?;
    } else {
        let mut body = vec![0u8; content_len];
        reader.read_exact(&mut body)?;
    }
    if close {
        *conn = None;
    }
    Ok(status)
}

/// Reads past a `Transfer-Encoding: chunked` body (other servers' APIs
/// answer that way), so the keep-alive connection stays usable.
fn skip_chunked_body(reader: &mut BufReader<TcpStream>, line: &mut String) -> io::Result<()> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    loop {
        line.clear();
        if reader.read_line(line)? == 0 {
            return Err(bad("closed inside a chunked body"));
        }
        let size_text = line.trim_end().split(';').next().unwrap_or_default();
        let size =
            usize::from_str_radix(size_text.trim(), 16).map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if reader.read_line(line)? == 0 || line.trim_end().is_empty() {
                    return Ok(());
                }
            }
        }
        let mut chunk = vec![0u8; size + 2];
        reader.read_exact(&mut chunk)?;
    }
}
