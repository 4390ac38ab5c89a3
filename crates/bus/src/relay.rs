//! The outbox relay: tails the event log and publishes every event to JetStream, exactly once.
//!
//! How "exactly once, in order" is kept:
//! - **Resume from the stream, not from memory.** Each session starts by reading the last
//!   message actually in the stream and continues after its `Planledger-Position` header.
//! - **Check the stream still mirrors the log.** The relay records, beside its checkpoint, the
//!   constant offset between stream sequence and log position it publishes with. A session
//!   starts only if the stream agrees (its last message has that offset and is at or past the
//!   checkpoint; a stream that keeps everything still holds every message from sequence 1).
//!   A stream deleted, recreated or purged behind the relay's back halts it
//!   ([`RelayState::Halted`], [`HaltReason`]) instead of publishing into a stream that no
//!   longer mirrors the log; [`reset_stream`] (`planledger relay reset`) starts a new one.
//! - **Each publish names its predecessor.** A message carries `Nats-Expected-Last-Sequence`,
//!   so JetStream refuses it unless every earlier event is already stored: a publish lost in a
//!   broken connection cannot be overtaken by a later one.
//! - **`Nats-Msg-Id` is the event id**, so a publish repeated inside the duplicate window (an ack
//!   lost, a killed relay's buffered messages arriving late) is dropped by JetStream.
//! - **Acks are awaited in order** and the checkpoint only moves over acknowledged events.
//!
//! The relay never blocks the command path: it only reads the log. While NATS is unreachable
//! it retries with capped exponential backoff and reports its lag.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::{self, publish::PublishAck};
use bytes::Bytes;
use futures::FutureExt as _;
use jiff::Timestamp;
use planledger_proto::subjects::{
    self, EVENT_SUBJECT_PREFIX, HEADER_CONTENT_TYPE, HEADER_POSITION,
};
use planledger_proto::v1::EventEnvelope;
use planledger_proto::{EVENT_ENVELOPE_CONTENT_TYPE, Message as _};
use planledger_store::{CommandHeader, EventStore, Position, StoreError};
use serde::Serialize;
use tokio::sync::watch;

use crate::BusError;
use crate::command_headers;
use crate::connection::{StreamSpec, connect, ensure_stream, find_stream, keeps_everything};
use crate::envelope::header_position;
use crate::reader::{LogReader, Prepared};

/// Settings of the relay.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// NATS server URL(s), comma-separated.
    pub url: String,
    /// JetStream stream name.
    pub stream: String,
    /// Subject prefix; events go to `<prefix>.<tenant>.<plan_id>.<EventType>`.
    pub subject_prefix: String,
    /// Stream replicas (1 on one node, 3 on a cluster).
    pub replicas: usize,
    /// JetStream duplicate window for `Nats-Msg-Id`.
    pub duplicate_window: Duration,
    /// Most publishes awaiting their ack at once.
    pub ack_window: usize,
    /// Most events read from the log at once.
    pub read_batch: usize,
    /// How long to wait for one ack (or one JetStream API answer) before the session restarts.
    pub ack_timeout: Duration,
    /// First retry delay after a failure.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Name of the checkpoint the relay keeps in the store (the sequence offset is kept
    /// beside it as `<checkpoint>.sequence-offset`).
    pub checkpoint: String,
    /// How often, while publishing, the relay checks that the stream was not purged.
    pub stream_check_interval: Duration,
    /// Client name shown by the NATS server.
    pub client_name: String,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            stream: subjects::DEFAULT_EVENT_STREAM.into(),
            subject_prefix: EVENT_SUBJECT_PREFIX.into(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            ack_window: 1024,
            read_batch: 512,
            ack_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            checkpoint: "relay".into(),
            stream_check_interval: Duration::from_secs(5),
            client_name: "planledger-relay".into(),
        }
    }
}

impl RelayConfig {
    /// Checks the settings; names the first one that is out of range.
    pub fn validate(&self) -> Result<(), BusError> {
        let bad =
            |field: &'static str, rule: &'static str| Err(BusError::InvalidConfig { field, rule });
        if self.url.trim().is_empty() {
            return bad("url", "must name a NATS server");
        }
        if self.stream.is_empty()
            || self
                .stream
                .chars()
                .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace())
        {
            return bad(
                "stream",
                "must be non-empty without '.', '*', '>' or spaces",
            );
        }
        if self.subject_prefix.is_empty()
            || self.subject_prefix.split('.').any(|token| {
                token.is_empty()
                    || token.contains(['*', '>'])
                    || token.contains(char::is_whitespace)
            })
        {
            return bad("subject_prefix", "must be dot-separated literal tokens");
        }
        if !(1..=5).contains(&self.replicas) {
            return bad("replicas", "must be 1 to 5");
        }
        if self.duplicate_window.is_zero() {
            return bad("duplicate_window", "must be longer than zero");
        }
        if !(1..=65_536).contains(&self.ack_window) {
            return bad("ack_window", "must be 1 to 65536");
        }
        if self.read_batch == 0 {
            return bad("read_batch", "must be at least 1");
        }
        if self.ack_timeout.is_zero() {
            return bad("ack_timeout", "must be longer than zero");
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return bad("backoff", "initial must be > 0 and at most max");
        }
        if self.stream_check_interval.is_zero() {
            return bad("stream_check_interval", "must be longer than zero");
        }
        Ok(())
    }

    fn stream_spec(&self) -> StreamSpec {
        StreamSpec {
            name: self.stream.clone(),
            subject_prefix: self.subject_prefix.clone(),
            replicas: self.replicas,
            duplicate_window: self.duplicate_window,
        }
    }
}

