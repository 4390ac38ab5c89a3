//! Read-model queries: progress, accountability, agility, drift, a person's accountability
//! across plans, projector status and rebuilds.
//!
//! Every query is scoped to the caller's tenant (another tenant's plan is simply not found), can
//! wait a bounded time for the read model to reach `min_position` (read your own writes; then
//! [`AppError::NotCaughtUp`]), and computes its figures for "now" at query time from the facts
//! the read model stores, with the domain's formulas. `as_of` answers from the log instead: the
//! plan as it was recorded by then, evaluated at that instant.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use planledger_domain::metrics::{
    AccountabilityReport, AgilityReport, DriftReport, EventRef, ProgressHistory, RestatementReport,
    RollUp, restatements,
};
use planledger_domain::{PersonId, Plan, PlanId};
use planledger_projections::accountability::{
    PersonView, accountability_view, person_prefix, person_view,
};
use planledger_projections::agility::agility_view;
use planledger_projections::progress::{ProgressView, drift_view, history_view, progress_view};
use planledger_projections::{
    PROJECTION_NAMES, ProjectionError, ProjectionHandle, ProjectorStatus, Quarantine,
    QuarantineRequest, REDACTED_STREAM, ReadView, split_stream,
};
use planledger_store::{EventStore, PartitionCount, StreamId};
use serde::Serialize;

use crate::AppError;
use crate::auth::{Permission, Principal};
use crate::backtests::BacktestRows;
use crate::bookmark::{Bookmark, LogRef};
use crate::plans::stream_of;
use crate::queries::{QueryService, StateAt};

/// The bookmark of what `view` reflects: every partition's checkpoint (`partitions` of them in
/// cluster mode), or the single log's.
fn bookmark_of(view: &ReadView<'_>, partitions: Option<u32>) -> Result<Bookmark, AppError> {
    let mut bookmark = Bookmark::default();
    match partitions {
        Some(n) => {
            for p in 0..n {
                let at = view.checkpoint_of(Some(p)).map_err(projection_error)?;
                bookmark.add(LogRef::Partition(p), at.position);
            }
        }
        None => {
            let at = view.checkpoint_of(None).map_err(projection_error)?;
            bookmark.add(LogRef::Single, at.position);
        }
    }
    Ok(bookmark)
}

/// The position an answer over many plans reports: the single log's checkpoint, or 0 in
/// cluster mode (where only the bookmark says what it reflects).
fn single_position(bookmark: &Bookmark) -> u64 {
    bookmark
        .positions()
        .find(|(log, _)| *log == LogRef::Single)
        .map_or(0, |(_, position)| position)
}

/// Largest page of the plans list.
pub const MAX_PLANS_PAGE: usize = 500;

/// One plan of the plans list.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanSummary {
    /// The plan.
    pub plan_id: String,
    /// Title.
    pub title: String,
    /// Intended outcome.
    pub outcome: Option<String>,
    /// First day of the horizon.
    pub starts_on: jiff::civil::Date,
    /// Last day of the horizon.
    pub ends_on: jiff::civil::Date,
    /// The stream version the read model holds.
    pub version: u64,
    /// Goals defined.
    pub goals: usize,
    /// Steps added.
    pub steps: usize,
    /// Decision time of the last event.
    pub updated_at: Option<Timestamp>,
    /// When it was archived, if it was.
    pub archived_at: Option<Timestamp>,
}

/// A page of the caller's tenant's plans, in plan id order.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanList {
    /// The plans.
    pub plans: Vec<PlanSummary>,
    /// Pass as `after` for the next page, when there may be more.
    pub next_after: Option<String>,
}

/// Longest a query waits for `min_position` before answering 503.
pub const DEFAULT_MIN_POSITION_WAIT: Duration = Duration::from_secs(5);

/// What a query must reflect before it answers (read your own writes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ReadAfter {
    /// Whatever the read model holds now.
    #[default]
    Anything,
    /// `?min_position=`: the single log's position (single-node mode).
    Position(u64),
    /// `?bookmark=`: a position per log it names (both modes).
    Bookmark(Bookmark),
}

