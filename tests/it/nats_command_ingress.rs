//! Commands over NATS request/reply behave exactly like commands over HTTP: same events, same
//! results, same problems (status and code), same idempotency and auth.

use std::future::IntoFuture as _;

use crate::relay_support::{open_store, within};
use planledger_app::{App, Authenticator, Role};
use planledger_bus::{CommandIngress, IngressConfig};
use planledger_e2e::nats::NatsServer;
use planledger_proto::Message as _;
use planledger_proto::v1::{CommandReply, CommandRequest, command_reply};
use serde_json::{Value, json};

const SECRET: [u8; 32] = [42; 32];
const TENANT: &str = "acme";
const PLAN: &str = "q3.launch";

/// One command as a client would send it through either door.
struct Step {
    command_type: &'static str,
    data: Value,
    command_id: Option<&'static str>,
    expected_version: Option<u64>,
    token: Option<String>,
}

fn token(roles: Vec<Role>) -> String {
    Authenticator::from_secret(&SECRET)
        .expect("a 32-byte secret")
        .issue("alice", TENANT, roles, jiff::Timestamp::now(), 3600)
        .expect("a token can be issued")
}

fn script() -> Vec<Step> {
    let planner = Some(token(vec![Role::Planner]));
    let step = |command_type, data, command_id| Step {
        command_type,
        data,
        command_id,
        expected_version: None,
        token: planner.clone(),
    };
    vec![
        step(
            "CreatePlan",
            json!({"title": "Q3 launch", "starts_on": "2030-07-01", "ends_on": "2030-09-30", "checkin_cadence_days": 7}),
            Some("cmd-1"),
        ),
        step(
            "DefineGoal",
            json!({"goal_id": "g1", "title": "Ship v2", "due": "2030-09-15",
                   "kpi": {"unit": "%", "baseline": 0.0, "target": 100.0, "direction": "increase"}}),
            Some("cmd-2"),
        ),
        step(
            "AddStep",
            json!({"step_id": "s1", "goal_id": "g1", "title": "Write the spec", "due": "2030-07-20"}),
            Some("cmd-3"),
        ),
        step(
            "AssignRole",
            json!({"person": "bob", "role": "accountable", "goal_id": "g1"}),
            Some("cmd-4"),
        ),
        // A repeated command id returns the first result and writes nothing.
        step(
            "CreatePlan",
            json!({"title": "Q3 launch", "starts_on": "2030-07-01", "ends_on": "2030-09-30", "checkin_cadence_days": 7}),
            Some("cmd-1"),
        ),
        // A stale expected version is a conflict carrying the current version.
        Step {
            expected_version: Some(1),
            ..step(
                "AddStep",
                json!({"step_id": "s2", "goal_id": "g1", "title": "Late", "due": "2030-07-21"}),
                Some("cmd-5"),
            )
        },
        // A domain rule: the step's goal must exist.
        step(
            "AddStep",
            json!({"step_id": "s3", "goal_id": "nope", "title": "Orphan", "due": "2030-07-22"}),
            Some("cmd-6"),
        ),
        // Invalid input, named by field.
        step(
            "RecordCheckIn",
            json!({"goal_id": "g1", "confidence": 2.5}),
            Some("cmd-7"),
        ),
        step(
            "RecordCheckIn",
            json!({"goal_id": "g1", "confidence": "high"}),
            Some("cmd-8"),
        ),
        step("NoSuchCommand", json!({}), Some("cmd-9")),
        // Auth: no token, and a token whose role may not plan.
        Step {
            token: None,
            ..step("ArchivePlan", json!({}), Some("cmd-10"))
        },
        Step {
            token: Some(token(vec![Role::Viewer])),
            ..step("ArchivePlan", json!({}), Some("cmd-11"))
        },
        step(
            "RecordCheckIn",
            json!({"goal_id": "g1", "value": 20.0, "confidence": 0.6, "status": "at_risk", "blockers": ["hiring"]}),
            Some("cmd-12"),
        ),
    ]
}

/// The comparable part of an event: everything but the times and hashes (which depend on when
/// it was written) and `at` inside the payload (the decision time).
fn event_view(event: &Value) -> Value {
    let mut data = event["data"].clone();
    if let Some(object) = data.as_object_mut() {
        object.remove("at");
    }
    json!({
        "position": event["position"], "stream": event["stream"], "version": event["version"],
        "type": event["type"], "schema_version": event["schema_version"], "actor": event["actor"],
        "command_id": event["command_id"], "correlation_id": event["correlation_id"], "data": data,
    })
}

