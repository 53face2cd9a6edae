//! The webhook outbox: events written in the same group commit as what
//! caused them, read back by the engine's sender, deleted when delivered,
//! moved to a dead-letter list when given up, and moved back on replay.
//!
//! The writer stages outbox work into each batch through [`OutboxBatch`]
//! (so an event and its append are one atomic fjall batch), and the readers
//! serve [`read_outbox`] and [`read_dead`]. The presence set (`online`
//! keyspace) follows the Online and Offline events in the same batches, so
//! after a crash [`close_presence`] can write the Offline events that the
//! dead process never wrote.

use std::collections::{HashMap, HashSet};

use fjall::{OwnedWriteBatch, PersistMode, Readable};
use ringcast_protocol::envelope::MessageIdGen;

use crate::api::{
    DeadRecord, OutboxEvent, OutboxKind, OutboxRecord, Unreadable, DEAD_ERROR_BYTES_MAX,
    DEAD_REPLAY_MAX, OUTBOX_BODY_BYTES_MAX, STREAM_NAME_BYTES_MAX,
};
use crate::clock::now_unix_ms;
use crate::error::StoreError;
use crate::keys::{
    read_u64, seq_key, seq_key_decode, DeadValue, OutboxValue, META_KEY_NEXT_OUTBOX_SEQ,
};
use crate::recovery::{Fjall, OutboxState};

/// How long the writer remembers the sequence of a user's last Offline, to
/// tell a late Online (one whose transition came before the Offline) from a
/// new one. Far longer than an event waits in the writer's queue.
pub(crate) const RECENT_OFFLINE_KEEP: std::time::Duration = std::time::Duration::from_secs(60);

/// The body of the Offline events [`close_presence`] writes at open.
pub(crate) const RESTART_OFFLINE_BODY: &[u8] = br#"{"reason":"restart"}"#;

/// Refuses events the store would not write: an empty or oversized key, an
/// oversized body.
pub(crate) fn validate_events(events: &[OutboxEvent]) -> Result<(), StoreError> {
    for event in events {
        if event.key.is_empty() || event.key.len() > STREAM_NAME_BYTES_MAX {
            return Err(StoreError::InvalidRequest {
                reason: "outbox event key must be 1..=1024 bytes",
            });
        }
        if event.body.len() > OUTBOX_BODY_BYTES_MAX {
            return Err(StoreError::InvalidRequest {
                reason: "outbox event body must be at most 64 KiB",
            });
        }
    }
    Ok(())
}

/// `last_error` cut to [`DEAD_ERROR_BYTES_MAX`] bytes at a character boundary.
pub(crate) fn cut_error(mut last_error: String) -> String {
    if last_error.len() > DEAD_ERROR_BYTES_MAX {
        let mut end = DEAD_ERROR_BYTES_MAX;
        while !last_error.is_char_boundary(end) {
            end -= 1;
        }
        last_error.truncate(end);
    }
    assert!(last_error.len() <= DEAD_ERROR_BYTES_MAX);
    last_error
}

/// A user's presence as a batch leaves it.
#[derive(Debug, Clone, Copy)]
struct PresenceChange {
    online: bool,
    /// The transition's sequence, 0 for an unsequenced event.
    seq: u64,
}

/// The outbox part of one group commit, applied to [`OutboxState`] only
/// once fjall accepted the batch.
pub(crate) struct OutboxBatch {
    next_seq: u64,
    outbox_added: u64,
    outbox_removed: u64,
    dead_added: u64,
    dead_removed: u64,
    /// Seqs already deleted or moved in this batch: a second request for
    /// one must not count it twice.
    touched: HashSet<u64>,
    /// Presence changes of the batch, last one per user wins: one fjall
    /// batch must not hold two writes of one key.
    presence: HashMap<String, PresenceChange>,
    /// Sequenced presence events dropped as older than the user's last.
    pub(crate) presence_stale: u64,
    /// The batch writes records into the outbox.
    pub(crate) written: bool,
    /// Online and Offline events update the presence set
    /// ([`crate::StoreConfig::presence_set`]).
    track_presence: bool,
}

impl OutboxBatch {
    pub(crate) fn new(state: &OutboxState, track_presence: bool) -> OutboxBatch {
        OutboxBatch {
            next_seq: state.next_seq,
            outbox_added: 0,
            outbox_removed: 0,
            dead_added: 0,
            dead_removed: 0,
            touched: HashSet::new(),
            presence: HashMap::new(),
            presence_stale: 0,
            written: false,
            track_presence,
        }
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq = seq.checked_add(1).unwrap_or(seq);
        assert!(self.next_seq > seq, "outbox seqs exhausted");
        seq
    }

