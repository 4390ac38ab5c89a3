//! Errors of the event log.

use crate::{ExpectedVersion, Position, StreamId, Version};

/// Everything that can go wrong in the log, as variants a caller can match on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A stream id broke the naming rule.
    #[error("stream id {id:?} is invalid: it must be {rule}")]
    InvalidStreamId {
        /// The rejected id.
        id: String,
        /// The rule it broke.
        rule: &'static str,
    },
    /// The stream was not at the version the appender expected.
    #[error(
        "stream {stream} is at version {current}, but the append expected {expected:?}; reload the stream and retry"
    )]
    Conflict {
        /// The stream appended to.
        stream: StreamId,
        /// What the appender expected.
        expected: ExpectedVersion,
        /// The version the stream is actually at.
        current: Version,
        /// The log's last position when the conflict was found: the append that beat this one
        /// is at or before it, so a retry waits until the log has applied this far
        /// ([`crate::EventStore::wait_applied`]) before reloading.
        log_position: Position,
    },
    /// A command id was reused for a different stream or different content.
    #[error(
        "command id {command_id:?} was already used for a different request on stream {original_stream}; use a new id for a new command"
    )]
    CommandIdReused {
        /// The reused id.
        command_id: String,
        /// The stream the first use appended to.
        original_stream: StreamId,
    },
    /// A partition count outside 1..=max.
    #[error(
        "partition count {count} is invalid: it must be 1 to {max}, fixed when the deployment is created"
    )]
    InvalidPartitionCount {
        /// The rejected count.
        count: u32,
        /// The largest accepted count.
        max: u32,
    },
    /// Cluster mode: an append carried more events than one commit of the partition's log
    /// takes.
    #[error("an append of {events} events is more than one commit takes (at most {max})")]
    AppendTooLarge {
        /// Events in the append.
        events: usize,
        /// The most one commit takes.
        max: usize,
    },
    /// An append carried no events.
    #[error("an append must carry at least one event")]
    EmptyAppend,
    /// The write path has stopped (the store was closed or its writer failed).
    #[error("the event log writer has stopped; restart the service")]
    WriterStopped,
    /// Stored bytes could not be decoded.
    #[error("stored data is corrupt at {what}: {detail}")]
    Corrupt {
        /// Where the corruption was found.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// The position asked for is past the end of the log.
    #[error("position {asked} is past the end of the log (last is {last})")]
    PositionOutOfRange {
        /// The asked-for position.
        asked: Position,
        /// The last position in the log.
        last: Position,
    },
    /// The log refused this append before writing it (after an earlier write or fsync
    /// failed); nothing of it is in the log.
    #[error("the event log refused the append: {0}; nothing was appended")]
    WriteFailed(String),
    /// The log's file system is full (or below its free-space reserve): nothing of this append
    /// was written. The message says whether appends resume by themselves once space is freed
    /// or only after a restart.
    #[error("the event log's disk is full: {0}; nothing was appended")]
    StorageFull(String),
    /// This append was written, but writing or syncing it failed: it may or may not be in the
    /// log once the service restarts.
    #[error(
        "the event log could not confirm that this append reached the disk ({0}); it may or may not be in the log: read the stream, or retry with the same command id, before sending it again"
    )]
    OutcomeUnknown(String),
    /// Cluster mode: the partition's log refused the batch because another writer appended
    /// first. Nothing of this append was stored; the writer catches up and a retry is taken.
    #[error(
        "another writer appended to this plan's partition first; nothing was appended; retry shortly"
    )]
    PartitionMoved,
    /// Cluster mode: the partition's log cannot be reached (or this node is catching up with
    /// it); nothing of this append was stored.
    #[error("this plan's partition is unavailable: {0}; nothing was appended; retry shortly")]
    PartitionUnavailable(String),
    /// Cluster mode: the local cache of the partition's log disagrees with the log itself and
    /// this node stopped serving the partition. `reason` is `cache_diverged` or
    /// `stream_behind`; an operator must act (see docs/operations.md).
    #[error("this node stopped serving the partition ({reason}): {detail}; nothing was appended")]
    PartitionHalted {
        /// `cache_diverged` or `stream_behind`.
        reason: &'static str,
        /// What was found, and what to do.
        detail: String,
    },
    /// A tree size or position outside the log's Merkle tree (or out of order).
    #[error("{field} {value} is out of range: it must be {rule}")]
    TreeRange {
        /// The parameter (`position`, `tree_size`, `from`, `to`).
        field: &'static str,
        /// The value given.
        value: u64,
        /// What it must be.
        rule: String,
    },
    /// A directory opened for reading holds no event log.
    #[error(
        "{path} holds no event log (no RocksDB CURRENT file); give the data directory of a service that has run"
    )]
    NoLog {
        /// The directory.
        path: String,
    },
    /// A copy of the log (a backup) was to be written where something already is.
    #[error("{path} already exists; copy the log to a new directory, or remove it first")]
    CopyTargetExists {
        /// The target.
        path: String,
    },
    /// A copy of the log could not be written.
    #[error(
        "copying the log failed at {path}: {detail}; check the target's file system and permissions"
    )]
    CopyFailed {
        /// Where it failed.
        path: String,
        /// The operating system's error.
        detail: String,
    },
    /// RocksDB reported an error.
    #[error("rocksdb: {0}")]
    Db(#[from] rocksdb::Error),
}
