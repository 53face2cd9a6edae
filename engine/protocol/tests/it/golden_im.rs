//! Golden bytes of the IM commands, replies and events (`docs/protocol.md`,
//! "IM"), in JSON and in binary, kept in this one file so that a merge that
//! renumbers appended variants regenerates them in one place: run with
//! `GOLDEN_IM_PRINT=1` to print the current forms.

use ringcast_protocol::client::{
    decode_binary, decode_json, decode_server_binary, encode_binary_command,
    encode_im_event_binary, encode_im_event_json, encode_reply_binary, encode_reply_json,
    BinaryCommand, CommandBody, ConvCursor, ConvGroup, ConvInfo, ErrorCode, GroupChange,
    GroupDetails, GroupMemberInfo, GroupRole, ImCommand, ImEvent, ImReply, ImSyncInfo, MsgKind,
    Reply, ReplyResult, ServerMessage, SyncToken,
};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn printing() -> bool {
    std::env::var_os("GOLDEN_IM_PRINT").is_some()
}

#[track_caller]
fn check(actual_json: &[u8], actual_bin: &[u8], json: &str, binary: &str, what: &str) {
    let actual_json = std::str::from_utf8(actual_json).unwrap();
    if printing() {
        println!("{what}\n  json: {actual_json}\n  hex: {}", hex(actual_bin));
        return;
    }
    assert_eq!(actual_json, json, "JSON form of {what}");
    assert_eq!(hex(actual_bin), binary, "binary form of {what}");
}

/// A command decodes from its JSON form and keeps its binary bytes.
#[track_caller]
fn check_command(json: &str, command: BinaryCommand, binary: &str) {
    assert_eq!(decode_json(json.as_bytes()).expect(json), command, "{json}");
    let bytes = encode_binary_command(&command);
    assert_eq!(decode_binary(&bytes).expect(json), command, "{json}");
    if printing() {
        println!("{json}\n  hex: {}", hex(&bytes));
    } else {
        assert_eq!(hex(&bytes), binary, "binary form of {json}");
    }
}

fn im(id: u64, command: ImCommand) -> BinaryCommand {
    BinaryCommand {
        id,
        body: CommandBody::Im(Box::new(command)),
    }
}

fn commands() -> Vec<(&'static str, BinaryCommand, &'static str)> {
    vec![
        (
            r#"{"id":1,"method":"msg_send","params":{"to":"bob","kind":"text","data":{"text":"hi"},"client_msg_id":"m1"}}"#,
            im(
                1,
                ImCommand::MsgSend {
                    to: Some("bob".into()),
                    conv: None,
                    kind: MsgKind::Text,
                    data: br#"{"text":"hi"}"#.to_vec(),
                    client_msg_id: Some("m1".into()),
                    echo: true,
                },
            ),
            "7b2274657874223a226869227d0000000000000001000000626f62ffffffffff00000000000000000000000000000000d0ffffff0d000000010000006d31ffffffffffff01000000000000000000000001000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":2,"method":"msg_send","params":{"conv":"dm:abc","kind":"attachment","data":{"url":"https://x/y.png","mime":"image/png","size":10},"echo":false}}"#,
            im(
                2,
                ImCommand::MsgSend {
                    to: None,
                    conv: Some("dm:abc".into()),
                    kind: MsgKind::Attachment,
                    data: br#"{"url":"https://x/y.png","mime":"image/png","size":10}"#.to_vec(),
                    client_msg_id: None,
                    echo: false,
                },
            ),
            "7b2275726c223a2268747470733a2f2f782f792e706e67222c226d696d65223a22696d6167652f706e67222c2273697a65223a31307d00000000000000000000000000000000000001000000646d3a616263ffff02000000a8ffffff3600000000000000000000000000000000000000000000000000000002000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":3,"method":"conv_list","params":{"cursor":{"time_ms":1700000000000,"sid":"42"},"limit":20}}"#,
            im(
                3,
                ImCommand::ConvList {
                    cursor: Some(ConvCursor {
                        time_ms: 1_700_000_000_000,
                        sid: 42,
                    }),
                    limit: 20,
                },
            ),
            "010000000000000001000000000000000068e5cf8b0100002a00000000000000140000000000000000000000000000000000000000000000000000000000000003000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":4,"method":"conv_list"}"#,
            im(
                4,
                ImCommand::ConvList {
                    cursor: None,
                    limit: 50,
                },
            ),
            "0100000000000000000000000000000000000000000000000000000000000000320000000000000000000000000000000000000000000000000000000000000004000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":5,"method":"read","params":{"conv":"dm:abc","offset":7}}"#,
            im(
                5,
                ImCommand::Read {
                    conv: "dm:abc".into(),
                    offset: 7,
                },
            ),
            "02000000646d3a616263ffff0000000007000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000005000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
    ]
}

