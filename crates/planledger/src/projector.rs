//! `planledger projector`: one read model as its own process, and the embedded projectors that
//! `planledger serve` runs beside the API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use planledger_api::{RateLimit, RateLimiter, ReadModelState, Readiness};
use planledger_app::{App, ReadModels};
use planledger_bus::{JetStreamSource, JetStreamSourceConfig};
use planledger_projections::{LocalLogSource, ProjectionError, ProjectionHandle, RuntimeOptions};
use planledger_store::{EventStore, StoreOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::LogFormat;

/// `planledger projector`: run one read model, or act on a stopped one.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ProjectorCommand {
    /// What to do instead of running the projector.
    #[command(subcommand)]
    pub action: Option<ProjectorAction>,
    /// Flags for running the projector.
    #[command(flatten)]
    pub run: ProjectorArgs,
}

/// Subcommands of `planledger projector`.
#[derive(clap::Subcommand, Debug)]
pub enum ProjectorAction {
    /// Pass over one event a stopped projector cannot apply: records who, when, why and what
    /// in the read model (service stopped; while it runs use POST /v1/projections/NAME/quarantine).
    Quarantine(crate::quarantine::QuarantineArgs),
}

/// Runs `planledger projector [quarantine]`.
pub async fn command(command: ProjectorCommand) -> Result<()> {
    match command.action {
        Some(ProjectorAction::Quarantine(args)) => crate::quarantine::run(args),
        None => run(command.run).await,
    }
}

/// Flags of `projector`; each also reads `PLANLEDGER_<FLAG>`.
#[derive(clap::Args, Debug)]
pub struct ProjectorArgs {
    /// The read model to run: progress, accountability or agility.
    #[arg(long, env = "PLANLEDGER_PROJECTION", required = true)]
    pub name: Option<String>,
    /// Data directory: the read model lives in <DIR>/projections/<NAME>; the token signing key
    /// is read from <DIR>.
    #[arg(long, env = "PLANLEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// NATS URL(s), comma-separated: consume the JetStream stream instead of the local log.
    #[arg(long, env = "PLANLEDGER_NATS")]
    pub nats: Option<String>,
    /// Cluster mode: consume every partition's stream (`PLANLEDGER_P<nn>`, the count read from
    /// the cluster's configuration) into one read model, one runtime per partition.
    #[arg(long, env = "PLANLEDGER_CLUSTER", requires = "nats")]
    pub cluster: bool,
    /// JetStream stream to consume.
    #[arg(
        long,
        env = "PLANLEDGER_NATS_STREAM",
        default_value = "PLANLEDGER_EVENTS"
    )]
    pub nats_stream: String,
    /// Serve the read model's query routes, /healthz and /metrics on this address.
    #[arg(long, env = "PLANLEDGER_HTTP")]
    pub http: Option<SocketAddr>,
    /// The token flags of `serve` (its signing key, an identity provider's key set, issuer and
    /// audience), so the tokens the writer nodes accept work here too.
    #[command(flatten)]
    pub identity: crate::config::IdentityArgs,
    /// Log format.
    #[arg(
        long,
        env = "PLANLEDGER_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    pub log_format: LogFormat,
}

/// `/readyz` component for a projector: ready unless it has failed or stopped.
pub struct ProjectorReadiness(pub ProjectionHandle);

impl Readiness for ProjectorReadiness {
    fn report(&self) -> (&'static str, bool, serde_json::Value) {
        let mut status = self.0.status();
        status.redact_streams(None);
        let ready = status.is_running();
        let detail = serde_json::to_value(&status).unwrap_or(serde_json::Value::Null);
        (self.0.name(), ready, detail)
    }
}

/// The projectors running inside `planledger serve`.
pub struct Embedded {
    handles: Vec<ProjectionHandle>,
    tasks: Vec<JoinHandle<Result<(), ProjectionError>>>,
}

impl Embedded {
    /// `/readyz` components, one per projector.
    pub fn readiness(&self) -> Vec<Arc<dyn Readiness>> {
        self.handles
            .iter()
            .map(|h| Arc::new(ProjectorReadiness(h.clone())) as Arc<dyn Readiness>)
            .collect()
    }

