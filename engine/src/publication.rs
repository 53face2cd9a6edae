//! A publication as it crosses shards: the rkyv envelope, encoded once, and
//! the two WebSocket frames built from it once.
//!
//! Every recipient's outbound queue holds a clone of one of these `Bytes`
//! (a reference-count increment), so the payload exists once per publication
//! however many connections receive it.

use bytes::Bytes;
use ringcast_protocol::envelope::{encode_push_json, EncodedPush, Envelope};
use ringcast_protocol::frame::{encode_frame, OpCode};

#[derive(Debug)]
pub struct Publication {
    /// The canonical encoding: an archived `ServerMessage::Push`.
    pub push: EncodedPush,
    /// Text frame for clients on the JSON subprotocol.
    pub json_frame: Bytes,
    /// Binary frame for clients on the rkyv subprotocol; its payload is
    /// `push`'s bytes as they are.
    pub binary_frame: Bytes,
}

impl Publication {
    pub fn new(envelope: &Envelope) -> Publication {
        let push = EncodedPush::encode(envelope);
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
}
