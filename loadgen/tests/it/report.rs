//! `--threshold` and `--report` against a real engine (its own process when
//! the release binary is built, see `EngineProcess`).

use std::process::Command;

use crate::util::{run_loadgen, EngineProcess};

const FANOUT: [&str; 5] = [
    "--connections=40",
    "--rate=50",
    "--seconds=1",
    "--channels=2",
    "--drain-s=3",
];

fn fanout_with(engine: &EngineProcess, extra: &[&str]) -> Vec<String> {
    let mut rest: Vec<&str> = FANOUT.to_vec();
    rest.extend_from_slice(extra);
    engine.args("fanout", &rest)
}

#[test]
fn a_crossed_threshold_exits_3_naming_it_and_a_kept_one_passes() {
    let engine = EngineProcess::start();
    let out_dir = tempfile::tempdir().unwrap();
    // p99 under a microsecond cannot be met over sockets; nothing is lost
    // on an idle loopback engine at 50 publications/s.
    let (output, summary) = run_loadgen(
        out_dir.path(),
        &fanout_with(&engine, &["--threshold=p99<1us", "--threshold=loss==0"]),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(summary["lost"], 0, "{summary:#}");
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("threshold crossed: p99<1us (actual "),
        "{stderr}"
    );
    assert!(!stderr.contains("threshold crossed: loss==0"), "{stderr}");
    assert!(
        stdout.contains("p99<1us") && stdout.contains("FAILED"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|line| line.contains("loss==0") && line.contains("passed")),
        "{stdout}"
    );
    let thresholds = summary["thresholds"].as_array().expect("thresholds");
    assert_eq!(thresholds.len(), 2);
    assert_eq!(thresholds[0]["passed"], false);
    assert_eq!(thresholds[1]["passed"], true);

    // The same run with limits it keeps: a clean exit.
    let (output, _) = run_loadgen(
        out_dir.path(),
        &fanout_with(
            &engine,
            &[
                "--threshold=p99<30s",
                "--threshold=loss==0",
                "--threshold=connected>=40",
            ],
        ),
    );
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn an_invalid_threshold_is_refused_before_the_run() {
    let output = Command::new(env!("CARGO_BIN_EXE_ringcast-loadgen"))
        .args([
            "connect",
            // Nothing listens there: were the run started, it would fail
            // differently (exit 1 and a report).
            "--target=ws://127.0.0.1:9/connection/websocket",
            "--secret=test-jwt-secret-0123456789abcdef0123456789",
            "--threshold=p99<10",
        ])
        .output()
        .expect("loadgen runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("\"p99<10\""), "{stderr}");
    assert!(stderr.contains("time unit"), "{stderr}");
    assert!(output.stdout.is_empty(), "no run, no table");
}

/// With thresholds given they decide the exit status: a run with errors
/// whose limits all held passes (a CI gate of `errors<1%` must not fail on
/// errors it allows), where the same run without thresholds exits 1.
#[test]
fn thresholds_that_hold_pass_a_run_with_errors() {
    let out_dir = tempfile::tempdir().unwrap();
    let connect = |thresholds: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringcast-loadgen"));
        command.args([
            "connect",
            // Nothing listens there: every connection fails.
            "--target=ws://127.0.0.1:9/connection/websocket",
            "--secret=test-jwt-secret-0123456789abcdef0123456789",
            "--connections=5",
            "--rate=100",
            "--hold-s=0",
            "--workers=1",
        ]);
        command.arg(format!("--out={}", out_dir.path().join("run").display()));
        command.args(thresholds);
        command.output().expect("loadgen runs")
    };
    let plain = connect(&[]);
    assert_eq!(
        plain.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let held = connect(&["--threshold=connected==0", "--threshold=errors>=5"]);
    let stderr = String::from_utf8_lossy(&held.stderr);
    assert_eq!(held.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("threshold crossed"), "{stderr}");
}

#[test]
fn the_html_report_is_self_contained_with_table_and_charts() {
    let engine = EngineProcess::start();
    let out_dir = tempfile::tempdir().unwrap();
    let report = out_dir.path().join("run.html");
    let (output, summary) = run_loadgen(
        out_dir.path(),
        &fanout_with(
            &engine,
            &[
                &format!("--report={}", report.display()),
                &format!("--watch-pid={}", engine.pid),
                "--threshold=loss==0",
            ],
        ),
    );
    assert!(output.status.success(), "{summary:#}");
    let html = std::fs::read_to_string(&report).expect("report written");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    // Nothing fetched from elsewhere: no URLs, no src=, no linked sheets
    // or scripts.
    for banned in [
        "http://", "https://", "src=", "<link", "<script", "@import", "url(",
    ] {
        assert!(!html.contains(banned), "{banned} in the report");
    }
    // The result table with this run's figures.
    assert!(html.contains("<h2>Results</h2>"));
    assert!(
        html.contains("asked 40, attempted 40, connected 40"),
        "{html}"
    );
    assert!(html.contains("<td>push</td><td class=\"num\">"), "{html}");
    // Thresholds, parameters (secrets masked), host.
    assert!(html.contains("<code>loss==0</code>"));
    assert!(
        html.contains("<code>--channels</code></td><td>2</td>"),
        "{html}"
    );
    assert!(!html.contains(&engine.jwt_secret), "secret leaked");
    assert!(html.contains("<th>kernel</th>"));
    // Charts inline: spectrum, msgs/s, open, connects/s, server CPU, RSS.
    assert_eq!(html.matches("<svg").count(), 6, "{html}");
    assert_eq!(html.matches("</svg>").count(), 6);
    assert!(html.contains("server CPU"));
    let watched = &summary["watched"][0];
    assert_eq!(watched["pid"], engine.pid);
    assert!(
        watched["samples"].as_array().expect("samples").len() >= 3,
        "{watched:#}"
    );
}
