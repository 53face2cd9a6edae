//! The session on a virtual clock [quinn-proto `tests/util.rs` `Pair`]: a
//! server `Session`, a minimal client that masks its frames and decodes
//! what the server transmits, and a simulated socket between them. No
//! sockets, no sleeps, no threads: bytes move in `Pair::step`, time moves
//! in `Pair::advance`.

use std::io::IoSlice;
use std::sync::Arc;

use bytes::Bytes;
use ringcast_protocol::close::CloseCode;
use ringcast_protocol::envelope::Envelope;
use ringcast_protocol::frame::{
    encode_close, encode_frame, Decoder, Limits, Message, OpCode, Role,
};
use ringcast_protocol::handshake::{client_key, client_request, parse_response, response_101};

use super::{CloseReason, Handshake, Inbound, Offer, Session, SessionConfig, Timeout};
use crate::config::Config;
use crate::limits::{IOV_MAX, QUEUE_HARD_LIMIT_FACTOR, RECOVERY_HELD_MAX};
use crate::publication::Publication;

/// Where the virtual clock starts. Not 0: the session uses 0 for "none"
/// (the shard's clock is Unix milliseconds).
const T0: u64 = 10_000;
const HANDSHAKE_TIMEOUT_MS: u64 = 1_000;
const PING_INTERVAL_MS: u64 = 500;
const PONG_TIMEOUT_MS: u64 = 250;
const SLOW_CONSUMER_TIMEOUT_MS: u64 = 200;
const READ_PROGRESS_TIMEOUT_MS: u64 = 100;
const LINGER_MS: u64 = 1_000;
const QUEUE_BYTES_MAX: usize = 4_096;
/// Bound on `drive_bounded`: a session that is still sending after this
/// many steps is looping.
const STEPS_MAX: usize = 1_000;
/// A socket that takes everything offered.
const UNLIMITED: usize = usize::MAX;
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const CHANNEL: &str = "chat:x";
/// Payload of the frames that fill the queue; with its 4-byte header a
/// frame is `BIG_FRAME_LEN` bytes.
const BIG_PAYLOAD: usize = 1_000;
const BIG_FRAME_LEN: usize = BIG_PAYLOAD + 4;

/// What the client decoded from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The close code, `None` for an empty close.
    Close(Option<u16>),
}

impl From<Message<'_>> for Got {
    fn from(message: Message<'_>) -> Got {
        match message {
            Message::Text(bytes) => Got::Text(String::from_utf8(bytes.to_vec()).unwrap()),
            Message::Binary(bytes) => Got::Binary(bytes.to_vec()),
            Message::Ping(bytes) => Got::Ping(bytes.to_vec()),
            Message::Pong(bytes) => Got::Pong(bytes.to_vec()),
            Message::Close(close) => Got::Close(close.map(|(code, _)| code.0)),
        }
    }
}

/// What `on_message` answered, owned.
#[derive(Debug, PartialEq, Eq)]
enum In {
    Handled,
    Command(Vec<u8>),
    Closing,
    Violation,
}

impl From<Inbound<'_>> for In {
    fn from(inbound: Inbound<'_>) -> In {
        match inbound {
            Inbound::Handled => In::Handled,
            Inbound::Command(bytes) => In::Command(bytes.to_vec()),
            Inbound::Closing => In::Closing,
            Inbound::Violation => In::Violation,
        }
    }
}

/// The client's view of the server's HTTP response.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    Pending,
    /// A valid 101 for our key: what follows are frames.
    Switched,
    /// An HTTP error with this status.
    Refused(u16),
}

struct Client {
    key: String,
    /// Received bytes not decoded yet.
    rx: Vec<u8>,
    head: Head,
    decoder: Decoder,
    got: Vec<Got>,
    /// Times the server half-closed its write side.
    shutdowns: u32,
}

impl Client {
    fn new() -> Client {
        Client {
            key: client_key(*b"ringcast-test-k!"),
            rx: Vec::new(),
            head: Head::Pending,
            decoder: Decoder::new(),
            got: Vec::new(),
            shutdowns: 0,
        }
    }

    /// Bytes from the server: the HTTP head first, then frames.
    fn deliver(&mut self, bytes: &[u8]) {
        self.rx.extend_from_slice(bytes);
        match self.head {
            Head::Pending => match parse_response(&self.rx, &self.key) {
                Ok(None) => return,
                Ok(Some((handshake, consumed))) => {
                    assert_eq!(handshake.status, 101);
                    self.head = Head::Switched;
                    self.rx.drain(..consumed);
                }
                Err(err) => {
                    self.head = Head::Refused(err.status);
                    return;
                }
            },
            Head::Switched => {}
            Head::Refused(_) => return,
        }
        let limits = Limits {
            frame_bytes_max: 1 << 20,
            message_bytes_max: 1 << 20,
        };
        loop {
            let decoded = self
                .decoder
                .decode(&mut self.rx, Role::Client, &limits)
                .unwrap_or_else(|err| panic!("the server sent a malformed frame: {err}"));
            let Some(decoded) = decoded else {
                break;
            };
            let consumed = decoded.consumed;
            if let Some(message) = decoded.message {
                self.got.push(Got::from(message));
            }
            self.rx.drain(..consumed);
        }
    }
}

struct Pair {
    config: SessionConfig,
    server: Session,
    now_ms: u64,
    /// Bytes the simulated kernel accepts per step; 0 is a full socket.
    capacity: usize,
    /// Bytes `start_send` handed to the kernel and `on_sent` has not
    /// reported yet (a ring send waiting for room).
    in_flight: Option<Vec<u8>>,
    client: Client,
}

impl Pair {
    /// A connection just accepted, waiting for its upgrade.
    fn new() -> Pair {
        let mut config = SessionConfig::new(&Config::test_min());
        config.handshake_timeout_ms = HANDSHAKE_TIMEOUT_MS;
        config.ping_interval_ms = PING_INTERVAL_MS;
        config.pong_timeout_ms = PONG_TIMEOUT_MS;
        config.slow_consumer_timeout_ms = SLOW_CONSUMER_TIMEOUT_MS;
        config.read_progress_timeout_ms = READ_PROGRESS_TIMEOUT_MS;
        config.close_linger_ms = LINGER_MS;
        config.queue_bytes_max = QUEUE_BYTES_MAX;
        Pair {
            server: Session::new(T0, &config),
            config,
            now_ms: T0,
            capacity: UNLIMITED,
            in_flight: None,
            client: Client::new(),
        }
    }

