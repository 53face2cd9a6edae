//! Durable streams on the engine side: which channels are stored, with what
//! durability and retention, and the hook that fans stored publications out.
//!
//! A user's inbox (`user:<id>`) is always stored, `sync` (acknowledged after
//! the group commit's fsync). A channel is stored when its namespace has
//! `history = true`, with that namespace's durability and retention. The
//! store assigns each entry its offset on its single writer thread and,
//! once the batch is durable, hands the batch to [`StoreSink`]: the new
//! publications to the interested shards, the answers to the shards that
//! asked, one wake-up per shard per batch.

use std::sync::Arc;
use std::time::Duration;

use ringcast_protocol::client::CommandBody;
use ringcast_store::{Answer, Appended, CommitSink, Durability, ReadRequest, Retention};

use crate::channels::PERSONAL_NAMESPACE;
use crate::config::{self, Config};
use crate::interest::{shard_indexes, Interest};
use crate::mesh::{MeshSender, StoreAnswer};
use crate::publication::Publication;

/// Newest entries kept in a user's inbox.
pub const INBOX_RETENTION_COUNT: u64 = 10_000;
/// Oldest entry kept in a user's inbox.
pub const INBOX_RETENTION_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How a stored channel is written.
#[derive(Debug, Clone, Copy)]
pub struct StreamPolicy {
    pub durability: Durability,
    pub retention: Retention,
}

/// The storage policy of `channel`, or `None` for a live-only channel.
pub fn policy(config: &Config, channel: &str) -> Option<StreamPolicy> {
    if channel
        .split_once(':')
        .is_some_and(|(ns, _)| ns == PERSONAL_NAMESPACE)
    {
        return Some(StreamPolicy {
            durability: Durability::Sync,
            retention: Retention {
                count_max: INBOX_RETENTION_COUNT,
                age_max: INBOX_RETENTION_AGE,
            },
        });
    }
    let namespace = config.namespace(channel).filter(|ns| ns.history)?;
    Some(StreamPolicy {
        durability: match namespace.durability {
            config::Durability::Sync => Durability::Sync,
            config::Durability::Buffered => Durability::Buffered,
        },
        retention: Retention {
            count_max: namespace.retention_count,
            age_max: namespace.retention_age,
        },
    })
}

/// The store read a history command asks for, or `None` if `body` is not
/// one. The commands differ only in their bounds: `History` is an offset
/// lower bound, `HistoryBefore` an offset upper bound newest first, and
/// `HistoryByTime` a time window whose open sides (`0`, `u64::MAX`) bound
/// nothing, plus an offset bound on the side its page starts from.
pub fn history_read(body: CommandBody) -> Option<ReadRequest> {
    let request = match body {
        CommandBody::History {
            stream,
            since,
            limit,
            reverse,
        } => ReadRequest {
            stream,
            since,
            before: None,
            limit: limit as usize,
            reverse,
            from_time_ms: None,
            before_time_ms: None,
        },
        CommandBody::HistoryBefore {
            stream,
            before,
            since,
            limit,
        } => ReadRequest {
            stream,
            since: Some(since),
            before: Some(before),
            limit: limit as usize,
            reverse: true,
            from_time_ms: None,
            before_time_ms: None,
        },
        CommandBody::HistoryByTime {
            reverse,
            limit,
            stream,
            from_time_ms,
            before_time_ms,
            offset_bound,
        } => ReadRequest {
            stream,
            since: (!reverse).then_some(offset_bound),
            before: reverse.then_some(offset_bound),
            limit: limit as usize,
            reverse,
            from_time_ms: (from_time_ms != 0).then_some(from_time_ms),
            before_time_ms: (before_time_ms != u64::MAX).then_some(before_time_ms),
        },
        _ => return None,
    };
    Some(request)
}

/// The tag of a store request submitted by shard `shard` for its pending
/// slot `slot` (see [`StoreSink`]).
pub fn request_tag(shard: usize, slot: usize) -> u64 {
    debug_assert!(shard < crate::limits::SHARDS_MAX);
    assert!(u32::try_from(slot).is_ok(), "pending store slot over u32");
    ((shard as u64) << 32) | slot as u64
}

/// The shard and slot of a request tag.
pub(crate) fn tag_parts(tag: u64) -> (usize, usize) {
    ((tag >> 32) as usize, (tag & u64::from(u32::MAX)) as usize)
}

