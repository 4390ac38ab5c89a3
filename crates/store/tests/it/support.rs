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
    assert_tree_matches_log(store);
}

/// Checks the Merkle tree: every stored node equals one rebuilt from the log, and the root
/// equals a reference computed here from the stored entries (RFC 9162 2.1.1, directly).
pub fn assert_tree_matches_log(store: &EventStore) {
    let last = store.last_position().get();
    let tree = store.verify_tree(|_| {}).expect("verify the tree");
    assert_eq!(tree.first_mismatch, None, "the stored tree is the log's");
    assert_eq!(tree.leaves, last, "one leaf per position");
    let entries: Vec<Vec<u8>> = (1..=last)
        .map(|p| {
            store
                .read_raw(planledger_store::Position(p))
                .expect("read")
                .expect("every position is stored")
        })
        .collect();
    let expected = reference_root(&entries);
    assert_eq!(
        tree.root, expected,
        "the rebuilt root is the reference root"
    );
    assert_eq!(
        store.view().tree_root(last).expect("stored root"),
        expected,
        "the stored tree's root is the reference root"
    );
}

/// MTH(D[n]) of RFC 9162 2.1.1, written from the RFC: SHA-256 of nothing for no entries,
/// SHA-256(0x00 || d) for one, SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])) with k the largest
/// power of two below n.
pub fn reference_root(entries: &[Vec<u8>]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    match entries.len() {
        0 => Sha256::digest(b"").into(),
        1 => Sha256::new()
            .chain_update([0u8])
            .chain_update(&entries[0])
            .finalize()
            .into(),
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            Sha256::new()
                .chain_update([1u8])
                .chain_update(reference_root(&entries[..k]))
                .chain_update(reference_root(&entries[k..]))
                .finalize()
                .into()
        }
    }
}
