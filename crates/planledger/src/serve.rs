//! `planledger serve`: the all-in-one service.

use std::sync::Arc;

use anyhow::{Context, Result};
use planledger_api::{ApiConfig, ApiState, ConnectionLimits, RateLimit, Readiness};
use planledger_app::App;
use planledger_bus::{CommandIngress, IngressConfig, Relay, RelayConfig, RelayStatusHandle};
use planledger_store::{Commit, EventStore, LogHealth, StoreOptions};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LogCommit, ServeArgs};

/// Something to do once the app is open and before the listener starts (the demo seeds here).
pub type Prelude = Box<dyn FnOnce(App, Config) -> futures_like::BoxFuture + Send>;

/// A boxed future without pulling in a futures dependency.
pub mod futures_like {
    /// A boxed, sendable future returning `anyhow::Result<()>`.
    pub type BoxFuture =
        std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>;
}

/// Opens the event log in `<data_dir>/log` (one node: fsynced locally).
pub fn open_store(config: &Config) -> Result<EventStore> {
    open_store_with(config, Commit::LocalFsync, None, None)
}

/// Opens the log with `commit`; `log_id` names the log's identity when it is created (cluster
/// mode: the partition's, so every cache of it carries the same one).
fn open_store_with(
    config: &Config,
    commit: Commit,
    log_id: Option<String>,
    partition: Option<(planledger_store::PartitionCount, u32)>,
) -> Result<EventStore> {
    let path = config.data_dir.join("log");
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let options = StoreOptions {
        min_free_bytes: config.log_min_free_bytes,
        commit,
        log_id,
        partition,
        ..StoreOptions::default()
    };
    EventStore::open(&path, options).with_context(|| {
        format!(
            "opening the event log in {} (is another planledger process using this data directory?)",
            path.display()
        )
    })
}

/// Cluster mode: opens the node's cache of its partition's log, committing appends to the
/// partition's JetStream stream (`planledger cluster init` must have created it). The cache
/// catches up with the stream before it takes commands (`/readyz` says `catching_up`).
async fn open_cluster_store(config: &Config) -> Result<EventStore> {
    let url = config
        .nats_url
        .clone()
        .context("cluster mode needs --nats")?;
    let partition = config.partition.context("cluster mode needs --partition")?;
    let client = planledger_bus::connect(&url, "planledger-partition-log")
        .await
        .with_context(|| format!("connecting to the NATS cluster at {url}"))?;
    let cluster = crate::cluster::configuration(&client, &url).await?;
    let entry = cluster
        .partitions
        .iter()
        .find(|entry| entry.index == partition)
        .with_context(|| {
            format!(
                "--partition {partition} is not a partition of this cluster, which has {} (0 to {})",
                cluster.partition_count,
                cluster.partition_count.saturating_sub(1)
            )
        })?;
    let committer = planledger_bus::JetStreamCommitter::open(
        client,
        planledger_bus::PartitionLogConfig {
            partition,
            timeout: config.commit_timeout()?,
        },
    )
    .await
    .with_context(|| format!("opening partition {partition}'s stream"))?;
    tracing::info!(partition, stream = %committer.stream_name(), "cluster mode: the partition's stream is the log; this node's log is its cache");
    let commit = Commit::External(Arc::new(committer));
    let log_id = entry.log_id.to_string();
    let count = planledger_store::PartitionCount::new(cluster.partition_count)
        .context("the cluster's partition count")?;
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        open_store_with(&config, commit, Some(log_id), Some((count, partition)))
    })
    .await
    .context("opening the event log")?
}

