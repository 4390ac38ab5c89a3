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
}

pub async fn run(command: ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Init(args) => init(args).await,
        ClusterCommand::Status(args) => status(args).await,
    }
}

/// One partition in `cluster status`.
#[derive(serde::Serialize)]
struct PartitionStatus {
    partition: u32,
    stream: String,
    stream_position: u64,
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

async fn status(args: StatusArgs) -> Result<()> {
    let client = planledger_bus::connect(&args.nats, "planledger-cluster-status").await?;
    let config = planledger_bus::cluster::read_cluster_config(&client)
        .await?
        .with_context(|| {
            format!(
                "the NATS cluster at {} has no Planledger cluster: run `planledger cluster init` first",
                args.nats
            )
        })?;
    let owners = planledger_bus::leases::Owners::open(&client).await?;
    let leases = owners.current().await?;
    let context = async_nats::jetstream::new(client.clone());
    let now = jiff::Timestamp::now();
    let mut rows = Vec::with_capacity(config.partitions.len());
    for entry in &config.partitions {
        let stream_position = match context.get_stream(&entry.stream).await {
            Ok(mut stream) => stream
                .info()
                .await
                .map(|info| info.state.last_sequence)
                .with_context(|| format!("reading stream {}", entry.stream))?,
            Err(error) => bail!("stream {} cannot be read: {error}", entry.stream),
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
            row.partition, row.stream, owner, instance, held, renewed, cache, row.stream_position
        );
    }
    let owned = rows.iter().filter(|r| r.owner.is_some()).count();
    println!("{owned} of {} partitions owned", rows.len());
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
