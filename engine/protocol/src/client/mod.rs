//! The client protocol: commands in, replies and pushes out, in two wire
//! forms (JSON text frames and rkyv binary frames) over one internal model.
//!
//! The engine never sees a wire form past this module: [`decode_json`] and
//! [`decode_binary`] both produce an owned [`Command`], and one [`Reply`] /
//! [`ConnectInfo`] value is rendered by a JSON or a binary encoder depending
//! on the connection's subprotocol. Keeping the two forms behind one model is
//! what keeps them from drifting apart. `docs/protocol.md` is the reference
//! for clients; keep it in step with these files.
//!
//! Validation happens here, once: every binary archive from the network goes
//! through rkyv's checked `access`, and every payload flagged as JSON is
//! proven to be valid UTF-8 JSON, so the JSON pushes built from it later
//! ([`crate::envelope::encode_push_json`]) are valid without re-checking.
//!
//! One concern per file:
//! - `model.rs`: the types both forms share (commands, replies, the connect
//!   message, errors). [`Command`] and [`ServerMessage`] derive rkyv's
//!   `Archive`: their archives are the binary form of what clients send and
//!   of everything the server sends.
//! - `json.rs`: the JSON form, decoding commands and rendering replies.
//! - `binary.rs`: the rkyv form, with the borrowed mirror of
//!   [`ServerMessage`] that archives without cloning.
//! - `validate.rs`: the rules both decoders apply after parsing.

mod binary;
mod im;
mod im_delivery;
mod im_group;
mod json;
mod model;
#[cfg(test)]
mod tests;
mod validate;
pub use validate::json_depth;

pub use binary::{
    decode_binary, decode_server_binary, encode_binary_command, encode_connect_binary,
    encode_history_binary, encode_presence_binary, encode_reply_binary, encode_subscription_binary,
};
pub use im::{
    check_msg_data, encode_im_event_binary, encode_im_event_json, encode_im_reply_result_json,
    ArchivedImCommand, ArchivedImEvent, ArchivedImReply, ConvCursor, ConvInfo, ImCommand, ImEvent,
    ImReply, ImSyncInfo, MsgKind, MsgSize, SyncToken, CONV_LIST_LIMIT_DEFAULT, CONV_LIST_LIMIT_MAX,
};
pub use im::{BlockedUser, TypingState, BLOCKS_LIST_LIMIT_DEFAULT, BLOCKS_LIST_LIMIT_MAX};
pub use im_delivery::{
    ArchivedCatchupFrom, ArchivedCatchupResult, ArchivedMemberPositions, CatchupFrom,
    CatchupResult, MemberPositions, CATCHUP_CONVS_MAX, RECEIPTS_LIMIT_DEFAULT, RECEIPTS_LIMIT_MAX,
};
pub use im_group::{
    is_group_conv, ConvGroup, GroupChange, GroupDetails, GroupMemberInfo, GroupRole,
    GROUP_MEMBERS_LIMIT_DEFAULT, GROUP_MEMBERS_LIMIT_MAX, GROUP_TEXT_BYTES_MAX, GROUP_USERS_MAX,
};
pub use json::{
    decode_json, encode_connect_json, encode_history_json, encode_history_result_json,
    encode_presence_json, encode_reply_json, encode_subscription_json, history_by_time,
    HistoryBounds,
};
pub use model::{
    ArchivedBinaryCommand, ArchivedBinaryCommandBody, ArchivedCommand, ArchivedCommandBody,
    ArchivedConnectInfo, ArchivedRecovery, ArchivedReplyResult, ArchivedServerMessage,
    ArchivedStreamPosition, BinaryCommand, BinaryCommandBody, BinaryCommandBodyResolver,
    BinaryCommandResolver, Command, CommandBody, CommandBodyResolver, CommandError,
    CommandResolver, ConnectInfo, ConnectInfoResolver, DecodeError, ErrorCode, PresenceCommand,
    PresenceState, Recovery, RecoveryResolver, Reply, ReplyResult, ReplyResultResolver,
    ServerMessage, ServerMessageResolver, StreamPosition, StreamPositionResolver,
};

pub(crate) use binary::ServerMessageRef;
pub use json::push_presence_state;
pub(crate) use json::{push_json_str, push_u64};

/// Subprotocol for JSON text frames. Also used when the client offers none.
pub const SUBPROTOCOL_JSON: &str = "ringcast.json.v1";
/// Subprotocol for rkyv binary frames ([`BinaryCommand`] in, [`ServerMessage`] out).
///
/// The archived layout is part of the name: a layout change gets a new one.
pub const SUBPROTOCOL_BINARY: &str = "ringcast.rkyv.v1";

/// `limit` of a history command when the JSON form leaves it out.
pub const HISTORY_LIMIT_DEFAULT: u32 = 100;
/// Largest `limit` a history command may ask for (the smallest is 1).
pub const HISTORY_LIMIT_MAX: u32 = 1000;

/// Longest `rpc` method name.
pub const RPC_METHOD_BYTES_MAX: usize = 256;
/// Longest `client_msg_id`, in bytes (the shortest is 1).
pub const CLIENT_MSG_ID_BYTES_MAX: usize = 64;

/// Most users one presence command (or `POST /api/presence/users`) may
/// name; the fewest is 1.
pub const PRESENCE_USERS_MAX: usize = 1000;