/// What the relay is doing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayState {
    /// Not started yet.
    Starting,
    /// Connecting to NATS, or reading the stream's last position.
    Syncing,
    /// Publishing events behind the log's head.
    CatchingUp,
    /// Everything in the log is in the stream.
    CaughtUp,
    /// The last attempt failed; waiting before the next.
    Retrying,
    /// Stopped because the stream no longer mirrors the log (see `halted` and `last_error`);
    /// nothing more is published until an operator runs `planledger relay reset`.
    Halted,
    /// Stopped by shutdown.
    Stopped,
}

/// Why the relay halted: the stream no longer mirrors the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HaltReason {
    /// The stream is gone, or was recreated empty, after the relay had published to it.
    StreamDeleted,
    /// Messages were removed from a stream that keeps everything (a purge, or deleted messages).
    StreamPurged,
    /// The stream ends before the last position JetStream acknowledged to the relay.
    StreamBehind,
    /// The stream's last message sits at another offset from its position than the relay
    /// publishes with (republished or recreated by something else).
    OffsetChanged,
    /// The stream's last message was not published by a relay (no position header).
    ForeignMessage,
    /// The stream holds positions the log does not: the log was restored from an older backup
    /// (or the relay is pointed at another log's stream). Publishing would fork the stream.
    LogBehind,
}

impl HaltReason {
    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StreamDeleted => "stream_deleted",
            Self::StreamPurged => "stream_purged",
            Self::StreamBehind => "stream_behind",
            Self::OffsetChanged => "offset_changed",
            Self::ForeignMessage => "foreign_message",
            Self::LogBehind => "log_behind",
        }
    }

    /// Every reason, for metrics that show all of them.
    pub const ALL: [HaltReason; 6] = [
        Self::StreamDeleted,
        Self::StreamPurged,
        Self::StreamBehind,
        Self::OffsetChanged,
        Self::ForeignMessage,
        Self::LogBehind,
    ];
}

/// A snapshot of the relay's progress, for `/readyz` and operators.
#[derive(Clone, Debug, Serialize)]
pub struct RelayStatus {
    /// What the relay is doing.
    pub state: RelayState,
    /// Last position acknowledged by JetStream (0 before the first).
    pub published_position: u64,
    /// Last durable position of the log.
    pub log_position: u64,
    /// Events durable in the log but not yet acknowledged by JetStream.
    pub lag_positions: u64,
    /// Age of the oldest such event (0 when caught up).
    pub lag_seconds: f64,
    /// Events acknowledged since this relay started (including ones JetStream deduplicated).
    pub published_total: u64,
    /// The last failure, kept until the next success.
    pub last_error: Option<String>,
    /// Failed attempts in a row.
    pub consecutive_failures: u32,
    /// Why the relay halted (state `halted`), if it did.
    pub halted: Option<HaltReason>,
}

impl RelayStatus {
    fn starting() -> Self {
        Self {
            state: RelayState::Starting,
            published_position: 0,
            log_position: 0,
            lag_positions: 0,
            lag_seconds: 0.0,
            published_total: 0,
            last_error: None,
            consecutive_failures: 0,
            halted: None,
        }
    }

    /// Whether every durable event has been acknowledged by JetStream.
    pub fn is_caught_up(&self) -> bool {
        self.lag_positions == 0 && self.state == RelayState::CaughtUp
    }
}

/// A read-only view of a running relay's status; cheap to clone.
#[derive(Clone, Debug)]
pub struct RelayStatusHandle {
    status: watch::Receiver<RelayStatus>,
    published: watch::Receiver<Position>,
}

impl RelayStatusHandle {
    /// The current status.
    pub fn current(&self) -> RelayStatus {
        self.status.borrow().clone()
    }

    /// A receiver of status changes (updated on state changes and at most every 250 ms).
    pub fn watch(&self) -> watch::Receiver<RelayStatus> {
        self.status.clone()
    }

    /// A receiver of the last acknowledged position, updated on every ack.
    pub fn published_position(&self) -> watch::Receiver<Position> {
        self.published.clone()
    }

    /// Waits until JetStream has acknowledged `position` (or the relay is gone).
    pub async fn wait_published(&self, position: Position) -> Result<(), BusError> {
        let mut published = self.published.clone();
        published
            .wait_for(|acked| *acked >= position)
            .await
            .map(|_| ())
            .map_err(|_| BusError::RelayGone)
    }
}

/// How often the status and the lag gauges are refreshed while events flow.
const STATUS_INTERVAL: Duration = Duration::from_millis(250);
/// How often the relay re-reads the log's head and lag while idle or waiting.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// The outbox relay. Build it with [`Relay::new`], keep a [`Relay::status`] handle, then
/// spawn [`Relay::run`].
pub struct Relay {
    store: EventStore,
    config: RelayConfig,
    status: Arc<watch::Sender<RelayStatus>>,
    published: Arc<watch::Sender<Position>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why one session of the relay ended early; the relay retries after a backoff.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("reading the event log: {0}")]
    Store(#[from] StoreError),
    #[error("publishing position {position}: {source}")]
    Publish {
        position: u64,
        source: async_nats::jetstream::context::PublishError,
    },
    #[error(
        "the relay halted ({}): {detail}; the stream no longer mirrors the log, so nothing more is published until `planledger relay reset` (docs/operations.md)",
        reason.as_str()
    )]
    Halted { reason: HaltReason, detail: String },
    #[error(
        "JetStream stored position {position} at stream sequence {got}, expected {expected}{}; the stream no longer mirrors the log one-to-one",
        if *duplicate { " (answered as a duplicate)" } else { "" }
    )]
    Diverged {
        position: u64,
        expected: u64,
        got: u64,
        duplicate: bool,
    },
}

