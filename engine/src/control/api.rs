//! The server API for the app backend: publish, send, broadcast, presence,
//! stats, disconnect, plus `/metrics` and `/health`.
//!
//! Runs on the control thread. Publishing here encodes the envelope once and
//! hands it to the interested shards through the control thread's own row of
//! the mesh, by the one publish path (`MeshSender::publish`): every
//! interested shard gets it, or none does and the request fails at once with
//! 503 `overloaded` (and `Retry-After`), so the API never reports a
//! publication it did not hand over, and never reports a failure for one it
//! did.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ringcast_protocol::close::CloseCode;
use ringcast_protocol::envelope::{EncodedPush, Envelope, MessageIdGen};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::http::{Handler, Method, Request, Response, ServeError, CONTENT_TYPE_JSON};
use super::idempotency::{request_hash, Begin, Idempotency};
use crate::channels;
use crate::engine::Shared;
use crate::interest::shard_indexes;
use crate::mesh::{MeshSender, ShardEvent};
use crate::metrics::{render_prometheus, NodeMetric};
use crate::publication::Publication;
use crate::shard::unix_ms;
use crate::streams;
use ringcast_protocol::client::{encode_history_result_json, history_by_time, HistoryBounds};
use ringcast_store::{AppendRequest, ReadRequest, StoreError};

/// How long a presence query waits for the shards.
const PRESENCE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most targets in one send or broadcast request.
const TARGETS_MAX: usize = crate::limits::API_TARGETS_MAX;
/// The message-id shard field used by the control thread (see
/// `ringcast_protocol::limits`).
pub const CONTROL_ID_SHARD: u8 = ringcast_protocol::limits::ID_SHARD_CONTROL;

/// How often a connection closed at the API's capacity is logged at most.
const CAPACITY_LOG_INTERVAL: Duration = Duration::from_secs(10);

pub struct Api {
    pub(super) shared: Arc<Shared>,
    pub(super) sender: MeshSender,
    pub(super) message_ids: RefCell<MessageIdGen>,
    capacity_logged_at: Cell<Option<Instant>>,
    idempotency: RefCell<Idempotency>,
}

/// Prefix of the store's dedup key for an API idempotency key. A byte no
/// client `client_msg_id` may hold (those are printable ASCII), so a client
/// cannot claim a key the backend will use and swallow its publication.
const API_KEY_PREFIX: &str = "\u{7f}api ";

