//! One worker process: a single thread running a `mio` poll loop over its
//! share of the connections.
//!
//! Why mio (epoll) and not glommio for this cut: the engine runs on monoio
//! (io_uring). A load generator on a different runtime and a different
//! kernel interface means a runtime bug (lost wakeup, mishandled partial
//! write, stalled completion queue) cannot hide on both sides of the
//! measurement at once. epoll readiness also makes the client easy to read
//! and debug. A glommio (io_uring) client is the planned next step, for
//! connection and message rates where epoll's per-event syscalls become the
//! load generator's bottleneck rather than the engine's.
//!
//! A worker never holds more than `SOCKETS_PER_WORKER_MAX` sockets; the
//! parent splits larger runs over more workers. It writes one JSON progress
//! line per second and one final result line to stdout, and stops by itself
//! (scenario done, hard deadline) or when its stdin closes (the parent's
//! stop signal).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use crate::cli::{IpRange, Scenario, Target, WorkerArgs, SOCKETS_PER_WORKER_MAX};
use crate::client::{io_kind, ClientSettings, Conn, InboxState, Next, Phase};
use crate::stats::{
    self, count_error, ErrorCounts, ErrorKind, Progress, RecoveryCounts, WorkerLine, WorkerResult,
};

const STDIN_TOKEN: Token = Token(usize::MAX);
const EVENTS_CAPACITY: usize = 1024;
/// At most this many connects per loop turn, so a late loop cannot burst.
const OPENS_PER_TURN_MAX: usize = 256;
const POLL_TIMEOUT_MAX: Duration = Duration::from_millis(10);
const TIMEOUT_SCAN_INTERVAL: Duration = Duration::from_millis(100);
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// How long to wait for close handshakes at the end.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Token lifetime: longer than any bounded run.
const TOKEN_LIFETIME_S: u64 = 24 * 3600;

/// Everything a worker counts.
pub struct Tally {
    pub attempted: u64,
    pub open: u64,
    pub connected: u64,
    pub subscribed: u64,
    pub received: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub errors: ErrorCounts,
    pub connect_hist: Histogram<u64>,
    pub push_hist: Histogram<u64>,
    /// reconnect: see `stats::RecoveryCounts`.
    pub dropped: u64,
    pub reconnected: u64,
    pub recovered_true: u64,
    pub recovered_false: u64,
    pub replayed: u64,
    pub gaps: u64,
    pub recovery_hist: Histogram<u64>,
}

/// reconnect: a dropped connection waiting for its reconnect time.
struct PendingReconnect {
    due: Instant,
    slot: usize,
    inbox: InboxState,
}

/// xorshift64*: masks and keys need to be unpredictable to nobody, only
/// varied and reproducible from the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_le_bytes()
    }

    pub fn bytes16(&mut self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        out[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        out
    }
}

pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Run one worker to completion; the result line is written to stdout.
pub fn run(args: &WorkerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.connections <= SOCKETS_PER_WORKER_MAX,
        "worker {} was given {} connections; the limit is {SOCKETS_PER_WORKER_MAX} sockets per \
         worker process: pass more --workers",
        args.worker_idx,
        args.connections
    );
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    let target = Target::parse(&args.target).map_err(anyhow::Error::msg)?;
    let source_ips = IpRange::parse(&args.source_ips).map_err(anyhow::Error::msg)?;
    let key = jsonwebtoken::EncodingKey::from_secret(args.secret.as_bytes());
    let settings = ClientSettings {
        channel: (args.scenario == Scenario::Fanout).then(|| args.channel.clone()),
        publications: args.publications,
        inbox: args.scenario == Scenario::Reconnect,
    };
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.drop_share),
        "--drop-share must be within 0..=1"
    );
    let connect_timeout = Duration::from_secs(args.connect_timeout_s);
    let deadline_at = Instant::now() + Duration::from_secs(args.deadline_s);

    let mut poll = Poll::new()?;
    let stdin_fd = io::stdin().as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&stdin_fd), STDIN_TOKEN, Interest::READABLE)?;
    let mut events = Events::with_capacity(EVENTS_CAPACITY);
    let mut rng = Rng::new(args.seed ^ (u64::from(args.worker_idx) << 32));
    let mut conns: Vec<Option<Conn>> = Vec::with_capacity(args.connections as usize);
    let mut tally = Tally {
        attempted: 0,
        open: 0,
        connected: 0,
        subscribed: 0,
        received: 0,
        duplicated: 0,
        out_of_order: 0,
        errors: ErrorCounts::new(),
        connect_hist: stats::new_histogram(),
        push_hist: stats::new_histogram(),
        dropped: 0,
        reconnected: 0,
        recovered_true: 0,
        recovered_false: 0,
        replayed: 0,
        gaps: 0,
        recovery_hist: stats::new_histogram(),
    };
    let mut drop_requested = false;
    let mut drop_done = false;
    let mut pending: Vec<PendingReconnect> = Vec::new();

    let started = Instant::now();
    let interval_s = 1.0 / args.rate;
    let mut progress_at = started + PROGRESS_INTERVAL;
    let mut timeout_scan_at = started;
    let mut all_settled_at: Option<Instant> = None;
    let mut closing_since: Option<Instant> = None;
    let mut stop_requested = false;

    loop {
        let now = Instant::now();
        if now >= deadline_at {
            stop_requested = true;
        }
        // Open the connections whose scheduled time has come.
        let mut opened = 0;
        while closing_since.is_none()
            && (tally.attempted as u32) < args.connections
            && opened < OPENS_PER_TURN_MAX
        {
            let due = started + Duration::from_secs_f64(tally.attempted as f64 * interval_s);
            if due > now {
                break;
            }
            let idx = tally.attempted as u32;
            tally.attempted += 1;
            opened += 1;
            let conn = open_conn(
                args,
                &target,
                &source_ips,
                &key,
                &mut rng,
                idx,
                None,
                &mut tally,
            )?;
            let Some(mut conn) = conn else {
                conns.push(None);
                continue;
            };
            poll.registry().register(
                &mut conn.stream,
                Token(conns.len()),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            conns.push(Some(conn));
        }

        // reconnect: drop a share of the connections once the parent says so.
        if drop_requested && !drop_done && closing_since.is_none() {
            drop_done = true;
            let mut open: Vec<usize> = (0..conns.len())
                .filter(|&slot| {
                    conns[slot]
                        .as_ref()
                        .is_some_and(|conn| conn.phase == Phase::Open)
                })
                .collect();
            let wanted = (args.drop_share * f64::from(args.connections)).round() as usize;
            let count = wanted.min(open.len());
            // Partial Fisher-Yates: the first `count` are a seeded sample.
            for idx in 0..count {
                let pick = idx + (rng.next_u64() % (open.len() - idx) as u64) as usize;
                open.swap(idx, pick);
            }
            for &slot in &open[..count] {
                let Some(mut conn) = conns[slot].take() else {
                    continue;
                };
                poll.registry().deregister(&mut conn.stream)?;
                tally.open = tally.open.saturating_sub(1);
                tally.dropped += 1;
                let delay_ms = rng.next_u64() % (args.reconnect_delay_ms + 1);
                pending.push(PendingReconnect {
                    due: now + Duration::from_millis(delay_ms),
                    slot,
                    inbox: std::mem::take(&mut conn.inbox),
                });
                // Dropping the socket closes it: no close frame.
                drop(conn);
            }
        }
        // reconnect: reopen the dropped connections whose delay is over.
        let mut idx = 0;
        while idx < pending.len() && closing_since.is_none() {
            if pending[idx].due > now {
                idx += 1;
                continue;
            }
            let due = pending.swap_remove(idx);
            let conn = open_conn(
                args,
                &target,
                &source_ips,
                &key,
                &mut rng,
                due.slot as u32,
                Some(&due.inbox),
                &mut tally,
            )?;
            if let Some(mut conn) = conn {
                conn.inbox = due.inbox;
                conn.recovering = true;
                poll.registry().register(
                    &mut conn.stream,
                    Token(due.slot),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                conns[due.slot] = Some(conn);
            }
        }

        let wait = if (tally.attempted as u32) < args.connections && closing_since.is_none() {
            let due = started + Duration::from_secs_f64(tally.attempted as f64 * interval_s);
            due.saturating_duration_since(now).min(POLL_TIMEOUT_MAX)
        } else {
            POLL_TIMEOUT_MAX
        };
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error.into()),
        }
        let now = Instant::now();
        for event in events.iter() {
            if event.token() == STDIN_TOKEN {
                // EOF is the stop signal; a `d` (reconnect) the drop signal.
                let mut scratch = [0u8; 64];
                match io::stdin().read(&mut scratch) {
                    Ok(0) | Err(_) => {
                        stop_requested = true;
                        poll.registry().deregister(&mut SourceFd(&stdin_fd))?;
                    }
                    Ok(n) => drop_requested |= scratch[..n].contains(&b'd'),
                }
                continue;
            }
            let slot = event.token().0;
            let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if conn.on_ready(&mut tally, &settings, &mut rng, now) == Next::Drop {
                drop_conn(&poll, &mut conns, slot)?;
            }
        }

        if now >= timeout_scan_at {
            timeout_scan_at = now + TIMEOUT_SCAN_INTERVAL;
            for slot in 0..conns.len() {
                let Some(conn) = conns[slot].as_mut() else {
                    continue;
                };
                let waiting = match conn.phase {
                    Phase::TcpConnecting | Phase::Upgrading | Phase::AwaitConnect => true,
                    Phase::Open => {
                        (settings.channel.is_some() && !conn.subscribed) || conn.recovering
                    }
                    Phase::Closing | Phase::Done => false,
                };
                if waiting
                    && now.saturating_duration_since(conn.started) > connect_timeout
                    && conn.time_out(&mut tally) == Next::Drop
                {
                    drop_conn(&poll, &mut conns, slot)?;
                }
            }
            // Settled: every connection scheduled, none still connecting
            // (nor, in fanout, waiting for its subscribe reply). Checked here,
            // not every turn: it walks all connections.
            let all_attempted = tally.attempted as u32 == args.connections;
            let settled = all_attempted
                && conns.iter().flatten().all(|conn| match conn.phase {
                    Phase::TcpConnecting | Phase::Upgrading | Phase::AwaitConnect => false,
                    Phase::Open => {
                        (settings.channel.is_none() || conn.subscribed) && !conn.recovering
                    }
                    Phase::Closing | Phase::Done => true,
                });
            if settled && all_settled_at.is_none() {
                all_settled_at = Some(now);
            }
        }

        // Scenario progress: connect holds after everyone settled, then closes.
        let hold_done = args.scenario == Scenario::Connect
            && all_settled_at.is_some_and(|at| {
                now.saturating_duration_since(at) >= Duration::from_secs(args.hold_s)
            });
        if (hold_done || stop_requested) && closing_since.is_none() {
            closing_since = Some(now);
            for slot in 0..conns.len() {
                let Some(conn) = conns[slot].as_mut() else {
                    continue;
                };
                if conn.close(&mut tally, &mut rng) == Next::Drop {
                    drop_conn(&poll, &mut conns, slot)?;
                }
            }
        }
        if let Some(since) = closing_since {
            let remaining = conns.iter().flatten().count();
            if remaining == 0 || now.saturating_duration_since(since) >= CLOSE_GRACE {
                break;
            }
        }

        if now >= progress_at {
            progress_at += PROGRESS_INTERVAL;
            let p99_us = match args.scenario {
                Scenario::Connect => tally.connect_hist.value_at_quantile(0.99),
                Scenario::Fanout | Scenario::Reconnect => tally.push_hist.value_at_quantile(0.99),
            };
            emit(&WorkerLine::Progress(Progress {
                worker_idx: args.worker_idx,
                elapsed_ms: now.saturating_duration_since(started).as_millis() as u64,
                open: tally.open,
                subscribed: tally.subscribed,
                received: tally.received,
                p99_us,
                errors: tally.errors.values().sum(),
            }))?;
        }
    }

    emit(&WorkerLine::Result(WorkerResult {
        worker_idx: args.worker_idx,
        attempted: tally.attempted,
        connected: tally.connected,
        subscribed: tally.subscribed,
        received: tally.received,
        duplicated: tally.duplicated,
        out_of_order: tally.out_of_order,
        errors: tally.errors.clone(),
        connect_hist: stats::encode_histogram(&tally.connect_hist),
        push_hist: stats::encode_histogram(&tally.push_hist),
        elapsed_ms: started.elapsed().as_millis() as u64,
        recovery: RecoveryCounts {
            dropped: tally.dropped,
            reconnected: tally.reconnected,
            recovered_true: tally.recovered_true,
            recovered_false: tally.recovered_false,
            replayed: tally.replayed,
            gaps: tally.gaps,
            recovery_hist: stats::encode_histogram(&tally.recovery_hist),
        },
    }))?;
    Ok(())
}