    /// Waits for every projector to commit its work and stop (after `shutdown` is cancelled).
    pub async fn stopped(self) {
        for (handle, task) in self.handles.iter().zip(self.tasks) {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(projection = handle.name(), %error, "projector ended with an error")
                }
                Err(error) => {
                    tracing::warn!(projection = handle.name(), %error, "projector task failed")
                }
            }
        }
    }
}

/// Starts every read model inside this process over the local log and hands them to `app`.
pub fn start_embedded(
    app: &mut App,
    store: &EventStore,
    data_dir: &std::path::Path,
    shutdown: CancellationToken,
) -> Result<Embedded> {
    let running = planledger_projections::spawn_embedded(
        data_dir,
        store,
        RuntimeOptions::default(),
        shutdown,
    )
    .context("starting the embedded projectors (is another process using this data directory?)")?;
    let (handles, tasks): (Vec<_>, Vec<_>) = running.into_iter().unzip();
    app.read_models = ReadModels::new(handles.clone(), Some(app.queries.clone()));
    tracing::info!(
        projections = ?handles.iter().map(|h| h.name()).collect::<Vec<_>>(),
        "embedded projectors started"
    );
    Ok(Embedded { handles, tasks })
}

/// Runs one read model as its own process until SIGINT or SIGTERM.
pub async fn run(args: ProjectorArgs) -> Result<()> {
    crate::init_tracing(args.log_format);
    let name = args
        .name
        .clone()
        .context("--name is required: progress, accountability or agility")?;
    let projector = planledger_projections::projector(&name)?;
    let prometheus = crate::install_metrics()?;
    let db = planledger_projections::open_model(&args.data_dir, &name)?;
    let shutdown = CancellationToken::new();
    // The routes (over HTTP, or the writer nodes' over NATS) check tokens as `serve` does.
    let auth = if args.http.is_some() || args.cluster {
        let mut config = crate::config::Config {
            data_dir: args.data_dir.clone(),
            ..crate::config::Config::default()
        };
        args.identity.apply(&mut config);
        config.validate_identity()?;
        Some(crate::identity::authenticator(&config, &shutdown).await?)
    } else {
        None
    };

    // Over NATS the log is not opened at all: the projector may run on another machine.
    let mut cluster_client = None;
    let (handles, tasks, store, origin) = match &args.nats {
        Some(url) if args.cluster => {
            let (handles, tasks, origin, client) =
                spawn_cluster(url, &name, projector, db, shutdown.clone()).await?;
            cluster_client = Some(client);
            (handles, tasks, None, origin)
        }
        Some(url) => {
            let config = JetStreamSourceConfig::for_projection(&args.nats_stream, &name);
            let origin = format!(
                "JetStream stream {} at {url} (durable consumer {})",
                config.stream, config.durable
            );
            let source =
                JetStreamSource::connect(url, &format!("planledger-projector-{name}"), config)
                    .await
                    .with_context(|| format!("connecting the {name} projector to NATS"))?;
            let (handle, task) = planledger_projections::spawn(
                projector,
                db,
                source,
                RuntimeOptions::default(),
                shutdown.clone(),
            )?;
            (vec![handle], vec![task], None, origin)
        }
        None => {
            let log = args.data_dir.join("log");
            let store = EventStore::open(&log, StoreOptions::default()).with_context(|| {
                format!(
                    "opening the event log in {} (the log has one owner: stop `planledger serve` on this data directory, or run the projector with --nats)",
                    log.display()
                )
            })?;
            let (handle, task) = planledger_projections::spawn(
                projector,
                db,
                LocalLogSource::new(store.clone()),
                RuntimeOptions::default(),
                shutdown.clone(),
            )?;
            (
                vec![handle],
                vec![task],
                Some(store),
                format!("the local log {}", log.display()),
            )
        }
    };
    eprintln!(
        "projector {} running over {origin} (checkpoint{} {})",
        name,
        if handles.len() > 1 { "s" } else { "" },
        handles
            .iter()
            .map(|h| h.status().checkpoint.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut refresh_keys = None;
    let state = if let Some((auth, refresh)) = auth {
        refresh_keys = refresh;
        Some(ReadModelState {
            read_models: ReadModels::new(handles.clone(), None),
            auth,
            limiter: Arc::new(RateLimiter::new(RateLimit {
                per_second: 200.0,
                burst: 400.0,
            })),
        })
    } else {
        None
    };
    // Cluster mode: the writer nodes pass their read-model requests here over NATS.
    let forwarded = match (cluster_client, &state) {
        (Some(client), Some(state)) => {
            let route = crate::forwarded::projector_route(&name);
            eprintln!("projector {name} answering the writer nodes' requests on {route}.http");
            Some(tokio::spawn(crate::forwarded::serve(
                client,
                route,
                format!("planledger-projector-{name}"),
                planledger_api::projector_router(state.clone(), Some(prometheus.clone())),
                shutdown.clone(),
            )))
        }
        _ => None,
    };
    let server = match (args.http, state) {
        (Some(addr), Some(state)) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            eprintln!(
                "projector {} listening on http://{}",
                name,
                listener.local_addr()?
            );
            let router = planledger_api::projector_router(state, Some(prometheus));
            let stop = shutdown.clone();
            Some(tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            }))
        }
        _ => None,
    };

    let mut ended = Box::pin(futures::future::select_all(tasks));
    tokio::select! {
        _ = crate::serve::wait_for_signal() => {
            tracing::info!("shutting down: committing the projectors' work");
            shutdown.cancel();
            let (first, _, rest) = (&mut ended).await;
            let mut outcome = first.context("projector task").and_then(|r| r.map_err(Into::into));
            for task in rest {
                let ended = task.await.context("projector task").and_then(|r| r.map_err(Into::into));
                if outcome.is_ok() {
                    outcome = ended;
                }
            }
            outcome?;
        }
        (first, _, rest) = &mut ended => {
            shutdown.cancel();
            let outcome = first.context("projector task").and_then(|r| r.map_err(Into::into));
            for task in rest {
                if let Ok(Err(error)) = task.await {
                    tracing::warn!(%error, "projector ended with an error");
                }
            }
            outcome?;
        }
    }
    if let Some(server) = server {
        server
            .await
            .context("HTTP task")?
            .context("HTTP server failed")?;
    }
    if let Some(forwarded) = forwarded {
        forwarded.await.context("the forwarded requests' task")?;
    }
    if let Some(refresh) = refresh_keys {
        refresh.await.context("the key set refresh task")?;
    }
    drop(store);
    Ok(())
}