// The payload fields are repeated in each body rather than shared through
// `#[serde(flatten)]`: serde_json's `RawValue` does not survive flattening.
// `data` is JSON kept byte-for-byte; `b64data` carries opaque bytes.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    channel: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    b64data: Option<String>,
    /// The idempotency key, as the body may carry it instead of the
    /// `Idempotency-Key` header.
    #[serde(default)]
    client_msg_id: Option<String>,
    /// The user the publication is from (pushes carry it as `sender`).
    #[serde(default)]
    sender: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody {
    channels: Vec<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    b64data: Option<String>,
    #[serde(default)]
    client_msg_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    b64data: Option<String>,
    #[serde(default)]
    client_msg_id: Option<String>,
    #[serde(default)]
    sender: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryBody {
    stream: String,
    #[serde(default)]
    since: Option<u64>,
    /// Pages backwards: the newest entries below this offset, newest first.
    #[serde(default)]
    before: Option<u64>,
    #[serde(default = "default_history_limit")]
    limit: u32,
    #[serde(default)]
    reverse: Option<bool>,
    /// By time: entries with time >= this (Unix ms).
    #[serde(default)]
    from_time: Option<u64>,
    /// By time: entries with time < this (Unix ms); newest first unless
    /// `reverse` is false.
    #[serde(default)]
    before_time: Option<u64>,
}

fn default_history_limit() -> u32 {
    100
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceUsersBody {
    users: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    user: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeUserBody {
    user: String,
    channel: String,
}

type ApiResult = Result<Response, Response>;

/// A publication handed over but not yet acknowledged.
enum Pending {
    /// Live: delivered to the shards already.
    Done(Published),
    /// Durable: waiting for the store's group commit.
    Stored(futures_channel::oneshot::Receiver<Result<ringcast_store::Appended, StoreError>>),
}

/// What a publish answers: the sender's acknowledgement. Ids and epochs are
/// strings because they are u64s, past JavaScript's exact integers.
#[derive(serde::Serialize)]
struct Published {
    id: String,
    offset: u64,
    epoch: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

/// A store failure as the API reports it: 503 and what went wrong. Nothing
/// was acknowledged. `retryable` says whether the same request may succeed
/// later without an operator (the store was busy or short of file
/// descriptors or memory and recovers by itself), with `Retry-After: 1`;
/// otherwise the store is poisoned or closed.
pub(super) fn store_unavailable(err: &StoreError) -> Response {
    // A shortage of fds or memory is logged by the store, rate-limited.
    if err.source_tag() == ringcast_store::ErrorSource::Resource {
        tracing::debug!(error = %err, "store refused a durable request for now");
    } else {
        tracing::error!(error = %err, "store refused a durable request");
    }
    store_error_response(err, "the message was not stored")
}

/// The 503 of a store failure, its message saying what did not happen.
pub(super) fn store_error_response(err: &StoreError, what: &str) -> Response {
    let retryable = err.is_retryable();
    let mut response = Response::json(
        503,
        &json!({"error": {
            "code": "store_unavailable",
            "message": format!("{what}: {err}"),
            "retryable": retryable,
        }}),
    );
    if retryable {
        response.headers.push(("Retry-After", "1".to_owned()));
    }
    response
}

/// The request's idempotency key: the `Idempotency-Key` header or the
/// body's `client_msg_id` (the same key if both are given).
fn idempotency_key(req: &Request, body_key: Option<String>) -> Result<Option<String>, Response> {
    let header = req.header("idempotency-key").map(|key| {
        // The IETF draft sends the key as a quoted string; bare is accepted too.
        let key = key.trim();
        key.strip_prefix('"')
            .and_then(|k| k.strip_suffix('"'))
            .unwrap_or(key)
            .to_owned()
    });
    let key = match (header, body_key) {
        (Some(header), Some(body)) if header != body => {
            return Err(bad_request(
                "Idempotency-Key and client_msg_id differ: give one key",
            ))
        }
        (header, body) => header.or(body),
    };
    if let Some(key) = &key {
        let ok = !key.is_empty()
            && key.len() <= ringcast_protocol::client::CLIENT_MSG_ID_BYTES_MAX
            && key.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(bad_request(
                "the idempotency key must be 1 to 64 printable ASCII characters",
            ));
        }
    }
    Ok(key)
}

/// The sender a request names, checked as a user id; "" when none.
fn check_sender(sender: Option<String>) -> Result<String, Response> {
    match sender {
        None => Ok(String::new()),
        Some(sender) => {
            channels::validate_user_id(&sender)
                .map_err(|_| bad_request(format!("invalid sender user id {sender:?}")))?;
            Ok(sender)
        }
    }
}

/// Forgets an idempotency key whose request ended without an answer.
struct InFlightGuard<'a> {
    idempotency: &'a RefCell<Idempotency>,
    key: Option<String>,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.idempotency.borrow_mut().abandon(&key);
        }
    }
}

/// The payload and author of a send or broadcast, for every target.
struct Message {
    data: Vec<u8>,
    data_is_json: bool,
    sender: String,
}

/// What a new publication is: who it is from and its store dedup key.
struct Origin {
    sender: String,
    store_key: Option<String>,
}

/// The shards cannot take more now: nothing was delivered; retry later.
/// Every shard's answer to a query sent to several shards, or a 503 when
/// one does not answer within [`PRESENCE_TIMEOUT`] (`what` names the query).
async fn gather<T>(
    receivers: Vec<futures_channel::oneshot::Receiver<T>>,
    what: &str,
) -> Result<Vec<T>, Response> {
    let mut answers = Vec::with_capacity(receivers.len());
    for rx in receivers {
        match tokio::time::timeout(PRESENCE_TIMEOUT, rx).await {
            Ok(Ok(answer)) => answers.push(answer),
            _ => {
                return Err(Response::error(
                    503,
                    "shard_timeout",
                    &format!("a shard did not answer {what}"),
                ))
            }
        }
    }
    Ok(answers)
}

fn overloaded(message: &str) -> Response {
    let mut response = Response::error(503, "overloaded", &format!("{message}; retry later"));
    response.headers.push(("Retry-After", "1".to_owned()));
    response
}

pub(super) fn bad_request(message: impl AsRef<str>) -> Response {
    Response::error(400, "bad_request", message.as_ref())
}

impl Api {
    pub fn new(shared: Arc<Shared>, sender: MeshSender) -> Api {
        let node_id = shared.config.server.node_id.get();
        Api {
            message_ids: RefCell::new(MessageIdGen::new(node_id, CONTROL_ID_SHARD)),
            capacity_logged_at: Cell::new(None),
            idempotency: RefCell::new(Idempotency::new(
                u64::try_from(shared.config.server.dedup_window.as_millis()).unwrap_or(u64::MAX),
            )),
            shared,
            sender,
        }
    }

    fn authorized(&self, req: &Request) -> bool {
        let presented = req
            .header("authorization")
            .and_then(|h| {
                h.strip_prefix("apikey ")
                    .or_else(|| h.strip_prefix("Bearer "))
            })
            .or_else(|| req.header("x-api-key"));
        presented.is_some_and(|key| self.shared.config.api.key.matches(key.trim().as_bytes()))
    }

