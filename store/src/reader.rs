//! Reader threads: history replays and cursor lookups. Kept off the writer
//! so a large replay never delays a group commit. Each request reads one
//! fjall snapshot, so an answer's entries and meta agree with each other.

use crossbeam_channel::Receiver;
use fjall::Readable;
use ringcast_protocol::envelope::EncodedPush;

use crate::api::{
    ConvPage, ConvSummary, DeadRecord, DmPolicy, GroupInfo, GroupMember, ImSync, OutboxRecord,
    ReadRequest, ReadResult, ReceiptPage, StoredCursor, SyncToken, Unreadable,
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
    ImReceipts {
        user: String,
        conv: String,
        after: Option<String>,
        limit: usize,
        reply: Reply<Option<ReceiptPage>>,
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
                ReaderMsg::ImReceipts { reply, .. } => drop(reply.send(Err(error))),
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
    let start = request
        .since
        .map_or(1, |since| since.saturating_add(1))
        .max(meta.first_offset);
    let end = request
        .before
        .map_or(meta.next_offset, |before| before.min(meta.next_offset));
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
