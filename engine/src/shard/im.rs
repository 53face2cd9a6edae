//! The IM commands on a shard (`docs/im.md`, step 1: direct
//! conversations): `msg_send`, `read`, `conv_list`, the membership check of
//! a DM's `history`, the sync message at connect, and the delivery of DM
//! entries and IM events to every connection of their users.
//!
//! A DM entry is stored by the store's writer (`submit_im_append`) and
//! handed by the commit sink to every shard holding a connection of either
//! user (`streams::StoreSink`), encoded once; this shard then offers it to
//! each local connection of the two users. A command that names a
//! conversation (`conv`) checks the user against the conversation's pair:
//! known since a stored message or a list page (`crate::im::DmPairs`), or
//! read from the user's view of it on a store reader, never on this thread.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use ringcast_protocol::client::{
    ConvCursor, ErrorCode, ImCommand, ImEvent, ImReply, MsgKind, ReplyResult, SyncToken,
};
use ringcast_protocol::envelope::{EncodedPush, Envelope};
use ringcast_store::StoreError;
use ringcast_store::{
    Appended, ConvPage, GroupActor, GroupAppend, GroupOp, GroupOpRequest, ImAppend, ImReadState,
    ReadRequest,
};

use super::commands::{
    refuse, store_error, store_reply, CommandError, CommandResult, Outcome, ReplyTo, StoreDone,
    StoreWait,
};
use super::Shard;
use crate::channels;
use crate::engine::Shared;
use crate::im::dm_policy::DmRefusal;
use crate::im::{DmPair, ImFrames};
use crate::mesh::ShardEvent;
use crate::proxy::{Decision, ProxyError, ProxyEvent};
use crate::publication::Publication;
use crate::streams;

/// The shard's IM state, per connection slot.
#[derive(Default)]
pub(super) struct ImShard {
    /// Own messages whose push `echo: false` connections drop.
    pub(super) echoes: super::im_echo::Echoes,
    /// Connections whose sync message waits for their inbox's replay.
    pub(super) sync_after_inbox: HashMap<usize, (u64, Option<SyncToken>)>,
    /// Typing limits and group member lists (`im_typing.rs`).
    pub(super) typing: super::im_typing::Typing,
    /// `catchup` commands whose replays run.
    pub(super) catchups: super::im_delivery::Catchups,
    /// Group read receipts sent and waiting (`im_receipts.rs`).
    pub(super) read_receipts: super::im_receipts::ReadReceipts,
    /// A connection's DMs to a conversation whose first message waits on
    /// the backend DM policy (`im_send`), by connection slot and
    /// conversation: the later ones, in arrival order.
    dm_checks: HashMap<(usize, String), VecDeque<(ReplyTo, DmMessage)>>,
    /// A connection's commands to a DM whose pair is being looked up on a
    /// store reader (`with_member`): the later ones, in arrival order, so
    /// that lookups answered in any order still go on in the connection's
    /// order.
    lookups: HashMap<(usize, String), VecDeque<(ReplyTo, ImPending)>>,
}

/// DMs one connection may have waiting behind a DM policy check of their
/// conversation (and commands behind a lookup of its pair); past it a
/// command is refused (106), so the queues stay bounded.
const DM_CHECK_QUEUE_MAX: usize = 64;

/// A connection's queue of commands to `conv` behind one that waits, if
/// one does (most often none waits anywhere: one emptiness test).
fn waiting_behind<'a, T>(
    queues: &'a mut HashMap<(usize, String), VecDeque<(ReplyTo, T)>>,
    to: ReplyTo,
    conv: &str,
) -> Option<&'a mut VecDeque<(ReplyTo, T)>> {
    if queues.is_empty() {
        return None;
    }
    queues.get_mut(&(to.key, conv.to_owned()))
}

/// Queues `item` behind the command of its connection and conversation
/// that waits on `what`, or refuses it (106) past [`DM_CHECK_QUEUE_MAX`].
fn queue_behind<T>(
    queued: &mut VecDeque<(ReplyTo, T)>,
    to: ReplyTo,
    item: T,
    conv: &str,
    what: &str,
) -> CommandResult {
    if queued.len() >= DM_CHECK_QUEUE_MAX {
        return Err((
            ErrorCode::LimitExceeded,
            format!(
                "at most {DM_CHECK_QUEUE_MAX} commands to {conv} may wait on {what}; nothing \
                 was done, retry once the earlier ones are answered"
            ),
        ));
    }
    queued.push_back((to, item));
    Ok(Outcome::Later)
}

/// Whose `read` was stored: a DM's user (its peer gets the receipt) or a
/// group's member (the members get it, `im_receipts.rs`).
pub(super) enum ReadOf {
    Dm(Arc<DmPair>),
    Group { member_count: u32 },
}

impl ImShard {
    pub(super) fn forget(&mut self, key: usize) {
        self.echoes.forget(key);
        self.sync_after_inbox.remove(&key);
        self.typing.forget(key);
        self.catchups.forget(key);
        if !self.dm_checks.is_empty() {
            self.dm_checks.retain(|(slot, _), _| *slot != key);
        }
        if !self.lookups.is_empty() {
            self.lookups.retain(|(slot, _), _| *slot != key);
        }
    }
}

