//! The readers' side of the IM layer: what a user sees of its
//! conversations (`conv_list`, `im_sync`, `conv_get`), a group's record and
//! members, blocks, contacts and DM policy, each from one snapshot.
//!
//! **Groups in the list.** A group message writes no key per member
//! (`docs/im.md`, "Groups in the list"): the list of a user is its DMs and
//! the groups it left, in `im_uact` order, merged with the groups it is a
//! member of, sorted by their record's `last_time_ms` at each read. The
//! user's groups are found in the same scan of `im_uconv` that sums the
//! total unread, and are at most `groups_per_user_max`.

use std::collections::HashMap;
use std::ops::Bound;

use fjall::Readable;

use crate::api::{
    ConvPage, ConvSummary, DmPolicy, GroupInfo, GroupMember, GroupSummary, ImSync, MemberReceipt,
    ReceiptPage, SyncToken,
};
use crate::error::StoreError;
use crate::keys::{
    dm_policy_decode, entry_key, im_member_key, im_member_key_decode, im_pair_key,
    im_pair_key_decode, im_uact_key, im_uact_key_decode, im_uconv_key, im_uconv_key_decode,
    im_user_prefix, meta_id_key, meta_name_key, read_u64, ConvRecord, ImCounter, MemberRecord,
    StreamMeta, UConvRecord, GROUP_FLAG_DISSOLVED, GROUP_FLAG_HISTORY_FROM_JOIN,
    GROUP_FLAG_MEMBERS_CAN_INVITE, GROUP_FLAG_MUTED_ALL, META_KEY_IM_COUNTER, META_PREFIX_STREAM,
};
use crate::recovery::Fjall;

use super::{corrupt, counted_recalls, decode_dm_unread};

/// Whether `user`'s view is a group it is a member of now: such a group's
/// list place and changes follow its record, not the user's keys.
fn is_current_group(uconv: &UConvRecord) -> bool {
    uconv.group.is_some_and(|view| !view.left)
}

/// The end of what the user sees, as `(offset, count)`: its window's end
/// in a group it left.
fn seen_end(conv: &ConvRecord, uconv: &UConvRecord) -> (u64, u64) {
    match uconv.group {
        Some(view) if view.left => (view.visible_to, view.visible_count),
        _ => (conv.last_offset, conv.count_total),
    }
}

/// The conversation's place in the user's list.
fn list_time(conv: &ConvRecord, uconv: &UConvRecord) -> u64 {
    match uconv.group {
        Some(view) if view.left => view.list_time_ms,
        _ => conv.last_time_ms,
    }
}

/// The gseq of the last write that changed what the user sees: in a DM
/// and in a group it is a member of, every entry does (a DM entry writes
/// the sender's view, not the peer's: the record's gseq stands for it).
fn changed_gseq(conv: &ConvRecord, uconv: &UConvRecord) -> u64 {
    if uconv.group.is_none() || is_current_group(uconv) {
        uconv.changed_gseq.max(conv.last_gseq)
    } else {
        uconv.changed_gseq
    }
}

/// One conversation with the user's view of it.
type Held = (u64, ConvRecord, UConvRecord);

/// Reads of one snapshot: a conversation as `user` sees it.
pub(super) struct SnapshotReader<'a> {
    fjall: &'a Fjall,
    snapshot: fjall::Snapshot,
}

