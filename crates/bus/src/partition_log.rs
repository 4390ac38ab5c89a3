//! A partition's log committed to its JetStream stream (cluster mode): [`JetStreamCommitter`],
//! the store's [`Committer`] over the stream `PLANLEDGER_P<nn>`.
//!
//! Each event is one message: subject `planledger.evt.p<partition>.<tenant>.<plan_id>.<Type>`
//! (tokens encoded as [`subjects::encode_token`] does), body the protobuf `EventEnvelope` with
//! its `partition`, headers `Nats-Msg-Id` (the event id), `Planledger-Position` (== the stream
//! sequence), `Planledger-Partition`, `Content-Type`, and on the first event of an append that
//! remembers its command id `Planledger-Command-Scope`, `Planledger-Command-Id` and (when the
//! command has one) `Planledger-Command-Fingerprint`, each encoded as a subject token is
//! ([`subjects::encode_token`]: a command id may hold any character, a header value may not).
//!
//! A commit is one JetStream atomic batch (ADR-50) on one connection, in order: the first
//! message carries a reply subject and `Nats-Expected-Last-Sequence` (the position before the
//! batch), the middle ones no reply, the last one `Nats-Batch-Commit: 1` and a reply subject.
//! The stream stores the whole batch only if its last sequence is still the expected one when
//! the batch commits, so a writer with a stale view of the log cannot get anything stored: that
//! compare-and-append is the fence. One batch is in flight per committer, always (a mutex
//! holds the others back): with two in flight the second would name the first's *intended* end
//! and could land on a foreign history of the same length.
//!
//! The trait is blocking and is called from the store's own threads: each call runs on the
//! service's runtime through [`tokio::runtime::Handle::block_on`], bounded by a timeout. It must
//! never be called from inside a task of that runtime (`block_on` panics there).

use std::sync::Mutex;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, stream};
use async_nats::{Client, HeaderMap, StatusCode, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use planledger_proto::subjects::{
    self, HEADER_CONTENT_TYPE, HEADER_MSG_ID, HEADER_PARTITION, HEADER_POSITION,
};
use planledger_proto::v1::EventEnvelope;
use planledger_proto::{EVENT_ENVELOPE_CONTENT_TYPE, Message as _};
use planledger_store::{
    CommitError, CommitEvent, CommittedEvent, Committer, MAX_COMMIT_EVENTS, Position,
};
use tokio::runtime::Handle;

use crate::BusError;
use crate::command_headers;
use crate::connection::find_stream;
use crate::envelope::{envelope_from_proto, stored_json_to_proto};

/// Default bound on one commit (sending the batch and waiting for its acknowledgement) and on
/// one read.
pub const DEFAULT_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

const HEADER_BATCH_ID: &str = "Nats-Batch-Id";
const HEADER_BATCH_SEQUENCE: &str = "Nats-Batch-Sequence";
const HEADER_BATCH_COMMIT: &str = "Nats-Batch-Commit";
const HEADER_EXPECTED_LAST_SEQUENCE: &str = "Nats-Expected-Last-Sequence";
/// The stream sequence a direct get answers with.
const HEADER_SEQUENCE: &str = "Nats-Sequence";

/// Settings of a [`JetStreamCommitter`].
#[derive(Clone, Debug)]
pub struct PartitionLogConfig {
    /// The partition (its stream is `PLANLEDGER_P<nn>`).
    pub partition: u32,
    /// Bound on one commit (send and acknowledgement) and on one read.
    pub timeout: Duration,
}

impl PartitionLogConfig {
    /// The settings for `partition` with the default timeout.
    pub fn new(partition: u32) -> Self {
        Self {
            partition,
            timeout: DEFAULT_COMMIT_TIMEOUT,
        }
    }
}

/// The store's [`Committer`] over one partition's JetStream stream.
pub struct JetStreamCommitter {
    runtime: Handle,
    client: Client,
    context: jetstream::Context,
    partition: u32,
    stream: String,
    subject_prefix: String,
    timeout: Duration,
    replies: tokio::sync::Mutex<BatchReplies>,
    /// Held for a whole commit, so one batch at most is in flight.
    in_flight: Mutex<()>,
}

impl std::fmt::Debug for JetStreamCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamCommitter")
            .field("stream", &self.stream)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The message for one event of a partition log, without the batch headers.
pub fn partition_message(
    partition: u32,
    event: &CommitEvent,
) -> Result<(String, HeaderMap, Bytes), BusError> {
    // Straight from the stored JSON to the wire form, as the relay does (no full `Envelope`).
    let (mut wire, _) =
        stored_json_to_proto(&event.stored).map_err(|e| BusError::InvalidEvent {
            position: event.position.get(),
            detail: format!("its stored JSON does not decode: {e}"),
        })?;
    if wire.position != event.position.get() {
        return Err(BusError::InvalidEvent {
            position: event.position.get(),
            detail: format!("its stored JSON says position {}", wire.position),
        });
    }
    wire.partition = partition;
    let subject = subjects::event_subject(
        &subjects::partition_subject_prefix(partition),
        &wire.tenant,
        &wire.plan_id,
        &wire.r#type,
    );
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_MSG_ID, wire.event_id.as_str());
    headers.insert(HEADER_POSITION, wire.position.to_string().as_str());
    headers.insert(HEADER_PARTITION, partition.to_string().as_str());
    headers.insert(HEADER_CONTENT_TYPE, EVENT_ENVELOPE_CONTENT_TYPE);
    if let Some(command) = &event.command {
        for (name, value) in command_headers::encode(command) {
            headers.insert(name, value.as_str());
        }
    }
    Ok((subject, headers, Bytes::from(wire.encode_to_vec())))
}

