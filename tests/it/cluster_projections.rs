//! Read models in cluster mode: `planledger projector --cluster` runs one runtime per
//! partition into one read model, each on its own durable consumer of its partition's stream.
//!
//! What is shown, on a fresh 3-server JetStream cluster with 4 partitions and one writer node:
//! - SIGKILLed repeatedly while commands flow, the projector ends with a model whose facts are
//!   byte-identical to a clean build's (a new projector on an empty directory), as is a
//!   coordinated rebuild's (`POST /v1/projections/progress/rebuild`, which switches once every
//!   partition has caught up; SIGKILLed once while it runs), and to a single-log model built from the same events in a
//!   different interleaving of the partitions (records are per plan, so it must not matter),
//!   and to the model an embedded single node (`serve --no-nats`) builds from the same
//!   commands (each instant written as its rank in its record: the single node decides the
//!   commands later, and an event carries the time its command was decided at);
//! - a query given the bookmark of a just-acknowledged command sees that command; one naming
//!   a position not reached yet is 503 once the bounded wait is over, and `?min_position=`
//!   (a single log's position) is refused;
//! - an event no build knows, in one partition, stops only that partition's runtime, at
//!   (partition, position); a quarantine naming the partition lets it pass over the event, the
//!   record is listed under that partition, and live model, rebuild and an offline quarantine
//!   after the model was deleted all give the model of the same events without it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use planledger_bus::{JetStreamSource, JetStreamSourceConfig};
use planledger_e2e::cluster::NatsCluster;
use planledger_e2e::load::CommandLoad;
use planledger_e2e::server::{Planledger, share_jwt_key};
use planledger_projections::{
    Delivery, EventSource, RuntimeOptions, SourceError, SourceHead, is_bookkeeping_key,
};
use planledger_store::{
    Commit, EventStore, LogHealth, PartitionCount, Position, StoreOptions, StreamId,
};
use serde_json::Value;

use crate::cluster_nodes::{wait_spread, writer};

const PARTITIONS: u32 = 4;
const TENANT: &str = "acme";

/// The last sequence (== last position) of each partition stream.
async fn stream_heads(nats: &NatsCluster) -> BTreeMap<u32, u64> {
    let client = planledger_bus::connect(&nats.urls().join(","), "cluster-projections-test")
        .await
        .expect("connect to NATS");
    let js = async_nats::jetstream::new(client);
    let mut heads = BTreeMap::new();
    for p in 0..PARTITIONS {
        let name = planledger_proto::subjects::partition_stream_name(p);
        let mut stream = js.get_stream(&name).await.expect("partition stream");
        let info = stream.info().await.expect("stream info");
        heads.insert(p, info.state.last_sequence);
    }
    heads
}

