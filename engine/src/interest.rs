//! Interest routing: which shards have at least one subscriber of a channel.
//!
//! A publisher reads one bitmask and sends to those shards only, instead of
//! every shard. Readers never lock (papaya is a lock-free map); writers are
//! shards crossing zero↔one local subscriber, which is rare next to publishes.
//! A shard sets its bit before it acknowledges the subscribe, so a publish that
//! starts after the subscribe reply is routed to it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Shards are numbered `0..SHARDS_MAX` so a mask fits one `u64`.
pub use ringcast_protocol::limits::SHARDS_MAX;

pub struct Interest {
    shards_by_channel: papaya::HashMap<Box<str>, u64>,
    /// Numbers the node-wide transitions (a channel's first subscriber on
    /// the node, its last one gone), in the order they happen per channel.
    /// Starts at the start time in microseconds, so it normally keeps
    /// increasing across restarts too.
    transition_seq: AtomicU64,
}

/// A node-wide transition of a channel: its first subscriber on the node
/// came, or its last one went. `seq` orders the transitions of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub seq: u64,
}

impl Default for Interest {
    fn default() -> Interest {
        let start_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
            });
        Interest {
            shards_by_channel: papaya::HashMap::new(),
            transition_seq: AtomicU64::new(start_us),
        }
    }
}

impl Interest {
    pub fn new() -> Interest {
        Interest::default()
    }

    /// Shard `shard_idx` gained its first local subscriber of `channel`.
    /// Returns the transition when the channel had no shard before: its
    /// first subscriber on the node (one atomic step, so of two shards
    /// adding at once exactly one gets it).
    ///
    /// An absent channel first gets a placeholder entry with an empty
    /// mask, and the transition is an update of it: papaya's `compute`
    /// calls its closure again whenever the entry it saw changed, except
    /// for an insert into an absent key, whose first result it may reuse
    /// after losing a race (with a sequence number taken before the race).
    pub fn add(&self, channel: &str, shard_idx: usize) -> Option<Transition> {
        assert!(shard_idx < SHARDS_MAX);
        let bit = 1u64 << shard_idx;
        let map = self.shards_by_channel.pin();
        loop {
            let mut seq = 0;
            let result = map.compute(channel.into(), |entry| match entry {
                Some((_, mask)) => {
                    if *mask == 0 {
                        seq = self.next_seq();
                    }
                    papaya::Operation::Insert(mask | bit)
                }
                None => papaya::Operation::Abort(()),
            });
            match result {
                papaya::Compute::Updated { old: (_, old), .. } => {
                    return (*old == 0).then_some(Transition { seq });
                }
                // Absent: put the placeholder in (or find another's) and
                // try again.
                papaya::Compute::Aborted(()) => drop(map.try_insert(channel.into(), 0)),
                papaya::Compute::Inserted(..) | papaya::Compute::Removed(..) => return None,
            }
        }
    }

    /// Shard `shard_idx` lost its last local subscriber of `channel`.
    /// Returns the transition when no shard has one now: the last
    /// subscriber on the node is gone (the entry is removed in the same
    /// atomic step).
    pub fn remove(&self, channel: &str, shard_idx: usize) -> Option<Transition> {
        assert!(shard_idx < SHARDS_MAX);
        let bit = 1u64 << shard_idx;
        let map = self.shards_by_channel.pin();
        let mut seq = 0;
        let result = map.compute(channel.into(), |entry| match entry {
            Some((_, mask)) if *mask == bit => {
                seq = self.next_seq();
                papaya::Operation::Remove
            }
            Some((_, mask)) if mask & bit != 0 => papaya::Operation::Insert(mask & !bit),
            // Not this shard's (a placeholder, or already withdrawn).
            Some(_) | None => papaya::Operation::Abort(()),
        });
        matches!(result, papaya::Compute::Removed(..)).then_some(Transition { seq })
    }

    /// Taken inside the map's compute step on an existing entry, after it
    /// read it: a transition that follows another of the same channel read
    /// that one's result (or a placeholder put in after it), so it takes a
    /// later number. A step that is retried on a changed entry takes a new
    /// one; numbers may be skipped, never reordered.
    fn next_seq(&self) -> u64 {
        self.transition_seq.fetch_add(1, Ordering::SeqCst) + 1
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
        let first = interest.add("news", 0).expect("the first shard");
        assert_eq!(interest.add("news", 3), None, "not the first");
        assert_eq!(interest.shards("news"), 0b1001);
        assert_eq!(
            shard_indexes(interest.shards("news")).collect::<Vec<_>>(),
            [0, 3]
        );
        assert_eq!(interest.remove("news", 0), None, "not the last");
        assert_eq!(interest.shards("news"), 0b1000);
        let last = interest.remove("news", 3).expect("the last shard");
        assert!(last.seq > first.seq);
        assert_eq!(interest.remove("news", 3), None, "nothing left to remove");
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

    /// Firsts and lasts alternate whatever the interleaving, and their
    /// sequence numbers are in the order they alternate: the channel's
    /// node-wide transitions are exact, which the presence events rely on.
    #[test]
    fn concurrent_firsts_and_lasts_alternate_in_seq_order() {
        let interest = std::sync::Arc::new(Interest::new());
        let handles: Vec<_> = (0..4)
            .map(|shard| {
                let interest = interest.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    for _ in 0..2_000 {
                        if let Some(first) = interest.add("user:u", shard) {
                            seen.push((first.seq, true));
                        }
                        if let Some(last) = interest.remove("user:u", shard) {
                            seen.push((last.seq, false));
                        }
                    }
                    seen
                })
            })
            .collect();
        let mut all: Vec<(u64, bool)> = Vec::new();
        for h in handles {
            all.extend(h.join().unwrap());
        }
        all.sort_unstable();
        let seqs: std::collections::HashSet<u64> = all.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs.len(), all.len(), "a seq taken twice");
        // In seq order: first, last, first, last, ...
        for (idx, (seq, is_first)) in all.iter().enumerate() {
            assert_eq!(
                *is_first,
                idx % 2 == 0,
                "transition {idx} (seq {seq}) out of order"
            );
        }
        assert_eq!(all.len() % 2, 0);
        assert_eq!(interest.shards("user:u"), 0);
    }
}
