//! Conversions between the stored [`Envelope`] and the wire [`EventEnvelope`], and the
//! position header every event message carries.

use jiff::Timestamp;
use planledger_proto::split_stream;
use planledger_proto::subjects::HEADER_POSITION;
use planledger_proto::v1::EventEnvelope;
use planledger_store::{Envelope, Position, StreamId, Version};
use serde_json::value::RawValue;
use uuid::Uuid;

/// The log position in an event message's `Planledger-Position` header, if it has a valid one.
pub fn header_position(headers: &async_nats::HeaderMap) -> Option<u64> {
    headers
        .get(HEADER_POSITION)
        .and_then(|value| value.as_str().parse::<u64>().ok())
}

/// A wire envelope that does not describe a valid stored envelope.
#[derive(Debug, thiserror::Error)]
#[error("event envelope field {field} is invalid: {detail}")]
pub struct EnvelopeDecodeError {
    /// The protobuf field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub detail: String,
}

fn invalid(field: &'static str, detail: impl ToString) -> EnvelopeDecodeError {
    EnvelopeDecodeError {
        field,
        detail: detail.to_string(),
    }
}

/// A jiff timestamp as a protobuf `Timestamp` (seconds, and nanos in `0..1e9`).
pub fn timestamp_to_proto(time: Timestamp) -> planledger_proto::Timestamp {
    let nanos = time.as_nanosecond();
    let seconds = nanos.div_euclid(1_000_000_000);
    let subsec = nanos.rem_euclid(1_000_000_000);
    planledger_proto::Timestamp {
        // jiff's range (years -9999..=9999) fits an i64 of seconds with room to spare.
        seconds: i64::try_from(seconds).expect("a jiff timestamp's seconds fit in i64"),
        nanos: i32::try_from(subsec).expect("a remainder modulo 1e9 fits in i32"),
    }
}

/// A protobuf `Timestamp` as a jiff timestamp.
pub fn timestamp_from_proto(
    field: &'static str,
    time: Option<&planledger_proto::Timestamp>,
) -> Result<Timestamp, EnvelopeDecodeError> {
    let time = time.ok_or_else(|| invalid(field, "missing"))?;
    let nanos = i128::from(time.seconds) * 1_000_000_000 + i128::from(time.nanos);
    Timestamp::from_nanosecond(nanos).map_err(|e| invalid(field, e))
}

/// The wire form of a stored envelope, with `tenant` and `plan_id` split from the stream id.
///
/// `partition` is left 0 (the single-node log, which the relay publishes, is not partitioned);
/// the partition log ([`crate::partition_log`]) sets it to its partition.
pub fn envelope_to_proto(envelope: &Envelope) -> EventEnvelope {
    envelope_into_proto(envelope.clone())
}

/// [`envelope_to_proto`] for an envelope the caller no longer needs: its strings and payload
/// move into the wire form instead of being copied.
pub fn envelope_into_proto(envelope: Envelope) -> EventEnvelope {
    let (tenant, plan_id) = split_stream(envelope.stream.as_str());
    let (tenant, plan_id) = (tenant.to_string(), plan_id.to_string());
    EventEnvelope {
        position: envelope.position.get(),
        stream: envelope.stream.into(),
        tenant,
        plan_id,
        version: envelope.version.get(),
        event_id: envelope.event_id.to_string(),
        r#type: envelope.event_type,
        schema_version: envelope.schema_version,
        occurred_at: Some(timestamp_to_proto(envelope.occurred_at)),
        recorded_at: Some(timestamp_to_proto(envelope.recorded_at)),
        actor: envelope.actor,
        command_id: envelope.command_id,
        correlation_id: envelope.correlation_id,
        causation_id: envelope.causation_id,
        traceparent: envelope.traceparent,
        data: Box::<str>::from(envelope.data).into_string().into_bytes(),
        prev_hash: envelope.prev_hash,
        hash: envelope.hash,
        // The single-node log is not partitioned; a partition log sets its index itself.
        partition: 0,
    }
}

/// The stored envelope a wire envelope describes; fails if a field is missing or malformed.
///
/// `tenant` and `plan_id` are redundant with `stream` and must agree with it. `partition` is
/// not part of the stored envelope and is ignored here (the partition log checks it itself).
pub fn envelope_from_proto(wire: EventEnvelope) -> Result<Envelope, EnvelopeDecodeError> {
    let (tenant, plan_id) = split_stream(&wire.stream);
    if tenant != wire.tenant || plan_id != wire.plan_id {
        return Err(invalid(
            "tenant/plan_id",
            format!(
                "({:?}, {:?}) does not match stream {:?}",
                wire.tenant, wire.plan_id, wire.stream
            ),
        ));
    }
    let data = String::from_utf8(wire.data).map_err(|e| invalid("data", e))?;
    let data = RawValue::from_string(data).map_err(|e| invalid("data", e))?;
    Ok(Envelope {
        position: Position(wire.position),
        stream: StreamId::new(wire.stream).map_err(|e| invalid("stream", e))?,
        version: Version(wire.version),
        event_id: Uuid::parse_str(&wire.event_id).map_err(|e| invalid("event_id", e))?,
        event_type: wire.r#type,
        schema_version: wire.schema_version,
        occurred_at: timestamp_from_proto("occurred_at", wire.occurred_at.as_ref())?,
        recorded_at: timestamp_from_proto("recorded_at", wire.recorded_at.as_ref())?,
        actor: wire.actor,
        command_id: wire.command_id,
        correlation_id: wire.correlation_id,
        causation_id: wire.causation_id,
        traceparent: wire.traceparent,
        data,
        prev_hash: wire.prev_hash,
        hash: wire.hash,
    })
}

