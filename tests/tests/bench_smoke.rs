//! The benchmarks people run by hand (`just bench append|http|projections`) run end to end at
//! a tiny size: each prints its table and leaves nothing behind in the directory it was given.
//! Counts and shapes are checked, never speed (that is for `just bench` to print, not for tests
//! to judge).

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use planledger_e2e::server::binary;

/// Longest a tiny bench may take before the test gives up on it.
const BENCH_DEADLINE: Duration = Duration::from_secs(300);

/// Runs `planledger bench <args>` with `--dir <scratch>` and returns its standard output,
/// after checking it succeeded within [`BENCH_DEADLINE`] and removed everything it made under
/// `scratch`.
fn bench(args: &[&str], scratch: &Path) -> String {
    let output_dir = tempfile::tempdir().expect("temp dir for the output");
    let (stdout_path, stderr_path) = (
        output_dir.path().join("stdout"),
        output_dir.path().join("stderr"),
    );
    let mut child = Command::new(binary())
        .arg("bench")
        .args(args)
        .arg("--dir")
        .arg(scratch)
        .env("RUST_LOG", "warn")
        .stdout(File::create(&stdout_path).expect("stdout file"))
        .stderr(File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("the planledger binary starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the bench") {
            break status;
        }
        if started.elapsed() > BENCH_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "bench {args:?} did not finish in {BENCH_DEADLINE:?}: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&stdout_path).expect("the bench's output");
    assert!(
        status.success(),
        "bench {args:?} failed: {}\n{stdout}",
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    let left: Vec<_> = std::fs::read_dir(scratch)
        .expect("the scratch directory is still there")
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    assert!(left.is_empty(), "bench {args:?} left {left:?} behind");
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
    let scratch = tempfile::tempdir().expect("temp dir");
    let stdout = bench(
        &[
            "append",
            "--concurrency",
            "1,8",
            "--events-serial",
            "30",
            "--events",
            "400",
            "--rounds",
            "1",
        ],
        scratch.path(),
    );
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
}

#[test]
fn bench_http_prints_both_handlers_the_ratio_and_the_fsyncs_and_cleans_up() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let stdout = bench(
        &["http", "--concurrency", "4", "--requests", "200"],
        scratch.path(),
    );
    for handler in ["trivial", "RecordCheckIn"] {
        let columns = row(&stdout, handler);
        let failures = if handler == "trivial" {
            columns[7]
        } else {
            columns[5]
        };
        assert_eq!(failures, "0", "{handler}: no failed request:\n{stdout}");
    }
    assert!(
        stdout.contains("RecordCheckIn / trivial ceiling:"),
        "{stdout}"
    );
    let fsyncs = row(&stdout, "RecordCheckIn:");
    let count: u64 = fsyncs[1].parse().expect("the fsync count is a number");
    assert!(
        (1..=200).contains(&count),
        "200 commands took between 1 and 200 fsyncs, not {count}"
    );
}

#[test]
fn bench_projections_rebuilds_every_read_model_and_measures_live_lag_and_cleans_up() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let stdout = bench(
        &[
            "projections",
            "--events",
            "2000",
            "--plans",
            "20",
            "--load-seconds",
            "1",
            "--load-rate",
            "200",
            "--load-concurrency",
            "4",
        ],
        scratch.path(),
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