/// The store's commit sink: runs on the store's writer thread after each
/// group commit and never waits.
///
/// - Each newly stored publication goes to the shards with subscribers of
///   its channel, through the store's own row of the mesh, so every shard
///   receives a stream's publications in offset order from one producer.
///   A shard whose lane from the store is full (it is
///   `server.mesh_lane_events` publications behind) is marked lagged
///   instead, and closes its subscribers of durable streams with 1013; they
///   reconnect with their position and recover the gap from the store. So
///   one slow shard never stalls a group commit.
/// - Each answer to a shard's request goes to that shard's answer queue.
/// - At the end of the batch each shard that got anything is rung once.
///
/// Frames are built here only for a publication bound for several shards
/// (which would otherwise race to build them); for one shard, the usual
/// inbox case, the shard builds what its subscribers need
/// (`publication.rs`).
pub struct StoreSink {
    sender: MeshSender,
    interest: Arc<Interest>,
    /// Shards handed something in this batch, to ring at its end.
    touched: u64,
    /// The webhook thread, woken when a batch wrote outbox records.
    webhooks: Arc<crate::webhook::Waker>,
    /// Who a DM entry goes to.
    dm_pairs: Arc<crate::im::DmPairs>,
    /// In a cluster, each new entry of this node's partition also goes to
    /// the other nodes (docs/cluster.md).
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl StoreSink {
    pub fn new(
        sender: MeshSender,
        interest: Arc<Interest>,
        webhooks: Arc<crate::webhook::Waker>,
        dm_pairs: Arc<crate::im::DmPairs>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> StoreSink {
        StoreSink {
            sender,
            interest,
            touched: 0,
            webhooks,
            dm_pairs,
            cluster,
        }
    }
}

impl CommitSink for StoreSink {
    fn appended(&mut self, appended: &Appended) {
        debug_assert!(!appended.duplicate, "the store hands over new entries only");
        let channel = appended.push.envelope().channel.as_str();
        if crate::im::is_dm(channel) {
            // A DM's recall or edit event: its conversation is stored, so
            // its pair was remembered by the message that started it (or
            // by the rewrite's lookup).
            let Some(pair) = self.dm_pairs.get(channel) else {
                tracing::error!(channel, "a DM entry whose pair is unknown: not pushed");
                return;
            };
            return self.publish_dm(appended, pair);
        }
        if let Some(cluster) = &self.cluster {
            // After the commit, in offset order: one NATS connection keeps
            // the order per subject.
            let push = appended.push.clone();
            cluster.send_live(if crate::channels::is_personal(channel) {
                crate::cluster::Outbound::UserEntry(push)
            } else {
                crate::cluster::Outbound::Publish(push)
            });
        }
        let publication = Arc::new(Publication::from_push(appended.push.clone()));
        let mask = self.interest.shards(publication.channel());
        self.publish(publication, mask);
    }

    fn dm_appended(&mut self, dm: &ringcast_store::ImAppended) {
        debug_assert!(
            !dm.appended.duplicate,
            "the store hands over new entries only"
        );
        // The pair is remembered here, after the commit, so a refused
        // first message never leaves one (review finding 10).
        let channel = dm.appended.push.envelope().channel.as_str();
        let pair = self.dm_pairs.committed(channel, &dm.pair);
        self.publish_dm(&dm.appended, pair);
    }

    fn group_appended(&mut self, group: &ringcast_store::GroupAppended) {
        let recipients = Arc::new(crate::im::GroupRecipients {
            members: group.members.clone(),
            removed: group.removed.clone(),
        });
        if let Some(cluster) = &self.cluster {
            let to = crate::cluster::ImRecipients::Group(recipients.clone());
            cluster.im_entry(&group.appended.push, to);
        }
        let shards = self.sender.mesh().n_consumers();
        let mask = if recipients.count() <= GROUP_ROUTE_BY_USER_MAX {
            recipients.users().fold(0, |mask, user| {
                mask | self
                    .interest
                    .shards(&crate::channels::personal_channel(user))
            })
        } else {
            // Past it the OR costs more than each shard filtering by its
            // own users: every shard gets it.
            u64::MAX >> (64 - shards.clamp(1, 64))
        };
        let publication = Publication::for_group(group.appended.push.clone(), recipients);
        self.publish(Arc::new(publication), mask);
    }

    fn answered(&mut self, tag: u64, answer: Answer) {
        let (shard, slot) = tag_parts(tag);
        if shard >= self.sender.mesh().n_consumers() {
            tracing::error!(tag, "a store answer for no shard");
            return;
        }
        self.touched |= 1 << shard;
        self.sender
            .answer_quiet(shard, StoreAnswer { slot, answer });
    }

    fn outbox_written(&mut self) {
        self.webhooks.wake();
    }

    fn batch_done(&mut self) {
        for shard in shard_indexes(std::mem::take(&mut self.touched)) {
            self.sender.ring(shard);
        }
    }
}

/// Recipients of a group entry up to which the sink routes it to the
/// shards of their connections (an OR of their inboxes' interest); past
/// it, to every shard (`docs/im.md`, "Routing").
const GROUP_ROUTE_BY_USER_MAX: usize = 64;

impl StoreSink {
    /// A DM entry to every connection of both users, by their inboxes'
    /// interest.
    fn publish_dm(&mut self, appended: &Appended, pair: Arc<crate::im::DmPair>) {
        if let Some(cluster) = &self.cluster {
            let to = crate::cluster::ImRecipients::Pair(pair.clone());
            cluster.im_entry(&appended.push, to);
        }
        let mask = pair.users().fold(0, |mask, user| {
            mask | self
                .interest
                .shards(&crate::channels::personal_channel(user))
        });
        let publication = Publication::for_dm(appended.push.clone(), pair);
        self.publish(Arc::new(publication), mask);
    }

    /// Hands a new entry to the shards of `mask`, encoded once.
    fn publish(&mut self, publication: Arc<Publication>, mask: u64) {
        if mask == 0 {
            return;
        }
        self.touched |= mask;
        if mask.count_ones() > 1 {
            // Several shards would race to build the frames and all but
            // one build would be thrown away: build them once, here.
            // (For one shard, the usual inbox case, the shard builds what
            // its subscribers need.)
            publication.json_frame();
            publication.binary_frame();
        }
        if self.sender.publish_stored(mask, &publication) > 0 {
            tracing::warn!(
                channel = publication.channel(),
                "a shard fell behind the store's fan-out"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_keep_shard_and_slot_apart() {
        for (shard, slot) in [(0, 0), (61, 0), (3, u32::MAX as usize), (1, 12_345)] {
            assert_eq!(tag_parts(request_tag(shard, slot)), (shard, slot));
        }
    }
}
