//! The IM layer's keys (`docs/im.md`, "Keys in the store"): conversation
//! records (`im_conv`), each user's view of a conversation (`im_uconv`),
//! each user's conversations in activity order (`im_uact`) and the IM
//! sequence (`meta` `g`).
//!
//! The writer stages every IM change of a batch through [`ImBatch`] and
//! writes each key once when the batch is finished, in the same fjall batch
//! as the entries, so after a crash a conversation's record, its users'
//! read positions and its list order agree with its stream. The readers
//! serve [`conv_list`] and [`im_sync`] from one snapshot each.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::ops::Bound;

use fjall::{OwnedWriteBatch, PersistMode, Readable};

use crate::api::{ConvPage, ConvSummary, ImSync, SyncToken};
use crate::error::StoreError;
use crate::keys::{
    im_uact_key, im_uact_key_decode, im_uconv_key, im_uconv_key_decode, im_user_prefix,
    meta_id_key, read_u64, ConvRecord, ImCounter, StreamMeta, UConvRecord, META_KEY_IM_COUNTER,
    META_PREFIX_STREAM,
};
use crate::recovery::Fjall;

/// The writer's IM state, loaded at open.
#[derive(Debug, Clone)]
pub(crate) struct ImState {
    pub(crate) counter: ImCounter,
    /// The stream ids that are conversations: they take only IM writes.
    pub(crate) convs: HashSet<u64>,
}

fn corrupt(conv: &str, reason: String) -> StoreError {
    StoreError::Corrupt {
        stream: conv.to_owned(),
        offset: 0,
        reason,
    }
}

/// A store id no other store is likely to have: std's randomly keyed
/// hasher over the time and the process id (no random-number crate needed
/// for one number per store's life).
fn random_store_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let id = std::collections::hash_map::RandomState::new().hash_one((nanos, std::process::id()));
    id.max(1)
}

/// Loads the IM counter (creating it, with a new store id, durably, the
/// first time) and the set of conversations: one key scan of `im_conv`.
pub(crate) fn recover_im(fjall: &Fjall) -> Result<ImState, StoreError> {
    let stored = fjall
        .meta
        .get(META_KEY_IM_COUNTER)
        .map_err(|error| StoreError::io("loading the IM counter", error))?;
    let counter = match stored {
        Some(bytes) => ImCounter::decode(&bytes).map_err(|reason| corrupt("", reason))?,
        None => {
            let counter = ImCounter {
                store_id: random_store_id(),
                gseq: 0,
            };
            let mut batch = fjall.db.batch();
            batch.insert(&fjall.meta, META_KEY_IM_COUNTER, counter.encode());
            batch
                .durability(Some(PersistMode::SyncAll))
                .commit()
                .map_err(|error| StoreError::io("creating the IM counter", error))?;
            counter
        }
    };
    let mut convs = HashSet::new();
    for guard in fjall.im_conv.iter() {
        let key = guard
            .key()
            .map_err(|error| StoreError::io("loading conversations", error))?;
        let id = read_u64(&key, 0)
            .ok_or_else(|| corrupt("", format!("im_conv key of {} bytes", key.len())))?;
        convs.insert(id);
    }
    Ok(ImState { counter, convs })
}

/// A conversation changed by the batch: its list time before the batch
/// (`None`: new) and its record now.
struct ConvChange {
    stored_time_ms: Option<u64>,
    record: ConvRecord,
}

/// The IM part of one group commit, applied to [`ImState`] only once
/// fjall accepted the batch.
pub(crate) struct ImBatch {
    gseq: u64,
    convs: HashMap<u64, ConvChange>,
    uconvs: HashMap<(String, u64), UConvRecord>,
}

impl ImBatch {
    pub(crate) fn new(state: &ImState) -> ImBatch {
        ImBatch {
            gseq: state.counter.gseq,
            convs: HashMap::new(),
            uconvs: HashMap::new(),
        }
    }

    /// The sequence of the next IM write of the batch.
    pub(crate) fn next_gseq(&mut self) -> u64 {
        let gseq = self.gseq.checked_add(1).unwrap_or(self.gseq);
        assert!(gseq > self.gseq, "IM sequence exhausted");
        self.gseq = gseq;
        gseq
    }

