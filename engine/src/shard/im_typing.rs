//! Typing on a shard (`docs/im.md`, "Typing"): the `typing` command, its
//! limits, and the group member lists it reads.
//!
//! Typing never reaches the store's writer. A DM's members are its pair
//! (`crate::im::DmPairs`, else the user's view on a store reader); a
//! group's come from one read on a store reader (its record, then its
//! members in one page), kept per shard for [`GROUP_CACHE_MS`] and shared
//! by every signal that missed meanwhile. A signal leaves the shard as one
//! mesh event per destination shard, which looks its members up among its
//! own connections; a full lane drops it.
//!
//! Limits, all of them checked before anything is read: per connection a
//! token bucket over all its conversations (`im.typing_rate`,
//! `im.typing_burst`), and per conversation one signal per
//! `im.typing_interval_ms` (a `stopped` right after a delivered `typing`
//! excepted). A signal over a limit is answered `{}` and dropped.

use std::collections::HashMap;
use std::sync::Arc;

use ringcast_protocol::client::{ErrorCode, ImEvent, ReplyResult, TypingState};
use ringcast_store::{GroupMember, GroupRole};

use super::commands::{store_reply, CommandError, CommandResult, Outcome, ReplyTo, StoreDone};
use super::Shard;
use crate::engine::Shared;
use crate::im::{DmPair, ImFrames};
use crate::mesh::ShardEvent;
use crate::ratelimit::{Rate, TokenBucket};

/// How long a shard trusts a group's member list it read for typing: a
/// member added since waits this long for its first signals, a removed or
/// newly muted one may still send or get them this long. Typing is a
/// hint; the writer decides every message.
const GROUP_CACHE_MS: u64 = 2000;
/// Groups one shard keeps for typing (lists, and the marks of groups that
/// are too large, dissolved or absent).
const GROUP_CACHE_GROUPS_MAX: usize = 4096;
/// Bytes of member lists one shard keeps for typing (ids and the per
/// member and per group costs below); past it the oldest reads go first.
const GROUP_CACHE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// What one cached member costs beyond its id's bytes (the id's box, its
/// role and mute).
const GROUP_CACHE_MEMBER_BYTES: usize = 48;
/// What one cached group costs beyond its name's bytes.
const GROUP_CACHE_GROUP_BYTES: usize = 96;
/// Signals waiting on a shard for their groups' reads; past it a signal
/// whose group is not cached is dropped (answered `{}`).
const GROUP_WAITERS_MAX: usize = 4096;
/// Conversations whose last typing signal one connection's interval
/// remembers; past it the oldest is forgotten, which the connection's
/// bucket makes harmless (it bounds the signals over all conversations).
const TYPING_CONVS_PER_CONN_MAX: usize = 32;
/// Recipients of a group signal up to which it goes only to the shards
/// of their connections; past it to every shard, as group entries
/// (`crate::streams`).
const ROUTE_BY_USER_MAX: usize = 64;

/// The shard's typing state.
#[derive(Default)]
pub(super) struct Typing {
    conns: HashMap<usize, ConnTyping>,
    groups: HashMap<Box<str>, Cached>,
    /// What `groups` costs, by the terms above.
    cached_bytes: usize,
    /// Groups being read, with the signals waiting for them.
    reads: HashMap<Box<str>, Vec<Waiter>>,
    n_waiters: usize,
}

/// One connection's limits.
struct ConnTyping {
    client_id: u64,
    bucket: TokenBucket,
    /// (conversation, when its last signal went out, what it said).
    last: Vec<(Box<str>, u64, TypingState)>,
}

struct Cached {
    group: Arc<GroupTyping>,
    read_ms: u64,
    bytes: usize,
}

/// A signal waiting for its group's members.
struct Waiter {
    to: ReplyTo,
    user: Box<str>,
    state: TypingState,
}

/// What typing needs of a group, as read on a store reader.
pub(super) enum GroupTyping {
    /// No such group: every signal is refused with 123.
    Absent,
    /// Dissolved: 121.
    Dissolved,
    /// More members than `im.group_typing_members_max`: signals are
    /// dropped without a look at the member list (not read).
    Large,
    Members(GroupList),
}

/// A group's members in id order (the store's page order), with what
/// decides whether each may type.
pub(super) struct GroupList {
    users: Arc<[Box<str>]>,
    /// Per member of `users`, in the same order.
    rights: Box<[Rights]>,
    muted_all: bool,
}

#[derive(Clone, Copy)]
struct Rights {
    role: GroupRole,
    muted_until_ms: u64,
}

