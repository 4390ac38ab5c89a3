//! Cluster mode with ownership: three writer nodes (`serve --log-commit jetstream --node-id`)
//! on the shipped 3-server JetStream cluster, 4 partitions, 2 s leases. Every test starts its
//! own cluster and processes and kills them at the end.
//!
//! The checker, run at the end of every test: for each partition, a node that serves only that
//! partition (`--partition p`) is started on an empty directory, so it rebuilds the partition's
//! log from its stream checking every position, `prev_hash`, hash and version; every command a
//! node acknowledged must be in its plan's partition once, at the answered positions with the
//! answered event ids. Then every writer node's cache of every partition is opened the same way:
//! it must verify and be a prefix of the stream (a cache that is not is refused as diverged).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use planledger_e2e::cluster::NatsCluster;
use planledger_e2e::load::{Acked, CommandLoad, LogContents};
use planledger_e2e::server::{Planledger, binary, share_jwt_key};
use planledger_store::{PartitionCount, StreamId};
use serde_json::Value;

const PARTITIONS: u32 = 4;
const TENANT: &str = "acme";

/// `planledger cluster status --json`.
fn cluster_status(cluster: &NatsCluster) -> Value {
    let output = Command::new(binary())
        .args(["cluster", "status", "--json", "--nats"])
        .arg(cluster.urls().join(","))
        .output()
        .expect("run planledger cluster status");
    assert!(
        output.status.success(),
        "cluster status failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cluster status prints JSON")
}

