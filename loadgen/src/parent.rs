//! The parent process: splits the run into worker shares, re-executes its
//! own binary once per worker (hidden `worker` subcommand), prints live
//! progress from the workers' JSON lines, drives the fanout publisher, and
//! merges the final results exactly (histograms are added, not averaged).
//!
//! Workers are processes, not threads, so that each has its own fd table
//! (the per-process socket limit) and a crash or stall in one shows up as
//! one missing result instead of a hung run.

use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::chat::ImKind;
use crate::cli::{
    split_count, ChatArgs, CommonArgs, ConnectArgs, FanoutArgs, IpRange, ReconnectArgs, Scenario,
    Target, SOCKETS_PER_WORKER_MAX,
};
use crate::profile::{HttpUrl, Profile, PublishTarget, PusherApp};
use crate::publisher::{self, Pace, PublishOutcome, PublishPlan, SendOutcome, SendPlan};
use crate::report::{spectrum, ClientUsage, KindSummary, Latency, Summary, TimelinePoint};
use crate::stats::{self, KindCounts, Progress, WorkerLine, WorkerResult};

const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Slack added to every computed bound (process start, close handshakes).
const SLACK: Duration = Duration::from_secs(10);

pub fn run_connect(args: &ConnectArgs) -> anyhow::Result<Summary> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    let common = &args.common;
    let open_s = f64::from(common.connections) / args.rate;
    let deadline = Duration::from_secs_f64(open_s)
        + Duration::from_secs(common.connect_timeout_s + args.hold_s)
        + SLACK;
    // URL-named channels (nchan, pushpin) need one even without publishing.
    let channel = common.profile.default_channel();
    let extra = |_: u32| {
        vec![
            format!("--hold-s={}", args.hold_s),
            format!("--channel={channel}"),
        ]
    };
    let fleet = Fleet::spawn(common, Scenario::Connect, args.rate, deadline, extra)?;
    let started = Instant::now();
    let planned = Duration::from_secs_f64(open_s + args.hold_s as f64);
    let mut live = Live::new(common.workers, Scenario::Connect, planned);
    let results = collect(fleet, &mut live, started, deadline)?;
    Ok(summarize("connect", common, &results, None, &live))
}

pub fn run_fanout(args: &FanoutArgs) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        args.rate >= 0.0 && args.connect_rate > 0.0,
        "--rate must be positive (or 0: closed loop) and --connect-rate positive"
    );
    let common = &args.common;
    let channels = args.channels;
    anyhow::ensure!(channels >= 1, "--channels must be at least 1");
    let closed_loop = args.rate == 0.0;
    let publications = match (args.publications, closed_loop) {
        (Some(publications), _) => publications,
        (None, false) => (args.rate * args.seconds).round() as u64,
        (None, true) => bail!("--rate=0 (closed loop) needs --publications"),
    };
    anyhow::ensure!(publications > 0, "--rate x --seconds gives no publications");
    anyhow::ensure!(args.window > 0, "--window must be at least 1");
    let subscribe_wait = Duration::from_secs_f64(f64::from(common.connections) / args.connect_rate)
        + Duration::from_secs(common.connect_timeout_s)
        + Duration::from_secs(2);
    // Fixed rate: the schedule's length, which --publications may stretch
    // past --seconds. Closed loop: --seconds bounds the publishing.
    let publishing_s = if closed_loop {
        args.seconds.max(0.0)
    } else {
        args.seconds.max(publications as f64 / args.rate)
    };
    let deadline = subscribe_wait
        + Duration::from_secs_f64(publishing_s)
        + Duration::from_secs(args.drain_s)
        + SLACK;
    let channel = args
        .channel
        .clone()
        .unwrap_or_else(|| common.profile.default_channel().to_owned());
    let target = publish_target(args)?;
    let worker_channel = channel.clone();
    let extra = move |_: u32| {
        vec![
            format!("--channel={worker_channel}"),
            format!("--channels={channels}"),
            format!("--publications={publications}"),
        ]
    };
    let mut fleet = Fleet::spawn(common, Scenario::Fanout, args.connect_rate, deadline, extra)?;
    let started = Instant::now();
    let planned =
        Duration::from_secs_f64(f64::from(common.connections) / args.connect_rate + publishing_s);
    let mut live = Live::new(common.workers, Scenario::Fanout, planned);

    // 1. Wait until every subscriber is subscribed or has failed.
    while live.sum(|p| p.subscribed + p.errors) < u64::from(common.connections) && !fleet.done() {
        if started.elapsed() > subscribe_wait {
            eprintln!("subscribers still missing after {subscribe_wait:?}; publishing anyway");
            break;
        }
        fleet.pump(&mut live)?;
    }
    // 2. Publish on the fixed schedule from a thread; keep reporting.
    let delivered = Arc::new(AtomicU64::new(0));
    let pace = if closed_loop {
        Pace::Closed {
            window: args.window,
            // Recipients of one publication (the channels split them).
            subscribers: (live.sum(|p| p.subscribed) / u64::from(channels)).max(1),
            delivered: Arc::clone(&delivered),
            limit: Duration::from_secs_f64(args.seconds.max(0.0)),
        }
    } else {
        Pace::Fixed { rate: args.rate }
    };
    let plan = PublishPlan {
        target,
        channel,
        channels,
        pace,
        publications,
    };
    let publishing_started = Instant::now();
    let publisher = std::thread::spawn(move || publisher::run(&plan));
    while !publisher.is_finished() {
        fleet.pump(&mut live)?;
        delivered.store(live.sum(|p| p.received), Ordering::Relaxed);
    }
    let outcome = publisher
        .join()
        .map_err(|_| anyhow::anyhow!("publisher thread panicked"))?;
    // 3. Drain: wait until every subscriber has every publication, or drain_s.
    let drain_started = Instant::now();
    // With several channels the live figures do not say who is on which:
    // drain against the even split; the summary's `expected` is exact.
    let expected = live.sum(|p| p.subscribed) * outcome.published / u64::from(channels);
    while live.sum(|p| p.received) < expected
        && drain_started.elapsed() < Duration::from_secs(args.drain_s)
        && !fleet.done()
    {
        fleet.pump(&mut live)?;
    }
    // To the last delivery seen (as reported), not to the end of the drain:
    // a subscriber that died early must not stretch the time by drain_s.
    let delivery_s = live
        .received_last_at
        .saturating_duration_since(publishing_started)
        .as_secs_f64();
    // 4. Stop the workers (stdin EOF) and collect.
    fleet.stop();
    let results = collect(fleet, &mut live, started, deadline)?;
    let mut summary = summarize("fanout", common, &results, Some(&outcome), &live);
    if channels > 1 {
        // Exact: each channel's subscribers times its publications.
        summary.expected = (0..channels as usize)
            .map(|idx| {
                let subscribed: u64 = results
                    .iter()
                    .map(|r| r.subscribed_by_channel.get(idx).copied().unwrap_or(0))
                    .sum();
                subscribed * outcome.published_by_channel[idx]
            })
            .sum();
        summary.lost = summary.expected.saturating_sub(summary.received);
    }
    summary.channels = channels;
    summary.delivery_s = delivery_s;
    summary.deliveries_per_s = summary.received as f64 / delivery_s.max(f64::EPSILON);
    Ok(summary)
}

