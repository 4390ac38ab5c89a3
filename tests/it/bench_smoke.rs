//! The benchmarks people run by hand (`just bench append|http|projections|history|progress|service`) run end to end at
//! a tiny size: each prints its table and leaves nothing behind in the directory it was given.
//! Counts and shapes are checked, never speed (that is for `just bench` to print, not for tests
//! to judge).

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use planledger_e2e::server::bench_binary;

/// Longest a tiny bench may take before the test gives up on it.
const BENCH_DEADLINE: Duration = Duration::from_secs(300);

/// Starts `planledger-bench <args> --dir <scratch>` (`args` separated by spaces) with its
/// output going to `stdout` and `stderr`.
fn spawn_bench(args: &str, scratch: &Path, stdout: Stdio, stderr: Stdio) -> Child {
    Command::new(bench_binary())
        .args(args.split_whitespace())
        .arg("--dir")
        .arg(scratch)
        .env("RUST_LOG", "warn")
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("the planledger-bench binary starts")
}

/// Waits for `child` until [`BENCH_DEADLINE`] after `started`, then kills it and fails.
fn wait_within_deadline(child: &mut Child, started: Instant, what: &str) -> ExitStatus {
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the bench") {
            return status;
        }
        if started.elapsed() > BENCH_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {BENCH_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Fails unless `scratch` exists and is empty.
fn assert_left_nothing(scratch: &Path, what: &str) {
    let left: Vec<_> = std::fs::read_dir(scratch)
        .expect("the scratch directory is still there")
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    assert!(left.is_empty(), "{what} left {left:?} behind");
}

/// Runs `planledger-bench <args>` with `--dir` a fresh scratch directory and returns its
/// standard output, after checking it succeeded within [`BENCH_DEADLINE`] and removed
/// everything it made under the scratch directory.
fn bench(args: &str) -> String {
    let scratch = tempfile::tempdir().expect("scratch directory");
    let scratch = scratch.path();
    let output_dir = tempfile::tempdir().expect("temp dir for the output");
    let (stdout_path, stderr_path) = (
        output_dir.path().join("stdout"),
        output_dir.path().join("stderr"),
    );
    let what = format!("bench {args}");
    let mut child = spawn_bench(
        args,
        scratch,
        File::create(&stdout_path).expect("stdout file").into(),
        File::create(&stderr_path).expect("stderr file").into(),
    );
    let status = wait_within_deadline(&mut child, Instant::now(), &what);
    let stdout = std::fs::read_to_string(&stdout_path).expect("the bench's output");
    assert!(
        status.success(),
        "{what} failed: {}\n{stdout}",
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    assert_left_nothing(scratch, &what);
    stdout
}

/// The data row of a table whose first column is `first`, split into columns.
fn row<'a>(stdout: &'a str, first: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|columns| columns.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row starting with {first:?} in:\n{stdout}"))
}

#[test]
fn bench_append_prints_each_concurrency_against_the_raw_ceiling_and_cleans_up() {
    let stdout = bench("append --concurrency 1,8 --events-serial 30 --events 400 --rounds 1");
    for (concurrency, events) in [("1", "30"), ("8", "400")] {
        let columns = row(&stdout, concurrency);
        assert_eq!(columns[1], events, "events column of c={concurrency}");
        let ratio: f64 = columns[9].parse().expect("the ratio is a number");
        assert!(ratio > 0.0, "c={concurrency} ratio {ratio}");
    }
    assert!(
        stdout.contains("concurrency 1: append p50"),
        "the serial latency line is printed:\n{stdout}"
    );
    let tree = stdout
        .split("Merkle tree:")
        .nth(1)
        .unwrap_or_else(|| panic!("the Merkle tree's cost is printed:\n{stdout}"));
    for concurrency in ["1", "8"] {
        let columns = row(tree, concurrency);
        let ratio: f64 = columns[3].parse().expect("the tree ratio is a number");
        assert!(ratio > 0.0, "c={concurrency} tree ratio {ratio}");
    }
}

#[test]
fn bench_http_prints_every_handler_their_cpu_use_the_ratios_and_the_fsyncs_and_cleans_up() {
    let stdout = bench("http --concurrency 4 --requests 200");
    for handler in ["trivial", "durable", "RecordCheckIn"] {
        let columns = row(&stdout, handler);
        // The last three columns: failures, CPU per request, CPU use.
        let failures = columns[columns.len() - 3];
        assert_eq!(failures, "0", "{handler}: no failed request:\n{stdout}");
        let used = columns.last().and_then(|c| c.strip_suffix('%'));
        assert!(
            used.and_then(|u| u.parse::<f64>().ok())
                .is_some_and(|u| u > 0.0),
            "{handler}: the share of the cores used, as a percentage:\n{stdout}"
        );
    }
    for ratio in [
        "RecordCheckIn / trivial ceiling:",
        "durable echo / trivial ceiling:",
    ] {
        assert!(stdout.contains(ratio), "{ratio}\n{stdout}");
    }
    for phase in ["durable echo:", "RecordCheckIn:"] {
        let line = stdout
            .lines()
            .find(|line| line.starts_with(phase))
            .unwrap_or_else(|| panic!("no {phase:?} line in:\n{stdout}"));
        let number_after = |label: &str| -> f64 {
            let rest = &line[line
                .find(label)
                .unwrap_or_else(|| panic!("{label:?} in {line}"))
                + label.len()..];
            rest.trim_start()
                .split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("a number after {label:?} in {line}"))
        };
        let count = number_after(phase);
        assert!(
            (1.0..=200.0).contains(&count),
            "200 requests took between 1 and 200 fsyncs, not {count}: {line}"
        );
        // Printed as a number (`number_after` fails otherwise); zero when every fsync was a
        // lone append's own synced write, which the syncer does not time.
        number_after("mean fsync");
        let share = number_after("syncer in fsync");
        assert!((0.0..=100.0).contains(&share), "{line}");
    }
}

