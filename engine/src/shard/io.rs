//! The shard's socket work: accepting, reading (the upgrade, then frames
//! decoded in place in the scratch buffer), writing each connection's
//! queue with one send per turn, and releasing a connection once its
//! session is done. Decisions are the session's (`crate::session`) and the
//! admission policy's (`crate::admission`); this module only moves bytes.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd};

use bytes::Bytes;
use ringcast_protocol::client::{
    decode_binary, decode_json, encode_connect_binary, encode_connect_json, ConnectInfo, Reply,
};
use ringcast_protocol::close::CloseCode;
use ringcast_protocol::frame::{encode_frame, OpCode, Role};

use super::conn::{token_of, Conn, ConnExtras};
use super::poller::Send;
use super::tls::TlsConn;
use super::Shard;
use crate::admission::{self, Admitted, RefusalKind};
use crate::channels::personal_channel;
use crate::limits::{ACCEPTS_PER_TURN_MAX, IOV_MAX, READS_PER_WAKE_MAX};
use crate::session::{CloseReason, Handshake, Inbound, Session};
use crate::sys::{self, Io};

/// How often a failing `accept` is logged at most.
const ACCEPT_ERROR_LOG_INTERVAL_MS: u64 = 10_000;

impl Shard {
    /// Accepts what the listener has, up to the turn's budget.
    pub(super) fn accept(&mut self) {
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        // Connections still in their upgrade count too, so a flood of
        // half-open upgrades cannot grow the slab past its size.
        let slots_max = self.conns.capacity();
        for _ in 0..ACCEPTS_PER_TURN_MAX {
            match sys::accept(listener) {
                Ok(Some((fd, source))) => {
                    if self.conns.len() >= slots_max {
                        self.metrics().handshakes_failed.add(1);
                        continue; // dropped: closed at once
                    }
                    if !self.source_buckets.admit(source, self.now_ms) {
                        // Over its source's accept rate (ratelimit.rs).
                        self.metrics().accepts_rate_limited.add(1);
                        self.metrics().handshakes_failed.add(1);
                        continue; // dropped: closed at once
                    }
                    if !self.shared.fd_budget.try_take() {
                        // The reserve is for the store and the API: refuse
                        // the connection rather than spend it.
                        self.metrics().handshakes_failed.add(1);
                        if self.now_ms >= self.accept_error_logged_ms + ACCEPT_ERROR_LOG_INTERVAL_MS
                        {
                            self.accept_error_logged_ms = self.now_ms;
                            tracing::warn!(
                                shard = self.idx,
                                budget = self.shared.fd_budget.max(),
                                "connection refused: the file descriptor budget is spent \
                                 (RLIMIT_NOFILE less server.fd_reserve)"
                            );
                        }
                        continue; // dropped: closed at once
                    }
                    if !self.handshakes.admit(source) {
                        self.shared.fd_budget.give_back();
                        self.metrics().handshakes_failed.add(1);
                        continue; // dropped: closed at once
                    }
                    let tls = match self.tls.as_mut().map(|tls| TlsConn::new(tls.current())) {
                        None => None,
                        Some(Ok(tls)) => Some(Box::new(tls)),
                        Some(Err(err)) => {
                            tracing::warn!(shard = self.idx, error = %err, "cannot start TLS");
                            self.shared.fd_budget.give_back();
                            self.metrics().handshakes_failed.add(1);
                            continue; // dropped: closed at once
                        }
                    };
                    sys::set_nodelay(&fd);
                    let raw = fd.as_raw_fd();
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    self.handshakes.started(key, source);
                    entry.insert(Conn::new(
                        fd,
                        Session::new(self.now_ms, &self.session_config),
                        tls,
                    ));
                    if let Err(err) = self.poller.register(raw, token_of(key)) {
                        tracing::warn!(shard = self.idx, error = %err, "cannot watch a socket");
                        self.conns.remove(key);
                        self.shared.fd_budget.give_back();
                        self.handshakes.ended(key);
                    }
                }
                Ok(None) => return,
                Err(err) => {
                    // EMFILE and friends: try again at the next tick rather
                    // than spin, and say so once per interval, not per try.
                    if self.now_ms >= self.accept_error_logged_ms + ACCEPT_ERROR_LOG_INTERVAL_MS {
                        self.accept_error_logged_ms = self.now_ms;
                        tracing::warn!(shard = self.idx, error = %err, "accept failed");
                    }
                    self.accept_at_tick = true;
                    return;
                }
            }
        }
        // The budget ran out with connections still pending: the next turn
        // goes on (no new readiness may come for those already queued).
        self.accept_next_turn = true;
    }