/// The event a partition log's message holds, checked against the sequence it was read at and
/// the partition it was read from.
pub fn committed_event(
    partition: u32,
    sequence: u64,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<CommittedEvent, BusError> {
    let invalid = |detail: String| BusError::InvalidEvent {
        position: sequence,
        detail,
    };
    let wire = EventEnvelope::decode(payload)
        .map_err(|e| invalid(format!("its body is not an EventEnvelope: {e}")))?;
    if wire.partition != partition {
        return Err(invalid(format!(
            "it names partition {}, read from partition {partition}",
            wire.partition
        )));
    }
    let envelope = envelope_from_proto(wire).map_err(|e| invalid(e.to_string()))?;
    if envelope.position.get() != sequence {
        return Err(invalid(format!(
            "its envelope says position {}",
            envelope.position
        )));
    }
    if let Some(position) = headers
        .and_then(|h| h.get(HEADER_POSITION))
        .map(|v| v.as_str())
        && position != sequence.to_string()
    {
        return Err(invalid(format!(
            "its {HEADER_POSITION} header is {position}"
        )));
    }
    let command = command_headers::decode(headers).map_err(invalid)?;
    Ok(CommittedEvent { envelope, command })
}

/// A JetStream API answer to a published message: an error or a PubAck.
#[derive(serde::Deserialize)]
struct PubAckReply {
    error: Option<ApiError>,
    stream: Option<String>,
    seq: Option<u64>,
    batch: Option<String>,
    count: Option<u64>,
}

#[derive(serde::Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (err_code {})", self.description, self.err_code)
    }
}

/// The reply subscription of one connection's atomic batches ([`publish_atomic_batch`]): one
/// batch in flight on it at a time (hence `&mut`).
pub struct BatchReplies {
    inbox: String,
    subscription: Subscriber,
}

impl BatchReplies {
    /// Subscribes to a fresh inbox of `client` for the replies of its batches.
    pub async fn subscribe(client: &Client) -> Result<Self, BusError> {
        let inbox = client.new_inbox();
        let subscription = client
            .subscribe(format!("{inbox}.>"))
            .await
            .map_err(|e| BusError::nats("subscribe to commit replies", e))?;
        Ok(Self {
            inbox,
            subscription,
        })
    }
}

/// Why [`publish_atomic_batch`] did not store a batch.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AtomicBatchError {
    /// A message was not taken by the client: the batch was never committed, nothing stored.
    #[error("{0}")]
    NotSent(String),
    /// The stream rejected the batch whole (e.g. a wrong last sequence): nothing stored.
    #[error("{0}")]
    Refused(String),
    /// Whether the batch was stored cannot be told (connection closed, unexpected answer).
    #[error("{0}")]
    Unknown(String),
    /// Nobody answered on the batch's subjects (no stream, or no leader right now). `first`:
    /// nobody took the batch's first message, so nothing of the batch can be stored (a batch
    /// is stored only from its first message).
    #[error("no responders")]
    NoResponders {
        /// Whether it was the first message that found nobody.
        first: bool,
    },
}

