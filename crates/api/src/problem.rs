//! RFC 9457 problem details: every error the API returns, rendered from the one refusal type
//! both command doors share ([`planledger_app::Refusal`]).

use std::ops::Deref;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use planledger_app::{AppError, AuthError, Refusal};
use serde::Serialize;

pub use planledger_app::FieldError;

/// An `application/problem+json` answer: a [`Refusal`] with its `Retry-After` as a header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem(pub Refusal);

/// An RFC 9457 problem: the refusal without its retry hint (sent as `Retry-After`).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub(crate) struct ProblemBody<'a> {
    /// A URI reference naming the problem type (`/problems/<code>`).
    #[serde(rename = "type")]
    kind: String,
    /// A short summary of the status.
    title: &'a str,
    /// The HTTP status.
    status: u16,
    /// What went wrong and what to do about it.
    detail: &'a str,
    /// A stable, machine-readable code (e.g. `invalid_input`, `version_conflict`).
    code: &'a str,
    /// Field-level errors: which input was wrong and why.
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
    /// On a version conflict: the plan's current version.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    current_version: Option<u64>,
    /// On a version conflict: the log position of the plan's last event.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    current_position: Option<u64>,
}

impl Problem {
    /// A problem with a status, a code and a detail.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self(Refusal::new(status.as_u16(), code, detail))
    }

    /// Adds a field-level error.
    pub fn with_field(self, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self(self.0.with_field(field, message))
    }

    /// Sets `Retry-After` (seconds).
    pub fn retry_after(self, seconds: u64) -> Self {
        Self(self.0.retry_after(seconds))
    }

    /// 400 for a body that is not the JSON we accept.
    pub fn bad_json(field: String, message: String) -> Self {
        Self(Refusal::invalid_body(field, message))
    }

    /// The JSON body, as sent.
    pub fn body(&self) -> Vec<u8> {
        let refusal = &self.0;
        serde_json::to_vec(&ProblemBody {
            kind: refusal.kind(),
            title: &refusal.title,
            status: refusal.status,
            detail: &refusal.detail,
            code: &refusal.code,
            errors: &refusal.errors,
            current_version: refusal.current_version,
            current_position: refusal.current_position,
        })
        .expect("a problem always serializes")
    }
}

impl Deref for Problem {
    type Target = Refusal;

    fn deref(&self) -> &Refusal {
        &self.0
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, self.body()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.0.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"planledger\""),
            );
        }
        response
    }
}

impl From<Refusal> for Problem {
    fn from(refusal: Refusal) -> Self {
        Self(refusal)
    }
}

impl From<AuthError> for Problem {
    fn from(error: AuthError) -> Self {
        Self(Refusal::from(error))
    }
}

impl From<AppError> for Problem {
    fn from(error: AppError) -> Self {
        Self(Refusal::from(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_keeps_the_problem_shape_and_the_retry_hint_is_a_header() {
        let mut refusal = Refusal::new(409, "version_conflict", "stale").retry_after(3);
        refusal.current_version = Some(4);
        let with_version: serde_json::Value =
            serde_json::from_slice(&Problem(refusal.clone()).body()).expect("JSON");
        assert_eq!(with_version["current_version"], 4, "{with_version}");
        let response = Problem(refusal).into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let body = Problem(
            Refusal::new(409, "version_conflict", "stale")
                .with_field("If-Match", "send \"4\"")
                .retry_after(3),
        )
        .body();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).expect("JSON"),
            serde_json::json!({"type": "/problems/version_conflict", "title": "Conflict",
                "status": 409, "detail": "stale", "code": "version_conflict",
                "errors": [{"field": "If-Match", "message": "send \"4\""}]})
        );
    }
}
