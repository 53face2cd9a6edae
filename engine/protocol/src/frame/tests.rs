use super::*;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const BIG: Limits = Limits {
    frame_bytes_max: 1 << 20,
    message_bytes_max: 1 << 20,
};

/// An owned copy of a [`Message`], so tests can collect across calls.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

impl From<Message<'_>> for Owned {
    fn from(message: Message<'_>) -> Self {
        match message {
            Message::Text(b) => Self::Text(b.to_vec()),
            Message::Binary(b) => Self::Binary(b.to_vec()),
            Message::Ping(b) => Self::Ping(b.to_vec()),
            Message::Pong(b) => Self::Pong(b.to_vec()),
            Message::Close(c) => Self::Close(c.map(|(code, reason)| (code.0, reason.to_owned()))),
        }
    }
}

/// A raw frame with explicit first byte, for building violations.
fn raw(b0: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut header = [0u8; 14];
    // Encode as Binary to get the length bytes, then patch byte 0.
    let header_len = encode_header(&mut header, true, OpCode::Binary, payload.len(), mask);
    let mut out = header[..header_len].to_vec();
    out[0] = b0;
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key);
    }
    out
}

/// A client-to-server (masked) frame.
fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
    raw(b0, payload, Some(KEY))
}

const FIN: u8 = 0x80;

/// Feeds whole frames one by one like the engine: `Err((frame index,
/// code))` on the first error, else the messages.
fn decode_frames(
    frames: &[Vec<u8>],
    role: Role,
    limits: &Limits,
) -> Result<Vec<Owned>, (usize, u16)> {
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    for (idx, frame) in frames.iter().enumerate() {
        let mut buf = frame.clone();
        match decoder.decode(&mut buf, role, limits) {
            Ok(Some(decoded)) => {
                assert_eq!(decoded.consumed, frame.len(), "frame {idx}");
                out.extend(decoded.message.map(Owned::from));
            }
            Ok(None) => panic!("frame {idx} incomplete"),
            Err(err) => return Err((idx, err.close_code.0)),
        }
    }
    Ok(out)
}

/// A streaming caller: appends `chunks` to a pending buffer and decodes
/// everything it can after each, like the engine's read loop.
fn decode_stream(chunks: &[&[u8]], role: Role, limits: &Limits) -> Result<Vec<Owned>, u16> {
    let mut decoder = Decoder::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        pending.extend_from_slice(chunk);
        let mut start = 0;
        loop {
            let before = pending[start..].to_vec();
            match decoder.decode(&mut pending[start..], role, limits) {
                Ok(None) => {
                    assert_eq!(
                        pending[start..],
                        before[..],
                        "Ok(None) must not modify the buffer"
                    );
                    break;
                }
                Ok(Some(decoded)) => {
                    assert!(decoded.consumed > 0);
                    start += decoded.consumed;
                    out.extend(decoded.message.map(Owned::from));
                }
                Err(err) => return Err(err.close_code.0),
            }
        }
        pending.drain(..start);
    }
    assert!(pending.is_empty(), "{} bytes left undecoded", pending.len());
    Ok(out)
}

#[test]
fn decoder_is_small() {
    assert!(std::mem::size_of::<Decoder>() <= 16);
    assert_eq!(std::mem::size_of::<Decoder>(), std::mem::size_of::<usize>());
}

#[test]
fn round_trip_every_length_class() {
    // (payload length, header length without mask)
    let classes = [
        (0, 2),
        (1, 2),
        (125, 2),
        (126, 4),
        (127, 4),
        (65535, 4),
        (65536, 10),
        (70000, 10),
    ];
    for (len, header_len) in classes {
        let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        for opcode in [OpCode::Text, OpCode::Binary] {
            for (mask, role) in [(None, Role::Client), (Some(KEY), Role::Server)] {
                let frame = encode_frame(opcode, &payload, mask);
                let expected_header = header_len + if mask.is_some() { 4 } else { 0 };
                assert_eq!(
                    frame.len(),
                    expected_header + len,
                    "len {len} mask {mask:?}"
                );
                let mut buf = frame.to_vec();
                let mut decoder = Decoder::new();
                let decoded = decoder
                    .decode(&mut buf, role, &BIG)
                    .expect("valid")
                    .expect("complete");
                assert_eq!(decoded.consumed, frame.len());
                let expected = match opcode {
                    OpCode::Text => Message::Text(&payload),
                    _ => Message::Binary(&payload),
                };
                assert_eq!(decoded.message, Some(expected), "len {len} mask {mask:?}");
            }
        }
    }
}