/// Where a session starts: the next log position to publish and the stream sequence before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ResumePoint {
    next: Position,
    last_sequence: u64,
}

/// What the relay recorded of the stream it publishes to: the last acknowledged position and
/// the constant `sequence - position` every message of the stream has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Binding {
    position: u64,
    offset: i64,
}

impl Binding {
    /// The stream sequence `position` has (or will have) in the stream.
    fn sequence_of(self, position: u64) -> i128 {
        i128::from(position) + i128::from(self.offset)
    }
}

/// What a session start reads of the stream.
#[derive(Clone, Copy, Debug)]
struct StreamFacts {
    messages: u64,
    first_sequence: u64,
    last_sequence: u64,
    /// Whether the stream has no limit that removes messages (see `keeps_everything`).
    keeps_everything: bool,
    /// The last message's (sequence, position), when the stream has messages.
    last: Option<(u64, u64)>,
}

impl StreamFacts {
    /// Why a stream that keeps everything is missing messages, if it is.
    fn missing_messages(&self) -> Option<String> {
        if !self.keeps_everything || self.last_sequence == 0 {
            return None;
        }
        let held = self.last_sequence.saturating_sub(self.first_sequence) + 1;
        if self.messages == 0 {
            Some(format!(
                "the stream is empty but has held {} messages: it was purged",
                self.last_sequence
            ))
        } else if self.first_sequence > 1 {
            Some(format!(
                "the stream keeps every message yet starts at sequence {}: sequences 1 to {} were purged",
                self.first_sequence,
                self.first_sequence - 1
            ))
        } else if self.messages < held {
            Some(format!(
                "the stream keeps every message yet holds {} of sequences {}..={}: {} were deleted",
                self.messages,
                self.first_sequence,
                self.last_sequence,
                held - self.messages
            ))
        } else {
            None
        }
    }
}

/// Decides where a session resumes given what the relay recorded (`None`: it never published)
/// and what the stream holds; an error says why the stream no longer mirrors the log.
fn resume_from(
    binding: Option<Binding>,
    facts: &StreamFacts,
) -> Result<(ResumePoint, i64), (HaltReason, String)> {
    let Some(binding) = binding else {
        // Never published from this log: adopt the stream as it is.
        return Ok(match facts.last {
            Some((sequence, position)) => (
                ResumePoint {
                    next: Position(position + 1),
                    last_sequence: sequence,
                },
                offset_between(sequence, position),
            ),
            None => (
                ResumePoint {
                    next: Position(1),
                    last_sequence: facts.last_sequence,
                },
                offset_between(facts.last_sequence, 0),
            ),
        });
    };
    if let Some(why) = facts.missing_messages() {
        return Err((HaltReason::StreamPurged, why));
    }
    let resume = match facts.last {
        Some((sequence, position)) => {
            if offset_between(sequence, position) != binding.offset {
                return Err((
                    HaltReason::OffsetChanged,
                    format!(
                        "the stream's last message, sequence {sequence}, holds position {position}, but the relay publishes position p at sequence p{:+}: the stream was recreated or republished outside this relay",
                        binding.offset
                    ),
                ));
            }
            ResumePoint {
                next: Position(position + 1),
                last_sequence: sequence,
            }
        }
        None if facts.last_sequence == 0 => {
            if binding.sequence_of(binding.position) != 0 {
                return Err((
                    HaltReason::StreamDeleted,
                    format!(
                        "the stream is new and empty, but JetStream had acknowledged positions up to {}: it was deleted (and recreated)",
                        binding.position
                    ),
                ));
            }
            ResumePoint {
                next: Position(binding.position + 1),
                last_sequence: 0,
            }
        }
        None => {
            // Emptied by its own limits (age, size, count): continue after its last sequence.
            let position = i128::from(facts.last_sequence) - i128::from(binding.offset);
            let position = u64::try_from(position).map_err(|_| {
                (
                    HaltReason::OffsetChanged,
                    format!(
                        "the stream's last sequence {} is below the relay's offset {}",
                        facts.last_sequence, binding.offset
                    ),
                )
            })?;
            ResumePoint {
                next: Position(position + 1),
                last_sequence: facts.last_sequence,
            }
        }
    };
    let stream_position = resume.next.get() - 1;
    if stream_position < binding.position {
        return Err((
            HaltReason::StreamBehind,
            format!(
                "the stream ends at position {stream_position} (sequence {}), but JetStream had acknowledged positions up to {}: messages were removed from its end",
                resume.last_sequence, binding.position
            ),
        ));
    }
    Ok((resume, binding.offset))
}

/// `sequence - position`, saturated to an `i64`.
fn offset_between(sequence: u64, position: u64) -> i64 {
    let offset = i128::from(sequence) - i128::from(position);
    i64::try_from(offset).unwrap_or(if offset < 0 { i64::MIN } else { i64::MAX })
}

/// Stores an `i64` offset as a checkpoint value, order-preserving (sign bit flipped).
fn offset_to_checkpoint(offset: i64) -> Position {
    Position((offset as u64) ^ (1 << 63))
}

fn offset_from_checkpoint(value: Position) -> i64 {
    (value.get() ^ (1 << 63)) as i64
}

/// The name of the checkpoint that holds the relay's sequence offset.
fn offset_checkpoint_name(checkpoint: &str) -> String {
    format!("{checkpoint}.sequence-offset")
}

