//! The event feed and exports in cluster mode, on a fresh 3-server JetStream cluster with 4
//! partitions and two writer nodes (so every node reads partitions another node owns):
//! - the tenant-wide `GET /v1/events` pages every partition merged, with a vector cursor that
//!   resumes exactly, only the caller's tenant, each partition in position order, each page in
//!   `recorded_at` order; its live form (server-sent events) delivers the same events, and a
//!   reconnect with `Last-Event-ID` resumes after exactly the events seen;
//! - one partition's live feed (`?partition=P`) delivers that partition's events with their
//!   positions as ids;
//! - `planledger export --nats` writes every partition (or one, or one tenant's) with the
//!   partition in every row, equal field by field to the partitions' own pages, and continues
//!   with the cursor it printed;
//! - what the feed and export refuse, each with a message naming the fix.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt as _;
use planledger_e2e::client::{Client, seed_plan};
use planledger_e2e::cluster::NatsCluster;
use planledger_e2e::load::CommandLoad;
use planledger_e2e::server::{Planledger, binary};
use planledger_e2e::workspace_root;
use reqwest::StatusCode;
use serde_json::Value;

use crate::cluster_nodes::{wait_spread, writer};

const PARTITIONS: u32 = 4;

/// One server-sent event.
#[derive(Clone, Debug)]
pub(crate) struct Sse {
    pub(crate) id: String,
    pub(crate) event: String,
    pub(crate) data: Value,
}

/// Opens a live feed at `url` (optionally resuming after `last_event_id`).
async fn open_live(url: &str, token: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .header("Accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.send().await.expect("the live feed answers");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the live feed opens: {:?}",
        response.text().await
    );
    response
}

/// Reads `want` events from a live feed (keep-alive comments are skipped).
pub(crate) async fn read_live(response: reqwest::Response, want: usize) -> Vec<Sse> {
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < want {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {want} live events arrived", events.len()))
            .expect("the live feed stays open")
            .expect("a chunk");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.to_string();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if !data.is_empty() {
                events.push(Sse {
                    id,
                    event,
                    data: serde_json::from_str(&data).expect("each event's data is JSON"),
                });
            }
        }
    }
    events
}

/// (partition, position) of a feed event, checking it carries both.
fn key(event: &Value) -> (u32, u64) {
    (
        event["partition"]
            .as_u64()
            .unwrap_or_else(|| panic!("no partition: {event}")) as u32,
        event["position"]
            .as_u64()
            .unwrap_or_else(|| panic!("no position: {event}")),
    )
}

/// Each partition's positions, in the order the events came.
fn by_partition<'a>(events: impl IntoIterator<Item = &'a Value>) -> BTreeMap<u32, Vec<u64>> {
    let mut found: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for event in events {
        let (p, position) = key(event);
        found.entry(p).or_default().push(position);
    }
    found
}

/// Every event of `tenant` in each partition, from the partition pages of `/v1/events`
/// (served from the owners' caches, not from the feed under test).
async fn partition_pages(node: &Planledger, token: &str) -> BTreeMap<u32, Vec<Value>> {
    let http = reqwest::Client::new();
    let mut all = BTreeMap::new();
    for p in 0..PARTITIONS {
        let mut events = Vec::new();
        let mut from = 1u64;
        loop {
            let page: Value = http
                .get(node.url("/v1/events"))
                .query(&[
                    ("partition", p.to_string()),
                    ("from_position", from.to_string()),
                    ("limit", "1000".to_string()),
                ])
                .bearer_auth(token)
                .send()
                .await
                .expect("a partition page")
                .json()
                .await
                .expect("JSON");
            let got = page["events"]
                .as_array()
                .unwrap_or_else(|| panic!("{page}"))
                .clone();
            if got.is_empty() {
                break;
            }
            from = page["next_position"].as_u64().expect("next_position");
            events.extend(got);
        }
        all.insert(p, events);
    }
    all
}

