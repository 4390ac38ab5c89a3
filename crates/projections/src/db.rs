//! A read model's own RocksDB database, with generations for rebuilds.
//!
//! Layout: one database per read model (`<data_dir>/projections/<name>`), never the log's.
//! Each generation of the model is a column family `gen-<n>`; the default column family holds
//! `live` (the generation readers use), `building` (a rebuild in progress), `poison` (the event
//! the projector is stopped at, if any) and one `quarantine` NUL position (u64 BE) record per
//! quarantined event (shared by every generation, so rebuilds pass over them too). Inside a
//! generation:
//!
//! | key | value |
//! | --- | --- |
//! | `C` | checkpoint JSON: the last position applied and its `recorded_at` |
//! | `C` + partition (u32 BE) | cluster mode: one checkpoint per partition of the deployment |
//! | `R` + partition (u32 BE) | cluster mode, a generation being built: that partition's rebuild has caught up |
//! | `S` + stream id | a snapshot of the plan's facts (the evolved `Plan`, JSON) |
//! | `E` + stream id + NUL + version (u64 BE) | each event applied since that snapshot: `{"type", "schema_version", "data"}` as in the log |
//! | `I` + index key | empty: an index entry (e.g. person -> plan) |
//!
//! A plan is read back as its snapshot plus the events after it, folded with the domain's
//! `evolve`; so applying an event writes one small record. A new snapshot replaces the tail once
//! the tail's bytes reach half the last snapshot's size (at least [`SNAPSHOT_MIN_TAIL_BYTES`]): the
//! bytes written for snapshots stay proportional to the bytes of the events, however large a plan
//! grows, and a read replays a tail at most half the size of the snapshot. The rule depends only
//! on stored bytes, so the stored model depends only on the events, never on commit boundaries.
//!
//! In cluster mode one database holds the model of every partition: each partition's runtime
//! (a [`ReadModelDb::for_partition`] handle) keeps its own checkpoint, poison record and
//! quarantines, and writes only the plans of its own partition (a plan's events live in exactly
//! one partition), so the stored facts do not depend on how the partitions interleave. A rebuild
//! fills one new generation from every partition; it goes live once each partition's rebuild
//! has caught up with its live runtime (the last to catch up switches), and each live runtime
//! then continues from its own rebuilt checkpoint.
//!
//! Every commit writes the plan facts, the index changes and the checkpoint in one `WriteBatch`,
//! so a crash never leaves writes without their checkpoint or the reverse. A rebuild fills a new
//! generation beside the live one; switching is one write of `live`, so readers see either the
//! old model or the complete new one, never a half-built one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use jiff::Timestamp;
use planledger_domain::{Plan, evolve};
use rocksdb::{
    BlockBasedOptions, BoundColumnFamily, Cache, ColumnFamilyDescriptor, DBWithThreadMode,
    Direction, IteratorMode, MultiThreaded, Options, ReadOptions, WriteBatch, WriteOptions,
};
use serde::{Deserialize, Serialize};

use crate::ProjectionError;
use crate::decode::decode_event_record;
use crate::quarantine::{Poison, Quarantine};

type Rocks = DBWithThreadMode<MultiThreaded>;

const META_LIVE: &[u8] = b"live";
const META_BUILDING: &[u8] = b"building";
const META_FORMAT: &[u8] = b"format";
/// Cluster mode: the deployment's partition count (u64 BE), recorded at the first start.
const META_PARTITIONS: &[u8] = b"partitions";
const FORMAT: &[u8] = b"planledger-read-model-v1";
const KEY_CHECKPOINT: &[u8] = b"C";
const PREFIX_READY: u8 = b'R';
const PREFIX_SNAPSHOT: u8 = b'S';
const PREFIX_EVENT: u8 = b'E';
const PREFIX_INDEX: u8 = b'I';
/// Default column family: the event the projector is stopped at, if any (JSON [`Poison`]).
const META_POISON: &[u8] = b"poison";
/// Default column family: `quarantine` NUL position (u64 BE) -> JSON [`Quarantine`].
const PREFIX_QUARANTINE: &[u8] = b"quarantine\0";
/// Default column family, cluster mode: `quarantine-p` NUL partition (u32 BE) position (u64 BE)
/// -> JSON [`Quarantine`].
const PREFIX_PARTITION_QUARANTINE: &[u8] = b"quarantine-p\0";

/// A plan's tail of event records is folded into a new snapshot once it reaches this many bytes
/// or half the size of the plan's last snapshot, whichever is larger.
pub const SNAPSHOT_MIN_TAIL_BYTES: usize = 32 * 1024;

/// Whether a plan whose last snapshot is `snapshot_bytes` long and whose tail would be
/// `tail_bytes` long should be snapshotted instead.
pub(crate) fn snapshot_due(snapshot_bytes: usize, tail_bytes: usize) -> bool {
    tail_bytes >= SNAPSHOT_MIN_TAIL_BYTES.max(snapshot_bytes / 2)
}

