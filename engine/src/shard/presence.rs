//! Presence on a shard: a user's connections opening and closing here feed
//! the node's [`PresenceBook`](crate::presence::book::PresenceBook); the
//! `presence_*` commands; the changes the book reports, handed to every
//! shard with watchers of the user and told to the local ones; the offline
//! deadlines and the resync after a missed change, at the sweep tick.

use std::sync::Arc;

use ringcast_protocol::client::{
    encode_presence_binary, encode_presence_json, ErrorCode, PresenceCommand, ReplyResult,
};
use ringcast_protocol::frame::{encode_frame, OpCode};

use super::commands::{CommandResult, Outcome, StoreDone};
use super::Shard;
use crate::interest::shard_indexes;
use crate::mesh::ShardEvent;
use crate::presence::book::{distinct_users, states, Closed, Report, Snapshot};
use crate::presence::stored;

impl Shard {
    /// A connection of `user` opened on this shard.
    pub(super) fn presence_connected(&mut self, user: &str) {
        if let Some(report) = self.shared.presence_book.connected(user) {
            self.presence_dispatch(user, report);
        }
    }

    /// Connection `key` is going: its watches end, and when it was a
    /// user's connection, the user has one connection fewer.
    pub(super) fn presence_released(&mut self, key: usize) {
        let shared = self.shared.clone();
        let book = &shared.presence_book;
        self.presence.forget_conn(book, self.idx, key);
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        // Counted exactly when it joined its personal channel at open (it
        // cannot leave it before this): refused or never-opened upgrades,
        // and anonymous connections, never were.
        let counted = !conn.user.is_empty()
            && conn.is_subscribed(&crate::channels::personal_channel(&conn.user));
        if !counted {
            return;
        }
        let user = conn.user.clone();
        match book.closed(&user, self.now_ms) {
            Closed::StillOnline => {}
            Closed::OfflineAt { due_ms } => self.presence.offline_due(&user, due_ms),
            Closed::Reported { report, idle } => {
                if idle {
                    self.presence.idle.push(book, &user);
                }
                stored::keep(&shared.store, &user, report.snapshot);
                self.presence_dispatch(&user, report);
            }
        }
    }

    /// The sweep tick: offline deadlines that passed, and a resync when a
    /// change could not be handed to this shard.
    pub(super) fn presence_tick(&mut self) {
        let shared = self.shared.clone();
        let book = &shared.presence_book;
        for user in self.presence.take_due(self.now_ms) {
            if let Some((report, idle)) = book.expire(&user, self.now_ms) {
                if idle {
                    self.presence.idle.push(book, &user);
                }
                stored::keep(&shared.store, &user, report.snapshot);
                self.presence_dispatch(&user, report);
            }
        }
        if book.take_resync(self.idx) {
            for user in self.presence.watched_users() {
                let snapshot = book.lookup(&user);
                self.presence_tell(&user, snapshot);
            }
        }
    }

    /// Hands a reported change to every shard watching the user; one
    /// whose lane from here is full reads its watched users again at its
    /// next tick instead.
    fn presence_dispatch(&mut self, user: &str, report: Report) {
        let mut shared_user: Option<Arc<str>> = None;
        for dst in shard_indexes(report.watch_mask) {
            if dst == self.idx {
                self.presence_tell(user, report.snapshot);
                continue;
            }
            let user = shared_user.get_or_insert_with(|| user.into()).clone();
            let event = ShardEvent::PresenceChanged {
                user,
                snapshot: report.snapshot,
            };
            if self.sender.send(dst, event).is_err() {
                self.shared.presence_book.mark_resync(dst);
            }
        }
    }

    /// Tells the local watchers of `user` that have not seen it yet.
    pub(super) fn presence_tell(&mut self, user: &str, snapshot: Snapshot) {
        let keys = self.presence.to_tell(user, snapshot);
        if keys.is_empty() {
            return;
        }
        let state = snapshot.state(user);
        let (mut json, mut binary) = (None, None);
        for key in keys {
            let Some(conn) = self.conns.get(key) else {
                continue;
            };
            let frame = if conn.session.binary() {
                binary
                    .get_or_insert_with(|| {
                        encode_frame(OpCode::Binary, &encode_presence_binary(&state), None)
                    })
                    .clone()
            } else {
                json.get_or_insert_with(|| {
                    encode_frame(OpCode::Text, &encode_presence_json(&state), None)
                })
                .clone()
            };
            self.send_frame(key, frame);
        }
    }

    /// `presence_watch`, `presence_unwatch`, `presence_query`. Answered at
    /// once from the book, or after a store read when one of the users has
    /// no last seen in it ([`stored`]).
    pub(super) fn presence_command(
        &mut self,
        key: usize,
        id: u64,
        user: &str,
        command: PresenceCommand,
    ) -> CommandResult {
        if user.is_empty() {
            return Err((
                ErrorCode::PermissionDenied,
                "anonymous connections have no presence".into(),
            ));
        }
        let users = distinct_users(command.users())
            .map_err(|bad| (ErrorCode::UnknownUser, format!("not a user id: {bad:?}")))?;
        let shared = self.shared.clone();
        let book = &shared.presence_book;
        let snapshots = match command {
            PresenceCommand::Watch { .. } => {
                let max = shared.config.im.presence_watch_max as usize;
                self.presence
                    .watch(book, self.idx, key, &users, max)
                    .map_err(|over| {
                        (
                            ErrorCode::LimitExceeded,
                            format!(
                                "a connection watches at most {} users (im.presence_watch_max)",
                                over.max
                            ),
                        )
                    })?
            }
            PresenceCommand::Unwatch { .. } => {
                self.presence.unwatch(book, self.idx, key, &users);
                return Ok(Outcome::Now(ReplyResult::Empty));
            }
            PresenceCommand::Query { .. } => {
                if shared.cluster.is_some() || stored::needs_store(book, &users) {
                    return self.presence_stored_reply(key, id, &users);
                }
                return Ok(Outcome::Now(ReplyResult::Presence {
                    users: book.states(&users),
                }));
            }
            _ => {
                return Err((
                    ErrorCode::MethodNotFound,
                    "presence command not served here".into(),
                ))
            }
        };
        if snapshots.iter().any(Snapshot::last_seen_unknown) {
            // The watch holds already: changes from now on reach the
            // connection; the reply reads the book again when the store
            // answered, so it is never older than one of them.
            return self.presence_stored_reply(key, id, &users);
        }
        Ok(Outcome::Now(ReplyResult::Presence {
            users: states(&users, &snapshots),
        }))
    }

    /// Answers `users`' states once the store said when the ones the book
    /// holds no last seen for were last seen.
    fn presence_stored_reply(&mut self, key: usize, id: u64, users: &[&str]) -> CommandResult {
        let to = self.reply_to_of(key, id)?;
        let shared = self.shared.clone();
        let users: Vec<String> = users.iter().map(|user| (*user).to_owned()).collect();
        self.store_replies.push(Box::pin(async move {
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            // In a cluster, users connected only to other nodes are online
            // too (asked of their inbox owners; empty on a single node).
            let elsewhere = crate::cluster::online_elsewhere(&shared, &users).await;
            let mut users = stored::states(&shared.presence_book, &shared.store, &users).await;
            for (state, elsewhere) in users.iter_mut().zip(elsewhere) {
                if elsewhere == Some(true) && !state.online {
                    state.online = true;
                    state.last_seen_ms = 0;
                }
            }
            StoreDone::Replied(to, Ok(ReplyResult::Presence { users }))
        }));
        Ok(Outcome::Later)
    }
}
