//! Delivery on a shard (`docs/im.md`, "Who receives what", "What each
//! device replays"): an `ack` of a conversation raises the user's delivery
//! position and tells the senders (`delivered`); the `receipts` query; and
//! `catchup`, which replays chosen conversations merged with their live
//! entries exactly as a subscribe with `since` does (`shard/recovery.rs`).
//!
//! A `delivered` event goes out only when the user's delivery position
//! advances (the store decides, in the ack's batch): acks at or below it,
//! from any device, send nothing, so a receipt costs at most one event per
//! ack that brings something new, never one per device.

use std::collections::HashMap;
use std::sync::Arc;

use ringcast_protocol::client::{
    CatchupFrom, CatchupResult, ErrorCode, ImEvent, ImReply, ReplyResult,
};
use ringcast_store::{GroupMember, ImDelivery, ReceiptPage, StoreError};

use super::commands::{refuse, CommandError, CommandResult, Outcome, ReplyTo, StoreDone};
use super::im::{im_store_error, not_member};
use super::Shard;
use crate::engine::Shared;
use crate::im::ImFrames;

/// A `catchup` whose conversations were checked: what to replay.
pub(super) struct CatchupPlan {
    convs: Vec<CatchupFrom>,
    limit: u64,
}

/// Where one replay of a `catchup` reports: the command and its place in it.
#[derive(Debug, Clone, Copy)]
pub(super) struct CatchupSlot {
    pub id: u64,
    pub index: usize,
    /// Most entries this conversation replays.
    pub limit: u64,
    /// The user's window of the conversation: nothing outside it replays.
    pub view: View,
}

/// One `catchup` in flight: a result per conversation, the reply once
/// every replay finished.
struct Catchup {
    to: ReplyTo,
    results: Vec<Option<Result<CatchupResult, CommandError>>>,
    remaining: usize,
}

/// The `catchup` commands in flight on a shard.
#[derive(Default)]
pub(super) struct Catchups {
    next_id: u64,
    running: HashMap<u64, Catchup>,
}

impl Catchups {
    /// Connection `key` closed: its catchups end with it.
    pub(super) fn forget(&mut self, key: usize) {
        self.running.retain(|_, catchup| catchup.to.key != key);
    }
}

/// The store's answer to a conversation request, a refusal of a user who
/// has no view of it (`InvalidRequest`) as 123.
async fn conv_reply<T>(
    conv: &str,
    request: Result<futures_channel::oneshot::Receiver<Result<T, StoreError>>, StoreError>,
) -> Result<T, CommandError> {
    let result = match request {
        Ok(receiver) => receiver.await.unwrap_or(Err(StoreError::Closed)),
        Err(error) => Err(error),
    };
    result.map_err(|error| match error {
        StoreError::InvalidRequest { .. } => not_member(conv),
        other => im_store_error(&other),
    })
}

/// Whether `user` may replay `conv`: one of a DM's pair, or a member of a
/// group now (a group it left shows only its window, through `history`).
/// Answers the user's window of it, which the replay keeps to.
async fn check_catchup_member(
    shared: Arc<Shared>,
    user: String,
    conv: String,
) -> Result<View, CommandError> {
    if crate::im::is_dm(&conv) {
        super::im::resolve_member(shared.clone(), user.clone(), conv.clone()).await?;
        // A DM the user cleared shows nothing before its `visible_from`.
        let view = conv_reply(&conv, shared.im_store().conv_get(&user, &conv)).await?;
        return Ok(View {
            from: view.map_or(0, |view| view.visible_from),
            to: 0,
        });
    }
    let view = conv_reply(&conv, shared.im_store().conv_get(&user, &conv)).await?;
    match view.and_then(|view| view.group) {
        Some(group) if !group.left => Ok(View {
            from: group.visible_from,
            to: group.visible_to,
        }),
        _ => Err(not_member(&conv)),
    }
}

/// A user's window of a conversation (`docs/im.md`): offsets from `from`
/// on (0: from the start) and up to `to` (0: no end).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct View {
    pub from: u64,
    pub to: u64,
}

impl Shard {
    /// `ack` of a conversation stream: the device's cursor and the user's
    /// delivery position, in one store write.
    pub(super) fn im_ack(
        &mut self,
        key: usize,
        id: u64,
        user: &str,
        conv: String,
        offset: u64,
    ) -> CommandResult {
        let to = self.reply_to_of(key, id)?;
        if crate::im::is_dm(&conv) {
            return self.with_member(to, user, conv, super::im::ImPending::Ack { offset });
        }
        // A group: the store refuses a user who has no view of it.
        self.ack_conv(to, user, conv, offset)
    }

