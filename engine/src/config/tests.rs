//! Tests of loading, layering, validation and the docs, through the public
//! API where they can, so that they pin what operators see.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const KEY: &str = "api-key-0123456789";

fn minimal_toml() -> String {
    format!("[api]\nkey = \"{KEY}\"\n[auth]\njwt_secret = \"{SECRET}\"\n")
}

fn raw(args: &[&str], env: &[(&str, &str)]) -> RawArgs {
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut argv = vec!["ringcast"];
    argv.extend_from_slice(args);
    RawArgs::try_parse_from_with_env(argv, &env).expect("flags parse")
}

fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ringcast.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

fn error_text(result: Result<Config, ConfigError>) -> String {
    match result {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn defaults_load() {
    let config = Config::from_toml_str(&minimal_toml(), Path::new("min.toml")).expect("loads");
    assert!(config.server.shards.get() >= 1);
    assert!(config.server.pin_cores);
    assert_eq!(config.server.driver, Driver::Auto);
    assert_eq!(config.server.node_id.get(), 0);
    assert_eq!(config.server.data_dir, PathBuf::from("./data"));
    assert_eq!(config.server.shutdown_grace, Duration::from_millis(5000));
    let ws = &config.websocket;
    assert_eq!(ws.listen, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(ws.path, "/connection/websocket");
    assert_eq!(ws.handshake_timeout, Duration::from_secs(5));
    assert_eq!((ws.header_bytes_max, ws.headers_count_max), (8192, 64));
    assert_eq!(
        (ws.frame_bytes_max, ws.message_bytes_max),
        (65536, 1_048_576)
    );
    assert_eq!(ws.outbound_queue_bytes_max, 1_048_576);
    assert_eq!(ws.slow_consumer_timeout, Duration::from_secs(5));
    assert_eq!(
        (ws.ping_interval, ws.pong_timeout),
        (Duration::from_secs(25), Duration::from_secs(10))
    );
    assert_eq!(
        (
            ws.connections_max_per_shard,
            ws.subscriptions_max_per_connection,
            ws.backlog
        ),
        (100_000, 1024, 4096)
    );
    assert!(ws.allowed_origins.is_empty());
    assert!(ws.origin_allowed("https://anything.example"));
    assert_eq!(
        config.api.listen,
        "127.0.0.1:8081".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.api.key.expose(), KEY);
    assert_eq!(
        (config.api.body_bytes_max, config.api.header_bytes_max),
        (1_048_576, 16384)
    );
    assert_eq!(config.api.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.auth.algorithm, JwtAlgorithm::Hs256);
    assert_eq!(config.auth.leeway, Duration::from_secs(5));
    assert!(!config.auth.allow_anonymous);
    assert!(config.namespaces.is_empty());
    assert_eq!(
        (config.log.level.as_str(), config.log.format),
        ("info", LogFormat::Text)
    );
    assert_eq!(config.file_path.as_deref(), Some(Path::new("min.toml")));
}

#[test]
fn defaults_only_without_file_need_secrets_from_flags_or_env() {
    let text = error_text(Config::load(raw(&[], &[])));
    assert!(text.contains("api.key is required"), "{text}");
    assert!(
        text.contains("--api-key") && text.contains("RINGCAST_API_KEY"),
        "{text}"
    );
    assert!(text.contains("--config=PATH"), "{text}");

    let config = Config::load(raw(
        &[&format!("--api-key={KEY}")],
        &[("RINGCAST_AUTH_JWT_SECRET", SECRET)],
    ))
    .expect("loads");
    assert_eq!(config.auth.jwt_secret.expose(), SECRET);
    assert_eq!(config.file_path, None);
    assert_eq!(config.websocket.frame_bytes_max, 65536);
}

#[test]
fn repo_ringcast_toml_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ringcast.toml");
    let config =
        Config::load(raw(&[&format!("--config={path}")], &[])).expect("ringcast.toml loads");
    assert_eq!(
        config.websocket.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        config.api.listen,
        "127.0.0.1:8081".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.server.data_dir, PathBuf::from("./data"));
    let news = config.namespace("news:world").expect("news");
    assert_eq!(
        (news.subscribe, news.publish),
        (SubscribePolicy::Public, PublishPolicy::ServerOnly)
    );
    let chat = config.namespace("chat:lobby").expect("chat");
    assert_eq!(
        (chat.subscribe, chat.publish),
        (SubscribePolicy::Public, PublishPolicy::Subscribers)
    );
    let room = config.namespace("room:1").expect("room");
    assert_eq!(
        (room.subscribe, room.publish),
        (SubscribePolicy::Public, PublishPolicy::Any)
    );
}

#[test]
fn test_min_is_small_and_valid() {
    let config = Config::test_min();
    assert_eq!(config.server.shards.get(), 2);
    assert!(!config.server.pin_cores);
    assert_eq!(config.websocket.listen.port(), 0);
    assert_eq!(config.api.listen.port(), 0);
    assert!(config.auth.jwt_secret.len() >= JWT_SECRET_BYTES_MIN);
    assert!(config.api.key.len() >= API_KEY_BYTES_MIN);
    assert!(config.websocket.connections_max_per_shard <= 16);
    assert!(config.websocket.outbound_queue_bytes_max <= 4096);
    assert!(config.websocket.pong_timeout < Duration::from_secs(1));
    assert!(config.namespace("chat:x").is_some_and(|ns| ns.history));
}

#[test]
fn unknown_key_error_names_key_table_and_file() {
    let (_dir, path) = write_config(&format!(
        "{}[websocket]\nlistn = \"127.0.0.1:1\"\n",
        minimal_toml()
    ));
    let text = error_text(Config::load(raw(
        &[&format!("--config={}", path.display())],
        &[],
    )));
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("unknown field `listn`"), "{text}");
    assert!(text.contains("[websocket]"), "{text}");
    assert!(text.contains("line 6"), "{text}");
    assert!(text.contains("`listen`"), "expected keys listed: {text}");

    let text = error_text(Config::from_toml_str(
        "bogus = 1\n",
        Path::new("/etc/ringcast.toml"),
    ));
    assert!(
        text.starts_with("config error in /etc/ringcast.toml"),
        "{text}"
    );
    assert!(text.contains("unknown field `bogus`"), "{text}");

    let text = error_text(Config::from_toml_str(
        "[[namespace]]\nname = \"a\"\nhistroy = true\n",
        Path::new("x.toml"),
    ));
    assert!(
        text.contains("unknown field `histroy`") && text.contains("[[namespace]]"),
        "{text}"
    );

    let text = error_text(Config::from_toml_str(
        "[sever]\nshards = 1\n",
        Path::new("x.toml"),
    ));
    assert!(text.contains("unknown field `sever`"), "{text}");
}

#[test]
fn missing_explicit_file_names_path() {
    let text = error_text(Config::load(raw(
        &["--config=/nonexistent/ringcast.toml"],
        &[],
    )));
    assert!(
        text.contains("/nonexistent/ringcast.toml") && text.contains("--config"),
        "{text}"
    );
    let text = error_text(Config::load(raw(
        &[],
        &[("RINGCAST_CONFIG", "/nonexistent/env.toml")],
    )));
    assert!(
        text.contains("/nonexistent/env.toml") && text.contains("RINGCAST_CONFIG"),
        "{text}"
    );
}

#[test]
fn short_secret_rejected_naming_key_and_file() {
    let toml = format!("[api]\nkey = \"{KEY}\"\n[auth]\njwt_secret = \"short\"\n");
    let text = error_text(Config::from_toml_str(
        &toml,
        Path::new("/etc/ringcast.toml"),
    ));
    assert_eq!(
        text,
        "config error: auth.jwt_secret must be at least 32 bytes (got 5) in /etc/ringcast.toml"
    );
    assert!(!text.contains("short\""), "secret echoed: {text}");

    let text = error_text(Config::load(raw(
        &[],
        &[
            ("RINGCAST_API_KEY", "tiny"),
            ("RINGCAST_AUTH_JWT_SECRET", SECRET),
        ],
    )));
    assert!(
        text.contains("api.key must be at least 16 bytes (got 4)"),
        "{text}"
    );
    assert!(text.contains("RINGCAST_API_KEY"), "{text}");
}

#[test]
fn algorithm_other_than_hs256_rejected() {
    let toml = format!("{}algorithm = \"RS256\"\n", minimal_toml());
    let text = error_text(Config::from_toml_str(&toml, Path::new("a.toml")));
    assert!(
        text.contains("auth.algorithm") && text.contains("only HS256 is supported"),
        "{text}"
    );
    assert!(
        text.contains("\"RS256\"") && text.contains("in a.toml"),
        "{text}"
    );
    let toml = format!("{}algorithm = \"HS256\"\n", minimal_toml());
    assert!(Config::from_toml_str(&toml, Path::new("a.toml")).is_ok());
}

#[test]
fn version_other_than_1_rejected() {
    let ok = format!("version = 1\n{}", minimal_toml());
    assert!(Config::from_toml_str(&ok, Path::new("v.toml")).is_ok());
    let text = error_text(Config::from_toml_str(
        &format!("version = 2\n{}", minimal_toml()),
        Path::new("v.toml"),
    ));
    assert!(
        text.contains("version must be 1") && text.contains("got 2"),
        "{text}"
    );
}

#[test]
fn precedence_flag_over_env_over_file_over_default() {
    let (_dir, path) = write_config(&format!(
        "{}[websocket]\nlisten = \"127.0.0.1:9000\"\nframe_bytes_max = 2048\nping_interval_ms = 1000\n",
        minimal_toml()
    ));
    let config_flag = format!("--config={}", path.display());

    // File over default.
    let config = Config::load(raw(&[&config_flag], &[])).expect("loads");
    assert_eq!(config.websocket.listen.port(), 9000);
    assert_eq!(config.websocket.frame_bytes_max, 2048);
    assert_eq!(config.websocket.pong_timeout, Duration::from_secs(10));

    // Flag over file.
    let config = Config::load(raw(
        &[&config_flag, "--websocket-listen=127.0.0.1:9100"],
        &[],
    ))
    .expect("loads");
    assert_eq!(config.websocket.listen.port(), 9100);

    // Env over file.
    let env = [
        ("RINGCAST_WEBSOCKET_LISTEN", "127.0.0.1:9200"),
        ("RINGCAST_WEBSOCKET_FRAME_BYTES_MAX", "4096"),
    ];
    let config = Config::load(raw(&[&config_flag], &env)).expect("loads");
    assert_eq!(config.websocket.listen.port(), 9200);
    assert_eq!(config.websocket.frame_bytes_max, 4096);
    assert_eq!(config.websocket.ping_interval, Duration::from_secs(1));

    // Flag over env.
    let config = Config::load(raw(
        &[&config_flag, "--websocket-listen=127.0.0.1:9300"],
        &env,
    ))
    .expect("loads");
    assert_eq!(config.websocket.listen.port(), 9300);
    assert_eq!(config.websocket.frame_bytes_max, 4096);

    // Empty env counts as unset.
    let config =
        Config::load(raw(&[&config_flag], &[("RINGCAST_WEBSOCKET_LISTEN", "")])).expect("loads");
    assert_eq!(config.websocket.listen.port(), 9000);

    // --config over RINGCAST_CONFIG.
    let config = Config::load(raw(
        &[&config_flag],
        &[("RINGCAST_CONFIG", "/nonexistent.toml")],
    ))
    .expect("loads");
    assert_eq!(config.file_path.as_deref(), Some(path.as_path()));
}

#[test]
fn override_errors_name_flag_or_env() {
    let base = [
        ("RINGCAST_API_KEY", KEY),
        ("RINGCAST_AUTH_JWT_SECRET", SECRET),
    ];
    let text = error_text(Config::load(raw(
        &["--websocket-frame-bytes-max=64"],
        &base,
    )));
    assert!(
        text.contains("websocket.frame_bytes_max must be a whole number of bytes from 128 to"),
        "{text}"
    );
    assert!(
        text.contains("(got 64) (from --websocket-frame-bytes-max)"),
        "{text}"
    );

    let mut env = base.to_vec();
    env.push(("RINGCAST_SERVER_PIN_CORES", "yes"));
    let text = error_text(Config::load(raw(&[], &env)));
    assert!(
        text.contains("server.pin_cores must be true or false")
            && text.contains("RINGCAST_SERVER_PIN_CORES"),
        "{text}"
    );

    let text = error_text(Config::load(raw(&["--server-driver=kqueue"], &base)));
    assert!(
        text.contains("server.driver must be one of \"auto\", \"io_uring\", \"epoll\""),
        "{text}"
    );

    let config = Config::load(raw(
        &[
            "--server-driver=io_uring",
            "--server-pin-cores=false",
            "--server-shards=3",
        ],
        &base,
    ))
    .expect("loads");
    assert_eq!(
        (
            config.server.driver,
            config.server.pin_cores,
            config.server.shards.get()
        ),
        (Driver::IoUring, false, 3)
    );
}

#[test]
fn unknown_env_in_known_section_rejected() {
    let env = [
        ("RINGCAST_API_KEY", KEY),
        ("RINGCAST_AUTH_JWT_SECRET", SECRET),
        ("RINGCAST_WEBSOCKET_LISTN", "x"),
    ];
    let text = error_text(Config::load(raw(&[], &env)));
    assert!(
        text.contains("unknown environment variable RINGCAST_WEBSOCKET_LISTN"),
        "{text}"
    );
    // Other RINGCAST_ names are not ours to judge.
    let env = [
        ("RINGCAST_API_KEY", KEY),
        ("RINGCAST_AUTH_JWT_SECRET", SECRET),
        ("RINGCAST_LOADGEN_URL", "x"),
    ];
    assert!(Config::load(raw(&[], &env)).is_ok());
}

#[test]
fn duplicate_flag_rejected() {
    let env = BTreeMap::new();
    let result = RawArgs::try_parse_from_with_env(
        [
            "ringcast",
            "--websocket-listen=127.0.0.1:1",
            "--websocket-listen=127.0.0.1:2",
        ],
        &env,
    );
    let error = result.expect_err("duplicate flag must be rejected");
    assert_eq!(
        error.kind(),
        clap::error::ErrorKind::ArgumentConflict,
        "{error}"
    );
    assert!(error.to_string().contains("--websocket-listen"), "{error}");

    let result =
        RawArgs::try_parse_from_with_env(["ringcast", "--config=a.toml", "--config=b.toml"], &env);
    assert!(result.is_err());
}

#[test]
fn flags_are_long_and_need_equals() {
    let env = BTreeMap::new();
    assert!(RawArgs::try_parse_from_with_env(
        ["ringcast", "--websocket-listen", "127.0.0.1:1"],
        &env
    )
    .is_err());
    assert!(RawArgs::try_parse_from_with_env(["ringcast", "-c=x"], &env).is_err());
}

#[test]
fn namespace_rules_parse() {
    let toml = format!(
        "{}\
         [[namespace]]\nname = \"\"\npublish = \"any\"\n\
         [[namespace]]\nname = \"inbox\"\nsubscribe = \"owner\"\n\
         [[namespace]]\nname = \"chat\"\nsubscribe = \"public\"\npublish = \"subscribers\"\nhistory = true\n\
         durability = \"sync\"\nretention_count = 50\nretention_age_s = 3600\n\
         [[namespace]]\nname = \"ops_internal-2\"\nsubscribe = \"none\"\n",
        minimal_toml()
    );
    let config = Config::from_toml_str(&toml, Path::new("ns.toml")).expect("loads");
    assert_eq!(config.namespaces.len(), 4);
    let default = config.namespace("lobby").expect("default namespace");
    assert_eq!(
        (default.name.as_str(), default.publish),
        ("", PublishPolicy::Any)
    );
    let inbox = config.namespace("inbox:42").expect("inbox");
    assert_eq!(
        (inbox.subscribe, inbox.publish),
        (SubscribePolicy::Owner, PublishPolicy::ServerOnly)
    );
    assert_eq!(
        (inbox.history, inbox.durability),
        (false, Durability::Buffered)
    );
    assert_eq!(
        (inbox.retention_count, inbox.retention_age),
        (1000, Duration::from_secs(86_400))
    );
    let chat = config
        .namespace("chat:a:b")
        .expect("split at the first ':'");
    assert_eq!(chat.name, "chat");
    assert_eq!(
        (chat.history, chat.durability, chat.retention_count),
        (true, Durability::Sync, 50)
    );
    assert_eq!(chat.retention_age, Duration::from_secs(3600));
    assert_eq!(
        config.namespace("ops_internal-2:x").map(|ns| ns.subscribe),
        Some(SubscribePolicy::ServerOnly)
    );
    assert!(config.namespace("missing:x").is_none());
    let token = Config::from_toml_str(
        &format!(
            "{}[[namespace]]\nname = \"g\"\nsubscribe = \"token\"\n",
            minimal_toml()
        ),
        Path::new("n"),
    )
    .expect("loads");
    assert_eq!(
        token.namespace("g:1").map(|ns| ns.subscribe),
        Some(SubscribePolicy::Token)
    );
    assert!(config.namespace(":x").is_none());
    assert!(config.namespace("user:42").is_none());

    let without_default = Config::from_toml_str(
        &format!("{}[[namespace]]\nname = \"a\"\n", minimal_toml()),
        Path::new("n"),
    )
    .expect("loads");
    assert!(without_default.namespace("lobby").is_none());
}

#[test]
fn namespace_errors_name_the_entry() {
    let cases: &[(&str, &str)] = &[
        ("name = \"user\"", "namespace[0].name must not be \"user\": the engine owns user:<id>"),
        ("name = \"Chat\"", "namespace[0].name must be at most 64 characters of a-z"),
        ("name = \"a:b\"", "namespace[0].name must be"),
        ("subscribe = \"public\"", "namespace[0].name is required"),
        ("name = \"a\"\nsubscribe = \"everyone\"", "namespace[0].subscribe must be one of \"public\", \"owner\", \"none\", \"token\" (got \"everyone\")"),
        ("name = \"a\"\npublish = \"all\"", "namespace[0].publish must be one of \"none\", \"subscribers\", \"any\""),
        ("name = \"a\"\ndurability = \"fsync\"", "namespace[0].durability must be one of \"sync\", \"buffered\""),
        ("name = \"a\"\nretention_count = 0", "namespace[0].retention_count must be"),
        ("name = \"\"\nsubscribe = \"owner\"", "namespace[0].subscribe cannot be \"owner\" for the default namespace"),
    ];
    for (body, expected) in cases {
        let toml = format!("{}[[namespace]]\n{body}\n", minimal_toml());
        let text = error_text(Config::from_toml_str(&toml, Path::new("ns.toml")));
        assert!(
            text.contains(expected) && text.ends_with("in ns.toml"),
            "{body}: {text}"
        );
    }
    let toml = format!(
        "{}[[namespace]]\nname = \"a\"\n[[namespace]]\nname = \"a\"\n",
        minimal_toml()
    );
    let text = error_text(Config::from_toml_str(&toml, Path::new("ns.toml")));
    assert!(text.contains("namespace[1].name must be unique"), "{text}");
}

#[test]
fn invalid_socket_addr_names_key() {
    let toml = format!("{}[websocket]\nlisten = \"localhost:80\"\n", minimal_toml());
    let text = error_text(Config::from_toml_str(
        &toml,
        Path::new("/etc/ringcast.toml"),
    ));
    assert!(
        text.contains("websocket.listen must be an IP address and port"),
        "{text}"
    );
    assert!(
        text.contains("\"localhost:80\"") && text.ends_with("in /etc/ringcast.toml"),
        "{text}"
    );

    let base = [
        ("RINGCAST_API_KEY", KEY),
        ("RINGCAST_AUTH_JWT_SECRET", SECRET),
    ];
    let text = error_text(Config::load(raw(&["--api-listen=8081"], &base)));
    assert!(
        text.contains("api.listen must be an IP address") && text.contains("--api-listen"),
        "{text}"
    );

    let text = error_text(Config::load(raw(&["--api-listen=127.0.0.1:8080"], &base)));
    assert!(
        text.contains("api.listen must differ from websocket.listen"),
        "{text}"
    );

    let text = error_text(Config::load(raw(&["--api-node-listen=9081"], &base)));
    assert!(
        text.contains("api.node_listen must be an ip:port address")
            && text.contains("--api-node-listen"),
        "{text}"
    );
    let text = error_text(Config::load(raw(
        &["--api-node-listen=127.0.0.1:8081"],
        &base,
    )));
    assert!(
        text.contains("api.node_listen must differ from api.listen"),
        "{text}"
    );
    let config = Config::load(raw(&["--api-node-listen=127.0.0.1:9081"], &base)).unwrap();
    assert_eq!(config.api.node_listen, "127.0.0.1:9081");
}

#[test]
fn value_limits_enforced() {
    let cases: &[(&str, &str)] = &[
        (
            "[server]\nshards = 63",
            "server.shards must be a whole number of shards from 0 to 62 (got 63)",
        ),
        (
            "[server]\nnode_id = 64",
            "server.node_id must be a whole number of ids from 0 to 63 (got 64)",
        ),
        (
            "[server]\ndriver = \"iouring\"",
            "server.driver must be one of",
        ),
        (
            "[server]\ndata_dir = \"\"",
            "server.data_dir must be a non-empty directory path",
        ),
        (
            "[websocket]\npath = \"ws\"",
            "websocket.path must start with '/'",
        ),
        (
            "[websocket]\nmessage_bytes_max = 1023",
            "websocket.message_bytes_max must be a whole number of bytes from 1024",
        ),
        (
            "[websocket]\nframe_bytes_max = 127",
            "websocket.frame_bytes_max must be a whole number of bytes from 128",
        ),
        (
            "[websocket]\noutbound_queue_bytes_max = 4095",
            "websocket.outbound_queue_bytes_max must be a whole number of bytes from 4096",
        ),
        (
            "[websocket]\npong_timeout_ms = 5",
            "websocket.pong_timeout_ms must be a whole number of milliseconds from 10",
        ),
        (
            "[websocket]\nallowed_origins = [\"*\"]",
            "leave the list empty to allow any origin",
        ),
        (
            "[websocket]\nallowed_origins = [\"https://a.example/\"]",
            "websocket.allowed_origins entries must be origins",
        ),
        (
            "[log]\nformat = \"yaml\"",
            "log.format must be one of \"text\", \"json\" (got \"yaml\")",
        ),
    ];
    for (body, expected) in cases {
        let toml = format!("{}{body}\n", minimal_toml());
        let text = error_text(Config::from_toml_str(&toml, Path::new("l.toml")));
        assert!(
            text.contains(expected) && text.ends_with("in l.toml"),
            "{body}: {text}"
        );
    }
    // A type error from serde still names the file and line.
    let text = error_text(Config::from_toml_str(
        "[server]\nshards = -1\n",
        Path::new("l.toml"),
    ));
    assert!(
        text.contains("l.toml (line 2") && text.contains("[server]"),
        "{text}"
    );
    // Message smaller than a frame is allowed.
    let toml = format!(
        "{}[websocket]\nframe_bytes_max = 4096\nmessage_bytes_max = 1024\n",
        minimal_toml()
    );
    assert!(Config::from_toml_str(&toml, Path::new("l.toml")).is_ok());
}

#[test]
fn allowed_origins_from_file_and_env() {
    let toml = format!(
        "{}[websocket]\nallowed_origins = [\"https://App.example\"]\n",
        minimal_toml()
    );
    let config = Config::from_toml_str(&toml, Path::new("o.toml")).expect("loads");
    assert_eq!(
        config.websocket.allowed_origins,
        vec!["https://app.example".to_owned()]
    );
    assert!(config.websocket.origin_allowed("https://APP.example"));
    assert!(!config.websocket.origin_allowed("https://evil.example"));

    let env = [
        ("RINGCAST_API_KEY", KEY),
        ("RINGCAST_AUTH_JWT_SECRET", SECRET),
        (
            "RINGCAST_WEBSOCKET_ALLOWED_ORIGINS",
            "https://a.example, http://localhost:3000",
        ),
    ];
    let config = Config::load(raw(&[], &env)).expect("loads");
    assert_eq!(
        config.websocket.allowed_origins,
        vec!["https://a.example", "http://localhost:3000"]
    );
}

#[test]
fn shards_zero_resolves_to_cores() {
    let toml = format!("{}[server]\nshards = 0\n", minimal_toml());
    let config = Config::from_toml_str(&toml, Path::new("s.toml")).expect("loads");
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(usize::from(SHARDS_MAX));
    assert_eq!(config.server.shards.as_usize(), cores);
    assert!(
        ShardCount::new(0).is_none()
            && ShardCount::new(SHARDS_MAX + 1).is_none()
            && ShardCount::new(SHARDS_MAX).is_some()
    );
    assert!(NodeId::new(64).is_none() && NodeId::new(63).is_some());
}

#[test]
fn secrets_are_redacted_in_debug() {
    let config = Config::test_min();
    let debug = format!("{config:?}");
    assert!(
        !debug.contains(config.auth.jwt_secret.expose()),
        "jwt secret leaked in Debug"
    );
    assert!(
        !debug.contains(config.api.key.expose()),
        "api key leaked in Debug"
    );
    assert!(config.api.key.matches(config.api.key.expose().as_bytes()));
    assert!(!config.api.key.matches(b"test-api-key-012345678X"));
    assert!(!config.api.key.matches(b"short"));
}

#[test]
fn proxies_parse_and_unknown_names_are_refused() {
    let text = format!(
        "{}[[proxy]]\nname = \"app\"\nurl = \"http://127.0.0.1:3000/hook\"\ntimeout_ms = 500\n\
         [[namespace]]\nname = \"talk\"\npublish = \"any\"\npublish_proxy = \"app\"\n",
        minimal_toml()
    );
    let config = Config::from_toml_str(&text, Path::new("ringcast.toml")).expect("valid");
    assert_eq!(config.proxies.len(), 1);
    assert_eq!(config.proxies[0].timeout, Duration::from_millis(500));
    assert_eq!(config.proxies[0].concurrency_max, 64);
    assert_eq!(config.proxy_index("app"), Some(0));
    assert_eq!(config.proxy_index(""), None);

    let typo = text.replace("publish_proxy = \"app\"", "publish_proxy = \"ap\"");
    let err = Config::from_toml_str(&typo, Path::new("ringcast.toml"))
        .expect_err("unknown proxy")
        .to_string();
    assert!(
        err.contains("namespace[0].publish_proxy") && err.contains("ringcast.toml"),
        "{err}"
    );

    let https = text.replace("http://127", "https://127");
    let err = Config::from_toml_str(&https, Path::new("ringcast.toml"))
        .expect_err("https")
        .to_string();
    assert!(err.contains("proxy[0].url"), "{err}");

    let twice = format!("{text}[[proxy]]\nname = \"app\"\nurl = \"http://127.0.0.1:3001/\"\n");
    let err = Config::from_toml_str(&twice, Path::new("ringcast.toml"))
        .expect_err("duplicate")
        .to_string();
    assert!(err.contains("proxy[1].name"), "{err}");

    let send = format!("{}[websocket]\nsend_proxy = \"nope\"\n", minimal_toml());
    let err = Config::from_toml_str(&send, Path::new("ringcast.toml"))
        .expect_err("unknown send proxy")
        .to_string();
    assert!(err.contains("websocket.send_proxy"), "{err}");

    let dm = format!("{}[im]\ndm_policy_proxy = \"nope\"\n", minimal_toml());
    let err = Config::from_toml_str(&dm, Path::new("ringcast.toml"))
        .expect_err("unknown DM policy proxy")
        .to_string();
    assert!(
        err.contains("im.dm_policy_proxy") && err.contains("ringcast.toml"),
        "{err}"
    );
}

#[test]
fn replace_token_without_a_connect_proxy_and_a_refresh_margin_within_the_timeout_are_refused() {
    let proxy =
        "[[proxy]]\nname = \"app\"\nurl = \"http://127.0.0.1:3000/hook\"\ntimeout_ms = 2000\n";
    let load = |websocket: &str| {
        let text = format!("{}[websocket]\n{websocket}{proxy}", minimal_toml());
        Config::from_toml_str(&text, Path::new("ringcast.toml")).map_err(|err| err.to_string())
    };
    let err = load("connect_proxy_mode = \"replace_token\"\n").expect_err("no connect proxy");
    assert!(
        err.contains("websocket.connect_proxy_mode")
            && err.contains("websocket.connect_proxy ")
            && err.contains("ringcast.toml"),
        "{err}"
    );
    load("connect_proxy_mode = \"replace_token\"\nconnect_proxy = \"app\"\n").expect("valid");

    let err = load("refresh_proxy = \"app\"\nrefresh_proxy_margin_ms = 2000\n")
        .expect_err("margin within the timeout");
    assert!(
        err.contains("websocket.refresh_proxy_margin_ms") && err.contains("proxy.timeout_ms"),
        "{err}"
    );
    load("refresh_proxy = \"app\"\nrefresh_proxy_margin_ms = 2001\n").expect("valid");
}

const HOOK_SECRET: &str = "webhook-secret-0123456789abcdef0123";

#[test]
fn webhook_keys_parse_and_cross_checks_name_the_keys() {
    let config = Config::from_toml_str(&minimal_toml(), Path::new("ringcast.toml")).expect("loads");
    assert!(config.webhook.url.is_empty(), "webhooks are off by default");
    assert!(config.webhook.secret.is_none());
    assert_eq!(config.webhook.events, WebhookEvents::ALL);
    assert_eq!(config.webhook.attempts_max, 10);
    assert_eq!(
        config.webhook.undelivered_after,
        Duration::from_millis(30_000)
    );

    let text = format!(
        "{}[webhook]\nurl = \"http://127.0.0.1:3000/events\"\nsecret = \"{HOOK_SECRET}\"\n\
         events = [\"online\", \"offline\"]\nbackoff_min_ms = 100\nbackoff_max_ms = 200\n",
        minimal_toml()
    );
    let config = Config::from_toml_str(&text, Path::new("ringcast.toml")).expect("valid");
    assert_eq!(config.webhook.url, "http://127.0.0.1:3000/events");
    assert_eq!(
        config.webhook.secret.as_ref().map(Secret::expose),
        Some(HOOK_SECRET)
    );
    assert!(config.webhook.events.contains(WebhookEvent::Online));
    assert!(config.webhook.events.contains(WebhookEvent::Offline));
    assert!(!config.webhook.events.contains(WebhookEvent::Message));
    assert!(!config.webhook.events.contains(WebhookEvent::Undelivered));
    assert!(
        !format!("{config:?}").contains(HOOK_SECRET),
        "webhook secret leaked in Debug"
    );

    let no_secret = text.replace(&format!("secret = \"{HOOK_SECRET}\"\n"), "");
    let err = error_text(Config::from_toml_str(
        &no_secret,
        Path::new("ringcast.toml"),
    ));
    assert!(
        err.contains("webhook.secret") && err.contains("ringcast.toml"),
        "{err}"
    );

    let short = text.replace(HOOK_SECRET, "short");
    let err = error_text(Config::from_toml_str(&short, Path::new("ringcast.toml")));
    assert!(
        err.contains("webhook.secret") && err.contains("32 bytes"),
        "{err}"
    );

    let upside_down = text.replace("backoff_min_ms = 100", "backoff_min_ms = 300");
    let err = error_text(Config::from_toml_str(
        &upside_down,
        Path::new("ringcast.toml"),
    ));
    assert!(
        err.contains("webhook.backoff_min_ms") && err.contains("webhook.backoff_max_ms"),
        "{err}"
    );

    let https = text.replace("http://127", "https://127");
    let err = error_text(Config::from_toml_str(&https, Path::new("ringcast.toml")));
    assert!(err.contains("webhook.url"), "{err}");

    let unknown = text.replace("\"online\", ", "\"online\", \"typing\", ");
    let err = error_text(Config::from_toml_str(&unknown, Path::new("ringcast.toml")));
    assert!(
        err.contains("webhook.events") && err.contains("typing"),
        "{err}"
    );

    let env = [
        ("RINGCAST_API_KEY", KEY),
        ("RINGCAST_AUTH_JWT_SECRET", SECRET),
        ("RINGCAST_WEBHOOK_URL", "http://127.0.0.1:9/hook"),
        ("RINGCAST_WEBHOOK_SECRET", HOOK_SECRET),
        ("RINGCAST_WEBHOOK_EVENTS", "message, undelivered"),
    ];
    let config = Config::load(raw(&[], &env)).expect("loads");
    assert_eq!(config.webhook.url, "http://127.0.0.1:9/hook");
    assert!(config.webhook.events.contains(WebhookEvent::Message));
    assert!(config.webhook.events.contains(WebhookEvent::Undelivered));
    assert!(!config.webhook.events.contains(WebhookEvent::Online));
}
