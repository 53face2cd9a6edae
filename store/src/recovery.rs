//! Opening the database and checking it: the fjall handles every thread
//! shares, and the open-time pass that loads every stream's meta and repairs
//! streams whose meta disagrees with their entries (new epoch), so readers
//! never serve offsets from a lineage that was lost.
//!
//! The check costs two seeks per stream at open; a store with millions of
//! streams opens in seconds, not milliseconds. Acceptable for a process
//! that opens once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use ringcast_protocol::envelope::EncodedPush;

use crate::clock::EpochGen;
use crate::error::StoreError;
use crate::keys::{
    entry_key_decode, meta_id_key, read_u64, seq_key_decode, StreamMeta, KEYSPACE_CURSORS,
    KEYSPACE_DEAD, KEYSPACE_DEDUP, KEYSPACE_DEDUP_BY_TIME, KEYSPACE_ENTRIES, KEYSPACE_IM_BLOCK,
    KEYSPACE_IM_CONTACT, KEYSPACE_IM_CONV, KEYSPACE_IM_EDITS, KEYSPACE_IM_MEMBER,
    KEYSPACE_IM_NOCOUNT, KEYSPACE_IM_POLICY, KEYSPACE_IM_RECALLED, KEYSPACE_IM_UACT,
    KEYSPACE_IM_UCONV, KEYSPACE_IM_UGROUPS, KEYSPACE_IM_UNREAD, KEYSPACE_META, KEYSPACE_ONLINE,
    KEYSPACE_OUTBOX, META_KEY_IM_COUNTER, META_KEY_NEXT_OUTBOX_SEQ, META_KEY_NEXT_STREAM_ID,
    META_PREFIX_DROPPED, META_PREFIX_NAME, META_PREFIX_STREAM,
};

/// The database and its keyspaces. Cheap to clone (fjall handles are `Arc`s).
#[derive(Clone)]
pub(crate) struct Fjall {
    pub(crate) db: Database,
    pub(crate) meta: Keyspace,
    pub(crate) entries: Keyspace,
    pub(crate) dedup: Keyspace,
    pub(crate) dedup_by_time: Keyspace,
    pub(crate) cursors: Keyspace,
    pub(crate) outbox: Keyspace,
    pub(crate) dead: Keyspace,
    pub(crate) online: Keyspace,
    pub(crate) im_conv: Keyspace,
    pub(crate) im_uconv: Keyspace,
    pub(crate) im_uact: Keyspace,
    pub(crate) im_member: Keyspace,
    pub(crate) im_nocount: Keyspace,
    pub(crate) im_recalled: Keyspace,
    pub(crate) im_edits: Keyspace,
    pub(crate) im_block: Keyspace,
    pub(crate) im_contact: Keyspace,
    pub(crate) im_policy: Keyspace,
    pub(crate) im_unread: Keyspace,
    pub(crate) im_ugroups: Keyspace,
}

/// Where the outbox stands: the writer's counters, loaded at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutboxState {
    /// The seq the next outbox record gets; above every seq ever written.
    pub(crate) next_seq: u64,
    pub(crate) outbox_len: u64,
    pub(crate) dead_len: u64,
}

/// What the writer needs to start: every stream, by id and by name.
pub(crate) struct Recovered {
    pub(crate) streams: HashMap<u64, StreamMeta>,
    pub(crate) names: HashMap<String, u64>,
    pub(crate) next_stream_id: u64,
    /// Ids of reset streams whose entries and dedup records still exist.
    pub(crate) dropped: Vec<u64>,
    pub(crate) outbox: OutboxState,
    pub(crate) im: crate::im::ImState,
}