/// Owner node id of each partition, per `cluster status` (only partitions with an owner whose
/// cache is open).
fn owners(cluster: &NatsCluster) -> BTreeMap<u32, String> {
    let status = cluster_status(cluster);
    status["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .filter(|p| !p["owner"].is_null() && !p["owner"]["cache_position"].is_null())
        .map(|p| {
            (
                p["partition"].as_u64().expect("partition") as u32,
                p["owner"]["node_id"].as_str().expect("node id").to_string(),
            )
        })
        .collect()
}

/// Waits until every partition is owned and served, by the given nodes only, each of them
/// holding at least one: the leases have settled, so no partition moves under the next request.
pub(crate) async fn wait_spread(nats: &NatsCluster, ids: &[&str]) -> BTreeMap<u32, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let owned = tokio::task::block_in_place(|| owners(nats));
        let every = owned.len() == PARTITIONS as usize;
        let only = owned.values().all(|o| ids.contains(&o.as_str()));
        let each = ids.iter().all(|id| owned.values().any(|o| o == id));
        if every && only && each {
            return owned;
        }
        assert!(
            Instant::now() < deadline,
            "the partitions never spread over {ids:?}: {owned:?}; status {}",
            tokio::task::block_in_place(|| cluster_status(nats))
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The partition of one of the tenant's plans.
fn partition_of(plan: &str) -> u32 {
    PartitionCount::new(PARTITIONS)
        .expect("count")
        .partition_of(&StreamId::new(format!("{TENANT}/{plan}")).expect("stream id"))
        .index()
}

/// A writer node `id` in `data_dir`, with the JWT key of `keys` when given.
pub(crate) fn writer(
    cluster: &NatsCluster,
    data_dir: &Path,
    id: &str,
    keys: Option<&Path>,
) -> Planledger {
    writer_via(&cluster.urls().join(","), data_dir, id, keys)
}

/// As [`writer`], connecting to NATS at `nats` (e.g. through a proxy).
fn writer_via(nats: &str, data_dir: &Path, id: &str, keys: Option<&Path>) -> Planledger {
    std::fs::create_dir_all(data_dir).expect("data dir");
    if let Some(keys) = keys {
        share_jwt_key(keys, data_dir);
    }
    Planledger::start_in(
        data_dir,
        &[
            "--log-commit",
            "jetstream",
            "--nats",
            nats,
            "--node-id",
            id,
            "--lease-ttl",
            "2s",
            "--rate-limit-per-second",
            "0",
        ],
    )
}

/// A node serving one partition from `data_dir` (no leases): the checker's reader.
fn reader(cluster: &NatsCluster, data_dir: &Path, partition: u32, keys: &Path) -> Planledger {
    share_jwt_key(keys, data_dir);
    Planledger::start_in(
        data_dir,
        &[
            "--log-commit",
            "jetstream",
            "--nats",
            &cluster.urls().join(","),
            "--partition",
            &partition.to_string(),
        ],
    )
}

/// `planledger export --proof` from the partition's owner's cache (`NODE/partitions/P`, with
/// the node's digest key), as docs/operations.md says: its checkpoint is the one the cluster
/// serves for the partition, and `audit verify-export` passes with the partition's key.
async fn exports_a_partition_with_proofs_from_its_owners_cache(
    cluster: &Cluster3,
    client: &reqwest::Client,
    partition: u32,
) {
    let get = |path: String| {
        let request = client
            .get(cluster.nodes[0].url(&path))
            .bearer_auth(&cluster.token);
        async move {
            let answer = request.send().await.expect("send");
            assert_eq!(answer.status().as_u16(), 200, "{path}");
            answer.text().await.expect("a body")
        }
    };
    let keys: Value =
        serde_json::from_str(&get(format!("/v1/audit/keys?partition={partition}")).await)
            .expect("keys");
    let key = keys["keys"][0]["public_key"].as_str().expect("a key");
    // The owner: the node whose own digest key signs the partition.
    let owner = cluster
        .nodes
        .iter()
        .find(|node| {
            let output = Command::new(binary())
                .args(["audit", "public-key", "--data-dir"])
                .arg(&node.data_dir)
                .output()
                .expect("planledger audit public-key runs");
            String::from_utf8_lossy(&output.stdout).trim() == key
        })
        .expect("a node signs the partition");
    let out = tempfile::tempdir().expect("temp dir");
    let file = out.path().join(format!("p{partition}.ndjson"));
    let file_text = file.to_str().expect("UTF-8");
    let cache = owner
        .data_dir
        .join("partitions")
        .join(partition.to_string());
    let output = Command::new(binary())
        .args(["export", "--format", "ndjson", "--proof", "--data-dir"])
        .arg(&cache)
        .arg("--digest-key")
        .arg(owner.data_dir.join("digest-signing.key"))
        .args(["--to", file_text])
        .output()
        .expect("planledger export runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let checkpoint = format!("{file_text}.checkpoint");
    let written = std::fs::read_to_string(&checkpoint).expect("the checkpoint beside the file");
    assert_eq!(
        written,
        get(format!("/v1/audit/checkpoint?partition={partition}")).await,
        "the export's checkpoint is the partition's"
    );
    let output = Command::new(binary())
        .args(["audit", "verify-export", "--checkpoint", &checkpoint])
        .args(["--public-key", key, "--export", file_text])
        .output()
        .expect("planledger audit verify-export runs");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Three writer nodes on a fresh 3-server cluster, every partition owned and every node holding
/// at least one (the leases spread).
struct Cluster3 {
    nats: NatsCluster,
    dir: tempfile::TempDir,
    nodes: Vec<Planledger>,
    token: String,
}

impl Cluster3 {
    async fn start() -> Self {
        Self::start_with(NatsCluster::start(), None).await
    }

    /// Three nodes on `nats`; `n3` connects through `n3_nats` when given.
    async fn start_with(nats: NatsCluster, n3_nats: Option<String>) -> Self {
        nats.init_planledger(PARTITIONS);
        let dir = tempfile::tempdir().expect("dir");
        let first = writer(&nats, &dir.path().join("n1"), "n1", None);
        let keys = first.data_dir.clone();
        let mut nodes = vec![first];
        nodes.push(writer(&nats, &dir.path().join("n2"), "n2", Some(&keys)));
        let n3 = n3_nats.unwrap_or_else(|| nats.urls().join(","));
        nodes.push(writer_via(&n3, &dir.path().join("n3"), "n3", Some(&keys)));
        let token = nodes[0].token(TENANT, "writer", "admin");
        let this = Self {
            nats,
            dir,
            nodes,
            token,
        };
        this.wait_spread(&["n1", "n2", "n3"]).await;
        this
    }

    /// Waits until every partition is owned and served, by the given nodes only, each of them
    /// holding at least one.
    async fn wait_spread(&self, ids: &[&str]) -> BTreeMap<u32, String> {
        wait_spread(&self.nats, ids).await
    }

    fn node(&self, id: &str) -> &Planledger {
        let index: usize = id[1..].parse::<usize>().expect("n<k>") - 1;
        &self.nodes[index]
    }

    /// The checker (see the module's text). Stops the writer nodes first.
    async fn check(mut self, acked: &[Acked]) {
        for node in &mut self.nodes {
            node.terminate();
        }
        let keys = self.nodes[0].data_dir.clone();
        // The operator's check: every stream from position 1, and every cache against it.
        let mut verify = Command::new(binary());
        verify
            .args(["cluster", "verify", "--nats"])
            .arg(self.nats.urls().join(","));
        for node in &self.nodes {
            verify.arg("--cache").arg(&node.data_dir);
        }
        let output = verify.output().expect("run cluster verify");
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && printed.contains(&format!("ok: {PARTITIONS} partitions")),
            "cluster verify failed: {printed}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            printed.contains("a prefix of the stream"),
            "caches were checked: {printed}"
        );
        let mut per_partition: BTreeMap<u32, Vec<Acked>> = BTreeMap::new();
        for ack in acked {
            per_partition
                .entry(partition_of(&ack.plan))
                .or_default()
                .push(ack.clone());
        }
        let mut copies = BTreeMap::new();
        for partition in 0..PARTITIONS {
            let dir = self.dir.path().join(format!("check-{partition}"));
            let copy = reader(&self.nats, &dir, partition, &keys);
            assert!(
                copy.wait_ready().await,
                "partition {partition}'s stream does not verify: {}",
                copy.log()
            );
            let log = LogContents::read(&copy, &self.token).await;
            log.assert_holds(
                per_partition.get(&partition).map_or(&[][..], Vec::as_slice),
                &format!("partition {partition}"),
            );
            copies.insert(partition, (copy, log.events.len()));
        }
        // Every writer's cache of every partition: verifies, and is a prefix of the stream (it
        // is opened as a reader, whose start checks the cache's head against the stream).
        for node in &self.nodes {
            for partition in 0..PARTITIONS {
                let cache = node
                    .data_dir
                    .join("partitions")
                    .join(partition.to_string())
                    .join("log");
                if !cache.exists() {
                    continue;
                }
                let view = self.dir.path().join(format!(
                    "cache-{}-{partition}",
                    node.data_dir.display().to_string().replace('/', "_")
                ));
                std::fs::create_dir_all(&view).expect("view dir");
                symlink(&cache, &view.join("log"));
                let output = Command::new(binary())
                    .args(["verify", "--data-dir"])
                    .arg(&view)
                    .output()
                    .expect("run verify");
                assert!(
                    output.status.success(),
                    "the cache {} does not verify: {}{}",
                    cache.display(),
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
                let opened = reader(&self.nats, &view, partition, &keys);
                assert!(
                    opened.wait_ready().await,
                    "the cache {} is not a prefix of its stream: {}",
                    cache.display(),
                    opened.log()
                );
                let count = LogContents::read(&opened, &self.token).await.events.len();
                assert_eq!(
                    count, copies[&partition].1,
                    "the cache caught up to the stream"
                );
            }
        }
    }
}

fn symlink(target: &PathBuf, link: &Path) {
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

/// The command [`nats_command`] sends.
fn nats_command_body() -> Value {
    serde_json::json!({"type": "RecordCheckIn", "data": {
        "goal_id": "signups", "value": 7.0, "confidence": 0.5}})
}

/// A command over NATS request/reply (the JSON body), answered by whichever node gets it.
async fn nats_command(
    url: &str,
    token: &str,
    plan: &str,
    key: &str,
) -> planledger_proto::v1::CommandReply {
    use planledger_proto::Message as _;
    let client = async_nats::connect(url).await.expect("connect");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {token}").as_str());
    headers.insert("Content-Type", "application/json");
    headers.insert("Idempotency-Key", key);
    let body = nats_command_body();
    let reply = client
        .send_request(
            format!("planledger.cmd.{TENANT}.{plan}"),
            async_nats::Request::new()
                .headers(headers)
                .payload(serde_json::to_vec(&body).expect("json").into())
                .timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("a reply");
    planledger_proto::v1::CommandReply::decode(reply.payload.as_ref()).expect("a CommandReply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_takes_commands_for_every_partition() {
    let mut cluster = Cluster3::start().await;
    // A fourth process started with an existing node id (its own data directory) is another
    // instance: it takes its share of the leases, and a lease is never held twice.
    let keys = cluster.nodes[0].data_dir.clone();
    let twin = writer(
        &cluster.nats,
        &cluster.dir.path().join("n1-twin"),
        "n1",
        Some(&keys),
    );
    cluster.nodes.push(twin);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = tokio::task::block_in_place(|| cluster_status(&cluster.nats));
        let instances: std::collections::BTreeSet<String> = status["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .filter_map(|p| p["owner"]["instance_id"].as_str().map(str::to_string))
            .collect();
        if instances.len() == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the twin never got a partition: {status}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Each node's load on its own plans, all sent to that node: most go to other owners.
    let mut loads = Vec::new();
    for node in &cluster.nodes {
        let id = node
            .data_dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let mut load = CommandLoad::seed_prefixed(node, &cluster.token, 6, &format!("{id}-")).await;
        load.start();
        loads.push(load);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut acked = Vec::new();
    for load in &mut loads {
        load.stop().await;
        assert!(!load.acked().is_empty(), "every node's load was answered");
        acked.extend(load.acked());
    }
    let partitions: std::collections::BTreeSet<u32> =
        acked.iter().map(|a| partition_of(&a.plan)).collect();
    assert_eq!(
        partitions.len(),
        PARTITIONS as usize,
        "the plans cover every partition"
    );

    // A plan's state reads the same through every node.
    let client = reqwest::Client::new();
    for plan in ["n1-load-0", "n2-load-3", "n3-load-5"] {
        let mut seen = Vec::new();
        for node in &cluster.nodes {
            let state: Value = client
                .get(node.url(&format!("/v1/plans/{plan}")))
                .bearer_auth(&cluster.token)
                .send()
                .await
                .expect("read")
                .json()
                .await
                .expect("json");
            seen.push(state["version"].clone());
        }
        assert!(seen[0].is_u64(), "a version: {seen:?}");
        assert!(seen.iter().all(|v| *v == seen[0]), "{plan}: {seen:?}");
    }

    // The NATS door: any node takes a command for any partition.
    for plan in ["n1-load-0", "n2-load-1", "n3-load-2", "n1-load-4"] {
        let reply = nats_command(
            &cluster.nats.urls()[0],
            &cluster.token,
            plan,
            &format!("nats-{plan}"),
        )
        .await;
        match reply.outcome {
            Some(planledger_proto::v1::command_reply::Outcome::Ok(result)) => {
                assert_eq!(result.plan_id, plan);
                acked.push(Acked {
                    key: format!("nats-{plan}"),
                    plan: plan.to_string(),
                    body: nats_command_body(),
                    events: result
                        .events
                        .iter()
                        .map(|e| (e.position, e.event_id.clone()))
                        .collect(),
                    attempts: 1,
                    deduplicated: result.deduplicated,
                });
            }
            other => panic!("the NATS command for {plan} was refused: {other:?}"),
        }
    }

    // A partition's log through any node: the same events, all of that partition's plans.
    for partition in 0..PARTITIONS {
        let mut pages = Vec::new();
        for node in &cluster.nodes[1..3] {
            let page: Value = client
                .get(node.url(&format!("/v1/events?partition={partition}&limit=200")))
                .bearer_auth(&cluster.token)
                .send()
                .await
                .expect("read a partition's log")
                .json()
                .await
                .expect("json");
            pages.push(page["events"].clone());
        }
        let events = pages[0].as_array().expect("events");
        assert!(!events.is_empty(), "partition {partition} has events");
        assert_eq!(
            pages[0], pages[1],
            "partition {partition} reads the same through every node"
        );
        for event in events {
            let plan = event["stream"]
                .as_str()
                .expect("stream")
                .rsplit('/')
                .next()
                .expect("plan");
            assert_eq!(partition_of(plan), partition, "{event}");
        }
        let verified = client
            .get(cluster.nodes[0].url(&format!("/v1/audit/verify?partition={partition}")))
            .bearer_auth(&cluster.token)
            .send()
            .await
            .expect("verify");
        assert_eq!(
            verified.status().as_u16(),
            200,
            "partition {partition}'s chain verifies"
        );
    }
    // The signing keys are per partition (its owner's): a partition's digest names one of them.
    for partition in 0..PARTITIONS {
        let read = |path: String| {
            let request = client
                .get(cluster.nodes[2].url(&path))
                .bearer_auth(&cluster.token);
            async move {
                let answer = request.send().await.expect("send");
                assert_eq!(answer.status().as_u16(), 200, "{path}");
                answer.json::<Value>().await.expect("json")
            }
        };
        let keys = read(format!("/v1/audit/keys?partition={partition}")).await;
        let digest = read(format!("/v1/audit/digest?partition={partition}")).await;
        let listed: Vec<&Value> = keys["keys"].as_array().expect("keys").iter().collect();
        assert!(
            listed.iter().any(|k| k["key_id"] == digest["key_id"]),
            "partition {partition}'s digest is signed by a key its /v1/audit/keys lists: {digest} {keys}"
        );
        // Asked for as server-sent events, an audit route (which has no live form) is answered
        // as a single node answers it: the partition's JSON, from its owner.
        let answer = client
            .get(cluster.nodes[2].url(&format!("/v1/audit/keys?partition={partition}")))
            .header("Accept", "text/event-stream")
            .bearer_auth(&cluster.token)
            .send()
            .await
            .expect("send");
        assert_eq!(answer.status().as_u16(), 200, "partition {partition}");
        assert_eq!(answer.json::<Value>().await.expect("json"), keys);
    }
    exports_a_partition_with_proofs_from_its_owners_cache(&cluster, &client, 0).await;
    // Without ?partition= an audit route has no one log to answer for: 400 naming the parameter
    // and the range.
    for (route, accept) in [
        ("/v1/audit/keys", "application/json"),
        ("/v1/audit/digest", "application/json"),
        ("/v1/audit/verify", "application/json"),
        ("/v1/audit/digest", "text/event-stream"),
        ("/v1/audit/checkpoint", "text/event-stream"),
    ] {
        let answer = client
            .get(cluster.nodes[0].url(route))
            .header("Accept", accept)
            .bearer_auth(&cluster.token)
            .send()
            .await
            .expect("send");
        assert_eq!(answer.status().as_u16(), 400, "{route}");
        let problem: Value = answer.json().await.expect("problem");
        assert_eq!(problem["code"], "partition_required", "{route}: {problem}");
        assert_eq!(problem["errors"][0]["field"], "partition", "{problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("?partition=") && detail.contains(&format!("0 to {}", PARTITIONS - 1)),
            "{route}: {problem}"
        );
    }

    // The tenant-wide feed is served (tests/it/cluster_feed.rs); a partition it lacks is not.
    for (query, status) in [("", 200), ("?partition=9", 400)] {
        let answer = client
            .get(cluster.nodes[0].url(&format!("/v1/events{query}")))
            .bearer_auth(&cluster.token)
            .send()
            .await
            .expect("send");
        assert_eq!(answer.status().as_u16(), status, "/v1/events{query}");
    }

    // Read models are passed to their projectors (`projector --cluster`, tests/it/
    // cluster_dashboard.rs); with none running, a clear 503 naming the one to start, never a
    // partial figure. A projector's operations are its own: 501.
    let answer = client
        .get(cluster.nodes[1].url("/v1/plans"))
        .bearer_auth(&cluster.token)
        .send()
        .await
        .expect("send");
    assert_eq!(answer.status().as_u16(), 503);
    let problem: Value = answer.json().await.expect("problem");
    assert_eq!(problem["code"], "read_model_unavailable", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("planledger projector --cluster --name progress")),
        "{problem}"
    );
    let answer = client
        .get(cluster.nodes[1].url("/v1/projections"))
        .bearer_auth(&cluster.token)
        .send()
        .await
        .expect("send");
    assert_eq!(answer.status().as_u16(), 501);
    let problem: Value = answer.json().await.expect("problem");
    assert_eq!(problem["code"], "not_in_cluster_mode", "{problem}");

    // A second process on a node's data directory exits, naming the locked directory.
    let output = Command::new(binary())
        .args([
            "serve",
            "--log-commit",
            "jetstream",
            "--listen",
            "127.0.0.1:0",
            "--node-id",
            "n9",
            "--data-dir",
        ])
        .arg(&cluster.nodes[0].data_dir)
        .arg("--nats")
        .arg(cluster.nats.urls().join(","))
        .output()
        .expect("run a second process");
    let printed = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a second process on a data directory must not start"
    );
    assert!(
        printed.contains(&cluster.nodes[0].data_dir.display().to_string())
            && printed.contains("in use"),
        "{printed}"
    );
    // A node expecting another partition count refuses to start, naming both.
    let other = cluster.dir.path().join("n8");
    let output = Command::new(binary())
        .args([
            "serve",
            "--log-commit",
            "jetstream",
            "--listen",
            "127.0.0.1:0",
            "--node-id",
            "n8",
            "--partitions",
            "5",
            "--data-dir",
        ])
        .arg(&other)
        .arg("--nats")
        .arg(cluster.nats.urls().join(","))
        .output()
        .expect("run a node with another count");
    let printed = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        printed.contains("--partitions 5") && printed.contains("has 4 partitions"),
        "{printed}"
    );

    println!(
        "3 nodes, {PARTITIONS} partitions: {} commands acknowledged; refusals {:?}",
        acked.len(),
        loads.iter().map(CommandLoad::refusals).collect::<Vec<_>>()
    );
    cluster.check(&acked).await;
}

/// The first answer 200 to a command for `plan` through `node` after `since`.
async fn first_success(node: &Planledger, token: &str, plan: &str, since: Instant) -> Duration {
    let client = reqwest::Client::new();
    let deadline = since + Duration::from_secs(60);
    let mut n = 0;
    loop {
        n += 1;
        let answer = client
            .post(node.url(&format!("/v1/plans/{plan}/commands")))
            .bearer_auth(token)
            .header("Idempotency-Key", format!("failover-{plan}-{n}"))
            .json(&serde_json::json!({"type": "RecordCheckIn", "data": {
                "goal_id": "signups", "value": 1.0, "confidence": 0.5}}))
            .send()
            .await;
        if let Ok(answer) = answer
            && answer.status().is_success()
        {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{plan}'s partition never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The fault a failover test injects into the owner `n3`.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGKILL.
    Kill,
    /// SIGSTOP for 3 x TTL, then SIGCONT.
    Pause,
    /// Its NATS traffic black-holed (through a proxy) while its HTTP port stays reachable; healed
    /// after the partitions moved.
    CutOff,
}

/// Three nodes under load through every node, the victim `n3` included (its callers must never
/// get a false 200); `fault` hits `n3`; its partitions must move to the others, it must rejoin
/// unless killed, and the checker must pass.
async fn owner_fault_under_load(fault: Fault) {
    let nats = NatsCluster::start();
    let proxy = match fault {
        Fault::CutOff => {
            let target: std::net::SocketAddr = nats.url("n1")["nats://".len()..]
                .parse()
                .expect("a loopback address");
            Some(planledger_e2e::proxy::Proxy::start(target).await)
        }
        Fault::Kill | Fault::Pause => None,
    };
    let mut cluster = Cluster3::start_with(
        nats,
        proxy.as_ref().map(planledger_e2e::proxy::Proxy::nats_url),
    )
    .await;
    let owned = cluster.wait_spread(&["n1", "n2", "n3"]).await;
    let victim_partitions: Vec<u32> = owned
        .iter()
        .filter(|(_, o)| o.as_str() == "n3")
        .map(|(p, _)| *p)
        .collect();
    let mut loads = Vec::new();
    for id in ["n1", "n2", "n3"] {
        let mut load =
            CommandLoad::seed_prefixed(cluster.node(id), &cluster.token, 6, &format!("{id}-"))
                .await;
        load.start();
        loads.push(load);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A plan of one of the victim's partitions, to time the failover with.
    let probe = ["n1", "n2", "n3"]
        .iter()
        .flat_map(|id| (0..6).map(move |n| format!("{id}-load-{n}")))
        .find(|plan| victim_partitions.contains(&partition_of(plan)))
        .expect("a load plan in the victim's partitions");
    let started = Instant::now();
    match fault {
        Fault::Kill => cluster.nodes[2].kill(),
        Fault::Pause => cluster.nodes[2].pause(),
        Fault::CutOff => proxy.as_ref().expect("a cut-off test has a proxy").cut(),
    }
    let failover = first_success(cluster.node("n1"), &cluster.token, &probe, started).await;
    let moved = cluster.wait_spread(&["n1", "n2"]).await;
    for partition in &victim_partitions {
        assert_ne!(moved[partition], "n3", "partition {partition} moved");
    }
    match fault {
        Fault::Kill => {}
        Fault::Pause => {
            if let Some(rest) = Duration::from_secs(6).checked_sub(started.elapsed()) {
                tokio::time::sleep(rest).await;
            }
            cluster.nodes[2].resume();
        }
        Fault::CutOff => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            proxy.as_ref().expect("a proxy").heal();
        }
    }
    if !matches!(fault, Fault::Kill) {
        // Back, it gives up what it no longer holds and rejoins: the leases spread again.
        cluster.wait_spread(&["n1", "n2", "n3"]).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut acked = Vec::new();
    let mut refusals = Vec::new();
    for load in &mut loads {
        load.stop().await;
        acked.extend(load.acked());
        refusals.push(load.refusals());
    }
    println!(
        "{fault:?} of the owner of partitions {victim_partitions:?}: first 200 for its partition after {} ms (lease TTL 2 s); {} commands acknowledged; refusals per load {refusals:?}",
        failover.as_millis(),
        acked.len()
    );
    cluster.check(&acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_owner_fails_over_under_load() {
    owner_fault_under_load(Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_owner_is_fenced_and_rejoins() {
    owner_fault_under_load(Fault::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_cut_off_from_nats_never_acks_and_rejoins() {
    owner_fault_under_load(Fault::CutOff).await;
}
