//! Not a test: what a 10 s backend stall does to an engine under load.
//!
//! Four clients publish through the publish proxy (`room:1`) and four
//! without it (`free:1`), each 100 times a second at fixed times, pipelined
//! (replies are matched by id, so a stalled reply never delays the next
//! send). One subscriber reads each channel. The backend answers at once,
//! then for 10 s holds every call for 10 s (past the 1 s proxy timeout),
//! then answers at once again. Printed per phase: the proxied and the
//! unproxied replies (counts by outcome, p50/p99 from the intended send
//! time), the unproxied subscriber's delivery latency, and how long after
//! the stall the first proxied publish succeeded:
//! `cargo test --release -p ringcast-engine --test it proxy_backend_stall -- --ignored --nocapture`

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringcast_engine::config::Driver;
use serde_json::{json, Value};

use crate::proxy::{proxied_config, publish_cmd, Backend};
use crate::util::*;

static STALLED: AtomicBool = AtomicBool::new(false);

const PUBLISHERS_PER_SIDE: usize = 4;
const RATE_PER_CLIENT: u64 = 100;
const PROXY_TIMEOUT_MS: u64 = 1000;
const BEFORE: Duration = Duration::from_secs(5);
const STALL: Duration = Duration::from_secs(10);
const AFTER: Duration = Duration::from_secs(7);

/// One reply: when it was meant to be sent (since the run's start), how
/// long after that it came, and its error code (0 = success).
#[derive(Clone, Copy)]
struct Sample {
    intended: Duration,
    latency: Duration,
    code: u64,
}

fn phase_of(at: Duration) -> usize {
    if at < BEFORE {
        0
    } else if at < BEFORE + STALL {
        1
    } else {
        2
    }
}

fn pct(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p) as usize]
}

/// Publishes to `channel` at fixed times until `end`, pipelined; returns
/// every reply.
fn publisher(
    engine: &ringcast_engine::Engine,
    user: &str,
    channel: &'static str,
    start: Instant,
    end: Duration,
) -> std::thread::JoinHandle<Vec<Sample>> {
    let mut reader = Raw::connect(engine, user);
    reader.read_frame().expect("connect message");
    let mut writer = Raw {
        stream: reader.stream.try_clone().unwrap(),
        buf: Vec::new(),
    };
    let sent: Arc<Mutex<HashMap<u64, Duration>>> = Arc::default();
    let sent_w = sent.clone();
    let total = end.as_millis() as u64 * RATE_PER_CLIENT / 1000;
    std::thread::spawn(move || {
        let interval = Duration::from_micros(1_000_000 / RATE_PER_CLIENT);
        for id in 1..=total {
            let intended = interval * id as u32;
            if let Some(wait) = intended.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            sent_w.lock().unwrap().insert(id, intended);
            let command = publish_cmd(id, channel, json!({"t": intended.as_micros() as u64}));
            writer.send_frame(0x81, command.to_string().as_bytes(), true);
        }
    });
    std::thread::spawn(move || {
        reader
            .stream
            .set_read_timeout(Some(end + Duration::from_secs(5)))
            .unwrap();
        let mut samples = Vec::with_capacity(total as usize);
        while samples.len() < total as usize {
            let Some((_, payload)) = reader.read_frame() else {
                break;
            };
            let reply: Value = serde_json::from_slice(&payload).unwrap();
            let Some(id) = reply["id"].as_u64() else {
                continue;
            };
            let latency_end = start.elapsed();
            let intended = sent.lock().unwrap()[&id];
            samples.push(Sample {
                intended,
                latency: latency_end.saturating_sub(intended),
                code: reply["error"]["code"].as_u64().unwrap_or(0),
            });
        }
        samples
    })
}

#[test]
#[ignore = "a measurement, not a check; run by hand"]
fn proxy_backend_stall_under_load() {
    let backend = Backend::start(|_| {
        if STALLED.load(Ordering::SeqCst) {
            (STALL, json!({"result": {}}))
        } else {
            (Duration::ZERO, json!({"result": {}}))
        }
    });
    let engine = start(proxied_config(
        Driver::IoUring,
        2,
        &backend.url,
        PROXY_TIMEOUT_MS,
        64,
    ));
    let (mut watcher, _) = connect(&engine, "watcher");
    subscribe(&mut watcher, 1, "free:1");
    watcher
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let end = BEFORE + STALL + AFTER;
    let start = Instant::now();
    let watching = std::thread::spawn(move || {
        let mut deliveries: [Vec<Duration>; 3] = Default::default();
        while start.elapsed() < end + Duration::from_secs(1) {
            let Ok(tungstenite::Message::Text(text)) = watcher.read() else {
                continue;
            };
            let push: Value = serde_json::from_str(&text).unwrap();
            let Some(t) = push["push"]["data"]["t"].as_u64() else {
                continue;
            };
            let intended = Duration::from_micros(t);
            deliveries[phase_of(intended)].push(start.elapsed().saturating_sub(intended));
        }
        deliveries
    });
    let mut handles = Vec::new();
    for i in 0..PUBLISHERS_PER_SIDE {
        handles.push((
            "proxied",
            publisher(&engine, &format!("p{i}"), "room:1", start, end),
        ));
        handles.push((
            "direct",
            publisher(&engine, &format!("d{i}"), "free:1", start, end),
        ));
    }
    std::thread::sleep(BEFORE.saturating_sub(start.elapsed()));
    STALLED.store(true, Ordering::SeqCst);
    std::thread::sleep((BEFORE + STALL).saturating_sub(start.elapsed()));
    STALLED.store(false, Ordering::SeqCst);

    let mut deliveries = watching.join().unwrap();
    let mut by_side: HashMap<&str, Vec<Sample>> = HashMap::new();
    for (side, handle) in handles {
        by_side
            .entry(side)
            .or_default()
            .extend(handle.join().unwrap());
    }
    let names = ["before", "stall", "after"];
    for side in ["proxied", "direct"] {
        let samples = &by_side[side];
        for (phase, name) in names.iter().enumerate() {
            let in_phase: Vec<_> = samples
                .iter()
                .filter(|s| phase_of(s.intended) == phase)
                .collect();
            let mut codes: HashMap<u64, usize> = HashMap::new();
            for s in &in_phase {
                *codes.entry(s.code).or_default() += 1;
            }
            let mut latencies: Vec<_> = in_phase.iter().map(|s| s.latency).collect();
            let (p50, p99) = (pct(&mut latencies, 0.5), pct(&mut latencies, 0.99));
            println!(
                "{side:8} {name:6}: replies {:5} by code {codes:?}, reply p50 {p50:?} p99 {p99:?}",
                in_phase.len()
            );
        }
    }
    for (phase, name) in names.iter().enumerate() {
        let (p50, p99) = (
            pct(&mut deliveries[phase], 0.5),
            pct(&mut deliveries[phase], 0.99),
        );
        println!(
            "direct subscriber {name:6}: deliveries {:5}, p50 {p50:?} p99 {p99:?}",
            deliveries[phase].len()
        );
    }
    let recovered = by_side["proxied"]
        .iter()
        .filter(|s| s.intended >= BEFORE + STALL && s.code == 0)
        .map(|s| s.intended + s.latency)
        .min();
    println!(
        "first proxied success after the stall ended: {:?} later",
        recovered.map(|at| at - (BEFORE + STALL))
    );
    engine.shutdown();
}
