//! The command path: authorize, load the plan, decide, append with the expected version, retry
//! once on a concurrent writer, remember the new state.

use std::sync::Arc;

use planledger_domain::{Command, PlanId, decide, evolve};
use planledger_store::{
    AppendMeta, AppendOutcome, AppendRequest, CommandRef, ExpectedVersion, NewEvent, StoreError,
    Version,
};
use sha2::{Digest, Sha256};

use crate::AppError;
use crate::auth::{Permission, Principal};
use crate::plans::{LoadedPlan, PlanLoader, stream_of};

/// Longest accepted idempotency key.
pub const MAX_COMMAND_ID_LEN: usize = 128;

/// A command as it arrives at a door (HTTP or NATS), already parsed.
#[derive(Clone, Debug)]
pub struct CommandRequest {
    /// The plan it targets.
    pub plan_id: PlanId,
    /// The command.
    pub command: Command,
    /// Client-chosen command id (`Idempotency-Key`); a repeat returns the first result.
    pub command_id: Option<String>,
    /// The version the client saw (`If-Match`); a mismatch is a conflict, never retried.
    pub expected_version: Option<u64>,
    /// Correlation id for tracing.
    pub correlation_id: Option<String>,
    /// Causation id (the message that caused this command).
    pub causation_id: Option<String>,
    /// W3C trace context.
    pub traceparent: Option<String>,
}

impl CommandRequest {
    /// `command` on `plan_id` with nothing else given: no command id, no expected version, no
    /// tracing context.
    pub fn new(plan_id: PlanId, command: Command) -> Self {
        Self {
            plan_id,
            command,
            command_id: None,
            expected_version: None,
            correlation_id: None,
            causation_id: None,
            traceparent: None,
        }
    }
}

/// What an accepted command produced.
#[derive(Clone, Debug)]
pub struct CommandResult {
    /// The plan.
    pub plan_id: PlanId,
    /// The stored events: their envelopes (built when asked for) and, for a fresh append,
    /// each one's stored JSON, byte for byte as in the log.
    pub events: AppendOutcome,
    /// Cluster mode: the partition whose log holds the plan.
    pub partition: Option<u32>,
}

impl CommandResult {
    /// The plan's version after the command.
    pub fn version(&self) -> u64 {
        self.events.version().get()
    }

    /// The global position of the last event written.
    pub fn position(&self) -> u64 {
        self.events.position().get()
    }

    /// True when this was a repeat of an earlier command id.
    pub fn deduplicated(&self) -> bool {
        self.events.deduplicated
    }

    /// The bookmark a read-model query waits for to see this command's effect.
    pub fn bookmark(&self) -> crate::Bookmark {
        crate::Bookmark::at(crate::LogRef::of(self.partition), self.position())
    }
}

/// Runs commands. Shared by the HTTP API and the NATS ingress.
#[derive(Clone, Debug)]
pub struct CommandService {
    plans: Arc<PlanLoader>,
}

/// Whether a client's command id (`Idempotency-Key`) is one the log accepts.
fn is_valid_command_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_COMMAND_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

pub(crate) fn validate_command_id(id: &str) -> Result<(), AppError> {
    if !is_valid_command_id(id) {
        return Err(AppError::Invalid {
            field: "Idempotency-Key".into(),
            message: format!(
                "{id:?} is not a valid command id: use 1 to {MAX_COMMAND_ID_LEN} printable ASCII characters, e.g. a UUID"
            ),
        });
    }
    Ok(())
}

