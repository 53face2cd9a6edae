//! Blocks and typing on a shard (`docs/im.md`, "Blocks and DM policy",
//! "Typing"): `block`, `unblock`, `blocks_list` and `typing`.
//!
//! A block is a write of the store's writer like any IM write; the
//! blocker's other connections hear of it (`{"block":...}`). Typing never
//! reaches the writer: the members of the conversation come from the DM's
//! pair (`crate::im::DmPairs`, else the user's view on a store reader) or,
//! for a group, from the store's member read on a reader, kept here for
//! [`GROUP_MEMBERS_CACHE_MS`]; the signal goes through the mesh like any
//! ephemeral IM event, and a full lane drops it.

use std::collections::HashMap;
use std::sync::Arc;

use ringcast_protocol::client::{ErrorCode, ImEvent, ImReply, ReplyResult, TypingState};

use super::commands::{store_reply, CommandError, CommandResult, Outcome, ReplyTo, StoreDone};
use super::Shard;
use crate::channels;
use crate::engine::Shared;
use crate::im::DmPair;

/// How long a shard trusts a group's member list it read for typing: a
/// member added since waits this long for its first signals, a removed one
/// keeps getting them this long. Typing is a hint; the writer decides
/// every message.
const GROUP_MEMBERS_CACHE_MS: u64 = 2000;
/// Groups whose member lists one shard keeps for typing.
const GROUP_MEMBERS_CACHED_MAX: usize = 1024;
/// Members read per store page while listing a group for typing.
const GROUP_MEMBERS_PAGE: usize = 1000;
/// Conversations whose last typing signal one connection's limit
/// remembers; past it the oldest is forgotten.
const TYPING_CONVS_PER_CONN_MAX: usize = 32;

/// A group's members as read for typing.
type Members = Arc<[Box<str>]>;

/// The shard's typing state: per connection the last signal of each
/// conversation, and the group member lists read recently.
#[derive(Default)]
pub(super) struct Signals {
    typing: HashMap<usize, ConnTyping>,
    /// Each group's members and when they were read.
    groups: HashMap<Box<str>, (Members, u64)>,
}

struct ConnTyping {
    client_id: u64,
    /// (conversation, when its last signal went out, what it said).
    last: Vec<(Box<str>, u64, TypingState)>,
}

impl Signals {
    pub(super) fn forget(&mut self, key: usize) {
        self.typing.remove(&key);
    }

    /// Whether a signal `state` from connection (`key`, `client_id`) to
    /// `conv` may go out at `now_ms`: one per `interval_ms`, but a
    /// `stopped` right after a delivered `typing` passes, so that the
    /// indicator clears at once. Records it when it may.
    fn typing_allowed(
        &mut self,
        key: usize,
        client_id: u64,
        conv: &str,
        state: TypingState,
        now_ms: u64,
        interval_ms: u64,
    ) -> bool {
        let conn = self.typing.entry(key).or_insert_with(|| ConnTyping {
            client_id,
            last: Vec::new(),
        });
        if conn.client_id != client_id {
            conn.client_id = client_id;
            conn.last.clear();
        }
        match conn.last.iter_mut().find(|(c, _, _)| &**c == conv) {
            Some((_, last_ms, last_state)) => {
                let due = now_ms.saturating_sub(*last_ms) >= interval_ms;
                let clears = state == TypingState::Stopped && *last_state == TypingState::Typing;
                if !due && !clears {
                    return false;
                }
                *last_ms = now_ms;
                *last_state = state;
                true
            }
            None => {
                if conn.last.len() >= TYPING_CONVS_PER_CONN_MAX {
                    if let Some(oldest) = (0..conn.last.len()).min_by_key(|&i| conn.last[i].1) {
                        conn.last.swap_remove(oldest);
                    }
                }
                conn.last.push((conv.into(), now_ms, state));
                true
            }
        }
    }

    fn cached_group(&self, conv: &str, now_ms: u64) -> Option<Arc<[Box<str>]>> {
        self.groups
            .get(conv)
            .filter(|(_, read_ms)| now_ms.saturating_sub(*read_ms) < GROUP_MEMBERS_CACHE_MS)
            .map(|(members, _)| members.clone())
    }

