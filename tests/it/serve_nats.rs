//! The whole binary with NATS: commands over HTTP are published to JetStream by `serve`'s relay,
//! exactly once, even when the service is killed with SIGKILL and restarted.

use std::time::Duration;

use futures::StreamExt;
use planledger_bus::header_position;
use planledger_e2e::nats::NatsServer;
use planledger_e2e::server::Planledger;
use serde_json::json;

async fn command(
    http: &reqwest::Client,
    server: &Planledger,
    token: &str,
    body: serde_json::Value,
) {
    let response = http
        .post(server.url("/v1/plans/p1/commands"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = response.status();
    assert!(
        status.is_success(),
        "{status}: {}",
        response.text().await.unwrap_or_default()
    );
}

/// Reads every message of the stream in order: (sequence, Planledger-Position header, subject).
async fn stream_messages(url: &str, expected: usize) -> Vec<(u64, u64, String)> {
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < expected && tokio::time::Instant::now() < deadline {
        out.clear();
        if let Ok(stream) = js.get_stream("PLANLEDGER_EVENTS").await {
            let consumer = stream
                .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
                .await
                .expect("ordered consumer");
            let mut messages = consumer.messages().await.expect("messages");
            while let Ok(Some(Ok(message))) =
                tokio::time::timeout(Duration::from_millis(500), messages.next()).await
            {
                let info = message.info().expect("jetstream message");
                let position = message
                    .headers
                    .as_ref()
                    .and_then(header_position)
                    .expect("position header");
                out.push((info.stream_sequence, position, message.subject.to_string()));
            }
        }
        if out.len() < expected {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    out
}

#[tokio::test]
async fn serve_publishes_every_event_once_across_a_sigkill() {
    let nats = NatsServer::start();
    let url = nats.url();
    let mut server = Planledger::start(&["--nats", &url]);
    let token = server.token("acme", "ana", "planner");
    let http = reqwest::Client::new();
    let day = |d: i64| {
        let t = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * d);
        t.strftime("%Y-%m-%d").to_string()
    };
    command(&http, &server, &token, json!({"type": "CreatePlan", "data": {"title": "t", "starts_on": day(-1), "ends_on": day(60), "checkin_cadence_days": 7}})).await;
    command(
        &http,
        &server,
        &token,
        json!({"type": "DefineGoal", "data": {"goal_id": "g1", "title": "g", "due": day(30)}}),
    )
    .await;
    for n in 0..20 {
        command(&http, &server, &token, json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "confidence": 0.5, "note": format!("n{n}")}})).await;
    }
    server.kill();
    server.restart();
    let http = reqwest::Client::new();
    for n in 0..10 {
        command(&http, &server, &token, json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "confidence": 0.6, "note": format!("m{n}")}})).await;
    }
    let messages = stream_messages(&url, 32).await;
    assert_eq!(messages.len(), 32, "one message per event: {messages:?}");
    for (index, (sequence, position, subject)) in messages.iter().enumerate() {
        assert_eq!(*sequence, index as u64 + 1);
        assert_eq!(*position, index as u64 + 1, "published in position order");
        assert!(subject.starts_with("planledger.evt.acme.p1."), "{subject}");
    }
    assert!(messages[0].2.ends_with(".PlanCreated"));
}
