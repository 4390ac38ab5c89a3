//! The API fuzzed by schemathesis over every operation of the served `/openapi.json`, a few
//! examples per operation: the short form of `just schemathesis` (docs/operations.md, "API
//! fuzzing"). schemathesis is `.tools/bin/st`, which `just setup` installs; without it the test
//! says SKIPPED and passes.

use std::process::Command;

use planledger_e2e::server::Planledger;
use planledger_e2e::workspace_root;

/// Examples per operation: enough to reach every operation's parameters, short enough for
/// `just test` (the recipe runs 30).
const EXAMPLES: &str = "5";

#[tokio::test]
async fn schemathesis_finds_no_failure_over_every_operation_of_the_document() {
    let st = workspace_root().join(".tools/bin/st");
    if !st.exists() {
        eprintln!(
            "SKIPPED: schemathesis is not installed at {} (`just setup` installs it); the API was not fuzzed",
            st.display()
        );
        return;
    }
    let server = Planledger::start(&["--rate-limit-per-second", "0"]);
    let token = server.token("fuzz", "st", "admin");
    // Hypothesis keeps its example database in the working directory.
    let scratch = tempfile::tempdir().expect("a working directory for schemathesis");
    // A copy of the served document: given its URL, schemathesis leaves out its own operation.
    let document = reqwest::get(server.url("/openapi.json"))
        .await
        .and_then(|r| r.error_for_status())
        .expect("GET /openapi.json")
        .text()
        .await
        .expect("the document's text");
    let operations: usize = serde_json::from_str::<serde_json::Value>(&document)
        .expect("the document is JSON")["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|methods| methods.as_object().map_or(0, |m| m.len()))
        .sum();
    let saved = scratch.path().join("openapi.json");
    std::fs::write(&saved, &document).expect("save the document");
    let output = Command::new(&st)
        .current_dir(scratch.path())
        .arg("--config-file")
        .arg(workspace_root().join("tests/schemathesis.toml"))
        .args(["--no-color", "run"])
        .arg(&saved)
        .args(["--url", &server.base_url])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--max-examples", EXAMPLES])
        .output()
        .expect("run schemathesis");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found failures (replay one with `st replay ID`, or run `just schemathesis`):\n{printed}\nservice log:\n{}",
        server.log()
    );
    let tested = format!("Tested: {operations}");
    assert!(
        printed.contains(&tested),
        "schemathesis did not test all {operations} operations:\n{printed}"
    );
}
