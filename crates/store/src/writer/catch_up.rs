//! Cluster mode: bringing the cache up to the partition's log, verifying what it applies.
//!
//! The cache is a prefix of the partition's log by construction (a batch is applied only after
//! its commit). Catching up first checks that this still holds (the log has the cache's head,
//! with the same hash), then applies the log's events after it with the writer's own checks:
//! position = head + 1, `prev_hash` = the head's hash, the hash recomputed from the envelope,
//! `recorded_at` not before the head's, version = the stream's head + 1; the command records
//! are rebuilt from the command headers. Any mismatch stops the partition with a named reason
//! instead of copying it: `cache_diverged` (the cache is not a prefix of the log, or the log's
//! events do not chain) or `stream_behind` (the log lost events this cache has).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rocksdb::{DB, WriteBatch, WriteOptions};
use tokio::sync::watch;

use super::request::{CommandRecord, Head};
use super::writer::stored_head;
use crate::envelope::{HexHash, hex_text};
use crate::keys::{self, AppendCfs};
use crate::merkle::{frontier::Frontier, leaf_hash};
use crate::{
    CommitError, CommittedEvent, Committer, Envelope, Position, StoreError, StreamId, Version,
};

/// Events read from the partition's log per round of a catch-up.
const READ_BATCH: usize = 1000;

/// Signals between the committer and the writer in cluster mode.
#[derive(Debug, Default)]
pub(crate) struct Resync {
    /// Set by the committer when a commit failed: the writer must catch up before going on.
    needed: AtomicBool,
    /// Set while the writer catches up (for readiness).
    catching_up: AtomicBool,
}

impl Resync {
    /// A commit failed: the writer catches up before its next batch.
    pub(crate) fn request(&self) {
        self.needed.store(true, Ordering::SeqCst);
    }

    /// Whether a commit failed since the last catch-up.
    pub(crate) fn is_needed(&self) -> bool {
        self.needed.load(Ordering::SeqCst)
    }

    /// The writer caught up.
    pub(crate) fn done(&self) {
        self.needed.store(false, Ordering::SeqCst);
    }

    pub(crate) fn set_catching_up(&self, on: bool) {
        self.catching_up.store(on, Ordering::SeqCst);
    }

    /// Whether the writer is catching up now (or has not finished its first catch-up).
    pub(crate) fn is_catching_up(&self) -> bool {
        self.catching_up.load(Ordering::SeqCst)
    }
}

/// Catches a cache up with its partition's log.
pub(crate) struct CatchUp {
    pub committer: Arc<dyn Committer>,
}

/// A halt of the partition: the cache cannot be served.
fn halted(reason: &'static str, detail: String) -> StoreError {
    tracing::error!(reason, %detail, "the partition's cache does not match its log; not serving it");
    metrics::counter!("planledger_partition_halts_total", "reason" => reason).increment(1);
    StoreError::PartitionHalted { reason, detail }
}

/// The partition's log could not be read.
fn unavailable(error: CommitError) -> StoreError {
    StoreError::PartitionUnavailable(error.to_string())
}

