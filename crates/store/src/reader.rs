//! A read-only handle on a log that another process may be writing: RocksDB's secondary
//! instance, which never takes the database's lock (see docs/decisions/0003).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::{DB, IteratorMode};

use crate::keys::{self, CF_LOG, CF_META};
use crate::log::{FORMAT, META_LOG_ID, cf, corrupt, database_options};
use crate::view::LogView;
use crate::{Position, StoreError, StoreOptions};

/// Readers opened by this process so far: part of each one's private directory name.
static OPENED: AtomicU64 = AtomicU64::new(0);

/// The log of a data directory, opened to read while a service may hold it for writing.
///
/// It is a RocksDB *secondary instance*: it takes no lock, reads the writer's files and replays
/// its write-ahead log into memtables of its own, and sees later appends after
/// [`LogReader::catch_up`]. What it shows is what the writer had written to its write-ahead log
/// file when the reader last caught up: whole batches only (a batch is one atomic write), and
/// possibly a last batch whose fsync was still running (durable against a crash of the
/// writer's process, not yet against a power loss). Reads go through [`LogReader::view`], which
/// respects the same storage rules as the writer's own reads.
pub struct LogReader {
    db: DB,
    last: AtomicU64,
    // Dropped after `db`, which keeps its info log there while it is open.
    _secondary: SecondaryDir,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("last_position", &self.last_position())
            .finish()
    }
}

/// The secondary instance's own directory (its info log), removed when the reader closes.
struct SecondaryDir(PathBuf);

impl Drop for SecondaryDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl LogReader {
    /// Opens the log in `path` (the directory an [`EventStore`](crate::EventStore) opens) for
    /// reading, whether or not a service is writing it, and catches up with it.
    ///
    /// Fails with [`StoreError::NoLog`] when `path` holds no log.
    pub fn open(path: impl AsRef<Path>, options: &StoreOptions) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if !path.join("CURRENT").is_file() {
            return Err(StoreError::NoLog {
                path: path.display().to_string(),
            });
        }
        let secondary = SecondaryDir(std::env::temp_dir().join(format!(
            "planledger-log-reader-{}-{}",
            std::process::id(),
            OPENED.fetch_add(1, Ordering::Relaxed)
        )));
        std::fs::create_dir_all(&secondary.0).map_err(|e| {
            corrupt(
                format!("reader directory {}", secondary.0.display()),
                format!("cannot be created: {e}"),
            )
        })?;
        let (mut db_options, mut descriptors) = database_options(options);
        // A log whose writer has not run since a column family was added lacks it (the
        // Merkle tree's reads then say so): open the ones it has.
        let existing = DB::list_cf(&db_options, path)?;
        descriptors.retain(|descriptor| existing.iter().any(|name| name == descriptor.name()));
        db_options.create_if_missing(false);
        db_options.create_missing_column_families(false);
        // A secondary instance must keep every table file open: the writer may delete a file
        // (after a compaction) that this reader's version still refers to.
        db_options.set_max_open_files(-1);
        let db =
            DB::open_cf_descriptors_as_secondary(&db_options, path, &secondary.0, descriptors)?;
        match db.get_cf(cf(&db, CF_META), b"format")? {
            Some(found) if found == FORMAT => {}
            found => {
                return Err(corrupt(
                    "meta/format",
                    format!(
                        "unknown log format {:?}; this build reads {:?}",
                        found.map(|f| String::from_utf8_lossy(&f).into_owned()),
                        String::from_utf8_lossy(FORMAT)
                    ),
                ));
            }
        }
        let reader = Self {
            db,
            last: AtomicU64::new(0),
            _secondary: secondary,
        };
        reader.catch_up()?;
        Ok(reader)
    }

    /// Reads what the writer has written since the last catch-up and returns the log's last
    /// position now.
    pub fn catch_up(&self) -> Result<Position, StoreError> {
        self.db.try_catch_up_with_primary()?;
        // The `log` column family is an ordinary one: its last key is a seek away.
        let last = match self
            .db
            .iterator_cf(cf(&self.db, CF_LOG), IteratorMode::End)
            .next()
        {
            None => 0,
            Some(item) => {
                let (key, _) = item?;
                keys::decode_u64(&key).ok_or_else(|| corrupt("log key", "not 8 bytes"))?
            }
        };
        self.last.store(last, Ordering::SeqCst);
        Ok(Position(last))
    }

    /// The last position seen at the last catch-up (0 when the log is empty).
    pub fn last_position(&self) -> Position {
        Position(self.last.load(Ordering::SeqCst))
    }

    /// The log's identity (`meta/log_id`, as [`EventStore::log_id`](crate::EventStore::log_id)
    /// gives it to its writer): `None` for a log no build that keeps it has opened yet.
    pub fn log_id(&self) -> Result<Option<String>, StoreError> {
        self.db
            .get_cf(cf(&self.db, CF_META), META_LOG_ID)?
            .map(|id| String::from_utf8(id).map_err(|e| corrupt("meta/log_id", e)))
            .transpose()
    }

    /// The log as of the last catch-up: every read goes through it.
    pub fn view(&self) -> LogView<'_> {
        LogView::new(&self.db, self.last_position())
    }
}