pub fn run_reconnect(args: &ReconnectArgs) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        args.common.profile.is_ringcast(),
        "reconnect measures Ringcast's inbox recovery (`since`/`epoch` at connect); \
         --profile={} has none: use --profile=ringcast or ringcast-binary",
        args.common.profile.name()
    );
    anyhow::ensure!(
        args.rate > 0.0 && args.connect_rate > 0.0,
        "--rate and --connect-rate must be positive"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.drop_share),
        "--drop-share must be within 0..=1"
    );
    let common = &args.common;
    let ticks = (args.rate * args.seconds).round() as u64;
    anyhow::ensure!(ticks > 0, "--rate x --seconds gives no sends");
    let connect_wait = Duration::from_secs_f64(f64::from(common.connections) / args.connect_rate)
        + Duration::from_secs(common.connect_timeout_s)
        + Duration::from_secs(2);
    let deadline = connect_wait
        + Duration::from_secs_f64(args.seconds.max(0.0))
        + Duration::from_millis(args.reconnect_delay_ms)
        + Duration::from_secs(common.connect_timeout_s + args.drain_s)
        + SLACK;
    let (drop_share, delay_ms) = (args.drop_share, args.reconnect_delay_ms);
    let extra = move |_: u32| {
        vec![
            format!("--drop-share={drop_share}"),
            format!("--reconnect-delay-ms={delay_ms}"),
        ]
    };
    let mut fleet = Fleet::spawn(
        common,
        Scenario::Reconnect,
        args.connect_rate,
        deadline,
        extra,
    )?;
    let started = Instant::now();
    let planned = Duration::from_secs_f64(
        f64::from(common.connections) / args.connect_rate + args.seconds.max(0.0),
    );
    let mut live = Live::new(common.workers, Scenario::Reconnect, planned);

    // 1. Wait until every connection is open or has failed.
    while live.sum(|p| p.open + p.errors) < u64::from(common.connections) && !fleet.done() {
        if started.elapsed() > connect_wait {
            eprintln!("connections still missing after {connect_wait:?}; sending anyway");
            break;
        }
        fleet.pump(&mut live)?;
    }
    // 2. Send on the fixed schedule from a thread; drop at the middle.
    let users = (0u32..)
        .zip(split_count(common.connections, common.workers))
        .map(|(worker, share)| (0..share).map(|i| format!("rc-{worker}-{i}")).collect())
        .collect();
    let plan = SendPlan {
        api: common.api,
        api_key: args.api_key.clone(),
        users,
        rate: args.rate,
        ticks,
    };
    let sending_started = Instant::now();
    let middle = Duration::from_secs_f64(args.seconds.max(0.0) / 2.0);
    let sender = std::thread::spawn(move || publisher::run_send(&plan));
    let mut dropped = false;
    while !sender.is_finished() {
        if !dropped && sending_started.elapsed() >= middle {
            dropped = true;
            fleet.signal_drop();
        }
        fleet.pump(&mut live)?;
    }
    if !dropped {
        fleet.signal_drop();
    }
    let outcome = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender thread panicked"))?;
    // 3. Drain: wait until every expected message arrived, or drain_s (the
    //    reconnects' own timeout included).
    let drain_started = Instant::now();
    let drain = Duration::from_secs(args.drain_s)
        + Duration::from_millis(args.reconnect_delay_ms)
        + Duration::from_secs(1);
    while live.sum(|p| p.received) < outcome.expected
        && drain_started.elapsed() < drain
        && !fleet.done()
    {
        fleet.pump(&mut live)?;
    }
    // 4. Stop the workers (stdin EOF) and collect.
    fleet.stop();
    let results = collect(fleet, &mut live, started, deadline)?;
    let mut summary = summarize("reconnect", common, &results, None, &live);
    add_sends(&mut summary, &outcome);
    Ok(summary)
}

