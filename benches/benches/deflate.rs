//! permessage-deflate: what compressing one publication costs next to
//! building its plain frame (the baseline, done once per publication
//! either way), and what inflating costs a receiver. Chat JSON of about
//! 200, 500 and 1000 bytes (`ringcast_benches::chat`).
//!
//! `compress_frame` is the engine's path: a per-thread compressor reset per
//! message. `fresh_compressor` builds a compressor per message, to show why
//! the engine keeps one.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringcast_benches::chat::chat_message;
use ringcast_protocol::deflate::{compress_frame, compress_message, Inflater};
use ringcast_protocol::frame::{encode_frame, OpCode};

const SIZES: [usize; 3] = [200, 500, 1000];

fn chat_json(bytes: usize) -> Vec<u8> {
    format!(r#"{{"t":1765000000000000,{}}}"#, chat_message(42, bytes)).into_bytes()
}

fn compress(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate_publication");
    for size in SIZES {
        let json = chat_json(size);
        let compressed = compress_frame(OpCode::Text, &json, 15).expect("chat compresses");
        eprintln!(
            "chat {size}: JSON {} bytes, compressed frame {} bytes ({:.0}%)",
            json.len(),
            compressed.len(),
            100.0 * compressed.len() as f64 / (json.len() + 2) as f64
        );
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("baseline_frame", size),
            &json,
            |b, json| b.iter(|| black_box(encode_frame(OpCode::Text, black_box(json), None))),
        );
        group.bench_with_input(
            BenchmarkId::new("compress_frame", size),
            &json,
            |b, json| b.iter(|| black_box(compress_frame(OpCode::Text, black_box(json), 15))),
        );
        group.bench_with_input(
            BenchmarkId::new("fresh_compressor", size),
            &json,
            |b, json| b.iter(|| black_box(compress_message(black_box(json)))),
        );
        let body = compress_message(&json);
        let mut inflater = Inflater::new();
        group.bench_with_input(BenchmarkId::new("inflate", size), &body, |b, body| {
            b.iter(|| {
                black_box(
                    inflater
                        .inflate(black_box(body), true, 1 << 20)
                        .map(<[u8]>::len),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, compress);
criterion_main!(benches);
