//! The event log handle: open, append, read, snapshots, checkpoints, verify.

use std::path::Path;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode,
    Options, ReadOptions, WriteBatch,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::envelope::{Envelope, GENESIS_HASH};
use crate::keys::{
    self, ALL_CFS, CF_CHECKPOINTS, CF_COMMANDS, CF_HEADS, CF_LOG, CF_MERKLE, CF_META, CF_SNAPSHOTS,
    CF_STREAMS,
};
use crate::merkle::stored::TreeReport;
use crate::view::LogView;
use crate::writer::{
    AppendOutcome, AppendRequest, CatchUp, CommandRecord, CommitterThread, Halt, Head, Pending,
    Resync, SpaceGuard, SyncFault, WriteFailure, Writer, WriterStats,
};
use crate::{CommandHeader, Commit, Committer};

/// A log entry as stored: its position and the envelope's JSON bytes.
pub type RawEntry = (Position, Box<[u8]>);

/// What the log remembers of a command id's first append.
#[derive(Clone, Debug)]
pub struct CommandLookup {
    /// The stream it appended to.
    pub stream: StreamId,
    /// The fingerprint it carried.
    pub fingerprint: Option<String>,
    /// The envelopes it wrote.
    pub envelopes: Vec<Envelope>,
}
use crate::{Position, StoreError, StreamId, Version};

/// Capacity of the writer's inbox; appenders wait (backpressure) when it is full.
const INBOX_CAPACITY: usize = 16 * 1024;
/// Hash buckets of the `streams` and `heads` memtables (8 bytes each, per memtable).
const STREAM_BUCKETS: usize = 1 << 18;
/// Write-ahead log size past which the column families holding its oldest file are flushed.
const MAX_TOTAL_WAL_BYTES: u64 = 512 * 1024 * 1024;
/// Most bytes the write-ahead log buffers before a write flushes it (several large batches).
const WAL_BUFFER_BYTES: u64 = 8 * 1024 * 1024;
/// The on-disk format this code writes.
pub(crate) const FORMAT: &[u8] = b"planledger-log-v1";
/// `meta` key of the log's identity: a UUID chosen when the log is created.
pub(crate) const META_LOG_ID: &[u8] = b"log_id";

/// Options for opening the log.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Block cache size in bytes, shared by all column families.
    pub block_cache_bytes: usize,
    /// Fault injection for tests: when triggered, syncs of the write-ahead log fail. `None`
    /// outside tests.
    pub sync_fault: Option<SyncFault>,
    /// Free space to keep on the log's file system: while less is free, appends are refused
    /// with [`StoreError::StorageFull`] before anything is written, and taken again once space
    /// is freed (0 keeps no reserve).
    pub min_free_bytes: u64,
    /// How appends become durable: the local write-ahead log's fsync (one node, the default),
    /// or an external committer whose log is the truth and of which this log is a cache
    /// (cluster mode).
    pub commit: Commit,
    /// The identity a new log is created with (cluster mode: the partition's, so every cache of
    /// it carries the same one); an existing log with another identity is refused. `None`: a
    /// new log chooses a fresh UUIDv7.
    pub log_id: Option<String>,
    /// Cluster mode: the partition this log holds (of how many): an append to a stream of
    /// another partition is refused before anything is prepared.
    pub partition: Option<(crate::PartitionCount, u32)>,
    /// Memory shared with the other logs of this process (cluster mode: one cache per
    /// partition a node serves): one block cache and one write-buffer budget for all of them
    /// instead of `block_cache_bytes` each. `None`: this log has its own block cache.
    pub shared_memory: Option<SharedMemory>,
    /// Benchmarks only (the `bench` feature): `false` keeps no Merkle tree (no leaf hashes, no
    /// `merkle` nodes in the batches), to measure what the tree costs an append. A log written
    /// so has no proofs; no product code can set it.
    #[cfg(feature = "bench")]
    pub merkle_tree: bool,
}

/// A block cache and a write-buffer budget shared by several logs in one process.
#[derive(Clone)]
pub struct SharedMemory {
    cache: Cache,
    write_buffers: rocksdb::WriteBufferManager,
}

impl std::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemory").finish_non_exhaustive()
    }
}

impl SharedMemory {
    /// A block cache of `cache_bytes` and memtables of about `write_buffer_bytes` in all
    /// (their memory is charged to the cache too, so the two together stay near
    /// `cache_bytes`): past the budget the largest memtable is flushed early.
    pub fn new(cache_bytes: usize, write_buffer_bytes: usize) -> Self {
        let cache = Cache::new_lru_cache(cache_bytes);
        let write_buffers = rocksdb::WriteBufferManager::new_write_buffer_manager_with_cache(
            write_buffer_bytes,
            // Over the budget, the largest memtable is flushed; writes never stall on it.
            false,
            cache.clone(),
        );
        Self {
            cache,
            write_buffers,
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            block_cache_bytes: 64 * 1024 * 1024,
            sync_fault: None,
            min_free_bytes: 0,
            commit: Commit::LocalFsync,
            log_id: None,
            partition: None,
            shared_memory: None,
            #[cfg(feature = "bench")]
            merkle_tree: true,
        }
    }
}

