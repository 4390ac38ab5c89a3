//! The one door for commands: every transport (HTTP in `api`, NATS request/reply in `bus`)
//! hands what it received to [`CommandInput`] and answers with what comes back, a
//! [`CommandResult`] or a [`Refusal`].
//!
//! A transport only extracts: the plan id, the body (JSON `{"type", "data"}`, or the type and
//! the data as separate parts, as the protobuf request carries them) and the metadata texts
//! (`Idempotency-Key`, `If-Match`, `traceparent`, `Planledger-Causation-Id`, correlation id).
//! Decoding, every check, the mapping of every [`AppError`] to a refusal (status, code, detail,
//! field errors, retry hint) and the decision whether a refusal is logged live here once, so
//! the doors cannot drift apart. A refusal is plain serde data: a node that forwards a command
//! can relay the answer it got unchanged.

// A refusal is answered once per refused request (the cold path) and is plain serde data
// both doors render and NATS carries: kept unboxed, so its fields read the same everywhere.
#![allow(clippy::result_large_err)]

use std::borrow::Cow;
use std::fmt;

use planledger_domain::{Command, PlanId};
use planledger_store::StoreError;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::auth::{AuthError, Principal};
use crate::commands::{CommandRequest, CommandResult, CommandService, validate_command_id};
use crate::error::AppError;
use crate::limits::RateLimiter;

/// Header (HTTP) or NATS header carrying the client's command id.
pub const HEADER_IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Header carrying the version the client expects the plan to be at.
pub const HEADER_IF_MATCH: &str = "If-Match";
/// Header carrying the W3C trace context.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// Header carrying the id of the message (usually an event id) the command reacts to.
pub const HEADER_CAUSATION_ID: &str = "Planledger-Causation-Id";
/// Header carrying the correlation id.
pub const HEADER_CORRELATION_ID: &str = "X-Correlation-Id";

/// Longest accepted causation id.
pub const MAX_CAUSATION_ID_LEN: usize = 128;
/// Longest correlation id kept (a longer one is dropped, as is an empty one).
pub const MAX_CORRELATION_ID_LEN: usize = 128;
/// `Retry-After` of a command refused because the event log's disk is full: freeing space takes
/// an operator, so clients back off for a while instead of hammering the service.
pub const STORAGE_FULL_RETRY_AFTER_SECONDS: u64 = 30;
/// `Retry-After` of a command refused by a partition that serves again shortly (cluster mode),
/// and of a read that waited for a position not reached yet.
pub const SHORT_RETRY_AFTER_SECONDS: u64 = 1;

/// One field-level complaint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// Path of the field, e.g. `data.goal_id`, or the header's name, e.g. `If-Match`.
    pub field: String,
    /// What is wrong and what to send instead.
    pub message: String,
}

/// Why a request was not carried out: what HTTP renders as `application/problem+json` (with
/// `Retry-After`) and NATS as its reply's problem, with the same code, detail and retry hint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The HTTP-equivalent status.
    pub status: u16,
    /// Stable machine-readable code; the problem type is `/problems/<code>`.
    pub code: String,
    /// Short summary of the status.
    pub title: String,
    /// What happened in this occurrence, with what to do.
    pub detail: String,
    /// Field-level errors, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// For version conflicts: the plan's current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
    /// For read-your-writes waits: the position reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_position: Option<u64>,
    /// Seconds after which the same request may succeed (`Retry-After`); `None` when retrying
    /// unchanged cannot help or needs an operator first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// The reason phrase of a status, as HTTP names it.
