//! Command ingress over NATS request/reply: `planledger.cmd.<tenant>.<plan_id>`.
//!
//! A request is a protobuf `planledger.v1.CommandRequest` with the header
//! `Authorization: Bearer <jwt>`; the reply is a `planledger.v1.CommandReply`. This is a door,
//! like the HTTP API: it parses and authenticates, then calls the same
//! [`CommandService`] the HTTP API calls, and maps results and errors the same way (an HTTP
//! status and problem code in [`Problem`]). It holds no rules of its own.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;

use async_nats::{Client, HeaderMap, Subject};
use bytes::Bytes;
use futures::StreamExt as _;
use planledger_app::{
    AppError, AuthError, Authenticator, CommandRequest, CommandService, RateLimit, RateLimiter,
};
use planledger_domain::{Command, PlanId};
use planledger_proto::subjects::{
    COMMAND_SUBJECT_PREFIX, HEADER_AUTHORIZATION, HEADER_CONTENT_TYPE, parse_command_subject,
};
use planledger_proto::v1::{self, CommandReply, CommandResult, FieldError, Problem, command_reply};
use planledger_proto::{COMMAND_REPLY_CONTENT_TYPE, Message as _};
use tokio::sync::Semaphore;

use crate::BusError;
use crate::envelope::envelope_into_proto;

/// Settings of the command ingress.
#[derive(Clone, Debug)]
pub struct IngressConfig {
    /// Subject filter to serve; `planledger.cmd.>` serves every tenant and plan. A writer node
    /// that owns some partitions subscribes to narrower filters.
    pub subject: String,
    /// Queue group, so that several instances share the load; `None` to receive every request.
    pub queue_group: Option<String>,
    /// Largest accepted request body, as for HTTP.
    pub max_body_bytes: usize,
    /// Most requests handled at once; further requests wait in the subscription.
    pub max_in_flight: usize,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            subject: format!("{COMMAND_SUBJECT_PREFIX}.>"),
            queue_group: Some("planledger-commands".into()),
            max_body_bytes: 64 * 1024,
            max_in_flight: 256,
        }
    }
}

/// Serves commands arriving over NATS.
#[derive(Clone, Debug)]
pub struct CommandIngress {
    commands: CommandService,
    auth: Authenticator,
    config: IngressConfig,
    limiter: Arc<RateLimiter>,
}

/// Reason phrases of the HTTP statuses a command can end with.
fn title(status: u32) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// A problem with a status, a stable code and a detail, as the HTTP API builds them.
pub fn problem(status: u32, code: &str, detail: impl Into<String>) -> Problem {
    Problem {
        status,
        r#type: format!("/problems/{code}"),
        title: title(status).to_string(),
        detail: detail.into(),
        errors: Vec::new(),
        current_version: None,
        retry_after_seconds: None,
        code: code.to_string(),
    }
}

fn with_field(
    mut problem: Problem,
    field: impl Into<String>,
    message: impl Into<String>,
) -> Problem {
    problem.errors.push(FieldError {
        field: field.into(),
        message: message.into(),
    });
    problem
}

fn bad_body(field: String, message: String) -> Problem {
    with_field(
        problem(
            400,
            "invalid_body",
            format!("the request body is invalid at {field}: {message}"),
        ),
        field,
        message,
    )
}

/// The problem for an authentication failure (statuses and codes shared with HTTP via `app`).
pub fn problem_from_auth(error: AuthError) -> Problem {
    problem(u32::from(error.status()), error.code(), error.to_string())
}

/// The problem for an application error (statuses and codes shared with HTTP via `app`).
pub fn problem_from_app(error: AppError) -> Problem {
    let status = u32::from(error.status());
    let code = error.code();
    let detail = error.to_string();
    match error {
        AppError::Invalid { field, message } => {
            with_field(problem(status, code, detail), field, message)
        }
        AppError::Domain(domain) => {
            let out = problem(status, code, detail.clone());
            match domain.field() {
                Some(field) => with_field(out, field, detail),
                None => out,
            }
        }
        AppError::VersionConflict { current, .. } => {
            let mut out = problem(status, code, detail);
            out.current_version = Some(current);
            out
        }
        AppError::Store(_) | AppError::Corrupt { .. } => {
            tracing::error!(error = %detail, "internal error");
            problem(
                status,
                code,
                "the server failed to complete the request; it has been logged",
            )
        }
        _ => problem(status, code, detail),
    }
}

fn reply_problem(problem: Problem) -> CommandReply {
    CommandReply {
        outcome: Some(command_reply::Outcome::Problem(problem)),
    }
}

