//! The syncer: fsyncs the write-ahead log behind the writer and has synced batches answered.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rocksdb::DB;
use tokio::sync::watch;

use super::halt::{Halt, WRITES_STOPPED};
use super::request::{WriterStats, Written};
use crate::Position;

/// Most written batches waiting for the syncer before the writer waits too.
pub(crate) const SYNC_QUEUE: usize = 64;

/// Where the syncer hands synced batches to be answered: a task on the runtime the log was
/// opened in (see [`run_answerer`]).
pub(crate) type Answerer = tokio::sync::mpsc::UnboundedSender<Vec<Written>>;

/// Fsyncs the write-ahead log behind the writer and has the callers of synced batches answered.
///
/// The answers go to the answerer task when there is one, and the syncer starts the next fsync
/// at once: waking hundreds of tasks from a thread outside the runtime costs up to a
/// microsecond each (the runtime's shared queue, a worker to unpark), and with the syncer
/// doing it, a third of its cycle at concurrency 1024 went by with no fsync running. Without
/// an answerer (no multi-threaded runtime at open, or it has shut down) the syncer answers
/// itself.
pub(crate) struct Syncer {
    pub db: Arc<DB>,
    /// Written batches, in order.
    pub queue: std::sync::mpsc::Receiver<Written>,
    /// The durable position.
    pub published: Arc<watch::Sender<Position>>,
    /// Set on a failed fsync (shared with the writer).
    pub failed: Arc<Halt>,
    /// Batches handed over and not yet synced (shared with the writer).
    pub in_flight: Arc<AtomicUsize>,
    pub stats: Arc<Mutex<WriterStats>>,
    /// Injected sync failures (tests only).
    pub sync_fault: Option<SyncFault>,
    /// The answerer task, if the log was opened in a multi-threaded runtime.
    pub answerer: Option<Answerer>,
}

impl Syncer {
    /// Runs until the writer closes the queue.
    pub(crate) fn run(self) {
        let Syncer {
            db,
            queue,
            published,
            failed,
            in_flight,
            stats,
            sync_fault,
            mut answerer,
        } = self;
        while let Ok(first) = queue.recv() {
            let mut ready = vec![first];
            ready.extend(queue.try_iter());
            let count = ready.len();
            let events: usize = ready.iter().map(|w| w.events).sum();
            let wrote = events > 0;
            let synced = if failed.is_stopped() {
                // A batch the writer wrote before it learnt of the failure: in the log's buffer,
                // never synced.
                Err(WRITES_STOPPED.to_string())
            } else if wrote {
                let started = Instant::now();
                sync_wal(&db, sync_fault.as_ref()).map(|()| started.elapsed())
            } else {
                Ok(Duration::ZERO)
            };
            if wrote && let Ok(took) = synced {
                let mut stats = stats.lock().expect("writer stats lock is never poisoned");
                record_sync(&mut stats, events, false);
                stats.syncing += took;
            }
            match synced {
                Ok(_) => {
                    let unsent = match &answerer {
                        None => Some(ready),
                        Some(to) => match to.send(ready) {
                            Ok(()) => None,
                            Err(tokio::sync::mpsc::error::SendError(ready)) => {
                                // The runtime is gone: answer here from now on.
                                answerer = None;
                                Some(ready)
                            }
                        },
                    };
                    for written in unsent.into_iter().flatten() {
                        written.confirm(&published);
                    }
                }
                Err(message) => {
                    failed.stop(&message);
                    // Refusals too: a conflict may name a version of a batch that will never exist.
                    for written in ready {
                        failed.fail_answers(written.answers, &message);
                    }
                }
            }
            in_flight.fetch_sub(count, Ordering::SeqCst);
        }
    }
}

/// Answers the callers of synced batches, in order, from a task on the runtime: a task woken
/// from inside the runtime goes onto the waking worker's own queue.
pub(crate) async fn run_answerer(
    synced: tokio::sync::mpsc::UnboundedReceiver<Vec<Written>>,
    published: Arc<watch::Sender<Position>>,
) {
    let mut answerer = AnswererGuard { synced, published };
    while let Some(ready) = answerer.synced.recv().await {
        for written in ready {
            written.confirm(&answerer.published);
        }
    }
}

/// The answerer's state. When its runtime shuts down it drops the task; the guard then closes
/// the channel (the syncer answers by itself from then on) and answers what was already handed
/// over: those batches are synced, and their callers would otherwise hear that the writer
/// stopped, and the durable position would stay behind them.
struct AnswererGuard {
    synced: tokio::sync::mpsc::UnboundedReceiver<Vec<Written>>,
    published: Arc<watch::Sender<Position>>,
}

impl Drop for AnswererGuard {
    fn drop(&mut self) {
        self.synced.close();
        while let Ok(ready) = self.synced.try_recv() {
            for written in ready {
                written.confirm(&self.published);
            }
        }
    }
}

/// `FlushWAL(sync)`: writes the log's buffer to the file and syncs it (or, with an injected
/// fault, writes it and reports the sync as failed, as a failing disk would).
pub(super) fn sync_wal(db: &DB, fault: Option<&SyncFault>) -> Result<(), String> {
    if fault.is_some_and(SyncFault::is_triggered) {
        db.flush_wal(false).map_err(|e| e.into_string())?;
        // A failing disk usually answers late (I/O timeouts); meanwhile the writer goes on
        // writing batches that will never be synced.
        std::thread::sleep(SyncFault::DELAY);
        return Err(SyncFault::MESSAGE.to_string());
    }
    db.flush_wal(true).map_err(|e| e.into_string())
}

/// Counts one successful fsync covering `events` events (`inline`: a lone append's own synced
/// write).
pub(super) fn record_sync(stats: &mut WriterStats, events: usize, inline: bool) {
    *stats.sync_sizes.entry(events).or_default() += 1;
    if inline {
        stats.inline_syncs += 1;
    }
}

/// Fault injection for tests: once triggered, every sync of the write-ahead log fails as on a
/// failing disk (the bytes still reach the file; the sync reports an I/O error after 20 ms).
/// Production code never sets it.
#[derive(Clone, Debug, Default)]
pub struct SyncFault(Arc<AtomicBool>);

impl SyncFault {
    const MESSAGE: &'static str = "injected fault: fsync reported an I/O error";
    const DELAY: std::time::Duration = std::time::Duration::from_millis(20);

    /// Makes every later sync fail.
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub(super) fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
