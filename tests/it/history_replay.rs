//! `planledger replay --plan TENANT/PLAN --until WHEN` against a running service: for a
//! scripted history, the JSON it prints at every version, position and recorded time equals the
//! as-of answer of `GET /v1/plans/{id}` (and its progress the as-of progress read), and the
//! table names the goals, steps and roles.

use planledger_e2e::client::Client;
use planledger_e2e::history::{Tenant, replay, script_history};
use planledger_e2e::server::Planledger;
use reqwest::StatusCode;
use serde_json::Value;

/// The fields of `GET /v1/plans/{id}`'s body.
const STATE_FIELDS: [&str; 4] = ["plan_id", "version", "as_of_position", "state"];

fn state_fields(body: &Value) -> Vec<Value> {
    STATE_FIELDS
        .iter()
        .map(|field| body.get(*field).cloned().unwrap_or(Value::Null))
        .collect()
}

/// Runs `replay --plan acme/q1 --until UNTIL --json`: the JSON, or the error it printed.
fn replay_json(server: &Planledger, until: &str) -> Result<Value, String> {
    let (ok, stdout, stderr) = replay(
        &server.data_dir,
        &["--plan", "acme/q1", "--until", until, "--json"],
    );
    if ok {
        Ok(serde_json::from_str(&stdout).expect("replay --json prints one JSON document"))
    } else {
        Err(stderr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_at_every_event_equals_the_as_of_answer_of_the_api() {
    let server = Planledger::start(&[]);
    let acme = Tenant::new(&server, "acme");
    // Two plans interleaved, so q1's positions are not its versions.
    let last = script_history(&server, &acme, &["q1", "q2"]).await;
    let client = Client::new();
    let get = |path: String| {
        let client = client.clone();
        let (base, token) = (server.base_url.clone(), acme.token.clone());
        async move { client.get(&base, &token, &path).await }
    };

    let (status, trail) = get("/v1/plans/q1/events?limit=1000".into()).await;
    assert_eq!(status, StatusCode::OK);
    let events = trail["events"].as_array().expect("events").clone();
    assert_eq!(events.len(), 15);

    for version in 1..=events.len() {
        let (status, api) = get(format!("/v1/plans/q1?version={version}")).await;
        assert_eq!(status, StatusCode::OK, "{api}");
        let replayed = replay_json(&server, &format!("version:{version}")).expect("replay");
        assert_eq!(
            state_fields(&replayed),
            state_fields(&api),
            "version {version}"
        );
    }

    for position in 1..=last {
        let (status, api) = get(format!("/v1/plans/q1?position={position}")).await;
        match replay_json(&server, &format!("position:{position}")) {
            Ok(replayed) => {
                assert_eq!(status, StatusCode::OK, "position {position}: {api}");
                assert_eq!(
                    state_fields(&replayed),
                    state_fields(&api),
                    "position {position}"
                );
            }
            Err(error) => {
                // Before the plan was created both say it did not exist then.
                assert_eq!(
                    status,
                    StatusCode::NOT_FOUND,
                    "position {position}: {error}"
                );
                assert!(error.contains("did not exist at that point"), "{error}");
            }
        }
    }

    for event in &events {
        let time = event["recorded_at"].as_str().expect("recorded_at");
        let (status, api) = get(format!("/v1/plans/q1?as_of={time}")).await;
        assert_eq!(status, StatusCode::OK, "{api}");
        let replayed = replay_json(&server, time).expect("replay");
        assert_eq!(state_fields(&replayed), state_fields(&api), "as of {time}");
        assert_eq!(replayed["evaluated_at"], time);

        // The figures are the progress read model's as of that time.
        let (status, mut progress) = get(format!("/v1/plans/q1/progress?as_of={time}")).await;
        assert_eq!(status, StatusCode::OK, "{progress}");
        let fields = progress.as_object_mut().expect("an object");
        fields.remove("projection");
        fields.remove("position");
        assert_eq!(replayed["progress"], progress, "progress as of {time}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_prints_the_goal_tree_steps_and_roles_as_tables() {
    let server = Planledger::start(&[]);
    let acme = Tenant::new(&server, "acme");
    script_history(&server, &acme, &["q1"]).await;

    let (ok, table, stderr) = replay(&server.data_dir, &["--plan", "acme/q1"]);
    assert!(ok, "{stderr}");
    assert!(
        table.starts_with("Plan acme/q1 \"q1\" at version 15"),
        "{table}"
    );
    let goal_line = |goal: &str| {
        table
            .lines()
            .find(|line| line.starts_with(goal))
            .unwrap_or_else(|| panic!("no line for {goal:?} in:\n{table}"))
            .to_owned()
    };
    // Children are indented under their parent, with target, due date and accountable person.
    let signups = goal_line("  signups");
    assert!(signups.contains("180 users"), "{signups}");
    assert!(signups.contains("ana"), "{signups}");
    assert!(goal_line("  churn").contains("cy"));
    assert!(goal_line("growth").contains("Growth"));
    for expected in [
        "Steps",
        "landing",
        "done",
        "survey",
        "open",
        "Roles",
        "responsible",
    ] {
        assert!(
            table.contains(expected),
            "{expected:?} missing in:\n{table}"
        );
    }

    // At version 3 the plan had two goals and nothing else.
    let (ok, early, stderr) = replay(
        &server.data_dir,
        &["--plan", "acme/q1", "--until", "version:3"],
    );
    assert!(ok, "{stderr}");
    assert!(early.contains("at version 3"), "{early}");
    assert!(!early.contains("churn"), "{early}");
    assert!(early.contains("Steps\n(none)"), "{early}");
}

#[test]
fn replay_takes_exactly_one_of_projection_and_plan() {
    let server = Planledger::start(&[]);
    let (ok, _, stderr) = replay(
        &server.data_dir,
        &["--plan", "acme/q1", "--projection", "progress"],
    );
    assert!(!ok);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let (ok, _, stderr) = replay(&server.data_dir, &[]);
    assert!(!ok);
    assert!(stderr.contains("required"), "{stderr}");
    let (ok, _, stderr) = replay(
        &server.data_dir,
        &["--plan", "acme/q1", "--until", "yesterday"],
    );
    assert!(!ok);
    assert!(stderr.contains("version:N"), "{stderr}");
    let (ok, _, stderr) = replay(&server.data_dir, &["--plan", "acme/nope", "--json"]);
    assert!(!ok);
    assert!(stderr.contains("does not exist"), "{stderr}");
}
