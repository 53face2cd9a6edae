//! The `connect` and `refresh` proxies on a shard: an upgrade that
//! `admission::admit` accepted waits (its session awaiting admission,
//! nothing read or sent) while the connect proxy decides whether and as
//! whom it is let in; a connection near its expiry is extended (or closed)
//! by the refresh proxy, asked from the heartbeat sweep. Like every proxy
//! call, both run on the proxy thread and come back as a `StoreDone`: the
//! shard never waits for a backend.
//!
//! A refused connect completes the upgrade and closes at once (4403 with
//! the backend's message, the backend's own 4500-4999 code, or 1013 when
//! the backend failed): a browser sees no HTTP refusal's status or body,
//! but it does see a close code and reason.

use std::future::Future;
use std::time::Instant;

use bytes::Bytes;
use ringcast_protocol::close::CloseCode;
use ringcast_protocol::handshake::{selected_headers, UpgradeRequest};

use super::commands::{ReplyTo, StoreDone};
use super::Shard;
use crate::admission::{self, Admitted};
use crate::proxy::{Decision, ProxyError, ProxyEvent};

/// How much longer than the connect proxy's timeout a connection may wait
/// for its decision before the session refuses it by itself (503): the
/// proxy thread answers within the timeout, so this only fires when it
/// cannot answer at all.
const ADMISSION_MARGIN_MS: u64 = 1_000;

/// A connect proxy's answer, back on the shard with the upgrade it is for.
pub(super) struct AdmissionAnswer {
    key: usize,
    client_id: u64,
    admitted: Admitted,
    result: Result<Decision, ProxyError>,
    latency_us: u64,
}