pub fn title_of(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

impl Refusal {
    /// A refusal with a status, a code and a detail.
    pub fn new(status: u16, code: &str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            title: title_of(status).to_string(),
            detail: detail.into(),
            errors: Vec::new(),
            current_version: None,
            current_position: None,
            retry_after: None,
        }
    }

    /// Adds a field-level error.
    pub fn with_field(mut self, field: impl Into<String>, message: impl Into<String>) -> Self {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
        self
    }

    /// Sets the retry hint (seconds, at least 1).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// The problem type: `/problems/<code>`.
    pub fn kind(&self) -> String {
        format!("/problems/{}", self.code)
    }

    /// 400 `invalid_body`: the body is not a command, at `field`.
    pub fn invalid_body(field: impl Into<String>, message: impl Into<String>) -> Self {
        let (field, message) = (field.into(), message.into());
        Self::new(
            400,
            "invalid_body",
            format!("the request body is invalid at {field}: {message}"),
        )
        .with_field(field, message)
    }

    /// 400 `invalid_header`: the header `name` is unusable; `rule` says what to send.
    pub fn invalid_header(name: &str, detail: impl Into<String>, rule: impl Into<String>) -> Self {
        Self::new(400, "invalid_header", detail).with_field(name, rule)
    }

    /// 413 `body_too_large`.
    pub fn body_too_large(limit_bytes: usize) -> Self {
        Self::new(
            413,
            "body_too_large",
            format!("the request body exceeds {limit_bytes} bytes; send a smaller command"),
        )
    }

    /// 429 `rate_limited`: `principal` used up its budget; one request is let through after
    /// `wait_seconds`.
    pub fn rate_limited(principal: &Principal, wait_seconds: u64) -> Self {
        Self::new(
            429,
            "rate_limited",
            RateLimiter::refusal(principal, wait_seconds),
        )
        .retry_after(wait_seconds)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.detail)
    }
}

impl From<AuthError> for Refusal {
    fn from(error: AuthError) -> Self {
        Self::new(error.status(), error.code(), error.to_string())
    }
}

impl From<AppError> for Refusal {
    /// The one mapping of application errors, and the one place that decides what is logged:
    /// a bug or a broken log (500) is logged with its cause and answered without it; expected
    /// refusals are not logged per request (the store reports a full disk or a failed write
    /// once, when it happens).
    fn from(error: AppError) -> Self {
        let status = error.status();
        let code = error.code();
        let detail = error.to_string();
        match error {
            AppError::Invalid { field, message } => {
                Self::new(status, code, detail).with_field(field, message)
            }
            AppError::Domain(domain) => {
                let refusal = Self::new(status, code, detail.clone());
                match domain.field() {
                    Some(field) => refusal.with_field(field, detail),
                    None => refusal,
                }
            }
            AppError::VersionConflict { current, .. } => {
                let mut refusal = Self::new(status, code, detail);
                refusal.current_version = Some(current);
                refusal
            }
            AppError::NotCaughtUp { current, .. } => {
                let mut refusal =
                    Self::new(status, code, detail).retry_after(SHORT_RETRY_AFTER_SECONDS);
                refusal.current_position = Some(current);
                refusal
            }
            // The operator's problem, not a bug: the detail says what is wrong and that nothing
            // was appended, and the client may send the command again later.
            AppError::Store(StoreError::StorageFull(_)) => {
                Self::new(status, code, detail).retry_after(STORAGE_FULL_RETRY_AFTER_SECONDS)
            }
            // Cluster mode: nothing was appended and the partition serves again shortly (after
            // its writer caught up, or once its log is reachable).
            AppError::Store(
                StoreError::PartitionMoved
                | StoreError::PartitionUnavailable(_)
                | StoreError::PartitionHalted { .. },
            ) => Self::new(status, code, detail).retry_after(SHORT_RETRY_AFTER_SECONDS),
            // The log stopped taking writes or could not confirm this one: the detail says
            // whether anything may have been appended and what to do before sending it again.
            AppError::Store(
                StoreError::WriteFailed(_)
                | StoreError::WriterStopped
                | StoreError::OutcomeUnknown(_),
            ) => Self::new(status, code, detail),
            AppError::Store(_) | AppError::Corrupt { .. } => {
                tracing::error!(error = %detail, "internal error");
                Self::new(
                    status,
                    code,
                    "the server failed to complete the request; it has been logged",
                )
            }
            AppError::Auth(_)
            | AppError::NotFound(_)
            | AppError::KeyReused { .. }
            | AppError::QuarantineRefused(_) => Self::new(status, code, detail),
        }
    }
}

/// A command's body as a transport carries it.
#[derive(Clone, Copy, Debug)]
pub enum CommandBody<'a> {
    /// JSON `{"type": "...", "data": {...}}` (HTTP, or NATS with `Content-Type:
    /// application/json`); any other top-level field is refused.
    Json(&'a [u8]),
    /// The type and the data's JSON text apart (the protobuf `CommandRequest`); empty data is
    /// an empty object.
    Parts {
        /// The command type, e.g. `AssignRole`.
        command_type: &'a str,
        /// The command's fields as JSON text.
        data_json: &'a [u8],
    },
}

