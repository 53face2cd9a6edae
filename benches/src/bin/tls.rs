//! What TLS costs the engine: the same three measurements against a plain
//! and a TLS engine, one after the other in one run, so the ratios compare
//! like with like.
//!
//! `tls --engine=target/release/ringcast [--shards=2] [--idle=10000]
//!      [--handshake-threads=2] [--handshake-seconds=5] [--subscribers=500]
//!      [--publications=2000] [--payload-bytes=64]`
//!
//! For each mode it starts the engine binary with a fresh config (for TLS, a
//! certificate from a CA generated for the run, ECDSA P-256), then:
//!
//! 1. **Idle memory**: `--idle` connections upgrade, read their `connect`
//!    message and stay idle; the engine's RSS growth per connection.
//! 2. **Handshakes**: `--handshake-threads` blocking clients open new
//!    connections for `--handshake-seconds`, each from TCP connect through
//!    the TLS handshake (full handshakes: client resumption off) to the 101
//!    and the `connect` message, then drop it (RST, so no TIME_WAIT piles
//!    up). Connections per second and engine CPU per connection.
//! 3. **Fan-out**: `--subscribers` on one channel, one mio reader thread
//!    (rustls client side for TLS), `--publications` posted to the plain
//!    HTTP API with at most 8 in flight; deliveries per second and engine
//!    CPU per delivery.
//!
//! Engine CPU (user + system of its process, from /proc) is the fairer
//! figure on a small host: the client's own TLS work shares the cores.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mio::{Events, Interest, Poll, Token};
use ringcast_benches::client::{
    api_agent, cpu_seconds, frame_extent, publish_on, rss_bytes, subscribe, token, upgrade, Args,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

const SECRET: &str = "tls-bench-jwt-secret-0123456789abcdef0123";
const API_KEY: &str = "tls-bench-api-key-0123";
const CHANNEL: &str = "news:tls-bench";
/// Publications in flight (closed loop), as in the `fanout` tool.
const WINDOW: u64 = 8;

struct Settings {
    engine: PathBuf,
    shards: u16,
    idle: usize,
    handshake_threads: usize,
    handshake_seconds: u64,
    subscribers: usize,
    publications: u64,
    payload_bytes: usize,
    dir: PathBuf,
}

#[derive(Debug)]
struct Row {
    mode: &'static str,
    idle_bytes_per_conn: f64,
    handshakes_per_s: f64,
    engine_cpu_us_per_handshake: f64,
    deliveries_per_s: f64,
    engine_cpu_us_per_delivery: f64,
    lost: u64,
}

/// A blocking client connection, plain or TLS.
enum Client {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Client {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Client::Plain(stream) => stream.read(buf),
            Client::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for Client {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Client::Plain(stream) => stream.write(buf),
            Client::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Client::Plain(stream) => stream.flush(),
            Client::Tls(stream) => stream.flush(),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let dir = std::env::temp_dir().join(format!("ringcast-tls-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let settings = Settings {
        engine: args.get("engine", PathBuf::from("target/release/ringcast"))?,
        shards: args.get("shards", 2)?,
        idle: args.get("idle", 10_000)?,
        handshake_threads: args.get("handshake-threads", 2)?,
        handshake_seconds: args.get("handshake-seconds", 5)?,
        subscribers: args.get("subscribers", 500)?,
        publications: args.get("publications", 2000)?,
        payload_bytes: args.get("payload-bytes", 64)?,
        dir: dir.clone(),
    };
    let client_config = write_certificates(&dir)?;
    let result = (|| -> anyhow::Result<Vec<Row>> {
        Ok(vec![
            run_mode(&settings, None)?,
            run_mode(&settings, Some(client_config.clone()))?,
        ])
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let rows = result?;
    println!("mode,idle_bytes_per_conn,handshakes_per_s,engine_cpu_us_per_handshake,deliveries_per_s,engine_cpu_us_per_delivery,lost");
    for row in &rows {
        println!(
            "{},{:.0},{:.0},{:.1},{:.0},{:.3},{}",
            row.mode,
            row.idle_bytes_per_conn,
            row.handshakes_per_s,
            row.engine_cpu_us_per_handshake,
            row.deliveries_per_s,
            row.engine_cpu_us_per_delivery,
            row.lost
        );
    }
    if let [plain, tls] = &rows[..] {
        println!(
            "tls/plain: handshakes/s {:.2}x, engine CPU per handshake {:.2}x, deliveries/s {:.2}x, \
             engine CPU per delivery {:.2}x, idle bytes per connection +{:.0}",
            tls.handshakes_per_s / plain.handshakes_per_s,
            tls.engine_cpu_us_per_handshake / plain.engine_cpu_us_per_handshake,
            tls.deliveries_per_s / plain.deliveries_per_s,
            tls.engine_cpu_us_per_delivery / plain.engine_cpu_us_per_delivery,
            tls.idle_bytes_per_conn - plain.idle_bytes_per_conn
        );
    }
    Ok(())
}

/// A CA and a `localhost` certificate in `dir`; the client trusts the CA.
fn write_certificates(dir: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    let leaf_key = rcgen::KeyPair::generate()?;
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?
        .signed_by(&leaf_key, &ca, &ca_key)?;
    std::fs::write(dir.join("cert.pem"), leaf.pem())?;
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone())?;
    let mut config = client_builder()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every handshake a full one: the cost a fleet of new clients brings.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The engine's provider (X25519 first, as browsers order it).
fn client_builder() -> anyhow::Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>> {
    Ok(
        ClientConfig::builder_with_provider(Arc::new(ringcast_engine::tls::crypto_provider()))
            .with_safe_default_protocol_versions()?,
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn run_mode(settings: &Settings, tls: Option<Arc<ClientConfig>>) -> anyhow::Result<Row> {
    let mode = if tls.is_some() { "tls" } else { "plain" };
    let ws_port = free_port()?;
    let api_port = free_port()?;
    let mut engine = start_engine(settings, mode, ws_port, api_port, tls.is_some())?;
    let result = measure(settings, mode, &engine, ws_port, api_port, tls);
    let _ = Command::new("kill").arg(engine.id().to_string()).status();
    let _ = engine.wait();
    result
}

fn start_engine(
    settings: &Settings,
    mode: &str,
    ws_port: u16,
    api_port: u16,
    tls: bool,
) -> anyhow::Result<Child> {
    let dir = &settings.dir;
    let tls_table = if tls {
        format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\napi = false\n",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        )
    } else {
        String::new()
    };
    let config = format!(
        "version = 1\n[server]\nshards = {}\npin_cores = false\ndata_dir = \"{}\"\n\
         [websocket]\nlisten = \"127.0.0.1:{ws_port}\"\nhandshakes_per_source_max = 1000000\n\
         outbound_queue_bytes_max = 8388608\nping_interval_ms = 600000\npong_timeout_ms = 600000\n\
         [api]\nlisten = \"127.0.0.1:{api_port}\"\nkey = \"{API_KEY}\"\n\
         [auth]\njwt_secret = \"{SECRET}\"\n{tls_table}[[namespace]]\nname = \"news\"\n",
        settings.shards,
        dir.join(format!("data-{mode}")).display()
    );
    let config_path = dir.join(format!("{mode}.toml"));
    std::fs::write(&config_path, config)?;
    let child = Command::new(&settings.engine)
        .arg(format!("--config={}", config_path.display()))
        .env("RINGCAST_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", settings.engine.display()))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", api_port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the engine did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child)
}

fn open(ws: SocketAddr, tls: Option<&Arc<ClientConfig>>) -> anyhow::Result<Client> {
    let tcp = TcpStream::connect(ws)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    // Closed with a reset: thousands of client-side TIME_WAITs would run
    // the loopback out of ports.
    socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO))?;
    Ok(match tls {
        None => Client::Plain(tcp),
        Some(config) => {
            let name = ServerName::try_from("localhost")?;
            let conn = ClientConnection::new(config.clone(), name)?;
            Client::Tls(Box::new(StreamOwned::new(conn, tcp)))
        }
    })
}

fn measure(
    settings: &Settings,
    mode: &'static str,
    engine: &Child,
    ws_port: u16,
    api_port: u16,
    tls: Option<Arc<ClientConfig>>,
) -> anyhow::Result<Row> {
    let pid = engine.id();
    let ws: SocketAddr = ([127, 0, 0, 1], ws_port).into();
    let api: SocketAddr = ([127, 0, 0, 1], api_port).into();
    let bearer = token(SECRET, "idle")?;

    // 1. Idle memory.
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = rss_bytes(pid)?;
    let mut idle = Vec::with_capacity(settings.idle);
    for _ in 0..settings.idle {
        let mut client = open(ws, tls.as_ref())?;
        upgrade(&mut client, &bearer)?;
        idle.push(client);
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = rss_bytes(pid)?;
    let idle_bytes_per_conn =
        (rss_after.saturating_sub(rss_before)) as f64 / settings.idle.max(1) as f64;
    drop(idle);
    std::thread::sleep(Duration::from_millis(500));
    eprintln!("{mode}: idle memory measured");

    // 2. Handshakes.
    let cpu_before = cpu_seconds(pid)?;
    let stop_at = Instant::now() + Duration::from_secs(settings.handshake_seconds);
    let started = Instant::now();
    let handles: Vec<_> = (0..settings.handshake_threads)
        .map(|_| {
            let tls = tls.clone();
            let bearer = bearer.clone();
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut done = 0;
                while Instant::now() < stop_at {
                    let mut client = open(ws, tls.as_ref())?;
                    upgrade(&mut client, &bearer)?;
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    let mut handshakes = 0;
    for handle in handles {
        handshakes += handle
            .join()
            .map_err(|_| anyhow::anyhow!("handshake thread panicked"))??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let handshake_cpu = cpu_seconds(pid)? - cpu_before;
    eprintln!("{mode}: {handshakes} handshakes");
    std::thread::sleep(Duration::from_millis(500));

    // 3. Fan-out.
    let (deliveries, fanout_s, fanout_cpu, lost) = fan_out(settings, pid, ws, api, tls.as_ref())?;
    eprintln!("{mode}: {deliveries} deliveries");
    Ok(Row {
        mode,
        idle_bytes_per_conn,
        handshakes_per_s: handshakes as f64 / elapsed,
        engine_cpu_us_per_handshake: handshake_cpu * 1e6 / handshakes.max(1) as f64,
        deliveries_per_s: deliveries as f64 / fanout_s,
        engine_cpu_us_per_delivery: fanout_cpu * 1e6 / deliveries.max(1) as f64,
        lost,
    })
}

/// A subscriber on the reader thread: its socket and, for TLS, its rustls
/// client state; `pending` holds an incomplete frame.
struct Subscriber {
    sock: mio::net::TcpStream,
    tls: Option<ClientConnection>,
    pending: Vec<u8>,
}

/// Returns (deliveries, seconds, engine CPU seconds, lost).
fn fan_out(
    settings: &Settings,
    pid: u32,
    ws: SocketAddr,
    api: SocketAddr,
    tls: Option<&Arc<ClientConfig>>,
) -> anyhow::Result<(u64, f64, f64, u64)> {
    let mut subscribers = Vec::with_capacity(settings.subscribers);
    for i in 0..settings.subscribers {
        let mut client = open(ws, tls)?;
        upgrade(&mut client, &token(SECRET, &format!("fan-{i}"))?)?;
        subscribe(&mut client, CHANNEL)?;
        let (tcp, conn) = match client {
            Client::Plain(tcp) => (tcp, None),
            Client::Tls(stream) => {
                let StreamOwned { conn, sock } = *stream;
                (sock, Some(conn))
            }
        };
        tcp.set_nonblocking(true)?;
        subscribers.push(Subscriber {
            sock: mio::net::TcpStream::from_std(tcp),
            tls: conn,
            pending: Vec::new(),
        });
    }
    let expected = settings.publications * settings.subscribers as u64;
    let received = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(120);
    let reader = {
        let received = received.clone();
        std::thread::spawn(move || read_all(subscribers, &received, expected, deadline))
    };
    let cpu_before = cpu_seconds(pid)?;
    let started = Instant::now();
    let agent = api_agent();
    let data = format!(
        r#"{{"p":"{}"}}"#,
        "p".repeat(settings.payload_bytes.saturating_sub(8))
    );
    let n = settings.subscribers as u64;
    for published in 0..settings.publications {
        while published >= WINDOW
            && received.load(Ordering::Relaxed) < (published - WINDOW) * n
            && Instant::now() < deadline
        {
            std::thread::yield_now();
        }
        publish_on(&agent, api, API_KEY, CHANNEL, &data)?;
    }
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu_before;
    let got = received.load(Ordering::Relaxed);
    Ok((got, seconds, cpu, expected.saturating_sub(got)))
}

fn read_all(
    mut subscribers: Vec<Subscriber>,
    received: &AtomicU64,
    expected: u64,
    deadline: Instant,
) -> anyhow::Result<()> {
    let mut poll = Poll::new()?;
    for (i, subscriber) in subscribers.iter_mut().enumerate() {
        poll.registry()
            .register(&mut subscriber.sock, Token(i), Interest::READABLE)?;
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for event in events.iter() {
            let subscriber = &mut subscribers[event.token().0];
            let frames = drain(subscriber, &mut buf)?;
            received.fetch_add(frames, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Reads what the socket has (through rustls for TLS) and counts the
/// complete frames.
fn drain(subscriber: &mut Subscriber, buf: &mut [u8]) -> anyhow::Result<u64> {
    let mut frames = 0;
    loop {
        let carried = subscriber.pending.len();
        buf[..carried].copy_from_slice(&subscriber.pending);
        let n = match &mut subscriber.tls {
            None => match subscriber.sock.read(&mut buf[carried..]) {
                Ok(0) => return Ok(frames),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(frames),
                Err(e) => return Err(e.into()),
            },
            Some(conn) => match conn.reader().read(&mut buf[carried..]) {
                Ok(0) => return Ok(frames),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    match conn.read_tls(&mut subscriber.sock) {
                        Ok(0) => return Ok(frames),
                        Ok(_) => {
                            conn.process_new_packets()?;
                            continue;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(frames),
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            },
        };
        let filled = carried + n;
        let mut pos = 0;
        while let Some((header, len)) = frame_extent(&buf[pos..filled]) {
            if filled - pos < header + len {
                break;
            }
            frames += 1;
            pos += header + len;
        }
        subscriber.pending.clear();
        subscriber.pending.extend_from_slice(&buf[pos..filled]);
    }
}
