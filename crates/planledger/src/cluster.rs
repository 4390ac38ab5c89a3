//! `planledger cluster init`: creates cluster mode's configuration and partition streams.

use anyhow::{Context, Result, bail};
use planledger_store::PartitionCount;

/// `planledger cluster ...`.
#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Create the bucket `planledger_cluster` (partition count, each partition's log id) and
    /// the partition streams `PLANLEDGER_P<nn>`; a re-run with the same count creates only what
    /// is missing. Refuses NATS servers that do not fsync every write (`sync_interval: always`).
    Init(InitArgs),
    /// Print every partition: its owner (node id, instance, HTTP address), the lease's age, the
    /// owner's cache position at its last renewal and the stream's last position.
    Status(StatusArgs),
    /// Check every partition stream from position 1 (positions gap-free and equal to the
    /// stream's sequence, each `prev_hash` the previous event's hash, each hash recomputed,
    /// each plan's versions gap-free, event ids unique) and, with `--cache`, that every node's
    /// cache of every partition is a prefix of its stream, event by event.
    Verify(VerifyArgs),
    /// Recreate a lost partition stream and republish a cache's history into it from position
    /// 1 (or continue a stream that is a prefix of the cache), with expected-last-sequence on
    /// every batch; prints what it would do unless given --yes-recreate-the-stream.
    Repair(crate::repair::RepairArgs),
}

/// Flags of `cluster verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// NATS URL of the JetStream cluster.
    #[arg(long, env = "PLANLEDGER_NATS")]
    pub nats: String,
    /// A writer node's data directory whose partition caches (`partitions/<p>/log`) are checked
    /// against the streams; repeat for several nodes. Running nodes may keep running.
    #[arg(long = "cache")]
    pub caches: Vec<std::path::PathBuf>,
}

/// Flags of `cluster status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// NATS URL of the JetStream cluster.
    #[arg(long, env = "PLANLEDGER_NATS")]
    pub nats: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `cluster init`.
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// NATS URL of the JetStream cluster.
    #[arg(long, env = "PLANLEDGER_NATS")]
    pub nats: String,
    /// Number of partitions, fixed for the life of the cluster.
    #[arg(long, default_value_t = 16)]
    pub partitions: u32,
    /// Monitoring URL (`http://host:8222`) of every NATS server of the cluster, comma-separated
    /// or repeated: their `/varz` tells whether each one fsyncs every JetStream write, which a
    /// client cannot ask over NATS. Default: the `--nats` host on port 8222 (one server).
    #[arg(long, env = "PLANLEDGER_NATS_MONITOR", value_delimiter = ',')]
    pub monitor: Vec<String>,
    /// How long to wait, once the streams exist, for every partition stream to have a leader
    /// (`500ms`, `30s`, `2m`); init fails naming the streams still without one.
    #[arg(long, default_value = "60s", value_parser = parse_wait)]
    pub wait_leaders: std::time::Duration,
}

fn parse_wait(text: &str) -> std::result::Result<std::time::Duration, String> {
    crate::config::parse_duration(text).map_err(|e| format!("{e:#}"))
}

pub async fn run(command: ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Init(args) => init(args).await,
        ClusterCommand::Status(args) => status(args).await,
        ClusterCommand::Verify(args) => verify(args).await,
        ClusterCommand::Repair(args) => crate::repair::run(args).await,
    }
}

/// One partition in `cluster status`.
#[derive(serde::Serialize)]
struct PartitionStatus {
    partition: u32,
    stream: String,
    /// `None`: the stream does not exist.
    stream_position: Option<u64>,
    owner: Option<OwnerStatus>,
}

#[derive(serde::Serialize)]
struct OwnerStatus {
    node_id: String,
    instance_id: String,
    http: Option<String>,
    held_for_seconds: i64,
    renewed_seconds_ago: i64,
    cache_position: Option<u64>,
}

