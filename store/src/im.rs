//! The IM layer's keys (`docs/im.md`, "Keys in the store"): conversation
//! records (`im_conv`), each user's view of a conversation (`im_uconv`),
//! each user's conversations in activity order (`im_uact`) and the IM
//! sequence (`meta` `g`).
//!
//! Groups add member tables (`im_member`, held by the writer in
//! [`members::Members`]), the offsets of entries that do not count
//! (`im_nocount`), blocks, contacts and DM policy; the keys are in
//! `keys/group.rs`.
//!
//! The writer stages every IM change of a batch through [`ImBatch`] and
//! writes each key once when the batch is finished, in the same fjall batch
//! as the entries, so after a crash a conversation's record, its users'
//! read positions and its list order agree with its stream. The readers
//! serve [`conv_list`] and [`im_sync`] from one snapshot each.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use fjall::{OwnedWriteBatch, PersistMode};

use ringcast_protocol::envelope::EncodedPush;

use crate::error::StoreError;
use crate::keys::{
    entry_key, im_uact_key, im_uconv_key, im_uconv_key_decode, im_user_prefix, read_u64,
    ConvRecord, ImCounter, UConvRecord, CONV_KIND_GROUP, META_KEY_IM_COUNTER,
};
use crate::recovery::Fjall;

mod cache;
pub(crate) mod members;
mod view;

use cache::ImCache;
use members::Members;
pub(crate) use view::{
    conv_get, conv_list, dm_policy, group_info, group_members, im_receipts, im_sync, pair_list,
    total_unread,
};

/// Most member tables the writer keeps loaded between batches; past it
/// the cache is emptied and tables are loaded again when next touched
/// (one prefix scan each), so memory stays bounded whatever the number
/// of groups.
const MEMBER_TABLES_CACHED_MAX: usize = 4096;

/// An IM keyspace written through [`ImBatch::put_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ImKeyspace {
    Member,
    Uact,
    Block,
    Contact,
    Policy,
}

/// The writer's IM state, loaded at open.
#[derive(Debug, Clone)]
pub(crate) struct ImState {
    pub(crate) counter: ImCounter,
    /// The stream ids that are conversations: they take only IM writes.
    pub(crate) convs: HashSet<u64>,
    /// Member tables loaded so far (at most [`MEMBER_TABLES_CACHED_MAX`]).
    pub(crate) members: HashMap<u64, Arc<Members>>,
    /// Records read or written by committed batches (`im/cache.rs`);
    /// empty while a batch holds it.
    cache: ImCache,
    /// The conversations with an `im_recalled` key (and perhaps some whose
    /// keys retention trimmed since): unread counting reads `im_recalled`
    /// only for these. Exact, unlike the cache: it is loaded at open and
    /// grows with every committed recall.
    recalls: Arc<HashSet<u64>>,
}

pub(crate) fn corrupt(conv: &str, reason: String) -> StoreError {
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
    fill_dm_unread(fjall)?;
    fill_group_counts(fjall)?;
    let mut convs = HashSet::new();
    for guard in fjall.im_conv.iter() {
        let key = guard
            .key()
            .map_err(|error| StoreError::io("loading conversations", error))?;
        let id = read_u64(&key, 0)
            .ok_or_else(|| corrupt("", format!("im_conv key of {} bytes", key.len())))?;
        convs.insert(id);
    }
    Ok(ImState {
        counter,
        convs,
        members: HashMap::new(),
        cache: ImCache::default(),
        recalls: Arc::new(recalled_convs(fjall)?),
    })
}

/// The conversations with at least one `im_recalled` key: one seek per
/// such conversation, not one read per recall.
fn recalled_convs(fjall: &Fjall) -> Result<HashSet<u64>, StoreError> {
    let mut convs = HashSet::new();
    let mut from = 0u64;
    loop {
        let Some(guard) = fjall.im_recalled.range(entry_key(from, 0)..).next() else {
            return Ok(convs);
        };
        let key = guard
            .key()
            .map_err(|error| StoreError::io("loading recalls", error))?;
        let id = read_u64(&key, 0)
            .ok_or_else(|| corrupt("", format!("im_recalled key of {} bytes", key.len())))?;
        convs.insert(id);
        match id.checked_add(1) {
            Some(next) => from = next,
            None => return Ok(convs),
        }
    }
}

