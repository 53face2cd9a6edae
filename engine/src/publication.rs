//! A publication as it crosses shards: the rkyv envelope, encoded once, and
//! the two WebSocket frames built from it at most once each, by the first
//! shard that sends one.
//!
//! Every recipient's outbound queue holds a clone of one of these `Bytes`
//! (a reference-count increment), so the payload exists once per publication
//! however many connections receive it. The frames are built lazily so that
//! the thread that creates a publication (for stored streams, the store's
//! writer) does not pay for them: a shard that delivers builds what its
//! subscribers need, and a frame no subscriber needs is never built.

use std::sync::Arc;

use bytes::Bytes;
use once_cell::race::OnceBox;
use ringcast_protocol::envelope::{encode_push_json, EncodedPush, Envelope};
use ringcast_protocol::frame::{encode_frame, OpCode};

#[derive(Debug)]
pub struct Publication {
    /// The canonical encoding: an archived `ServerMessage::Push`, shared with
    /// the store when the channel is durable.
    pub push: Arc<EncodedPush>,
    /// Text frame for clients on the JSON subprotocol. A race-once cell
    /// (lock-free): two shards building it at the same moment both build,
    /// the first stored wins and the other's copy is dropped.
    json_frame: OnceBox<Bytes>,
    /// Binary frame for clients on the rkyv subprotocol; its payload is
    /// `push`'s bytes as they are.
    binary_frame: OnceBox<Bytes>,
}

impl Publication {
    pub fn new(envelope: &Envelope) -> Publication {
        Publication::from_push(Arc::new(EncodedPush::encode(envelope)))
    }

    /// A publication for an envelope that is already archived (by the
    /// store, with its offset and epoch filled in). Builds no frame yet.
    pub fn from_push(push: Arc<EncodedPush>) -> Publication {
        Publication {
            push,
            json_frame: OnceBox::new(),
            binary_frame: OnceBox::new(),
        }
    }

    /// The text frame, built on first use.
    pub fn json_frame(&self) -> &Bytes {
        self.json_frame.get_or_init(|| {
            let json = encode_push_json(self.push.envelope());
            Box::new(encode_frame(OpCode::Text, &json, None))
        })
    }

    /// The binary frame, built on first use.
    pub fn binary_frame(&self) -> &Bytes {
        self.binary_frame
            .get_or_init(|| Box::new(encode_frame(OpCode::Binary, self.push.as_bytes(), None)))
    }

    pub fn channel(&self) -> &str {
        self.push.envelope().channel.as_str()
    }

    /// The stream offset; 0 for a live-only publication.
    pub fn offset(&self) -> u64 {
        self.push.envelope().offset.to_native()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            id: 7,
            offset: 3,
            epoch: 2,
            channel: "news".to_owned(),
            sender: "bob".to_owned(),
            time_ms: 1_700_000_000_000,
            data_is_json: true,
            data: br#"{"a":1}"#.to_vec(),
        }
    }

    #[test]
    fn frames_carry_the_push_and_are_built_once() {
        let publication = Publication::new(&envelope());
        let json = encode_push_json(publication.push.envelope());
        let text = publication.json_frame().clone();
        assert_eq!(text[0], 0x81, "FIN + text");
        assert!(text.ends_with(&json));
        let binary = publication.binary_frame().clone();
        assert_eq!(binary[0], 0x82, "FIN + binary");
        assert!(binary.ends_with(publication.push.as_bytes()));
        // Later calls hand out the same allocation, not a second build.
        assert_eq!(publication.json_frame().as_ptr(), text.as_ptr());
        assert_eq!(publication.binary_frame().as_ptr(), binary.as_ptr());
    }
}
