//! A group's member table as the writer holds it, and the roles table of
//! `docs/im.md` ("Roles") as code: [`plan`] checks one group operation
//! against the table and the group's record at the offset it will take,
//! and says what changes, without writing anything (a refusal leaves
//! nothing behind).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::api::{
    GroupActor, GroupOp, GroupRole, CURSOR_ID_BYTES_MAX, GROUP_MEMBERS_MAX_CEILING,
    GROUP_TARGETS_MAX, GROUP_TEXT_BYTES_MAX,
};
use crate::error::StoreError;
use crate::keys::{
    im_member_key_decode, GroupRecord, MemberRecord, GROUP_FLAG_DISSOLVED, GROUP_FLAG_MUTED_ALL,
};
use crate::recovery::Fjall;

/// A group's members, sorted by id, with the id list shared with every
/// entry routed at this state (an `Arc` clone per message, no copy).
#[derive(Debug, Clone, Default)]
pub(crate) struct Members {
    pub(crate) table: BTreeMap<String, MemberRecord>,
    pub(crate) ids: Arc<[String]>,
}

impl Members {
    pub(crate) fn from_table(table: BTreeMap<String, MemberRecord>) -> Members {
        let ids = table.keys().cloned().collect::<Vec<_>>().into();
        Members { table, ids }
    }

    /// The table of group `id` as stored: one prefix scan of `im_member`.
    pub(crate) fn load(fjall: &Fjall, id: u64, conv: &str) -> Result<Members, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            stream: conv.to_owned(),
            offset: 0,
            reason,
        };
        let mut table = BTreeMap::new();
        for guard in fjall.im_member.prefix(id.to_be_bytes()) {
            let (key, value) = guard
                .into_inner()
                .map_err(|error| StoreError::io("loading a member table", error))?;
            let user = im_member_key_decode(&key, id)
                .ok_or_else(|| corrupt(format!("im_member key of {} bytes", key.len())))?;
            table.insert(
                user.to_owned(),
                MemberRecord::decode(&value).map_err(corrupt)?,
            );
        }
        Ok(Members::from_table(table))
    }
}

/// What one group operation changes, decided by [`plan`].
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Member records to write (`None`: delete), in user order.
    pub(crate) changes: BTreeMap<String, Option<MemberRecord>>,
    /// Users who join with this entry.
    pub(crate) joined: Vec<String>,
    /// Users who leave with this entry (remove, leave).
    pub(crate) removed: Vec<String>,
}

/// The checks every group write starts with: the group takes writes, and
/// a user actor is a member. Returns the actor's record (`None`: the system).
pub(crate) fn actor_record<'a>(
    conv: &str,
    group: &GroupRecord,
    members: &'a Members,
    actor: &GroupActor,
) -> Result<Option<&'a MemberRecord>, StoreError> {
    if group.has(GROUP_FLAG_DISSOLVED) {
        return Err(StoreError::Dissolved {
            conv: conv.to_owned(),
        });
    }
    match actor {
        GroupActor::System => Ok(None),
        GroupActor::User(user) => {
            members
                .table
                .get(user)
                .map(Some)
                .ok_or_else(|| StoreError::NotMember {
                    conv: conv.to_owned(),
                    user: user.clone(),
                })
        }
    }
}

/// Whether `user` may send a message now (`docs/im.md`, "Roles": send).
pub(crate) fn check_send(
    conv: &str,
    group: &GroupRecord,
    members: &Members,
    user: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    let actor = GroupActor::User(user.to_owned());
    let Some(record) = actor_record(conv, group, members, &actor)? else {
        return Ok(());
    };
    let muted_alone = record.role != GroupRole::Owner && record.muted_until_ms > now_ms;
    let muted_all = record.role == GroupRole::Member && group.has(GROUP_FLAG_MUTED_ALL);
    if muted_alone || muted_all {
        return Err(StoreError::Muted {
            conv: conv.to_owned(),
            user: user.to_owned(),
            until_ms: if muted_alone {
                record.muted_until_ms
            } else {
                0
            },
            all: !muted_alone,
        });
    }
    Ok(())
}

/// Checks a list of user ids named by an operation.
pub(crate) fn validate_users(users: &[String]) -> Result<(), StoreError> {
    if users.is_empty() || users.len() > GROUP_TARGETS_MAX {
        return Err(StoreError::InvalidRequest {
            reason: "a group operation names 1..=100 users",
        });
    }
    if users
        .iter()
        .any(|user| user.is_empty() || user.len() > CURSOR_ID_BYTES_MAX)
    {
        return Err(StoreError::InvalidRequest {
            reason: "user ids must be 1..=1024 bytes",
        });
    }
    Ok(())
}