/// Publishes `messages` (as [`partition_message`] makes them) to `stream` as one JetStream
/// atomic batch whose first message expects the stream's last sequence to be `expected_last`,
/// and waits for its acknowledgement: stored at exactly `expected_last + 1 ..`, or not at all.
/// No timeout of its own (the caller bounds it). What [`JetStreamCommitter`] commits with, and
/// what `planledger-bench append --log-commit jetstream` measures as the raw ceiling.
pub async fn publish_atomic_batch(
    client: &Client,
    replies: &mut BatchReplies,
    stream: &str,
    expected_last: u64,
    messages: Vec<(String, HeaderMap, Bytes)>,
) -> Result<(), AtomicBatchError> {
    let count = messages.len();
    if count == 0 {
        return Ok(());
    }
    let last_position = expected_last + count as u64;
    let batch_id = uuid::Uuid::now_v7().simple().to_string();
    let start_reply = format!("{}.{batch_id}.start", replies.inbox);
    let commit_reply = format!("{}.{batch_id}.commit", replies.inbox);
    for (index, (subject, mut headers, payload)) in messages.into_iter().enumerate() {
        let sequence = index + 1;
        headers.insert(HEADER_BATCH_ID, batch_id.as_str());
        headers.insert(HEADER_BATCH_SEQUENCE, sequence.to_string().as_str());
        if sequence == 1 {
            headers.insert(
                HEADER_EXPECTED_LAST_SEQUENCE,
                expected_last.to_string().as_str(),
            );
        }
        let sent = if sequence == count {
            headers.insert(HEADER_BATCH_COMMIT, "1");
            client
                .publish_with_reply_and_headers(subject, commit_reply.clone(), headers, payload)
                .await
        } else if sequence == 1 {
            client
                .publish_with_reply_and_headers(subject, start_reply.clone(), headers, payload)
                .await
        } else {
            client.publish_with_headers(subject, headers, payload).await
        };
        // A message the client did not take was never sent, and without its commit message
        // the batch is abandoned by the server: nothing of it can be stored.
        sent.map_err(|e| {
            AtomicBatchError::NotSent(format!("message {sequence} of {count} was not sent: {e}"))
        })?;
    }
    let prefix = format!("{}.{batch_id}.", replies.inbox);
    loop {
        let Some(reply) = replies.subscription.next().await else {
            return Err(AtomicBatchError::Unknown(
                "the reply subscription ended (connection closed)".into(),
            ));
        };
        let Some(kind) = reply.subject.as_str().strip_prefix(&prefix) else {
            // A late answer to an earlier batch whose outcome was reported unknown.
            continue;
        };
        if reply.status == Some(StatusCode::NO_RESPONDERS) {
            return Err(AtomicBatchError::NoResponders {
                first: kind == "start",
            });
        }
        if kind == "start" && reply.payload.is_empty() {
            // The batch's first message was accepted and staged.
            continue;
        }
        let answer: PubAckReply = serde_json::from_slice(&reply.payload).map_err(|e| {
            AtomicBatchError::Unknown(format!("the {kind} reply does not parse: {e}"))
        })?;
        if let Some(error) = answer.error {
            // An API error on the batch: it was rejected whole, nothing of it is stored.
            return Err(AtomicBatchError::Refused(format!("{stream}: {error}")));
        }
        if kind != "commit" {
            continue;
        }
        let (answered, sequence, batch, stored) =
            (answer.stream, answer.seq, answer.batch, answer.count);
        if answered.as_deref() == Some(stream)
            && sequence == Some(last_position)
            && batch.as_deref() == Some(batch_id.as_str())
            && stored == Some(count as u64)
        {
            return Ok(());
        }
        return Err(AtomicBatchError::Unknown(format!(
            "the acknowledgement does not match the batch: stream {answered:?}, sequence \
             {sequence:?}, batch {batch:?}, count {stored:?}; expected {stream}, {last_position}, \
             {batch_id}, {count}"
        )));
    }
}

