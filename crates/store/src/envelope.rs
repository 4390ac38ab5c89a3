//! The stored form of an event: the envelope, and the hash that chains it to its predecessor.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{Position, StreamId, Version};

/// The hash that stands before position 1: 64 zero hex digits.
pub const GENESIS_HASH: &str = match std::str::from_utf8(&GENESIS) {
    Ok(text) => text,
    Err(_) => panic!("hex digits are ASCII"),
};

/// Whether the event at `next` (position, stream, command id) continues the append of the event
/// at `previous`: same stream and command id, the next position. An append's events are
/// consecutive and share their command's id, so this is how a reader of the log (the relay,
/// a catch-up, a restore's counts) finds where one command's events end; only an append's
/// first event carries its command record.
pub fn continues_append(
    previous: (u64, &str, Option<&str>),
    next: (u64, &str, Option<&str>),
) -> bool {
    next.2.is_some() && previous.2 == next.2 && previous.1 == next.1 && previous.0 + 1 == next.0
}

/// One event as it is stored in the log and handed to readers.
///
/// Field order is part of the format: the hash covers the JSON of every field but `hash`, in
/// this order, so it must not be rearranged.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Envelope {
    /// Global position in the log, from 1, gap-free.
    #[cfg_attr(feature = "openapi", schema(value_type = u64, minimum = 1))]
    pub position: Position,
    /// The stream the event belongs to (`<tenant>/<plan_id>`).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub stream: StreamId,
    /// Version of the stream after this event, from 1, gap-free per stream.
    #[cfg_attr(feature = "openapi", schema(value_type = u64, minimum = 1))]
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
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
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

/// A SHA-256 hash as the 64 lowercase hex digits an envelope stores.
pub(crate) type HexHash = [u8; 64];

/// [`GENESIS_HASH`] as a [`HexHash`].
pub(crate) const GENESIS: HexHash = [b'0'; 64];

/// A stored hash's text as a [`HexHash`], if it is 64 hex digits.
pub(crate) fn parse_hex_hash(text: &str) -> Option<HexHash> {
    text.as_bytes()
        .try_into()
        .ok()
        .filter(|hash: &HexHash| hash.iter().all(u8::is_ascii_hexdigit))
}

/// A [`HexHash`] as text.
pub(crate) fn hex_text(hash: &HexHash) -> &str {
    std::str::from_utf8(hash).expect("hex digits are ASCII")
}

/// Appends `value` to `out` as a JSON string (exactly as serde_json writes it) or `null`.
fn json_str(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        // The usual case, ids and names without quotes, backslashes or control characters:
        // copied as they are (one branch-free pass over the bytes instead of serde's escaper).
        Some(text) if !needs_escape(text) => {
            out.reserve(text.len() + 2);
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
        }
        Some(text) => serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail"),
        None => out.extend_from_slice(b"null"),
    }
}

/// Whether serde_json escapes anything in `text`: a quote, a backslash or a control character
/// below U+0020 (it writes everything else, DEL and non-ASCII included, as it is).
fn needs_escape(text: &str) -> bool {
    text.bytes().fold(false, |any, b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// Renders a timestamp exactly as its serde form (a quoted RFC 3339 string): jiff's printer,
/// the one its `Display` and `Serialize` use, straight into the buffer. (Through serde the text
/// would pass a formatter adapter and a JSON string escaper, which it never needs: it holds
/// only digits, `-`, `:`, `.`, `T` and `Z`.)
pub(crate) fn render_time(time: &Timestamp) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    out.push(b'"');
    jiff::fmt::temporal::DateTimePrinter::new()
        .print_timestamp(time, &mut out)
        .expect("printing a timestamp into a Vec cannot fail");
    out.push(b'"');
    out
}

/// The fields the hash covers, borrowed, with timestamps already rendered.
pub(crate) struct Canonical<'a> {
    pub position: Position,
    pub stream: &'a str,
    pub version: Version,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub schema_version: u32,
    pub occurred_at: &'a [u8],
    pub recorded_at: &'a [u8],
    pub actor: &'a str,
    pub command_id: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    pub causation_id: Option<&'a str>,
    pub traceparent: Option<&'a str>,
    pub data: &'a RawValue,
    pub prev_hash: &'a str,
}

