//! Rebuilds: a running projector rebuilds its model in a new generation from position 0 while
//! events keep arriving; readers keep seeing the old model until the new one has caught up,
//! then the new one, which equals a clean rebuild.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::*;
use planledger_projections::{
    LocalLogSource, ProgressProjector, ReadModelDb, RuntimeOptions, rebuild_to, spawn,
};
use planledger_store::Position;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_switches_atomically_while_events_keep_arriving() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open_store(dir.path());
    let first: Vec<Script> = (0..4)
        .map(|i| busy_plan("acme", &format!("p{i}"), 20))
        .collect();
    append_scripts(&store, &first.iter().collect::<Vec<_>>()).await;

    let db = ReadModelDb::open(dir.path().join("progress"), "progress").expect("open");
    let shutdown = CancellationToken::new();
    let (handle, task) = spawn(
        Arc::new(ProgressProjector),
        db.clone(),
        LocalLogSource::new(store.clone()),
        RuntimeOptions {
            batch_size: 64,
            ..RuntimeOptions::default()
        },
        shutdown.clone(),
    )
    .expect("spawn");
    caught_up(&handle, store.last_position().get()).await;
    assert_eq!(handle.status().generation, 1);

    // A reader that watches the live model throughout the rebuild.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let db = db.clone();
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            let mut observations = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let view = db.view().expect("view");
                let checkpoint = view.checkpoint().expect("checkpoint").position;
                let version = view.plan("acme/p0").expect("read").map(|p| p.version);
                observations.push((view.generation(), checkpoint, version));
                std::thread::sleep(Duration::from_millis(1));
            }
            observations
        })
    };

    let status = handle.rebuild().await.expect("rebuild accepted");
    let building = status.rebuild.expect("a rebuild is running").generation;
    assert_eq!(building, 2);
    // Asking again while it runs does not start another one.
    let again = handle.rebuild().await.expect("second request");
    assert_eq!(again.rebuild.map(|r| r.generation), Some(building));

    let second: Vec<Script> = (4..8)
        .map(|i| busy_plan("acme", &format!("p{i}"), 20))
        .collect();
    append_scripts(&store, &second.iter().collect::<Vec<_>>()).await;
    let last = store.last_position().get();
    caught_up(&handle, last).await;
    let mut status = handle.status();
    for _ in 0..60_000 {
        if status.generation == building && status.rebuild.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        status = handle.status();
    }
    assert_eq!(
        status.generation, building,
        "the rebuild became live: {status:?}"
    );
    assert!(status.rebuild.is_none());
    caught_up(&handle, last).await;

    stop.store(true, Ordering::SeqCst);
    let observations = watcher.await.expect("watcher");
    shutdown.cancel();
    task.await.expect("task").expect("clean stop");

    // Readers saw the checkpoint only move forward, and never lost the plan (never a half-built model).
    assert!(
        observations.windows(2).all(|w| w[0].1 <= w[1].1),
        "checkpoint went back"
    );
    assert!(
        observations.iter().all(|o| o.2.is_some()),
        "a reader saw the plan missing"
    );
    assert!(observations.iter().any(|o| o.0 == 1));

    let clean_db = ReadModelDb::open(dir.path().join("clean"), "progress").expect("open");
    rebuild_to(
        Arc::new(ProgressProjector),
        clean_db.clone(),
        LocalLogSource::new(store.clone()),
        RuntimeOptions::default(),
        Position(last),
        |_| {},
    )
    .await
    .expect("clean rebuild");
    assert!(
        dump_live(&db) == dump_live(&clean_db),
        "the rebuilt model differs from a clean one"
    );
}

