//! The shard's side of the rate limits (`crate::ratelimit`): the command
//! check with its 114 reply and 4008 close. The per-source accept check is
//! in `io.rs`'s `accept`.

use ringcast_protocol::client::{ErrorCode, Reply};
use ringcast_protocol::close::CloseCode;

use super::Shard;
use crate::ratelimit::{self, LimitKey};
use crate::session::CloseReason;

impl Shard {
    /// Checks command `id` of connection `key` against its rate limits for
    /// `limit`. True when it was refused: the 114 reply is queued (and the
    /// connection closed with 4008 if it keeps going), so the caller drops
    /// the command.
    pub(super) fn rate_limited(&mut self, key: usize, id: u64, limit: LimitKey) -> bool {
        let shared = self.shared.clone();
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let user = conn.user.clone();
        let conn_limits = conn.rate_limits();
        let refused = match ratelimit::check_command(
            &shared.config,
            conn_limits,
            &mut self.user_buckets,
            &user,
            limit,
            self.now_ms,
        ) {
            Ok(()) => return false,
            Err(refused) => refused,
        };
        self.metrics().rate_limited.add(1);
        self.send_reply(
            key,
            &Reply::ErrorRetry {
                id,
                code: ErrorCode::RateLimited,
                message: format!("rate limited: retry after {} ms", refused.retry_after_ms),
                retry_after_ms: refused.retry_after_ms,
            },
        );
        if refused.abusive {
            self.metrics().rate_limit_disconnects.add(1);
            self.close(
                key,
                CloseReason {
                    code: CloseCode::RATE_LIMIT_ABUSE,
                    reason: "rate limit abuse",
                    flush_queue: true,
                },
            );
        }
        true
    }
}
