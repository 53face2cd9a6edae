//! One worker process: a single thread, pinned to a core when the host has
//! one per worker, running one event loop over its share of the
//! connections.
//!
//! The loop's events come from io_uring (the default) or epoll
//! (`--driver`), see `poller.rs`. Not glommio or another async runtime: the
//! engine runs on monoio, and a load generator on a runtime of its own (a
//! plain loop over `ringcast-protocol`'s codec) keeps one runtime's bug (a
//! lost wakeup, a mishandled partial write, a stalled completion queue) from
//! hiding on both sides of a measurement. A hand-written loop also keeps the
//! per-connection state to a `Session` and a socket: no task, no future, no
//! per-connection buffer while idle. glommio would add a task and its
//! stream's state per connection, and its `connect` creates its own socket,
//! so a socket bound to a source address first connects outside it anyway.
//!
//! A worker never holds more than `SOCKETS_PER_WORKER_MAX` sockets; the
//! parent splits larger runs over more workers. It writes a JSON progress
//! line every `PROGRESS_INTERVAL` and one final result line to stdout, and
//! stops by itself
//! (scenario done, hard deadline) or when its stdin closes (the parent's
//! stop signal).

use std::io::{self, IsTerminal as _, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::ops::{Deref, DerefMut};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use socket2::{Domain, Protocol, Socket, Type};

use crate::chat::{ChatPlan, ImGroups, ImKind, Role, SeqVerdict, CHAT_ID_FIRST};
use crate::cli::{IpRange, Scenario, Target, WorkerArgs, SOCKETS_PER_WORKER_MAX};
use crate::client::{
    io_kind, ChatMessage, ClientSettings, ImChat, InboxState, Join, Next, Phase, Session,
};
use crate::poller::Poller;
use crate::profile::ImTarget;
use crate::stats::{
    self, count_error, ChatCounts, ErrorCounts, ErrorKind, KindCounts, KindResult, Progress,
    RecoveryCounts, WorkerLine, WorkerResult,
};

const STDIN_TOKEN: usize = usize::MAX;
/// Bytes read per `recv`; reads repeat until the socket is drained.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// At most this many connects per loop turn, so a late loop cannot burst.
const OPENS_PER_TURN_MAX: usize = 256;
/// chat: at most this many messages written per loop turn.
const SENDS_PER_TURN_MAX: usize = 1024;
const POLL_TIMEOUT_MAX: Duration = Duration::from_millis(10);
const TIMEOUT_SCAN_INTERVAL: Duration = Duration::from_millis(100);
/// Progress lines: often, because fanout's closed loop paces the publisher
/// on the deliveries they report; the p99 in them is refreshed once a
/// second (`P99_INTERVAL`), it walks the histogram.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(20);
const P99_INTERVAL: Duration = Duration::from_secs(1);
/// How long to wait for close handshakes at the end.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Token lifetime: longer than any bounded run.
const TOKEN_LIFETIME_S: u64 = 24 * 3600;

/// One connection: its socket (non-blocking) and its protocol state.
pub struct Conn {
    pub stream: TcpStream,
    session: Session,
}

impl Deref for Conn {
    type Target = Session;

    fn deref(&self) -> &Session {
        &self.session
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Session {
        &mut self.session
    }
}

impl Conn {
    /// Handle one readiness event: finish the TCP connect, write what is
    /// queued, read until the socket is drained, write the answers.
    fn on_ready(
        &mut self,
        tally: &mut Tally,
        settings: &ClientSettings,
        rng: &mut Rng,
        now: Instant,
    ) -> Next {
        if self.session.phase == Phase::TcpConnecting {
            match self.stream.take_error() {
                Ok(None) => {}
                Ok(Some(error)) | Err(error) => return self.session.fail_connect(tally, &error),
            }
            match self.stream.peer_addr() {
                Ok(_) => {}
                // Spurious wakeup: still connecting.
                Err(error) if error.kind() == io::ErrorKind::NotConnected => return Next::Keep,
                Err(error) => return self.session.fail_connect(tally, &error),
            }
            self.session.tcp_connected();
        }
        if self.flush(tally) == Next::Drop {
            return Next::Drop;
        }
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        loop {
            let next = match self.stream.read(&mut chunk) {
                Ok(0) => self.session.on_eof(tally),
                Ok(n) => self
                    .session
                    .on_bytes(tally, settings, rng, now, &mut chunk[..n]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return self.flush(tally)
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => Next::Keep,
                Err(error) => self.session.fail_io(tally, &error),
            };
            if next == Next::Drop {
                return Next::Drop;
            }
        }
    }

    /// Start a clean close (the end of a run).
    fn close(&mut self, tally: &mut Tally, rng: &mut Rng) -> Next {
        if self.session.close(rng) == Next::Drop {
            return Next::Drop;
        }
        self.flush(tally)
    }

    /// chat: see `Session::send_chat`.
    fn send_chat(
        &mut self,
        tally: &mut Tally,
        rng: &mut Rng,
        message: ChatMessage,
        out: &crate::profile::Outbound,
    ) -> Next {
        if self.session.send_chat(tally, rng, message, out) == Next::Drop {
            return Next::Drop;
        }
        self.flush(tally)
    }

    /// Write as much of the session's output as the socket takes.
    fn flush(&mut self, tally: &mut Tally) -> Next {
        while !self.session.output().is_empty() {
            match self.stream.write(self.session.output()) {
                Ok(0) => {
                    let error = io::Error::from(io::ErrorKind::WriteZero);
                    return self.session.fail_io(tally, &error);
                }
                Ok(n) => self.session.consume_output(n),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return self.session.fail_io(tally, &error),
            }
        }
        Next::Keep
    }
}

/// Everything a worker counts.
pub struct Tally {
    pub attempted: u64,
    pub open: u64,
    /// The most connections open at once.
    pub open_max: u64,
    pub connected: u64,
    pub subscribed: u64,
    /// fanout: subscribed connections per channel index (empty otherwise).
    pub subscribed_by_channel: Vec<u64>,
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
    /// chat: see `stats::ChatCounts`.
    pub sent: u64,
    pub acked: u64,
    pub ack_errors: u64,
    pub expected: u64,
    pub ack_hist: Histogram<u64>,
    pub reads_sent: u64,
    pub reads_acked: u64,
    pub receipts_expected: u64,
    pub receipts: u64,
    /// chat, IM: the same per kind of message (`ImKind::idx`).
    pub im_kinds: [KindTally; 2],
}

/// chat, IM: one kind of message's own figures (DMs, group messages).
pub struct KindTally {
    pub counts: KindCounts,
    pub ack_hist: Histogram<u64>,
    pub push_hist: Histogram<u64>,
}

impl KindTally {
    fn new() -> KindTally {
        KindTally {
            counts: KindCounts::default(),
            ack_hist: stats::new_histogram(),
            push_hist: stats::new_histogram(),
        }
    }

    /// One push of this kind, as `client::count_push` counted it in the
    /// totals (`latency_us` is what it recorded).
    pub fn count(&mut self, verdict: SeqVerdict, latency_us: u64) {
        match verdict {
            SeqVerdict::OutOfRange => {}
            SeqVerdict::Duplicate => self.counts.duplicated += 1,
            SeqVerdict::New { out_of_order } => {
                self.counts.out_of_order += u64::from(out_of_order);
                self.counts.received += 1;
                stats::record(&mut self.push_hist, latency_us);
            }
        }
    }

    fn result(&self) -> KindResult {
        KindResult {
            counts: self.counts,
            ack_hist: stats::encode_histogram(&self.ack_hist),
            push_hist: stats::encode_histogram(&self.push_hist),
        }
    }
}

/// chat: where the worker's send schedule stands once it started.
struct ChatSchedule {
    started: Instant,
    started_unix_us: u64,
    /// The next send of `ChatPlan::due`.
    next: u64,
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
    let targets = Target::parse_list(&args.target).map_err(anyhow::Error::msg)?;
    let source_ips = IpRange::parse(&args.source_ips).map_err(anyhow::Error::msg)?;
    let key = match (&args.secret, args.profile.is_ringcast()) {
        (Some(secret), true) => Some(jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())),
        (None, true) => anyhow::bail!(
            "--profile={} needs the JWT secret (RINGCAST_AUTH_JWT_SECRET)",
            args.profile.name()
        ),
        (_, false) => None,
    };
    let im = (args.scenario == Scenario::Chat && args.im).then_some(ImChat {
        devices: args.devices_per_user.max(1),
        read_every: args.read_every,
    });
    let devices = im.map_or(1, |im| im.devices);
    anyhow::ensure!(
        args.connections.is_multiple_of(2 * devices) || im.is_none(),
        "--im: worker {} was given {} connections, not whole pairs of users with {devices} \
         devices each",
        args.worker_idx,
        args.connections
    );
    let users = args.connections / devices;
    let im_groups = (im.is_some() && args.im_groups > 0).then(|| ImGroups {
        tag: args.im_group_tag.clone(),
        groups: args.im_groups,
        size: args.im_group_size,
        online: args.im_group_online,
        share: args.im_group_share,
    });
    if let Some(groups) = &im_groups {
        anyhow::ensure!(
            groups.online >= 1
                && groups.online <= groups.size
                && groups.groups * groups.online <= users
                && (0.0..=1.0).contains(&groups.share),
            "--im-groups: worker {} has {users} users for {} groups of {} online members (of \
             {}), share {}",
            args.worker_idx,
            groups.groups,
            groups.online,
            groups.size,
            groups.share
        );
    }
    let chat_plan = (args.scenario == Scenario::Chat).then(|| {
        let plan = ChatPlan::new(
            args.worker_idx,
            users,
            args.pair_share.clamp(0.0, 1.0),
            args.group_size.max(1),
            args.group_namespace.clone(),
            args.messages,
            args.send_rate,
        );
        match im_groups {
            Some(groups) => plan.with_im_groups(groups),
            None => plan,
        }
    });
    anyhow::ensure!(
        chat_plan.is_none() || args.send_rate > 0.0,
        "--send-rate must be positive"
    );
    let settings = ClientSettings {
        profile: args.profile,
        publications: args.publications,
        inbox: args.scenario == Scenario::Reconnect,
        chat: chat_plan,
        im,
    };
    let mut chat_schedule: Option<ChatSchedule> = None;
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.drop_share),
        "--drop-share must be within 0..=1"
    );
    let connect_timeout = Duration::from_secs(args.connect_timeout_s);
    let deadline_at = Instant::now() + Duration::from_secs(args.deadline_s);

    if args.pin_cores {
        pin_to_core(args.worker_idx);
    }
    let mut poll = Poller::new(args.driver)?;
    let stdin_fd = io::stdin().as_raw_fd();
    // Non-blocking, read until WouldBlock after each readiness: a signal
    // byte and the EOF behind it may come as one event.
    // A terminal (a worker run by hand) stays blocking: its file description
    // is the shell's too. One read per readiness then.
    let stdin_terminal = io::stdin().is_terminal();
    if !stdin_terminal {
        crate::sys::set_nonblocking(stdin_fd)?;
    }
    poll.register(stdin_fd, STDIN_TOKEN)?;
    let mut stdin_open = true;
    let mut ready: Vec<usize> = Vec::with_capacity(1024);
    let mut rng = Rng::new(args.seed ^ (u64::from(args.worker_idx) << 32));
    let mut conns: Vec<Option<Conn>> = Vec::with_capacity(args.connections as usize);
    let mut tally = Tally {
        attempted: 0,
        open: 0,
        open_max: 0,
        connected: 0,
        subscribed: 0,
        subscribed_by_channel: if args.scenario == Scenario::Fanout {
            vec![0; args.channels.max(1) as usize]
        } else {
            Vec::new()
        },
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
        sent: 0,
        acked: 0,
        ack_errors: 0,
        expected: 0,
        ack_hist: stats::new_histogram(),
        reads_sent: 0,
        reads_acked: 0,
        receipts_expected: 0,
        receipts: 0,
        im_kinds: [KindTally::new(), KindTally::new()],
    };
    let mut drop_requested = false;
    let mut drop_done = false;
    let mut pending: Vec<PendingReconnect> = Vec::new();

    let rss_start_kb = crate::sys::rusage_self()?.max_rss_kb;
    let started = Instant::now();
    let interval_s = 1.0 / args.rate;
    let mut progress_at = started + PROGRESS_INTERVAL;
    let mut p99_at = started;
    let mut p99_us = 0;
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
                &targets,
                &source_ips,
                key.as_ref(),
                &settings,
                &mut rng,
                idx,
                None,
                &mut tally,
            )?;
            let Some(conn) = conn else {
                conns.push(None);
                continue;
            };
            poll.register(conn.stream.as_raw_fd(), conns.len())?;
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
                poll.deregister(conn.stream.as_raw_fd(), slot)?;
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
                &targets,
                &source_ips,
                key.as_ref(),
                &settings,
                &mut rng,
                due.slot as u32,
                Some(&due.inbox),
                &mut tally,
            )?;
            if let Some(mut conn) = conn {
                conn.inbox = due.inbox;
                conn.recovering = true;
                poll.register(conn.stream.as_raw_fd(), due.slot)?;
                conns[due.slot] = Some(conn);
            }
        }

        // chat: write the messages whose time has come.
        let mut chat_next_due = None;
        if let (Some(plan), Some(schedule)) = (&settings.chat, chat_schedule.as_mut()) {
            if closing_since.is_none() {
                chat_next_due = send_due_chat(
                    plan, schedule, &mut conns, &mut poll, &mut tally, &settings, &mut rng, now,
                )?;
            }
        }

        let wait = if (tally.attempted as u32) < args.connections && closing_since.is_none() {
            let due = started + Duration::from_secs_f64(tally.attempted as f64 * interval_s);
            due.saturating_duration_since(now).min(POLL_TIMEOUT_MAX)
        } else {
            POLL_TIMEOUT_MAX
        };
        let wait = chat_next_due.map_or(wait, |due: Instant| {
            wait.min(due.saturating_duration_since(now))
        });
        ready.clear();
        poll.poll(wait, &mut ready)?;
        let now = Instant::now();
        for &token in &ready {
            if token == STDIN_TOKEN {
                // EOF is the stop signal; a `d` (reconnect) the drop signal.
                let mut scratch = [0u8; 64];
                while stdin_open {
                    match io::stdin().read(&mut scratch) {
                        Ok(0) => {
                            stop_requested = true;
                            stdin_open = false;
                            poll.deregister(stdin_fd, STDIN_TOKEN)?;
                        }
                        Ok(n) => {
                            drop_requested |= scratch[..n].contains(&b'd');
                            // chat: an `s` starts the send schedule.
                            if scratch[..n].contains(&b's') && chat_schedule.is_none() {
                                chat_schedule = Some(ChatSchedule {
                                    started: now,
                                    started_unix_us: unix_us(),
                                    next: 0,
                                });
                            }
                            if stdin_terminal {
                                // Blocking: read again only at the next event.
                                break;
                            }
                        }
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                        Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            stop_requested = true;
                            stdin_open = false;
                            poll.deregister(stdin_fd, STDIN_TOKEN)?;
                        }
                    }
                }
                continue;
            }
            let slot = token;
            let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if conn.on_ready(&mut tally, &settings, &mut rng, now) == Next::Drop {
                drop_conn(&mut poll, &mut conns, slot)?;
            }
        }

        if now >= timeout_scan_at {
            timeout_scan_at = now + TIMEOUT_SCAN_INTERVAL;
            for slot in 0..conns.len() {
                let Some(conn) = conns[slot].as_mut() else {
                    continue;
                };
                if !conn.settled()
                    && now.saturating_duration_since(conn.started) > connect_timeout
                    && conn.time_out(&mut tally) == Next::Drop
                {
                    drop_conn(&mut poll, &mut conns, slot)?;
                }
            }
            // Settled: every connection scheduled, none still connecting
            // (nor, in fanout, waiting for its subscribe reply). Checked here,
            // not every turn: it walks all connections.
            let all_attempted = tally.attempted as u32 == args.connections;
            let settled = all_attempted && conns.iter().flatten().all(|conn| conn.settled());
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
                // chat: messages never answered by the end.
                let unacked = conn.unacked();
                if unacked > 0 {
                    *tally.errors.entry("timeout_ack".to_owned()).or_insert(0) += unacked;
                }
                if conn.close(&mut tally, &mut rng) == Next::Drop {
                    drop_conn(&mut poll, &mut conns, slot)?;
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
            progress_at = now + PROGRESS_INTERVAL;
            if now >= p99_at {
                p99_at = now + P99_INTERVAL;
                p99_us = match args.scenario {
                    Scenario::Connect => tally.connect_hist.value_at_quantile(0.99),
                    Scenario::Fanout | Scenario::Reconnect | Scenario::Chat => {
                        tally.push_hist.value_at_quantile(0.99)
                    }
                };
            }
            emit(&WorkerLine::Progress(Progress {
                worker_idx: args.worker_idx,
                elapsed_ms: now.saturating_duration_since(started).as_millis() as u64,
                open: tally.open,
                connected: tally.connected,
                subscribed: tally.subscribed,
                received: tally.received,
                p99_us,
                errors: tally.errors.values().sum(),
                sent: tally.sent,
                replied: tally.acked + tally.ack_errors,
                expected: tally.expected,
            }))?;
        }
    }

    emit(&WorkerLine::Result(Box::new(WorkerResult {
        worker_idx: args.worker_idx,
        attempted: tally.attempted,
        connected: tally.connected,
        subscribed: tally.subscribed,
        subscribed_by_channel: tally.subscribed_by_channel.clone(),
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
        chat: ChatCounts {
            sent: tally.sent,
            acked: tally.acked,
            ack_errors: tally.ack_errors,
            expected: tally.expected,
            ack_hist: stats::encode_histogram(&tally.ack_hist),
            reads_sent: tally.reads_sent,
            reads_acked: tally.reads_acked,
            receipts_expected: tally.receipts_expected,
            receipts: tally.receipts,
            im_kinds: if settings.im.is_some() {
                tally.im_kinds.iter().map(KindTally::result).collect()
            } else {
                Vec::new()
            },
        },
        rusage: crate::sys::rusage_self()?,
        open_max: tally.open_max,
        rss_start_kb,
    })))?;
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
    targets: &[Target],
    source_ips: &IpRange,
    key: Option<&jsonwebtoken::EncodingKey>,
    settings: &ClientSettings,
    rng: &mut Rng,
    idx: u32,
    inbox: Option<&InboxState>,
    tally: &mut Tally,
) -> anyhow::Result<Option<Conn>> {
    // Every source address with the first target, then with the next: each
    // (source, target) pair is its own ephemeral port space.
    let src = source_ips.nth(idx % source_ips.len());
    let target = &targets[(idx / source_ips.len()) as usize % targets.len()];
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
        Scenario::Chat => match &settings.chat {
            Some(plan) => plan.user(idx / devices_of(settings)),
            None => format!("ch-{}-{idx}", args.worker_idx),
        },
    };
    let token = match key {
        Some(key) => Some(jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"sub": user, "exp": unix_us() / 1_000_000 + TOKEN_LIFETIME_S}),
            key,
        )?),
        None => None,
    };
    // fanout: each worker spreads its connections round-robin over the
    // run's channels (exact per-channel counts without coordination).
    let channel_idx = idx % args.channels.max(1);
    let channel = crate::cli::fanout_channel(&args.channel, args.channels, channel_idx);
    let mut path = settings
        .profile
        .connect_path(&target.path, &channel, token.as_deref());
    let join = match (&settings.chat, args.scenario) {
        (Some(plan), _) => match plan.role(idx / devices_of(settings)) {
            Role::Pair { .. } => Join::Inbox,
            Role::Group { group, .. } => Join::Channel(plan.group_channel(group)),
        },
        (None, Scenario::Fanout) => Join::Channel(channel),
        (None, _) => Join::Nothing,
    };
    if let Some(inbox) = inbox {
        path.push_str(&format!("&since={}", inbox.last_offset.unwrap_or(0)));
        if let Some(epoch) = &inbox.epoch {
            path.push_str(&format!("&epoch={epoch}"));
        }
    }
    let session = Session::new(conn_started, &target.host, &path, rng, settings, join);
    let mut conn = Conn { stream, session };
    conn.channel_idx = channel_idx as usize;
    if let Some(plan) = &settings.chat {
        let user = idx / devices_of(settings);
        conn.chat_user = Some(user);
        conn.chat_device = idx % devices_of(settings);
        conn.im_group_conv = plan.im_group(user).map(|group| plan.im_group_conv(group));
    }
    Ok(Some(conn))
}

