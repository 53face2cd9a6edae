//! Connection and subscription tokens: HS256 JWTs signed by the app
//! backend with the one configured secret, checked by one path
//! ([`Authenticator::decode`]) so both kinds get the same rules.
//!
//! A subscription token carries a `channel` claim and a connection token
//! must not: without that rule a subscription token, which a backend hands
//! out per channel, would also open connections as its user.
//!
//! The algorithm is fixed here, never read from the token header, so a token
//! claiming `alg: none` or an asymmetric algorithm is refused. `exp` is
//! required and `nbf`, when present, is checked, both with the configured
//! leeway; a header with `crit` is refused (RFC 7515 §4.1.11: Ringcast
//! understands no JWS extension).

use jsonwebtoken::{decode, errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;

/// The claims of a connection token that Ringcast reads; others are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, unix seconds.
    pub exp: u64,
    /// Free-form user info the app attaches (shown in presence).
    #[serde(default)]
    pub info: Option<serde_json::Value>,
    /// Channel patterns this user may subscribe to on namespaces with
    /// `subscribe = "token"` (grammar: [`crate::channels::grant_matches`]).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Channels the server subscribes every connection of this token to at
    /// connect (server-side subscriptions).
    #[serde(default)]
    pub subs: Vec<String>,
    /// Only read to refuse it: see the module doc.
    #[serde(default)]
    channel: Option<IgnoredAny>,
}

/// The claims of a subscription token: the backend's grant of one channel
/// to one user until `exp`.
#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionClaims {
    pub sub: String,
    pub exp: u64,
    pub channel: String,
    /// Free-form info the app attaches to this subscription; accepted and
    /// not used yet.
    #[serde(default)]
    pub info: Option<serde_json::Value>,
}

/// What both token kinds have, for the checks [`Authenticator::decode`]
/// makes on either.
trait TokenClaims: DeserializeOwned {
    fn sub(&self) -> &str;
    /// Why these claims are the wrong kind of token, if they are.
    fn wrong_kind(&self) -> Option<&'static str>;
}

impl TokenClaims for Claims {
    fn sub(&self) -> &str {
        &self.sub
    }

    fn wrong_kind(&self) -> Option<&'static str> {
        self.channel.as_ref().map(|_| {
            "this is a subscription token (it has a `channel` claim): it cannot open a connection"
        })
    }
}

impl TokenClaims for SubscriptionClaims {
    fn sub(&self) -> &str {
        &self.sub
    }

    fn wrong_kind(&self) -> Option<&'static str> {
        None
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    #[error("token missing: pass ?token=<JWT> or an `Authorization: Bearer` header")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet: its `nbf` is in the future")]
    NotYetValid,
    #[error("token invalid: {0}")]
    Invalid(String),
}

impl AuthError {
    /// Stable code for the JSON body of the 401.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::Invalid(_) => "token_invalid",
        }
    }
}

pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl Authenticator {
    /// `secret` must be at least 32 bytes; config validation guarantees it.
    pub fn new(secret: &[u8], leeway_s: u64) -> Authenticator {
        assert!(secret.len() >= 32, "jwt secret shorter than 32 bytes");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway_s;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Authenticator {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// A connection token.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.decode(token)
    }

    /// A subscription token (`channel` is required). Whether it is for the
    /// channel and user at hand is the caller's check.
    pub fn verify_subscription(&self, token: &str) -> Result<SubscriptionClaims, AuthError> {
        self.decode(token)
    }

    /// The one validation path of both kinds: fixed algorithm, `exp`
    /// required, `nbf` checked, both with the leeway, `crit` refused, a
    /// non-empty `sub`.
    fn decode<T: TokenClaims>(&self, token: &str) -> Result<T, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        refuse_critical_extensions(token)?;
        match decode::<T>(token, &self.key, &self.validation) {
            Ok(data) if data.claims.sub().is_empty() => {
                Err(AuthError::Invalid("empty `sub` claim".into()))
            }
            Ok(data) => match data.claims.wrong_kind() {
                Some(why) => Err(AuthError::Invalid(why.into())),
                None => Ok(data.claims),
            },
            Err(err) => match err.kind() {
                ErrorKind::ExpiredSignature => Err(AuthError::Expired),
                ErrorKind::ImmatureSignature => Err(AuthError::NotYetValid),
                other => Err(AuthError::Invalid(format!("{other:?}"))),
            },
        }
    }
}

