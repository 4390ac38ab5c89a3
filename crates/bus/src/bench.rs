//! What the relay benchmark (`planledger-bench relay`) needs of the relay's internals; compiled
//! only with the `bench` feature.

use async_nats::jetstream::message::PublishMessage as Publish;
use planledger_store::Envelope;

use crate::envelope::envelope_to_proto;
use crate::relay::{message_for, message_parts};

/// The protobuf body and the subject/headers the relay publishes `envelope` with (without the
/// command record headers the first event of an append with an `Idempotency-Key` carries): the
/// raw ceiling publishes exactly these.
pub fn publish_for(envelope: &Envelope, subject_prefix: &str) -> (String, Publish) {
    message_for(&envelope_to_proto(envelope), None, subject_prefix)
}

/// As [`publish_for`], as the parts of a core NATS publish (subject, headers, body): the
/// fast-ingest ceiling publishes them with a batch reply subject instead of one ack each.
pub fn parts_for(
    envelope: &Envelope,
    subject_prefix: &str,
) -> (String, async_nats::HeaderMap, bytes::Bytes) {
    message_parts(&envelope_to_proto(envelope), None, subject_prefix)
}
