//! Reader threads: history replays and cursor lookups. Kept off the writer
//! so a large replay never delays a group commit. Each request reads one
//! fjall snapshot, so an answer's entries and meta agree with each other.

use crossbeam_channel::Receiver;
use fjall::Readable;
use ringcast_protocol::envelope::EncodedPush;

use crate::api::{
    ConvPage, ConvSummary, DeadRecord, DmPolicy, GroupInfo, GroupMember, ImSync, OutboxRecord,
    ReadRequest, ReadResult, ReceiptPage, StoredCursor, SyncToken, TimeSeek, Unreadable,
};
use crate::error::StoreError;
use crate::keys::{
    cursor_key, entry_key, entry_key_decode, meta_id_key, meta_name_key, read_u64, CursorRecord,
    StreamMeta, META_PREFIX_STREAM,
};
use crate::outbox::{read_dead, read_outbox};
use crate::recovery::Fjall;
use crate::writer::Shared;
use futures_channel::oneshot;

/// A reader's answer channel.
type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(crate) enum ReaderMsg {
    Read {
        request: ReadRequest,
        reply: Reply<ReadResult>,
    },
    GetCursor {
        user: String,
        device: String,
        stream: String,
        reply: Reply<Option<StoredCursor>>,
    },
    OutboxRead {
        after_seq: u64,
        limit: usize,
        reply: Reply<Vec<Result<OutboxRecord, Unreadable>>>,
    },
    DeadRead {
        after_seq: u64,
        limit: usize,
        reply: Reply<Vec<Result<DeadRecord, Unreadable>>>,
    },
    MaxCursor {
        user: String,
        stream: String,
        reply: Reply<Option<StoredCursor>>,
    },
    ConvList {
        user: String,
        cursor: Option<(u64, u64)>,
        limit: usize,
        reply: Reply<ConvPage>,
    },
    ImSync {
        user: String,
        since: Option<SyncToken>,
        limit: usize,
        reply: Reply<ImSync>,
    },
    ConvGet {
        user: String,
        conv: String,
        reply: Reply<Option<ConvSummary>>,
    },
    GroupInfo {
        conv: String,
        reply: Reply<Option<GroupInfo>>,
    },
    GroupMembers {
        conv: String,
        after: Option<String>,
        limit: usize,
        reply: Reply<Vec<GroupMember>>,
    },
    /// Blocks (`contacts: false`) or contacts of `owner`.
    PairList {
        contacts: bool,
        owner: String,
        after: Option<String>,
        limit: usize,
        reply: Reply<Vec<(String, u64)>>,
    },
    DmPolicy {
        user: String,
        reply: Reply<DmPolicy>,
    },
    SeekTime {
        stream: String,
        time_ms: u64,
        reply: Reply<TimeSeek>,
    },
    ImReceipts {
        user: String,
        conv: String,
        after: Option<String>,
        limit: usize,
        reply: Reply<Option<ReceiptPage>>,
    },
    TotalUnread {
        user: String,
        reply: Reply<u64>,
    },
    Shutdown,
}

