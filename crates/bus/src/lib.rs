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
//! - [`bench`]: the relay benchmark behind `planledger bench relay`.
//!
//! What this crate must never do: make a command wait for NATS (the relay only reads the
//! log, and commands only write it), write to the event log, or hold business rules: commands
//! arriving over NATS are handed to the same application service the HTTP API uses.

#![warn(missing_docs)]

pub mod bench;
pub mod connection;
pub mod envelope;
pub mod ingress;
mod reader;
pub mod relay;
pub mod source;

pub use bench::{RelayBenchConfig, RelayBenchReport, bench_relay};
pub use connection::{StreamSpec, connect, ensure_stream, find_stream, keeps_everything};
pub use envelope::{
    EnvelopeDecodeError, envelope_from_proto, envelope_into_proto, envelope_to_proto,
    header_position,
};
pub use ingress::{CommandIngress, IngressConfig, refusal_from_proto, refusal_into_proto};
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
