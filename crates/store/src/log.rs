//! The event log handle: open, append, read, snapshots, checkpoints, verify.

use std::path::Path;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode,
    Options, ReadOptions, WriteBatch,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::envelope::{Envelope, GENESIS_HASH, HexHash};
use crate::keys::{
    self, ALL_CFS, CF_CHECKPOINTS, CF_COMMANDS, CF_HEADS, CF_LOG, CF_META, CF_SNAPSHOTS, CF_STREAMS,
};
use crate::writer::{
    AppendOutcome, AppendRequest, CommandRecord, Head, Pending, SyncFault, Writer, WriterStats,
};

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
const FORMAT: &[u8] = b"planledger-log-v1";

/// Options for opening the log.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Block cache size in bytes, shared by all column families.
    pub block_cache_bytes: usize,
    /// Fault injection for tests: when triggered, syncs of the write-ahead log fail. `None`
    /// outside tests.
    pub sync_fault: Option<SyncFault>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            block_cache_bytes: 64 * 1024 * 1024,
            sync_fault: None,
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
    /// The last position in the log.
    pub last_position: Position,
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
    failed: Arc<std::sync::atomic::AtomicBool>,
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

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name)
        .expect("every column family is created when the log is opened")
}

fn corrupt(what: impl Into<String>, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: what.into(),
        detail: detail.to_string(),
    }
}

