//! Golden bytes: the exact wire form of commands, replies, errors, connect
//! messages, history pages and pushes, in JSON and in binary (rkyv), pinned
//! as they were before `client.rs` was split into `client/`.
//!
//! These constants are the contract with deployed clients and with the
//! store (a push archive is also the stored form of a publication). A test
//! failing here means the wire changed: that needs a new subprotocol version
//! (and for pushes a store migration), not new constants. Binary forms are
//! pinned as hex, JSON forms as text; each binary constant is also decoded
//! back, so old bytes keep being readable.

use ringcast_protocol::client::{
    decode_binary, decode_json, decode_server_binary, encode_binary_command, encode_connect_binary,
    encode_connect_json, encode_history_binary, encode_history_json, encode_reply_binary,
    encode_reply_json, encode_subscription_binary, encode_subscription_json, BinaryCommand,
    BinaryCommandBody, ConnectInfo, ErrorCode, Recovery, Reply, ReplyResult, ServerMessage,
    StreamPosition,
};
use ringcast_protocol::envelope::{encode_push_json, ArchivedEnvelope, EncodedPush, Envelope};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

#[track_caller]
fn check_hex(actual: &[u8], expected: &str, what: &str) {
    let expected: String = expected.split_whitespace().collect();
    assert_eq!(hex(actual), expected, "binary form of {what}");
}

#[track_caller]
fn check_text(actual: &[u8], expected: &str, what: &str) {
    check_str(std::str::from_utf8(actual).unwrap(), expected, what);
}

#[track_caller]
fn check_str(actual: &str, expected: &str, what: &str) {
    assert_eq!(actual, expected, "{what}");
}

/// A `client_msg_id` of the longest allowed length.
const MAX_KEY: &str = "0123456789012345678901234567890123456789012345678901234567890123";

fn bin(id: u64, body: BinaryCommandBody) -> BinaryCommand {
    BinaryCommand { id, body }
}

