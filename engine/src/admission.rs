//! Connection policy, in one place: whether an upgrade request is let in,
//! and as whom. Path, origin, subprotocol, compression, token, device id,
//! the inbox position to recover from, and capacity are decided here from the
//! request and the config alone; the shard only carries the answer out.

use std::rc::Rc;

use ringcast_protocol::client::{StreamPosition, SUBPROTOCOL_BINARY, SUBPROTOCOL_JSON};
use ringcast_protocol::deflate;
use ringcast_protocol::handshake::{http_error_response, response_101, UpgradeRequest};

use crate::auth::{AuthError, Authenticator};
use crate::config::{Config, ConnectProxyMode};
use crate::proxy::Overrides;

/// Longest `?device=` id.
pub const DEVICE_ID_BYTES_MAX: usize = 64;

/// Longest `info` a connect proxy may attach to a connection (raw JSON):
/// it is kept for the connection's life and copied into presence answers.
pub const CONNECT_INFO_BYTES_MAX: usize = 4096;

/// An accepted upgrade: who connected and how.
#[derive(Debug)]
pub struct Admitted {
    pub user: Rc<str>,
    /// The token's `channels` claim, checked (`channels::check_grant`).
    pub grants: Box<[Box<str>]>,
    /// The token's `subs` claim: channels to join at connect, checked
    /// (`channels::check_server_subscription`).
    pub subs: Vec<String>,
    /// `?device=` from the connect URL, if given.
    pub device: Option<Rc<str>>,
    /// `?since=<offset>[&epoch=<epoch>]`: the inbox position to recover from.
    pub inbox_since: Option<StreamPosition>,
    /// `?im_since=<token>`: the IM sync token of the device's last sync.
    pub im_since: Option<ringcast_protocol::client::SyncToken>,
    /// `?device_start=oldest`: a device with no stored cursor replays the
    /// inbox from its oldest retained publication instead of starting live.
    pub device_from_oldest: bool,
    pub binary: bool,
    /// The server window agreed for permessage-deflate, if the client
    /// offered it and `websocket.compression` is on.
    pub deflate: Option<u8>,
    pub expires_at_ms: u64,
    /// JSON the connect proxy attached to the connection, validated once
    /// here: presence answers copy it as it is.
    pub info: Option<Box<serde_json::value::RawValue>>,
    /// The token's subject, when the connect proxy renamed the user: a
    /// client `refresh` may still name it.
    pub token_user: Option<Rc<str>>,
    /// The 101 response to send.
    pub response: Vec<u8>,
}

impl Admitted {
    /// Whether the inbox is replayed at connect: a position was given, or a
    /// device whose stored cursor says where it stopped.
    pub fn recovers_inbox(&self) -> bool {
        !self.user.is_empty() && (self.inbox_since.is_some() || self.device.is_some())
    }
}

/// Why an upgrade was refused, for metrics; the response says it to the
/// client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    Auth,
    Other,
}

#[derive(Debug)]
pub struct Refusal {
    pub kind: RefusalKind,
    /// The full HTTP response to send.
    pub response: Vec<u8>,
}

fn refuse(status: u16, code: &str, message: &str) -> Refusal {
    Refusal {
        kind: RefusalKind::Other,
        response: http_error_response(status, code, message, &[]),
    }
}