/// A plan read back from a generation, with what decides its next snapshot.
#[derive(Clone, Debug, Default)]
pub(crate) struct StoredPlan {
    /// The plan (snapshot plus tail).
    pub plan: Plan,
    /// The plan version the snapshot holds (0: no snapshot yet).
    pub snapshot_version: u64,
    /// Length of the snapshot record.
    pub snapshot_bytes: usize,
    /// Total length of the tail's event records.
    pub tail_bytes: usize,
}

/// One stored key and its value.
pub type Record = (Vec<u8>, Vec<u8>);

/// How far a generation of a read model has applied the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last global position applied (0: nothing yet).
    pub position: u64,
    /// When the event at that position was recorded in the log.
    pub recorded_at: Option<Timestamp>,
}

/// The largest buffer [`Staged::clear`] keeps for the next commit.
const STAGED_KEEP_BYTES: usize = 16 * 1024 * 1024;

/// Writes staged for one commit, in order, packed in one buffer (no allocation per record).
#[derive(Debug, Default)]
pub(crate) struct Staged {
    bytes: Vec<u8>,
    records: Vec<(std::ops::Range<usize>, Staging)>,
}

/// What a staged record does with its key.
#[derive(Debug)]
enum Staging {
    /// Puts the value at this range of the buffer.
    Put(std::ops::Range<usize>),
    /// Deletes the key.
    Delete,
    /// Deletes every key from the key (inclusive) to the one at this range (exclusive).
    DeleteRange(std::ops::Range<usize>),
}

/// One staged write, as [`ReadModelDb::commit`] applies it.
pub(crate) enum Write<'a> {
    Put(&'a [u8], &'a [u8]),
    Delete(&'a [u8]),
    DeleteRange(&'a [u8], &'a [u8]),
}

impl Staged {
    /// Stages a put (`key` writes the key, `value` the value) and returns the value's length.
    pub(crate) fn put<E>(
        &mut self,
        key: impl FnOnce(&mut Vec<u8>),
        value: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<usize, E> {
        let start = self.bytes.len();
        key(&mut self.bytes);
        let middle = self.bytes.len();
        if let Err(error) = value(&mut self.bytes) {
            self.bytes.truncate(start);
            return Err(error);
        }
        self.records
            .push((start..middle, Staging::Put(middle..self.bytes.len())));
        Ok(self.bytes.len() - middle)
    }

    /// Stages a delete of the key `key` writes.
    pub(crate) fn delete(&mut self, key: impl FnOnce(&mut Vec<u8>)) {
        let start = self.bytes.len();
        key(&mut self.bytes);
        self.records
            .push((start..self.bytes.len(), Staging::Delete));
    }

    /// Stages a delete of every key from the one `from` writes (inclusive) to the one `to`
    /// writes (exclusive): one record however many keys it covers.
    pub(crate) fn delete_range(
        &mut self,
        from: impl FnOnce(&mut Vec<u8>),
        to: impl FnOnce(&mut Vec<u8>),
    ) {
        let start = self.bytes.len();
        from(&mut self.bytes);
        let middle = self.bytes.len();
        to(&mut self.bytes);
        debug_assert!(
            self.bytes[start..middle] < self.bytes[middle..],
            "a range delete runs forwards"
        );
        self.records.push((
            start..middle,
            Staging::DeleteRange(middle..self.bytes.len()),
        ));
    }

    /// Records staged.
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// Forgets every staged record after a commit, keeping the buffers (up to
    /// [`STAGED_KEEP_BYTES`]) for the next one: growing them again from nothing on every commit
    /// costs a page fault per new page.
    pub(crate) fn clear(&mut self) {
        if self.bytes.capacity() > STAGED_KEEP_BYTES {
            *self = Self::default();
            return;
        }
        self.bytes.clear();
        self.records.clear();
    }

    fn iter(&self) -> impl Iterator<Item = Write<'_>> {
        self.records.iter().map(|(key, staging)| {
            let key = &self.bytes[key.clone()];
            match staging {
                Staging::Put(value) => Write::Put(key, &self.bytes[value.clone()]),
                Staging::Delete => Write::Delete(key),
                Staging::DeleteRange(to) => Write::DeleteRange(key, &self.bytes[to.clone()]),
            }
        })
    }
}

/// How a commit reaches the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Through the write-ahead log, synced before returning (an acknowledgement follows).
    Synced,
    /// Through the write-ahead log, not synced (survives a process crash; the source can
    /// deliver again whatever a machine crash loses).
    Logged,
    /// Memtables only, no write-ahead log: for a generation being rebuilt, which is flushed
    /// before it goes live; a crash loses whole batches (writes with their checkpoint), so the
    /// rebuild resumes from an earlier, consistent checkpoint.
    Unlogged,
}

/// The writes of one commit and the new checkpoint.
#[derive(Debug)]
pub(crate) struct CommitBatch<'a> {
    /// Records to put or delete, in order.
    pub writes: &'a Staged,
    /// The checkpoint after these writes.
    pub checkpoint: Checkpoint,
}

