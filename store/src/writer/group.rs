//! The writer's group requests (`docs/im.md`, "Roles", "Who receives
//! what"): operations and messages, checked in offset order against the
//! member table the writer holds, each appended with its member-table,
//! record and view changes in one fjall batch.

use std::collections::BTreeSet;
use std::sync::Arc;

use ringcast_protocol::envelope::EncodedPush;

use crate::api::{
    Durability, GroupActor, GroupAppend, GroupAppended, GroupOp, GroupOpRequest, GroupRole,
    CLIENT_MSG_ID_BYTES_MAX, GROUP_MEMBERS_MAX_CEILING, STREAM_NAME_BYTES_MAX,
};
use crate::error::StoreError;
use crate::im::members::{check_send, plan, validate_text, validate_users, Members, Plan};
use crate::im::ImKeyspace;
use crate::keys::{
    im_member_key, im_uact_key, ConvRecord, GroupRecord, GroupView, MemberRecord, StreamMeta,
    UConvRecord, CONV_KIND_GROUP, GROUP_FLAG_HISTORY_FROM_JOIN, GROUP_FLAG_MEMBERS_CAN_INVITE,
};

use super::im::{im_dedup_id, ConvEntry, GROUP_NAME_PREFIX};
use super::{BatchWork, Writer};

/// How a group write starts: a retry answered with its original, or a
/// new write (the group's id if it exists, the dedup id).
enum GroupStart {
    Duplicate(GroupAppended),
    New(Option<u64>, Option<String>),
}

fn validate_group_request(
    conv: &str,
    sender: &str,
    push: &EncodedPush,
    client_msg_id: Option<&str>,
) -> Result<(), StoreError> {
    if !conv.starts_with(GROUP_NAME_PREFIX) || conv.len() > STREAM_NAME_BYTES_MAX {
        return Err(StoreError::InvalidRequest {
            reason: "a group's name is grp:<gid>, at most 1024 bytes",
        });
    }
    if push.envelope().sender.as_str() != sender {
        return Err(StoreError::InvalidRequest {
            reason: "the push's sender must be the request's sender",
        });
    }
    if client_msg_id.is_some_and(|id| id.is_empty() || id.len() > CLIENT_MSG_ID_BYTES_MAX) {
        return Err(StoreError::InvalidRequest {
            reason: "client_msg_id must be 1..=256 bytes",
        });
    }
    Ok(())
}

/// The view of a user who joins at `offset` (`count` counting entries
/// before it): nothing before the join is unread; with
/// `history_from_join` nothing before it is visible either.
fn joined_view(
    stored: Option<UConvRecord>,
    offset: u64,
    count: u64,
    gseq: u64,
    history_from_join: bool,
) -> UConvRecord {
    let mut view = stored.unwrap_or(UConvRecord {
        kind: CONV_KIND_GROUP,
        read_offset: 0,
        read_count: 0,
        changed_gseq: 0,
        peer: String::new(),
        group: None,
        recv_offset: 0,
        visible_from: 0,
    });
    view.read_offset = offset;
    view.read_count = count;
    view.changed_gseq = gseq;
    view.group = Some(GroupView {
        visible_from: if history_from_join { offset } else { 0 },
        ..GroupView::default()
    });
    view
}