/// The answer to one publish, as a future that can be polled in place.
type AckFuture = Pin<Box<dyn Future<Output = Result<PublishAck, PublishError>> + Send>>;

/// One publish awaiting its ack.
struct InFlight {
    position: Position,
    /// The stream sequence this publish must land at (its expected last sequence + 1).
    sequence: u64,
    recorded_at: Timestamp,
    ack: AckFuture,
}

/// What a session has had acknowledged.
struct Progress<'a> {
    /// The last acknowledged position.
    acked: Position,
    /// Acknowledged events over the relay's life.
    published_total: &'a mut u64,
    /// Acknowledged events not yet counted in the metrics.
    unreported: u64,
    /// Acknowledged events since the checkpoint was last saved.
    since_checkpoint: usize,
    /// When the status was last published.
    last_status: Instant,
}

impl Progress<'_> {
    /// Records the answer to the publish of `position`.
    fn settle(
        &mut self,
        position: Position,
        sequence: u64,
        ack: Result<PublishAck, PublishError>,
    ) -> Result<(), SessionError> {
        let ack = ack.map_err(|source| SessionError::Publish {
            position: position.get(),
            source,
        })?;
        if ack.sequence != sequence {
            return Err(SessionError::Diverged {
                position: position.get(),
                expected: sequence,
                got: ack.sequence,
                duplicate: ack.duplicate,
            });
        }
        if ack.duplicate {
            tracing::debug!(
                position = position.get(),
                sequence = ack.sequence,
                "JetStream already had this event"
            );
        }
        self.acked = position;
        *self.published_total += 1;
        self.unreported += 1;
        self.since_checkpoint += 1;
        Ok(())
    }

    /// Adds the acknowledged events to `planledger_relay_published_total`.
    fn report_metrics(&mut self) {
        if self.unreported > 0 {
            metrics::counter!("planledger_relay_published_total").increment(self.unreported);
            self.unreported = 0;
        }
    }
}

/// Capped exponential backoff.
#[derive(Debug)]
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// The subject and message (body and headers) of one wire envelope, with the command record
/// of its append when it is the append's first event and the append remembers its key.
pub(crate) fn message_for(
    wire: &EventEnvelope,
    command: Option<&CommandHeader>,
    subject_prefix: &str,
) -> (String, Publish) {
    let (subject, headers, body) = message_parts(wire, command, subject_prefix);
    (subject, Publish::build().headers(headers).payload(body))
}

/// The subject, headers and body [`message_for`] publishes.
pub(crate) fn message_parts(
    wire: &EventEnvelope,
    command: Option<&CommandHeader>,
    subject_prefix: &str,
) -> (String, async_nats::HeaderMap, Bytes) {
    let subject =
        subjects::event_subject(subject_prefix, &wire.tenant, &wire.plan_id, &wire.r#type);
    let body = Bytes::from(wire.encode_to_vec());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, wire.event_id.as_str());
    headers.insert(HEADER_POSITION, wire.position.to_string());
    headers.insert(HEADER_CONTENT_TYPE, EVENT_ENVELOPE_CONTENT_TYPE);
    for (name, value) in command.map(command_headers::encode).unwrap_or_default() {
        headers.insert(name, value);
    }
    (subject, headers, body)
}

impl Relay {
    /// A relay over `store` with `config`; fails if the config is invalid.
    pub fn new(store: EventStore, config: RelayConfig) -> Result<Self, BusError> {
        config.validate()?;
        let (status, _) = watch::channel(RelayStatus::starting());
        let (published, _) = watch::channel(Position(0));
        Ok(Self {
            store,
            config,
            status: Arc::new(status),
            published: Arc::new(published),
        })
    }

    /// A handle to this relay's status, valid after it stops too.
    pub fn status(&self) -> RelayStatusHandle {
        RelayStatusHandle {
            status: self.status.subscribe(),
            published: self.published.subscribe(),
        }
    }

