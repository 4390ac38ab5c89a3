//! The projector runtime: feeds a projector events in global order from a source and commits
//! its writes together with the checkpoint in one RocksDB batch.
//!
//! Exactly once, by construction: the checkpoint travels in the same `WriteBatch` as the writes
//! it covers, a delivery at or below the checkpoint is skipped, and the source is acknowledged
//! only after the commit. A crash therefore loses at most uncommitted work, which the source
//! delivers again; it never applies an event twice or skips one.
//!
//! Plans are kept in memory between events (evicted only right after a commit, when everything
//! they hold is on disk); each event adds one small record to the batch, and a plan's full state
//! is written only when its tail of records has grown to half its size (see [`crate::ReadModelDb`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use planledger_domain::Plan;
use planledger_store::Position;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::db::{
    Checkpoint, CommitBatch, Durability, ReadModelDb, Staged, StoredPlan, snapshot_due,
    write_event_key, write_index_key, write_snapshot_key,
};
use crate::decode::{event_record_len, split_stream, write_event_record};
use crate::projector::{IndexChange, ProjectedEvent, Projector};
use crate::quarantine::{Poison, Quarantine, QuarantineRequest};
use crate::source::{Delivery, EventSource};
use crate::{ProjectionError, SourceError};

/// Tuning of a projector runtime.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Most events asked of the source at once.
    pub batch_size: usize,
    /// While catching up, commit at least every this many events.
    pub commit_events: usize,
    /// While catching up, commit at least this often.
    pub commit_interval: Duration,
    /// Plans kept in memory between commits (clean ones are evicted above this).
    pub cache_plans: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            batch_size: 4096,
            // Records are small (one per event), so committing every full batch costs little
            // and keeps readers close behind even while the projector catches up.
            commit_events: 4096,
            commit_interval: Duration::from_millis(100),
            cache_plans: 10_000,
        }
    }
}

/// What a projector is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ProjectorState {
    /// Opening its database and source.
    Starting,
    /// Behind the source by at least a full batch.
    CatchingUp,
    /// Applying events as they arrive.
    Live,
    /// Stopped by an error it cannot get past (see `error`); the last committed model is served.
    Failed,
    /// Shut down, or (with `poison` set) stopped at an event it cannot apply, waiting for an
    /// upgrade or a quarantine; the last committed model is served meanwhile.
    Stopped,
}

/// A rebuild in progress.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RebuildStatus {
    /// The generation being filled.
    pub generation: u64,
    /// The last position it applied.
    pub checkpoint: u64,
    /// When it started.
    pub started_at: Timestamp,
    /// Events applied per second since it started.
    pub events_per_second: f64,
}

/// What a status shows instead of another tenant's stream id.
pub const REDACTED_STREAM: &str = "(another tenant's stream)";

/// A projector's checkpoint, lag and state, as `GET /v1/projections` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProjectorStatus {
    /// The read model.
    pub name: String,
    /// Cluster mode: the partition this projector applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// Where its events come from.
    pub source: String,
    /// What it is doing.
    pub state: ProjectorState,
    /// The live generation.
    pub generation: u64,
    /// The last position committed to the live generation (what queries see).
    pub checkpoint: u64,
    /// When the event at the checkpoint was recorded in the log.
    pub checkpoint_recorded_at: Option<Timestamp>,
    /// The newest position the source knows of.
    pub head: Option<u64>,
    /// `head - checkpoint`.
    pub lag_positions: Option<u64>,
    /// Seconds between the newest event seen and the checkpoint's event (0 when caught up).
    pub lag_seconds: Option<f64>,
    /// Events applied by this process since it started.
    pub events_applied: u64,
    /// The rebuild in progress, if any.
    pub rebuild: Option<RebuildStatus>,
    /// The last error, if any.
    pub error: Option<String>,
    /// The event the projector is stopped at (state `stopped`), if it met one it cannot apply.
    pub poison: Option<Poison>,
    /// Every position an operator quarantined (passed over by the live model and rebuilds).
    pub quarantined: Vec<Quarantine>,
}

impl ProjectorStatus {
    /// Whether the projector is working (not failed and not stopped): what `/readyz` reports.
    pub fn is_running(&self) -> bool {
        !matches!(self.state, ProjectorState::Failed | ProjectorState::Stopped)
    }

    /// Hides the stream id (tenant and plan) of the poison event and of quarantined events
    /// unless the stream is `tenant`'s (all of them with `None`): a status is shown to callers
    /// of every tenant, and to `/readyz` without a token.
    pub fn redact_streams(&mut self, tenant: Option<&str>) {
        let hide = |stream: &mut String| {
            let own = split_stream(stream).is_some_and(|(t, _)| Some(t) == tenant);
            if !own {
                *stream = REDACTED_STREAM.to_owned();
            }
        };
        if let Some(poison) = &mut self.poison {
            hide(&mut poison.stream);
        }
        for record in &mut self.quarantined {
            hide(&mut record.stream);
        }
    }
}

enum Control {
    Rebuild(oneshot::Sender<Result<ProjectorStatus, ProjectionError>>),
    Quarantine(
        QuarantineRequest,
        oneshot::Sender<Result<Quarantine, ProjectionError>>,
    ),
}