impl ReadAfter {
    /// From a query's `min_position` and `bookmark` parameters (at most one of them).
    pub fn from_query(min_position: Option<u64>, bookmark: Option<&str>) -> Result<Self, AppError> {
        match (min_position, bookmark) {
            (Some(_), Some(_)) => Err(AppError::Invalid {
                field: "bookmark".into(),
                message: "pass either min_position or bookmark, not both".into(),
            }),
            (Some(position), None) => Ok(ReadAfter::Position(position)),
            (None, Some(text)) => Ok(ReadAfter::Bookmark(Bookmark::parse(text)?)),
            (None, None) => Ok(ReadAfter::Anything),
        }
    }

    /// Whether the query named something to wait for.
    pub fn is_some(&self) -> bool {
        !matches!(self, ReadAfter::Anything)
    }
}

impl From<Option<u64>> for ReadAfter {
    fn from(min_position: Option<u64>) -> Self {
        min_position.map_or(ReadAfter::Anything, ReadAfter::Position)
    }
}

/// A read-model answer: which projection answered, at which log position, and the figures.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadModelResponse<T> {
    /// The read model that answered (`progress`, `accountability`, `agility`).
    pub projection: &'static str,
    /// The global log position the figures reflect (the projector's checkpoint, or for `as_of`
    /// reads the position the historic state is as of). In cluster mode a plan's answer names
    /// a position of the plan's partition, and an answer over many plans 0 (see `bookmark`).
    pub position: u64,
    /// What the answer reflects, as a bookmark (every partition's checkpoint in cluster mode):
    /// a later query given it sees at least as much.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bookmark: Option<String>,
    /// The figures.
    #[serde(flatten)]
    pub body: T,
}

/// What to compute progress for.
#[derive(Clone, Debug, Default)]
pub struct ProgressQuery {
    /// Roll-up rule (weighted by default).
    pub rule: RollUp,
    /// Evaluate as of this past instant, from the log.
    pub as_of: Option<Timestamp>,
    /// Compare with this baseline instead of the first one.
    pub baseline: Option<String>,
    /// Wait until the read model has applied this position or bookmark.
    pub min_position: ReadAfter,
}

/// The read-model side of the application: the running projectors' handles.
#[derive(Clone)]
pub struct ReadModels {
    handles: Arc<Vec<ProjectionHandle>>,
    queries: Option<QueryService>,
    wait: Duration,
    /// The forecast back-test's rows of closed goals, kept between progress reads.
    backtests: Arc<BacktestRows>,
}

impl std::fmt::Debug for ReadModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadModels")
            .field(
                "projections",
                &self.handles.iter().map(|h| h.name()).collect::<Vec<_>>(),
            )
            .field("wait", &self.wait)
            .finish()
    }
}

fn projection_error(error: ProjectionError) -> AppError {
    match error {
        ProjectionError::UnknownProjection { .. } => AppError::NotFound(error.to_string()),
        other => AppError::Corrupt {
            position: 0,
            message: format!("read model: {other}"),
        },
    }
}

fn plan_not_found(plan_id: &PlanId, waited: bool) -> AppError {
    if waited {
        AppError::NotFound(format!("plan {plan_id} does not exist"))
    } else {
        AppError::NotFound(format!(
            "plan {plan_id} does not exist (read models trail the log by a moment: to read your own write, pass ?min_position=<the position it returned>)"
        ))
    }
}

/// Fills in the log position of each event a figure rests on, where the log is at hand (not in
/// a projector process of its own, which answers versions only).
fn fill_positions<'a>(
    store: Option<&EventStore>,
    stream: &StreamId,
    refs: impl Iterator<Item = &'a mut EventRef>,
) -> Result<(), AppError> {
    let Some(store) = store else {
        return Ok(());
    };
    for event in refs {
        event.position = store
            .stream_position(stream, planledger_store::Version(event.version))?
            .map(|p| p.get());
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::Corrupt {
            position: 0,
            message: format!("a read-model query task failed: {e}"),
        })?
}

impl ReadModels {
    /// Read models over the given running projectors; `queries` answers `as_of` reads from the
    /// log (a process without the log, such as a projector service, passes `None`).
    pub fn new(handles: Vec<ProjectionHandle>, queries: Option<QueryService>) -> Self {
        Self {
            handles: Arc::new(handles),
            queries,
            wait: DEFAULT_MIN_POSITION_WAIT,
            backtests: Arc::default(),
        }
    }

    /// The same read models with another bound on `min_position` waits.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The running projectors.
    pub fn handles(&self) -> &[ProjectionHandle] {
        &self.handles
    }

