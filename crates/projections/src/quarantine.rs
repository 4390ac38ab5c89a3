//! Poison events and their quarantine.
//!
//! A poison event is one a projector cannot apply: a type this build does not know (a newer
//! writer), a schema version newer than it knows, data that does not decode, or a plan event on
//! a stream that is not a plan's. The runtime never skips one on its own: it stops at it
//! ([`Poison`], shown in `GET /v1/projections` and `/readyz`) and waits. An operator either
//! upgrades the build or quarantines the event: a [`Quarantine`] record, kept durably in the
//! read model's database beside every generation, after which that one position is passed over
//! by the live model and by every rebuild.

use jiff::Timestamp;
use planledger_store::Envelope;
use serde::{Deserialize, Serialize};

use crate::source::Delivery;
use crate::{ProjectionError, ReadModelDb};

/// The event a projector is stopped at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Poison {
    /// Its global position.
    pub position: u64,
    /// Its stream id.
    pub stream: String,
    /// Its event id.
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// Its schema version.
    pub schema_version: u32,
    /// Why it cannot be applied.
    pub error: String,
    /// When the projector stopped at it.
    pub detected_at: Timestamp,
}

impl Poison {
    /// The poison record for `delivery`, which failed with `error`.
    pub fn new(delivery: &Delivery, error: &ProjectionError) -> Self {
        Self::of(&delivery.envelope, error.to_string())
    }

    /// A description of `envelope` with `error` as the reason it is (or would be) refused.
    pub fn of(envelope: &Envelope, error: String) -> Self {
        Self {
            position: envelope.position.get(),
            stream: envelope.stream.as_str().to_owned(),
            event_id: envelope.event_id.to_string(),
            event_type: envelope.event_type.clone(),
            schema_version: envelope.schema_version,
            error,
            detected_at: Timestamp::now(),
        }
    }
}

/// An operator's decision to pass over one event: who, when, why, and what the event was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quarantine {
    /// The position passed over.
    pub position: u64,
    /// Its stream id.
    pub stream: String,
    /// Its event id.
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// Its schema version.
    pub schema_version: u32,
    /// Why the operator quarantined it.
    pub reason: String,
    /// Who did (the token's subject over HTTP, `--by` on the command line).
    pub by: String,
    /// When.
    pub at: Timestamp,
    /// The error the projector had stopped with, if it had stopped at this event.
    pub error: Option<String>,
}

/// What an operator asks for: quarantine `position`, for `reason`, as `by`.
#[derive(Clone, Debug)]
pub struct QuarantineRequest {
    /// The position to pass over.
    pub position: u64,
    /// Why.
    pub reason: String,
    /// Who asks.
    pub by: String,
}

impl QuarantineRequest {
    /// The record of this request for the event described by `poison`.
    pub fn record(&self, poison: &Poison) -> Quarantine {
        Quarantine {
            position: self.position,
            stream: poison.stream.clone(),
            event_id: poison.event_id.clone(),
            event_type: poison.event_type.clone(),
            schema_version: poison.schema_version,
            reason: self.reason.clone(),
            by: self.by.clone(),
            at: Timestamp::now(),
            error: Some(poison.error.clone()),
        }
    }
}

/// Quarantines `request.position` in a read model whose projector is not running (the
/// command line's `planledger projector quarantine`). The event is described by the poison
/// record the projector left when it stopped at it, else by `from_log` (the envelope at that
/// position, when the caller has the log); without either it is refused, since a quarantine
/// must say what it passes over.
pub fn quarantine_offline(
    db: &ReadModelDb,
    request: &QuarantineRequest,
    from_log: Option<&Envelope>,
) -> Result<Quarantine, ProjectionError> {
    let refuse = |reason: String| ProjectionError::QuarantineRefused {
        projection: db.name().to_owned(),
        position: request.position,
        reason,
    };
    if let Some(existing) = db.quarantines().get(&request.position) {
        return Err(refuse(format!(
            "it is already quarantined (by {} at {}: {})",
            existing.by, existing.at, existing.reason
        )));
    }
    let stopped_at = db.poison()?;
    let described = match (&stopped_at, from_log) {
        (Some(poison), _) if poison.position == request.position => poison.clone(),
        (_, Some(envelope)) if envelope.position.get() == request.position => {
            let mut ahead = Poison::of(envelope, String::new());
            ahead.error = match crate::decode::decode_event(envelope) {
                Err(error) => error.to_string(),
                Ok(_) => "none: this build can apply the event; it is quarantined by choice".into(),
            };
            ahead
        }
        (Some(poison), _) => {
            return Err(refuse(format!(
                "the projector stopped at position {}, not {}, and the event log is not at hand to describe {}",
                poison.position, request.position, request.position
            )));
        }
        (None, _) => {
            return Err(refuse(
                "the projector is not stopped at an event, and the event log is not at hand to describe it".into(),
            ));
        }
    };
    let record = request.record(&described);
    db.quarantine(record.clone())?;
    if stopped_at.is_some_and(|p| p.position == request.position) {
        db.set_poison(None)?;
    }
    Ok(record)
}
