//! Cluster mode with ownership: `planledger serve --log-commit jetstream --node-id ID`.
//!
//! A node serves every partition whose lease it holds (`leases.rs`), each from its own cache of
//! the partition stream under `<data_dir>/partitions/<p>/log` (`partition.rs`), and takes any
//! command on both doors: a command or plan read for a partition it serves runs here, through
//! the same router and command door as a single node; one for a partition another node owns is
//! forwarded over NATS request/reply to the owner's per-instance subject with the caller's
//! credentials (`route.rs`), and the owner authenticates again and refuses `not_owner` if the
//! partition is no longer its own. Leases are for liveness only: the partition stream's
//! compare-and-append is what stops a deposed owner from writing.

mod feed;
mod leases;
mod partition;
mod route;

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use async_nats::Client;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use planledger_api::{ApiConfig, ConnectionLimits, RateLimit, RateLimiter};
use planledger_app::{Authenticator, Refusal};
use planledger_bus::cluster::ClusterConfig;
use planledger_bus::leases::{HeldLease, Lease, Owners};
use planledger_store::{PartitionCount, SharedMemory, StreamId};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use partition::Served;

/// Block cache shared by every partition cache of a node.
const SHARED_CACHE_BYTES: usize = 256 * 1024 * 1024;
/// Memtable budget shared by every partition cache of a node.
const SHARED_WRITE_BUFFER_BYTES: usize = 128 * 1024 * 1024;

/// A partition this node holds the lease of.
struct Session {
    /// The lease as written (renewals write it again).
    lease: Lease,
    /// The revision of the last acknowledged acquire or renewal.
    revision: u64,
    /// When the last acknowledged acquire or renewal was *sent* (the lease runs from there).
    acked_at: Instant,
    /// The open cache and its services; `None` while it opens and catches up.
    served: Option<Arc<Served>>,
    /// Which taking of the lease this is (node-wide counter): an open started for an earlier
    /// one is never installed into a later one.
    generation: u64,
}

/// What the node knows: every lease in the bucket, the live nodes, and its own partitions.
#[derive(Default)]
struct Table {
    holders: BTreeMap<u32, HeldLease>,
    live: BTreeSet<String>,
    sessions: BTreeMap<u32, Session>,
    /// Partitions this node will not try to take before the instant (it just gave them back,
    /// or could not open them).
    cooldown: BTreeMap<u32, Instant>,
    /// Since when each partition has had no holder, as this node saw it.
    free_since: BTreeMap<u32, Instant>,
}

/// Where a plan's requests go.
pub(crate) enum Located {
    /// Served here.
    Local(Arc<Served>),
    /// Owned by another node: its route subject prefix.
    Remote { route: String },
    /// Nobody serves it right now.
    Unavailable { why: String },
}

/// One node of a cluster.
pub(crate) struct Node {
    node_id: String,
    instance_id: String,
    /// `planledger.node.<instance_id>`: forwarded requests arrive under it.
    route: String,
    http_addr: String,
    client: Client,
    cluster: ClusterConfig,
    count: PartitionCount,
    owners: Owners,
    ttl: Duration,
    commit_timeout: Duration,
    auth: Authenticator,
    api: ApiConfig,
    limiter: Arc<RateLimiter>,
    data_dir: PathBuf,
    min_free_bytes: u64,
    memory: SharedMemory,
    table: Mutex<Table>,
    shutdown: CancellationToken,
    /// The node's HTTP router, which forwarded HTTP requests are run through.
    router: OnceLock<Router>,
    /// Set once the node is stopping: it takes no partitions any more.
    draining: std::sync::atomic::AtomicBool,
    /// The last [`Session::generation`] given out.
    generations: std::sync::atomic::AtomicU64,
    prometheus: PrometheusHandle,
}

impl Node {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long before the lease's TTL runs out a node stops serving a partition it could not
    /// renew: the lease runs from the sending of the last acknowledged renewal, so this margin
    /// covers clock-rate differences and the time to stop.
    fn lease_margin(&self) -> Duration {
        (self.ttl / 5).max(Duration::from_millis(200))
    }

