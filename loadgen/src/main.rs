//! `ringcast-loadgen`: the load generator for Ringcast.
//!
//! `main` is thin: parse the command line, run the scenario (parent) or
//! one worker's share (hidden `worker` subcommand), write the report.
//! Exit codes: 0 the run completed cleanly (everyone connected, no errors,
//! nothing lost), 1 the run completed with errors or losses (see the
//! report), 2 the run could not be carried out.

#![deny(unsafe_code)]

mod chat;
mod cli;
mod client;
mod im_setup;
mod parent;
mod plot;
mod poller;
mod profile;
mod publisher;
mod report;
mod stats;
mod sys;
mod uring;
mod worker;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use crate::cli::{Cli, Command, CommonArgs};
use crate::report::Summary;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ringcast-loadgen: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let (summary, common) = match &cli.command {
        Command::Worker(args) => {
            worker::run(args)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Plot(args) => {
            for path in plot::run(args)? {
                println!("{}", path.display());
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Connect(args) => (parent::run_connect(args)?, &args.common),
        Command::Fanout(args) => (parent::run_fanout(args)?, &args.common),
        Command::Reconnect(args) => (parent::run_reconnect(args)?, &args.common),
        Command::Chat(args) => (parent::run_chat(args)?, &args.common),
    };
    write_report(&summary, common)?;
    let clean = summary.errors_total == 0
        && summary.lost == 0
        && summary.gaps == 0
        && summary.duplicated == 0
        && summary.reconnected == summary.dropped
        && summary.connected == u64::from(summary.connections);
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn write_report(summary: &Summary, common: &CommonArgs) -> anyhow::Result<()> {
    print!("{}", summary.table());
    if let Some(prefix) = &common.out {
        let json_path = format!("{prefix}.json");
        let csv_path = format!("{prefix}.csv");
        let json = serde_json::to_string_pretty(summary).context("serializing the summary")?;
        std::fs::write(&json_path, json + "\n").with_context(|| format!("writing {json_path}"))?;
        std::fs::write(&csv_path, summary.csv()).with_context(|| format!("writing {csv_path}"))?;
    }
    Ok(())
}
