//! The task that serves one connection: the HTTP upgrade, then a loop that
//! waits for readiness and handles what arrives, then the close handshake.
//!
//! The task owns the `TcpStream` (so the fd lives exactly as long as the
//! task) and a slab key; all other state is in the shard's `Conn`. Between
//! events the task holds no buffer: it awaits `readable` (a PollAdd on
//! io_uring), the socket turning writable while its queue is blocked, or a
//! close request, and reads into the shard's scratch buffer.

use std::future::poll_fn;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use monoio::net::TcpStream;
use ringcast_protocol::client::{
    decode_binary, decode_json, encode_connect_binary, encode_connect_json, encode_reply_binary,
    encode_reply_json, ConnectInfo, Reply, StreamPosition, SUBPROTOCOL_BINARY, SUBPROTOCOL_JSON,
};
use ringcast_protocol::close::CloseCode;
use ringcast_protocol::frame::{encode_close, encode_frame, Limits, Message, OpCode, Role};
use ringcast_protocol::handshake::{
    http_error_response, parse_upgrade, response_101, HandshakeLimits, UpgradeRequest,
};

use super::conn::{CloseReason, Conn};
use super::{fanout, Shard};
use crate::auth::AuthError;
use crate::channels::personal_channel;
use crate::sys::{self, Io};

/// Reads per readiness event before other connections get a turn.
const READS_PER_WAKE_MAX: usize = 8;
/// How long the close handshake may take before the socket is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// What the upgrade established.
struct Accepted {
    user: Rc<str>,
    /// `?device=` from the connect URL, if given.
    device: Option<Rc<str>>,
    /// `?since=<offset>[&epoch=<epoch>]`: the inbox position to recover from.
    inbox_since: Option<StreamPosition>,
    binary: bool,
    expires_at_ms: u64,
    /// Frames the client sent right behind its upgrade request.
    leftover: Vec<u8>,
}

/// How the read loop ended.
#[derive(Debug)]
pub(super) enum End {
    /// We close, telling the peer why.
    Close(CloseReason),
    /// The peer sent a close frame; echo its code.
    PeerClosed(Option<CloseCode>),
    /// The peer vanished (EOF or socket error): nothing to send.
    Gone,
}

pub(super) async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let fd = stream.as_raw_fd();
    let timeout = shard.shared.config.websocket.handshake_timeout;
    // The upgrade and the close handshake are boxed so their state is
    // allocated only while they run: the task's own future, which an idle
    // connection holds for its whole life, keeps just the read loop.
    let accepted = match Box::pin(monoio::time::timeout(
        timeout,
        handshake(&shard, &stream, fd),
    ))
    .await
    {
        Ok(Some(accepted)) => accepted,
        Ok(None) => {
            shard.metrics().handshakes_failed.add(1);
            return;
        }
        Err(_elapsed) => {
            shard.metrics().handshakes_failed.add(1);
            let response = http_error_response(
                408,
                "handshake_timeout",
                "the upgrade request did not arrive in time",
                &[],
            );
            let _ = Box::pin(write_raw(&stream, fd, &response)).await;
            return;
        }
    };
    let key = register(&shard, fd, accepted);
    let end = read_loop(&shard, &stream, fd, key).await;
    Box::pin(finish(&shard, &stream, fd, key, end)).await;
}

/// Reads and answers the upgrade request. On refusal the HTTP error has
/// been written and `None` is returned.
async fn handshake(shard: &Shard, stream: &TcpStream, fd: RawFd) -> Option<Accepted> {
    let ws = &shard.shared.config.websocket;
    let limits = HandshakeLimits {
        header_bytes_max: ws.header_bytes_max,
        headers_count_max: ws.headers_count_max,
    };
    let mut buf = Vec::with_capacity(1024);
    loop {
        stream.readable(false).await.ok()?;
        {
            let mut scratch = shard.scratch.borrow_mut();
            let room = (ws.header_bytes_max + 1)
                .saturating_sub(buf.len())
                .clamp(1, scratch.len());
            match sys::recv(fd, &mut scratch[..room]) {
                Ok(Io::Done(0)) | Err(_) => return None,
                Ok(Io::Done(n)) => buf.extend_from_slice(&scratch[..n]),
                Ok(Io::WouldBlock) => continue,
            }
        }
        match parse_upgrade(&buf, &limits) {
            Ok(None) => continue,
            Ok(Some((request, consumed))) => {
                let leftover = buf.get(consumed..).map(<[u8]>::to_vec).unwrap_or_default();
                return match accept(shard, &request) {
                    Ok((mut accepted, protocol)) => {
                        accepted.leftover = leftover;
                        let response = response_101(&request.key, protocol);
                        write_raw(stream, fd, &response).await.ok()?;
                        Some(accepted)
                    }
                    Err(response) => {
                        let _ = write_raw(stream, fd, &response).await;
                        None
                    }
                };
            }
            Err(err) => {
                let _ = write_raw(stream, fd, &err.to_http_response()).await;
                return None;
            }
        }
    }
}

