//! Catching a connection up on a durable stream: replay from the store,
//! then continue live, with no gap and no duplicate across the switch.
//!
//! The connection is subscribed live *before* the store is read, and its
//! session holds that stream's live publications while the replay runs
//! (`Session::begin_recovery`). Every publication durable before the
//! subscription took effect is in the store read; every one fanned out after
//! it is held; some may be in both. Offsets make the merge exact
//! (`Session::end_recovery`).
//!
//! A replay is a small state machine (`Job`) advanced by store answers
//! arriving on the loop (`Step`): the device cursor, then pages. Between
//! pages it waits, without polling, for the connection's queue to drain
//! below half its bound: a send completion resumes it (`resume_replay`).

use bytes::Bytes;
use ringcast_protocol::client::{CatchupResult, Recovery, Reply, ReplyResult, StreamPosition};
use ringcast_protocol::envelope::{encode_push_json, EncodedPush};
use ringcast_protocol::frame::{encode_frame, OpCode};
use ringcast_store::{ReadRequest, ReadResult, StoredCursor};

use super::commands::{store_reply, CommandError, StoreDone};
use super::im_delivery::CatchupSlot;
use super::Shard;
use crate::limits::REPLAY_PAGE_ENTRIES;

/// One stream's replay to one connection.
#[derive(Debug)]
pub(super) struct Job {
    pub key: usize,
    client_id: u64,
    /// The session's id for this replay (`Session::replay_id`).
    replay_id: u64,
    /// The subscribe command to answer; 0 for the inbox at connect.
    command_id: u64,
    pub stream: String,
    /// Joined by the server (the inbox at connect, a server-side
    /// subscription): without `since`, start from the device's stored
    /// cursor; on failure, stay joined.
    device_cursor: bool,
    /// With `device_cursor`, when the device has no cursor: replay from
    /// the oldest retained entry (`device_start=oldest`) rather than start
    /// live. Set to `from_oldest` once the lookup found none.
    oldest_if_no_cursor: bool,
    /// Replaying everything retained: a trimmed start is not a gap, since
    /// the device never had a position.
    from_oldest: bool,
    /// The client's position, or the device's cursor once read.
    position: Option<StreamPosition>,
    /// The last offset queued.
    cursor: u64,
    replayed: u64,
    first_page: bool,
    /// Entries of the last page read and not yet queued: a page is queued
    /// only while the connection's queue is under half its bound, so a
    /// replay never holds more than that plus one entry.
    pending: std::collections::VecDeque<EncodedPush>,
    /// The last page read was the stream's end.
    at_end: bool,
    /// The page's `epoch` and `first_offset`, for the final reply.
    epoch: u64,
    first_offset: u64,
    /// A conversation of a `catchup` (`shard/im_delivery.rs`): its result
    /// goes to the catchup's reply, and it stops after the slot's limit.
    catchup: Option<CatchupSlot>,
    /// The replay stopped at its catchup limit.
    truncated: bool,
}

/// A store answer for a replay.
pub(super) enum Step {
    Cursor(Result<Option<StoredCursor>, CommandError>),
    /// The stream's head, for a subscriber with nothing to replay.
    Head(Result<ReadResult, CommandError>),
    Page(Result<ReadResult, CommandError>),
}

impl Job {
    /// A `catchup` replays only the user's window of its conversation: a
    /// group from the user's join, a DM from its `clear`.
    fn keep_to_view(&mut self) {
        let Some(slot) = self.catchup else {
            return;
        };
        let floor = slot.view.from.saturating_sub(1);
        if self.position.is_some() && self.cursor < floor {
            self.cursor = floor;
        }
    }
}

