//! Behaviour of appends and reads on a real RocksDB.

use std::sync::Arc;

use crate::support::*;
use planledger_store::{EventStore, ExpectedVersion, Position, ReadDirection, StoreError, Version};

#[tokio::test]
async fn first_append_starts_stream_and_log_at_one() {
    let (_dir, store) = open_temp();
    let outcome = store
        .append(request(
            "t/a",
            ExpectedVersion::NoStream,
            vec![event(1), event(2)],
        ))
        .await
        .expect("append");
    assert!(!outcome.deduplicated);
    let positions: Vec<u64> = outcome
        .envelopes()
        .iter()
        .map(|e| e.position.get())
        .collect();
    let versions: Vec<u64> = outcome
        .envelopes()
        .iter()
        .map(|e| e.version.get())
        .collect();
    assert_eq!(positions, vec![1, 2]);
    assert_eq!(versions, vec![1, 2]);
    assert_eq!(store.last_position(), Position(2));
    assert_eq!(
        outcome.envelopes()[0].prev_hash,
        planledger_store::GENESIS_HASH
    );
    assert_eq!(
        outcome.envelopes()[1].prev_hash,
        outcome.envelopes()[0].hash
    );
    assert_log_invariants(&store);
}

#[tokio::test]
async fn an_append_hands_back_each_envelope_as_stored() {
    let (_dir, store) = open_temp();
    store
        .append(request("t/a", ExpectedVersion::Any, vec![event(1)]))
        .await
        .expect("first");
    // Several events with metadata, so every field of the envelope is rendered.
    let mut append = with_command(
        request("t/b", ExpectedVersion::NoStream, vec![event(2), event(3)]),
        "cmd-stored",
        "f",
    );
    append.meta.correlation_id = Some("corr \"quoted\"".into());
    append.meta.traceparent =
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    let outcome = store.append(append).await.expect("append");
    assert_eq!(outcome.stored().len(), 2);
    for (envelope, stored) in outcome.envelopes().iter().zip(outcome.stored()) {
        let in_log = store
            .read_raw(envelope.position)
            .expect("read")
            .expect("present");
        assert_eq!(stored, &in_log, "the bytes the log holds");
        assert_eq!(
            stored,
            &serde_json::to_vec(envelope).expect("serialize"),
            "the envelope's serde form"
        );
    }
    // A repeat is read back from the log and carries no stored bytes.
    let again = store
        .append(with_command(
            request("t/b", ExpectedVersion::Any, vec![event(2), event(3)]),
            "cmd-stored",
            "f",
        ))
        .await
        .expect("repeat");
    assert!(again.deduplicated);
    assert!(again.stored().is_empty());
    assert_eq!(again.envelopes(), outcome.envelopes());
}

#[tokio::test]
async fn an_outcome_agrees_with_its_envelopes() {
    let (_dir, store) = open_temp();
    let first = with_command(
        request(
            "t/b",
            ExpectedVersion::NoStream,
            vec![event(2), event(3), event(4)],
        ),
        "cmd-agree",
        "f",
    );
    let fresh = store.append(first.clone()).await.expect("append");
    let repeat = store.append(first).await.expect("repeat");
    for outcome in [fresh, repeat] {
        let envelopes = outcome.envelopes();
        assert_eq!(outcome.len(), 3);
        assert!(!outcome.is_empty());
        assert_eq!(outcome.version(), Version(3));
        assert_eq!(outcome.position(), Position(3));
        let last = envelopes.last().expect("three envelopes");
        assert_eq!((last.version, last.position), (Version(3), Position(3)));
        let in_log = store
            .read_stream(&stream("t/b"), Version(1), ReadDirection::Forward, 10)
            .expect("read");
        assert_eq!(envelopes, in_log, "built as the log stores them");
        assert_eq!(outcome.into_envelopes(), in_log);
    }
}