/// The version the client expects the plan to be at.
#[derive(Clone, Copy, Debug)]
pub enum IfMatch<'a> {
    /// The text of an `If-Match` header: `"3"` (a weak `W/"3"` and bare `3` are tolerated).
    Header(&'a str),
    /// A version given as a number (the protobuf `expected_version`).
    Version(u64),
}

/// A command as a door received it, nothing checked yet.
#[derive(Clone, Copy, Debug)]
pub struct CommandInput<'a> {
    /// The plan id from the path (HTTP) or the subject (NATS).
    pub plan_id: &'a str,
    /// The body.
    pub body: CommandBody<'a>,
    /// `Idempotency-Key`, as sent (an empty header is refused).
    pub idempotency_key: Option<&'a str>,
    /// `If-Match`.
    pub if_match: Option<IfMatch<'a>>,
    /// `traceparent`, as sent.
    pub traceparent: Option<&'a str>,
    /// `Planledger-Causation-Id`, as sent.
    pub causation_id: Option<&'a str>,
    /// Correlation id; an empty or overlong one is dropped, not refused.
    pub correlation_id: Option<&'a str>,
}

impl CommandInput<'_> {
    /// Decodes and checks everything, in a fixed order (plan id, body, then the metadata in
    /// the order of the fields above), so both doors name the same first problem.
    pub fn decode(self) -> Result<CommandRequest, Refusal> {
        let plan_id = parse_plan_id(self.plan_id)?;
        let command = match self.body {
            CommandBody::Json(body) => decode_json_command(body)?,
            CommandBody::Parts {
                command_type,
                data_json,
            } => decode_command_parts(command_type, data_json)?,
        };
        let command_id = match self.idempotency_key {
            Some(key) => {
                let key = key.trim();
                validate_command_id(key).map_err(Refusal::from)?;
                Some(key.to_string())
            }
            None => None,
        };
        let expected_version = match self.if_match {
            None => None,
            Some(IfMatch::Version(version)) => Some(version),
            Some(IfMatch::Header(text)) => Some(parse_if_match(text)?),
        };
        let traceparent = match self.traceparent.map(str::trim) {
            None => None,
            Some(text) if valid_traceparent(text) => Some(text.to_string()),
            Some(text) => {
                return Err(Refusal::invalid_header(
                    HEADER_TRACEPARENT,
                    format!(
                        "traceparent {text:?} is not a W3C trace context; send 00-<32 lower-case hex trace id>-<16 lower-case hex parent id>-<2 hex flags>, ids not all zero, or leave the header out"
                    ),
                    "expected 00-<trace id>-<parent id>-<flags> (W3C Trace Context)",
                ));
            }
        };
        let causation_id = match self.causation_id.map(str::trim) {
            None => None,
            Some(text) if valid_causation_id(text) => Some(text.to_string()),
            Some(text) => {
                return Err(Refusal::invalid_header(
                    HEADER_CAUSATION_ID,
                    format!(
                        "Planledger-Causation-Id {text:?} is not a causation id; send the id of the event or message the command reacts to (1 to {MAX_CAUSATION_ID_LEN} printable ASCII characters, e.g. the event's event_id), or leave the header out"
                    ),
                    format!("1 to {MAX_CAUSATION_ID_LEN} printable ASCII characters"),
                ));
            }
        };
        let correlation_id = self
            .correlation_id
            .map(str::trim)
            .filter(|id| !id.is_empty() && id.len() <= MAX_CORRELATION_ID_LEN)
            .map(str::to_string);
        Ok(CommandRequest {
            plan_id,
            command,
            command_id,
            expected_version,
            correlation_id,
            causation_id,
            traceparent,
        })
    }
}

/// Decodes and runs one command for `principal`: what every door calls.
pub async fn execute(
    commands: &CommandService,
    principal: &Principal,
    input: CommandInput<'_>,
) -> Result<CommandResult, Refusal> {
    let request = input.decode()?;
    commands
        .execute(principal, request)
        .await
        .map_err(Refusal::from)
}

/// Parses a plan id (a path segment or a subject token), naming the field on failure.
pub fn parse_plan_id(raw: &str) -> Result<PlanId, Refusal> {
    PlanId::new(raw).map_err(|e| {
        Refusal::new(400, "invalid_id", e.to_string()).with_field("plan_id", e.to_string())
    })
}

