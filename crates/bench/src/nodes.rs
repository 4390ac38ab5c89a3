//! `planledger-bench cluster`: commands through the HTTP door of 1, 2 and 3 writer nodes
//! (`serve --log-commit jetstream --node-id`) on a private 3-server JetStream cluster on
//! loopback, with each process's CPU use; the routing overhead (a command sent to a node that
//! does not own the plan's partition vs one sent to its owner); and the failover time (SIGKILL
//! of an owner to the first 200 for a plan of its partition through another node).
//!
//! Everything runs on this machine: the NATS servers, the nodes and the load generator share
//! its cores, which is why the CPU figures are printed beside the throughput.
//!
//! The nodes are the `planledger` binary: `$PLANLEDGER_BIN` if set, else the `planledger` next
//! to this binary (`cargo build --release --workspace --bins` builds both).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use planledger_app::{Authenticator, Role};
use planledger_store::{PartitionCount, StreamId};
use serde_json::json;

use crate::cluster::PrivateCluster;
use crate::{ScratchDir, progress_bar};

/// Flags of `bench cluster`.
#[derive(clap::Args, Debug)]
pub struct NodesArgs {
    /// Seconds of load per node count.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent clients (each on its own plan), spread over the nodes.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Partitions of the private cluster.
    #[arg(long, default_value_t = 16)]
    pub partitions: u32,
    /// Commands per side for the routing overhead.
    #[arg(long, default_value_t = 500)]
    pub routing_samples: usize,
}

const TENANT: &str = "acme";
const LEASE_TTL: &str = "2s";

/// A writer node started by the bench.
pub(crate) struct Node {
    pub(crate) child: Child,
    pub(crate) port: u16,
}

impl Node {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A fresh token signing key in `scratch/jwt.key` (the nodes' `--jwt-secret-file`) and an
/// hour's planner token of the bench's tenant signed with it.
pub(crate) fn signing_key(scratch: &ScratchDir) -> Result<(PathBuf, String)> {
    let secret: [u8; 32] = rand::random();
    let key = scratch.join("jwt.key");
    std::fs::write(&key, hex::encode(secret))?;
    let token = Authenticator::from_secret(&secret)?.issue(
        "bench",
        TENANT,
        vec![Role::Planner],
        jiff::Timestamp::now(),
        3600,
    )?;
    Ok((key, token))
}

/// The `planledger` binary the nodes run: `$PLANLEDGER_BIN`, else the one next to this binary.
pub(crate) fn planledger_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PLANLEDGER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let binary = std::env::current_exe()
        .context("locating the bench binary")?
        .with_file_name("planledger");
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: build it with `cargo build --release --workspace --bins`, or set \
         PLANLEDGER_BIN to the planledger binary",
        binary.display()
    );
    Ok(binary)
}

fn start_node(nats: &str, key: &Path, dir: &Path, id: &str) -> Result<Node> {
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("serve.log"))?;
    let child = Command::new(planledger_binary()?)
        .args([
            "serve",
            "--log-commit",
            "jetstream",
            "--nats",
            nats,
            "--node-id",
            id,
        ])
        .args(["--lease-ttl", LEASE_TTL, "--rate-limit-per-second", "0"])
        .arg("--jwt-secret-file")
        .arg(key)
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting a writer node")?;
    Ok(Node { child, port })
}