#[tokio::test]
async fn conflict_error_carries_the_current_version() {
    let (_dir, store) = open_temp();
    store
        .append(request(
            "t/a",
            ExpectedVersion::Any,
            vec![event(1), event(2), event(3)],
        ))
        .await
        .expect("append");
    let error = store
        .append(request(
            "t/a",
            ExpectedVersion::Exact(Version(1)),
            vec![event(4)],
        ))
        .await
        .expect_err("stale expected version must conflict");
    match error {
        StoreError::Conflict {
            stream,
            expected,
            current,
            log_position,
        } => {
            assert_eq!(
                log_position,
                Position(3),
                "the log's head when it was refused"
            );
            assert_eq!(stream.as_str(), "t/a");
            assert_eq!(expected, ExpectedVersion::Exact(Version(1)));
            assert_eq!(current, Version(3));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let error = store
        .append(request("t/a", ExpectedVersion::NoStream, vec![event(4)]))
        .await
        .expect_err("existing stream is not 'no stream'");
    assert!(matches!(
        error,
        StoreError::Conflict {
            current: Version(3),
            ..
        }
    ));
    assert_eq!(
        store.last_position(),
        Position(3),
        "a conflict writes nothing"
    );
}

#[tokio::test]
async fn repeated_command_id_returns_first_result_and_writes_nothing() {
    let (_dir, store) = open_temp();
    let first = store
        .append(with_command(
            request("t/a", ExpectedVersion::Any, vec![event(1)]),
            "cmd-1",
            "f",
        ))
        .await
        .expect("first");
    let again = store
        .append(with_command(
            request("t/a", ExpectedVersion::Any, vec![event(1)]),
            "cmd-1",
            "f",
        ))
        .await
        .expect("repeat");
    assert!(again.deduplicated);
    assert_eq!(again.envelopes(), first.envelopes());
    assert_eq!(store.last_position(), Position(1));
    // Even a repeat whose expected version is now stale returns the first result.
    let stale = store
        .append(with_command(
            request("t/a", ExpectedVersion::NoStream, vec![event(1)]),
            "cmd-1",
            "f",
        ))
        .await
        .expect("repeat with stale expectation");
    assert_eq!(stale.envelopes(), first.envelopes());
}

#[tokio::test]
async fn command_id_reused_with_other_content_is_refused() {
    let (_dir, store) = open_temp();
    store
        .append(with_command(
            request("t/a", ExpectedVersion::Any, vec![event(1)]),
            "cmd-1",
            "f",
        ))
        .await
        .expect("first");
    let error = store
        .append(with_command(
            request("t/a", ExpectedVersion::Any, vec![event(2)]),
            "cmd-1",
            "g",
        ))
        .await
        .expect_err("other content");
    assert!(
        matches!(error, StoreError::CommandIdReused { .. }),
        "{error:?}"
    );
    let error = store
        .append(with_command(
            request("t/b", ExpectedVersion::Any, vec![event(2)]),
            "cmd-1",
            "f",
        ))
        .await
        .expect_err("other stream");
    assert!(
        matches!(error, StoreError::CommandIdReused { .. }),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_id_sent_to_two_streams_at_once_appends_once() {
    let (_dir, store) = open_temp();
    // Pairs sent together: many land in one batch, where the repeat is found among the
    // batch's own appends rather than in the log; both ways it must be refused.
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let send = |name: &'static str| {
                    let store = store.clone();
                    async move {
                        store
                            .append(with_command(
                                request(name, ExpectedVersion::Any, vec![event(n)]),
                                &format!("cmd-{n}"),
                                "f",
                            ))
                            .await
                    }
                };
                tokio::join!(send("t/left"), send("t/right"))
            })
        })
        .collect();
    for task in tasks {
        let (left, right) = task.await.expect("join");
        let (won, lost) = match (&left, &right) {
            (Ok(_), Err(_)) => (left, right),
            (Err(_), Ok(_)) => (right, left),
            _ => panic!("exactly one of a pair appends: {left:?} / {right:?}"),
        };
        assert!(!won.expect("the winner").deduplicated);
        assert!(
            matches!(lost, Err(StoreError::CommandIdReused { .. })),
            "{lost:?}"
        );
    }
    assert_eq!(store.last_position(), Position(200));
    assert_log_invariants(&store);
}