impl<'a> SnapshotReader<'a> {
    pub(super) fn new(fjall: &'a Fjall) -> SnapshotReader<'a> {
        SnapshotReader {
            fjall,
            snapshot: fjall.db.snapshot(),
        }
    }

    fn get(
        &self,
        keyspace: &fjall::Keyspace,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<fjall::Slice>, StoreError> {
        self.snapshot
            .get(keyspace, key)
            .map_err(|error| StoreError::io(what, error))
    }

    /// Unread for the user (`docs/im.md`, "Unread counts"): the counted
    /// messages after its read position up to its end, less those
    /// recalled there (one range read of `im_recalled`, usually empty).
    fn unread(&self, id: u64, conv: &ConvRecord, uconv: &UConvRecord) -> Result<u64, StoreError> {
        let (end, count) = seen_end(conv, uconv);
        let recalled = if end > uconv.read_offset {
            let range = entry_key(id, uconv.read_offset + 1)..=entry_key(id, end);
            counted_recalls(self.snapshot.range(&self.fjall.im_recalled, range))?
        } else {
            0
        };
        Ok(count
            .saturating_sub(conv.counted_read(uconv.read_count))
            .saturating_sub(recalled))
    }

    fn conv(&self, id: u64) -> Result<ConvRecord, StoreError> {
        let bytes = self
            .get(
                &self.fjall.im_conv,
                &id.to_be_bytes(),
                "reading a conversation",
            )?
            .ok_or_else(|| corrupt("", format!("conversation {id} has no record")))?;
        ConvRecord::decode(&bytes).map_err(|reason| corrupt("", reason))
    }

    /// The id of conversation `conv`, if it exists.
    fn conv_id(&self, conv: &str) -> Result<Option<u64>, StoreError> {
        let Some(id) = self.get(&self.fjall.meta, &meta_name_key(conv), "reading a name")? else {
            return Ok(None);
        };
        let id = read_u64(&id, 0).ok_or_else(|| corrupt(conv, "malformed stream id".to_owned()))?;
        let is_conv = self
            .get(
                &self.fjall.im_conv,
                &id.to_be_bytes(),
                "reading a conversation",
            )?
            .is_some();
        Ok(is_conv.then_some(id))
    }

    /// A page of group `id`'s member records in id order, after `after`.
    fn member_page(
        &self,
        id: u64,
        conv: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, MemberRecord)>, StoreError> {
        let prefix = id.to_be_bytes().to_vec();
        let start = match after {
            None => Bound::Included(prefix.clone()),
            Some(user) => Bound::Excluded(im_member_key(id, user)),
        };
        let mut members = Vec::new();
        for guard in self
            .snapshot
            .range(&self.fjall.im_member, (start, Bound::Unbounded))
            .take(limit)
        {
            let (key, value) = guard
                .into_inner()
                .map_err(|error| StoreError::io("reading members", error))?;
            if !key.starts_with(&prefix) {
                break;
            }
            let user = im_member_key_decode(&key, id)
                .ok_or_else(|| corrupt(conv, format!("im_member key of {} bytes", key.len())))?;
            let record = MemberRecord::decode(&value).map_err(|reason| corrupt(conv, reason))?;
            members.push((user.to_owned(), record));
        }
        Ok(members)
    }

    fn member(&self, id: u64, user: &str) -> Result<Option<MemberRecord>, StoreError> {
        self.get(
            &self.fjall.im_member,
            &im_member_key(id, user),
            "reading a member",
        )?
        .map(|bytes| MemberRecord::decode(&bytes).map_err(|reason| corrupt("", reason)))
        .transpose()
    }

    fn summary(
        &self,
        user: &str,
        id: u64,
        conv: ConvRecord,
        uconv: UConvRecord,
    ) -> Result<ConvSummary, StoreError> {
        let meta = self.get(
            &self.fjall.meta,
            &meta_id_key(META_PREFIX_STREAM, id),
            "reading stream meta",
        )?;
        let epoch = match meta {
            Some(bytes) => {
                StreamMeta::decode(&bytes)
                    .map_err(|reason| corrupt(&conv.name, reason))?
                    .epoch
            }
            None => return Err(corrupt(&conv.name, "conversation has no meta".to_owned())),
        };
        let mut last = (conv.last_offset, conv.last_msg_offset, conv.count_total);
        let group = match (&conv.group, uconv.group) {
            (Some(group), Some(view)) => {
                let role = if view.left {
                    last = (view.visible_to, view.visible_msg_offset, view.visible_count);
                    None
                } else {
                    let record = self.member(id, user)?.ok_or_else(|| {
                        corrupt(&conv.name, format!("{user:?} in the list, not a member"))
                    })?;
                    Some(record.role)
                };
                Some(GroupSummary {
                    name: group.title.clone(),
                    role,
                    left: view.left,
                    dissolved: group.has(GROUP_FLAG_DISSOLVED),
                    muted_all: group.has(GROUP_FLAG_MUTED_ALL),
                    member_count: group.member_count,
                    visible_from: view.visible_from,
                    visible_to: view.visible_to,
                })
            }
            (None, None) => None,
            _ => return Err(corrupt(&conv.name, "a view of another kind".to_owned())),
        };
        Ok(ConvSummary {
            unread: self.unread(id, &conv, &uconv)?,
            last_time_ms: list_time(&conv, &uconv),
            changed_gseq: changed_gseq(&conv, &uconv),
            visible_from: uconv
                .group
                .map_or(uconv.visible_from, |view| view.visible_from),
            conv: conv.name,
            sid: id,
            peer: uconv.peer,
            epoch,
            last_offset: last.0,
            last_msg_offset: last.1,
            count_total: last.2,
            read_offset: uconv.read_offset,
            group,
        })
    }

    /// Every conversation of `user` with its view: one prefix scan of
    /// `im_uconv` and a point read of each record.
    fn all_of(&self, user: &str) -> Result<Vec<Held>, StoreError> {
        self.views_of(user, false)
    }

    /// `user`'s groups (current and left) with its views: the same scan,
    /// with a point read of the groups' records only. A user without an
    /// `im_ugroups` key never had a group view (every join writes its
    /// count, 0 included after a leave, and older stores are filled at
    /// open): one point read instead of a scan of its DMs' views.
    fn groups_of(&self, user: &str) -> Result<Vec<Held>, StoreError> {
        if self
            .get(
                &self.fjall.im_ugroups,
                user.as_bytes(),
                "reading a group count",
            )?
            .is_none()
        {
            return Ok(Vec::new());
        }
        self.views_of(user, true)
    }

    /// `user`'s DM unread total (`im_unread`), kept in each entry's batch.
    fn dm_unread(&self, user: &str) -> Result<u64, StoreError> {
        decode_dm_unread(self.get(&self.fjall.im_unread, user.as_bytes(), "reading unread")?)
    }

    /// The total unread of `user`: its DM total, one point read, plus the
    /// unread of its groups among `held` (`docs/im.md`, "Unread counts").
    fn total_unread(&self, user: &str, held: &[Held]) -> Result<u64, StoreError> {
        let mut groups = 0u64;
        for (id, conv, uconv) in held {
            if uconv.group.is_some() {
                groups += self.unread(*id, conv, uconv)?;
            }
        }
        Ok(self.dm_unread(user)?.saturating_add(groups))
    }

    fn views_of(&self, user: &str, groups_only: bool) -> Result<Vec<Held>, StoreError> {
        let mut all = Vec::new();
        for guard in self
            .snapshot
            .prefix(&self.fjall.im_uconv, im_user_prefix(user))
        {
            let (key, value) = guard
                .into_inner()
                .map_err(|error| StoreError::io("reading read positions", error))?;
            // Another user whose id starts with this one's bytes cannot
            // match: the prefix holds the length.
            let Some((_, id)) = im_uconv_key_decode(&key) else {
                return Err(corrupt("", format!("im_uconv key of {} bytes", key.len())));
            };
            let uconv = UConvRecord::decode(&value).map_err(|reason| corrupt("", reason))?;
            if groups_only && uconv.group.is_none() {
                continue;
            }
            all.push((id, self.conv(id)?, uconv));
        }
        Ok(all)
    }

    fn uconv(&self, user: &str, id: u64) -> Result<Option<UConvRecord>, StoreError> {
        self.get(
            &self.fjall.im_uconv,
            &im_uconv_key(user, id),
            "reading a read position",
        )?
        .map(|bytes| UConvRecord::decode(&bytes).map_err(|reason| corrupt("", reason)))
        .transpose()
    }
}

/// A page of `user`'s conversations after `cursor`, newest activity first:
/// its `im_uact` keys (DMs, groups it left) merged with the groups it is a
/// member of, by `(time, sid)` descending.
pub(crate) fn conv_list(
    fjall: &Fjall,
    user: &str,
    cursor: Option<(u64, u64)>,
    limit: usize,
) -> Result<ConvPage, StoreError> {
    let reader = SnapshotReader::new(fjall);
    // The DMs' part of the total is one key; only the groups are read
    // whole (they are merged into the order below).
    let all = reader.groups_of(user)?;
    let total = reader.total_unread(user, &all)?;
    let mut held: HashMap<u64, (ConvRecord, UConvRecord)> = HashMap::with_capacity(all.len());
    // The groups it is a member of, after the cursor, newest first.
    let mut groups: Vec<(u64, u64)> = Vec::new();
    for (id, conv, uconv) in all {
        if is_current_group(&uconv) {
            let place = (conv.last_time_ms, id);
            if cursor.is_none_or(|cursor| place < cursor) {
                groups.push(place);
            }
        }
        held.insert(id, (conv, uconv));
    }
    groups.sort_unstable_by(|a, b| b.cmp(a));
    let mut groups = groups.into_iter().peekable();
    let prefix = im_user_prefix(user);
    let start = match cursor {
        None => Bound::Included(prefix.clone()),
        Some((time_ms, id)) => Bound::Excluded(im_uact_key(user, time_ms, id)),
    };
    let mut places = Vec::with_capacity(limit.min(1024));
    for guard in reader
        .snapshot
        .range(&fjall.im_uact, (start, Bound::Unbounded))
    {
        if places.len() == limit {
            break;
        }
        let key = guard
            .key()
            .map_err(|error| StoreError::io("reading the conversation list", error))?;
        if !key.starts_with(&prefix) {
            break;
        }
        let Some((_, time_ms, id)) = im_uact_key_decode(&key) else {
            return Err(corrupt("", format!("im_uact key of {} bytes", key.len())));
        };
        while places.len() < limit {
            match groups.next_if(|group| *group > (time_ms, id)) {
                Some(group) => places.push(group),
                None => break,
            }
        }
        if places.len() < limit {
            places.push((time_ms, id));
        }
    }
    places.extend(groups.take(limit - places.len()));
    let next = (places.len() == limit)
        .then(|| places.last().copied())
        .flatten();
    let mut convs = Vec::with_capacity(places.len());
    for (_, id) in places {
        let (conv, uconv) = match held.remove(&id) {
            Some(found) => found,
            None => {
                let uconv = reader.uconv(user, id)?.ok_or_else(|| {
                    corrupt("", format!("conversation {id} in the list, no position"))
                })?;
                (reader.conv(id)?, uconv)
            }
        };
        convs.push(reader.summary(user, id, conv, uconv)?);
    }
    Ok(ConvPage {
        convs,
        next,
        total_unread: total,
    })
}

/// What changed for `user`, from one snapshot.
///
/// With a token of this store: the conversations whose view changed after
/// it, at most `limit`, the oldest changes first so that `more` and the
/// token page exactly (call again from the token).
///
/// Without a token, or with one this store cannot continue from
/// ([`ImSync::reset`]): the newest page of the conversation list by
/// activity, and the snapshot's token; `more` then says the list goes on,
/// and the client pages it with `conv_list` from the last conversation's
/// `(last_time_ms, sid)`.
pub(crate) fn im_sync(
    fjall: &Fjall,
    user: &str,
    since: Option<SyncToken>,
    limit: usize,
) -> Result<ImSync, StoreError> {
    let reader = SnapshotReader::new(fjall);
    let counter = reader
        .get(&fjall.meta, META_KEY_IM_COUNTER, "reading the IM counter")?
        .ok_or_else(|| corrupt("", "IM counter missing".to_owned()))?;
    let counter = ImCounter::decode(&counter).map_err(|reason| corrupt("", reason))?;
    // A token ahead of the sequence comes from before a restore of this
    // store: continuing from it would skip the changes made since.
    let reset =
        since.is_some_and(|token| token.store_id != counter.store_id || token.gseq > counter.gseq);
    let since_gseq = since.filter(|_| !reset).map(|token| token.gseq);
    let all = reader.all_of(user)?;
    let total = reader.total_unread(user, &all)?;
    let (changed, more, gseq) = match since_gseq {
        None => {
            let mut newest = all;
            newest
                .sort_by_key(|(id, conv, uconv)| std::cmp::Reverse((list_time(conv, uconv), *id)));
            let more = newest.len() > limit;
            newest.truncate(limit);
            (newest, more, counter.gseq)
        }
        Some(since_gseq) => {
            let mut changed: Vec<_> = all
                .into_iter()
                .filter(|(_, conv, uconv)| changed_gseq(conv, uconv) > since_gseq)
                .collect();
            changed.sort_by_key(|(_, conv, uconv)| changed_gseq(conv, uconv));
            let more = changed.len() > limit;
            changed.truncate(limit);
            let gseq = if more {
                changed
                    .last()
                    .map_or(since_gseq, |(_, conv, uconv)| changed_gseq(conv, uconv))
            } else {
                // Nothing past the page: everything up to the snapshot's counter.
                counter.gseq
            };
            (changed, more, gseq)
        }
    };
    let mut convs = changed
        .into_iter()
        .map(|(id, conv, uconv)| reader.summary(user, id, conv, uconv))
        .collect::<Result<Vec<_>, _>>()?;
    convs.sort_by_key(|conv| std::cmp::Reverse((conv.last_time_ms, conv.sid)));
    Ok(ImSync {
        convs,
        token: SyncToken {
            store_id: counter.store_id,
            gseq,
        },
        more,
        reset,
        total_unread: total,
    })
}

/// `user`'s total unread alone (`docs/im.md`, "Unread counts"): its DM
/// total, one point read, and its groups' unread, from one scan of its
/// views with a point read of each group's record; no list entry is built.
pub(crate) fn total_unread(fjall: &Fjall, user: &str) -> Result<u64, StoreError> {
    let reader = SnapshotReader::new(fjall);
    let groups = reader.groups_of(user)?;
    reader.total_unread(user, &groups)
}

/// `user`'s view of conversation `conv`, or `None` if it has none (never
/// a member, or no such conversation).
pub(crate) fn conv_get(
    fjall: &Fjall,
    user: &str,
    conv: &str,
) -> Result<Option<ConvSummary>, StoreError> {
    let reader = SnapshotReader::new(fjall);
    let Some(id) = reader.conv_id(conv)? else {
        return Ok(None);
    };
    let Some(uconv) = reader.uconv(user, id)? else {
        return Ok(None);
    };
    reader.summary(user, id, reader.conv(id)?, uconv).map(Some)
}

/// Group `conv`'s record, or `None` if no such group.
pub(crate) fn group_info(fjall: &Fjall, conv: &str) -> Result<Option<GroupInfo>, StoreError> {
    let reader = SnapshotReader::new(fjall);
    let Some(id) = reader.conv_id(conv)? else {
        return Ok(None);
    };
    let record = reader.conv(id)?;
    let Some(group) = record.group else {
        return Ok(None);
    };
    Ok(Some(GroupInfo {
        conv: record.name,
        muted_all: group.has(GROUP_FLAG_MUTED_ALL),
        dissolved: group.has(GROUP_FLAG_DISSOLVED),
        history_from_join: group.has(GROUP_FLAG_HISTORY_FROM_JOIN),
        members_can_invite: group.has(GROUP_FLAG_MEMBERS_CAN_INVITE),
        name: group.title,
        info: group.info,
        owner: group.owner,
        member_count: group.member_count,
        members_max: group.members_max,
        last_offset: record.last_offset,
        count_total: record.count_total,
    }))
}

/// A page of group `conv`'s members in id order, after `after`.
pub(crate) fn group_members(
    fjall: &Fjall,
    conv: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<GroupMember>, StoreError> {
    let reader = SnapshotReader::new(fjall);
    let Some(id) = reader.conv_id(conv)? else {
        return Ok(Vec::new());
    };
    let members = reader.member_page(id, conv, after, limit)?;
    Ok(members
        .into_iter()
        .map(|(user, record)| GroupMember {
            user,
            role: record.role,
            joined_offset: record.joined_offset,
            joined_ms: record.joined_ms,
            muted_until_ms: record.muted_until_ms,
            added_by: record.added_by,
        })
        .collect())
}

/// The read and delivery positions of `conv`'s users after `after`, in
/// user id order (a DM's pair; a group's current members from
/// `im_member`, one point read of `im_uconv` each), or `None` if `user` is
/// neither one of the pair nor a member.
pub(crate) fn im_receipts(
    fjall: &Fjall,
    user: &str,
    conv: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Option<ReceiptPage>, StoreError> {
    let reader = SnapshotReader::new(fjall);
    let Some(id) = reader.conv_id(conv)? else {
        return Ok(None);
    };
    let record = reader.conv(id)?;
    let users: Vec<String> = if record.group.is_some() {
        if reader.member(id, user)?.is_none() {
            return Ok(None);
        }
        let members = reader.member_page(id, conv, after, limit)?;
        members.into_iter().map(|(member, _)| member).collect()
    } else {
        if record.peer_of(user).is_none() {
            return Ok(None);
        }
        let (a, b) = &record.pair;
        let mut pair = vec![a.clone()];
        if b != a {
            pair.push(b.clone());
        }
        pair.retain(|member| after.is_none_or(|after| member.as_str() > after));
        pair.truncate(limit);
        pair
    };
    let mut receipts = Vec::with_capacity(users.len());
    for member in users {
        let view = reader.uconv(&member, id)?;
        receipts.push(MemberReceipt {
            read_offset: view.as_ref().map_or(0, |view| view.read_offset),
            recv_offset: view.as_ref().map_or(0, |view| view.recv_offset),
            user: member,
        });
    }
    let next = (receipts.len() == limit)
        .then(|| receipts.last().map(|last| last.user.clone()))
        .flatten();
    Ok(Some(ReceiptPage { receipts, next }))
}

/// A page of `owner`'s blocks (`contacts: false`) or contacts, in id
/// order after `after`, with the time each was added.
pub(crate) fn pair_list(
    fjall: &Fjall,
    contacts: bool,
    owner: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, u64)>, StoreError> {
    let keyspace = if contacts {
        &fjall.im_contact
    } else {
        &fjall.im_block
    };
    let prefix = im_user_prefix(owner);
    let start = match after {
        None => Bound::Included(prefix.clone()),
        Some(other) => Bound::Excluded(im_pair_key(owner, other)),
    };
    let mut list = Vec::new();
    for guard in fjall
        .db
        .snapshot()
        .range(keyspace, (start, Bound::Unbounded))
        .take(limit)
    {
        let (key, value) = guard
            .into_inner()
            .map_err(|error| StoreError::io("reading blocks or contacts", error))?;
        if !key.starts_with(&prefix) {
            break;
        }
        let other = im_pair_key_decode(&key, owner)
            .ok_or_else(|| corrupt("", format!("pair key of {} bytes", key.len())))?;
        list.push((other.to_owned(), read_u64(&value, 0).unwrap_or(0)));
    }
    Ok(list)
}

/// `user`'s DM policy.
pub(crate) fn dm_policy(fjall: &Fjall, user: &str) -> Result<DmPolicy, StoreError> {
    let stored = fjall
        .im_policy
        .get(user.as_bytes())
        .map_err(|error| StoreError::io("reading a DM policy", error))?;
    stored.map_or(Ok(DmPolicy::Anyone), |bytes| {
        dm_policy_decode(&bytes).map_err(|reason| corrupt("", reason))
    })
}
