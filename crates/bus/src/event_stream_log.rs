//! The relay's event stream read back as a log: [`EventStreamLog`], a read-only
//! [`Committer`] over a stream the relay publishes to, so a log restored from a backup catches
//! up with the events published after the backup, through the store's own catch-up (which
//! checks that the log is a prefix of the stream, then applies the stream's later events with
//! the writer's checks). It refuses every commit: nothing is ever published through it.
//!
//! The relay publishes position `p` at sequence `p + offset`, one constant offset per stream
//! (0 unless the stream was reset from a later position); the offset is read from the stream's
//! last message (its sequence minus its `Planledger-Position` header), as a relay adopting a
//! stream does. The relay's messages carry no command headers, so the appends caught up this
//! way have no idempotency records: a repeated `Idempotency-Key` of one of them is appended
//! again.

use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::{self, stream};
use planledger_proto::Message as _;
use planledger_proto::v1::EventEnvelope;
use planledger_store::{CommitError, CommitEvent, CommittedEvent, Committer, Position};
use tokio::runtime::Handle;

use crate::BusError;
use crate::connection::find_stream;
use crate::envelope::{envelope_from_proto, header_position};

/// A relay's event stream, read as a log (read-only).
pub struct EventStreamLog {
    runtime: Handle,
    stream: stream::Stream,
    name: String,
    /// `sequence - position` of every message.
    offset: i64,
    /// The stream's first sequence when opened (earlier positions are not in it).
    first_sequence: u64,
    timeout: Duration,
}

impl std::fmt::Debug for EventStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStreamLog")
            .field("stream", &self.name)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl EventStreamLog {
    /// Opens stream `name` on the runtime this is called in. `Ok(None)` when the stream does
    /// not exist or holds no message (there is nothing to catch up from).
    pub async fn open(client: Client, name: &str) -> Result<Option<Self>, BusError> {
        let context = jetstream::new(client);
        let Some(mut found) = find_stream(&context, name).await? else {
            return Ok(None);
        };
        let info = found
            .info()
            .await
            .map_err(|e| BusError::nats("read stream info", e))?;
        if info.state.messages == 0 {
            return Ok(None);
        }
        let (first_sequence, last_sequence) = (info.state.first_sequence, info.state.last_sequence);
        let last = found
            .get_raw_message(last_sequence)
            .await
            .map_err(|e| BusError::nats("read the stream's last message", e))?;
        let position = header_position(&last.headers).ok_or_else(|| BusError::InvalidEvent {
            position: 0,
            detail: format!(
                "the last message of stream {name} (sequence {last_sequence}) has no Planledger-Position header: it is not a relay's event stream"
            ),
        })?;
        Ok(Some(Self {
            runtime: Handle::current(),
            stream: found,
            name: name.to_string(),
            offset: last_sequence as i64 - position as i64,
            first_sequence,
            timeout: Duration::from_secs(10),
        }))
    }

    /// The last position the stream holds.
    pub async fn last_position_now(&self) -> Result<Position, BusError> {
        let info = self
            .stream
            .clone()
            .info()
            .await
            .map_err(|e| BusError::nats("read stream info", e))?
            .clone();
        Ok(Position(
            (info.state.last_sequence as i64 - self.offset).max(0) as u64,
        ))
    }

    async fn read(&self, from: u64, to: u64) -> Result<Vec<CommittedEvent>, CommitError> {
        let mut events = Vec::with_capacity((to - from + 1) as usize);
        for position in from..=to {
            let sequence = position as i64 + self.offset;
            if sequence < self.first_sequence as i64 {
                return Err(CommitError::Unavailable(format!(
                    "stream {} does not hold position {position} (it starts at sequence {}, position {}): it was reset after that position; the log cannot be caught up from it",
                    self.name,
                    self.first_sequence,
                    self.first_sequence as i64 - self.offset
                )));
            }
            let message = self
                .stream
                .get_raw_message(sequence as u64)
                .await
                .map_err(|e| {
                    CommitError::Unavailable(format!(
                        "reading sequence {sequence} of {}: {e}",
                        self.name
                    ))
                })?;
            let invalid = |detail: String| {
                CommitError::Unavailable(format!(
                    "stream {} at sequence {sequence} (position {position}): {detail}",
                    self.name
                ))
            };
            let wire = EventEnvelope::decode(message.payload.as_ref())
                .map_err(|e| invalid(format!("its body is not an EventEnvelope: {e}")))?;
            let envelope = envelope_from_proto(wire).map_err(|e| invalid(e.to_string()))?;
            if envelope.position.get() != position {
                return Err(invalid(format!(
                    "its envelope says position {}",
                    envelope.position
                )));
            }
            events.push(CommittedEvent {
                envelope,
                command: None,
            });
        }
        Ok(events)
    }

    fn run<T>(&self, work: impl Future<Output = Result<T, CommitError>>) -> Result<T, CommitError> {
        let timeout = self.timeout;
        self.runtime
            .block_on(async { tokio::time::timeout(timeout, work).await })
            .unwrap_or_else(|_| {
                Err(CommitError::Unavailable(format!(
                    "stream {} did not answer within {timeout:?}",
                    self.name
                )))
            })
    }
}

impl Committer for EventStreamLog {
    fn describe(&self) -> String {
        format!("event stream {} (read-only)", self.name)
    }

    fn commit(&self, _expected_last: Position, _events: &[CommitEvent]) -> Result<(), CommitError> {
        Err(CommitError::Refused(format!(
            "the log is being caught up from the event stream {}; it takes no appends",
            self.name
        )))
    }

    fn last_position(&self) -> Result<Position, CommitError> {
        self.run(async {
            self.last_position_now()
                .await
                .map_err(|e| CommitError::Unavailable(e.to_string()))
        })
    }

    fn read_after(&self, after: Position, max: usize) -> Result<Vec<CommittedEvent>, CommitError> {
        self.run(async {
            let last = self
                .last_position_now()
                .await
                .map_err(|e| CommitError::Unavailable(e.to_string()))?
                .get();
            let to = last.min(after.get().saturating_add(max.min(256) as u64));
            if to <= after.get() {
                return Ok(Vec::new());
            }
            self.read(after.get() + 1, to).await
        })
    }
}
