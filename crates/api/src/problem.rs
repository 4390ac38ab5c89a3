//! RFC 9457 problem details: every error the API returns.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use planledger_app::{AppError, AuthError};
use planledger_store::StoreError;
use serde::Serialize;

/// `Retry-After` of a command refused because the event log's disk is full: freeing space takes
/// an operator, so clients back off for a while instead of hammering the service.
pub const STORAGE_FULL_RETRY_AFTER_SECONDS: u64 = 30;

/// One field-level complaint.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `data.goal_id`.
    pub field: String,
    /// What is wrong and what to send instead.
    pub message: String,
}

/// An `application/problem+json` body.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// A URI reference naming the problem type (`/problems/<code>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What happened in this occurrence, with what to do.
    pub detail: String,
    /// Stable machine-readable code.
    pub code: String,
    /// Field-level errors, if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// For version conflicts: the plan's current version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
    /// For read-your-writes waits: the position reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_position: Option<u64>,
    #[serde(skip)]
    retry_after: Option<u64>,
}

impl Problem {
    /// A problem with a status, a code and a detail.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("/problems/{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_string(),
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

    /// Sets `Retry-After` (seconds).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// 400 for a body that is not the JSON we accept.
    pub fn bad_json(field: String, message: String) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("the request body is invalid at {field}: {message}"),
        )
        .with_field(field, message)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let unauthorized = status == StatusCode::UNAUTHORIZED;
        let mut response = (status, axum::Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if unauthorized {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"planledger\""),
            );
        }
        response
    }
}

fn status_of(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl From<AuthError> for Problem {
    fn from(error: AuthError) -> Self {
        Problem::new(status_of(error.status()), error.code(), error.to_string())
    }
}

impl From<AppError> for Problem {
    fn from(error: AppError) -> Self {
        let status = status_of(error.status());
        let code = error.code();
        let detail = error.to_string();
        match error {
            AppError::Invalid { field, message } => {
                Problem::new(status, code, detail).with_field(field, message)
            }
            AppError::Domain(domain) => {
                let problem = Problem::new(status, code, detail.clone());
                match domain.field() {
                    Some(field) => problem.with_field(field, detail),
                    None => problem,
                }
            }
            AppError::VersionConflict { current, .. } => {
                let mut problem = Problem::new(status, code, detail);
                problem.current_version = Some(current);
                problem
            }
            AppError::NotCaughtUp { current, .. } => {
                let mut problem = Problem::new(status, code, detail).retry_after(1);
                problem.current_position = Some(current);
                problem
            }
            // The operator's problem, not a bug: the detail says what is wrong and that nothing
            // was appended, and the client may send the command again later.
            // (The log reports the shortage once; a line per refused command would flood.)
            AppError::Store(StoreError::StorageFull(_)) => {
                Problem::new(status, code, detail).retry_after(STORAGE_FULL_RETRY_AFTER_SECONDS)
            }
            // Cluster mode: nothing was appended and the partition serves again shortly (after
            // its writer caught up, or once its log is reachable).
            AppError::Store(
                StoreError::PartitionMoved
                | StoreError::PartitionUnavailable(_)
                | StoreError::PartitionHalted { .. },
            ) => Problem::new(status, code, detail).retry_after(1),
            AppError::Store(_) | AppError::Corrupt { .. } => {
                tracing::error!(error = %detail, "internal error");
                Problem::new(
                    status,
                    code,
                    "the server failed to complete the request; it has been logged",
                )
            }
            AppError::Auth(_)
            | AppError::NotFound(_)
            | AppError::KeyReused { .. }
            | AppError::QuarantineRefused(_) => Problem::new(status, code, detail),
        }
    }
}