/// (JSON text, the same command in binary, its archive in hex) for every
/// method, optional fields both present and absent.
fn commands() -> Vec<(&'static str, BinaryCommand, &'static str)> {
    vec![
        (
            r#"{"id":1,"method":"subscribe","params":{"channel":"news"}}"#,
            bin(
                1,
                BinaryCommandBody::Subscribe {
                    channel: "news".into(),
                    since: None,
                },
            ),
            "0100000000000000000000006e657773ffffffff000000000000000000000000\
            00000000000000000000000000000000",
        ),
        (
            r#"{"id":9,"method":"subscribe","params":{"channel":"chat:a","since":{"offset":41,"epoch":123}}}"#,
            bin(
                9,
                BinaryCommandBody::Subscribe {
                    channel: "chat:a".into(),
                    since: Some(StreamPosition {
                        offset: 41,
                        epoch: 123,
                    }),
                },
            ),
            "090000000000000000000000636861743a61ffff000000000100000000000000\
            29000000000000007b00000000000000",
        ),
        (
            r#"{"id":10,"method":"subscribe","params":{"since":{"epoch":"18446744073709551615","offset":0},"channel":"chat:a"}}"#,
            bin(
                10,
                BinaryCommandBody::Subscribe {
                    channel: "chat:a".into(),
                    since: Some(StreamPosition {
                        offset: 0,
                        epoch: u64::MAX,
                    }),
                },
            ),
            "0a0000000000000000000000636861743a61ffff000000000100000000000000\
            0000000000000000ffffffffffffffff",
        ),
        (
            r#"{"id":2,"method":"unsubscribe","params":{"channel":"news"}}"#,
            bin(
                2,
                BinaryCommandBody::Unsubscribe {
                    channel: "news".into(),
                },
            ),
            "0200000000000000010000006e657773ffffffff000000000000000000000000\
            00000000000000000000000000000000",
        ),
        (
            r#"{"id":3,"method":"publish","params":{"channel":"news","data":{"a": [1, 2.50]}}}"#,
            bin(
                3,
                BinaryCommandBody::Publish {
                    channel: "news".into(),
                    data: br#"{"a": [1, 2.50]}"#.to_vec(),
                    data_is_json: true,
                    client_msg_id: None,
                },
            ),
            "7b2261223a205b312c20322e35305d7d0300000000000000020000006e657773\
            ffffffffdcffffff100000000100000000000000000000000000000000000000",
        ),
        (
            r#"{"id":4,"method":"publish","params":{"channel":"news","b64data":"AAEC/w=="}}"#,
            bin(
                4,
                BinaryCommandBody::Publish {
                    channel: "news".into(),
                    data: vec![0, 1, 2, 255],
                    data_is_json: false,
                    client_msg_id: None,
                },
            ),
            "000102ff000000000400000000000000020000006e657773ffffffffe4ffffff\
            040000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":11,"method":"publish","params":{"channel":"news","data":[1],"client_msg_id":"k-1 ~!"}}"#,
            bin(
                11,
                BinaryCommandBody::Publish {
                    channel: "news".into(),
                    data: b"[1]".to_vec(),
                    data_is_json: true,
                    client_msg_id: Some("k-1 ~!".into()),
                },
            ),
            "5b315d00000000000b00000000000000020000006e657773ffffffffe4ffffff\
            0300000001000000010000006b2d31207e21ffff00000000",
        ),
        (
            r#"{"id":5,"method":"send","params":{"user":"alice","data":"hi"}}"#,
            bin(
                5,
                BinaryCommandBody::Send {
                    user: "alice".into(),
                    data: br#""hi""#.to_vec(),
                    data_is_json: true,
                    client_msg_id: None,
                },
            ),
            "2268692200000000050000000000000003000000616c696365ffffffe4ffffff\
            040000000100000000000000000000000000000000000000",
        ),
        (
            r#"{"id":12,"method":"send","params":{"user":"bob","b64data":"AA==","client_msg_id":"0123456789012345678901234567890123456789012345678901234567890123"}}"#,
            bin(
                12,
                BinaryCommandBody::Send {
                    user: "bob".into(),
                    data: vec![0],
                    data_is_json: false,
                    client_msg_id: Some(MAX_KEY.into()),
                },
            ),
            "0030313233343536373839303132333435363738393031323334353637383930\
            3132333435363738393031323334353637383930313233343536373839303132\
            33000000000000000c0000000000000003000000626f62ffffffffffa4ffffff\
            0100000000000000010000008001000095ffffff00000000",
        ),
        (
            r#"{"id":7,"method":"refresh","params":{"token":"eyJ.x.y"}}"#,
            bin(
                7,
                BinaryCommandBody::Refresh {
                    token: "eyJ.x.y".into(),
                },
            ),
            "07000000000000000400000065794a2e782e79ff000000000000000000000000\
            00000000000000000000000000000000",
        ),
        (
            r#"{"id":18446744073709551615,"method":"ping"}"#,
            bin(u64::MAX, BinaryCommandBody::Ping),
            "ffffffffffffffff050000000000000000000000000000000000000000000000\
            00000000000000000000000000000000",
        ),
        (
            r#"{"id":13,"method":"ack","params":{"stream":"user:alice","offset":17}}"#,
            bin(
                13,
                BinaryCommandBody::Ack {
                    stream: "user:alice".into(),
                    offset: 17,
                },
            ),
            "757365723a616c6963650000000000000d00000000000000060000008a000000\
            e4ffffff00000000110000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":14,"method":"history","params":{"stream":"chat:a","since":10,"limit":1000,"reverse":true}}"#,
            bin(
                14,
                BinaryCommandBody::History {
                    stream: "chat:a".into(),
                    since: Some(10),
                    limit: 1000,
                    reverse: true,
                },
            ),
            "0e0000000000000007000000636861743a61ffff000000000100000000000000\
            0a00000000000000e803000001000000",
        ),
        (
            r#"{"id":15,"method":"history","params":{"stream":"chat:a"}}"#,
            bin(
                15,
                BinaryCommandBody::History {
                    stream: "chat:a".into(),
                    since: None,
                    limit: 100,
                    reverse: false,
                },
            ),
            "0f0000000000000007000000636861743a61ffff000000000000000000000000\
            00000000000000006400000000000000",
        ),
        (
            r#"{"id":16,"method":"history","params":{"stream":"chat:a","before":58,"limit":100}}"#,
            bin(
                16,
                BinaryCommandBody::HistoryBefore {
                    stream: "chat:a".into(),
                    before: 58,
                    since: 0,
                    limit: 100,
                },
            ),
            "100000000000000008000000636861743a61ffff000000003a00000000000000\
            00000000000000006400000000000000",
        ),
        (
            r#"{"id":12,"method":"subscribe","params":{"channel":"chat:g1","token":"a.b.c"}}"#,
            bin(
                12,
                BinaryCommandBody::SubscribeWithToken {
                    channel: "chat:g1".into(),
                    token: "a.b.c".into(),
                    since: None,
                },
            ),
            "0c0000000000000009000000636861743a6731ff612e622e63ffffff0000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":13,"method":"subscribe","params":{"channel":"chat:g1","token":"a.b.c","since":{"offset":41,"epoch":123}}}"#,
            bin(
                13,
                BinaryCommandBody::SubscribeWithToken {
                    channel: "chat:g1".into(),
                    token: "a.b.c".into(),
                    since: Some(StreamPosition {
                        offset: 41,
                        epoch: 123,
                    }),
                },
            ),
            "29000000000000007b000000000000000d0000000000000009000000636861743a6731ff612e622e63ffffff01000000d0ffffff000000000000000000000000",
        ),
        (
            r#"{"id":17,"method":"history","params":{"stream":"chat:a","from_time":1700000000000,"since":41,"limit":50}}"#,
            bin(
                17,
                BinaryCommandBody::HistoryByTime {
                    reverse: false,
                    limit: 50,
                    stream: "chat:a".into(),
                    from_time_ms: 1_700_000_000_000,
                    before_time_ms: u64::MAX,
                    offset_bound: 41,
                },
            ),
            "11000000000000000d00000032000000636861743a61ffff0068e5cf8b010000\
            ffffffffffffffff2900000000000000",
        ),
        (
            r#"{"id":18,"method":"history","params":{"stream":"user:alice","before_time":1700000000000}}"#,
            bin(
                18,
                BinaryCommandBody::HistoryByTime {
                    reverse: true,
                    limit: 100,
                    stream: "user:alice".into(),
                    from_time_ms: 0,
                    before_time_ms: 1_700_000_000_000,
                    offset_bound: u64::MAX,
                },
            ),
            "757365723a616c69636500000000000012000000000000000d010000640000008a000000\
            e0ffffff00000000000000000068e5cf8b010000ffffffffffffffff",
        ),
        (
            r#"{"id":14,"method":"rpc","params":{"method":"ping","data":1}}"#,
            bin(
                14,
                BinaryCommandBody::Rpc {
                    method: "ping".into(),
                    data: b"1".to_vec(),
                    data_is_json: true,
                },
            ),
            "31000000000000000e000000000000000a00000070696e67ffffffffe4ffffff010000000100000000000000000000000000000000000000",
        ),
    ]
}

#[test]
fn commands_keep_their_bytes_in_both_forms() {
    for (json, binary, expected_hex) in commands() {
        let bytes = encode_binary_command(&binary);
        check_hex(&bytes, expected_hex, json);
        let from_json = decode_json(json.as_bytes()).expect(json);
        assert_eq!(decode_binary(&bytes).as_ref(), Ok(&from_json), "{json}");
        assert_eq!(
            decode_binary(&unhex(expected_hex)),
            Ok(from_json),
            "golden bytes of {json}"
        );
    }
}

