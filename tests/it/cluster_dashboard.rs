//! The dashboard in cluster mode, on a fresh 3-server JetStream cluster with 4 partitions, two
//! writer nodes and the three read models' projectors (`planledger projector --cluster`), with
//! plans seeded on more than one partition:
//! - over plain HTTP, every call the page makes, through a writer node: the page and its
//!   `config.json` (cluster mode), the plans list with every partition's plans, each plan's
//!   state and read models (passed to the projectors), the same as of a past time (answered
//!   from the plan's partition log), the recent activity the page starts with (`?recent=20`:
//!   the newest 20 events across partitions, merged by time), the tenant-wide live feed from
//!   that page's `next_cursor` (only what is recorded after it, from two partitions) whose
//!   event ids read the plan's writes as bookmarks (its cursors parse back even for a tenant without events), and a clear 503
//!   naming the command to run when a read model's projector is missing;
//! - in headless Chromium (`tests/python/cluster_dashboard.py`; skipped loudly without a
//!   browser): the plans list shows every partition's plans, a plan's panels render without a
//!   problem, the live activity starts with the 20 newest events (each naming its partition),
//!   a check-in on its partition and one on another partition arrive in the live feed
//!   and the plan's progress follows without a reload, the time slider reads the past, and no
//!   script or console error occurs.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use planledger_e2e::client::{readyz, today_plus};
use planledger_e2e::cluster::NatsCluster;
use planledger_e2e::server::{Planledger, share_jwt_key};
use planledger_e2e::workspace_root;
use planledger_store::{PartitionCount, StreamId};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cluster_nodes::writer;

const PARTITIONS: u32 = 4;
const TENANT: &str = "acme";
const READ_MODELS: [&str; 3] = ["progress", "accountability", "agility"];

/// The partition of `plan` in `TENANT`.
fn partition_of(plan: &str) -> u32 {
    PartitionCount::new(PARTITIONS)
        .expect("count")
        .partition_of(&StreamId::new(format!("{TENANT}/{plan}")).expect("stream id"))
        .index()
}

/// A seeded plan: its id, partition, title and the bookmark of its last command.
#[derive(Clone, Debug)]
struct Seeded {
    plan: String,
    partition: u32,
    title: String,
    bookmark: String,
}

/// A running cluster: NATS, two writer nodes and a projector per read model.
struct Deployment {
    _dir: tempfile::TempDir,
    nodes: Vec<Planledger>,
    projectors: Vec<Planledger>,
    token: String,
    plans: Vec<Seeded>,
    // Dropped last: the processes above first.
    _nats: NatsCluster,
}

impl Deployment {
    async fn start() -> Self {
        let nats = NatsCluster::start();
        nats.init_planledger(PARTITIONS);
        let dir = tempfile::tempdir().expect("dir");
        let n1 = writer(&nats, &dir.path().join("n1"), "n1", None);
        assert!(n1.wait_ready().await, "n1 never got ready: {}", n1.log());
        let n2 = writer(&nats, &dir.path().join("n2"), "n2", Some(&n1.data_dir));
        assert!(n2.wait_ready().await, "n2 never got ready: {}", n2.log());
        wait_balanced(&[&n1, &n2]).await;
        let projectors = READ_MODELS
            .iter()
            .map(|name| projector(&nats, &dir.path().join(name), &n1.data_dir, name))
            .collect();
        let token = n1.token(TENANT, "ana", "admin");
        let mut deployment = Self {
            _dir: dir,
            nodes: vec![n1, n2],
            projectors,
            token,
            plans: Vec::new(),
            _nats: nats,
        };
        deployment.seed().await;
        deployment
    }