/// A digest of what the command asks for, so a reused key with other content is caught.
fn fingerprint(plan_id: &PlanId, command: &Command) -> String {
    let body = serde_json::to_vec(command).expect("commands always serialize");
    let mut hasher = Sha256::new();
    hasher.update(plan_id.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(&body);
    hex::encode(hasher.finalize())
}

impl CommandService {
    /// A service over the given plan loader.
    pub fn new(plans: Arc<PlanLoader>) -> Self {
        Self { plans }
    }

    /// Runs one command for `principal`.
    #[tracing::instrument(
        name = "command",
        skip_all,
        fields(
            command = request.command.name(),
            plan_id = %request.plan_id,
            tenant = %principal.tenant,
            // `None` leaves the field out of the span (an empty string would still be
            // formatted into every command's span). A command id the request is refused for
            // is left out too: the log shows only ids the log would store.
            command_id = request.command_id.as_deref().filter(|id| is_valid_command_id(id)),
            correlation_id = request.correlation_id.as_deref(),
        )
    )]
    pub async fn execute(
        &self,
        principal: &Principal,
        request: CommandRequest,
    ) -> Result<CommandResult, AppError> {
        self.execute_decided_at(principal, request, None).await
    }

    /// Runs one command as decided at `decided_at` (now when `None`): the time its events carry
    /// as their decision time (`at`), while the log still records them at the time of the
    /// append. Seeding a plan's past (the demo's plan) uses it; the doors never do.
    pub async fn execute_decided_at(
        &self,
        principal: &Principal,
        request: CommandRequest,
        decided_at: Option<jiff::Timestamp>,
    ) -> Result<CommandResult, AppError> {
        let started = std::time::Instant::now();
        let name = request.command.name();
        let result = self.run(principal, request, decided_at).await;
        let outcome = match &result {
            Ok(r) if r.deduplicated() => "deduplicated",
            Ok(_) => "accepted",
            Err(AppError::Domain(_) | AppError::Invalid { .. }) => "rejected",
            Err(AppError::VersionConflict { .. }) => "conflict",
            Err(_) => "failed",
        };
        metrics::counter!("planledger_commands_total", "command" => name, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("planledger_command_seconds", "command" => name)
            .record(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            tracing::debug!(%error, outcome, "command not accepted");
        }
        result
    }

    async fn run(
        &self,
        principal: &Principal,
        mut request: CommandRequest,
        decided_at: Option<jiff::Timestamp>,
    ) -> Result<CommandResult, AppError> {
        principal.require(Permission::for_command(&request.command))?;
        // The plan id is the path's; a body that names another plan is a mistake worth reporting.
        if let Command::CreatePlan(create) = &mut request.command {
            match &create.plan_id {
                None => create.plan_id = Some(request.plan_id.clone()),
                Some(id) if *id == request.plan_id => {}
                Some(id) => {
                    return Err(AppError::Invalid {
                        field: "data.plan_id".into(),
                        message: format!(
                            "the body names plan {id} but the request targets plan {}; omit data.plan_id or make them equal",
                            request.plan_id
                        ),
                    });
                }
            }
        }
        let stream = stream_of(&principal.tenant, &request.plan_id)?;
        let store = self.plans.store();
        // Only a client's idempotency key can be repeated, so only then is the content digested.
        let fingerprint = request
            .command_id
            .as_ref()
            .map(|_| fingerprint(&request.plan_id, &request.command));
        // Idempotency keys are unique per tenant on one node, and per plan in cluster mode,
        // where each partition's log keeps the records of its own plans.
        let scope = if store.is_cluster_cache() {
            stream.as_str().to_owned()
        } else {
            principal.tenant.clone()
        };
        let command_id = match &request.command_id {
            Some(id) => {
                validate_command_id(id)?;
                // A repeat is answered from the log before deciding: the plan may have moved on.
                if let Some(first) = store.lookup_command(&scope, id)? {
                    if first.stream != stream || first.fingerprint != fingerprint {
                        return Err(AppError::KeyReused { key: id.clone() });
                    }
                    // The first append may still be waiting for its fsync: never call a
                    // repeat done before the original is on disk.
                    if let Some(last) = first.envelopes.last() {
                        store.wait_durable(last.position).await?;
                    }
                    return Ok(self.result(
                        &request.plan_id,
                        AppendOutcome::from_envelopes(first.envelopes, Vec::new(), true),
                    ));
                }
                id.clone()
            }
            None => uuid::Uuid::now_v7().to_string(),
        };

        let mut at_least = Version(request.expected_version.unwrap_or(0));
        // One retry when another writer got in between, unless the client pinned a version.
        for attempt in 0..2 {
            let loaded = self.plans.current(&stream, at_least)?;
            if let Some(expected) = request.expected_version
                && expected != loaded.version.get()
            {
                return Err(AppError::VersionConflict {
                    plan_id: request.plan_id.to_string(),
                    expected,
                    current: loaded.version.get(),
                });
            }
            let now = jiff::Timestamp::now();
            let decided = decided_at.unwrap_or(now);
            assert!(decided <= now, "a command is never decided in the future");
            let events = decide(&loaded.plan, &request.command, decided)?;
            let new_events = events
                .iter()
                .map(|event| {
                    NewEvent::new(
                        event.event_type(),
                        event.schema_version(),
                        now,
                        event.to_raw_data(),
                    )
                })
                .collect();
            let append = AppendRequest {
                stream: stream.clone(),
                expected: ExpectedVersion::Exact(loaded.version),
                events: new_events,
                meta: AppendMeta {
                    actor: principal.subject.clone(),
                    command: Some(CommandRef {
                        scope: scope.clone(),
                        id: command_id.clone(),
                        fingerprint: fingerprint.clone(),
                        remember: request.command_id.is_some(),
                    }),
                    correlation_id: request.correlation_id.clone(),
                    causation_id: request.causation_id.clone(),
                    traceparent: request.traceparent.clone(),
                },
            };
            match store.append(append).await {
                Ok(outcome) if outcome.deduplicated => {
                    return Ok(self.result(&request.plan_id, outcome));
                }
                Ok(outcome) => {
                    let before = loaded.version;
                    let mut plan = self.plans.take_for_update(&stream, loaded);
                    for event in &events {
                        plan = evolve(plan, event);
                    }
                    let after = LoadedPlan {
                        plan: Arc::new(plan),
                        version: outcome.version(),
                    };
                    self.plans.remember(&stream, after.clone());
                    if let Err(error) = self.plans.maybe_snapshot(&stream, before, &after) {
                        tracing::warn!(%error, "snapshot not written; loads replay further");
                    }
                    return Ok(self.result(&request.plan_id, outcome));
                }
                Err(StoreError::Conflict {
                    current,
                    log_position,
                    ..
                }) => {
                    if request.expected_version.is_some() || attempt == 1 {
                        return Err(AppError::VersionConflict {
                            plan_id: request.plan_id.to_string(),
                            expected: loaded.version.get(),
                            current: current.get(),
                        });
                    }
                    tracing::debug!(current = current.get(), "concurrent writer; retrying once");
                    metrics::counter!("planledger_command_retries_total").increment(1);
                    // The append that beat this one may not be applied yet (cluster mode):
                    // reloading before it is would only conflict again.
                    store.wait_applied(log_position).await;
                    at_least = current;
                }
                Err(StoreError::CommandIdReused { .. }) => {
                    return Err(AppError::KeyReused { key: command_id });
                }
                Err(other) => return Err(other.into()),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    fn result(&self, plan_id: &PlanId, events: AppendOutcome) -> CommandResult {
        CommandResult {
            plan_id: plan_id.clone(),
            events,
            partition: self.plans.store().partition(),
        }
    }

    /// The plan loader behind this service.
    pub fn plans(&self) -> &Arc<PlanLoader> {
        &self.plans
    }
}
