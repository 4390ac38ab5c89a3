//! Read-model routes: `GET /v1/plans/{plan_id}/progress|accountability|agility|drift|restatements`,
//! `GET /v1/people/{person}/accountability`, `GET /v1/projections` and
//! `POST /v1/projections/{name}/rebuild` and `POST /v1/projections/{name}/quarantine`, the
//! reads with `?min_position=P` (single-node mode) or `?bookmark=B` (both modes).
//!
//! The routes need only a [`ReadModelState`] (read models, token verification, rate limits), so
//! the same handlers serve inside `planledger serve` and in a separate `planledger projector`
//! process ([`projector_router`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRef, FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use planledger_app::{Authenticator, ProgressQuery, ReadAfter, ReadModels};
use planledger_domain::PlanId;
use planledger_domain::metrics::RollUp;
use serde::Deserialize;

use crate::auth::Caller;
use crate::commands::parse_plan_id;
use crate::plans::query_rejection;
use crate::{Problem, SharedState};
use planledger_app::RateLimiter;

/// What the read-model routes need.
#[derive(Clone)]
pub struct ReadModelState {
    /// The read models.
    pub read_models: ReadModels,
    /// Token verification.
    pub auth: Authenticator,
    /// Per-caller buckets.
    pub limiter: Arc<RateLimiter>,
}

impl FromRef<SharedState> for ReadModelState {
    fn from_ref(state: &SharedState) -> Self {
        Self {
            read_models: state.app.read_models.clone(),
            auth: state.app.auth.clone(),
            limiter: state.limiter.clone(),
        }
    }
}

impl FromRequestParts<ReadModelState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ReadModelState,
    ) -> Result<Self, Problem> {
        crate::auth::authenticate(&state.auth, &state.limiter, parts)
            .await
            .map(Self)
    }
}

/// The read-model routes, for any router state they can be derived from.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    ReadModelState: FromRef<S>,
    Caller: FromRequestParts<S, Rejection = Problem>,
{
    Router::new()
        .route("/v1/plans", get(get_plans))
        .route("/v1/plans/{plan_id}/progress", get(get_progress))
        .route("/v1/plans/{plan_id}/progress/history", get(get_history))
        .route(
            "/v1/plans/{plan_id}/accountability",
            get(get_accountability),
        )
        .route("/v1/plans/{plan_id}/agility", get(get_agility))
        .route("/v1/plans/{plan_id}/drift", get(get_drift))
        .route("/v1/plans/{plan_id}/restatements", get(get_restatements))
        .route(
            "/v1/people/{person}/accountability",
            get(get_person_accountability),
        )
        .route("/v1/projections", get(get_projections))
        .route("/v1/projections/{name}/rebuild", post(post_rebuild))
        .route("/v1/projections/{name}/quarantine", post(post_quarantine))
}

/// A router for a process that serves only read models (`planledger projector --http`): the
/// read-model routes plus `/healthz`, `/readyz` and `/metrics`.
pub fn projector_router(state: ReadModelState, prometheus: Option<PrometheusHandle>) -> Router {
    routes::<ReadModelState>()
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", get(projector_readyz))
        .route(
            "/metrics",
            get(move || {
                let prometheus = prometheus.clone();
                async move {
                    match prometheus {
                        Some(handle) => (
                            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                            handle.render(),
                        )
                            .into_response(),
                        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
                    }
                }
            }),
        )
        .fallback(|| async {
            Problem::new(
                StatusCode::NOT_FOUND,
                "no_route",
                "no such endpoint on a projector process; it serves the read-model routes, /healthz, /readyz and /metrics",
            )
        })
        .with_state(state)
}

/// `GET /readyz` of a projector process: 200 unless a projector has failed or stopped (503),
/// with each projector's status as the detail.
async fn projector_readyz(State(state): State<ReadModelState>) -> Response {
    let (ready, statuses) = state.read_models.readiness();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "projections": statuses,
    });
    (status, axum::Json(body)).into_response()
}

/// Query of the per-plan read-model routes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadModelParams {
    /// Wait (up to 5 s) until the read model has applied this log position (single-node mode).
    pub min_position: Option<u64>,
    /// Wait (up to 5 s) until the read model reflects this bookmark (a command's answer
    /// carries one; both modes).
    pub bookmark: Option<String>,
    /// Evaluate as of this RFC 3339 time, from the log.
    pub as_of: Option<String>,
    /// Progress only: `weighted` (default) or `equal`.
    pub rule: Option<String>,
    /// Progress and drift: the baseline label to compare with (default: the first one).
    pub baseline: Option<String>,
    /// Restatements only: check-ins told at or after this RFC 3339 time.
    pub since: Option<String>,
}