fn ok_view(
    plan_id: &Value,
    version: &Value,
    position: &Value,
    deduplicated: &Value,
    events: Vec<Value>,
) -> Value {
    json!({"ok": {"plan_id": plan_id, "version": version, "position": position,
                  "deduplicated": deduplicated, "events": events}})
}

/// Drops a trailing " at line L column C": it locates the error in the bytes of the HTTP body,
/// which NATS does not have (its command data travels as a separate `data_json` field).
fn without_location(text: &Value) -> Value {
    let Some(text) = text.as_str() else {
        return text.clone();
    };
    match text.rfind(" at line ") {
        Some(cut)
            if text[cut + 9..]
                .split(" column ")
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            json!(text[..cut])
        }
        _ => json!(text),
    }
}

fn problem_view(problem: &Value) -> Value {
    let errors: Vec<Value> = problem
        .get("errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .map(|e| json!({"field": e["field"], "message": without_location(&e["message"])}))
                .collect()
        })
        .unwrap_or_default();
    json!({"problem": {
        "status": problem["status"], "code": problem["code"], "type": problem["type"],
        "title": problem["title"], "detail": without_location(&problem["detail"]),
        "errors": errors,
        "current_version": problem.get("current_version").cloned().unwrap_or(Value::Null),
    }})
}

