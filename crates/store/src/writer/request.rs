//! Requests and answers: what an append asks for, what it is answered, and the answer lists
//! a batch fills.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::envelope::{Envelope, HexHash, hex_text};
use crate::{ExpectedVersion, NewEvent, Position, StoreError, StreamId, Version};

/// The command an append carries out, for idempotency.
#[derive(Clone, Debug)]
pub struct CommandRef {
    /// The namespace command ids are unique in (the tenant).
    pub scope: String,
    /// The client's command id (`Idempotency-Key`).
    pub id: String,
    /// A digest of the command's content: a repeat with other content is refused.
    pub fingerprint: Option<String>,
    /// Whether the id is remembered so that a repeat is answered with the first result. False
    /// for an id the service generated (nobody can repeat it): the events carry it, and the
    /// writer neither looks it up nor stores a record.
    pub remember: bool,
}

/// Metadata stamped on every event of one append.
#[derive(Clone, Debug, Default)]
pub struct AppendMeta {
    /// Who caused the events.
    pub actor: String,
    /// The command, if the append is idempotent by command id.
    pub command: Option<CommandRef>,
    /// Correlation id of the request.
    pub correlation_id: Option<String>,
    /// Causation id.
    pub causation_id: Option<String>,
    /// W3C traceparent.
    pub traceparent: Option<String>,
}

/// One append: events for one stream, with an expectation of its version.
#[derive(Clone, Debug)]
pub struct AppendRequest {
    /// Target stream.
    pub stream: StreamId,
    /// What the caller believes the stream's version is.
    pub expected: ExpectedVersion,
    /// The events, in order; at least one.
    pub events: Vec<NewEvent>,
    /// Metadata for all of them.
    pub meta: AppendMeta,
}

/// The answer to an append.
///
/// A fresh append's envelopes are built only when asked for ([`AppendOutcome::envelopes`]):
/// building them copies the request's metadata into every envelope, while many callers need
/// only the version and position, and the HTTP API answers with the stored JSON
/// ([`AppendOutcome::stored`]).
#[derive(Clone, Debug)]
pub struct AppendOutcome {
    /// True when the command id had been seen and nothing new was written.
    pub deduplicated: bool,
    events: OutcomeEvents,
}

/// The events of an [`AppendOutcome`].
///
/// A fresh append is answered with its own request and where its events landed: the writer is
/// the one thread every append passes through, so it does not spend its time copying the
/// metadata into each envelope.
#[derive(Clone, Debug)]
// Moved once, into the reply channel's cell; boxing the fresh variant would cost an allocation
// per append.
#[allow(clippy::large_enum_variant)]
enum OutcomeEvents {
    /// Written by this append: the request and where the writer placed it.
    Fresh(Fresh),
    /// Envelopes already built (read back for a repeated command id, or given).
    Built {
        envelopes: Vec<Envelope>,
        stored: Vec<Vec<u8>>,
    },
    /// Cluster mode: a repeat of a command whose first append was prepared in an earlier batch
    /// that was not applied yet when this one was prepared. Its answer is sent after that batch
    /// was applied (answers go out in order), so [`crate::EventStore::append`] reads the
    /// envelopes back before handing the outcome to its caller; nobody else ever sees it.
    PendingRepeat { first: Position, last: Position },
}

impl AppendOutcome {
    /// An outcome of envelopes already built, with each one's stored JSON when known (empty
    /// otherwise; when given, one per envelope, byte for byte as the log stores it).
    pub fn from_envelopes(
        envelopes: Vec<Envelope>,
        stored: Vec<Vec<u8>>,
        deduplicated: bool,
    ) -> Self {
        debug_assert!(
            stored.is_empty() || stored.len() == envelopes.len(),
            "stored JSON is given for every envelope or for none"
        );
        Self {
            deduplicated,
            events: OutcomeEvents::Built { envelopes, stored },
        }
    }

    /// How many events the outcome holds.
    pub fn len(&self) -> usize {
        match &self.events {
            OutcomeEvents::Fresh(fresh) => fresh.placed.hashes.len(),
            OutcomeEvents::Built { envelopes, .. } => envelopes.len(),
            OutcomeEvents::PendingRepeat { first, last } => (last.0 - first.0 + 1) as usize,
        }
    }