#[tokio::test]
async fn an_interrupted_rebuild_resumes_after_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open_store(dir.path());
    let plans: Vec<Script> = (0..3)
        .map(|i| busy_plan("acme", &format!("p{i}"), 15))
        .collect();
    append_scripts(&store, &plans.iter().collect::<Vec<_>>()).await;
    let last = store.last_position().get();
    let path = dir.path().join("progress");

    // A rebuild whose generation exists and is recorded as building, as a crash leaves it.
    {
        let db = ReadModelDb::open(&path, "progress").expect("open");
        let generation = db.start_generation().expect("start");
        assert_eq!(db.building_generation().expect("meta"), Some(generation));
    }
    let db = ReadModelDb::open(&path, "progress").expect("reopen");
    assert_eq!(db.building_generation().expect("meta"), Some(2));
    let shutdown = CancellationToken::new();
    let (handle, task) = spawn(
        Arc::new(ProgressProjector),
        db.clone(),
        LocalLogSource::new(store.clone()),
        small_batches(),
        shutdown.clone(),
    )
    .expect("spawn");
    caught_up(&handle, last).await;
    let mut status = handle.status();
    for _ in 0..60_000 {
        if status.generation == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        status = handle.status();
    }
    assert_eq!(
        status.generation, 2,
        "the resumed rebuild became live: {status:?}"
    );
    assert_eq!(db.building_generation().expect("meta"), None);
    shutdown.cancel();
    task.await.expect("task").expect("clean stop");
    assert_eq!(db.checkpoint(2).expect("checkpoint").position, last);
}

/// Cluster mode: a coordinated rebuild (every partition's runtime fills one new generation)
/// goes live once every partition has caught up, and the old generation's keys are dropped as
/// soon as every partition's runtime has moved off it, not at the next restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinated_rebuild_drops_the_old_generation_once_every_partition_moved_off_it() {
    const PARTITIONS: u32 = 3;
    let dir = tempfile::tempdir().expect("dir");
    // One log per partition, each with its own plans.
    let mut logs = Vec::new();
    for p in 0..PARTITIONS {
        let store = open_store(&dir.path().join(format!("log-{p}")));
        let scripts: Vec<Script> = (0..3)
            .map(|i| busy_plan("acme", &format!("p{p}-{i}"), 10))
            .collect();
        append_scripts(&store, &scripts.iter().collect::<Vec<_>>()).await;
        logs.push(store);
    }
    let db = ReadModelDb::open(dir.path().join("progress"), "progress").expect("open");
    db.claim_partitions(PARTITIONS).expect("claim");
    let shutdown = CancellationToken::new();
    let mut handles = Vec::new();
    let mut tasks = Vec::new();
    for (p, store) in (0..PARTITIONS).zip(&logs) {
        let (handle, task) = spawn(
            Arc::new(ProgressProjector),
            db.for_partition(p, PARTITIONS),
            LocalLogSource::new(store.clone()),
            small_batches(),
            shutdown.clone(),
        )
        .expect("spawn");
        handles.push(handle);
        tasks.push(task);
    }
    for (handle, store) in handles.iter().zip(&logs) {
        caught_up(handle, store.last_position().get()).await;
    }
    let old = db.live_generation();
    let facts = |db: &ReadModelDb| {
        dump_live(db)
            .into_iter()
            .filter(|(key, _)| !planledger_projections::is_bookkeeping_key(key))
            .collect::<Vec<_>>()
    };
    let before = facts(&db);
    assert!(!before.is_empty(), "the old generation holds the model");

    for handle in &handles {
        handle.rebuild().await.expect("rebuild accepted");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while handles.iter().any(|h| {
        let status = h.status();
        status.generation == old || status.rebuild.is_some()
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "the coordinated rebuild never went live on every partition: {:?}",
            handles.iter().map(|h| h.status()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let new = db.live_generation();
    assert!(new > old, "generation {new} replaced {old}");
    assert!(
        db.dump_generation(old).is_err(),
        "the old generation {old} is dropped once every partition moved off it, with its keys"
    );
    assert!(facts(&db) == before, "the rebuilt model equals the old one");
    shutdown.cancel();
    for task in tasks {
        task.await.expect("join").expect("the projector ran");
    }
}
