//! WebSocket frame decode (masked client frames, as the server sees them)
//! and encode (server frames). Baseline: a memcpy of the same payload, the
//! least any codec must do to move the bytes.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringcast_protocol::frame::{apply_mask, encode_frame, Decoder, Limits, OpCode, Role};

const SIZES: [usize; 3] = [32, 1024, 64 * 1024];

fn masked_frame(len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    encode_frame(OpCode::Text, &payload, Some([0xa1, 0xb2, 0xc3, 0xd4])).to_vec()
}

fn decode(c: &mut Criterion) {
    let limits = Limits {
        frame_bytes_max: 1 << 20,
        message_bytes_max: 1 << 20,
    };
    let mut group = c.benchmark_group("frame_decode_masked_text");
    for len in SIZES {
        let frame = masked_frame(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("ringcast", len), &frame, |b, frame| {
            let mut buf = frame.clone();
            let mut decoder = Decoder::new();
            b.iter(|| {
                // Decoding unmasks in place; restore the masked bytes first
                // so every iteration decodes the same input.
                buf.copy_from_slice(frame);
                let decoded = decoder
                    .decode(&mut buf, Role::Server, &limits)
                    .unwrap()
                    .unwrap();
                black_box(decoded.consumed);
            })
        });
        group.bench_with_input(
            BenchmarkId::new("baseline_memcpy", len),
            &frame,
            |b, frame| {
                let mut buf = frame.clone();
                b.iter(|| {
                    buf.copy_from_slice(frame);
                    black_box(&buf);
                })
            },
        );
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_encode_server_text");
    for len in SIZES {
        let payload = vec![b'x'; len];
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("ringcast", len), &payload, |b, payload| {
            b.iter(|| black_box(encode_frame(OpCode::Text, black_box(payload), None)))
        });
        group.bench_with_input(
            BenchmarkId::new("baseline_to_vec", len),
            &payload,
            |b, payload| b.iter(|| black_box(black_box(payload).to_vec())),
        );
    }
    group.finish();
}

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply_mask");
    for len in SIZES {
        let mut buf = vec![7u8; len];
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::new("ringcast", len), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), [1, 2, 3, 4]))
        });
        group.bench_function(BenchmarkId::new("baseline_bytewise", len), |b| {
            b.iter(|| {
                for (i, byte) in black_box(&mut buf).iter_mut().enumerate() {
                    *byte ^= [1u8, 2, 3, 4][i & 3];
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode, encode, mask);
criterion_main!(benches);