/// Which way to read a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadDirection {
    /// From the given version up.
    Forward,
    /// From the given version down.
    Backward,
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Envelopes checked.
    pub checked: u64,
    /// The last position checked (when the chain holds), or the last position in the log.
    pub last_position: Position,
    /// The hash of the last envelope checked ([`GENESIS_HASH`] when none was).
    pub last_hash: String,
    /// When the last envelope checked was recorded (`None` when none was).
    pub last_recorded_at: Option<Timestamp>,
    /// The first position where the chain breaks, and why; `None` if it holds.
    pub first_broken: Option<(Position, String)>,
}

/// A handle to the event log; cheap to clone, shared by readers and appenders.
///
/// When the last clone is dropped the writer finishes the batches it holds and the database
/// is closed before the drop returns, so the same directory can be opened again at once.
#[derive(Clone)]
pub struct EventStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<DB>,
    inbox: mpsc::Sender<Pending>,
    published: watch::Receiver<Position>,
    stats: Arc<Mutex<WriterStats>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set when an fsync failed: nothing written after the last durable position will become
    /// durable in this process.
    failed: Arc<Halt>,
    /// The free-space reserve, if one is kept (shared with the writer).
    space: Option<Arc<SpaceGuard>>,
    /// The log's identity (`meta/log_id`).
    log_id: String,
    /// Cluster mode: the writer's catch-up state (`None` in local mode).
    resync: Option<Arc<Resync>>,
    /// Cluster mode: the partition this log holds.
    partition: Option<u32>,
}

/// Whether the log takes appends, for readiness checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogHealth {
    /// Appends are taken.
    Writable,
    /// Less than the free-space reserve is free: appends are refused until space is freed,
    /// then taken again without a restart.
    LowSpace {
        /// Free bytes at the last check.
        free_bytes: u64,
        /// The reserve.
        min_free_bytes: u64,
    },
    /// A write or fsync failed: appends are refused until the service is restarted.
    Stopped(WriteFailure),
    /// Cluster mode: the cache is catching up with the partition's log (at start, or after a
    /// commit was refused or not confirmed); appends wait or are refused until it has.
    CatchingUp,
}

impl LogHealth {
    /// A stable code for the state: `writable`, `storage_full` or `write_failed`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Writable => "writable",
            Self::LowSpace { .. } | Self::Stopped(WriteFailure::StorageFull(_)) => "storage_full",
            Self::Stopped(WriteFailure::Io(_)) => "write_failed",
            Self::Stopped(WriteFailure::Partition { reason, .. }) => reason,
            Self::CatchingUp => "catching_up",
        }
    }

    /// Whether appends come back only after a restart.
    pub fn restart_required(&self) -> bool {
        matches!(self, Self::Stopped(_))
    }

    /// What an operator should know and do, or `None` while writable.
    pub fn detail(&self) -> Option<String> {
        match self {
            Self::Writable => None,
            Self::CatchingUp => Some(
                "the cache is catching up with the partition's log; commands are taken once it has"
                    .to_string(),
            ),
            Self::LowSpace {
                free_bytes,
                min_free_bytes,
            } => Some(crate::writer::low_space_message(
                *free_bytes,
                *min_free_bytes,
            )),
            Self::Stopped(failure) => Some(format!(
                "{}; the first failure was: {}",
                match failure {
                    WriteFailure::StorageFull(_) =>
                        "a write found the file system full: free space on it, then restart the service",
                    WriteFailure::Io(_) =>
                        "a write or fsync of the event log failed: check the disk, then restart the service",
                    WriteFailure::Partition { .. } =>
                        "this node's cache does not match the partition's log: see docs/operations.md (cluster mode, failure modes)",
                },
                failure.message()
            )),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Close the inbox so the writer's loop ends, then wait for it to let go of the database.
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.inbox, closed));
        if let Some(handle) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = handle.join();
        }
    }
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("last_position", &*self.inner.published.borrow())
            .finish()
    }
}

/// The log's head as stored: its last event's position, hash and `recorded_at`.
pub(crate) fn recover_head(db: &DB) -> Result<Head, StoreError> {
    let mut iter = db.iterator_cf(cf(db, CF_LOG), IteratorMode::End);
    match iter.next() {
        None => Ok(Head {
            position: Position(0),
            hash: crate::envelope::GENESIS,
            recorded_at: Timestamp::UNIX_EPOCH,
        }),
        Some(item) => {
            let (key, value) = item?;
            let position =
                keys::decode_u64(&key).ok_or_else(|| corrupt("log key", "not 8 bytes"))?;
            let envelope = decode_envelope(position, &value)?;
            Ok(Head {
                position: envelope.position,
                hash: crate::envelope::parse_hex_hash(&envelope.hash).ok_or_else(|| {
                    corrupt(
                        format!("hash at position {}", envelope.position),
                        "not 64 hex digits",
                    )
                })?,
                recorded_at: envelope.recorded_at,
            })
        }
    }
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name)
        .expect("every column family is created when the log is opened")
}

pub(crate) fn corrupt(what: impl Into<String>, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: what.into(),
        detail: detail.to_string(),
    }
}

