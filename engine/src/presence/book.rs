//! The node's presence book: which users are online, since when the others
//! were last seen, and which shards watch each user. Sans-IO: the inputs
//! that depend on time take the caller's clock (`now_ms`), so the flap
//! damping is tested on a virtual clock (`tests` below).
//!
//! **State.** One entry per user in a lock-free map (papaya, as
//! [`crate::interest::Interest`]): the node-wide count of the user's open
//! connections, what watchers were last told (online, or offline with a
//! last-seen time), a pending offline deadline, a sequence number of the
//! reported changes and the mask of shards with watchers. Every change is
//! one atomic step on the entry (`compute`), so two shards changing one
//! user at once are ordered, and each step says exactly which watchers to
//! tell; no shard ever waits on a lock.
//!
//! **Flap damping.** When a user's last connection closes, the entry keeps
//! `online` and gets a deadline `presence_offline_grace_ms` later; the
//! shard where it closed remembers the deadline and calls
//! [`PresenceBook::expire`] when it passes. A connection opened before that
//! clears the deadline, so watchers are never told anything. A stale
//! deadline (the user came back and left again) finds a later one in the
//! entry and does nothing.
//!
//! **Order.** Reported changes of one user are numbered (`seq`) inside the
//! atomic step. A shard delivering a change to its watchers drops one not
//! newer than what a watcher already has, so changes that crossed the mesh
//! from two shards in either order still leave every watcher on the latest
//! state.
//!
//! **Memory.** An entry lives while the user has a connection, a pending
//! offline or a watcher. Past that it is *idle* (offline, last seen known,
//! nobody watching); idle entries are what remembers last-seen times, and
//! the shard that made an entry idle queues it in its own bounded list
//! ([`IdleList`]). A shard's list past its share of
//! [`PRESENCE_IDLE_USERS_MAX`](crate::limits::PRESENCE_IDLE_USERS_MAX)
//! forgets its oldest entry (if still idle), so idle entries never exceed
//! that bound node-wide: an idle entry is always in the list of the shard
//! that made it idle.
//!
//! **The cluster seam.** This book is the node's only source of presence:
//! shards ask it ([`lookup`](PresenceBook::lookup),
//! [`watch`](PresenceBook::watch), [`unwatch`](PresenceBook::unwatch)) and
//! deliver what its steps report ([`Report`]). A cluster (issue 14) keeps
//! this interface and adds one input: other nodes' connection counts per
//! user, applied as steps on the same entry by the thread that receives
//! them (a mesh producer, as the store's sink is), which then sends the
//! reports to the watching shards exactly as a shard does. `devices` becomes
//! the sum over nodes; nothing on the shards changes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ringcast_protocol::client::PresenceState;

use crate::interest::SHARDS_MAX;

pub struct PresenceBook {
    users: papaya::HashMap<Box<str>, Entry>,
    grace_ms: u64,
    /// Per shard: a change could not be handed to it (its mesh lane was
    /// full); it reads its watched users' states again.
    resync: Box<[AtomicBool]>,
    /// Reported changes that could not be handed to a shard.
    changes_lost: AtomicU64,
    /// In a cluster: told when the node's first watcher of a user comes or
    /// its last one goes (the cluster reads which).
    cluster: Option<std::sync::Arc<crate::cluster::Cluster>>,
}

/// What a change of a user's remote nodes asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteStep {
    /// Tell the watching shards.
    Report(Report),
    /// The user is nowhere now: call [`PresenceBook::expire`] at `due_ms`.
    OfflineAt { due_ms: u64 },
}

/// A user's presence as the book knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub online: bool,
    /// When the last connection closed (Unix ms); 0 when unknown or online.
    pub last_seen_ms: u64,
    /// The number of the last reported change (0: none since start).
    pub seq: u64,
}

/// A change watchers must be told of: the new state and the shards that
/// watch the user, read in the same atomic step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub snapshot: Snapshot,
    pub watch_mask: u64,
}