    /// How long a partition being given up waits for the requests it is running: a request's
    /// own bound plus a commit's, so a commit of this node does not land after the lease is
    /// given back.
    fn drain_wait(&self) -> Duration {
        self.api.request_timeout + self.commit_timeout
    }

    /// The partition caches open here, by their path in the data directory (for backups).
    fn open_logs(&self) -> Vec<(String, planledger_store::EventStore)> {
        self.table()
            .sessions
            .iter()
            .filter_map(|(partition, session)| {
                let served = session.served.as_ref()?;
                Some((format!("partitions/{partition}/log"), served.store.clone()))
            })
            .collect()
    }

    /// The partition of a plan.
    // A refusal is the cold path, and the door's plain serde type (see `app::door`).
    #[allow(clippy::result_large_err)]
    pub(crate) fn partition_of(&self, tenant: &str, plan: &str) -> Result<u32, Refusal> {
        let stream = StreamId::new(format!("{tenant}/{plan}")).map_err(|e| {
            Refusal::new(400, "invalid_input", format!("plan_id: {e}"))
                .with_field("plan_id", e.to_string())
        })?;
        Ok(self.count.partition_of(&stream).index())
    }

    /// Where requests for partition `partition` go now.
    pub(crate) fn locate(&self, partition: u32) -> Located {
        let table = self.table();
        if let Some(session) = table.sessions.get(&partition) {
            if session.acked_at.elapsed() + self.lease_margin() >= self.ttl {
                return Located::Unavailable {
                    why: format!(
                        "this node could not renew its lease on partition {partition} in time and is giving it up"
                    ),
                };
            }
            return match &session.served {
                Some(served) => Located::Local(served.clone()),
                None => Located::Unavailable {
                    why: format!(
                        "partition {partition} is opening on this node (its cache is catching up with the stream)"
                    ),
                },
            };
        }
        match table.holders.get(&partition) {
            Some(held) if held.lease.instance_id != self.instance_id => Located::Remote {
                route: held.lease.route.clone(),
            },
            Some(_) => Located::Unavailable {
                why: format!("partition {partition} is being given up by this node"),
            },
            None => Located::Unavailable {
                why: format!(
                    "partition {partition} has no owner right now (its last owner stopped or lost its lease; another node takes it within the lease TTL)"
                ),
            },
        }
    }

    /// The partitions served here, with their state.
    fn partition_states(&self) -> BTreeMap<u32, &'static str> {
        let table = self.table();
        table
            .sessions
            .iter()
            .map(|(p, session)| {
                let state = match &session.served {
                    None => "opening",
                    Some(served) => served.state(),
                };
                (*p, state)
            })
            .collect()
    }
}

/// `503 partition_unavailable` with `Retry-After: 1`.
pub(crate) fn unavailable(why: impl Into<String>) -> Refusal {
    Refusal::new(503, "partition_unavailable", why).retry_after(1)
}

/// `503 not_owner`: a forwarded request reached a node that does not own the partition (any
/// more); the forwarding node looks the owner up again.
pub(crate) fn not_owner(partition: u32) -> Refusal {
    Refusal::new(
        503,
        "not_owner",
        format!("this node does not own partition {partition}; send the request again"),
    )
    .retry_after(1)
}

/// Takes an exclusive lock on the data directory (`<data_dir>/node.lock`) for the life of the
/// process, so a second node on the same directory exits naming it.
pub(crate) fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let path = data_dir.join("node.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a file descriptor this function owns; no memory is shared.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        bail!(
            "the data directory {} is in use by another planledger process (it holds the lock on {}); give each node its own --data-dir",
            data_dir.display(),
            path.display()
        );
    }
    Ok(file)
}

