//! The writer: drains the inbox, checks and places each append, and hands the batch on (to
//! the syncer in local mode, to the committer in cluster mode).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use rocksdb::{DB, WriteBatch, WriteOptions};
use tokio::sync::{mpsc, watch};

use super::catch_up::{CatchUp, Resync};
use super::halt::{Halt, SpaceGuard, WriteFailure, copy_refusal, count_storage_full};
use super::leaves::LeafHasher;
use super::request::{
    AppendOutcome, AppendRequest, CommandRecord, Fresh, Head, Pending, Placed, SpareLists,
    WriterStats, Written,
};
use super::syncer::{SyncFault, record_sync, sync_wal};
use crate::envelope::{Canonical, hex_text, render_time, seal};
use crate::keys::{self, AppendCfs, CF_COMMANDS, CF_HEADS};
use crate::log::{cf, read_envelope_range};
use crate::merkle::{Hash, frontier::Frontier};
use crate::{CommandRef, MAX_COMMIT_EVENTS, Position, StoreError, StreamId, Version};

/// Most requests one batch takes before it is written.
pub const MAX_BATCH_REQUESTS: usize = 4096;
/// Bytes a batch holds per event besides its payload: the envelope's other fields and hashes,
/// the `streams` entry, a `heads` entry and the batch's own record headers.
const WRITE_OVERHEAD_PER_EVENT: usize = 768;

/// Most stream heads the writer keeps in memory; past this the cache starts over (a miss costs
/// one RocksDB read).
const HEAD_CACHE_MAX: usize = 1 << 20;

pub(crate) struct Writer {
    pub db: Arc<DB>,
    pub inbox: mpsc::Receiver<Pending>,
    pub head: Head,
    /// The Merkle tree's right edge, including every prepared batch (like `head`): its nodes
    /// go into each event's batch. Reloaded with `head` whenever the cache catches up.
    pub tree: Frontier,
    /// Whether the tree is kept: always, but for the append benchmark's run without it
    /// (`StoreOptions::merkle_tree`, `bench` feature only).
    pub keep_tree: bool,
    /// The leaf hashes of the batch being prepared, taken on a thread of their own.
    pub leaves: LeafHasher,
    /// The tree nodes of the batch being prepared, by level (kept for their capacity).
    pub tree_nodes: Vec<Vec<(u64, Hash)>>,
    pub stats: Arc<Mutex<WriterStats>>,
    /// Stream versions as written, so an append does not read `heads` from RocksDB. Only the
    /// writer changes heads; it updates this as it prepares each append, before the batch is
    /// written: if the write fails, nothing more is ever written, so the cache no longer
    /// matters. (A later batch may build on an earlier one whose fsync is still running: they
    /// become durable in order.) Started over only between batches, never inside one, whose
    /// heads are not in RocksDB yet.
    pub head_cache: HashMap<StreamId, Version>,
    /// Batches on their way to durability, in order: written ones awaiting their fsync (local
    /// mode), or prepared ones awaiting their commit (cluster mode).
    pub syncer: std::sync::mpsc::SyncSender<Written>,
    /// Set when a write or fsync failed (by the syncer or the writer): nothing more is written.
    pub failed: Arc<Halt>,
    /// Refuses batches while the log's file system is nearly full (`None`: no reserve kept).
    pub space: Option<Arc<SpaceGuard>>,
    /// The syncer (or committer) thread, joined when the writer stops (after its last batch is
    /// answered).
    pub syncer_thread: Option<std::thread::JoinHandle<()>>,
    /// Batches handed to the syncer (or committer) and not done yet (their answers may still
    /// be on the way).
    pub in_flight: Arc<AtomicUsize>,
    /// The last durable position, advanced as synced batches are answered (by the answerer
    /// task, or the syncer without one) and by the writer for a batch it synced itself.
    pub published: Arc<watch::Sender<Position>>,
    /// Whether the last batch was a lone append (serial load); true at the start.
    pub serial: bool,
    /// Injected sync failures (tests only).
    pub sync_fault: Option<SyncFault>,
    /// Emptied answer lists handed back by whoever answered their batch.
    pub spare_lists: SpareLists,
    /// The batch's remembered command ids: emptied after each batch, kept for its capacity.
    pub batch_commands: HashMap<Vec<u8>, FirstInBatch>,
    /// Cluster mode's state; `None` in local mode.
    pub cluster: Option<Cluster>,
    /// Cluster mode: the partition this log holds, of how many.
    pub partition: Option<(crate::PartitionCount, u32)>,
}

