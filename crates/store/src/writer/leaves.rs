//! The Merkle tree's leaf hashes of a batch (SHA-256 over each stored envelope, RFC 9162), taken
//! off the writer thread: as the writer renders each event it copies the stored bytes into a
//! chunk, and every [`CHUNK_EVENTS`] events hands the chunk to a thread of its own, which hashes
//! it while the writer renders the rest of the batch. At the end of the batch the writer takes
//! the hashes in order; a chunk whose hashes are not ready (not started, or started by a thread
//! that lost its core) and the batch's last, partial chunk the writer hashes itself, so it never
//! waits for the hashing thread. The writer then only combines: its right edge of the tree adds
//! each leaf, and the nodes go into the batch (see `Writer::add_leaves`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, mpsc};

use crate::merkle::{Hash, leaf_hash};

/// Events per chunk handed to the hashing thread: large enough that a hand-over (a wake-up) is
/// a small part of hashing it, small enough that a batch of a few dozen events is shared.
const CHUNK_EVENTS: usize = 16;

/// Stored bytes of consecutive events, and their leaf hashes once taken.
struct Chunk {
    /// The events' stored bytes, one after another.
    bytes: Vec<u8>,
    /// Where each event's bytes end in `bytes`.
    ends: Vec<usize>,
    /// Set by the writer when it hashes the chunk itself: the hashing thread skips it.
    taken: AtomicBool,
    /// The hashes, in order, once the hashing thread has them.
    hashes: OnceLock<Vec<Hash>>,
}

impl Chunk {
    fn new() -> Self {
        Self {
            bytes: Vec::with_capacity(CHUNK_EVENTS * 1024),
            ends: Vec::with_capacity(CHUNK_EVENTS),
            taken: AtomicBool::new(false),
            hashes: OnceLock::new(),
        }
    }

    /// Hands each event's leaf hash to `out`, in order.
    fn hash_each(&self, mut out: impl FnMut(Hash)) {
        let mut start = 0;
        for &end in &self.ends {
            out(leaf_hash(&self.bytes[start..end]));
            start = end;
        }
    }
}

/// The writer's side: the chunks of the batch being prepared, in order.
pub(crate) struct LeafHasher {
    /// To the hashing thread; `None` if it could not be started (the writer hashes everything).
    helper: Option<mpsc::Sender<Arc<Chunk>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// This batch's full chunks, handed over, in order.
    handed: Vec<Arc<Chunk>>,
    /// The chunk being filled.
    filling: Chunk,
    /// Events added since the last [`Self::take`].
    pending: usize,
}

impl LeafHasher {
    /// Starts the hashing thread (without one, if it cannot be started: the writer then hashes
    /// every leaf itself).
    pub(crate) fn start() -> Self {
        let (helper, work) = mpsc::channel::<Arc<Chunk>>();
        let thread = std::thread::Builder::new()
            .name("planledger-log-leaves".into())
            .spawn(move || {
                while let Ok(chunk) = work.recv() {
                    if !chunk.taken.load(Ordering::Acquire) {
                        let mut hashes = Vec::with_capacity(chunk.ends.len());
                        chunk.hash_each(|hash| hashes.push(hash));
                        // Only this thread sets a chunk's hashes (the writer hashes a chunk it
                        // takes for itself without keeping them here).
                        let _ = chunk.hashes.set(hashes);
                    }
                }
            });
        match thread {
            Ok(thread) => Self {
                helper: Some(helper),
                thread: Some(thread),
                handed: Vec::new(),
                filling: Chunk::new(),
                pending: 0,
            },
            Err(error) => {
                tracing::warn!(%error, "no thread for the Merkle leaf hashes; the writer hashes them");
                Self {
                    helper: None,
                    thread: None,
                    handed: Vec::new(),
                    filling: Chunk::new(),
                    pending: 0,
                }
            }
        }
    }

    /// Adds the next event's stored bytes (its leaf is the next one).
    pub(crate) fn add(&mut self, stored: &[u8]) {
        self.filling.bytes.extend_from_slice(stored);
        self.filling.ends.push(self.filling.bytes.len());
        self.pending += 1;
        if self.filling.ends.len() == CHUNK_EVENTS
            && let Some(helper) = &self.helper
        {
            let chunk = Arc::new(std::mem::replace(&mut self.filling, Chunk::new()));
            self.handed.push(chunk.clone());
            if helper.send(chunk).is_err() {
                // The thread is gone: the writer hashes what is left itself.
                self.helper = None;
            }
        }
    }

    /// Hands the leaf hash of every event added since the last call to `out`, in order, and
    /// starts over for the next batch.
    pub(crate) fn take(&mut self, mut out: impl FnMut(Hash)) {
        let mut taken = 0usize;
        for chunk in self.handed.drain(..) {
            match chunk.hashes.get() {
                Some(hashes) => {
                    assert_eq!(hashes.len(), chunk.ends.len(), "one hash per event");
                    hashes.iter().for_each(|hash| out(*hash));
                }
                None => {
                    chunk.taken.store(true, Ordering::Release);
                    chunk.hash_each(&mut out);
                }
            }
            taken += chunk.ends.len();
        }
        self.filling.hash_each(&mut out);
        taken += self.filling.ends.len();
        assert_eq!(taken, self.pending, "one leaf hash per event added");
        self.filling.bytes.clear();
        self.filling.ends.clear();
        self.pending = 0;
    }
}

impl Drop for LeafHasher {
    fn drop(&mut self) {
        self.helper = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the Merkle leaf hashing thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_come_back_in_order_whoever_hashes_them() {
        // Batches of every shape against the hashing thread, whose chunks may or may not be
        // ready when the batch ends.
        let mut hasher = LeafHasher::start();
        for batch in [1usize, 15, 16, 17, 100, 0, 3] {
            let entries: Vec<Vec<u8>> = (0..batch)
                .map(|i| format!("{{\"batch\":{batch},\"event\":{i}}}").into_bytes())
                .collect();
            for entry in &entries {
                hasher.add(entry);
            }
            let mut got = Vec::new();
            hasher.take(|hash| got.push(hash));
            let expected: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
            assert_eq!(got, expected, "batch of {batch}");
        }
    }
}
