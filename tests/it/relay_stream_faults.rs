//! The relay when the stream is not what it left: NATS down for longer than the duplicate
//! window, the stream deleted or purged behind its back, and `reset_stream` afterwards.

use std::time::Duration;

use crate::relay_support::*;
use async_nats::jetstream;
use planledger_bus::{HaltReason, RelayConfig, RelayState, RelayStatusHandle, reset_stream};
use planledger_e2e::nats::NatsServer;
use planledger_store::Position;

/// Waits until the relay halts, and returns why.
async fn wait_halted(status: &RelayStatusHandle) -> planledger_bus::RelayStatus {
    within("the relay to halt", async {
        status
            .watch()
            .wait_for(|s| s.state == RelayState::Halted)
            .await
            .expect("the relay status is kept")
            .clone()
    })
    .await
}

async fn jetstream(url: &str) -> jetstream::Context {
    jetstream::new(
        async_nats::connect(url)
            .await
            .expect("the test connects to NATS"),
    )
}

fn checked_often(url: &str) -> RelayConfig {
    RelayConfig {
        stream_check_interval: Duration::from_millis(200),
        ..relay_config(url)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_longer_than_the_duplicate_window_publishes_nothing_twice() {
    let mut nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path());
    let config = RelayConfig {
        duplicate_window: Duration::from_secs(2),
        ..relay_config(&nats.url())
    };
    let (relay, status) = spawn_relay(&store, &config);
    append_events(&store, 0..100).await;
    wait_published(&status, 100).await;

    // Kill the server while the relay is in the middle of a burst, publishes in flight
    // (some stored without their ack reaching the relay, some lost in the socket).
    let appender = tokio::spawn({
        let store = store.clone();
        async move { append_events(&store, 100..4000).await }
    });
    wait_published(&status, 150).await;
    nats.kill();
    eprintln!(
        "NATS killed with {} of {} logged events acknowledged",
        status.current().published_position,
        store.last_position()
    );
    appender
        .await
        .expect("the appends go on while NATS is down");

    // Commands go on while the server is down for longer than the duplicate window, so
    // JetStream can no longer recognise a repeated Msg-Id from before the outage.
    append_events(&store, 4000..4300).await;
    tokio::time::sleep(config.duplicate_window + Duration::from_secs(2)).await;
    append_events(&store, 4300..4400).await;
    nats.restart();

    wait_caught_up(&status, 4400).await;
    kill_relay(relay).await;
    // One message per event, stream sequence == position for every one: nothing twice.
    assert_stream_mirrors_log(&nats.url(), &config.stream, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_halts_the_relay_instead_of_being_recreated_and_reset_republishes() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path());
    let config = checked_often(&nats.url());
    let (relay, status) = spawn_relay(&store, &config);
    append_events(&store, 0..50).await;
    wait_caught_up(&status, 50).await;

    let js = jetstream(&nats.url()).await;
    js.delete_stream(&config.stream)
        .await
        .expect("the test deletes the stream");
    append_events(&store, 50..80).await;
    let halted = wait_halted(&status).await;
    assert_eq!(halted.halted, Some(HaltReason::StreamDeleted));
    let error = halted.last_error.expect("the status says why");
    assert!(
        error.contains("deleted") && error.contains("planledger relay reset"),
        "the error names the fault and the remedy: {error}"
    );
    assert!(
        planledger_bus::find_stream(&js, &config.stream)
            .await
            .expect("look-up")
            .is_none(),
        "the relay does not recreate the stream and publish into it"
    );
    kill_relay(relay).await;

    // A restarted relay halts too: the checkpoint says the stream had messages.
    let (relay, status) = spawn_relay(&store, &config);
    assert_eq!(
        wait_halted(&status).await.halted,
        Some(HaltReason::StreamDeleted)
    );
    kill_relay(relay).await;

    let reset = reset_stream(&store, &config, Position(1))
        .await
        .expect("the reset creates a new stream");
    assert_eq!(
        reset.deleted_messages, None,
        "there was no stream to delete"
    );
    let (relay, status) = spawn_relay(&store, &config);
    append_events(&store, 80..90).await;
    wait_caught_up(&status, 90).await;
    kill_relay(relay).await;
    assert_stream_mirrors_log(&nats.url(), &config.stream, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_stream_halts_the_relay_while_it_runs_and_at_its_next_start() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path());
    let config = checked_often(&nats.url());
    let (relay, status) = spawn_relay(&store, &config);
    append_events(&store, 0..60).await;
    wait_caught_up(&status, 60).await;

    let js = jetstream(&nats.url()).await;
    let stream = js
        .get_stream(&config.stream)
        .await
        .expect("the stream exists");
    stream.purge().await.expect("the test purges the stream");
    let halted = wait_halted(&status).await;
    assert_eq!(halted.halted, Some(HaltReason::StreamPurged));
    assert!(
        halted
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("purged")),
        "the error says the stream was purged: {:?}",
        halted.last_error
    );
    append_events(&store, 60..75).await;
    assert_eq!(
        stream_counts(&nats.url(), &config.stream).await,
        (0, 60),
        "a halted relay publishes nothing into the purged stream"
    );
    kill_relay(relay).await;

    let (relay, status) = spawn_relay(&store, &config);
    assert_eq!(
        wait_halted(&status).await.halted,
        Some(HaltReason::StreamPurged),
        "the purge is found again at session start"
    );
    kill_relay(relay).await;

    let reset = reset_stream(&store, &config, Position(1))
        .await
        .expect("the reset replaces the stream");
    assert_eq!(reset.deleted_messages, Some(0));
    let (relay, status) = spawn_relay(&store, &config);
    wait_caught_up(&status, 75).await;
    kill_relay(relay).await;
    assert_stream_mirrors_log(&nats.url(), &config.stream, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_purge_of_a_stream_that_keeps_everything_halts_the_relay_at_start() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path());
    let config = relay_config(&nats.url());
    let (relay, status) = spawn_relay(&store, &config);
    append_events(&store, 0..40).await;
    wait_caught_up(&status, 40).await;
    kill_relay(relay).await;

    let js = jetstream(&nats.url()).await;
    let stream = js.get_stream(&config.stream).await.expect("stream");
    stream
        .purge()
        .keep(10)
        .await
        .expect("the test purges all but the last 10 messages");
    let (relay, status) = spawn_relay(&store, &config);
    let halted = wait_halted(&status).await;
    assert_eq!(halted.halted, Some(HaltReason::StreamPurged));
    kill_relay(relay).await;
    assert_eq!(stream_counts(&nats.url(), &config.stream).await, (10, 40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_from_a_position_starts_the_new_stream_there_and_survives_restarts() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path());
    let config = relay_config(&nats.url());
    append_events(&store, 0..50).await;

    let reset = reset_stream(&store, &config, Position(41))
        .await
        .expect("reset");
    assert_eq!(reset.from, Position(41));
    let (relay, status) = spawn_relay(&store, &config);
    wait_caught_up(&status, 50).await;
    kill_relay(relay).await;
    append_events(&store, 50..60).await;
    let (relay, status) = spawn_relay(&store, &config);
    let caught_up = wait_caught_up(&status, 60).await;
    kill_relay(relay).await;
    assert_eq!(
        caught_up.published_total, 10,
        "the restart resumed, it did not republish"
    );

    let messages = read_stream(&nats.url(), &config.stream).await;
    let pairs: Vec<(u64, u64)> = messages
        .iter()
        .map(|m| (m.sequence, m.envelope.position))
        .collect();
    let expected: Vec<(u64, u64)> = (41..=60).map(|p| (p - 40, p)).collect();
    assert_eq!(pairs, expected, "position p sits at sequence p - 40, once");

    let refused = reset_stream(&store, &config, Position(62)).await;
    assert!(refused.is_err(), "a reset cannot start past the log's end");
}
