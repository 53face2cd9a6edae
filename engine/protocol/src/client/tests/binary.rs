//! The binary (rkyv) form: decoding commands through the checked access,
//! from unaligned and hostile buffers, and the borrowed mirror's archives
//! against the owned `ServerMessage`'s, byte for byte.

use serde::de::IgnoredAny;

use super::*;
use crate::client::binary::archive_to_vec;
use crate::envelope::ArchivedEnvelope;

#[test]
fn binary_durable_stream_commands_are_validated() {
    let long_key = format!("{MAX_KEY}x");
    let mut bodies = vec![
        BinaryCommandBody::History {
            stream: "s".into(),
            since: None,
            limit: 0,
            reverse: false,
        },
        BinaryCommandBody::History {
            stream: "s".into(),
            since: Some(1),
            limit: 1001,
            reverse: true,
        },
        BinaryCommandBody::History {
            stream: String::new(),
            since: None,
            limit: 10,
            reverse: false,
        },
        BinaryCommandBody::Ack {
            stream: String::new(),
            offset: 1,
        },
        // By time: an empty window (from >= before), a zero or too large
        // limit, an empty stream.
        by_time(5, 5, 10),
        by_time(6, 5, 10),
        by_time(0, 0, 10),
        by_time(0, u64::MAX, 0),
        by_time(0, u64::MAX, 1001),
        BinaryCommandBody::HistoryByTime {
            reverse: false,
            limit: 10,
            stream: String::new(),
            from_time_ms: 0,
            before_time_ms: u64::MAX,
            offset_bound: 0,
        },
        BinaryCommandBody::Subscribe {
            channel: String::new(),
            since: Some(StreamPosition {
                offset: 1,
                epoch: 1,
            }),
        },
    ];
    for key in ["", long_key.as_str(), "a\nb", "\u{7f}", "\u{e9}", "\0"] {
        bodies.push(BinaryCommandBody::Publish {
            channel: "c".into(),
            data: b"1".to_vec(),
            data_is_json: true,
            client_msg_id: Some(key.into()),
        });
        bodies.push(BinaryCommandBody::Send {
            user: "u".into(),
            data: b"1".to_vec(),
            data_is_json: false,
            client_msg_id: Some(key.into()),
        });
    }
    for body in bodies {
        let bytes = encode_binary_command(&BinaryCommand {
            id: 5,
            body: body.clone(),
        });
        let error = decode_binary(&bytes).expect_err("invalid");
        assert_eq!(
            (error.id, error.code),
            (Some(5), ErrorCode::BadRequest),
            "{body:?}: {error}"
        );
    }
}

fn by_time(from_time_ms: u64, before_time_ms: u64, limit: u32) -> BinaryCommandBody {
    BinaryCommandBody::HistoryByTime {
        reverse: true,
        limit,
        stream: "s".into(),
        from_time_ms,
        before_time_ms,
        offset_bound: u64::MAX,
    }
}

/// A binary command's root is the last `size_of::<ArchivedCommand>()`
/// bytes; `HistoryByTime`, appended, must not grow it, or clients that
/// size a command buffer by it break (the size is the one of
/// `HistoryBefore`'s time).
#[test]
fn history_by_time_keeps_the_archived_command_size() {
    assert_eq!(std::mem::size_of::<ArchivedCommand>(), 48);
    let body = by_time(1, 2, 3);
    let bytes = encode_binary_command(&BinaryCommand { id: 1, body });
    // The one-byte stream name is inline: the archive is the root alone.
    assert_eq!(bytes.len(), 48);
}

#[test]
fn binary_commands_decode_from_unaligned_buffers() {
    for (_, binary, expected) in every_command() {
        let bytes = encode_binary_command(&binary);
        for shift in 0..16 {
            let mut shifted = vec![0xaa_u8; shift];
            shifted.extend_from_slice(&bytes);
            assert_eq!(decode_binary(&shifted[shift..]).as_ref(), Ok(&expected));
        }
    }
}

#[test]
fn binary_garbage_and_truncation_are_errors() {
    let valid = encode_binary_command(&BinaryCommand {
        id: 3,
        body: BinaryCommandBody::Publish {
            channel: "news".into(),
            data: b"[1,2]".to_vec(),
            data_is_json: true,
            client_msg_id: None,
        },
    });
    for len in 0..valid.len() {
        let error = decode_binary(&valid[..len]).expect_err("truncated");
        assert_eq!(error.code, ErrorCode::BadRequest);
    }
    let mut rng = 0xdead_beef_cafe_f00d_u64;
    for round in 0..FUZZ_ROUNDS {
        let bytes: Vec<u8> = if round % 2 == 0 {
            let len = (xorshift(&mut rng) % 128) as usize;
            (0..len).map(|_| xorshift(&mut rng) as u8).collect()
        } else {
            let mut bytes = valid.clone();
            for _ in 0..1 + xorshift(&mut rng) % 3 {
                let at = (xorshift(&mut rng) % bytes.len() as u64) as usize;
                bytes[at] = xorshift(&mut rng) as u8;
            }
            bytes
        };
        match decode_binary(&bytes) {
            Ok(Command {
                body:
                    CommandBody::Publish {
                        data,
                        data_is_json: true,
                        ..
                    },
                ..
            }) => {
                serde_json::from_slice::<IgnoredAny>(&data).expect("accepted data is JSON");
            }
            Ok(_) => {}
            Err(error) => assert_eq!(error.code, ErrorCode::BadRequest),
        }
        let _ = decode_server_binary(&bytes);
    }
}

