//! Client commands on a shard: permission checks, subscription changes,
//! publishing (live through the one publish path, or through the store for
//! durable streams), recovery, acks, history and token refresh. Each command
//! gets exactly one reply: at once, or when the store's answer comes back
//! to the loop as a `StoreDone` event.

use ringcast_protocol::client::{
    encode_history_binary, encode_history_json, Command, CommandBody, ErrorCode, Reply,
    ReplyResult, StreamPosition,
};
use ringcast_protocol::envelope::{EncodedPush, Envelope};
use ringcast_protocol::frame::{encode_frame, OpCode};
use std::sync::Arc;

use ringcast_store::{Answer, AppendRequest, Appended, ReadRequest, ReadResult, StoreError};

use super::recovery;
use super::Shard;
use crate::channels;
use crate::limits::HISTORY_LIMIT_MAX;
use crate::mesh::StoreAnswer;
use crate::proxy::{Decision, ProxyError, Subject};
use crate::streams;

pub(crate) type CommandError = (ErrorCode, String);

/// Who a store reply is for: the slot, the connection that was in it when
/// the request left (the slot may be reused meanwhile), the command id.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReplyTo {
    pub key: usize,
    pub client_id: u64,
    pub id: u64,
}

/// A request waiting in the store's writer, by its slot in
/// `Shard::pending_store` (the slot is the request's tag; see
/// `streams::request_tag`).
pub(super) enum StoreWait {
    Published(ReplyTo),
    Acked(ReplyTo),
    ImSent(Box<super::im::SentWait>),
    /// A group message or change, answered like a `msg_send`.
    GroupSent(Box<super::im::SentWait>),
    /// A `recall` or an `edit`.
    Rewritten(ReplyTo),
}

/// A store answer, back on the shard's loop.
pub(super) enum StoreDone {
    Published(ReplyTo, Result<Appended, CommandError>),
    Acked(ReplyTo, Result<u64, CommandError>),
    History(ReplyTo, String, Result<ReadResult, CommandError>),
    Recovery(Box<recovery::Job>, recovery::Step),
    /// A proxy backend's answer (`crate::proxy`), for the parked command.
    Proxied(ReplyTo, Proxied, Result<Decision, ProxyError>),
    /// The connect proxy's answer for an upgrade awaiting admission.
    Admission(Box<super::connect::AdmissionAnswer>),
    /// The owner of a new connection's inbox partition has its user's
    /// registration (slot, client id): the connection may be written.
    Registered(usize, u64),
    /// The refresh proxy's answer for a connection near its expiry (`id`:
    /// the expiry, Unix ms, the call was made for), with the call's
    /// latency in microseconds.
    Refreshed(ReplyTo, Result<Decision, ProxyError>, u64),
    /// A command naming a conversation (as it named it), once its pair
    /// was looked up.
    ImResolved(
        ReplyTo,
        Box<(String, super::im::ImPending)>,
        Result<Arc<crate::im::DmPair>, CommandError>,
    ),
    /// A `read` stored (by the user named, whoever holds the connection's
    /// slot by then), with the user's total unread after it.
    ImRead(
        ReplyTo,
        String,
        String,
        super::im::ReadOf,
        Result<(ringcast_store::ImReadState, u64), CommandError>,
    ),
    ConvList(ReplyTo, Result<ringcast_store::ConvPage, CommandError>),
    /// An IM command answered from store reads alone, or a `recall`,
    /// `edit` or `clear` stored (or refused).
    Replied(ReplyTo, Result<ReplyResult, CommandError>),
    /// A `recall` or an `edit` read and checked, for the writer.
    RewriteReady(
        ReplyTo,
        Result<Box<ringcast_store::ImRewrite>, CommandError>,
    ),
    /// The sync of a new connection (slot, client id).
    ImSync(usize, u64, Result<ringcast_store::ImSync, CommandError>),
    /// A block or a blocks list (`im_signals.rs`).
    ImSignal(ReplyTo, Box<super::im_signals::SignalDone>),
    /// A typing signal's members (`im_typing.rs`).
    ImTyping(Box<super::im_typing::TypingDone>),
    /// A DM's backend policy settled (`crate::im::dm_policy`).
    DmPolicyChecked(
        ReplyTo,
        Box<super::im::DmChecked>,
        Result<bool, crate::im::dm_policy::DmRefusal>,
    ),
    /// An `ack` of a conversation stored (by the user named), with the
    /// delivery position.
    ImAcked(
        ReplyTo,
        String,
        String,
        Result<ringcast_store::ImDelivery, CommandError>,
    ),
    /// A `receipts` page read.
    ImReceipts(
        ReplyTo,
        String,
        Result<ringcast_store::ReceiptPage, CommandError>,
    ),
    /// A group's members, read to push a receipt to them.
    ImGroupReceipt(
        Arc<crate::im::ImFrames>,
        Box<ringcast_protocol::client::ImEvent>,
        String,
        Result<Vec<ringcast_store::GroupMember>, CommandError>,
    ),
    /// A `catchup`'s conversations checked: its replays may start.
    ImCatchup(
        ReplyTo,
        Box<super::im_delivery::CatchupPlan>,
        Result<Vec<super::im_delivery::View>, CommandError>,
    ),
}

