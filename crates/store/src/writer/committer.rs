//! Cluster mode: the committer thread commits prepared batches to the partition's log; the
//! applier thread applies them to the cache and has them answered.
//!
//! Exactly one commit is in flight, as one fsync is in local mode: what the writer prepares
//! meanwhile waits, and the next commit takes every batch waiting (whole batches, at most
//! [`MAX_COMMIT_EVENTS`] events), so commits grow with load. One in flight is also what makes
//! the log's compare-and-append a fence: a commit names the position before it, and that
//! position is always one this node knows to be in the log (its own acknowledged commit, or
//! what it read and verified when it caught up). With two in flight, the second would name the
//! first's intended end; if the first were refused and another writer's batch of the same
//! length had landed instead, the second would be accepted on a history its writer never saw.
//!
//! Applying is not part of that cycle: once a commit is acknowledged its batches go to the
//! applier, and the next commit is sent at once, naming the acknowledged end. The applier
//! writes acknowledged batches into RocksDB in order, advances the applied position and has
//! their callers answered, so no caller is answered and no reader sees an event before the
//! cache holds it. A failed commit waits for the applier to finish first, so that the writer's
//! catch-up starts from a cache that holds everything acknowledged.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use rocksdb::{DB, WriteOptions};
use tokio::sync::watch;

use super::catch_up::Resync;
use super::halt::{Halt, copy_refusal};
use super::request::{AppendOutcome, WriterStats, Written};
use super::syncer::{Answerer, record_sync};
use crate::{CommandHeader, CommitError, CommitEvent, Committer, MAX_COMMIT_EVENTS, Position};
use crate::{StoreError, StreamId};

/// Commits prepared batches, in order, one commit in flight.
pub(crate) struct CommitterThread {
    /// Prepared batches, in order.
    pub queue: std::sync::mpsc::Receiver<Written>,
    pub committer: Arc<dyn Committer>,
    /// The applied position (what the cache holds; readers never go past it).
    pub published: Arc<watch::Sender<Position>>,
    /// Stops the write path for good (the cache could not be written).
    pub failed: Arc<Halt>,
    /// Raised when a commit failed, so the writer catches up.
    pub resync: Arc<Resync>,
    /// Batches handed over and not answered yet (shared with the writer).
    pub in_flight: Arc<AtomicUsize>,
    pub stats: Arc<Mutex<WriterStats>>,
    /// Where acknowledged groups go to be applied and answered, in order.
    pub applier: std::sync::mpsc::Sender<Vec<Written>>,
    /// The applier thread, joined when the committer stops.
    pub applier_thread: Option<JoinHandle<()>>,
    /// Groups handed to the applier and not applied yet.
    pub applying: Arc<Applying>,
    /// The end of the last acknowledged commit, with the epoch it was made in.
    pub committed: Option<(u64, Position)>,
}

/// Applies acknowledged groups to the cache, in order, and has their callers answered.
pub(crate) struct ApplierThread {
    pub db: Arc<DB>,
    pub queue: std::sync::mpsc::Receiver<Vec<Written>>,
    /// The applied position (what the cache holds; readers never go past it).
    pub published: Arc<watch::Sender<Position>>,
    /// Stops the write path for good (the cache could not be written).
    pub failed: Arc<Halt>,
    /// Batches handed over and not answered yet (shared with the writer).
    pub in_flight: Arc<AtomicUsize>,
    pub applying: Arc<Applying>,
    /// The answerer task, if the log was opened in a multi-threaded runtime.
    pub answerer: Option<Answerer>,
}

/// How many groups the applier has not applied yet, so that a failed commit can wait for them.
#[derive(Default)]
pub(crate) struct Applying {
    groups: Mutex<usize>,
    idle: Condvar,
}

impl Applying {
    fn add(&self) {
        *self.groups.lock().expect("applying lock is never poisoned") += 1;
    }

    fn done(&self, groups: usize) {
        let mut waiting = self.groups.lock().expect("applying lock is never poisoned");
        assert!(
            *waiting >= groups,
            "the applier applies only groups handed to it"
        );
        *waiting -= groups;
        if *waiting == 0 {
            self.idle.notify_all();
        }
    }