/// Decides on a parsed upgrade: path, origin, subprotocol, token, capacity.
/// The error is the full HTTP response to send.
fn accept(
    shard: &Shard,
    request: &UpgradeRequest,
) -> Result<(Accepted, Option<&'static str>), Vec<u8>> {
    let config = &shard.shared.config;
    let ws = &config.websocket;
    if request.path != ws.path {
        return Err(http_error_response(
            404,
            "not_found",
            &format!("WebSocket endpoint is {}", ws.path),
            &[],
        ));
    }
    if !ws.allowed_origins.is_empty() {
        let allowed = request
            .origin
            .as_deref()
            .is_some_and(|o| ws.allowed_origins.iter().any(|a| a == o));
        if !allowed {
            return Err(http_error_response(
                403,
                "origin_not_allowed",
                "Origin is not in websocket.allowed_origins",
                &[],
            ));
        }
    }
    let (binary, protocol) = negotiate(&request.protocols).ok_or_else(|| {
        http_error_response(
            400,
            "unsupported_subprotocol",
            &format!(
                "offer {SUBPROTOCOL_JSON} or {SUBPROTOCOL_BINARY}, or no subprotocol for JSON"
            ),
            &[],
        )
    })?;
    let token = request.query_param("token").or_else(|| {
        request
            .authorization
            .as_deref()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string())
    });
    let (user, expires_at_ms): (Rc<str>, u64) = match token {
        None if config.auth.allow_anonymous => ("".into(), 0),
        token => match shard.shared.auth.verify(token.as_deref().unwrap_or("")) {
            Ok(claims) if crate::channels::validate_user_id(&claims.sub).is_err() => {
                shard.metrics().auth_failures.add(1);
                return Err(auth_refusal(&AuthError::Invalid(format!(
                    "`sub` must be 1 to {} bytes without spaces or control characters",
                    crate::channels::USER_ID_BYTES_MAX
                ))));
            }
            Ok(claims) => (claims.sub.as_str().into(), claims.exp.saturating_mul(1000)),
            Err(err) => {
                shard.metrics().auth_failures.add(1);
                return Err(auth_refusal(&err));
            }
        },
    };
    let device = match request.query_param("device") {
        None => None,
        Some(device) if valid_device_id(&device) => Some(Rc::from(device.as_str())),
        Some(_) => {
            return Err(http_error_response(
                400,
                "invalid_device",
                "device must be 1 to 64 printable ASCII characters",
                &[],
            ))
        }
    };
    let inbox_since = match (request.query_param("since"), request.query_param("epoch")) {
        (None, None) => None,
        (Some(offset), epoch) => {
            let offset = offset.parse::<u64>().ok();
            let epoch = epoch.map_or(Some(0), |e| e.parse::<u64>().ok());
            match (offset, epoch) {
                (Some(offset), Some(epoch)) => Some(StreamPosition { offset, epoch }),
                _ => {
                    return Err(http_error_response(
                        400,
                        "invalid_since",
                        "since and epoch must be decimal u64 numbers",
                        &[],
                    ))
                }
            }
        }
        (None, Some(_)) => {
            return Err(http_error_response(
                400,
                "invalid_since",
                "epoch needs since",
                &[],
            ));
        }
    };
    if shard.n_conns() >= ws.connections_max_per_shard as usize {
        return Err(http_error_response(
            503,
            "at_capacity",
            "connection limit reached; retry later",
            &[("Retry-After", "5")],
        ));
    }
    Ok((
        Accepted {
            user,
            device,
            inbox_since,
            binary,
            expires_at_ms,
            leftover: Vec::new(),
        },
        protocol,
    ))
}

fn valid_device_id(device: &str) -> bool {
    !device.is_empty() && device.len() <= 64 && device.bytes().all(|b| b.is_ascii_graphic())
}

fn auth_refusal(err: &AuthError) -> Vec<u8> {
    http_error_response(
        401,
        err.code(),
        &err.to_string(),
        &[("WWW-Authenticate", "Bearer")],
    )
}

