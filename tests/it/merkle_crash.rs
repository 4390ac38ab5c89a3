//! The Merkle tree survives SIGKILL under load: after each kill `planledger verify` rebuilds the
//! tree from the log and finds every stored node equal, and the checkpoints and proofs an
//! auditor took before a crash still verify against the checkpoints taken after it
//! (consistency proofs, and inclusion proofs of the same events in the newer trees), with
//! `planledger audit` and with the independent Python verifier.

use std::time::Duration;

use planledger_e2e::auditor::{Auditor, Bundle, python_verify, tree_size};
use planledger_e2e::load::CommandLoad;
use planledger_e2e::server::{Planledger, binary};
use rand::Rng;

const KILLS: usize = 3;

/// Runs `planledger audit verify-consistency` on two checkpoints and their proof.
fn verify_consistency(
    old: &str,
    new: &str,
    proof: &serde_json::Value,
    key: &str,
) -> (bool, String) {
    let dir = tempfile::tempdir().expect("dir");
    let (old_file, new_file, proof_file) = (
        dir.path().join("old"),
        dir.path().join("new"),
        dir.path().join("proof"),
    );
    std::fs::write(&old_file, old).expect("write");
    std::fs::write(&new_file, new).expect("write");
    std::fs::write(&proof_file, proof.to_string()).expect("write");
    let output = std::process::Command::new(binary())
        .args(["audit", "verify-consistency"])
        .arg(&old_file)
        .arg(&new_file)
        .arg("--proof")
        .arg(&proof_file)
        .args(["--public-key", key])
        .output()
        .expect("run planledger audit");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_tree_matches_the_log_after_sigkills_and_proofs_taken_before_still_verify() {
    let mut server = Planledger::start(&["--rate-limit-per-second", "0"]);
    let token = server.token("acme", "ada", "admin");
    let mut load = CommandLoad::seed(&server, &token, 6).await;
    let key = Auditor::new(&server, &token).log_key().await;
    let mut rng = rand::rng();
    let mut bundle = Bundle::default();

    for kill in 1..=KILLS {
        load.start();
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..300))).await;
        // Taken while the service takes commands, just before the crash.
        let auditor = Auditor::new(&server, &token);
        bundle.checkpoints.push(auditor.checkpoint().await);
        let index = bundle.checkpoints.len() - 1;
        let size = tree_size(&bundle.checkpoints[index]);
        for _ in 0..3 {
            auditor
                .keep_event(&mut bundle, index, rng.random_range(1..=size))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
        server.kill();
        load.stop().await;

        let (verified, printed) = server.verify();
        assert!(verified, "kill {kill}: {printed}");
        assert!(
            printed.contains("Merkle tree of") && printed.contains("matches the log"),
            "kill {kill}: {printed}"
        );
        tokio::task::block_in_place(|| server.restart());
        assert!(server.wait_ready().await);
    }
    load.start();
    tokio::time::sleep(Duration::from_millis(200)).await;
    load.stop().await;

    // After the last crash: every checkpoint taken before is a prefix of the newest tree,
    // and every event kept before is in it.
    let auditor = Auditor::new(&server, &token);
    let newest = auditor.checkpoint().await;
    bundle.checkpoints.push(newest.clone());
    let last = bundle.checkpoints.len() - 1;
    let newest_size = tree_size(&newest);
    for old in 0..last {
        let old_size = tree_size(&bundle.checkpoints[old]);
        assert!(old_size <= newest_size);
        auditor.keep_consistency(&mut bundle, old, last).await;
        if old_size < newest_size {
            let proof = auditor.consistency(old_size, newest_size).await;
            let (ok, printed) = verify_consistency(&bundle.checkpoints[old], &newest, &proof, &key);
            assert!(ok, "checkpoint {old} (size {old_size}): {printed}");
        }
        if old + 1 < last {
            auditor.keep_consistency(&mut bundle, old, old + 1).await;
        }
    }
    let kept_before: Vec<u64> = bundle
        .inclusion
        .iter()
        .map(|kept| kept.proof["position"].as_u64().expect("a position"))
        .collect();
    let before = bundle.inclusion.len();
    for position in kept_before {
        auditor.keep_event(&mut bundle, last, position).await;
    }
    for (kept, again) in bundle.inclusion[..before]
        .iter()
        .zip(&bundle.inclusion[before..])
    {
        assert_eq!(kept.event, again.event, "the stored event did not change");
    }
    let (ok, summary) = python_verify(&bundle.to_json(&key));
    assert!(ok, "{summary}");
    assert_eq!(summary["inclusion"], 6 * KILLS);

    server.kill();
    let (verified, printed) = server.verify();
    assert!(verified, "at the end: {printed}");
}