/// A command waiting for its conversation's pair.
pub(super) enum ImPending {
    MsgSend {
        kind: MsgKind,
        data: Vec<u8>,
        client_msg_id: Option<String>,
        echo: bool,
    },
    Read {
        offset: u64,
    },
    History(ReadRequest),
    /// An `ack` of the conversation (delivery).
    Ack {
        offset: u64,
    },
    /// A `receipts` page.
    Receipts {
        cursor: Option<String>,
        limit: u32,
    },
    /// A `clear` up to `upto`.
    Clear {
        upto: u64,
    },
    /// A `recall` or an `edit` of the message at `offset`.
    Rewrite {
        offset: u64,
        ask: crate::im::RewriteAsk,
    },
}

/// A `msg_send` waiting in the store's writer.
pub(super) struct SentWait {
    pub to: ReplyTo,
    pub conv: String,
    /// With `echo: false`, the message's id: its push skips the sender.
    pub skip_echo: Option<u64>,
}

pub(super) fn not_member(conv: &str) -> CommandError {
    (
        ErrorCode::NotMember,
        format!("not a member of the conversation {conv}"),
    )
}

/// The store's refusal of an IM request, as the client's error.
pub(super) fn im_store_error(error: &StoreError) -> CommandError {
    match error {
        StoreError::ConversationLimit { user, limit } => (
            ErrorCode::TooManyConversations,
            format!("{user} has {limit} conversations, the most allowed (im.conversations_per_user_max)"),
        ),
        StoreError::InvalidRequest { reason } => (ErrorCode::BadRequest, (*reason).to_owned()),
        StoreError::Blocked { blocker, blocked } => (
            ErrorCode::Blocked,
            format!("{blocker} blocked {blocked}; nothing was stored"),
        ),
        StoreError::NotContact { user, sender } => (
            ErrorCode::PermissionDenied,
            format!("{user} takes direct messages from contacts only and {sender} is not one; nothing was stored"),
        ),
        StoreError::BackendDecides { user, sender } => (
            ErrorCode::PermissionDenied,
            crate::im::dm_policy::undecided_message(user, sender),
        ),
        other => store_error(other),
    }
}

/// A DM refused by its recipient's backend policy, as the client's error.
fn dm_refusal(refusal: &DmRefusal, recipient: &str, sender: &str) -> CommandError {
    match refusal {
        DmRefusal::Denied(message) => (
            ErrorCode::PermissionDenied,
            crate::im::dm_policy::denied_message(recipient, sender, message),
        ),
        DmRefusal::Backend(error) => {
            let (code, message) = super::commands::proxy_error(error);
            (
                code,
                format!("the DM policy backend gave no answer ({message}); nothing was stored"),
            )
        }
        DmRefusal::Store(error) => im_store_error(error),
    }
}

/// A DM waiting for its recipient's backend policy.
pub(super) struct DmChecked {
    conv: String,
    pair: Arc<DmPair>,
    recipient: String,
    message: DmMessage,
}

/// What a `msg_send` to a DM carries.
pub(super) struct DmMessage {
    kind: MsgKind,
    data: Vec<u8>,
    client_msg_id: Option<String>,
    echo: bool,
}

/// The pair of `conv` if `user` is one of it (`crate::im::resolve_member`).
pub(super) async fn resolve_member(
    shared: Arc<Shared>,
    user: String,
    conv: String,
) -> Result<Arc<DmPair>, CommandError> {
    match crate::im::resolve_member(&shared, &user, &conv).await {
        Ok(Some(pair)) => Ok(pair),
        Ok(None) => Err(not_member(&conv)),
        Err(err) => Err(store_error(&err)),
    }
}

/// The store's refusal of a group write, as the client's error.
pub(super) fn group_store_error(error: &StoreError) -> CommandError {
    crate::im::group_refusal(error).unwrap_or_else(|| store_error(error))
}

/// `user`'s view of group `conv` (123 if it has none, or, with
/// `current`, if it is no member now).
pub(super) async fn member_view(
    shared: &Shared,
    user: &str,
    conv: &str,
    current: bool,
) -> Result<ringcast_store::GroupSummary, CommandError> {
    let view = store_reply(shared.im_store().conv_get(user, conv)).await?;
    match view.and_then(|summary| summary.group) {
        Some(group) if !current || group.role.is_some() => Ok(group),
        _ => Err(not_member(conv)),
    }
}

/// `presence_query` by conversation: the presence of `conv`'s members now
/// (a DM's two users, a group's first `PRESENCE_USERS_MAX` in id order),
/// for a member of it (123 otherwise). The members are read on a store
/// reader, the states from the node's presence book.
async fn conv_presence(
    shared: Arc<Shared>,
    user: String,
    conv: String,
) -> Result<ReplyResult, CommandError> {
    let users: Vec<String> = if crate::im::is_group(&conv) {
        member_view(&shared, &user, &conv, true).await?;
        let limit = ringcast_protocol::client::PRESENCE_USERS_MAX;
        store_reply(shared.im_store().group_members(&conv, None, limit))
            .await?
            .into_iter()
            .map(|member| member.user)
            .collect()
    } else {
        let pair = resolve_member(shared.clone(), user, conv).await?;
        pair.users().map(str::to_owned).collect()
    };
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let users = crate::presence::stored::states(&shared.presence_book, &shared.store, &users).await;
    Ok(ReplyResult::Presence { users })
}