#[test]
fn round_trip_control_frames() {
    for (mask, role) in [(None, Role::Client), (Some(KEY), Role::Server)] {
        let cases: Vec<(Bytes, Owned)> = vec![
            (encode_frame(OpCode::Ping, b"", mask), Owned::Ping(vec![])),
            (
                encode_frame(OpCode::Ping, &[7; 125], mask),
                Owned::Ping(vec![7; 125]),
            ),
            (
                encode_frame(OpCode::Pong, b"pong", mask),
                Owned::Pong(b"pong".to_vec()),
            ),
            (encode_frame(OpCode::Close, b"", mask), Owned::Close(None)),
            (
                encode_close(CloseCode::NORMAL, "", mask),
                Owned::Close(Some((1000, String::new()))),
            ),
            (
                encode_close(CloseCode::TRY_AGAIN_LATER, "slow", mask),
                Owned::Close(Some((1013, "slow".into()))),
            ),
        ];
        for (frame, expected) in cases {
            assert_eq!(
                decode_frames(&[frame.to_vec()], role, &BIG),
                Ok(vec![expected])
            );
        }
    }
}

#[test]
fn non_minimal_lengths_are_accepted() {
    // 5-byte payload announced with the 16-bit and the 64-bit forms.
    let payload = b"hello";
    let mut frame16 = vec![FIN | 0x2, 126, 0, 5];
    frame16.extend_from_slice(payload);
    let mut frame64 = vec![FIN | 0x2, 127, 0, 0, 0, 0, 0, 0, 0, 5];
    frame64.extend_from_slice(payload);
    for frame in [frame16, frame64] {
        assert_eq!(
            decode_frames(&[frame], Role::Client, &BIG),
            Ok(vec![Owned::Binary(payload.to_vec())])
        );
    }
}

/// One row of the violation table: frames fed in order, and the
/// (index of the failing frame, close code) expected.
struct Violation {
    name: &'static str,
    frames: Vec<Vec<u8>>,
    role: Role,
    limits: Limits,
    expected: (usize, u16),
}

/// A server-side row with generous limits.
fn violation(name: &'static str, frames: Vec<Vec<u8>>, expected: (usize, u16)) -> Violation {
    Violation {
        name,
        frames,
        role: Role::Server,
        limits: BIG,
        expected,
    }
}

impl Violation {
    fn role(self, role: Role) -> Self {
        Self { role, ..self }
    }

    fn limits(self, frame_bytes_max: usize, message_bytes_max: usize) -> Self {
        Self {
            limits: Limits {
                frame_bytes_max,
                message_bytes_max,
            },
            ..self
        }
    }
}