impl Fjall {
    pub(crate) fn open(
        path: &std::path::Path,
        memtable_bytes_max: u64,
    ) -> Result<Fjall, StoreError> {
        let db = Database::builder(path)
            .open()
            .map_err(|error| StoreError::io("opening the database", error))?;
        let keyspace = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(memtable_bytes_max)
            })
            .map_err(|error| StoreError::io("opening a keyspace", error))
        };
        Ok(Fjall {
            meta: keyspace(KEYSPACE_META)?,
            entries: keyspace(KEYSPACE_ENTRIES)?,
            dedup: keyspace(KEYSPACE_DEDUP)?,
            dedup_by_time: keyspace(KEYSPACE_DEDUP_BY_TIME)?,
            cursors: keyspace(KEYSPACE_CURSORS)?,
            outbox: keyspace(KEYSPACE_OUTBOX)?,
            dead: keyspace(KEYSPACE_DEAD)?,
            online: keyspace(KEYSPACE_ONLINE)?,
            im_conv: keyspace(KEYSPACE_IM_CONV)?,
            im_uconv: keyspace(KEYSPACE_IM_UCONV)?,
            im_uact: keyspace(KEYSPACE_IM_UACT)?,
            im_member: keyspace(KEYSPACE_IM_MEMBER)?,
            im_nocount: keyspace(KEYSPACE_IM_NOCOUNT)?,
            im_recalled: keyspace(KEYSPACE_IM_RECALLED)?,
            im_edits: keyspace(KEYSPACE_IM_EDITS)?,
            im_block: keyspace(KEYSPACE_IM_BLOCK)?,
            im_contact: keyspace(KEYSPACE_IM_CONTACT)?,
            im_policy: keyspace(KEYSPACE_IM_POLICY)?,
            im_unread: keyspace(KEYSPACE_IM_UNREAD)?,
            im_ugroups: keyspace(KEYSPACE_IM_UGROUPS)?,
            db,
        })
    }
}

/// Opens the database and loads every stream: what [`crate::Store::open`]
/// does first, and what the writer does again to recover from a transient
/// failure.
pub(crate) fn open_and_recover(
    config: &crate::StoreConfig,
    epochs: &mut EpochGen,
) -> Result<(Fjall, Recovered), StoreError> {
    let fjall = Fjall::open(&config.path, config.memtable_bytes_max)?;
    let recovered = recover(&fjall, epochs)?;
    Ok((fjall, recovered))
}

/// The open database, where the readers find it; empty while the writer
/// reopens it.
///
/// A lock, not a lock-free cell: a reader holds it only to clone an `Arc`
/// once per request (history reads and cursor lookups, not the per-message
/// path), and the writer takes it for writing only when it swaps the
/// database, so nobody ever waits on it for long.
#[derive(Default)]
pub(crate) struct FjallSlot(RwLock<Option<Arc<Fjall>>>);

impl FjallSlot {
    /// The open database, or `None` while it is being reopened.
    pub(crate) fn get(&self) -> Option<Arc<Fjall>> {
        match self.0.read() {
            Ok(slot) => slot.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `fjall` in the slot; returns what was there.
    pub(crate) fn replace(&self, fjall: Option<Arc<Fjall>>) -> Option<Arc<Fjall>> {
        match self.0.write() {
            Ok(mut slot) => std::mem::replace(&mut *slot, fjall),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), fjall),
        }
    }
}

impl std::fmt::Debug for FjallSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallSlot")
            .field("open", &self.get().is_some())
            .finish()
    }
}

fn corrupt(reason: String) -> StoreError {
    StoreError::Corrupt {
        stream: String::new(),
        offset: 0,
        reason,
    }
}

/// What is stored of one stream: its first and last offsets and the last
/// entry's time.
struct EntryBounds {
    first: u64,
    last: u64,
    last_time_ms: u64,
}

/// The stored bounds of `stream_id`, or `None` if it has no entries. The
/// last entry's value is read with its key (the same seek); one that does
/// not decode gives time 0, so the next append's own time counts.
fn entry_bounds(fjall: &Fjall, stream_id: u64) -> Result<Option<EntryBounds>, StoreError> {
    let prefix = stream_id.to_be_bytes();
    let mut iter = fjall.entries.prefix(prefix);
    let Some(first) = iter.next() else {
        return Ok(None);
    };
    let io = |error| StoreError::io("scanning entries at open", error);
    let decode = |key: &[u8]| -> Result<u64, StoreError> {
        entry_key_decode(key)
            .map(|(_, offset)| offset)
            .ok_or_else(|| corrupt(format!("entries key of {} bytes", key.len())))
    };
    let (first_key, first_value) = first.into_inner().map_err(io)?;
    let (last_key, last_value) = match iter.next_back() {
        Some(guard) => guard.into_inner().map_err(io)?,
        None => (first_key.clone(), first_value),
    };
    let last_time_ms = EncodedPush::from_untrusted(&last_value)
        .map_or(0, |push| push.envelope().time_ms.to_native());
    Ok(Some(EntryBounds {
        first: decode(&first_key)?,
        last: decode(&last_key)?,
        last_time_ms,
    }))
}