    async fn route(&self, req: Request) -> ApiResult {
        let path = req.path.as_str();
        match (&req.method, path) {
            (&Method::GET | &Method::HEAD, "/health") => {
                return Ok(super::cluster_api::health(&self.shared))
            }
            (&Method::GET | &Method::HEAD, "/metrics") => return Ok(self.metrics()),
            _ => {}
        }
        if !path.starts_with("/api/") {
            return Err(Response::error(
                404,
                "not_found",
                &format!("no route for {path}"),
            ));
        }
        // The API key was checked on the head, before the body was read (`Handler::screen`).
        let is_post = req.method == Method::POST;
        let is_get = req.method == Method::GET || req.method == Method::HEAD;
        let allow = match path {
            "/api/publish"
            | "/api/broadcast"
            | "/api/send"
            | "/api/disconnect"
            | "/api/history"
            | "/api/subscribe"
            | "/api/unsubscribe"
            | "/api/presence/users"
            | "/api/drain" => "POST",
            "/api/presence" | "/api/stats" => "GET, HEAD",
            "/api/webhooks/replay" => "POST",
            "/api/webhooks/dead" => "GET, HEAD",
            "/api/im/msg_send"
            | "/api/im/conv_list"
            | "/api/im/read"
            | "/api/im/block"
            | "/api/im/unblock"
            | "/api/im/blocks_list"
            | "/api/im/typing"
            | "/api/im/dm_policy"
            | "/api/im/contacts"
            | "/api/im/receipts"
            | "/api/im/recall"
            | "/api/im/edit"
            | "/api/im/clear"
                if self.shared.config.im.enabled =>
            {
                "POST"
            }
            route
                if self.shared.config.im.enabled
                    && super::im_group_api::GROUP_ROUTES.contains(&route) =>
            {
                "POST"
            }
            _ => {
                return Err(Response::error(
                    404,
                    "not_found",
                    &format!("no route for {path}"),
                ))
            }
        };
        if (allow == "POST" && !is_post) || (allow != "POST" && !is_get) {
            let mut resp =
                Response::error(405, "method_not_allowed", &format!("{path} takes {allow}"));
            resp.headers.push(("Allow", allow.into()));
            return Err(resp);
        }
        if is_post {
            let content_type = req.header("content-type").unwrap_or("application/json");
            let media_type = content_type.split(';').next().unwrap_or("").trim();
            if !media_type.eq_ignore_ascii_case("application/json") {
                return Err(Response::error(
                    415,
                    "unsupported_media_type",
                    "send the body as application/json",
                ));
            }
        }
        match path {
            "/api/publish" => self.publish(&req).await,
            "/api/broadcast" => self.broadcast(&req).await,
            "/api/send" => self.send(&req).await,
            "/api/disconnect" => self.disconnect(&req).await,
            "/api/subscribe" => self.subscribe_user(&req, true).await,
            "/api/unsubscribe" => self.subscribe_user(&req, false).await,
            "/api/history" => self.history(&req).await,
            "/api/presence" => self.presence(&req).await,
            "/api/presence/users" => self.presence_users(&req).await,
            "/api/drain" => Ok(super::cluster_api::drain(&self.shared)),
            "/api/webhooks/dead" => super::webhooks::dead(&self.shared, &req).await,
            "/api/webhooks/replay" => super::webhooks::replay(&self.shared, &req).await,
            "/api/im/msg_send" => self.im_msg_send(&req).await,
            "/api/im/conv_list" => self.im_conv_list(&req).await,
            "/api/im/read" => self.im_read(&req).await,
            "/api/im/block" => self.im_block(&req, true).await,
            "/api/im/unblock" => self.im_block(&req, false).await,
            "/api/im/blocks_list" => self.im_blocks_list(&req).await,
            "/api/im/typing" => self.im_typing(&req).await,
            "/api/im/dm_policy" => self.im_dm_policy(&req).await,
            "/api/im/contacts" => self.im_contacts(&req).await,
            route if super::im_group_api::GROUP_ROUTES.contains(&route) => {
                self.im_group(&req, route).await
            }
            "/api/im/receipts" => self.im_receipts(&req).await,
            "/api/im/recall" => self.im_rewrite(&req, false).await,
            "/api/im/edit" => self.im_rewrite(&req, true).await,
            "/api/im/clear" => self.im_clear(&req).await,
            _ => Ok(super::cluster_api::stats(&self.shared).await),
        }
    }

    pub(super) fn parse<'a, T: Deserialize<'a>>(req: &'a Request) -> Result<T, Response> {
        serde_json::from_slice(&req.body)
            .map_err(|err| bad_request(format!("invalid JSON body: {err}")))
    }

