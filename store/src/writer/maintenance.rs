//! The writer's background work between batches, each step bounded so it
//! never stalls appends for long: count and age retention, dedup expiry,
//! and deleting the garbage of reset streams. Runs on the writer thread
//! (the only code that writes to fjall), as part of [`Writer`].

use std::time::Instant;

use fjall::PersistMode;
use ringcast_protocol::envelope::EncodedPush;

use super::{duration_ms, Writer};
use crate::clock::now_unix_ms;
use crate::keys::{
    dedup_time_key_decode, entry_key, entry_key_decode, meta_id_key, DedupRecord,
    META_PREFIX_DROPPED, META_PREFIX_STREAM,
};
use crate::outbox::RECENT_OFFLINE_KEEP;

impl Writer {
    pub(super) fn schedule_count_trim(&mut self, id: u64) {
        let Some(meta) = self.streams.get(&id) else {
            return;
        };
        let len = meta.next_offset - meta.first_offset;
        if len > meta.count_max && self.trim_pending_set.insert(id) {
            self.trim_pending.push_back(id);
        }
    }

    /// One bounded step of count trimming.
    pub(super) fn trim_step(&mut self) {
        let mut budget = self.config.trim_keys_per_step_max;
        while budget > 0 {
            let Some(id) = self.trim_pending.pop_front() else {
                return;
            };
            self.trim_pending_set.remove(&id);
            let deleted = self.trim_stream(id, budget, None);
            budget = budget.saturating_sub(deleted);
            self.schedule_count_trim(id);
        }
    }

