//! The store's API for groups, blocks, contacts and DM policy
//! (`docs/im.md`): writes go to the writer, which checks them in offset
//! order; reads come from one snapshot each.

use futures_channel::oneshot;

use crate::api::{
    ConvSummary, DmPolicy, GroupAppend, GroupAppended, GroupInfo, GroupMember, GroupOpRequest,
    ImRewrite, ImRewritten,
};
use crate::error::StoreError;
use crate::reader::ReaderMsg;
use crate::writer::{ImUserChange, Reply, WriterMsg};

use super::{validate_im_names, validate_page_limit, Store};

/// An answer that comes later.
type Pending<T> = Result<oneshot::Receiver<Result<T, StoreError>>, StoreError>;

impl Store {
    /// A group operation (create, add, remove, leave, role, transfer,
    /// mute, mute all, update, member limit, dissolve) by a user or the
    /// system, checked against the roles table (`docs/im.md`, "Roles") at
    /// the offset its `member` entry takes; the entry, the member table's
    /// changes, the group's record and the joined and removed users' views
    /// are one batch. Refusals are typed ([`StoreError::NotMember`],
    /// [`StoreError::NotAllowed`], [`StoreError::Dissolved`],
    /// [`StoreError::MemberLimit`], [`StoreError::Muted`],
    /// [`StoreError::ConversationLimit`]) and write nothing.
    pub fn group_op(&self, request: GroupOpRequest) -> Pending<GroupAppended> {
        self.ask_writer(|reply| WriterMsg::GroupOp { request, reply })
    }

    /// Like [`Store::group_op`], but the answer goes to the store's
    /// [`crate::CommitSink`] with `tag` ([`crate::Answer::Group`]).
    pub fn submit_group_op(&self, request: GroupOpRequest, tag: u64) -> Result<(), StoreError> {
        self.check_tagged()?;
        self.tell_writer(WriterMsg::GroupOp {
            request,
            reply: Reply::Tag(tag),
        })
    }

    /// A message to a group, refused unless the sender is a member, not
    /// muted, not under mute-all (owners and admins are not) and the group
    /// not dissolved. The answer carries the members at its offset, who
    /// receive it.
    pub fn group_append(&self, request: GroupAppend) -> Pending<GroupAppended> {
        self.ask_writer(|reply| WriterMsg::GroupAppend { request, reply })
    }

    /// Like [`Store::group_append`], answered through the sink with `tag`.
    pub fn submit_group_append(&self, request: GroupAppend, tag: u64) -> Result<(), StoreError> {
        self.check_tagged()?;
        self.tell_writer(WriterMsg::GroupAppend {
            request,
            reply: Reply::Tag(tag),
        })
    }

    /// A recall or an edit of a message of a DM or a group (`docs/im.md`,
    /// "Recall, edit, delete"): the event appended, the original
    /// overwritten in place with its tombstone or edited version, the
    /// recall marked (`im_recalled`, so unread stops counting it) and the
    /// conversation's last message fixed, in one batch. Refused, writing
    /// nothing, when the entry at the offset is not the message named, is
    /// recalled already, or the actor may not ([`StoreError::NotMember`],
    /// [`StoreError::NotAllowed`], [`StoreError::WindowPassed`]).
    pub fn im_rewrite(&self, request: ImRewrite) -> Pending<ImRewritten> {
        self.ask_writer(|reply| WriterMsg::ImRewrite { request, reply })
    }

    /// Like [`Store::im_rewrite`], answered through the sink with `tag`
    /// ([`crate::Answer::Rewritten`]).
    pub fn submit_im_rewrite(&self, request: ImRewrite, tag: u64) -> Result<(), StoreError> {
        self.check_tagged()?;
        self.tell_writer(WriterMsg::ImRewrite {
            request,
            reply: Reply::Tag(tag),
        })
    }

    fn user_change(&self, change: ImUserChange) -> Pending<u64> {
        self.ask_writer(|reply| WriterMsg::ImUser { change, reply })
    }