pub fn run_chat(args: &ChatArgs) -> anyhow::Result<Summary> {
    let common = &args.common;
    anyhow::ensure!(
        common.profile.is_ringcast(),
        "chat uses Ringcast's client `send` and `publish`; --profile={} has neither: use \
         --profile=ringcast or ringcast-binary",
        common.profile.name()
    );
    anyhow::ensure!(
        args.rate > 0.0 && args.connect_rate > 0.0,
        "--rate and --connect-rate must be positive"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.pair_share),
        "--pair-share must be within 0..=1"
    );
    anyhow::ensure!(args.group_size >= 2, "--group-size must be at least 2");
    let messages = (args.rate * args.seconds).round() as u64;
    anyhow::ensure!(messages > 0, "--rate x --seconds gives no messages");
    let devices = args.devices_per_user;
    anyhow::ensure!(devices >= 1, "--devices-per-user must be at least 1");
    let groups = im_group_layout(args)?;
    if args.im {
        anyhow::ensure!(
            args.pair_share == 1.0,
            "--im puts every user in a pair (--pair-share=1.0); --groups adds IM groups"
        );
        anyhow::ensure!(
            common
                .connections
                .is_multiple_of(common.workers * 2 * devices),
            "--im: --connections must be a multiple of --workers x 2 x --devices-per-user, so \
             every worker holds whole pairs of users with all their devices"
        );
    } else {
        anyhow::ensure!(
            devices == 1 && args.read_every == 0 && args.groups == 0,
            "--devices-per-user, --read-every and --groups need --im"
        );
    }
    // IM groups are made before any worker connects.
    let tag = format!("lg{}", crate::worker::unix_us() / 1_000_000);
    if let Some(layout) = &groups {
        let setup = crate::im_setup::GroupSetup {
            api: common.api,
            api_key: &layout.api_key,
            tag: &tag,
            groups_per_worker: &layout.per_worker,
            size: args.group_size,
            online: layout.online,
        };
        let made = crate::im_setup::create_groups(&setup)?;
        eprintln!(
            "IM groups: {} of {} members ({} online) made in {:.2} s ({} API calls)",
            made.groups,
            args.group_size,
            layout.online,
            made.took.as_secs_f64(),
            made.calls
        );
    }
    let connect_wait = Duration::from_secs_f64(f64::from(common.connections) / args.connect_rate)
        + Duration::from_secs(common.connect_timeout_s)
        + Duration::from_secs(2);
    let deadline = connect_wait
        + Duration::from_secs_f64(args.seconds.max(0.0))
        + Duration::from_secs(args.drain_s)
        + SLACK;
    let (pair_share, group_size, rate) = (args.pair_share, args.group_size, args.rate);
    let namespace = args.group_namespace.clone();
    let (im, read_every) = (args.im, args.read_every);
    let group_share = args.group_share;
    let extra = move |worker: u32| {
        let mut flags = vec![
            format!("--pair-share={pair_share}"),
            format!("--group-size={group_size}"),
            format!("--group-namespace={namespace}"),
            format!("--messages={messages}"),
            format!("--send-rate={rate}"),
            format!("--devices-per-user={devices}"),
            format!("--read-every={read_every}"),
        ];
        if im {
            flags.push("--im".to_owned());
        }
        if let Some(layout) = &groups {
            flags.extend([
                format!("--im-groups={}", layout.per_worker[worker as usize]),
                format!("--im-group-size={group_size}"),
                format!("--im-group-online={}", layout.online),
                format!("--im-group-share={group_share}"),
                format!("--im-group-tag={tag}"),
            ]);
        }
        flags
    };
    let mut fleet = Fleet::spawn(common, Scenario::Chat, args.connect_rate, deadline, extra)?;
    let started = Instant::now();
    let planned = Duration::from_secs_f64(
        f64::from(common.connections) / args.connect_rate + args.seconds.max(0.0),
    );
    let mut live = Live::new(common.workers, Scenario::Chat, planned);

    // 1. Wait until every user is subscribed (pairs: connected) or failed.
    while live.sum(|p| p.subscribed + p.errors) < u64::from(common.connections) && !fleet.done() {
        if started.elapsed() > connect_wait {
            eprintln!("users still missing after {connect_wait:?}; starting anyway");
            break;
        }
        fleet.pump(&mut live)?;
    }
    // 2. Start every worker's schedule; it runs for `seconds`.
    fleet.signal_start();
    let sending_started = Instant::now();
    let sending = Duration::from_secs_f64(args.seconds.max(0.0));
    while sending_started.elapsed() < sending && !fleet.done() {
        fleet.pump(&mut live)?;
    }
    // 3. Drain: every message answered and every expected delivery in, or
    //    drain_s. Wait for a progress line taken after the schedule ended.
    let drain_started = Instant::now();
    while drain_started.elapsed() < Duration::from_secs(args.drain_s) && !fleet.done() {
        let settled = live.sum(|p| p.sent) == live.sum(|p| p.replied)
            && live.sum(|p| p.received) >= live.sum(|p| p.expected);
        if settled && drain_started.elapsed() > PROGRESS_INTERVAL + Duration::from_millis(200) {
            break;
        }
        fleet.pump(&mut live)?;
    }
    // 4. Stop the workers (stdin EOF) and collect.
    fleet.stop();
    let results = collect(fleet, &mut live, started, deadline)?;
    let mut summary = summarize("chat", common, &results, None, &live);
    add_chat(&mut summary, &results);
    // Deliveries per second of the send schedule (the drain's tail is the
    // part the schedule did not keep up with, and shows in push latency).
    summary.delivery_s = args.seconds;
    summary.deliveries_per_s = summary.received as f64 / args.seconds.max(f64::EPSILON);
    if args.im {
        add_im_kinds(&mut summary, &results, args.seconds);
    }
    Ok(summary)
}

