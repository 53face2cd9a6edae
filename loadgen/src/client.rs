//! One WebSocket client connection's protocol state, sans I/O: bytes in
//! (`on_bytes`), bytes out (`output`, `consume_output`), events
//! (`tcp_connected`, `fail_connect`, `on_eof`, `fail_io`, `close`,
//! `time_out`). The worker (`worker.rs`) owns the sockets and drives every
//! `Session` from one loop, whichever kernel interface (`poller.rs`: io_uring
//! or epoll) reports readiness, so both drivers count the same way.
//!
//! The wire work is `ringcast-protocol`'s: `handshake::client_request` and
//! `parse_response` for the upgrade, `frame::encode_frame` with a mask for
//! client frames (RFC 6455 requires masking client-to-server frames), and
//! `frame::Decoder` with `Role::Client` for server frames. Using the
//! engine's own codec is deliberate for this cut (no second implementation
//! to maintain); a codec bug shared by both sides is what the engine's
//! tungstenite-based integration tests are for.
//!
//! What the bytes mean is the target profile's business (`profile.rs`):
//! the subprotocol, the subscribe command, how an inbound message maps to
//! an `Inbound`. This module only acts on those.

use std::collections::{HashMap, HashSet};
use std::io;
use std::time::Instant;

use ringcast_protocol::close::CloseCode;
use ringcast_protocol::frame::{self, Decoder, Limits, OpCode, Role};
use ringcast_protocol::handshake;

use crate::chat::{self, ChatPlan, ImKind, SeqTrack, SeqVerdict};
use crate::profile::{Inbound, Outbound, Profile, Push};
use crate::stats::{count_error, record, ErrorKind};
use crate::worker::{Rng, Tally};

/// Server frames larger than this are a protocol error for the load
/// generator (pushes in these scenarios are a few hundred bytes).
const MESSAGE_BYTES_MAX: usize = 1 << 20;
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
    pub profile: Profile,
    /// fanout: number of publications (sequence numbers `0..publications`).
    pub publications: u64,
    /// reconnect: track the inbox's offsets instead of fanout's sequence
    /// numbers.
    pub inbox: bool,
    /// chat: the worker's layout; pushes are tracked per sender.
    pub chat: Option<ChatPlan>,
    /// chat: IM direct messages instead of inbox sends.
    pub im: Option<ImChat>,
}

/// chat, IM: how the users talk (`ChatArgs::im`).
#[derive(Debug, Clone, Copy)]
pub struct ImChat {
    /// Connections per user; connection `i` is device `i % devices` of
    /// user `i / devices`.
    pub devices: u32,
    /// The first device sends `read` after every this many messages from
    /// the peer; 0: never.
    pub read_every: u64,
}

/// chat, IM: `read` commands use ids from here up, far above any message's
/// (`CHAT_ID_FIRST + seq`), so a reply says which of the two it answers.
const READ_ID_FIRST: u64 = 1 << 48;

/// What a connection joins, and so when it counts as subscribed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Join {
    /// Nothing to wait for (connect, reconnect).
    Nothing,
    /// chat pairs: the inbox `user:<id>`, joined by the server at connect.
    Inbox,
    /// A channel: subscribed once the server confirms the profile's
    /// subscribe (or at the 101, where the URL names the channel).
    Channel(String),
}

/// chat: one message to write (`Session::send_chat`).
#[derive(Debug, Clone, Copy)]
pub struct ChatMessage {
    /// Its command id; the reply is matched by it.
    pub id: u64,
    /// When the schedule meant it to go, unix microseconds.
    pub intended_us: u64,
    /// Subscribed recipients (devices) now: the expected deliveries.
    pub recipients: u64,
    /// IM: which kind of message it is, counted apart.
    pub kind: Option<ImKind>,
}

/// chat: a message this connection sent whose reply has not arrived.
#[derive(Debug, Clone, Copy)]
struct PendingAck {
    intended_us: u64,
    /// Subscribed recipients when it was sent (the expected deliveries).
    recipients: u64,
    kind: Option<ImKind>,
}

/// reconnect: where a connection (or the user it reconnects as) stands in
/// its inbox.
#[derive(Debug, Clone, Default)]
pub struct InboxState {
    pub last_offset: Option<u64>,
    pub epoch: Option<String>,
    pub last_seq: Option<u64>,
}

