//! Cluster mode at the store's level: appends committed to an external log (the truth) before
//! they are applied, the fence (a compare-and-append on the truth's last position), catching a
//! cache up, and the halts when a cache is not a prefix of its log.
//!
//! The truth here is an in-memory log behind the store's `Committer` trait, which is the whole
//! of what the store knows of it; the JetStream implementation is tested against real
//! nats-servers in the bus crate and the end-to-end suite.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use crate::support::{self, event, request, with_command};
use planledger_store::{
    CommandHeader, Commit, CommitError, CommitEvent, CommittedEvent, Committer, EventStore,
    ExpectedVersion, LogHealth, Position, StoreError, StoreOptions, WriteFailure,
};

/// What the next commit does instead of succeeding.
const NORMAL: u8 = 0;
/// Store the batch, then report the outcome as unknown (a lost acknowledgement).
const STORE_THEN_UNKNOWN: u8 = 1;
/// Report the log as unreachable, storing nothing.
const UNREACHABLE: u8 = 2;

/// An in-memory log with a compare-and-append: what the store needs of a partition stream.
#[derive(Default)]
struct MemoryLog {
    events: Mutex<Vec<(Vec<u8>, Option<CommandHeader>)>>,
    next_fault: AtomicU8,
}

impl Committer for MemoryLog {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn commit(&self, expected_last: Position, events: &[CommitEvent]) -> Result<(), CommitError> {
        let fault = self.next_fault.swap(NORMAL, Ordering::SeqCst);
        if fault == UNREACHABLE {
            return Err(CommitError::Unavailable("no responders".into()));
        }
        let mut log = self.events.lock().expect("lock");
        if log.len() as u64 != expected_last.get() {
            return Err(CommitError::Refused(format!(
                "wrong last sequence: {}",
                log.len()
            )));
        }
        for (offset, event) in events.iter().enumerate() {
            assert_eq!(
                event.position.get(),
                expected_last.get() + 1 + offset as u64
            );
            log.push((event.stored.clone(), event.command.clone()));
        }
        if fault == STORE_THEN_UNKNOWN {
            return Err(CommitError::Unknown("timed out waiting for the ack".into()));
        }
        Ok(())
    }

    fn last_position(&self) -> Result<Position, CommitError> {
        Ok(Position(self.events.lock().expect("lock").len() as u64))
    }

    fn read_after(&self, after: Position, max: usize) -> Result<Vec<CommittedEvent>, CommitError> {
        let log = self.events.lock().expect("lock");
        Ok(log
            .iter()
            .skip(after.get() as usize)
            .take(max)
            .map(|(stored, command)| CommittedEvent {
                envelope: serde_json::from_slice(stored).expect("stored JSON is an envelope"),
                command: command.clone(),
            })
            .collect())
    }
}

impl MemoryLog {
    fn stored(&self) -> Vec<Vec<u8>> {
        let log = self.events.lock().expect("lock");
        log.iter().map(|(stored, _)| stored.clone()).collect()
    }
}

fn open_cache(dir: &std::path::Path, truth: &Arc<MemoryLog>) -> EventStore {
    EventStore::open(
        dir,
        StoreOptions {
            commit: Commit::External(truth.clone()),
            ..StoreOptions::default()
        },
    )
    .expect("open a cache")
}

