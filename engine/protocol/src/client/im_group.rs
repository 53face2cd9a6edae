//! The group commands and replies (`docs/im.md`, step 2), in both wire
//! forms. They ride in the IM enums of `im.rs` (appended variants); the
//! types and their JSON live here so that the DM part stays as it is.
//!
//! The decoders check what the wire can check (107): a `grp:` conversation,
//! 1..=[`GROUP_USERS_MAX`] users per change, the name and info lengths, the
//! page limit. The roles and the member limits are the store's to check, in
//! offset order.

use serde::Deserialize;

use super::im::ImCommand;
use super::json::{push_json_str, push_page_tail, push_u64};
use super::model::{CommandError, ErrorCode};

/// Most users one `group_create`, `group_add` or `group_remove` names: one
/// `member` entry's targets (the store's `GROUP_TARGETS_MAX`; the engine
/// asserts the two agree).
pub const GROUP_USERS_MAX: usize = 100;
/// Longest group name and info, in bytes (the store's
/// `GROUP_TEXT_BYTES_MAX`; asserted equal by the engine).
pub const GROUP_TEXT_BYTES_MAX: usize = 1024;
/// Most members one `group_members` page returns.
pub const GROUP_MEMBERS_LIMIT_MAX: u32 = 1000;
/// `limit` of a `group_members` when the JSON form leaves it out.
pub const GROUP_MEMBERS_LIMIT_DEFAULT: u32 = 100;
/// The namespace of group conversations.
const GROUP_PREFIX: &str = "grp:";

/// A member's role in a group.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash,
)]
#[rkyv(derive(Debug))]
pub enum GroupRole {
    Member,
    Admin,
    Owner,
}

impl GroupRole {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupRole::Member => "member",
            GroupRole::Admin => "admin",
            GroupRole::Owner => "owner",
        }
    }
}

/// A change to a group by one of its members (the store checks the roles).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[non_exhaustive]
pub enum GroupChange {
    Add {
        users: Vec<String>,
    },
    Remove {
        users: Vec<String>,
    },
    Leave,
    /// Makes `user` an admin (`admin: true`) or a plain member again.
    Role {
        user: String,
        admin: bool,
    },
    Transfer {
        to: String,
    },
    /// New name and/or info; at least one.
    Update {
        name: Option<String>,
        info: Option<String>,
    },
    /// `user` may not send until `until_ms` (Unix ms).
    Mute {
        user: String,
        until_ms: u64,
    },
    Unmute {
        user: String,
    },
    /// Mute-all on (`true`) or off.
    MuteAll {
        on: bool,
    },
    Dissolve,
}

impl GroupChange {
    /// The op's name in a `member` entry and on the wire (`group_<op>`).
    pub fn op_name(&self) -> &'static str {
        match self {
            GroupChange::Add { .. } => "add",
            GroupChange::Remove { .. } => "remove",
            GroupChange::Leave => "leave",
            GroupChange::Role { .. } => "role",
            GroupChange::Transfer { .. } => "transfer",
            GroupChange::Update { .. } => "update",
            GroupChange::Mute { .. } => "mute",
            GroupChange::Unmute { .. } => "unmute",
            GroupChange::MuteAll { .. } => "mute_all",
            GroupChange::Dissolve => "dissolve",
        }
    }
}

/// A member as `group_members` lists it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GroupMemberInfo {
    pub user: String,
    pub role: GroupRole,
    /// The offset of the `member` entry that added it.
    pub joined_offset: u64,
    pub joined_ms: u64,
    /// Muted until then (Unix ms); 0: not muted.
    pub muted_until_ms: u64,
    /// Who added it (empty: the system).
    pub added_by: String,
}

/// A group's record, as `group_info` answers it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GroupDetails {
    pub conv: String,
    pub name: String,
    pub info: String,
    pub owner: String,
    pub member_count: u32,
    pub members_max: u32,
    pub muted_all: bool,
    pub dissolved: bool,
    pub members_can_invite: bool,
    pub last_offset: u64,
}

/// What a user sees of a group in its conversation list (the group part of
/// a [`super::ConvInfo`]).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ConvGroup {
    pub name: String,
    /// `None` once the user left or was removed, or the group dissolved.
    pub role: Option<GroupRole>,
    /// The user's view stops at `visible_to` (left, removed or dissolved).
    pub left: bool,
    pub dissolved: bool,
    pub muted_all: bool,
    pub member_count: u32,
    /// The user's history starts after this offset (0: from the start).
    pub visible_from: u64,
    /// The user's history ends at this offset (0 while a member).
    pub visible_to: u64,
}