    fn payload(
        &self,
        data: Option<Box<RawValue>>,
        b64data: Option<String>,
    ) -> Result<(Vec<u8>, bool), Response> {
        let (data, data_is_json) = Self::payload_bytes(data, b64data)?;
        crate::payload::check(&self.shared.config, &data, data_is_json).map_err(bad_request)?;
        Ok((data, data_is_json))
    }

    fn payload_bytes(
        data: Option<Box<RawValue>>,
        b64data: Option<String>,
    ) -> Result<(Vec<u8>, bool), Response> {
        match (data, b64data) {
            (Some(data), None) => Ok((data.get().as_bytes().to_vec(), true)),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map(|bytes| (bytes, false))
                .map_err(|err| bad_request(format!("b64data is not base64: {err}"))),
            (Some(_), Some(_)) => Err(bad_request("give either data or b64data, not both")),
            (None, None) => Err(bad_request("missing data (or b64data)")),
        }
    }

    /// A channel the API may publish to or read (`channels::check_api_channel`).
    fn check_channel(&self, channel: &str) -> Result<(), Response> {
        match channels::check_api_channel(&self.shared.config, channel) {
            Ok(()) => Ok(()),
            Err(channels::ApiChannelRefusal::Invalid) => {
                Err(bad_request(format!("invalid channel name {channel:?}")))
            }
            Err(channels::ApiChannelRefusal::UnknownNamespace) => Err(Response::error(
                400,
                "unknown_namespace",
                &format!("channel {channel:?} is in no configured namespace"),
            )),
        }
    }

    async fn publish(&self, req: &Request) -> ApiResult {
        let body: PublishBody = Self::parse(req)?;
        self.check_channel(&body.channel)?;
        let (data, data_is_json) = self.payload(body.data, body.b64data)?;
        let key = idempotency_key(req, body.client_msg_id)?;
        let origin = Origin {
            sender: check_sender(body.sender)?,
            store_key: key.as_ref().map(|key| format!("{API_KEY_PREFIX}{key}")),
        };
        self.once(req, key, async {
            let published = self
                .publish_one(body.channel, data, data_is_json, origin)
                .await?;
            Ok(json!(published))
        })
        .await
    }

    /// Runs `work` once per idempotency key within the dedup window: a
    /// retry gets the original answer with `duplicate: true`, a retry while
    /// the original runs 409, the key with another request 422.
    async fn once(
        &self,
        req: &Request,
        key: Option<String>,
        work: impl std::future::Future<Output = Result<serde_json::Value, Response>>,
    ) -> ApiResult {
        let Some(key) = key else {
            return Ok(Response::json(200, &work.await?));
        };
        let hash = request_hash(&req.path, &req.body);
        let begun = self.idempotency.borrow_mut().begin(&key, hash, unix_ms());
        match begun {
            Begin::New => {}
            Begin::Done(mut answer) => {
                if let Some(object) = answer.as_object_mut() {
                    object.insert("duplicate".into(), true.into());
                }
                let mut response = Response::json(200, &answer);
                response
                    .headers
                    .push(("Idempotent-Replayed", "true".to_owned()));
                return Ok(response);
            }
            Begin::InFlight => {
                return Err(Response::error(
                    409,
                    "conflict",
                    "a request with this idempotency key is still being served; retry later",
                ))
            }
            Begin::Mismatch => {
                return Err(Response::error(
                    422,
                    "idempotency_key_reused",
                    "this idempotency key was used with another request within the dedup window",
                ))
            }
        }
        // Abandoned unless answered: a request dropped mid-way (its caller
        // hung up) must not leave the key "in flight" for the whole window.
        let mut guard = InFlightGuard {
            idempotency: &self.idempotency,
            key: Some(key),
        };
        let answer = work.await?;
        if let Some(key) = guard.key.take() {
            self.idempotency.borrow_mut().finish(&key, answer.clone());
        }
        Ok(Response::json(200, &answer))
    }

    /// The JSON a multi-target request answers: `duplicate` on each result
    /// the store recognized as a retry, and on the whole when all were.
    fn results_answer(results: Vec<serde_json::Value>) -> serde_json::Value {
        let all_duplicates = !results.is_empty()
            && results
                .iter()
                .all(|result| result.get("duplicate") == Some(&serde_json::Value::Bool(true)));
        let mut answer = json!({"results": results});
        if all_duplicates {
            answer["duplicate"] = true.into();
        }
        answer
    }

    /// One target's result in a multi-target answer.
    fn target_result(field: &str, target: String, published: Published) -> serde_json::Value {
        let mut result = json!({field: target, "id": published.id, "offset": published.offset, "epoch": published.epoch});
        if published.duplicate {
            result["duplicate"] = true.into();
        }
        result
    }