fn decode_envelope(position: u64, bytes: &[u8]) -> Result<Envelope, StoreError> {
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
            None => db.put_cf(cf(&db, CF_META), b"format", FORMAT)?,
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

        let head = Self::recover_head(&db)?;
        tracing::info!(path = %path.display(), last_position = head.position.0, "event log opened");
        let (sender, receiver) = mpsc::channel(INBOX_CAPACITY);
        let (published_tx, published_rx) = watch::channel(head.position);
        let stats = Arc::new(Mutex::new(WriterStats::default()));
        let (sync_tx, sync_rx) = std::sync::mpsc::sync_channel(crate::writer::SYNC_QUEUE);
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
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
        let syncer_thread = std::thread::Builder::new()
            .name("planledger-log-syncer".into())
            .spawn(move || syncer.run())
            .map_err(|e| corrupt("syncer thread", e))?;
        let writer = Writer {
            db: db.clone(),
            inbox: receiver,
            head,
            stats: stats.clone(),
            head_cache: Default::default(),
            syncer: sync_tx,
            failed: failed.clone(),
            syncer_thread: Some(syncer_thread),
            in_flight,
            published: published_tx,
            serial: true,
            sync_fault: options.sync_fault.clone(),
            spare_lists: Default::default(),
            batch_commands: Default::default(),
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
            }),
        })
    }

    fn recover_head(db: &DB) -> Result<Head, StoreError> {
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
                    hash: envelope
                        .hash
                        .as_bytes()
                        .try_into()
                        .ok()
                        .filter(|hash: &HexHash| hash.iter().all(u8::is_ascii_hexdigit))
                        .ok_or_else(|| {
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
        answer.await.map_err(|_| StoreError::WriterStopped)?
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
            if self.inner.failed.load(std::sync::atomic::Ordering::SeqCst) {
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

    /// The stream's current version (0 when it has no events).
    pub fn stream_version(&self, stream: &StreamId) -> Result<Version, StoreError> {
        match self
            .inner
            .db
            .get_pinned_cf(cf(&self.inner.db, CF_HEADS), stream.as_str())?
        {
            Some(bytes) => keys::decode_u64(&bytes)
                .map(Version)
                .ok_or_else(|| corrupt(format!("head of {stream}"), "not 8 bytes")),
            None => Ok(Version(0)),
        }
    }

    /// `limit` cut so that a global read from `from` stops at the last durable position: a batch
    /// whose fsync is still running is in RocksDB already but must not reach the relay, the
    /// projectors or a log page before it is durable.
    fn durable_limit(&self, from: Position, limit: usize) -> usize {
        let durable = self.last_position().0;
        if from.0 > durable {
            return 0;
        }
        limit.min(usize::try_from(durable - from.0 + 1).unwrap_or(usize::MAX))
    }

    /// Reads up to `limit` events of the global log starting at `from` (inclusive), never past
    /// the last durable position.
    pub fn read_all(&self, from: Position, limit: usize) -> Result<Vec<Envelope>, StoreError> {
        let from = Position(from.0.max(1));
        let limit = self.durable_limit(from, limit);
        let mut out = Vec::with_capacity(limit.min(4096));
        if limit == 0 {
            return Ok(out);
        }
        let mut read = ReadOptions::default();
        read.fill_cache(limit < 10_000);
        let iter = self.inner.db.iterator_cf_opt(
            cf(&self.inner.db, CF_LOG),
            read,
            IteratorMode::From(&keys::log_key(from), Direction::Forward),
        );
        for item in iter {
            let (key, value) = item?;
            let position =
                keys::decode_u64(&key).ok_or_else(|| corrupt("log key", "not 8 bytes"))?;
            out.push(decode_envelope(position, &value)?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Reads the raw stored bytes of up to `limit` log entries from `from`: for bulk consumers
    /// that decode lazily.
    pub fn read_all_raw(&self, from: Position, limit: usize) -> Result<Vec<RawEntry>, StoreError> {
        let from = Position(from.0.max(1));
        let limit = self.durable_limit(from, limit);
        let mut out = Vec::with_capacity(limit.min(4096));
        if limit == 0 {
            return Ok(out);
        }
        let mut read = ReadOptions::default();
        read.fill_cache(false);
        let iter = self.inner.db.iterator_cf_opt(
            cf(&self.inner.db, CF_LOG),
            read,
            IteratorMode::From(&keys::log_key(from), Direction::Forward),
        );
        for item in iter {
            let (key, value) = item?;
            let position =
                keys::decode_u64(&key).ok_or_else(|| corrupt("log key", "not 8 bytes"))?;
            out.push((Position(position), value));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The first result of a command id, if the log has seen it: the stream it appended to, the
    /// fingerprint it carried and its envelopes. Lets a caller answer a repeat before deciding.
    pub fn lookup_command(
        &self,
        scope: &str,
        command_id: &str,
    ) -> Result<Option<CommandLookup>, StoreError> {
        let key = keys::command_key(scope, command_id);
        let Some(bytes) = self
            .inner
            .db
            .get_pinned_cf(cf(&self.inner.db, CF_COMMANDS), key)?
        else {
            return Ok(None);
        };
        let record: CommandRecord =
            serde_json::from_slice(&bytes).map_err(|e| corrupt("command record", e))?;
        let envelopes =
            read_envelope_range(&self.inner.db, record.first_position, record.last_position)?;
        Ok(Some(CommandLookup {
            stream: record.stream,
            fingerprint: record.fingerprint,
            envelopes,
        }))
    }

    /// The stream's version as of global position `position` (0 if it had no event by then).
    ///
    /// A stream's versions are 1..=head and their positions increase with them, so this is the
    /// head itself in the common case and a binary search over the index otherwise.
    pub fn stream_version_at(
        &self,
        stream: &StreamId,
        position: Position,
    ) -> Result<Version, StoreError> {
        let head = self.stream_version(stream)?;
        if head.0 == 0 || self.indexed_position(stream, head)? <= position.0 {
            return Ok(head);
        }
        // Invariant: version `below` is at or before `position` (0 always is); `above` is not
        // (the head, just checked, is after it).
        let (mut below, mut above) = (0u64, head.0);
        while above - below > 1 {
            let middle = below + (above - below) / 2;
            if self.indexed_position(stream, Version(middle))? <= position.0 {
                below = middle;
            } else {
                above = middle;
            }
        }
        Ok(Version(below))
    }

    /// The global position of a stream's version, from the `streams` index.
    fn indexed_position(&self, stream: &StreamId, version: Version) -> Result<u64, StoreError> {
        let key = keys::stream_version_key(stream, version);
        let value = self
            .inner
            .db
            .get_pinned_cf(cf(&self.inner.db, CF_STREAMS), &key)?
            .ok_or_else(|| {
                corrupt(
                    format!("stream index of {stream}"),
                    format!("version {} is below the head but not indexed", version.0),
                )
            })?;
        keys::decode_u64(&value)
            .ok_or_else(|| corrupt(format!("stream index of {stream}"), "not 8 bytes"))
    }

    /// Reads one envelope by position.
    pub fn read_position(&self, position: Position) -> Result<Option<Envelope>, StoreError> {
        match self
            .inner
            .db
            .get_pinned_cf(cf(&self.inner.db, CF_LOG), keys::log_key(position))?
        {
            Some(bytes) => decode_envelope(position.0, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Reads up to `limit` events of a stream starting at version `from`, in `direction`.
    ///
    /// Backward from a version past the end starts at the last event.
    pub fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        direction: ReadDirection,
        limit: usize,
    ) -> Result<Vec<Envelope>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        // The index is read forwards only (see `open`); a backward read takes the versions
        // `last - limit + 1 ..= last` forwards and turns them around.
        let (first, last) = match direction {
            ReadDirection::Forward => (from.0, u64::MAX),
            ReadDirection::Backward => {
                let last = from.0.min(self.stream_version(stream)?.0);
                if last == 0 {
                    return Ok(out);
                }
                (last.saturating_sub(limit as u64 - 1).max(1), last)
            }
        };
        let prefix = keys::stream_prefix(stream);
        let start = keys::stream_version_key(stream, Version(first));
        let mut read = ReadOptions::default();
        read.set_prefix_same_as_start(true);
        let mut positions = Vec::new();
        for item in self.inner.db.iterator_cf_opt(
            cf(&self.inner.db, CF_STREAMS),
            read,
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) || key.len() != prefix.len() + 8 {
                break;
            }
            if keys::decode_u64(&key).is_some_and(|version| version > last) {
                break;
            }
            let position = keys::decode_u64(&value)
                .ok_or_else(|| corrupt(format!("stream index of {stream}"), "not 8 bytes"))?;
            positions.push(keys::log_key(Position(position)));
            if positions.len() >= limit {
                break;
            }
        }
        if direction == ReadDirection::Backward {
            positions.reverse();
        }
        let log = cf(&self.inner.db, CF_LOG);
        for (key, value) in positions.iter().zip(self.inner.db.batched_multi_get_cf(
            log,
            positions.iter(),
            false,
        )) {
            let position = u64::from_be_bytes(*key);
            match value? {
                Some(bytes) => out.push(decode_envelope(position, &bytes)?),
                None => {
                    return Err(corrupt(
                        format!("stream index of {stream}"),
                        format!("points at missing log position {position}"),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The last position whose `recorded_at` is at or before `time` (0 if none).
    ///
    /// `recorded_at` is non-decreasing over positions, so this is a binary search.
    pub fn position_at(&self, time: Timestamp) -> Result<Position, StoreError> {
        let (mut low, mut high) = (0u64, self.last_position().0);
        while low < high {
            let middle = low + (high - low).div_ceil(2);
            let envelope = self
                .read_position(Position(middle))?
                .ok_or_else(|| corrupt(format!("log position {middle}"), "missing"))?;
            if envelope.recorded_at <= time {
                low = middle;
            } else {
                high = middle - 1;
            }
        }
        Ok(Position(low))
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
        let prefix = keys::stream_prefix(stream);
        let start = keys::stream_version_key(stream, version);
        let mut iter = self.inner.db.iterator_cf(
            cf(&self.inner.db, CF_SNAPSHOTS),
            IteratorMode::From(&start, Direction::Reverse),
        );
        match iter.next() {
            Some(item) => {
                let (key, value) = item?;
                if !key.starts_with(&prefix) || key.len() != prefix.len() + 8 {
                    return Ok(None);
                }
                let found =
                    keys::decode_u64(&key).ok_or_else(|| corrupt("snapshot key", "not 8 bytes"))?;
                Ok(Some((Version(found), value.into_vec())))
            }
            None => Ok(None),
        }
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
    pub fn verify(&self, mut progress: impl FnMut(Position)) -> Result<VerifyReport, StoreError> {
        let mut expected_prev = GENESIS_HASH.to_string();
        let mut expected_position = 1u64;
        let mut last_recorded = Timestamp::UNIX_EPOCH;
        let mut checked = 0u64;
        let mut read = ReadOptions::default();
        read.fill_cache(false);
        let snapshot_last = self.last_position();
        let iter =
            self.inner
                .db
                .iterator_cf_opt(cf(&self.inner.db, CF_LOG), read, IteratorMode::Start);
        let broken = |position: u64, why: String, checked: u64| VerifyReport {
            checked,
            last_position: snapshot_last,
            first_broken: Some((Position(position), why)),
        };
        for item in iter {
            let (key, value) = item?;
            let Some(position) = keys::decode_u64(&key) else {
                return Ok(broken(
                    expected_position,
                    "log key is not 8 bytes".into(),
                    checked,
                ));
            };
            if position != expected_position {
                return Ok(broken(
                    expected_position,
                    format!("position {expected_position} is missing (next found is {position})"),
                    checked,
                ));
            }
            let envelope = match serde_json::from_slice::<Envelope>(&value) {
                Ok(envelope) => envelope,
                Err(e) => {
                    return Ok(broken(
                        position,
                        format!("envelope does not decode: {e}"),
                        checked,
                    ));
                }
            };
            if envelope.position.0 != position {
                return Ok(broken(
                    position,
                    format!("envelope says position {}", envelope.position),
                    checked,
                ));
            }
            if envelope.prev_hash != expected_prev {
                return Ok(broken(
                    position,
                    "prev_hash does not match the hash of the previous envelope".into(),
                    checked,
                ));
            }
            if envelope.compute_hash() != envelope.hash {
                return Ok(broken(
                    position,
                    "hash does not match the envelope's content".into(),
                    checked,
                ));
            }
            if envelope.recorded_at < last_recorded {
                return Ok(broken(
                    position,
                    "recorded_at goes backwards".into(),
                    checked,
                ));
            }
            last_recorded = envelope.recorded_at;
            expected_prev = envelope.hash;
            expected_position += 1;
            checked += 1;
            progress(Position(position));
        }
        Ok(VerifyReport {
            checked,
            last_position: Position(expected_position - 1),
            first_broken: None,
        })
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

    /// Flushes memtables and the write-ahead log (for clean shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        for name in ALL_CFS {
            self.inner.db.flush_cf(cf(&self.inner.db, name))?;
        }
        Ok(())
    }
}

/// Opens the log's RocksDB with its column families and their tuning (see ARCHITECTURE.md).
fn open_database(path: &Path, options: &StoreOptions) -> Result<DB, StoreError> {
    let cache = Cache::new_lru_cache(options.block_cache_bytes);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_bloom_filter(10.0, false);
    let with_tables = |mut options: Options| {
        options.set_block_based_table_factory(&table);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        options
    };
    let cf_options = with_tables(Options::default());

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

    let mut db_options = Options::default();
    db_options.create_if_missing(true);
    db_options.create_missing_column_families(true);
    db_options.increase_parallelism(2);
    db_options.set_max_background_jobs(2);
    // One writer thread: concurrent memtable inserts buy nothing, and neither insert hints
    // nor hash memtables work with them.
    db_options.set_allow_concurrent_memtable_write(false);
    // Column families that see few writes (checkpoints, snapshots, heads) would otherwise keep
    // old write-ahead log files alive, and a restart would replay gigabytes.
    db_options.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
    // A write only appends to the write-ahead log's buffer; the syncer's `FlushWAL(sync)` writes
    // the buffer to the file and then syncs it, so the write(2) of a batch happens on the syncer
    // thread while the writer renders the next batch (the writer writes it itself only when it
    // fills or the file rotates). Synced writes (a lone append, `PlainLog`) still write and sync
    // their own. Checkpoints flush the buffer themselves (no sync, as before); snapshots skip the
    // write-ahead log altogether (`put_snapshot`).
    db_options.set_manual_wal_flush(true);
    // Room for several batches in that buffer before a write has to flush it itself.
    db_options.set_writable_file_max_buffer_size(WAL_BUFFER_BYTES);
    let descriptors = ALL_CFS.iter().map(|name| {
        let options = match *name {
            CF_HEADS => heads_options.clone(),
            CF_STREAMS => streams_options.clone(),
            _ => cf_options.clone(),
        };
        ColumnFamilyDescriptor::new(*name, options)
    });
    Ok(DB::open_cf_descriptors(&db_options, path, descriptors)?)
}

/// The log's RocksDB, configured exactly as [`EventStore::open`] configures it, with none of the
/// log's logic (no writer thread, checks, envelopes or hash chain). It exists to measure what
/// RocksDB itself costs for the log's keys: `planledger bench append` compares against it.
pub struct PlainLog {
    db: DB,
}

impl PlainLog {
    /// Opens (or creates) a database at `path`.
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        Ok(Self {
            db: open_database(path.as_ref(), &options)?,
        })
    }

    /// Writes one batch with `sync = true`: for each event its `log`, `streams` and `heads`
    /// entries, the keys an append of one event writes.
    pub fn write_synced(
        &self,
        events: &[(Position, &StreamId, Version, &[u8])],
    ) -> Result<(), StoreError> {
        let cfs = keys::AppendCfs::of(&self.db);
        let mut batch = WriteBatch::default();
        for (position, stream, version, bytes) in events {
            keys::put_event(&cfs, &mut batch, *position, stream, *version, bytes);
            keys::put_head(&cfs, &mut batch, stream, *version);
        }
        let mut write = rocksdb::WriteOptions::default();
        write.set_sync(true);
        Ok(self.db.write_opt(batch, &write)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_log_writes_the_keys_an_append_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let plain = PlainLog::open(dir.path(), StoreOptions::default()).expect("open");
        let (a, b) = (
            StreamId::new("t/a").expect("id"),
            StreamId::new("t/b").expect("id"),
        );
        plain
            .write_synced(&[
                (Position(1), &a, Version(1), b"one".as_slice()),
                (Position(2), &b, Version(1), b"two".as_slice()),
                (Position(3), &a, Version(2), b"three".as_slice()),
            ])
            .expect("write");
        let db = &plain.db;
        let get = |family: &str, key: &[u8]| {
            db.get_cf(cf(db, family), key)
                .expect("read")
                .expect("present")
        };
        assert_eq!(get(CF_LOG, &keys::log_key(Position(3))), b"three");
        let indexed = get(CF_STREAMS, &keys::stream_version_key(&a, Version(2)));
        assert_eq!(keys::decode_u64(&indexed), Some(3));
        assert_eq!(keys::decode_u64(&get(CF_HEADS, b"t/a")), Some(2));
        assert_eq!(keys::decode_u64(&get(CF_HEADS, b"t/b")), Some(1));
    }
}
