//! Poison events: an event a projector cannot apply (an unknown type from a newer writer, a
//! payload that does not decode, a newer schema version) stops the projector at its position,
//! never skipped silently; an operator's quarantine lets it pass over exactly that position,
//! durably, in the live model and in rebuilds, with the same result as a log without the event.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use jiff::Timestamp;
use planledger_projections::{
    LocalLogSource, ProgressProjector, ProjectionError, ProjectionHandle, ProjectorState,
    QuarantineRequest, ReadModelDb, RuntimeOptions, quarantine_offline, rebuild_to, spawn,
};
use planledger_store::{
    AppendMeta, AppendRequest, EventStore, ExpectedVersion, NewEvent, Position, StreamId,
};
use tokio_util::sync::CancellationToken;

/// Appends one raw event below the domain (as a newer or foreign writer would).
async fn append_raw(store: &EventStore, stream: &str, event_type: &str, version: u32, data: &str) {
    let data = serde_json::value::RawValue::from_string(data.to_owned()).expect("test JSON");
    store
        .append(AppendRequest {
            stream: StreamId::new(stream).expect("valid stream id"),
            expected: ExpectedVersion::Any,
            events: vec![NewEvent::new(event_type, version, Timestamp::now(), data)],
            meta: AppendMeta {
                actor: "newer-writer".into(),
                ..AppendMeta::default()
            },
        })
        .await
        .expect("a raw append succeeds");
}

/// The plans of these tests: two plans, the poison lands in the middle of the first.
fn plans() -> (Script, Script) {
    (busy_plan("acme", "alpha", 6), busy_plan("acme", "beta", 4))
}

/// Appends the plans with `poison` (if any) after the first plan's first `split` commands;
/// returns the poison's position (0 without one).
async fn fill(store: &EventStore, poison: Option<(&str, u32, &str)>, split: usize) -> u64 {
    let (alpha, beta) = plans();
    append_scripts(store, &[&beta]).await;
    for (when, events) in &alpha.commands[..split] {
        store
            .append(append_request(&alpha.stream, *when, events))
            .await
            .expect("append");
    }
    let mut at = 0;
    if let Some((event_type, version, data)) = poison {
        append_raw(store, &alpha.stream, event_type, version, data).await;
        at = store.last_position().get();
    }
    for (when, events) in &alpha.commands[split..] {
        store
            .append(append_request(&alpha.stream, *when, events))
            .await
            .expect("append");
    }
    at
}

/// Every record of the live model except its checkpoint (whose position counts the poison).
fn records_without_checkpoint(db: &ReadModelDb) -> Vec<(Vec<u8>, Vec<u8>)> {
    dump_live(db)
        .into_iter()
        .filter(|(key, _)| key.as_slice() != b"C")
        .collect()
}

/// The read model built by a clean rebuild of a log without any poison.
async fn clean_model(dir: &std::path::Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let store = open_store(&dir.join("clean"));
    fill(&store, None, 10).await;
    let db = ReadModelDb::open(dir.join("clean-model"), "progress").expect("open");
    rebuild_to(
        Arc::new(ProgressProjector),
        db.clone(),
        LocalLogSource::new(store.clone()),
        RuntimeOptions::default(),
        store.last_position(),
        |_| {},
    )
    .await
    .expect("a log without poison rebuilds");
    records_without_checkpoint(&db)
}

type Task = tokio::task::JoinHandle<Result<(), ProjectionError>>;

fn start(
    db: &ReadModelDb,
    store: &EventStore,
    shutdown: &CancellationToken,
) -> (ProjectionHandle, Task) {
    spawn(
        Arc::new(ProgressProjector),
        db.clone(),
        LocalLogSource::new(store.clone()),
        small_batches(),
        shutdown.clone(),
    )
    .expect("spawn")
}

/// Shuts a projector down and waits until it has committed and stopped.
async fn stop(shutdown: &CancellationToken, task: Task) {
    shutdown.cancel();
    task.await
        .expect("the projector task does not panic")
        .expect("a projector stopped at a poison event shuts down cleanly");
}

/// A log in `dir` with `poison` after the first plan's first `split` commands, and a progress
/// projector started over it: (store, model, shutdown, handle, task, poison position).
async fn poisoned(
    dir: &std::path::Path,
    poison: (&str, u32, &str),
    split: usize,
) -> (
    EventStore,
    ReadModelDb,
    CancellationToken,
    ProjectionHandle,
    Task,
    u64,
) {
    let store = open_store(dir);
    let at = fill(&store, Some(poison), split).await;
    let db = ReadModelDb::open(dir.join("progress"), "progress").expect("open");
    let shutdown = CancellationToken::new();
    let (handle, task) = start(&db, &store, &shutdown);
    (store, db, shutdown, handle, task, at)
}