#[test]
fn im_commands_keep_their_bytes_in_both_forms() {
    check_commands(commands());
}

/// Each command decoded from its JSON, and its binary form both ways.
fn check_commands(commands: Vec<(&str, BinaryCommand, &str)>) {
    for (json, command, binary) in commands {
        check_command(json, command, binary);
    }
}

fn conv(unread: u64) -> ConvInfo {
    ConvInfo {
        conv: "dm:abc".into(),
        sid: 42,
        peer: "bob".into(),
        epoch: 123,
        last_offset: 9,
        last_time_ms: 1_700_000_000_000,
        last_msg_offset: 9,
        read_offset: 9 - unread,
        unread,
        group: None,
    }
}

fn replies() -> Vec<(ImReply, &'static str, &'static str)> {
    vec![
        (
            ImReply::Sent {
                conv: "dm:abc".into(),
                message_id: 77,
                offset: 9,
                epoch: 123,
                time_ms: 1_700_000_000_000,
                duplicate: false,
            },
            r#"{"id":1,"result":{"conv":"dm:abc","id":"77","offset":9,"epoch":"123","time":1700000000000}}"#,
            "00000000646d3a616263ffff000000004d0000000000000009000000000000007b000000000000000068e5cf8b01000000000000000000000100000000000000010000000000000005000000b4ffffff000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            ImReply::Sent {
                conv: "dm:abc".into(),
                message_id: 77,
                offset: 9,
                epoch: 123,
                time_ms: 1_700_000_000_000,
                duplicate: true,
            },
            r#"{"id":1,"result":{"conv":"dm:abc","id":"77","offset":9,"epoch":"123","time":1700000000000,"duplicate":true}}"#,
            "00000000646d3a616263ffff000000004d0000000000000009000000000000007b000000000000000068e5cf8b01000001000000000000000100000000000000010000000000000005000000b4ffffff000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            ImReply::ConvList {
                convs: vec![conv(2)],
                next: Some(ConvCursor {
                    time_ms: 1_700_000_000_000,
                    sid: 42,
                }),
                total_unread: 5,
            },
            r#"{"id":1,"result":{"convs":[{"conv":"dm:abc","sid":"42","peer":"bob","epoch":"123","last_offset":9,"last_time_ms":1700000000000,"last_msg_offset":9,"read_offset":7,"unread":2}],"next":{"time_ms":1700000000000,"sid":"42"},"total_unread":5}}"#,
            "646d3a616263ffff2a00000000000000626f62ffffffffff7b0000000000000009000000000000000068e5cf8b010000090000000000000007000000000000000200000000000000000000000000000001000000acffffff010000000000000001000000000000000068e5cf8b0100002a00000000000000050000000000000000000000000000000100000000000000010000000000000005000000b4ffffff000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            ImReply::ConvList {
                convs: vec![],
                next: None,
                total_unread: 0,
            },
            r#"{"id":1,"result":{"convs":[],"total_unread":0}}"#,
            "01000000fcffffff0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000100000000000000010000000000000005000000b4ffffff000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            ImReply::Read {
                conv: "dm:abc".into(),
                offset: 9,
                unread: 0,
                total_unread: 3,
            },
            r#"{"id":1,"result":{"conv":"dm:abc","offset":9,"unread":0,"total_unread":3}}"#,
            "02000000646d3a616263ffff00000000090000000000000000000000000000000300000000000000000000000000000000000000000000000100000000000000010000000000000005000000b4ffffff000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
    ]
}

/// An IM reply's bytes in both forms, and its binary form decoded back.
#[track_caller]
fn check_reply(reply: ImReply, json: &str, binary: &str) {
    let reply = Reply::Ok {
        id: 1,
        result: ReplyResult::Im(Box::new(reply)),
    };
    let bytes = encode_reply_binary(&reply);
    check(&encode_reply_json(&reply), &bytes, json, binary, json);
    let Reply::Ok { id, result } = reply else {
        unreachable!()
    };
    assert_eq!(
        decode_server_binary(&bytes).expect(json),
        ServerMessage::Reply { id, result }
    );
}

#[test]
fn im_replies_keep_their_bytes_in_both_forms() {
    check_replies(replies());
}

/// Each reply's JSON and binary forms, and the binary decoded back.
fn check_replies(replies: Vec<(ImReply, &str, &str)>) {
    for (reply, json, binary) in replies {
        check_reply(reply, json, binary);
    }
}

