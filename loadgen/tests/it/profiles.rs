//! `--profile`: Ringcast's binary protocol against the engine, and the
//! other servers' protocols against conformance fakes (`fake.rs`).

use crate::fake::{FakeServer, Kind};
use crate::util::{run_loadgen, TestEngine};

#[test]
fn fanout_binary_profile_40_subscribers_10_publications() {
    let engine = TestEngine::start();
    let out_dir = tempfile::tempdir().unwrap();
    let (output, summary) = run_loadgen(
        out_dir.path(),
        &engine.args(
            "fanout",
            &[
                "--profile=ringcast-binary",
                "--connections=40",
                "--workers=2",
                "--rate=50",
                "--seconds=0.2",
            ],
        ),
    );
    assert_eq!(summary["profile"], "ringcast-binary", "{summary:#}");
    assert_eq!(summary["subscribed"], 40, "{summary:#}");
    assert_eq!(summary["published"], 10, "{summary:#}");
    assert_eq!(summary["received"], 40 * 10, "{summary:#}");
    assert_eq!(summary["lost"], 0, "{summary:#}");
    assert_eq!(summary["duplicated"], 0, "{summary:#}");
    assert_eq!(summary["errors_total"], 0, "{summary:#}");
    assert!(output.status.success(), "{summary:#}");
}

/// fanout against a fake: 10 subscribers, 5 publications.
fn fanout_against(server: &FakeServer, profile: &str, extra: &[String]) -> serde_json::Value {
    let out_dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "fanout".to_owned(),
        format!("--profile={profile}"),
        "--connections=10".to_owned(),
        "--rate=20".to_owned(),
        "--seconds=0.25".to_owned(),
        "--drain-s=2".to_owned(),
    ];
    args.extend_from_slice(extra);
    let (output, summary) = run_loadgen(out_dir.path(), &args);
    assert_eq!(summary["subscribed"], 10, "{summary:#}");
    assert_eq!(summary["published"], 5, "{summary:#}");
    assert_eq!(summary["received"], 10 * 5, "{summary:#}");
    assert_eq!(summary["errors_total"], 0, "{summary:#}");
    assert!(output.status.success(), "{summary:#}");
    let log = server.log.lock().unwrap();
    assert_eq!(log.publishes_ok, 5, "{log:?}");
    assert!(log.refused.is_empty(), "{log:?}");
    summary
}

#[test]
fn nchan_profile_subscribes_by_url_and_posts_raw_bodies() {
    let server = FakeServer::start(Kind::Nchan);
    // No --secret: only the Ringcast profiles need one.
    fanout_against(
        &server,
        "nchan",
        &[
            format!("--target=ws://{}/sub/{{channel}}", server.ws_addr),
            format!("--publish-url=http://{}/pub/{{channel}}", server.http_addr),
        ],
    );
    let log = server.log.lock().unwrap();
    assert_eq!(log.ws_paths, vec!["/sub/load"; 10]);
    // Nothing is sent after the upgrade (no connect, no subscribe).
    assert!(log.ws_texts.is_empty(), "{log:?}");
}

#[test]
fn pushpin_profile_posts_grip_items() {
    let server = FakeServer::start(Kind::Pushpin);
    fanout_against(
        &server,
        "pushpin",
        &[
            format!("--target=ws://{}/sub/{{channel}}", server.ws_addr),
            format!("--publish-url=http://{}/publish/", server.http_addr),
            "--channel=grip-test".to_owned(),
        ],
    );
    let log = server.log.lock().unwrap();
    assert_eq!(log.ws_paths, vec!["/sub/grip-test"; 10]);
}

