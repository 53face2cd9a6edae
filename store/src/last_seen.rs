//! Each user's last seen: the time its last connection closed, as the
//! engine's presence book reported it offline (after the grace). One key
//! per user in the `last_seen` keyspace (value the Unix ms, u64 BE), so a
//! restarted node answers presence queries with it before the user comes
//! back.
//!
//! **Cost.** The engine sends one write per offline report (one per user
//! per offline transition, never per message); the writer folds them into
//! its ordinary batches, one key write per user per batch however many
//! reports the batch holds, with the batch's durability (so a crash may
//! lose the last batch's values: the user then reads an older last seen).
//!
//! **Never backwards.** A batch writes a user's value only when it is
//! above the stored one, so reports that reach the writer out of order
//! (shards submit them independently) never move a last seen back.

use std::collections::HashMap;

use fjall::{OwnedWriteBatch, Readable};

use crate::error::StoreError;
use crate::keys::read_u64;
use crate::recovery::Fjall;

/// The last-seen part of one group commit: the latest time per user.
#[derive(Debug, Default)]
pub(crate) struct LastSeenBatch {
    latest: HashMap<String, u64>,
}

impl LastSeenBatch {
    /// `user` was last seen at `ms`; the batch keeps the latest per user.
    pub(crate) fn stage(&mut self, user: String, ms: u64) {
        let latest = self.latest.entry(user).or_insert(0);
        *latest = (*latest).max(ms);
    }

    /// Writes each user's time unless the stored one is as late.
    pub(crate) fn finish(&mut self, fjall: &Fjall, batch: &mut OwnedWriteBatch) {
        for (user, ms) in self.latest.drain() {
            let stored = match fjall.last_seen.get(&user) {
                Ok(value) => value.and_then(|value| read_u64(&value, 0)).unwrap_or(0),
                Err(error) => {
                    // Not written: a last seen is a hint, and writing
                    // blind could move it back.
                    tracing::error!(%error, "last seen: reading the stored value failed");
                    continue;
                }
            };
            if ms > stored {
                batch.insert(&fjall.last_seen, user.as_str(), ms.to_be_bytes());
            }
        }
    }
}

/// Each of `users`' stored last seen (0: none), in order.
pub(crate) fn read_last_seen(fjall: &Fjall, users: &[String]) -> Result<Vec<u64>, StoreError> {
    let snapshot = fjall.db.snapshot();
    users
        .iter()
        .map(|user| {
            snapshot
                .get(&fjall.last_seen, user)
                .map(|value| value.and_then(|value| read_u64(&value, 0)).unwrap_or(0))
                .map_err(|error| StoreError::io("reading last seen", error))
        })
        .collect()
}
