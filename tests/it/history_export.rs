//! `planledger export` against a running service: for a scripted multi-tenant history made
//! through the HTTP API, the NDJSON lines and Parquet rows equal the `/v1/events` pages field
//! by field, incremental exports concatenate to the full one, `--tenant` leaves the other
//! tenants out, an export taken while commands arrive holds every event up to the position it
//! reports, and DuckDB reads the Parquet file back.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use planledger_e2e::history::{
    Tenant, envelope_of_row, event_pages, export, ndjson_lines, parquet_rows, script_history,
    whole_log,
};
use planledger_e2e::server::Planledger;
use planledger_e2e::workspace_root;
use serde_json::Value;

/// A service with two tenants' histories: `acme` with plans q1 and q2, `globex` with q1.
async fn scripted_service() -> (Planledger, Vec<Tenant>) {
    let server = Planledger::start(&[]);
    let tenants = vec![Tenant::new(&server, "acme"), Tenant::new(&server, "globex")];
    script_history(&server, &tenants[0], &["q1", "q2"]).await;
    script_history(&server, &tenants[1], &["q1"]).await;
    (server, tenants)
}

fn path_text(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_lines_and_parquet_rows_equal_the_event_pages_field_by_field() {
    let (server, tenants) = scripted_service().await;
    let log = whole_log(&server, &tenants).await;
    assert_eq!(log.len(), 45, "three plans of fifteen events");
    assert!(
        log.iter().any(|event| !event["traceparent"].is_null()
            && !event["command_id"].is_null()
            && !event["correlation_id"].is_null()),
        "the history fills the optional fields too"
    );

    let ndjson = export(&server.data_dir, &["--format", "ndjson", "--to", "-"]);
    assert_eq!(ndjson.events, 45);
    assert_eq!(ndjson.through, 45);
    assert_eq!(ndjson_lines(&ndjson.stdout), log);
    // Byte for byte as the API renders each envelope: every line is in a page's body as sent.
    let mut bodies = String::new();
    for tenant in &tenants {
        bodies.push_str(
            &reqwest::Client::new()
                .get(server.url("/v1/events?limit=1000"))
                .bearer_auth(&tenant.token)
                .send()
                .await
                .expect("GET /v1/events")
                .text()
                .await
                .expect("a body"),
        );
    }
    for line in std::str::from_utf8(&ndjson.stdout).expect("UTF-8").lines() {
        assert!(bodies.contains(line), "{line} is not as the API renders it");
    }

    let out = tempfile::tempdir().expect("temp dir");
    let file = out.path().join("log.parquet");
    let parquet = export(
        &server.data_dir,
        &["--format", "parquet", "--to", path_text(&file)],
    );
    assert_eq!(parquet.events, 45);
    assert!(
        parquet.summary.contains("positions 1 to 45"),
        "{}",
        parquet.summary
    );
    let rows: Vec<Value> = parquet_rows(&file)
        .into_iter()
        .map(envelope_of_row)
        .collect();
    assert_eq!(rows, log);
    assert!(
        !out.path().join("log.parquet.partial").exists(),
        "the partial file was renamed into place"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_exports_concatenate_to_the_full_export() {
    let (server, tenants) = scripted_service().await;
    let out = tempfile::tempdir().expect("temp dir");

    // A first feed up to position 20, the next from where it says to continue, then more
    // history, and a third feed from there.
    let first = export(
        &server.data_dir,
        &["--format", "ndjson", "--to-position", "20", "--to", "-"],
    );
    assert_eq!((first.events, first.through), (20, 20));
    let second = export(
        &server.data_dir,
        &[
            "--format",
            "ndjson",
            "--from-position",
            &(first.through + 1).to_string(),
            "--to",
            "-",
        ],
    );
    assert_eq!((second.events, second.through), (25, 45));
    script_history(&server, &tenants[1], &["q9"]).await;
    let third = export(
        &server.data_dir,
        &[
            "--format",
            "ndjson",
            "--from-position",
            &(second.through + 1).to_string(),
            "--to",
            "-",
        ],
    );
    assert_eq!((third.events, third.through), (15, 60));
    // Nothing new: an empty feed that still says where to continue.
    let empty = export(
        &server.data_dir,
        &["--format", "ndjson", "--from-position", "61", "--to", "-"],
    );
    assert_eq!((empty.events, empty.through), (0, 60));
    assert!(empty.stdout.is_empty());

    let full = export(&server.data_dir, &["--format", "ndjson", "--to", "-"]);
    let concatenated = [first.stdout, second.stdout, third.stdout].concat();
    assert_eq!(concatenated, full.stdout);
    assert_eq!(
        ndjson_lines(&full.stdout),
        whole_log(&server, &tenants).await
    );

    // The same with Parquet files: their rows, one file after the other, are the full file's.
    let mut pieces = Vec::new();
    for (index, range) in [["1", "33"], ["34", "60"]].iter().enumerate() {
        let file = out.path().join(format!("part-{index}.parquet"));
        let run = export(
            &server.data_dir,
            &[
                "--format",
                "parquet",
                "--from-position",
                range[0],
                "--to-position",
                range[1],
                "--to",
                path_text(&file),
            ],
        );
        assert_eq!(run.through.to_string(), range[1]);
        pieces.extend(parquet_rows(&file));
    }
    let file = out.path().join("full.parquet");
    export(
        &server.data_dir,
        &["--format", "parquet", "--to", path_text(&file)],
    );
    assert_eq!(pieces, parquet_rows(&file));
    assert_eq!(pieces.len(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_export_leaves_the_other_tenants_out() {
    let (server, tenants) = scripted_service().await;
    let out = tempfile::tempdir().expect("temp dir");
    for tenant in &tenants {
        let pages = event_pages(&server, tenant, 10).await;
        let run = export(
            &server.data_dir,
            &["--format", "ndjson", "--tenant", &tenant.name, "--to", "-"],
        );
        assert_eq!(ndjson_lines(&run.stdout), pages, "{}", tenant.name);
        assert_eq!(run.through, 45, "the whole log was read");

        let file = out.path().join(format!("{}.parquet", tenant.name));
        export(
            &server.data_dir,
            &[
                "--format",
                "parquet",
                "--tenant",
                &tenant.name,
                "--to",
                path_text(&file),
            ],
        );
        let rows = parquet_rows(&file);
        assert!(
            rows.iter()
                .all(|row| row["_tenant"] == tenant.name.as_str())
        );
        let rows: Vec<Value> = rows.into_iter().map(envelope_of_row).collect();
        assert_eq!(rows, pages, "{}", tenant.name);
    }
    // A tenant without events gets an empty file, not an error.
    let run = export(
        &server.data_dir,
        &["--format", "ndjson", "--tenant", "initech", "--to", "-"],
    );
    assert_eq!((run.events, run.through), (0, 45));
    // `acme/` is a tenant name's whole, not a prefix: `acm` matches nothing.
    let run = export(
        &server.data_dir,
        &["--format", "ndjson", "--tenant", "acm", "--to", "-"],
    );
    assert_eq!(run.events, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_while_commands_arrive_holds_every_event_up_to_the_position_it_reports() {
    let (server, tenants) = scripted_service().await;
    // Writers keep adding plans while exports run beside the service; each export waits for
    // some more commands first, so the exports cut the log at different places.
    let ran = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..3)
        .map(|n| {
            let (server_url, tenant) = (server.base_url.clone(), tenants[n % 2].clone());
            let ran = ran.clone();
            tokio::spawn(async move { keep_writing(&server_url, &tenant, n, &ran).await })
        })
        .collect();
    let data_dir = server.data_dir.clone();
    let mut exports = Vec::new();
    for round in 1..=4u64 {
        while ran.load(Ordering::SeqCst) < round * 20 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let data_dir = data_dir.clone();
        let run = tokio::task::spawn_blocking(move || {
            export(&data_dir, &["--format", "ndjson", "--to", "-"])
        })
        .await
        .expect("export task");
        exports.push(run);
    }
    let mut written = 0;
    for writer in writers {
        written += writer.await.expect("writer task");
    }
    assert!(written > 0);
    let log = whole_log(&server, &tenants).await;
    let mut previous = 0;
    for run in &exports {
        let lines = ndjson_lines(&run.stdout);
        // Positions 1..=through, gap-free, each equal to what the API shows now.
        assert_eq!(lines.len() as u64, run.through, "{}", run.summary);
        assert_eq!(&lines[..], &log[..lines.len()]);
        assert!(
            run.through >= previous,
            "later exports reach at least as far"
        );
        previous = run.through;
    }
    assert!(
        exports.last().map(|run| run.through) > Some(45),
        "the exports saw commands arrive"
    );
}

/// Creates plans `w{n}-{i}` (three commands each), counting the commands into `ran`; returns
/// how many it ran.
async fn keep_writing(base_url: &str, tenant: &Tenant, n: usize, ran_so_far: &AtomicU64) -> u64 {
    let http = reqwest::Client::new();
    let mut ran = 0;
    for i in 0..40 {
        let plan = format!("w{n}-{i}");
        let script = planledger_e2e::history::plan_script(&plan);
        for body in script.into_iter().take(3) {
            let response = http
                .post(format!("{base_url}/v1/plans/{plan}/commands"))
                .bearer_auth(&tenant.token)
                .json(&body)
                .send()
                .await
                .expect("command sent");
            assert!(response.status().is_success(), "{}", response.status());
            ran += 1;
            ran_so_far.fetch_add(1, Ordering::SeqCst);
        }
    }
    ran
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_reads_the_parquet_export_back() {
    let (server, tenants) = scripted_service().await;
    let out = tempfile::tempdir().expect("temp dir");
    let file = out.path().join("log.parquet");
    export(
        &server.data_dir,
        &["--format", "parquet", "--to", path_text(&file)],
    );
    let log = whole_log(&server, &tenants).await;

    let root = workspace_root();
    let python = root.join(".tools/bin/python");
    let script = r#"
import json, sys, duckdb
path = sys.argv[1]
con = duckdb.connect()
count = con.execute("SELECT count(*) FROM read_parquet(?)", [path]).fetchone()[0]
by_type = dict(con.execute(
    "SELECT type, count(*) FROM read_parquet(?) GROUP BY type ORDER BY type", [path]).fetchall())
by_tenant = dict(con.execute(
    "SELECT tenant, count(*) FROM read_parquet(?) GROUP BY tenant", [path]).fetchall())
hashes = [[int(p), h, ph] for p, h, ph in con.execute(
    "SELECT position, hash, prev_hash FROM read_parquet(?) ORDER BY position", [path]).fetchall()]
print(json.dumps({"count": count, "by_type": by_type, "by_tenant": by_tenant, "hashes": hashes}))
"#;
    let output = Command::new(&python)
        .args(["-c", script])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; run `just setup`", python.display()));
    assert!(
        output.status.success(),
        "duckdb failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");

    assert_eq!(answer["count"], log.len());
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_tenant: BTreeMap<String, u64> = BTreeMap::new();
    for event in &log {
        *by_type
            .entry(event["type"].as_str().expect("type").to_owned())
            .or_default() += 1;
        let stream = event["stream"].as_str().expect("stream");
        let tenant = stream.rsplit_once('/').expect("tenant/plan").0;
        *by_tenant.entry(tenant.to_owned()).or_default() += 1;
    }
    assert_eq!(
        answer["by_type"],
        serde_json::to_value(&by_type).expect("json")
    );
    assert_eq!(
        answer["by_tenant"],
        serde_json::to_value(&by_tenant).expect("json")
    );
    let expected: Vec<Value> = log
        .iter()
        .map(|event| serde_json::json!([event["position"], event["hash"], event["prev_hash"]]))
        .collect();
    assert_eq!(answer["hashes"], Value::Array(expected));
}

#[test]
fn parquet_cannot_go_to_standard_output() {
    let server = Planledger::start(&[]);
    let output = Command::new(planledger_e2e::server::binary())
        .args(["export", "--format", "parquet", "--to", "-", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .expect("export runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("only NDJSON"), "{stderr}");
}