/// Query of the routes that take only `min_position`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinPositionParams {
    /// Wait (up to 5 s) until the read model has applied this log position (single-node mode).
    pub min_position: Option<u64>,
    /// Wait (up to 5 s) until the read model reflects this bookmark (a command's answer
    /// carries one; both modes).
    pub bookmark: Option<String>,
}

// `Problem` is the size every handler of this crate returns; boxing it is a crate-wide choice.
#[allow(clippy::result_large_err)]
fn parse_as_of(raw: Option<&str>) -> Result<Option<jiff::Timestamp>, Problem> {
    parse_time("as_of", raw)
}

// `Problem` is the size every handler of this crate returns; boxing it is a crate-wide choice.
#[allow(clippy::result_large_err)]
/// An optional RFC 3339 time from the query parameter `field`.
fn parse_time(field: &str, raw: Option<&str>) -> Result<Option<jiff::Timestamp>, Problem> {
    raw.map(|raw| {
        raw.parse().map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("{field} {raw:?} is not an RFC 3339 time ({e}); e.g. 2026-11-25T12:00:00Z"),
            )
            .with_field(
                field,
                "expected an RFC 3339 time such as 2026-11-25T12:00:00Z",
            )
        })
    })
    .transpose()
}

// `Problem` is the size every handler of this crate returns; boxing it is a crate-wide choice.
#[allow(clippy::result_large_err)]
fn parse_rule(raw: Option<&str>) -> Result<RollUp, Problem> {
    match raw {
        None | Some("weighted") => Ok(RollUp::Weighted),
        Some("equal") => Ok(RollUp::Equal),
        Some(other) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("rule {other:?} is not a roll-up rule; use weighted or equal"),
        )
        .with_field("rule", "expected weighted or equal")),
    }
}

// `Problem` is the size every handler of this crate returns; boxing it is a crate-wide choice.
#[allow(clippy::result_large_err)]
/// What every plan read-model route parses: its query (only the `allowed` optional parameters),
/// the plan id and `as_of`.
fn plan_request(
    plan_id: &str,
    query: Result<Query<ReadModelParams>, QueryRejection>,
    allowed: &[&str],
) -> Result<(ReadModelParams, PlanId, Option<jiff::Timestamp>), Problem> {
    let Query(params) = query.map_err(query_rejection)?;
    reject_unused(&params, allowed)?;
    let plan_id = parse_plan_id(plan_id)?;
    let as_of = parse_as_of(params.as_of.as_deref())?;
    Ok((params, plan_id, as_of))
}

fn reject_unused(params: &ReadModelParams, allowed: &[&str]) -> Result<(), Problem> {
    let given = [
        ("rule", params.rule.is_some()),
        ("baseline", params.baseline.is_some()),
        ("since", params.since.is_some()),
    ];
    for (name, present) in given {
        if present && !allowed.contains(&name) {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("{name} does not apply to this read model"),
            )
            .with_field(name, "not accepted here"));
        }
    }
    Ok(())
}

/// `GET /v1/plans/{plan_id}/progress`.
#[utoipa::path(
    get,
    path = "/v1/plans/{plan_id}/progress",
    operation_id = "getProgress",
    summary = "Progress per plan and goal (current and baseline target, expected progress, status, SPI, slip, completion forecast and its back-test)",
    params(
        crate::openapi::PlanIdPath,
        crate::openapi::ReadAfterParams,
        crate::openapi::AsOfParam,
        ("rule" = Option<planledger_domain::metrics::RollUp>, Query, description = "How goals roll up (default weighted)"),
        crate::openapi::BaselineParam,
    ),
    responses(
        (status = 200, description = "OK", body = planledger_app::ReadModelResponse<planledger_projections::progress::ProgressView>),
        crate::openapi::ReadModelRefusals,
        crate::openapi::AuthRefusals,
    ),
)]
pub async fn get_progress(
    State(state): State<ReadModelState>,
    Caller(principal): Caller,
    Path(plan_id): Path<String>,
    query: Result<Query<ReadModelParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(params) = query.map_err(query_rejection)?;
    reject_unused(&params, &["rule", "baseline"])?;
    let plan_id = parse_plan_id(&plan_id)?;
    let query = ProgressQuery {
        rule: parse_rule(params.rule.as_deref())?,
        as_of: parse_as_of(params.as_of.as_deref())?,
        baseline: params.baseline,
        min_position: ReadAfter::from_query(params.min_position, params.bookmark.as_deref())?,
    };
    let found = state
        .read_models
        .progress(&principal, &plan_id, query)
        .await?;
    Ok(axum::Json(found).into_response())
}