    fn handle(&self, name: &str) -> Result<&ProjectionHandle, AppError> {
        self.handles.iter().find(|h| h.name() == name).ok_or_else(|| {
            if PROJECTION_NAMES.contains(&name) {
                AppError::NotFound(format!(
                    "the {name} read model is not served by this process; ask the `planledger projector --name {name}` process that runs it (its --http address), or see GET /v1/projections for what this one serves"
                ))
            } else {
                AppError::NotFound(format!(
                    "there is no projection named {name:?}; known projections: {}",
                    PROJECTION_NAMES.join(", ")
                ))
            }
        })
    }

    /// Every running projector of the read model `name` (one per partition in cluster mode).
    fn handles_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ProjectionHandle> {
        self.handles.iter().filter(move |h| h.name() == name)
    }

    /// Cluster mode: how many partitions the read models cover.
    fn partitions(&self) -> Option<u32> {
        self.handles.first().and_then(|h| h.db().partitions())
    }

    /// The log a plan's events are in: its partition in cluster mode, else the single log.
    fn log_of(&self, stream: &StreamId) -> LogRef {
        match self.partitions().and_then(|n| PartitionCount::new(n).ok()) {
            Some(count) => LogRef::Partition(count.partition_of(stream).index()),
            None => LogRef::Single,
        }
    }

    /// Waits (bounded) until the read model `name` has applied what `after` names.
    ///
    /// Where this process holds the log, a position the log has not reached names no write: it
    /// is refused at once (400) instead of waiting for a position that may never come. A
    /// projector over JetStream cannot tell, and waits.
    async fn reach(&self, name: &str, after: &ReadAfter) -> Result<(), AppError> {
        // One bound for the whole query, however many logs a bookmark names.
        let deadline = tokio::time::Instant::now() + self.wait;
        match after {
            ReadAfter::Anything => Ok(()),
            ReadAfter::Position(wanted) => {
                if self.partitions().is_some() {
                    return Err(AppError::Invalid {
                        field: "min_position".into(),
                        message: "in cluster mode a position names one partition's log; pass ?bookmark= with the bookmark the command's answer carried".into(),
                    });
                }
                self.reach_log(name, LogRef::Single, *wanted, "min_position", deadline)
                    .await
            }
            ReadAfter::Bookmark(bookmark) => {
                for (log, wanted) in bookmark.positions() {
                    self.reach_log(name, log, wanted, "bookmark", deadline)
                        .await?;
                }
                Ok(())
            }
        }
    }

