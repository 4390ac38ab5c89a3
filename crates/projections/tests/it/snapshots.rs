//! Plans whose events outgrow the snapshot threshold are stored as a snapshot plus the events
//! after it, and read back exactly as the domain replays them.

use std::sync::Arc;

use crate::support::*;
use planledger_projections::{
    LocalLogSource, ProgressProjector, ReadModelDb, SNAPSHOT_MIN_TAIL_BYTES, spawn,
};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_long_plan_reads_back_as_its_replay_across_snapshots() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open_store(dir.path());
    let long = busy_plan("acme", "long", 100);
    let short = busy_plan("acme", "short", 3);
    append_scripts(&store, &[&long, &short]).await;

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

    // One snapshot, and a tail shorter than the threshold that would replace it.
    let records = dump_live(&db);
    let snapshot = records
        .iter()
        .find(|(k, _)| k.as_slice() == b"Sacme/long")
        .map(|(_, v)| v.len())
        .expect("the long plan has a snapshot");
    let tail: usize = records
        .iter()
        .filter(|(k, _)| k.starts_with(b"Eacme/long\0"))
        .map(|(_, v)| v.len())
        .sum();
    let events: usize = all_envelopes(&store)
        .iter()
        .filter(|e| e.stream.as_str() == "acme/long")
        .map(|e| e.data.get().len())
        .sum();
    assert!(
        events > 2 * SNAPSHOT_MIN_TAIL_BYTES,
        "the plan outgrew the threshold twice"
    );
    assert!(
        tail < SNAPSHOT_MIN_TAIL_BYTES.max(snapshot / 2),
        "tail {tail}, snapshot {snapshot}"
    );
    // The short plan never reached the threshold: events only.
    assert!(!records.iter().any(|(k, _)| k.as_slice() == b"Sacme/short"));
    assert!(records.iter().any(|(k, _)| k.starts_with(b"Eacme/short\0")));
}