    /// Stages new events; `entry` is the stamped entry they rode, if any.
    /// The events were validated ([`validate_events`]).
    pub(crate) fn stage_events(
        &mut self,
        fjall: &Fjall,
        batch: &mut OwnedWriteBatch,
        event_ids: &mut MessageIdGen,
        events: &[OutboxEvent],
        entry: Option<&[u8]>,
        now_ms: u64,
    ) {
        for event in events {
            let seq = self.take_seq();
            let value = OutboxValue {
                event_id: event_ids.next(now_ms).as_u64(),
                kind: event.kind,
                due_ms: event.due_ms,
                time_ms: now_ms,
                key: &event.key,
                body: &event.body,
                entry,
            };
            batch.insert(&fjall.outbox, seq_key(seq), value.encode());
            self.outbox_added += 1;
            self.written = true;
            let online = match event.kind {
                OutboxKind::Online => true,
                OutboxKind::Offline => false,
                OutboxKind::Message | OutboxKind::Undelivered => continue,
            };
            if !self.track_presence {
                continue;
            }
            let change = PresenceChange { online, seq: 0 };
            self.presence.insert(event.key.clone(), change);
        }
    }

    /// Stages an Online or Offline event whose transition has sequence
    /// `presence_seq` (increasing per user in transition order), unless the
    /// user's last presence event had a higher one: then this one is late
    /// (it was overtaken on its way to the writer) and is dropped, so the
    /// outbox and the presence set never end on the older state.
    #[expect(
        clippy::too_many_arguments,
        reason = "the batch's parts and the writer's state it reads, passed apart"
    )]
    pub(crate) fn stage_presence(
        &mut self,
        fjall: &Fjall,
        batch: &mut OwnedWriteBatch,
        event_ids: &mut MessageIdGen,
        event: &OutboxEvent,
        presence_seq: u64,
        recent_offline: &HashMap<String, (u64, std::time::Instant)>,
        now_ms: u64,
    ) {
        let last_seq = match self.presence.get(&event.key) {
            Some(change) => change.seq,
            None => match fjall.online.get(&event.key) {
                Ok(Some(value)) => read_u64(&value, 0).unwrap_or(0),
                Ok(None) => recent_offline.get(&event.key).map_or(0, |(seq, _)| *seq),
                Err(error) => {
                    tracing::error!(%error, "outbox: reading the presence set failed");
                    0
                }
            },
        };
        if presence_seq <= last_seq {
            self.presence_stale += 1;
            tracing::debug!(
                user = event.key,
                presence_seq,
                last_seq,
                "outbox: presence event overtaken by a later one, dropped"
            );
            return;
        }
        self.stage_events(
            fjall,
            batch,
            event_ids,
            std::slice::from_ref(event),
            None,
            now_ms,
        );
        if let Some(change) = self.presence.get_mut(&event.key) {
            change.seq = presence_seq;
        }
    }

    /// The presence changes the batch makes: (user, online, sequence).
    pub(crate) fn presence_changes(&self) -> impl Iterator<Item = (&String, bool, u64)> {
        self.presence
            .iter()
            .map(|(user, change)| (user, change.online, change.seq))
    }

    /// Deletes delivered records. Unknown seqs (already done, dead, or
    /// never written) are ignored.
    pub(crate) fn stage_done(&mut self, fjall: &Fjall, batch: &mut OwnedWriteBatch, seqs: &[u64]) {
        for &seq in seqs {
            if !self.touched.insert(seq) {
                continue;
            }
            match fjall.outbox.contains_key(seq_key(seq)) {
                Ok(true) => {
                    batch.remove(&fjall.outbox, seq_key(seq));
                    self.outbox_removed += 1;
                }
                Ok(false) => {}
                Err(error) => tracing::error!(%error, seq, "outbox: reading a done record failed"),
            }
        }
    }

    /// Moves a record to the dead-letter list, same seq and event id, its
    /// value as it is (decodable or not). Returns how many moved (0: not
    /// in the outbox).
    pub(crate) fn stage_dead(
        &mut self,
        fjall: &Fjall,
        batch: &mut OwnedWriteBatch,
        seq: u64,
        attempts: u32,
        last_error: &str,
        now_ms: u64,
    ) -> u64 {
        if !self.touched.insert(seq) {
            return 0;
        }
        let value = match fjall.outbox.get(seq_key(seq)) {
            Ok(Some(value)) => value,
            Ok(None) => return 0,
            Err(error) => {
                tracing::error!(%error, seq, "outbox: reading a dead record failed");
                return 0;
            }
        };
        batch.insert(
            &fjall.dead,
            seq_key(seq),
            DeadValue::encode(attempts, now_ms, last_error, &value),
        );
        batch.remove(&fjall.outbox, seq_key(seq));
        self.outbox_removed += 1;
        self.dead_added += 1;
        1
    }

    /// Moves dead records (`None`: the oldest, up to [`DEAD_REPLAY_MAX`])
    /// back into the outbox under new seqs, event ids unchanged. Returns
    /// how many moved.
    pub(crate) fn stage_replay(
        &mut self,
        fjall: &Fjall,
        batch: &mut OwnedWriteBatch,
        seqs: Option<&[u64]>,
    ) -> Result<u64, StoreError> {
        let io = |error| StoreError::io("reading the dead-letter list", error);
        let mut found: Vec<(u64, fjall::Slice)> = Vec::new();
        match seqs {
            None => {
                // Unreadable records stay (listing shows them) and are
                // passed over, so they never stop the ones behind them.
                for guard in fjall.dead.iter() {
                    if found.len() >= DEAD_REPLAY_MAX {
                        break;
                    }
                    let (key, value) = guard.into_inner().map_err(io)?;
                    if let (Some(seq), Ok(_)) = (seq_key_decode(&key), replayable(&value)) {
                        found.push((seq, value));
                    }
                }
            }
            Some(seqs) => {
                for &seq in seqs.iter().take(DEAD_REPLAY_MAX) {
                    if let Some(value) = fjall.dead.get(seq_key(seq)).map_err(io)? {
                        found.push((seq, value));
                    }
                }
            }
        }
        let mut moved = 0;
        for (dead_seq, value) in found {
            if !self.touched.insert(dead_seq) {
                continue;
            }
            let outbox_value = match replayable(&value) {
                Ok(outbox_value) => outbox_value,
                Err(reason) => {
                    // Left where it is: listing it shows the problem.
                    tracing::error!(dead_seq, %reason, "outbox: unreadable dead record, not replayed");
                    continue;
                }
            };
            let seq = self.take_seq();
            batch.insert(&fjall.outbox, seq_key(seq), outbox_value);
            batch.remove(&fjall.dead, seq_key(dead_seq));
            self.outbox_added += 1;
            self.dead_removed += 1;
            self.written = true;
            moved += 1;
        }
        Ok(moved)
    }

    /// Writes what the batch decided once per key: the presence changes
    /// and the seq counter.
    pub(crate) fn finish(
        &mut self,
        fjall: &Fjall,
        batch: &mut OwnedWriteBatch,
        state: &OutboxState,
    ) {
        for (user, change) in &self.presence {
            if change.online {
                // The sequence stays with the user while online: a late
                // Offline is told by it (0: an unsequenced Online).
                batch.insert(&fjall.online, user.as_str(), change.seq.to_be_bytes());
            } else {
                batch.remove(&fjall.online, user);
            }
        }
        if self.next_seq != state.next_seq {
            batch.insert(
                &fjall.meta,
                META_KEY_NEXT_OUTBOX_SEQ,
                self.next_seq.to_be_bytes(),
            );
        }
    }

    /// The batch is committed: its counts become the store's.
    pub(crate) fn apply(&self, state: &mut OutboxState) {
        assert!(self.next_seq >= state.next_seq);
        state.next_seq = self.next_seq;
        state.outbox_len =
            (state.outbox_len + self.outbox_added).saturating_sub(self.outbox_removed);
        state.dead_len = (state.dead_len + self.dead_added).saturating_sub(self.dead_removed);
    }
}