#[tokio::test]
async fn repeats_inside_one_batch_are_deduplicated() {
    let (_dir, store) = open_temp();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append(with_command(
                    request("t/a", ExpectedVersion::Any, vec![event(1)]),
                    "same",
                    "f",
                ))
                .await
        }));
    }
    let mut first = None;
    for task in tasks {
        let outcome = task.await.expect("join").expect("append");
        let envelopes = outcome.envelopes();
        match &first {
            None => first = Some(envelopes),
            Some(f) => assert_eq!(f, &envelopes),
        }
    }
    assert_eq!(
        store.last_position(),
        Position(1),
        "fifty sends of one command write one event"
    );
}

#[tokio::test]
async fn empty_append_is_rejected() {
    let (_dir, store) = open_temp();
    let error = store
        .append(request("t/a", ExpectedVersion::Any, vec![]))
        .await
        .expect_err("empty");
    assert!(matches!(error, StoreError::EmptyAppend));
}

#[tokio::test]
async fn only_appends_with_matching_expected_versions_succeed_under_concurrency() {
    let (_dir, store) = open_temp();
    let streams = ["t/s0", "t/s1", "t/s2", "t/s3"];
    let tasks_per_stream = 64;
    let mut handles = Vec::new();
    for (s, name) in streams.iter().enumerate() {
        for task in 0..tasks_per_stream {
            let store = store.clone();
            let name = name.to_string();
            handles.push(tokio::spawn(async move {
                // Each task keeps trying to append at the version it last saw, 4 times.
                let mut won = Vec::new();
                for attempt in 0..4u64 {
                    let seen = store.stream_version(&stream(&name)).expect("head");
                    let result = store
                        .append(request(
                            &name,
                            ExpectedVersion::Exact(seen),
                            vec![event((s * 1000 + task * 10) as u64 + attempt)],
                        ))
                        .await;
                    match result {
                        Ok(outcome) => {
                            assert_eq!(outcome.envelopes()[0].version, Version(seen.get() + 1));
                            won.push((name.clone(), outcome.envelopes()[0].version));
                        }
                        Err(StoreError::Conflict { current, .. }) => {
                            assert!(
                                current.get() > seen.get(),
                                "a conflict means someone else won"
                            );
                        }
                        Err(other) => panic!("unexpected error {other:?}"),
                    }
                }
                won
            }));
        }
    }
    let mut wins: Vec<(String, Version)> = Vec::new();
    for handle in handles {
        wins.extend(handle.await.expect("join"));
    }
    // Each (stream, version) was won exactly once, and the wins are exactly the stream's versions.
    let mut sorted = wins.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), wins.len(), "no version was won twice");
    for name in streams {
        let count = wins.iter().filter(|(n, _)| n == name).count() as u64;
        assert_eq!(
            store.stream_version(&stream(name)).expect("head").get(),
            count
        );
    }
    assert_eq!(store.last_position().get(), wins.len() as u64);
    assert_log_invariants(&store);
}

