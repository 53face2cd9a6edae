//! The webhook thread's loop: reads the outbox in seq order into the
//! scheduler, runs the attempts it asks for as tasks on the thread's
//! runtime (hyper-util's pooled client), and hands what finished back to
//! the store in batches: delivered (and satisfied) events are deleted,
//! dead ones moved to the dead letters.
//!
//! At least once: an event leaves the outbox only after its backend
//! answered 2xx (or, for `message.undelivered`, after a device was found
//! to have acknowledged the message). A crash before the deletion is
//! committed sends it again after restart, with the same `webhook-id`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringcast_store::{OutboxKind, OutboxRecord, Store, StoreError, Unreadable};

use super::schedule::{Dead, Item, Job, Lane, Policy, Scheduler};
use super::sign::Signer;
use super::{body, kind_index, Stop, Waker, WebhookMetrics};
use super::{POLL_INTERVAL, READ_PAGE_MAX, RESPONSE_BYTES_MAX};
use crate::backend_http::{read_body, send_json, BackendClient};
use crate::config::{WebhookEvent, WebhookEvents};
use crate::shard::unix_ms;

/// How long shutdown waits for the loop's last hand-over.
pub const WAIT_STOP_MAX: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub(super) struct Settings {
    pub uri: hyper::Uri,
    pub signer: Arc<Signer>,
    pub timeout: Duration,
    pub policy: Policy,
    pub events: WebhookEvents,
}

pub(super) struct Context {
    pub shared: Arc<crate::engine::Shared>,
    pub settings: Settings,
    pub metrics: Arc<WebhookMetrics>,
    pub waker: Arc<Waker>,
    pub stop: Arc<Stop>,
}

/// How one attempt ended.
enum Outcome {
    /// The backend answered 2xx.
    Delivered,
    /// `message.undelivered`: a device acknowledged the message in time.
    Satisfied,
    /// The record is no longer in the outbox (a parked one read again).
    Gone,
    /// A parked record read again does not decode.
    Unreadable(Unreadable),
    /// Reading a parked record again failed: no attempt was made.
    NotAttempted(String),
    Failed(String),
}

struct Finished {
    seq: u64,
    kind: Option<OutboxKind>,
    outcome: Outcome,
}

/// The config's name for a kind, to filter by `webhook.events`.
fn config_event(kind: OutboxKind) -> WebhookEvent {
    match kind {
        OutboxKind::Message => WebhookEvent::Message,
        OutboxKind::Online => WebhookEvent::Online,
        OutboxKind::Offline => WebhookEvent::Offline,
        OutboxKind::Undelivered => WebhookEvent::Undelivered,
    }
}

fn lane(kind: OutboxKind) -> Lane {
    match kind {
        OutboxKind::Undelivered => Lane::Alone,
        OutboxKind::Message | OutboxKind::Online | OutboxKind::Offline => Lane::Ordered,
    }
}

async fn await_store<T>(
    reply: Result<futures_channel::oneshot::Receiver<Result<T, StoreError>>, StoreError>,
) -> Result<T, StoreError> {
    match reply {
        Ok(receiver) => receiver.await.unwrap_or(Err(StoreError::Closed)),
        Err(err) => Err(err),
    }
}

/// What the loop holds between turns.
struct State {
    scheduler: Scheduler,
    /// Records of the events loaded and not parked, by seq.
    records: HashMap<u64, Arc<OutboxRecord>>,
    /// Since when each event loaded and not finished is pending (its
    /// `time_ms`, or for an undelivered one its due time), by seq ...
    times: HashMap<u64, u64>,
    /// ... and by that time, for the oldest.
    by_time: BTreeSet<(u64, u64)>,
    /// Finished events to delete from the outbox.
    done: Vec<u64>,
    /// Events to move to the dead letters, not yet handed to the store.
    dead: Vec<Dead>,
    /// Dead letters handed to the store and not yet confirmed.
    dead_in_store: usize,
    /// After the store failed a dead letter: not again before this.
    dead_retry_at: Option<tokio::time::Instant>,
}

impl State {
    fn new(policy: Policy, seed: u64) -> State {
        State {
            scheduler: Scheduler::new(policy, seed),
            records: HashMap::new(),
            times: HashMap::new(),
            by_time: BTreeSet::new(),
            done: Vec::new(),
            dead: Vec::new(),
            dead_in_store: 0,
            dead_retry_at: None,
        }
    }

    fn pending_since(&mut self, seq: u64, since_ms: u64) {
        self.times.insert(seq, since_ms);
        self.by_time.insert((since_ms, seq));
    }

    fn finished(&mut self, seq: u64) {
        if let Some(since_ms) = self.times.remove(&seq) {
            self.by_time.remove(&(since_ms, seq));
        }
    }

