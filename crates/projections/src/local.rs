//! The local-log source: tails the RocksDB event log of this process (embedded mode).

use planledger_store::{Envelope, EventStore, Position};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::SourceError;
use crate::source::{Delivery, EventSource, SourceHead};

/// Batches read ahead while the projector applies the previous one.
const READ_AHEAD_BATCHES: usize = 2;

/// Reads the local event log in global order, waking on every durable append.
///
/// A background task reads the next batch while the projector applies the current one, so
/// reading and decoding the log overlap with applying and committing.
pub struct LocalLogSource {
    store: EventStore,
    prefetch: Option<Prefetch>,
}

struct Prefetch {
    /// The position the next received batch starts at.
    expected: u64,
    receiver: mpsc::Receiver<Result<Vec<Delivery>, SourceError>>,
    task: JoinHandle<()>,
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for LocalLogSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLogSource")
            .field("last_position", &self.store.last_position())
            .finish()
    }
}

impl LocalLogSource {
    /// A source over `store`; reading starts at the position the runtime asks for.
    pub fn new(store: EventStore) -> Self {
        Self {
            store,
            prefetch: None,
        }
    }

    fn start(&mut self, first: u64, chunk: usize) {
        let (sender, receiver) = mpsc::channel(READ_AHEAD_BATCHES);
        let task = tokio::spawn(read_ahead(
            self.store.clone(),
            self.store.subscribe(),
            first,
            chunk.max(1),
            sender,
        ));
        self.prefetch = Some(Prefetch {
            expected: first,
            receiver,
            task,
        });
    }
}

/// Reads `chunk` envelopes at a time from `next` on, waiting for appends when caught up.
async fn read_ahead(
    store: EventStore,
    mut durable: watch::Receiver<Position>,
    mut next: u64,
    chunk: usize,
    sender: mpsc::Sender<Result<Vec<Delivery>, SourceError>>,
) {
    loop {
        let last = durable.borrow_and_update().get();
        if last < next {
            if durable.changed().await.is_err() {
                // The store is closing: nothing more will become durable.
                return;
            }
            continue;
        }
        let reader = store.clone();
        let read = tokio::task::spawn_blocking(move || read_chunk(&reader, next, chunk)).await;
        let batch = match read {
            Ok(batch) => batch,
            Err(join) => Err(SourceError::Transport {
                source_name: "local-log".into(),
                detail: format!("the log reader task failed: {join}"),
            }),
        };
        let failed = batch.is_err();
        if let Ok(deliveries) = &batch {
            match deliveries.last() {
                Some(last) => next = last.position.get() + 1,
                // The watch said `next` is durable; an empty read means it is gone.
                None => {
                    let _ = sender
                        .send(Err(SourceError::Malformed {
                            source_name: "local-log".into(),
                            position: next,
                            detail: "the log reports the position durable but it cannot be read"
                                .into(),
                        }))
                        .await;
                    return;
                }
            }
        }
        if sender.send(batch).await.is_err() || failed {
            return;
        }
    }
}

fn read_chunk(store: &EventStore, from: u64, chunk: usize) -> Result<Vec<Delivery>, SourceError> {
    let raw = store.read_all_raw(Position(from), chunk)?;
    let mut out = Vec::with_capacity(raw.len());
    for (position, bytes) in raw {
        let envelope: Envelope =
            serde_json::from_slice(&bytes).map_err(|e| SourceError::Malformed {
                source_name: "local-log".into(),
                position: position.get(),
                detail: e.to_string(),
            })?;
        out.push(Delivery { position, envelope });
    }
    Ok(out)
}

impl EventSource for LocalLogSource {
    fn describe(&self) -> String {
        "local-log".into()
    }

    async fn next_batch(
        &mut self,
        after: Position,
        max: usize,
    ) -> Result<Vec<Delivery>, SourceError> {
        let first = after.get() + 1;
        if self.prefetch.as_ref().is_none_or(|p| p.expected != first) {
            self.start(first, max);
        }
        let Some(prefetch) = self.prefetch.as_mut() else {
            return Err(SourceError::Closed {
                source_name: self.describe(),
            });
        };
        match prefetch.receiver.recv().await {
            Some(Ok(batch)) => {
                if let Some(last) = batch.last() {
                    prefetch.expected = last.position.get() + 1;
                }
                Ok(batch)
            }
            Some(Err(error)) => {
                self.prefetch = None;
                Err(error)
            }
            None => {
                self.prefetch = None;
                Err(SourceError::Closed {
                    source_name: self.describe(),
                })
            }
        }
    }

    fn head(&self) -> Option<SourceHead> {
        Some(SourceHead {
            position: self.store.last_position(),
        })
    }

    async fn replay_from(&mut self, _after: Position) -> Result<Self, SourceError> {
        // Reading starts wherever the first `next_batch` asks, so `after` needs no setup here.
        Ok(Self::new(self.store.clone()))
    }
}