#[tokio::test]
async fn streams_read_forward_and_backward() {
    let (_dir, store) = open_temp();
    for n in 0..10 {
        store
            .append(request(
                if n % 2 == 0 { "t/even" } else { "t/odd" },
                ExpectedVersion::Any,
                vec![event(n)],
            ))
            .await
            .expect("append");
    }
    let s = stream("t/even");
    let forward = store
        .read_stream(&s, Version(2), ReadDirection::Forward, 2)
        .expect("read");
    assert_eq!(
        forward.iter().map(|e| e.version.get()).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(
        forward.iter().map(|e| e.position.get()).collect::<Vec<_>>(),
        vec![3, 5]
    );
    let backward = store
        .read_stream(&s, Version(u64::MAX), ReadDirection::Backward, 3)
        .expect("read");
    assert_eq!(
        backward.iter().map(|e| e.version.get()).collect::<Vec<_>>(),
        vec![5, 4, 3]
    );
    let none = store
        .read_stream(&stream("t/none"), Version(1), ReadDirection::Forward, 10)
        .expect("read");
    assert!(none.is_empty());
    let page = store.read_all(Position(9), 100).expect("read all");
    assert_eq!(
        page.iter().map(|e| e.position.get()).collect::<Vec<_>>(),
        vec![9, 10]
    );
}

#[tokio::test]
async fn position_at_time_finds_last_event_recorded_by_then() {
    let (_dir, store) = open_temp();
    let first = store
        .append(request("t/a", ExpectedVersion::Any, vec![event(1)]))
        .await
        .expect("a");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = store
        .append(request("t/a", ExpectedVersion::Any, vec![event(2)]))
        .await
        .expect("b");
    let t1 = first.envelopes()[0].recorded_at;
    let t2 = second.envelopes()[0].recorded_at;
    assert!(t1 < t2);
    assert_eq!(store.position_at(t1).expect("at"), Position(1));
    assert_eq!(store.position_at(t2).expect("at"), Position(2));
    assert_eq!(
        store.position_at(jiff::Timestamp::UNIX_EPOCH).expect("at"),
        Position(0)
    );
}

#[tokio::test]
async fn snapshots_return_latest_at_or_below_a_version() {
    let (_dir, store) = open_temp();
    let s = stream("t/a");
    store.put_snapshot(&s, Version(10), b"ten").expect("put");
    store.put_snapshot(&s, Version(20), b"twenty").expect("put");
    store
        .put_snapshot(&stream("t/b"), Version(5), b"other")
        .expect("put");
    assert_eq!(
        store.latest_snapshot(&s, Version(15)).expect("get"),
        Some((Version(10), b"ten".to_vec()))
    );
    assert_eq!(
        store.latest_snapshot(&s, Version(99)).expect("get"),
        Some((Version(20), b"twenty".to_vec()))
    );
    assert_eq!(store.latest_snapshot(&s, Version(9)).expect("get"), None);
    assert_eq!(
        store
            .latest_snapshot(&stream("t/0"), Version(9))
            .expect("get"),
        None
    );
}

#[tokio::test]
async fn checkpoints_are_named_and_persist() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let store =
            planledger_store::EventStore::open(dir.path(), Default::default()).expect("open");
        assert_eq!(store.checkpoint("relay").expect("get"), None);
        store.put_checkpoint("relay", Position(42)).expect("put");
        store
            .append(request("t/a", ExpectedVersion::Any, vec![event(1)]))
            .await
            .expect("append");
    }
    // Dropping the last handle closes the database, so it can be reopened at once.
    let store = planledger_store::EventStore::open(dir.path(), Default::default()).expect("reopen");
    assert_eq!(store.checkpoint("relay").expect("get"), Some(Position(42)));
    assert_eq!(store.last_position(), Position(1));
    let next = store
        .append(request(
            "t/a",
            ExpectedVersion::Exact(Version(1)),
            vec![event(2)],
        ))
        .await
        .expect("append");
    assert_eq!(next.envelopes()[0].position, Position(2));
    assert_log_invariants(&store);
}

#[tokio::test]
async fn verify_reports_first_tampered_position() {
    let (_dir, store) = open_temp();
    for n in 0..5 {
        store
            .append(request("t/a", ExpectedVersion::Any, vec![event(n)]))
            .await
            .expect("append");
    }
    let report = store.verify(|_| {}).expect("verify");
    assert_eq!(report.first_broken, None);
    assert_eq!(report.checked, 5);

    // Change one byte of the payload at position 3 (a digit of "n").
    change_digit(&store, Position(3), 2, b'7');
    let report = store.verify(|_| {}).expect("verify");
    let (position, why) = report.first_broken.expect("tamper is detected");
    assert_eq!(position, Position(3));
    assert!(why.contains("hash"), "{why}");
    assert_eq!(report.checked, 2);
}

