//! One WebSocket client connection: a state machine driven by the worker's
//! poll loop (readiness events in, bytes out).
//!
//! The wire work is `ringcast-protocol`'s: `handshake::client_request` and
//! `parse_response` for the upgrade, `frame::encode_frame` with a mask for
//! client frames (RFC 6455 requires masking client-to-server frames), and
//! `frame::Decoder` with `Role::Client` for server frames. Using the
//! engine's own codec is deliberate for this cut (no second implementation
//! to maintain); a codec bug shared by both sides is what the engine's
//! tungstenite-based integration tests are for.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;
use ringcast_protocol::close::CloseCode;
use ringcast_protocol::frame::{self, Decoder, Limits, Message, OpCode, Role};
use ringcast_protocol::handshake;

use crate::stats::{count_error, record, ErrorKind};
use crate::worker::{Rng, Tally};

/// Server frames larger than this are a protocol error for the load
/// generator (pushes in these scenarios are a few hundred bytes).
const MESSAGE_BYTES_MAX: usize = 1 << 20;
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// The id of the one command this client sends (subscribe).
const SUBSCRIBE_ID: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TCP connect in progress.
    TcpConnecting,
    /// Upgrade request sent; waiting for the 101.
    Upgrading,
    /// Upgraded; waiting for the server's `connect` message.
    AwaitConnect,
    /// `connect` received. In fanout, a subscribe may be in flight.
    Open,
    /// We sent a close frame; waiting for the server's close or EOF.
    Closing,
    /// Finished (cleanly or with a counted error); drop it.
    Done,
}

/// Per-run settings every connection shares.
pub struct ClientSettings {
    /// `Some(channel)` in fanout: subscribe once `connect` arrives.
    pub channel: Option<String>,
    /// fanout: number of publications (sequence numbers `0..publications`).
    pub publications: u64,
    /// reconnect: track the inbox's offsets instead of fanout's sequence
    /// numbers.
    pub inbox: bool,
}

/// reconnect: where a connection (or the user it reconnects as) stands in
/// its inbox.
#[derive(Debug, Clone, Default)]
pub struct InboxState {
    pub last_offset: Option<u64>,
    pub epoch: Option<String>,
    pub last_seq: Option<u64>,
}

pub struct Conn {
    pub stream: TcpStream,
    pub phase: Phase,
    /// When the TCP connect started (connect latency starts here).
    pub started: Instant,
    pub subscribed: bool,
    key: String,
    request: Vec<u8>,
    read_buf: Vec<u8>,
    write_buf: Vec<u8>,
    decoder: Decoder,
    /// fanout: one bit per sequence number received.
    seen: Vec<u64>,
    seq_max: Option<u64>,
    /// reconnect: the inbox position carried across a reconnect.
    pub inbox: InboxState,
    /// reconnect: set on a reconnecting connection until its id-0 recovery
    /// reply arrives (recovery latency starts at `started`).
    pub recovering: bool,
}

/// What the poll loop should do after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Keep,
    Drop,
}

enum Inbound {
    Nothing,
    Connect,
    Reply {
        id: u64,
        error: Option<String>,
    },
    Push {
        seq: u64,
        intended_us: u64,
        offset: Option<u64>,
        epoch: Option<String>,
    },
    Recovery {
        recovered: bool,
        replayed: u64,
    },
    Ping(Vec<u8>),
    Close(Option<u16>),
}

impl Conn {
    /// `stream` must have a non-blocking connect in progress.
    pub fn new(
        stream: TcpStream,
        started: Instant,
        host: &str,
        path_and_query: &str,
        rng: &mut Rng,
        publications: u64,
    ) -> Conn {
        let key = handshake::client_key(rng.bytes16());
        let request = handshake::client_request(host, path_and_query, &key, &[]);
        let words = publications.div_ceil(64) as usize;
        Conn {
            stream,
            phase: Phase::TcpConnecting,
            started,
            subscribed: false,
            key,
            request,
            read_buf: Vec::new(),
            write_buf: Vec::new(),
            decoder: Decoder::new(),
            seen: vec![0; words],
            seq_max: None,
            inbox: InboxState::default(),
            recovering: false,
        }
    }