    /// `owner` blocks (`on`) or unblocks `other`: DMs between them are
    /// refused either way ([`StoreError::Blocked`]). Resolves to 1 if it
    /// changed something, 0 if it was so already.
    pub fn block(&self, owner: &str, other: &str, on: bool) -> Pending<u64> {
        self.user_change(ImUserChange::Block {
            owner: owner.to_owned(),
            other: other.to_owned(),
            on,
        })
    }

    /// Adds (`on`) or removes `other` in `owner`'s contacts, which a
    /// [`DmPolicy::Contacts`] user takes DMs from. Resolves like [`Store::block`].
    pub fn contact(&self, owner: &str, other: &str, on: bool) -> Pending<u64> {
        self.user_change(ImUserChange::Contact {
            owner: owner.to_owned(),
            other: other.to_owned(),
            on,
        })
    }

    /// Sets who may send `user` DMs. Resolves like [`Store::block`].
    pub fn set_dm_policy(&self, user: &str, policy: DmPolicy) -> Pending<u64> {
        self.user_change(ImUserChange::Policy {
            user: user.to_owned(),
            policy,
        })
    }

    /// `user`'s DM policy ([`DmPolicy::Anyone`] unless set).
    pub fn dm_policy(&self, user: &str) -> Pending<DmPolicy> {
        validate_im_names(user, "-")?;
        self.ask_reader(|reply| ReaderMsg::DmPolicy {
            user: user.to_owned(),
            reply,
        })
    }

    /// A page of the users `owner` blocked, in id order after `after`,
    /// with the time of each block; at most `limit`.
    pub fn blocks_list(
        &self,
        owner: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Pending<Vec<(String, u64)>> {
        self.pair_list(false, owner, after, limit)
    }

    /// A page of `owner`'s contacts, like [`Store::blocks_list`].
    pub fn contacts_list(
        &self,
        owner: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Pending<Vec<(String, u64)>> {
        self.pair_list(true, owner, after, limit)
    }

    fn pair_list(
        &self,
        contacts: bool,
        owner: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Pending<Vec<(String, u64)>> {
        validate_im_names(owner, "-")?;
        validate_page_limit(limit)?;
        self.ask_reader(|reply| ReaderMsg::PairList {
            contacts,
            owner: owner.to_owned(),
            after: after.map(str::to_owned),
            limit,
            reply,
        })
    }

    /// `user`'s view of `conv` (a DM or a group, one it left included), or
    /// `None` if it has none: the history window a reader must keep to.
    pub fn conv_get(&self, user: &str, conv: &str) -> Pending<Option<ConvSummary>> {
        validate_im_names(user, conv)?;
        self.ask_reader(|reply| ReaderMsg::ConvGet {
            user: user.to_owned(),
            conv: conv.to_owned(),
            reply,
        })
    }

    /// `user`'s total unread (its DMs' and its groups'), as
    /// [`crate::ConvPage::total_unread`] says it, without reading a list page.
    pub fn im_total_unread(&self, user: &str) -> Pending<u64> {
        validate_im_names(user, "-")?;
        self.ask_reader(|reply| ReaderMsg::TotalUnread {
            user: user.to_owned(),
            reply,
        })
    }

    /// Group `conv`'s record, or `None` if there is no such group.
    pub fn group_info(&self, conv: &str) -> Pending<Option<GroupInfo>> {
        validate_im_names("-", conv)?;
        self.ask_reader(|reply| ReaderMsg::GroupInfo {
            conv: conv.to_owned(),
            reply,
        })
    }

    /// A page of group `conv`'s members in id order, after `after`.
    pub fn group_members(
        &self,
        conv: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Pending<Vec<GroupMember>> {
        validate_im_names("-", conv)?;
        validate_page_limit(limit)?;
        self.ask_reader(|reply| ReaderMsg::GroupMembers {
            conv: conv.to_owned(),
            after: after.map(str::to_owned),
            limit,
            reply,
        })
    }
}
