//! What another engine process sends over NATS (docs/cluster.md): every
//! cluster message type, a batch of publications read in place, and the
//! store requests turned back into the store's own (an append's push is
//! validated), and the IM layer's calls, answers and batches with the
//! store's own types inside. Nothing may panic on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_engine::cluster::im_wire::{ImAnswer, ImCall};
use ringcast_engine::cluster::wire;
use ringcast_protocol::cluster::{
    decode, read_push_batch, Broadcast, Heartbeat, ImBatch, ImItem, PresenceUpdates, Query,
    QueryReply, StoreReply, StoreRequest,
};
use ringcast_protocol::envelope::EncodedPush;

fuzz_target!(|data: &[u8]| {
    let _ = read_push_batch(data, |_node, pushes| {
        for bytes in pushes {
            if let Ok(push) = EncodedPush::from_untrusted(bytes) {
                let _ = push.envelope().channel.len();
            }
        }
    });
    if let Ok(StoreRequest::Append(append)) = decode::<StoreRequest>(data) {
        if let Ok(request) = wire::append_in(append) {
            assert!(request.push.len() > 0);
        }
    }
    if let Ok(reply) = decode::<StoreReply>(data) {
        let _ = wire::appended_in(0, reply.clone());
        let _ = wire::im_answer_in(0, reply.clone());
        let _ = wire::read_result_in(0, reply);
    }
    let _ = decode::<ImCall>(data);
    let _ = decode::<ImAnswer>(data);
    if let Ok(batch) = decode::<ImBatch>(data) {
        for item in batch.items {
            if let ImItem::Entry { push, .. } = item {
                let _ = EncodedPush::from_untrusted(&push);
            }
        }
    }
    let _ = decode::<Heartbeat>(data);
    let _ = decode::<Broadcast>(data);
    let _ = decode::<Query>(data);
    let _ = decode::<QueryReply>(data);
    let _ = decode::<PresenceUpdates>(data);
});
