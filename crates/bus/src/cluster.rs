//! Cluster identity and provisioning (`planledger cluster init`): the key-value bucket
//! `planledger_cluster` with the partition count and each partition's log id, and one stream
//! per partition, `PLANLEDGER_P<nn>`.
//!
//! Nothing else ever creates these: a node that finds a partition stream missing refuses to
//! serve it (ADR 0007: nothing recreates a stream behind the operator's back).
//!
//! The partition streams are the truth of cluster mode, so they must only live on servers that
//! fsync every write before acknowledging it (`jetstream { sync_interval: always }`). A client
//! cannot read a server's JetStream settings over the NATS protocol (only the system account
//! can, with `$SYS.REQ.SERVER.PING.VARZ`), so [`provision`] takes the `/varz` documents of the
//! servers' monitoring endpoints ([`ServerDurability::from_varz`]) and refuses unless every one
//! has `jetstream.config.sync_always: true` and there is one document per JetStream server of
//! the cluster (`jetstream.meta.cluster_size`, 1 for a server outside a cluster).

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use jiff::Timestamp;
use planledger_proto::subjects;
use planledger_store::PartitionCount;
use uuid::Uuid;

use crate::BusError;
use crate::connection::find_stream;
use crate::partition_log::check_partition_stream;

/// The key-value bucket holding the cluster's identity.
pub const CLUSTER_BUCKET: &str = "planledger_cluster";
/// The key of the cluster's configuration in [`CLUSTER_BUCKET`].
pub const CLUSTER_CONFIG_KEY: &str = "config";
/// The format of [`ClusterConfig`].
pub const CLUSTER_FORMAT: &str = "planledger-cluster-v1";
/// Window in which a partition stream drops a repeated `Nats-Msg-Id` (an event id).
pub const PARTITION_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The cluster's configuration, written once by `cluster init` (create, i.e. compare-and-set
/// on an absent key) and never changed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterConfig {
    /// [`CLUSTER_FORMAT`].
    pub format: String,
    /// How many partitions the cluster has; fixed for its life.
    pub partition_count: u32,
    /// When `cluster init` created it.
    pub created_at: Timestamp,
    /// Every partition, in order.
    pub partitions: Vec<PartitionEntry>,
}

/// One partition of [`ClusterConfig`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionEntry {
    /// The partition's index, `0..partition_count`.
    pub index: u32,
    /// Its stream, `PLANLEDGER_P<nn>`.
    pub stream: String,
    /// The identity of its log (a UUIDv7), the same on every node that caches it.
    pub log_id: Uuid,
}

impl ClusterConfig {
    /// A fresh configuration for `count` partitions, each with a new log id.
    pub fn new(count: PartitionCount, created_at: Timestamp) -> Self {
        Self {
            format: CLUSTER_FORMAT.to_string(),
            partition_count: count.get(),
            created_at,
            partitions: (0..count.get())
                .map(|index| PartitionEntry {
                    index,
                    stream: subjects::partition_stream_name(index),
                    log_id: Uuid::now_v7(),
                })
                .collect(),
        }
    }
}

/// What one server's `/varz` says about the durability of its JetStream writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerDurability {
    /// `server_name`.
    pub server_name: String,
    /// `jetstream.config.sync_always`: every write fsynced before it is acknowledged.
    pub sync_always: bool,
    /// `jetstream.meta.cluster_size`, 1 for a server outside a cluster.
    pub cluster_size: usize,
}

