//! Server pings idle connections and closes the ones that stop answering.

use std::time::Duration;

use crate::e2e;
use crate::util::*;

e2e!(
    silent_client_is_closed_and_answering_client_stays,
    |driver| {
        let mut config = config(driver, 2);
        config.websocket.ping_interval = Duration::from_millis(200);
        config.websocket.pong_timeout = Duration::from_millis(200);
        let engine = start(config);

        // tungstenite answers pings while it reads, so keep it reading, for well
        // past ping interval + pong timeout, on its own thread.
        let (mut answering, _) = connect(&engine, "alive");
        let answering = std::thread::spawn(move || {
            answering
                .get_mut()
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let deadline = std::time::Instant::now() + Duration::from_millis(2000);
            let mut pings = 0;
            while std::time::Instant::now() < deadline {
                match answering.read() {
                    Ok(tungstenite::Message::Ping(_)) => pings += 1,
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(tungstenite::Error::Io(e))
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(err) => panic!("answering client lost its connection: {err:?}"),
                }
            }
            (answering, pings)
        });

        // The raw client reads pings but never answers.
        let mut silent = Raw::connect(&engine, "silent");
        silent.read_frame().expect("connect message");
        let mut saw_ping = false;
        let code = loop {
            match silent.read_frame() {
                Some((0x9, _)) => saw_ping = true,
                Some((0x8, payload)) => break Some(u16::from_be_bytes([payload[0], payload[1]])),
                Some(other) => panic!("silent client got {other:?}"),
                None => break None,
            }
        };
        assert!(
            saw_ping,
            "server pinged the idle connection (then closed with {code:?})"
        );
        assert_eq!(code, Some(4005));

        let (mut answering, pings) = answering
            .join()
            .expect("answering client kept its connection");
        assert!(pings >= 2, "pinged repeatedly ({pings})");
        answering
            .get_mut()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let reply = command(
            &mut answering,
            serde_json::json!({"id": 1, "method": "ping"}),
        );
        assert!(reply.get("result").is_some());
        let (_, stats) = api(&engine, "GET", "/api/stats", None);
        let timeouts: u64 = stats["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["heartbeat_timeouts_total"].as_u64().unwrap())
            .sum();
        assert_eq!(timeouts, 1);
        engine.shutdown();
    }
);

// A sender that stops in the middle of a frame is cut with 4007 after the
// read-progress timeout, long before the heartbeat would notice; one that
// keeps trickling bytes of the frame is not.
e2e!(a_frame_stalled_midway_is_closed_with_4007, |driver| {
    use std::io::Write;
    let mut config = config(driver, 1);
    // Ten times the gap between the bytes below, so a loaded machine's
    // late wake-ups do not look like a stall.
    config.websocket.read_progress_timeout = Duration::from_millis(1000);
    let engine = start(config);
    let mut raw = Raw::connect(&engine, "slowloris");
    raw.read_frame().expect("connect message");
    // The header of a masked 100-byte text frame, and 10 bytes of it.
    let mut partial = vec![0x81, 0x80 | 100, 1, 2, 3, 4];
    partial.extend_from_slice(&[b'x' ^ 1; 10]);
    let started = std::time::Instant::now();
    let _ = raw.stream.write_all(&partial[..8]);
    // Progress (a byte every 100 ms, for 500 ms) keeps it open.
    for byte in &partial[8..13] {
        std::thread::sleep(Duration::from_millis(100));
        let _ = raw.stream.write_all(&[*byte]);
    }
    assert_eq!(raw.read_close_code(), Some(4007));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "closed at {waited:?}, while bytes were still arriving"
    );
    engine.shutdown();
});
