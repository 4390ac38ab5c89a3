//! Cluster mode, one partition: `planledger serve --log-commit jetstream` on the shipped 3-server
//! JetStream cluster (R3, `sync_interval: always`) on loopback. The partition's stream is the
//! log and each node's RocksDB log is a cache of it. Every test starts its own cluster and
//! processes and kills them at the end.
//!
//! What is checked every time: every command a node acknowledged is in the log once, at the
//! positions and with the event ids it was answered with; positions and each plan's versions
//! are gap-free; a node started on an empty data directory catches up from the stream while
//! checking every event's position, `prev_hash`, hash and version (so its log *is* a verified
//! copy of the stream); and each node's cache is a prefix of the stream.

use std::path::Path;
use std::time::Duration;

use planledger_e2e::cluster::NatsCluster;
use planledger_e2e::load::{CommandLoad, LogContents};
use planledger_e2e::server::{Planledger, share_jwt_key};
use rand::Rng;
use serde_json::Value;

const WRITERS: usize = 6;

/// Starts a writer node for partition 0 in `data_dir`, with `keys`' JWT signing key (so one
/// token works on every node) when given.
fn node(cluster: &NatsCluster, data_dir: &Path, keys: Option<&Path>) -> Planledger {
    std::fs::create_dir_all(data_dir).expect("data dir");
    if let Some(keys) = keys {
        share_jwt_key(keys, data_dir);
    }
    let urls = cluster.urls().join(",");
    Planledger::start_in(
        data_dir,
        &[
            "--log-commit",
            "jetstream",
            "--nats",
            &urls,
            "--partition",
            "0",
            "--rate-limit-per-second",
            "0",
        ],
    )
}

/// Every envelope of the log a node serves, as JSON, in order (`GET /v1/events`).
async fn events(server: &Planledger, token: &str) -> Vec<Value> {
    let client = reqwest::Client::new();
    let mut all = Vec::new();
    let mut from = 1u64;
    loop {
        let page: Value = client
            .get(server.url(&format!("/v1/events?from_position={from}&limit=1000")))
            .bearer_auth(token)
            .send()
            .await
            .expect("read the log")
            .json()
            .await
            .expect("a page");
        let batch = page["events"].as_array().expect("events").clone();
        if batch.is_empty() {
            return all;
        }
        from = batch.last().expect("non-empty")["position"]
            .as_u64()
            .expect("position")
            + 1;
        all.extend(batch);
    }
}

/// Waits until the node answers `/readyz` with 200 (its cache caught up).
async fn ready(server: &Planledger) {
    assert!(
        server.wait_ready().await,
        "the node never became ready; log:\n{}",
        server.log()
    );
}

/// A node on a fresh data directory: it rebuilds the whole log from the stream, verifying it.
async fn fresh_copy(cluster: &NatsCluster, keys: &Path) -> (tempfile::TempDir, Planledger) {
    let dir = tempfile::tempdir().expect("dir");
    let copy = node(cluster, dir.path(), Some(keys));
    ready(&copy).await;
    (dir, copy)
}

/// A one-partition cluster with one writer node under a seeded load (not started yet): the
/// cluster, the node's parent directory, the node, an admin token and the load.
struct Scenario {
    cluster: NatsCluster,
    _dir: tempfile::TempDir,
    server: Planledger,
    token: String,
    load: CommandLoad,
}