/// The cluster's configuration from NATS at `nats` (for messages), or an error saying to run
/// `cluster init` first.
pub(crate) async fn configuration(
    client: &async_nats::Client,
    nats: &str,
) -> Result<planledger_bus::ClusterConfig> {
    planledger_bus::read_cluster_config(client)
        .await
        .context("reading the cluster's configuration (bucket planledger_cluster)")?
        .with_context(|| {
            format!(
                "the NATS cluster at {nats} has no Planledger cluster: run `planledger cluster init --nats {nats}` first"
            )
        })
}

async fn status(args: StatusArgs) -> Result<()> {
    let client = planledger_bus::connect(&args.nats, "planledger-cluster-status").await?;
    let config = configuration(&client, &args.nats).await?;
    let owners = planledger_bus::leases::Owners::open(&client).await?;
    let leases = owners.current().await?;
    let context = async_nats::jetstream::new(client.clone());
    let now = jiff::Timestamp::now();
    let mut rows = Vec::with_capacity(config.partitions.len());
    for entry in &config.partitions {
        // A lost stream is a row of the table (repair it with `cluster repair`), not an error
        // that hides every other partition.
        let stream_position = match planledger_bus::find_stream(&context, &entry.stream).await? {
            Some(mut stream) => Some(
                stream
                    .info()
                    .await
                    .map(|info| info.state.last_sequence)
                    .with_context(|| format!("reading stream {}", entry.stream))?,
            ),
            None => None,
        };
        let owner = leases.get(&entry.index).map(|held| OwnerStatus {
            node_id: held.lease.node_id.clone(),
            instance_id: held.lease.instance_id.clone(),
            http: held.lease.http.clone(),
            held_for_seconds: now.duration_since(held.lease.acquired_at).as_secs(),
            renewed_seconds_ago: now.duration_since(held.written_at).as_secs(),
            cache_position: held.lease.position,
        });
        rows.push(PartitionStatus {
            partition: entry.index,
            stream: entry.stream.clone(),
            stream_position,
            owner,
        });
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "partition_count": config.partition_count,
                "partitions": rows,
            }))?
        );
        return Ok(());
    }
    println!(
        "{:>9}  {:<16}  {:<20}  {:<12}  {:>8}  {:>8}  {:>14}  {:>15}",
        "PARTITION",
        "STREAM",
        "OWNER",
        "INSTANCE",
        "HELD",
        "RENEWED",
        "CACHE POSITION",
        "STREAM POSITION"
    );
    for row in &rows {
        let (owner, instance, held, renewed, cache) = match &row.owner {
            Some(o) => (
                o.node_id.clone(),
                o.instance_id
                    .chars()
                    .rev()
                    .take(12)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<String>(),
                format!("{}s", o.held_for_seconds),
                format!("{}s ago", o.renewed_seconds_ago),
                o.cache_position
                    .map_or("opening".to_string(), |p| p.to_string()),
            ),
            None => (
                "(none)".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ),
        };
        println!(
            "{:>9}  {:<16}  {:<20}  {:<12}  {:>8}  {:>8}  {:>14}  {:>15}",
            row.partition,
            row.stream,
            owner,
            instance,
            held,
            renewed,
            cache,
            row.stream_position
                .map_or("MISSING".to_string(), |p| p.to_string())
        );
    }
    let owned = rows.iter().filter(|r| r.owner.is_some()).count();
    println!("{owned} of {} partitions owned", rows.len());
    let missing: Vec<String> = rows
        .iter()
        .filter(|r| r.stream_position.is_none())
        .map(|r| r.partition.to_string())
        .collect();
    if !missing.is_empty() {
        println!(
            "partition stream(s) missing for partition(s) {}: recreate each from a cache or backup with `planledger cluster repair --partition P --from DIR` (docs/operations.md, \"Repairing a lost partition stream\")",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Events read from a stream per request.
const VERIFY_PAGE: usize = 1000;

/// What one partition's stream holds, as `cluster verify` checked it: each position's hash.
struct VerifiedStream {
    hashes: Vec<String>,
}

/// Reads and checks partition `partition`'s stream from position 1 (blocking).
fn verify_stream(
    committer: &planledger_bus::JetStreamCommitter,
    partition: u32,
    bar: &indicatif::ProgressBar,
) -> Result<VerifiedStream> {
    use planledger_store::{Committer, GENESIS_HASH, Position};
    let last = committer
        .last_position()
        .with_context(|| format!("reading partition {partition}'s stream"))?;
    let mut hashes: Vec<String> = Vec::with_capacity(last.get() as usize);
    let mut versions: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut ids = std::collections::HashSet::new();
    while (hashes.len() as u64) < last.get() {
        let after = Position(hashes.len() as u64);
        let page = committer
            .read_after(after, VERIFY_PAGE)
            .with_context(|| format!("reading partition {partition}'s stream after {after}"))?;
        if page.is_empty() {
            bail!(
                "partition {partition}: the stream ends at {} but said its last position is {last}",
                hashes.len()
            );
        }
        for committed in page {
            let event = committed.envelope;
            let expected = hashes.len() as u64 + 1;
            if event.position.get() != expected {
                bail!(
                    "partition {partition}: stream message {expected} holds position {}",
                    event.position
                );
            }
            let previous = hashes.last().map_or(GENESIS_HASH, String::as_str);
            if event.prev_hash != previous {
                bail!(
                    "partition {partition}: position {expected}'s prev_hash does not name the previous event's hash"
                );
            }
            if event.compute_hash() != event.hash {
                bail!(
                    "partition {partition}: position {expected}'s hash does not match its contents"
                );
            }
            let version = versions.entry(event.stream.to_string()).or_default();
            if event.version.get() != *version + 1 {
                bail!(
                    "partition {partition}: plan stream {} jumps from version {version} to {} at position {expected}",
                    event.stream,
                    event.version
                );
            }
            *version += 1;
            if !ids.insert(event.event_id) {
                bail!(
                    "partition {partition}: event id {} appears twice",
                    event.event_id
                );
            }
            hashes.push(event.hash);
            bar.inc(1);
        }
    }
    Ok(VerifiedStream { hashes })
}

/// Checks that the cache in `path` is a prefix of `stream`, event by event (blocking).
/// A running node's cache may have grown past what was read of the stream: `stream_last` asks
/// the stream's last position again before calling the cache ahead of it.
fn verify_cache(
    path: &std::path::Path,
    stream: &VerifiedStream,
    stream_last: impl Fn() -> u64,
) -> Result<u64> {
    use planledger_store::{LogReader, Position, StoreOptions};
    let reader = LogReader::open(path, &StoreOptions::default())
        .with_context(|| format!("opening the cache {}", path.display()))?;
    let mut last = reader.last_position().get();
    if last > stream.hashes.len() as u64 && stream_last() >= last {
        // Appended since the stream was read: check what was read.
        last = stream.hashes.len() as u64;
    }
    if last > stream.hashes.len() as u64 {
        bail!(
            "the cache {} ends at position {last}, past its stream's end at {}: the stream lost events the cache has (stream_behind)",
            path.display(),
            stream.hashes.len()
        );
    }
    let mut from = 1u64;
    while from <= last {
        let page = reader.view().read_all(Position(from), VERIFY_PAGE)?;
        if page.is_empty() {
            bail!("the cache {} has a gap at position {from}", path.display());
        }
        for event in page.into_iter().take_while(|e| e.position.get() <= last) {
            let at = event.position.get();
            if at != from || stream.hashes[(at - 1) as usize] != event.hash {
                bail!(
                    "the cache {} differs from its stream at position {at} (cache_diverged)",
                    path.display()
                );
            }
            from += 1;
        }
    }
    Ok(last)
}

async fn verify(args: VerifyArgs) -> Result<()> {
    let client = planledger_bus::connect(&args.nats, "planledger-cluster-verify").await?;
    let config = configuration(&client, &args.nats).await?;
    let mut failures = 0usize;
    let mut total_events = 0u64;
    for entry in &config.partitions {
        let committer = planledger_bus::JetStreamCommitter::open(
            client.clone(),
            planledger_bus::PartitionLogConfig::new(entry.index),
        )
        .await
        .with_context(|| format!("opening partition {}'s stream", entry.index))?;
        let partition = entry.index;
        let caches: Vec<std::path::PathBuf> = args
            .caches
            .iter()
            .map(|dir| {
                dir.join("partitions")
                    .join(partition.to_string())
                    .join("log")
            })
            .filter(|path| path.join("CURRENT").is_file())
            .collect();
        let outcome = tokio::task::spawn_blocking(move || -> Result<(u64, Vec<String>)> {
            let last = planledger_store::Committer::last_position(&committer)
                .map(|p| p.get())
                .unwrap_or(0);
            let bar = indicatif::ProgressBar::new(last);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg:>14} {bar:30} {pos}/{len} {per_sec}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message(format!("partition {partition}"));
            let stream = verify_stream(&committer, partition, &bar);
            bar.finish_and_clear();
            let stream = stream?;
            let mut lines = Vec::new();
            for cache in &caches {
                let stream_last = || {
                    planledger_store::Committer::last_position(&committer)
                        .map_or(u64::MAX, |p| p.get())
                };
                let line = match verify_cache(cache, &stream, stream_last) {
                    Ok(position) => format!(
                        "  cache {}: a prefix of the stream (to position {position})",
                        cache.display()
                    ),
                    Err(error) => format!("  FAILED cache: {error:#}"),
                };
                lines.push(line);
            }
            Ok((stream.hashes.len() as u64, lines))
        })
        .await
        .context("verifying a partition")?;
        match outcome {
            Ok((events, lines)) => {
                total_events += events;
                println!(
                    "partition {:>3}  {}  {events} events: positions gap-free, chain and hashes verified, versions gap-free",
                    partition, entry.stream
                );
                for line in lines {
                    if line.contains("FAILED") {
                        failures += 1;
                    }
                    println!("{line}");
                }
            }
            Err(error) => {
                failures += 1;
                println!(
                    "partition {partition:>3}  {}  FAILED: {error:#}",
                    entry.stream
                );
            }
        }
    }
    if failures > 0 {
        bail!("{failures} check(s) failed; see above");
    }
    println!(
        "ok: {} partitions, {total_events} events verified",
        config.partitions.len()
    );
    Ok(())
}

/// `http://<host of the NATS URL>:8222`.
fn default_monitor(nats: &str) -> Option<String> {
    let first = nats.split(',').next()?.trim();
    let without_scheme = first.split_once("://").map_or(first, |(_, rest)| rest);
    let host_port = without_scheme
        .rsplit_once('@')
        .map_or(without_scheme, |(_, hp)| hp);
    let host = match host_port.rsplit_once(':') {
        Some((host, _)) => host,
        None => host_port,
    };
    (!host.is_empty()).then(|| format!("http://{host}:8222"))
}

async fn init(args: InitArgs) -> Result<()> {
    let count = PartitionCount::new(args.partitions)?;
    let monitors = if args.monitor.is_empty() {
        match default_monitor(&args.nats) {
            Some(url) => vec![url],
            None => bail!(
                "cannot derive a monitoring URL from {}; pass --monitor",
                args.nats
            ),
        }
    } else {
        args.monitor.clone()
    };
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .context("building the HTTP client")?;
    let mut servers = Vec::with_capacity(monitors.len());
    for monitor in &monitors {
        let url = format!("{}/varz", monitor.trim_end_matches('/'));
        let varz: serde_json::Value = http
            .get(&url)
            .send()
            .await
            .and_then(|response| response.error_for_status())
            .with_context(|| format!("reading {url} (the NATS server's monitoring endpoint)"))?
            .json()
            .await
            .with_context(|| format!("{url} is not JSON"))?;
        servers.push(planledger_bus::ServerDurability::from_varz(&varz)?);
    }
    let client = planledger_bus::connect(&args.nats, "planledger-cluster-init").await?;
    let done = planledger_bus::provision(&client, count, &servers).await?;
    let config = &done.config;
    if done.created_config {
        println!(
            "created the cluster configuration (bucket planledger_cluster, key config): {} \
             partitions, format {}",
            config.partition_count, config.format
        );
    } else {
        println!(
            "the cluster configuration exists: {} partitions, created {}",
            config.partition_count, config.created_at
        );
    }
    if done.created_owners {
        println!("created the partition lease bucket planledger_owners");
    }
    for entry in &config.partitions {
        let what = if done.created_streams.contains(&entry.stream) {
            format!("created (R{}, file storage, atomic batches)", done.replicas)
        } else {
            "exists".to_string()
        };
        println!(
            "partition {:>3}  stream {}  log id {}  {what}",
            entry.index, entry.stream, entry.log_id
        );
    }
    // Commits to a stream still electing its leader are refused: wait here, not in the
    // first commands.
    let bar = crate::progress_bar(
        config.partitions.len() as u64,
        "{msg} {bar:30} {pos}/{len}",
        "partition streams with a leader",
    );
    planledger_bus::wait_for_leaders(&client, config, args.wait_leaders, |led| {
        bar.set_position(led as u64)
    })
    .await?;
    bar.finish_and_clear();
    println!(
        "every partition stream has a leader ({} streams)",
        config.partitions.len()
    );
    println!(
        "checked {} server(s), every one fsyncs every write: {}",
        servers.len(),
        servers
            .iter()
            .map(|s| s.server_name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    client.flush().await.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_monitoring_url_is_the_nats_host_on_8222() {
        assert_eq!(
            default_monitor("nats://127.0.0.1:4222").as_deref(),
            Some("http://127.0.0.1:8222")
        );
        assert_eq!(
            default_monitor("nats://user:pw@nats.example:4222,nats://b:4222").as_deref(),
            Some("http://nats.example:8222")
        );
        assert_eq!(
            default_monitor("localhost").as_deref(),
            Some("http://localhost:8222")
        );
    }
}

#[cfg(test)]
mod verify_tests {
    use super::*;
    use planledger_store::{
        AppendMeta, AppendRequest, EventStore, ExpectedVersion, NewEvent, StoreOptions, StreamId,
    };

    /// A local log with three events; their hashes in order.
    async fn log_with_three(dir: &std::path::Path) -> Vec<String> {
        let store = EventStore::open(dir, StoreOptions::default()).expect("open");
        let mut hashes = Vec::new();
        for n in 0..3 {
            let outcome = store
                .append(AppendRequest {
                    stream: StreamId::new("acme/q3").expect("stream"),
                    expected: ExpectedVersion::Any,
                    events: vec![NewEvent::from_json(
                        "Synthetic",
                        1,
                        jiff::Timestamp::UNIX_EPOCH,
                        &serde_json::json!({ "n": n }),
                    )],
                    meta: AppendMeta {
                        actor: "tester".into(),
                        ..AppendMeta::default()
                    },
                })
                .await
                .expect("append");
            hashes.extend(outcome.into_envelopes().into_iter().map(|e| e.hash));
        }
        store.flush().expect("flush");
        hashes
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_cache_is_checked_event_by_event_against_its_stream() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("log");
        let hashes = log_with_three(&path).await;
        // The stream holds the cache and one event more: a prefix.
        let mut longer = hashes.clone();
        longer.push("f".repeat(64));
        let at = verify_cache(&path, &VerifiedStream { hashes: longer }, || 4).expect("a prefix");
        assert_eq!(at, 3);
        // Another history at position 2: diverged.
        let mut other = hashes.clone();
        other[1] = "0".repeat(64);
        let error =
            verify_cache(&path, &VerifiedStream { hashes: other }, || 3).expect_err("diverged");
        assert!(error.to_string().contains("position 2"), "{error}");
        // A stream shorter than the cache lost events: stream_behind.
        let error = verify_cache(
            &path,
            &VerifiedStream {
                hashes: hashes[..2].to_vec(),
            },
            || 2,
        )
        .expect_err("behind");
        // A cache that grew after the stream was read (the stream has it now): checked to there.
        let at = verify_cache(
            &path,
            &VerifiedStream {
                hashes: hashes[..2].to_vec(),
            },
            || 3,
        )
        .expect("grown since");
        assert_eq!(at, 2);
        assert!(error.to_string().contains("stream_behind"), "{error}");
    }
}