    /// The applier is gone (it panicked): nothing it held will be applied, so nobody waits
    /// for it.
    fn abandon(&self) {
        let mut waiting = self
            .groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *waiting = 0;
        self.idle.notify_all();
    }

    /// Waits until every group handed to the applier is applied and answered.
    fn wait_idle(&self) {
        let mut waiting = self.groups.lock().expect("applying lock is never poisoned");
        while *waiting > 0 {
            waiting = self
                .idle
                .wait(waiting)
                .expect("applying lock is never poisoned");
        }
    }
}

/// How the batches of an ended epoch are answered: nothing of them was sent.
#[derive(Clone, Debug)]
enum NotSent {
    /// Another writer appended first (or the outcome of the batch before was unknown).
    Moved,
    /// The partition's log could not be reached.
    Unavailable(String),
}

impl NotSent {
    fn error(&self) -> StoreError {
        match self {
            Self::Moved => StoreError::PartitionMoved,
            Self::Unavailable(message) => StoreError::PartitionUnavailable(message.clone()),
        }
    }
}

impl CommitterThread {
    /// Runs until the writer closes the queue, then lets the applier finish and stop.
    pub(crate) fn run(mut self) {
        let mut waiting: VecDeque<Written> = VecDeque::new();
        // The last epoch whose commit failed, and how its later batches are answered.
        let mut ended: Option<(u64, NotSent)> = None;
        loop {
            if waiting.is_empty() {
                match self.queue.recv() {
                    Ok(written) => waiting.push_back(written),
                    Err(_) => break,
                }
            }
            waiting.extend(self.queue.try_iter());
            while let Some(front) = waiting.front() {
                let refusal = match &ended {
                    Some((epoch, how)) if front.epoch <= *epoch => how.error(),
                    _ if self.failed.is_stopped() => self.failed.refusal(),
                    _ => break,
                };
                let written = waiting.pop_front().expect("the front was just seen");
                // What it answered from the cache must be judged against everything applied.
                self.applying.wait_idle();
                self.answer_unsent(written, refusal);
            }
            if waiting.is_empty() {
                continue;
            }
            let group = take_group(&mut waiting);
            let count = group.len();
            let epoch = group[0].epoch;
            if let Err(how) = self.commit_group(group) {
                ended = Some((epoch, how));
                self.in_flight.fetch_sub(count, Ordering::SeqCst);
            }
        }
        let CommitterThread {
            applier,
            applier_thread,
            ..
        } = self;
        // Closing its queue lets the applier apply and answer what it holds, and stop.
        drop(applier);
        if let Some(thread) = applier_thread
            && thread.join().is_err()
        {
            tracing::error!("the event log applier thread panicked");
        }
    }

