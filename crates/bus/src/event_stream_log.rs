//! The relay's event stream read back as a log: [`EventStreamLog`], a read-only
//! [`Committer`] over a stream the relay publishes to, so a log restored from a backup catches
//! up with the events published after the backup, through the store's own catch-up (which
//! checks that the log is a prefix of the stream, then applies the stream's later events with
//! the writer's checks). It refuses every commit: nothing is ever published through it.
//!
//! The relay publishes position `p` at sequence `p + offset`, one constant offset per stream
//! (0 unless the stream was reset from a later position); the offset is read from the stream's
//! last message (its sequence minus its `Planledger-Position` header), as a relay adopting a
//! stream does. The relay publishes an append's command record (the `Planledger-Command-*`
//! headers) on its first event, as the partition committer does, so the appends caught up this
//! way get their idempotency records back and a repeated `Idempotency-Key` is answered as a
//! repeat. Messages published by a relay before it did carry none: [`EventStreamLog::caught_up`]
//! counts the appends read without one, for the restore to say so.

use std::sync::Mutex;
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::{self, stream};
use planledger_proto::Message as _;
use planledger_proto::v1::EventEnvelope;
use planledger_store::{CommitError, CommitEvent, CommittedEvent, Committer, Position};
use tokio::runtime::Handle;

use crate::BusError;
use crate::command_headers;
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
    counts: Mutex<Counts>,
}

/// What the catch-up read: appends, and those whose first event carried no command record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaughtUp {
    /// Appends read (an append's events share a stream and a command id).
    pub appends: u64,
    /// Appends whose first event carried no command record: published by a relay that did not
    /// publish them, or made without an `Idempotency-Key` (nothing to remember).
    pub without_command: u64,
    /// Events of those appends.
    pub events_without_command: u64,
}

/// [`CaughtUp`] so far, and the last event counted (a position read twice counts once).
#[derive(Debug, Default)]
struct Counts {
    caught_up: CaughtUp,
    /// The last counted event: position, stream, command id, whether its append had a record.
    last: Option<(u64, String, Option<String>, bool)>,
}

impl Counts {
    fn count(&mut self, event: &CommittedEvent) {
        let envelope = &event.envelope;
        let position = envelope.position.get();
        if self.last.as_ref().is_some_and(|last| position <= last.0) {
            return;
        }
        let continued = match &self.last {
            Some((last, stream, command_id, recorded))
                if event.command.is_none()
                    && planledger_store::continues_append(
                        (*last, stream, command_id.as_deref()),
                        (
                            position,
                            envelope.stream.as_str(),
                            envelope.command_id.as_deref(),
                        ),
                    ) =>
            {
                Some(*recorded)
            }
            _ => None,
        };
        let recorded = continued.unwrap_or(event.command.is_some());
        if continued.is_none() {
            self.caught_up.appends += 1;
            if !recorded {
                self.caught_up.without_command += 1;
            }
        }
        if !recorded {
            self.caught_up.events_without_command += 1;
        }
        self.last = Some((
            position,
            envelope.stream.as_str().to_string(),
            envelope.command_id.clone(),
            recorded,
        ));
    }
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
            counts: Mutex::new(Counts::default()),
        }))
    }

    /// What has been read so far: appends, and those without a command record.
    pub fn caught_up(&self) -> CaughtUp {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .caught_up
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
            let command = command_headers::decode(Some(&message.headers)).map_err(invalid)?;
            events.push(CommittedEvent { envelope, command });
        }
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for event in &events {
            counts.count(event);
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

#[cfg(test)]
mod tests {
    use planledger_store::{CommandHeader, Envelope, StreamId, Version};
    use serde_json::value::RawValue;

    use super::*;

    fn event(position: u64, plan: &str, command_id: &str, recorded: bool) -> CommittedEvent {
        let envelope = Envelope {
            position: Position(position),
            stream: StreamId::new(format!("acme/{plan}")).expect("a stream id"),
            version: Version(position),
            event_id: uuid::Uuid::from_u128(u128::from(position)),
            event_type: "CheckInRecorded".into(),
            schema_version: 1,
            occurred_at: jiff::Timestamp::UNIX_EPOCH,
            recorded_at: jiff::Timestamp::UNIX_EPOCH,
            actor: "pat".into(),
            command_id: Some(command_id.into()),
            correlation_id: None,
            causation_id: None,
            traceparent: None,
            data: RawValue::from_string("{}".into()).expect("JSON"),
            prev_hash: String::new(),
            hash: String::new(),
        };
        let command = recorded.then(|| CommandHeader {
            scope: "acme".into(),
            id: command_id.into(),
            fingerprint: None,
        });
        CommittedEvent { envelope, command }
    }

    #[test]
    fn appends_without_a_command_record_are_counted_once_with_their_events() {
        let mut counts = Counts::default();
        let events = [
            event(1, "a", "k1", true),
            event(2, "a", "k1", false), // continues k1's append, which has its record
            event(3, "a", "g1", false), // an append published without a record
            event(4, "a", "g1", false),
            event(5, "b", "g1", false), // another plan: another append
            event(6, "a", "k2", true),
        ];
        for event in &events {
            counts.count(event);
        }
        // A position read again (a retried read) counts once.
        counts.count(&events[3]);
        assert_eq!(
            counts.caught_up,
            CaughtUp {
                appends: 4,
                without_command: 2,
                events_without_command: 3,
            }
        );
    }
}