/// `GET /v1/plans/{plan_id}/progress/history`: each goal's chart series.
#[utoipa::path(
    get,
    path = "/v1/plans/{plan_id}/progress/history",
    operation_id = "getProgressHistory",
    summary = "Each goal's progress day by day (chart series)",
    description = "Per goal: points at its start, each day an effective fact changed and today, with progress against the current and the baseline target, expected progress, the KPI value and the check-ins of that day; and its adjustments (target and due before/after, reason). Formulas: docs/metrics.md.",
    params(
        crate::openapi::PlanIdPath,
        crate::openapi::ReadAfterParams,
        crate::openapi::AsOfParam,
        crate::openapi::BaselineParam,
    ),
    responses(
        (status = 200, description = "OK", body = planledger_app::ReadModelResponse<planledger_domain::metrics::ProgressHistory>),
        crate::openapi::ReadModelRefusals,
        crate::openapi::AuthRefusals,
    ),
)]
pub async fn get_history(
    State(state): State<ReadModelState>,
    Caller(principal): Caller,
    Path(plan_id): Path<String>,
    query: Result<Query<ReadModelParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let (params, plan_id, as_of) = plan_request(&plan_id, query, &["baseline"])?;
    let found = state
        .read_models
        .progress_history(
            &principal,
            &plan_id,
            params.baseline,
            as_of,
            ReadAfter::from_query(params.min_position, params.bookmark.as_deref())?,
        )
        .await?;
    Ok(axum::Json(found).into_response())
}

/// Query of `GET /v1/plans`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlansParams {
    /// Continue after this plan id (the previous page's `next_after`).
    pub after: Option<String>,
    /// Page size (default 100, at most 500).
    pub limit: Option<usize>,
    /// Wait (up to 5 s) until the read model has applied this log position (single-node mode).
    pub min_position: Option<u64>,
    /// Wait (up to 5 s) until the read model reflects this bookmark (a command's answer
    /// carries one; both modes).
    pub bookmark: Option<String>,
}

/// `GET /v1/plans`: the caller's tenant's plans, paged in plan id order.
#[utoipa::path(
    get,
    path = "/v1/plans",
    operation_id = "listPlans",
    summary = "The caller's tenant's plans, paged in plan id order (viewer and up)",
    description = "From the progress read model: a plan created a moment ago appears once the projector has applied it (pass the command's bookmark as bookmark to wait for it).",
    params(
        crate::openapi::ReadAfterParams,
        crate::openapi::AfterParam,
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size (default 100)"),
    ),
    responses(
        (status = 200, description = "OK", body = planledger_app::ReadModelResponse<planledger_app::PlanList>),
        crate::openapi::ReadModelRefusals,
        crate::openapi::AuthRefusals,
    ),
)]
pub async fn get_plans(
    State(state): State<ReadModelState>,
    Caller(principal): Caller,
    query: Result<Query<PlansParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(params) = query.map_err(query_rejection)?;
    let after = params.after.as_deref().map(parse_plan_id).transpose()?;
    let found = state
        .read_models
        .plans(
            &principal,
            after,
            params.limit.unwrap_or(100),
            ReadAfter::from_query(params.min_position, params.bookmark.as_deref())?,
        )
        .await?;
    Ok(axum::Json(found).into_response())
}

/// `GET /v1/plans/{plan_id}/accountability`.
#[utoipa::path(
    get,
    path = "/v1/plans/{plan_id}/accountability",
    operation_id = "getAccountability",
    summary = "Accountability per plan and person",
    params(crate::openapi::PlanIdPath, crate::openapi::ReadAfterParams, crate::openapi::AsOfParam),
    responses(
        (status = 200, description = "OK", body = planledger_app::ReadModelResponse<planledger_domain::metrics::AccountabilityReport>),
        crate::openapi::ReadModelRefusals,
        crate::openapi::AuthRefusals,
    ),
)]
pub async fn get_accountability(
    State(state): State<ReadModelState>,
    Caller(principal): Caller,
    Path(plan_id): Path<String>,
    query: Result<Query<ReadModelParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let (params, plan_id, as_of) = plan_request(&plan_id, query, &[])?;
    let found = state
        .read_models
        .accountability(
            &principal,
            &plan_id,
            as_of,
            ReadAfter::from_query(params.min_position, params.bookmark.as_deref())?,
        )
        .await?;
    Ok(axum::Json(found).into_response())
}