/// Keeps the partition's state in `/metrics` (cluster mode): catching up, serving or halted.
async fn export_partition_state(store: EventStore, partition: u32, shutdown: CancellationToken) {
    let label = partition.to_string();
    loop {
        let now = match store.health() {
            LogHealth::CatchingUp => "catching_up",
            LogHealth::Stopped(_) => "halted",
            _ => "serving",
        };
        for state in ["catching_up", "serving", "halted"] {
            metrics::gauge!("planledger_partition_state", "partition" => label.clone(), "state" => state)
                .set(if now == state { 1.0 } else { 0.0 });
        }
        metrics::gauge!("planledger_partition_position", "partition" => label.clone())
            .set(store.last_position().get() as f64);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

/// Runs the service until SIGINT or SIGTERM, then finishes in-flight requests and closes the log.
pub async fn run(args: ServeArgs, prelude: Option<Prelude>) -> Result<()> {
    let config = args.load()?;
    if args.print_config {
        print!("{}", config.redacted_toml());
        return Ok(());
    }
    crate::init_tracing(config.log_format);
    let prometheus = crate::install_metrics()?;
    if config.node_id.is_some() {
        return crate::node::run(config, prometheus).await;
    }

    let store = match config.log_commit {
        LogCommit::Local => open_store(&config)?,
        LogCommit::Jetstream => open_cluster_store(&config).await?,
    };
    let shutdown = CancellationToken::new();
    let (auth, refresh_keys) = crate::identity::authenticator(&config, &shutdown).await?;
    let digest_key = planledger_app::DigestKey::load_or_create(&config.data_dir)
        .context("loading the digest signing key")?;
    tracing::info!(key_id = %digest_key.public().key_id, log_id = %store.log_id(), "signing digests");
    let mut app = App::new(store.clone(), auth).with_digest_key(digest_key);
    if let Some(prelude) = prelude {
        prelude(app.clone(), config.clone()).await?;
    }

    // Without them, `planledger projector --nats` processes build the read models from the
    // stream the relay publishes, and serve their routes.
    let projectors = if config.embedded_projectors {
        Some(crate::projector::start_embedded(
            &mut app,
            &store,
            &config.data_dir,
            shutdown.clone(),
        )?)
    } else {
        tracing::info!(
            "read models not embedded: they run as `planledger projector --nats` processes"
        );
        None
    };
    let mut state = ApiState::new(
        app.clone(),
        ApiConfig {
            body_limit_bytes: config.body_limit_bytes,
            request_timeout: config.request_timeout(),
            rate_limit: RateLimit {
                per_second: config.rate_limit_per_second,
                burst: config.rate_limit_burst,
            },
        },
    );
    state.prometheus = Some(prometheus);
    state.shutdown = std::sync::Arc::new(shutdown.clone());
    state.readiness = Arc::new(
        projectors
            .as_ref()
            .map(|embedded| embedded.readiness())
            .unwrap_or_default(),
    );

    let mut background = Vec::new();
    let open_log = store.clone();
    background.push(tokio::spawn(crate::control::serve(
        config.data_dir.clone(),
        Arc::new(move || vec![("log".to_string(), open_log.clone())]),
        shutdown.clone(),
    )));
    background.extend(refresh_keys);
    if let (LogCommit::Jetstream, Some(partition)) = (config.log_commit, config.partition) {
        background.push(tokio::spawn(export_partition_state(
            store.clone(),
            partition,
            shutdown.clone(),
        )));
    }
    // In cluster mode the partition's stream is the event stream: no relay.
    if let Some(url) = config
        .nats_url
        .as_ref()
        .filter(|_| config.log_commit == LogCommit::Local)
    {
        let relay = Relay::new(
            store.clone(),
            RelayConfig {
                url: url.clone(),
                stream: config.nats_stream.clone(),
                replicas: config.nats_replicas,
                duplicate_window: std::time::Duration::from_secs(config.nats_duplicate_window_secs),
                ..RelayConfig::default()
            },
        )
        .context("configuring the NATS relay")?;
        let mut readiness = state.readiness.as_ref().clone();
        readiness.push(Arc::new(RelayReadiness(relay.status())));
        state.readiness = Arc::new(readiness);
        let stop = shutdown.clone();
        background.push(tokio::spawn(async move {
            if let Err(error) = relay.run(async move { stop.cancelled().await }).await {
                tracing::error!(%error, "relay stopped");
            }
        }));
    }
    if let Some(url) = &config.nats_url {
        let ingress = CommandIngress::new(
            app.commands.clone(),
            app.auth.clone(),
            IngressConfig {
                max_body_bytes: config.body_limit_bytes,
                ..IngressConfig::default()
            },
        )
        .limited_by(state.limiter.clone());
        background.push(tokio::spawn(serve_nats_commands(
            url.clone(),
            ingress,
            shutdown.clone(),
        )));
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let local = listener.local_addr()?;
    tracing::info!(listen = %local, data_dir = %config.data_dir.display(), "planledger serving");
    eprintln!("planledger listening on http://{local}");

    let router = planledger_api::router(state);
    let signal = shutdown.clone();
    let limits = ConnectionLimits {
        header_read_timeout: config.header_read_timeout()?,
        max_connections: config.http_max_connections,
    };
    planledger_api::serve(listener, router, limits, async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        signal.cancel();
    })
    .await;
    if let Some(projectors) = projectors {
        projectors.stopped().await;
    }
    for task in background {
        let _ = task.await;
    }
    drop(app);
    store.flush().context("flushing the event log")?;
    drop(store);
    tracing::info!("stopped");
    Ok(())
}

/// `/readyz` detail for the relay. Commands never wait for NATS, so a relay that is behind or
/// disconnected does not make the service unready; its state and lag are shown instead. A
/// halted relay does: the stream no longer mirrors the log, and it takes an operator.
struct RelayReadiness(RelayStatusHandle);

impl Readiness for RelayReadiness {
    fn report(&self) -> (&'static str, bool, serde_json::Value) {
        let status = self.0.current();
        (
            "relay",
            status.halted.is_none(),
            serde_json::to_value(&status).unwrap_or(serde_json::Value::Null),
        )
    }
}

/// Serves commands over NATS request/reply, connecting (and reconnecting) until shutdown.
async fn serve_nats_commands(url: String, ingress: CommandIngress, shutdown: CancellationToken) {
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        match planledger_bus::connect(&url, "planledger-commands").await {
            Ok(client) => {
                let stop = shutdown.clone();
                if let Err(error) = ingress
                    .clone()
                    .run(client, async move { stop.cancelled().await })
                    .await
                {
                    tracing::error!(%error, "NATS command ingress stopped");
                }
                return;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "NATS not reachable for command ingress");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
}

pub(crate) async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the service");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