/// A user's DM unread total from its stored value (`im_unread`; absent: 0).
pub(crate) fn decode_dm_unread(stored: Option<fjall::Slice>) -> Result<u64, StoreError> {
    match stored {
        None => Ok(0),
        Some(bytes) => read_u64(&bytes, 0)
            .filter(|_| bytes.len() == 8)
            .ok_or_else(|| corrupt("", format!("im_unread value of {} bytes", bytes.len()))),
    }
}

/// How many of the `im_recalled` entries in `guards` counted as unread
/// (their value's first byte is 1).
pub(crate) fn counted_recalls(
    guards: impl Iterator<Item = fjall::Guard>,
) -> Result<u64, StoreError> {
    let mut counted = 0u64;
    for guard in guards {
        let value = guard
            .value()
            .map_err(|error| StoreError::io("reading recalls", error))?;
        counted += u64::from(value.first() == Some(&1));
    }
    Ok(counted)
}

/// Fills `im_unread` from the users' DM views when the keyspace is new
/// and conversations exist (a store written before the key): one scan of
/// `im_uconv` and a point read of each DM's record, once.
fn fill_dm_unread(fjall: &Fjall) -> Result<(), StoreError> {
    let io = |error| StoreError::io("filling unread totals", error);
    if fjall.im_unread.first_key_value().is_some() || fjall.im_uconv.first_key_value().is_none() {
        return Ok(());
    }
    let mut totals: HashMap<String, u64> = HashMap::new();
    let mut counts: HashMap<u64, (u64, u64, u64)> = HashMap::new();
    for guard in fjall.im_uconv.iter() {
        let (key, value) = guard.into_inner().map_err(io)?;
        let Some((user, id)) = im_uconv_key_decode(&key) else {
            return Err(corrupt("", format!("im_uconv key of {} bytes", key.len())));
        };
        let view = UConvRecord::decode(&value).map_err(|reason| corrupt("", reason))?;
        if view.kind == CONV_KIND_GROUP {
            continue;
        }
        let (count_total, last_offset, trimmed_count) = match counts.get(&id) {
            Some(count) => *count,
            None => {
                let bytes = fjall
                    .im_conv
                    .get(id.to_be_bytes())
                    .map_err(io)?
                    .ok_or_else(|| corrupt("", format!("conversation {id} has no record")))?;
                let record = ConvRecord::decode(&bytes).map_err(|reason| corrupt("", reason))?;
                let count = (record.count_total, record.last_offset, record.trimmed_count);
                counts.insert(id, count);
                count
            }
        };
        // Messages recalled after the read position no longer count.
        let recalled = if last_offset > view.read_offset {
            counted_recalls(
                fjall
                    .im_recalled
                    .range(entry_key(id, view.read_offset + 1)..=entry_key(id, last_offset)),
            )?
        } else {
            0
        };
        *totals.entry(user.to_owned()).or_default() += count_total
            .saturating_sub(view.read_count.max(trimmed_count))
            .saturating_sub(recalled);
    }
    let mut batch = fjall.db.batch();
    for (user, total) in totals {
        batch.insert(&fjall.im_unread, user.as_bytes(), total.to_be_bytes());
    }
    batch
        .durability(Some(PersistMode::SyncAll))
        .commit()
        .map_err(|error| StoreError::io("filling unread totals", error))
}

/// A user's group count from its stored value (`im_ugroups`; absent: 0).
pub(crate) fn decode_group_count(stored: Option<fjall::Slice>) -> Result<u32, StoreError> {
    match stored {
        None => Ok(0),
        Some(bytes) => <[u8; 4]>::try_from(&*bytes)
            .map(u32::from_be_bytes)
            .map_err(|_| corrupt("", format!("im_ugroups value of {} bytes", bytes.len()))),
    }
}

