//! The application layer's errors: one enum the HTTP and NATS doors both map.

use planledger_domain::DomainError;
use planledger_store::StoreError;

use crate::auth::AuthError;

/// Everything a command or query can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Authentication or authorization failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The input is malformed (field-level).
    #[error("{field}: {message}")]
    Invalid {
        /// The field at fault.
        field: String,
        /// What is wrong and what to send instead.
        message: String,
    },
    /// A domain rule rejected the command.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The plan (or other resource) does not exist for this tenant.
    #[error("{0}")]
    NotFound(String),
    /// The plan is not at the version the client expected.
    #[error(
        "plan {plan_id} is at version {current}, not {expected}; reload it and retry with If-Match: \"{current}\""
    )]
    VersionConflict {
        /// The plan.
        plan_id: String,
        /// What the client expected.
        expected: u64,
        /// The plan's current version.
        current: u64,
    },
    /// An idempotency key was reused for another command.
    #[error(
        "Idempotency-Key {key:?} was already used for a different command; send a new key for a new command"
    )]
    KeyReused {
        /// The reused key.
        key: String,
    },
    /// A read waited for a position that was not reached in time.
    #[error(
        "the read model has not reached position {wanted} yet (it is at {current}); retry shortly"
    )]
    NotCaughtUp {
        /// The position asked for.
        wanted: u64,
        /// The position reached.
        current: u64,
    },
    /// The event log failed.
    #[error("event log: {0}")]
    Store(#[from] StoreError),
    /// A stored event could not be read back as a domain event.
    #[error("stored event at position {position} cannot be read: {message}")]
    Corrupt {
        /// Where.
        position: u64,
        /// What.
        message: String,
    },
}
