//! The Merkle tree over the log: written with every batch, equal to one rebuilt from the log
//! after a reopen, built at open for a log that has none, and the proofs the store hands out
//! verify against its roots.

use planledger_store::merkle::{self, proof};
use planledger_store::{EventStore, ExpectedVersion, Position, StoreError};
use rand::Rng;

use crate::support::{self, event, open_temp, reopen, request};

/// Appends `count` events over a few streams, in appends of 1 to 3 events.
async fn append_events(store: &EventStore, count: u64) {
    let mut n = 0;
    while n < count {
        let take = (1 + n % 3).min(count - n);
        let events = (n..n + take).map(event).collect();
        let stream = format!("t/p{}", n % 5);
        store
            .append(request(&stream, ExpectedVersion::Any, events))
            .await
            .expect("append");
        n += take;
    }
}

fn entries(store: &EventStore) -> Vec<Vec<u8>> {
    (1..=store.last_position().get())
        .map(|p| store.read_raw(Position(p)).expect("read").expect("stored"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_keep_the_tree_equal_to_the_log() {
    let (_dir, store) = open_temp();
    let mut tasks = Vec::new();
    for task in 0..8u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..40 {
                store
                    .append(request(
                        &format!("t/p{}", (task + n) % 5),
                        ExpectedVersion::Any,
                        vec![event(n); 1 + (n % 3) as usize],
                    ))
                    .await
                    .expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    support::assert_tree_matches_log(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_from_the_store_verify_against_its_roots() {
    let (_dir, store) = open_temp();
    append_events(&store, 333).await;
    let entries = entries(&store);
    let view = store.view();
    let size = view.tree_size();
    assert_eq!(size, 333);
    let mut rng = rand::rng();
    for _ in 0..100 {
        let tree_size = rng.random_range(1..=size);
        let position = rng.random_range(1..=tree_size);
        let root = view.tree_root(tree_size).expect("root");
        assert_eq!(
            root,
            support::reference_root(&entries[..tree_size as usize])
        );
        let inclusion = view
            .inclusion_proof(Position(position), tree_size)
            .expect("inclusion proof");
        proof::verify_inclusion(&entries[position as usize - 1], &inclusion, &root)
            .expect("the inclusion proof verifies");
        assert_eq!(
            view.tree_leaf(Position(position)).expect("leaf"),
            merkle::leaf_hash(&entries[position as usize - 1]),
            "the leaf is the hash of the stored bytes"
        );
        let from = rng.random_range(1..=tree_size);
        let consistency = view
            .consistency_proof(from, tree_size)
            .expect("consistency");
        let old_root = view.tree_root(from).expect("old root");
        proof::verify_consistency(&consistency, &old_root, &root)
            .expect("the consistency proof verifies");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_proofs_equal_single_proofs_in_every_order() {
    let (_dir, store) = open_temp();
    append_events(&store, 300).await;
    let view = store.view();
    for tree_size in [1, 2, 3, 64, 65, 127, 255, 256, 257, 300] {
        let proofs = view.sequential_proofs(tree_size).expect("proofs");
        assert_eq!(
            proofs.root().expect("root"),
            view.tree_root(tree_size).expect("root")
        );
        // Ascending from a few starting points, as exports read.
        for from in [1, tree_size / 2 + 1, tree_size] {
            for position in from..=tree_size {
                assert_eq!(
                    proofs.leaf(Position(position)).expect("leaf"),
                    view.tree_leaf(Position(position)).expect("leaf"),
                );
                assert_eq!(
                    proofs.proof(Position(position)).expect("proof"),
                    view.inclusion_proof(Position(position), tree_size)
                        .expect("proof"),
                    "position {position} in tree size {tree_size}"
                );
            }
        }
        // Out of order.
        let mut rng = rand::rng();
        for _ in 0..20 {
            let position = rng.random_range(1..=tree_size);
            assert_eq!(
                proofs.proof(Position(position)).expect("proof"),
                view.inclusion_proof(Position(position), tree_size)
                    .expect("proof"),
            );
        }
        assert!(matches!(
            proofs.proof(Position(tree_size + 1)),
            Err(StoreError::TreeRange {
                field: "position",
                ..
            })
        ));
    }
    assert!(matches!(
        view.sequential_proofs(301),
        Err(StoreError::TreeRange {
            field: "tree_size",
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tree_after_a_reopen_equals_one_rebuilt_from_the_log() {
    let (dir, store) = open_temp();
    append_events(&store, 100).await;
    let root = store.view().tree_root(100).expect("root");
    drop(store);
    let store = reopen(&dir);
    assert_eq!(store.view().tree_root(100).expect("root"), root, "kept");
    append_events(&store, 57).await;
    support::assert_tree_matches_log(&store);
    assert_eq!(
        store.view().tree_root(100).expect("root"),
        root,
        "unchanged by appends"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_without_a_tree_gets_one_when_opened() {
    let (dir, store) = open_temp();
    append_events(&store, 77).await;
    let root = store.view().tree_root(77).expect("root");
    drop(store);
    // As a log written before the tree existed: no merkle column family at all.
    {
        let path = dir.path().join("log");
        let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).expect("list");
        let mut db =
            rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, &names).expect("open");
        db.drop_cf("merkle").expect("drop the tree");
    }
    let store = reopen(&dir);
    assert_eq!(
        store.view().tree_root(77).expect("root"),
        root,
        "built at open"
    );
    append_events(&store, 10).await;
    support::assert_tree_matches_log(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_a_log_written_without_a_tree_opens_read_only_and_verifies() {
    let (dir, store) = open_temp();
    append_events(&store, 20).await;
    let last_hash = store
        .read_position(Position(20))
        .expect("read")
        .expect("there")
        .hash;
    drop(store);
    let path = dir.path().join("log");
    {
        let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).expect("list");
        let mut db =
            rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, &names).expect("open");
        db.drop_cf("merkle").expect("drop the tree");
    }
    let copy = planledger_store::LogCopy::open(&path).expect("an old log opens read-only");
    let summary = copy.summary().expect("summary");
    assert_eq!(summary.last_position, Position(20));
    assert_eq!(summary.last_hash, last_hash);
    let report = copy.verify(|_| {}).expect("verify");
    assert!(report.first_broken.is_none(), "{report:?}");
    assert_eq!(report.checked, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_entry_is_named_by_the_tree_check() {
    let (_dir, store) = open_temp();
    append_events(&store, 20).await;
    let mut bytes = store.read_raw(Position(13)).expect("read").expect("stored");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    store
        .overwrite_raw_for_tests(Position(13), &bytes)
        .expect("tamper");
    let report = store.verify_tree(|_| {}).expect("check");
    let mismatch = report.first_mismatch.expect("a mismatch");
    assert_eq!(
        (mismatch.level, mismatch.index),
        (0, 12),
        "the leaf of position 13"
    );
    assert!(
        mismatch
            .to_string()
            .contains("level 0 index 12 (positions 13..=13)"),
        "{mismatch}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_outside_the_tree_are_refused_with_the_rule() {
    let (_dir, store) = open_temp();
    append_events(&store, 5).await;
    let view = store.view();
    let refusals = [
        view.inclusion_proof(Position(0), 5).map(drop),
        view.inclusion_proof(Position(6), 5).map(drop),
        view.inclusion_proof(Position(3), 6).map(drop),
        view.consistency_proof(0, 5).map(drop),
        view.consistency_proof(4, 3).map(drop),
        view.consistency_proof(2, 9).map(drop),
        view.tree_root(6).map(drop),
    ];
    let fields: Vec<&str> = refusals
        .iter()
        .map(|refusal| match refusal {
            Err(StoreError::TreeRange { field, .. }) => *field,
            other => panic!("refused with TreeRange, got {other:?}"),
        })
        .collect();
    assert_eq!(
        fields,
        [
            "position",
            "position",
            "tree_size",
            "from",
            "from",
            "to",
            "tree_size"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_log_keeps_a_tree_of_what_is_left() {
    let (dir, store) = open_temp();
    append_events(&store, 40).await;
    let root = store.view().tree_root(29).expect("root");
    store.truncate_for_tests(Position(29)).expect("truncate");
    drop(store);
    let store = reopen(&dir);
    assert_eq!(store.last_position(), Position(29));
    assert_eq!(store.view().tree_root(29).expect("root"), root);
    append_events(&store, 8).await;
    support::assert_tree_matches_log(&store);
}