/// chat, IM groups: what `--groups` asks of each worker.
struct ImGroupLayout {
    api_key: String,
    /// Groups per worker.
    per_worker: Vec<u32>,
    /// Online members per group.
    online: u32,
}

/// chat: the IM groups' layout, checked; `None` without `--groups`.
fn im_group_layout(args: &ChatArgs) -> anyhow::Result<Option<ImGroupLayout>> {
    if args.groups == 0 {
        return Ok(None);
    }
    let common = &args.common;
    anyhow::ensure!(args.im, "--groups needs --im");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.group_share),
        "--group-share must be within 0..=1"
    );
    anyhow::ensure!(
        args.online_share > 0.0 && args.online_share <= 1.0,
        "--online-share must be within (0, 1]"
    );
    let api_key = args.api_key.clone().context(
        "--groups makes its groups through the HTTP API: pass --api-key (or RINGCAST_API_KEY)",
    )?;
    let online =
        ((f64::from(args.group_size) * args.online_share).round() as u32).clamp(1, args.group_size);
    let per_worker = split_count(args.groups, common.workers);
    let users_per_worker =
        common.connections / common.workers.max(1) / args.devices_per_user.max(1);
    let most = per_worker.iter().copied().max().unwrap_or(0);
    anyhow::ensure!(
        most * online <= users_per_worker,
        "--groups={} over {} workers puts {most} groups of {online} online members on one \
         worker, which has {users_per_worker} users: pass more --connections (users x \
         --devices-per-user) or fewer --groups",
        args.groups,
        common.workers
    );
    Ok(Some(ImGroupLayout {
        api_key,
        per_worker,
        online,
    }))
}

/// chat: the workers' message counts and ack latency.
fn add_chat(summary: &mut Summary, results: &[WorkerResult]) {
    let mut ack_hist = stats::new_histogram();
    for result in results {
        summary.sent += result.chat.sent;
        summary.published += result.chat.acked;
        summary.publish_errors += result.chat.ack_errors;
        summary.expected += result.chat.expected;
        summary.reads_sent += result.chat.reads_sent;
        summary.reads_acked += result.chat.reads_acked;
        summary.receipts_expected += result.chat.receipts_expected;
        summary.receipts += result.chat.receipts;
        merge_wire(
            &mut summary.errors,
            result,
            &result.chat.ack_hist,
            &mut ack_hist,
        );
    }
    summary.errors_total = summary.errors.values().sum();
    summary.lost = summary.expected.saturating_sub(summary.received);
    summary.ack_latency = Latency::from_histogram(&ack_hist);
}

/// Add a worker's encoded histogram into `into`; one that does not decode
/// is counted (`bad_worker_histogram`) and reported, not merged.
fn merge_wire(
    errors: &mut stats::ErrorCounts,
    result: &WorkerResult,
    wire: &str,
    into: &mut hdrhistogram::Histogram<u64>,
) {
    match stats::decode_histogram(wire) {
        Ok(histogram) => stats::merge(into, &histogram),
        Err(error) => {
            eprintln!("worker {}: {error}", result.worker_idx);
            *errors.entry("bad_worker_histogram".to_owned()).or_insert(0) += 1;
        }
    }
}