    /// Runs until `shutdown` completes: connects, syncs with the stream, publishes, and retries
    /// every failure with backoff. On shutdown it waits (up to the ack timeout) for the acks
    /// in flight and saves the checkpoint.
    #[tracing::instrument(name = "relay", skip_all, fields(stream = %self.config.stream))]
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), BusError> {
        let mut shutdown = pin!(shutdown);
        let mut backoff = Backoff::new(self.config.backoff_initial, self.config.backoff_max);
        let mut context: Option<jetstream::Context> = None;
        let mut published_total = 0u64;
        for reason in HaltReason::ALL {
            metrics::gauge!("planledger_relay_halted", "reason" => reason.as_str()).set(0.0);
        }
        loop {
            self.set_state(RelayState::Syncing);
            if context.is_none() {
                let connected = tokio::select! {
                    () = &mut shutdown => break,
                    connected = connect(&self.config.url, &self.config.client_name) => connected,
                };
                match connected {
                    Ok(client) => {
                        context = Some(
                            jetstream::ContextBuilder::new()
                                .timeout(self.config.ack_timeout)
                                .max_ack_inflight(self.config.ack_window.max(16) * 2)
                                .backpressure_on_inflight(true)
                                .build(client),
                        );
                    }
                    Err(error) => {
                        if self
                            .retry_after(&error.to_string(), &mut backoff, &mut shutdown)
                            .await
                        {
                            break;
                        }
                        continue;
                    }
                }
            }
            let Some(js) = context.as_ref() else {
                continue;
            };
            match self
                .session(js, &mut backoff, &mut published_total, &mut shutdown)
                .await
            {
                Ok(()) => break,
                Err(SessionError::Halted { reason, detail }) => {
                    let error = SessionError::Halted { reason, detail }.to_string();
                    self.halt(reason, &error);
                    loop {
                        self.refresh_lag();
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(IDLE_TICK) => {}
                        }
                    }
                    tracing::info!("relay stopped (halted)");
                    return Ok(());
                }
                Err(error) => {
                    if self
                        .retry_after(&error.to_string(), &mut backoff, &mut shutdown)
                        .await
                    {
                        break;
                    }
                }
            }
        }
        self.set_state(RelayState::Stopped);
        tracing::info!("relay stopped");
        Ok(())
    }

    /// Records a failure and sleeps the next backoff delay; true if shutdown came meanwhile.
    async fn retry_after(
        &self,
        error: &str,
        backoff: &mut Backoff,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> bool {
        let delay = backoff.next_delay();
        tracing::warn!(
            error,
            retry_in_ms = delay.as_millis() as u64,
            "relay attempt failed"
        );
        metrics::counter!("planledger_relay_failures_total").increment(1);
        self.status.send_modify(|status| {
            status.state = RelayState::Retrying;
            status.last_error = Some(error.to_string());
            status.consecutive_failures = status.consecutive_failures.saturating_add(1);
        });
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            self.refresh_lag();
            let tick =
                tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + IDLE_TICK));
            tokio::select! {
                () = &mut *shutdown => return true,
                () = tick => {
                    if tokio::time::Instant::now() >= deadline {
                        return false;
                    }
                }
            }
        }
    }

    /// One connected session: sync with the stream, then publish until an error or shutdown.
    async fn session(
        &self,
        js: &jetstream::Context,
        backoff: &mut Backoff,
        published_total: &mut u64,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<(), SessionError> {
        let (stream, resume) = self.bind(js).await?;
        let acked = Position(resume.next.get() - 1);
        let mut last_sequence = resume.last_sequence;
        let mut last_check = Instant::now();
        self.published.send_replace(acked);
        backoff.reset();
        self.status.send_modify(|status| {
            status.published_position = acked.get();
            status.last_error = None;
            status.consecutive_failures = 0;
        });
        tracing::info!(
            resume_after = acked.get(),
            stream_sequence = last_sequence,
            log_position = self.store.last_position().get(),
            "relay synced with the stream"
        );

        let window = self.config.ack_window;
        let mut reader = LogReader::spawn(
            self.store.clone(),
            resume.next,
            self.config.subject_prefix.clone(),
            self.config.read_batch,
        );
        let mut expected_next = resume.next;
        let mut pending: VecDeque<Prepared> = VecDeque::new();
        let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(window);
        let mut progress = Progress {
            acked,
            published_total,
            unreported: 0,
            since_checkpoint: 0,
            last_status: Instant::now(),
        };

        loop {
            // Publish while the window has room and prepared messages are at hand.
            while in_flight.len() < window {
                if pending.is_empty() {
                    match reader.try_next() {
                        Some(batch) => pending.extend(batch?),
                        None => break,
                    }
                }
                let Some(message) = pending.pop_front() else {
                    break;
                };
                if message.position != expected_next {
                    return Err(SessionError::Store(StoreError::Corrupt {
                        what: format!("log position {expected_next}"),
                        detail: format!("the log reader skipped to {}", message.position),
                    }));
                }
                let publish = message.publish.expected_last_sequence(last_sequence);
                let ack = js
                    .send_publish(message.subject, publish)
                    .await
                    .map_err(|source| SessionError::Publish {
                        position: message.position.get(),
                        source,
                    })?;
                last_sequence += 1;
                expected_next = Position(message.position.get() + 1);
                in_flight.push_back(InFlight {
                    position: message.position,
                    sequence: last_sequence,
                    recorded_at: message.recorded_at,
                    ack: ack.into_future(),
                });
            }

            let room = in_flight.len() < window && pending.is_empty();
            if let Some(front) = in_flight.front_mut() {
                // Settle the oldest publish; meanwhile take more prepared messages if there is room.
                tokio::select! {
                    biased;
                    () = &mut *shutdown => {
                        self.drain(&mut in_flight, &mut progress).await;
                        self.store.put_checkpoint(&self.config.checkpoint, progress.acked)?;
                        return Ok(());
                    }
                    ack = &mut front.ack => {
                        let (position, sequence) = (front.position, front.sequence);
                        in_flight.pop_front();
                        progress.settle(position, sequence, ack)?;
                        // Settle every later ack that has already arrived, then report once.
                        while let Some(front) = in_flight.front_mut() {
                            let Some(ack) = (&mut front.ack).now_or_never() else {
                                break;
                            };
                            let (position, sequence) = (front.position, front.sequence);
                            in_flight.pop_front();
                            progress.settle(position, sequence, ack)?;
                        }
                        progress.report_metrics();
                        self.published.send_replace(progress.acked);
                        if progress.since_checkpoint >= self.config.read_batch {
                            self.store.put_checkpoint(&self.config.checkpoint, progress.acked)?;
                            progress.since_checkpoint = 0;
                        }
                        if last_check.elapsed() >= self.config.stream_check_interval {
                            self.check_stream(js, &stream).await?;
                            last_check = Instant::now();
                        }
                        if progress.last_status.elapsed() >= STATUS_INTERVAL {
                            progress.last_status = Instant::now();
                            let oldest = in_flight
                                .front()
                                .map(|f| f.recorded_at)
                                .or_else(|| pending.front().map(|p| p.recorded_at));
                            self.publish_status(
                                RelayState::CatchingUp,
                                progress.acked,
                                *progress.published_total,
                                oldest,
                            );
                        }
                    }
                    batch = reader.next(), if room => pending.extend(batch?),
                }
                continue;
            }

            // Nothing in flight and nothing prepared: every event read so far is acknowledged.
            if progress.since_checkpoint > 0 {
                self.store
                    .put_checkpoint(&self.config.checkpoint, progress.acked)?;
                progress.since_checkpoint = 0;
            }
            if expected_next > self.store.last_position() {
                self.publish_status(
                    RelayState::CaughtUp,
                    progress.acked,
                    *progress.published_total,
                    None,
                );
                progress.last_status = Instant::now();
            }
            tokio::select! {
                () = &mut *shutdown => return Ok(()),
                batch = reader.next() => pending.extend(batch?),
                () = tokio::time::sleep(IDLE_TICK) => {
                    if last_check.elapsed() >= self.config.stream_check_interval {
                        self.check_stream(js, &stream).await?;
                        last_check = Instant::now();
                    }
                }
            }
        }
    }

    /// Awaits the acks in flight at shutdown, up to the ack timeout each, stopping at the first
    /// failure (the next start resyncs from the stream anyway).
    async fn drain(&self, in_flight: &mut VecDeque<InFlight>, progress: &mut Progress<'_>) {
        while let Some(front) = in_flight.pop_front() {
            let position = front.position;
            if let Err(error) = progress.settle(position, front.sequence, front.ack.await) {
                tracing::info!(position = position.get(), %error, "ack not received before shutdown");
                break;
            }
        }
        progress.report_metrics();
        self.published.send_replace(progress.acked);
        self.publish_status(
            RelayState::Stopped,
            progress.acked,
            *progress.published_total,
            None,
        );
    }

    /// Finds the stream and where to continue in it (after its last message), checking that
    /// it still mirrors the log; records the checkpoint and offset the session starts from.
    async fn bind(
        &self,
        js: &jetstream::Context,
    ) -> Result<(jetstream::stream::Stream, ResumePoint), SessionError> {
        let spec = self.config.stream_spec();
        let binding = self.binding()?;
        if find_stream(js, &spec.name).await?.is_none()
            && let Some(binding) = binding
            && binding.sequence_of(binding.position) != 0
        {
            return Err(SessionError::Halted {
                reason: HaltReason::StreamDeleted,
                detail: format!(
                    "stream {} does not exist, but JetStream had acknowledged positions up to {} in it: it was deleted",
                    spec.name, binding.position
                ),
            });
        }
        let stream = ensure_stream(js, &spec).await?;
        let facts = self.stream_facts(&stream).await?;
        let (resume, offset) =
            resume_from(binding, &facts).map_err(|(reason, detail)| SessionError::Halted {
                reason,
                detail: format!("stream {}: {detail}", spec.name),
            })?;
        let stream_position = resume.next.get() - 1;
        let log_position = self.store.last_position().get();
        if stream_position > log_position {
            return Err(SessionError::Halted {
                reason: HaltReason::LogBehind,
                detail: format!(
                    "stream {} holds positions up to {stream_position}, but this log ends at {log_position}: the log was restored from an older backup (catch it up from the stream: `planledger restore --nats`), or the relay is pointed at another log's stream",
                    spec.name
                ),
            });
        }
        self.save_binding(Position(stream_position), offset)?;
        Ok((stream, resume))
    }

    /// What the relay recorded of its stream: `None` if it never published from this log.
    /// A checkpoint without an offset (written before offsets were recorded) means offset 0.
    fn binding(&self) -> Result<Option<Binding>, StoreError> {
        let Some(position) = self.store.checkpoint(&self.config.checkpoint)? else {
            return Ok(None);
        };
        let offset = self
            .store
            .checkpoint(&offset_checkpoint_name(&self.config.checkpoint))?
            .map_or(0, offset_from_checkpoint);
        Ok(Some(Binding {
            position: position.get(),
            offset,
        }))
    }

    /// Records the checkpoint and the offset together.
    fn save_binding(&self, position: Position, offset: i64) -> Result<(), StoreError> {
        let offset_name = offset_checkpoint_name(&self.config.checkpoint);
        self.store.put_checkpoints(&[
            (self.config.checkpoint.as_str(), position),
            (offset_name.as_str(), offset_to_checkpoint(offset)),
        ])
    }

    /// Reads the stream's state and, if it has messages, its last message's sequence and
    /// position (from *one* message: the stream may still be growing, as a previous session's
    /// publishes buffered by the client while disconnected can land after the state was read,
    /// and a position paired with an older sequence would make every
    /// `Nats-Expected-Last-Sequence` of this session off by the difference).
    async fn stream_facts(
        &self,
        stream: &jetstream::stream::Stream,
    ) -> Result<StreamFacts, SessionError> {
        let info = stream
            .get_info()
            .await
            .map_err(|e| BusError::nats("read stream info", e))?;
        let mut facts = StreamFacts {
            messages: info.state.messages,
            first_sequence: info.state.first_sequence,
            last_sequence: info.state.last_sequence,
            keeps_everything: keeps_everything(&info.config),
            last: None,
        };
        if facts.messages == 0 {
            return Ok(facts);
        }
        let last = stream
            .get_last_raw_message_by_subject(&self.config.stream_spec().subjects())
            .await
            .map_err(|e| BusError::nats("read the stream's last message", e))?;
        let position = header_position(&last.headers).ok_or_else(|| SessionError::Halted {
            reason: HaltReason::ForeignMessage,
            detail: format!(
                "the last message of stream {} (sequence {}) has no valid {HEADER_POSITION} header; only the relay may publish to the stream's subjects",
                self.config.stream, last.sequence
            ),
        })?;
        // `messages`, `first_sequence` and `last_sequence` stay those of one state snapshot (the
        // purge check compares them); the resume point comes from the message alone.
        facts.last = Some((last.sequence, position));
        Ok(facts)
    }

    /// Checks, during a session, that the stream was neither deleted nor purged.
    async fn check_stream(
        &self,
        js: &jetstream::Context,
        stream: &jetstream::stream::Stream,
    ) -> Result<(), SessionError> {
        let info = match stream.get_info().await {
            Ok(info) => info,
            Err(error) => {
                if find_stream(js, &self.config.stream).await?.is_none() {
                    return Err(SessionError::Halted {
                        reason: HaltReason::StreamDeleted,
                        detail: format!(
                            "stream {} was deleted while the relay published to it",
                            self.config.stream
                        ),
                    });
                }
                return Err(BusError::nats("read stream info", error).into());
            }
        };
        let facts = StreamFacts {
            messages: info.state.messages,
            first_sequence: info.state.first_sequence,
            last_sequence: info.state.last_sequence,
            keeps_everything: keeps_everything(&info.config),
            last: None,
        };
        match facts.missing_messages() {
            Some(why) => Err(SessionError::Halted {
                reason: HaltReason::StreamPurged,
                detail: format!("stream {}: {why}", self.config.stream),
            }),
            None => Ok(()),
        }
    }

    /// Stops publishing for good: logs, sets the status and the `planledger_relay_halted` gauge.
    fn halt(&self, reason: HaltReason, error: &str) {
        tracing::error!(
            reason = reason.as_str(),
            error,
            "relay halted: the stream no longer mirrors the log; run `planledger relay reset` (see docs/operations.md)"
        );
        for each in HaltReason::ALL {
            metrics::gauge!("planledger_relay_halted", "reason" => each.as_str())
                .set(if each == reason { 1.0 } else { 0.0 });
        }
        self.status.send_modify(|status| {
            status.state = RelayState::Halted;
            status.halted = Some(reason);
            status.last_error = Some(error.to_string());
        });
    }

    fn set_state(&self, state: RelayState) {
        self.status.send_if_modified(|status| {
            let changed = status.state != state;
            status.state = state;
            changed
        });
    }

    /// Publishes the status and the lag gauges; `oldest` is the recorded_at of the oldest
    /// event not yet acknowledged, when known.
    fn publish_status(
        &self,
        state: RelayState,
        acked: Position,
        published_total: u64,
        oldest: Option<Timestamp>,
    ) {
        let head = self.store.last_position();
        let lag_positions = head.get().saturating_sub(acked.get());
        let lag_seconds = if lag_positions == 0 {
            0.0
        } else {
            oldest
                .or_else(|| self.recorded_at(Position(acked.get() + 1)))
                .map(age_seconds)
                .unwrap_or(0.0)
        };
        metrics::gauge!("planledger_relay_lag_positions").set(lag_positions as f64);
        metrics::gauge!("planledger_relay_lag_seconds").set(lag_seconds);
        self.status.send_modify(|status| {
            status.state = state;
            status.published_position = acked.get();
            status.log_position = head.get();
            status.lag_positions = lag_positions;
            status.lag_seconds = lag_seconds;
            status.published_total = published_total;
        });
    }

    /// Recomputes the lag from the last acknowledged position while no session runs.
    fn refresh_lag(&self) {
        let acked = *self.published.borrow();
        let state = self.status.borrow().state.clone();
        let total = self.status.borrow().published_total;
        self.publish_status(state, acked, total, None);
    }

    fn recorded_at(&self, position: Position) -> Option<Timestamp> {
        match self.store.read_all(position, 1) {
            Ok(mut envelopes) => envelopes.pop().map(|e| e.recorded_at),
            Err(error) => {
                tracing::warn!(%error, "could not read the log to compute relay lag");
                None
            }
        }
    }
}