/// What closing a user's connection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Other connections of the user remain.
    StillOnline,
    /// The last one closed: call [`PresenceBook::expire`] at `due_ms`.
    OfflineAt { due_ms: u64 },
    /// The last one closed and there is no grace: reported now. `idle`:
    /// nobody watches (the caller queues it in its [`IdleList`]).
    Reported { report: Report, idle: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Entry {
    /// The user's open connections on this node.
    devices: u32,
    /// In a cluster: the other nodes holding a connection of the user, as
    /// its inbox partition's owner last said (kept only while watched).
    remote_nodes: u64,
    /// What watchers were last told.
    online: bool,
    last_seen_ms: u64,
    /// When a pending offline is due; 0 when none is.
    offline_due_ms: u64,
    seq: u64,
    /// Shards with at least one watcher of the user.
    watch_mask: u64,
}

impl Entry {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            online: self.online,
            last_seen_ms: if self.online { 0 } else { self.last_seen_ms },
            seq: self.seq,
        }
    }

    fn report(&self) -> Report {
        Report {
            snapshot: self.snapshot(),
            watch_mask: self.watch_mask,
        }
    }

    /// Kept only for its last-seen time: the idle list may forget it.
    fn is_idle(&self) -> bool {
        self.devices == 0
            && self.remote_nodes == 0
            && self.offline_due_ms == 0
            && self.watch_mask == 0
    }

    /// Some node, this one or another, holds a connection of the user.
    fn connected_somewhere(&self) -> bool {
        self.devices > 0 || self.remote_nodes != 0
    }
}

impl Snapshot {
    /// Offline with no last seen: the book has not seen the user leave
    /// since start (or forgot it); the store may know when it did.
    pub fn last_seen_unknown(&self) -> bool {
        !self.online && self.last_seen_ms == 0
    }

    pub fn state(&self, user: &str) -> PresenceState {
        PresenceState {
            user: user.to_owned(),
            online: self.online,
            last_seen_ms: self.last_seen_ms,
        }
    }
}

impl PresenceBook {
    pub fn new(grace_ms: u64, n_shards: usize) -> PresenceBook {
        assert!(n_shards > 0 && n_shards <= SHARDS_MAX);
        PresenceBook {
            users: papaya::HashMap::new(),
            grace_ms,
            resync: (0..n_shards).map(|_| AtomicBool::new(false)).collect(),
            changes_lost: AtomicU64::new(0),
            cluster: None,
        }
    }

    /// The book of a cluster node: its watches are told to the cluster.
    pub fn with_cluster(
        mut self,
        cluster: Option<std::sync::Arc<crate::cluster::Cluster>>,
    ) -> Self {
        self.cluster = cluster;
        self
    }

    /// A connection of `user` opened. Reports `online` when watchers were
    /// last told `offline` (or nothing); a reconnect within the grace
    /// reports nothing.
    pub fn connected(&self, user: &str) -> Option<Report> {
        self.update(user, |entry| {
            let mut next = *entry;
            next.devices = next.devices.saturating_add(1);
            next.offline_due_ms = 0;
            if next.online {
                return (next, None);
            }
            next.online = true;
            next.seq += 1;
            (next, Some(next.report()))
        })
    }

    /// A connection of `user` closed.
    pub fn closed(&self, user: &str, now_ms: u64) -> Closed {
        let grace_ms = self.grace_ms;
        self.update(user, |entry| {
            let mut next = *entry;
            next.devices = next.devices.saturating_sub(1);
            if next.connected_somewhere() {
                return (next, Closed::StillOnline);
            }
            next.last_seen_ms = now_ms;
            if grace_ms > 0 && next.online {
                // At least 1: 0 means "none pending".
                next.offline_due_ms = now_ms.saturating_add(grace_ms).max(1);
                return (
                    next,
                    Closed::OfflineAt {
                        due_ms: next.offline_due_ms,
                    },
                );
            }
            next.offline_due_ms = 0;
            next.online = false;
            next.seq += 1;
            let idle = next.is_idle();
            (
                next,
                Closed::Reported {
                    report: next.report(),
                    idle,
                },
            )
        })
    }

    /// A deadline from [`Closed::OfflineAt`] passed: reports `offline`
    /// unless the user came back since (or left again later, with a later
    /// deadline). The `bool` says the entry is idle now.
    pub fn expire(&self, user: &str, now_ms: u64) -> Option<(Report, bool)> {
        let map = self.users.pin();
        let mut out = None;
        let _ = map.compute(user.into(), |found| {
            out = None;
            let Some((_, entry)) = found else {
                return papaya::Operation::Abort(());
            };
            let due = entry.offline_due_ms;
            if entry.connected_somewhere() || due == 0 || due > now_ms {
                return papaya::Operation::Abort(());
            }
            let mut next = *entry;
            next.offline_due_ms = 0;
            next.online = false;
            next.seq += 1;
            out = Some((next.report(), next.is_idle()));
            papaya::Operation::Insert(next)
        });
        out
    }

