//! The read-only `LogReader` against a live `EventStore` in the same process: it opens while
//! the writer holds the lock, shows what the writer's reads show, and sees later appends once
//! it catches up.

use std::ops::ControlFlow;

use crate::support::*;
use planledger_store::{
    EventStore, ExpectedVersion, LogReader, Position, ReadDirection, StoreError, StoreOptions,
    Version,
};

async fn append_round(store: &EventStore, round: u64) {
    for (index, name) in ["t/a", "t/b", "u/c"].iter().enumerate() {
        let n = round * 10 + index as u64;
        store
            .append(request(
                name,
                ExpectedVersion::Any,
                vec![event(n), event(n + 100)],
            ))
            .await
            .expect("append");
    }
}

fn same_json<T: serde::Serialize>(left: &T, right: &T) -> bool {
    serde_json::to_vec(left).ok() == serde_json::to_vec(right).ok()
}

#[tokio::test]
async fn a_reader_opens_beside_a_live_writer_and_reads_what_it_reads() {
    let (dir, store) = open_temp();
    append_round(&store, 0).await;
    // The writer holds the database's lock: a second writer cannot open it ...
    let second = EventStore::open(dir.path().join("log"), StoreOptions::default());
    assert!(second.is_err(), "the log is locked by the first writer");
    // ... a reader can.
    let reader = LogReader::open(dir.path().join("log"), &StoreOptions::default())
        .expect("a reader opens while the writer runs");
    assert_eq!(reader.last_position(), store.last_position());
    let view = reader.view();
    let all = view.read_all(Position(1), 100).expect("read all");
    assert!(same_json(
        &all,
        &store.read_all(Position(1), 100).expect("writer reads")
    ));
    assert_eq!(all.len(), 6);
    for name in ["t/a", "t/b", "u/c"] {
        let id = stream(name);
        assert_eq!(
            view.stream_version(&id).expect("head"),
            store.stream_version(&id).expect("head")
        );
        for direction in [ReadDirection::Forward, ReadDirection::Backward] {
            let from = match direction {
                ReadDirection::Forward => Version(1),
                ReadDirection::Backward => Version(u64::MAX),
            };
            assert!(same_json(
                &view.read_stream(&id, from, direction, 10).expect("stream"),
                &store.read_stream(&id, from, direction, 10).expect("stream")
            ));
        }
        for position in 0..=6 {
            assert_eq!(
                view.stream_version_at(&id, Position(position))
                    .expect("version at"),
                store
                    .stream_version_at(&id, Position(position))
                    .expect("version at")
            );
        }
    }
    let middle = all[3].recorded_at;
    assert_eq!(
        view.position_at(middle).expect("position at"),
        store.position_at(middle).expect("position at")
    );
}

#[tokio::test]
async fn a_reader_sees_later_appends_only_after_it_catches_up() {
    let (dir, store) = open_temp();
    append_round(&store, 0).await;
    let reader = LogReader::open(dir.path().join("log"), &StoreOptions::default()).expect("open");
    assert_eq!(reader.last_position(), Position(6));

    append_round(&store, 1).await;
    // Its view stays where it was: a read through it is a consistent cut.
    assert_eq!(
        reader
            .view()
            .read_all(Position(1), 100)
            .expect("read")
            .len(),
        6
    );
    assert_eq!(reader.catch_up().expect("catch up"), Position(12));
    assert_eq!(reader.last_position(), store.last_position());
    let view = reader.view();
    assert_eq!(
        view.stream_version(&stream("t/a")).expect("head"),
        Version(4)
    );

    // A scan hands over every entry's stored bytes, in order, within the range asked.
    let mut seen = Vec::new();
    let through = view
        .scan_raw(Position(3), Position(100), |position, bytes| {
            seen.push((position, bytes.to_vec()));
            Ok::<_, StoreError>(ControlFlow::Continue(()))
        })
        .expect("scan");
    assert_eq!(through, Position(12));
    assert_eq!(
        seen.iter().map(|(p, _)| p.get()).collect::<Vec<_>>(),
        (3..=12).collect::<Vec<_>>()
    );
    for (position, bytes) in &seen {
        assert_eq!(
            Some(bytes),
            store.read_raw(*position).expect("raw").as_ref()
        );
    }
    // And stops where the visitor says.
    let stopped = view
        .scan_raw(Position(1), Position(12), |position, _| {
            Ok::<_, StoreError>(if position == Position(5) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })
        .expect("scan");
    assert_eq!(stopped, Position(5));
}

#[tokio::test]
async fn a_reader_reads_a_closed_log_too() {
    let (dir, store) = open_temp();
    append_round(&store, 0).await;
    drop(store);
    let reader = LogReader::open(dir.path().join("log"), &StoreOptions::default()).expect("open");
    assert_eq!(reader.last_position(), Position(6));
    // The writer opens again beside the reader: the reader never took the lock.
    let store = reopen(&dir);
    append_round(&store, 1).await;
    assert_eq!(reader.catch_up().expect("catch up"), Position(12));
}

#[test]
fn a_reader_of_a_directory_without_a_log_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let error = LogReader::open(dir.path().join("log"), &StoreOptions::default())
        .expect_err("nothing to read");
    assert!(matches!(error, StoreError::NoLog { .. }), "{error}");
    assert!(error.to_string().contains("holds no event log"), "{error}");
}
