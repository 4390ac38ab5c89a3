//! Helpers shared by the log's tests.
#![allow(dead_code)]

use jiff::Timestamp;
use planledger_store::{
    AppendMeta, AppendRequest, CommandRef, EventStore, ExpectedVersion, NewEvent, StoreOptions,
    StreamId,
};

/// A fresh log in a temporary directory (removed when the returned guard drops).
pub fn open_temp() -> (tempfile::TempDir, EventStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EventStore::open(dir.path().join("log"), StoreOptions::default()).expect("open");
    (dir, store)
}

/// Opens the log of [`open_temp`] again (after the previous handle was dropped).
pub fn reopen(dir: &tempfile::TempDir) -> EventStore {
    EventStore::open(dir.path().join("log"), StoreOptions::default()).expect("reopen")
}

pub fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("valid stream id")
}

pub fn event(n: u64) -> NewEvent {
    NewEvent::from_json(
        "Synthetic",
        1,
        Timestamp::UNIX_EPOCH,
        &serde_json::json!({ "n": n, "text": "payload" }),
    )
}

pub fn request(
    stream_name: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> AppendRequest {
    AppendRequest {
        stream: stream(stream_name),
        expected,
        events,
        meta: AppendMeta {
            actor: "tester".into(),
            ..AppendMeta::default()
        },
    }
}

pub fn with_command(mut request: AppendRequest, id: &str, fingerprint: &str) -> AppendRequest {
    request.meta.command = Some(CommandRef {
        scope: "tenant".into(),
        id: id.into(),
        fingerprint: Some(fingerprint.into()),
        remember: true,
    });
    request
}

/// Checks the global invariants: positions 1..=last gap-free, recorded_at non-decreasing,
/// each stream's versions 1..n, the chain verifies.
pub fn assert_log_invariants(store: &EventStore) {
    let last = store.last_position().get();
    let all = store
        .read_all(planledger_store::Position(1), usize::MAX)
        .expect("read all");
    assert_eq!(all.len() as u64, last, "log length equals last position");
    let mut streams: std::collections::BTreeMap<String, u64> = Default::default();
    for (index, envelope) in all.iter().enumerate() {
        assert_eq!(
            envelope.position.get(),
            index as u64 + 1,
            "positions are gap-free"
        );
        if index > 0 {
            assert!(
                all[index - 1].recorded_at <= envelope.recorded_at,
                "recorded_at non-decreasing"
            );
        }
        let version = streams.entry(envelope.stream.to_string()).or_default();
        *version += 1;
        assert_eq!(envelope.version.get(), *version, "stream versions are 1..n");
    }
    for (name, version) in streams {
        assert_eq!(
            store.stream_version(&stream(&name)).expect("head").get(),
            version
        );
    }
    let report = store.verify(|_| {}).expect("verify");
    assert_eq!(report.first_broken, None, "hash chain verifies");
    assert_eq!(report.checked, last);
}
