//! A client command in JSON: decoded or refused with an error, never a
//! panic; a decoded command's id is positive (the protocol's rule).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_protocol::client::decode_json;

fuzz_target!(|data: &[u8]| {
    if let Ok(command) = decode_json(data) {
        assert!(command.id > 0);
    }
});
