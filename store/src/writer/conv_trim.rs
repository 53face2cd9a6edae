//! What retention's trim of a conversation changes beside its entries
//! (`docs/im.md`, "Unread counts"): in the trim's batch, the record's
//! `trimmed_count` (the count below the first kept offset: unread is
//! floored at what retention kept), its last message when that was
//! trimmed, and each DM user's unread total (`im_unread`) by the unread
//! messages the trim took. A group's users need no write: their unread is
//! computed at each read from the record.

use fjall::OwnedWriteBatch;

use super::Writer;
use crate::error::StoreError;
use crate::im::{corrupt, decode_dm_unread, ImBatch};
use crate::keys::{im_uconv_key, ConvRecord, UConvRecord};

impl Writer {
    /// Stages into `batch` what trimming conversation `id` to `first`
    /// changes; `recalled` are the recalls the trim deletes (offset,
    /// whether the message counted). Reads only: nothing is staged when a
    /// read fails.
    pub(super) fn stage_conv_trim(
        &self,
        batch: &mut OwnedWriteBatch,
        id: u64,
        first: u64,
        recalled: &[(u64, bool)],
    ) -> Result<(), StoreError> {
        let io = |error| StoreError::io("trimming a conversation", error);
        let Some(stored) = self.fjall.im_conv.get(id.to_be_bytes()).map_err(io)? else {
            return Ok(());
        };
        let mut record = ConvRecord::decode(&stored).map_err(|reason| corrupt("", reason))?;
        let kept_base = ImBatch::new(&self.im)
            .count_at(&self.fjall, id, &record, first.saturating_sub(1))?
            .max(record.trimmed_count);
        let mut totals = Vec::new();
        if record.group.is_none() {
            let (a, b) = &record.pair;
            let users: &[&String] = if a == b { &[a] } else { &[a, b] };
            for user in users {
                let view = match self
                    .fjall
                    .im_uconv
                    .get(im_uconv_key(user, id))
                    .map_err(io)?
                {
                    Some(bytes) => {
                        Some(UConvRecord::decode(&bytes).map_err(|reason| corrupt("", reason))?)
                    }
                    None => None,
                };
                let (read_offset, read_count) =
                    view.map_or((0, 0), |view| (view.read_offset, view.read_count));
                // The counted messages the trim takes above the user's
                // position, less those recalled (a recall took them off
                // the total already).
                let taken = kept_base.saturating_sub(record.counted_read(read_count));
                let taken_recalled = recalled
                    .iter()
                    .filter(|(offset, counted)| *counted && *offset > read_offset)
                    .count() as u64;
                let unread_taken = taken.saturating_sub(taken_recalled);
                if unread_taken > 0 {
                    let total = self.fjall.im_unread.get(user.as_bytes()).map_err(io)?;
                    let total = decode_dm_unread(total)?.saturating_sub(unread_taken);
                    totals.push(((*user).clone(), total));
                }
            }
        }
        record.trimmed_count = kept_base;
        if record.last_msg_offset < first {
            // Nothing of the last message is left to show.
            record.last_msg_offset = 0;
        }
        for (user, total) in totals {
            batch.insert(&self.fjall.im_unread, user.as_bytes(), total.to_be_bytes());
        }
        batch.insert(&self.fjall.im_conv, id.to_be_bytes(), record.encode());
        Ok(())
    }
}
