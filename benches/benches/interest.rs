//! The interest step every connection pays for its personal channel
//! (`Interest::add` at open, `remove` at close), under reconnect churn,
//! next to the previous design in the same run: `removing` is the old
//! `Interest` (the entry removed when its mask empties), rebuilt here on
//! papaya as it was.
//!
//! - `reconnect_one`: one channel emptied and filled again, over and over,
//!   among 100,000 others (a user reconnecting).
//! - `reconnect_mixed`: 20,000 of the 100,000 users reconnecting in a
//!   scattered order, one close and one open an iteration.
//! - `leave_for_good`: a new channel each iteration, opened and closed,
//!   never back (the kept design pays the ring and a reclaim here).
//!
//! Run: `cargo bench -p ringcast-benches --bench interest -- --warm-up-time
//! 1 --measurement-time 3`. Figures in docs/benchmarks.md.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ringcast_engine::interest::Interest;

const CHANNELS: usize = 100_000;
const RECONNECTING: usize = 20_000;

/// The two designs behind one face, so each case runs the same loop.
trait Step {
    fn open(&self, channel: &str, shard_idx: usize) -> bool;
    fn close(&self, channel: &str, shard_idx: usize) -> bool;
}

impl Step for Interest {
    fn open(&self, channel: &str, shard_idx: usize) -> bool {
        self.add(channel, shard_idx).is_some()
    }
    fn close(&self, channel: &str, shard_idx: usize) -> bool {
        self.remove(channel, shard_idx).is_some()
    }
}

/// The previous `Interest`: a placeholder for an absent channel, the
/// transition an update of it, and the entry removed when the mask empties.
#[derive(Default)]
struct Removing {
    shards_by_channel: papaya::HashMap<Box<str>, u64>,
}

impl Step for Removing {
    fn open(&self, channel: &str, shard_idx: usize) -> bool {
        let bit = 1u64 << shard_idx;
        let map = self.shards_by_channel.pin();
        loop {
            let result = map.compute(channel.into(), |entry| match entry {
                Some((_, mask)) => papaya::Operation::Insert(mask | bit),
                None => papaya::Operation::Abort(()),
            });
            match result {
                papaya::Compute::Updated { old: (_, old), .. } => return *old == 0,
                papaya::Compute::Aborted(()) => drop(map.try_insert(channel.into(), 0)),
                papaya::Compute::Inserted(..) | papaya::Compute::Removed(..) => return false,
            }
        }
    }
    fn close(&self, channel: &str, shard_idx: usize) -> bool {
        let bit = 1u64 << shard_idx;
        let map = self.shards_by_channel.pin();
        let result = map.compute(channel.into(), |entry| match entry {
            Some((_, mask)) if *mask == bit => papaya::Operation::Remove,
            Some((_, mask)) if mask & bit != 0 => papaya::Operation::Insert(mask & !bit),
            Some(_) | None => papaya::Operation::Abort(()),
        });
        matches!(result, papaya::Compute::Removed(..))
    }
}

fn user(n: usize) -> String {
    format!("user:user-{n}")
}

fn filled<S: Step + Default>() -> S {
    let step = S::default();
    for n in 0..CHANNELS {
        assert!(step.open(&user(n), n % 4));
    }
    step
}

fn bench_design<S: Step + Default>(c: &mut Criterion, design: &str) {
    let mut group = c.benchmark_group(format!("interest_{design}"));
    let step: S = filled();
    group.bench_function("reconnect_one", |b| {
        b.iter(|| {
            black_box(step.close(black_box("user:user-7"), 3));
            black_box(step.open(black_box("user:user-7"), 3));
        })
    });
    let step: S = filled();
    let names: Vec<String> = (0..RECONNECTING).map(user).collect();
    let mut idx = 0usize;
    group.bench_function("reconnect_mixed", |b| {
        b.iter(|| {
            // A stride coprime with the count visits every user in a
            // scattered order.
            idx = (idx + 7_919) % RECONNECTING;
            let shard_idx = idx % 4;
            black_box(step.close(&names[idx], shard_idx));
            black_box(step.open(&names[idx], shard_idx));
        })
    });
    let step: S = filled();
    let mut seq = 0u64;
    group.bench_function("leave_for_good", |b| {
        b.iter(|| {
            seq += 1;
            let channel = format!("user:left-{seq}");
            black_box(step.open(&channel, 1));
            black_box(step.close(&channel, 1));
        })
    });
    group.finish();
}

fn bench_interest(c: &mut Criterion) {
    bench_design::<Interest>(c, "kept");
    bench_design::<Removing>(c, "removing");
}

criterion_group!(benches, bench_interest);
criterion_main!(benches);