impl Shard {
    /// Hands `event`'s call to backend `proxy`, counting it; the future
    /// yields the answer and how long it took, in microseconds.
    pub(super) fn ask_backend(
        &self,
        event: ProxyEvent,
        proxy: usize,
        body: Vec<u8>,
    ) -> impl Future<Output = (Result<Decision, ProxyError>, u64)> + 'static {
        self.metrics().proxy[event.index()].calls.add(1);
        let started = Instant::now();
        let answer = self
            .shared
            .proxies
            .as_ref()
            .map(|proxies| proxies.call(proxy, body));
        async move {
            let result = match answer {
                Some(answer) => answer.await.unwrap_or(Err(ProxyError::Stopped)),
                None => Err(ProxyError::Stopped),
            };
            (result, started.elapsed().as_micros() as u64)
        }
    }

    fn record_proxy(
        &self,
        event: ProxyEvent,
        latency_us: u64,
        result: &Result<Decision, ProxyError>,
    ) {
        self.metrics().proxy[event.index()].record(latency_us, result);
    }

    /// The configured connect proxy's index, if any.
    pub(super) fn connect_proxy(&self) -> Option<usize> {
        let config = &self.shared.config;
        config.proxy_index(&config.websocket.connect_proxy)
    }

    /// Asks the connect proxy about the upgrade `admitted` (accepted by
    /// `admit`) and parks the connection until the answer.
    pub(super) fn start_admission(
        &mut self,
        key: usize,
        proxy: usize,
        request: &UpgradeRequest,
        admitted: Admitted,
    ) {
        let client_id = self.next_client_id();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let headers = selected_headers(
            conn.session.request_head(),
            &self.shared.config.websocket.connect_proxy_headers,
            &self.session_config.handshake,
        );
        let timeout_ms = self
            .shared
            .proxies
            .as_ref()
            .and_then(|proxies| proxies.timeout(proxy))
            .map_or(0, |timeout| timeout.as_millis() as u64);
        conn.session
            .await_admission(self.now_ms, client_id, timeout_ms + ADMISSION_MARGIN_MS);
        let body = crate::proxy::connect_body(
            client_id,
            &admitted.user,
            headers,
            self.handshakes.source(key),
            &request.path,
            request.query.as_deref(),
        );
        let answer = self.ask_backend(ProxyEvent::Connect, proxy, body);
        self.store_replies.push(Box::pin(async move {
            let (result, latency_us) = answer.await;
            StoreDone::Admission(Box::new(AdmissionAnswer {
                key,
                client_id,
                admitted,
                result,
                latency_us,
            }))
        }));
    }

    /// The connect proxy decided: open the connection with what it set, or
    /// complete the upgrade only to close with the refusal.
    pub(super) fn on_admission(&mut self, answer: Box<AdmissionAnswer>) {
        let AdmissionAnswer {
            key,
            client_id,
            mut admitted,
            result,
            latency_us,
        } = *answer;
        let current = self
            .conns
            .get(key)
            .is_some_and(|conn| conn.session.admitting() == Some(client_id));
        let result = match result {
            Ok(Decision::Allow {
                data,
                overrides,
                skip_history,
            }) => {
                match admission::apply_overrides(
                    &self.shared.config,
                    &mut admitted,
                    overrides.as_deref(),
                ) {
                    Ok(()) => Ok(Decision::Allow {
                        data,
                        overrides,
                        skip_history,
                    }),
                    Err(why) => Err(ProxyError::BadResponse(why)),
                }
            }
            other => other,
        };
        self.record_proxy(ProxyEvent::Connect, latency_us, &result);
        if !current {
            // The connection went (or its slot is someone else's now).
            return;
        }
        let at_capacity =
            self.n_open >= self.shared.config.websocket.connections_max_per_shard as usize;
        let (code, reason) = match result {
            Ok(Decision::Allow { .. }) if at_capacity => {
                (CloseCode::TRY_AGAIN_LATER, "at capacity".to_owned())
            }
            // Refused before it opens: no online event, no subscriptions.
            Ok(Decision::Allow { .. })
                if admitted.expires_at_ms != 0 && admitted.expires_at_ms <= self.now_ms =>
            {
                (CloseCode::TOKEN_EXPIRED, "token expired".to_owned())
            }
            Ok(Decision::Allow { .. }) => {
                self.open(key, admitted, client_id);
                // Frames the client sent while it waited.
                self.read_frames(key, true);
                return;
            }
            Ok(Decision::Deny { code, message }) => {
                tracing::debug!(client = client_id, code, %message, "the connect proxy denied");
                let message = if message.is_empty() {
                    "connection denied".to_owned()
                } else {
                    message
                };
                (CloseCode::CONNECT_DENIED, message)
            }
            Ok(Decision::Disconnect { code, reason }) => (CloseCode(code), reason),
            Err(err) => {
                // Counted in the proxy metrics; a line per refused upgrade would
                // flood the log while a backend is down.
                tracing::debug!(client = client_id, error = %err, "the connect proxy failed");
                let reason = match err {
                    ProxyError::Timeout(_) => "connect proxy: timeout",
                    ProxyError::Unavailable(_) | ProxyError::Stopped => {
                        "connect proxy: unavailable"
                    }
                    ProxyError::BadResponse(_) => "connect proxy: bad response",
                };
                (CloseCode::TRY_AGAIN_LATER, reason.to_owned())
            }
        };
        self.metrics().handshakes_failed.add(1);
        self.handshakes.ended(key);
        if let Some(conn) = self.conns.get_mut(key) {
            conn.session.accept_then_close(
                self.now_ms,
                Bytes::from(admitted.response),
                code,
                &reason,
                &self.session_config,
            );
        }
        self.mark_dirty(key);
    }

    /// Whether the sweep should ask the refresh proxy about `key` now: it
    /// expires within `websocket.refresh_proxy_margin_ms`, no call is out
    /// for it, and its backoff (after a failure, or an answer that left it
    /// within the margin) has passed.
    pub(super) fn wants_refresh(&self, key: usize) -> bool {
        let ws = &self.shared.config.websocket;
        self.conns.get(key).is_some_and(|conn| {
            let expires_at_ms = conn.session.expires_at_ms();
            conn.session.is_open()
                && !conn.refresh_in_flight
                && expires_at_ms != 0
                && self.now_ms + ws.refresh_proxy_margin.as_millis() as u64 >= expires_at_ms
                && self.now_ms >= conn.refresh_next_ms()
        })
    }

    /// Asks the refresh proxy to extend `key`'s expiry.
    pub(super) fn start_refresh(&mut self, key: usize, proxy: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.refresh_in_flight = true;
        let expires_at_ms = conn.session.expires_at_ms();
        let to = ReplyTo {
            key,
            client_id: conn.client_id,
            id: expires_at_ms,
        };
        let body = crate::proxy::refresh_body(conn.client_id, &conn.user, expires_at_ms / 1000);
        let answer = self.ask_backend(ProxyEvent::Refresh, proxy, body);
        self.store_replies.push(Box::pin(async move {
            let (result, latency_us) = answer.await;
            StoreDone::Refreshed(to, result, latency_us)
        }));
    }

    /// The refresh proxy answered: extend, close, or (it failed) ask again
    /// after a backoff, until the expiry closes the connection with 4001.
    /// An answer to a call made for an expiry the connection no longer has
    /// (the client sent its own `refresh` meanwhile) is dropped, and an
    /// allow never shortens the expiry.
    pub(super) fn on_refreshed(
        &mut self,
        to: ReplyTo,
        result: Result<Decision, ProxyError>,
        latency_us: u64,
    ) {
        let expire_at = match &result {
            Ok(Decision::Allow { overrides, .. }) => overrides.as_ref().and_then(|o| o.expire_at),
            _ => None,
        };
        let result = match result {
            Ok(Decision::Allow { .. }) if expire_at.is_none() => Err(ProxyError::BadResponse(
                "the result has no `expire_at`".into(),
            )),
            other => other,
        };
        self.record_proxy(ProxyEvent::Refresh, latency_us, &result);
        let now_ms = self.now_ms;
        let margin_ms = self
            .shared
            .config
            .websocket
            .refresh_proxy_margin
            .as_millis() as u64;
        let Some(conn) = self
            .conns
            .get_mut(to.key)
            .filter(|conn| conn.client_id == to.client_id)
        else {
            return;
        };
        conn.refresh_in_flight = false;
        let current_ms = conn.session.expires_at_ms();
        if !conn.session.is_open() || current_ms != to.id {
            return;
        }
        let (code, reason) = match result {
            Ok(Decision::Allow { .. }) => {
                let asked_ms = expire_at.unwrap_or(0).saturating_mul(1000);
                // 0 is "never"; otherwise never shorter than it was.
                let expires_at_ms = if asked_ms == 0 {
                    0
                } else {
                    asked_ms.max(current_ms)
                };
                conn.session.set_expires_at_ms(expires_at_ms);
                // Still within the margin: asked again only halfway to the
                // expiry, not at every sweep.
                let next_ms = if expires_at_ms != 0 && now_ms + margin_ms >= expires_at_ms {
                    now_ms + expires_at_ms.saturating_sub(now_ms) / 2
                } else {
                    0
                };
                conn.set_refresh_backoff(next_ms, 0);
                return;
            }
            Ok(Decision::Deny { .. }) => (CloseCode::TOKEN_EXPIRED, "refresh denied".to_owned()),
            Ok(Decision::Disconnect { code, reason }) => (CloseCode(code), reason),
            Err(err) => {
                tracing::debug!(client = to.client_id, error = %err, "the refresh proxy failed");
                let failures = conn.refresh_failures().saturating_add(1);
                let next_ms = refresh_retry_at(now_ms, current_ms, failures, to.client_id);
                conn.set_refresh_backoff(next_ms, failures);
                return;
            }
        };
        conn.session
            .close_with(now_ms, code, &reason, true, &self.session_config);
        self.mark_dirty(to.key);
    }

    /// The window at connect (docs/cluster.md): in a cluster, a new
    /// connection is written nothing (neither the 101 nor `connect`) until
    /// the owner of its user's inbox partition (unless the connection
    /// recovers its inbox: `inbox` false) and the IM partition's owner
    /// (with the IM layer) have this node's registration of the user, when
    /// they are other nodes. Registrations are not answered, so a question
    /// about the user sent after it, on the same subject, is the barrier:
    /// once it is answered, everything sent to the user is forwarded here.
    /// A recovering connection's inbox needs no barrier: its read goes the
    /// same way. The question is answered or failed within
    /// `cluster.request_timeout_ms`; the connection is written then either
    /// way (with the owner unreachable, sends to the user fail too).
    pub(super) fn await_registration(
        &mut self,
        key: usize,
        client_id: u64,
        user: &str,
        inbox: bool,
    ) {
        let Some(registered) = crate::cluster::registered(&self.shared, user, inbox) else {
            return;
        };
        if let Some(conn) = self.conns.get_mut(key) {
            conn.corked = true;
        }
        self.store_replies.push(Box::pin(async move {
            registered.await;
            StoreDone::Registered(key, client_id)
        }));
    }

    /// The barrier of [`Shard::await_registration`] passed.
    pub(super) fn on_registered(&mut self, key: usize, client_id: u64) {
        match self.conns.get_mut(key) {
            Some(conn) if conn.client_id == client_id => conn.corked = false,
            _ => return,
        }
        self.mark_dirty(key);
    }
}