impl GroupList {
    fn new(members: Vec<GroupMember>, muted_all: bool) -> GroupList {
        let mut members = members;
        members.sort_unstable_by(|a, b| a.user.cmp(&b.user));
        let rights = members
            .iter()
            .map(|member| Rights {
                role: member.role,
                muted_until_ms: member.muted_until_ms,
            })
            .collect();
        let users = members
            .into_iter()
            .map(|member| member.user.into_boxed_str())
            .collect();
        GroupList {
            users,
            rights,
            muted_all,
        }
    }

    /// Whether `user` may type at `now_ms`: the roles table's send rule
    /// (`store/src/im/members.rs`): a mute holds everyone but the owner,
    /// mute-all plain members only.
    fn check(&self, conv: &str, user: &str, now_ms: u64) -> Result<(), CommandError> {
        let index = self
            .users
            .binary_search_by(|member| (**member).cmp(user))
            .map_err(|_| super::im::not_member(conv))?;
        let rights = self.rights[index];
        let muted_alone = rights.role != GroupRole::Owner && rights.muted_until_ms > now_ms;
        let muted_all = self.muted_all && rights.role == GroupRole::Member;
        if muted_alone || muted_all {
            let why = if muted_alone {
                format!("until {} (Unix ms)", rights.muted_until_ms)
            } else {
                "by the group's mute-all".to_owned()
            };
            return Err((
                ErrorCode::Muted,
                format!("{user} is muted in {conv} {why}: it may not type there"),
            ));
        }
        Ok(())
    }

    fn bytes(&self) -> usize {
        self.users
            .iter()
            .map(|user| user.len() + GROUP_CACHE_MEMBER_BYTES)
            .sum()
    }
}

impl GroupTyping {
    fn bytes(&self) -> usize {
        match self {
            GroupTyping::Members(list) => list.bytes(),
            _ => 0,
        }
    }
}

impl Typing {
    pub(super) fn forget(&mut self, key: usize) {
        self.conns.remove(&key);
    }

    fn conn(&mut self, key: usize, client_id: u64, rate: Rate, now_ms: u64) -> &mut ConnTyping {
        let conn = self.conns.entry(key).or_insert_with(|| ConnTyping {
            client_id,
            bucket: TokenBucket::full(rate, now_ms),
            last: Vec::new(),
        });
        if conn.client_id != client_id {
            *conn = ConnTyping {
                client_id,
                bucket: TokenBucket::full(rate, now_ms),
                last: Vec::new(),
            };
        }
        conn
    }

    /// Whether a signal `state` to `conv` may go out at `now_ms` by the
    /// conversation's interval: one per `interval_ms`, but a `stopped`
    /// right after a delivered `typing` passes, so that the indicator
    /// clears at once. With `record`, notes that it went out.
    fn interval_allows(
        conn: &mut ConnTyping,
        conv: &str,
        state: TypingState,
        now_ms: u64,
        interval_ms: u64,
        record: bool,
    ) -> bool {
        match conn.last.iter_mut().find(|(c, _, _)| &**c == conv) {
            Some((_, last_ms, last_state)) => {
                let due = now_ms.saturating_sub(*last_ms) >= interval_ms;
                let clears = state == TypingState::Stopped && *last_state == TypingState::Typing;
                if !due && !clears {
                    return false;
                }
                if record {
                    *last_ms = now_ms;
                    *last_state = state;
                }
                true
            }
            None => {
                if record {
                    if conn.last.len() >= TYPING_CONVS_PER_CONN_MAX {
                        if let Some(oldest) = (0..conn.last.len()).min_by_key(|&i| conn.last[i].1) {
                            conn.last.swap_remove(oldest);
                        }
                    }
                    conn.last.push((conv.into(), now_ms, state));
                }
                true
            }
        }
    }

    fn cached(&self, conv: &str, now_ms: u64) -> Option<Arc<GroupTyping>> {
        self.groups
            .get(conv)
            .filter(|cached| now_ms.saturating_sub(cached.read_ms) < GROUP_CACHE_MS)
            .map(|cached| cached.group.clone())
    }

