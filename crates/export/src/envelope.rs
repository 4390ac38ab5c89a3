//! The one decode of each exported event: a stored envelope's fields, borrowed from its bytes.
//!
//! The log stores an envelope as the serde JSON of `planledger_store::Envelope`: its fields in
//! a fixed order, compact, the optional ones as `null`, the hashes as 64 hex digits last. The
//! fast path reads that layout directly, checking every key and separator it passes, and
//! borrows each string that holds no escape; anything else (an escaped string, another field
//! order, a number or time outside what it reads) goes to `serde_json`, whose answer is the
//! reference: the tests hold the fast path to it for every kind of field.
//!
//! `data` is exported as the stored bytes of the payload: the fast path finds its end from the
//! fixed width of the two hashes after it instead of scanning it. The log validated the payload
//! when it was appended, and the hash chain covers it (`planledger verify` checks that).

use std::borrow::Cow;

use planledger_store::Position;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{ExportError, envelope_error};

/// One stored envelope's fields, borrowed from its bytes where no unescaping is needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fields<'a> {
    /// A cluster's events carry their partition (as its first field).
    pub(crate) partition: Option<u32>,
    pub(crate) position: u64,
    pub(crate) stream: Cow<'a, str>,
    pub(crate) version: u64,
    pub(crate) event_id: Cow<'a, str>,
    pub(crate) event_type: Cow<'a, str>,
    pub(crate) schema_version: u32,
    /// Nanoseconds since the Unix epoch.
    pub(crate) occurred_at: i64,
    /// Nanoseconds since the Unix epoch.
    pub(crate) recorded_at: i64,
    pub(crate) actor: Cow<'a, str>,
    pub(crate) command_id: Option<Cow<'a, str>>,
    pub(crate) correlation_id: Option<Cow<'a, str>>,
    pub(crate) causation_id: Option<Cow<'a, str>>,
    pub(crate) traceparent: Option<Cow<'a, str>>,
    /// The payload's JSON text, as stored.
    pub(crate) data: &'a str,
    pub(crate) prev_hash: Cow<'a, str>,
    pub(crate) hash: Cow<'a, str>,
}

/// Decodes the envelope stored at `position`: the fast path when the bytes have the layout it
/// reads, else `serde_json`.
pub(crate) fn decode(position: Position, stored: &[u8]) -> Result<Fields<'_>, ExportError> {
    match fast::fields(stored) {
        Some(fields) => Ok(fields),
        None => decode_with_serde(position, stored),
    }
}

/// The stream of a stored envelope, decoded without the rest of it.
pub(crate) fn stream(position: Position, stored: &[u8]) -> Result<Cow<'_, str>, ExportError> {
    if let Some(stream) = fast::stream(stored) {
        return Ok(Cow::Borrowed(stream));
    }
    #[derive(Deserialize)]
    struct StreamOnly<'a> {
        #[serde(borrow)]
        stream: Cow<'a, str>,
    }
    serde_json::from_slice::<StreamOnly<'_>>(stored)
        .map(|found| found.stream)
        .map_err(|e| envelope_error(position, e))
}

/// The envelope as `serde_json` reads it: the reference the fast path is held to.
#[derive(Deserialize)]
struct Serde<'a> {
    position: u64,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    version: u64,
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
    schema_version: u32,
    #[serde(borrow)]
    occurred_at: Cow<'a, str>,
    #[serde(borrow)]
    recorded_at: Cow<'a, str>,
    #[serde(borrow)]
    actor: Cow<'a, str>,
    #[serde(borrow)]
    command_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    correlation_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    causation_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    traceparent: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow)]
    prev_hash: Cow<'a, str>,
    #[serde(borrow)]
    hash: Cow<'a, str>,
    #[serde(default)]
    partition: Option<u32>,
}

pub(crate) fn decode_with_serde(
    position: Position,
    stored: &[u8],
) -> Result<Fields<'_>, ExportError> {
    let row: Serde<'_> = serde_json::from_slice(stored).map_err(|e| envelope_error(position, e))?;
    Ok(Fields {
        partition: row.partition,
        position: row.position,
        stream: row.stream,
        version: row.version,
        event_id: row.event_id,
        event_type: row.event_type,
        schema_version: row.schema_version,
        occurred_at: nanoseconds(position, "occurred_at", &row.occurred_at)?,
        recorded_at: nanoseconds(position, "recorded_at", &row.recorded_at)?,
        actor: row.actor,
        command_id: row.command_id,
        correlation_id: row.correlation_id,
        causation_id: row.causation_id,
        traceparent: row.traceparent,
        data: row.data.get(),
        prev_hash: row.prev_hash,
        hash: row.hash,
    })
}

