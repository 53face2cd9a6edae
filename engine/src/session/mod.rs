//! The sans-IO state machine of one WebSocket connection.
//!
//! A `Session` is driven by bytes in (`on_handshake_bytes`, `decode` +
//! `on_message`), by `now` (`handle_timeout`), and by the outcome of writes
//! (`start_send` / `on_sent`); it tells its driver what to transmit
//! (`start_send`), whether to half-close (`take_shutdown`), when it next
//! needs time (`poll_timeout`) and when it is finished (`is_done`). It owns
//! everything about a connection that is not a socket or a subscription:
//! the upgrade buffer, the frame decoder and the partial frame between
//! reads, the outbound queue of shared frames and its bound, heartbeats,
//! token expiry, the close handshake, and the merge of live publications
//! with a replay (recovery). It performs no I/O and reads no clock, so every
//! rule here is tested on a virtual clock (`tests.rs`).
//!
//! An idle open session holds no buffer: the queue is empty, the decoder is
//! one pointer, and `partial` is `None` unless a frame was split across
//! reads.

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io::IoSlice;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use ringcast_protocol::close::CloseCode;
use ringcast_protocol::frame::{encode_close, encode_frame, Decoder, Limits, Message, OpCode};
use ringcast_protocol::handshake::{
    http_error_response, parse_upgrade, HandshakeLimits, UpgradeRequest,
};

use crate::config::Config;
use crate::limits::{CLOSE_LINGER_MS, IOV_MAX, QUEUE_HARD_LIMIT_FACTOR, RECOVERY_HELD_MAX};
use crate::publication::Publication;

/// The session's rules, resolved from `Config` once per shard.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub handshake: HandshakeLimits,
    pub frame: Limits,
    pub queue_bytes_max: usize,
    pub handshake_timeout_ms: u64,
    pub ping_interval_ms: u64,
    pub pong_timeout_ms: u64,
    pub slow_consumer_timeout_ms: u64,
    /// Longest silence allowed after part of a frame arrived.
    pub read_progress_timeout_ms: u64,
    pub close_linger_ms: u64,
    /// Pushes whose frame is shorter go uncompressed on deflate connections.
    pub compression_min_bytes: usize,
}

impl SessionConfig {
    pub fn new(config: &Config) -> SessionConfig {
        let ws = &config.websocket;
        SessionConfig {
            handshake: HandshakeLimits {
                header_bytes_max: ws.header_bytes_max,
                headers_count_max: ws.headers_count_max,
            },
            frame: Limits {
                frame_bytes_max: ws.frame_bytes_max,
                message_bytes_max: ws.message_bytes_max,
            },
            queue_bytes_max: ws.outbound_queue_bytes_max,
            handshake_timeout_ms: ws.handshake_timeout.as_millis() as u64,
            ping_interval_ms: ws.ping_interval.as_millis() as u64,
            pong_timeout_ms: ws.pong_timeout.as_millis() as u64,
            slow_consumer_timeout_ms: ws.slow_consumer_timeout.as_millis() as u64,
            read_progress_timeout_ms: ws.read_progress_timeout.as_millis() as u64,
            close_linger_ms: CLOSE_LINGER_MS,
            compression_min_bytes: ws.compression_min_bytes,
        }
    }
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

impl CloseReason {
    pub const SLOW_CONSUMER: CloseReason = CloseReason {
        code: CloseCode::TRY_AGAIN_LATER,
        reason: "slow consumer",
        flush_queue: false,
    };
}

/// What a handshake read produced.
#[derive(Debug)]
pub enum Handshake {
    /// The request head is not complete yet.
    Incomplete,
    /// A well-formed upgrade: the driver decides (`accept` or `refuse`).
    Request(UpgradeRequest),
    /// Malformed or over a limit: the error response is queued and the
    /// session is closing.
    Refused,
}

/// What a complete inbound message asks of the driver.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// Handled inside the session (ping, pong): keep reading.
    Handled,
    /// A command in the connection's subprotocol.
    Command(&'a [u8]),
    /// The session is closing: stop reading.
    Closing,
    /// The peer broke the protocol (a data frame of the wrong type): the
    /// session is closing.
    Violation,
}

/// What a timeout did, for the driver's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// A ping was queued.
    Ping,
    /// The upgrade did not complete in time: 408 queued, closing.
    Handshake,
    /// The admission decision (the connect proxy) did not come in time:
    /// 503 queued, closing.
    Admission,
    /// No pong (or anything) within the pong timeout: closing with 4005.
    Heartbeat,
    /// The token expired: closing with 4001.
    TokenExpired,
    /// The queue stayed over its bound or writes made no progress: 1013.
    SlowConsumer,
    /// Part of a frame arrived, then nothing for the read-progress
    /// timeout: closing with 4007.
    ReadStalled,
    /// The close handshake ran out of time: the session is done.
    Linger,
}