/// chat, IM: DMs and group messages apart, merged over the workers.
fn add_im_kinds(summary: &mut Summary, results: &[WorkerResult], seconds: f64) {
    for kind in ImKind::ALL {
        let mut counts = KindCounts::default();
        let mut ack_hist = stats::new_histogram();
        let mut push_hist = stats::new_histogram();
        for result in results {
            let Some(worker) = result.chat.im_kinds.get(kind.idx()) else {
                continue;
            };
            counts.add(&worker.counts);
            for (wire, into) in [
                (&worker.ack_hist, &mut ack_hist),
                (&worker.push_hist, &mut push_hist),
            ] {
                merge_wire(&mut summary.errors, result, wire, into);
            }
        }
        let merged = KindSummary {
            lost: counts.expected.saturating_sub(counts.received),
            ack_latency: Latency::from_histogram(&ack_hist),
            push_latency: Latency::from_histogram(&push_hist),
            deliveries_per_s: counts.received as f64 / seconds.max(f64::EPSILON),
            counts,
        };
        match kind {
            ImKind::Dm => summary.im_dm = Some(merged),
            ImKind::Group => summary.im_group = Some(merged),
        }
    }
    summary.errors_total = summary.errors.values().sum();
}

/// fanout: where and how to publish, from the profile and its flags.
fn publish_target(args: &FanoutArgs) -> anyhow::Result<PublishTarget> {
    let profile = args.common.profile;
    let api_url = || HttpUrl {
        addr: args.common.api,
        host: args.common.api.to_string(),
        path: "/".to_owned(),
    };
    let mut target = PublishTarget {
        profile,
        url: api_url(),
        api_key: String::new(),
        pusher: None,
    };
    match profile {
        Profile::Ringcast | Profile::RingcastBinary => {
            target.api_key = args.api_key.clone().with_context(|| {
                format!(
                    "--profile={} publishes through the HTTP API: pass --api-key (or \
                     RINGCAST_API_KEY)",
                    profile.name()
                )
            })?;
        }
        Profile::Nchan | Profile::Pushpin => {
            let url = args.publish_url.as_deref().with_context(|| {
                format!(
                    "--profile={} needs --publish-url=http://ip:port/path (`{{channel}}` in \
                     it is replaced by the channel)",
                    profile.name()
                )
            })?;
            target.url = HttpUrl::parse(url).map_err(anyhow::Error::msg)?;
        }
        Profile::Pusher => {
            let missing = |flag: &str| format!("--profile=pusher signs its publishes: pass {flag}");
            target.pusher = Some(PusherApp {
                app_id: args
                    .pusher_app_id
                    .clone()
                    .with_context(|| missing("--pusher-app-id"))?,
                key: args
                    .pusher_key
                    .clone()
                    .with_context(|| missing("--pusher-key"))?,
                secret: args
                    .pusher_secret
                    .clone()
                    .with_context(|| missing("--pusher-secret (or RINGCAST_PUSHER_SECRET)"))?,
            });
        }
    }
    Ok(target)
}

fn add_sends(summary: &mut Summary, outcome: &SendOutcome) {
    summary.published = outcome.sent;
    summary.publish_errors = outcome.failed;
    for (kind, count) in &outcome.errors {
        *summary.errors.entry(kind.clone()).or_insert(0) += count;
    }
    summary.errors_total = summary.errors.values().sum();
    summary.expected = outcome.expected;
    summary.lost = summary.expected.saturating_sub(summary.received);
}

/// The latest progress of each worker, and the live line's state.
/// Waits (bounded by the run's deadline plus `SLACK`) for every worker to
/// exit, then gathers their results.
fn collect(
    mut fleet: Fleet,
    live: &mut Live,
    started: Instant,
    deadline: Duration,
) -> anyhow::Result<Vec<WorkerResult>> {
    while !fleet.done() {
        anyhow::ensure!(
            started.elapsed() < deadline + SLACK,
            "workers did not finish within {:?}",
            deadline + SLACK
        );
        fleet.pump(live)?;
    }
    live.print();
    fleet.finish()
}

struct Live {
    progress: Vec<Progress>,
    /// The summed `received` at the last progress line, and when it last
    /// grew (fanout's throughput ends at the last delivery).
    received_total: u64,
    received_last_at: Instant,
    /// The live line's figures, kept for the summary (`plot`).
    timeline: Vec<TimelinePoint>,
    started: Instant,
    printed_at: Instant,
    received_at_print: u64,
    connected_at_print: u64,
    /// What the line shows: a connect run has no messages.
    scenario: Scenario,
    /// The schedule's length (connect ramp + hold or sending), for the
    /// estimate of the time left; drains are not in it (they end early
    /// when everything has arrived).
    planned: Duration,
}

