//! Tests of the client protocol. Shared fixtures and the cross-form tests
//! are here; `json.rs` and `binary.rs` test one wire form each. The golden
//! bytes of every message are pinned in `engine/protocol/tests/it/golden.rs`.

mod binary;
mod json;

use super::*;
use crate::envelope::Envelope;

/// Random buffers per fuzz test; fewer under miri, which is ~1000x slower.
const FUZZ_ROUNDS: usize = if cfg!(miri) { 200 } else { 10_000 };

fn parse(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

fn command(id: u64, body: CommandBody) -> Command {
    Command { id, body }
}

fn decode_json_str(text: &str) -> Result<Command, CommandError> {
    decode_json(text.as_bytes())
}

fn assert_json_error(text: &str, id: Option<u64>, code: ErrorCode) -> CommandError {
    let error = decode_json_str(text).expect_err(text);
    assert_eq!((error.id, error.code), (id, code), "{text}: {error}");
    error
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// (JSON form, binary form, expected command) for every method. The binary
/// form is a `BinaryCommand`, the same type as `Command`, so the last two
/// are equal and the binary test is a round trip.
fn every_command() -> Vec<(&'static str, BinaryCommand, Command)> {
    let bin = |id, body| BinaryCommand { id, body };
    let rpc = |data: &[u8], data_is_json| CommandBody::Rpc {
        method: "cart.add".into(),
        data: data.to_vec(),
        data_is_json,
    };
    vec![
        (
            r#"{"id":20,"method":"rpc","params":{"method":"cart.add","data":{"sku": 7}}}"#,
            bin(20, rpc(br#"{"sku": 7}"#, true)),
            command(20, rpc(br#"{"sku": 7}"#, true)),
        ),
        (
            r#"{"id":21,"method":"rpc","params":{"method":"cart.add","b64data":"AAE="}}"#,
            bin(21, rpc(&[0, 1], false)),
            command(21, rpc(&[0, 1], false)),
        ),
        (
            r#"{"id":22,"method":"rpc","params":{"method":"cart.add"}}"#,
            bin(22, rpc(b"null", true)),
            command(22, rpc(b"null", true)),
        ),
        (
            r#"{"id":1,"method":"subscribe","params":{"channel":"news"}}"#,
            bin(
                1,
                BinaryCommandBody::Subscribe {
                    channel: "news".into(),
                    since: None,
                },
            ),
            command(
                1,
                CommandBody::Subscribe {
                    channel: "news".into(),
                    since: None,
                },
            ),
        ),
        (
            r#"{"id":2,"method":"unsubscribe","params":{"channel":"news"}}"#,
            bin(
                2,
                BinaryCommandBody::Unsubscribe {
                    channel: "news".into(),
                },
            ),
            command(
                2,
                CommandBody::Unsubscribe {
                    channel: "news".into(),
                },
            ),
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
            command(
                3,
                CommandBody::Publish {
                    channel: "news".into(),
                    data: br#"{"a": [1, 2.50]}"#.to_vec(),
                    data_is_json: true,
                    client_msg_id: None,
                },
            ),
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
            command(
                4,
                CommandBody::Publish {
                    channel: "news".into(),
                    data: vec![0, 1, 2, 255],
                    data_is_json: false,
                    client_msg_id: None,
                },
            ),
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
            command(
                5,
                CommandBody::Send {
                    user: "alice".into(),
                    data: br#""hi""#.to_vec(),
                    data_is_json: true,
                    client_msg_id: None,
                },
            ),
        ),
        (
            r#"{"id":6,"method":"send","params":{"user":"alice","b64data":""}}"#,
            bin(
                6,
                BinaryCommandBody::Send {
                    user: "alice".into(),
                    data: Vec::new(),
                    data_is_json: false,
                    client_msg_id: None,
                },
            ),
            command(
                6,
                CommandBody::Send {
                    user: "alice".into(),
                    data: Vec::new(),
                    data_is_json: false,
                    client_msg_id: None,
                },
            ),
        ),
        (
            r#"{"id":7,"method":"refresh","params":{"token":"eyJ.x.y"}}"#,
            bin(
                7,
                BinaryCommandBody::Refresh {
                    token: "eyJ.x.y".into(),
                },
            ),
            command(
                7,
                CommandBody::Refresh {
                    token: "eyJ.x.y".into(),
                },
            ),
        ),
        (
            r#"{"id":18446744073709551615,"method":"ping"}"#,
            bin(u64::MAX, BinaryCommandBody::Ping),
            command(u64::MAX, CommandBody::Ping),
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
            command(
                9,
                CommandBody::Subscribe {
                    channel: "chat:a".into(),
                    since: Some(StreamPosition {
                        offset: 41,
                        epoch: 123,
                    }),
                },
            ),
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
            command(
                10,
                CommandBody::Subscribe {
                    channel: "chat:a".into(),
                    since: Some(StreamPosition {
                        offset: 0,
                        epoch: u64::MAX,
                    }),
                },
            ),
        ),
        (
            r#"{"id":13,"method":"subscribe","params":{"token":"t","channel":"chat:g1","since":{"offset":4,"epoch":5}}}"#,
            bin(
                13,
                BinaryCommandBody::SubscribeWithToken {
                    channel: "chat:g1".into(),
                    token: "t".into(),
                    since: Some(StreamPosition {
                        offset: 4,
                        epoch: 5,
                    }),
                },
            ),
            command(
                13,
                CommandBody::SubscribeWithToken {
                    channel: "chat:g1".into(),
                    token: "t".into(),
                    since: Some(StreamPosition {
                        offset: 4,
                        epoch: 5,
                    }),
                },
            ),
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
            command(
                11,
                CommandBody::Publish {
                    channel: "news".into(),
                    data: b"[1]".to_vec(),
                    data_is_json: true,
                    client_msg_id: Some("k-1 ~!".into()),
                },
            ),
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
            command(
                12,
                CommandBody::Send {
                    user: "bob".into(),
                    data: vec![0],
                    data_is_json: false,
                    client_msg_id: Some(MAX_KEY.into()),
                },
            ),
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
            command(
                13,
                CommandBody::Ack {
                    stream: "user:alice".into(),
                    offset: 17,
                },
            ),
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
            command(
                14,
                CommandBody::History {
                    stream: "chat:a".into(),
                    since: Some(10),
                    limit: 1000,
                    reverse: true,
                },
            ),
        ),
        (
            r#"{"id":15,"method":"history","params":{"stream":"chat:a"}}"#,
            bin(
                15,
                BinaryCommandBody::History {
                    stream: "chat:a".into(),
                    since: None,
                    limit: HISTORY_LIMIT_DEFAULT,
                    reverse: false,
                },
            ),
            command(
                15,
                CommandBody::History {
                    stream: "chat:a".into(),
                    since: None,
                    limit: 100,
                    reverse: false,
                },
            ),
        ),
    ]
}

/// A `client_msg_id` of the longest allowed length.
const MAX_KEY: &str = "0123456789012345678901234567890123456789012345678901234567890123";

fn envelope(offset: u64, data_is_json: bool, data: &[u8]) -> Envelope {
    Envelope {
        id: u64::MAX - offset,
        offset,
        epoch: 123,
        channel: "chat:\"a\"".into(),
        sender: "bob".into(),
        time_ms: 1_700_000_000_000 + offset,
        data_is_json,
        data: data.to_vec(),
    }
}

fn stored_history() -> Vec<crate::envelope::EncodedPush> {
    [
        envelope(41, true, br#"{"a": [1, 2.50]}"#),
        envelope(42, false, &[0, 0xff, 0x10]),
        envelope(43, true, b" \"x\"\n"),
    ]
    .iter()
    .map(crate::envelope::EncodedPush::encode)
    .collect()
}

fn connect_info(expires_at_ms: u64) -> ConnectInfo {
    ConnectInfo {
        client_id: u64::MAX - 1,
        user: "al\"ice".into(),
        expires_at_ms,
        ping_interval_ms: 25_000,
        shard: 3,
    }
}

#[test]
fn every_command_decodes_in_both_forms() {
    for (json, binary, expected) in every_command() {
        assert_eq!(decode_json_str(json).as_ref(), Ok(&expected), "{json}");
        let bytes = encode_binary_command(&binary);
        assert_eq!(decode_binary(&bytes), Ok(expected), "{binary:?}");
    }
}

#[test]
fn error_codes_round_trip() {
    for code in ErrorCode::ALL {
        assert_eq!(ErrorCode::from_u16(code.as_u16()), Some(code));
        assert!(!code.message().is_empty());
    }
    // 100..=111 were assigned in order; later parts of the protocol took
    // codes from ranges of their own (112, 113: subscription tokens; 114:
    // rate limited; 116-119: proxies; 120-126: the IM layer, all assigned).
    let expected: Vec<u16> = (100..=114).chain(116..=119).chain(120..=126).collect();
    assert_eq!(ErrorCode::ALL.map(ErrorCode::as_u16).to_vec(), expected);
    assert_eq!(
        ErrorCode::from_u16(112),
        Some(ErrorCode::SubscriptionTokenExpired)
    );
    assert_eq!(
        ErrorCode::from_u16(113),
        Some(ErrorCode::SubscriptionTokenInvalid)
    );
    assert_eq!(ErrorCode::from_u16(114), Some(ErrorCode::RateLimited));
    assert_eq!(ErrorCode::from_u16(99), None);
    assert_eq!(ErrorCode::from_u16(115), None);
    let error = CommandError::new(Some(1), ErrorCode::MethodNotFound, "x".into());
    assert_eq!(
        error.to_string(),
        "command rejected with error 104 (method not found): x"
    );
}

#[test]
fn decode_errors_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<DecodeError>();
    assert_send_sync::<CommandError>();
}
