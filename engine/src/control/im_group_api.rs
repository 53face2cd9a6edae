//! The group commands' API twins (`docs/api.md`, "IM"): `POST
//! /api/im/group_<op>` with the client command's params, plus `as_user`.
//! With `as_user` the backend acts for that user and the roles apply;
//! without it the system acts: roles bypassed, limits kept
//! (`GroupActor::System`). Only the system sets a group's member limit
//! (`group_members_max`, and `members_max` at create), and names a new
//! group's owner and gid (`owner`, `conv`).
//!
//! The body's params go through the client decoder itself, so the twins
//! and the commands refuse the same things (400 here, 107 there).

use ringcast_protocol::client::{decode_json, CommandBody, ErrorCode, ImCommand, ImReply};
use ringcast_protocol::envelope::EncodedPush;
use ringcast_store::{GroupActor, GroupOp, GroupOpRequest, StoreError};
use serde_json::{Map, Value};

use super::api::{bad_request, store_error_response, Api};
use super::http::{Request, Response};
use crate::shard::unix_ms;

type ApiResult = Result<Response, Response>;

/// The group routes, each the twin of the command of the same name.
pub(super) const GROUP_ROUTES: [&str; 14] = [
    "/api/im/group_create",
    "/api/im/group_add",
    "/api/im/group_remove",
    "/api/im/group_leave",
    "/api/im/group_role",
    "/api/im/group_transfer",
    "/api/im/group_update",
    "/api/im/group_mute",
    "/api/im/group_unmute",
    "/api/im/group_mute_all",
    "/api/im/group_dissolve",
    "/api/im/group_members",
    "/api/im/group_info",
    "/api/im/group_members_max",
];

/// A refusal of a group request, as the API's 4xx.
pub(super) fn group_refused((code, message): (ErrorCode, String)) -> Response {
    let (status, name) = match code {
        ErrorCode::NotMember => (403, "not_member"),
        ErrorCode::PermissionDenied => (403, "forbidden"),
        ErrorCode::Muted => (403, "muted"),
        ErrorCode::Dissolved => (409, "dissolved"),
        ErrorCode::MemberLimit => (409, "member_limit"),
        ErrorCode::TooManyConversations => (409, "too_many_conversations"),
        ErrorCode::LimitExceeded => (413, "too_large"),
        _ => (400, "bad_request"),
    };
    Response::error(status, name, &message)
}

/// A store error of a group request as the API's answer.
pub(super) fn group_store_refused(err: &StoreError, what: &str) -> Response {
    match crate::im::group_refusal(err) {
        Some(refusal) => group_refused(refusal),
        None => store_error_response(err, what),
    }
}

/// Takes a string field out of the body.
fn take_string(body: &mut Map<String, Value>, field: &str) -> Result<Option<String>, Response> {
    match body.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(bad_request(format!("`{field}` must be a string"))),
    }
}

fn take_u32(body: &mut Map<String, Value>, field: &str) -> Result<Option<u32>, Response> {
    match body.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| bad_request(format!("`{field}` must be an integer"))),
    }
}

async fn answer<T>(
    request: Result<futures_channel::oneshot::Receiver<Result<T, StoreError>>, StoreError>,
    what: &str,
) -> Result<T, Response> {
    match request {
        Ok(receiver) => receiver.await.unwrap_or(Err(StoreError::Closed)),
        Err(err) => Err(err),
    }
    .map_err(|err| group_store_refused(&err, what))
}

fn ok_json(reply: &ImReply) -> Response {
    Response::text(
        200,
        super::http::CONTENT_TYPE_JSON,
        ringcast_protocol::client::encode_im_reply_result_json(reply),
    )
}

