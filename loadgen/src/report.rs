//! The run summary: merged from the workers' results and rendered as a
//! table (stdout), JSON and CSV (`--out=<prefix>`).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::stats::ErrorCounts;

/// Percentiles of one latency histogram, microseconds.
#[derive(Debug, Clone, Default, Serialize)]
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

#[derive(Debug, Clone, Default, Serialize)]
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
    pub elapsed_s: f64,
}

impl Summary {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario      {}  target {}  workers {}",
            self.scenario, self.target, self.workers
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
        row("connect", &self.connect_latency);
        if self.scenario != "connect" {
            row("push", &self.push_latency);
        }
        if self.scenario == "reconnect" {
            row("recovery", &self.recovery_latency);
        }
        let _ = writeln!(out, "errors        {}", self.errors_total);
        for (kind, count) in &self.errors {
            let _ = writeln!(out, "  {kind:<30}{count}");
        }
        let _ = writeln!(out, "elapsed       {:.1} s", self.elapsed_s);
        out
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
        put("errors_total", self.errors_total.to_string());
        for (name, latency) in [
            ("connect", &self.connect_latency),
            ("recovery", &self.recovery_latency),
            ("push", &self.push_latency),
        ] {
            put(&format!("{name}_count"), latency.count.to_string());
            put(&format!("{name}_p50_us"), latency.p50_us.to_string());
            put(&format!("{name}_p90_us"), latency.p90_us.to_string());
            put(&format!("{name}_p99_us"), latency.p99_us.to_string());
            put(&format!("{name}_p999_us"), latency.p999_us.to_string());
            put(&format!("{name}_max_us"), latency.max_us.to_string());
        }
        for (kind, count) in &self.errors {
            put(&format!("error_{kind}"), count.to_string());
        }
        put("elapsed_s", format!("{:.3}", self.elapsed_s));
        out
    }
}
