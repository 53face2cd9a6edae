//! Each RFC 6455 violation closes the connection with the prescribed code.

use crate::e2e;
use crate::util::*;

/// (what, bytes to send as (first byte, payload, masked) frames, expected close code)
type Case = (&'static str, Vec<(u8, Vec<u8>, bool)>, u16);

fn cases() -> Vec<Case> {
    let text = 0x81; // FIN | Text
    vec![
        (
            "unmasked client frame",
            vec![(text, b"{}".to_vec(), false)],
            1002,
        ),
        ("reserved bit set", vec![(0xC1, b"{}".to_vec(), true)], 1002),
        ("reserved opcode", vec![(0x83, vec![], true)], 1002),
        ("fragmented ping", vec![(0x09, vec![], true)], 1002),
        (
            "control frame over 125 bytes",
            vec![(0x89, vec![0; 126], true)],
            1002,
        ),
        (
            "continuation with nothing to continue",
            vec![(0x80, b"x".to_vec(), true)],
            1002,
        ),
        (
            "new message inside a fragmented one",
            vec![(0x01, b"{".to_vec(), true), (0x81, b"{}".to_vec(), true)],
            1002,
        ),
        (
            "invalid UTF-8 in text",
            vec![(text, vec![0xff, 0xfe], true)],
            1007,
        ),
        (
            "invalid UTF-8 split over fragments",
            vec![
                (0x01, vec![b'"', 0xe2, 0x82], true),
                (0x80, vec![0x28], true),
            ],
            1007,
        ),
        (
            "frame over frame_bytes_max",
            vec![(text, vec![b' '; 2000], true)],
            1009,
        ),
        (
            "message over message_bytes_max",
            (0..6)
                .map(|i| (if i == 0 { 0x01 } else { 0x00 }, vec![b' '; 1000], true))
                .collect(),
            1009,
        ),
        (
            "binary frame on the JSON subprotocol",
            vec![(0x82, vec![1, 2, 3], true)],
            1003,
        ),
        (
            "close with an invalid code",
            vec![(0x88, 1005u16.to_be_bytes().to_vec(), true)],
            1002,
        ),
        (
            "close with a 1-byte payload",
            vec![(0x88, vec![3], true)],
            1002,
        ),
        (
            "command that is not JSON",
            vec![(text, b"hello".to_vec(), true)],
            4006,
        ),
    ]
}

e2e!(each_violation_gets_its_close_code, |driver| {
    let engine = start(config(driver, 2));
    for (what, frames, expected) in cases() {
        let mut raw = Raw::connect(&engine, "v");
        let (opcode, _) = raw.read_frame().expect("connect message");
        assert_eq!(opcode, 0x1);
        for (first, payload, masked) in frames {
            raw.send_frame(first, &payload, masked);
        }
        assert_eq!(raw.read_close_code(), Some(expected), "{what}");
    }
    let (_, stats) = api(&engine, "GET", "/api/stats", None);
    let errors: u64 = stats["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["protocol_errors_total"].as_u64().unwrap())
        .sum();
    assert_eq!(errors as usize, cases().len());
    engine.shutdown();
});

e2e!(
    bad_command_with_an_id_gets_an_error_reply_and_stays_open,
    |driver| {
        let engine = start(config(driver, 2));
        let (mut ws, _) = connect(&engine, "a");
        let reply = command(
            &mut ws,
            serde_json::json!({"id": 3, "method": "subscribe", "params": {"chanel": "news:x"}}),
        );
        assert_eq!(reply["error"]["code"], 107, "{reply}");
        let reply = command(&mut ws, serde_json::json!({"id": 4, "method": "ping"}));
        assert!(reply.get("result").is_some());
        engine.shutdown();
    }
);

e2e!(client_close_is_echoed, |driver| {
    let engine = start(config(driver, 2));
    let mut raw = Raw::connect(&engine, "c");
    raw.read_frame().expect("connect message");
    raw.send_frame(0x88, &[0x0f, 0xa0, b'b', b'y', b'e'], true); // 4000 "bye"
    assert_eq!(raw.read_close_code(), Some(4000));
    assert_eq!(raw.read_frame(), None, "server closes TCP after the echo");
    engine.shutdown();
});

e2e!(client_ping_gets_pong_with_same_payload, |driver| {
    let engine = start(config(driver, 2));
    let mut raw = Raw::connect(&engine, "p");
    raw.read_frame().expect("connect message");
    raw.send_frame(0x89, b"are you there", true);
    assert_eq!(raw.read_frame(), Some((0xA, b"are you there".to_vec())));
    engine.shutdown();
});