/// Waits until every partition is owned and every node serves at least one and is ready.
async fn wait_spread(
    owners: &planledger_bus::leases::Owners,
    nodes: &[Node],
    partitions: u32,
) -> Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let current = owners.current().await?;
        let holders: std::collections::BTreeSet<&str> = current
            .values()
            .map(|held| held.lease.node_id.as_str())
            .collect();
        let mut ready = current.len() == partitions as usize
            && holders.len() == nodes.len()
            && current.values().all(|held| held.lease.position.is_some());
        for node in nodes {
            ready &= http
                .get(node.url("/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
        }
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the partitions did not spread over {} nodes in 90 s ({} owned by {holders:?})",
                nodes.len(),
                current.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &serde_json::Value,
    key: Option<&str>,
) -> Result<u16> {
    let mut request = http.post(url).bearer_auth(token).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    Ok(request.send().await?.status().as_u16())
}

pub(crate) fn check_in(n: u64) -> serde_json::Value {
    json!({"type": "RecordCheckIn", "data": {
        "goal_id": "g", "value": n as f64, "confidence": 0.7}})
}

/// Creates `plan` (with a KPI goal and an accountable person) through `url_base`.
pub(crate) async fn seed(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    plan: &str,
) -> Result<()> {
    let day = |days: i64| {
        (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * days))
            .strftime("%Y-%m-%d")
            .to_string()
    };
    let (today, later) = (day(0), day(90));
    let commands = [
        json!({"type": "CreatePlan", "data": {"title": "Bench", "starts_on": today,
            "ends_on": later.clone(), "checkin_cadence_days": 7}}),
        json!({"type": "DefineGoal", "data": {"goal_id": "g", "title": "G", "due": later,
            "kpi": {"unit": "u", "baseline": 0.0, "target": 1_000_000.0, "direction": "increase"}}}),
        json!({"type": "AssignRole", "data": {"person": "ana", "role": "accountable", "goal_id": "g"}}),
    ];
    let url = format!("{base}/v1/plans/{plan}/commands");
    for command in &commands {
        let mut status = 0;
        for _ in 0..50 {
            status = post(http, &url, token, command, None).await?;
            if status != 503 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if status != 200 {
            bail!("seeding {plan} was answered {status}");
        }
    }
    Ok(())
}

pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// One node count's figures.
pub(crate) struct Run {
    pub(crate) nodes: usize,
    /// Commands answered 200.
    pub(crate) commands: u64,
    pub(crate) commands_per_second: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) refused: u64,
    pub(crate) node_cpu: Vec<f64>,
    pub(crate) nats_cpu: f64,
    pub(crate) client_cpu: f64,
}

/// What `clients` concurrent loops of requests did in `seconds`.
pub(crate) struct Load {
    /// Latencies of the requests that succeeded, sorted.
    pub(crate) latencies: Vec<Duration>,
    /// Requests refused or failed.
    pub(crate) refused: u64,
    /// Seconds from the first request to the stop.
    pub(crate) elapsed: f64,
}

/// Runs `clients` loops for `seconds` (a progress bar labelled `label`): client `c` sends its
/// `n`th request with `send(c, n)`, which answers whether it succeeded.
pub(crate) async fn run_clients<F, Fut>(
    clients: usize,
    seconds: u64,
    label: &str,
    send: F,
) -> Result<Load>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let stop = stop.clone();
            let send = send.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut refused = 0u64;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let sent = Instant::now();
                    if send(client, n).await {
                        latencies.push(sent.elapsed());
                    } else {
                        refused += 1;
                    }
                }
                (latencies, refused)
            })
        })
        .collect();
    let bar = progress_bar(seconds, label);
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.inc(1);
    }
    bar.finish_and_clear();
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut load = Load {
        latencies: Vec::new(),
        refused: 0,
        elapsed,
    };
    for task in tasks {
        let (latencies, refused) = task.await?;
        load.latencies.extend(latencies);
        load.refused += refused;
    }
    load.latencies.sort();
    Ok(load)
}