impl Writer {
    /// A group operation: checked against the roles table at the offset
    /// its entry takes, then the entry, the member table's changes, the
    /// record and the joined and removed users' views, in this batch.
    pub(super) fn stage_group_op(
        &mut self,
        work: &mut BatchWork,
        request: GroupOpRequest,
        now_ms: u64,
    ) -> Result<GroupAppended, StoreError> {
        let GroupOpRequest {
            conv,
            actor,
            op,
            push,
            client_msg_id,
            durability,
        } = request;
        let actor_name = match &actor {
            GroupActor::User(user) => user.clone(),
            GroupActor::System => String::new(),
        };
        if let GroupActor::User(user) = &actor {
            validate_users(std::slice::from_ref(user))?;
        }
        let (existing, client_msg_id) = match self.group_start(
            work,
            &conv,
            &actor_name,
            &push,
            client_msg_id,
            durability,
            now_ms,
        )? {
            GroupStart::Duplicate(duplicate) => return Ok(duplicate),
            GroupStart::New(existing, client_msg_id) => (existing, client_msg_id),
        };
        if let GroupOp::Create { .. } = &op {
            if existing.is_some() {
                return Err(StoreError::InvalidRequest {
                    reason: "a stream of that name exists already",
                });
            }
            return self.stage_group_create(work, &conv, &actor, op, push, client_msg_id, now_ms);
        }
        let (id, mut record, meta) = self.group_record(work, &conv, existing, &actor)?;
        let members = work.im.members(&self.fjall, &self.im, id, &conv)?;
        let Some(mut group) = record.group.clone() else {
            return Err(StoreError::InvalidRequest {
                reason: "not a group",
            });
        };
        let offset = meta.next_offset;
        let Plan {
            changes,
            joined,
            removed,
        } = plan(&conv, &mut group, &members, &actor, &op, offset, now_ms)?;
        // Every fallible read before the entry is staged: a refusal after
        // it would leave the entry without its keys.
        let mut joined_views = Vec::with_capacity(joined.len());
        for user in &joined {
            let stored = work.im.uconv(&self.fjall, user, id)?;
            self.check_join_caps(work, user, stored.is_none())?;
            joined_views.push(stored);
        }
        // The views this entry closes: the removed users', or on a
        // dissolve every member's (the table is kept as it was), so a
        // dissolved group stays in its members' lists at a fixed place and
        // no longer counts towards their group cap.
        let closed: Vec<String> = if op == GroupOp::Dissolve {
            members.ids.to_vec()
        } else {
            removed.clone()
        };
        let mut removed_views = Vec::with_capacity(closed.len());
        for user in &closed {
            let stored = work
                .im
                .uconv(&self.fjall, user, id)?
                .ok_or_else(|| crate::im::corrupt(&conv, format!("member {user:?} has no view")))?;
            work.im.group_count(&self.fjall, user)?;
            removed_views.push(stored);
        }
        record.group = Some(group);
        let stored_time_ms = record.last_time_ms;
        let (appended, gseq, count, time_ms) = self.stage_conv_entry(
            work,
            &mut record,
            ConvEntry {
                id,
                meta,
                push,
                client_msg_id,
                counts: false,
            },
            now_ms,
        );
        assert_eq!(appended.offset, offset, "the plan's offset is the entry's");
        let mut table = members.table.clone();
        for (user, change) in changes {
            let key = im_member_key(id, &user);
            match change {
                Some(member) => {
                    work.im
                        .put_key(ImKeyspace::Member, key, Some(member.encode()));
                    table.insert(user, member);
                }
                None => {
                    work.im.put_key(ImKeyspace::Member, key, None);
                    table.remove(&user);
                }
            }
        }
        let history_from_join = record
            .group
            .as_ref()
            .is_some_and(|group| group.has(GROUP_FLAG_HISTORY_FROM_JOIN));
        for (user, stored) in joined.iter().zip(joined_views) {
            if stored.is_none() {
                work.im.count_started(user);
            }
            // A user back in a group it left leaves the left group's
            // place in its list: the group is merged by its record now.
            if let Some(window) = stored.as_ref().and_then(|view| view.group) {
                if window.left {
                    let old = im_uact_key(user, window.list_time_ms, id);
                    work.im.put_key(ImKeyspace::Uact, old, None);
                }
            }
            work.im.add_group_count(user, stored.as_ref(), true);
            let view = joined_view(stored, offset, count, gseq, history_from_join);
            work.im.put_uconv(user, id, view);
        }
        for (user, mut view) in closed.iter().zip(removed_views) {
            work.im.add_group_count(user, Some(&view), false);
            view.changed_gseq = gseq;
            view.group = Some(GroupView {
                visible_to: offset,
                visible_count: count,
                visible_msg_offset: record.last_msg_offset,
                list_time_ms: time_ms,
                left: true,
                ..view.group.unwrap_or_default()
            });
            let place = im_uact_key(user, time_ms, id);
            work.im.put_key(ImKeyspace::Uact, place, Some(Vec::new()));
            work.im.put_uconv(user, id, view);
        }
        assert_eq!(
            record
                .group
                .as_ref()
                .map(|group| group.member_count as usize),
            Some(table.len()),
            "the record's member count is the table's"
        );
        let members = Members::from_table(table);
        let ids = Arc::clone(&members.ids);
        work.im.put_members(id, members);
        work.im.put_conv(id, Some(stored_time_ms), record);
        Ok(GroupAppended {
            appended,
            count,
            gseq,
            members: ids,
            removed,
        })
    }

