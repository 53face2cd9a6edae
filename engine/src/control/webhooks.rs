//! The webhook routes of the API: list the dead letters, replay them, and
//! the webhook lines of `/metrics`.
//!
//! - `GET /api/webhooks/dead?after=<seq>&limit=<n>`: dead letters in seq
//!   order, each with the body it would send;
//! - `POST /api/webhooks/replay` with `{"seqs":[...]}` or `{"all":true}`:
//!   back into the outbox (new seqs, same event ids), answered
//!   `{"replayed": n}`.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::api::{bad_request, store_error_response};
use super::http::{Request, Response};
use crate::engine::Shared;
use crate::webhook::body;

/// Most dead letters one list answers.
pub const DEAD_LIST_LIMIT_MAX: usize = 1000;
const DEAD_LIST_LIMIT_DEFAULT: usize = 100;
/// Most seqs one replay names: what the store moves in one batch.
pub const REPLAY_SEQS_MAX: usize = ringcast_store::DEAD_REPLAY_MAX;
/// Batches one `{"all": true}` replay moves at most (the dead letters
/// could grow while it runs); past that it answers what it moved.
const REPLAY_ALL_BATCHES_MAX: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    #[serde(default)]
    seqs: Option<Vec<u64>>,
    #[serde(default)]
    all: bool,
}

fn query_u64(req: &Request, name: &str) -> Result<Option<u64>, Response> {
    let Some(query) = req.query.as_deref() else {
        return Ok(None);
    };
    for pair in query.split('&') {
        if let Some(value) = pair
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
        {
            return value
                .parse()
                .map(Some)
                .map_err(|_| bad_request(format!("{name} must be a non-negative integer")));
        }
    }
    Ok(None)
}

fn webhooks_off() -> Response {
    Response::error(
        404,
        "webhooks_off",
        "webhooks are off: set webhook.url to turn them on",
    )
}

/// A store failure on a dead-letter route: nothing was read or moved.
fn dead_letters_failed(err: &ringcast_store::StoreError, what: &str) -> Response {
    if err.source_tag() == ringcast_store::ErrorSource::Resource {
        tracing::debug!(error = %err, "webhooks: the store could not serve a dead-letter request for now");
    } else {
        tracing::warn!(error = %err, "webhooks: the store could not serve a dead-letter request");
    }
    store_error_response(err, what)
}

pub async fn dead(shared: &Shared, req: &Request) -> Result<Response, Response> {
    if shared.webhooks.is_none() {
        return Err(webhooks_off());
    }
    let after = query_u64(req, "after")?.unwrap_or(0);
    let limit = query_u64(req, "limit")?.map_or(DEAD_LIST_LIMIT_DEFAULT as u64, |l| l);
    if limit == 0 || limit > DEAD_LIST_LIMIT_MAX as u64 {
        return Err(bad_request(format!(
            "limit must be 1 to {DEAD_LIST_LIMIT_MAX}"
        )));
    }
    let page = match shared.store.dead_read(after, limit as usize) {
        Ok(reply) => reply
            .await
            .unwrap_or(Err(ringcast_store::StoreError::Closed)),
        Err(err) => Err(err),
    }
    .map_err(|err| dead_letters_failed(&err, "the dead letters could not be read"))?;
    let mut items = Vec::with_capacity(page.len());
    for dead in &page {
        let dead = match dead {
            Ok(dead) => dead,
            Err(unreadable) => {
                // Listed so an operator sees it; replay passes over it.
                items.push(json!({"seq": unreadable.seq, "error": unreadable.reason}));
                continue;
            }
        };
        let record = &dead.record;
        let body = body::build(record);
        // The body is JSON built by `body::build`; kept as it would be sent.
        let body = serde_json::from_slice::<Box<RawValue>>(&body)
            .map_err(|err| Response::error(500, "internal", &err.to_string()))?;
        items.push(json!({
            "id": body::event_id(record),
            "seq": record.seq,
            "type": body::type_name(record.kind),
            "user": record.key,
            "attempts": dead.attempts,
            "last_error": dead.last_error,
            "dead_at_ms": dead.dead_at_ms,
            "body": body,
        }));
    }
    let next_after = page.last().map(|dead| match dead {
        Ok(dead) => dead.record.seq,
        Err(unreadable) => unreadable.seq,
    });
    Ok(Response::json(
        200,
        &json!({"dead": items, "next_after": next_after}),
    ))
}

