//! End-to-end over real HTTP: the binary is started as a process on a free port.

use planledger_e2e::server::Planledger;
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Client {
    http: reqwest::Client,
}

impl Client {
    fn new() -> Self {
        Self {
            http: reqwest::Client::new(),
        }
    }

    async fn command(
        &self,
        server: &Planledger,
        token: &str,
        plan: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(server.url(&format!("/v1/plans/{plan}/commands")))
            .bearer_auth(token)
            .json(&body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, server: &Planledger, token: &str, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(server.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("send");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn today_plus(days: i64) -> String {
    let day = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * days);
    day.strftime("%Y-%m-%d").to_string()
}

fn create_plan() -> Value {
    json!({"type": "CreatePlan", "data": {
        "title": "Q1 plan", "starts_on": today_plus(-7), "ends_on": today_plus(90),
        "checkin_cadence_days": 7}})
}

fn define_goal(id: &str) -> Value {
    json!({"type": "DefineGoal", "data": {
        "goal_id": id, "title": "Grow signups",
        "kpi": {"unit": "signups", "baseline": 10.0, "target": 110.0, "direction": "increase"},
        "due": today_plus(60)}})
}

async fn seeded(server: &Planledger, client: &Client, token: &str, plan: &str) {
    let (status, body) = client
        .command(server, token, plan, create_plan(), &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = client
        .command(server, token, plan, define_goal("g1"), &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn command_appends_events_and_state_reflects_them() {
    let server = Planledger::start(&[]);
    let client = Client::new();
    let token = server.token("acme", "ana", "planner,auditor");
    let (status, body) = client
        .command(&server, &token, "p1", create_plan(), &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["plan_id"], "p1");
    assert_eq!(body["version"], 1);
    assert_eq!(body["position"], 1);
    assert_eq!(body["events"][0]["type"], "PlanCreated");
    assert_eq!(
        body["events"][0]["actor"], "ana",
        "the actor comes from the token"
    );

    let (status, body) = client
        .command(&server, &token, "p1", define_goal("g1"), &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 2);

    let (status, state) = client.get(&server, &token, "/v1/plans/p1").await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(state["version"], 2);
    assert!(state["state"].to_string().contains("g1"), "{state}");

    let (status, old) = client.get(&server, &token, "/v1/plans/p1?version=1").await;
    assert_eq!(status, StatusCode::OK, "{old}");
    assert_eq!(old["version"], 1);
    assert!(
        !old["state"].to_string().contains("\"g1\""),
        "version 1 has no goal: {old}"
    );

    let (status, at_position) = client.get(&server, &token, "/v1/plans/p1?position=1").await;
    assert_eq!(status, StatusCode::OK, "{at_position}");
    assert_eq!(at_position["version"], 1);

    let (status, future) = client
        .get(&server, &token, "/v1/plans/p1?as_of=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(status, StatusCode::OK, "{future}");
    assert_eq!(future["version"], 2);
    let (status, past) = client
        .get(&server, &token, "/v1/plans/p1?as_of=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{past}");

    let (status, events) = client.get(&server, &token, "/v1/plans/p1/events").await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let list = events["events"].as_array().expect("events array");
    assert_eq!(list.len(), 2);
    assert_eq!(
        list[1]["prev_hash"], list[0]["hash"],
        "the audit trail shows the chain"
    );
}

#[tokio::test]
async fn logs_written_to_a_file_are_plain_text() {
    // The harness sends the service's standard error to a file, as a supervisor would.
    let server = Planledger::start(&[]);
    let log = server.log();
    assert!(log.contains("event log opened"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no terminal escape codes in a log that is not a terminal:\n{log}"
    );
}

#[tokio::test]
async fn error_classes_are_problem_json_with_the_right_status() {
    let server = Planledger::start(&[]);
    let client = Client::new();
    let planner = server.token("acme", "ana", "planner");
    seeded(&server, &client, &planner, "p1").await;

    // 400: unknown field, with the field named.
    let (status, body) = client
        .command(&server, &planner, "p1", json!({"type": "DefineGoal", "data": {"goal_id": "g2", "title": "t", "due": today_plus(5), "colour": "red"}}), &[])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("colour"),
        "{body}"
    );
    // 400: malformed id in the path.
    let (status, body) = client
        .command(&server, &planner, "bad%20id", create_plan(), &[])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // 401: no token, and a forged one.
    let response = reqwest::Client::new()
        .get(server.url("/v1/plans/p1"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let (status, _) = client.get(&server, "not.a.token", "/v1/plans/p1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // 403: a viewer may read but not command; a planner may not read the audit trail.
    let viewer = server.token("acme", "vic", "viewer");
    let (status, _) = client.get(&server, &viewer, "/v1/plans/p1").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = client
        .command(&server, &viewer, "p1", define_goal("g3"), &[])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = client.get(&server, &planner, "/v1/plans/p1/events").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // 404: unknown plan; a command on a plan that does not exist.
    let (status, _) = client.get(&server, &planner, "/v1/plans/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = client
        .command(&server, &planner, "nope", define_goal("g1"), &[])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // 409: stale If-Match, with the current version in the problem.
    let (status, body) = client
        .command(
            &server,
            &planner,
            "p1",
            define_goal("g4"),
            &[("If-Match", "\"1\"")],
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["current_version"], 2);

    // 413: a body over the limit.
    let huge = json!({"type": "DefineGoal", "data": {"goal_id": "g5", "title": "x".repeat(70_000), "due": today_plus(5)}});
    let (status, body) = client.command(&server, &planner, "p1", huge, &[]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    // 422: a domain rule (a second accountable for one goal).
    for (person, expected) in [
        ("ana", StatusCode::OK),
        ("ben", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let (status, body) = client
            .command(&server, &planner, "p1", json!({"type": "AssignRole", "data": {"person": person, "role": "accountable", "goal_id": "g1"}}), &[])
            .await;
        assert_eq!(status, expected, "{body}");
    }
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let server = Planledger::start(&["--rate-limit-per-second", "0.5", "--rate-limit-burst", "3"]);
    let token = server.token("acme", "ana", "viewer");
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..5 {
        let response = http
            .get(server.url("/v1/plans/p1"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("send");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = response.headers().get("retry-after").cloned();
        }
        statuses.push(response.status());
    }
    assert_eq!(
        &statuses[..3],
        &[StatusCode::NOT_FOUND; 3],
        "a burst of three passes"
    );
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after.is_some(), "429 carries Retry-After");
}

#[tokio::test]
async fn tenants_never_see_each_others_plans() {
    let server = Planledger::start(&[]);
    let client = Client::new();
    let acme = server.token("acme", "ana", "planner,auditor");
    let globex = server.token("globex", "gus", "admin");
    seeded(&server, &client, &acme, "shared-name").await;
    let (status, _) = client.get(&server, &globex, "/v1/plans/shared-name").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "404, not 403");
    let (status, _) = client
        .get(&server, &globex, "/v1/plans/shared-name/events")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, page) = client.get(&server, &globex, "/v1/events").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["events"].as_array().map(Vec::len), Some(0), "{page}");
    let (status, page) = client
        .get(&server, &acme, "/v1/events?from_position=1&limit=10")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["events"].as_array().map(Vec::len), Some(2), "{page}");
    // The same plan id in another tenant is a different plan.
    let (status, body) = client
        .command(&server, &globex, "shared-name", create_plan(), &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 1);
}

#[tokio::test]
async fn idempotency_key_makes_retries_safe() {
    let server = Planledger::start(&[]);
    let client = Client::new();
    let token = server.token("acme", "ana", "planner");
    seeded(&server, &client, &token, "p1").await;
    let checkin = json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "value": 20.0, "confidence": 0.8}});
    let (s1, first) = client
        .command(
            &server,
            &token,
            "p1",
            checkin.clone(),
            &[("Idempotency-Key", "k-1")],
        )
        .await;
    let (s2, again) = client
        .command(
            &server,
            &token,
            "p1",
            checkin,
            &[("Idempotency-Key", "k-1")],
        )
        .await;
    assert_eq!(
        (s1, s2),
        (StatusCode::OK, StatusCode::OK),
        "{first} {again}"
    );
    assert_eq!(first["events"], again["events"]);
    assert_eq!(again["deduplicated"], true);
    let other = json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "value": 30.0, "confidence": 0.8}});
    let (status, body) = client
        .command(&server, &token, "p1", other, &[("Idempotency-Key", "k-1")])
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (_, state) = client.get(&server, &token, "/v1/plans/p1").await;
    assert_eq!(state["version"], 3, "one check-in, not two");
}

#[tokio::test]
async fn concurrent_adjustments_with_the_same_if_match_have_one_winner() {
    let server = Planledger::start(&[]);
    let client = Client::new();
    let token = server.token("acme", "ana", "planner");
    seeded(&server, &client, &token, "p1").await;
    for round in 0..5 {
        let (_, state) = client.get(&server, &token, "/v1/plans/p1").await;
        let version = state["version"].as_u64().expect("version").to_string();
        let if_match = format!("\"{version}\"");
        let a = json!({"type": "AdjustGoal", "data": {"goal_id": "g1", "target": 200.0 + round as f64, "reason": "a"}});
        let b = json!({"type": "AdjustGoal", "data": {"goal_id": "g1", "target": 300.0 + round as f64, "reason": "b"}});
        let headers = [("If-Match", if_match.as_str())];
        let (ra, rb) = tokio::join!(
            client.command(&server, &token, "p1", a, &headers),
            client.command(&server, &token, "p1", b, &headers),
        );
        let mut statuses = [ra.0, rb.0];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::CONFLICT],
            "round {round}: {ra:?} {rb:?}"
        );
    }
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let server = Planledger::start(&[]);
    let http = reqwest::Client::new();
    let health = http
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);
    let ready: Value = http
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["ready"], true, "{ready}");
    let client = Client::new();
    let token = server.token("acme", "ana", "planner");
    seeded(&server, &client, &token, "p1").await;
    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("planledger_http_requests_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("planledger_events_appended_total"),
        "{metrics}"
    );
    let openapi: Value = http
        .get(server.url("/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    assert!(
        openapi["paths"]["/v1/plans/{plan_id}/commands"].is_object(),
        "{openapi}"
    );
    let missing = http.get(server.url("/nope")).send().await.expect("404");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn live_tail_streams_new_events_as_server_sent_events() {
    use futures::StreamExt;
    let server = Planledger::start(&[]);
    let client = Client::new();
    let token = server.token("acme", "ana", "planner,auditor");
    let response = reqwest::Client::new()
        .get(server.url("/v1/events?from_position=1"))
        .bearer_auth(&token)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .expect("sse");
    assert_eq!(response.status(), StatusCode::OK);
    seeded(&server, &client, &token, "p1").await;
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    while !(seen.contains("event: PlanCreated") && seen.contains("event: GoalDefined")) {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(30), stream.next())
            .await
            .expect("events arrive")
            .expect("stream open")
            .expect("chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("id: 1"), "{seen}");
    assert!(seen.contains("id: 2"), "{seen}");
}

#[tokio::test]
async fn graceful_shutdown_keeps_every_answered_command() {
    let mut server = Planledger::start(&[]);
    let client = Client::new();
    let token = server.token("acme", "ana", "planner");
    seeded(&server, &client, &token, "p1").await;
    let status = server.terminate().expect("exit status");
    assert!(
        status.success(),
        "SIGTERM exits cleanly: {status}\n{}",
        server.log()
    );
    server.restart();
    // A fresh client: pooled connections to the stopped process are gone.
    let client = Client::new();
    let (status, state) = client.get(&server, &token, "/v1/plans/p1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state["version"], 2);
}

/// The path of every `.route("...")` in the API crate's sources (the routers of `serve` and of
/// `planledger projector`), found by reading the sources: a route added without a line in
/// the generated document (a handler without `#[utoipa::path]`, or not listed in
/// `crates/api/src/openapi.rs`) fails the test below.
fn served_paths() -> std::collections::BTreeSet<String> {
    let dir = planledger_e2e::workspace_root().join("crates/api/src");
    let mut paths = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("crates/api/src") {
        let path = entry.expect("an entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("a source file");
        for (at, _) in source.match_indices(".route(") {
            let rest = source[at + ".route(".len()..].trim_start();
            let literal = rest
                .strip_prefix('"')
                .and_then(|r| r.split_once('"'))
                .map(|(p, _)| p.to_string())
                .unwrap_or_else(|| {
                    panic!("a .route( in {} without a path literal", path.display())
                });
            paths.insert(literal);
        }
    }
    paths
}

#[tokio::test]
async fn every_documented_route_is_served_and_every_served_route_is_documented() {
    let server = Planledger::start(&[]);
    let http = reqwest::Client::new();
    let openapi: Value = http
        .get(server.url("/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("JSON");
    let documented = openapi["paths"].as_object().expect("paths");
    // Every documented operation reaches a handler: no `no_route` 404, no 405.
    for (path, operations) in documented {
        let concrete = path
            .replace("{plan_id}", "p1")
            .replace("{person}", "ana")
            .replace("{name}", "progress")
            .replace("{file}", "app.js");
        assert!(
            !concrete.contains('{'),
            "a parameter this test does not fill: {path}"
        );
        for method in operations.as_object().expect("operations").keys() {
            let request = match method.as_str() {
                "get" => http.get(server.url(&concrete)),
                "post" => http.post(server.url(&concrete)).json(&json!({})),
                other => panic!("{path}: a method this test does not send: {other}"),
            };
            let response = request.send().await.expect("an answer");
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {body}"
            );
            assert!(
                !(status == StatusCode::NOT_FOUND && body.contains("no_route")),
                "{method} {path} is documented but not served: {body}"
            );
        }
    }
    // Every served path is documented.
    let documented: std::collections::BTreeSet<String> = documented.keys().cloned().collect();
    let served = served_paths();
    assert!(
        served.len() > 10,
        "the route scan found the routes: {served:?}"
    );
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but missing from the OpenAPI document (give the handler a #[utoipa::path] and list it in crates/api/src/openapi.rs): {undocumented:?}"
    );
}
