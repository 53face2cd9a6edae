//! What retention's trim of a conversation changes beside its entries
//! (`docs/im.md`, "Unread counts"): in the trim's batch, the record's
//! `trimmed_count` (the count below the first kept offset: unread is
//! floored at what retention kept), its last message when that was
//! trimmed, and each DM user's unread total (`im_unread`) by the unread
//! messages the trim took. A group's users need no write: their unread is
//! computed at each read from the record.
//!
//! The records are read and staged through an [`ImBatch`], as a request's
//! are, so the writer's cache of them (`im/cache.rs`) sees the trim once
//! fjall accepted it ([`ImBatch::apply`]) and is dropped with a trim that
//! failed.

use fjall::OwnedWriteBatch;

use super::Writer;
use crate::error::StoreError;
use crate::im::ImBatch;

impl Writer {
    /// Stages into `batch` what trimming conversation `id` to `first`
    /// changes; `recalled` are the recalls the trim deletes (offset,
    /// whether the message counted). Returns the IM part to apply once
    /// the batch is committed; nothing is staged when a read fails.
    pub(super) fn stage_conv_trim(
        &mut self,
        batch: &mut OwnedWriteBatch,
        id: u64,
        first: u64,
        recalled: &[(u64, bool)],
    ) -> Result<ImBatch, StoreError> {
        let mut im = ImBatch::new(&mut self.im);
        let Some(mut record) = im.conv(&self.fjall, &self.im, id, "")? else {
            return Ok(im);
        };
        let stored_time_ms = record.last_time_ms;
        let kept_base = im
            .count_at(&self.fjall, id, &record, first.saturating_sub(1))?
            .max(record.trimmed_count);
        if record.group.is_none() {
            let (a, b) = record.pair.clone();
            let users = if a == b { vec![a] } else { vec![a, b] };
            for user in &users {
                let (read_offset, read_count) = im
                    .uconv(&self.fjall, user, id)?
                    .map_or((0, 0), |view| (view.read_offset, view.read_count));
                // The counted messages the trim takes above the user's
                // position, less those recalled (a recall took them off
                // the total already).
                let taken = kept_base.saturating_sub(record.counted_read(read_count));
                let taken_recalled = recalled
                    .iter()
                    .filter(|(offset, counted)| *counted && *offset > read_offset)
                    .count() as u64;
                let unread_taken = taken.saturating_sub(taken_recalled);
                im.load_dm_unread(&self.fjall, user)?;
                im.add_dm_unread(user, -i64::try_from(unread_taken).unwrap_or(i64::MAX));
            }
        }
        record.trimmed_count = kept_base;
        if record.last_msg_offset < first {
            // Nothing of the last message is left to show.
            record.last_msg_offset = 0;
        }
        im.put_conv(id, Some(stored_time_ms), record);
        im.finish(&self.fjall, batch, &self.im);
        Ok(im)
    }
}