pub async fn replay(shared: &Shared, req: &Request) -> Result<Response, Response> {
    if shared.webhooks.is_none() {
        return Err(webhooks_off());
    }
    let body: ReplayBody = serde_json::from_slice(&req.body)
        .map_err(|err| bad_request(format!("invalid JSON body: {err}")))?;
    let seqs = match (body.seqs, body.all) {
        (Some(_), true) => return Err(bad_request("give either seqs or all, not both")),
        (None, false) => return Err(bad_request("give seqs (a list) or \"all\": true")),
        (Some(seqs), false) if seqs.is_empty() || seqs.len() > REPLAY_SEQS_MAX => {
            return Err(bad_request(format!(
                "seqs must list 1 to {REPLAY_SEQS_MAX} dead letters"
            )))
        }
        (Some(seqs), false) => Some(seqs),
        (None, true) => None,
    };
    let mut replayed = 0u64;
    for _ in 0..REPLAY_ALL_BATCHES_MAX {
        let moved = match shared.store.dead_replay(seqs.clone()) {
            Ok(reply) => reply
                .await
                .unwrap_or(Err(ringcast_store::StoreError::Closed)),
            Err(err) => Err(err),
        }
        .map_err(|err| dead_letters_failed(&err, "the dead letters were not replayed"))?;
        replayed += moved;
        // `all` moves a batch at a time: again while batches come back full.
        if seqs.is_some() || moved < REPLAY_SEQS_MAX as u64 {
            break;
        }
    }
    Ok(Response::json(200, &json!({"replayed": replayed})))
}

/// The webhook lines of `/metrics`, appended to `out`.
pub fn render_metrics(shared: &Shared, out: &mut String) {
    let Some(webhooks) = &shared.webhooks else {
        return;
    };
    let metrics = &webhooks.metrics;
    let health = shared.store.health();
    family(
        out,
        "webhook_delivered_total",
        "Webhook events the backend accepted (2xx), by type.",
        "counter",
    );
    for kind in [
        ringcast_store::OutboxKind::Message,
        ringcast_store::OutboxKind::Online,
        ringcast_store::OutboxKind::Offline,
        ringcast_store::OutboxKind::Undelivered,
    ] {
        let value = metrics.delivered[crate::webhook::kind_index(kind)].get();
        let _ = writeln!(
            out,
            "ringcast_webhook_delivered_total{{type=\"{}\"}} {value}",
            body::type_name(kind)
        );
    }
    let now_ms = crate::shard::unix_ms();
    let oldest_ms = metrics
        .oldest_pending_time_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    let oldest_s = if oldest_ms == 0 {
        0
    } else {
        now_ms.saturating_sub(oldest_ms) / 1000
    };
    for (name, help, kind, value) in [
        (
            "webhook_attempts_failed_total",
            "Webhook delivery attempts that failed (non-2xx, timeout, connection error).",
            "counter",
            metrics.attempts_failed.get(),
        ),
        (
            "webhook_dead_lettered_total",
            "Webhook events moved to the dead letters after webhook.attempts_max attempts.",
            "counter",
            metrics.dead_lettered.get(),
        ),
        (
            "webhook_undelivered_satisfied_total",
            "message.undelivered events not sent: a device acknowledged the message in time.",
            "counter",
            metrics.undelivered_satisfied.get(),
        ),
        (
            "webhook_dead_letters",
            "Webhook events in the dead letters now (list and replay them through the API).",
            "gauge",
            health.dead_len,
        ),
        (
            "webhook_outbox_pending",
            "Webhook events in the outbox, not yet delivered.",
            "gauge",
            health.outbox_len,
        ),
        (
            "webhook_store_dropped_total",
            "Standalone and presence webhook events, and delivered-event deletions, the store took and then could not write (store poisoned, reopening, or a failed batch).",
            "counter",
            health.outbox_dropped,
        ),
        (
            "webhook_presence_lost_total",
            "user.online and user.offline events the store refused at once (queue full, store down); an Offline is written at the next start for a user left online.",
            "counter",
            shared.presence.lost(),
        ),
        (
            "webhook_oldest_pending_seconds",
            "Age of the oldest webhook event the sender holds and has not finished (0: none).",
            "gauge",
            oldest_s,
        ),
    ] {
        family(out, name, help, kind);
        let _ = writeln!(out, "ringcast_{name} {value}");
    }
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP ringcast_{name} {help}");
    let _ = writeln!(out, "# TYPE ringcast_{name} {kind}");
}
