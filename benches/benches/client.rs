//! The client protocol (`ringcast_protocol::client`): what the hand-written
//! encoders buy over derived serialization of the same bytes, and what
//! decoding a command costs over just parsing it.
//!
//! Each group times Ringcast's function against a baseline in the same run:
//! - JSON (`client_reply_json`, `client_connect_json`, `client_history_json`):
//!   `baseline_serde_derive` is serde_json writing `#[derive(Serialize)]`
//!   mirrors defined here, checked once to give exactly Ringcast's bytes.
//! - Binary pushes and history pages (`client_push_binary`,
//!   `client_history_binary`): Ringcast archives from borrowed data (the
//!   crate's `ServerMessageRef` mirror); `baseline_owned_derive` copies into
//!   the owned, derived `ServerMessage` and archives that, same bytes.
//! - Binary replies and connect (`client_reply_binary`,
//!   `client_connect_binary`): these are derived (see
//!   `encode_reply_binary`'s docs for the measurement that decided it);
//!   the floor is copying the finished archive.
//! - Decode (`client_decode_json`, `client_decode_binary`): the floor is
//!   parsing alone, `serde_json` into `IgnoredAny` and rkyv's checked
//!   `access` without deserializing.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use ringcast_protocol::client::{
    decode_binary, decode_json, encode_binary_command, encode_connect_binary, encode_connect_json,
    encode_history_binary, encode_history_json, encode_reply_binary, encode_reply_json,
    ArchivedBinaryCommand, BinaryCommand, BinaryCommandBody, ConnectInfo, ErrorCode, Recovery,
    Reply, ReplyResult, ServerMessage,
};
use ringcast_protocol::envelope::{ArchivedEnvelope, EncodedPush, Envelope};
use rkyv::rancor;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

const PAYLOAD: &[u8] = br#"{"text":"hello, world","n":42,"tags":["a","b"],"ok":true}"#;

fn replies() -> Vec<(&'static str, Reply)> {
    vec![
        (
            "published",
            Reply::Ok {
                id: 1_234,
                result: ReplyResult::Published {
                    message_id: 7_263_385_979_038_289,
                    offset: 41,
                    epoch: 1_760_000_000_123,
                    duplicate: false,
                },
            },
        ),
        (
            "subscribed_recovery",
            Reply::Ok {
                id: 2,
                result: ReplyResult::Subscribed {
                    channel: "chat:room-42".into(),
                    recovery: Some(Recovery {
                        recovered: true,
                        epoch: 1_760_000_000_123,
                        offset: 57,
                        start_offset: 1,
                        replayed: 16,
                    }),
                },
            },
        ),
        (
            "empty",
            Reply::Ok {
                id: 3,
                result: ReplyResult::Empty,
            },
        ),
        ("error", Reply::error(4, ErrorCode::PermissionDenied)),
    ]
}

fn connect_info() -> ConnectInfo {
    ConnectInfo {
        client_id: 281_474_976_710_657,
        user: "alice".into(),
        expires_at_ms: 1_767_225_600_000,
        ping_interval_ms: 25_000,
        shard: 3,
    }
}

fn envelope(offset: u64) -> Envelope {
    Envelope {
        id: 7_263_385_979_038_289 + offset,
        offset,
        epoch: 1_760_000_000_123,
        channel: "chat:room-42".into(),
        sender: "alice".into(),
        time_ms: 1_760_000_000_000 + offset,
        data_is_json: true,
        data: PAYLOAD.to_vec(),
    }
}

fn reply_json(c: &mut Criterion) {
    let mut group = c.benchmark_group("client_reply_json");
    for (name, reply) in replies() {
        assert_eq!(derived::reply_json(&reply), encode_reply_json(&reply));
        group.bench_with_input(BenchmarkId::new("ringcast", name), &reply, |b, reply| {
            b.iter(|| black_box(encode_reply_json(black_box(reply))))
        });
        group.bench_with_input(
            BenchmarkId::new("baseline_serde_derive", name),
            &reply,
            |b, reply| b.iter(|| black_box(derived::reply_json(black_box(reply)))),
        );
    }
    group.finish();

    let info = connect_info();
    assert_eq!(derived::connect_json(&info), encode_connect_json(&info));
    let mut group = c.benchmark_group("client_connect_json");
    group.bench_function("ringcast", |b| {
        b.iter(|| black_box(encode_connect_json(black_box(&info))))
    });
    group.bench_function("baseline_serde_derive", |b| {
        b.iter(|| black_box(derived::connect_json(black_box(&info))))
    });
    group.finish();
}

