//! One shard's side of presence: which of its connections watch which
//! users, the offline deadlines of the users whose last connection closed
//! here, and its share of the idle list. Owned by the shard loop (no
//! locks); the node-wide state is the [`PresenceBook`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;

use super::book::{IdleList, PresenceBook, Snapshot};

pub struct ShardPresence {
    /// user → the local connections watching it, each with the number of
    /// the last change it was told of.
    by_user: HashMap<Rc<str>, Vec<Watcher>>,
    /// connection slot → the users it watches.
    by_conn: HashMap<usize, HashSet<Rc<str>>>,
    /// Offline deadlines of users whose last connection closed on this
    /// shard, oldest first (the grace is the same for all, so pushed in
    /// order).
    due: VecDeque<(u64, Box<str>)>,
    pub idle: IdleList,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Watcher {
    key: usize,
    seq: u64,
}

/// Why a watch was refused: the connection would watch more than this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLimit {
    pub max: usize,
}

impl ShardPresence {
    pub fn new(idle_max: usize) -> ShardPresence {
        ShardPresence {
            by_user: HashMap::new(),
            by_conn: HashMap::new(),
            due: VecDeque::new(),
            idle: IdleList::new(idle_max),
        }
    }

    /// Connection `key` watches `users` (distinct, checked ids) from now
    /// on, all or none: refused when it would watch more than `max`.
    /// Returns each user's state now, in order.
    pub fn watch(
        &mut self,
        book: &PresenceBook,
        shard_idx: usize,
        key: usize,
        users: &[&str],
        max: usize,
    ) -> Result<Vec<Snapshot>, OverLimit> {
        let watched = self.by_conn.get(&key);
        let n_new = users
            .iter()
            .filter(|user| !watched.is_some_and(|set| set.contains(**user)))
            .count();
        if watched.map_or(0, HashSet::len) + n_new > max {
            return Err(OverLimit { max });
        }
        let mut snapshots = Vec::with_capacity(users.len());
        for &user in users {
            let user: Rc<str> = match self.by_user.get_key_value(user) {
                Some((user, _)) => user.clone(),
                None => user.into(),
            };
            let watchers = self.by_user.entry(user.clone()).or_default();
            // The shard's first watcher sets its bit in the book (so every
            // later change is sent here) and reads the state in that step;
            // the others read it after, with the bit already set.
            let snapshot = if watchers.is_empty() {
                book.watch(&user, shard_idx)
            } else {
                book.lookup(&user)
            };
            match watchers.iter_mut().find(|watcher| watcher.key == key) {
                // Already watched: a change in flight older than this
                // answer is not told again.
                Some(watcher) => watcher.seq = watcher.seq.max(snapshot.seq),
                None => {
                    watchers.push(Watcher {
                        key,
                        seq: snapshot.seq,
                    });
                    self.by_conn.entry(key).or_default().insert(user);
                }
            }
            snapshots.push(snapshot);
        }
        Ok(snapshots)
    }

    /// Connection `key` stops watching `users` (those it does not watch
    /// are ignored). Users now idle in the book go to the idle list.
    pub fn unwatch(&mut self, book: &PresenceBook, shard_idx: usize, key: usize, users: &[&str]) {
        let Some(set) = self.by_conn.get_mut(&key) else {
            return;
        };
        let removed: Vec<&str> = users
            .iter()
            .copied()
            .filter(|user| set.remove(*user))
            .collect();
        if set.is_empty() {
            self.by_conn.remove(&key);
        }
        for user in removed {
            self.remove_watcher(book, shard_idx, key, user);
        }
    }

    /// Connection `key` is going: it watches nothing any more.
    pub fn forget_conn(&mut self, book: &PresenceBook, shard_idx: usize, key: usize) {
        let Some(users) = self.by_conn.remove(&key) else {
            return;
        };
        for user in users {
            self.remove_watcher(book, shard_idx, key, &user);
        }
    }