    async fn broadcast(&self, req: &Request) -> ApiResult {
        let body: BroadcastBody = Self::parse(req)?;
        if body.channels.is_empty() || body.channels.len() > TARGETS_MAX {
            return Err(bad_request(format!(
                "channels must hold 1 to {TARGETS_MAX} names"
            )));
        }
        let mut channels_seen = std::collections::HashSet::new();
        for channel in &body.channels {
            self.check_channel(channel)?;
            if !channels_seen.insert(channel.as_str()) {
                return Err(bad_request(format!("channel {channel:?} is listed twice")));
            }
        }
        let (data, data_is_json) = self.payload(body.data, body.b64data)?;
        let key = idempotency_key(req, body.client_msg_id)?;
        let targets = body
            .channels
            .into_iter()
            .map(|channel| (channel.clone(), channel))
            .collect();
        let message = Message {
            data,
            data_is_json,
            sender: String::new(),
        };
        self.once(req, key.clone(), async {
            self.publish_targets("channel", targets, message, key).await
        })
        .await
    }

    async fn send(&self, req: &Request) -> ApiResult {
        let body: SendBody = Self::parse(req)?;
        let mut users = body.users;
        users.extend(body.user);
        if users.is_empty() || users.len() > TARGETS_MAX {
            return Err(bad_request(format!(
                "give `user` or `users` (1 to {TARGETS_MAX})"
            )));
        }
        let mut users_seen = std::collections::HashSet::new();
        for user in &users {
            channels::validate_user_id(user)
                .map_err(|_| bad_request(format!("invalid user id {user:?}")))?;
            if !users_seen.insert(user.as_str()) {
                return Err(bad_request(format!("user {user:?} is listed twice")));
            }
        }
        let (data, data_is_json) = self.payload(body.data, body.b64data)?;
        let key = idempotency_key(req, body.client_msg_id)?;
        let sender = check_sender(body.sender)?;
        let targets = users
            .into_iter()
            .map(|user| {
                let inbox = channels::personal_channel(&user);
                (user, inbox)
            })
            .collect();
        let message = Message {
            data,
            data_is_json,
            sender,
        };
        self.once(req, key.clone(), async {
            self.publish_targets("user", targets, message, key).await
        })
        .await
    }

    /// Publishes `message` to each `(label, channel)` target of a send or
    /// broadcast and answers `{"results": [...]}`, each result labelled
    /// `field: label`. Every target is submitted first, then waited for, so
    /// durable targets share group commits instead of paying one fsync
    /// each, in turn. The idempotency key goes to the store with every
    /// durable target: each is its own stream, so each is deduplicated
    /// apart, and a retry after a partial failure stores only the targets
    /// the first try missed.
    async fn publish_targets(
        &self,
        field: &str,
        targets: Vec<(String, String)>,
        message: Message,
        key: Option<String>,
    ) -> Result<serde_json::Value, Response> {
        let store_key = key.map(|key| format!("{API_KEY_PREFIX}{key}"));
        let mut pending = Vec::with_capacity(targets.len());
        for (label, channel) in targets {
            let origin = Origin {
                sender: message.sender.clone(),
                store_key: store_key.clone(),
            };
            let started = self
                .submit_one(channel, message.data.clone(), message.data_is_json, origin)
                .await?;
            pending.push((label, started));
        }
        let mut results = Vec::with_capacity(pending.len());
        for (label, started) in pending {
            let published = Self::finish_one(started).await?;
            results.push(Self::target_result(field, label, published));
        }
        Ok(Self::results_answer(results))
    }

    /// Publishes one message. A durable channel (a user inbox, or a
    /// namespace with history) goes through the store, which assigns the
    /// offset and fans out once the write is durable; the reply waits for
    /// that. A live channel is encoded here and sent to every interested
    /// shard, or to none (503) when one of them is not keeping up.
    async fn publish_one(
        &self,
        channel: String,
        data: Vec<u8>,
        data_is_json: bool,
        origin: Origin,
    ) -> Result<Published, Response> {
        let pending = self.submit_one(channel, data, data_is_json, origin).await?;
        Self::finish_one(pending).await
    }

