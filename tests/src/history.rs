//! Scripted multi-tenant histories made through the HTTP API, and the tools to compare what
//! `planledger export` and `planledger replay --plan` print with what the API answers.

use std::path::Path;
use std::process::Command;

use arrow_array::cast::AsArray;
use arrow_array::types::{TimestampNanosecondType, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};

use crate::client::{Client, today_plus};
use crate::server::{Planledger, binary};

/// A tenant of a scripted history and a token that may run commands and read its log.
#[derive(Clone, Debug)]
pub struct Tenant {
    /// The tenant.
    pub name: String,
    /// An admin token of it.
    pub token: String,
}

impl Tenant {
    /// A tenant of `server` with an admin token.
    pub fn new(server: &Planledger, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            token: server.token(name, &format!("{name}-lead"), "admin"),
        }
    }
}

/// Runs a command with the headers that fill the envelope's optional fields (idempotency key,
/// correlation id, trace context) and returns its answer's position.
pub async fn command_with_headers(
    server: &Planledger,
    tenant: &Tenant,
    plan: &str,
    key: &str,
    body: Value,
) -> u64 {
    let response = reqwest::Client::new()
        .post(server.url(&format!("/v1/plans/{plan}/commands")))
        .bearer_auth(&tenant.token)
        .header("Idempotency-Key", key)
        .header("X-Correlation-Id", format!("corr-{key}"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&body)
        .send()
        .await
        .expect("the command request is sent");
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "command failed ({status}): {answer}");
    answer["position"].as_u64().expect("a position")
}

/// The commands of one plan's scripted history: a plan with a parent goal and two KPI child
/// goals, steps, roles, a baseline, check-ins, an adjustment, a completion and a closure.
pub fn plan_script(title: &str) -> Vec<Value> {
    vec![
        json!({"type": "CreatePlan", "data": {
            "title": title, "outcome": "grow", "starts_on": today_plus(-30), "ends_on": today_plus(90),
            "checkin_cadence_days": 7, "checkin_grace_days": 2}}),
        json!({"type": "DefineGoal", "data": {
            "goal_id": "growth", "title": "Growth", "due": today_plus(80)}}),
        json!({"type": "DefineGoal", "data": {
            "goal_id": "signups", "title": "Signups \"quoted\" é", "parent_goal_id": "growth",
            "due": today_plus(40), "weight": 2.0,
            "kpi": {"unit": "users", "baseline": 100.0, "target": 200.0, "direction": "increase"}}}),
        json!({"type": "DefineGoal", "data": {
            "goal_id": "churn", "title": "Churn", "parent_goal_id": "growth", "due": today_plus(60),
            "kpi": {"unit": "%", "baseline": 8.0, "target": 4.0, "direction": "decrease"}}}),
        json!({"type": "AddStep", "data": {
            "step_id": "landing", "goal_id": "signups", "title": "Landing page", "due": today_plus(10),
            "estimate_days": 3.0}}),
        json!({"type": "AddStep", "data": {
            "step_id": "survey", "goal_id": "churn", "title": "Exit survey", "due": today_plus(20)}}),
        json!({"type": "AssignRole", "data": {"person": "ana", "role": "accountable", "goal_id": "signups"}}),
        json!({"type": "AssignRole", "data": {"person": "bo", "role": "responsible", "step_id": "landing"}}),
        json!({"type": "AssignRole", "data": {"person": "cy", "role": "accountable", "goal_id": "churn"}}),
        json!({"type": "SetBaseline", "data": {"label": "kickoff"}}),
        json!({"type": "RecordCheckIn", "data": {
            "goal_id": "signups", "value": 130.0, "confidence": 0.6, "status": "at_risk",
            "blockers": ["ads budget"]}}),
        json!({"type": "CompleteStep", "data": {"step_id": "landing"}}),
        json!({"type": "AdjustGoal", "data": {
            "goal_id": "signups", "target": 180.0, "reason": "market shrank"}}),
        json!({"type": "RecordCheckIn", "data": {
            "goal_id": "churn", "value": 6.5, "confidence": 0.8, "note": "better onboarding"}}),
        json!({"type": "RecordCheckIn", "data": {
            "goal_id": "signups", "value": 160.0, "confidence": 0.7, "status": "on_track"}}),
    ]
}

/// Runs [`plan_script`] on each of `plans` for `tenant`, interleaving the plans command by
/// command; every third command carries the optional headers. Returns the last position.
pub async fn script_history(server: &Planledger, tenant: &Tenant, plans: &[&str]) -> u64 {
    let client = Client::new();
    let scripts: Vec<Vec<Value>> = plans.iter().map(|plan| plan_script(plan)).collect();
    let mut position = 0;
    for step in 0..scripts[0].len() {
        for (plan, script) in plans.iter().zip(&scripts) {
            let body = script[step].clone();
            position = if step % 3 == 1 {
                let key = format!("{}-{plan}-{step}", tenant.name);
                command_with_headers(server, tenant, plan, &key, body).await
            } else {
                client.command(server, &tenant.token, plan, body).await
            };
        }
    }
    position
}

/// Every event of the tenant's log, through `GET /v1/events` pages of `page` events.
pub async fn event_pages(server: &Planledger, tenant: &Tenant, page: usize) -> Vec<Value> {
    let client = Client::new();
    let mut events = Vec::new();
    let mut from = 1;
    loop {
        let (status, body) = client
            .get(
                &server.base_url,
                &tenant.token,
                &format!("/v1/events?from_position={from}&limit={page}"),
            )
            .await;
        assert!(status.is_success(), "GET /v1/events: {status} {body}");
        let batch = body["events"].as_array().expect("events").clone();
        let next = body["next_position"].as_u64().expect("next_position");
        let last = body["last_position"].as_u64().expect("last_position");
        events.extend(batch);
        if next > last {
            return events;
        }
        from = next;
    }
}

