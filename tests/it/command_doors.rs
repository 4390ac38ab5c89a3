//! One table of commands, bad inputs and faults, sent through both command doors: the HTTP API
//! (`POST /v1/plans/{plan_id}/commands`, a real router on a real socket) and NATS request/reply
//! (a real nats-server). Each door has a log of its own, so both see the same history; every
//! row must get the same answer from both (status, code, title, detail, field errors, retry
//! hint, current version) and the answer the row expects.
//!
//! Self-contained: it needs nothing from the other test files.

use std::future::{Future, IntoFuture as _};
use std::time::Duration;

use planledger_app::{App, Authenticator, Refusal, Role};
use planledger_bus::{CommandIngress, IngressConfig};
use planledger_e2e::nats::NatsServer;
use planledger_proto::Message as _;
use planledger_proto::subjects::{command_subject, encode_token};
use planledger_proto::v1::{CommandReply, CommandRequest, command_reply};
use planledger_store::{EventStore, Position, StoreOptions, SyncFault};
use serde_json::{Value, json};

const SECRET: [u8; 32] = [7; 32];
const PLAN: &str = "q3.launch";
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const CAUSE: &str = "0190f2a4-0000-7000-8000-00000000c0de";

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(30), future).await {
        Ok(value) => value,
        Err(_) => panic!("gave up waiting for {what}"),
    }
}

fn token(tenant: &str, roles: Vec<Role>) -> String {
    Authenticator::from_secret(&SECRET)
        .expect("a 32-byte secret")
        .issue("alice", tenant, roles, jiff::Timestamp::now(), 3600)
        .expect("a token can be issued")
}

/// Who sends a row.
#[derive(Clone, Copy)]
enum Caller {
    Planner,
    Viewer,
    Nobody,
}

/// One request, as a client would send it through either door.
struct Row {
    what: &'static str,
    /// The JSON body. Over NATS a body of only `type` and `data` travels as the protobuf
    /// request (the metadata in its fields where it has one), any other as JSON.
    body: Value,
    headers: Vec<(&'static str, String)>,
    caller: Caller,
    /// The status and code both doors must answer (200 and "ok" for an accepted command).
    expect: (u16, &'static str),
}

fn row(what: &'static str, body: Value, expect: (u16, &'static str)) -> Row {
    Row {
        what,
        body,
        headers: Vec::new(),
        caller: Caller::Planner,
        expect,
    }
}

impl Row {
    /// Whether the row sends an `Idempotency-Key` (else the service generates the command id).
    fn sends_key(&self) -> bool {
        self.headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("idempotency-key"))
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn by(mut self, caller: Caller) -> Self {
        self.caller = caller;
        self
    }
}

fn create_plan() -> Value {
    json!({"type": "CreatePlan", "data": {"title": "Q3 launch", "starts_on": "2030-07-01",
        "ends_on": "2030-09-30", "checkin_cadence_days": 7}})
}

fn define_goal(goal: &str) -> Value {
    json!({"type": "DefineGoal", "data": {"goal_id": goal, "title": "Ship v2", "due": "2030-09-15"}})
}

fn add_step(step: &str, goal: &str) -> Value {
    json!({"type": "AddStep", "data": {"step_id": step, "goal_id": goal, "title": "Spec",
        "due": "2030-07-20"}})
}

/// The bad inputs and refusals of a healthy service, in order (later rows rely on the plan the
/// first rows build).
fn table() -> Vec<Row> {
    vec![
        row(
            "create the plan, caused by an event",
            create_plan(),
            (200, "ok"),
        )
        .header("Idempotency-Key", "k-1")
        .header("Planledger-Causation-Id", CAUSE)
        .header("traceparent", TRACE)
        .header("X-Correlation-Id", "corr-1"),
        row(
            "define a goal at the expected version",
            define_goal("g1"),
            (200, "ok"),
        )
        .header("Idempotency-Key", "k-2")
        .header("If-Match", "\"1\""),
        row(
            "unknown top-level field",
            json!({"type": "AddStep", "data": {"step_id": "s1", "goal_id": "g1", "title": "Spec",
                "due": "2030-07-20"}, "priority": 1}),
            (400, "invalid_body"),
        ),
        row(
            "bad data field",
            json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "confidence": "high"}}),
            (400, "invalid_body"),
        ),
        row(
            "unknown data field",
            json!({"type": "ArchivePlan", "data": {"because": "done"}}),
            (400, "invalid_body"),
        ),
        row(
            "unknown command type",
            json!({"type": "Nope", "data": {}}),
            (400, "invalid_body"),
        ),
        row(
            "bad Idempotency-Key",
            add_step("s1", "g1"),
            (400, "invalid_input"),
        )
        .header("Idempotency-Key", "two words"),
        row(
            "bad If-Match",
            add_step("s1", "g1"),
            (400, "invalid_header"),
        )
        .header("If-Match", "\"latest\""),
        row(
            "bad traceparent",
            add_step("s1", "g1"),
            (400, "invalid_header"),
        )
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ),
        row(
            "bad causation id",
            add_step("s1", "g1"),
            (400, "invalid_header"),
        )
        .header("Planledger-Causation-Id", "caused by me"),
        row(
            "version conflict",
            add_step("s1", "g1"),
            (409, "version_conflict"),
        )
        .header("If-Match", "\"1\""),
        row(
            "key reused",
            define_goal("g2"),
            (422, "idempotency_key_reused"),
        )
        .header("Idempotency-Key", "k-1"),
        row("domain rule", add_step("s2", "nope"), (422, "unknown_goal")),
        row(
            "forbidden role",
            json!({"type": "ArchivePlan", "data": {}}),
            (403, "forbidden"),
        )
        .by(Caller::Viewer),
        row(
            "missing token",
            json!({"type": "ArchivePlan", "data": {}}),
            (401, "missing_token"),
        )
        .by(Caller::Nobody),
        row(
            "a repeated key answers the first result",
            define_goal("g1"),
            (200, "ok"),
        )
        .header("Idempotency-Key", "k-2"),
    ]
}