/// A command parked while its proxy backend decides.
pub(super) enum Proxied {
    /// A `publish`, or a `send` (to the recipient's inbox channel).
    Publish {
        channel: String,
        data: Vec<u8>,
        data_is_json: bool,
        client_msg_id: Option<String>,
    },
    /// An `rpc`: the backend's answer is the reply.
    Rpc { data: Vec<u8>, data_is_json: bool },
    /// A `subscribe`: carried on as if unproxied once allowed.
    Subscribe {
        channel: String,
        since: Option<ringcast_protocol::client::StreamPosition>,
        /// The subscription token it came with, checked again then.
        token: Option<String>,
    },
}

impl Proxied {
    fn data(&self) -> Option<(&[u8], bool)> {
        match self {
            Proxied::Publish {
                data, data_is_json, ..
            }
            | Proxied::Rpc { data, data_is_json } => Some((data, *data_is_json)),
            Proxied::Subscribe { .. } => None,
        }
    }
}

pub(super) fn proxy_error(err: &ProxyError) -> CommandError {
    let code = match err {
        ProxyError::Timeout(_) => ErrorCode::ProxyTimeout,
        ProxyError::Unavailable(_) | ProxyError::Stopped => ErrorCode::ProxyUnavailable,
        ProxyError::BadResponse(_) => ErrorCode::ProxyBadResponse,
    };
    tracing::debug!(error = %err, "proxy call failed");
    (code, err.to_string())
}

/// What a command produced.
pub(super) enum Outcome {
    /// Reply now with this result.
    Now(ReplyResult),
    /// The reply follows a store answer.
    Later,
}

pub(super) type CommandResult = Result<Outcome, CommandError>;

