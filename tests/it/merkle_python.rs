//! The proofs hold outside Rust: an independent verifier written in Python from RFC 9162 and
//! the C2SP checkpoint specifications (`tests/python/verify_proofs.py`) checks signed
//! checkpoints, inclusion proofs of random positions and consistency proofs of random pairs,
//! all taken while the service takes commands; and it fails on a flipped hash.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use planledger_e2e::auditor::{Auditor, Bundle, python_verify, tree_size};
use planledger_e2e::load::CommandLoad;
use planledger_e2e::server::Planledger;
use rand::Rng;
use serde_json::Value;

const CHECKPOINTS: usize = 8;
const EVENTS_PER_CHECKPOINT: usize = 4;
const PAIRS: usize = 12;

/// Flips one bit of the base64 hash at `path[index]`.
fn flip(path: &mut Value, index: usize) {
    let hash = path[index].as_str().expect("a hash");
    let mut bytes = STANDARD.decode(hash).expect("base64");
    bytes[7] ^= 0x10;
    path[index] = Value::String(STANDARD.encode(bytes));
}

/// Runs the Python verifier over `json` and asserts that it refuses with exactly one failure,
/// whose text contains `reason`.
fn refused_once(json: &Value, reason: &str) {
    let (ok, summary) = python_verify(json);
    assert!(!ok, "{summary}");
    let failures = summary["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 1, "{summary}");
    assert!(
        failures[0].as_str().expect("text").contains(reason),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_python_verifier_accepts_proofs_taken_under_load_and_refuses_a_flipped_hash()
{
    let server = Planledger::start(&["--rate-limit-per-second", "0"]);
    let token = server.token("acme", "ada", "admin");
    let mut load = CommandLoad::seed(&server, &token, 4).await;
    let auditor = Auditor::new(&server, &token);
    let key = auditor.log_key().await;
    let mut rng = rand::rng();
    let mut bundle = Bundle::default();

    load.start();
    for index in 0..CHECKPOINTS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..120))).await;
        bundle.checkpoints.push(auditor.checkpoint().await);
        let size = tree_size(&bundle.checkpoints[index]);
        for _ in 0..EVENTS_PER_CHECKPOINT {
            let position = rng.random_range(1..=size);
            auditor.keep_event(&mut bundle, index, position).await;
        }
    }
    for _ in 0..PAIRS {
        let old = rng.random_range(0..CHECKPOINTS);
        let new = rng.random_range(old..CHECKPOINTS);
        auditor.keep_consistency(&mut bundle, old, new).await;
    }
    load.stop().await;
    let sizes: Vec<u64> = bundle.checkpoints.iter().map(|c| tree_size(c)).collect();
    assert!(
        sizes.first() < sizes.last(),
        "the log grew while the checkpoints were taken: {sizes:?}"
    );

    let (ok, summary) = python_verify(&bundle.to_json(&key));
    assert!(ok, "{summary}");
    assert_eq!(summary["failures"], serde_json::json!([]));
    assert_eq!(summary["checkpoints"], CHECKPOINTS);
    assert_eq!(summary["inclusion"], CHECKPOINTS * EVENTS_PER_CHECKPOINT);
    assert_eq!(summary["consistency"], PAIRS);

    // One flipped hash in an inclusion path, one in a consistency path: each fails.
    let mut json = bundle.to_json(&key);
    let inclusion = json["inclusion"]
        .as_array_mut()
        .expect("inclusion")
        .iter_mut()
        .find(|item| {
            !item["proof"]["inclusion_path"]
                .as_array()
                .expect("path")
                .is_empty()
        })
        .expect("a proof with a path");
    flip(&mut inclusion["proof"]["inclusion_path"], 0);
    refused_once(&json, "is not the checkpoint's root");

    let mut json = bundle.to_json(&key);
    let Some(consistency) = json["consistency"]
        .as_array_mut()
        .expect("consistency")
        .iter_mut()
        .find(|item| item["proof"].is_object())
    else {
        panic!("no pair of different sizes among {PAIRS} random pairs of {sizes:?}");
    };
    let last = consistency["proof"]["consistency_path"]
        .as_array()
        .expect("path")
        .len()
        - 1;
    flip(&mut consistency["proof"]["consistency_path"], last);
    refused_once(&json, "as the root of size");

    // A checkpoint whose tree size was changed no longer carries a valid signature.
    let mut json = bundle.to_json(&key);
    let forged = bundle.checkpoints[0].replacen(
        &format!("\n{}\n", sizes[0]),
        &format!("\n{}\n", sizes[0] + 1),
        1,
    );
    json["checkpoints"][0] = Value::String(forged);
    let (ok, summary) = python_verify(&json);
    assert!(!ok, "{summary}");
    assert!(
        summary["failures"][0]
            .as_str()
            .expect("text")
            .contains("does not verify"),
        "{summary}"
    );
}
