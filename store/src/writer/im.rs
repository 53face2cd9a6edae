//! The writer's IM requests (`docs/im.md`): direct messages with their
//! block and DM policy checks, read positions, and the per-user sets
//! (blocks, contacts, DM policy). Groups are in `writer/group.rs`. Each
//! stages its keys in the batch's [`crate::im::ImBatch`], so they are
//! written in the same fjall batch as the entry.

use crate::api::{
    DmPolicy, Durability, ImAppend, ImAppended, ImDelivery, ImReadState, CLIENT_MSG_ID_BYTES_MAX,
    CURSOR_ID_BYTES_MAX, STREAM_NAME_BYTES_MAX,
};
use ringcast_protocol::envelope::EncodedPush;

use crate::api::Appended;
use crate::error::StoreError;
use crate::im::ImKeyspace;
use crate::keys::{
    dm_policy_byte, dm_policy_decode, im_pair_key, ConvRecord, StreamMeta, UConvRecord,
    CONV_KIND_DM,
};

use super::{BatchWork, Writer};

/// The prefix of a group's name (`docs/im.md`, "Entities and names").
pub(crate) const GROUP_NAME_PREFIX: &str = "grp:";

/// The parts of a conversation's entry being staged.
pub(super) struct ConvEntry {
    pub(super) id: u64,
    pub(super) meta: StreamMeta,
    pub(super) push: EncodedPush,
    pub(super) client_msg_id: Option<String>,
    /// Counts as unread (a message); `false`: a `member` entry or a
    /// silent message, whose offset goes to `im_nocount`.
    pub(super) counts: bool,
}

/// A change to a user's blocks, contacts or DM policy.
pub(crate) enum ImUserChange {
    Block {
        owner: String,
        other: String,
        on: bool,
    },
    Contact {
        owner: String,
        other: String,
        on: bool,
    },
    Policy {
        user: String,
        policy: DmPolicy,
    },
}