fn events() -> Vec<(ImEvent, &'static str, &'static str)> {
    vec![
        (
            ImEvent::Sync(ImSyncInfo {
                convs: vec![conv(2)],
                token: SyncToken {
                    store_id: 99,
                    gseq: 12,
                },
                more: false,
                reset: false,
                total_unread: 2,
            }),
            r#"{"im_sync":{"convs":[{"conv":"dm:abc","sid":"42","peer":"bob","epoch":"123","last_offset":9,"last_time_ms":1700000000000,"last_msg_offset":9,"read_offset":7,"unread":2}],"token":"99.12","more":false,"total_unread":2}}"#,
            "646d3a616263ffff2a00000000000000626f62ffffffffff7b0000000000000009000000000000000068e5cf8b01000009000000000000000700000000000000020000000000000000000000000000000000000000000000a8ffffff0100000063000000000000000c000000000000000000000000000000020000000000000007000000ccffffff00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            ImEvent::Sync(ImSyncInfo {
                convs: vec![],
                token: SyncToken {
                    store_id: 99,
                    gseq: 0,
                },
                more: true,
                reset: true,
                total_unread: 0,
            }),
            r#"{"im_sync":{"convs":[],"token":"99.0","more":true,"reset":true,"total_unread":0}}"#,
            "0000000000000000f8ffffff00000000630000000000000000000000000000000101000000000000000000000000000007000000ccffffff00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            ImEvent::Read {
                conv: "dm:abc".into(),
                offset: 9,
                unread: 0,
                total_unread: 1,
            },
            r#"{"read":{"conv":"dm:abc","offset":9,"unread":0,"total_unread":1}}"#,
            "01000000646d3a616263ffff00000000090000000000000000000000000000000100000000000000000000000000000007000000ccffffff00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            ImEvent::Receipt {
                conv: "dm:abc".into(),
                user: "alice".into(),
                read: 9,
            },
            r#"{"receipt":{"conv":"dm:abc","user":"alice","read":9}}"#,
            "02000000646d3a616263ffff616c696365ffffff0000000009000000000000000000000000000000000000000000000007000000ccffffff00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
    ]
}

#[test]
fn im_events_keep_their_bytes_in_both_forms() {
    for (event, json, binary) in events() {
        let bytes = encode_im_event_binary(&event);
        check(&encode_im_event_json(&event), &bytes, json, binary, json);
        assert_eq!(
            decode_server_binary(&bytes).expect(json),
            ServerMessage::Im(Box::new(event))
        );
    }
}

