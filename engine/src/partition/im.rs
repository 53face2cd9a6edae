//! The IM layer's store calls, wherever the IM partition is.
//!
//! Every IM record (conversations, their streams, lists, read positions,
//! groups, blocks, contacts, policies) lives in one store partition, the
//! IM partition (`cluster.im_partition`; docs/cluster.md, "The IM layer in
//! a cluster"): records span users and conversations, and one writer
//! keeps them consistent, as on a single node. [`ImStore`] has the same
//! methods as `ringcast_store::Store`'s IM calls and the same futures (or
//! tagged answers): on the IM partition's owner, and on a single node,
//! they are the store's own; elsewhere each call crosses to the owner as
//! an [`ImCall`] and its answer comes back the same way.

use futures_channel::oneshot;
use ringcast_protocol::cluster::StoreRequest;
use ringcast_store::{
    Answer, ConvPage, ConvSummary, DmPolicy, GroupAppend, GroupAppended, GroupInfo, GroupMember,
    GroupOpRequest, ImAppend, ImAppended, ImDelivery, ImReadState, ImRewrite, ImRewritten, ImSync,
    ReceiptPage, Store, StoreError, SyncToken,
};

use crate::cluster::im_wire::{ImAnswer, ImCall};
use crate::cluster::{Cluster, ReplyTo};
use crate::engine::Shared;

type Pending<T> = Result<oneshot::Receiver<Result<T, StoreError>>, StoreError>;

/// The IM calls of the store that holds the IM partition (see the module).
pub struct ImStore<'a> {
    store: &'a Store,
    dm_pairs: &'a crate::im::DmPairs,
    /// The cluster and the IM partition, when another node owns it.
    remote: Option<(&'a Cluster, u32)>,
}

impl Shared {
    /// The IM layer's store, wherever it is.
    pub fn im_store(&self) -> ImStore<'_> {
        ImStore {
            store: &self.store,
            dm_pairs: &self.dm_pairs,
            remote: self.cluster.as_deref().and_then(|cluster| {
                cluster
                    .remote_im_partition()
                    .map(|partition| (cluster, partition))
            }),
        }
    }
}

/// The owner answered with another call's answer (nodes of different
/// versions).
fn mismatch(partition: u32) -> StoreError {
    crate::cluster::wire::unreachable(
        partition,
        "the IM partition's owner answered another kind of call".to_owned(),
    )
}