pub(crate) fn decode_envelope(position: u64, bytes: &[u8]) -> Result<Envelope, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(format!("log position {position}"), e))
}

/// Reads positions `first..=last` of the log.
pub(crate) fn read_envelope_range(
    db: &DB,
    first: Position,
    last: Position,
) -> Result<Vec<Envelope>, StoreError> {
    let mut out = Vec::with_capacity((last.0.saturating_sub(first.0) + 1) as usize);
    let iter = db.iterator_cf(
        cf(db, CF_LOG),
        IteratorMode::From(&keys::log_key(first), Direction::Forward),
    );
    for item in iter {
        let (key, value) = item?;
        let position = keys::decode_u64(&key).ok_or_else(|| corrupt("log key", "not 8 bytes"))?;
        if position > last.0 {
            break;
        }
        out.push(decode_envelope(position, &value)?);
    }
    Ok(out)
}

impl EventStore {
    /// Opens (or creates) the log in `path` and starts its writer.
    ///
    /// The writer and the syncer run on threads of their own. Opened inside a multi-threaded
    /// tokio runtime, the log answers synced appends from a task on that runtime (waking the
    /// appending tasks from inside it is cheaper); opened anywhere else, or once that runtime
    /// has shut down, the syncer thread answers them. A database killed mid-write opens at its
    /// last acknowledged state (RocksDB replays its write-ahead log; every answered batch was
    /// synced).
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let db = Arc::new(open_database(path, &options)?);

        match db.get_cf(cf(&db, CF_META), b"format")? {
            None => {
                db.put_cf(cf(&db, CF_META), b"format", FORMAT)?;
                // Into the write-ahead log file at once (writes are buffered until a sync), so
                // a `LogReader` of a log that has no appends yet finds the format too.
                db.flush_wal(true)?;
            }
            Some(found) if found == FORMAT => {}
            Some(found) => {
                return Err(corrupt(
                    "meta/format",
                    format!(
                        "unknown log format {:?}; this build reads {:?}",
                        String::from_utf8_lossy(&found),
                        String::from_utf8_lossy(FORMAT)
                    ),
                ));
            }
        }

