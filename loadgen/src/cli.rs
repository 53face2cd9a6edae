//! Command line: the public `connect`, `fanout` and `reconnect` subcommands
//! and the
//! hidden `worker` subcommand the parent uses to re-execute itself.
//!
//! Parsing only (no syscalls); `main` turns these into worker shares.

use std::net::{Ipv4Addr, SocketAddr};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::profile::Profile;
use crate::threshold::Threshold;

/// The most sockets one worker process may hold. Keeps each process far
/// below a default `ulimit -n` of 20k-ish plus headroom for the epoll fd and
/// pipes, and keeps per-process ephemeral port use per source IP bounded.
pub const SOCKETS_PER_WORKER_MAX: u32 = 18_000;

#[derive(Debug, Parser)]
#[command(
    name = "ringcast-loadgen",
    version,
    about = "Load generator for Ringcast"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open N connections at a fixed rate, hold them, close them; measures
    /// connect latency (TCP connect start -> `connect` message received).
    Connect(ConnectArgs),
    /// N subscribers on one channel, or spread over `--channels`; the
    /// parent publishes at a fixed rate (or closed loop) over the HTTP API;
    /// measures publish-to-receive latency, loss and deliveries/s.
    Fanout(FanoutArgs),
    /// N users, each on its own inbox; the parent sends to every inbox at a
    /// fixed rate; at the middle a share of the connections is dropped and
    /// reconnects with `since`/`epoch`; measures recovery and continuity.
    Reconnect(ReconnectArgs),
    /// Users in pairs (Ringcast `send` to the peer's inbox) and groups (a
    /// channel per group, client `publish`), each sending at a fixed rate;
    /// measures send-to-receive latency, ack latency, loss per sender.
    Chat(ChatArgs),
    /// Draw SVG charts (latency percentiles, throughput, connections over
    /// time) from one or more results files written with `--out`.
    Plot(PlotArgs),
    /// Internal: one worker process (spawned by the parent).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// Flags shared by every scenario.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// WebSocket endpoint, `ws://host:port/path`; several, comma-separated,
    /// spread the connections round-robin (a server listening on several
    /// addresses or ports: each (source, target) pair has its own ~28k
    /// ephemeral ports).
    #[arg(long, default_value = "ws://127.0.0.1:8080/connection/websocket")]
    pub target: String,
    /// The workers' kernel event interface: `uring` (io_uring) or `epoll`.
    #[arg(long, value_enum, default_value = "uring")]
    pub driver: Driver,
    /// Pin worker i to core i mod cores (a dedicated load host; leave off
    /// when the server shares the cores).
    #[arg(long)]
    pub pin_cores: bool,
    /// HTTP API address (`host:port`).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub api: SocketAddr,
    /// The server's protocol: `ringcast` (JSON), `ringcast-binary` (rkyv),
    /// `nchan` (raw frames), `pushpin` (raw frames, GRIP publishes),
    /// `pusher` (Pusher Channels v7).
    #[arg(long, value_enum, default_value = "ringcast")]
    pub profile: Profile,
    /// JWT secret (HS256) used to sign one token per connection; required
    /// by the Ringcast profiles, unused by the others.
    #[arg(long, env = "RINGCAST_AUTH_JWT_SECRET")]
    pub secret: Option<String>,
    /// Total connections over all workers.
    #[arg(long, default_value_t = 1000)]
    pub connections: u32,
    /// Worker processes.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Source IPv4 range `a.b.c.d-a.b.c.e` (inclusive) or a single address.
    #[arg(long, default_value = "127.0.0.1")]
    pub source_ips: String,
    /// Seed for the WebSocket keys and masks (runs are reproducible).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write `<prefix>.json` and `<prefix>.csv`.
    #[arg(long)]
    pub out: Option<String>,
    /// Per-connection timeout for TCP connect + upgrade + `connect` message.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout_s: u64,
    /// Write one self-contained HTML report (parameters, host, results,
    /// thresholds, charts as inline SVG) to this file.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<std::path::PathBuf>,
    /// A limit the run must stay within, e.g. `p99<10ms`, `p999<=50ms`,
    /// `loss==0`, `errors<1%`, `deliveries_per_s>=100k`,
    /// `connected>=9900` (repeatable). Any crossed: exit status 3.
    /// Latencies: p50 p90 p99 p999 max (connect_/push_/ack_/recovery_
    /// prefixes pick a histogram) with us/ms/s; counts (loss, errors,
    /// duplicated, out_of_order, gaps, received, connected, subscribed,
    /// publish_errors, published, sent) bare or in % of their base; rates
    /// (deliveries_per_s, client_cores).
    #[arg(long = "threshold", value_name = "EXPR", value_parser = Threshold::parse)]
    pub thresholds: Vec<Threshold>,
    /// Server process ids (comma-separated) whose CPU % and RSS are sampled
    /// from /proc every 0.5 s for the report's resource timelines.
    #[arg(long, value_name = "PID[,PID]", value_parser = Pids::parse)]
    pub watch_pid: Option<Pids>,
}