/// RecordCheckIn with a fresh `Idempotency-Key` from one client per plan, spread over `nodes`.
pub(crate) async fn drive(
    nodes: &[Node],
    token: &str,
    plans: &[String],
    seconds: u64,
    nats_pids: &[u32],
) -> Result<Run> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(plans.len())
        .timeout(Duration::from_secs(30))
        .build()?;
    let targets: Arc<Vec<(String, String)>> = Arc::new(
        plans
            .iter()
            .enumerate()
            .map(|(index, plan)| {
                let url = nodes[index % nodes.len()].url(&format!("/v1/plans/{plan}/commands"));
                (plan.clone(), url)
            })
            .collect(),
    );
    let token: Arc<str> = token.into();
    let node_pids: Vec<u32> = nodes.iter().map(|n| n.child.id()).collect();
    let cpu_before: Vec<f64> = node_pids.iter().map(|p| cpu_seconds(*p)).collect();
    let nats_before: f64 = nats_pids.iter().map(|p| cpu_seconds(*p)).sum();
    let client_before = cpu_seconds(std::process::id());
    let load = run_clients(
        plans.len(),
        seconds,
        &format!("{} node(s)", nodes.len()),
        move |client, n| {
            let (http, targets, token) = (http.clone(), targets.clone(), token.clone());
            async move {
                let (plan, url) = &targets[client];
                let key = format!("{plan}-{n}-{}", uuid::Uuid::now_v7().simple());
                matches!(
                    post(&http, url, &token, &check_in(n), Some(&key)).await,
                    Ok(200)
                )
            }
        },
    )
    .await?;
    let elapsed = load.elapsed;
    let node_cpu = node_pids
        .iter()
        .zip(&cpu_before)
        .map(|(pid, before)| (cpu_seconds(*pid) - before) / elapsed)
        .collect();
    let nats_cpu = (nats_pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - nats_before) / elapsed;
    let client_cpu = (cpu_seconds(std::process::id()) - client_before) / elapsed;
    Ok(Run {
        nodes: nodes.len(),
        commands: load.latencies.len() as u64,
        commands_per_second: load.latencies.len() as f64 / elapsed,
        p50: quantile(&load.latencies, 0.5),
        p99: quantile(&load.latencies, 0.99),
        refused: load.refused,
        node_cpu,
        nats_cpu,
        client_cpu,
    })
}

/// The partition of one of the tenant's plans.
fn partition_of(count: PartitionCount, plan: &str) -> Result<u32> {
    Ok(count
        .partition_of(&StreamId::new(format!("{TENANT}/{plan}"))?)
        .index())
}