impl Canonical<'_> {
    /// Writes the canonical JSON (every field but `hash`, in declaration order, no spaces) into
    /// `out`, and returns the hash `sha256(prev_hash || canonical)` as hex digits.
    ///
    /// The bytes equal serde's rendering of the same fields, so a stored envelope is this text
    /// with `,"hash":"…"` spliced before the closing brace.
    pub fn write(&self, out: &mut Vec<u8>) -> HexHash {
        let start = out.len();
        out.extend_from_slice(b"{\"position\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.position.0).as_bytes());
        out.extend_from_slice(b",\"stream\":");
        json_str(out, Some(self.stream));
        out.extend_from_slice(b",\"version\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.version.0).as_bytes());
        out.extend_from_slice(b",\"event_id\":\"");
        out.extend_from_slice(
            self.event_id
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer())
                .as_bytes(),
        );
        out.extend_from_slice(b"\",\"type\":");
        json_str(out, Some(self.event_type));
        out.extend_from_slice(b",\"schema_version\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.schema_version).as_bytes());
        out.extend_from_slice(b",\"occurred_at\":");
        out.extend_from_slice(self.occurred_at);
        out.extend_from_slice(b",\"recorded_at\":");
        out.extend_from_slice(self.recorded_at);
        out.extend_from_slice(b",\"actor\":");
        json_str(out, Some(self.actor));
        out.extend_from_slice(b",\"command_id\":");
        json_str(out, self.command_id);
        out.extend_from_slice(b",\"correlation_id\":");
        json_str(out, self.correlation_id);
        out.extend_from_slice(b",\"causation_id\":");
        json_str(out, self.causation_id);
        out.extend_from_slice(b",\"traceparent\":");
        json_str(out, self.traceparent);
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(self.data.get().as_bytes());
        out.extend_from_slice(b",\"prev_hash\":");
        json_str(out, Some(self.prev_hash));
        out.push(b'}');
        let mut hasher = Sha256::new();
        hasher.update(self.prev_hash.as_bytes());
        hasher.update(&out[start..]);
        let mut text = [0u8; 64];
        hex::encode_to_slice(hasher.finalize(), &mut text).expect("64 hex digits for 32 bytes");
        text
    }
}

/// Turns canonical bytes (ending in `}`) into the stored form by adding the hash.
pub(crate) fn seal(canonical: &mut Vec<u8>, hash: &HexHash) {
    canonical.pop();
    canonical.extend_from_slice(b",\"hash\":\"");
    canonical.extend_from_slice(hash);
    canonical.extend_from_slice(b"\"}");
}

impl Envelope {
    /// Recomputes the hash this envelope should carry from its other fields.
    pub fn compute_hash(&self) -> String {
        let occurred_at = render_time(&self.occurred_at);
        let recorded_at = render_time(&self.recorded_at);
        let canonical = Canonical {
            position: self.position,
            stream: self.stream.as_str(),
            version: self.version,
            event_id: self.event_id,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            occurred_at: &occurred_at,
            recorded_at: &recorded_at,
            actor: &self.actor,
            command_id: self.command_id.as_deref(),
            correlation_id: self.correlation_id.as_deref(),
            causation_id: self.causation_id.as_deref(),
            traceparent: self.traceparent.as_deref(),
            data: &self.data,
            prev_hash: &self.prev_hash,
        };
        hex_text(&canonical.write(&mut Vec::with_capacity(512))).to_owned()
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
        let raw =
            serde_json::value::to_raw_value(data).expect("a serde_json::Value always serializes");
        Self::new(event_type, schema_version, occurred_at, raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_written_as_serde_writes_them() {
        let mut texts: Vec<String> = (0u8..=127).map(|b| format!("a{}b", b as char)).collect();
        texts.extend(
            [
                "",
                "acme/q3-plan",
                "ana \"the planner\"",
                "back\\slash",
                "tab\tnew\nline",
                "é ü 日本 🙂",
                "\u{7f}",
            ]
            .map(String::from),
        );
        for text in texts {
            let mut out = Vec::new();
            json_str(&mut out, Some(&text));
            assert_eq!(
                out,
                serde_json::to_vec(&text).expect("serialize"),
                "{text:?}"
            );
        }
        let mut out = Vec::new();
        json_str(&mut out, None);
        assert_eq!(out, b"null");
    }

    #[test]
    fn rendered_times_are_their_serde_form() {
        let mut times = vec![
            Timestamp::UNIX_EPOCH,
            Timestamp::MIN,
            Timestamp::MAX,
            Timestamp::now(),
            Timestamp::from_second(-1).expect("valid"),
        ];
        // Every count of fractional digits, and whole seconds.
        for nanos in [
            0,
            1,
            10,
            120,
            1_000,
            45_600,
            700_000,
            8_900_000,
            12_000_000,
            999_999_999,
        ] {
            times.push(Timestamp::new(1_764_403_200, nanos).expect("valid"));
        }
        for time in times {
            assert_eq!(
                String::from_utf8(render_time(&time)).expect("utf-8"),
                serde_json::to_string(&time).expect("serialize"),
                "{time:?}"
            );
        }
    }
}