#[test]
fn sync_tokens_round_trip_and_bad_ones_are_refused() {
    let token = SyncToken {
        store_id: u64::MAX,
        gseq: 7,
    };
    assert_eq!(SyncToken::parse(&token.to_text()), Some(token));
    for bad in ["", "1", "1.", ".1", "a.1", "1.2.3", "-1.2", "1.+2"] {
        assert_eq!(SyncToken::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn bad_im_commands_are_refused_with_107() {
    for (json, needle) in [
        (
            r#"{"id":1,"method":"msg_send","params":{"kind":"text","data":{"text":"hi"}}}"#,
            "`to`",
        ),
        (
            r#"{"id":1,"method":"msg_send","params":{"to":"b","conv":"dm:x","kind":"text","data":{"text":"hi"}}}"#,
            "not both",
        ),
        (
            r#"{"id":1,"method":"msg_send","params":{"to":"b","kind":"voice","data":{}}}"#,
            "unknown `kind`",
        ),
        (
            r#"{"id":1,"method":"msg_send","params":{"to":"b","kind":"text","data":{"text":"hi","x":1}}}"#,
            "text message",
        ),
        (
            r#"{"id":1,"method":"msg_send","params":{"to":"b","kind":"text","data":"hi"}}"#,
            "text message",
        ),
        (
            r#"{"id":1,"method":"msg_send","params":{"to":"b","kind":"attachment","data":{"url":"u"}}}"#,
            "attachment",
        ),
        (
            r#"{"id":1,"method":"msg_send","params":{"to":"b","kind":"text","data":{"text":"hi"},"client_msg_id":""}}"#,
            "client_msg_id",
        ),
        (
            r#"{"id":1,"method":"conv_list","params":{"limit":101}}"#,
            "`limit` must be 1 to 100",
        ),
        (
            r#"{"id":1,"method":"conv_list","params":{"limit":0}}"#,
            "`limit` must be 1 to 100",
        ),
        (
            r#"{"id":1,"method":"read","params":{"conv":"dm:x","offset":0}}"#,
            "`offset`",
        ),
        (
            r#"{"id":1,"method":"read","params":{"conv":"","offset":1}}"#,
            "`conv`",
        ),
    ] {
        let error = decode_json(json.as_bytes()).expect_err(json);
        assert_eq!(error.code, ErrorCode::BadRequest, "{json}");
        assert_eq!(error.id, Some(1), "{json}");
        assert!(error.message.contains(needle), "{json}: {}", error.message);
    }
    // The binary form applies the same rules: a text whose data is not JSON.
    let command = im(
        1,
        ImCommand::MsgSend {
            to: Some("b".into()),
            conv: None,
            kind: MsgKind::Text,
            data: b"hi".to_vec(),
            client_msg_id: None,
            echo: true,
        },
    );
    let error = decode_binary(&encode_binary_command(&command)).expect_err("not JSON");
    assert_eq!(error.code, ErrorCode::BadRequest);
    assert!(
        error.message.contains("not valid JSON"),
        "{}",
        error.message
    );
}

/// Blocks and typing (`docs/im.md`, "Blocks and DM policy", "Typing"):
/// their commands, replies and events, in one place.
#[test]
fn blocks_and_typing_keep_their_bytes_in_both_forms() {
    use ringcast_protocol::client::{BlockedUser, TypingState};
    let commands = [
        (
            r#"{"id":1,"method":"block","params":{"user":"bob"}}"#,
            im(1, ImCommand::Block { user: "bob".into() }),
            "03000000626f62ffffffffff0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":2,"method":"unblock","params":{"user":"bob"}}"#,
            im(2, ImCommand::Unblock { user: "bob".into() }),
            "04000000626f62ffffffffff0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000002000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":3,"method":"blocks_list","params":{"cursor":"bob","limit":10}}"#,
            im(
                3,
                ImCommand::BlocksList {
                    cursor: Some("bob".into()),
                    limit: 10,
                },
            ),
            "0500000001000000626f62ffffffffff0a000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000003000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":4,"method":"typing","params":{"conv":"dm:abc","state":"typing"}}"#,
            im(
                4,
                ImCommand::Typing {
                    conv: "dm:abc".into(),
                    state: TypingState::Typing,
                },
            ),
            "06000000646d3a616263ffff0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000004000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":5,"method":"typing","params":{"conv":"dm:abc","state":"stopped"}}"#,
            im(
                5,
                ImCommand::Typing {
                    conv: "dm:abc".into(),
                    state: TypingState::Stopped,
                },
            ),
            "06000000646d3a616263ffff0100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000005000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
    ];
    for (json, command, binary) in commands {
        assert_eq!(decode_json(json.as_bytes()).expect(json), command, "{json}");
        let bytes = encode_binary_command(&command);
        assert_eq!(decode_binary(&bytes).expect(json), command, "{json}");
        check(json.as_bytes(), &bytes, json, binary, json);
    }
    let replies = [
        (
            ImReply::Block {
                user: "bob".into(),
                blocked: true,
                changed: true,
            },
            r#"{"id":1,"result":{"user":"bob","blocked":true,"changed":true}}"#,
            "03000000626f62ffffffffff01010000000000000000000000000000000000000000000000000000000000000000000000000000000000000100000000000000010000000000000005000000b4ffffff000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            ImReply::BlocksList {
                users: vec![BlockedUser {
                    user: "bob".into(),
                    time_ms: 1_700_000_000_000,
                }],
                next: Some("bob".into()),
            },
            r#"{"id":1,"result":{"users":[{"user":"bob","time_ms":1700000000000}],"next":"bob"}}"#,
            "626f62ffffffffff0068e5cf8b01000004000000ecffffff0100000001000000626f62ffffffffff00000000000000000000000000000000000000000000000000000000000000000100000000000000010000000000000005000000b4ffffff000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
    ];
    for (reply, json, binary) in replies {
        check_reply(reply, json, binary);
    }
    let events = [
        (
            ImEvent::Block {
                user: "bob".into(),
                blocked: false,
            },
            r#"{"block":{"user":"bob","blocked":false}}"#,
            "03000000626f62ffffffffff00000000000000000000000000000000000000000000000000000000000000000000000007000000ccffffff00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            ImEvent::Typing {
                conv: "dm:abc".into(),
                user: "alice".into(),
                state: TypingState::Typing,
            },
            r#"{"typing":{"conv":"dm:abc","user":"alice","state":"typing"}}"#,
            "04000000646d3a616263ffff616c696365ffffff0000000000000000000000000000000000000000000000000000000007000000ccffffff00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
    ];
    for (event, json, binary) in events {
        let bytes = encode_im_event_binary(&event);
        check(&encode_im_event_json(&event), &bytes, json, binary, json);
        assert_eq!(
            decode_server_binary(&bytes).expect(json),
            ServerMessage::Im(Box::new(event))
        );
    }
}