impl CatchUp {
    /// Checks that the cache in `db` is a prefix of the partition's log and applies the log's
    /// events after it, advancing `published` as it goes. Returns the new head and the
    /// Merkle tree's right edge there.
    pub(crate) fn run(
        &self,
        db: &DB,
        published: &watch::Sender<Position>,
    ) -> Result<(Head, Frontier), StoreError> {
        let started = Instant::now();
        let head = crate::log::recover_head(db)?;
        let mut state = ApplyState {
            tree: Frontier::load(db, head.position.0)?,
            head,
            open_command: None,
        };
        let last = self.committer.last_position().map_err(unavailable)?;
        self.check_prefix(&state.head, last)?;
        let from = state.head.position;
        if last > from {
            tracing::info!(
                log = %self.committer.describe(),
                cache = from.0,
                log_last = last.0,
                "catching the cache up with the partition's log"
            );
        }
        let mut logged = Instant::now();
        while state.head.position < last {
            let events = self
                .committer
                .read_after(state.head.position, READ_BATCH)
                .map_err(unavailable)?;
            if events.is_empty() {
                return Err(halted(
                    "stream_behind",
                    format!(
                        "the partition's log reported {last} as its last position but has nothing after {}",
                        state.head.position
                    ),
                ));
            }
            let applied = apply_committed(db, &mut state, &events);
            // What passed the checks before a bad event is applied, and readable.
            advance(published, state.head.position);
            applied?;
            if logged.elapsed().as_secs() >= 5 {
                tracing::info!(
                    applied = state.head.position.0 - from.0,
                    remaining = last.0.saturating_sub(state.head.position.0),
                    "catching up"
                );
                logged = Instant::now();
            }
        }
        if last > from {
            tracing::info!(
                applied = last.0 - from.0,
                seconds = started.elapsed().as_secs_f64(),
                position = last.0,
                "the cache caught up with the partition's log"
            );
        }
        advance(published, state.head.position);
        Ok((state.head, state.tree))
    }

    /// The cache's head must be in the log, with the same hash.
    fn check_prefix(&self, head: &Head, last: Position) -> Result<(), StoreError> {
        if last < head.position {
            return Err(halted(
                "stream_behind",
                format!(
                    "the partition's log ends at {last} but this cache holds events up to {}: the log lost acknowledged events; republish them from this cache (planledger cluster repair) or delete the cache to follow the log",
                    head.position
                ),
            ));
        }
        if head.position.0 == 0 {
            return Ok(());
        }
        let found = self
            .committer
            .read_after(Position(head.position.0 - 1), 1)
            .map_err(unavailable)?;
        match found.first() {
            Some(event)
                if event.envelope.position == head.position
                    && event.envelope.hash.as_bytes() == head.hash =>
            {
                Ok(())
            }
            Some(event) => Err(halted(
                "cache_diverged",
                format!(
                    "this cache's event at position {} has hash {} but the partition's log has {} there: the cache belongs to another history; delete it (it is rebuilt from the log)",
                    head.position,
                    hex_text(&head.hash),
                    event.envelope.hash
                ),
            )),
            None => Err(halted(
                "stream_behind",
                format!(
                    "the partition's log has no event at position {}, which this cache holds",
                    head.position
                ),
            )),
        }
    }
}

/// Moves the applied (durable) position forward to `position`, never back; watchers are woken
/// only when it moved.
pub(super) fn advance(published: &watch::Sender<Position>, position: Position) {
    published.send_if_modified(|applied| {
        let advanced = position > *applied;
        if advanced {
            *applied = position;
        }
        advanced
    });
}

/// Where applying stands: the head, and the command record of an append that may go on in the
/// next round (an append's events can be split between two reads).
pub(crate) struct ApplyState {
    pub head: Head,
    /// The Merkle tree's right edge at `head` (its nodes go into the batch with the events).
    pub tree: Frontier,
    /// The command key and record of the last append that carried a command header.
    pub open_command: Option<(Vec<u8>, String, CommandRecord)>,
}

