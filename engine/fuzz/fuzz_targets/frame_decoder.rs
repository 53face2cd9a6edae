//! RFC 6455 frames from a client: the decoder must return frames, ask for
//! more, or refuse with a close code, never panic; every frame it returns
//! lies within the input, and what it consumes adds up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_protocol::frame::{Decoder, Limits, Role};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        frame_bytes_max: 4096,
        message_bytes_max: 16 * 1024,
    };
    let mut buf = data.to_vec();
    let mut decoder = Decoder::new();
    let mut start = 0;
    while start < buf.len() {
        match decoder.decode(&mut buf[start..], Role::Server, &limits) {
            Ok(Some(decoded)) => {
                assert!(decoded.consumed > 0, "a frame consumes bytes");
                start += decoded.consumed;
                assert!(start <= data.len());
            }
            Ok(None) | Err(_) => break,
        }
    }
});
