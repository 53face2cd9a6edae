//! The limits that tie the crates together, defined once.
//!
//! A message id carries a 6-bit "shard" field (see [`crate::envelope::MessageId`]).
//! Every thread that issues ids needs its own value of that field, or two
//! of them can issue the same id in the same millisecond: the engine's
//! shards take `0..SHARDS_MAX`, the store's writer takes
//! [`ID_SHARD_STORE`], the control thread (HTTP API) takes
//! [`ID_SHARD_CONTROL`]. The shard count is therefore bounded by the id
//! layout, not by a number chosen elsewhere; the asserts below keep the
//! three from drifting apart again (they once allowed 63 shards, whose
//! last shard shared the store's field).

use crate::envelope::{MESSAGE_ID_NODE_COUNT, MESSAGE_ID_SHARD_COUNT};

/// Message-id shard field of ids issued by the store's writer thread.
pub const ID_SHARD_STORE: u8 = MESSAGE_ID_SHARD_COUNT - 2;
/// Message-id shard field of ids issued by the control thread (HTTP API).
pub const ID_SHARD_CONTROL: u8 = MESSAGE_ID_SHARD_COUNT - 1;
/// Most shards one engine process runs: every shard index is a message-id
/// shard field below the ones reserved for the store and the control thread.
pub const SHARDS_MAX: usize = ID_SHARD_STORE as usize;
/// Largest node id (`server.node_id`): the id's node field.
pub const NODE_ID_MAX: u8 = MESSAGE_ID_NODE_COUNT - 1;
/// Shards are numbered in a `u64` interest mask (one bit per shard).
pub const INTEREST_MASK_BITS: usize = u64::BITS as usize;

const _: () = assert!(ID_SHARD_STORE != ID_SHARD_CONTROL);
const _: () = assert!(SHARDS_MAX <= ID_SHARD_STORE as usize);
const _: () = assert!(SHARDS_MAX <= ID_SHARD_CONTROL as usize);
const _: () = assert!((ID_SHARD_CONTROL as usize) < MESSAGE_ID_SHARD_COUNT as usize);
const _: () = assert!(SHARDS_MAX <= INTEREST_MASK_BITS);
const _: () = assert!(SHARDS_MAX >= 1);

/// The id field a shard's ids carry; `None` for an index no shard may have.
pub fn id_shard_of(shard_idx: usize) -> Option<u8> {
    (shard_idx < SHARDS_MAX).then_some(shard_idx as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_field_is_distinct_from_the_reserved_ones() {
        for shard_idx in 0..SHARDS_MAX {
            let field = id_shard_of(shard_idx).expect("in range");
            assert_ne!(field, ID_SHARD_STORE, "shard {shard_idx}");
            assert_ne!(field, ID_SHARD_CONTROL, "shard {shard_idx}");
        }
        assert_eq!(id_shard_of(SHARDS_MAX), None);
    }

    #[test]
    fn the_last_shard_and_the_store_never_issue_the_same_id() {
        // Regression: with 63 shards, shard 62 used the store's field.
        use crate::envelope::MessageIdGen;
        let last = id_shard_of(SHARDS_MAX - 1).expect("in range");
        let mut shard_ids = MessageIdGen::new(0, last);
        let mut store_ids = MessageIdGen::new(0, ID_SHARD_STORE);
        let mut control_ids = MessageIdGen::new(0, ID_SHARD_CONTROL);
        let now = crate::envelope::MESSAGE_ID_EPOCH_UNIX_MS + 1_000;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1_000 {
            assert!(seen.insert(shard_ids.next(now).0));
            assert!(seen.insert(store_ids.next(now).0));
            assert!(seen.insert(control_ids.next(now).0));
        }
    }
}