    /// Six plans, each written through one of the nodes: they spread over the partitions.
    async fn seed(&mut self) {
        let http = reqwest::Client::new();
        for k in 1..=6 {
            let plan = format!("dash-{k}");
            let title = format!("Plan {k}");
            let node = &self.nodes[k % 2];
            let mut bookmark = String::new();
            for body in plan_commands(&title) {
                let answer = command(&http, node, &self.token, &plan, body).await;
                bookmark = answer["bookmark"]
                    .as_str()
                    .unwrap_or_else(|| {
                        panic!("a cluster command's answer has a bookmark: {answer}")
                    })
                    .to_string();
            }
            self.plans.push(Seeded {
                partition: partition_of(&plan),
                plan,
                title,
                bookmark,
            });
        }
        let partitions: std::collections::BTreeSet<u32> =
            self.plans.iter().map(|p| p.partition).collect();
        assert!(
            partitions.len() >= 2,
            "the plans spread over partitions: {partitions:?}"
        );
    }

    /// Two seeded plans on different partitions.
    fn two_partitions(&self) -> (Seeded, Seeded) {
        let a = self.plans[0].clone();
        let b = self
            .plans
            .iter()
            .find(|p| p.partition != a.partition)
            .expect("a plan on another partition")
            .clone();
        (a, b)
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .chain(&self.projectors)
            .map(Planledger::log)
            .collect::<Vec<_>>()
            .join("\n----\n")
    }
}