#[tokio::test]
async fn verify_detects_a_rewritten_chain_link() {
    let (_dir, store) = open_temp();
    for n in 0..3 {
        store
            .append(request("t/a", ExpectedVersion::Any, vec![event(n)]))
            .await
            .expect("append");
    }
    // Rewrite position 2 consistently with itself but not with position 1: a forger recomputing
    // only one hash is caught at the next link.
    let mut envelope = store
        .read_position(Position(2))
        .expect("read")
        .expect("present");
    envelope.actor = "mallory".into();
    envelope.hash = envelope.compute_hash();
    store
        .overwrite_raw_for_tests(Position(2), &serde_json::to_vec(&envelope).expect("json"))
        .expect("tamper");
    let report = store.verify(|_| {}).expect("verify");
    let (position, why) = report.first_broken.expect("detected");
    assert_eq!(position, Position(3));
    assert!(why.contains("prev_hash"), "{why}");
}

#[test]
fn invalid_stream_ids_are_refused() {
    assert!(planledger_store::StreamId::new("").is_err());
    assert!(planledger_store::StreamId::new("a\0b").is_err());
    assert!(planledger_store::StreamId::new("x".repeat(201)).is_err());
    assert!(planledger_store::StreamId::new("acme/plan-1").is_ok());
}

#[tokio::test]
async fn serial_appends_are_each_synced_by_the_writer_itself() {
    let (_dir, store) = open_temp();
    for n in 0..20u64 {
        store
            .append(request("t/serial", ExpectedVersion::Any, vec![event(n)]))
            .await
            .expect("append");
        // Answered means durable: the durable position has reached it.
        assert_eq!(store.last_position(), Position(n + 1));
    }
    let stats = store.writer_stats();
    assert_eq!(stats.batches, 20);
    assert_eq!(
        stats.sync_sizes.get(&1),
        Some(&20),
        "{:?}",
        stats.sync_sizes
    );
    // Under serial load the writer syncs each one itself (no hand-over to the syncer).
    assert_eq!(stats.inline_syncs, 20);
    assert_log_invariants(&store);
}

#[tokio::test]
async fn many_concurrent_appends_form_batches() {
    let (_dir, store) = open_temp();
    let store = Arc::new(store);
    let mut handles = Vec::new();
    for n in 0..500u64 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            store
                .append(request(
                    &format!("t/{}", n % 7),
                    ExpectedVersion::Any,
                    vec![event(n)],
                ))
                .await
        }));
    }
    for handle in handles {
        handle.await.expect("join").expect("append");
    }
    let stats = store.writer_stats();
    assert_eq!(stats.events, 500);
    assert_eq!(
        stats
            .batch_sizes
            .iter()
            .map(|(size, count)| *size as u64 * count)
            .sum::<u64>(),
        500
    );
    // Every event was made durable by exactly one fsync, and an fsync covers whole batches.
    let events_synced: u64 = stats
        .sync_sizes
        .iter()
        .map(|(size, count)| *size as u64 * count)
        .sum();
    assert_eq!(events_synced, 500);
    let fsyncs: u64 = stats.sync_sizes.values().sum();
    assert!(
        fsyncs <= stats.batches,
        "{fsyncs} fsyncs for {} batches",
        stats.batches
    );
    // The syncer's fsyncs (all but the writer's own synced writes) are timed.
    assert!(fsyncs > stats.inline_syncs, "{stats:?}");
    assert!(stats.syncing > std::time::Duration::ZERO, "{stats:?}");
    assert_log_invariants(&store);
}

#[tokio::test]
async fn stored_bytes_are_the_serde_form_of_the_envelope() {
    let (_dir, store) = open_temp();
    let mut request = request("t/ü \"quoted\"", ExpectedVersion::Any, vec![event(1)]);
    request.meta.actor = "ana \u{1F600}".into();
    request.meta.traceparent =
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    store.append(request).await.expect("append");
    let raw = store.read_raw(Position(1)).expect("raw").expect("present");
    let envelope = store
        .read_position(Position(1))
        .expect("read")
        .expect("present");
    assert_eq!(raw, serde_json::to_vec(&envelope).expect("json"));
    assert_eq!(envelope.compute_hash(), envelope.hash);
}

