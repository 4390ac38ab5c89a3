//! Cluster mode's partition log on the 3-server loopback cluster: `cluster init`'s
//! provisioning and the JetStream committer (atomic batches, the expected-last-sequence fence,
//! reading back byte for byte).
//!
//! Self-contained: it starts its own cluster and calls the bus crate directly.

use std::time::Duration;

use planledger_bus::cluster::{self, ServerDurability};
use planledger_bus::{BusError, JetStreamCommitter, PartitionLogConfig};
use planledger_e2e::cluster::NatsCluster;
use planledger_store::{
    CommandHeader, CommitError, CommitEvent, Committer, Envelope, GENESIS_HASH, PartitionCount,
    Position, StreamId, Version,
};
use serde_json::value::RawValue;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// `count` chained events at positions `after + 1 ..`, on a few plans, with awkward content.
fn events(after: u64, count: u64, prev_hash: &str) -> Vec<CommitEvent> {
    let mut prev = prev_hash.to_string();
    (after + 1..=after + count)
        .map(|position| {
            let plan = position % 3;
            let mut envelope = Envelope {
                position: Position(position),
                stream: StreamId::new(format!("acme/plan.{plan}")).expect("valid stream id"),
                version: Version(position),
                event_id: uuid::Uuid::now_v7(),
                event_type: "CheckInRecorded".into(),
                schema_version: 1,
                occurred_at: jiff::Timestamp::now(),
                recorded_at: jiff::Timestamp::now(),
                actor: "ålice \"the\" actor".into(),
                command_id: (position % 2 == 0).then(|| format!("cmd-{position}")),
                correlation_id: None,
                causation_id: Some("msg\u{1}".into()),
                traceparent: None,
                data: RawValue::from_string(format!(
                    r#"{{"n": {position}, "note":"ünïcode \"q\" \\ \u00e9 😀"}}"#
                ))
                .expect("valid JSON"),
                prev_hash: prev.clone(),
                hash: String::new(),
            };
            envelope.hash = envelope.compute_hash();
            prev = envelope.hash.clone();
            CommitEvent {
                position: envelope.position,
                stream: envelope.stream.clone(),
                event_type: envelope.event_type.clone(),
                stored: serde_json::to_vec(&envelope).expect("envelopes serialize"),
                command: (position % 2 == 0).then(|| CommandHeader {
                    scope: "acme".into(),
                    id: format!("cmd-{position}"),
                    fingerprint: (position % 4 == 0).then(|| "ab".repeat(32)),
                }),
            }
        })
        .collect()
}

fn last_hash(events: &[CommitEvent]) -> String {
    let last = events.last().expect("some events");
    serde_json::from_slice::<Envelope>(&last.stored)
        .expect("stored JSON")
        .hash
}

/// Every committed event read back equals what was committed, byte for byte.
fn assert_read_back(committer: &JetStreamCommitter, committed: &[CommitEvent]) {
    let mut read = Vec::new();
    let mut after = Position(0);
    loop {
        let batch = committer.read_after(after, 400).expect("the log reads");
        if batch.is_empty() {
            break;
        }
        after = batch.last().expect("non-empty").envelope.position;
        read.extend(batch);
    }
    assert_eq!(read.len(), committed.len());
    for (event, expected) in read.iter().zip(committed) {
        let stored = serde_json::to_vec(&event.envelope).expect("serializes");
        assert_eq!(
            String::from_utf8_lossy(&stored),
            String::from_utf8_lossy(&expected.stored),
            "position {}",
            expected.position
        );
        assert_eq!(
            event.command, expected.command,
            "position {}",
            expected.position
        );
    }
}

async fn durability(cluster: &NatsCluster) -> Vec<ServerDurability> {
    let mut servers = Vec::new();
    for monitor in cluster.monitor_urls() {
        let varz: serde_json::Value = reqwest::get(format!("{monitor}/varz"))
            .await
            .expect("the monitoring endpoint answers")
            .json()
            .await
            .expect("/varz is JSON");
        servers.push(ServerDurability::from_varz(&varz).expect("a JetStream server"));
    }
    servers
}

