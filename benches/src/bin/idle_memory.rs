//! Measures user-space memory per idle connection of a running engine:
//! RSS growth divided by connections, at several connection counts.
//!
//! `idle_memory --ws=127.0.0.1:8080 --secret=<jwt secret> --engine-pid=<pid> --counts=1000,10000,18000`
//!
//! Each connection completes the upgrade, receives its `connect` message and
//! then stays idle (no subscriptions beyond the personal channel). Every
//! connection belongs to a different user, the worst case for the personal
//! channel index. RSS includes everything the engine's process holds in user
//! space; the kernel's own socket memory is not in RSS.

use std::net::SocketAddr;
use std::time::Duration;

use ringcast_benches::client::{connect, rss_bytes, token, Args};

fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let ws: SocketAddr = args.get("ws", "127.0.0.1:8080".parse()?)?;
    let secret: String = args.get(
        "secret",
        "dev-only-jwt-secret-change-me-0123456789".to_string(),
    )?;
    let pid: u32 = args.get("engine-pid", 0)?;
    anyhow::ensure!(
        pid != 0,
        "--engine-pid=<pid of the ringcast process> is required"
    );
    let counts: String = args.get("counts", "1000,10000,18000".to_string())?;
    let counts: Vec<usize> = counts
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let settle = Duration::from_millis(args.get("settle-ms", 1500)?);

    // Pre-mint tokens so the measurement does not include signing time.
    let max = counts.iter().copied().max().unwrap_or(0);
    let tokens: Vec<String> = (0..max)
        .map(|i| token(&secret, &format!("idle-{i}")))
        .collect::<Result<_, _>>()?;
    std::thread::sleep(settle);
    let baseline = rss_bytes(pid)?;
    println!(
        "engine baseline RSS: {:.1} MiB",
        baseline as f64 / 1048576.0
    );
    println!("connections,rss_bytes,rss_growth_bytes,bytes_per_connection");
    let mut streams = Vec::with_capacity(max);
    for count in counts {
        while streams.len() < count {
            streams.push(connect(ws, &tokens[streams.len()])?);
        }
        std::thread::sleep(settle);
        let rss = rss_bytes(pid)?;
        let growth = rss.saturating_sub(baseline);
        println!("{count},{rss},{growth},{:.0}", growth as f64 / count as f64);
    }
    Ok(())
}