    /// Answers a batch that was never sent with `refusal` (only the repeats it answered from
    /// what is applied stand).
    fn answer_unsent(&self, written: Written, refusal: StoreError) {
        let applied = *self.published.borrow();
        for (reply, answer) in written.answers {
            let answer = match answer {
                Ok(outcome) if stands(&outcome, applied) => Ok(outcome),
                _ => Err(copy_refusal(&refusal)),
            };
            let _ = reply.send(answer);
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// The position the next commit of `epoch` builds on: the end of the last acknowledged
    /// commit of the same epoch, else what the cache holds (a new epoch starts on a caught-up
    /// cache, with nothing left to apply).
    fn committed_head(&self, epoch: u64) -> Position {
        match self.committed {
            Some((of, position)) if of == epoch => position,
            _ => *self.published.borrow(),
        }
    }

    /// Commits one group of batches and hands it to the applier; on failure answers it and says
    /// how the batches behind it are answered.
    fn commit_group(&mut self, group: Vec<Written>) -> Result<(), NotSent> {
        let events = commit_events(&group);
        let epoch = group[0].epoch;
        if events.is_empty() {
            // Only refusals and repeats: nothing to commit, answered in order behind what is
            // being applied.
            self.hand_over(group);
            return Ok(());
        }
        let expected_last = Position(events[0].position.0 - 1);
        // The batch builds on exactly what is acknowledged: one commit in flight, and the
        // writer catches up only while nothing is in flight or being applied.
        assert_eq!(
            expected_last,
            self.committed_head(epoch),
            "a commit names the end of the last acknowledged commit as the position before it"
        );
        assert!(
            expected_last >= *self.published.borrow(),
            "nothing is applied that was not acknowledged"
        );
        assert!(
            events
                .windows(2)
                .all(|pair| pair[1].position.0 == pair[0].position.0 + 1),
            "a commit's positions are dense"
        );
        let last = events[events.len() - 1].position;
        let started = Instant::now();
        let result = self.committer.commit(expected_last, &events);
        let took = started.elapsed();
        metrics::histogram!("planledger_partition_commit_seconds").record(took.as_secs_f64());
        // How the group's fresh appends are answered, and how the batches behind it are.
        let (fresh_error, how) = match result {
            Ok(()) => {
                metrics::histogram!("planledger_partition_commit_events")
                    .record(events.len() as f64);
                {
                    let mut stats = self
                        .stats
                        .lock()
                        .expect("writer stats lock is never poisoned");
                    record_sync(&mut stats, events.len(), false);
                    stats.syncing += took;
                }
                self.committed = Some((epoch, last));
                self.hand_over(group);
                return Ok(());
            }
            Err(CommitError::Refused(message)) => {
                tracing::warn!(log = %self.committer.describe(), error = %message, "commit refused: another writer appended first; catching up");
                metrics::counter!("planledger_partition_fenced_total").increment(1);
                (StoreError::PartitionMoved, NotSent::Moved)
            }
            Err(CommitError::Unknown(message)) => {
                tracing::warn!(log = %self.committer.describe(), error = %message, "commit not confirmed; catching up");
                metrics::counter!("planledger_partition_commit_unknown_total").increment(1);
                let unknown = StoreError::OutcomeUnknown(format!(
                    "the partition's log did not confirm the commit: {message}"
                ));
                (unknown, NotSent::Moved)
            }
            Err(CommitError::Unavailable(message)) => {
                tracing::warn!(log = %self.committer.describe(), error = %message, "the partition's log cannot be reached");
                (
                    StoreError::PartitionUnavailable(message.clone()),
                    NotSent::Unavailable(message),
                )
            }
        };
        // Everything acknowledged is applied before the writer may catch up, and before the
        // repeats below are judged against the cache.
        self.applying.wait_idle();
        self.resync.request();
        let applied = *self.published.borrow();
        for written in group {
            for (reply, answer) in written.answers {
                let answer = match answer {
                    Ok(outcome) if outcome.as_fresh().is_some() => Err(copy_refusal(&fresh_error)),
                    Ok(outcome) if stands(&outcome, applied) => Ok(outcome),
                    _ => Err(how.error()),
                };
                let _ = reply.send(answer);
            }
        }
        Err(how)
    }

    /// Hands an acknowledged group (or one with nothing to commit) to the applier.
    fn hand_over(&mut self, group: Vec<Written>) {
        self.applying.add();
        if let Err(std::sync::mpsc::SendError(group)) = self.applier.send(group) {
            // The applier is gone (it panicked): nothing more can be applied. The group is
            // committed, so its callers are answered as it was decided.
            self.failed.stop("the event log applier thread stopped");
            let count = group.len();
            for written in group {
                for (reply, answer) in written.answers {
                    let _ = reply.send(answer);
                }
            }
            self.in_flight.fetch_sub(count, Ordering::SeqCst);
            self.applying.done(1);
        }
    }
}

/// Stops the write path and releases the committer if the applier thread panics, so that a
/// failed commit's wait for it cannot hang and later commits are refused.
struct ApplierGone {
    failed: Arc<Halt>,
    applying: Arc<Applying>,
}

impl Drop for ApplierGone {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.failed.stop("the event log applier thread panicked");
            self.applying.abandon();
        }
    }
}