/// Decides on a parsed upgrade. `n_open` is the shard's count of open
/// connections.
pub fn admit(
    config: &Config,
    auth: &Authenticator,
    request: &UpgradeRequest,
    n_open: usize,
) -> Result<Admitted, Refusal> {
    let ws = &config.websocket;
    if request.path != ws.path {
        return Err(refuse(
            404,
            "not_found",
            &format!("WebSocket endpoint is {}", ws.path),
        ));
    }
    if !ws.allowed_origins.is_empty() {
        // One rule, the config's: an ASCII case-insensitive match.
        let allowed = request
            .origin
            .as_deref()
            .is_some_and(|origin| ws.origin_allowed(origin));
        if !allowed {
            return Err(refuse(
                403,
                "origin_not_allowed",
                "Origin is not in websocket.allowed_origins",
            ));
        }
    }
    let (binary, protocol) = negotiate(&request.protocols).ok_or_else(|| {
        refuse(
            400,
            "unsupported_subprotocol",
            &format!(
                "offer {SUBPROTOCOL_JSON} or {SUBPROTOCOL_BINARY}, or no subprotocol for JSON"
            ),
        )
    })?;
    let token = request.query_param("token").or_else(|| {
        request
            .authorization
            .as_deref()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string())
    });
    let replace_token =
        ws.connect_proxy_mode == ConnectProxyMode::ReplaceToken && !ws.connect_proxy.is_empty();
    let (user, expires_at_ms, grants, subs) = match token {
        // The connect proxy names the user (`apply_overrides`).
        _ if replace_token => ("".into(), 0, Box::default(), Vec::new()),
        None if config.auth.allow_anonymous => ("".into(), 0, Box::default(), Vec::new()),
        token => match auth.verify(token.as_deref().unwrap_or("")) {
            Ok(claims) if crate::channels::validate_user_id(&claims.sub).is_err() => {
                return Err(auth_refusal(&AuthError::Invalid(format!(
                    "`sub` must be 1 to {} bytes without spaces or control characters",
                    crate::channels::USER_ID_BYTES_MAX
                ))));
            }
            Ok(mut claims) => {
                dedup_in_order(&mut claims.subs);
                check_permission_claims(config, &claims)
                    .map_err(|why| auth_refusal(&AuthError::Invalid(why)))?;
                let grants = claims.channels.into_iter().map(Box::from).collect();
                let user: Rc<str> = claims.sub.as_str().into();
                (user, claims.exp.saturating_mul(1000), grants, claims.subs)
            }
            Err(err) => return Err(auth_refusal(&err)),
        },
    };
    let device = match request.query_param("device") {
        None => None,
        Some(device) if valid_device_id(&device) => Some(Rc::from(device.as_str())),
        Some(_) => {
            return Err(refuse(
                400,
                "invalid_device",
                "device must be 1 to 64 printable ASCII characters",
            ))
        }
    };
    let device_from_oldest = match request.query_param("device_start").as_deref() {
        None | Some("live") => false,
        Some("oldest") => true,
        Some(_) => {
            return Err(refuse(
                400,
                "invalid_device",
                "device_start must be oldest or live",
            ))
        }
    };
    let inbox_since = match (request.query_param("since"), request.query_param("epoch")) {
        (None, None) => None,
        (Some(offset), epoch) => {
            let offset = offset.parse::<u64>().ok();
            let epoch = epoch.map_or(Some(0), |e| e.parse::<u64>().ok());
            match (offset, epoch) {
                (Some(offset), Some(epoch)) => Some(StreamPosition { offset, epoch }),
                _ => {
                    return Err(refuse(
                        400,
                        "invalid_since",
                        "since and epoch must be decimal u64 numbers",
                    ))
                }
            }
        }
        (None, Some(_)) => return Err(refuse(400, "invalid_since", "epoch needs since")),
    };
    let im_since = match request.query_param("im_since") {
        None => None,
        Some(token) => match ringcast_protocol::client::SyncToken::parse(&token) {
            Some(token) => Some(token),
            None => {
                return Err(refuse(
                    400,
                    "invalid_im_since",
                    "im_since must be a sync token (<store_id>.<gseq>, both decimal)",
                ))
            }
        },
    };
    if n_open >= ws.connections_max_per_shard as usize {
        return Err(Refusal {
            kind: RefusalKind::Other,
            response: http_error_response(
                503,
                "at_capacity",
                "connection limit reached; retry later",
                &[("Retry-After", "5")],
            ),
        });
    }
    // An offer we cannot accept is declined, never refused: the
    // connection goes on uncompressed (RFC 7692 §5).
    let agreed = if ws.compression {
        deflate::negotiate(&request.extensions)
    } else {
        None
    };
    let extensions = agreed.map(|agreed| agreed.response_value());
    Ok(Admitted {
        user,
        grants,
        subs,
        device,
        inbox_since,
        im_since,
        device_from_oldest,
        binary,
        deflate: agreed.map(|agreed| agreed.server_window_bits),
        expires_at_ms,
        info: None,
        token_user: None,
        response: response_101(&request.key, protocol, extensions.as_deref()),
    })
}