impl ImStore<'_> {
    /// Sends `call` to the owner; `pick` takes the expected answer out.
    fn forward<T: Send + 'static>(
        &self,
        (cluster, partition): (&Cluster, u32),
        call: ImCall,
        pick: fn(ImAnswer) -> Option<T>,
    ) -> Pending<T> {
        let (tx, rx) = oneshot::channel();
        let reply = ReplyTo::Im(Box::new(move |answer| {
            let value = answer.and_then(|answer| pick(answer).ok_or_else(|| mismatch(partition)));
            let _ = tx.send(value);
        }));
        cluster.forward(partition, encode(&call), reply)?;
        Ok(rx)
    }

    /// Sends `call` to the owner; its answer reaches the shard's queue of
    /// store answers under `tag`, as `wrap` makes it.
    fn forward_tagged(
        &self,
        (cluster, partition): (&Cluster, u32),
        call: ImCall,
        tag: u64,
        wrap: fn(u32, Result<ImAnswer, StoreError>) -> Answer,
    ) -> Result<(), StoreError> {
        cluster.forward(partition, encode(&call), ReplyTo::ImTagged { tag, wrap })
    }

    pub fn im_append(&self, request: ImAppend) -> Pending<ImAppended> {
        match self.remote {
            None => self.store.im_append(request),
            Some(remote) => self.forward(remote, ImCall::ImAppend(request), |a| match a {
                ImAnswer::ImAppended(v) => Some(v),
                _ => None,
            }),
        }
    }

    pub fn submit_im_append(&self, request: ImAppend, tag: u64) -> Result<(), StoreError> {
        match self.remote {
            None => self.store.submit_im_append(request, tag),
            Some(remote) => {
                self.forward_tagged(remote, ImCall::ImAppend(request), tag, |p, answer| {
                    Answer::ImAppended(answer.and_then(|a| match a {
                        ImAnswer::ImAppended(v) => Ok(v),
                        _ => Err(mismatch(p)),
                    }))
                })
            }
        }
    }

    pub fn im_read(&self, user: &str, conv: &str, offset: u64) -> Pending<ImReadState> {
        match self.remote {
            None => self.store.im_read(user, conv, offset),
            Some(remote) => self.forward(remote, read_call(user, conv, offset), pick_read_state),
        }
    }

    pub fn submit_im_read(
        &self,
        user: &str,
        conv: &str,
        offset: u64,
        tag: u64,
    ) -> Result<(), StoreError> {
        match self.remote {
            None => self.store.submit_im_read(user, conv, offset, tag),
            Some(remote) => {
                self.forward_tagged(remote, read_call(user, conv, offset), tag, |p, answer| {
                    Answer::ImRead(
                        answer.and_then(|a| pick_read_state(a).ok_or_else(|| mismatch(p))),
                    )
                })
            }
        }
    }

    pub fn im_clear(&self, user: &str, conv: &str, upto: u64) -> Pending<ImReadState> {
        match self.remote {
            None => self.store.im_clear(user, conv, upto),
            Some(remote) => {
                let call = ImCall::ImClear {
                    user: user.to_owned(),
                    conv: conv.to_owned(),
                    upto,
                };
                self.forward(remote, call, pick_read_state)
            }
        }
    }

    pub fn im_ack(&self, user: &str, device: &str, conv: &str, offset: u64) -> Pending<ImDelivery> {
        match self.remote {
            None => self.store.im_ack(user, device, conv, offset),
            Some(remote) => {
                let call = ImCall::ImAck {
                    user: user.to_owned(),
                    device: device.to_owned(),
                    conv: conv.to_owned(),
                    offset,
                };
                self.forward(remote, call, |a| match a {
                    ImAnswer::Delivery(v) => Some(v),
                    _ => None,
                })
            }
        }
    }

    pub fn im_receipts(
        &self,
        user: &str,
        conv: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Pending<Option<ReceiptPage>> {
        match self.remote {
            None => self.store.im_receipts(user, conv, after, limit),
            Some(remote) => {
                let call = ImCall::ImReceipts {
                    user: user.to_owned(),
                    conv: conv.to_owned(),
                    after: after.map(str::to_owned),
                    limit: limit as u64,
                };
                self.forward(remote, call, |a| match a {
                    ImAnswer::Receipts(v) => Some(v),
                    _ => None,
                })
            }
        }
    }

    pub fn conv_list(
        &self,
        user: &str,
        cursor: Option<(u64, u64)>,
        limit: usize,
    ) -> Pending<ConvPage> {
        match self.remote {
            None => self.store.conv_list(user, cursor, limit),
            Some(remote) => {
                let call = ImCall::ConvList {
                    user: user.to_owned(),
                    cursor,
                    limit: limit as u64,
                };
                self.forward(remote, call, |a| match a {
                    ImAnswer::ConvPage(v) => Some(v),
                    _ => None,
                })
            }
        }
    }

    pub fn im_sync(&self, user: &str, since: Option<SyncToken>, limit: usize) -> Pending<ImSync> {
        match self.remote {
            None => self.store.im_sync(user, since, limit),
            Some(remote) => {
                let call = ImCall::ImSync {
                    user: user.to_owned(),
                    since,
                    limit: limit as u64,
                };
                self.forward(remote, call, |a| match a {
                    ImAnswer::Sync(v) => Some(v),
                    _ => None,
                })
            }
        }
    }

    pub fn group_op(&self, request: GroupOpRequest) -> Pending<GroupAppended> {
        match self.remote {
            None => self.store.group_op(request),
            Some(remote) => self.forward(remote, ImCall::GroupOp(request), pick_group),
        }
    }

    pub fn submit_group_op(&self, request: GroupOpRequest, tag: u64) -> Result<(), StoreError> {
        match self.remote {
            None => self.store.submit_group_op(request, tag),
            Some(remote) => {
                self.forward_tagged(remote, ImCall::GroupOp(request), tag, tagged_group)
            }
        }
    }

    pub fn group_append(&self, request: GroupAppend) -> Pending<GroupAppended> {
        match self.remote {
            None => self.store.group_append(request),
            Some(remote) => self.forward(remote, ImCall::GroupAppend(request), pick_group),
        }
    }

    pub fn submit_group_append(&self, request: GroupAppend, tag: u64) -> Result<(), StoreError> {
        match self.remote {
            None => self.store.submit_group_append(request, tag),
            Some(remote) => {
                self.forward_tagged(remote, ImCall::GroupAppend(request), tag, tagged_group)
            }
        }
    }

    pub fn im_rewrite(&self, request: ImRewrite) -> Pending<ImRewritten> {
        match self.remote {
            None => self.store.im_rewrite(request),
            Some(remote) => self.forward(remote, self.rewrite_call(request), pick_rewritten),
        }
    }

    pub fn submit_im_rewrite(&self, request: ImRewrite, tag: u64) -> Result<(), StoreError> {
        match self.remote {
            None => self.store.submit_im_rewrite(request, tag),
            Some(remote) => {
                self.forward_tagged(remote, self.rewrite_call(request), tag, |p, answer| {
                    Answer::Rewritten(
                        answer.and_then(|a| pick_rewritten(a).ok_or_else(|| mismatch(p))),
                    )
                })
            }
        }
    }

    /// A rewrite with its DM's pair, when this node knows it.
    fn rewrite_call(&self, request: ImRewrite) -> ImCall {
        let pair = self
            .dm_pairs
            .get(&request.conv)
            .map(|pair| (pair.a.to_string(), pair.b.to_string()));
        ImCall::ImRewrite { request, pair }
    }

    pub fn block(&self, owner: &str, other: &str, on: bool) -> Pending<u64> {
        match self.remote {
            None => self.store.block(owner, other, on),
            Some(remote) => {
                let call = ImCall::Block {
                    owner: owner.to_owned(),
                    other: other.to_owned(),
                    on,
                };
                self.forward(remote, call, pick_number)
            }
        }
    }

    pub fn contact(&self, owner: &str, other: &str, on: bool) -> Pending<u64> {
        match self.remote {
            None => self.store.contact(owner, other, on),
            Some(remote) => {
                let call = ImCall::Contact {
                    owner: owner.to_owned(),
                    other: other.to_owned(),
                    on,
                };
                self.forward(remote, call, pick_number)
            }
        }
    }

    pub fn set_dm_policy(&self, user: &str, policy: DmPolicy) -> Pending<u64> {
        match self.remote {
            None => self.store.set_dm_policy(user, policy),
            Some(remote) => {
                let call = ImCall::SetDmPolicy {
                    user: user.to_owned(),
                    policy,
                };
                self.forward(remote, call, pick_number)
            }
        }
    }

    pub fn dm_policy(&self, user: &str) -> Pending<DmPolicy> {
        match self.remote {
            None => self.store.dm_policy(user),
            Some(remote) => {
                let call = ImCall::DmPolicy {
                    user: user.to_owned(),
                };
                self.forward(remote, call, |a| match a {
                    ImAnswer::Policy(v) => Some(v),
                    _ => None,
                })
            }
        }
    }

    pub fn blocks_list(
        &self,
        owner: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Pending<Vec<(String, u64)>> {
        match self.remote {
            None => self.store.blocks_list(owner, after, limit),
            Some(remote) => {
                let call = ImCall::BlocksList {
                    owner: owner.to_owned(),
                    after: after.map(str::to_owned),
                    limit: limit as u64,
                };
                self.forward(remote, call, pick_pairs)
            }
        }
    }

    pub fn contacts_list(
        &self,
        owner: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Pending<Vec<(String, u64)>> {
        match self.remote {
            None => self.store.contacts_list(owner, after, limit),
            Some(remote) => {
                let call = ImCall::ContactsList {
                    owner: owner.to_owned(),
                    after: after.map(str::to_owned),
                    limit: limit as u64,
                };
                self.forward(remote, call, pick_pairs)
            }
        }
    }

    pub fn conv_get(&self, user: &str, conv: &str) -> Pending<Option<ConvSummary>> {
        match self.remote {
            None => self.store.conv_get(user, conv),
            Some(remote) => {
                let call = ImCall::ConvGet {
                    user: user.to_owned(),
                    conv: conv.to_owned(),
                };
                self.forward(remote, call, |a| match a {
                    ImAnswer::Conv(v) => Some(v),
                    _ => None,
                })
            }
        }
    }

    pub fn im_total_unread(&self, user: &str) -> Pending<u64> {
        match self.remote {
            None => self.store.im_total_unread(user),
            Some(remote) => {
                let call = ImCall::TotalUnread {
                    user: user.to_owned(),
                };
                self.forward(remote, call, pick_number)
            }
        }
    }

    pub fn group_info(&self, conv: &str) -> Pending<Option<GroupInfo>> {
        match self.remote {
            None => self.store.group_info(conv),
            Some(remote) => {
                let call = ImCall::GroupInfo {
                    conv: conv.to_owned(),
                };
                self.forward(remote, call, |a| match a {
                    ImAnswer::Info(v) => Some(v),
                    _ => None,
                })
            }
        }
    }

    pub fn group_members(
        &self,
        conv: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Pending<Vec<GroupMember>> {
        match self.remote {
            None => self.store.group_members(conv, after, limit),
            Some(remote) => {
                let call = ImCall::GroupMembers {
                    conv: conv.to_owned(),
                    after: after.map(str::to_owned),
                    limit: limit as u64,
                };
                self.forward(remote, call, |a| match a {
                    ImAnswer::Members(v) => Some(v),
                    _ => None,
                })
            }
        }
    }
}

fn encode(call: &ImCall) -> StoreRequest {
    StoreRequest::Im(ringcast_protocol::cluster::encode(call).into_vec())
}

fn read_call(user: &str, conv: &str, offset: u64) -> ImCall {
    ImCall::ImRead {
        user: user.to_owned(),
        conv: conv.to_owned(),
        offset,
    }
}

fn pick_read_state(answer: ImAnswer) -> Option<ImReadState> {
    match answer {
        ImAnswer::ReadState(v) => Some(v),
        _ => None,
    }
}

fn pick_group(answer: ImAnswer) -> Option<GroupAppended> {
    match answer {
        ImAnswer::Group(v) => Some(v),
        _ => None,
    }
}

fn tagged_group(partition: u32, answer: Result<ImAnswer, StoreError>) -> Answer {
    Answer::Group(answer.and_then(|a| pick_group(a).ok_or_else(|| mismatch(partition))))
}

fn pick_rewritten(answer: ImAnswer) -> Option<ImRewritten> {
    match answer {
        ImAnswer::Rewritten(v) => Some(v),
        _ => None,
    }
}

fn pick_number(answer: ImAnswer) -> Option<u64> {
    match answer {
        ImAnswer::Number(v) => Some(v),
        _ => None,
    }
}

fn pick_pairs(answer: ImAnswer) -> Option<Vec<(String, u64)>> {
    match answer {
        ImAnswer::Pairs(v) => Some(v),
        _ => None,
    }
}
