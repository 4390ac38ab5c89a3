//! What the benchmarks (the `planledger-bench` crate) need of the log's internals; compiled only
//! with the `bench` feature. Its `PlainLog`, the append bench's ceiling, writes the keys an
//! append writes into a RocksDB configured exactly as the log configures it, with none of the
//! log's logic; this module gives it that database and those keys, nothing more.

use std::path::Path;

use rocksdb::{DB, WriteBatch};

use crate::keys::{self, AppendCfs};
use crate::{Position, StoreError, StoreOptions, StreamId, Version};

/// Opens (or creates) a RocksDB at `path` with the log's options and column families, as
/// [`EventStore::open`](crate::EventStore::open) opens it (and nothing else: no writer, no
/// format check, no recovery).
pub fn open_database(path: impl AsRef<Path>, options: &StoreOptions) -> Result<DB, StoreError> {
    crate::log::open_database(path.as_ref(), options)
}

/// The column families an append writes, looked up once per batch as the writer does.
pub struct AppendKeys<'a>(AppendCfs<'a>);

impl<'a> AppendKeys<'a> {
    /// The column families of a database [`open_database`] opened.
    pub fn of(db: &'a DB) -> Self {
        Self(AppendCfs::of(db))
    }

    /// Adds an event's `log` entry and its `streams` index entry to `batch`, as the writer does.
    pub fn put_event(
        &self,
        batch: &mut WriteBatch,
        position: Position,
        stream: &StreamId,
        version: Version,
        envelope: &[u8],
    ) {
        keys::put_event(&self.0, batch, position, stream, version, envelope);
    }

    /// Adds a stream's `heads` entry to `batch`, as the writer does.
    pub fn put_head(&self, batch: &mut WriteBatch, stream: &StreamId, version: Version) {
        keys::put_head(&self.0, batch, stream, version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{CF_HEADS, CF_LOG, CF_STREAMS};
    use crate::log::cf;

    #[test]
    fn append_keys_are_the_keys_an_append_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = open_database(dir.path(), &StoreOptions::default()).expect("open");
        let (a, b) = (
            StreamId::new("t/a").expect("id"),
            StreamId::new("t/b").expect("id"),
        );
        let append = AppendKeys::of(&db);
        let mut batch = WriteBatch::default();
        for (position, stream, version, bytes) in [
            (Position(1), &a, Version(1), b"one".as_slice()),
            (Position(2), &b, Version(1), b"two".as_slice()),
            (Position(3), &a, Version(2), b"three".as_slice()),
        ] {
            append.put_event(&mut batch, position, stream, version, bytes);
            append.put_head(&mut batch, stream, version);
        }
        db.write(batch).expect("write");
        let get = |family: &str, key: &[u8]| {
            db.get_cf(cf(&db, family), key)
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
