//! Group commit: the one task that owns the write path.
//!
//! Appenders send requests into a bounded inbox. The writer takes everything that is waiting,
//! checks expected versions and command ids against the database *and* the rest of the batch,
//! and writes one `WriteBatch` to RocksDB (without fsync; with `manual_wal_flush` its
//! write-ahead-log record only lands in RocksDB's in-memory log buffer). The batch's answers go
//! to the syncer thread, which calls `FlushWAL(sync)`: it writes that buffer to the file and
//! then syncs it, covering every batch written before the call, and only then has the callers
//! answered and the durable position advanced (by the answerer task on the runtime, see
//! [`Syncer`]). An answered append is therefore on disk. (A bare `SyncWAL` would not do: it
//! syncs the file without writing out the buffer.)
//!
//! The writer prepares each event's stored JSON and hash, and answers with the request itself
//! and the coordinates it assigned (an [`AppendOutcome`]); envelopes are built from those only
//! when the caller asks for them.
//!
//! A lone append under serial load (a batch of one after a batch of one, nothing at the syncer,
//! nothing in the inbox) is written with `sync = true` and answered by the writer itself: a
//! hand-over would only add a thread wake-up to its latency.
//!
//! The writer prepares and writes batch N+1 while the syncer waits for batch N's fsync. Batches
//! reach the log in order, so whenever batch N+1 is durable batch N is too; after a crash the
//! log ends at some batch boundary at or after the last answered one. A failed write or fsync
//! is fatal: every later append is refused (`WriteFailed`: nothing of it was written) until the
//! store is reopened (RocksDB stops accepting writes after a WAL sync error as well). The
//! appends of the batches that were written but not synced are answered `OutcomeUnknown`: their
//! bytes may have reached the file, so after a restart they may or may not be in the log.
//! A failure for want of space (`ENOSPC`) is the same stop, recorded as storage full so that
//! refusals say so ([`StoreError::StorageFull`]). Before that happens, a [`SpaceGuard`] keeps a
//! free-space reserve: below it whole batches are refused before anything is written, and
//! writing goes on, in the same process, once space is freed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use rocksdb::{DB, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::envelope::{Canonical, Envelope, HexHash, NewEvent, hex_text, render_time, seal};
use crate::keys::{self, AppendCfs, CF_COMMANDS, CF_HEADS};
use crate::log::{cf, read_envelope_range};
use crate::{ExpectedVersion, Position, StoreError, StreamId, Version};

/// Most requests one batch takes before it is written.
pub const MAX_BATCH_REQUESTS: usize = 4096;
/// Bytes a batch holds per event besides its payload: the envelope's other fields and hashes,
/// the `streams` entry, a `heads` entry and the batch's own record headers.
const WRITE_OVERHEAD_PER_EVENT: usize = 768;

