//! The partition log's message <-> event conversions. The hash chain covers the stored JSON,
//! so an event read back from the stream must render to exactly the bytes that were committed.

use jiff::Timestamp;
use planledger_proto::subjects::{
    HEADER_COMMAND_FINGERPRINT, HEADER_COMMAND_ID, HEADER_COMMAND_SCOPE,
};
use planledger_store::{CommandHeader, Envelope, StreamId, Version};
use proptest::prelude::*;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::*;

/// Any JSON value, with escapes, control characters and Unicode in its strings.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        (-1.0e15f64..1.0e15).prop_map(serde_json::Value::from),
        ".*".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(".*", inner, 0..4)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

/// JSON text as a client may have sent it: compact, pretty, or with odd spacing (the log keeps
/// `data` byte for byte).
fn json_text() -> impl Strategy<Value = String> {
    (json_value(), 0..3u8).prop_map(|(value, style)| match style {
        0 => value.to_string(),
        1 => serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string()),
        _ => format!(" \t{value}\n "),
    })
}

/// Any instant jiff can represent, to the nanosecond.
fn timestamp() -> impl Strategy<Value = Timestamp> {
    let (min, max) = (
        Timestamp::MIN.as_nanosecond(),
        Timestamp::MAX.as_nanosecond(),
    );
    prop_oneof![
        (min..=max).prop_map(|n| Timestamp::from_nanosecond(n).unwrap_or(Timestamp::UNIX_EPOCH)),
        // Around now, with whole, milli- and nanosecond fractions.
        (
            1_600_000_000i64..2_000_000_000,
            prop_oneof![Just(0i32), Just(500_000_000), 0..1_000_000_000]
        )
            .prop_map(|(s, n)| Timestamp::new(s, n).unwrap_or(Timestamp::UNIX_EPOCH)),
    ]
}

fn stream_id() -> impl Strategy<Value = StreamId> {
    prop_oneof![
        "[a-z0-9]{1,8}/[a-zA-Z0-9._-]{1,12}",
        "[^\\p{Cc}/]{0,6}/[^\\p{Cc}]{1,10}",
        "[^\\p{Cc}/]{1,10}",
    ]
    .prop_filter_map("a valid stream id", |id| StreamId::new(id).ok())
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        (
            1..u64::MAX / 2,
            stream_id(),
            1..u64::MAX / 2,
            any::<u128>(),
            ".*",
            any::<u32>(),
        ),
        (timestamp(), timestamp(), ".*"),
        (
            proptest::option::of(".*"),
            proptest::option::of(".*"),
            proptest::option::of(".*"),
            proptest::option::of(".*"),
        ),
        (json_text(), "[0-9a-f]{64}", "[0-9a-f]{64}"),
    )
        .prop_map(
            |(
                (position, stream, version, id, event_type, schema_version),
                (occurred_at, recorded_at, actor),
                (command_id, correlation_id, causation_id, traceparent),
                (data, prev_hash, hash),
            )| Envelope {
                position: Position(position),
                stream,
                version: Version(version),
                event_id: Uuid::from_u128(id),
                event_type,
                schema_version,
                occurred_at,
                recorded_at,
                actor,
                command_id,
                correlation_id,
                causation_id,
                traceparent,
                data: RawValue::from_string(data).unwrap_or_else(|_| {
                    RawValue::from_string("null".into()).expect("null is JSON")
                }),
                prev_hash,
                hash,
            },
        )
}

fn command() -> impl Strategy<Value = Option<CommandHeader>> {
    // Any text: a client's command id may hold line breaks, quotes or Unicode.
    proptest::option::of((".+", ".+", proptest::option::of("[0-9a-f]{64}")).prop_map(
        |(scope, id, fingerprint)| CommandHeader {
            scope,
            id,
            fingerprint,
        },
    ))
}

