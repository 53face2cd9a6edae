//! Measures what a NATS subscription costs, on the client (async-nats, the
//! engine's client, under the engine's allocator) and on nats-server, to
//! settle "one subject per channel or hashed channel buckets" for the
//! cluster (docs/cluster.md, "Interest routing").
//!
//! `nats_subs --url nats://127.0.0.1:4222 --monitor http://127.0.0.1:8222 --counts 1000,10000,100000`
//!
//! It starts nothing: `benches/nats-subs.sh` starts a nats-server on
//! loopback and runs it. On one connection it first takes one wildcard
//! subscription (`bench.w.>`, the cost of receiving everything), then
//! distinct subjects `bench.s.<i>` up to each count in turn, and after each
//! step waits until the server's `/varz` counts the subscriptions, lets both
//! sides settle, and reads this process's RSS and the server's `/varz`
//! `mem` (its RSS). Deltas are against the sample taken before the step
//! series, so each count's figure covers all its subscriptions. RSS moves
//! in pages, so a single subscription's delta is only an upper bound at
//! page resolution.
//!
//! Prints a Markdown table; `--json FILE` also writes the figures as JSON.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ringcast_benches::client::rss_bytes;

/// The engine's allocator (engine/src/main.rs), so the client's figure is
/// what the engine's cluster thread would pay.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long to wait for the server to count the subscriptions of a step.
const SERVER_COUNT_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(
    name = "nats_subs",
    about = "Bytes per NATS subscription, client and server"
)]
struct Cli {
    /// nats-server client URL.
    #[arg(long)]
    url: String,
    /// nats-server HTTP monitoring base URL (its `http:` listener).
    #[arg(long)]
    monitor: String,
    /// Distinct-subject counts, ascending; each includes the previous ones.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    counts: Vec<usize>,
    /// Pause before each sample, so both processes settle.
    #[arg(long, default_value_t = 1500)]
    settle_ms: u64,
    /// async-nats `subscription_capacity` (messages per subscriber); the
    /// client's default unless set.
    #[arg(long)]
    subscription_capacity: Option<usize>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// One reading of both processes.
#[derive(Clone, Copy, Debug)]
struct Sample {
    client_rss: u64,
    server_mem: u64,
    server_subscriptions: u64,
}

/// What one step added over the baseline.
struct Step {
    subscriptions: usize,
    client_delta: i64,
    server_delta: i64,
    server_subscriptions_delta: i64,
    subscribe_seconds: f64,
}

impl Step {
    fn new(subscriptions: usize, base: Sample, now: Sample, subscribe_seconds: f64) -> Step {
        let delta = |a: u64, b: u64| b as i64 - a as i64;
        Step {
            subscriptions,
            client_delta: delta(base.client_rss, now.client_rss),
            server_delta: delta(base.server_mem, now.server_mem),
            server_subscriptions_delta: delta(base.server_subscriptions, now.server_subscriptions),
            subscribe_seconds,
        }
    }

    fn per_sub(&self, total: i64) -> f64 {
        total as f64 / self.subscriptions as f64
    }

    /// The step as JSON; the ratios only for steps compared with a wildcard.
    fn json(&self, wildcard: Option<&Step>) -> serde_json::Value {
        let ratios = wildcard.map(|w| {
            (
                ratio(self.client_delta, w.client_delta),
                ratio(self.server_delta, w.server_delta),
            )
        });
        serde_json::json!({
            "subscriptions": self.subscriptions,
            "client_rss_delta_bytes": self.client_delta,
            "client_bytes_per_subscription": self.per_sub(self.client_delta),
            "server_mem_delta_bytes": self.server_delta,
            "server_bytes_per_subscription": self.per_sub(self.server_delta),
            "server_subscriptions_delta": self.server_subscriptions_delta,
            "client_ratio_vs_wildcard_at_least": ratios.map(|r| r.0),
            "server_ratio_vs_wildcard_at_least": ratios.map(|r| r.1),
            "subscribe_seconds": self.subscribe_seconds,
        })
    }
}

/// RSS resolution: a delta under one page reads as zero.
const PAGE_BYTES: i64 = 4096;

/// `total` as a multiple of the wildcard's cost, at least. One
/// subscription is below what either RSS resolves (the client's moves by
/// pages, the Go server's by heap spans, and both wander by more than that
/// between samples), so the wildcard's measured delta, taken by its
/// absolute value and at least one page, bounds its cost from above.
fn ratio(total: i64, wildcard: i64) -> f64 {
    total as f64 / wildcard.abs().max(PAGE_BYTES) as f64
}

/// GET `<monitor>/varz` as JSON.
fn varz(agent: &ureq::Agent, monitor: &str) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}/varz", monitor.trim_end_matches('/'));
    let body = agent
        .get(&url)
        .call()
        .with_context(|| format!("GET {url}"))?
        .body_mut()
        .read_to_string()?;
    Ok(serde_json::from_str(&body)?)
}

fn varz_u64(v: &serde_json::Value, key: &str) -> anyhow::Result<u64> {
    v.get(key)
        .and_then(serde_json::Value::as_u64)
        .with_context(|| format!("/varz has no integer `{key}`"))
}