    /// Waits (bounded) until the projector of `name` over `log` has applied `wanted`.
    async fn reach_log(
        &self,
        name: &str,
        log: LogRef,
        wanted: u64,
        field: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(), AppError> {
        self.handle(name)?;
        let handle = self
            .handles_of(name)
            .find(|h| h.db().partition() == log.partition())
            .ok_or_else(|| AppError::Invalid {
                field: field.into(),
                message: match (log, self.partitions()) {
                    (LogRef::Partition(p), Some(n)) => format!(
                        "the bookmark names partition {p}, but this deployment has partitions 0 to {}",
                        n.saturating_sub(1)
                    ),
                    (LogRef::Partition(p), None) => format!(
                        "the bookmark names partition {p}, but this service runs a single log: pass the bookmark this service's answers carry"
                    ),
                    (LogRef::Single, _) => "the bookmark names a single-node log, but this service runs in cluster mode: pass the bookmark this service's answers carry".to_owned(),
                },
            })?;
        if let (Some(queries), LogRef::Single) = (&self.queries, log) {
            let last = queries.plans().store().last_position().get();
            if wanted > last {
                return Err(AppError::Invalid {
                    field: field.into(),
                    message: format!(
                        "position {wanted} is beyond the end of the log ({last}); pass the position a command returned"
                    ),
                });
            }
        }
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            handle
                .wait_for(wanted, left)
                .await
                .map_err(|current| AppError::NotCaughtUp { wanted, current })?;
            // The projector's status names the generation it applies; readers see the live
            // one, which a rebuild's switch may have just replaced (cluster mode: with a
            // partition's rebuilt checkpoint a moment behind its old live one).
            let db = handle.db().clone();
            let seen = blocking(move || {
                let view = db.view().map_err(projection_error)?;
                Ok(view
                    .checkpoint_of(log.partition())
                    .map_err(projection_error)?
                    .position)
            })
            .await?;
            if seen >= wanted {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(AppError::NotCaughtUp {
                    wanted,
                    current: seen,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (bounded) until every read model has applied what `after` names (see
    /// [`Self::reach`]).
    pub async fn reach_all(&self, min_position: ReadAfter) -> Result<(), AppError> {
        let names: std::collections::BTreeSet<&str> =
            self.handles.iter().map(|h| h.name()).collect();
        for name in names {
            self.reach(name, &min_position).await?;
        }
        Ok(())
    }

    /// The plan's stored facts and the checkpoint they reflect, from the read model `name`.
    async fn plan(
        &self,
        principal: &Principal,
        name: &str,
        plan_id: &PlanId,
        min_position: ReadAfter,
    ) -> Result<(&'static str, u64, Option<String>, Plan), AppError> {
        principal.require(Permission::Read)?;
        let stream = stream_of(&principal.tenant, plan_id)?;
        let handle = self.handle(name)?;
        self.reach(name, &min_position).await?;
        let db = handle.db().clone();
        let log = self.log_of(&stream);
        let partitions = self.partitions();
        let (position, bookmark, plan) = blocking(move || {
            let view = db.view().map_err(projection_error)?;
            let position = view
                .checkpoint_of(log.partition())
                .map_err(projection_error)?
                .position;
            let bookmark = bookmark_of(&view, partitions)?;
            let plan = view.plan(stream.as_str()).map_err(projection_error)?;
            Ok((position, bookmark, plan))
        })
        .await?;
        match plan {
            Some(plan) if plan.exists() => {
                Ok((handle.name(), position, Some(bookmark.to_string()), plan))
            }
            _ => Err(plan_not_found(plan_id, min_position.is_some())),
        }
    }

    /// The plan as recorded by `time`, from the log, and the position that state is as of.
    fn plan_as_of(
        &self,
        principal: &Principal,
        plan_id: &PlanId,
        time: Timestamp,
    ) -> Result<(u64, Plan), AppError> {
        let queries = self.queries.as_ref().ok_or_else(|| AppError::Invalid {
            field: "as_of".into(),
            message: "this process does not hold the event log; ask an API node for as_of reads"
                .into(),
        })?;
        let state = queries.plan_state(principal, plan_id, StateAt::Time(time))?;
        Ok((state.as_of_position.unwrap_or(0), (*state.plan).clone()))
    }

    /// The facts to evaluate, and the instant to evaluate them at.
    async fn facts(
        &self,
        principal: &Principal,
        name: &str,
        plan_id: &PlanId,
        as_of: Option<Timestamp>,
        min_position: ReadAfter,
    ) -> Result<(&'static str, u64, Option<String>, Plan, Timestamp), AppError> {
        match as_of {
            None => {
                let (projection, position, bookmark, plan) =
                    self.plan(principal, name, plan_id, min_position).await?;
                Ok((projection, position, bookmark, plan, Timestamp::now()))
            }
            Some(time) => {
                principal.require(Permission::Read)?;
                // An as-of read is a read of the log: it needs no projector in this process
                // (a cluster node answers it from the plan's partition cache).
                let projection = PROJECTION_NAMES
                    .into_iter()
                    .find(|known| *known == name)
                    .expect("the read-model queries name known projections");
                let this = self.clone();
                let (principal, plan_id) = (principal.clone(), plan_id.clone());
                let (position, plan) =
                    blocking(move || this.plan_as_of(&principal, &plan_id, time)).await?;
                Ok((projection, position, None, plan, time))
            }
        }
    }

    /// A plan's progress: plan and goal rows, the goalpost effect against a baseline, momentum.
    pub async fn progress(
        &self,
        principal: &Principal,
        plan_id: &PlanId,
        query: ProgressQuery,
    ) -> Result<ReadModelResponse<ProgressView>, AppError> {
        let (projection, position, bookmark, plan, now) = self
            .facts(
                principal,
                "progress",
                plan_id,
                query.as_of,
                query.min_position,
            )
            .await?;
        let id = plan_id.clone();
        let stream = stream_of(&principal.tenant, plan_id)?;
        let backtests = self.backtests.clone();
        // The events behind the forecasts are named by version only: the progress answer is the
        // same from every process (a projector of its own and `history replay` included). The
        // back-test's rows of closed goals are kept between reads (`backtests`).
        let body = blocking(move || {
            let backtest = backtests.backtest(stream.as_str(), &plan, now);
            progress_view(
                &plan,
                &id,
                now,
                query.rule,
                query.baseline.as_deref(),
                Some(backtest),
            )
            .map_err(AppError::from)
        })
        .await?;
        Ok(ReadModelResponse {
            projection,
            position,
            bookmark,
            body,
        })
    }

    /// Each goal's progress history (chart series), against `baseline` (default: the first).
    pub async fn progress_history(
        &self,
        principal: &Principal,
        plan_id: &PlanId,
        baseline: Option<String>,
        as_of: Option<Timestamp>,
        min_position: ReadAfter,
    ) -> Result<ReadModelResponse<ProgressHistory>, AppError> {
        let (projection, position, bookmark, plan, now) = self
            .facts(principal, "progress", plan_id, as_of, min_position)
            .await?;
        let id = plan_id.clone();
        let body = blocking(move || {
            history_view(&plan, &id, now, baseline.as_deref()).map_err(AppError::from)
        })
        .await?;
        Ok(ReadModelResponse {
            projection,
            position,
            bookmark,
            body,
        })
    }

    /// A page of the caller's tenant's plans (from the progress read model), after the plan
    /// `after`, at most `limit` (1 to [`MAX_PLANS_PAGE`]).
    pub async fn plans(
        &self,
        principal: &Principal,
        after: Option<PlanId>,
        limit: usize,
        min_position: ReadAfter,
    ) -> Result<ReadModelResponse<PlanList>, AppError> {
        principal.require(Permission::Read)?;
        if !(1..=MAX_PLANS_PAGE).contains(&limit) {
            return Err(AppError::Invalid {
                field: "limit".into(),
                message: format!(
                    "limit {limit} is not a page size: use 1 to {MAX_PLANS_PAGE} and page on with ?after="
                ),
            });
        }
        let handle = self.handle("progress")?;
        self.reach("progress", &min_position).await?;
        let db = handle.db().clone();
        let prefix = format!("{}/", principal.tenant);
        let after = after.map(|id| format!("{prefix}{}", id.as_str()));
        let partitions = self.partitions();
        let (position, bookmark, plans, next_after) = blocking(move || {
            let view = db.view().map_err(projection_error)?;
            let bookmark = bookmark_of(&view, partitions)?;
            let position = single_position(&bookmark);
            let streams = view
                .streams(&prefix, after.as_deref(), limit)
                .map_err(projection_error)?;
            // A full page may have more after it: continue after its last stream.
            let next_after = (streams.len() >= limit)
                .then(|| streams.last().map(|s| s[prefix.len()..].to_owned()))
                .flatten();
            let mut plans = Vec::with_capacity(streams.len());
            for stream in streams {
                let Some(plan) = view.plan(&stream).map_err(projection_error)? else {
                    continue;
                };
                if !plan.exists() {
                    continue;
                }
                plans.push(PlanSummary {
                    plan_id: stream[prefix.len()..].to_owned(),
                    title: plan.title.clone(),
                    outcome: plan.outcome.clone(),
                    starts_on: plan.starts_on,
                    ends_on: plan.ends_on,
                    version: plan.version,
                    goals: plan.goals.len(),
                    steps: plan.steps.len(),
                    updated_at: plan.updated_at,
                    archived_at: plan.archived_at,
                });
            }
            Ok((position, bookmark, plans, next_after))
        })
        .await?;
        Ok(ReadModelResponse {
            projection: handle.name(),
            position,
            bookmark: Some(bookmark.to_string()),
            body: PlanList { plans, next_after },
        })
    }

    /// A plan's accountability: plan, goal and person rows.
    pub async fn accountability(
        &self,
        principal: &Principal,
        plan_id: &PlanId,
        as_of: Option<Timestamp>,
        min_position: ReadAfter,
    ) -> Result<ReadModelResponse<AccountabilityReport>, AppError> {
        let (projection, position, bookmark, plan, now) = self
            .facts(principal, "accountability", plan_id, as_of, min_position)
            .await?;
        let id = plan_id.clone();
        let body = blocking(move || Ok(accountability_view(&plan, &id, now))).await?;
        Ok(ReadModelResponse {
            projection,
            position,
            bookmark,
            body,
        })
    }

    /// A plan's agility: adjustments, volatility, course-correction latency, open signals.
    pub async fn agility(
        &self,
        principal: &Principal,
        plan_id: &PlanId,
        as_of: Option<Timestamp>,
        min_position: ReadAfter,
    ) -> Result<ReadModelResponse<AgilityReport>, AppError> {
        let (projection, position, bookmark, plan, now) = self
            .facts(principal, "agility", plan_id, as_of, min_position)
            .await?;
        let id = plan_id.clone();
        let body = blocking(move || Ok(agility_view(&plan, &id, now))).await?;
        Ok(ReadModelResponse {
            projection,
            position,
            bookmark,
            body,
        })
    }

    /// A plan's drift against a baseline (the first one when `baseline` is `None`), computed
    /// from the progress read model's facts.
    pub async fn drift(
        &self,
        principal: &Principal,
        plan_id: &PlanId,
        baseline: Option<String>,
        as_of: Option<Timestamp>,
        min_position: ReadAfter,
    ) -> Result<ReadModelResponse<DriftReport>, AppError> {
        let (projection, position, bookmark, plan, now) = self
            .facts(principal, "progress", plan_id, as_of, min_position)
            .await?;
        let label = match baseline {
            Some(label) => label,
            None => plan
                .first_baseline()
                .map(|b| b.label.clone())
                .ok_or_else(|| {
                    AppError::NotFound(format!(
                        "plan {plan_id} has no baseline yet; set one with SetBaseline, then ask for /drift?baseline=<label>"
                    ))
                })?,
        };
        let id = plan_id.clone();
        let stream = stream_of(&principal.tenant, plan_id)?;
        let store = self.queries.as_ref().map(|q| q.plans().store().clone());
        let body = blocking(move || {
            let mut report = drift_view(&plan, &id, &label, now)?;
            fill_positions(store.as_ref(), &stream, report.event_refs_mut())?;
            Ok(report)
        })
        .await?;
        Ok(ReadModelResponse {
            projection,
            position,
            bookmark,
            body,
        })
    }

    /// A plan's restatements: check-ins told after the day they describe, told at or after
    /// `since`, with the figures of earlier days each changed and who told it (from the
    /// progress read model's facts; positions, and for auditors actors, from the log where it
    /// is at hand).
    pub async fn restatements(
        &self,
        principal: &Principal,
        plan_id: &PlanId,
        since: Option<Timestamp>,
        as_of: Option<Timestamp>,
        min_position: ReadAfter,
    ) -> Result<ReadModelResponse<RestatementReport>, AppError> {
        let (projection, position, bookmark, plan, now) = self
            .facts(principal, "progress", plan_id, as_of, min_position)
            .await?;
        let stream = stream_of(&principal.tenant, plan_id)?;
        let store = self.queries.as_ref().map(|q| q.plans().store().clone());
        // Who told a check-in is audit-trail data: named only to callers who may read it.
        let name_actors = principal.can(Permission::Audit);
        let id = plan_id.clone();
        let body = blocking(move || {
            let mut report = restatements(&plan, since, now);
            report.plan_id.get_or_insert(id);
            let Some(store) = store else {
                return Ok(report);
            };
            for restatement in &mut report.restatements {
                let Some(event) = restatement.event.as_mut() else {
                    continue;
                };
                let found =
                    store.stream_position(&stream, planledger_store::Version(event.version))?;
                event.position = found.map(|p| p.get());
                if let Some(at) = found.filter(|_| name_actors) {
                    restatement.reported_by = store.read_position(at)?.map(|e| e.actor);
                }
            }
            Ok(report)
        })
        .await?;
        Ok(ReadModelResponse {
            projection,
            position,
            bookmark,
            body,
        })
    }

    /// A person's accountability across every plan of the caller's tenant they hold a role on.
    pub async fn person_accountability(
        &self,
        principal: &Principal,
        person: &str,
        min_position: ReadAfter,
    ) -> Result<ReadModelResponse<PersonView>, AppError> {
        principal.require(Permission::Read)?;
        let person = PersonId::new(person).map_err(|e| AppError::Invalid {
            field: "person".into(),
            message: e.to_string(),
        })?;
        let handle = self.handle("accountability")?;
        self.reach("accountability", &min_position).await?;
        let db = handle.db().clone();
        let tenant = principal.tenant.clone();
        let who = person.clone();
        let partitions = self.partitions();
        let (position, bookmark, plans) = blocking(move || {
            let view = db.view().map_err(projection_error)?;
            let bookmark = bookmark_of(&view, partitions)?;
            let position = single_position(&bookmark);
            let mut plans = Vec::new();
            for suffix in view
                .index_suffixes(&person_prefix(&tenant, who.as_str()))
                .map_err(projection_error)?
            {
                let Some(plan_id) = String::from_utf8(suffix)
                    .ok()
                    .and_then(|s| PlanId::new(s).ok())
                else {
                    continue;
                };
                let stream = stream_of(&tenant, &plan_id)?;
                if let Some(plan) = view.plan(stream.as_str()).map_err(projection_error)? {
                    plans.push((plan_id, plan));
                }
            }
            Ok((position, bookmark, plans))
        })
        .await?;
        if plans.is_empty() {
            return Err(AppError::NotFound(format!(
                "person {person} holds no role on any plan of this tenant"
            )));
        }
        let now = Timestamp::now();
        let body = blocking(move || Ok(person_view(&person, &plans, now))).await?;
        Ok(ReadModelResponse {
            projection: handle.name(),
            position,
            bookmark: Some(bookmark.to_string()),
            body,
        })
    }

    /// Each projector's checkpoint, lag and state.
    pub fn statuses(&self, principal: &Principal) -> Result<Vec<ProjectorStatus>, AppError> {
        principal.require(Permission::Read)?;
        Ok(self
            .handles
            .iter()
            .map(|handle| {
                let mut status = handle.status();
                status.redact_streams(Some(principal.tenant.as_str()));
                status
            })
            .collect())
    }

    /// For `/readyz` (no token; statuses carry no tenant data): whether every projector is
    /// running (not failed or stopped), and their statuses.
    pub fn readiness(&self) -> (bool, Vec<ProjectorStatus>) {
        let statuses: Vec<ProjectorStatus> = self
            .handles
            .iter()
            .map(|handle| {
                let mut status = handle.status();
                status.redact_streams(None);
                status
            })
            .collect();
        let ready = statuses.iter().all(ProjectorStatus::is_running);
        (ready, statuses)
    }

    /// Quarantines the event the projector `name` (of `partition`, in cluster mode) is stopped
    /// at (admin): recorded durably
    /// with the caller as `by`, after which the projector passes over it and continues.
    pub async fn quarantine(
        &self,
        principal: &Principal,
        name: &str,
        partition: Option<u32>,
        position: u64,
        reason: String,
    ) -> Result<Quarantine, AppError> {
        principal.require(Permission::Admin)?;
        self.handle(name)?;
        if self.partitions().is_some() && partition.is_none() {
            return Err(AppError::Invalid {
                field: "partition".into(),
                message: "in cluster mode name the partition whose projector is stopped (GET /v1/projections shows each partition's poison event)".into(),
            });
        }
        let handle = self
            .handles_of(name)
            .find(|h| h.db().partition() == partition)
            .ok_or_else(|| AppError::Invalid {
                field: "partition".into(),
                message: format!(
                    "this service runs no {name} projector for partition {partition:?}"
                ),
            })?;
        let request = QuarantineRequest {
            position,
            reason,
            by: format!("{} (tenant {})", principal.subject, principal.tenant),
        };
        let mut record = handle.quarantine(request).await.map_err(|e| match e {
            ProjectionError::Stopped { .. } => AppError::NotFound(e.to_string()),
            ProjectionError::QuarantineRefused { .. } => AppError::QuarantineRefused(e.to_string()),
            other => projection_error(other),
        })?;
        if split_stream(&record.stream).is_none_or(|(tenant, _)| tenant != principal.tenant) {
            record.stream = REDACTED_STREAM.to_owned();
        }
        Ok(record)
    }

    /// Starts a rebuild of the read model `name` beside the live one (admin only).
    pub async fn rebuild(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<ProjectorStatus, AppError> {
        principal.require(Permission::Admin)?;
        self.handle(name)?;
        // In cluster mode every partition's projector fills the same new generation; it goes
        // live once all of them have caught up.
        let mut first = None;
        for handle in self.handles_of(name) {
            let status = handle.rebuild().await.map_err(|e| match e {
                ProjectionError::Stopped { .. } => AppError::NotFound(e.to_string()),
                other => projection_error(other),
            })?;
            first.get_or_insert(status);
        }
        first.ok_or_else(|| AppError::NotFound(format!("no {name} projector runs here")))
    }
}
