//! Per-shard counters, written by their shard only and read by the control
//! thread for `/metrics` and `/api/stats`.
//!
//! Each counter has a single writer, so an increment is a relaxed load and
//! store (no locked read-modify-write on the hot path); readers may see a
//! value a few increments old, which is what a scrape expects.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::proxy::{Decision, ProxyError, ProxyEvent};

/// A counter with exactly one writing thread.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_sub(n),
            Ordering::Relaxed,
        );
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Everything one shard counts. The field names are the metric names.
#[derive(Default)]
pub struct ShardMetrics {
    pub connections: Counter,
    pub connections_accepted: Counter,
    pub handshakes_failed: Counter,
    pub auth_failures: Counter,
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub publications: Counter,
    pub mesh_full: Counter,
    pub slow_consumer_disconnects: Counter,
    pub heartbeat_timeouts: Counter,
    pub protocol_errors: Counter,
    pub subscriptions: Counter,
    pub rate_limited: Counter,
    pub rate_limit_disconnects: Counter,
    pub accepts_rate_limited: Counter,
    /// Typing signals dropped by a limit or a group's size.
    pub im_typing_dropped: Counter,
    /// Group member reads for typing (one per group and cache period,
    /// however many signals waited on it).
    pub im_typing_group_reads: Counter,
    /// Group typing signals sent to other shards (one per shard).
    pub im_typing_mesh_events: Counter,
    /// Proxy calls this shard made, by `ProxyEvent::index`.
    pub proxy: [ProxyCounters; ProxyEvent::ALL.len()],
}

/// Upper bounds of the proxy latency histogram's buckets, microseconds
/// (rendered in seconds); slower calls fall in `+Inf` only.
pub const PROXY_LATENCY_BUCKETS_US: [u64; 8] = [
    1_000, 2_500, 10_000, 25_000, 100_000, 250_000, 1_000_000, 5_000_000,
];

/// One proxy event's counters on one shard: calls made, their outcomes,
/// and how long each took from the shard's hand-over to its answer back
/// on the shard (a histogram).
#[derive(Default)]
pub struct ProxyCounters {
    pub calls: Counter,
    pub allowed: Counter,
    pub denied: Counter,
    pub disconnects: Counter,
    pub timeouts: Counter,
    pub unavailable: Counter,
    pub bad_responses: Counter,
    latency_us_sum: Counter,
    /// Not cumulative: each call counts in its one bucket; `+Inf` is the
    /// last.
    latency_buckets: [Counter; PROXY_LATENCY_BUCKETS_US.len() + 1],
}

impl ProxyCounters {
    /// A call came back after `latency_us` with `result`. `result` is the
    /// final word: an answer the engine could not use counts as a bad
    /// response, not as allowed.
    pub fn record(&self, latency_us: u64, result: &Result<Decision, ProxyError>) {
        let outcome = match result {
            Ok(Decision::Allow { .. }) => &self.allowed,
            Ok(Decision::Deny { .. }) => &self.denied,
            Ok(Decision::Disconnect { .. }) => &self.disconnects,
            Err(ProxyError::Timeout(_)) => &self.timeouts,
            Err(ProxyError::Unavailable(_) | ProxyError::Stopped) => &self.unavailable,
            Err(ProxyError::BadResponse(_)) => &self.bad_responses,
        };
        outcome.add(1);
        self.latency_us_sum.add(latency_us);
        let bucket = PROXY_LATENCY_BUCKETS_US
            .iter()
            .position(|&bound| latency_us <= bound)
            .unwrap_or(PROXY_LATENCY_BUCKETS_US.len());
        self.latency_buckets[bucket].add(1);
    }