/// What the writer keeps in cluster mode, where a batch is applied to RocksDB only once the
/// partition's log has committed it.
pub(crate) struct Cluster {
    /// Catches the cache up with the partition's log.
    pub catch_up: CatchUp,
    /// Raised by the committer when a commit failed; the writer catches up before going on.
    pub resync: Arc<Resync>,
    /// Ends with every failed commit: batches of an ended epoch are never sent.
    pub epoch: u64,
    /// Remembered command ids of batches prepared but not applied yet (their records are not
    /// in the `commands` column family), so a repeat is recognised before it is applied.
    pub unapplied: HashMap<Vec<u8>, CommandRecord>,
    /// The keys of `unapplied` by the last position of their append, oldest first.
    pub unapplied_order: VecDeque<(Position, Vec<u8>)>,
}

impl Cluster {
    /// A writer's cluster state, starting at epoch 0.
    pub fn new(catch_up: CatchUp, resync: Arc<Resync>) -> Self {
        Self {
            catch_up,
            resync,
            epoch: 0,
            unapplied: HashMap::new(),
            unapplied_order: VecDeque::new(),
        }
    }

    /// Forgets the commands of batches applied up to `applied`.
    fn forget_applied(&mut self, applied: Position) {
        while let Some((last, _)) = self.unapplied_order.front()
            && *last <= applied
        {
            let (_, key) = self
                .unapplied_order
                .pop_front()
                .expect("the front was just seen");
            self.unapplied.remove(&key);
        }
    }
}

/// How long the writer waits for the committer to answer the batches of an ended epoch before
/// it catches up (they are answered without being sent, so this is short).
const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// The first append of a command id in the current batch.
pub(crate) struct FirstInBatch {
    /// Its index in the batch.
    index: usize,
    stream: StreamId,
    fingerprint: Option<String>,
}

/// What every append of one batch shares: its `recorded_at` (with the JSON text rendered once)
/// and the column families it writes.
struct BatchContext<'a> {
    recorded_at: Timestamp,
    recorded_text: Vec<u8>,
    cfs: AppendCfs<'a>,
}

/// An answer being prepared inside a batch.
#[allow(clippy::large_enum_variant)] // as `OutcomeEvents`
enum Answer {
    Done(Result<AppendOutcome, StoreError>),
    /// A repeat of a command whose first append is in this same batch.
    SameBatchRepeat(usize),
}

impl Writer {
    /// Runs until every sender is dropped.
    pub fn run(mut self) {
        if self.cluster.is_some() {
            self.catch_up_at_start();
        }
        let mut batch = Vec::with_capacity(64);
        // Waits for one request, then takes every one waiting (up to the limit) at once: the
        // inbox's capacity is given back once per batch, not once per request.
        while self
            .inbox
            .blocking_recv_many(&mut batch, MAX_BATCH_REQUESTS)
            > 0
        {
            if self.cluster.is_none() {
                self.commit(&mut batch);
                continue;
            }
            // Cluster mode: a batch is one commit, whole appends of at most MAX_COMMIT_EVENTS.
            while !batch.is_empty() {
                let fits = appends_fitting(&batch);
                if fits == batch.len() {
                    self.commit(&mut batch);
                } else {
                    let mut part: Vec<Pending> = batch.drain(..fits).collect();
                    self.commit(&mut part);
                }
            }
        }
        // Closing the queue lets the syncer sync and hand over what it holds, and stop.
        drop(self.syncer);
        if let Some(syncer) = self.syncer_thread.take()
            && syncer.join().is_err()
        {
            tracing::error!("the event log syncer thread panicked");
        }
        tracing::debug!("event log writer stopped");
    }

