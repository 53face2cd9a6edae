//! `--threshold EXPR`: limits a run must stay within, so a run can gate CI.
//!
//! An expression is `<metric><op><value>`, e.g. `p99<10ms`, `loss==0`,
//! `errors<1%`, `deliveries_per_s>=100k`, `connected>=9900`. They are
//! parsed when the command line is (an invalid one is refused before
//! anything runs) and evaluated against the summary after the run; any
//! crossed threshold makes the run exit with status 3 (see `main`).
//!
//! Metrics:
//! - latencies, with a time unit (`us`, `ms`, `s`): `p50`, `p90`, `p99`,
//!   `p999` (or `p99.9`), `max` of the scenario's main latency (connect in
//!   `connect`, push otherwise), or of one histogram with a prefix:
//!   `connect_p99`, `push_p99`, `ack_p99`, `recovery_p99`, ...;
//! - counts, bare or as a percentage of their base (`%`): `loss`/`lost`,
//!   `duplicated`, `out_of_order`, `gaps`, `received` (of the expected
//!   deliveries), `errors` (of connections attempted plus messages sent),
//!   `publish_errors` (of publications), `connected`, `subscribed` (of the
//!   connections asked for), `published`, `sent`;
//! - rates, bare with an optional `k`/`M` suffix: `deliveries_per_s`,
//!   `client_cores` (the load generator's own cores busy).

use serde::{Deserialize, Serialize};

use crate::report::{Latency, Summary};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    #[error("threshold {expr:?}: expected <metric><op><value> with op one of < <= > >= == !=")]
    Syntax { expr: String },
    #[error("threshold {expr:?}: unknown metric {metric:?} (known: {known})")]
    UnknownMetric {
        expr: String,
        metric: String,
        known: String,
    },
    #[error("threshold {expr:?}: {value:?} is not a number{hint}")]
    BadValue {
        expr: String,
        value: String,
        hint: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    fn holds(self, actual: f64, limit: f64) -> bool {
        match self {
            Op::Lt => actual < limit,
            Op::Le => actual <= limit,
            Op::Gt => actual > limit,
            Op::Ge => actual >= limit,
            Op::Eq => actual == limit,
            Op::Ne => actual != limit,
        }
    }
}

/// Which latency histogram a latency metric reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Histo {
    /// connect in the `connect` scenario, push otherwise.
    Main,
    Connect,
    Push,
    Ack,
    Recovery,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quantile {
    P50,
    P90,
    P99,
    P999,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    Lost,
    Duplicated,
    OutOfOrder,
    Gaps,
    Received,
    Errors,
    PublishErrors,
    Connected,
    Subscribed,
    Published,
    Sent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rate {
    DeliveriesPerS,
    ClientCores,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    Latency(Histo, Quantile),
    Count(Count),
    Rate(Rate),
}

/// The limit, in the metric's unit: microseconds for latencies, a count or
/// a percentage of the base for counts, a plain number for rates.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Limit {
    Micros(f64),
    Count(f64),
    Percent(f64),
    Rate(f64),
}

/// One parsed `--threshold`.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub expr: String,
    metric: Metric,
    op: Op,
    limit: Limit,
}

/// A threshold after the run: kept in the summary for the reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThresholdOutcome {
    pub expr: String,
    pub passed: bool,
    /// The measured value in the expression's unit, e.g. `12.3 ms`, `0.4%`.
    pub actual: String,
}

const COUNT_NAMES: [(&str, Count); 12] = [
    ("loss", Count::Lost),
    ("lost", Count::Lost),
    ("duplicated", Count::Duplicated),
    ("out_of_order", Count::OutOfOrder),
    ("gaps", Count::Gaps),
    ("received", Count::Received),
    ("errors", Count::Errors),
    ("publish_errors", Count::PublishErrors),
    ("connected", Count::Connected),
    ("subscribed", Count::Subscribed),
    ("published", Count::Published),
    ("sent", Count::Sent),
];

const RATE_NAMES: [(&str, Rate); 2] = [
    ("deliveries_per_s", Rate::DeliveriesPerS),
    ("client_cores", Rate::ClientCores),
];

const HISTO_PREFIXES: [(&str, Histo); 4] = [
    ("connect_", Histo::Connect),
    ("push_", Histo::Push),
    ("ack_", Histo::Ack),
    ("recovery_", Histo::Recovery),
];

