//! The HTTP upgrade request: parsed, refused with a status, or reported
//! incomplete, never a panic; a parsed request never claims more bytes than
//! it was given. Its `Sec-WebSocket-Extensions` offers go through the
//! permessage-deflate negotiation, which accepts or declines, never panics,
//! and agrees only to window sizes it can compress with.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_protocol::deflate::{negotiate, WINDOW_BITS_MAX, WINDOW_BITS_MIN};
use ringcast_protocol::handshake::{parse_upgrade, HandshakeLimits};

fuzz_target!(|data: &[u8]| {
    let limits = HandshakeLimits {
        header_bytes_max: 8192,
        headers_count_max: 64,
    };
    if let Ok(Some((request, consumed))) = parse_upgrade(data, &limits) {
        assert!(consumed <= data.len());
        if let Some(agreed) = negotiate(&request.extensions) {
            assert!((WINDOW_BITS_MIN..=WINDOW_BITS_MAX).contains(&agreed.server_window_bits));
            assert!(!agreed.response_value().contains(['\r', '\n']));
        }
    }
});
