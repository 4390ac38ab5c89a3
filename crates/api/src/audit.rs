//! `GET /v1/audit/verify`, `GET /v1/audit/digest` and `GET /v1/audit/keys` (auditor, admin).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use planledger_app::audit::{ChainReport, PublicKey, SignedDigest};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::plans::query_rejection;
use crate::{Problem, SharedState};

/// Query of `GET /v1/audit/verify`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// Verify from position 1 to this one (default: the last durable position).
    pub to_position: Option<u64>,
}

/// Runs blocking log work off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, planledger_app::AppError> + Send + 'static,
) -> Result<T, Problem> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(Problem::from)
}

/// Walks the hash chain from position 1 (to `to_position`, or the last durable position).
pub async fn get_verify(
    State(state): State<SharedState>,
    Caller(principal): Caller,
    query: Result<Query<VerifyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<ChainReport>, Problem> {
    let Query(query) = query.map_err(query_rejection)?;
    if query.to_position == Some(0) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "to_position 0 names no event; positions start at 1",
        )
        .with_field("to_position", "expected a position, from 1"));
    }
    let audit = state.app.audit.clone();
    let report = blocking(move || audit.verify_chain(&principal, query.to_position)).await?;
    Ok(axum::Json(report))
}

/// A signed digest of the last durable position.
pub async fn get_digest(
    State(state): State<SharedState>,
    Caller(principal): Caller,
) -> Result<axum::Json<SignedDigest>, Problem> {
    let audit = state.app.audit.clone();
    Ok(axum::Json(
        blocking(move || audit.digest(&principal)).await?,
    ))
}

/// The public keys digests are signed with.
#[derive(Serialize)]
pub struct KeysResponse {
    /// The keys, the current one first.
    pub keys: Vec<PublicKey>,
}

/// Lists the digest public keys.
pub async fn get_keys(
    State(state): State<SharedState>,
    Caller(principal): Caller,
) -> Result<axum::Json<KeysResponse>, Problem> {
    let keys = state.app.audit.keys(&principal)?;
    Ok(axum::Json(KeysResponse { keys }))
}