/// A handle on a running projector: its read model, its status, read-your-writes waits and
/// rebuild requests. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ProjectionHandle {
    name: &'static str,
    db: ReadModelDb,
    status: watch::Receiver<ProjectorStatus>,
    controls: mpsc::Sender<Control>,
}

impl ProjectionHandle {
    /// The read model's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The read model's database (for queries).
    pub fn db(&self) -> &ReadModelDb {
        &self.db
    }

    /// The latest published status.
    pub fn status(&self) -> ProjectorStatus {
        self.status.borrow().clone()
    }

    /// A receiver that changes whenever the status does (every commit, and once a second).
    pub fn subscribe(&self) -> watch::Receiver<ProjectorStatus> {
        self.status.clone()
    }

    /// Waits until the live model has applied `position` (Ok with the checkpoint reached), or
    /// until `timeout` passes or the projector stops (Err with the checkpoint reached).
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> Result<u64, u64> {
        let mut status = self.status.clone();
        let reached = tokio::time::timeout(
            timeout,
            status.wait_for(|s| {
                s.checkpoint >= position
                    || matches!(s.state, ProjectorState::Failed | ProjectorState::Stopped)
            }),
        )
        .await
        .ok()
        .and_then(|r| r.ok().map(|s| s.checkpoint));
        match reached {
            Some(checkpoint) if checkpoint >= position => Ok(checkpoint),
            _ => Err(self.status.borrow().checkpoint),
        }
    }