/// Each partition's checkpoint and the live generation, from the projector's
/// `GET /v1/projections`.
async fn checkpoints(projector: &Planledger, token: &str) -> Option<(BTreeMap<u32, u64>, u64)> {
    let response = reqwest::Client::new()
        .get(projector.url("/v1/projections"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    let body: Value = response.json().await.ok()?;
    let mut found = BTreeMap::new();
    let mut generations = Vec::new();
    for status in body["projections"].as_array()? {
        if !status["rebuild"].is_null() {
            return None;
        }
        found.insert(
            status["partition"].as_u64()? as u32,
            status["checkpoint"].as_u64()?,
        );
        generations.push(status["generation"].as_u64()?);
    }
    generations.dedup();
    (generations.len() == 1).then(|| (found, generations[0]))
}

/// Waits until every partition's checkpoint is its stream's head (and no rebuild runs);
/// returns the live generation.
async fn wait_caught_up(projector: &Planledger, token: &str, heads: &BTreeMap<u32, u64>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some((found, generation)) = checkpoints(projector, token).await
            && &found == heads
        {
            return generation;
        }
        assert!(
            Instant::now() < deadline,
            "the projector never caught up with {heads:?}: {:?}\n{}",
            checkpoints(projector, token).await,
            projector.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The progress model's facts (every record but checkpoints and rebuild marks), read from its
/// database once the projector has stopped.
fn facts(data_dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = planledger_projections::open_model(data_dir, "progress").expect("open the model");
    db.dump_generation(db.live_generation())
        .expect("dump")
        .into_iter()
        .filter(|(key, _)| !is_bookkeeping_key(key))
        .collect()
}

/// A projector of the progress model over every partition, in `data_dir`.
fn projector(nats: &NatsCluster, data_dir: &Path, keys: &Path) -> Planledger {
    share_jwt_key(keys, data_dir);
    Planledger::start_projector(
        data_dir,
        "progress",
        &["--nats", &nats.urls().join(","), "--cluster"],
    )
}

/// Every event of every partition stream, per partition in position order.
async fn partition_events(nats: &NatsCluster, heads: &BTreeMap<u32, u64>) -> Vec<Vec<Delivery>> {
    let client = planledger_bus::connect(&nats.urls().join(","), "cluster-projections-test")
        .await
        .expect("connect to NATS");
    let js = async_nats::jetstream::new(client);
    let mut all = Vec::new();
    for (&p, &head) in heads {
        let mut config = JetStreamSourceConfig::for_projection(
            &planledger_proto::subjects::partition_stream_name(p),
            "check",
        );
        config.durable = format!("check-p{p}");
        let mut source = JetStreamSource::new(js.clone(), config);
        let mut events: Vec<Delivery> = Vec::new();
        while events.last().map_or(0, |d| d.position.get()) < head {
            let after = Position(events.last().map_or(0, |d| d.position.get()));
            let batch =
                tokio::time::timeout(Duration::from_secs(30), source.next_batch(after, 512))
                    .await
                    .expect("the stream delivers")
                    .expect("a batch");
            events.extend(batch);
        }
        all.push(events);
    }
    all
}

/// Deliveries in a fixed order, as one log (positions 1..=n).
struct OneLog(std::collections::VecDeque<Delivery>);

impl EventSource for OneLog {
    fn describe(&self) -> String {
        "the partitions' events as one log".into()
    }

    async fn next_batch(
        &mut self,
        _after: Position,
        max: usize,
    ) -> Result<Vec<Delivery>, SourceError> {
        let take = max.min(self.0.len());
        Ok(self.0.drain(..take).collect())
    }

    fn head(&self) -> Option<SourceHead> {
        None
    }

    async fn replay_from(&mut self, _after: Position) -> Result<Self, SourceError> {
        Err(SourceError::Closed {
            source_name: self.describe(),
        })
    }
}

/// The model a single log holding the same events builds, with the partitions interleaved as
/// `order` says (each partition's events stay in their order, as in any log).
async fn single_log_facts(events: &[Vec<Delivery>], order: &[usize]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut cursors = vec![0usize; events.len()];
    let mut merged = std::collections::VecDeque::new();
    let mut next = 1u64;
    loop {
        let mut progressed = false;
        for &p in order {
            if let Some(delivery) = events[p].get(cursors[p]) {
                cursors[p] += 1;
                let mut delivery = delivery.clone();
                delivery.position = Position(next);
                next += 1;
                merged.push_back(delivery);
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    let total = next - 1;
    let dir = tempfile::tempdir().expect("dir");
    let db = planledger_projections::open_model(dir.path(), "progress").expect("open");
    planledger_projections::rebuild_to(
        planledger_projections::projector("progress").expect("projector"),
        db,
        OneLog(merged),
        RuntimeOptions::default(),
        Position(total),
        |_| {},
    )
    .await
    .expect("rebuild");
    facts(dir.path())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_cluster_projector_equals_clean_and_coordinated_rebuilds_and_any_interleaving() {
    let nats = NatsCluster::start();
    nats.init_planledger(PARTITIONS);
    let dir = tempfile::tempdir().expect("dir");
    let node = writer(&nats, &dir.path().join("n1"), "n1", None);
    assert!(
        node.wait_ready().await,
        "the node never got ready: {}",
        node.log()
    );
    // Ready means every partition it holds is served, not that it holds them all yet.
    wait_spread(&nats, &["n1"]).await;
    let keys = node.data_dir.clone();
    let token = node.token(TENANT, "writer", "admin");
    // Twelve plans spread over the four partitions.
    let mut load = CommandLoad::seed(&node, &token, 12).await;
    load.start();

    let mut killed = projector(&nats, &dir.path().join("killed"), &keys);
    for round in 0..5 {
        tokio::time::sleep(Duration::from_millis(400 + 150 * round)).await;
        killed.kill();
        killed.restart();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    load.stop().await;
    assert!(!load.acked().is_empty(), "the load got no command through");
    let heads = stream_heads(&nats).await;
    assert!(
        heads.values().all(|&h| h > 0),
        "every partition got commands: {heads:?}"
    );
    let token = killed.token(TENANT, "ops", "admin");
    wait_caught_up(&killed, &token, &heads).await;

    // Read your writes: each answer's bookmark, given to the projector at once, shows the
    // command's version of its plan.
    let http = reqwest::Client::new();
    // (plan, key, body) of each, for the single node below.
    let mut bookmarked = Vec::new();
    for round in 0..12 {
        let plan = format!("load-{round}");
        let key = format!("bookmark-{round}");
        let body = serde_json::json!({
            "type": "RecordCheckIn",
            "data": {"goal_id": "signups", "value": 10 + round, "confidence": 0.5}
        });
        bookmarked.push((plan.clone(), key.clone(), body.clone()));
        let answer: Value = http
            .post(node.url(&format!("/v1/plans/{plan}/commands")))
            .bearer_auth(&token)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
            .expect("command")
            .json()
            .await
            .expect("answer");
        let bookmark = answer["bookmark"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"));
        assert!(answer["partition"].is_u64(), "{answer}");
        let read: Value = http
            .get(killed.url("/v1/plans"))
            .query(&[("bookmark", bookmark), ("limit", "500")])
            .bearer_auth(&token)
            .send()
            .await
            .expect("query")
            .json()
            .await
            .expect("read");
        let seen = read["plans"]
            .as_array()
            .and_then(|plans| plans.iter().find(|p| p["plan_id"] == plan.as_str()))
            .map(|p| p["version"].clone());
        assert_eq!(
            seen,
            Some(answer["version"].clone()),
            "the query with the answer's bookmark sees the command: {read}"
        );
    }
    let heads = stream_heads(&nats).await;
    wait_caught_up(&killed, &token, &heads).await;
    // The wait is bounded: a bookmark naming a position its partition has not reached is
    // answered 503 `not_caught_up` once the wait is over; `?min_position=` names a single
    // log, which a cluster has not: 400 naming the bookmark to pass instead.
    let ahead = format!(
        "pb1.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("p0={}", heads[&0] + 1_000_000))
    );
    for (query, status, code) in [
        (("bookmark", ahead.as_str()), 503, "not_caught_up"),
        (("min_position", "1"), 400, "invalid_input"),
    ] {
        let answer = http
            .get(killed.url("/v1/plans"))
            .query(&[query])
            .bearer_auth(&token)
            .send()
            .await
            .expect("query");
        assert_eq!(answer.status().as_u16(), status, "{query:?}");
        let problem: Value = answer.json().await.expect("problem");
        assert_eq!(problem["code"], code, "{problem}");
        if query.0 == "min_position" {
            assert!(problem.to_string().contains("bookmark"), "{problem}");
        }
    }
    // What the kills left, before any rebuild replaces it.
    killed.terminate();
    let after_kills = facts(&killed.data_dir);
    assert!(!after_kills.is_empty(), "the model holds facts");
    eprintln!(
        "cluster projector: {} acknowledged commands, stream heads {heads:?}, {} fact records",
        load.acked().len(),
        after_kills.len()
    );
    killed.restart();
    let generation = wait_caught_up(&killed, &token, &heads).await;

    // A coordinated rebuild: one new generation from every partition, live once all caught
    // up; the projector is SIGKILLed while it runs and resumes it.
    let started = http
        .post(killed.url("/v1/projections/progress/rebuild"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("rebuild");
    assert_eq!(
        started.status(),
        202,
        "{}",
        started.text().await.unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    killed.kill();
    killed.restart();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some((found, now)) = checkpoints(&killed, &token).await
            && now > generation
            && found == heads
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rebuild never went live: {}",
            killed.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    killed.terminate();
    let after_rebuild = facts(&killed.data_dir);

    let mut clean = projector(&nats, &dir.path().join("clean"), &keys);
    wait_caught_up(&clean, &clean.token(TENANT, "ops", "admin"), &heads).await;
    clean.terminate();
    let rebuilt = facts(&clean.data_dir);
    assert!(
        after_kills == rebuilt,
        "the SIGKILLed projector's model differs from a clean one ({} vs {} records)",
        after_kills.len(),
        rebuilt.len()
    );
    assert!(
        after_rebuild == rebuilt,
        "the coordinated rebuild (SIGKILLed once) differs from a clean build ({} vs {} records)",
        after_rebuild.len(),
        rebuilt.len()
    );

    let events = partition_events(&nats, &heads).await;
    for order in [vec![0, 1, 2, 3], vec![3, 1, 0, 2]] {
        let single = single_log_facts(&events, &order).await;
        assert!(
            single == rebuilt,
            "a single log of the same events in partition order {order:?} builds another model ({} vs {} records)",
            single.len(),
            rebuilt.len()
        );
    }
    // One partition after another, not interleaved at all.
    let sequential: Vec<Vec<Delivery>> = vec![events.concat()];
    assert!(single_log_facts(&sequential, &[0]).await == rebuilt);

    // An embedded single node (`serve --no-nats`) given the same commands, plan by plan in the
    // same order and by the same subjects, builds the same model.
    let (single, single_facts) = single_node_facts(&node, &load.acked(), &bookmarked).await;
    assert_eq!(
        single_facts.len(),
        rebuilt.len(),
        "the single node's model has as many records"
    );
    let mut instants = 0;
    for ((key, value), (cluster_key, cluster_value)) in single_facts.iter().zip(&rebuilt) {
        assert_eq!(key, cluster_key, "the same records, in the same order");
        let ((single, found), (cluster, _)) =
            (normalised_times(value), normalised_times(cluster_value));
        instants += found;
        assert!(
            single == cluster,
            "the record {} differs:\nsingle node: {}\ncluster:     {}",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(&single),
            String::from_utf8_lossy(&cluster)
        );
    }
    eprintln!(
        "embedded single node: {} fact records equal to the cluster's, {instants} distinct instants written as their ranks",
        single_facts.len()
    );
    drop(single);
    drop(node);
}

/// `record` (a plan's stored JSON) with each instant written as its rank among the record's
/// distinct instants (`"t0"`, `"t1"`, ...), every other byte kept; and how many there were.
///
/// The only thing that must differ between two services given the same commands: an event
/// carries the time its command was decided at (a plan keeps it as `created_at`, a check-in's
/// `recorded_at`, an adjustment's `at`, ...), and the single node decides each command later
/// than the cluster did. A plan's commands are decided one after another, so the order of its
/// instants, and which of them are equal (the events of one command), is the same in both.
/// Positions, partitions and event ids are in no stored fact of the progress model. Days (`effective_on`, a plan's
/// horizon) are kept: both run on the same day (a run across midnight UTC would differ).
fn normalised_times(record: &[u8]) -> (Vec<u8>, usize) {
    fn instants(value: &Value, found: &mut std::collections::BTreeSet<jiff::Timestamp>) {
        match value {
            Value::String(text) => {
                if let Ok(instant) = text.parse::<jiff::Timestamp>() {
                    found.insert(instant);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| instants(item, found)),
            Value::Object(fields) => fields.values().for_each(|field| instants(field, found)),
            _ => {}
        }
    }
    let value: Value = serde_json::from_slice(record).expect("a stored plan is JSON");
    let mut found = std::collections::BTreeSet::new();
    instants(&value, &mut found);
    let mut text = String::from_utf8(record.to_vec()).expect("stored JSON is UTF-8");
    for (rank, instant) in found.iter().enumerate() {
        text = text.replace(&format!("\"{instant}\""), &format!("\"t{rank}\""));
    }
    (text.into_bytes(), found.len())
}

/// Sends a fresh `serve --no-nats` the commands the cluster took (the load's seeds, each
/// acknowledged load command, then the bookmarked ones), checks that every plan ends at the
/// version it has on the cluster, and returns the node with its progress model's facts (read
/// once it has stopped).
async fn single_node_facts(
    cluster_node: &Planledger,
    acked: &[planledger_e2e::load::Acked],
    bookmarked: &[(String, String, Value)],
) -> (Planledger, Vec<(Vec<u8>, Vec<u8>)>) {
    let mut single = Planledger::start(&["--rate-limit-per-second", "0"]);
    assert!(single.wait_ready().await, "{}", single.log());
    let writer = single.token(TENANT, "writer", "admin");
    let ops = single.token(TENANT, "ops", "admin");
    let plans: std::collections::BTreeSet<&str> = acked
        .iter()
        .map(|a| a.plan.as_str())
        .chain(bookmarked.iter().map(|(plan, _, _)| plan.as_str()))
        .collect();
    // The load seeded load-0, load-1, ... in order, then each writer sent its plan's commands.
    CommandLoad::seed(&single, &writer, plans.len()).await;
    let http = reqwest::Client::new();
    let send = async |token: &str, plan: &str, key: &str, body: &Value| {
        let response = http
            .post(single.url(&format!("/v1/plans/{plan}/commands")))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("the single node answers");
        assert_eq!(response.status(), 200, "{plan} {key}");
    };
    for command in acked {
        send(&writer, &command.plan, &command.key, &command.body).await;
    }
    for (plan, key, body) in bookmarked {
        send(&ops, plan, key, body).await;
    }
    let version = async |server: &Planledger, token: &str, plan: &str| -> Value {
        let state: Value = http
            .get(server.url(&format!("/v1/plans/{plan}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("plan state")
            .json()
            .await
            .expect("JSON");
        state["version"].clone()
    };
    let cluster_token = cluster_node.token(TENANT, "ops", "admin");
    for plan in &plans {
        assert_eq!(
            version(&single, &ops, plan).await,
            version(cluster_node, &cluster_token, plan).await,
            "{plan} took the same commands on both"
        );
    }
    // The embedded projector applies the whole log before the node stops.
    let last = single_last_position(&single, &ops).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body: Value = http
            .get(single.url("/v1/projections"))
            .bearer_auth(&ops)
            .send()
            .await
            .expect("statuses")
            .json()
            .await
            .expect("JSON");
        let caught_up = body["projections"].as_array().is_some_and(|all| {
            all.iter()
                .any(|p| p["name"] == "progress" && p["checkpoint"] == last)
        });
        if caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the single node's projector: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    single.terminate();
    let facts = facts(&single.data_dir);
    (single, facts)
}

/// The last position of a single node's log.
async fn single_last_position(server: &Planledger, token: &str) -> u64 {
    let page: Value = reqwest::Client::new()
        .get(server.url("/v1/events?from_position=1&limit=1"))
        .bearer_auth(token)
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("JSON");
    page["last_position"]
        .as_u64()
        .unwrap_or_else(|| panic!("{page}"))
}

/// Each partition's status in the projector's `GET /v1/projections`, by partition.
async fn partition_statuses(projector: &Planledger, token: &str) -> BTreeMap<u32, Value> {
    let body: Value = reqwest::Client::new()
        .get(projector.url("/v1/projections"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /v1/projections")
        .json()
        .await
        .expect("statuses");
    body["projections"]
        .as_array()
        .unwrap_or_else(|| panic!("statuses: {body}"))
        .iter()
        .map(|status| {
            let partition = status["partition"]
                .as_u64()
                .unwrap_or_else(|| panic!("a partition: {status}"));
            (partition as u32, status.clone())
        })
        .collect()
}

/// Waits (bounded) until the projector's statuses satisfy `done`.
async fn wait_statuses(
    projector: &Planledger,
    token: &str,
    what: &str,
    done: impl Fn(&BTreeMap<u32, Value>) -> bool,
) -> BTreeMap<u32, Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let statuses = partition_statuses(projector, token).await;
        if done(&statuses) {
            return statuses;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {statuses:#?}\n{}",
            projector.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether partition `poisoned` is stopped at `position` (its checkpoint just before it) and
/// every other partition has applied its stream to its head.
fn stopped_only_at(
    statuses: &BTreeMap<u32, Value>,
    heads: &BTreeMap<u32, u64>,
    poisoned: u32,
    position: u64,
) -> bool {
    statuses.len() == heads.len()
        && statuses.iter().all(|(p, status)| {
            if *p == poisoned {
                status["state"] == "stopped"
                    && status["poison"]["position"] == position
                    && status["checkpoint"] == position - 1
            } else {
                status["poison"].is_null() && status["checkpoint"] == heads[p]
            }
        })
}

/// Whether every partition has applied its stream to its head, no rebuild running.
fn all_caught_up(statuses: &BTreeMap<u32, Value>, heads: &BTreeMap<u32, u64>) -> bool {
    statuses.len() == heads.len()
        && statuses
            .iter()
            .all(|(p, status)| status["checkpoint"] == heads[p] && status["rebuild"].is_null())
}

/// Commits an event of a type no build knows (written by a newer writer) to `plan`'s partition
/// stream, through the partition's committer as a writer node would; its position.
async fn commit_unknown_event(nats: &NatsCluster, partition: u32, plan: &str) -> u64 {
    let client = planledger_bus::connect(&nats.urls().join(","), "cluster-poison-test")
        .await
        .expect("connect to NATS");
    let config = planledger_bus::read_cluster_config(&client)
        .await
        .expect("read the cluster's configuration")
        .expect("the cluster is initialised");
    let log_id = config.partitions[partition as usize].log_id.to_string();
    let count = PartitionCount::new(config.partition_count).expect("a partition count");
    let committer = planledger_bus::JetStreamCommitter::open(
        client,
        planledger_bus::PartitionLogConfig::new(partition),
    )
    .await
    .expect("the partition's stream");
    let dir = tempfile::tempdir().expect("dir");
    let options = StoreOptions {
        commit: Commit::External(std::sync::Arc::new(committer)),
        log_id: Some(log_id),
        partition: Some((count, partition)),
        ..StoreOptions::default()
    };
    let path = dir.path().join("log");
    let store = tokio::task::spawn_blocking(move || EventStore::open(&path, options))
        .await
        .expect("open task")
        .expect("a cache of the partition opens");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(store.health(), LogHealth::Writable) {
        assert!(Instant::now() < deadline, "the cache never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let position = crate::poison_events::append_as_a_newer_writer(
        &store,
        &format!("{TENANT}/{plan}"),
        "GoalTeleported",
        1,
        r#"{"teleported": true}"#,
    )
    .await;
    tokio::task::block_in_place(|| drop(store));
    position
}

/// POST /v1/projections/progress/quarantine on the projector.
async fn quarantine(projector: &Planledger, token: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(projector.url("/v1/projections/progress/quarantine"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("quarantine request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The first plan id `<prefix>N` whose stream is in `partition`.
fn plan_in(partition: u32, prefix: &str) -> String {
    let count = PartitionCount::new(PARTITIONS).expect("a partition count");
    (0..)
        .map(|n| format!("{prefix}{n}"))
        .find(|plan| {
            let stream = StreamId::new(format!("{TENANT}/{plan}")).expect("stream id");
            count.partition_of(&stream).index() == partition
        })
        .expect("some plan id falls in every partition")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_event_in_one_partition_stops_only_that_partition_until_quarantined() {
    let nats = NatsCluster::start();
    nats.init_planledger(PARTITIONS);
    let dir = tempfile::tempdir().expect("dir");
    let node = writer(&nats, &dir.path().join("n1"), "n1", None);
    assert!(node.wait_ready().await, "{}", node.log());
    wait_spread(&nats, &["n1"]).await;
    let keys = node.data_dir.clone();
    let token = node.token(TENANT, "writer", "admin");
    let mut load = CommandLoad::seed(&node, &token, 8).await;
    load.start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    load.stop().await;

    // A newer writer's event lands in one partition (the one load-0 is in).
    let poisoned = PartitionCount::new(PARTITIONS)
        .expect("a partition count")
        .partition_of(&StreamId::new(format!("{TENANT}/load-0")).expect("stream id"))
        .index();
    let poison_plan = plan_in(poisoned, "teleported-");
    let position = commit_unknown_event(&nats, poisoned, &poison_plan).await;
    // Commands keep coming to every partition, the poisoned one included.
    let mut after = CommandLoad::on_existing_plans(&node, &token, 8, "after-poison-");
    after.start();
    tokio::time::sleep(Duration::from_millis(800)).await;
    after.stop().await;
    let heads = stream_heads(&nats).await;
    assert!(
        heads[&poisoned] > position,
        "commands after the poison: {heads:?}"
    );
    assert!(
        heads
            .iter()
            .filter(|(p, _)| **p != poisoned)
            .any(|(_, h)| *h >= position),
        "another partition holds the same position number: {heads:?}"
    );

    // Only that partition stops, at (partition, position); the others project to their heads.
    let mut projector = projector(&nats, &dir.path().join("projector"), &keys);
    let admin = projector.token(TENANT, "ops", "admin");
    let statuses = wait_statuses(
        &projector,
        &admin,
        "only the poisoned partition to stop",
        |s| stopped_only_at(s, &heads, poisoned, position),
    )
    .await;
    assert_eq!(
        statuses[&poisoned]["poison"]["event_type"], "GoalTeleported",
        "{statuses:#?}"
    );
    let ready = reqwest::Client::new()
        .get(projector.url("/readyz"))
        .send()
        .await
        .expect("/readyz")
        .status()
        .as_u16();
    assert_eq!(
        ready, 503,
        "a stopped partition makes the projector not ready"
    );

    // The quarantine names the partition: without it 400, another partition (not stopped
    // there) 409, the poisoned one 200 with the record.
    let reason = "written by a newer build";
    let (status, body) = quarantine(
        &projector,
        &admin,
        serde_json::json!({"position": position, "reason": reason}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].to_string().contains("partition"), "{body}");
    let other = (poisoned + 1) % PARTITIONS;
    let (status, body) = quarantine(
        &projector,
        &admin,
        serde_json::json!({"position": position, "partition": other, "reason": reason}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "quarantine_refused", "{body}");
    let (status, record) = quarantine(
        &projector,
        &admin,
        serde_json::json!({"position": position, "partition": poisoned, "reason": reason}),
    )
    .await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["position"], position);
    assert_eq!(record["stream"], format!("{TENANT}/{poison_plan}"));

    // The partition passes over it and catches up; the record is listed under that partition
    // only, and the model is the one a log without the event builds.
    let statuses = wait_statuses(&projector, &admin, "every partition to catch up", |s| {
        all_caught_up(s, &heads)
    })
    .await;
    for (p, status) in &statuses {
        let listed: Vec<u64> = status["quarantined"]
            .as_array()
            .map(|q| q.iter().filter_map(|r| r["position"].as_u64()).collect())
            .unwrap_or_default();
        let expected = if *p == poisoned {
            vec![position]
        } else {
            vec![]
        };
        assert_eq!(listed, expected, "partition {p}: {status}");
    }
    let mut events = partition_events(&nats, &heads).await;
    events[poisoned as usize].retain(|delivery| delivery.position.get() != position);
    let without_the_event = single_log_facts(&events, &[0, 1, 2, 3]).await;
    projector.terminate();
    assert!(
        facts(&projector.data_dir) == without_the_event,
        "the model after the quarantine differs from one built without the event"
    );

    // A rebuild passes over it too (the quarantine is kept beside every generation).
    projector.restart();
    let generation = wait_caught_up(&projector, &admin, &heads).await;
    let started = reqwest::Client::new()
        .post(projector.url("/v1/projections/progress/rebuild"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("rebuild");
    assert_eq!(started.status(), 202);
    wait_statuses(&projector, &admin, "the rebuild to go live", |s| {
        all_caught_up(s, &heads)
            && s.values()
                .all(|status| status["generation"].as_u64() > Some(generation))
    })
    .await;
    projector.terminate();
    assert!(facts(&projector.data_dir) == without_the_event);

    // There is no un-quarantine: a model rebuilt without the record (its directory deleted)
    // stops at the event again, and the offline quarantine of that partition passes over it.
    std::fs::remove_dir_all(projector.data_dir.join("projections").join("progress"))
        .expect("delete the read model");
    projector.restart();
    wait_statuses(
        &projector,
        &admin,
        "the poisoned partition to stop again",
        |s| stopped_only_at(s, &heads, poisoned, position),
    )
    .await;
    projector.terminate();
    let printed = std::process::Command::new(planledger_e2e::server::binary())
        .args(["projector", "quarantine", "--data-dir"])
        .arg(&projector.data_dir)
        .args(["--name", "progress", "--position", &position.to_string()])
        .args(["--partition", &poisoned.to_string(), "--reason", reason])
        .args(["--by", "ops-oncall"])
        .output()
        .expect("run planledger projector quarantine");
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    projector.restart();
    wait_statuses(&projector, &admin, "every partition to catch up", |s| {
        all_caught_up(s, &heads)
    })
    .await;
    projector.terminate();
    assert!(facts(&projector.data_dir) == without_the_event);
    drop(node);
}