/// Waits (bounded, not timed) until the projector reports it is stopped at a poison event.
async fn stopped_at_poison(handle: &ProjectionHandle) -> planledger_projections::ProjectorStatus {
    let mut status = handle.subscribe();
    tokio::time::timeout(
        Duration::from_secs(60),
        status.wait_for(|s| s.poison.is_some()),
    )
    .await
    .expect("the projector stops at the poison event")
    .expect("the projector is running")
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_event_type_stops_the_projector_until_it_is_quarantined() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, db, shutdown, handle, task, poison) = poisoned(
        dir.path(),
        ("GoalRenamed", 1, r#"{"goal_id":"g0","title":"Renamed"}"#),
        10,
    )
    .await;
    let last = store.last_position().get();

    let status = stopped_at_poison(&handle).await;
    assert_eq!(status.state, ProjectorState::Stopped);
    assert!(!status.is_running(), "a stopped projector is not ready");
    assert_eq!(
        status.checkpoint,
        poison - 1,
        "everything before it is applied"
    );
    let found = status.poison.expect("the poison event is shown");
    assert_eq!(found.position, poison);
    assert_eq!(found.event_type, "GoalRenamed");
    assert_eq!(found.stream, "acme/alpha");
    assert!(
        found.error.contains("does not know") && found.error.contains("quarantine"),
        "the error says what is wrong and what to do: {}",
        found.error
    );
    assert_eq!(
        db.poison().expect("read").map(|p| p.position),
        Some(poison),
        "the stop is recorded in the read model for an offline quarantine"
    );

    let wrong = handle
        .quarantine(QuarantineRequest {
            position: poison + 1,
            reason: "wrong position".into(),
            by: "ops".into(),
        })
        .await;
    assert!(
        matches!(wrong, Err(ProjectionError::QuarantineRefused { .. })),
        "only the position it is stopped at can be quarantined: {wrong:?}"
    );

    let record = handle
        .quarantine(QuarantineRequest {
            position: poison,
            reason: "written by a newer build; not needed by progress".into(),
            by: "ops".into(),
        })
        .await
        .expect("the quarantine is recorded");
    assert_eq!(
        (
            record.position,
            record.event_type.as_str(),
            record.by.as_str()
        ),
        (poison, "GoalRenamed", "ops")
    );
    caught_up(&handle, last).await;
    let status = handle.status();
    assert!(status.poison.is_none());
    assert!(status.is_running());
    assert_eq!(
        status
            .quarantined
            .iter()
            .map(|q| q.position)
            .collect::<Vec<_>>(),
        vec![poison]
    );
    stop(&shutdown, task).await;

    let expected = clean_model(dir.path()).await;
    assert_eq!(
        records_without_checkpoint(&db),
        expected,
        "the model equals one built from a log without the quarantined event"
    );

    // The quarantine is durable and a rebuild passes over the same position.
    drop(handle);
    drop(db);
    let db = ReadModelDb::open(dir.path().join("progress"), "progress").expect("reopen");
    assert_eq!(
        db.quarantines().keys().copied().collect::<Vec<_>>(),
        vec![poison]
    );
    rebuild_to(
        Arc::new(ProgressProjector),
        db.clone(),
        LocalLogSource::new(store.clone()),
        RuntimeOptions::default(),
        Position(last),
        |_| {},
    )
    .await
    .expect("a rebuild passes over the quarantined position");
    assert_eq!(records_without_checkpoint(&db), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_fails_to_decode_stops_the_projector_and_an_offline_quarantine_frees_it() {
    let dir = tempfile::tempdir().expect("dir");
    // A known type, at its current version, whose data does not match it.
    let checkin_version =
        planledger_domain::event::current_version("CheckInRecorded").expect("a known type");
    let (store, db, shutdown, handle, task, poison) = poisoned(
        dir.path(),
        ("CheckInRecorded", checkin_version, r#"{"goal_id":42}"#),
        12,
    )
    .await;
    let last = store.last_position().get();
    let status = stopped_at_poison(&handle).await;
    let found = status.poison.expect("shown");
    assert_eq!(
        (found.position, found.event_type.as_str()),
        (poison, "CheckInRecorded")
    );
    assert!(
        found.error.contains("cannot be projected"),
        "the decode error is shown: {}",
        found.error
    );
    assert_eq!(status.checkpoint, poison - 1);
    stop(&shutdown, task).await;

    // With the projector stopped: the recorded poison describes the event.
    let record = quarantine_offline(
        &db,
        &QuarantineRequest {
            position: poison,
            reason: "corrupt payload from a test writer".into(),
            by: "ops".into(),
        },
        None,
    )
    .expect("an offline quarantine of the recorded poison");
    assert_eq!(record.event_type, "CheckInRecorded");
    assert!(
        record
            .error
            .is_some_and(|e| e.contains("cannot be projected"))
    );
    let again = quarantine_offline(
        &db,
        &QuarantineRequest {
            position: poison,
            reason: "twice".into(),
            by: "ops".into(),
        },
        None,
    );
    assert!(matches!(
        again,
        Err(ProjectionError::QuarantineRefused { .. })
    ));

    let shutdown = CancellationToken::new();
    let (handle, task) = start(&db, &store, &shutdown);
    caught_up(&handle, last).await;
    assert!(handle.status().poison.is_none());
    assert_eq!(
        handle.status().quarantined.len(),
        1,
        "the quarantine is listed"
    );
    stop(&shutdown, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_version_stops_the_projector_and_a_rebuild_refuses_it_too() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, db, shutdown, handle, task, poison) = poisoned(
        dir.path(),
        (
            "GoalDefined",
            99,
            r#"{"goal_id":"g9","title":"From the future","due":"2026-06-01"}"#,
        ),
        8,
    )
    .await;
    let found = stopped_at_poison(&handle).await.poison.expect("shown");
    assert_eq!((found.position, found.schema_version), (poison, 99));
    stop(&shutdown, task).await;

    let rebuilt = rebuild_to(
        Arc::new(ProgressProjector),
        db.clone(),
        LocalLogSource::new(store.clone()),
        RuntimeOptions::default(),
        store.last_position(),
        |_| {},
    )
    .await;
    match rebuilt {
        Err(error) => assert!(error.is_poison(), "refused as a poison event: {error}"),
        Ok(report) => panic!("a rebuild must not pass over an unquarantined poison: {report:?}"),
    }
}
