//! Asking the other nodes: store requests forwarded to a partition's
//! owner, scatter-gather queries, and where a user is; each answer comes
//! back in a task of its own, so the loop never waits on a round trip.

use super::*;

impl Node {
    /// Forwards a store request; its answer comes back in a task.
    pub(super) fn request(&self, partition: u32, request: StoreRequest, reply: ReplyTo) {
        let state = self.cluster.state.clone();
        state.requests.fetch_add(1, Ordering::Relaxed);
        let subject = self.subjects.store(partition);
        let payload = Bytes::from(encode(&request).into_vec());
        let client = self.client.clone();
        let timeout = self.request_timeout;
        let sender = self.sender.clone();
        let im_order = self.im_order.clone();
        tokio::task::spawn_local(async move {
            let request = async_nats::Request::new()
                .payload(payload)
                .timeout(Some(timeout));
            let answer = match client.send_request(subject, request).await {
                Ok(message) => decode::<StoreReply>(&message.payload).map_err(|error| {
                    wire::unreachable(partition, format!("bad answer from the owner: {error}"))
                }),
                Err(error) => Err(wire::unreachable(
                    partition,
                    match error.kind() {
                        async_nats::RequestErrorKind::NoResponders => {
                            "its owner is not running (no node serves it); nothing was \
                             stored or read, retry later"
                                .to_owned()
                        }
                        async_nats::RequestErrorKind::TimedOut => format!(
                            "its owner did not answer within {} ms; an append may have been \
                             stored: retry with the same client_msg_id",
                            timeout.as_millis()
                        ),
                        _ => format!("the request failed: {error}"),
                    },
                )),
            };
            if answer.is_err() {
                state.request_errors.fetch_add(1, Ordering::Relaxed);
            }
            if let ReplyTo::ImTagged { tag, wrap } = reply {
                // A shard's IM write: its answer follows the entry's push
                // (`im.rs`, `ImOrder`).
                let answer = wrap(
                    partition,
                    answer.and_then(|r| wire::im_answer_in(partition, r)),
                );
                im_order.borrow_mut().answered(tag, answer, &sender);
                return;
            }
            deliver(partition, answer, reply, &sender);
        });
    }

    pub(super) fn query(
        &self,
        query: Query,
        reply: futures_channel::oneshot::Sender<QueryAnswers>,
    ) {
        let client = self.client.clone();
        let subject = self.subjects.query();
        let expected = self.nodes.mask();
        let timeout = self.request_timeout;
        let connected = self.connected();
        tokio::task::spawn_local(async move {
            let mut answers = QueryAnswers::default();
            let mut heard = 0u64;
            if connected && expected != 0 {
                let inbox = client.new_inbox();
                if let Ok(mut replies) = client.subscribe(inbox.clone()).await {
                    let payload = Bytes::from(encode(&query).into_vec());
                    if client
                        .publish_with_reply(subject, inbox, payload)
                        .await
                        .is_ok()
                    {
                        let deadline = tokio::time::Instant::now() + timeout;
                        while heard & expected != expected {
                            let Ok(Some(message)) =
                                tokio::time::timeout_at(deadline, replies.next()).await
                            else {
                                break;
                            };
                            if let Ok(answer) = decode::<QueryReply>(&message.payload) {
                                if usize::from(answer.node) >= NODES_MAX {
                                    continue;
                                }
                                heard |= 1u64 << answer.node;
                                answers.replies.push(answer);
                            }
                        }
                    }
                }
            }
            answers.missing = shard_indexes(expected & !heard).map(|n| n as u8).collect();
            let _ = reply.send(answers);
        });
    }

    pub(super) async fn user_nodes(
        &mut self,
        user: String,
        partition: Option<u32>,
        barrier: bool,
        reply: futures_channel::oneshot::Sender<Result<Vec<u8>, StoreError>>,
    ) {
        let channel = crate::channels::personal_channel(&user);
        if barrier {
            // Whichever shard made the node-wide transition, and whether
            // or not its event came first: the registration reads the
            // truth, and doing it twice is harmless.
            self.interest(&channel).await;
        }
        let partition = partition.unwrap_or_else(|| partition_of(&channel, self.stores));
        if partition == u32::from(self.cluster.node) {
            let _ = reply.send(Ok(self.local_user_nodes(&user, &channel)));
            return;
        }
        if !self.connected() {
            let _ = reply.send(Err(wire::unreachable(
                partition,
                "the node is cut off from NATS".into(),
            )));
            return;
        }
        self.flush_users(partition).await;
        let subject = self.subjects.store(partition);
        let payload = Bytes::from(encode(&StoreRequest::UserNodes { user }).into_vec());
        let client = self.client.clone();
        let timeout = self.request_timeout;
        tokio::task::spawn_local(async move {
            let request = async_nats::Request::new()
                .payload(payload)
                .timeout(Some(timeout));
            let answer = match client.send_request(subject, request).await {
                Ok(message) => match decode::<StoreReply>(&message.payload) {
                    Ok(StoreReply::UserNodes { nodes }) => Ok(nodes),
                    Ok(other) => Err(wire::unreachable(partition, format!("answered {other:?}"))),
                    Err(error) => Err(wire::unreachable(partition, error.to_string())),
                },
                Err(error) => Err(wire::unreachable(partition, error.to_string())),
            };
            let _ = reply.send(answer);
        });
    }
}

/// Hands a forwarded request's answer to whoever asked.
pub(super) fn deliver(
    partition: u32,
    answer: Result<StoreReply, StoreError>,
    reply: ReplyTo,
    sender: &MeshSender,
) {
    match reply {
        ReplyTo::Appended(tx) => {
            let _ = tx.send(answer.and_then(|r| wire::appended_in(partition, r)));
        }
        ReplyTo::Read(tx) => {
            let _ = tx.send(answer.and_then(|r| wire::read_result_in(partition, r)));
        }
        ReplyTo::Cursor(tx) => {
            let _ = tx.send(answer.and_then(|r| wire::cursor_in(partition, r)));
        }
        ReplyTo::Im(reply) => reply(answer.and_then(|r| wire::im_answer_in(partition, r))),
        ReplyTo::ImTagged { tag, wrap } => {
            let answer = wrap(
                partition,
                answer.and_then(|r| wire::im_answer_in(partition, r)),
            );
            tagged_answer(sender, tag, answer);
        }
        ReplyTo::Tagged { tag, kind } => {
            let answer = match kind {
                TaggedKind::Appended => {
                    Answer::Appended(answer.and_then(|r| wire::appended_in(partition, r)))
                }
                TaggedKind::Cursor => {
                    Answer::Cursor(answer.and_then(|r| wire::offset_in(partition, r)))
                }
            };
            tagged_answer(sender, tag, answer);
        }
    }
}

/// A forwarded answer to a shard's tagged request, to its queue of store
/// answers.
pub(super) fn tagged_answer(sender: &MeshSender, tag: u64, answer: Answer) {
    let (shard, slot) = crate::streams::tag_parts(tag);
    if shard >= sender.mesh().n_consumers() {
        tracing::error!(tag, "cluster: a forwarded answer for no shard");
        return;
    }
    sender.answer_quiet(shard, StoreAnswer { slot, answer });
    sender.ring(shard);
}