        let log_id = Self::log_id_of(&db, options.log_id.as_deref())?;
        let head = recover_head(&db)?;
        // Before the writer starts: a log written before the tree existed gets it now.
        let tree = crate::merkle::stored::build_missing(&db, head.position)?;
        tracing::info!(path = %path.display(), %log_id, last_position = head.position.0, "event log opened");
        let (sender, receiver) = mpsc::channel(INBOX_CAPACITY);
        let (published_tx, published_rx) = watch::channel(head.position);
        let stats = Arc::new(Mutex::new(WriterStats::default()));
        let (sync_tx, sync_rx) = std::sync::mpsc::sync_channel(crate::writer::SYNC_QUEUE);
        let failed = Arc::new(Halt::default());
        let space = match options.min_free_bytes {
            0 => None,
            min_free_bytes => Some(Arc::new(SpaceGuard {
                path: std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
                    .map_err(|e| corrupt("log path", e))?,
                min_free_bytes,
                low: Mutex::new(None),
            })),
        };
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let published_tx = Arc::new(published_tx);
        // Synced batches are answered by a task on the runtime the log is opened in, if it is a
        // multi-threaded one. (A current-thread runtime runs its tasks only while a thread
        // blocks on it: appends made from elsewhere would wait for that.)
        let answerer = tokio::runtime::Handle::try_current()
            .ok()
            .filter(|runtime| {
                runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
            })
            .map(|runtime| {
                let (answerer, synced) = tokio::sync::mpsc::unbounded_channel();
                runtime.spawn(crate::writer::run_answerer(synced, published_tx.clone()));
                answerer
            });
        let resync = match &options.commit {
            Commit::LocalFsync => None,
            Commit::External(_) => {
                let resync = Arc::new(Resync::default());
                // Not writable until the first catch-up is done.
                resync.set_catching_up(true);
                Some(resync)
            }
        };
        let syncer_thread = match &options.commit {
            Commit::LocalFsync => {
                let syncer = crate::writer::Syncer {
                    db: db.clone(),
                    queue: sync_rx,
                    published: published_tx.clone(),
                    failed: failed.clone(),
                    in_flight: in_flight.clone(),
                    stats: stats.clone(),
                    sync_fault: options.sync_fault.clone(),
                    answerer,
                };
                std::thread::Builder::new()
                    .name("planledger-log-syncer".into())
                    .spawn(move || syncer.run())
            }
            Commit::External(committer) => {
                let (apply_tx, apply_rx) = std::sync::mpsc::channel();
                let applying = Arc::new(crate::writer::Applying::default());
                let applier = crate::writer::ApplierThread {
                    db: db.clone(),
                    queue: apply_rx,
                    published: published_tx.clone(),
                    failed: failed.clone(),
                    in_flight: in_flight.clone(),
                    applying: applying.clone(),
                    answerer,
                };
                let applier_thread = std::thread::Builder::new()
                    .name("planledger-log-applier".into())
                    .spawn(move || applier.run())
                    .map_err(|e| corrupt("applier thread", e))?;
                let thread = CommitterThread {
                    queue: sync_rx,
                    committer: committer.clone(),
                    published: published_tx.clone(),
                    failed: failed.clone(),
                    resync: resync.clone().expect("cluster mode has a resync state"),
                    in_flight: in_flight.clone(),
                    stats: stats.clone(),
                    applier: apply_tx,
                    applier_thread: Some(applier_thread),
                    applying,
                    committed: None,
                };
                std::thread::Builder::new()
                    .name("planledger-log-committer".into())
                    .spawn(move || thread.run())
            }
        }
        .map_err(|e| corrupt("syncer thread", e))?;
        let cluster = match (&options.commit, &resync) {
            (Commit::External(committer), Some(resync)) => Some(crate::writer::Cluster::new(
                CatchUp {
                    committer: Arc::clone(committer) as Arc<dyn Committer>,
                },
                resync.clone(),
            )),
            _ => None,
        };
        let writer = Writer {
            db: db.clone(),
            inbox: receiver,
            head,
            tree,
            stats: stats.clone(),
            head_cache: Default::default(),
            syncer: sync_tx,
            failed: failed.clone(),
            space: space.clone(),
            syncer_thread: Some(syncer_thread),
            in_flight,
            published: published_tx,
            serial: true,
            sync_fault: options.sync_fault.clone(),
            spare_lists: Default::default(),
            batch_commands: Default::default(),
            cluster,
            partition: options.partition,
            #[cfg(feature = "bench")]
            keep_tree: options.merkle_tree,
            #[cfg(not(feature = "bench"))]
            keep_tree: true,
            leaves: crate::writer::LeafHasher::start(),
            tree_nodes: Vec::new(),
        };
        let handle = std::thread::Builder::new()
            .name("planledger-log-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| corrupt("writer thread", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                inbox: sender,
                published: published_rx,
                stats,
                writer: Mutex::new(Some(handle)),
                failed,
                space,
                log_id,
                resync,
                partition: options.partition.map(|(_, p)| p),
            }),
        })
    }

    /// Cluster mode: the partition this log holds (`None` for a single node's log).
    pub fn partition(&self) -> Option<u32> {
        self.inner.partition
    }

    /// The log's identity from `meta/log_id`, chosen (a UUIDv7) and synced the first time a
    /// log is opened by a build that knows it (a new log, or one created before it existed).
    fn log_id_of(db: &DB, wanted: Option<&str>) -> Result<String, StoreError> {
        if let Some(found) = db.get_cf(cf(db, CF_META), META_LOG_ID)? {
            let found = String::from_utf8(found).map_err(|e| corrupt("meta/log_id", e))?;
            if let Some(wanted) = wanted
                && wanted != found
            {
                return Err(StoreError::PartitionHalted {
                    reason: "cache_diverged",
                    detail: format!(
                        "this log is log {found}, not {wanted} (the partition's): it is the cache of another log; delete it and it is rebuilt from the partition's stream"
                    ),
                });
            }
            return Ok(found);
        }
        let id = wanted.map_or_else(
            || uuid::Uuid::now_v7().hyphenated().to_string(),
            str::to_owned,
        );
        let mut write = rocksdb::WriteOptions::default();
        write.set_sync(true);
        db.put_cf_opt(cf(db, CF_META), META_LOG_ID, id.as_bytes(), &write)?;
        Ok(id)
    }

    /// The log's identity: a UUID chosen when it was created and kept in `meta/log_id`. Signed
    /// digests carry it, so a digest of another log is recognised as foreign.
    pub fn log_id(&self) -> &str {
        &self.inner.log_id
    }

    /// Appends events to a stream and returns once they are on disk.
    ///
    /// Fails with [`StoreError::Conflict`] (carrying the current version) when the stream is not
    /// at the expected version; a repeat of a command id returns the first result, writing nothing.
    pub async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .inbox
            .send(Pending { request, reply })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        let outcome = answer.await.map_err(|_| StoreError::WriterStopped)??;
        match outcome.pending_range() {
            // Cluster mode: a repeat of an append that was not applied when this one was
            // prepared; it is now (answers go out in order), so read it back.
            Some((first, last)) => {
                read_envelope_range(&self.inner.db, first, last).map(AppendOutcome::repeat)
            }
            None => Ok(outcome),
        }
    }

    /// Waits (at most a few seconds) until the log holds `position`, for a command that lost
    /// a race: in cluster mode the append that beat it may be committed but not applied yet,
    /// and reloading before it is would only conflict again. Returns at once in local mode,
    /// where every prepared batch is already in RocksDB when its conflicts are reported.
    pub async fn wait_applied(&self, position: Position) {
        if self.inner.resync.is_none() {
            return;
        }
        let mut applied = self.inner.published.clone();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            applied.wait_for(|applied| *applied >= position),
        )
        .await;
    }

    /// Whether appends are committed to an external log of which this one is a cache.
    pub fn is_cluster_cache(&self) -> bool {
        self.inner.resync.is_some()
    }

    /// Whether the log takes appends; if not, why and whether a restart is needed.
    pub fn health(&self) -> LogHealth {
        if let Some(failure) = self.inner.failed.failure() {
            return LogHealth::Stopped(failure);
        }
        if self
            .inner
            .resync
            .as_ref()
            .is_some_and(|resync| resync.is_catching_up())
        {
            return LogHealth::CatchingUp;
        }
        // While the reserve is short, look again: appends may have stopped coming (clients wait
        // for readiness), so the writer would not notice the space freed.
        if let Some(guard) = &self.inner.space
            && guard.is_low()
            && let Some(free_bytes) = guard.recheck()
        {
            return LogHealth::LowSpace {
                free_bytes,
                min_free_bytes: guard.min_free_bytes,
            };
        }
        LogHealth::Writable
    }

    /// The position of the last durable event (0 when the log is empty).
    pub fn last_position(&self) -> Position {
        *self.inner.published.borrow()
    }

    /// Waits until `position` is durable: for an answer built from what a lookup found in the
    /// database, which may belong to a batch whose fsync is still running. Fails with
    /// [`StoreError::OutcomeUnknown`] if the write path failed first (the position will then
    /// never become durable in this process).
    pub async fn wait_durable(&self, position: Position) -> Result<(), StoreError> {
        let mut durable = self.inner.published.clone();
        loop {
            if *durable.borrow_and_update() >= position {
                return Ok(());
            }
            if self.inner.failed.is_stopped() {
                // The position was written (a lookup found it) but will never be synced by
                // this process: after a restart it may or may not be there.
                return Err(StoreError::OutcomeUnknown(
                    crate::writer::WRITES_STOPPED.to_string(),
                ));
            }
            // The syncer sets `failed` without moving the watch, so look again now and then.
            tokio::select! {
                changed = durable.changed() => {
                    if changed.is_err() {
                        return Err(StoreError::WriterStopped);
                    }
                }
                () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            }
        }
    }

    /// A receiver that changes whenever new events become durable.
    pub fn subscribe(&self) -> watch::Receiver<Position> {
        self.inner.published.clone()
    }

    /// Counters about the batches the writer formed so far.
    pub fn writer_stats(&self) -> WriterStats {
        self.inner
            .stats
            .lock()
            .expect("writer stats lock is never poisoned")
            .clone()
    }

    /// The log as of now, capped at the last durable position: what every read below goes
    /// through (see [`LogView`]).
    pub fn view(&self) -> LogView<'_> {
        LogView::new(&self.inner.db, self.last_position())
    }

    /// The stream's current version (0 when it has no events).
    pub fn stream_version(&self, stream: &StreamId) -> Result<Version, StoreError> {
        self.view().stream_version(stream)
    }

    /// Reads up to `limit` events of the global log starting at `from` (inclusive), never past
    /// the last durable position.
    pub fn read_all(&self, from: Position, limit: usize) -> Result<Vec<Envelope>, StoreError> {
        self.view().read_all(from, limit)
    }

    /// Reads the raw stored bytes of up to `limit` log entries from `from` (never past the last
    /// durable position): for bulk consumers that decode lazily.
    pub fn read_all_raw(&self, from: Position, limit: usize) -> Result<Vec<RawEntry>, StoreError> {
        self.view().read_all_raw(from, limit)
    }

    /// The stored idempotency record of `command_id` in `scope`, if the log remembers it.
    fn command_record(
        &self,
        scope: &str,
        command_id: &str,
    ) -> Result<Option<CommandRecord>, StoreError> {
        let key = keys::command_key(scope, command_id);
        let Some(bytes) = self
            .inner
            .db
            .get_pinned_cf(cf(&self.inner.db, CF_COMMANDS), key)?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| corrupt("command record", e))
    }

    /// The first result of a command id, if the log has seen it: the stream it appended to, the
    /// fingerprint it carried and its envelopes. Lets a caller answer a repeat before deciding.
    pub fn lookup_command(
        &self,
        scope: &str,
        command_id: &str,
    ) -> Result<Option<CommandLookup>, StoreError> {
        let Some(record) = self.command_record(scope, command_id)? else {
            return Ok(None);
        };
        let envelopes =
            read_envelope_range(&self.inner.db, record.first_position, record.last_position)?;
        Ok(Some(CommandLookup {
            stream: record.stream,
            fingerprint: record.fingerprint,
            envelopes,
        }))
    }

    /// The idempotency record of the append whose first event is at `first_position`, as a
    /// commit carries it on that event: `Some` only when `command_id` is remembered in `scope`
    /// and its append starts at that position (what the relay publishes with the event).
    pub fn command_header_at(
        &self,
        scope: &str,
        command_id: &str,
        first_position: Position,
    ) -> Result<Option<CommandHeader>, StoreError> {
        let Some(record) = self.command_record(scope, command_id)? else {
            return Ok(None);
        };
        Ok(
            (record.first_position == first_position).then(|| CommandHeader {
                scope: scope.to_string(),
                id: command_id.to_string(),
                fingerprint: record.fingerprint,
            }),
        )
    }

    /// The stream's version as of global position `position` (0 if it had no event by then).
    pub fn stream_version_at(
        &self,
        stream: &StreamId,
        position: Position,
    ) -> Result<Version, StoreError> {
        self.view().stream_version_at(stream, position)
    }

    /// The global position of a stream's version, if the stream has it.
    pub fn stream_position(
        &self,
        stream: &StreamId,
        version: Version,
    ) -> Result<Option<Position>, StoreError> {
        let key = keys::stream_version_key(stream, version);
        match self
            .inner
            .db
            .get_pinned_cf(cf(&self.inner.db, CF_STREAMS), &key)?
        {
            Some(value) => keys::decode_u64(&value)
                .map(|p| Some(Position(p)))
                .ok_or_else(|| corrupt(format!("stream index of {stream}"), "not 8 bytes")),
            None => Ok(None),
        }
    }

    /// Reads one envelope by position.
    pub fn read_position(&self, position: Position) -> Result<Option<Envelope>, StoreError> {
        self.view().read_position(position)
    }

    /// Reads up to `limit` events of a stream starting at version `from`, in `direction`.
    pub fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        direction: ReadDirection,
        limit: usize,
    ) -> Result<Vec<Envelope>, StoreError> {
        self.view().read_stream(stream, from, direction, limit)
    }

    /// The last durable position whose `recorded_at` is at or before `time` (0 if none).
    pub fn position_at(&self, time: Timestamp) -> Result<Position, StoreError> {
        self.view().position_at(time)
    }

    /// Stores a snapshot of a stream's state at `version`, without the write-ahead log: it is
    /// on disk once its column family is flushed (as at a clean close), and a crash before that
    /// loses it.
    pub fn put_snapshot(
        &self,
        stream: &StreamId,
        version: Version,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        // A cache (a load without it replays from an older one): the batches' fsyncs need not
        // carry whole plans.
        let mut options = rocksdb::WriteOptions::default();
        options.disable_wal(true);
        self.inner.db.put_cf_opt(
            cf(&self.inner.db, CF_SNAPSHOTS),
            keys::stream_version_key(stream, version),
            bytes,
            &options,
        )?;
        Ok(())
    }

    /// The newest snapshot of a stream at or below `version`.
    pub fn latest_snapshot(
        &self,
        stream: &StreamId,
        version: Version,
    ) -> Result<Option<(Version, Vec<u8>)>, StoreError> {
        self.view().latest_snapshot(stream, version)
    }

    /// Records a named checkpoint (a consumer's last processed position).
    pub fn put_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        self.inner.db.put_cf(
            cf(&self.inner.db, CF_CHECKPOINTS),
            name,
            position.to_be_bytes(),
        )?;
        // Into the file now rather than with the next batch: a checkpoint survives a crash of
        // the process (not of the machine) as soon as it is written.
        self.inner.db.flush_wal(false)?;
        Ok(())
    }

    /// Records several named checkpoints in one write: a reader never sees some of them
    /// updated and not the others.
    pub fn put_checkpoints(&self, entries: &[(&str, Position)]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for (name, position) in entries {
            batch.put_cf(
                cf(&self.inner.db, CF_CHECKPOINTS),
                name,
                position.to_be_bytes(),
            );
        }
        self.inner.db.write(batch)?;
        self.inner.db.flush_wal(false)?;
        Ok(())
    }

    /// A named checkpoint, if recorded.
    pub fn checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError> {
        match self
            .inner
            .db
            .get_pinned_cf(cf(&self.inner.db, CF_CHECKPOINTS), name)?
        {
            Some(bytes) => keys::decode_u64(&bytes)
                .map(|p| Some(Position(p)))
                .ok_or_else(|| corrupt(format!("checkpoint {name}"), "not 8 bytes")),
            None => Ok(None),
        }
    }

    /// Walks the whole log and checks positions, hashes and the chain between them.
    ///
    /// `progress` is called with each checked position (for progress bars).
    pub fn verify(&self, progress: impl FnMut(Position)) -> Result<VerifyReport, StoreError> {
        self.verify_to(None, progress)
    }

    /// Walks the log from position 1 to `to` (inclusive; the end of the log when `None`) and
    /// checks positions, hashes and the chain between them. A log that ends before `to` is
    /// reported intact up to its end: `last_position` tells how far it reaches.
    ///
    /// `progress` is called with each checked position (for progress bars).
    pub fn verify_to(
        &self,
        to: Option<Position>,
        progress: impl FnMut(Position),
    ) -> Result<VerifyReport, StoreError> {
        verify_chain(&self.inner.db, self.last_position(), to, progress)
    }

    /// Rebuilds the Merkle tree of the durable log from its entries and compares every node
    /// with the stored one (the first that differs is named).
    ///
    /// `progress` is called with each position rebuilt (for progress bars).
    pub fn verify_tree(&self, progress: impl FnMut(Position)) -> Result<TreeReport, StoreError> {
        crate::merkle::stored::check(&self.inner.db, self.last_position(), progress)
    }

    /// Deletes every log entry after `position` and the Merkle tree nodes covering them,
    /// bypassing every check (the stream index and heads are left as they were): only for
    /// tests of a truncated log.
    #[doc(hidden)]
    pub fn truncate_for_tests(&self, position: Position) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            cf(&self.inner.db, CF_LOG),
            keys::log_key(Position(position.0 + 1)),
            keys::log_key(Position(u64::MAX)),
        );
        self.inner.db.write(batch)?;
        crate::merkle::stored::delete_after(&self.inner.db, position)?;
        Ok(())
    }

    /// Deletes the log entry at `position`, bypassing every check (the Merkle tree, the stream
    /// index and heads are left as they were): only for tamper tests of a removed event.
    #[doc(hidden)]
    pub fn remove_raw_for_tests(&self, position: Position) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(cf(&self.inner.db, CF_LOG), keys::log_key(position));
        self.inner.db.write(batch)?;
        Ok(())
    }

    /// Writes raw bytes at a log position, bypassing every check: only for tamper tests and
    /// repair tooling.
    #[doc(hidden)]
    pub fn overwrite_raw_for_tests(
        &self,
        position: Position,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.inner.db, CF_LOG), keys::log_key(position), bytes);
        self.inner.db.write(batch)?;
        Ok(())
    }

    /// Reads the raw stored bytes at a log position.
    pub fn read_raw(&self, position: Position) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .inner
            .db
            .get_cf(cf(&self.inner.db, CF_LOG), keys::log_key(position))?)
    }

    /// Writes a consistent copy of the log into the directory `to` (which must not exist yet)
    /// while it keeps taking appends: a RocksDB checkpoint, which flushes the memtables and
    /// hard-links the table files (copies them across file systems). The copy holds whole
    /// batches only, up to some batch written before the call returns; see
    /// [`crate::LogCopy`] to read it.
    pub fn checkpoint_to(&self, to: &Path) -> Result<(), StoreError> {
        crate::backup::checkpoint_db(&self.inner.db, to)
    }

    /// Flushes memtables and the write-ahead log (for clean shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        for name in ALL_CFS {
            self.inner.db.flush_cf(cf(&self.inner.db, name))?;
        }
        Ok(())
    }
}