fn bad_request(id: u64, message: String) -> CommandError {
    CommandError::new(Some(id), ErrorCode::BadRequest, message)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupCreateParams {
    name: String,
    #[serde(default)]
    info: String,
    #[serde(default)]
    members: Vec<String>,
    #[serde(default)]
    members_can_invite: Option<bool>,
    #[serde(default)]
    client_msg_id: Option<String>,
}

impl GroupCreateParams {
    pub(super) fn into_command(self) -> ImCommand {
        ImCommand::GroupCreate {
            name: self.name,
            info: self.info,
            members: self.members,
            members_can_invite: self.members_can_invite,
            client_msg_id: self.client_msg_id,
        }
    }
}

/// The params of every `group_*` change: each method takes the fields it
/// names and refuses the others.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupChangeParams {
    conv: String,
    #[serde(default)]
    users: Option<Vec<String>>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    info: Option<String>,
    #[serde(default)]
    until_ms: Option<u64>,
    #[serde(default)]
    on: Option<bool>,
    #[serde(default)]
    client_msg_id: Option<String>,
}

impl GroupChangeParams {
    /// The command of `method` (`group_add`, ...), or 107 naming the field
    /// that is missing or not one of the method's.
    pub(super) fn into_command(self, id: u64, method: &str) -> Result<ImCommand, CommandError> {
        let GroupChangeParams {
            conv,
            users,
            user,
            role,
            to,
            name,
            info,
            until_ms,
            on,
            client_msg_id,
        } = self;
        let missing = |field: &str| bad_request(id, format!("{method} needs `{field}`"));
        let mut taken: Vec<&'static str> = Vec::new();
        let change = match method {
            "group_add" | "group_remove" => {
                taken.push("users");
                let users = users.clone().ok_or_else(|| missing("users"))?;
                if method == "group_add" {
                    GroupChange::Add { users }
                } else {
                    GroupChange::Remove { users }
                }
            }
            "group_leave" => GroupChange::Leave,
            "group_role" => {
                taken.extend(["user", "role"]);
                let admin = match role.as_deref() {
                    Some("admin") => true,
                    Some("member") => false,
                    Some(other) => {
                        return Err(bad_request(
                            id,
                            format!("`role` {other:?}: expected admin or member (ownership moves by group_transfer)"),
                        ))
                    }
                    None => return Err(missing("role")),
                };
                GroupChange::Role {
                    user: user.clone().ok_or_else(|| missing("user"))?,
                    admin,
                }
            }
            "group_transfer" => {
                taken.push("to");
                GroupChange::Transfer {
                    to: to.clone().ok_or_else(|| missing("to"))?,
                }
            }
            "group_update" => {
                taken.extend(["name", "info"]);
                GroupChange::Update {
                    name: name.clone(),
                    info: info.clone(),
                }
            }
            "group_mute" => {
                taken.extend(["user", "until_ms"]);
                GroupChange::Mute {
                    user: user.clone().ok_or_else(|| missing("user"))?,
                    until_ms: until_ms.ok_or_else(|| missing("until_ms"))?,
                }
            }
            "group_unmute" => {
                taken.push("user");
                GroupChange::Unmute {
                    user: user.clone().ok_or_else(|| missing("user"))?,
                }
            }
            "group_mute_all" => {
                taken.push("on");
                GroupChange::MuteAll {
                    on: on.unwrap_or(true),
                }
            }
            "group_dissolve" => GroupChange::Dissolve,
            _ => {
                return Err(CommandError::new(
                    Some(id),
                    ErrorCode::MethodNotFound,
                    format!("unknown method {method}"),
                ))
            }
        };
        let given = [
            ("users", users.is_some()),
            ("user", user.is_some()),
            ("role", role.is_some()),
            ("to", to.is_some()),
            ("name", name.is_some()),
            ("info", info.is_some()),
            ("until_ms", until_ms.is_some()),
            ("on", on.is_some()),
        ];
        if let Some((field, _)) = given
            .iter()
            .find(|(field, given)| *given && !taken.contains(field))
        {
            return Err(bad_request(id, format!("{method} takes no `{field}`")));
        }
        Ok(ImCommand::Group {
            conv,
            change,
            client_msg_id,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupMembersParams {
    conv: String,
    #[serde(default)]
    after: Option<String>,
    #[serde(default = "group_members_limit_default")]
    limit: u32,
}

fn group_members_limit_default() -> u32 {
    GROUP_MEMBERS_LIMIT_DEFAULT
}

impl GroupMembersParams {
    pub(super) fn into_command(self) -> ImCommand {
        ImCommand::GroupMembers {
            conv: self.conv,
            after: self.after,
            limit: self.limit,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupInfoParams {
    conv: String,
}

impl GroupInfoParams {
    pub(super) fn into_command(self) -> ImCommand {
        ImCommand::GroupInfo { conv: self.conv }
    }
}

/// Whether `conv` names a group.
pub fn is_group_conv(conv: &str) -> bool {
    conv.len() > GROUP_PREFIX.len() && conv.starts_with(GROUP_PREFIX)
}

fn check_conv(id: u64, conv: &str) -> Result<(), CommandError> {
    if is_group_conv(conv) {
        Ok(())
    } else {
        Err(bad_request(
            id,
            format!("{conv:?} is not a group (grp:...)"),
        ))
    }
}

fn check_users(id: u64, users: &[String], empty_ok: bool) -> Result<(), CommandError> {
    if (users.is_empty() && !empty_ok) || users.len() > GROUP_USERS_MAX {
        return Err(bad_request(
            id,
            format!(
                "`users` must name {} to {GROUP_USERS_MAX} users",
                u8::from(!empty_ok)
            ),
        ));
    }
    check_each_user(id, users.iter().map(String::as_str))
}

fn check_each_user<'a>(
    id: u64,
    mut users: impl Iterator<Item = &'a str>,
) -> Result<(), CommandError> {
    match users.find(|user| user.is_empty()) {
        Some(_) => Err(bad_request(id, "a user id must not be empty".to_owned())),
        None => Ok(()),
    }
}

fn check_text(id: u64, field: &str, text: &str) -> Result<(), CommandError> {
    if text.len() > GROUP_TEXT_BYTES_MAX {
        Err(bad_request(
            id,
            format!(
                "`{field}` is {} bytes, over {GROUP_TEXT_BYTES_MAX}",
                text.len()
            ),
        ))
    } else {
        Ok(())
    }
}

fn check_key(id: u64, client_msg_id: Option<&String>) -> Result<(), CommandError> {
    match client_msg_id {
        Some(key) if !super::validate::valid_client_msg_id(key) => Err(bad_request(
            id,
            format!(
                "`client_msg_id` must be 1 to {} bytes of printable ASCII",
                super::CLIENT_MSG_ID_BYTES_MAX
            ),
        )),
        _ => Ok(()),
    }
}

/// The wire rules of a group command (`validate_im` calls it for them).
pub(super) fn validate_group(id: u64, command: &ImCommand) -> Result<(), CommandError> {
    match command {
        ImCommand::GroupCreate {
            name,
            info,
            members,
            client_msg_id,
            ..
        } => {
            if name.is_empty() {
                return Err(bad_request(id, "`name` must not be empty".to_owned()));
            }
            check_text(id, "name", name)?;
            check_text(id, "info", info)?;
            check_users(id, members, true)?;
            check_key(id, client_msg_id.as_ref())
        }
        ImCommand::Group {
            conv,
            change,
            client_msg_id,
        } => {
            check_conv(id, conv)?;
            check_key(id, client_msg_id.as_ref())?;
            match change {
                GroupChange::Add { users } | GroupChange::Remove { users } => {
                    check_users(id, users, false)
                }
                GroupChange::Role { user, .. }
                | GroupChange::Transfer { to: user }
                | GroupChange::Unmute { user } => check_each_user(id, std::iter::once(&**user)),
                GroupChange::Mute { user, until_ms } => {
                    if *until_ms == 0 {
                        return Err(bad_request(
                            id,
                            "`until_ms` must be a time (Unix ms)".to_owned(),
                        ));
                    }
                    check_each_user(id, std::iter::once(&**user))
                }
                GroupChange::Update { name, info } => {
                    if name.is_none() && info.is_none() {
                        return Err(bad_request(
                            id,
                            "group_update needs `name` or `info`".to_owned(),
                        ));
                    }
                    if name.as_deref() == Some("") {
                        return Err(bad_request(id, "`name` must not be empty".to_owned()));
                    }
                    check_text(id, "name", name.as_deref().unwrap_or_default())?;
                    check_text(id, "info", info.as_deref().unwrap_or_default())
                }
                GroupChange::Leave | GroupChange::MuteAll { .. } | GroupChange::Dissolve => Ok(()),
            }
        }
        ImCommand::GroupMembers { conv, limit, .. } => {
            check_conv(id, conv)?;
            if (1..=GROUP_MEMBERS_LIMIT_MAX).contains(limit) {
                Ok(())
            } else {
                Err(bad_request(
                    id,
                    format!("`limit` must be 1 to {GROUP_MEMBERS_LIMIT_MAX}"),
                ))
            }
        }
        ImCommand::GroupInfo { conv } => check_conv(id, conv),
        _ => Ok(()),
    }
}

/// The group part of a conversation in JSON: `,"group":{...}`.
pub(super) fn push_conv_group(out: &mut Vec<u8>, group: &ConvGroup) {
    out.extend_from_slice(b",\"group\":{\"name\":");
    push_json_str(out, &group.name);
    if let Some(role) = group.role {
        out.extend_from_slice(b",\"role\":\"");
        out.extend_from_slice(role.as_str().as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b",\"member_count\":");
    push_u64(out, u64::from(group.member_count));
    for (flag, name) in [
        (group.left, &b",\"left\":true"[..]),
        (group.dissolved, b",\"dissolved\":true"),
        (group.muted_all, b",\"muted_all\":true"),
    ] {
        if flag {
            out.extend_from_slice(name);
        }
    }
    out.extend_from_slice(b",\"visible_from\":");
    push_u64(out, group.visible_from);
    out.extend_from_slice(b",\"visible_to\":");
    push_u64(out, group.visible_to);
    out.push(b'}');
}

/// `group_members`' result: `{"conv", "members": [...], "next"?}`.
pub(super) fn push_group_members(
    out: &mut Vec<u8>,
    conv: &str,
    members: &[GroupMemberInfo],
    next: Option<&str>,
) {
    out.extend_from_slice(b"{\"conv\":");
    push_json_str(out, conv);
    out.extend_from_slice(b",\"members\":");
    let push_member = |out: &mut Vec<u8>, member: &GroupMemberInfo| {
        out.extend_from_slice(b"{\"user\":");
        push_json_str(out, &member.user);
        out.extend_from_slice(b",\"role\":\"");
        out.extend_from_slice(member.role.as_str().as_bytes());
        out.extend_from_slice(b"\",\"joined_offset\":");
        push_u64(out, member.joined_offset);
        out.extend_from_slice(b",\"joined_ms\":");
        push_u64(out, member.joined_ms);
        out.extend_from_slice(b",\"muted_until_ms\":");
        push_u64(out, member.muted_until_ms);
        out.extend_from_slice(b",\"added_by\":");
        push_json_str(out, &member.added_by);
        out.push(b'}');
    };
    push_page_tail(out, members, push_member, next);
}

/// `group_info`'s result.
pub(super) fn push_group_details(out: &mut Vec<u8>, group: &GroupDetails) {
    out.extend_from_slice(b"{\"conv\":");
    push_json_str(out, &group.conv);
    out.extend_from_slice(b",\"name\":");
    push_json_str(out, &group.name);
    out.extend_from_slice(b",\"info\":");
    push_json_str(out, &group.info);
    out.extend_from_slice(b",\"owner\":");
    push_json_str(out, &group.owner);
    out.extend_from_slice(b",\"member_count\":");
    push_u64(out, u64::from(group.member_count));
    out.extend_from_slice(b",\"members_max\":");
    push_u64(out, u64::from(group.members_max));
    for (flag, name) in [
        (group.muted_all, &b",\"muted_all\":"[..]),
        (group.dissolved, b",\"dissolved\":"),
        (group.members_can_invite, b",\"members_can_invite\":"),
    ] {
        out.extend_from_slice(name);
        out.extend_from_slice(if flag { b"true" } else { b"false" });
    }
    out.extend_from_slice(b",\"last_offset\":");
    push_u64(out, group.last_offset);
    out.push(b'}');
}
