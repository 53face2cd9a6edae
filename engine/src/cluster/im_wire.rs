//! The IM layer's store calls as data (docs/cluster.md, "The IM layer in a
//! cluster"): every IM record lives in one store partition, the IM
//! partition (`cluster.im_partition`), and a node that does not own it
//! sends each call there as an [`ImCall`] and gets an [`ImAnswer`] back,
//! both rkyv archives of the store's own request and answer types (so
//! nothing is converted field by field) carried in
//! `StoreRequest::Im` / `StoreReply::Im`. The owner runs the call on its
//! store exactly as a local caller would ([`ImCall::run`]).

use futures_channel::oneshot;
use ringcast_store::{
    ConvPage, ConvSummary, DmPolicy, GroupAppend, GroupAppended, GroupInfo, GroupMember,
    GroupOpRequest, ImAppend, ImAppended, ImDelivery, ImReadState, ImRewrite, ImRewritten, ImSync,
    ReceiptPage, Store, StoreError, SyncToken,
};

/// One IM store call, as `ringcast_store::Store`'s method of the same name
/// takes it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub enum ImCall {
    ImAppend(ImAppend),
    ImRead {
        user: String,
        conv: String,
        offset: u64,
    },
    ImClear {
        user: String,
        conv: String,
        upto: u64,
    },
    ImAck {
        user: String,
        device: String,
        conv: String,
        offset: u64,
    },
    ImReceipts {
        user: String,
        conv: String,
        after: Option<String>,
        limit: u64,
    },
    ConvList {
        user: String,
        cursor: Option<(u64, u64)>,
        limit: u64,
    },
    ImSync {
        user: String,
        since: Option<SyncToken>,
        limit: u64,
    },
    GroupOp(GroupOpRequest),
    GroupAppend(GroupAppend),
    /// With a DM's pair, as the asking node looked it up: the owner's sink
    /// pushes the rewrite's event by it, and the owner may not have it in
    /// memory (it restarted since the conversation's last message).
    ImRewrite {
        request: ImRewrite,
        pair: Option<(String, String)>,
    },
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
    SetDmPolicy {
        user: String,
        policy: DmPolicy,
    },
    DmPolicy {
        user: String,
    },
    BlocksList {
        owner: String,
        after: Option<String>,
        limit: u64,
    },
    ContactsList {
        owner: String,
        after: Option<String>,
        limit: u64,
    },
    ConvGet {
        user: String,
        conv: String,
    },
    TotalUnread {
        user: String,
    },
    GroupInfo {
        conv: String,
    },
    GroupMembers {
        conv: String,
        after: Option<String>,
        limit: u64,
    },
}

/// What an [`ImCall`] answered, when it succeeded (a failure crosses as
/// `StoreReply::Error`, as every forwarded call's does).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub enum ImAnswer {
    ImAppended(ImAppended),
    ReadState(ImReadState),
    Delivery(ImDelivery),
    Receipts(Option<ReceiptPage>),
    ConvPage(ConvPage),
    Sync(ImSync),
    Group(GroupAppended),
    Rewritten(ImRewritten),
    /// The IM sequence of a user-level change (block, contact, policy),
    /// or a count (total unread).
    Number(u64),
    Policy(DmPolicy),
    /// `(user, time)` pairs: a blocks or contacts list.
    Pairs(Vec<(String, u64)>),
    Conv(Option<ConvSummary>),
    Info(Option<GroupInfo>),
    Members(Vec<GroupMember>),
}

type Call<T> = Result<oneshot::Receiver<Result<T, StoreError>>, StoreError>;

/// A call running on the owner's store: its answer, as one future.
pub type Running =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<ImAnswer, StoreError>> + Send>>;

fn settle<T: Send + 'static>(call: Call<T>, wrap: fn(T) -> ImAnswer) -> Running {
    Box::pin(async move {
        let receiver = call?;
        let value = receiver.await.unwrap_or(Err(StoreError::Closed))?;
        Ok(wrap(value))
    })
}

