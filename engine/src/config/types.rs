//! The typed values that `Config` fields hold: bounded counts, secrets and
//! the closed sets of choices, each with the one place that parses it.

use std::fmt;
use std::num::NonZeroU16;

use super::{NODE_ID_MAX, SHARDS_MAX};

/// Number of shards: 1..=[`SHARDS_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardCount(NonZeroU16);

/// This node's id in a cluster: 0..=[`NODE_ID_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeId(u8);

/// A secret string. `Debug` never prints it, so `{:?}` of a
/// [`Config`](super::Config) is safe to log.
#[derive(Clone)]
pub struct Secret(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring when the kernel supports it, else epoll.
    Auto,
    IoUring,
    Epoll,
}

/// The only supported algorithm. An enum so that adding one is a type change
/// every match has to face.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    Hs256,
}

/// Who may subscribe to a namespace's channels (and so read their history:
/// `crate::channels::check_subscribe` is the one check).
///
/// A policy that asks someone else (the planned `"proxy"`, which asks the
/// app backend) is a new variant here, a row in `CHOICES` and an arm in
/// `check_subscribe`; nothing else in the config changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribePolicy {
    /// `"public"`: any authenticated client.
    Public,
    /// `"owner"`: only when the part after `<namespace>:` equals the user id.
    Owner,
    /// `"none"`: clients cannot subscribe; only the server API.
    ServerOnly,
    /// `"token"`: with a subscription token for the channel and the user,
    /// or when the connection token's `channels` claim matches the channel.
    Token,
}

/// Who may publish to a namespace's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishPolicy {
    /// `"none"`: only the server API.
    ServerOnly,
    /// `"subscribers"`: clients subscribed to the channel.
    Subscribers,
    /// `"any"`: any authenticated client.
    Any,
}

/// How the `connect` proxy and the connection token combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectProxyMode {
    /// `"after_token"`: the token is checked as without a proxy, then the
    /// backend is asked with the token's user.
    AfterToken,
    /// `"replace_token"`: no token; the backend names the user from the
    /// request's headers and cookies (cookie-session apps).
    ReplaceToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Fsync before acknowledging a publish.
    Sync,
    /// Acknowledge once queued to the store.
    Buffered,
}

/// An event kind the webhook sender posts (`webhook.events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookEvent {
    /// A client `publish`/`send` stored in a durable stream.
    Message,
    /// A user's first connection on this node.
    Online,
    /// A user's last connection on this node closed.
    Offline,
    /// A message in a user's inbox that no device acknowledged in time.
    Undelivered,
}

/// The set of [`WebhookEvent`]s `webhook.events` turns on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookEvents(u8);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The shard count that `server.shards = 0` means on a host with `cores`
/// available cores: one shard per core, capped at [`SHARDS_MAX`] (the
/// message-id layout has no field for more), and never 0 even if the host
/// reports no cores. Pure so that hosts we do not have (64, 128 cores) can be
/// tested; such hosts once failed to start because the cap was 64.
pub fn shards_for_cores(cores: usize) -> ShardCount {
    let shards = cores.clamp(1, usize::from(SHARDS_MAX));
    let shards = u16::try_from(shards).map_or(ShardCount::ONE, |shards| {
        ShardCount::new(shards).unwrap_or(ShardCount::ONE)
    });
    assert!(shards.get() >= 1 && shards.get() <= SHARDS_MAX);
    assert!(usize::from(shards.get()) <= cores.max(1));
    shards
}

impl ShardCount {
    pub const MAX: u16 = SHARDS_MAX;
    const ONE: ShardCount = ShardCount(NonZeroU16::MIN);

    /// `None` for 0 or more than [`SHARDS_MAX`].
    pub fn new(count: u16) -> Option<ShardCount> {
        if count > SHARDS_MAX {
            return None;
        }
        NonZeroU16::new(count).map(ShardCount)
    }

    pub fn get(self) -> u16 {
        self.0.get()
    }

    pub fn as_usize(self) -> usize {
        usize::from(self.0.get())
    }
}

impl NodeId {
    pub const MAX: u8 = NODE_ID_MAX;

    /// `None` above [`NODE_ID_MAX`].
    pub fn new(id: u8) -> Option<NodeId> {
        (id <= NODE_ID_MAX).then_some(NodeId(id))
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares in time independent of where the first difference is, so the
    /// API key cannot be guessed byte by byte from response times. The
    /// length is not secret.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        if expected.len() != candidate.len() {
            return false;
        }
        let difference = expected
            .iter()
            .zip(candidate)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b));
        difference == 0
    }
}

impl WebhookEvents {
    pub const NONE: WebhookEvents = WebhookEvents(0);
    pub const ALL: WebhookEvents = WebhookEvents(0b1111);

    pub fn contains(self, event: WebhookEvent) -> bool {
        self.0 & WebhookEvents::bit(event) != 0
    }

