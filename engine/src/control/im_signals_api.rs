//! Blocks, typing, DM policy and contacts in the API (`docs/api.md`,
//! "IM"): `POST /api/im/block`, `/api/im/unblock`, `/api/im/blocks_list`,
//! `/api/im/typing` (the client commands' twins, `as_user`), and `/api/im/dm_policy`,
//! `/api/im/contacts`, which only the app's backend sets.

use ringcast_protocol::client::{
    encode_im_reply_result_json, ImEvent, ImReply, TypingState, BLOCKS_LIST_LIMIT_DEFAULT,
    BLOCKS_LIST_LIMIT_MAX,
};
use ringcast_store::{DmPolicy, StoreError};
use serde::Deserialize;
use serde_json::json;

use super::api::{bad_request, store_error_response, Api};
use super::http::{Request, Response, CONTENT_TYPE_JSON};

type ApiResult = Result<Response, Response>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockBody {
    as_user: String,
    user: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListBody {
    as_user: String,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default = "list_limit_default")]
    limit: u32,
}

fn list_limit_default() -> u32 {
    BLOCKS_LIST_LIMIT_DEFAULT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    as_user: String,
    /// `anyone` or `contacts`; absent: read the policy without changing it.
    #[serde(default)]
    policy: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactsBody {
    as_user: String,
    /// `add`, `remove` or `list`.
    op: String,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default = "list_limit_default")]
    limit: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypingBody {
    as_user: String,
    conv: String,
    /// `typing` (the default) or `stopped`.
    #[serde(default)]
    state: Option<String>,
}

fn check_user(user: &str, field: &str) -> Result<(), Response> {
    crate::channels::validate_user_id(user)
        .map_err(|_| bad_request(format!("invalid {field} user id {user:?}")))
}

fn check_limit(limit: u32) -> Result<(), Response> {
    if (1..=BLOCKS_LIST_LIMIT_MAX).contains(&limit) {
        Ok(())
    } else {
        Err(bad_request(format!(
            "limit must be 1 to {BLOCKS_LIST_LIMIT_MAX}"
        )))
    }
}

fn policy_name(policy: DmPolicy) -> &'static str {
    match policy {
        DmPolicy::Contacts => "contacts",
        DmPolicy::Backend => "backend",
        _ => "anyone",
    }
}

/// Awaits a store request; a refusal is the API's error.
async fn stored<T>(
    request: Result<futures_channel::oneshot::Receiver<Result<T, StoreError>>, StoreError>,
    what: &str,
) -> Result<T, Response> {
    match request {
        Ok(receiver) => receiver.await.unwrap_or(Err(StoreError::Closed)),
        Err(err) => Err(err),
    }
    .map_err(|err| match err {
        StoreError::InvalidRequest { reason } => bad_request(reason),
        other => store_error_response(&other, what),
    })
}

fn ok_reply(reply: &ImReply) -> Response {
    Response::text(200, CONTENT_TYPE_JSON, encode_im_reply_result_json(reply))
}

impl Api {
    /// `POST /api/im/block` and `/api/im/unblock`: as the client's
    /// `block`; every connection of `as_user` hears of a change.
    pub(super) async fn im_block(&self, req: &Request, on: bool) -> ApiResult {
        let body: BlockBody = Self::parse(req)?;
        check_user(&body.as_user, "as_user")?;
        check_user(&body.user, "user")?;
        if body.as_user == body.user {
            return Err(bad_request("a user cannot block itself"));
        }
        let write = self.shared.im_store().block(&body.as_user, &body.user, on);
        let changed = stored(write, "nothing was changed").await? != 0;
        if changed {
            let event = ImEvent::Block {
                user: body.user.clone(),
                blocked: on,
            };
            self.im_event_to_user(&body.as_user, &event);
        }
        Ok(ok_reply(&ImReply::Block {
            user: body.user,
            blocked: on,
            changed,
        }))
    }