impl Shard {
    /// An IM command from connection `key` of `user`.
    pub(super) fn im_command(
        &mut self,
        key: usize,
        id: u64,
        user: &str,
        command: ImCommand,
    ) -> CommandResult {
        if !self.shared.config.im.enabled {
            return Err((
                ErrorCode::MethodNotFound,
                "IM is not enabled on this server (im.enabled)".to_owned(),
            ));
        }
        if user.is_empty() {
            return Err((
                ErrorCode::PermissionDenied,
                "anonymous connections have no conversations".to_owned(),
            ));
        }
        let to = self.reply_to_of(key, id)?;
        match command {
            ImCommand::MsgSend {
                to: peer,
                conv,
                kind,
                data,
                client_msg_id,
                echo,
            } => {
                crate::im::check_message(&self.shared.config, kind, &data)?;
                let pending = ImPending::MsgSend {
                    kind,
                    data,
                    client_msg_id,
                    echo,
                };
                match (peer, conv) {
                    (Some(peer), _) => {
                        channels::validate_user_id(&peer)
                            .map_err(|code| (code, format!("{peer:?} is not a valid user id")))?;
                        let (conv, pair) = self.shared.dm_pairs.pair_of(user, &peer);
                        self.im_continue(to, user, conv, pair, pending)
                    }
                    (None, Some(conv)) if crate::im::is_group(&conv) => {
                        self.group_send(to, user, conv, pending)
                    }
                    (None, Some(conv)) => self.with_member(to, user, conv, pending),
                    (None, None) => Err(refuse(ErrorCode::BadRequest)),
                }
            }
            ImCommand::Read { conv, offset } if crate::im::is_group(&conv) => {
                self.group_read(to, user, conv, offset)
            }
            ImCommand::Read { conv, offset } => {
                self.with_member(to, user, conv, ImPending::Read { offset })
            }
            create @ ImCommand::GroupCreate { .. } => {
                let config = &self.shared.config;
                let Some((op, client_msg_id)) =
                    crate::im::create_op(config, user.to_owned(), create, None)
                else {
                    return Err(refuse(ErrorCode::BadRequest));
                };
                let message_id = self.message_ids.next(self.now_ms).0;
                let conv =
                    crate::im::created_group_name(user, client_msg_id.as_deref(), message_id);
                self.group_change(to, user, conv, op, client_msg_id)
            }
            ImCommand::Group {
                conv,
                change,
                client_msg_id,
            } => {
                let op =
                    crate::im::store_op(change).ok_or_else(|| refuse(ErrorCode::MethodNotFound))?;
                self.group_change(to, user, conv, op, client_msg_id)
            }
            ImCommand::GroupMembers { conv, after, limit } => {
                let shared = self.shared.clone();
                let user = user.to_owned();
                self.store_replies.push(Box::pin(async move {
                    let result = async {
                        member_view(&shared, &user, &conv, true).await?;
                        let page = store_reply(shared.im_store().group_members(
                            &conv,
                            after.as_deref(),
                            limit as usize,
                        ))
                        .await?;
                        Ok(crate::im::members_reply(conv, page, limit))
                    }
                    .await;
                    StoreDone::Replied(to, result.map(|reply| ReplyResult::Im(Box::new(reply))))
                }));
                Ok(Outcome::Later)
            }
            ImCommand::GroupInfo { conv } => {
                let shared = self.shared.clone();
                let user = user.to_owned();
                self.store_replies.push(Box::pin(async move {
                    let result = async {
                        member_view(&shared, &user, &conv, false).await?;
                        match store_reply(shared.im_store().group_info(&conv)).await? {
                            Some(info) => {
                                Ok(ImReply::GroupInfo(Box::new(crate::im::group_details(info))))
                            }
                            None => Err(not_member(&conv)),
                        }
                    }
                    .await;
                    StoreDone::Replied(to, result.map(|reply| ReplyResult::Im(Box::new(reply))))
                }));
                Ok(Outcome::Later)
            }
            ImCommand::Receipts {
                conv,
                cursor,
                limit,
            } => {
                if crate::im::is_dm(&conv) {
                    self.with_member(to, user, conv, ImPending::Receipts { cursor, limit })
                } else {
                    // A group: the store answers only its members.
                    self.receipts_page(to, user, conv, cursor, limit)
                }
            }
            ImCommand::Catchup {
                convs,
                limit_per_conv,
            } => self.catchup_command(to, user, convs, limit_per_conv),
            ImCommand::Clear { conv, upto } if crate::im::is_group(&conv) => {
                Ok(self.clear_later(to, user, conv, upto, true))
            }
            ImCommand::Clear { conv, upto } => {
                self.with_member(to, user, conv, ImPending::Clear { upto })
            }
            ImCommand::Recall { conv, offset } => {
                let ask = crate::im::RewriteAsk::Recall;
                self.rewrite_command(to, user, conv, offset, ask)
            }
            ImCommand::Edit {
                conv,
                offset,
                kind,
                data,
            } => {
                let ask = crate::im::RewriteAsk::Edit { kind, data };
                self.rewrite_command(to, user, conv, offset, ask)
            }
            ImCommand::ConvList { cursor, limit } => {
                let list = self.shared.im_store().conv_list(
                    user,
                    cursor.map(|c| (c.time_ms, c.sid)),
                    limit as usize,
                );
                self.store_replies.push(Box::pin(async move {
                    StoreDone::ConvList(to, store_reply(list).await)
                }));
                Ok(Outcome::Later)
            }
            ImCommand::Block { user: other } => self.im_block(to, user, other, true),
            ImCommand::Unblock { user: other } => self.im_block(to, user, other, false),
            ImCommand::BlocksList { cursor, limit } => self.im_blocks_list(to, user, cursor, limit),
            ImCommand::Typing { conv, state } => self.im_typing(to, user, conv, state),
            ImCommand::PresenceConv { conv } => {
                let shared = self.shared.clone();
                let user = user.to_owned();
                self.store_replies.push(Box::pin(async move {
                    let result = conv_presence(shared, user, conv).await;
                    StoreDone::Replied(to, result)
                }));
                Ok(Outcome::Later)
            }
            _ => Err(refuse(ErrorCode::MethodNotFound)),
        }
    }

