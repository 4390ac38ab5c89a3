//! The wire contract works outside Rust: a consumer written in Python (nats-py, with protobuf
//! code generated from proto/ by grpcio-tools) decodes every message the relay published.

use std::collections::BTreeMap;
use std::process::Command;

use crate::relay_support::*;
use planledger_e2e::nats::NatsServer;
use planledger_e2e::workspace_root;
use planledger_store::Position;

const EVENTS: u64 = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_consumer_decodes_every_message_with_bindings_generated_from_proto() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path());
    let config = relay_config(&nats.url());
    let (relay, status) = spawn_relay(&store, &config);
    append_events(&store, 0..EVENTS).await;
    wait_published(&status, EVENTS).await;
    kill_relay(relay).await;

    let root = workspace_root();
    let python = root.join(".tools/bin/python");
    let output = Command::new(&python)
        .arg(root.join("tests/python/consume.py"))
        .args(["--url", &nats.url()])
        .arg("--proto-dir")
        .arg(root.join("proto"))
        .args(["--stream", &config.stream])
        .args(["--expect", &EVENTS.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; run `just setup`", python.display()));
    assert!(
        output.status.success(),
        "consume.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("consume.py prints one JSON document");

    assert_eq!(
        summary["problems"],
        serde_json::json!([]),
        "contract violations seen from Python"
    );
    assert_eq!(summary["count"], EVENTS);
    assert_eq!(summary["stream_messages"], EVENTS);

    let log = store
        .read_all(Position(1), usize::MAX)
        .expect("the log reads back");
    let records = summary["records"].as_array().expect("records is a list");
    assert_eq!(records.len(), log.len());
    for (record, stored) in records.iter().zip(&log) {
        let (tenant, plan_id) = planledger_proto::split_stream(stored.stream.as_str());
        assert_eq!(
            record,
            &serde_json::json!([
                stored.position.get(),
                stored.event_type,
                stored.event_id.to_string(),
                tenant,
                plan_id,
                stored.version.get(),
                planledger_proto::subjects::event_subject(
                    "planledger.evt",
                    tenant,
                    plan_id,
                    &stored.event_type
                ),
            ])
        );
    }
    let mut expected_types = BTreeMap::new();
    for stored in &log {
        *expected_types
            .entry(stored.event_type.clone())
            .or_insert(0u64) += 1;
    }
    assert_eq!(summary["types"], serde_json::json!(expected_types));
}
