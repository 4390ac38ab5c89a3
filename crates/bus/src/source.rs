//! The JetStream projection source: feeds a projector runtime from the event stream through a
//! durable pull consumer (service mode, `planledger projector --nats`).
//!
//! How "in order, nothing lost, nothing applied twice" is kept:
//! - **The read model's checkpoint is the truth, not the consumer.** Whenever the runtime asks
//!   for events after a position the source is not already positioned at (first call, after an
//!   error, after a restart), the durable consumer is recreated to start at the stream sequence
//!   of the next position, so the stream order is the delivery order from there on.
//! - **Stream sequence = position + a constant offset** (the relay's invariant): the offset is
//!   read from the stream's first message, so a stream whose old messages were removed still
//!   maps positions to sequences, and a position it no longer holds is an error naming it.
//! - **Acks follow commits.** The consumer acknowledges cumulatively (`AckPolicy::All`); the
//!   source acks the last message the runtime has committed. A message redelivered after a late
//!   ack is dropped here (its position was already handed out) or skipped by the runtime (at or
//!   below the checkpoint).
//! - **Cancel-safe.** A background task pulls messages into a channel; `next_batch` only
//!   receives from that channel, so dropping its future loses nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, Message};
use futures::StreamExt as _;
use planledger_projections::{Delivery, EventSource, SourceError, SourceHead};
use planledger_proto::Message as _;
use planledger_proto::subjects::HEADER_POSITION;
use planledger_proto::v1::EventEnvelope;
use planledger_store::Position;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::envelope::{envelope_from_proto, header_position};

/// Settings of a JetStream projection source.
#[derive(Clone, Debug)]
pub struct JetStreamSourceConfig {
    /// The event stream (the relay's `PLANLEDGER_EVENTS`).
    pub stream: String,
    /// Durable consumer name, e.g. `planledger-progress`; the rebuild source uses an ephemeral
    /// consumer beside it.
    pub durable: String,
    /// How long JetStream waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Messages pulled ahead of the projector.
    pub prefetch: usize,
}

impl JetStreamSourceConfig {
    /// The defaults for the read model `name`.
    pub fn for_projection(stream: &str, name: &str) -> Self {
        Self {
            stream: stream.to_string(),
            durable: format!("planledger-{name}"),
            ack_wait: Duration::from_secs(30),
            prefetch: 8192,
        }
    }
}

/// Delay before retrying a failed pull or consumer set-up; doubles up to the cap.
const RETRY_INITIAL: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// One delivered event and the message to acknowledge it with.
type Pulled = Result<(Delivery, Message), SourceError>;

/// Feeds a projector from JetStream. See the module documentation for the guarantees.
pub struct JetStreamSource {
    js: jetstream::Context,
    config: JetStreamSourceConfig,
    /// `None` for the durable consumer; a unique name for a rebuild's ephemeral consumer.
    ephemeral: Option<String>,
    /// Newest position known to exist in the stream (0 before it is known).
    head: Arc<AtomicU64>,
    pump: Option<Pump>,
    /// Handed to the runtime, not yet acknowledged, in position order.
    unacked: VecDeque<(Position, Message)>,
    /// The last position handed to the runtime.
    handed: u64,
}

struct Pump {
    /// The position the next delivery must have.
    expected: u64,
    receiver: mpsc::Receiver<Pulled>,
    task: JoinHandle<()>,
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for JetStreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamSource")
            .field("config", &self.config)
            .field("handed", &self.handed)
            .finish_non_exhaustive()
    }
}

impl JetStreamSource {
    /// A source reading `config.stream` through the durable consumer `config.durable`.
    /// Nothing is contacted until the runtime asks for events.
    pub fn new(js: jetstream::Context, config: JetStreamSourceConfig) -> Self {
        Self {
            js,
            config,
            ephemeral: None,
            head: Arc::new(AtomicU64::new(0)),
            pump: None,
            unacked: VecDeque::new(),
            handed: 0,
        }
    }

    /// Connects to NATS at `url` (reconnecting on its own afterwards) and builds the source.
    pub async fn connect(
        url: &str,
        client_name: &str,
        config: JetStreamSourceConfig,
    ) -> Result<Self, crate::BusError> {
        let client = crate::connect(url, client_name).await?;
        Ok(Self::new(jetstream::new(client), config))
    }

    fn consumer_name(&self) -> &str {
        self.ephemeral.as_deref().unwrap_or(&self.config.durable)
    }

    fn transport(&self, detail: impl std::fmt::Display) -> SourceError {
        SourceError::Transport {
            source_name: self.describe(),
            detail: detail.to_string(),
        }
    }