    /// Deletes up to `budget` of the stream's oldest entries that are over
    /// its count limit or (with `now_ms`) older than its age limit, and
    /// advances `first_offset` in the same atomic batch. Trimming only ever
    /// removes a prefix, so the stored offsets stay contiguous. Returns the
    /// number of keys deleted.
    fn trim_stream(&mut self, id: u64, budget: usize, now_ms: Option<u64>) -> usize {
        if self.shared.is_poisoned() || self.reopen.is_some() {
            return 0;
        }
        let Some(mut meta) = self.streams.get(&id).copied() else {
            return 0;
        };
        let mut batch = self.fjall.db.batch();
        let mut first = meta.first_offset;
        let mut deleted = 0usize;
        let count_cut = meta.next_offset.saturating_sub(meta.count_max);
        while first < count_cut && deleted < budget {
            batch.remove(&self.fjall.entries, entry_key(id, first));
            first += 1;
            deleted += 1;
        }
        if let Some(now_ms) = now_ms.filter(|_| meta.age_max_ms != u64::MAX) {
            let cutoff_ms = now_ms.saturating_sub(meta.age_max_ms);
            let range = entry_key(id, first)..entry_key(id, meta.next_offset);
            for guard in self.fjall.entries.range(range) {
                if deleted >= budget {
                    break;
                }
                let (key, value) = match guard.into_inner() {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::error!(%error, stream_id = id, "age retention: read failed");
                        break;
                    }
                };
                let Some((_, offset)) = entry_key_decode(&key) else {
                    break;
                };
                let time_ms = match EncodedPush::from_untrusted(&value) {
                    Ok(push) => push.envelope().time_ms.to_native(),
                    Err(error) => {
                        // Keep it: deleting data we cannot read hides the problem.
                        tracing::error!(%error, stream_id = id, offset, "age retention: corrupt entry");
                        break;
                    }
                };
                if time_ms >= cutoff_ms {
                    break;
                }
                batch.remove(&self.fjall.entries, key);
                first = offset + 1;
                deleted += 1;
            }
        }
        if first == meta.first_offset {
            return deleted;
        }
        // A recalled or edited message's marks go with it: nothing counts
        // or refers to an offset below the stream's first.
        let mut recalled = Vec::new();
        let marks = [
            (&self.fjall.im_recalled, true),
            (&self.fjall.im_edits, false),
        ];
        for (keyspace, recalls) in marks {
            for guard in keyspace.range(entry_key(id, meta.first_offset)..entry_key(id, first)) {
                match guard.into_inner() {
                    Ok((key, value)) => {
                        if recalls {
                            let offset = entry_key_decode(&key).map_or(0, |(_, offset)| offset);
                            recalled.push((offset, value.first() == Some(&1)));
                        }
                        batch.remove(keyspace, key);
                    }
                    Err(error) => {
                        tracing::error!(%error, stream_id = id, "retention: reading recalls failed");
                        return deleted;
                    }
                }
            }
        }
        // A conversation's unread stays within what was kept, in this batch.
        let mut conv_trim = None;
        if self.im.convs.contains(&id) {
            match self.stage_conv_trim(&mut batch, id, first, &recalled) {
                Ok(im) => conv_trim = Some(im),
                Err(error) => {
                    tracing::error!(%error, stream_id = id, "retention: reading a conversation failed");
                    return deleted;
                }
            }
        }
        meta.first_offset = first;
        batch.insert(
            &self.fjall.meta,
            meta_id_key(META_PREFIX_STREAM, id),
            meta.encode(),
        );
        // Buffered is enough: a trim lost in a crash only brings back
        // entries retention would have dropped, with their meta, atomically.
        match batch.durability(Some(PersistMode::Buffer)).commit() {
            Ok(()) => {
                self.streams.insert(id, meta);
                if let Some(mut im) = conv_trim {
                    im.apply(&mut self.im);
                }
            }
            Err(error) => drop(self.write_failed("trimming a stream", error)),
        }
        deleted
    }

    /// Periodic bounded work: age retention, dedup expiry, garbage of
    /// reset streams, and any count trimming still pending.
    pub(super) fn maintain(&mut self) {
        self.maintenance_last = Instant::now();
        if self.shared.is_poisoned() || self.reopen.is_some() {
            return;
        }
        // fjall poisons itself when its background work (flushing a
        // memtable to a new file, compacting) fails, and says so only to
        // the next write. Asking now, even when idle, lets the cause be
        // judged while it still holds (see `reopen::classify`).
        if let Err(error) = self.fjall.db.persist(PersistMode::Buffer) {
            drop(self.write_failed("writing the journal", error));
            return;
        }
        let now_ms = now_unix_ms();
        self.trim_step();
        let mut budget = self.config.trim_keys_per_step_max;
        // Age retention, round-robin so every stream gets its turn.
        let mut visited = 0;
        let visits_max = self
            .age_streams
            .len()
            .min(self.config.age_streams_per_step_max);
        while budget > 0 && visited < visits_max {
            let next = self
                .age_streams
                .range(self.age_next..)
                .next()
                .or_else(|| self.age_streams.iter().next())
                .copied();
            let Some(id) = next else {
                break;
            };
            self.age_next = id.saturating_add(1);
            visited += 1;
            budget = budget.saturating_sub(self.trim_stream(id, budget, Some(now_ms)));
        }
        self.expire_dedup(now_ms);
        self.collect_dropped();
        self.recent_offline
            .retain(|_, (_, at)| at.elapsed() < RECENT_OFFLINE_KEEP);
    }

    fn expire_dedup(&mut self, now_ms: u64) {
        let window_ms = duration_ms(self.config.dedup_window);
        let mut batch = self.fjall.db.batch();
        for guard in self
            .fjall
            .dedup_by_time
            .iter()
            .take(self.config.trim_keys_per_step_max)
        {
            let Ok(time_key) = guard.key() else {
                break;
            };
            let Some((time_ms, primary)) = dedup_time_key_decode(&time_key) else {
                batch.remove(&self.fjall.dedup_by_time, time_key.clone());
                continue;
            };
            if now_ms.saturating_sub(time_ms) < window_ms {
                break;
            }
            // A retry after expiry re-stores under the same primary key with
            // a newer time; only delete the primary if it is still this one.
            match self.fjall.dedup.get(primary) {
                Ok(Some(value)) => {
                    if DedupRecord::decode(&value).is_none_or(|record| record.time_ms == time_ms) {
                        batch.remove(&self.fjall.dedup, primary.to_vec());
                    }
                }
                Ok(None) => {}
                Err(_) => break,
            }
            batch.remove(&self.fjall.dedup_by_time, time_key.clone());
        }
        if let Err(error) = batch.durability(Some(PersistMode::Buffer)).commit() {
            drop(self.write_failed("expiring dedup records", error));
        }
    }

    fn collect_dropped(&mut self) {
        let Some(&id) = self.dropped.front() else {
            return;
        };
        let budget = self.config.trim_keys_per_step_max;
        let prefix = id.to_be_bytes();
        let mut batch = self.fjall.db.batch();
        let mut deleted = 0;
        for keyspace in [&self.fjall.entries, &self.fjall.dedup] {
            for guard in keyspace.prefix(prefix).take(budget - deleted) {
                let Ok(key) = guard.key() else {
                    return;
                };
                batch.remove(keyspace, key);
                deleted += 1;
            }
        }
        if deleted == 0 {
            // dedup_by_time entries of the old id expire by time.
            batch.remove(&self.fjall.meta, meta_id_key(META_PREFIX_DROPPED, id));
            self.dropped.pop_front();
        }
        if let Err(error) = batch.durability(Some(PersistMode::Buffer)).commit() {
            drop(self.write_failed("deleting a reset stream", error));
        }
    }
}
