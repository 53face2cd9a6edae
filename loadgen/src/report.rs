//! The run summary: merged from the workers' results and rendered as a
//! table (stdout), JSON and CSV (`--out=<prefix>`).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::host::{HostFacts, Parameter};
use crate::stats::{ErrorCounts, KindCounts};
use crate::threshold::ThresholdOutcome;
use crate::watch::WatchedProcess;

/// Percentiles of one latency histogram, microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn from_histogram(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        Latency {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// One point of a latency percentile spectrum (for HDR-style plots).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct SpectrumPoint {
    pub quantile: f64,
    pub value_us: u64,
}

/// The quantiles every spectrum is sampled at: dense towards the tail.
pub const SPECTRUM_QUANTILES: [f64; 14] = [
    0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99995, 0.99999, 1.0,
];

pub fn spectrum(histogram: &Histogram<u64>) -> Vec<SpectrumPoint> {
    if histogram.is_empty() {
        return Vec::new();
    }
    SPECTRUM_QUANTILES
        .iter()
        .map(|&quantile| SpectrumPoint {
            quantile,
            value_us: histogram.value_at_quantile(quantile),
        })
        .collect()
}

/// The live line's figures, once a second (and at the end), kept for `plot`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the parent started the workers.
    pub t_s: f64,
    pub open: u64,
    pub subscribed: u64,
    /// Messages received per second over all workers, over the last interval.
    pub msgs_per_s: f64,
    /// Connections that got their `connect` message per second, over the
    /// last interval.
    #[serde(default)]
    pub connects_per_s: f64,
    /// The highest of the workers' own p99s so far (an upper bound of the
    /// merged p99), microseconds.
    pub p99_us_max: u64,
    pub errors: u64,
}

/// The load generator's own cost, so a saturated client is visible.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ClientUsage {
    /// CPU time of the workers (user + system), milliseconds.
    pub workers_cpu_ms: u64,
    /// CPU time of the parent (publisher/sender threads), milliseconds.
    pub parent_cpu_ms: u64,
    /// Average cores busy over the run: (workers + parent CPU) / elapsed.
    pub cores_busy: f64,
    /// Peak RSS summed over the workers, kilobytes.
    pub workers_max_rss_kb: u64,
    /// Peak RSS growth after start, summed over workers, divided by the most
    /// connections open at once: the client's user-space memory per
    /// connection, bytes.
    pub rss_per_connection_bytes: u64,
}

impl ClientUsage {
    pub fn from_results(
        results: &[crate::stats::WorkerResult],
        parent: crate::stats::Rusage,
        elapsed_s: f64,
    ) -> ClientUsage {
        let workers_cpu_ms: u64 = results
            .iter()
            .map(|r| r.rusage.cpu_user_ms + r.rusage.cpu_sys_ms)
            .sum();
        let parent_cpu_ms = parent.cpu_user_ms + parent.cpu_sys_ms;
        let growth_kb: u64 = results
            .iter()
            .map(|r| r.rusage.max_rss_kb.saturating_sub(r.rss_start_kb))
            .sum();
        let open_max: u64 = results.iter().map(|r| r.open_max).sum();
        ClientUsage {
            workers_cpu_ms,
            parent_cpu_ms,
            cores_busy: if elapsed_s > 0.0 {
                (workers_cpu_ms + parent_cpu_ms) as f64 / 1000.0 / elapsed_s
            } else {
                0.0
            },
            workers_max_rss_kb: results.iter().map(|r| r.rusage.max_rss_kb).sum(),
            rss_per_connection_bytes: (growth_kb * 1024).checked_div(open_max).unwrap_or(0),
        }
    }
}

