//! `planledger-bench append --log-commit jetstream`: appends in cluster mode (each commit an
//! atomic batch on an R3 partition stream) vs the raw ceiling of the same batches published
//! straight to a stream of the same configuration, with the local-mode figure beside them.
//!
//! The benchmark starts its own 3-server JetStream cluster on loopback: the shipped
//! `deploy/nats/cluster/n1.conf`..`n3.conf` (`sync_interval: always`), with every port
//! replaced by a free one and the store in a scratch directory. The servers are killed and the
//! directory removed when the benchmark ends, fails or is interrupted.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::Client;
use planledger_store::{CommitEvent, Envelope, PartitionCount};

use crate::{ScratchDir, progress_bar};

/// The shipped member configurations, as they are checked in.
const SHIPPED: [(&str, &str); 3] = [
    ("n1", include_str!("../../../deploy/nats/cluster/n1.conf")),
    ("n2", include_str!("../../../deploy/nats/cluster/n2.conf")),
    ("n3", include_str!("../../../deploy/nats/cluster/n3.conf")),
];

/// The ports the shipped configurations use: client, route and monitoring, per member.
pub const SHIPPED_PORTS: [[u16; 3]; 3] =
    [[4222, 6222, 8222], [4223, 6223, 8223], [4224, 6224, 8224]];

/// How long the cluster may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A 3-server JetStream cluster started for one benchmark; the servers are killed and reaped
/// when dropped, then the scratch directory (stores, configs, logs) is removed.
pub struct PrivateCluster {
    children: Vec<std::process::Child>,
    client_ports: Vec<u16>,
    monitor_ports: Vec<u16>,
    /// Removed after the servers are stopped (fields drop after `drop` runs).
    dir: ScratchDir,
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

impl PrivateCluster {
    /// Starts the three members (`$PLANLEDGER_NATS_SERVER` or `nats-server` on PATH) and waits
    /// until every one answers `/healthz` (JetStream up, a meta leader known).
    pub async fn start() -> Result<Self> {
        let binary =
            std::env::var("PLANLEDGER_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        let dir = ScratchDir::new(None)?;
        // Nine distinct free ports: all bound at once, released just before the members start.
        let listeners = (0..9)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()
            .context("binding free loopback ports")?;
        let free = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<Vec<_>, _>>()?;
        let ports: Vec<[u16; 3]> = free.chunks(3).map(|p| [p[0], p[1], p[2]]).collect();
        let mut configs = Vec::with_capacity(SHIPPED.len());
        for (name, text) in SHIPPED {
            let config = dir.join(format!("{name}.conf"));
            std::fs::write(&config, localize(text, &ports, &dir.join(name)))
                .with_context(|| format!("writing {}", config.display()))?;
            configs.push((name, config));
        }
        drop(listeners);
        let mut cluster = Self {
            children: Vec::with_capacity(configs.len()),
            client_ports: ports.iter().map(|p| p[0]).collect(),
            monitor_ports: ports.iter().map(|p| p[2]).collect(),
            dir,
        };
        for (name, config) in &configs {
            let log = std::fs::File::create(cluster.dir.join(format!("{name}.log")))?;
            let child = std::process::Command::new(&binary)
                .arg("-c")
                .arg(config)
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {binary} (run `just setup`)"))?;
            cluster.children.push(child);
        }
        cluster.wait_healthy().await?;
        Ok(cluster)
    }

    /// Every member's process id (for CPU figures).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(std::process::Child::id).collect()
    }

    /// Every member's client URL, comma-separated (a seed list).
    pub fn urls(&self) -> String {
        self.client_ports
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `nats://127.0.0.1:<port>` of the first member (clients learn the others from it).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_ports[0])
    }