/// The group commands, replies and the group part of a conversation (step
/// 2), all in this one test so a merge that renumbers the appended
/// variants regenerates them in one place (`GOLDEN_IM_PRINT=1`).
#[test]
fn group_commands_and_replies_keep_their_bytes_in_both_forms() {
    let group = |change: GroupChange| ImCommand::Group {
        conv: "grp:abc".into(),
        change,
        client_msg_id: None,
    };
    let commands: Vec<(&str, ImCommand, &str)> = vec![
        (
            r#"{"id":1,"method":"group_create","params":{"name":"team","members":["bob","carol"],"members_can_invite":true,"client_msg_id":"c1"}}"#,
            ImCommand::GroupCreate {
                name: "team".into(),
                info: String::new(),
                members: vec!["bob".into(), "carol".into()],
                members_can_invite: Some(true),
                client_msg_id: Some("c1".into()),
            },
            "626f62ffffffffff6361726f6cffffff070000007465616dffffffffffffffffffffffffdcffffff0200000001010000010000006331ffffffffffff000000000000000000000000000000000000000001000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":1,"method":"group_add","params":{"conv":"grp:abc","users":["dave"]}}"#,
            group(GroupChange::Add {
                users: vec!["dave".into()],
            }),
            "64617665ffffffff080000006772703a616263ff0000000000000000e4ffffff0100000000000000000000000000000000000000000000000000000000000000000000000000000001000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":1,"method":"group_remove","params":{"conv":"grp:abc","users":["dave"]}}"#,
            group(GroupChange::Remove {
                users: vec!["dave".into()],
            }),
            "64617665ffffffff080000006772703a616263ff0000000001000000e4ffffff0100000000000000000000000000000000000000000000000000000000000000000000000000000001000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":1,"method":"group_leave","params":{"conv":"grp:abc"}}"#,
            group(GroupChange::Leave),
            "080000006772703a616263ff0000000002000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":1,"method":"group_role","params":{"conv":"grp:abc","user":"bob","role":"admin"}}"#,
            group(GroupChange::Role {
                user: "bob".into(),
                admin: true,
            }),
            "080000006772703a616263ff0000000003000000626f62ffffffffff01000000000000000000000000000000000000000000000000000000000000000000000001000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":1,"method":"group_transfer","params":{"conv":"grp:abc","to":"bob"}}"#,
            group(GroupChange::Transfer { to: "bob".into() }),
            "080000006772703a616263ff0000000004000000626f62ffffffffff00000000000000000000000000000000000000000000000000000000000000000000000001000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":1,"method":"group_update","params":{"conv":"grp:abc","name":"new"}}"#,
            group(GroupChange::Update {
                name: Some("new".into()),
                info: None,
            }),
            "080000006772703a616263ff0000000005000000010000006e6577ffffffffff000000000000000000000000000000000000000000000000000000000000000001000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":1,"method":"group_mute","params":{"conv":"grp:abc","user":"bob","until_ms":1700000000000}}"#,
            group(GroupChange::Mute {
                user: "bob".into(),
                until_ms: 1_700_000_000_000,
            }),
            "080000006772703a616263ff0000000006000000626f62ffffffffff000000000068e5cf8b01000000000000000000000000000000000000000000000000000001000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":1,"method":"group_unmute","params":{"conv":"grp:abc","user":"bob"}}"#,
            group(GroupChange::Unmute { user: "bob".into() }),
            "080000006772703a616263ff0000000007000000626f62ffffffffff00000000000000000000000000000000000000000000000000000000000000000000000001000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":1,"method":"group_mute_all","params":{"conv":"grp:abc","on":false}}"#,
            group(GroupChange::MuteAll { on: false }),
            "080000006772703a616263ff0000000008000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":1,"method":"group_dissolve","params":{"conv":"grp:abc","client_msg_id":"d1"}}"#,
            ImCommand::Group {
                conv: "grp:abc".into(),
                change: GroupChange::Dissolve,
                client_msg_id: Some("d1".into()),
            },
            "080000006772703a616263ff000000000900000000000000000000000000000000000000000000000000000000000000010000006431ffffffffffff0000000001000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":1,"method":"group_members","params":{"conv":"grp:abc","after":"bob","limit":10}}"#,
            ImCommand::GroupMembers {
                conv: "grp:abc".into(),
                after: Some("bob".into()),
                limit: 10,
            },
            "090000006772703a616263ff01000000626f62ffffffffff0a00000000000000000000000000000000000000000000000000000000000000000000000000000001000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":1,"method":"group_info","params":{"conv":"grp:abc"}}"#,
            ImCommand::GroupInfo {
                conv: "grp:abc".into(),
            },
            "0a0000006772703a616263ff0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":1,"method":"presence_query","params":{"conv":"grp:abc"}}"#,
            ImCommand::PresenceConv {
                conv: "grp:abc".into(),
            },
            "0b0000006772703a616263ff0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
    ];
    check_commands(
        commands
            .into_iter()
            .map(|(json, command, binary)| (json, im(1, command), binary))
            .collect(),
    );
    let mut grp = conv(1);
    grp.conv = "grp:abc".into();
    grp.peer = String::new();
    grp.group = Some(Box::new(ConvGroup {
        name: "team".into(),
        role: Some(GroupRole::Admin),
        left: false,
        dissolved: false,
        muted_all: true,
        member_count: 50,
        visible_from: 3,
        visible_to: 0,
    }));
    let replies: Vec<(ImReply, &str, &str)> = vec![
        (
            ImReply::GroupMembers {
                conv: "grp:abc".into(),
                members: vec![GroupMemberInfo {
                    user: "bob".into(),
                    role: GroupRole::Owner,
                    joined_offset: 1,
                    joined_ms: 1_700_000_000_000,
                    muted_until_ms: 0,
                    added_by: String::new(),
                }],
                next: Some("bob".into()),
            },
            r#"{"id":1,"result":{"conv":"grp:abc","members":[{"user":"bob","role":"owner","joined_offset":1,"joined_ms":1700000000000,"muted_until_ms":0,"added_by":""}],"next":"bob"}}"#,
            "626f62ffffffffff020000000000000001000000000000000068e5cf8b0100000000000000000000ffffffffffffffff050000006772703a616263ffc4ffffff0100000001000000626f62ffffffffff0000000000000000000000000000000000000000000000000100000000000000010000000000000005000000b4ffffff000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            ImReply::GroupInfo(Box::new(GroupDetails {
                conv: "grp:abc".into(),
                name: "team".into(),
                info: "i".into(),
                owner: "alice".into(),
                member_count: 3,
                members_max: 2000,
                muted_all: false,
                dissolved: true,
                members_can_invite: false,
                last_offset: 9,
            })),
            r#"{"id":1,"result":{"conv":"grp:abc","name":"team","info":"i","owner":"alice","member_count":3,"members_max":2000,"muted_all":false,"dissolved":true,"members_can_invite":false,"last_offset":9}}"#,
            "6772703a616263ff7465616dffffffff69ffffffffffffff616c696365ffffff03000000d00700000001000000000000090000000000000006000000c4ffffff0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000100000000000000010000000000000005000000b4ffffff000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            ImReply::ConvList {
                convs: vec![grp],
                next: None,
                total_unread: 1,
            },
            r#"{"id":1,"result":{"convs":[{"conv":"grp:abc","sid":"42","peer":"","epoch":"123","last_offset":9,"last_time_ms":1700000000000,"last_msg_offset":9,"read_offset":8,"unread":1,"group":{"name":"team","role":"admin","member_count":50,"muted_all":true,"visible_from":3,"visible_to":0}}],"total_unread":1}}"#,
            "7465616dffffffff01010000010000003200000000000000030000000000000000000000000000006772703a616263ff2a00000000000000ffffffffffffffff7b0000000000000009000000000000000068e5cf8b010000090000000000000008000000000000000100000000000000010000008cffffff01000000acffffff0100000000000000000000000000000000000000000000000000000000000000010000000000000000000000000000000100000000000000010000000000000005000000b4ffffff000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
    ];
    check_replies(replies);
    for (json, needle) in [
        (
            r#"{"id":1,"method":"group_create","params":{"name":""}}"#,
            "`name`",
        ),
        (
            r#"{"id":1,"method":"group_add","params":{"conv":"grp:abc","users":[]}}"#,
            "`users`",
        ),
        (
            r#"{"id":1,"method":"group_add","params":{"conv":"dm:abc","users":["b"]}}"#,
            "not a group",
        ),
        (
            r#"{"id":1,"method":"group_add","params":{"conv":"grp:abc"}}"#,
            "needs `users`",
        ),
        (
            r#"{"id":1,"method":"group_leave","params":{"conv":"grp:abc","user":"b"}}"#,
            "takes no `user`",
        ),
        (
            r#"{"id":1,"method":"group_role","params":{"conv":"grp:abc","user":"b","role":"owner"}}"#,
            "group_transfer",
        ),
        (
            r#"{"id":1,"method":"group_update","params":{"conv":"grp:abc"}}"#,
            "`name` or `info`",
        ),
        (
            r#"{"id":1,"method":"group_mute","params":{"conv":"grp:abc","user":"b","until_ms":0}}"#,
            "until_ms",
        ),
        (
            r#"{"id":1,"method":"presence_watch","params":{"conv":"grp:abc"}}"#,
            "presence_query alone",
        ),
        (
            r#"{"id":1,"method":"group_members","params":{"conv":"grp:abc","limit":0}}"#,
            "`limit`",
        ),
    ] {
        let error = decode_json(json.as_bytes()).expect_err(json);
        assert_eq!(error.code, ErrorCode::BadRequest, "{json}");
        assert!(error.message.contains(needle), "{json}: {}", error.message);
    }
    let too_many = im(
        1,
        group(GroupChange::Add {
            users: (0..101).map(|n| format!("u{n}")).collect(),
        }),
    );
    let error = decode_binary(&encode_binary_command(&too_many)).expect_err("101 users");
    assert_eq!(error.code, ErrorCode::BadRequest);
    assert_eq!(ErrorCode::from_u16(121), Some(ErrorCode::Dissolved));
    assert_eq!(ErrorCode::from_u16(122), Some(ErrorCode::Muted));
    assert_eq!(ErrorCode::from_u16(124), Some(ErrorCode::MemberLimit));
}