impl Api {
    /// `POST /api/im/group_<op>` (`path` one of [`GROUP_ROUTES`]).
    pub(super) async fn im_group(&self, req: &Request, path: &str) -> ApiResult {
        let method = path.trim_start_matches("/api/im/");
        let mut body: Map<String, Value> = Self::parse(req)?;
        let as_user = take_string(&mut body, "as_user")?;
        if let Some(user) = &as_user {
            crate::channels::validate_user_id(user)
                .map_err(|_| bad_request(format!("invalid as_user user id {user:?}")))?;
        }
        let system_only = |field: &str| {
            bad_request(format!(
                "`{field}` is the system's to set: leave out as_user"
            ))
        };
        if method == "group_members_max" {
            if as_user.is_some() {
                return Err(system_only("members_max"));
            }
            let members_max = take_u32(&mut body, "members_max")?
                .ok_or_else(|| bad_request("group_members_max needs `members_max`"))?;
            let conv = take_string(&mut body, "conv")?
                .filter(|conv| crate::im::is_group(conv))
                .ok_or_else(|| bad_request("`conv` must name a group (grp:...)"))?;
            let key = take_string(&mut body, "client_msg_id")?;
            if let Some(field) = body.keys().next() {
                return Err(bad_request(format!("unknown field `{field}`")));
            }
            return self
                .group_write(None, conv, GroupOp::SetMembersMax { members_max }, key)
                .await;
        }
        let (owner, members_max, given_conv) = if method == "group_create" {
            let owner = take_string(&mut body, "owner")?;
            let members_max = take_u32(&mut body, "members_max")?;
            let conv = take_string(&mut body, "conv")?;
            if as_user.is_some() {
                if let Some(field) = [
                    owner.as_ref().map(|_| "owner"),
                    members_max.map(|_| "members_max"),
                    conv.as_ref().map(|_| "conv"),
                ]
                .into_iter()
                .flatten()
                .next()
                {
                    return Err(system_only(field));
                }
            }
            (owner, members_max, conv)
        } else {
            (None, None, None)
        };
        let command = serde_json::json!({"id": 1, "method": method, "params": body});
        let command =
            decode_json(command.to_string().as_bytes()).map_err(|err| bad_request(err.message))?;
        let CommandBody::Im(command) = command.body else {
            return Err(bad_request(format!("{method} is not a group command")));
        };
        match *command {
            create @ ImCommand::GroupCreate { .. } => {
                let owner = match (&as_user, owner) {
                    (Some(user), _) => user.clone(),
                    (None, Some(owner)) => owner,
                    (None, None) => {
                        return Err(bad_request(
                            "the system's group_create needs `owner` (or act as_user)",
                        ))
                    }
                };
                crate::channels::validate_user_id(&owner)
                    .map_err(|_| bad_request(format!("invalid owner user id {owner:?}")))?;
                let config = &self.shared.config;
                let system_owner = as_user.is_none().then(|| owner.clone());
                let Some((op, client_msg_id)) =
                    crate::im::create_op(config, owner, create, members_max)
                else {
                    return Err(bad_request("not a group_create"));
                };
                let conv = match given_conv {
                    Some(conv) if crate::im::is_group(&conv) => conv,
                    Some(conv) => {
                        return Err(bad_request(format!("{conv:?} is not a group (grp:...)")))
                    }
                    None => {
                        let id = self.message_ids.borrow_mut().next(unix_ms()).0;
                        let client_msg_id = client_msg_id.as_deref();
                        match (as_user.as_deref(), system_owner.as_deref()) {
                            (Some(user), _) => {
                                crate::im::created_group_name(user, client_msg_id, id)
                            }
                            // Review finding F1: two owners, one id.
                            (None, owner) => crate::im::system_group_name(
                                owner.unwrap_or_default(),
                                client_msg_id,
                                id,
                            ),
                        }
                    }
                };
                self.group_write(as_user, conv, op, client_msg_id).await
            }
            ImCommand::Group {
                conv,
                change,
                client_msg_id,
            } => {
                let op = crate::im::store_op(change)
                    .ok_or_else(|| bad_request(format!("{method} is not served here")))?;
                if as_user.is_none() && op == GroupOp::Leave {
                    return Err(bad_request("group_leave needs `as_user`"));
                }
                self.group_write(as_user, conv, op, client_msg_id).await
            }
            ImCommand::GroupMembers { conv, after, limit } => {
                self.check_view(as_user.as_deref(), &conv).await?;
                let page = answer(
                    self.shared
                        .im_store()
                        .group_members(&conv, after.as_deref(), limit as usize),
                    "nothing was read",
                )
                .await?;
                Ok(ok_json(&crate::im::members_reply(conv, page, limit)))
            }
            ImCommand::GroupInfo { conv } => {
                self.check_view(as_user.as_deref(), &conv).await?;
                match answer(self.shared.im_store().group_info(&conv), "nothing was read").await? {
                    Some(info) => Ok(ok_json(&ImReply::GroupInfo(Box::new(
                        crate::im::group_details(info),
                    )))),
                    None => Err(Response::error(
                        404,
                        "not_found",
                        &format!("no group {conv}"),
                    )),
                }
            }
            _ => Err(bad_request(format!("{method} is not a group command"))),
        }
    }

    /// For `as_user`: 403 unless it is a member of `conv` now. The
    /// system reads any group.
    async fn check_view(&self, as_user: Option<&str>, conv: &str) -> Result<(), Response> {
        let Some(user) = as_user else {
            return Ok(());
        };
        let view = answer(
            self.shared.im_store().conv_get(user, conv),
            "nothing was read",
        )
        .await?;
        match view.and_then(|summary| summary.group) {
            Some(group) if group.role.is_some() => Ok(()),
            _ => Err(group_refused((
                ErrorCode::NotMember,
                format!("{user} is not a member of {conv}"),
            ))),
        }
    }

    /// A group change by `as_user` (roles apply) or the system: its
    /// `member` entry stored and pushed to the members, as the command's.
    async fn group_write(
        &self,
        as_user: Option<String>,
        conv: String,
        op: GroupOp,
        client_msg_id: Option<String>,
    ) -> ApiResult {
        let actor_name = as_user.clone().unwrap_or_default();
        let data = crate::im::member_entry_data(&actor_name, &op);
        let envelope = self.im_envelope(&conv, &actor_name, data);
        let request = GroupOpRequest {
            conv: conv.clone(),
            actor: as_user.map_or(GroupActor::System, GroupActor::User),
            op,
            push: EncodedPush::encode(&envelope),
            client_msg_id,
            durability: crate::im::group_durability(&self.shared.config),
        };
        let stored = answer(
            self.shared.im_store().group_op(request),
            "nothing was changed",
        )
        .await?;
        Ok(ok_json(&crate::im::sent_reply(conv, &stored.appended)))
    }
}