    /// Asks the projector to rebuild its model from position 0 in a new generation beside the
    /// live one; returns at once with the status (a rebuild already running is not restarted).
    pub async fn rebuild(&self) -> Result<ProjectorStatus, ProjectionError> {
        let stopped = || ProjectionError::Stopped {
            projection: self.name.to_owned(),
        };
        let (reply, answer) = oneshot::channel();
        self.controls
            .send(Control::Rebuild(reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Quarantines the event the projector is stopped at (`request.position` must be that
    /// position): records it durably, then the projector passes over it and continues.
    pub async fn quarantine(
        &self,
        request: QuarantineRequest,
    ) -> Result<Quarantine, ProjectionError> {
        let stopped = || ProjectionError::Stopped {
            projection: self.name.to_owned(),
        };
        let (reply, answer) = oneshot::channel();
        self.controls
            .send(Control::Quarantine(request, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// One generation's working state: committed and applied checkpoints, plans in memory.
struct Working {
    number: u64,
    committed: Checkpoint,
    applied: Checkpoint,
    plans: HashMap<String, StoredPlan>,
    writes: Staged,
    pending: usize,
    pending_since: Option<Instant>,
}

/// What applying one batch did.
#[derive(Clone, Copy, Debug, Default)]
struct Applied {
    events: u64,
    skipped: u64,
    quarantined: u64,
    committed: bool,
}

impl Working {
    fn load(db: &ReadModelDb, number: u64) -> Result<Self, ProjectionError> {
        let checkpoint = db.checkpoint(number)?;
        Ok(Self {
            number,
            committed: checkpoint,
            applied: checkpoint,
            plans: HashMap::new(),
            writes: Staged::default(),
            pending: 0,
            pending_since: None,
        })
    }

    fn due(&self, options: &RuntimeOptions) -> bool {
        self.pending >= options.commit_events
            || self
                .pending_since
                .is_some_and(|since| since.elapsed() >= options.commit_interval)
    }

    /// Applies deliveries in order, passing over `quarantined` positions; stops at the first
    /// event it cannot apply.
    fn apply(
        &mut self,
        projector: &dyn Projector,
        db: &ReadModelDb,
        deliveries: &[Delivery],
        quarantined: &BTreeMap<u64, Quarantine>,
    ) -> Result<Applied, ProjectionError> {
        let mut applied = Applied::default();
        let mut changes: Vec<IndexChange> = Vec::new();
        decode_all(deliveries);
        for delivery in deliveries {
            let position = delivery.position.get();
            if position <= self.applied.position {
                applied.skipped += 1;
                continue;
            }
            if position != self.applied.position + 1 {
                return Err(ProjectionError::Gap {
                    projection: projector.name().to_owned(),
                    expected: self.applied.position + 1,
                    delivered: position,
                });
            }
            let envelope = &delivery.envelope;
            if quarantined.contains_key(&position) {
                applied.quarantined += 1;
                self.applied = Checkpoint {
                    position,
                    recorded_at: Some(envelope.recorded_at),
                };
                self.pending += 1;
                self.pending_since.get_or_insert_with(Instant::now);
                continue;
            }
            let stream = envelope.stream.as_str();
            let event = delivery.event()?;
            let Some((tenant, plan_id)) = split_stream(stream) else {
                return Err(ProjectionError::NotAPlanStream {
                    position,
                    stream: stream.to_owned(),
                    event_type: envelope.event_type.clone(),
                });
            };
            if !self.plans.contains_key(stream) {
                let stored = db.load_plan(self.number, stream)?.unwrap_or_default();
                self.plans.insert(stream.to_owned(), stored);
            }
            let stored = self
                .plans
                .get_mut(stream)
                .expect("the plan was inserted just above");
            projector.apply(
                &mut stored.plan,
                &ProjectedEvent {
                    position: delivery.position,
                    stream,
                    tenant,
                    plan_id,
                    event,
                },
                &mut changes,
            );
            let corrupt = |e: serde_json::Error| ProjectionError::CorruptRecord {
                projection: projector.name().to_owned(),
                key: stream.to_owned(),
                detail: format!("does not serialize: {e}"),
            };
            let version = stored.plan.version;
            let record = event_record_len(envelope);
            if snapshot_due(stored.snapshot_bytes, stored.tail_bytes + record) {
                let plan: &Plan = &stored.plan;
                stored.snapshot_bytes = self
                    .writes
                    .put(
                        |k| write_snapshot_key(k, stream),
                        |v| serde_json::to_writer(v, plan),
                    )
                    .map_err(corrupt)?;
                // The tail the snapshot replaces, versions snapshot_version + 1 .. version - 1
                // (the event at `version` was never written as a record): one range delete,
                // not a delete per record.
                if stored.snapshot_version + 1 < version {
                    self.writes.delete_range(
                        |k| write_event_key(k, stream, stored.snapshot_version + 1),
                        |k| write_event_key(k, stream, version),
                    );
                }
                stored.snapshot_version = version;
                stored.tail_bytes = 0;
            } else {
                self.writes
                    .put(
                        |k| write_event_key(k, stream, version),
                        |v| {
                            write_event_record(v, envelope);
                            Ok::<(), std::convert::Infallible>(())
                        },
                    )
                    .unwrap_or_else(|never| match never {});
                stored.tail_bytes += record;
            }
            for change in changes.drain(..) {
                if change.present {
                    self.writes
                        .put(
                            |k| write_index_key(k, &change.key),
                            |_| Ok::<(), std::convert::Infallible>(()),
                        )
                        .unwrap_or_else(|never| match never {});
                } else {
                    self.writes.delete(|k| write_index_key(k, &change.key));
                }
            }
            applied.events += 1;
            self.applied = Checkpoint {
                position,
                recorded_at: Some(envelope.recorded_at),
            };
            self.pending += 1;
            self.pending_since.get_or_insert_with(Instant::now);
        }
        Ok(applied)
    }

    /// Writes the staged records and the checkpoint in one batch.
    fn commit(
        &mut self,
        db: &ReadModelDb,
        durability: Durability,
        cache_plans: usize,
    ) -> Result<(), ProjectionError> {
        if self.applied == self.committed {
            return Ok(());
        }
        let started = Instant::now();
        let batch = CommitBatch {
            writes: &self.writes,
            checkpoint: self.applied,
        };
        db.commit(self.number, &batch, durability)?;
        let records = self.writes.len();
        self.writes.clear();
        self.committed = self.applied;
        self.pending = 0;
        self.pending_since = None;
        if self.plans.len() > cache_plans {
            // Everything is on disk after a commit; keep three quarters of the budget.
            let excess = self.plans.len() - cache_plans * 3 / 4;
            let victims: Vec<String> = self.plans.keys().take(excess).cloned().collect();
            for victim in victims {
                self.plans.remove(&victim);
            }
        }
        let name = db.name().to_owned();
        metrics::histogram!("planledger_projector_commit_seconds", "projection" => name)
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("planledger_projector_commit_records", "projection" => db.name().to_owned())
            .record(records as f64);
        Ok(())
    }
}

/// Decodes a batch's events ahead of applying them, on two threads when the batch is large:
/// decoding is the costliest part of applying and needs no state, so it overlaps with itself
/// while the projector's folding stays in order on one thread. Each delivery keeps its event
/// ([`Delivery::event`]); one that does not decode is left for the fold to report.
fn decode_all(deliveries: &[Delivery]) {
    let decode = |part: &[Delivery]| {
        for delivery in part {
            let _ = delivery.event();
        }
    };
    // Asked once per process: the answer reads the cgroup's CPU quota from /proc and /sys,
    // which cost as much as applying a live batch.
    static PARALLEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if deliveries.len() < 512
        || !*PARALLEL
            .get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
    {
        return decode(deliveries);
    }
    let (first, second) = deliveries.split_at(deliveries.len() / 2);
    std::thread::scope(|scope| {
        let helper = scope.spawn(|| decode(second));
        decode(first);
        // A panic while decoding is a bug; the fold decodes what is left and surfaces it as usual.
        let _ = helper.join();
    });
}

/// Applies a batch and commits when `commit_now` or the commit policy says so; on an event it
/// cannot apply, commits what came before it and returns the error.
fn apply_and_commit(
    working: &mut Working,
    projector: &dyn Projector,
    db: &ReadModelDb,
    deliveries: &[Delivery],
    commit_now: bool,
    durability: Durability,
    options: &RuntimeOptions,
) -> Result<Applied, ProjectionError> {
    let quarantined = db.quarantines();
    let mut applied = match working.apply(projector, db, deliveries, &quarantined) {
        Ok(applied) => applied,
        Err(error) => {
            working.commit(db, durability, options.cache_plans)?;
            return Err(error);
        }
    };
    if commit_now || working.due(options) {
        working.commit(db, durability, options.cache_plans)?;
        applied.committed = true;
    }
    Ok(applied)
}

/// The working state back from the blocking pool, the deliveries it was given, and the outcome.
type AppliedBatch = (Working, Vec<Delivery>, Result<Applied, ProjectionError>);

/// Runs [`apply_and_commit`] on the blocking pool, moving the working state and the deliveries
/// there and back.
async fn apply_blocking(
    mut working: Working,
    projector: Arc<dyn Projector>,
    db: ReadModelDb,
    deliveries: Vec<Delivery>,
    commit_now: bool,
    durability: Durability,
    options: RuntimeOptions,
) -> Result<AppliedBatch, ProjectionError> {
    tokio::task::spawn_blocking(move || {
        let result = apply_and_commit(
            &mut working,
            projector.as_ref(),
            &db,
            &deliveries,
            commit_now,
            durability,
            &options,
        );
        (working, deliveries, result)
    })
    .await
    .map_err(|e| ProjectionError::Task(e.to_string()))
}

async fn commit_blocking(
    mut working: Working,
    db: ReadModelDb,
    durability: Durability,
    cache_plans: usize,
) -> Result<(Working, Result<(), ProjectionError>), ProjectionError> {
    tokio::task::spawn_blocking(move || {
        let result = working.commit(&db, durability, cache_plans);
        (working, result)
    })
    .await
    .map_err(|e| ProjectionError::Task(e.to_string()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ProjectionError> + Send + 'static,
) -> Result<T, ProjectionError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ProjectionError::Task(e.to_string()))?
}

/// A rebuild in progress inside a running projector.
struct RebuildJob<S> {
    source: S,
    working: Working,
    started: Instant,
    started_at: Timestamp,
    applied: u64,
    /// Cluster mode: this partition has told the database it caught up, and waits for the
    /// other partitions' rebuilds (it keeps applying meanwhile).
    marked_caught_up: bool,
}

/// Starts a projector over `source` as a task; it runs until `shutdown` is cancelled or a
/// fatal error, and can be asked to rebuild through the returned handle.
pub fn spawn<S: EventSource>(
    projector: Arc<dyn Projector>,
    db: ReadModelDb,
    source: S,
    options: RuntimeOptions,
    shutdown: CancellationToken,
) -> Result<(ProjectionHandle, JoinHandle<Result<(), ProjectionError>>), ProjectionError> {
    let live = Working::load(&db, db.live_generation())?;
    let name = projector.name();
    let initial = ProjectorStatus {
        name: name.to_owned(),
        partition: db.partition(),
        source: source.describe(),
        state: ProjectorState::Starting,
        generation: live.number,
        checkpoint: live.committed.position,
        checkpoint_recorded_at: live.committed.recorded_at,
        head: source.head().map(|h| h.position.get()),
        lag_positions: None,
        lag_seconds: None,
        events_applied: 0,
        rebuild: None,
        error: None,
        poison: None,
        quarantined: db.quarantines().values().cloned().collect(),
    };
    let (status_tx, status_rx) = watch::channel(initial);
    let (control_tx, control_rx) = mpsc::channel(8);
    let handle = ProjectionHandle {
        name,
        db: db.clone(),
        status: status_rx,
        controls: control_tx,
    };
    let runner = Runner {
        projector,
        db,
        options,
        status: status_tx,
        events_applied: 0,
        newest_seen: None,
        delivered_live: live.committed.position,
        state: ProjectorState::Starting,
        error: None,
        blocked: None,
        resume: None,
    };
    let span = match handle.db.partition() {
        Some(partition) => tracing::info_span!("projector", projection = name, partition),
        None => tracing::info_span!("projector", projection = name),
    };
    let task = tokio::spawn(
        runner
            .run(source, live, control_rx, shutdown)
            .instrument(span),
    );
    Ok((handle, task))
}

enum Step {
    Shutdown,
    Control(Option<Control>),
    Live(Result<Vec<Delivery>, SourceError>),
    Rebuild(Result<Vec<Delivery>, SourceError>),
    Tick,
}

struct Runner {
    projector: Arc<dyn Projector>,
    db: ReadModelDb,
    options: RuntimeOptions,
    status: watch::Sender<ProjectorStatus>,
    events_applied: u64,
    /// The newest (position, recorded_at) any source delivered.
    newest_seen: Option<(u64, Timestamp)>,
    /// The highest position the live source delivered.
    delivered_live: u64,
    state: ProjectorState,
    error: Option<String>,
    /// The poison event the live model is stopped at, and the deliveries from it on.
    blocked: Option<Blocked>,
    /// Deliveries to apply before asking the source again (those held at a poison event that
    /// has since been quarantined).
    resume: Option<Vec<Delivery>>,
}

/// A live model stopped at an event it cannot apply.
struct Blocked {
    poison: Poison,
    held: Vec<Delivery>,
}

async fn next_rebuild<S: EventSource>(
    job: &mut Option<RebuildJob<S>>,
    max: usize,
) -> Result<Vec<Delivery>, SourceError> {
    match job {
        Some(job) => {
            job.source
                .next_batch(Position(job.working.applied.position), max)
                .await
        }
        None => std::future::pending().await,
    }
}

impl Runner {
    fn name(&self) -> &'static str {
        self.projector.name()
    }

    /// Labels of this projector's gauges: the read model, and its partition in cluster mode.
    fn labels(&self) -> Vec<metrics::Label> {
        let mut labels = vec![metrics::Label::new("projection", self.name())];
        if let Some(partition) = self.db.partition() {
            labels.push(metrics::Label::new("partition", partition.to_string()));
        }
        labels
    }

    fn publish<S: EventSource>(&self, source: &S, live: &Working, rebuild: Option<&RebuildJob<S>>) {
        let checkpoint = live.committed.position;
        let head = source
            .head()
            .map(|h| h.position.get())
            .into_iter()
            .chain(self.newest_seen.map(|(p, _)| p))
            .max();
        let lag_positions = head.map(|h| h.saturating_sub(checkpoint));
        let lag_seconds = match (lag_positions, self.newest_seen, live.committed.recorded_at) {
            (Some(0), _, _) => Some(0.0),
            (_, Some((_, newest)), Some(at)) => {
                Some((newest.as_millisecond() - at.as_millisecond()).max(0) as f64 / 1000.0)
            }
            _ => None,
        };
        let name = self.name();
        metrics::gauge!("planledger_projector_position", self.labels()).set(checkpoint as f64);
        if let Some(lag) = lag_positions {
            metrics::gauge!("planledger_projector_lag_positions", self.labels()).set(lag as f64);
        }
        if let Some(lag) = lag_seconds {
            metrics::gauge!("planledger_projector_lag_seconds", self.labels()).set(lag);
        }
        let rebuild = rebuild.map(|job| {
            metrics::gauge!("planledger_projector_rebuild_position", self.labels())
                .set(job.working.committed.position as f64);
            RebuildStatus {
                generation: job.working.number,
                checkpoint: job.working.committed.position,
                started_at: job.started_at,
                events_per_second: job.applied as f64
                    / job.started.elapsed().as_secs_f64().max(1e-3),
            }
        });
        let status = ProjectorStatus {
            name: name.to_owned(),
            partition: self.db.partition(),
            source: source.describe(),
            state: self.state,
            generation: live.number,
            checkpoint,
            checkpoint_recorded_at: live.committed.recorded_at,
            head,
            lag_positions,
            lag_seconds,
            events_applied: self.events_applied,
            rebuild,
            error: self.error.clone(),
            poison: self.blocked.as_ref().map(|b| b.poison.clone()),
            quarantined: self.db.quarantines().values().cloned().collect(),
        };
        self.status.send_if_modified(|current| {
            if *current == status {
                false
            } else {
                *current = status;
                true
            }
        });
    }

    fn seen(&mut self, batch: &[Delivery]) {
        if let Some(last) = batch.last() {
            let newest = (last.position.get(), last.envelope.recorded_at);
            if self.newest_seen.is_none_or(|(p, _)| p < newest.0) {
                self.newest_seen = Some(newest);
            }
        }
    }

    async fn run<S: EventSource>(
        mut self,
        mut source: S,
        live: Working,
        mut controls: mpsc::Receiver<Control>,
        shutdown: CancellationToken,
    ) -> Result<(), ProjectionError> {
        let result = self
            .run_loop(&mut source, live, &mut controls, &shutdown)
            .await;
        let (state, error) = match &result {
            Ok(()) => (ProjectorState::Stopped, None),
            Err(error) => {
                tracing::error!(%error, "projector stopped");
                metrics::counter!("planledger_projector_errors_total", "projection" => self.name())
                    .increment(1);
                (ProjectorState::Failed, Some(error.to_string()))
            }
        };
        self.status.send_modify(|status| {
            status.state = state;
            if error.is_some() {
                status.error = error;
            }
        });
        result
    }

    async fn run_loop<S: EventSource>(
        &mut self,
        source: &mut S,
        mut live: Working,
        controls: &mut mpsc::Receiver<Control>,
        shutdown: &CancellationToken,
    ) -> Result<(), ProjectionError> {
        let mut rebuild: Option<RebuildJob<S>> = None;
        if self.db.poison()?.is_some() {
            // Recorded by an earlier run; this run finds the event again if it is still in the way.
            let db = self.db.clone();
            blocking(move || db.set_poison(None)).await?;
        }
        if let Some(number) = self.db.building_generation()? {
            let working = Working::load(&self.db, number)?;
            tracing::info!(
                generation = number,
                from = working.committed.position,
                "resuming a rebuild"
            );
            let replay = source
                .replay_from(Position(working.committed.position))
                .await?;
            rebuild = Some(RebuildJob {
                source: replay,
                working,
                started: Instant::now(),
                started_at: Timestamp::now(),
                applied: 0,
                marked_caught_up: false,
            });
        }
        if let Some(head) = source.head()
            && head.position.get() < live.committed.position
        {
            let error = format!(
                "the read model is at position {} but the log ends at {}: it was built from another log; rebuild it",
                live.committed.position, head.position
            );
            tracing::error!(%error, "read model ahead of its source");
            self.error = Some(error);
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut controls_open = true;
        let live_durability = if source.needs_durable_commit() {
            Durability::Synced
        } else {
            Durability::Logged
        };
        tracing::info!(
            generation = live.number,
            checkpoint = live.committed.position,
            source = %source.describe(),
            "projector started"
        );
        let outcome = loop {
            if let Some(job) = rebuild.take() {
                let switched_elsewhere = self.db.live_generation() == job.working.number;
                let caught_up = job.working.pending == 0
                    && job.working.committed.position >= live.applied.position;
                if switched_elsewhere || (caught_up && !job.marked_caught_up) {
                    match self.switch(source, job).await? {
                        Ok(rebuilt) => {
                            let old = std::mem::replace(&mut live, rebuilt).number;
                            if old != live.number {
                                // Cluster mode: the last partition to move drops the old one.
                                let db = self.db.clone();
                                blocking(move || db.left_generation(old)).await?;
                            }
                        }
                        Err(waiting) => rebuild = Some(waiting),
                    }
                    if self
                        .blocked
                        .as_ref()
                        .is_some_and(|b| b.poison.position <= live.applied.position)
                    {
                        self.blocked = None;
                        self.state = ProjectorState::Live;
                        self.error = None;
                    }
                } else {
                    rebuild = Some(job);
                }
            }
            self.publish(source, &live, rebuild.as_ref());
            let after = Position(live.applied.position);
            let max = self.options.batch_size;
            let live_open = self.blocked.is_none();
            // Unbiased: under steady load a rebuild still gets its turn beside the live source.
            let step = match self.resume.take() {
                Some(held) => Step::Live(Ok(held)),
                None => tokio::select! {
                    _ = shutdown.cancelled() => Step::Shutdown,
                    control = controls.recv(), if controls_open => Step::Control(control),
                    batch = source.next_batch(after, max), if live_open => Step::Live(batch),
                    batch = next_rebuild(&mut rebuild, max) => Step::Rebuild(batch),
                    _ = tick.tick() => Step::Tick,
                },
            };
            match step {
                Step::Shutdown => break Ok(()),
                Step::Control(None) => controls_open = false,
                Step::Control(Some(Control::Rebuild(reply))) => {
                    let started = self.start_rebuild(source, &mut rebuild).await;
                    if let Err(error) = &started {
                        tracing::warn!(%error, "could not start a rebuild");
                    }
                    self.publish(source, &live, rebuild.as_ref());
                    let _ = reply.send(started.map(|()| self.status.borrow().clone()));
                }
                Step::Control(Some(Control::Quarantine(request, reply))) => {
                    let recorded = self.quarantine(request, &live).await;
                    self.publish(source, &live, rebuild.as_ref());
                    let _ = reply.send(recorded);
                }
                Step::Live(Ok(batch)) => {
                    let full = batch.len() >= max;
                    self.seen(&batch);
                    if let Some(last) = batch.last() {
                        self.delivered_live = self.delivered_live.max(last.position.get());
                    }
                    let (working, batch, result) = apply_blocking(
                        live,
                        self.projector.clone(),
                        self.db.clone(),
                        batch,
                        !full,
                        live_durability,
                        self.options.clone(),
                    )
                    .await?;
                    live = working;
                    let applied = match result {
                        Ok(applied) => applied,
                        Err(error) if error.is_poison() => {
                            // What came before it is committed; hold the rest and wait.
                            let held: Vec<Delivery> = batch
                                .into_iter()
                                .filter(|d| d.position.get() > live.applied.position)
                                .collect();
                            self.stop_at(&error, held).await?;
                            self.acknowledge(source, live.committed.position).await;
                            continue;
                        }
                        Err(error) => break Err(error),
                    };
                    self.count(applied);
                    self.state = if full {
                        ProjectorState::CatchingUp
                    } else {
                        ProjectorState::Live
                    };
                    if applied.committed {
                        self.error = None;
                        self.acknowledge(source, live.committed.position).await;
                    }
                }
                Step::Live(Err(SourceError::Closed { source_name })) => {
                    tracing::info!(source = %source_name, "the event source closed");
                    break Ok(());
                }
                Step::Live(Err(error)) => {
                    tracing::warn!(%error, "the event source failed; retrying in 1 s");
                    self.error = Some(error.to_string());
                    self.publish(source, &live, rebuild.as_ref());
                    tokio::select! {
                        _ = shutdown.cancelled() => break Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Step::Rebuild(Ok(batch)) => {
                    let Some(mut job) = rebuild.take() else {
                        continue;
                    };
                    let full = batch.len() >= max;
                    self.seen(&batch);
                    let (working, _, result) = apply_blocking(
                        job.working,
                        self.projector.clone(),
                        self.db.clone(),
                        batch,
                        !full,
                        Durability::Unlogged,
                        self.options.clone(),
                    )
                    .await?;
                    job.working = working;
                    match result {
                        Ok(applied) => {
                            job.applied += applied.events;
                            if applied.committed {
                                let through = job.working.committed.position;
                                if let Err(error) = job.source.acknowledge(Position(through)).await
                                {
                                    tracing::warn!(%error, "the rebuild source refused an acknowledgement");
                                }
                            }
                            rebuild = Some(job);
                        }
                        Err(error) => {
                            self.abandon(job, &error).await;
                        }
                    }
                }
                Step::Rebuild(Err(error)) => {
                    if let Some(job) = rebuild.take() {
                        self.abandon(job, &ProjectionError::Source(error)).await;
                    }
                }
                Step::Tick => {
                    if live.pending > 0 && live.due(&self.options) {
                        let (working, result) = commit_blocking(
                            live,
                            self.db.clone(),
                            live_durability,
                            self.options.cache_plans,
                        )
                        .await?;
                        live = working;
                        result?;
                        self.acknowledge(source, live.committed.position).await;
                    }
                }
            }
        };
        // Keep what was applied: the live generation, and a rebuild's progress so it resumes.
        let (working, committed) = commit_blocking(
            live,
            self.db.clone(),
            live_durability,
            self.options.cache_plans,
        )
        .await?;
        live = working;
        if committed.is_ok() {
            self.acknowledge(source, live.committed.position).await;
        }
        if let Some(job) = rebuild {
            let (_, result) = commit_blocking(
                job.working,
                self.db.clone(),
                Durability::Unlogged,
                self.options.cache_plans,
            )
            .await?;
            if let Err(error) = result {
                tracing::warn!(%error, "could not save the rebuild's progress; it restarts from its last commit");
            }
        }
        self.publish(source, &live, None);
        committed?;
        outcome
    }

    fn count(&mut self, applied: Applied) {
        self.events_applied += applied.events;
        let name = self.name();
        metrics::counter!("planledger_projector_events_total", "projection" => name)
            .increment(applied.events);
        if applied.quarantined > 0 {
            metrics::counter!("planledger_projector_quarantined_total", "projection" => name)
                .increment(applied.quarantined);
        }
        if applied.skipped > 0 {
            metrics::counter!("planledger_projector_skipped_total", "projection" => name)
                .increment(applied.skipped);
        }
    }

    /// Stops the live model at the poison event heading `held`: records it (for the status,
    /// `/readyz` and an offline quarantine) and stops asking the source until it is quarantined.
    async fn stop_at(
        &mut self,
        error: &ProjectionError,
        held: Vec<Delivery>,
    ) -> Result<(), ProjectionError> {
        let Some(first) = held.first() else {
            return Err(ProjectionError::Task(format!(
                "a poison event was reported but not delivered: {error}"
            )));
        };
        let poison = Poison::new(first, error);
        tracing::error!(
            position = poison.position,
            event_type = %poison.event_type,
            schema_version = poison.schema_version,
            stream = %poison.stream,
            %error,
            "projector stopped at an event it cannot apply; upgrade this build or quarantine the event"
        );
        metrics::gauge!("planledger_projector_poison_position", self.labels())
            .set(poison.position as f64);
        metrics::counter!("planledger_projector_errors_total", "projection" => self.name())
            .increment(1);
        let db = self.db.clone();
        let record = poison.clone();
        blocking(move || db.set_poison(Some(&record))).await?;
        self.state = ProjectorState::Stopped;
        self.error = Some(poison.error.clone());
        self.blocked = Some(Blocked { poison, held });
        Ok(())
    }

    /// Records a quarantine of the position the live model is stopped at, and lets it go on.
    async fn quarantine(
        &mut self,
        request: QuarantineRequest,
        live: &Working,
    ) -> Result<Quarantine, ProjectionError> {
        let refuse = |reason: String| ProjectionError::QuarantineRefused {
            projection: self.name().to_owned(),
            position: request.position,
            reason,
        };
        let Some(blocked) = &self.blocked else {
            return Err(refuse(format!(
                "the projector is not stopped at an event (it has applied up to position {}); only the position a projector is stopped at can be quarantined",
                live.applied.position
            )));
        };
        if blocked.poison.position != request.position {
            return Err(refuse(format!(
                "the projector is stopped at position {}, not {}",
                blocked.poison.position, request.position
            )));
        }
        let record = request.record(&blocked.poison);
        let db = self.db.clone();
        let stored = record.clone();
        blocking(move || {
            db.quarantine(stored)?;
            db.set_poison(None)
        })
        .await?;
        tracing::warn!(
            position = record.position,
            event_type = %record.event_type,
            by = %record.by,
            reason = %record.reason,
            "event quarantined; the projector passes over it and continues"
        );
        metrics::gauge!("planledger_projector_poison_position", self.labels()).set(0.0);
        if let Some(blocked) = self.blocked.take() {
            self.resume = Some(blocked.held);
        }
        self.state = ProjectorState::Live;
        self.error = None;
        Ok(record)
    }

    async fn acknowledge<S: EventSource>(&mut self, source: &mut S, through: u64) {
        let through = through.min(self.delivered_live);
        if through == 0 {
            return;
        }
        if let Err(error) = source.acknowledge(Position(through)).await {
            // Unacknowledged events are delivered again and skipped by the checkpoint.
            tracing::warn!(%error, through, "the event source refused an acknowledgement");
        }
    }

    async fn start_rebuild<S: EventSource>(
        &mut self,
        source: &mut S,
        rebuild: &mut Option<RebuildJob<S>>,
    ) -> Result<(), ProjectionError> {
        if rebuild.is_some() {
            return Ok(());
        }
        let db = self.db.clone();
        let number = blocking(move || db.start_generation()).await?;
        let replay = match source.replay_from(Position(0)).await {
            Ok(replay) => replay,
            Err(error) => {
                let db = self.db.clone();
                blocking(move || db.abandon_generation(number)).await?;
                return Err(error.into());
            }
        };
        tracing::info!(generation = number, "rebuild started");
        metrics::counter!("planledger_projector_rebuilds_total", "projection" => self.name())
            .increment(1);
        *rebuild = Some(RebuildJob {
            source: replay,
            working: Working::load(&self.db, number)?,
            started: Instant::now(),
            started_at: Timestamp::now(),
            applied: 0,
            marked_caught_up: false,
        });
        Ok(())
    }

    async fn abandon<S: EventSource>(&mut self, job: RebuildJob<S>, error: &ProjectionError) {
        tracing::error!(%error, generation = job.working.number, "rebuild failed; the live model stays");
        self.error = Some(format!("rebuild failed: {error}"));
        let db = self.db.clone();
        let number = job.working.number;
        if let Err(drop_error) = blocking(move || db.abandon_generation(number)).await {
            tracing::warn!(error = %drop_error, "could not drop the failed rebuild's generation");
        }
    }

    /// Makes a caught-up rebuild the live generation. In cluster mode the generation goes
    /// live once every partition's rebuild has caught up: until then the job is handed back
    /// (`Err`) and keeps applying; a partition whose rebuild another partition's switch made
    /// live continues from the rebuild's checkpoint (its live source is asked again from there).
    async fn switch<S: EventSource>(
        &mut self,
        source: &mut S,
        mut job: RebuildJob<S>,
    ) -> Result<Result<Working, RebuildJob<S>>, ProjectionError> {
        let number = job.working.number;
        if self.db.live_generation() != number {
            let db = self.db.clone();
            if !blocking(move || db.caught_up(number)).await? {
                job.marked_caught_up = true;
                return Ok(Err(job));
            }
        }
        // Commit what the rebuild applied past its last commit (as it wrote everything else,
        // without the write-ahead log), then flush it all before going on from it with logged
        // writes, which must never be recovered without the ones before them.
        let (working, result) = commit_blocking(
            job.working,
            self.db.clone(),
            Durability::Unlogged,
            self.options.cache_plans,
        )
        .await?;
        result?;
        job.working = working;
        if self.db.partition().is_some() {
            let db = self.db.clone();
            blocking(move || db.flush_generation(number)).await?;
        }
        self.delivered_live = job.working.committed.position;
        let elapsed = job.started.elapsed().as_secs_f64();
        tracing::info!(
            generation = number,
            checkpoint = job.working.committed.position,
            events = job.applied,
            events_per_second = job.applied as f64 / elapsed.max(1e-3),
            "rebuild caught up; switched readers to it"
        );
        let live = job.working;
        self.acknowledge(source, live.committed.position).await;
        Ok(Ok(live))
    }
}

/// What an offline rebuild did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RebuildReport {
    /// The generation built (now live).
    pub generation: u64,
    /// The last position applied.
    pub checkpoint: u64,
    /// Events read from the source.
    pub events: u64,
    /// Time taken.
    pub elapsed: Duration,
}

impl RebuildReport {
    /// Events per second over the whole rebuild.
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Rebuilds a read model from position 0 up to `target` in a new generation, then makes it the
/// live one. For `planledger replay` and benchmarks, with the projector not running elsewhere;
/// `progress` is called with the position reached after every batch.
pub async fn rebuild_to<S: EventSource>(
    projector: Arc<dyn Projector>,
    db: ReadModelDb,
    mut source: S,
    options: RuntimeOptions,
    target: Position,
    mut progress: impl FnMut(u64) + Send,
) -> Result<RebuildReport, ProjectionError> {
    let started = Instant::now();
    let start_db = db.clone();
    let number = blocking(move || start_db.start_generation()).await?;
    let mut working = Working::load(&db, number)?;
    let mut events = 0u64;
    while working.applied.position < target.get() {
        let batch = source
            .next_batch(Position(working.applied.position), options.batch_size)
            .await?;
        events += batch.len() as u64;
        let reaches = batch
            .last()
            .is_some_and(|d| d.position.get() >= target.get());
        let (next, _, result) = apply_blocking(
            working,
            projector.clone(),
            db.clone(),
            batch,
            reaches,
            Durability::Unlogged,
            options.clone(),
        )
        .await?;
        working = next;
        result?;
        progress(working.applied.position);
    }
    let (working, result) = commit_blocking(
        working,
        db.clone(),
        Durability::Unlogged,
        options.cache_plans,
    )
    .await?;
    result?;
    let switch_db = db.clone();
    blocking(move || switch_db.switch_to(number)).await?;
    Ok(RebuildReport {
        generation: number,
        checkpoint: working.committed.position,
        events,
        elapsed: started.elapsed(),
    })
}