    fn start(&mut self, first: u64) {
        self.unacked.clear();
        let (sender, receiver) = mpsc::channel(self.config.prefetch.max(1));
        let task = tokio::spawn(pump(
            self.js.clone(),
            self.config.clone(),
            self.consumer_name().to_string(),
            self.ephemeral.is_some(),
            self.describe(),
            first,
            Arc::clone(&self.head),
            sender,
        ));
        self.pump = Some(Pump {
            expected: first,
            receiver,
            task,
        });
    }
}

/// Pulls from a consumer positioned at `first`, forever: every failure (NATS down, consumer
/// deleted, missed heartbeats) recreates the consumer at the next undelivered position.
#[allow(clippy::too_many_arguments)]
async fn pump(
    js: jetstream::Context,
    config: JetStreamSourceConfig,
    consumer_name: String,
    ephemeral: bool,
    source_name: String,
    first: u64,
    head: Arc<AtomicU64>,
    sender: mpsc::Sender<Pulled>,
) {
    let mut next = first;
    let mut delay = RETRY_INITIAL;
    loop {
        let messages = match open(&js, &config, &consumer_name, ephemeral, next, &head).await {
            Ok(messages) => messages,
            Err(Fatal(error)) => {
                let _ = sender
                    .send(Err(SourceError::Transport {
                        source_name: source_name.clone(),
                        detail: error,
                    }))
                    .await;
                return;
            }
            Err(Retry(error)) => {
                tracing::warn!(consumer = %consumer_name, %error, retry_in_ms = delay.as_millis() as u64, "JetStream consumer set-up failed");
                metrics::counter!("planledger_projection_source_retries_total").increment(1);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
                continue;
            }
        };
        tracing::info!(consumer = %consumer_name, from_position = next, "consuming the event stream");
        let mut messages = std::pin::pin!(messages);
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(consumer = %consumer_name, %error, "JetStream pull failed; recreating the consumer");
                    break;
                }
            };
            let delivery = match decode(&message, &source_name) {
                Ok(delivery) => delivery,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            let position = delivery.position.get();
            if position < next {
                // A redelivery of a message this pump already passed on.
                continue;
            }
            if let Ok(info) = message.info() {
                head.fetch_max(position + info.pending, Ordering::Relaxed);
            }
            next = position + 1;
            delay = RETRY_INITIAL;
            if sender.send(Ok((delivery, message))).await.is_err() {
                return;
            }
        }
        metrics::counter!("planledger_projection_source_retries_total").increment(1);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// Why opening the consumer failed: worth retrying, or not.
enum OpenError {
    Retry(String),
    Fatal(String),
}
use OpenError::{Fatal, Retry};

/// Recreates the consumer at the stream sequence of `position` and starts pulling.
async fn open(
    js: &jetstream::Context,
    config: &JetStreamSourceConfig,
    consumer_name: &str,
    ephemeral: bool,
    position: u64,
    head: &AtomicU64,
) -> Result<pull::Stream, OpenError> {
    let mut stream = js
        .get_stream(&config.stream)
        .await
        .map_err(|e| Retry(format!("looking up stream {}: {e}", config.stream)))?;
    let info = stream
        .info()
        .await
        .map_err(|e| Retry(format!("reading stream info: {e}")))?
        .state
        .clone();
    let start_sequence = if info.messages == 0 {
        // Nothing stored: the next message published is the next one to read.
        info.last_sequence + 1
    } else {
        let oldest = stream
            .get_raw_message(info.first_sequence)
            .await
            .map_err(|e| Retry(format!("reading the stream's first message: {e}")))?;
        let oldest_position = header_position(&oldest.headers).ok_or_else(|| {
                Fatal(format!(
                    "message {} of stream {} has no valid {HEADER_POSITION} header; only the relay may publish to the stream's subjects",
                    info.first_sequence, config.stream
                ))
            })?;
        let offset = i128::from(info.first_sequence) - i128::from(oldest_position);
        if position < oldest_position {
            return Err(Fatal(format!(
                "stream {} no longer holds position {position} (its oldest is {oldest_position}); rebuild this read model from the local log with `planledger replay`",
                config.stream
            )));
        }
        head.fetch_max(
            u64::try_from(i128::from(info.last_sequence) - offset).unwrap_or(0),
            Ordering::Relaxed,
        );
        u64::try_from(i128::from(position) + offset).map_err(|_| {
            Fatal(format!(
                "stream {} maps positions to sequences with offset {offset}, which does not fit position {position}",
                config.stream
            ))
        })?
    };
    match stream.delete_consumer(consumer_name).await {
        Ok(_) => {}
        Err(error)
            if matches!(
                error.kind(),
                jetstream::stream::ConsumerErrorKind::JetStream(ref inner)
                    if inner.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND
            ) => {}
        Err(error) => return Err(Retry(format!("removing the old consumer: {error}"))),
    }
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            name: Some(consumer_name.to_string()),
            durable_name: (!ephemeral).then(|| consumer_name.to_string()),
            description: Some(
                "Planledger projector; positioned from the read model's checkpoint".into(),
            ),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence },
            ack_policy: AckPolicy::All,
            ack_wait: config.ack_wait,
            max_ack_pending: i64::try_from(config.prefetch.saturating_mul(4)).unwrap_or(i64::MAX),
            inactive_threshold: if ephemeral {
                Duration::from_secs(300)
            } else {
                Duration::ZERO
            },
            ..Default::default()
        })
        .await
        .map_err(|e| Retry(format!("creating consumer {consumer_name}: {e}")))?;
    consumer
        .stream()
        .max_messages_per_batch(config.prefetch.clamp(1, 1000))
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| Retry(format!("starting to pull from {consumer_name}: {e}")))
}

