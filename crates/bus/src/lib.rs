//! Planledger on NATS: the outbox relay, stream helpers and command ingress.
//!
//! - [`relay`]: tails the event log (the outbox) and publishes every event to the JetStream
//!   stream `PLANLEDGER_EVENTS` exactly once and in position order, with the protobuf body of
//!   `proto/planledger/v1/envelope.proto`.
//! - [`envelope`]: conversions between the stored envelope and the wire envelope.
//! - [`connection`]: connecting to NATS and creating/updating the event stream.
//! - [`ingress`]: commands over NATS request/reply (`planledger.cmd.<tenant>.<plan_id>`),
//!   handed to the application's command service.
//! - [`source`]: the JetStream projection source (a durable pull consumer positioned from the
//!   read model's checkpoint) behind `planledger projector --nats`.
//! - [`partition_log`]: cluster mode's log: [`JetStreamCommitter`], the store's committer over
//!   one partition's JetStream stream `PLANLEDGER_P<nn>` (atomic batches, the fence).
//! - [`cluster`]: `planledger cluster init`: the cluster's configuration and partition streams.
//! - `bench` (only with the `bench` feature, which only the `planledger-bench` crate enables):
//!   what the relay benchmark needs of the relay's internals.
//!
//! What this crate must never do: make a command wait for NATS (the relay only reads the
//! log, and commands only write it), write to the event log, or hold business rules: commands
//! arriving over NATS are handed to the same application service the HTTP API uses.

#![warn(missing_docs)]

#[cfg(feature = "bench")]
pub mod bench;
pub mod cluster;
mod command_headers;
pub mod connection;
pub mod envelope;
pub mod event_stream_log;
pub mod ingress;
pub mod leases;
pub mod partition_feed;
pub mod partition_log;
mod reader;
pub mod relay;
pub mod source;

pub use cluster::{
    ClusterConfig, PartitionEntry, Provisioned, ServerDurability, provision, read_cluster_config,
    wait_for_leaders,
};
pub use connection::{StreamSpec, connect, ensure_stream, find_stream, keeps_everything};
pub use envelope::{
    EnvelopeDecodeError, envelope_from_proto, envelope_into_proto, envelope_to_proto,
    header_position,
};
pub use event_stream_log::{CaughtUp, EventStreamLog};
pub use ingress::{
    CommandIngress, IngressConfig, refusal_from_proto, refusal_into_proto, refusal_reply,
    reply_message,
};
pub use partition_log::{
    AtomicBatchError, BatchReplies, JetStreamCommitter, PartitionLogConfig, publish_atomic_batch,
};
pub use relay::{
    HaltReason, Relay, RelayConfig, RelayState, RelayStatus, RelayStatusHandle, StreamReset,
    reset_stream,
};
pub use source::{JetStreamSource, JetStreamSourceConfig};

/// Errors of the bus, as variants a caller can match on.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// A setting is out of range.
    #[error("invalid bus setting {field}: it {rule}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// The rule it broke.
        rule: &'static str,
    },
    /// The NATS server could not be reached.
    #[error(
        "cannot connect to NATS at {url}: {source}; is nats-server running with JetStream (-js)?"
    )]
    Connect {
        /// The URL tried.
        url: String,
        /// Why it failed.
        source: async_nats::ConnectError,
    },
    /// A NATS or JetStream operation failed.
    #[error("NATS {operation} failed: {detail}")]
    Nats {
        /// What was being done.
        operation: &'static str,
        /// The error NATS reported.
        detail: String,
    },
    /// The event log failed.
    #[error("event log: {0}")]
    Store(#[from] planledger_store::StoreError),
    /// A partition's stream does not exist; nothing but `planledger cluster init` creates it.
    #[error(
        "the partition stream {stream} does not exist; create the cluster's streams with \
         `planledger cluster init`"
    )]
    PartitionStreamMissing {
        /// The stream's name.
        stream: String,
    },
    /// Partition streams still had no leader when `cluster init` stopped waiting.
    #[error(
        "the partition streams {} have no leader after {waited}: the NATS cluster may lack \
         a quorum of servers (commands to them are refused until they have one); check the \
         servers and run `planledger cluster init` again to wait once more",
        streams.join(", ")
    )]
    StreamsWithoutLeader {
        /// The streams without a leader.
        streams: Vec<String>,
        /// How long it waited (`60s`, `500ms`).
        waited: String,
    },
    /// A partition's stream exists but is not fit to be a partition log.
    #[error("the partition stream {stream} is not configured as a partition log: {detail}")]
    PartitionStreamMisconfigured {
        /// The stream's name.
        stream: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The cluster was created with another partition count.
    #[error(
        "the cluster was created with {existing} partitions, not {asked}; the count is fixed \
         for the life of a cluster"
    )]
    ClusterMismatch {
        /// The count in `planledger_cluster`.
        existing: u32,
        /// The count asked for.
        asked: u32,
    },
    /// The cluster's configuration in `planledger_cluster` cannot be read.
    #[error(
        "the cluster configuration (bucket planledger_cluster, key config) is invalid: {detail}"
    )]
    ClusterConfigInvalid {
        /// What is wrong with it.
        detail: String,
    },
    /// The NATS servers do not make every JetStream write durable before acknowledging it.
    #[error("refusing to put partition logs on these NATS servers: {detail}")]
    NotDurable {
        /// Which servers, and why.
        detail: String,
    },
    /// An event cannot be turned into a partition log message, or a message into an event.
    #[error("event at position {position}: {detail}")]
    InvalidEvent {
        /// Its position (the stream sequence).
        position: u64,
        /// What is wrong.
        detail: String,
    },
    /// The relay stopped, so a wait for its progress cannot end.
    #[error("the relay has stopped")]
    RelayGone,
}

impl BusError {
    /// Wraps a NATS error with the operation that failed.
    pub fn nats(operation: &'static str, error: impl std::fmt::Display) -> Self {
        Self::Nats {
            operation,
            detail: error.to_string(),
        }
    }
}
