//! Fan-out throughput and publish-to-deliver latency against a running
//! engine: N subscribers on one channel, a publisher posting to the HTTP API
//! as fast as the engine answers, for a fixed time.
//!
//! `fanout --ws=127.0.0.1:8080 --api=127.0.0.1:8081 --api-key=<key> --secret=<jwt secret>
//!         --subscribers=10000 --seconds=10 [--engine-pid=<pid>] [--payload-bytes=64] [--rate=<pub/s>]
//!         [--chat=true] [--deflate=true]`
//!
//! `--chat=true` makes each publication a chat message of about
//! `payload-bytes` (user, room, text of varied words) instead of padding,
//! which compresses unrealistically well. `--deflate=true` makes every
//! subscriber offer permessage-deflate (the engine needs
//! `websocket.compression = true`); every compressed push is counted and
//! one in 16 inflated for its latency (a browser inflates every one; this
//! client must not become the bottleneck). Bytes received by the subscribers (frame headers
//! included) are counted either way, so the two runs compare bytes on the
//! wire and engine CPU per delivery.
//!
//! Each publication carries its send time; every received frame's latency
//! goes into an HdrHistogram. Reported: deliveries per second, publications
//! per second, lost deliveries (expected minus received after a drain), the
//! latency percentiles, and the CPU seconds used by the engine and by this
//! client, so a saturated client is visible.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use ringcast_benches::chat::chat_message;
use ringcast_benches::client::{
    api_agent, api_post, connect_offering, cpu_seconds, frame_extent, subscribe, token, Args,
};
use ringcast_protocol::deflate::{Inflater, RSV1};

/// Publications in flight in closed-loop mode.
const WINDOW: u64 = 8;
/// One compressed push in this many is inflated to record its latency.
const INFLATE_SAMPLE_EVERY: u64 = 16;

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Per-connection read state: bytes of an incomplete frame carried over.
struct Reader {
    stream: mio::net::TcpStream,
    pending: Vec<u8>,
}

/// Counts complete frames in `buf` and records the latency of each push
/// (the `"t":<us>` field the publisher embeds), inflating compressed ones.
/// Returns bytes consumed.
fn scan(
    buf: &[u8],
    hist: &mut Histogram<u64>,
    frames: &mut u64,
    inflater: &mut Inflater,
    compressed_seen: &mut u64,
) -> anyhow::Result<usize> {
    let mut pos = 0;
    loop {
        let rest = &buf[pos..];
        let Some((header, len)) = frame_extent(rest) else {
            return Ok(pos);
        };
        if rest.len() < header + len {
            return Ok(pos);
        }
        let payload = &rest[header..header + len];
        if rest[0] & RSV1 != 0 {
            // Inflating every push would make the client, not the engine,
            // the bottleneck: count them all, inflate a sample for latency.
            *frames += 1;
            *compressed_seen += 1;
            if compressed_seen.is_multiple_of(INFLATE_SAMPLE_EVERY) {
                let text = inflater.inflate(payload, true, 1 << 24)?;
                record_latency(text, hist);
            }
            pos += header + len;
            continue;
        }
        if rest[0] & 0x0f == 1 && record_latency(payload, hist) {
            *frames += 1;
        }
        pos += header + len;
    }
}

/// Records the latency of a push from its `"t":<us>` field; false when
/// the text has none (not a push).
fn record_latency(text: &[u8], hist: &mut Histogram<u64>) -> bool {
    let Some(at) = text.windows(4).position(|w| w == b"\"t\":") else {
        return false;
    };
    let digits: u64 = text[at + 4..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0, |n, b| n * 10 + u64::from(b - b'0'));
    let _ = hist.record(now_us().saturating_sub(digits).max(1));
    true
}