/// A read model's database: shared by its projector (the only writer) and its readers.
#[derive(Clone)]
pub struct ReadModelDb {
    inner: Arc<Inner>,
    /// Cluster mode: the partition this handle's runtime applies (of how many).
    scope: Option<Scope>,
}

/// One partition of a deployment of `of` partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Scope {
    partition: u32,
    of: u32,
}

/// Quarantined positions by partition (`None`: single-node mode).
type QuarantineMap = BTreeMap<Option<u32>, Arc<BTreeMap<u64, Quarantine>>>;

struct Inner {
    db: Rocks,
    path: PathBuf,
    name: String,
    live: AtomicU64,
    /// Every quarantined position, loaded at open and kept current by [`ReadModelDb::quarantine`].
    quarantines: RwLock<QuarantineMap>,
    /// Held while a partition marks its rebuild caught up, so exactly one switches.
    switching: std::sync::Mutex<()>,
    /// Cluster mode: generations that stopped being live, with the partitions whose runtimes
    /// have moved off them (see [`ReadModelDb::left_generation`]).
    left: std::sync::Mutex<BTreeMap<u64, std::collections::BTreeSet<u32>>>,
}

/// The quarantine record's key in the default column family.
fn quarantine_key(partition: Option<u32>, position: u64) -> Vec<u8> {
    let mut key = match partition {
        None => PREFIX_QUARANTINE.to_vec(),
        Some(p) => {
            let mut key = PREFIX_PARTITION_QUARANTINE.to_vec();
            key.extend_from_slice(&p.to_be_bytes());
            key
        }
    };
    key.extend_from_slice(&position.to_be_bytes());
    key
}

/// The checkpoint's key in a generation: `C`, or `C` + partition in cluster mode.
fn checkpoint_key(partition: Option<u32>) -> Vec<u8> {
    let mut key = KEY_CHECKPOINT.to_vec();
    if let Some(p) = partition {
        key.extend_from_slice(&p.to_be_bytes());
    }
    key
}

/// The poison record's key in the default column family.
fn poison_key(partition: Option<u32>) -> Vec<u8> {
    let mut key = META_POISON.to_vec();
    if let Some(p) = partition {
        key.push(0);
        key.extend_from_slice(&p.to_be_bytes());
    }
    key
}

/// Whether a generation's key is bookkeeping (checkpoints, rebuild marks), not a fact.
pub fn is_bookkeeping_key(key: &[u8]) -> bool {
    matches!(key.first(), Some(&b'C') | Some(&PREFIX_READY))
}

impl std::fmt::Debug for ReadModelDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadModelDb")
            .field("name", &self.inner.name)
            .field("path", &self.inner.path)
            .field("live", &self.live_generation())
            .field("scope", &self.scope)
            .finish()
    }
}

fn generation_cf(generation: u64) -> String {
    format!("gen-{generation:08}")
}

fn parse_generation(cf: &str) -> Option<u64> {
    cf.strip_prefix("gen-")?.parse().ok()
}

fn u64_value(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The key of a plan's snapshot.
pub(crate) fn snapshot_key(stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 1);
    write_snapshot_key(&mut key, stream);
    key
}

/// Appends the key of a plan's snapshot to `buf`.
pub(crate) fn write_snapshot_key(buf: &mut Vec<u8>, stream: &str) {
    buf.push(PREFIX_SNAPSHOT);
    buf.extend_from_slice(stream.as_bytes());
}

/// Appends the key of a plan's event record at `version` to `buf`.
pub(crate) fn write_event_key(buf: &mut Vec<u8>, stream: &str, version: u64) {
    buf.push(PREFIX_EVENT);
    buf.extend_from_slice(stream.as_bytes());
    buf.push(0);
    buf.extend_from_slice(&version.to_be_bytes());
}

/// Appends the key of an index entry to `buf`.
pub(crate) fn write_index_key(buf: &mut Vec<u8>, index: &[u8]) {
    buf.push(PREFIX_INDEX);
    buf.extend_from_slice(index);
}

/// The prefix of a plan's event records.
fn events_prefix(stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 10);
    key.push(PREFIX_EVENT);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key
}

/// The key of an index entry.
pub(crate) fn index_key(index: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(index.len() + 1);
    key.push(PREFIX_INDEX);
    key.extend_from_slice(index);
    key
}

/// The smallest key greater than every key starting with `prefix` (which ends in NUL).
fn upper_bound(prefix: &[u8]) -> Vec<u8> {
    let mut bound = prefix.to_vec();
    if let Some(last) = bound.last_mut() {
        *last += 1;
    }
    bound
}

fn cf_options() -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_block_cache(&Cache::new_lru_cache(32 * 1024 * 1024));
    let mut options = Options::default();
    options.set_block_based_table_factory(&table);
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Rebuilds write hundreds of megabytes quickly: fewer, larger flushes.
    options.set_write_buffer_size(128 * 1024 * 1024);
    options.set_max_write_buffer_number(3);
    options
}