pub async fn run(args: NodesArgs) -> Result<()> {
    if args.concurrency == 0 || args.seconds == 0 {
        bail!("--concurrency and --seconds must be at least 1");
    }
    let count = PartitionCount::new(args.partitions)?;
    eprintln!("starting a private 3-server JetStream cluster on loopback");
    let cluster = PrivateCluster::start().await?;
    let client = planledger_bus::connect(&cluster.url(), "planledger-bench-cluster").await?;
    let mut provisioned = None;
    for _ in 0..30 {
        match planledger_bus::provision(&client, count, &cluster.durability().await?).await {
            Ok(done) => {
                provisioned = Some(done);
                break;
            }
            // A fresh cluster may not have elected its leaders yet.
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    provisioned.context("cluster init kept failing on the private cluster")?;
    let owners = planledger_bus::leases::Owners::open(&client).await?;
    let scratch = ScratchDir::new(None)?;
    let (key, token) = signing_key(&scratch)?;
    let nats = cluster.urls();
    let http = reqwest::Client::new();
    let mut runs = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    for size in 1..=3usize {
        while nodes.len() < size {
            let id = format!("bench-{}", nodes.len() + 1);
            nodes.push(start_node(&nats, &key, &scratch.join(&id), &id)?);
        }
        wait_spread(&owners, &nodes, args.partitions).await?;
        let plans: Vec<String> = (0..args.concurrency)
            .map(|i| format!("n{size}-plan-{i}"))
            .collect();
        for (i, plan) in plans.iter().enumerate() {
            seed(&http, &nodes[i % nodes.len()].url(""), &token, plan).await?;
        }
        runs.push(drive(&nodes, &token, &plans, args.seconds, &cluster.pids()).await?);
    }

    // Routing overhead: one client, sequential, a plan sent to its owner vs to another node.
    let plan = "routing-probe";
    seed(&http, &nodes[0].url(""), &token, plan).await?;
    let partition = partition_of(count, plan)?;
    let current = owners.current().await?;
    let owner_addr = current
        .get(&partition)
        .and_then(|held| held.lease.http.clone())
        .context("the probe's partition has an owner")?;
    let owner = nodes
        .iter()
        .position(|n| owner_addr.ends_with(&format!(":{}", n.port)))
        .context("the owner is one of the bench's nodes")?;
    let other = (owner + 1) % nodes.len();
    let mut direct = Vec::with_capacity(args.routing_samples);
    let mut routed = Vec::with_capacity(args.routing_samples);
    let bar = progress_bar(args.routing_samples as u64 * 2, "routing");
    for n in 0..args.routing_samples as u64 {
        for (node, into) in [(owner, &mut direct), (other, &mut routed)] {
            let url = nodes[node].url(&format!("/v1/plans/{plan}/commands"));
            let sent = Instant::now();
            let key = format!("r-{node}-{n}");
            if post(&http, &url, &token, &check_in(n), Some(&key)).await? == 200 {
                into.push(sent.elapsed());
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    direct.sort();
    routed.sort();

    // Failover: SIGKILL the owner, then a command for the plan through another node until 200.
    let killed_at = Instant::now();
    let mut victim = nodes.remove(owner);
    let _ = victim.child.kill();
    let _ = victim.child.wait();
    let survivor = &nodes[0];
    let url = survivor.url(&format!("/v1/plans/{plan}/commands"));
    let mut n = 0u64;
    let failover = loop {
        n += 1;
        let status = post(&http, &url, &token, &check_in(n), Some(&format!("f-{n}"))).await?;
        if status == 200 {
            break killed_at.elapsed();
        }
        if killed_at.elapsed() > Duration::from_secs(60) {
            bail!("the killed owner's partition did not come back within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    println!(
        "cluster mode through the HTTP door: RecordCheckIn with a fresh Idempotency-Key, {} clients, {} s per row, {} partitions, 3 NATS servers (R3, sync always) and the nodes on this machine ({} cores)",
        args.concurrency,
        args.seconds,
        args.partitions,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:>5}  {:>10}  {:>8}  {:>8}  {:>8}  {:>22}  {:>10}  {:>10}",
        "nodes",
        "commands/s",
        "p50 ms",
        "p99 ms",
        "refused",
        "CPU per node (cores)",
        "NATS CPU",
        "client CPU"
    );
    let base = runs.first().map_or(1.0, |r| r.commands_per_second.max(1.0));
    for run in &runs {
        println!(
            "{:>5}  {:>10.0}  {:>8.1}  {:>8.1}  {:>8}  {:>22}  {:>10.2}  {:>10.2}   x{:.2} of 1 node",
            run.nodes,
            run.commands_per_second,
            run.p50.as_secs_f64() * 1000.0,
            run.p99.as_secs_f64() * 1000.0,
            run.refused,
            run.node_cpu
                .iter()
                .map(|c| format!("{c:.2}"))
                .collect::<Vec<_>>()
                .join(" "),
            run.nats_cpu,
            run.client_cpu,
            run.commands_per_second / base
        );
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "routing ({} sequential commands each): to the owner p50 {:.2} ms p99 {:.2} ms; to another node (forwarded over NATS) p50 {:.2} ms p99 {:.2} ms; overhead p50 {:+.2} ms",
        args.routing_samples,
        ms(quantile(&direct, 0.5)),
        ms(quantile(&direct, 0.99)),
        ms(quantile(&routed, 0.5)),
        ms(quantile(&routed, 0.99)),
        ms(quantile(&routed, 0.5)) - ms(quantile(&direct, 0.5))
    );
    println!(
        "failover: SIGKILL of the owner to the first 200 for its partition through another node: {:.2} s (lease TTL {LEASE_TTL}; goal <= TTL + 2 s)",
        failover.as_secs_f64()
    );
    Ok(())
}
