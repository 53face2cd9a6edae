//! The on-disk format of groups, blocks and DM policy (`docs/im.md`,
//! "Keys in the store"): member records, the group part of a
//! conversation's record and of a user's view, the offsets of entries that
//! do not count, and the per-user pair keys of blocks and contacts.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `im_member` | stream id (BE) + u16 BE len + user | [`MemberRecord`] |
//! | `im_nocount` | stream id (BE) + offset (BE) | the `count` at that offset (u64 BE): an entry that does not count |
//! | `im_recalled` | stream id (BE) + offset (BE) | 1 if the recalled message counted as unread, else 0 |
//! | `im_edits` | stream id (BE) + offset (BE) | how many times the message was edited (u32 BE) |
//! | `im_block` | u16 BE len + owner + blocked | time ms (u64 BE) |
//! | `im_contact` | u16 BE len + owner + contact | time ms (u64 BE) |
//! | `im_policy` | user | [`DmPolicy`] byte |
//! | `im_ugroups` | user | groups the user is a member of (u32 BE) |

use super::{push_len16, read_u64, Cursor};
use crate::api::{DmPolicy, GroupRole};

pub(crate) const KEYSPACE_IM_MEMBER: &str = "im_member";
pub(crate) const KEYSPACE_IM_NOCOUNT: &str = "im_nocount";
pub(crate) const KEYSPACE_IM_RECALLED: &str = "im_recalled";
pub(crate) const KEYSPACE_IM_EDITS: &str = "im_edits";
pub(crate) const KEYSPACE_IM_BLOCK: &str = "im_block";
pub(crate) const KEYSPACE_IM_CONTACT: &str = "im_contact";
pub(crate) const KEYSPACE_IM_POLICY: &str = "im_policy";
/// Each user's count of groups it is a member of, written in the batch of
/// every change of it, so the group cap is one point read per user.
pub(crate) const KEYSPACE_IM_UGROUPS: &str = "im_ugroups";

/// The kind byte of a group in [`super::ConvRecord`] and [`super::UConvRecord`].
pub(crate) const CONV_KIND_GROUP: u8 = 2;

const MEMBER_RECORD_VERSION: u8 = 1;

/// Group flags in [`GroupRecord::flags`].
pub(crate) const GROUP_FLAG_MUTED_ALL: u8 = 1;
pub(crate) const GROUP_FLAG_DISSOLVED: u8 = 2;
pub(crate) const GROUP_FLAG_HISTORY_FROM_JOIN: u8 = 4;
pub(crate) const GROUP_FLAG_MEMBERS_CAN_INVITE: u8 = 8;
const GROUP_FLAGS_KNOWN: u8 = 15;

fn role_byte(role: GroupRole) -> u8 {
    match role {
        GroupRole::Member => 1,
        GroupRole::Admin => 2,
        GroupRole::Owner => 3,
    }
}

fn role_decode(byte: u8) -> Result<GroupRole, String> {
    match byte {
        1 => Ok(GroupRole::Member),
        2 => Ok(GroupRole::Admin),
        3 => Ok(GroupRole::Owner),
        other => Err(format!("unknown group role {other}")),
    }
}

/// `sid ‖ len16(user)`.
pub(crate) fn im_member_key(stream_id: u64, user: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + 2 + user.len());
    key.extend_from_slice(&stream_id.to_be_bytes());
    push_len16(&mut key, user);
    key
}

/// The user of an `im_member` key of stream `stream_id`.
pub(crate) fn im_member_key_decode(key: &[u8], stream_id: u64) -> Option<&str> {
    if read_u64(key, 0)? != stream_id {
        return None;
    }
    let mut cursor = Cursor { bytes: key, at: 8 };
    let len = usize::from(cursor.u16().ok()?);
    let user = cursor.text(len).ok()?;
    cursor.finish().ok()?;
    Some(user)
}

/// `len16(owner) ‖ other`: a block or a contact of `owner`.
pub(crate) fn im_pair_key(owner: &str, other: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + owner.len() + other.len());
    push_len16(&mut key, owner);
    key.extend_from_slice(other.as_bytes());
    key
}

/// The other user of an `im_pair_key` of `owner`.
pub(crate) fn im_pair_key_decode<'a>(key: &'a [u8], owner: &str) -> Option<&'a str> {
    let mut cursor = Cursor { bytes: key, at: 0 };
    let len = usize::from(cursor.u16().ok()?);
    if cursor.text(len).ok()? != owner {
        return None;
    }
    std::str::from_utf8(cursor.rest()).ok()
}

pub(crate) fn dm_policy_byte(policy: DmPolicy) -> u8 {
    match policy {
        DmPolicy::Anyone => 0,
        DmPolicy::Contacts => 1,
        DmPolicy::Backend => 2,
    }
}

pub(crate) fn dm_policy_decode(bytes: &[u8]) -> Result<DmPolicy, String> {
    match bytes {
        [0] => Ok(DmPolicy::Anyone),
        [1] => Ok(DmPolicy::Contacts),
        [2] => Ok(DmPolicy::Backend),
        _ => Err(format!("DM policy of {} bytes or unknown", bytes.len())),
    }
}

/// A member of a group, under `im_member`: version (1), role (1), joined
/// offset, muted until ms, joined ms (u64 BE each), added by (`len16`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberRecord {
    pub(crate) role: GroupRole,
    pub(crate) joined_offset: u64,
    pub(crate) muted_until_ms: u64,
    pub(crate) joined_ms: u64,
    /// The empty string: the system.
    pub(crate) added_by: String,
}

