//! What the store reads back from disk: entry, dedup and cursor keys and
//! records, and stream metas. None may panic, and whatever decodes must
//! encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringcast_store::fuzzing::decode_records(data);
});
