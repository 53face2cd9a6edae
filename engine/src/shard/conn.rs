//! Per-connection state in the shard's slab: the socket (owned here, so
//! the fd lives exactly as long as the slot), the sans-IO session, who the
//! connection is, and what it is subscribed to. No task, future or buffer
//! per connection: the shard loop drives every slot. A `wss://` connection
//! also has its TLS layer, boxed so a plain one pays a null pointer.

use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

use serde_json::value::RawValue;

use super::tls::TlsConn;
use crate::ratelimit::ConnLimits;
use crate::session::Session;
use crate::sys::{self, Io};

pub struct Conn {
    pub fd: OwnedFd,
    pub session: Session,
    /// `Some` on the TLS listener.
    pub tls: Option<Box<TlsConn>>,
    /// 0 until the upgrade is accepted (issued ids are never 0: their
    /// sequence starts at 1), so also "counted in `connections`".
    pub client_id: u64,
    pub user: Rc<str>,
    /// The device id, the `channels` grants and the rate-limit buckets,
    /// which most connections do not have: boxed, so those pay a null
    /// pointer.
    extras: Option<Box<Extras>>,
    /// Channels this connection subscribed to, the personal one included.
    pub subscriptions: Vec<Rc<str>>,
    /// In the shard's `dirty` list (something to send or to finish).
    pub in_dirty: bool,
    /// In the shard's `read_again` list (more to read after the fairness cap).
    pub in_read_again: bool,
    /// A cancel was asked for the send in flight (the session is done).
    pub cancel_asked: bool,
    /// A replay of this connection waits for its queue to drain.
    pub replay_paused: bool,
    /// While closing: the socket's unsent bytes at the last sweep.
    pub unsent_seen: u32,
    /// The refresh proxy is being asked about this connection.
    pub refresh_in_flight: bool,
    /// Nothing is written until the owner of the user's inbox partition
    /// has the registration of this node's connection (`Shard::open`).
    pub corked: bool,
}

impl Conn {
    pub fn new(fd: OwnedFd, session: Session, tls: Option<Box<TlsConn>>) -> Conn {
        Conn {
            fd,
            session,
            tls,
            client_id: 0,
            user: Rc::from(""),
            extras: None,
            subscriptions: Vec::new(),
            in_dirty: false,
            in_read_again: false,
            cancel_asked: false,
            replay_paused: false,
            unsent_seen: 0,
            refresh_in_flight: false,
            corked: false,
        }
    }

    /// A ring send owns memory of this connection (session frames or TLS
    /// records) until its completion.
    pub fn send_in_flight(&self) -> bool {
        self.session.send_in_flight() || self.tls.as_ref().is_some_and(|tls| tls.in_flight)
    }

    /// One read of plaintext into `buf` (never empty), through TLS on a
    /// `wss://` connection.
    pub fn recv(&mut self, buf: &mut [u8]) -> Recv {
        match self.tls.as_deref_mut() {
            Some(tls) => tls.recv(self.fd.as_fd(), buf),
            None => {
                let result = sys::recv(&self.fd, buf);
                let (drained, wire_bytes) = match result {
                    Ok(Io::Done(n)) => (n < buf.len(), n),
                    _ => (true, 0),
                };
                Recv {
                    result,
                    drained,
                    wire_bytes,
                }
            }
        }
    }

    /// Sets who the connection is beyond its user (see [`ConnExtras`]),
    /// allocating only if there is any.
    pub fn set_extras(&mut self, extras: ConnExtras) {
        let any = extras.device.is_some()
            || !extras.grants.is_empty()
            || extras.info.is_some()
            || extras.token_user.is_some();
        self.extras = any.then(|| {
            Box::new(Extras {
                who: extras,
                ..Extras::default()
            })
        });
    }

    fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// The JSON the connect proxy attached to the connection.
    pub fn info(&self) -> Option<&RawValue> {
        self.extras
            .as_ref()
            .and_then(|extras| extras.who.info.as_deref())
    }

    /// The token's subject when the connect proxy renamed the user: a
    /// client `refresh` may name it as well as the user.
    pub fn token_user(&self) -> Option<&str> {
        self.extras
            .as_ref()
            .and_then(|extras| extras.who.token_user.as_deref())
    }

    /// The rate-limit buckets, made at the first limited command.
    pub fn rate_limits(&mut self) -> &mut ConnLimits {
        self.extras_mut()
            .rate_limits
            .get_or_insert_with(ConnLimits::default)
    }