    pub(super) fn ack_conv(
        &mut self,
        to: ReplyTo,
        user: &str,
        conv: String,
        offset: u64,
    ) -> CommandResult {
        let device = self
            .conns
            .get(to.key)
            .map(|conn| self.device_id(conn))
            .ok_or_else(|| refuse(ErrorCode::Internal))?;
        let ack = self.shared.im_store().im_ack(user, &device, &conv, offset);
        let user = user.to_owned();
        self.store_replies.push(Box::pin(async move {
            let result = conv_reply(&conv, ack).await;
            StoreDone::ImAcked(to, user, conv, result)
        }));
        Ok(Outcome::Later)
    }

    /// The store took an `ack` of a conversation: reply, and tell the
    /// senders when the user's delivery position advanced.
    pub(super) fn on_im_acked(
        &mut self,
        to: ReplyTo,
        user: &str,
        conv: String,
        result: Result<ImDelivery, CommandError>,
    ) {
        let delivery = match result {
            Ok(delivery) => delivery,
            Err(err) => return self.reply_to(to, Err(err)),
        };
        if delivery.advanced {
            let event = ImEvent::Delivered {
                conv: conv.clone(),
                user: user.to_owned(),
                offset: delivery.recv_offset,
            };
            match &delivery.peer {
                Some(peer) if peer != user => self.im_event_to_user(peer, &event, 0),
                Some(_) => {}
                None => self.push_group_receipt(&conv, delivery.member_count, &event, user),
            }
        }
        self.reply_to(to, Ok(ReplyResult::Empty));
    }

    /// A receipt for a group's members (but `from`), when the group has at
    /// most `im.group_receipts_members_max` members: the members are read
    /// on a store reader, then the event goes to each one's connections.
    pub(super) fn push_group_receipt(
        &mut self,
        conv: &str,
        member_count: u32,
        event: &ImEvent,
        from: &str,
    ) {
        let max = self.shared.config.im.group_receipts_members_max;
        if max == 0 || member_count > max {
            return;
        }
        let frames = crate::im::event_frames(event);
        let members = self
            .shared
            .im_store()
            .group_members(conv, None, max as usize);
        let from = from.to_owned();
        let event = Box::new(event.clone());
        self.store_replies.push(Box::pin(async move {
            let result = super::commands::store_reply(members).await;
            StoreDone::ImGroupReceipt(frames, event, from, result)
        }));
    }

    pub(super) fn on_group_receipt(
        &mut self,
        frames: &Arc<ImFrames>,
        event: &ImEvent,
        from: &str,
        result: Result<Vec<GroupMember>, CommandError>,
    ) {
        let Ok(members) = result else {
            // Ephemeral, as every receipt: the positions are in `receipts`.
            return;
        };
        let others = members.iter().map(|member| member.user.clone());
        crate::cluster::im_event(&self.shared, others, from, event);
        for member in members.iter().filter(|member| member.user != from) {
            self.im_frames_to_user(&member.user, frames, 0);
        }
    }

    /// A page of `receipts`; the store answers only the conversation's users.
    pub(super) fn receipts_page(
        &mut self,
        to: ReplyTo,
        user: &str,
        conv: String,
        cursor: Option<String>,
        limit: u32,
    ) -> CommandResult {
        let page =
            self.shared
                .im_store()
                .im_receipts(user, &conv, cursor.as_deref(), limit as usize);
        self.store_replies.push(Box::pin(async move {
            let result = conv_reply(&conv, page)
                .await
                .and_then(|page| page.ok_or_else(|| not_member(&conv)));
            StoreDone::ImReceipts(to, conv, result)
        }));
        Ok(Outcome::Later)
    }

    pub(super) fn on_im_receipts(
        &mut self,
        to: ReplyTo,
        conv: String,
        result: Result<ReceiptPage, CommandError>,
    ) {
        let result =
            result.map(|page| ReplyResult::Im(Box::new(crate::im::receipts_reply(conv, page))));
        self.reply_to(to, result);
    }