    /// Handle one readiness event. Counts every error in `tally`.
    pub fn on_ready(
        &mut self,
        tally: &mut Tally,
        settings: &ClientSettings,
        rng: &mut Rng,
        now: Instant,
    ) -> Next {
        if self.phase == Phase::TcpConnecting {
            match self.stream.take_error() {
                Ok(None) => {}
                Ok(Some(error)) | Err(error) => {
                    return self.fail(tally, ErrorKind::ConnectRefused, &io_kind(&error))
                }
            }
            match self.stream.peer_addr() {
                Ok(_) => {}
                // Spurious wakeup: still connecting.
                Err(error) if error.kind() == io::ErrorKind::NotConnected => return Next::Keep,
                Err(error) => return self.fail(tally, ErrorKind::ConnectRefused, &io_kind(&error)),
            }
            self.write_buf = std::mem::take(&mut self.request);
            self.phase = Phase::Upgrading;
        }
        if self.flush(tally) == Next::Drop {
            return Next::Drop;
        }
        self.read_all(tally, settings, rng, now)
    }

    /// Start a clean close (connect scenario end, fanout end).
    pub fn close(&mut self, tally: &mut Tally, rng: &mut Rng) -> Next {
        if self.phase != Phase::Open {
            self.phase = Phase::Done;
            return Next::Drop;
        }
        self.phase = Phase::Closing;
        let frame = frame::encode_close(CloseCode::NORMAL, "", Some(rng.mask()));
        self.write_buf.extend_from_slice(&frame);
        self.flush(tally)
    }

    /// Count a timeout in the current phase and finish.
    pub fn time_out(&mut self, tally: &mut Tally) -> Next {
        let step = match self.phase {
            Phase::TcpConnecting => "tcp",
            Phase::Upgrading => "upgrade",
            Phase::AwaitConnect => "connect_msg",
            Phase::Open if self.recovering => "recovery",
            Phase::Open => "subscribe",
            Phase::Closing => "close",
            Phase::Done => return Next::Drop,
        };
        self.fail(tally, ErrorKind::Timeout, step)
    }

    /// fanout: is sequence number `seq` received?
    pub fn has_seen(&self, seq: u64) -> bool {
        self.seen
            .get((seq / 64) as usize)
            .is_some_and(|word| word & (1 << (seq % 64)) != 0)
    }

    fn fail(&mut self, tally: &mut Tally, kind: ErrorKind, detail: &str) -> Next {
        if self.phase == Phase::Open || self.phase == Phase::Closing {
            tally.open = tally.open.saturating_sub(1);
        }
        count_error(&mut tally.errors, kind, detail);
        self.phase = Phase::Done;
        Next::Drop
    }

    fn flush(&mut self, tally: &mut Tally) -> Next {
        while !self.write_buf.is_empty() {
            match self.stream.write(&self.write_buf) {
                Ok(0) => return self.fail(tally, ErrorKind::ProtocolClose, "write_zero"),
                Ok(n) => {
                    self.write_buf.drain(..n);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return self.fail_io(tally, &error),
            }
        }
        Next::Keep
    }

    fn fail_io(&mut self, tally: &mut Tally, error: &io::Error) -> Next {
        if self.phase == Phase::Closing {
            // The server may drop the socket right after its close frame.
            self.phase = Phase::Done;
            tally.open = tally.open.saturating_sub(1);
            return Next::Drop;
        }
        self.fail(tally, ErrorKind::ProtocolClose, &io_kind(error))
    }

    fn read_all(
        &mut self,
        tally: &mut Tally,
        settings: &ClientSettings,
        rng: &mut Rng,
        now: Instant,
    ) -> Next {
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    if self.phase == Phase::Closing {
                        tally.open = tally.open.saturating_sub(1);
                        self.phase = Phase::Done;
                        return Next::Drop;
                    }
                    return self.fail(tally, ErrorKind::ProtocolClose, "eof");
                }
                Ok(n) => {
                    self.read_buf.extend_from_slice(&chunk[..n]);
                    if self.process(tally, settings, rng, now) == Next::Drop {
                        return Next::Drop;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return self.fail_io(tally, &error),
            }
        }
    }