#[tokio::test]
async fn an_answered_append_is_durable_and_a_wait_for_a_later_position_ends_when_it_is() {
    let (_dir, store) = open_temp();
    let first = store
        .append(request("t/a", ExpectedVersion::Any, vec![event(1)]))
        .await
        .expect("append");
    // Answered means synced: the durable position already covers it.
    assert!(store.last_position() >= first.position());
    store
        .wait_durable(first.position())
        .await
        .expect("an answered position is durable");

    // A wait for a position not written yet ends once an append makes it durable.
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { store.wait_durable(Position(3)).await })
    };
    store
        .append(request(
            "t/b",
            ExpectedVersion::Any,
            vec![event(2), event(3)],
        ))
        .await
        .expect("append");
    tokio::time::timeout(std::time::Duration::from_secs(60), waiter)
        .await
        .expect("the wait ends")
        .expect("the task does not panic")
        .expect("position 3 became durable");
    // Global reads never go past the durable position.
    let all = store.read_all(Position(1), 100).expect("read");
    assert_eq!(all.len() as u64, store.last_position().get());
    assert_log_invariants(&store);
}

/// Readers racing the writer never see a stream head that the stream index does not back: a
/// version read from `heads` can always be resolved, and a backward read from it is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_racing_appends_never_see_a_head_without_its_index_entry() {
    let (_dir, store) = open_temp();
    let store = Arc::new(store);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let id = stream("t/race");
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let head = store.stream_version(&id).expect("head");
                let at = store
                    .stream_version_at(&id, Position(u64::MAX))
                    .expect("every version below the head is indexed");
                assert!(
                    at >= head,
                    "version at the end {at:?} is behind the head {head:?}"
                );
                let back = store
                    .read_stream(&id, head, ReadDirection::Backward, 3)
                    .expect("backward read");
                let expected = head.get().min(3) as usize;
                assert_eq!(back.len(), expected, "backward read from head {head:?}");
                reads += 1;
            }
            reads
        })
    };
    for n in 0..3_000u64 {
        store
            .append(request("t/race", ExpectedVersion::Any, vec![event(n)]))
            .await
            .expect("append");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let reads = reader
        .join()
        .expect("the reader never saw a head ahead of the index");
    assert!(reads > 0);
}