fn reply_binary(c: &mut Criterion) {
    let mut group = c.benchmark_group("client_reply_binary");
    for (name, reply) in replies() {
        let archive = encode_reply_binary(&reply);
        group.bench_with_input(BenchmarkId::new("ringcast", name), &reply, |b, reply| {
            b.iter(|| black_box(encode_reply_binary(black_box(reply))))
        });
        group.bench_with_input(
            BenchmarkId::new("baseline_copy_archive", name),
            &archive,
            |b, archive| b.iter(|| black_box(black_box(archive).to_vec())),
        );
    }
    group.finish();

    let info = connect_info();
    let archive = encode_connect_binary(&info);
    let mut group = c.benchmark_group("client_connect_binary");
    group.bench_function("ringcast", |b| {
        b.iter(|| black_box(encode_connect_binary(black_box(&info))))
    });
    group.bench_function("baseline_copy_archive", |b| {
        b.iter(|| black_box(black_box(&archive).to_vec()))
    });
    group.finish();

    let env = envelope(41);
    assert_eq!(
        owned::push(&env).as_slice(),
        EncodedPush::encode(&env).as_bytes()
    );
    let mut group = c.benchmark_group("client_push_binary");
    group.bench_function("ringcast", |b| {
        b.iter(|| black_box(EncodedPush::encode(black_box(&env))))
    });
    group.bench_function("baseline_owned_derive", |b| {
        b.iter(|| black_box(owned::push(black_box(&env))))
    });
    group.finish();
}

fn history(c: &mut Criterion) {
    let stored: Vec<EncodedPush> = (1..=100)
        .map(|offset| EncodedPush::encode(&envelope(offset)))
        .collect();
    let pushes: Vec<&ArchivedEnvelope> = stored.iter().map(EncodedPush::envelope).collect();
    let mut json = c.benchmark_group("client_history_json");
    for len in [10, 100] {
        let page = &pushes[..len];
        assert_eq!(
            derived::history_json(7, "chat:room-42", 123, 1, 101, page),
            encode_history_json(7, "chat:room-42", 123, 1, 101, page)
        );
        json.bench_with_input(BenchmarkId::new("ringcast", len), &page, |b, page| {
            b.iter(|| black_box(encode_history_json(7, "chat:room-42", 123, 1, 101, page)))
        });
        json.bench_with_input(
            BenchmarkId::new("baseline_serde_derive", len),
            &page,
            |b, page| {
                b.iter(|| black_box(derived::history_json(7, "chat:room-42", 123, 1, 101, page)))
            },
        );
    }
    json.finish();
    let mut binary = c.benchmark_group("client_history_binary");
    for len in [10, 100] {
        let page = &pushes[..len];
        assert_eq!(
            owned::history(7, "chat:room-42", 123, 1, 101, page),
            encode_history_binary(7, "chat:room-42", 123, 1, 101, page)
        );
        binary.bench_with_input(BenchmarkId::new("ringcast", len), &page, |b, page| {
            b.iter(|| black_box(encode_history_binary(7, "chat:room-42", 123, 1, 101, page)))
        });
        binary.bench_with_input(
            BenchmarkId::new("baseline_owned_derive", len),
            &page,
            |b, page| b.iter(|| black_box(owned::history(7, "chat:room-42", 123, 1, 101, page))),
        );
    }
    binary.finish();
}

fn decode(c: &mut Criterion) {
    let publish_json = format!(
        r#"{{"id":1234,"method":"publish","params":{{"channel":"chat:room-42","data":{}}}}}"#,
        std::str::from_utf8(PAYLOAD).unwrap()
    );
    let subscribe_json = r#"{"id":2,"method":"subscribe","params":{"channel":"chat:room-42","since":{"offset":41,"epoch":"1760000000123"}}}"#;
    let mut group = c.benchmark_group("client_decode_json");
    for (name, text) in [
        ("publish", publish_json.as_str()),
        ("subscribe_since", subscribe_json),
    ] {
        decode_json(text.as_bytes()).unwrap();
        group.bench_with_input(BenchmarkId::new("ringcast", name), text, |b, text| {
            b.iter(|| black_box(decode_json(black_box(text.as_bytes()))))
        });
        group.bench_with_input(
            BenchmarkId::new("baseline_parse_only", name),
            text,
            |b, text| {
                b.iter(|| {
                    black_box(serde_json::from_slice::<serde::de::IgnoredAny>(black_box(
                        text.as_bytes(),
                    )))
                })
            },
        );
    }
    group.finish();

    let commands = [
        (
            "publish",
            BinaryCommand {
                id: 1_234,
                body: BinaryCommandBody::Publish {
                    channel: "chat:room-42".into(),
                    data: PAYLOAD.to_vec(),
                    data_is_json: true,
                    client_msg_id: None,
                },
            },
        ),
        (
            "subscribe_since",
            BinaryCommand {
                id: 2,
                body: BinaryCommandBody::Subscribe {
                    channel: "chat:room-42".into(),
                    since: Some(ringcast_protocol::client::StreamPosition {
                        offset: 41,
                        epoch: 1_760_000_000_123,
                    }),
                },
            },
        ),
    ];
    let mut group = c.benchmark_group("client_decode_binary");
    for (name, command) in commands {
        // Aligned, as a frame payload in the engine's read buffer usually is.
        let mut bytes = rkyv::util::AlignedVec::<16>::new();
        bytes.extend_from_slice(&encode_binary_command(&command));
        decode_binary(&bytes).unwrap();
        group.bench_with_input(BenchmarkId::new("ringcast", name), &bytes, |b, bytes| {
            b.iter(|| black_box(decode_binary(black_box(bytes))))
        });
        group.bench_with_input(
            BenchmarkId::new("baseline_checked_access_only", name),
            &bytes,
            |b, bytes| {
                b.iter(|| {
                    black_box(
                        rkyv::access::<ArchivedBinaryCommand, rancor::Error>(black_box(bytes))
                            .is_ok(),
                    )
                })
            },
        );
    }
    group.finish();
}

