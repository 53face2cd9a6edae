//! Durable-stream figures against a running engine:
//! - publish-to-ack latency in `sync` mode: C concurrent API clients (one
//!   keep-alive connection each) send to user inboxes (always `sync`) for a
//!   fixed time; each request's latency goes into an HdrHistogram;
//! - replay throughput: a user with N missed messages reconnects with
//!   `?since=0` and the time from upgrade to the recovery summary is taken.
//!
//! `durable --ws=127.0.0.1:18080 --api=127.0.0.1:18081 --seconds=5 --clients=16 --missed=10000`

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringcast_benches::client::{api_agent, api_post, read_frame, token, Args};

/// One POST to the API on `agent`'s keep-alive connection; its status.
fn post(agent: &ureq::Agent, api: SocketAddr, api_key: &str, body: &str) -> anyhow::Result<u16> {
    Ok(api_post(agent, api, api_key, "/api/send", body)?.0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let ws: SocketAddr = args.get("ws", "127.0.0.1:8080".parse()?)?;
    let api: SocketAddr = args.get("api", "127.0.0.1:8081".parse()?)?;
    let api_key: String = args.get("api-key", "dev-only-api-key-change-me".to_string())?;
    let secret: String = args.get(
        "secret",
        "dev-only-jwt-secret-change-me-0123456789".to_string(),
    )?;
    let seconds: u64 = args.get("seconds", 5)?;
    let clients: usize = args.get("clients", 16)?;
    let missed: u64 = args.get("missed", 10_000)?;

    // 1. Publish-to-ack latency, sync durability.
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let api_key = api_key.clone();
            std::thread::spawn(move || -> anyhow::Result<Histogram<u64>> {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                let agent = api_agent();
                let body = format!(
                    r#"{{"user":"lat-{c}","data":{{"p":"0123456789abcdef0123456789abcdef"}}}}"#
                );
                while Instant::now() < stop_at {
                    let started = Instant::now();
                    let status = post(&agent, api, &api_key, &body)?;
                    anyhow::ensure!(status == 200, "send failed with {status}");
                    hist.record(started.elapsed().as_micros().max(1) as u64)?;
                }
                Ok(hist)
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for h in handles {
        hist.add(h.join().map_err(|_| anyhow::anyhow!("client panicked"))??)?;
    }
    println!("measure,clients,acked,acked_per_s,p50_us,p99_us,p999_us,max_us");
    println!(
        "sync_publish_to_ack,{clients},{},{:.0},{},{},{},{}",
        hist.len(),
        hist.len() as f64 / seconds as f64,
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max()
    );

    // 2. Replay of `missed` messages to a reconnecting user.
    let agent = api_agent();
    for n in 0..missed {
        let body = format!(r#"{{"user":"replay","data":{{"n":{n}}}}}"#);
        anyhow::ensure!(post(&agent, api, &api_key, &body)? == 200, "send failed");
        if n % 200 == 0 {
            eprintln!("sent {n}");
        }
    }
    eprintln!("all sent");
    let token = token(&secret, "replay")?;
    let started = Instant::now();
    let mut stream = TcpStream::connect(ws)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET /connection/websocket?token={token}&since=0 HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    let mut pushes = 0u64;
    loop {
        let (_, payload) = read_frame(&mut stream)?;
        if payload.starts_with(b"{\"push\"") {
            pushes += 1;
        } else if payload.starts_with(b"{\"id\":0") {
            break;
        }
    }
    let elapsed = started.elapsed();
    println!("measure,messages,seconds,messages_per_s");
    println!(
        "replay_on_reconnect,{pushes},{:.3},{:.0}",
        elapsed.as_secs_f64(),
        pushes as f64 / elapsed.as_secs_f64()
    );
    anyhow::ensure!(pushes == missed, "replayed {pushes} of {missed}");
    Ok(())
}