pub(crate) fn run(shared: &Shared, requests: &Receiver<ReaderMsg>, read_entries_max: usize) {
    while let Ok(msg) = requests.recv() {
        // Taken per request, and dropped after it: the writer waits for
        // every handle on the old database before it reopens it.
        let Some(fjall) = shared.fjall.get() else {
            let error = shared.closed_error();
            match msg {
                ReaderMsg::Read { reply, .. } => drop(reply.send(Err(error))),
                ReaderMsg::GetCursor { reply, .. } => drop(reply.send(Err(error))),
                ReaderMsg::OutboxRead { reply, .. } => drop(reply.send(Err(error))),
                ReaderMsg::DeadRead { reply, .. } => drop(reply.send(Err(error))),
                ReaderMsg::MaxCursor { reply, .. } => drop(reply.send(Err(error))),
                ReaderMsg::ConvList { reply, .. } => drop(reply.send(Err(error))),
                ReaderMsg::ImSync { reply, .. } => drop(reply.send(Err(error))),
                ReaderMsg::ConvGet { reply, .. } => drop(reply.send(Err(error))),
                ReaderMsg::GroupInfo { reply, .. } => drop(reply.send(Err(error))),
                ReaderMsg::GroupMembers { reply, .. } => drop(reply.send(Err(error))),
                ReaderMsg::PairList { reply, .. } => drop(reply.send(Err(error))),
                ReaderMsg::DmPolicy { reply, .. } => drop(reply.send(Err(error))),
                ReaderMsg::SeekTime { reply, .. } => drop(reply.send(Err(error))),
                ReaderMsg::ImReceipts { reply, .. } => drop(reply.send(Err(error))),
                ReaderMsg::TotalUnread { reply, .. } => drop(reply.send(Err(error))),
                ReaderMsg::Shutdown => break,
            }
            continue;
        };
        let fjall = &*fjall;
        match msg {
            ReaderMsg::Read { request, reply } => {
                drop(reply.send(read(fjall, &request, read_entries_max)));
            }
            ReaderMsg::GetCursor {
                user,
                device,
                stream,
                reply,
            } => drop(reply.send(get_cursor(fjall, &user, &device, &stream))),
            ReaderMsg::OutboxRead {
                after_seq,
                limit,
                reply,
            } => drop(reply.send(read_outbox(fjall, after_seq, limit.min(read_entries_max)))),
            ReaderMsg::DeadRead {
                after_seq,
                limit,
                reply,
            } => drop(reply.send(read_dead(fjall, after_seq, limit.min(read_entries_max)))),
            ReaderMsg::MaxCursor {
                user,
                stream,
                reply,
            } => drop(reply.send(max_cursor(fjall, &user, &stream))),
            ReaderMsg::ConvList {
                user,
                cursor,
                limit,
                reply,
            } => drop(reply.send(crate::im::conv_list(
                fjall,
                &user,
                cursor,
                limit.min(read_entries_max),
            ))),
            ReaderMsg::ImSync {
                user,
                since,
                limit,
                reply,
            } => drop(reply.send(crate::im::im_sync(
                fjall,
                &user,
                since,
                limit.min(read_entries_max),
            ))),
            ReaderMsg::ConvGet { user, conv, reply } => {
                drop(reply.send(crate::im::conv_get(fjall, &user, &conv)));
            }
            ReaderMsg::TotalUnread { user, reply } => {
                drop(reply.send(crate::im::total_unread(fjall, &user)));
            }
            ReaderMsg::GroupInfo { conv, reply } => {
                drop(reply.send(crate::im::group_info(fjall, &conv)));
            }
            ReaderMsg::ImReceipts {
                user,
                conv,
                after,
                limit,
                reply,
            } => drop(reply.send(crate::im::im_receipts(
                fjall,
                &user,
                &conv,
                after.as_deref(),
                limit.min(read_entries_max),
            ))),
            ReaderMsg::GroupMembers {
                conv,
                after,
                limit,
                reply,
            } => drop(reply.send(crate::im::group_members(
                fjall,
                &conv,
                after.as_deref(),
                limit.min(read_entries_max),
            ))),
            ReaderMsg::PairList {
                contacts,
                owner,
                after,
                limit,
                reply,
            } => drop(reply.send(crate::im::pair_list(
                fjall,
                contacts,
                &owner,
                after.as_deref(),
                limit.min(read_entries_max),
            ))),
            ReaderMsg::DmPolicy { user, reply } => {
                drop(reply.send(crate::im::dm_policy(fjall, &user)));
            }
            ReaderMsg::SeekTime {
                stream,
                time_ms,
                reply,
            } => drop(reply.send(seek_time_of(fjall, &stream, time_ms))),
            ReaderMsg::Shutdown => break,
        }
    }
}

