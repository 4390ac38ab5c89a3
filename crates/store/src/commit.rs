//! How an append becomes durable: the local write-ahead log's fsync, or an external committer.
//!
//! With [`Commit::LocalFsync`] (one node, the default) the writer writes each batch into
//! RocksDB and the syncer fsyncs the write-ahead log before anyone is answered.
//!
//! With [`Commit::External`] (cluster mode) a replicated log elsewhere is the truth and this
//! database is a verified cache of it. The writer prepares each batch exactly as before
//! (checks, positions, hashes, the `WriteBatch`) but does not write it: the committer thread
//! hands the batch's events to the [`Committer`], which appends them to the truth only if the
//! truth still ends at the position before the batch (a compare-and-append), and only after
//! that acknowledgement is the batch written into RocksDB and answered. So the local log is
//! always a prefix of the truth, and a writer whose view of the truth is stale cannot get a
//! single append acknowledged: the truth's compare-and-append is the fence.
//!
//! This crate never speaks NATS: the JetStream implementation of [`Committer`] lives in the
//! bus crate.

use std::sync::Arc;

use crate::{Envelope, Position, StreamId};

/// Most events one commit carries: the atomic batch limit of the truth (JetStream's default
/// is 1,000 messages per atomic batch). Appends are never split across commits.
pub const MAX_COMMIT_EVENTS: usize = 1000;

/// How appends become durable.
#[derive(Clone, Default)]
pub enum Commit {
    /// Write the batch into RocksDB and fsync its write-ahead log before answering (one node).
    #[default]
    LocalFsync,
    /// Commit the batch to an external replicated log first; RocksDB is a cache of it.
    External(Arc<dyn Committer>),
}

impl std::fmt::Debug for Commit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LocalFsync => f.write_str("LocalFsync"),
            Self::External(committer) => write!(f, "External({})", committer.describe()),
        }
    }
}

impl Commit {
    /// Whether appends are committed externally (cluster mode).
    pub fn is_external(&self) -> bool {
        matches!(self, Self::External(_))
    }
}

/// The idempotency record an append carries on its first event, so a cache rebuilt from the
/// truth answers a repeated command id as the writer that appended it would.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandHeader {
    /// The namespace the id is unique in.
    pub scope: String,
    /// The client's command id.
    pub id: String,
    /// The digest of the command's content.
    pub fingerprint: Option<String>,
}

/// One event handed to the committer: its stored JSON (the bytes the hash chain covers), with
/// what a message's subject and headers need without parsing it.
#[derive(Clone, Debug)]
pub struct CommitEvent {
    /// Its position in the log (== the truth's sequence).
    pub position: Position,
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Its type name.
    pub event_type: String,
    /// The stored envelope JSON, byte for byte.
    pub stored: Vec<u8>,
    /// On the first event of an append that remembers its command id: the record to rebuild.
    pub command: Option<CommandHeader>,
}

/// One event read back from the truth, to be applied to the cache.
#[derive(Clone, Debug)]
pub struct CommittedEvent {
    /// The envelope, as the truth holds it (its stored JSON is its serde rendering).
    pub envelope: Envelope,
    /// The idempotency record, on the first event of an append that carries one.
    pub command: Option<CommandHeader>,
}

/// Why a commit did not succeed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CommitError {
    /// The truth refused the batch: it no longer ends where this writer thought (another writer
    /// appended first). Nothing of the batch was stored.
    #[error("the partition's log refused the append (another writer appended first): {0}")]
    Refused(String),
    /// The batch may or may not have been stored (a timeout or a lost connection after it was
    /// sent).
    #[error("the partition's log did not confirm the append: {0}")]
    Unknown(String),
    /// The truth could not be reached; nothing was sent.
    #[error("the partition's log cannot be reached: {0}")]
    Unavailable(String),
}

/// An external replicated log that commits batches with a compare-and-append.
///
/// Called from the store's own threads (never from an async task), so implementations block;
/// each call is bounded by the implementation's timeouts.
pub trait Committer: Send + Sync + 'static {
    /// A short description for logs (e.g. the stream's name).
    fn describe(&self) -> String;

    /// Appends `events` (positions `expected_last + 1 ..`, in order, at most
    /// [`MAX_COMMIT_EVENTS`]) as one atomic unit, only if the truth's last position is
    /// `expected_last`; returns once the truth acknowledged it at exactly those positions.
    fn commit(&self, expected_last: Position, events: &[CommitEvent]) -> Result<(), CommitError>;

    /// The truth's last position (0 when empty).
    fn last_position(&self) -> Result<Position, CommitError>;

    /// Up to `max` events of the truth after `after`, in order and without gaps (fewer only at
    /// its end).
    fn read_after(&self, after: Position, max: usize) -> Result<Vec<CommittedEvent>, CommitError>;
}
