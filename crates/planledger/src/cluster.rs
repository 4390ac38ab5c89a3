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
    }
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