/// `GET /v1/plans/{plan_id}/agility`.
#[utoipa::path(
    get,
    path = "/v1/plans/{plan_id}/agility",
    operation_id = "getAgility",
    summary = "Agility per plan and goal",
    params(crate::openapi::PlanIdPath, crate::openapi::ReadAfterParams, crate::openapi::AsOfParam),
    responses(
        (status = 200, description = "OK", body = planledger_app::ReadModelResponse<planledger_domain::metrics::AgilityReport>),
        crate::openapi::ReadModelRefusals,
        crate::openapi::AuthRefusals,
    ),
)]
pub async fn get_agility(
    State(state): State<ReadModelState>,
    Caller(principal): Caller,
    Path(plan_id): Path<String>,
    query: Result<Query<ReadModelParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let (params, plan_id, as_of) = plan_request(&plan_id, query, &[])?;
    let found = state
        .read_models
        .agility(
            &principal,
            &plan_id,
            as_of,
            ReadAfter::from_query(params.min_position, params.bookmark.as_deref())?,
        )
        .await?;
    Ok(axum::Json(found).into_response())
}

/// `GET /v1/plans/{plan_id}/drift?baseline=LABEL`.
#[utoipa::path(
    get,
    path = "/v1/plans/{plan_id}/drift",
    operation_id = "getDrift",
    summary = "Drift against a baseline; every figure names the events it rests on",
    params(
        crate::openapi::PlanIdPath,
        crate::openapi::ReadAfterParams,
        crate::openapi::AsOfParam,
        crate::openapi::BaselineParam,
    ),
    responses(
        (status = 200, description = "OK", body = planledger_app::ReadModelResponse<planledger_domain::metrics::DriftReport>),
        crate::openapi::ReadModelRefusals,
        crate::openapi::AuthRefusals,
    ),
)]
pub async fn get_drift(
    State(state): State<ReadModelState>,
    Caller(principal): Caller,
    Path(plan_id): Path<String>,
    query: Result<Query<ReadModelParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let (params, plan_id, as_of) = plan_request(&plan_id, query, &["baseline"])?;
    let found = state
        .read_models
        .drift(
            &principal,
            &plan_id,
            params.baseline,
            as_of,
            ReadAfter::from_query(params.min_position, params.bookmark.as_deref())?,
        )
        .await?;
    Ok(axum::Json(found).into_response())
}

/// `GET /v1/plans/{plan_id}/restatements?since=TIME`: check-ins told after the day they
/// describe, with the figures of earlier days each changed.
#[utoipa::path(
    get,
    path = "/v1/plans/{plan_id}/restatements",
    operation_id = "getRestatements",
    summary = "Check-ins told after the day they describe, with the figures of earlier days each changed (goal and plan progress and status, from what to what, with the definitions in force on each day) and who told them when",
    params(
        crate::openapi::PlanIdPath,
        crate::openapi::ReadAfterParams,
        crate::openapi::AsOfParam,
        ("since" = Option<String>, Query, format = DateTime, description = "Only check-ins told (recorded) at or after this time; default: all"),
    ),
    responses(
        (status = 200, description = "OK", body = planledger_app::ReadModelResponse<planledger_domain::metrics::RestatementReport>),
        crate::openapi::ReadModelRefusals,
        crate::openapi::AuthRefusals,
    ),
)]
pub async fn get_restatements(
    State(state): State<ReadModelState>,
    Caller(principal): Caller,
    Path(plan_id): Path<String>,
    query: Result<Query<ReadModelParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let (params, plan_id, as_of) = plan_request(&plan_id, query, &["since"])?;
    let since = parse_time("since", params.since.as_deref())?;
    let found = state
        .read_models
        .restatements(
            &principal,
            &plan_id,
            since,
            as_of,
            ReadAfter::from_query(params.min_position, params.bookmark.as_deref())?,
        )
        .await?;
    Ok(axum::Json(found).into_response())
}

/// `GET /v1/people/{person}/accountability`.
#[utoipa::path(
    get,
    path = "/v1/people/{person}/accountability",
    operation_id = "getPersonAccountability",
    summary = "A person's accountability across the tenant's plans",
    params(crate::openapi::PersonPath, crate::openapi::ReadAfterParams),
    responses(
        (status = 200, description = "OK", body = planledger_app::ReadModelResponse<planledger_projections::accountability::PersonView>),
        crate::openapi::ReadModelRefusals,
        crate::openapi::AuthRefusals,
    ),
)]
pub async fn get_person_accountability(
    State(state): State<ReadModelState>,
    Caller(principal): Caller,
    Path(person): Path<String>,
    query: Result<Query<MinPositionParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(params) = query.map_err(query_rejection)?;
    let found = state
        .read_models
        .person_accountability(
            &principal,
            &person,
            ReadAfter::from_query(params.min_position, params.bookmark.as_deref())?,
        )
        .await?;
    Ok(axum::Json(found).into_response())
}