#[test]
fn bench_projections_rebuilds_every_read_model_and_measures_live_lag_and_cleans_up() {
    let stdout = bench(
        "projections --events 2000 --plans 20 --load-seconds 1 --load-rate 200 --load-concurrency 4",
    );
    for projection in ["progress", "accountability", "agility"] {
        let rebuild = row(&stdout, projection);
        assert_eq!(
            rebuild[1], "2000",
            "{projection} rebuilt from the whole generated log:\n{stdout}"
        );
    }
    assert_eq!(
        stdout.matches("live lag:").count(),
        2,
        "one paced live-lag run right after the rebuilds and one at steady state:\n{stdout}"
    );
}

#[test]
fn bench_projections_cluster_prints_each_read_model_beside_the_single_node_rate_and_cleans_up() {
    let stdout = bench("projections --events 2000 --plans 20 --cluster --partitions 3");
    assert!(
        stdout.contains("partition logs:"),
        "the partition logs were written:\n{stdout}"
    );
    for projection in ["progress", "accountability", "agility"] {
        let rows: Vec<Vec<&str>> = stdout
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .filter(|columns| columns.first() == Some(&projection))
            .collect();
        assert_eq!(rows.len(), 2, "a single-node and a cluster row:\n{stdout}");
        let cluster = &rows[1];
        assert_eq!(cluster.len(), 7, "{cluster:?}");
        assert_eq!(cluster[1], "2000", "every event rebuilt:\n{stdout}");
        let single: f64 = rows[0][3].parse().expect("single-node events/s");
        let beside: f64 = cluster[5].parse().expect("the single-node rate beside it");
        assert!(
            (single - beside).abs() <= 1.0,
            "the cluster row names the same run's single-node rate:\n{stdout}"
        );
        let ratio: f64 = cluster[6].parse().expect("ratio");
        assert!(ratio > 0.0, "{cluster:?}");
    }
}

#[test]
fn bench_history_prints_as_of_latency_and_export_rates_next_to_the_raw_scan_and_cleans_up() {
    let stdout = bench("history --events 3000 --plan-events 1200 --samples 20");
    assert!(
        stdout.contains("one plan of 1200 and 2 of 1000"),
        "the log's shape:\n{stdout}"
    );
    for kind in ["version", "position", "time", "all"] {
        let columns = row(&stdout, kind);
        for (index, what) in [(1, "p50"), (2, "p99"), (3, "max")] {
            let value: f64 = columns[index]
                .parse()
                .unwrap_or_else(|_| panic!("{kind} {what} is a number:\n{stdout}"));
            assert!(value >= 0.0, "{kind} {what}: {value}");
        }
    }
    for pass in [
        "raw-scan",
        "ndjson",
        "ndjson+proof",
        "parquet",
        "parquet+proof",
    ] {
        let columns = row(&stdout, pass);
        assert_eq!(
            columns[1], "3200",
            "{pass} covered the whole log:\n{stdout}"
        );
        let ratio: f64 = columns[5]
            .parse()
            .expect("the ratio to the raw scan is a number");
        assert!(ratio > 0.0, "{pass} ratio {ratio}");
    }
    for proof in ["inclusion", "consistency"] {
        let columns = row(&stdout, proof);
        for (index, what) in [(1, "p50"), (2, "p99"), (3, "max")] {
            let value: f64 = columns[index]
                .parse()
                .unwrap_or_else(|_| panic!("{proof} proof {what} is a number:\n{stdout}"));
            assert!(value > 0.0, "{proof} proof {what}: {value}");
        }
    }
    assert!(
        stdout.contains("parquet / raw read rate:"),
        "the ratio line is printed:\n{stdout}"
    );
    assert!(
        stdout.contains("with --proof / without: ndjson")
            && stdout.contains("proofs for an export: all 3200 positions in order"),
        "the proof lines are printed:\n{stdout}"
    );
}

