//! `POST /v1/plans/{plan_id}/commands`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use planledger_app::door::{self, CommandBody, CommandInput, IfMatch};
use planledger_app::{CommandResult, Refusal};
use planledger_domain::PlanId;
use serde::Serialize;

use crate::auth::Caller;
use crate::{Problem, SharedState};

/// The answer to an accepted command.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CommandResponse {
    /// The plan.
    pub plan_id: String,
    /// The plan's version after the command (send it back in `If-Match`).
    pub version: u64,
    /// Position of the last event written in its log (single node: use as `min_position`).
    pub position: u64,
    /// Cluster mode: the partition whose log holds the plan (absent on a single node).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub partition: Option<u32>,
    /// Pass as `?bookmark=` to a read-model query to read this write (both modes).
    pub bookmark: String,
    /// True when this answers a repeated `Idempotency-Key`.
    pub deduplicated: bool,
    /// The stored events.
    pub events: Vec<planledger_store::Envelope>,
}

impl From<CommandResult> for CommandResponse {
    fn from(result: CommandResult) -> Self {
        Self {
            plan_id: result.plan_id.to_string(),
            version: result.version(),
            position: result.position(),
            partition: result.partition,
            bookmark: result.bookmark().to_string(),
            deduplicated: result.deduplicated(),
            events: result.events.into_envelopes(),
        }
    }
}

/// Parses a path id, naming the field on failure.
pub fn parse_plan_id(raw: &str) -> Result<PlanId, Problem> {
    door::parse_plan_id(raw).map_err(Problem)
}

/// A header's text: `None` when absent; refused when it is not visible ASCII.
fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Problem> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value.to_str().map(Some).map_err(|_| {
            Problem(Refusal::invalid_header(
                name,
                format!("header {name} must be visible ASCII"),
                "must be visible ASCII",
            ))
        }),
    }
}

/// Correlation id: the `X-Correlation-Id` header, else the request id.
pub fn correlation_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(door::HEADER_CORRELATION_ID)
        .or_else(|| headers.get("x-request-id"))
        .and_then(|v| v.to_str().ok())
}