    /// Keeps `group` for `conv`, making room first: expired reads go,
    /// then the oldest, until both bounds hold.
    fn cache(&mut self, conv: &str, group: Arc<GroupTyping>, now_ms: u64) {
        let bytes = conv.len() + GROUP_CACHE_GROUP_BYTES + group.bytes();
        if let Some(old) = self.groups.remove(conv) {
            self.cached_bytes -= old.bytes;
        }
        if bytes > GROUP_CACHE_BYTES_MAX {
            return;
        }
        let full = |typing: &Typing| {
            typing.groups.len() >= GROUP_CACHE_GROUPS_MAX
                || typing.cached_bytes + bytes > GROUP_CACHE_BYTES_MAX
        };
        if full(self) {
            let mut freed = 0;
            self.groups.retain(|_, cached| {
                let keep = now_ms.saturating_sub(cached.read_ms) < GROUP_CACHE_MS;
                if !keep {
                    freed += cached.bytes;
                }
                keep
            });
            self.cached_bytes -= freed;
        }
        if full(self) {
            let mut by_age: Vec<(u64, Box<str>)> = self
                .groups
                .iter()
                .map(|(name, cached)| (cached.read_ms, name.clone()))
                .collect();
            by_age.sort_unstable();
            for (_, name) in by_age {
                if !full(self) {
                    break;
                }
                if let Some(old) = self.groups.remove(&name) {
                    self.cached_bytes -= old.bytes;
                }
            }
        }
        self.cached_bytes += bytes;
        self.groups.insert(
            conv.into(),
            Cached {
                group,
                read_ms: now_ms,
                bytes,
            },
        );
        assert!(self.cached_bytes <= GROUP_CACHE_BYTES_MAX);
        assert!(self.groups.len() <= GROUP_CACHE_GROUPS_MAX);
    }
}

/// A typing lookup the store answered.
pub(super) enum TypingDone {
    /// A DM's pair, for the one signal that asked.
    Dm {
        to: ReplyTo,
        conv: String,
        state: TypingState,
        result: Result<Arc<DmPair>, CommandError>,
    },
    /// A group, for every signal waiting on it.
    Group {
        conv: String,
        result: Result<GroupTyping, CommandError>,
    },
}

/// What typing needs of group `conv`, read on a store reader: its record,
/// then, when it is small enough, its members in one page.
async fn read_group(
    shared: Arc<Shared>,
    conv: String,
    members_max: u32,
) -> Result<GroupTyping, CommandError> {
    let Some(info) = store_reply(shared.im_store().group_info(&conv)).await? else {
        return Ok(GroupTyping::Absent);
    };
    if info.dissolved {
        return Ok(GroupTyping::Dissolved);
    }
    if info.member_count > members_max {
        return Ok(GroupTyping::Large);
    }
    // One more than allowed, so that a group that grew since its record
    // was read is seen too large rather than cut short.
    let page = members_max as usize + 1;
    let members = store_reply(shared.im_store().group_members(&conv, None, page)).await?;
    if members.len() > members_max as usize {
        return Ok(GroupTyping::Large);
    }
    Ok(GroupTyping::Members(GroupList::new(
        members,
        info.muted_all,
    )))
}

impl Shard {
    /// `typing` in `conv`: to the other members once they are known.
    pub(super) fn im_typing(
        &mut self,
        to: ReplyTo,
        user: &str,
        conv: String,
        state: TypingState,
    ) -> CommandResult {
        let dm = crate::im::is_dm(&conv);
        if !dm && !crate::im::is_group(&conv) {
            return Err((
                ErrorCode::BadRequest,
                format!("{conv} is not a conversation (dm:... or grp:...)"),
            ));
        }
        if !self.typing_admitted(to, &conv, state) {
            self.metrics().im_typing_dropped.add(1);
            return Ok(Outcome::Now(ReplyResult::Empty));
        }
        if dm {
            if let Some(pair) = self.shared.dm_pairs.get(&conv) {
                return self.typing_to_pair(to, user, &conv, state, &pair);
            }
            let lookup =
                super::im::resolve_member(self.shared.clone(), user.to_owned(), conv.clone());
            self.store_replies.push(Box::pin(async move {
                let result = lookup.await;
                StoreDone::ImTyping(Box::new(TypingDone::Dm {
                    to,
                    conv,
                    state,
                    result,
                }))
            }));
            return Ok(Outcome::Later);
        }
        if let Some(group) = self.im.typing.cached(&conv, self.now_ms) {
            return self.typing_to_group(to, user, &conv, state, &group);
        }
        let typing = &mut self.im.typing;
        if typing.n_waiters >= GROUP_WAITERS_MAX {
            self.metrics().im_typing_dropped.add(1);
            return Ok(Outcome::Now(ReplyResult::Empty));
        }
        typing.n_waiters += 1;
        let waiter = Waiter {
            to,
            user: user.into(),
            state,
        };
        if let Some(waiting) = typing.reads.get_mut(conv.as_str()) {
            waiting.push(waiter);
            return Ok(Outcome::Later);
        }
        typing.reads.insert(conv.as_str().into(), vec![waiter]);
        self.metrics().im_typing_group_reads.add(1);
        let members_max = self.shared.config.im.group_typing_members_max;
        let read = read_group(self.shared.clone(), conv.clone(), members_max);
        self.store_replies.push(Box::pin(async move {
            let result = read.await;
            StoreDone::ImTyping(Box::new(TypingDone::Group { conv, result }))
        }));
        Ok(Outcome::Later)
    }