    fn remove_watcher(&mut self, book: &PresenceBook, shard_idx: usize, key: usize, user: &str) {
        let Some(watchers) = self.by_user.get_mut(user) else {
            return;
        };
        watchers.retain(|watcher| watcher.key != key);
        if watchers.is_empty() {
            self.by_user.remove(user);
            if book.unwatch(user, shard_idx) {
                self.idle.push(book, user);
            }
        }
    }

    /// The local watchers of `user` to tell of `snapshot`: those told of
    /// an older change (each is marked as told).
    pub fn to_tell(&mut self, user: &str, snapshot: Snapshot) -> Vec<usize> {
        let Some(watchers) = self.by_user.get_mut(user) else {
            return Vec::new();
        };
        watchers
            .iter_mut()
            .filter(|watcher| watcher.seq < snapshot.seq)
            .map(|watcher| {
                watcher.seq = snapshot.seq;
                watcher.key
            })
            .collect()
    }

    /// The users some local connection watches.
    pub fn watched_users(&self) -> Vec<Rc<str>> {
        self.by_user.keys().cloned().collect()
    }

    /// How many users connection `key` watches.
    pub fn n_watched(&self, key: usize) -> usize {
        self.by_conn.get(&key).map_or(0, HashSet::len)
    }

    /// Remembers an offline deadline from `PresenceBook::closed`.
    pub fn offline_due(&mut self, user: &str, due_ms: u64) {
        self.due.push_back((due_ms, user.into()));
    }

    /// Takes the users whose offline deadline passed at `now_ms`.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<Box<str>> {
        let mut users = Vec::new();
        while self
            .due
            .front()
            .is_some_and(|(due_ms, _)| *due_ms <= now_ms)
        {
            if let Some((_, user)) = self.due.pop_front() {
                users.push(user);
            }
        }
        users
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_are_limited_per_connection_all_or_none() {
        let book = PresenceBook::new(1_000, 2);
        let mut local = ShardPresence::new(16);
        assert!(local.watch(&book, 0, 7, &["a", "b"], 3).is_ok());
        assert_eq!(
            local.watch(&book, 0, 7, &["a", "c", "d"], 3),
            Err(OverLimit { max: 3 }),
            "a is watched already; c and d make four"
        );
        assert_eq!(local.n_watched(7), 2, "nothing changed");
        assert!(local.watch(&book, 0, 7, &["b", "c"], 3).is_ok());
        assert_eq!(local.n_watched(7), 3);
        local.unwatch(&book, 0, 7, &["a", "zzz"]);
        assert_eq!(local.n_watched(7), 2);
        local.forget_conn(&book, 0, 7);
        assert_eq!(local.n_watched(7), 0);
        assert!(local.watched_users().is_empty());
        assert_eq!(local.idle.len(), 3, "a, b and c each queued once, idle");
    }

    #[test]
    fn each_watcher_is_told_each_change_once() {
        let book = PresenceBook::new(0, 1);
        let mut local = ShardPresence::new(16);
        local.watch(&book, 0, 1, &["bob"], 10).unwrap();
        let report = book.connected("bob").expect("online");
        local.watch(&book, 0, 2, &["bob"], 10).unwrap();
        // Slot 2 watched after the change: its answer already said online.
        assert_eq!(local.to_tell("bob", report.snapshot), vec![1]);
        assert!(
            local.to_tell("bob", report.snapshot).is_empty(),
            "told once"
        );
        let older = Snapshot {
            seq: 0,
            ..report.snapshot
        };
        assert!(
            local.to_tell("bob", older).is_empty(),
            "an older change is dropped"
        );
    }

    #[test]
    fn deadlines_come_due_in_order() {
        let mut local = ShardPresence::new(16);
        local.offline_due("a", 100);
        local.offline_due("b", 200);
        assert!(local.take_due(99).is_empty());
        assert_eq!(local.take_due(150), vec![Box::<str>::from("a")]);
        assert_eq!(local.take_due(1_000), vec![Box::<str>::from("b")]);
    }
}
