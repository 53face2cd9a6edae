//! The `ringcast` binary: flags/env/file → `Config` → engine → wait for
//! SIGTERM/SIGINT → graceful shutdown. SIGHUP re-reads the TLS certificate.
//! SIGUSR1 → drain (docs/cluster.md, "Drain").

use std::process::ExitCode;

use anyhow::Context;
use ringcast_engine::config::{Config, LogFormat, RawArgs};
use ringcast_engine::Engine;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let raw = RawArgs::parse();
    let config = match Config::load(raw) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    // Held until exit: dropping it flushes what the writer thread still has.
    let _log_flush = init_logging(&config);
    if !config.server.transparent_huge_pages {
        // mimalloc asks for huge pages on its arenas (MADV_HUGEPAGE), and
        // the kernel then zeroes 2 MiB for each fresh page it first
        // touches: measured, 17% of the store writer's time and 12% of the
        // shards' at 15k DMs/s, ack p99 8x higher (docs/tuning.md).
        if let Err(err) = rustix::thread::disable_transparent_huge_pages(true) {
            tracing::warn!(%err, "could not turn transparent huge pages off");
        }
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("ringcast: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs go through a bounded queue to a writer thread, so a shard that
/// logs never blocks on a slow stderr (a pipe nobody drains, a full disk):
/// when the queue is full, lines are dropped and counted by the writer.
fn init_logging(config: &Config) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    guard
}

fn run(config: Config) -> anyhow::Result<()> {
    // Register before starting so a signal during startup is not lost.
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .context("installing signal handlers")?;
    let engine = Engine::start(config).context("starting the engine")?;
    tracing::info!(websocket = %engine.ws_addr, api = %engine.api_addr, "ringcast is ready");
    for signal in signals.forever() {
        if signal == SIGUSR1 {
            if engine.drain() {
                tracing::info!("SIGUSR1: draining; listeners close, clients get 1012");
            }
            continue;
        }
        if signal != SIGHUP {
            tracing::info!(signal, "shutting down");
            break;
        }
        match engine.reload_tls() {
            Ok(true) => tracing::info!("tls reloaded; new handshakes use the new certificate"),
            Ok(false) => tracing::info!("SIGHUP: no tls.cert_file configured; nothing to reload"),
            Err(err) => {
                tracing::error!(error = %err, "tls reload failed; keeping the current certificate");
            }
        }
    }
    engine.shutdown();
    Ok(())
}
