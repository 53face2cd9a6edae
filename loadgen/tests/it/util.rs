//! An in-process engine and a runner for the built binary.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use ringcast_engine::config::Config;
use ringcast_engine::Engine;

/// A running engine with its own store directory, removed afterwards.
pub struct TestEngine {
    pub engine: Option<Engine>,
    pub jwt_secret: String,
    pub api_key: String,
    _data_dir: tempfile::TempDir,
}

impl Drop for TestEngine {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.shutdown();
        }
    }
}

impl TestEngine {
    pub fn start() -> TestEngine {
        TestEngine::start_with(|_| {})
    }

    /// With the IM layer on (`[im] enabled`).
    pub fn start_im() -> TestEngine {
        TestEngine::start_with(|config| config.im.enabled = true)
    }

    fn start_with(adjust: impl FnOnce(&mut Config)) -> TestEngine {
        let mut config = Config::test_min();
        config.websocket.connections_max_per_shard = 4_000;
        config.websocket.backlog = 1024;
        config.websocket.ping_interval = Duration::from_secs(60);
        config.websocket.pong_timeout = Duration::from_secs(60);
        config.websocket.slow_consumer_timeout = Duration::from_secs(5);
        config.websocket.handshake_timeout = Duration::from_secs(10);
        let data_dir = tempfile::tempdir().expect("temp dir");
        config.server.data_dir = data_dir.path().to_path_buf();
        adjust(&mut config);
        let jwt_secret = config.auth.jwt_secret.expose().to_owned();
        let api_key = config.api.key.expose().to_owned();
        TestEngine {
            engine: Some(Engine::start(config).expect("engine starts")),
            jwt_secret,
            api_key,
            _data_dir: data_dir,
        }
    }

    pub fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine running")
    }

    pub fn target(&self) -> String {
        format!("ws://{}/connection/websocket", self.engine().ws_addr)
    }

    /// `scenario` and the flags that point the load generator at this
    /// engine (target, API, JWT secret, and the API key for the scenarios
    /// that publish through the API), followed by `rest`.
    pub fn args(&self, scenario: &str, rest: &[&str]) -> Vec<String> {
        let mut args = vec![
            scenario.to_owned(),
            format!("--target={}", self.target()),
            format!("--api={}", self.engine().api_addr),
            format!("--secret={}", self.jwt_secret),
        ];
        if matches!(scenario, "fanout" | "reconnect") {
            args.push(format!("--api-key={}", self.api_key));
        }
        args.extend(rest.iter().map(|arg| (*arg).to_owned()));
        args
    }
}

/// Run the load generator with `args`; returns the process output and the
/// parsed `<out>.json` summary.
pub fn run_loadgen(out_dir: &Path, args: &[String]) -> (Output, serde_json::Value) {
    let prefix = out_dir.join("run");
    let output = Command::new(env!("CARGO_BIN_EXE_ringcast-loadgen"))
        .args(args)
        .arg(format!("--out={}", prefix.display()))
        .output()
        .expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let json_path = prefix.with_extension("json");
    let json = std::fs::read_to_string(&json_path).unwrap_or_else(|error| {
        panic!(
            "no {}: {error}\nstatus {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            json_path.display(),
            output.status
        )
    });
    let summary: serde_json::Value = serde_json::from_str(&json).expect("summary is JSON");
    assert!(prefix.with_extension("csv").exists(), "csv written");
    eprintln!("stdout:\n{stdout}\nstderr:\n{stderr}");
    (output, summary)
}
