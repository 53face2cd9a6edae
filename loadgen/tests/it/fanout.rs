use crate::util::{run_loadgen, TestEngine};

#[test]
fn fanout_100_subscribers_20_publications_io_uring() {
    fanout_100_subscribers_20_publications("uring");
}

#[test]
fn fanout_100_subscribers_20_publications_epoll() {
    fanout_100_subscribers_20_publications("epoll");
}

fn fanout_100_subscribers_20_publications(driver: &str) {
    let engine = TestEngine::start();
    let out_dir = tempfile::tempdir().unwrap();
    let (output, summary) = run_loadgen(
        out_dir.path(),
        &engine.args(
            "fanout",
            &[
                "--connections=100",
                "--workers=2",
                "--channel=news:load",
                "--rate=50",
                "--seconds=0.4",
                "--source-ips=127.0.1.1-127.0.1.2",
                &format!("--driver={driver}"),
            ],
        ),
    );
    assert_eq!(summary["subscribed"], 100, "{summary:#}");
    assert_eq!(summary["published"], 20, "{summary:#}");
    assert_eq!(summary["expected"], 100 * 20, "{summary:#}");
    assert_eq!(summary["received"], 100 * 20, "{summary:#}");
    assert_eq!(summary["lost"], 0, "{summary:#}");
    assert_eq!(summary["duplicated"], 0, "{summary:#}");
    assert_eq!(summary["out_of_order"], 0, "{summary:#}");
    assert_eq!(summary["errors_total"], 0, "{summary:#}");
    assert_eq!(summary["push_latency"]["count"], 100 * 20, "{summary:#}");
    // The client's own cost is reported: CPU spent, memory per connection.
    assert!(
        summary["client"]["workers_cpu_ms"].as_u64().unwrap() > 0,
        "{summary:#}"
    );
    assert!(
        summary["client"]["rss_per_connection_bytes"]
            .as_u64()
            .unwrap()
            > 0,
        "{summary:#}"
    );
    // plot draws every chart from the results file.
    let plots = out_dir.path().join("plots");
    let plot = std::process::Command::new(env!("CARGO_BIN_EXE_ringcast-loadgen"))
        .arg("plot")
        .arg(out_dir.path().join("run.json"))
        .arg(format!("--out-dir={}", plots.display()))
        .output()
        .unwrap();
    assert!(plot.status.success(), "{plot:?}");
    for chart in [
        "push-latency.svg",
        "connect-latency.svg",
        "throughput.svg",
        "connections.svg",
        "p99.svg",
    ] {
        let svg = std::fs::read_to_string(plots.join(chart)).unwrap();
        assert!(svg.starts_with("<svg"), "{chart}");
        assert!(svg.contains("<polyline"), "{chart} has no series");
    }
    assert!(output.status.success(), "{summary:#}");
}

#[test]
fn fanout_closed_loop_publishes_as_fast_as_delivered() {
    let engine = TestEngine::start();
    let out_dir = tempfile::tempdir().unwrap();
    let (output, summary) = run_loadgen(
        out_dir.path(),
        &engine.args(
            "fanout",
            &[
                "--connections=50",
                "--workers=2",
                "--rate=0",
                "--publications=200",
                "--window=4",
                "--seconds=20",
            ],
        ),
    );
    assert_eq!(summary["subscribed"], 50, "{summary:#}");
    assert_eq!(summary["published"], 200, "{summary:#}");
    assert_eq!(summary["received"], 50 * 200, "{summary:#}");
    assert_eq!(summary["lost"], 0, "{summary:#}");
    let throughput = summary["deliveries_per_s"].as_f64().unwrap();
    let delivery_s = summary["delivery_s"].as_f64().unwrap();
    assert!(delivery_s > 0.0, "{summary:#}");
    assert!(
        (throughput * delivery_s - 10_000.0).abs() < 1.0,
        "{summary:#}"
    );
    assert_eq!(summary["duplicated"], 0, "{summary:#}");
    assert!(output.status.success(), "{summary:#}");
    // Without --publications, closed loop has nothing to count to.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_ringcast-loadgen"))
        .args(["fanout", "--rate=0", "--secret=s", "--api-key=k"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--publications"));
}

#[test]
fn fanout_over_several_channels_counts_each_channel_exactly() {
    // 2 workers x 15 subscribers, round-robin over 3 channels: 5 per channel
    // per worker; 12 publications, 4 per channel: 30 x 4 deliveries.
    let engine = TestEngine::start();
    let out_dir = tempfile::tempdir().unwrap();
    let (output, summary) = run_loadgen(
        out_dir.path(),
        &engine.args(
            "fanout",
            &[
                "--connections=30",
                "--workers=2",
                "--channels=3",
                "--rate=40",
                "--seconds=0.3",
            ],
        ),
    );
    assert_eq!(summary["channels"], 3, "{summary:#}");
    assert_eq!(summary["subscribed"], 30, "{summary:#}");
    assert_eq!(summary["published"], 12, "{summary:#}");
    assert_eq!(summary["expected"], 30 * 4, "{summary:#}");
    assert_eq!(summary["received"], 30 * 4, "{summary:#}");
    assert_eq!(summary["lost"], 0, "{summary:#}");
    assert_eq!(summary["duplicated"], 0, "{summary:#}");
    assert!(output.status.success(), "{summary:#}");
}
