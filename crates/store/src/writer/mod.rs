//! Group commit: the one thread that owns the write path, and what makes its batches durable.
//!
//! Files by job: [`request`] (what an append asks and is answered), [`writer`] (checks, places
//! and hashes each batch), [`leaves`] (the Merkle tree's leaf hashes of a batch, taken on a
//! thread of their own while the writer prepares it), [`syncer`] (local mode: fsyncs the write-ahead log and answers),
//! [`committer`] (cluster mode: commits each batch to the partition's log; its applier thread applies it),
//! [`catch_up`] (cluster mode: applies the partition's log to the cache, verifying it), and
//! [`halt`] (what stops the write path, and the free-space reserve).
//!
//! ## Local mode ([`crate::Commit::LocalFsync`])
//!
//! Appenders send requests into a bounded inbox. The writer takes everything that is waiting,
//! checks expected versions and command ids against the database *and* the rest of the batch,
//! and writes one `WriteBatch` to RocksDB (without fsync; with `manual_wal_flush` its
//! write-ahead-log record only lands in RocksDB's in-memory log buffer). The batch's answers go
//! to the syncer thread, which calls `FlushWAL(sync)`: it writes that buffer to the file and
//! then syncs it, covering every batch written before the call, and only then has the callers
//! answered and the durable position advanced (by the answerer task on the runtime, see
//! [`Syncer`]). An answered append is therefore on disk. (A bare `SyncWAL` would not do: it
//! syncs the file without writing out the buffer.)
//!
//! The writer prepares each event's stored JSON and hash, and answers with the request itself
//! and the coordinates it assigned (an [`AppendOutcome`]); envelopes are built from those only
//! when the caller asks for them.
//!
//! A lone append under serial load (a batch of one after a batch of one, nothing at the syncer,
//! nothing in the inbox) is written with `sync = true` and answered by the writer itself: a
//! hand-over would only add a thread wake-up to its latency.
//!
//! The writer prepares and writes batch N+1 while the syncer waits for batch N's fsync. Batches
//! reach the log in order, so whenever batch N+1 is durable batch N is too; after a crash the
//! log ends at some batch boundary at or after the last answered one. A failed write or fsync
//! is fatal: every later append is refused (`WriteFailed`: nothing of it was written) until the
//! store is reopened (RocksDB stops accepting writes after a WAL sync error as well). The
//! appends of the batches that were written but not synced are answered `OutcomeUnknown`: their
//! bytes may have reached the file, so after a restart they may or may not be in the log.
//! A failure for want of space (`ENOSPC`) is the same stop, recorded as storage full so that
//! refusals say so ([`StoreError::StorageFull`]). Before that happens, a [`SpaceGuard`] keeps a
//! free-space reserve: below it whole batches are refused before anything is written, and
//! writing goes on, in the same process, once space is freed.
//!
//! ## Cluster mode ([`crate::Commit::External`])
//!
//! The writer prepares each batch as above but does not write it: the committer thread merges
//! the batches waiting (whole appends, at most [`crate::MAX_COMMIT_EVENTS`] events), hands them
//! to the [`crate::Committer`] as one compare-and-append naming the position before them, and
//! only once that is acknowledged has the applier thread write them into RocksDB (no fsync: the
//! partition's log is the truth) and answer. Exactly one commit is in flight, so the position a
//! commit names is always one this node knows to be in the truth; applying is off that cycle
//! (the next commit is sent while the applier writes the last one), and nothing is answered or
//! readable before it is applied. A refused commit (another writer got there
//! first) answers its appends and every batch prepared behind it "not appended"
//! ([`crate::StoreError::PartitionMoved`]); an unconfirmed one answers
//! [`crate::StoreError::OutcomeUnknown`]. Either way the writer then waits for the committer to
//! drain, catches the cache up from the truth ([`catch_up`]) and serves again: the cache is
//! always a prefix of the truth.

mod catch_up;
mod committer;
mod halt;
mod leaves;
mod request;
mod syncer;
#[allow(clippy::module_inception)] // the writer thread, beside the syncer and the committer
mod writer;

pub(crate) use catch_up::{CatchUp, Resync};
pub(crate) use committer::{ApplierThread, Applying, CommitterThread};
pub use halt::WriteFailure;
pub(crate) use halt::{Halt, SpaceGuard, WRITES_STOPPED, low_space_message};
pub(crate) use leaves::LeafHasher;
pub use request::{AppendMeta, AppendOutcome, AppendRequest, CommandRef, WriterStats};
pub(crate) use request::{CommandRecord, Head, Pending};
pub use syncer::SyncFault;
pub(crate) use syncer::{SYNC_QUEUE, Syncer, run_answerer};
pub use writer::MAX_BATCH_REQUESTS;
pub(crate) use writer::{Cluster, Writer};