pub struct Session {
    pub phase: Phase,
    /// When the TCP connect started (connect latency starts here).
    pub started: Instant,
    pub subscribed: bool,
    pub join: Join,
    key: String,
    /// Bytes received and not yet a whole frame.
    read_buf: Vec<u8>,
    /// Bytes to send (the upgrade request first); the driver writes them.
    write_buf: Vec<u8>,
    decoder: Decoder,
    /// fanout: the publications received.
    seen: SeqTrack,
    /// chat: this connection's user within the worker's layout.
    pub chat_user: Option<u32>,
    /// fanout: which of the run's channels this connection joins.
    pub channel_idx: usize,
    /// chat: per sender (and, IM, per kind of message: a DM and a group
    /// message are in different streams), the messages received from it.
    senders: Vec<((u32, Option<ImKind>), SeqTrack)>,
    /// chat: sent messages by command id, until their reply.
    pending_acks: HashMap<u64, PendingAck>,
    /// chat, IM: which of its user's devices this connection is.
    pub chat_device: u32,
    /// chat, IM: messages received from the peer (reads are due every
    /// `read_every` of them).
    peer_msgs: u64,
    /// chat, IM: `read` commands sent (the next one's id follows), and those
    /// whose reply has not arrived.
    reads: u64,
    pending_reads: HashSet<u64>,
    /// reconnect: the inbox position carried across a reconnect; chat, IM:
    /// the last offset seen of the user's conversation.
    pub inbox: InboxState,
    /// chat, IM: the group this connection's user is an online member of,
    /// and the last offset seen of it.
    pub im_group_conv: Option<String>,
    group_last_offset: Option<u64>,
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

impl Session {
    /// A connection whose TCP connect started at `started`. Its first
    /// output is the upgrade request.
    pub fn new(
        started: Instant,
        host: &str,
        path_and_query: &str,
        rng: &mut Rng,
        settings: &ClientSettings,
        join: Join,
    ) -> Session {
        let key = handshake::client_key(rng.bytes16());
        let protocols: Vec<&str> = settings.profile.subprotocol().into_iter().collect();
        let request = handshake::client_request(host, path_and_query, &key, &protocols);
        Session {
            phase: Phase::TcpConnecting,
            started,
            subscribed: false,
            join,
            key,
            read_buf: Vec::new(),
            write_buf: request,
            decoder: Decoder::new(),
            seen: SeqTrack::new(settings.publications),
            chat_user: None,
            channel_idx: 0,
            senders: Vec::new(),
            pending_acks: HashMap::new(),
            chat_device: 0,
            peer_msgs: 0,
            reads: 0,
            pending_reads: HashSet::new(),
            inbox: InboxState::default(),
            im_group_conv: None,
            group_last_offset: None,
            recovering: false,
        }
    }

    /// What the driver must write, in order. Write it all (or as much as
    /// the socket takes, then `consume_output`) after every call.
    pub fn output(&self) -> &[u8] {
        &self.write_buf
    }

    /// `n` bytes of `output()` were written.
    pub fn consume_output(&mut self, n: usize) {
        debug_assert!(n <= self.write_buf.len());
        self.write_buf.drain(..n.min(self.write_buf.len()));
    }

    /// The TCP connect completed (the upgrade request can go, or went).
    pub fn tcp_connected(&mut self) {
        if self.phase == Phase::TcpConnecting {
            self.phase = Phase::Upgrading;
        }
    }

    /// The TCP connect failed.
    pub fn fail_connect(&mut self, tally: &mut Tally, error: &io::Error) -> Next {
        self.fail(tally, ErrorKind::ConnectRefused, &io_kind(error))
    }

    /// Bytes arrived. Counts every error in `tally`.
    pub fn on_bytes(
        &mut self,
        tally: &mut Tally,
        settings: &ClientSettings,
        rng: &mut Rng,
        now: Instant,
        bytes: &mut [u8],
    ) -> Next {
        if self.read_buf.is_empty() && self.phase != Phase::Upgrading {
            // Decode straight from the caller's buffer and keep only an
            // incomplete tail: an idle connection then holds no read buffer
            // (copying every read in would leave each busy connection with
            // a buffer the size of the largest read it ever saw).
            let (consumed, next) = self.decode_frames(tally, settings, rng, now, bytes);
            if next == Next::Keep {
                self.read_buf.extend_from_slice(&bytes[consumed..]);
            }
            return next;
        }
        self.read_buf.extend_from_slice(bytes);
        let next = self.process(tally, settings, rng, now);
        if self.read_buf.is_empty() {
            self.read_buf = Vec::new();
        }
        next
    }