    /// The poller says connection `key` needs a look; `hangup` when the
    /// peer shut down or the socket failed (read on to the end).
    pub(super) fn on_ready(&mut self, key: usize, hangup: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.session.admitting().is_some() {
            // Nothing is read until the connect proxy decides; what came
            // meanwhile is read when the connection opens. A client that
            // hung up meanwhile is gone now: the answer finds it no longer
            // awaiting, so it is never opened (no presence, no webhook).
            if hangup {
                conn.session.on_eof();
                self.metrics().handshakes_failed.add(1);
                self.mark_dirty(key);
            }
            return;
        }
        if conn.session.is_handshaking() {
            self.read_handshake(key);
        } else if conn.session.is_open() {
            self.read_frames(key, hangup);
        } else {
            self.drain_closing(key);
        }
        // Readiness may also mean writable (epoll): retry a blocked queue.
        self.mark_dirty(key);
    }

    fn read_handshake(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let room = (self.session_config.handshake.header_bytes_max + 1).min(self.scratch.len());
        // A TLS connection reads its handshake here too (no plaintext until
        // it is done); then a request may span several reads, and a read
        // that did not empty the socket gets no new readiness event.
        let outcome = loop {
            let read = conn.recv(&mut self.scratch[..room]);
            self.shared.metrics[self.idx]
                .bytes_in
                .add(read.wire_bytes as u64);
            match read.result {
                Ok(Io::WouldBlock) => return,
                Ok(Io::Done(0)) | Err(_) => {
                    conn.session.on_eof();
                    self.metrics().handshakes_failed.add(1);
                    return;
                }
                Ok(Io::Done(n)) => match conn.session.on_handshake_bytes(
                    self.now_ms,
                    &self.scratch[..n],
                    &self.session_config,
                ) {
                    Handshake::Incomplete if !read.drained => {}
                    outcome => break outcome,
                },
            }
        };
        match outcome {
            Handshake::Incomplete => {}
            Handshake::Refused => self.metrics().handshakes_failed.add(1),
            Handshake::Request(request) => {
                match admission::admit(
                    &self.shared.config,
                    &self.shared.auth,
                    &request,
                    self.n_open,
                ) {
                    Ok(admitted) => match self.connect_proxy() {
                        Some(proxy) => self.start_admission(key, proxy, &request, admitted),
                        None => {
                            let client_id = self.next_client_id();
                            self.open(key, admitted, client_id);
                            // Frames the client sent right behind its upgrade.
                            self.read_frames(key, true);
                        }
                    },
                    Err(refusal) => {
                        let metrics = &self.shared.metrics[self.idx];
                        metrics.handshakes_failed.add(1);
                        if refusal.kind == RefusalKind::Auth {
                            metrics.auth_failures.add(1);
                        }
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.session.refuse(
                                self.now_ms,
                                Bytes::from(refusal.response),
                                &self.session_config,
                            );
                        }
                    }
                }
            }
        }
    }

    /// The upgrade was accepted: queue the 101 and the `connect` message,
    /// join the personal channel and, when the URL gave an inbox position or
    /// a device with a stored cursor, recover the inbox.
    ///
    /// Recovery starts before the inbox is joined, so no live push of the
    /// inbox can reach the client ahead of (or twice with) the replay. Its
    /// result arrives as a subscribe reply with id 0, an id no client
    /// command uses.
    pub(super) fn open(&mut self, key: usize, admitted: Admitted, client_id: u64) {
        self.handshakes.ended(key);
        let recover_inbox = admitted.recovers_inbox();
        let info = ConnectInfo {
            client_id,
            user: admitted.user.to_string(),
            expires_at_ms: admitted.expires_at_ms,
            ping_interval_ms: self.session_config.ping_interval_ms,
            shard: self.idx as u16,
        };
        let connect = if admitted.binary {
            encode_frame(OpCode::Binary, &encode_connect_binary(&info), None)
        } else {
            encode_frame(OpCode::Text, &encode_connect_json(&info), None)
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.client_id = client_id;
        conn.user = admitted.user.clone();
        conn.set_extras(ConnExtras {
            device: admitted.device.clone(),
            grants: admitted.grants,
            info: admitted.info,
            token_user: admitted.token_user,
        });
        conn.session.accept(
            self.now_ms,
            Bytes::from(admitted.response),
            admitted.binary,
            admitted.deflate,
            admitted.expires_at_ms,
        );
        conn.session
            .queue(connect, self.now_ms, &self.session_config);
        self.n_open += 1;
        let metrics = &self.shared.metrics[self.idx];
        metrics.connections.add(1);
        metrics.connections_accepted.add(1);
        if !admitted.user.is_empty() {
            let inbox = personal_channel(&admitted.user);
            if recover_inbox {
                self.conns[key].session.begin_recovery(&inbox);
            }
            self.subscribe(key, &inbox);
            if recover_inbox {
                let oldest = admitted.device_from_oldest;
                self.start_recovery(key, 0, inbox, admitted.inbox_since, true, oldest);
            }
            self.await_registration(key, client_id, &admitted.user, !recover_inbox);
            self.im_at_connect(key, admitted.im_since, recover_inbox);
            self.presence_connected(&admitted.user);
        }
        self.apply_connect_subscriptions(key, &admitted.subs);
        self.mark_dirty(key);
    }

    /// Reads what the socket has, decodes frames in place in the scratch
    /// buffer and handles each message.
    ///
    /// A read shorter than the room it was given emptied the socket, and
    /// both pollers report new data after that as a new event, so reading
    /// stops there without the extra read that would only say `WouldBlock`
    /// (one syscall per message saved). Except after a hang-up: the peer's
    /// FIN may have arrived with the data, reported by the same event, and
    /// no later event would show it; then reading goes on to the end.
    pub(super) fn read_frames(&mut self, key: usize, hangup: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut decoder = conn.session.take_decoder();
        let deflate = conn.session.deflate().is_some();
        let mut inflater = self.inflater.take();
        let message_bytes_max = self.session_config.frame.message_bytes_max;
        let mut filled = 0;
        if let Some(partial) = conn.session.take_partial() {
            scratch[..partial.len()].copy_from_slice(&partial);
            filled = partial.len();
        }
        let mut reads = 0;
        let mut more = false;
        let mut received = false;
        let mut drained = false;
        'reading: loop {
            let mut start = 0;
            while start < filled {
                let step = match decoder.decode_with(
                    &mut scratch[start..filled],
                    Role::Server,
                    &self.session_config.frame,
                    deflate,
                ) {
                    // A compressed message is inflated (and its size
                    // bounded) before anything else sees it.
                    Ok(Some(decoded)) if decoded.compressed => match decoded.message {
                        None => Ok(Some((decoded.consumed, None))),
                        Some(message) => inflater
                            .get_or_insert_with(Box::default)
                            .inflate_message(message, message_bytes_max)
                            .map(|message| Some((decoded.consumed, Some(message)))),
                    },
                    Ok(step) => Ok(step.map(|decoded| (decoded.consumed, decoded.message))),
                    Err(err) => Err(err),
                };
                match step {
                    Ok(None) => break,
                    Ok(Some((consumed, message))) => {
                        start += consumed;
                        let Some(message) = message else {
                            continue;
                        };
                        let Some(conn) = self.conns.get_mut(key) else {
                            break 'reading;
                        };
                        match conn
                            .session
                            .on_message(self.now_ms, message, &self.session_config)
                        {
                            Inbound::Handled => {}
                            Inbound::Command(bytes) => self.on_command(key, bytes),
                            Inbound::Closing => break 'reading,
                            Inbound::Violation => {
                                self.metrics().protocol_errors.add(1);
                                break 'reading;
                            }
                        }
                        if self.conns.get(key).is_none_or(|c| !c.session.is_open()) {
                            break 'reading;
                        }
                    }
                    Err(err) => {
                        self.metrics().protocol_errors.add(1);
                        self.close(
                            key,
                            CloseReason {
                                code: err.close_code,
                                reason: err.reason,
                                flush_queue: true,
                            },
                        );
                        break 'reading;
                    }
                }
            }
            scratch.copy_within(start..filled, 0);
            filled -= start;
            // The decoder refuses frames over frame_bytes_max from their
            // header, and scratch holds one such frame, so a full buffer
            // cannot happen.
            assert!(filled < scratch.len(), "scratch buffer full of one frame");
            if drained {
                break;
            }
            if reads == READS_PER_WAKE_MAX {
                more = true;
                break;
            }
            reads += 1;
            let Some(conn) = self.conns.get_mut(key) else {
                break;
            };
            let read = conn.recv(&mut scratch[filled..]);
            self.shared.metrics[self.idx]
                .bytes_in
                .add(read.wire_bytes as u64);
            match read.result {
                Ok(Io::WouldBlock) => break,
                Ok(Io::Done(0)) | Err(_) => {
                    conn.session.on_eof();
                    break;
                }
                Ok(Io::Done(n)) => {
                    received = true;
                    drained = read.drained && !hangup;
                    filled += n;
                }
            }
        }
        self.inflater = inflater;
        if let Some(conn) = self.conns.get_mut(key) {
            conn.session.put_decoder(decoder);
            if received {
                conn.session.on_receive(self.now_ms);
            }
            if conn.session.is_open() {
                conn.session.keep_partial(&scratch[..filled]);
                if more && !conn.in_read_again {
                    conn.in_read_again = true;
                    self.read_again.push(key);
                }
            }
        }
        self.scratch = scratch;
        self.mark_dirty(key);
    }

    /// After our close frame: read and discard until the peer closes.
    fn drain_closing(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        loop {
            match conn.recv(&mut self.scratch[..]).result {
                Ok(Io::Done(0)) | Err(_) => {
                    conn.session.on_eof();
                    return;
                }
                Ok(Io::Done(_)) => {}
                Ok(Io::WouldBlock) => return,
            }
        }
    }

    /// Decodes one command and runs it; a command that does not decode is
    /// answered when its id was readable, otherwise the stream of commands
    /// cannot be trusted and the connection closes with 4006.
    fn on_command(&mut self, key: usize, bytes: &[u8]) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        self.shared.metrics[self.idx].messages_in.add(1);
        let decoded = if conn.session.binary() {
            decode_binary(bytes)
        } else {
            decode_json(bytes)
        };
        match decoded {
            Ok(command) => self.handle_command(key, command),
            Err(err) => match err.id {
                Some(id) => self.send_reply(
                    key,
                    &Reply::Error {
                        id,
                        code: err.code,
                        message: err.message,
                    },
                ),
                None => {
                    self.metrics().protocol_errors.add(1);
                    self.close(
                        key,
                        CloseReason {
                            code: CloseCode::BAD_REQUEST,
                            reason: "undecodable command",
                            flush_queue: true,
                        },
                    );
                }
            },
        }
    }

    /// A send of `key` completed (io_uring).
    pub(super) fn on_sent(&mut self, key: usize, result: std::io::Result<usize>) {
        let Some(conn) = self.conns.get_mut(key) else {
            unreachable!("send completion for free slot {key}");
        };
        if let Some(tls) = conn.tls.as_deref_mut() {
            assert!(
                tls.in_flight,
                "TLS send completion for slot {key} with none in flight"
            );
            tls.in_flight = false;
            match result {
                Ok(written) => {
                    let short = tls.on_sent(written);
                    conn.session
                        .on_wire(written, short, self.now_ms, &self.session_config);
                    self.shared.metrics[self.idx].bytes_out.add(written as u64);
                }
                Err(err) => {
                    if !matches!(err.raw_os_error(), Some(libc::ECANCELED | libc::EAGAIN)) {
                        conn.session.on_eof();
                    }
                }
            }
            self.resume_replay(key);
            self.mark_dirty(key);
            return;
        }
        match result {
            Ok(written) => {
                conn.session
                    .on_sent(written, self.now_ms, &self.session_config);
                self.shared.metrics[self.idx].bytes_out.add(written as u64);
            }
            Err(err) => {
                conn.session.on_sent(0, self.now_ms, &self.session_config);
                // Cancelled (the session is done) or "try again" (retried
                // next turn): not a socket failure.
                if !matches!(err.raw_os_error(), Some(libc::ECANCELED | libc::EAGAIN)) {
                    conn.session.on_eof();
                }
            }
        }
        self.resume_replay(key);
        self.mark_dirty(key);
    }

    pub(super) fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.in_dirty {
                conn.in_dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Starts our side of the close handshake on `key`.
    pub(super) fn close(&mut self, key: usize, reason: CloseReason) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.session
                .close(self.now_ms, reason, &self.session_config);
            self.mark_dirty(key);
        }
    }

    /// Writes every connection with something queued (one send each), and
    /// releases those whose session is done.
    pub(super) fn flush(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for key in dirty.drain(..) {
            self.flush_one(key);
        }
        // Hand the allocation back so steady state does not allocate.
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    fn flush_one(&mut self, key: usize) {
        let now_ms = self.now_ms;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.in_dirty = false;
        if conn.corked && !conn.session.is_done() {
            // `on_registered` marks it dirty again.
            return;
        }
        if conn.tls.is_some() {
            self.flush_tls(key);
            return;
        }
        // Direct sends (epoll) go on until the socket is full or the queue
        // empty; a ring send completes later and comes back here.
        while conn.session.wants_send() && !conn.session.is_done() {
            let mut slices = [IoSlice::new(&[]); IOV_MAX];
            let n_slices = conn.session.start_send(&mut slices);
            if n_slices == 0 {
                break;
            }
            let offered: usize = slices[..n_slices].iter().map(|s| s.len()).sum();
            match self
                .poller
                .send(conn.fd.as_fd(), token_of(key), &slices[..n_slices])
            {
                Send::InFlight => break,
                Send::Done(Ok(written)) => {
                    conn.session.on_sent(written, now_ms, &self.session_config);
                    self.shared.metrics[self.idx].bytes_out.add(written as u64);
                    if written < offered {
                        break;
                    }
                }
                Send::Done(Err(_)) => {
                    conn.session.on_sent(0, now_ms, &self.session_config);
                    conn.session.on_eof();
                }
            }
        }
        if conn.session.take_shutdown() {
            sys::shutdown_write(&conn.fd);
        }
        if conn.session.is_done() {
            if !conn.session.send_in_flight() {
                self.release(key);
            } else {
                self.cancel_send(key);
            }
            return;
        }
        self.resume_replay(key);
    }

    /// `flush_one` for a TLS connection: the session's frames are encrypted
    /// into rustls while it has room (`TlsConn::encrypt`), and the records
    /// go out with the poller's send. A refusal or a close is released only
    /// once its records (and `close_notify`) are on the wire, or when its
    /// linger deadline ends the session's writes.
    fn flush_tls(&mut self, key: usize) {
        let now_ms = self.now_ms;
        let Some(Conn {
            fd,
            session,
            tls: Some(tls),
            ..
        }) = self.conns.get_mut(key)
        else {
            return;
        };
        while !tls.in_flight && !session.writes_ended() {
            tls.encrypt(session);
            if session.take_shutdown() {
                tls.close_notify(true);
            } else if session.is_done() {
                tls.close_notify(false);
            }
            let pending = tls.pending();
            let offered = pending.len();
            if offered == 0 {
                break;
            }
            match self
                .poller
                .send(fd.as_fd(), token_of(key), &[IoSlice::new(pending)])
            {
                Send::InFlight => tls.in_flight = true,
                Send::Done(Ok(written)) => {
                    let short = tls.on_sent(written);
                    session.on_wire(written, short, now_ms, &self.session_config);
                    self.shared.metrics[self.idx].bytes_out.add(written as u64);
                    if short {
                        break;
                    }
                }
                Send::Done(Err(_)) => session.on_eof(),
            }
        }
        if tls.take_shutdown() {
            sys::shutdown_write(&*fd);
        }
        if !session.is_done() {
            self.resume_replay(key);
            return;
        }
        let writes_ended = session.writes_ended();
        let flushed = tls.is_flushed();
        let in_flight = tls.in_flight;
        if in_flight {
            if writes_ended {
                self.cancel_send(key);
            }
        } else if flushed || writes_ended {
            self.release(key);
        }
    }

    /// Asks the ring to cancel `key`'s send in flight, once.
    fn cancel_send(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.cancel_asked {
                conn.cancel_asked = true;
                let _ = self.poller.cancel_send(token_of(key));
            }
        }
    }

    /// Frees slot `key`: leaves every channel, stops watching the socket,
    /// closes it.
    pub(super) fn release(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        assert!(
            !conn.send_in_flight(),
            "slot {key} released with a send in flight"
        );
        self.presence_released(key);
        self.unsubscribe_all(key);
        let conn = self.conns.remove(key);
        self.shared.fd_budget.give_back();
        self.handshakes.ended(key);
        let _ = self.poller.deregister(conn.fd.as_raw_fd(), token_of(key));
        if conn.client_id != 0 {
            self.n_open -= 1;
            self.shared.metrics[self.idx].connections.sub(1);
        }
        self.paused_replays.retain(|job| job.key != key);
        self.im.forget(key);
        // `conn.fd` closes here.
    }
}
