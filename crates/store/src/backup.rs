//! Copies of a log for backups: a RocksDB checkpoint of a log (open in this process, or closed),
//! and a copy opened read-only to describe it, verify its chain and read its events back in the
//! form a commit carries them (to republish a lost partition stream).

use std::collections::HashMap;
use std::path::Path;

use jiff::Timestamp;
use rocksdb::checkpoint::Checkpoint;
use rocksdb::{DB, Direction, IteratorMode};

use crate::keys::{self, CF_COMMANDS, CF_LOG, CF_META};
use crate::log::{FORMAT, VerifyReport, cf, corrupt, database_options, recover_head};
use crate::writer::CommandRecord;
use crate::{CommandHeader, CommitEvent, Position, StoreError, StoreOptions};

/// `meta` key of the log's identity (as `log.rs` writes it).
const META_LOG_ID: &[u8] = b"log_id";

/// Checkpoints `db` into `to`, which must not exist (its parent is created).
pub(crate) fn checkpoint_db(db: &DB, to: &Path) -> Result<(), StoreError> {
    if to.exists() {
        return Err(StoreError::CopyTargetExists {
            path: to.display().to_string(),
        });
    }
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| StoreError::CopyFailed {
            path: parent.display().to_string(),
            detail: e.to_string(),
        })?;
    }
    Checkpoint::new(db)?.create_checkpoint(to)?;
    Ok(())
}

/// Checkpoints the log in `from`, which no process may hold open (its lock is taken for the
/// copy), into `to` (which must not exist).
pub fn checkpoint_closed(from: &Path, to: &Path) -> Result<(), StoreError> {
    if !from.join("CURRENT").is_file() {
        return Err(StoreError::NoLog {
            path: from.display().to_string(),
        });
    }
    let (options, descriptors) = database_options(&StoreOptions::default());
    let db = DB::open_cf_descriptors(&options, from, descriptors)?;
    checkpoint_db(&db, to)
}

/// What a log holds at its end: its identity, last position and hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSummary {
    /// The log's identity (`meta/log_id`); `None` for a log created before it existed.
    pub log_id: Option<String>,
    /// The last position (0 when the log is empty).
    pub last_position: Position,
    /// The last event's hash ([`crate::GENESIS_HASH`] when the log is empty).
    pub last_hash: String,
    /// When the last event was recorded.
    pub last_recorded_at: Option<Timestamp>,
}

/// A log no process writes (a backup, a stopped node's cache), opened read-only.
pub struct LogCopy {
    db: DB,
}

impl std::fmt::Debug for LogCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogCopy").finish_non_exhaustive()
    }
}

impl LogCopy {
    /// Opens the log in `path` read-only (no lock taken, nothing written).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if !path.join("CURRENT").is_file() {
            return Err(StoreError::NoLog {
                path: path.display().to_string(),
            });
        }
        let (options, descriptors) = database_options(&StoreOptions::default());
        // A log written before a column family existed (a backup taken by an older version,
        // without `merkle`) does not have it, and a read-only open cannot create it: open the
        // ones it has. Nothing here reads the tree; the log that is restored from the copy
        // builds it when it is opened.
        let present = DB::list_cf(&options, path)?;
        let descriptors: Vec<_> = descriptors
            .into_iter()
            .filter(|descriptor| present.iter().any(|name| name == descriptor.name()))
            .collect();
        let db = DB::open_cf_descriptors_read_only(&options, path, descriptors, false)?;
        match db.get_cf(cf(&db, CF_META), b"format")? {
            Some(found) if found == FORMAT => Ok(Self { db }),
            found => Err(corrupt(
                "meta/format",
                format!(
                    "unknown log format {:?}; this build reads {:?}",
                    found.map(|f| String::from_utf8_lossy(&f).into_owned()),
                    String::from_utf8_lossy(FORMAT)
                ),
            )),
        }
    }

    /// The log's identity and its last event.
    pub fn summary(&self) -> Result<LogSummary, StoreError> {
        let head = recover_head(&self.db)?;
        let log_id = self
            .db
            .get_cf(cf(&self.db, CF_META), META_LOG_ID)?
            .map(|id| String::from_utf8(id).map_err(|e| corrupt("meta/log_id", e)))
            .transpose()?;
        Ok(LogSummary {
            log_id,
            last_position: head.position,
            last_hash: crate::envelope::hex_text(&head.hash).to_string(),
            last_recorded_at: (head.position.get() > 0).then_some(head.recorded_at),
        })
    }

    /// Walks the whole chain, as [`crate::EventStore::verify`] does.
    pub fn verify(&self, progress: impl FnMut(Position)) -> Result<VerifyReport, StoreError> {
        let last = recover_head(&self.db)?.position;
        crate::log::verify_chain(&self.db, last, None, progress)
    }

    /// The idempotency record each remembered append carries on its first event, by that
    /// event's position (what a commit of the append put in its first message's headers).
    pub fn command_headers(&self) -> Result<HashMap<Position, CommandHeader>, StoreError> {
        let mut headers = HashMap::new();
        for item in self
            .db
            .iterator_cf(cf(&self.db, CF_COMMANDS), IteratorMode::Start)
        {
            let (key, value) = item?;
            let Some(split) = key.iter().position(|b| *b == 0) else {
                return Err(corrupt("command key", "no separator"));
            };
            let scope = String::from_utf8(key[..split].to_vec())
                .map_err(|e| corrupt("command key scope", e))?;
            let id = String::from_utf8(key[split + 1..].to_vec())
                .map_err(|e| corrupt("command key id", e))?;
            let record: CommandRecord =
                serde_json::from_slice(&value).map_err(|e| corrupt("command record", e))?;
            headers.insert(
                record.first_position,
                CommandHeader {
                    scope,
                    id,
                    fingerprint: record.fingerprint,
                },
            );
        }
        Ok(headers)
    }

    /// Up to `max` events after `after`, as a commit carries them (stored JSON, stream, type and
    /// the command header from `headers` on an append's first event).
    pub fn commit_events(
        &self,
        after: Position,
        max: usize,
        headers: &HashMap<Position, CommandHeader>,
    ) -> Result<Vec<CommitEvent>, StoreError> {
        let mut events = Vec::with_capacity(max.min(4096));
        let from = keys::log_key(Position(after.get() + 1));
        let iter = self.db.iterator_cf(
            cf(&self.db, CF_LOG),
            IteratorMode::From(&from, Direction::Forward),
        );
        for item in iter.take(max) {
            let (key, value) = item?;
            let position =
                keys::decode_u64(&key).ok_or_else(|| corrupt("log key", "not 8 bytes"))?;
            let envelope = crate::log::decode_envelope(position, &value)?;
            events.push(CommitEvent {
                position: Position(position),
                stream: envelope.stream,
                event_type: envelope.event_type,
                stored: value.into_vec(),
                command: headers.get(&Position(position)).cloned(),
            });
        }
        Ok(events)
    }
}
