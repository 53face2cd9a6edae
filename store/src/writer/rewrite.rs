//! The writer's recalls and edits (`docs/im.md`, "Recall, edit, delete"):
//! the event appended, the original overwritten in place, in the batch
//! that also marks the recall, fixes the conversation's last message and
//! keeps unread exact. The rights are checked here, where the original's
//! sender and time and the member table are.

use std::sync::Arc;

use crate::api::{GroupActor, GroupRole, ImRewrite, ImRewritten, RewriteOp, STREAM_NAME_BYTES_MAX};
use crate::error::StoreError;
use crate::im::members::actor_record;
use crate::keys::ConvRecord;

use super::im::ConvEntry;
use super::{BatchWork, Writer};

/// What the original's sender and time allow the actor.
struct Rights<'a> {
    conv: &'a str,
    offset: u64,
    op: RewriteOp,
    /// The actor may do it at any time (the system; a group's owner, or
    /// an admin on a plain member's message, for a recall).
    any_time: bool,
    /// The actor is the original's sender.
    own: bool,
    sent_ms: u64,
    window_ms: u64,
}

impl Rights<'_> {
    fn check(&self, actor: &str, now_ms: u64) -> Result<(), StoreError> {
        if self.any_time {
            return Ok(());
        }
        let (action, what) = match self.op {
            RewriteOp::Recall => ("recall another's message", "the recall window"),
            RewriteOp::Edit => ("edit another's message", "the edit window"),
        };
        if !self.own {
            return Err(StoreError::NotAllowed {
                conv: self.conv.to_owned(),
                user: actor.to_owned(),
                action,
            });
        }
        if now_ms.saturating_sub(self.sent_ms) > self.window_ms {
            return Err(StoreError::WindowPassed {
                conv: self.conv.to_owned(),
                offset: self.offset,
                what,
            });
        }
        Ok(())
    }
}