async fn one_node_under_load() -> Scenario {
    let cluster = NatsCluster::start();
    cluster.init_planledger(1);
    let dir = tempfile::tempdir().expect("dir");
    let server = node(&cluster, &dir.path().join("node"), None);
    ready(&server).await;
    let token = server.token("acme", "writer", "admin");
    let load = CommandLoad::seed(&server, &token, WRITERS).await;
    Scenario {
        cluster,
        _dir: dir,
        server,
        token,
        load,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_log_survives_sigkill_under_load() {
    let Scenario {
        cluster,
        _dir,
        mut server,
        token,
        mut load,
    } = one_node_under_load().await;
    let mut rng = rand::rng();
    for cycle in 1..=10 {
        load.start();
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..500))).await;
        server.kill();
        load.stop().await;
        let (verified, printed) = server.verify();
        assert!(
            verified,
            "cycle {cycle}: verify of the cache failed: {printed}"
        );
        tokio::task::block_in_place(|| server.restart());
        ready(&server).await;
        let acked = load.acked();
        LogContents::read(&server, &token)
            .await
            .assert_holds(&acked, &format!("cycle {cycle}"));
    }
    load.start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    load.stop().await;
    let acked = load.acked();
    let log = LogContents::read(&server, &token).await;
    log.assert_holds(&acked, "at the end");
    // The node's cache equals a copy rebuilt from the stream alone.
    let (_copy_dir, copy) = fresh_copy(&cluster, &server.data_dir).await;
    assert_eq!(
        events(&copy, &token).await,
        events(&server, &token).await,
        "the cache is the stream"
    );
    println!(
        "cluster crash loop: 10 SIGKILLs, {} commands acknowledged, {} events in the stream, refusals {:?}",
        acked.len(),
        log.events.len(),
        load.refusals()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_cache_is_rebuilt_from_the_stream_and_still_answers_repeats() {
    let Scenario {
        cluster: _cluster,
        _dir,
        mut server,
        token,
        mut load,
    } = one_node_under_load().await;
    load.start();
    tokio::time::sleep(Duration::from_millis(800)).await;
    load.stop().await;
    let before = events(&server, &token).await;
    let acked = load.acked();
    assert!(!acked.is_empty(), "the load acknowledged commands");

    server.terminate();
    // The node's cache and read models go; its keys stay.
    std::fs::remove_dir_all(server.data_dir.join("log")).expect("delete the cache");
    let _ = std::fs::remove_dir_all(server.data_dir.join("projections"));
    tokio::task::block_in_place(|| server.restart());
    ready(&server).await;
    assert_eq!(
        events(&server, &token).await,
        before,
        "rebuilt byte for byte from the stream"
    );
    // `/metrics` tells the partition's state once the metrics task has run (every second).
    let mut serving = None;
    for _ in 0..50 {
        serving = server
            .metric("planledger_partition_state", "state=\"serving\"")
            .await;
        if serving == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(serving, Some(1.0), "the partition is reported serving");
    assert_eq!(
        server
            .metric("planledger_partition_state", "state=\"catching_up\"")
            .await,
        Some(0.0)
    );
    let (verified, printed) = {
        server.terminate();
        let result = server.verify();
        tokio::task::block_in_place(|| server.restart());
        ready(&server).await;
        result
    };
    assert!(verified, "the rebuilt cache verifies: {printed}");

    // A command sent again with an acknowledged key is answered as a repeat.
    let first = &acked[0];
    let client = reqwest::Client::new();
    let answer: Value = client
        .post(server.url(&format!("/v1/plans/{}/commands", first.plan)))
        .bearer_auth(&token)
        .header("Idempotency-Key", &first.key)
        .json(&serde_json::json!({"type": "RecordCheckIn", "data": {
            "goal_id": "signups",
            "value": 100.0 + first.key.rsplit('-').next().and_then(|n| n.parse::<f64>().ok()).expect("key number"),
            "confidence": 0.5}}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["deduplicated"], true, "{answer}");
    assert_eq!(
        answer["events"][0]["position"].as_u64(),
        Some(first.events[0].0),
        "the first answer again: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_on_one_partition_never_fork() {
    let cluster = NatsCluster::start();
    cluster.init_planledger(1);
    let dir = tempfile::tempdir().expect("dir");
    // Nothing but the stream's compare-and-append stops either node (no ownership yet).
    let a = node(&cluster, &dir.path().join("a"), None);
    ready(&a).await;
    let token = a.token("acme", "writer", "admin");
    let mut load_a = CommandLoad::seed(&a, &token, WRITERS)
        .await
        .allowing_conflicts();
    // Started once the plans exist, so its cache has them; from then on it learns of a's
    // appends only when its own commit is refused.
    let b = node(&cluster, &dir.path().join("b"), Some(&a.data_dir));
    ready(&b).await;
    let mut load_b = CommandLoad::on_existing_plans(&b, &token, WRITERS, "b-");
    load_a.start();
    load_b.start();
    tokio::time::sleep(Duration::from_secs(4)).await;
    load_a.stop().await;
    load_b.stop().await;
    let mut acked = load_a.acked();
    acked.extend(load_b.acked());
    let refusals_b = load_b.refusals();
    let refusals_a = load_a.refusals();

    // One history: a node that was not involved rebuilds it from the stream, checking every
    // hash, link and version; every acknowledged command is in it once, where it was answered.
    let (_copy_dir, copy) = fresh_copy(&cluster, &a.data_dir).await;
    let log = LogContents::read(&copy, &token).await;
    log.assert_holds(&acked, "after two writers");
    // Each writer's cache is a prefix of it.
    let full = events(&copy, &token).await;
    for (name, writer) in [("a", &a), ("b", &b)] {
        let cache = events(writer, &token).await;
        assert_eq!(
            cache[..],
            full[..cache.len()],
            "writer {name}'s cache is a prefix of the stream"
        );
    }
    let moved: u64 = refusals_a
        .iter()
        .chain(&refusals_b)
        .filter(|(refusal, _)| refusal.code == "partition_moved")
        .map(|(_, n)| n)
        .sum();
    println!(
        "two writers: {} commands acknowledged ({} by b), {} events, {moved} refused partition_moved; a: {refusals_a:?}; b: {refusals_b:?}",
        acked.len(),
        load_b.acked().len(),
        log.events.len()
    );
    // The fence was exercised: a writer whose cache was behind the stream tried to commit and
    // was refused with nothing stored (which of the two wins the races is up to timing).
    assert!(
        moved > 0,
        "a stale writer's commit was refused as partition_moved at least once"
    );
}

/// The member leading `stream` right now, if it has one (as its stream info says).
pub(crate) async fn leader_now(client: &async_nats::Client, stream: &str) -> Option<String> {
    let js = async_nats::jetstream::new(client.clone());
    // The lookup fetches the stream's info: one request, not two.
    let stream = js.get_stream(stream).await.ok()?;
    stream
        .cached_info()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
}

/// The name of the member leading the partition stream (asked again while the cluster is busy
/// electing one).
pub(crate) async fn stream_leader(cluster: &NatsCluster) -> String {
    let servers: Vec<async_nats::ServerAddr> = cluster
        .urls()
        .iter()
        .map(|url| url.parse().expect("a server address"))
        .collect();
    let client = async_nats::connect(servers).await.expect("connect");
    for _ in 0..60 {
        if let Some(leader) = leader_now(&client, "PLANLEDGER_P00").await {
            return leader;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "the partition stream has no leader; logs:\n{}",
        cluster.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_or_pausing_the_stream_leader_under_load_loses_nothing_acknowledged() {
    let Scenario {
        mut cluster,
        _dir,
        server,
        token,
        mut load,
    } = one_node_under_load().await;

    load.start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leader = stream_leader(&cluster).await;
    cluster.kill(&leader);
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| cluster.restart(&leader));
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.stop().await;
    let after_kill = load.acked().len();

    load.start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leader = stream_leader(&cluster).await;
    cluster.pause(&leader);
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.resume(&leader);
    tokio::time::sleep(Duration::from_secs(2)).await;
    load.stop().await;
    // Whatever was still unanswered is answered now, with its key.
    load.start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    load.stop().await;

    let acked = load.acked();
    assert!(
        acked.len() > after_kill,
        "commands were taken again after the leader came back: {:?}",
        load.refusals()
    );
    let (_copy_dir, copy) = fresh_copy(&cluster, &server.data_dir).await;
    LogContents::read(&copy, &token)
        .await
        .assert_holds(&acked, "after the leader was killed and paused");
    println!(
        "stream leader faults: {} acknowledged ({after_kill} by the end of the kill), refusals {:?}",
        acked.len(),
        load.refusals()
    );
}