/// Waits until the nodes share the partitions evenly, each serving its share: then no partition
/// moves while the test runs (a node gives one back only while another holds fewer than its
/// share).
async fn wait_balanced(nodes: &[&Planledger]) {
    let share = PARTITIONS as usize / nodes.len();
    let mut served = Vec::new();
    for _ in 0..240 {
        served.clear();
        for node in nodes {
            let (_, ready) = readyz(node).await;
            let serving = ready["partitions"]
                .as_object()
                .map_or(0, |p| p.values().filter(|s| *s == "serving").count());
            served.push(serving);
        }
        if served.iter().all(|n| *n == share) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the nodes never shared the partitions evenly: each serves {served:?}");
}

/// A projector of read model `name` over every partition, with the nodes' JWT key.
fn projector(nats: &NatsCluster, data_dir: &Path, keys: &Path, name: &str) -> Planledger {
    share_jwt_key(keys, data_dir);
    Planledger::start_projector(
        data_dir,
        name,
        &["--nats", &nats.urls().join(","), "--cluster"],
    )
}

/// A plan with a goal, its accountable person, a baseline and a check-in.
fn plan_commands(title: &str) -> Vec<Value> {
    vec![
        json!({"type": "CreatePlan", "data": {
            "title": title, "starts_on": today_plus(-14), "ends_on": today_plus(60),
            "checkin_cadence_days": 7}}),
        json!({"type": "DefineGoal", "data": {
            "goal_id": "signups", "title": "Signups", "due": today_plus(30),
            "kpi": {"unit": "users", "baseline": 100.0, "target": 200.0, "direction": "increase"}}}),
        json!({"type": "AssignRole", "data": {
            "person": "ana", "role": "accountable", "goal_id": "signups"}}),
        json!({"type": "SetBaseline", "data": {"label": "v1"}}),
        json!({"type": "RecordCheckIn", "data": {
            "goal_id": "signups", "value": 150.0, "confidence": 0.7, "status": "on_track"}}),
    ]
}

/// Whether an answer is a refusal that proves nothing ran, to send again after `Retry-After`
/// (a partition between owners).
fn nothing_ran(status: StatusCode, answer: &Value) -> bool {
    status == StatusCode::SERVICE_UNAVAILABLE
        && ["partition_unavailable", "partition_moved"]
            .contains(&answer["code"].as_str().unwrap_or(""))
}

/// Runs a command on `plan` through `node`: its answer (panics unless 200).
async fn command(
    http: &reqwest::Client,
    node: &Planledger,
    token: &str,
    plan: &str,
    body: Value,
) -> Value {
    for _ in 0..40 {
        let response = http
            .post(node.url(&format!("/v1/plans/{plan}/commands")))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("send a command");
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if nothing_ran(status, &answer) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        assert_eq!(status, StatusCode::OK, "command on {plan}: {answer}");
        return answer;
    }
    panic!("the command on {plan} found its partition unavailable for 10 s");
}

/// `GET` through `node`: the status and JSON body (sent again while the plan's partition is
/// between owners).
async fn get(node: &Planledger, token: &str, path_and_query: &str) -> (StatusCode, Value) {
    for _ in 0..40 {
        let response = reqwest::Client::new()
            .get(node.url(path_and_query))
            .bearer_auth(token)
            .send()
            .await
            .expect("send a read");
        let status = response.status();
        let answer = response.json().await.unwrap_or(Value::Null);
        if !nothing_ran(status, &answer) {
            return (status, answer);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{path_and_query} found its partition unavailable for 10 s");
}

/// `GET` through `node` that must answer 200: its JSON body.
async fn read(node: &Planledger, token: &str, path_and_query: &str) -> Value {
    let (status, body) = get(node, token, path_and_query).await;
    assert_eq!(status, StatusCode::OK, "{path_and_query}: {body}");
    body
}

/// The signups goal's row of a progress answer.
fn signups(progress: &Value) -> &Value {
    progress["goals"]
        .as_array()
        .and_then(|goals| goals.iter().find(|g| g["goal_id"] == "signups"))
        .unwrap_or_else(|| panic!("no signups goal in {progress}"))
}

/// Reads `want` events from a live feed: (id, data).
async fn read_live(response: reqwest::Response, want: usize) -> Vec<(String, Value)> {
    crate::cluster_feed::read_live(response, want)
        .await
        .into_iter()
        .map(|event| (event.id, event.data))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_node_serves_the_dashboard_every_partitions_plans_and_the_live_feed() {
    let deployment = Deployment::start().await;
    let [n1, n2] = [&deployment.nodes[0], &deployment.nodes[1]];
    let token = deployment.token.as_str();

    // The page, its files and its settings come from any writer node, without a token.
    let page = reqwest::get(n2.url("/ui")).await.expect("the page");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.expect("HTML").contains("app.js"));
    let script = reqwest::get(n1.url("/ui/app.js")).await.expect("app.js");
    assert_eq!(script.status(), StatusCode::OK);
    assert!(
        script
            .headers()
            .get("content-security-policy")
            .is_some_and(|v| v.to_str().is_ok_and(|v| v.contains("default-src 'none'"))),
        "the files carry the page's policy"
    );
    let config: Value = reqwest::get(n1.url("/ui/config.json"))
        .await
        .expect("config.json")
        .json()
        .await
        .expect("JSON");
    assert_eq!(config, json!({"mode": "cluster", "partitions": PARTITIONS}));

    // Each plan's panels, through either node: state from its partition's owner, read models
    // from the projectors (each read after the plan's last command).
    for (k, plan) in deployment.plans.iter().enumerate() {
        // The node that did not write the plan, so some reads are forwarded to the owner.
        let node = &deployment.nodes[(k + 1) % 2];
        let id = &plan.plan;
        let state = read(node, token, &format!("/v1/plans/{id}")).await;
        assert_eq!(state["state"]["title"], plan.title.as_str(), "{state}");
        let progress = read(
            node,
            token,
            &format!("/v1/plans/{id}/progress?bookmark={}", plan.bookmark),
        )
        .await;
        assert_eq!(
            signups(&progress)["progress"],
            json!(0.5),
            "{id}: the seeded check-in is halfway from 100 to 200: {progress}"
        );
        for path in [
            "accountability",
            "agility",
            "progress/history",
            "drift?baseline=v1",
            "restatements",
        ] {
            read(node, token, &format!("/v1/plans/{id}/{path}")).await;
        }
        let events = read(node, token, &format!("/v1/plans/{id}/events")).await;
        assert_eq!(
            events["events"].as_array().map(Vec::len),
            Some(5),
            "{events}"
        );
    }
    read(n2, token, "/v1/people/ana/accountability").await;

    // The plans list has every partition's plans.
    let list = read(n1, token, "/v1/plans").await;
    let listed: Vec<&str> = list["plans"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .filter_map(|p| p["plan_id"].as_str())
        .collect();
    for plan in &deployment.plans {
        assert!(
            listed.contains(&plan.plan.as_str()),
            "{} (partition {}) is listed: {listed:?}",
            plan.plan,
            plan.partition
        );
    }

    // The time slider's reads: as of the baseline (before the check-in), from the log.
    let (a, b) = deployment.two_partitions();
    let trail = read(n2, token, &format!("/v1/plans/{}/events", a.plan)).await;
    let baseline_at = trail["events"][3]["recorded_at"]
        .as_str()
        .expect("recorded_at")
        .to_string();
    let as_of = format!("as_of={}", baseline_at.replace('+', "%2B"));
    let state = read(n1, token, &format!("/v1/plans/{}?{as_of}", a.plan)).await;
    assert_eq!(state["version"], 4, "{state}");
    let then = read(n1, token, &format!("/v1/plans/{}/progress?{as_of}", a.plan)).await;
    assert_eq!(
        signups(&then)["progress"],
        json!(0.0),
        "before the check-in: {then}"
    );
    for path in [
        "accountability",
        "agility",
        "progress/history",
        "drift",
        "restatements",
    ] {
        let separator = if path.contains('?') { '&' } else { '?' };
        read(
            n2,
            token,
            &format!("/v1/plans/{}/{path}{separator}{as_of}", a.plan),
        )
        .await;
    }

    // A tenant without events: both cursors of its first page parse back.
    let empty = n1.token("globex", "gus", "admin");
    let first = read(n2, &empty, "/v1/events").await;
    assert_eq!(first["events"], json!([]), "{first}");
    for field in ["next_cursor", "last_cursor"] {
        let cursor = first[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field}: {first}"));
        let page = read(n1, &empty, &format!("/v1/events?cursor={cursor}")).await;
        assert_eq!(page["events"], json!([]), "from {field}: {page}");
    }

    // Where the live activity starts (`?recent=20`): the newest 20 events across partitions,
    // merged by time, the same as the tail of the whole tenant-wide feed.
    let all = read(n1, token, "/v1/events?limit=1000").await;
    assert_eq!(
        all["at_end"],
        json!(true),
        "one page holds the history: {all}"
    );
    let all = all["events"].as_array().expect("events").clone();
    assert!(all.len() > 20, "more history than the recent page shows");
    let start = read(n1, token, "/v1/events?recent=20").await;
    let recent = start["events"].as_array().expect("events");
    assert_eq!(
        recent.as_slice(),
        &all[all.len() - 20..],
        "the recent page is the newest 20 of the merged feed, oldest first"
    );
    let partitions: std::collections::BTreeSet<u64> = recent
        .iter()
        .map(|e| e["partition"].as_u64().expect("partition"))
        .collect();
    eprintln!(
        "recent activity: 20 events of {} total, from partitions {partitions:?}",
        all.len()
    );
    for bad in [
        "recent=0",
        "recent=1001",
        "recent=5&limit=5",
        "recent=5&cursor=pb1.cDA9MQ",
    ] {
        let (status, problem) = get(n1, token, &format!("/v1/events?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
        assert_eq!(problem["errors"][0]["field"], "recent", "{bad}: {problem}");
    }
    // The live feed from the recent page's `next_cursor`: only what is recorded after, from two
    // partitions, each event's id a cursor that reads the plan's write as a bookmark.
    let next_cursor = start["next_cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("a tenant-wide page carries next_cursor: {start}"))
        .to_string();
    assert!(next_cursor.starts_with("pb1."), "{next_cursor}");
    let live = reqwest::Client::new()
        .get(n2.url("/v1/events"))
        .query(&[("cursor", next_cursor.as_str())])
        .bearer_auth(token)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .expect("the live feed answers");
    assert_eq!(live.status(), StatusCode::OK);
    let http = reqwest::Client::new();
    for (plan, value) in [(&a, 180.0), (&b, 120.0)] {
        command(
            &http,
            n1,
            token,
            &plan.plan,
            json!({"type": "RecordCheckIn", "data": {"goal_id": "signups", "value": value, "confidence": 0.8}}),
        )
        .await;
    }
    let events = read_live(live, 2).await;
    let seen: Vec<(String, u64, &str)> = events
        .iter()
        .map(|(_, e)| {
            (
                e["stream"].as_str().expect("stream").to_string(),
                e["partition"].as_u64().expect("partition"),
                e["type"].as_str().expect("type"),
            )
        })
        .collect();
    let mut expected = vec![
        (
            format!("{TENANT}/{}", a.plan),
            u64::from(a.partition),
            "CheckInRecorded",
        ),
        (
            format!("{TENANT}/{}", b.plan),
            u64::from(b.partition),
            "CheckInRecorded",
        ),
    ];
    let mut sorted = seen.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected, "only the two new check-ins arrive live");
    let (cursor, _) = events
        .iter()
        .find(|(_, e)| e["stream"] == format!("{TENANT}/{}", a.plan))
        .expect("a's check-in");
    let after = read(
        n2,
        token,
        &format!("/v1/plans/{}/progress?bookmark={cursor}", a.plan),
    )
    .await;
    assert_eq!(
        signups(&after)["current_value"],
        json!(180.0),
        "the feed's cursor reads the write: {after}"
    );

    // A read model whose projector is not running is a clear 503 naming the command to run
    // (its as-of reads still come from the log); projector operations are the projector's own.
    let mut deployment = deployment;
    deployment.projectors[2].kill();
    let (status, problem) = get(
        &deployment.nodes[0],
        &deployment.token,
        &format!("/v1/plans/{}/agility", a.plan),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(problem["code"], "read_model_unavailable", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("planledger projector --cluster --name agility")),
        "{problem}"
    );
    read(
        &deployment.nodes[1],
        &deployment.token,
        &format!("/v1/plans/{}/agility?{as_of}", a.plan),
    )
    .await;
    let (status, problem) = get(&deployment.nodes[0], &deployment.token, "/v1/projections").await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{problem}");
    assert_eq!(problem["code"], "not_in_cluster_mode", "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_in_a_browser_shows_every_partition_and_follows_live_changes() {
    let Some(chromium) = crate::dashboard_browser::chromium() else {
        eprintln!(
            "SKIPPED: no Chromium at /usr/bin/chromium (or $PLANLEDGER_CHROMIUM); `just setup` installs Debian's chromium as root. The cluster dashboard's HTTP test still runs."
        );
        return;
    };
    let python = crate::dashboard_browser::python_with_playwright();
    let deployment = Deployment::start().await;
    let node = &deployment.nodes[1];
    let (a, b) = deployment.two_partitions();
    let plans: Vec<Value> = deployment
        .plans
        .iter()
        .map(|p| json!({"plan_id": p.plan, "partition": p.partition, "title": p.title}))
        .collect();
    let shots = tempfile::Builder::new()
        .prefix("planledger-cluster-dashboard-")
        .tempdir()
        .expect("a directory for the screenshots")
        .keep();
    let output = Command::new(&python)
        .arg(workspace_root().join("tests/python/cluster_dashboard.py"))
        .arg(&chromium)
        .arg(&node.base_url)
        .arg(&shots)
        .env("PLANLEDGER_ADMIN_TOKEN", &deployment.token)
        .env(
            "PLANLEDGER_CONTRIBUTOR_TOKEN",
            node.token(TENANT, "cora", "contributor"),
        )
        .env("PLANLEDGER_PLANS", Value::Array(plans).to_string())
        .env("PLANLEDGER_PLAN_A", &a.plan)
        .env("PLANLEDGER_PLAN_B", &b.plan)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .output()
        .expect("run tests/python/cluster_dashboard.py");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    println!("screenshots: {}", shots.display());
    assert!(
        output.status.success(),
        "the cluster browser test failed ({}); logs:\n{}",
        output.status,
        deployment.logs()
    );
}
