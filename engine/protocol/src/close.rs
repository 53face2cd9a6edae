//! WebSocket close codes: the registered ones we send, the application codes
//! (4000-4999) that tell Ringcast clients why they were disconnected, and the
//! RFC 6455 §7.4 rule for which codes a peer may put in a Close frame.
//!
//! It lives apart from `frame` because the engine picks close codes in many
//! places (fan-out, API disconnects, heartbeats) that never touch framing.

use std::fmt;

/// A WebSocket close status code (RFC 6455 §7.4).
///
/// The wrapped value is public so that codes received from a peer can be
/// carried as-is; validate them with [`CloseCode::is_valid_received`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the server is shutting down or the client navigated away.
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer broke the WebSocket framing rules.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: the peer sent a data type we do not accept (e.g. binary on a
    /// text session).
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1007: a text message or close reason was not valid UTF-8.
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: generic policy violation.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a frame or message exceeded our configured limits.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: "service restart". A cluster node being drained
    /// (`/api/drain`) closes its clients with it: reconnect at once (the
    /// other nodes take the connection) and resume from your position.
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: "try again later". Ringcast sends it to slow consumers whose
    /// send queue overflowed: the client should reconnect (with backoff) and
    /// resume, rather than treat it as a fatal error.
    pub const TRY_AGAIN_LATER: Self = Self(1013);

    /// 4001: the connection's auth token expired; the client must obtain a
    /// fresh token before reconnecting.
    pub const TOKEN_EXPIRED: Self = Self(4001);
    /// 4002: the token was revoked or no longer grants access; reconnecting
    /// with the same credentials will fail again.
    pub const UNAUTHORIZED: Self = Self(4002);
    /// 4003: an operator or backend disconnected this user through the
    /// server API. Clients should not reconnect automatically.
    pub const DISCONNECTED_BY_SERVER: Self = Self(4003);
    // 4004 is deliberately unassigned: slow consumers get the registered
    // 1013 (TRY_AGAIN_LATER) so generic clients also know to back off.
    /// 4005: the client did not answer pings (or send anything) within the
    /// heartbeat timeout.
    pub const HEARTBEAT_TIMEOUT: Self = Self(4005);
    /// 4006: the client sent a command we could not decode; the server
    /// closes because the session state can no longer be trusted.
    pub const BAD_REQUEST: Self = Self(4006);
    /// 4007: part of a frame arrived and nothing more for the read-progress
    /// timeout: a stalled (or slowloris) sender is cut before the heartbeat
    /// would notice.
    pub const READ_TIMEOUT: Self = Self(4007);
    /// 4008: the client kept sending commands that rate limits refused
    /// (error 114) past `websocket.rate_limit_refusals_max` within
    /// `RATE_LIMIT_REFUSALS_WINDOW_MS`. Reconnect only after backing off.
    pub const RATE_LIMIT_ABUSE: Self = Self(4008);
    /// 4009: a proxy backend answered `disconnect` without a code of its
    /// own range (4500-4999, passed through as they are).
    pub const PROXY_DISCONNECT: Self = Self(4009);
    /// 4403: the connect proxy's backend denied the connection. The upgrade
    /// completes first so that a browser, which never sees an HTTP refusal's
    /// body, can read the backend's message as the close reason. Do not
    /// reconnect with the same credentials.
    pub const CONNECT_DENIED: Self = Self(4403);

    /// Whether a peer may legitimately send this code in a Close frame
    /// (RFC 6455 §7.4). A Close frame carrying any other code is a protocol
    /// error (1002).
    pub const fn is_valid_received(self) -> bool {
        is_valid_received(self.0)
    }

    /// A short name for logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self.0 {
            1000 => "normal",
            1001 => "going_away",
            1002 => "protocol_error",
            1003 => "unsupported_data",
            1007 => "invalid_payload",
            1008 => "policy_violation",
            1009 => "message_too_big",
            1010 => "mandatory_extension",
            1011 => "internal_error",
            1012 => "service_restart",
            1013 => "try_again_later",
            1014 => "bad_gateway",
            4001 => "token_expired",
            4002 => "unauthorized",
            4003 => "disconnected_by_server",
            4005 => "heartbeat_timeout",
            4006 => "bad_request",
            4007 => "read_timeout",
            4008 => "rate_limit_abuse",
            4009 => "proxy_disconnect",
            4403 => "connect_denied",
            4500..=4999 => "backend",
            3000..=3999 => "registered",
            4000..=4999 => "application",
            _ => "invalid",
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.name())
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

/// RFC 6455 §7.4 plus the IANA registry: codes a peer may send.
///
/// Accepted: 1000-1003, 1007-1014 (1012-1014 were registered after the RFC),
/// 3000-3999 (registered libraries) and 4000-4999 (private use).
/// Rejected: below 1000; 1004 (reserved); 1005, 1006 and 1015 (must never
/// appear on the wire: they stand for "no code", "abnormal closure" and "TLS
/// failure"); 1016-2999 (unassigned/reserved); 5000 and above.
pub const fn is_valid_received(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_received_codes_follow_rfc_6455() {
        let cases: &[(u16, bool)] = &[
            (0, false),
            (999, false),
            (1000, true),
            (1001, true),
            (1002, true),
            (1003, true),
            (1004, false),
            (1005, false),
            (1006, false),
            (1007, true),
            (1010, true),
            (1011, true),
            (1012, true),
            (1013, true),
            (1014, true),
            (1015, false),
            (1016, false),
            (2999, false),
            (3000, true),
            (3999, true),
            (4000, true),
            (4999, true),
            (5000, false),
            (u16::MAX, false),
        ];
        for &(code, expected) in cases {
            assert_eq!(CloseCode(code).is_valid_received(), expected, "code {code}");
        }
    }

    #[test]
    fn every_named_code_is_sendable() {
        let named = [
            CloseCode::NORMAL,
            CloseCode::GOING_AWAY,
            CloseCode::PROTOCOL_ERROR,
            CloseCode::UNSUPPORTED_DATA,
            CloseCode::INVALID_PAYLOAD,
            CloseCode::POLICY_VIOLATION,
            CloseCode::MESSAGE_TOO_BIG,
            CloseCode::INTERNAL_ERROR,
            CloseCode::TRY_AGAIN_LATER,
            CloseCode::TOKEN_EXPIRED,
            CloseCode::UNAUTHORIZED,
            CloseCode::DISCONNECTED_BY_SERVER,
            CloseCode::HEARTBEAT_TIMEOUT,
            CloseCode::BAD_REQUEST,
            CloseCode::READ_TIMEOUT,
            CloseCode::RATE_LIMIT_ABUSE,
            CloseCode::PROXY_DISCONNECT,
            CloseCode::CONNECT_DENIED,
        ];
        for code in named {
            assert!(code.is_valid_received(), "{code}");
            assert_ne!(code.name(), "invalid", "{code}");
        }
        assert_eq!(CloseCode::CONNECT_DENIED.name(), "connect_denied");
        assert_eq!(
            CloseCode::TRY_AGAIN_LATER.to_string(),
            "1013 (try_again_later)"
        );
    }
}