/// The delivery part (`receipts`, `catchup`, `delivered`), all in this one
/// function so that a merge renumbering appended variants regenerates them
/// together (`GOLDEN_IM_PRINT=1`).
#[test]
fn im_delivery_commands_replies_and_events_keep_their_bytes() {
    use ringcast_protocol::client::{
        CatchupFrom, CatchupResult, MemberPositions, Recovery, StreamPosition,
    };
    let commands = [
        (
            r#"{"id":6,"method":"receipts","params":{"conv":"grp:team","cursor":"bob","limit":2}}"#,
            ImCommand::Receipts {
                conv: "grp:team".into(),
                cursor: Some("bob".into()),
                limit: 2,
            },
            "0c0000006772703a7465616d01000000626f62ffffffffff0200000000000000000000000000000000000000000000000000000000000000000000000000000006000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":6,"method":"catchup","params":{"convs":[{"conv":"dm:a","since":4,"epoch":"77"},{"conv":"dm:b","since":"cursor"}],"limit_per_conv":10}}"#,
            ImCommand::Catchup {
                convs: vec![
                    CatchupFrom {
                        conv: "dm:a".into(),
                        since: Some(StreamPosition {
                            offset: 4,
                            epoch: 77,
                        }),
                    },
                    CatchupFrom {
                        conv: "dm:b".into(),
                        since: None,
                    },
                ],
                limit_per_conv: 10,
            },
            "646d3a61ffffffff010000000000000004000000000000004d00000000000000646d3a62ffffffff0000000000000000000000000000000000000000000000000d000000bcffffff020000000a00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000006000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
    ];
    check_commands(
        commands
            .into_iter()
            .map(|(json, command, binary)| (json, im(6, command), binary))
            .collect(),
    );
    let replies = [
        (
            ImReply::Receipts {
                conv: "grp:team".into(),
                receipts: vec![MemberPositions {
                    user: "carol".into(),
                    read: 3,
                    delivered: 5,
                }],
                next: Some("carol".into()),
            },
            r#"{"id":1,"result":{"conv":"grp:team","receipts":[{"user":"carol","read":3,"delivered":5}],"next":"carol"}}"#,
            "6361726f6cffffff03000000000000000500000000000000070000006772703a7465616ddcffffff01000000010000006361726f6cffffff0000000000000000000000000000000000000000000000000100000000000000010000000000000005000000b4ffffff000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            ImReply::Catchup {
                convs: vec![CatchupResult {
                    conv: "dm:a".into(),
                    recovery: Recovery {
                        recovered: true,
                        epoch: 77,
                        offset: 9,
                        start_offset: 1,
                        replayed: 5,
                    },
                    truncated: true,
                }],
            },
            r#"{"id":1,"result":{"convs":[{"conv":"dm:a","recovered":true,"epoch":"77","offset":9,"start_offset":1,"replayed":5,"truncated":true}]}}"#,
            "646d3a61ffffffff01000000000000004d00000000000000090000000000000001000000000000000500000000000000010000000000000008000000c4ffffff0100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000100000000000000010000000000000005000000b4ffffff000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
    ];
    for (reply, json, binary) in replies {
        check_reply(reply, json, binary);
    }
    let event = ImEvent::Delivered {
        conv: "dm:abc".into(),
        user: "bob".into(),
        offset: 9,
    };
    let json = r#"{"delivered":{"conv":"dm:abc","user":"bob","offset":9}}"#;
    let bytes = encode_im_event_binary(&event);
    check(
        &encode_im_event_json(&event),
        &bytes,
        json,
        "05000000646d3a616263ffff626f62ffffffffff0000000009000000000000000000000000000000000000000000000007000000ccffffff00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        json,
    );
    assert_eq!(
        decode_server_binary(&bytes).expect(json),
        ServerMessage::Im(Box::new(event))
    );
    for (json, needle) in [
        (
            r#"{"id":1,"method":"receipts","params":{"conv":"dm:x","limit":0}}"#,
            "`limit` must be 1 to 100",
        ),
        (
            r#"{"id":1,"method":"catchup","params":{"convs":[]}}"#,
            "`convs` must hold 1 to 100",
        ),
        (
            r#"{"id":1,"method":"catchup","params":{"convs":[{"conv":"dm:x","since":"start"}]}}"#,
            "\"cursor\"",
        ),
        (
            r#"{"id":1,"method":"catchup","params":{"convs":[{"conv":"dm:x","since":1},{"conv":"dm:x","since":2}]}}"#,
            "named twice",
        ),
    ] {
        let error = decode_json(json.as_bytes()).expect_err(json);
        assert_eq!(error.code, ErrorCode::BadRequest, "{json}");
        assert!(error.message.contains(needle), "{json}: {}", error.message);
    }
}