/// `GET /v1/projections`: each projector's checkpoint, lag and state.
#[utoipa::path(
    get,
    path = "/v1/projections",
    operation_id = "getProjections",
    summary = "Each projector's checkpoint, lag and state",
    params(crate::openapi::ReadAfterParams),
    responses(
        (status = 200, description = "OK", body = ProjectionsResponse),
        crate::openapi::ProjectorRefusals,
        crate::openapi::AuthRefusals,
    ),
)]
pub async fn get_projections(
    State(state): State<ReadModelState>,
    Caller(principal): Caller,
    query: Result<Query<MinPositionParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(params) = query.map_err(query_rejection)?;
    state
        .read_models
        .reach_all(ReadAfter::from_query(
            params.min_position,
            params.bookmark.as_deref(),
        )?)
        .await?;
    let projections = state.read_models.statuses(&principal)?;
    Ok(axum::Json(ProjectionsResponse { projections }).into_response())
}

/// `POST /v1/projections/{name}/rebuild` (admin): 202 with the projector's status.
#[utoipa::path(
    post,
    path = "/v1/projections/{name}/rebuild",
    operation_id = "rebuildProjection",
    summary = "Rebuild a read model from position 0 beside the live one (admin)",
    params(
        ("name" = String, Path, description = "The read model: progress, accountability or agility"),
    ),
    responses(
        (status = 202, description = "Rebuild started", body = planledger_projections::ProjectorStatus),
        crate::openapi::ProjectorRefusals,
        crate::openapi::AuthRefusals,
    ),
)]
pub async fn post_rebuild(
    State(state): State<ReadModelState>,
    Caller(principal): Caller,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let status = state.read_models.rebuild(&principal, &name).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(status)).into_response())
}

/// Body of `POST /v1/projections/{name}/quarantine`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuarantineBody {
    /// The position the projector is stopped at (its `poison.position`).
    #[schema(minimum = 1)]
    position: u64,
    /// Cluster mode (required there): the partition whose projector is stopped there.
    #[serde(default)]
    #[schema(minimum = 0)]
    partition: Option<u32>,
    /// Why the event is passed over (kept in the record).
    #[schema(min_length = 1)]
    reason: String,
}

/// The answer of `GET /v1/projections`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ProjectionsResponse {
    /// Each projector of this process.
    projections: Vec<planledger_projections::ProjectorStatus>,
}

/// `POST /v1/projections/{name}/quarantine` (admin): records a quarantine of the event the
/// projector is stopped at; 200 with the record, 409 if it is not stopped at that position.
#[utoipa::path(
    post,
    path = "/v1/projections/{name}/quarantine",
    operation_id = "quarantineProjectionEvent",
    summary = "Pass over the event a projector is stopped at (admin): recorded durably, listed in GET /v1/projections, skipped by the live model and every rebuild",
    params(
        ("name" = String, Path, description = "The read model: progress, accountability or agility"),
    ),
    request_body(content = QuarantineBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Recorded; the projector continues", body = planledger_projections::Quarantine),
        (status = 409, description = "The projector is not stopped at that position (quarantine_refused)", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        crate::openapi::ProjectorRefusals,
        crate::openapi::AuthRefusals,
    ),
)]
pub async fn post_quarantine(
    State(state): State<ReadModelState>,
    Caller(principal): Caller,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let QuarantineBody {
        position,
        partition,
        reason,
    } = serde_json::from_slice(&body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!(
                "the body must be {{\"position\": <the position the projector is stopped at>, \"reason\": \"...\"}}: {e}"
            ),
        )
        .with_field("body", "expected {\"position\": integer, \"reason\": string}")
    })?;
    if position == 0 || reason.trim().is_empty() {
        let (field, rule) = if position == 0 {
            ("position", "positions start at 1")
        } else {
            (
                "reason",
                "say why the event is passed over; it is kept in the record",
            )
        };
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("{field}: {rule}"),
        )
        .with_field(field, rule));
    }
    let record = state
        .read_models
        .quarantine(&principal, &name, partition, position, reason)
        .await?;
    Ok(axum::Json(record).into_response())
}