impl Shard {
    /// Starts replaying `stream` to `key` after `since` (the session already
    /// holds the stream's live publications). `oldest_if_no_cursor`: see
    /// [`Job`].
    pub(super) fn start_recovery(
        &mut self,
        key: usize,
        command_id: u64,
        stream: String,
        since: Option<StreamPosition>,
        device_cursor: bool,
        oldest_if_no_cursor: bool,
    ) {
        self.start_replay(
            key,
            command_id,
            stream,
            since,
            device_cursor,
            oldest_if_no_cursor,
            None,
        );
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "a replay's start, passed apart rather than through a one-use struct"
    )]
    /// [`Shard::start_recovery`], or (`catchup`) of one conversation of a
    /// `catchup` (`device_cursor`: from the device's acknowledged cursor).
    pub(super) fn start_replay(
        &mut self,
        key: usize,
        command_id: u64,
        stream: String,
        since: Option<StreamPosition>,
        device_cursor: bool,
        oldest_if_no_cursor: bool,
        catchup: Option<CatchupSlot>,
    ) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let Some(replay_id) = conn.session.replay_id(&stream) else {
            return;
        };
        let job = Job {
            key,
            client_id: conn.client_id,
            replay_id,
            command_id,
            stream,
            device_cursor,
            oldest_if_no_cursor,
            from_oldest: false,
            position: since,
            cursor: since.map_or(0, |p| p.offset),
            replayed: 0,
            first_page: true,
            pending: std::collections::VecDeque::new(),
            at_end: false,
            epoch: 0,
            first_offset: 0,
            catchup,
            truncated: false,
        };
        let mut job = job;
        job.keep_to_view();
        if job.position.is_none() && device_cursor {
            let device = self.device_id(conn);
            let request = self.shared.get_cursor(&conn.user, &device, &job.stream);
            self.store_replies.push(Box::pin(async move {
                let result = store_reply(request).await;
                StoreDone::Recovery(Box::new(job), Step::Cursor(result))
            }));
        } else {
            self.next_read(job);
        }
    }

    /// Reads the next page (or the head, for a fresh subscriber).
    fn next_read(&mut self, job: Job) {
        let store = &*self.shared;
        match job.position {
            None => {
                let request = store.read(ReadRequest {
                    stream: job.stream.clone(),
                    since: None,
                    before: None,
                    limit: 1,
                    reverse: true,
                    from_time_ms: None,
                    before_time_ms: None,
                });
                self.store_replies.push(Box::pin(async move {
                    let result = store_reply(request).await;
                    StoreDone::Recovery(Box::new(job), Step::Head(result))
                }));
            }
            Some(_) => {
                let request = store.read(ReadRequest {
                    stream: job.stream.clone(),
                    since: Some(job.cursor),
                    // A group member removed since the check: not past its window.
                    before: job
                        .catchup
                        .and_then(|slot| (slot.view.to > 0).then(|| slot.view.to + 1)),
                    limit: REPLAY_PAGE_ENTRIES,
                    reverse: false,
                    from_time_ms: None,
                    before_time_ms: None,
                });
                self.store_replies.push(Box::pin(async move {
                    let result = store_reply(request).await;
                    StoreDone::Recovery(Box::new(job), Step::Page(result))
                }));
            }
        }
    }

    pub(super) fn recovery_step(&mut self, mut job: Job, step: Step) {
        // The connection may have gone, left the stream, or started
        // another replay of it: then this one is over, silently.
        let current = self.is_current(job.key, job.client_id)
            && self.conns[job.key].session.replay_id(&job.stream) == Some(job.replay_id);
        if !current {
            return;
        }
        match step {
            Step::Cursor(Err(err)) | Step::Head(Err(err)) | Step::Page(Err(err)) => {
                self.finish_recovery(job, Err(err))
            }
            Step::Cursor(Ok(cursor)) => {
                // With its epoch: a cursor acknowledged before the stream was
                // reset makes the replay report `recovered: false`, never a
                // silent skip.
                job.position = cursor.map(|c| StreamPosition {
                    offset: c.offset,
                    epoch: c.epoch,
                });
                if job.position.is_none() && job.oldest_if_no_cursor {
                    // A new device that asked for the retained history:
                    // from offset 0, which the store starts at its oldest.
                    job.from_oldest = true;
                    job.position = Some(StreamPosition {
                        offset: 0,
                        epoch: 0,
                    });
                }
                job.cursor = job.position.map_or(0, |p| p.offset);
                job.keep_to_view();
                self.next_read(job);
            }
            Step::Head(Ok(head)) => {
                // A fresh subscriber: report where the stream is, replay
                // nothing.
                let recovery = Recovery {
                    recovered: true,
                    epoch: head.epoch,
                    offset: head.next_offset.saturating_sub(1),
                    start_offset: head.first_offset,
                    replayed: 0,
                };
                self.finish_recovery(job, Ok(recovery));
            }
            Step::Page(Ok(page)) => self.replay_page(job, page),
        }
    }

    fn replay_page(&mut self, mut job: Job, page: ReadResult) {
        if job.first_page {
            job.first_page = false;
            let position = job.position.unwrap_or(StreamPosition {
                offset: job.cursor,
                epoch: 0,
            });
            let epoch_changed =
                position.epoch != 0 && page.epoch != 0 && position.epoch != page.epoch;
            let trimmed = page.epoch != 0
                && !job.from_oldest
                && job.cursor.saturating_add(1) < page.first_offset;
            // A position past the stream's end belongs to a stream that was lost.
            let ahead = job.cursor > page.next_offset.saturating_sub(1);
            if epoch_changed || trimmed || ahead {
                // Never a silent skip: the client learns the stream moved
                // on and where it now starts, and reloads from there.
                let recovery = Recovery {
                    recovered: false,
                    epoch: page.epoch,
                    offset: page.next_offset.saturating_sub(1),
                    start_offset: page.first_offset,
                    replayed: 0,
                };
                return self.finish_recovery(job, Ok(recovery));
            }
        }
        // At the end when the page reached the stream's end as of its
        // read, not when it was short: in a cluster a page crossing NATS
        // is cut to what one message carries (docs/cluster.md). A bounded
        // catch-up read ends at its bound.
        let last = page.entries.last().map(|e| e.envelope().offset.to_native());
        job.at_end = match last {
            None => true,
            Some(last) => {
                last.saturating_add(1) >= page.next_offset
                    || (job.catchup.is_some() && page.entries.len() < REPLAY_PAGE_ENTRIES)
            }
        };
        job.epoch = page.epoch;
        job.first_offset = page.first_offset;
        job.pending = page.entries.into();
        self.continue_replay(job);
    }

    /// Queues pending entries while the connection's queue is under half
    /// its bound, then reads the next page, finishes, or waits for the
    /// queue to drain (a send completion resumes it).
    fn continue_replay(&mut self, mut job: Job) {
        while let Some(entry) = job.pending.front() {
            if job.catchup.is_some_and(|slot| job.replayed >= slot.limit) {
                job.truncated = true;
                job.at_end = true;
                break;
            }
            // Flow control: let the socket take what is queued first, so a
            // long replay never trips the slow-consumer bound and never
            // holds more than half the bound plus one entry.
            if self.over_half_bound(job.key) {
                if let Some(conn) = self.conns.get_mut(job.key) {
                    conn.replay_paused = true;
                }
                self.paused_replays.push(job);
                return;
            }
            let offset = entry.envelope().offset.to_native();
            debug_assert!(
                offset > job.cursor,
                "store returned offset {offset} at or below {}",
                job.cursor
            );
            self.queue_entry(job.key, entry);
            job.cursor = offset;
            job.replayed += 1;
            job.pending.pop_front();
        }
        if job.at_end {
            let recovery = Recovery {
                recovered: true,
                epoch: job.epoch,
                offset: job.cursor,
                start_offset: job.first_offset,
                replayed: job.replayed,
            };
            return self.finish_recovery(job, Ok(recovery));
        }
        self.next_read(job);
    }

    fn over_half_bound(&self, key: usize) -> bool {
        let half = self.session_config.queue_bytes_max / 2;
        self.conns
            .get(key)
            .is_some_and(|c| c.session.out_bytes() > half)
    }

    /// A send of `key` completed: continue its paused replay once the queue
    /// is below half its bound.
    pub(super) fn resume_replay(&mut self, key: usize) {
        let paused = self.conns.get(key).is_some_and(|c| c.replay_paused);
        if !paused || self.over_half_bound(key) {
            return;
        }
        self.conns[key].replay_paused = false;
        let (resumed, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.paused_replays)
            .into_iter()
            .partition(|job| job.key == key);
        self.paused_replays = rest;
        for job in resumed {
            let current = self.conns[key].session.replay_id(&job.stream) == Some(job.replay_id);
            if current {
                self.continue_replay(job);
            }
        }
    }

    /// Ends the replay: releases (or drops) the held live publications and
    /// answers the subscribe.
    fn finish_recovery(&mut self, job: Job, result: Result<Recovery, CommandError>) {
        let last_offset = result.as_ref().ok().map(|r| r.offset);
        if let Some(conn) = self.conns.get_mut(job.key) {
            // On success the last offset stays as a floor (late live copies
            // of what was replayed are dropped); on failure the entry goes.
            conn.session
                .end_recovery(&job.stream, last_offset, self.now_ms, &self.session_config);
        }
        if let Some(slot) = job.catchup {
            let result = result.map(|recovery| CatchupResult {
                conv: job.stream,
                recovery,
                truncated: job.truncated,
            });
            return self.catchup_finished(slot, result);
        }
        if result.is_err() && !job.device_cursor {
            // The subscribe failed as a whole: leave the channel so the
            // client can simply retry it (the inbox, joined at connect,
            // stays joined).
            self.unsubscribe(job.key, &job.stream);
        }
        // The inbox's replay at connect (id 0), not a server-side
        // subscription's: the IM sync follows that one.
        let inbox_at_connect = job.command_id == 0
            && self.conns.get(job.key).is_some_and(|conn| {
                !conn.user.is_empty() && job.stream == crate::channels::personal_channel(&conn.user)
            });
        let key = job.key;
        let reply = match result {
            Ok(recovery) => Reply::Ok {
                id: job.command_id,
                result: ReplyResult::Subscribed {
                    channel: job.stream,
                    recovery: Some(recovery),
                },
            },
            Err((code, message)) => Reply::Error {
                id: job.command_id,
                code,
                message,
            },
        };
        self.send_reply(job.key, &reply);
        if inbox_at_connect {
            self.im_inbox_replayed(key);
        }
    }

    /// Queues one stored entry on the connection in its subprotocol's form.
    fn queue_entry(&mut self, key: usize, entry: &EncodedPush) {
        let Some(binary) = self.conns.get(key).map(|c| c.session.binary()) else {
            return;
        };
        let frame: Bytes = if binary {
            encode_frame(OpCode::Binary, entry.as_bytes(), None)
        } else {
            encode_frame(OpCode::Text, &encode_push_json(entry.envelope()), None)
        };
        self.send_frame(key, frame);
    }
}
