//! Errors of the projector runtime and of event sources.

use planledger_store::StoreError;

/// What an [`crate::EventSource`] can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The local event log failed.
    #[error("event log: {0}")]
    Store(#[from] StoreError),
    /// The source has no more events and never will (it was closed or its process is stopping).
    #[error("the event source {source_name} is closed")]
    Closed {
        /// Which source.
        source_name: String,
    },
    /// A remote source (e.g. JetStream) failed to deliver or acknowledge.
    #[error("event source {source_name}: {detail}")]
    Transport {
        /// Which source.
        source_name: String,
        /// What went wrong, with what to check.
        detail: String,
    },
    /// A delivered message could not be turned into an envelope.
    #[error(
        "event source {source_name} delivered an unreadable message at position {position}: {detail}"
    )]
    Malformed {
        /// Which source.
        source_name: String,
        /// The position it claimed (0 if unknown).
        position: u64,
        /// What is wrong.
        detail: String,
    },
}

/// Everything the projector runtime and the read-model readers can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The read model's RocksDB failed.
    #[error("read-model database: {0}")]
    Db(#[from] rocksdb::Error),
    /// The event source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A stored read-model record could not be decoded.
    #[error(
        "read model {projection} holds an unreadable record at {key:?}: {detail}; rebuild it with `planledger replay --projection {projection}`"
    )]
    CorruptRecord {
        /// The read model.
        projection: String,
        /// The key, lossily as text.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// An event of a known type could not be decoded (malformed data or a newer schema).
    #[error(
        "event at position {position} ({event_type} v{schema_version}) cannot be projected: {detail}; upgrade this build or repair the log"
    )]
    Undecodable {
        /// Its position.
        position: u64,
        /// Its type.
        event_type: String,
        /// Its schema version.
        schema_version: u32,
        /// Why.
        detail: String,
    },
    /// An event of a type this build does not know (written by a newer writer, or by
    /// something other than Planledger's command path).
    #[error(
        "event at position {position} has type {event_type:?} (v{schema_version}), which this build does not know; upgrade this build, or quarantine the event with `planledger projector quarantine --position {position}`"
    )]
    UnknownEventType {
        /// Its position.
        position: u64,
        /// Its type.
        event_type: String,
        /// Its schema version.
        schema_version: u32,
    },
    /// A plan event on a stream whose id is not `<tenant>/<plan_id>`.
    #[error(
        "event at position {position} ({event_type}) is on stream {stream:?}, which is not a tenant's plan (`<tenant>/<plan_id>`); quarantine it with `planledger projector quarantine --position {position}`"
    )]
    NotAPlanStream {
        /// Its position.
        position: u64,
        /// Its stream id.
        stream: String,
        /// Its type.
        event_type: String,
    },
    /// A quarantine was asked for a position the projector cannot vouch for.
    #[error("cannot quarantine position {position} of {projection}: {reason}")]
    QuarantineRefused {
        /// The read model.
        projection: String,
        /// The position asked for.
        position: u64,
        /// Why, with what to do instead.
        reason: String,
    },
    /// The source skipped a position: applying on would lose an event.
    #[error(
        "projection {projection} expected position {expected} next but the source delivered {delivered}; the source lost events (check the JetStream stream's retention)"
    )]
    Gap {
        /// The read model.
        projection: String,
        /// The position that should have come next.
        expected: u64,
        /// The position that came.
        delivered: u64,
    },
    /// No projector of that name exists.
    #[error("there is no projection named {name:?}; known projections: {known}")]
    UnknownProjection {
        /// The name asked for.
        name: String,
        /// The names that exist, comma-separated.
        known: String,
    },
    /// The projector's runtime has stopped (shutdown or a fatal error).
    #[error(
        "the projector {projection} is not running; see GET /v1/projections for its last error"
    )]
    Stopped {
        /// The read model.
        projection: String,
    },
    /// Another process holds the read model's database.
    #[error(
        "the read model in {path} is in use by another process (is `planledger serve` or a projector running?): {detail}"
    )]
    Locked {
        /// The database directory.
        path: String,
        /// RocksDB's message.
        detail: String,
    },
    /// A blocking task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl ProjectionError {
    /// Whether this is an event the projector cannot apply (a poison event): the projector
    /// stops at it until an operator quarantines it or upgrades the build, instead of failing
    /// for good or skipping it.
    pub fn is_poison(&self) -> bool {
        matches!(
            self,
            Self::Undecodable { .. } | Self::UnknownEventType { .. } | Self::NotAPlanStream { .. }
        )
    }
}