/// What offering a publication did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// Held until the stream's replay ends.
    Held,
    /// Dropped: a live copy of something the replay already delivered, or
    /// the session is closing.
    Dropped,
    /// The queue went far over its bound: the session is closing with 1013.
    SlowConsumer,
}

/// One durable stream being recovered: while its replay runs, the live
/// publications held back; once it is done, the last replayed offset. The
/// store makes a write readable before its fan-out reaches the shards, so a
/// publication can be replayed and *then* arrive live: the floor drops such
/// late copies.
#[derive(Debug)]
struct RecoveringStream {
    /// Which replay this is: a replay that outlived its entry (the stream
    /// was left, or recovered again) must not end the new one.
    id: u64,
    stream: Rc<str>,
    held: Vec<Arc<Publication>>,
    /// `None` while replaying; then live publications at or below it are
    /// duplicates of the replay.
    floor: Option<u64>,
    /// A `catchup`'s replay, not a subscription's: the connection takes the
    /// stream's live publications without being subscribed, in offset
    /// order, so the first one above the floor is the last that could be a
    /// copy, and the entry goes with it instead of staying for the session.
    transient: bool,
}

#[derive(Debug)]
enum Phase {
    /// Reading the upgrade request; the bytes so far.
    Handshake(Vec<u8>),
    /// The request is parsed and waits for a decision made elsewhere (the
    /// connect proxy): nothing is read or sent until `accept`,
    /// `accept_then_close` or the deadline. `client_id` is the id the
    /// connection will have, which the decision must name.
    Admitting {
        client_id: u64,
    },
    Open,
    /// Our close frame (or echo, or refusal) is queued.
    Closing {
        /// Wait for the peer's close (EOF) after ours went out.
        wait_peer: bool,
        /// The write side was half-closed (or must not be).
        shut_write: bool,
    },
    Done,
}

pub struct Session {
    phase: Phase,
    binary: bool,
    /// The server window (log2 bytes) agreed for permessage-deflate; 0
    /// without the extension. One byte: both directions are without context
    /// takeover, so there is no compression state per connection.
    deflate_window_bits: u8,
    /// A write came back short or would block: the socket is full.
    write_blocked: bool,
    /// A short write ended inside the front frame of `out`: its head is on
    /// the wire, so its rest must go out whatever else is dropped.
    front_partial: bool,
    decoder: Decoder,
    /// Bytes of an incomplete frame left from the last read.
    partial: Option<Box<[u8]>>,
    out: VecDeque<Bytes>,
    out_bytes: usize,
    /// Bytes at the front of `out` handed to the kernel and not yet
    /// reported by `on_sent`; they must not move or be dropped.
    in_flight: usize,
    #[expect(
        clippy::box_collection,
        reason = "8 bytes on every idle session instead of 24: the list exists only while a stream recovers"
    )]
    recovering: Option<Box<Vec<RecoveringStream>>>,
    last_rx_ms: u64,
    /// When the unanswered ping went out; 0 when none is outstanding.
    ping_sent_ms: u64,
    /// Token expiry; 0 for never.
    expires_at_ms: u64,
    /// Since when the queue has been over its bound or writes blocked; 0
    /// when healthy.
    stalled_since_ms: u64,
    /// The handshake or close deadline; 0 when none.
    deadline_ms: u64,
}

