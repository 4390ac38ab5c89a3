//! The application layer's errors: one enum the HTTP and NATS doors both map.

use planledger_domain::{DomainError, ErrorKind};
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
    /// A quarantine was refused: the projector is not stopped at that position.
    #[error("{0}")]
    QuarantineRefused(String),
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

impl AuthError {
    /// The HTTP-equivalent status every door answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Forbidden { .. } => 403,
            _ => 401,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Forbidden { .. } => "forbidden",
            Self::MissingToken => "missing_token",
            _ => "invalid_token",
        }
    }
}

impl AppError {
    /// The HTTP-equivalent status every door (HTTP, NATS) answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Auth(auth) => auth.status(),
            Self::Invalid { .. } => 400,
            Self::Domain(domain) => match domain.kind() {
                ErrorKind::Invalid => 400,
                ErrorKind::Conflict => 422,
                ErrorKind::NotFound => 404,
            },
            Self::NotFound(_) => 404,
            Self::VersionConflict { .. } => 409,
            Self::KeyReused { .. } => 422,
            Self::QuarantineRefused(_) => 409,
            Self::NotCaughtUp { .. } => 503,
            // The log refused or could not confirm the write: nothing was answered as stored,
            // so the client may retry once the service is healthy again (after reading the
            // plan, or with the same Idempotency-Key, when the outcome is unknown).
            Self::Store(
                StoreError::WriteFailed(_)
                | StoreError::WriterStopped
                | StoreError::OutcomeUnknown(_)
                | StoreError::StorageFull(_)
                | StoreError::PartitionMoved
                | StoreError::PartitionUnavailable(_)
                | StoreError::PartitionHalted { .. },
            ) => 503,
            Self::Store(_) | Self::Corrupt { .. } => 500,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Auth(auth) => auth.code(),
            Self::Invalid { .. } => "invalid_input",
            Self::Domain(domain) => domain.code(),
            Self::NotFound(_) => "not_found",
            Self::VersionConflict { .. } => "version_conflict",
            Self::KeyReused { .. } => "idempotency_key_reused",
            Self::NotCaughtUp { .. } => "not_caught_up",
            Self::QuarantineRefused(_) => "quarantine_refused",
            Self::Store(StoreError::WriteFailed(_) | StoreError::WriterStopped) => {
                "log_unavailable"
            }
            Self::Store(StoreError::OutcomeUnknown(_)) => "log_outcome_unknown",
            Self::Store(StoreError::StorageFull(_)) => "storage_full",
            Self::Store(StoreError::PartitionMoved) => "partition_moved",
            Self::Store(
                StoreError::PartitionUnavailable(_) | StoreError::PartitionHalted { .. },
            ) => "partition_unavailable",
            Self::Store(_) | Self::Corrupt { .. } => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_the_log_could_not_confirm_is_unavailable_not_internal() {
        let failed = AppError::Store(StoreError::WriteFailed("fsync: I/O error".into()));
        assert_eq!((failed.status(), failed.code()), (503, "log_unavailable"));
        let stopped = AppError::Store(StoreError::WriterStopped);
        assert_eq!((stopped.status(), stopped.code()), (503, "log_unavailable"));
        let unknown = AppError::Store(StoreError::OutcomeUnknown("fsync: I/O error".into()));
        assert_eq!(
            (unknown.status(), unknown.code()),
            (503, "log_outcome_unknown")
        );
        let full = AppError::Store(StoreError::StorageFull("disk full".into()));
        assert_eq!((full.status(), full.code()), (503, "storage_full"));
        let corrupt = AppError::Store(StoreError::EmptyAppend);
        assert_eq!((corrupt.status(), corrupt.code()), (500, "internal"));
    }
}