#[test]
fn binary_id_zero_and_empty_names_are_bad_request() {
    let bytes = encode_binary_command(&BinaryCommand {
        id: 0,
        body: BinaryCommandBody::Ping,
    });
    assert_eq!(
        decode_binary(&bytes).map_err(|e| (e.id, e.code)),
        Err((None, ErrorCode::BadRequest))
    );
    let bytes = encode_binary_command(&BinaryCommand {
        id: 4,
        body: BinaryCommandBody::Subscribe {
            channel: String::new(),
            since: None,
        },
    });
    assert_eq!(
        decode_binary(&bytes).map_err(|e| (e.id, e.code)),
        Err((Some(4), ErrorCode::BadRequest))
    );
}

#[test]
fn binary_json_flagged_data_must_be_json() {
    for bad in [&b"{"[..], b"", b"[1,]", b"1 2", b"\"\xff\"", b"{\"a\":1}x"] {
        for body in [
            BinaryCommandBody::Publish {
                channel: "c".into(),
                data: bad.to_vec(),
                data_is_json: true,
                client_msg_id: None,
            },
            BinaryCommandBody::Send {
                user: "u".into(),
                data: bad.to_vec(),
                data_is_json: true,
                client_msg_id: None,
            },
        ] {
            let bytes = encode_binary_command(&BinaryCommand { id: 5, body });
            let error = decode_binary(&bytes).expect_err("invalid JSON data");
            assert_eq!(
                (error.id, error.code),
                (Some(5), ErrorCode::BadRequest),
                "{error}"
            );
        }
    }
    // The same bytes are fine as opaque data.
    let bytes = encode_binary_command(&BinaryCommand {
        id: 5,
        body: BinaryCommandBody::Publish {
            channel: "c".into(),
            data: b"\xff{".to_vec(),
            data_is_json: false,
            client_msg_id: None,
        },
    });
    assert!(decode_binary(&bytes).is_ok());
}

#[test]
fn server_messages_round_trip_in_binary() {
    let info = connect_info(5);
    assert_eq!(
        decode_server_binary(&encode_connect_binary(&info)).expect("valid"),
        ServerMessage::Connect(info)
    );
    let results = [
        ReplyResult::Empty,
        ReplyResult::Published {
            message_id: 1,
            offset: 2,
            epoch: 3,
            duplicate: false,
        },
        ReplyResult::Refreshed { expires_at_ms: 4 },
        ReplyResult::Subscribed {
            channel: "c".into(),
            recovery: None,
        },
        ReplyResult::Published {
            message_id: 1,
            offset: 2,
            epoch: 3,
            duplicate: true,
        },
        ReplyResult::Subscribed {
            channel: "c".into(),
            recovery: Some(Recovery {
                recovered: true,
                epoch: u64::MAX,
                offset: 57,
                start_offset: 1,
                replayed: 16,
            }),
        },
        ReplyResult::Rpc {
            data: br#"{"ok":true}"#.to_vec(),
            data_is_json: true,
        },
        ReplyResult::Rpc {
            data: vec![0, 255],
            data_is_json: false,
        },
    ];
    for result in results {
        let bytes = encode_reply_binary(&Reply::Ok {
            id: 9,
            result: result.clone(),
        });
        assert_eq!(
            decode_server_binary(&bytes).expect("valid"),
            ServerMessage::Reply { id: 9, result }
        );
    }
    let bytes = encode_reply_binary(&Reply::error(9, ErrorCode::StoreUnavailable));
    assert_eq!(
        decode_server_binary(&bytes).expect("valid"),
        ServerMessage::Error {
            id: 9,
            code: 111,
            message: "store unavailable".into(),
            retry_after_ms: None,
        }
    );
    let bytes = encode_reply_binary(&Reply::ErrorRetry {
        id: 10,
        code: ErrorCode::RateLimited,
        message: "rate limited".into(),
        retry_after_ms: 250,
    });
    assert_eq!(
        decode_server_binary(&bytes).expect("valid"),
        ServerMessage::Error {
            id: 10,
            code: 114,
            message: "rate limited".into(),
            retry_after_ms: Some(250),
        }
    );
}

