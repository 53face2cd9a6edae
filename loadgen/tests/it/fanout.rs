use crate::util::{run_loadgen, TestEngine};

#[test]
fn fanout_100_subscribers_20_publications() {
    let engine = TestEngine::start();
    let out_dir = tempfile::tempdir().unwrap();
    let (output, summary) = run_loadgen(
        out_dir.path(),
        &[
            "fanout".to_owned(),
            format!("--target={}", engine.target()),
            format!("--api={}", engine.engine().api_addr),
            format!("--secret={}", engine.jwt_secret),
            format!("--api-key={}", engine.api_key),
            "--connections=100".to_owned(),
            "--workers=2".to_owned(),
            "--channel=news:load".to_owned(),
            "--rate=50".to_owned(),
            "--seconds=0.4".to_owned(),
            "--source-ips=127.0.1.1-127.0.1.2".to_owned(),
        ],
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
    assert!(output.status.success(), "{summary:#}");
}