    /// The limits a signal must pass before anything is read: the
    /// conversation's interval (looked at, noted only when it goes out),
    /// then a token of the connection's bucket.
    fn typing_admitted(&mut self, to: ReplyTo, conv: &str, state: TypingState) -> bool {
        let config = &self.shared.config.im;
        let rate = Rate::new(config.typing_rate, config.typing_burst);
        let interval_ms = config.typing_interval.as_millis() as u64;
        let now_ms = self.now_ms;
        let conn = self.im.typing.conn(to.key, to.client_id, rate, now_ms);
        Typing::interval_allows(conn, conv, state, now_ms, interval_ms, false)
            && conn.bucket.try_take(rate, now_ms).is_ok()
    }

    /// Notes the signal in its conversation's interval; false when another
    /// went out since it was admitted (it is dropped).
    fn typing_goes_out(&mut self, to: ReplyTo, conv: &str, state: TypingState) -> bool {
        let interval_ms = self.shared.config.im.typing_interval.as_millis() as u64;
        let now_ms = self.now_ms;
        match self.im.typing.conns.get_mut(&to.key) {
            Some(conn) if conn.client_id == to.client_id => {
                Typing::interval_allows(conn, conv, state, now_ms, interval_ms, true)
            }
            _ => false,
        }
    }

    fn typing_to_pair(
        &mut self,
        to: ReplyTo,
        user: &str,
        conv: &str,
        state: TypingState,
        pair: &DmPair,
    ) -> CommandResult {
        if !pair.has(user) {
            return Err(super::im::not_member(conv));
        }
        if self.typing_goes_out(to, conv, state) {
            let peer = pair.peer_of(user);
            if peer != user {
                let event = typing_event(conv, user, state);
                crate::cluster::im_event(&self.shared, [peer.to_owned()], user, &event);
                self.im_frames_to_user(peer, &crate::im::event_frames(&event), 0);
            }
        } else {
            self.metrics().im_typing_dropped.add(1);
        }
        Ok(Outcome::Now(ReplyResult::Empty))
    }

    fn typing_to_group(
        &mut self,
        to: ReplyTo,
        user: &str,
        conv: &str,
        state: TypingState,
        group: &GroupTyping,
    ) -> CommandResult {
        let list = match group {
            GroupTyping::Absent => return Err(super::im::not_member(conv)),
            GroupTyping::Dissolved => {
                return Err((ErrorCode::Dissolved, format!("group {conv} is dissolved")))
            }
            GroupTyping::Large => {
                self.metrics().im_typing_dropped.add(1);
                return Ok(Outcome::Now(ReplyResult::Empty));
            }
            GroupTyping::Members(list) => list,
        };
        list.check(conv, user, self.now_ms)?;
        if !self.typing_goes_out(to, conv, state) {
            self.metrics().im_typing_dropped.add(1);
            return Ok(Outcome::Now(ReplyResult::Empty));
        }
        let event = typing_event(conv, user, state);
        let users = list.users.iter().map(|user| user.to_string());
        crate::cluster::im_event(&self.shared, users, user, &event);
        self.typing_fan_out(&list.users, user, &crate::im::event_frames(&event));
        Ok(Outcome::Now(ReplyResult::Empty))
    }

    /// One event per shard holding a connection of one of `users` (every
    /// shard past [`ROUTE_BY_USER_MAX`] users), for its connections of
    /// them but `typist`'s.
    fn typing_fan_out(&mut self, users: &Arc<[Box<str>]>, typist: &str, frames: &Arc<ImFrames>) {
        let n_shards = self.sender.mesh().n_consumers();
        let mask = if users.len() <= ROUTE_BY_USER_MAX {
            self.shared.interest.shards_of_users(users, typist)
        } else {
            u64::MAX >> (64 - n_shards.clamp(1, 64))
        };
        let typist: Arc<str> = typist.into();
        for dst in crate::interest::shard_indexes(mask) {
            if dst == self.idx {
                self.deliver_im_event_to_users(users, &typist, frames);
                continue;
            }
            let event = ShardEvent::ImUsersEvent {
                users: users.clone(),
                skip_user: typist.clone(),
                frames: frames.clone(),
            };
            self.metrics().im_typing_mesh_events.add(1);
            if self.sender.send(dst, event).is_err() {
                self.metrics().mesh_full.add(1);
            }
        }
    }