/// What [`reset_stream`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamReset {
    /// How many messages the deleted stream held (`None`: there was no stream).
    pub deleted_messages: Option<u64>,
    /// The position the new stream starts with, at sequence 1.
    pub from: Position,
}

/// Replaces the event stream with a new, empty one and points the relay at it: deletes the
/// stream if it exists (its consumers go with it), creates it anew, and records the relay's
/// checkpoint as `from - 1` with `from` to be published at sequence 1. A relay started next
/// (`Relay::run`, e.g. until `wait_published` reaches the log's end) republishes `from..`
/// into it exactly once. The log is only read; run it with the service stopped.
pub async fn reset_stream(
    store: &EventStore,
    config: &RelayConfig,
    from: Position,
) -> Result<StreamReset, BusError> {
    config.validate()?;
    if from.get() == 0 || from.get() > store.last_position().get() + 1 {
        return Err(BusError::InvalidConfig {
            field: "from_position",
            rule: "must be from 1 to the log's last position + 1",
        });
    }
    let client = connect(&config.url, &config.client_name).await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(config.ack_timeout)
        .build(client);
    let spec = config.stream_spec();
    let deleted_messages = match find_stream(&js, &spec.name).await? {
        Some(mut stream) => {
            let messages = stream
                .info()
                .await
                .map_err(|e| BusError::nats("read stream info", e))?
                .state
                .messages;
            js.delete_stream(&spec.name)
                .await
                .map_err(|e| BusError::nats("delete stream", e))?;
            tracing::warn!(stream = %spec.name, messages, "deleted the event stream for a reset");
            Some(messages)
        }
        None => None,
    };
    ensure_stream(&js, &spec).await?;
    let before = from.get() - 1;
    let offset = offset_between(1, from.get());
    let offset_name = offset_checkpoint_name(&config.checkpoint);
    store.put_checkpoints(&[
        (config.checkpoint.as_str(), Position(before)),
        (offset_name.as_str(), offset_to_checkpoint(offset)),
    ])?;
    tracing::info!(stream = %spec.name, from = from.get(), "the event stream was reset");
    Ok(StreamReset {
        deleted_messages,
        from,
    })
}