/// Parses an `If-Match` value: `"<version>"` (quotes and a weak prefix are tolerated).
pub fn parse_if_match(raw: &str) -> Result<u64, Refusal> {
    let raw = raw.trim();
    let trimmed = raw.trim_start_matches("W/").trim_matches('"');
    trimmed.parse::<u64>().map_err(|_| {
        Refusal::invalid_header(
            HEADER_IF_MATCH,
            format!(
                "If-Match {raw:?} is not a plan version; send the version you read, e.g. If-Match: \"3\""
            ),
            "expected a quoted version number such as \"3\"",
        )
    })
}

/// Whether `value` is a W3C `traceparent`: `<version>-<trace id>-<parent id>-<flags>` in
/// lower-case hex (2, 32, 16, 2 digits), the version not `ff`, neither id all zeros; version
/// `00` has exactly these four parts, a later version may append more after a `-`.
/// Checked for every request that sends one, without allocating.
pub fn valid_traceparent(value: &str) -> bool {
    let bytes = value.as_bytes();
    let hex = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|part| part.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    };
    let not_zero = |range: std::ops::Range<usize>| bytes[range].iter().any(|b| *b != b'0');
    let shape = hex(0..2)
        && bytes.get(2) == Some(&b'-')
        && hex(3..35)
        && bytes.get(35) == Some(&b'-')
        && hex(36..52)
        && bytes.get(52) == Some(&b'-')
        && hex(53..55);
    if !shape || &bytes[0..2] == b"ff" || !not_zero(3..35) || !not_zero(36..52) {
        return false;
    }
    match &bytes[0..2] {
        b"00" => bytes.len() == 55,
        _ => bytes.len() == 55 || bytes[55] == b'-',
    }
}

/// Whether `id` is an acceptable causation id: 1 to [`MAX_CAUSATION_ID_LEN`] printable ASCII
/// characters (an event id, a message id).
pub fn valid_causation_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_CAUSATION_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The top level of a JSON command body, read without copying `data`.
struct JsonBody<'a> {
    command_type: Cow<'a, str>,
    data: Option<&'a RawValue>,
    /// The first field other than `type` and `data`.
    unknown: Option<String>,
}

impl<'de> Deserialize<'de> for JsonBody<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = JsonBody<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object {\"type\": ..., \"data\": {...}}")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut command_type: Option<Cow<'de, str>> = None;
                let mut data = None;
                let mut unknown = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "type" if command_type.is_some() => {
                            return Err(de::Error::duplicate_field("type"));
                        }
                        "type" => command_type = Some(map.next_value::<Cow<'de, str>>()?),
                        "data" if data.is_some() => {
                            return Err(de::Error::duplicate_field("data"));
                        }
                        "data" => data = Some(map.next_value::<&'de RawValue>()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            unknown.get_or_insert_with(|| key.into_owned());
                        }
                    }
                }
                let command_type = command_type.ok_or_else(|| de::Error::missing_field("type"))?;
                Ok(JsonBody {
                    command_type,
                    data,
                    unknown,
                })
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// Decodes a JSON command body `{"type": ..., "data": {...}}`; another top-level field is
/// refused, and so is an unknown field in `data`.
pub fn decode_json_command(body: &[u8]) -> Result<Command, Refusal> {
    let top: JsonBody<'_> =
        serde_json::from_slice(body).map_err(|e| Refusal::invalid_body("body", e.to_string()))?;
    if let Some(field) = top.unknown {
        return Err(Refusal::invalid_body(
            field.clone(),
            format!(
                "unknown field `{field}`: a command body has only `type` and `data`; put the command's fields inside `data`"
            ),
        ));
    }
    decode_command_data(&top.command_type, top.data.map_or("{}", RawValue::get))
}

/// Decodes a command given as a type and its data's JSON text (empty data: an empty object).
pub fn decode_command_parts(command_type: &str, data_json: &[u8]) -> Result<Command, Refusal> {
    if data_json.iter().all(u8::is_ascii_whitespace) {
        return decode_command_data(command_type, "{}");
    }
    let data: &RawValue = serde_json::from_slice(data_json)
        .map_err(|e| Refusal::invalid_body("data_json", e.to_string()))?;
    decode_command_data(command_type, data.get())
}