fn limit(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

impl ImCall {
    /// Runs the call on this node's store (the IM partition's owner).
    pub fn run(self, store: &Store, dm_pairs: &crate::im::DmPairs) -> Running {
        match self {
            ImCall::ImAppend(request) => settle(store.im_append(request), ImAnswer::ImAppended),
            ImCall::ImRead { user, conv, offset } => {
                settle(store.im_read(&user, &conv, offset), ImAnswer::ReadState)
            }
            ImCall::ImClear { user, conv, upto } => {
                settle(store.im_clear(&user, &conv, upto), ImAnswer::ReadState)
            }
            ImCall::ImAck {
                user,
                device,
                conv,
                offset,
            } => settle(
                store.im_ack(&user, &device, &conv, offset),
                ImAnswer::Delivery,
            ),
            ImCall::ImReceipts {
                user,
                conv,
                after,
                limit: n,
            } => settle(
                store.im_receipts(&user, &conv, after.as_deref(), limit(n)),
                ImAnswer::Receipts,
            ),
            ImCall::ConvList {
                user,
                cursor,
                limit: n,
            } => settle(store.conv_list(&user, cursor, limit(n)), ImAnswer::ConvPage),
            ImCall::ImSync {
                user,
                since,
                limit: n,
            } => settle(store.im_sync(&user, since, limit(n)), ImAnswer::Sync),
            ImCall::GroupOp(request) => settle(store.group_op(request), ImAnswer::Group),
            ImCall::GroupAppend(request) => settle(store.group_append(request), ImAnswer::Group),
            ImCall::ImRewrite { request, pair } => {
                if let Some((a, b)) = pair {
                    let pair = crate::im::DmPair::new(&a, &b);
                    // Only the pair that names this conversation.
                    if crate::im::is_dm(&request.conv) && pair.conv_name() == request.conv {
                        dm_pairs.remember(pair);
                    }
                }
                settle(store.im_rewrite(request), ImAnswer::Rewritten)
            }
            ImCall::Block { owner, other, on } => {
                settle(store.block(&owner, &other, on), ImAnswer::Number)
            }
            ImCall::Contact { owner, other, on } => {
                settle(store.contact(&owner, &other, on), ImAnswer::Number)
            }
            ImCall::SetDmPolicy { user, policy } => {
                settle(store.set_dm_policy(&user, policy), ImAnswer::Number)
            }
            ImCall::DmPolicy { user } => settle(store.dm_policy(&user), ImAnswer::Policy),
            ImCall::BlocksList {
                owner,
                after,
                limit: n,
            } => settle(
                store.blocks_list(&owner, after.as_deref(), limit(n)),
                ImAnswer::Pairs,
            ),
            ImCall::ContactsList {
                owner,
                after,
                limit: n,
            } => settle(
                store.contacts_list(&owner, after.as_deref(), limit(n)),
                ImAnswer::Pairs,
            ),
            ImCall::ConvGet { user, conv } => settle(store.conv_get(&user, &conv), ImAnswer::Conv),
            ImCall::TotalUnread { user } => settle(store.im_total_unread(&user), ImAnswer::Number),
            ImCall::GroupInfo { conv } => settle(store.group_info(&conv), ImAnswer::Info),
            ImCall::GroupMembers {
                conv,
                after,
                limit: n,
            } => settle(
                store.group_members(&conv, after.as_deref(), limit(n)),
                ImAnswer::Members,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ringcast_protocol::cluster::{decode, encode};
    use ringcast_protocol::envelope::{EncodedPush, Envelope, MessageId};
    use ringcast_store::{Appended, Durability};

    use super::*;

    fn push(offset: u64) -> EncodedPush {
        EncodedPush::encode(&Envelope {
            id: 7,
            offset,
            epoch: 3,
            channel: "dm:abc".into(),
            sender: "alice".into(),
            time_ms: 1,
            data_is_json: true,
            data: br#"{"kind":"text","data":{"text":"hi"}}"#.to_vec(),
        })
    }

    #[test]
    fn a_dm_append_and_its_answer_cross_unchanged() {
        let call = ImCall::ImAppend(ImAppend {
            conv: "dm:abc".into(),
            pair: ("alice".into(), "bob".into()),
            sender: "alice".into(),
            push: push(0),
            client_msg_id: Some("m1".into()),
            durability: Durability::Sync,
            backend_allowed: true,
        });
        let ImCall::ImAppend(back) = decode::<ImCall>(&encode(&call)).unwrap() else {
            panic!("another call");
        };
        assert_eq!(back.push.as_bytes(), push(0).as_bytes());
        assert_eq!(back.pair, ("alice".to_owned(), "bob".to_owned()));
        assert_eq!(back.client_msg_id.as_deref(), Some("m1"));
        assert!(back.backend_allowed);

        let answer = ImAnswer::Group(GroupAppended {
            appended: Appended {
                message_id: MessageId(42),
                offset: 5,
                epoch: 3,
                push: Arc::new(push(5)),
                duplicate: false,
            },
            count: 4,
            gseq: 9,
            members: Arc::from(vec!["alice".to_owned(), "bob".to_owned()]),
            removed: vec!["carol".into()],
        });
        let ImAnswer::Group(group) = decode::<ImAnswer>(&encode(&answer)).unwrap() else {
            panic!("another answer");
        };
        assert_eq!(group.appended.message_id, MessageId(42));
        assert_eq!(group.appended.push.envelope().offset, 5);
        assert_eq!(&*group.members, ["alice".to_owned(), "bob".to_owned()]);
        assert_eq!(group.removed, ["carol".to_owned()]);
    }
}