    fn process(
        &mut self,
        tally: &mut Tally,
        settings: &ClientSettings,
        rng: &mut Rng,
        now: Instant,
    ) -> Next {
        if self.phase == Phase::Upgrading {
            match handshake::parse_response(&self.read_buf, &self.key) {
                Ok(None) => return Next::Keep,
                Ok(Some((_, consumed))) => {
                    self.read_buf.drain(..consumed);
                    self.phase = Phase::AwaitConnect;
                }
                Err(error) => {
                    return self.fail(tally, ErrorKind::HandshakeStatus, &error.status.to_string())
                }
            }
        }
        let limits = Limits {
            frame_bytes_max: MESSAGE_BYTES_MAX,
            message_bytes_max: MESSAGE_BYTES_MAX,
        };
        let mut pos = 0;
        let mut next = Next::Keep;
        while pos < self.read_buf.len() && next == Next::Keep {
            let (consumed, inbound) =
                match self
                    .decoder
                    .decode(&mut self.read_buf[pos..], Role::Client, &limits)
                {
                    Ok(None) => break,
                    Ok(Some(decoded)) => (decoded.consumed, classify(decoded.message)),
                    Err(error) => {
                        next = self.fail(
                            tally,
                            ErrorKind::ProtocolClose,
                            &format!("decode_{}", error.close_code.0),
                        );
                        break;
                    }
                };
            pos += consumed;
            next = self.apply(tally, settings, rng, now, inbound);
        }
        self.read_buf.drain(..pos.min(self.read_buf.len()));
        next
    }

    fn apply(
        &mut self,
        tally: &mut Tally,
        settings: &ClientSettings,
        rng: &mut Rng,
        now: Instant,
        inbound: Inbound,
    ) -> Next {
        match inbound {
            Inbound::Nothing => Next::Keep,
            Inbound::Connect if self.phase == Phase::AwaitConnect => {
                self.phase = Phase::Open;
                tally.open += 1;
                if self.recovering {
                    // A reconnect: measured as recovery latency instead.
                    return Next::Keep;
                }
                tally.connected += 1;
                let latency_us = now.saturating_duration_since(self.started).as_micros() as u64;
                record(&mut tally.connect_hist, latency_us);
                if let Some(channel) = &settings.channel {
                    let command = serde_json::json!({
                        "id": SUBSCRIBE_ID, "method": "subscribe", "params": {"channel": channel}
                    });
                    let frame = frame::encode_frame(
                        OpCode::Text,
                        command.to_string().as_bytes(),
                        Some(rng.mask()),
                    );
                    self.write_buf.extend_from_slice(&frame);
                    return self.flush(tally);
                }
                Next::Keep
            }
            Inbound::Connect => Next::Keep,
            Inbound::Reply { id, error } if id == SUBSCRIBE_ID => match error {
                None => {
                    if !self.subscribed {
                        self.subscribed = true;
                        tally.subscribed += 1;
                    }
                    Next::Keep
                }
                Some(code) => {
                    self.fail(tally, ErrorKind::CommandError, &format!("subscribe_{code}"))
                }
            },
            Inbound::Recovery {
                recovered,
                replayed,
            } => {
                if self.recovering {
                    self.recovering = false;
                    tally.reconnected += 1;
                    if recovered {
                        tally.recovered_true += 1;
                    } else {
                        tally.recovered_false += 1;
                    }
                    tally.replayed += replayed;
                    let latency_us = now.saturating_duration_since(self.started).as_micros() as u64;
                    record(&mut tally.recovery_hist, latency_us);
                }
                Next::Keep
            }
            Inbound::Reply { id: 0, error } => {
                let code = error.unwrap_or_else(|| "no_recovery".to_owned());
                count_error(
                    &mut tally.errors,
                    ErrorKind::CommandError,
                    &format!("recovery_{code}"),
                );
                self.recovering = false;
                Next::Keep
            }
            Inbound::Reply { .. } => Next::Keep,
            Inbound::Push {
                seq,
                intended_us,
                offset,
                epoch,
            } if settings.inbox => {
                self.on_inbox_push(tally, seq, intended_us, offset, epoch);
                Next::Keep
            }
            Inbound::Push {
                seq, intended_us, ..
            } => {
                if seq >= settings.publications {
                    count_error(
                        &mut tally.errors,
                        ErrorKind::ProtocolClose,
                        "unexpected_seq",
                    );
                    return Next::Keep;
                }
                if self.has_seen(seq) {
                    tally.duplicated += 1;
                    return Next::Keep;
                }
                self.seen[(seq / 64) as usize] |= 1 << (seq % 64);
                if self.seq_max.is_some_and(|max| seq < max) {
                    tally.out_of_order += 1;
                }
                self.seq_max = Some(self.seq_max.map_or(seq, |max| max.max(seq)));
                tally.received += 1;
                record(
                    &mut tally.push_hist,
                    crate::worker::unix_us().saturating_sub(intended_us),
                );
                Next::Keep
            }
            Inbound::Ping(payload) => {
                let frame = frame::encode_frame(OpCode::Pong, &payload, Some(rng.mask()));
                self.write_buf.extend_from_slice(&frame);
                self.flush(tally)
            }
            Inbound::Close(code) => {
                if self.phase == Phase::Closing {
                    tally.open = tally.open.saturating_sub(1);
                    self.phase = Phase::Done;
                    return Next::Drop;
                }
                let detail = code.map_or_else(|| "none".to_owned(), |code| code.to_string());
                self.fail(tally, ErrorKind::ProtocolClose, &detail)
            }
        }
    }
}