    /// Starts a publication: a live one is handed to the shards here; a
    /// durable one is only submitted to the store, so a batch of targets
    /// (`send` to many users, `broadcast`) shares the store's group commits
    /// instead of waiting for one fsync per target.
    async fn submit_one(
        &self,
        channel: String,
        data: Vec<u8>,
        data_is_json: bool,
        origin: Origin,
    ) -> Result<Pending, Response> {
        let now = unix_ms();
        let id = self.message_ids.borrow_mut().next(now).0;
        let envelope = Envelope {
            id,
            offset: 0,
            epoch: 0,
            channel,
            sender: origin.sender,
            time_ms: now,
            data_is_json,
            data,
        };
        if let Some(policy) = streams::policy(&self.shared.config, &envelope.channel) {
            let outbox = crate::outbox::append_events(
                &self.shared.config,
                &envelope.channel,
                crate::outbox::Cause::Api,
                now,
            );
            let request = AppendRequest {
                stream: envelope.channel.clone(),
                push: EncodedPush::encode(&envelope),
                durability: policy.durability,
                client_msg_id: origin.store_key,
                retention: policy.retention,
                outbox,
            };
            let reply = self
                .shared
                .append(request)
                .map_err(|err| store_unavailable(&err))?;
            return Ok(Pending::Stored(reply));
        }
        let publication = Arc::new(Publication::new(&envelope));
        let mask = self.shared.interest.shards(&envelope.channel);
        self.sender
            .publish(mask, &publication, None, |_| {})
            .map_err(|_| {
                overloaded("a shard is not keeping up; the publication was delivered nowhere")
            })?;
        // After the local routing took it, never before (see `publish_live`).
        crate::cluster::publish_live(&self.shared, &publication);
        Ok(Pending::Done(Published {
            id: id.to_string(),
            offset: 0,
            epoch: "0".into(),
            duplicate: false,
        }))
    }

    /// Waits for a publication started by `submit_one` to be acknowledged.
    async fn finish_one(pending: Pending) -> Result<Published, Response> {
        match pending {
            Pending::Done(published) => Ok(published),
            Pending::Stored(reply) => {
                let appended = match reply.await {
                    Ok(result) => result,
                    Err(_canceled) => Err(StoreError::Closed),
                }
                .map_err(|err| store_unavailable(&err))?;
                Ok(Published {
                    id: appended.message_id.0.to_string(),
                    offset: appended.offset,
                    epoch: appended.epoch.to_string(),
                    duplicate: appended.duplicate,
                })
            }
        }
    }

    /// Hands a control event to shard `shard_idx`; 503 when its lane is
    /// full (the shard is far behind), never a wait.
    fn send_event(&self, shard_idx: usize, event: ShardEvent) -> Result<(), Response> {
        self.sender
            .send(shard_idx, event)
            .map_err(|_| overloaded(&format!("shard {shard_idx} is not keeping up")))
    }

    /// A page of a durable stream, oldest first (or newest first with
    /// `reverse`), after offset `since`; with `before`, the newest entries
    /// below that offset, newest first (backward paging); with `from_time`
    /// and/or `before_time`, inside that time window (the client
    /// protocol's `history` by time, same rules).
    async fn history(&self, req: &Request) -> ApiResult {
        let body: HistoryBody = Self::parse(req)?;
        self.check_channel(&body.stream)?;
        if streams::policy(&self.shared.config, &body.stream).is_none() {
            return Err(bad_request(format!("{} keeps no history", body.stream)));
        }
        let limit_max = crate::limits::HISTORY_LIMIT_MAX;
        if body.limit == 0 || body.limit > limit_max {
            return Err(bad_request(format!("limit must be 1 to {limit_max}")));
        }
        let request = if body.from_time.is_some() || body.before_time.is_some() {
            let bounds = HistoryBounds {
                since: body.since,
                before: body.before,
                from_time: body.from_time,
                before_time: body.before_time,
                reverse: body.reverse,
            };
            let by_time =
                history_by_time(body.stream.clone(), body.limit, bounds).map_err(bad_request)?;
            streams::history_read(by_time).ok_or_else(|| bad_request("not a history read"))?
        } else {
            // `before` pages backwards, so newest first whatever `reverse` says.
            ReadRequest {
                stream: body.stream.clone(),
                since: body.since,
                before: body.before,
                limit: body.limit as usize,
                reverse: body.reverse.unwrap_or(false) || body.before.is_some(),
                from_time_ms: None,
                before_time_ms: None,
            }
        };
        let page = match self.shared.read(request) {
            Ok(reply) => match reply.await {
                Ok(result) => result,
                Err(_canceled) => Err(StoreError::Closed),
            },
            Err(err) => Err(err),
        }
        .map_err(|err| store_unavailable(&err))?;
        let envelopes: Vec<_> = page.entries.iter().map(|e| e.envelope()).collect();
        // The client protocol's encoder keeps each message's data as stored;
        // the API answers with its `result` object, rendered, not re-parsed.
        let encoded = encode_history_result_json(
            &body.stream,
            page.epoch,
            page.first_offset,
            page.next_offset,
            &envelopes,
        );
        Ok(Response::text(200, CONTENT_TYPE_JSON, encoded))
    }