/// RFC 7515 §4.1.11: a JWS whose `crit` header lists extensions the
/// recipient does not understand must be rejected. Ringcast understands
/// none, so any `crit` is refused. (jsonwebtoken's `Header` has no `crit`
/// field and would ignore it.) A header that does not decode is left to
/// `decode`, which refuses it with its own reason.
fn refuse_critical_extensions(token: &str) -> Result<(), AuthError> {
    use base64::Engine;
    #[derive(Deserialize)]
    struct Critical {
        crit: Option<serde::de::IgnoredAny>,
    }
    let Some(header) = token.split('.').next() else {
        return Ok(());
    };
    let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        return Ok(());
    };
    match serde_json::from_slice::<Critical>(&json) {
        Ok(Critical { crit: Some(_) }) => Err(AuthError::Invalid(
            "the header's `crit` lists extensions this server does not understand".into(),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn token(alg: Algorithm, secret: &[u8], claims: serde_json::Value) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn accepts_good_and_refuses_bad_tokens() {
        let auth = Authenticator::new(SECRET, 0);
        let good = token(
            Algorithm::HS256,
            SECRET,
            serde_json::json!({"sub": "alice", "exp": now() + 60, "info": {"name": "A"}}),
        );
        let claims = auth.verify(&good).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.info.unwrap()["name"], "A");

        let expired = token(
            Algorithm::HS256,
            SECRET,
            serde_json::json!({"sub": "alice", "exp": now() - 60}),
        );
        assert_eq!(auth.verify(&expired).unwrap_err(), AuthError::Expired);

        let wrong_key = token(
            Algorithm::HS256,
            b"another-secret-another-secret-!!",
            serde_json::json!({"sub": "a", "exp": now() + 60}),
        );
        assert!(matches!(
            auth.verify(&wrong_key),
            Err(AuthError::Invalid(_))
        ));

        // Same secret, different algorithm: the config fixes HS256.
        let hs512 = token(
            Algorithm::HS512,
            SECRET,
            serde_json::json!({"sub": "a", "exp": now() + 60}),
        );
        assert!(matches!(auth.verify(&hs512), Err(AuthError::Invalid(_))));

        let no_exp = token(Algorithm::HS256, SECRET, serde_json::json!({"sub": "a"}));
        assert!(matches!(auth.verify(&no_exp), Err(AuthError::Invalid(_))));

        assert_eq!(auth.verify("").unwrap_err(), AuthError::Missing);
        assert!(matches!(
            auth.verify("not.a.jwt"),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn nbf_in_the_future_is_refused_within_leeway_accepted() {
        let auth = Authenticator::new(SECRET, 5);
        let early = token(
            Algorithm::HS256,
            SECRET,
            serde_json::json!({"sub": "a", "exp": now() + 7200, "nbf": now() + 3600}),
        );
        assert_eq!(auth.verify(&early).unwrap_err(), AuthError::NotYetValid);
        assert_eq!(AuthError::NotYetValid.code(), "token_not_yet_valid");
        // Within the leeway (clock skew) and in the past: fine.
        for nbf in [now() + 3, now() - 60] {
            let ok = token(
                Algorithm::HS256,
                SECRET,
                serde_json::json!({"sub": "a", "exp": now() + 60, "nbf": nbf}),
            );
            assert_eq!(auth.verify(&ok).unwrap().sub, "a");
        }
    }

    #[test]
    fn a_crit_header_is_refused_even_when_signed() {
        let mut header = Header::new(Algorithm::HS256);
        // jsonwebtoken's Header has no `crit`: sign a hand-made header.
        header.typ = Some("JWT".into());
        let signed_with_crit = {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let head = b64.encode(br#"{"alg":"HS256","typ":"JWT","crit":["exp-ext"],"exp-ext":1}"#);
            let claims = b64.encode(format!(r#"{{"sub":"a","exp":{}}}"#, now() + 60));
            let message = format!("{head}.{claims}");
            let signature = jsonwebtoken::crypto::sign(
                message.as_bytes(),
                &EncodingKey::from_secret(SECRET),
                Algorithm::HS256,
            )
            .unwrap();
            format!("{message}.{signature}")
        };
        let auth = Authenticator::new(SECRET, 0);
        let err = auth.verify(&signed_with_crit).unwrap_err();
        assert!(
            matches!(&err, AuthError::Invalid(why) if why.contains("crit")),
            "{err}"
        );
        // The same token without `crit` is fine: the refusal is about `crit`.
        let plain = encode(
            &header,
            &serde_json::json!({"sub": "a", "exp": now() + 60}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(auth.verify(&plain).unwrap().sub, "a");
    }

    #[test]
    fn subscription_tokens_share_the_rules_and_are_not_connection_tokens() {
        let auth = Authenticator::new(SECRET, 0);
        let sub_token = token(
            Algorithm::HS256,
            SECRET,
            serde_json::json!({"sub": "a", "exp": now() + 60, "channel": "chat:g1"}),
        );
        let claims = auth.verify_subscription(&sub_token).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.channel.as_str()),
            ("a", "chat:g1")
        );
        let err = auth.verify(&sub_token).unwrap_err();
        assert!(
            matches!(&err, AuthError::Invalid(why) if why.contains("subscription token")),
            "{err}"
        );
        // A connection token has no `channel`: not a subscription token.
        let conn_token = token(
            Algorithm::HS256,
            SECRET,
            serde_json::json!({"sub": "a", "exp": now() + 60, "channels": ["chat:*"], "subs": ["news:x"]}),
        );
        assert!(matches!(
            auth.verify_subscription(&conn_token),
            Err(AuthError::Invalid(_))
        ));
        let claims = auth.verify(&conn_token).unwrap();
        assert_eq!(
            (claims.channels, claims.subs),
            (vec!["chat:*".to_string()], vec!["news:x".to_string()])
        );
        // The same path: expiry and nbf as for connection tokens.
        let expired = token(
            Algorithm::HS256,
            SECRET,
            serde_json::json!({"sub": "a", "exp": now() - 60, "channel": "chat:g1"}),
        );
        assert_eq!(
            auth.verify_subscription(&expired).unwrap_err(),
            AuthError::Expired
        );
        let early = token(
            Algorithm::HS256,
            SECRET,
            serde_json::json!({"sub": "a", "exp": now() + 60, "nbf": now() + 600, "channel": "c"}),
        );
        assert_eq!(
            auth.verify_subscription(&early).unwrap_err(),
            AuthError::NotYetValid
        );
    }

    #[test]
    fn docs_integration_examples_mint_tokens_that_verify() {
        // Minted by both examples of docs/integration.md ("Permissions"),
        // the Python one and the Node one, which give the same bytes:
        // alice, chat:g1, exp 4102444800 (2100-01-01).
        let minted = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
            eyJzdWIiOiJhbGljZSIsImNoYW5uZWwiOiJjaGF0OmcxIiwiZXhwIjo0MTAyNDQ0ODAwfQ.\
            nlItZbGhWFF_1aljqH0Jylt2bxVAk4VKxMgH8gUj-mw";
        let claims = Authenticator::new(SECRET, 0)
            .verify_subscription(minted)
            .unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.channel.as_str(), claims.exp),
            ("alice", "chat:g1", 4_102_444_800)
        );
    }

    #[test]
    fn unsigned_alg_none_token_is_refused() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = b64.encode(format!(r#"{{"sub":"mallory","exp":{}}}"#, now() + 60));
        let forged = format!("{header}.{claims}.");
        let auth = Authenticator::new(SECRET, 0);
        assert!(matches!(auth.verify(&forged), Err(AuthError::Invalid(_))));
    }
}