impl Live {
    fn new(workers: u32, scenario: Scenario, planned: Duration) -> Live {
        let now = Instant::now();
        Live {
            connected_at_print: 0,
            scenario,
            planned,
            progress: vec![Progress::default(); workers as usize],
            received_total: 0,
            received_last_at: now,
            // The start, so a timeline always has two points to draw.
            timeline: vec![TimelinePoint::default()],
            started: now,
            printed_at: now,
            received_at_print: 0,
        }
    }

    fn sum(&self, field: impl Fn(&Progress) -> u64) -> u64 {
        self.progress.iter().map(field).sum()
    }

    fn note_received(&mut self) {
        let received = self.sum(|p| p.received);
        if received > self.received_total {
            self.received_total = received;
            self.received_last_at = Instant::now();
        }
    }

    fn maybe_print(&mut self) {
        if self.printed_at.elapsed() >= PROGRESS_INTERVAL {
            self.print();
        }
    }

    /// Print and record one live line now (each second, and once at the end
    /// so even a short run has a timeline to plot).
    fn print(&mut self) {
        let now = Instant::now();
        let since = now.saturating_duration_since(self.printed_at);
        if since.is_zero() {
            return;
        }
        let received = self.sum(|p| p.received);
        let rate = (received - self.received_at_print.min(received)) as f64 / since.as_secs_f64();
        let connected = self.sum(|p| p.connected);
        let connects =
            (connected - self.connected_at_print.min(connected)) as f64 / since.as_secs_f64();
        let elapsed = now.saturating_duration_since(self.started);
        // Workers report their own p99; the max over workers is an upper
        // bound of the merged p99 (the exact one is in the final table).
        let point = TimelinePoint {
            t_s: elapsed.as_secs_f64(),
            open: self.sum(|p| p.open),
            subscribed: self.sum(|p| p.subscribed),
            msgs_per_s: rate,
            connects_per_s: connects,
            p99_us_max: self.progress.iter().map(|p| p.p99_us).max().unwrap_or(0),
            errors: self.sum(|p| p.errors),
        };
        let left = match self.planned.checked_sub(elapsed) {
            Some(left) if !left.is_zero() => format!("~{:.0} s left", left.as_secs_f64().ceil()),
            _ => "finishing (drain, close)".to_owned(),
        };
        if self.scenario == Scenario::Connect {
            eprintln!(
                "[{:>5.1}s] open {} | connects/s {:.0} | connect p99<= {} us | errors {} | {left}",
                point.t_s, point.open, point.connects_per_s, point.p99_us_max, point.errors,
            );
        } else {
            eprintln!(
                "[{:>5.1}s] open {} | subscribed {} | msgs/s {:.0} | p99<= {} us | errors {} | \
                 {left}",
                point.t_s,
                point.open,
                point.subscribed,
                point.msgs_per_s,
                point.p99_us_max,
                point.errors,
            );
        }
        self.timeline.push(point);
        self.printed_at = now;
        self.received_at_print = received;
        self.connected_at_print = connected;
    }
}

enum Report {
    Line(u32, WorkerLine),
    Garbage(u32, String),
    Eof(u32),
}

struct Fleet {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    results: Vec<Option<WorkerResult>>,
    eof: Vec<bool>,
    reports: Receiver<Report>,
}