/// Picks the first offered subprotocol we speak. No offer means JSON.
/// `None` when only unknown subprotocols were offered.
fn negotiate(offered: &[String]) -> Option<(bool, Option<&'static str>)> {
    if offered.is_empty() {
        return Some((false, None));
    }
    offered.iter().find_map(|p| match p.as_str() {
        SUBPROTOCOL_JSON => Some((false, Some(SUBPROTOCOL_JSON))),
        SUBPROTOCOL_BINARY => Some((true, Some(SUBPROTOCOL_BINARY))),
        _ => None,
    })
}

/// Puts the connection in the slab, queues the `connect` message, joins its
/// personal channel and, when the URL gave an inbox position or a device
/// with a stored cursor, recovers the inbox.
///
/// Recovery starts here, before the inbox is joined, so no live push of the
/// inbox can reach the client ahead of (or twice with) the replay. Its result
/// arrives as a subscribe reply with id 0, an id no client command uses.
fn register(shard: &Rc<Shard>, fd: RawFd, accepted: Accepted) -> usize {
    let client_id = shard.next_client_id();
    let recover_inbox =
        !accepted.user.is_empty() && (accepted.inbox_since.is_some() || accepted.device.is_some());
    let mut conn = Conn::new(
        fd,
        client_id,
        accepted.user.clone(),
        accepted.device,
        accepted.binary,
        shard.now_ms(),
    );
    conn.expires_at_ms = accepted.expires_at_ms;
    if !accepted.leftover.is_empty() {
        conn.partial = Some(accepted.leftover.into_boxed_slice());
    }
    let key = shard.conns.borrow_mut().insert(conn);
    let metrics = shard.metrics();
    metrics.connections.add(1);
    metrics.connections_accepted.add(1);
    let info = ConnectInfo {
        client_id,
        user: accepted.user.to_string(),
        expires_at_ms: accepted.expires_at_ms,
        ping_interval_ms: shard.shared.config.websocket.ping_interval.as_millis() as u64,
        shard: shard.idx as u16,
    };
    let frame = if accepted.binary {
        encode_frame(OpCode::Binary, &encode_connect_binary(&info), None)
    } else {
        encode_frame(OpCode::Text, &encode_connect_json(&info), None)
    };
    shard.send_frame(key, frame);
    if !accepted.user.is_empty() {
        let inbox = personal_channel(&accepted.user);
        if recover_inbox {
            super::recovery::begin(shard, key, &inbox);
        }
        shard.subscribe(key, &inbox);
        if recover_inbox {
            let work = super::recovery::run(
                shard.clone(),
                key,
                client_id,
                inbox,
                accepted.inbox_since,
                true,
            );
            super::commands::spawn_reply(shard, key, client_id, 0, work);
        }
    }
    shard.flush_dirty();
    key
}

/// What woke the connection task.
enum Wake {
    Readable(std::io::Result<()>),
    Writable(std::io::Result<()>),
    Changed,
}

