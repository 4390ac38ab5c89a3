//! `planledger-bench projections --cluster`: the read models' rebuild rate in cluster mode,
//! beside the single-node rate measured on the same events in the same run.
//!
//! A private 3-server JetStream cluster is started and provisioned with `--partitions` R3
//! partition streams, as `planledger cluster init` does. The same generated plans are appended
//! through each partition's log in external-commit mode (each append committed to its partition
//! stream as an atomic batch, the write path a writer node runs). Then each read model is built
//! from nothing the way `planledger projector --cluster` builds it (one runtime per partition,
//! each on its own durable consumer, all into one database), timed until every partition's
//! checkpoint is its stream's last position; and then rebuilt as `POST
//! /v1/projections/NAME/rebuild` does (one new generation filled from every partition, switched
//! once all have caught up), timed until the switch. The rebuild is the figure set beside the
//! single-node rebuild.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use planledger_bus::{
    JetStreamCommitter, JetStreamSource, JetStreamSourceConfig, PartitionLogConfig,
};
use planledger_projections::{ProjectionHandle, RuntimeOptions};
use planledger_store::{Commit, EventStore, PartitionCount, StoreOptions, StreamId};
use tokio_util::sync::CancellationToken;

use crate::ScratchDir;
use crate::cluster::{PrivateCluster, provision};
use crate::projections::{append_interleaved, bar};

/// One read model's single-node rebuild: its name and events per second.
pub(crate) struct SingleRate {
    pub name: String,
    pub events_per_second: f64,
}

/// Builds the partition logs from the same plans as the single-node log, then times each read
/// model's rebuild over the partition streams and prints it beside `single`.
pub(crate) async fn run(
    base: &ScratchDir,
    partitions: u32,
    plans: u64,
    per_plan: u64,
    single: &[SingleRate],
) -> Result<()> {
    let count = PartitionCount::new(partitions)?;
    println!(
        "\ncluster mode: {partitions} partition streams (R3) on a private 3-server JetStream cluster"
    );
    let cluster = PrivateCluster::start().await?;
    let (client, _) = provision(&cluster, partitions).await?;
    let config = planledger_bus::read_cluster_config(&client)
        .await?
        .context("the provisioned cluster has no configuration")?;
    let mut stores = Vec::with_capacity(partitions as usize);
    for entry in &config.partitions {
        let committer =
            JetStreamCommitter::open(client.clone(), PartitionLogConfig::new(entry.index))
                .await
                .with_context(|| format!("opening partition {}'s stream", entry.index))?;
        let options = StoreOptions {
            commit: Commit::External(Arc::new(committer)),
            log_id: Some(entry.log_id.to_string()),
            partition: Some((count, entry.index)),
            ..StoreOptions::default()
        };
        let path = base
            .join("cluster")
            .join(entry.index.to_string())
            .join("log");
        std::fs::create_dir_all(&path)?;
        let store = tokio::task::spawn_blocking(move || EventStore::open(&path, options))
            .await
            .context("opening a partition log")??;
        stores.push(store);
    }
    append_by_partition(&stores, count, plans, per_plan).await?;
    let heads: Vec<u64> = stores.iter().map(|s| s.last_position().get()).collect();
    let total: u64 = heads.iter().sum();
    anyhow::ensure!(
        total == plans * per_plan,
        "the partition logs hold {total} events, not {}",
        plans * per_plan
    );
    println!("partition logs: {heads:?} events");

    println!(
        "\nrebuild from position 0 over {partitions} partitions (one runtime each, one database), beside the single-node rebuild of the same events:"
    );
    println!(
        "{:>16} {:>10} {:>10} {:>10} {:>12} {:>14} {:>7}",
        "projection", "events", "initial s", "rebuild s", "events/s", "single-node/s", "ratio"
    );
    let js = async_nats::jetstream::new(client);
    for (run, rate) in single.iter().enumerate() {
        let (initial, rebuilt) =
            build_and_rebuild(base, &js, &rate.name, partitions, &heads, run).await?;
        let cluster_rate = total as f64 / rebuilt.as_secs_f64();
        println!(
            "{:>16} {:>10} {:>10.2} {:>10.2} {:>12.0} {:>14.0} {:>7.2}",
            rate.name,
            total,
            initial.as_secs_f64(),
            rebuilt.as_secs_f64(),
            cluster_rate,
            rate.events_per_second,
            cluster_rate / rate.events_per_second
        );
    }
    drop(stores);
    drop(cluster);
    Ok(())
}

