//! Redelivery: a source that delivers events again (as JetStream does after a missed ack or a
//! consumer restart) changes nothing in the read model.

use std::sync::Arc;

use crate::support::*;
use planledger_projections::{
    AccountabilityProjector, Projector, ReadModelDb, RuntimeOptions, rebuild_to, spawn,
};
use planledger_store::Position;
use tokio_util::sync::CancellationToken;

async fn history(dir: &std::path::Path) -> Vec<planledger_store::Envelope> {
    let store = open_store(dir);
    let plans = [
        busy_plan("acme", "alpha", 12),
        busy_plan("acme", "beta", 9),
        busy_plan("globex", "alpha", 7),
    ];
    append_scripts(&store, &plans.iter().collect::<Vec<_>>()).await;
    all_envelopes(&store)
}

async fn project_with(
    db: &ReadModelDb,
    source: RedeliveringSource,
    options: RuntimeOptions,
    through: u64,
) {
    let shutdown = CancellationToken::new();
    let projector: Arc<dyn Projector> = Arc::new(AccountabilityProjector);
    let (handle, task) =
        spawn(projector, db.clone(), source, options, shutdown.clone()).expect("spawn");
    caught_up(&handle, through).await;
    shutdown.cancel();
    task.await.expect("task").expect("clean stop");
}

async fn clean_rebuild(
    dir: &std::path::Path,
    envelopes: Vec<planledger_store::Envelope>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = ReadModelDb::open(dir.join("clean"), "accountability").expect("open");
    let last = envelopes.len() as u64;
    rebuild_to(
        Arc::new(AccountabilityProjector),
        db.clone(),
        RedeliveringSource::new(envelopes, 0, false),
        RuntimeOptions::default(),
        Position(last),
        |_| {},
    )
    .await
    .expect("clean rebuild");
    dump_live(&db)
}

#[tokio::test]
async fn redelivered_and_duplicated_events_change_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let envelopes = history(dir.path()).await;
    let last = envelopes.len() as u64;
    let expected = clean_rebuild(dir.path(), envelopes.clone()).await;

    // Every batch starts 25 positions back and carries each event twice.
    let db = ReadModelDb::open(dir.path().join("noisy"), "accountability").expect("open");
    let noisy = RedeliveringSource::new(envelopes, 25, true);
    let acknowledged = noisy.acknowledged.clone();
    project_with(&db, noisy, small_batches(), last).await;
    assert_eq!(
        dump_live(&db),
        expected,
        "redelivery changed the read model"
    );

    let acks = acknowledged.lock().expect("acks").clone();
    assert!(!acks.is_empty(), "commits are acknowledged");
    assert!(
        acks.windows(2).all(|w| w[0] <= w[1]),
        "acks never go back: {acks:?}"
    );
    assert_eq!(
        acks.last().copied(),
        Some(last),
        "the final commit is acknowledged"
    );
}

#[tokio::test]
async fn replaying_the_whole_history_into_a_caught_up_model_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let envelopes = history(dir.path()).await;
    let last = envelopes.len() as u64;
    let db = ReadModelDb::open(dir.path().join("model"), "accountability").expect("open");
    project_with(
        &db,
        RedeliveringSource::new(envelopes.clone(), 0, false),
        small_batches(),
        last,
    )
    .await;
    let before = dump_live(&db);
    assert_eq!(
        db.checkpoint(db.live_generation())
            .expect("checkpoint")
            .position,
        last
    );

    // A restarted consumer that redelivers its whole retention from position 1.
    let again = RedeliveringSource::new(envelopes, 0, false).replaying_everything();
    let replayed = again.replayed.clone();
    let shutdown = CancellationToken::new();
    let (handle, task) = spawn(
        Arc::new(AccountabilityProjector),
        db.clone(),
        again,
        small_batches(),
        shutdown.clone(),
    )
    .expect("spawn");
    // The runtime finishes the batch in hand before it notices shutdown, so once the source has
    // handed out its last batch, stopping it means every redelivered event went through it.
    while !replayed.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    task.await.expect("task").expect("clean stop");
    assert_eq!(
        handle.status().events_applied,
        0,
        "nothing was applied twice"
    );
    assert_eq!(
        dump_live(&db),
        before,
        "replaying history changed the read model"
    );
}