impl Fleet {
    fn spawn(
        common: &CommonArgs,
        scenario: Scenario,
        rate: f64,
        deadline: Duration,
        extra: impl Fn(u32) -> Vec<String>,
    ) -> anyhow::Result<Fleet> {
        anyhow::ensure!(common.workers > 0, "--workers must be at least 1");
        anyhow::ensure!(common.connections > 0, "--connections must be at least 1");
        anyhow::ensure!(
            common.secret.is_some() || !common.profile.is_ringcast(),
            "--profile={} needs --secret (or RINGCAST_AUTH_JWT_SECRET): every connection gets its \
             own JWT",
            common.profile.name()
        );
        Target::parse_list(&common.target).map_err(anyhow::Error::msg)?;
        let ip_range = IpRange::parse(&common.source_ips).map_err(anyhow::Error::msg)?;
        let shares = split_count(common.connections, common.workers);
        let largest = shares.iter().copied().max().unwrap_or(0);
        if largest > SOCKETS_PER_WORKER_MAX {
            bail!(
                "{} connections over {} workers is {largest} sockets per worker; the limit is \
                 {SOCKETS_PER_WORKER_MAX} per worker process: pass --workers={} or more",
                common.connections,
                common.workers,
                common.connections.div_ceil(SOCKETS_PER_WORKER_MAX)
            );
        }
        let ip_slices = ip_range.split(common.workers);
        let exe =
            std::env::current_exe().context("cannot find this executable to start workers")?;
        let (sender, reports) = mpsc::channel();
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for (worker_idx, (&share, slice)) in (0u32..).zip(shares.iter().zip(&ip_slices)) {
            let mut command = Command::new(&exe);
            command
                .arg("worker")
                .arg("--scenario")
                .arg(match scenario {
                    Scenario::Connect => "connect",
                    Scenario::Fanout => "fanout",
                    Scenario::Reconnect => "reconnect",
                    Scenario::Chat => "chat",
                })
                .arg(format!("--worker-idx={worker_idx}"))
                .arg(format!("--target={}", common.target))
                .arg(format!("--driver={}", common.driver.name()))
                .args(common.pin_cores.then_some("--pin-cores"))
                .arg(format!("--profile={}", common.profile.name()))
                .arg(format!("--connections={share}"))
                .arg(format!(
                    "--rate={}",
                    rate * f64::from(share) / f64::from(common.connections)
                ))
                .arg(format!("--source-ips={slice}"))
                .arg(format!("--seed={}", common.seed))
                .arg(format!("--connect-timeout-s={}", common.connect_timeout_s))
                .arg(format!("--deadline-s={}", deadline.as_secs().max(1)))
                .args(extra(worker_idx))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            if let Some(secret) = &common.secret {
                // The secret goes by environment, not argv (visible in ps).
                command.env("RINGCAST_AUTH_JWT_SECRET", secret);
            }
            let mut child = command
                .spawn()
                .with_context(|| format!("starting worker {worker_idx}"))?;
            let stdout = child.stdout.take().expect("stdout is piped");
            stdins.push(child.stdin.take());
            children.push(child);
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let report = match serde_json::from_str::<WorkerLine>(&line) {
                        Ok(parsed) => Report::Line(worker_idx, parsed),
                        Err(_) => Report::Garbage(worker_idx, line),
                    };
                    if sender.send(report).is_err() {
                        return;
                    }
                }
                let _ = sender.send(Report::Eof(worker_idx));
            });
        }
        let workers = common.workers as usize;
        Ok(Fleet {
            children,
            stdins,
            results: vec![None; workers],
            eof: vec![false; workers],
            reports,
        })
    }

    fn done(&self) -> bool {
        self.eof.iter().all(|&eof| eof)
    }

    /// reconnect: one `d` on a worker's stdin tells it to drop its share.
    fn signal_drop(&mut self) {
        self.signal(b'd', "the drop");
    }

    /// chat: one `s` on a worker's stdin starts its send schedule.
    fn signal_start(&mut self) {
        self.signal(b's', "the start");
    }

    fn signal(&mut self, byte: u8, what: &str) {
        for (idx, stdin) in self.stdins.iter_mut().enumerate() {
            if let Some(pipe) = stdin.as_mut() {
                if let Err(error) = pipe.write_all(&[byte]).and_then(|()| pipe.flush()) {
                    eprintln!("worker {idx}: cannot signal {what}: {error}");
                }
            }
        }
    }

    /// Closing a worker's stdin tells it to close its connections and report.
    fn stop(&mut self) {
        for stdin in &mut self.stdins {
            drop(stdin.take());
        }
    }

    /// Handle the reports that arrive within ~100 ms and print the live line.
    fn pump(&mut self, live: &mut Live) -> anyhow::Result<()> {
        match self.reports.recv_timeout(Duration::from_millis(100)) {
            Ok(report) => self.handle(live, report),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                self.eof.iter_mut().for_each(|eof| *eof = true);
                // Every worker is gone: nothing will arrive; do not spin.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        while let Ok(report) = self.reports.try_recv() {
            self.handle(live, report);
        }
        live.maybe_print();
        Ok(())
    }

    fn handle(&mut self, live: &mut Live, report: Report) {
        match report {
            Report::Line(idx, WorkerLine::Progress(progress)) => {
                live.progress[idx as usize] = progress;
                live.note_received();
            }
            Report::Line(idx, WorkerLine::Result(result)) => {
                let progress = &mut live.progress[idx as usize];
                progress.subscribed = result.subscribed;
                progress.received = result.received;
                progress.open = 0;
                self.results[idx as usize] = Some(*result);
            }
            Report::Garbage(idx, line) => eprintln!("worker {idx}: unexpected output: {line}"),
            Report::Eof(idx) => self.eof[idx as usize] = true,
        }
    }

    fn finish(mut self) -> anyhow::Result<Vec<WorkerResult>> {
        self.stop();
        let mut results = Vec::new();
        for (idx, (child, result)) in self
            .children
            .iter_mut()
            .zip(self.results.iter_mut())
            .enumerate()
        {
            let status = child
                .wait()
                .with_context(|| format!("waiting for worker {idx}"))?;
            match result.take() {
                Some(result) if status.success() => results.push(result),
                _ => bail!("worker {idx} exited ({status}) without a result; its error is above"),
            }
        }
        Ok(results)
    }
}