/// `--watch-pid`'s processes (a type of its own: clap would read a
/// `Vec<u32>` as a repeated flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pids(pub Vec<u32>);

impl Pids {
    fn parse(text: &str) -> Result<Pids, crate::watch::WatchError> {
        crate::watch::parse_pids(text).map(Pids)
    }
}

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// New connections per second over all workers.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds to hold all connections after the last one was opened.
    #[arg(long, default_value_t = 10)]
    pub hold_s: u64,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Channel the subscribers join (with `--channels` above 1, the base
    /// of the channels' names). Default: `news:load` for the Ringcast
    /// profiles, `load` for the others.
    #[arg(long)]
    pub channel: Option<String>,
    /// Channels the subscribers spread over (round-robin within each
    /// worker); publication `k` goes to channel `k mod channels`. With more
    /// than one, the channels are `<channel>-0`, `<channel>-1`, ...
    #[arg(long, default_value_t = 1)]
    pub channels: u32,
    /// Publications per second (fixed schedule); 0 = as fast as the target
    /// takes (closed loop: at most `--window` publications ahead of the
    /// subscribers' deliveries).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds of publishing (fractions allowed); publications = rate x
    /// seconds unless `--publications` says otherwise. In closed loop, the
    /// most time publishing may take.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Publications to send (required with `--rate=0`).
    #[arg(long)]
    pub publications: Option<u64>,
    /// Closed loop: at most this many publications in flight, counted as
    /// not yet delivered to every subscriber (summed deliveries /
    /// subscribers, as the workers report them every 20 ms).
    #[arg(long, default_value_t = 32)]
    pub window: u64,
    /// New subscriber connections per second over all workers.
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// HTTP API key (Ringcast profiles).
    #[arg(long, env = "RINGCAST_API_KEY")]
    pub api_key: Option<String>,
    /// Seconds to wait for in-flight pushes after the last publication.
    #[arg(long, default_value_t = 5)]
    pub drain_s: u64,
    /// nchan, pushpin: where to POST publications, `http://ip:port/path`;
    /// `{channel}` in it is replaced by the channel.
    #[arg(long)]
    pub publish_url: Option<String>,
    /// pusher: the application id (`/apps/<id>/events`).
    #[arg(long)]
    pub pusher_app_id: Option<String>,
    /// pusher: the application key (`auth_key`).
    #[arg(long)]
    pub pusher_key: Option<String>,
    /// pusher: the application secret that signs publishes.
    #[arg(long, env = "RINGCAST_PUSHER_SECRET")]
    pub pusher_secret: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Messages per second per user (fixed schedule).
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Seconds of sending (fractions allowed); each user sends
    /// round(rate x seconds) messages.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Share of the users in 1:1 pairs (rounded down to an even count per
    /// worker); the others are in groups.
    #[arg(long, default_value_t = 0.5)]
    pub pair_share: f64,
    /// Members per group (at least; a worker's remainder is spread over its
    /// groups).
    #[arg(long, default_value_t = 8)]
    pub group_size: u32,
    /// Namespace of the group channels; it must allow client publishing
    /// (`room` in the shipped config; `chat` also keeps history).
    #[arg(long, default_value = "room")]
    pub group_namespace: String,
    /// New connections per second over all workers.
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// Seconds to wait for in-flight messages after the last send.
    #[arg(long, default_value_t = 5)]
    pub drain_s: u64,
    /// IM direct messages instead of inbox `send`s: each pair talks through
    /// `msg_send` (a durable DM, the engine needs `[im] enabled`), and every
    /// device of both users must get each message. Every user is in a pair
    /// (`--pair-share=1.0`); `--groups` adds IM groups.
    #[arg(long)]
    pub im: bool,
    /// IM: groups over the whole run (split over the workers), made through
    /// the HTTP API before the run (needs `--api-key`); each has
    /// `--group-size` members, `--online-share` of them online.
    #[arg(long, default_value_t = 0)]
    pub groups: u32,
    /// IM groups: share of each online member's messages sent to its group
    /// (the rest are DMs to its peer).
    #[arg(long, default_value_t = 1.0)]
    pub group_share: f64,
    /// IM groups: share of each group's members that are connected (with
    /// `--devices-per-user` devices each), rounded, at least 1; the others
    /// never connect.
    #[arg(long, default_value_t = 0.1)]
    pub online_share: f64,
    /// HTTP API key (IM groups are made through the API).
    #[arg(long, env = "RINGCAST_API_KEY")]
    pub api_key: Option<String>,
    /// IM: connections per user (all of them receive every DM of the
    /// user's conversation); `--connections` counts devices.
    #[arg(long, default_value_t = 1)]
    pub devices_per_user: u32,
    /// IM: each user's first device sends `read` after every N messages it
    /// received from its peer (0: never); the peer's devices get receipts.
    #[arg(long, default_value_t = 0)]
    pub read_every: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ReconnectArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Send requests per second (one `/api/send` per worker per tick, to
    /// every user of that worker).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds of sending (fractions allowed).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Share of each worker's connections dropped at the middle of the run.
    #[arg(long, default_value_t = 0.3)]
    pub drop_share: f64,
    /// Upper bound of the random (seeded) delay before a dropped connection
    /// reconnects, milliseconds.
    #[arg(long, default_value_t = 200)]
    pub reconnect_delay_ms: u64,
    /// New connections per second over all workers (initial connects).
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// HTTP API key.
    #[arg(long, env = "RINGCAST_API_KEY")]
    pub api_key: String,
    /// Seconds to wait for in-flight pushes after the last send.
    #[arg(long, default_value_t = 5)]
    pub drain_s: u64,
}

#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// Results files (`<prefix>.json` from `--out=<prefix>`); several files
    /// are drawn as one series each on the same charts.
    #[arg(required = true)]
    pub inputs: Vec<std::path::PathBuf>,
    /// Directory the SVG files are written to (created if missing).
    #[arg(long, default_value = "plots")]
    pub out_dir: std::path::PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Connect,
    Fanout,
    Reconnect,
    Chat,
}