impl Conn {
    /// reconnect: one push of the inbox. Offsets must follow each other
    /// (a jump is a gap, a repeat or step back a duplicate), `seq` must grow.
    fn on_inbox_push(
        &mut self,
        tally: &mut Tally,
        seq: u64,
        intended_us: u64,
        offset: Option<u64>,
        epoch: Option<String>,
    ) {
        let Some(offset) = offset else {
            count_error(&mut tally.errors, ErrorKind::ProtocolClose, "no_offset");
            return;
        };
        if epoch.is_some() {
            self.inbox.epoch = epoch;
        }
        match self.inbox.last_offset {
            Some(last) if offset <= last => {
                tally.duplicated += 1;
                return;
            }
            Some(last) => tally.gaps += offset - last - 1,
            None => {}
        }
        self.inbox.last_offset = Some(offset);
        if self.inbox.last_seq.is_some_and(|last| seq <= last) {
            tally.out_of_order += 1;
        }
        self.inbox.last_seq = Some(self.inbox.last_seq.map_or(seq, |last| last.max(seq)));
        tally.received += 1;
        if !self.recovering {
            // Replayed pushes would measure the outage, not the push path.
            record(
                &mut tally.push_hist,
                crate::worker::unix_us().saturating_sub(intended_us),
            );
        }
    }
}

fn classify(message: Option<Message<'_>>) -> Inbound {
    match message {
        Some(Message::Text(bytes)) => classify_text(bytes),
        Some(Message::Ping(payload)) => Inbound::Ping(payload.to_vec()),
        Some(Message::Close(close)) => Inbound::Close(close.map(|(code, _)| code.0)),
        Some(Message::Binary(_) | Message::Pong(_)) | None => Inbound::Nothing,
    }
}

/// The server's text messages, as far as the load generator reads them.
/// Typed (not `serde_json::Value`) because every push goes through here;
/// unknown fields are skipped.
#[derive(serde::Deserialize)]
struct ServerText {
    connect: Option<serde::de::IgnoredAny>,
    push: Option<PushText>,
    id: Option<u64>,
    error: Option<ErrorText>,
    result: Option<ResultText>,
}

#[derive(serde::Deserialize)]
struct PushText {
    data: LoadPayload,
    offset: Option<u64>,
    epoch: Option<String>,
}

#[derive(serde::Deserialize)]
struct ResultText {
    recovery: Option<RecoveryText>,
}

