//! The store's requests and answers as they cross between nodes
//! (`ringcast_protocol::cluster`), both ways.

use std::sync::Arc;
use std::time::Duration;

use ringcast_protocol::cluster::{AppendWire, OutboxWire, ReadWire, StoreReply};
use ringcast_protocol::envelope::{EncodedPush, MessageId};
use ringcast_store::{
    AppendRequest, Appended, Durability, ErrorSource, OutboxEvent, OutboxKind, ReadRequest,
    ReadResult, Retention, StoreError, StoredCursor,
};

pub fn append_out(request: &AppendRequest) -> AppendWire {
    AppendWire {
        stream: request.stream.clone(),
        push: request.push.as_bytes().to_vec(),
        durability: match request.durability {
            Durability::Buffered => 0,
            Durability::Sync => 1,
        },
        client_msg_id: request.client_msg_id.clone(),
        retention_count: request.retention.count_max,
        retention_age_ms: u64::try_from(request.retention.age_max.as_millis()).unwrap_or(u64::MAX),
        outbox: request
            .outbox
            .iter()
            .map(|event| OutboxWire {
                kind: event.kind as u8,
                key: event.key.clone(),
                due_ms: event.due_ms,
                body: event.body.clone(),
            })
            .collect(),
    }
}

/// An append from another node, checked as the store would check it from
/// a shard: the push must be a valid archive.
pub fn append_in(wire: AppendWire) -> Result<AppendRequest, String> {
    let push = EncodedPush::from_untrusted(&wire.push).map_err(|error| error.to_string())?;
    let outbox = wire
        .outbox
        .into_iter()
        .map(|event| {
            Ok(OutboxEvent {
                kind: OutboxKind::from_u8(event.kind)
                    .ok_or_else(|| format!("unknown outbox kind {}", event.kind))?,
                key: event.key,
                due_ms: event.due_ms,
                body: event.body,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(AppendRequest {
        stream: wire.stream,
        push,
        durability: match wire.durability {
            0 => Durability::Buffered,
            1 => Durability::Sync,
            other => return Err(format!("unknown durability {other}")),
        },
        client_msg_id: wire.client_msg_id,
        retention: Retention {
            count_max: wire.retention_count,
            age_max: if wire.retention_age_ms == u64::MAX {
                Duration::MAX
            } else {
                Duration::from_millis(wire.retention_age_ms)
            },
        },
        outbox,
    })
}

pub fn read_out(request: &ReadRequest) -> ReadWire {
    ReadWire {
        stream: request.stream.clone(),
        since: request.since,
        before: request.before,
        limit: u32::try_from(request.limit).unwrap_or(u32::MAX),
        reverse: request.reverse,
        from_time_ms: request.from_time_ms,
        before_time_ms: request.before_time_ms,
    }
}

pub fn read_in(wire: ReadWire) -> ReadRequest {
    ReadRequest {
        stream: wire.stream,
        since: wire.since,
        before: wire.before,
        limit: wire.limit as usize,
        reverse: wire.reverse,
        from_time_ms: wire.from_time_ms,
        before_time_ms: wire.before_time_ms,
    }
}

pub fn appended_out(appended: &Appended) -> StoreReply {
    StoreReply::Appended {
        message_id: appended.message_id.0,
        offset: appended.offset,
        epoch: appended.epoch,
        push: appended.push.as_bytes().to_vec(),
        duplicate: appended.duplicate,
    }
}

/// Room an entry takes in a read answer besides its bytes (rkyv's
/// length, offset and alignment).
const READ_ENTRY_OVERHEAD_BYTES: usize = 16;

/// A read answer that fits in `bytes_max` (NATS's `max_payload` less the
/// framing): the first entries of the page that fit. A shorter page is no
/// end of the stream: the reader goes on from its last offset until
/// `next_offset` (docs/cluster.md). An entry too large to cross alone is
/// an error, never a silent skip.
pub fn read_result_out(result: &ReadResult, bytes_max: usize) -> StoreReply {
    let mut used = 0usize;
    let mut entries = Vec::new();
    for entry in &result.entries {
        used = used.saturating_add(entry.len() + READ_ENTRY_OVERHEAD_BYTES);
        if used > bytes_max {
            break;
        }
        entries.push(entry.as_bytes().to_vec());
    }
    if entries.is_empty() {
        if let Some(first) = result.entries.first() {
            return StoreReply::Error {
                source: 0,
                message: format!(
                    "the entry at offset {} ({} bytes) is larger than NATS carries ({} bytes); \
                     read it on its partition's owner",
                    first.envelope().offset.to_native(),
                    first.len(),
                    bytes_max
                ),
            };
        }
    }
    StoreReply::Read {
        entries,
        epoch: result.epoch,
        first_offset: result.first_offset,
        next_offset: result.next_offset,
    }
}

pub fn error_out(error: &StoreError) -> StoreReply {
    StoreReply::Error {
        source: match error.source_tag() {
            ErrorSource::Caller => 0,
            ErrorSource::Load => 1,
            ErrorSource::Resource => 2,
            ErrorSource::Disk => 3,
            _ => 4,
        },
        message: error.to_string(),
    }
}

/// The error a reply carries, or the one an unexpected reply is.
fn error_in(partition: u32, reply: StoreReply) -> StoreError {
    match reply {
        StoreReply::Error { source, message } => StoreError::Remote {
            partition,
            reason: message,
            tag: match source {
                0 => ErrorSource::Caller,
                1 => ErrorSource::Load,
                2 => ErrorSource::Resource,
                3 => ErrorSource::Disk,
                _ => ErrorSource::Shutdown,
            },
        },
        other => StoreError::Remote {
            partition,
            reason: format!("the owner answered {other:?} to a different request"),
            tag: ErrorSource::Disk,
        },
    }
}

/// A failed exchange with the owner: unreachable, timed out, undecodable.
pub fn unreachable(partition: u32, reason: String) -> StoreError {
    StoreError::Remote {
        partition,
        reason,
        tag: ErrorSource::Resource,
    }
}

fn push_in(partition: u32, bytes: &[u8]) -> Result<EncodedPush, StoreError> {
    EncodedPush::from_untrusted(bytes)
        .map_err(|error| unreachable(partition, format!("the owner sent a bad entry: {error}")))
}

pub fn appended_in(partition: u32, reply: StoreReply) -> Result<Appended, StoreError> {
    match reply {
        StoreReply::Appended {
            message_id,
            offset,
            epoch,
            push,
            duplicate,
        } => Ok(Appended {
            message_id: MessageId(message_id),
            offset,
            epoch,
            push: Arc::new(push_in(partition, &push)?),
            duplicate,
        }),
        other => Err(error_in(partition, other)),
    }
}

pub fn read_result_in(partition: u32, reply: StoreReply) -> Result<ReadResult, StoreError> {
    match reply {
        StoreReply::Read {
            entries,
            epoch,
            first_offset,
            next_offset,
        } => Ok(ReadResult {
            entries: entries
                .iter()
                .map(|entry| push_in(partition, entry))
                .collect::<Result<_, _>>()?,
            epoch,
            first_offset,
            next_offset,
        }),
        other => Err(error_in(partition, other)),
    }
}

pub fn cursor_in(partition: u32, reply: StoreReply) -> Result<Option<StoredCursor>, StoreError> {
    match reply {
        StoreReply::Cursor(cursor) => {
            Ok(cursor.map(|(offset, epoch)| StoredCursor { offset, epoch }))
        }
        other => Err(error_in(partition, other)),
    }
}

pub fn offset_in(partition: u32, reply: StoreReply) -> Result<u64, StoreError> {
    match reply {
        StoreReply::Offset(offset) => Ok(offset),
        other => Err(error_in(partition, other)),
    }
}

/// An IM call's answer (`super::im_wire`), or the owner's refusal.
pub fn im_answer_in(
    partition: u32,
    reply: StoreReply,
) -> Result<super::im_wire::ImAnswer, StoreError> {
    match reply {
        StoreReply::Im(bytes) => ringcast_protocol::cluster::decode(&bytes)
            .map_err(|error| unreachable(partition, format!("an unreadable IM answer: {error}"))),
        other => Err(error_in(partition, other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringcast_protocol::envelope::Envelope;

    fn push() -> EncodedPush {
        EncodedPush::encode(&Envelope {
            id: 7,
            offset: 0,
            epoch: 0,
            channel: "user:bob".into(),
            sender: "alice".into(),
            time_ms: 1,
            data_is_json: true,
            data: b"{}".to_vec(),
        })
    }

    #[test]
    fn an_append_crosses_unchanged() {
        let request = AppendRequest {
            stream: "user:bob".into(),
            push: push(),
            durability: Durability::Sync,
            client_msg_id: Some("k1".into()),
            retention: Retention {
                count_max: 10,
                age_max: Duration::MAX,
            },
            outbox: vec![OutboxEvent {
                kind: OutboxKind::Undelivered,
                key: "bob".into(),
                due_ms: 9,
                body: b"{}".to_vec(),
            }],
        };
        let back = append_in(append_out(&request)).unwrap();
        assert_eq!(back.stream, request.stream);
        assert_eq!(back.push.as_bytes(), request.push.as_bytes());
        assert_eq!(back.durability, Durability::Sync);
        assert_eq!(back.client_msg_id, request.client_msg_id);
        assert_eq!(back.retention.age_max, Duration::MAX);
        assert_eq!(back.outbox, request.outbox);
    }

    #[test]
    fn a_bad_push_or_kind_from_the_network_is_refused() {
        let mut wire = append_out(&AppendRequest {
            stream: "s".into(),
            push: push(),
            durability: Durability::Buffered,
            client_msg_id: None,
            retention: Retention {
                count_max: 1,
                age_max: Duration::from_secs(1),
            },
            outbox: vec![],
        });
        wire.durability = 9;
        assert!(append_in(wire.clone()).is_err());
        wire.durability = 0;
        wire.push = vec![1, 2, 3];
        assert!(append_in(wire).is_err());
    }

    #[test]
    fn a_read_answer_is_cut_to_what_nats_carries_and_never_skips() {
        let entry = |offset| {
            let mut push = push();
            push.stamp(1, offset, 5, 1);
            push
        };
        let result = ReadResult {
            entries: (1..=10).map(entry).collect(),
            epoch: 5,
            first_offset: 1,
            next_offset: 11,
        };
        let one = entry(1).len() + READ_ENTRY_OVERHEAD_BYTES;
        let StoreReply::Read {
            entries,
            next_offset,
            ..
        } = read_result_out(&result, one * 3)
        else {
            panic!("a read answer");
        };
        assert_eq!(
            (entries.len(), next_offset),
            (3, 11),
            "the first three, and the end"
        );
        let StoreReply::Read { entries, .. } = read_result_out(&result, usize::MAX) else {
            panic!("a read answer");
        };
        assert_eq!(entries.len(), 10);
        let too_small = read_result_out(&result, one - 1);
        assert!(
            matches!(&too_small, StoreReply::Error { message, .. } if message.contains("offset 1")),
            "{too_small:?}"
        );
    }

    #[test]
    fn an_owner_error_keeps_its_retry_class() {
        let error = StoreError::Overloaded { capacity: 4 };
        let back = appended_in(2, error_out(&error)).unwrap_err();
        assert!(back.is_retryable());
        assert!(back.to_string().contains("partition 2"), "{back}");
        let back = read_result_in(2, error_out(&StoreError::Poisoned)).unwrap_err();
        assert!(!back.is_retryable());
    }
}
