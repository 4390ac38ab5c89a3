//! `POST /v1/plans/{plan_id}/commands`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use planledger_app::{CommandRequest, CommandResult};
use planledger_domain::{Command, PlanId};
use serde::Serialize;

use crate::auth::Caller;
use crate::{Problem, SharedState};

/// The answer to an accepted command.
#[derive(Serialize)]
pub struct CommandResponse {
    /// The plan.
    pub plan_id: String,
    /// The plan's version after the command (send it back in `If-Match`).
    pub version: u64,
    /// Global position of the last event written (use as `min_position` to read your writes).
    pub position: u64,
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
            deduplicated: result.deduplicated(),
            events: result.events.into_envelopes(),
        }
    }
}

/// Parses a path id, naming the field on failure.
pub fn parse_plan_id(raw: &str) -> Result<PlanId, Problem> {
    PlanId::new(raw).map_err(|e| {
        Problem::new(StatusCode::BAD_REQUEST, "invalid_id", e.to_string())
            .with_field("plan_id", e.to_string())
    })
}

/// Decodes a command body, reporting the JSON path of the first problem.
pub fn decode_command(body: &[u8]) -> Result<Command, Problem> {
    // Most bodies are valid: decode them directly, and walk a failing body a second time, with
    // its path tracked, only to name the field in the error.
    if let Ok(command) = serde_json::from_slice::<Command>(body) {
        return Ok(command);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let command: Command = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            "body".to_string()
        } else {
            path
        };
        Problem::bad_json(field, e.into_inner().to_string())
    })?;
    deserializer
        .end()
        .map_err(|e| Problem::bad_json("body".into(), e.to_string()))?;
    Ok(command)
}

fn header_text(headers: &HeaderMap, name: &str) -> Result<Option<String>, Problem> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|v| Some(v.trim().to_string()))
            .map_err(|_| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_header",
                    format!("header {name} must be visible ASCII"),
                )
                .with_field(name, "must be visible ASCII")
            }),
    }
}

/// Parses `If-Match: "<version>"` (quotes and a weak prefix are tolerated).
pub fn parse_if_match(headers: &HeaderMap) -> Result<Option<u64>, Problem> {
    let Some(raw) = header_text(headers, "if-match")? else {
        return Ok(None);
    };
    let trimmed = raw.trim_start_matches("W/").trim_matches('"');
    trimmed.parse::<u64>().map(Some).map_err(|_| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_header",
            format!("If-Match {raw:?} is not a plan version; send the version you read, e.g. If-Match: \"3\""),
        )
        .with_field("If-Match", "expected a quoted version number such as \"3\"")
    })
}

/// Correlation id: the `X-Correlation-Id` header, else the request id.
pub fn correlation_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-correlation-id")
        .or_else(|| headers.get("x-request-id"))
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
}

/// Runs a command against a plan.
pub async fn post_command(
    State(state): State<SharedState>,
    Caller(principal): Caller,
    Path(plan_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the request body exceeds {} bytes; send a smaller command",
                    state.config.body_limit_bytes
                ),
            )
        } else {
            Problem::bad_json("body".into(), rejection.body_text())
        }
    })?;
    let plan_id = parse_plan_id(&plan_id)?;
    let command = decode_command(&body)?;
    let traceparent = header_text(&headers, "traceparent")?.filter(|t| valid_traceparent(t));
    let request = CommandRequest {
        plan_id,
        command,
        command_id: header_text(&headers, "idempotency-key")?,
        expected_version: parse_if_match(&headers)?,
        correlation_id: correlation_id(&headers),
        causation_id: None,
        traceparent,
    };
    let result = state.app.commands.execute(&principal, request).await?;
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

/// Whether a `traceparent` header has the W3C shape `00-<32 hex>-<16 hex>-<2 hex>`.
/// Checked for every request that sends one (for its span, then for its events), without
/// allocating.
pub fn valid_traceparent(value: &str) -> bool {
    let mut parts = value.split('-');
    [2usize, 32, 16, 2].iter().all(|len| {
        parts
            .next()
            .is_some_and(|part| part.len() == *len && part.bytes().all(|b| b.is_ascii_hexdigit()))
    }) && parts.next().is_none()
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

    #[test]
    fn traceparent_shape_is_checked() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent("00-xyz-00f067aa0ba902b7-01"));
        assert!(!valid_traceparent(""));
        assert!(!valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"
        ));
        assert!(!valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-ff"
        ));
    }

    #[test]
    fn if_match_accepts_quoted_and_weak_versions() {
        let mut headers = HeaderMap::new();
        headers.insert("if-match", HeaderValue::from_static("\"7\""));
        assert_eq!(parse_if_match(&headers).expect("parse"), Some(7));
        headers.insert("if-match", HeaderValue::from_static("W/\"8\""));
        assert_eq!(parse_if_match(&headers).expect("parse"), Some(8));
        headers.insert("if-match", HeaderValue::from_static("*"));
        assert!(parse_if_match(&headers).is_err());
    }

    #[test]
    fn unknown_command_type_names_the_field() {
        let problem = decode_command(br#"{"type":"Nope","data":{}}"#).expect_err("unknown");
        assert_eq!(problem.status, 400);
        assert!(problem.detail.contains("Nope"), "{}", problem.detail);
    }

    #[test]
    fn trailing_garbage_is_rejected() {
        let problem =
            decode_command(br#"{"type":"ArchivePlan","data":{}} x"#).expect_err("trailing");
        assert_eq!(problem.status, 400);
    }
}