/// Whether a user's view is that of a current member of a group.
fn is_group_member(view: &UConvRecord) -> bool {
    view.kind == CONV_KIND_GROUP && view.group.is_some_and(|group| !group.left)
}

/// Fills `im_ugroups` from the users' group views when the keyspace is
/// empty and groups exist (a store written before the key): one scan of
/// `im_uconv`, once. Every user with a group view gets a key, 0 included,
/// so the keyspace is not empty afterwards and the scan is not repeated.
fn fill_group_counts(fjall: &Fjall) -> Result<(), StoreError> {
    let io = |error| StoreError::io("filling group counts", error);
    if fjall.im_ugroups.first_key_value().is_some() || fjall.im_member.first_key_value().is_none() {
        return Ok(());
    }
    let mut counts: HashMap<String, u32> = HashMap::new();
    for guard in fjall.im_uconv.iter() {
        let (key, value) = guard.into_inner().map_err(io)?;
        let Some((user, _)) = im_uconv_key_decode(&key) else {
            return Err(corrupt("", format!("im_uconv key of {} bytes", key.len())));
        };
        let view = UConvRecord::decode(&value).map_err(|reason| corrupt("", reason))?;
        if view.kind != CONV_KIND_GROUP {
            continue;
        }
        *counts.entry(user.to_owned()).or_default() += u32::from(is_group_member(&view));
    }
    let mut batch = fjall.db.batch();
    for (user, count) in counts {
        batch.insert(&fjall.im_ugroups, user.as_bytes(), count.to_be_bytes());
    }
    batch
        .durability(Some(PersistMode::SyncAll))
        .commit()
        .map_err(io)
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
    /// Member tables the batch loaded or changed, as it leaves them.
    members: HashMap<u64, Arc<Members>>,
    /// Keys of the other IM keyspaces, as the batch leaves them (`None`:
    /// deleted): one write per key.
    keys: HashMap<(ImKeyspace, Vec<u8>), Option<Vec<u8>>>,
    /// Entries that do not count: `(sid, offset) → count` there.
    nocount: BTreeMap<(u64, u64), u64>,
    /// Conversations a group join started for a user in this batch.
    started: HashMap<String, usize>,
    /// Entries a recall or an edit overwrote: `(sid, offset) → entry`.
    rewritten: HashMap<(u64, u64), Arc<EncodedPush>>,
    /// Recalls: `(sid, offset) → whether the message counted`.
    recalled: BTreeMap<(u64, u64), bool>,
    /// Edits: `(sid, offset) → edits so far`.
    edits: HashMap<(u64, u64), u32>,
    /// Users' DM unread totals (`im_unread`) as the batch leaves them,
    /// with the total before the batch: only a moved one is written.
    dm_unread: HashMap<String, (u64, u64)>,
    /// Users' group counts (`im_ugroups`): (stored, `None` if it has no
    /// key; as the batch leaves it). A user who joins gets a key even if
    /// the batch leaves its count at 0: readers take a missing key for "no
    /// group view at all" (`groups_of` in `im/view.rs`).
    group_counts: HashMap<String, (Option<u32>, u32)>,
    /// The writer's records from before the batch, back in [`ImState`] once
    /// the batch is committed; dropped with a batch that is not.
    cache: ImCache,
    /// [`ImState`]'s conversations with recalls, as before the batch.
    recalls: Arc<HashSet<u64>>,
}

impl ImBatch {
    pub(crate) fn new(state: &mut ImState) -> ImBatch {
        ImBatch {
            gseq: state.counter.gseq,
            convs: HashMap::new(),
            uconvs: HashMap::new(),
            members: HashMap::new(),
            keys: HashMap::new(),
            nocount: BTreeMap::new(),
            started: HashMap::new(),
            rewritten: HashMap::new(),
            recalled: BTreeMap::new(),
            edits: HashMap::new(),
            dm_unread: HashMap::new(),
            group_counts: HashMap::new(),
            cache: ImCache::take(&mut state.cache),
            recalls: Arc::clone(&state.recalls),
        }
    }