/// Open connection `idx` of this worker (TCP connect started, upgrade
/// queued). `inbox`: a reconnect, asking for recovery from that position.
/// A socket that cannot be opened is counted and gives `None`.
#[expect(
    clippy::too_many_arguments,
    reason = "the worker loop's locals, passed apart rather than through a one-use struct"
)]
fn open_conn(
    args: &WorkerArgs,
    target: &Target,
    source_ips: &IpRange,
    key: &jsonwebtoken::EncodingKey,
    rng: &mut Rng,
    idx: u32,
    inbox: Option<&InboxState>,
    tally: &mut Tally,
) -> anyhow::Result<Option<Conn>> {
    let src = source_ips.nth(idx % source_ips.len());
    let conn_started = Instant::now();
    let stream = match open_socket(src, target.addr) {
        Ok(stream) => stream,
        Err(error) => {
            count_error(
                &mut tally.errors,
                ErrorKind::ConnectRefused,
                &io_kind(&error),
            );
            return Ok(None);
        }
    };
    let user = match args.scenario {
        Scenario::Reconnect => format!("rc-{}-{idx}", args.worker_idx),
        Scenario::Connect | Scenario::Fanout => format!("lg{}-{idx}", args.worker_idx),
    };
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": user, "exp": unix_us() / 1_000_000 + TOKEN_LIFETIME_S}),
        key,
    )?;
    let mut path = format!(
        "{}{}token={token}",
        target.path,
        if target.path.contains('?') { '&' } else { '?' }
    );
    if let Some(inbox) = inbox {
        path.push_str(&format!("&since={}", inbox.last_offset.unwrap_or(0)));
        if let Some(epoch) = &inbox.epoch {
            path.push_str(&format!("&epoch={epoch}"));
        }
    }
    Ok(Some(Conn::new(
        stream,
        conn_started,
        &target.host,
        &path,
        rng,
        args.publications,
    )))
}

fn drop_conn(poll: &Poll, conns: &mut [Option<Conn>], slot: usize) -> io::Result<()> {
    if let Some(mut conn) = conns[slot].take() {
        poll.registry().deregister(&mut conn.stream)?;
    }
    Ok(())
}

fn emit(line: &WorkerLine) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    serde_json::to_writer(&mut stdout, line)?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}

/// A non-blocking TCP socket bound to `src` (port chosen at connect time)
/// with its connect to `target` in progress.
fn open_socket(src: Ipv4Addr, target: SocketAddr) -> io::Result<mio::net::TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    crate::sys::set_bind_address_no_port(&socket)?;
    socket.bind(&SocketAddr::new(src.into(), 0).into())?;
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(error) => return Err(error),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}