    async fn disconnect(&self, req: &Request) -> ApiResult {
        let body: DisconnectBody = Self::parse(req)?;
        channels::validate_user_id(&body.user).map_err(|_| bad_request("invalid user id"))?;
        let broadcast = ringcast_protocol::cluster::Broadcast::DisconnectUser {
            user: body.user.clone(),
            code: CloseCode::DISCONNECTED_BY_SERVER.0,
        };
        if !super::cluster_api::broadcast(&self.shared, broadcast) {
            return Err(overloaded("the cluster queue is full; retry"));
        }
        let user: Arc<str> = body.user.as_str().into();
        let mask = self
            .shared
            .interest
            .shards(&channels::personal_channel(&body.user));
        let mut n_shards = 0;
        for shard_idx in shard_indexes(mask) {
            let event = ShardEvent::DisconnectUser {
                user: user.clone(),
                code: CloseCode::DISCONNECTED_BY_SERVER,
            };
            self.send_event(shard_idx, event)?;
            n_shards += 1;
        }
        Ok(Response::json(
            200,
            &json!({"user": body.user, "shards": n_shards}),
        ))
    }

    /// `/api/subscribe` (`subscribe == true`) and `/api/unsubscribe`: every
    /// connection of the user, on every shard, at once; answers how many
    /// connections changed.
    async fn subscribe_user(&self, req: &Request, subscribe: bool) -> ApiResult {
        let body: SubscribeUserBody = Self::parse(req)?;
        channels::validate_user_id(&body.user).map_err(|_| bad_request("invalid user id"))?;
        self.check_channel(&body.channel)?;
        channels::check_server_subscription(&self.shared.config, &body.channel)
            .map_err(bad_request)?;
        let broadcast = ringcast_protocol::cluster::Broadcast::SubscribeUser {
            user: body.user.clone(),
            channel: body.channel.clone(),
            subscribe,
        };
        if !super::cluster_api::broadcast(&self.shared, broadcast) {
            return Err(overloaded("the cluster queue is full; retry"));
        }
        let user: Arc<str> = body.user.as_str().into();
        let channel: Arc<str> = body.channel.as_str().into();
        let mask = self
            .shared
            .interest
            .shards(&channels::personal_channel(&body.user));
        let mut receivers = Vec::new();
        for shard_idx in shard_indexes(mask) {
            let (tx, rx) = futures_channel::oneshot::channel();
            let event = ShardEvent::SubscribeUser {
                user: user.clone(),
                channel: channel.clone(),
                subscribe,
                reply: tx,
            };
            self.send_event(shard_idx, event)?;
            receivers.push(rx);
        }
        let what = if subscribe {
            "the subscribe"
        } else {
            "the unsubscribe"
        };
        let connections: usize = gather(receivers, what).await?.into_iter().sum();
        Ok(Response::json(
            200,
            &json!({"user": body.user, "channel": body.channel, "connections": connections}),
        ))
    }