    /// An open session at `T0`, its 101 delivered.
    fn open(binary: bool) -> Pair {
        let mut pair = Pair::new();
        let request = pair.request();
        assert!(matches!(pair.handshake(&request), Handshake::Request(_)));
        pair.accept(binary);
        pair.drive_bounded();
        assert_eq!(pair.client.head, Head::Switched);
        assert_eq!(pair.got(), []);
        pair
    }

    fn request(&self) -> Vec<u8> {
        client_request("localhost", "/ws", &self.client.key, &[])
    }

    fn handshake(&mut self, bytes: &[u8]) -> Handshake {
        self.server
            .on_handshake_bytes(self.now_ms, bytes, &self.config)
    }

    fn accept(&mut self, binary: bool) {
        let response = response_101(&self.client.key, None, None);
        self.server
            .accept(self.now_ms, Bytes::from(response), binary, None, 0);
    }

    fn queue(&mut self, frame: Bytes) -> Offer {
        self.server.queue(frame, self.now_ms, &self.config)
    }

    fn offer(&mut self, publication: &Arc<Publication>) -> Offer {
        self.server.offer(publication, self.now_ms, &self.config)
    }

    fn close(&mut self, code: CloseCode, flush_queue: bool) -> bool {
        let reason = CloseReason {
            code,
            reason: "test",
            flush_queue,
        };
        self.server.close(self.now_ms, reason, &self.config)
    }

    fn poll_timeout(&self) -> Option<u64> {
        self.server.poll_timeout(&self.config)
    }

    fn got(&mut self) -> Vec<Got> {
        std::mem::take(&mut self.client.got)
    }

    /// Hands the kernel what `start_send` offers and keeps it in flight;
    /// returns the bytes offered.
    fn begin_send(&mut self) -> usize {
        assert!(self.in_flight.is_none(), "the harness has a send in flight");
        let mut slices = [IoSlice::new(&[]); IOV_MAX];
        let n_slices = self.server.start_send(&mut slices);
        let bytes: Vec<u8> = slices[..n_slices]
            .iter()
            .flat_map(|slice| slice.iter().copied())
            .collect();
        let offered = bytes.len();
        self.in_flight = Some(bytes);
        offered
    }

    /// The kernel took the first `written` bytes in flight: they reach the
    /// client.
    fn complete_send(&mut self, written: usize) {
        let bytes = self.in_flight.take().expect("no send in flight");
        self.server.on_sent(written, self.now_ms, &self.config);
        self.client.deliver(&bytes[..written]);
    }

    /// One flush as the shard does it: one send of what the socket takes,
    /// then the half-close when the session asks for it. Returns the bytes
    /// written.
    fn step(&mut self) -> usize {
        let mut written = 0;
        if self.in_flight.is_none() && self.server.wants_send() && !self.server.is_done() {
            let offered = self.begin_send();
            written = offered.min(self.capacity);
            self.complete_send(written);
        }
        if self.server.take_shutdown() {
            self.client.shutdowns += 1;
        }
        written
    }

    /// Steps until nothing moves.
    fn drive_bounded(&mut self) {
        for _ in 0..STEPS_MAX {
            if self.step() == 0 {
                return;
            }
        }
        panic!("still sending after {STEPS_MAX} steps");
    }

    /// Moves the clock by `ms`, runs the session's timers once as the
    /// shard's sweep does, and flushes.
    fn advance(&mut self, ms: u64) -> Option<Timeout> {
        self.now_ms += ms;
        let timeout = self.server.handle_timeout(self.now_ms, &self.config);
        self.drive_bounded();
        timeout
    }

    /// The client's bytes reach the server, decoded behind the partial
    /// frame of the last read as the shard's `read_frames` does.
    fn server_read(&mut self, bytes: &[u8]) -> Vec<In> {
        let mut buf = self
            .server
            .take_partial()
            .map(Vec::from)
            .unwrap_or_default();
        buf.extend_from_slice(bytes);
        let mut decoder = self.server.take_decoder();
        let mut results = Vec::new();
        let mut start = 0;
        while start < buf.len() {
            let decoded = decoder
                .decode(&mut buf[start..], Role::Server, &self.config.frame)
                .unwrap_or_else(|err| panic!("the client sent a malformed frame: {err}"));
            let Some(decoded) = decoded else {
                break;
            };
            start += decoded.consumed;
            let Some(message) = decoded.message else {
                continue;
            };
            let inbound = In::from(self.server.on_message(self.now_ms, message, &self.config));
            let stop = matches!(inbound, In::Closing | In::Violation);
            results.push(inbound);
            if stop || !self.server.is_open() {
                break;
            }
        }
        self.server.put_decoder(decoder);
        if !bytes.is_empty() {
            self.server.on_receive(self.now_ms);
        }
        if self.server.is_open() {
            self.server.keep_partial(&buf[start..]);
        }
        results
    }

    /// The client sends one masked frame.
    fn client_send(&mut self, opcode: OpCode, payload: &[u8]) -> Vec<In> {
        let frame = encode_frame(opcode, payload, Some(MASK));
        self.server_read(&frame)
    }
}

/// An unmasked text frame as the server queues it.
fn text(payload: &str) -> Bytes {
    encode_frame(OpCode::Text, payload.as_bytes(), None)
}

/// A frame of `BIG_FRAME_LEN` bytes whose payload is `tag` repeated.
fn big(tag: u8) -> Bytes {
    let frame = encode_frame(OpCode::Text, &[tag; BIG_PAYLOAD], None);
    assert_eq!(frame.len(), BIG_FRAME_LEN);
    frame
}

fn got_big(tag: u8) -> Got {
    Got::Text(String::from_utf8(vec![tag; BIG_PAYLOAD]).unwrap())
}

fn publication(channel: &str, offset: u64) -> Arc<Publication> {
    Arc::new(Publication::new(&Envelope {
        id: offset,
        offset,
        epoch: 1,
        channel: channel.to_owned(),
        sender: String::new(),
        time_ms: 0,
        data_is_json: true,
        data: b"{}".to_vec(),
    }))
}

