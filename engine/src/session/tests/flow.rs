//! Frames on the virtual clock: slow consumers, the replay merged with
//! live publications, close codes and the close handshake, sending.

use super::*;

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
fn unstored_publications_are_never_taken_for_replayed_copies() {
    // Offset 0: delivered without being stored (a publish proxy's
    // `skip_history`), so no replay can have delivered it already.
    let mut pair = Pair::open(false);
    pair.server.begin_recovery(CHANNEL);
    assert_eq!(pair.offer(&publication(CHANNEL, 0)), Offer::Held);
    assert_eq!(pair.offer(&publication(CHANNEL, 3)), Offer::Held);
    let (now_ms, config) = (pair.now_ms, pair.config.clone());
    pair.server.end_recovery(CHANNEL, Some(3), now_ms, &config);
    assert_eq!(pair.offer(&publication(CHANNEL, 0)), Offer::Queued);
    assert_eq!(pair.offer(&publication(CHANNEL, 2)), Offer::Dropped);
    pair.drive_bounded();
    assert_eq!(pair.got().len(), 2, "both unstored publications go out");
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

#[test]
fn a_catchups_entry_goes_with_the_first_live_publication_above_its_replay() {
    let mut pair = Pair::open(false);
    pair.server.begin_catchup(CHANNEL);
    let (now_ms, config) = (pair.now_ms, pair.config.clone());
    pair.server.end_recovery(CHANNEL, Some(3), now_ms, &config);
    // A late copy of the replay is still dropped; the next one ends it.
    assert_eq!(pair.offer(&publication(CHANNEL, 3)), Offer::Dropped);
    assert!(pair.server.recovering.is_some());
    assert_eq!(pair.offer(&publication(CHANNEL, 4)), Offer::Queued);
    assert!(pair.server.recovering.is_none(), "no entry left");

    // Held past the replay: gone as the replay ends.
    pair.server.begin_catchup(CHANNEL);
    assert_eq!(pair.offer(&publication(CHANNEL, 6)), Offer::Held);
    pair.server.end_recovery(CHANNEL, Some(5), now_ms, &config);
    assert!(pair.server.recovering.is_none(), "no entry left");
    pair.drive_bounded();
    assert_eq!(offsets(&pair.got()), [4, 6]);

    // A subscription's floor stays.
    pair.server.begin_recovery(CHANNEL);
    assert_eq!(pair.offer(&publication(CHANNEL, 8)), Offer::Held);
    pair.server.end_recovery(CHANNEL, Some(7), now_ms, &config);
    assert!(pair.server.recovering.is_some());
}