    async fn presence(&self, req: &Request) -> ApiResult {
        let channel = req
            .query
            .as_deref()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("channel=")))
            .map(ringcast_protocol::handshake::percent_decode)
            .ok_or_else(|| bad_request("missing ?channel=<name>"))?
            .ok_or_else(|| bad_request("channel is not valid percent-encoded UTF-8"))?;
        self.check_channel(&channel)?;
        let channel_arc: Arc<str> = channel.as_str().into();
        let mut receivers = Vec::new();
        for shard_idx in shard_indexes(self.shared.interest.shards(&channel)) {
            let (tx, rx) = futures_channel::oneshot::channel();
            self.send_event(
                shard_idx,
                ShardEvent::Presence {
                    channel: channel_arc.clone(),
                    reply: tx,
                },
            )?;
            receivers.push(rx);
        }
        let mut clients: Vec<_> = gather(receivers, "the presence query")
            .await?
            .into_iter()
            .flatten()
            .filter_map(|entry| serde_json::to_value(entry).ok())
            .collect();
        let (elsewhere, missing) = super::cluster_api::presence(&self.shared, &channel).await;
        clients.extend(elsewhere);
        let mut answer = json!({"channel": channel, "clients": clients});
        if self.shared.cluster.is_some() {
            answer["missing_nodes"] = json!(missing);
        }
        Ok(Response::json(200, &answer))
    }

    /// `presence_query` for the backend: each user's online state and
    /// last seen, from the node's presence book (no shard is asked), and
    /// the store for a user the book holds no last seen for.
    async fn presence_users(&self, req: &Request) -> ApiResult {
        let body: PresenceUsersBody = Self::parse(req)?;
        let max = crate::limits::PRESENCE_USERS_MAX;
        if !(1..=max).contains(&body.users.len()) {
            return Err(bad_request(format!("users must hold 1 to {max} ids")));
        }
        let users = crate::presence::book::distinct_users(&body.users)
            .map_err(|bad| bad_request(format!("not a user id: {bad:?}")))?;
        let elsewhere = crate::cluster::online_elsewhere(&self.shared, &users).await;
        let states: Vec<_> =
            crate::presence::stored::states(&self.shared.presence_book, &self.shared.store, &users)
                .await
                .into_iter()
                .enumerate()
                .map(|(i, state)| {
                    // In a cluster, `None`: the owner of the user's inbox
                    // partition did not answer, so whether another node holds
                    // the user is unknown, and the answer says so.
                    let asked = elsewhere.get(i).copied();
                    let online = state.online || asked.flatten() == Some(true);
                    let last_seen_ms = if online { 0 } else { state.last_seen_ms };
                    let mut answer =
                        json!({"user": state.user, "online": online, "last_seen_ms": last_seen_ms});
                    if !online && asked == Some(None) {
                        answer["unknown"] = true.into();
                    }
                    answer
                })
                .collect();
        Ok(Response::json(200, &json!({ "users": states })))
    }

    fn metrics(&self) -> Response {
        let store = self.shared.store.health();
        let node = |name, help, is_gauge, value| NodeMetric {
            name,
            help,
            is_gauge,
            value,
        };
        let mut extra = vec![
            node(
                "channels",
                "Channels with at least one subscriber on this node.",
                true,
                self.shared.interest.n_channels() as u64,
            ),
            node(
                "presence_users",
                "Users the presence book holds: online, pending offline, watched, or \
                 remembered for their last seen (bounded).",
                true,
                self.shared.presence_book.n_users() as u64,
            ),
            node(
                "presence_changes_lost_total",
                "Presence changes a shard could not be handed (its mesh lane was full); \
                 each is answered by that shard reading its watched users again.",
                false,
                self.shared.presence_book.changes_lost(),
            ),
            node(
                "uptime_seconds",
                "Seconds since the engine started.",
                true,
                self.shared.started_at.elapsed().as_secs(),
            ),
            node(
                "store_commits_total",
                "Group commits the store's writer made (batches written).",
                false,
                store.commits,
            ),
            node(
                "store_appends_total",
                "Entries the store's writer stored (appends that were not duplicates).",
                false,
                store.appends,
            ),
            node(
                "store_syncs_total",
                "fsyncs (fdatasync) of the store's journal.",
                false,
                store.syncs,
            ),
            node(
                "store_recoveries_total",
                "Times the store reopened its database by itself after running short of \
                 file descriptors or memory.",
                false,
                store.recoveries,
            ),
            node(
                "store_transient_failures_total",
                "Store writes that failed for want of file descriptors or memory (answered \
                 503 / error 111, retryable).",
                false,
                store.transient_failures,
            ),
            node(
                "store_recovering",
                "1 while the store reopens its database after a transient failure, else 0.",
                true,
                u64::from(store.recovering),
            ),
            node(
                "store_poisoned",
                "1 once a failed write or fsync made the store refuse all writes until \
                 restart, else 0.",
                true,
                u64::from(store.poisoned),
            ),
            node(
                "store_writer_queue",
                "Requests waiting for the store's writer.",
                true,
                store.writer_queue_len as u64,
            ),
        ];
        extra.extend(super::cluster_api::metrics(&self.shared));
        let mut text = render_prometheus(&self.shared.metrics, &extra);
        super::webhooks::render_metrics(&self.shared, &mut text);
        Response::text(200, "text/plain; version=0.0.4", text)
    }
}

impl Handler for Api {
    async fn handle(&self, req: Request) -> Response {
        match self.route(req).await {
            Ok(resp) | Err(resp) => resp,
        }
    }

    /// Every `/api/` route needs the API key: without it, 401 before the body is read, so an
    /// unauthenticated caller never makes the control thread buffer one.
    fn screen(&self, head: &Request) -> Option<Response> {
        if !head.path.starts_with("/api/") || self.authorized(head) {
            return None;
        }
        let mut resp = Response::error(
            401,
            "unauthorized",
            "missing or wrong API key: send `Authorization: apikey <key>`",
        );
        resp.headers.push(("WWW-Authenticate", "apikey".into()));
        Some(resp)
    }

    fn on_connection_error(&self, err: &ServeError) {
        if let ServeError::AtCapacity { connections_max } = err {
            let now = Instant::now();
            let due = self
                .capacity_logged_at
                .get()
                .is_none_or(|at| now.duration_since(at) >= CAPACITY_LOG_INTERVAL);
            if due {
                self.capacity_logged_at.set(Some(now));
                tracing::warn!(
                    connections_max,
                    "API connection closed at accept: {connections_max} are served already \
                     (half of server.fd_reserve)"
                );
            }
        }
    }
}
