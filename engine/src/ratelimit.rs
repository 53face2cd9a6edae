//! Rate limits, sans-IO: token buckets on a clock the caller passes in
//! (Unix milliseconds, the shard's `now_ms`), never read here.
//!
//! - Client commands (`publish`, `send`, `rpc`): one bucket per connection
//!   and one per user, per [`LimitKey`]; presence commands one per
//!   connection. A command is let in only when both
//!   have a token, and then takes one from each. Refused commands get error
//!   114 with `retry_after_ms`; a connection refused
//!   `websocket.rate_limit_refusals_max` times within
//!   [`RATE_LIMIT_REFUSALS_WINDOW_MS`] is closed with 4008.
//! - Connection attempts: one bucket per source address ([`SourceBuckets`]).
//!
//! Every bucket lives on one shard and is touched only by it: no locks and
//! no atomics on the command path. The price is that a user's limit holds
//! per shard: a user whose connections sit on `k` shards may get up to `k`
//! times `user_*_rate` in all (at most the number of shards, and never more
//! than the sum of the per-connection limits). A shared map of atomic
//! buckets would make it exact at the cost of a contended cache line per
//! command of a user, and a concurrent map nobody bounds; the per-connection
//! limit is exact either way. See docs/integration.md "Rate limits".

use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

use ringcast_protocol::client::CommandBody;

use crate::config::Config;
pub use crate::limits::{RATE_LIMIT_REFUSALS_WINDOW_MS, RATE_LIMIT_SOURCES_MAX};

/// Highest rate (per second) and burst a limit may be configured with.
/// Keeps `burst * MILLI` and a refill of `rate` per millisecond well inside
/// `u64` for any clock step.
pub const RATE_MAX: u32 = 1_000_000;

/// A token is this many units: a bucket refilled at `rate` per second gains
/// `rate` units each millisecond, so whole-millisecond clocks lose nothing.
const MILLI: u64 = 1000;

const _: () = assert!((RATE_MAX as u64) * MILLI < u64::MAX / 1024);

/// A rate limit: `per_second` tokens a second on average, at most `burst`
/// at once. `per_second == 0` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl Rate {
    pub const UNLIMITED: Rate = Rate {
        per_second: 0,
        burst: 1,
    };

    pub fn new(per_second: u32, burst: u32) -> Rate {
        assert!(per_second <= RATE_MAX && burst <= RATE_MAX);
        Rate {
            per_second,
            burst: burst.max(1),
        }
    }

    pub fn is_limited(self) -> bool {
        self.per_second > 0
    }

    fn capacity(self) -> u64 {
        u64::from(self.burst) * MILLI
    }
}

/// A token bucket. Created full; refilled lazily when looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// Tokens held, in `1 / MILLI` units.
    level: u64,
    /// When `level` was last brought up to date.
    last_ms: u64,
}

impl TokenBucket {
    pub fn full(rate: Rate, now_ms: u64) -> TokenBucket {
        TokenBucket {
            level: rate.capacity(),
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, rate: Rate, now_ms: u64) {
        // A clock that steps back refills nothing rather than draining.
        let elapsed_ms = now_ms.saturating_sub(self.last_ms);
        let gained = elapsed_ms.saturating_mul(u64::from(rate.per_second));
        self.level = self.level.saturating_add(gained).min(rate.capacity());
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// `Ok` when a token is there (not taken: see [`TokenBucket::take`]);
    /// otherwise how many milliseconds until one is.
    pub fn check(&mut self, rate: Rate, now_ms: u64) -> Result<(), u64> {
        if !rate.is_limited() {
            return Ok(());
        }
        self.refill(rate, now_ms);
        if self.level >= MILLI {
            return Ok(());
        }
        let missing = MILLI - self.level;
        Err(missing.div_ceil(u64::from(rate.per_second)))
    }

    /// Takes the token [`TokenBucket::check`] found.
    pub fn take(&mut self, rate: Rate) {
        if rate.is_limited() {
            assert!(self.level >= MILLI, "take without a token");
            self.level -= MILLI;
        }
    }

    /// Whether the bucket has refilled completely by `now_ms`: then it is
    /// the same as a new one and need not be kept.
    pub fn is_full(&self, rate: Rate, now_ms: u64) -> bool {
        let mut bucket = *self;
        bucket.refill(rate, now_ms);
        bucket.level >= rate.capacity()
    }

    /// `check` then `take`.
    pub fn try_take(&mut self, rate: Rate, now_ms: u64) -> Result<(), u64> {
        self.check(rate, now_ms)?;
        self.take(rate);
        Ok(())
    }
}

/// What a bucket limits: client publishes to one namespace (by its index
/// in `Config::namespaces`), sends, or rpcs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKey {
    Publish(usize),
    Send,
    Rpc,
    /// `presence_*`, by user list or by conversation: each can ask the
    /// book (and the store) about 1,000 users. Per connection only.
    Presence,
}

impl LimitKey {
    /// The limit of one connection.
    pub fn connection_rate(self, config: &Config) -> Rate {
        let ws = &config.websocket;
        match self {
            LimitKey::Publish(idx) => config.namespaces.get(idx).map_or(Rate::UNLIMITED, |ns| {
                Rate::new(ns.publish_rate, ns.publish_burst)
            }),
            LimitKey::Send => Rate::new(ws.send_rate, ws.send_burst),
            LimitKey::Rpc => Rate::new(ws.rpc_rate, ws.rpc_burst),
            LimitKey::Presence => Rate::new(ws.presence_rate, ws.presence_burst),
        }
    }