/// Runs a command against a plan: the body and headers go through the one command door
/// ([`planledger_app::door`]), as NATS requests do.
#[utoipa::path(
    post,
    path = "/v1/plans/{plan_id}/commands",
    operation_id = "postCommand",
    summary = "Run a command against a plan",
    description = "The body is one command, `{\"type\": ..., \"data\": {...}}`; unknown fields are refused. The answer carries the stored events, the plan's new version (also as ETag) and a bookmark for read-your-writes.",
    params(
        crate::openapi::PlanIdPath,
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 128, pattern = r"^[!-~]+$",
            description = "Command id; a repeat returns the first result"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^"[0-9]+"$"#,
            description = "Expected plan version, quoted; otherwise 400 invalid_header"),
        ("traceparent" = Option<String>, Header, nullable = false, pattern = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$",
            description = "W3C trace context, stored on the events; a malformed one is refused (400 invalid_header)"),
        ("Planledger-Causation-Id" = Option<String>, Header, nullable = false, min_length = 1, max_length = 128, pattern = r"^[!-~]+$",
            description = "Id of the event or message this command reacts to; stored as the events' causation_id"),
    ),
    request_body(content = planledger_domain::Command, content_type = "application/json"),
    responses(
        (status = 200, description = "Accepted; events appended", body = CommandResponse),
        (status = 400, description = "Invalid input (field-level detail): invalid_body (malformed JSON, an unknown top-level or data field), invalid_input, invalid_id, invalid_header (If-Match, traceparent, Planledger-Causation-Id), domain codes of kind invalid",
            body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        crate::openapi::AuthRefusals,
        (status = 404, description = "No such plan for this tenant", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "Version conflict (current_version given)", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "A domain rule rejected the command", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Timed out, or the event log cannot take the write: log_unavailable (a write or fsync failed; restart), log_outcome_unknown (resend with the same Idempotency-Key), storage_full (the log's disk is full; see Retry-After), partition_moved / partition_unavailable (cluster mode: nothing was appended; retry after Retry-After)",
            body = crate::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn post_command(
    State(state): State<SharedState>,
    Caller(principal): Caller,
    Path(plan_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem(Refusal::body_too_large(state.config.body_limit_bytes))
        } else {
            Problem::bad_json("body".into(), rejection.body_text())
        }
    })?;
    let input = CommandInput {
        plan_id: &plan_id,
        body: CommandBody::Json(&body),
        idempotency_key: header_text(&headers, door::HEADER_IDEMPOTENCY_KEY)?,
        if_match: header_text(&headers, door::HEADER_IF_MATCH)?.map(IfMatch::Header),
        traceparent: header_text(&headers, door::HEADER_TRACEPARENT)?,
        causation_id: header_text(&headers, door::HEADER_CAUSATION_ID)?,
        correlation_id: correlation_id(&headers),
    };
    let result = door::execute(&state.app.commands, &principal, input).await?;
    let etag = format!("\"{}\"", result.version());
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        response_body(result),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

/// The JSON of [`CommandResponse`]. A fresh append's events are spliced in as the log stored
/// them, byte for byte (the same text their serde form gives), instead of being rendered again.
pub fn response_body(result: CommandResult) -> Vec<u8> {
    let stored = result.events.stored();
    if stored.len() != result.events.len() {
        return serde_json::to_vec(&CommandResponse::from(result))
            .expect("a command response always serializes");
    }
    let events: usize = stored.iter().map(|e| e.len() + 1).sum();
    let mut out = Vec::with_capacity(events + 128);
    out.extend_from_slice(b"{\"plan_id\":");
    serde_json::to_writer(&mut out, result.plan_id.as_str()).expect("writing to a Vec");
    out.extend_from_slice(b",\"version\":");
    out.extend_from_slice(result.version().to_string().as_bytes());
    out.extend_from_slice(b",\"position\":");
    out.extend_from_slice(result.position().to_string().as_bytes());
    if let Some(partition) = result.partition {
        out.extend_from_slice(b",\"partition\":");
        out.extend_from_slice(partition.to_string().as_bytes());
    }
    out.extend_from_slice(b",\"bookmark\":");
    serde_json::to_writer(&mut out, &result.bookmark().to_string()).expect("writing to a Vec");
    out.extend_from_slice(b",\"deduplicated\":");
    out.extend_from_slice(if result.deduplicated() {
        b"true"
    } else {
        b"false"
    });
    out.extend_from_slice(b",\"events\":[");
    for (index, event) in stored.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(event);
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result_with(events: usize, stored: bool, deduplicated: bool) -> CommandResult {
        let events: Vec<planledger_store::Envelope> = (1..=events as u64)
            .map(|n| planledger_store::Envelope {
                position: planledger_store::Position(40 + n),
                stream: planledger_store::StreamId::new("acme/q3").expect("id"),
                version: planledger_store::Version(n),
                event_id: uuid::Uuid::now_v7(),
                event_type: "CheckInRecorded".into(),
                schema_version: 2,
                occurred_at: jiff::Timestamp::now(),
                recorded_at: jiff::Timestamp::now(),
                actor: "ana \"the planner\"".into(),
                command_id: Some("c-1".into()),
                correlation_id: None,
                causation_id: None,
                traceparent: None,
                data: serde_json::value::to_raw_value(
                    &serde_json::json!({"value": n, "note": "é\n"}),
                )
                .expect("raw"),
                prev_hash: "0".repeat(64),
                hash: "f".repeat(64),
            })
            .collect();
        let stored = if stored {
            events
                .iter()
                .map(|e| serde_json::to_vec(e).expect("serialize"))
                .collect()
        } else {
            Vec::new()
        };
        CommandResult {
            plan_id: PlanId::new("q3").expect("plan id"),
            events: planledger_store::AppendOutcome::from_envelopes(events, stored, deduplicated),
            partition: deduplicated.then_some(3),
        }
    }

    #[test]
    fn spliced_response_is_the_serde_form() {
        for (events, deduplicated) in [(1, false), (3, false), (2, true)] {
            let result = result_with(events, true, deduplicated);
            let expected =
                serde_json::to_vec(&CommandResponse::from(result.clone())).expect("serialize");
            assert_eq!(
                String::from_utf8(response_body(result)).expect("utf-8"),
                String::from_utf8(expected).expect("utf-8")
            );
        }
    }

    #[test]
    fn response_without_stored_bytes_is_rendered() {
        let result = result_with(2, false, true);
        let expected =
            serde_json::to_vec(&CommandResponse::from(result.clone())).expect("serialize");
        assert_eq!(response_body(result), expected);
    }
}