    /// `catchup`: live entries of every named conversation are held from
    /// now on; the replays start once the user is known to belong to each.
    pub(super) fn catchup_command(
        &mut self,
        to: ReplyTo,
        user: &str,
        convs: Vec<CatchupFrom>,
        limit_per_conv: u32,
    ) -> CommandResult {
        let max = self.shared.config.im.catchup_per_conv_max;
        let limit = if limit_per_conv == 0 {
            max
        } else {
            limit_per_conv.min(max)
        };
        // Anything else may be a subscription of this connection, whose
        // replay state a catchup must not replace.
        if let Some(other) = convs
            .iter()
            .find(|from| !crate::im::is_dm(&from.conv) && !crate::im::is_group(&from.conv))
        {
            return Err((
                ErrorCode::BadRequest,
                format!("{} is not a conversation (dm:... or grp:...)", other.conv),
            ));
        }
        let conn = self
            .conns
            .get_mut(to.key)
            .ok_or_else(|| refuse(ErrorCode::Internal))?;
        if let Some(busy) = convs
            .iter()
            .find(|from| conn.session.replay_id(&from.conv).is_some())
        {
            return Err((
                ErrorCode::AlreadySubscribed,
                format!("{} is being caught up; wait for that reply", busy.conv),
            ));
        }
        for from in &convs {
            conn.session.begin_catchup(&from.conv);
        }
        let shared = self.shared.clone();
        let user = user.to_owned();
        let names: Vec<String> = convs.iter().map(|from| from.conv.clone()).collect();
        let plan = Box::new(CatchupPlan {
            convs,
            limit: u64::from(limit),
        });
        self.store_replies.push(Box::pin(async move {
            let mut views = Vec::with_capacity(names.len());
            let mut result = Ok(());
            for conv in names {
                match check_catchup_member(shared.clone(), user.clone(), conv).await {
                    Ok(view) => views.push(view),
                    Err(err) => {
                        result = Err(err);
                        break;
                    }
                }
            }
            StoreDone::ImCatchup(to, plan, result.map(|()| views))
        }));
        Ok(Outcome::Later)
    }

    /// The conversations of a `catchup` were checked: start a replay of
    /// each, or (refused) release what was held and answer the refusal.
    pub(super) fn on_catchup_checked(
        &mut self,
        to: ReplyTo,
        plan: CatchupPlan,
        result: Result<Vec<View>, CommandError>,
    ) {
        if !self.is_current(to.key, to.client_id) {
            return;
        }
        let views = match result {
            Ok(views) => views,
            Err(err) => {
                let now_ms = self.now_ms;
                if let Some(conn) = self.conns.get_mut(to.key) {
                    for from in &plan.convs {
                        // Nothing was replayed: every held entry goes
                        // out, and the entry with them.
                        conn.session.end_recovery(
                            &from.conv,
                            Some(0),
                            now_ms,
                            &self.session_config,
                        );
                        conn.session.forget_recovery(&from.conv);
                    }
                }
                return self.reply_to(to, Err(err));
            }
        };
        let catchups = &mut self.im.catchups;
        catchups.next_id += 1;
        let id = catchups.next_id;
        catchups.running.insert(
            id,
            Catchup {
                to,
                results: vec![None; plan.convs.len()],
                remaining: plan.convs.len(),
            },
        );
        for (index, (from, view)) in plan.convs.into_iter().zip(views).enumerate() {
            let slot = CatchupSlot {
                id,
                index,
                limit: plan.limit,
                view,
            };
            let device_cursor = from.since.is_none();
            self.start_replay(
                to.key,
                to.id,
                from.conv,
                from.since,
                device_cursor,
                // `"cursor"` without a stored cursor replays nothing
                // (docs/protocol.md, `catchup`), whatever `device_start`.
                false,
                Some(slot),
            );
        }
    }

    /// One conversation of a `catchup` finished; the reply goes once all did.
    pub(super) fn catchup_finished(
        &mut self,
        slot: CatchupSlot,
        result: Result<CatchupResult, CommandError>,
    ) {
        let Some(catchup) = self.im.catchups.running.get_mut(&slot.id) else {
            return;
        };
        if let Some(place) = catchup.results.get_mut(slot.index) {
            *place = Some(result);
            catchup.remaining = catchup.remaining.saturating_sub(1);
        }
        if catchup.remaining > 0 {
            return;
        }
        let Some(catchup) = self.im.catchups.running.remove(&slot.id) else {
            return;
        };
        let results: Result<Vec<CatchupResult>, CommandError> =
            catchup.results.into_iter().flatten().collect();
        let reply = results.map(|convs| ReplyResult::Im(Box::new(ImReply::Catchup { convs })));
        self.reply_to(catchup.to, reply);
    }
}