/// One door of each kind over a log of its own, for one tenant.
struct Doors {
    tenant: &'static str,
    base: String,
    http: reqwest::Client,
    nats: async_nats::Client,
    http_store: EventStore,
    nats_store: EventStore,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Doors {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Doors {
    /// Starts both doors; `options` opens each log (the same faults for both).
    async fn start(
        nats_server: &NatsServer,
        dir: &std::path::Path,
        tenant: &'static str,
        options: StoreOptions,
    ) -> Self {
        let auth = Authenticator::from_secret(&SECRET).expect("a 32-byte secret");
        let open = |name: &str| {
            EventStore::open(dir.join(name), options.clone()).expect("the event log opens")
        };
        let http_app = App::new(open("http"), auth.clone());
        let nats_app = App::new(open("nats"), auth.clone());
        let (http_store, nats_store) = (http_app.store.clone(), nats_app.store.clone());

        let router = planledger_api::router(planledger_api::ApiState::new(
            http_app,
            planledger_api::ApiConfig::default(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let base = format!("http://{}", listener.local_addr().expect("bound address"));
        let http_task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).into_future().await;
        });

        let ingress = CommandIngress::new(
            nats_app.commands.clone(),
            auth,
            IngressConfig {
                subject: format!("planledger.cmd.{}.>", encode_token(tenant)),
                queue_group: None,
                ..IngressConfig::default()
            },
        );
        let server_client = async_nats::connect(nats_server.url())
            .await
            .expect("NATS connects");
        server_client.flush().await.expect("flush");
        let nats_task = tokio::spawn(async move {
            let _ = ingress.run(server_client, std::future::pending()).await;
        });
        let nats = async_nats::connect(nats_server.url())
            .await
            .expect("NATS connects");
        let doors = Self {
            tenant,
            base,
            http: reqwest::Client::new(),
            nats,
            http_store,
            nats_store,
            tasks: vec![http_task, nats_task],
        };
        doors.wait_for_ingress().await;
        doors
    }

    /// Waits until the ingress answers (its subscription is in place).
    async fn wait_for_ingress(&self) {
        within("the NATS ingress to subscribe", async {
            loop {
                let reply = tokio::time::timeout(
                    Duration::from_millis(500),
                    self.nats
                        .request(command_subject(self.tenant, PLAN), Vec::new().into()),
                )
                .await;
                if matches!(reply, Ok(Ok(_))) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }

    fn token(&self, caller: Caller) -> Option<String> {
        match caller {
            Caller::Planner => Some(token(self.tenant, vec![Role::Planner])),
            Caller::Viewer => Some(token(self.tenant, vec![Role::Viewer])),
            Caller::Nobody => None,
        }
    }

    async fn over_http(&self, row: &Row) -> Answer {
        let mut request = self
            .http
            .post(format!("{}/v1/plans/{PLAN}/commands", self.base))
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(&row.body).expect("JSON"));
        if let Some(token) = self.token(row.caller) {
            request = request.bearer_auth(token);
        }
        for (name, value) in &row.headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("the HTTP API answers");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().expect("ASCII").parse::<u64>().expect("seconds"));
        let body: Value = response.json().await.expect("the HTTP API answers JSON");
        if status == 200 {
            return Answer::Ok(ok_view(&body, row.sends_key()));
        }
        let mut refusal: Refusal =
            serde_json::from_value(body.clone()).expect("a problem is a refusal");
        assert_eq!(refusal.status, status, "the problem repeats the status");
        assert_eq!(body["type"], json!(refusal.kind()), "{body}");
        assert_eq!(refusal.retry_after, None, "the retry hint is a header");
        refusal.retry_after = retry_after;
        Answer::Refused(refusal)
    }

    async fn over_nats(&self, row: &Row) -> Answer {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(token) = self.token(row.caller) {
            headers.insert("Authorization", format!("Bearer {token}").as_str());
        }
        let object = row.body.as_object().expect("an object");
        let protobuf = object.keys().all(|k| k == "type" || k == "data");
        let payload = if protobuf {
            // The metadata the protobuf request has fields for goes there; the rest as headers.
            let mut request = CommandRequest {
                r#type: row.body["type"].as_str().expect("a type").to_string(),
                data_json: serde_json::to_vec(&row.body["data"]).expect("JSON"),
                ..CommandRequest::default()
            };
            for (name, value) in &row.headers {
                match *name {
                    "Idempotency-Key" => request.command_id = value.clone(),
                    "Planledger-Causation-Id" => request.causation_id = value.clone(),
                    "X-Correlation-Id" => request.correlation_id = value.clone(),
                    _ => headers.insert(*name, value.as_str()),
                }
            }
            request.encode_to_vec()
        } else {
            headers.insert("Content-Type", "application/json");
            for (name, value) in &row.headers {
                headers.insert(*name, value.as_str());
            }
            serde_json::to_vec(&row.body).expect("JSON")
        };
        let message = self
            .nats
            .request_with_headers(command_subject(self.tenant, PLAN), headers, payload.into())
            .await
            .expect("the NATS ingress answers");
        let reply = CommandReply::decode(message.payload).expect("the reply is a CommandReply");
        match reply.outcome.expect("a reply has an outcome") {
            command_reply::Outcome::Ok(result) => {
                let envelopes: Vec<Value> = result
                    .events
                    .into_iter()
                    .map(|wire| {
                        let envelope =
                            planledger_bus::envelope_from_proto(wire).expect("valid envelope");
                        serde_json::to_value(envelope).expect("envelopes serialize")
                    })
                    .collect();
                Answer::Ok(ok_view(
                    &json!({
                        "plan_id": result.plan_id, "version": result.version,
                        "position": result.position, "deduplicated": result.deduplicated,
                        "events": envelopes,
                    }),
                    row.sends_key(),
                ))
            }
            command_reply::Outcome::Problem(problem) => {
                assert_eq!(problem.r#type, format!("/problems/{}", problem.code));
                Answer::Refused(planledger_bus::refusal_from_proto(problem))
            }
        }
    }

    /// Sends a row through both doors; both must answer alike, and as the row expects.
    async fn check(&self, row: &Row) -> Answer {
        let via_http = comparable(within("the HTTP answer", self.over_http(row)).await);
        let via_nats = comparable(within("the NATS answer", self.over_nats(row)).await);
        assert_eq!(
            via_nats, via_http,
            "{}: both doors must answer alike",
            row.what
        );
        let got = match &via_http {
            Answer::Ok(_) => (200, "ok".to_string()),
            Answer::Refused(refusal) => (refusal.status, refusal.code.clone()),
        };
        assert_eq!(
            (got.0, got.1.as_str()),
            row.expect,
            "{}: {via_http:?}",
            row.what
        );
        via_http
    }
}

#[derive(Debug, PartialEq)]
enum Answer {
    Ok(Value),
    Refused(Refusal),
}

/// The comparable part of an accepted command: all but times, hashes and ids that depend on
/// when it was written.
/// An answer with the free bytes a `storage_full` refusal names taken out: the two doors' logs
/// are on one file system whose free space other processes change between the two calls.
fn comparable(answer: Answer) -> Answer {
    match answer {
        Answer::Refused(mut refusal) if refusal.code == "storage_full" => {
            if let Some((before, rest)) = refusal.detail.split_once("only ")
                && let Some((_, after)) = rest.split_once(" bytes are free")
            {
                refusal.detail = format!("{before}only <n> bytes are free{after}");
            }
            Answer::Refused(refusal)
        }
        other => other,
    }
}

/// An accepted answer with what may differ between two logs taken out: the `at` of the data
/// and, when the caller sent no `Idempotency-Key`, the command id the service generated.
fn ok_view(body: &Value, sends_key: bool) -> Value {
    let events: Vec<Value> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| {
            let mut data = event["data"].clone();
            if let Some(object) = data.as_object_mut() {
                object.remove("at");
            }
            json!({
                "position": event["position"], "stream": event["stream"],
                "version": event["version"], "type": event["type"], "actor": event["actor"],
                "command_id": if sends_key { event["command_id"].clone() } else { json!("<generated>") },
                "correlation_id": event["correlation_id"],
                "causation_id": event["causation_id"], "traceparent": event["traceparent"],
                "data": data,
            })
        })
        .collect();
    json!({"plan_id": body["plan_id"], "version": body["version"], "position": body["position"],
        "deduplicated": body["deduplicated"], "events": events})
}

fn refusal(answer: &Answer) -> &Refusal {
    match answer {
        Answer::Refused(refusal) => refusal,
        Answer::Ok(ok) => panic!("expected a refusal, got {ok}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_doors_answer_the_table_of_bad_inputs_alike() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let doors = Doors::start(&nats, dir.path(), "acme", StoreOptions::default()).await;
    let mut answers = Vec::new();
    for row in table() {
        answers.push(doors.check(&row).await);
    }
    // The rows' field errors name what to fix.
    let field = |index: usize| refusal(&answers[index]).errors[0].field.clone();
    assert_eq!(field(2), "priority");
    assert_eq!(field(3), "data.confidence");
    assert_eq!(field(6), "Idempotency-Key");
    assert_eq!(field(7), "If-Match");
    assert_eq!(field(8), "traceparent");
    assert_eq!(field(9), "Planledger-Causation-Id");
    assert_eq!(refusal(&answers[10]).current_version, Some(2));
    assert!(
        matches!(&answers[15], Answer::Ok(ok) if ok["deduplicated"] == json!(true)),
        "{:?}",
        answers[15]
    );
    // Nothing refused was written: each log holds the plan and its goal.
    for store in [&doors.http_store, &doors.nats_store] {
        assert_eq!(store.last_position().get(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_causation_id_sent_with_a_command_is_stored_on_its_events() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let doors = Doors::start(&nats, dir.path(), "acme", StoreOptions::default()).await;
    let create = table().remove(0);
    doors.check(&create).await;
    // The plan's events, as the HTTP API lists them...
    let events: Value = doors
        .http
        .get(format!("{}/v1/plans/{PLAN}/events", doors.base))
        .bearer_auth(token("acme", vec![Role::Admin]))
        .send()
        .await
        .expect("the HTTP API answers")
        .json()
        .await
        .expect("JSON");
    let listed = events["events"].as_array().expect("an events page");
    assert!(!listed.is_empty(), "{events}");
    for event in listed {
        assert_eq!(event["causation_id"], json!(CAUSE), "{event}");
    }
    // ...and as each door's log stored them.
    for store in [&doors.http_store, &doors.nats_store] {
        let stored = store.read_all(Position(1), 100).expect("the log reads");
        assert!(!stored.is_empty());
        for envelope in stored {
            assert_eq!(envelope.causation_id.as_deref(), Some(CAUSE));
            assert_eq!(envelope.traceparent.as_deref(), Some(TRACE));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_refused_alike_with_its_message_and_retry_hint() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    // A reserve no file system has: every append is refused before anything is written.
    let options = StoreOptions {
        min_free_bytes: u64::MAX,
        ..StoreOptions::default()
    };
    let doors = Doors::start(&nats, dir.path(), "acme", options).await;
    let answer = doors
        .check(&row(
            "create on a full disk",
            create_plan(),
            (503, "storage_full"),
        ))
        .await;
    let refused = refusal(&answer);
    assert_eq!(
        refused.retry_after,
        Some(planledger_app::door::STORAGE_FULL_RETRY_AFTER_SECONDS)
    );
    assert!(
        refused.detail.contains("log_min_free_bytes")
            && refused.detail.contains("nothing was appended"),
        "{}",
        refused.detail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_is_refused_alike_with_what_to_do() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let fault = SyncFault::default();
    let options = StoreOptions {
        sync_fault: Some(fault.clone()),
        ..StoreOptions::default()
    };
    let doors = Doors::start(&nats, dir.path(), "acme", options).await;
    doors
        .check(&row("create the plan", create_plan(), (200, "ok")))
        .await;
    fault.trigger();
    let unknown = doors
        .check(&row(
            "a command whose fsync fails",
            define_goal("g1"),
            (503, "log_outcome_unknown"),
        ))
        .await;
    assert!(
        refusal(&unknown)
            .detail
            .contains("retry with the same command id"),
        "the detail says what to do: {:?}",
        refusal(&unknown).detail
    );
    let stopped = doors
        .check(&row(
            "a command after the failure",
            define_goal("g2"),
            (503, "log_unavailable"),
        ))
        .await;
    assert!(
        refusal(&stopped).detail.contains("nothing was appended"),
        "{:?}",
        refusal(&stopped).detail
    );
}
