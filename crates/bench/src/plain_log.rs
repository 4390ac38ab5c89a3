//! The append bench's ceiling: the log's RocksDB with none of the log's logic.

use std::path::Path;

use planledger_store::bench::{AppendKeys, open_database};
use planledger_store::{Position, StoreError, StoreOptions, StreamId, Version};
use rocksdb::{DB, WriteBatch};

/// The log's RocksDB, configured exactly as [`planledger_store::EventStore::open`] configures
/// it, with none of the log's logic (no writer thread, checks, envelopes or hash chain). It
/// exists to measure what RocksDB itself costs for the log's keys: `planledger-bench append`
/// compares against it.
pub struct PlainLog {
    db: DB,
}

impl PlainLog {
    /// Opens (or creates) a database at `path`.
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        Ok(Self {
            db: open_database(path, &options)?,
        })
    }

    /// Writes one batch with `sync = true`: for each event its `log`, `streams` and `heads`
    /// entries, the keys an append of one event writes.
    pub fn write_synced(
        &self,
        events: &[(Position, &StreamId, Version, &[u8])],
    ) -> Result<(), StoreError> {
        let keys = AppendKeys::of(&self.db);
        let mut batch = WriteBatch::default();
        for (position, stream, version, bytes) in events {
            keys.put_event(&mut batch, *position, stream, *version, bytes);
            keys.put_head(&mut batch, stream, *version);
        }
        let mut write = rocksdb::WriteOptions::default();
        write.set_sync(true);
        Ok(self.db.write_opt(batch, &write)?)
    }
}