    fn commit(&mut self, batch: &mut Vec<Pending>) {
        if let Some(refusal) = self.resync_if_needed() {
            for pending in batch.drain(..) {
                let _ = pending.reply.send(Err(copy_refusal(&refusal)));
            }
            return;
        }
        if self.failed.is_stopped() {
            if matches!(self.failed.failure(), Some(WriteFailure::StorageFull(_))) {
                count_storage_full(batch.len());
            }
            for pending in batch.drain(..) {
                let _ = pending.reply.send(Err(self.failed.refusal()));
            }
            return;
        }
        if let Some(refusal) = self.space.as_ref().and_then(|guard| guard.check()) {
            // Nothing of the batch is written: its callers may send it again once space is
            // freed.
            count_storage_full(batch.len());
            for pending in batch.drain(..) {
                let _ = pending
                    .reply
                    .send(Err(StoreError::StorageFull(refusal.clone())));
            }
            return;
        }
        let started = Instant::now();
        // A lone append under serial load (the batch before was lone too) syncs itself: a
        // hand-over to the syncer would only add a thread wake-up to its latency. Under
        // concurrent load a lone append goes to the syncer like any batch, so that the next
        // fsync covers it together with whatever arrives meanwhile, instead of costing an
        // fsync of its own.
        let lone = batch.len() == 1;
        let serial = std::mem::replace(&mut self.serial, lone);
        // `failed` is read after `in_flight`: the syncer sets it before it lets go of a failed
        // batch, so a batch after a failed one is never confirmed here.
        let inline = lone
            && serial
            && self.cluster.is_none()
            && self.in_flight.load(Ordering::SeqCst) == 0
            && !self.failed.is_stopped()
            && self.inbox.is_empty();
        // Sized up front: growing a batch of hundreds of envelopes copies it several times.
        let capacity: usize = batch
            .iter()
            .flat_map(|pending| &pending.request.events)
            .map(|event| event.data.get().len() + WRITE_OVERHEAD_PER_EVENT)
            .sum();
        let mut write = WriteBatch::with_capacity_bytes(capacity);
        // The column families borrow from a handle of the batch's own, not from `self`, which
        // `prepare` borrows mutably.
        let db = self.db.clone();
        // Each append adds at most one stream to the cache: start it over here if the batch
        // could take it past its bound, since inside a batch it must keep what it has. In
        // cluster mode it must also keep the heads of batches not applied yet (RocksDB does not
        // have them), so it starts over only when none is in flight.
        if self.head_cache.len() + batch.len() > HEAD_CACHE_MAX
            && (self.cluster.is_none() || self.in_flight.load(Ordering::SeqCst) == 0)
        {
            self.head_cache.clear();
        }
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.forget_applied(*self.published.borrow());
        }
        let first_position = Position(self.head.position.0 + 1);
        // Taken out of `self` for the batch, which `prepare` borrows mutably.
        let mut commands = std::mem::take(&mut self.batch_commands);
        let mut answers = self.spare_lists.take(batch.len());
        let now = Timestamp::now();
        let recorded_at = if now > self.head.recorded_at {
            now
        } else {
            self.head.recorded_at
        };
        let mut written_events = 0usize;
        let context = BatchContext {
            recorded_at,
            recorded_text: render_time(&recorded_at),
            cfs: AppendCfs::of(&db),
        };

