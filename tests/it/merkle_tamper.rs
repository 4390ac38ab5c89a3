//! Tampering with a stopped log, against what an auditor kept (a signed checkpoint, events and
//! their inclusion proofs) and a witness that cosigned that checkpoint: a changed byte in a
//! stored event, a removed event, and a rewritten tail whose every chain hash and tree node was
//! recomputed each fail a check, each with its own message.

use std::path::{Path, PathBuf};

use planledger_e2e::client::Client;
use planledger_e2e::server::Planledger;
use planledger_store::{EventStore, Position, StoreOptions};
use reqwest::StatusCode;

use crate::checkpoints::{audit, get_text, raw_events, tree_size, write};
use crate::witness::{log_key, plan_with_goals, witness};

/// What the auditor kept of a log of 12 events, and the witness that cosigned it.
struct Kept {
    server: Planledger,
    dir: tempfile::TempDir,
    data: tempfile::TempDir,
    key: String,
    auditor: String,
    /// The signed checkpoint of 12 events.
    checkpoint: String,
    /// Event 6's stored bytes and its inclusion proof in that checkpoint's tree.
    event: String,
    proof: String,
}

const TREE: u64 = 12;
const POSITION: u64 = 6;

impl Kept {
    async fn take() -> Self {
        let data = tempfile::tempdir().expect("data dir");
        let dir = tempfile::tempdir().expect("kept");
        let server = Planledger::start_in(data.path(), &[]);
        let client = Client::new();
        plan_with_goals(&server, &client, "p1", 5).await;
        plan_with_goals(&server, &client, "p2", 5).await;
        let key = log_key(&server, &client).await;
        let auditor = server.token("acme", "audrey", "auditor");
        let (status, checkpoint) = get_text(&server, &auditor, "/v1/audit/checkpoint").await;
        assert_eq!(status, StatusCode::OK, "{checkpoint}");
        assert_eq!(tree_size(&checkpoint), TREE);
        let (events, _) = raw_events(&server, &auditor, "").await;
        let event = events[POSITION as usize - 1].1.clone();
        let (status, proof) = get_text(
            &server,
            &auditor,
            &format!("/v1/audit/proof/inclusion?position={POSITION}&tree_size={TREE}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{proof}");
        let kept = Self {
            server,
            dir,
            data,
            key,
            auditor,
            checkpoint,
            event,
            proof,
        };
        let cosigned = witness(&kept.server, &kept.state(), &kept.key, &kept.auditor);
        assert!(cosigned.ok, "{}", cosigned.stderr);
        let (ok, printed) = kept.verify_event(&kept.event.clone(), &kept.proof.clone());
        assert!(ok, "before any tampering: {printed}");
        kept
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("witness")
    }

    /// `audit verify-event` of `event` with `proof` against the kept checkpoint.
    fn verify_event(&self, event: &str, proof: &str) -> (bool, String) {
        self.verify_event_in(&self.checkpoint.clone(), event, proof)
    }

    fn verify_event_in(&self, checkpoint: &str, event: &str, proof: &str) -> (bool, String) {
        let dir = self.dir.path();
        audit(&[
            "verify-event",
            "--checkpoint",
            &write(dir, "checkpoint", checkpoint),
            "--proof",
            &write(dir, "proof", proof),
            "--event",
            &write(dir, "event", event),
            "--public-key",
            &self.key,
        ])
    }

    /// Stops the service (SIGTERM).
    fn stop(&mut self) {
        self.server.terminate();
    }

    /// Starts the service again on its data directory.
    async fn start(&mut self) {
        self.server.restart();
        assert!(self.server.wait_ready().await, "the service starts again");
    }

    /// Runs `tamper` on the stopped service's log.
    fn tamper(&self, tamper: impl FnOnce(&EventStore)) {
        tamper(&open_log(self.data.path()));
    }

    /// Removes the read models, as whoever rewrites the log's history would (they are derived
    /// from it): the service rebuilds them from the log it finds.
    fn forget_read_models(&self) {
        std::fs::remove_dir_all(self.data.path().join("projections")).expect("remove read models");
    }
}

fn open_log(data_dir: &Path) -> EventStore {
    EventStore::open(data_dir.join("log"), StoreOptions::default()).expect("open the stopped log")
}

#[tokio::test]
async fn a_changed_byte_in_a_stored_event_fails_its_inclusion_proof_and_the_chain() {
    let mut kept = Kept::take().await;
    kept.stop();
    kept.tamper(|store| {
        let bytes = store
            .read_raw(Position(POSITION))
            .expect("read")
            .expect("there");
        let text = String::from_utf8(bytes).expect("json");
        let changed = text.replacen("goal 4 of p1", "goal 5 of p1", 1);
        assert_ne!(changed, text, "the event holds that goal title");
        store
            .overwrite_raw_for_tests(Position(POSITION), changed.as_bytes())
            .expect("tamper");
    });
    kept.start().await;

    // The event as the log now serves it is not the one the checkpoint's tree holds.
    let (events, _) = raw_events(&kept.server, &kept.auditor, "").await;
    let served = events[POSITION as usize - 1].1.clone();
    assert_ne!(served, kept.event);
    let (ok, printed) = kept.verify_event(&served, &kept.proof.clone());
    assert!(!ok, "{printed}");
    assert!(
        printed.contains("the event at position 6 is not in the checkpoint's tree"),
        "{printed}"
    );
    // The event the auditor kept still checks out: the proof is about the tree, not the disk.
    let (ok, printed) = kept.verify_event(&kept.event.clone(), &kept.proof.clone());
    assert!(ok, "{printed}");
    kept.stop();
    let (ok, printed) = kept.server.verify();
    assert!(!ok);
    assert!(
        printed.contains("chain broken at position 6: hash does not match the envelope's content"),
        "{printed}"
    );
}

#[tokio::test]
async fn a_removed_event_breaks_the_chain_and_a_removed_tail_is_a_rollback_to_the_witness() {
    let mut kept = Kept::take().await;
    // An event removed from the middle: the chain names the gap.
    kept.stop();
    kept.tamper(|store| {
        store
            .remove_raw_for_tests(Position(POSITION))
            .expect("remove");
    });
    let (ok, printed) = kept.server.verify();
    assert!(!ok);
    assert!(
        printed.contains("chain broken at position 6: position 6 is missing (next found is 7)"),
        "{printed}"
    );

    // The event put back and the last one removed with its tree nodes: a log that verifies,
    // but a tree smaller than the one the witness cosigned.
    let event = kept.event.clone();
    kept.tamper(move |store| {
        store
            .overwrite_raw_for_tests(Position(POSITION), event.as_bytes())
            .expect("put it back");
        store
            .truncate_for_tests(Position(TREE - 1))
            .expect("truncate");
    });
    kept.forget_read_models();
    let (ok, printed) = kept.server.verify();
    assert!(ok, "{printed}");
    kept.start().await;
    let refused = witness(&kept.server, &kept.state(), &kept.key, &kept.auditor);
    assert!(!refused.ok, "{}", refused.stdout);
    assert!(
        refused
            .stderr
            .contains("ROLLBACK: the log's tree shrank from size 12")
            && refused.stderr.contains("to size 11"),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn a_rewritten_tail_with_every_hash_recomputed_verifies_but_fails_consistency_and_the_witness()
 {
    let mut kept = Kept::take().await;
    // Everything after position 4 replaced by other events, written by the service itself:
    // every chain hash and tree node is recomputed.
    kept.stop();
    kept.tamper(|store| store.truncate_for_tests(Position(4)).expect("truncate"));
    kept.forget_read_models();
    kept.start().await;
    plan_with_goals(&kept.server, &Client::new(), "forged", 11).await;
    kept.stop();
    let (ok, printed) = kept.server.verify();
    assert!(ok, "the rewritten log is consistent in itself: {printed}");
    kept.start().await;

    let (_, rewritten) = get_text(&kept.server, &kept.auditor, "/v1/audit/checkpoint").await;
    let size = tree_size(&rewritten);
    assert_eq!(size, 16);
    let (status, proof) = get_text(
        &kept.server,
        &kept.auditor,
        &format!("/v1/audit/proof/consistency?from={TREE}&to={size}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{proof}");
    let dir = kept.dir.path();
    let (ok, printed) = audit(&[
        "verify-consistency",
        &write(dir, "old.checkpoint", &kept.checkpoint),
        &write(dir, "new.checkpoint", &rewritten),
        "--proof",
        &write(dir, "consistency.proof", &proof),
        "--public-key",
        &kept.key,
    ]);
    assert!(!ok);
    assert!(
        printed.contains("(tree size 12) is not a prefix of")
            && printed.contains("the older tree is not a prefix of the newer one"),
        "{printed}"
    );
    let refused = witness(&kept.server, &kept.state(), &kept.key, &kept.auditor);
    assert!(!refused.ok, "{}", refused.stdout);
    assert!(
        refused
            .stderr
            .contains("NOT AN EXTENSION: the tree of size 16")
            && refused.stderr.contains("the tree of size 12"),
        "{}",
        refused.stderr
    );
    // The kept event (position 6) is not in the rewritten tree.
    let (status, proof) = get_text(
        &kept.server,
        &kept.auditor,
        &format!("/v1/audit/proof/inclusion?position={POSITION}&tree_size={size}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{proof}");
    let (ok, printed) = kept.verify_event_in(&rewritten, &kept.event.clone(), &proof);
    assert!(!ok);
    assert!(
        printed.contains("the event at position 6 is not in the checkpoint's tree of 16"),
        "{printed}"
    );
}
