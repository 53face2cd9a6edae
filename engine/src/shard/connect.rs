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
use crate::session::CloseReason;

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
            Ok(Decision::Allow { data, overrides }) => {
                match admission::apply_overrides(
                    &self.shared.config,
                    &mut admitted,
                    overrides.as_deref(),
                ) {
                    Ok(()) => Ok(Decision::Allow { data, overrides }),
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
    /// expires within `websocket.refresh_proxy_margin_ms` and no call is
    /// out for it.
    pub(super) fn wants_refresh(&self, key: usize) -> bool {
        let ws = &self.shared.config.websocket;
        self.conns.get(key).is_some_and(|conn| {
            let expires_at_ms = conn.session.expires_at_ms();
            conn.session.is_open()
                && !conn.refresh_in_flight
                && expires_at_ms != 0
                && self.now_ms + ws.refresh_proxy_margin.as_millis() as u64 >= expires_at_ms
        })
    }

    /// Asks the refresh proxy to extend `key`'s expiry.
    pub(super) fn start_refresh(&mut self, key: usize, proxy: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.refresh_in_flight = true;
        let to = ReplyTo {
            key,
            client_id: conn.client_id,
            id: 0,
        };
        let body = crate::proxy::refresh_body(
            conn.client_id,
            &conn.user,
            conn.session.expires_at_ms() / 1000,
        );
        let answer = self.ask_backend(ProxyEvent::Refresh, proxy, body);
        self.store_replies.push(Box::pin(async move {
            let (result, latency_us) = answer.await;
            StoreDone::Refreshed(to, result, latency_us)
        }));
    }

    /// The refresh proxy answered: extend, close, or (it failed) leave the
    /// connection to be asked again at a later sweep, until its expiry
    /// closes it with 4001.
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
        let Some(conn) = self
            .conns
            .get_mut(to.key)
            .filter(|conn| conn.client_id == to.client_id)
        else {
            return;
        };
        conn.refresh_in_flight = false;
        if !conn.session.is_open() {
            return;
        }
        let (code, reason) = match result {
            Ok(_) if expire_at == Some(0) => {
                conn.session.set_expires_at_ms(0);
                return;
            }
            Ok(Decision::Allow { .. }) => {
                let expires_at_ms = expire_at.unwrap_or(0).saturating_mul(1000);
                if expires_at_ms > now_ms {
                    conn.session.set_expires_at_ms(expires_at_ms);
                    return;
                }
                (CloseCode::TOKEN_EXPIRED, "token expired")
            }
            Ok(Decision::Deny { .. }) => (CloseCode::TOKEN_EXPIRED, "refresh denied"),
            Ok(Decision::Disconnect { code, .. }) => {
                (CloseCode(code), "disconnected by the backend")
            }
            Err(err) => {
                // Asked again at a later sweep; the expiry closes it with
                // 4001 if the backend never answers.
                tracing::debug!(client = to.client_id, error = %err, "the refresh proxy failed");
                return;
            }
        };
        self.close(
            to.key,
            CloseReason {
                code,
                reason,
                flush_queue: true,
            },
        );
    }
}
