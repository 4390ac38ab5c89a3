//! `GET /v1/plans/{plan_id}` (current or historic state) and `GET /v1/plans/{plan_id}/events`.

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use planledger_app::{EventFilter, StateAt};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::commands::parse_plan_id;
use crate::{Problem, SharedState};

/// Query of `GET /v1/plans/{plan_id}`: at most one of the three.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateQuery {
    /// RFC 3339 time: the state as recorded by then.
    pub as_of: Option<String>,
    /// Stream version.
    pub version: Option<u64>,
    /// Global log position.
    pub position: Option<u64>,
}

/// A plan's state.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = PlanState)]
pub struct PlanStateResponse {
    /// The plan.
    pub plan_id: String,
    /// The version this state reflects.
    pub version: u64,
    /// For `as_of`/`position` reads: the global position the state is as of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of_position: Option<u64>,
    /// The state.
    #[schema(value_type = planledger_domain::Plan)]
    pub state: serde_json::Value,
}

fn parse_state_at(query: &StateQuery) -> Result<StateAt, Problem> {
    let given = [
        query.as_of.is_some(),
        query.version.is_some(),
        query.position.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given > 1 {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "give at most one of as_of, version and position",
        ));
    }
    if let Some(raw) = &query.as_of {
        let time: jiff::Timestamp = raw.parse().map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("as_of {raw:?} is not an RFC 3339 time ({e}); e.g. 2026-11-25T12:00:00Z"),
            )
            .with_field(
                "as_of",
                "expected an RFC 3339 time such as 2026-11-25T12:00:00Z",
            )
        })?;
        return Ok(StateAt::Time(time));
    }
    Ok(match (query.version, query.position) {
        (Some(v), _) => StateAt::Version(v),
        (_, Some(p)) => StateAt::Position(p),
        _ => StateAt::Current,
    })
}

/// Rejects a malformed query string with problem+json.
pub fn query_rejection(rejection: axum::extract::rejection::QueryRejection) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        format!("the query string is invalid: {}", rejection.body_text()),
    )
}

/// Returns a plan's state now, or as of a time, version or position.
#[utoipa::path(
    get,
    path = "/v1/plans/{plan_id}",
    operation_id = "getPlan",
    summary = "A plan's state, now or in the past",
    description = "At most one of as_of, version and position. The plan's version is also sent as ETag.",
    params(
        crate::openapi::PlanIdPath,
        ("as_of" = Option<String>, Query, format = DateTime, description = "State as recorded by this time"),
        ("version" = Option<u64>, Query, minimum = 1, description = "State after this version"),
        ("position" = Option<u64>, Query, minimum = 0, description = "State as of this global position"),
    ),
    responses(
        (status = 200, description = "OK", body = PlanStateResponse),
        (status = 400, description = "Invalid input (field-level detail)", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        crate::openapi::AuthRefusals,
        crate::openapi::PlanRefusals,
    ),
)]
pub async fn get_plan(
    State(state): State<SharedState>,
    Caller(principal): Caller,
    Path(plan_id): Path<String>,
    query: Result<Query<StateQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) = query.map_err(query_rejection)?;
    let plan_id = parse_plan_id(&plan_id)?;
    let at = parse_state_at(&query)?;
    let app = state.app.clone();
    let found =
        tokio::task::spawn_blocking(move || app.queries.plan_state(&principal, &plan_id, at))
            .await
            .map_err(|e| {
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })??;
    let body = PlanStateResponse {
        plan_id: found.plan_id.to_string(),
        version: found.version,
        as_of_position: found.as_of_position,
        state: serde_json::to_value(&*found.plan).map_err(|e| {
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })?,
    };
    let mut response = axum::Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("\"{}\"", found.version)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

/// Query of `GET /v1/plans/{plan_id}/events`: paging plus the audit filters. `type` may be
/// repeated, so the query string is read as pairs rather than into a struct.
#[derive(Debug, Default)]
pub struct EventsQuery {
    /// First version to return (default 1).
    pub from_version: Option<u64>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Only events caused by this subject.
    pub actor: Option<String>,
    /// Only events of these types (repeatable).
    pub types: Vec<String>,
    /// Only events recorded at or after this RFC 3339 time.
    pub from: Option<String>,
    /// Only events recorded before this RFC 3339 time.
    pub to: Option<String>,
    /// `proof=true`: attach each event's inclusion proof.
    pub proof: bool,
}