    /// What every member's `/varz` says about its durability, for `provision`.
    pub async fn durability(&self) -> Result<Vec<planledger_bus::ServerDurability>> {
        let http = http_client()?;
        let mut servers = Vec::with_capacity(self.monitor_ports.len());
        for port in &self.monitor_ports {
            let url = format!("http://127.0.0.1:{port}/varz");
            let varz: serde_json::Value = http
                .get(&url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .with_context(|| format!("reading {url}"))?
                .json()
                .await
                .with_context(|| format!("{url} is not JSON"))?;
            servers.push(planledger_bus::ServerDurability::from_varz(&varz)?);
        }
        Ok(servers)
    }

    async fn wait_healthy(&mut self) -> Result<()> {
        let http = http_client()?;
        let deadline = Instant::now() + START_TIMEOUT;
        for index in 0..self.children.len() {
            let url = format!("http://127.0.0.1:{}/healthz", self.monitor_ports[index]);
            loop {
                if !matches!(self.children[index].try_wait(), Ok(None)) {
                    anyhow::bail!(
                        "nats-server n{} exited; its log:\n{}",
                        index + 1,
                        self.log(index)
                    );
                }
                let healthy = http
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if healthy {
                    break;
                }
                if Instant::now() > deadline {
                    anyhow::bail!(
                        "nats-server n{} not healthy within {START_TIMEOUT:?}; its log:\n{}",
                        index + 1,
                        self.log(index)
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    fn log(&self, index: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("n{}.log", index + 1)))
            .unwrap_or_else(|e| format!("<no log: {e}>"));
        let tail = text.len().saturating_sub(4000);
        text.get(tail..).unwrap_or(&text).to_string()
    }
}

fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .context("building the HTTP client")
}

/// The shipped configuration with `ports[member] = [client, route, monitoring]` in place of the
/// shipped ports and `store` as the JetStream store directory (comments dropped).
pub fn localize(text: &str, ports: &[[u16; 3]], store: &std::path::Path) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') {
            continue;
        }
        if trimmed.starts_with("store_dir:") {
            out.push_str(&format!("  store_dir: {:?}\n", store.display().to_string()));
            continue;
        }
        let mut line = line.to_string();
        for (shipped, local) in SHIPPED_PORTS.iter().zip(ports) {
            for (from, to) in shipped.iter().zip(local) {
                line = line.replace(&format!(":{from}\""), &format!(":{to}\""));
                if trimmed.starts_with("port:") && trimmed.ends_with(&from.to_string()) {
                    line = format!("port: {to}");
                }
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Connects to the cluster and provisions `streams` partition streams (R3, the configuration
/// `planledger cluster init` creates), one fresh stream per measurement; returns the client
/// and the streams' names by partition.
pub async fn provision(cluster: &PrivateCluster, streams: u32) -> Result<(Client, Vec<String>)> {
    let servers = cluster.durability().await?;
    let client = planledger_bus::connect(&cluster.url(), "planledger-bench")
        .await
        .context("connecting to the private NATS cluster")?;
    let done = planledger_bus::provision(&client, PartitionCount::new(streams)?, &servers)
        .await
        .context("provisioning the partition streams")?;
    anyhow::ensure!(
        done.replicas == 3,
        "the private cluster provisioned R{} streams, not R3",
        done.replicas
    );
    let names = done
        .config
        .partitions
        .into_iter()
        .map(|p| p.stream)
        .collect();
    Ok((client, names))
}

/// The events a log committed, read back from its cache, as its committer was handed them.
pub fn committed_events(store: &planledger_store::EventStore) -> Result<Vec<CommitEvent>> {
    let last = store.last_position().get();
    let mut events = Vec::with_capacity(last as usize);
    for position in 1..=last {
        let stored = store
            .read_raw(planledger_store::Position(position))?
            .with_context(|| format!("position {position} is missing from the log"))?;
        let envelope: Envelope = serde_json::from_slice(&stored)
            .with_context(|| format!("position {position} does not parse"))?;
        events.push(CommitEvent {
            position: envelope.position,
            stream: envelope.stream,
            event_type: envelope.event_type,
            stored,
            command: None,
        });
    }
    Ok(events)
}

/// The raw ceiling: `events` (positions 1..) published to partition `partition`'s fresh
/// stream `stream` as atomic batches of `batch_size`, one in flight, with the messages the committer
/// builds. Returns (events, elapsed, per-batch latencies).
pub async fn raw_batches(
    client: &Client,
    partition: u32,
    stream: &str,
    events: &[CommitEvent],
    batch_size: usize,
) -> Result<(u64, Duration, Vec<Duration>)> {
    let batch_size = batch_size.clamp(1, planledger_store::MAX_COMMIT_EVENTS);
    // Messages are built before the clock starts, as the committer builds them before it
    // takes its turn.
    let batches = events
        .chunks(batch_size)
        .map(|chunk| {
            chunk
                .iter()
                .map(|event| planledger_bus::partition_log::partition_message(partition, event))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut replies = planledger_bus::BatchReplies::subscribe(client).await?;
    let bar = progress_bar(batches.len() as u64, "raw jetstream batches");
    let mut latencies = Vec::with_capacity(batches.len());
    let mut last = 0u64;
    let started = Instant::now();
    for batch in batches {
        let count = batch.len() as u64;
        let t = Instant::now();
        tokio::time::timeout(
            planledger_bus::partition_log::DEFAULT_COMMIT_TIMEOUT,
            planledger_bus::publish_atomic_batch(client, &mut replies, stream, last, batch),
        )
        .await
        .with_context(|| format!("an atomic batch to {stream} got no answer"))??;
        latencies.push(t.elapsed());
        last += count;
        bar.inc(1);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok((last, elapsed, latencies))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_ports_and_store_are_replaced() {
        let text = "# n1\nport: 4222\nhttp: \"127.0.0.1:8222\"\njetstream {\n  store_dir: \"./data/n1\"\n}\ncluster {\n  listen: \"127.0.0.1:6222\"\n  routes: [\n    \"nats-route://127.0.0.1:6222\"\n    \"nats-route://127.0.0.1:6223\"\n  ]\n}\n";
        let ports = [[1001, 2001, 3001], [1002, 2002, 3002], [1003, 2003, 3003]];
        let out = localize(text, &ports, std::path::Path::new("/tmp/x"));
        assert!(out.contains("port: 1001\n"), "{out}");
        assert!(out.contains("http: \"127.0.0.1:3001\""), "{out}");
        assert!(out.contains("listen: \"127.0.0.1:2001\""), "{out}");
        assert!(out.contains("nats-route://127.0.0.1:2002"), "{out}");
        assert!(out.contains("store_dir: \"/tmp/x\""), "{out}");
        for shipped in ["4222", "6222", "6223", "8222", "./data"] {
            assert!(!out.contains(shipped), "{shipped} left in {out}");
        }
    }

    #[test]
    fn the_shipped_configs_are_localized() {
        let ports = [[1001, 2001, 3001], [1002, 2002, 3002], [1003, 2003, 3003]];
        for (name, text) in SHIPPED {
            let out = localize(text, &ports, std::path::Path::new("/tmp/x"));
            assert!(out.contains("store_dir: \"/tmp/x\""), "{name}: {out}");
            assert!(out.contains("sync_interval: always"), "{name}: {out}");
            for shipped in SHIPPED_PORTS.iter().flatten() {
                assert!(!out.contains(&shipped.to_string()), "{name}: {out}");
            }
        }
    }
}
