//! Building a publication (rkyv archive + JSON frame + binary frame, once per
//! publication) and reading an archived envelope. Baselines: serde_json of
//! the same envelope (what a JSON-only engine does), and copying the archive
//! bytes (the cost of one per-recipient copy, which Ringcast never makes).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ringcast_engine::publication::Publication;
use ringcast_protocol::envelope::{EncodedPush, Envelope};

fn envelope() -> Envelope {
    Envelope {
        id: 123_456_789,
        offset: 0,
        epoch: 0,
        channel: "chat:room-42".into(),
        sender: "alice".into(),
        time_ms: 1_760_000_000_000,
        data_is_json: true,
        data: br#"{"text":"hello, world","n":42}"#.to_vec(),
    }
}

fn build(c: &mut Criterion) {
    let env = envelope();
    let mut group = c.benchmark_group("envelope_build");
    group.bench_function("rkyv_archive", |b| {
        b.iter(|| black_box(EncodedPush::encode(black_box(&env))))
    });
    group.bench_function("publication_archive_plus_two_frames", |b| {
        b.iter(|| black_box(Publication::new(black_box(&env))))
    });
    group.bench_function("baseline_serde_json", |b| {
        b.iter(|| {
            black_box(serde_json::to_vec(&serde_json::json!({
                "channel": env.channel, "id": env.id.to_string(), "sender": env.sender, "time": env.time_ms,
                "data": serde_json::from_slice::<serde_json::Value>(&env.data).unwrap(),
            })))
        })
    });
    group.finish();
}

fn access(c: &mut Criterion) {
    let push = EncodedPush::encode(&envelope());
    let bytes = push.as_bytes().to_vec();
    let mut group = c.benchmark_group("envelope_access");
    group.bench_function("trusted_access_read_channel", |b| {
        b.iter(|| black_box(black_box(&push).envelope().channel.len()))
    });
    group.bench_function("checked_from_untrusted", |b| {
        b.iter(|| black_box(EncodedPush::from_untrusted(black_box(&bytes)).unwrap()))
    });
    group.bench_function("baseline_copy_bytes", |b| {
        b.iter(|| black_box(black_box(&bytes).to_vec()))
    });
    group.finish();
}

criterion_group!(benches, build, access);
criterion_main!(benches);