/// Whether a `traceparent` header has the W3C shape `00-<32 hex>-<16 hex>-<2 hex>`.
fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() == 4
        && [2usize, 32, 16, 2]
            .iter()
            .zip(&parts)
            .all(|(len, part)| part.len() == *len && part.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers
        .and_then(|h| h.get(name))
        .map(|value| value.as_str().trim())
}

fn non_empty(text: String) -> Option<String> {
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

/// Decodes `{"type": .., "data": ..}` into a command, naming the JSON path of the first problem
/// as the HTTP API does.
fn decode_command(command_type: &str, data_json: &[u8]) -> Result<Command, Box<Problem>> {
    let data: serde_json::Value = if data_json.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_slice(data_json)
            .map_err(|e| bad_body("data_json".into(), e.to_string()))?
    };
    let body = serde_json::json!({ "type": command_type, "data": data });
    let command = serde_path_to_error::deserialize::<_, Command>(body).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            "body".to_string()
        } else {
            path
        };
        bad_body(field, e.into_inner().to_string())
    })?;
    Ok(command)
}

impl CommandIngress {
    /// An ingress over the application's command service and token verifier.
    ///
    /// Requests are not rate limited until [`CommandIngress::limited_by`] gives a limiter.
    pub fn new(commands: CommandService, auth: Authenticator, config: IngressConfig) -> Self {
        Self {
            commands,
            auth,
            config,
            limiter: Arc::new(RateLimiter::new(RateLimit {
                per_second: 0.0,
                burst: 0.0,
            })),
        }
    }

    /// Rate limits each caller with `limiter`: pass the HTTP API's limiter so that a token has
    /// one budget whichever way its commands come. A refused request gets a 429 problem with
    /// `retry_after_seconds`.
    pub fn limited_by(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// Serves requests until `shutdown` completes, then stops taking new ones and waits for
    /// those in flight to be answered.
    #[tracing::instrument(name = "command_ingress", skip_all, fields(subject = %self.config.subject))]
    pub async fn run(
        self,
        client: Client,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), BusError> {
        let subject = self.config.subject.clone();
        let mut subscriber = match &self.config.queue_group {
            Some(group) => client.queue_subscribe(subject, group.clone()).await,
            None => client.subscribe(subject).await,
        }
        .map_err(|e| BusError::nats("subscribe to commands", e))?;
        tracing::info!("serving commands over NATS");
        let permits = Arc::new(Semaphore::new(self.config.max_in_flight.max(1)));
        let this = Arc::new(self);
        let mut shutdown = pin!(shutdown);
        loop {
            let message = tokio::select! {
                () = &mut shutdown => break,
                message = subscriber.next() => message,
            };
            let Some(message) = message else {
                return Err(BusError::Nats {
                    operation: "receive commands",
                    detail: "the subscription ended (connection closed)".into(),
                });
            };
            let Some(reply_to) = message.reply.clone() else {
                tracing::warn!(subject = %message.subject, "command without a reply subject ignored");
                continue;
            };
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| BusError::nats("limit commands in flight", e))?;
            let this = this.clone();
            let client = client.clone();
            tokio::spawn(async move {
                let reply = this
                    .handle(&message.subject, message.headers.as_ref(), &message.payload)
                    .await;
                this.send_reply(&client, reply_to, reply).await;
                drop(permit);
            });
        }
        if let Err(error) = subscriber.unsubscribe().await {
            tracing::debug!(%error, "unsubscribe at shutdown");
        }
        let max = u32::try_from(this.config.max_in_flight.max(1)).unwrap_or(u32::MAX);
        let _ = permits.acquire_many(max).await;
        tracing::info!("command ingress stopped");
        Ok(())
    }