    /// The oldest pending time that has come; an undelivered event waiting
    /// for its due time is not late yet. 0 if none.
    fn oldest_pending(&self, now_ms: u64) -> u64 {
        self.by_time.first().map_or(
            0,
            |&(since_ms, _)| if since_ms <= now_ms { since_ms } else { 0 },
        )
    }
}

/// What the loop's tasks report.
enum Report {
    Finished(Finished),
    Page(Result<Vec<Result<OutboxRecord, Unreadable>>, StoreError>),
    /// The store's answer to a dead letter.
    DeadStored(Dead, Result<u64, StoreError>),
}

pub(super) async fn run(cx: Context) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut state = State::new(cx.settings.policy, seed);
    let client = crate::backend_http::pooled_client();
    let store = &cx.shared.store;
    // At most `concurrency_max` attempts and one read report at a time.
    let (report_tx, mut report_rx) = tokio::sync::mpsc::unbounded_channel::<Report>();
    let mut reading = false;
    let mut requested = 0usize;
    // Whether the outbox may hold records past what was read.
    let mut dirty = true;
    let mut poll_at = tokio::time::Instant::now() + POLL_INTERVAL;
    let mut read_error_logged = false;
    while !cx.stop.requested.load(Ordering::Acquire) {
        let now_ms = unix_ms();
        let room = state.scheduler.room();
        if !reading && dirty && room > 0 {
            requested = room.min(READ_PAGE_MAX);
            dirty = false;
            match store.outbox_read(state.scheduler.read_after(), requested) {
                Ok(receiver) => {
                    reading = true;
                    let report_tx = report_tx.clone();
                    tokio::spawn(async move {
                        let page = receiver.await.unwrap_or(Err(StoreError::Closed));
                        let _ = report_tx.send(Report::Page(page));
                    });
                }
                // Tried again at the next poll.
                Err(err) => log_read_error(&mut read_error_logged, &err),
            }
        }
        while let Some(job) = state.scheduler.poll_job(now_ms) {
            let record = state.records.get(&job.seq).cloned();
            let attempt = attempt(&cx, &client, job, record);
            let report_tx = report_tx.clone();
            tokio::spawn(async move {
                let _ = report_tx.send(Report::Finished(attempt.await));
            });
        }
        flush(store, &mut state, &report_tx);
        cx.metrics
            .oldest_pending_time_ms
            .store(state.oldest_pending(now_ms), Ordering::Relaxed);
        let timer_at = state.scheduler.next_timer_ms().map(|at_ms| {
            tokio::time::Instant::now() + Duration::from_millis(at_ms.saturating_sub(now_ms))
        });
        let wake_at = timer_at.map_or(poll_at, |at| at.min(poll_at));
        tokio::select! {
            biased;
            () = cx.stop.notify.notified() => {}
            Some(report) = report_rx.recv() => {
                let mut next = Some(report);
                while let Some(report) = next {
                    match report {
                        Report::Finished(finished) => on_finished(&cx, &mut state, finished),
                        Report::Page(Ok(page)) => {
                            reading = false;
                            read_error_logged = false;
                            // A full page: there may be more right behind it.
                            dirty |= page.len() >= requested;
                            load(&cx, &mut state, page);
                        }
                        Report::Page(Err(err)) => {
                            reading = false;
                            log_read_error(&mut read_error_logged, &err);
                        }
                        Report::DeadStored(dead, result) => on_dead_stored(&mut state, dead, result),
                    }
                    next = report_rx.try_recv().ok();
                }
            }
            () = cx.waker.notify.notified() => dirty = true,
            () = tokio::time::sleep_until(wake_at) => {
                if tokio::time::Instant::now() >= poll_at {
                    dirty = true;
                    poll_at = tokio::time::Instant::now() + POLL_INTERVAL;
                }
            }
        }
    }
    // What finished is handed over; what is in flight goes again next start.
    while let Ok(report) = report_rx.try_recv() {
        if let Report::Finished(finished) = report {
            on_finished(&cx, &mut state, finished);
        }
    }
    // Dead letters not confirmed stay in the outbox: tried again next start.
    flush(store, &mut state, &report_tx);
}

fn log_read_error(logged: &mut bool, err: &StoreError) {
    if !*logged {
        tracing::warn!(error = %err, "webhooks: reading the outbox failed");
        *logged = true;
    }
}