pub(crate) fn validate_text(text: &str) -> Result<(), StoreError> {
    if text.len() > GROUP_TEXT_BYTES_MAX {
        return Err(StoreError::InvalidRequest {
            reason: "a group's name and info are at most 1 KiB each",
        });
    }
    Ok(())
}

/// The context of one operation being planned.
struct Ctx<'a> {
    conv: &'a str,
    members: &'a Members,
    /// `(user, role)` of a user actor; `None`: the system.
    actor: Option<(&'a str, GroupRole)>,
    /// Until when a user actor is muted (0: it is not, now). The owner
    /// is never muted.
    actor_muted_until_ms: u64,
}

impl Ctx<'_> {
    fn refuse(&self, action: &'static str) -> StoreError {
        StoreError::NotAllowed {
            conv: self.conv.to_owned(),
            user: self
                .actor
                .map_or_else(String::new, |(user, _)| user.to_owned()),
            action,
        }
    }

    /// The roles table's muted column: a muted member, an admin too, may
    /// leave, send nothing and change nothing (122).
    fn unmuted(&self) -> Result<(), StoreError> {
        match self.actor {
            Some((user, _)) if self.actor_muted_until_ms > 0 => Err(StoreError::Muted {
                conv: self.conv.to_owned(),
                user: user.to_owned(),
                until_ms: self.actor_muted_until_ms,
                all: false,
            }),
            _ => Ok(()),
        }
    }

    /// Allowed for the system and the roles in `roles`.
    fn require(&self, roles: &[GroupRole], action: &'static str) -> Result<(), StoreError> {
        match self.actor {
            Some((_, role)) if !roles.contains(&role) => Err(self.refuse(action)),
            _ => Ok(()),
        }
    }

    fn target(&self, user: &str) -> Result<&MemberRecord, StoreError> {
        self.members
            .table
            .get(user)
            .ok_or_else(|| StoreError::NotMember {
                conv: self.conv.to_owned(),
                user: user.to_owned(),
            })
    }

    /// Remove and mute: the owner any member but itself, an admin plain
    /// members, the system anyone but the owner.
    fn check_over(&self, user: &str, action: &'static str) -> Result<MemberRecord, StoreError> {
        let target = self.target(user)?;
        if target.role == GroupRole::Owner {
            return Err(self.refuse(action));
        }
        match self.actor {
            None | Some((_, GroupRole::Owner)) => {}
            Some((_, GroupRole::Admin)) if target.role == GroupRole::Member => {}
            Some(_) => return Err(self.refuse(action)),
        }
        Ok(target.clone())
    }
}

