//! permessage-deflate end to end over a raw socket: tungstenite 0.24 has no
//! permessage-deflate, so the client compresses and inflates with the
//! protocol crate's helpers (zlib through flate2), which the unit tests
//! check against RFC 7692's own byte examples.

use crate::e2e;
use crate::util::*;
use ringcast_engine::config::{Config, Driver};
use ringcast_protocol::deflate::{compress_message, Inflater, RSV1};
use serde_json::{json, Value};

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
const AGREED: &str = "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover";

fn deflate_config(driver: Driver) -> Config {
    let mut config = config(driver, 1);
    config.websocket.compression = true;
    config.websocket.compression_min_bytes = 128;
    config.websocket.frame_bytes_max = 8192;
    config
}

/// Reads frames until a text message that is not a ping; returns whether
/// it was compressed, and the JSON (inflated).
fn read_message(raw: &mut Raw, inflater: &mut Inflater) -> (bool, Value) {
    loop {
        let (first_byte, payload) = raw.read_frame_first_byte().expect("a frame");
        if first_byte & 0x0f != 0x1 {
            continue;
        }
        assert_eq!(first_byte & 0x80, 0x80, "FIN: pushes are one frame");
        let compressed = first_byte & RSV1 != 0;
        let text = if compressed {
            inflater
                .inflate(&payload, true, 1 << 20)
                .expect("inflates")
                .to_vec()
        } else {
            payload
        };
        return (compressed, serde_json::from_slice(&text).expect("JSON"));
    }
}

/// A compressed, masked text frame carrying `value`.
fn send_compressed(raw: &mut Raw, value: &Value) {
    raw.send_frame(
        0x80 | RSV1 | 0x1,
        &compress_message(value.to_string().as_bytes()),
        true,
    );
}

fn chat_batch(n: usize) -> Value {
    json!((0..n)
        .map(|i| json!({"user": format!("user{i}"), "text": "hello from the chat room"}))
        .collect::<Vec<_>>())
}

e2e!(
    pushes_are_compressed_once_and_commands_round_trip,
    |driver| {
        let engine = start(deflate_config(driver));
        let mut inflater = Inflater::new();
        let (mut raw, head) = Raw::connect_with_headers(&engine, "ann", OFFER);
        assert!(head.contains(AGREED), "{head}");
        // The connect message is a reply: uncompressed.
        let (compressed, connect) = read_message(&mut raw, &mut inflater);
        assert!(!compressed && connect.get("connect").is_some(), "{connect}");
        // A compressed command is inflated and answered (uncompressed).
        send_compressed(
            &mut raw,
            &json!({"id": 1, "method": "subscribe", "params": {"channel": "room:z"}}),
        );
        let (compressed, reply) = read_message(&mut raw, &mut inflater);
        assert!(!compressed, "replies go uncompressed");
        assert_eq!(reply["id"], 1, "{reply}");
        assert!(reply.get("result").is_some(), "{reply}");
        // A client without the offer, on the same channel, gets the plain frame.
        let (mut plain, head) = Raw::connect_with_headers(&engine, "bob", "");
        assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
        read_message(&mut plain, &mut inflater);
        plain.send_frame(
            0x81,
            json!({"id": 1, "method": "subscribe", "params": {"channel": "room:z"}})
                .to_string()
                .as_bytes(),
            true,
        );
        read_message(&mut plain, &mut inflater);

        let batch = chat_batch(12);
        publish(&engine, "room:z", batch.clone());
        let (compressed, push) = read_message(&mut raw, &mut inflater);
        assert!(compressed, "a large push goes compressed");
        assert_eq!(push["push"]["data"], batch, "{push}");
        let (compressed, push) = read_message(&mut plain, &mut inflater);
        assert!(!compressed);
        assert_eq!(push["push"]["data"], batch, "{push}");
        // Under compression_min_bytes a push goes plain on a deflate connection.
        publish(&engine, "room:z", json!("hi"));
        let (compressed, push) = read_message(&mut raw, &mut inflater);
        assert!(!compressed, "a small push goes uncompressed");
        assert_eq!(push["push"]["data"], "hi", "{push}");
        let (_, push) = read_message(&mut plain, &mut inflater);
        assert_eq!(push["push"]["data"], "hi", "{push}");
        // A compressed publish command round-trips to the other client.
        send_compressed(
            &mut raw,
            &json!({"id": 2, "method": "publish", "params": {"channel": "room:z", "data": batch}}),
        );
        let (_, push) = read_message(&mut plain, &mut inflater);
        assert_eq!(push["push"]["data"], batch, "{push}");
        engine.shutdown();
    }
);

e2e!(zip_bomb_closes_with_1009, |driver| {
    let engine = start(deflate_config(driver));
    let (mut raw, _) = Raw::connect_with_headers(&engine, "bomb", OFFER);
    // 4 MiB of zeros in about 4 KiB: over message_bytes_max (4096) a
    // thousand times once inflated, well inside the frame limit on the wire.
    let bomb = compress_message(&vec![0u8; 4 << 20]);
    assert!(bomb.len() < 8192, "{} bytes", bomb.len());
    raw.send_frame(0x80 | RSV1 | 0x2, &bomb, true);
    assert_eq!(raw.read_close_code(), Some(1009));
    engine.shutdown();
});

e2e!(bad_deflate_data_closes_with_1007, |driver| {
    let engine = start(deflate_config(driver));
    let (mut raw, _) = Raw::connect_with_headers(&engine, "bad", OFFER);
    raw.send_frame(0x80 | RSV1 | 0x1, &[0xff, 0xff, 0xff, 0xff], true);
    assert_eq!(raw.read_close_code(), Some(1007));
    engine.shutdown();
});

e2e!(
    compression_off_declines_and_rsv1_stays_a_violation,
    |driver| {
        let engine = start(config(driver, 1));
        let (mut raw, head) = Raw::connect_with_headers(&engine, "off", OFFER);
        assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
        send_compressed(&mut raw, &json!({"id": 1, "method": "subscribe"}));
        assert_eq!(raw.read_close_code(), Some(1002));
        engine.shutdown();
    }
);

e2e!(malformed_offers_are_declined_not_refused, |driver| {
    let engine = start(deflate_config(driver));
    for offer in [
        "permessage-deflate; foo=1",
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits=\"x",
    ] {
        let header = format!("Sec-WebSocket-Extensions: {offer}\r\n");
        let (_, head) = Raw::connect_with_headers(&engine, "odd", &header);
        assert!(
            !head.contains("Sec-WebSocket-Extensions"),
            "{offer}: {head}"
        );
    }
    // A window the client caps is echoed, and pushes use it.
    let header = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n";
    let (_, head) = Raw::connect_with_headers(&engine, "win", header);
    assert!(head.contains("; server_max_window_bits=10"), "{head}");
    engine.shutdown();
});
