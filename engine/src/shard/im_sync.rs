//! The IM sync at connect: a connection's first IM message, the changes
//! of the user's conversations since its token (docs/im.md, "Sync"),
//! after the inbox's replay when there is one.

use ringcast_protocol::client::{ImEvent, ImSyncInfo, SyncToken};
use ringcast_store::ImSync;

use super::commands::{store_reply, CommandError, StoreDone};
use super::Shard;

impl Shard {
    /// At connect: the IM sync follows the inbox's replay (its id-0 reply)
    /// when there is one, else it starts now.
    pub(super) fn im_at_connect(
        &mut self,
        key: usize,
        since: Option<SyncToken>,
        after_inbox: bool,
    ) {
        if !self.shared.config.im.enabled {
            return;
        }
        let Some(client_id) = self.conns.get(key).map(|c| c.client_id) else {
            return;
        };
        if after_inbox {
            self.im.sync_after_inbox.insert(key, (client_id, since));
        } else {
            self.start_im_sync(key, client_id, since);
        }
    }

    /// The inbox's replay at connect ended (its id-0 reply is queued).
    pub(super) fn im_inbox_replayed(&mut self, key: usize) {
        if let Some((client_id, since)) = self.im.sync_after_inbox.remove(&key) {
            self.start_im_sync(key, client_id, since);
        }
    }

    fn start_im_sync(&mut self, key: usize, client_id: u64, since: Option<SyncToken>) {
        let Some(user) = self.conns.get(key).map(|c| c.user.to_string()) else {
            return;
        };
        if user.is_empty() {
            return;
        }
        let since = since.map(|token| ringcast_store::SyncToken {
            store_id: token.store_id,
            gseq: token.gseq,
        });
        let sync =
            self.shared
                .im_store()
                .im_sync(&user, since, self.shared.config.im.sync_convs_max);
        self.store_replies.push(Box::pin(async move {
            StoreDone::ImSync(key, client_id, store_reply(sync).await)
        }));
    }

    /// The store's sync for a new connection: its first IM message.
    pub(super) fn on_im_sync(
        &mut self,
        key: usize,
        client_id: u64,
        result: Result<ImSync, CommandError>,
    ) {
        if !self.is_current(key, client_id) {
            return;
        }
        let sync = match result {
            Ok(sync) => sync,
            Err((code, message)) => {
                // Without its sync the connection would miss what came
                // while it was away, silently: it reconnects and syncs
                // (in a cluster the IM partition's owner may be
                // restarting, or slow).
                tracing::warn!(shard = self.idx, client = client_id, ?code, %message, "IM sync at connect failed; closing with 1013");
                self.close(
                    key,
                    crate::session::CloseReason {
                        code: ringcast_protocol::close::CloseCode::TRY_AGAIN_LATER,
                        reason: "the IM sync failed; reconnect to sync",
                        flush_queue: true,
                    },
                );
                return;
            }
        };
        let user = self.conns[key].user.to_string();
        for summary in &sync.convs {
            self.shared
                .dm_pairs
                .remember_listed(&user, &summary.peer, &summary.conv);
        }
        let event = ImEvent::Sync(ImSyncInfo {
            convs: sync.convs.into_iter().map(crate::im::conv_info).collect(),
            token: SyncToken {
                store_id: sync.token.store_id,
                gseq: sync.token.gseq,
            },
            more: sync.more,
            reset: sync.reset,
            total_unread: sync.total_unread,
        });
        let frames = crate::im::event_frames(&event);
        let frame = if self.conns[key].session.binary() {
            frames.binary.clone()
        } else {
            frames.json.clone()
        };
        self.send_frame(key, frame);
    }
}
