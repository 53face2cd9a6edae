//! RFC 6455 frames from a client: the decoder must return frames, ask for
//! more, or refuse with a close code, never panic; every frame it returns
//! lies within the input, and what it consumes adds up. When the first byte
//! is odd the connection has permessage-deflate: compressed messages are
//! inflated, which must stop at the message limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_protocol::deflate::Inflater;
use ringcast_protocol::frame::{Decoder, Limits, Role};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        frame_bytes_max: 4096,
        message_bytes_max: 16 * 1024,
    };
    let deflate = data.first().is_some_and(|b| b & 1 == 1);
    let mut buf = data.to_vec();
    let mut decoder = Decoder::new();
    let mut inflater = Inflater::new();
    let mut start = 0;
    while start < buf.len() {
        match decoder.decode_with(&mut buf[start..], Role::Server, &limits, deflate) {
            Ok(Some(decoded)) => {
                assert!(decoded.consumed > 0, "a frame consumes bytes");
                assert!(deflate || !decoded.compressed);
                start += decoded.consumed;
                assert!(start <= data.len());
                if let (true, Some(message)) = (decoded.compressed, decoded.message) {
                    if let Ok(inflated) =
                        inflater.inflate_message(message, limits.message_bytes_max)
                    {
                        let len = match inflated {
                            ringcast_protocol::frame::Message::Text(b)
                            | ringcast_protocol::frame::Message::Binary(b) => b.len(),
                            _ => 0,
                        };
                        assert!(len <= limits.message_bytes_max);
                    }
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
});