    /// How many groups `user` is a member of, as the batch leaves it: a
    /// point read of `im_ugroups` the first time. Loads the count, so
    /// that [`ImBatch::add_group_count`] cannot fail after an entry is
    /// staged.
    pub(crate) fn group_count(&mut self, fjall: &Fjall, user: &str) -> Result<u32, StoreError> {
        if let Some(&(_, count)) = self.group_counts.get(user) {
            return Ok(count);
        }
        let stored = fjall
            .im_ugroups
            .get(user.as_bytes())
            .map_err(|error| StoreError::io("reading a group count", error))?;
        let present = stored.is_some();
        let count = decode_group_count(stored)?;
        self.group_counts
            .insert(user.to_owned(), (present.then_some(count), count));
        Ok(count)
    }

    /// Counts a group `user` joins (`joined`) or whose view closes, when
    /// its view `before` (`None`: it had none) says it changes anything.
    /// The count was loaded with [`ImBatch::group_count`].
    pub(crate) fn add_group_count(
        &mut self,
        user: &str,
        before: Option<&UConvRecord>,
        joined: bool,
    ) {
        let was_member = before.is_some_and(is_group_member);
        let (stored, count) = self
            .group_counts
            .get_mut(user)
            .expect("a group count is loaded before it changes");
        if joined && stored.is_none() {
            // No stored count can equal this one, so the key is written
            // even if a removal in this batch brings the count back to 0.
            *stored = Some(u32::MAX);
        }
        if was_member == joined {
            return;
        }
        debug_assert!(
            joined || *count > 0,
            "a member's group count is 0 on its removal"
        );
        *count = if joined {
            count.saturating_add(1)
        } else {
            count.saturating_sub(1)
        };
    }

    /// Loads `user`'s DM unread total into the batch (a point read the
    /// first time), so that [`ImBatch::add_dm_unread`] cannot fail after an
    /// entry is staged.
    pub(crate) fn load_dm_unread(&mut self, fjall: &Fjall, user: &str) -> Result<(), StoreError> {
        if self.dm_unread.contains_key(user) {
            return Ok(());
        }
        let stored = match self.cache.dm_unread.get(user) {
            Some(&total) => total,
            None => {
                let stored = fjall
                    .im_unread
                    .get(user.as_bytes())
                    .map_err(|error| StoreError::io("reading unread", error))?;
                decode_dm_unread(stored)?
            }
        };
        self.dm_unread.insert(user.to_owned(), (stored, stored));
        Ok(())
    }

    /// Moves `user`'s DM unread total by `delta` (loaded first with
    /// [`ImBatch::load_dm_unread`]; floored at 0).
    pub(crate) fn add_dm_unread(&mut self, user: &str, delta: i64) {
        if delta == 0 {
            return;
        }
        let (total, _) = self.dm_unread.entry(user.to_owned()).or_default();
        *total = total.saturating_add_signed(delta);
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
        &mut self,
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
        if let Some(record) = self.cache.convs.get(&id) {
            return Ok(Some(record.clone()));
        }
        let stored = fjall
            .im_conv
            .get(id.to_be_bytes())
            .map_err(|error| StoreError::io("reading a conversation", error))?
            .ok_or_else(|| corrupt(name, "conversation record missing".to_owned()))?;
        let record = ConvRecord::decode(&stored).map_err(|reason| corrupt(name, reason))?;
        self.cache.convs.insert(id, record.clone());
        Ok(Some(record))
    }