impl ApplierThread {
    /// Runs until the committer closes the queue.
    pub(crate) fn run(mut self) {
        let _gone = ApplierGone {
            failed: self.failed.clone(),
            applying: self.applying.clone(),
        };
        let options = {
            let mut options = WriteOptions::default();
            options.set_sync(false);
            options
        };
        while let Ok(first) = self.queue.recv() {
            // Everything acknowledged meanwhile is applied together, with one WAL flush.
            let mut groups = vec![first];
            groups.extend(self.queue.try_iter());
            self.apply(&mut groups, &options);
            let handed = groups.len();
            let batches: usize = groups.iter().map(Vec::len).sum();
            for group in groups {
                self.confirm(group);
            }
            self.in_flight.fetch_sub(batches, Ordering::SeqCst);
            self.applying.done(handed);
        }
    }

    /// Writes acknowledged batches into the cache (no fsync: the partition's log holds them).
    /// Once a write has failed nothing more is written: the cache must stay a prefix.
    fn apply(&self, groups: &mut [Vec<Written>], options: &WriteOptions) {
        if self.failed.is_stopped() {
            return;
        }
        let result = groups
            .iter_mut()
            .flatten()
            .filter_map(|written| written.write.take())
            .try_for_each(|write| self.db.write_opt(write, options))
            .and_then(|()| self.db.flush_wal(false));
        if let Err(error) = result {
            // Committed, so answered as appended; but this cache can no longer follow the log.
            self.failed.stop(&error.into_string());
        }
    }

    /// Advances the applied position to each batch and answers its callers, in order.
    fn confirm(&mut self, group: Vec<Written>) {
        if let Some(last) = group.last().map(|written| written.position)
            && !self.failed.is_stopped()
        {
            // Here, not only by the answerer: a failed commit judges repeats against it.
            super::catch_up::advance(&self.published, last);
        }
        if self.failed.is_stopped() {
            // The cache was not written: answer, but never show readers what it lacks.
            for written in group {
                for (reply, answer) in written.answers {
                    let _ = reply.send(answer);
                }
            }
            return;
        }
        let unsent = match &self.answerer {
            None => Some(group),
            Some(to) => match to.send(group) {
                Ok(()) => None,
                Err(tokio::sync::mpsc::error::SendError(group)) => {
                    self.answerer = None;
                    Some(group)
                }
            },
        };
        for written in unsent.into_iter().flatten() {
            written.confirm(&self.published);
        }
    }
}

/// Whether an answer from a batch that was not committed still stands: a repeat read back
/// from the cache, or one of a batch that is applied.
fn stands(outcome: &AppendOutcome, applied: Position) -> bool {
    outcome.as_fresh().is_none()
        && outcome
            .pending_range()
            .is_none_or(|(_, last)| last <= applied)
}

/// Takes the batches at the front that make one commit: at least one, then more of the same
/// epoch while the events stay within [`MAX_COMMIT_EVENTS`].
fn take_group(waiting: &mut VecDeque<Written>) -> Vec<Written> {
    let first = waiting
        .pop_front()
        .expect("only called with batches waiting");
    let epoch = first.epoch;
    let mut events = first.events;
    let mut group = vec![first];
    while let Some(next) = waiting.front() {
        if next.epoch != epoch || events + next.events > MAX_COMMIT_EVENTS {
            break;
        }
        events += next.events;
        group.push(waiting.pop_front().expect("the front was just seen"));
    }
    group
}

/// The events of a group's fresh appends, in order, with the command header on each append's
/// first event.
fn commit_events(group: &[Written]) -> Vec<CommitEvent> {
    let mut events = Vec::with_capacity(group.iter().map(|w| w.events).sum());
    for written in group {
        for (_, answer) in &written.answers {
            let Ok(outcome) = answer else { continue };
            let Some(fresh) = outcome.as_fresh() else {
                continue;
            };
            let command = fresh
                .request
                .meta
                .command
                .as_ref()
                .filter(|command| command.remember)
                .map(|command| CommandHeader {
                    scope: command.scope.clone(),
                    id: command.id.clone(),
                    fingerprint: command.fingerprint.clone(),
                });
            for (offset, (event, stored)) in
                fresh.request.events.iter().zip(&fresh.stored).enumerate()
            {
                events.push(CommitEvent {
                    position: Position(fresh.placed.first_position.0 + offset as u64),
                    stream: StreamId::clone(&fresh.request.stream),
                    event_type: event.event_type.clone(),
                    stored: stored.clone(),
                    command: if offset == 0 { command.clone() } else { None },
                });
            }
        }
    }
    events
}