/// Two writer nodes sharing one JWT key, both ready.
async fn two_nodes(nats: &NatsCluster, dir: &Path) -> (Planledger, Planledger) {
    let n1 = writer(nats, &dir.join("n1"), "n1", None);
    assert!(n1.wait_ready().await, "n1 never got ready: {}", n1.log());
    let n2 = writer(nats, &dir.join("n2"), "n2", Some(&n1.data_dir));
    assert!(n2.wait_ready().await, "n2 never got ready: {}", n2.log());
    // Ready is not settled: n2 takes partitions over from n1 after it starts, and a request
    // forwarded while one moves is refused (503, to be retried).
    wait_spread(nats, &["n1", "n2"]).await;
    (n1, n2)
}

/// The whole tenant-wide feed of `token`'s tenant through `node`, paged by `limit`, starting
/// at `cursor`: the events, the cursor after each page, and whether each page was in
/// `recorded_at` order.
async fn page_all(
    node: &Planledger,
    token: &str,
    limit: usize,
    cursor: Option<String>,
) -> (Vec<Value>, Vec<String>) {
    let http = reqwest::Client::new();
    let mut cursor = cursor;
    let mut events = Vec::new();
    let mut cursors = Vec::new();
    for _ in 0..1000 {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let response = http
            .get(node.url("/v1/events"))
            .query(&query)
            .bearer_auth(token)
            .send()
            .await
            .expect("a feed page");
        assert_eq!(response.status(), StatusCode::OK);
        let page: Value = response.json().await.expect("JSON");
        let got = page["events"].as_array().expect("events").clone();
        assert!(got.len() <= limit, "a page holds at most the limit");
        let times: Vec<&str> = got
            .iter()
            .map(|e| e["recorded_at"].as_str().expect("recorded_at"))
            .collect();
        let parsed: Vec<jiff::Timestamp> = times
            .iter()
            .map(|t| t.parse().expect("an RFC 3339 time"))
            .collect();
        assert!(
            parsed.windows(2).all(|w| w[0] <= w[1]),
            "a page is merged by recorded_at: {times:?}"
        );
        events.extend(got);
        let next = page["next_cursor"]
            .as_str()
            .expect("next_cursor")
            .to_string();
        cursors.push(next.clone());
        cursor = Some(next);
        if page["at_end"] == true {
            return (events, cursors);
        }
    }
    panic!("the feed never reached its end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_tenant_wide_feed_merges_partitions_with_a_vector_cursor_live_and_paged() {
    let nats = NatsCluster::start();
    nats.init_planledger(PARTITIONS);
    let dir = tempfile::tempdir().expect("dir");
    let (n1, n2) = two_nodes(&nats, dir.path()).await;
    let acme = n1.token("acme", "ana", "admin");
    let globex = n1.token("globex", "gus", "admin");

    // Live feeds opened before anything is written: acme's tenant-wide one on n2, and
    // partition 1's on n1.
    let merged_live = open_live(&n2.url("/v1/events"), &acme, None).await;
    let partition_live = open_live(&n1.url("/v1/events?partition=1"), &acme, None).await;

    // Eight acme plans (spread over the partitions) and three of another tenant.
    let _load = CommandLoad::seed(&n1, &acme, 8).await;
    let client = Client::new();
    for plan in ["g-1", "g-2", "g-3"] {
        seed_plan(&n2, &client, &globex, plan, "gus").await;
    }
    let pages = partition_pages(&n1, &acme).await;
    let expected: BTreeMap<u32, Vec<u64>> = pages
        .iter()
        .map(|(p, events)| {
            for event in events {
                assert!(
                    event["stream"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("acme/")),
                    "a partition page holds only the caller's tenant: {event}"
                );
            }
            (
                *p,
                events
                    .iter()
                    .map(|e| e["position"].as_u64().expect("position"))
                    .collect(),
            )
        })
        .filter(|(_, positions): &(u32, Vec<u64>)| !positions.is_empty())
        .collect();
    let total: usize = expected.values().map(Vec::len).sum();
    assert_eq!(total, 40, "eight plans of five events: {expected:?}");
    assert!(
        expected.len() >= 2,
        "the plans spread over partitions: {expected:?}"
    );

    // Paged, on either node: every acme event once, each partition in position order, each
    // event equal to its partition page's but for the partition field.
    let (events, cursors) = page_all(&n2, &acme, 7, None).await;
    assert_eq!(
        by_partition(&events),
        expected,
        "the merged pages hold every event once"
    );
    for event in &events {
        let (p, position) = key(event);
        let mut plain = event.clone();
        plain.as_object_mut().expect("object").remove("partition");
        let page_event = pages[&p]
            .iter()
            .find(|e| e["position"] == position)
            .expect("in the partition's page");
        assert_eq!(&plain, page_event, "the feed's event is the log's");
    }
    let (same, _) = page_all(&n1, &acme, 40, None).await;
    assert_eq!(
        by_partition(&same),
        expected,
        "another node, another page size: the same feed"
    );
    // Resuming at the cursor after the second page gives exactly the rest, in the same order.
    let (rest, _) = page_all(&n1, &acme, 7, Some(cursors[1].clone())).await;
    assert_eq!(rest, events[14..].to_vec(), "the cursor resumes exactly");
    // The last cursor is the end: a page from it is empty and at the end.
    let (none, _) = page_all(&n2, &acme, 7, cursors.last().cloned()).await;
    assert!(none.is_empty(), "nothing after the last cursor: {none:?}");

    // Live, tenant-wide: the same events (only acme's), each partition in order, each id the
    // cursor after it.
    let live = read_live(merged_live, total).await;
    let live_data: Vec<Value> = live.iter().map(|e| e.data.clone()).collect();
    assert_eq!(
        by_partition(&live_data),
        expected,
        "the live feed delivers every event once"
    );
    for event in &live {
        assert_eq!(event.event, event.data["type"].as_str().expect("type"));
        assert!(
            event.id.starts_with("pb1."),
            "the id is a cursor: {}",
            event.id
        );
    }
    // A reconnect after the tenth event delivers exactly the events after it.
    let resumed = read_live(
        open_live(&n1.url("/v1/events"), &acme, Some(&live[9].id)).await,
        total - 10,
    )
    .await;
    let resumed_data: Vec<Value> = resumed.iter().map(|e| e.data.clone()).collect();
    assert_eq!(
        by_partition(&resumed_data),
        by_partition(&live_data[10..]),
        "Last-Event-ID resumes after exactly the events seen"
    );
    // The same cursor pages the same rest.
    let (paged_rest, _) = page_all(&n2, &acme, 100, Some(live[9].id.clone())).await;
    assert_eq!(by_partition(&paged_rest), by_partition(&live_data[10..]));

    // Live, one partition: its events in order, with positions as ids.
    // The plans' partitions are fixed by their names: partition 1 holds some of them.
    let want = expected.get(&1).map_or(0, Vec::len);
    assert!(want > 0, "partition 1 got events: {expected:?}");
    let one = read_live(partition_live, want).await;
    let ids: Vec<u64> = one
        .iter()
        .map(|e| e.id.parse().expect("a position id"))
        .collect();
    assert_eq!(ids, expected[&1], "partition 1's live feed, by position");
    assert!(one.iter().all(|e| e.data["partition"] == 1));

    // Refusals, each naming the fix.
    let http = reqwest::Client::new();
    for (query, field) in [
        ("from_position=3", "from_position"),
        ("proof=true", "proof"),
        ("cursor=not-a-cursor", "cursor"),
        ("partition=9", "partition"),
        ("partition=1&cursor=pb1.cDA9MQ", "cursor"),
    ] {
        let mut request = http
            .get(n1.url(&format!("/v1/events?{query}")))
            .bearer_auth(&acme);
        if query.starts_with("partition=1") {
            request = request.header("Accept", "text/event-stream");
        }
        let response = request.send().await.expect("answer");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let problem: Value = response.json().await.expect("problem+json");
        assert!(
            problem["errors"].to_string().contains(field)
                || problem["detail"].to_string().contains(field),
            "{query}: {problem}"
        );
    }
    let planner = n1.token("acme", "pat", "planner");
    let response = http
        .get(n1.url("/v1/events"))
        .bearer_auth(&planner)
        .send()
        .await
        .expect("answer");
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "the feed is an auditor's"
    );
}