#[test]
fn violations_yield_their_close_codes() {
    let long_len = {
        // Binary, 64-bit length with only the header present.
        let mut f = vec![FIN | 0x2, 0x80 | 127];
        f.extend_from_slice(&(1u64 << 40).to_be_bytes());
        f.extend_from_slice(&KEY);
        f
    };
    let msb_len = {
        let mut f = vec![FIN | 0x2, 0x80 | 127];
        f.extend_from_slice(&(1u64 << 63).to_be_bytes());
        f.extend_from_slice(&KEY);
        f
    };
    let close_with = |code: u16, reason: &[u8]| {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason);
        vec![masked(FIN | 0x8, &p)]
    };
    let cases = [
        violation("rsv1", vec![masked(FIN | 0x40 | 0x1, b"a")], (0, 1002)),
        violation("rsv2", vec![masked(FIN | 0x20 | 0x1, b"a")], (0, 1002)),
        violation("rsv3", vec![masked(FIN | 0x10 | 0x2, b"a")], (0, 1002)),
        violation("opcode 3", vec![masked(FIN | 0x3, b"")], (0, 1002)),
        violation("opcode 7", vec![masked(FIN | 0x7, b"")], (0, 1002)),
        violation("opcode B", vec![masked(FIN | 0xB, b"")], (0, 1002)),
        violation("opcode F", vec![masked(FIN | 0xF, b"")], (0, 1002)),
        violation(
            "server gets unmasked",
            vec![raw(FIN | 0x1, b"a", None)],
            (0, 1002),
        ),
        violation(
            "client gets masked",
            vec![raw(FIN | 0x1, b"a", Some(KEY))],
            (0, 1002),
        )
        .role(Role::Client),
        violation(
            "ping over 125",
            vec![masked(FIN | 0x9, &[0; 126])],
            (0, 1002),
        ),
        violation(
            "close over 125",
            vec![masked(FIN | 0x8, &[3; 126])],
            (0, 1002),
        ),
        violation("fragmented ping", vec![masked(0x9, b"p")], (0, 1002)),
        violation("64-bit length msb", vec![msb_len], (0, 1002)),
        violation("close 1 byte", vec![masked(FIN | 0x8, &[3])], (0, 1002)),
        violation("close code 999", close_with(999, b""), (0, 1002)),
        violation("close code 1004", close_with(1004, b""), (0, 1002)),
        violation("close code 1005", close_with(1005, b""), (0, 1002)),
        violation("close code 1006", close_with(1006, b""), (0, 1002)),
        violation("close code 1015", close_with(1015, b""), (0, 1002)),
        violation("close code 2000", close_with(2000, b""), (0, 1002)),
        violation("close code 5000", close_with(5000, b""), (0, 1002)),
        violation("close bad utf-8", close_with(1000, b"ok\xff"), (0, 1007)),
        violation("frame over limit, header only", vec![long_len], (0, 1009)),
        violation(
            "frame over frame limit",
            vec![masked(FIN | 0x2, &[0; 101])],
            (0, 1009),
        )
        .limits(100, 150),
        violation(
            "message over message limit",
            vec![masked(0x2, &[0; 100]), masked(0x0, &[0; 51])],
            (1, 1009),
        )
        .limits(100, 150),
        violation(
            "unfragmented over message limit",
            vec![masked(FIN | 0x2, &[0; 101])],
            (0, 1009),
        )
        .limits(200, 100),
        violation("continuation first", vec![masked(FIN, b"a")], (0, 1002)),
        violation(
            "continuation after complete",
            vec![masked(0x1, b"a"), masked(FIN, b"b"), masked(FIN, b"c")],
            (2, 1002),
        ),
        violation(
            "text inside fragmented",
            vec![masked(0x1, b"a"), masked(FIN | 0x1, b"b")],
            (1, 1002),
        ),
        violation(
            "binary inside fragmented",
            vec![masked(0x2, b"a"), masked(0x2, b"b")],
            (1, 1002),
        ),
        violation(
            "invalid utf-8",
            vec![masked(FIN | 0x1, b"ok\xff")],
            (0, 1007),
        ),
        violation(
            "truncated utf-8",
            vec![masked(FIN | 0x1, b"ok\xe2\x82")],
            (0, 1007),
        ),
        violation(
            "surrogate",
            vec![masked(FIN | 0x1, b"\xed\xa0\x80")],
            (0, 1007),
        ),
        violation("overlong", vec![masked(FIN | 0x1, b"\xc0\xaf")], (0, 1007)),
        // Fragmented: fail fast at the fragment where it becomes impossible.
        violation(
            "bad byte in 2nd fragment",
            vec![masked(0x1, b"ab"), masked(0x0, b"\xff"), masked(FIN, b"")],
            (1, 1007),
        ),
        violation(
            "impossible prefix F4 90",
            vec![masked(0x1, b"\xf4\x90"), masked(FIN, b"\x80\x80")],
            (0, 1007),
        ),
        violation(
            "lead byte C0",
            vec![masked(0x1, b"\xc0"), masked(FIN, b"\x80")],
            (0, 1007),
        ),
        violation(
            "split code point broken",
            vec![
                masked(0x1, b"ab\xf0\x9f"),
                masked(0x0, b"A"),
                masked(FIN, b""),
            ],
            (1, 1007),
        ),
        violation(
            "final fragment ends mid code point",
            vec![masked(0x1, b"\xf0\x9f"), masked(FIN, b"\x98")],
            (1, 1007),
        ),
    ];
    for case in cases {
        let result = decode_frames(&case.frames, case.role, &case.limits);
        assert_eq!(result, Err(case.expected), "{}", case.name);
    }
}

