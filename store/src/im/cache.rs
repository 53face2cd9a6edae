//! The IM records the writer read or wrote, kept between batches.
//!
//! A direct message reads about ten IM keys (both users' views and unread
//! totals, the conversation's record, the block and policy keys) before it
//! writes them again. With thousands of active conversations each of those
//! is a search of a memtable of hundreds of thousands of entries, a cache
//! miss per level: measured with `group_throughput` (`PAIRS=4500`), the
//! reads cost about as much CPU as the writes. The writer is the only
//! writer of these keyspaces, so a record it read or wrote is the stored
//! one until its next batch changes it: the cache can answer instead of
//! fjall, without any invalidation but its own writes.
//!
//! Ownership keeps that true when a batch fails: the cache moves into the
//! batch ([`ImCache::take`]) and back into the writer's state only when
//! fjall accepted the batch (with the batch's writes merged in). A batch
//! that is refused or fails drops it, and the next batch reads fjall again.

use std::collections::HashMap;

use super::ImKeyspace;
use crate::keys::{ConvRecord, UConvRecord};

/// Most records of each kind kept between batches. Past it that kind is
/// emptied and refills from fjall as records are touched again: memory
/// stays bounded (a few hundred bytes per record, some tens of MiB at
/// most), and a working set below it (active conversations and their
/// users) is read from fjall once.
pub(crate) const IM_CACHE_RECORDS_MAX: usize = 65_536;

/// The writer's IM records by key, as fjall holds them after the last
/// committed batch (`None`: known absent).
#[derive(Debug, Clone, Default)]
pub(crate) struct ImCache {
    pub(super) convs: HashMap<u64, ConvRecord>,
    pub(super) uconvs: HashMap<(String, u64), Option<UConvRecord>>,
    pub(super) dm_unread: HashMap<String, u64>,
    /// Keys of [`ImKeyspace::caches`] keyspaces only.
    pub(super) keys: HashMap<(ImKeyspace, Vec<u8>), Option<Vec<u8>>>,
}

impl ImCache {
    /// Moves the cache out of the writer's state, for one batch.
    pub(crate) fn take(cache: &mut ImCache) -> ImCache {
        std::mem::take(cache)
    }

    /// Empties each kind that grew past [`IM_CACHE_RECORDS_MAX`].
    pub(super) fn bound(&mut self) {
        fn bound_map<K, V>(map: &mut HashMap<K, V>) {
            if map.len() > IM_CACHE_RECORDS_MAX {
                map.clear();
            }
        }
        bound_map(&mut self.convs);
        bound_map(&mut self.uconvs);
        bound_map(&mut self.dm_unread);
        bound_map(&mut self.keys);
    }
}

impl ImKeyspace {
    /// Whether the writer caches this keyspace's keys: the small ones read
    /// per direct message. Member tables have their own cache, and the
    /// activity index is never read back by the writer.
    pub(super) fn caches(self) -> bool {
        matches!(
            self,
            ImKeyspace::Block | ImKeyspace::Contact | ImKeyspace::Policy
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_emptied_only_past_its_bound() {
        let mut cache = ImCache::default();
        for id in 0..=IM_CACHE_RECORDS_MAX as u64 {
            cache.dm_unread.insert(format!("u{id}"), id);
        }
        cache.uconvs.insert(("a".to_owned(), 1), None);
        cache.bound();
        assert!(cache.dm_unread.is_empty(), "past the bound: emptied");
        assert_eq!(cache.uconvs.len(), 1, "below it: kept");
    }

    #[test]
    fn taking_the_cache_leaves_an_empty_one() {
        let mut state = ImCache::default();
        state.convs.insert(
            7,
            ConvRecord {
                kind: 0,
                created_ms: 0,
                last_offset: 0,
                last_time_ms: 0,
                last_gseq: 0,
                count_total: 0,
                last_msg_offset: 0,
                name: "dm:x".to_owned(),
                pair: ("a".to_owned(), "b".to_owned()),
                group: None,
                trimmed_count: 0,
            },
        );
        let taken = ImCache::take(&mut state);
        assert_eq!(taken.convs.len(), 1);
        assert!(state.convs.is_empty());
    }
}
