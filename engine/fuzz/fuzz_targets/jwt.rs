//! Connection and subscription tokens: any string is verified or refused,
//! never a panic, and nothing unsigned by the secret is ever accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_engine::auth::Authenticator;

fuzz_target!(|data: &[u8]| {
    let auth = Authenticator::new(b"fuzz-secret-fuzz-secret-fuzz-secret!", 5);
    let token = String::from_utf8_lossy(data);
    assert!(
        auth.verify(&token).is_err(),
        "a token not signed with the secret was accepted"
    );
    assert!(
        auth.verify_subscription(&token).is_err(),
        "a subscription token not signed with the secret was accepted"
    );
});