impl ServerDurability {
    /// Reads a server's `/varz` monitoring document (`http://<host>:<monitor port>/varz`).
    pub fn from_varz(varz: &serde_json::Value) -> Result<Self, BusError> {
        let server_name = varz
            .get("server_name")
            .and_then(|v| v.as_str())
            .ok_or_else(|| BusError::NotDurable {
                detail: "a /varz document has no server_name".into(),
            })?
            .to_string();
        let jetstream = varz
            .get("jetstream")
            .filter(|js| js.get("config").is_some())
            .ok_or_else(|| BusError::NotDurable {
                detail: format!("server {server_name} does not run JetStream"),
            })?;
        let sync_always = jetstream
            .pointer("/config/sync_always")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let cluster_size = jetstream
            .pointer("/meta/cluster_size")
            .and_then(|v| v.as_u64())
            .map_or(1, |size| size.max(1) as usize);
        Ok(Self {
            server_name,
            sync_always,
            cluster_size,
        })
    }
}

/// Checks that `servers` are every JetStream server of the cluster and that each fsyncs every
/// write; returns how many servers the cluster has.
pub fn check_durability(servers: &[ServerDurability]) -> Result<usize, BusError> {
    if servers.is_empty() {
        return Err(BusError::NotDurable {
            detail: "no server's monitoring endpoint was checked".into(),
        });
    }
    let unsynced: Vec<&str> = servers
        .iter()
        .filter(|s| !s.sync_always)
        .map(|s| s.server_name.as_str())
        .collect();
    if !unsynced.is_empty() {
        return Err(BusError::NotDurable {
            detail: format!(
                "server(s) {} do not fsync every JetStream write (set `jetstream {{ \
                 sync_interval: always }}`)",
                unsynced.join(", ")
            ),
        });
    }
    let names: BTreeSet<&str> = servers.iter().map(|s| s.server_name.as_str()).collect();
    let size = servers.iter().map(|s| s.cluster_size).max().unwrap_or(1);
    if names.len() < size {
        return Err(BusError::NotDurable {
            detail: format!(
                "the cluster has {size} JetStream servers but only {} were checked ({}); pass \
                 the monitoring URL of every server",
                names.len(),
                names.into_iter().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    Ok(size)
}

/// The configuration of partition `index`'s stream for a cluster of `replicas`.
pub fn partition_stream_config(index: u32, replicas: usize) -> stream::Config {
    stream::Config {
        name: subjects::partition_stream_name(index),
        description: Some(format!("Planledger partition {index}: the log (the truth)")),
        subjects: vec![format!("{}.>", subjects::partition_subject_prefix(index))],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        duplicate_window: PARTITION_DUPLICATE_WINDOW,
        allow_atomic_publish: true,
        allow_direct: true,
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    }
}

/// What [`provision`] found and did.
#[derive(Clone, Debug)]
pub struct Provisioned {
    /// The cluster's configuration (the one found, or the one created).
    pub config: ClusterConfig,
    /// Whether this run created the configuration.
    pub created_config: bool,
    /// Streams this run created (empty on a re-run).
    pub created_streams: Vec<String>,
    /// Whether the partition lease bucket (`planledger_owners`) was created by this run.
    pub created_owners: bool,
    /// Replicas of each stream created (3 on a cluster of 3 or more servers, else 1).
    pub replicas: usize,
}

/// The cluster's configuration, or `None` before `cluster init`.
pub async fn read_cluster_config(client: &Client) -> Result<Option<ClusterConfig>, BusError> {
    let context = jetstream::new(client.clone());
    if find_stream(&context, &bucket_stream()).await?.is_none() {
        return Ok(None);
    }
    let bucket = context
        .get_key_value(CLUSTER_BUCKET)
        .await
        .map_err(|e| BusError::nats("open the cluster bucket", e))?;
    read_config(&bucket).await
}

/// The stream behind the bucket.
fn bucket_stream() -> String {
    format!("KV_{CLUSTER_BUCKET}")
}

/// How long a read of the cluster's configuration waits out a bucket that answers "no
/// responders" (its stream's replicas electing a leader, a server restarting): a node starting
/// then waits instead of exiting.
const CONFIG_READ_PATIENCE: Duration = Duration::from_secs(30);

async fn read_config(bucket: &kv::Store) -> Result<Option<ClusterConfig>, BusError> {
    let started = std::time::Instant::now();
    let found = loop {
        match bucket.get(CLUSTER_CONFIG_KEY).await {
            Ok(found) => break found,
            Err(e)
                if e.to_string().contains("no responders")
                    && started.elapsed() < CONFIG_READ_PATIENCE =>
            {
                tracing::warn!(error = %e, "the cluster bucket does not answer yet; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(BusError::nats("read the cluster configuration", e)),
        }
    };
    let Some(bytes) = found else {
        return Ok(None);
    };
    let config: ClusterConfig =
        serde_json::from_slice(&bytes).map_err(|e| BusError::ClusterConfigInvalid {
            detail: e.to_string(),
        })?;
    if config.format != CLUSTER_FORMAT || config.partitions.len() != config.partition_count as usize
    {
        return Err(BusError::ClusterConfigInvalid {
            detail: format!(
                "format {:?} with {} partitions listed for a count of {}",
                config.format,
                config.partitions.len(),
                config.partition_count
            ),
        });
    }
    Ok(Some(config))
}

/// Creates the cluster: its configuration (once; a re-run with the same count finds it) and
/// every partition stream that is missing. Refuses servers that do not fsync every write, a
/// different partition count than the cluster was created with, and an existing partition
/// stream configured otherwise.
pub async fn provision(
    client: &Client,
    count: PartitionCount,
    servers: &[ServerDurability],
) -> Result<Provisioned, BusError> {
    let cluster_size = check_durability(servers)?;
    let replicas = if cluster_size >= 3 { 3 } else { 1 };
    let context = jetstream::new(client.clone());
    let bucket = match find_stream(&context, &bucket_stream()).await? {
        Some(_) => context
            .get_key_value(CLUSTER_BUCKET)
            .await
            .map_err(|e| BusError::nats("open the cluster bucket", e))?,
        None => context
            .create_key_value(kv::Config {
                bucket: CLUSTER_BUCKET.to_string(),
                description: "Planledger cluster identity (partition count, log ids)".into(),
                history: 1,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::nats("create the cluster bucket", e))?,
    };
    let (config, created_config) = match read_config(&bucket).await? {
        Some(existing) => (existing, false),
        None => {
            let fresh = ClusterConfig::new(count, Timestamp::now());
            let bytes = serde_json::to_vec(&fresh).map_err(|e| BusError::ClusterConfigInvalid {
                detail: e.to_string(),
            })?;
            match bucket.create(CLUSTER_CONFIG_KEY, Bytes::from(bytes)).await {
                Ok(_) => (fresh, true),
                // Another `cluster init` got there first: its configuration is the one.
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    match read_config(&bucket).await? {
                        Some(existing) => (existing, false),
                        None => return Err(BusError::nats("create the cluster configuration", e)),
                    }
                }
                Err(e) => return Err(BusError::nats("create the cluster configuration", e)),
            }
        }
    };
    if config.partition_count != count.get() {
        return Err(BusError::ClusterMismatch {
            existing: config.partition_count,
            asked: count.get(),
        });
    }
    let created_owners = crate::leases::ensure_owners_bucket(client, replicas).await?;
    let mut created_streams = Vec::new();
    for entry in &config.partitions {
        match find_stream(&context, &entry.stream).await? {
            Some(mut existing) => {
                let info = existing
                    .info()
                    .await
                    .map_err(|e| BusError::nats("read stream info", e))?;
                check_partition_stream(&info.config, entry.index)?;
            }
            None => {
                context
                    .create_stream(partition_stream_config(entry.index, replicas))
                    .await
                    .map_err(|e| BusError::nats("create a partition stream", e))?;
                created_streams.push(entry.stream.clone());
            }
        }
    }
    Ok(Provisioned {
        config,
        created_config,
        created_streams,
        created_owners,
        replicas,
    })
}

/// Waits until every partition stream of `config` has a leader (an R1 stream, with no group,
/// counts as led), so that the first commit after `cluster init` does not meet a stream still
/// electing one. `progress` is told how many have one after every look.
pub async fn wait_for_leaders(
    client: &Client,
    config: &ClusterConfig,
    timeout: std::time::Duration,
    mut progress: impl FnMut(usize),
) -> Result<(), BusError> {
    let context = jetstream::new(client.clone());
    let started = std::time::Instant::now();
    let mut waiting: Vec<String> = config.partitions.iter().map(|p| p.stream.clone()).collect();
    let total = waiting.len();
    loop {
        let mut still = Vec::new();
        for name in waiting {
            // Looking the stream up fetched its info: one request per stream, not two.
            let led = match find_stream(&context, &name).await {
                Ok(Some(stream)) => stream
                    .cached_info()
                    .cluster
                    .as_ref()
                    .is_none_or(|cluster| cluster.leader.is_some()),
                // Not created (yet) or not answering: not led.
                Ok(None) | Err(_) => false,
            };
            if !led {
                still.push(name);
            }
        }
        progress(total - still.len());
        if still.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(BusError::StreamsWithoutLeader {
                streams: still,
                waited: format!("{timeout:?}"),
            });
        }
        waiting = still;
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, sync_always: bool, cluster_size: usize) -> ServerDurability {
        ServerDurability {
            server_name: name.into(),
            sync_always,
            cluster_size,
        }
    }

    #[test]
    fn varz_is_read_for_sync_and_cluster_size() {
        let varz = serde_json::json!({
            "server_name": "n1",
            "jetstream": {"config": {"sync_always": true}, "meta": {"cluster_size": 3}}
        });
        assert_eq!(
            ServerDurability::from_varz(&varz).ok(),
            Some(server("n1", true, 3))
        );
        let lone = serde_json::json!({"server_name": "solo", "jetstream": {"config": {}}});
        assert_eq!(
            ServerDurability::from_varz(&lone).ok(),
            Some(server("solo", false, 1))
        );
        let no_js = serde_json::json!({"server_name": "plain", "jetstream": {}});
        assert!(ServerDurability::from_varz(&no_js).is_err());
    }

    #[test]
    fn every_server_must_sync_and_be_checked() {
        let all = [
            server("n1", true, 3),
            server("n2", true, 3),
            server("n3", true, 3),
        ];
        assert_eq!(check_durability(&all).ok(), Some(3));
        assert!(check_durability(&all[..2]).is_err());
        assert!(check_durability(&[]).is_err());
        let error = check_durability(&[server("n1", true, 3), server("n2", false, 3)])
            .expect_err("an unsynced server is refused");
        assert!(error.to_string().contains("n2"), "{error}");
        assert_eq!(check_durability(&[server("solo", true, 1)]).ok(), Some(1));
    }

    #[test]
    fn a_fresh_configuration_names_every_partition() {
        let count = PartitionCount::new(3).expect("valid count");
        let config = ClusterConfig::new(count, Timestamp::UNIX_EPOCH);
        let streams: Vec<&str> = config
            .partitions
            .iter()
            .map(|p| p.stream.as_str())
            .collect();
        assert_eq!(
            streams,
            ["PLANLEDGER_P00", "PLANLEDGER_P01", "PLANLEDGER_P02"]
        );
        let json = serde_json::to_value(&config).expect("serializes");
        assert_eq!(json["partition_count"], 3);
        assert_eq!(json["partitions"][1]["index"], 1);
        assert!(json["partitions"][0]["log_id"].is_string());
    }

    #[test]
    fn the_stream_config_is_a_fit_partition_log() {
        let config = partition_stream_config(7, 3);
        assert!(check_partition_stream(&config, 7).is_ok());
        assert!(check_partition_stream(&config, 8).is_err());
        assert_eq!(config.num_replicas, 3);
    }
}
