//! Backup, restore and repair: `planledger backup` of a running node (one node with its relay,
//! and a cluster node's partition caches), `planledger restore` (checked, into a new directory
//! or one missing partition cache), and `planledger cluster repair` of a deleted partition
//! stream from a cache. Every test starts its own NATS and processes and stops them at the end.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use planledger_e2e::client::readyz;
use planledger_e2e::cluster::NatsCluster;
use planledger_e2e::load::{Acked, CommandLoad, LogContents};
use planledger_e2e::nats::NatsServer;
use planledger_e2e::server::{Planledger, binary};
use planledger_store::{LogCopy, PartitionCount, StreamId};
use serde_json::Value;

use crate::relay_support::{assert_stream_mirrors_log, open_store, stream_counts};

const TENANT: &str = "acme";
const EVENTS_STREAM: &str = "PLANLEDGER_EVENTS";

/// Runs `planledger ARGS`: whether it succeeded, and what it printed (stdout, then stderr).
fn planledger(args: &[&str]) -> (bool, String) {
    let output = tokio::task::block_in_place(|| {
        Command::new(binary())
            .args(args)
            .output()
            .expect("run planledger")
    });
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// Runs `planledger ARGS` and fails the test unless it succeeds; what it printed.
fn planledger_ok(args: &[&str]) -> String {
    let (ok, printed) = planledger(args);
    assert!(ok, "planledger {args:?} failed: {printed}");
    printed
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

/// A backup's manifest.
fn manifest(backup: &Path) -> Value {
    let text = std::fs::read_to_string(backup.join("backup.json")).expect("the manifest exists");
    serde_json::from_str(&text).expect("the manifest is JSON")
}

/// Waits (bounded) until `done` holds, naming `what` if it never does.
async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last position of a single node's log, read over `GET /v1/events`.
async fn log_position(server: &Planledger, token: &str) -> u64 {
    let client = planledger_e2e::client::Client::new();
    let (_, page) = client
        .get(
            &server.base_url,
            token,
            "/v1/events?from_position=1&limit=1",
        )
        .await;
    page["last_position"]
        .as_u64()
        .unwrap_or_else(|| panic!("GET /v1/events names the log's last position: {page}"))
}

/// Waits until `position` (a log's or the streams' total) has grown by `more` while a load runs.
async fn grows_by(what: &str, more: u64, mut position: impl AsyncFnMut() -> u64) {
    let target = position().await + more;
    wait_until(&format!("{what} to reach {target}"), async || {
        position().await >= target
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_verifies_resumes_its_relay_without_duplicates_and_answers_repeats()
 {
    let nats = NatsServer::start();
    let url = nats.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut original = serve(&dir.path().join("original"), &url);
    assert!(original.wait_ready().await, "{}", original.log());
    let token = original.token(TENANT, "pat", "admin");
    let mut load = CommandLoad::seed(&original, &token, 4).await;
    load.start();
    grows_by("the log", 100, async || {
        log_position(&original, &token).await
    })
    .await;

    // The backup is taken while commands keep coming.
    let backup = dir.path().join("backup");
    let printed = planledger_ok(&[
        "backup",
        "--data-dir",
        path(&original.data_dir),
        "--to",
        path(&backup),
    ]);
    assert!(printed.contains("backup of"), "{printed}");
    grows_by("the log", 100, async || {
        log_position(&original, &token).await
    })
    .await;
    load.stop().await;
    let history = LogContents::read(&original, &token).await;
    let total = history.events.len() as u64;
    wait_until("the relay to publish the whole log", async || {
        stream_counts(&url, EVENTS_STREAM).await.1 == total
    })
    .await;
    original.terminate();

    let manifest = manifest(&backup);
    assert_eq!(manifest["format"], "planledger-backup-v1");
    let logs = manifest["logs"].as_array().expect("logs");
    assert_eq!(logs.len(), 1, "one node has one log: {manifest}");
    assert_eq!(logs[0]["path"], "log");
    assert_eq!(manifest["log_id"], logs[0]["log_id"]);
    let at = logs[0]["last_position"].as_u64().expect("last_position");
    assert!(
        at > 0 && at < total,
        "the backup (to {at}) was taken mid-load (of {total})"
    );

    // Restored as it is: it serves the history to the backup's position and verifies; its relay
    // finds the stream ahead of the log and halts instead of publishing a fork of it.
    let plain = dir.path().join("plain");
    let printed = planledger_ok(&[
        "restore",
        "--from",
        path(&backup),
        "--data-dir",
        path(&plain),
    ]);
    assert!(printed.contains("verified"), "{printed}");
    let mut restored = serve(&plain, &url);
    wait_until(
        "the restored relay to halt on a stream ahead of its log",
        async || readyz(&restored).await.1.to_string().contains("log_behind"),
    )
    .await;
    let served = LogContents::read(&restored, &token).await;
    let expected: Vec<_> = history.events.range(..=at).collect();
    assert_eq!(served.events.iter().collect::<Vec<_>>(), expected);
    restored.terminate();
    let (verified, printed) = restored.verify();
    assert!(
        verified && printed.contains(&format!("ok: {at} events")),
        "{printed}"
    );
    assert_eq!(stream_counts(&url, EVENTS_STREAM).await, (total, total));

    // Restored with --nats: the events published after the backup come back from the stream,
    // and the relay resumes at the stream's end.
    let caught_up = dir.path().join("caught-up");
    let printed = planledger_ok(&[
        "restore",
        "--from",
        path(&backup),
        "--data-dir",
        path(&caught_up),
        "--nats",
        &url,
    ]);
    assert!(
        printed.contains(&format!("caught up positions {} to {total}", at + 1)),
        "{printed}"
    );
    // The relay published each append's command record, so the caught-up appends have theirs.
    assert!(
        printed.contains("caught-up appends carried its command record"),
        "{printed}"
    );
    let mut resumed = serve(&caught_up, &url);
    assert!(resumed.wait_ready().await, "{}", resumed.log());
    assert_eq!(
        LogContents::read(&resumed, &token).await.events,
        history.events
    );
    // Keys from before the backup (in the backup's log) and after it (caught up from the
    // stream) are repeats: answered with the first answer, nothing appended.
    let acked = load.acked();
    let (before, after): (Vec<_>, Vec<_>) = acked.iter().partition(|a| a.events[0].0 <= at);
    assert!(
        !before.is_empty() && !after.is_empty(),
        "keys on both sides of {at}"
    );
    for command in before.iter().take(20).chain(after.iter().take(20)) {
        assert_resend_is_a_repeat(&resumed, &token, command).await;
    }
    assert_eq!(
        log_position(&resumed, &token).await,
        total,
        "no resend appended"
    );
    let mut after = CommandLoad::on_existing_plans(&resumed, &token, 4, "after-restore-");
    after.start();
    grows_by("the log", 50, async || log_position(&resumed, &token).await).await;
    after.stop().await;
    let now = LogContents::read(&resumed, &token).await.events.len() as u64;
    assert!(now > total);
    wait_until("the resumed relay to publish the new events", async || {
        stream_counts(&url, EVENTS_STREAM).await.1 == now
    })
    .await;
    resumed.terminate();
    let (verified, printed) = resumed.verify();
    assert!(verified, "{printed}");
    // Every message's Planledger-Position equals its sequence, once each, and is the log's.
    let store = open_store(&caught_up);
    assert_stream_mirrors_log(&url, EVENTS_STREAM, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_refuse_a_target_that_is_not_empty() {
    let mut server = Planledger::start(&["--rate-limit-per-second", "0"]);
    assert!(server.wait_ready().await, "{}", server.log());
    let token = server.token(TENANT, "pat", "admin");
    let mut load = CommandLoad::seed(&server, &token, 1).await;
    load.start();
    grows_by("the log", 5, async || log_position(&server, &token).await).await;
    load.stop().await;
    let dir = tempfile::tempdir().expect("temp dir");

    let occupied = dir.path().join("occupied");
    std::fs::create_dir_all(&occupied).expect("dir");
    std::fs::write(occupied.join("something"), b"x").expect("a file");
    let data_dir = path(&server.data_dir).to_string();
    let (ok, printed) = planledger(&["backup", "--data-dir", &data_dir, "--to", path(&occupied)]);
    assert!(!ok && printed.contains("is not empty"), "{printed}");

    let backup = dir.path().join("backup");
    planledger_ok(&["backup", "--data-dir", &data_dir, "--to", path(&backup)]);
    let (ok, printed) = planledger(&[
        "restore",
        "--from",
        path(&backup),
        "--data-dir",
        path(&occupied),
    ]);
    assert!(!ok && printed.contains("is not empty"), "{printed}");
    // Nor into the running service's own directory.
    let (ok, printed) = planledger(&["restore", "--from", path(&backup), "--data-dir", &data_dir]);
    assert!(!ok && printed.contains("is not empty"), "{printed}");
    server.terminate();
}

/// Sends `command` again with its key: it must be answered as a repeat with its first answer.
async fn assert_resend_is_a_repeat(server: &Planledger, token: &str, command: &Acked) {
    let response = reqwest::Client::new()
        .post(server.url(&format!("/v1/plans/{}/commands", command.plan)))
        .bearer_auth(token)
        .header("Idempotency-Key", &command.key)
        .json(&command.body)
        .send()
        .await
        .expect("the resend is answered");
    let status = response.status();
    let answer: Value = response.json().await.expect("a JSON answer");
    assert_eq!(status, reqwest::StatusCode::OK, "{}: {answer}", command.key);
    assert_eq!(answer["deduplicated"], true, "{}: {answer}", command.key);
    let events: Vec<(u64, String)> = answer["events"]
        .as_array()
        .expect("the answer lists its events")
        .iter()
        .map(|e| {
            (
                e["position"].as_u64().expect("a position"),
                e["event_id"].as_str().expect("an event id").to_string(),
            )
        })
        .collect();
    assert_eq!(
        events, command.events,
        "{}: the first answer's events",
        command.key
    );
}

/// A single node serving with its relay on `nats`, without a rate limit.
fn serve(data_dir: &Path, nats: &str) -> Planledger {
    std::fs::create_dir_all(data_dir).expect("data dir");
    Planledger::start_in(data_dir, &["--nats", nats, "--rate-limit-per-second", "0"])
}

/// `planledger cluster status --json`.
fn cluster_status(nats: &NatsCluster) -> Value {
    let printed = planledger_ok(&[
        "cluster",
        "status",
        "--json",
        "--nats",
        &nats.urls().join(","),
    ]);
    serde_json::from_str(&printed).expect("cluster status prints JSON")
}

/// Events in all partition streams together.
fn streams_total(nats: &NatsCluster) -> u64 {
    cluster_status(nats)["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["stream_position"].as_u64().expect("stream_position"))
        .sum()
}

/// The partitions whose owner has its cache open.
fn served_partitions(nats: &NatsCluster) -> usize {
    cluster_status(nats)["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .filter(|p| !p["owner"].is_null() && !p["owner"]["cache_position"].is_null())
        .count()
}

/// A writer node with 2 s leases.
fn writer(nats: &NatsCluster, data_dir: &Path) -> Planledger {
    std::fs::create_dir_all(data_dir).expect("data dir");
    Planledger::start_in(
        data_dir,
        &[
            "--log-commit",
            "jetstream",
            "--nats",
            &nats.urls().join(","),
            "--node-id",
            "n1",
            "--lease-ttl",
            "2s",
            "--rate-limit-per-second",
            "0",
        ],
    )
}

fn cluster_verify(nats: &NatsCluster, node: &Path) -> String {
    planledger_ok(&[
        "cluster",
        "verify",
        "--nats",
        &nats.urls().join(","),
        "--cache",
        path(node),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_is_restored_from_a_backup_and_a_lost_partition_stream_is_repaired_from_a_cache() {
    const PARTITIONS: u32 = 4;
    let nats = NatsCluster::start();
    nats.init_planledger(PARTITIONS);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut node = writer(&nats, &dir.path().join("n1"));
    wait_until("the node to serve every partition", async || {
        served_partitions(&nats) == PARTITIONS as usize
    })
    .await;
    let token = node.token(TENANT, "pat", "admin");
    let mut load = CommandLoad::seed(&node, &token, 6).await;
    load.start();
    grows_by("the streams", 100, async || streams_total(&nats)).await;

    // A backup of the running node: every partition cache it holds.
    let backup = dir.path().join("backup");
    planledger_ok(&[
        "backup",
        "--data-dir",
        path(&node.data_dir),
        "--to",
        path(&backup),
    ]);
    let manifest = manifest(&backup);
    let logs: Vec<String> = manifest["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .map(|log| log["path"].as_str().expect("path").to_string())
        .collect();
    let expected: Vec<String> = (0..PARTITIONS)
        .map(|p| format!("partitions/{p}/log"))
        .collect();
    assert_eq!(logs, expected);
    grows_by("the streams", 100, async || streams_total(&nats)).await;
    load.stop().await;
    node.terminate();

    // One cache is lost and restored from the backup; the node catches it up and serves it.
    let partition = PartitionCount::new(PARTITIONS)
        .expect("count")
        .partition_of(&StreamId::new(format!("{TENANT}/load-0")).expect("stream id"))
        .index();
    let cache = node
        .data_dir
        .join("partitions")
        .join(partition.to_string())
        .join("log");
    std::fs::remove_dir_all(&cache).expect("delete the cache");
    let printed = planledger_ok(&[
        "restore",
        "--from",
        path(&backup),
        "--data-dir",
        path(&node.data_dir),
        "--partition",
        &partition.to_string(),
    ]);
    assert!(printed.contains("verified"), "{printed}");
    node.restart();
    wait_until("the node to serve every partition again", async || {
        served_partitions(&nats) == PARTITIONS as usize
    })
    .await;
    let mut again = CommandLoad::on_existing_plans(&node, &token, 6, "after-restore-");
    again.start();
    grows_by("the streams", 30, async || streams_total(&nats)).await;
    again.stop().await;
    assert!(
        again.acked().iter().any(|ack| ack.plan == "load-0"),
        "commands on the restored partition succeed"
    );
    node.terminate();
    let printed = cluster_verify(&nats, &node.data_dir);
    assert!(printed.contains("a prefix of the stream"), "{printed}");

    // The partition's stream is lost; it is repaired from the node's cache.
    let stream = planledger_proto::subjects::partition_stream_name(partition);
    let client = async_nats::connect(nats.urls()[0].clone())
        .await
        .expect("connect");
    let js = async_nats::jetstream::new(client);
    wait_until("the stopped node's lease to be gone", async || {
        cluster_status(&nats)["partitions"][partition as usize]["owner"].is_null()
    })
    .await;
    js.delete_stream(&stream).await.expect("delete the stream");
    // `cluster status` shows the lost stream as such, with every other partition.
    let status = cluster_status(&nats);
    let rows = status["partitions"].as_array().expect("partitions");
    assert!(
        rows[partition as usize]["stream_position"].is_null()
            && rows
                .iter()
                .enumerate()
                .all(|(i, row)| i == partition as usize || row["stream_position"].is_u64()),
        "{status}"
    );
    let table = planledger_ok(&["cluster", "status", "--nats", &nats.urls().join(",")]);
    assert!(
        table.contains("MISSING") && table.contains("cluster repair --partition"),
        "{table}"
    );
    let repair = [
        "cluster",
        "repair",
        "--nats",
        &nats.urls().join(","),
        "--partition",
        &partition.to_string(),
        "--from",
        path(&node.data_dir),
    ];
    let (ok, printed) = planledger(&repair);
    assert!(
        !ok && printed.contains("would create stream")
            && printed.contains("--yes-recreate-the-stream"),
        "{printed}"
    );
    assert!(js.get_stream(&stream).await.is_err(), "nothing was done");
    let mut confirmed = repair.to_vec();
    confirmed.push("--yes-recreate-the-stream");
    let printed = planledger_ok(&confirmed);
    assert!(printed.contains("republished positions 1 to"), "{printed}");

    let held = LogCopy::open(&cache)
        .expect("the cache opens")
        .summary()
        .expect("its summary")
        .last_position
        .get();
    let state = js
        .get_stream(&stream)
        .await
        .expect("the stream exists again")
        .info()
        .await
        .expect("stream info")
        .state
        .clone();
    assert_eq!((state.messages, state.last_sequence), (held, held));
    let printed = cluster_verify(&nats, &node.data_dir);
    assert!(
        printed.contains(&format!("ok: {PARTITIONS} partitions")),
        "{printed}"
    );
    // A second run finds nothing to do.
    let printed = planledger_ok(&confirmed);
    assert!(printed.contains("nothing to do"), "{printed}");
}