/// Every tenant's events merged in position order: the whole log as the API shows it.
pub async fn whole_log(server: &Planledger, tenants: &[Tenant]) -> Vec<Value> {
    let mut all = Vec::new();
    for tenant in tenants {
        all.extend(event_pages(server, tenant, 7).await);
    }
    all.sort_by_key(|event| event["position"].as_u64());
    all
}

/// What one run of `planledger export` printed.
#[derive(Debug)]
pub struct ExportRun {
    /// Its standard output (the NDJSON with `--to -`).
    pub stdout: Vec<u8>,
    /// Its summary line on standard error.
    pub summary: String,
    /// Events it says it wrote.
    pub events: u64,
    /// The position it says it read through.
    pub through: u64,
}

/// Runs `planledger export --data-dir DIR ARGS...`, whatever its outcome.
pub fn export_output(data_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .arg("export")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("planledger export runs")
}

/// Runs `planledger export --data-dir DIR ARGS...` and checks it succeeded.
pub fn export(data_dir: &Path, args: &[&str]) -> ExportRun {
    let output = export_output(data_dir, args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "export {args:?} failed: {stderr}");
    let summary = stderr
        .lines()
        .find(|line| line.starts_with("exported "))
        .unwrap_or_else(|| panic!("no summary line in: {stderr}"))
        .to_owned();
    let number_after = |marker: &str| -> u64 {
        let at = summary
            .find(marker)
            .unwrap_or_else(|| panic!("{marker:?} missing in {summary:?}"))
            + marker.len();
        summary[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|digits| digits.parse().ok())
            .unwrap_or_else(|| panic!("no number after {marker:?} in {summary:?}"))
    };
    ExportRun {
        stdout: output.stdout,
        events: number_after("exported "),
        through: number_after("read through position "),
        summary,
    }
}

/// The lines of an NDJSON export, parsed.
pub fn ndjson_lines(bytes: &[u8]) -> Vec<Value> {
    std::str::from_utf8(bytes)
        .expect("NDJSON is UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON document"))
        .collect()
}

/// The rows of a Parquet export, each turned back into the envelope JSON `/v1/events` shows
/// (times rendered from their nanoseconds, `data` parsed from its text), plus the `tenant` and
/// `plan_id` columns as `_tenant` and `_plan_id`.
pub fn parquet_rows(path: &Path) -> Vec<Value> {
    let file = std::fs::File::open(path).expect("the Parquet file opens");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("a Parquet file")
        .build()
        .expect("a reader");
    let mut rows = Vec::new();
    for batch in reader {
        rows.extend(batch_rows(&batch.expect("a batch reads")));
    }
    rows
}

fn batch_rows(batch: &RecordBatch) -> Vec<Value> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("column {name} is in the file"))
    };
    let text = |name: &str, row: usize| -> Value {
        let array = column(name).as_string::<i32>();
        if array.is_null(row) {
            Value::Null
        } else {
            Value::String(array.value(row).to_owned())
        }
    };
    let u64_at = |name: &str, row: usize| column(name).as_primitive::<UInt64Type>().value(row);
    let time = |name: &str, row: usize| -> Value {
        let nanos = column(name)
            .as_primitive::<TimestampNanosecondType>()
            .value(row);
        let time = jiff::Timestamp::from_nanosecond(i128::from(nanos)).expect("in range");
        Value::String(time.to_string())
    };
    (0..batch.num_rows())
        .map(|row| {
            let data: Value = serde_json::from_str(column("data").as_string::<i32>().value(row))
                .expect("data is JSON text");
            json!({
                "position": u64_at("position", row),
                "stream": text("stream", row),
                "version": u64_at("version", row),
                "event_id": text("event_id", row),
                "type": text("type", row),
                "schema_version": column("schema_version").as_primitive::<UInt32Type>().value(row),
                "occurred_at": time("occurred_at", row),
                "recorded_at": time("recorded_at", row),
                "actor": text("actor", row),
                "command_id": text("command_id", row),
                "correlation_id": text("correlation_id", row),
                "causation_id": text("causation_id", row),
                "traceparent": text("traceparent", row),
                "data": data,
                "prev_hash": text("prev_hash", row),
                "hash": text("hash", row),
                "_tenant": text("tenant", row),
                "_plan_id": text("plan_id", row),
            })
        })
        .collect()
}

/// A Parquet row without the columns the envelope does not have, checking them on the way:
/// `tenant` and `plan_id` are the stream's two halves.
pub fn envelope_of_row(mut row: Value) -> Value {
    let object = row.as_object_mut().expect("a row is an object");
    let tenant = object.remove("_tenant").expect("tenant column");
    let plan_id = object.remove("_plan_id").expect("plan_id column");
    let stream = object["stream"].as_str().expect("stream").to_owned();
    assert_eq!(
        format!(
            "{}/{}",
            tenant.as_str().expect("tenant"),
            plan_id.as_str().expect("plan_id")
        ),
        stream
    );
    row
}

/// Runs `planledger replay --data-dir DIR ARGS...`: its status, standard output and error.
pub fn replay(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(binary())
        .arg("replay")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("planledger replay runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