/// Cluster mode: one runtime per partition of the read model `name`, each over its partition's
/// stream through its own durable consumer (`planledger-<name>-p<nn>`), all into one database;
/// also the NATS connection, over which it answers the writer nodes' read-model requests.
async fn spawn_cluster(
    url: &str,
    name: &str,
    projector: Arc<dyn planledger_projections::Projector>,
    db: planledger_projections::ReadModelDb,
    shutdown: CancellationToken,
) -> Result<(
    Vec<ProjectionHandle>,
    Vec<JoinHandle<Result<(), ProjectionError>>>,
    String,
    async_nats::Client,
)> {
    let client = planledger_bus::connect(url, &format!("planledger-projector-{name}"))
        .await
        .with_context(|| format!("connecting the {name} projector to NATS at {url}"))?;
    let config = crate::cluster::configuration(&client, url).await?;
    let count = config.partition_count;
    db.claim_partitions(count)
        .with_context(|| format!("opening the {name} read model for {count} partitions"))?;
    let js = async_nats::jetstream::new(client.clone());
    let mut handles = Vec::new();
    let mut tasks = Vec::new();
    for partition in 0..count {
        let mut source_config = JetStreamSourceConfig::for_projection(
            &planledger_proto::subjects::partition_stream_name(partition),
            name,
        );
        source_config.durable = format!("planledger-{name}-p{partition:02}");
        let source = JetStreamSource::new(js.clone(), source_config);
        let (handle, task) = planledger_projections::spawn(
            projector.clone(),
            db.for_partition(partition, count),
            source,
            RuntimeOptions::default(),
            shutdown.clone(),
        )?;
        handles.push(handle);
        tasks.push(task);
    }
    let origin = format!(
        "the {count} partition streams at {url} (durable consumers planledger-{name}-p<nn>)"
    );
    Ok((handles, tasks, origin, client))
}