    /// When the refresh proxy may be asked about this connection again
    /// (Unix ms; 0: as soon as it is within the margin).
    pub fn refresh_next_ms(&self) -> u64 {
        self.extras
            .as_ref()
            .map_or(0, |extras| extras.refresh_next_ms)
    }

    /// Refresh calls failed in a row since the last success.
    pub fn refresh_failures(&self) -> u32 {
        self.extras
            .as_ref()
            .map_or(0, |extras| extras.refresh_failures)
    }

    /// Sets when the refresh proxy is asked next and the failures in a row.
    pub fn set_refresh_backoff(&mut self, next_ms: u64, failures: u32) {
        if next_ms == 0 && failures == 0 && self.extras.is_none() {
            return;
        }
        let extras = self.extras_mut();
        extras.refresh_next_ms = next_ms;
        extras.refresh_failures = failures;
    }

    pub fn device(&self) -> Option<&Rc<str>> {
        self.extras
            .as_ref()
            .and_then(|extras| extras.who.device.as_ref())
    }

    pub fn grants(&self) -> &[Box<str>] {
        self.extras
            .as_ref()
            .map_or(&[], |extras| &extras.who.grants)
    }

    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.subscriptions.iter().any(|c| &**c == channel)
    }
}

/// Who a connection is beyond its user, from its admission.
#[derive(Default)]
pub struct ConnExtras {
    /// The device id from the connect URL (`?device=`); acknowledgements are
    /// stored per (user, device). See `Shard::device_id` for the default.
    pub device: Option<Rc<str>>,
    /// The connection token's `channels` claim (`channels::grant_matches`).
    pub grants: Box<[Box<str>]>,
    /// The connect proxy's `info`, validated JSON once at its answer, shown
    /// by presence as it is.
    pub info: Option<Box<RawValue>>,
    /// The token's subject, when the connect proxy renamed the user.
    pub token_user: Option<Rc<str>>,
}

/// The rarer parts of a connection: who it is beyond its user, its
/// rate-limit buckets, and the refresh proxy's backoff.
#[derive(Default)]
struct Extras {
    who: ConnExtras,
    /// Rate-limit buckets, from the first limited command on.
    rate_limits: Option<ConnLimits>,
    /// See `Conn::refresh_next_ms`.
    refresh_next_ms: u64,
    refresh_failures: u32,
}

/// What one read gave.
pub struct Recv {
    /// Plaintext bytes put in the buffer; `Done(0)` is the end of the
    /// stream.
    pub result: std::io::Result<Io>,
    /// The socket is known to be empty (its last read came back short), so
    /// the edge-triggered pollers report new data as a new event.
    pub drained: bool,
    /// Bytes taken from the socket (ciphertext on a TLS connection).
    pub wire_bytes: usize,
}

/// The poller token of slab key `key`; token 0 is the listener.
pub fn token_of(key: usize) -> usize {
    key + 1
}

/// The slab key of poller token `token` (not the listener's).
pub fn key_of(token: usize) -> usize {
    debug_assert!(token > 0);
    token - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_size_is_bounded() {
        // The struct is an idle connection's whole user-space state apart
        // from its subscription index entries (the task, its future and
        // monoio's per-operation state it replaced were ~700 bytes more):
        // guard against growth. The rarer parts (device, grants, the
        // connect proxy's info, rate-limit buckets) share one boxed
        // `Extras`.
        let size = std::mem::size_of::<Conn>();
        assert!(size <= 232, "Conn is {size} bytes");
    }

    #[test]
    fn tls_state_is_boxed_and_bounded() {
        // A plain connection pays the pointer; a TLS one its box, which is
        // mostly rustls' `ServerConnection` (1,168 bytes with rustls
        // 0.23.48), besides rustls' heap (its record buffer of at least
        // 4 KiB, the traffic keys): ~8 KB per idle TLS connection measured.
        assert_eq!(
            std::mem::size_of::<Option<Box<TlsConn>>>(),
            std::mem::size_of::<usize>()
        );
        let size = std::mem::size_of::<TlsConn>();
        assert!(size <= 1280, "TlsConn is {size} bytes");
    }

    #[test]
    fn tokens_and_keys_round_trip_and_skip_the_listener() {
        for key in [0, 1, 17_999] {
            assert_ne!(token_of(key), 0);
            assert_eq!(key_of(token_of(key)), key);
        }
    }
}