/// One worker's share of a run. Everything the worker needs comes on the
/// command line so a worker can also be run by hand for debugging.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[arg(long)]
    pub scenario: Scenario,
    #[arg(long)]
    pub worker_idx: u32,
    #[arg(long)]
    pub target: String,
    #[arg(long, value_enum, default_value = "uring")]
    pub driver: Driver,
    #[arg(long)]
    pub pin_cores: bool,
    #[arg(long, value_enum, default_value = "ringcast")]
    pub profile: Profile,
    #[arg(long, env = "RINGCAST_AUTH_JWT_SECRET")]
    pub secret: Option<String>,
    #[arg(long)]
    pub connections: u32,
    /// This worker's connections per second.
    #[arg(long)]
    pub rate: f64,
    #[arg(long)]
    pub source_ips: String,
    #[arg(long)]
    pub seed: u64,
    #[arg(long)]
    pub connect_timeout_s: u64,
    /// connect: hold time after the last connection was opened.
    #[arg(long, default_value_t = 0)]
    pub hold_s: u64,
    /// fanout: channel to subscribe to (and, for URL-named channels, the
    /// one in the URL).
    #[arg(long, default_value = "")]
    pub channel: String,
    /// fanout: channels spread over (see `FanoutArgs::channels`).
    #[arg(long, default_value_t = 1)]
    pub channels: u32,
    /// chat: share of the users in pairs.
    #[arg(long, default_value_t = 0.0)]
    pub pair_share: f64,
    /// chat: members per group.
    #[arg(long, default_value_t = 8)]
    pub group_size: u32,
    /// chat: namespace of the group channels.
    #[arg(long, default_value = "room")]
    pub group_namespace: String,
    /// chat: messages each user sends.
    #[arg(long, default_value_t = 0)]
    pub messages: u64,
    /// chat: messages per second per user.
    #[arg(long, default_value_t = 1.0)]
    pub send_rate: f64,
    /// chat: IM direct messages (see `ChatArgs::im`).
    #[arg(long)]
    pub im: bool,
    /// chat, IM: connections per user.
    #[arg(long, default_value_t = 1)]
    pub devices_per_user: u32,
    /// chat, IM: a `read` after every N messages from the peer (0: never).
    #[arg(long, default_value_t = 0)]
    pub read_every: u64,
    /// chat, IM: this worker's groups (see `chat::ImGroups`).
    #[arg(long, default_value_t = 0)]
    pub im_groups: u32,
    /// chat, IM groups: members per group.
    #[arg(long, default_value_t = 0)]
    pub im_group_size: u32,
    /// chat, IM groups: online members per group.
    #[arg(long, default_value_t = 0)]
    pub im_group_online: u32,
    /// chat, IM groups: share of a member's messages sent to its group.
    #[arg(long, default_value_t = 0.0)]
    pub im_group_share: f64,
    /// chat, IM groups: the run's tag in group and user names.
    #[arg(long, default_value = "")]
    pub im_group_tag: String,
    /// fanout: publications the parent will send.
    #[arg(long, default_value_t = 0)]
    pub publications: u64,
    /// reconnect: share of the connections to drop when the parent says so.
    #[arg(long, default_value_t = 0.0)]
    pub drop_share: f64,
    /// reconnect: upper bound of the delay before reconnecting, ms.
    #[arg(long, default_value_t = 0)]
    pub reconnect_delay_ms: u64,
    /// Hard bound on the worker's run time; it stops by itself then.
    #[arg(long)]
    pub deadline_s: u64,
}