    pub(crate) fn is_conv(&self, state: &ImState, id: u64) -> bool {
        state.convs.contains(&id) || self.convs.contains_key(&id)
    }

    /// The conversation's record as the batch leaves it so far.
    pub(crate) fn conv(
        &self,
        fjall: &Fjall,
        state: &ImState,
        id: u64,
        name: &str,
    ) -> Result<Option<ConvRecord>, StoreError> {
        if let Some(change) = self.convs.get(&id) {
            return Ok(Some(change.record.clone()));
        }
        if !state.convs.contains(&id) {
            return Ok(None);
        }
        let stored = fjall
            .im_conv
            .get(id.to_be_bytes())
            .map_err(|error| StoreError::io("reading a conversation", error))?
            .ok_or_else(|| corrupt(name, "conversation record missing".to_owned()))?;
        ConvRecord::decode(&stored)
            .map(Some)
            .map_err(|reason| corrupt(name, reason))
    }

    /// The user's view of conversation `id` as the batch leaves it so far.
    pub(crate) fn uconv(
        &self,
        fjall: &Fjall,
        user: &str,
        id: u64,
    ) -> Result<Option<UConvRecord>, StoreError> {
        if let Some(record) = self.uconvs.get(&(user.to_owned(), id)) {
            return Ok(Some(record.clone()));
        }
        let stored = fjall
            .im_uconv
            .get(im_uconv_key(user, id))
            .map_err(|error| StoreError::io("reading a read position", error))?;
        match stored {
            None => Ok(None),
            Some(bytes) => UConvRecord::decode(&bytes)
                .map(Some)
                .map_err(|reason| corrupt("", reason)),
        }
    }

    /// Stages the conversation's record; `stored_time_ms` is its list time
    /// on disk (`None` for a new conversation).
    pub(crate) fn put_conv(&mut self, id: u64, stored_time_ms: Option<u64>, record: ConvRecord) {
        match self.convs.entry(id) {
            Entry::Occupied(mut change) => change.get_mut().record = record,
            Entry::Vacant(slot) => {
                slot.insert(ConvChange {
                    stored_time_ms,
                    record,
                });
            }
        }
    }

    /// Whether `user` has at least `cap` conversations, counting those the
    /// batch starts: a key scan of the user's `im_uconv`, stopped at `cap`.
    pub(crate) fn at_conv_cap(
        &self,
        fjall: &Fjall,
        user: &str,
        cap: usize,
    ) -> Result<bool, StoreError> {
        let started = self
            .convs
            .values()
            .filter(|change| change.stored_time_ms.is_none())
            .filter(|change| change.record.pair.0 == user || change.record.pair.1 == user)
            .count();
        let mut count = started;
        for guard in fjall.im_uconv.prefix(im_user_prefix(user)) {
            if count >= cap {
                break;
            }
            guard
                .key()
                .map_err(|error| StoreError::io("counting conversations", error))?;
            count += 1;
        }
        Ok(count >= cap)
    }

    pub(crate) fn put_uconv(&mut self, user: &str, id: u64, record: UConvRecord) {
        self.uconvs.insert((user.to_owned(), id), record);
    }

    /// Writes what the batch decided, once per key (one fjall batch must
    /// not hold two writes of one key): records, the list order of both
    /// users of each changed conversation, and the counter.
    pub(crate) fn finish(&self, fjall: &Fjall, batch: &mut OwnedWriteBatch, state: &ImState) {
        for (&id, change) in &self.convs {
            let record = &change.record;
            batch.insert(&fjall.im_conv, id.to_be_bytes(), record.encode());
            let (a, b) = &record.pair;
            let users: &[&String] = if a == b { &[a] } else { &[a, b] };
            for user in users {
                if change.stored_time_ms == Some(record.last_time_ms) {
                    continue;
                }
                if let Some(stored) = change.stored_time_ms {
                    batch.remove(&fjall.im_uact, im_uact_key(user, stored, id));
                }
                batch.insert(
                    &fjall.im_uact,
                    im_uact_key(user, record.last_time_ms, id),
                    [],
                );
            }
        }
        for ((user, id), record) in &self.uconvs {
            batch.insert(&fjall.im_uconv, im_uconv_key(user, *id), record.encode());
        }
        if self.gseq != state.counter.gseq {
            let counter = ImCounter {
                gseq: self.gseq,
                ..state.counter
            };
            batch.insert(&fjall.meta, META_KEY_IM_COUNTER, counter.encode());
        }
    }