/// Takes a page of the outbox into the scheduler.
fn load(cx: &Context, state: &mut State, page: Vec<Result<OutboxRecord, Unreadable>>) {
    let now_ms = unix_ms();
    for record in page {
        let record = match record {
            Ok(record) => record,
            Err(unreadable) => {
                if unreadable.seq > state.scheduler.read_after() {
                    state.scheduler.skip(unreadable.seq);
                    dead_unreadable(cx, state, unreadable);
                }
                continue;
            }
        };
        if record.seq <= state.scheduler.read_after() {
            continue;
        }
        if !cx.settings.events.contains(config_event(record.kind)) {
            // Written under an older `webhook.events`: not wanted now.
            state.scheduler.skip(record.seq);
            state.done.push(record.seq);
            continue;
        }
        state.pending_since(record.seq, record.time_ms.max(record.due_ms));
        let item = Item {
            seq: record.seq,
            key: record.key.clone(),
            lane: lane(record.kind),
            due_ms: record.due_ms,
        };
        if state.scheduler.push(now_ms, item) {
            state.records.insert(record.seq, Arc::new(record));
        }
    }
}

/// A record no attempt can be made of goes to the dead letters as it is
/// (the list shows it with its error); it must not stop the others.
fn dead_unreadable(cx: &Context, state: &mut State, unreadable: Unreadable) {
    tracing::error!(seq = unreadable.seq, reason = %unreadable.reason, "webhooks: undecodable outbox record dead-lettered");
    cx.metrics.dead_lettered.add(1);
    state.dead.push(Dead {
        seq: unreadable.seq,
        attempts: 0,
        last_error: format!("undecodable record: {}", unreadable.reason),
    });
}

fn on_dead_stored(state: &mut State, dead: Dead, result: Result<u64, StoreError>) {
    state.dead_in_store -= 1;
    if let Err(err) = result {
        tracing::debug!(seq = dead.seq, error = %err, "webhooks: dead letter not written, tried again");
        state.dead.push(dead);
        state.dead_retry_at = Some(tokio::time::Instant::now() + POLL_INTERVAL);
    }
}

fn on_finished(cx: &Context, state: &mut State, finished: Finished) {
    let now_ms = unix_ms();
    let Finished { seq, kind, outcome } = finished;
    let metrics = &cx.metrics;
    match outcome {
        Outcome::Delivered | Outcome::Satisfied | Outcome::Gone => {
            state.scheduler.done(now_ms, seq);
            state.records.remove(&seq);
            state.finished(seq);
            match (outcome, kind) {
                (Outcome::Delivered, Some(kind)) => metrics.delivered[kind_index(kind)].add(1),
                (Outcome::Satisfied, _) => metrics.undelivered_satisfied.add(1),
                _ => {}
            }
            state.done.push(seq);
        }
        Outcome::Unreadable(unreadable) => {
            state.scheduler.done(now_ms, seq);
            state.records.remove(&seq);
            state.finished(seq);
            dead_unreadable(cx, state, unreadable);
        }
        Outcome::NotAttempted(error) => {
            tracing::debug!(seq, %error, "webhook attempt not made");
            state.scheduler.not_attempted(now_ms, seq);
        }
        Outcome::Failed(error) => {
            metrics.attempts_failed.add(1);
            tracing::debug!(seq, %error, "webhook attempt failed");
            // Parked while it waits (or dead): read again for its retry.
            state.records.remove(&seq);
            if let Some(dead) = state.scheduler.failed(now_ms, seq, &error) {
                tracing::warn!(
                    seq,
                    attempts = dead.attempts,
                    error = %dead.last_error,
                    "webhook event dead-lettered"
                );
                metrics.dead_lettered.add(1);
                state.finished(seq);
                state.dead.push(dead);
            }
        }
    }
}

/// Hands finished events to the store; what it cannot take now (its queue
/// is full) is tried again next turn. A dead letter stays here until the
/// store confirms it was written: one refused is tried again later, never
/// forgotten while still in the outbox.
fn flush(store: &Store, state: &mut State, report_tx: &tokio::sync::mpsc::UnboundedSender<Report>) {
    if !state.done.is_empty() {
        match store.outbox_done(state.done.clone()) {
            Ok(()) => state.done.clear(),
            Err(err) => tracing::debug!(error = %err, "webhooks: outbox_done deferred"),
        }
    }
    if state
        .dead_retry_at
        .is_some_and(|at| tokio::time::Instant::now() < at)
    {
        return;
    }
    state.dead_retry_at = None;
    while let Some(dead) = state.dead.pop() {
        match store.outbox_dead(dead.seq, dead.attempts, dead.last_error.clone()) {
            Ok(reply) => {
                state.dead_in_store += 1;
                let report_tx = report_tx.clone();
                tokio::spawn(async move {
                    let result = reply.await.unwrap_or(Err(StoreError::Closed));
                    let _ = report_tx.send(Report::DeadStored(dead, result));
                });
            }
            Err(err) => {
                tracing::debug!(error = %err, "webhooks: outbox_dead deferred");
                state.dead.push(dead);
                state.dead_retry_at = Some(tokio::time::Instant::now() + POLL_INTERVAL);
                break;
            }
        }
    }
}

