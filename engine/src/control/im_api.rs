//! The IM commands' API twins (`docs/api.md`, "IM"): the app's backend acts
//! for a user (`as_user`) with the same checks and effects as the client
//! command: `POST /api/im/msg_send`, `/api/im/conv_list`, `/api/im/read`,
//! `/api/im/receipts`.
//! Served only with `im.enabled` (404 otherwise).

use std::sync::Arc;

use ringcast_protocol::client::{
    encode_im_reply_result_json, ConvCursor, ErrorCode, ImEvent, ImReply, MsgKind,
    CONV_LIST_LIMIT_DEFAULT, CONV_LIST_LIMIT_MAX, RECEIPTS_LIMIT_DEFAULT, RECEIPTS_LIMIT_MAX,
};
use ringcast_protocol::envelope::{EncodedPush, Envelope};
use ringcast_store::{ImAppend, StoreError};

use crate::im::dm_policy::DmRefusal;
use crate::proxy::ProxyError;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::api::{bad_request, store_error_response, Api};
use super::http::{Request, Response, CONTENT_TYPE_JSON};
use crate::im::DmPair;
use crate::interest::shard_indexes;
use crate::mesh::ShardEvent;
use crate::shard::unix_ms;

type ApiResult = Result<Response, Response>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MsgSendBody {
    as_user: String,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    conv: Option<String>,
    kind: String,
    data: Box<RawValue>,
    #[serde(default)]
    client_msg_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConvListBody {
    as_user: String,
    #[serde(default)]
    cursor: Option<CursorBody>,
    #[serde(default = "conv_list_limit_default")]
    limit: u32,
}

fn conv_list_limit_default() -> u32 {
    CONV_LIST_LIMIT_DEFAULT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorBody {
    time_ms: u64,
    #[serde(deserialize_with = "decimal_or_number")]
    sid: u64,
}

fn decimal_or_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(u64),
        Text(String),
    }
    match Either::deserialize(deserializer)? {
        Either::Number(n) => Ok(n),
        Either::Text(text) => text
            .parse()
            .map_err(|_| serde::de::Error::custom("sid must be a decimal u64")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadBody {
    as_user: String,
    conv: String,
    offset: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptsBody {
    as_user: String,
    conv: String,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default = "receipts_limit_default")]
    limit: u32,
}

fn receipts_limit_default() -> u32 {
    RECEIPTS_LIMIT_DEFAULT
}

/// `/api/im/recall` and `/api/im/edit`: without `as_user`, the system
/// (any message, at any time; `im.edits_max` still applies).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RewriteBody {
    #[serde(default)]
    as_user: Option<String>,
    conv: String,
    offset: u64,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearBody {
    as_user: String,
    conv: String,
    upto: u64,
}

/// A refusal of the client command, as the API's 4xx.
pub(super) fn refused((code, message): (ErrorCode, String)) -> Response {
    let (status, name) = match code {
        ErrorCode::LimitExceeded => (413, "too_large"),
        ErrorCode::NotMember => (403, "not_member"),
        ErrorCode::PermissionDenied => (403, "forbidden"),
        ErrorCode::WindowPassed => (409, "window_passed"),
        ErrorCode::StoreUnavailable => (503, "store_unavailable"),
        ErrorCode::TooManyConversations => (409, "too_many_conversations"),
        ErrorCode::UnknownUser => (400, "invalid_user"),
        _ => (400, "bad_request"),
    };
    Response::error(status, name, &message)
}

fn store_refused(err: &StoreError, what: &str) -> Response {
    match err {
        StoreError::ConversationLimit { user, limit } => Response::error(
            409,
            "too_many_conversations",
            &format!("{user} has {limit} conversations, the most allowed (im.conversations_per_user_max)"),
        ),
        StoreError::InvalidRequest { reason } => bad_request(reason),
        StoreError::Blocked { blocker, blocked } => Response::error(
            403,
            "blocked",
            &format!("{blocker} blocked {blocked}; nothing was stored"),
        ),
        StoreError::NotContact { user, sender } => Response::error(
            403,
            "not_contact",
            &format!("{user} takes direct messages from contacts only and {sender} is not one; nothing was stored"),
        ),
        StoreError::BackendDecides { user, sender } => Response::error(
            403,
            "dm_policy",
            &crate::im::dm_policy::undecided_message(user, sender),
        ),
        other => store_error_response(other, what),
    }
}

/// A DM refused by its recipient's backend policy: 403 for a denial, 502
/// or 504 when the backend gave no answer (fail closed).
fn dm_refused(refusal: &DmRefusal, recipient: &str, sender: &str) -> Response {
    match refusal {
        DmRefusal::Denied(message) => Response::error(
            403,
            "dm_policy",
            &crate::im::dm_policy::denied_message(recipient, sender, message),
        ),
        DmRefusal::Backend(error) => Response::error(
            if matches!(error, ProxyError::Timeout(_)) {
                504
            } else {
                502
            },
            "dm_policy_backend",
            &format!("the DM policy backend gave no answer ({error}); nothing was stored"),
        ),
        DmRefusal::Store(error) => store_refused(error, "the message was not stored"),
    }
}

fn check_user(user: &str) -> Result<(), Response> {
    crate::channels::validate_user_id(user)
        .map_err(|_| bad_request(format!("invalid as_user user id {user:?}")))
}

fn ok_json(reply: &ImReply) -> Response {
    Response::text(200, CONTENT_TYPE_JSON, encode_im_reply_result_json(reply))
}

impl Api {
    /// The pair of `conv` if `user` is one of it; 403 otherwise.
    async fn member_pair(&self, user: &str, conv: &str) -> Result<Arc<DmPair>, Response> {
        if !crate::im::is_dm(conv) {
            return Err(bad_request(format!(
                "{conv} is not a conversation (dm:...)"
            )));
        }
        match crate::im::resolve_member(&self.shared, user, conv).await {
            Ok(Some(pair)) => Ok(pair),
            Ok(None) => Err(refused((
                ErrorCode::NotMember,
                format!("{user} is not a member of {conv}"),
            ))),
            Err(err) => Err(store_refused(&err, "nothing was done")),
        }
    }

    /// 403 unless `user` has a view of group `conv` (a member, or one
    /// that left: it reads up to its removal); the view.
    async fn group_view(
        &self,
        user: &str,
        conv: &str,
    ) -> Result<ringcast_store::GroupSummary, Response> {
        let view = match self.shared.im_store().conv_get(user, conv) {
            Ok(receiver) => receiver.await.unwrap_or(Err(StoreError::Closed)),
            Err(err) => Err(err),
        }
        .map_err(|err| store_refused(&err, "nothing was done"))?;
        match view.and_then(|summary| summary.group) {
            Some(group) => Ok(group),
            None => Err(refused((
                ErrorCode::NotMember,
                format!("{user} is not a member of {conv}"),
            ))),
        }
    }

    /// `POST /api/im/msg_send`: a message from `as_user`, stored and
    /// pushed to every connection of both users, as the client's `msg_send`.
    pub(super) async fn im_msg_send(&self, req: &Request) -> ApiResult {
        let body: MsgSendBody = Self::parse(req)?;
        check_user(&body.as_user)?;
        let kind = MsgKind::parse(&body.kind).ok_or_else(|| {
            bad_request(format!(
                "unknown kind {:?}; expected text, custom or attachment",
                body.kind
            ))
        })?;
        let data = body.data.get().as_bytes();
        crate::im::check_message(&self.shared.config, kind, data).map_err(refused)?;
        if let Some(key) = &body.client_msg_id {
            let ok = (1..=ringcast_protocol::client::CLIENT_MSG_ID_BYTES_MAX).contains(&key.len())
                && key.bytes().all(|b| (0x20..=0x7e).contains(&b));
            if !ok {
                return Err(bad_request(
                    "client_msg_id must be 1 to 64 bytes of printable ASCII",
                ));
            }
        }
        if let (None, Some(conv)) = (&body.to, &body.conv) {
            if crate::im::is_group(conv) {
                return self.im_group_send(body, kind).await;
            }
        }
        let pair = match (&body.to, &body.conv) {
            (Some(to), None) => {
                crate::channels::validate_user_id(to).map_err(|_| {
                    refused((ErrorCode::UnknownUser, format!("invalid user id {to:?}")))
                })?;
                let (_, pair) = self.shared.dm_pairs.pair_of(&body.as_user, to);
                pair
            }
            (None, Some(conv)) => self.member_pair(&body.as_user, conv).await?,
            _ => return Err(bad_request("give either `to` or `conv`")),
        };
        let conv = pair.conv_name();
        // The store has not committed this pair since start: the message
        // may start a conversation.
        let may_start = pair.a != pair.b && self.shared.dm_pairs.get(&conv).is_none();
        let backend_allowed = if may_start {
            let recipient = pair.peer_of(&body.as_user);
            let proxies = self.shared.proxies.as_ref();
            let ask =
                |proxy, call_body| crate::im::dm_policy::ask_backend(proxies, proxy, call_body);
            crate::im::dm_policy::check_new_dm(
                &self.shared,
                0,
                &body.as_user,
                recipient,
                &conv,
                ask,
            )
            .await
            .map_err(|refusal| dm_refused(&refusal, recipient, &body.as_user))?
        } else {
            false
        };
        let envelope = self.im_envelope(&conv, &body.as_user, crate::im::entry_data(kind, data));
        let request = ImAppend {
            conv: conv.clone(),
            pair: (pair.a.to_string(), pair.b.to_string()),
            sender: body.as_user,
            push: EncodedPush::encode(&envelope),
            client_msg_id: body.client_msg_id,
            durability: crate::im::dm_durability(&self.shared.config),
            backend_allowed,
        };
        let what = "the message was not stored";
        let stored = match self.shared.im_store().im_append(request) {
            Ok(receiver) => receiver.await.unwrap_or(Err(StoreError::Closed)),
            Err(err) => Err(err),
        }
        .map_err(|err| store_refused(&err, what))?;
        Ok(ok_json(&crate::im::sent_reply(conv, &stored.appended)))
    }

    /// A new IM entry of `sender` in `conv` (the store stamps offset and epoch).
    pub(super) fn im_envelope(&self, conv: &str, sender: &str, data: Vec<u8>) -> Envelope {
        let now_ms = unix_ms();
        Envelope {
            id: self.message_ids.borrow_mut().next(now_ms).0,
            offset: 0,
            epoch: 0,
            channel: conv.to_owned(),
            sender: sender.to_owned(),
            time_ms: now_ms,
            data_is_json: true,
            data,
        }
    }

    /// `msg_send` to a group for `as_user`: the store checks membership,
    /// mutes and the dissolved flag.
    async fn im_group_send(&self, body: MsgSendBody, kind: MsgKind) -> ApiResult {
        let conv = body.conv.unwrap_or_default();
        let data = crate::im::entry_data(kind, body.data.get().as_bytes());
        let envelope = self.im_envelope(&conv, &body.as_user, data);
        let request = ringcast_store::GroupAppend {
            conv: conv.clone(),
            sender: body.as_user,
            push: EncodedPush::encode(&envelope),
            counts: true,
            client_msg_id: body.client_msg_id,
            durability: crate::im::group_durability(&self.shared.config),
        };
        let stored = match self.shared.im_store().group_append(request) {
            Ok(receiver) => receiver.await.unwrap_or(Err(StoreError::Closed)),
            Err(err) => Err(err),
        }
        .map_err(|err| {
            super::im_group_api::group_store_refused(&err, "the message was not stored")
        })?;
        Ok(ok_json(&crate::im::sent_reply(conv, &stored.appended)))
    }

    /// `POST /api/im/conv_list`: a page of `as_user`'s conversations.
    pub(super) async fn im_conv_list(&self, req: &Request) -> ApiResult {
        let body: ConvListBody = Self::parse(req)?;
        check_user(&body.as_user)?;
        if !(1..=CONV_LIST_LIMIT_MAX).contains(&body.limit) {
            return Err(bad_request(format!(
                "limit must be 1 to {CONV_LIST_LIMIT_MAX}"
            )));
        }
        let cursor = body.cursor.map(|c| (c.time_ms, c.sid));
        let page =
            match self
                .shared
                .im_store()
                .conv_list(&body.as_user, cursor, body.limit as usize)
            {
                Ok(receiver) => receiver.await.unwrap_or(Err(StoreError::Closed)),
                Err(err) => Err(err),
            }
            .map_err(|err| store_refused(&err, "nothing was read"))?;
        let convs = page
            .convs
            .into_iter()
            .map(|summary| {
                self.shared
                    .dm_pairs
                    .remember_listed(&body.as_user, &summary.peer, &summary.conv);
                crate::im::conv_info(summary)
            })
            .collect();
        Ok(ok_json(&ImReply::ConvList {
            convs,
            next: page.next.map(|(time_ms, sid)| ConvCursor { time_ms, sid }),
            total_unread: page.total_unread,
        }))
    }

    /// `POST /api/im/read`: `as_user` read `conv` up to `offset`; its
    /// connections get the `read` event, the peer's the `receipt`.
    pub(super) async fn im_read(&self, req: &Request) -> ApiResult {
        let body: ReadBody = Self::parse(req)?;
        check_user(&body.as_user)?;
        if body.offset == 0 {
            return Err(bad_request("offset must be at least 1"));
        }
        let (pair, group) = if crate::im::is_group(&body.conv) {
            let view = self.group_view(&body.as_user, &body.conv).await?;
            (None, Some(view))
        } else {
            (
                Some(self.member_pair(&body.as_user, &body.conv).await?),
                None,
            )
        };
        let user = body.as_user;
        let what = "the read position was not stored";
        let state = match self
            .shared
            .im_store()
            .im_read(&user, &body.conv, body.offset)
        {
            Ok(receiver) => receiver.await.unwrap_or(Err(StoreError::Closed)),
            Err(err) => Err(err),
        }
        .map_err(|err| store_refused(&err, what))?;
        let total_unread = match self.shared.im_store().im_total_unread(&user) {
            Ok(receiver) => receiver.await.unwrap_or(Err(StoreError::Closed)),
            Err(err) => Err(err),
        }
        .map_err(|err| store_refused(&err, "the read was stored; its total was not read"))?;
        self.im_event_to_user(
            &user,
            &ImEvent::Read {
                conv: body.conv.clone(),
                offset: state.read_offset,
                unread: state.unread,
                total_unread,
            },
        );
        // A DM's peer gets its receipt, a group's members theirs (at once:
        // the shards' coalescing is for clients' reads).
        let receipt = ImEvent::Receipt {
            conv: body.conv.clone(),
            user: user.clone(),
            read: state.read_offset,
        };
        let peer = pair
            .as_ref()
            .map_or(user.as_str(), |pair| pair.peer_of(&user));
        if peer != user {
            self.im_event_to_user(peer, &receipt);
        }
        if let Some(group) = group.filter(|group| group.role.is_some()) {
            self.group_receipt(&body.conv, &user, group.member_count, &receipt)
                .await;
        }
        Ok(ok_json(&ImReply::Read {
            conv: body.conv,
            offset: state.read_offset,
            unread: state.unread,
            total_unread,
        }))
    }

    /// `POST /api/im/receipts`: the read and delivery positions of
    /// `conv`'s users, as the client's `receipts` for `as_user`.
    pub(super) async fn im_receipts(&self, req: &Request) -> ApiResult {
        let body: ReceiptsBody = Self::parse(req)?;
        check_user(&body.as_user)?;
        if !(1..=RECEIPTS_LIMIT_MAX).contains(&body.limit) {
            return Err(bad_request(format!(
                "limit must be 1 to {RECEIPTS_LIMIT_MAX}"
            )));
        }
        let page = match self.shared.im_store().im_receipts(
            &body.as_user,
            &body.conv,
            body.cursor.as_deref(),
            body.limit as usize,
        ) {
            Ok(receiver) => receiver.await.unwrap_or(Err(StoreError::Closed)),
            Err(err) => Err(err),
        }
        .map_err(|err| store_refused(&err, "nothing was read"))?;
        let Some(page) = page else {
            return Err(refused((
                ErrorCode::NotMember,
                format!("{} is not a member of {}", body.as_user, body.conv),
            )));
        };
        Ok(ok_json(&crate::im::receipts_reply(body.conv, page)))
    }

    /// `POST /api/im/recall` and `/api/im/edit` (`edit`: with `data`): as
    /// the client commands, for `as_user`, or for the system without it.
    pub(super) async fn im_rewrite(&self, req: &Request, edit: bool) -> ApiResult {
        let body: RewriteBody = Self::parse(req)?;
        let actor = match &body.as_user {
            Some(user) => {
                check_user(user)?;
                ringcast_store::GroupActor::User(user.clone())
            }
            None => ringcast_store::GroupActor::System,
        };
        if body.offset == 0 || body.conv.is_empty() {
            return Err(bad_request(
                "conv must not be empty and offset must be at least 1",
            ));
        }
        let ask = match (edit, body.data, body.kind) {
            (false, None, None) => crate::im::RewriteAsk::Recall,
            (true, Some(data), kind) => {
                let kind = match kind {
                    None => None,
                    Some(text) => Some(MsgKind::parse(&text).ok_or_else(|| {
                        bad_request(format!(
                            "unknown kind {text:?}; expected text, custom or attachment"
                        ))
                    })?),
                };
                let data = data.get().as_bytes().to_vec();
                crate::im::RewriteAsk::Edit { kind, data }
            }
            (false, _, _) => return Err(bad_request("a recall takes no kind or data")),
            (true, None, _) => return Err(bad_request("an edit needs data")),
        };
        let reply = crate::im::rewrite(&self.shared, actor, body.conv, body.offset, ask)
            .await
            .map_err(refused)?;
        Ok(ok_json(&reply))
    }

    /// `POST /api/im/clear`: `as_user`'s history of `conv` starts after
    /// `upto` (the client's `clear`).
    pub(super) async fn im_clear(&self, req: &Request) -> ApiResult {
        let body: ClearBody = Self::parse(req)?;
        check_user(&body.as_user)?;
        if body.upto == 0 {
            return Err(bad_request("upto must be at least 1"));
        }
        if crate::im::is_group(&body.conv) {
            self.group_view(&body.as_user, &body.conv).await?;
        } else {
            self.member_pair(&body.as_user, &body.conv).await?;
        }
        let what = "the clear was not stored";
        let state = match self
            .shared
            .im_store()
            .im_clear(&body.as_user, &body.conv, body.upto)
        {
            Ok(receiver) => receiver.await.unwrap_or(Err(StoreError::Closed)),
            Err(err) => Err(err),
        }
        .map_err(|err| store_refused(&err, what))?;
        let total_unread = match self.shared.im_store().im_total_unread(&body.as_user) {
            Ok(receiver) => receiver.await.unwrap_or(Err(StoreError::Closed)),
            Err(err) => Err(err),
        }
        .map_err(|err| store_refused(&err, "the clear was stored; its total was not read"))?;
        Ok(ok_json(&ImReply::Cleared {
            conv: body.conv,
            visible_from: state.visible_from,
            unread: state.unread,
            total_unread,
        }))
    }

    /// `event` to the members of group `conv` but `from` when it has at
    /// most `im.group_receipts_members_max` members (read on a store
    /// reader); ephemeral, nothing when the read fails.
    async fn group_receipt(&self, conv: &str, from: &str, member_count: u32, event: &ImEvent) {
        let max = self.shared.config.im.group_receipts_members_max;
        if max == 0 || member_count > max {
            return;
        }
        let members = match self
            .shared
            .im_store()
            .group_members(conv, None, max as usize)
        {
            Ok(receiver) => receiver.await.unwrap_or(Err(StoreError::Closed)),
            Err(err) => Err(err),
        };
        let Ok(members) = members else {
            return;
        };
        let others = members.iter().map(|member| member.user.clone());
        crate::cluster::im_event(&self.shared, others, from, event);
        let frames = crate::im::event_frames(event);
        for member in members.iter().filter(|member| member.user != from) {
            self.im_frames_to_user(&member.user, &frames);
        }
    }

    /// `event` to every connection of `user`, on every shard (ephemeral: a
    /// shard whose lane is full does not get it).
    pub(super) fn im_event_to_user(&self, user: &str, event: &ImEvent) {
        crate::cluster::im_event(&self.shared, [user.to_owned()], "", event);
        self.im_frames_to_user(user, &crate::im::event_frames(event));
    }

    /// `frames` to every connection of each of `users` but `skip_user`'s:
    /// one event per shard holding any of them (ephemeral, as above).
    pub(super) fn im_frames_to_users(
        &self,
        users: Arc<[Box<str>]>,
        skip_user: &str,
        frames: Arc<crate::im::ImFrames>,
    ) {
        let mask = self.shared.interest.shards_of_users(&users, skip_user);
        let skip_user: Arc<str> = skip_user.into();
        for dst in shard_indexes(mask) {
            let event = ShardEvent::ImUsersEvent {
                users: users.clone(),
                skip_user: skip_user.clone(),
                frames: frames.clone(),
            };
            if self.sender.send(dst, event).is_err() {
                tracing::debug!(shard = dst, "an IM event to a full lane was dropped");
            }
        }
    }

    fn im_frames_to_user(&self, user: &str, frames: &Arc<crate::im::ImFrames>) {
        let channel = crate::channels::personal_channel(user);
        let mask = self.shared.interest.shards(&channel);
        if mask == 0 {
            return;
        }
        let user: Arc<str> = user.into();
        for dst in shard_indexes(mask) {
            let event = ShardEvent::ImEvent {
                user: user.clone(),
                frames: frames.clone(),
                skip_client: 0,
            };
            if self.sender.send(dst, event).is_err() {
                tracing::debug!(shard = dst, "an IM event to a full lane was dropped");
            }
        }
    }
}
