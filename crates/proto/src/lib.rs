//! The Planledger wire contract in Rust.
//!
//! The types in [`v1`] are generated at build time by prost from `proto/planledger/v1/*.proto`
//! (parsed by `protox`, so no system `protoc` is needed); [`subjects`] holds the NATS subject
//! and header names that go with them. Together they are everything a program needs to publish
//! or consume Planledger events and commands on the bus.
//!
//! This crate is pure data: it must never depend on the store, the domain, the application or
//! any IO crate, so that a downstream consumer can use it without pulling in RocksDB or NATS.
//! Conversions from the stored envelope live in `planledger-bus`.

#![warn(missing_docs)]

pub mod subjects;

/// Generated types of the `planledger.v1` protobuf package.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/planledger.v1.rs"));
}

pub use prost::Message;
pub use prost_types::Timestamp;

/// `Content-Type` of a message whose body is an [`v1::EventEnvelope`].
pub const EVENT_ENVELOPE_CONTENT_TYPE: &str =
    "application/x-protobuf; proto=planledger.v1.EventEnvelope";
/// `Content-Type` of a message whose body is a [`v1::CommandRequest`].
pub const COMMAND_REQUEST_CONTENT_TYPE: &str =
    "application/x-protobuf; proto=planledger.v1.CommandRequest";
/// `Content-Type` of a message whose body is a [`v1::CommandReply`].
pub const COMMAND_REPLY_CONTENT_TYPE: &str =
    "application/x-protobuf; proto=planledger.v1.CommandReply";

/// Splits a stream id `<tenant>/<plan_id>` at its first `/`.
///
/// A stream id without `/` has an empty tenant and is all plan id.
pub fn split_stream(stream: &str) -> (&str, &str) {
    match stream.split_once('/') {
        Some((tenant, plan_id)) => (tenant, plan_id),
        None => ("", stream),
    }
}

#[cfg(test)]
mod tests {
    use super::v1::{CommandReply, EventEnvelope, command_reply};
    use super::*;
    use prost::Name;

    #[test]
    fn split_stream_cuts_at_the_first_slash() {
        assert_eq!(split_stream("acme/q3-plan"), ("acme", "q3-plan"));
        assert_eq!(split_stream("acme/a/b"), ("acme", "a/b"));
        assert_eq!(split_stream("lonely"), ("", "lonely"));
    }

    #[test]
    fn envelope_round_trips_through_protobuf_bytes() {
        let envelope = EventEnvelope {
            position: 42,
            stream: "acme/q3".into(),
            tenant: "acme".into(),
            plan_id: "q3".into(),
            version: 7,
            event_id: "0190f2a4-0000-7000-8000-000000000000".into(),
            r#type: "GoalDefined".into(),
            schema_version: 1,
            occurred_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 123,
            }),
            recorded_at: None,
            actor: "alice".into(),
            command_id: Some("cmd-1".into()),
            correlation_id: None,
            causation_id: None,
            traceparent: None,
            data: br#"{"goal_id":"g1"}"#.to_vec(),
            prev_hash: "0".repeat(64),
            hash: "f".repeat(64),
            partition: 3,
        };
        let bytes = envelope.encode_to_vec();
        assert_eq!(EventEnvelope::decode(bytes.as_slice()), Ok(envelope));
    }

    #[test]
    fn type_names_match_the_content_types() {
        assert!(EVENT_ENVELOPE_CONTENT_TYPE.ends_with(&EventEnvelope::full_name()));
        assert!(COMMAND_REPLY_CONTENT_TYPE.ends_with(&CommandReply::full_name()));
        let reply = CommandReply {
            outcome: Some(command_reply::Outcome::Problem(v1::Problem {
                status: 409,
                current_version: Some(3),
                ..Default::default()
            })),
        };
        assert_eq!(
            CommandReply::decode(reply.encode_to_vec().as_slice()),
            Ok(reply)
        );
    }
}