impl Session {
    /// A connection that has just been accepted: waiting for its upgrade.
    pub fn new(now_ms: u64, config: &SessionConfig) -> Session {
        Session {
            phase: Phase::Handshake(Vec::new()),
            binary: false,
            deflate_window_bits: 0,
            write_blocked: false,
            front_partial: false,
            decoder: Decoder::new(),
            partial: None,
            out: VecDeque::new(),
            out_bytes: 0,
            in_flight: 0,
            recovering: None,
            last_rx_ms: now_ms,
            ping_sent_ms: 0,
            expires_at_ms: 0,
            stalled_since_ms: 0,
            deadline_ms: now_ms + config.handshake_timeout_ms,
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    pub fn is_handshaking(&self) -> bool {
        matches!(self.phase, Phase::Handshake(_))
    }

    /// Waiting for an admission decision: the id it must name.
    pub fn admitting(&self) -> Option<u64> {
        match self.phase {
            Phase::Admitting { client_id } => Some(client_id),
            _ => None,
        }
    }

    /// The upgrade request's bytes read so far (its head, once
    /// `on_handshake_bytes` said `Request`); empty after the handshake.
    pub fn request_head(&self) -> &[u8] {
        match &self.phase {
            Phase::Handshake(buf) => buf,
            _ => &[],
        }
    }

    /// The upgrade request is parsed and admissible as far as the driver
    /// can tell alone; the decision now waits on someone else (the connect
    /// proxy, whose answer comes within `wait_ms`). Until it comes nothing
    /// is read or sent; after `wait_ms` the session refuses with 503 by
    /// itself, so a decision that never comes cannot hold the slot.
    pub fn await_admission(&mut self, now_ms: u64, client_id: u64, wait_ms: u64) {
        debug_assert!(self.is_handshaking(), "admission outside the handshake");
        assert!(client_id != 0, "client ids are never 0");
        self.phase = Phase::Admitting { client_id };
        self.deadline_ms = now_ms + wait_ms;
    }

    /// Completes the upgrade only to close at once with `code` and
    /// `reason`: a refusal a browser can read (it sees no HTTP refusal's
    /// status or body, only a failed connection; it does see a close code
    /// and reason). `reason` is cut to the close frame's 123 bytes.
    pub fn accept_then_close(
        &mut self,
        now_ms: u64,
        response_101: Bytes,
        code: CloseCode,
        reason: &str,
        config: &SessionConfig,
    ) {
        debug_assert!(
            self.is_handshaking() || self.admitting().is_some(),
            "accept_then_close outside the handshake"
        );
        self.push(response_101);
        // `encode_close` cuts the reason on a character boundary.
        self.push(encode_close(code, reason, None));
        self.phase = Phase::Closing {
            wait_peer: true,
            shut_write: false,
        };
        self.deadline_ms = now_ms + config.close_linger_ms;
    }

    /// Closing or done: no new frames are queued and no more is read.
    pub fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing { .. } | Phase::Done)
    }

    pub fn binary(&self) -> bool {
        self.binary
    }

    /// The server window size when permessage-deflate was negotiated.
    pub fn deflate(&self) -> Option<u8> {
        (self.deflate_window_bits != 0).then_some(self.deflate_window_bits)
    }

    pub fn out_bytes(&self) -> usize {
        self.out_bytes
    }

    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    pub fn set_expires_at_ms(&mut self, expires_at_ms: u64) {
        self.expires_at_ms = expires_at_ms;
    }