#[test]
fn header_violations_are_detected_from_the_header_alone() {
    // Only the first bytes arrive; the error must not wait for the payload.
    let cases: &[(&[u8], Role, u16)] = &[
        (&[FIN | 0x41], Role::Server, 0),          // incomplete: 1 byte
        (&[FIN | 0x41, 0x85], Role::Server, 1002), // rsv1
        (&[FIN | 0x1, 0x05], Role::Server, 1002),  // unmasked
        (&[0x9, 0x80], Role::Server, 1002),        // fragmented ping
        (&[FIN | 0x2, 0x80 | 126, 0x00], Role::Server, 0), // incomplete length
        (&[FIN | 0x2, 0x80 | 126, 0x10, 0x00], Role::Server, 1009), // 4096 > 1000
        (&[FIN | 0x2, 0x80 | 126, 0x01, 0x00], Role::Server, 0), // 256: wait for the mask
    ];
    let limits = Limits {
        frame_bytes_max: 1000,
        message_bytes_max: 1000,
    };
    for &(bytes, role, code) in cases {
        let mut buf = bytes.to_vec();
        let mut decoder = Decoder::new();
        let result = decoder.decode(&mut buf, role, &limits);
        match (code, result) {
            (0, Ok(None)) => {}
            (code, Err(err)) if err.close_code.0 == code => {}
            (code, other) => panic!("{bytes:?}: expected {code}, got {other:?}"),
        }
    }
}

/// A client stream exercising every decoder path.
fn mixed_stream() -> (Vec<u8>, Vec<Owned>) {
    let frames = [
        masked(FIN | 0x1, "héllo".as_bytes()),
        masked(FIN | 0x9, b"p1"),
        masked(0x2, &[1, 2, 3]),
        masked(FIN | 0xA, b""),
        masked(0x0, &[4; 200]),
        masked(FIN, &[5]),
        masked(0x1, b"a\xf0"),
        masked(0x0, b"\x9f\x98"),
        masked(FIN | 0x9, b"p2"),
        masked(FIN, b"\x80z"),
        masked(FIN | 0x2, &[9; 300]),
        masked(FIN | 0x1, b""),
        encode_close(CloseCode::NORMAL, "bye", Some(KEY)).to_vec(),
    ];
    let mut binary = vec![1, 2, 3];
    binary.extend_from_slice(&[4; 200]);
    binary.push(5);
    let expected = vec![
        Owned::Text("héllo".as_bytes().to_vec()),
        Owned::Ping(b"p1".to_vec()),
        Owned::Pong(vec![]),
        Owned::Binary(binary),
        Owned::Ping(b"p2".to_vec()),
        Owned::Text("a😀z".as_bytes().to_vec()),
        Owned::Binary(vec![9; 300]),
        Owned::Text(vec![]),
        Owned::Close(Some((1000, "bye".into()))),
    ];
    (frames.concat(), expected)
}