/// The derived-serde baselines: the same JSON bytes as Ringcast's encoders.
mod derived {
    use super::*;

    /// A u64 as a decimal string, as the protocol writes ids and epochs.
    /// (Formatting the digits on a stack buffer instead of `collect_str`
    /// measured the same.)
    fn decimal<S: Serializer>(n: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(n)
    }

    fn is_zero(n: &u64) -> bool {
        *n == 0
    }

    fn is_false(b: &bool) -> bool {
        !*b
    }

    #[derive(Serialize)]
    #[serde(untagged)]
    enum ReplyJson<'a> {
        Ok { id: u64, result: ResultJson<'a> },
        Error { id: u64, error: ErrorJson<'a> },
    }

    #[derive(Serialize)]
    struct ErrorJson<'a> {
        code: u16,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    }

    #[derive(Serialize)]
    #[serde(untagged)]
    enum ResultJson<'a> {
        Empty {},
        Rpc {
            #[serde(skip_serializing_if = "Option::is_none")]
            data: Option<&'a RawValue>,
            #[serde(skip_serializing_if = "Option::is_none")]
            b64data: Option<String>,
        },
        Published {
            #[serde(serialize_with = "decimal")]
            id: u64,
            offset: u64,
            #[serde(serialize_with = "decimal")]
            epoch: u64,
            #[serde(skip_serializing_if = "is_false")]
            duplicate: bool,
        },
        Refreshed {
            #[serde(skip_serializing_if = "is_zero")]
            expires: u64,
        },
        Subscribed {
            channel: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            recovery: Option<RecoveryJson>,
        },
        Presence {
            users: Vec<PresenceJson<'a>>,
        },
    }

    #[derive(Serialize)]
    struct PresenceJson<'a> {
        user: &'a str,
        online: bool,
        last_seen_ms: u64,
    }

    #[derive(Serialize)]
    struct RecoveryJson {
        recovered: bool,
        #[serde(serialize_with = "decimal")]
        epoch: u64,
        offset: u64,
        start_offset: u64,
        replayed: u64,
    }

    pub fn reply_json(reply: &Reply) -> Vec<u8> {
        let json = match reply {
            Reply::Ok { id, result } => ReplyJson::Ok {
                id: *id,
                result: match result {
                    ReplyResult::Empty => ResultJson::Empty {},
                    // No serde twin: these benches time the replies of the
                    // push commands only.
                    ReplyResult::Im(_) => {
                        return ringcast_protocol::client::encode_reply_json(reply)
                    }
                    ReplyResult::Rpc { data, data_is_json } => {
                        use base64::Engine as _;
                        let raw = data_is_json
                            .then(|| serde_json::from_slice::<&RawValue>(data).ok())
                            .flatten();
                        ResultJson::Rpc {
                            data: raw,
                            b64data: raw
                                .is_none()
                                .then(|| base64::engine::general_purpose::STANDARD.encode(data)),
                        }
                    }
                    ReplyResult::Published {
                        message_id,
                        offset,
                        epoch,
                        duplicate,
                    } => ResultJson::Published {
                        id: *message_id,
                        offset: *offset,
                        epoch: *epoch,
                        duplicate: *duplicate,
                    },
                    ReplyResult::Refreshed { expires_at_ms } => ResultJson::Refreshed {
                        expires: *expires_at_ms,
                    },
                    ReplyResult::Presence { users } => ResultJson::Presence {
                        users: users
                            .iter()
                            .map(|state| PresenceJson {
                                user: &state.user,
                                online: state.online,
                                last_seen_ms: state.last_seen_ms,
                            })
                            .collect(),
                    },
                    ReplyResult::Subscribed { channel, recovery } => ResultJson::Subscribed {
                        channel,
                        recovery: recovery.map(|recovery| RecoveryJson {
                            recovered: recovery.recovered,
                            epoch: recovery.epoch,
                            offset: recovery.offset,
                            start_offset: recovery.start_offset,
                            replayed: recovery.replayed,
                        }),
                    },
                },
            },
            Reply::Error { id, code, message } => ReplyJson::Error {
                id: *id,
                error: ErrorJson {
                    code: code.as_u16(),
                    message,
                    retry_after_ms: None,
                },
            },
            Reply::ErrorRetry {
                id,
                code,
                message,
                retry_after_ms,
            } => ReplyJson::Error {
                id: *id,
                error: ErrorJson {
                    code: code.as_u16(),
                    message,
                    retry_after_ms: Some(*retry_after_ms),
                },
            },
        };
        let mut out = Vec::with_capacity(64);
        serde_json::to_writer(&mut out, &json).unwrap();
        out
    }

    #[derive(Serialize)]
    struct ConnectJson<'a> {
        connect: ConnectFields<'a>,
    }

    #[derive(Serialize)]
    struct ConnectFields<'a> {
        #[serde(serialize_with = "decimal")]
        client: u64,
        user: &'a str,
        #[serde(skip_serializing_if = "is_zero")]
        expires: u64,
        ping_interval_ms: u64,
        shard: u16,
    }

    pub fn connect_json(info: &ConnectInfo) -> Vec<u8> {
        let json = ConnectJson {
            connect: ConnectFields {
                client: info.client_id,
                user: &info.user,
                expires: info.expires_at_ms,
                ping_interval_ms: info.ping_interval_ms,
                shard: info.shard,
            },
        };
        let mut out = Vec::with_capacity(96 + info.user.len());
        serde_json::to_writer(&mut out, &json).unwrap();
        out
    }

    #[derive(Serialize)]
    struct HistoryJson<'a> {
        id: u64,
        result: HistoryResult<'a>,
    }

    #[derive(Serialize)]
    struct HistoryResult<'a> {
        stream: &'a str,
        #[serde(serialize_with = "decimal")]
        epoch: u64,
        start_offset: u64,
        next_offset: u64,
        publications: Vec<Publication<'a>>,
    }

    /// `data` has to go through `RawValue`, which re-parses it (and would
    /// trim surrounding whitespace, so only payloads without any compare).
    #[derive(Serialize)]
    struct Publication<'a> {
        channel: &'a str,
        #[serde(serialize_with = "decimal")]
        id: u64,
        #[serde(skip_serializing_if = "is_zero")]
        offset: u64,
        #[serde(skip_serializing_if = "is_zero", serialize_with = "decimal")]
        epoch: u64,
        sender: &'a str,
        time: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        b64data: Option<String>,
    }

    pub fn history_json(
        id: u64,
        stream: &str,
        epoch: u64,
        start_offset: u64,
        next_offset: u64,
        pushes: &[&ArchivedEnvelope],
    ) -> Vec<u8> {
        let publications = pushes
            .iter()
            .map(|env| {
                assert!(env.data_is_json);
                let text = std::str::from_utf8(env.data.as_slice()).unwrap();
                Publication {
                    channel: env.channel.as_str(),
                    id: env.id.to_native(),
                    offset: env.offset.to_native(),
                    epoch: env.epoch.to_native(),
                    sender: env.sender.as_str(),
                    time: env.time_ms.to_native(),
                    data: Some(serde_json::from_str(text).unwrap()),
                    b64data: None,
                }
            })
            .collect();
        let json = HistoryJson {
            id,
            result: HistoryResult {
                stream,
                epoch,
                start_offset,
                next_offset,
                publications,
            },
        };
        let mut out = Vec::with_capacity(256 + pushes.len() * 192);
        serde_json::to_writer(&mut out, &json).unwrap();
        out
    }
}

/// The owned-derive baselines: clone into `ServerMessage`, archive that.
mod owned {
    use super::*;

    fn archive(message: &ServerMessage) -> Vec<u8> {
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(message, Vec::new()).unwrap()
    }

    pub fn push(env: &Envelope) -> rkyv::util::AlignedVec {
        rkyv::to_bytes::<rancor::Error>(&ServerMessage::Push(env.clone())).unwrap()
    }

    pub fn history(
        id: u64,
        stream: &str,
        epoch: u64,
        start_offset: u64,
        next_offset: u64,
        pushes: &[&ArchivedEnvelope],
    ) -> Vec<u8> {
        archive(&ServerMessage::History {
            id,
            stream: stream.to_owned(),
            epoch,
            start_offset,
            next_offset,
            entries: pushes.iter().map(|env| env.to_envelope()).collect(),
        })
    }
}

criterion_group!(benches, reply_json, reply_binary, history, decode);
criterion_main!(benches);
