//! The rkyv forms from the network and the disk: a binary command, and a
//! stored publication read back. Every byte is validated (rkyv's checked
//! access); nothing may panic, and an accepted publication reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_protocol::client::decode_binary;
use ringcast_protocol::envelope::EncodedPush;

fuzz_target!(|data: &[u8]| {
    if let Ok(command) = decode_binary(data) {
        assert!(command.id > 0);
    }
    if let Ok(push) = EncodedPush::from_untrusted(data) {
        // The unchecked access behind `envelope` is sound only on bytes
        // that passed the check: read every field.
        let envelope = push.envelope();
        let _ = (
            envelope.channel.len(),
            envelope.sender.len(),
            envelope.data.len(),
        );
    }
});