/// Runs `planledger export` with `args`; its status, standard output and standard error.
fn export(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(binary())
        .arg("export")
        .args(args)
        .output()
        .expect("run planledger export");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("the export file")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_reads_every_partition_stream_with_the_partition_in_every_row() {
    let nats = NatsCluster::start();
    nats.init_planledger(PARTITIONS);
    let urls = nats.urls().join(",");
    let dir = tempfile::tempdir().expect("dir");
    let (n1, _n2) = two_nodes(&nats, dir.path()).await;
    let acme = n1.token("acme", "ana", "admin");
    let globex = n1.token("globex", "gus", "admin");
    let _load = CommandLoad::seed(&n1, &acme, 6).await;
    let client = Client::new();
    for plan in ["g-1", "g-2"] {
        seed_plan(&n1, &client, &globex, plan, "gus").await;
    }
    let acme_pages = partition_pages(&n1, &acme).await;
    let globex_pages = partition_pages(&n1, &globex).await;

    // Every tenant, every partition: each partition dense from position 1, each row the log's
    // event with its partition.
    let all = dir.path().join("all.ndjson");
    let (ok, _, stderr) = export(&[
        "--nats",
        &urls,
        "--format",
        "ndjson",
        "--to",
        all.to_str().expect("utf-8"),
    ]);
    assert!(ok, "export --nats: {stderr}");
    let rows = lines(&all);
    assert_eq!(rows.len(), 6 * 5 + 2 * 5, "every event of both tenants");
    let found = by_partition(&rows);
    for (p, positions) in &found {
        assert_eq!(
            positions,
            &(1..=positions.len() as u64).collect::<Vec<_>>(),
            "partition {p} exported dense and in order"
        );
    }
    for row in &rows {
        let (p, position) = key(row);
        let mut plain = row.clone();
        plain.as_object_mut().expect("object").remove("partition");
        let source = acme_pages[&p]
            .iter()
            .chain(globex_pages[&p].iter())
            .find(|e| e["position"] == position)
            .expect("in a partition page");
        assert_eq!(&plain, source, "an exported row is the log's event");
    }
    let cursor = stderr
        .split("--from-cursor ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the summary names the cursor to continue with: {stderr}"))
        .to_string();

    // More commands; the continuation holds exactly them.
    seed_plan(&n1, &client, &acme, "later", "ana").await;
    let next = dir.path().join("next.ndjson");
    let (ok, _, stderr) = export(&[
        "--nats",
        &urls,
        "--format",
        "ndjson",
        "--from-cursor",
        &cursor,
        "--to",
        next.to_str().expect("utf-8"),
    ]);
    assert!(ok, "export --from-cursor: {stderr}");
    let more = lines(&next);
    assert_eq!(
        more.len(),
        5,
        "the continuation holds the new plan's five events: {more:?}"
    );
    assert!(more.iter().all(|e| e["stream"] == "acme/later"));

    // One partition of one tenant, as Parquet, read back by DuckDB.
    let (busiest, acme_events) = acme_pages
        .iter()
        .max_by_key(|(_, events)| events.len())
        .expect("partitions");
    let parquet = dir.path().join("one.parquet");
    let (ok, _, stderr) = export(&[
        "--nats",
        &urls,
        "--format",
        "parquet",
        "--partition",
        &busiest.to_string(),
        "--tenant",
        "acme",
        "--to",
        parquet.to_str().expect("utf-8"),
    ]);
    assert!(ok, "export --partition --tenant: {stderr}");
    let python = workspace_root().join(".tools/bin/python");
    let output = Command::new(&python)
        .args([
            "-c",
            "import duckdb, sys, json; print(json.dumps(duckdb.connect().execute(\"SELECT count(*), min(partition), max(partition), count(DISTINCT tenant), min(tenant) FROM read_parquet(?)\", [sys.argv[1]]).fetchone()))",
        ])
        .arg(&parquet)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; run `just setup`", python.display()));
    assert!(
        output.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        answer,
        serde_json::json!([acme_events.len(), busiest, busiest, 1, "acme"]),
        "one partition's acme rows, each naming the partition"
    );

    // Refusals.
    let (ok, _, stderr) = export(&[
        "--nats",
        &urls,
        "--format",
        "ndjson",
        "--from-position",
        "3",
        "--to",
        "-",
    ]);
    assert!(!ok && stderr.contains("--partition"), "{stderr}");
    let (ok, _, stderr) = export(&[
        "--nats",
        &urls,
        "--format",
        "ndjson",
        "--partition",
        "9",
        "--to",
        "-",
    ]);
    assert!(!ok && stderr.contains("0 to 3"), "{stderr}");
}