    /// Creates a group: its stream, record, member table and every
    /// initial member's view, with the `create` entry at offset 1.
    #[expect(
        clippy::too_many_arguments,
        reason = "the request's parts, taken apart by stage_group_op"
    )]
    fn stage_group_create(
        &mut self,
        work: &mut BatchWork,
        conv: &str,
        actor: &GroupActor,
        op: GroupOp,
        push: EncodedPush,
        client_msg_id: Option<String>,
        now_ms: u64,
    ) -> Result<GroupAppended, StoreError> {
        let GroupOp::Create {
            owner,
            name,
            info,
            members,
            members_max,
            history_from_join,
            members_can_invite,
        } = op
        else {
            return Err(StoreError::InvalidRequest {
                reason: "not a create",
            });
        };
        validate_users(std::slice::from_ref(&owner))?;
        if !members.is_empty() {
            validate_users(&members)?;
        }
        validate_text(&name)?;
        validate_text(&info)?;
        if let GroupActor::User(user) = actor {
            if *user != owner || members_max.is_some() {
                return Err(StoreError::NotAllowed {
                    conv: conv.to_owned(),
                    user: user.clone(),
                    action: "create a group for another owner or with its own member limit",
                });
            }
        }
        let members_max = members_max.unwrap_or(self.config.group_members_max);
        if members_max == 0 || members_max > GROUP_MEMBERS_MAX_CEILING {
            return Err(StoreError::InvalidRequest {
                reason: "a group's member limit is 1..=100,000",
            });
        }
        let mut all: BTreeSet<String> = members.into_iter().collect();
        all.insert(owner.clone());
        if all.len() > members_max as usize {
            return Err(StoreError::MemberLimit {
                conv: conv.to_owned(),
                limit: members_max,
            });
        }
        for user in &all {
            self.check_join_caps(work, user, true)?;
        }
        let id = self.create_stream(work, conv, 0);
        let meta = self
            .stream_meta(work, id)
            .ok_or_else(|| crate::im::corrupt(conv, "a new stream has no meta".to_owned()))?;
        let mut flags = 0;
        if history_from_join {
            flags |= GROUP_FLAG_HISTORY_FROM_JOIN;
        }
        if members_can_invite {
            flags |= GROUP_FLAG_MEMBERS_CAN_INVITE;
        }
        let mut record = ConvRecord {
            kind: CONV_KIND_GROUP,
            created_ms: now_ms,
            last_offset: 0,
            last_time_ms: 0,
            last_gseq: 0,
            count_total: 0,
            last_msg_offset: 0,
            name: conv.to_owned(),
            pair: (String::new(), String::new()),
            group: Some(GroupRecord {
                title: name,
                info,
                owner: owner.clone(),
                member_count: u32::try_from(all.len()).unwrap_or(u32::MAX),
                members_max,
                flags,
            }),
            trimmed_count: 0,
        };
        let (appended, gseq, count, _) = self.stage_conv_entry(
            work,
            &mut record,
            ConvEntry {
                id,
                meta,
                push,
                client_msg_id,
                counts: false,
            },
            now_ms,
        );
        let added_by = match actor {
            GroupActor::User(user) => user.clone(),
            GroupActor::System => String::new(),
        };
        let mut table = std::collections::BTreeMap::new();
        for user in all {
            let member = MemberRecord {
                role: if user == owner {
                    GroupRole::Owner
                } else {
                    GroupRole::Member
                },
                joined_offset: appended.offset,
                muted_until_ms: 0,
                joined_ms: now_ms,
                added_by: added_by.clone(),
            };
            work.im.put_key(
                ImKeyspace::Member,
                im_member_key(id, &user),
                Some(member.encode()),
            );
            let view = joined_view(None, appended.offset, count, gseq, history_from_join);
            work.im.add_group_count(&user, None, true);
            work.im.put_uconv(&user, id, view);
            work.im.count_started(&user);
            table.insert(user, member);
        }
        let members = Members::from_table(table);
        let ids = Arc::clone(&members.ids);
        work.im.put_members(id, members);
        work.im.put_conv(id, None, record);
        Ok(GroupAppended {
            appended,
            count,
            gseq,
            members: ids,
            removed: Vec::new(),
        })
    }

    /// A message to a group: the sender is a member, not muted, not under
    /// mute-all unless owner or admin, the group not dissolved; the reply
    /// carries the members it goes to.
    pub(super) fn stage_group_append(
        &mut self,
        work: &mut BatchWork,
        request: GroupAppend,
        now_ms: u64,
    ) -> Result<GroupAppended, StoreError> {
        let GroupAppend {
            conv,
            sender,
            push,
            counts,
            client_msg_id,
            durability,
        } = request;
        validate_users(std::slice::from_ref(&sender))?;
        let (existing, client_msg_id) = match self.group_start(
            work,
            &conv,
            &sender,
            &push,
            client_msg_id,
            durability,
            now_ms,
        )? {
            GroupStart::Duplicate(duplicate) => return Ok(duplicate),
            GroupStart::New(existing, client_msg_id) => (existing, client_msg_id),
        };
        let actor = GroupActor::User(sender.clone());
        let (id, mut record, meta) = self.group_record(work, &conv, existing, &actor)?;
        let members = work.im.members(&self.fjall, &self.im, id, &conv)?;
        let group = record.group.as_ref().ok_or(StoreError::InvalidRequest {
            reason: "not a group",
        })?;
        check_send(&conv, group, &members, &sender, now_ms)?;
        let stored_view = work
            .im
            .uconv(&self.fjall, &sender, id)?
            .ok_or_else(|| crate::im::corrupt(&conv, format!("member {sender:?} has no view")))?;
        let stored_time_ms = record.last_time_ms;
        let (appended, gseq, count, _) = self.stage_conv_entry(
            work,
            &mut record,
            ConvEntry {
                id,
                meta,
                push,
                client_msg_id,
                counts,
            },
            now_ms,
        );
        // One's own message is read: one view written per message, the
        // sender's, whatever the group's size.
        let mut view = stored_view;
        view.read_offset = appended.offset;
        view.read_count = count;
        view.changed_gseq = gseq;
        work.im.put_uconv(&sender, id, view);
        work.im.put_conv(id, Some(stored_time_ms), record);
        Ok(GroupAppended {
            appended,
            count,
            gseq,
            members: Arc::clone(&members.ids),
            removed: Vec::new(),
        })
    }

    /// What every group write does first: checks the request, and
    /// answers a retry with its original.
    #[expect(
        clippy::too_many_arguments,
        reason = "the request's parts, shared by both group writes"
    )]
    fn group_start(
        &mut self,
        work: &mut BatchWork,
        conv: &str,
        sender: &str,
        push: &EncodedPush,
        client_msg_id: Option<String>,
        durability: Durability,
        now_ms: u64,
    ) -> Result<GroupStart, StoreError> {
        validate_group_request(conv, sender, push, client_msg_id.as_deref())?;
        let client_msg_id = client_msg_id.map(|id| im_dedup_id(sender, &id));
        // A retry's answer promises its original is as durable as asked.
        work.sync |= durability == Durability::Sync;
        let existing = self.stream_id(work, conv);
        let duplicate =
            self.group_duplicate(work, conv, existing, client_msg_id.as_deref(), push, now_ms)?;
        Ok(match duplicate {
            Some(duplicate) => GroupStart::Duplicate(duplicate),
            None => GroupStart::New(existing, client_msg_id),
        })
    }

    /// The group's id, record and meta; a group that does not exist is
    /// "not a member" to a user and an invalid request to the system.
    fn group_record(
        &self,
        work: &mut BatchWork,
        conv: &str,
        existing: Option<u64>,
        actor: &GroupActor,
    ) -> Result<(u64, ConvRecord, StreamMeta), StoreError> {
        let missing = || match actor {
            GroupActor::User(user) => StoreError::NotMember {
                conv: conv.to_owned(),
                user: user.clone(),
            },
            GroupActor::System => StoreError::InvalidRequest {
                reason: "no such group",
            },
        };
        let id = existing.ok_or_else(missing)?;
        let record = work
            .im
            .conv(&self.fjall, &self.im, id, conv)?
            .filter(|record| record.group.is_some())
            .ok_or_else(missing)?;
        let meta = self
            .stream_meta(work, id)
            .ok_or_else(|| crate::im::corrupt(conv, "stream has a name but no meta".to_owned()))?;
        Ok((id, record, meta))
    }

    /// The original of a retried group write, with the members now.
    fn group_duplicate(
        &mut self,
        work: &mut BatchWork,
        conv: &str,
        existing: Option<u64>,
        client_msg_id: Option<&str>,
        push: &EncodedPush,
        now_ms: u64,
    ) -> Result<Option<GroupAppended>, StoreError> {
        let (Some(id), Some(client_msg_id)) = (existing, client_msg_id) else {
            return Ok(None);
        };
        let Some(record) = work.im.conv(&self.fjall, &self.im, id, conv)? else {
            return Ok(None);
        };
        if record.group.is_none() {
            return Ok(None);
        }
        let Some(meta) = self.stream_meta(work, id) else {
            return Ok(None);
        };
        let found = self.find_duplicate(work, conv, id, &meta, client_msg_id, push, now_ms)?;
        let Some(appended) = found else {
            return Ok(None);
        };
        let count = work
            .im
            .count_at(&self.fjall, id, &record, appended.offset)?;
        let members = work.im.members(&self.fjall, &self.im, id, conv)?;
        Ok(Some(GroupAppended {
            appended,
            count,
            gseq: 0,
            members: Arc::clone(&members.ids),
            removed: Vec::new(),
        }))
    }

    /// Refuses a join of a user at its conversation cap (when the join
    /// starts a conversation) or at its group cap.
    fn check_join_caps(
        &self,
        work: &mut BatchWork,
        user: &str,
        starts: bool,
    ) -> Result<(), StoreError> {
        let cap = self.config.conversations_per_user_max;
        if starts && work.im.at_conv_cap(&self.fjall, user, cap)? {
            return Err(StoreError::ConversationLimit {
                user: user.to_owned(),
                limit: cap,
            });
        }
        // One point read (`im_ugroups`), kept in the batch's changes.
        let cap = self.config.groups_per_user_max;
        if work.im.group_count(&self.fjall, user)? as usize >= cap {
            return Err(StoreError::ConversationLimit {
                user: user.to_owned(),
                limit: cap,
            });
        }
        Ok(())
    }
}
