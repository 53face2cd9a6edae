use crate::util::{run_loadgen, TestEngine};

#[test]
fn reconnect_100_users_half_dropped_recover_without_gaps() {
    let engine = TestEngine::start();
    let out_dir = tempfile::tempdir().unwrap();
    let (output, summary) = run_loadgen(
        out_dir.path(),
        &engine.args(
            "reconnect",
            &[
                "--connections=100",
                "--workers=2",
                "--drop-share=0.5",
                "--rate=20",
                "--seconds=1.5",
                "--source-ips=127.0.1.1-127.0.1.2",
            ],
        ),
    );
    assert_eq!(summary["connected"], 100, "{summary:#}");
    assert_eq!(summary["dropped"], 50, "{summary:#}");
    assert_eq!(summary["reconnected"], 50, "{summary:#}");
    assert_eq!(summary["recovered_true"], 50, "{summary:#}");
    assert_eq!(summary["recovered_false"], 0, "{summary:#}");
    assert_eq!(summary["recovery_latency"]["count"], 50, "{summary:#}");
    // 30 ticks, one request per worker per tick, 100 users.
    assert_eq!(summary["published"], 30 * 2, "{summary:#}");
    assert_eq!(summary["expected"], 30 * 100, "{summary:#}");
    assert_eq!(summary["received"], 30 * 100, "{summary:#}");
    assert_eq!(summary["lost"], 0, "{summary:#}");
    assert_eq!(summary["gaps"], 0, "{summary:#}");
    assert_eq!(summary["duplicated"], 0, "{summary:#}");
    assert_eq!(summary["out_of_order"], 0, "{summary:#}");
    assert_eq!(summary["errors_total"], 0, "{summary:#}");
    assert!(output.status.success(), "{summary:#}");
}
