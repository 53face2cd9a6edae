//! The IM delivery commands (`docs/im.md`, "Who receives what", "What each
//! device replays"): the `receipts` query, `catchup` of chosen
//! conversations, and the `delivered` event, in both wire forms. Their
//! variants are appended to [`super::ImCommand`], [`super::ImReply`] and
//! [`super::ImEvent`]; what they carry and how JSON spells it is here.

use serde::Deserialize;

use super::im::bad_request;
use super::json::{push_json_str, push_page_tail, push_u64};
use super::model::{CommandError, Recovery, StreamPosition};
use super::ImCommand;

/// Most users one `receipts` page returns (the least is 1).
pub const RECEIPTS_LIMIT_MAX: u32 = 100;
/// `limit` of a `receipts` when the JSON form leaves it out.
pub const RECEIPTS_LIMIT_DEFAULT: u32 = 50;
/// Most conversations one `catchup` names.
pub const CATCHUP_CONVS_MAX: usize = 100;

/// One conversation of a `catchup`: replay after `since`, or (`None`) after
/// the device's acknowledged cursor.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CatchupFrom {
    pub conv: String,
    pub since: Option<StreamPosition>,
}

/// A user's read and delivery positions in a conversation.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MemberPositions {
    pub user: String,
    /// Read up to and including this offset (0: nothing).
    pub read: u64,
    /// Some device of the user acknowledged up to this offset (0: none).
    pub delivered: u64,
}

/// How one conversation of a `catchup` went: as a subscribe's recovery,
/// and `truncated` when the replay stopped at the per-conversation limit
/// (the client pages the rest with `history`).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CatchupResult {
    pub conv: String,
    pub recovery: Recovery,
    pub truncated: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReceiptsParams {
    conv: String,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default = "receipts_limit_default")]
    limit: u32,
}

fn receipts_limit_default() -> u32 {
    RECEIPTS_LIMIT_DEFAULT
}

impl ReceiptsParams {
    pub(super) fn into_command(self) -> ImCommand {
        ImCommand::Receipts {
            conv: self.conv,
            cursor: self.cursor,
            limit: self.limit,
        }
    }
}

/// `since`: an offset, or `"cursor"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum JsonSince {
    Offset(u64),
    Word(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCatchupFrom {
    conv: String,
    since: JsonSince,
    /// A number or a decimal string; absent or 0: not checked.
    #[serde(default, deserialize_with = "super::json::u64_or_decimal_string")]
    epoch: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CatchupParams {
    convs: Vec<JsonCatchupFrom>,
    /// Absent or 0: the server's `im.catchup_per_conv_max`.
    #[serde(default)]
    limit_per_conv: u32,
}

impl CatchupParams {
    pub(super) fn into_command(self, id: u64) -> Result<ImCommand, CommandError> {
        let convs = self
            .convs
            .into_iter()
            .map(|from| {
                let since = match from.since {
                    JsonSince::Offset(offset) => Some(StreamPosition {
                        offset,
                        epoch: from.epoch,
                    }),
                    JsonSince::Word(word) if word == "cursor" => None,
                    JsonSince::Word(word) => {
                        return Err(bad_request(
                            id,
                            format!("`since` is an offset or \"cursor\", not {word:?}"),
                        ))
                    }
                };
                Ok(CatchupFrom {
                    conv: from.conv,
                    since,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ImCommand::Catchup {
            convs,
            limit_per_conv: self.limit_per_conv,
        })
    }
}

/// The rules of `receipts` and `catchup` both decoders apply.
pub(super) fn validate_receipts(id: u64, conv: &str, limit: u32) -> Result<(), CommandError> {
    if conv.is_empty() {
        return Err(bad_request(id, "`conv` must not be empty".to_owned()));
    }
    if !(1..=RECEIPTS_LIMIT_MAX).contains(&limit) {
        return Err(bad_request(
            id,
            format!("`limit` must be 1 to {RECEIPTS_LIMIT_MAX}"),
        ));
    }
    Ok(())
}

pub(super) fn validate_catchup(id: u64, convs: &[CatchupFrom]) -> Result<(), CommandError> {
    if convs.is_empty() || convs.len() > CATCHUP_CONVS_MAX {
        return Err(bad_request(
            id,
            format!("`convs` must hold 1 to {CATCHUP_CONVS_MAX} conversations"),
        ));
    }
    for (index, from) in convs.iter().enumerate() {
        if from.conv.is_empty() {
            return Err(bad_request(id, "a `conv` must not be empty".to_owned()));
        }
        if convs[..index].iter().any(|other| other.conv == from.conv) {
            return Err(bad_request(id, format!("{} is named twice", from.conv)));
        }
    }
    Ok(())
}

/// `{"conv":...,"receipts":[{"user","read","delivered"}...],"next":...}`.
pub(super) fn push_receipts(
    out: &mut Vec<u8>,
    conv: &str,
    receipts: &[MemberPositions],
    next: Option<&str>,
) {
    out.extend_from_slice(b"{\"conv\":");
    push_json_str(out, conv);
    out.extend_from_slice(b",\"receipts\":");
    let push_receipt = |out: &mut Vec<u8>, receipt: &MemberPositions| {
        out.extend_from_slice(b"{\"user\":");
        push_json_str(out, &receipt.user);
        out.extend_from_slice(b",\"read\":");
        push_u64(out, receipt.read);
        out.extend_from_slice(b",\"delivered\":");
        push_u64(out, receipt.delivered);
        out.push(b'}');
    };
    push_page_tail(out, receipts, push_receipt, next);
}

/// `{"convs":[{"conv","recovered","epoch","offset","start_offset","replayed","truncated"}...]}`.
pub(super) fn push_catchup(out: &mut Vec<u8>, results: &[CatchupResult]) {
    out.extend_from_slice(b"{\"convs\":[");
    for (index, result) in results.iter().enumerate() {
        if index != 0 {
            out.push(b',');
        }
        let recovery = &result.recovery;
        out.extend_from_slice(b"{\"conv\":");
        push_json_str(out, &result.conv);
        out.extend_from_slice(b",\"recovered\":");
        out.extend_from_slice(if recovery.recovered {
            b"true"
        } else {
            b"false"
        });
        out.extend_from_slice(b",\"epoch\":\"");
        push_u64(out, recovery.epoch);
        out.extend_from_slice(b"\",\"offset\":");
        push_u64(out, recovery.offset);
        out.extend_from_slice(b",\"start_offset\":");
        push_u64(out, recovery.start_offset);
        out.extend_from_slice(b",\"replayed\":");
        push_u64(out, recovery.replayed);
        out.extend_from_slice(b",\"truncated\":");
        out.extend_from_slice(if result.truncated { b"true" } else { b"false" });
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

/// `{"delivered":{"conv":...,"user":...,"offset":N}}`.
pub(super) fn push_delivered(out: &mut Vec<u8>, conv: &str, user: &str, offset: u64) {
    out.extend_from_slice(b"{\"delivered\":{\"conv\":");
    push_json_str(out, conv);
    out.extend_from_slice(b",\"user\":");
    push_json_str(out, user);
    out.extend_from_slice(b",\"offset\":");
    push_u64(out, offset);
    out.extend_from_slice(b"}}");
}