fn quantile(name: &str) -> Option<Quantile> {
    Some(match name {
        "p50" => Quantile::P50,
        "p90" => Quantile::P90,
        "p99" => Quantile::P99,
        "p999" | "p99.9" => Quantile::P999,
        "max" => Quantile::Max,
        _ => return None,
    })
}

fn metric(name: &str) -> Option<Metric> {
    if let Some(q) = quantile(name) {
        return Some(Metric::Latency(Histo::Main, q));
    }
    for (prefix, histo) in HISTO_PREFIXES {
        if let Some(q) = name.strip_prefix(prefix).and_then(quantile) {
            return Some(Metric::Latency(histo, q));
        }
    }
    if let Some((_, count)) = COUNT_NAMES.iter().find(|(known, _)| *known == name) {
        return Some(Metric::Count(*count));
    }
    RATE_NAMES
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, rate)| Metric::Rate(*rate))
}

fn known_metrics() -> String {
    let mut names = vec![
        "p50",
        "p90",
        "p99",
        "p999",
        "max",
        "connect_p99 (connect_/push_/ack_/recovery_ + p50..max)",
    ];
    names.extend(COUNT_NAMES.iter().map(|(name, _)| *name));
    names.extend(RATE_NAMES.iter().map(|(name, _)| *name));
    names.join(", ")
}

impl Threshold {
    /// Parse `<metric><op><value>`; the error names the expression.
    pub fn parse(expr: &str) -> Result<Threshold, ThresholdError> {
        let syntax = || ThresholdError::Syntax {
            expr: expr.to_owned(),
        };
        let at = expr.find(['<', '>', '=', '!']).ok_or_else(syntax)?;
        let (name, rest) = expr.split_at(at);
        let (op, value) = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .iter()
        .find_map(|(text, op)| rest.strip_prefix(text).map(|value| (*op, value)))
        .ok_or_else(syntax)?;
        let name = name.trim();
        let value = value.trim();
        if name.is_empty() || value.is_empty() || value.starts_with(['<', '>', '=', '!']) {
            return Err(syntax());
        }
        let metric = metric(name).ok_or_else(|| ThresholdError::UnknownMetric {
            expr: expr.to_owned(),
            metric: name.to_owned(),
            known: known_metrics(),
        })?;
        let bad = |hint: &'static str| ThresholdError::BadValue {
            expr: expr.to_owned(),
            value: value.to_owned(),
            hint,
        };
        let limit = match metric {
            Metric::Latency(..) => {
                const HINT: &str = " with a time unit (us, ms or s), e.g. 10ms";
                let (number, scale) = [("us", 1.0), ("µs", 1.0), ("ms", 1e3), ("s", 1e6)]
                    .iter()
                    .find_map(|(unit, scale)| value.strip_suffix(unit).map(|n| (n, *scale)))
                    .ok_or_else(|| bad(HINT))?;
                Limit::Micros(number_of(number).ok_or_else(|| bad(HINT))? * scale)
            }
            Metric::Count(_) => {
                const HINT: &str = ": a count or a percentage, e.g. 0 or 1%";
                match value.strip_suffix('%') {
                    Some(number) => Limit::Percent(number_of(number).ok_or_else(|| bad(HINT))?),
                    None => Limit::Count(scaled(value).ok_or_else(|| bad(HINT))?),
                }
            }
            Metric::Rate(_) => {
                Limit::Rate(scaled(value).ok_or_else(|| bad(": e.g. 100000 or 100k"))?)
            }
        };
        Ok(Threshold {
            expr: expr.to_owned(),
            metric,
            op,
            limit,
        })
    }

    /// Evaluate against a finished run.
    pub fn evaluate(&self, summary: &Summary) -> ThresholdOutcome {
        let outcome = |passed: bool, actual: String| ThresholdOutcome {
            expr: self.expr.clone(),
            passed,
            actual,
        };
        match (self.metric, self.limit) {
            (Metric::Latency(histo, q), Limit::Micros(limit)) => {
                let latency = latency_of(summary, histo);
                // A latency limit over no samples at all would pass a run
                // that delivered nothing: it fails instead.
                if latency.count == 0 {
                    return outcome(false, "no samples".to_owned());
                }
                let actual = match q {
                    Quantile::P50 => latency.p50_us,
                    Quantile::P90 => latency.p90_us,
                    Quantile::P99 => latency.p99_us,
                    Quantile::P999 => latency.p999_us,
                    Quantile::Max => latency.max_us,
                } as f64;
                outcome(self.op.holds(actual, limit), format_micros(actual))
            }
            (Metric::Count(count), Limit::Count(limit)) => {
                let (actual, _) = count_of(summary, count);
                outcome(self.op.holds(actual as f64, limit), actual.to_string())
            }
            (Metric::Count(count), Limit::Percent(limit)) => {
                let (actual, base) = count_of(summary, count);
                let percent = match (actual, base) {
                    (0, _) => 0.0,
                    (_, 0) => 100.0,
                    _ => 100.0 * actual as f64 / base as f64,
                };
                outcome(
                    self.op.holds(percent, limit),
                    format!("{percent:.3}% ({actual} of {base})"),
                )
            }
            (Metric::Rate(rate), Limit::Rate(limit)) => {
                let (actual, shown) = match rate {
                    Rate::DeliveriesPerS => {
                        let rate = summary.deliveries_per_s;
                        (rate, format!("{rate:.0}/s"))
                    }
                    Rate::ClientCores => {
                        let cores = summary.client.cores_busy;
                        (cores, format!("{cores:.2} cores"))
                    }
                };
                outcome(self.op.holds(actual, limit), shown)
            }
            // `parse` pairs every metric with its own kind of limit.
            _ => outcome(false, "limit does not fit the metric".to_owned()),
        }
    }
}