#[test]
fn an_interrupted_bench_removes_its_scratch_directory() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let args = "append --concurrency 64 --events 100000000 --rounds 1";
    let mut child = spawn_bench(args, scratch.path(), Stdio::null(), Stdio::null());
    // Interrupted only once its databases exist (a directory inside the scratch directory).
    let started = Instant::now();
    let has_databases = || {
        std::fs::read_dir(scratch.path())
            .expect("scratch directory")
            .filter_map(Result::ok)
            .any(|entry| std::fs::read_dir(entry.path()).is_ok_and(|mut d| d.next().is_some()))
    };
    while !has_databases() {
        assert!(
            started.elapsed() < BENCH_DEADLINE,
            "the bench made no database"
        );
        assert!(
            child.try_wait().expect("waiting").is_none(),
            "the bench ended before it was interrupted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = i32::try_from(child.id()).expect("a pid fits in i32");
    // SAFETY: sends SIGINT to the child this test started and has not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0, "SIGINT sent");
    let status = wait_within_deadline(&mut child, started, "the interrupted bench");
    assert!(!status.success(), "an interrupted bench fails: {status}");
    assert_left_nothing(scratch.path(), "the interrupted bench");
}

#[test]
fn bench_service_drives_serve_from_outside_beside_postgres_and_cleans_up() {
    let stdout = bench("service --seconds 1 --concurrency 4");
    // The figure after a row's label: requests per second.
    let per_second = |label: &str| -> f64 {
        let line = stdout
            .lines()
            .find(|line| line.starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} row in:\n{stdout}"));
        line[label.len()..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no rate in {line:?}"))
    };
    for label in [
        "RecordCheckIn via serve, embedded",
        "RecordCheckIn via serve, NATS relay",
        "RecordCheckIn via serve, projectors apart",
        "GET /healthz, same serve (embedded)",
    ] {
        assert!(per_second(label) > 0.0, "{label}:\n{stdout}");
    }
    assert!(
        stdout.contains("projector processes (projectors apart run):"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ratio serve (NATS relay) / serve (embedded):"),
        "{stdout}"
    );
    // PostgreSQL is measured where it is installed; where it is not, the bench says so.
    if stdout.contains("PostgreSQL: SKIPPED") {
        eprintln!("NOTE: the PostgreSQL peer was skipped on this machine:\n{stdout}");
    } else {
        assert!(
            per_second("PostgreSQL event-table INSERT (pgbench)") > 0.0,
            "{stdout}"
        );
        assert!(
            stdout.contains("ratio serve (embedded) / PostgreSQL:"),
            "{stdout}"
        );
    }
}

#[test]
fn bench_progress_prints_cold_and_warm_progress_reads_and_the_domain_share_and_cleans_up() {
    let stdout = bench("progress --goals 6 --check-ins 60 --samples 3");
    assert!(
        stdout.contains("6 goals, 60 check-ins"),
        "the plan's shape:\n{stdout}"
    );
    for kind in [
        "cold-read-model",
        "cold-as-of-log",
        "warm-read-model",
        "warm-as-of-log",
        "forecast_backtest",
        "progress_report",
    ] {
        let columns = row(&stdout, kind);
        for (index, what) in [(1, "p50"), (2, "p99"), (3, "max")] {
            let value: f64 = columns[index]
                .parse()
                .unwrap_or_else(|_| panic!("{kind} {what} is a number:\n{stdout}"));
            assert!(value >= 0.0, "{kind} {what}: {value}");
        }
    }
}