    fn cache_group(&mut self, conv: &str, members: Arc<[Box<str>]>, now_ms: u64) {
        if self.groups.len() >= GROUP_MEMBERS_CACHED_MAX {
            self.groups
                .retain(|_, (_, read_ms)| now_ms.saturating_sub(*read_ms) < GROUP_MEMBERS_CACHE_MS);
            if self.groups.len() >= GROUP_MEMBERS_CACHED_MAX {
                self.groups.clear();
            }
        }
        self.groups.insert(conv.into(), (members, now_ms));
    }
}

/// A block, list or typing lookup the store answered.
pub(super) enum SignalDone {
    Block {
        other: String,
        on: bool,
        result: Result<u64, CommandError>,
    },
    BlocksList {
        limit: u32,
        result: Result<Vec<(String, u64)>, CommandError>,
    },
    /// The members of `conv` (the DM's pair, or the group's list).
    TypingMembers {
        conv: String,
        state: TypingState,
        result: Result<TypingMembers, CommandError>,
    },
}

pub(super) enum TypingMembers {
    Dm(Arc<DmPair>),
    Group(Arc<[Box<str>]>),
}

/// Every member of group `conv`, read on a store reader.
async fn group_members(shared: Arc<Shared>, conv: String) -> Result<Arc<[Box<str>]>, CommandError> {
    let mut members: Vec<Box<str>> = Vec::new();
    loop {
        let after = members.last().map(|user| user.to_string());
        let page = store_reply(shared.store.group_members(
            &conv,
            after.as_deref(),
            GROUP_MEMBERS_PAGE,
        ))
        .await?;
        let full = page.len() == GROUP_MEMBERS_PAGE;
        members.extend(page.into_iter().map(|member| member.user.into_boxed_str()));
        if !full {
            return Ok(members.into());
        }
    }
}

/// The refusal of a user who is not one of `conv`'s members.
fn not_member(conv: &str) -> CommandError {
    super::im::not_member(conv)
}

impl Shard {
    /// `block` or `unblock` of `other` by `user`.
    pub(super) fn im_block(
        &mut self,
        to: ReplyTo,
        user: &str,
        other: String,
        on: bool,
    ) -> CommandResult {
        channels::validate_user_id(&other)
            .map_err(|code| (code, format!("{other:?} is not a valid user id")))?;
        if other == user {
            return Err((
                ErrorCode::BadRequest,
                "a user cannot block itself".to_owned(),
            ));
        }
        let write = self.shared.store.block(user, &other, on);
        self.store_replies.push(Box::pin(async move {
            let result = store_reply(write).await;
            StoreDone::ImSignal(to, Box::new(SignalDone::Block { other, on, result }))
        }));
        Ok(Outcome::Later)
    }

    /// A page of the users `user` blocked.
    pub(super) fn im_blocks_list(
        &mut self,
        to: ReplyTo,
        user: &str,
        cursor: Option<String>,
        limit: u32,
    ) -> CommandResult {
        let read = self
            .shared
            .store
            .blocks_list(user, cursor.as_deref(), limit as usize);
        self.store_replies.push(Box::pin(async move {
            let result = store_reply(read).await;
            StoreDone::ImSignal(to, Box::new(SignalDone::BlocksList { limit, result }))
        }));
        Ok(Outcome::Later)
    }