        let requests = batch.len();
        for (index, pending) in batch.drain(..).enumerate() {
            let answer =
                match self.prepare(index, pending.request, &context, &mut write, &mut commands) {
                    Answer::Done(result) => result,
                    // A copy of the first append's answer (its caller gets the originals).
                    Answer::SameBatchRepeat(first) => match answers.get(first) {
                        // In cluster mode the first append is committed with this batch or not
                        // at all: read back once it is applied.
                        Some((_, Ok(outcome)))
                            if !outcome.deduplicated && self.cluster.is_some() =>
                        {
                            let last = outcome.position();
                            let first = Position(last.0 + 1 - outcome.len() as u64);
                            Ok(AppendOutcome::pending_repeat(first, last))
                        }
                        // Only a fresh first append is remembered in `commands`.
                        Some((_, Ok(outcome))) if !outcome.deduplicated => {
                            Ok(AppendOutcome::repeat(outcome.envelopes()))
                        }
                        _ => Err(StoreError::WriterStopped),
                    },
                };
            if let Ok(outcome) = &answer {
                written_events += outcome.written();
            }
            answers.push((pending.reply, answer));
        }
        commands.clear();
        self.batch_commands = commands;
        if self.keep_tree {
            self.add_leaves(&context.cfs, &mut write);
        }

        let mut write_result = Ok(());
        // In cluster mode the batch is applied by the committer, after its commit.
        let mut prepared = None;
        if written_events > 0 && self.cluster.is_some() {
            prepared = Some(write);
        } else if written_events > 0 {
            // Synced by the syncer thread, which answers only after the fsync; except for a lone
            // append under serial load (see `inline` above), whose write syncs itself.
            let faulty = inline
                && self
                    .sync_fault
                    .as_ref()
                    .is_some_and(SyncFault::is_triggered);
            let mut options = WriteOptions::default();
            options.set_sync(inline && !faulty);
            write_result = self
                .db
                .write_opt(write, &options)
                .map_err(|e| e.into_string());
            if faulty && write_result.is_ok() {
                write_result = sync_wal(&self.db, self.sync_fault.as_ref());
            }
        }

        let elapsed = started.elapsed();
        if written_events > 0 && write_result.is_ok() {
            metrics::histogram!("planledger_append_batch_events").record(written_events as f64);
            metrics::histogram!("planledger_append_batch_seconds").record(elapsed.as_secs_f64());
            metrics::counter!("planledger_events_appended_total").increment(written_events as u64);
            metrics::gauge!("planledger_log_position").set(self.head.position.0 as f64);
            let mut stats = self
                .stats
                .lock()
                .expect("writer stats lock is never poisoned");
            stats.batches += 1;
            stats.events += written_events as u64;
            *stats.batch_sizes.entry(written_events).or_default() += 1;
            if inline {
                record_sync(&mut stats, written_events, true);
            }
            stats.busy += elapsed;
        }

