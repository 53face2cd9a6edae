//! Wall-clock time and epoch generation, in one place so the units (unix
//! milliseconds) and the "epoch is never 0" rule live next to each other.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds; 0 if the clock is before 1970.
pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
        })
}

/// splitmix64's finalizer: spreads nearby inputs (consecutive counters,
/// close timestamps) over the whole u64 range.
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Issues stream epochs. An epoch only has to differ from the epochs the
/// same stream had before (so clients notice a reset); mixing the wall clock
/// in nanoseconds, the process id and a counter makes a repeat after a
/// restart as unlikely as a 64-bit collision.
#[derive(Debug)]
pub(crate) struct EpochGen {
    counter: u64,
}

impl EpochGen {
    pub(crate) fn new() -> EpochGen {
        EpochGen { counter: 0 }
    }

    /// A fresh epoch: never 0 (0 means "no stream") and never `previous`.
    pub(crate) fn next(&mut self, previous: u64) -> u64 {
        loop {
            self.counter = self.counter.wrapping_add(1);
            let seed = now_unix_nanos()
                ^ u64::from(std::process::id()).rotate_left(32)
                ^ self.counter.rotate_left(17);
            let epoch = mix64(seed);
            if epoch != 0 && epoch != previous {
                return epoch;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EpochGen;

    #[test]
    fn epochs_are_nonzero_and_distinct() {
        let mut epochs = EpochGen::new();
        let mut seen = std::collections::HashSet::new();
        let mut previous = 0;
        for _ in 0..10_000 {
            let epoch = epochs.next(previous);
            assert_ne!(epoch, 0);
            assert_ne!(epoch, previous);
            assert!(seen.insert(epoch), "epoch repeated");
            previous = epoch;
        }
    }
}