    /// `typing` in `conv`: to the other members once they are known.
    pub(super) fn im_typing(
        &mut self,
        to: ReplyTo,
        user: &str,
        conv: String,
        state: TypingState,
    ) -> CommandResult {
        if crate::im::is_dm(&conv) {
            if let Some(pair) = self.shared.dm_pairs.get(&conv) {
                return self.typing_to(to, user, &conv, state, TypingMembers::Dm(pair));
            }
            let lookup =
                super::im::resolve_member(self.shared.clone(), user.to_owned(), conv.clone());
            return Ok(self.typing_later(to, conv, state, async move {
                lookup.await.map(TypingMembers::Dm)
            }));
        }
        if !crate::im::is_group(&conv) {
            return Err((
                ErrorCode::BadRequest,
                format!("{conv} is not a conversation (dm:... or grp:...)"),
            ));
        }
        if let Some(members) = self.im.signals.cached_group(&conv, self.now_ms) {
            return self.typing_to(to, user, &conv, state, TypingMembers::Group(members));
        }
        let read = group_members(self.shared.clone(), conv.clone());
        Ok(self.typing_later(to, conv, state, async move {
            read.await.map(TypingMembers::Group)
        }))
    }

    /// Parks a `typing` until `lookup` finds its conversation's members.
    fn typing_later(
        &mut self,
        to: ReplyTo,
        conv: String,
        state: TypingState,
        lookup: impl std::future::Future<Output = Result<TypingMembers, CommandError>> + 'static,
    ) -> Outcome {
        self.store_replies.push(Box::pin(async move {
            let result = lookup.await;
            StoreDone::ImSignal(
                to,
                Box::new(SignalDone::TypingMembers {
                    conv,
                    state,
                    result,
                }),
            )
        }));
        Outcome::Later
    }

    /// Checks `user` is one of `members`, then sends its signal to the
    /// others unless its connection's limit drops it; answers `{}` both ways.
    fn typing_to(
        &mut self,
        to: ReplyTo,
        user: &str,
        conv: &str,
        state: TypingState,
        members: TypingMembers,
    ) -> CommandResult {
        let is_member = match &members {
            TypingMembers::Dm(pair) => pair.has(user),
            TypingMembers::Group(members) => members.iter().any(|member| &**member == user),
        };
        if !is_member {
            return Err(not_member(conv));
        }
        let interval_ms = self.shared.config.im.typing_interval.as_millis() as u64;
        if !self.im.signals.typing_allowed(
            to.key,
            to.client_id,
            conv,
            state,
            self.now_ms,
            interval_ms,
        ) {
            return Ok(Outcome::Now(ReplyResult::Empty));
        }
        let event = ImEvent::Typing {
            conv: conv.to_owned(),
            user: user.to_owned(),
            state,
        };
        let frames = crate::im::event_frames(&event);
        let others: Vec<&str> = match &members {
            TypingMembers::Dm(pair) => pair.users().filter(|member| *member != user).collect(),
            TypingMembers::Group(members) => members
                .iter()
                .map(|member| &**member)
                .filter(|member| *member != user)
                .collect(),
        };
        for member in others {
            self.im_frames_to_user(member, &frames, 0);
        }
        Ok(Outcome::Now(ReplyResult::Empty))
    }

    /// The store answered a block, a list or a typing lookup.
    pub(super) fn on_im_signal(&mut self, to: ReplyTo, done: SignalDone) {
        if !self.is_current(to.key, to.client_id) {
            return;
        }
        let user = self.conns[to.key].user.to_string();
        match done {
            SignalDone::Block { other, on, result } => {
                let result = result.map(|changed| {
                    if changed != 0 {
                        let event = ImEvent::Block {
                            user: other.clone(),
                            blocked: on,
                        };
                        self.im_event_to_user(&user, &event, to.client_id);
                    }
                    ReplyResult::Im(Box::new(ImReply::Block {
                        user: other,
                        blocked: on,
                        changed: changed != 0,
                    }))
                });
                self.reply_to(to, result);
            }
            SignalDone::BlocksList { limit, result } => {
                let result = result
                    .map(|page| ReplyResult::Im(Box::new(crate::im::blocks_page(page, limit))));
                self.reply_to(to, result);
            }
            SignalDone::TypingMembers {
                conv,
                state,
                result,
            } => {
                let outcome = result.and_then(|members| {
                    if let TypingMembers::Group(list) = &members {
                        self.im
                            .signals
                            .cache_group(&conv, list.clone(), self.now_ms);
                    }
                    self.typing_to(to, &user, &conv, state, members)
                });
                self.reply_outcome(to, outcome);
            }
        }
    }
}
