//! Catching a connection up on a durable stream: replay from the store,
//! then continue live, with no gap and no duplicate across the switch.
//!
//! The connection is subscribed live *before* the store is read, and live
//! publications of that stream are held in a per-connection buffer while the
//! replay runs. Every publication that was durable before the subscription
//! took effect is in the store read; every one fanned out after it is in the
//! buffer; some may be in both. Stream offsets make the merge exact: after
//! the replay, buffered publications at or below the last replayed offset are
//! dropped and the rest are queued in order.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringcast_protocol::client::{ErrorCode, Recovery, ReplyResult, StreamPosition};
use ringcast_protocol::envelope::{encode_push_json, EncodedPush};
use ringcast_protocol::frame::{encode_frame, OpCode};
use ringcast_store::{ReadRequest, ReadResult, StoreError};

use super::conn::{CloseReason, RecoveringStream};
use super::fanout;
use super::Shard;
use crate::publication::Publication;

/// Entries read from the store per page.
const REPLAY_PAGE_ENTRIES: usize = 256;
/// Live publications held for one stream while it replays; past this the
/// connection is too far behind and is closed like a slow consumer.
pub(super) const RECOVERY_BUFFER_MAX: usize = 65_536;

pub(super) type CommandError = (ErrorCode, String);

pub(super) fn store_error(err: &StoreError) -> CommandError {
    tracing::error!(error = %err, "store request failed");
    (
        ErrorCode::StoreUnavailable,
        format!("store unavailable: {err}"),
    )
}

/// Awaits a store reply, mapping a dropped reply channel to `Closed`.
pub(super) async fn store_reply<T>(
    request: Result<futures_channel::oneshot::Receiver<Result<T, StoreError>>, StoreError>,
) -> Result<T, CommandError> {
    let receiver = request.map_err(|e| store_error(&e))?;
    match receiver.await {
        Ok(result) => result.map_err(|e| store_error(&e)),
        Err(_canceled) => Err(store_error(&StoreError::Closed)),
    }
}

/// Holds live publications of `stream` for connection `key` from now on.
pub(super) fn begin(shard: &Shard, key: usize, stream: &str) {
    if let Some(conn) = shard.conns.borrow_mut().get_mut(key) {
        let streams = conn.recovering.get_or_insert_with(Default::default);
        // A stream recovered before (its floor) starts over.
        streams.retain(|entry| *entry.stream != *stream);
        streams.push(RecoveringStream {
            stream: stream.into(),
            held: Vec::new(),
            floor: None,
        });
    }
}

/// Replays `stream` to connection `key` (which must be `client_id` still)
/// after `since`, then releases the held live publications. Returns the
/// subscribe reply. `device_cursor` is set for the user's own inbox: without
/// `since`, start from the device's stored cursor; on failure, stay joined.
pub(super) async fn run(
    shard: Rc<Shard>,
    key: usize,
    client_id: u64,
    stream: String,
    since: Option<StreamPosition>,
    device_cursor: bool,
) -> Result<ReplyResult, CommandError> {
    let result = replay(&shard, key, client_id, &stream, since, device_cursor).await;
    let last_offset = result.as_ref().map(|r| r.offset).unwrap_or(u64::MAX);
    // Release what arrived live during the replay, newer than it.
    let queue_bytes_max = shard.shared.config.websocket.outbound_queue_bytes_max;
    let now = shard.now_ms();
    {
        let mut conns = shard.conns.borrow_mut();
        let mut dirty = shard.dirty.borrow_mut();
        if let Some(conn) = conns.get_mut(key).filter(|c| c.client_id == client_id) {
            // Keep the stream's entry as a floor (late live copies of what
            // was replayed are dropped); on failure there is nothing to
            // protect and the entry goes.
            let held = conn.recovering.as_mut().and_then(|streams| {
                let pos = streams.iter().position(|entry| *entry.stream == *stream)?;
                if result.is_ok() {
                    let entry = &mut streams[pos];
                    entry.floor = Some(last_offset);
                    Some(std::mem::take(&mut entry.held))
                } else {
                    Some(streams.swap_remove(pos).held)
                }
            });
            if conn.recovering.as_ref().is_some_and(|s| s.is_empty()) {
                conn.recovering = None;
            }
            for publication in held.unwrap_or_default() {
                if publication.offset() > last_offset {
                    let frame = if conn.binary {
                        &publication.binary_frame
                    } else {
                        &publication.json_frame
                    };
                    fanout::enqueue(
                        conn,
                        key,
                        frame.clone(),
                        &mut dirty,
                        queue_bytes_max,
                        shard.metrics(),
                        now,
                    );
                }
            }
        }
    }
    shard.flush_dirty();
    if result.is_err() && !device_cursor {
        // The subscribe failed as a whole: leave the channel so the client
        // can simply retry it (the inbox, joined at connect, stays joined).
        let current = shard
            .conns
            .borrow()
            .get(key)
            .is_some_and(|c| c.client_id == client_id);
        if current {
            shard.unsubscribe(key, &stream);
        }
    }
    result.map(|recovery| ReplyResult::Subscribed {
        channel: stream,
        recovery: Some(recovery),
    })
}

fn is_current(shard: &Shard, key: usize, client_id: u64) -> bool {
    shard
        .conns
        .borrow()
        .get(key)
        .is_some_and(|c| c.client_id == client_id && c.closing.is_none())
}