    /// Whether it holds no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stream's version after the append.
    pub fn version(&self) -> Version {
        match &self.events {
            OutcomeEvents::Fresh(fresh) => fresh.placed.last_version(),
            OutcomeEvents::Built { envelopes, .. } => {
                envelopes.last().map(|e| e.version).unwrap_or_default()
            }
            OutcomeEvents::PendingRepeat { .. } => {
                debug_assert!(
                    false,
                    "a pending repeat is resolved before it is handed out"
                );
                Version::default()
            }
        }
    }

    /// The position of the last event written.
    pub fn position(&self) -> Position {
        match &self.events {
            OutcomeEvents::Fresh(fresh) => fresh.placed.last_position(),
            OutcomeEvents::Built { envelopes, .. } => {
                envelopes.last().map(|e| e.position).unwrap_or_default()
            }
            OutcomeEvents::PendingRepeat { last, .. } => *last,
        }
    }

    /// The stored envelopes, in order (for a fresh append, built anew on each call from a
    /// copy of the request; [`AppendOutcome::into_envelopes`] moves it instead).
    pub fn envelopes(&self) -> Vec<Envelope> {
        match &self.events {
            OutcomeEvents::Fresh(fresh) => fresh.placed.clone().envelopes(fresh.request.clone()),
            OutcomeEvents::Built { envelopes, .. } => envelopes.clone(),
            OutcomeEvents::PendingRepeat { .. } => Vec::new(),
        }
    }

    /// The stored envelopes, in order.
    pub fn into_envelopes(self) -> Vec<Envelope> {
        match self.events {
            OutcomeEvents::Fresh(fresh) => fresh.placed.envelopes(fresh.request),
            OutcomeEvents::Built { envelopes, .. } => envelopes,
            OutcomeEvents::PendingRepeat { .. } => Vec::new(),
        }
    }

    /// Each envelope's stored JSON, byte for byte as in the log (what the envelopes serialize
    /// to), for answering without rendering them again. Empty when the answer was read back
    /// from the log (a repeated command id).
    pub fn stored(&self) -> &[Vec<u8>] {
        match &self.events {
            OutcomeEvents::Fresh(fresh) => &fresh.stored,
            OutcomeEvents::Built { stored, .. } => stored,
            OutcomeEvents::PendingRepeat { .. } => &[],
        }
    }
}

/// What the `commands` column family remembers of a first append.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct CommandRecord {
    pub stream: StreamId,
    pub fingerprint: Option<String>,
    pub first_position: Position,
    pub last_position: Position,
}

/// The head of the log as the writer knows it.
#[derive(Clone, Debug)]
pub(crate) struct Head {
    pub position: Position,
    pub hash: HexHash,
    pub recorded_at: Timestamp,
}

/// A fresh append: the request, where the writer placed its events, and their stored JSON.
#[derive(Clone, Debug)]
pub(crate) struct Fresh {
    pub(super) request: AppendRequest,
    pub(super) placed: Placed,
    /// Each event's stored JSON.
    pub(super) stored: Vec<Vec<u8>>,
}

/// The coordinates the writer gave an append's events.
#[derive(Clone, Debug)]
pub(crate) struct Placed {
    pub(super) first_position: Position,
    pub(super) first_version: Version,
    pub(super) recorded_at: Timestamp,
    /// The hash before the first event.
    pub(super) prev_hash: HexHash,
    /// Each event's hash, in order.
    pub(super) hashes: Vec<HexHash>,
}

impl Placed {
    /// The stream's version after the last event (an append has at least one).
    pub(super) fn last_version(&self) -> Version {
        debug_assert!(!self.hashes.is_empty(), "an empty append is refused");
        Version(self.first_version.0 + self.hashes.len() as u64 - 1)
    }

    /// The position of the last event.
    pub(super) fn last_position(&self) -> Position {
        Position(self.first_position.0 + self.hashes.len() as u64 - 1)
    }