/// The first wait before asking the refresh proxy again after a failed
/// call; it doubles with each failure in a row.
const REFRESH_RETRY_FIRST_MS: u64 = 1_000;

/// When to ask the refresh proxy again after `failures` failed calls in a
/// row for a connection expiring at `expires_at_ms`: 1 s doubling, drawn
/// from its upper half by the connection's id (connections that failed
/// together retry apart), and never past halfway to the expiry, so a
/// last try still comes before it.
fn refresh_retry_at(now_ms: u64, expires_at_ms: u64, failures: u32, client_id: u64) -> u64 {
    let backoff = REFRESH_RETRY_FIRST_MS.saturating_mul(1 << failures.saturating_sub(1).min(20));
    let half = backoff / 2;
    let jittered = half + spread(client_id ^ (u64::from(failures) << 32)) % (half + 1);
    now_ms + jittered.min(expires_at_ms.saturating_sub(now_ms) / 2)
}

/// A well-mixed number from `x` (splitmix64's finalizer).
fn spread(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::refresh_retry_at;

    #[test]
    fn refresh_retries_back_off_doubling_with_jitter_and_end_before_the_expiry() {
        let expires = 1_000_000_000;
        let now = expires - 1_000_000;
        let waits: Vec<u64> = (1..=6)
            .map(|failures| refresh_retry_at(now, expires, failures, 7) - now)
            .collect();
        for (i, wait) in waits.iter().enumerate() {
            let backoff = 1_000 << i;
            assert!(
                (backoff / 2..=backoff).contains(wait),
                "failure {}: waited {wait} ms",
                i + 1
            );
        }
        let spread: std::collections::HashSet<u64> = (0..50)
            .map(|client| refresh_retry_at(now, expires, 4, client))
            .collect();
        assert!(
            spread.len() > 10,
            "connections that failed together retry apart"
        );
        // Near the expiry, never past halfway to it.
        let now = expires - 3_000;
        assert_eq!(refresh_retry_at(now, expires, 5, 7), now + 1_500);
    }
}