    /// Shard `shard_idx` has its first watcher of `user`: it is told of
    /// every change after this step, and this step's state is the one to
    /// answer with. In a cluster the node's first watcher of a user also
    /// asks the user's inbox owner for the other nodes' connections.
    pub fn watch(&self, user: &str, shard_idx: usize) -> Snapshot {
        assert!(shard_idx < self.resync.len());
        let bit = 1u64 << shard_idx;
        let (snapshot, first) = self.update(user, |entry| {
            let mut next = *entry;
            next.watch_mask |= bit;
            (next, (next.snapshot(), entry.watch_mask == 0))
        });
        if first {
            self.watch_changed(user);
        }
        snapshot
    }

    /// Whether some shard of the node watches `user`.
    pub fn is_watched(&self, user: &str) -> bool {
        self.users
            .pin()
            .get(user)
            .is_some_and(|entry| entry.watch_mask != 0)
    }

    fn watch_changed(&self, user: &str) {
        if let Some(cluster) = &self.cluster {
            cluster.watch_changed(user);
        }
    }

    /// In a cluster: the other nodes holding a connection of a watched
    /// `user` are now `nodes` (the owner's word, or a node found dead). A
    /// change between "somewhere" and "nowhere" is reported as a local
    /// one is, the flap damping included: `Closed::OfflineAt` asks the
    /// caller to call [`PresenceBook::expire`] at its deadline. Ignored for
    /// a user nobody here watches (the book keeps no remote state then).
    pub fn set_remote(&self, user: &str, nodes: u64, now_ms: u64) -> Option<RemoteStep> {
        if !self.is_watched(user) {
            return None;
        }
        let grace_ms = self.grace_ms;
        self.update(user, |entry| {
            let mut next = *entry;
            next.remote_nodes = nodes;
            if next.watch_mask == 0 {
                next.remote_nodes = 0;
                return (next, None);
            }
            if next.connected_somewhere() {
                next.offline_due_ms = 0;
                if next.online {
                    return (next, None);
                }
                next.online = true;
                next.seq += 1;
                return (next, Some(RemoteStep::Report(next.report())));
            }
            if !entry.connected_somewhere() || !next.online {
                return (next, None);
            }
            next.last_seen_ms = now_ms;
            if grace_ms > 0 {
                next.offline_due_ms = now_ms.saturating_add(grace_ms).max(1);
                return (
                    next,
                    Some(RemoteStep::OfflineAt {
                        due_ms: next.offline_due_ms,
                    }),
                );
            }
            next.online = false;
            next.seq += 1;
            (next, Some(RemoteStep::Report(next.report())))
        })
    }

    /// Every user some shard of the node watches.
    pub fn watched_users(&self, mut f: impl FnMut(&str)) {
        for (user, entry) in self.users.pin().iter() {
            if entry.watch_mask != 0 {
                f(user);
            }
        }
    }

    /// The users whose remote nodes include one of `nodes` (found dead):
    /// the caller sets each again without them.
    pub fn remote_users_of(&self, nodes: u64) -> Vec<(Box<str>, u64)> {
        self.users
            .pin()
            .iter()
            .filter(|(_, entry)| entry.remote_nodes & nodes != 0)
            .map(|(user, entry)| (user.clone(), entry.remote_nodes & !nodes))
            .collect()
    }

