//! A failing disk: what callers are told when the write-ahead log cannot be synced, and what the
//! log holds after a restart.

use std::collections::BTreeSet;

use crate::support::*;
use planledger_store::{
    EventStore, ExpectedVersion, Position, StoreError, StoreOptions, SyncFault,
};

fn open_with_fault(dir: &tempfile::TempDir) -> (EventStore, SyncFault) {
    let fault = SyncFault::default();
    let store = EventStore::open(
        dir.path().join("log"),
        StoreOptions {
            sync_fault: Some(fault.clone()),
            ..StoreOptions::default()
        },
    )
    .expect("open");
    (store, fault)
}

/// The `n` of each event in the log.
fn marks(store: &EventStore) -> BTreeSet<u64> {
    store
        .read_all(Position(1), usize::MAX)
        .expect("read all")
        .iter()
        .map(|e| e.data_value()["n"].as_u64().expect("every event carries n"))
        .collect()
}

#[tokio::test]
async fn a_lone_append_whose_fsync_fails_is_unknown_and_the_log_stops() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, fault) = open_with_fault(&dir);
    store
        .append(request("t/a", ExpectedVersion::Any, vec![event(1)]))
        .await
        .expect("first append");

    fault.trigger();
    let failed = store
        .append(request("t/a", ExpectedVersion::Any, vec![event(2)]))
        .await
        .expect_err("the fsync fails");
    assert!(
        matches!(failed, StoreError::OutcomeUnknown(_)),
        "{failed:?}"
    );
    let refused = store
        .append(request("t/b", ExpectedVersion::Any, vec![event(3)]))
        .await
        .expect_err("the log refuses appends after a failed fsync");
    assert!(matches!(refused, StoreError::WriteFailed(_)), "{refused:?}");
    assert_eq!(
        store.last_position(),
        Position(1),
        "nothing more is durable"
    );
    // A reader waiting for the unconfirmed event (a repeated command id does) learns the same.
    let waited = store
        .wait_durable(Position(2))
        .await
        .expect_err("position 2 never becomes durable");
    assert!(
        matches!(waited, StoreError::OutcomeUnknown(_)),
        "{waited:?}"
    );
    drop(store);

    // The unconfirmed event reached the file before the sync "failed": after a restart it is
    // in the log although its caller got an error. That is why the error says "unknown".
    let store = reopen(&dir);
    assert_eq!(marks(&store), BTreeSet::from([1, 2]));
    assert_log_invariants(&store);
    store
        .append(request("t/b", ExpectedVersion::Any, vec![event(4)]))
        .await
        .expect("appends work again after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_fsync_fails_under_load_every_answer_tells_the_truth_about_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, fault) = open_with_fault(&dir);
    // Appenders run until the log refuses them; the fault strikes while batches are in flight.
    let mut tasks = Vec::new();
    for task in 0..64u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in 0.. {
                let n = task * 1_000_000 + i + 1;
                let stream = format!("t/{task}");
                let result = store
                    .append(request(&stream, ExpectedVersion::Any, vec![event(n)]))
                    .await;
                let stop = result.is_err();
                answers.push((n, result));
                if stop {
                    break;
                }
            }
            answers
        }));
    }
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while store.last_position() < Position(2_000) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the appenders reach position 2,000");
    fault.trigger();
    let (mut confirmed, mut unknown, mut refused) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for task in tasks {
        for (n, result) in task.await.expect("join") {
            match result {
                Ok(_) => confirmed.insert(n),
                Err(StoreError::OutcomeUnknown(_)) => unknown.insert(n),
                Err(StoreError::WriteFailed(_)) => refused.insert(n),
                Err(other) => panic!("append {n} failed with {other:?}"),
            };
        }
    }
    assert!(
        !unknown.is_empty(),
        "some appends were in flight when the fsync failed"
    );
    // Every confirmed append was covered by a successful fsync, and nothing else was.
    let synced: u64 = store
        .writer_stats()
        .sync_sizes
        .iter()
        .map(|(size, count)| *size as u64 * count)
        .sum();
    assert_eq!(synced, confirmed.len() as u64);
    drop(store);

    let store = reopen(&dir);
    let present = marks(&store);
    assert!(
        confirmed.is_subset(&present),
        "confirmed appends are missing: {:?}",
        confirmed.difference(&present).take(5).collect::<Vec<_>>()
    );
    assert!(
        present.is_disjoint(&refused),
        "appends answered 'nothing was appended' are in the log: {:?}",
        present.intersection(&refused).take(5).collect::<Vec<_>>()
    );
    assert!(
        present.difference(&confirmed).all(|n| unknown.contains(n)),
        "the log holds appends nobody was told about"
    );
    assert_log_invariants(&store);
}

#[tokio::test]
async fn below_the_free_space_reserve_appends_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    // No file system has this much free: the reserve is always short.
    let store = EventStore::open(
        dir.path().join("log"),
        StoreOptions {
            min_free_bytes: u64::MAX,
            ..StoreOptions::default()
        },
    )
    .expect("open");
    let refused = store
        .append(request("t/a", ExpectedVersion::Any, vec![event(1)]))
        .await
        .expect_err("the reserve is short");
    assert!(
        matches!(&refused, StoreError::StorageFull(message) if message.contains("without a restart")),
        "{refused:?}"
    );
    let health = store.health();
    assert_eq!(health.code(), "storage_full");
    assert!(!health.restart_required(), "{health:?}");
    assert_eq!(store.last_position(), Position(0));
    drop(store);

    // With a reserve the disk has, the same log takes appends: nothing was written before.
    let store = EventStore::open(
        dir.path().join("log"),
        StoreOptions {
            min_free_bytes: 1,
            ..StoreOptions::default()
        },
    )
    .expect("reopen");
    assert_eq!(store.health(), planledger_store::LogHealth::Writable);
    let outcome = store
        .append(request("t/a", ExpectedVersion::Any, vec![event(2)]))
        .await
        .expect("appends are taken");
    assert_eq!(outcome.position(), Position(1));
    assert_eq!(marks(&store), BTreeSet::from([2]));
}

#[tokio::test]
async fn after_a_failed_fsync_the_log_reports_that_a_restart_is_needed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, fault) = open_with_fault(&dir);
    assert_eq!(store.health(), planledger_store::LogHealth::Writable);
    fault.trigger();
    let _ = store
        .append(request("t/a", ExpectedVersion::Any, vec![event(1)]))
        .await
        .expect_err("the fsync fails");
    let health = store.health();
    assert_eq!(health.code(), "write_failed");
    assert!(health.restart_required());
    assert!(
        health.detail().is_some_and(|d| d.contains("restart")),
        "{health:?}"
    );
}