    /// (metric suffix, value) of the counters, in output order.
    fn counters(&self) -> [(&'static str, u64); 7] {
        [
            ("calls_total", self.calls.get()),
            ("allowed_total", self.allowed.get()),
            ("denied_total", self.denied.get()),
            ("disconnects_total", self.disconnects.get()),
            ("timeouts_total", self.timeouts.get()),
            ("unavailable_total", self.unavailable.get()),
            ("bad_responses_total", self.bad_responses.get()),
        ]
    }
}

/// Help of the proxy counters, by suffix.
const PROXY_HELP: [(&str, &str); 7] = [
    ("calls_total", "Calls made to a proxy backend, by event."),
    ("allowed_total", "Proxy calls the backend allowed."),
    ("denied_total", "Proxy calls the backend denied."),
    (
        "disconnects_total",
        "Proxy calls the backend answered with disconnect.",
    ),
    (
        "timeouts_total",
        "Proxy calls without an answer within the timeout.",
    ),
    (
        "unavailable_total",
        "Proxy calls that could not reach the backend (or over its outstanding bound).",
    ),
    (
        "bad_responses_total",
        "Proxy calls answered with a non-2xx status or a body the engine could not use.",
    ),
];

/// Appends the proxy counters and the latency histogram, labelled by shard
/// and event.
fn render_proxy(out: &mut String, shards: &[CachePadded<ShardMetrics>]) {
    for (index, (suffix, help)) in PROXY_HELP.iter().enumerate() {
        let _ = writeln!(out, "# HELP ringcast_proxy_{suffix} {help}");
        let _ = writeln!(out, "# TYPE ringcast_proxy_{suffix} counter");
        for (shard_idx, shard) in shards.iter().enumerate() {
            for event in ProxyEvent::ALL {
                let value = shard.proxy[event.index()].counters()[index].1;
                let _ = writeln!(
                    out,
                    "ringcast_proxy_{suffix}{{shard=\"{shard_idx}\",event=\"{}\"}} {value}",
                    event.name()
                );
            }
        }
    }
    let name = "ringcast_proxy_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Proxy call time, from the shard's hand-over to the answer back on the shard."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (shard_idx, shard) in shards.iter().enumerate() {
        for event in ProxyEvent::ALL {
            let counters = &shard.proxy[event.index()];
            let labels = format!("shard=\"{shard_idx}\",event=\"{}\"", event.name());
            let mut cumulative = 0;
            for (bucket, bound_us) in PROXY_LATENCY_BUCKETS_US.iter().enumerate() {
                cumulative += counters.latency_buckets[bucket].get();
                let le = *bound_us as f64 / 1e6;
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
            }
            cumulative += counters.latency_buckets[PROXY_LATENCY_BUCKETS_US.len()].get();
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
            let sum = counters.latency_us_sum.get() as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
        }
    }
}

/// (metric name, help, is a gauge) in output order.
const METRICS: [(&str, &str, bool); 20] = [
    ("connections", "Open WebSocket connections.", true),
    (
        "connections_accepted_total",
        "WebSocket upgrades completed.",
        false,
    ),
    (
        "handshakes_failed_total",
        "Upgrade requests refused or timed out.",
        false,
    ),
    (
        "auth_failures_total",
        "Upgrades refused for a missing, bad or expired token.",
        false,
    ),
    ("messages_in_total", "Client data messages received.", false),
    (
        "messages_out_total",
        "Frames queued to clients (pushes, replies, control).",
        false,
    ),
    ("bytes_in_total", "Bytes read from client sockets.", false),
    ("bytes_out_total", "Bytes written to client sockets.", false),
    (
        "publications_total",
        "Publications delivered into this shard.",
        false,
    ),
    (
        "mesh_full_total",
        "Cross-shard sends refused because the pair queue was full.",
        false,
    ),
    (
        "slow_consumer_disconnects_total",
        "Connections closed with 1013 for not reading.",
        false,
    ),
    (
        "heartbeat_timeouts_total",
        "Connections closed with 4005 for not answering pings.",
        false,
    ),
    (
        "protocol_errors_total",
        "Connections closed for violating RFC 6455 or the client protocol.",
        false,
    ),
    (
        "subscriptions",
        "Channel subscriptions held by connections.",
        true,
    ),
    (
        "rate_limited_total",
        "Client commands refused by a rate limit (error 114).",
        false,
    ),
    (
        "rate_limit_disconnects_total",
        "Connections closed with 4008 for going on past rate-limit refusals.",
        false,
    ),
    (
        "accepts_rate_limited_total",
        "Connections closed at accept: their source was over its accept rate.",
        false,
    ),
    (
        "im_typing_dropped_total",
        "Typing signals dropped by a rate limit or a group's size (answered {}).",
        false,
    ),
    (
        "im_typing_group_reads_total",
        "Group member reads for typing, shared by the signals that waited on them.",
        false,
    ),
    (
        "im_typing_mesh_events_total",
        "Group typing signals sent to other shards, one per destination shard.",
        false,
    ),
];

impl ShardMetrics {
    fn values(&self) -> [u64; METRICS.len()] {
        [
            self.connections.get(),
            self.connections_accepted.get(),
            self.handshakes_failed.get(),
            self.auth_failures.get(),
            self.messages_in.get(),
            self.messages_out.get(),
            self.bytes_in.get(),
            self.bytes_out.get(),
            self.publications.get(),
            self.mesh_full.get(),
            self.slow_consumer_disconnects.get(),
            self.heartbeat_timeouts.get(),
            self.protocol_errors.get(),
            self.subscriptions.get(),
            self.rate_limited.get(),
            self.rate_limit_disconnects.get(),
            self.accepts_rate_limited.get(),
            self.im_typing_dropped.get(),
            self.im_typing_group_reads.get(),
            self.im_typing_mesh_events.get(),
        ]
    }

    /// Named values, for the JSON stats endpoint.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        METRICS
            .iter()
            .zip(self.values())
            .map(|((name, _, _), value)| (*name, value))
            .collect()
    }
}

pub type AllShardMetrics = Box<[CachePadded<ShardMetrics>]>;

