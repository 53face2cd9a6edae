//! A connection's life on the virtual clock: the upgrade, awaiting
//! admission (the connect proxy), heartbeats, read progress, token expiry.

use super::*;

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