async fn over_http(client: &reqwest::Client, base: &str, step: &Step, correlation: &str) -> Value {
    let mut request = client
        .post(format!("{base}/v1/plans/{PLAN}/commands"))
        .header("X-Correlation-Id", correlation)
        .json(&json!({"type": step.command_type, "data": step.data}));
    if let Some(token) = &step.token {
        request = request.bearer_auth(token);
    }
    if let Some(id) = step.command_id {
        request = request.header("Idempotency-Key", id);
    }
    if let Some(version) = step.expected_version {
        request = request.header("If-Match", format!("\"{version}\""));
    }
    let response = request.send().await.expect("the HTTP API answers");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("the HTTP API answers JSON");
    if status == 200 {
        let events = body["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(event_view)
            .collect();
        ok_view(
            &body["plan_id"],
            &body["version"],
            &body["position"],
            &body["deduplicated"],
            events,
        )
    } else {
        assert_eq!(
            body["status"], status,
            "the problem repeats the HTTP status"
        );
        problem_view(&body)
    }
}

async fn over_nats(client: &async_nats::Client, step: &Step, correlation: &str) -> Value {
    let request = CommandRequest {
        plan_id: String::new(),
        r#type: step.command_type.to_string(),
        data_json: serde_json::to_vec(&step.data).expect("JSON"),
        command_id: step.command_id.unwrap_or_default().to_string(),
        expected_version: step.expected_version,
        correlation_id: correlation.to_string(),
        causation_id: String::new(),
    };
    let mut headers = async_nats::HeaderMap::new();
    if let Some(token) = &step.token {
        headers.insert("Authorization", format!("Bearer {token}").as_str());
    }
    let subject = planledger_proto::subjects::command_subject(TENANT, PLAN);
    let message = client
        .request_with_headers(subject, headers, request.encode_to_vec().into())
        .await
        .expect("the NATS ingress answers");
    let reply = CommandReply::decode(message.payload).expect("the reply is a CommandReply");
    match reply.outcome.expect("a reply has an outcome") {
        command_reply::Outcome::Ok(result) => {
            let events = result
                .events
                .into_iter()
                .map(|wire| {
                    let envelope =
                        planledger_bus::envelope_from_proto(wire).expect("valid envelope");
                    event_view(&serde_json::to_value(envelope).expect("envelopes serialize"))
                })
                .collect();
            ok_view(
                &json!(result.plan_id),
                &json!(result.version),
                &json!(result.position),
                &json!(result.deduplicated),
                events,
            )
        }
        command_reply::Outcome::Problem(problem) => problem_view(&json!({
            "status": problem.status, "code": problem.code, "type": problem.r#type,
            "title": problem.title, "detail": problem.detail,
            "errors": problem.errors.iter().map(|e| json!({"field": e.field, "message": e.message})).collect::<Vec<_>>(),
            "current_version": problem.current_version,
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_over_nats_has_the_same_events_and_answers_as_over_http() {
    let auth = Authenticator::from_secret(&SECRET).expect("a 32-byte secret");

    // Door 1: the HTTP API over its own log.
    let http_dir = tempfile::tempdir().expect("temp dir");
    let http_app = App::new(open_store(http_dir.path()), auth.clone());
    let http_store = http_app.store.clone();
    let router = planledger_api::router(planledger_api::ApiState::new(
        http_app,
        planledger_api::ApiConfig::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let base = format!("http://{}", listener.local_addr().expect("bound address"));
    let http_server = tokio::spawn(axum::serve(listener, router).into_future());

    // Door 2: NATS request/reply over another log.
    let nats = NatsServer::start();
    let nats_dir = tempfile::tempdir().expect("temp dir");
    let nats_app = App::new(open_store(nats_dir.path()), auth.clone());
    let ingress = CommandIngress::new(nats_app.commands.clone(), auth, IngressConfig::default());
    let server_client = async_nats::connect(nats.url())
        .await
        .expect("NATS connects");
    let ingress_task = tokio::spawn(ingress.run(server_client, std::future::pending()));
    let client = async_nats::connect(nats.url())
        .await
        .expect("NATS connects");
    client.flush().await.expect("flush");

    let http = reqwest::Client::new();
    let mut statuses = std::collections::BTreeSet::new();
    for (index, step) in script().iter().enumerate() {
        let correlation = format!("corr-{index}");
        let via_http = within(
            "the HTTP answer",
            over_http(&http, &base, step, &correlation),
        )
        .await;
        let via_nats = within("the NATS answer", over_nats(&client, step, &correlation)).await;
        assert_eq!(
            via_nats, via_http,
            "step {index} ({}) must answer the same through both doors",
            step.command_type
        );
        statuses.insert(match via_http.get("problem") {
            Some(problem) => problem["status"].as_u64().unwrap_or_default(),
            None => 200,
        });
    }
    assert_eq!(
        statuses.into_iter().collect::<Vec<_>>(),
        [200, 400, 401, 403, 409, 422],
        "the script covers acceptance and every kind of refusal"
    );

    // Both logs hold the same history.
    let log = |store: &planledger_store::EventStore| -> Vec<Value> {
        store
            .read_all(planledger_store::Position(1), usize::MAX)
            .expect("log reads")
            .iter()
            .map(|e| event_view(&serde_json::to_value(e).expect("serializes")))
            .collect()
    };
    assert_eq!(log(&nats_app.store), log(&http_store));

    ingress_task.abort();
    http_server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_commands_are_confined_to_the_tenant_of_the_token_and_the_plan_of_the_subject() {
    let auth = Authenticator::from_secret(&SECRET).expect("a 32-byte secret");
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let app = App::new(open_store(dir.path()), auth.clone());
    let ingress = CommandIngress::new(app.commands.clone(), auth, IngressConfig::default());
    let server_client = async_nats::connect(nats.url())
        .await
        .expect("NATS connects");
    let ingress_task = tokio::spawn(ingress.run(server_client, std::future::pending()));
    let client = async_nats::connect(nats.url())
        .await
        .expect("NATS connects");

    let send = |subject: String, plan_id: &str| {
        let client = client.clone();
        let request = CommandRequest {
            plan_id: plan_id.to_string(),
            r#type: "CreatePlan".into(),
            data_json: serde_json::to_vec(&json!({"title": "T", "starts_on": "2030-07-01",
                "ends_on": "2030-09-30", "checkin_cadence_days": 7}))
            .expect("JSON"),
            ..CommandRequest::default()
        };
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                "Authorization",
                format!("Bearer {}", token(vec![Role::Planner])).as_str(),
            );
            let message = client
                .request_with_headers(subject, headers, request.encode_to_vec().into())
                .await
                .expect("the ingress answers");
            CommandReply::decode(message.payload).expect("a CommandReply")
        }
    };
    let problem_of = |reply: CommandReply| match reply.outcome {
        Some(command_reply::Outcome::Problem(problem)) => (problem.status, problem.code),
        other => panic!("expected a problem, got {other:?}"),
    };

    // Another tenant's plan does not exist for this token.
    let other_tenant = planledger_proto::subjects::command_subject("globex", PLAN);
    let reply = within("a reply", send(other_tenant, "")).await;
    assert_eq!(problem_of(reply), (404, "not_found".to_string()));

    // The body may not name a plan other than the subject's.
    let subject = planledger_proto::subjects::command_subject(TENANT, PLAN);
    let reply = within("a reply", send(subject.clone(), "other-plan")).await;
    assert_eq!(problem_of(reply), (400, "invalid_input".to_string()));

    // Nothing was written by either; the right plan in the right tenant works.
    assert_eq!(app.store.last_position().get(), 0);
    let reply = within("a reply", send(subject, PLAN)).await;
    match reply.outcome {
        Some(command_reply::Outcome::Ok(result)) => {
            assert_eq!(result.plan_id, PLAN);
            assert_eq!(result.events[0].tenant, TENANT);
            assert_eq!(result.events[0].r#type, "PlanCreated");
        }
        other => panic!("expected the plan to be created, got {other:?}"),
    }
    ingress_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rate_limit_budget_per_caller_across_http_and_nats() {
    let auth = Authenticator::from_secret(&SECRET).expect("a 32-byte secret");
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let app = App::new(open_store(dir.path()), auth.clone());
    // Burst of 3, refilled at one request per 100 s: the fourth request within the test is refused.
    let state = planledger_api::ApiState::new(
        app.clone(),
        planledger_api::ApiConfig {
            rate_limit: planledger_api::RateLimit {
                per_second: 0.01,
                burst: 3.0,
            },
            ..planledger_api::ApiConfig::default()
        },
    );
    let limiter = state.limiter.clone();
    let ingress = CommandIngress::new(app.commands.clone(), auth, IngressConfig::default())
        .limited_by(limiter);
    let server_client = async_nats::connect(nats.url())
        .await
        .expect("NATS connects");
    let ingress_task = tokio::spawn(ingress.run(server_client, std::future::pending()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let base = format!("http://{}", listener.local_addr().expect("bound address"));
    let http_server =
        tokio::spawn(axum::serve(listener, planledger_api::router(state)).into_future());
    let client = async_nats::connect(nats.url())
        .await
        .expect("NATS connects");
    let http = reqwest::Client::new();
    let planner = Some(token(vec![Role::Planner]));
    let create = Step {
        command_type: "CreatePlan",
        data: json!({"title": "T", "starts_on": "2030-07-01", "ends_on": "2030-09-30", "checkin_cadence_days": 7}),
        command_id: None,
        expected_version: None,
        token: planner.clone(),
    };
    let goal = |n: u32| Step {
        command_type: "DefineGoal",
        data: json!({"goal_id": format!("g{n}"), "title": "G", "due": "2030-09-15"}),
        command_id: None,
        expected_version: None,
        token: planner.clone(),
    };

    // Two requests over NATS and one over HTTP use up the burst of three...
    assert!(over_nats(&client, &create, "c1").await.get("ok").is_some());
    assert!(
        over_http(&http, &base, &goal(1), "c2")
            .await
            .get("ok")
            .is_some()
    );
    assert!(over_nats(&client, &goal(2), "c3").await.get("ok").is_some());
    // ...so the fourth is refused by either door, with when to retry.
    let refused = over_nats(&client, &goal(3), "c4").await;
    assert_eq!(refused["problem"]["status"], json!(429), "{refused}");
    assert_eq!(
        refused["problem"]["code"],
        json!("rate_limited"),
        "{refused}"
    );
    let reply = {
        let request = CommandRequest {
            r#type: "DefineGoal".into(),
            data_json: serde_json::to_vec(&goal(4).data).expect("JSON"),
            ..CommandRequest::default()
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "Authorization",
            format!("Bearer {}", planner.clone().unwrap_or_default()).as_str(),
        );
        let message = client
            .request_with_headers(
                planledger_proto::subjects::command_subject(TENANT, PLAN),
                headers,
                request.encode_to_vec().into(),
            )
            .await
            .expect("the ingress answers");
        CommandReply::decode(message.payload).expect("a CommandReply")
    };
    match reply.outcome {
        Some(command_reply::Outcome::Problem(problem)) => {
            assert_eq!(problem.status, 429);
            assert!(
                problem.retry_after_seconds.is_some_and(|s| s >= 1),
                "{problem:?}"
            );
        }
        other => panic!("expected 429, got {other:?}"),
    }
    let over_http_refused = over_http(&http, &base, &goal(5), "c5").await;
    assert_eq!(
        over_http_refused["problem"]["status"],
        json!(429),
        "{over_http_refused}"
    );
    // Another caller has a budget of its own.
    let other = Step {
        token: Some(
            Authenticator::from_secret(&SECRET)
                .expect("a 32-byte secret")
                .issue(
                    "bob",
                    TENANT,
                    vec![Role::Planner],
                    jiff::Timestamp::now(),
                    3600,
                )
                .expect("a token"),
        ),
        ..goal(6)
    };
    assert!(over_nats(&client, &other, "c6").await.get("ok").is_some());
    assert_eq!(
        app.store.last_position().get(),
        4,
        "refused requests wrote nothing"
    );
    ingress_task.abort();
    http_server.abort();
}
