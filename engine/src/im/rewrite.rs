//! Recall and edit on the engine side (`docs/im.md`, "Recall, edit,
//! delete"), shared by the shards' commands and the API twins: read the
//! original on a store reader, check that it is a message, build the event
//! and the original's new form, and hand both to the store's writer, which
//! checks the rights (the sender's window, a group's roles) and writes
//! them in one batch. The event is an entry of the conversation, so the
//! commit sink pushes it to every member's connections like a message.

use ringcast_protocol::client::{ErrorCode, ImReply, MsgKind};
use ringcast_protocol::envelope::{EncodedPush, Envelope};
use ringcast_store::{GroupActor, ImRewrite, ImRewritten, ReadRequest, RewriteOp, StoreError};
use serde::Deserialize;

use super::Refusal;
use crate::engine::Shared;

/// What a recall or an edit asks.
#[derive(Debug, Clone)]
pub enum RewriteAsk {
    Recall,
    /// New data; `kind`, when given, must be the message's.
    Edit {
        kind: Option<MsgKind>,
        data: Vec<u8>,
    },
}

/// The part of a stored entry's data this needs: its kind and state.
#[derive(Deserialize)]
struct StoredEntry {
    kind: String,
    #[serde(default)]
    state: Option<String>,
}

fn bad(reason: String) -> Refusal {
    (ErrorCode::BadRequest, reason)
}

/// The store's refusal of a recall or an edit, as the client's error.
pub fn rewrite_store_error(error: &StoreError) -> Refusal {
    match error {
        StoreError::NotMember { conv, .. } => (
            ErrorCode::NotMember,
            format!("not a member of the conversation {conv}"),
        ),
        StoreError::NotAllowed { action, .. } => (
            ErrorCode::PermissionDenied,
            format!("not allowed to {action}"),
        ),
        StoreError::WindowPassed { what, offset, .. } => (
            ErrorCode::WindowPassed,
            format!("{what} of the message at offset {offset} has passed"),
        ),
        StoreError::Dissolved { conv } => (
            ErrorCode::PermissionDenied,
            format!("the group {conv} is dissolved"),
        ),
        StoreError::InvalidRequest { reason } => bad((*reason).to_owned()),
        other => {
            tracing::error!(error = %other, "a recall or edit failed in the store");
            (
                ErrorCode::StoreUnavailable,
                format!("store unavailable: {other}"),
            )
        }
    }
}

/// `{"ref_offset":N,"ref_id":"ID"` without the closing brace.
fn push_ref(out: &mut Vec<u8>, offset: u64, id: u64) {
    out.extend_from_slice(format!("{{\"ref_offset\":{offset},\"ref_id\":\"{id}\"").as_bytes());
}

/// Recalls or edits the message at `offset` of `conv` for `actor`: the
/// reply once the store wrote it (the API's path; a shard submits the
/// [`prepare_rewrite`]d request tagged, so its reply follows the event's push).
pub async fn rewrite(
    shared: &Shared,
    actor: GroupActor,
    conv: String,
    offset: u64,
    ask: RewriteAsk,
) -> Result<ImReply, Refusal> {
    let request = prepare_rewrite(shared, actor, conv, offset, ask).await?;
    let store_error = |error: StoreError| rewrite_store_error(&error);
    let done = shared
        .im_store()
        .im_rewrite(request)
        .map_err(store_error)?
        .await
        .map_err(|_canceled| store_error(StoreError::Closed))?
        .map_err(store_error)?;
    Ok(rewritten_reply(&done))
}

/// The reply to a stored recall or edit.
pub fn rewritten_reply(done: &ImRewritten) -> ImReply {
    let original = done.replacement.envelope();
    ImReply::Rewritten {
        conv: original.channel.as_str().to_owned(),
        offset: done.appended.offset,
        ref_offset: original.offset.to_native(),
        edits: done.edits,
    }
}