/// The outbox value inside a dead value, if both decode.
fn replayable(dead_value: &[u8]) -> Result<&[u8], String> {
    let (_, _, _, outbox_value) = DeadValue::decode(dead_value)?;
    OutboxValue::decode(outbox_value)?;
    Ok(outbox_value)
}

/// Users closed per batch at open: a crash with many users online must not
/// make one giant batch (its memory, its journal write).
pub(crate) const CLOSE_PRESENCE_BATCH_MAX: usize = 1024;

/// At open, after a crash: every user still in the presence set was online
/// when the process died, and no Offline event was written for them. Writes
/// one now (body [`RESTART_OFFLINE_BODY`]) and empties the set, durably, in
/// batches of at most [`CLOSE_PRESENCE_BATCH_MAX`] users, before the store
/// takes requests. With `write_events` off (no Offline events wanted) the
/// set is only emptied. Returns how many events were written.
pub(crate) fn close_presence(
    fjall: &Fjall,
    state: &mut OutboxState,
    event_ids: &mut MessageIdGen,
    write_events: bool,
) -> Result<u64, StoreError> {
    let mut written = 0;
    loop {
        // Each batch takes its users out of the set: the next scan starts
        // with the ones left.
        let mut users = Vec::new();
        let mut batch = fjall.db.batch();
        for guard in fjall.online.iter().take(CLOSE_PRESENCE_BATCH_MAX) {
            let key = guard
                .key()
                .map_err(|error| StoreError::io("reading the presence set", error))?;
            match String::from_utf8(key.to_vec()) {
                Ok(user) if write_events => users.push(user),
                Ok(_) => batch.remove(&fjall.online, key),
                Err(_) => {
                    // No event can name it; it only has to go.
                    tracing::error!(key = ?&*key, "presence set: user id is not UTF-8; dropping it");
                    batch.remove(&fjall.online, key);
                }
            }
        }
        if users.is_empty() && batch.is_empty() {
            break;
        }
        let events: Vec<OutboxEvent> = users
            .into_iter()
            .map(|user| OutboxEvent {
                kind: OutboxKind::Offline,
                key: user,
                due_ms: 0,
                body: RESTART_OFFLINE_BODY.to_vec(),
            })
            .collect();
        let mut work = OutboxBatch::new(state, true);
        work.stage_events(fjall, &mut batch, event_ids, &events, None, now_unix_ms());
        // The Offline events take the users out of the set (in `finish`).
        work.finish(fjall, &mut batch, state);
        batch
            .durability(Some(PersistMode::SyncAll))
            .commit()
            .map_err(|error| StoreError::io("writing Offline events at open", error))?;
        work.apply(state);
        written += work.outbox_added;
    }
    if written > 0 {
        tracing::info!(
            users = written,
            "store: users online when the process stopped get an Offline event"
        );
    }
    Ok(written)
}