pub(super) fn store_error(err: &StoreError) -> CommandError {
    // A shortage of fds or memory is logged by the store, rate-limited;
    // one line per refused request would flood the log while it lasts.
    if err.source_tag() == ringcast_store::ErrorSource::Resource {
        tracing::debug!(error = %err, "store request refused for now");
    } else {
        tracing::error!(error = %err, "store request failed");
    }
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

/// Whether `channel` is `user`'s personal channel.
fn is_own_inbox(user: &str, channel: &str) -> bool {
    !user.is_empty() && channel == channels::personal_channel(user)
}

pub(super) fn refuse(code: ErrorCode) -> CommandError {
    (code, code.message().to_string())
}

impl Shard {
    /// Handles `command` from connection `key` and queues (or schedules)
    /// its reply.
    pub(super) fn handle_command(&mut self, key: usize, command: Command) {
        let id = command.id;
        if self.command_limits_on {
            if let Some(limit) = crate::ratelimit::LimitKey::of(&self.shared.config, &command.body)
            {
                if self.rate_limited(key, id, limit) {
                    return;
                }
            }
        }
        let reply = match self.run_command(key, id, command.body) {
            Ok(Outcome::Now(result)) => Reply::Ok { id, result },
            Ok(Outcome::Later) => return,
            Err((code, message)) => Reply::Error { id, code, message },
        };
        self.send_reply(key, &reply);
    }

    fn conn_is_subscribed(&self, key: usize, channel: &str) -> bool {
        self.conns
            .get(key)
            .is_some_and(|c| c.is_subscribed(channel))
    }

    /// Whether slot `key` still holds the connection `to` was for.
    pub(super) fn is_current(&self, key: usize, client_id: u64) -> bool {
        self.conns
            .get(key)
            .is_some_and(|c| c.client_id == client_id && c.session.is_open())
    }

    /// An answer from the store's writer to one of this shard's requests.
    pub(super) fn on_store_answer(&mut self, answer: StoreAnswer) {
        let Some(wait) = self.pending_store.try_remove(answer.slot) else {
            tracing::error!(
                shard = self.idx,
                slot = answer.slot,
                "a store answer for no request"
            );
            return;
        };
        let done = match (wait, answer.answer) {
            (StoreWait::Published(to), Answer::Appended(result)) => {
                StoreDone::Published(to, result.map_err(|err| store_error(&err)))
            }
            (StoreWait::Acked(to), Answer::Cursor(result)) => {
                StoreDone::Acked(to, result.map_err(|err| store_error(&err)))
            }
            (StoreWait::ImSent(wait), Answer::ImAppended(result)) => {
                let result = result
                    .map(|im| im.appended)
                    .map_err(|err| super::im::im_store_error(&err));
                return self.on_im_sent(*wait, result);
            }
            (StoreWait::GroupSent(wait), Answer::Group(result)) => {
                let result = result
                    .map(|group| group.appended)
                    .map_err(|err| super::im::group_store_error(&err));
                return self.on_im_sent(*wait, result);
            }
            (StoreWait::Rewritten(to), Answer::Rewritten(result)) => {
                let result = result
                    .map(|done| ReplyResult::Im(Box::new(crate::im::rewritten_reply(&done))))
                    .map_err(|err| crate::im::rewrite_store_error(&err));
                StoreDone::Replied(to, result)
            }
            (StoreWait::ImSent(wait) | StoreWait::GroupSent(wait), answer) => {
                tracing::error!(
                    shard = self.idx,
                    ?answer,
                    "a store answer of the wrong kind"
                );
                return self.on_im_sent(*wait, Err(store_error(&StoreError::Closed)));
            }
            (
                StoreWait::Published(to) | StoreWait::Acked(to) | StoreWait::Rewritten(to),
                answer,
            ) => {
                tracing::error!(
                    shard = self.idx,
                    ?answer,
                    "a store answer of the wrong kind"
                );
                StoreDone::Acked(to, Err(store_error(&StoreError::Closed)))
            }
        };
        self.on_store_done(done);
    }

    /// The store's writer has stopped (it died: at a clean close the
    /// shards are gone first): no answer will come for what is pending, so
    /// each request is answered with the store's error now.
    pub(super) fn fail_pending_store(&mut self) {
        tracing::error!(
            shard = self.idx,
            pending = self.pending_store.len(),
            "the store's writer stopped; failing the requests waiting for it"
        );
        let failed = std::mem::take(&mut self.pending_store);
        for (_, wait) in failed {
            let error = store_error(&StoreError::Poisoned);
            match wait {
                StoreWait::Published(to) => {
                    self.on_store_done(StoreDone::Published(to, Err(error)))
                }
                StoreWait::Acked(to) => self.on_store_done(StoreDone::Acked(to, Err(error))),
                StoreWait::Rewritten(to) => self.reply_to(to, Err(error)),
                StoreWait::ImSent(wait) | StoreWait::GroupSent(wait) => {
                    self.on_im_sent(*wait, Err(error))
                }
            }
        }
    }

    pub(super) fn on_store_done(&mut self, done: StoreDone) {
        match done {
            StoreDone::Published(to, result) => {
                let result = result.map(|appended| ReplyResult::Published {
                    message_id: appended.message_id.0,
                    offset: appended.offset,
                    epoch: appended.epoch,
                    duplicate: appended.duplicate,
                });
                self.reply_to(to, result);
            }
            StoreDone::Acked(to, result) => {
                self.reply_to(to, result.map(|_| ReplyResult::Empty));
            }
            StoreDone::History(to, stream, result) => self.history_page(to, &stream, result),
            StoreDone::Recovery(job, step) => self.recovery_step(*job, step),
            StoreDone::Proxied(to, pending, result) => self.on_proxied(to, pending, result),
            StoreDone::Admission(answer) => self.on_admission(answer),
            StoreDone::Registered(key, client_id) => self.on_registered(key, client_id),
            StoreDone::Refreshed(to, result, latency_us) => {
                self.on_refreshed(to, result, latency_us)
            }
            StoreDone::ImResolved(to, pending, result) => {
                let (conv, pending) = *pending;
                self.on_im_resolved(to, conv, pending, result);
            }
            StoreDone::ImRead(to, user, conv, of, result) => {
                self.on_im_read(to, &user, conv, of, result)
            }
            StoreDone::ConvList(to, result) => self.on_conv_list(to, result),
            StoreDone::ImSync(key, client_id, result) => self.on_im_sync(key, client_id, result),
            StoreDone::ImSignal(to, done) => self.on_im_signal(to, *done),
            StoreDone::ImTyping(done) => self.on_im_typing(*done),
            StoreDone::DmPolicyChecked(to, checked, result) => {
                self.on_dm_policy_checked(to, *checked, result)
            }
            StoreDone::Replied(to, result) => self.reply_to(to, result),
            StoreDone::RewriteReady(to, result) => self.submit_rewrite(to, result),
            StoreDone::ImAcked(to, user, conv, result) => self.on_im_acked(to, &user, conv, result),
            StoreDone::ImReceipts(to, conv, result) => self.on_im_receipts(to, conv, result),
            StoreDone::ImGroupReceipt(frames, event, skip, result) => {
                self.on_group_receipt(&frames, &event, &skip, result)
            }
            StoreDone::ImCatchup(to, plan, result) => self.on_catchup_checked(to, *plan, result),
        }
    }

    /// Hands a command to its proxy backend and parks it; the answer comes
    /// back through `store_replies` (the shard never waits for it).
    fn proxy_call(
        &mut self,
        key: usize,
        id: u64,
        proxy: usize,
        subject: Subject<'_>,
        pending: Proxied,
    ) -> CommandResult {
        if let Some((data, data_is_json)) = pending.data() {
            crate::payload::check(&self.shared.config, data, data_is_json)
                .map_err(|reason| (ErrorCode::BadRequest, reason))?;
        }
        let to = self.reply_to_of(key, id)?;
        let user = self
            .conns
            .get(key)
            .map(|c| c.user.clone())
            .ok_or_else(|| refuse(ErrorCode::Internal))?;
        if self.shared.proxies.is_none() {
            return Err(proxy_error(&ProxyError::Stopped));
        }
        let body = crate::proxy::call_body(to.client_id, &user, subject, pending.data());
        let event = subject.event();
        let answer = self.ask_backend(event, proxy, body);
        let shared = self.shared.clone();
        let idx = self.idx;
        self.store_replies.push(Box::pin(async move {
            let (result, latency_us) = answer.await;
            // On the shard's thread: the counters' one writer.
            shared.metrics[idx].proxy[event.index()].record(latency_us, &result);
            StoreDone::Proxied(to, pending, result)
        }));
        Ok(Outcome::Later)
    }

    /// The backend decided on a parked command: go on with it (maybe with
    /// the backend's data), refuse it, or close the connection.
    fn on_proxied(&mut self, to: ReplyTo, pending: Proxied, result: Result<Decision, ProxyError>) {
        if !self.is_current(to.key, to.client_id) {
            return;
        }
        let decision = match result {
            Ok(decision) => decision,
            Err(err) => return self.reply_to(to, Err(proxy_error(&err))),
        };
        match decision {
            Decision::Disconnect { code, reason } => {
                tracing::debug!(client = to.client_id, code, %reason, "the backend disconnected a client");
                self.close(
                    to.key,
                    crate::session::CloseReason {
                        code: ringcast_protocol::close::CloseCode(code),
                        reason: "disconnected by the backend",
                        flush_queue: true,
                    },
                );
            }
            Decision::Deny { code, message } => {
                let message = if message.is_empty() {
                    format!("{} ({code})", ErrorCode::ProxyDenied.message())
                } else {
                    message
                };
                self.reply_to(to, Err((ErrorCode::ProxyDenied, message)));
            }
            Decision::Allow {
                data: replaced,
                skip_history,
                ..
            } => {
                let (channel, data, data_is_json, client_msg_id) = match pending {
                    Proxied::Publish {
                        channel,
                        data,
                        data_is_json,
                        client_msg_id,
                    } => (channel, data, data_is_json, client_msg_id),
                    Proxied::Subscribe {
                        channel,
                        since,
                        token,
                    } => {
                        let outcome =
                            self.subscribe_command(to.key, to.id, channel, since, token.as_deref());
                        return self.reply_outcome(to, outcome);
                    }
                    Proxied::Rpc { .. } => {
                        let (data, data_is_json) =
                            replaced.map_or((b"null".to_vec(), true), |d| (d.bytes, d.is_json));
                        let result = ReplyResult::Rpc { data, data_is_json };
                        return self.reply_to(to, Ok(result));
                    }
                };
                let (data, data_is_json) =
                    replaced.map_or((data, data_is_json), |d| (d.bytes, d.is_json));
                let user = self.conns[to.key].user.clone();
                // An inbox is always stored: it is how an offline user gets
                // its messages, so a `send` answer cannot skip it.
                let store = !skip_history || channels::is_personal(&channel);
                let outcome = self.publish_command(
                    to.key,
                    to.id,
                    &user,
                    channel,
                    (data, data_is_json),
                    client_msg_id,
                    store,
                );
                self.reply_outcome(to, outcome);
            }
        }
    }

    pub(super) fn reply_outcome(&mut self, to: ReplyTo, outcome: CommandResult) {
        match outcome {
            Ok(Outcome::Later) => {}
            Ok(Outcome::Now(result)) => self.reply_to(to, Ok(result)),
            Err(err) => self.reply_to(to, Err(err)),
        }
    }

    pub(super) fn reply_to(&mut self, to: ReplyTo, result: Result<ReplyResult, CommandError>) {
        if !self.is_current(to.key, to.client_id) {
            return;
        }
        let reply = match result {
            Ok(result) => Reply::Ok { id: to.id, result },
            Err((code, message)) => Reply::Error {
                id: to.id,
                code,
                message,
            },
        };
        self.send_reply(to.key, &reply);
    }

    pub(super) fn reply_to_of(&self, key: usize, id: u64) -> Result<ReplyTo, CommandError> {
        let client_id = self
            .conns
            .get(key)
            .map(|c| c.client_id)
            .ok_or_else(|| refuse(ErrorCode::Internal))?;
        Ok(ReplyTo { key, client_id, id })
    }

    fn run_command(&mut self, key: usize, id: u64, body: CommandBody) -> CommandResult {
        let shared = self.shared.clone();
        let config = &shared.config;
        let user = self
            .conns
            .get(key)
            .map(|conn| conn.user.clone())
            .ok_or_else(|| refuse(ErrorCode::Internal))?;
        let is_subscribed = |shard: &Shard, channel: &str| shard.conn_is_subscribed(key, channel);
        let personal = |channel: &str| is_own_inbox(&user, channel);
        match body {
            CommandBody::Subscribe { channel, since } => {
                self.subscribe_or_proxy(key, id, &user, channel, since, None)
            }
            CommandBody::SubscribeWithToken {
                channel,
                since,
                token,
            } => self.subscribe_or_proxy(key, id, &user, channel, since, Some(token)),
            CommandBody::Unsubscribe { channel } => {
                if personal(&channel) || !is_subscribed(self, &channel) {
                    return Err(refuse(ErrorCode::NotSubscribed));
                }
                self.unsubscribe(key, &channel);
                Ok(Outcome::Now(ReplyResult::Empty))
            }
            CommandBody::Publish {
                channel,
                data,
                data_is_json,
                client_msg_id,
            } => {
                let subscribed = is_subscribed(self, &channel);
                channels::check_publish(config, &channel, subscribed).map_err(refuse)?;
                let proxy = config
                    .namespace(&channel)
                    .and_then(|namespace| config.proxy_index(&namespace.publish_proxy));
                if let Some(proxy) = proxy {
                    let subject_channel = channel.clone();
                    let pending = Proxied::Publish {
                        channel,
                        data,
                        data_is_json,
                        client_msg_id,
                    };
                    let subject = Subject::Publish {
                        channel: &subject_channel,
                    };
                    return self.proxy_call(key, id, proxy, subject, pending);
                }
                self.publish_command(
                    key,
                    id,
                    &user,
                    channel,
                    (data, data_is_json),
                    client_msg_id,
                    true,
                )
            }
            CommandBody::Send {
                user: to,
                data,
                data_is_json,
                client_msg_id,
            } => {
                if user.is_empty() {
                    return Err((
                        ErrorCode::PermissionDenied,
                        "anonymous connections cannot send to users".into(),
                    ));
                }
                channels::validate_user_id(&to).map_err(refuse)?;
                let inbox = channels::personal_channel(&to);
                if let Some(proxy) = config.proxy_index(&config.websocket.send_proxy) {
                    let pending = Proxied::Publish {
                        channel: inbox,
                        data,
                        data_is_json,
                        client_msg_id,
                    };
                    return self.proxy_call(key, id, proxy, Subject::Send { to: &to }, pending);
                }
                self.publish_command(
                    key,
                    id,
                    &user,
                    inbox,
                    (data, data_is_json),
                    client_msg_id,
                    true,
                )
            }
            CommandBody::Ack { stream, offset } => {
                if config.im.enabled && crate::im::is_conv(&stream) {
                    return self.im_ack(key, id, &user, stream, offset);
                }
                let ackable = personal(&stream)
                    || (is_subscribed(self, &stream) && streams::policy(config, &stream).is_some());
                if !ackable {
                    return Err((
                        ErrorCode::NotSubscribed,
                        "ack your inbox or a subscribed channel with history".into(),
                    ));
                }
                let device = self
                    .conns
                    .get(key)
                    .map(|c| self.device_id(c))
                    .ok_or_else(|| refuse(ErrorCode::Internal))?;
                let to = self.reply_to_of(key, id)?;
                let slot = self.pending_store.insert(StoreWait::Acked(to));
                let tag = streams::request_tag(self.idx, slot);
                if let Err(err) = shared.submit_cursor(&user, &device, &stream, offset, tag) {
                    self.pending_store.remove(slot);
                    return Err(store_error(&err));
                }
                Ok(Outcome::Later)
            }
            body @ (CommandBody::History { .. }
            | CommandBody::HistoryBefore { .. }
            | CommandBody::HistoryByTime { .. }) => {
                let request =
                    streams::history_read(body).ok_or_else(|| refuse(ErrorCode::Internal))?;
                self.history_command(key, id, &user, request)
            }
            CommandBody::Refresh { token } => {
                let claims = shared.auth.verify(&token).map_err(|err| {
                    let code = if err == crate::auth::AuthError::Expired {
                        ErrorCode::TokenExpired
                    } else {
                        ErrorCode::Unauthorized
                    };
                    (code, err.to_string())
                })?;
                let Some(conn) = self.conns.get_mut(key) else {
                    return Err(refuse(ErrorCode::Internal));
                };
                // A user the connect proxy renamed still refreshes with
                // tokens for its original subject.
                if *claims.sub != *user && conn.token_user() != Some(&*claims.sub) {
                    return Err((ErrorCode::Unauthorized, "token is for another user".into()));
                }
                let expires_at_ms = claims.exp.saturating_mul(1000);
                conn.session.set_expires_at_ms(expires_at_ms);
                // A new expiry: the refresh proxy's backoff starts over.
                conn.set_refresh_backoff(0, 0);
                Ok(Outcome::Now(ReplyResult::Refreshed { expires_at_ms }))
            }
            CommandBody::Presence(presence) => self.presence_command(key, id, &user, presence),
            CommandBody::Rpc {
                method,
                data,
                data_is_json,
            } => {
                let Some(proxy) = config.proxy_index(&config.websocket.rpc_proxy) else {
                    return Err((
                        ErrorCode::MethodNotFound,
                        "rpc is not configured on this server (websocket.rpc_proxy)".into(),
                    ));
                };
                let pending = Proxied::Rpc { data, data_is_json };
                self.proxy_call(key, id, proxy, Subject::Rpc { method: &method }, pending)
            }
            CommandBody::Ping => Ok(Outcome::Now(ReplyResult::Empty)),
            CommandBody::Im(command) => self.im_command(key, id, &user, *command),
            _ => Err(refuse(ErrorCode::MethodNotFound)),
        }
    }

    /// A `history` command, forward or backward (`before`), by offset or
    /// by time: checks that
    /// `user` may read the stream, then reads it on a store reader.
    fn history_command(
        &mut self,
        key: usize,
        id: u64,
        user: &str,
        request: ReadRequest,
    ) -> CommandResult {
        let shared = self.shared.clone();
        let config = &shared.config;
        let stream = request.stream.clone();
        if config.im.enabled && crate::im::is_dm(&stream) {
            if request.limit == 0 || request.limit > HISTORY_LIMIT_MAX as usize {
                return Err((
                    ErrorCode::BadRequest,
                    format!("limit must be 1 to {HISTORY_LIMIT_MAX}"),
                ));
            }
            if user.is_empty() {
                return Err(super::im::not_member(&stream));
            }
            // Only its two users may read a DM.
            let to = self.reply_to_of(key, id)?;
            let pending = super::im::ImPending::History(request);
            return self.with_member(to, user, stream, pending);
        }
        if config.im.enabled && crate::im::is_group(&stream) {
            if request.limit == 0 || request.limit > HISTORY_LIMIT_MAX as usize {
                return Err((
                    ErrorCode::BadRequest,
                    format!("limit must be 1 to {HISTORY_LIMIT_MAX}"),
                ));
            }
            if user.is_empty() {
                return Err(super::im::not_member(&stream));
            }
            // A member reads its window; one that left, up to its leaving
            // with `im.history_after_leave`, else nothing (123).
            let to = self.reply_to_of(key, id)?;
            let user = user.to_owned();
            let current = !config.im.history_after_leave;
            self.store_replies.push(Box::pin(async move {
                let result = async {
                    let view = super::im::member_view(&shared, &user, &stream, current).await?;
                    let mut request = request;
                    crate::im::clamp_to_view(&mut request, &view);
                    store_reply(shared.read(request)).await
                }
                .await;
                StoreDone::History(to, stream, result)
            }));
            return Ok(Outcome::Later);
        }
        let own_inbox = !user.is_empty() && stream == channels::personal_channel(user);
        if !own_inbox {
            let subscribed = self
                .conns
                .get(key)
                .is_some_and(|c| c.is_subscribed(&stream));
            if !subscribed {
                self.check_reader(key, &stream, None)?;
                // The backend decides who reads a proxied namespace, and
                // it is asked on subscribe only: its members are the
                // connections subscribed.
                let proxied = config
                    .namespace(&stream)
                    .and_then(|ns| config.proxy_index(&ns.subscribe_proxy))
                    .is_some();
                if proxied {
                    return Err((
                        ErrorCode::PermissionDenied,
                        format!("subscribe to {stream} first: its namespace's subscribe proxy decides who may read it"),
                    ));
                }
            }
            if streams::policy(config, &stream).is_none() {
                return Err((ErrorCode::BadRequest, format!("{stream} keeps no history")));
            }
        }
        if request.limit == 0 || request.limit > HISTORY_LIMIT_MAX as usize {
            return Err((
                ErrorCode::BadRequest,
                format!("limit must be 1 to {HISTORY_LIMIT_MAX}"),
            ));
        }
        let read = shared.read(request);
        let to = self.reply_to_of(key, id)?;
        self.store_replies.push(Box::pin(async move {
            StoreDone::History(to, stream, store_reply(read).await)
        }));
        Ok(Outcome::Later)
    }

    /// Whether connection `key` may read `channel`: the one permission
    /// check of `subscribe` and of `history` (`channels::check_subscribe`).
    fn check_reader(
        &self,
        key: usize,
        channel: &str,
        token: Option<&str>,
    ) -> Result<(), CommandError> {
        let conn = self
            .conns
            .get(key)
            .ok_or_else(|| refuse(ErrorCode::Internal))?;
        let reader = channels::Reader {
            user: &conn.user,
            grants: conn.grants(),
            token,
        };
        channels::check_subscribe(&self.shared.config, &self.shared.auth, &reader, channel)
    }

    /// `subscribe`, through the namespace's subscribe proxy when it has
    /// one: Ringcast's own rules first (the backend only sees what they
    /// allow), then the backend, then [`Shard::subscribe_command`].
    fn subscribe_or_proxy(
        &mut self,
        key: usize,
        id: u64,
        user: &str,
        channel: String,
        since: Option<StreamPosition>,
        token: Option<String>,
    ) -> CommandResult {
        let shared = self.shared.clone();
        let config = &shared.config;
        let proxy = config
            .namespace(&channel)
            .and_then(|namespace| config.proxy_index(&namespace.subscribe_proxy));
        match proxy {
            Some(proxy) if !is_own_inbox(user, &channel) => {
                self.check_reader(key, &channel, token.as_deref())?;
                if self.conn_is_subscribed(key, &channel) {
                    return Err(refuse(ErrorCode::AlreadySubscribed));
                }
                let subject_channel = channel.clone();
                let subject = Subject::Subscribe {
                    channel: &subject_channel,
                };
                self.proxy_call(
                    key,
                    id,
                    proxy,
                    subject,
                    Proxied::Subscribe {
                        channel,
                        since,
                        token,
                    },
                )
            }
            _ => self.subscribe_command(key, id, channel, since, token.as_deref()),
        }
    }

    /// `subscribe`, with or without a subscription token (the command's
    /// checks included: they are made again after a subscribe proxy
    /// answered, as the connection may have changed).
    fn subscribe_command(
        &mut self,
        key: usize,
        id: u64,
        channel: String,
        since: Option<StreamPosition>,
        token: Option<&str>,
    ) -> CommandResult {
        let shared = self.shared.clone();
        let config = &shared.config;
        let conn = self
            .conns
            .get(key)
            .ok_or_else(|| refuse(ErrorCode::Internal))?;
        let own_inbox = !conn.user.is_empty() && channel == channels::personal_channel(&conn.user);
        let (already, subscribed_count) = (conn.is_subscribed(&channel), conn.subscriptions.len());
        if !own_inbox {
            self.check_reader(key, &channel, token)?;
            if already {
                return Err(refuse(ErrorCode::AlreadySubscribed));
            }
            let max = config.websocket.subscriptions_max_per_connection;
            if subscribed_count >= max as usize {
                return Err((
                    ErrorCode::LimitExceeded,
                    format!("at most {max} subscriptions per connection"),
                ));
            }
        }
        if streams::policy(config, &channel).is_none() {
            if since.is_some() {
                return Err((
                    ErrorCode::BadRequest,
                    format!("{channel} keeps no history; nothing to recover"),
                ));
            }
            self.subscribe(key, &channel);
            return Ok(Outcome::Now(ReplyResult::Subscribed {
                channel,
                recovery: None,
            }));
        }
        // Durable: live first (held back), then the replay, then the
        // held publications (recovery.rs). One replay of a stream at
        // a time: a second would interleave with the first.
        if let Some(conn) = self.conns.get_mut(key) {
            if conn.session.replay_id(&channel).is_some() {
                return Err((
                    ErrorCode::AlreadySubscribed,
                    format!("{channel} is being recovered; wait for that reply"),
                ));
            }
            conn.session.begin_recovery(&channel);
        }
        if !own_inbox {
            self.subscribe(key, &channel);
        }
        self.start_recovery(key, id, channel, since, own_inbox, false);
        Ok(Outcome::Later)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "a publish command's fields, passed apart rather than through a one-use struct"
    )]
    /// Publishes a client's message: stored first on a durable stream
    /// (unless `store` is false: a publish proxy's `skip_history`), then
    /// fanned out.
    fn publish_command(
        &mut self,
        key: usize,
        id: u64,
        sender: &str,
        channel: String,
        (data, data_is_json): (Vec<u8>, bool),
        client_msg_id: Option<String>,
        store: bool,
    ) -> CommandResult {
        crate::payload::check(&self.shared.config, &data, data_is_json)
            .map_err(|reason| (ErrorCode::BadRequest, reason))?;
        let message_id = self.message_ids.next(self.now_ms).0;
        let envelope = Envelope {
            id: message_id,
            offset: 0,
            epoch: 0,
            channel,
            sender: sender.to_string(),
            time_ms: self.now_ms,
            data_is_json,
            data,
        };
        let policy = streams::policy(&self.shared.config, &envelope.channel).filter(|_| store);
        if let Some(policy) = policy {
            // Encoded here, not on the store's writer; the store stamps
            // the offset, fans out once durable, and the sender's
            // acknowledgement waits for that.
            let to = self.reply_to_of(key, id)?;
            let cause = crate::outbox::Cause::Client {
                user: sender,
                client_id: to.client_id,
                command: crate::outbox::ClientCommand::of_channel(&envelope.channel),
            };
            let outbox = crate::outbox::append_events(
                &self.shared.config,
                &envelope.channel,
                cause,
                self.now_ms,
            );
            let request = AppendRequest {
                stream: envelope.channel.clone(),
                push: EncodedPush::encode(&envelope),
                durability: policy.durability,
                client_msg_id,
                retention: policy.retention,
                outbox,
            };
            let slot = self.pending_store.insert(StoreWait::Published(to));
            let tag = streams::request_tag(self.idx, slot);
            if let Err(err) = self.shared.submit_append(request, tag) {
                self.pending_store.remove(slot);
                return Err(store_error(&err));
            }
            return Ok(Outcome::Later);
        }
        match self.publish(&envelope) {
            Ok(()) => Ok(Outcome::Now(ReplyResult::Published {
                message_id,
                offset: 0,
                epoch: 0,
                duplicate: false,
            })),
            Err(_overloaded) => Err((
                ErrorCode::LimitExceeded,
                "shards are overloaded; publication delivered nowhere, retry later".into(),
            )),
        }
    }

    /// Answers a history command with the stored publications as they are
    /// (their data is not re-encoded).
    fn history_page(
        &mut self,
        to: ReplyTo,
        stream: &str,
        result: Result<ReadResult, CommandError>,
    ) {
        if !self.is_current(to.key, to.client_id) {
            return;
        }
        let page = match result {
            Ok(page) => page,
            Err(err) => return self.reply_to(to, Err(err)),
        };
        let binary = self.conns[to.key].session.binary();
        let envelopes: Vec<_> = page.entries.iter().map(|e| e.envelope()).collect();
        let (epoch, first, next) = (page.epoch, page.first_offset, page.next_offset);
        let frame = if binary {
            let payload = encode_history_binary(to.id, stream, epoch, first, next, &envelopes);
            encode_frame(OpCode::Binary, &payload, None)
        } else {
            let payload = encode_history_json(to.id, stream, epoch, first, next, &envelopes);
            encode_frame(OpCode::Text, &payload, None)
        };
        self.send_frame(to.key, frame);
    }
}
