//! Turning a stored envelope into a domain event, and a stream id into tenant and plan.

use planledger_domain::{Event, UpcastError};
use planledger_store::Envelope;

use crate::ProjectionError;

/// Decodes an envelope into the current shape of its domain event.
///
/// An error for an event type this build does not know, for a schema version newer than it
/// knows and for data that does not decode: each would otherwise make the read model silently
/// wrong, so the runtime stops at such a poison event until it is quarantined.
///
/// Current-version events are parsed straight from the stored text
/// ([`Event::from_stored_json`]); older versions go through the domain's upcasters.
pub fn decode_event(envelope: &Envelope) -> Result<Event, ProjectionError> {
    decode_parts(
        envelope.position.get(),
        &envelope.event_type,
        envelope.schema_version,
        envelope.data.get(),
    )
}

/// [`decode_event`] over the parts of an envelope: position (for errors), type, schema
/// version and the data as JSON text.
pub(crate) fn decode_parts(
    position: u64,
    event_type: &str,
    schema_version: u32,
    data: &str,
) -> Result<Event, ProjectionError> {
    let undecodable = |detail: String| ProjectionError::Undecodable {
        position,
        event_type: event_type.to_owned(),
        schema_version,
        detail,
    };
    let unknown = || ProjectionError::UnknownEventType {
        position,
        event_type: event_type.to_owned(),
        schema_version,
    };
    match Event::from_stored_json(event_type, schema_version, data) {
        Ok(event) => Ok(event),
        Err(UpcastError::UnknownType { .. }) => Err(unknown()),
        Err(other) => Err(undecodable(other.to_string())),
    }
}

/// Writes the record a read model keeps of an event: its type, schema version and data as
/// stored in the log (`{"type":..,"schema_version":..,"data":..}`), so applying an event never
/// re-serializes it and reading it back upcasts exactly as the first decode did.
pub(crate) fn write_event_record(buf: &mut Vec<u8>, envelope: &Envelope) {
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(envelope.event_type.as_bytes());
    buf.extend_from_slice(b"\",\"schema_version\":");
    buf.extend_from_slice(envelope.schema_version.to_string().as_bytes());
    buf.extend_from_slice(b",\"data\":");
    buf.extend_from_slice(envelope.data.get().as_bytes());
    buf.push(b'}');
}

/// The length of the record [`write_event_record`] writes for `envelope`.
pub(crate) fn event_record_len(envelope: &Envelope) -> usize {
    let digits = envelope.schema_version.checked_ilog10().unwrap_or(0) as usize + 1;
    br#"{"type":"","schema_version":,"data":}"#.len()
        + envelope.event_type.len()
        + digits
        + envelope.data.get().len()
}

/// An event record read back from a read model.
#[derive(serde::Deserialize)]
struct EventRecord<'a> {
    #[serde(rename = "type", borrow)]
    event_type: std::borrow::Cow<'a, str>,
    schema_version: u32,
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
}

/// Decodes a record written by [`write_event_record`].
pub(crate) fn decode_event_record(bytes: &[u8]) -> Result<Event, String> {
    let record: EventRecord<'_> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    decode_parts(
        0,
        &record.event_type,
        record.schema_version,
        record.data.get(),
    )
    .map_err(|e| e.to_string())
}

/// Splits a stream id `<tenant>/<plan_id>` at its last `/` (plan ids never contain one).
///
/// `None` for a stream id that is not a tenant's plan.
pub fn split_stream(stream: &str) -> Option<(&str, &str)> {
    let (tenant, plan_id) = stream.rsplit_once('/')?;
    (!tenant.is_empty() && !plan_id.is_empty()).then_some((tenant, plan_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_split_at_the_last_slash() {
        assert_eq!(split_stream("acme/q3"), Some(("acme", "q3")));
        assert_eq!(split_stream("a/b/q3"), Some(("a/b", "q3")));
        assert_eq!(split_stream("lonely"), None);
        assert_eq!(split_stream("/q3"), None);
    }
}