pub fn new_all(n_shards: usize) -> AllShardMetrics {
    (0..n_shards)
        .map(|_| CachePadded::new(ShardMetrics::default()))
        .collect()
}

/// A node-wide metric beside the per-shard ones.
pub struct NodeMetric<'a> {
    pub name: &'a str,
    pub help: &'a str,
    pub is_gauge: bool,
    pub value: u64,
}

/// Renders the Prometheus text exposition format (version 0.0.4).
pub fn render_prometheus(shards: &[CachePadded<ShardMetrics>], extra: &[NodeMetric<'_>]) -> String {
    let mut out = String::with_capacity(4096);
    let values: Vec<[u64; METRICS.len()]> = shards.iter().map(|m| m.values()).collect();
    for (metric_idx, (name, help, is_gauge)) in METRICS.iter().enumerate() {
        let kind = if *is_gauge { "gauge" } else { "counter" };
        let _ = writeln!(out, "# HELP ringcast_{name} {help}");
        let _ = writeln!(out, "# TYPE ringcast_{name} {kind}");
        for (shard_idx, shard_values) in values.iter().enumerate() {
            let _ = writeln!(
                out,
                "ringcast_{name}{{shard=\"{shard_idx}\"}} {}",
                shard_values[metric_idx]
            );
        }
    }
    render_proxy(&mut out, shards);
    for metric in extra {
        let NodeMetric {
            name, help, value, ..
        } = metric;
        let kind = if metric.is_gauge { "gauge" } else { "counter" };
        let _ = writeln!(out, "# HELP ringcast_{name} {help}");
        let _ = writeln!(out, "# TYPE ringcast_{name} {kind}");
        let _ = writeln!(out, "ringcast_{name} {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_per_shard() {
        let shards = new_all(2);
        shards[1].connections.add(3);
        shards[1].connections.sub(1);
        shards[0].bytes_out.add(10);
        let text = render_prometheus(
            &shards,
            &[
                NodeMetric {
                    name: "channels",
                    help: "Channels with subscribers.",
                    is_gauge: true,
                    value: 7,
                },
                NodeMetric {
                    name: "store_commits_total",
                    help: "Group commits.",
                    is_gauge: false,
                    value: 3,
                },
            ],
        );
        assert!(text.contains("ringcast_connections{shard=\"1\"} 2\n"));
        assert!(text.contains("ringcast_bytes_out_total{shard=\"0\"} 10\n"));
        assert!(text.contains("# TYPE ringcast_connections gauge\n"));
        assert!(text.contains("# TYPE ringcast_bytes_out_total counter\n"));
        assert!(text.contains("ringcast_channels 7\n"));
        assert!(text.contains(
            "# TYPE ringcast_store_commits_total counter\nringcast_store_commits_total 3\n"
        ));
        assert_eq!(
            text.matches("{shard=").count(),
            2 * METRICS.len() + 2 * ProxyEvent::ALL.len() * (PROXY_HELP.len() + 11)
        );
    }

    #[test]
    fn proxy_outcomes_and_latency_render_per_event() {
        let shards = new_all(1);
        let connect = &shards[0].proxy[ProxyEvent::Connect.index()];
        connect.calls.add(3);
        let allow = Ok(Decision::Allow {
            data: None,
            overrides: None,
            skip_history: false,
        });
        connect.record(800, &allow);
        connect.record(30_000, &Err(ProxyError::Timeout(30)));
        connect.record(9_000_000, &Err(ProxyError::Stopped));
        let text = render_prometheus(&shards, &[]);
        for line in [
            "ringcast_proxy_calls_total{shard=\"0\",event=\"connect\"} 3\n",
            "ringcast_proxy_allowed_total{shard=\"0\",event=\"connect\"} 1\n",
            "ringcast_proxy_timeouts_total{shard=\"0\",event=\"connect\"} 1\n",
            "ringcast_proxy_unavailable_total{shard=\"0\",event=\"connect\"} 1\n",
            "ringcast_proxy_denied_total{shard=\"0\",event=\"publish\"} 0\n",
            "ringcast_proxy_latency_seconds_bucket{shard=\"0\",event=\"connect\",le=\"0.001\"} 1\n",
            "ringcast_proxy_latency_seconds_bucket{shard=\"0\",event=\"connect\",le=\"0.1\"} 2\n",
            "ringcast_proxy_latency_seconds_bucket{shard=\"0\",event=\"connect\",le=\"5\"} 2\n",
            "ringcast_proxy_latency_seconds_bucket{shard=\"0\",event=\"connect\",le=\"+Inf\"} 3\n",
            "ringcast_proxy_latency_seconds_sum{shard=\"0\",event=\"connect\"} 9.0308\n",
            "ringcast_proxy_latency_seconds_count{shard=\"0\",event=\"connect\"} 3\n",
            "# TYPE ringcast_proxy_latency_seconds histogram\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
