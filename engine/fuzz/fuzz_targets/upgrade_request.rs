//! The HTTP upgrade request: parsed, refused with a status, or reported
//! incomplete, never a panic; a parsed request never claims more bytes than
//! it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_protocol::handshake::{parse_upgrade, HandshakeLimits};

fuzz_target!(|data: &[u8]| {
    let limits = HandshakeLimits {
        header_bytes_max: 8192,
        headers_count_max: 64,
    };
    if let Ok(Some((_request, consumed))) = parse_upgrade(data, &limits) {
        assert!(consumed <= data.len());
    }
});
