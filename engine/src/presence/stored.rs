//! Last seen across restarts. The shard that reports a user offline hands
//! the time to the store (one write per offline transition, in the
//! writer's ordinary batches, never backwards: `ringcast_store`'s
//! `last_seen`); answers read it back for the users the book holds no last
//! seen for, so a restarted node (or one whose idle list forgot a user)
//! still says when an offline user left. The book stays the first source:
//! what it knows is newer than anything stored.

use std::collections::HashMap;

use ringcast_protocol::client::PresenceState;
use ringcast_store::Store;

use super::book::{PresenceBook, Snapshot};

/// Keeps `user`'s last seen from an offline report. A store that refuses
/// (queue full, closed) loses only this hint: the user reads an older last
/// seen after a restart.
pub fn keep(store: &Store, user: &str, snapshot: Snapshot) {
    if snapshot.online || snapshot.last_seen_ms == 0 {
        return;
    }
    if let Err(error) = store.submit_last_seen(user, snapshot.last_seen_ms) {
        tracing::debug!(%error, user, "last seen not handed to the store");
    }
}

/// Whether answering `users` needs the store: one of them has no last
/// seen in the book.
pub fn needs_store(book: &PresenceBook, users: &[&str]) -> bool {
    users
        .iter()
        .any(|user| book.lookup(user).last_seen_unknown())
}

/// The state of each of `users`: the book's, and for a user it holds no
/// last seen for, the store's. The book is read again after the store
/// answered, so a change in between wins over the stored time. A store
/// that fails leaves those users' last seen unknown (0), as before it kept
/// any.
pub async fn states(book: &PresenceBook, store: &Store, users: &[&str]) -> Vec<PresenceState> {
    let unknown: Vec<String> = users
        .iter()
        .filter(|user| book.lookup(user).last_seen_unknown())
        .map(|user| (*user).to_owned())
        .collect();
    let mut stored: HashMap<String, u64> = HashMap::new();
    if !unknown.is_empty() {
        let answer = match store.last_seen(unknown.clone()) {
            Ok(receiver) => receiver
                .await
                .unwrap_or(Err(ringcast_store::StoreError::Closed)),
            Err(error) => Err(error),
        };
        match answer {
            Ok(times) => stored.extend(unknown.into_iter().zip(times)),
            Err(error) => tracing::warn!(%error, "presence: reading stored last seen failed"),
        }
    }
    users
        .iter()
        .map(|user| {
            let mut snapshot = book.lookup(user);
            let kept = stored.get(*user).copied().unwrap_or(0);
            if snapshot.last_seen_unknown() && kept > 0 {
                book.seed_last_seen(user, kept);
                snapshot.last_seen_ms = kept;
            }
            snapshot.state(user)
        })
        .collect()
}
