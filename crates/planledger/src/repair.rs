//! `planledger cluster repair`: recreates a lost partition stream from a cache (a stopped node's
//! data directory, or a backup) and republishes the cache's history into it from position 1,
//! through the partition's own committer (the same subjects, headers and bodies as a node's
//! commits, each batch naming the sequence before it), after an explicit confirmation.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use planledger_bus::{JetStreamCommitter, PartitionLogConfig};
use planledger_store::{Committer, LogCopy, Position};

/// Events republished per atomic batch.
const REPUBLISH_BATCH: usize = 500;

/// Flags of `cluster repair`.
#[derive(clap::Args, Debug)]
pub struct RepairArgs {
    /// NATS URL of the JetStream cluster.
    #[arg(long, env = "PLANLEDGER_NATS")]
    pub nats: String,
    /// The partition whose stream was lost.
    #[arg(long)]
    pub partition: u32,
    /// A stopped node's data directory, or a backup, holding `partitions/<P>/log`: the history
    /// to republish.
    #[arg(long)]
    pub from: PathBuf,
    /// Do it: create the stream if it is missing and publish into it. Without this flag the
    /// command only prints what it would do, and exits non-zero.
    #[arg(long)]
    pub yes_recreate_the_stream: bool,
}

/// What the repair has to do.
struct Plan {
    stream: String,
    create: bool,
    replicas: usize,
    /// The stream's last position (0 when missing or empty).
    from: u64,
    /// The cache's last position.
    to: u64,
}

/// Runs `cluster repair`.
pub async fn run(args: RepairArgs) -> Result<()> {
    let client = planledger_bus::connect(&args.nats, "planledger-cluster-repair").await?;
    let cluster = crate::cluster::configuration(&client, &args.nats).await?;
    let entry = cluster
        .partitions
        .iter()
        .find(|entry| entry.index == args.partition)
        .with_context(|| {
            format!(
                "--partition {} is not a partition of this cluster (0 to {})",
                args.partition,
                cluster.partition_count.saturating_sub(1)
            )
        })?
        .clone();
    let cache_path = args
        .from
        .join("partitions")
        .join(args.partition.to_string())
        .join("log");
    let cache = Arc::new(LogCopy::open(&cache_path).with_context(|| {
        format!(
            "opening the cache {} (stop the node that holds it)",
            cache_path.display()
        )
    })?);
    let summary = cache.summary()?;
    let log_id = entry.log_id.to_string();
    if summary.log_id.as_deref() != Some(log_id.as_str()) {
        bail!(
            "{} is the cache of log {:?}, but partition {} of this cluster is log {log_id}: it belongs to another cluster; give a cache of this one",
            cache_path.display(),
            summary.log_id,
            args.partition
        );
    }
    refuse_if_leased(&client, args.partition).await?;
    verify_cache(&cache, summary.last_position.get()).await?;
    let plan = plan(&client, args.partition, &cache, summary.last_position.get()).await?;
    let stream = plan.stream.clone();
    if plan.from >= plan.to {
        println!(
            "stream {stream} already holds the cache's history (to position {}): nothing to do",
            plan.to
        );
        return Ok(());
    }
    let what = format!(
        "{}republish positions {} to {} of {} into {stream}",
        if plan.create {
            format!("create stream {stream} (R{}) and ", plan.replicas)
        } else {
            String::new()
        },
        plan.from + 1,
        plan.to,
        cache_path.display()
    );
    if !args.yes_recreate_the_stream {
        bail!(
            "would {what}; nothing was done. Stop every node that may write partition {} first, then run again with --yes-recreate-the-stream",
            args.partition
        );
    }
    if plan.create {
        let context = async_nats::jetstream::new(client.clone());
        context
            .create_stream(planledger_bus::cluster::partition_stream_config(
                args.partition,
                plan.replicas,
            ))
            .await
            .with_context(|| format!("creating stream {stream}"))?;
        println!("created stream {stream} (R{})", plan.replicas);
    }
    republish(client, args.partition, cache, &plan).await?;
    println!(
        "republished positions {} to {} into {stream}; check it with `planledger cluster verify --nats {} --cache {}`",
        plan.from + 1,
        plan.to,
        args.nats,
        args.from.display()
    );
    Ok(())
}

/// Refuses while a node holds the partition's lease: it could be writing the partition.
async fn refuse_if_leased(client: &async_nats::Client, partition: u32) -> Result<()> {
    let owners = planledger_bus::leases::Owners::open(client)
        .await
        .context("reading the partition leases")?;
    if let Some(held) = owners.current().await?.get(&partition) {
        bail!(
            "partition {partition} is held by node {} (instance {}): stop that node (or wait for its lease to expire) so nothing writes the partition during the repair, then run again",
            held.lease.node_id,
            held.lease.instance_id
        );
    }
    Ok(())
}