    /// Goes on with `pending` once `user` is known to be one of `conv`'s
    /// pair: at once when the pair is known here, else after a lookup.
    pub(super) fn with_member(
        &mut self,
        to: ReplyTo,
        user: &str,
        conv: String,
        pending: ImPending,
    ) -> CommandResult {
        if !crate::im::is_dm(&conv) {
            return Err((
                ErrorCode::BadRequest,
                format!("{conv} is not a conversation (dm:...)"),
            ));
        }
        // An earlier command of this connection to this conversation
        // waits on the lookup: this one goes after it, even if the pair
        // became known meanwhile.
        if let Some(queued) = waiting_behind(&mut self.im.lookups, to, &conv) {
            return queue_behind(queued, to, pending, &conv, "the lookup of its pair");
        }
        if let Some(pair) = self.shared.dm_pairs.get(&conv) {
            if !pair.has(user) {
                return Err(not_member(&conv));
            }
            return self.im_continue(to, user, conv, pair, pending);
        }
        self.im
            .lookups
            .insert((to.key, conv.clone()), VecDeque::new());
        let lookup = resolve_member(self.shared.clone(), user.to_owned(), conv.clone());
        self.store_replies.push(Box::pin(async move {
            StoreDone::ImResolved(to, Box::new((conv, pending)), lookup.await)
        }));
        Ok(Outcome::Later)
    }

    /// The lookup of a parked command's conversation answered.
    pub(super) fn on_im_resolved(
        &mut self,
        to: ReplyTo,
        conv: String,
        pending: ImPending,
        result: Result<Arc<DmPair>, CommandError>,
    ) {
        if !self.is_current(to.key, to.client_id) {
            // Its queue went with the connection (`ImShard::forget`).
            return;
        }
        let user = self.conns[to.key].user.to_string();
        let queued = self
            .im
            .lookups
            .remove(&(to.key, conv.clone()))
            .unwrap_or_default();
        // The commands queued behind this one are the same user's to the
        // same conversation: the lookup's answer is theirs too, taken in
        // their arrival order.
        let resolved = result.map(|pair| (pair.conv_name(), pair));
        for (to, pending) in std::iter::once((to, pending)).chain(queued) {
            let outcome = match &resolved {
                Ok((name, pair)) => {
                    self.im_continue(to, &user, name.clone(), pair.clone(), pending)
                }
                Err(err) => Err(err.clone()),
            };
            self.reply_outcome(to, outcome);
        }
    }

    fn im_continue(
        &mut self,
        to: ReplyTo,
        user: &str,
        conv: String,
        pair: Arc<DmPair>,
        pending: ImPending,
    ) -> CommandResult {
        match pending {
            ImPending::MsgSend {
                kind,
                data,
                client_msg_id,
                echo,
            } => self.im_send(to, user, conv, &pair, kind, data, client_msg_id, echo),
            ImPending::Read { offset } => {
                let read = self.shared.im_store().im_read(user, &conv, offset);
                let shared = self.shared.clone();
                let user = user.to_owned();
                self.store_replies.push(Box::pin(async move {
                    let result = async {
                        let state = store_reply(read).await?;
                        let total = store_reply(shared.im_store().im_total_unread(&user)).await?;
                        Ok((state, total))
                    }
                    .await;
                    StoreDone::ImRead(to, user, conv, ReadOf::Dm(pair), result)
                }));
                Ok(Outcome::Later)
            }
            ImPending::Ack { offset } => self.ack_conv(to, user, conv, offset),
            ImPending::Receipts { cursor, limit } => {
                self.receipts_page(to, user, conv, cursor, limit)
            }
            ImPending::Rewrite { offset, ask } => {
                Ok(self.rewrite_later(to, user, conv, offset, ask))
            }
            ImPending::Clear { upto } => Ok(self.clear_later(to, user, conv, upto, false)),
            ImPending::History(mut request) => {
                // The user's `clear`: nothing before its window is shown.
                let view = self.shared.im_store().conv_get(user, &conv);
                let shared = self.shared.clone();
                self.store_replies.push(Box::pin(async move {
                    let stream = request.stream.clone();
                    let result = async {
                        let visible_from = store_reply(view).await?.map_or(0, |v| v.visible_from);
                        if visible_from > 1 {
                            let since = request.since.unwrap_or(0).max(visible_from - 1);
                            request.since = Some(since);
                        }
                        store_reply(shared.read(request)).await
                    }
                    .await;
                    StoreDone::History(to, stream, result)
                }));
                Ok(Outcome::Later)
            }
        }
    }