fn stream_meta(
    fjall: &Fjall,
    snapshot: &fjall::Snapshot,
    stream: &str,
) -> Result<Option<(u64, StreamMeta)>, StoreError> {
    let io = |error| StoreError::io("reading stream meta", error);
    let Some(id) = snapshot
        .get(&fjall.meta, meta_name_key(stream))
        .map_err(io)?
    else {
        return Ok(None);
    };
    let corrupt = |reason: String| StoreError::Corrupt {
        stream: stream.to_owned(),
        offset: 0,
        reason,
    };
    let id = read_u64(&id, 0).ok_or_else(|| corrupt("malformed stream id".to_owned()))?;
    let Some(meta) = snapshot
        .get(&fjall.meta, meta_id_key(META_PREFIX_STREAM, id))
        .map_err(io)?
    else {
        return Err(corrupt("stream has a name but no meta".to_owned()));
    };
    let meta = StreamMeta::decode(&meta).map_err(corrupt)?;
    Ok(Some((id, meta)))
}

fn read(
    fjall: &Fjall,
    request: &ReadRequest,
    read_entries_max: usize,
) -> Result<ReadResult, StoreError> {
    let snapshot = fjall.db.snapshot();
    let Some((id, meta)) = stream_meta(fjall, &snapshot, &request.stream)? else {
        return Ok(ReadResult {
            entries: Vec::new(),
            epoch: 0,
            first_offset: 1,
            next_offset: 1,
        });
    };
    let limit = request.limit.min(read_entries_max);
    let mut start = request
        .since
        .map_or(1, |since| since.saturating_add(1))
        .max(meta.first_offset);
    let mut end = request
        .before
        .map_or(meta.next_offset, |before| before.min(meta.next_offset));
    // Each search looks only inside the range the offsets left.
    let seek = |range, time_ms| seek_time(fjall, &snapshot, &request.stream, id, range, time_ms);
    if let Some(from_time_ms) = request.from_time_ms.filter(|_| start < end) {
        start = seek(start..end, from_time_ms)?;
    }
    if let Some(before_time_ms) = request.before_time_ms.filter(|_| start < end) {
        end = seek(start..end, before_time_ms)?;
    }
    let mut entries = Vec::with_capacity(limit.min(1024));
    if limit > 0 && start < end {
        let range = snapshot.range(&fjall.entries, entry_key(id, start)..entry_key(id, end));
        let iter: Box<dyn Iterator<Item = fjall::Guard>> = if request.reverse {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        for guard in iter.take(limit) {
            let (key, value) = guard
                .into_inner()
                .map_err(|error| StoreError::io("reading entries", error))?;
            let offset = entry_key_decode(&key).map_or(0, |(_, offset)| offset);
            let push =
                EncodedPush::from_untrusted(&value).map_err(|error| StoreError::Corrupt {
                    stream: request.stream.clone(),
                    offset,
                    reason: error.to_string(),
                })?;
            if push.envelope().offset.to_native() != offset {
                return Err(StoreError::Corrupt {
                    stream: request.stream.clone(),
                    offset,
                    reason: format!("entry holds offset {}", push.envelope().offset.to_native()),
                });
            }
            entries.push(push);
        }
    }
    Ok(ReadResult {
        entries,
        epoch: meta.epoch,
        first_offset: meta.first_offset,
        next_offset: meta.next_offset,
    })
}

/// The first offset in `stored` (a stream's stored offsets) whose entry's
/// time is at least `time_ms`, or `stored.end` if there is none: a binary
/// search, O(log n) point reads of `snapshot`.
///
/// Exact when time does not decrease along the stream, which the writer
/// keeps true for every entry it stamps (`Writer::stage_entry`). Over
/// entries stored before it did, where time may decrease, the search still
/// ends after at most log2(n) + 1 reads and returns an offset `o` with
/// `time(o - 1) < time_ms <= time(o)` (as far as those exist): a place
/// where the time crosses `time_ms`, though not necessarily the first. If
/// time never went back by more than `d` there, every entry before `o` is
/// older than `time_ms + d` and every entry from `o` on is at least
/// `time_ms - d`: the answer is off by at most `d`.
pub(crate) fn seek_time(
    fjall: &Fjall,
    snapshot: &fjall::Snapshot,
    stream: &str,
    id: u64,
    stored: std::ops::Range<u64>,
    time_ms: u64,
) -> Result<u64, StoreError> {
    first_at_or_after(stored, time_ms, |offset| {
        entry_time_ms(fjall, snapshot, stream, id, offset)
    })
}

/// The search of [`seek_time`] over any `time_at(offset)`.
fn first_at_or_after<E>(
    range: std::ops::Range<u64>,
    time_ms: u64,
    mut time_at: impl FnMut(u64) -> Result<u64, E>,
) -> Result<u64, E> {
    let (mut low, mut high) = (range.start, range.end);
    while low < high {
        let mid = low + (high - low) / 2;
        if time_at(mid)? < time_ms {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    Ok(low)
}

/// The time of entry `offset`, which the snapshot's meta says is stored.
fn entry_time_ms(
    fjall: &Fjall,
    snapshot: &fjall::Snapshot,
    stream: &str,
    id: u64,
    offset: u64,
) -> Result<u64, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        stream: stream.to_owned(),
        offset,
        reason,
    };
    let value = snapshot
        .get(&fjall.entries, entry_key(id, offset))
        .map_err(|error| StoreError::io("reading an entry", error))?
        .ok_or_else(|| corrupt("entry missing inside the stored range".to_owned()))?;
    let push = EncodedPush::from_untrusted(&value).map_err(|error| corrupt(error.to_string()))?;
    Ok(push.envelope().time_ms.to_native())
}

fn seek_time_of(fjall: &Fjall, stream: &str, time_ms: u64) -> Result<TimeSeek, StoreError> {
    let snapshot = fjall.db.snapshot();
    let Some((id, meta)) = stream_meta(fjall, &snapshot, stream)? else {
        return Ok(TimeSeek {
            at_or_after: 1,
            at_or_before: None,
            epoch: 0,
            first_offset: 1,
            next_offset: 1,
        });
    };
    let stored = meta.first_offset..meta.next_offset;
    let at_or_after = seek_time(fjall, &snapshot, stream, id, stored, time_ms)?;
    // The last entry at or before `time_ms` is the one before the first
    // entry after it.
    let after = match time_ms.checked_add(1) {
        Some(next_ms) => {
            let rest = at_or_after..meta.next_offset;
            seek_time(fjall, &snapshot, stream, id, rest, next_ms)?
        }
        None => meta.next_offset,
    };
    Ok(TimeSeek {
        at_or_after,
        at_or_before: (after > meta.first_offset).then(|| after - 1),
        epoch: meta.epoch,
        first_offset: meta.first_offset,
        next_offset: meta.next_offset,
    })
}

fn get_cursor(
    fjall: &Fjall,
    user: &str,
    device: &str,
    stream: &str,
) -> Result<Option<StoredCursor>, StoreError> {
    let snapshot = fjall.db.snapshot();
    let stored = snapshot
        .get(&fjall.cursors, cursor_key(user, device, stream))
        .map_err(|error| StoreError::io("reading a cursor", error))?;
    // Returned with its epoch, even an old one: the caller compares it with
    // the stream's current epoch and reports a reset instead of a silent
    // "nothing to replay".
    Ok(stored
        .and_then(|bytes| CursorRecord::decode(&bytes))
        .map(|record| StoredCursor {
            offset: record.offset,
            epoch: record.epoch,
        }))
}

/// The highest cursor any device of `user` holds in `stream` in the
/// stream's current epoch (cursors of older epochs mean nothing after a
/// reset); `None` if there is none or the stream does not exist. One prefix
/// scan of the user's cursors: every device, every stream.
fn max_cursor(fjall: &Fjall, user: &str, stream: &str) -> Result<Option<StoredCursor>, StoreError> {
    let snapshot = fjall.db.snapshot();
    let Some((_, meta)) = stream_meta(fjall, &snapshot, stream)? else {
        return Ok(None);
    };
    // `cursor_key`'s layout: u16 BE len + user + u16 BE len + device + stream.
    let user_len = u16::try_from(user.len()).unwrap_or(u16::MAX);
    let mut prefix = Vec::with_capacity(2 + user.len());
    prefix.extend_from_slice(&user_len.to_be_bytes());
    prefix.extend_from_slice(user.as_bytes());
    let mut highest: Option<u64> = None;
    for guard in snapshot.prefix(&fjall.cursors, &prefix) {
        let (key, value) = guard
            .into_inner()
            .map_err(|error| StoreError::io("reading cursors", error))?;
        let Some(rest) = key.get(prefix.len()..) else {
            continue;
        };
        let Some(device_len) = rest
            .get(..2)
            .and_then(|len| <[u8; 2]>::try_from(len).ok())
            .map(|len| usize::from(u16::from_be_bytes(len)))
        else {
            continue;
        };
        if rest.get(2 + device_len..) != Some(stream.as_bytes()) {
            continue;
        }
        if let Some(cursor) = CursorRecord::decode(&value) {
            if cursor.epoch == meta.epoch {
                highest = highest.max(Some(cursor.offset));
            }
        }
    }
    Ok(highest.map(|offset| StoredCursor {
        offset,
        epoch: meta.epoch,
    }))
}

#[cfg(test)]
#[expect(
    clippy::indexing_slicing,
    reason = "offsets and indexes into vectors the tests made"
)]
mod tests {
    use proptest::prelude::*;