    /// The server closed its side of the TCP stream.
    pub fn on_eof(&mut self, tally: &mut Tally) -> Next {
        if self.phase == Phase::Closing {
            tally.open = tally.open.saturating_sub(1);
            self.phase = Phase::Done;
            return Next::Drop;
        }
        self.fail(tally, ErrorKind::ProtocolClose, "eof")
    }

    /// A read or write failed.
    pub fn fail_io(&mut self, tally: &mut Tally, error: &io::Error) -> Next {
        if self.phase == Phase::TcpConnecting {
            return self.fail_connect(tally, error);
        }
        if self.phase == Phase::Closing {
            // The server may drop the socket right after its close frame.
            self.phase = Phase::Done;
            tally.open = tally.open.saturating_sub(1);
            return Next::Drop;
        }
        self.fail(tally, ErrorKind::ProtocolClose, &io_kind(error))
    }

    /// Done connecting: open and joined (and, reconnecting, recovered), or
    /// finished. A run's hold and publishing start once all are settled.
    pub fn settled(&self) -> bool {
        match self.phase {
            Phase::TcpConnecting | Phase::Upgrading | Phase::AwaitConnect => false,
            Phase::Open => !self.awaits_subscribe() && !self.recovering,
            Phase::Closing | Phase::Done => true,
        }
    }

    /// Start a clean close (connect scenario end, fanout end).
    pub fn close(&mut self, rng: &mut Rng) -> Next {
        if self.phase != Phase::Open {
            self.phase = Phase::Done;
            return Next::Drop;
        }
        self.phase = Phase::Closing;
        let frame = frame::encode_close(CloseCode::NORMAL, "", Some(rng.mask()));
        self.write_buf.extend_from_slice(&frame);
        Next::Keep
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

    /// Still waiting for the subscription to be confirmed.
    pub fn awaits_subscribe(&self) -> bool {
        matches!(self.join, Join::Channel(_)) && !self.subscribed
    }

    /// chat: messages sent whose reply has not arrived.
    pub fn unacked(&self) -> u64 {
        (self.pending_acks.len() + self.pending_reads.len()) as u64
    }

    /// chat: write one message (`out`); its reply is matched by its id.
    pub fn send_chat(
        &mut self,
        tally: &mut Tally,
        rng: &mut Rng,
        message: ChatMessage,
        out: &Outbound,
    ) -> Next {
        self.pending_acks.insert(
            message.id,
            PendingAck {
                intended_us: message.intended_us,
                recipients: message.recipients,
                kind: message.kind,
            },
        );
        tally.sent += 1;
        if let Some(kind) = message.kind {
            tally.im_kinds[kind.idx()].counts.sent += 1;
        }
        self.queue(out, rng);
        Next::Keep
    }

    fn queue(&mut self, out: &Outbound, rng: &mut Rng) {
        let frame = frame::encode_frame(out.opcode, &out.payload, Some(rng.mask()));
        self.write_buf.extend_from_slice(&frame);
    }

    fn fail(&mut self, tally: &mut Tally, kind: ErrorKind, detail: &str) -> Next {
        if self.phase == Phase::Open || self.phase == Phase::Closing {
            tally.open = tally.open.saturating_sub(1);
        }
        count_error(&mut tally.errors, kind, detail);
        self.phase = Phase::Done;
        Next::Drop
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
                Ok(Some((response, consumed))) => {
                    self.read_buf.drain(..consumed);
                    self.phase = Phase::AwaitConnect;
                    let wanted = settings.profile.subprotocol();
                    if wanted.is_some() && response.protocol.as_deref() != wanted {
                        return self.fail(tally, ErrorKind::HandshakeStatus, "subprotocol");
                    }
                    if settings.profile.connected_at_upgrade() {
                        if self.on_connected(tally, settings, rng, now) == Next::Drop {
                            return Next::Drop;
                        }
                        if matches!(self.join, Join::Channel(_)) {
                            self.mark_subscribed(tally);
                        }
                    }
                }
                Err(error) => {
                    return self.fail(tally, ErrorKind::HandshakeStatus, &error.status.to_string())
                }
            }
        }
        let mut buf = std::mem::take(&mut self.read_buf);
        let (consumed, next) = self.decode_frames(tally, settings, rng, now, &mut buf);
        buf.drain(..consumed.min(buf.len()));
        self.read_buf = buf;
        next
    }

