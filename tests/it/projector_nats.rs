//! Service mode: `planledger projector --nats` processes, consuming the relay's JetStream stream
//! through durable consumers, build the same read models as the projectors embedded in
//! `planledger serve`, also when one of them is SIGKILLed mid-stream and restarted; and
//! JetStream redelivering messages a projector already applied changes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use planledger_bus::{JetStreamSource, JetStreamSourceConfig};
use planledger_e2e::client::{Client, seed_plan, today_plus};
use planledger_e2e::nats::NatsServer;
use planledger_e2e::server::{Planledger, share_jwt_key};
use planledger_projections::{
    AccountabilityProjector, Delivery, EventSource, LocalLogSource, ProjectionHandle, ReadModelDb,
    RuntimeOptions, SourceError, SourceHead, rebuild_to, spawn,
};
use planledger_store::{EventStore, Position, StoreOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const MODELS: [&str; 3] = ["progress", "accountability", "agility"];

/// A week of execution on `plan`: steps, roles, check-ins with blockers, an adjustment in
/// response to a check-in, a completed step; returns the last position.
async fn a_week(server: &Planledger, client: &Client, token: &str, plan: &str, week: u32) -> u64 {
    let step = format!("step-{week}");
    let value = 150.0 + 10.0 * f64::from(week);
    let commands = [
        json!({"type": "AddStep", "data": {
            "step_id": step, "goal_id": "signups", "title": format!("Step {week}"),
            "due": today_plus(i64::from(week)), "estimate_days": 2}}),
        json!({"type": "AssignRole", "data": {
            "person": format!("dev{}", week % 3), "role": "responsible", "step_id": step}}),
        json!({"type": "RecordCheckIn", "data": {
            "goal_id": "signups", "value": value, "confidence": 0.5 + 0.05 * f64::from(week % 5),
            "status": if week.is_multiple_of(2) { "at_risk" } else { "on_track" },
            "blockers": if week.is_multiple_of(2) { vec!["waiting on legal"] } else { vec![] }}}),
    ];
    let mut position = 0;
    for body in commands {
        position = client.command(server, token, plan, body).await;
    }
    if week.is_multiple_of(2) {
        position = client
            .command(
                server,
                token,
                plan,
                json!({"type": "AdjustGoal", "data": {
                    "goal_id": "signups", "target": 200.0 + 5.0 * f64::from(week),
                    "reason": format!("week {week}: demand is higher than planned")}}),
            )
            .await;
    }
    if week.is_multiple_of(3) {
        position = client
            .command(
                server,
                token,
                plan,
                json!({"type": "CompleteStep", "data": {"step_id": step}}),
            )
            .await;
    }
    position
}

/// Asserts two read-model answers are equal, except for what depends on the instant each
/// process evaluated "now" at: the echoed `as_of`, and `staleness_days`, which grows
/// continuously (allowed to differ by the few seconds between the two calls).
fn assert_same_answer(embedded: &Value, separate: &Value, path: &str) {
    match (embedded, separate) {
        (Value::Object(a), Value::Object(b)) => {
            let keys = |m: &serde_json::Map<String, Value>| {
                m.keys()
                    .filter(|k| *k != "as_of")
                    .cloned()
                    .collect::<Vec<_>>()
            };
            assert_eq!(keys(a), keys(b), "{path}: different fields");
            for key in keys(a) {
                let (x, y) = (&a[&key], &b[&key]);
                let here = format!("{path}.{key}");
                if key == "staleness_days"
                    && let (Some(x), Some(y)) = (x.as_f64(), y.as_f64())
                {
                    assert!((x - y).abs() < 0.001, "{here}: {x} vs {y}");
                } else {
                    assert_same_answer(x, y, &here);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: different lengths");
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                assert_same_answer(x, y, &format!("{path}[{index}]"));
            }
        }
        (x, y) => assert_eq!(x, y, "{path} differs between the modes"),
    }
}

/// Asks every route of both modes and asserts the answers agree.
async fn assert_modes_agree(
    client: &Client,
    server: &Planledger,
    projectors: &[Planledger],
    admin: &str,
    routes: &[(usize, String)],
) {
    for (model, route) in routes {
        let mut answers = Vec::new();
        for _attempt in 0..2 {
            let day = today_plus(0);
            let (status, embedded) = client.get(&server.base_url, admin, route).await;
            assert_eq!(status, StatusCode::OK, "embedded {route}: {embedded}");
            let (status, separate) = client.get(&projectors[*model].base_url, admin, route).await;
            assert_eq!(status, StatusCode::OK, "projector {route}: {separate}");
            answers.push((embedded, separate));
            if today_plus(0) == day {
                break;
            }
        }
        let (embedded, separate) = answers.pop().expect("one answer at least");
        assert_same_answer(&embedded, &separate, route);
    }
}

/// The `/v1/projections` row of `model` served by `process`.
async fn projection_row(client: &Client, process: &Planledger, token: &str, model: &str) -> Value {
    let (status, body) = client
        .get(&process.base_url, token, "/v1/projections")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["projections"]
        .as_array()
        .and_then(|rows| rows.iter().find(|row| row["name"] == model))
        .cloned()
        .unwrap_or_else(|| panic!("no {model} row in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projectors_consuming_jetstream_equal_the_embedded_ones() {
    let nats = NatsServer::start();
    let url = nats.url();
    let server = Planledger::start(&["--nats", &url]);
    let client = Client::new();
    let planner = server.token("acme", "pat", "planner");
    let admin = server.token("acme", "root", "admin");

    seed_plan(&server, &client, &planner, "launch", "alice").await;
    seed_plan(&server, &client, &planner, "second", "bob").await;

    // The projectors get only the signing key: they never open the log.
    let dir = tempfile::tempdir().expect("temp dir");
    share_jwt_key(&server.data_dir, dir.path());
    let mut projectors: Vec<Planledger> = MODELS
        .iter()
        .map(|model| Planledger::start_projector(dir.path(), model, &["--nats", &url]))
        .collect();
    assert!(
        !dir.path().join("log").exists(),
        "a projector over NATS does not create an event log"
    );

    for week in 1..=4 {
        a_week(&server, &client, &planner, "launch", week).await;
        a_week(&server, &client, &planner, "second", week).await;
    }
    // A crash of one projector while events keep coming; it resumes from its checkpoint.
    projectors[0].kill();
    for week in 5..=7 {
        a_week(&server, &client, &planner, "launch", week).await;
    }
    projectors[0].restart();
    let mut last = 0;
    for week in 8..=9 {
        last = a_week(&server, &client, &planner, "launch", week).await;
        a_week(&server, &client, &planner, "second", week).await;
    }
    last = last.max(
        client
            .command(
                &server,
                &planner,
                "second",
                json!({"type": "CloseGoal", "data": {"goal_id": "signups", "outcome": "achieved"}}),
            )
            .await,
    );

    // Every figure, once both sides have applied everything. (`as_of` needs the log, which a
    // projector over NATS does not have; figures for "now" are computed per UTC day, so the
    // two answers agree unless the test straddles midnight UTC, which it retries once.)
    let query = format!("min_position={last}");
    let routes: Vec<(usize, String)> = [
        (0, "/v1/plans/launch/progress"),
        (0, "/v1/plans/second/progress"),
        (1, "/v1/plans/launch/accountability"),
        (1, "/v1/plans/second/accountability"),
        (1, "/v1/people/alice/accountability"),
        (1, "/v1/people/dev1/accountability"),
        (2, "/v1/plans/launch/agility"),
        (2, "/v1/plans/second/agility"),
    ]
    .into_iter()
    .map(|(model, route)| (model, format!("{route}?{query}")))
    .collect();
    assert_modes_agree(&client, &server, &projectors, &admin, &routes).await;

    // A projector over JetStream cannot know the log's end: a position it has not applied is
    // waited for (5 s), then answered 503 with the position it has reached.
    let (status, body) = client
        .get(
            &projectors[0].base_url,
            &admin,
            &format!("/v1/plans/launch/progress?min_position={}", last + 1000),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "not_caught_up", "{body}");
    assert_eq!(body["current_position"], json!(last), "{body}");

    // A rebuild over the stream (an ephemeral consumer from position 1) gives the same answers.
    let (status, body) = client
        .post(
            &projectors[0].base_url,
            &admin,
            "/v1/projections/progress/rebuild",
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let row = projection_row(&client, &projectors[0], &admin, "progress").await;
        if row["generation"] == json!(2) && row["rebuild"].is_null() {
            assert_eq!(row["checkpoint"], json!(last), "{row}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rebuild did not finish: {row}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_modes_agree(&client, &server, &projectors, &admin, &routes).await;

    for (model, process) in MODELS.iter().zip(&projectors) {
        let (status, ready) = client.get(&process.base_url, "", "/readyz").await;
        assert_eq!(status, StatusCode::OK, "{ready}");
        assert_eq!(ready["projections"][0]["name"], json!(model), "{ready}");
        let row = projection_row(&client, process, &admin, model).await;
        assert_eq!(row["checkpoint"], json!(last), "{row}");
        assert!(
            row["source"]
                .as_str()
                .is_some_and(|source| source.starts_with("jetstream:")),
            "{row}"
        );
    }
    assert!(
        projectors[0].log().contains("consuming the event stream"),
        "{}",
        projectors[0].log()
    );
}

/// `serve --no-embedded-projectors`: the service only takes commands and relays them; the read
/// models are the projector processes', and the service's read-model routes say where to ask.
/// Without NATS the flag is refused at start, since nothing would feed the read models.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_embedded_projectors_leaves_the_read_models_to_projector_processes() {
    let refused = std::process::Command::new(planledger_e2e::server::binary())
        .args(["serve", "--no-embedded-projectors", "--data-dir"])
        .arg(tempfile::tempdir().expect("temp dir").path())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run planledger serve");
    assert!(!refused.status.success(), "started without NATS");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("needs --nats"), "{stderr}");

    let nats = NatsServer::start();
    let url = nats.url();
    let server = Planledger::start(&["--nats", &url, "--no-embedded-projectors"]);
    let client = Client::new();
    let planner = server.token("acme", "pat", "planner");
    let admin = server.token("acme", "root", "admin");
    let (status, projections) = client
        .get(&server.base_url, &admin, "/v1/projections")
        .await;
    assert_eq!(status, StatusCode::OK, "{projections}");
    assert_eq!(projections["projections"], json!([]), "{projections}");

    let dir = tempfile::tempdir().expect("temp dir");
    share_jwt_key(&server.data_dir, dir.path());
    let progress = Planledger::start_projector(dir.path(), "progress", &["--nats", &url]);
    seed_plan(&server, &client, &planner, "launch", "alice").await;
    let last = a_week(&server, &client, &planner, "launch", 1).await;
    assert!(
        !server
            .data_dir
            .join("projections")
            .join("progress")
            .exists(),
        "the service keeps no read model of its own"
    );

    let route = format!("/v1/plans/launch/progress?min_position={last}");
    let (status, answer) = client.get(&progress.base_url, &admin, &route).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["plan_id"], json!("launch"), "{answer}");
    let (status, problem) = client.get(&server.base_url, &admin, &route).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("planledger projector --name progress")),
        "{problem}"
    );
    // A historic read is a read of the log, which the service still holds.
    let now = jiff::Timestamp::now().to_string();
    let (status, as_of) = client
        .get(
            &server.base_url,
            &admin,
            &format!("/v1/plans/launch/progress?as_of={now}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{as_of}");
    assert_eq!(as_of["plan_id"], json!("launch"), "{as_of}");
    let (status, ready) = client.get(&server.base_url, "", "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
}

/// A JetStream source whose acknowledgements are withheld while `hold` is set, so JetStream's
/// ack wait runs out and it redelivers what the projector already applied.
struct HoldAcks {
    inner: JetStreamSource,
    hold: Arc<AtomicBool>,
}

impl EventSource for HoldAcks {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn next_batch(
        &mut self,
        after: Position,
        max: usize,
    ) -> Result<Vec<Delivery>, SourceError> {
        self.inner.next_batch(after, max).await
    }

    async fn acknowledge(&mut self, through: Position) -> Result<(), SourceError> {
        if self.hold.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.acknowledge(through).await
    }

    fn needs_durable_commit(&self) -> bool {
        self.inner.needs_durable_commit()
    }

    fn head(&self) -> Option<SourceHead> {
        self.inner.head()
    }

    async fn replay_from(&mut self, after: Position) -> Result<Self, SourceError> {
        Ok(Self {
            inner: self.inner.replay_from(after).await?,
            hold: Arc::clone(&self.hold),
        })
    }
}

/// Waits (bounded) until `handle` has committed `position`.
async fn committed(handle: &ProjectionHandle, position: u64) {
    handle
        .wait_for(position, Duration::from_secs(120))
        .await
        .unwrap_or_else(|reached| {
            panic!(
                "the projector reached {reached}, not {position}: {:?}",
                handle.status()
            )
        });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_redelivering_applied_messages_changes_nothing() {
    let nats = NatsServer::start();
    let url = nats.url();
    let mut server = Planledger::start(&["--nats", &url]);
    let client = Client::new();
    let planner = server.token("acme", "pat", "planner");
    seed_plan(&server, &client, &planner, "launch", "alice").await;
    let mut last = 0;
    for week in 1..=6 {
        last = a_week(&server, &client, &planner, "launch", week).await;
    }

    let durable = "planledger-redelivery-test";
    let config = JetStreamSourceConfig {
        ack_wait: Duration::from_secs(1),
        durable: durable.into(),
        ..JetStreamSourceConfig::for_projection("PLANLEDGER_EVENTS", "accountability")
    };
    let source = JetStreamSource::connect(&url, "redelivery-test", config)
        .await
        .expect("NATS connects");
    let hold = Arc::new(AtomicBool::new(true));
    let dir = tempfile::tempdir().expect("temp dir");
    let db = ReadModelDb::open(dir.path().join("consumed"), "accountability").expect("open db");
    let shutdown = CancellationToken::new();
    let (handle, task) = spawn(
        Arc::new(AccountabilityProjector),
        db.clone(),
        HoldAcks {
            inner: source,
            hold: Arc::clone(&hold),
        },
        RuntimeOptions::default(),
        shutdown.clone(),
    )
    .expect("the projector starts");
    committed(&handle, last).await;

    // With no ack, JetStream redelivers everything after the ack wait.
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.expect("connect"));
    let stream = js.get_stream("PLANLEDGER_EVENTS").await.expect("stream");
    let consumer_info = || async { stream.consumer_info(durable).await.expect("consumer info") };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while consumer_info().await.num_redelivered == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "JetStream did not redeliver within 60 s: {:?}",
            consumer_info().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let redelivered = consumer_info().await.num_redelivered;

    // Acks flow again; more history arrives and is applied once.
    hold.store(false, Ordering::SeqCst);
    for week in 7..=9 {
        last = a_week(&server, &client, &planner, "launch", week).await;
    }
    committed(&handle, last).await;
    shutdown.cancel();
    task.await
        .expect("the projector task")
        .expect("the projector stops cleanly");
    assert_eq!(handle.status().checkpoint, last);

    // Byte for byte what a clean rebuild from the log gives.
    server.terminate();
    let store = EventStore::open(server.data_dir.join("log"), StoreOptions::default())
        .expect("the log opens");
    let clean = ReadModelDb::open(dir.path().join("clean"), "accountability").expect("open db");
    rebuild_to(
        Arc::new(AccountabilityProjector),
        clean.clone(),
        LocalLogSource::new(store.clone()),
        RuntimeOptions::default(),
        Position(last),
        |_| {},
    )
    .await
    .expect("clean rebuild");
    let dump = |db: &ReadModelDb| {
        db.dump_generation(db.live_generation())
            .expect("dump the live generation")
    };
    let consumed = dump(&db);
    assert!(!consumed.is_empty());
    assert!(
        consumed == dump(&clean),
        "the model consumed with {redelivered} redeliveries differs from a clean rebuild"
    );
}
