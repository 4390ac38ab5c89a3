//! Partition ownership in cluster mode: one lease per partition in the key-value bucket
//! `planledger_owners`, with a per-key TTL.
//!
//! Leases are for liveness only: they decide which node *tries* to write a partition, so that
//! normally one does and another takes over when it dies. They never decide what is stored:
//! the partition stream's compare-and-append does (a deposed owner that still believes it owns
//! the partition is refused by the stream). So a lease may be held a little too long or taken a
//! little too early without harm beyond some refused commands.
//!
//! - Acquire: publish the key expecting no live value (`Nats-Expected-Last-Subject-Sequence`
//!   0, or the revision of the delete/expiry marker left by the last holder) with `Nats-TTL`.
//! - Renew: publish again expecting the revision we hold, with the TTL: a new revision.
//! - Release: delete expecting the revision we hold.
//! - Expiry: the server removes the key when its TTL runs out and leaves a marker that watchers
//!   see as a purge (the bucket is created with `limit_markers`).

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::Client;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures::StreamExt;
use jiff::Timestamp;

use crate::BusError;
use crate::connection::find_stream;

/// The key-value bucket holding the partition leases.
pub const OWNERS_BUCKET: &str = "planledger_owners";
/// How long the expiry marker of a lease stays in the bucket (watchers see it as a purge).
pub const EXPIRY_MARKER_TTL: Duration = Duration::from_secs(1);
/// The key prefix of node announcements in [`OWNERS_BUCKET`] (`node_<instance_id>`).
pub const NODE_KEY_PREFIX: &str = "node_";
/// The shortest lease TTL: the server counts a message TTL in whole seconds.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);

/// Who holds a partition's lease.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    /// The node's configured id (`--node-id`).
    pub node_id: String,
    /// A random id of the process holding it: two processes started with one node id are two
    /// instances, and ownership is per instance.
    pub instance_id: String,
    /// The NATS subject prefix the holder serves forwarded requests on
    /// (`planledger.node.<instance_id>`).
    pub route: String,
    /// The holder's HTTP address, for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// When this holder acquired the lease (not changed by renewals).
    pub acquired_at: Timestamp,
    /// The holder's cache position at the last renewal, for operators (`None` while it opens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
}

/// A lease as the bucket holds it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldLease {
    /// Its holder.
    pub lease: Lease,
    /// The revision of the last acquire or renewal (what a renewal must name).
    pub revision: u64,
    /// When that revision was written.
    pub written_at: Timestamp,
}

/// What a renewal came to.
#[derive(Debug)]
pub enum Renewal {
    /// Renewed: the new revision.
    Renewed(u64),
    /// Refused: someone else holds the key now (or it expired). Demote at once.
    Lost,
}

/// The key of partition `p`'s lease.
pub fn lease_key(partition: u32) -> String {
    format!("p{partition}")
}

/// The partition a lease key names.
pub fn partition_of_key(key: &str) -> Option<u32> {
    key.strip_prefix('p')?.parse().ok()
}

/// The configuration of [`OWNERS_BUCKET`].
pub fn owners_bucket_config(replicas: usize) -> kv::Config {
    kv::Config {
        bucket: OWNERS_BUCKET.to_string(),
        description: "Planledger partition leases (liveness only; the partition streams fence)"
            .into(),
        history: 1,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        limit_markers: Some(EXPIRY_MARKER_TTL),
        ..Default::default()
    }
}

/// Creates [`OWNERS_BUCKET`] unless it exists; true when it was created.
pub async fn ensure_owners_bucket(client: &Client, replicas: usize) -> Result<bool, BusError> {
    let context = jetstream::new(client.clone());
    if find_stream(&context, &format!("KV_{OWNERS_BUCKET}"))
        .await?
        .is_some()
    {
        return Ok(false);
    }
    context
        .create_key_value(owners_bucket_config(replicas))
        .await
        .map_err(|e| BusError::nats("create the owners bucket", e))?;
    Ok(true)
}

/// A handle on the owners bucket.
#[derive(Clone)]
pub struct Owners {
    context: jetstream::Context,
    bucket: kv::Store,
}

impl std::fmt::Debug for Owners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owners").finish_non_exhaustive()
    }
}

/// Whether a JetStream publish error is the server refusing an expected-last-subject-sequence.
fn is_wrong_sequence(error: &impl std::fmt::Display) -> bool {
    let text = error.to_string();
    text.contains("wrong last sequence") || text.contains("10071")
}