/// Decodes `type` and `data` (valid JSON text) into a command, naming the path of the first
/// problem (`type`, `data.confidence`, ...). The messages carry no line and column: the path
/// says where, the same whichever way the command came.
fn decode_command_data(command_type: &str, data: &str) -> Result<Command, Refusal> {
    let mut text = String::with_capacity(command_type.len() + data.len() + 20);
    text.push_str("{\"type\":");
    text.push_str(&serde_json::to_string(command_type).expect("a string serializes"));
    text.push_str(",\"data\":");
    text.push_str(data);
    text.push('}');
    // Most commands are valid: decode them directly, and walk a failing one a second time, with
    // its path tracked, only to name the field.
    if let Ok(command) = serde_json::from_str::<Command>(&text) {
        return Ok(command);
    }
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    match serde_path_to_error::deserialize::<_, Command>(&mut deserializer) {
        Ok(command) => Ok(command),
        Err(error) => {
            let path = error.path().to_string();
            let field = if path == "." || path.is_empty() {
                "body".to_string()
            } else {
                path
            };
            Err(Refusal::invalid_body(
                field,
                without_location(&error.into_inner()),
            ))
        }
    }
}

/// A serde_json error's message without its " at line L column C".
fn without_location(error: &serde_json::Error) -> String {
    let text = error.to_string();
    if error.line() == 0 {
        return text;
    }
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&suffix) {
        Some(message) => message.to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn input(body: &[u8]) -> CommandInput<'_> {
        CommandInput {
            plan_id: "q3",
            body: CommandBody::Json(body),
            idempotency_key: None,
            if_match: None,
            traceparent: None,
            causation_id: None,
            correlation_id: None,
        }
    }

    #[test]
    fn a_json_body_and_its_parts_decode_to_the_same_command() {
        let json = br#"{"type":"RecordCheckIn","data":{"goal_id":"g1","confidence":0.5}}"#;
        let parts = CommandBody::Parts {
            command_type: "RecordCheckIn",
            data_json: br#"{"goal_id":"g1","confidence":0.5}"#,
        };
        let via_json = input(json).decode().expect("valid");
        let via_parts = CommandInput {
            body: parts,
            ..input(b"")
        }
        .decode()
        .expect("valid");
        assert_eq!(via_json.command, via_parts.command);
    }

    #[test]
    fn an_unknown_top_level_field_is_refused_by_name() {
        let refusal = decode_json_command(br#"{"type":"ArchivePlan","data":{},"dta":{}}"#)
            .expect_err("unknown field");
        assert_eq!(
            (refusal.status, refusal.code.as_str()),
            (400, "invalid_body")
        );
        assert_eq!(refusal.errors[0].field, "dta");
    }

    #[test]
    fn an_unknown_data_field_names_its_path_without_a_location() {
        let json = decode_json_command(br#"{"type":"ArchivePlan","data":{"why":1}}"#)
            .expect_err("unknown data field");
        let parts = decode_command_parts("ArchivePlan", br#"{"why":1}"#).expect_err("unknown");
        assert_eq!(json, parts);
        assert_eq!(json.errors[0].field, "data.why");
        assert!(!json.detail.contains(" at line "), "{}", json.detail);
    }

    #[test]
    fn unknown_command_type_names_the_type() {
        let refusal = decode_json_command(br#"{"type":"Nope","data":{}}"#).expect_err("unknown");
        assert_eq!(refusal.status, 400);
        assert!(refusal.detail.contains("Nope"), "{}", refusal.detail);
    }

    #[test]
    fn missing_data_is_an_empty_object_and_trailing_garbage_is_refused() {
        assert!(matches!(
            decode_json_command(br#"{"type":"ArchivePlan"}"#),
            Ok(Command::ArchivePlan(_))
        ));
        assert!(matches!(
            decode_command_parts("ArchivePlan", b" "),
            Ok(Command::ArchivePlan(_))
        ));
        let refusal =
            decode_json_command(br#"{"type":"ArchivePlan","data":{}} x"#).expect_err("trailing");
        assert_eq!(refusal.errors[0].field, "body");
        let refusal = decode_command_parts("ArchivePlan", b"{oops").expect_err("not JSON");
        assert_eq!(refusal.errors[0].field, "data_json");
    }

    #[test]
    fn if_match_accepts_quoted_weak_and_bare_versions_only() {
        assert_eq!(parse_if_match("\"7\""), Ok(7));
        assert_eq!(parse_if_match("W/\"8\""), Ok(8));
        assert_eq!(parse_if_match("9"), Ok(9));
        let refusal = parse_if_match("*").expect_err("not a version");
        assert_eq!(refusal.code, "invalid_header");
        assert_eq!(refusal.errors[0].field, HEADER_IF_MATCH);
    }

    #[test]
    fn traceparent_follows_w3c() {
        assert!(valid_traceparent(TRACE));
        assert!(valid_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later"
        ));
        for bad in [
            "",
            "00-xyz-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-ff",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert!(!valid_traceparent(bad), "{bad:?} must be refused");
        }
        let refusal = CommandInput {
            traceparent: Some("00-nope"),
            ..input(br#"{"type":"ArchivePlan"}"#)
        }
        .decode()
        .expect_err("bad traceparent");
        assert_eq!(refusal.errors[0].field, HEADER_TRACEPARENT);
    }

    #[test]
    fn metadata_is_checked_and_kept() {
        let request = CommandInput {
            idempotency_key: Some(" key-1 "),
            if_match: Some(IfMatch::Header("\"4\"")),
            traceparent: Some(TRACE),
            causation_id: Some("0190f2a4-0000-7000-8000-000000000000"),
            correlation_id: Some(""),
            ..input(br#"{"type":"ArchivePlan"}"#)
        }
        .decode()
        .expect("valid");
        assert_eq!(request.command_id.as_deref(), Some("key-1"));
        assert_eq!(request.expected_version, Some(4));
        assert_eq!(request.traceparent.as_deref(), Some(TRACE));
        assert_eq!(
            request.causation_id.as_deref(),
            Some("0190f2a4-0000-7000-8000-000000000000")
        );
        assert_eq!(request.correlation_id, None);
        for bad in ["", "has space", "é", &"x".repeat(MAX_CAUSATION_ID_LEN + 1)] {
            let refusal = CommandInput {
                causation_id: Some(bad),
                ..input(br#"{"type":"ArchivePlan"}"#)
            }
            .decode()
            .expect_err("bad causation id");
            assert_eq!(refusal.errors[0].field, HEADER_CAUSATION_ID, "{bad:?}");
        }
        let refusal = CommandInput {
            idempotency_key: Some("two words"),
            ..input(br#"{"type":"ArchivePlan"}"#)
        }
        .decode()
        .expect_err("bad key");
        assert_eq!(refusal.code, "invalid_input");
        assert_eq!(refusal.errors[0].field, HEADER_IDEMPOTENCY_KEY);
    }

    #[test]
    fn store_refusals_keep_their_message_and_retry_hint() {
        let full = Refusal::from(AppError::Store(StoreError::StorageFull(
            "only 3 bytes".into(),
        )));
        assert_eq!(
            (full.status, full.code.as_str(), full.retry_after),
            (503, "storage_full", Some(STORAGE_FULL_RETRY_AFTER_SECONDS))
        );
        assert!(full.detail.contains("only 3 bytes"), "{}", full.detail);
        let unknown = Refusal::from(AppError::Store(StoreError::OutcomeUnknown("fsync".into())));
        assert_eq!(unknown.code, "log_outcome_unknown");
        assert!(
            unknown.detail.contains("retry with the same command id"),
            "{}",
            unknown.detail
        );
        for (error, code) in [
            (StoreError::PartitionMoved, "partition_moved"),
            (
                StoreError::PartitionUnavailable("no quorum".into()),
                "partition_unavailable",
            ),
            (
                StoreError::PartitionHalted {
                    reason: "cache_diverged",
                    detail: "see the runbook".into(),
                },
                "partition_unavailable",
            ),
        ] {
            let refusal = Refusal::from(AppError::Store(error));
            assert_eq!(
                (refusal.status, refusal.code.as_str(), refusal.retry_after),
                (503, code, Some(SHORT_RETRY_AFTER_SECONDS))
            );
        }
        let internal = Refusal::from(AppError::Store(StoreError::EmptyAppend));
        assert_eq!((internal.status, internal.code.as_str()), (500, "internal"));
        assert!(!internal.detail.contains("at least one event"));
    }

    #[test]
    fn a_refusal_round_trips_through_its_serde_form() {
        let mut refusal = Refusal::new(409, "version_conflict", "plan q3 is at version 4")
            .with_field("If-Match", "send \"4\"")
            .retry_after(2);
        refusal.current_version = Some(4);
        refusal.current_position = Some(17);
        let text = serde_json::to_string(&refusal).expect("serializes");
        assert_eq!(
            serde_json::from_str::<Refusal>(&text).expect("deserializes"),
            refusal
        );
        assert_eq!(refusal.title, "Conflict");
        assert_eq!(refusal.kind(), "/problems/version_conflict");
    }
}
