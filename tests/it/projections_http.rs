//! Read models end to end: the real binary (`planledger serve --no-nats`, projectors embedded),
//! commands over HTTP, then the read-model routes with `?min_position=` to read our own writes.

use std::time::Duration;

use planledger_e2e::client::{Client, seed_plan};
use planledger_e2e::copy_dir;
use planledger_e2e::server::{Planledger, share_jwt_key};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn goal<'a>(body: &'a Value, id: &str) -> &'a Value {
    body["goals"]
        .as_array()
        .and_then(|goals| goals.iter().find(|g| g["goal_id"] == id))
        .unwrap_or_else(|| panic!("no goal {id} in {body}"))
}

#[tokio::test]
async fn read_models_answer_our_own_writes_with_min_position() {
    let server = Planledger::start(&[]);
    let client = Client::new();
    let token = server.token("acme", "pat", "planner");
    let position = seed_plan(&server, &client, &token, "launch", "alice").await;
    let base = &server.base_url;

    let (status, progress) = client
        .get(
            base,
            &token,
            &format!("/v1/plans/launch/progress?min_position={position}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{progress}");
    assert_eq!(progress["projection"], "progress");
    assert!(progress["position"].as_u64().expect("position") >= position);
    assert_eq!(progress["plan_id"], "launch");
    // (150 - 100) / (200 - 100)
    assert_eq!(goal(&progress, "signups")["progress"], 0.5);
    assert_eq!(goal(&progress, "signups")["reported_status"], "on_track");
    for key in [
        "progress",
        "expected_progress",
        "status",
        "spi",
        "goalpost_effect",
        "momentum",
    ] {
        assert!(
            progress.get(key).is_some(),
            "progress lacks {key}: {progress}"
        );
    }

    let (status, equal) = client
        .get(
            base,
            &token,
            &format!("/v1/plans/launch/progress?rule=equal&min_position={position}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{equal}");
    assert_eq!(equal["roll_up"], "equal");

    let (status, accountability) = client
        .get(
            base,
            &token,
            &format!("/v1/plans/launch/accountability?min_position={position}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{accountability}");
    assert_eq!(accountability["ownership_coverage"], 1.0);
    assert_eq!(accountability["people"][0]["person"], "alice");

    let (status, agility) = client
        .get(
            base,
            &token,
            &format!("/v1/plans/launch/agility?min_position={position}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{agility}");
    assert_eq!(agility["adjustments"]["total"], 0);

    let (status, drift) = client
        .get(
            base,
            &token,
            &format!("/v1/plans/launch/drift?baseline=v1&min_position={position}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{drift}");
    assert_eq!(drift["deadline_slip_days"], 0);
    assert_eq!(drift["baseline_label"], "v1");

    let (status, person) = client
        .get(
            base,
            &token,
            &format!("/v1/people/alice/accountability?min_position={position}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{person}");
    assert_eq!(person["plans"][0]["plan_id"], "launch");

    // A later adjustment shows up as soon as the read model has caught up with it.
    let adjusted = client
        .command(
            &server,
            &token,
            "launch",
            json!({"type": "AdjustGoal", "data": {
            "goal_id": "signups", "target": 300.0, "reason": "stretch"}}),
        )
        .await;
    let (_, progress) = client
        .get(
            base,
            &token,
            &format!("/v1/plans/launch/progress?min_position={adjusted}"),
        )
        .await;
    // (150 - 100) / (300 - 100) now, 0.5 against the baseline's target.
    assert_eq!(goal(&progress, "signups")["progress"], 0.25);
    assert_eq!(goal(&progress, "signups")["progress_vs_baseline"], 0.5);
    let (_, agility) = client
        .get(
            base,
            &token,
            &format!("/v1/plans/launch/agility?min_position={adjusted}"),
        )
        .await;
    assert_eq!(agility["adjustments"]["target"], 1);
}

#[tokio::test]
async fn another_tenant_never_sees_the_read_models() {
    let server = Planledger::start(&[]);
    let client = Client::new();
    let ours = server.token("acme", "pat", "planner");
    let theirs = server.token("globex", "eve", "admin");
    let position = seed_plan(&server, &client, &ours, "launch", "alice").await;
    let base = &server.base_url;
    for path in ["progress", "accountability", "agility", "drift"] {
        let (status, body) = client
            .get(
                base,
                &theirs,
                &format!("/v1/plans/launch/{path}?min_position={position}"),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["code"], "not_found");
    }
    let (status, _) = client
        .get(
            base,
            &theirs,
            &format!("/v1/people/alice/accountability?min_position={position}"),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_position_beyond_the_log_is_refused_at_once() {
    // (The 503 for a position the log has but a projector has not applied yet is provoked with
    // a projector over JetStream, which cannot know the log's end: tests/it/projector_nats.rs.)
    let server = Planledger::start(&[]);
    let client = Client::new();
    let token = server.token("acme", "pat", "planner");
    let position = seed_plan(&server, &client, &token, "launch", "alice").await;
    for route in [
        "/v1/plans/launch/progress",
        "/v1/people/alice/accountability",
        "/v1/projections",
    ] {
        let (status, body) = client
            .get(
                &server.base_url,
                &token,
                &format!("{route}?min_position={}", position + 1000),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{route}: {body}");
        assert_eq!(body["errors"][0]["field"], "min_position", "{body}");
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains(&format!("end of the log ({position})"))),
            "{body}"
        );
        // The log's last position itself is fine.
        let (status, body) = client
            .get(
                &server.base_url,
                &token,
                &format!("{route}?min_position={position}"),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{route}: {body}");
    }
}

#[tokio::test]
async fn bad_queries_are_rejected_with_problem_json() {
    let server = Planledger::start(&[]);
    let client = Client::new();
    let token = server.token("acme", "pat", "planner");
    seed_plan(&server, &client, &token, "launch", "alice").await;
    let base = &server.base_url;
    for (path, field) in [
        ("/v1/plans/launch/progress?rule=median", "rule"),
        ("/v1/plans/launch/progress?as_of=yesterday", "as_of"),
        ("/v1/plans/launch/agility?baseline=v1", "baseline"),
    ] {
        let (status, body) = client.get(base, &token, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{path}: {body}");
    }
    let (status, _) = client
        .get(base, &token, "/v1/plans/launch/progress?colour=red")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = client
        .get(base, &token, "/v1/plans/launch/drift?baseline=nope")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = client
        .get(base, "not-a-token", "/v1/plans/launch/progress")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn projections_report_checkpoints_and_admins_can_rebuild() {
    let server = Planledger::start(&[]);
    let client = Client::new();
    let planner = server.token("acme", "pat", "planner");
    let admin = server.token("acme", "root", "admin");
    let position = seed_plan(&server, &client, &planner, "launch", "alice").await;
    let base = &server.base_url;

    let (status, body) = client
        .get(
            base,
            &planner,
            &format!("/v1/projections?min_position={position}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> = body["projections"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["progress", "accountability", "agility"]);
    for projection in body["projections"].as_array().expect("list") {
        assert!(projection["checkpoint"].as_u64().expect("checkpoint") >= position);
        assert_eq!(projection["source"], "local-log");
        assert!(projection.get("lag_positions").is_some());
        assert!(projection.get("lag_seconds").is_some());
    }

    let http = reqwest::Client::new();
    let forbidden = http
        .post(server.url("/v1/projections/progress/rebuild"))
        .bearer_auth(&planner)
        .send()
        .await
        .expect("send");
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    let unknown = http
        .post(server.url("/v1/projections/velocity/rebuild"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("send");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let accepted = http
        .post(server.url("/v1/projections/progress/rebuild"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("send");
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);

    // The rebuilt generation takes over; reads keep answering throughout.
    let mut generation = 1;
    for _ in 0..600 {
        let (status, progress) = client
            .get(
                base,
                &planner,
                &format!("/v1/plans/launch/progress?min_position={position}"),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{progress}");
        assert_eq!(goal(&progress, "signups")["progress"], 0.5);
        let (_, body) = client.get(base, &planner, "/v1/projections").await;
        generation = body["projections"][0]["generation"].as_u64().unwrap_or(0);
        if generation == 2 && body["projections"][0]["rebuild"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(generation, 2, "the rebuild became live");
}

#[tokio::test]
async fn read_models_survive_a_crash_of_the_service() {
    let mut server = Planledger::start(&[]);
    let client = Client::new();
    let token = server.token("acme", "pat", "planner");
    seed_plan(&server, &client, &token, "launch", "alice").await;
    server.kill();
    server.restart();
    // A fresh client: the old one's pooled connection died with the process.
    let client = Client::new();
    let position = client
        .command(
            &server,
            &token,
            "launch",
            json!({"type": "RecordCheckIn", "data": {
            "goal_id": "signups", "value": 180.0, "confidence": 0.8}}),
        )
        .await;
    let (status, progress) = client
        .get(
            &server.base_url,
            &token,
            &format!("/v1/plans/launch/progress?min_position={position}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{progress}");
    assert_eq!(goal(&progress, "signups")["progress"], 0.8);
}

#[tokio::test]
async fn a_projector_process_builds_the_same_model_as_the_embedded_one() {
    let mut server = Planledger::start(&[]);
    let client = Client::new();
    let token = server.token("acme", "pat", "planner");
    seed_plan(&server, &client, &token, "launch", "alice").await;
    let position = seed_plan(&server, &client, &token, "second", "alice").await;
    let (_, embedded) = client
        .get(
            &server.base_url,
            &token,
            &format!("/v1/plans/launch/progress?min_position={position}"),
        )
        .await;
    let (_, embedded_person) = client
        .get(
            &server.base_url,
            &token,
            &format!("/v1/people/alice/accountability?min_position={position}"),
        )
        .await;
    server.terminate();

    // The same log and signing key in a fresh directory: the projector builds its own model.
    let other = tempfile::tempdir().expect("dir");
    copy_dir(&server.data_dir.join("log"), &other.path().join("log"));
    share_jwt_key(&server.data_dir, other.path());
    let projector = Planledger::start_projector(other.path(), "progress", &[]);
    let base = projector.base_url.clone();
    let answer = client
        .get(
            &base,
            &token,
            &format!("/v1/plans/launch/progress?min_position={position}"),
        )
        .await;
    let (status, separate) = answer;
    assert_eq!(status, StatusCode::OK, "{separate}");
    for key in [
        "progress",
        "progress_vs_baseline",
        "expected_progress",
        "ev",
        "pv",
        "spi",
        "position",
    ] {
        assert_eq!(separate[key], embedded[key], "{key} differs");
    }
    assert_eq!(separate["goals"], embedded["goals"]);
    // The projector serves only its own read model.
    let (status, _) = client
        .get(&base, &token, "/v1/people/alice/accountability")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(embedded_person["plans"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn progress_forecasts_name_their_check_ins_now_and_as_of() {
    let server = Planledger::start(&[]);
    let client = Client::new();
    let token = server.token("acme", "pat", "planner,auditor");
    seed_plan(&server, &client, &token, "launch", "alice").await;
    let base = &server.base_url;
    let (_, trail) = client
        .get(base, &token, "/v1/plans/launch/events?limit=100")
        .await;
    let seeded_at = trail["events"][4]["recorded_at"]
        .as_str()
        .expect("the seeded check-in's time")
        .to_owned();
    // Two earlier days told later: the series is 110, 125 and the seeded 150 (today).
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut told = Vec::new();
    for (days, value) in [(-14, 110.0), (-7, 125.0)] {
        told.push(
            client
                .command(
                    &server,
                    &token,
                    "launch",
                    json!({"type": "RecordCheckIn", "data": {"goal_id": "signups", "value": value,
                        "confidence": 0.6, "effective_on": planledger_e2e::client::today_plus(days)}}),
                )
                .await,
        );
    }

    let (status, progress) = client
        .get(
            base,
            &token,
            &format!("/v1/plans/launch/progress?min_position={}", told[1]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{progress}");
    let forecast = &goal(&progress, "signups")["forecast"];
    assert_eq!(forecast["kind"], "trend", "{forecast}");
    assert_eq!(forecast["points"], 3);
    let events: Vec<(u64, Value)> = forecast["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["version"].as_u64().expect("version"),
                e["position"].clone(),
            )
        })
        .collect();
    // Oldest effective day first: versions 6 and 7 (told last), then the seeded 5; by version
    // only, so that every process gives the same answer.
    assert_eq!(
        events,
        [(6, Value::Null), (7, Value::Null), (5, Value::Null)]
    );
    let (_, trail) = client
        .get(
            base,
            &token,
            "/v1/plans/launch/events?from_version=6&limit=2",
        )
        .await;
    assert_eq!(trail["events"][0]["position"], told[0]);
    assert_eq!(trail["events"][1]["position"], told[1]);
    assert_eq!(progress["forecast_backtest"]["forecasts"], 0);

    // As of the seeded check-in only one value was known.
    let (status, then) = client
        .get(
            base,
            &token,
            &format!("/v1/plans/launch/progress?as_of={seeded_at}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{then}");
    let earlier = &goal(&then, "signups")["forecast"];
    assert_eq!(earlier["kind"], "not_enough_data", "{earlier}");
    assert_eq!(earlier["points"], 1);
    assert_eq!(earlier["events"][0]["version"], 5);

    // Closed: no forecast any more, and the back-test replays the one trend it made.
    let closed = client
        .command(
            &server,
            &token,
            "launch",
            json!({"type": "CloseGoal", "data": {"goal_id": "signups", "outcome": "achieved"}}),
        )
        .await;
    let (_, after) = client
        .get(
            base,
            &token,
            &format!("/v1/plans/launch/progress?min_position={closed}"),
        )
        .await;
    assert_eq!(goal(&after, "signups")["forecast"], Value::Null);
    let backtest = &after["forecast_backtest"];
    assert_eq!(backtest["forecasts"], 1, "{backtest}");
    assert_eq!(backtest["goals"][0]["closed_event"]["version"], 8);
    assert_eq!(backtest["goals"][0]["forecasts"][0]["event"]["version"], 7);
    // The closed goal's row is kept between reads: the same from the read model again, and
    // from the log as of now.
    let (_, again) = client.get(base, &token, "/v1/plans/launch/progress").await;
    assert_eq!(&again["forecast_backtest"], backtest);
    let now = jiff::Timestamp::now();
    let (status, logged) = client
        .get(
            base,
            &token,
            &format!("/v1/plans/launch/progress?as_of={now}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{logged}");
    assert_eq!(&logged["forecast_backtest"], backtest);
    let (_, closing) = client
        .get(
            base,
            &token,
            "/v1/plans/launch/events?from_version=8&limit=1",
        )
        .await;
    assert_eq!(closing["events"][0]["position"], closed);
}

fn close_to(value: &Value, expected: f64) {
    let actual = value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is a number"));
    assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
}

#[tokio::test]
async fn restatements_list_back_dated_check_ins_with_what_they_changed() {
    // The demo plan: signups (KPI 40 -> 500, weight 2) and checkout (two steps, weight 1),
    // defined three weeks ago; 85 told five days ago about seven days ago; today the target of
    // signups lowered to 350.
    let server = Planledger::start_demo();
    let client = Client::new();
    let token = server.token("demo", "audra", "auditor");
    let viewer = server.token("demo", "vic", "viewer");
    let base = &server.base_url;
    let path = "/v1/plans/launch-2027/restatements";
    let (status, body) = client
        .get(base, &token, &format!("{path}?min_position=15"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let restated = body["restatements"].as_array().expect("restatements");
    assert_eq!(restated.len(), 1, "{body}");
    let r = &restated[0];
    assert_eq!(r["goal_id"], "signups");
    assert_eq!(r["days_late"], 2);
    assert_eq!(r["reported_by"], "demo-seed");
    assert_eq!(r["event"]["version"], 12);
    assert_eq!(r["event"]["position"], 12);
    // Days -7 and -6, with the target in force then (500, not today's 350): 70 -> 85 is
    // (70 - 40) / 460 -> (85 - 40) / 460, off track either way.
    let changes = r["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 1, "{r}");
    let change = &changes[0];
    assert_eq!(change["goal_id"], "signups");
    assert_eq!(change["from"], planledger_e2e::client::today_plus(-7));
    assert_eq!(change["to"], planledger_e2e::client::today_plus(-6));
    close_to(&change["progress_before"], 30.0 / 460.0);
    close_to(&change["progress_after"], 45.0 / 460.0);
    assert_eq!(change["status_after"], "off_track");
    // The plan: (2 * p_signups + 1 * 0 steps done) / 3.
    let plan = &r["plan_changes"][0];
    assert_eq!(plan["from"], change["from"]);
    assert_eq!(plan["to"], change["to"]);
    close_to(&plan["progress_before"], 2.0 * 30.0 / 460.0 / 3.0);
    close_to(&plan["progress_after"], 2.0 * 45.0 / 460.0 / 3.0);

    // A viewer sees the figures but not who told them (audit-trail data).
    let (_, seen) = client.get(base, &viewer, path).await;
    assert_eq!(
        seen["restatements"][0]["reported_by"],
        Value::Null,
        "{seen}"
    );
    assert_eq!(seen["restatements"][0]["changes"], r["changes"]);

    // Told before `since`: not listed; `since` must be a time and belongs to this route only.
    let recorded_at = r["recorded_at"].as_str().expect("recorded_at");
    let later = jiff::Timestamp::from_second(
        recorded_at
            .parse::<jiff::Timestamp>()
            .expect("an RFC 3339 time")
            .as_second()
            + 1,
    )
    .expect("a time");
    let (status, none) = client
        .get(base, &token, &format!("{path}?since={later}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{none}");
    assert_eq!(none["restatements"], json!([]));
    let (status, bad) = client
        .get(base, &token, &format!("{path}?since=yesterday"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert_eq!(bad["errors"][0]["field"], "since");
    let (status, _) = client
        .get(
            base,
            &token,
            "/v1/plans/launch-2027/progress?since=2026-01-01T00:00:00Z",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_demo_plan_expects_progress_on_the_days_of_its_check_ins() {
    // Its goals are defined when the plan starts, three weeks ago: on each day a check-in
    // describes, every goal is partway through its time, neither not started nor due.
    let server = Planledger::start_demo();
    let client = Client::new();
    let token = server.token("demo", "audit", "auditor");
    let base = &server.base_url;
    // The seed's 15 events are all in the read model before it answers.
    let (status, history) = client
        .get(
            base,
            &token,
            "/v1/plans/launch-2027/progress/history?min_position=15",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let goals = history["goals"].as_array().expect("goals");
    assert_eq!(goals.len(), 2, "{history}");
    for goal in goals {
        let check_in_days: Vec<&Value> = goal["points"]
            .as_array()
            .expect("points")
            .iter()
            .filter(|p| p["check_ins"].as_array().is_some_and(|c| !c.is_empty()))
            .collect();
        assert!(!check_in_days.is_empty(), "no check-in day: {goal}");
        for point in check_in_days {
            let expected = point["expected_progress"]
                .as_f64()
                .expect("expected_progress");
            assert!(
                expected > 0.0 && expected < 1.0,
                "{} expects {expected} on {}: {goal}",
                goal["goal_id"],
                point["date"]
            );
        }
    }
    let (status, progress) = client
        .get(
            base,
            &token,
            "/v1/plans/launch-2027/progress?min_position=15",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{progress}");
    for goal in progress["goals"].as_array().expect("goals") {
        let expected = goal["expected_progress"]
            .as_f64()
            .expect("expected_progress");
        assert!(expected > 0.0 && expected < 1.0, "{goal}");
    }
}
