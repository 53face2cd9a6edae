//! `echo: false` (`docs/im.md`, "Who receives what"): the sending
//! connection does not get the push of its own message.
//!
//! The store keeps the message id a conversation entry's sender gave it
//! (`Writer::stage_entry`), so the shard knows its message's push by that
//! id before the store answers, and the connection drops exactly that push
//! whenever it comes, before or after the reply. Every other push of the
//! conversation goes out as it arrives: nothing is held (review finding 5:
//! holding a conversation's pushes while a send was in flight stalled a
//! busy conversation and closed the connection after 1,024 held).

use std::collections::HashMap;

use super::commands::ReplyTo;

/// Own messages a connection waits to drop at once; past it an
/// `echo: false` send is echoed like any other (the client sees its own
/// message, as its other devices do), so the list stays bounded (a scan per push to that connection).
const ECHO_SKIPS_MAX: usize = 1024;

/// The `echo: false` sends of a shard's connections.
#[derive(Default)]
pub(super) struct Echoes {
    by_conn: HashMap<usize, Skips>,
}

/// One connection's own messages whose push it drops.
struct Skips {
    client_id: u64,
    message_ids: Vec<u64>,
}

impl Echoes {
    /// Connection `to` sends message `message_id` with `echo: false`;
    /// `false` when it has too many such sends waiting (then it is echoed).
    pub(super) fn start(&mut self, to: ReplyTo, message_id: u64) -> bool {
        let skips = self.by_conn.entry(to.key).or_insert_with(|| Skips {
            client_id: to.client_id,
            message_ids: Vec::new(),
        });
        if skips.client_id != to.client_id {
            // The slot's previous connection left its list behind.
            skips.client_id = to.client_id;
            skips.message_ids.clear();
        }
        if skips.message_ids.len() >= ECHO_SKIPS_MAX {
            return false;
        }
        skips.message_ids.push(message_id);
        true
    }

    /// The send of `message_id` was answered: `stored` if it stored a new
    /// entry, whose push came already or is on its way. Otherwise (a
    /// refusal, a retry answered with its original) no push of that id
    /// comes: the id is forgotten.
    pub(super) fn answered(&mut self, to: ReplyTo, message_id: u64, stored: bool) {
        if stored {
            return;
        }
        self.drop_id(to.key, to.client_id, message_id);
    }

    /// Whether the push of `message_id` to connection `key` (now
    /// `client_id`) is its own `echo: false` message: then it is dropped,
    /// and forgotten.
    pub(super) fn take(&mut self, key: usize, client_id: u64, message_id: u64) -> bool {
        self.drop_id(key, client_id, message_id)
    }

    /// Whether any connection of the shard waits to drop a push.
    pub(super) fn is_empty(&self) -> bool {
        self.by_conn.is_empty()
    }

    /// Connection `key` closed.
    pub(super) fn forget(&mut self, key: usize) {
        self.by_conn.remove(&key);
    }

    fn drop_id(&mut self, key: usize, client_id: u64, message_id: u64) -> bool {
        let Some(skips) = self.by_conn.get_mut(&key) else {
            return false;
        };
        if skips.client_id != client_id {
            return false;
        }
        let Some(index) = skips.message_ids.iter().position(|id| *id == message_id) else {
            return false;
        };
        skips.message_ids.swap_remove(index);
        if skips.message_ids.is_empty() {
            self.by_conn.remove(&key);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(key: usize, client_id: u64) -> ReplyTo {
        ReplyTo {
            key,
            client_id,
            id: 1,
        }
    }

    #[test]
    fn a_push_is_dropped_once_by_its_id_before_or_after_the_reply() {
        let mut echoes = Echoes::default();
        assert!(echoes.start(to(3, 30), 100));
        assert!(echoes.start(to(3, 30), 101));
        // Another connection, or the slot's next one, keeps its pushes.
        assert!(!echoes.take(4, 40, 100));
        assert!(!echoes.take(3, 31, 100));
        // Before the reply: dropped once.
        assert!(echoes.take(3, 30, 100));
        assert!(!echoes.take(3, 30, 100));
        echoes.answered(to(3, 30), 100, true);
        // After the reply: still dropped when it comes.
        echoes.answered(to(3, 30), 101, true);
        assert!(echoes.take(3, 30, 101));
        assert!(echoes.is_empty());
        // A refused send's id is forgotten.
        assert!(echoes.start(to(3, 30), 102));
        echoes.answered(to(3, 30), 102, false);
        assert!(echoes.is_empty());
    }

    #[test]
    fn past_the_cap_a_send_is_echoed() {
        let mut echoes = Echoes::default();
        for id in 0..ECHO_SKIPS_MAX as u64 {
            assert!(echoes.start(to(1, 1), id));
        }
        assert!(!echoes.start(to(1, 1), u64::MAX));
        assert!(!echoes.take(1, 1, u64::MAX));
        echoes.forget(1);
        assert!(echoes.is_empty());
    }
}