impl ReadModelDb {
    /// Opens (or creates) the read model `name` in `path`; a new database starts with an
    /// empty live generation 1.
    pub fn open(path: impl AsRef<Path>, name: &str) -> Result<Self, ProjectionError> {
        let path = path.as_ref();
        std::fs::create_dir_all(path).map_err(|e| ProjectionError::Locked {
            path: path.display().to_string(),
            detail: format!("cannot create the directory: {e}"),
        })?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.increase_parallelism(2);
        options.set_max_background_jobs(2);
        let existing = Rocks::list_cf(&options, path).unwrap_or_else(|_| vec!["default".into()]);
        let descriptors = existing
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf, cf_options()));
        let db = Rocks::open_cf_descriptors(&options, path, descriptors).map_err(|e| {
            let text = e.to_string();
            if text.to_ascii_lowercase().contains("lock") {
                ProjectionError::Locked {
                    path: path.display().to_string(),
                    detail: text,
                }
            } else {
                ProjectionError::Db(e)
            }
        })?;
        match db.get(META_FORMAT)? {
            None => db.put(META_FORMAT, FORMAT)?,
            Some(found) if found == FORMAT => {}
            Some(found) => {
                return Err(ProjectionError::CorruptRecord {
                    projection: name.to_owned(),
                    key: "format".into(),
                    detail: format!(
                        "unknown read-model format {:?}; this build reads {:?}",
                        String::from_utf8_lossy(&found),
                        String::from_utf8_lossy(FORMAT)
                    ),
                });
            }
        }
        let this = Self {
            inner: Arc::new(Inner {
                db,
                path: path.to_path_buf(),
                name: name.to_owned(),
                live: AtomicU64::new(0),
                quarantines: RwLock::default(),
                switching: std::sync::Mutex::new(()),
                left: std::sync::Mutex::default(),
            }),
            scope: None,
        };
        this.load_quarantines()?;
        let live = match this.meta_u64(META_LIVE)? {
            Some(live) => live,
            None => {
                // A new database (or one whose first open was cut short after creating it).
                if this.cf(1).is_none() {
                    this.inner.db.create_cf(generation_cf(1), &cf_options())?;
                }
                let mut options = WriteOptions::default();
                options.set_sync(true);
                this.inner
                    .db
                    .put_opt(META_LIVE, 1u64.to_be_bytes(), &options)?;
                1
            }
        };
        if this.cf(live).is_none() {
            return Err(this.corrupt("live", format!("generation {live} has no column family")));
        }
        this.inner.live.store(live, Ordering::Release);
        this.drop_stale_generations()?;
        Ok(this)
    }

    fn corrupt(&self, key: &str, detail: impl Into<String>) -> ProjectionError {
        ProjectionError::CorruptRecord {
            projection: self.inner.name.clone(),
            key: key.to_owned(),
            detail: detail.into(),
        }
    }

    fn meta_u64(&self, key: &[u8]) -> Result<Option<u64>, ProjectionError> {
        match self.inner.db.get(key)? {
            None => Ok(None),
            Some(bytes) => u64_value(&bytes)
                .map(Some)
                .ok_or_else(|| self.corrupt(&String::from_utf8_lossy(key), "not an 8-byte number")),
        }
    }

    /// Generations left behind by a crash between a switch and the drop of the old one, or by
    /// an abandoned rebuild: neither live nor building.
    fn drop_stale_generations(&self) -> Result<(), ProjectionError> {
        let live = self.live_generation();
        let building = self.building_generation()?;
        let existing = Rocks::list_cf(&Options::default(), &self.inner.path)?;
        for cf in existing {
            if let Some(generation) = parse_generation(&cf)
                && generation != live
                && Some(generation) != building
            {
                tracing::info!(projection = %self.inner.name, generation, "dropping a stale read-model generation");
                self.inner.db.drop_cf(&cf)?;
            }
        }
        Ok(())
    }

    fn cf(&self, generation: u64) -> Option<Arc<BoundColumnFamily<'_>>> {
        self.inner.db.cf_handle(&generation_cf(generation))
    }

    fn cf_or_err(&self, generation: u64) -> Result<Arc<BoundColumnFamily<'_>>, ProjectionError> {
        self.cf(generation).ok_or_else(|| {
            self.corrupt(
                "generation",
                format!("generation {generation} does not exist"),
            )
        })
    }

    /// A handle for partition `partition` of `of` (cluster mode): its own checkpoint, poison
    /// record and quarantines in the same database.
    pub fn for_partition(&self, partition: u32, of: u32) -> ReadModelDb {
        assert!(partition < of, "partition {partition} of {of}");
        ReadModelDb {
            inner: Arc::clone(&self.inner),
            scope: Some(Scope { partition, of }),
        }
    }

    /// Cluster mode: records (once) that this database holds a read model of `count`
    /// partitions, and refuses a database built for another count or from a single log (its
    /// facts would sit under checkpoints that start again at 0).
    pub fn claim_partitions(&self, count: u32) -> Result<(), ProjectionError> {
        match self.meta_u64(META_PARTITIONS)? {
            Some(found) if found == u64::from(count) => Ok(()),
            Some(found) => Err(self.corrupt(
                "partitions",
                format!("this read model was built for {found} partitions, not {count}: use another data directory, or delete it to rebuild"),
            )),
            None => {
                if self.checkpoint(self.live_generation())?.position > 0 {
                    return Err(self.corrupt(
                        "partitions",
                        "this read model was built from a single log: use another data directory for cluster mode, or delete it to rebuild",
                    ));
                }
                let mut options = WriteOptions::default();
                options.set_sync(true);
                self.inner.db.put_opt(
                    META_PARTITIONS,
                    u64::from(count).to_be_bytes(),
                    &options,
                )?;
                Ok(())
            }
        }
    }

    /// Cluster mode: the partition count [`Self::claim_partitions`] recorded, if any.
    pub fn claimed_partitions(&self) -> Result<Option<u32>, ProjectionError> {
        Ok(self
            .meta_u64(META_PARTITIONS)?
            .and_then(|n| u32::try_from(n).ok()))
    }

    /// Cluster mode: how many partitions the deployment has.
    pub fn partitions(&self) -> Option<u32> {
        self.scope.map(|s| s.of)
    }

    /// The partition this handle applies, in cluster mode.
    pub fn partition(&self) -> Option<u32> {
        self.scope.map(|s| s.partition)
    }

    /// The read model's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The generation readers see.
    pub fn live_generation(&self) -> u64 {
        self.inner.live.load(Ordering::Acquire)
    }

    /// The generation a rebuild is filling, if one is in progress.
    pub fn building_generation(&self) -> Result<Option<u64>, ProjectionError> {
        self.meta_u64(META_BUILDING)
    }

    /// The checkpoint of a generation.
    pub fn checkpoint(&self, generation: u64) -> Result<Checkpoint, ProjectionError> {
        let cf = self.cf_or_err(generation)?;
        match self
            .inner
            .db
            .get_pinned_cf(&cf, checkpoint_key(self.partition()))?
        {
            None => Ok(Checkpoint::default()),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| self.corrupt("checkpoint", e.to_string())),
        }
    }

    /// The stored facts of one plan in a generation.
    pub(crate) fn load_plan(
        &self,
        generation: u64,
        stream: &str,
    ) -> Result<Option<StoredPlan>, ProjectionError> {
        let cf = self.cf_or_err(generation)?;
        let snapshot = self.inner.db.get_pinned_cf(&cf, snapshot_key(stream))?;
        let mut options = ReadOptions::default();
        let prefix = events_prefix(stream);
        options.set_iterate_upper_bound(upper_bound(&prefix));
        let tail = self.inner.db.iterator_cf_opt(
            &cf,
            options,
            IteratorMode::From(&prefix, Direction::Forward),
        );
        self.assemble(stream, snapshot.as_deref(), tail)
    }

    /// A plan from its snapshot (if any) and the event records after it.
    fn assemble(
        &self,
        stream: &str,
        snapshot: Option<&[u8]>,
        tail: impl Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>>,
    ) -> Result<Option<StoredPlan>, ProjectionError> {
        let mut stored = match snapshot {
            Some(bytes) => {
                let plan = serde_json::from_slice::<Plan>(bytes)
                    .map_err(|e| self.corrupt(stream, format!("snapshot: {e}")))?;
                Some(StoredPlan {
                    snapshot_version: plan.version,
                    snapshot_bytes: bytes.len(),
                    tail_bytes: 0,
                    plan,
                })
            }
            None => None,
        };
        for item in tail {
            let (_, bytes) = item?;
            let event = decode_event_record(&bytes)
                .map_err(|e| self.corrupt(stream, format!("event record: {e}")))?;
            let mut current = stored.take().unwrap_or_default();
            current.plan = evolve(current.plan, &event);
            current.tail_bytes += bytes.len();
            stored = Some(current);
        }
        Ok(stored)
    }

    /// Writes one commit to a generation atomically.
    pub(crate) fn commit(
        &self,
        generation: u64,
        batch: &CommitBatch<'_>,
        durability: Durability,
    ) -> Result<(), ProjectionError> {
        let cf = self.cf_or_err(generation)?;
        let mut write = WriteBatch::default();
        for staged in batch.writes.iter() {
            match staged {
                Write::Put(key, value) => write.put_cf(&cf, key, value),
                Write::Delete(key) => write.delete_cf(&cf, key),
                Write::DeleteRange(from, to) => write.delete_range_cf(&cf, from, to),
            }
        }
        let checkpoint = serde_json::to_vec(&batch.checkpoint)
            .map_err(|e| self.corrupt("checkpoint", e.to_string()))?;
        write.put_cf(&cf, checkpoint_key(self.partition()), checkpoint);
        let mut options = WriteOptions::default();
        options.set_sync(durability == Durability::Synced);
        options.disable_wal(durability == Durability::Unlogged);
        self.inner.db.write_opt(write, &options)?;
        Ok(())
    }

    fn load_quarantines(&self) -> Result<(), ProjectionError> {
        let mut found: BTreeMap<Option<u32>, BTreeMap<u64, Quarantine>> = BTreeMap::new();
        for prefix in [PREFIX_QUARANTINE, PREFIX_PARTITION_QUARANTINE] {
            let iter = self
                .inner
                .db
                .iterator(IteratorMode::From(prefix, Direction::Forward));
            for item in iter {
                let (key, value) = item?;
                let Some(rest) = key.strip_prefix(prefix) else {
                    break;
                };
                let (partition, position) = if prefix == PREFIX_QUARANTINE {
                    (None, rest)
                } else if rest.len() == 12 {
                    let (p, position) = rest.split_at(4);
                    let p = u32::from_be_bytes(p.try_into().expect("split at 4"));
                    (Some(p), position)
                } else {
                    return Err(self.corrupt("quarantine", "a key is not a partition and position"));
                };
                let position = u64_value(position)
                    .ok_or_else(|| self.corrupt("quarantine", "a key is not a position"))?;
                let record: Quarantine = serde_json::from_slice(&value)
                    .map_err(|e| self.corrupt("quarantine", e.to_string()))?;
                found.entry(partition).or_default().insert(position, record);
            }
        }
        *self
            .inner
            .quarantines
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            found.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        Ok(())
    }

    /// Every quarantined position of this handle's partition (or of the single log) and its
    /// record, in position order.
    pub fn quarantines(&self) -> Arc<BTreeMap<u64, Quarantine>> {
        self.inner
            .quarantines
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&self.partition())
            .cloned()
            .unwrap_or_default()
    }

    /// Records a quarantine durably (one synced write); every generation, live or rebuilt,
    /// passes over that position from then on. A position already quarantined keeps its
    /// first record (false is returned).
    pub fn quarantine(&self, record: Quarantine) -> Result<bool, ProjectionError> {
        let mut quarantines = self
            .inner
            .quarantines
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let partition = self.partition();
        let mine = quarantines.get(&partition).cloned().unwrap_or_default();
        if mine.contains_key(&record.position) {
            return Ok(false);
        }
        let value =
            serde_json::to_vec(&record).map_err(|e| self.corrupt("quarantine", e.to_string()))?;
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.inner
            .db
            .put_opt(quarantine_key(partition, record.position), value, &options)?;
        let mut next = BTreeMap::clone(&mine);
        next.insert(record.position, record);
        quarantines.insert(partition, Arc::new(next));
        Ok(true)
    }

    /// The event the projector last stopped at and has not got past yet, if any.
    pub fn poison(&self) -> Result<Option<Poison>, ProjectionError> {
        match self.inner.db.get(poison_key(self.partition()))? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| self.corrupt("poison", e.to_string())),
        }
    }

    /// Records (or with `None` clears) the event the projector is stopped at, so an operator
    /// can quarantine it with the service stopped.
    pub fn set_poison(&self, poison: Option<&Poison>) -> Result<(), ProjectionError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        match poison {
            Some(poison) => {
                let value = serde_json::to_vec(poison)
                    .map_err(|e| self.corrupt("poison", e.to_string()))?;
                self.inner
                    .db
                    .put_opt(poison_key(self.partition()), value, &options)?;
            }
            None => self
                .inner
                .db
                .delete_opt(poison_key(self.partition()), &options)?,
        }
        Ok(())
    }

    /// Starts a new, empty generation beside the live one and records it as being built.
    ///
    /// In cluster mode a partition joins the generation another partition's rebuild started
    /// (every partition fills the same one); a generation left by an earlier switch is dropped
    /// once every partition's runtime has moved off it ([`Self::left_generation`]), or when the
    /// database is opened again.
    pub fn start_generation(&self) -> Result<u64, ProjectionError> {
        let _switching = self.lock_switching();
        if let Some(building) = self.building_generation()? {
            if self.scope.is_some() {
                return Ok(building);
            }
            self.abandon_generation(building)?;
        }
        let existing = Rocks::list_cf(&Options::default(), &self.inner.path)?;
        let next = existing
            .iter()
            .filter_map(|cf| parse_generation(cf))
            .max()
            .unwrap_or(0)
            .max(self.live_generation())
            + 1;
        self.inner
            .db
            .create_cf(generation_cf(next), &cf_options())?;
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.inner
            .db
            .put_opt(META_BUILDING, next.to_be_bytes(), &options)?;
        Ok(next)
    }

    /// Drops a generation that is being built (the rebuild was abandoned). In cluster mode a
    /// partition gives up only its own part: the generation stays for the others (a new rebuild
    /// replaces it).
    pub fn abandon_generation(&self, generation: u64) -> Result<(), ProjectionError> {
        if generation == self.live_generation() || self.scope.is_some() {
            return Ok(());
        }
        if self.building_generation()? == Some(generation) {
            self.inner.db.delete(META_BUILDING)?;
        }
        if self.cf(generation).is_some() {
            self.inner.db.drop_cf(&generation_cf(generation))?;
        }
        Ok(())
    }

    /// Cluster mode: records that this partition's rebuild into `generation` has caught up
    /// with its live runtime, and switches readers to it once every partition has. Returns
    /// whether `generation` is live now. The old generation is kept until every partition's
    /// runtime has moved off it (the other partitions' live runtimes may still be committing to
    /// it until they see the switch; [`Self::left_generation`] drops it then); single-node
    /// handles switch at once.
    pub fn caught_up(&self, generation: u64) -> Result<bool, ProjectionError> {
        let Some(scope) = self.scope else {
            self.switch_to(generation)?;
            return Ok(true);
        };
        let _switching = self.lock_switching();
        if self.live_generation() == generation {
            return Ok(true);
        }
        let Some(cf) = self.cf(generation) else {
            // Abandoned meanwhile (a new rebuild replaced it): nothing to switch to.
            return Ok(false);
        };
        // The rebuild wrote without the write-ahead log: its writes reach the disk before the
        // mark that vouches for them.
        self.inner.db.flush_cf(&cf)?;
        let mut key = vec![PREFIX_READY];
        key.extend_from_slice(&scope.partition.to_be_bytes());
        self.inner.db.put_cf(&cf, &key, [])?;
        let mut ready = 0usize;
        for item in self
            .inner
            .db
            .iterator_cf(&cf, IteratorMode::From(&[PREFIX_READY], Direction::Forward))
        {
            let (key, _) = item?;
            if key.first() != Some(&PREFIX_READY) {
                break;
            }
            ready += 1;
        }
        drop(cf);
        if ready < scope.of as usize {
            tracing::info!(projection = %self.inner.name, generation, partition = scope.partition, ready, of = scope.of, "partition's rebuild caught up; waiting for the others");
            return Ok(false);
        }
        self.switch_live(generation, false)?;
        Ok(true)
    }

    /// Cluster mode: this partition's runtime has moved its live model off `generation` (a
    /// coordinated rebuild made another one live), so it never commits to it again. Once every
    /// partition has, the generation is dropped: no runtime writes to it any more, and readers
    /// still holding it finish their reads (RocksDB frees its files when the last handle goes).
    /// Returns whether it was dropped now. Single-node handles drop the old generation at the
    /// switch itself.
    pub fn left_generation(&self, generation: u64) -> Result<bool, ProjectionError> {
        let Some(scope) = self.scope else {
            return Ok(false);
        };
        let _switching = self.lock_switching();
        assert_ne!(
            generation,
            self.live_generation(),
            "a partition leaves a generation only once another one is live"
        );
        let mut left = self
            .inner
            .left
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let partitions = left.entry(generation).or_default();
        partitions.insert(scope.partition);
        if partitions.len() < scope.of as usize {
            return Ok(false);
        }
        left.remove(&generation);
        if self.building_generation()? == Some(generation) || self.cf(generation).is_none() {
            return Ok(false);
        }
        tracing::info!(projection = %self.inner.name, generation, "every partition moved off the old read-model generation; dropping it");
        self.inner.db.drop_cf(&generation_cf(generation))?;
        Ok(true)
    }

    fn lock_switching(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner
            .switching
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Flushes a generation's memtables (writes made without the write-ahead log) to disk.
    pub fn flush_generation(&self, generation: u64) -> Result<(), ProjectionError> {
        let cf = self.cf_or_err(generation)?;
        self.inner.db.flush_cf(&cf)?;
        Ok(())
    }

    /// Makes `generation` the live one in one synced write (after flushing it, since a rebuild
    /// writes without the write-ahead log), then drops the old live generation.
    pub fn switch_to(&self, generation: u64) -> Result<(), ProjectionError> {
        self.switch_live(generation, true)
    }

    fn switch_live(&self, generation: u64, drop_old: bool) -> Result<(), ProjectionError> {
        let cf = self.cf_or_err(generation)?;
        self.inner.db.flush_cf(&cf)?;
        drop(cf);
        let old = self.live_generation();
        let mut write = WriteBatch::default();
        write.put(META_LIVE, generation.to_be_bytes());
        write.delete(META_BUILDING);
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.inner.db.write_opt(write, &options)?;
        self.inner.live.store(generation, Ordering::Release);
        if drop_old && old != generation && self.cf(old).is_some() {
            // Readers still holding the old handle finish their reads; RocksDB frees the
            // files when the last handle goes.
            self.inner.db.drop_cf(&generation_cf(old))?;
        }
        tracing::info!(projection = %self.inner.name, from = old, to = generation, "switched read-model generation");
        Ok(())
    }

    /// Whether RocksDB is flushing or compacting this read model (e.g. after a rebuild), for
    /// benchmarks and operators who want a quiet baseline.
    pub fn background_busy(&self) -> Result<bool, ProjectionError> {
        let db = &self.inner.db;
        let running = db
            .property_int_value("rocksdb.num-running-compactions")?
            .unwrap_or(0)
            + db.property_int_value("rocksdb.num-running-flushes")?
                .unwrap_or(0);
        let pending = match self.cf(self.live_generation()) {
            Some(cf) => db
                .property_int_value_cf(&cf, "rocksdb.compaction-pending")?
                .unwrap_or(0),
            None => 0,
        };
        Ok(running + pending > 0)
    }

    /// Every key and value of a generation, in key order: for verification and tests
    /// ("the rebuilt model is byte-identical").
    pub fn dump_generation(&self, generation: u64) -> Result<Vec<Record>, ProjectionError> {
        let cf = self.cf_or_err(generation)?;
        let mut out = Vec::new();
        for item in self.inner.db.iterator_cf(&cf, IteratorMode::Start) {
            let (key, value) = item?;
            out.push((key.to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    /// A consistent view of the live generation for one query.
    pub fn view(&self) -> Result<ReadView<'_>, ProjectionError> {
        // A switch may drop the generation between reading `live` and taking its handle; the
        // second attempt sees the new live generation.
        for _ in 0..3 {
            let generation = self.live_generation();
            if let Some(cf) = self.cf(generation) {
                let snapshot = self.inner.db.snapshot();
                return Ok(ReadView {
                    db: self,
                    cf,
                    snapshot,
                    generation,
                });
            }
        }
        Err(self.corrupt("live", "the live generation keeps disappearing"))
    }
}

/// A point-in-time view of the live generation: every read in it sees the same checkpoint.
pub struct ReadView<'a> {
    db: &'a ReadModelDb,
    cf: Arc<BoundColumnFamily<'a>>,
    snapshot: rocksdb::SnapshotWithThreadMode<'a, Rocks>,
    generation: u64,
}

impl ReadView<'_> {
    /// The generation this view reads.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The checkpoint the view reflects (its handle's partition's, in cluster mode).
    pub fn checkpoint(&self) -> Result<Checkpoint, ProjectionError> {
        self.checkpoint_of(self.db.partition())
    }

    /// The checkpoint of `partition` (`None`: the single log's) the view reflects.
    pub fn checkpoint_of(&self, partition: Option<u32>) -> Result<Checkpoint, ProjectionError> {
        match self
            .snapshot
            .get_pinned_cf(&self.cf, checkpoint_key(partition))?
        {
            None => Ok(Checkpoint::default()),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| self.db.corrupt("checkpoint", e.to_string())),
        }
    }

    /// The facts of one plan (`<tenant>/<plan_id>`), if the model has seen it.
    pub fn plan(&self, stream: &str) -> Result<Option<Plan>, ProjectionError> {
        let snapshot = self
            .snapshot
            .get_pinned_cf(&self.cf, snapshot_key(stream))?;
        let mut options = ReadOptions::default();
        options.set_snapshot(&self.snapshot);
        let prefix = events_prefix(stream);
        options.set_iterate_upper_bound(upper_bound(&prefix));
        let tail = self.db.inner.db.iterator_cf_opt(
            &self.cf,
            options,
            IteratorMode::From(&prefix, Direction::Forward),
        );
        Ok(self
            .db
            .assemble(stream, snapshot.as_deref(), tail)?
            .map(|stored| stored.plan))
    }

    /// Streams starting with `prefix` (e.g. `<tenant>/`) that the model holds facts for, in key
    /// order, after the stream `after` (exclusive), at most `limit`.
    ///
    /// A plan is a snapshot record, event records, or both: both ranges are walked, and the
    /// event records with a seek past each stream's last one, so a page costs one seek per
    /// stream, not one step per event.
    pub fn streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, ProjectionError> {
        let mut found = std::collections::BTreeSet::new();
        for kind in [PREFIX_SNAPSHOT, PREFIX_EVENT] {
            let mut key = vec![kind];
            key.extend_from_slice(after.unwrap_or(prefix).as_bytes());
            if after.is_some() {
                // Past `after` itself: its snapshot key and its event records (NUL + version).
                key.push(1);
            }
            let mut options = ReadOptions::default();
            options.set_snapshot(&self.snapshot);
            let mut iter = self.db.inner.db.raw_iterator_cf_opt(&self.cf, options);
            iter.seek(&key);
            let mut taken = 0;
            while taken < limit {
                let Some(raw) = iter.key() else { break };
                let Some(rest) = raw.strip_prefix(&[kind][..]) else {
                    break;
                };
                let name = match rest.iter().position(|b| *b == 0) {
                    Some(end) => &rest[..end],
                    None => rest,
                };
                let Ok(stream) = std::str::from_utf8(name) else {
                    break;
                };
                if !stream.starts_with(prefix) {
                    break;
                }
                found.insert(stream.to_owned());
                taken += 1;
                let mut next = vec![kind];
                next.extend_from_slice(name);
                next.push(1);
                iter.seek(&next);
            }
            iter.status()?;
        }
        Ok(found.into_iter().take(limit).collect())
    }

    /// Index keys starting with `prefix`, without the prefix, in key order.
    pub fn index_suffixes(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, ProjectionError> {
        let start = index_key(prefix);
        let mut options = ReadOptions::default();
        options.set_snapshot(&self.snapshot);
        let iter = self.db.inner.db.iterator_cf_opt(
            &self.cf,
            options,
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (key, _) = item?;
            let Some(suffix) = key.strip_prefix(start.as_slice()) else {
                break;
            };
            out.push(suffix.to_vec());
        }
        Ok(out)
    }
}