#[test]
fn every_split_point_yields_the_same_messages() {
    let (stream, expected) = mixed_stream();
    assert_eq!(
        decode_stream(&[&stream], Role::Server, &BIG),
        Ok(expected.clone())
    );
    for split in 0..=stream.len() {
        let (a, b) = stream.split_at(split);
        assert_eq!(
            decode_stream(&[a, b], Role::Server, &BIG),
            Ok(expected.clone()),
            "split at {split}"
        );
    }
    // Two split points, on a coarser grid to keep the test fast.
    for first in (0..stream.len()).step_by(7) {
        for second in (first..=stream.len()).step_by(5) {
            let chunks = [&stream[..first], &stream[first..second], &stream[second..]];
            assert_eq!(
                decode_stream(&chunks, Role::Server, &BIG),
                Ok(expected.clone()),
                "{first}/{second}"
            );
        }
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(decode_stream(&bytes, Role::Server, &BIG), Ok(expected));
}

#[test]
fn code_point_split_across_fragments_is_accepted() {
    let text = "x😀€é";
    let bytes = text.as_bytes();
    // Every way to cut the text into three fragments.
    for i in 0..=bytes.len() {
        for j in i..=bytes.len() {
            let frames = [
                masked(0x1, &bytes[..i]),
                masked(0x0, &bytes[i..j]),
                masked(FIN, &bytes[j..]),
            ];
            assert_eq!(
                decode_frames(&frames, Role::Server, &BIG),
                Ok(vec![Owned::Text(bytes.to_vec())]),
                "cuts at {i}/{j}"
            );
        }
    }
}

#[test]
fn interleaved_control_frames_during_fragmentation() {
    let frames = [
        masked(0x1, b"he"),
        masked(FIN | 0x9, b"ping"),
        masked(0x0, b"l"),
        masked(FIN | 0xA, b"pong"),
        masked(FIN | 0x8, &1000u16.to_be_bytes()),
        masked(FIN, b"lo"),
    ];
    let decoded = decode_frames(&frames, Role::Server, &BIG);
    assert_eq!(
        decoded,
        Ok(vec![
            Owned::Ping(b"ping".to_vec()),
            Owned::Pong(b"pong".to_vec()),
            Owned::Close(Some((1000, String::new()))),
            Owned::Text(b"hello".to_vec()),
        ])
    );
}

#[test]
fn reassembly_is_freed_after_the_message() {
    let mut decoder = Decoder::new();
    let mut first = masked(0x2, b"ab");
    let mut last = masked(FIN, b"cd");
    let mut next = masked(FIN | 0x9, b"");
    assert_eq!(
        decoder
            .decode(&mut first, Role::Server, &BIG)
            .map(|d| d.map(|d| d.message)),
        Ok(Some(None))
    );
    assert!(decoder.is_mid_message());
    let message = decoder
        .decode(&mut last, Role::Server, &BIG)
        .map(|d| d.and_then(|d| d.message));
    assert_eq!(message, Ok(Some(Message::Binary(b"abcd"))));
    assert!(!decoder.is_mid_message());
    assert!(decoder.decode(&mut next, Role::Server, &BIG).is_ok());
    assert!(
        decoder.reassembly.is_none(),
        "reassembly buffer kept after the message"
    );
}

#[test]
fn encode_close_truncates_at_char_boundary() {
    let reason = "é".repeat(100); // 200 bytes
    for mask in [None, Some(KEY)] {
        let frame = encode_close(CloseCode::GOING_AWAY, &reason, mask);
        let role = if mask.is_some() {
            Role::Server
        } else {
            Role::Client
        };
        let decoded = decode_frames(&[frame.to_vec()], role, &BIG).expect("valid close");
        let expected = Owned::Close(Some((1001, "é".repeat(61)))); // 122 of 123 bytes
        assert_eq!(decoded, vec![expected]);
    }
    let exact = "a".repeat(123);
    let frame = encode_close(CloseCode::NORMAL, &exact, None);
    assert_eq!(frame.len(), 2 + 125);
}

#[test]
fn encode_header_is_minimal() {
    type HeaderCase = (usize, Option<[u8; 4]>, &'static [u8]);
    let cases: &[HeaderCase] = &[
        (0, None, &[0x82, 0]),
        (125, None, &[0x82, 125]),
        (126, None, &[0x82, 126, 0, 126]),
        (65535, None, &[0x82, 126, 0xff, 0xff]),
        (65536, None, &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        (5, Some([1, 2, 3, 4]), &[0x82, 0x85, 1, 2, 3, 4]),
        (
            65536,
            Some([1, 2, 3, 4]),
            &[0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4],
        ),
    ];
    for &(len, mask, expected) in cases {
        let mut out = [0u8; 14];
        let n = encode_header(&mut out, true, OpCode::Binary, len, mask);
        assert_eq!(&out[..n], expected, "len {len}");
    }
    let mut out = [0u8; 14];
    let n = encode_header(&mut out, false, OpCode::Continuation, 1, None);
    assert_eq!(&out[..n], &[0x00, 1]);
}

#[test]
fn apply_mask_matches_naive() {
    fn naive(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, byte) in buf.iter_mut().enumerate() {
            *byte ^= key[(i + offset) % 4];
        }
    }
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2000 {
        let len = (next() % 300) as usize;
        let start = (next() % 9) as usize; // unaligned starts within a larger buffer
        let offset = (next() % 7) as usize;
        let key = (next() as u32).to_le_bytes();
        let data: Vec<u8> = (0..start + len).map(|_| next() as u8).collect();
        let mut fast = data.clone();
        let mut slow = data.clone();
        apply_mask_at(&mut fast[start..], key, offset);
        naive(&mut slow[start..], key, offset);
        assert_eq!(fast, slow, "len {len} start {start} offset {offset}");
        apply_mask(&mut fast[start..], key);
        naive(&mut slow[start..], key, 0);
        assert_eq!(fast, slow, "len {len} start {start}");
    }
}

#[test]
fn protocol_error_displays_its_reason() {
    let err = ProtocolError::protocol("reserved opcode");
    assert_eq!(err.to_string(), "reserved opcode");
}

/// With permessage-deflate negotiated, RSV1 marks the first frame of a
/// compressed message; everywhere else it stays a violation (RFC 7692 §6).
#[test]
fn rsv1_with_and_without_deflate() {
    let decode_one = |frames: &[Vec<u8>], deflate: bool| {
        let mut decoder = Decoder::new();
        let mut results = Vec::new();
        for frame in frames {
            let mut buf = frame.clone();
            match decoder.decode_with(&mut buf, Role::Server, &BIG, deflate) {
                Ok(Some(decoded)) => {
                    results.push(Ok((decoded.compressed, decoded.message.map(Owned::from))))
                }
                Ok(None) => results.push(Err(0)),
                Err(err) => {
                    results.push(Err(err.close_code.0));
                    break;
                }
            }
        }
        results
    };
    // Not valid UTF-8 on its own: compressed text is checked after inflating.
    let body = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    // A compressed text message in one frame.
    assert_eq!(
        decode_one(&[masked(0xC1, &body)], true),
        [Ok((true, Some(Owned::Text(body.to_vec()))))]
    );
    // Without the extension RSV1 is a protocol error, as before.
    assert_eq!(decode_one(&[masked(0xC1, &body)], false), [Err(1002)]);
    assert_eq!(decode_one(&[masked(0xC2, &body)], false), [Err(1002)]);
    // A compressed message in fragments: RSV1 on the first only.
    assert_eq!(
        decode_one(&[masked(0x41, &body[..3]), masked(0x80, &body[3..])], true),
        [
            Ok((true, None)),
            Ok((true, Some(Owned::Text(body.to_vec()))))
        ]
    );
    // RSV1 on a continuation is a violation.
    assert_eq!(
        decode_one(&[masked(0x01, b"ab"), masked(0xC0, b"cd")], true),
        [Ok((false, None)), Err(1002)]
    );
    // Control frames are never compressed.
    for opcode in [0x88, 0x89, 0x8A] {
        assert_eq!(decode_one(&[masked(0x40 | opcode, b"")], true), [Err(1002)]);
    }
    // RSV2 and RSV3 are still violations with deflate.
    assert_eq!(decode_one(&[masked(0xA1, b"x")], true), [Err(1002)]);
    assert_eq!(decode_one(&[masked(0x91, b"x")], true), [Err(1002)]);
    // An uncompressed message on a deflate connection is still checked as
    // UTF-8 text, and not marked compressed.
    assert_eq!(decode_one(&[masked(0x81, &[0xff])], true), [Err(1007)]);
    assert_eq!(
        decode_one(&[masked(0x81, b"hi")], true),
        [Ok((false, Some(Owned::Text(b"hi".to_vec()))))]
    );
}
