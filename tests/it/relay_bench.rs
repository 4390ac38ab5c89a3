//! The relay benchmark runs end to end against a real nats-server. The numbers are printed,
//! never asserted; `cargo test --release -p planledger-e2e --test it relay_bench -- --ignored
//! --nocapture` runs the full-size measurement.

use std::time::Duration;

use crate::relay_support::{init_logs, within};
use planledger_bench::relay::{RelayBenchConfig, bench_relay};
use planledger_e2e::nats::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_bench_reports_throughput_next_to_the_raw_ceiling_and_lag() {
    init_logs();
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = RelayBenchConfig {
        nats_url: nats.url(),
        data_dir: dir.path().to_path_buf(),
        events: 2_000,
        rounds: 1,
        steady_rate: 500,
        steady_duration: Duration::from_secs(1),
        ..RelayBenchConfig::default()
    };
    let report = within("the bench", bench_relay(config))
        .await
        .expect("the bench runs");
    println!("{report}");
    assert_eq!(report.events, 2_000);
    assert!(report.raw_per_second > 0.0 && report.relay_per_second > 0.0);
    // The fast-ingest batch ran to its final ack (which names every message) and was timed.
    assert!(report.fast_ingest_per_second > 0.0, "{report}");
    assert!(
        report.raw_cpu_us > 0.0 && report.fast_ingest_cpu_us > 0.0,
        "{report}"
    );
    assert_eq!(report.steady_events, 500, "every paced append was measured");
    assert!(report.lag_p50_ms <= report.lag_p99_ms && report.lag_p99_ms <= report.lag_max_ms);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "full-size benchmark: run with --ignored --nocapture"]
async fn relay_bench_full_size() {
    init_logs();
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = RelayBenchConfig {
        nats_url: nats.url(),
        data_dir: dir.path().to_path_buf(),
        ..RelayBenchConfig::default()
    };
    let report = bench_relay(config).await.expect("the bench runs");
    println!("{report}");
}