    /// Shard `shard_idx` has no watcher of `user` left. Returns whether
    /// the entry is idle now (the caller queues it in its [`IdleList`]).
    pub fn unwatch(&self, user: &str, shard_idx: usize) -> bool {
        assert!(shard_idx < self.resync.len());
        let bit = 1u64 << shard_idx;
        let map = self.users.pin();
        let mut idle = false;
        let mut unwatched = false;
        let _ = map.compute(user.into(), |found| {
            idle = false;
            unwatched = false;
            let Some((_, entry)) = found else {
                return papaya::Operation::Abort(());
            };
            let mut next = *entry;
            next.watch_mask &= !bit;
            if next.watch_mask == 0 && next.remote_nodes != 0 {
                // Remote state is kept only while watched: without it the
                // user is online only for its own connections here.
                next.remote_nodes = 0;
                if next.devices == 0 && next.online {
                    next.online = false;
                    next.offline_due_ms = 0;
                    next.seq += 1;
                }
            }
            // Idle entries go through the idle list even when they hold no
            // last seen (never seen since start): removing at once would
            // make a watch/unwatch loop remove and re-insert one key, and
            // papaya's tombstones make that cost grow with every cycle
            // (`benches/benches/presence.rs`).
            idle = next.is_idle();
            unwatched = next.watch_mask == 0 && entry.watch_mask != 0;
            papaya::Operation::Insert(next)
        });
        if unwatched {
            self.watch_changed(user);
        }
        idle
    }

    /// `user`'s state now; a user the book does not hold is offline, last
    /// seen unknown.
    pub fn lookup(&self, user: &str) -> Snapshot {
        self.users
            .pin()
            .get(user)
            .map(Entry::snapshot)
            .unwrap_or_default()
    }

    /// Gives `user`'s entry, if the book holds one, the last seen the store
    /// kept, unless the entry knows better (online, or seen leaving since
    /// start). Never creates an entry: the idle list bounds those.
    pub fn seed_last_seen(&self, user: &str, last_seen_ms: u64) {
        let map = self.users.pin();
        let _ = map.compute(user.into(), |found| match found {
            Some((_, entry)) if !entry.online && entry.last_seen_ms == 0 => {
                let mut next = *entry;
                next.last_seen_ms = last_seen_ms;
                papaya::Operation::Insert(next)
            }
            _ => papaya::Operation::Abort(()),
        });
    }

    /// Removes `user`'s entry if it is still idle (the idle list's oldest).
    pub fn forget_if_idle(&self, user: &str) -> bool {
        let map = self.users.pin();
        let result = map.compute(user.into(), |found| match found {
            Some((_, entry)) if entry.is_idle() => papaya::Operation::Remove,
            _ => papaya::Operation::Abort(()),
        });
        matches!(result, papaya::Compute::Removed(..))
    }

    /// The state of each of `users` now (`presence_query`, the API).
    pub fn states(&self, users: &[&str]) -> Vec<PresenceState> {
        users
            .iter()
            .map(|user| self.lookup(user).state(user))
            .collect()
    }

    /// Users the book holds an entry for.
    pub fn n_users(&self) -> usize {
        self.users.len()
    }

    /// Marks shard `shard_idx` as having missed a change (its lane was full).
    pub fn mark_resync(&self, shard_idx: usize) {
        self.changes_lost.fetch_add(1, Ordering::Relaxed);
        if let Some(flag) = self.resync.get(shard_idx) {
            flag.store(true, Ordering::Release);
        }
    }

    /// Whether shard `shard_idx` missed a change since the last call
    /// (clears the mark).
    pub fn take_resync(&self, shard_idx: usize) -> bool {
        self.resync
            .get(shard_idx)
            .is_some_and(|flag| flag.load(Ordering::Relaxed) && flag.swap(false, Ordering::AcqRel))
    }

    /// Changes that could not be handed to some shard (each answered by a
    /// resync of that shard).
    pub fn changes_lost(&self) -> u64 {
        self.changes_lost.load(Ordering::Relaxed)
    }

    /// One atomic step on `user`'s entry, created (idle, unknown) first if
    /// absent. As in `Interest::add`, an absent key gets a placeholder and
    /// the step runs as an update: papaya may reuse the first result of an
    /// insert into an absent key after losing a race, and `step` must see
    /// the entry it replaces.
    fn update<T>(&self, user: &str, step: impl Fn(&Entry) -> (Entry, T)) -> T {
        let map = self.users.pin();
        loop {
            let mut out = None;
            let result = map.compute(user.into(), |found| match found {
                Some((_, entry)) => {
                    let (next, value) = step(entry);
                    out = Some(value);
                    papaya::Operation::Insert(next)
                }
                None => papaya::Operation::Abort(()),
            });
            match (result, out) {
                (papaya::Compute::Updated { .. }, Some(value)) => return value,
                _ => drop(map.try_insert(user.into(), Entry::default())),
            }
        }
    }
}