    /// The user's view of conversation `id` as the batch leaves it so far.
    pub(crate) fn uconv(
        &mut self,
        fjall: &Fjall,
        user: &str,
        id: u64,
    ) -> Result<Option<UConvRecord>, StoreError> {
        let key = (user.to_owned(), id);
        if let Some(record) = self.uconvs.get(&key) {
            return Ok(Some(record.clone()));
        }
        if let Some(record) = self.cache.uconvs.get(&key) {
            return Ok(record.clone());
        }
        let stored = fjall
            .im_uconv
            .get(im_uconv_key(user, id))
            .map_err(|error| StoreError::io("reading a read position", error))?;
        let record = match stored {
            None => None,
            Some(bytes) => Some(UConvRecord::decode(&bytes).map_err(|reason| corrupt("", reason))?),
        };
        self.cache.uconvs.insert(key, record.clone());
        Ok(record)
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
        let mut count = started + self.started.get(user).copied().unwrap_or(0);
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
            // A group's place in its members' lists is its record's time,
            // merged at each read: a message writes no key per member.
            if record.kind == CONV_KIND_GROUP {
                continue;
            }
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
        for ((keyspace, key), value) in &self.keys {
            let keyspace = match keyspace {
                ImKeyspace::Member => &fjall.im_member,
                ImKeyspace::Uact => &fjall.im_uact,
                ImKeyspace::Block => &fjall.im_block,
                ImKeyspace::Contact => &fjall.im_contact,
                ImKeyspace::Policy => &fjall.im_policy,
            };
            match value {
                Some(value) => batch.insert(keyspace, key.as_slice(), value.as_slice()),
                None => batch.remove(keyspace, key.as_slice()),
            }
        }
        for (user, (total, stored)) in &self.dm_unread {
            if total != stored {
                batch.insert(&fjall.im_unread, user.as_bytes(), total.to_be_bytes());
            }
        }
        for (user, (stored, count)) in &self.group_counts {
            // A user with no key whose count a join did not touch (a cap
            // check only) stays without one.
            if stored.is_some_and(|stored| stored != *count) {
                batch.insert(&fjall.im_ugroups, user.as_bytes(), count.to_be_bytes());
            }
        }
        for (&(id, offset), count) in &self.nocount {
            batch.insert(
                &fjall.im_nocount,
                entry_key(id, offset),
                count.to_be_bytes(),
            );
        }
        for (&(id, offset), push) in &self.rewritten {
            batch.insert(&fjall.entries, entry_key(id, offset), push.as_bytes());
        }
        for (&(id, offset), &counted) in &self.recalled {
            batch.insert(
                &fjall.im_recalled,
                entry_key(id, offset),
                [u8::from(counted)],
            );
        }
        for (&(id, offset), edits) in &self.edits {
            batch.insert(&fjall.im_edits, entry_key(id, offset), edits.to_be_bytes());
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
    pub(crate) fn apply(&mut self, state: &mut ImState) {
        assert!(self.gseq >= state.counter.gseq);
        state.counter.gseq = self.gseq;
        state.convs.extend(self.convs.keys());
        if state.members.len() + self.members.len() > MEMBER_TABLES_CACHED_MAX {
            state.members.clear();
        }
        state.members.extend(self.members.drain());
        let mut cache = std::mem::take(&mut self.cache);
        cache
            .convs
            .extend(self.convs.drain().map(|(id, change)| (id, change.record)));
        cache
            .uconvs
            .extend(self.uconvs.drain().map(|(key, record)| (key, Some(record))));
        cache.dm_unread.extend(
            self.dm_unread
                .drain()
                .map(|(user, (total, _))| (user, total)),
        );
        cache.keys.extend(
            self.keys
                .drain()
                .filter(|((keyspace, _), _)| keyspace.caches()),
        );
        cache.bound();
        state.cache = cache;
        // The batch's handle goes first, so the set is not copied.
        self.recalls = Arc::default();
        if !self.recalled.is_empty() {
            Arc::make_mut(&mut state.recalls).extend(self.recalled.keys().map(|&(id, _)| id));
        }
    }

    /// The member table of group `id` as the batch leaves it so far.
    pub(crate) fn members(
        &mut self,
        fjall: &Fjall,
        state: &ImState,
        id: u64,
        conv: &str,
    ) -> Result<Arc<Members>, StoreError> {
        if let Some(members) = self.members.get(&id).or_else(|| state.members.get(&id)) {
            return Ok(Arc::clone(members));
        }
        let members = Arc::new(Members::load(fjall, id, conv)?);
        self.members.insert(id, Arc::clone(&members));
        Ok(members)
    }

    pub(crate) fn put_members(&mut self, id: u64, members: Members) {
        self.members.insert(id, Arc::new(members));
    }

    /// A key of another IM keyspace as the batch leaves it so far.
    pub(crate) fn get_key(
        &mut self,
        fjall: &Fjall,
        keyspace: ImKeyspace,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let cache_key = (keyspace, key.to_vec());
        if let Some(value) = self.keys.get(&cache_key) {
            return Ok(value.clone());
        }
        if let Some(value) = self.cache.keys.get(&cache_key) {
            return Ok(value.clone());
        }
        let stored = match keyspace {
            ImKeyspace::Member => &fjall.im_member,
            ImKeyspace::Uact => &fjall.im_uact,
            ImKeyspace::Block => &fjall.im_block,
            ImKeyspace::Contact => &fjall.im_contact,
            ImKeyspace::Policy => &fjall.im_policy,
        }
        .get(key)
        .map_err(|error| StoreError::io("reading an IM key", error))?;
        let value = stored.map(|value| value.to_vec());
        if keyspace.caches() {
            self.cache.keys.insert(cache_key, value.clone());
        }
        Ok(value)
    }

    /// Stages a key of another IM keyspace (`None`: delete it).
    pub(crate) fn put_key(&mut self, keyspace: ImKeyspace, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.keys.insert((keyspace, key), value);
    }

    /// Marks entry `offset` of `id` as not counting; `count` is the count
    /// there (the counting entries up to it).
    pub(crate) fn put_nocount(&mut self, id: u64, offset: u64, count: u64) {
        self.nocount.insert((id, offset), count);
    }

    /// A group join started a conversation for `user` in this batch.
    pub(crate) fn count_started(&mut self, user: &str) {
        *self.started.entry(user.to_owned()).or_default() += 1;
    }

    /// The `count` of entry `offset` of conversation `id` (whose record is
    /// `record`): the nearest non-counting entry at or before it holds
    /// the count there, and every entry after it up to `offset` counts.
    /// One seek, however long the group's history.
    pub(crate) fn count_at(
        &self,
        fjall: &Fjall,
        id: u64,
        record: &ConvRecord,
        offset: u64,
    ) -> Result<u64, StoreError> {
        if offset >= record.last_offset {
            return Ok(record.count_total);
        }
        let pending = self
            .nocount
            .range((id, 0)..=(id, offset))
            .next_back()
            .map(|(&(_, at), &count)| (at, count));
        let stored = match fjall
            .im_nocount
            .range(entry_key(id, 0)..=entry_key(id, offset))
            .next_back()
        {
            None => None,
            Some(guard) => {
                let (key, value) = guard
                    .into_inner()
                    .map_err(|error| StoreError::io("reading counts", error))?;
                let at = read_u64(&key, 8)
                    .ok_or_else(|| corrupt(&record.name, "im_nocount key".to_owned()))?;
                let count = read_u64(&value, 0)
                    .ok_or_else(|| corrupt(&record.name, "im_nocount value".to_owned()))?;
                Some((at, count))
            }
        };
        Ok(match pending.max(stored) {
            None => offset,
            Some((at, count)) => count + (offset - at),
        })
    }

    /// Entry `offset` of `id` as the batch leaves it so far (`None`:
    /// trimmed, or not written yet).
    pub(crate) fn entry(
        &self,
        fjall: &Fjall,
        id: u64,
        offset: u64,
        conv: &str,
    ) -> Result<Option<EncodedPush>, StoreError> {
        if let Some(push) = self.rewritten.get(&(id, offset)) {
            return Ok(Some(EncodedPush::clone(push)));
        }
        let stored = fjall
            .entries
            .get(entry_key(id, offset))
            .map_err(|error| StoreError::io("reading an entry", error))?;
        stored
            .map(|bytes| {
                EncodedPush::from_untrusted(&bytes).map_err(|error| StoreError::Corrupt {
                    stream: conv.to_owned(),
                    offset,
                    reason: error.to_string(),
                })
            })
            .transpose()
    }

    /// Overwrites entry `offset` of `id` in this batch.
    pub(crate) fn put_rewritten(&mut self, id: u64, offset: u64, push: Arc<EncodedPush>) {
        self.rewritten.insert((id, offset), push);
    }

    /// Whether entry `offset` of `id` does not count (a point read).
    pub(crate) fn is_nocount(
        &self,
        fjall: &Fjall,
        id: u64,
        offset: u64,
    ) -> Result<bool, StoreError> {
        if self.nocount.contains_key(&(id, offset)) {
            return Ok(true);
        }
        fjall
            .im_nocount
            .contains_key(entry_key(id, offset))
            .map_err(|error| StoreError::io("reading counts", error))
    }

    /// Whether message `offset` of `id` is recalled (a point read).
    pub(crate) fn is_recalled(
        &self,
        fjall: &Fjall,
        id: u64,
        offset: u64,
    ) -> Result<bool, StoreError> {
        if self.recalled.contains_key(&(id, offset)) {
            return Ok(true);
        }
        if !self.recalls.contains(&id) {
            return Ok(false);
        }
        fjall
            .im_recalled
            .contains_key(entry_key(id, offset))
            .map_err(|error| StoreError::io("reading recalls", error))
    }

    /// Marks message `offset` of `id` recalled; `counted`: it counted as unread.
    pub(crate) fn put_recalled(&mut self, id: u64, offset: u64, counted: bool) {
        self.recalled.insert((id, offset), counted);
    }

    /// The edits of message `offset` of `id` so far.
    pub(crate) fn edits_of(&self, fjall: &Fjall, id: u64, offset: u64) -> Result<u32, StoreError> {
        if let Some(&edits) = self.edits.get(&(id, offset)) {
            return Ok(edits);
        }
        let stored = fjall
            .im_edits
            .get(entry_key(id, offset))
            .map_err(|error| StoreError::io("reading edits", error))?;
        Ok(stored
            .and_then(|bytes| <[u8; 4]>::try_from(&*bytes).ok())
            .map_or(0, u32::from_be_bytes))
    }

    pub(crate) fn put_edits(&mut self, id: u64, offset: u64, edits: u32) {
        self.edits.insert((id, offset), edits);
    }

    /// Recalled messages that counted in `(after, upto]` of `id`: what
    /// unread no longer counts (`docs/im.md`, "Unread counts").
    pub(crate) fn recalled_between(
        &self,
        fjall: &Fjall,
        id: u64,
        after: u64,
        upto: u64,
    ) -> Result<u64, StoreError> {
        if upto <= after {
            return Ok(0);
        }
        let mut seen: BTreeMap<u64, bool> = self
            .recalled
            .range((id, after + 1)..=(id, upto))
            .map(|(&(_, offset), &counted)| (offset, counted))
            .collect();
        if !self.recalls.contains(&id) {
            return Ok(seen.values().filter(|&&counted| counted).count() as u64);
        }
        for guard in fjall
            .im_recalled
            .range(entry_key(id, after + 1)..=entry_key(id, upto))
        {
            let (key, value) = guard
                .into_inner()
                .map_err(|error| StoreError::io("reading recalls", error))?;
            let offset =
                read_u64(&key, 8).ok_or_else(|| corrupt("", "im_recalled key".to_owned()))?;
            seen.entry(offset).or_insert(value.first() == Some(&1));
        }
        Ok(seen.values().filter(|&&counted| counted).count() as u64)
    }

    /// The newest message of `id` before `before` that is neither an
    /// entry that does not count nor recalled (0: none): the
    /// conversation's last message once the one at `before` is recalled.
    /// Two point reads per entry walked back over, so it costs the run of
    /// skipped entries (usually none), not the stream's length. Nothing
    /// before `first_offset` is a candidate: retention trimmed it (and its
    /// `im_recalled` key, so it would read as a message).
    pub(crate) fn last_message_before(
        &self,
        fjall: &Fjall,
        id: u64,
        before: u64,
        first_offset: u64,
    ) -> Result<u64, StoreError> {
        let mut candidate = before.saturating_sub(1);
        while candidate > 0 {
            if candidate < first_offset {
                return Ok(0);
            }
            if self.is_nocount(fjall, id, candidate)? || self.is_recalled(fjall, id, candidate)? {
                candidate -= 1;
                continue;
            }
            break;
        }
        Ok(candidate)
    }
}