    /// An IM event for the local connections of each of `users` but
    /// `skip_user`.
    pub(super) fn deliver_im_event_to_users(
        &mut self,
        users: &[Box<str>],
        skip_user: &str,
        frames: &ImFrames,
    ) {
        let mut channel = String::new();
        let mut keys = Vec::new();
        for user in users.iter().filter(|user| &***user != skip_user) {
            channel.clear();
            channel.push_str(crate::channels::PERSONAL_NAMESPACE);
            channel.push(':');
            channel.push_str(user);
            let Some(subscribers) = self.subscribers.get(channel.as_str()) else {
                continue;
            };
            keys.extend(
                subscribers
                    .iter()
                    .filter(|&&key| self.conns.get(key).is_some_and(|conn| *conn.user == **user)),
            );
        }
        for key in keys {
            let frame = if self.conns[key].session.binary() {
                frames.binary.clone()
            } else {
                frames.json.clone()
            };
            self.send_frame(key, frame);
        }
    }

    /// The store answered a typing lookup.
    pub(super) fn on_im_typing(&mut self, done: TypingDone) {
        match done {
            TypingDone::Dm {
                to,
                conv,
                state,
                result,
            } => {
                if !self.is_current(to.key, to.client_id) {
                    return;
                }
                let user = self.conns[to.key].user.to_string();
                let outcome =
                    result.and_then(|pair| self.typing_to_pair(to, &user, &conv, state, &pair));
                self.reply_outcome(to, outcome);
            }
            TypingDone::Group { conv, result } => {
                let waiting = self
                    .im
                    .typing
                    .reads
                    .remove(conv.as_str())
                    .unwrap_or_default();
                self.im.typing.n_waiters -= waiting.len();
                let group = result.map(Arc::new);
                if let Ok(group) = &group {
                    self.im.typing.cache(&conv, group.clone(), self.now_ms);
                }
                for waiter in waiting {
                    if !self.is_current(waiter.to.key, waiter.to.client_id) {
                        continue;
                    }
                    let outcome = match &group {
                        Ok(group) => self.typing_to_group(
                            waiter.to,
                            &waiter.user,
                            &conv,
                            waiter.state,
                            group,
                        ),
                        Err(error) => Err(error.clone()),
                    };
                    self.reply_outcome(waiter.to, outcome);
                }
            }
        }
    }
}

/// Who hears `user`'s typing in `conv` when the backend types for it
/// (`POST /api/im/typing`): a DM's peer, or a group's members (the typist
/// among them, skipped at delivery), after the client command's checks
/// (123, 121, 122); `None` past `im.group_typing_members_max` (dropped,
/// as on a connection). The API is trusted: no rate limit applies.
pub(crate) async fn api_typing_recipients(
    shared: Arc<Shared>,
    user: String,
    conv: String,
) -> Result<Option<Arc<[Box<str>]>>, CommandError> {
    if crate::im::is_dm(&conv) {
        let pair = match shared.dm_pairs.get(&conv) {
            Some(pair) => pair,
            None => super::im::resolve_member(shared.clone(), user.clone(), conv.clone()).await?,
        };
        if !pair.has(&user) {
            return Err(super::im::not_member(&conv));
        }
        let peer: Box<str> = pair.peer_of(&user).into();
        return Ok(Some(Arc::from(vec![peer])));
    }
    if !crate::im::is_group(&conv) {
        return Err((
            ErrorCode::BadRequest,
            format!("{conv} is not a conversation (dm:... or grp:...)"),
        ));
    }
    let members_max = shared.config.im.group_typing_members_max;
    match read_group(shared, conv.clone(), members_max).await? {
        GroupTyping::Absent => Err(super::im::not_member(&conv)),
        GroupTyping::Dissolved => Err((ErrorCode::Dissolved, format!("group {conv} is dissolved"))),
        GroupTyping::Large => Ok(None),
        GroupTyping::Members(list) => {
            list.check(&conv, &user, super::unix_ms())?;
            Ok(Some(list.users.clone()))
        }
    }
}

