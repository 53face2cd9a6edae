//! Blocks on a shard (`docs/im.md`, "Blocks and DM policy"): `block`,
//! `unblock` and `blocks_list`. A block is a write of the store's writer
//! like any IM write; the blocker's other connections hear of it
//! (`{"block":...}`). Typing is `im_typing.rs`.

use ringcast_protocol::client::{ErrorCode, ImEvent, ImReply, ReplyResult};

use super::commands::{store_reply, CommandError, CommandResult, Outcome, ReplyTo, StoreDone};
use super::Shard;
use crate::channels;

/// A block or a list the store answered.
pub(super) enum SignalDone {
    Block {
        other: String,
        on: bool,
        result: Result<u64, CommandError>,
    },
    BlocksList {
        limit: u32,
        result: Result<Vec<(String, u64)>, CommandError>,
    },
}

impl Shard {
    /// `block` or `unblock` of `other` by `user`.
    pub(super) fn im_block(
        &mut self,
        to: ReplyTo,
        user: &str,
        other: String,
        on: bool,
    ) -> CommandResult {
        channels::validate_user_id(&other)
            .map_err(|code| (code, format!("{other:?} is not a valid user id")))?;
        if other == user {
            return Err((
                ErrorCode::BadRequest,
                "a user cannot block itself".to_owned(),
            ));
        }
        let write = self.shared.im_store().block(user, &other, on);
        self.store_replies.push(Box::pin(async move {
            let result = store_reply(write).await;
            StoreDone::ImSignal(to, Box::new(SignalDone::Block { other, on, result }))
        }));
        Ok(Outcome::Later)
    }

    /// A page of the users `user` blocked.
    pub(super) fn im_blocks_list(
        &mut self,
        to: ReplyTo,
        user: &str,
        cursor: Option<String>,
        limit: u32,
    ) -> CommandResult {
        let read = self
            .shared
            .im_store()
            .blocks_list(user, cursor.as_deref(), limit as usize);
        self.store_replies.push(Box::pin(async move {
            let result = store_reply(read).await;
            StoreDone::ImSignal(to, Box::new(SignalDone::BlocksList { limit, result }))
        }));
        Ok(Outcome::Later)
    }

    /// The store answered a block or a list.
    pub(super) fn on_im_signal(&mut self, to: ReplyTo, done: SignalDone) {
        if !self.is_current(to.key, to.client_id) {
            return;
        }
        let user = self.conns[to.key].user.to_string();
        match done {
            SignalDone::Block { other, on, result } => {
                let result = result.map(|changed| {
                    if changed != 0 {
                        let event = ImEvent::Block {
                            user: other.clone(),
                            blocked: on,
                        };
                        self.im_event_to_user(&user, &event, to.client_id);
                    }
                    ReplyResult::Im(Box::new(ImReply::Block {
                        user: other,
                        blocked: on,
                        changed: changed != 0,
                    }))
                });
                self.reply_to(to, result);
            }
            SignalDone::BlocksList { limit, result } => {
                let result = result
                    .map(|page| ReplyResult::Im(Box::new(crate::im::blocks_page(page, limit))));
                self.reply_to(to, result);
            }
        }
    }
}