        // Dense positions: the batch's events follow the head it started from, one by one.
        assert_eq!(
            self.head.position.0,
            first_position.0 + written_events as u64 - 1,
            "a batch's positions follow the log's head without gaps"
        );
        // The tree's leaves are the log's positions, prepared batches included.
        assert!(
            !self.keep_tree || self.tree.size() == self.head.position.0,
            "the Merkle tree has one leaf per position"
        );
        assert_eq!(answers.len(), requests, "one answer per request");
        let written = Written {
            position: self.head.position,
            events: written_events,
            answers,
            spare_lists: self.spare_lists.clone(),
            write: prepared,
            epoch: self.cluster.as_ref().map_or(0, |cluster| cluster.epoch),
        };
        if let Err(message) = write_result {
            // The write was attempted: whatever it wrote may or may not survive a restart, and
            // later batches would build on it. Stop here.
            self.failed.stop(&message);
            self.failed.fail_answers(written.answers, &message);
            return;
        }
        if inline {
            // Every earlier batch is synced (its answers may still be on their way) and this
            // one was written synced.
            written.confirm(&self.published);
            return;
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if let Err(std::sync::mpsc::SendError(written)) = self.syncer.send(written) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            // The syncer is gone (it only stops with the writer, or by a panic): nothing can
            // be confirmed any more, so nothing more is written either. This batch was written
            // but will not be synced by this process.
            let message = "the event log syncer thread stopped unexpectedly";
            self.failed.stop(message);
            self.failed.fail_answers(written.answers, message);
        }
    }

    /// Checks one request against the database and the batch so far and adds its writes; the
    /// request goes back to its caller inside the answer.
    fn prepare(
        &mut self,
        index: usize,
        request: AppendRequest,
        context: &BatchContext<'_>,
        write: &mut WriteBatch,
        commands: &mut HashMap<Vec<u8>, FirstInBatch>,
    ) -> Answer {
        if request.events.is_empty() {
            return Answer::Done(Err(StoreError::EmptyAppend));
        }
        if let Some((count, index)) = self.partition {
            let belongs = count.partition_of(&request.stream).index();
            if belongs != index {
                return Answer::Done(Err(StoreError::PartitionUnavailable(format!(
                    "{} belongs to partition {belongs}, and this node serves partition {index}; send it to a node of partition {belongs}",
                    request.stream
                ))));
            }
        }
        if self.cluster.is_some() && request.events.len() > MAX_COMMIT_EVENTS {
            return Answer::Done(Err(StoreError::AppendTooLarge {
                events: request.events.len(),
                max: MAX_COMMIT_EVENTS,
            }));
        }
        let command_key = request
            .meta
            .command
            .as_ref()
            .filter(|c| c.remember)
            .map(|c| keys::command_key(&c.scope, &c.id));
        if let (Some(key), Some(command)) = (&command_key, &request.meta.command) {
            if let Some(first) = commands.get(key) {
                return match same_command(
                    command,
                    &request.stream,
                    &first.stream,
                    &first.fingerprint,
                ) {
                    Ok(()) => Answer::SameBatchRepeat(first.index),
                    Err(error) => Answer::Done(Err(error)),
                };
            }
            if let Some(first) = self
                .cluster
                .as_ref()
                .and_then(|cluster| cluster.unapplied.get(key))
            {
                // Its batch is applied before this one is answered.
                return Answer::Done(
                    same_command(command, &request.stream, &first.stream, &first.fingerprint).map(
                        |()| {
                            AppendOutcome::pending_repeat(first.first_position, first.last_position)
                        },
                    ),
                );
            }
            match self.stored_command(key) {
                Ok(Some(record)) => {
                    return Answer::Done(self.repeat(command, &request.stream, record));
                }
                Ok(None) => {}
                Err(error) => return Answer::Done(Err(error)),
            }
        }

        let current = match self.head_cache.get(&request.stream) {
            Some(version) => *version,
            None => match stored_head(&self.db, &request.stream) {
                Ok(version) => version,
                Err(error) => return Answer::Done(Err(error)),
            },
        };
        if !request.expected.matches(current) {
            return Answer::Done(Err(StoreError::Conflict {
                stream: request.stream,
                expected: request.expected,
                current,
                log_position: self.head.position,
            }));
        }

        let first_position = Position(self.head.position.0 + 1);
        let first_version = Version(current.0 + 1);
        let prev_hash = self.head.hash;
        let mut hashes = Vec::with_capacity(request.events.len());
        let mut stored = Vec::with_capacity(request.events.len());
        let mut version = current;
        // Events of one command share their `occurred_at`: render it once.
        let mut occurred: Option<(Timestamp, Vec<u8>)> = None;
        for event in &request.events {
            version = Version(version.0 + 1);
            let position = Position(self.head.position.0 + 1);
            if occurred
                .as_ref()
                .is_none_or(|(at, _)| *at != event.occurred_at)
            {
                occurred = Some((event.occurred_at, render_time(&event.occurred_at)));
            }
            let occurred_text = occurred.as_ref().map_or(&[][..], |(_, text)| text);
            let mut bytes = Vec::with_capacity(512 + event.data.get().len());
            let hash = Canonical {
                position,
                stream: request.stream.as_str(),
                version,
                event_id: event.event_id,
                event_type: &event.event_type,
                schema_version: event.schema_version,
                occurred_at: occurred_text,
                recorded_at: &context.recorded_text,
                actor: &request.meta.actor,
                command_id: request.meta.command.as_ref().map(|c| c.id.as_str()),
                correlation_id: request.meta.correlation_id.as_deref(),
                causation_id: request.meta.causation_id.as_deref(),
                traceparent: request.meta.traceparent.as_deref(),
                data: &event.data,
                prev_hash: hex_text(&self.head.hash),
            }
            .write(&mut bytes);
            seal(&mut bytes, &hash);
            keys::put_event(
                &context.cfs,
                write,
                position,
                &request.stream,
                version,
                &bytes,
            );
            if self.keep_tree {
                self.leaves.add(&bytes);
            }
            self.head.hash = hash;
            self.head.position = position;
            self.head.recorded_at = context.recorded_at;
            hashes.push(hash);
            stored.push(bytes);
        }

        if let (Some(key), Some(command)) = (command_key, &request.meta.command) {
            let record = CommandRecord {
                stream: request.stream.clone(),
                fingerprint: command.fingerprint.clone(),
                first_position,
                last_position: self.head.position,
            };
            let bytes = serde_json::to_vec(&record).expect("a command record serializes");
            write.put_cf(context.cfs.commands, &key, bytes);
            if let Some(cluster) = self.cluster.as_mut() {
                cluster
                    .unapplied_order
                    .push_back((record.last_position, key.clone()));
                cluster.unapplied.insert(key.clone(), record);
            }
            commands.insert(
                key,
                FirstInBatch {
                    index,
                    stream: request.stream.clone(),
                    fingerprint: command.fingerprint.clone(),
                },
            );
        }
        // Dense versions, and the head is the last version written.
        assert_eq!(
            version.0,
            current.0 + request.events.len() as u64,
            "a stream's versions follow its head without gaps"
        );
        // The stream's new head, in the batch (a later append to the stream in the same batch
        // writes its own, which RocksDB applies after this one) and in the cache.
        keys::put_head(&context.cfs, write, &request.stream, version);
        match self.head_cache.get_mut(&request.stream) {
            Some(head) => *head = version,
            None => {
                self.head_cache.insert(request.stream.clone(), version);
            }
        }

        Answer::Done(Ok(AppendOutcome::fresh(Fresh {
            request,
            placed: Placed {
                first_position,
                first_version,
                recorded_at: context.recorded_at,
                prev_hash,
                hashes,
            },
            stored,
        })))
    }

    /// Adds the batch's leaves to the tree's right edge and their nodes to `write`: the leaf
    /// hashes come from the hashing thread (`leaves`), so the writer only combines them. The
    /// nodes go in level by level, each level's in index order, so that each memtable insert
    /// lands next to the one before it rather than searching the whole skiplist.
    fn add_leaves(&mut self, cfs: &AppendCfs<'_>, write: &mut WriteBatch) {
        let (tree, nodes) = (&mut self.tree, &mut self.tree_nodes);
        self.leaves.take(|leaf| {
            tree.append(leaf, |level, index, node| {
                let level = usize::from(level);
                if nodes.len() <= level {
                    nodes.resize_with(level + 1, Vec::new);
                }
                nodes[level].push((index, *node));
            });
        });
        for (level, level_nodes) in self.tree_nodes.iter_mut().enumerate() {
            let level = u8::try_from(level).expect("a tree has at most 64 levels");
            for (index, node) in level_nodes.drain(..) {
                keys::put_node(cfs, write, level, index, &node);
            }
        }
    }

    fn stored_command(&self, key: &[u8]) -> Result<Option<CommandRecord>, StoreError> {
        let Some(bytes) = self.db.get_pinned_cf(cf(&self.db, CF_COMMANDS), key)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                what: "command record".into(),
                detail: e.to_string(),
            })
    }

    fn repeat(
        &self,
        command: &CommandRef,
        stream: &StreamId,
        record: CommandRecord,
    ) -> Result<AppendOutcome, StoreError> {
        same_command(command, stream, &record.stream, &record.fingerprint)?;
        read_envelope_range(&self.db, record.first_position, record.last_position)
            .map(AppendOutcome::repeat)
    }
}

