//! Every item that was reachable as `ringcast_protocol::client::X` before
//! `client.rs` was split, with the signatures the engine, the load generator
//! and the benches call: moving code between files must not break them.

use ringcast_protocol::client::{
    decode_binary, decode_json, decode_server_binary, encode_binary_command, encode_connect_binary,
    encode_connect_json, encode_history_binary, encode_history_json, encode_reply_binary,
    encode_reply_json, ArchivedBinaryCommand, ArchivedBinaryCommandBody, ArchivedConnectInfo,
    ArchivedRecovery, ArchivedReplyResult, ArchivedServerMessage, ArchivedStreamPosition,
    BinaryCommand, BinaryCommandBody, BinaryCommandBodyResolver, BinaryCommandResolver, Command,
    CommandBody, CommandError, ConnectInfo, ConnectInfoResolver, DecodeError, ErrorCode, Recovery,
    RecoveryResolver, Reply, ReplyResult, ReplyResultResolver, ServerMessage,
    ServerMessageResolver, StreamPosition, StreamPositionResolver, CLIENT_MSG_ID_BYTES_MAX,
    HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX, SUBPROTOCOL_BINARY, SUBPROTOCOL_JSON,
};
use ringcast_protocol::envelope::ArchivedEnvelope;

/// The signature of both history encoders.
type HistoryEncoder = fn(u64, &str, u64, u64, u64, &[&ArchivedEnvelope]) -> Vec<u8>;

#[test]
fn client_items_keep_their_paths_and_signatures() {
    let _: (&str, &str, u32, u32, usize) = (
        SUBPROTOCOL_JSON,
        SUBPROTOCOL_BINARY,
        HISTORY_LIMIT_DEFAULT,
        HISTORY_LIMIT_MAX,
        CLIENT_MSG_ID_BYTES_MAX,
    );
    let _: fn(&[u8]) -> Result<Command, CommandError> = decode_json;
    let _: fn(&[u8]) -> Result<Command, CommandError> = decode_binary;
    let _: fn(&BinaryCommand) -> Vec<u8> = encode_binary_command;
    let _: fn(&Reply) -> Vec<u8> = encode_reply_json;
    let _: fn(&Reply) -> Vec<u8> = encode_reply_binary;
    let _: fn(&ConnectInfo) -> Vec<u8> = encode_connect_json;
    let _: fn(&ConnectInfo) -> Vec<u8> = encode_connect_binary;
    let _: HistoryEncoder = encode_history_json;
    let _: HistoryEncoder = encode_history_binary;
    let _: fn(&[u8]) -> Result<ServerMessage, DecodeError> = decode_server_binary;
    let _: fn(Option<u64>, ErrorCode, String) -> CommandError = CommandError::new;
    let _: fn(&CommandError) -> Option<Reply> = CommandError::reply;
    let _: fn(u64, ErrorCode) -> Reply = Reply::error;
    let _: fn(ErrorCode) -> u16 = ErrorCode::as_u16;
    let _: fn(u16) -> Option<ErrorCode> = ErrorCode::from_u16;
    let _: fn(&ErrorCode) -> &'static str = ErrorCode::message;
    let _: [ErrorCode; 26] = ErrorCode::ALL;
    let _ = std::mem::size_of::<(
        ArchivedBinaryCommand,
        ArchivedBinaryCommandBody,
        ArchivedConnectInfo,
        ArchivedRecovery,
        ArchivedReplyResult,
        ArchivedServerMessage,
        ArchivedStreamPosition,
    )>();
    let _ = std::mem::size_of::<(
        BinaryCommandResolver,
        BinaryCommandBodyResolver,
        ConnectInfoResolver,
        RecoveryResolver,
        ReplyResultResolver,
        ServerMessageResolver,
        StreamPositionResolver,
    )>();
    // Public fields, as the engine and the load generator read and build them.
    let command = Command {
        id: 1,
        body: CommandBody::Ping,
    };
    let error = CommandError::new(Some(command.id), ErrorCode::BadRequest, "m".into());
    let _: (Option<u64>, ErrorCode, &String) = (error.id, error.code, &error.message);
    let _ = StreamPosition {
        offset: 1,
        epoch: 2,
    };
    let _ = Recovery {
        recovered: true,
        epoch: 1,
        offset: 2,
        start_offset: 3,
        replayed: 4,
    };
    let _ = ReplyResult::Published {
        message_id: 1,
        offset: 2,
        epoch: 3,
        duplicate: false,
    };
    let _ = BinaryCommand {
        id: 1,
        body: BinaryCommandBody::Publish {
            channel: "c".into(),
            data: vec![1],
            data_is_json: false,
            client_msg_id: None,
        },
    };
}
