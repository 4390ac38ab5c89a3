//! The service over the 3-node JetStream cluster of `deploy/nats/cluster` (its shipped configs,
//! on loopback ports): with R3 events, the stream leader SIGKILLed mid-way and restarted, the
//! event stream still holds every event exactly once, in position order.

use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use planledger_bus::header_position;
use planledger_e2e::client::{Client, seed_plan};
use planledger_e2e::cluster::{MEMBERS, NatsCluster};
use planledger_e2e::server::Planledger;
use serde_json::json;

const STREAM: &str = "PLANLEDGER_EVENTS";

/// A client connected to whichever member answers first.
async fn connect(urls: &[String]) -> Result<async_nats::Client, async_nats::ConnectError> {
    let servers: Vec<async_nats::ServerAddr> = urls
        .iter()
        .map(|url| url.parse().expect("a member URL parses"))
        .collect();
    async_nats::connect(servers).await
}

/// The stream's info as some live member answers it (the leader may be moving).
async fn stream_info(urls: &[String]) -> jetstream::stream::Info {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let error = match connect(urls).await {
            Ok(client) => match jetstream::new(client).get_stream(STREAM).await {
                Ok(mut stream) => match stream.info().await {
                    Ok(info) => return info.clone(),
                    Err(error) => format!("stream info: {error}"),
                },
                Err(error) => format!("get stream: {error}"),
            },
            Err(error) => format!("connect: {error}"),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "no member answers for stream {STREAM}: {error}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads the whole stream, (stream sequence, Planledger-Position header) per message, once it
/// holds `expected` messages (the relay caught up). Retries through leader elections.
async fn read_all(urls: &[String], expected: u64) -> Vec<(u64, u64)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut out = Vec::new();
    loop {
        out.clear();
        if stream_info(urls).await.state.messages >= expected
            && let Ok(client) = connect(urls).await
            && let Ok(stream) = jetstream::new(client).get_stream(STREAM).await
            && let Ok(consumer) = stream
                .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
                .await
            && let Ok(mut messages) = consumer.messages().await
        {
            while let Ok(Some(Ok(message))) =
                tokio::time::timeout(Duration::from_secs(2), messages.next()).await
            {
                let info = message.info().expect("a JetStream message");
                let position = message
                    .headers
                    .as_ref()
                    .and_then(header_position)
                    .expect("every message carries its position");
                out.push((info.stream_sequence, position));
                if out.len() as u64 >= expected {
                    return out;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream never yielded {expected} messages (read {})",
            out.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Records `count` check-ins on p1's goal and returns the last position.
async fn check_ins(
    client: &Client,
    server: &Planledger,
    token: &str,
    count: u32,
    confidence: f64,
) -> u64 {
    let mut last = 0;
    for n in 0..count {
        last = client
            .command(
                server,
                token,
                "p1",
                json!({"type": "RecordCheckIn", "data": {
                    "goal_id": "signups", "value": 150.0 + f64::from(n), "confidence": confidence}}),
            )
            .await;
    }
    last
}

#[tokio::test]
async fn events_survive_the_stream_leader_dying_on_the_shipped_cluster() {
    let mut cluster = NatsCluster::start();
    let urls = cluster.urls();
    // One seed, as the shipped configs suggest: the service learns the other members from it.
    let server = Planledger::start(&["--nats", &cluster.url("n1"), "--nats-replicas", "3"]);
    let token = server.token("acme", "ana", "planner");
    let client = Client::new();
    seed_plan(&server, &client, &token, "p1", "ana").await;
    let mut last = check_ins(&client, &server, &token, 20, 0.6).await;
    let info = stream_info(&urls).await;
    assert_eq!(
        info.config.num_replicas, 3,
        "the relay created an R3 stream"
    );
    let before = read_all(&urls, last).await;
    assert_eq!(before.len() as u64, last, "{}", cluster.logs());

    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("an R3 stream has a leader");
    assert!(MEMBERS.contains(&leader.as_str()), "leader {leader}");
    // Kill the leader right after a run of check-ins, while the relay is still publishing them,
    // and keep appending: appends never wait for NATS, and the relay goes on once a new leader
    // is elected.
    check_ins(&client, &server, &token, 10, 0.7).await;
    cluster.kill(&leader);
    last = check_ins(&client, &server, &token, 30, 0.7).await;
    let during = read_all(&urls, last).await;
    assert_eq!(during.len() as u64, last);
    // Exactly: a message published twice at the end would not shift any sequence.
    assert_eq!(stream_info(&urls).await.state.messages, last);
    let new_leader = stream_info(&urls)
        .await
        .cluster
        .and_then(|c| c.leader)
        .expect("a new leader");
    assert_ne!(new_leader, leader, "another member leads after the kill");

    cluster.restart(&leader);
    last = check_ins(&client, &server, &token, 5, 0.8).await;
    let after = read_all(&urls, last).await;
    for messages in [&before, &during, &after] {
        let expected: Vec<(u64, u64)> = (1..=messages.len() as u64).map(|p| (p, p)).collect();
        assert_eq!(
            *messages,
            expected,
            "every event once, sequence = position\n{}",
            cluster.logs()
        );
    }
    assert_eq!(after.len() as u64, last);
    assert_eq!(stream_info(&urls).await.state.messages, last);
}
