//! Auditing end to end: audit-trail filters, chain verification over HTTP, and signed digests
//! taken over HTTP and checked later by `planledger verify --digest` against the stopped
//! service's data directory.

use std::path::Path;
use std::process::Command;

use planledger_e2e::client::{Client, today_plus};
use planledger_e2e::server::{Planledger, binary};
use planledger_store::{EventStore, Position, StoreOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn check_in(goal: &str, value: f64) -> Value {
    json!({"type": "RecordCheckIn", "data": {
        "goal_id": goal, "value": value, "confidence": 0.6}})
}

fn define_goal(goal: &str) -> Value {
    json!({"type": "DefineGoal", "data": {
        "goal_id": goal, "title": goal, "due": today_plus(30),
        "kpi": {"unit": "u", "baseline": 0.0, "target": 10.0, "direction": "increase"}}})
}

/// A plan written by two people: ana plans (creates, defines, adjusts), bob checks in.
async fn two_author_plan(server: &Planledger, client: &Client, plan: &str) {
    let ana = server.token("acme", "ana", "planner");
    let bob = server.token("acme", "bob", "contributor");
    client
        .command(
            server,
            &ana,
            plan,
            json!({"type": "CreatePlan", "data": {"title": "audited",
                "starts_on": today_plus(-7), "ends_on": today_plus(60), "checkin_cadence_days": 7}}),
        )
        .await;
    client.command(server, &ana, plan, define_goal("g1")).await;
    client.command(server, &ana, plan, define_goal("g2")).await;
    for n in 0..4 {
        client
            .command(server, &bob, plan, check_in("g1", f64::from(n)))
            .await;
    }
    client
        .command(
            server,
            &ana,
            plan,
            json!({"type": "AdjustGoal", "data": {"goal_id": "g1", "target": 12.0,
                "reason": "new market"}}),
        )
        .await;
    client
        .command(server, &bob, plan, check_in("g2", 5.0))
        .await;
}

/// Every page of `path` (which has a query string), following `next_from_version`, with
/// `limit` events per page; the pages' events in order.
async fn all_pages(
    server: &Planledger,
    client: &Client,
    token: &str,
    path: &str,
    limit: u64,
) -> Vec<Value> {
    let mut events = Vec::new();
    let mut from = 1;
    let mut pages = 0;
    loop {
        let (status, page) = client
            .get(
                &server.base_url,
                token,
                &format!("{path}&limit={limit}&from_version={from}"),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        events.extend(page["events"].as_array().expect("events").iter().cloned());
        pages += 1;
        assert!(pages < 100, "paging does not end");
        match page["next_from_version"].as_u64() {
            Some(next) => {
                assert!(next > from, "paging moves on");
                from = next;
            }
            None => return events,
        }
    }
}

fn versions(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["version"].as_u64().expect("version"))
        .collect()
}

#[tokio::test]
async fn the_audit_trail_filters_by_actor_type_and_recorded_time_and_pages_through_them() {
    let server = Planledger::start(&[]);
    let client = Client::new();
    two_author_plan(&server, &client, "p1").await;
    let auditor = server.token("acme", "audrey", "auditor");
    let (status, trail) = client
        .get(&server.base_url, &auditor, "/v1/plans/p1/events?limit=1000")
        .await;
    assert_eq!(status, StatusCode::OK, "{trail}");
    let trail = trail["events"].as_array().expect("events").clone();
    assert_eq!(trail.len(), 9);
    let expect = |keep: &dyn Fn(&Value) -> bool| {
        versions(
            &trail
                .iter()
                .filter(|e| keep(e))
                .cloned()
                .collect::<Vec<_>>(),
        )
    };

    let by_bob = all_pages(
        &server,
        &client,
        &auditor,
        "/v1/plans/p1/events?actor=bob",
        2,
    )
    .await;
    assert_eq!(versions(&by_bob), expect(&|e| e["actor"] == "bob"));
    assert_eq!(versions(&by_bob), vec![4, 5, 6, 7, 9]);

    let typed = all_pages(
        &server,
        &client,
        &auditor,
        "/v1/plans/p1/events?type=GoalAdjusted&type=GoalDefined",
        1,
    )
    .await;
    assert_eq!(versions(&typed), vec![2, 3, 8]);
    let comma = all_pages(
        &server,
        &client,
        &auditor,
        "/v1/plans/p1/events?type=GoalAdjusted,GoalDefined",
        1000,
    )
    .await;
    assert_eq!(versions(&comma), vec![2, 3, 8]);

    // `from` inclusive, `to` exclusive, on recorded_at.
    let from = trail[3]["recorded_at"].as_str().expect("time").to_string();
    let to = trail[7]["recorded_at"].as_str().expect("time").to_string();
    let timed = all_pages(
        &server,
        &client,
        &auditor,
        &format!("/v1/plans/p1/events?from={from}&to={to}"),
        2,
    )
    .await;
    let in_range = |e: &Value| {
        let at: jiff::Timestamp = e["recorded_at"]
            .as_str()
            .expect("time")
            .parse()
            .expect("time");
        at >= from.parse().expect("time") && at < to.parse().expect("time")
    };
    assert_eq!(versions(&timed), expect(&in_range));
    assert!(versions(&timed).contains(&4) && !versions(&timed).contains(&8));

    // Every filter at once: bob's check-ins in the range.
    let combined = all_pages(
        &server,
        &client,
        &auditor,
        &format!("/v1/plans/p1/events?actor=bob&type=CheckInRecorded&from={from}&to={to}"),
        1,
    )
    .await;
    assert_eq!(
        versions(&combined),
        expect(&|e| e["actor"] == "bob" && e["type"] == "CheckInRecorded" && in_range(e))
    );
    let (_, nobody) = client
        .get(
            &server.base_url,
            &auditor,
            "/v1/plans/p1/events?actor=carol",
        )
        .await;
    assert_eq!(nobody["events"], json!([]));
    assert_eq!(nobody["next_from_version"], Value::Null);
}

#[tokio::test]
async fn bad_audit_filters_are_problems_naming_the_parameter() {
    let server = Planledger::start(&[]);
    let client = Client::new();
    two_author_plan(&server, &client, "p1").await;
    let auditor = server.token("acme", "audrey", "auditor");
    for (query, field) in [
        ("type=GoalInvented", "type"),
        ("type=GoalAdjusted&type=nope", "type"),
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("from=2026-06-02T00:00:00Z&to=2026-06-01T00:00:00Z", "from"),
        ("actor=", "actor"),
        ("limit=ten", "limit"),
    ] {
        let (status, body) = client
            .get(
                &server.base_url,
                &auditor,
                &format!("/v1/plans/p1/events?{query}"),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
    }
    let (status, body) = client
        .get(&server.base_url, &auditor, "/v1/plans/p1/events?colour=red")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("colour"),
        "{body}"
    );
}

/// Runs `planledger` with `args`: success, stdout, stderr.
fn planledger(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(binary())
        .args(args)
        .output()
        .expect("run planledger");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn verify_digest(data_dir: &Path, digest: &Path, extra: &[&str]) -> (bool, String, String) {
    let (dir, file) = (data_dir.display().to_string(), digest.display().to_string());
    let mut args = vec!["verify", "--data-dir", &dir, "--digest", &file];
    args.extend_from_slice(extra);
    planledger(&args)
}

fn open_log(data_dir: &Path) -> EventStore {
    EventStore::open(data_dir.join("log"), StoreOptions::default()).expect("open the stopped log")
}

#[tokio::test]
async fn chain_verification_over_http_is_for_auditors_and_may_be_bounded() {
    let server = Planledger::start(&[]);
    let client = Client::new();
    two_author_plan(&server, &client, "p1").await;
    let auditor = server.token("acme", "audrey", "auditor");
    let (status, report) = client
        .get(&server.base_url, &auditor, "/v1/audit/verify")
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["checked"], 9);
    assert_eq!(report["first_broken"], Value::Null);
    assert_eq!(report["last_position"], 9);
    let (_, trail) = client
        .get(&server.base_url, &auditor, "/v1/plans/p1/events")
        .await;
    assert_eq!(report["last_hash"], trail["events"][8]["hash"]);

    let (status, bounded) = client
        .get(&server.base_url, &auditor, "/v1/audit/verify?to_position=4")
        .await;
    assert_eq!(status, StatusCode::OK, "{bounded}");
    assert_eq!(
        (
            bounded["checked"].as_u64(),
            bounded["last_position"].as_u64()
        ),
        (Some(4), Some(4))
    );
    assert_eq!(bounded["last_hash"], trail["events"][3]["hash"]);

    let (status, body) = client
        .get(&server.base_url, &auditor, "/v1/audit/verify?to_position=0")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let planner = server.token("acme", "ana", "planner");
    for path in ["/v1/audit/verify", "/v1/audit/digest", "/v1/audit/keys"] {
        let (status, body) = client.get(&server.base_url, &planner, path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
    }
    let admin = server.token("acme", "root", "admin");
    let (status, _) = client
        .get(&server.base_url, &admin, "/v1/audit/digest")
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_single_node_refuses_a_partition_on_every_audit_route() {
    // `?partition=` picks one partition's log on a cluster node; a single node has one log, so
    // the parameter is a mistake there, refused like any unknown one rather than ignored.
    let server = Planledger::start(&[]);
    let client = Client::new();
    two_author_plan(&server, &client, "p1").await;
    let auditor = server.token("acme", "audrey", "auditor");
    for path in [
        "/v1/audit/verify",
        "/v1/audit/digest",
        "/v1/audit/keys",
        "/v1/audit/checkpoint",
        "/v1/audit/proof/inclusion?position=1",
        "/v1/audit/proof/consistency?from=1",
    ] {
        let (status, _) = client.get(&server.base_url, &auditor, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let separator = if path.contains('?') { '&' } else { '?' };
        let with_partition = format!("{path}{separator}partition=0");
        let (status, body) = client
            .get(&server.base_url, &auditor, &with_partition)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{with_partition}: {body}");
        assert_eq!(body["code"], "invalid_query", "{with_partition}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("partition"), "{with_partition}: {body}");
    }
}

#[tokio::test]
async fn a_digest_taken_over_http_verifies_later_and_each_fault_fails_with_its_own_message() {
    let mut server = Planledger::start(&[]);
    let client = Client::new();
    two_author_plan(&server, &client, "p1").await;
    let auditor = server.token("acme", "audrey", "auditor");
    let (status, digest) = client
        .get(&server.base_url, &auditor, "/v1/audit/digest")
        .await;
    assert_eq!(status, StatusCode::OK, "{digest}");
    assert_eq!(digest["position"], 9);
    assert_eq!(digest["algorithm"], "Ed25519");
    let (status, keys) = client
        .get(&server.base_url, &auditor, "/v1/audit/keys")
        .await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let key = keys["keys"][0].clone();
    assert_eq!(key["key_id"], digest["key_id"]);
    assert_eq!(key["algorithm"], "Ed25519");
    let public_key = key["public_key"].as_str().expect("hex key").to_string();
    // The audit routes have no live form: asked for as server-sent events they answer the same.
    let as_events = reqwest::Client::new()
        .get(server.url("/v1/audit/keys"))
        .header("Accept", "text/event-stream")
        .bearer_auth(&auditor)
        .send()
        .await
        .expect("send");
    assert_eq!(as_events.status(), StatusCode::OK);
    assert_eq!(as_events.json::<Value>().await.expect("JSON"), keys);
    let (ok, printed, stderr) = planledger(&[
        "audit",
        "public-key",
        "--data-dir",
        &server.data_dir.display().to_string(),
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(printed.trim(), public_key);
    // The signing key is never served.
    let secret = std::fs::read_to_string(server.data_dir.join("digest-signing.key"))
        .expect("the key file exists");
    assert!(!keys.to_string().contains(secret.trim()));
    assert!(!digest.to_string().contains(secret.trim()));

    // More appends after the digest, then the service stops.
    let planner = server.token("acme", "ana", "planner");
    client
        .command(&server, &planner, "p1", define_goal("g3"))
        .await;
    client
        .command(&server, &planner, "p1", define_goal("g4"))
        .await;
    server.terminate().expect("the service stops");

    let kept = tempfile::tempdir().expect("temp dir");
    let file = kept.path().join("digest.json");
    std::fs::write(&file, digest.to_string()).expect("keep the digest");
    let data = server.data_dir.clone();
    let (ok, stdout, stderr) = verify_digest(&data, &file, &[]);
    assert!(
        ok,
        "a digest taken before more appends verifies after them: {stderr}"
    );
    assert!(
        stdout.contains("position 9") && stdout.contains("ends at 11"),
        "{stdout}"
    );
    let (ok, _, stderr) = verify_digest(&data, &file, &["--public-key", &public_key]);
    assert!(ok, "with the pinned public key too: {stderr}");

    // An altered digest: the signature no longer verifies.
    let mut altered = digest.clone();
    altered["position"] = json!(8);
    let altered_file = kept.path().join("altered.json");
    std::fs::write(&altered_file, altered.to_string()).expect("write");
    let (ok, _, stderr) = verify_digest(&data, &altered_file, &[]);
    assert!(!ok);
    assert!(stderr.contains("signature does not verify"), "{stderr}");

    // A digest of another log.
    let other = Planledger::start(&[]);
    two_author_plan(&other, &client, "p1").await;
    let other_auditor = other.token("acme", "audrey", "auditor");
    let (_, foreign) = client
        .get(&other.base_url, &other_auditor, "/v1/audit/digest")
        .await;
    let foreign_file = kept.path().join("foreign.json");
    std::fs::write(&foreign_file, foreign.to_string()).expect("write");
    let (ok, _, stderr) = verify_digest(&data, &foreign_file, &[]);
    assert!(!ok);
    assert!(stderr.contains("from another log"), "{stderr}");
    drop(other);

    // A tampered byte at position 2 (a goal's title): the first bad position is named.
    let original = {
        let store = open_log(&data);
        let bytes = store.read_raw(Position(2)).expect("read").expect("there");
        let text = String::from_utf8(bytes.clone()).expect("json");
        let tampered = text.replacen("\"title\":\"g1\"", "\"title\":\"G1\"", 1);
        assert_ne!(tampered, text, "the payload holds the title");
        store
            .overwrite_raw_for_tests(Position(2), tampered.as_bytes())
            .expect("tamper");
        bytes
    };
    let (ok, _, stderr) = verify_digest(&data, &file, &[]);
    assert!(!ok);
    assert!(stderr.contains("chain broken at position 2"), "{stderr}");
    let (ok, _, stderr) = planledger(&["verify", "--data-dir", &data.display().to_string()]);
    assert!(!ok && stderr.contains("position 2"), "{stderr}");

    // Repaired, then truncated before the digest's position.
    {
        let store = open_log(&data);
        store
            .overwrite_raw_for_tests(Position(2), &original)
            .expect("repair");
        store.truncate_for_tests(Position(7)).expect("truncate");
    }
    let (ok, _, stderr) = verify_digest(&data, &file, &[]);
    assert!(!ok);
    assert!(
        stderr.contains("truncated") && stderr.contains("ends at position 7"),
        "{stderr}"
    );
}

#[tokio::test]
async fn drift_names_the_log_positions_of_the_events_behind_its_figures() {
    let server = Planledger::start(&[]);
    let client = Client::new();
    let planner = server.token("acme", "ana", "planner,auditor");
    planledger_e2e::client::seed_plan(&server, &client, &planner, "launch", "ana").await;
    client
        .command(
            &server,
            &planner,
            "launch",
            json!({"type": "AdjustGoal", "data": {"goal_id": "signups", "target": 180.0,
                "due": today_plus(40), "reason": "slower market"}}),
        )
        .await;
    let last = client
        .command(
            &server,
            &planner,
            "launch",
            json!({"type": "AddStep", "data": {"step_id": "ads", "goal_id": "signups",
                "title": "Run ads", "due": today_plus(20)}}),
        )
        .await;
    let (status, drift) = client
        .get(
            &server.base_url,
            &planner,
            &format!("/v1/plans/launch/drift?baseline=v1&min_position={last}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{drift}");
    // The positions, as the audit trail shows them.
    let position_of = |events: &Value, index: usize| events["events"][index]["position"].clone();
    let (_, baseline) = client
        .get(
            &server.base_url,
            &planner,
            "/v1/plans/launch/events?type=BaselineSet",
        )
        .await;
    let (_, adjusted) = client
        .get(
            &server.base_url,
            &planner,
            "/v1/plans/launch/events?type=GoalAdjusted",
        )
        .await;
    let (_, defined) = client
        .get(
            &server.base_url,
            &planner,
            "/v1/plans/launch/events?type=GoalDefined",
        )
        .await;
    let (_, added) = client
        .get(
            &server.base_url,
            &planner,
            "/v1/plans/launch/events?type=StepAdded",
        )
        .await;
    assert_eq!(
        drift["baseline_event"]["position"],
        position_of(&baseline, 0),
        "{drift}"
    );
    let goal = &drift["goals"][0];
    assert_eq!(goal["goal_id"], "signups");
    assert_eq!(goal["deadline_slip_days"], 10);
    assert_eq!(goal["defined_event"]["position"], position_of(&defined, 0));
    assert_eq!(
        goal["due_adjusted_event"]["position"],
        position_of(&adjusted, 0)
    );
    assert_eq!(
        goal["target_adjusted_event"]["position"],
        position_of(&adjusted, 0)
    );
    assert_eq!(goal["dropped_event"], Value::Null);
    assert_eq!(drift["scope_added"]["steps"], json!(["ads"]));
    assert_eq!(
        drift["scope_added_events"],
        json!([{"goal_id": "signups", "step_id": "ads",
                "event": {"version": added["events"][0]["version"], "position": position_of(&added, 0)}}])
    );
}

/// A chain walk asked for as server-sent events is still bounded by the request timeout: only
/// the live log (`GET /v1/events`) runs for as long as its client listens.
#[tokio::test]
async fn an_audit_route_asked_for_as_events_keeps_the_request_timeout() {
    let dir = tempfile::tempdir().expect("a data dir");
    {
        let server = Planledger::start_in(dir.path(), &["--rate-limit-per-second", "0"]);
        let client = Client::new();
        let planner = server.token("acme", "ana", "planner");
        planledger_e2e::client::seed_plan(&server, &client, &planner, "p1", "ana").await;
        for n in 0..2_000 {
            client
                .command(&server, &planner, "p1", check_in("signups", f64::from(n)))
                .await;
        }
    }
    // The same log behind a 1 ms timeout: walking 2,000 events takes longer.
    let server = Planledger::start_in(dir.path(), &["--request-timeout-ms", "1"]);
    let auditor = server.token("acme", "audit", "auditor");
    let response = reqwest::Client::new()
        .get(server.url("/v1/audit/verify"))
        .header("Accept", "text/event-stream")
        .bearer_auth(&auditor)
        .send()
        .await
        .expect("send");
    let status = response.status();
    let body: Value = response.json().await.expect("problem+json");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "timeout", "{body}");
}