    use super::first_at_or_after;

    /// Runs the search over `times` (offset `i + 1` has `times[i]`),
    /// counting the reads.
    fn search(times: &[u64], time_ms: u64) -> (u64, u32) {
        let mut reads = 0;
        let end = times.len() as u64 + 1;
        let found = first_at_or_after(1..end, time_ms, |offset| {
            reads += 1;
            Ok::<_, ()>(times[offset as usize - 1])
        });
        (found.expect("the closure never fails"), reads)
    }

    fn reads_max(n: usize) -> u32 {
        usize::BITS - n.leading_zeros() + 1
    }

    proptest! {
        /// Over non-decreasing times (equal runs included) the search is
        /// exactly the first offset at or after the time.
        #[test]
        fn exact_over_sorted_times(
            mut times in proptest::collection::vec(0u64..50, 0..200),
            time_ms in 0u64..60,
        ) {
            times.sort_unstable();
            let (found, reads) = search(&times, time_ms);
            let expected = times.iter().position(|&t| t >= time_ms).unwrap_or(times.len()) as u64 + 1;
            prop_assert_eq!(found, expected);
            prop_assert!(reads <= reads_max(times.len()));
        }

        /// Over times that go back (data stored before the writer kept them
        /// in order) it still ends within log2(n) + 1 reads, at a place
        /// where the time crosses `time_ms`, and off by at most the
        /// largest step back.
        #[test]
        fn bounded_over_unsorted_times(
            times in proptest::collection::vec(0u64..1000, 0..200),
            time_ms in 0u64..1100,
        ) {
            let (found, reads) = search(&times, time_ms);
            prop_assert!(reads <= reads_max(times.len()));
            let index = found as usize - 1;
            prop_assert!(index <= times.len());
            if index > 0 {
                prop_assert!(times[index - 1] < time_ms);
            }
            if index < times.len() {
                prop_assert!(times[index] >= time_ms);
            }
            // The largest drop from any entry to a later one.
            let mut peak = 0u64;
            let mut back = 0u64;
            for &time in &times {
                back = back.max(peak.saturating_sub(time));
                peak = peak.max(time);
            }
            prop_assert!(times[..index].iter().all(|&t| t < time_ms + back));
            prop_assert!(times[index..].iter().all(|&t| t + back >= time_ms));
        }
    }
}