/// Applies events committed to the partition's log to the cache, with the writer's checks.
pub(crate) fn apply_committed(
    db: &DB,
    state: &mut ApplyState,
    events: &[CommittedEvent],
) -> Result<(), StoreError> {
    let cfs = AppendCfs::of(db);
    let mut write = WriteBatch::default();
    let mut heads: HashMap<StreamId, Version> = HashMap::new();
    let mut refused = None;
    for event in events {
        let envelope = &event.envelope;
        let current = match heads.get(&envelope.stream) {
            Some(version) => *version,
            None => stored_head(db, &envelope.stream)?,
        };
        if let Err(error) = check_event(&state.head, current, envelope) {
            // The events before it are applied; the head stays at the last of them.
            refused = Some(error);
            break;
        }
        let stored = serde_json::to_vec(envelope).expect("an envelope serializes");
        keys::put_event(
            &cfs,
            &mut write,
            envelope.position,
            &envelope.stream,
            envelope.version,
            &stored,
        );
        state.tree.append(leaf_hash(&stored), |level, index, node| {
            keys::put_node(&cfs, &mut write, level, index, node);
        });
        heads.insert(envelope.stream.clone(), envelope.version);
        track_command(state, event);
        // Written again as the append goes on (a later put of a key in a batch wins).
        if let Some((key, _, record)) = &state.open_command
            && record.last_position == envelope.position
        {
            let bytes = serde_json::to_vec(record).expect("a command record serializes");
            write.put_cf(cfs.commands, key, bytes);
        }
        state.head = Head {
            position: envelope.position,
            hash: hash_of(envelope)?,
            recorded_at: envelope.recorded_at,
        };
    }
    for (stream, version) in &heads {
        keys::put_head(&cfs, &mut write, stream, *version);
    }
    let mut options = WriteOptions::default();
    options.set_sync(false);
    db.write_opt(write, &options)?;
    db.flush_wal(false)?;
    assert_eq!(
        state.tree.size(),
        state.head.position.0,
        "the Merkle tree has one leaf per applied position"
    );
    refused.map_or(Ok(()), Err)
}

/// The writer's checks, for an event read from the partition's log.
fn check_event(head: &Head, current: Version, envelope: &Envelope) -> Result<(), StoreError> {
    let diverged = |what: String| {
        Err(halted(
            "cache_diverged",
            format!(
                "the partition's log at position {}: {what}",
                envelope.position
            ),
        ))
    };
    if envelope.position.0 != head.position.0 + 1 {
        return diverged(format!(
            "expected position {} after the cache's head",
            head.position.0 + 1
        ));
    }
    if envelope.prev_hash.as_bytes() != head.hash {
        return diverged(format!(
            "prev_hash {} does not link to the previous hash {}",
            envelope.prev_hash,
            hex_text(&head.hash)
        ));
    }
    let computed = envelope.compute_hash();
    if computed != envelope.hash {
        return diverged(format!(
            "the stored hash {} is not the envelope's hash {computed}",
            envelope.hash
        ));
    }
    if envelope.recorded_at < head.recorded_at {
        return diverged("recorded_at goes back in time".to_string());
    }
    if envelope.version.0 != current.0 + 1 {
        return diverged(format!(
            "stream {} is at version {current} but the event has version {}",
            envelope.stream, envelope.version
        ));
    }
    Ok(())
}

/// Starts or extends the command record the event belongs to.
fn track_command(state: &mut ApplyState, event: &CommittedEvent) {
    let envelope = &event.envelope;
    if let Some(header) = &event.command {
        state.open_command = Some((
            keys::command_key(&header.scope, &header.id),
            header.id.clone(),
            CommandRecord {
                stream: envelope.stream.clone(),
                fingerprint: header.fingerprint.clone(),
                first_position: envelope.position,
                last_position: envelope.position,
            },
        ));
        return;
    }
    // The later events of the same append: same stream and command id, the next position.
    if let Some((_, id, record)) = state.open_command.as_mut()
        && crate::envelope::continues_append(
            (
                record.last_position.0,
                record.stream.as_str(),
                Some(id.as_str()),
            ),
            (
                envelope.position.0,
                envelope.stream.as_str(),
                envelope.command_id.as_deref(),
            ),
        )
    {
        record.last_position = envelope.position;
        return;
    }
    state.open_command = None;
}

/// An envelope's hash as the writer keeps it.
fn hash_of(envelope: &Envelope) -> Result<HexHash, StoreError> {
    crate::envelope::parse_hex_hash(&envelope.hash).ok_or_else(|| {
        halted(
            "cache_diverged",
            format!(
                "the hash at position {} is not 64 hex digits",
                envelope.position
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_of_the_log_is_unavailable_not_a_halt() {
        let error = unavailable(CommitError::Unavailable("no responders".into()));
        assert!(
            matches!(error, StoreError::PartitionUnavailable(m) if m.contains("no responders"))
        );
    }
}
