//! Exactly once: every event in the log reaches the JetStream stream once, in position order,
//! though the broker crashes mid-stream and the relay itself is killed and restarted.

use crate::relay_support::*;
use planledger_bus::RelayState;
use planledger_e2e::nats::NatsServer;

const TOTAL: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_published_exactly_once_in_order_across_broker_crash_and_relay_kill() {
    let mut nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path());
    let config = relay_config(&nats.url());
    let (relay, status) = spawn_relay(&store, &config);

    // Half the history; the broker crashes (SIGKILL) while the relay is publishing it.
    append_events(&store, 0..5_000).await;
    wait_published(&status, 1_000).await;
    nats.stop();

    // Commands keep succeeding while NATS is down, and the relay notices the outage.
    append_events(&store, 5_000..7_000).await;
    within("the relay to notice the outage", async {
        status
            .watch()
            .wait_for(|s| s.state == RelayState::Retrying && s.lag_positions > 0)
            .await
            .expect("the relay is running");
    })
    .await;

    // The broker comes back on the same port and store; the relay catches up on its own and
    // is killed (its task aborted) while it still has publishes in flight.
    nats.restart();
    append_events(&store, 7_000..9_000).await;
    wait_published(&status, 7_500).await;
    kill_relay(relay).await;

    // A new relay finishes the job.
    append_events(&store, 9_000..TOTAL).await;
    let (relay, status) = spawn_relay(&store, &config);
    wait_caught_up(&status, TOTAL).await;
    kill_relay(relay).await;

    assert_eq!(store.last_position().get(), TOTAL);
    assert_stream_mirrors_log(&nats.url(), &config.stream, &store).await;
}