/// The stream offsets of pushes the client got, in order of arrival.
fn offsets(got: &[Got]) -> Vec<u64> {
    got.iter()
        .map(|got| {
            let Got::Text(text) = got else {
                panic!("expected a JSON push, got {got:?}");
            };
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            value["push"]["offset"]
                .as_u64()
                .unwrap_or_else(|| panic!("push without offset: {text}"))
        })
        .collect()
}

// Handshake.

#[test]
fn upgrade_in_pieces_is_incomplete_then_a_request() {
    let mut pair = Pair::new();
    let request = pair.request();
    let (last, head) = request.split_last().unwrap();
    for byte in head.chunks(7) {
        assert!(matches!(pair.handshake(byte), Handshake::Incomplete));
    }
    let Handshake::Request(upgrade) = pair.handshake(&[*last]) else {
        panic!("the complete request was not recognised");
    };
    assert_eq!(upgrade.path, "/ws");
    assert_eq!(upgrade.key, pair.client.key);
    assert!(pair.server.is_handshaking());
    assert_eq!(pair.server.take_partial(), None);
}

#[test]
fn accept_queues_the_101_before_anything_else() {
    let mut pair = Pair::new();
    let request = pair.request();
    assert!(matches!(pair.handshake(&request), Handshake::Request(_)));
    pair.accept(false);
    assert!(pair.server.is_open());
    assert_eq!(pair.queue(text("connect")), Offer::Queued);
    // A few bytes per step: the client sees the head arrive in pieces.
    pair.capacity = 7;
    pair.drive_bounded();
    // `parse_response` refuses anything but a 101 for our key first.
    assert_eq!(pair.client.head, Head::Switched);
    assert_eq!(pair.got(), [Got::Text("connect".into())]);
}

#[test]
fn frames_behind_the_upgrade_in_the_same_read_are_kept() {
    let mut pair = Pair::new();
    let mut bytes = pair.request();
    let frame = encode_frame(OpCode::Text, b"early", Some(MASK));
    bytes.extend_from_slice(&frame);
    assert!(matches!(pair.handshake(&bytes), Handshake::Request(_)));
    assert_eq!(pair.server.take_partial().as_deref(), Some(&frame[..]));
}

/// A read longer than the header limit: the session buffers only up to the
/// limit, and the rest must still reach the decoder.
#[test]
fn frames_behind_the_upgrade_past_the_header_limit_are_kept() {
    let mut pair = Pair::new();
    let mut bytes = pair.request();
    let payloads = [[b'a'; 500], [b'b'; 500], [b'c'; 500]];
    for payload in &payloads {
        bytes.extend_from_slice(&encode_frame(OpCode::Text, payload, Some(MASK)));
    }
    assert!(bytes.len() > pair.config.handshake.header_bytes_max + 1);
    assert!(matches!(pair.handshake(&bytes), Handshake::Request(_)));
    pair.accept(false);
    let commands: Vec<In> = payloads.iter().map(|p| In::Command(p.to_vec())).collect();
    assert_eq!(pair.server_read(&[]), commands);
}

#[test]
fn malformed_request_is_refused_and_done_after_the_flush() {
    let mut pair = Pair::new();
    let request = pair.request();
    let post = [b"POST", &request[3..]].concat();
    pair.capacity = 0;
    assert!(matches!(pair.handshake(&post), Handshake::Refused));
    assert!(pair.server.is_closing());
    pair.drive_bounded();
    assert!(!pair.server.is_done(), "done before the response went out");
    pair.capacity = UNLIMITED;
    pair.drive_bounded();
    assert_eq!(pair.client.head, Head::Refused(405));
    // No EOF from the peer, no timeout: the flush is enough.
    assert!(pair.server.is_done());
    assert_eq!(pair.client.shutdowns, 0);
}

#[test]
fn driver_refusal_is_sent_and_done_after_the_flush() {
    let mut pair = Pair::new();
    let request = pair.request();
    assert!(matches!(pair.handshake(&request), Handshake::Request(_)));
    let response =
        ringcast_protocol::handshake::http_error_response(401, "unauthorized", "no", &[]);
    let (now_ms, config) = (pair.now_ms, pair.config.clone());
    pair.server.refuse(now_ms, Bytes::from(response), &config);
    assert!(!pair.server.is_done());
    pair.drive_bounded();
    assert_eq!(pair.client.head, Head::Refused(401));
    assert!(pair.server.is_done());
}

#[test]
fn handshake_timeout_queues_a_408_and_is_done_after_the_flush() {
    let mut pair = Pair::new();
    assert_eq!(pair.poll_timeout(), Some(T0 + HANDSHAKE_TIMEOUT_MS));
    let request = pair.request();
    assert!(matches!(
        pair.handshake(&request[..20]),
        Handshake::Incomplete
    ));
    assert_eq!(pair.advance(HANDSHAKE_TIMEOUT_MS - 1), None);
    // Bytes arriving do not move the deadline.
    assert_eq!(pair.poll_timeout(), Some(T0 + HANDSHAKE_TIMEOUT_MS));
    pair.capacity = 0;
    assert_eq!(pair.advance(1), Some(Timeout::Handshake));
    assert!(!pair.server.is_done(), "done before the 408 went out");
    pair.capacity = UNLIMITED;
    pair.drive_bounded();
    assert_eq!(pair.client.head, Head::Refused(408));
    assert!(pair.server.is_done());
    assert_eq!(pair.poll_timeout(), None);
}

#[test]
fn close_during_the_handshake_is_done_at_once() {
    let mut pair = Pair::new();
    assert!(pair.close(CloseCode::GOING_AWAY, true));
    assert!(pair.server.is_done());
    pair.drive_bounded();
    assert_eq!(pair.client.head, Head::Pending);
    assert_eq!(pair.client.rx, b"");
}

// Awaiting admission (the connect proxy).

const ADMISSION_WAIT_MS: u64 = 300;