    /// The batch is committed: its sequence and conversations become the store's.
    pub(crate) fn apply(&self, state: &mut ImState) {
        assert!(self.gseq >= state.counter.gseq);
        state.counter.gseq = self.gseq;
        state.convs.extend(self.convs.keys());
    }
}

/// Reads of one snapshot: a conversation as `user` sees it.
struct SnapshotReader<'a> {
    fjall: &'a Fjall,
    snapshot: fjall::Snapshot,
}

impl SnapshotReader<'_> {
    fn get(
        &self,
        keyspace: &fjall::Keyspace,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<fjall::Slice>, StoreError> {
        self.snapshot
            .get(keyspace, key)
            .map_err(|error| StoreError::io(what, error))
    }

    fn conv(&self, id: u64) -> Result<ConvRecord, StoreError> {
        let bytes = self
            .get(
                &self.fjall.im_conv,
                &id.to_be_bytes(),
                "reading a conversation",
            )?
            .ok_or_else(|| corrupt("", format!("conversation {id} has no record")))?;
        ConvRecord::decode(&bytes).map_err(|reason| corrupt("", reason))
    }

    fn summary(
        &self,
        id: u64,
        conv: ConvRecord,
        uconv: UConvRecord,
    ) -> Result<ConvSummary, StoreError> {
        let meta = self.get(
            &self.fjall.meta,
            &meta_id_key(META_PREFIX_STREAM, id),
            "reading stream meta",
        )?;
        let epoch = match meta {
            Some(bytes) => {
                StreamMeta::decode(&bytes)
                    .map_err(|reason| corrupt(&conv.name, reason))?
                    .epoch
            }
            None => return Err(corrupt(&conv.name, "conversation has no meta".to_owned())),
        };
        Ok(ConvSummary {
            unread: conv.count_total.saturating_sub(uconv.read_count),
            conv: conv.name,
            sid: id,
            peer: uconv.peer,
            epoch,
            last_offset: conv.last_offset,
            last_time_ms: conv.last_time_ms,
            last_msg_offset: conv.last_msg_offset,
            count_total: conv.count_total,
            read_offset: uconv.read_offset,
            changed_gseq: uconv.changed_gseq,
        })
    }

    /// Every conversation of `user` with its view: one prefix scan of
    /// `im_uconv` and a point read of each record.
    fn all_of(&self, user: &str) -> Result<Vec<(u64, ConvRecord, UConvRecord)>, StoreError> {
        let mut all = Vec::new();
        for guard in self
            .snapshot
            .prefix(&self.fjall.im_uconv, im_user_prefix(user))
        {
            let (key, value) = guard
                .into_inner()
                .map_err(|error| StoreError::io("reading read positions", error))?;
            // Another user whose id starts with this one's bytes cannot
            // match: the prefix holds the length.
            let Some((_, id)) = im_uconv_key_decode(&key) else {
                return Err(corrupt("", format!("im_uconv key of {} bytes", key.len())));
            };
            let uconv = UConvRecord::decode(&value).map_err(|reason| corrupt("", reason))?;
            all.push((id, self.conv(id)?, uconv));
        }
        Ok(all)
    }

    fn uconv(&self, user: &str, id: u64) -> Result<UConvRecord, StoreError> {
        let bytes = self
            .get(
                &self.fjall.im_uconv,
                &im_uconv_key(user, id),
                "reading a read position",
            )?
            .ok_or_else(|| corrupt("", format!("conversation {id} in the list, no position")))?;
        UConvRecord::decode(&bytes).map_err(|reason| corrupt("", reason))
    }
}

fn total_unread(all: &[(u64, ConvRecord, UConvRecord)]) -> u64 {
    all.iter()
        .map(|(_, conv, uconv)| conv.count_total.saturating_sub(uconv.read_count))
        .sum()
}