#[derive(serde::Deserialize)]
struct RecoveryText {
    recovered: bool,
    #[serde(default)]
    replayed: u64,
}

/// The payload the fanout publisher sends.
#[derive(serde::Deserialize)]
struct LoadPayload {
    seq: u64,
    /// fanout sends `t_us`, reconnect (`/api/send`) sends `t`.
    #[serde(alias = "t")]
    t_us: u64,
}

#[derive(serde::Deserialize)]
struct ErrorText {
    code: Option<serde_json::Value>,
}

fn classify_text(bytes: &[u8]) -> Inbound {
    // A message that does not parse as one of these (a push with some other
    // payload, say) is not the load generator's business.
    let Ok(text) = serde_json::from_slice::<ServerText>(bytes) else {
        return Inbound::Nothing;
    };
    if text.connect.is_some() {
        return Inbound::Connect;
    }
    if let Some(push) = text.push {
        return Inbound::Push {
            seq: push.data.seq,
            intended_us: push.data.t_us,
            offset: push.offset,
            epoch: push.epoch,
        };
    }
    if let (Some(0), None, Some(recovery)) = (
        text.id,
        text.error.as_ref(),
        text.result.as_ref().and_then(|r| r.recovery.as_ref()),
    ) {
        return Inbound::Recovery {
            recovered: recovery.recovered,
            replayed: recovery.replayed,
        };
    }
    if let Some(id) = text.id {
        let error = text.error.map(|error| {
            error
                .code
                .map_or_else(|| "unknown".to_owned(), |code| code.to_string())
        });
        return Inbound::Reply { id, error };
    }
    Inbound::Nothing
}

pub fn io_kind(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::ECONNREFUSED) => "econnrefused".to_owned(),
        Some(libc::EADDRNOTAVAIL) => "eaddrnotavail".to_owned(),
        Some(libc::ECONNRESET) => "econnreset".to_owned(),
        Some(libc::ETIMEDOUT) => "etimedout".to_owned(),
        Some(code) => format!("errno_{code}"),
        None => format!("{:?}", error.kind()).to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> String {
        match classify_text(text.as_bytes()) {
            Inbound::Nothing => "nothing".to_owned(),
            Inbound::Connect => "connect".to_owned(),
            Inbound::Reply { id, error } => format!("reply {id} {error:?}"),
            Inbound::Push {
                seq,
                intended_us,
                offset,
                epoch,
            } => format!("push {seq} {intended_us} {offset:?} {epoch:?}"),
            Inbound::Recovery {
                recovered,
                replayed,
            } => format!("recovery {recovered} {replayed}"),
            Inbound::Ping(_) | Inbound::Close(_) => unreachable!("not text"),
        }
    }

    #[test]
    fn server_text_is_classified() {
        assert_eq!(
            check(r#"{"connect":{"client":"1","user":"a","ping_interval_ms":25000,"shard":0}}"#),
            "connect"
        );
        assert_eq!(
            check(
                r#"{"push":{"channel":"news:load","id":"7","offset":0,"data":{"seq":3,"t_us":99}}}"#
            ),
            "push 3 99 Some(0) None"
        );
        assert_eq!(
            check(
                r#"{"push":{"channel":"user:a","offset":4,"epoch":"17","data":{"seq":2,"t":5}}}"#
            ),
            "push 2 5 Some(4) Some(\"17\")"
        );
        assert_eq!(
            check(
                r#"{"id":0,"result":{"channel":"user:a","recovery":{"recovered":true,"epoch":"17","offset":4,"start_offset":1,"replayed":2}}}"#
            ),
            "recovery true 2"
        );
        assert_eq!(
            check(r#"{"push":{"channel":"user:a","data":{"text":"hi"}}}"#),
            "nothing"
        );
        assert_eq!(
            check(r#"{"id":1,"result":{"channel":"news:load"}}"#),
            "reply 1 None"
        );
        assert_eq!(
            check(r#"{"id":1,"error":{"code":103,"message":"permission denied"}}"#),
            "reply 1 Some(\"103\")"
        );
        assert_eq!(check("not json"), "nothing");
    }
}