/// Loads every stream and repairs inconsistent ones (see the module docs).
pub(crate) fn recover(fjall: &Fjall, epochs: &mut EpochGen) -> Result<Recovered, StoreError> {
    let mut names = HashMap::new();
    let mut streams = HashMap::new();
    let mut dropped = Vec::new();
    let mut stream_id_max = 0u64;
    for guard in fjall.meta.iter() {
        let (key, value) = guard
            .into_inner()
            .map_err(|error| StoreError::io("loading stream meta", error))?;
        match key.first().copied() {
            Some(META_PREFIX_NAME) => {
                let name = key.get(1..).unwrap_or_default();
                let name = String::from_utf8(name.to_vec())
                    .map_err(|_| corrupt("stream name is not UTF-8".to_owned()))?;
                let id = read_u64(&value, 0)
                    .ok_or_else(|| corrupt(format!("stream id of {name:?} is malformed")))?;
                stream_id_max = stream_id_max.max(id);
                names.insert(name, id);
            }
            Some(META_PREFIX_STREAM) => {
                let id = read_u64(&key, 1).ok_or_else(|| corrupt("stream meta key".to_owned()))?;
                stream_id_max = stream_id_max.max(id);
                match StreamMeta::decode(&value) {
                    Ok(meta) => {
                        streams.insert(id, meta);
                    }
                    // Treated like a missing meta below: rebuilt with a new epoch.
                    Err(reason) => {
                        tracing::error!(stream_id = id, %reason, "stream meta unreadable")
                    }
                }
            }
            Some(META_PREFIX_DROPPED) => {
                let id = read_u64(&key, 1).ok_or_else(|| corrupt("dropped key".to_owned()))?;
                stream_id_max = stream_id_max.max(id);
                dropped.push(id);
            }
            _ if &*key == META_KEY_NEXT_STREAM_ID
                || &*key == META_KEY_NEXT_OUTBOX_SEQ
                || &*key == META_KEY_IM_COUNTER => {}
            _ => return Err(corrupt(format!("unknown meta key {:?}", &*key))),
        }
    }
    let next_stored = match fjall.meta.get(META_KEY_NEXT_STREAM_ID) {
        Ok(Some(value)) => {
            read_u64(&value, 0).ok_or_else(|| corrupt("next stream id".to_owned()))?
        }
        Ok(None) => 1,
        Err(error) => return Err(StoreError::io("loading the next stream id", error)),
    };
    // An id is never reused, even if the counter was lost: entries under a
    // reused id would reappear in the new stream.
    let last_entry_id = match fjall.entries.last_key_value() {
        Some(guard) => {
            let key = guard
                .key()
                .map_err(|error| StoreError::io("scanning entries", error))?;
            read_u64(&key, 0).unwrap_or(0)
        }
        None => 0,
    };
    let next_stream_id = next_stored
        .max(stream_id_max.saturating_add(1))
        .max(last_entry_id.saturating_add(1));

    let mut repairs = fjall.db.batch();
    for (name, &id) in &names {
        let stored = streams.get(&id).copied();
        let bounds = entry_bounds(fjall, id)?;
        let last_time_ms = bounds.as_ref().map_or(0, |bounds| bounds.last_time_ms);
        let span = bounds.map(|bounds| (bounds.first, bounds.last));
        let repaired = check_stream(name, stored, span, epochs);
        if repaired != stored {
            if let Some(meta) = repaired {
                repairs.insert(
                    &fjall.meta,
                    meta_id_key(META_PREFIX_STREAM, id),
                    meta.encode(),
                );
                streams.insert(id, meta);
            }
        }
        if let Some(meta) = streams.get_mut(&id) {
            meta.last_time_ms = last_time_ms;
        }
    }
    // Metas without a name cannot be reached; forget them (their entries, if
    // any, become garbage of a dropped stream).
    let named: std::collections::HashSet<u64> = names.values().copied().collect();
    let orphans: Vec<u64> = streams
        .keys()
        .copied()
        .filter(|id| !named.contains(id))
        .collect();
    for id in orphans {
        tracing::warn!(stream_id = id, "stream meta without a name: dropping it");
        streams.remove(&id);
        repairs.remove(&fjall.meta, meta_id_key(META_PREFIX_STREAM, id));
        repairs.insert(&fjall.meta, meta_id_key(META_PREFIX_DROPPED, id), []);
        dropped.push(id);
    }
    repairs = repairs.durability(Some(PersistMode::SyncAll));
    repairs
        .commit()
        .map_err(|error| StoreError::io("writing open-time repairs", error))?;
    Ok(Recovered {
        streams,
        names,
        next_stream_id,
        dropped,
        outbox: recover_outbox(fjall)?,
        im: crate::im::recover_im(fjall)?,
    })
}

