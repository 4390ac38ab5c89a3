//! Column families and the byte layout of their keys.

use rocksdb::{ColumnFamily, DB, WriteBatch};

use crate::{MAX_STREAM_ID_LEN, Position, StreamId, Version};

/// Global position (u64 BE) -> envelope JSON.
pub const CF_LOG: &str = "log";
/// Stream id, NUL, version (u64 BE) -> position (u64 BE).
pub const CF_STREAMS: &str = "streams";
/// Stream id -> current version (u64 BE).
pub const CF_HEADS: &str = "heads";
/// Scope, NUL, command id -> the first result (JSON).
pub const CF_COMMANDS: &str = "commands";
/// Stream id, NUL, version (u64 BE) -> snapshot bytes.
pub const CF_SNAPSHOTS: &str = "snapshots";
/// Checkpoint name -> position (u64 BE).
pub const CF_CHECKPOINTS: &str = "checkpoints";
/// Format marker and other single values.
pub const CF_META: &str = "meta";
/// Merkle tree: level (u8), index (u64 BE) -> the 32-byte hash of that perfect subtree.
pub const CF_MERKLE: &str = "merkle";

/// Every column family the log opens.
pub const ALL_CFS: [&str; 8] = [
    CF_LOG,
    CF_STREAMS,
    CF_HEADS,
    CF_COMMANDS,
    CF_SNAPSHOTS,
    CF_CHECKPOINTS,
    CF_META,
    CF_MERKLE,
];

/// Key of a stream's version in `streams` or `snapshots`: the stream id, a NUL and the version
/// (u64 BE), built on the stack (ids are at most [`MAX_STREAM_ID_LEN`] bytes), since an append
/// writes one per event.
pub fn stream_version_key(stream: &StreamId, version: Version) -> StreamVersionKey {
    let id = stream.as_str().as_bytes();
    let mut bytes = [0u8; MAX_STREAM_ID_LEN + 9];
    bytes[..id.len()].copy_from_slice(id);
    bytes[id.len() + 1..id.len() + 9].copy_from_slice(&version.to_be_bytes());
    StreamVersionKey {
        bytes,
        len: id.len() + 9,
    }
}

/// A key built by [`stream_version_key`].
pub struct StreamVersionKey {
    bytes: [u8; MAX_STREAM_ID_LEN + 9],
    len: usize,
}

impl std::ops::Deref for StreamVersionKey {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl AsRef<[u8]> for StreamVersionKey {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// The prefix all of a stream's keys share: the id and a NUL (ids never hold NUL).
pub fn stream_prefix(stream: &StreamId) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.as_str().len() + 9);
    key.extend_from_slice(stream.as_str().as_bytes());
    key.push(0);
    key
}

/// The stream part of a `streams` key (all but the 8-byte version): the prefix by which its
/// memtable groups keys. Total, as RocksDB calls it without asking [`is_version_key`] first.
pub fn stream_of_version_key(key: &[u8]) -> &[u8] {
    &key[..key.len().saturating_sub(8)]
}

/// Whether a key has the shape of a `streams` key (a stream part and an 8-byte version).
pub fn is_version_key(key: &[u8]) -> bool {
    key.len() > 8
}

/// Key of an idempotency record.
pub fn command_key(scope: &str, command_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(scope.len() + command_id.len() + 1);
    key.extend_from_slice(scope.as_bytes());
    key.push(0);
    key.extend_from_slice(command_id.as_bytes());
    key
}

/// Decodes a big-endian u64 value or key suffix.
pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = bytes.get(bytes.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// Key of a log entry.
pub fn log_key(position: Position) -> [u8; 8] {
    position.to_be_bytes()
}

/// Key of a Merkle tree node: its level, then its index (u64 BE), so a level's nodes sort in
/// order.
pub fn merkle_key(level: u8, index: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = level;
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The column families an append writes, looked up once per batch rather than once per key
/// (a lookup is a search of the database's map of names).
pub(crate) struct AppendCfs<'a> {
    log: &'a ColumnFamily,
    streams: &'a ColumnFamily,
    heads: &'a ColumnFamily,
    /// Idempotency records (written by the writer only).
    pub(crate) commands: &'a ColumnFamily,
    merkle: &'a ColumnFamily,
}

impl<'a> AppendCfs<'a> {
    pub(crate) fn of(db: &'a DB) -> Self {
        Self {
            log: crate::log::cf(db, CF_LOG),
            streams: crate::log::cf(db, CF_STREAMS),
            heads: crate::log::cf(db, CF_HEADS),
            commands: crate::log::cf(db, CF_COMMANDS),
            merkle: crate::log::cf(db, CF_MERKLE),
        }
    }
}

/// Adds an event's `log` entry and its `streams` index entry to `batch`: what an append writes
/// per event (the writer, and the benchmarks' `PlainLog` through `bench::AppendKeys`, both write
/// through here).
pub(crate) fn put_event(
    cfs: &AppendCfs<'_>,
    batch: &mut WriteBatch,
    position: Position,
    stream: &StreamId,
    version: Version,
    envelope: &[u8],
) {
    batch.put_cf(cfs.log, log_key(position), envelope);
    batch.put_cf(
        cfs.streams,
        stream_version_key(stream, version),
        position.to_be_bytes(),
    );
}

/// Adds a stream's `heads` entry to `batch` (once per append, its last version; of several
/// appends to a stream in one batch, RocksDB keeps the last written).
pub(crate) fn put_head(
    cfs: &AppendCfs<'_>,
    batch: &mut WriteBatch,
    stream: &StreamId,
    version: Version,
) {
    batch.put_cf(cfs.heads, stream.as_str(), version.to_be_bytes());
}

/// Adds a Merkle tree node to `batch` (the nodes an event completes go in its batch).
pub(crate) fn put_node(
    cfs: &AppendCfs<'_>,
    batch: &mut WriteBatch,
    level: u8,
    index: u64,
    hash: &[u8; 32],
) {
    batch.put_cf(cfs.merkle, merkle_key(level, index), hash);
}