impl Owners {
    /// Opens the bucket; it must exist (`planledger cluster init` creates it).
    pub async fn open(client: &Client) -> Result<Self, BusError> {
        let context = jetstream::new(client.clone());
        if find_stream(&context, &format!("KV_{OWNERS_BUCKET}"))
            .await?
            .is_none()
        {
            return Err(BusError::Nats {
                operation: "open the owners bucket",
                detail: format!(
                    "the bucket {OWNERS_BUCKET} does not exist; run `planledger cluster init` again (it creates what is missing)"
                ),
            });
        }
        let bucket = context
            .get_key_value(OWNERS_BUCKET)
            .await
            .map_err(|e| BusError::nats("open the owners bucket", e))?;
        Ok(Self { context, bucket })
    }

    /// Publishes `lease` for `partition` expecting the key's last revision to be `expected`.
    async fn put_expecting(
        &self,
        partition: u32,
        lease: &Lease,
        expected: u64,
        ttl: Duration,
    ) -> Result<Result<u64, ()>, BusError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected.to_string().as_str(),
        );
        headers.insert(
            async_nats::header::NATS_MESSAGE_TTL,
            ttl.as_secs().max(1).to_string().as_str(),
        );
        let body = serde_json::to_vec(lease).map_err(|e| BusError::Nats {
            operation: "encode a lease",
            detail: e.to_string(),
        })?;
        let subject = format!("$KV.{OWNERS_BUCKET}.{}", lease_key(partition));
        let ack = match self
            .context
            .publish_with_headers(subject, headers, Bytes::from(body))
            .await
        {
            Ok(ack) => ack.await,
            Err(error) => return Err(BusError::nats("publish a lease", error)),
        };
        match ack {
            Ok(ack) => Ok(Ok(ack.sequence)),
            Err(error) if is_wrong_sequence(&error) => Ok(Err(())),
            Err(error) => Err(BusError::nats("publish a lease", error)),
        }
    }

    /// Tries to take `partition`'s lease: `Some(revision)` when taken, `None` when someone
    /// holds it.
    pub async fn acquire(
        &self,
        partition: u32,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<Option<u64>, BusError> {
        if let Ok(revision) = self.put_expecting(partition, lease, 0, ttl).await? {
            return Ok(Some(revision));
        }
        // The key has a history: free only when its last entry is a delete or expiry marker.
        let entry = self
            .bucket
            .entry(lease_key(partition))
            .await
            .map_err(|e| BusError::nats("read a lease", e))?;
        match entry {
            Some(entry) if entry.operation != kv::Operation::Put => Ok(self
                .put_expecting(partition, lease, entry.revision, ttl)
                .await?
                .ok()),
            _ => Ok(None),
        }
    }

    /// Renews a lease held at `revision`.
    pub async fn renew(
        &self,
        partition: u32,
        lease: &Lease,
        revision: u64,
        ttl: Duration,
    ) -> Result<Renewal, BusError> {
        Ok(
            match self.put_expecting(partition, lease, revision, ttl).await? {
                Ok(revision) => Renewal::Renewed(revision),
                Err(()) => Renewal::Lost,
            },
        )
    }

    /// Gives a lease held at `revision` back (a refused delete means it was not ours anymore).
    pub async fn release(&self, partition: u32, revision: u64) -> Result<(), BusError> {
        match self
            .bucket
            .delete_expect_revision(lease_key(partition), Some(revision))
            .await
        {
            Ok(()) => Ok(()),
            Err(error) if is_wrong_sequence(&error) => Ok(()),
            Err(error) => Err(BusError::nats("release a lease", error)),
        }
    }

    /// Announces a live node process for `ttl` (repeat at a third of it): nodes count each
    /// other to compute their fair share of the partitions.
    pub async fn announce(
        &self,
        instance_id: &str,
        node_id: &str,
        ttl: Duration,
    ) -> Result<(), BusError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_TTL,
            ttl.as_secs().max(1).to_string().as_str(),
        );
        let subject = format!("$KV.{OWNERS_BUCKET}.{NODE_KEY_PREFIX}{instance_id}");
        self.context
            .publish_with_headers(subject, headers, Bytes::from(node_id.to_string()))
            .await
            .map_err(|e| BusError::nats("announce the node", e))?
            .await
            .map_err(|e| BusError::nats("announce the node", e))?;
        Ok(())
    }

    /// Withdraws a node's announcement (at shutdown).
    pub async fn withdraw(&self, instance_id: &str) -> Result<(), BusError> {
        self.bucket
            .delete(format!("{NODE_KEY_PREFIX}{instance_id}"))
            .await
            .map_err(|e| BusError::nats("withdraw the node", e))
    }

    /// Every partition's current lease.
    pub async fn current(&self) -> Result<BTreeMap<u32, HeldLease>, BusError> {
        let mut keys = self
            .bucket
            .keys()
            .await
            .map_err(|e| BusError::nats("list the leases", e))?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            names.push(key.map_err(|e| BusError::nats("list the leases", e))?);
        }
        let mut out = BTreeMap::new();
        for key in names {
            let Some(partition) = partition_of_key(&key) else {
                continue;
            };
            let entry = self
                .bucket
                .entry(key)
                .await
                .map_err(|e| BusError::nats("read a lease", e))?;
            if let Some(held) = entry.and_then(|e| held_from_entry(&e)) {
                out.insert(partition, held);
            }
        }
        Ok(out)
    }

    /// Watches every lease from now on, starting with the current values. Each item is a
    /// partition and its holder, or `None` when the lease was released or expired.
    pub async fn watch(
        &self,
    ) -> Result<impl futures::Stream<Item = LeaseChange> + Send + 'static, BusError> {
        let watch = self
            .bucket
            .watch_with_history(">")
            .await
            .map_err(|e| BusError::nats("watch the leases", e))?;
        Ok(watch.filter_map(|entry| async move {
            match entry {
                Ok(entry) => {
                    if let Some(instance_id) = entry.key.strip_prefix(NODE_KEY_PREFIX) {
                        return Some(LeaseChange::Node {
                            instance_id: instance_id.to_string(),
                            alive: entry.operation == kv::Operation::Put,
                        });
                    }
                    let partition = partition_of_key(&entry.key)?;
                    Some(LeaseChange::Changed {
                        partition,
                        holder: held_from_entry(&entry),
                    })
                }
                Err(error) => Some(LeaseChange::Failed(error.to_string())),
            }
        }))
    }
}