    /// `POST /api/im/typing`: the client's `typing` for `as_user` (a bot,
    /// or an app relaying its own client): to the conversation's other
    /// members' connections, never stored, with the command's checks
    /// (not a member 403, muted or dissolved 400) and size gate; no rate
    /// limit (the backend is trusted). Answers `{}`.
    pub(super) async fn im_typing(&self, req: &Request) -> ApiResult {
        let body: TypingBody = Self::parse(req)?;
        check_user(&body.as_user, "as_user")?;
        let state = match body.state.as_deref() {
            None => TypingState::Typing,
            Some(state) => TypingState::parse(state).ok_or_else(|| {
                bad_request(format!(
                    "unknown `state` {state:?}; expected typing or stopped"
                ))
            })?,
        };
        let recipients = crate::shard::im_typing::api_typing_recipients(
            self.shared.clone(),
            body.as_user.clone(),
            body.conv.clone(),
        )
        .await
        .map_err(super::im_api::refused)?;
        if let Some(users) = recipients {
            let event = crate::shard::im_typing::typing_event(&body.conv, &body.as_user, state);
            let names = users.iter().map(|user| user.to_string());
            crate::cluster::im_event(&self.shared, names, &body.as_user, &event);
            self.im_frames_to_users(users, &body.as_user, crate::im::event_frames(&event));
        }
        Ok(Response::text(200, CONTENT_TYPE_JSON, "{}"))
    }

    /// `POST /api/im/blocks_list`: a page of the users `as_user` blocked.
    pub(super) async fn im_blocks_list(&self, req: &Request) -> ApiResult {
        let body: ListBody = Self::parse(req)?;
        check_user(&body.as_user, "as_user")?;
        check_limit(body.limit)?;
        let read = self.shared.im_store().blocks_list(
            &body.as_user,
            body.cursor.as_deref(),
            body.limit as usize,
        );
        let page = stored(read, "nothing was read").await?;
        Ok(ok_reply(&crate::im::blocks_page(page, body.limit)))
    }

    /// `POST /api/im/dm_policy`: who may send `as_user` DMs (`anyone`,
    /// `contacts`, `backend`: `im.dm_policy_proxy` decides each new
    /// conversation); without `policy`, the one in force.
    pub(super) async fn im_dm_policy(&self, req: &Request) -> ApiResult {
        let body: PolicyBody = Self::parse(req)?;
        check_user(&body.as_user, "as_user")?;
        let Some(name) = body.policy else {
            let read = self.shared.im_store().dm_policy(&body.as_user);
            let policy = stored(read, "nothing was read").await?;
            return Ok(Response::json(
                200,
                &json!({"user": body.as_user, "policy": policy_name(policy)}),
            ));
        };
        let policy = match name.as_str() {
            "anyone" => DmPolicy::Anyone,
            "contacts" => DmPolicy::Contacts,
            "backend" if self.shared.config.im.dm_policy_proxy.is_empty() => {
                return Err(bad_request(
                    "the backend policy needs a backend to ask: set im.dm_policy_proxy",
                ))
            }
            "backend" => DmPolicy::Backend,
            _ => {
                return Err(bad_request(format!(
                    "unknown policy {name:?}; expected anyone, contacts or backend"
                )))
            }
        };
        let write = self.shared.im_store().set_dm_policy(&body.as_user, policy);
        let changed = stored(write, "nothing was changed").await? != 0;
        Ok(Response::json(
            200,
            &json!({"user": body.as_user, "policy": policy_name(policy), "changed": changed}),
        ))
    }

    /// `POST /api/im/contacts`: adds, removes or lists `as_user`'s contacts.
    pub(super) async fn im_contacts(&self, req: &Request) -> ApiResult {
        let body: ContactsBody = Self::parse(req)?;
        check_user(&body.as_user, "as_user")?;
        let on = match body.op.as_str() {
            "add" => true,
            "remove" => false,
            "list" => {
                check_limit(body.limit)?;
                let read = self.shared.im_store().contacts_list(
                    &body.as_user,
                    body.cursor.as_deref(),
                    body.limit as usize,
                );
                let page = stored(read, "nothing was read").await?;
                // The same page as a blocks list's: users and their times.
                return Ok(ok_reply(&crate::im::blocks_page(page, body.limit)));
            }
            other => {
                return Err(bad_request(format!(
                    "unknown op {other:?}; expected add, remove or list"
                )))
            }
        };
        let Some(user) = body.user else {
            return Err(bad_request("add and remove name the contact in `user`"));
        };
        check_user(&user, "user")?;
        let write = self.shared.im_store().contact(&body.as_user, &user, on);
        let changed = stored(write, "nothing was changed").await? != 0;
        Ok(Response::json(
            200,
            &json!({"user": user, "contact": on, "changed": changed}),
        ))
    }
}