/// A multi-threaded runtime with `workers` worker threads.
fn multi_thread(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A current-thread runtime.
fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Appends batches of concurrent appends until one batch was synced by the syncer (not a lone
/// append the writer synced itself), so that the syncer's way of answering was exercised.
fn append_until_the_syncer_syncs(runtime: &tokio::runtime::Runtime, store: &EventStore) {
    let synced_by_syncer = |store: &EventStore| {
        let stats = store.writer_stats();
        stats.sync_sizes.values().sum::<u64>() - stats.inline_syncs
    };
    let before = synced_by_syncer(store);
    for round in 0..100u64 {
        runtime.block_on(async {
            let appends = (0..16).map(|n| {
                let store = store.clone();
                async move {
                    store
                        .append(request(
                            "t/b",
                            ExpectedVersion::Any,
                            vec![event(round * 16 + n)],
                        ))
                        .await
                }
            });
            // A guard against a hang (answers that never come), not a measure of speed.
            let outcomes =
                tokio::time::timeout(std::time::Duration::from_secs(60), join_all(appends))
                    .await
                    .expect("appends answered");
            for outcome in outcomes {
                outcome.expect("concurrent append");
            }
        });
        if synced_by_syncer(store) > before {
            return;
        }
    }
    panic!("100 rounds of 16 concurrent appends were all synced by the writer itself");
}

/// Synced batches are answered by a task on the runtime the log was opened in; once that
/// runtime is gone, the syncer answers appends itself.
#[test]
fn appends_are_answered_after_the_opening_runtime_is_gone() {
    let opening = multi_thread(1);
    let (_dir, store) = opening.block_on(async { open_temp() });
    let first = opening
        .block_on(store.append(request("t/a", ExpectedVersion::NoStream, vec![event(1)])))
        .expect("append on the opening runtime");
    assert_eq!(first.position(), Position(1));
    append_until_the_syncer_syncs(&opening, &store);
    drop(opening);

    let other = current_thread();
    let before = store.last_position();
    let outcome = other
        .block_on(store.append(request("t/a", ExpectedVersion::Any, vec![event(2)])))
        .expect("append after the opening runtime shut down");
    assert_eq!(outcome.position(), Position(before.get() + 1));
    append_until_the_syncer_syncs(&other, &store);
    assert_log_invariants(&store);
}

/// A log opened outside any runtime, or in a current-thread one, answers from its syncer.
#[test]
fn a_log_opened_outside_a_multi_threaded_runtime_answers_appends() {
    let (_dir, store) = open_temp();
    let runtime = current_thread();
    append_until_the_syncer_syncs(&runtime, &store);
    assert_log_invariants(&store);

    // Opened in a current-thread runtime that nobody drives afterwards (it only runs tasks
    // while a thread blocks on it): appends from elsewhere must not wait for it.
    let (_dir, store) = runtime.block_on(async { open_temp() });
    let elsewhere = multi_thread(1);
    append_until_the_syncer_syncs(&elsewhere, &store);
    assert_log_invariants(&store);
}

/// Answers already handed to the answerer task when its runtime shuts down still reach their
/// callers (they are on disk), and the durable position covers them.
#[test]
fn answers_waiting_for_a_runtime_that_shuts_down_still_arrive() {
    const APPENDS: u64 = 32;
    let opening = multi_thread(1);
    let (_dir, store) = opening.block_on(async { open_temp() });
    // Occupy the opening runtime's only worker, so that its answerer task cannot run.
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    opening.spawn(async move {
        started_tx.send(()).expect("signal");
        release_rx.recv().expect("release");
    });
    started_rx.recv().expect("the blocker runs");
    // Concurrent appends from another runtime: synced, then handed to the stuck answerer.
    let appending = {
        let store = store.clone();
        std::thread::spawn(move || {
            let runtime = multi_thread(2);
            runtime.block_on(join_all((0..APPENDS).map(move |n| {
                let store = store.clone();
                async move {
                    store
                        .append(request("t/a", ExpectedVersion::Any, vec![event(n)]))
                        .await
                }
            })))
        })
    };
    let synced = |store: &EventStore| {
        let stats = store.writer_stats();
        stats
            .sync_sizes
            .iter()
            .map(|(events, count)| *events as u64 * count)
            .sum::<u64>()
    };
    while synced(&store) < APPENDS {
        std::thread::yield_now();
    }
    // Every append is on disk; the ones the syncer synced wait in the answerer's queue.
    let stats = store.writer_stats();
    assert!(
        stats.sync_sizes.values().sum::<u64>() > stats.inline_syncs,
        "some appends went through the syncer: {stats:?}"
    );
    opening.shutdown_background();
    release_tx.send(()).expect("release the worker");
    for outcome in appending.join().expect("appending thread") {
        outcome.expect("every append is answered");
    }
    assert_eq!(store.last_position(), Position(APPENDS));
    assert_log_invariants(&store);
}

/// Awaits every future (the store's tests do not depend on `futures`).
async fn join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn heads_of_streams_appended_many_times_per_batch_survive_a_reopen() {
    let (dir, store) = open_temp();
    // Many appends to two streams at once: batches hold several appends of the same stream,
    // each writing its own head, of which RocksDB keeps the last.
    let tasks: Vec<_> = (0..400u64)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let name = if n % 2 == 0 { "t/hot" } else { "t/warm" };
                store
                    .append(request(name, ExpectedVersion::Any, vec![event(n)]))
                    .await
                    .expect("append")
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("join");
    }
    // A batch of three appends to two streams holds one stream twice.
    let stats = store.writer_stats();
    assert!(
        stats.batch_sizes.keys().any(|&size| size >= 3),
        "some batch held three appends or more: {:?}",
        stats.batch_sizes
    );
    drop(store);

    // A fresh writer knows no head: it reads them from `heads`.
    let store = reopen(&dir);
    for name in ["t/hot", "t/warm"] {
        let append_at = |version: u64| {
            store.append(request(
                name,
                ExpectedVersion::Exact(Version(version)),
                vec![event(0)],
            ))
        };
        let conflict = append_at(199).await.expect_err("the head is 200, not 199");
        assert!(
            matches!(
                conflict,
                StoreError::Conflict {
                    current: Version(200),
                    ..
                }
            ),
            "{conflict:?}"
        );
        let next = append_at(200).await.expect("append at the recovered head");
        assert_eq!(next.version(), Version(201));
    }
    assert_log_invariants(&store);
}

#[tokio::test]
async fn a_log_keeps_its_identity_across_reopens_and_another_log_has_its_own() {
    let (dir, store) = open_temp();
    let id = store.log_id().to_string();
    uuid::Uuid::parse_str(&id).expect("the log id is a UUID");
    drop(store);
    assert_eq!(reopen(&dir).log_id(), id);
    let (_other_dir, other) = open_temp();
    assert_ne!(other.log_id(), id);
}

#[tokio::test]
async fn verify_to_stops_at_the_bound_and_reports_its_hash() {
    let (_dir, store) = open_temp();
    for n in 0..5 {
        store
            .append(request("t/a", ExpectedVersion::Any, vec![event(n)]))
            .await
            .expect("append");
    }
    let third = store
        .read_position(Position(3))
        .expect("read")
        .expect("present");
    // A tampered byte after the bound is not looked at.
    change_digit(&store, Position(5), 4, b'9');
    let report = store.verify_to(Some(Position(3)), |_| {}).expect("verify");
    assert_eq!(report.first_broken, None);
    assert_eq!(report.checked, 3);
    assert_eq!(report.last_position, Position(3));
    assert_eq!(report.last_hash, third.hash);
    assert_eq!(report.last_recorded_at, Some(third.recorded_at));
    let whole = store.verify(|_| {}).expect("verify");
    assert_eq!(
        whole.first_broken.map(|(position, _)| position),
        Some(Position(5))
    );
}

#[tokio::test]
async fn a_truncated_log_verifies_only_to_its_new_end() {
    let (_dir, store) = open_temp();
    for n in 0..5 {
        store
            .append(request("t/a", ExpectedVersion::Any, vec![event(n)]))
            .await
            .expect("append");
    }
    store.truncate_for_tests(Position(2)).expect("truncate");
    let report = store.verify_to(Some(Position(4)), |_| {}).expect("verify");
    assert_eq!(report.first_broken, None);
    assert_eq!(report.last_position, Position(2));
    assert_eq!(report.checked, 2);
    let empty = open_temp().1.verify(|_| {}).expect("verify");
    assert_eq!(
        (
            empty.checked,
            empty.last_hash.as_str(),
            empty.last_recorded_at
        ),
        (0, planledger_store::GENESIS_HASH, None)
    );
}

/// Overwrites the digit of the payload's `"n":<n>` (a one-digit `n`) at `position` with `to`.
fn change_digit(store: &EventStore, position: Position, n: u8, to: u8) {
    let mut bytes = store.read_raw(position).expect("raw").expect("present");
    let needle = [b'"', b'n', b'"', b':', b'0' + n];
    let at = bytes
        .windows(5)
        .position(|w| w == needle)
        .expect("payload present")
        + 4;
    bytes[at] = to;
    store
        .overwrite_raw_for_tests(position, &bytes)
        .expect("tamper");
}