fn summarize(
    scenario: &str,
    common: &CommonArgs,
    results: &[WorkerResult],
    publish: Option<&PublishOutcome>,
    live: &Live,
) -> Summary {
    let elapsed = live.started.elapsed();
    let mut connect_hist = stats::new_histogram();
    let mut push_hist = stats::new_histogram();
    let mut recovery_hist = stats::new_histogram();
    let mut summary = Summary {
        scenario: scenario.to_owned(),
        profile: common.profile.name().to_owned(),
        target: common.target.clone(),
        workers: common.workers,
        connections: common.connections,
        elapsed_s: elapsed.as_secs_f64(),
        ..Summary::default()
    };
    for result in results {
        summary.attempted += result.attempted;
        summary.connected += result.connected;
        summary.subscribed += result.subscribed;
        summary.received += result.received;
        summary.duplicated += result.duplicated;
        summary.out_of_order += result.out_of_order;
        let recovery = &result.recovery;
        summary.dropped += recovery.dropped;
        summary.reconnected += recovery.reconnected;
        summary.recovered_true += recovery.recovered_true;
        summary.recovered_false += recovery.recovered_false;
        summary.replayed += recovery.replayed;
        summary.gaps += recovery.gaps;
        if !recovery.recovery_hist.is_empty() {
            merge_wire(
                &mut summary.errors,
                result,
                &recovery.recovery_hist,
                &mut recovery_hist,
            );
        }
        for (kind, count) in &result.errors {
            *summary.errors.entry(kind.clone()).or_insert(0) += count;
        }
        for (wire, into) in [
            (&result.connect_hist, &mut connect_hist),
            (&result.push_hist, &mut push_hist),
        ] {
            merge_wire(&mut summary.errors, result, wire, into);
        }
    }
    if let Some(publish) = publish {
        summary.published = publish.published;
        summary.publish_errors = publish.failed;
        for (kind, count) in &publish.errors {
            *summary.errors.entry(kind.clone()).or_insert(0) += count;
        }
        summary.expected = summary.subscribed * publish.published;
        summary.lost = summary.expected.saturating_sub(summary.received);
    }
    summary.errors_total = summary.errors.values().sum();
    summary.connect_latency = Latency::from_histogram(&connect_hist);
    summary.push_latency = Latency::from_histogram(&push_hist);
    summary.recovery_latency = Latency::from_histogram(&recovery_hist);
    summary.connect_spectrum = spectrum(&connect_hist);
    summary.push_spectrum = spectrum(&push_hist);
    summary.timeline = live.timeline.clone();
    let parent_usage = crate::sys::rusage_self().unwrap_or_else(|error| {
        eprintln!("getrusage: {error}");
        stats::Rusage::default()
    });
    summary.client = ClientUsage::from_results(results, parent_usage, summary.elapsed_s);
    summary
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn chat_args(flags: &[&str]) -> ChatArgs {
        let argv = ["ringcast-loadgen", "chat"].iter().chain(flags);
        match Cli::try_parse_from(argv).expect("flags parse").command {
            Command::Chat(args) => args,
            other => panic!("not chat: {other:?}"),
        }
    }

    #[test]
    fn im_groups_split_over_workers_with_their_online_share() {
        let args = chat_args(&[
            "--im",
            "--api-key=k",
            "--connections=400",
            "--workers=2",
            "--devices-per-user=2",
            "--groups=3",
            "--group-size=500",
            "--online-share=0.1",
            "--group-share=0.25",
        ]);
        assert_eq!((args.groups, args.group_share), (3, 0.25));
        let layout = im_group_layout(&args).unwrap().expect("groups asked for");
        // 500 x 10% = 50 online per group; worker 0's 2 groups take all
        // of its 100 users (400 connections / 2 workers / 2 devices).
        assert_eq!(layout.per_worker, vec![2, 1]);
        assert_eq!(layout.online, 50);
        assert_eq!(layout.api_key, "k");
    }

    #[test]
    fn im_groups_are_refused_without_room_im_or_a_key() {
        let base = ["--connections=200", "--workers=2", "--devices-per-user=2"];
        let refused = |extra: &[&str]| {
            let flags: Vec<&str> = base.iter().chain(extra).copied().collect();
            im_group_layout(&chat_args(&flags))
                .err()
                .map(|e| format!("{e:#}"))
        };
        // 2 groups of 50 online on worker 0, which holds 50 users.
        let crowded = refused(&["--im", "--api-key=k", "--groups=3", "--group-size=500"]);
        assert!(crowded.unwrap().contains("more --connections"));
        assert!(refused(&["--groups=1", "--api-key=k"])
            .unwrap()
            .contains("needs --im"));
        assert!(refused(&["--im", "--groups=1"])
            .unwrap()
            .contains("--api-key"));
        assert!(
            refused(&["--im", "--api-key=k", "--groups=1", "--online-share=0"])
                .unwrap()
                .contains("--online-share")
        );
        assert!(
            refused(&["--im", "--api-key=k", "--groups=1", "--group-share=1.5"])
                .unwrap()
                .contains("--group-share")
        );
        // Without --groups there is nothing to check.
        assert!(im_group_layout(&chat_args(&base)).unwrap().is_none());
    }
}