impl JetStreamCommitter {
    /// A committer for `config.partition` over `client`, on the runtime this is called in.
    ///
    /// Fails if the partition's stream does not exist (`planledger cluster init` creates it;
    /// nothing here ever does) or does not allow atomic batches.
    pub async fn open(client: Client, config: PartitionLogConfig) -> Result<Self, BusError> {
        let context = jetstream::new(client.clone());
        let name = subjects::partition_stream_name(config.partition);
        let Some(mut existing) = find_stream(&context, &name).await? else {
            return Err(BusError::PartitionStreamMissing { stream: name });
        };
        let info = existing
            .info()
            .await
            .map_err(|e| BusError::nats("read stream info", e))?;
        check_partition_stream(&info.config, config.partition)?;
        let replies = BatchReplies::subscribe(&client).await?;
        Ok(Self {
            runtime: Handle::current(),
            client,
            context,
            partition: config.partition,
            stream: name,
            subject_prefix: subjects::partition_subject_prefix(config.partition),
            timeout: config.timeout,
            replies: tokio::sync::Mutex::new(replies),
            in_flight: Mutex::new(()),
        })
    }

    /// The stream's name, `PLANLEDGER_P<nn>`.
    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    async fn send_and_confirm(
        &self,
        expected_last: Position,
        messages: Vec<(String, HeaderMap, Bytes)>,
    ) -> Result<(), CommitError> {
        let mut replies = self.replies.lock().await;
        match publish_atomic_batch(
            &self.client,
            &mut replies,
            &self.stream,
            expected_last.get(),
            messages,
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(AtomicBatchError::NotSent(detail)) => Err(CommitError::Unavailable(detail)),
            Err(AtomicBatchError::Refused(detail)) => Err(CommitError::Refused(detail)),
            Err(AtomicBatchError::Unknown(detail)) => Err(CommitError::Unknown(detail)),
            Err(AtomicBatchError::NoResponders { first }) => Err(self.no_responders(first).await),
        }
    }

    /// Why a batch found nobody listening: the stream is gone (nothing stored), or it has no
    /// leader right now. Nothing is stored either when nobody took the batch's first message
    /// (`first`): the stream stores a batch only from its first message, so the messages after
    /// it, even if a new leader took them, are refused as a batch without a start. Otherwise
    /// whether the batch was stored cannot be told.
    async fn no_responders(&self, first: bool) -> CommitError {
        match find_stream(&self.context, &self.stream).await {
            Ok(None) => CommitError::Unavailable(
                BusError::PartitionStreamMissing {
                    stream: self.stream.clone(),
                }
                .to_string(),
            ),
            _ if first => CommitError::Unavailable(format!(
                "{} has no leader right now (nobody took the batch's first message); nothing was \
                 stored",
                self.stream
            )),
            _ => CommitError::Unknown(format!("no responders on {}", self.subject_prefix)),
        }
    }

    async fn last_sequence(&self) -> Result<u64, CommitError> {
        match find_stream(&self.context, &self.stream).await {
            // Looking the stream up fetched its info: one request, not two.
            Ok(Some(stream)) => Ok(stream.cached_info().state.last_sequence),
            Ok(None) => Err(CommitError::Unavailable(
                BusError::PartitionStreamMissing {
                    stream: self.stream.clone(),
                }
                .to_string(),
            )),
            Err(e) => Err(CommitError::Unavailable(e.to_string())),
        }
    }

    /// Reads sequences `from..=to` (all of which exist) with batched direct gets; a replica
    /// that has not caught up answers fewer, and the rest is asked for again.
    async fn read_range(&self, from: u64, to: u64) -> Result<Vec<CommittedEvent>, CommitError> {
        let mut events = Vec::with_capacity((to - from + 1) as usize);
        let mut next = from;
        while next <= to {
            let inbox = self.client.new_inbox();
            let mut answers = self
                .client
                .subscribe(inbox.clone())
                .await
                .map_err(|e| CommitError::Unavailable(format!("subscribe: {e}")))?;
            let request = serde_json::json!({ "seq": next, "batch": to - next + 1 });
            self.client
                .publish_with_reply(
                    format!("$JS.API.DIRECT.GET.{}", self.stream),
                    inbox,
                    Bytes::from(request.to_string()),
                )
                .await
                .map_err(|e| CommitError::Unavailable(format!("direct get: {e}")))?;
            while let Some(message) = answers.next().await {
                match message.status {
                    // End of this batch (204) or nothing at `next` on this replica (404).
                    Some(status) if status != StatusCode::OK => break,
                    _ => {}
                }
                let sequence = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(HEADER_SEQUENCE))
                    .and_then(|v| v.as_str().parse::<u64>().ok())
                    .ok_or_else(|| {
                        CommitError::Unavailable(format!(
                            "a direct get answer of {} has no {HEADER_SEQUENCE} header",
                            self.stream
                        ))
                    })?;
                if sequence != next {
                    return Err(CommitError::Unavailable(format!(
                        "{} answered sequence {sequence} where {next} was due (a gap)",
                        self.stream
                    )));
                }
                let event = committed_event(
                    self.partition,
                    sequence,
                    message.headers.as_ref(),
                    &message.payload,
                )
                .map_err(|e| CommitError::Unavailable(e.to_string()))?;
                events.push(event);
                next += 1;
                if next > to {
                    break;
                }
            }
            let _ = answers.unsubscribe().await;
        }
        Ok(events)
    }

    fn run<T>(
        &self,
        what: &str,
        work: impl Future<Output = Result<T, CommitError>>,
        on_timeout: fn(String) -> CommitError,
    ) -> Result<T, CommitError> {
        let timeout = self.timeout;
        self.runtime
            .block_on(async { tokio::time::timeout(timeout, work).await })
            .unwrap_or_else(|_| {
                Err(on_timeout(format!(
                    "{what} on {} got no answer within {timeout:?}",
                    self.stream
                )))
            })
    }
}

