//! Webhook signatures, as the Standard Webhooks spec (standardwebhooks.com)
//! defines them, so an app can verify with that project's library in its
//! own language or with ten lines of HMAC code:
//!
//! - `webhook-id`: the event id (stable across retries and replays);
//! - `webhook-timestamp`: unix seconds of this attempt;
//! - `webhook-signature`: `v1,` then base64 of
//!   HMAC-SHA256(key, `"{id}.{timestamp}.{body}"`).
//!
//! The key: a secret written `whsec_<base64>` (the spec's form, what its
//! libraries take) is the decoded bytes; any other secret is its UTF-8 bytes.

use base64::Engine as _;
use ring::hmac;

/// The prefix of a secret given in the spec's base64 form.
pub const SECRET_PREFIX: &str = "whsec_";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("a secret starting with whsec_ must continue in base64: {0}")]
    Base64(String),
    #[error("the secret is empty")]
    Empty,
}

/// The signing key of a configured secret.
pub struct Signer {
    key: hmac::Key,
}

impl Signer {
    pub fn new(secret: &str) -> Result<Signer, SecretError> {
        let bytes = match secret.strip_prefix(SECRET_PREFIX) {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|err| SecretError::Base64(err.to_string()))?,
            None => secret.as_bytes().to_vec(),
        };
        if bytes.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        })
    }

    /// The `webhook-signature` header value for one attempt.
    pub fn signature(&self, id: &str, timestamp_s: u64, body: &[u8]) -> String {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(id.as_bytes());
        context.update(b".");
        context.update(timestamp_s.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        let tag = context.sign();
        let mut header = String::with_capacity(48);
        header.push_str("v1,");
        base64::engine::general_purpose::STANDARD.encode_string(tag.as_ref(), &mut header);
        header
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_example() {
        // The test vector of the Standard Webhooks reference libraries
        // (python/tests: secret, msg_id, timestamp, payload, signature).
        let signer = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        assert_eq!(
            signer.signature(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_plain_secret_is_its_bytes() {
        let plain = Signer::new("abc").expect("secret");
        let b64 = Signer::new("whsec_YWJj").expect("secret");
        assert_eq!(plain.signature("1", 2, b"{}"), b64.signature("1", 2, b"{}"));
        assert!(matches!(
            Signer::new("whsec_not base64!"),
            Err(SecretError::Base64(_))
        ));
        assert!(matches!(Signer::new(""), Err(SecretError::Empty)));
    }
}