/// chat, IM: one kind of message's figures over all workers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KindSummary {
    #[serde(flatten)]
    pub counts: KindCounts,
    /// expected − received (never negative).
    pub lost: u64,
    /// Intended send time -> reply.
    pub ack_latency: Latency,
    /// Intended send time -> each device's push.
    pub push_latency: Latency,
    /// received / the send schedule's seconds.
    pub deliveries_per_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    pub target: String,
    pub workers: u32,
    /// Connections asked for.
    pub connections: u32,
    /// Connections whose TCP connect was started.
    pub attempted: u64,
    /// Connections that received the server's `connect` message.
    pub connected: u64,
    /// fanout: connections whose subscribe was acknowledged.
    pub subscribed: u64,
    /// fanout: publications the API accepted.
    pub published: u64,
    /// fanout: publications the API refused or that failed in transit.
    pub publish_errors: u64,
    /// fanout: subscribed × published.
    pub expected: u64,
    /// fanout: distinct publications received, summed over subscribers.
    pub received: u64,
    /// fanout: expected − received (never negative).
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Errors by kind (see README).
    pub errors: ErrorCounts,
    pub errors_total: u64,
    /// TCP connect start -> `connect` message received.
    pub connect_latency: Latency,
    /// fanout: intended publish time (schedule) -> push received.
    pub push_latency: Latency,
    /// reconnect: connections dropped at the middle of the run.
    pub dropped: u64,
    /// reconnect: dropped connections that got the id-0 recovery reply.
    pub reconnected: u64,
    pub recovered_true: u64,
    pub recovered_false: u64,
    /// reconnect: publications replayed at reconnect, summed.
    pub replayed: u64,
    /// reconnect: offsets missing between a connection's first and last.
    pub gaps: u64,
    /// reconnect: reconnect start -> id-0 recovery reply.
    pub recovery_latency: Latency,
    /// The target profile (`ringcast`, `ringcast-binary`, `nchan`, ...).
    #[serde(default)]
    pub profile: String,
    /// chat: messages the users wrote (`published`: those acknowledged,
    /// `publish_errors`: those refused).
    #[serde(default)]
    pub sent: u64,
    /// chat: intended send time -> the send's or publish's reply.
    #[serde(default)]
    pub ack_latency: Latency,
    pub elapsed_s: f64,
    /// fanout: the channels the subscribers spread over.
    #[serde(default)]
    pub channels: u32,
    /// fanout: seconds from the first publication to the last delivery (or
    /// the end of the drain).
    #[serde(default)]
    pub delivery_s: f64,
    /// fanout: received / delivery_s, the fan-out throughput.
    #[serde(default)]
    pub deliveries_per_s: f64,
    /// chat, IM: `read` commands sent and answered.
    #[serde(default)]
    pub reads_sent: u64,
    #[serde(default)]
    pub reads_acked: u64,
    /// chat, IM: receipts the acknowledged reads owe (the peer's devices
    /// connected when each read was sent) and those that arrived.
    #[serde(default)]
    pub receipts_expected: u64,
    #[serde(default)]
    pub receipts: u64,
    /// chat, IM: DMs and group messages apart (the totals above hold
    /// both); absent outside IM.
    #[serde(default)]
    pub im_dm: Option<KindSummary>,
    #[serde(default)]
    pub im_group: Option<KindSummary>,
    /// The load generator's own CPU and memory.
    #[serde(default)]
    pub client: ClientUsage,
    /// Percentile spectra of the merged histograms (for `plot`).
    #[serde(default)]
    pub connect_spectrum: Vec<SpectrumPoint>,
    #[serde(default)]
    pub push_spectrum: Vec<SpectrumPoint>,
    /// The live line, once a second and at the end (for `plot`).
    #[serde(default)]
    pub timeline: Vec<TimelinePoint>,
    /// The command line's parameters (secrets masked).
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// The load host.
    #[serde(default)]
    pub host: HostFacts,
    /// `--watch-pid`: the server processes' CPU and RSS over the run.
    #[serde(default)]
    pub watched: Vec<WatchedProcess>,
    /// `--threshold`: each limit, passed or not.
    #[serde(default)]
    pub thresholds: Vec<ThresholdOutcome>,
    /// Likely causes of failed connections (see `diagnose`).
    #[serde(default)]
    pub hints: Vec<String>,
}