    /// The limit of one user's connections on one shard.
    pub fn user_rate(self, config: &Config) -> Rate {
        let ws = &config.websocket;
        match self {
            LimitKey::Publish(idx) => config.namespaces.get(idx).map_or(Rate::UNLIMITED, |ns| {
                Rate::new(ns.user_publish_rate, ns.user_publish_burst)
            }),
            LimitKey::Send => Rate::new(ws.user_send_rate, ws.user_send_burst),
            LimitKey::Rpc => Rate::new(ws.user_rpc_rate, ws.user_rpc_burst),
            LimitKey::Presence => Rate::UNLIMITED,
        }
    }

    /// The limited command `body` is, if any. A publish to a channel in no
    /// namespace is not limited here: it is refused anyway (102).
    pub fn of(config: &Config, body: &CommandBody) -> Option<LimitKey> {
        match body {
            CommandBody::Publish { channel, .. } => {
                config.namespace_index(channel).map(LimitKey::Publish)
            }
            CommandBody::Send { .. } => Some(LimitKey::Send),
            CommandBody::Rpc { .. } => Some(LimitKey::Rpc),
            CommandBody::Presence(_) => Some(LimitKey::Presence),
            // An IM message is a message to a user: the send limits.
            CommandBody::Im(im)
                if matches!(**im, ringcast_protocol::client::ImCommand::MsgSend { .. }) =>
            {
                Some(LimitKey::Send)
            }
            CommandBody::Im(im)
                if matches!(
                    **im,
                    ringcast_protocol::client::ImCommand::PresenceConv { .. }
                ) =>
            {
                Some(LimitKey::Presence)
            }
            _ => None,
        }
    }
}

/// Whether any command limit is configured; when none is (the default),
/// the shard skips the check, namespace lookup included.
pub fn command_limits_configured(config: &Config) -> bool {
    let ws = &config.websocket;
    let rates = [
        ws.send_rate,
        ws.user_send_rate,
        ws.rpc_rate,
        ws.user_rpc_rate,
        ws.presence_rate,
    ];
    rates.iter().any(|&rate| rate > 0)
        || config
            .namespaces
            .iter()
            .any(|ns| ns.publish_rate > 0 || ns.user_publish_rate > 0)
}

/// A refused command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// When a token will be there (for this connection's and user's
    /// buckets as they are now).
    pub retry_after_ms: u64,
    /// The connection has been refused `rate_limit_refusals_max` times
    /// within the window: close it with 4008.
    pub abusive: bool,
}

/// One connection's buckets, and its refusals in the current window.
#[derive(Debug, Default)]
pub struct ConnLimits {
    buckets: Vec<(LimitKey, TokenBucket)>,
    window_start_ms: u64,
    refusals_in_window: u32,
}

impl ConnLimits {
    /// Counts one refusal; true when it makes `refusals_max` within the
    /// window (0: never). The window is fixed: it starts at the first
    /// refusal after the previous one ended.
    pub fn on_refused(&mut self, refusals_max: u32, now_ms: u64) -> bool {
        if self.refusals_in_window == 0
            || now_ms.saturating_sub(self.window_start_ms) >= RATE_LIMIT_REFUSALS_WINDOW_MS
        {
            self.window_start_ms = now_ms;
            self.refusals_in_window = 0;
        }
        self.refusals_in_window = self.refusals_in_window.saturating_add(1);
        refusals_max > 0 && self.refusals_in_window >= refusals_max
    }
}

/// The per-user buckets of one shard. An entry is kept while one of its
/// buckets is refilling; [`UserBuckets::sweep`] drops the full ones, which
/// are the same as absent ones, so the map holds only users who used a
/// limited command within `burst / rate` seconds.
#[derive(Debug, Default)]
pub struct UserBuckets {
    by_user: HashMap<Rc<str>, Vec<(LimitKey, TokenBucket)>>,
}

impl UserBuckets {
    pub fn len(&self) -> usize {
        self.by_user.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_user.is_empty()
    }

    /// Drops the buckets that have refilled.
    pub fn sweep(&mut self, config: &Config, now_ms: u64) {
        self.by_user.retain(|_, buckets| {
            buckets.retain(|(key, bucket)| !bucket.is_full(key.user_rate(config), now_ms));
            !buckets.is_empty()
        });
    }
}

