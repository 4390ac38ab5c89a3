//! Crash loop: the service is killed with SIGKILL again and again under concurrent HTTP load,
//! and restarted on the same data directory each time. After every kill `planledger verify`
//! walks the hash chain of the stopped log; after every restart the whole global log is read
//! back: positions and each plan's versions are gap-free, and every command the service
//! acknowledged is there once, at the positions and with the event ids it was answered with.
//!
//! `PLANLEDGER_SOAK_CYCLES` sets the number of kills (20 by default; `just soak` runs 200).
//! The figures (acknowledged, found, lost, restart time p50/p99) are printed, never asserted
//! on time.

use std::time::{Duration, Instant};

use planledger_e2e::load::{CommandLoad, LogContents, quantile};
use planledger_e2e::server::Planledger;
use rand::Rng;

const DEFAULT_CYCLES: usize = 20;
const WRITERS: usize = 8;

fn cycles() -> usize {
    match std::env::var("PLANLEDGER_SOAK_CYCLES") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("PLANLEDGER_SOAK_CYCLES={text:?} is not a count")),
        Err(_) => DEFAULT_CYCLES,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_command_survives_repeated_sigkills_under_load() {
    let cycles = cycles();
    let mut server = Planledger::start(&["--rate-limit-per-second", "0"]);
    let token = server.token("soak", "soaker", "admin");
    let mut load = CommandLoad::seed(&server, &token, WRITERS).await;
    let mut rng = rand::rng();
    let mut restarts = Vec::with_capacity(cycles);
    let started = Instant::now();

    for cycle in 1..=cycles {
        load.start();
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        server.kill();
        load.stop().await;

        let (verified, printed) = server.verify();
        assert!(
            verified,
            "cycle {cycle}: planledger verify failed after the kill: {printed}"
        );

        let restart = Instant::now();
        tokio::task::block_in_place(|| server.restart());
        restarts.push(restart.elapsed());

        let acked = load.acked();
        let log = LogContents::read(&server, &token).await;
        log.assert_holds(&acked, &format!("cycle {cycle}"));
    }

    // The commands still unanswered at the last kill are answered now, with their keys.
    load.start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    load.stop().await;
    let acked = load.acked();
    let log = LogContents::read(&server, &token).await;
    let lost = log.missing(&acked).len();
    let events: usize = acked.iter().map(|a| a.events.len()).sum();
    let resent = acked.iter().filter(|a| a.attempts > 1).count();
    let resent_repeats = acked
        .iter()
        .filter(|a| a.attempts > 1 && a.deduplicated)
        .count();
    println!(
        "crash loop: {cycles} SIGKILLs under load of {WRITERS} writers in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "  acked {} commands ({events} events), found {}, lost {lost}; log holds {} events",
        acked.len(),
        acked.len() - lost,
        log.events.len()
    );
    println!(
        "  {resent} commands were sent again after getting no answer ({resent_repeats} of them \
         had been appended before the kill and were answered as repeats); {} attempts unanswered",
        load.unanswered()
    );
    println!(
        "  restart (spawn to listening, RocksDB recovery included): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        quantile(&restarts, 0.50).as_secs_f64() * 1e3,
        quantile(&restarts, 0.99).as_secs_f64() * 1e3,
        quantile(&restarts, 1.0).as_secs_f64() * 1e3,
    );
    assert_eq!(lost, 0, "acknowledged commands were lost");
    assert!(
        acked.len() > cycles,
        "the load made progress between kills ({} commands acknowledged)",
        acked.len()
    );

    server.kill();
    let (verified, printed) = server.verify();
    assert!(verified, "planledger verify failed at the end: {printed}");
}