/// Walks `db`'s log from position 1 to `to` (the end when `None`) and checks positions, hashes
/// and the chain between them; `snapshot_last` is the last position reported when it breaks.
pub(crate) fn verify_chain(
    db: &DB,
    snapshot_last: Position,
    to: Option<Position>,
    mut progress: impl FnMut(Position),
) -> Result<VerifyReport, StoreError> {
    let mut expected_prev = GENESIS_HASH.to_string();
    let mut expected_position = 1u64;
    let mut last_recorded = Timestamp::UNIX_EPOCH;
    let mut last_recorded_at = None;
    let mut checked = 0u64;
    let to = to.map_or(u64::MAX, |p| p.0);
    let mut read = ReadOptions::default();
    read.fill_cache(false);
    let iter = db.iterator_cf_opt(cf(db, CF_LOG), read, IteratorMode::Start);
    // What was checked before the break: its count, last hash and time.
    let broken =
        |position: u64, why: String, before: (u64, &str, Option<Timestamp>)| VerifyReport {
            checked: before.0,
            last_position: snapshot_last,
            last_hash: before.1.to_string(),
            last_recorded_at: before.2,
            first_broken: Some((Position(position), why)),
        };
    for item in iter {
        let (key, value) = item?;
        let Some(position) = keys::decode_u64(&key) else {
            return Ok(broken(
                expected_position,
                "log key is not 8 bytes".into(),
                (checked, &expected_prev, last_recorded_at),
            ));
        };
        if position > to {
            break;
        }
        if position != expected_position {
            return Ok(broken(
                expected_position,
                format!("position {expected_position} is missing (next found is {position})"),
                (checked, &expected_prev, last_recorded_at),
            ));
        }
        let envelope = match serde_json::from_slice::<Envelope>(&value) {
            Ok(envelope) => envelope,
            Err(e) => {
                return Ok(broken(
                    position,
                    format!("envelope does not decode: {e}"),
                    (checked, &expected_prev, last_recorded_at),
                ));
            }
        };
        let why = if envelope.position.0 != position {
            Some(format!("envelope says position {}", envelope.position))
        } else if envelope.prev_hash != expected_prev {
            Some("prev_hash does not match the hash of the previous envelope".into())
        } else if envelope.compute_hash() != envelope.hash {
            Some("hash does not match the envelope's content".into())
        } else if envelope.recorded_at < last_recorded {
            Some("recorded_at goes backwards".into())
        } else {
            None
        };
        if let Some(why) = why {
            return Ok(broken(
                position,
                why,
                (checked, &expected_prev, last_recorded_at),
            ));
        }
        last_recorded = envelope.recorded_at;
        last_recorded_at = Some(envelope.recorded_at);
        expected_prev = envelope.hash;
        expected_position += 1;
        checked += 1;
        progress(Position(position));
    }
    Ok(VerifyReport {
        checked,
        last_position: Position(expected_position - 1),
        last_hash: expected_prev,
        last_recorded_at,
        first_broken: None,
    })
}

