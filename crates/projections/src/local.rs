//! The local-log source: tails the RocksDB event log of this process (embedded mode).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use planledger_store::{Envelope, EventStore, Position};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::SourceError;
use crate::source::{Delivery, EventSource, SourceHead};

/// Batches read ahead while the projector applies the previous one.
const READ_AHEAD_BATCHES: usize = 2;

/// Deliveries a [`SharedTail`] keeps: enough for the embedded projectors, which follow the
/// log's head a few commits apart, to find what the first of them read.
const SHARED_TAIL_DELIVERIES: usize = 8192;

/// The newest deliveries read from one local log, shared by the sources made with
/// [`LocalLogSource::with_tail`].
///
/// The embedded read models each tail the same log: without it each would read every event
/// from RocksDB, parse its envelope and decode its domain event for itself. With it, the first
/// source to reach a position reads it and the others are handed clones of the same
/// [`Delivery`] (one envelope, one decoded event). It holds a contiguous run of positions
/// ending at the newest one read; a source reading behind it reads the log itself and leaves
/// the tail alone, and a rebuild's replay (from position 1) does not use it at all.
#[derive(Clone, Debug, Default)]
pub struct SharedTail {
    ring: Arc<Mutex<Ring>>,
    /// Held while reading the log for the tail, so that sources woken by the same append read
    /// it once: the others wait, then find it in the ring.
    reading: Arc<Mutex<()>>,
}

#[derive(Debug, Default)]
struct Ring {
    /// Position of `deliveries[0]`.
    first: u64,
    deliveries: VecDeque<Delivery>,
}

impl SharedTail {
    /// An empty tail.
    pub fn new() -> Self {
        Self::default()
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        // The ring is only a cache: one left by a panicking holder is still consistent (every
        // change to it is a push or a pop of whole deliveries).
        self.ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Up to `limit` deliveries from `from` on: from the ring when it holds `from`, else read
    /// from `store` (by one source at a time) and kept for the others.
    fn read(
        &self,
        store: &EventStore,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>, SourceError> {
        let _reading = self
            .reading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let kept = self.get(from, limit);
        if !kept.is_empty() {
            return Ok(kept);
        }
        let read = read_chunk(store, from, limit)?;
        self.keep(&read);
        Ok(read)
    }

    /// Up to `limit` deliveries from `from` on, if the tail holds `from`.
    fn get(&self, from: u64, limit: usize) -> Vec<Delivery> {
        let ring = self.ring();
        if from < ring.first {
            return Vec::new();
        }
        let skip = (from - ring.first) as usize;
        ring.deliveries
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect()
    }

    /// Keeps `read` (deliveries from the log at consecutive positions) if it continues the
    /// tail, or starts the tail anew if it is ahead of it.
    fn keep(&self, read: &[Delivery]) {
        let Some(first) = read.first() else {
            return;
        };
        let first = first.position.get();
        let mut ring = self.ring();
        let end = ring.first + ring.deliveries.len() as u64;
        if first > end || ring.deliveries.is_empty() {
            ring.deliveries.clear();
            ring.first = first;
        } else if first != end {
            // Behind the tail's end: another source read these already (or is far behind).
            return;
        }
        for delivery in read {
            debug_assert_eq!(
                delivery.position.get(),
                ring.first + ring.deliveries.len() as u64,
                "a shared tail holds consecutive positions"
            );
            ring.deliveries.push_back(delivery.clone());
        }
        while ring.deliveries.len() > SHARED_TAIL_DELIVERIES {
            ring.deliveries.pop_front();
            ring.first += 1;
        }
    }
}

/// Reads the local event log in global order, waking on every durable append.
///
/// A background task reads the next batch while the projector applies the current one, so
/// reading and decoding the log overlap with applying and committing.
pub struct LocalLogSource {
    store: EventStore,
    tail: Option<SharedTail>,
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
            tail: None,
            prefetch: None,
        }
    }

    /// A source over `store` that shares what it reads with the other sources of `tail`.
    pub fn with_tail(store: EventStore, tail: SharedTail) -> Self {
        Self {
            store,
            tail: Some(tail),
            prefetch: None,
        }
    }

    fn start(&mut self, first: u64, chunk: usize) {
        let (sender, receiver) = mpsc::channel(READ_AHEAD_BATCHES);
        let task = tokio::spawn(read_ahead(
            self.store.clone(),
            self.tail.clone(),
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
    tail: Option<SharedTail>,
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
        let shared = tail
            .as_ref()
            .map(|t| t.get(next, chunk))
            .unwrap_or_default();
        let read = if shared.is_empty() {
            let reader = store.clone();
            let tail = tail.clone();
            tokio::task::spawn_blocking(move || match tail {
                Some(tail) => tail.read(&reader, next, chunk),
                None => read_chunk(&reader, next, chunk),
            })
            .await
        } else {
            Ok(Ok(shared))
        };
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
        out.push(Delivery::new(position, envelope));
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
        // A replay reads far behind the shared tail, so it reads the log for itself.
        Ok(Self::new(self.store.clone()))
    }
}
