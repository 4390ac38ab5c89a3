//! `GET /v1/audit/verify`, `GET /v1/audit/digest`, `GET /v1/audit/keys`, the Merkle tree's
//! `GET /v1/audit/checkpoint` and proofs (`/v1/audit/proof/inclusion`, `/consistency`)
//! (auditor, admin).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use planledger_app::audit::{ChainReport, PublicKey, SignedDigest};
use planledger_app::checkpoint::{ConsistencyProofBody, InclusionProofBody};
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

/// The query of an audit route that takes no parameters. It is refused like any other unknown
/// parameter: `?partition=` is a cluster node's, and a single node has one log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// Refuses any query parameter on a route that takes none.
fn no_query(query: Result<Query<NoQuery>, QueryRejection>) -> Result<(), Problem> {
    query.map(|_| ()).map_err(query_rejection)
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

/// Reads a page of events off the async runtime with `read` and, when `with_proofs`
/// (`?proof=true` on event reads), the inclusion proofs of the events at the page's
/// `positions`, all in one tree: the last durable position after the read.
pub(crate) async fn events_with_proofs<P: Send + 'static>(
    app: planledger_app::App,
    with_proofs: bool,
    read: impl FnOnce(&planledger_app::App) -> Result<P, planledger_app::AppError> + Send + 'static,
    positions: impl FnOnce(&P) -> Vec<u64> + Send + 'static,
) -> Result<(P, Option<Vec<InclusionProofBody>>), Problem> {
    blocking(move || {
        let page = read(&app)?;
        let proofs = with_proofs
            .then(|| app.audit.proofs_of(positions(&page)))
            .transpose()?;
        Ok((page, proofs))
    })
    .await
}

/// Walks the hash chain from position 1 (to `to_position`, or the last durable position).
#[utoipa::path(
    get,
    path = "/v1/audit/verify",
    operation_id = "verifyChain",
    summary = "Walk the hash chain from position 1 (auditor, admin)",
    description = "Checks positions, hashes and links from position 1 to `to_position` (default and at most: the last durable position). The chain is global, so the answer covers every tenant's events (positions and hashes only). On a large log bound it with `to_position`, or run `planledger verify` on the stopped service: the request times out after the request timeout (10 s by default).",
    params(
        ("to_position" = Option<u64>, Query, minimum = 1, description = "Last position to verify"),
        crate::openapi::PartitionParam,
    ),
    responses(
        (status = 200, description = "OK", body = ChainReport),
        crate::openapi::AuditRefusals,
        crate::openapi::AuthRefusals,
    ),
)]
pub async fn get_verify(
    State(state): State<SharedState>,
    Caller(principal): Caller,
    query: Result<Query<VerifyQuery>, QueryRejection>,
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
#[utoipa::path(
    get,
    path = "/v1/audit/digest",
    operation_id = "getDigest",
    summary = "A signed digest of the last durable position (auditor, admin)",
    description = "Ed25519 signature over the UTF-8 text `planledger-digest-v1\\n<log_id>\\n<position>\\n<hash>\\n<recorded_at>` (no trailing newline; recorded_at as RFC 3339 in UTC exactly as the envelope stores it). Keep it; `planledger verify --digest FILE` later proves the log still holds that position with that hash and that the chain from 1 to it verifies.",
    params(crate::openapi::PartitionParam),
    responses(
        (status = 200, description = "OK", body = SignedDigest),
        (status = 404, description = "The log holds no events yet", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        crate::openapi::AuditRefusals,
        crate::openapi::AuthRefusals,
    ),
)]
pub async fn get_digest(
    State(state): State<SharedState>,
    Caller(principal): Caller,
    query: Result<Query<NoQuery>, QueryRejection>,
) -> Result<axum::Json<SignedDigest>, Problem> {
    no_query(query)?;
    let audit = state.app.audit.clone();
    Ok(axum::Json(
        blocking(move || audit.digest(&principal)).await?,
    ))
}

/// The public keys digests are signed with.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeysResponse {
    /// The keys, the current one first.
    pub keys: Vec<PublicKey>,
}

/// Lists the digest public keys.
#[utoipa::path(
    get,
    path = "/v1/audit/keys",
    operation_id = "getDigestKeys",
    summary = "Public keys digests and checkpoints are signed with (auditor, admin)",
    description = "In cluster mode `?partition=P` is required: P's owner node answers with the keys that sign that partition's digests and checkpoints.",
    params(crate::openapi::PartitionParam),
    responses(
        (status = 200, description = "OK", body = KeysResponse),
        crate::openapi::AuditRefusals,
        crate::openapi::AuthRefusals,
    ),
)]
pub async fn get_keys(
    State(state): State<SharedState>,
    Caller(principal): Caller,
    query: Result<Query<NoQuery>, QueryRejection>,
) -> Result<axum::Json<KeysResponse>, Problem> {
    no_query(query)?;
    let keys = state.app.audit.keys(&principal)?;
    Ok(axum::Json(KeysResponse { keys }))
}