/// The users a presence request names, each once, in order; `Err` holds
/// the first that is not a user id.
pub fn distinct_users(users: &[String]) -> Result<Vec<&str>, &str> {
    let mut seen = std::collections::HashSet::with_capacity(users.len());
    let mut distinct = Vec::with_capacity(users.len());
    for user in users {
        if crate::channels::validate_user_id(user).is_err() {
            return Err(user);
        }
        if seen.insert(user.as_str()) {
            distinct.push(user.as_str());
        }
    }
    Ok(distinct)
}

/// The states to answer with: `users[i]` is in `snapshots[i]`.
pub fn states(users: &[&str], snapshots: &[Snapshot]) -> Vec<PresenceState> {
    users
        .iter()
        .zip(snapshots)
        .map(|(user, snapshot)| snapshot.state(user))
        .collect()
}

/// One shard's queue of the users it made idle, oldest first, with its
/// share of the node's bound.
pub struct IdleList {
    users: std::collections::VecDeque<Box<str>>,
    max: usize,
}

impl IdleList {
    pub fn new(max: usize) -> IdleList {
        IdleList {
            users: std::collections::VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Queues `user`, forgetting the oldest queued users (those still
    /// idle) past the bound.
    pub fn push(&mut self, book: &PresenceBook, user: &str) {
        while self.users.len() >= self.max {
            if let Some(oldest) = self.users.pop_front() {
                book.forget_if_idle(&oldest);
            }
        }
        self.users.push_back(user.into());
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE_MS: u64 = 5_000;

    fn offline(last_seen_ms: u64, seq: u64) -> Snapshot {
        Snapshot {
            online: false,
            last_seen_ms,
            seq,
        }
    }

    fn online(seq: u64) -> Snapshot {
        Snapshot {
            online: true,
            last_seen_ms: 0,
            seq,
        }
    }

    #[test]
    fn unknown_users_are_offline_last_seen_unknown() {
        let book = PresenceBook::new(GRACE_MS, 2);
        assert_eq!(book.lookup("nobody"), offline(0, 0));
        assert_eq!(book.n_users(), 0, "a lookup creates nothing");
    }

    #[test]
    fn a_stored_last_seen_fills_only_an_entry_that_knows_none() {
        let book = PresenceBook::new(0, 2);
        book.seed_last_seen("nobody", 500);
        assert_eq!(book.n_users(), 0, "seeding creates nothing");
        // Watched before it was ever seen: the stored time fills it.
        assert_eq!(book.watch("ann", 0), offline(0, 0));
        book.seed_last_seen("ann", 500);
        assert_eq!(book.lookup("ann"), offline(500, 0));
        // Online, or seen leaving since start: the book's state stays.
        book.connected("ann");
        book.seed_last_seen("ann", 400);
        assert_eq!(book.lookup("ann"), online(1));
        book.closed("ann", 2_000);
        book.seed_last_seen("ann", 400);
        assert_eq!(book.lookup("ann"), offline(2_000, 2));
    }

    #[test]
    fn offline_only_after_the_last_device_and_the_grace() {
        let book = PresenceBook::new(GRACE_MS, 2);
        assert_eq!(book.watch("bob", 1), offline(0, 0));
        let report = book.connected("bob").expect("first device");
        assert_eq!(
            report,
            Report {
                snapshot: online(1),
                watch_mask: 0b10
            }
        );
        assert_eq!(book.connected("bob"), None, "second device");
        assert_eq!(book.closed("bob", 2_000), Closed::StillOnline);
        assert_eq!(
            book.closed("bob", 3_000),
            Closed::OfflineAt { due_ms: 8_000 }
        );
        assert_eq!(book.lookup("bob"), online(1), "online within the grace");
        assert_eq!(book.expire("bob", 7_999), None, "not due yet");
        let (report, idle) = book.expire("bob", 8_000).expect("due");
        assert_eq!(
            report,
            Report {
                snapshot: offline(3_000, 2),
                watch_mask: 0b10
            }
        );
        assert!(!idle, "watched");
        assert_eq!(book.expire("bob", 9_000), None, "reported once");
        assert_eq!(book.lookup("bob"), offline(3_000, 2));
    }

    #[test]
    fn a_reconnect_within_the_grace_is_never_reported() {
        let book = PresenceBook::new(GRACE_MS, 1);
        book.watch("bob", 0);
        assert!(book.connected("bob").is_some());
        assert_eq!(
            book.closed("bob", 1_000),
            Closed::OfflineAt { due_ms: 6_000 }
        );
        assert_eq!(book.connected("bob"), None, "back within the grace");
        assert_eq!(book.expire("bob", 6_000), None, "the deadline was cleared");
        // Leaves again: the first deadline is stale, the second reports.
        assert_eq!(
            book.closed("bob", 7_000),
            Closed::OfflineAt { due_ms: 12_000 }
        );
        assert_eq!(book.expire("bob", 6_000), None, "stale deadline");
        let (report, _) = book.expire("bob", 12_000).expect("due");
        assert_eq!(
            report.snapshot,
            offline(7_000, 2),
            "one online, one offline: seq 2"
        );
    }

    #[test]
    fn no_grace_reports_at_once() {
        let book = PresenceBook::new(0, 1);
        assert!(book.connected("bob").is_some());
        match book.closed("bob", 20) {
            Closed::Reported { report, idle } => {
                assert_eq!(report.snapshot, offline(20, 2));
                assert!(idle);
            }
            other => panic!("expected a report, got {other:?}"),
        }
    }

    #[test]
    fn idle_entries_are_bounded_and_watched_ones_kept() {
        let book = PresenceBook::new(0, 1);
        let mut idle = IdleList::new(3);
        book.watch("watched", 0);
        for user in ["watched", "a", "b", "c", "d", "e"] {
            book.connected(user);
            if let Closed::Reported { idle: true, .. } = book.closed(user, 2) {
                idle.push(&book, user);
            }
        }
        assert_eq!(idle.len(), 3);
        // "watched" and the three newest idle users; "a" and "b" forgotten.
        assert_eq!(book.n_users(), 4);
        assert_eq!(book.lookup("a"), offline(0, 0), "forgotten: unknown");
        assert_eq!(book.lookup("e"), offline(2, 2));
        assert_eq!(book.lookup("watched"), offline(2, 2));
        // A forgotten-while-busy user stays: only idle entries go.
        book.connected("c");
        for user in ["f", "g", "h"] {
            idle.push(&book, user);
        }
        assert!(book.lookup("c").online, "busy entries are never forgotten");
    }

    #[test]
    fn a_missed_change_marks_that_shard_once() {
        let book = PresenceBook::new(0, 3);
        assert!(!book.take_resync(1));
        book.mark_resync(1);
        assert!(!book.take_resync(0), "only the shard that missed it");
        assert!(book.take_resync(1));
        assert!(!book.take_resync(1), "cleared by the take");
        assert_eq!(book.changes_lost(), 1);
    }

    #[test]
    fn the_last_unwatch_leaves_an_idle_entry_for_the_idle_list() {
        let book = PresenceBook::new(GRACE_MS, 2);
        book.watch("ghost", 0);
        book.watch("ghost", 1);
        assert!(!book.unwatch("ghost", 0), "shard 1 still watches");
        assert!(book.unwatch("ghost", 1), "idle now");
        let mut idle = IdleList::new(1);
        idle.push(&book, "ghost");
        idle.push(&book, "other");
        assert_eq!(book.n_users(), 0, "forgotten once past the bound");
        assert_eq!(book.lookup("ghost"), offline(0, 0));
    }

    /// Shards connecting and closing one user at once: the reports
    /// alternate online/offline in seq order and the count ends at zero.
    #[test]
    fn concurrent_shards_alternate_reports_in_seq_order() {
        let book = std::sync::Arc::new(PresenceBook::new(0, 4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let book = book.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    for now in 0..2_000 {
                        if let Some(report) = book.connected("u") {
                            seen.push(report.snapshot);
                        }
                        if let Closed::Reported { report, .. } = book.closed("u", now) {
                            seen.push(report.snapshot);
                        }
                    }
                    seen
                })
            })
            .collect();
        let mut all: Vec<Snapshot> = Vec::new();
        for handle in handles {
            all.extend(handle.join().unwrap());
        }
        all.sort_unstable_by_key(|snapshot| snapshot.seq);
        for (idx, snapshot) in all.iter().enumerate() {
            assert_eq!(snapshot.seq, idx as u64 + 1, "a seq skipped or taken twice");
            assert_eq!(snapshot.online, idx % 2 == 0, "report {idx} out of order");
        }
        assert!(!book.lookup("u").online);
    }
}