/// Outbox records with `seq > after_seq`, ascending, at most `limit`.
pub(crate) fn read_outbox(
    fjall: &Fjall,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<Result<OutboxRecord, Unreadable>>, StoreError> {
    read_seqs(fjall, &fjall.outbox, after_seq, limit, |seq, value| {
        OutboxValue::decode(value).and_then(|value| value.to_record(seq))
    })
}

/// Dead-letter records with `seq > after_seq`, ascending, at most `limit`.
pub(crate) fn read_dead(
    fjall: &Fjall,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<Result<DeadRecord, Unreadable>>, StoreError> {
    read_seqs(fjall, &fjall.dead, after_seq, limit, DeadValue::to_record)
}

/// Records of `keyspace` past `after_seq`, each decoded on its own: one
/// that does not decode is reported in its place, so a reader can move
/// past it (a record whose key is not a seq cannot be named, and is
/// logged and left out).
fn read_seqs<T>(
    fjall: &Fjall,
    keyspace: &fjall::Keyspace,
    after_seq: u64,
    limit: usize,
    decode: impl Fn(u64, &[u8]) -> Result<T, String>,
) -> Result<Vec<Result<T, Unreadable>>, StoreError> {
    let Some(start) = after_seq.checked_add(1) else {
        return Ok(Vec::new());
    };
    let snapshot = fjall.db.snapshot();
    let mut records = Vec::with_capacity(limit.min(1024));
    for guard in snapshot.range(keyspace, seq_key(start)..).take(limit) {
        let (key, value) = guard
            .into_inner()
            .map_err(|error| StoreError::io("reading the outbox", error))?;
        let Some(seq) = seq_key_decode(&key) else {
            tracing::error!(keyspace = %keyspace.name(), key = ?&*key, "outbox: a key that is not a seq, skipped");
            continue;
        };
        records.push(decode(seq, &value).map_err(|reason| Unreadable { seq, reason }));
    }
    Ok(records)
}
