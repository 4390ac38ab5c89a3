//! Plans longer than a snapshot interval are stored as a snapshot plus the events after it and
//! read back exactly as the domain replays them.

mod support;

use std::sync::Arc;

use planledger_projections::{
    LocalLogSource, ProgressProjector, ReadModelDb, SNAPSHOT_EVERY, spawn,
};
use support::*;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_long_plan_reads_back_as_its_replay_across_snapshots() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open_store(dir.path());
    let long = busy_plan("acme", "long", 60);
    let short = busy_plan("acme", "short", 3);
    append_scripts(&store, &[&long, &short]).await;
    assert!(
        long.plan.version > 2 * SNAPSHOT_EVERY,
        "the plan crosses two snapshots"
    );

    let db = ReadModelDb::open(dir.path().join("progress"), "progress").expect("open");
    let shutdown = CancellationToken::new();
    let (handle, task) = spawn(
        Arc::new(ProgressProjector),
        db.clone(),
        LocalLogSource::new(store.clone()),
        small_batches(),
        shutdown.clone(),
    )
    .expect("spawn");
    caught_up(&handle, store.last_position().get()).await;
    shutdown.cancel();
    task.await.expect("task").expect("clean stop");

    let view = db.view().expect("view");
    assert_eq!(
        view.plan("acme/long").expect("read"),
        Some(long.plan.clone())
    );
    assert_eq!(
        view.plan("acme/short").expect("read"),
        Some(short.plan.clone())
    );

    // One snapshot at the last multiple of the interval, one record per event after it.
    let records = dump_live(&db);
    let snapshots = records
        .iter()
        .filter(|(k, _)| k.as_slice() == b"Sacme/long")
        .count();
    let tail = records
        .iter()
        .filter(|(k, _)| k.starts_with(b"Eacme/long\0"))
        .count() as u64;
    assert_eq!(snapshots, 1);
    assert_eq!(tail, long.plan.version % SNAPSHOT_EVERY);
    assert!(!records.iter().any(|(k, _)| k.as_slice() == b"Sacme/short"));
}