/// An RFC 3339 time as nanoseconds since the Unix epoch (what the timestamp columns hold).
fn nanoseconds(position: Position, field: &str, text: &str) -> Result<i64, ExportError> {
    let time: jiff::Timestamp = text
        .parse()
        .map_err(|e| envelope_error(position, format!("{field} {text:?}: {e}")))?;
    i64::try_from(time.as_nanosecond()).map_err(|_| {
        envelope_error(
            position,
            format!(
                "{field} {text} is outside the years 1677 to 2262 that nanosecond timestamps hold"
            ),
        )
    })
}

/// The fast path: the stored layout read in one pass, `None` wherever it is not that layout.
mod fast {
    use std::borrow::Cow;

    use super::Fields;

    /// The bytes from the end of `data` to the end of the envelope: the two hashes, 64 hex
    /// digits each, and their keys.
    const TAIL: usize = r#","prev_hash":""#.len() + 64 + r#"","hash":""#.len() + 64 + r#""}"#.len();

    pub(super) fn fields(stored: &[u8]) -> Option<Fields<'_>> {
        let text = std::str::from_utf8(stored).ok()?;
        let mut at = Cursor::new(text);
        at.literal("{")?;
        let partition = if at.peek(r#""partition":"#) {
            at.literal(r#""partition":"#)?;
            let partition = u32::try_from(at.unsigned()?).ok()?;
            at.literal(",")?;
            Some(partition)
        } else {
            None
        };
        at.literal(r#""position":"#)?;
        let position = at.unsigned()?;
        at.literal(r#","stream":"#)?;
        let stream = at.string()?;
        at.literal(r#","version":"#)?;
        let version = at.unsigned()?;
        at.literal(r#","event_id":"#)?;
        let event_id = at.string()?;
        at.literal(r#","type":"#)?;
        let event_type = at.string()?;
        at.literal(r#","schema_version":"#)?;
        let schema_version = u32::try_from(at.unsigned()?).ok()?;
        at.literal(r#","occurred_at":"#)?;
        let occurred_at = rfc3339_nanoseconds(at.string()?)?;
        at.literal(r#","recorded_at":"#)?;
        let recorded_at = rfc3339_nanoseconds(at.string()?)?;
        at.literal(r#","actor":"#)?;
        let actor = at.string()?;
        at.literal(r#","command_id":"#)?;
        let command_id = at.optional_string()?;
        at.literal(r#","correlation_id":"#)?;
        let correlation_id = at.optional_string()?;
        at.literal(r#","causation_id":"#)?;
        let causation_id = at.optional_string()?;
        at.literal(r#","traceparent":"#)?;
        let traceparent = at.optional_string()?;
        at.literal(r#","data":"#)?;
        let data_end = text.len().checked_sub(TAIL)?;
        let data = text.get(at.at..data_end)?;
        // A compact payload: what serde's raw value would hold, surrounding blanks excluded.
        let (first, last) = (data.bytes().next()?, data.bytes().last()?);
        if first.is_ascii_whitespace() || last.is_ascii_whitespace() {
            return None;
        }
        let mut tail = Cursor { text, at: data_end };
        tail.literal(r#","prev_hash":"#)?;
        let prev_hash = tail.string()?;
        tail.literal(r#","hash":"#)?;
        let hash = tail.string()?;
        tail.literal("}")?;
        if tail.at != text.len() || prev_hash.len() != 64 || hash.len() != 64 {
            return None;
        }
        Some(Fields {
            partition,
            position,
            stream: Cow::Borrowed(stream),
            version,
            event_id: Cow::Borrowed(event_id),
            event_type: Cow::Borrowed(event_type),
            schema_version,
            occurred_at,
            recorded_at,
            actor: Cow::Borrowed(actor),
            command_id: command_id.map(Cow::Borrowed),
            correlation_id: correlation_id.map(Cow::Borrowed),
            causation_id: causation_id.map(Cow::Borrowed),
            traceparent: traceparent.map(Cow::Borrowed),
            data,
            prev_hash: Cow::Borrowed(prev_hash),
            hash: Cow::Borrowed(hash),
        })
    }

    /// The stream, the second field (third in a cluster's events).
    pub(super) fn stream(stored: &[u8]) -> Option<&str> {
        let text = std::str::from_utf8(stored).ok()?;
        let mut at = Cursor::new(text);
        at.literal("{")?;
        if at.peek(r#""partition":"#) {
            at.literal(r#""partition":"#)?;
            at.unsigned()?;
            at.literal(",")?;
        }
        at.literal(r#""position":"#)?;
        at.unsigned()?;
        at.literal(r#","stream":"#)?;
        at.string()
    }

    /// A place in an envelope's text.
    struct Cursor<'a> {
        text: &'a str,
        at: usize,
    }

    impl<'a> Cursor<'a> {
        fn new(text: &'a str) -> Self {
            Self { text, at: 0 }
        }

        fn rest(&self) -> &'a [u8] {
            &self.text.as_bytes()[self.at..]
        }

        // Inlined where called, so each key's comparison is one of a known length.
        #[inline(always)]
        fn peek(&self, literal: &str) -> bool {
            self.rest().starts_with(literal.as_bytes())
        }

        /// Steps over `literal`, if it is next.
        #[inline(always)]
        fn literal(&mut self, literal: &str) -> Option<()> {
            self.peek(literal).then(|| self.at += literal.len())
        }

        /// A JSON number that is an unsigned integer: digits, no leading zero, no overflow.
        fn unsigned(&mut self) -> Option<u64> {
            let digits = self
                .rest()
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let text = &self.rest()[..digits];
            if digits == 0 || digits > 19 || (digits > 1 && text[0] == b'0') {
                return None;
            }
            // A number goes on with a fraction or an exponent: not an integer field.
            if matches!(self.rest().get(digits), Some(b'.' | b'e' | b'E')) {
                return None;
            }
            let value = text
                .iter()
                .fold(0u64, |value, digit| value * 10 + u64::from(digit - b'0'));
            self.at += digits;
            Some(value)
        }

        /// A JSON string without escapes: its text between the quotes.
        fn string(&mut self) -> Option<&'a str> {
            self.literal("\"")?;
            let length = plain_length(self.rest());
            if self.rest().get(length) != Some(&b'"') {
                // An escape or a control character: serde's to read.
                return None;
            }
            let value = self.text.get(self.at..self.at + length)?;
            self.at += length + 1;
            Some(value)
        }

        /// `null` or a string without escapes.
        fn optional_string(&mut self) -> Option<Option<&'a str>> {
            if self.literal("null").is_some() {
                Some(None)
            } else {
                self.string().map(Some)
            }
        }
    }

    /// How many bytes from the start of `bytes` are neither a quote, a backslash nor a control
    /// character: a string's plain run. Eight bytes at a time, as one word each.
    fn plain_length(bytes: &[u8]) -> usize {
        const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
        const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
        let mut length = 0;
        let mut words = bytes.chunks_exact(8);
        for word in words.by_ref() {
            let word = u64::from_le_bytes(word.try_into().expect("chunks of eight bytes"));
            let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
            // A byte below 0x20, one equal to '"' and one equal to '\\', each flagged at its
            // high bit; the lowest flag is exact (borrows only run upwards).
            let special = (word.wrapping_sub(ONES * 0x20) & !word & HIGHS)
                | zero(word ^ (ONES * u64::from(b'"')))
                | zero(word ^ (ONES * u64::from(b'\\')));
            if special != 0 {
                return length + (special.trailing_zeros() / 8) as usize;
            }
            length += 8;
        }
        length
            + words
                .remainder()
                .iter()
                .take_while(|&&b| b >= 0x20 && b != b'"' && b != b'\\')
                .count()
    }

    /// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (what the log writes) as nanoseconds since the Unix
    /// epoch, for years 1970 to 2261; other forms and years are jiff's to read.
    fn rfc3339_nanoseconds(text: &str) -> Option<i64> {
        let b = text.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
            return None;
        }
        if b[13] != b':' || b[16] != b':' || *b.last()? != b'Z' {
            return None;
        }
        let number = |range: std::ops::Range<usize>| -> Option<i64> {
            b[range].iter().try_fold(0i64, |value, &digit| {
                digit
                    .is_ascii_digit()
                    .then(|| value * 10 + i64::from(digit - b'0'))
            })
        };
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
        if !(1970..=2261).contains(&year) || !(1..=12).contains(&month) || day < 1 {
            return None;
        }
        if day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let fraction = &b[19..b.len() - 1];
        let nanos = match fraction {
            [] => 0,
            [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
                let value = number(20..20 + digits.len())?;
                value * 10i64.pow(9 - digits.len() as u32)
            }
            _ => return None,
        };
        let days = days_from_civil(year, month, day);
        let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
        Some(seconds * 1_000_000_000 + nanos)
    }

    fn days_in_month(year: i64, month: i64) -> i64 {
        match month {
            2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
    fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
        let year = if month <= 2 { year - 1 } else { year };
        let era = year.div_euclid(400);
        let year_of_era = year - era * 400;
        let month_index = (month + 9) % 12;
        let day_of_year = (153 * month_index + 2) / 5 + day - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    #[cfg(test)]
    pub(super) fn timestamp_for_test(text: &str) -> Option<i64> {
        rfc3339_nanoseconds(text)
    }

    #[cfg(test)]
    pub(super) fn plain_length_for_test(bytes: &[u8]) -> usize {
        plain_length(bytes)
    }
}

#[cfg(test)]
mod tests {
    use planledger_store::{Envelope, Position, StreamId, Version};
    use proptest::prelude::*;
    use serde_json::value::RawValue;

    use super::{decode, decode_with_serde, fast};

    /// Every event type and schema version ever written, as the domain's fixture holds them.
    fn every_event_type() -> Vec<(String, u32, String)> {
        let text = include_str!("../../domain/tests/fixtures/events.json");
        let entries: Vec<serde_json::Value> = serde_json::from_str(text).expect("the fixture");
        entries
            .iter()
            .map(|entry| {
                (
                    entry["type"].as_str().expect("type").to_owned(),
                    u32::try_from(entry["schema_version"].as_u64().expect("version"))
                        .expect("a small version"),
                    entry["data"].to_string(),
                )
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn envelope(
        position: u64,
        stream: &str,
        event_type: &str,
        schema_version: u32,
        data: &str,
        times: (i128, i128),
        optional: [Option<String>; 4],
        actor: &str,
    ) -> Vec<u8> {
        let [command_id, correlation_id, causation_id, traceparent] = optional;
        let envelope = Envelope {
            position: Position(position),
            stream: StreamId::new(stream).expect("a valid stream id"),
            version: Version(position / 3 + 1),
            event_id: uuid::Uuid::from_u128(u128::from(position) * 0x9e37_79b9_7f4a_7c15),
            event_type: event_type.to_owned(),
            schema_version,
            occurred_at: jiff::Timestamp::from_nanosecond(times.0).expect("a time"),
            recorded_at: jiff::Timestamp::from_nanosecond(times.1).expect("a time"),
            actor: actor.to_owned(),
            command_id,
            correlation_id,
            causation_id,
            traceparent,
            data: RawValue::from_string(data.to_owned()).expect("JSON"),
            prev_hash: format!("{:064x}", position.wrapping_mul(31)),
            hash: format!("{:064x}", position.wrapping_mul(37)),
        };
        serde_json::to_vec(&envelope).expect("an envelope serializes")
    }

    /// The same envelope as a cluster node renders it, with its partition first.
    fn with_partition(partition: u32, stored: &[u8]) -> Vec<u8> {
        let mut out = format!("{{\"partition\":{partition},").into_bytes();
        out.extend_from_slice(&stored[1..]);
        out
    }

    #[test]
    fn every_event_type_takes_the_fast_path_and_reads_as_serde_reads_it() {
        for (n, (event_type, version, data)) in every_event_type().into_iter().enumerate() {
            let n = n as u64;
            let optional = if n.is_multiple_of(2) {
                [
                    Some(format!("cmd-{n}")),
                    Some(format!("corr-{n}")),
                    None,
                    Some(format!("00-{:032x}-{:016x}-01", n + 1, n + 2)),
                ]
            } else {
                [None, None, Some(format!("msg-{n}")), None]
            };
            let times = (
                1_767_225_600_000_000_000 + i128::from(n) * 1_000_017,
                1_767_225_600_000_000_000 + i128::from(n) * 999_999_937,
            );
            let stored = envelope(
                n + 1,
                "acme/q1",
                &event_type,
                version,
                &data,
                times,
                optional,
                "ana",
            );
            let fast = fast::fields(&stored).unwrap_or_else(|| panic!("{event_type} v{version}"));
            let reference = decode_with_serde(Position(n + 1), &stored).expect("serde reads it");
            assert_eq!(fast, reference, "{event_type} v{version}");
            assert_eq!(fast.data, data, "the payload as stored");
            assert_eq!(fast.event_type, event_type);
            assert_eq!(
                fast::fields(&with_partition(7, &stored)),
                Some(super::Fields {
                    partition: Some(7),
                    ..reference
                })
            );
        }
    }

    #[test]
    fn what_is_not_the_stored_layout_goes_to_serde_and_fails_as_serde_fails() {
        let stored = envelope(
            5,
            "acme/q1",
            "GoalDefined",
            1,
            r#"{"goal_id":"g"}"#,
            (0, 1),
            [None, None, None, None],
            "ana",
        );
        for cut in [1, 2, 64, 130, stored.len() / 2] {
            let short = &stored[..stored.len() - cut];
            assert!(fast::fields(short).is_none(), "cut {cut}");
            assert!(decode(Position(5), short).is_err(), "cut {cut}");
        }
        // Another field order: serde reads it, the fast path leaves it.
        let mut value: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&stored).expect("JSON");
        let hash = value.remove("hash").expect("hash");
        let mut reordered = serde_json::Map::new();
        reordered.insert("hash".into(), hash);
        reordered.extend(value);
        let reordered = serde_json::to_vec(&reordered).expect("JSON");
        assert!(fast::fields(&reordered).is_none());
        assert_eq!(
            decode(Position(5), &reordered).expect("serde reads it"),
            decode_with_serde(Position(5), &stored).expect("serde reads it")
        );
    }

    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9/_-]{1,40}",
            any::<String>().prop_filter("not empty", |s| !s.is_empty()),
            "[ -~\u{7f}\u{e9}\u{1F600}\"\\\\\n\t]{1,20}",
        ]
    }

    fn any_data() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            any::<f64>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(|x| serde_json::json!(x)),
            any_text().prop_map(serde_json::Value::String),
            Just(serde_json::Value::Null),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(any_text(), inner, 0..4)
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        })
        .prop_map(|value| value.to_string())
    }

    /// Nanosecond times over all the years the columns hold (1677 to 2262).
    fn any_time() -> impl Strategy<Value = i128> {
        prop_oneof![
            (i64::MIN..=i64::MAX).prop_map(i128::from),
            (0i64..9_000_000_000_000_000_000)
                .prop_map(|n| i128::from(n / 1_000_000_000) * 1_000_000_000),
            (0i64..9_000_000_000_000_000_000).prop_map(|n| i128::from(n / 1_000) * 1_000),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn decoding_any_envelope_reads_as_serde_reads_it(
            position in 1u64..u64::MAX / 64,
            stream in any_text().prop_filter("a valid stream id", |s| StreamId::new(s.as_str()).is_ok() && s.len() <= 200),
            event_type in any_text(),
            schema_version in any::<u32>(),
            data in any_data(),
            times in (any_time(), any_time()),
            optional in prop::array::uniform4(prop::option::of(any_text())),
            actor in any_text(),
            partition in prop::option::of(any::<u32>()),
        ) {
            let mut stored = envelope(
                position, &stream, &event_type, schema_version, &data, times, optional, &actor,
            );
            if let Some(partition) = partition {
                stored = with_partition(partition, &stored);
            }
            let reference = decode_with_serde(Position(position), &stored).expect("serde reads it");
            let plain = |text: &str| !text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
            let fast = fast::fields(&stored);
            if let Some(fast) = &fast {
                prop_assert_eq!(fast, &reference);
            }
            // Envelopes without escapes, in the years the fast path reads, take it.
            let in_years = |t: i128| (0..9_214_646_400_000_000_000).contains(&t);
            if plain(&stream) && plain(&event_type) && plain(&actor) && in_years(times.0) && in_years(times.1) {
                let optional_plain = serde_json::from_slice::<serde_json::Value>(&stored)
                    .map(|v| ["command_id", "correlation_id", "causation_id", "traceparent"]
                        .iter()
                        .all(|k| v[k].as_str().is_none_or(plain)))
                    .unwrap_or(false);
                if optional_plain {
                    prop_assert!(fast.is_some());
                }
            }
            prop_assert_eq!(decode(Position(position), &stored).expect("decodes"), reference);
        }

        #[test]
        fn times_read_as_jiff_reads_them(nanos in any_time()) {
            let time = jiff::Timestamp::from_nanosecond(nanos).expect("a time");
            let text = time.to_string();
            let fast = fast::timestamp_for_test(&text);
            if let Some(fast) = fast {
                prop_assert_eq!(i128::from(fast), time.as_nanosecond());
            }
            if (0..9_214_646_400_000_000_000).contains(&nanos) {
                prop_assert!(fast.is_some(), "{}", text);
            }
        }

        #[test]
        fn a_plain_run_ends_at_the_first_quote_backslash_or_control_byte(
            bytes in prop::collection::vec(prop_oneof![Just(b'"'), Just(b'\\'), 0u8..0x20, 0x20u8..=0xff, 0x20u8..=0x7f], 0..40)
        ) {
            let expected = bytes.iter().take_while(|&&b| b >= 0x20 && b != b'"' && b != b'\\').count();
            prop_assert_eq!(fast::plain_length_for_test(&bytes), expected);
        }
    }
}
