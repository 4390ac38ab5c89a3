//! `planledger export --proof`: every row carries its event's stored bytes and its inclusion
//! proof in the tree of the export's last position, and the signed checkpoint of that tree is
//! written beside the file. `planledger audit verify-export` checks both formats offline, the
//! independent Python verifier checks NDJSON rows against the checkpoint, and a changed byte
//! of an event and a changed proof hash each fail with their own message; the refusals say
//! what to pass.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use planledger_e2e::auditor::{Auditor, python_verify};
use planledger_e2e::history::{Tenant, export, export_output, script_history};
use planledger_e2e::server::{Planledger, binary};
use serde_json::{Value, json};

/// A service with two tenants' histories (45 events).
async fn scripted_service() -> Planledger {
    let server = Planledger::start(&[]);
    let tenants = [Tenant::new(&server, "acme"), Tenant::new(&server, "globex")];
    script_history(&server, &tenants[0], &["q1", "q2"]).await;
    script_history(&server, &tenants[1], &["q1"]).await;
    server
}

fn text(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

fn checkpoint_of(file: &Path) -> PathBuf {
    PathBuf::from(format!("{}.checkpoint", file.display()))
}

/// Runs `planledger audit verify-export`.
fn verify_export(checkpoint: &Path, key: &str, file: &Path) -> Output {
    Command::new(binary())
        .args(["audit", "verify-export", "--checkpoint", text(checkpoint)])
        .args(["--public-key", key, "--export", text(file)])
        .output()
        .expect("planledger audit verify-export runs")
}

/// Asserts `verify-export` passed over `rows` rows; returns what it printed.
fn assert_verified(checkpoint: &Path, key: &str, file: &Path, rows: u64) -> String {
    let output = verify_export(checkpoint, key, file);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "verify-export failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&format!("ok: all {rows} rows")), "{stdout}");
    stdout.into_owned()
}

/// Asserts `verify-export` failed, and returns what it said.
fn refused(checkpoint: &Path, key: &str, file: &Path) -> String {
    let output = verify_export(checkpoint, key, file);
    assert!(
        !output.status.success(),
        "verify-export passed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_with_proofs_verify_in_both_formats_against_the_checkpoint_beside_them() {
    let server = scripted_service().await;
    let token = server.token("acme", "ada", "admin");
    let auditor = Auditor::new(&server, &token);
    let key = auditor.log_key().await;
    let out = tempfile::tempdir().expect("temp dir");

    let ndjson = out.path().join("log.ndjson");
    let run = export(
        &server.data_dir,
        &["--format", "ndjson", "--proof", "--to", text(&ndjson)],
    );
    assert_eq!((run.events, run.through), (45, 45));
    let sidecar = checkpoint_of(&ndjson);
    assert!(
        run.summary.contains(text(&sidecar)) && run.summary.contains("tree of 45 events"),
        "{}",
        run.summary
    );
    // The checkpoint is the service's own for that tree size, signature and all (Ed25519
    // signatures are deterministic).
    let checkpoint = std::fs::read_to_string(&sidecar).expect("the checkpoint beside the file");
    assert_eq!(checkpoint, auditor.checkpoint().await);
    let printed = assert_verified(&sidecar, &key, &ndjson, 45);
    assert!(printed.contains("every position from 1 to 45"), "{printed}");

    // Each line's event is the stored envelope byte for byte: the line of a plain export.
    let plain = export(&server.data_dir, &["--format", "ndjson", "--to", "-"]);
    let plain = String::from_utf8(plain.stdout).expect("UTF-8");
    let proved = std::fs::read_to_string(&ndjson).expect("the export");
    for (line, stored) in proved.lines().zip(plain.lines()) {
        let event = line
            .strip_prefix("{\"event\":")
            .and_then(|rest| rest.get(..stored.len()))
            .expect("a line starts with its event");
        assert_eq!(event, stored);
        let value: Value = serde_json::from_str(line).expect("a line is JSON");
        assert_eq!(value["proof"]["tree_size"], 45, "{line}");
        assert_eq!(value["proof"]["position"], value["event"]["position"]);
    }
    assert_eq!(proved.lines().count(), 45);
    // One line's event and proof, saved as files, check with `audit verify-event`.
    let line = proved.lines().nth(4).expect("line 5");
    let value: Value = serde_json::from_str(line).expect("JSON");
    let event = out.path().join("e5.json");
    let proof = out.path().join("p5.json");
    std::fs::write(&event, plain.lines().nth(4).expect("line 5")).expect("write");
    std::fs::write(&proof, value["proof"].to_string()).expect("write");
    let output = Command::new(binary())
        .args(["audit", "verify-event", "--checkpoint", text(&sidecar)])
        .args([
            "--proof",
            text(&proof),
            "--event",
            text(&event),
            "--public-key",
            &key,
        ])
        .output()
        .expect("planledger audit verify-event runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The independent verifier checks a sample of rows against the checkpoint.
    let rows = [1u64, 2, 17, 32, 33, 44, 45];
    let bundle = json!({
        "public_key": key,
        "checkpoints": [checkpoint],
        "export": [{"checkpoint": 0, "file": text(&ndjson), "rows": rows}],
    });
    let (ok, summary) = python_verify(&bundle);
    assert!(ok, "{summary}");
    assert_eq!(summary["inclusion"], rows.len());

    // Parquet, of a range: the proofs are in the tree of the range's last position.
    let parquet = out.path().join("part.parquet");
    let run = export(
        &server.data_dir,
        &[
            "--format",
            "parquet",
            "--proof",
            "--from-position",
            "11",
            "--to-position",
            "30",
            "--to",
            text(&parquet),
        ],
    );
    assert_eq!((run.events, run.through), (20, 30));
    let sidecar = checkpoint_of(&parquet);
    let checkpoint = std::fs::read_to_string(&sidecar).expect("the checkpoint beside the file");
    assert_eq!(checkpoint.lines().nth(1), Some("30"), "{checkpoint}");
    assert_verified(&sidecar, &key, &parquet, 20);
    // A checkpoint of another tree size is not this export's.
    let message = refused(&checkpoint_of(&ndjson), &key, &parquet);
    assert!(
        message.contains("row 1 ") && message.contains("tree size 30"),
        "{message}"
    );
    // Nor is a checkpoint checked with another key.
    // RFC 8032's first test key.
    let other = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    let message = refused(&sidecar, other, &parquet);
    assert!(message.contains("no signature by key"), "{message}");
}

/// Rewrites line `row` (from 1) of the NDJSON file `from` with `change` into `to`.
fn rewrite_line(from: &Path, to: &Path, row: usize, change: impl FnOnce(&str) -> String) {
    let text = std::fs::read_to_string(from).expect("the export");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[row - 1] = change(&lines[row - 1]);
    std::fs::write(to, lines.join("\n") + "\n").expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_event_byte_and_a_changed_proof_hash_each_fail_with_their_own_message() {
    let server = scripted_service().await;
    let token = server.token("acme", "ada", "admin");
    let key = Auditor::new(&server, &token).log_key().await;
    let out = tempfile::tempdir().expect("temp dir");
    let file = out.path().join("log.ndjson");
    export(
        &server.data_dir,
        &["--format", "ndjson", "--proof", "--to", text(&file)],
    );
    let checkpoint = checkpoint_of(&file);
    assert_verified(&checkpoint, &key, &file, 45);

    // A removed row leaves every other row provable: the check says the range has a gap.
    let removed = out.path().join("removed-row.ndjson");
    let whole = std::fs::read_to_string(&file).expect("the export");
    let kept: Vec<&str> = whole
        .lines()
        .filter(|line| !line.contains("\"position\":10,"))
        .collect();
    std::fs::write(&removed, kept.join("\n") + "\n").expect("write");
    let printed = assert_verified(&checkpoint, &key, &removed, 44);
    assert!(printed.contains("44 of the positions 1 to 45"), "{printed}");

    // One byte of row 7's event: a digit of its event id.
    let changed = out.path().join("changed-event.ndjson");
    rewrite_line(&file, &changed, 7, |line| {
        let at = line.find("\"event_id\":\"").expect("an event id") + 12;
        let old = line.as_bytes()[at];
        let new = if old == b'0' { '1' } else { '0' };
        format!("{}{new}{}", &line[..at], &line[at + 1..])
    });
    let message = refused(&checkpoint, &key, &changed);
    assert!(
        message.contains("row 7 ")
            && message.contains("position 7")
            && message.contains("the event's bytes are not the ones the log holds"),
        "{message}"
    );

    // One bit of the first hash of row 9's proof.
    let changed = out.path().join("changed-proof.ndjson");
    rewrite_line(&file, &changed, 9, |line| {
        let value: Value = serde_json::from_str(line).expect("JSON");
        let hash = value["proof"]["inclusion_path"][0]
            .as_str()
            .expect("a hash");
        let mut bytes = STANDARD.decode(hash).expect("base64");
        bytes[3] ^= 0x04;
        let flipped = STANDARD.encode(bytes);
        line.replacen(hash, &flipped, 1)
    });
    let message = refused(&checkpoint, &key, &changed);
    assert!(
        message.contains("row 9 ")
            && message.contains("does not lead to the checkpoint's root")
            && !message.contains("the event's bytes are not"),
        "{message}"
    );
    // The independent verifier refuses that row too.
    let bundle = json!({
        "public_key": key,
        "checkpoints": [std::fs::read_to_string(&checkpoint).expect("checkpoint")],
        "export": [{"checkpoint": 0, "file": text(&changed), "rows": [8, 9, 10]}],
    });
    let (ok, summary) = python_verify(&bundle);
    assert!(!ok, "{summary}");
    assert_eq!(summary["inclusion"], 2, "{summary}");
}

/// Runs `planledger export` expecting a refusal; returns its message.
fn export_refused(data_dir: &Path, args: &[&str]) -> String {
    let output = export_output(data_dir, args);
    assert!(!output.status.success(), "export {args:?} passed");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_with_proofs_refuses_what_it_cannot_sign_or_place() {
    let server = scripted_service().await;
    let out = tempfile::tempdir().expect("temp dir");
    let file = out.path().join("log.ndjson");

    let missing = out.path().join("no.key");
    let message = export_refused(
        &server.data_dir,
        &[
            "--format",
            "ndjson",
            "--proof",
            "--digest-key",
            text(&missing),
            "--to",
            text(&file),
        ],
    );
    assert!(message.contains("--digest-key FILE"), "{message}");
    assert!(!file.exists() && !checkpoint_of(&file).exists());

    let message = export_refused(
        &server.data_dir,
        &["--format", "ndjson", "--proof", "--to", "-"],
    );
    assert!(message.contains("give a file name with --to"), "{message}");

    let message = export_refused(
        &server.data_dir,
        &[
            "--format",
            "ndjson",
            "--proof",
            "--nats",
            "nats://127.0.0.1:1",
            "--to",
            text(&file),
        ],
    );
    assert!(
        message.contains("--data-dir NODE_DATA_DIR/partitions/P"),
        "{message}"
    );

    // With the data directory's own key (its default), it signs.
    export(
        &server.data_dir,
        &["--format", "ndjson", "--proof", "--to", text(&file)],
    );
    assert!(checkpoint_of(&file).exists());
}
