use crate::util::{run_loadgen, TestEngine};

#[test]
fn connect_200_over_2_workers_and_2_source_ips() {
    let engine = TestEngine::start();
    let out_dir = tempfile::tempdir().unwrap();
    let (output, summary) = run_loadgen(
        out_dir.path(),
        &engine.args(
            "connect",
            &[
                "--connections=200",
                "--rate=1000",
                "--hold-s=1",
                "--workers=2",
                "--source-ips=127.0.1.1-127.0.1.2",
            ],
        ),
    );
    assert_eq!(summary["connected"], 200, "{summary:#}");
    assert_eq!(summary["errors_total"], 0, "{summary:#}");
    assert_eq!(summary["connect_latency"]["count"], 200, "{summary:#}");
    assert!(summary["connect_latency"]["p99_us"].as_u64().unwrap() > 0);
    assert!(output.status.success(), "{summary:#}");
}

#[test]
fn refused_connections_are_counted_not_fatal() {
    // Nothing listens on this port: every connect is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let out_dir = tempfile::tempdir().unwrap();
    let (output, summary) = run_loadgen(
        out_dir.path(),
        &[
            "connect".to_owned(),
            format!("--target=ws://{addr}/connection/websocket"),
            "--secret=test-jwt-secret-0123456789abcdef0123456789".to_owned(),
            "--connections=10".to_owned(),
            "--rate=1000".to_owned(),
            "--hold-s=0".to_owned(),
        ],
    );
    assert_eq!(summary["connected"], 0);
    assert_eq!(
        summary["errors"]["connect_refused_econnrefused"], 10,
        "{summary:#}"
    );
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn connections_spread_over_several_targets() {
    // Two targets: the engine and a port nothing listens on. Round-robin
    // over targets sends exactly half the connections to each.
    let engine = TestEngine::start();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let out_dir = tempfile::tempdir().unwrap();
    let (_, summary) = run_loadgen(
        out_dir.path(),
        &[
            "connect".to_owned(),
            format!(
                "--target={},ws://{closed}/connection/websocket",
                engine.target()
            ),
            format!("--secret={}", engine.jwt_secret),
            "--connections=40".to_owned(),
            "--rate=2000".to_owned(),
            "--hold-s=0".to_owned(),
        ],
    );
    assert_eq!(summary["connected"], 20, "{summary:#}");
    assert_eq!(
        summary["errors"]["connect_refused_econnrefused"], 20,
        "{summary:#}"
    );
}

#[test]
fn share_over_the_socket_limit_is_refused() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringcast-loadgen"))
        .args([
            "connect",
            "--secret=x",
            "--connections=40000",
            "--workers=2",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("18000"), "{stderr}");
    assert!(stderr.contains("--workers=3"), "{stderr}");
}

#[test]
fn source_ips_are_used_and_stalled_upgrades_time_out() {
    // A server that accepts but never answers the upgrade: shows which
    // source addresses the workers bound, and exercises the timeout path.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = std::thread::spawn(move || {
        let mut held = Vec::new();
        let mut peers = std::collections::BTreeSet::new();
        for _ in 0..4 {
            let (stream, peer) = listener.accept().unwrap();
            peers.insert(peer.ip().to_string());
            held.push(stream);
        }
        (peers, held)
    });
    let out_dir = tempfile::tempdir().unwrap();
    let (output, summary) = run_loadgen(
        out_dir.path(),
        &[
            "connect".to_owned(),
            format!("--target=ws://{addr}/connection/websocket"),
            "--secret=test-jwt-secret-0123456789abcdef0123456789".to_owned(),
            "--connections=4".to_owned(),
            "--workers=2".to_owned(),
            "--source-ips=127.0.1.1-127.0.1.2".to_owned(),
            "--connect-timeout-s=1".to_owned(),
            "--hold-s=0".to_owned(),
        ],
    );
    let (peers, _held) = acceptor.join().unwrap();
    assert_eq!(
        peers.into_iter().collect::<Vec<_>>(),
        ["127.0.1.1", "127.0.1.2"]
    );
    assert_eq!(summary["errors"]["timeout_upgrade"], 4, "{summary:#}");
    assert_eq!(output.status.code(), Some(1));
}