/// chat: connections per user (1 unless IM gives users several devices).
fn devices_of(settings: &ClientSettings) -> u32 {
    settings.im.map_or(1, |im| im.devices)
}

/// chat: write every message of the schedule whose time has come (at most
/// `SENDS_PER_TURN_MAX`); returns when the next one is due. A user whose
/// connection is not up (failed, or not yet subscribed) skips its turn; its
/// failure is counted where it happened.
#[expect(
    clippy::too_many_arguments,
    reason = "the worker loop's locals, passed apart rather than through a one-use struct"
)]
fn send_due_chat(
    plan: &ChatPlan,
    schedule: &mut ChatSchedule,
    conns: &mut [Option<Conn>],
    poll: &mut Poller,
    tally: &mut Tally,
    settings: &ClientSettings,
    rng: &mut Rng,
    now: Instant,
) -> anyhow::Result<Option<Instant>> {
    let ready = |conn: Option<&Option<Conn>>| {
        conn.and_then(Option::as_ref)
            .is_some_and(|conn| conn.phase == Phase::Open && conn.subscribed)
    };
    for _ in 0..SENDS_PER_TURN_MAX {
        let Some(due) = plan.due(schedule.next) else {
            return Ok(None);
        };
        let due_at = schedule.started + due.offset;
        if due_at > now {
            return Ok(Some(due_at));
        }
        schedule.next += 1;
        // A user's first device sends; IM delivers to all of both users'.
        let devices = devices_of(settings) as usize;
        let slot = due.user as usize * devices;
        if !ready(conns.get(slot)) {
            continue;
        }
        let ready_devices = |user: u32| {
            let first = user as usize * devices;
            (first..first + devices)
                .filter(|&slot| ready(conns.get(slot)))
                .count() as u64
        };
        let intended_us = schedule.started_unix_us + due.offset.as_micros() as u64;
        let payload = format!(
            r#"{{"seq":{},"t_us":{intended_us},"from":{}}}"#,
            due.seq, due.user
        );
        let id = CHAT_ID_FIRST + due.seq;
        let im_group = plan.to_im_group(due.user, due.seq);
        let (out, recipients, kind) = match (plan.role(due.user), im_group) {
            (Role::Pair { .. }, Some(group)) if settings.im.is_some() => {
                let conv = plan.im_group_conv(group);
                (
                    settings
                        .profile
                        .msg_send(id, ImTarget::Conv(&conv), &payload),
                    plan.im_group_online(group).map(ready_devices).sum(),
                    Some(ImKind::Group),
                )
            }
            (Role::Pair { peer }, _) if settings.im.is_some() => (
                settings
                    .profile
                    .msg_send(id, ImTarget::User(&plan.user(peer)), &payload),
                ready_devices(due.user) + ready_devices(peer),
                Some(ImKind::Dm),
            ),
            (Role::Pair { peer }, _) => (
                settings.profile.send(id, &plan.user(peer), &payload),
                u64::from(ready(conns.get(peer as usize))),
                None,
            ),
            (Role::Group { group, first, len }, _) => (
                settings
                    .profile
                    .publish(id, &plan.group_channel(group), &payload),
                (first..first + len)
                    .filter(|&member| ready(conns.get(member as usize)))
                    .count() as u64,
                None,
            ),
        };
        let Some(out) = out else {
            anyhow::bail!(
                "--profile={} has no client send or publish",
                settings.profile.name()
            );
        };
        let Some(conn) = conns[slot].as_mut() else {
            continue;
        };
        let message = ChatMessage {
            id,
            intended_us,
            recipients,
            kind,
        };
        if conn.send_chat(tally, rng, message, &out) == Next::Drop {
            drop_conn(poll, conns, slot)?;
        }
    }
    Ok(Some(now))
}

fn drop_conn(poll: &mut Poller, conns: &mut [Option<Conn>], slot: usize) -> io::Result<()> {
    if let Some(conn) = conns[slot].take() {
        poll.deregister(conn.stream.as_raw_fd(), slot)?;
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
fn open_socket(src: Ipv4Addr, target: SocketAddr) -> io::Result<TcpStream> {
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
    Ok(socket.into())
}

/// Pin this worker to core `worker_idx % cores`, as the engine pins its
/// shards: the scheduler cannot then stack two workers on one core while
/// another idles. Failure (a restricted cpuset) only costs that guarantee.
fn pin_to_core(worker_idx: u32) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let core = core_affinity::CoreId {
        id: worker_idx as usize % cores,
    };
    if !core_affinity::set_for_current(core) {
        eprintln!("worker {worker_idx}: not pinned to core {}", core.id);
    }
}