fn latency_of(summary: &Summary, histo: Histo) -> &Latency {
    match histo {
        Histo::Main if summary.scenario == "connect" => &summary.connect_latency,
        Histo::Main | Histo::Push => &summary.push_latency,
        Histo::Connect => &summary.connect_latency,
        Histo::Ack => &summary.ack_latency,
        Histo::Recovery => &summary.recovery_latency,
    }
}

/// A count and the base its percentage is taken of.
fn count_of(summary: &Summary, count: Count) -> (u64, u64) {
    let asked = u64::from(summary.connections);
    // chat counts every message written in `sent`; fanout and reconnect
    // count API requests in `published` + `publish_errors`.
    let messages = summary.sent.max(summary.published + summary.publish_errors);
    match count {
        Count::Lost => (summary.lost, summary.expected),
        Count::Duplicated => (summary.duplicated, summary.expected),
        Count::OutOfOrder => (summary.out_of_order, summary.expected),
        Count::Gaps => (summary.gaps, summary.expected),
        Count::Received => (summary.received, summary.expected),
        Count::Errors => (summary.errors_total, summary.attempted + messages),
        Count::PublishErrors => (summary.publish_errors, messages),
        Count::Connected => (summary.connected, asked),
        Count::Subscribed => (summary.subscribed, asked),
        Count::Published => (summary.published, messages),
        Count::Sent => (summary.sent, messages),
    }
}

fn number_of(text: &str) -> Option<f64> {
    let value: f64 = text.trim().parse().ok()?;
    value.is_finite().then_some(value)
}

/// A number with an optional `k` (thousand) or `M` (million) suffix.
fn scaled(text: &str) -> Option<f64> {
    let text = text.trim();
    if let Some(number) = text.strip_suffix('k') {
        return number_of(number).map(|n| n * 1e3);
    }
    if let Some(number) = text.strip_suffix('M') {
        return number_of(number).map(|n| n * 1e6);
    }
    number_of(text)
}

pub fn format_micros(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} us")
    }
}