async fn read(
    shard: &Shard,
    stream: &str,
    since: Option<u64>,
    limit: usize,
    reverse: bool,
) -> Result<ReadResult, CommandError> {
    store_reply(shard.shared.store.read(ReadRequest {
        stream: stream.to_string(),
        since,
        limit,
        reverse,
    }))
    .await
}

async fn replay(
    shard: &Rc<Shard>,
    key: usize,
    client_id: u64,
    stream: &str,
    since: Option<StreamPosition>,
    device_cursor: bool,
) -> Result<Recovery, CommandError> {
    let gone = || {
        (
            ErrorCode::Internal,
            "connection closed during recovery".to_string(),
        )
    };
    // Where to start: the client's position, else this device's stored
    // cursor (acks), else nothing to replay.
    let mut position = since;
    if position.is_none() && device_cursor {
        let (user, device) = {
            let conns = shard.conns.borrow();
            let conn = conns.get(key).ok_or_else(gone)?;
            (conn.user.to_string(), shard.device_id(conn))
        };
        let cursor = store_reply(shard.shared.store.get_cursor(&user, &device, stream)).await?;
        // With its epoch: a cursor acknowledged before the stream was reset
        // makes the replay report `recovered: false`, never a silent skip.
        position = cursor.map(|c| StreamPosition {
            offset: c.offset,
            epoch: c.epoch,
        });
    }
    let Some(position) = position else {
        // A fresh subscriber: report where the stream is, replay nothing.
        let head = read(shard, stream, None, 1, true).await?;
        return Ok(Recovery {
            recovered: true,
            epoch: head.epoch,
            offset: head.next_offset.saturating_sub(1),
            start_offset: head.first_offset,
            replayed: 0,
        });
    };
    let mut cursor = position.offset;
    let mut replayed = 0u64;
    let mut first_page = true;
    loop {
        let page = read(shard, stream, Some(cursor), REPLAY_PAGE_ENTRIES, false).await?;
        if !is_current(shard, key, client_id) {
            return Err(gone());
        }
        if first_page {
            first_page = false;
            let epoch_changed =
                position.epoch != 0 && page.epoch != 0 && position.epoch != page.epoch;
            let trimmed = page.epoch != 0 && cursor.saturating_add(1) < page.first_offset;
            // A position past the stream's end belongs to a stream that was lost.
            let ahead = cursor > page.next_offset.saturating_sub(1);
            if epoch_changed || trimmed || ahead {
                // Never a silent skip: the client learns the stream moved on
                // and where it now starts, and reloads from there.
                return Ok(Recovery {
                    recovered: false,
                    epoch: page.epoch,
                    offset: page.next_offset.saturating_sub(1),
                    start_offset: page.first_offset,
                    replayed: 0,
                });
            }
        }
        let n_entries = page.entries.len();
        for entry in &page.entries {
            let offset = entry.envelope().offset.to_native();
            debug_assert!(
                offset > cursor,
                "store returned offset {offset} at or below {cursor}"
            );
            queue_entry(shard, key, entry);
            cursor = offset;
            replayed += 1;
        }
        shard.flush_dirty();
        if n_entries < REPLAY_PAGE_ENTRIES {
            return Ok(Recovery {
                recovered: true,
                epoch: page.epoch,
                offset: cursor,
                start_offset: page.first_offset,
                replayed,
            });
        }
        // Flow control: let the socket take the page before reading the
        // next, so a long replay never trips the slow-consumer bound.
        let half_bound = shard.shared.config.websocket.outbound_queue_bytes_max / 2;
        while shard
            .conns
            .borrow()
            .get(key)
            .is_some_and(|c| c.out_bytes > half_bound)
        {
            if !is_current(shard, key, client_id) {
                return Err(gone());
            }
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Queues one stored entry on the connection in its subprotocol's form.
fn queue_entry(shard: &Shard, key: usize, entry: &EncodedPush) {
    let Some(binary) = shard.conns.borrow().get(key).map(|c| c.binary) else {
        return;
    };
    let frame: Bytes = if binary {
        encode_frame(OpCode::Binary, entry.as_bytes(), None)
    } else {
        encode_frame(OpCode::Text, &encode_push_json(entry.envelope()), None)
    };
    shard.send_frame(key, frame);
}

/// Holds `publication` if connection `conn` is replaying its stream, or
/// drops it if the replay already delivered it. Returns true when the caller
/// must not queue it.
pub(super) fn hold(conn: &mut super::conn::Conn, publication: &Arc<Publication>) -> bool {
    let Some(streams) = conn.recovering.as_mut() else {
        return false;
    };
    let Some(entry) = streams
        .iter_mut()
        .find(|entry| *entry.stream == *publication.channel())
    else {
        return false;
    };
    if let Some(floor) = entry.floor {
        // Replay done: drop a late live copy of a replayed publication.
        return publication.offset() <= floor;
    }
    let held = &mut entry.held;
    if held.len() >= RECOVERY_BUFFER_MAX {
        conn.request_close(CloseReason {
            code: ringcast_protocol::close::CloseCode::TRY_AGAIN_LATER,
            reason: "too far behind during recovery",
            flush_queue: false,
        });
        return true;
    }
    held.push(publication.clone());
    true
}