/// A signed checkpoint of the Merkle tree (C2SP `tlog-checkpoint`, `text/plain`).
#[utoipa::path(
    get,
    path = "/v1/audit/checkpoint",
    operation_id = "getCheckpoint",
    summary = "A signed checkpoint of the log's Merkle tree (auditor, admin)",
    description = "C2SP tlog-checkpoint text: the origin `planledger/<log_id>`, the tree size (the last durable position) and the base64 root hash, each on its own line, a blank line, then the signed-note signature line `— <origin> <base64(4-byte key id || 64-byte Ed25519 signature)>`, the key id being SHA-256(origin || 0x0A || 0x01 || public key)[:4] and the key the digest key of GET /v1/audit/keys. Check with `planledger audit verify-event` / `verify-consistency`.",
    params(crate::openapi::PartitionParam),
    responses(
        (status = 200, description = "OK", body = String, content_type = "text/plain"),
        crate::openapi::AuditRefusals,
        crate::openapi::AuthRefusals,
    ),
)]
pub async fn get_checkpoint(
    State(state): State<SharedState>,
    Caller(principal): Caller,
    query: Result<Query<NoQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    no_query(query)?;
    let audit = state.app.audit.clone();
    let note = blocking(move || audit.checkpoint(&principal)).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response())
}

/// Query of `GET /v1/audit/proof/inclusion`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    /// The event's log position (required).
    pub position: Option<u64>,
    /// The tree size to prove it in (default: the last durable position).
    pub tree_size: Option<u64>,
}

/// The inclusion proof of one event in a tree size.
#[utoipa::path(
    get,
    path = "/v1/audit/proof/inclusion",
    operation_id = "getInclusionProof",
    summary = "The Merkle inclusion proof of one event (auditor, admin)",
    description = "RFC 9162 2.1.3: the audit path of the event at `position` in the tree of `tree_size` events (default: the last durable position). Leaves are SHA-256(0x00 || the stored envelope JSON), nodes SHA-256(0x01 || left || right).",
    params(
        ("position" = u64, Query, minimum = 1, description = "The event's log position"),
        ("tree_size" = Option<u64>, Query, minimum = 1, description = "The tree size (default: the last durable position)"),
        crate::openapi::PartitionParam,
    ),
    responses(
        (status = 200, description = "OK", body = InclusionProofBody),
        crate::openapi::AuditRefusals,
        crate::openapi::AuthRefusals,
    ),
)]
pub async fn get_inclusion_proof(
    State(state): State<SharedState>,
    Caller(principal): Caller,
    query: Result<Query<InclusionQuery>, QueryRejection>,
) -> Result<axum::Json<InclusionProofBody>, Problem> {
    let Query(query) = query.map_err(query_rejection)?;
    let Some(position) = query.position else {
        return Err(required(
            "position",
            "position is required: the log position of the event to prove (from 1), e.g. ?position=42&tree_size=100",
        ));
    };
    let audit = state.app.audit.clone();
    let proof =
        blocking(move || audit.inclusion_proof(&principal, position, query.tree_size)).await?;
    Ok(axum::Json(proof))
}

/// Query of `GET /v1/audit/proof/consistency`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    /// The older tree size (required).
    pub from: Option<u64>,
    /// The newer tree size (default: the last durable position).
    pub to: Option<u64>,
}

/// The consistency proof between two tree sizes.
#[utoipa::path(
    get,
    path = "/v1/audit/proof/consistency",
    operation_id = "getConsistencyProof",
    summary = "The Merkle consistency proof between two tree sizes (auditor, admin)",
    description = "RFC 9162 2.1.4: proves the tree of `from` events is a prefix of the tree of `to` events (default: the last durable position).",
    params(
        ("from" = u64, Query, minimum = 1, description = "The older tree size"),
        ("to" = Option<u64>, Query, minimum = 1, description = "The newer tree size (default: the last durable position)"),
        crate::openapi::PartitionParam,
    ),
    responses(
        (status = 200, description = "OK", body = ConsistencyProofBody),
        crate::openapi::AuditRefusals,
        crate::openapi::AuthRefusals,
    ),
)]
pub async fn get_consistency_proof(
    State(state): State<SharedState>,
    Caller(principal): Caller,
    query: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<axum::Json<ConsistencyProofBody>, Problem> {
    let Query(query) = query.map_err(query_rejection)?;
    let Some(from) = query.from else {
        return Err(required(
            "from",
            "from is required: the tree size of the older checkpoint (from 1), e.g. ?from=100&to=250",
        ));
    };
    let audit = state.app.audit.clone();
    let proof = blocking(move || audit.consistency_proof(&principal, from, query.to)).await?;
    Ok(axum::Json(proof))
}

fn required(field: &str, detail: &str) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "invalid_query", detail)
        .with_field(field, "required, a whole number from 1")
}
