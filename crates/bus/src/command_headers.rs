//! The `Planledger-Command-*` headers: the idempotency record an append carries on its first
//! message, written by the partition committer (cluster mode) and the relay (one node), and
//! read back by every catch-up from a stream ([`crate::JetStreamCommitter`],
//! [`crate::EventStreamLog`]), so a log rebuilt from a stream answers a repeated
//! `Idempotency-Key` as the writer that appended it would.
//!
//! Each value is encoded as a subject token is ([`subjects::encode_token`]): a client's command
//! id may hold any character, and a line break in a header value would end the header.

use async_nats::HeaderMap;
use planledger_proto::subjects::{
    self, HEADER_COMMAND_FINGERPRINT, HEADER_COMMAND_ID, HEADER_COMMAND_SCOPE,
};
use planledger_store::CommandHeader;

/// The headers (name, encoded value) that carry `command`.
pub(crate) fn encode(command: &CommandHeader) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        (HEADER_COMMAND_SCOPE, subjects::encode_token(&command.scope)),
        (HEADER_COMMAND_ID, subjects::encode_token(&command.id)),
    ];
    if let Some(fingerprint) = &command.fingerprint {
        headers.push((
            HEADER_COMMAND_FINGERPRINT,
            subjects::encode_token(fingerprint),
        ));
    }
    headers
}

/// The command record a message's headers carry, if any; an error naming the header when one
/// is not encoded or only one of scope and id is there.
pub(crate) fn decode(headers: Option<&HeaderMap>) -> Result<Option<CommandHeader>, String> {
    let decoded = |name: &str| -> Result<Option<String>, String> {
        headers
            .and_then(|h| h.get(name))
            .map(|value| {
                let value = value.as_str();
                subjects::decode_token(value)
                    .ok_or_else(|| format!("its {name} header {value:?} is not encoded"))
            })
            .transpose()
    };
    match (decoded(HEADER_COMMAND_SCOPE)?, decoded(HEADER_COMMAND_ID)?) {
        (Some(scope), Some(id)) => Ok(Some(CommandHeader {
            scope,
            id,
            fingerprint: decoded(HEADER_COMMAND_FINGERPRINT)?,
        })),
        (None, None) => Ok(None),
        _ => Err(format!(
            "it carries only one of {HEADER_COMMAND_SCOPE} and {HEADER_COMMAND_ID}"
        )),
    }
}