async fn read_loop(shard: &Rc<Shard>, stream: &TcpStream, fd: RawFd, key: usize) -> End {
    let has_leftover = shard
        .conns
        .borrow()
        .get(key)
        .is_some_and(|c| c.partial.is_some());
    if has_leftover {
        if let Some(end) = read_and_handle(shard, key, fd) {
            return end;
        }
    }
    loop {
        let (closing, blocked) = match shard.conns.borrow().get(key) {
            Some(conn) => (conn.closing, conn.write_blocked),
            None => return End::Gone,
        };
        if let Some(reason) = closing {
            return End::Close(reason);
        }
        let changed = poll_fn(|cx| {
            let mut conns = shard.conns.borrow_mut();
            let Some(conn) = conns.get_mut(key) else {
                return Poll::Ready(());
            };
            if conn.closing.is_some() || conn.write_blocked != blocked {
                Poll::Ready(())
            } else {
                conn.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        let wake = if blocked {
            // Rare (a full socket), so boxed: the idle state stays small.
            Box::pin(async {
                monoio::select! {
                    r = stream.readable(false) => Wake::Readable(r),
                    w = stream.writable(false) => Wake::Writable(w),
                    _ = changed => Wake::Changed,
                }
            })
            .await
        } else {
            monoio::select! {
                r = stream.readable(false) => Wake::Readable(r),
                _ = changed => Wake::Changed,
            }
        };
        match wake {
            Wake::Changed => continue,
            Wake::Readable(Err(_)) | Wake::Writable(Err(_)) => return End::Gone,
            Wake::Writable(Ok(())) => {
                let ws = &shard.shared.config.websocket;
                let mut conns = shard.conns.borrow_mut();
                let Some(conn) = conns.get_mut(key) else {
                    return End::Gone;
                };
                conn.write_blocked = false;
                if !fanout::flush_conn(
                    conn,
                    ws.outbound_queue_bytes_max,
                    shard.metrics(),
                    shard.now_ms(),
                ) {
                    return End::Gone;
                }
            }
            Wake::Readable(Ok(())) => {
                if let Some(end) = read_and_handle(shard, key, fd) {
                    return end;
                }
            }
        }
    }
}

/// Reads what the socket has, decodes frames in place in the scratch buffer
/// and handles each message. `Some` when the connection must end.
fn read_and_handle(shard: &Rc<Shard>, key: usize, fd: RawFd) -> Option<End> {
    let ws = &shard.shared.config.websocket;
    let limits = Limits {
        frame_bytes_max: ws.frame_bytes_max,
        message_bytes_max: ws.message_bytes_max,
    };
    let (mut decoder, partial) = {
        let mut conns = shard.conns.borrow_mut();
        let conn = conns.get_mut(key)?;
        (std::mem::take(&mut conn.decoder), conn.partial.take())
    };
    let mut scratch = shard.scratch.borrow_mut();
    let mut filled = 0;
    if let Some(partial) = partial {
        scratch[..partial.len()].copy_from_slice(&partial);
        filled = partial.len();
    }
    let mut end = None;
    let mut reads = 0;
    'reading: loop {
        let mut start = 0;
        while start < filled {
            match decoder.decode(&mut scratch[start..filled], Role::Server, &limits) {
                Ok(None) => break,
                Ok(Some(decoded)) => {
                    start += decoded.consumed;
                    if let Some(message) = decoded.message {
                        if let Some(e) = handle_message(shard, key, message) {
                            end = Some(e);
                            break 'reading;
                        }
                    }
                }
                Err(err) => {
                    shard.metrics().protocol_errors.add(1);
                    end = Some(End::Close(CloseReason {
                        code: err.close_code,
                        reason: err.reason,
                        flush_queue: true,
                    }));
                    break 'reading;
                }
            }
        }
        scratch.copy_within(start..filled, 0);
        filled -= start;
        // The decoder refuses frames over frame_bytes_max from their header,
        // and scratch holds one such frame, so a full buffer cannot happen.
        assert!(filled < scratch.len(), "scratch buffer full of one frame");
        if reads == READS_PER_WAKE_MAX {
            break;
        }
        reads += 1;
        match sys::recv(fd, &mut scratch[filled..]) {
            Ok(Io::WouldBlock) => break,
            Ok(Io::Done(0)) | Err(_) => {
                end = Some(End::Gone);
                break;
            }
            Ok(Io::Done(n)) => {
                filled += n;
                shard.metrics().bytes_in.add(n as u64);
            }
        }
    }
    {
        let mut conns = shard.conns.borrow_mut();
        if let Some(conn) = conns.get_mut(key) {
            conn.decoder = decoder;
            if end.is_none() && filled > 0 {
                conn.partial = Some(scratch[..filled].to_vec().into_boxed_slice());
            }
            conn.last_rx_ms = shard.now_ms();
            conn.ping_sent_ms = 0;
        }
    }
    drop(scratch);
    shard.flush_dirty();
    end
}

fn handle_message(shard: &Rc<Shard>, key: usize, message: Message<'_>) -> Option<End> {
    let binary = shard.conns.borrow().get(key)?.binary;
    match message {
        Message::Text(bytes) if !binary => {
            shard.metrics().messages_in.add(1);
            match decode_json(bytes) {
                Ok(command) => super::commands::handle(shard, key, command),
                Err(err) => bad_command(shard, key, err),
            }
        }
        Message::Binary(bytes) if binary => {
            shard.metrics().messages_in.add(1);
            match decode_binary(bytes) {
                Ok(command) => super::commands::handle(shard, key, command),
                Err(err) => bad_command(shard, key, err),
            }
        }
        Message::Text(_) | Message::Binary(_) => {
            shard.metrics().protocol_errors.add(1);
            Some(End::Close(CloseReason {
                code: CloseCode::UNSUPPORTED_DATA,
                reason: if binary {
                    "binary subprotocol takes binary frames"
                } else {
                    "JSON subprotocol takes text frames"
                },
                flush_queue: true,
            }))
        }
        Message::Ping(payload) => {
            shard.send_frame(key, encode_frame(OpCode::Pong, payload, None));
            None
        }
        Message::Pong(_) => None,
        Message::Close(close) => Some(End::PeerClosed(close.map(|(code, _)| code))),
    }
}

/// A command that did not decode: answer it when its id was readable,
/// otherwise the stream of commands cannot be trusted and the connection
/// closes with 4006.
fn bad_command(
    shard: &Shard,
    key: usize,
    err: ringcast_protocol::client::CommandError,
) -> Option<End> {
    match err.id {
        Some(id) => {
            send_reply(
                shard,
                key,
                &Reply::Error {
                    id,
                    code: err.code,
                    message: err.message,
                },
            );
            None
        }
        None => {
            shard.metrics().protocol_errors.add(1);
            Some(End::Close(CloseReason {
                code: CloseCode::BAD_REQUEST,
                reason: "undecodable command",
                flush_queue: true,
            }))
        }
    }
}

pub(super) fn send_reply(shard: &Shard, key: usize, reply: &Reply) {
    let Some(binary) = shard.conns.borrow().get(key).map(|c| c.binary) else {
        return;
    };
    let frame = if binary {
        encode_frame(OpCode::Binary, &encode_reply_binary(reply), None)
    } else {
        encode_frame(OpCode::Text, &encode_reply_json(reply), None)
    };
    shard.send_frame(key, frame);
}

/// Leaves every channel, runs the close handshake (bounded by
/// `CLOSE_LINGER`), and frees the slot.
async fn finish(shard: &Shard, stream: &TcpStream, fd: RawFd, key: usize, end: End) {
    shard.unsubscribe_all(key);
    let (close_frame, wait_for_peer) = match end {
        End::Close(reason) => {
            if let Some(conn) = shard.conns.borrow_mut().get_mut(key) {
                conn.closing = Some(reason);
                if !reason.flush_queue {
                    conn.out.clear();
                    conn.out_bytes = 0;
                }
            }
            (Some(encode_close(reason.code, reason.reason, None)), true)
        }
        // RFC 6455 §5.5.1: echo the peer's code; a close without one gets
        // an empty close back.
        End::PeerClosed(code) => (
            Some(match code {
                Some(code) => encode_close(code, "", None),
                None => bytes::Bytes::from_static(&[0x88, 0x00]),
            }),
            false,
        ),
        End::Gone => (None, false),
    };
    if let Some(frame) = close_frame {
        {
            let mut conns = shard.conns.borrow_mut();
            if let Some(conn) = conns.get_mut(key) {
                conn.out_bytes += frame.len();
                conn.out.push_back(frame);
                conn.write_blocked = false;
            }
        }
        let flushed = monoio::time::timeout(CLOSE_LINGER, flush_all(shard, stream, key)).await;
        if matches!(flushed, Ok(true)) && wait_for_peer {
            sys::shutdown_write(fd);
            let _ = monoio::time::timeout(CLOSE_LINGER, drain_until_eof(shard, stream, fd)).await;
        }
    }
    let mut conns = shard.conns.borrow_mut();
    if conns.try_remove(key).is_some() {
        shard.metrics().connections.sub(1);
    }
    if conns.is_empty() {
        if let Some(waker) = shard.idle_waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// Writes the whole queue, waiting for writability as needed.
async fn flush_all(shard: &Shard, stream: &TcpStream, key: usize) -> bool {
    let queue_bytes_max = shard.shared.config.websocket.outbound_queue_bytes_max;
    loop {
        {
            let mut conns = shard.conns.borrow_mut();
            let Some(conn) = conns.get_mut(key) else {
                return false;
            };
            conn.write_blocked = false;
            if !fanout::flush_conn(conn, queue_bytes_max, shard.metrics(), shard.now_ms()) {
                return false;
            }
            if conn.out.is_empty() {
                return true;
            }
        }
        if stream.writable(false).await.is_err() {
            return false;
        }
    }
}

/// After our close frame: read and discard until the peer closes.
async fn drain_until_eof(shard: &Shard, stream: &TcpStream, fd: RawFd) {
    loop {
        if stream.readable(false).await.is_err() {
            return;
        }
        let mut scratch = shard.scratch.borrow_mut();
        match sys::recv(fd, &mut scratch[..]) {
            Ok(Io::Done(0)) | Err(_) => return,
            Ok(Io::Done(_)) | Ok(Io::WouldBlock) => {}
        }
    }
}

/// Writes bytes before the connection is in the slab (handshake replies).
async fn write_raw(stream: &TcpStream, fd: RawFd, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match sys::send_vectored(fd, &[std::io::IoSlice::new(bytes)])? {
            Io::Done(n) => bytes = &bytes[n..],
            Io::WouldBlock => stream.writable(false).await?,
        }
    }
    Ok(())
}