impl Writer {
    pub(super) fn stage_im_rewrite(
        &mut self,
        work: &mut BatchWork,
        request: ImRewrite,
        now_ms: u64,
    ) -> Result<ImRewritten, StoreError> {
        let ImRewrite {
            conv,
            actor,
            op,
            ref_offset,
            ref_id,
            push,
            mut replacement,
            window_ms,
            edits_max,
            durability,
        } = request;
        if conv.is_empty() || conv.len() > STREAM_NAME_BYTES_MAX {
            return Err(StoreError::InvalidRequest {
                reason: "conversation name must be 1..=1024 bytes",
            });
        }
        let actor_name = match &actor {
            GroupActor::User(user) => user.as_str(),
            GroupActor::System => "",
        };
        if push.envelope().sender.as_str() != actor_name {
            return Err(StoreError::InvalidRequest {
                reason: "the event's sender must be the actor",
            });
        }
        let not_member = || match &actor {
            GroupActor::User(user) => StoreError::NotMember {
                conv: conv.clone(),
                user: user.clone(),
            },
            GroupActor::System => StoreError::InvalidRequest {
                reason: "no such conversation",
            },
        };
        let id = self.stream_id(work, &conv).ok_or_else(not_member)?;
        let mut record = work
            .im
            .conv(&self.fjall, &self.im, id, &conv)?
            .ok_or_else(not_member)?;
        let meta = self
            .stream_meta(work, id)
            .ok_or_else(|| crate::im::corrupt(&conv, "stream has a name but no meta".to_owned()))?;
        // Who may, before the original is read: a stranger learns nothing
        // about the conversation's entries.
        let (members, roles) = match &record.group {
            Some(group) => {
                let members = work.im.members(&self.fjall, &self.im, id, &conv)?;
                let actor = actor_record(&conv, group, &members, &actor)?;
                let role = actor.map(|member| member.role);
                // The roles table's muted column: a muted admin recalls
                // only its own messages.
                let muted_until_ms = actor
                    .filter(|member| member.role != GroupRole::Owner)
                    .map_or(0, |member| member.muted_until_ms);
                (
                    Arc::clone(&members.ids),
                    Some((role, muted_until_ms, members)),
                )
            }
            None => {
                let (a, b) = &record.pair;
                if let GroupActor::User(user) = &actor {
                    if user != a && user != b {
                        return Err(not_member());
                    }
                }
                let pair: Arc<[String]> = if a == b {
                    Arc::from(vec![a.clone()])
                } else {
                    Arc::from(vec![a.clone(), b.clone()])
                };
                (pair, None)
            }
        };
        let gone = StoreError::InvalidRequest {
            reason: "the entry at that offset is not the message named (trimmed or another)",
        };
        if ref_offset == 0 || ref_offset >= meta.next_offset || ref_offset < meta.first_offset {
            return Err(gone);
        }
        let original = work
            .im
            .entry(&self.fjall, id, ref_offset, &conv)?
            .ok_or_else(|| gone.clone())?;
        let header = original.envelope();
        if header.id.to_native() != ref_id {
            return Err(gone);
        }
        if work.im.is_recalled(&self.fjall, id, ref_offset)? {
            return Err(StoreError::InvalidRequest {
                reason: "the message is recalled",
            });
        }
        let sender = header.sender.as_str().to_owned();
        // Only id, offset, epoch and time are stamped in place; the rest
        // of the header must already be the original's.
        let new_header = replacement.envelope();
        if new_header.sender.as_str() != sender || new_header.channel != header.channel {
            return Err(StoreError::InvalidRequest {
                reason: "the replacement must keep the original's sender and channel",
            });
        }
        let sent = (
            header.id.to_native(),
            header.epoch.to_native(),
            header.time_ms.to_native(),
        );
        let any_time = match (&actor, op) {
            (GroupActor::System, _) => true,
            (GroupActor::User(_), RewriteOp::Edit) => false,
            (GroupActor::User(_), RewriteOp::Recall) => match &roles {
                Some((Some(GroupRole::Owner), _, _)) => true,
                // An admin recalls plain members' messages, and those of
                // users no longer in the group, not other admins' or the
                // owner's.
                Some((Some(GroupRole::Admin), _, members)) => members
                    .table
                    .get(&sender)
                    .is_none_or(|member| member.role == GroupRole::Member),
                _ => false,
            },
        };
        if let Some((_, muted_until_ms, _)) = &roles {
            if any_time && sender != actor_name && *muted_until_ms > now_ms {
                return Err(StoreError::Muted {
                    conv,
                    user: actor_name.to_owned(),
                    until_ms: *muted_until_ms,
                    all: false,
                });
            }
        }
        Rights {
            conv: &conv,
            offset: ref_offset,
            op,
            any_time,
            own: sender == actor_name,
            sent_ms: sent.2,
            window_ms,
        }
        .check(actor_name, now_ms)?;
        let edits = match op {
            RewriteOp::Recall => 0,
            RewriteOp::Edit => {
                let edits = work.im.edits_of(&self.fjall, id, ref_offset)?;
                if edits >= edits_max {
                    return Err(StoreError::WindowPassed {
                        conv,
                        offset: ref_offset,
                        what: "the edit count",
                    });
                }
                edits + 1
            }
        };
        let counted = !work.im.is_nocount(&self.fjall, id, ref_offset)?;
        // The new last message, read before anything is staged.
        let last_msg_offset = if op == RewriteOp::Recall && ref_offset == record.last_msg_offset {
            Some(
                work.im
                    .last_message_before(&self.fjall, id, ref_offset, meta.first_offset)?,
            )
        } else {
            None
        };
        let views = match &record.group {
            None => self.dm_views(work, &record, id)?,
            Some(_) => Vec::new(),
        };
        // A recalled message that counted leaves the DM unread total of
        // each user whose read position is before it, in this batch.
        let unread_drops: Vec<String> = match op {
            RewriteOp::Recall if counted => views
                .iter()
                .filter(|(_, view)| view.read_offset < ref_offset)
                .map(|(user, _)| user.clone())
                .collect(),
            _ => Vec::new(),
        };
        for user in &unread_drops {
            work.im.load_dm_unread(&self.fjall, user)?;
        }
        work.sync |= durability == crate::api::Durability::Sync;
        let stored_time_ms = record.last_time_ms;
        let (appended, gseq, count, _) = self.stage_conv_entry(
            work,
            &mut record,
            ConvEntry {
                id,
                meta,
                push,
                client_msg_id: None,
                counts: false,
            },
            now_ms,
        );
        replacement.stamp(sent.0, ref_offset, sent.1, sent.2);
        let replacement = Arc::new(replacement);
        work.im
            .put_rewritten(id, ref_offset, Arc::clone(&replacement));
        match op {
            RewriteOp::Recall => work.im.put_recalled(id, ref_offset, counted),
            RewriteOp::Edit => work.im.put_edits(id, ref_offset, edits),
        }
        if let Some(offset) = last_msg_offset {
            record.last_msg_offset = offset;
        }
        for user in &unread_drops {
            work.im.add_dm_unread(user, -1);
        }
        // A DM's views change with it (unread, the last message); a
        // group's members see its `last_gseq`.
        for (user, mut view) in views {
            view.changed_gseq = gseq;
            work.im.put_uconv(&user, id, view);
        }
        let group = record.group.is_some();
        work.im.put_conv(id, Some(stored_time_ms), record);
        Ok(ImRewritten {
            appended,
            replacement,
            gseq,
            edits,
            members,
            count,
            group,
        })
    }

    /// Both users' views of a DM, as stored.
    fn dm_views(
        &self,
        work: &mut BatchWork,
        record: &ConvRecord,
        id: u64,
    ) -> Result<Vec<(String, crate::keys::UConvRecord)>, StoreError> {
        let (a, b) = &record.pair;
        let users: &[&String] = if a == b { &[a] } else { &[a, b] };
        let mut views = Vec::with_capacity(users.len());
        for user in users {
            let peer = record.peer_of(user).unwrap_or(user.as_str()).to_owned();
            let view = work
                .im
                .uconv(&self.fjall, user, id)?
                .unwrap_or_else(|| crate::keys::UConvRecord::unread(peer));
            views.push(((*user).clone(), view));
        }
        Ok(views)
    }
}