#[test]
fn partition_log_commits_fences_and_reads_back_on_a_three_server_cluster() {
    let cluster = NatsCluster::start();
    let rt = runtime();
    let client = rt
        .block_on(planledger_bus::connect(
            &cluster.url("n1"),
            "partition-log-test",
        ))
        .expect("connects");

    // Before `cluster init`: the committer refuses, naming the command that creates streams.
    let missing = rt
        .block_on(JetStreamCommitter::open(
            client.clone(),
            PartitionLogConfig::new(0),
        ))
        .expect_err("no stream yet");
    assert!(matches!(missing, BusError::PartitionStreamMissing { .. }));
    assert!(
        missing.to_string().contains("planledger cluster init"),
        "{missing}"
    );

    // Provisioning: every server is checked; the streams are R3; a re-run is a no-op.
    let servers = rt.block_on(durability(&cluster));
    assert!(servers.iter().all(|s| s.sync_always), "{servers:?}");
    let four = PartitionCount::new(4).expect("valid count");
    let first = rt
        .block_on(cluster::provision(&client, four, &servers))
        .expect("provisions");
    assert!(first.created_config);
    assert_eq!(first.replicas, 3);
    assert_eq!(
        first.created_streams,
        [
            "PLANLEDGER_P00",
            "PLANLEDGER_P01",
            "PLANLEDGER_P02",
            "PLANLEDGER_P03"
        ]
    );
    let again = rt
        .block_on(cluster::provision(&client, four, &servers))
        .expect("a re-run succeeds");
    assert!(!again.created_config);
    assert!(again.created_streams.is_empty());
    assert_eq!(again.config, first.config);
    let other = rt
        .block_on(cluster::provision(
            &client,
            PartitionCount::new(16).expect("valid count"),
            &servers,
        ))
        .expect_err("another count is refused");
    assert!(
        matches!(
            other,
            BusError::ClusterMismatch {
                existing: 4,
                asked: 16
            }
        ),
        "{other}"
    );
    assert!(other.to_string().contains('4') && other.to_string().contains("16"));
    let partial = rt
        .block_on(cluster::provision(&client, four, &servers[..2]))
        .expect_err("checking two of three servers is not enough");
    assert!(matches!(partial, BusError::NotDurable { .. }), "{partial}");
    let read = rt
        .block_on(cluster::read_cluster_config(&client))
        .expect("reads")
        .expect("exists");
    assert_eq!(read, first.config);

    let open = |partition: u32| {
        let mut config = PartitionLogConfig::new(partition);
        config.timeout = Duration::from_secs(20);
        rt.block_on(JetStreamCommitter::open(client.clone(), config))
            .expect("the partition stream exists")
    };
    let writer = open(1);
    // Another writer of the same partition, on its own connection: only the fence stops it.
    let other_client = rt
        .block_on(planledger_bus::connect(
            &cluster.url("n2"),
            "partition-log-rival",
        ))
        .expect("connects");
    let rival = {
        let mut config = PartitionLogConfig::new(1);
        config.timeout = Duration::from_secs(20);
        rt.block_on(JetStreamCommitter::open(other_client, config))
            .expect("opens")
    };
    assert_eq!(writer.last_position().expect("stream info"), Position(0));
    assert!(
        writer
            .read_after(Position(0), 10)
            .expect("reads")
            .is_empty()
    );

    // A batch of one, then a batch of three: appended at exactly the positions named.
    let mut committed = events(0, 1, GENESIS_HASH);
    writer.commit(Position(0), &committed).expect("commits");
    let three = events(1, 3, &last_hash(&committed));
    writer.commit(Position(1), &three).expect("commits");
    committed.extend(three);
    assert_eq!(writer.last_position().expect("stream info"), Position(4));
    assert_eq!(rival.last_position().expect("stream info"), Position(4));

    // The fence: a writer whose view ends at 1 cannot append, and nothing of its batch lands.
    let stale = events(1, 5, &last_hash(&committed[..1]));
    match rival.commit(Position(1), &stale) {
        Err(CommitError::Refused(detail)) => {
            assert!(detail.contains("10071"), "{detail}");
        }
        other => panic!("a stale writer must be refused, got {other:?}"),
    }
    assert_eq!(writer.last_position().expect("stream info"), Position(4));
    // Also when its batch is exactly as long as what beat it (the number alone matches the
    // old end, 1 + 3 = 4, but the batch names 1).
    let same_length = events(1, 3, &last_hash(&committed[..1]));
    assert!(matches!(
        rival.commit(Position(1), &same_length),
        Err(CommitError::Refused(_))
    ));
    // A writer that caught up (knows 4) appends.
    let caught_up = events(4, 2, &last_hash(&committed));
    rival
        .commit(Position(4), &caught_up)
        .expect("commits after catching up");
    committed.extend(caught_up);
    // And now the first writer is the stale one.
    let behind = events(4, 1, &last_hash(&committed[..4]));
    assert!(matches!(
        writer.commit(Position(4), &behind),
        Err(CommitError::Refused(_))
    ));

    // A full atomic batch of 1000 events.
    let big = events(6, 1000, &last_hash(&committed));
    writer
        .commit(Position(6), &big)
        .expect("a batch of 1000 commits");
    committed.extend(big);
    assert_eq!(writer.last_position().expect("stream info"), Position(1006));

    // Read back: every event, in order, byte-identical stored JSON, command records intact.
    assert_read_back(&writer, &committed);
    let tail = writer.read_after(Position(1000), 100).expect("reads");
    assert_eq!(tail.len(), 6, "fewer than asked only at the end");
    assert_eq!(tail[0].envelope.position, Position(1001));
    let middle = writer.read_after(Position(2), 3).expect("reads");
    let positions: Vec<u64> = middle.iter().map(|e| e.envelope.position.get()).collect();
    assert_eq!(positions, [3, 4, 5]);

    // Partitions are separate logs.
    let other_partition = open(2);
    assert_eq!(
        other_partition.last_position().expect("stream info"),
        Position(0)
    );
}