    /// Decode and apply the whole frames at the start of `buf`; returns how
    /// many bytes they took.
    fn decode_frames(
        &mut self,
        tally: &mut Tally,
        settings: &ClientSettings,
        rng: &mut Rng,
        now: Instant,
        buf: &mut [u8],
    ) -> (usize, Next) {
        let limits = Limits {
            frame_bytes_max: MESSAGE_BYTES_MAX,
            message_bytes_max: MESSAGE_BYTES_MAX,
        };
        let mut pos = 0;
        let mut next = Next::Keep;
        while pos < buf.len() && next == Next::Keep {
            let (consumed, inbound) =
                match self.decoder.decode(&mut buf[pos..], Role::Client, &limits) {
                    Ok(None) => break,
                    Ok(Some(decoded)) => (
                        decoded.consumed,
                        decoded
                            .message
                            .map_or(Inbound::Nothing, |m| settings.profile.classify(m)),
                    ),
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
        (pos, next)
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
                self.on_connected(tally, settings, rng, now)
            }
            Inbound::Connect => Next::Keep,
            Inbound::Subscribed => {
                self.mark_subscribed(tally);
                Next::Keep
            }
            Inbound::SubscribeError(code) => {
                self.fail(tally, ErrorKind::CommandError, &format!("subscribe_{code}"))
            }
            Inbound::Reply { id, error } if id == SUBSCRIBE_ID => match error {
                None => {
                    self.mark_subscribed(tally);
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
            Inbound::Reply { id, error } => {
                self.on_chat_reply(tally, settings, id, error);
                Next::Keep
            }
            Inbound::Push(push) if settings.inbox => {
                self.on_inbox_push(tally, push);
                Next::Keep
            }
            Inbound::Push(push) if settings.im.is_some() => {
                self.on_im_push(tally, settings, rng, &push);
                Next::Keep
            }
            Inbound::Push(push) if settings.chat.is_some() => {
                self.on_chat_push(tally, settings, &push);
                Next::Keep
            }
            Inbound::Receipt => {
                tally.receipts += 1;
                Next::Keep
            }
            Inbound::Push(push) => {
                self.on_fanout_push(tally, &push);
                Next::Keep
            }
            Inbound::Ping(payload) => {
                let frame = frame::encode_frame(OpCode::Pong, &payload, Some(rng.mask()));
                self.write_buf.extend_from_slice(&frame);
                Next::Keep
            }
            Inbound::Answer(out) => {
                self.queue(&out, rng);
                Next::Keep
            }
            Inbound::Invalid(what) => self.fail(tally, ErrorKind::ProtocolClose, what),
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

    /// The server said "connected" (its message, or the 101 where there is
    /// none): count it and join what this connection joins.
    fn on_connected(
        &mut self,
        tally: &mut Tally,
        settings: &ClientSettings,
        rng: &mut Rng,
        now: Instant,
    ) -> Next {
        self.phase = Phase::Open;
        tally.open += 1;
        tally.open_max = tally.open_max.max(tally.open);
        if self.recovering {
            // A reconnect: measured as recovery latency instead.
            return Next::Keep;
        }
        tally.connected += 1;
        let latency_us = now.saturating_duration_since(self.started).as_micros() as u64;
        record(&mut tally.connect_hist, latency_us);
        match &self.join {
            Join::Nothing => Next::Keep,
            Join::Inbox => {
                self.mark_subscribed(tally);
                Next::Keep
            }
            Join::Channel(channel) => match settings.profile.subscribe(SUBSCRIBE_ID, channel) {
                Some(out) => {
                    self.queue(&out, rng);
                    Next::Keep
                }
                // The URL subscribed (counted at the 101).
                None => Next::Keep,
            },
        }
    }

    fn mark_subscribed(&mut self, tally: &mut Tally) {
        if !self.subscribed {
            self.subscribed = true;
            tally.subscribed += 1;
            if let Some(count) = tally.subscribed_by_channel.get_mut(self.channel_idx) {
                *count += 1;
            }
        }
    }
}

impl Session {
    /// fanout: one publication. Sequence numbers must be new and grow.
    fn on_fanout_push(&mut self, tally: &mut Tally, push: &Push) {
        count_push(tally, self.seen.record(push.seq), push.intended_us);
    }

    /// chat: one message from a peer or group member (or this user's own
    /// group message). Tracked per sender.
    fn on_chat_push(&mut self, tally: &mut Tally, settings: &ClientSettings, push: &Push) {
        let (Some(plan), Some(me), Some(from)) = (&settings.chat, self.chat_user, push.from) else {
            count_error(&mut tally.errors, ErrorKind::ProtocolClose, "no_sender");
            return;
        };
        let allowed = match plan.role(me) {
            chat::Role::Pair { peer } => from == peer,
            chat::Role::Group { first, len, .. } => (first..first + len).contains(&from),
        };
        if !allowed {
            count_error(
                &mut tally.errors,
                ErrorKind::ProtocolClose,
                "unexpected_sender",
            );
            return;
        }
        let verdict = self.sender_track(plan, (from, None)).record(push.seq);
        count_push(tally, verdict, push.intended_us);
    }

    /// chat: the messages received from `from` so far (of one kind).
    fn sender_track(&mut self, plan: &ChatPlan, from: (u32, Option<ImKind>)) -> &mut SeqTrack {
        match self.senders.iter().position(|(sender, _)| *sender == from) {
            Some(idx) => &mut self.senders[idx].1,
            None => {
                self.senders
                    .push((from, SeqTrack::new(plan.messages_per_user)));
                let last = self.senders.len() - 1;
                &mut self.senders[last].1
            }
        }
    }

    /// chat, IM: one entry of a DM of this user (from the peer or from the
    /// user itself: every device gets both) or of its group (from any
    /// online member, itself included). Per sender and kind: loss,
    /// duplicates and order by `seq`; per conversation: offsets must
    /// follow each other (a jump is a gap, a step back is out of order).
    /// The first device answers every `read_every`th DM of the peer with a
    /// `read` up to it.
    fn on_im_push(
        &mut self,
        tally: &mut Tally,
        settings: &ClientSettings,
        rng: &mut Rng,
        push: &Push,
    ) {
        let (Some(plan), Some(im), Some(me), Some(from), Some(offset), Some(conv)) = (
            &settings.chat,
            settings.im,
            self.chat_user,
            push.from,
            push.offset,
            push.conv.as_deref(),
        ) else {
            count_error(&mut tally.errors, ErrorKind::ProtocolClose, "not_a_dm");
            return;
        };
        let chat::Role::Pair { peer } = plan.role(me) else {
            count_error(&mut tally.errors, ErrorKind::ProtocolClose, "dm_in_group");
            return;
        };
        let kind = if conv.starts_with("grp:") {
            ImKind::Group
        } else {
            ImKind::Dm
        };
        let allowed = match kind {
            ImKind::Dm => from == peer || from == me,
            ImKind::Group => {
                self.im_group_conv.as_deref() == Some(conv)
                    && plan
                        .im_group(me)
                        .is_some_and(|group| plan.im_group_online(group).contains(&from))
            }
        };
        if !allowed {
            count_error(
                &mut tally.errors,
                ErrorKind::ProtocolClose,
                "unexpected_sender",
            );
            return;
        }
        let verdict = match self.sender_track(plan, (from, Some(kind))).record(push.seq) {
            SeqVerdict::New { out_of_order } => {
                let last_offset = match kind {
                    ImKind::Dm => &mut self.inbox.last_offset,
                    ImKind::Group => &mut self.group_last_offset,
                };
                let behind = last_offset.is_some_and(|last| offset < last);
                if let Some(last) = last_offset.filter(|&last| offset > last) {
                    tally.gaps += offset - last - 1;
                    tally.im_kinds[kind.idx()].counts.gaps += offset - last - 1;
                }
                if !behind {
                    *last_offset = Some(offset);
                }
                SeqVerdict::New {
                    out_of_order: out_of_order || behind,
                }
            }
            other => other,
        };
        let new = matches!(verdict, SeqVerdict::New { .. });
        let latency_us = count_push(tally, verdict, push.intended_us);
        tally.im_kinds[kind.idx()].count(verdict, latency_us);
        if !new || kind != ImKind::Dm || from != peer || self.chat_device != 0 || im.read_every == 0
        {
            return;
        }
        self.peer_msgs += 1;
        if self.peer_msgs.is_multiple_of(im.read_every) {
            let id = READ_ID_FIRST + self.reads;
            if let Some(out) = settings.profile.read(id, conv, offset) {
                self.reads += 1;
                self.pending_reads.insert(id);
                tally.reads_sent += 1;
                self.queue(&out, rng);
            }
        }
    }

    /// chat: the reply to a send or publish. An ok reply makes its
    /// recipients expected deliveries.
    fn on_chat_reply(
        &mut self,
        tally: &mut Tally,
        settings: &ClientSettings,
        id: u64,
        error: Option<String>,
    ) {
        if id < chat::CHAT_ID_FIRST || settings.chat.is_none() {
            return;
        }
        if id >= READ_ID_FIRST {
            return self.on_read_reply(tally, settings, id, error);
        }
        let Some(pending) = self.pending_acks.remove(&id) else {
            count_error(
                &mut tally.errors,
                ErrorKind::ProtocolClose,
                "unexpected_reply",
            );
            return;
        };
        let kind = pending.kind.map(|kind| &mut tally.im_kinds[kind.idx()]);
        match error {
            None => {
                let latency_us = crate::worker::unix_us().saturating_sub(pending.intended_us);
                tally.acked += 1;
                tally.expected += pending.recipients;
                record(&mut tally.ack_hist, latency_us);
                if let Some(kind) = kind {
                    kind.counts.acked += 1;
                    kind.counts.expected += pending.recipients;
                    record(&mut kind.ack_hist, latency_us);
                }
            }
            Some(code) => {
                if let Some(kind) = kind {
                    kind.counts.ack_errors += 1;
                }
                tally.ack_errors += 1;
                count_error(
                    &mut tally.errors,
                    ErrorKind::CommandError,
                    &format!("chat_{code}"),
                );
            }
        }
    }

    /// chat, IM: the reply to a `read`; an ok one owes a receipt to each
    /// of the peer's devices.
    fn on_read_reply(
        &mut self,
        tally: &mut Tally,
        settings: &ClientSettings,
        id: u64,
        error: Option<String>,
    ) {
        if !self.pending_reads.remove(&id) {
            count_error(
                &mut tally.errors,
                ErrorKind::ProtocolClose,
                "unexpected_reply",
            );
            return;
        }
        match error {
            None => {
                tally.reads_acked += 1;
                tally.receipts_expected += settings.im.map_or(0, |im| u64::from(im.devices));
            }
            Some(code) => count_error(
                &mut tally.errors,
                ErrorKind::CommandError,
                &format!("read_{code}"),
            ),
        }
    }

    /// reconnect: one push of the inbox. Offsets must follow each other
    /// (a jump is a gap, a repeat or step back a duplicate), `seq` must grow.
    fn on_inbox_push(&mut self, tally: &mut Tally, push: Push) {
        let Push {
            seq,
            intended_us,
            offset,
            epoch,
            ..
        } = push;
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

/// Count one sequence-numbered push (fanout, chat) by its verdict; a new one
/// records its latency from the intended send time, which it returns.
fn count_push(tally: &mut Tally, verdict: SeqVerdict, intended_us: u64) -> u64 {
    match verdict {
        SeqVerdict::OutOfRange => count_error(
            &mut tally.errors,
            ErrorKind::ProtocolClose,
            "unexpected_seq",
        ),
        SeqVerdict::Duplicate => tally.duplicated += 1,
        SeqVerdict::New { out_of_order } => {
            tally.out_of_order += u64::from(out_of_order);
            tally.received += 1;
            let latency_us = crate::worker::unix_us().saturating_sub(intended_us);
            record(&mut tally.push_hist, latency_us);
            return latency_us;
        }
    }
    0
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