/// Checks `op` by `actor` against the roles table and the group as it
/// stands before the entry at `offset`, and says what it changes in the
/// member table; `group` is updated in place (owner, counts, flags, name).
/// Create is not planned here: there is no group before it.
#[expect(
    clippy::too_many_lines,
    reason = "one arm per operation of the roles table, read side by side with it"
)]
pub(crate) fn plan(
    conv: &str,
    group: &mut GroupRecord,
    members: &Members,
    actor: &GroupActor,
    op: &GroupOp,
    offset: u64,
    now_ms: u64,
) -> Result<Plan, StoreError> {
    let actor_rec = actor_record(conv, group, members, actor)?;
    let ctx = Ctx {
        conv,
        members,
        actor: match actor {
            GroupActor::User(user) => actor_rec.map(|record| (user.as_str(), record.role)),
            GroupActor::System => None,
        },
        actor_muted_until_ms: actor_rec
            .filter(|record| record.role != GroupRole::Owner && record.muted_until_ms > now_ms)
            .map_or(0, |record| record.muted_until_ms),
    };
    let actor_name = ctx.actor.map_or("", |(user, _)| user);
    let mut plan = Plan::default();
    use GroupRole::{Admin, Member, Owner};
    match op {
        GroupOp::Create { .. } => {
            return Err(StoreError::InvalidRequest {
                reason: "the group exists already",
            })
        }
        GroupOp::Add { users } => {
            validate_users(users)?;
            if let Some(record) = actor_rec {
                let invite = group.has(crate::keys::GROUP_FLAG_MEMBERS_CAN_INVITE);
                if record.role == Member && !invite {
                    return Err(ctx.refuse("add members"));
                }
            }
            ctx.unmuted()?;
            let new: BTreeSet<&String> = users
                .iter()
                .filter(|user| !members.table.contains_key(*user))
                .collect();
            if new.is_empty() {
                return Err(StoreError::InvalidRequest {
                    reason: "every user named is a member already",
                });
            }
            let count = members.table.len().saturating_add(new.len());
            if count > group.members_max as usize {
                return Err(StoreError::MemberLimit {
                    conv: conv.to_owned(),
                    limit: group.members_max,
                });
            }
            for user in new {
                plan.changes.insert(
                    user.clone(),
                    Some(MemberRecord {
                        role: Member,
                        joined_offset: offset,
                        muted_until_ms: 0,
                        joined_ms: now_ms,
                        added_by: actor_name.to_owned(),
                    }),
                );
                plan.joined.push(user.clone());
            }
        }
        GroupOp::Remove { users } => {
            validate_users(users)?;
            ctx.require(&[Owner, Admin], "remove members")?;
            ctx.unmuted()?;
            for user in users.iter().collect::<BTreeSet<_>>() {
                if user == actor_name {
                    return Err(ctx.refuse("remove itself (leave instead)"));
                }
                ctx.check_over(user, "remove the owner or an admin")?;
                plan.changes.insert(user.clone(), None);
                plan.removed.push(user.clone());
            }
        }
        GroupOp::Leave => {
            let Some((user, role)) = ctx.actor else {
                return Err(StoreError::InvalidRequest {
                    reason: "the system is no member: it removes users instead",
                });
            };
            if role == Owner {
                return Err(ctx.refuse("leave before transferring the group"));
            }
            plan.changes.insert(user.to_owned(), None);
            plan.removed.push(user.to_owned());
        }
        GroupOp::Role { user, role } => {
            if *role == Owner {
                return Err(StoreError::InvalidRequest {
                    reason: "ownership moves by transfer",
                });
            }
            ctx.require(&[Owner], "change roles")?;
            let target = ctx.target(user)?;
            if target.role == Owner {
                return Err(ctx.refuse("change the owner's role"));
            }
            let record = MemberRecord {
                role: *role,
                ..target.clone()
            };
            plan.changes.insert(user.clone(), Some(record));
        }
        GroupOp::Transfer { to } => {
            ctx.require(&[Owner], "transfer the group")?;
            let target = ctx.target(to)?;
            if *to == group.owner {
                return Err(StoreError::InvalidRequest {
                    reason: "the group is that user's already",
                });
            }
            plan.changes.insert(
                to.clone(),
                Some(MemberRecord {
                    role: Owner,
                    muted_until_ms: 0,
                    ..target.clone()
                }),
            );
            if let Some(old) = members.table.get(&group.owner) {
                plan.changes.insert(
                    group.owner.clone(),
                    Some(MemberRecord {
                        role: Admin,
                        ..old.clone()
                    }),
                );
            }
            group.owner = to.clone();
        }
        GroupOp::Mute { user, until_ms } => {
            let target = ctx.check_over(user, "mute the owner or an admin")?;
            ctx.unmuted()?;
            let muted_until_ms = *until_ms;
            plan.changes.insert(
                user.clone(),
                Some(MemberRecord {
                    muted_until_ms,
                    ..target
                }),
            );
        }
        GroupOp::Unmute { user } => {
            let target = ctx.check_over(user, "unmute the owner or an admin")?;
            ctx.unmuted()?;
            plan.changes.insert(
                user.clone(),
                Some(MemberRecord {
                    muted_until_ms: 0,
                    ..target
                }),
            );
        }
        GroupOp::MuteAll | GroupOp::UnmuteAll => {
            ctx.require(&[Owner, Admin], "mute all")?;
            ctx.unmuted()?;
            group.set(GROUP_FLAG_MUTED_ALL, *op == GroupOp::MuteAll);
        }
        GroupOp::Update { name, info } => {
            ctx.require(&[Owner, Admin], "rename or update the group")?;
            ctx.unmuted()?;
            if name.is_none() && info.is_none() {
                return Err(StoreError::InvalidRequest {
                    reason: "an update changes the name, the info or both",
                });
            }
            if let Some(name) = name {
                validate_text(name)?;
                group.title = name.clone();
            }
            if let Some(info) = info {
                validate_text(info)?;
                group.info = info.clone();
            }
        }
        GroupOp::SetMembersMax { members_max } => {
            if ctx.actor.is_some() {
                return Err(ctx.refuse("set the member limit"));
            }
            if *members_max == 0 || *members_max > GROUP_MEMBERS_MAX_CEILING {
                return Err(StoreError::InvalidRequest {
                    reason: "a group's member limit is 1..=100,000",
                });
            }
            if (*members_max as usize) < members.table.len() {
                return Err(StoreError::InvalidRequest {
                    reason: "a member limit below the member count",
                });
            }
            group.members_max = *members_max;
        }
        GroupOp::Dissolve => {
            ctx.require(&[Owner], "dissolve the group")?;
            group.set(GROUP_FLAG_DISSOLVED, true);
        }
    }
    let joined = plan.joined.len();
    let removed = plan.removed.len();
    let count = (group.member_count as usize + joined).saturating_sub(removed);
    group.member_count = u32::try_from(count).unwrap_or(u32::MAX);
    Ok(plan)
}