/// A count as a delta (counts never come near `i64::MAX`).
fn signed(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// The dedup id of an IM append: the sender's length and id, then the
/// client's id, so `(sender, client_msg_id)` pairs never collide.
pub(super) fn im_dedup_id(sender: &str, client_msg_id: &str) -> String {
    format!("{}:{sender}{client_msg_id}", sender.len())
}

/// Checks an IM append's names; returns the pair sorted (`a <= b`).
fn validate_im_append(
    conv: &str,
    pair: (String, String),
    sender: &str,
    client_msg_id: Option<&str>,
) -> Result<(String, String), StoreError> {
    if conv.is_empty() || conv.len() > STREAM_NAME_BYTES_MAX {
        return Err(StoreError::InvalidRequest {
            reason: "conversation name must be 1..=1024 bytes",
        });
    }
    if conv.starts_with(GROUP_NAME_PREFIX) {
        return Err(StoreError::InvalidRequest {
            reason: "grp: names are groups: only group_append and group_op write them",
        });
    }
    let (a, b) = pair;
    for user in [&a, &b] {
        if user.is_empty() || user.len() > CURSOR_ID_BYTES_MAX {
            return Err(StoreError::InvalidRequest {
                reason: "user ids must be 1..=1024 bytes",
            });
        }
    }
    if sender != a && sender != b {
        return Err(StoreError::InvalidRequest {
            reason: "the sender must be one of the pair",
        });
    }
    if client_msg_id.is_some_and(|id| id.is_empty() || id.len() > CLIENT_MSG_ID_BYTES_MAX) {
        return Err(StoreError::InvalidRequest {
            reason: "client_msg_id must be 1..=256 bytes",
        });
    }
    Ok(if a <= b { (a, b) } else { (b, a) })
}

impl Writer {
    /// Stages an IM message to a direct conversation: creates the
    /// conversation if new, appends the entry like [`Writer::stage_append`]
    /// (offset, epoch, dedup), and updates the conversation's record, the
    /// sender's read position (its own message is read), the peer's view
    /// and the list order of both, with the next gseq: all in this batch.
    pub(super) fn stage_im_append(
        &mut self,
        work: &mut BatchWork,
        request: ImAppend,
        now_ms: u64,
    ) -> Result<ImAppended, StoreError> {
        let ImAppend {
            conv,
            pair,
            sender,
            push,
            client_msg_id,
            durability,
            backend_allowed,
        } = request;
        let pair = validate_im_append(&conv, pair, &sender, client_msg_id.as_deref())?;
        // Read positions follow `sender`; an entry claiming someone else
        // would be unread for its own author.
        if push.envelope().sender.as_str() != sender {
            return Err(StoreError::InvalidRequest {
                reason: "the push's sender must be the request's sender",
            });
        }
        if pair.0 != pair.1 {
            let peer = if pair.0 == sender { &pair.1 } else { &pair.0 };
            let new = self.stream_id(work, &conv).is_none();
            self.check_dm_allowed(work, &sender, peer, new && !backend_allowed)?;
        }
        let (id, stored) = match self.stream_id(work, &conv) {
            Some(id) => match work.im.conv(&self.fjall, &self.im, id, &conv)? {
                Some(record) if record.pair == pair => (id, Some(record)),
                Some(_) => {
                    return Err(StoreError::InvalidRequest {
                        reason: "the conversation belongs to another pair",
                    })
                }
                None => {
                    return Err(StoreError::InvalidRequest {
                        reason: "a stream of that name exists and is not a conversation",
                    })
                }
            },
            None => {
                let cap = self.config.conversations_per_user_max;
                for user in [&pair.0, &pair.1] {
                    if work.im.at_conv_cap(&self.fjall, user, cap)? {
                        return Err(StoreError::ConversationLimit {
                            user: user.clone(),
                            limit: cap,
                        });
                    }
                    // Read before the name is created: a refusal after it
                    // would leave a name without its conversation, and the
                    // pair could never write to it again.
                    work.im.load_dm_unread(&self.fjall, user)?;
                }
                (self.create_stream(work, &conv, 0), None)
            }
        };
        let meta = self
            .stream_meta(work, id)
            .ok_or_else(|| StoreError::Corrupt {
                stream: conv.clone(),
                offset: 0,
                reason: "stream has a name but no meta".to_owned(),
            })?;
        work.sync |= durability == Durability::Sync;
        // Both users write to a DM, each with their own client ids: the
        // sender is part of the dedup id, or the same id from the peer
        // would be answered with the other user's message and lost.
        let client_msg_id = client_msg_id.map(|id| im_dedup_id(&sender, &id));
        if let (Some(record), Some(client_msg_id)) = (&stored, &client_msg_id) {
            let duplicate =
                self.find_duplicate(work, &conv, id, &meta, client_msg_id, &push, now_ms)?;
            if let Some(appended) = duplicate {
                return Ok(ImAppended {
                    count: work.im.count_at(&self.fjall, id, record, appended.offset)?,
                    appended,
                    gseq: 0,
                    pair,
                });
            }
        }
        // Everything fallible is read before the entry is staged: a
        // refusal after it would leave the entry without its keys.
        let peer = if pair.0 == sender {
            pair.1.clone()
        } else {
            pair.0.clone()
        };
        let peer_view = match (&stored, peer != sender) {
            (Some(_), true) => work.im.uconv(&self.fjall, &peer, id)?,
            _ => None,
        };
        // The sender's `clear` and delivery position stay: one point read
        // of its view.
        let sender_view = match &stored {
            Some(_) => work.im.uconv(&self.fjall, &sender, id)?,
            None => None,
        };
        let sender_recv_offset = sender_view.as_ref().map_or(0, |view| view.recv_offset);
        let sender_visible_from = sender_view.as_ref().map_or(0, |view| view.visible_from);
        // The DM unread totals move in this batch: the peer's by this
        // message, the sender's by what it had unread here (its own
        // message reads the conversation).
        let sender_unread = match (&stored, &sender_view) {
            (Some(record), Some(view)) => {
                self.dm_unread_read(work, id, record, view, record.last_offset)?
            }
            _ => 0,
        };
        work.im.load_dm_unread(&self.fjall, &sender)?;
        work.im.load_dm_unread(&self.fjall, &peer)?;
        let stored_time_ms = stored.as_ref().map(|record| record.last_time_ms);
        let mut record = stored.unwrap_or_else(|| ConvRecord {
            kind: CONV_KIND_DM,
            created_ms: now_ms,
            last_offset: 0,
            last_time_ms: 0,
            last_gseq: 0,
            count_total: 0,
            last_msg_offset: 0,
            name: conv.clone(),
            // A new conversation's record holds the pair, the answer a
            // copy (once per conversation).
            pair: pair.clone(),
            group: None,
            trimmed_count: 0,
        });
        let (appended, gseq, count, _) = self.stage_conv_entry(
            work,
            &mut record,
            ConvEntry {
                id,
                meta,
                push,
                client_msg_id,
                counts: true,
            },
            now_ms,
        );
        work.im.put_uconv(
            &sender,
            id,
            UConvRecord {
                kind: CONV_KIND_DM,
                read_offset: appended.offset,
                read_count: count,
                changed_gseq: gseq,
                peer: peer.clone(),
                group: None,
                recv_offset: sender_recv_offset,
                visible_from: sender_visible_from,
            },
        );
        work.im.add_dm_unread(&sender, -signed(sender_unread));
        if peer != sender {
            work.im.add_dm_unread(&peer, 1);
            // An existing view is left as it is: its unread is the
            // record's count past its read count, and what it changed
            // last is the record's gseq (`changed_gseq` in `im/view.rs`).
            // One write fewer per message.
            if peer_view.is_none() {
                let mut view = UConvRecord::unread(sender.clone());
                view.changed_gseq = gseq;
                work.im.put_uconv(&peer, id, view);
            }
        }
        work.im.put_conv(id, stored_time_ms, record);
        Ok(ImAppended {
            appended,
            count,
            gseq,
            pair,
        })
    }

    /// Stages `user`'s read position in `conv` at `offset` (clamped to the
    /// last offset; a position at or below the stored one changes nothing).
    pub(super) fn stage_im_read(
        &mut self,
        work: &mut BatchWork,
        user: &str,
        conv: &str,
        offset: u64,
        clear: bool,
    ) -> Result<ImReadState, StoreError> {
        let (id, record, mut view, end) = self.user_view(work, user, conv)?;
        let offset = offset.min(end);
        // `clear`: nothing at or before `offset` is shown to this user
        // again, nor counted as unread.
        let mut changed = false;
        if clear {
            let from = offset.saturating_add(1);
            let visible_from = match &mut view.group {
                Some(window) => &mut window.visible_from,
                None => &mut view.visible_from,
            };
            if from > *visible_from {
                *visible_from = from;
                changed = true;
            }
        }
        // Everything fallible is read before anything is staged: a read
        // refused half way must leave the batch as it found it.
        let mut dm_read = None;
        if offset > view.read_offset {
            changed = true;
            if record.group.is_none() {
                // The DM unread total loses what this read covers, in
                // this batch.
                dm_read = Some(self.dm_unread_read(work, id, &record, &view, offset)?);
                work.im.load_dm_unread(&self.fjall, user)?;
            }
            // Recall and edit events do not count in a DM either: one
            // seek of `im_nocount`, as in a group.
            view.read_count = work.im.count_at(&self.fjall, id, &record, offset)?;
            view.read_offset = offset;
        }
        let (end, count) = match view.group {
            Some(window) if window.left => (window.visible_to, window.visible_count),
            _ => (record.last_offset, record.count_total),
        };
        let recalled = work
            .im
            .recalled_between(&self.fjall, id, view.read_offset, end)?;
        if let Some(read) = dm_read {
            work.im.add_dm_unread(user, -signed(read));
        }
        if changed {
            view.changed_gseq = work.im.next_gseq();
            work.im.put_uconv(user, id, view.clone());
        }
        Ok(ImReadState {
            read_offset: view.read_offset,
            visible_from: view
                .group
                .map_or(view.visible_from, |window| window.visible_from),
            unread: count
                .saturating_sub(record.counted_read(view.read_count))
                .saturating_sub(recalled),
        })
    }

    /// What `view` has unread in DM `id` up to `offset`: the counted
    /// messages after its read position, less those recalled there (a
    /// recall took them off the user's `im_unread` already).
    pub(super) fn dm_unread_read(
        &self,
        work: &BatchWork,
        id: u64,
        record: &ConvRecord,
        view: &UConvRecord,
        offset: u64,
    ) -> Result<u64, StoreError> {
        if offset <= view.read_offset {
            return Ok(0);
        }
        let count = work.im.count_at(&self.fjall, id, record, offset)?;
        let recalled = work
            .im
            .recalled_between(&self.fjall, id, view.read_offset, offset)?;
        Ok(count
            .saturating_sub(record.counted_read(view.read_count))
            .saturating_sub(recalled))
    }

    /// Stages a device's acknowledgement of conversation `conv` up to
    /// `offset`: the device's cursor (as a plain `ack`) and the user's
    /// delivery position `recv_offset`, raised to the cursor (monotonic,
    /// clamped to what the user may see). The delivery position changes no
    /// gseq: it is the senders' information, not the user's view.
    pub(super) fn stage_im_ack(
        &mut self,
        work: &mut BatchWork,
        user: &str,
        device: &str,
        conv: &str,
        offset: u64,
    ) -> Result<ImDelivery, StoreError> {
        let (id, record, mut view, end) = self.user_view(work, user, conv)?;
        // Nothing before the user's window (a group's join, a DM's clear)
        // is its to replay: a device's cursor never points there, so a
        // catchup from it starts inside the window.
        let floor = view.visible_from.saturating_sub(1);
        let cursor = self.stage_cursor(work, user, device, conv, offset.max(floor).min(end))?;
        // A user who left a group keeps acking its window (its devices
        // replay it), but its delivery is no one's news any more: its
        // position stays and no receipt goes out (review finding 13).
        let left = view.group.is_some_and(|window| window.left);
        let advanced = !left && cursor > view.recv_offset.max(floor);
        if advanced {
            view.recv_offset = cursor;
            work.im.put_uconv(user, id, view.clone());
        }
        Ok(ImDelivery {
            cursor,
            recv_offset: view.recv_offset,
            advanced,
            peer: record.peer_of(user).map(str::to_owned),
            member_count: record.group.as_ref().map_or(0, |group| group.member_count),
        })
    }

    /// `user`'s view of `conv` (a fresh one for a DM's user who has none
    /// yet), with the conversation's id and record and the last offset the
    /// user may see (a left group's window end).
    fn user_view(
        &mut self,
        work: &mut BatchWork,
        user: &str,
        conv: &str,
    ) -> Result<(u64, ConvRecord, UConvRecord, u64), StoreError> {
        let not_found = StoreError::InvalidRequest {
            reason: "no such conversation for this user",
        };
        let id = self
            .stream_id(work, conv)
            .ok_or_else(|| not_found.clone())?;
        let record = work
            .im
            .conv(&self.fjall, &self.im, id, conv)?
            .ok_or_else(|| not_found.clone())?;
        let stored = work.im.uconv(&self.fjall, user, id)?;
        let (view, end) = match (&record.group, stored) {
            // A group's members have a view from their join on; what a
            // user left ends at its window.
            (Some(_), Some(view)) => {
                let end = match view.group {
                    Some(window) if window.left => window.visible_to,
                    _ => record.last_offset,
                };
                (view, end)
            }
            (Some(_), None) => return Err(not_found),
            (None, stored) => {
                let peer = record.peer_of(user).ok_or(not_found)?.to_owned();
                let view = stored.unwrap_or_else(|| UConvRecord::unread(peer));
                (view, record.last_offset)
            }
        };
        Ok((id, record, view, end))
    }

    /// Refuses a DM from `sender` to `peer` when either blocked the other,
    /// when `peer` takes DMs from contacts only and `sender` is not one, or
    /// when `peer`'s backend decides and the message would start a
    /// conversation it did not allow (`unallowed_start`): up to four point
    /// reads, before anything is staged.
    fn check_dm_allowed(
        &self,
        work: &mut BatchWork,
        sender: &str,
        peer: &str,
        unallowed_start: bool,
    ) -> Result<(), StoreError> {
        for (blocker, blocked) in [(peer, sender), (sender, peer)] {
            let key = im_pair_key(blocker, blocked);
            if work
                .im
                .get_key(&self.fjall, ImKeyspace::Block, &key)?
                .is_some()
            {
                return Err(StoreError::Blocked {
                    blocker: blocker.to_owned(),
                    blocked: blocked.to_owned(),
                });
            }
        }
        let policy = work
            .im
            .get_key(&self.fjall, ImKeyspace::Policy, peer.as_bytes())?
            .map_or(Ok(DmPolicy::Anyone), |bytes| dm_policy_decode(&bytes))
            .map_err(|reason| crate::im::corrupt("", reason))?;
        if policy == DmPolicy::Backend && unallowed_start {
            return Err(StoreError::BackendDecides {
                user: peer.to_owned(),
                sender: sender.to_owned(),
            });
        }
        if policy == DmPolicy::Contacts {
            let key = im_pair_key(peer, sender);
            if work
                .im
                .get_key(&self.fjall, ImKeyspace::Contact, &key)?
                .is_none()
            {
                return Err(StoreError::NotContact {
                    user: peer.to_owned(),
                    sender: sender.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Stages a change to a user's blocks, contacts or DM policy; answers
    /// 1 if it changed something, 0 if it was so already.
    pub(super) fn stage_user_change(
        &mut self,
        work: &mut BatchWork,
        change: ImUserChange,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let (keyspace, key, value) = match change {
            ImUserChange::Block { owner, other, on } => {
                validate_user_pair(&owner, &other)?;
                let time = on.then(|| now_ms.to_be_bytes().to_vec());
                (ImKeyspace::Block, im_pair_key(&owner, &other), time)
            }
            ImUserChange::Contact { owner, other, on } => {
                validate_user_pair(&owner, &other)?;
                let time = on.then(|| now_ms.to_be_bytes().to_vec());
                (ImKeyspace::Contact, im_pair_key(&owner, &other), time)
            }
            ImUserChange::Policy { user, policy } => {
                validate_user_pair(&user, "-")?;
                let byte = (policy != DmPolicy::Anyone).then(|| vec![dm_policy_byte(policy)]);
                (ImKeyspace::Policy, user.into_bytes(), byte)
            }
        };
        // A block or contact keeps the time it was first made.
        let stored = work.im.get_key(&self.fjall, keyspace, &key)?;
        let unchanged = match keyspace {
            ImKeyspace::Policy => stored == value,
            _ => stored.is_some() == value.is_some(),
        };
        if unchanged {
            return Ok(0);
        }
        work.im.put_key(keyspace, key, value);
        Ok(1)
    }
}

/// Checks the two users of a block or contact.
fn validate_user_pair(owner: &str, other: &str) -> Result<(), StoreError> {
    for user in [owner, other] {
        if user.is_empty() || user.len() > CURSOR_ID_BYTES_MAX {
            return Err(StoreError::InvalidRequest {
                reason: "user ids must be 1..=1024 bytes",
            });
        }
    }
    if owner == other {
        return Err(StoreError::InvalidRequest {
            reason: "a user cannot block itself or be its own contact",
        });
    }
    Ok(())
}

impl Writer {
    /// Stamps and stages a conversation's entry and updates its record:
    /// last offset and time (never decreasing along the stream, so paging
    /// by time is a binary search and the list order is the stream's; the
    /// push's own time is not trusted, a skewed clock would pin the
    /// conversation at the top), gseq and counts. Returns the entry, its
    /// gseq, its count and its time.
    pub(super) fn stage_conv_entry(
        &mut self,
        work: &mut BatchWork,
        record: &mut ConvRecord,
        entry: ConvEntry,
        now_ms: u64,
    ) -> (Appended, u64, u64, u64) {
        let ConvEntry {
            id,
            meta,
            mut push,
            client_msg_id,
            counts,
        } = entry;
        let time_ms = now_ms.max(record.last_time_ms);
        push.stamp_time(time_ms);
        // Retention per kind: the trim keeps unread within what it kept
        // (`trim_stream`, `ConvRecord::trimmed_count`).
        let retention = match record.group {
            Some(_) => self.config.group_retention,
            None => self.config.dm_retention,
        };
        let appended = self.stage_entry(
            work,
            id,
            meta,
            push,
            client_msg_id,
            retention,
            &[],
            now_ms,
            true,
        );
        // `stage_entry` keeps the stream's time non-decreasing too; the
        // record takes the time the entry was stored with.
        let time_ms = appended.push.envelope().time_ms.to_native();
        let gseq = work.im.next_gseq();
        record.last_offset = appended.offset;
        record.last_time_ms = time_ms;
        record.last_gseq = gseq;
        if counts {
            record.count_total += 1;
            record.last_msg_offset = appended.offset;
        } else {
            work.im.put_nocount(id, appended.offset, record.count_total);
        }
        (appended, gseq, record.count_total, time_ms)
    }
}