/// Applies what a connect proxy's `result` set to an upgrade `admit`
/// accepted. The backend is held to the token's rules: a user id, grants
/// and `subs` a token could not carry are refused whole (`Err` names the
/// field), as is no user at all in `replace_token` mode unless
/// `auth.allow_anonymous`.
pub fn apply_overrides(
    config: &Config,
    admitted: &mut Admitted,
    overrides: Option<&Overrides>,
) -> Result<(), String> {
    let ws = &config.websocket;
    let anonymous_ok =
        config.auth.allow_anonymous || ws.connect_proxy_mode == ConnectProxyMode::AfterToken;
    let named = !admitted.user.is_empty() || overrides.is_some_and(|o| o.user.is_some());
    if !named && !anonymous_ok {
        return Err("no `user`, and auth.allow_anonymous is off".into());
    }
    let Some(overrides) = overrides else {
        return Ok(());
    };
    // Everything is checked before anything is applied.
    if let Some(user) = &overrides.user {
        crate::channels::validate_user_id(user).map_err(|_| {
            format!(
                "`user` must be 1 to {} bytes without spaces or control characters",
                crate::channels::USER_ID_BYTES_MAX
            )
        })?;
    }
    let mut subs = admitted.subs.clone();
    subs.extend(overrides.subs.iter().cloned());
    dedup_in_order(&mut subs);
    let channels = overrides.channels.as_deref().unwrap_or_default();
    check_grants_and_subs(config, channels, &subs)?;
    let info = match &overrides.info {
        Some(info) if info.len() > CONNECT_INFO_BYTES_MAX => {
            return Err(format!(
                "`info` is {} bytes; at most {CONNECT_INFO_BYTES_MAX}",
                info.len()
            ));
        }
        Some(info) => Some(
            serde_json::value::RawValue::from_string(info.to_string())
                .map_err(|_| "`info` is not JSON".to_owned())?,
        ),
        None => None,
    };
    if let Some(user) = &overrides.user {
        if !admitted.user.is_empty() && *admitted.user != **user {
            admitted.token_user = Some(admitted.user.clone());
        }
        admitted.user = user.as_str().into();
    }
    if let Some(channels) = &overrides.channels {
        admitted.grants = channels.iter().map(|c| Box::from(c.as_str())).collect();
    }
    admitted.subs = subs;
    admitted.expires_at_ms = overridden_expiry(
        ws.connect_proxy_mode,
        admitted.expires_at_ms,
        overrides.expire_at,
    );
    admitted.info = info;
    Ok(())
}

/// A connection's expiry (Unix ms, 0 for never) once the connect proxy's
/// `expire_at` (Unix seconds) is applied to the token's. In `after_token`
/// mode the answer may shorten the token's life, never lengthen it (the
/// refresh proxy extends it): 0 or no `expire_at` keeps the token's. In
/// `replace_token` mode there is no token: `expire_at` is the expiry, 0
/// or none for never.
fn overridden_expiry(mode: ConnectProxyMode, token_ms: u64, expire_at: Option<u64>) -> u64 {
    let answer_ms = expire_at.unwrap_or(0).saturating_mul(1000);
    match mode {
        ConnectProxyMode::ReplaceToken => answer_ms,
        ConnectProxyMode::AfterToken if token_ms == 0 => answer_ms,
        ConnectProxyMode::AfterToken if answer_ms == 0 => token_ms,
        ConnectProxyMode::AfterToken => token_ms.min(answer_ms),
    }
}

/// Drops repeated entries, keeping the first of each: a channel listed
/// twice (by the token and the backend) is one subscription.
fn dedup_in_order(list: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    list.retain(|entry| seen.insert(entry.clone()));
}

/// The `channels` and `subs` claims as they must be; a token that breaks
/// them is refused whole, naming the entry, rather than half applied.
fn check_permission_claims(config: &Config, claims: &crate::auth::Claims) -> Result<(), String> {
    check_grants_and_subs(config, &claims.channels, &claims.subs)
}

/// Grants and connect-time subscriptions, from a token or a connect proxy.
fn check_grants_and_subs(
    config: &Config,
    grants: &[String],
    subs: &[String],
) -> Result<(), String> {
    for (index, grant) in grants.iter().enumerate() {
        crate::channels::check_grant(grant).map_err(|why| format!("`channels[{index}]`: {why}"))?;
    }
    let max = config.websocket.subscriptions_max_per_connection as usize;
    if subs.len() > max {
        return Err(format!(
            "`subs` lists {} channels; at most {max} subscriptions per connection",
            subs.len()
        ));
    }
    for (index, channel) in subs.iter().enumerate() {
        crate::channels::check_server_subscription(config, channel)
            .map_err(|why| format!("`subs[{index}]`: {why}"))?;
    }
    Ok(())
}

