//! `GET /v1/plans/{plan_id}` (current or historic state) and `GET /v1/plans/{plan_id}/events`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use planledger_app::StateAt;
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
#[derive(Serialize)]
pub struct PlanStateResponse {
    /// The plan.
    pub plan_id: String,
    /// The version this state reflects.
    pub version: u64,
    /// For `as_of`/`position` reads: the global position the state is as of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of_position: Option<u64>,
    /// The state.
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

/// Query of `GET /v1/plans/{plan_id}/events`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// First version to return (default 1).
    pub from_version: Option<u64>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// A page of a plan's events.
#[derive(Serialize)]
pub struct PlanEventsResponse {
    /// The plan.
    pub plan_id: String,
    /// The events, oldest first.
    pub events: Vec<planledger_store::Envelope>,
    /// The version to ask for next, if there may be more.
    pub next_from_version: Option<u64>,
}

/// Returns a plan's audit trail.
pub async fn get_plan_events(
    State(state): State<SharedState>,
    Caller(principal): Caller,
    Path(plan_id): Path<String>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<PlanEventsResponse>, Problem> {
    let Query(query) = query.map_err(query_rejection)?;
    let plan_id = parse_plan_id(&plan_id)?;
    let limit = query.limit.unwrap_or(100);
    let from = query.from_version.unwrap_or(1);
    let app = state.app.clone();
    let id = plan_id.clone();
    let events =
        tokio::task::spawn_blocking(move || app.queries.plan_events(&principal, &id, from, limit))
            .await
            .map_err(|e| {
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })??;
    let next_from_version = if events.len() >= limit.clamp(1, planledger_app::MAX_PAGE) {
        events.last().map(|e| e.version.get() + 1)
    } else {
        None
    };
    Ok(axum::Json(PlanEventsResponse {
        plan_id: plan_id.to_string(),
        events,
        next_from_version,
    }))
}