/// Opens the log's RocksDB with its column families and their tuning (see ARCHITECTURE.md).
pub(crate) fn open_database(path: &Path, options: &StoreOptions) -> Result<DB, StoreError> {
    let (db_options, descriptors) = database_options(options);
    Ok(DB::open_cf_descriptors(&db_options, path, descriptors)?)
}

/// The log's database options and its column families with their tuning: what the writer
/// opens with, and what a [`LogReader`](crate::LogReader) must open with too (a secondary
/// instance replays the writer's write-ahead log into memtables of the same kinds).
pub(crate) fn database_options(options: &StoreOptions) -> (Options, Vec<ColumnFamilyDescriptor>) {
    let cache = match &options.shared_memory {
        Some(shared) => shared.cache.clone(),
        None => Cache::new_lru_cache(options.block_cache_bytes),
    };
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_bloom_filter(10.0, false);
    let with_tables = |mut options: Options| {
        options.set_block_based_table_factory(&table);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        options
    };
    let mut cf_options = with_tables(Options::default());
    if options.shared_memory.is_some() {
        // Many logs share one memtable budget: small arena blocks, so that a column family
        // with few writes does not hold a large block of it.
        cf_options.set_arena_block_size(1024 * 1024);
    }

    // `heads` is written once per append, for streams all over the key space. A
    // hash-of-skiplists memtable keyed by the whole key (RocksDB's no-op prefix) puts a
    // stream's entries in its bucket's small skiplist (shared only with streams that hash
    // alike), where a new head goes first (newest sequence number): under half the
    // instructions of an insert into one big skiplist with a per-key hint, and no hints in the
    // arena. Such a memtable reads only by point lookups, which is all that is ever done with
    // `heads`. (Updating heads in place would be cheaper still, but an
    // in-place value is visible before its batch is, so a reader could see a head the
    // `streams` index does not have yet.)
    let mut heads_options = cf_options.clone();
    heads_options.set_prefix_extractor(rocksdb::SliceTransform::create_noop());
    heads_options.set_memtable_factory(rocksdb::MemtableFactory::HashSkipList {
        bucket_count: STREAM_BUCKETS,
        height: 4,
        branching_factor: 4,
    });

    // `streams` gets a hash-of-skiplists memtable keyed by stream: an append inserts next to
    // its stream's previous key instead of searching one big skiplist. Such a memtable reads
    // only within a stream and only forwards, which is all `read_stream` and
    // `stream_version_at` do.
    let mut streams_options = cf_options.clone();
    streams_options.set_prefix_extractor(rocksdb::SliceTransform::create(
        "planledger.stream",
        keys::stream_of_version_key,
        Some(keys::is_version_key),
    ));
    streams_options.set_memtable_factory(rocksdb::MemtableFactory::HashSkipList {
        bucket_count: STREAM_BUCKETS,
        height: 4,
        branching_factor: 4,
    });

    // `commands` is looked up once per command by the command path (a repeat is answered
    // before deciding) and once more by the writer, and nearly every lookup misses (a fresh
    // command id). A bloom filter over the memtable's whole keys answers such a miss without
    // searching the memtable's skiplist; the tables' filters already do so on disk.
    let mut commands_options = cf_options.clone();
    commands_options.set_memtable_prefix_bloom_ratio(0.1);
    commands_options.set_memtable_whole_key_filtering(true);

    // `merkle` holds SHA-256 hashes, which do not compress: LZ4 would only spend the flushes'
    // and compactions' time finding that out.
    let mut merkle_options = cf_options.clone();
    merkle_options.set_compression_type(rocksdb::DBCompressionType::None);

    let mut db_options = Options::default();
    db_options.create_if_missing(true);
    db_options.create_missing_column_families(true);
    db_options.increase_parallelism(2);
    db_options.set_max_background_jobs(2);
    if let Some(shared) = &options.shared_memory {
        db_options.set_write_buffer_manager(&shared.write_buffers);
    }
    // One writer thread: concurrent memtable inserts buy nothing, and neither insert hints
    // nor hash memtables work with them.
    db_options.set_allow_concurrent_memtable_write(false);
    // Column families that see few writes (checkpoints, snapshots, heads) would otherwise keep
    // old write-ahead log files alive, and a restart would replay gigabytes.
    db_options.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
    // A write only appends to the write-ahead log's buffer; the syncer's `FlushWAL(sync)` writes
    // the buffer to the file and then syncs it, so the write(2) of a batch happens on the syncer
    // thread while the writer renders the next batch (the writer writes it itself only when it
    // fills or the file rotates). Synced writes (a lone append, the bench's `PlainLog`) still write and sync
    // their own. Checkpoints flush the buffer themselves (no sync, as before); snapshots skip the
    // write-ahead log altogether (`put_snapshot`).
    db_options.set_manual_wal_flush(true);
    // Room for several batches in that buffer before a write has to flush it itself.
    db_options.set_writable_file_max_buffer_size(WAL_BUFFER_BYTES);
    let descriptors = ALL_CFS
        .iter()
        .map(|name| {
            let options = match *name {
                CF_HEADS => heads_options.clone(),
                CF_STREAMS => streams_options.clone(),
                CF_COMMANDS => commands_options.clone(),
                CF_MERKLE => merkle_options.clone(),
                _ => cf_options.clone(),
            };
            ColumnFamilyDescriptor::new(*name, options)
        })
        .collect();
    (db_options, descriptors)
}
