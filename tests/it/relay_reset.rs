//! The stream purged behind a running service's back: the relay halts (logged, in `/readyz`
//! and as `planledger_relay_halted{reason}`), commands keep working, and after
//! `planledger relay reset` the stream mirrors the log exactly once again.

use std::process::Command;
use std::time::Duration;

use crate::relay_support::{assert_stream_mirrors_log, open_store, stream_counts};
use async_nats::jetstream;
use planledger_e2e::client::{Client, metrics, seed_plan};
use planledger_e2e::nats::NatsServer;
use planledger_e2e::server::{Planledger, binary};
use reqwest::StatusCode;
use serde_json::{Value, json};

const STREAM: &str = "PLANLEDGER_EVENTS";

/// Polls `/readyz` (bounded) until `check` holds for it.
async fn readyz_until(
    server: &Planledger,
    what: &str,
    check: impl Fn(StatusCode, &Value) -> bool,
) -> Value {
    for _ in 0..600 {
        let response = reqwest::get(server.url("/readyz")).await.expect("readyz");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON");
        if check(status, &body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz never showed {what}; log:\n{}", server.log());
}

/// Polls the stream (bounded) until it exists and holds `messages` messages.
async fn wait_messages(url: &str, messages: u64) {
    let js = jetstream::new(async_nats::connect(url).await.expect("connect"));
    for _ in 0..600 {
        if let Ok(Some(mut stream)) = planledger_bus::find_stream(&js, STREAM).await
            && let Ok(info) = stream.info().await
            && info.state.messages >= messages
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the stream never held {messages} messages");
}

fn check_in(value: f64) -> Value {
    json!({"type": "RecordCheckIn", "data": {"goal_id": "signups", "value": value, "confidence": 0.6}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_stream_halts_the_relay_until_relay_reset_republishes_the_log() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().expect("data dir");
    let mut server = Planledger::start_in(data.path(), &["--nats", &nats.url()]);
    let client = Client::new();
    let token = server.token("acme", "ana", "admin");
    let seeded = seed_plan(&server, &client, &token, "q3", "ana").await;
    wait_messages(&nats.url(), seeded).await;

    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("connect"));
    js.get_stream(STREAM)
        .await
        .expect("stream")
        .purge()
        .await
        .expect("the test purges the stream");

    // The relay finds the purge (at its next check) and halts.
    let body = readyz_until(&server, "a halted relay", |status, body| {
        status == StatusCode::SERVICE_UNAVAILABLE
            && body["components"]["relay"]["detail"]["state"] == "halted"
    })
    .await;
    let relay = &body["components"]["relay"];
    assert_eq!(relay["ready"], false);
    assert_eq!(relay["detail"]["halted"], "stream_purged");
    assert!(
        relay["detail"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("planledger relay reset")),
        "{relay}"
    );
    let metrics = metrics(&server).await;
    assert!(
        metrics.contains("planledger_relay_halted{reason=\"stream_purged\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("planledger_relay_halted{reason=\"stream_deleted\"} 0"));
    assert!(
        server.log().contains("relay halted"),
        "the halt is logged:\n{}",
        server.log()
    );

    // Commands still succeed; nothing goes into the purged stream.
    let after = client.command(&server, &token, "q3", check_in(160.0)).await;
    assert_eq!(stream_counts(&nats.url(), STREAM).await, (0, seeded));
    server.terminate();

    let output = Command::new(binary())
        .args(["relay", "reset", "--data-dir"])
        .arg(data.path())
        .args(["--nats", &nats.url()])
        .output()
        .expect("run planledger relay reset");
    assert!(
        output.status.success(),
        "relay reset failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains(&format!("republished positions 1 to {after}")),
        "{printed}"
    );
    {
        let store = open_store(data.path());
        assert_stream_mirrors_log(&nats.url(), STREAM, &store).await;
    }

    let mut server = Planledger::start_in(data.path(), &["--nats", &nats.url()]);
    let last = client.command(&server, &token, "q3", check_in(170.0)).await;
    wait_messages(&nats.url(), last).await;
    readyz_until(&server, "a ready relay", |status, body| {
        status == StatusCode::OK && body["components"]["relay"]["detail"]["state"] == "caught_up"
    })
    .await;
    server.terminate();
    let store = open_store(data.path());
    assert_stream_mirrors_log(&nats.url(), STREAM, &store).await;
}