    /// Upgrade bytes arrived. On a complete request the bytes after its
    /// head are kept as the start of the WebSocket stream.
    pub fn on_handshake_bytes(
        &mut self,
        now_ms: u64,
        bytes: &[u8],
        config: &SessionConfig,
    ) -> Handshake {
        let Phase::Handshake(buf) = &mut self.phase else {
            return Handshake::Refused;
        };
        // One byte over the limit is enough for the parser to refuse it.
        let room = (config.handshake.header_bytes_max + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        match parse_upgrade(buf, &config.handshake) {
            Ok(None) => Handshake::Incomplete,
            Ok(Some((request, consumed))) => {
                let leftover = buf.get(consumed..).unwrap_or_default();
                let mut rest = leftover.to_vec();
                // Bytes past the header limit were not buffered above; they
                // are frames the client sent early, and must not be lost.
                if bytes.len() > room {
                    rest.extend_from_slice(&bytes[room..]);
                }
                if !rest.is_empty() {
                    self.partial = Some(rest.into_boxed_slice());
                }
                Handshake::Request(request)
            }
            Err(err) => {
                self.refuse(now_ms, Bytes::from(err.to_http_response()), config);
                Handshake::Refused
            }
        }
    }

    /// The driver accepted the upgrade: queue the 101 (and the `connect`
    /// message after it) and start the WebSocket phase. `deflate` is the
    /// server window agreed for permessage-deflate, if it was.
    pub fn accept(
        &mut self,
        now_ms: u64,
        response_101: Bytes,
        binary: bool,
        deflate: Option<u8>,
        expires_at_ms: u64,
    ) {
        debug_assert!(
            self.is_handshaking() || self.admitting().is_some(),
            "accept outside the handshake"
        );
        assert!(deflate != Some(0), "window bits 0 means no deflate");
        self.phase = Phase::Open;
        self.binary = binary;
        self.deflate_window_bits = deflate.unwrap_or(0);
        self.expires_at_ms = expires_at_ms;
        self.last_rx_ms = now_ms;
        self.deadline_ms = 0;
        self.push(response_101);
    }

    /// The driver refused the upgrade (or it was malformed): send the HTTP
    /// response, then close without a WebSocket close handshake.
    pub fn refuse(&mut self, now_ms: u64, response: Bytes, config: &SessionConfig) {
        if self.is_closing() {
            return;
        }
        self.push(response);
        self.phase = Phase::Closing {
            wait_peer: false,
            shut_write: true,
        };
        self.deadline_ms = now_ms + config.close_linger_ms;
    }

    /// Takes the bytes of a frame left incomplete by the last read, to be
    /// decoded in front of the next read.
    pub fn take_partial(&mut self) -> Option<Box<[u8]>> {
        self.partial.take()
    }

    /// Keeps the incomplete tail of a read for the next one.
    pub fn keep_partial(&mut self, bytes: &[u8]) {
        debug_assert!(self.partial.is_none());
        if !bytes.is_empty() {
            self.partial = Some(bytes.into());
        }
    }

    /// The frame decoder, taken for one read (a decoded message may borrow
    /// it while the driver hands the session other work); put it back with
    /// `put_decoder`.
    pub fn take_decoder(&mut self) -> Decoder {
        std::mem::take(&mut self.decoder)
    }

    pub fn put_decoder(&mut self, decoder: Decoder) {
        self.decoder = decoder;
    }

    /// Bytes were read: the peer is alive.
    pub fn on_receive(&mut self, now_ms: u64) {
        self.last_rx_ms = now_ms;
        self.ping_sent_ms = 0;
    }

    /// One complete inbound message.
    pub fn on_message<'a>(
        &mut self,
        now_ms: u64,
        message: Message<'a>,
        config: &SessionConfig,
    ) -> Inbound<'a> {
        if !self.is_open() {
            return Inbound::Closing;
        }
        match message {
            Message::Text(bytes) if !self.binary => Inbound::Command(bytes),
            Message::Binary(bytes) if self.binary => Inbound::Command(bytes),
            Message::Text(_) | Message::Binary(_) => {
                let reason = if self.binary {
                    "binary subprotocol takes binary frames"
                } else {
                    "JSON subprotocol takes text frames"
                };
                self.close(
                    now_ms,
                    CloseReason {
                        code: CloseCode::UNSUPPORTED_DATA,
                        reason,
                        flush_queue: true,
                    },
                    config,
                );
                Inbound::Violation
            }
            Message::Ping(payload) => {
                self.push(encode_frame(OpCode::Pong, payload, None));
                Inbound::Handled
            }
            Message::Pong(_) => Inbound::Handled,
            Message::Close(close) => {
                // RFC 6455 §5.5.1: echo the peer's code; a close without one
                // gets an empty close back. The peer closes the TCP
                // connection after our echo, so there is nothing to wait for
                // beyond the flush.
                let echo = match close {
                    Some((code, _)) => encode_close(code, "", None),
                    None => Bytes::from_static(&[0x88, 0x00]),
                };
                self.push(echo);
                self.phase = Phase::Closing {
                    wait_peer: false,
                    shut_write: true,
                };
                self.deadline_ms = now_ms + config.close_linger_ms;
                Inbound::Closing
            }
        }
    }

    /// Starts our side of the close handshake; the first reason wins.
    /// Returns false when the session was already closing.
    pub fn close(&mut self, now_ms: u64, reason: CloseReason, config: &SessionConfig) -> bool {
        self.close_with(
            now_ms,
            reason.code,
            reason.reason,
            reason.flush_queue,
            config,
        )
    }

    /// `close` with a reason made at run time (a backend's), cut to the
    /// close frame's 123 bytes.
    pub fn close_with(
        &mut self,
        now_ms: u64,
        code: CloseCode,
        reason: &str,
        flush_queue: bool,
        config: &SessionConfig,
    ) -> bool {
        match self.phase {
            Phase::Open => {}
            Phase::Handshake(_) | Phase::Admitting { .. } => {
                // No WebSocket yet: nothing to say in WebSocket terms.
                self.phase = Phase::Done;
                return true;
            }
            Phase::Closing { .. } | Phase::Done => return false,
        }
        if !flush_queue {
            self.drop_unsent();
        }
        self.recovering = None;
        // `encode_close` cuts the reason on a character boundary.
        self.push(encode_close(code, reason, None));
        self.phase = Phase::Closing {
            wait_peer: true,
            shut_write: false,
        };
        self.deadline_ms = now_ms + config.close_linger_ms;
        true
    }

    /// The peer closed its side (EOF) or the socket failed.
    pub fn on_eof(&mut self) {
        self.phase = Phase::Done;
    }

    /// Whether the driver should release the connection: the close
    /// handshake is over, or the socket is gone. Bytes still in flight must
    /// complete (or be cancelled) before their frames are freed.
    pub fn is_done(&self) -> bool {
        match self.phase {
            Phase::Done => true,
            Phase::Closing {
                wait_peer,
                shut_write,
            } => !wait_peer && shut_write && self.out_bytes == 0,
            _ => false,
        }
    }

    /// Nothing more is written to this connection: the socket failed or
    /// the peer closed it, or a deadline passed. Unlike `is_done`, false
    /// while a refusal or a close is only flushed out of the queue, which
    /// for a TLS connection is not yet on the wire.
    pub fn writes_ended(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// True once, when our close frame has gone out and the write side
    /// should be half-closed so the peer sees FIN after it.
    pub fn take_shutdown(&mut self) -> bool {
        if let Phase::Closing {
            wait_peer: true,
            shut_write: shut_write @ false,
        } = &mut self.phase
        {
            if self.out_bytes == 0 {
                *shut_write = true;
                return true;
            }
        }
        false
    }

    /// Queues a frame for this connection (replies, pushes, pings).
    /// Applies the outbound bound: a socket that is full and a queue four
    /// times over its bound closes at once with 1013.
    pub fn queue(&mut self, frame: Bytes, now_ms: u64, config: &SessionConfig) -> Offer {
        if !self.is_open() {
            return Offer::Dropped;
        }
        self.push(frame);
        if self.out_bytes > config.queue_bytes_max {
            if self.stalled_since_ms == 0 {
                self.stalled_since_ms = now_ms;
            }
            // Only a connection whose socket is full (its last write came
            // back short) counts: one that is merely waiting for the
            // end-of-turn flush, or for a ring send's completion, may hold
            // a burst.
            if self.write_blocked
                && self.out_bytes > config.queue_bytes_max * QUEUE_HARD_LIMIT_FACTOR
            {
                self.close(now_ms, CloseReason::SLOW_CONSUMER, config);
                return Offer::SlowConsumer;
            }
        }
        Offer::Queued
    }

    /// Offers a live publication: queued, held while its stream replays, or
    /// dropped as a late copy of what the replay delivered.
    pub fn offer(
        &mut self,
        publication: &Arc<Publication>,
        now_ms: u64,
        config: &SessionConfig,
    ) -> Offer {
        if !self.is_open() {
            return Offer::Dropped;
        }
        if let Some(streams) = self.recovering.as_mut() {
            if let Some(entry) = streams
                .iter_mut()
                .find(|entry| *entry.stream == *publication.channel())
            {
                if let Some(floor) = entry.floor {
                    // Offset 0 was never stored (a publish proxy's
                    // `skip_history`): it cannot be a replayed copy.
                    if publication.offset() != 0 && publication.offset() <= floor {
                        return Offer::Dropped;
                    }
                    if entry.transient && publication.offset() > floor {
                        let stream = entry.stream.clone();
                        streams.retain(|entry| entry.stream != stream);
                        if streams.is_empty() {
                            self.recovering = None;
                        }
                    }
                } else if entry.held.len() >= RECOVERY_HELD_MAX {
                    self.close(
                        now_ms,
                        CloseReason {
                            code: CloseCode::TRY_AGAIN_LATER,
                            reason: "too far behind during recovery",
                            flush_queue: false,
                        },
                        config,
                    );
                    return Offer::SlowConsumer;
                } else {
                    entry.held.push(publication.clone());
                    return Offer::Held;
                }
            }
        }
        let frame = self.frame_of(publication, config);
        self.queue(frame, now_ms, config)
    }

    /// From now on, live publications of `stream` are held until
    /// `end_recovery`. A stream recovered before starts over. Returns this
    /// replay's id (see `replay_id`).
    pub fn begin_recovery(&mut self, stream: &str) -> u64 {
        self.begin_replay(stream, false)
    }

    /// [`Session::begin_recovery`] for a `catchup` of a conversation: once
    /// done, its entry lasts only until the next live publication above
    /// the replay (`RecoveringStream::transient`).
    pub fn begin_catchup(&mut self, stream: &str) -> u64 {
        self.begin_replay(stream, true)
    }

    fn begin_replay(&mut self, stream: &str, transient: bool) -> u64 {
        // Process-wide, so ids never repeat on a reused slot either.
        static NEXT_REPLAY_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_REPLAY_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let streams = self.recovering.get_or_insert_with(Default::default);
        streams.retain(|entry| *entry.stream != *stream);
        streams.push(RecoveringStream {
            id,
            stream: stream.into(),
            held: Vec::new(),
            floor: None,
            transient,
        });
        id
    }

    /// The id of the replay of `stream` still running, if any.
    pub fn replay_id(&self, stream: &str) -> Option<u64> {
        self.recovering
            .as_ref()?
            .iter()
            .find(|entry| *entry.stream == *stream && entry.floor.is_none())
            .map(|entry| entry.id)
    }

    /// The replay of `stream` ended: `Some(last replayed offset)` releases
    /// the held publications newer than it and keeps it as the floor;
    /// `None` (the replay failed) drops them and the stream's entry.
    pub fn end_recovery(
        &mut self,
        stream: &str,
        last_offset: Option<u64>,
        now_ms: u64,
        config: &SessionConfig,
    ) {
        let Some(streams) = self.recovering.as_mut() else {
            return;
        };
        let Some(pos) = streams.iter().position(|entry| *entry.stream == *stream) else {
            return;
        };
        let held = match last_offset {
            Some(offset) => {
                let entry = &mut streams[pos];
                entry.floor = Some(offset);
                // A catchup's live publication above the replay already
                // came: no copy can follow it (`RecoveringStream::transient`).
                if entry.transient && entry.held.iter().any(|p| p.offset() > offset) {
                    streams.swap_remove(pos).held
                } else {
                    std::mem::take(&mut entry.held)
                }
            }
            None => streams.swap_remove(pos).held,
        };
        if streams.is_empty() {
            self.recovering = None;
        }
        let floor = last_offset.unwrap_or(u64::MAX);
        for publication in held {
            if publication.offset() == 0 || publication.offset() > floor {
                let frame = self.frame_of(&publication, config);
                if self.queue(frame, now_ms, config) == Offer::SlowConsumer {
                    return;
                }
            }
        }
    }

    /// The connection left `stream`: forget its recovery state.
    pub fn forget_recovery(&mut self, stream: &str) {
        if let Some(streams) = self.recovering.as_mut() {
            streams.retain(|entry| *entry.stream != *stream);
            if streams.is_empty() {
                self.recovering = None;
            }
        }
    }

    /// Whether there are queued bytes not yet handed to the kernel.
    pub fn wants_send(&self) -> bool {
        self.out_bytes > self.in_flight
    }

    pub fn send_in_flight(&self) -> bool {
        self.in_flight > 0
    }

    /// Fills `slices` with the front of the queue and marks those bytes in
    /// flight until `on_sent`. Returns the number of slices (0: nothing to
    /// send, or a send is already in flight).
    pub fn start_send<'a>(&'a mut self, slices: &mut [IoSlice<'a>; IOV_MAX]) -> usize {
        if self.in_flight > 0 {
            return 0;
        }
        let mut n_slices = 0;
        let mut offered = 0;
        for (slot, frame) in slices.iter_mut().zip(self.out.iter()) {
            *slot = IoSlice::new(frame);
            offered += frame.len();
            n_slices += 1;
        }
        self.in_flight = offered;
        n_slices
    }

    /// The kernel took `written` of the bytes marked in flight (fewer means
    /// the socket is full).
    pub fn on_sent(&mut self, written: usize, now_ms: u64, config: &SessionConfig) {
        let offered = self.on_buffered(written);
        self.on_wire(written, written < offered, now_ms, config);
    }

    /// A layer between the queue and the socket (TLS) took `taken` of the
    /// bytes marked in flight; returns how many were offered. Taking fewer
    /// says nothing about the socket: that is [`Session::on_wire`]'s.
    pub fn on_buffered(&mut self, taken: usize) -> usize {
        let offered = std::mem::take(&mut self.in_flight);
        assert!(taken <= offered, "{taken} of {offered} bytes taken");
        self.consume(taken);
        offered
    }

    /// The peer took bytes out of the socket (its unsent count fell): while
    /// closing, it is reading its way to our close frame, so the linger
    /// restarts. Bounded: nothing new is queued while closing.
    pub fn on_peer_progress(&mut self, now_ms: u64, config: &SessionConfig) {
        if matches!(self.phase, Phase::Closing { .. }) {
            self.deadline_ms = self.deadline_ms.max(now_ms + config.close_linger_ms);
        }
    }

    /// `written` bytes reached the socket, which came back `short` (full)
    /// or not: whether this connection is stalled, and the close linger.
    pub fn on_wire(&mut self, written: usize, short: bool, now_ms: u64, config: &SessionConfig) {
        // A closing peer still reading through what was queued ahead of our
        // close frame is slow, not gone: each write that makes progress
        // restarts the linger, so it still gets its close code (a slow
        // consumer's 1013). Bounded: nothing is queued while closing, so
        // progress ends once the close frame is out.
        if written > 0 && matches!(self.phase, Phase::Closing { .. }) {
            self.deadline_ms = self.deadline_ms.max(now_ms + config.close_linger_ms);
        }
        self.write_blocked = short;
        if self.write_blocked {
            if self.stalled_since_ms == 0 {
                self.stalled_since_ms = now_ms;
            }
        } else if self.out_bytes <= config.queue_bytes_max {
            self.stalled_since_ms = 0;
        }
    }

    /// The earliest time `handle_timeout` has something to do; `None` when
    /// nothing is pending (a done session).
    pub fn poll_timeout(&self, config: &SessionConfig) -> Option<u64> {
        // A refusal or an echoed close is done once flushed, while its phase
        // is still `Closing`: it has no deadline left either.
        if self.is_done() {
            return None;
        }
        match self.phase {
            Phase::Done => None,
            Phase::Handshake(_) | Phase::Admitting { .. } | Phase::Closing { .. } => {
                Some(self.deadline_ms)
            }
            Phase::Open => {
                let heartbeat = if self.ping_sent_ms != 0 {
                    self.ping_sent_ms + config.pong_timeout_ms
                } else {
                    self.last_rx_ms + config.ping_interval_ms
                };
                let mut at = heartbeat;
                if self.expires_at_ms != 0 {
                    at = at.min(self.expires_at_ms);
                }
                if self.stalled_since_ms != 0 {
                    at = at.min(self.stalled_since_ms + config.slow_consumer_timeout_ms);
                }
                if self.partial.is_some() {
                    at = at.min(self.last_rx_ms + config.read_progress_timeout_ms);
                }
                Some(at)
            }
        }
    }

    /// Does what is due at `now`: pings, heartbeat and expiry closes, the
    /// slow-consumer cut, handshake and close deadlines.
    pub fn handle_timeout(&mut self, now_ms: u64, config: &SessionConfig) -> Option<Timeout> {
        match self.phase {
            Phase::Done => None,
            Phase::Handshake(_) => (now_ms >= self.deadline_ms).then(|| {
                let response = http_error_response(
                    408,
                    "handshake_timeout",
                    "the upgrade request did not arrive in time",
                    &[],
                );
                self.refuse(now_ms, Bytes::from(response), config);
                Timeout::Handshake
            }),
            Phase::Admitting { .. } => (now_ms >= self.deadline_ms).then(|| {
                let response = http_error_response(
                    503,
                    "admission_timeout",
                    "the connection could not be admitted in time; retry later",
                    &[("Retry-After", "5")],
                );
                // `refuse` only acts on a session that is not closing.
                self.phase = Phase::Handshake(Vec::new());
                self.refuse(now_ms, Bytes::from(response), config);
                Timeout::Admission
            }),
            Phase::Closing { .. } => (now_ms >= self.deadline_ms).then(|| {
                self.phase = Phase::Done;
                Timeout::Linger
            }),
            Phase::Open => {
                let (reason, timeout) = if self.expires_at_ms != 0 && now_ms >= self.expires_at_ms {
                    (
                        CloseReason {
                            code: CloseCode::TOKEN_EXPIRED,
                            reason: "token expired",
                            flush_queue: true,
                        },
                        Timeout::TokenExpired,
                    )
                } else if self.stalled_since_ms != 0
                    && now_ms.saturating_sub(self.stalled_since_ms)
                        >= config.slow_consumer_timeout_ms
                {
                    (CloseReason::SLOW_CONSUMER, Timeout::SlowConsumer)
                } else if self.partial.is_some()
                    && now_ms.saturating_sub(self.last_rx_ms) >= config.read_progress_timeout_ms
                {
                    (
                        CloseReason {
                            code: CloseCode::READ_TIMEOUT,
                            reason: "part of a frame, then nothing",
                            flush_queue: true,
                        },
                        Timeout::ReadStalled,
                    )
                } else if self.ping_sent_ms != 0 {
                    if now_ms.saturating_sub(self.ping_sent_ms) < config.pong_timeout_ms {
                        return None;
                    }
                    (
                        CloseReason {
                            code: CloseCode::HEARTBEAT_TIMEOUT,
                            reason: "heartbeat timeout",
                            flush_queue: false,
                        },
                        Timeout::Heartbeat,
                    )
                } else if now_ms.saturating_sub(self.last_rx_ms) >= config.ping_interval_ms {
                    self.ping_sent_ms = now_ms.max(1);
                    self.push(Bytes::from_static(&PING_FRAME));
                    return Some(Timeout::Ping);
                } else {
                    return None;
                };
                self.close(now_ms, reason, config);
                Some(timeout)
            }
        }
    }

    /// The shared frame of `publication` this connection receives.
    fn frame_of(&self, publication: &Publication, config: &SessionConfig) -> Bytes {
        publication
            .frame_for(self.binary, self.deflate(), config.compression_min_bytes)
            .clone()
    }

    fn push(&mut self, frame: Bytes) {
        self.out_bytes += frame.len();
        self.out.push_back(frame);
    }

    /// Drops what has not been handed to the kernel; bytes in flight stay,
    /// and so does the rest of a frame a short write began: dropping it
    /// would make the peer read the next frame (our close) as its payload.
    fn drop_unsent(&mut self) {
        let keep_bytes = if self.front_partial {
            self.in_flight.max(1)
        } else {
            self.in_flight
        };
        let mut keep = 0;
        let mut kept_bytes = 0;
        for frame in &self.out {
            if kept_bytes >= keep_bytes {
                break;
            }
            kept_bytes += frame.len();
            keep += 1;
        }
        self.out.truncate(keep);
        self.out_bytes = kept_bytes;
    }

    /// Drops `n` written bytes from the front of the queue.
    fn consume(&mut self, mut n: usize) {
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
                self.front_partial = false;
            } else {
                bytes::Buf::advance(front, n);
                n = 0;
                self.front_partial = true;
            }
        }
        debug_assert_eq!(
            self.out_bytes,
            self.out.iter().map(Bytes::len).sum::<usize>()
        );
    }
}

/// An unmasked ping with no payload: `FIN | Ping`, length 0.
const PING_FRAME: [u8; 2] = [0x89, 0x00];