/// Evaluate every threshold.
pub fn evaluate_all(thresholds: &[Threshold], summary: &Summary) -> Vec<ThresholdOutcome> {
    thresholds.iter().map(|t| t.evaluate(summary)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        Summary {
            scenario: "fanout".to_owned(),
            connections: 100,
            attempted: 100,
            connected: 99,
            subscribed: 99,
            published: 10,
            expected: 990,
            received: 980,
            lost: 10,
            errors_total: 1,
            deliveries_per_s: 123_456.0,
            push_latency: Latency {
                count: 980,
                p50_us: 800,
                p90_us: 2_000,
                p99_us: 9_000,
                p999_us: 40_000,
                max_us: 60_000,
            },
            connect_latency: Latency {
                count: 99,
                p99_us: 3_000,
                ..Latency::default()
            },
            ..Summary::default()
        }
    }

    fn check(expr: &str) -> ThresholdOutcome {
        Threshold::parse(expr).unwrap().evaluate(&summary())
    }

    #[test]
    fn parses_every_operator_and_unit() {
        let t = Threshold::parse("p99<10ms").unwrap();
        assert_eq!((t.op, t.limit), (Op::Lt, Limit::Micros(10_000.0)));
        let t = Threshold::parse(" p99.9 <= 50ms ").unwrap();
        assert_eq!(t.metric, Metric::Latency(Histo::Main, Quantile::P999));
        assert_eq!((t.op, t.limit), (Op::Le, Limit::Micros(50_000.0)));
        let t = Threshold::parse("connect_max>1.5s").unwrap();
        assert_eq!(t.metric, Metric::Latency(Histo::Connect, Quantile::Max));
        assert_eq!(t.limit, Limit::Micros(1_500_000.0));
        assert_eq!(Threshold::parse("push_p50>=250us").unwrap().op, Op::Ge);
        assert_eq!(
            Threshold::parse("loss==0").unwrap().limit,
            Limit::Count(0.0)
        );
        assert_eq!(
            Threshold::parse("errors!=1%").unwrap().limit,
            Limit::Percent(1.0)
        );
        assert_eq!(
            Threshold::parse("deliveries_per_s>=100k").unwrap().limit,
            Limit::Rate(100_000.0)
        );
        assert_eq!(Threshold::parse("connected>=9900").unwrap().op, Op::Ge);
    }

    #[test]
    fn refuses_bad_expressions_naming_them() {
        for (expr, needle) in [
            ("p99", "expected <metric><op><value>"),
            ("p99<", "expected <metric><op><value>"),
            ("<10ms", "expected <metric><op><value>"),
            ("p99=<10ms", "expected <metric><op><value>"),
            ("p98<10ms", "unknown metric \"p98\""),
            ("latency<10ms", "unknown metric"),
            ("p99<10", "time unit"),
            ("p99<tenms", "time unit"),
            ("loss<few", "a count or a percentage"),
            ("deliveries_per_s>5%", "100k"),
        ] {
            let error = Threshold::parse(expr).unwrap_err().to_string();
            assert!(error.contains(&format!("{expr:?}")), "{error}");
            assert!(error.contains(needle), "{expr}: {error}");
        }
    }

    #[test]
    fn evaluates_against_the_summary() {
        assert!(check("p99<10ms").passed);
        assert!(!check("p99<9ms").passed);
        assert!(check("p99<=9ms").passed);
        assert_eq!(check("p99<9ms").actual, "9.00 ms");
        assert!(!check("p999<=20ms").passed);
        assert!(check("connect_p99<5ms").passed);
        assert!(!check("loss==0").passed);
        assert_eq!(check("loss==0").actual, "10");
        let percent = check("loss<2%");
        assert!(percent.passed, "{percent:?}");
        assert_eq!(percent.actual, "1.010% (10 of 990)");
        assert!(!check("loss<1%").passed);
        // 1 error over 100 attempted connections + 10 publications.
        assert!(check("errors<1%").passed);
        assert!(!check("errors<0.5%").passed);
        assert!(check("deliveries_per_s>=100k").passed);
        assert!(!check("deliveries_per_s>=200000").passed);
        assert!(!check("connected>=100").passed);
        assert!(check("connected>=99").passed);
        assert!(check("subscribed!=0").passed);
    }

    #[test]
    fn a_latency_limit_without_samples_fails() {
        let outcome = Threshold::parse("recovery_p99<1s")
            .unwrap()
            .evaluate(&summary());
        assert!(!outcome.passed);
        assert_eq!(outcome.actual, "no samples");
    }

    #[test]
    fn connect_runs_read_the_connect_latency() {
        let mut connect = summary();
        connect.scenario = "connect".to_owned();
        let outcome = Threshold::parse("p99<4ms").unwrap().evaluate(&connect);
        assert!(outcome.passed, "{outcome:?}");
        assert_eq!(outcome.actual, "3.00 ms");
    }
}
