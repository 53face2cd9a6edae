//! The store's API for users' last seen (`crate::last_seen`).

use futures_channel::oneshot;

use crate::error::StoreError;
use crate::reader::ReaderMsg;
use crate::writer::WriterMsg;

use super::{validate_im_names, Store};

impl Store {
    /// `user` was last seen at `ms` (Unix ms): written in the writer's next
    /// batch, with that batch's durability, unless the stored time is as
    /// late; no answer. Meant for one call per offline transition.
    pub fn submit_last_seen(&self, user: &str, ms: u64) -> Result<(), StoreError> {
        validate_im_names(user, "-")?;
        self.tell_writer(WriterMsg::LastSeen {
            user: user.to_owned(),
            ms,
        })
    }

    /// Each of `users`' stored last seen (0: never stored), in order, from
    /// one snapshot.
    pub fn last_seen(
        &self,
        users: Vec<String>,
    ) -> Result<oneshot::Receiver<Result<Vec<u64>, StoreError>>, StoreError> {
        for user in &users {
            validate_im_names(user, "-")?;
        }
        self.ask_reader(|reply| ReaderMsg::LastSeen { users, reply })
    }
}
