//! A publication as it crosses shards: the rkyv envelope, encoded once, and
//! the two WebSocket frames built from it once.
//!
//! Every recipient's outbound queue holds a clone of one of these `Bytes`
//! (a reference-count increment), so the payload exists once per publication
//! however many connections receive it.

use std::sync::Arc;

use bytes::Bytes;
use ringcast_protocol::envelope::{encode_push_json, EncodedPush, Envelope};
use ringcast_protocol::frame::{encode_frame, OpCode};

#[derive(Debug)]
pub struct Publication {
    /// The canonical encoding: an archived `ServerMessage::Push`, shared with
    /// the store when the channel is durable.
    pub push: Arc<EncodedPush>,
    /// Text frame for clients on the JSON subprotocol.
    pub json_frame: Bytes,
    /// Binary frame for clients on the rkyv subprotocol; its payload is
    /// `push`'s bytes as they are.
    pub binary_frame: Bytes,
}

impl Publication {
    pub fn new(envelope: &Envelope) -> Publication {
        Publication::from_push(Arc::new(EncodedPush::encode(envelope)))
    }

    /// Builds the frames for an envelope that is already archived (by the
    /// store, with its offset and epoch filled in).
    pub fn from_push(push: Arc<EncodedPush>) -> Publication {
        let json = encode_push_json(push.envelope());
        let json_frame = encode_frame(OpCode::Text, &json, None);
        let binary_frame = encode_frame(OpCode::Binary, push.as_bytes(), None);
        Publication {
            push,
            json_frame,
            binary_frame,
        }
    }

    pub fn channel(&self) -> &str {
        self.push.envelope().channel.as_str()
    }

    /// The stream offset; 0 for a live-only publication.
    pub fn offset(&self) -> u64 {
        self.push.envelope().offset.to_native()
    }
}