fn valid_device_id(device: &str) -> bool {
    !device.is_empty()
        && device.len() <= DEVICE_ID_BYTES_MAX
        && device.bytes().all(|b| b.is_ascii_graphic())
}

fn auth_refusal(err: &AuthError) -> Refusal {
    Refusal {
        kind: RefusalKind::Auth,
        response: http_error_response(
            401,
            err.code(),
            &err.to_string(),
            &[("WWW-Authenticate", "Bearer")],
        ),
    }
}

/// Picks the first offered subprotocol we speak. No offer means JSON.
/// `None` when only unknown subprotocols were offered.
fn negotiate(offered: &[String]) -> Option<(bool, Option<&'static str>)> {
    if offered.is_empty() {
        return Some((false, None));
    }
    offered.iter().find_map(|p| match p.as_str() {
        SUBPROTOCOL_JSON => Some((false, Some(SUBPROTOCOL_JSON))),
        SUBPROTOCOL_BINARY => Some((true, Some(SUBPROTOCOL_BINARY))),
        _ => None,
    })
}

/// The process's budget of connection sockets: `RLIMIT_NOFILE` minus
/// `server.fd_reserve`, shared by every shard. A connection holds one from
/// its accept (upgrade included) to its release, so however many sockets
/// clients open (upgrading or not), the reserve stays free for the store's
/// files, the API and the logs: running out of descriptors refuses new
/// connections instead of failing a durable write.
#[derive(Debug)]
pub struct FdBudget {
    max: usize,
    held: std::sync::atomic::AtomicUsize,
}

impl FdBudget {
    /// A budget of `max` connection sockets.
    pub fn new(max: usize) -> FdBudget {
        FdBudget {
            max,
            held: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The budget under `nofile` (the soft `RLIMIT_NOFILE`; `None`:
    /// unlimited) with `reserve` kept free; `None` when the reserve takes
    /// every descriptor.
    pub fn under_limit(nofile: Option<u64>, reserve: usize) -> Option<FdBudget> {
        let limit = nofile.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let max = limit.checked_sub(reserve).filter(|&max| max > 0)?;
        Some(FdBudget::new(max))
    }

    /// Takes one socket's worth; false when the budget is spent.
    pub fn try_take(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < self.max).then_some(held + 1)
            })
            .is_ok()
    }