/// One change seen by [`Owners::watch`].
#[derive(Debug)]
pub enum LeaseChange {
    /// A partition's lease changed: its holder, or `None` once released or expired.
    Changed {
        /// The partition.
        partition: u32,
        /// Its holder now.
        holder: Option<HeldLease>,
    },
    /// A node announced itself (`alive`), or its announcement expired or was withdrawn.
    Node {
        /// The node process's instance id.
        instance_id: String,
        /// Whether it is alive.
        alive: bool,
    },
    /// The watch failed (it must be started again).
    Failed(String),
}

fn held_from_entry(entry: &kv::Entry) -> Option<HeldLease> {
    if entry.operation != kv::Operation::Put {
        return None;
    }
    let lease: Lease = serde_json::from_slice(&entry.value).ok()?;
    Some(HeldLease {
        lease,
        revision: entry.revision,
        written_at: Timestamp::from_second(entry.created.unix_timestamp())
            .unwrap_or(Timestamp::UNIX_EPOCH),
    })
}

/// The most partitions a node should own when `live` nodes share `partitions`.
pub fn fair_share(partitions: u32, live: usize) -> u32 {
    let live = u32::try_from(live.max(1)).unwrap_or(u32::MAX);
    partitions.div_ceil(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_partitions() {
        assert_eq!(lease_key(7), "p7");
        assert_eq!(partition_of_key("p7"), Some(7));
        assert_eq!(partition_of_key("x7"), None);
        assert_eq!(partition_of_key("p"), None);
    }

    #[test]
    fn fair_share_rounds_up() {
        assert_eq!(fair_share(4, 3), 2);
        assert_eq!(fair_share(4, 1), 4);
        assert_eq!(fair_share(16, 3), 6);
        assert_eq!(fair_share(4, 0), 4);
    }

    #[test]
    fn the_bucket_keeps_one_value_and_expiry_markers() {
        let config = owners_bucket_config(3);
        assert_eq!(config.history, 1);
        assert_eq!(config.limit_markers, Some(EXPIRY_MARKER_TTL));
        assert_eq!(config.num_replicas, 3);
    }
}