#[test]
fn pusher_profile_subscribes_pongs_and_signs_publishes() {
    let server = FakeServer::start(Kind::Pusher {
        app_id: "42".to_owned(),
        key: "app-key".to_owned(),
        secret: "app-secret".to_owned(),
    });
    fanout_against(
        &server,
        "pusher",
        &[
            format!(
                "--target=ws://{}/app/app-key?protocol=7&client=ringcast-loadgen&version=1",
                server.ws_addr
            ),
            format!("--api={}", server.http_addr),
            "--pusher-app-id=42".to_owned(),
            "--pusher-key=app-key".to_owned(),
            "--pusher-secret=app-secret".to_owned(),
        ],
    );
    let log = server.log.lock().unwrap();
    assert!(log
        .ws_paths
        .iter()
        .all(|path| path == "/app/app-key?protocol=7&client=ringcast-loadgen&version=1"));
    let subscribes = log
        .ws_texts
        .iter()
        .filter(|text| text.contains("pusher:subscribe"))
        .map(|text| serde_json::from_str::<serde_json::Value>(text).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(subscribes.len(), 10, "{log:?}");
    assert!(subscribes.iter().all(|s| s["data"]["channel"] == "load"));
    assert_eq!(log.pongs, 10, "{log:?}");
}

#[test]
fn pusher_publish_with_a_wrong_secret_is_refused_and_counted() {
    let server = FakeServer::start(Kind::Pusher {
        app_id: "42".to_owned(),
        key: "app-key".to_owned(),
        secret: "app-secret".to_owned(),
    });
    let out_dir = tempfile::tempdir().unwrap();
    let (output, summary) = run_loadgen(
        out_dir.path(),
        &[
            "fanout".to_owned(),
            "--profile=pusher".to_owned(),
            format!("--target=ws://{}/app/app-key?protocol=7", server.ws_addr),
            format!("--api={}", server.http_addr),
            "--pusher-app-id=42".to_owned(),
            "--pusher-key=app-key".to_owned(),
            "--pusher-secret=wrong".to_owned(),
            "--connections=2".to_owned(),
            "--rate=20".to_owned(),
            "--seconds=0.1".to_owned(),
            "--drain-s=0".to_owned(),
        ],
    );
    assert_eq!(summary["published"], 0, "{summary:#}");
    assert_eq!(
        summary["errors"]["handshake_status_publish_401"], 2,
        "{summary:#}"
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(server.log.lock().unwrap().refused, ["auth_signature"; 2]);
}

#[test]
fn profile_flags_are_checked() {
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringcast-loadgen"))
            .args(args)
            .env_remove("RINGCAST_AUTH_JWT_SECRET")
            .env_remove("RINGCAST_API_KEY")
            .env_remove("RINGCAST_PUSHER_SECRET")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = run(&["connect", "--connections=1"]);
    assert!(
        stderr.contains("--profile=ringcast needs --secret"),
        "{stderr}"
    );
    let stderr = run(&["reconnect", "--profile=nchan", "--api-key=k"]);
    assert!(
        stderr.contains("--profile=ringcast or ringcast-binary"),
        "{stderr}"
    );
    let stderr = run(&["chat", "--profile=pusher"]);
    assert!(
        stderr.contains("--profile=ringcast or ringcast-binary"),
        "{stderr}"
    );
    // IM chat: every user in a pair, whole pairs of users with all their
    // devices per worker; groups need IM and the API key that makes them.
    let stderr = run(&["chat", "--im", "--pair-share=0.5"]);
    assert!(stderr.contains("--pair-share=1.0"), "{stderr}");
    let stderr = run(&[
        "chat",
        "--im",
        "--pair-share=1",
        "--connections=6",
        "--devices-per-user=2",
    ]);
    assert!(stderr.contains("--devices-per-user"), "{stderr}");
    let stderr = run(&["chat", "--devices-per-user=2"]);
    assert!(stderr.contains("need --im"), "{stderr}");
    let stderr = run(&["chat", "--groups=1", "--api-key=k"]);
    assert!(stderr.contains("--groups needs --im"), "{stderr}");
    let stderr = run(&["chat", "--im", "--pair-share=1", "--groups=1"]);
    assert!(stderr.contains("pass --api-key"), "{stderr}");
    let stderr = run(&["fanout", "--profile=nchan", "--connections=1"]);
    assert!(stderr.contains("--publish-url"), "{stderr}");
    let stderr = run(&["fanout", "--profile=pusher", "--connections=1"]);
    assert!(stderr.contains("--pusher-app-id"), "{stderr}");
}
