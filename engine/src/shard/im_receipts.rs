//! Read receipts in groups (`docs/im.md`, "Who receives what"): a
//! member's `read` of a group of at most `im.group_receipts_members_max`
//! members is told to the other members as `{"receipt":{conv, user,
//! read}}`, at most one per member per conversation per
//! [`GROUP_READ_RECEIPT_INTERVAL_MS`]: the first at once, later ones
//! within the interval folded into one with the newest position, sent
//! when the interval ends. The members are read on a store reader per
//! receipt sent (`Shard::push_group_receipt`), so a burst of reads costs
//! one read of the member table per interval, not one per read.
//!
//! Coalescing is per shard: a member reading on devices on two shards may
//! send two receipts in one interval. Receipts are ephemeral; `receipts`
//! answers the positions of a group of any size.

use std::collections::HashMap;

use ringcast_protocol::client::ImEvent;

use super::Shard;

/// Least time between two read receipts of one member in one group.
pub const GROUP_READ_RECEIPT_INTERVAL_MS: u64 = 500;

/// (group, member) pairs a shard remembers within their interval; past
/// it a receipt goes out at once, uncoalesced, rather than be dropped.
const READ_RECEIPTS_TRACKED_MAX: usize = 4096;

/// The receipts sent and waiting, per (group, member).
#[derive(Default)]
pub(super) struct ReadReceipts {
    slots: HashMap<(Box<str>, Box<str>), Slot>,
}

struct Slot {
    /// When the last receipt went out.
    sent_ms: u64,
    /// A newer position to send when the interval ends.
    waiting: Option<Waiting>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiting {
    read: u64,
    member_count: u32,
}

/// A receipt to send now.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Due {
    pub conv: String,
    pub user: String,
    pub read: u64,
    pub member_count: u32,
}

impl ReadReceipts {
    /// `user` read `conv` up to `read` at `now_ms`: whether its receipt
    /// goes out now; if not, it waits for [`ReadReceipts::take_due`],
    /// replacing any older one waiting.
    pub(super) fn offer(
        &mut self,
        conv: &str,
        user: &str,
        read: u64,
        member_count: u32,
        now_ms: u64,
    ) -> bool {
        let key = (Box::from(conv), Box::from(user));
        match self.slots.get_mut(&key) {
            Some(slot) if now_ms < slot.sent_ms.saturating_add(GROUP_READ_RECEIPT_INTERVAL_MS) => {
                let newer = slot.waiting.is_none_or(|waiting| read >= waiting.read);
                if newer {
                    slot.waiting = Some(Waiting { read, member_count });
                }
                false
            }
            Some(slot) => {
                slot.sent_ms = now_ms;
                slot.waiting = None;
                true
            }
            None => {
                if self.slots.len() < READ_RECEIPTS_TRACKED_MAX {
                    let slot = Slot {
                        sent_ms: now_ms,
                        waiting: None,
                    };
                    self.slots.insert(key, slot);
                }
                true
            }
        }
    }

    /// The waiting receipts whose interval ended by `now_ms`; pairs with
    /// nothing waiting and an ended interval are forgotten.
    pub(super) fn take_due(&mut self, now_ms: u64) -> Vec<Due> {
        let mut due = Vec::new();
        if self.slots.is_empty() {
            return due;
        }
        self.slots.retain(|(conv, user), slot| {
            if now_ms < slot.sent_ms.saturating_add(GROUP_READ_RECEIPT_INTERVAL_MS) {
                return true;
            }
            match slot.waiting.take() {
                Some(waiting) => {
                    slot.sent_ms = now_ms;
                    due.push(Due {
                        conv: conv.to_string(),
                        user: user.to_string(),
                        read: waiting.read,
                        member_count: waiting.member_count,
                    });
                    true
                }
                None => false,
            }
        });
        due
    }
}

impl Shard {
    /// `user` read group `conv` (of `member_count` members) up to `read`:
    /// its receipt to the other members, now or when its interval ends.
    pub(super) fn group_read_receipt(
        &mut self,
        conv: &str,
        user: &str,
        read: u64,
        member_count: u32,
    ) {
        let max = self.shared.config.im.group_receipts_members_max;
        if max == 0 || member_count > max {
            return;
        }
        let now_ms = self.now_ms;
        if self
            .im
            .read_receipts
            .offer(conv, user, read, member_count, now_ms)
        {
            self.push_read_receipt(conv, user, read, member_count);
        }
    }

    /// Sends the read receipts whose interval ended (the sweep tick).
    pub(super) fn read_receipts_tick(&mut self) {
        for due in self.im.read_receipts.take_due(self.now_ms) {
            self.push_read_receipt(&due.conv, &due.user, due.read, due.member_count);
        }
    }

    fn push_read_receipt(&mut self, conv: &str, user: &str, read: u64, member_count: u32) {
        let event = ImEvent::Receipt {
            conv: conv.to_owned(),
            user: user.to_owned(),
            read,
        };
        self.push_group_receipt(conv, member_count, &event, user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = GROUP_READ_RECEIPT_INTERVAL_MS;

    #[test]
    fn the_first_read_goes_at_once_later_ones_fold_into_one_at_the_interval_end() {
        let mut receipts = ReadReceipts::default();
        assert!(receipts.offer("grp:a", "u", 3, 5, 1000));
        assert!(!receipts.offer("grp:a", "u", 4, 5, 1100));
        assert!(!receipts.offer("grp:a", "u", 7, 5, 1200));
        // An older position never replaces a newer one waiting.
        assert!(!receipts.offer("grp:a", "u", 6, 5, 1300));
        // Another member and another group have their own intervals.
        assert!(receipts.offer("grp:a", "v", 7, 5, 1300));
        assert!(receipts.offer("grp:b", "u", 1, 2, 1300));
        assert_eq!(receipts.take_due(1000 + T - 1), Vec::new());
        assert_eq!(
            receipts.take_due(1000 + T),
            vec![Due {
                conv: "grp:a".to_owned(),
                user: "u".to_owned(),
                read: 7,
                member_count: 5,
            }]
        );
        // The folded receipt started a new interval.
        assert!(!receipts.offer("grp:a", "u", 8, 5, 1000 + T + 10));
        assert_eq!(receipts.take_due(1000 + 2 * T).len(), 1);
        // Nothing waiting: forgotten, and the next read goes at once.
        assert!(receipts.take_due(1000 + 4 * T).is_empty());
        assert!(receipts.slots.is_empty());
        assert!(receipts.offer("grp:a", "u", 9, 5, 1000 + 4 * T));
    }

    #[test]
    fn past_the_tracked_cap_receipts_go_at_once() {
        let mut receipts = ReadReceipts::default();
        for n in 0..READ_RECEIPTS_TRACKED_MAX {
            assert!(receipts.offer("grp:a", &format!("u{n}"), 1, 2, 0));
        }
        assert!(receipts.offer("grp:a", "late", 1, 2, 0));
        assert!(
            receipts.offer("grp:a", "late", 2, 2, 1),
            "not tracked: never held"
        );
        assert_eq!(receipts.slots.len(), READ_RECEIPTS_TRACKED_MAX);
    }
}