/// `recall`, `edit`, `clear` and their replies, in one place (appended variants:
/// a merge that renumbers them regenerates these).
#[test]
fn recall_edit_and_clear_keep_their_bytes_in_both_forms() {
    let commands = [
        (
            r#"{"id":6,"method":"recall","params":{"conv":"dm:abc","offset":7}}"#,
            im(
                6,
                ImCommand::Recall {
                    conv: "dm:abc".into(),
                    offset: 7,
                },
            ),
            "0e000000646d3a616263ffff0000000007000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000006000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":7,"method":"edit","params":{"conv":"dm:abc","offset":7,"kind":"text","data":{"text":"hello"}}}"#,
            im(
                7,
                ImCommand::Edit {
                    conv: "dm:abc".into(),
                    offset: 7,
                    kind: Some(MsgKind::Text),
                    data: br#"{"text":"hello"}"#.to_vec(),
                },
            ),
            "7b2274657874223a2268656c6c6f227d0f000000646d3a616263ffff00000000070000000000000001000000d4ffffff100000000000000000000000000000000000000000000000000000000000000007000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            r#"{"id":8,"method":"clear","params":{"conv":"dm:abc","upto":7}}"#,
            im(
                8,
                ImCommand::Clear {
                    conv: "dm:abc".into(),
                    upto: 7,
                },
            ),
            "10000000646d3a616263ffff0000000007000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000008000000000000000b000000b4ffffff0000000000000000000000000000000000000000000000000000000000000000",
        ),
    ];
    for (json, command, binary) in commands {
        check_command(json, command, binary);
    }
    let replies = [
        (
            ImReply::Rewritten {
                conv: "dm:abc".into(),
                offset: 10,
                ref_offset: 7,
                edits: 1,
            },
            r#"{"id":1,"result":{"conv":"dm:abc","offset":10,"ref_offset":7,"edits":1}}"#,
            "09000000646d3a616263ffff000000000a0000000000000007000000000000000100000000000000000000000000000000000000000000000100000000000000010000000000000005000000b4ffffff000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            ImReply::Cleared {
                conv: "dm:abc".into(),
                visible_from: 8,
                unread: 2,
                total_unread: 5,
            },
            r#"{"id":1,"result":{"conv":"dm:abc","visible_from":8,"unread":2,"total_unread":5}}"#,
            "0a000000646d3a616263ffff00000000080000000000000002000000000000000500000000000000000000000000000000000000000000000100000000000000010000000000000005000000b4ffffff000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
    ];
    for (reply, json, binary) in replies {
        check_reply(reply, json, binary);
    }
    let bad = [
        r#"{"id":8,"method":"recall","params":{"conv":"","offset":7}}"#,
        r#"{"id":8,"method":"recall","params":{"conv":"dm:abc","offset":0}}"#,
        r#"{"id":8,"method":"edit","params":{"conv":"dm:abc","offset":7,"kind":"text","data":{"txt":1}}}"#,
        r#"{"id":8,"method":"edit","params":{"conv":"dm:abc","offset":7,"kind":"video","data":{}}}"#,
    ];
    for json in bad {
        let error = decode_json(json.as_bytes()).expect_err(json);
        assert_eq!(
            error.reply().map(|r| matches!(
                r,
                Reply::Error {
                    code: ErrorCode::BadRequest,
                    ..
                }
            )),
            Some(true),
            "{json}"
        );
    }
}