async fn verify_cache(cache: &Arc<LogCopy>, last: u64) -> Result<()> {
    let cache = cache.clone();
    let bar = progress(last, "verify cache");
    let shown = bar.clone();
    let report = tokio::task::spawn_blocking(move || {
        cache.verify(|p: Position| {
            if p.get().is_multiple_of(1024) {
                shown.set_position(p.get());
            }
        })
    })
    .await
    .context("verify task")??;
    bar.finish_and_clear();
    if let Some((position, why)) = report.first_broken {
        bail!(
            "the cache is broken at position {position}: {why}; repair from another cache or backup"
        );
    }
    Ok(())
}

/// Finds the stream's state: missing, or a prefix of the cache (else refuses).
async fn plan(
    client: &async_nats::Client,
    partition: u32,
    cache: &Arc<LogCopy>,
    to: u64,
) -> Result<Plan> {
    let context = async_nats::jetstream::new(client.clone());
    let stream = planledger_proto::subjects::partition_stream_name(partition);
    let replicas = replicas_of_siblings(&context, partition).await;
    if planledger_bus::find_stream(&context, &stream)
        .await?
        .is_none()
    {
        return Ok(Plan {
            stream,
            create: true,
            replicas,
            from: 0,
            to,
        });
    }
    let committer = JetStreamCommitter::open(client.clone(), PartitionLogConfig::new(partition))
        .await
        .with_context(|| format!("opening stream {stream}"))?;
    let cache = cache.clone();
    let from = tokio::task::spawn_blocking(move || -> Result<u64> {
        let last = committer.last_position()?.get();
        if last == 0 {
            return Ok(0);
        }
        if last > to {
            bail!(
                "the stream holds positions up to {last}, past the cache's {to}: it is not lost; a node's cache catches up from it (nothing to repair)"
            );
        }
        let theirs = committer.read_after(Position(last - 1), 1)?;
        let ours = cache.commit_events(Position(last - 1), 1, &Default::default())?;
        let same = match (theirs.first(), ours.first()) {
            (Some(theirs), Some(ours)) => {
                serde_json::from_slice::<planledger_store::Envelope>(&ours.stored)
                    .map(|envelope| envelope.hash == theirs.envelope.hash)
                    .unwrap_or(false)
            }
            _ => false,
        };
        if !same {
            bail!(
                "the stream's event at position {last} differs from the cache's: the stream is not a prefix of this cache; it holds another history, which a repair must not overwrite"
            );
        }
        Ok(last)
    })
    .await
    .context("stream check")??;
    Ok(Plan {
        stream,
        create: false,
        replicas,
        from,
        to,
    })
}

/// The replicas the other partition streams have (`cluster init` gives all the same), or 1.
async fn replicas_of_siblings(context: &async_nats::jetstream::Context, partition: u32) -> usize {
    for other in 0..64u32.max(partition + 1) {
        if other == partition {
            continue;
        }
        let name = planledger_proto::subjects::partition_stream_name(other);
        if let Ok(Some(stream)) = planledger_bus::find_stream(context, &name).await {
            return stream.cached_info().config.num_replicas.max(1);
        }
    }
    1
}

async fn republish(
    client: async_nats::Client,
    partition: u32,
    cache: Arc<LogCopy>,
    plan: &Plan,
) -> Result<()> {
    let committer = JetStreamCommitter::open(client, PartitionLogConfig::new(partition))
        .await
        .with_context(|| format!("opening stream {}", plan.stream))?;
    let bar = progress(plan.to, "republish");
    bar.set_position(plan.from);
    let (from, to, shown) = (plan.from, plan.to, bar.clone());
    tokio::task::spawn_blocking(move || -> Result<()> {
        let headers = cache.command_headers()?;
        let mut after = from;
        while after < to {
            let events = cache.commit_events(Position(after), REPUBLISH_BATCH, &headers)?;
            if events.is_empty() {
                bail!("the cache has no event after position {after}, though it ends at {to}");
            }
            let last = events.last().map_or(after, |e| e.position.get());
            committer.commit(Position(after), &events).with_context(|| {
                format!("publishing positions {} to {last} (run the repair again: it continues from the stream's end)", after + 1)
            })?;
            after = last;
            shown.set_position(after);
        }
        Ok(())
    })
    .await
    .context("republish task")??;
    bar.finish_and_clear();
    Ok(())
}

fn progress(len: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>14} {bar:40} {pos}/{len} events  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(message);
    bar
}
