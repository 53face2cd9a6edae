//! What the writer does when it cannot go on: poison the store for good
//! (a failed write), or refuse a whole batch with one error (answered to
//! every request that carries a reply).

use std::sync::atomic::Ordering;

use super::{Shared, WriterCounter, WriterMsg};
use crate::api::CommitSink;
use crate::error::StoreError;

/// Marks the store poisoned for good and says why.
pub(crate) fn poison(shared: &Shared, op: &str, error: &dyn std::fmt::Display) {
    tracing::error!(
        op,
        %error,
        "store write failed: the store is now poisoned and refuses all writes; \
         check the disk (full? read-only? failing?) and restart"
    );
    shared.poisoned.store(true, Ordering::Release);
}

/// Answers every request of `msgs` with `error`, as one batch; what has
/// no answer to carry the error is counted in `dropped`.
pub(crate) fn refuse_batch(
    sink: &mut dyn CommitSink,
    dropped: &WriterCounter,
    msgs: Vec<WriterMsg>,
    error: &StoreError,
) {
    for msg in msgs {
        dropped.add(msg.unanswered());
        match msg {
            WriterMsg::Append { reply, .. } => reply.send(sink, Err(error.clone())),
            WriterMsg::ImAppend { reply, .. } => reply.send(sink, Err(error.clone())),
            WriterMsg::ImRead { reply, .. } => reply.send(sink, Err(error.clone())),
            WriterMsg::ImAck { reply, .. } => reply.send(sink, Err(error.clone())),
            WriterMsg::GroupOp { reply, .. } | WriterMsg::GroupAppend { reply, .. } => {
                reply.send(sink, Err(error.clone()));
            }
            WriterMsg::ImRewrite { reply, .. } => reply.send(sink, Err(error.clone())),
            WriterMsg::SetCursor { reply, .. }
            | WriterMsg::ImUser { reply, .. }
            | WriterMsg::Reset { reply, .. }
            | WriterMsg::OutboxDead { reply, .. }
            | WriterMsg::DeadReplay { reply, .. } => {
                reply.send(sink, Err(error.clone()));
            }
            WriterMsg::Outbox { .. }
            | WriterMsg::Presence { .. }
            | WriterMsg::LastSeen { .. }
            | WriterMsg::OutboxDone { .. }
            | WriterMsg::Shutdown => {}
        }
    }
    sink.batch_done();
}