impl Summary {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario      {}  profile {}  target {}  workers {}",
            self.scenario, self.profile, self.target, self.workers
        );
        let _ = writeln!(
            out,
            "connections   asked {}  attempted {}  connected {}",
            self.connections, self.attempted, self.connected
        );
        if self.scenario == "reconnect" {
            let _ = writeln!(
                out,
                "sends         requests {}  errors {}",
                self.published, self.publish_errors
            );
            let _ = writeln!(
                out,
                "reconnect     dropped {}  reconnected {}  recovered {}  not recovered {}  \
                 replayed {}",
                self.dropped,
                self.reconnected,
                self.recovered_true,
                self.recovered_false,
                self.replayed
            );
            let _ = writeln!(
                out,
                "pushes        expected {}  received {}  lost {}  gaps {}  duplicated {}  \
                 out-of-order {}",
                self.expected,
                self.received,
                self.lost,
                self.gaps,
                self.duplicated,
                self.out_of_order
            );
        }
        if self.scenario == "chat" {
            let _ = writeln!(
                out,
                "subscribed    {}  over {} channel(s)",
                self.subscribed,
                self.channels.max(1)
            );
            let _ = writeln!(
                out,
                "messages      sent {}  acked {}  refused {}",
                self.sent, self.published, self.publish_errors
            );
            let _ = writeln!(
                out,
                "deliveries    expected {}  received {}  lost {}  duplicated {}  out-of-order {}  \
                 gaps {}",
                self.expected,
                self.received,
                self.lost,
                self.duplicated,
                self.out_of_order,
                self.gaps
            );
            let _ = writeln!(
                out,
                "throughput    {:.0} deliveries/s over the {:.2} s schedule",
                self.deliveries_per_s, self.delivery_s
            );
            if self.reads_sent > 0 {
                let _ = writeln!(
                    out,
                    "reads         sent {}  acked {}  receipts expected {}  received {}",
                    self.reads_sent, self.reads_acked, self.receipts_expected, self.receipts
                );
            }
            for (name, kind) in self.im_kinds() {
                let counts = &kind.counts;
                let _ = writeln!(
                    out,
                    "im {name:<10} sent {}  acked {}  refused {}  deliveries expected {}  \
                     received {}  lost {}  dup {}  out-of-order {}  gaps {}  {:.0}/s",
                    counts.sent,
                    counts.acked,
                    counts.ack_errors,
                    counts.expected,
                    counts.received,
                    kind.lost,
                    counts.duplicated,
                    counts.out_of_order,
                    counts.gaps,
                    kind.deliveries_per_s
                );
            }
        }
        if self.scenario == "fanout" {
            let _ = writeln!(out, "subscribed    {}", self.subscribed);
            let _ = writeln!(
                out,
                "published     {}  publish errors {}",
                self.published, self.publish_errors
            );
            let _ = writeln!(
                out,
                "pushes        expected {}  received {}  lost {}  duplicated {}  out-of-order {}",
                self.expected, self.received, self.lost, self.duplicated, self.out_of_order
            );
            let _ = writeln!(
                out,
                "throughput    {:.0} deliveries/s over {:.2} s (first publication to last delivery)",
                self.deliveries_per_s, self.delivery_s
            );
        }
        let _ = writeln!(
            out,
            "{:<14}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "latency (us)", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        let mut row = |name: &str, latency: &Latency| {
            let _ = writeln!(
                out,
                "{:<14}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
                name,
                latency.count,
                latency.p50_us,
                latency.p90_us,
                latency.p99_us,
                latency.p999_us,
                latency.max_us
            );
        };
        for (name, latency) in self.latency_rows() {
            row(&name, latency);
        }
        let _ = writeln!(out, "errors        {}", self.errors_total);
        for (kind, count) in &self.errors {
            let _ = writeln!(out, "  {kind:<30}{count}");
        }
        let _ = writeln!(
            out,
            "client        cpu {:.2} cores busy (workers {} ms, parent {} ms)  memory {} B/conn \
             (peak RSS {} KiB over workers)",
            self.client.cores_busy,
            self.client.workers_cpu_ms,
            self.client.parent_cpu_ms,
            self.client.rss_per_connection_bytes,
            self.client.workers_max_rss_kb
        );
        for process in &self.watched {
            let _ = writeln!(
                out,
                "server        pid {} ({})  cpu avg {:.0}% peak {:.0}%  rss start {:.1} MiB \
                 peak {:.1} MiB{}",
                process.pid,
                process.name,
                process.cpu_avg_pct(),
                process.cpu_peak_pct(),
                process.rss_start_kb() as f64 / 1024.0,
                process.rss_peak_kb() as f64 / 1024.0,
                process
                    .exited_at_s
                    .map(|t| format!("  exited at {t:.1} s"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(out, "elapsed       {:.1} s", self.elapsed_s);
        for hint in &self.hints {
            let _ = writeln!(out, "hint          {hint}");
        }
        for outcome in &self.thresholds {
            let _ = writeln!(
                out,
                "threshold     {:<24}{}  (actual {})",
                outcome.expr,
                if outcome.passed { "passed" } else { "FAILED" },
                outcome.actual
            );
        }
        out
    }

    /// The latency histograms this scenario reports, with their names.
    pub fn latency_rows(&self) -> Vec<(String, &Latency)> {
        let mut rows = vec![("connect".to_owned(), &self.connect_latency)];
        if self.scenario != "connect" {
            rows.push(("push".to_owned(), &self.push_latency));
        }
        if self.scenario == "reconnect" {
            rows.push(("recovery".to_owned(), &self.recovery_latency));
        }
        if self.scenario == "chat" {
            rows.push(("ack".to_owned(), &self.ack_latency));
            for (name, kind) in self.im_kinds() {
                rows.push((format!("{name} ack"), &kind.ack_latency));
                rows.push((format!("{name} push"), &kind.push_latency));
            }
        }
        rows
    }

    /// chat, IM: the kinds of message with their names.
    pub fn im_kinds(&self) -> impl Iterator<Item = (&'static str, &KindSummary)> {
        [("dm", &self.im_dm), ("group", &self.im_group)]
            .into_iter()
            .filter_map(|(name, kind)| kind.as_ref().map(|kind| (name, kind)))
    }

    /// `metric,value` rows; one file per run, easy to concatenate.
    pub fn csv(&self) -> String {
        let mut out = String::from("metric,value\n");
        let mut put = |name: &str, value: String| {
            let _ = writeln!(out, "{name},{value}");
        };
        put("scenario", self.scenario.clone());
        put("target", self.target.clone());
        put("workers", self.workers.to_string());
        put("connections", self.connections.to_string());
        put("attempted", self.attempted.to_string());
        put("connected", self.connected.to_string());
        put("subscribed", self.subscribed.to_string());
        put("published", self.published.to_string());
        put("publish_errors", self.publish_errors.to_string());
        put("expected", self.expected.to_string());
        put("received", self.received.to_string());
        put("lost", self.lost.to_string());
        put("duplicated", self.duplicated.to_string());
        put("out_of_order", self.out_of_order.to_string());
        put("dropped", self.dropped.to_string());
        put("reconnected", self.reconnected.to_string());
        put("recovered_true", self.recovered_true.to_string());
        put("recovered_false", self.recovered_false.to_string());
        put("replayed", self.replayed.to_string());
        put("gaps", self.gaps.to_string());
        put("reads_sent", self.reads_sent.to_string());
        put("reads_acked", self.reads_acked.to_string());
        put("receipts_expected", self.receipts_expected.to_string());
        put("receipts", self.receipts.to_string());
        put("profile", self.profile.clone());
        put("sent", self.sent.to_string());
        put("errors_total", self.errors_total.to_string());
        for (name, latency) in [
            ("connect", &self.connect_latency),
            ("recovery", &self.recovery_latency),
            ("ack", &self.ack_latency),
            ("push", &self.push_latency),
        ] {
            put(&format!("{name}_count"), latency.count.to_string());
            put(&format!("{name}_p50_us"), latency.p50_us.to_string());
            put(&format!("{name}_p90_us"), latency.p90_us.to_string());
            put(&format!("{name}_p99_us"), latency.p99_us.to_string());
            put(&format!("{name}_p999_us"), latency.p999_us.to_string());
            put(&format!("{name}_max_us"), latency.max_us.to_string());
        }
        for (name, kind) in self.im_kinds() {
            let counts = &kind.counts;
            for (field, value) in [
                ("sent", counts.sent),
                ("acked", counts.acked),
                ("refused", counts.ack_errors),
                ("expected", counts.expected),
                ("received", counts.received),
                ("lost", kind.lost),
                ("duplicated", counts.duplicated),
                ("out_of_order", counts.out_of_order),
                ("gaps", counts.gaps),
            ] {
                put(&format!("{name}_{field}"), value.to_string());
            }
            for (which, latency) in [("ack", &kind.ack_latency), ("push", &kind.push_latency)] {
                put(
                    &format!("{name}_{which}_p50_us"),
                    latency.p50_us.to_string(),
                );
                put(
                    &format!("{name}_{which}_p99_us"),
                    latency.p99_us.to_string(),
                );
            }
            put(
                &format!("{name}_deliveries_per_s"),
                format!("{:.0}", kind.deliveries_per_s),
            );
        }
        for (kind, count) in &self.errors {
            put(&format!("error_{kind}"), count.to_string());
        }
        put(
            "client_workers_cpu_ms",
            self.client.workers_cpu_ms.to_string(),
        );
        put(
            "client_parent_cpu_ms",
            self.client.parent_cpu_ms.to_string(),
        );
        put(
            "client_cores_busy",
            format!("{:.3}", self.client.cores_busy),
        );
        put(
            "client_workers_max_rss_kb",
            self.client.workers_max_rss_kb.to_string(),
        );
        put(
            "client_rss_per_connection_bytes",
            self.client.rss_per_connection_bytes.to_string(),
        );
        put("channels", self.channels.to_string());
        put("delivery_s", format!("{:.3}", self.delivery_s));
        put("deliveries_per_s", format!("{:.0}", self.deliveries_per_s));
        put("elapsed_s", format!("{:.3}", self.elapsed_s));
        out
    }
}