/// Reads the message at `offset` of `conv` on a store reader and builds
/// the writer's request to recall or edit it for `actor`; the writer
/// checks the rights.
pub async fn prepare_rewrite(
    shared: &Shared,
    actor: GroupActor,
    conv: String,
    offset: u64,
    ask: RewriteAsk,
) -> Result<ImRewrite, Refusal> {
    let store_error = |error: StoreError| rewrite_store_error(&error);
    // A group's user must be a member now before the original is read, so
    // a stranger learns nothing of its entries (the writer checks the
    // role again at the event's offset).
    if let (true, GroupActor::User(user)) = (super::is_group(&conv), &actor) {
        let view = shared
            .im_store()
            .conv_get(user, &conv)
            .map_err(store_error)?
            .await
            .map_err(|_canceled| store_error(StoreError::Closed))?
            .map_err(store_error)?;
        let member = view
            .and_then(|summary| summary.group)
            .is_some_and(|group| group.role.is_some());
        if !member {
            return Err(rewrite_store_error(&StoreError::NotMember {
                conv,
                user: user.clone(),
            }));
        }
    }
    let read = shared.read(ReadRequest {
        stream: conv.clone(),
        since: Some(offset.saturating_sub(1)),
        before: Some(offset.saturating_add(1)),
        limit: 1,
        reverse: false,
        from_time_ms: None,
        before_time_ms: None,
    });
    let read = read
        .map_err(store_error)?
        .await
        .map_err(|_canceled| store_error(StoreError::Closed))?
        .map_err(store_error)?;
    let original = read
        .entries
        .into_iter()
        .find(|push| push.envelope().offset.to_native() == offset)
        .ok_or_else(|| bad(format!("no message at offset {offset} of {conv}")))?;
    let header = original.envelope();
    let stored: StoredEntry = serde_json::from_slice(header.data.as_slice())
        .map_err(|_| bad(format!("the entry at offset {offset} is not a message")))?;
    let kind = MsgKind::parse(&stored.kind)
        .ok_or_else(|| bad(format!("the entry at offset {offset} is not a message")))?;
    if stored.state.as_deref() == Some("recalled") {
        return Err(bad(format!("the message at offset {offset} is recalled")));
    }
    let ref_id = header.id.to_native();
    // The commit sink pushes the event by the DM's pair: the system (the
    // API without a user) may name a DM this process never touched.
    if super::is_dm(&conv) && shared.dm_pairs.get(&conv).is_none() {
        let sender = header.sender.as_str();
        let summary = shared
            .im_store()
            .conv_get(sender, &conv)
            .map_err(store_error)?
            .await
            .map_err(|_canceled| store_error(StoreError::Closed))?
            .map_err(store_error)?;
        if let Some(summary) = summary {
            shared
                .dm_pairs
                .remember_listed(sender, &summary.peer, &summary.conv);
        }
    }
    let actor_name = match &actor {
        GroupActor::User(user) => user.clone(),
        GroupActor::System => String::new(),
    };
    let (op, event, new_data, window) = match ask {
        RewriteAsk::Recall => {
            let mut event = b"{\"kind\":\"recall\",\"data\":".to_vec();
            push_ref(&mut event, offset, ref_id);
            event.extend_from_slice(b"}}");
            let tombstone = format!("{{\"kind\":\"{}\",\"state\":\"recalled\"}}", kind.as_str());
            (
                RewriteOp::Recall,
                event,
                tombstone.into_bytes(),
                shared.config.im.recall_window,
            )
        }
        RewriteAsk::Edit { kind: asked, data } => {
            if asked.is_some_and(|asked| asked != kind) {
                return Err(bad(format!(
                    "the message at offset {offset} is a {} message",
                    kind.as_str()
                )));
            }
            super::check_message(&shared.config, kind, &data)?;
            let mut event = b"{\"kind\":\"edit\",\"data\":".to_vec();
            push_ref(&mut event, offset, ref_id);
            event.extend_from_slice(b",\"data\":");
            event.extend_from_slice(&data);
            event.extend_from_slice(b"}}");
            let mut edited = super::entry_data(kind, &data);
            edited.pop();
            edited.extend_from_slice(b",\"state\":\"edited\"}");
            (RewriteOp::Edit, event, edited, shared.config.im.edit_window)
        }
    };
    let envelope = |sender: String, data: Vec<u8>| Envelope {
        id: 0,
        offset: 0,
        epoch: 0,
        channel: conv.clone(),
        sender,
        time_ms: 0,
        data_is_json: true,
        data,
    };
    let durability = if super::is_dm(&conv) {
        super::dm_durability(&shared.config)
    } else {
        super::group_durability(&shared.config)
    };
    Ok(ImRewrite {
        conv: conv.clone(),
        actor,
        op,
        ref_offset: offset,
        ref_id,
        push: EncodedPush::encode(&envelope(actor_name, event)),
        // The store stamps the original's id, offset, epoch and time.
        replacement: EncodedPush::encode(&envelope(header.sender.as_str().to_owned(), new_data)),
        window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        edits_max: shared.config.im.edits_max,
        durability,
    })
}
