//! The stored form of an event: the envelope, and the hash that chains it to its predecessor.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{Position, StreamId, Version};

/// The hash that stands before position 1: 64 zero hex digits.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One event as it is stored in the log and handed to readers.
///
/// Field order is part of the format: the hash covers the JSON of every field but `hash`, in
/// this order, so it must not be rearranged.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// Global position in the log, from 1, gap-free.
    pub position: Position,
    /// The stream the event belongs to (`<tenant>/<plan_id>`).
    pub stream: StreamId,
    /// Version of the stream after this event, from 1, gap-free per stream.
    pub version: Version,
    /// Unique event id (UUIDv7).
    pub event_id: Uuid,
    /// Event type name, e.g. `GoalAdjusted`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Schema version of `data` for this event type.
    pub schema_version: u32,
    /// When the fact happened, as told by the writer of the command.
    pub occurred_at: Timestamp,
    /// When the log made it durable; non-decreasing over positions.
    pub recorded_at: Timestamp,
    /// Who caused it (the authenticated subject).
    pub actor: String,
    /// The command that produced it, if any.
    pub command_id: Option<String>,
    /// Correlation id of the request that produced it.
    pub correlation_id: Option<String>,
    /// Id of the message that caused it.
    pub causation_id: Option<String>,
    /// W3C trace context of the request that produced it.
    pub traceparent: Option<String>,
    /// The event payload, stored byte for byte as given.
    pub data: Box<RawValue>,
    /// Hash of the previous envelope (hex), [`GENESIS_HASH`] for position 1.
    pub prev_hash: String,
    /// `sha256(prev_hash || canonical JSON of every other field)`, hex.
    pub hash: String,
}

impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        // Field by field, with `data` compared by its exact stored bytes.
        serde_json::to_vec(self).ok() == serde_json::to_vec(other).ok()
    }
}

/// The envelope without its hash: the canonical bytes the hash covers.
#[derive(Serialize)]
struct Unhashed<'a> {
    position: Position,
    stream: &'a StreamId,
    version: Version,
    event_id: Uuid,
    #[serde(rename = "type")]
    event_type: &'a str,
    schema_version: u32,
    occurred_at: Timestamp,
    recorded_at: Timestamp,
    actor: &'a str,
    command_id: Option<&'a str>,
    correlation_id: Option<&'a str>,
    causation_id: Option<&'a str>,
    traceparent: Option<&'a str>,
    data: &'a RawValue,
    prev_hash: &'a str,
}

impl Envelope {
    /// Recomputes the hash this envelope should carry from its other fields.
    pub fn compute_hash(&self) -> String {
        let unhashed = Unhashed {
            position: self.position,
            stream: &self.stream,
            version: self.version,
            event_id: self.event_id,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            occurred_at: self.occurred_at,
            recorded_at: self.recorded_at,
            actor: &self.actor,
            command_id: self.command_id.as_deref(),
            correlation_id: self.correlation_id.as_deref(),
            causation_id: self.causation_id.as_deref(),
            traceparent: self.traceparent.as_deref(),
            data: &self.data,
            prev_hash: &self.prev_hash,
        };
        let canonical =
            serde_json::to_vec(&unhashed).expect("an envelope of plain fields always serializes");
        let mut hasher = Sha256::new();
        hasher.update(self.prev_hash.as_bytes());
        hasher.update(&canonical);
        hex::encode(hasher.finalize())
    }

    /// Parses the payload into a JSON value.
    pub fn data_value(&self) -> serde_json::Value {
        serde_json::from_str(self.data.get()).expect("stored data was validated as JSON on append")
    }
}

/// An event to append: what the caller decides; the log adds position, version, times and hashes.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// Unique event id; use [`NewEvent::new`] to get a fresh UUIDv7.
    pub event_id: Uuid,
    /// Event type name.
    pub event_type: String,
    /// Schema version of `data`.
    pub schema_version: u32,
    /// When the fact happened.
    pub occurred_at: Timestamp,
    /// The payload as JSON text.
    pub data: Box<RawValue>,
}

impl NewEvent {
    /// A new event with a fresh UUIDv7 id.
    pub fn new(
        event_type: impl Into<String>,
        schema_version: u32,
        occurred_at: Timestamp,
        data: Box<RawValue>,
    ) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version,
            occurred_at,
            data,
        }
    }

    /// A new event whose payload is serialized from `data`.
    pub fn from_json(
        event_type: impl Into<String>,
        schema_version: u32,
        occurred_at: Timestamp,
        data: &serde_json::Value,
    ) -> Self {
        let raw = serde_json::value::to_raw_value(data)
            .expect("a serde_json::Value always serializes");
        Self::new(event_type, schema_version, occurred_at, raw)
    }
}
