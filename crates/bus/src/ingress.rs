//! Command ingress over NATS request/reply: `planledger.cmd.<tenant>.<plan_id>`.
//!
//! A request is a protobuf `planledger.v1.CommandRequest` (or, with `Content-Type:
//! application/json`, the HTTP body `{"type", "data"}`) with the header
//! `Authorization: Bearer <jwt>`; the reply is a `planledger.v1.CommandReply`. This is a door,
//! like the HTTP API: it authenticates and extracts the body and metadata, and hands them to
//! the one command door ([`planledger_app::door`]) the HTTP API calls too, which decodes,
//! checks, runs and refuses; a [`Refusal`] becomes the reply's [`Problem`] field for field. It
//! holds no rules of its own.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;

use async_nats::{Client, HeaderMap, Subject};
use bytes::Bytes;
use futures::StreamExt as _;
use planledger_app::door::{self, CommandBody, CommandInput, IfMatch};
use planledger_app::{Authenticator, CommandService, RateLimit, RateLimiter, Refusal};
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

/// The reply's problem for a refusal: every field of the refusal, so a node that forwards a
/// command can relay the answer unchanged ([`refusal_from_proto`] reads it back).
pub fn refusal_into_proto(refusal: Refusal) -> Problem {
    Problem {
        status: u32::from(refusal.status),
        r#type: refusal.kind(),
        title: refusal.title,
        detail: refusal.detail,
        errors: refusal
            .errors
            .into_iter()
            .map(|e| FieldError {
                field: e.field,
                message: e.message,
            })
            .collect(),
        current_version: refusal.current_version,
        code: refusal.code,
        retry_after_seconds: refusal.retry_after,
        current_position: refusal.current_position,
    }
}

/// The refusal a reply's problem carries (its `type` is derived from the code).
pub fn refusal_from_proto(problem: Problem) -> Refusal {
    Refusal {
        status: u16::try_from(problem.status).unwrap_or(500),
        code: problem.code,
        title: problem.title,
        detail: problem.detail,
        errors: problem
            .errors
            .into_iter()
            .map(|e| planledger_app::FieldError {
                field: e.field,
                message: e.message,
            })
            .collect(),
        current_version: problem.current_version,
        current_position: problem.current_position,
        retry_after: problem.retry_after_seconds,
    }
}

/// The headers and body of a reply message carrying `reply`.
pub fn reply_message(reply: &CommandReply) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_CONTENT_TYPE, COMMAND_REPLY_CONTENT_TYPE);
    (headers, Bytes::from(reply.encode_to_vec()))
}

/// A reply that refuses the command with `refusal`.
pub fn refusal_reply(refusal: Refusal) -> CommandReply {
    CommandReply {
        outcome: Some(command_reply::Outcome::Problem(refusal_into_proto(refusal))),
    }
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers
        .and_then(|h| h.get(name))
        .map(|value| value.as_str())
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.trim().is_empty()).then_some(text)
}

/// A piece of metadata sent as a request field or as a header, refused when sent both ways.
// A refusal is the cold path, and the door's plain serde type (see `app::door`).
#[allow(clippy::result_large_err)]
fn one_way<'a>(
    field_name: &str,
    field: Option<&'a str>,
    header_name: &str,
    header: Option<&'a str>,
) -> Result<Option<&'a str>, Refusal> {
    match (field, header) {
        (Some(_), Some(_)) => Err(sent_both_ways(field_name, header_name)),
        (field, header) => Ok(field.or(header)),
    }
}