impl EventsQuery {
    /// Parses the query string, naming the parameter at fault.
    pub fn parse(raw: Option<&str>) -> Result<Self, Problem> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(raw.unwrap_or("")).map_err(|e| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("the query string is invalid: {e}"),
                )
            })?;
        let mut query = Self::default();
        for (name, value) in pairs {
            let number = |what: &str| {
                value.parse::<u64>().map_err(|_| {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_query",
                        format!("{name} {value:?} is not a whole number"),
                    )
                    .with_field(name.clone(), format!("expected {what}"))
                })
            };
            let once = |slot: &Option<String>| {
                if slot.is_some() {
                    Err(Problem::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_query",
                        format!("{name} is given twice; give it once"),
                    )
                    .with_field(name.clone(), "give it once"))
                } else {
                    Ok(Some(value.clone()))
                }
            };
            match name.as_str() {
                "from_version" => query.from_version = Some(number("a version, from 1")?),
                "limit" => {
                    query.limit = Some(
                        usize::try_from(number("a page size, 1 to 1000")?).unwrap_or(usize::MAX),
                    );
                }
                "actor" => query.actor = once(&query.actor)?,
                "from" => query.from = once(&query.from)?,
                "to" => query.to = once(&query.to)?,
                "type" => query.types.push(value),
                "proof" => {
                    query.proof = match value.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(Problem::new(
                                StatusCode::BAD_REQUEST,
                                "invalid_query",
                                format!("proof {value:?} is not true or false"),
                            )
                            .with_field(name.clone(), "true or false"));
                        }
                    }
                }
                _ => {
                    return Err(Problem::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_query",
                        format!(
                            "unknown query parameter {name:?}; this endpoint takes from_version, limit, actor, type, from, to and proof"
                        ),
                    ));
                }
            }
        }
        Ok(query)
    }
}

/// A page of a plan's events.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = PlanEvents)]
pub struct PlanEventsResponse {
    /// The plan.
    pub plan_id: String,
    /// The events, oldest first.
    pub events: Vec<planledger_store::Envelope>,
    /// The version to ask for next (with the same filters), if the trail may go on.
    pub next_from_version: Option<u64>,
    /// With `?proof=true`: each event's inclusion proof, in the order of `events`, all in one
    /// tree size (the log's last durable position when read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proofs: Option<Vec<planledger_app::checkpoint::InclusionProofBody>>,
}

/// Returns a plan's audit trail, filtered by actor, type and recorded time.
#[utoipa::path(
    get,
    path = "/v1/plans/{plan_id}/events",
    operation_id = "getPlanEvents",
    summary = "A plan's audit trail, optionally filtered by actor, type and recorded time (auditor, admin)",
    description = "Envelopes oldest first. Filters combine (all must hold). Without a filter a page holds the next `limit` events; with one, a page scans at most limit*20+1000 versions, so it may hold fewer than `limit` events (even none) while `next_from_version` is set: ask again with the same filters and `from_version=next_from_version` until it is null.",
    params(
        crate::openapi::PlanIdPath,
        ("from_version" = Option<u64>, Query, minimum = 0, description = "First version"),
        ("limit" = Option<u64>, Query, minimum = 0, description = "Page size; values outside 1-1000 are clamped to that range"),
        ("actor" = Option<String>, Query, min_length = 1, description = "Only events caused by this subject (the token `sub` recorded as the envelope's actor)"),
        ("type" = Option<Vec<crate::openapi::EventType>>, Query, description = "Only events of these types; repeat it (`type=GoalAdjusted&type=CheckInRecorded`) or separate with commas. An unknown type is 400."),
        ("from" = Option<String>, Query, format = DateTime, description = "Only events recorded at or after this RFC 3339 time (inclusive, on recorded_at)"),
        ("to" = Option<String>, Query, format = DateTime, description = "Only events recorded before this RFC 3339 time (exclusive, on recorded_at); `from` after `to` is 400"),
        ("proof" = Option<bool>, Query, description = "true: add proofs, each event's Merkle inclusion proof"),
    ),
    responses(
        (status = 200, description = "OK", body = PlanEventsResponse),
        (status = 400, description = "Invalid input; `errors[0].field` names the parameter (type, from, to, actor, limit, from_version)", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        crate::openapi::AuthRefusals,
        crate::openapi::PlanRefusals,
    ),
)]
pub async fn get_plan_events(
    State(state): State<SharedState>,
    Caller(principal): Caller,
    Path(plan_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<PlanEventsResponse>, Problem> {
    let query = EventsQuery::parse(raw.as_deref())?;
    let plan_id = parse_plan_id(&plan_id)?;
    let filter = EventFilter::parse(
        query.actor,
        &query.types,
        query.from.as_deref(),
        query.to.as_deref(),
    )?;
    let limit = query.limit.unwrap_or(100);
    let from = query.from_version.unwrap_or(1);
    let id = plan_id.clone();
    let (page, proofs) = crate::audit::events_with_proofs(
        state.app.clone(),
        query.proof,
        move |app| {
            app.queries
                .plan_events(&principal, &id, from, limit, &filter)
        },
        |page| page.events.iter().map(|e| e.position.get()).collect(),
    )
    .await?;
    Ok(axum::Json(PlanEventsResponse {
        plan_id: plan_id.to_string(),
        events: page.events,
        next_from_version: page.next_from_version,
        proofs,
    }))
}
