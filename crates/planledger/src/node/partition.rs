//! A partition served by a node: its cache of the partition stream, opened under
//! `<data_dir>/partitions/<p>/log`, and the same services a single node runs over its log.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use planledger_api::ApiState;
use planledger_app::App;
use planledger_bus::{CommandIngress, IngressConfig};
use planledger_store::{Commit, EventStore, LogHealth, StoreOptions};

use super::Node;

/// An open partition: its cache and the services over it.
pub(crate) struct Served {
    pub(crate) partition: u32,
    pub(crate) store: EventStore,
    /// The single-node HTTP router over this partition's log (its plan routes are what the
    /// node's router dispatches to).
    pub(crate) router: Router,
    /// The NATS command door over this partition's log.
    pub(crate) ingress: CommandIngress,
}

impl Served {
    /// Whether the cache is behind its partition stream: only asked when the cache answered
    /// that something does not exist. The stream runs ahead of the cache by the commits this
    /// node has had acknowledged and not applied yet, so the cache is given a moment to reach
    /// the stream's last position first. `Err` when the stream cannot be asked (then nobody can
    /// tell, and "does not exist" must not be answered).
    pub(crate) async fn is_behind(&self, client: &async_nats::Client) -> Result<bool, String> {
        let context = async_nats::jetstream::new(client.clone());
        let name = planledger_proto::subjects::partition_stream_name(self.partition);
        let last = match context.get_stream(&name).await {
            Ok(mut stream) => match stream.info().await {
                Ok(info) => info.state.last_sequence,
                Err(error) => return Err(error.to_string()),
            },
            Err(error) => return Err(error.to_string()),
        };
        if last <= self.store.last_position().get() {
            return Ok(false);
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.store.wait_applied(planledger_store::Position(last)),
        )
        .await;
        Ok(last > self.store.last_position().get())
    }

    /// The partition's state for `/readyz` and metrics.
    pub(crate) fn state(&self) -> &'static str {
        match self.store.health() {
            LogHealth::CatchingUp => "catching_up",
            LogHealth::Stopped(_) => "halted",
            _ => "serving",
        }
    }
}

/// Opens partition `partition`'s cache (catching up with its stream) and the services over it.
pub(crate) async fn open(node: &Arc<Node>, partition: u32) -> Result<Served> {
    let entry = node
        .cluster
        .partitions
        .iter()
        .find(|entry| entry.index == partition)
        .with_context(|| format!("partition {partition} is not in the cluster's configuration"))?
        .clone();
    let committer = planledger_bus::JetStreamCommitter::open(
        node.client.clone(),
        planledger_bus::PartitionLogConfig {
            partition,
            timeout: node.commit_timeout,
        },
    )
    .await
    .with_context(|| format!("opening partition {partition}'s stream"))?;
    let path = node
        .data_dir
        .join("partitions")
        .join(partition.to_string())
        .join("log");
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    let options = StoreOptions {
        min_free_bytes: node.min_free_bytes,
        commit: Commit::External(Arc::new(committer)),
        log_id: Some(entry.log_id.to_string()),
        partition: Some((node.count, partition)),
        shared_memory: Some(node.memory.clone()),
        ..StoreOptions::default()
    };
    // A cache this node gave up a moment ago may still be closing (requests in flight hold
    // it): wait for its lock for a while.
    let mut attempt = 0;
    let store = loop {
        let options = options.clone();
        let at = path.clone();
        let opened = tokio::task::spawn_blocking(move || EventStore::open(&at, options))
            .await
            .context("opening the partition cache")?;
        match opened {
            Ok(store) => break store,
            Err(error) if attempt < 50 && error.to_string().contains("lock") => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => {
                return Err(error).with_context(|| {
                    format!(
                        "opening partition {partition}'s cache in {}",
                        path.display()
                    )
                });
            }
        }
    };
    // Serve only a cache that has caught up with the stream: a command decided on a cache that
    // is behind would be refused by the stream anyway, but a read or a "no such plan" answer
    // from it would be stale.
    loop {
        match store.health() {
            LogHealth::CatchingUp => {
                if !node.table().sessions.contains_key(&partition) {
                    anyhow::bail!("partition {partition} was given up while its cache caught up");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            LogHealth::Stopped(failure) => {
                anyhow::bail!(
                    "partition {partition}'s cache halted while catching up: {failure:?}"
                );
            }
            _ => break,
        }
    }
    let digest_key = planledger_app::DigestKey::load_or_create(&node.data_dir)
        .context("loading the digest signing key")?;
    let app = App::new(store.clone(), node.auth.clone()).with_digest_key(digest_key);
    let mut state = ApiState::new(app.clone(), node.api.clone());
    state.limiter = node.limiter.clone();
    state.shutdown = Arc::new(node.shutdown.clone());
    let router = planledger_api::router(state);
    let ingress = CommandIngress::new(
        app.commands.clone(),
        node.auth.clone(),
        IngressConfig {
            max_body_bytes: node.api.body_limit_bytes,
            ..IngressConfig::default()
        },
    )
    .limited_by(node.limiter.clone());
    Ok(Served {
        partition,
        store,
        router,
        ingress,
    })
}

/// Closes a partition this node no longer serves: waits (bounded) for the requests still
/// holding it, then flushes its cache. Nothing is lost if the wait runs out: the stream is the
/// truth and the cache is checked against it when it is opened again.
pub(crate) async fn close(served: Arc<Served>, wait: Duration) {
    let partition = served.partition;
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        if Arc::strong_count(&served) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store = served.store.clone();
    drop(served);
    let flushed = tokio::task::spawn_blocking(move || store.flush()).await;
    if let Ok(Err(error)) = flushed {
        tracing::warn!(partition, %error, "flushing a partition cache at close");
    }
}