/// The worker's kernel event interface (see `poller.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Driver {
    /// io_uring: multishot polls, one `io_uring_enter` per loop turn.
    Uring,
    /// epoll, through mio.
    Epoll,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Uring => "uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// fanout: the name of channel `idx` of `channels` spread from `base`.
pub fn fanout_channel(base: &str, channels: u32, idx: u32) -> String {
    if channels <= 1 {
        base.to_owned()
    } else {
        format!("{base}-{}", idx % channels)
    }
}

/// An inclusive IPv4 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl IpRange {
    pub fn parse(text: &str) -> Result<IpRange, String> {
        let (first, last) = match text.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (text.trim(), text.trim()),
        };
        let first: Ipv4Addr = first
            .parse()
            .map_err(|e| format!("source IP range {text:?}: {first:?}: {e}"))?;
        let last: Ipv4Addr = last
            .parse()
            .map_err(|e| format!("source IP range {text:?}: {last:?}: {e}"))?;
        if u32::from(first) > u32::from(last) {
            return Err(format!(
                "source IP range {text:?}: first address is after the last"
            ));
        }
        Ok(IpRange { first, last })
    }

    pub fn len(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    pub fn nth(&self, idx: u32) -> Ipv4Addr {
        assert!(idx < self.len());
        Ipv4Addr::from(u32::from(self.first) + idx)
    }

    /// Split into `parts` contiguous slices as even as possible. With fewer
    /// addresses than parts, workers share addresses (round-robin).
    pub fn split(&self, parts: u32) -> Vec<IpRange> {
        assert!(parts > 0);
        let len = self.len();
        if len < parts {
            return (0..parts)
                .map(|part| {
                    let ip = self.nth(part % len);
                    IpRange {
                        first: ip,
                        last: ip,
                    }
                })
                .collect();
        }
        let mut out = Vec::with_capacity(parts as usize);
        let mut start = 0;
        for part in 0..parts {
            let size = len / parts + u32::from(part < len % parts);
            out.push(IpRange {
                first: self.nth(start),
                last: self.nth(start + size - 1),
            });
            start += size;
        }
        assert_eq!(start, len);
        out
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// A parsed `ws://host:port/path` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

impl Target {
    /// A comma-separated list of targets (at least one).
    pub fn parse_list(urls: &str) -> Result<Vec<Target>, String> {
        urls.split(',')
            .map(|url| Target::parse(url.trim()))
            .collect::<Result<Vec<_>, _>>()
    }

    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("target {url:?}: only ws:// is supported in this cut"))?;
        let (host, path) = match rest.find('/') {
            Some(idx) => (&rest[..idx], &rest[idx..]),
            None => (rest, "/"),
        };
        let addr: SocketAddr = host
            .parse()
            .map_err(|e| format!("target {url:?}: host must be ip:port ({e})"))?;
        Ok(Target {
            addr,
            host: host.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// Split `total` into `parts` counts as even as possible.
pub fn split_count(total: u32, parts: u32) -> Vec<u32> {
    assert!(parts > 0);
    (0..parts)
        .map(|part| total / parts + u32::from(part < total % parts))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_range_splits_evenly() {
        let range = IpRange::parse("127.0.1.1-127.0.1.5").unwrap();
        assert_eq!(range.len(), 5);
        let parts = range.split(2);
        assert_eq!(parts[0].to_string(), "127.0.1.1-127.0.1.3");
        assert_eq!(parts[1].to_string(), "127.0.1.4-127.0.1.5");
        let shared = IpRange::parse("127.0.0.1").unwrap().split(3);
        assert!(shared.iter().all(|r| r.len() == 1));
        assert!(IpRange::parse("127.0.0.2-127.0.0.1").is_err());
    }

    #[test]
    fn target_parses() {
        let target = Target::parse("ws://127.0.0.1:8080/connection/websocket").unwrap();
        assert_eq!(target.path, "/connection/websocket");
        assert!(Target::parse("wss://x").is_err());
        let list = Target::parse_list("ws://127.0.0.1:1/a, ws://127.0.0.2:2/b").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].addr.port(), 2);
        assert!(Target::parse_list("ws://127.0.0.1:1/a,").is_err());
        assert_eq!(split_count(5, 2), vec![3, 2]);
    }
}