/// Waits until the server counts `expected` subscriptions (its SUBs are
/// processed), then settles and samples both processes.
async fn sample(cli: &Cli, agent: &ureq::Agent, expected: Option<u64>) -> anyhow::Result<Sample> {
    if let Some(expected) = expected {
        let deadline = Instant::now() + SERVER_COUNT_WAIT;
        loop {
            let counted = varz_u64(&varz(agent, &cli.monitor)?, "subscriptions")?;
            if counted >= expected {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "nats-server counts {counted} subscriptions, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(cli.settle_ms)).await;
    let v = varz(agent, &cli.monitor)?;
    Ok(Sample {
        client_rss: rss_bytes(std::process::id())?,
        server_mem: varz_u64(&v, "mem")?,
        server_subscriptions: varz_u64(&v, "subscriptions")?,
    })
}

fn mib(bytes: i64) -> String {
    format!("{:.1}", bytes as f64 / 1048576.0)
}

fn ratio_cell(ratio: f64) -> String {
    format!(">= {ratio:.0}x")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    anyhow::ensure!(
        cli.counts.windows(2).all(|w| w[0] < w[1]) && cli.counts.first().is_some_and(|&c| c > 0),
        "--counts must be positive and ascending"
    );
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let version = varz(&agent, &cli.monitor)?
        .get("version")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let mut options = async_nats::ConnectOptions::new()
        .name("ringcast-bench-nats-subs")
        .no_echo();
    if let Some(capacity) = cli.subscription_capacity {
        options = options.subscription_capacity(capacity);
    }
    let client = options
        .connect(cli.url.as_str())
        .await
        .with_context(|| format!("connect {}", cli.url))?;

    let base = sample(&cli, &agent, None).await?;
    let started = Instant::now();
    let wildcard_sub = client.subscribe("bench.w.>").await?;
    client.flush().await?;
    let seconds = started.elapsed().as_secs_f64();
    let after_wildcard = sample(&cli, &agent, Some(base.server_subscriptions + 1)).await?;
    let wildcard = Step::new(1, base, after_wildcard, seconds);

    // Kept alive until the end: a dropped Subscriber unsubscribes.
    let mut subscribers = Vec::with_capacity(cli.counts.last().copied().unwrap_or(0));
    let mut steps = Vec::new();
    let mut seconds = 0.0;
    for &count in &cli.counts {
        let started = Instant::now();
        while subscribers.len() < count {
            let subject = format!("bench.s.{}", subscribers.len());
            subscribers.push(client.subscribe(subject).await?);
        }
        client.flush().await?;
        seconds += started.elapsed().as_secs_f64();
        let expected = after_wildcard.server_subscriptions + count as u64;
        let now = sample(&cli, &agent, Some(expected)).await?;
        steps.push(Step::new(count, after_wildcard, now, seconds));
    }

    println!(
        "nats-server {version}; client async-nats 0.52 (mimalloc), one connection, \
         subscription_capacity {}",
        cli.subscription_capacity
            .map_or_else(|| "default (65536)".to_string(), |c| c.to_string())
    );
    println!(
        "baseline: client RSS {} MiB, server mem {} MiB, server subscriptions {}",
        mib(base.client_rss as i64),
        mib(base.server_mem as i64),
        base.server_subscriptions
    );
    println!();
    println!(
        "| subscriptions | client RSS delta (MiB) | client bytes/sub | server mem delta (MiB) | \
         server bytes/sub | server subs delta | client x wildcard | server x wildcard | subscribe s (cumulative) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let row = |label: String, s: &Step, ratios: [String; 2]| {
        let [client_ratio, server_ratio] = ratios;
        println!(
            "| {label} | {} | {:.0} | {} | {:.0} | {} | {client_ratio} | {server_ratio} | {:.3} |",
            mib(s.client_delta),
            s.per_sub(s.client_delta),
            mib(s.server_delta),
            s.per_sub(s.server_delta),
            s.server_subscriptions_delta,
            s.subscribe_seconds,
        );
    };
    row(
        "1 wildcard `bench.w.>`".to_string(),
        &wildcard,
        ["-".to_string(), "-".to_string()],
    );
    for s in &steps {
        let ratios = [
            ratio_cell(ratio(s.client_delta, wildcard.client_delta)),
            ratio_cell(ratio(s.server_delta, wildcard.server_delta)),
        ];
        row(format!("{} distinct", s.subscriptions), s, ratios);
    }
    println!();
    println!(
        "x wildcard: the step's delta over the wildcard's, a lower bound: one subscription is \
         below RSS resolution, so the wildcard's delta (absolute, at least {PAGE_BYTES} B) is \
         taken as its cost."
    );

    if let Some(path) = &cli.json {
        let doc = serde_json::json!({
            "nats_server_version": version,
            "client": {
                "crate": "async-nats 0.52",
                "allocator": "mimalloc",
                "subscription_capacity": cli.subscription_capacity,
            },
            "settle_ms": cli.settle_ms,
            "baseline": {
                "client_rss_bytes": base.client_rss,
                "server_mem_bytes": base.server_mem,
                "server_subscriptions": base.server_subscriptions,
            },
            "wildcard": wildcard.json(None),
            "distinct": steps.iter().map(|s| s.json(Some(&wildcard))).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
    }
    // Subscribers unsubscribe on drop through tokio::spawn: drop them here,
    // inside the runtime.
    drop(subscribers);
    drop(wildcard_sub);
    client.flush().await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))
}