    /// Gives back what `try_take` took.
    pub fn give_back(&self) {
        let before = self.held.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        debug_assert!(before > 0, "fd budget given back more than taken");
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod fd_budget_tests {
    use super::FdBudget;

    #[test]
    fn the_budget_is_the_limit_less_the_reserve_and_refuses_past_it() {
        let budget = FdBudget::under_limit(Some(20_000), 1024).unwrap();
        assert_eq!(budget.max(), 18_976);
        assert!(FdBudget::under_limit(Some(1000), 1000).is_none());
        assert_eq!(
            FdBudget::under_limit(None, 1024).unwrap().max(),
            usize::MAX - 1024
        );
        let small = FdBudget::new(2);
        assert!(small.try_take() && small.try_take());
        assert!(!small.try_take(), "a spent budget refuses");
        small.give_back();
        assert!(small.try_take(), "a socket given back can be taken again");
    }
}

/// Connections still in their upgrade on one shard, per source address:
/// one source (an attacker with no credentials needed, or a broken client
/// reconnecting in a loop) cannot hold more than its share of the upgrade
/// slots and of the fd budget. Upgraded connections are not counted: a NAT
/// can front many real users.
#[derive(Debug)]
pub struct Handshakes {
    per_source_max: u32,
    by_source: std::collections::HashMap<std::net::IpAddr, u32>,
    /// The source of each slot still upgrading.
    by_key: std::collections::HashMap<usize, std::net::IpAddr>,
}

impl Handshakes {
    /// `per_node_max` is `websocket.handshakes_per_source_max`; each of the
    /// `shards` enforces its share, rounded up (the kernel spreads a
    /// source's connections over the shards' listeners by their ports).
    pub fn new(per_node_max: u32, shards: u32) -> Handshakes {
        Handshakes {
            per_source_max: per_node_max.div_ceil(shards.max(1)),
            by_source: std::collections::HashMap::new(),
            by_key: std::collections::HashMap::new(),
        }
    }

    /// Whether one more upgrade from `source` fits (an unknown source always does).
    pub fn admit(&self, source: Option<std::net::IpAddr>) -> bool {
        source.is_none_or(|ip| self.by_source.get(&ip).copied().unwrap_or(0) < self.per_source_max)
    }

    /// The source address slot `key` is upgrading from, when known.
    pub fn source(&self, key: usize) -> Option<std::net::IpAddr> {
        self.by_key.get(&key).copied()
    }

    /// Slot `key` started its upgrade from `source`.
    pub fn started(&mut self, key: usize, source: Option<std::net::IpAddr>) {
        if let Some(ip) = source {
            *self.by_source.entry(ip).or_default() += 1;
            let previous = self.by_key.insert(key, ip);
            debug_assert!(previous.is_none(), "slot {key} started two upgrades");
        }
    }

    /// Slot `key`'s upgrade is over (upgraded, or the slot released); a
    /// no-op for a slot not upgrading.
    pub fn ended(&mut self, key: usize) {
        let Some(ip) = self.by_key.remove(&key) else {
            return;
        };
        if let std::collections::hash_map::Entry::Occupied(mut count) = self.by_source.entry(ip) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
    }
}

#[cfg(test)]
mod handshakes_tests {
    use super::Handshakes;

    #[test]
    fn each_source_gets_its_share_until_its_upgrades_end() {
        let a = Some("10.0.0.1".parse().unwrap());
        let b = Some("10.0.0.2".parse().unwrap());
        // 5 per node over 2 shards: 3 here.
        let mut handshakes = Handshakes::new(5, 2);
        for key in 0..3 {
            assert!(handshakes.admit(a));
            handshakes.started(key, a);
        }
        assert!(!handshakes.admit(a), "a's share is spent");
        assert!(handshakes.admit(b), "another source is not affected");
        assert!(handshakes.admit(None), "an unknown source is let in");
        handshakes.ended(1);
        handshakes.ended(1);
        handshakes.ended(99);
        assert!(handshakes.admit(a), "an ended upgrade frees one");
        handshakes.started(1, a);
        assert!(!handshakes.admit(a));
        for key in 0..3 {
            handshakes.ended(key);
        }
        assert!(handshakes.by_source.is_empty() && handshakes.by_key.is_empty());
    }
}

#[cfg(test)]
mod overrides_tests {
    use super::*;

    fn admitted(user: &str) -> Admitted {
        Admitted {
            user: user.into(),
            grants: Box::default(),
            subs: vec!["news:a".into()],
            device: None,
            inbox_since: None,
            im_since: None,
            device_from_oldest: false,
            binary: false,
            deflate: None,
            expires_at_ms: 5_000,
            info: None,
            token_user: None,
            response: Vec::new(),
        }
    }

    fn replace_token_config() -> Config {
        let mut config = Config::test_min();
        config.websocket.connect_proxy = "p".into();
        config.websocket.connect_proxy_mode = ConnectProxyMode::ReplaceToken;
        config.websocket.subscriptions_max_per_connection = 2;
        config
    }

    #[test]
    fn a_connect_answer_sets_user_grants_subs_expiry_and_info() {
        let config = replace_token_config();
        let mut admitted = admitted("");
        let overrides = Overrides {
            user: Some("u1".into()),
            info: Some(r#"{"a":1}"#.into()),
            channels: Some(vec!["chat:g*".into()]),
            subs: vec!["news:b".into()],
            expire_at: Some(7),
        };
        apply_overrides(&config, &mut admitted, Some(&overrides)).unwrap();
        assert_eq!(&*admitted.user, "u1");
        assert_eq!(&*admitted.grants, [Box::from("chat:g*")]);
        assert_eq!(admitted.subs, ["news:a", "news:b"], "added to the token's");
        assert_eq!(admitted.expires_at_ms, 7_000);
        assert_eq!(
            admitted.info.as_deref().map(|info| info.get()),
            Some(r#"{"a":1}"#)
        );
    }

    #[test]
    fn a_connect_answer_breaking_the_token_rules_is_refused_whole() {
        let config = replace_token_config();
        let refused = |overrides: Overrides| {
            let mut admitted = admitted("");
            let why = apply_overrides(&config, &mut admitted, Some(&overrides)).unwrap_err();
            assert_eq!(&*admitted.user, "", "nothing half applied before {why}");
            why
        };
        let user = |user: &str| Overrides {
            user: Some(user.into()),
            ..Overrides::default()
        };
        assert!(refused(user("has space")).contains("`user`"));
        assert!(refused(Overrides {
            subs: vec!["news:b".into(), "news:c".into()],
            ..user("u1")
        })
        .contains("`subs` lists 3"));
        assert!(refused(Overrides {
            info: Some("1".repeat(CONNECT_INFO_BYTES_MAX + 1).into()),
            ..user("u1")
        })
        .contains("`info`"));
        assert!(refused(Overrides::default()).contains("no `user`"));
        // No user is fine after a token (the token's stands), or when
        // anonymous connections are allowed.
        let mut config = config.clone();
        config.auth.allow_anonymous = true;
        apply_overrides(&config, &mut admitted(""), None).unwrap();
        config.auth.allow_anonymous = false;
        config.websocket.connect_proxy_mode = ConnectProxyMode::AfterToken;
        apply_overrides(&config, &mut admitted(""), None).unwrap();
    }
}

#[cfg(test)]
mod override_rules_tests {
    use super::*;

    fn after_token(user: &str, expires_at_ms: u64, subs: &[&str]) -> (Config, Admitted) {
        let mut config = Config::test_min();
        config.websocket.connect_proxy = "p".into();
        config.websocket.subscriptions_max_per_connection = 2;
        let admitted = Admitted {
            user: user.into(),
            grants: Box::default(),
            subs: subs.iter().map(|s| s.to_string()).collect(),
            device: None,
            inbox_since: None,
            im_since: None,
            device_from_oldest: false,
            binary: false,
            deflate: None,
            expires_at_ms,
            info: None,
            token_user: None,
            response: Vec::new(),
        };
        (config, admitted)
    }

    #[test]
    fn after_a_token_expire_at_shortens_its_expiry_and_never_erases_or_extends_it() {
        let expiry = |token_ms: u64, expire_at: Option<u64>| {
            let (config, mut admitted) = after_token("u1", token_ms, &[]);
            let overrides = Overrides {
                expire_at,
                ..Overrides::default()
            };
            apply_overrides(&config, &mut admitted, Some(&overrides)).unwrap();
            admitted.expires_at_ms
        };
        assert_eq!(expiry(9_000, Some(0)), 9_000, "0 keeps the token's expiry");
        assert_eq!(expiry(9_000, None), 9_000);
        assert_eq!(expiry(9_000, Some(20)), 9_000, "no longer than the token");
        assert_eq!(expiry(9_000, Some(5)), 5_000);
        assert_eq!(expiry(0, Some(5)), 5_000, "a token without exp");
        // Without a token, 0 is "never", as documented.
        assert_eq!(
            overridden_expiry(ConnectProxyMode::ReplaceToken, 9_000, Some(0)),
            0
        );
        assert_eq!(
            overridden_expiry(ConnectProxyMode::ReplaceToken, 0, Some(20)),
            20_000
        );
    }

    #[test]
    fn subs_named_by_both_the_token_and_the_backend_count_once() {
        // The limit is 2: the token's 2 plus the backend's same 2 fit.
        let (config, mut admitted) = after_token("u1", 0, &["news:a", "news:b"]);
        let overrides = Overrides {
            subs: vec!["news:b".into(), "news:a".into(), "news:b".into()],
            ..Overrides::default()
        };
        apply_overrides(&config, &mut admitted, Some(&overrides)).unwrap();
        assert_eq!(admitted.subs, ["news:a", "news:b"]);
    }

    #[test]
    fn a_renamed_user_keeps_its_token_subject() {
        let (config, mut admitted) = after_token("t1", 0, &[]);
        let rename = Overrides {
            user: Some("app-1".into()),
            ..Overrides::default()
        };
        apply_overrides(&config, &mut admitted, Some(&rename)).unwrap();
        assert_eq!(&*admitted.user, "app-1");
        assert_eq!(admitted.token_user.as_deref(), Some("t1"));
        let (config, mut same) = after_token("t1", 0, &[]);
        let keep = Overrides {
            user: Some("t1".into()),
            ..Overrides::default()
        };
        apply_overrides(&config, &mut same, Some(&keep)).unwrap();
        assert_eq!(same.token_user, None, "not renamed");
    }
}
