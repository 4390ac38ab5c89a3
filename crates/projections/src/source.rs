//! Where projectors get events from: one trait, several implementations.
//!
//! The local-log source ([`crate::LocalLogSource`]) lives in this crate; the JetStream source
//! lives in `planledger-bus`, so this crate never depends on NATS code. The binary wires a
//! source to a runtime.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use planledger_domain::Event;
use planledger_store::{Envelope, Position};

use crate::decode::decode_event;
use crate::{ProjectionError, SourceError};

/// One event handed to a projector: its global position and its envelope.
///
/// Clones share the envelope and its decoded event: where several projectors are handed the
/// same delivery (the embedded read models tailing one log), the event is decoded once.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The event's global log position (what checkpoints count).
    pub position: Position,
    /// The stored envelope (stream, type, schema version, data, recorded_at, ...).
    pub envelope: Arc<Envelope>,
    /// The domain event, once some holder of this delivery has decoded it.
    decoded: Arc<OnceLock<Event>>,
}

impl Delivery {
    /// A delivery of `envelope` at `position`.
    pub fn new(position: Position, envelope: Envelope) -> Self {
        Self {
            position,
            envelope: Arc::new(envelope),
            decoded: Arc::default(),
        }
    }

    /// The envelope's domain event ([`decode_event`]), decoded by the first caller among the
    /// delivery's clones; an event that does not decode is an error each time it is asked for.
    pub fn event(&self) -> Result<&Event, ProjectionError> {
        if let Some(event) = self.decoded.get() {
            return Ok(event);
        }
        let event = decode_event(&self.envelope)?;
        Ok(self.decoded.get_or_init(|| event))
    }
}

/// What a source knows about the newest event that exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceHead {
    /// The newest position known to exist (0 when the log is empty).
    pub position: Position,
}

/// A supply of events in global order.
///
/// Contract, relied on by the runtime:
/// - [`EventSource::next_batch`] yields deliveries with strictly increasing positions; it may
///   repeat positions at or below `after` (redelivery), which the runtime skips, but it must
///   never skip a position above `after` (the runtime stops with a gap error if it does);
/// - `next_batch` is cancel-safe: dropping its future loses no events (the runtime races it
///   against shutdown and rebuild work);
/// - [`EventSource::acknowledge`] is called only after every delivery up to `through` has been
///   committed to the read model together with its checkpoint (synced to disk when
///   [`EventSource::needs_durable_commit`] says so), so a source that forgets acknowledged
///   events (a JetStream consumer) never loses one.
pub trait EventSource: Send + 'static {
    /// A short description for logs and `GET /v1/projections`, e.g. `local-log`.
    fn describe(&self) -> String;

    /// Waits until events after `after` exist and returns up to `max` of them in global order.
    fn next_batch(
        &mut self,
        after: Position,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, SourceError>> + Send;

    /// Told after the deliveries up to `through` are committed; a JetStream source acks here.
    fn acknowledge(
        &mut self,
        through: Position,
    ) -> impl Future<Output = Result<(), SourceError>> + Send {
        let _ = through;
        async { Ok(()) }
    }

    /// Whether commits must be synced to disk before [`EventSource::acknowledge`] (true when
    /// an acknowledged event cannot be fetched again).
    fn needs_durable_commit(&self) -> bool {
        false
    }

    /// The newest event the source knows of, if it can tell.
    fn head(&self) -> Option<SourceHead>;

    /// A new, independent source of the same kind whose first delivery follows `after`; a
    /// rebuild reads from position 0 through it while the live source keeps feeding the live
    /// read model.
    fn replay_from(
        &mut self,
        after: Position,
    ) -> impl Future<Output = Result<Self, SourceError>> + Send
    where
        Self: Sized;
}