/// A page of `user`'s conversations after `cursor`, newest activity first.
pub(crate) fn conv_list(
    fjall: &Fjall,
    user: &str,
    cursor: Option<(u64, u64)>,
    limit: usize,
) -> Result<ConvPage, StoreError> {
    let reader = SnapshotReader {
        fjall,
        snapshot: fjall.db.snapshot(),
    };
    let prefix = im_user_prefix(user);
    let start = match cursor {
        None => Bound::Included(prefix.clone()),
        Some((time_ms, id)) => Bound::Excluded(im_uact_key(user, time_ms, id)),
    };
    let mut convs = Vec::with_capacity(limit.min(1024));
    let mut next = None;
    for guard in reader
        .snapshot
        .range(&fjall.im_uact, (start, Bound::Unbounded))
    {
        let key = guard
            .key()
            .map_err(|error| StoreError::io("reading the conversation list", error))?;
        if !key.starts_with(&prefix) {
            break;
        }
        let Some((_, time_ms, id)) = im_uact_key_decode(&key) else {
            return Err(corrupt("", format!("im_uact key of {} bytes", key.len())));
        };
        let conv = reader.conv(id)?;
        let uconv = reader.uconv(user, id)?;
        convs.push(reader.summary(id, conv, uconv)?);
        if convs.len() == limit {
            next = Some((time_ms, id));
            break;
        }
    }
    let all = reader.all_of(user)?;
    Ok(ConvPage {
        convs,
        next,
        total_unread: total_unread(&all),
    })
}

/// What changed for `user`, from one snapshot.
///
/// With a token of this store: the conversations whose view changed after
/// it, at most `limit`, the oldest changes first so that `more` and the
/// token page exactly (call again from the token).
///
/// Without a token, or with one this store cannot continue from
/// ([`ImSync::reset`]): the newest page of the conversation list by
/// activity, and the snapshot's token; `more` then says the list goes on,
/// and the client pages it with `conv_list` from the last conversation's
/// `(last_time_ms, sid)`.
pub(crate) fn im_sync(
    fjall: &Fjall,
    user: &str,
    since: Option<SyncToken>,
    limit: usize,
) -> Result<ImSync, StoreError> {
    let reader = SnapshotReader {
        fjall,
        snapshot: fjall.db.snapshot(),
    };
    let counter = reader
        .get(&fjall.meta, META_KEY_IM_COUNTER, "reading the IM counter")?
        .ok_or_else(|| corrupt("", "IM counter missing".to_owned()))?;
    let counter = ImCounter::decode(&counter).map_err(|reason| corrupt("", reason))?;
    // A token ahead of the sequence comes from before a restore of this
    // store: continuing from it would skip the changes made since.
    let reset =
        since.is_some_and(|token| token.store_id != counter.store_id || token.gseq > counter.gseq);
    let since_gseq = since.filter(|_| !reset).map(|token| token.gseq);
    let all = reader.all_of(user)?;
    let total = total_unread(&all);
    let (changed, more, gseq) = match since_gseq {
        None => {
            let mut newest = all;
            newest.sort_by_key(|(id, conv, _)| std::cmp::Reverse((conv.last_time_ms, *id)));
            let more = newest.len() > limit;
            newest.truncate(limit);
            (newest, more, counter.gseq)
        }
        Some(since_gseq) => {
            let mut changed: Vec<_> = all
                .into_iter()
                .filter(|(_, _, uconv)| uconv.changed_gseq > since_gseq)
                .collect();
            changed.sort_by_key(|(_, _, uconv)| uconv.changed_gseq);
            let more = changed.len() > limit;
            changed.truncate(limit);
            let gseq = if more {
                changed
                    .last()
                    .map_or(since_gseq, |(_, _, uconv)| uconv.changed_gseq)
            } else {
                // Nothing past the page: everything up to the snapshot's counter.
                counter.gseq
            };
            (changed, more, gseq)
        }
    };
    let mut convs = changed
        .into_iter()
        .map(|(id, conv, uconv)| reader.summary(id, conv, uconv))
        .collect::<Result<Vec<_>, _>>()?;
    convs.sort_by_key(|conv| std::cmp::Reverse((conv.last_time_ms, conv.sid)));
    Ok(ImSync {
        convs,
        token: SyncToken {
            store_id: counter.store_id,
            gseq,
        },
        more,
        reset,
        total_unread: total,
    })
}
