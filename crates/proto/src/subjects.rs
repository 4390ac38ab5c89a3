//! NATS subject and header names of the Planledger bus.
//!
//! Events: `planledger.evt.<tenant>.<plan_id>.<EventType>`; commands:
//! `planledger.cmd.<tenant>.<plan_id>`. Each variable part is one subject token, encoded by
//! [`encode_token`] so that ids containing `.` (allowed in plan ids) or other characters NATS
//! gives a meaning to cannot split or widen a subject.

/// Prefix of every event subject.
pub const EVENT_SUBJECT_PREFIX: &str = "planledger.evt";
/// Prefix of every command subject.
pub const COMMAND_SUBJECT_PREFIX: &str = "planledger.cmd";
/// Default name of the JetStream stream that holds the events.
pub const DEFAULT_EVENT_STREAM: &str = "PLANLEDGER_EVENTS";

/// Header carrying the event id; JetStream deduplicates on it.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// Header carrying the event's global log position (decimal).
pub const HEADER_POSITION: &str = "Planledger-Position";
/// Header naming the body's format.
pub const HEADER_CONTENT_TYPE: &str = "Content-Type";
/// Header carrying the bearer token of a command.
pub const HEADER_AUTHORIZATION: &str = "Authorization";

/// Header carrying the partition whose log holds the event (cluster mode; decimal).
pub const HEADER_PARTITION: &str = "Planledger-Partition";
/// Header carrying the idempotency scope of the append an event starts (cluster mode).
pub const HEADER_COMMAND_SCOPE: &str = "Planledger-Command-Scope";
/// Header carrying the client's command id of the append an event starts (cluster mode).
pub const HEADER_COMMAND_ID: &str = "Planledger-Command-Id";
/// Header carrying the digest of the command's content of the append an event starts
/// (cluster mode), so a repeated command id can be told from a different command.
pub const HEADER_COMMAND_FINGERPRINT: &str = "Planledger-Command-Fingerprint";

/// Token standing for an empty id (a stream id without a tenant).
const EMPTY_TOKEN: &str = "_";

/// Encodes an id as one NATS subject token.
///
/// ASCII letters, digits, `-` and `_` are kept; every other byte (of the UTF-8 text) is written
/// as `%XX` with upper-case hex, so `q3.plan` becomes `q3%2Eplan`. The empty id becomes `_`
/// (and the id `_` itself `%5F`, so that every encoding decodes back to its id).
pub fn encode_token(id: &str) -> String {
    if id.is_empty() {
        return EMPTY_TOKEN.to_string();
    }
    if id == EMPTY_TOKEN {
        return "%5F".to_string();
    }
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(hex_digit(byte >> 4));
            out.push(hex_digit(byte & 0x0f));
        }
    }
    out
}

/// Decodes a token written by [`encode_token`]; `None` if it is not a valid encoding.
pub fn decode_token(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let high = hex_value(*bytes.get(index + 1)?)?;
                let low = hex_value(*bytes.get(index + 2)?)?;
                out.push(high << 4 | low);
                index += 3;
            }
            byte if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' => {
                out.push(byte);
                index += 1;
            }
            _ => return None,
        }
    }
    if token == EMPTY_TOKEN {
        return Some(String::new());
    }
    String::from_utf8(out).ok()
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789ABCDEF"[usize::from(nibble & 0x0f)])
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

/// The subject an event is published on: `<prefix>.<tenant>.<plan_id>.<event_type>`.
pub fn event_subject(prefix: &str, tenant: &str, plan_id: &str, event_type: &str) -> String {
    format!(
        "{prefix}.{}.{}.{}",
        encode_token(tenant),
        encode_token(plan_id),
        encode_token(event_type)
    )
}

/// The subject prefix of one partition's log stream: `planledger.evt.p<partition>`.
pub fn partition_subject_prefix(partition: u32) -> String {
    format!("{EVENT_SUBJECT_PREFIX}.p{partition}")
}

/// The JetStream stream holding one partition's log: `PLANLEDGER_P<nn>` (at least two digits).
pub fn partition_stream_name(partition: u32) -> String {
    format!("PLANLEDGER_P{partition:02}")
}

/// The subject commands for one plan are sent to: `planledger.cmd.<tenant>.<plan_id>`.
pub fn command_subject(tenant: &str, plan_id: &str) -> String {
    format!(
        "{COMMAND_SUBJECT_PREFIX}.{}.{}",
        encode_token(tenant),
        encode_token(plan_id)
    )
}

/// Parses a command subject into `(tenant, plan_id)`; `None` if it is not one.
pub fn parse_command_subject(subject: &str) -> Option<(String, String)> {
    let rest = subject
        .strip_prefix(COMMAND_SUBJECT_PREFIX)?
        .strip_prefix('.')?;
    let (tenant, plan_id) = rest.split_once('.')?;
    if plan_id.contains('.') {
        return None;
    }
    Some((decode_token(tenant)?, decode_token(plan_id)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_are_kept_as_they_are() {
        assert_eq!(encode_token("acme-corp_2"), "acme-corp_2");
        assert_eq!(
            event_subject(EVENT_SUBJECT_PREFIX, "acme", "q3", "GoalDefined"),
            "planledger.evt.acme.q3.GoalDefined"
        );
    }

    #[test]
    fn dots_and_wildcards_cannot_split_a_subject() {
        assert_eq!(encode_token("q3.plan"), "q3%2Eplan");
        assert_eq!(encode_token("a*b>c d"), "a%2Ab%3Ec%20d");
        assert_eq!(encode_token("100%"), "100%25");
        assert_eq!(
            command_subject("acme", "v1.2"),
            "planledger.cmd.acme.v1%2E2"
        );
    }

    #[test]
    fn partition_names_and_subjects() {
        assert_eq!(partition_stream_name(0), "PLANLEDGER_P00");
        assert_eq!(partition_stream_name(7), "PLANLEDGER_P07");
        assert_eq!(partition_stream_name(123), "PLANLEDGER_P123");
        assert_eq!(
            event_subject(
                &partition_subject_prefix(7),
                "acme",
                "q3.plan",
                "GoalDefined"
            ),
            "planledger.evt.p7.acme.q3%2Eplan.GoalDefined"
        );
    }

    #[test]
    fn tokens_decode_to_the_original_id() {
        for id in ["q3.plan", "plain", "100%", "ünïcode", "a b", "", "_", "a_b"] {
            assert_eq!(decode_token(&encode_token(id)).as_deref(), Some(id));
        }
        assert_eq!(decode_token("bad%2"), None);
        assert_eq!(decode_token("bad.token"), None);
    }

    #[test]
    fn command_subjects_parse_back() {
        assert_eq!(
            parse_command_subject(&command_subject("acme", "q3.plan")),
            Some(("acme".to_string(), "q3.plan".to_string()))
        );
        assert_eq!(parse_command_subject("planledger.cmd.acme"), None);
        assert_eq!(parse_command_subject("planledger.cmd.acme.a.b"), None);
        assert_eq!(parse_command_subject("planledger.evt.acme.q3"), None);
    }
}