    /// The stored envelopes, with the request's events and metadata moved or copied into them.
    fn envelopes(self, request: AppendRequest) -> Vec<Envelope> {
        let AppendRequest {
            stream,
            events,
            meta,
            ..
        } = request;
        let mut prev_hash = self.prev_hash;
        events
            .into_iter()
            .zip(self.hashes)
            .enumerate()
            .map(|(offset, (event, hash))| Envelope {
                position: Position(self.first_position.0 + offset as u64),
                stream: stream.clone(),
                version: Version(self.first_version.0 + offset as u64),
                event_id: event.event_id,
                event_type: event.event_type,
                schema_version: event.schema_version,
                occurred_at: event.occurred_at,
                recorded_at: self.recorded_at,
                actor: meta.actor.clone(),
                command_id: meta.command.as_ref().map(|c| c.id.clone()),
                correlation_id: meta.correlation_id.clone(),
                causation_id: meta.causation_id.clone(),
                traceparent: meta.traceparent.clone(),
                data: event.data,
                prev_hash: hex_text(&std::mem::replace(&mut prev_hash, hash)).to_owned(),
                hash: hex_text(&hash).to_owned(),
            })
            .collect()
    }
}

impl AppendOutcome {
    /// A fresh append's outcome.
    pub(super) fn fresh(fresh: Fresh) -> Self {
        Self {
            deduplicated: false,
            events: OutcomeEvents::Fresh(fresh),
        }
    }

    /// A repeat's outcome: the first append's envelopes, nothing written.
    pub(crate) fn repeat(envelopes: Vec<Envelope>) -> Self {
        Self::from_envelopes(envelopes, Vec::new(), true)
    }

    /// Cluster mode: a repeat of a command in a batch that was not applied yet (see
    /// `OutcomeEvents::PendingRepeat`).
    pub(super) fn pending_repeat(first: Position, last: Position) -> Self {
        Self {
            deduplicated: true,
            events: OutcomeEvents::PendingRepeat { first, last },
        }
    }

    /// The positions to read back, if this is a pending repeat.
    pub(crate) fn pending_range(&self) -> Option<(Position, Position)> {
        match &self.events {
            OutcomeEvents::PendingRepeat { first, last } => Some((*first, *last)),
            _ => None,
        }
    }

    /// The fresh append this outcome answers (`None` for a repeat).
    pub(super) fn as_fresh(&self) -> Option<&Fresh> {
        match &self.events {
            OutcomeEvents::Fresh(fresh) => Some(fresh),
            _ => None,
        }
    }

    /// Events this outcome wrote.
    pub(super) fn written(&self) -> usize {
        if self.deduplicated { 0 } else { self.len() }
    }
}

/// Counters the writer keeps about the batches it formed.
#[derive(Clone, Debug, Default)]
pub struct WriterStats {
    /// Batches written.
    pub batches: u64,
    /// Events written.
    pub events: u64,
    /// Events per batch (one `WriteBatch`) -> how many batches had that size.
    pub batch_sizes: BTreeMap<usize, u64>,
    /// Events per fsync -> how many fsyncs covered that many. The syncer makes every batch
    /// written while the previous fsync ran durable with one `FlushWAL(sync)`, so one fsync may
    /// cover several batches; a lone append's own synced write covers one event.
    pub sync_sizes: BTreeMap<usize, u64>,
    /// How many lone appends (under serial load) the writer synced itself.
    pub inline_syncs: u64,
    /// Time the writer spent preparing and writing batches (not waiting for appends or fsyncs).
    pub busy: std::time::Duration,
    /// Time the syncer spent in its fsyncs (`FlushWAL(sync)`: writing the log's buffer to the
    /// file and syncing it), over `sync_sizes`' fsyncs less `inline_syncs`.
    pub syncing: std::time::Duration,
}

pub(crate) struct Pending {
    pub request: AppendRequest,
    pub reply: Reply,
}

/// A batch's answers: where each goes, and what it is.
pub(super) type Answers = Vec<(Reply, Result<AppendOutcome, StoreError>)>;

/// Emptied answer lists, handed back to the writer by whoever answered their batch (the
/// answerer task or the syncer), so that the writer fills the same few lists again.
///
/// A batch at concurrency 1024 holds some 450 answers of ~400 bytes each. A fresh list per
/// batch, freed on another thread, kept the allocator taking fresh pages from the system for
/// the writer, and the writer spent ~0.5 µs per event in page faults zeroing them.
#[derive(Clone, Default)]
pub(crate) struct SpareLists(Arc<Mutex<Vec<Answers>>>);

