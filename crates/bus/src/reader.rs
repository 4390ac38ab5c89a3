//! Reads the log ahead of the relay's publisher, on its own task, and prepares each message
//! (protobuf body, subject, headers, and on an append's first event the command record it
//! remembers), so that reading and encoding overlap with publishing.

use async_nats::jetstream::message::PublishMessage;
use jiff::Timestamp;
use planledger_proto::v1::EventEnvelope;
use planledger_store::{CommandHeader, EventStore, Position, StoreError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::envelope::stored_json_to_proto;
use crate::relay::message_for;

/// Batches prepared ahead of the publisher.
const READ_AHEAD_BATCHES: usize = 4;

/// One event, ready to publish.
pub(crate) struct Prepared {
    /// Its log position.
    pub position: Position,
    /// When the log made it durable (for the lag in seconds).
    pub recorded_at: Timestamp,
    /// The subject it goes to.
    pub subject: String,
    /// Body and headers (without the expected-sequence header, which the publisher adds).
    pub publish: PublishMessage,
}

type Batch = Result<Vec<Prepared>, StoreError>;

/// The read-ahead task and the channel it fills; the task stops when this is dropped.
pub(crate) struct LogReader {
    batches: mpsc::Receiver<Batch>,
    task: JoinHandle<()>,
}

impl Drop for LogReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LogReader {
    /// Starts reading at `from`, in batches of up to `batch` events, following the log's head.
    pub fn spawn(store: EventStore, from: Position, subject_prefix: String, batch: usize) -> Self {
        let (sender, batches) = mpsc::channel(READ_AHEAD_BATCHES);
        let task = tokio::spawn(read_ahead(
            store,
            from,
            subject_prefix,
            batch.max(1),
            sender,
        ));
        Self { batches, task }
    }

    /// The next batch, waiting for one; an error if the log cannot be read (or has closed).
    pub async fn next(&mut self) -> Batch {
        self.batches
            .recv()
            .await
            .unwrap_or(Err(StoreError::WriterStopped))
    }

    /// The next batch if one is ready.
    pub fn try_next(&mut self) -> Option<Batch> {
        match self.batches.try_recv() {
            Ok(batch) => Some(batch),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => Some(Err(StoreError::WriterStopped)),
        }
    }
}

async fn read_ahead(
    store: EventStore,
    mut next: Position,
    subject_prefix: String,
    batch: usize,
    sender: mpsc::Sender<Batch>,
) {
    let mut head = store.subscribe();
    let mut appends = Appends::default();
    loop {
        let last = *head.borrow_and_update();
        if next > last {
            if head.changed().await.is_err() {
                // The store is closed: nothing more will be appended.
                return;
            }
            continue;
        }
        let wanted = (last.get() - next.get() + 1).min(batch as u64) as usize;
        let prepared = store.read_all_raw(next, wanted).and_then(|entries| {
            if entries.is_empty() {
                return Err(StoreError::PositionOutOfRange { asked: next, last });
            }
            entries
                .iter()
                .map(|(position, bytes)| {
                    prepare(&store, &mut appends, *position, bytes, &subject_prefix)
                })
                .collect::<Result<Vec<_>, _>>()
        });
        let failed = prepared.is_err();
        if let Ok(batch) = &prepared
            && let Some(last_read) = batch.last()
        {
            next = Position(last_read.position.get() + 1);
        }
        if sender.send(prepared).await.is_err() || failed {
            return;
        }
    }
}

/// Where the events read so far stand in their appends: the stream and command id of the last
/// one, so the first event of each append is told from the ones that continue it.
#[derive(Default)]
struct Appends {
    last: Option<(Position, String, Option<String>)>,
}

impl Appends {
    /// Whether the event continues the append of the event before it (same stream and command
    /// id, the next position): only an append's first event can carry its command record.
    fn continues(&mut self, wire: &EventEnvelope) -> bool {
        let continues = self
            .last
            .as_ref()
            .is_some_and(|(position, stream, command_id)| {
                planledger_store::continues_append(
                    (position.get(), stream, command_id.as_deref()),
                    (wire.position, &wire.stream, wire.command_id.as_deref()),
                )
            });
        self.last = Some((
            Position(wire.position),
            wire.stream.clone(),
            wire.command_id.clone(),
        ));
        continues
    }
}

/// The command record the first event of an append carries, when the append remembers its
/// key: a single node remembers keys per tenant (the command path's scope there).
fn command_of(
    store: &EventStore,
    appends: &mut Appends,
    wire: &EventEnvelope,
) -> Result<Option<CommandHeader>, StoreError> {
    if appends.continues(wire) {
        return Ok(None);
    }
    match &wire.command_id {
        Some(id) => store.command_header_at(&wire.tenant, id, Position(wire.position)),
        None => Ok(None),
    }
}

/// Decodes one stored entry and builds its message.
fn prepare(
    store: &EventStore,
    appends: &mut Appends,
    position: Position,
    bytes: &[u8],
    subject_prefix: &str,
) -> Result<Prepared, StoreError> {
    let (wire, recorded_at) = stored_json_to_proto(bytes).map_err(|e| StoreError::Corrupt {
        what: format!("log position {position}"),
        detail: e.to_string(),
    })?;
    if wire.position != position.get() {
        return Err(StoreError::Corrupt {
            what: format!("log position {position}"),
            detail: format!("the envelope says position {}", wire.position),
        });
    }
    let command = command_of(store, appends, &wire)?;
    let (subject, publish) = message_for(&wire, command.as_ref(), subject_prefix);
    Ok(Prepared {
        position,
        recorded_at,
        subject,
        publish,
    })
}