fn commit_event(envelope: &Envelope, command: Option<CommandHeader>) -> CommitEvent {
    CommitEvent {
        position: envelope.position,
        stream: envelope.stream.clone(),
        event_type: envelope.event_type.clone(),
        stored: serde_json::to_vec(envelope).expect("envelopes serialize"),
        command,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// stored JSON -> Envelope -> protobuf message -> Envelope -> stored JSON, byte for byte.
    #[test]
    fn stored_json_survives_the_partition_log(
        envelope in envelope(),
        command in command(),
        partition in 0..4096u32,
    ) {
        let event = commit_event(&envelope, command.clone());
        let (subject, headers, payload) =
            partition_message(partition, &event).expect("a stored envelope becomes a message");
        let prefix = format!("planledger.evt.p{partition}.");
        prop_assert!(subject.starts_with(&prefix));
        prop_assert_eq!(subject[prefix.len()..].split('.').count(), 3);
        let back = committed_event(partition, envelope.position.get(), Some(&headers), &payload)
            .expect("the message decodes");
        let stored_again = serde_json::to_vec(&back.envelope).expect("envelopes serialize");
        prop_assert_eq!(
            String::from_utf8_lossy(&stored_again),
            String::from_utf8_lossy(&event.stored)
        );
        prop_assert_eq!(back.command, command);
    }
}

fn sample() -> Envelope {
    Envelope {
        position: Position(5),
        stream: StreamId::new("acme/q3.plan").expect("valid stream id"),
        version: Version(2),
        event_id: Uuid::now_v7(),
        event_type: "GoalDefined".into(),
        schema_version: 1,
        occurred_at: "2024-05-01T10:00:00.000000001Z"
            .parse()
            .expect("valid time"),
        recorded_at: "2024-05-01T10:00:00.1Z".parse().expect("valid time"),
        actor: "alice".into(),
        command_id: None,
        correlation_id: None,
        causation_id: None,
        traceparent: None,
        data: RawValue::from_string(r#"{"title":"Ünïcode \"quoted\" \u0001"}"#.into())
            .expect("valid JSON"),
        prev_hash: "0".repeat(64),
        hash: "f".repeat(64),
    }
}

#[test]
fn the_message_carries_the_headers_of_the_partition_log() {
    let command = CommandHeader {
        scope: "acme".into(),
        id: "cmd-1".into(),
        fingerprint: Some("ab".repeat(32)),
    };
    let envelope = sample();
    let (subject, headers, payload) =
        partition_message(7, &commit_event(&envelope, Some(command))).expect("a message");
    assert_eq!(subject, "planledger.evt.p7.acme.q3%2Eplan.GoalDefined");
    let header = |name: &str| headers.get(name).map(|v| v.as_str().to_string());
    assert_eq!(header(HEADER_MSG_ID), Some(envelope.event_id.to_string()));
    assert_eq!(header(HEADER_POSITION).as_deref(), Some("5"));
    assert_eq!(header(HEADER_PARTITION).as_deref(), Some("7"));
    assert_eq!(header(HEADER_COMMAND_SCOPE).as_deref(), Some("acme"));
    assert_eq!(header(HEADER_COMMAND_ID).as_deref(), Some("cmd-1"));
    let mut injected = commit_event(&envelope, None);
    injected.command = Some(CommandHeader {
        scope: "acme".into(),
        id: "a\r\nNats-Expected-Last-Sequence: 0".into(),
        fingerprint: None,
    });
    let (_, headers_injected, payload_injected) =
        partition_message(7, &injected).expect("a message");
    assert_eq!(
        headers_injected
            .get(HEADER_COMMAND_ID)
            .map(|v| v.as_str().to_string())
            .as_deref(),
        Some("a%0D%0ANats-Expected-Last-Sequence%3A%200")
    );
    let back = committed_event(7, 5, Some(&headers_injected), &payload_injected).expect("decodes");
    assert_eq!(back.command, injected.command);
    assert_eq!(header(HEADER_COMMAND_FINGERPRINT), Some("ab".repeat(32)));
    let wire = EventEnvelope::decode(payload.as_ref()).expect("a protobuf envelope");
    assert_eq!(wire.partition, 7);
    assert_eq!(wire.position, 5);
}

#[test]
fn a_message_read_at_another_sequence_or_partition_is_refused() {
    let envelope = sample();
    let (_, headers, payload) =
        partition_message(2, &commit_event(&envelope, None)).expect("a message");
    assert!(committed_event(2, 5, Some(&headers), &payload).is_ok());
    assert!(committed_event(2, 6, Some(&headers), &payload).is_err());
    assert!(committed_event(3, 5, Some(&headers), &payload).is_err());
    assert!(committed_event(2, 5, None, b"\xff\xff").is_err());
}

#[test]
fn stored_json_that_does_not_parse_is_refused_before_sending() {
    let mut event = commit_event(&sample(), None);
    event.stored = b"{not json".to_vec();
    assert!(matches!(
        partition_message(0, &event),
        Err(BusError::InvalidEvent { position: 5, .. })
    ));
}
