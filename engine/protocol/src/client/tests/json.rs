//! The JSON form: decoding commands (accepted shapes, every rejection and
//! its error code, random input) and the shapes of replies, `connect` and
//! history pages.

use base64::Engine as _;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::*;
use crate::client::json::{push_json_str, push_u64};
use crate::envelope::ArchivedEnvelope;

#[test]
fn json_optional_fields_default() {
    assert_eq!(
        decode_json_str(r#"{"id":1,"method":"subscribe","params":{"channel":"a","since":null}}"#),
        Ok(command(
            1,
            CommandBody::Subscribe {
                channel: "a".into(),
                since: None
            }
        ))
    );
    assert_eq!(
        decode_json_str(
            r#"{"id":1,"method":"publish","params":{"channel":"a","data":1,"client_msg_id":null}}"#
        ),
        Ok(command(
            1,
            CommandBody::Publish {
                channel: "a".into(),
                data: b"1".to_vec(),
                data_is_json: true,
                client_msg_id: None
            }
        ))
    );
    assert_eq!(
        decode_json_str(
            r#"{"id":1,"method":"history","params":{"stream":"s","since":null,"reverse":false}}"#
        ),
        Ok(command(
            1,
            CommandBody::History {
                stream: "s".into(),
                since: None,
                limit: HISTORY_LIMIT_DEFAULT,
                reverse: false
            }
        ))
    );
    assert_eq!(
        decode_json_str(r#"{"id":1,"method":"history","params":{"stream":"s","limit":1}}"#),
        Ok(command(
            1,
            CommandBody::History {
                stream: "s".into(),
                since: None,
                limit: 1,
                reverse: false
            }
        ))
    );
}

/// `from_time` and `before_time` make a `HistoryByTime`: newest first by
/// default with `before_time` (as with `before`), the open sides of the
/// window as 0 and `u64::MAX`, the offset bound `since` forward and
/// `before` back.
#[test]
fn json_history_by_time_bounds_and_direction() {
    let by_time = |reverse, limit, from_time_ms, before_time_ms, offset_bound| {
        Ok(command(
            1,
            CommandBody::HistoryByTime {
                reverse,
                limit,
                stream: "s".into(),
                from_time_ms,
                before_time_ms,
                offset_bound,
            },
        ))
    };
    let accepted = [
        (r#""from_time":5"#, by_time(false, 100, 5, u64::MAX, 0)),
        (
            r#""from_time":0,"since":9,"limit":3"#,
            by_time(false, 3, 0, u64::MAX, 9),
        ),
        (
            r#""from_time":5,"reverse":true"#,
            by_time(true, 100, 5, u64::MAX, u64::MAX),
        ),
        (r#""before_time":7"#, by_time(true, 100, 0, 7, u64::MAX)),
        (r#""before_time":7,"before":4"#, by_time(true, 100, 0, 7, 4)),
        (
            r#""from_time":5,"before_time":7,"reverse":true,"before":4"#,
            by_time(true, 100, 5, 7, 4),
        ),
        (
            r#""from_time":5,"before_time":6,"reverse":false,"since":2"#,
            by_time(false, 100, 5, 6, 2),
        ),
        (
            r#""from_time":null,"before_time":7"#,
            by_time(true, 100, 0, 7, u64::MAX),
        ),
    ];
    for (params, expected) in accepted {
        let text = format!(r#"{{"id":1,"method":"history","params":{{"stream":"s",{params}}}}}"#);
        assert_eq!(decode_json_str(&text), expected, "{params}");
    }
    let refused = [
        // The window holds no time.
        r#""from_time":7,"before_time":7"#,
        r#""from_time":8,"before_time":7"#,
        r#""before_time":0"#,
        // The offset bound contradicts the direction.
        r#""from_time":5,"before":4,"reverse":false"#,
        r#""before_time":7,"since":4"#,
        r#""from_time":5,"since":4,"reverse":true"#,
        // Not a time, or a limit out of range.
        r#""from_time":-1"#,
        r#""from_time":"5""#,
        r#""before_time":1.5"#,
        r#""from_time":18446744073709551616"#,
        r#""from_time":5,"limit":0"#,
        r#""before_time":5,"limit":1001"#,
        r#""from_time":5,"until":6"#,
    ];
    for params in refused {
        let text = format!(r#"{{"id":1,"method":"history","params":{{"stream":"s",{params}}}}}"#);
        let error = decode_json_str(&text).expect_err(params);
        assert_eq!(
            (error.id, error.code),
            (Some(1), ErrorCode::BadRequest),
            "{params}: {error}"
        );
    }
}

/// `before` pages backwards: its own command variant, newest first, so
/// `reverse: false` with it is refused.
#[test]
fn json_history_before_is_backward_paging() {
    assert_eq!(
        decode_json_str(
            r#"{"id":1,"method":"history","params":{"stream":"s","before":42,"since":3,"limit":5}}"#
        ),
        Ok(command(
            1,
            CommandBody::HistoryBefore {
                stream: "s".into(),
                before: 42,
                since: 3,
                limit: 5,
            }
        ))
    );
    assert_eq!(
        decode_json_str(
            r#"{"id":1,"method":"history","params":{"stream":"s","before":1,"reverse":true}}"#
        ),
        Ok(command(
            1,
            CommandBody::HistoryBefore {
                stream: "s".into(),
                before: 1,
                since: 0,
                limit: HISTORY_LIMIT_DEFAULT,
            }
        ))
    );
    let refused = decode_json_str(
        r#"{"id":1,"method":"history","params":{"stream":"s","before":1,"reverse":false}}"#,
    );
    assert!(
        matches!(&refused, Err(err) if err.code == ErrorCode::BadRequest),
        "{refused:?}"
    );
    let too_many = decode_json_str(
        r#"{"id":1,"method":"history","params":{"stream":"s","before":1,"limit":5000}}"#,
    );
    assert!(too_many.is_err(), "limit is checked for before too");
}

#[test]
fn json_durable_stream_params_are_validated() {
    let long_key = format!("{MAX_KEY}x");
    let mut texts = vec![
        // history: limit range, types, names
        r#"{"id":7,"method":"history","params":{"stream":"s","limit":0}}"#.to_owned(),
        r#"{"id":7,"method":"history","params":{"stream":"s","limit":1001}}"#.to_owned(),
        r#"{"id":7,"method":"history","params":{"stream":"s","limit":4294967296}}"#.to_owned(),
        r#"{"id":7,"method":"history","params":{"stream":"s","limit":"10"}}"#.to_owned(),
        r#"{"id":7,"method":"history","params":{"stream":"s","since":-1}}"#.to_owned(),
        r#"{"id":7,"method":"history","params":{"stream":"s","since":"10"}}"#.to_owned(),
        r#"{"id":7,"method":"history","params":{"stream":"s","reverse":1}}"#.to_owned(),
        r#"{"id":7,"method":"history","params":{"stream":""}}"#.to_owned(),
        r#"{"id":7,"method":"history","params":{"channel":"s"}}"#.to_owned(),
        r#"{"id":7,"method":"history"}"#.to_owned(),
        // ack
        r#"{"id":7,"method":"ack","params":{"stream":"s"}}"#.to_owned(),
        r#"{"id":7,"method":"ack","params":{"offset":1}}"#.to_owned(),
        r#"{"id":7,"method":"ack","params":{"stream":"","offset":1}}"#.to_owned(),
        r#"{"id":7,"method":"ack","params":{"stream":"s","offset":"1"}}"#.to_owned(),
        r#"{"id":7,"method":"ack","params":{"stream":"s","offset":-1}}"#.to_owned(),
        r#"{"id":7,"method":"ack","params":{"stream":"s","offset":1,"epoch":2}}"#.to_owned(),
        // subscribe since: offsets are numbers; epochs numbers or decimal strings
        r#"{"id":7,"method":"subscribe","params":{"channel":"a","since":{"offset":"41","epoch":1}}}"#.to_owned(),
        r#"{"id":7,"method":"subscribe","params":{"channel":"a","since":{"offset":41}}}"#.to_owned(),
        r#"{"id":7,"method":"subscribe","params":{"channel":"a","since":{"epoch":1}}}"#.to_owned(),
        r#"{"id":7,"method":"subscribe","params":{"channel":"a","since":{"offset":1,"epoch":1,"x":1}}}"#.to_owned(),
        r#"{"id":7,"method":"subscribe","params":{"channel":"a","since":41}}"#.to_owned(),
        r#"{"id":7,"method":"subscribe","params":{"channel":"a","since":[41,1]}}"#.to_owned(),
        r#"{"id":7,"method":"subscribe","params":{"channel":"a","since":{"offset":1,"epoch":-1}}}"#.to_owned(),
        r#"{"id":7,"method":"subscribe","params":{"channel":"a","since":{"offset":1,"epoch":1.5}}}"#.to_owned(),
        r#"{"id":7,"method":"subscribe","params":{"channel":"a","since":{"offset":1,"epoch":null}}}"#.to_owned(),
    ];
    for epoch in [
        "",
        "abc",
        "-1",
        "+1",
        " 1",
        "1 ",
        "1.5",
        "1e3",
        "0x10",
        "18446744073709551616",
    ] {
        texts.push(format!(
            r#"{{"id":7,"method":"subscribe","params":{{"channel":"a","since":{{"offset":1,"epoch":"{epoch}"}}}}}}"#
        ));
    }
    // client_msg_id: 1..=64 bytes of printable ASCII
    for key in [
        "\"\"".to_owned(),
        format!("\"{long_key}\""),
        r#""a\nb""#.to_owned(),
        r#""a\tb""#.to_owned(),
        r#""\u007f""#.to_owned(),
        r#""\u0000""#.to_owned(),
        "\"\u{e9}\"".to_owned(),
        r#""\u00e9""#.to_owned(),
        "5".to_owned(),
        "[\"k\"]".to_owned(),
    ] {
        for method in [
            r#""publish","params":{"channel":"c""#,
            r#""send","params":{"user":"u""#,
        ] {
            texts.push(format!(
                r#"{{"id":7,"method":{method},"data":1,"client_msg_id":{key}}}}}"#
            ));
        }
    }
    for text in &texts {
        assert_json_error(text, Some(7), ErrorCode::BadRequest);
    }
    let error = assert_json_error(&texts[0], Some(7), ErrorCode::BadRequest);
    assert!(error.message.contains("limit"), "{error}");
}

#[test]
fn json_epoch_accepts_number_or_decimal_string() {
    for (epoch, expected) in [
        ("0", 0),
        ("\"0\"", 0),
        ("\"007\"", 7),
        ("9007199254740993", 9_007_199_254_740_993),
        ("\"9007199254740993\"", 9_007_199_254_740_993),
        ("\"18446744073709551615\"", u64::MAX),
    ] {
        let text = format!(
            r#"{{"id":1,"method":"subscribe","params":{{"channel":"a","since":{{"offset":5,"epoch":{epoch}}}}}}}"#
        );
        assert_eq!(
            decode_json_str(&text),
            Ok(command(
                1,
                CommandBody::Subscribe {
                    channel: "a".into(),
                    since: Some(StreamPosition {
                        offset: 5,
                        epoch: expected
                    })
                }
            )),
            "{text}"
        );
    }
}

#[test]
fn json_command_variants_accepted() {
    let ping = command(9, CommandBody::Ping);
    assert_eq!(
        decode_json_str(r#"{"id":9,"method":"ping","params":{}}"#),
        Ok(ping.clone())
    );
    assert_eq!(
        decode_json_str(r#"{"id":9,"method":"ping","params":null}"#),
        Ok(ping.clone())
    );
    assert_eq!(decode_json_str(r#" {"method":"ping", "id":9} "#), Ok(ping));
    // Escapes in strings are decoded; a JSON null payload is a payload.
    assert_eq!(
        decode_json_str(
            r#"{"id":1,"method":"publish","params":{"data":null,"channel":"a\u0062"}}"#
        ),
        Ok(command(
            1,
            CommandBody::Publish {
                channel: "ab".into(),
                data: b"null".to_vec(),
                data_is_json: true,
                client_msg_id: None,
            }
        ))
    );
}

#[test]
fn json_data_is_preserved_byte_for_byte() {
    let data = r#"{ "a" : [1, 2.50, 1e3, "\u00e9\n"], "b": {} }"#;
    let text = format!(r#"{{"id":1,"method":"publish","params":{{"channel":"c","data":{data}}}}}"#);
    let decoded = decode_json_str(&text).expect("valid");
    let CommandBody::Publish {
        data: got,
        data_is_json: true,
        ..
    } = decoded.body
    else {
        panic!("unexpected {decoded:?}");
    };
    assert_eq!(got, data.as_bytes());
}

#[test]
fn json_malformed_is_bad_request_without_id() {
    assert_json_error("", None, ErrorCode::BadRequest);
    assert_json_error("{", None, ErrorCode::BadRequest);
    assert_json_error(r#"{"id":1,"method":"ping""#, None, ErrorCode::BadRequest);
    assert_json_error(r#"[1,"ping"]"#, None, ErrorCode::BadRequest);
    assert_json_error(r#"{"method":"ping"}"#, None, ErrorCode::BadRequest);
    assert_json_error(r#"{"id":"1","method":"ping"}"#, None, ErrorCode::BadRequest);
    assert_json_error(r#"{"id":-1,"method":"ping"}"#, None, ErrorCode::BadRequest);
    assert_json_error(r#"{"id":1.5,"method":"ping"}"#, None, ErrorCode::BadRequest);
    assert_json_error(r#"{"id":1,"method":"ping"} x"#, None, ErrorCode::BadRequest);
    assert!(decode_json(b"{\"id\":1,\"method\":\"\xff\"}").is_err());
}

#[test]
fn json_id_zero_is_bad_request() {
    let error = assert_json_error(r#"{"id":0,"method":"ping"}"#, None, ErrorCode::BadRequest);
    assert!(error.message.contains("positive"), "{error}");
    assert_json_error(r#"{"id":0,"method":"nope"}"#, None, ErrorCode::BadRequest);
    assert_json_error(
        r#"{"id":0,"method":"ping","x":1}"#,
        None,
        ErrorCode::BadRequest,
    );
}

#[test]
fn json_unknown_method_is_104_with_id() {
    let error = assert_json_error(
        r#"{"id":7,"method":"nope"}"#,
        Some(7),
        ErrorCode::MethodNotFound,
    );
    let reply = error.reply().expect("has id");
    let value = parse(&encode_reply_json(&reply));
    assert_eq!(value["id"], 7);
    assert_eq!(value["error"]["code"], 104);
}

#[test]
fn json_unknown_fields_are_bad_request_with_id() {
    assert_json_error(
        r#"{"id":7,"method":"ping","extra":1}"#,
        Some(7),
        ErrorCode::BadRequest,
    );
    assert_json_error(
        r#"{"id":7,"method":"subscribe","params":{"channel":"a","x":1}}"#,
        Some(7),
        ErrorCode::BadRequest,
    );
    assert_json_error(
        r#"{"id":7,"method":"ping","params":{"x":1}}"#,
        Some(7),
        ErrorCode::BadRequest,
    );
}

#[test]
fn json_missing_fields_and_wrong_types_are_bad_request_with_id() {
    for text in [
        r#"{"id":7,"method":"subscribe"}"#,
        r#"{"id":7,"method":"subscribe","params":{}}"#,
        r#"{"id":7,"method":"subscribe","params":{"channel":5}}"#,
        r#"{"id":7,"method":"subscribe","params":{"channel":""}}"#,
        r#"{"id":7,"method":"subscribe","params":[]}"#,
        r#"{"id":7,"method":"subscribe","params":["news"]}"#,
        r#"{"id":7,"method":"ping","params":[]}"#,
        r#"{"id":7,"method":"publish","params":{"channel":"a"}}"#,
        r#"{"id":7,"method":"publish","params":{"data":1}}"#,
        r#"{"id":7,"method":"publish","params":{"channel":"a","data":1,"b64data":"AA=="}}"#,
        r#"{"id":7,"method":"publish","params":{"channel":"a","b64data":"***"}}"#,
        r#"{"id":7,"method":"publish","params":{"channel":"a","b64data":5}}"#,
        r#"{"id":7,"method":"send","params":{"channel":"a","data":1}}"#,
        r#"{"id":7,"method":"send","params":{"user":"","data":1}}"#,
        r#"{"id":7,"method":"refresh","params":{}}"#,
        r#"{"id":7,"method":"refresh","params":{"token":""}}"#,
        r#"{"id":7,"method":"ping","params":5}"#,
        r#"{"id":7,"method":5}"#,
        r#"{"id":7,"method":"ping","params":"x"}"#,
    ] {
        assert_json_error(text, Some(7), ErrorCode::BadRequest);
    }
}

#[test]
fn json_random_input_never_panics() {
    let mut rng = 0x0123_4567_89ab_cdef_u64;
    let seed = br#"{"id":7,"method":"publish","params":{"channel":"a","data":{"k":[1,"\u0041"]}}}"#;
    for round in 0..FUZZ_ROUNDS {
        let bytes: Vec<u8> = if round % 2 == 0 {
            let len = (xorshift(&mut rng) % 96) as usize;
            (0..len).map(|_| xorshift(&mut rng) as u8).collect()
        } else {
            let mut bytes = seed.to_vec();
            let at = (xorshift(&mut rng) % bytes.len() as u64) as usize;
            bytes[at] = xorshift(&mut rng) as u8;
            bytes
        };
        if let Ok(Command {
            body:
                CommandBody::Publish {
                    data,
                    data_is_json: true,
                    ..
                },
            ..
        }) = decode_json(&bytes)
        {
            serde_json::from_slice::<IgnoredAny>(&data).expect("accepted data is JSON");
        }
    }
}

#[test]
fn rpc_reply_and_bad_rpc_commands() {
    let value = parse(&encode_reply_json(&Reply::Ok {
        id: 7,
        result: ReplyResult::Rpc {
            data: br#"{"total": 3}"#.to_vec(),
            data_is_json: true,
        },
    }));
    assert_eq!(
        value,
        serde_json::json!({"id": 7, "result": {"data": {"total": 3}}})
    );
    let value = parse(&encode_reply_json(&Reply::Ok {
        id: 8,
        result: ReplyResult::Rpc {
            data: vec![255, 0],
            data_is_json: false,
        },
    }));
    assert_eq!(
        value,
        serde_json::json!({"id": 8, "result": {"b64data": "/wA="}})
    );
    for bad in [
        r#"{"id":1,"method":"rpc","params":{"data":1}}"#,
        r#"{"id":1,"method":"rpc","params":{"method":"","data":1}}"#,
        r#"{"id":1,"method":"rpc","params":{"method":"m","data":1,"extra":2}}"#,
    ] {
        let error = decode_json_str(bad).expect_err(bad);
        assert_eq!(error.code, ErrorCode::BadRequest, "{bad}");
    }
    let long = format!(
        r#"{{"id":1,"method":"rpc","params":{{"method":"{}"}}}}"#,
        "m".repeat(RPC_METHOD_BYTES_MAX + 1)
    );
    assert_eq!(
        decode_json_str(&long).map_err(|e| e.code),
        Err(ErrorCode::BadRequest)
    );
}

#[test]
fn reply_json_shapes() {
    let value = parse(&encode_reply_json(&Reply::Ok {
        id: 7,
        result: ReplyResult::Empty,
    }));
    assert_eq!(value, serde_json::json!({"id": 7, "result": {}}));

    let value = parse(&encode_reply_json(&Reply::Ok {
        id: 7,
        result: ReplyResult::Published {
            message_id: u64::MAX,
            offset: 0,
            epoch: 0,
            duplicate: false,
        },
    }));
    assert_eq!(
        value,
        serde_json::json!({"id": 7, "result": {"id": "18446744073709551615", "offset": 0, "epoch": "0"}})
    );

    let value = parse(&encode_reply_json(&Reply::Ok {
        id: 7,
        result: ReplyResult::Refreshed {
            expires_at_ms: 1_700_000_000_000,
        },
    }));
    assert_eq!(
        value,
        serde_json::json!({"id": 7, "result": {"expires": 1_700_000_000_000_u64}})
    );
    let value = parse(&encode_reply_json(&Reply::Ok {
        id: 7,
        result: ReplyResult::Refreshed { expires_at_ms: 0 },
    }));
    assert_eq!(value, serde_json::json!({"id": 7, "result": {}}));

    let value = parse(&encode_reply_json(&Reply::Ok {
        id: 7,
        result: ReplyResult::Subscribed {
            channel: "news\n".into(),
            recovery: None,
        },
    }));
    assert_eq!(
        value,
        serde_json::json!({"id": 7, "result": {"channel": "news\n"}})
    );

    let value = parse(&encode_reply_json(&Reply::Ok {
        id: 7,
        result: ReplyResult::Published {
            message_id: 5,
            offset: 17,
            epoch: 123,
            duplicate: true,
        },
    }));
    assert_eq!(
        value,
        serde_json::json!({"id": 7, "result": {"id": "5", "offset": 17, "epoch": "123", "duplicate": true}})
    );

    let value = parse(&encode_reply_json(&Reply::Ok {
        id: 1,
        result: ReplyResult::Subscribed {
            channel: "chat:a".into(),
            recovery: Some(Recovery {
                recovered: true,
                epoch: 123,
                offset: 57,
                start_offset: 1,
                replayed: 16,
            }),
        },
    }));
    assert_eq!(
        value,
        serde_json::json!({"id": 1, "result": {"channel": "chat:a", "recovery": {
            "recovered": true, "epoch": "123", "offset": 57, "start_offset": 1, "replayed": 16
        }}})
    );
    let value = parse(&encode_reply_json(&Reply::Ok {
        id: 1,
        result: ReplyResult::Subscribed {
            channel: "chat:a".into(),
            recovery: Some(Recovery {
                recovered: false,
                epoch: u64::MAX,
                offset: 3,
                start_offset: 40,
                replayed: 0,
            }),
        },
    }));
    assert_eq!(
        value["result"]["recovery"],
        serde_json::json!({"recovered": false, "epoch": "18446744073709551615", "offset": 3, "start_offset": 40, "replayed": 0})
    );

    let value = parse(&encode_reply_json(&Reply::error(
        7,
        ErrorCode::PermissionDenied,
    )));
    assert_eq!(
        value,
        serde_json::json!({"id": 7, "error": {"code": 103, "message": "permission denied"}})
    );
}

#[test]
fn connect_json_shape() {
    let value = parse(&encode_connect_json(&connect_info(1_700_000_000_000)));
    assert_eq!(
        value,
        serde_json::json!({"connect": {
            "client": "18446744073709551614",
            "user": "al\"ice",
            "expires": 1_700_000_000_000_u64,
            "ping_interval_ms": 25_000,
            "shard": 3
        }})
    );
    let value = parse(&encode_connect_json(&connect_info(0)));
    assert!(value["connect"].get("expires").is_none());
}

#[test]
fn history_json_embeds_stored_publications_verbatim() {
    let stored = stored_history();
    let pushes: Vec<&ArchivedEnvelope> = stored.iter().map(|p| p.envelope()).collect();
    let json = encode_history_json(7, "chat:\"a\"", u64::MAX, 1, 44, &pushes);
    let text = std::str::from_utf8(&json).expect("utf-8");
    assert!(
        text.starts_with(r#"{"id":7,"result":{"stream":"chat:\"a\"","epoch":"18446744073709551615","start_offset":1,"next_offset":44,"publications":[{"channel":"#),
        "{text}"
    );
    assert!(text.contains(r#","data":{"a": [1, 2.50]}}"#), "{text}");
    assert!(text.contains(",\"data\": \"x\"\n}"), "{text}");
    let value = parse(&json);
    assert_eq!(value["id"], 7);
    let result = &value["result"];
    assert_eq!(result["stream"], "chat:\"a\"");
    assert_eq!(result["epoch"], "18446744073709551615");
    assert_eq!(result["start_offset"], 1);
    assert_eq!(result["next_offset"], 44);
    let publications = result["publications"].as_array().expect("array");
    assert_eq!(publications.len(), 3);
    for (publication, push) in publications.iter().zip(&pushes) {
        // Exactly the push object a live subscriber got.
        assert_eq!(
            publication,
            &parse(&crate::envelope::encode_push_json(push))["push"]
        );
        assert_eq!(publication["offset"], push.offset.to_native());
        assert_eq!(publication["epoch"], "123");
    }
    // Data byte for byte: the raw text of each `data` is the stored data.
    #[derive(Deserialize)]
    struct RawHistory<'a> {
        #[serde(borrow)]
        result: RawResult<'a>,
    }
    #[derive(Deserialize)]
    struct RawResult<'a> {
        #[serde(borrow)]
        publications: Vec<RawPublication<'a>>,
    }
    #[derive(Deserialize)]
    struct RawPublication<'a> {
        #[serde(borrow, default)]
        data: Option<&'a RawValue>,
        #[serde(default)]
        b64data: Option<String>,
    }
    let raw: RawHistory<'_> = serde_json::from_slice(&json).expect("valid");
    for (publication, push) in raw.result.publications.iter().zip(&pushes) {
        match (&publication.data, &publication.b64data) {
            (Some(data), None) => {
                assert!(push.data_is_json);
                // serde_json's RawValue leaves out surrounding whitespace.
                assert_eq!(data.get().as_bytes(), push.data.as_slice().trim_ascii());
            }
            (None, Some(b64data)) => {
                assert!(!push.data_is_json);
                assert_eq!(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64data)
                        .expect("base64"),
                    push.data.as_slice()
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    let empty = parse(&encode_history_json(8, "s", 0, 0, 1, &[]));
    assert_eq!(
        empty,
        serde_json::json!({"id": 8, "result": {"stream": "s", "epoch": "0", "start_offset": 0, "next_offset": 1, "publications": []}})
    );
}

#[test]
fn push_json_str_escapes_every_control_char() {
    let all: String = (0_u8..0x80).map(char::from).collect();
    let mut out = Vec::new();
    push_json_str(&mut out, &all);
    let back: String = serde_json::from_slice(&out).expect("valid JSON string");
    assert_eq!(back, all);
    assert!(!out.iter().any(|&b| b < 0x20));
}

#[test]
fn push_u64_writes_decimal() {
    for n in [0, 1, 9, 10, 12_345, u64::MAX] {
        let mut out = b"x".to_vec();
        push_u64(&mut out, n);
        assert_eq!(out, format!("x{n}").into_bytes());
    }
}

#[test]
fn json_depth_counts_nesting_outside_strings() {
    use crate::client::json_depth;
    assert_eq!(json_depth(b"1"), 0);
    assert_eq!(json_depth(b"[]"), 1);
    assert_eq!(json_depth(br#"{"a":[1,{"b":2}]}"#), 3);
    // Brackets in strings, escaped quotes included, do not count.
    assert_eq!(json_depth(br#"{"a":"[[[{\"x\":[[["}"#), 1);
    assert_eq!(json_depth(br#"["\\",[]]"#), 2);
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    assert_eq!(json_depth(deep.as_bytes()), 200);
}

#[test]
fn subscription_changes_render_as_json() {
    assert_eq!(
        parse(&encode_subscription_json("chat:g1", true)),
        serde_json::json!({"subscribed": {"channel": "chat:g1"}})
    );
    assert_eq!(
        parse(&encode_subscription_json("chat:\"q\"", false)),
        serde_json::json!({"unsubscribed": {"channel": "chat:\"q\""}})
    );
}

#[test]
fn subscribe_token_must_be_a_string() {
    assert_json_error(
        r#"{"id":4,"method":"subscribe","params":{"channel":"a","token":5}}"#,
        Some(4),
        ErrorCode::BadRequest,
    );
    assert_eq!(
        decode_json_str(r#"{"id":4,"method":"subscribe","params":{"channel":"a","token":null}}"#),
        Ok(command(
            4,
            CommandBody::Subscribe {
                channel: "a".into(),
                since: None,
            }
        ))
    );
}