fn sent_both_ways(field_name: &str, header_name: &str) -> Refusal {
    Refusal::new(
        400,
        "invalid_input",
        format!("{field_name}: sent both as the request field and as the header {header_name}; send it one way"),
    )
    .with_field(field_name, format!("leave it empty when sending the {header_name} header"))
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
        let (headers, body) = reply_message(&reply);
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
            Err(refusal) => CommandReply {
                outcome: Some(command_reply::Outcome::Problem(refusal_into_proto(refusal))),
            },
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
    ) -> Result<CommandResult, Refusal> {
        let principal = self
            .auth
            .authenticate(header(headers, HEADER_AUTHORIZATION).map(str::trim))
            .await?;
        if let Err(wait) = self.limiter.check_principal(&principal) {
            metrics::counter!("planledger_nats_rate_limited_total").increment(1);
            return Err(Refusal::rate_limited(&principal, wait));
        }
        if payload.len() > self.config.max_body_bytes {
            return Err(Refusal::body_too_large(self.config.max_body_bytes));
        }
        let (tenant, subject_plan) = parse_command_subject(subject).ok_or_else(|| {
            Refusal::new(
                400,
                "invalid_subject",
                format!("{subject:?} is not a command subject; send to {COMMAND_SUBJECT_PREFIX}.<tenant>.<plan_id>"),
            )
            .with_field("subject", "expected planledger.cmd.<tenant>.<plan_id>")
        })?;
        // Tenants never see each other: another tenant's plan does not exist for this token.
        if tenant != principal.tenant {
            return Err(Refusal::new(
                404,
                "not_found",
                format!("there is no plan {subject_plan:?} in tenant {tenant:?} for this token"),
            ));
        }
        let json = header(headers, HEADER_CONTENT_TYPE)
            .is_some_and(|t| t.trim_start().starts_with("application/json"));
        // The HTTP body as is, or the protobuf request.
        let request = if json {
            v1::CommandRequest::default()
        } else {
            v1::CommandRequest::decode(payload).map_err(|e| {
                Refusal::invalid_body("body", format!("not a planledger.v1.CommandRequest: {e}"))
            })?
        };
        if !request.plan_id.is_empty() && request.plan_id != subject_plan {
            return Err(Refusal::new(
                400,
                "invalid_input",
                format!(
                    "plan_id: the request names plan {:?} but was sent to plan {subject_plan:?}; leave plan_id empty or make them equal",
                    request.plan_id
                ),
            )
            .with_field("plan_id", "must equal the plan id of the subject"));
        }
        let body = if json {
            CommandBody::Json(payload)
        } else {
            CommandBody::Parts {
                command_type: &request.r#type,
                data_json: &request.data_json,
            }
        };
        let if_match = match (
            request.expected_version,
            header(headers, door::HEADER_IF_MATCH),
        ) {
            (Some(_), Some(_)) => {
                return Err(sent_both_ways("expected_version", door::HEADER_IF_MATCH));
            }
            (Some(version), None) => Some(IfMatch::Version(version)),
            (None, text) => text.map(IfMatch::Header),
        };
        let input = CommandInput {
            plan_id: &subject_plan,
            body,
            idempotency_key: one_way(
                "command_id",
                non_empty(&request.command_id),
                door::HEADER_IDEMPOTENCY_KEY,
                header(headers, door::HEADER_IDEMPOTENCY_KEY),
            )?,
            if_match,
            traceparent: header(headers, door::HEADER_TRACEPARENT),
            causation_id: one_way(
                "causation_id",
                non_empty(&request.causation_id),
                door::HEADER_CAUSATION_ID,
                header(headers, door::HEADER_CAUSATION_ID),
            )?,
            correlation_id: one_way(
                "correlation_id",
                non_empty(&request.correlation_id),
                door::HEADER_CORRELATION_ID,
                header(headers, door::HEADER_CORRELATION_ID),
            )?,
        };
        let result = door::execute(&self.commands, &principal, input).await?;
        Ok(CommandResult {
            plan_id: result.plan_id.to_string(),
            version: result.version(),
            position: result.position(),
            deduplicated: result.deduplicated(),
            partition: result.partition,
            bookmark: result.bookmark().to_string(),
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
    fn a_refusal_round_trips_through_the_reply_losslessly() {
        let mut refusal = Refusal::new(503, "storage_full", "the disk is full")
            .with_field("data.note", "too long")
            .retry_after(30);
        refusal.current_version = Some(7);
        refusal.current_position = Some(42);
        let problem = refusal_into_proto(refusal.clone());
        assert_eq!(problem.r#type, "/problems/storage_full");
        let reply = CommandReply {
            outcome: Some(command_reply::Outcome::Problem(problem)),
        };
        let decoded = CommandReply::decode(reply.encode_to_vec().as_slice()).expect("decodes");
        match decoded.outcome {
            Some(command_reply::Outcome::Problem(problem)) => {
                assert_eq!(refusal_from_proto(problem), refusal);
            }
            other => panic!("expected a problem, got {other:?}"),
        }
    }

    #[test]
    fn metadata_sent_both_ways_is_refused() {
        let refusal =
            one_way("command_id", Some("a"), "Idempotency-Key", Some("a")).expect_err("both ways");
        assert_eq!(refusal.errors[0].field, "command_id");
        assert_eq!(
            one_way("command_id", None, "Idempotency-Key", Some("a")),
            Ok(Some("a"))
        );
    }
}