/// A session whose request is parsed, with a frame the client sent right
/// behind it, waiting for its admission decision.
fn admitting() -> Pair {
    let mut pair = Pair::new();
    let mut request = pair.request();
    request.extend_from_slice(&encode_frame(OpCode::Text, b"early", Some(MASK)));
    assert!(matches!(pair.handshake(&request), Handshake::Request(_)));
    assert!(
        !pair.server.request_head().is_empty(),
        "the head is kept for the proxy"
    );
    pair.server
        .await_admission(pair.now_ms, 7, ADMISSION_WAIT_MS);
    assert_eq!(pair.server.admitting(), Some(7));
    assert!(pair.server.request_head().is_empty());
    pair
}

#[test]
fn awaiting_admission_sends_nothing_until_the_decision_then_opens() {
    let mut pair = admitting();
    assert_eq!(pair.poll_timeout(), Some(T0 + ADMISSION_WAIT_MS));
    // Longer than any heartbeat: still nothing is sent, no ping, no close.
    assert_eq!(pair.advance(ADMISSION_WAIT_MS - 1), None);
    assert!(!pair.server.wants_send());
    assert_eq!(pair.client.head, Head::Pending);
    assert_eq!(pair.client.rx, b"", "not a byte before the decision");
    assert!(!pair.server.is_open() && !pair.server.is_closing());
    pair.accept(false);
    pair.drive_bounded();
    assert_eq!(pair.client.head, Head::Switched);
    assert!(pair.server.is_open());
    assert_eq!(pair.server.admitting(), None);
    // The frame sent behind the request waited and is read now.
    assert_eq!(pair.server_read(b""), [In::Command(b"early".to_vec())]);
}

#[test]
fn an_admission_that_never_comes_is_refused_with_503_at_the_deadline() {
    let mut pair = admitting();
    assert_eq!(pair.advance(ADMISSION_WAIT_MS), Some(Timeout::Admission));
    assert_eq!(pair.client.head, Head::Refused(503));
    assert!(pair.server.is_done());
    assert_eq!(pair.poll_timeout(), None);
}

#[test]
fn a_denied_admission_completes_the_upgrade_then_closes_with_the_code() {
    let mut pair = admitting();
    pair.advance(10);
    let response = Bytes::from(response_101(&pair.client.key, None, None));
    let long = "é".repeat(100);
    pair.server.accept_then_close(
        pair.now_ms,
        response,
        CloseCode::CONNECT_DENIED,
        &long,
        &pair.config,
    );
    pair.drive_bounded();
    assert_eq!(pair.client.head, Head::Switched);
    assert_eq!(pair.got(), [Got::Close(Some(4403))]);
    assert_eq!(pair.client.shutdowns, 1, "FIN after the close frame");
    // The peer's close echo ends it.
    pair.server.on_eof();
    assert!(pair.server.is_done());
}

#[test]
fn close_while_awaiting_admission_is_done_at_once() {
    let mut pair = admitting();
    assert!(pair.close(CloseCode::GOING_AWAY, true));
    assert!(pair.server.is_done());
    pair.drive_bounded();
    assert_eq!(pair.client.rx, b"");
}

// Heartbeat.

#[test]
fn silence_gets_a_ping_then_a_4005_close() {
    let mut pair = Pair::open(false);
    assert_eq!(pair.poll_timeout(), Some(T0 + PING_INTERVAL_MS));
    assert_eq!(pair.advance(PING_INTERVAL_MS - 1), None);
    assert_eq!(pair.got(), []);
    assert_eq!(pair.advance(1), Some(Timeout::Ping));
    assert_eq!(pair.got(), [Got::Ping(Vec::new())]);
    assert_eq!(
        pair.poll_timeout(),
        Some(T0 + PING_INTERVAL_MS + PONG_TIMEOUT_MS)
    );
    assert_eq!(pair.advance(PONG_TIMEOUT_MS - 1), None);
    assert!(pair.server.is_open());
    assert_eq!(pair.advance(1), Some(Timeout::Heartbeat));
    assert!(pair.server.is_closing());
    assert_eq!(pair.got(), [Got::Close(Some(4005))]);
}

#[test]
fn a_pong_clears_the_outstanding_ping() {
    let mut pair = Pair::open(false);
    assert_eq!(pair.advance(PING_INTERVAL_MS), Some(Timeout::Ping));
    pair.advance(100);
    assert_eq!(pair.client_send(OpCode::Pong, b""), [In::Handled]);
    let heard_at = pair.now_ms;
    assert_eq!(pair.poll_timeout(), Some(heard_at + PING_INTERVAL_MS));
    // Past the pong timeout of the first ping: still open.
    assert_eq!(pair.advance(PONG_TIMEOUT_MS), None);
    assert!(pair.server.is_open());
    assert_eq!(
        pair.advance(heard_at + PING_INTERVAL_MS - pair.now_ms),
        Some(Timeout::Ping)
    );
}

#[test]
fn any_received_bytes_clear_the_outstanding_ping() {
    let mut pair = Pair::open(false);
    // The half frame below must not meet the read-progress deadline first.
    pair.config.read_progress_timeout_ms = 10 * PING_INTERVAL_MS;
    assert_eq!(pair.advance(PING_INTERVAL_MS), Some(Timeout::Ping));
    pair.advance(100);
    // One byte of a frame: no message, but the peer is alive.
    let frame = encode_frame(OpCode::Text, b"hello", Some(MASK));
    assert_eq!(pair.server_read(&frame[..1]), []);
    let heard_at = pair.now_ms;
    assert_eq!(pair.poll_timeout(), Some(heard_at + PING_INTERVAL_MS));
    assert_eq!(pair.advance(PONG_TIMEOUT_MS), None);
    assert!(pair.server.is_open());
    // The rest of the frame completes the one byte kept.
    assert_eq!(
        pair.server_read(&frame[1..]),
        [In::Command(b"hello".to_vec())]
    );
}

#[test]
fn heartbeat_close_drops_queued_frames() {
    let mut pair = Pair::open(false);
    assert_eq!(pair.advance(PING_INTERVAL_MS), Some(Timeout::Ping));
    assert_eq!(pair.got(), [Got::Ping(Vec::new())]);
    pair.advance(100);
    pair.capacity = 0;
    assert_eq!(pair.queue(text("stuck")), Offer::Queued);
    pair.drive_bounded();
    // The short write started the stall clock, but the heartbeat is first.
    let pong_deadline = T0 + PING_INTERVAL_MS + PONG_TIMEOUT_MS;
    assert_eq!(pair.poll_timeout(), Some(pong_deadline));
    assert_eq!(
        pair.advance(pong_deadline - pair.now_ms),
        Some(Timeout::Heartbeat)
    );
    pair.capacity = UNLIMITED;
    pair.drive_bounded();
    assert_eq!(pair.got(), [Got::Close(Some(4005))]);
}

