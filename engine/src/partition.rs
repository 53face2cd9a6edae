//! Where a durable stream's store is, and the one way to reach it.
//!
//! On a single node every stream is in the node's own store. In a cluster
//! with `cluster.stores` partitions, a stream lives in partition
//! `fnv1a64(name) mod stores`, owned by the node whose id is that number
//! (docs/cluster.md, "Durable streams"): its store's writer is the
//! stream's one writer. A call for a stream of another node's partition
//! is forwarded to that node over NATS (`crate::cluster`) and answered on
//! the same kind of future, or tagged answer, as the local store's, so
//! the shards and the API do not care where the stream is.
//!
//! The IM layer's calls go to the IM partition's owner (`im.rs`); a
//! conversation's stream lives there too (`crate::cluster::stream_partition`),
//! so its reads take the path below like any other stream's.

use futures_channel::oneshot;
use ringcast_protocol::cluster::StoreRequest;
use ringcast_store::{AppendRequest, Appended, ReadRequest, ReadResult, StoreError, StoredCursor};

use crate::cluster::{wire, ReplyTo, TaggedKind};
use crate::engine::Shared;

mod im;
pub use im::ImStore;

type Reply<T> = Result<oneshot::Receiver<Result<T, StoreError>>, StoreError>;

impl Shared {
    /// The partition of `stream` and the cluster to reach it, when another
    /// node owns it.
    fn remote(&self, stream: &str) -> Option<(&crate::cluster::Cluster, u32)> {
        let cluster = self.cluster.as_deref()?;
        cluster
            .remote_partition(stream)
            .map(|partition| (cluster, partition))
    }

    /// In a cluster every stored publication must be able to cross to the
    /// other nodes' subscribers in one NATS message: a larger one is
    /// refused before it is stored (docs/cluster.md).
    fn check_crosses(&self, request: &AppendRequest) -> Result<(), StoreError> {
        match &self.cluster {
            Some(cluster) if request.push.len() > cluster.push_bytes_max() => {
                Err(StoreError::InvalidRequest {
                    reason: "the publication is larger than one NATS message carries between \
                             the cluster's nodes (the server's max_payload); nothing was stored",
                })
            }
            _ => Ok(()),
        }
    }

    /// [`ringcast_store::Store::append`], wherever the stream is.
    pub fn append(&self, request: AppendRequest) -> Reply<Appended> {
        self.check_crosses(&request)?;
        let Some((cluster, partition)) = self.remote(&request.stream) else {
            return self.store.append(request);
        };
        let (tx, rx) = oneshot::channel();
        let wire = StoreRequest::Append(wire::append_out(&request));
        cluster.forward(partition, wire, ReplyTo::Appended(tx))?;
        Ok(rx)
    }

    /// [`ringcast_store::Store::submit_append`], wherever the stream is:
    /// the answer reaches the shard's queue of store answers either way.
    pub fn submit_append(&self, request: AppendRequest, tag: u64) -> Result<(), StoreError> {
        self.check_crosses(&request)?;
        let Some((cluster, partition)) = self.remote(&request.stream) else {
            return self.store.submit_append(request, tag);
        };
        let wire = StoreRequest::Append(wire::append_out(&request));
        let reply = ReplyTo::Tagged {
            tag,
            kind: TaggedKind::Appended,
        };
        cluster.forward(partition, wire, reply)
    }

    /// [`ringcast_store::Store::read`], wherever the stream is.
    pub fn read(&self, request: ReadRequest) -> Reply<ReadResult> {
        let Some((cluster, partition)) = self.remote(&request.stream) else {
            return self.store.read(request);
        };
        let (tx, rx) = oneshot::channel();
        let wire = StoreRequest::Read(wire::read_out(&request));
        cluster.forward(partition, wire, ReplyTo::Read(tx))?;
        Ok(rx)
    }

    /// [`ringcast_store::Store::submit_cursor`], wherever the stream is.
    pub fn submit_cursor(
        &self,
        user: &str,
        device: &str,
        stream: &str,
        offset: u64,
        tag: u64,
    ) -> Result<(), StoreError> {
        let Some((cluster, partition)) = self.remote(stream) else {
            return self.store.submit_cursor(user, device, stream, offset, tag);
        };
        let wire = StoreRequest::SetCursor {
            user: user.to_owned(),
            device: device.to_owned(),
            stream: stream.to_owned(),
            offset,
        };
        let reply = ReplyTo::Tagged {
            tag,
            kind: TaggedKind::Cursor,
        };
        cluster.forward(partition, wire, reply)
    }

    /// [`ringcast_store::Store::get_cursor`], wherever the stream is.
    pub fn get_cursor(
        &self,
        user: &str,
        device: &str,
        stream: &str,
    ) -> Reply<Option<StoredCursor>> {
        let Some((cluster, partition)) = self.remote(stream) else {
            return self.store.get_cursor(user, device, stream);
        };
        let (tx, rx) = oneshot::channel();
        let wire = StoreRequest::GetCursor {
            user: user.to_owned(),
            device: device.to_owned(),
            stream: stream.to_owned(),
        };
        cluster.forward(partition, wire, ReplyTo::Cursor(tx))?;
        Ok(rx)
    }
}
