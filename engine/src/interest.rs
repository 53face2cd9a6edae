//! Interest routing: which shards have at least one subscriber of a channel.
//!
//! A publisher reads one bitmask and sends to those shards only, instead of
//! every shard. Readers never lock (papaya is a lock-free map); writers are
//! shards crossing zero↔one local subscriber, which is rare next to publishes.
//! A shard sets its bit before it acknowledges the subscribe, so a publish that
//! starts after the subscribe reply is routed to it.

/// Shards are numbered `0..SHARDS_MAX` so a mask fits one `u64`.
pub use ringcast_protocol::limits::SHARDS_MAX;

#[derive(Default)]
pub struct Interest {
    shards_by_channel: papaya::HashMap<Box<str>, u64>,
}

impl Interest {
    pub fn new() -> Interest {
        Interest::default()
    }

    /// Shard `shard_idx` gained its first local subscriber of `channel`.
    pub fn add(&self, channel: &str, shard_idx: usize) {
        assert!(shard_idx < SHARDS_MAX);
        let bit = 1u64 << shard_idx;
        self.shards_by_channel
            .pin()
            .update_or_insert(channel.into(), |mask| mask | bit, bit);
    }

    /// Shard `shard_idx` lost its last local subscriber of `channel`.
    pub fn remove(&self, channel: &str, shard_idx: usize) {
        assert!(shard_idx < SHARDS_MAX);
        let bit = 1u64 << shard_idx;
        let map = self.shards_by_channel.pin();
        map.update(channel.into(), |mask| mask & !bit);
        // Conditional: another shard may have set its bit since the update.
        let _ = map.remove_if(channel, |_, mask| *mask == 0);
    }

    /// The shards to send a publication on `channel` to.
    pub fn shards(&self, channel: &str) -> u64 {
        self.shards_by_channel
            .pin()
            .get(channel)
            .copied()
            .unwrap_or(0)
    }

    pub fn n_channels(&self) -> usize {
        self.shards_by_channel.len()
    }
}

/// Iterates the shard indexes set in `mask`.
pub fn shard_indexes(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let idx = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        Some(idx)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_follow_first_and_last_subscriber() {
        let interest = Interest::new();
        assert_eq!(interest.shards("news"), 0);
        interest.add("news", 0);
        interest.add("news", 3);
        assert_eq!(interest.shards("news"), 0b1001);
        assert_eq!(
            shard_indexes(interest.shards("news")).collect::<Vec<_>>(),
            [0, 3]
        );
        interest.remove("news", 0);
        assert_eq!(interest.shards("news"), 0b1000);
        interest.remove("news", 3);
        assert_eq!(interest.shards("news"), 0);
        assert_eq!(interest.n_channels(), 0, "empty masks are removed");
    }

    #[test]
    fn concurrent_shards_never_lose_a_bit() {
        let interest = std::sync::Arc::new(Interest::new());
        let handles: Vec<_> = (0..4)
            .map(|shard| {
                let interest = interest.clone();
                std::thread::spawn(move || {
                    for _ in 0..2_000 {
                        interest.add("c", shard);
                        assert_ne!(interest.shards("c") & (1 << shard), 0);
                        interest.remove("c", shard);
                    }
                    interest.add("c", shard);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(interest.shards("c"), 0b1111);
    }
}
