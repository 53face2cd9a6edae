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
//!
//! The same holds for the permessage-deflate variants: one compressed frame
//! per format and server window size, built once and shared by every
//! recipient that agreed to that window. This works because every
//! connection agreed to `server_no_context_takeover`: a compressed message
//! depends on nothing sent before it.

use std::sync::Arc;

use bytes::Bytes;
use once_cell::race::OnceBox;
use ringcast_protocol::deflate::{compress_frame, WINDOW_BITS_MIN, WINDOW_SIZES};
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
    /// The compressed frames, allocated when the first recipient with
    /// permessage-deflate needs one: 8 bytes on a publication nobody
    /// receives compressed.
    deflated: OnceBox<Deflated>,
    /// A DM entry: the two users whose connections get it (`shard/im.rs`).
    dm: Option<Arc<crate::im::DmPair>>,
    /// A group entry: the users whose connections get it.
    group: Option<Arc<crate::im::GroupRecipients>>,
}

/// Compressed frames of one publication, per format and window size
/// (`WINDOW_BITS_MIN..=WINDOW_BITS_MAX`). A cell holds the plain frame
/// when compressing did not make it smaller.
#[derive(Debug, Default)]
struct Deflated {
    json: [OnceBox<Bytes>; WINDOW_SIZES],
    binary: [OnceBox<Bytes>; WINDOW_SIZES],
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
            deflated: OnceBox::new(),
            dm: None,
            group: None,
        }
    }

    /// A DM entry, routed to every connection of `pair`'s users.
    pub fn for_dm(push: Arc<EncodedPush>, pair: Arc<crate::im::DmPair>) -> Publication {
        Publication {
            dm: Some(pair),
            ..Publication::from_push(push)
        }
    }

    /// A group entry, routed to every connection of its recipients.
    pub fn for_group(
        push: Arc<EncodedPush>,
        recipients: Arc<crate::im::GroupRecipients>,
    ) -> Publication {
        Publication {
            group: Some(recipients),
            ..Publication::from_push(push)
        }
    }

    /// The recipients of a group entry.
    pub fn group(&self) -> Option<&Arc<crate::im::GroupRecipients>> {
        self.group.as_ref()
    }

    /// The users of a DM entry.
    pub fn dm(&self) -> Option<&Arc<crate::im::DmPair>> {
        self.dm.as_ref()
    }

    /// The frame for one recipient: its format, and compressed with
    /// `window_bits` when that connection negotiated permessage-deflate
    /// (`Some`) and the frame is at least `min_bytes` long.
    pub fn frame_for(&self, binary: bool, window_bits: Option<u8>, min_bytes: usize) -> &Bytes {
        let plain = if binary {
            self.binary_frame()
        } else {
            self.json_frame()
        };
        match window_bits {
            Some(bits) if plain.len() >= min_bytes => self.deflated_frame(binary, bits),
            _ => plain,
        }
    }

    /// The compressed frame for `window_bits`, built on first use (or the
    /// plain frame, when deflate would not shrink it).
    fn deflated_frame(&self, binary: bool, window_bits: u8) -> &Bytes {
        let deflated = self.deflated.get_or_init(Box::default);
        let cells = if binary {
            &deflated.binary
        } else {
            &deflated.json
        };
        let index = usize::from(window_bits.saturating_sub(WINDOW_BITS_MIN));
        let Some(cell) = cells.get(index) else {
            unreachable!("window bits {window_bits} were negotiated out of range");
        };
        cell.get_or_init(|| {
            let (opcode, plain) = if binary {
                (OpCode::Binary, self.binary_frame())
            } else {
                (OpCode::Text, self.json_frame())
            };
            let payload = plain.get(frame_header_len(plain)..).unwrap_or_default();
            Box::new(compress_frame(opcode, payload, window_bits).unwrap_or_else(|| plain.clone()))
        })
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

    /// The message id (a conversation entry's is its sender's: how an
    /// `echo: false` sender knows its own message's push).
    pub fn message_id(&self) -> u64 {
        self.push.envelope().id.to_native()
    }

    /// The stream offset; 0 for a live-only publication.
    pub fn offset(&self) -> u64 {
        self.push.envelope().offset.to_native()
    }
}

/// The header length of an unmasked frame built by `encode_frame`.
fn frame_header_len(frame: &[u8]) -> usize {
    match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
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

    #[test]
    fn deflated_frames_are_built_once_per_window_and_shared() {
        let mut big = envelope();
        big.data = format!(
            "[{}]",
            r#"{"user":"ann","text":"hello, room"},"#.repeat(20) + "{}"
        )
        .into_bytes();
        let publication = Publication::new(&big);
        let plain = publication.json_frame().clone();
        let compressed = publication.frame_for(false, Some(15), 0).clone();
        assert_eq!(compressed[0], 0xC1, "FIN + RSV1 + text");
        assert!(
            compressed.len() < plain.len() / 2,
            "{} of {}",
            compressed.len(),
            plain.len()
        );
        // Every recipient on the same window gets the same allocation.
        assert_eq!(
            publication.frame_for(false, Some(15), 0).as_ptr(),
            compressed.as_ptr()
        );
        // Another window is another frame; binary is its own too.
        let windowed = publication.frame_for(false, Some(10), 0).clone();
        assert_ne!(windowed.as_ptr(), compressed.as_ptr());
        assert_eq!(publication.frame_for(true, Some(15), 0)[0], 0xC2);
        // Under the threshold, or without deflate: the plain frame.
        assert_eq!(
            publication
                .frame_for(false, Some(15), plain.len() + 1)
                .as_ptr(),
            plain.as_ptr()
        );
        assert_eq!(
            publication.frame_for(false, None, 0).as_ptr(),
            plain.as_ptr()
        );
        // It inflates back to the plain frame's payload.
        let mut inflater = ringcast_protocol::deflate::Inflater::new();
        let inflated = inflater
            .inflate(&compressed[frame_header_len(&compressed)..], true, 1 << 20)
            .expect("inflates")
            .to_vec();
        assert_eq!(inflated, plain[frame_header_len(&plain)..]);
    }
}