/// Whether an append with a command id already seen repeats that command: the same stream and
/// content (fingerprint), or the id is refused. The same rule whether the first append is in
/// the log or earlier in the same batch.
fn same_command(
    command: &CommandRef,
    stream: &StreamId,
    first_stream: &StreamId,
    first_fingerprint: &Option<String>,
) -> Result<(), StoreError> {
    if first_stream != stream || first_fingerprint != &command.fingerprint {
        return Err(StoreError::CommandIdReused {
            command_id: command.id.clone(),
            original_stream: first_stream.clone(),
        });
    }
    Ok(())
}

/// A stream's version as RocksDB has it (0 for a stream never written).
pub(super) fn stored_head(db: &DB, stream: &StreamId) -> Result<Version, StoreError> {
    match db.get_pinned_cf(cf(db, CF_HEADS), stream.as_str())? {
        Some(bytes) => keys::decode_u64(&bytes)
            .map(Version)
            .ok_or_else(|| StoreError::Corrupt {
                what: format!("head of {stream}"),
                detail: "not an 8-byte version".into(),
            }),
        None => Ok(Version(0)),
    }
}

/// How many of the leading requests make one commit in cluster mode: whole appends of at most
/// [`MAX_COMMIT_EVENTS`] events together (at least one request, which the writer refuses if it
/// alone is larger).
fn appends_fitting(batch: &[Pending]) -> usize {
    let mut events = 0;
    for (index, pending) in batch.iter().enumerate() {
        events += pending.request.events.len();
        if events > MAX_COMMIT_EVENTS {
            return index.max(1);
        }
    }
    batch.len()
}