// Read progress.

#[test]
fn a_frame_stalled_midway_closes_with_4007_once_progress_stops() {
    let mut pair = Pair::open(false);
    let frame = encode_frame(OpCode::Text, br#"{"id":1,"method":"ping"}"#, Some(MASK));
    // Half a frame: the read-progress deadline starts.
    assert_eq!(pair.server_read(&frame[..5]), []);
    assert_eq!(pair.poll_timeout(), Some(T0 + READ_PROGRESS_TIMEOUT_MS));
    // More of it, later: progress moves the deadline.
    assert_eq!(pair.advance(80), None);
    assert_eq!(pair.server_read(&frame[5..9]), []);
    assert_eq!(
        pair.poll_timeout(),
        Some(pair.now_ms + READ_PROGRESS_TIMEOUT_MS)
    );
    assert_eq!(pair.advance(READ_PROGRESS_TIMEOUT_MS - 1), None);
    assert_eq!(pair.advance(1), Some(Timeout::ReadStalled));
    assert!(pair.server.is_closing());
    assert_eq!(pair.got(), [Got::Close(Some(4007))]);
}

#[test]
fn whole_frames_leave_no_read_progress_deadline() {
    let mut pair = Pair::open(false);
    let ins = pair.client_send(OpCode::Text, br#"{"id":1,"method":"ping"}"#);
    assert_eq!(ins.len(), 1);
    // Only the heartbeat is due: nothing is half-read.
    assert_eq!(pair.poll_timeout(), Some(T0 + PING_INTERVAL_MS));
    assert_eq!(pair.advance(READ_PROGRESS_TIMEOUT_MS * 2), None);
    assert!(pair.server.is_open());
}

// Token expiry.

#[test]
fn token_expiry_closes_with_4001_after_the_queued_frames() {
    let mut pair = Pair::open(false);
    let expires_at = T0 + 300;
    pair.server.set_expires_at_ms(expires_at);
    assert_eq!(pair.poll_timeout(), Some(expires_at));
    pair.advance(250);
    pair.capacity = 0;
    assert_eq!(pair.queue(text("one")), Offer::Queued);
    assert_eq!(pair.queue(text("two")), Offer::Queued);
    pair.drive_bounded();
    assert_eq!(pair.poll_timeout(), Some(expires_at));
    assert_eq!(pair.advance(49), None);
    assert_eq!(pair.advance(1), Some(Timeout::TokenExpired));
    assert!(pair.server.is_closing());
    pair.capacity = UNLIMITED;
    pair.drive_bounded();
    assert_eq!(
        pair.got(),
        [
            Got::Text("one".into()),
            Got::Text("two".into()),
            Got::Close(Some(4001))
        ]
    );
}

// Slow consumers.

/// Queues big frames until the queue is over its bound.
fn fill_over_bound(pair: &mut Pair) -> usize {
    let mut n = 0;
    while pair.server.out_bytes() <= QUEUE_BYTES_MAX {
        assert_eq!(pair.queue(big(b'a' + n as u8)), Offer::Queued);
        n += 1;
    }
    n
}

#[test]
fn full_socket_over_the_bound_closes_with_1013_after_the_timeout() {
    let mut pair = Pair::open(false);
    pair.advance(50);
    pair.capacity = 0;
    fill_over_bound(&mut pair);
    pair.drive_bounded();
    let cut_at = T0 + 50 + SLOW_CONSUMER_TIMEOUT_MS;
    assert_eq!(pair.poll_timeout(), Some(cut_at));
    assert_eq!(pair.advance(SLOW_CONSUMER_TIMEOUT_MS - 1), None);
    assert!(pair.server.is_open());
    assert_eq!(pair.advance(1), Some(Timeout::SlowConsumer));
    assert!(pair.server.is_closing());
    pair.capacity = UNLIMITED;
    pair.drive_bounded();
    // The unsent queue is dropped: the close frame is all that goes out.
    assert_eq!(pair.got(), [Got::Close(Some(1013))]);
}

#[test]
fn slow_consumer_close_keeps_the_bytes_in_flight() {
    let mut pair = Pair::open(false);
    let n = fill_over_bound(&mut pair);
    // A ring send takes the whole queue and waits for room.
    assert_eq!(pair.begin_send(), n * BIG_FRAME_LEN);
    assert_eq!(pair.queue(text("behind")), Offer::Queued);
    assert_eq!(
        pair.advance(SLOW_CONSUMER_TIMEOUT_MS),
        Some(Timeout::SlowConsumer)
    );
    pair.complete_send(n * BIG_FRAME_LEN);
    pair.drive_bounded();
    let mut expected: Vec<Got> = (0..n).map(|i| got_big(b'a' + i as u8)).collect();
    expected.push(Got::Close(Some(1013)));
    assert_eq!(pair.got(), expected);
}

/// A frame partly written by a short write is in the stream already: its
/// tail must go out before the close frame, or the peer reads the close as
/// payload.
#[test]
fn slow_consumer_close_finishes_a_partly_written_frame() {
    let mut pair = Pair::open(false);
    fill_over_bound(&mut pair);
    pair.capacity = 100;
    assert_eq!(pair.step(), 100);
    pair.capacity = 0;
    assert_eq!(
        pair.advance(SLOW_CONSUMER_TIMEOUT_MS),
        Some(Timeout::SlowConsumer)
    );
    pair.capacity = UNLIMITED;
    pair.drive_bounded();
    assert_eq!(pair.got(), [got_big(b'a'), Got::Close(Some(1013))]);
}

/// A layer that takes part of what is offered (TLS: rustls holds at most
/// 16 KiB) is not a full socket: only the socket's own short write starts
/// the slow-consumer clock.
#[test]
fn a_partial_take_by_a_buffering_layer_is_not_a_stall() {
    let mut pair = Pair::open(false);
    // Under the bound (a replay keeps its queue near half of it).
    let half = BIG_FRAME_LEN / 2;
    while pair.server.out_bytes() + BIG_FRAME_LEN <= QUEUE_BYTES_MAX {
        assert_eq!(pair.queue(big(b'a')), Offer::Queued);
    }
    assert!(
        pair.server.out_bytes() > 3 * half,
        "more queued than taken below"
    );
    for _ in 0..3 {
        let offered = pair.begin_send();
        let bytes = pair.in_flight.take().expect("offered");
        assert_eq!(pair.server.on_buffered(half), offered);
        pair.client.deliver(&bytes[..half]);
        // The socket took everything it was given.
        pair.server.on_wire(half, false, pair.now_ms, &pair.config);
        pair.now_ms += SLOW_CONSUMER_TIMEOUT_MS;
        // (A heartbeat ping may come due; a cut may not.)
        assert_ne!(
            pair.server.handle_timeout(pair.now_ms, &pair.config),
            Some(Timeout::SlowConsumer)
        );
        assert!(pair.server.is_open(), "cut although the socket kept up");
    }
    // The socket itself comes back short: now the clock runs.
    let _ = pair.begin_send();
    pair.in_flight = None;
    pair.server.on_buffered(0);
    pair.server.on_wire(0, true, pair.now_ms, &pair.config);
    pair.now_ms += SLOW_CONSUMER_TIMEOUT_MS;
    assert_eq!(
        pair.server.handle_timeout(pair.now_ms, &pair.config),
        Some(Timeout::SlowConsumer)
    );
}

/// The close linger counts from the last write progress: a cut consumer
/// that reads again, slowly, through what the socket held still gets its
/// 1013; one that never reads is released at the linger.
#[test]
fn a_slow_consumer_reading_again_gets_its_close_past_the_first_linger() {
    let mut pair = Pair::open(false);
    pair.capacity = 0;
    let n = fill_over_bound(&mut pair);
    // A ring send takes the whole queue and comes back a little at a time.
    assert_eq!(pair.begin_send(), n * BIG_FRAME_LEN);
    assert_eq!(
        pair.advance(SLOW_CONSUMER_TIMEOUT_MS),
        Some(Timeout::SlowConsumer)
    );
    let cut_at = T0 + SLOW_CONSUMER_TIMEOUT_MS;
    assert_eq!(pair.poll_timeout(), Some(cut_at + LINGER_MS));
    // Most of a linger later the peer has read part of the backlog.
    assert_eq!(pair.advance(LINGER_MS - 1), None);
    pair.complete_send(BIG_FRAME_LEN);
    assert_eq!(pair.poll_timeout(), Some(cut_at + 2 * LINGER_MS - 1));
    assert_eq!(
        pair.advance(LINGER_MS - 1),
        None,
        "progress restarted the linger"
    );
    assert!(!pair.server.is_done());
    pair.capacity = UNLIMITED;
    pair.drive_bounded();
    let mut expected: Vec<Got> = (0..n).map(|i| got_big(b'a' + i as u8)).collect();
    expected.push(Got::Close(Some(1013)));
    assert_eq!(pair.got(), expected);
    // Then nothing more comes from the peer: the linger from the last write ends it.
    let last_write = pair.now_ms;
    assert_eq!(pair.poll_timeout(), Some(last_write + LINGER_MS));
    assert_eq!(pair.advance(LINGER_MS), Some(Timeout::Linger));
    assert!(pair.server.is_done());
}

/// A ring send in flight is not a full socket (on io_uring one is in
/// flight after almost every turn): a burst behind it is queued; once the
/// send comes back short, the socket is full and the hard bound cuts.
#[test]
fn far_over_the_bound_with_a_send_in_flight_is_cut_only_once_a_write_comes_back_short() {
    let mut pair = Pair::open(false);
    assert_eq!(pair.queue(big(b'a')), Offer::Queued);
    assert_eq!(pair.begin_send(), BIG_FRAME_LEN);
    let hard_limit = QUEUE_BYTES_MAX * QUEUE_HARD_LIMIT_FACTOR;
    while pair.server.out_bytes() <= hard_limit {
        assert_eq!(pair.queue(big(b'b')), Offer::Queued);
    }
    assert!(pair.server.is_open());
    // The kernel took only part of the first frame: the socket is full.
    pair.complete_send(BIG_FRAME_LEN / 2);
    assert_eq!(pair.queue(big(b'c')), Offer::SlowConsumer);
    assert!(pair.server.is_closing());
}

#[test]
fn far_over_the_bound_after_a_short_write_closes_at_once() {
    let mut pair = Pair::open(false);
    pair.capacity = 0;
    assert_eq!(pair.queue(big(b'a')), Offer::Queued);
    pair.drive_bounded();
    let hard_limit = QUEUE_BYTES_MAX * QUEUE_HARD_LIMIT_FACTOR;
    while pair.server.out_bytes() + BIG_FRAME_LEN <= hard_limit {
        assert_eq!(pair.queue(big(b'b')), Offer::Queued);
    }
    assert_eq!(pair.queue(big(b'c')), Offer::SlowConsumer);
    pair.capacity = UNLIMITED;
    pair.drive_bounded();
    assert_eq!(pair.got(), [Got::Close(Some(1013))]);
}

/// A burst waiting for the end-of-turn flush is not a slow consumer.
#[test]
fn far_over_the_bound_without_a_full_socket_is_queued() {
    let mut pair = Pair::open(false);
    let hard_limit = QUEUE_BYTES_MAX * QUEUE_HARD_LIMIT_FACTOR;
    let mut n = 0;
    while pair.server.out_bytes() <= hard_limit {
        assert_eq!(pair.queue(big(b'a')), Offer::Queued);
        n += 1;
    }
    assert!(pair.server.is_open());
    pair.drive_bounded();
    assert_eq!(pair.got(), vec![got_big(b'a'); n]);
    assert_eq!(pair.server.out_bytes(), 0);
}

#[test]
fn a_short_write_starts_the_stall_clock_and_a_complete_write_stops_it() {
    let mut pair = Pair::open(false);
    let heartbeat_at = T0 + PING_INTERVAL_MS;
    pair.advance(100);
    let stalled_at = pair.now_ms;
    pair.capacity = 10;
    assert_eq!(pair.queue(text(&"x".repeat(100))), Offer::Queued);
    assert_eq!(pair.step(), 10);
    assert_eq!(
        pair.poll_timeout(),
        Some(stalled_at + SLOW_CONSUMER_TIMEOUT_MS)
    );
    // More blocked writes do not restart the clock.
    pair.capacity = 0;
    assert_eq!(pair.advance(100), None);
    assert_eq!(
        pair.poll_timeout(),
        Some(stalled_at + SLOW_CONSUMER_TIMEOUT_MS)
    );
    pair.capacity = UNLIMITED;
    pair.drive_bounded();
    assert_eq!(pair.server.out_bytes(), 0);
    assert_eq!(pair.poll_timeout(), Some(heartbeat_at));
    assert_eq!(
        pair.advance(stalled_at + SLOW_CONSUMER_TIMEOUT_MS - pair.now_ms),
        None
    );
    assert!(pair.server.is_open());
    assert_eq!(pair.got(), [Got::Text("x".repeat(100))]);
}

// Recovery: the replay merged with live publications.

#[test]
fn recovery_holds_live_publications_and_releases_the_newer_ones() {
    let mut pair = Pair::open(false);
    pair.server.begin_recovery(CHANNEL);
    // The replay reads offsets 1..=5 while 4..=7 arrive live: 4 and 5 were
    // readable in the store before their fan-out reached the shard.
    let replay = |offset| publication(CHANNEL, offset).json_frame().clone();
    assert_eq!(pair.queue(replay(1)), Offer::Queued);
    assert_eq!(pair.queue(replay(2)), Offer::Queued);
    assert_eq!(pair.offer(&publication(CHANNEL, 4)), Offer::Held);
    assert_eq!(pair.queue(replay(3)), Offer::Queued);
    pair.drive_bounded();
    assert_eq!(pair.offer(&publication(CHANNEL, 5)), Offer::Held);
    assert_eq!(pair.queue(replay(4)), Offer::Queued);
    assert_eq!(pair.offer(&publication(CHANNEL, 6)), Offer::Held);
    assert_eq!(pair.queue(replay(5)), Offer::Queued);
    assert_eq!(pair.offer(&publication(CHANNEL, 7)), Offer::Held);
    // Another channel is not held back.
    assert_eq!(pair.offer(&publication("chat:other", 1)), Offer::Queued);
    pair.drive_bounded();
    assert_eq!(offsets(&pair.got()), [1, 2, 3, 4, 5, 1]);

    let (now_ms, config) = (pair.now_ms, pair.config.clone());
    pair.server.end_recovery(CHANNEL, Some(5), now_ms, &config);
    // Late live copies of the replay are dropped; newer ones go out.
    assert_eq!(pair.offer(&publication(CHANNEL, 5)), Offer::Dropped);
    assert_eq!(pair.offer(&publication(CHANNEL, 8)), Offer::Queued);
    pair.drive_bounded();
    assert_eq!(offsets(&pair.got()), [6, 7, 8]);
}

#[test]
fn a_failed_replay_drops_the_held_publications() {
    let mut pair = Pair::open(false);
    pair.server.begin_recovery(CHANNEL);
    assert_eq!(pair.offer(&publication(CHANNEL, 3)), Offer::Held);
    assert_eq!(pair.offer(&publication(CHANNEL, 4)), Offer::Held);
    let (now_ms, config) = (pair.now_ms, pair.config.clone());
    pair.server.end_recovery(CHANNEL, None, now_ms, &config);
    pair.drive_bounded();
    assert_eq!(pair.got(), []);
    // No floor: everything live is queued again.
    assert_eq!(pair.offer(&publication(CHANNEL, 1)), Offer::Queued);
    assert_eq!(pair.offer(&publication(CHANNEL, 5)), Offer::Queued);
    pair.drive_bounded();
    assert_eq!(offsets(&pair.got()), [1, 5]);
}

#[test]
fn too_many_held_publications_close_with_1013() {
    let mut pair = Pair::open(false);
    pair.server.begin_recovery(CHANNEL);
    let live = publication(CHANNEL, 9);
    for _ in 0..RECOVERY_HELD_MAX {
        assert_eq!(pair.offer(&live), Offer::Held);
    }
    assert_eq!(
        pair.queue(publication(CHANNEL, 1).json_frame().clone()),
        Offer::Queued
    );
    assert_eq!(pair.offer(&live), Offer::SlowConsumer);
    assert!(pair.server.is_closing());
    pair.drive_bounded();
    assert_eq!(pair.got(), [Got::Close(Some(1013))]);
}

#[test]
fn forget_recovery_returns_to_plain_queuing() {
    let mut pair = Pair::open(false);
    pair.server.begin_recovery(CHANNEL);
    assert_eq!(pair.offer(&publication(CHANNEL, 3)), Offer::Held);
    pair.server.forget_recovery(CHANNEL);
    assert_eq!(pair.offer(&publication(CHANNEL, 4)), Offer::Queued);
    // Ending a forgotten recovery releases nothing and sets no floor.
    let (now_ms, config) = (pair.now_ms, pair.config.clone());
    pair.server.end_recovery(CHANNEL, Some(10), now_ms, &config);
    assert_eq!(pair.offer(&publication(CHANNEL, 5)), Offer::Queued);
    pair.drive_bounded();
    assert_eq!(offsets(&pair.got()), [4, 5]);
}

// Close codes and the close handshake.

#[test]
fn binary_on_a_json_session_is_a_violation_closed_with_1003() {
    let mut pair = Pair::open(false);
    assert_eq!(
        pair.client_send(OpCode::Text, b"{}"),
        [In::Command(b"{}".to_vec())]
    );
    assert_eq!(pair.client_send(OpCode::Binary, b"\x01"), [In::Violation]);
    assert!(pair.server.is_closing());
    pair.drive_bounded();
    assert_eq!(pair.got(), [Got::Close(Some(1003))]);
}

#[test]
fn text_on_a_binary_session_is_a_violation_closed_with_1003() {
    let mut pair = Pair::open(true);
    assert_eq!(
        pair.client_send(OpCode::Binary, b"\x01"),
        [In::Command(vec![1])]
    );
    assert_eq!(pair.client_send(OpCode::Text, b"{}"), [In::Violation]);
    assert!(pair.server.is_closing());
    pair.drive_bounded();
    assert_eq!(pair.got(), [Got::Close(Some(1003))]);
}

#[test]
fn a_ping_is_answered_with_a_pong_of_the_same_payload() {
    let mut pair = Pair::open(true);
    assert_eq!(pair.client_send(OpCode::Ping, b"abc"), [In::Handled]);
    pair.drive_bounded();
    assert_eq!(pair.got(), [Got::Pong(b"abc".to_vec())]);
    assert!(pair.server.is_open());
}

#[test]
fn a_peer_close_is_echoed_and_done_after_the_flush() {
    let mut pair = Pair::open(false);
    pair.capacity = 0;
    assert_eq!(pair.queue(text("before")), Offer::Queued);
    let close = encode_close(CloseCode(3000), "bye", Some(MASK));
    assert_eq!(pair.server_read(&close), [In::Closing]);
    assert!(pair.server.is_closing());
    pair.drive_bounded();
    assert!(!pair.server.is_done(), "done before the echo went out");
    pair.capacity = UNLIMITED;
    pair.drive_bounded();
    assert_eq!(
        pair.got(),
        [Got::Text("before".into()), Got::Close(Some(3000))]
    );
    // No EOF, no linger: the peer closes after our echo.
    assert!(pair.server.is_done());
}

#[test]
fn an_empty_close_is_answered_with_an_empty_close() {
    let mut pair = Pair::open(false);
    assert_eq!(pair.client_send(OpCode::Close, b""), [In::Closing]);
    pair.drive_bounded();
    assert_eq!(pair.got(), [Got::Close(None)]);
    assert!(pair.server.is_done());
}

#[test]
fn driver_close_flushes_the_queue_first_and_shuts_down_once() {
    let mut pair = Pair::open(false);
    pair.capacity = 0;
    assert_eq!(pair.queue(text("one")), Offer::Queued);
    assert_eq!(pair.queue(text("two")), Offer::Queued);
    pair.drive_bounded();
    assert!(pair.close(CloseCode::GOING_AWAY, true));
    let closed_at = pair.now_ms;
    // The first reason wins; nothing more is queued.
    assert!(!pair.close(CloseCode::INTERNAL_ERROR, false));
    assert_eq!(pair.queue(text("late")), Offer::Dropped);
    assert_eq!(pair.offer(&publication(CHANNEL, 1)), Offer::Dropped);
    pair.drive_bounded();
    assert_eq!(pair.client.shutdowns, 0, "half-closed before the flush");
    pair.capacity = UNLIMITED;
    pair.drive_bounded();
    assert_eq!(
        pair.got(),
        [
            Got::Text("one".into()),
            Got::Text("two".into()),
            Got::Close(Some(1001))
        ]
    );
    assert_eq!(pair.client.shutdowns, 1);
    pair.drive_bounded();
    assert!(!pair.server.take_shutdown());
    assert_eq!(pair.client.shutdowns, 1);
    // Waiting for the peer: its close echo is read and ignored, its EOF
    // ends the session.
    assert!(!pair.server.is_done());
    assert_eq!(pair.poll_timeout(), Some(closed_at + LINGER_MS));
    let echo = encode_close(CloseCode::GOING_AWAY, "", Some(MASK));
    assert_eq!(pair.server_read(&echo), [In::Closing]);
    assert!(!pair.server.is_done());
    pair.server.on_eof();
    assert!(pair.server.is_done());
    assert_eq!(pair.poll_timeout(), None);
}

#[test]
fn without_eof_the_linger_deadline_ends_the_session() {
    let mut pair = Pair::open(false);
    assert!(pair.close(CloseCode::GOING_AWAY, true));
    pair.drive_bounded();
    assert_eq!(pair.got(), [Got::Close(Some(1001))]);
    assert_eq!(pair.client.shutdowns, 1);
    assert_eq!(pair.poll_timeout(), Some(T0 + LINGER_MS));
    assert_eq!(pair.advance(LINGER_MS - 1), None);
    assert!(!pair.server.is_done());
    assert_eq!(pair.advance(1), Some(Timeout::Linger));
    assert!(pair.server.is_done());
    assert_eq!(pair.poll_timeout(), None);
    assert_eq!(pair.advance(LINGER_MS), None);
}

// Sending.

#[test]
fn start_send_offers_nothing_while_a_send_is_in_flight() {
    let mut pair = Pair::open(false);
    assert_eq!(pair.queue(text("one")), Offer::Queued);
    let offered = pair.begin_send();
    assert!(offered > 0);
    assert!(pair.server.send_in_flight());
    assert!(!pair.server.wants_send());
    assert_eq!(pair.queue(text("two")), Offer::Queued);
    assert!(pair.server.wants_send());
    let mut slices = [IoSlice::new(&[]); IOV_MAX];
    assert_eq!(pair.server.start_send(&mut slices), 0);
    pair.complete_send(offered);
    assert!(!pair.server.send_in_flight());
    pair.drive_bounded();
    assert_eq!(
        pair.got(),
        [Got::Text("one".into()), Got::Text("two".into())]
    );
}

/// A replay that outlived its entry (the stream was left, or recovered
/// again) is told apart from the running one by its id.
#[test]
fn each_replay_has_its_own_id_and_only_a_running_one_has_an_id() {
    let mut pair = Pair::open(false);
    let config = pair.config.clone();
    assert_eq!(pair.server.replay_id(CHANNEL), None);
    let first = pair.server.begin_recovery(CHANNEL);
    assert_eq!(pair.server.replay_id(CHANNEL), Some(first));
    let second = pair.server.begin_recovery(CHANNEL);
    assert_ne!(first, second);
    assert_eq!(pair.server.replay_id(CHANNEL), Some(second));
    pair.server.forget_recovery(CHANNEL);
    assert_eq!(pair.server.replay_id(CHANNEL), None);
    let third = pair.server.begin_recovery(CHANNEL);
    let now_ms = pair.now_ms;
    pair.server.end_recovery(CHANNEL, Some(3), now_ms, &config);
    assert_eq!(
        pair.server.replay_id(CHANNEL),
        None,
        "ended: a floor, not a replay"
    );
    assert_ne!(third, second);
}