/// Checks that an existing stream is fit to be partition `partition`'s log.
pub(crate) fn check_partition_stream(
    config: &stream::Config,
    partition: u32,
) -> Result<(), BusError> {
    let subjects = vec![format!(
        "{}.>",
        subjects::partition_subject_prefix(partition)
    )];
    let mut problems = Vec::new();
    if config.subjects != subjects {
        problems.push(format!(
            "subjects {:?} instead of {subjects:?}",
            config.subjects
        ));
    }
    if !config.allow_atomic_publish {
        problems.push("atomic batches are not allowed (allow_atomic)".into());
    }
    if !config.deny_delete || !config.deny_purge {
        problems.push("deleting or purging messages is allowed".into());
    }
    if !crate::connection::keeps_everything(config) {
        problems.push("it has limits or a retention that drops messages".into());
    }
    if config.storage != stream::StorageType::File {
        problems.push("it is not on file storage".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(BusError::PartitionStreamMisconfigured {
            stream: config.name.clone(),
            detail: problems.join("; "),
        })
    }
}

impl Committer for JetStreamCommitter {
    fn describe(&self) -> String {
        format!("JetStream stream {}", self.stream)
    }

    fn commit(&self, expected_last: Position, events: &[CommitEvent]) -> Result<(), CommitError> {
        if events.is_empty() {
            return Ok(());
        }
        if events.len() > MAX_COMMIT_EVENTS {
            return Err(CommitError::Unavailable(format!(
                "{} events in one commit, at most {MAX_COMMIT_EVENTS} fit one atomic batch",
                events.len()
            )));
        }
        let mut messages = Vec::with_capacity(events.len());
        for (offset, event) in events.iter().enumerate() {
            if event.position.get() != expected_last.get() + 1 + offset as u64 {
                return Err(CommitError::Unavailable(format!(
                    "event {offset} of the batch has position {}, after {expected_last} it must \
                     be {}",
                    event.position,
                    expected_last.get() + 1 + offset as u64
                )));
            }
            messages.push(
                partition_message(self.partition, event)
                    .map_err(|e| CommitError::Unavailable(e.to_string()))?,
            );
        }
        // One batch in flight, whatever the caller does; a poisoned lock only means an earlier
        // commit panicked, which left nothing half-done here.
        let _one_at_a_time = self
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.client.connection_state() != State::Connected {
            return Err(CommitError::Unavailable(format!(
                "not connected to NATS; nothing was sent to {}",
                self.stream
            )));
        }
        self.run(
            "the commit",
            self.send_and_confirm(expected_last, messages),
            CommitError::Unknown,
        )
    }

    fn last_position(&self) -> Result<Position, CommitError> {
        self.run(
            "stream info",
            self.last_sequence(),
            CommitError::Unavailable,
        )
        .map(Position)
    }

    fn read_after(&self, after: Position, max: usize) -> Result<Vec<CommittedEvent>, CommitError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.run(
            "reading the log",
            async {
                let last = self.last_sequence().await?;
                let to = last.min(after.get().saturating_add(max as u64));
                if to <= after.get() {
                    return Ok(Vec::new());
                }
                self.read_range(after.get() + 1, to).await
            },
            CommitError::Unavailable,
        )
    }
}

#[cfg(test)]
mod tests;
