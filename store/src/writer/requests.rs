//! The writer's requests besides appends: cursor moves, stream resets,
//! and the dedup lookup every append makes (plain, DM and group alike).

use std::sync::Arc;

use ringcast_protocol::envelope::{EncodedPush, MessageId};

use crate::api::{Appended, STREAM_NAME_BYTES_MAX};
use crate::error::StoreError;
use crate::keys::{
    cursor_key, dedup_key, entry_key, meta_id_key, CursorRecord, DedupRecord, StreamMeta,
    META_PREFIX_DROPPED, META_PREFIX_STREAM,
};

use super::{duration_ms, validate_cursor, BatchWork, PendingReply, Reply, Writer};

impl Writer {
    /// The original append of a retry, if it is within the dedup window
    /// and the stream's epoch has not changed since.
    #[expect(
        clippy::too_many_arguments,
        reason = "a retry's parts; a struct would only rename them"
    )]
    pub(super) fn find_duplicate(
        &self,
        work: &BatchWork,
        stream: &str,
        id: u64,
        meta: &StreamMeta,
        client_msg_id: &str,
        push: &EncodedPush,
        now_ms: u64,
    ) -> Result<Option<Appended>, StoreError> {
        if let Some(appended) = work.dedup_pending.get(&(id, client_msg_id.to_owned())) {
            return Ok(Some(appended.clone()));
        }
        let stored = self
            .fjall
            .dedup
            .get(dedup_key(id, client_msg_id))
            .map_err(|error| StoreError::io("reading the dedup index", error))?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let Some(record) = DedupRecord::decode(&stored) else {
            tracing::error!(
                stream,
                client_msg_id,
                "unreadable dedup record: ignoring it"
            );
            return Ok(None);
        };
        let window_ms = duration_ms(self.config.dedup_window);
        if record.epoch != meta.epoch || now_ms.saturating_sub(record.time_ms) >= window_ms {
            return Ok(None);
        }
        let entry = self
            .fjall
            .entries
            .get(entry_key(id, record.offset))
            .map_err(|error| StoreError::io("reading a deduplicated entry", error))?;
        let push = match entry {
            Some(bytes) => {
                EncodedPush::from_untrusted(&bytes).map_err(|error| StoreError::Corrupt {
                    stream: stream.to_owned(),
                    offset: record.offset,
                    reason: error.to_string(),
                })?
            }
            // Trimmed by retention since: rebuild it from the retry, which
            // carries the same publication.
            None => {
                let mut original = push.clone();
                original.stamp(
                    record.message_id,
                    record.offset,
                    record.epoch,
                    record.time_ms,
                );
                original
            }
        };
        Ok(Some(Appended {
            message_id: MessageId(record.message_id),
            offset: record.offset,
            epoch: record.epoch,
            push: Arc::new(push),
            duplicate: true,
        }))
    }

    /// Stages `(user, device)`'s cursor in `stream` at `offset` (monotonic,
    /// clamped to the stream's end); returns the cursor now held.
    pub(super) fn stage_cursor(
        &mut self,
        work: &mut BatchWork,
        user: &str,
        device: &str,
        stream: &str,
        offset: u64,
    ) -> Result<u64, StoreError> {
        validate_cursor(user, device, stream)?;
        let meta = self
            .stream_id(work, stream)
            .and_then(|id| self.stream_meta(work, id));
        let epoch = meta.map_or(0, |meta| meta.epoch);
        // Acking past the end would make the store skip messages that do
        // not exist yet.
        let offset_max = meta.map_or(0, |meta| meta.next_offset.saturating_sub(1));
        let offset = offset.min(offset_max);
        let key = cursor_key(user, device, stream);
        let current = match work.cursors_pending.get(&key) {
            Some(record) => Some(*record),
            None => self
                .fjall
                .cursors
                .get(&key)
                .map_err(|error| StoreError::io("reading a cursor", error))?
                .and_then(|bytes| CursorRecord::decode(&bytes)),
        };
        let value = match current {
            Some(current) if current.epoch == epoch && current.offset >= offset => current.offset,
            _ => {
                let record = CursorRecord { offset, epoch };
                work.batch
                    .insert(&self.fjall.cursors, key.clone(), record.encode());
                work.cursors_pending.insert(key, record);
                offset
            }
        };
        Ok(value)
    }

    /// Gives the stream a new id and epoch; the old id's data becomes
    /// garbage deleted in the background, so a reset is O(1) however long
    /// the stream was.
    pub(super) fn stage_reset(&mut self, work: &mut BatchWork, stream: String, reply: Reply<u64>) {
        if stream.is_empty() || stream.len() > STREAM_NAME_BYTES_MAX {
            work.replies.push(PendingReply::Value {
                reply,
                result: Err(StoreError::InvalidRequest {
                    reason: "stream name must be 1..=1024 bytes",
                }),
            });
            return;
        }
        let mut previous_epoch = 0;
        if let Some(old_id) = self.stream_id(work, &stream) {
            if work.im.is_conv(&self.im, old_id) {
                work.replies.push(PendingReply::Value {
                    reply,
                    result: Err(StoreError::InvalidRequest {
                        reason: "a conversation's stream cannot be reset",
                    }),
                });
                return;
            }
            previous_epoch = self.stream_meta(work, old_id).map_or(0, |meta| meta.epoch);
            work.metas.remove(&old_id);
            work.removed.push(old_id);
            work.batch
                .remove(&self.fjall.meta, meta_id_key(META_PREFIX_STREAM, old_id));
            work.batch.insert(
                &self.fjall.meta,
                meta_id_key(META_PREFIX_DROPPED, old_id),
                [],
            );
        }
        let id = self.create_stream(work, &stream, previous_epoch);
        let epoch = work.metas.get(&id).map_or(0, |meta| meta.epoch);
        work.replies.push(PendingReply::Value {
            reply,
            result: Ok(epoch),
        });
    }
}
