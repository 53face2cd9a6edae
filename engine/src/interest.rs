//! Interest routing: which shards have at least one subscriber of a channel.
//!
//! A publisher reads one bitmask and sends to those shards only, instead of
//! every shard. Readers never lock (papaya is a lock-free map); writers are
//! shards crossing zero↔one local subscriber, which is rare next to publishes.
//! A shard sets its bit before it acknowledges the subscribe, so a publish that
//! starts after the subscribe reply is routed to it.
//!
//! **Emptied channels stay a while.** A channel whose last subscriber on
//! the node goes keeps its entry with an empty mask instead of being
//! removed, because the same channel usually comes back: every
//! reconnecting user re-joins `user:<id>`. papaya never reuses a removed
//! slot (a tombstone) for an insert, so removing and inserting one key
//! again moves it one free slot further down its probe chain each time;
//! past the probe limit the insert forces a resize at the same capacity,
//! and with repetition resizes nest (incremental mode) or copy the whole
//! table (blocking): measured 13 µs a cycle at first and 67 µs by 12,000
//! cycles among 100,000 channels, against about 0.1 µs for overwriting the
//! value. Overwriting an empty mask costs what any update costs.
//!
//! **Reclaiming.** Each emptied entry is recorded, with its transition's
//! sequence number, in a bounded ring of [`EMPTIED_CHANNELS_MAX`]. When the
//! ring is full, the transition that records a new one takes the oldest
//! record out and removes that channel if it is still empty *since that
//! same transition* (same number): one removal per emptying, inline, so
//! the reclaiming keeps pace with the churn without a sweeper thread. A
//! channel emptied and refilled since has a later record and stays. So the
//! empty entries are at most the ring's size (plus placeholders of adds in
//! flight), and a channel gone for good is removed after
//! `EMPTIED_CHANNELS_MAX` later channels have emptied.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;

/// Shards are numbered `0..SHARDS_MAX` so a mask fits one `u64`.
pub use ringcast_protocol::limits::SHARDS_MAX;

/// Emptied channels whose entries are kept (with an empty mask) for their
/// return; the oldest is reclaimed when one more empties. At 1,000 users
/// leaving a second, a user who reconnects within about 16 s finds the
/// entry; the ring costs 32 bytes a slot up front (512 KiB).
pub const EMPTIED_CHANNELS_MAX: usize = 16_384;

pub struct Interest {
    shards_by_channel: papaya::HashMap<Box<str>, Slot>,
    /// Emptied channels, oldest first, each with the number of the
    /// transition that emptied it (see the module doc).
    emptied: ArrayQueue<(Box<str>, u64)>,
    /// Channels with at least one shard: the firsts minus the lasts. Counted
    /// after the transition, so it can trail or briefly dip below zero
    /// when both happen at once; read clamped.
    n_channels_live: AtomicI64,
    /// Numbers the node-wide transitions (a channel's first subscriber on
    /// the node, its last one gone), in the order they happen per channel.
    /// Starts at the start time in microseconds, so it normally keeps
    /// increasing across restarts too.
    transition_seq: AtomicU64,
}

/// A channel's entry: the shards with a subscriber, and when the mask is
/// empty, the number of the transition that emptied it (0 for a
/// placeholder, which no record names).
#[derive(Debug, Clone, Copy)]
struct Slot {
    mask: u64,
    emptied_seq: u64,
}

/// A node-wide transition of a channel: its first subscriber on the node
/// came, or its last one went. `seq` orders the transitions of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub seq: u64,
}

impl Default for Interest {
    fn default() -> Interest {
        Interest::with_emptied_max(EMPTIED_CHANNELS_MAX)
    }
}

impl Interest {
    pub fn new() -> Interest {
        Interest::default()
    }