/// Waits until the cache has caught up with its log (the writer does that first).
async fn caught_up(store: &EventStore) {
    for _ in 0..500 {
        if store.health() != LogHealth::CatchingUp {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the cache did not catch up: {:?}", store.health());
}

/// The cache's stored bytes from position 1.
fn cached(store: &EventStore) -> Vec<Vec<u8>> {
    (1..=store.last_position().get())
        .map(|p| {
            store
                .read_raw(Position(p))
                .expect("read")
                .expect("every position up to the last is cached")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_committed_then_applied_and_the_cache_equals_the_log() {
    let dir = tempfile::tempdir().expect("dir");
    let truth = Arc::new(MemoryLog::default());
    let store = open_cache(dir.path(), &truth);
    caught_up(&store).await;
    let mut tasks = Vec::new();
    for task in 0..32u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..20 {
                let stream = format!("t/p{}", (task + n) % 7);
                store
                    .append(request(
                        &stream,
                        ExpectedVersion::Any,
                        vec![event(n), event(n)],
                    ))
                    .await
                    .expect("one writer is never refused");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(store.last_position(), Position(32 * 20 * 2));
    assert_eq!(
        cached(&store),
        truth.stored(),
        "the cache is the log, byte for byte"
    );
    support::assert_log_invariants(&store);
    let stats = store.writer_stats();
    assert!(
        stats
            .sync_sizes
            .keys()
            .all(|events| *events <= planledger_store::MAX_COMMIT_EVENTS),
        "no commit carries more than the limit: {:?}",
        stats.sync_sizes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_log_never_fork_and_no_acknowledged_append_is_lost() {
    let truth = Arc::new(MemoryLog::default());
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let writers = [
        open_cache(dir_a.path(), &truth),
        open_cache(dir_b.path(), &truth),
    ];
    for writer in &writers {
        caught_up(writer).await;
    }
    let mut tasks = Vec::new();
    for task in 0..16u64 {
        let store = writers[task as usize % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut moved = 0;
            for n in 0..30u64 {
                let id = format!("cmd-{task}-{n}");
                let stream = format!("t/p{}", n % 3);
                let append = with_command(
                    request(&stream, ExpectedVersion::Any, vec![event(n)]),
                    &id,
                    &id,
                );
                match store.append(append).await {
                    Ok(outcome) => acknowledged.push(outcome.into_envelopes()),
                    Err(StoreError::PartitionMoved) => moved += 1,
                    Err(other) => panic!("a writer losing the race is told so: {other}"),
                }
            }
            (acknowledged, moved)
        }));
    }
    let mut acknowledged = Vec::new();
    let mut moved = 0;
    for task in tasks {
        let (acks, refused) = task.await.expect("task");
        acknowledged.extend(acks);
        moved += refused;
    }
    let log = truth.stored();
    for envelopes in &acknowledged {
        for envelope in envelopes {
            let stored = &log[envelope.position.get() as usize - 1];
            assert_eq!(
                stored,
                &serde_json::to_vec(envelope).expect("json"),
                "an acknowledged event is in the log at its answered position"
            );
        }
    }
    assert_eq!(
        acknowledged.iter().map(Vec::len).sum::<usize>(),
        log.len(),
        "every event in the log was acknowledged to exactly one caller"
    );
    // One history: a fresh cache verifies the whole chain as it applies it.
    let dir_c = tempfile::tempdir().expect("dir");
    let rebuilt = open_cache(dir_c.path(), &truth);
    caught_up(&rebuilt).await;
    assert_eq!(rebuilt.last_position().get(), log.len() as u64);
    support::assert_log_invariants(&rebuilt);
    // Each writer's cache is a prefix of the log, and so is its Merkle tree: after every
    // refused commit the writer's tree was reloaded with its head.
    for writer in &writers {
        let cache = cached(writer);
        assert_eq!(
            cache[..],
            log[..cache.len()],
            "a cache is a prefix of the log"
        );
        support::assert_tree_matches_log(writer);
        let size = writer.last_position().get();
        assert_eq!(
            writer.view().tree_root(size).expect("root"),
            rebuilt.view().tree_root(size).expect("root"),
            "a writer's tree is the rebuilt cache's tree at the same size"
        );
    }
    eprintln!(
        "two writers: {} appends acknowledged, {moved} refused as moved",
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_is_rebuilt_from_the_log_and_still_answers_repeats() {
    let truth = Arc::new(MemoryLog::default());
    let first_dir = tempfile::tempdir().expect("dir");
    let original = {
        let store = open_cache(first_dir.path(), &truth);
        caught_up(&store).await;
        for n in 0..10u64 {
            let id = format!("cmd-{n}");
            store
                .append(with_command(
                    request("t/a", ExpectedVersion::Any, vec![event(n), event(n + 1)]),
                    &id,
                    &id,
                ))
                .await
                .expect("append");
        }
        cached(&store)
    };
    let dir = tempfile::tempdir().expect("dir");
    let store = open_cache(dir.path(), &truth);
    caught_up(&store).await;
    assert_eq!(cached(&store), original, "rebuilt byte for byte");
    let repeat = store
        .append(with_command(
            request("t/a", ExpectedVersion::Any, vec![event(3), event(4)]),
            "cmd-3",
            "cmd-3",
        ))
        .await
        .expect("a repeat");
    assert!(repeat.deduplicated, "the record was rebuilt from the log");
    assert_eq!(repeat.position(), Position(8));
    assert_eq!(repeat.len(), 2);
    assert_eq!(store.last_position(), Position(20), "nothing appended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_commit_is_unknown_and_a_resend_with_its_key_finds_it() {
    let truth = Arc::new(MemoryLog::default());
    let dir = tempfile::tempdir().expect("dir");
    let store = open_cache(dir.path(), &truth);
    caught_up(&store).await;
    store
        .append(request("t/a", ExpectedVersion::Any, vec![event(0)]))
        .await
        .expect("append");
    truth.next_fault.store(STORE_THEN_UNKNOWN, Ordering::SeqCst);
    let send = || {
        with_command(
            request(
                "t/a",
                ExpectedVersion::Exact(planledger_store::Version(1)),
                vec![event(1)],
            ),
            "k",
            "k",
        )
    };
    let unknown = store.append(send()).await.expect_err("not confirmed");
    assert!(
        matches!(unknown, StoreError::OutcomeUnknown(_)),
        "{unknown}"
    );
    let resent = store.append(send()).await.expect("the resend is answered");
    assert!(
        resent.deduplicated,
        "the first send was stored: the resend finds it"
    );
    assert_eq!(resent.position(), Position(2));
    assert_eq!(truth.stored().len(), 2, "stored once");
    assert_eq!(cached(&store), truth.stored());
    support::assert_tree_matches_log(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_log_refuses_appends_as_unavailable_and_they_resume() {
    let truth = Arc::new(MemoryLog::default());
    let dir = tempfile::tempdir().expect("dir");
    let store = open_cache(dir.path(), &truth);
    caught_up(&store).await;
    truth.next_fault.store(UNREACHABLE, Ordering::SeqCst);
    let refused = store
        .append(request("t/a", ExpectedVersion::Any, vec![event(0)]))
        .await
        .expect_err("unreachable");
    assert!(
        matches!(refused, StoreError::PartitionUnavailable(_)),
        "{refused}"
    );
    assert!(truth.stored().is_empty(), "nothing stored");
    let next = store
        .append(request("t/a", ExpectedVersion::Any, vec![event(1)]))
        .await
        .expect("taken again");
    assert_eq!(next.position(), Position(1));
    // The refused batch's leaf was in the writer's tree; the one written is the new event's.
    support::assert_tree_matches_log(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_ahead_of_its_log_halts_as_stream_behind() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let truth = Arc::new(MemoryLog::default());
        let store = open_cache(dir.path(), &truth);
        caught_up(&store).await;
        for n in 0..3 {
            store
                .append(request("t/a", ExpectedVersion::Any, vec![event(n)]))
                .await
                .expect("append");
        }
    }
    let lost = Arc::new(MemoryLog::default());
    let store = open_cache(dir.path(), &lost);
    caught_up(&store).await;
    assert!(
        matches!(
            store.health(),
            LogHealth::Stopped(WriteFailure::Partition {
                reason: "stream_behind",
                ..
            })
        ),
        "{:?}",
        store.health()
    );
    let refused = store
        .append(request("t/a", ExpectedVersion::Any, vec![event(9)]))
        .await
        .expect_err("halted");
    assert!(
        matches!(
            refused,
            StoreError::PartitionHalted {
                reason: "stream_behind",
                ..
            }
        ),
        "{refused}"
    );
    assert!(
        lost.stored().is_empty(),
        "nothing was published from a halted cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_of_another_history_halts_as_diverged() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let truth = Arc::new(MemoryLog::default());
        let store = open_cache(dir.path(), &truth);
        caught_up(&store).await;
        store
            .append(request("t/a", ExpectedVersion::Any, vec![event(1)]))
            .await
            .expect("append");
    }
    let other = Arc::new(MemoryLog::default());
    {
        let other_dir = tempfile::tempdir().expect("dir");
        let store = open_cache(other_dir.path(), &other);
        caught_up(&store).await;
        store
            .append(request(
                "t/b",
                ExpectedVersion::Any,
                vec![event(2), event(3)],
            ))
            .await
            .expect("append");
    }
    let store = open_cache(dir.path(), &other);
    caught_up(&store).await;
    assert!(
        matches!(
            store.health(),
            LogHealth::Stopped(WriteFailure::Partition {
                reason: "cache_diverged",
                ..
            })
        ),
        "{:?}",
        store.health()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_whose_events_do_not_chain_halts_the_catch_up() {
    let truth = Arc::new(MemoryLog::default());
    {
        let dir = tempfile::tempdir().expect("dir");
        let store = open_cache(dir.path(), &truth);
        caught_up(&store).await;
        for n in 0..4 {
            store
                .append(request("t/a", ExpectedVersion::Any, vec![event(n)]))
                .await
                .expect("append");
        }
    }
    // A changed payload at position 3: its hash no longer matches.
    {
        let mut log = truth.events.lock().expect("lock");
        let text = String::from_utf8(log[2].0.clone()).expect("utf8");
        log[2].0 = text.replacen("\"n\":2", "\"n\":7", 1).into_bytes();
    }
    let dir = tempfile::tempdir().expect("dir");
    let store = open_cache(dir.path(), &truth);
    caught_up(&store).await;
    match store.health() {
        LogHealth::Stopped(WriteFailure::Partition { reason, detail }) => {
            assert_eq!(reason, "cache_diverged");
            assert!(detail.contains("position 3"), "{detail}");
        }
        other => panic!("expected a halt, got {other:?}"),
    }
    assert_eq!(
        store.last_position(),
        Position(2),
        "applied up to the bad event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_to_a_plan_of_another_partition_is_refused() {
    let truth = Arc::new(MemoryLog::default());
    let dir = tempfile::tempdir().expect("dir");
    let count = planledger_store::PartitionCount::new(4).expect("count");
    let store = EventStore::open(
        dir.path(),
        StoreOptions {
            commit: Commit::External(truth.clone()),
            partition: Some((count, 0)),
            ..StoreOptions::default()
        },
    )
    .expect("open");
    caught_up(&store).await;
    let (mine, other) = {
        let names: Vec<String> = (0..64).map(|n| format!("t/p{n}")).collect();
        let of = |name: &String| count.partition_of(&support::stream(name)).index();
        (
            names
                .iter()
                .find(|n| of(n) == 0)
                .expect("a plan of p0")
                .clone(),
            names
                .iter()
                .find(|n| of(n) != 0)
                .expect("a plan elsewhere")
                .clone(),
        )
    };
    store
        .append(request(&mine, ExpectedVersion::Any, vec![event(1)]))
        .await
        .expect("its own partition's plan");
    let refused = store
        .append(request(&other, ExpectedVersion::Any, vec![event(2)]))
        .await
        .expect_err("another partition's plan");
    assert!(
        matches!(&refused, StoreError::PartitionUnavailable(m) if m.contains("partition")),
        "{refused}"
    );
    assert_eq!(truth.stored().len(), 1, "nothing of it was committed");
}