/// (input, `Display` of the error, the error reply in JSON or `None` when
/// the command has no readable id and the connection is closed instead).
/// The messages reach clients, so they are part of the wire too.
const JSON_COMMAND_ERRORS: &[(&str, &str, Option<&str>)] = &[
    (
        r#"{"id":7,"method":"nope"}"#,
        r#"command rejected with error 104 (method not found): unknown method; expected subscribe, unsubscribe, publish, send, refresh, ping, ack or history"#,
        Some(
            r#"{"id":7,"error":{"code":104,"message":"unknown method; expected subscribe, unsubscribe, publish, send, refresh, ping, ack or history"}}"#,
        ),
    ),
    (
        r#"{"id":7,"method":"ping","extra":1}"#,
        r#"command rejected with error 107 (bad request): invalid command: unknown field `extra`, expected one of `id`, `method`, `params` at line 1 column 31"#,
        Some(
            r#"{"id":7,"error":{"code":107,"message":"invalid command: unknown field `extra`, expected one of `id`, `method`, `params` at line 1 column 31"}}"#,
        ),
    ),
    (
        r#"{"id":7,"method":"subscribe"}"#,
        r#"command rejected with error 107 (bad request): missing field `params`"#,
        Some(r#"{"id":7,"error":{"code":107,"message":"missing field `params`"}}"#),
    ),
    (
        r#"{"id":7,"method":"subscribe","params":[]}"#,
        r#"command rejected with error 107 (bad request): invalid params: expected a JSON object"#,
        Some(r#"{"id":7,"error":{"code":107,"message":"invalid params: expected a JSON object"}}"#),
    ),
    (
        r#"{"id":7,"method":"subscribe","params":{"channel":"a","x":1}}"#,
        r#"command rejected with error 107 (bad request): invalid params: unknown field `x`, expected one of `channel`, `since`, `token` at line 1 column 18"#,
        Some(
            r#"{"id":7,"error":{"code":107,"message":"invalid params: unknown field `x`, expected one of `channel`, `since`, `token` at line 1 column 18"}}"#,
        ),
    ),
    (
        r#"{"id":7,"method":"subscribe","params":{"channel":""}}"#,
        r#"command rejected with error 107 (bad request): `channel` must not be empty"#,
        Some(r#"{"id":7,"error":{"code":107,"message":"`channel` must not be empty"}}"#),
    ),
    (
        r#"{"id":7,"method":"subscribe","params":{"channel":"a","since":41}}"#,
        r#"command rejected with error 107 (bad request): invalid since: expected a JSON object"#,
        Some(r#"{"id":7,"error":{"code":107,"message":"invalid since: expected a JSON object"}}"#),
    ),
    (
        r#"{"id":7,"method":"subscribe","params":{"channel":"a","since":{"offset":1,"epoch":"x"}}}"#,
        r#"command rejected with error 107 (bad request): invalid since: invalid value: string "x", expected a non-negative integer, as a number or a decimal string at line 1 column 23"#,
        Some(
            r#"{"id":7,"error":{"code":107,"message":"invalid since: invalid value: string \"x\", expected a non-negative integer, as a number or a decimal string at line 1 column 23"}}"#,
        ),
    ),
    (
        r#"{"id":7,"method":"publish","params":{"channel":"a"}}"#,
        r#"command rejected with error 107 (bad request): invalid params: missing field `data` or `b64data`"#,
        Some(
            r#"{"id":7,"error":{"code":107,"message":"invalid params: missing field `data` or `b64data`"}}"#,
        ),
    ),
    (
        r#"{"id":7,"method":"publish","params":{"channel":"a","data":1,"b64data":"AA=="}}"#,
        r#"command rejected with error 107 (bad request): invalid params: give either `data` or `b64data`, not both"#,
        Some(
            r#"{"id":7,"error":{"code":107,"message":"invalid params: give either `data` or `b64data`, not both"}}"#,
        ),
    ),
    (
        r#"{"id":7,"method":"publish","params":{"channel":"a","b64data":"***"}}"#,
        r#"command rejected with error 107 (bad request): invalid params: b64data is not standard base64: Invalid symbol 42, offset 0."#,
        Some(
            r#"{"id":7,"error":{"code":107,"message":"invalid params: b64data is not standard base64: Invalid symbol 42, offset 0."}}"#,
        ),
    ),
    (
        r#"{"id":7,"method":"send","params":{"user":"u","data":1,"client_msg_id":""}}"#,
        r#"command rejected with error 107 (bad request): `client_msg_id` must be 1 to 64 bytes of printable ASCII"#,
        Some(
            r#"{"id":7,"error":{"code":107,"message":"`client_msg_id` must be 1 to 64 bytes of printable ASCII"}}"#,
        ),
    ),
    (
        r#"{"id":7,"method":"history","params":{"stream":"s","limit":0}}"#,
        r#"command rejected with error 107 (bad request): `limit` must be 1 to 1000"#,
        Some(r#"{"id":7,"error":{"code":107,"message":"`limit` must be 1 to 1000"}}"#),
    ),
    (
        r#"{"id":7,"method":"ack","params":{"stream":"s","offset":"1"}}"#,
        r#"command rejected with error 107 (bad request): invalid params: invalid type: string "1", expected u64 at line 1 column 26"#,
        Some(
            r#"{"id":7,"error":{"code":107,"message":"invalid params: invalid type: string \"1\", expected u64 at line 1 column 26"}}"#,
        ),
    ),
    (
        r#"{"id":7,"method":"refresh","params":{"token":""}}"#,
        r#"command rejected with error 107 (bad request): `token` must not be empty"#,
        Some(r#"{"id":7,"error":{"code":107,"message":"`token` must not be empty"}}"#),
    ),
    (
        r#"{"id":0,"method":"ping"}"#,
        r#"command rejected with error 107 (bad request): id must be a positive integer"#,
        None,
    ),
    (
        r#"[7,"ping"]"#,
        r#"command rejected with error 107 (bad request): invalid command: expected a JSON object"#,
        None,
    ),
    (
        r#"{"id":7,"method":"ping""#,
        r#"command rejected with error 107 (bad request): invalid command: EOF while parsing an object at line 1 column 23"#,
        None,
    ),
    (
        r#"{"method":"ping"}"#,
        r#"command rejected with error 107 (bad request): invalid command: missing field `id` at line 1 column 17"#,
        None,
    ),
];

#[test]
fn json_command_errors_keep_their_replies() {
    for &(input, display, reply_json) in JSON_COMMAND_ERRORS {
        let error = decode_json(input.as_bytes()).expect_err(input);
        assert_eq!(error.to_string(), display, "{input}");
        let reply = error.reply().map(|reply| encode_reply_json(&reply));
        assert_eq!(
            reply
                .as_deref()
                .map(|bytes| std::str::from_utf8(bytes).unwrap()),
            reply_json,
            "{input}"
        );
    }
}

#[test]
fn binary_command_errors_keep_their_replies() {
    let bad_json = encode_binary_command(&bin(
        5,
        BinaryCommandBody::Publish {
            channel: "c".into(),
            data: b"{".to_vec(),
            data_is_json: true,
            client_msg_id: None,
        },
    ));
    let error = decode_binary(&bad_json).expect_err("invalid JSON data");
    let reply = error.reply().expect("has an id");
    check_text(
        &encode_reply_json(&reply),
        r#"{"id":5,"error":{"code":107,"message":"data_is_json is set but data is not valid JSON: EOF while parsing an object at line 1 column 1"}}"#,
        "bad JSON data",
    );
    check_hex(
        &encode_reply_binary(&reply),
        "646174615f69735f6a736f6e2069732073657420627574206461746120697320\
            6e6f742076616c6964204a534f4e3a20454f46207768696c652070617273696e\
            6720616e206f626a656374206174206c696e65203120636f6c756d6e20310000\
            020000000000000005000000000000006b0000009e0100008cffffff00000000\
            0000000000000000000000000000000000000000000000000000000000000000\
            0000000000000000",
        "bad JSON data",
    );

    let empty_name = encode_binary_command(&bin(
        4,
        BinaryCommandBody::Subscribe {
            channel: String::new(),
            since: None,
        },
    ));
    let error = decode_binary(&empty_name).expect_err("empty channel");
    let reply = error.reply().expect("has an id");
    check_text(
        &encode_reply_json(&reply),
        r#"{"id":4,"error":{"code":107,"message":"`channel` must not be empty"}}"#,
        "empty channel",
    );

    let id_zero = encode_binary_command(&bin(0, BinaryCommandBody::Ping));
    let error = decode_binary(&id_zero).expect_err("id 0");
    check_str(
        &error.to_string(),
        r#"command rejected with error 107 (bad request): id must be a positive integer"#,
        "id 0",
    );
    assert_eq!(error.reply(), None);

    let error = decode_binary(&[0_u8; 3]).expect_err("garbage");
    // rkyv's message names addresses, so only the part before it is pinned.
    let display = error.to_string();
    assert!(
        display.starts_with(
            "command rejected with error 107 (bad request): invalid binary command archive: "
        ),
        "{display}"
    );
    assert_eq!(error.reply(), None);
}

fn recovery(recovered: bool) -> Recovery {
    Recovery {
        recovered,
        epoch: u64::MAX,
        offset: 57,
        start_offset: 1,
        replayed: 16,
    }
}

/// (reply, JSON, binary hex) for every result and an error per message shape.
fn replies() -> Vec<(Reply, &'static str, &'static str)> {
    let ok = |id, result| Reply::Ok { id, result };
    vec![
        (
            ok(7, ReplyResult::Empty),
            r#"{"id":7,"result":{}}"#,
            "0100000000000000070000000000000000000000000000000000000000000000\
            0000000000000000000000000000000000000000000000000000000000000000\
            0000000000000000",
        ),
        (
            ok(
                u64::MAX,
                ReplyResult::Published {
                    message_id: u64::MAX,
                    offset: 0,
                    epoch: 0,
                    duplicate: false,
                },
            ),
            r#"{"id":18446744073709551615,"result":{"id":"18446744073709551615","offset":0,"epoch":"0"}}"#,
            "0100000000000000ffffffffffffffff0100000000000000ffffffffffffffff\
            0000000000000000000000000000000000000000000000000000000000000000\
            0000000000000000",
        ),
        (
            ok(
                8,
                ReplyResult::Published {
                    message_id: 5,
                    offset: 17,
                    epoch: 123,
                    duplicate: true,
                },
            ),
            r#"{"id":8,"result":{"id":"5","offset":17,"epoch":"123","duplicate":true}}"#,
            "0100000000000000080000000000000001000000000000000500000000000000\
            11000000000000007b0000000000000001000000000000000000000000000000\
            0000000000000000",
        ),
        (
            ok(
                9,
                ReplyResult::Refreshed {
                    expires_at_ms: 1_700_000_000_000,
                },
            ),
            r#"{"id":9,"result":{"expires":1700000000000}}"#,
            "0100000000000000090000000000000002000000000000000068e5cf8b010000\
            0000000000000000000000000000000000000000000000000000000000000000\
            0000000000000000",
        ),
        (
            ok(9, ReplyResult::Refreshed { expires_at_ms: 0 }),
            r#"{"id":9,"result":{}}"#,
            "0100000000000000090000000000000002000000000000000000000000000000\
            0000000000000000000000000000000000000000000000000000000000000000\
            0000000000000000",
        ),
        (
            ok(
                10,
                ReplyResult::Subscribed {
                    channel: "news\n\"x\"\u{1}é".into(),
                    recovery: None,
                },
            ),
            r#"{"id":10,"result":{"channel":"news\n\"x\"\u0001é"}}"#,
            "6e6577730a22782201c3a9000000000001000000000000000a00000000000000\
            030000008b000000dcffffff0000000000000000000000000000000000000000\
            000000000000000000000000000000000000000000000000",
        ),
        (
            ok(
                0,
                ReplyResult::Subscribed {
                    channel: "chat:a".into(),
                    recovery: Some(recovery(true)),
                },
            ),
            r#"{"id":0,"result":{"channel":"chat:a","recovery":{"recovered":true,"epoch":"18446744073709551615","offset":57,"start_offset":1,"replayed":16}}}"#,
            "0100000000000000ffffffffffffffff39000000000000000100000000000000\
            1000000000000000010000000000000000000000000000000300000063686174\
            3a61ffff01000000b8ffffff0000000000000000000000000000000000000000\
            00000000000000000000000000000000",
        ),
        (
            ok(
                11,
                ReplyResult::Subscribed {
                    channel: "user:bob".into(),
                    recovery: Some(Recovery {
                        recovered: false,
                        epoch: 3,
                        offset: 0,
                        start_offset: 40,
                        replayed: 0,
                    }),
                },
            ),
            r#"{"id":11,"result":{"channel":"user:bob","recovery":{"recovered":false,"epoch":"3","offset":0,"start_offset":40,"replayed":0}}}"#,
            "0000000000000000030000000000000000000000000000002800000000000000\
            000000000000000001000000000000000b000000000000000300000075736572\
            3a626f6201000000b8ffffff0000000000000000000000000000000000000000\
            00000000000000000000000000000000",
        ),
        (
            Reply::error(12, ErrorCode::PermissionDenied),
            r#"{"id":12,"error":{"code":103,"message":"permission denied"}}"#,
            "7065726d697373696f6e2064656e696564000000000000000200000000000000\
            0c000000000000006700000091000000d4ffffff000000000000000000000000\
            0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            Reply::Error {
                id: 0,
                code: ErrorCode::StoreUnavailable,
                message: "store \"down\"\t\\ retry\u{1f}".into(),
            },
            r#"{"id":0,"error":{"code":111,"message":"store \"down\"\t\\ retry\u001f"}}"#,
            "73746f72652022646f776e22095c2072657472791f0000000200000000000000\
            00000000000000006f00000095000000d4ffffff000000000000000000000000\
            0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            // A client built before `retry_after_ms` reads the same id,
            // code and message at the same offsets (compare the error
            // above): the field is appended and the root keeps its size.
            Reply::ErrorRetry {
                id: 3,
                code: ErrorCode::RateLimited,
                message: "rate limited".into(),
                retry_after_ms: 250,
            },
            r#"{"id":3,"error":{"code":114,"message":"rate limited","retry_after_ms":250}}"#,
            "72617465206c696d697465640000000002000000000000000300000000000000\
            720000008c000000dcffffff000000000100000000000000fa00000000000000\
            000000000000000000000000000000000000000000000000",
        ),
    ]
}

#[test]
fn replies_keep_their_bytes_in_both_forms() {
    for (reply, json, binary) in replies() {
        let what = format!("{reply:?}");
        check_text(&encode_reply_json(&reply), json, &what);
        let bytes = encode_reply_binary(&reply);
        check_hex(&bytes, binary, &what);
        let expected = match reply {
            Reply::Ok { id, result } => ServerMessage::Reply { id, result },
            Reply::Error { id, code, message } => ServerMessage::Error {
                id,
                code: code.as_u16(),
                message,
                retry_after_ms: None,
            },
            Reply::ErrorRetry {
                id,
                code,
                message,
                retry_after_ms,
            } => ServerMessage::Error {
                id,
                code: code.as_u16(),
                message,
                retry_after_ms: Some(retry_after_ms),
            },
        };
        assert_eq!(decode_server_binary(&unhex(binary)).expect(&what), expected);
    }
}

#[test]
fn subscription_changes_keep_their_bytes_in_both_forms() {
    for (subscribed, json, binary) in [
        (true, r#"{"subscribed":{"channel":"chat:g1"}}"#, "05000000636861743a6731ff000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"),
        (false, r#"{"unsubscribed":{"channel":"chat:g1"}}"#, "06000000636861743a6731ff000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"),
    ] {
        check_text(&encode_subscription_json("chat:g1", subscribed), json, json);
        check_hex(&encode_subscription_binary("chat:g1", subscribed), binary, json);
        let channel = "chat:g1".to_string();
        let expected = if subscribed {
            ServerMessage::Subscribed { channel }
        } else {
            ServerMessage::Unsubscribed { channel }
        };
        assert_eq!(decode_server_binary(&unhex(binary)).expect(json), expected);
    }
}

#[test]
fn every_error_code_keeps_its_reply() {
    let mut all = String::new();
    for code in ErrorCode::ALL {
        all.push_str(std::str::from_utf8(&encode_reply_json(&Reply::error(1, code))).unwrap());
        all.push('\n');
    }
    check_str(&all, "{\"id\":1,\"error\":{\"code\":100,\"message\":\"internal server error\"}}\n{\"id\":1,\"error\":{\"code\":101,\"message\":\"unauthorized\"}}\n{\"id\":1,\"error\":{\"code\":102,\"message\":\"unknown channel\"}}\n{\"id\":1,\"error\":{\"code\":103,\"message\":\"permission denied\"}}\n{\"id\":1,\"error\":{\"code\":104,\"message\":\"method not found\"}}\n{\"id\":1,\"error\":{\"code\":105,\"message\":\"already subscribed\"}}\n{\"id\":1,\"error\":{\"code\":106,\"message\":\"limit exceeded\"}}\n{\"id\":1,\"error\":{\"code\":107,\"message\":\"bad request\"}}\n{\"id\":1,\"error\":{\"code\":108,\"message\":\"not subscribed\"}}\n{\"id\":1,\"error\":{\"code\":109,\"message\":\"token expired\"}}\n{\"id\":1,\"error\":{\"code\":110,\"message\":\"unknown user\"}}\n{\"id\":1,\"error\":{\"code\":111,\"message\":\"store unavailable\"}}\n{\"id\":1,\"error\":{\"code\":112,\"message\":\"subscription token expired\"}}\n{\"id\":1,\"error\":{\"code\":113,\"message\":\"subscription token invalid\"}}\n{\"id\":1,\"error\":{\"code\":114,\"message\":\"rate limited\"}}\n{\"id\":1,\"error\":{\"code\":116,\"message\":\"proxy timeout\"}}\n{\"id\":1,\"error\":{\"code\":117,\"message\":\"proxy unavailable\"}}\n{\"id\":1,\"error\":{\"code\":118,\"message\":\"denied by the backend\"}}\n{\"id\":1,\"error\":{\"code\":119,\"message\":\"bad answer from the backend\"}}\n{\"id\":1,\"error\":{\"code\":120,\"message\":\"blocked\"}}\n{\"id\":1,\"error\":{\"code\":121,\"message\":\"the group is dissolved\"}}\n{\"id\":1,\"error\":{\"code\":122,\"message\":\"muted in the group\"}}\n{\"id\":1,\"error\":{\"code\":123,\"message\":\"not a member of the conversation\"}}\n{\"id\":1,\"error\":{\"code\":124,\"message\":\"the group's member limit\"}}\n{\"id\":1,\"error\":{\"code\":125,\"message\":\"recall or edit window passed\"}}\n{\"id\":1,\"error\":{\"code\":126,\"message\":\"too many conversations\"}}\n", "codes");
}

fn connects() -> Vec<(ConnectInfo, &'static str, &'static str)> {
    vec![
        (
            ConnectInfo {
                client_id: 281_474_976_710_657,
                user: "alice".into(),
                expires_at_ms: 1_767_225_600_000,
                ping_interval_ms: 25_000,
                shard: 0,
            },
            r#"{"connect":{"client":"281474976710657","user":"alice","expires":1767225600000,"ping_interval_ms":25000,"shard":0}}"#,
            "00000000000000000100000000000100616c696365ffffff00a8da769b010000\
            a861000000000000000000000000000000000000000000000000000000000000\
            0000000000000000",
        ),
        (
            ConnectInfo {
                client_id: u64::MAX,
                user: "al\"ice\\\n\u{7f}ü".into(),
                expires_at_ms: 0,
                ping_interval_ms: 0,
                shard: u16::MAX,
            },
            "{\"connect\":{\"client\":\"18446744073709551615\",\"user\":\"al\\\"ice\\\\\\n\u{7f}ü\",\"ping_interval_ms\":0,\"shard\":65535}}",
            "616c226963655c0a7fc3bc00000000000000000000000000ffffffffffffffff\
            8b000000e0ffffff00000000000000000000000000000000ffff000000000000\
            000000000000000000000000000000000000000000000000",
        ),
        (
            ConnectInfo {
                client_id: 1,
                user: String::new(),
                expires_at_ms: 1,
                ping_interval_ms: 1,
                shard: 61,
            },
            r#"{"connect":{"client":"1","user":"","expires":1,"ping_interval_ms":1,"shard":61}}"#,
            "00000000000000000100000000000000ffffffffffffffff0100000000000000\
            01000000000000003d0000000000000000000000000000000000000000000000\
            0000000000000000",
        ),
    ]
}

#[test]
fn connect_messages_keep_their_bytes_in_both_forms() {
    for (info, json, binary) in connects() {
        let what = format!("{info:?}");
        check_text(&encode_connect_json(&info), json, &what);
        check_hex(&encode_connect_binary(&info), binary, &what);
        assert_eq!(
            decode_server_binary(&unhex(binary)).expect(&what),
            ServerMessage::Connect(info)
        );
    }
}

fn envelope(offset: u64, data_is_json: bool, data: &[u8]) -> Envelope {
    Envelope {
        id: 0x0102_0304_0506_0708 + offset,
        offset,
        epoch: if offset == 0 { 0 } else { 123 },
        channel: "chat:\"a\"".into(),
        sender: "bob".into(),
        time_ms: 1_700_000_000_000 + offset,
        data_is_json,
        data: data.to_vec(),
    }
}

fn stored() -> Vec<EncodedPush> {
    [
        envelope(41, true, br#"{"a": [1, 2.50]}"#),
        envelope(42, false, &[0, 0xff, 0x10]),
        envelope(43, true, b" \"x\"\n"),
    ]
    .iter()
    .map(EncodedPush::encode)
    .collect()
}

#[test]
fn history_pages_keep_their_bytes_in_both_forms() {
    let stored = stored();
    let pushes: Vec<&ArchivedEnvelope> = stored.iter().map(EncodedPush::envelope).collect();
    let cases: [(usize, &str, u64, &str, &str); 3] = [
        (0, "s", 0, r#"{"id":7,"result":{"stream":"s","epoch":"0","start_offset":2,"next_offset":44,"publications":[]}}"#, "0400000000000000070000000000000073ffffffffffffff0000000000000000\
            02000000000000002c00000000000000d0ffffff000000000000000000000000\
            0000000000000000"),
        (1, "chat:\"a\"", u64::MAX, r#"{"id":7,"result":{"stream":"chat:\"a\"","epoch":"18446744073709551615","start_offset":2,"next_offset":44,"publications":[{"channel":"chat:\"a\"","id":"72623859790382897","offset":41,"epoch":"123","sender":"bob","time":1700000000041,"data":{"a": [1, 2.50]}}]}}"#, "7b2261223a205b312c20322e35305d7d31070605040302012900000000000000\
            7b00000000000000636861743a226122626f62ffffffffff2968e5cf8b010000\
            01000000bcffffff100000000000000004000000000000000700000000000000\
            636861743a226122ffffffffffffffff02000000000000002c00000000000000\
            90ffffff0100000000000000000000000000000000000000"),
        (3, "chat:\"a\"", 123, "{\"id\":7,\"result\":{\"stream\":\"chat:\\\"a\\\"\",\"epoch\":\"123\",\"start_offset\":2,\"next_offset\":44,\"publications\":[{\"channel\":\"chat:\\\"a\\\"\",\"id\":\"72623859790382897\",\"offset\":41,\"epoch\":\"123\",\"sender\":\"bob\",\"time\":1700000000041,\"data\":{\"a\": [1, 2.50]}},{\"channel\":\"chat:\\\"a\\\"\",\"id\":\"72623859790382898\",\"offset\":42,\"epoch\":\"123\",\"sender\":\"bob\",\"time\":1700000000042,\"b64data\":\"AP8Q\"},{\"channel\":\"chat:\\\"a\\\"\",\"id\":\"72623859790382899\",\"offset\":43,\"epoch\":\"123\",\"sender\":\"bob\",\"time\":1700000000043,\"data\": \"x\"\n}]}}", "7b2261223a205b312c20322e35305d7d00ff10202278220a3107060504030201\
            29000000000000007b00000000000000636861743a226122626f62ffffffffff\
            2968e5cf8b01000001000000b4ffffff10000000000000003207060504030201\
            2a000000000000007b00000000000000636861743a226122626f62ffffffffff\
            2a68e5cf8b0100000000000084ffffff03000000000000003307060504030201\
            2b000000000000007b00000000000000636861743a226122626f62ffffffffff\
            2b68e5cf8b0100000100000047ffffff05000000000000000400000000000000\
            0700000000000000636861743a2261227b000000000000000200000000000000\
            2c0000000000000010ffffff0300000000000000000000000000000000000000"),
    ];
    for (count, stream, epoch, json, binary) in cases {
        let what = format!("history of {count}");
        let page = &pushes[..count];
        check_text(
            &encode_history_json(7, stream, epoch, 2, 44, page),
            json,
            &what,
        );
        check_hex(
            &encode_history_binary(7, stream, epoch, 2, 44, page),
            binary,
            &what,
        );
        assert_eq!(
            decode_server_binary(&unhex(binary)).expect(&what),
            ServerMessage::History {
                id: 7,
                stream: stream.into(),
                epoch,
                start_offset: 2,
                next_offset: 44,
                entries: page.iter().map(|env| env.to_envelope()).collect(),
            }
        );
    }
}

#[test]
fn pushes_keep_their_bytes_in_both_forms() {
    let mut unstored = envelope(0, false, &[]);
    unstored.sender = String::new();
    let mut escaped = envelope(7, true, b"null");
    escaped.channel = "a\"b\\c\n\u{1}\u{1f}\t\u{7f}é💡".into();
    escaped.sender = "</script>\"\r\u{8}\u{c}".into();
    let cases = [
        (envelope(41, true, br#"{"a": [1, 2.50]}"#), r#"{"push":{"channel":"chat:\"a\"","id":"72623859790382897","offset":41,"epoch":"123","sender":"bob","time":1700000000041,"data":{"a": [1, 2.50]}}}"#, "7b2261223a205b312c20322e35305d7d03000000000000003107060504030201\
            29000000000000007b00000000000000636861743a226122626f62ffffffffff\
            2968e5cf8b01000001000000b4ffffff1000000000000000"),
        (envelope(42, false, &[0, 0xff, 0x10, 0x20]), r#"{"push":{"channel":"chat:\"a\"","id":"72623859790382898","offset":42,"epoch":"123","sender":"bob","time":1700000000042,"b64data":"AP8QIA=="}}"#, "00ff102000000000030000000000000032070605040302012a00000000000000\
            7b00000000000000636861743a226122626f62ffffffffff2a68e5cf8b010000\
            00000000bcffffff0400000000000000"),
        (unstored, r#"{"push":{"channel":"chat:\"a\"","id":"72623859790382856","sender":"","time":1700000000000,"b64data":""}}"#, "0300000000000000080706050403020100000000000000000000000000000000\
            636861743a226122ffffffffffffffff0068e5cf8b01000000000000c4ffffff\
            0000000000000000"),
        (escaped, "{\"push\":{\"channel\":\"a\\\"b\\\\c\\n\\u0001\\u001f\\t\u{7f}é💡\",\"id\":\"72623859790382863\",\"offset\":7,\"epoch\":\"123\",\"sender\":\"</script>\\\"\\r\\b\\f\",\"time\":1700000000007,\"data\":null}}", "6122625c630a011f097fc3a9f09f92a13c2f7363726970743e220d080c6e756c\
            6c0000000000000003000000000000000f070605040302010700000000000000\
            7b0000000000000090000000b8ffffff8d000000c0ffffff0768e5cf8b010000\
            01000000b9ffffff0400000000000000"),
    ];
    for (env, json, binary) in cases {
        let what = format!("{env:?}");
        let push = EncodedPush::encode(&env);
        check_text(&encode_push_json(push.envelope()), json, &what);
        check_hex(push.as_bytes(), binary, &what);
        let decoded = EncodedPush::from_untrusted(&unhex(binary)).expect(&what);
        assert_eq!(decoded.envelope().to_envelope(), env);
        assert_eq!(
            decode_server_binary(&unhex(binary)).expect(&what),
            ServerMessage::Push(env)
        );
    }
}

/// Presence (docs/protocol.md "Presence"): the three commands, the reply
/// with users' states and the event, in both forms. Kept together so a
/// renumbering of appended variants regenerates one place.
#[test]
fn presence_keeps_its_bytes_in_both_forms() {
    use ringcast_protocol::client::{
        encode_presence_binary, encode_presence_json, ArchivedCommand, PresenceCommand,
        PresenceState,
    };
    // The sub-enum keeps every archived command the size it was.
    assert_eq!(std::mem::size_of::<ArchivedCommand>(), 48);
    let users = || vec!["bob".to_string(), "carol".to_string()];
    // The tag of `PresenceCommand` is the 4 bytes after the 0x0c of
    // `CommandBody::Presence`: 0 watch, 1 unwatch, 2 query.
    for (json, body, expected_hex) in [
        (
            r#"{"id":21,"method":"presence_watch","params":{"users":["bob","carol"]}}"#,
            PresenceCommand::Watch { users: users() },
            "626f62ffffffffff6361726f6cffffff15000000000000000c00000000000000\
            e0ffffff02000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":21,"method":"presence_unwatch","params":{"users":["bob","carol"]}}"#,
            PresenceCommand::Unwatch { users: users() },
            "626f62ffffffffff6361726f6cffffff15000000000000000c00000001000000\
            e0ffffff02000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":21,"method":"presence_query","params":{"users":["bob","carol"]}}"#,
            PresenceCommand::Query { users: users() },
            "626f62ffffffffff6361726f6cffffff15000000000000000c00000002000000\
            e0ffffff02000000000000000000000000000000000000000000000000000000",
        ),
    ] {
        let binary = bin(21, BinaryCommandBody::Presence(body));
        check_hex(&encode_binary_command(&binary), expected_hex, json);
        assert_eq!(decode_json(json.as_bytes()), Ok(binary.clone()), "{json}");
        assert_eq!(decode_binary(&unhex(expected_hex)), Ok(binary), "{json}");
    }
    let bob = PresenceState {
        user: "bob".into(),
        online: true,
        last_seen_ms: 0,
    };
    let carol = PresenceState {
        user: "carol".into(),
        online: false,
        last_seen_ms: 1_700_000_000_000,
    };
    let reply = Reply::Ok {
        id: 21,
        result: ReplyResult::Presence {
            users: vec![bob.clone(), carol.clone()],
        },
    };
    let reply_hex = "626f62ffffffffff010000000000000000000000000000006361726f6cffffff\
        00000000000000000068e5cf8b0100000100000000000000150000000000000006000000\
        bcffffff02000000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000";
    check_hex(&encode_reply_binary(&reply), reply_hex, "presence reply");
    let event_hex = "08000000000000006361726f6cffffff00000000000000000068e5cf8b010000\
        00000000000000000000000000000000000000000000000000000000000000000000000000000000";
    check_hex(&encode_presence_binary(&carol), event_hex, "presence event");
    assert_eq!(
        decode_server_binary(&unhex(reply_hex)).expect("reply"),
        ServerMessage::Reply {
            id: 21,
            result: ReplyResult::Presence {
                users: vec![bob, carol.clone()]
            }
        }
    );
    assert_eq!(
        decode_server_binary(&unhex(event_hex)).expect("event"),
        ServerMessage::Presence(carol.clone())
    );
    check_text(
        &encode_reply_json(&reply),
        r#"{"id":21,"result":{"users":[{"user":"bob","online":true,"last_seen_ms":0},{"user":"carol","online":false,"last_seen_ms":1700000000000}]}}"#,
        "presence reply",
    );
    check_text(
        &encode_presence_json(&carol),
        r#"{"presence":{"user":"carol","online":false,"last_seen_ms":1700000000000}}"#,
        "presence event",
    );
}

/// What the decoders refuse in a presence command, with the same replies
/// in both forms.
#[test]
fn presence_commands_are_checked() {
    use ringcast_protocol::client::PresenceCommand;
    for (json, message) in [
        (
            r#"{"id":5,"method":"presence_query","params":{"users":[]}}"#,
            "`users` must hold 1 to 1000 ids",
        ),
        (
            r#"{"id":5,"method":"presence_watch","params":{"users":["a",""]}}"#,
            "`users` must not hold an empty id",
        ),
    ] {
        let error = decode_json(json.as_bytes()).expect_err(json);
        assert_eq!(
            (error.code, error.message.as_str()),
            (ErrorCode::BadRequest, message)
        );
    }
    let too_many: Vec<String> = (0..1001).map(|n| format!("u{n}")).collect();
    let bytes = encode_binary_command(&bin(
        5,
        BinaryCommandBody::Presence(PresenceCommand::Watch { users: too_many }),
    ));
    let error = decode_binary(&bytes).expect_err("1001 users");
    assert_eq!(error.message, "`users` must hold 1 to 1000 ids");
    // `conv` is presence_query's alone, and never beside `users`.
    let error = decode_json(
        br#"{"id":5,"method":"presence_query","params":{"conv":"dm:x","users":["a"]}}"#,
    )
    .expect_err("conv and users");
    assert_eq!(error.code, ErrorCode::BadRequest);
}