/// Appends `per_plan` events to each plan, each plan through its partition's log.
async fn append_by_partition(
    stores: &[EventStore],
    count: PartitionCount,
    plans: u64,
    per_plan: u64,
) -> Result<()> {
    let mut by_partition = vec![Vec::new(); stores.len()];
    for plan in 0..plans {
        let stream = StreamId::new(format!("bench/plan-{plan}"))?;
        by_partition[count.partition_of(&stream).index() as usize].push(plan);
    }
    let progress = bar(plans * per_plan, "appending to the partition logs");
    let started = Instant::now();
    let writers = (128 / stores.len() as u64).max(1);
    let mut tasks = Vec::new();
    for (store, mine) in stores.iter().zip(by_partition) {
        let (store, progress) = (store.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            append_interleaved(&store, mine, per_plan, writers, 8, &progress).await
        }));
    }
    for task in tasks {
        task.await.context("appender task")??;
    }
    progress.finish_and_clear();
    println!(
        "appended {} events in {:.1} s ({:.0} events/s, committed to the partition streams)",
        plans * per_plan,
        started.elapsed().as_secs_f64(),
        (plans * per_plan) as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds the read model `name` from nothing over every partition stream, then rebuilds it in
/// a new generation; the time until every partition's checkpoint reached its head, and the
/// time from the rebuild request until the rebuilt generation went live.
async fn build_and_rebuild(
    base: &ScratchDir,
    js: &async_nats::jetstream::Context,
    name: &str,
    partitions: u32,
    heads: &[u64],
    run: usize,
) -> Result<(Duration, Duration)> {
    let db =
        planledger_projections::ReadModelDb::open(base.join("cluster-models").join(name), name)?;
    db.claim_partitions(partitions)?;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let mut handles: Vec<ProjectionHandle> = Vec::new();
    let mut tasks = Vec::new();
    for partition in 0..partitions {
        let mut config = JetStreamSourceConfig::for_projection(
            &planledger_proto::subjects::partition_stream_name(partition),
            name,
        );
        config.durable = format!("bench-{name}-{run}-p{partition:02}");
        let (handle, task) = planledger_projections::spawn(
            planledger_projections::projector(name)?,
            db.for_partition(partition, partitions),
            JetStreamSource::new(js.clone(), config),
            RuntimeOptions::default(),
            shutdown.clone(),
        )?;
        handles.push(handle);
        tasks.push(task);
    }
    let first = db.live_generation();
    wait_for(&handles, heads, first, &format!("build {name}")).await?;
    let initial = started.elapsed();
    let started = Instant::now();
    for handle in &handles {
        handle.rebuild().await?;
    }
    wait_for(&handles, heads, first + 1, &format!("rebuild {name}")).await?;
    let rebuilt = started.elapsed();
    shutdown.cancel();
    for task in tasks {
        task.await.context("projector task")??;
    }
    Ok((initial, rebuilt))
}

/// Waits until every partition's projector serves `generation` (or a later one), runs no
/// rebuild, and has reached its head.
async fn wait_for(
    handles: &[ProjectionHandle],
    heads: &[u64],
    generation: u64,
    label: &str,
) -> Result<()> {
    let total: u64 = heads.iter().sum();
    let progress = bar(total, label);
    loop {
        let statuses: Vec<_> = handles.iter().map(ProjectionHandle::status).collect();
        if let Some(failed) = statuses.iter().find(|s| !s.is_running()) {
            anyhow::bail!("{label}: a projector stopped: {:?}", failed.error);
        }
        let done: u64 = statuses
            .iter()
            .map(|s| s.rebuild.as_ref().map_or(s.checkpoint, |r| r.checkpoint))
            .sum();
        progress.set_position(done.min(total));
        let finished = statuses.iter().zip(heads).all(|(status, head)| {
            status.generation >= generation
                && status.rebuild.is_none()
                && status.checkpoint >= *head
        });
        if finished {
            progress.finish_and_clear();
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