fn age_seconds(recorded_at: Timestamp) -> f64 {
    let age = Timestamp::now().as_nanosecond() - recorded_at.as_nanosecond();
    (age.max(0) as f64) / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert!(RelayConfig::default().validate().is_ok());
    }

    #[test]
    fn config_names_the_field_out_of_range() {
        let config = RelayConfig {
            ack_window: 0,
            ..RelayConfig::default()
        };
        match config.validate() {
            Err(BusError::InvalidConfig { field, .. }) => assert_eq!(field, "ack_window"),
            other => panic!("expected an invalid ack_window, got {other:?}"),
        }
        let config = RelayConfig {
            subject_prefix: "planledger.*".into(),
            ..RelayConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(BusError::InvalidConfig {
                field: "subject_prefix",
                ..
            })
        ));
    }

    fn facts(messages: u64, first: u64, last: u64, tail: Option<(u64, u64)>) -> StreamFacts {
        StreamFacts {
            messages,
            first_sequence: first,
            last_sequence: last,
            keeps_everything: true,
            last: tail,
        }
    }

    fn bound(position: u64, offset: i64) -> Option<Binding> {
        Some(Binding { position, offset })
    }

    fn halted(result: Result<(ResumePoint, i64), (HaltReason, String)>) -> HaltReason {
        match result {
            Err((reason, _)) => reason,
            Ok(resume) => panic!("expected a halt, got {resume:?}"),
        }
    }

    #[test]
    fn a_stream_that_mirrors_the_log_resumes_after_its_last_message() {
        let (resume, offset) =
            resume_from(bound(90, 0), &facts(100, 1, 100, Some((100, 100)))).expect("resumes");
        assert_eq!(
            resume,
            ResumePoint {
                next: Position(101),
                last_sequence: 100
            }
        );
        assert_eq!(offset, 0);
        // After a reset from position 41, position p sits at sequence p - 40.
        let (resume, offset) =
            resume_from(bound(40, -40), &facts(0, 0, 0, None)).expect("a reset stream starts");
        assert_eq!(
            (resume.next, resume.last_sequence, offset),
            (Position(41), 0, -40)
        );
        let (resume, _) =
            resume_from(bound(45, -40), &facts(10, 1, 10, Some((10, 50)))).expect("resumes");
        assert_eq!(resume.next, Position(51));
    }

    #[test]
    fn a_deleted_or_recreated_stream_halts_the_relay() {
        assert_eq!(
            halted(resume_from(bound(100, 0), &facts(0, 0, 0, None))),
            HaltReason::StreamDeleted
        );
    }

    #[test]
    fn a_purged_stream_that_keeps_everything_halts_the_relay() {
        assert_eq!(
            halted(resume_from(bound(100, 0), &facts(0, 101, 100, None))),
            HaltReason::StreamPurged
        );
        assert_eq!(
            halted(resume_from(
                bound(100, 0),
                &facts(50, 51, 100, Some((100, 100)))
            )),
            HaltReason::StreamPurged
        );
        assert_eq!(
            halted(resume_from(
                bound(100, 0),
                &facts(99, 1, 100, Some((100, 100)))
            )),
            HaltReason::StreamPurged
        );
    }

    #[test]
    fn a_stream_with_limits_may_lose_old_messages_but_not_its_end() {
        let limited = |mut f: StreamFacts| {
            f.keeps_everything = false;
            f
        };
        let (resume, _) = resume_from(bound(100, 0), &limited(facts(0, 101, 100, None)))
            .expect("aged out: continue after the last sequence");
        assert_eq!(resume.next, Position(101));
        let (resume, _) = resume_from(
            bound(100, 0),
            &limited(facts(20, 81, 100, Some((100, 100)))),
        )
        .expect("old messages expired");
        assert_eq!(resume.next, Position(101));
        assert_eq!(
            halted(resume_from(
                bound(100, 0),
                &limited(facts(80, 1, 80, Some((80, 80))))
            )),
            HaltReason::StreamBehind
        );
    }

    #[test]
    fn a_stream_at_another_offset_halts_the_relay() {
        assert_eq!(
            halted(resume_from(
                bound(100, 0),
                &facts(100, 1, 100, Some((100, 60)))
            )),
            HaltReason::OffsetChanged
        );
    }

    #[test]
    fn without_a_checkpoint_the_stream_is_adopted_as_it_is() {
        let (resume, offset) =
            resume_from(None, &facts(30, 1, 30, Some((30, 30)))).expect("adopted");
        assert_eq!((resume.next, offset), (Position(31), 0));
        let (resume, offset) = resume_from(None, &facts(0, 0, 0, None)).expect("new stream");
        assert_eq!(
            (resume.next, resume.last_sequence, offset),
            (Position(1), 0, 0)
        );
    }

    #[test]
    fn offsets_survive_the_checkpoint_encoding() {
        for offset in [i64::MIN, -40, -1, 0, 1, 7, i64::MAX] {
            assert_eq!(offset_from_checkpoint(offset_to_checkpoint(offset)), offset);
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }
}