    /// A `recall` or an `edit`: a DM's after its pair is known; a group's
    /// at once (its membership and roles are checked on a reader and by
    /// the writer, in `crate::im::rewrite`).
    fn rewrite_command(
        &mut self,
        to: ReplyTo,
        user: &str,
        conv: String,
        offset: u64,
        ask: crate::im::RewriteAsk,
    ) -> CommandResult {
        if crate::im::is_group(&conv) {
            return Ok(self.rewrite_later(to, user, conv, offset, ask));
        }
        self.with_member(to, user, conv, ImPending::Rewrite { offset, ask })
    }

    /// Hands a recall or an edit by `user` to a store task, which reads
    /// the original ([`Shard::submit_rewrite`] follows); the event reaches
    /// the conversation's users as an entry, through the sink.
    fn rewrite_later(
        &mut self,
        to: ReplyTo,
        user: &str,
        conv: String,
        offset: u64,
        ask: crate::im::RewriteAsk,
    ) -> Outcome {
        let shared = self.shared.clone();
        let actor = GroupActor::User(user.to_owned());
        self.store_replies.push(Box::pin(async move {
            let result = crate::im::prepare_rewrite(&shared, actor, conv, offset, ask).await;
            StoreDone::RewriteReady(to, result.map(Box::new))
        }));
        Outcome::Later
    }

    /// A recall or an edit to the writer, tagged: its answer comes through
    /// the sink after the event's push, so the sending connection gets
    /// the push first, as for a message.
    pub(super) fn submit_rewrite(
        &mut self,
        to: ReplyTo,
        prepared: Result<Box<ringcast_store::ImRewrite>, CommandError>,
    ) {
        let request = match prepared {
            Ok(request) => *request,
            Err(err) => return self.reply_to(to, Err(err)),
        };
        let slot = self.pending_store.insert(StoreWait::Rewritten(to));
        let tag = streams::request_tag(self.idx, slot);
        if let Err(err) = self.shared.im_store().submit_im_rewrite(request, tag) {
            self.pending_store.remove(slot);
            self.reply_to(to, Err(crate::im::rewrite_store_error(&err)));
        }
    }

    /// `user`'s `clear` of `conv` up to `upto`, for itself alone: a DM's
    /// user, or (`group`) one with a view of the group (123 otherwise),
    /// whose window then starts after `upto`.
    fn clear_later(
        &mut self,
        to: ReplyTo,
        user: &str,
        conv: String,
        upto: u64,
        group: bool,
    ) -> Outcome {
        // A DM's clear goes to the writer now, before any later command
        // of the connection; a group's after its view is read.
        let early = (!group).then(|| self.shared.im_store().im_clear(user, &conv, upto));
        let shared = self.shared.clone();
        let user = user.to_owned();
        self.store_replies.push(Box::pin(async move {
            let result = async {
                let clear = match early {
                    Some(clear) => clear,
                    None => {
                        member_view(&shared, &user, &conv, false).await?;
                        shared.im_store().im_clear(&user, &conv, upto)
                    }
                };
                let state = store_reply(clear).await?;
                let total = store_reply(shared.im_store().im_total_unread(&user)).await?;
                Ok(ReplyResult::Im(Box::new(ImReply::Cleared {
                    conv,
                    visible_from: state.visible_from,
                    unread: state.unread,
                    total_unread: total,
                })))
            }
            .await;
            StoreDone::Replied(to, result)
        }));
        Outcome::Later
    }

