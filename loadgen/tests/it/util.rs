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

/// The engine as its own process (the released binary), so `--watch-pid`
/// samples a server that is not the test itself. The binary is
/// `RINGCAST_ENGINE_BIN`, else the workspace's `target/release/ringcast`;
/// without either (a fresh clone with no release build) the engine runs
/// in this process instead, and the watched pid is the test's own.
pub struct EngineProcess {
    pub pid: u32,
    pub ws_addr: String,
    pub api_addr: String,
    pub jwt_secret: String,
    pub api_key: String,
    child: Option<std::process::Child>,
    _in_process: Option<TestEngine>,
    _data_dir: tempfile::TempDir,
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl EngineProcess {
    pub fn start() -> EngineProcess {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let binary = std::env::var_os("RINGCAST_ENGINE_BIN")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| workspace.join("target/release/ringcast"));
        let data_dir = tempfile::tempdir().expect("temp dir");
        if !binary.exists() {
            eprintln!(
                "{} not built: the engine runs in the test process",
                binary.display()
            );
            let engine = TestEngine::start();
            return EngineProcess {
                pid: std::process::id(),
                ws_addr: engine.engine().ws_addr.to_string(),
                api_addr: engine.engine().api_addr.to_string(),
                jwt_secret: engine.jwt_secret.clone(),
                api_key: engine.api_key.clone(),
                child: None,
                _in_process: Some(engine),
                _data_dir: data_dir,
            };
        }
        let jwt_secret = "test-jwt-secret-0123456789abcdef0123456789".to_owned();
        let api_key = "test-api-key-0123456789abcdef".to_owned();
        let mut child = Command::new(&binary)
            .arg(format!(
                "--config={}",
                workspace.join("ringcast.toml").display()
            ))
            .args([
                "--server-shards=1",
                "--server-pin-cores=false",
                "--websocket-listen=127.0.0.1:0",
                "--api-listen=127.0.0.1:0",
            ])
            .arg(format!("--api-key={api_key}"))
            .arg(format!("--auth-jwt-secret={jwt_secret}"))
            .arg(format!("--server-data-dir={}", data_dir.path().display()))
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", binary.display()));
        // The log says where it listens once it is ready (ports were 0).
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                use std::io::BufRead as _;
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        let (ws_addr, api_addr) = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("engine not ready; its log:\n{}", seen.join("\n")));
            let plain = strip_ansi(&line);
            if plain.contains("ringcast is ready") {
                let value = |key: &str| {
                    plain
                        .split_whitespace()
                        .find_map(|word| word.strip_prefix(key))
                        .unwrap_or_else(|| panic!("no {key} in {plain}"))
                        .to_owned()
                };
                break (value("websocket="), value("api="));
            }
            seen.push(plain);
        };
        EngineProcess {
            pid: child.id(),
            ws_addr,
            api_addr,
            jwt_secret,
            api_key,
            child: Some(child),
            _in_process: None,
            _data_dir: data_dir,
        }
    }

    /// As `TestEngine::args`.
    pub fn args(&self, scenario: &str, rest: &[&str]) -> Vec<String> {
        let mut args = vec![
            scenario.to_owned(),
            format!("--target=ws://{}/connection/websocket", self.ws_addr),
            format!("--api={}", self.api_addr),
            format!("--secret={}", self.jwt_secret),
        ];
        if matches!(scenario, "fanout" | "reconnect") {
            args.push(format!("--api-key={}", self.api_key));
        }
        args.extend(rest.iter().map(|arg| (*arg).to_owned()));
        args
    }
}

/// Drop terminal colour sequences (`ESC [ ... m`) from a log line.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
