//! The Planledger event log on RocksDB.
//!
//! This crate knows streams, envelopes and bytes; it never learns what a plan is. It provides:
//! group-commit appends with optimistic concurrency and idempotency by command id, a gap-free
//! global log, per-stream indexes, a SHA-256 hash chain with [`EventStore::verify`], snapshots
//! and named checkpoints. [`LogReader`] reads a log another process is writing, without its lock.
//!
//! Invariants (tested in `tests/`):
//! - an answered append is on disk (its batch was written and the write-ahead log synced
//!   before any answer);
//! - global positions are gap-free and strictly increasing, `recorded_at` is non-decreasing;
//! - each stream's versions are 1..n with no gaps;
//! - a repeated command id appends nothing and returns the first result;
//! - `hash = sha256(prev_hash || canonical envelope)`, so changing any stored byte is detected;
//! - the Merkle tree ([`merkle`]) covers exactly the log's positions: its nodes are written in
//!   the batch of the event that completes them.

#[cfg(feature = "bench")]
mod backup;
pub mod bench;
mod commit;
mod envelope;
mod error;
mod ids;
mod keys;
mod log;
pub mod merkle;
mod partition;
mod reader;
mod view;
mod writer;

pub use backup::{LogCopy, LogSummary, checkpoint_closed};
pub use commit::{
    CommandHeader, Commit, CommitError, CommitEvent, CommittedEvent, Committer, MAX_COMMIT_EVENTS,
};
pub use envelope::{Envelope, GENESIS_HASH, NewEvent, continues_append};
pub use error::StoreError;
pub use ids::{ExpectedVersion, MAX_STREAM_ID_LEN, Position, StreamId, Version};
pub use log::{
    CommandLookup, EventStore, LogHealth, RawEntry, ReadDirection, SharedMemory, StoreOptions,
    VerifyReport,
};
pub use merkle::stored::{TreeMismatch, TreeReport};
pub use partition::{MAX_PARTITIONS, Partition, PartitionCount};
pub use reader::LogReader;
pub use view::LogView;
pub use writer::{
    AppendMeta, AppendOutcome, AppendRequest, CommandRef, MAX_BATCH_REQUESTS, SyncFault,
    WriteFailure, WriterStats,
};