impl SpareLists {
    /// Lists kept: more than batches are usually in flight between the writer and the answerer.
    const KEPT: usize = 8;
    /// Room (answers) a kept list may have: a list grown by a rare burst of bigger batches (up to
    /// `MAX_BATCH_REQUESTS`) is freed rather than held for the life of the process.
    const KEPT_ROOM: usize = 1024;

    /// An empty list, with room for `len` answers.
    pub(super) fn take(&self, len: usize) -> Answers {
        let mut list = self
            .0
            .lock()
            .ok()
            .and_then(|mut spare| spare.pop())
            .unwrap_or_default();
        list.reserve(len);
        list
    }

    /// Keeps an emptied list for a later batch (or frees it, when enough are kept or it is
    /// bigger than lists are kept).
    pub(super) fn give_back(&self, mut list: Answers) {
        list.clear();
        if list.capacity() > Self::KEPT_ROOM {
            return;
        }
        if let Ok(mut spare) = self.0.lock()
            && spare.len() < Self::KEPT
        {
            spare.push(list);
        }
    }
}

/// A batch written to the write-ahead log, with the answers to give once it is synced.
pub(crate) struct Written {
    /// The log's last position after this batch.
    pub(super) position: Position,
    /// Events it wrote (0: only refusals or repeats, which still wait for the batches before).
    pub(super) events: usize,
    pub(super) answers: Answers,
    /// Where the emptied `answers` go back to.
    pub(super) spare_lists: SpareLists,
    /// Cluster mode: the batch's writes, applied once the commit is acknowledged (`None` in
    /// local mode, where the writer wrote them, and for a batch that writes nothing).
    pub(super) write: Option<WriteBatch>,
    /// Cluster mode: the writer's epoch when it prepared the batch. A failed commit ends the
    /// epoch: the batches of an ended epoch are answered "not appended" without being sent.
    pub(super) epoch: u64,
}

/// Where one caller's answer goes.
pub(super) type Reply = oneshot::Sender<Result<AppendOutcome, StoreError>>;

impl Written {
    /// Advances the durable position to this batch and answers its callers.
    pub(super) fn confirm(self, published: &watch::Sender<Position>) {
        let last = self.position;
        super::catch_up::advance(published, last);
        let mut answers = self.answers;
        for (reply, answer) in answers.drain(..) {
            let _ = reply.send(answer);
        }
        self.spare_lists.give_back(answers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal() -> (Reply, Result<AppendOutcome, StoreError>) {
        let (reply, _) = oneshot::channel();
        (reply, Err(StoreError::EmptyAppend))
    }

    #[test]
    fn spare_lists_come_back_empty_with_their_room() {
        let spare = SpareLists::default();
        let mut list = spare.take(3);
        assert!(list.is_empty() && list.capacity() >= 3);
        list.extend((0..500).map(|_| refusal()));
        let room = list.capacity();
        spare.give_back(list);

        let again = spare.take(3);
        assert!(again.is_empty(), "a list is handed out empty");
        assert_eq!(again.capacity(), room, "the same list, with its room");
        // Nothing else was kept.
        assert_eq!(spare.take(0).capacity(), 0);
    }

    #[test]
    fn spare_lists_free_a_list_grown_past_their_room() {
        let spare = SpareLists::default();
        let mut list = Vec::with_capacity(SpareLists::KEPT_ROOM + 1);
        list.push(refusal());
        spare.give_back(list);
        assert_eq!(spare.take(0).capacity(), 0, "the big list was not kept");
    }

    #[test]
    fn spare_lists_keep_only_a_few() {
        let spare = SpareLists::default();
        for _ in 0..SpareLists::KEPT + 5 {
            let mut list = Vec::with_capacity(16);
            list.push(refusal());
            spare.give_back(list);
        }
        let kept = (0..SpareLists::KEPT + 5)
            .map(|_| spare.take(0))
            .filter(|list| list.capacity() >= 16)
            .count();
        assert_eq!(kept, SpareLists::KEPT);
    }
}
