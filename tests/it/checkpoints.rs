//! Signed checkpoints and Merkle proofs end to end: the real binary takes commands, serves a
//! checkpoint, inclusion and consistency proofs, and `planledger audit verify-event` /
//! `verify-consistency` check them offline; each fault fails with its own message.

use std::path::Path;
use std::process::Command;

use planledger_e2e::client::Client;

use crate::witness::plan_with_goals;
use planledger_e2e::server::{Planledger, binary};
use reqwest::StatusCode;
use serde_json::Value;

/// Runs `planledger audit` with `args`: success and everything printed.
pub(crate) fn audit(args: &[&str]) -> (bool, String) {
    let output = Command::new(binary())
        .arg("audit")
        .args(args)
        .output()
        .expect("run planledger audit");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

/// GET `path` with `token`: the status and the raw body.
pub(crate) async fn get_text(server: &Planledger, token: &str, path: &str) -> (StatusCode, String) {
    let response = reqwest::Client::new()
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

/// The stored bytes of every event of the log (`GET /v1/events`, each event's JSON exactly
/// as served, which is as stored) by position, and the page's proofs.
pub(crate) async fn raw_events(
    server: &Planledger,
    token: &str,
    query: &str,
) -> (Vec<(u64, String)>, Value) {
    type Raw = Box<serde_json::value::RawValue>;
    let (status, body) = get_text(server, token, &format!("/v1/events?limit=1000{query}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let page: std::collections::HashMap<String, Raw> =
        serde_json::from_str(&body).expect("a page of events");
    let raw_events: Vec<Raw> =
        serde_json::from_str(page["events"].get()).expect("the page's events");
    let events = raw_events
        .iter()
        .map(|raw| {
            let value: Value = serde_json::from_str(raw.get()).expect("json");
            (
                value["position"].as_u64().expect("position"),
                raw.get().to_string(),
            )
        })
        .collect();
    let whole: Value = serde_json::from_str(&body).expect("json");
    (events, whole["proofs"].clone())
}

pub(crate) fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

/// The tree size line of a checkpoint.
pub(crate) fn tree_size(checkpoint: &str) -> u64 {
    checkpoint
        .lines()
        .nth(1)
        .and_then(|line| line.parse().ok())
        .expect("a tree size on the second line")
}

#[tokio::test]
async fn an_event_and_a_later_checkpoint_verify_offline_and_each_fault_has_its_own_message() {
    let server = Planledger::start(&[]);
    let client = Client::new();
    let auditor = server.token("acme", "audrey", "auditor");
    let dir = tempfile::tempdir().expect("dir");
    plan_with_goals(&server, &client, "p1", 5).await;

    let (status, keys) = client
        .get(&server.base_url, &auditor, "/v1/audit/keys")
        .await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let key = keys["keys"][0]["public_key"]
        .as_str()
        .expect("key")
        .to_string();

    let (status, old) = get_text(&server, &auditor, "/v1/audit/checkpoint").await;
    assert_eq!(status, StatusCode::OK, "{old}");
    let old_size = tree_size(&old);
    assert_eq!(old_size, 6);
    assert!(old.starts_with("planledger/"), "{old}");
    assert!(old.contains("\n\n\u{2014} planledger/"), "{old}");
    let old_file = write(dir.path(), "old.checkpoint", &old);

    // An event and its proof in the checkpoint's tree.
    let (events, _) = raw_events(&server, &auditor, "").await;
    let (position, event) = events[3].clone();
    let (status, proof) = get_text(
        &server,
        &auditor,
        &format!("/v1/audit/proof/inclusion?position={position}&tree_size={old_size}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{proof}");
    let proof_file = write(dir.path(), "event.proof", &proof);
    let event_file = write(dir.path(), "event.json", &event);
    let verify_event = |event: &str, proof: &str| {
        audit(&[
            "verify-event",
            "--checkpoint",
            &old_file,
            "--proof",
            proof,
            "--event",
            event,
            "--public-key",
            &key,
        ])
    };
    let (ok, printed) = verify_event(&event_file, &proof_file);
    assert!(ok, "{printed}");
    assert!(
        printed.contains(&format!("position {position}")),
        "{printed}"
    );

    // A changed byte in the event.
    let tampered = event.replacen("goal ", "Goal ", 1);
    assert_ne!(tampered, event, "the event holds a goal title");
    let (ok, printed) = verify_event(&write(dir.path(), "tampered.json", &tampered), &proof_file);
    assert!(!ok);
    assert!(
        printed.contains(&format!(
            "the event at position {position} is not in the checkpoint's tree"
        )),
        "{printed}"
    );
    // Another event with this proof.
    let (ok, printed) = verify_event(&write(dir.path(), "other.json", &events[2].1), &proof_file);
    assert!(!ok);
    assert!(
        printed.contains("but the proof is for position"),
        "{printed}"
    );
    // A changed checkpoint (its root) no longer carries a valid signature.
    let mut lines: Vec<&str> = old.split('\n').collect();
    let forged_size = (old_size + 1).to_string();
    lines[1] = &forged_size;
    let (ok, printed) = audit(&[
        "verify-event",
        "--checkpoint",
        &write(dir.path(), "forged.checkpoint", &lines.join("\n")),
        "--proof",
        &proof_file,
        "--event",
        &event_file,
        "--public-key",
        &key,
    ]);
    assert!(!ok);
    assert!(printed.contains("does not verify with key"), "{printed}");

    // The log grows; the newer checkpoint extends the older one.
    plan_with_goals(&server, &client, "p2", 4).await;
    let (_, new) = get_text(&server, &auditor, "/v1/audit/checkpoint").await;
    let new_size = tree_size(&new);
    assert_eq!(new_size, 11);
    let new_file = write(dir.path(), "new.checkpoint", &new);
    let (status, consistency) = get_text(
        &server,
        &auditor,
        &format!("/v1/audit/proof/consistency?from={old_size}&to={new_size}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{consistency}");
    let consistency_file = write(dir.path(), "consistency.proof", &consistency);
    let (ok, printed) = audit(&[
        "verify-consistency",
        &old_file,
        &new_file,
        "--proof",
        &consistency_file,
        "--public-key",
        &key,
    ]);
    assert!(ok, "{printed}");
    // The checkpoints the other way round: the proof does not fit them.
    let (ok, printed) = audit(&[
        "verify-consistency",
        &new_file,
        &old_file,
        "--proof",
        &consistency_file,
        "--public-key",
        &key,
    ]);
    assert!(!ok);
    assert!(
        printed.contains("but the checkpoints are of sizes 11 and 6"),
        "{printed}"
    );
    // Without a proof, different sizes cannot be checked.
    let (ok, printed) = audit(&[
        "verify-consistency",
        &old_file,
        &new_file,
        "--public-key",
        &key,
    ]);
    assert!(!ok);
    assert!(printed.contains("give the consistency proof"), "{printed}");

    // The page's proofs (`?proof=true`) are in the tree of the newest checkpoint.
    let (events, proofs) = raw_events(&server, &auditor, "&proof=true").await;
    let proofs = proofs.as_array().expect("proofs");
    assert_eq!(proofs.len(), events.len());
    let (position, event) = &events[8];
    let proof = &proofs[8];
    assert_eq!(proof["position"].as_u64(), Some(*position));
    assert_eq!(proof["tree_size"].as_u64(), Some(new_size));
    let (ok, printed) = audit(&[
        "verify-event",
        "--checkpoint",
        &new_file,
        "--proof",
        &write(dir.path(), "page.proof", &proof.to_string()),
        "--event",
        &write(dir.path(), "page.json", event),
        "--public-key",
        &key,
    ]);
    assert!(ok, "{printed}");
}

#[tokio::test]
async fn proofs_outside_the_tree_are_problems_naming_the_parameter() {
    let server = Planledger::start(&[]);
    let client = Client::new();
    plan_with_goals(&server, &client, "p1", 2).await;
    let auditor = server.token("acme", "audrey", "auditor");
    for (query, field, says) in [
        (
            "/v1/audit/proof/inclusion?tree_size=3",
            "position",
            "position is required",
        ),
        (
            "/v1/audit/proof/inclusion?position=0",
            "position",
            "positions start at 1",
        ),
        (
            "/v1/audit/proof/inclusion?position=4&tree_size=3",
            "position",
            "1 to the tree size 3",
        ),
        (
            "/v1/audit/proof/inclusion?position=1&tree_size=9",
            "tree_size",
            "at most the log's current size 3",
        ),
        (
            "/v1/audit/proof/consistency?to=3",
            "from",
            "from is required",
        ),
        (
            "/v1/audit/proof/consistency?from=0&to=3",
            "from",
            "every tree is consistent with the empty one",
        ),
        (
            "/v1/audit/proof/consistency?from=3&to=2",
            "from",
            "at most to (2)",
        ),
        (
            "/v1/audit/proof/consistency?from=1&to=4",
            "to",
            "at most the log's current size 3",
        ),
    ] {
        let (status, problem) = client.get(&server.base_url, &auditor, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {problem}");
        let text = problem.to_string();
        assert!(
            text.contains(field) && text.contains(says),
            "{query}: {problem}"
        );
    }
    let contributor = server.token("acme", "bob", "contributor");
    let (status, _) = client
        .get(&server.base_url, &contributor, "/v1/audit/checkpoint")
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "checkpoints are for auditors"
    );
}
