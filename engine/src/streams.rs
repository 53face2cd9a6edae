//! Durable streams on the engine side: which channels are stored, with what
//! durability and retention, and the hook that fans stored publications out.
//!
//! A user's inbox (`user:<id>`) is always stored, `sync` (acknowledged after
//! the group commit's fsync). A channel is stored when its namespace has
//! `history = true`, with that namespace's durability and retention. The
//! store assigns each entry its offset on its single writer thread and calls
//! `fanout_hook` in offset order once the batch is durable; the hook sends
//! the publication to the interested shards through the store's own row of
//! the mesh, so every shard receives a stream's publications in offset
//! order from one producer.

use std::sync::Arc;
use std::time::Duration;

use ringcast_store::{Appended, Durability, OnAppended, Retention};

use crate::channels::PERSONAL_NAMESPACE;
use crate::config::{self, Config};
use crate::interest::Interest;
use crate::mesh::MeshSender;
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

/// The store's `on_appended` hook: hands each newly stored publication to
/// the shards with subscribers of its channel. Runs on the store's writer
/// thread and never waits: a shard whose lane from the store is full (it is
/// `server.mesh_lane_events` publications behind) is marked
/// lagged instead, and closes its subscribers of durable streams with 1013;
/// they reconnect with their position and recover the gap from the store.
/// So one slow shard never stalls a group commit.
pub fn fanout_hook(sender: MeshSender, interest: Arc<Interest>) -> OnAppended {
    Box::new(move |appended: &Appended| {
        if appended.duplicate {
            // Delivered when it was first stored.
            return;
        }
        let publication = Arc::new(Publication::from_push(appended.push.clone()));
        let mask = interest.shards(publication.channel());
        if mask != 0 && sender.publish_stored(mask, &publication) > 0 {
            tracing::warn!(
                channel = publication.channel(),
                "a shard fell behind the store's fan-out"
            );
        }
    })
}