/// A batch whose first message finds no stream leader (two of three servers down) cannot have
/// been stored: the committer says so (`Unavailable`, nothing stored, retry) instead of "outcome
/// unknown", and once the servers are back the stream ends where it did and the same position
/// takes a batch.
#[test]
fn a_batch_whose_first_message_nobody_took_is_answered_not_stored() {
    let mut cluster = NatsCluster::start();
    cluster.init_planledger(1);
    let rt = runtime();
    let leader = rt.block_on(crate::cluster_commit::stream_leader(&cluster));
    let survivor = planledger_e2e::cluster::MEMBERS
        .into_iter()
        .find(|member| *member != leader)
        .expect("a follower");
    let client = rt
        .block_on(planledger_bus::connect(
            &cluster.url(survivor),
            "partition-log-survivor",
        ))
        .expect("connects");
    let mut config = PartitionLogConfig::new(0);
    config.timeout = Duration::from_secs(30);
    let committer = rt
        .block_on(JetStreamCommitter::open(client, config))
        .expect("the partition stream exists");
    let first = events(0, 2, GENESIS_HASH);
    committer.commit(Position(0), &first).expect("commits");

    // The leader and the other follower die: the survivor has no quorum, so no leader, and
    // nobody takes the stream's subjects.
    for member in planledger_e2e::cluster::MEMBERS {
        if member != survivor {
            cluster.kill(member);
        }
    }
    let next = events(2, 3, &last_hash(&first));
    match committer.commit(Position(2), &next) {
        Err(CommitError::Unavailable(detail)) => {
            assert!(detail.contains("nothing was stored"), "{detail}");
        }
        other => panic!("a batch nobody took is not stored, got {other:?}"),
    }

    for member in planledger_e2e::cluster::MEMBERS {
        if member != survivor {
            cluster.restart(member);
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let end = loop {
        match committer.last_position() {
            Ok(end) => break end,
            Err(error) => assert!(
                std::time::Instant::now() < deadline,
                "the stream never answered again: {error}; {}",
                cluster.logs()
            ),
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(end, Position(2), "nothing of the batch was stored");
    // The same position takes the batch (retried while the stream still elects its leader:
    // an unavailable stream stores nothing).
    loop {
        match committer.commit(Position(2), &next) {
            Ok(()) => break,
            Err(CommitError::Unavailable(detail)) if std::time::Instant::now() < deadline => {
                eprintln!("not yet: {detail}");
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(error) => panic!("the same position takes the batch: {error}"),
        }
    }
    let mut committed = first;
    committed.extend(next);
    assert_read_back(&committer, &committed);
}

/// `cluster init` returns only once every partition stream has a leader, so the first commit
/// after it does not meet a stream still electing one.
#[test]
fn cluster_init_returns_once_every_partition_stream_has_a_leader() {
    let cluster = NatsCluster::start();
    cluster.init_planledger(8);
    let rt = runtime();
    let client = rt
        .block_on(planledger_bus::connect(&cluster.urls().join(","), "probe"))
        .expect("connects");
    for partition in 0..8 {
        let stream = planledger_proto::subjects::partition_stream_name(partition);
        assert!(
            rt.block_on(crate::cluster_commit::leader_now(&client, &stream))
                .is_some(),
            "{stream} has no leader right after cluster init"
        );
    }
}