/// The stored JSON of an envelope, with `String` fields taken as they are (no validation or
/// re-formatting: the log validated them on append).
#[derive(serde::Deserialize)]
struct StoredEnvelope<'a> {
    position: u64,
    stream: String,
    version: u64,
    event_id: String,
    #[serde(rename = "type")]
    event_type: String,
    schema_version: u32,
    occurred_at: Timestamp,
    recorded_at: Timestamp,
    actor: String,
    command_id: Option<String>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    traceparent: Option<String>,
    #[serde(borrow)]
    data: &'a RawValue,
    prev_hash: String,
    hash: String,
}

/// Decodes an envelope as the log stores it (its JSON) straight into the wire form, without
/// building the intermediate [`Envelope`]: the relay's fast path. Returns `recorded_at` too.
///
/// Equal to `envelope_to_proto(&serde_json::from_slice::<Envelope>(bytes)?)` (a test holds
/// the two together).
pub fn stored_json_to_proto(
    bytes: &[u8],
) -> Result<(EventEnvelope, Timestamp), EnvelopeDecodeError> {
    let stored: StoredEnvelope<'_> =
        serde_json::from_slice(bytes).map_err(|e| invalid("stored envelope", e))?;
    let (tenant, plan_id) = split_stream(&stored.stream);
    let (tenant, plan_id) = (tenant.to_string(), plan_id.to_string());
    let wire = EventEnvelope {
        position: stored.position,
        stream: stored.stream,
        tenant,
        plan_id,
        version: stored.version,
        event_id: stored.event_id,
        r#type: stored.event_type,
        schema_version: stored.schema_version,
        occurred_at: Some(timestamp_to_proto(stored.occurred_at)),
        recorded_at: Some(timestamp_to_proto(stored.recorded_at)),
        actor: stored.actor,
        command_id: stored.command_id,
        correlation_id: stored.correlation_id,
        causation_id: stored.causation_id,
        traceparent: stored.traceparent,
        data: stored.data.get().as_bytes().to_vec(),
        prev_hash: stored.prev_hash,
        hash: stored.hash,
        partition: 0,
    };
    Ok((wire, stored.recorded_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_header_is_read_only_when_it_is_a_number() {
        let mut headers = async_nats::HeaderMap::new();
        assert_eq!(header_position(&headers), None);
        headers.insert(HEADER_POSITION, "41");
        assert_eq!(header_position(&headers), Some(41));
        let mut bad = async_nats::HeaderMap::new();
        bad.insert(HEADER_POSITION, "forty-one");
        assert_eq!(header_position(&bad), None);
    }

    fn stored() -> Envelope {
        Envelope {
            position: Position(12),
            stream: StreamId::new("acme/q3.plan").expect("valid stream id"),
            version: Version(3),
            event_id: Uuid::now_v7(),
            event_type: "CheckInRecorded".into(),
            schema_version: 2,
            occurred_at: "2024-05-01T10:00:00.123456789Z"
                .parse()
                .expect("valid time"),
            recorded_at: "1969-12-31T23:59:59.5Z".parse().expect("valid time"),
            actor: "alice".into(),
            command_id: Some("cmd-7".into()),
            correlation_id: None,
            causation_id: Some("msg-1".into()),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            data: RawValue::from_string(r#"{"goal_id":"g1","confidence":0.7}"#.into())
                .expect("valid JSON"),
            prev_hash: "a".repeat(64),
            hash: "b".repeat(64),
        }
    }

    #[test]
    fn stored_envelope_survives_the_wire() {
        let envelope = stored();
        let wire = envelope_to_proto(&envelope);
        assert_eq!(wire.tenant, "acme");
        assert_eq!(wire.plan_id, "q3.plan");
        assert_eq!(wire.data, br#"{"goal_id":"g1","confidence":0.7}"#);
        let back = envelope_from_proto(wire).expect("a converted envelope decodes");
        assert_eq!(back, envelope);
        assert_eq!(back.compute_hash(), envelope.compute_hash());
    }

    #[test]
    fn fast_path_from_stored_json_equals_the_conversion_of_the_envelope() {
        let mut envelope = stored();
        for variant in 0..3 {
            if variant == 1 {
                envelope.command_id = None;
                envelope.traceparent = None;
                envelope.actor = "quoted \"ünïcode\" actor".into();
            }
            if variant == 2 {
                envelope.stream = StreamId::new("no-tenant").expect("valid stream id");
            }
            let bytes = serde_json::to_vec(&envelope).expect("envelopes serialize");
            let (wire, recorded_at) = stored_json_to_proto(&bytes).expect("stored JSON decodes");
            assert_eq!(wire, envelope_to_proto(&envelope));
            assert_eq!(recorded_at, envelope.recorded_at);
        }
    }

    #[test]
    fn timestamps_before_the_epoch_keep_nanos_positive() {
        let time: Timestamp = "1969-12-31T23:59:59.5Z".parse().expect("valid time");
        let wire = timestamp_to_proto(time);
        assert_eq!((wire.seconds, wire.nanos), (-1, 500_000_000));
        assert_eq!(timestamp_from_proto("t", Some(&wire)).ok(), Some(time));
    }

    #[test]
    fn data_that_is_not_json_is_rejected_by_field() {
        let mut wire = envelope_to_proto(&stored());
        wire.data = b"{not json".to_vec();
        let error = envelope_from_proto(wire).expect_err("broken JSON is refused");
        assert_eq!(error.field, "data");
    }

    #[test]
    fn tenant_that_disagrees_with_the_stream_is_rejected() {
        let mut wire = envelope_to_proto(&stored());
        wire.tenant = "other".into();
        let error = envelope_from_proto(wire).expect_err("mismatch is refused");
        assert_eq!(error.field, "tenant/plan_id");
    }
}