/// The outbox's next seq and lengths. Counting every key costs a scan of
/// both keyspaces at open; they hold only what is not delivered yet.
fn recover_outbox(fjall: &Fjall) -> Result<OutboxState, StoreError> {
    let stored = match fjall.meta.get(META_KEY_NEXT_OUTBOX_SEQ) {
        Ok(Some(value)) => {
            read_u64(&value, 0).ok_or_else(|| corrupt("next outbox seq".to_owned()))?
        }
        Ok(None) => 1,
        Err(error) => return Err(StoreError::io("loading the next outbox seq", error)),
    };
    let mut next_seq = stored.max(1);
    let mut lens = [0u64; 2];
    for (keyspace, len) in [&fjall.outbox, &fjall.dead].into_iter().zip(&mut lens) {
        // A seq is never reused, even if the counter was lost: a sender
        // past it would skip the new record.
        if let Some(guard) = keyspace.last_key_value() {
            let key = guard
                .key()
                .map_err(|error| StoreError::io("scanning the outbox", error))?;
            let seq = seq_key_decode(&key)
                .ok_or_else(|| corrupt(format!("outbox key of {} bytes", key.len())))?;
            next_seq = next_seq.max(seq.saturating_add(1));
        }
        for guard in keyspace.iter() {
            guard
                .key()
                .map_err(|error| StoreError::io("counting the outbox", error))?;
            *len += 1;
        }
    }
    let [outbox_len, dead_len] = lens;
    Ok(OutboxState {
        next_seq,
        outbox_len,
        dead_len,
    })
}

/// The meta a stream should have given what is stored. Returns `stored`
/// unchanged when it is consistent.
fn check_stream(
    name: &str,
    stored: Option<StreamMeta>,
    bounds: Option<(u64, u64)>,
    epochs: &mut EpochGen,
) -> Option<StreamMeta> {
    match (stored, bounds) {
        (Some(meta), None) => {
            if meta.first_offset < meta.next_offset {
                // Entries the meta promises are gone: the stream lost data.
                tracing::error!(stream = name, ?meta, "stream entries missing: new epoch");
                Some(StreamMeta {
                    epoch: epochs.next(meta.epoch),
                    first_offset: meta.next_offset,
                    ..meta
                })
            } else {
                Some(meta)
            }
        }
        (Some(meta), Some((first, last))) => {
            if last >= meta.next_offset || last.saturating_add(1) < meta.next_offset {
                // Entries past the meta's end (meta lost an update) or the
                // newest acknowledged entries are missing: either way the
                // offsets no longer mean what clients were told.
                tracing::error!(
                    stream = name,
                    ?meta,
                    first,
                    last,
                    "stream meta disagrees with entries: new epoch"
                );
                Some(StreamMeta {
                    epoch: epochs.next(meta.epoch),
                    first_offset: first,
                    next_offset: last.saturating_add(1).max(meta.next_offset),
                    ..meta
                })
            } else if first != meta.first_offset {
                // Only the oldest end differs: indistinguishable from a trim.
                tracing::warn!(stream = name, ?meta, first, "stream first offset adjusted");
                Some(StreamMeta {
                    first_offset: first,
                    ..meta
                })
            } else {
                Some(meta)
            }
        }
        (None, Some((first, last))) => {
            tracing::error!(
                stream = name,
                first,
                last,
                "stream meta missing: rebuilt with a new epoch"
            );
            Some(StreamMeta {
                first_offset: first,
                next_offset: last.saturating_add(1),
                ..StreamMeta::new(epochs.next(0))
            })
        }
        (None, None) => Some(StreamMeta::new(epochs.next(0))),
    }
}