pub(crate) fn typing_event(conv: &str, user: &str, state: TypingState) -> ImEvent {
    ImEvent::Typing {
        conv: conv.to_owned(),
        user: user.to_owned(),
        state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(n_members: usize, id_bytes: usize) -> Arc<GroupTyping> {
        let members = (0..n_members)
            .map(|i| GroupMember {
                user: format!("{i:0id_bytes$}"),
                role: GroupRole::Member,
                joined_offset: 1,
                joined_ms: 1,
                muted_until_ms: 0,
                added_by: String::new(),
            })
            .collect();
        Arc::new(GroupTyping::Members(GroupList::new(members, false)))
    }

    #[test]
    fn the_member_cache_stays_within_its_bytes_by_dropping_the_oldest_reads() {
        let mut typing = Typing::default();
        // 1,000 members of 200-byte ids: about 248 KB a group, so the
        // budget holds 33 of them, whatever the group count allows.
        let per_group = 1000 * (200 + GROUP_CACHE_MEMBER_BYTES);
        let fits = GROUP_CACHE_BYTES_MAX / (per_group + 16 + GROUP_CACHE_GROUP_BYTES);
        for i in 0..100u64 {
            typing.cache(&format!("grp:g{i:03}"), group(1000, 200), i);
            assert!(typing.cached_bytes <= GROUP_CACHE_BYTES_MAX);
        }
        assert_eq!(typing.groups.len(), fits);
        let expected: usize = typing.groups.values().map(|cached| cached.bytes).sum();
        assert_eq!(typing.cached_bytes, expected, "the running total is exact");
        // The newest reads stayed.
        assert!(typing.cached("grp:g099", 99).is_some());
        assert!(typing.cached("grp:g000", 99).is_none());
        assert!(typing
            .cached(&format!("grp:g{:03}", 100 - fits), 99)
            .is_some());
    }

    #[test]
    fn expired_reads_make_room_before_fresh_ones_go() {
        let mut typing = Typing::default();
        for i in 0..GROUP_CACHE_GROUPS_MAX as u64 {
            typing.cache(&format!("grp:{i}"), Arc::new(GroupTyping::Absent), 0);
        }
        assert_eq!(typing.groups.len(), GROUP_CACHE_GROUPS_MAX);
        typing.cache("grp:fresh", group(3, 4), GROUP_CACHE_MS);
        assert_eq!(typing.groups.len(), 1, "every expired read went");
        assert!(typing.cached("grp:fresh", GROUP_CACHE_MS).is_some());
        // A read too large for the budget on its own is not kept.
        typing.cache("grp:huge", group(40_000, 250), GROUP_CACHE_MS);
        assert!(typing.cached("grp:huge", GROUP_CACHE_MS).is_none());
        assert_eq!(typing.groups.len(), 1);
    }

    #[test]
    fn the_roles_tables_mute_rules_decide_who_may_type() {
        let member = |user: &str, role, muted_until_ms| GroupMember {
            user: user.to_owned(),
            role,
            joined_offset: 1,
            joined_ms: 1,
            muted_until_ms,
            added_by: String::new(),
        };
        let members = vec![
            member("owner", GroupRole::Owner, 2000),
            member("admin", GroupRole::Admin, 0),
            member("muted_admin", GroupRole::Admin, 2000),
            member("plain", GroupRole::Member, 0),
            member("was_muted", GroupRole::Member, 500),
        ];
        let quiet = GroupList::new(members.clone(), true);
        let now_ms = 1000;
        assert!(quiet.check("grp:x", "owner", now_ms).is_ok(), "never muted");
        assert!(
            quiet.check("grp:x", "admin", now_ms).is_ok(),
            "not by mute-all"
        );
        for user in ["muted_admin", "plain", "was_muted"] {
            let refused = quiet.check("grp:x", user, now_ms).unwrap_err();
            assert_eq!(refused.0, ErrorCode::Muted, "{user}");
        }
        let open = GroupList::new(members, false);
        assert!(
            open.check("grp:x", "was_muted", now_ms).is_ok(),
            "its mute ended"
        );
        assert!(open.check("grp:x", "plain", now_ms).is_ok());
        assert_eq!(
            open.check("grp:x", "muted_admin", now_ms).unwrap_err().0,
            ErrorCode::Muted
        );
        assert_eq!(
            open.check("grp:x", "stranger", now_ms).unwrap_err().0,
            ErrorCode::NotMember
        );
    }
}