fn bucket_of(
    buckets: &mut Vec<(LimitKey, TokenBucket)>,
    key: LimitKey,
    rate: Rate,
    now_ms: u64,
) -> &mut TokenBucket {
    let idx = match buckets.iter().position(|(k, _)| *k == key) {
        Some(idx) => idx,
        None => {
            buckets.push((key, TokenBucket::full(rate, now_ms)));
            buckets.len() - 1
        }
    };
    &mut buckets[idx].1
}

/// Checks one command of `user` (empty: anonymous, which has only the
/// connection's limit) against the connection's and the user's buckets for
/// `key`, and takes a token from both when both have one. A refusal takes
/// nothing and is counted against the connection (`refusals_max`).
pub fn check_command(
    config: &Config,
    conn: &mut ConnLimits,
    users: &mut UserBuckets,
    user: &Rc<str>,
    key: LimitKey,
    now_ms: u64,
) -> Result<(), Refused> {
    let conn_rate = key.connection_rate(config);
    let user_rate = if user.is_empty() {
        Rate::UNLIMITED
    } else {
        key.user_rate(config)
    };
    if !conn_rate.is_limited() && !user_rate.is_limited() {
        return Ok(());
    }
    let mut retry_after_ms = 0;
    if conn_rate.is_limited() {
        let bucket = bucket_of(&mut conn.buckets, key, conn_rate, now_ms);
        if let Err(wait_ms) = bucket.check(conn_rate, now_ms) {
            retry_after_ms = wait_ms;
        }
    }
    if user_rate.is_limited() {
        let buckets = users.by_user.entry(user.clone()).or_default();
        let bucket = bucket_of(buckets, key, user_rate, now_ms);
        if let Err(wait_ms) = bucket.check(user_rate, now_ms) {
            retry_after_ms = retry_after_ms.max(wait_ms);
        }
    }
    if retry_after_ms > 0 {
        let refusals_max = config.websocket.rate_limit_refusals_max;
        return Err(Refused {
            retry_after_ms,
            abusive: conn.on_refused(refusals_max, now_ms),
        });
    }
    if conn_rate.is_limited() {
        bucket_of(&mut conn.buckets, key, conn_rate, now_ms).take(conn_rate);
    }
    if user_rate.is_limited() {
        if let Some(buckets) = users.by_user.get_mut(user) {
            bucket_of(buckets, key, user_rate, now_ms).take(user_rate);
        }
    }
    Ok(())
}

/// Connection attempts per source address on one shard, a token bucket
/// each. At most [`RATE_LIMIT_SOURCES_MAX`] sources are tracked: when the
/// map is full the refilled buckets are dropped, and if none has refilled
/// an arbitrary one is (that source starts again with a full burst), so an
/// attacker with many addresses cannot grow the map.
#[derive(Debug)]
pub struct SourceBuckets {
    rate: Rate,
    by_source: HashMap<IpAddr, TokenBucket>,
    sources_max: usize,
}

impl SourceBuckets {
    /// `per_node` is `websocket.accept_rate_per_source` and
    /// `accept_burst_per_source`; each of the `shards` enforces its share,
    /// rounded up (the kernel spreads a source's connections over the
    /// shards' listeners by their ports).
    pub fn new(per_node: Rate, shards: u32, sources_max: usize) -> SourceBuckets {
        let shards = shards.max(1);
        assert!(sources_max > 0);
        SourceBuckets {
            rate: Rate::new(
                per_node.per_second.div_ceil(shards),
                per_node.burst.div_ceil(shards),
            ),
            by_source: HashMap::new(),
            sources_max,
        }
    }

    /// Whether a connection from `source` may be accepted now (an unknown
    /// source always may); takes a token when it may.
    pub fn admit(&mut self, source: Option<IpAddr>, now_ms: u64) -> bool {
        let (Some(ip), true) = (source, self.rate.is_limited()) else {
            return true;
        };
        if !self.by_source.contains_key(&ip) && self.by_source.len() >= self.sources_max {
            let rate = self.rate;
            self.by_source
                .retain(|_, bucket| !bucket.is_full(rate, now_ms));
            if self.by_source.len() >= self.sources_max {
                if let Some(evicted) = self.by_source.keys().next().copied() {
                    self.by_source.remove(&evicted);
                }
            }
        }
        let rate = self.rate;
        let bucket = self
            .by_source
            .entry(ip)
            .or_insert_with(|| TokenBucket::full(rate, now_ms));
        let admitted = bucket.try_take(rate, now_ms).is_ok();
        assert!(self.by_source.len() <= self.sources_max);
        admitted
    }

    pub fn len(&self) -> usize {
        self.by_source.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_source.is_empty()
    }
}

#[cfg(test)]
mod tests;
