//! Reads of the log's column families, shared by the writing [`EventStore`] and the read-only
//! [`LogReader`](crate::LogReader): one [`LogView`] per read, capped at a durable position.
//!
//! The storage invariants of ARCHITECTURE.md hold here: `streams` is read forwards within one
//! stream only, `heads` by point lookups only.

use std::ops::ControlFlow;

use jiff::Timestamp;
use rocksdb::{DB, Direction, IteratorMode, ReadOptions};

use crate::keys::{self, CF_HEADS, CF_LOG, CF_SNAPSHOTS, CF_STREAMS};
use crate::log::{RawEntry, cf, corrupt, decode_envelope};
use crate::{Envelope, Position, ReadDirection, StoreError, StreamId, Version};

/// Bytes RocksDB reads ahead when a scan walks the `log` column family in order.
const SCAN_READAHEAD_BYTES: usize = 4 * 1024 * 1024;

/// The log as of one read: every read through it stops at `durable`, the last position it may
/// show (global reads never go past it; stream reads are capped by their callers).
///
/// [`EventStore`](crate::EventStore) hands one out per call (`view`), capped at its last
/// durable position; [`LogReader`](crate::LogReader) at the last position it has caught up to.
#[derive(Clone, Copy)]
pub struct LogView<'a> {
    db: &'a DB,
    durable: Position,
}

impl std::fmt::Debug for LogView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogView")
            .field("durable", &self.durable)
            .finish()
    }
}

impl<'a> LogView<'a> {
    pub(crate) fn new(db: &'a DB, durable: Position) -> Self {
        Self { db, durable }
    }

    /// The database read (for the Merkle tree's reads, in `merkle::stored`).
    pub(crate) fn db(&self) -> &'a DB {
        self.db
    }

    /// The last position this view shows (0 when the log is empty).
    pub fn last_position(&self) -> Position {
        self.durable
    }

    /// Calls `visit` with the position and stored bytes of every entry from `from` through
    /// `to` (both inclusive, `to` capped at the last position), in order, through one iterator
    /// that reads ahead and leaves the block cache alone (a bulk scan, for exports). Stops early
    /// when `visit` breaks; returns the last position visited (0 if none).
    pub fn scan_raw<E>(
        &self,
        from: Position,
        to: Position,
        mut visit: impl FnMut(Position, &[u8]) -> Result<ControlFlow<()>, E>,
    ) -> Result<Position, E>
    where
        E: From<StoreError>,
    {
        let from = Position(from.0.max(1));
        let to = to.min(self.durable);
        let mut last = Position(0);
        if from > to {
            return Ok(last);
        }
        let mut read = ReadOptions::default();
        read.fill_cache(false);
        read.set_readahead_size(SCAN_READAHEAD_BYTES);
        // The bound stops the iterator at `to` without a key comparison per entry here.
        read.set_iterate_upper_bound(keys::log_key(Position(to.0 + 1)).to_vec());
        let mut iter = self.db.raw_iterator_cf_opt(cf(self.db, CF_LOG), read);
        iter.seek(keys::log_key(from));
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            let position =
                keys::decode_u64(key).ok_or_else(|| corrupt("log key", "not 8 bytes"))?;
            last = Position(position);
            if visit(last, value)?.is_break() {
                return Ok(last);
            }
            iter.next();
        }
        iter.status().map_err(StoreError::from)?;
        Ok(last)
    }

    /// The stream's current version (0 when it has no events).
    pub fn stream_version(&self, stream: &StreamId) -> Result<Version, StoreError> {
        match self
            .db
            .get_pinned_cf(cf(self.db, CF_HEADS), stream.as_str())?
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
        let durable = self.durable.0;
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
        let iter = self.db.iterator_cf_opt(
            cf(self.db, CF_LOG),
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
        let iter = self.db.iterator_cf_opt(
            cf(self.db, CF_LOG),
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
            .db
            .get_pinned_cf(cf(self.db, CF_STREAMS), &key)?
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
            .db
            .get_pinned_cf(cf(self.db, CF_LOG), keys::log_key(position))?
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
        for item in self.db.iterator_cf_opt(
            cf(self.db, CF_STREAMS),
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
        let log = cf(self.db, CF_LOG);
        for (key, value) in
            positions
                .iter()
                .zip(self.db.batched_multi_get_cf(log, positions.iter(), false))
        {
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
        let (mut low, mut high) = (0u64, self.durable.0);
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

    /// The newest snapshot of a stream at or below `version`.
    pub fn latest_snapshot(
        &self,
        stream: &StreamId,
        version: Version,
    ) -> Result<Option<(Version, Vec<u8>)>, StoreError> {
        let prefix = keys::stream_prefix(stream);
        let start = keys::stream_version_key(stream, version);
        let mut iter = self.db.iterator_cf(
            cf(self.db, CF_SNAPSHOTS),
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
}