impl MemberRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + 3 * 8 + 2 + self.added_by.len());
        out.push(MEMBER_RECORD_VERSION);
        out.push(role_byte(self.role));
        for field in [self.joined_offset, self.muted_until_ms, self.joined_ms] {
            out.extend_from_slice(&field.to_be_bytes());
        }
        push_len16(&mut out, &self.added_by);
        out
    }

    /// Decodes a stored record; never panics on garbage.
    pub(crate) fn decode(bytes: &[u8]) -> Result<MemberRecord, String> {
        let mut cursor = Cursor { bytes, at: 0 };
        let version = cursor.u8()?;
        if version != MEMBER_RECORD_VERSION {
            return Err(format!("unknown member record version {version}"));
        }
        let role = role_decode(cursor.u8()?)?;
        let joined_offset = cursor.u64()?;
        let muted_until_ms = cursor.u64()?;
        let joined_ms = cursor.u64()?;
        let len = usize::from(cursor.u16()?);
        let added_by = cursor.text(len)?.to_owned();
        cursor.finish()?;
        Ok(MemberRecord {
            role,
            joined_offset,
            muted_until_ms,
            joined_ms,
            added_by,
        })
    }
}

/// The group part of a conversation's record, after its name: group name,
/// info, owner (`len16` each), member count, members max (u32 BE each),
/// flags (1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupRecord {
    pub(crate) title: String,
    pub(crate) info: String,
    pub(crate) owner: String,
    pub(crate) member_count: u32,
    pub(crate) members_max: u32,
    pub(crate) flags: u8,
}

impl GroupRecord {
    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    pub(crate) fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        for text in [&self.title, &self.info, &self.owner] {
            push_len16(out, text);
        }
        out.extend_from_slice(&self.member_count.to_be_bytes());
        out.extend_from_slice(&self.members_max.to_be_bytes());
        out.push(self.flags);
    }

    pub(super) fn decode_from(cursor: &mut Cursor<'_>) -> Result<GroupRecord, String> {
        let mut text = || -> Result<String, String> {
            let len = usize::from(cursor.u16()?);
            Ok(cursor.text(len)?.to_owned())
        };
        let title = text()?;
        let info = text()?;
        let owner = text()?;
        let member_count = cursor.u32()?;
        let members_max = cursor.u32()?;
        let flags = cursor.u8()?;
        if flags & !GROUP_FLAGS_KNOWN != 0 {
            return Err(format!("unknown group flags {flags:#x}"));
        }
        Ok(GroupRecord {
            title,
            info,
            owner,
            member_count,
            members_max,
            flags,
        })
    }
}

/// The group part of a user's view, after the peer: visible from, visible
/// to, the count at visible to, the last message offset at visible to, the
/// list time of a left group (u64 BE each), left (1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct GroupView {
    /// History starts at this offset (0: from the start).
    pub(crate) visible_from: u64,
    /// History ends at this offset (0 while a member).
    pub(crate) visible_to: u64,
    /// The `count` at `visible_to`.
    pub(crate) visible_count: u64,
    /// The newest message at or before `visible_to`.
    pub(crate) visible_msg_offset: u64,
    /// The time of the entry at `visible_to`: the left group's place in
    /// the list (its `im_uact` key).
    pub(crate) list_time_ms: u64,
    pub(crate) left: bool,
}

impl GroupView {
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        for field in [
            self.visible_from,
            self.visible_to,
            self.visible_count,
            self.visible_msg_offset,
            self.list_time_ms,
        ] {
            out.extend_from_slice(&field.to_be_bytes());
        }
        out.push(u8::from(self.left));
    }

    pub(super) fn decode_from(cursor: &mut Cursor<'_>) -> Result<GroupView, String> {
        let mut fields = [0u64; 5];
        for field in &mut fields {
            *field = cursor.u64()?;
        }
        let [visible_from, visible_to, visible_count, visible_msg_offset, list_time_ms] = fields;
        let left = match cursor.u8()? {
            0 => false,
            1 => true,
            other => return Err(format!("left flag {other}")),
        };
        Ok(GroupView {
            visible_from,
            visible_to,
            visible_count,
            visible_msg_offset,
            list_time_ms,
            left,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_records_and_keys_round_trip() {
        let record = MemberRecord {
            role: GroupRole::Admin,
            joined_offset: 7,
            muted_until_ms: 9,
            joined_ms: 11,
            added_by: "alice".to_owned(),
        };
        assert_eq!(MemberRecord::decode(&record.encode()), Ok(record));
        assert!(MemberRecord::decode(b"\x01\x09").is_err());
        let key = im_member_key(5, "bob");
        assert_eq!(im_member_key_decode(&key, 5), Some("bob"));
        assert_eq!(im_member_key_decode(&key, 6), None);
        let pair = im_pair_key("ann", "bo:b");
        assert_eq!(im_pair_key_decode(&pair, "ann"), Some("bo:b"));
        assert_eq!(im_pair_key_decode(&pair, "an"), None);
        assert_eq!(
            dm_policy_decode(&[dm_policy_byte(DmPolicy::Contacts)]),
            Ok(DmPolicy::Contacts)
        );
    }
}
