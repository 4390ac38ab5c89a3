//! Poison events through the real binary: events the projectors cannot apply (an unknown type
//! from a newer writer, a payload that does not decode) stop each projector at its position,
//! shown in `GET /v1/projections`, `/readyz` and `/metrics`; a quarantine over HTTP (service
//! running) or with `planledger projector quarantine` (service stopped) lets a projector pass
//! over exactly that position, recorded and listed, across restarts and rebuilds.

use std::process::Command;
use std::time::Duration;

use planledger_e2e::client::{Client, metrics, readyz, seed_plan};
use planledger_e2e::server::{Planledger, binary};
use planledger_store::{
    AppendMeta, AppendRequest, EventStore, ExpectedVersion, NewEvent, StoreOptions, StreamId,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Appends raw events below the domain to a stopped service's log; returns their positions.
async fn append_raw(data_dir: &std::path::Path, events: &[(&str, u32, &str)]) -> Vec<u64> {
    let store =
        EventStore::open(data_dir.join("log"), StoreOptions::default()).expect("the log opens");
    let mut positions = Vec::new();
    for (event_type, version, data) in events {
        // Another plan: the command path cannot load a plan holding such an event.
        let position =
            append_as_a_newer_writer(&store, "acme/q4", event_type, *version, data).await;
        positions.push(position);
    }
    store.flush().expect("flush");
    positions
}

/// Appends one event of `event_type` at schema `version` with `data` to `stream`, below the
/// domain, as a writer of a newer build would; returns its position.
pub(crate) async fn append_as_a_newer_writer(
    store: &EventStore,
    stream: &str,
    event_type: &str,
    version: u32,
    data: &str,
) -> u64 {
    let data = serde_json::value::RawValue::from_string(data.to_owned()).expect("JSON");
    store
        .append(AppendRequest {
            stream: StreamId::new(stream).expect("stream id"),
            expected: ExpectedVersion::Any,
            events: vec![NewEvent::new(
                event_type,
                version,
                jiff::Timestamp::now(),
                data,
            )],
            meta: AppendMeta {
                actor: "newer-writer".into(),
                ..AppendMeta::default()
            },
        })
        .await
        .expect("the log takes the event")
        .position()
        .get()
}

/// The status of projector `name` in `GET /v1/projections`.
async fn projection(client: &Client, server: &Planledger, token: &str, name: &str) -> Value {
    let (status, body) = client.get(&server.base_url, token, "/v1/projections").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["projections"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("{name} is listed: {body}"))
}

/// Polls `GET /v1/projections` (bounded) until projector `name` is stopped at `position`.
async fn stopped_at(
    client: &Client,
    server: &Planledger,
    token: &str,
    name: &str,
    position: u64,
) -> Value {
    for _ in 0..600 {
        let status = projection(client, server, token, name).await;
        if status["poison"]["position"] == position {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{name} did not stop at {position}: {}",
        projection(client, server, token, name).await
    );
}

async fn quarantine(
    server: &Planledger,
    token: &str,
    name: &str,
    body: Value,
) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(server.url(&format!("/v1/projections/{name}/quarantine")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn quarantine_cli(data_dir: &std::path::Path, name: &str, position: u64) -> std::process::Output {
    Command::new(binary())
        .args(["projector", "quarantine", "--data-dir"])
        .arg(data_dir)
        .args(["--name", name, "--position", &position.to_string()])
        .args(["--reason", "written by a newer build", "--by", "ops-oncall"])
        .output()
        .expect("run planledger projector quarantine")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_stop_each_projector_until_an_operator_quarantines_them() {
    let data = tempfile::tempdir().expect("data dir");
    let mut server = Planledger::start_in(data.path(), &[]);
    let client = Client::new();
    let admin = server.token("acme", "ana", "admin");
    let seeded = seed_plan(&server, &client, &admin, "q3", "ana").await;
    server.terminate();

    let checkin_version =
        planledger_domain::event::current_version("CheckInRecorded").expect("known type");
    let poison = append_raw(
        data.path(),
        &[
            (
                "GoalRenamed",
                1,
                r#"{"goal_id":"signups","title":"Sign-ups"}"#,
            ),
            ("CheckInRecorded", checkin_version, r#"{"goal_id":42}"#),
        ],
    )
    .await;
    let (unknown, undecodable) = (poison[0], poison[1]);
    assert_eq!((unknown, undecodable), (seeded + 1, seeded + 2));

    let server = Planledger::start_in(data.path(), &[]);
    let after = client
        .command(
            &server,
            &admin,
            "q3",
            json!({"type": "RecordCheckIn", "data": {"goal_id": "signups", "value": 170.0, "confidence": 0.8}}),
        )
        .await;

    // Every projector stops at the unknown type, with its position and why.
    for name in ["progress", "accountability", "agility"] {
        let status = stopped_at(&client, &server, &admin, name, unknown).await;
        assert_eq!(status["state"], "stopped");
        assert_eq!(status["checkpoint"], seeded);
        assert_eq!(status["poison"]["event_type"], "GoalRenamed");
        assert_eq!(status["poison"]["stream"], "acme/q4");
        let error = status["error"].as_str().unwrap_or_default();
        assert!(error.contains("GoalRenamed"), "{error}");
    }
    let (status, body) = readyz(&server).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let progress = &body["components"]["progress"];
    assert_eq!(progress["ready"], false);
    assert_eq!(progress["detail"]["poison"]["position"], unknown);
    assert_ne!(
        progress["detail"]["poison"]["stream"], "acme/q4",
        "readyz answers without a token: no tenant's stream id"
    );
    let metrics = metrics(&server).await;
    assert!(
        metrics.contains(&format!(
            "planledger_projector_poison_position{{projection=\"progress\"}} {unknown}"
        )),
        "the poison position is a metric:\n{metrics}"
    );

    // Over HTTP: a wrong position is refused, the right one is recorded and the projector
    // moves on to the next poison event (a payload that does not decode).
    let (status, body) = quarantine(
        &server,
        &admin,
        "progress",
        json!({"position": undecodable, "reason": "not yet"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "quarantine_refused");
    let viewer = server.token("acme", "vic", "viewer");
    let (status, _) = quarantine(
        &server,
        &viewer,
        "progress",
        json!({"position": unknown, "reason": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "quarantine is for admins");
    let (status, record) = quarantine(
        &server,
        &admin,
        "progress",
        json!({"position": unknown, "reason": "GoalRenamed comes from a newer build"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{record}");
    assert_eq!(record["event_type"], "GoalRenamed");
    assert_eq!(record["position"], unknown);
    assert!(record["by"].as_str().unwrap_or_default().contains("ana"));
    let status = stopped_at(&client, &server, &admin, "progress", undecodable).await;
    assert!(
        status["error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot be projected"),
        "{status}"
    );
    let (_, body) = readyz(&server).await;
    assert_eq!(
        body["components"]["progress"]["detail"]["poison"]["position"],
        undecodable
    );
    let (status, _) = quarantine(
        &server,
        &admin,
        "progress",
        json!({"position": undecodable, "reason": "corrupt payload"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = client
        .get(
            &server.base_url,
            &admin,
            &format!("/v1/plans/q3/progress?min_position={after}"),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "progress continues past both: {body}"
    );
    let progress = projection(&client, &server, &admin, "progress").await;
    assert_eq!(progress["state"], "live");
    assert!(progress["poison"].is_null());
    let listed: Vec<u64> = progress["quarantined"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|q| q["position"].as_u64().expect("position"))
        .collect();
    assert_eq!(listed, vec![unknown, undecodable]);

    // With the service stopped: the command line quarantines for the other projectors.
    let mut server = server;
    server.terminate();
    let output = quarantine_cli(data.path(), "accountability", unknown);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("GoalRenamed") && printed.contains("ops-oncall"),
        "{printed}"
    );
    // A position of the local log may be quarantined ahead of the projector reaching it.
    let output = quarantine_cli(data.path(), "accountability", undecodable);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = quarantine_cli(data.path(), "agility", unknown);
    assert!(output.status.success());
    let output = quarantine_cli(data.path(), "agility", unknown);
    assert!(!output.status.success(), "a position is quarantined once");

    let server = Planledger::start_in(data.path(), &[]);
    let (status, _) = client
        .get(
            &server.base_url,
            &admin,
            &format!("/v1/plans/q3/accountability?min_position={after}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "accountability passed over both");
    let agility = stopped_at(&client, &server, &admin, "agility", undecodable).await;
    assert_eq!(agility["state"], "stopped");
    let quarantined = &agility["quarantined"][0];
    assert_eq!(quarantined["position"], unknown);
    assert_eq!(quarantined["by"], "ops-oncall");
    assert_eq!(quarantined["reason"], "written by a newer build");
    let (status, _) = readyz(&server).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "agility is still stopped"
    );
    let progress = projection(&client, &server, &admin, "progress").await;
    assert_eq!(
        progress["quarantined"].as_array().map(Vec::len),
        Some(2),
        "quarantines survive a restart"
    );

    // A rebuild passes over the quarantined positions too.
    let mut server = server;
    server.terminate();
    let output = Command::new(binary())
        .args(["replay", "--projection", "progress", "--data-dir"])
        .arg(data.path())
        .output()
        .expect("run replay");
    assert!(
        output.status.success(),
        "the rebuild passes over the quarantined events: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = Command::new(binary())
        .args(["replay", "--projection", "agility", "--data-dir"])
        .arg(data.path())
        .output()
        .expect("run replay");
    assert!(
        !output.status.success(),
        "a rebuild stops at an event that is not quarantined"
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot be projected"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