impl Writer {
    /// Cluster mode, before anything else: the prefix check and the catch-up from the
    /// partition's log, retried (refusing what arrives meanwhile) until the log can be read. A
    /// cache that is not a prefix of the log stops the write path for good.
    fn catch_up_at_start(&mut self) {
        loop {
            match self.resync() {
                Ok(()) => return,
                Err(StoreError::PartitionHalted { .. }) => return,
                Err(error) => {
                    tracing::warn!(%error, "cannot catch up with the partition's log yet; retrying in 1 s");
                    let deadline = Instant::now() + Duration::from_secs(1);
                    while Instant::now() < deadline {
                        match self.inbox.try_recv() {
                            Ok(pending) => {
                                let _ = pending.reply.send(Err(copy_refusal(&error)));
                            }
                            Err(mpsc::error::TryRecvError::Empty) => {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            Err(mpsc::error::TryRecvError::Disconnected) => return,
                        }
                    }
                }
            }
        }
    }

    /// Cluster mode: if a commit failed since the last batch, waits for the committer to answer
    /// the batches prepared behind it, then catches up with the partition's log. The refusal
    /// for this batch if that did not succeed.
    fn resync_if_needed(&mut self) -> Option<StoreError> {
        let needed = self
            .cluster
            .as_ref()
            .is_some_and(|cluster| cluster.resync.is_needed());
        if !needed || self.failed.is_stopped() {
            return None;
        }
        let deadline = Instant::now() + DRAIN_WAIT;
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            if Instant::now() > deadline {
                return Some(StoreError::PartitionUnavailable(
                    "the committer has not answered the batches of a failed commit yet".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.resync().err()
    }

    /// Catches the cache up with the partition's log and starts a new epoch on its head. A
    /// cache that is not a prefix of the log stops the write path for good.
    fn resync(&mut self) -> Result<(), StoreError> {
        let cluster = self.cluster.as_mut().expect("only cluster mode catches up");
        cluster.resync.set_catching_up(true);
        let result = cluster.catch_up.run(&self.db, &self.published);
        if let Err(StoreError::PartitionHalted { reason, detail }) = &result {
            // Stopped before it stops catching up: the log never looks writable in between.
            self.failed.stop_with(WriteFailure::Partition {
                reason,
                detail: detail.clone(),
            });
        }
        cluster.resync.set_catching_up(false);
        match result {
            Ok((head, tree)) => {
                assert_eq!(
                    tree.size(),
                    head.position.0,
                    "the caught-up tree covers the cache"
                );
                self.head = head;
                self.tree = tree;
                self.head_cache.clear();
                cluster.unapplied.clear();
                cluster.unapplied_order.clear();
                cluster.epoch += 1;
                cluster.resync.done();
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}
