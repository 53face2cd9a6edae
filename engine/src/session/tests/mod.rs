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

mod flow;
mod lifecycle;