/// Most stream heads the writer keeps in memory; past this the cache starts over (a miss costs
/// one RocksDB read).
const HEAD_CACHE_MAX: usize = 1 << 20;

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
        }
    }

    /// The position of the last event written.
    pub fn position(&self) -> Position {
        match &self.events {
            OutcomeEvents::Fresh(fresh) => fresh.placed.last_position(),
            OutcomeEvents::Built { envelopes, .. } => {
                envelopes.last().map(|e| e.position).unwrap_or_default()
            }
        }
    }

    /// The stored envelopes, in order (for a fresh append, built anew on each call from a
    /// copy of the request; [`AppendOutcome::into_envelopes`] moves it instead).
    pub fn envelopes(&self) -> Vec<Envelope> {
        match &self.events {
            OutcomeEvents::Fresh(fresh) => fresh.placed.clone().envelopes(fresh.request.clone()),
            OutcomeEvents::Built { envelopes, .. } => envelopes.clone(),
        }
    }

    /// The stored envelopes, in order.
    pub fn into_envelopes(self) -> Vec<Envelope> {
        match self.events {
            OutcomeEvents::Fresh(fresh) => fresh.placed.envelopes(fresh.request),
            OutcomeEvents::Built { envelopes, .. } => envelopes,
        }
    }

    /// Each envelope's stored JSON, byte for byte as in the log (what the envelopes serialize
    /// to), for answering without rendering them again. Empty when the answer was read back
    /// from the log (a repeated command id).
    pub fn stored(&self) -> &[Vec<u8>] {
        match &self.events {
            OutcomeEvents::Fresh(fresh) => &fresh.stored,
            OutcomeEvents::Built { stored, .. } => stored,
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
    request: AppendRequest,
    placed: Placed,
    /// Each event's stored JSON.
    stored: Vec<Vec<u8>>,
}

/// The coordinates the writer gave an append's events.
#[derive(Clone, Debug)]
struct Placed {
    first_position: Position,
    first_version: Version,
    recorded_at: Timestamp,
    /// The hash before the first event.
    prev_hash: HexHash,
    /// Each event's hash, in order.
    hashes: Vec<HexHash>,
}

impl Placed {
    /// The stream's version after the last event (an append has at least one).
    fn last_version(&self) -> Version {
        debug_assert!(!self.hashes.is_empty(), "an empty append is refused");
        Version(self.first_version.0 + self.hashes.len() as u64 - 1)
    }

    /// The position of the last event.
    fn last_position(&self) -> Position {
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
    fn fresh(fresh: Fresh) -> Self {
        Self {
            deduplicated: false,
            events: OutcomeEvents::Fresh(fresh),
        }
    }

    /// A repeat's outcome: the first append's envelopes, nothing written.
    fn repeat(envelopes: Vec<Envelope>) -> Self {
        Self::from_envelopes(envelopes, Vec::new(), true)
    }

    /// Events this outcome wrote.
    fn written(&self) -> usize {
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

pub(crate) struct Writer {
    pub db: Arc<DB>,
    pub inbox: mpsc::Receiver<Pending>,
    pub head: Head,
    pub stats: Arc<Mutex<WriterStats>>,
    /// Stream versions as written, so an append does not read `heads` from RocksDB. Only the
    /// writer changes heads; it updates this as it prepares each append, before the batch is
    /// written: if the write fails, nothing more is ever written, so the cache no longer
    /// matters. (A later batch may build on an earlier one whose fsync is still running: they
    /// become durable in order.) Started over only between batches, never inside one, whose
    /// heads are not in RocksDB yet.
    pub head_cache: HashMap<StreamId, Version>,
    /// Written batches awaiting their fsync, in order.
    pub syncer: std::sync::mpsc::SyncSender<Written>,
    /// Set when a write or fsync failed (by the syncer or the writer): nothing more is written.
    pub failed: Arc<Halt>,
    /// Refuses batches while the log's file system is nearly full (`None`: no reserve kept).
    pub space: Option<Arc<SpaceGuard>>,
    /// The syncer thread, joined when the writer stops (after its last batch is answered).
    pub syncer_thread: Option<std::thread::JoinHandle<()>>,
    /// Batches handed to the syncer and not synced yet (their answers may still be on the way).
    pub in_flight: Arc<AtomicUsize>,
    /// The last durable position, advanced as synced batches are answered (by the answerer
    /// task, or the syncer without one) and by the writer for a batch it synced itself.
    pub published: Arc<watch::Sender<Position>>,
    /// Whether the last batch was a lone append (serial load); true at the start.
    pub serial: bool,
    /// Injected sync failures (tests only).
    pub sync_fault: Option<SyncFault>,
    /// Emptied answer lists handed back by whoever answered their batch.
    pub spare_lists: SpareLists,
    /// The batch's remembered command ids: emptied after each batch, kept for its capacity.
    pub batch_commands: HashMap<Vec<u8>, FirstInBatch>,
}

/// The first append of a command id in the current batch.
pub(crate) struct FirstInBatch {
    /// Its index in the batch.
    index: usize,
    stream: StreamId,
    fingerprint: Option<String>,
}

/// A batch's answers: where each goes, and what it is.
type Answers = Vec<(Reply, Result<AppendOutcome, StoreError>)>;

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
    fn take(&self, len: usize) -> Answers {
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
    fn give_back(&self, mut list: Answers) {
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
    position: Position,
    /// Events it wrote (0: only refusals or repeats, which still wait for the batches before).
    events: usize,
    answers: Answers,
    /// Where the emptied `answers` go back to.
    spare_lists: SpareLists,
}

/// Where one caller's answer goes.
type Reply = oneshot::Sender<Result<AppendOutcome, StoreError>>;

/// Most written batches waiting for the syncer before the writer waits too.
pub(crate) const SYNC_QUEUE: usize = 64;

/// Why an append is refused once a write or fsync has failed.
pub(crate) const WRITES_STOPPED: &str = "an earlier write or fsync of the event log failed; appends are refused until the service is restarted (check the disk)";

/// Why an append is refused once a write failed for want of space.
const FULL_STOPPED: &str = "a write of the event log failed because its file system is full; free space on it, then restart the service (RocksDB does not resume after a failed write-ahead-log write, and nothing is retried in this process)";

/// Why the write path stopped, once it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteFailure {
    /// A write found the log's file system full (`ENOSPC`). Nothing more is written until the
    /// service is restarted with space freed.
    StorageFull(String),
    /// Any other failed write or fsync (a failing disk): restart once the disk is sound.
    Io(String),
}

impl WriteFailure {
    /// What the storage layer reported.
    pub fn message(&self) -> &str {
        match self {
            Self::StorageFull(message) | Self::Io(message) => message,
        }
    }
}

/// Whether a RocksDB error message reports a full file system (`ENOSPC`, which RocksDB maps to
/// its `NoSpace` status, or its own space limit).
fn is_no_space(message: &str) -> bool {
    message.contains("No space left on device") || message.contains("Max allowed space")
}

/// The write path's stop switch, shared by the writer, the syncer and readers: once a write or
/// fsync has failed, nothing more is written in this process, and the first failure says why.
#[derive(Debug, Default)]
pub(crate) struct Halt {
    stopped: AtomicBool,
    why: OnceLock<WriteFailure>,
}

impl Halt {
    /// Whether a write or fsync has failed.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// The first failure, once there is one.
    pub(crate) fn failure(&self) -> Option<WriteFailure> {
        self.why.get().cloned()
    }

    /// Marks the write path failed (once, logging why): the writer refuses every later append.
    fn stop(&self, message: &str) {
        let failure = if is_no_space(message) {
            WriteFailure::StorageFull(message.to_string())
        } else {
            WriteFailure::Io(message.to_string())
        };
        // The reason is set before the flag, so whoever sees the flag finds the reason.
        let _ = self.why.set(failure);
        if !self.stopped.swap(true, Ordering::SeqCst) {
            tracing::error!(error = %message, "event log write or fsync failed; refusing further appends");
            metrics::counter!("planledger_log_sync_failures_total").increment(1);
        }
    }

    /// The error for an append refused after the failure (nothing of it was written).
    pub(crate) fn refusal(&self) -> StoreError {
        match self.why.get() {
            Some(WriteFailure::StorageFull(_)) => StoreError::StorageFull(FULL_STOPPED.to_string()),
            _ => StoreError::WriteFailed(WRITES_STOPPED.to_string()),
        }
    }

    /// Answers the callers of a batch whose write or fsync failed. An append that was written
    /// (or a repeat answered with events that may be among them) may or may not be in the log
    /// after a restart: its caller learns that the outcome is unknown. A request the batch
    /// refused appended nothing.
    fn fail_answers(&self, answers: Answers, message: &str) {
        for (reply, answer) in answers {
            let error = match answer {
                Ok(_) => StoreError::OutcomeUnknown(message.to_string()),
                Err(_) => self.refusal(),
            };
            let _ = reply.send(Err(error));
        }
    }
}

/// Keeps a reserve of free space on the log's file system: while less than `min_free_bytes`
/// is free, every batch is refused before anything of it is written
/// ([`StoreError::StorageFull`]), and appends are taken again as soon as the reserve is back.
/// RocksDB itself never sees a full disk while the reserve lasts, so no restart is needed.
pub(crate) struct SpaceGuard {
    /// The log's directory (any path on its file system).
    pub path: std::ffi::CString,
    /// The reserve.
    pub min_free_bytes: u64,
    /// Free bytes seen by the last check that found less than the reserve; `None` while there
    /// is enough (read by readers, for `/readyz`).
    pub low: Mutex<Option<u64>>,
}

impl SpaceGuard {
    /// Why the batch is refused, if the file system has less than the reserve free; `None` to
    /// write it.
    fn check(&self) -> Option<String> {
        self.recheck()
            .map(|free| low_space_message(free, self.min_free_bytes))
    }

    /// Whether the last check found less than the reserve.
    pub(crate) fn is_low(&self) -> bool {
        self.low.lock().map(|low| low.is_some()).unwrap_or(false)
    }

    /// Looks at the file system again; the free bytes if they are less than the reserve.
    pub(crate) fn recheck(&self) -> Option<u64> {
        let free = free_bytes(&self.path)?;
        let low = (free < self.min_free_bytes).then_some(free);
        if let Ok(mut seen) = self.low.lock() {
            if seen.is_none() && low.is_some() {
                tracing::warn!(
                    free_bytes = free,
                    min_free_bytes = self.min_free_bytes,
                    "event log's file system is below its free-space reserve; refusing appends until space is freed"
                );
            } else if seen.is_some() && low.is_none() {
                tracing::info!(
                    free_bytes = free,
                    "event log's file system has its free-space reserve again; taking appends"
                );
            }
            *seen = low;
        }
        low
    }
}

/// Counts appends refused because the log's file system is full.
fn count_storage_full(appends: usize) {
    metrics::counter!("planledger_log_storage_full_refusals_total").increment(appends as u64);
}

/// Why appends are refused while the reserve is short.
pub(crate) fn low_space_message(free: u64, min_free_bytes: u64) -> String {
    format!(
        "only {free} bytes are free on the event log's file system, less than its reserve of {min_free_bytes} bytes (log_min_free_bytes); free space there and commands are taken again without a restart"
    )
}

/// Bytes an unprivileged writer may still use on the file system holding `path`, or `None`
/// when it cannot be told (the guard then lets writes through).
fn free_bytes(path: &std::ffi::CStr) -> Option<u64> {
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stats` is a buffer of the size statvfs(3) fills.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stats`.
    let stats = unsafe { stats.assume_init() };
    // Both fields are 32 bits wide on some targets.
    #[allow(clippy::unnecessary_cast)]
    let (blocks, block_size) = (stats.f_bavail as u64, stats.f_frsize as u64);
    Some(blocks.saturating_mul(block_size))
}

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
fn sync_wal(db: &DB, fault: Option<&SyncFault>) -> Result<(), String> {
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
fn record_sync(stats: &mut WriterStats, events: usize, inline: bool) {
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

    fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Written {
    /// Advances the durable position to this batch and answers its callers.
    fn confirm(self, published: &watch::Sender<Position>) {
        let last = self.position;
        published.send_if_modified(|durable| {
            let advanced = last > *durable;
            if advanced {
                *durable = last;
            }
            advanced
        });
        let mut answers = self.answers;
        for (reply, answer) in answers.drain(..) {
            let _ = reply.send(answer);
        }
        self.spare_lists.give_back(answers);
    }
}

/// What every append of one batch shares: its `recorded_at` (with the JSON text rendered once)
/// and the column families it writes.
struct BatchContext<'a> {
    recorded_at: Timestamp,
    recorded_text: Vec<u8>,
    cfs: AppendCfs<'a>,
}

/// An answer being prepared inside a batch.
#[allow(clippy::large_enum_variant)] // as `OutcomeEvents`
enum Answer {
    Done(Result<AppendOutcome, StoreError>),
    /// A repeat of a command whose first append is in this same batch.
    SameBatchRepeat(usize),
}

impl Writer {
    /// Runs until every sender is dropped.
    pub fn run(mut self) {
        let mut batch = Vec::with_capacity(64);
        // Waits for one request, then takes every one waiting (up to the limit) at once: the
        // inbox's capacity is given back once per batch, not once per request.
        while self
            .inbox
            .blocking_recv_many(&mut batch, MAX_BATCH_REQUESTS)
            > 0
        {
            self.commit(&mut batch);
        }
        // Closing the queue lets the syncer sync and hand over what it holds, and stop.
        drop(self.syncer);
        if let Some(syncer) = self.syncer_thread.take()
            && syncer.join().is_err()
        {
            tracing::error!("the event log syncer thread panicked");
        }
        tracing::debug!("event log writer stopped");
    }

    fn commit(&mut self, batch: &mut Vec<Pending>) {
        if self.failed.is_stopped() {
            if matches!(self.failed.failure(), Some(WriteFailure::StorageFull(_))) {
                count_storage_full(batch.len());
            }
            for pending in batch.drain(..) {
                let _ = pending.reply.send(Err(self.failed.refusal()));
            }
            return;
        }
        if let Some(refusal) = self.space.as_ref().and_then(|guard| guard.check()) {
            // Nothing of the batch is written: its callers may send it again once space is
            // freed.
            count_storage_full(batch.len());
            for pending in batch.drain(..) {
                let _ = pending
                    .reply
                    .send(Err(StoreError::StorageFull(refusal.clone())));
            }
            return;
        }
        let started = Instant::now();
        // A lone append under serial load (the batch before was lone too) syncs itself: a
        // hand-over to the syncer would only add a thread wake-up to its latency. Under
        // concurrent load a lone append goes to the syncer like any batch, so that the next
        // fsync covers it together with whatever arrives meanwhile, instead of costing an
        // fsync of its own.
        let lone = batch.len() == 1;
        let serial = std::mem::replace(&mut self.serial, lone);
        // `failed` is read after `in_flight`: the syncer sets it before it lets go of a failed
        // batch, so a batch after a failed one is never confirmed here.
        let inline = lone
            && serial
            && self.in_flight.load(Ordering::SeqCst) == 0
            && !self.failed.is_stopped()
            && self.inbox.is_empty();
        // Sized up front: growing a batch of hundreds of envelopes copies it several times.
        let capacity: usize = batch
            .iter()
            .flat_map(|pending| &pending.request.events)
            .map(|event| event.data.get().len() + WRITE_OVERHEAD_PER_EVENT)
            .sum();
        let mut write = WriteBatch::with_capacity_bytes(capacity);
        // The column families borrow from a handle of the batch's own, not from `self`, which
        // `prepare` borrows mutably.
        let db = self.db.clone();
        // Each append adds at most one stream to the cache: start it over here if the batch
        // could take it past its bound, since inside a batch it must keep what it has.
        if self.head_cache.len() + batch.len() > HEAD_CACHE_MAX {
            self.head_cache.clear();
        }
        // Taken out of `self` for the batch, which `prepare` borrows mutably.
        let mut commands = std::mem::take(&mut self.batch_commands);
        let mut answers = self.spare_lists.take(batch.len());
        let now = Timestamp::now();
        let recorded_at = if now > self.head.recorded_at {
            now
        } else {
            self.head.recorded_at
        };
        let mut written_events = 0usize;
        let context = BatchContext {
            recorded_at,
            recorded_text: render_time(&recorded_at),
            cfs: AppendCfs::of(&db),
        };

        for (index, pending) in batch.drain(..).enumerate() {
            let answer =
                match self.prepare(index, pending.request, &context, &mut write, &mut commands) {
                    Answer::Done(result) => result,
                    // A copy of the first append's answer (its caller gets the originals).
                    Answer::SameBatchRepeat(first) => match answers.get(first) {
                        // Only a fresh first append is remembered in `commands`.
                        Some((_, Ok(outcome))) if !outcome.deduplicated => {
                            Ok(AppendOutcome::repeat(outcome.envelopes()))
                        }
                        _ => Err(StoreError::WriterStopped),
                    },
                };
            if let Ok(outcome) = &answer {
                written_events += outcome.written();
            }
            answers.push((pending.reply, answer));
        }
        commands.clear();
        self.batch_commands = commands;

        let mut write_result = Ok(());
        if written_events > 0 {
            // Synced by the syncer thread, which answers only after the fsync; except for a lone
            // append under serial load (see `inline` above), whose write syncs itself.
            let faulty = inline
                && self
                    .sync_fault
                    .as_ref()
                    .is_some_and(SyncFault::is_triggered);
            let mut options = WriteOptions::default();
            options.set_sync(inline && !faulty);
            write_result = self
                .db
                .write_opt(write, &options)
                .map_err(|e| e.into_string());
            if faulty && write_result.is_ok() {
                write_result = sync_wal(&self.db, self.sync_fault.as_ref());
            }
        }

        let elapsed = started.elapsed();
        if written_events > 0 && write_result.is_ok() {
            metrics::histogram!("planledger_append_batch_events").record(written_events as f64);
            metrics::histogram!("planledger_append_batch_seconds").record(elapsed.as_secs_f64());
            metrics::counter!("planledger_events_appended_total").increment(written_events as u64);
            metrics::gauge!("planledger_log_position").set(self.head.position.0 as f64);
            let mut stats = self
                .stats
                .lock()
                .expect("writer stats lock is never poisoned");
            stats.batches += 1;
            stats.events += written_events as u64;
            *stats.batch_sizes.entry(written_events).or_default() += 1;
            if inline {
                record_sync(&mut stats, written_events, true);
            }
            stats.busy += elapsed;
        }

        let written = Written {
            position: self.head.position,
            events: written_events,
            answers,
            spare_lists: self.spare_lists.clone(),
        };
        if let Err(message) = write_result {
            // The write was attempted: whatever it wrote may or may not survive a restart, and
            // later batches would build on it. Stop here.
            self.failed.stop(&message);
            self.failed.fail_answers(written.answers, &message);
            return;
        }
        if inline {
            // Every earlier batch is synced (its answers may still be on their way) and this
            // one was written synced.
            written.confirm(&self.published);
            return;
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if let Err(std::sync::mpsc::SendError(written)) = self.syncer.send(written) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            // The syncer is gone (it only stops with the writer, or by a panic): nothing can
            // be confirmed any more, so nothing more is written either. This batch was written
            // but will not be synced by this process.
            let message = "the event log syncer thread stopped unexpectedly";
            self.failed.stop(message);
            self.failed.fail_answers(written.answers, message);
        }
    }

    /// Checks one request against the database and the batch so far and adds its writes; the
    /// request goes back to its caller inside the answer.
    fn prepare(
        &mut self,
        index: usize,
        request: AppendRequest,
        context: &BatchContext<'_>,
        write: &mut WriteBatch,
        commands: &mut HashMap<Vec<u8>, FirstInBatch>,
    ) -> Answer {
        if request.events.is_empty() {
            return Answer::Done(Err(StoreError::EmptyAppend));
        }
        let command_key = request
            .meta
            .command
            .as_ref()
            .filter(|c| c.remember)
            .map(|c| keys::command_key(&c.scope, &c.id));
        if let (Some(key), Some(command)) = (&command_key, &request.meta.command) {
            if let Some(first) = commands.get(key) {
                return match same_command(
                    command,
                    &request.stream,
                    &first.stream,
                    &first.fingerprint,
                ) {
                    Ok(()) => Answer::SameBatchRepeat(first.index),
                    Err(error) => Answer::Done(Err(error)),
                };
            }
            match self.stored_command(key) {
                Ok(Some(record)) => {
                    return Answer::Done(self.repeat(command, &request.stream, record));
                }
                Ok(None) => {}
                Err(error) => return Answer::Done(Err(error)),
            }
        }

        let current = match self.head_cache.get(&request.stream) {
            Some(version) => *version,
            None => match self.stored_head(&request.stream) {
                Ok(version) => version,
                Err(error) => return Answer::Done(Err(error)),
            },
        };
        if !request.expected.matches(current) {
            return Answer::Done(Err(StoreError::Conflict {
                stream: request.stream,
                expected: request.expected,
                current,
                log_position: self.head.position,
            }));
        }

        let first_position = Position(self.head.position.0 + 1);
        let first_version = Version(current.0 + 1);
        let prev_hash = self.head.hash;
        let mut hashes = Vec::with_capacity(request.events.len());
        let mut stored = Vec::with_capacity(request.events.len());
        let mut version = current;
        // Events of one command share their `occurred_at`: render it once.
        let mut occurred: Option<(Timestamp, Vec<u8>)> = None;
        for event in &request.events {
            version = Version(version.0 + 1);
            let position = Position(self.head.position.0 + 1);
            if occurred
                .as_ref()
                .is_none_or(|(at, _)| *at != event.occurred_at)
            {
                occurred = Some((event.occurred_at, render_time(&event.occurred_at)));
            }
            let occurred_text = occurred.as_ref().map_or(&[][..], |(_, text)| text);
            let mut bytes = Vec::with_capacity(512 + event.data.get().len());
            let hash = Canonical {
                position,
                stream: request.stream.as_str(),
                version,
                event_id: event.event_id,
                event_type: &event.event_type,
                schema_version: event.schema_version,
                occurred_at: occurred_text,
                recorded_at: &context.recorded_text,
                actor: &request.meta.actor,
                command_id: request.meta.command.as_ref().map(|c| c.id.as_str()),
                correlation_id: request.meta.correlation_id.as_deref(),
                causation_id: request.meta.causation_id.as_deref(),
                traceparent: request.meta.traceparent.as_deref(),
                data: &event.data,
                prev_hash: hex_text(&self.head.hash),
            }
            .write(&mut bytes);
            seal(&mut bytes, &hash);
            keys::put_event(
                &context.cfs,
                write,
                position,
                &request.stream,
                version,
                &bytes,
            );
            self.head.hash = hash;
            self.head.position = position;
            self.head.recorded_at = context.recorded_at;
            hashes.push(hash);
            stored.push(bytes);
        }

        if let (Some(key), Some(command)) = (command_key, &request.meta.command) {
            let record = CommandRecord {
                stream: request.stream.clone(),
                fingerprint: command.fingerprint.clone(),
                first_position,
                last_position: self.head.position,
            };
            let bytes = serde_json::to_vec(&record).expect("a command record serializes");
            write.put_cf(context.cfs.commands, &key, bytes);
            commands.insert(
                key,
                FirstInBatch {
                    index,
                    stream: request.stream.clone(),
                    fingerprint: command.fingerprint.clone(),
                },
            );
        }
        // The stream's new head, in the batch (a later append to the stream in the same batch
        // writes its own, which RocksDB applies after this one) and in the cache.
        keys::put_head(&context.cfs, write, &request.stream, version);
        match self.head_cache.get_mut(&request.stream) {
            Some(head) => *head = version,
            None => {
                self.head_cache.insert(request.stream.clone(), version);
            }
        }

        Answer::Done(Ok(AppendOutcome::fresh(Fresh {
            request,
            placed: Placed {
                first_position,
                first_version,
                recorded_at: context.recorded_at,
                prev_hash,
                hashes,
            },
            stored,
        })))
    }

    fn stored_command(&self, key: &[u8]) -> Result<Option<CommandRecord>, StoreError> {
        let Some(bytes) = self.db.get_pinned_cf(cf(&self.db, CF_COMMANDS), key)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                what: "command record".into(),
                detail: e.to_string(),
            })
    }

    fn stored_head(&self, stream: &StreamId) -> Result<Version, StoreError> {
        match self
            .db
            .get_pinned_cf(cf(&self.db, CF_HEADS), stream.as_str())?
        {
            Some(bytes) => {
                keys::decode_u64(&bytes)
                    .map(Version)
                    .ok_or_else(|| StoreError::Corrupt {
                        what: format!("head of {stream}"),
                        detail: "not an 8-byte version".into(),
                    })
            }
            None => Ok(Version(0)),
        }
    }

    fn repeat(
        &self,
        command: &CommandRef,
        stream: &StreamId,
        record: CommandRecord,
    ) -> Result<AppendOutcome, StoreError> {
        same_command(command, stream, &record.stream, &record.fingerprint)?;
        read_envelope_range(&self.db, record.first_position, record.last_position)
            .map(AppendOutcome::repeat)
    }
}

/// Whether an append with a command id already seen repeats that command: the same stream and
/// content (fingerprint), or the id is refused. The same rule whether the first append is in
/// the log or earlier in the same batch.
fn same_command(
    command: &CommandRef,
    stream: &StreamId,
    first_stream: &StreamId,
    first_fingerprint: &Option<String>,
) -> Result<(), StoreError> {
    if first_stream != stream || first_fingerprint != &command.fingerprint {
        return Err(StoreError::CommandIdReused {
            command_id: command.id.clone(),
            original_stream: first_stream.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_failing_for_want_of_space_stops_the_log_as_storage_full() {
        let halt = Halt::default();
        halt.stop("IO error: No space left on device: While appending to file: 000012.log: No space left on device");
        assert!(halt.is_stopped());
        assert!(matches!(halt.failure(), Some(WriteFailure::StorageFull(_))));
        assert!(
            matches!(halt.refusal(), StoreError::StorageFull(message) if message.contains("restart")),
        );
        // The first failure is the one reported.
        halt.stop("IO error: fsync failed");
        assert!(matches!(halt.failure(), Some(WriteFailure::StorageFull(_))));
    }

    #[test]
    fn any_other_failed_write_stops_the_log_as_a_write_failure() {
        let halt = Halt::default();
        halt.stop("IO error: Input/output error");
        assert!(matches!(halt.failure(), Some(WriteFailure::Io(_))));
        assert!(matches!(halt.refusal(), StoreError::WriteFailed(_)));
    }

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
