//! `wss://`: rustls on the shards, the certificate from config, its reload,
//! and the errors for bad files. The client is rustls' client side under
//! tungstenite; engine/tests/e2e/test_tls.py repeats the round trip and the
//! SIGHUP reload with Python's `ssl` (OpenSSL) and `websockets`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ringcast_engine::config::{Config, TlsConfig};
use ringcast_engine::tls::{TlsConfigs, TlsError};
use ringcast_engine::Engine;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::WebSocket;

use crate::e2e;
use crate::util::*;

type Wss = WebSocket<StreamOwned<ClientConnection, TcpStream>>;

/// A test CA and the leaf certificates it issues for `localhost`.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    dir: tempfile::TempDir,
}

/// One issued leaf: its files and its DER (what a client sees).
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ringcast test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        Pki {
            ca,
            ca_key,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn leaf(&self) -> Leaf {
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// Writes `leaf` as the configured files (new files renamed over the
    /// old ones, as an operator's deploy would).
    fn install(&self, leaf: &Leaf) {
        write_replacing(&self.cert_path(), &leaf.cert_pem);
        write_replacing(&self.key_path(), &leaf.key_pem);
    }

    fn tls_config(&self) -> TlsConfig {
        TlsConfig {
            cert_file: Some(self.cert_path()),
            key_file: Some(self.key_path()),
            websocket: true,
            // `util::api` speaks plain HTTP to the API.
            api: false,
        }
    }

    fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(ringcast_engine::tls::crypto_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

fn write_replacing(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn tls_engine(driver: ringcast_engine::config::Driver, pki: &Pki) -> TestEngine {
    let mut config = config(driver, 2);
    config.tls = pki.tls_config();
    start(config)
}

/// Connects over TLS as `user`; returns the socket, the certificate the
/// server presented, and the `connect` message.
fn connect_tls(engine: &Engine, pki: &Pki, user: &str) -> (Wss, CertificateDer<'static>, Value) {
    let (mut ws, response) = upgrade_tls(engine, pki, &token(user)).expect("upgrade");
    assert_eq!(response.status(), 101);
    let tls = &ws.get_ref().conn;
    assert_eq!(tls.alpn_protocol(), Some(&b"http/1.1"[..]), "ALPN");
    let presented = tls.peer_certificates().expect("server certificate")[0].clone();
    let first = read_json(&mut ws);
    assert!(first.get("connect").is_some(), "first message: {first}");
    (ws, presented, first)
}

fn upgrade_tls(
    engine: &Engine,
    pki: &Pki,
    token: &str,
) -> Result<(Wss, tungstenite::handshake::client::Response), Box<tungstenite::Error>> {
    let tcp = TcpStream::connect(engine.ws_addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let server_name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(pki.client_config(), server_name).unwrap();
    let stream = StreamOwned::new(conn, tcp);
    let request = format!(
        "wss://localhost:{}/connection/websocket?token={token}",
        engine.ws_addr.port()
    )
    .into_client_request()
    .unwrap();
    tungstenite::client(request, stream).map_err(|err| match err {
        tungstenite::HandshakeError::Failure(err) => Box::new(err),
        tungstenite::HandshakeError::Interrupted(_) => panic!("blocking handshake interrupted"),
    })
}

e2e!(wss_subscribe_publish_and_close, |driver| {
    let pki = Pki::new();
    let leaf = pki.leaf();
    pki.install(&leaf);
    let engine = tls_engine(driver, &pki);
    let (mut ws, presented, _) = connect_tls(&engine, &pki, "alice");
    assert_eq!(presented, leaf.der, "the configured certificate");
    let tls = &ws.get_ref().conn;
    assert_eq!(
        tls.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let group = tls
        .negotiated_key_exchange_group()
        .map(|group| group.name());
    assert_eq!(
        group,
        Some(rustls::NamedGroup::X25519),
        "the first group offered"
    );
    subscribe(&mut ws, 1, "news:tls");
    publish(&engine, "news:tls", json!({"n": 1}));
    let push = read_json(&mut ws);
    assert_eq!(push["push"]["channel"], "news:tls");
    assert_eq!(push["push"]["data"]["n"], 1);
    // The server closes on shutdown: 1001 arrives through TLS.
    engine.shutdown();
    assert_eq!(read_close_code(&mut ws), Some(1001));
});

e2e!(
    wss_delivers_a_burst_larger_than_the_tls_buffers_in_order,
    |driver| {
        let pki = Pki::new();
        pki.install(&pki.leaf());
        let mut config = config(driver, 2);
        config.tls = pki.tls_config();
        config.websocket.outbound_queue_bytes_max = 8 * 1024 * 1024;
        config.api.body_bytes_max = 64 * 1024;
        let engine = start(config);
        let (mut ws, _, _) = connect_tls(&engine, &pki, "bob");
        subscribe(&mut ws, 1, "news:burst");
        // 200 × 40 KiB: many times rustls' 16 KiB limit and the socket buffers,
        // so plaintext waits in the session queue and records in the shard.
        let blob = "y".repeat(40 * 1024);
        const N: u64 = 200;
        for seq in 0..N {
            publish(&engine, "news:burst", json!({"seq": seq, "blob": blob}));
        }
        for seq in 0..N {
            let push = read_json(&mut ws);
            assert_eq!(push["push"]["data"]["seq"], seq, "in order, none lost");
            assert_eq!(
                push["push"]["data"]["blob"].as_str().map(str::len),
                Some(blob.len())
            );
        }
        // The client's own close is answered through TLS too.
        ws.close(Some(tungstenite::protocol::CloseFrame {
            code: tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "done".into(),
        }))
        .unwrap();
        assert_eq!(
            read_close_code(&mut ws),
            Some(1000),
            "the echo of our close"
        );
    }
);

e2e!(wss_stalled_reader_is_cut_off_as_a_slow_consumer, |driver| {
    let pki = Pki::new();
    pki.install(&pki.leaf());
    let mut config = config(driver, 2);
    config.tls = pki.tls_config();
    config.websocket.outbound_queue_bytes_max = 256 * 1024;
    config.websocket.slow_consumer_timeout = Duration::from_millis(300);
    config.api.body_bytes_max = 64 * 1024;
    let engine = start(config);
    let (mut stalled, _, _) = connect_tls(&engine, &pki, "stalled");
    subscribe(&mut stalled, 1, "news:firehose");
    let blob = "x".repeat(32 * 1024);
    for seq in 0..400 {
        publish(&engine, "news:firehose", json!({"seq": seq, "blob": blob}));
    }
    assert!(
        wait_until(Duration::from_secs(5), || {
            shard_stat_sum(&engine, "slow_consumer_disconnects_total") == 1
        }),
        "the TLS client that stopped reading was cut off"
    );
    engine.shutdown();
});

e2e!(wss_refusal_reaches_the_client_before_the_close, |driver| {
    let pki = Pki::new();
    pki.install(&pki.leaf());
    let engine = tls_engine(driver, &pki);
    match upgrade_tls(&engine, &pki, "not-a-token").map_err(|err| *err) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected a 401 over TLS, got {:?}", other.map(|(_, r)| r)),
    }
});

e2e!(plain_client_on_the_tls_port_is_closed, |driver| {
    let pki = Pki::new();
    pki.install(&pki.leaf());
    let engine = tls_engine(driver, &pki);
    let mut plain = TcpStream::connect(engine.ws_addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = format!(
        "GET /connection/websocket?token={} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        token("plain")
    );
    std::io::Write::write_all(&mut plain, request.as_bytes()).unwrap();
    // An HTTP request is no ClientHello: rustls answers with an alert and
    // the engine closes; no 101 ever comes.
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain, &mut got);
    assert!(
        !got.starts_with(b"HTTP/1.1 101"),
        "no upgrade over plain TCP"
    );
    assert!(got.len() < 64, "at most an alert: {got:?}");
    // The engine keeps serving TLS clients.
    let (_ws, _, _) = connect_tls(&engine, &pki, "after");
});

e2e!(
    reload_swaps_the_certificate_for_new_connections_only,
    |driver| {
        let pki = Pki::new();
        let first = pki.leaf();
        pki.install(&first);
        let engine = tls_engine(driver, &pki);
        let (mut old, presented, _) = connect_tls(&engine, &pki, "old");
        assert_eq!(presented, first.der);
        subscribe(&mut old, 1, "news:reload");

        let second = pki.leaf();
        assert_ne!(first.der, second.der);
        pki.install(&second);
        assert!(engine.reload_tls().expect("reload"), "TLS is on");

        // New handshakes see the new certificate, on every shard.
        for i in 0..4 {
            let (mut new, presented, _) = connect_tls(&engine, &pki, &format!("new{i}"));
            assert_eq!(presented, second.der, "connection {i} after the reload");
            subscribe(&mut new, 1, "news:reload");
        }
        // The connection from before is untouched and still carries traffic
        // both ways.
        publish(&engine, "news:reload", json!({"after": "reload"}));
        let push = read_json(&mut old);
        assert_eq!(push["push"]["data"]["after"], "reload");
        subscribe(&mut old, 2, "news:other");

        // A bad file on reload keeps the current certificate.
        std::fs::write(pki.cert_path(), "not a certificate").unwrap();
        let err = engine.reload_tls().expect_err("garbage certificate");
        assert!(
            err.to_string().contains("tls.cert_file")
                && err
                    .to_string()
                    .contains(&pki.cert_path().display().to_string()),
            "names the key and the file: {err}"
        );
        let (_ws, presented, _) = connect_tls(&engine, &pki, "still-second");
        assert_eq!(presented, second.der, "the old certificate stays");
        publish(&engine, "news:reload", json!({"after": "failed reload"}));
        assert_eq!(
            read_json(&mut old)["push"]["data"]["after"],
            "failed reload"
        );
    }
);

/// Loads `tls` and returns the error's text.
fn load_error(tls: &TlsConfig) -> String {
    match TlsConfigs::from_config(tls) {
        Ok(_) => panic!("loaded {tls:?}"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn bad_files_are_refused_naming_the_key_and_the_file() {
    let pki = Pki::new();
    let leaf = pki.leaf();
    let tls = pki.tls_config();
    let cert = pki.cert_path().display().to_string();
    let key = pki.key_path().display().to_string();

    // Missing file.
    let text = load_error(&tls);
    assert!(
        text.starts_with(&format!("tls.cert_file {cert}: cannot read it")),
        "{text}"
    );

    // Not PEM at all: no certificate in it.
    std::fs::write(pki.cert_path(), "hello\n").unwrap();
    std::fs::write(pki.key_path(), &leaf.key_pem).unwrap();
    let text = load_error(&tls);
    assert!(
        text.starts_with(&format!("tls.cert_file {cert}: holds no PEM certificate")),
        "{text}"
    );

    // A PEM block cut short.
    let cut = &leaf.cert_pem[..leaf.cert_pem.len() / 2];
    std::fs::write(pki.cert_path(), cut).unwrap();
    let text = load_error(&tls);
    assert!(
        text.starts_with(&format!("tls.cert_file {cert}: is not valid PEM")),
        "{text}"
    );

    // The certificate where the key should be.
    std::fs::write(pki.cert_path(), &leaf.cert_pem).unwrap();
    std::fs::write(pki.key_path(), &leaf.cert_pem).unwrap();
    let text = load_error(&tls);
    assert!(
        text.starts_with(&format!("tls.key_file {key}: holds no PEM private key")),
        "{text}"
    );

    // Another certificate's key.
    std::fs::write(pki.key_path(), pki.leaf().key_pem).unwrap();
    let text = load_error(&tls);
    assert!(
        text.starts_with(&format!(
            "tls.key_file {key} does not match the certificate in tls.cert_file {cert}"
        )),
        "{text}"
    );

    // The engine refuses to start with the same message.
    let mut config = config(ringcast_engine::config::Driver::Epoll, 1);
    config.tls = tls.clone();
    let data_dir = tempfile::tempdir().unwrap();
    config.server.data_dir = data_dir.path().to_path_buf();
    match Engine::start(config) {
        Ok(engine) => {
            engine.shutdown();
            panic!("started with a mismatched key");
        }
        Err(err) => assert!(
            err.to_string()
                .contains(&format!("tls.key_file {key} does not match")),
            "{err}"
        ),
    }

    // And the matching pair loads.
    std::fs::write(pki.key_path(), &leaf.key_pem).unwrap();
    let loaded = TlsConfigs::from_config(&tls)
        .expect("valid pair")
        .expect("TLS is on");
    assert_eq!(loaded.generation(), 0);
    assert!(matches!(loaded.reload(), Ok(())));
    assert_eq!(loaded.generation(), 1);
    std::fs::remove_file(pki.key_path()).unwrap();
    assert!(matches!(loaded.reload(), Err(TlsError::Read { .. })));
    assert_eq!(loaded.generation(), 1, "a failed reload swaps nothing");
}

#[test]
fn cert_and_key_are_configured_together() {
    let base = "version = 1\n[api]\nkey = \"test-api-key-0123456789\"\n[auth]\njwt_secret = \"test-jwt-secret-0123456789abcdef0123456789\"\n";
    let path = Path::new("tls-test.toml");
    let only_cert = format!("{base}[tls]\ncert_file = \"/etc/cert.pem\"\n");
    let err = Config::from_toml_str(&only_cert, path).expect_err("key missing");
    assert_eq!(
        err.to_string(),
        "config error: tls.key_file must be set when tls.cert_file is: the certificate needs \
         its private key in tls-test.toml"
    );
    let only_key = format!("{base}[tls]\nkey_file = \"/etc/key.pem\"\n");
    let err = Config::from_toml_str(&only_key, path).expect_err("cert missing");
    assert!(
        err.to_string()
            .starts_with("config error: tls.cert_file must be set"),
        "{err}"
    );
    let neither_listener = format!(
        "{base}[tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\nwebsocket = false\napi = false\n"
    );
    let err = Config::from_toml_str(&neither_listener, path).expect_err("serves nothing");
    assert!(
        err.to_string()
            .contains("tls.websocket and tls.api are both false"),
        "{err}"
    );
    let both = format!("{base}[tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n");
    let config = Config::from_toml_str(&both, path).expect("both set");
    assert_eq!(config.tls.cert_file.as_deref(), Some(Path::new("/c.pem")));
    assert!(
        config.tls.websocket && config.tls.api,
        "both listeners by default"
    );
    let config = Config::from_toml_str(base, path).expect("no TLS");
    assert!(config.tls.cert_file.is_none() && config.tls.key_file.is_none());
}

e2e!(
    silent_tls_client_is_dropped_at_the_handshake_deadline,
    |driver| {
        let pki = Pki::new();
        pki.install(&pki.leaf());
        let mut config = config(driver, 1);
        config.tls = pki.tls_config();
        config.websocket.handshake_timeout = Duration::from_millis(300);
        let engine = start(config);
        // One client sends nothing; another stops inside its ClientHello. The
        // TLS handshake runs under the upgrade's deadline, so both are closed.
        let silent = TcpStream::connect(engine.ws_addr).unwrap();
        let mut partial = TcpStream::connect(engine.ws_addr).unwrap();
        // A TLS record header announcing a 512-byte handshake message.
        std::io::Write::write_all(&mut partial, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
        for mut stream in [silent, partial] {
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut got = Vec::new();
            match std::io::Read::read_to_end(&mut stream, &mut got) {
                Ok(_) => {}
                Err(err) => assert_eq!(
                    err.kind(),
                    std::io::ErrorKind::ConnectionReset,
                    "closed, not timed out on our side"
                ),
            }
            assert!(!got.starts_with(b"HTTP/1.1 101"));
        }
        assert!(wait_until(Duration::from_secs(5), || {
            shard_stat_sum(&engine, "handshakes_failed_total") >= 2
        }));
        let (_ws, _, _) = connect_tls(&engine, &pki, "after");
    }
);

/// The certificate the API listener presents to a fresh TLS handshake.
fn api_certificate(engine: &Engine, pki: &Pki) -> CertificateDer<'static> {
    let mut tcp = TcpStream::connect(engine.api_addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let server_name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(pki.client_config(), server_name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .expect("TLS handshake with the API");
    }
    conn.peer_certificates().expect("API certificate")[0].clone()
}

/// An HTTPS client (ureq, rustls) that trusts only `pki`'s CA.
fn https_agent(pki: &Pki) -> ureq::Agent {
    let ca = ureq::tls::Certificate::from_der(pki.ca.der()).to_owned();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

e2e!(https_api_publishes_and_reloads_its_certificate, |driver| {
    let pki = Pki::new();
    let first = pki.leaf();
    pki.install(&first);
    let mut config = config(driver, 2);
    config.tls = TlsConfig {
        api: true,
        ..pki.tls_config()
    };
    let engine = start(config);
    let (mut ws, _, _) = connect_tls(&engine, &pki, "carol");
    subscribe(&mut ws, 1, "news:https");

    let agent = https_agent(&pki);
    let url = format!("https://localhost:{}/api/publish", engine.api_addr.port());
    let mut response = agent
        .post(&url)
        .header("Authorization", format!("apikey {API_KEY}"))
        .header("Content-Type", "application/json")
        .send(json!({"channel": "news:https", "data": {"over": "https"}}).to_string())
        .expect("publish over https");
    assert_eq!(response.status(), 200);
    let answer: Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).expect("JSON answer");
    assert!(answer["id"].is_string(), "the publication's id: {answer}");
    assert_eq!(read_json(&mut ws)["push"]["data"]["over"], "https");

    // Errors keep their JSON bodies through TLS.
    let mut refused = agent
        .post(&url)
        .header("Authorization", "apikey wrong")
        .header("Content-Type", "application/json")
        .send("{}")
        .expect("an answer");
    assert_eq!(refused.status(), 401);
    let body: Value = serde_json::from_str(&refused.body_mut().read_to_string().unwrap())
        .expect("JSON error body");
    assert!(body["error"]["code"].is_string(), "JSON error body: {body}");

    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let plain = http_agent()
        .get(format!("http://{}/api/stats", engine.api_addr))
        .call();
    assert!(
        plain.is_err(),
        "plain HTTP answered on the https port: {plain:?}"
    );

    // SIGHUP's reload: the next handshake presents the new certificate.
    assert_eq!(api_certificate(&engine, &pki), first.der);
    let second = pki.leaf();
    pki.install(&second);
    assert!(engine.reload_tls().expect("reload"));
    assert_eq!(api_certificate(&engine, &pki), second.der);
    let mut stats = agent
        .get(format!(
            "https://localhost:{}/api/stats",
            engine.api_addr.port()
        ))
        .header("Authorization", format!("apikey {API_KEY}"))
        .call()
        .expect("stats over https after the reload");
    assert_eq!(stats.status(), 200);
    let _ = stats.body_mut().read_to_string();
});