/// Runs a cluster node until SIGINT or SIGTERM, then drains and gives its leases back.
pub async fn run(config: Config, prometheus: PrometheusHandle) -> Result<()> {
    let url = config
        .nats_url
        .clone()
        .context("cluster mode needs --nats")?;
    let node_id = config
        .node_id
        .clone()
        .context("cluster mode needs --node-id")?;
    let _lock = lock_data_dir(&config.data_dir)?;
    let ttl = config.lease_ttl()?;
    let instance_id = uuid::Uuid::now_v7().simple().to_string();
    let client = planledger_bus::connect(&url, &format!("planledger-node-{node_id}"))
        .await
        .with_context(|| format!("connecting to the NATS cluster at {url}"))?;
    let cluster = crate::cluster::configuration(&client, &url).await?;
    if let Some(expected) = config.partitions
        && expected != cluster.partition_count
    {
        bail!(
            "this node was started with --partitions {expected}, but the cluster at {url} has {} partitions; the count is fixed when the cluster is created (start the node with --partitions {} or without the flag)",
            cluster.partition_count,
            cluster.partition_count
        );
    }
    let count =
        PartitionCount::new(cluster.partition_count).context("the cluster's partition count")?;
    let owners = Owners::open(&client)
        .await
        .context("opening the partition leases")?;

    let shutdown = CancellationToken::new();
    let mut background = Vec::new();
    let (auth, refresh_keys) = crate::identity::authenticator(&config, &shutdown).await?;
    background.extend(refresh_keys);
    let api = ApiConfig {
        body_limit_bytes: config.body_limit_bytes,
        request_timeout: config.request_timeout(),
        rate_limit: RateLimit {
            per_second: config.rate_limit_per_second,
            burst: config.rate_limit_burst,
        },
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let local = listener.local_addr()?;
    let node = Arc::new(Node {
        route: format!("planledger.node.{instance_id}"),
        node_id: node_id.clone(),
        instance_id: instance_id.clone(),
        http_addr: local.to_string(),
        client,
        cluster,
        count,
        owners,
        ttl,
        commit_timeout: config.commit_timeout()?,
        auth,
        limiter: Arc::new(RateLimiter::new(api.rate_limit)),
        api,
        data_dir: config.data_dir.clone(),
        min_free_bytes: config.log_min_free_bytes,
        memory: SharedMemory::new(SHARED_CACHE_BYTES, SHARED_WRITE_BUFFER_BYTES),
        table: Mutex::new(Table::default()),
        shutdown: shutdown.clone(),
        router: OnceLock::new(),
        draining: std::sync::atomic::AtomicBool::new(false),
        generations: std::sync::atomic::AtomicU64::new(0),
        prometheus,
    });
    let router = route::http_router(node.clone());
    let _ = node.router.set(router.clone());
    tracing::info!(
        node_id = %node_id,
        instance_id = %instance_id,
        partitions = count.get(),
        lease_ttl_ms = ttl.as_millis() as u64,
        "cluster node starting"
    );

    let open_logs = node.clone();
    let tasks = vec![
        tokio::spawn(crate::control::serve(
            config.data_dir.clone(),
            Arc::new(move || open_logs.open_logs()),
            shutdown.clone(),
        )),
        tokio::spawn(leases::watch_loop(node.clone())),
        tokio::spawn(leases::lease_loop(node.clone())),
        tokio::spawn(route::serve_forwarded(node.clone())),
        tokio::spawn(route::serve_public_commands(node.clone())),
    ];

    tracing::info!(listen = %local, data_dir = %config.data_dir.display(), "planledger node serving");
    eprintln!("planledger listening on http://{local}");
    let limits = ConnectionLimits {
        header_read_timeout: config.header_read_timeout()?,
        max_connections: config.http_max_connections,
    };
    let signal = shutdown.clone();
    let stopping = node.clone();
    planledger_api::serve(listener, router, limits, async move {
        crate::serve::wait_for_signal().await;
        // Hand the partitions over first, while renewals and forwarding still run, so other
        // nodes take them at once; then stop the listeners.
        tracing::info!("shutting down: draining and giving the leases back");
        stopping
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        leases::release_all(&stopping).await;
        signal.cancel();
    })
    .await;
    for task in tasks {
        let _ = task.await;
    }
    leases::release_all(&node).await;
    for task in background {
        let _ = task.await;
    }
    node.client.flush().await.ok();
    tracing::info!("stopped");
    Ok(())
}