    /// Tests take a small ring, so that reclaiming races with the churn.
    fn with_emptied_max(emptied_max: usize) -> Interest {
        let start_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
            });
        Interest {
            shards_by_channel: papaya::HashMap::new(),
            emptied: ArrayQueue::new(emptied_max),
            n_channels_live: AtomicI64::new(0),
            // Above 0, so no transition's number is a placeholder's.
            transition_seq: AtomicU64::new(start_us.max(1)),
        }
    }

    /// Shard `shard_idx` gained its first local subscriber of `channel`.
    /// Returns the transition when the channel had no shard before: its
    /// first subscriber on the node (one atomic step, so of two shards
    /// adding at once exactly one gets it).
    ///
    /// An absent channel first gets a placeholder entry with an empty
    /// mask, and the transition is an update of it (as of an emptied entry
    /// kept): papaya's `compute` calls its closure again whenever the
    /// entry it saw changed, except for an insert into an absent key,
    /// whose first result it may reuse after losing a race (with a
    /// sequence number taken before the race).
    pub fn add(&self, channel: &str, shard_idx: usize) -> Option<Transition> {
        assert!(shard_idx < SHARDS_MAX);
        let bit = 1u64 << shard_idx;
        let map = self.shards_by_channel.pin();
        loop {
            let mut seq = 0;
            let result = map.compute(channel.into(), |entry| match entry {
                Some((_, slot)) => {
                    if slot.mask == 0 {
                        seq = self.next_seq();
                    }
                    papaya::Operation::Insert(Slot {
                        mask: slot.mask | bit,
                        emptied_seq: 0,
                    })
                }
                None => papaya::Operation::Abort(()),
            });
            match result {
                papaya::Compute::Updated { old: (_, old), .. } => {
                    if old.mask != 0 {
                        return None;
                    }
                    self.n_channels_live.fetch_add(1, Ordering::Relaxed);
                    return Some(Transition { seq });
                }
                // Absent: put the placeholder in (or find another's) and
                // try again.
                papaya::Compute::Aborted(()) => drop(map.try_insert(
                    channel.into(),
                    Slot {
                        mask: 0,
                        emptied_seq: 0,
                    },
                )),
                papaya::Compute::Inserted(..) | papaya::Compute::Removed(..) => return None,
            }
        }
    }

    /// Shard `shard_idx` lost its last local subscriber of `channel`.
    /// Returns the transition when no shard has one now: the last
    /// subscriber on the node is gone (the mask emptied in the same atomic
    /// step; the entry is kept, see the module doc).
    pub fn remove(&self, channel: &str, shard_idx: usize) -> Option<Transition> {
        assert!(shard_idx < SHARDS_MAX);
        let bit = 1u64 << shard_idx;
        let map = self.shards_by_channel.pin();
        let mut seq = 0;
        let result = map.compute(channel.into(), |entry| match entry {
            Some((_, slot)) if slot.mask & bit == 0 => papaya::Operation::Abort(()),
            Some((_, slot)) => {
                let mask = slot.mask & !bit;
                let emptied_seq = if mask == 0 { self.next_seq() } else { 0 };
                seq = emptied_seq;
                papaya::Operation::Insert(Slot { mask, emptied_seq })
            }
            // Not this shard's (a placeholder, or already withdrawn).
            None => papaya::Operation::Abort(()),
        });
        let papaya::Compute::Updated { new: (_, new), .. } = result else {
            return None;
        };
        if new.mask != 0 {
            return None;
        }
        self.n_channels_live.fetch_sub(1, Ordering::Relaxed);
        self.record_emptied(channel, seq);
        Some(Transition { seq })
    }

    /// Records `channel` emptied by transition `seq`, and when the ring is
    /// full reclaims the oldest record's channel if it stayed empty since.
    fn record_emptied(&self, channel: &str, seq: u64) {
        let Some((oldest, oldest_seq)) = self.emptied.force_push((channel.into(), seq)) else {
            return;
        };
        // One atomic step on the entry it checked. An add that comes after
        // the removal finds the channel absent and puts a placeholder in,
        // as for a new channel. Refused: refilled, or emptied again since
        // (a later record names it).
        let _removed_or_refused = self
            .shards_by_channel
            .pin()
            .remove_if(&*oldest, |_, slot| {
                slot.mask == 0 && slot.emptied_seq == oldest_seq
            })
            .is_ok();
    }

    /// Taken inside the map's compute step on an existing entry, after it
    /// read it: a transition that follows another of the same channel read
    /// that one's result (or a placeholder put in after it), so it takes a
    /// later number. A step that is retried on a changed entry takes a new
    /// one; numbers may be skipped, never reordered.
    fn next_seq(&self) -> u64 {
        self.transition_seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The shards holding a connection of any of `users` but `skip`:
    /// the OR of their inboxes' interest (an ephemeral IM event's route).
    pub fn shards_of_users(&self, users: &[Box<str>], skip: &str) -> u64 {
        users
            .iter()
            .filter(|user| &***user != skip)
            .fold(0, |mask, user| {
                mask | self.shards(&crate::channels::personal_channel(user))
            })
    }

    /// The shards to send a publication on `channel` to.
    /// Calls `f` with every channel that has a subscriber on the node.
    pub fn for_each_live(&self, mut f: impl FnMut(&str)) {
        for (channel, slot) in self.shards_by_channel.pin().iter() {
            if slot.mask != 0 {
                f(channel);
            }
        }
    }

    pub fn shards(&self, channel: &str) -> u64 {
        self.shards_by_channel
            .pin()
            .get(channel)
            .map_or(0, |slot| slot.mask)
    }

    /// Channels with at least one shard.
    pub fn n_channels(&self) -> usize {
        usize::try_from(self.n_channels_live.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Entries in the map: the channels with a shard plus the emptied ones
    /// not reclaimed yet (at most [`EMPTIED_CHANNELS_MAX`] and the
    /// placeholders of adds in flight).
    pub fn n_entries(&self) -> usize {
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
        assert_eq!(interest.n_channels(), 0, "no channel with a shard");
        assert_eq!(interest.n_entries(), 1, "the emptied entry is kept");
        let again = interest.add("news", 1).expect("first again after the last");
        assert!(again.seq > last.seq);
    }

    /// Users reconnecting (one channel emptied and filled again, over and
    /// over) and users leaving for good (a new channel each time): the
    /// returning channel keeps one entry, the ones gone are reclaimed, and
    /// the map never holds more than the ring of emptied channels besides
    /// the live ones.
    #[test]
    fn churn_reclaims_emptied_channels_and_stays_bounded() {
        let interest = Interest::new();
        interest.add("user:stays", 2);
        interest.add("user:gone", 0);
        interest.remove("user:gone", 0).expect("the last");
        let mut returning_seq = 0;
        for n in 0..EMPTIED_CHANNELS_MAX * 3 {
            let first = interest.add("user:returns", 1).expect("first");
            assert!(first.seq > returning_seq, "numbers keep their order");
            let last = interest.remove("user:returns", 1).expect("last");
            returning_seq = last.seq;
            let channel = format!("user:left-{n}");
            interest.add(&channel, n % SHARDS_MAX);
            interest.remove(&channel, n % SHARDS_MAX).expect("last");
            assert!(
                interest.n_entries() <= EMPTIED_CHANNELS_MAX + 1,
                "{} entries after {n} cycles",
                interest.n_entries()
            );
        }
        assert_eq!(interest.n_channels(), 1);
        assert_eq!(interest.shards("user:stays"), 1 << 2);
        // Reclaimed long ago: 2 * EMPTIED_CHANNELS_MAX channels emptied since.
        assert!(interest.shards_by_channel.pin().get("user:gone").is_none());
        assert!(interest
            .shards_by_channel
            .pin()
            .get("user:left-0")
            .is_none());
        // A reclaimed channel comes back as a new one.
        assert!(interest.add("user:gone", 3).is_some());
        assert_eq!(interest.shards("user:gone"), 1 << 3);
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
        assert_alternating(all);
        assert_eq!(interest.shards("user:u"), 0);
    }

    /// Several shards connecting and disconnecting users that share
    /// channels, while users leaving for good push a small ring round so
    /// the shared channels get reclaimed between (and during) their
    /// cycles: every channel's transitions still alternate in seq order,
    /// and the map stays bounded.
    #[test]
    fn transitions_stay_exact_while_channels_are_reclaimed() {
        const SHARED: usize = 16;
        const CYCLES: usize = 6_000;
        const RING: usize = 8;
        let interest = std::sync::Arc::new(Interest::with_emptied_max(RING));
        let handles: Vec<_> = (0..4)
            .map(|shard| {
                let interest = interest.clone();
                std::thread::spawn(move || {
                    let mut seen: Vec<Vec<(u64, bool)>> = vec![Vec::new(); SHARED];
                    for n in 0..CYCLES {
                        let shared = (n * 7 + shard) % SHARED;
                        let channel = format!("user:shared-{shared}");
                        if let Some(first) = interest.add(&channel, shard) {
                            seen[shared].push((first.seq, true));
                        }
                        assert_ne!(interest.shards(&channel) & (1 << shard), 0);
                        for k in 0..2 {
                            let left = format!("user:left-{shard}-{n}-{k}");
                            assert!(interest.add(&left, shard).is_some());
                            assert!(interest.remove(&left, shard).is_some());
                        }
                        if let Some(last) = interest.remove(&channel, shard) {
                            seen[shared].push((last.seq, false));
                        }
                    }
                    seen
                })
            })
            .collect();
        let mut by_channel: Vec<Vec<(u64, bool)>> = vec![Vec::new(); SHARED];
        for h in handles {
            for (shared, seen) in h.join().unwrap().into_iter().enumerate() {
                by_channel[shared].extend(seen);
            }
        }
        for (shared, all) in by_channel.into_iter().enumerate() {
            assert!(!all.is_empty());
            assert_alternating(all);
            assert_eq!(interest.shards(&format!("user:shared-{shared}")), 0);
        }
        assert_eq!(interest.n_channels(), 0);
        assert!(interest.n_entries() <= RING, "{}", interest.n_entries());
    }

    /// In seq order: first, last, first, last, ...; no number twice.
    fn assert_alternating(mut all: Vec<(u64, bool)>) {
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
    }
}