    async fn send_reply(&self, client: &Client, reply_to: Subject, reply: CommandReply) {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_CONTENT_TYPE, COMMAND_REPLY_CONTENT_TYPE);
        let body = Bytes::from(reply.encode_to_vec());
        if let Err(error) = client.publish_with_headers(reply_to, headers, body).await {
            tracing::warn!(%error, "could not send a command reply");
        }
    }

    /// Answers one request: authenticate, parse, execute, map. Never fails: every problem is a
    /// [`Problem`] reply.
    #[tracing::instrument(name = "nats_command", skip_all, fields(subject = %subject))]
    pub async fn handle(
        &self,
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: &[u8],
    ) -> CommandReply {
        let reply = match self.try_handle(subject, headers, payload).await {
            Ok(result) => CommandReply {
                outcome: Some(command_reply::Outcome::Ok(result)),
            },
            Err(problem) => reply_problem(*problem),
        };
        let outcome = match &reply.outcome {
            Some(command_reply::Outcome::Ok(_)) => "ok".to_string(),
            Some(command_reply::Outcome::Problem(p)) => p.status.to_string(),
            None => "none".to_string(),
        };
        metrics::counter!("planledger_nats_commands_total", "outcome" => outcome).increment(1);
        reply
    }

    async fn try_handle(
        &self,
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: &[u8],
    ) -> Result<CommandResult, Box<Problem>> {
        let principal = self
            .auth
            .authenticate(header(headers, HEADER_AUTHORIZATION))
            .await
            .map_err(problem_from_auth)?;
        if let Err(wait) = self.limiter.check_principal(&principal) {
            metrics::counter!("planledger_nats_rate_limited_total").increment(1);
            let mut refused = problem(429, "rate_limited", RateLimiter::refusal(&principal, wait));
            refused.retry_after_seconds = Some(u32::try_from(wait).unwrap_or(u32::MAX));
            return Err(Box::new(refused));
        }
        if payload.len() > self.config.max_body_bytes {
            return Err(Box::new(problem(
                413,
                "body_too_large",
                format!(
                    "the request body exceeds {} bytes; send a smaller command",
                    self.config.max_body_bytes
                ),
            )));
        }
        let (tenant, subject_plan) = parse_command_subject(subject).ok_or_else(|| {
            with_field(
                problem(
                    400,
                    "invalid_subject",
                    format!("{subject:?} is not a command subject; send to {COMMAND_SUBJECT_PREFIX}.<tenant>.<plan_id>"),
                ),
                "subject",
                "expected planledger.cmd.<tenant>.<plan_id>",
            )
        })?;
        // Tenants never see each other: another tenant's plan does not exist for this token.
        if tenant != principal.tenant {
            return Err(Box::new(problem(
                404,
                "not_found",
                format!("there is no plan {subject_plan:?} in tenant {tenant:?} for this token"),
            )));
        }
        let request = v1::CommandRequest::decode(payload).map_err(|e| {
            bad_body(
                "body".into(),
                format!("not a planledger.v1.CommandRequest: {e}"),
            )
        })?;
        if !request.plan_id.is_empty() && request.plan_id != subject_plan {
            return Err(Box::new(with_field(
                problem(
                    400,
                    "invalid_input",
                    format!(
                        "plan_id: the request names plan {:?} but was sent to plan {subject_plan:?}; leave plan_id empty or make them equal",
                        request.plan_id
                    ),
                ),
                "plan_id",
                "must equal the plan id of the subject",
            )));
        }
        let plan_id = PlanId::new(subject_plan.as_str()).map_err(|e| {
            with_field(
                problem(400, "invalid_id", e.to_string()),
                "plan_id",
                e.to_string(),
            )
        })?;
        let command = decode_command(&request.r#type, &request.data_json)?;
        let traceparent = header(headers, "traceparent")
            .filter(|t| valid_traceparent(t))
            .map(str::to_string);
        let result = self
            .commands
            .execute(
                &principal,
                CommandRequest {
                    plan_id,
                    command,
                    command_id: non_empty(request.command_id),
                    expected_version: request.expected_version,
                    correlation_id: non_empty(request.correlation_id),
                    causation_id: None,
                    traceparent,
                },
            )
            .await
            .map_err(problem_from_app)?;
        Ok(CommandResult {
            plan_id: result.plan_id.to_string(),
            version: result.version(),
            position: result.position(),
            deduplicated: result.deduplicated(),
            events: result
                .events
                .into_envelopes()
                .into_iter()
                .map(envelope_into_proto)
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_command_type_names_the_field() {
        let problem = decode_command("Nope", b"{}").expect_err("unknown type");
        assert_eq!(problem.status, 400);
        assert_eq!(problem.code, "invalid_body");
        assert!(problem.detail.contains("Nope"), "{}", problem.detail);
    }

    #[test]
    fn data_that_is_not_json_is_reported_on_data_json() {
        let problem = decode_command("ArchivePlan", b"{oops").expect_err("bad JSON");
        assert_eq!(problem.errors[0].field, "data_json");
    }

    #[test]
    fn empty_data_means_an_empty_object() {
        assert!(matches!(
            decode_command("ArchivePlan", b""),
            Ok(Command::ArchivePlan(_))
        ));
    }

    #[test]
    fn titles_follow_the_status() {
        assert_eq!(problem(409, "version_conflict", "x").title, "Conflict");
        assert_eq!(
            problem(409, "version_conflict", "x").r#type,
            "/problems/version_conflict"
        );
    }
}