/// One attempt: read a parked record again, check an undelivered message's
/// acknowledgement, sign and POST.
fn attempt(
    cx: &Context,
    client: &BackendClient,
    job: Job,
    record: Option<Arc<OutboxRecord>>,
) -> impl std::future::Future<Output = Finished> + 'static {
    let shared = cx.shared.clone();
    let settings = cx.settings.clone();
    let client = client.clone();
    async move {
        let record = match record {
            Some(record) => record,
            None => {
                let page =
                    await_store(shared.store.outbox_read(job.seq.saturating_sub(1), 1)).await;
                let first = page.map(|page| {
                    page.into_iter().next().filter(|item| match item {
                        Ok(record) => record.seq == job.seq,
                        Err(unreadable) => unreadable.seq == job.seq,
                    })
                });
                match first {
                    Ok(Some(Ok(record))) => Arc::new(record),
                    Ok(Some(Err(unreadable))) => {
                        return Finished {
                            seq: job.seq,
                            kind: None,
                            outcome: Outcome::Unreadable(unreadable),
                        }
                    }
                    Ok(None) => {
                        return Finished {
                            seq: job.seq,
                            kind: None,
                            outcome: Outcome::Gone,
                        }
                    }
                    Err(err) => {
                        return Finished {
                            seq: job.seq,
                            kind: None,
                            outcome: Outcome::NotAttempted(format!("reading the outbox: {err}")),
                        }
                    }
                }
            }
        };
        let kind = Some(record.kind);
        let outcome = if record.kind == OutboxKind::Undelivered
            && acknowledged(&shared.store, &record).await
        {
            Outcome::Satisfied
        } else {
            deliver(&settings, &client, &record).await
        };
        Finished {
            seq: job.seq,
            kind,
            outcome,
        }
    }
}

/// Whether some device of the user acknowledged the record's message: a
/// cursor in its stream's epoch at or past its offset. A failed read counts
/// as "no" (a spare push beats a missed one).
async fn acknowledged(store: &Store, record: &OutboxRecord) -> bool {
    let Some(entry) = &record.entry else {
        return false;
    };
    let env = entry.envelope();
    let (offset, epoch) = (env.offset.to_native(), env.epoch.to_native());
    match await_store(store.max_cursor(&record.key, env.channel.as_str())).await {
        Ok(Some(cursor)) => cursor.epoch == epoch && cursor.offset >= offset,
        Ok(None) => false,
        Err(err) => {
            tracing::debug!(error = %err, "webhooks: reading cursors failed");
            false
        }
    }
}

async fn deliver(settings: &Settings, client: &BackendClient, record: &OutboxRecord) -> Outcome {
    let id = body::event_id(record);
    let body = body::build(record);
    let timestamp_s = unix_ms() / 1000;
    let signature = settings.signer.signature(&id, timestamp_s, &body);
    let headers = [
        ("webhook-id", id),
        ("webhook-timestamp", timestamp_s.to_string()),
        ("webhook-signature", signature),
    ];
    let post = send_json(client, settings.uri.clone(), &headers, Bytes::from(body));
    let response = match tokio::time::timeout(settings.timeout, post).await {
        Ok(Ok(response)) => response,
        Ok(Err(err)) => return Outcome::Failed(err.to_string()),
        Err(_elapsed) => {
            return Outcome::Failed(format!(
                "no answer within {} ms",
                settings.timeout.as_millis()
            ))
        }
    };
    let status = response.status();
    // The status decides; the body is read (so the connection can be used
    // again) and ignored: one too large, broken off or slow changes nothing.
    let _ = tokio::time::timeout(settings.timeout, read_body(response, RESPONSE_BYTES_MAX)).await;
    if status.is_success() {
        Outcome::Delivered
    } else {
        Outcome::Failed(format!("HTTP status {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        let policy = Policy {
            concurrency_max: 1,
            attempts_max: 1,
            backoff_min_ms: 10,
            backoff_max_ms: 10,
            window_max: 4,
            parked_max: 4,
            key_held_max: 1,
        };
        State::new(policy, 1)
    }

    #[test]
    fn oldest_pending_leaves_out_undelivered_events_not_yet_due() {
        let mut state = state();
        // An undelivered event written at 900, due at 5_000 (the lower
        // seq), and a message written at 1_000.
        state.pending_since(1, 5_000);
        state.pending_since(2, 1_000);
        assert_eq!(state.oldest_pending(2_000), 1_000);
        state.finished(2);
        assert_eq!(state.oldest_pending(2_000), 0, "only a parked one left");
        assert_eq!(state.oldest_pending(6_000), 5_000, "late from its due time");
        state.finished(1);
        assert_eq!(state.oldest_pending(6_000), 0);
    }
}