fn reader_thread(
    streams: Vec<TcpStream>,
    stop_at: Instant,
    received_total: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> anyhow::Result<(u64, u64, Histogram<u64>)> {
    let mut poll = Poll::new()?;
    let mut readers: Vec<Reader> = Vec::with_capacity(streams.len());
    for (i, stream) in streams.into_iter().enumerate() {
        stream.set_nonblocking(true)?;
        let mut stream = mio::net::TcpStream::from_std(stream);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)?;
        readers.push(Reader {
            stream,
            pending: Vec::new(),
        });
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut frames = 0u64;
    let mut bytes = 0u64;
    let mut inflater = Inflater::new();
    let mut compressed_seen = 0u64;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    while Instant::now() < stop_at {
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for event in events.iter() {
            let reader = &mut readers[event.token().0];
            loop {
                let carried = reader.pending.len();
                buf[..carried].copy_from_slice(&reader.pending);
                match reader.stream.read(&mut buf[carried..]) {
                    Ok(0) => break,
                    Ok(n) => {
                        bytes += n as u64;
                        let filled = carried + n;
                        let before = frames;
                        let used = scan(
                            &buf[..filled],
                            &mut hist,
                            &mut frames,
                            &mut inflater,
                            &mut compressed_seen,
                        )?;
                        received_total
                            .fetch_add(frames - before, std::sync::atomic::Ordering::Relaxed);
                        reader.pending.clear();
                        reader.pending.extend_from_slice(&buf[used..filled]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok((frames, bytes, hist))
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
    let n: usize = args.get("subscribers", 10_000)?;
    let seconds: u64 = args.get("seconds", 10)?;
    let threads: usize = args.get("threads", 1)?;
    let payload_bytes: usize = args.get("payload-bytes", 64)?;
    let engine_pid: u32 = args.get("engine-pid", 0)?;
    // 0 = as fast as the API answers (throughput); otherwise a fixed
    // schedule, with each message stamped with its intended send time so a
    // stall shows up as latency instead of hiding as a slower rate.
    let rate: u64 = args.get("rate", 0)?;
    let chat: bool = args.get("chat", false)?;
    let deflate: bool = args.get("deflate", false)?;
    let channel = "news:fanout";

    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let mut stream = connect_offering(ws, &token(&secret, &format!("fan-{i}"))?, deflate)?;
        subscribe(&mut stream, channel)?;
        streams.push(stream);
    }
    eprintln!("{n} subscribers ready");

    let publish_for = Duration::from_secs(seconds);
    let drain = Duration::from_secs(3);
    let stop_at = Instant::now() + publish_for + drain;
    let per_thread = n.div_ceil(threads.max(1));
    let received_total = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut handles = Vec::new();
    while !streams.is_empty() {
        let chunk: Vec<TcpStream> = streams.drain(..per_thread.min(streams.len())).collect();
        let received_total = received_total.clone();
        handles.push(std::thread::spawn(move || {
            reader_thread(chunk, stop_at, received_total)
        }));
    }

    let engine_cpu_start = if engine_pid != 0 {
        cpu_seconds(engine_pid)?
    } else {
        0.0
    };
    let client_cpu_start = cpu_seconds(std::process::id())?;
    let agent = api_agent();
    let padding = "p".repeat(payload_bytes.saturating_sub(24));
    let started = Instant::now();
    let mut published = 0u64;
    let started_us = now_us();
    while started.elapsed() < publish_for {
        // `rate` 0 (no division possible) means closed loop.
        let stamp_us = if let Some(intended_us) = (published * 1_000_000).checked_div(rate) {
            let intended = Duration::from_micros(intended_us);
            if let Some(wait) = intended.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
            started_us + intended_us
        } else {
            // Closed loop: stay at most WINDOW publications ahead of what the
            // subscribers have received, so throughput is measured without
            // building unbounded queues in the engine.
            while published >= WINDOW
                && received_total.load(std::sync::atomic::Ordering::Relaxed)
                    < (published - WINDOW) * n as u64
            {
                if started.elapsed() >= publish_for {
                    break;
                }
                std::thread::yield_now();
            }
            now_us()
        };
        let data = if chat {
            chat_message(published, payload_bytes)
        } else {
            format!(r#""p":"{padding}""#)
        };
        let body = format!(r#"{{"channel":"{channel}","data":{{"t":{stamp_us},{data}}}}}"#);
        let (status, answer) = api_post(&agent, api, &api_key, "/api/publish", &body)?;
        anyhow::ensure!(status == 200, "publish failed: {status} {answer}");
        published += 1;
    }
    let publish_elapsed = started.elapsed().as_secs_f64();

    let mut received = 0u64;
    let mut bytes_received = 0u64;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for h in handles {
        let (frames, bytes, h_hist) =
            h.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
        received += frames;
        bytes_received += bytes;
        hist.add(h_hist)?;
    }
    let engine_cpu = if engine_pid != 0 {
        cpu_seconds(engine_pid)? - engine_cpu_start
    } else {
        f64::NAN
    };
    let client_cpu = cpu_seconds(std::process::id())? - client_cpu_start;
    let expected = published * n as u64;
    let per_delivery = |total: f64| total / received.max(1) as f64;
    println!("subscribers,publications,publications_per_s,deliveries,deliveries_per_s,lost,p50_us,p99_us,p999_us,max_us,engine_cpu_s,client_cpu_s,seconds,bytes_received,bytes_per_delivery,engine_cpu_ns_per_delivery");
    println!(
        "{n},{published},{:.0},{received},{:.0},{},{},{},{},{},{:.2},{:.2},{:.2},{bytes_received},{:.1},{:.0}",
        published as f64 / publish_elapsed,
        received as f64 / publish_elapsed,
        expected.saturating_sub(received),
        hist.value_at_quantile(0.50),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max(),
        engine_cpu,
        client_cpu,
        publish_elapsed,
        per_delivery(bytes_received as f64),
        per_delivery(engine_cpu * 1e9),
    );
    Ok(())
}
