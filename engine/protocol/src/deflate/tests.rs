use super::*;
use crate::frame::{Decoder, Limits, Message, Role};

fn agreed(bits: u8, offered: bool) -> Option<Agreed> {
    Some(Agreed {
        server_window_bits: bits,
        server_window_bits_offered: offered,
    })
}

#[test]
fn negotiation_of_offers() {
    // (header values, what is agreed)
    let cases: &[(&[&str], Option<Agreed>)] = &[
        // RFC 7692 §7.1.3 / §9 examples and what browsers send.
        (&["permessage-deflate"], agreed(15, false)),
        (
            &["permessage-deflate; client_max_window_bits"],
            agreed(15, false),
        ),
        (
            &["permessage-deflate; client_max_window_bits=10"],
            agreed(15, false),
        ),
        (
            &["permessage-deflate; client_max_window_bits; server_max_window_bits=10"],
            agreed(10, true),
        ),
        (
            &["permessage-deflate; server_max_window_bits=10, permessage-deflate"],
            agreed(10, true),
        ),
        (
            &["permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
            agreed(15, false),
        ),
        (&["PerMessage-Deflate"], agreed(15, false)),
        (
            &["permessage-deflate; server_max_window_bits=\"12\""],
            agreed(12, true),
        ),
        (
            &["  permessage-deflate ;  client_max_window_bits  "],
            agreed(15, false),
        ),
        // Other extensions first, or across repeated headers.
        (
            &["x-webkit-deflate-frame", "permessage-deflate"],
            agreed(15, false),
        ),
        (
            &["foo; a=1, permessage-deflate; server_max_window_bits=9"],
            agreed(9, true),
        ),
        // A window of 8 cannot be produced: that offer is declined and
        // the fallback taken.
        (
            &["permessage-deflate; server_max_window_bits=8, permessage-deflate"],
            agreed(15, false),
        ),
        (&["permessage-deflate; server_max_window_bits=8"], None),
        // Declined: unknown, repeated, malformed or out-of-range parameters.
        (&["permessage-deflate; foo"], None),
        (
            &["permessage-deflate; server_no_context_takeover; server_no_context_takeover"],
            None,
        ),
        (&["permessage-deflate; server_no_context_takeover=1"], None),
        (&["permessage-deflate; server_max_window_bits"], None),
        (&["permessage-deflate; server_max_window_bits=16"], None),
        (&["permessage-deflate; server_max_window_bits=7"], None),
        (&["permessage-deflate; server_max_window_bits=010"], None),
        (&["permessage-deflate; server_max_window_bits=1a"], None),
        (&["permessage-deflate; client_max_window_bits=0"], None),
        (&["permessage-deflate; client_max_window_bits=\"9"], None),
        (&["permessage-deflate; =1"], None),
        (&["permessage-deflate; a b"], None),
        (&["permessage-deflatex"], None),
        (&[""], None),
        (&[], None),
        (&[";;,,\"\\"], None),
    ];
    for (values, expected) in cases {
        assert_eq!(negotiate(values), *expected, "{values:?}");
    }
}

#[test]
fn response_names_both_no_context_takeovers() {
    let plain = negotiate(&["permessage-deflate; client_max_window_bits"]).expect("accepted");
    assert_eq!(
        plain.response_value(),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    let windowed = negotiate(&["permessage-deflate; server_max_window_bits=11"]).expect("ok");
    assert_eq!(
        windowed.response_value(),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=11"
    );
    // What we answer, a client of ours accepts.
    assert_eq!(
        client_accepts(Some(&windowed.response_value())),
        Ok(Some(ClientAgreed {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
        }))
    );
    assert_eq!(client_accepts(None), Ok(None));
    assert!(client_accepts(Some("x-other")).is_err());
    assert!(client_accepts(Some("permessage-deflate; foo")).is_err());
}

fn chat_json(n: usize) -> Vec<u8> {
    let mut json = String::from(r#"{"push":{"channel":"room:42","pub":{"data":["#);
    for i in 0..n {
        json.push_str(&format!(
            r#"{{"user":"user{i}","text":"hello from the chat room, message {i}"}},"#
        ));
    }
    json.push_str("{}]}}}");
    json.into_bytes()
}

/// A decoder and an inflater in the client's role read what the server
/// compressed back to the original, for every window size.
#[test]
fn compressed_frames_round_trip_at_every_window() {
    let payload = chat_json(20);
    let limits = Limits {
        frame_bytes_max: 1 << 20,
        message_bytes_max: 1 << 20,
    };
    let mut inflater = Inflater::new();
    for bits in WINDOW_BITS_MIN..=WINDOW_BITS_MAX {
        let frame = compress_frame(OpCode::Text, &payload, bits).expect("chat JSON compresses");
        assert_eq!(frame[0], 0x80 | RSV1 | 0x1, "FIN + RSV1 + text");
        assert!(
            frame.len() < payload.len() / 2,
            "{} of {}",
            frame.len(),
            payload.len()
        );
        let mut buf = frame.to_vec();
        let mut decoder = Decoder::new();
        let decoded = decoder
            .decode_with(&mut buf, Role::Client, &limits, true)
            .expect("valid")
            .expect("complete");
        assert!(decoded.compressed);
        let Some(Message::Text(body)) = decoded.message else {
            panic!("text expected");
        };
        let inflated = inflater
            .inflate(body, true, limits.message_bytes_max)
            .expect("inflates");
        assert_eq!(inflated, payload, "window bits {bits}");
    }
}

#[test]
fn incompressible_payloads_stay_uncompressed() {
    let noise: Vec<u8> = (0..64u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_eq!(compress_frame(OpCode::Binary, &noise, 15), None);
    assert_eq!(compress_frame(OpCode::Text, b"", 15), None);
}

#[test]
fn client_messages_inflate_and_empty_is_one_zero_byte() {
    let mut inflater = Inflater::new();
    // §7.2.3.6: an empty message compresses to a single 0x00.
    assert_eq!(compress_message(b""), [0x00]);
    assert_eq!(inflater.inflate(&[0x00], true, 10), Ok(&[][..]));
    // §7.2.3.1: "Hello" compressed, as the RFC prints it.
    let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    assert_eq!(inflater.inflate(&hello, true, 10), Ok(&b"Hello"[..]));
    // §7.2.3.3: "Hello" as an uncompressed deflate block.
    let stored = [
        0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
    ];
    assert_eq!(inflater.inflate(&stored, true, 10), Ok(&b"Hello"[..]));
    // §7.2.3.5: a final (BFINAL) block, then nothing.
    let final_block = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
    assert_eq!(inflater.inflate(&final_block, true, 10), Ok(&b"Hello"[..]));
    // The inflater keeps nothing between messages.
    let message = chat_json(3);
    let compressed = compress_message(&message);
    for _ in 0..3 {
        assert_eq!(
            inflater.inflate(&compressed, true, 1 << 16),
            Ok(&message[..])
        );
    }
}

#[test]
fn zip_bomb_stops_at_the_limit() {
    let zeros = vec![0u8; 8 << 20];
    let bomb = compress_message(&zeros);
    assert!(bomb.len() < 16 * 1024, "{} bytes", bomb.len());
    let mut inflater = Inflater::new();
    let err = inflater
        .inflate(&bomb, false, 1 << 20)
        .expect_err("over the limit");
    assert_eq!(err.close_code, CloseCode::MESSAGE_TOO_BIG);
    // The output never grew past the limit plus one.
    assert!(
        inflater.out.capacity() <= (1 << 20) + 1,
        "{}",
        inflater.out.capacity()
    );
    // Exactly at the limit is fine.
    let exact = compress_message(&zeros[..1 << 20]);
    assert_eq!(
        inflater.inflate(&exact, false, 1 << 20).map(<[u8]>::len),
        Ok(1 << 20)
    );
}

#[test]
fn corrupt_data_and_bad_utf8_are_1007() {
    let mut inflater = Inflater::new();
    let err = inflater
        .inflate(&[0xff, 0xff, 0xff, 0xff], false, 1024)
        .expect_err("not deflate");
    assert_eq!(err.close_code, CloseCode::INVALID_PAYLOAD);
    let latin1 = compress_message(&[0x63, 0x61, 0x66, 0xe9]);
    let err = inflater
        .inflate(&latin1, true, 1024)
        .expect_err("not UTF-8");
    assert_eq!(err.close_code, CloseCode::INVALID_PAYLOAD);
    // The same bytes are fine as binary.
    assert_eq!(
        inflater.inflate(&latin1, false, 1024).map(<[u8]>::len),
        Ok(4)
    );
}