/// The delivery carried by one message.
fn decode(message: &Message, source_name: &str) -> Result<Delivery, SourceError> {
    let malformed = |position: u64, detail: String| SourceError::Malformed {
        source_name: source_name.to_string(),
        position,
        detail,
    };
    let claimed = message
        .headers
        .as_ref()
        .and_then(header_position)
        .unwrap_or(0);
    let wire = EventEnvelope::decode(message.payload.clone())
        .map_err(|e| malformed(claimed, format!("not a planledger.v1.EventEnvelope: {e}")))?;
    let envelope = envelope_from_proto(wire).map_err(|e| malformed(claimed, e.to_string()))?;
    if claimed != 0 && claimed != envelope.position.get() {
        return Err(malformed(
            claimed,
            format!(
                "the {HEADER_POSITION} header says {claimed} but the envelope says {}",
                envelope.position
            ),
        ));
    }
    Ok(Delivery::new(envelope.position, envelope))
}

impl EventSource for JetStreamSource {
    fn describe(&self) -> String {
        format!("jetstream:{}/{}", self.config.stream, self.consumer_name())
    }

    async fn next_batch(
        &mut self,
        after: Position,
        max: usize,
    ) -> Result<Vec<Delivery>, SourceError> {
        let first = after.get() + 1;
        if self.pump.as_ref().is_none_or(|p| p.expected != first) {
            self.start(first);
            self.handed = after.get();
        }
        let Some(pump) = self.pump.as_mut() else {
            return Err(self.transport("the consumer task is not running"));
        };
        let mut pulled = Vec::new();
        match pump.receiver.recv().await {
            Some(item) => pulled.push(item),
            None => {
                self.pump = None;
                return Err(SourceError::Closed {
                    source_name: self.describe(),
                });
            }
        }
        while pulled.len() < max.max(1) {
            match pump.receiver.try_recv() {
                Ok(item) => pulled.push(item),
                Err(_) => break,
            }
        }
        let mut batch = Vec::with_capacity(pulled.len());
        for item in pulled {
            let (delivery, message) = match item {
                Ok(pair) => pair,
                Err(error) => {
                    self.pump = None;
                    return Err(error);
                }
            };
            let position = delivery.position;
            if position.get() <= self.handed {
                continue;
            }
            self.handed = position.get();
            if let Some(pump) = self.pump.as_mut() {
                pump.expected = position.get() + 1;
            }
            self.unacked.push_back((position, message));
            batch.push(delivery);
        }
        Ok(batch)
    }

    async fn acknowledge(&mut self, through: Position) -> Result<(), SourceError> {
        let mut last = None;
        while self.unacked.front().is_some_and(|(p, _)| *p <= through) {
            last = self.unacked.pop_front();
        }
        if let Some((position, message)) = last {
            // Cumulative: acknowledges every earlier message of the consumer too. A lost ack
            // only means a redelivery, which is dropped or skipped, so it is not an error.
            if let Err(error) = message.ack().await {
                tracing::debug!(position = position.get(), %error, "JetStream ack not sent");
            }
        }
        Ok(())
    }

    fn head(&self) -> Option<SourceHead> {
        let position = self.head.load(Ordering::Relaxed);
        (position > 0).then_some(SourceHead {
            position: Position(position),
        })
    }

    async fn replay_from(&mut self, _after: Position) -> Result<Self, SourceError> {
        // An ephemeral consumer beside the durable one; it is positioned by the first
        // `next_batch`, like the live source.
        let name = format!(
            "{}-rebuild-{}",
            self.config.durable,
            uuid::Uuid::now_v7().simple()
        );
        Ok(Self {
            js: self.js.clone(),
            config: self.config.clone(),
            ephemeral: Some(name),
            head: Arc::new(AtomicU64::new(self.head.load(Ordering::Relaxed))),
            pump: None,
            unacked: VecDeque::new(),
            handed: 0,
        })
    }
}