    pub fn with(self, event: WebhookEvent) -> WebhookEvents {
        WebhookEvents(self.0 | WebhookEvents::bit(event))
    }

    fn bit(event: WebhookEvent) -> u8 {
        match event {
            WebhookEvent::Message => 1,
            WebhookEvent::Online => 2,
            WebhookEvent::Offline => 4,
            WebhookEvent::Undelivered => 8,
        }
    }
}

impl WebhookEvent {
    /// The name `webhook.events` and the webhook body use.
    pub fn name(self) -> &'static str {
        Choice::name(self)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// The string values of a config enum, for parsing, error messages and the
/// docs check. One table per enum, so the names cannot drift apart.
pub(super) trait Choice: Sized + Copy + PartialEq + 'static {
    const CHOICES: &'static [(&'static str, Self)];

    fn parse(text: &str) -> Option<Self> {
        Self::CHOICES
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, value)| *value)
    }

    fn name(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, value)| *value == self)
            .map_or("", |(name, _)| name)
    }

    /// `"a", "b", "c"`.
    fn quoted_names(separator: &str) -> String {
        let names: Vec<String> = Self::CHOICES
            .iter()
            .map(|(name, _)| format!("\"{name}\""))
            .collect();
        names.join(separator)
    }

    /// The problem text for a value that names no choice.
    fn problem(text: &str) -> String {
        format!("must be one of {} (got {text:?})", Self::quoted_names(", "))
    }
}

impl Choice for Driver {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("auto", Driver::Auto),
        ("io_uring", Driver::IoUring),
        ("epoll", Driver::Epoll),
    ];
}

impl Choice for JwtAlgorithm {
    const CHOICES: &'static [(&'static str, Self)] = &[("HS256", JwtAlgorithm::Hs256)];

    /// Says why there is no choice: an operator trying RS256 should learn it
    /// is deliberate, not missing.
    fn problem(text: &str) -> String {
        format!(
            "must be \"HS256\": only HS256 is supported, and the algorithm is fixed by config, \
             never taken from the token (got {text:?})"
        )
    }
}

impl Choice for SubscribePolicy {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("public", SubscribePolicy::Public),
        ("owner", SubscribePolicy::Owner),
        ("none", SubscribePolicy::ServerOnly),
        ("token", SubscribePolicy::Token),
    ];
}

impl Choice for PublishPolicy {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("none", PublishPolicy::ServerOnly),
        ("subscribers", PublishPolicy::Subscribers),
        ("any", PublishPolicy::Any),
    ];
}

impl Choice for ConnectProxyMode {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("after_token", ConnectProxyMode::AfterToken),
        ("replace_token", ConnectProxyMode::ReplaceToken),
    ];
}

impl Choice for Durability {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("sync", Durability::Sync),
        ("buffered", Durability::Buffered),
    ];
}

impl Choice for WebhookEvent {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("message", WebhookEvent::Message),
        ("online", WebhookEvent::Online),
        ("offline", WebhookEvent::Offline),
        ("undelivered", WebhookEvent::Undelivered),
    ];
}

impl Choice for LogFormat {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("text", LogFormat::Text), ("json", LogFormat::Json)];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_for_cores_is_one_per_core_capped_and_never_zero() {
        // r: `server.shards = 0` on a host with 64 or more cores failed to
        // start; the count must stop at SHARDS_MAX (62).
        assert_eq!(SHARDS_MAX, 62);
        let cases = [
            (0, 1),
            (1, 1),
            (2, 2),
            (61, 61),
            (62, 62),
            (63, 62),
            (64, 62),
            (128, 62),
            (usize::MAX, 62),
        ];
        for (cores, expected) in cases {
            assert_eq!(shards_for_cores(cores).get(), expected, "{cores} cores");
        }
    }

    #[test]
    fn choices_round_trip() {
        for (name, driver) in Driver::CHOICES {
            assert_eq!(Driver::parse(name), Some(*driver));
            assert_eq!(driver.name(), *name);
        }
        assert_eq!(Driver::parse("IO_URING"), None);
        assert_eq!(JwtAlgorithm::Hs256.name(), "HS256");
    }

    #[test]
    fn webhook_events_set_holds_what_was_added() {
        let set = WebhookEvents::NONE
            .with(WebhookEvent::Online)
            .with(WebhookEvent::Undelivered);
        assert!(set.contains(WebhookEvent::Online));
        assert!(set.contains(WebhookEvent::Undelivered));
        assert!(!set.contains(WebhookEvent::Message));
        assert!(!set.contains(WebhookEvent::Offline));
        for (name, event) in WebhookEvent::CHOICES {
            assert!(WebhookEvents::ALL.contains(*event), "{name}");
            assert!(!WebhookEvents::NONE.contains(*event), "{name}");
        }
    }
}