    /// A DM: stored at once, or, when it may start a conversation to a
    /// user whose DM policy is the backend's, once that is settled
    /// (`crate::im::dm_policy`).
    #[expect(
        clippy::too_many_arguments,
        reason = "a message's fields, passed apart rather than through a one-use struct"
    )]
    fn im_send(
        &mut self,
        to: ReplyTo,
        user: &str,
        conv: String,
        pair: &Arc<DmPair>,
        kind: MsgKind,
        data: Vec<u8>,
        client_msg_id: Option<String>,
        echo: bool,
    ) -> CommandResult {
        let message = DmMessage {
            kind,
            data,
            client_msg_id,
            echo,
        };
        // An earlier send of this connection to this conversation waits on
        // the policy: this one goes after it, so the store keeps the
        // connection's order (the checks settle in any order).
        if let Some(queued) = waiting_behind(&mut self.im.dm_checks, to, &conv) {
            return queue_behind(queued, to, message, &conv, "its DM policy");
        }
        // The store has not committed this pair since start: the message
        // may start a conversation.
        let may_start = pair.a != pair.b && self.shared.dm_pairs.get(&conv).is_none();
        if !may_start || self.shared.config.im.dm_policy_proxy.is_empty() {
            return self.submit_dm(to, user, conv, pair, message, false);
        }
        self.im
            .dm_checks
            .insert((to.key, conv.clone()), VecDeque::new());
        let idx = self.idx;
        let sender = user.to_owned();
        let recipient = pair.peer_of(user).to_owned();
        let shared = self.shared.clone();
        let pair = pair.clone();
        let client_id = to.client_id;
        let checked_conv = conv.clone();
        self.store_replies.push(Box::pin(async move {
            let started = std::time::Instant::now();
            let mut asked = false;
            let result = crate::im::dm_policy::check_new_dm(
                &shared,
                client_id,
                &sender,
                &recipient,
                &checked_conv,
                |proxy, body| {
                    asked = true;
                    crate::im::dm_policy::ask_backend(shared.proxies.as_ref(), proxy, body)
                },
            )
            .await;
            if asked {
                // On the shard's thread: the counters' one writer.
                let counters = &shared.metrics[idx].proxy[ProxyEvent::DmPolicy.index()];
                counters.calls.add(1);
                let decision = match &result {
                    Ok(_) => Ok(Decision::Allow {
                        data: None,
                        overrides: None,
                        skip_history: false,
                    }),
                    Err(DmRefusal::Denied(message)) => Ok(Decision::Deny {
                        code: 0,
                        message: message.clone(),
                    }),
                    Err(DmRefusal::Backend(error)) => Err(error.clone()),
                    Err(DmRefusal::Store(_)) => Err(ProxyError::Stopped),
                };
                counters.record(started.elapsed().as_micros() as u64, &decision);
            }
            StoreDone::DmPolicyChecked(
                to,
                Box::new(DmChecked {
                    conv,
                    pair,
                    recipient,
                    message,
                }),
                result,
            )
        }));
        Ok(Outcome::Later)
    }

    /// The backend policy of a DM that may start a conversation is settled.
    pub(super) fn on_dm_policy_checked(
        &mut self,
        to: ReplyTo,
        checked: DmChecked,
        result: Result<bool, DmRefusal>,
    ) {
        if !self.is_current(to.key, to.client_id) {
            // Its queue went with the connection (`ImShard::forget`).
            return;
        }
        let user = self.conns[to.key].user.to_string();
        let DmChecked {
            conv,
            pair,
            recipient,
            message,
        } = checked;
        let queued = self
            .im
            .dm_checks
            .remove(&(to.key, conv.clone()))
            .unwrap_or_default();
        // The sends queued behind this one are from the same sender to the
        // same recipient: the answer is theirs too, and they are submitted
        // (or refused) in their arrival order.
        for (to, message) in std::iter::once((to, message)).chain(queued) {
            let outcome = match &result {
                Ok(allowed) => self.submit_dm(to, &user, conv.clone(), &pair, message, *allowed),
                Err(refusal) => Err(dm_refusal(refusal, &recipient, &user)),
            };
            self.reply_outcome(to, outcome);
        }
    }

    fn submit_dm(
        &mut self,
        to: ReplyTo,
        user: &str,
        conv: String,
        pair: &DmPair,
        message: DmMessage,
        backend_allowed: bool,
    ) -> CommandResult {
        let DmMessage {
            kind,
            data,
            client_msg_id,
            echo,
        } = message;
        let envelope = self.im_envelope(&conv, user, crate::im::entry_data(kind, &data));
        let message_id = envelope.id;
        let request = ImAppend {
            conv: conv.clone(),
            pair: (pair.a.to_string(), pair.b.to_string()),
            sender: user.to_owned(),
            push: EncodedPush::encode(&envelope),
            client_msg_id,
            durability: crate::im::dm_durability(&self.shared.config),
            backend_allowed,
        };
        let skip_echo = (!echo).then_some(message_id);
        let wait = SentWait {
            to,
            conv,
            skip_echo,
        };
        let slot = self.pending_store.insert(StoreWait::ImSent(Box::new(wait)));
        let tag = streams::request_tag(self.idx, slot);
        if let Err(err) = self.shared.im_store().submit_im_append(request, tag) {
            self.pending_store.remove(slot);
            return Err(im_store_error(&err));
        }
        self.start_echo_skip(to, skip_echo);
        Ok(Outcome::Later)
    }

    /// An `echo: false` send is in flight: its push, known by the
    /// message's id, skips the sending connection (`im_echo.rs`).
    fn start_echo_skip(&mut self, to: ReplyTo, skip_echo: Option<u64>) {
        if let Some(message_id) = skip_echo {
            // Past the cap the message is echoed: harmless, the client
            // knows its own messages.
            self.im.echoes.start(to, message_id);
        }
    }

    /// A new IM entry's envelope (the store stamps offset and epoch).
    fn im_envelope(&mut self, conv: &str, sender: &str, data: Vec<u8>) -> Envelope {
        Envelope {
            id: self.message_ids.next(self.now_ms).0,
            offset: 0,
            epoch: 0,
            channel: conv.to_owned(),
            sender: sender.to_owned(),
            time_ms: self.now_ms,
            data_is_json: true,
            data,
        }
    }

    /// Waits for a group write's answer in `pending_store`; returns the
    /// request's tag.
    fn wait_group(&mut self, to: ReplyTo, conv: &str, skip_echo: Option<u64>) -> (usize, u64) {
        let wait = SentWait {
            to,
            conv: conv.to_owned(),
            skip_echo,
        };
        let slot = self
            .pending_store
            .insert(StoreWait::GroupSent(Box::new(wait)));
        (slot, streams::request_tag(self.idx, slot))
    }

    /// A message to a group: the store checks membership, mutes and the
    /// dissolved flag at the offset it takes.
    fn group_send(
        &mut self,
        to: ReplyTo,
        user: &str,
        conv: String,
        pending: ImPending,
    ) -> CommandResult {
        let ImPending::MsgSend {
            kind,
            data,
            client_msg_id,
            echo,
        } = pending
        else {
            return Err(refuse(ErrorCode::BadRequest));
        };
        let envelope = self.im_envelope(&conv, user, crate::im::entry_data(kind, &data));
        let skip_echo = (!echo).then_some(envelope.id);
        let request = GroupAppend {
            conv: conv.clone(),
            sender: user.to_owned(),
            push: EncodedPush::encode(&envelope),
            counts: true,
            client_msg_id,
            durability: crate::im::group_durability(&self.shared.config),
        };
        let (slot, tag) = self.wait_group(to, &conv, skip_echo);
        if let Err(err) = self.shared.im_store().submit_group_append(request, tag) {
            self.pending_store.remove(slot);
            return Err(group_store_error(&err));
        }
        self.start_echo_skip(to, skip_echo);
        Ok(Outcome::Later)
    }

    /// A change to a group by `user`: its `member` entry and the change,
    /// checked by the store against the roles at the entry's offset.
    fn group_change(
        &mut self,
        to: ReplyTo,
        user: &str,
        conv: String,
        op: GroupOp,
        client_msg_id: Option<String>,
    ) -> CommandResult {
        let data = crate::im::member_entry_data(user, &op);
        let envelope = self.im_envelope(&conv, user, data);
        let request = GroupOpRequest {
            conv: conv.clone(),
            actor: GroupActor::User(user.to_owned()),
            op,
            push: EncodedPush::encode(&envelope),
            client_msg_id,
            durability: crate::im::group_durability(&self.shared.config),
        };
        let (slot, tag) = self.wait_group(to, &conv, None);
        if let Err(err) = self.shared.im_store().submit_group_op(request, tag) {
            self.pending_store.remove(slot);
            return Err(group_store_error(&err));
        }
        Ok(Outcome::Later)
    }

    /// `read` of a group: for a user with a view of it (a member, or one
    /// that left, up to its window); a current member's goes to the
    /// members as a receipt (`im_receipts.rs`).
    fn group_read(&mut self, to: ReplyTo, user: &str, conv: String, offset: u64) -> CommandResult {
        let shared = self.shared.clone();
        let user = user.to_owned();
        self.store_replies.push(Box::pin(async move {
            let mut member_count = 0;
            let result = async {
                let view = member_view(&shared, &user, &conv, false).await?;
                if view.role.is_some() {
                    member_count = view.member_count;
                }
                let state = store_reply(shared.im_store().im_read(&user, &conv, offset)).await?;
                let total = store_reply(shared.im_store().im_total_unread(&user)).await?;
                Ok((state, total))
            }
            .await;
            StoreDone::ImRead(to, user, conv, ReadOf::Group { member_count }, result)
        }));
        Ok(Outcome::Later)
    }

    /// The store answered a `msg_send` or a group change.
    pub(super) fn on_im_sent(&mut self, wait: SentWait, result: Result<Appended, CommandError>) {
        let SentWait {
            to,
            conv,
            skip_echo,
        } = wait;
        if let Some(message_id) = skip_echo {
            let stored = result.as_ref().is_ok_and(|appended| !appended.duplicate);
            self.im.echoes.answered(to, message_id, stored);
        }
        let result = result
            .map(|appended| ReplyResult::Im(Box::new(crate::im::sent_reply(conv, &appended))));
        self.reply_to(to, result);
    }

    /// A DM or group entry from the store: to every local connection of
    /// its users (a group's are all its members, wherever they are: the
    /// users with no connection here are skipped, `im_route.rs`), but a
    /// sending connection's own `echo: false` message.
    pub(super) fn deliver_to_users(&mut self, publication: &Arc<Publication>) {
        let mut keys = Vec::new();
        if let Some(pair) = publication.dm() {
            super::im_route::keys_of_users(&self.subscribers, pair.users(), &mut keys);
        } else if let Some(group) = publication.group() {
            super::im_route::keys_of_group(&self.subscribers, &self.inboxes, group, &mut keys);
        }
        if !self.im.echoes.is_empty() {
            let message_id = publication.message_id();
            let (conns, echoes) = (&self.conns, &mut self.im.echoes);
            keys.retain(|key| {
                conns
                    .get(*key)
                    .is_none_or(|conn| !echoes.take(*key, conn.client_id, message_id))
            });
        }
        super::fanout::deliver(
            &mut self.conns,
            &keys,
            publication,
            &mut self.dirty,
            &self.session_config,
            &self.shared.metrics[self.idx],
            self.now_ms,
        );
    }

    /// The store answered a `read`: reply, tell the user's other devices,
    /// and give the peer its receipt.
    pub(super) fn on_im_read(
        &mut self,
        to: ReplyTo,
        user: &str,
        conv: String,
        of: ReadOf,
        result: Result<(ImReadState, u64), CommandError>,
    ) {
        let (state, total_unread) = match result {
            Ok(done) => done,
            Err(err) => return self.reply_to(to, Err(err)),
        };
        let read = ImEvent::Read {
            conv: conv.clone(),
            offset: state.read_offset,
            unread: state.unread,
            total_unread,
        };
        if self.is_current(to.key, to.client_id) {
            self.im_event_to_user(user, &read, to.client_id);
        }
        match of {
            ReadOf::Dm(pair) if pair.peer_of(user) != user => {
                let receipt = ImEvent::Receipt {
                    conv: conv.clone(),
                    user: user.to_owned(),
                    read: state.read_offset,
                };
                self.im_event_to_user(pair.peer_of(user), &receipt, 0);
            }
            ReadOf::Dm(_) => {}
            // A former member (no count) tells no one.
            ReadOf::Group { member_count: 0 } => {}
            ReadOf::Group { member_count } => {
                self.group_read_receipt(&conv, user, state.read_offset, member_count);
            }
        }
        let reply = ImReply::Read {
            conv,
            offset: state.read_offset,
            unread: state.unread,
            total_unread,
        };
        self.reply_to(to, Ok(ReplyResult::Im(Box::new(reply))));
    }

    /// Sends `event` to every connection of `user` on every shard but the
    /// connection `skip_client` (0: none). Ephemeral: a shard whose lane
    /// is full does not get it (the positions are in the next sync).
    pub(super) fn im_event_to_user(&mut self, user: &str, event: &ImEvent, skip_client: u64) {
        crate::cluster::im_event(&self.shared, [user.to_owned()], "", event);
        let frames = crate::im::event_frames(event);
        self.im_frames_to_user(user, &frames, skip_client);
    }

    /// [`Shard::im_event_to_user`] with the event's frames built once for
    /// several users.
    pub(super) fn im_frames_to_user(
        &mut self,
        user: &str,
        frames: &Arc<ImFrames>,
        skip_client: u64,
    ) {
        let channel = channels::personal_channel(user);
        let mask = self.shared.interest.shards(&channel);
        if mask == 0 {
            return;
        }
        let user: Arc<str> = user.into();
        for dst in crate::interest::shard_indexes(mask) {
            if dst == self.idx {
                self.deliver_im_event(&user, frames, skip_client);
                continue;
            }
            let event = ShardEvent::ImEvent {
                user: user.clone(),
                frames: frames.clone(),
                skip_client,
            };
            if self.sender.send(dst, event).is_err() {
                self.shared.metrics[self.idx].mesh_full.add(1);
            }
        }
    }

    /// An IM event for the local connections of `user`.
    pub(super) fn deliver_im_event(&mut self, user: &str, frames: &ImFrames, skip_client: u64) {
        let channel = channels::personal_channel(user);
        let Some(keys) = self.subscribers.get(channel.as_str()).cloned() else {
            return;
        };
        for key in keys {
            let Some(conn) = self.conns.get(key) else {
                continue;
            };
            if conn.client_id == skip_client || &*conn.user != user {
                continue;
            }
            let frame: Bytes = if conn.session.binary() {
                frames.binary.clone()
            } else {
                frames.json.clone()
            };
            self.send_frame(key, frame);
        }
    }

    /// The answer to a `conv_list`.
    pub(super) fn on_conv_list(&mut self, to: ReplyTo, result: Result<ConvPage, CommandError>) {
        let Some(user) = self.conns.get(to.key).map(|c| c.user.to_string()) else {
            return;
        };
        let result = result.map(|page| {
            for summary in &page.convs {
                self.shared
                    .dm_pairs
                    .remember_listed(&user, &summary.peer, &summary.conv);
            }
            ReplyResult::Im(Box::new(ImReply::ConvList {
                convs: page.convs.into_iter().map(crate::im::conv_info).collect(),
                next: page.next.map(|(time_ms, sid)| ConvCursor { time_ms, sid }),
                total_unread: page.total_unread,
            }))
        });
        self.reply_to(to, result);
    }
}