#[test]
fn subscription_changes_round_trip_in_binary() {
    for (subscribed, expected) in [
        (
            true,
            ServerMessage::Subscribed {
                channel: "chat:g1".into(),
            },
        ),
        (
            false,
            ServerMessage::Unsubscribed {
                channel: "chat:g1".into(),
            },
        ),
    ] {
        let bytes = encode_subscription_binary("chat:g1", subscribed);
        assert_eq!(decode_server_binary(&bytes).expect("valid"), expected);
        let name = if subscribed {
            "subscribed"
        } else {
            "unsubscribed"
        };
        let error = crate::envelope::EncodedPush::from_untrusted(&bytes).expect_err("not a push");
        assert!(
            matches!(error, DecodeError::NotPush { variant } if variant == name),
            "{error}"
        );
    }
}

#[test]
fn borrowed_mirror_archives_exactly_like_server_message() {
    let owned = |message: &ServerMessage| archive_to_vec(message);
    let info = connect_info(5);
    assert_eq!(
        encode_connect_binary(&info),
        owned(&ServerMessage::Connect(info.clone()))
    );
    let result = ReplyResult::Published {
        message_id: 1,
        offset: 2,
        epoch: 3,
        duplicate: false,
    };
    assert_eq!(
        encode_reply_binary(&Reply::Ok {
            id: 9,
            result: result.clone()
        }),
        owned(&ServerMessage::Reply { id: 9, result })
    );
    let result = ReplyResult::Subscribed {
        channel: "c".into(),
        recovery: Some(Recovery {
            recovered: false,
            epoch: 1,
            offset: 2,
            start_offset: 3,
            replayed: 0,
        }),
    };
    assert_eq!(
        encode_reply_binary(&Reply::Ok {
            id: 9,
            result: result.clone()
        }),
        owned(&ServerMessage::Reply { id: 9, result })
    );
    assert_eq!(
        encode_reply_binary(&Reply::Error {
            id: 9,
            code: ErrorCode::Internal,
            message: "m".into()
        }),
        owned(&ServerMessage::Error {
            id: 9,
            code: 100,
            message: "m".into(),
            retry_after_ms: None,
        })
    );
    assert_eq!(
        encode_reply_binary(&Reply::ErrorRetry {
            id: 9,
            code: ErrorCode::RateLimited,
            message: "m".into(),
            retry_after_ms: 7,
        }),
        owned(&ServerMessage::Error {
            id: 9,
            code: 114,
            message: "m".into(),
            retry_after_ms: Some(7),
        })
    );
}

#[test]
fn history_binary_round_trips_and_matches_owned_encoding() {
    let stored = stored_history();
    let pushes: Vec<&ArchivedEnvelope> = stored.iter().map(|p| p.envelope()).collect();
    let entries: Vec<Envelope> = pushes.iter().map(|p| p.to_envelope()).collect();
    for count in 0..=pushes.len() {
        let bytes = encode_history_binary(9, "chat:a", 123, 2, 44, &pushes[..count]);
        let owned = ServerMessage::History {
            id: 9,
            stream: "chat:a".into(),
            epoch: 123,
            start_offset: 2,
            next_offset: 44,
            entries: entries[..count].to_vec(),
        };
        assert_eq!(bytes, archive_to_vec(&owned), "{count} entries");
        assert_eq!(decode_server_binary(&bytes).expect("valid"), owned);
        let mut shifted = vec![0_u8];
        shifted.extend_from_slice(&bytes);
        assert_eq!(decode_server_binary(&shifted[1..]).expect("valid"), owned);
    }
}

/// Stored publications are `ServerMessage::Push` archives, whose root is
/// the last `size_of::<ArchivedServerMessage>()` bytes: growing any
/// variant past a push, or changing the push layout, breaks the store.
#[test]
fn push_archive_layout_is_frozen() {
    assert_eq!(std::mem::size_of::<ArchivedServerMessage>(), 72);
    let env = Envelope {
        id: 0x0102_0304_0506_0708,
        offset: 41,
        epoch: 123,
        channel: "news:sport-long-name".into(),
        sender: "bob".into(),
        time_ms: 1_700_000_000_000,
        data_is_json: true,
        data: br#"{"a": [1, 2.50]}"#.to_vec(),
    };
    let bytes = crate::envelope::EncodedPush::encode(&env);
    let hex: String = bytes
        .as_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(
        hex,
        "6e6577733a73706f72742d6c6f6e672d6e616d657b2261223a205b312c20322e35305d7d00000000\
         0300000000000000080706050403020129000000000000007b00000000000000940000\
         00b8ffffff626f62ffffffffff0068e5cf8b01000001000000b0ffffff1000000000000000"
    );
}
