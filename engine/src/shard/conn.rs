//! Per-connection state, owned by the shard's slab.
//!
//! An idle connection holds this struct, its task and its subscriptions:
//! no read buffer (reads go to the shard's scratch buffer after readiness)
//! and no write buffer (the outbound queue is empty until a frame is queued,
//! and then holds shared frames, not copies). Fields are ordered and typed to
//! keep the struct small; `conn_size_is_bounded` pins its size.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;

use bytes::Bytes;
use ringcast_protocol::close::CloseCode;
use ringcast_protocol::frame::Decoder;

use crate::publication::Publication;

/// Durable streams this connection recovered (see `recovery.rs`).
pub type Recovering = Vec<RecoveringStream>;

/// One recovered stream: while its replay runs, the live publications held
/// back; once it is done, the last replayed offset. The store makes a write
/// readable before its fan-out reaches the shards, so a publication can be
/// replayed and *then* arrive live: the floor drops such late copies.
pub struct RecoveringStream {
    pub stream: Rc<str>,
    pub held: Vec<Arc<Publication>>,
    /// `None` while replaying; then live publications at or below it are
    /// duplicates of the replay.
    pub floor: Option<u64>,
}

/// Why a connection is being closed, and what to tell the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    pub code: CloseCode,
    pub reason: &'static str,
    /// Whether queued frames go out before the close frame. False for slow
    /// consumers, whose queue is the problem.
    pub flush_queue: bool,
}

pub struct Conn {
    pub fd: RawFd,
    pub binary: bool,
    pub write_blocked: bool,
    pub in_dirty: bool,
    /// Set once; the connection's task finishes the close.
    pub closing: Option<CloseReason>,
    pub client_id: u64,
    pub user: Rc<str>,
    /// The device id from the connect URL (`?device=`); acknowledgements are
    /// stored per (user, device). `None` (the common case, no allocation):
    /// see `Shard::device_id` for the default.
    pub device: Option<Rc<str>>,
    /// `Some` only while a durable stream is being replayed.
    pub recovering: Option<Box<Recovering>>,
    /// Channels this connection subscribed to, the personal one included.
    pub subscriptions: Vec<Rc<str>>,
    pub out: VecDeque<Bytes>,
    pub out_bytes: usize,
    /// Fragmentation state; a few bytes while no fragmented message is open.
    pub decoder: Decoder,
    /// Bytes of an incomplete frame left from the last read. `None` for an
    /// idle connection: partial frames are rare and short-lived.
    pub partial: Option<Box<[u8]>>,
    pub waker: Option<Waker>,
    /// Coarse unix milliseconds, see `Shard::now_ms`.
    pub last_rx_ms: u64,
    /// When the unanswered ping went out; 0 when none is outstanding.
    pub ping_sent_ms: u64,
    /// Token expiry; 0 for never.
    pub expires_at_ms: u64,
    /// Since when writes have made no progress or the queue has been over
    /// its bound; 0 when healthy.
    pub stalled_since_ms: u64,
}

impl Conn {
    pub fn new(
        fd: RawFd,
        client_id: u64,
        user: Rc<str>,
        device: Option<Rc<str>>,
        binary: bool,
        now_ms: u64,
    ) -> Conn {
        Conn {
            fd,
            device,
            recovering: None,
            binary,
            write_blocked: false,
            in_dirty: false,
            closing: None,
            client_id,
            user,
            subscriptions: Vec::new(),
            out: VecDeque::new(),
            out_bytes: 0,
            decoder: Decoder::new(),
            partial: None,
            waker: None,
            last_rx_ms: now_ms,
            ping_sent_ms: 0,
            expires_at_ms: 0,
            stalled_since_ms: 0,
        }
    }

    /// Asks the connection's task to close; the first reason wins.
    pub fn request_close(&mut self, reason: CloseReason) {
        if self.closing.is_none() {
            self.closing = Some(reason);
            self.wake();
        }
    }

    pub fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.subscriptions.iter().any(|c| &**c == channel)
    }

    /// Drops `n` written bytes from the front of the queue.
    pub fn consume_written(&mut self, mut n: usize) {
        assert!(
            n <= self.out_bytes,
            "wrote {n} bytes of {} queued",
            self.out_bytes
        );
        self.out_bytes -= n;
        while n > 0 {
            let Some(front) = self.out.front_mut() else {
                unreachable!("queue shorter than out_bytes");
            };
            if front.len() <= n {
                n -= front.len();
                self.out.pop_front();
            } else {
                bytes::Buf::advance(front, n);
                n = 0;
            }
        }
        debug_assert_eq!(
            self.out_bytes,
            self.out.iter().map(Bytes::len).sum::<usize>()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_size_is_bounded() {
        // The struct is the largest part of an idle connection after its
        // task. 216 bytes since durable streams added `device` and
        // `recovering`; packing the timestamps into u32 ticks and moving
        // `closing` out of line would win back ~40. Guard against growth.
        assert!(
            std::mem::size_of::<Conn>() <= 216,
            "Conn is {} bytes",
            std::mem::size_of::<Conn>()
        );
    }

    #[test]
    fn consume_written_splits_frames() {
        let mut conn = Conn::new(-1, 1, "u".into(), None, false, 0);
        for frame in [&b"abc"[..], b"de", b"fghi"] {
            conn.out.push_back(Bytes::copy_from_slice(frame));
            conn.out_bytes += frame.len();
        }
        conn.consume_written(4);
        assert_eq!(
            conn.out.iter().map(|b| &b[..]).collect::<Vec<_>>(),
            [&b"e"[..], b"fghi"]
        );
        conn.consume_written(5);
        assert!(conn.out.is_empty());
        assert_eq!(conn.out_bytes, 0);
    }
}
