//! `planledger audit witness` against a real service: it cosigns each newer checkpoint that
//! extends the last one it saw, and refuses, with a non-zero exit naming both trees, a log
//! rolled back to an older copy and a log that grew again from that copy (a rewritten history).

use std::path::Path;
use std::process::Command;

use planledger_app::cosignature::{WITNESS_KEY_FILE, WitnessKey, check_cosignature};
use planledger_e2e::client::{Client, today_plus};
use planledger_e2e::copy_dir;
use planledger_e2e::server::{Planledger, binary};
use serde_json::json;

/// A witness run's outcome: success, what it printed to stdout and to stderr.
pub struct Witnessed {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs one round of `planledger audit witness` with the state in `state`.
pub fn witness(server: &Planledger, state: &Path, log_key: &str, token: &str) -> Witnessed {
    let output = Command::new(binary())
        .args(["audit", "witness", "--url", &server.base_url, "--state"])
        .arg(state)
        .args(["--log-key", log_key, "--name", "witness.example.com/w1"])
        .env("PLANLEDGER_TOKEN", token)
        .output()
        .expect("run planledger audit witness");
    Witnessed {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The log's checkpoint key, as `GET /v1/audit/keys` lists it.
pub async fn log_key(server: &Planledger, client: &Client) -> String {
    let auditor = server.token("acme", "audrey", "auditor");
    let (_, keys) = client
        .get(&server.base_url, &auditor, "/v1/audit/keys")
        .await;
    keys["keys"][0]["public_key"]
        .as_str()
        .expect("a key")
        .to_string()
}

/// Creates plan `plan` and defines `goals` goals on it: 1 + `goals` events.
pub async fn plan_with_goals(server: &Planledger, client: &Client, plan: &str, goals: usize) {
    let planner = server.token("acme", "ana", "planner");
    client
        .command(
            server,
            &planner,
            plan,
            json!({"type": "CreatePlan", "data": {"title": plan,
                "starts_on": today_plus(-7), "ends_on": today_plus(60), "checkin_cadence_days": 7}}),
        )
        .await;
    for n in 0..goals {
        client
            .command(
                server,
                &planner,
                plan,
                json!({"type": "DefineGoal", "data": {
                    "goal_id": format!("g{n}"), "title": format!("goal {n} of {plan}"), "due": today_plus(30),
                    "kpi": {"unit": "u", "baseline": 0.0, "target": 10.0, "direction": "increase"}}}),
            )
            .await;
    }
}

/// The witness key a state directory holds.
fn witness_key(state: &Path) -> WitnessKey {
    let seed = std::fs::read_to_string(state.join(WITNESS_KEY_FILE)).expect("witness key");
    WitnessKey::from_seed("witness.example.com/w1", seed_of_hex(seed.trim())).expect("name")
}

fn seed_of_hex(text: &str) -> [u8; 32] {
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect();
    bytes.try_into().expect("32 bytes")
}

#[tokio::test]
async fn the_witness_cosigns_extensions_and_refuses_a_rollback_and_a_rewritten_history() {
    let data = tempfile::tempdir().expect("data dir");
    let kept = tempfile::tempdir().expect("kept");
    let state = kept.path().join("witness");
    let mut server = Planledger::start_in(data.path(), &[]);
    let client = Client::new();
    let key = log_key(&server, &client).await;
    let auditor = server.token("acme", "audrey", "auditor");

    // A first round: the witness creates its key and cosigns what it sees.
    plan_with_goals(&server, &client, "p1", 4).await;
    let first = witness(&server, &state, &key, &auditor);
    assert!(first.ok, "{}", first.stderr);
    assert!(
        first.stderr.contains("witness.example.com/w1+"),
        "{}",
        first.stderr
    );
    assert!(first.stdout.lines().nth(1) == Some("5"), "{}", first.stdout);
    let witness_key = witness_key(&state);
    let cosigned = std::fs::read_to_string(state.join("cosigned.checkpoint")).expect("saved");
    assert_eq!(cosigned, first.stdout);
    check_cosignature(
        "first",
        &first.stdout,
        witness_key.name(),
        &witness_key.public_key(),
    )
    .expect("the cosignature verifies");

    // Without a token the audit endpoints refuse, and the witness says what to give.
    let anonymous = witness(&server, &state, &key, "");
    assert!(!anonymous.ok);
    assert!(
        anonymous.stderr.contains("auditor role"),
        "{}",
        anonymous.stderr
    );
    // A key other than the log's: the checkpoint carries no signature of it.
    let other_key = planledger_app::DigestKey::random()
        .public()
        .public_key
        .clone();
    let wrong = witness(&server, &state, &other_key, &auditor);
    assert!(!wrong.ok, "{}", wrong.stdout);
    assert!(
        wrong.stderr.contains("carries no signature by key"),
        "{}",
        wrong.stderr
    );

    // The log grows: the next checkpoint extends the one seen and is cosigned.
    let copy = kept.path().join("older-copy");
    server.terminate();
    copy_dir(data.path(), &copy);
    server.restart();
    assert!(server.wait_ready().await);
    // A new client after each restart: the old one's pooled connections are gone.
    let client = Client::new();
    plan_with_goals(&server, &client, "p2", 4).await;
    let second = witness(&server, &state, &key, &auditor);
    assert!(second.ok, "{}", second.stderr);
    assert!(
        second.stderr.contains("consistent with tree size 5"),
        "{}",
        second.stderr
    );
    assert_eq!(second.stdout.lines().nth(1), Some("10"));
    check_cosignature(
        "second",
        &second.stdout,
        witness_key.name(),
        &witness_key.public_key(),
    )
    .expect("the cosignature verifies");
    let state_before = std::fs::read_to_string(state.join("checkpoint")).expect("state");

    // The log is put back to its older copy: a rollback, refused.
    server.terminate();
    for entry in std::fs::read_dir(&copy).expect("the copy") {
        let entry = entry.expect("entry");
        let target = data.path().join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::remove_dir_all(&target).expect("remove the newer directory");
            copy_dir(&entry.path(), &target);
        }
    }
    server.restart();
    assert!(server.wait_ready().await);
    let client = Client::new();
    let rolled_back = witness(&server, &state, &key, &auditor);
    assert!(!rolled_back.ok, "{}", rolled_back.stdout);
    assert!(
        rolled_back.stderr.contains("REFUSES") && rolled_back.stderr.contains("ROLLBACK"),
        "{}",
        rolled_back.stderr
    );
    assert!(
        rolled_back.stderr.contains("from size 10") && rolled_back.stderr.contains("to size 5"),
        "{}",
        rolled_back.stderr
    );

    // The older copy takes other commands: at the size seen, another root (a fork) ...
    plan_with_goals(&server, &client, "p3", 4).await;
    let forked = witness(&server, &state, &key, &auditor);
    assert!(!forked.ok, "{}", forked.stdout);
    assert!(
        forked.stderr.contains("FORK: the tree of size 10"),
        "{}",
        forked.stderr
    );
    // ... and past it, a tree that does not extend the one seen.
    plan_with_goals(&server, &client, "p4", 2).await;
    let rewritten = witness(&server, &state, &key, &auditor);
    assert!(!rewritten.ok, "{}", rewritten.stdout);
    assert!(
        rewritten.stderr.contains("NOT AN EXTENSION")
            && rewritten.stderr.contains("tree of size 13")
            && rewritten.stderr.contains("tree of size 10"),
        "{}",
        rewritten.stderr
    );
    // Refusals leave the state as it was.
    assert_eq!(
        std::fs::read_to_string(state.join("checkpoint")).expect("state"),
        state_before
    );
}

/// Runs `planledger audit verify-cosignature` on `checkpoint`.
fn verify_cosignature(checkpoint: &Path, log_key: &str, witness_key: &str) -> Witnessed {
    let output = Command::new(binary())
        .args(["audit", "verify-cosignature", "--checkpoint"])
        .arg(checkpoint)
        .args(["--public-key", log_key, "--witness-key", witness_key])
        .output()
        .expect("run planledger audit verify-cosignature");
    Witnessed {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn a_cosignature_checks_offline_and_a_changed_cosignature_or_checkpoint_is_refused() {
    let data = tempfile::tempdir().expect("data dir");
    let kept = tempfile::tempdir().expect("kept");
    let state = kept.path().join("witness");
    let server = Planledger::start_in(data.path(), &[]);
    let client = Client::new();
    let key = log_key(&server, &client).await;
    let auditor = server.token("acme", "audrey", "auditor");
    plan_with_goals(&server, &client, "p1", 2).await;
    let round = witness(&server, &state, &key, &auditor);
    assert!(round.ok, "{}", round.stderr);
    let verifier = witness_key(&state).verifier_key();
    let cosigned = state.join("cosigned.checkpoint");

    let checked = verify_cosignature(&cosigned, &key, &verifier);
    assert!(checked.ok, "{}", checked.stderr);
    assert!(
        checked
            .stdout
            .contains("ok: witness witness.example.com/w1 cosigned the tree of 3 events"),
        "{}",
        checked.stdout
    );

    let text = std::fs::read_to_string(&cosigned).expect("cosigned checkpoint");
    let write = |name: &str, text: &str| {
        let path = kept.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    // A changed cosignature: one character of its signature bytes (the end of the last line).
    let last_line_end = text.trim_end().len();
    let at = last_line_end - 8;
    let flipped = if &text[at..at + 1] == "A" { "B" } else { "A" };
    let changed = format!("{}{flipped}{}", &text[..at], &text[at + 1..]);
    let refused = verify_cosignature(&write("changed-cosignature", &changed), &key, &verifier);
    assert!(!refused.ok, "{}", refused.stdout);
    assert!(
        refused
            .stderr
            .contains("the cosignature of witness witness.example.com/w1"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("does not verify"),
        "{}",
        refused.stderr
    );

    // A changed checkpoint (another tree size): the log's own signature fails first.
    let mut lines: Vec<&str> = text.split('\n').collect();
    lines[1] = "4";
    let resized = verify_cosignature(
        &write("changed-checkpoint", &lines.join("\n")),
        &key,
        &verifier,
    );
    assert!(!resized.ok, "{}", resized.stdout);
    assert!(
        resized.stderr.contains("the signature on")
            && resized.stderr.contains("does not verify with key"),
        "{}",
        resized.stderr
    );

    // Another witness's key: no cosignature of it.
    let other = WitnessKey::from_seed("witness.example.com/w2", [7; 32]).expect("name");
    let missing = verify_cosignature(&cosigned, &key, &other.verifier_key());
    assert!(!missing.ok, "{}", missing.stdout);
    assert!(
        missing
            .stderr
            .contains("carries no cosignature by witness witness.example.com/w2"),
        "{}",
        missing.stderr
    );

    // A verifier key whose key id does not match its name and key.
    let altered = verifier.replacen("w1", "w9", 1);
    let bad_key = verify_cosignature(&cosigned, &key, &altered);
    assert!(!bad_key.ok, "{}", bad_key.stdout);
    assert!(bad_key.stderr.contains("says key id"), "{}", bad_key.stderr);
}
