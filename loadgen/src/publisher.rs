//! fanout's publisher: POSTs one publication per tick on a fixed schedule
//! over one keep-alive HTTP/1.1 connection (blocking, on its own thread,
//! with ureq: one request in flight at a time needs no runtime).
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

use std::net::SocketAddr;
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
    let agent = http_agent();
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
        match post(&agent, &plan.target.url.host, &request) {
            Ok(200..=299) => {
                outcome.published += 1;
                outcome.published_by_channel[channel_idx as usize] += 1;
            }
            other => {
                outcome.failed += 1;
                count_failure(&mut outcome.errors, "publish", other);
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
    let agent = http_agent();
    let api = plan.api.to_string();
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
            match post(&agent, &api, &request) {
                Ok(200) => {
                    outcome.sent += 1;
                    outcome.expected += users.len() as u64;
                }
                other => {
                    outcome.failed += 1;
                    count_failure(&mut outcome.errors, "send", other);
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

/// Counts a request that got no 200: by its status, or by the kind of
/// failure (ureq drops a failed connection, so the next request opens a new
/// one).
fn count_failure(errors: &mut ErrorCounts, what: &str, result: Result<u16, ureq::Error>) {
    match result {
        Ok(status) => count_error(
            errors,
            ErrorKind::HandshakeStatus,
            &format!("{what}_{status}"),
        ),
        Err(error) => {
            let timed_out = match &error {
                ureq::Error::Timeout(_) => true,
                ureq::Error::Io(io) => matches!(
                    io.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ),
                _ => false,
            };
            let kind = if timed_out {
                ErrorKind::Timeout
            } else {
                ErrorKind::ConnectRefused
            };
            count_error(errors, kind, what);
        }
    }
}

/// The publisher's HTTP client: ureq keeps the connection alive between
/// requests (one idle connection is all a one-at-a-time publisher needs),
/// and every status is an answer to count, not an error.
fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(IO_TIMEOUT))
        .max_idle_connections_per_host(1)
        .build()
        .into()
}

/// POSTs `request` to `host` (`ip:port`) and reads the answer whole, so the
/// connection goes back to the pool for the next request.
fn post(agent: &ureq::Agent, host: &str, request: &HttpRequest) -> Result<u16, ureq::Error> {
    let mut builder = agent.post(format!("http://{host}{}", request.path));
    for (name, value) in &request.headers {
        builder = builder.header(*name, value);
    }
    let mut response = builder.send(request.body.as_str())?;
    response.body_mut().read_to_vec()?;
    Ok(response.status().as_u16())
}
