//! `planledger-bench`: throughput and latency figures, printed next to a ceiling measured in
//! the same run. Benchmarks print; they never assert times.
//!
//! The benchmarks live here, outside the product crates: the `planledger` binary and the
//! library crates carry no benchmark code. What a benchmark needs of the event log's internals
//! (the log's RocksDB options and key encoding, for [`plain_log::PlainLog`]) and of the relay
//! (the publish a relay would make, for the relay benchmark's raw ceiling) is exposed by
//! `planledger-store` and `planledger-bus` behind their `bench` feature, which only this crate
//! enables.
//!
//! - this module: the commands, `append` (group commit vs raw synced RocksDB batches) and the
//!   helpers the benchmarks share (scratch directories, progress bars, latency summaries);
//! - [`cluster`]: `append --log-commit jetstream` and a private 3-server nats cluster;
//! - [`http`], [`projections`], [`history`], [`nodes`] (`cluster`), [`service`]: one benchmark
//!   each;
//! - [`relay`]: the relay benchmark behind `relay`;
//! - [`plain_log`]: the log's RocksDB with none of the log's logic, the append bench's ceiling.

pub mod cluster;
pub mod history;
pub mod http;
pub mod nodes;
pub mod plain_log;
pub mod progress;
pub mod projections;
mod projections_cluster;
pub mod relay;
pub mod service;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use planledger_store::{
    AppendMeta, AppendRequest, Commit, CommitEvent, EventStore, ExpectedVersion, LogHealth,
    NewEvent, Position, StoreOptions, StreamId, Version,
};

/// How an append becomes durable (the values of `serve --log-commit`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogCommit {
    /// One node: the local write-ahead log is fsynced before an answer (the default).
    #[default]
    Local,
    /// Cluster mode: each append is committed to the partition's JetStream stream (the truth)
    /// before it is applied to the local log (a cache) and answered.
    Jetstream,
}

/// What to measure.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Group-commit appends at several concurrencies vs raw synced RocksDB batches, and the
    /// same log with and without its Merkle tree.
    Append(AppendArgs),
    /// RecordCheckIn over HTTP vs a trivial axum JSON handler (and that handler plus one
    /// durable append), same client and concurrency.
    Http(HttpArgs),
    /// Relay throughput vs raw JetStream async publishes, and relay lag at a steady rate.
    Relay(RelayArgs),
    /// Read-model rebuild events/s from a log of 1,000,000+ events, and live lag under load.
    Projections(crate::projections::ProjectionsArgs),
    /// As-of query latency on a plan of 100,000 events in a log of 1,000,000, Merkle proof
    /// latency (inclusion, consistency) over that log, and export throughput (NDJSON, Parquet)
    /// vs the raw read rate of the log column family.
    History(crate::history::HistoryArgs),
    /// Progress-read latency on a plan of 200 goals and 20,000 check-ins with half its goals
    /// closed (the forecast back-test's worst case), current and as of, with the domain's share.
    Progress(crate::progress::ProgressArgs),
    /// Cluster mode: commands/s through the HTTP door of 1, 2 and 3 writer nodes (with each
    /// process's CPU), the routing overhead of a forwarded command, and the failover time.
    Cluster(crate::nodes::NodesArgs),
    /// The service as deployed: RecordCheckIn through the `planledger serve` binary (embedded
    /// projectors on, a fresh Idempotency-Key per command; without and with the NATS relay,
    /// and with the relay and the read models as their own `planledger projector` processes)
    /// from this process at c=64, `GET /healthz` on the same server, and a PostgreSQL event
    /// table driven by pgbench in the same run, with each one's server CPU per request.
    Service(crate::service::ServiceArgs),
}

/// Flags of `bench relay`.
#[derive(clap::Args, Debug)]
pub struct RelayArgs {
    /// NATS URL; without it a private nats-server (`$PLANLEDGER_NATS_SERVER` or `nats-server`
    /// on PATH) is started on a free port with a temporary store, and stopped afterwards.
    #[arg(long, env = "PLANLEDGER_NATS")]
    pub nats: Option<String>,
    /// Events for the throughput comparison.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Steady rate (events/s) for the lag measurement.
    #[arg(long, default_value_t = 5_000)]
    pub steady_rate: u64,
}

/// Flags of `bench http`.
#[derive(clap::Args, Debug)]
pub struct HttpArgs {
    /// Concurrent clients (each on its own plan, so no client waits on another's version).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Requests per measurement.
    #[arg(long, default_value_t = 20_000)]
    pub requests: u64,
    /// Directory for the temporary log (default: the system temp dir). Put it on the disk the
    /// service's data lives on: the fsync's cost is part of what is measured.
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

/// Flags of `bench append`.
#[derive(clap::Args, Debug)]
pub struct AppendArgs {
    /// Concurrency levels (appending tasks), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,64,1024")]
    pub concurrency: Vec<usize>,
    /// Events appended at concurrency 1.
    #[arg(long, default_value_t = 2_000)]
    pub events_serial: u64,
    /// Events appended at every higher concurrency.
    #[arg(long, default_value_t = 50_000)]
    pub events: u64,
    /// Approximate payload size in bytes.
    #[arg(long, default_value_t = 300)]
    pub payload_bytes: usize,
    /// Directory for the temporary databases (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Rounds per concurrency (the log and the log keeping no Merkle tree, in turns first, then
    /// the raw ceilings, each on a fresh database); the round with the median ratio is printed,
    /// with the range of all rounds' ratios.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// How appends become durable: `local` (the write-ahead log's fsync, vs raw synced RocksDB
    /// batches) or `jetstream` (cluster mode on a private 3-server JetStream cluster started
    /// on loopback, vs raw atomic batches of the same sizes on that cluster, with the local
    /// figure beside it).
    #[arg(long, value_enum, default_value_t = LogCommit::Local)]
    pub log_commit: LogCommit,
}

/// Runs a benchmark. Ctrl-C stops it: the benchmark is dropped, which removes its scratch
/// directories and stops the nats-server it started, and the command fails.
pub async fn run(what: BenchCommand) -> Result<()> {
    let bench = async move {
        match what {
            BenchCommand::Append(args) => append(args).await,
            BenchCommand::Http(args) => crate::http::run(args).await,
            BenchCommand::Relay(args) => run_relay(args).await,
            BenchCommand::Projections(args) => crate::projections::run(args).await,
            BenchCommand::History(args) => crate::history::run(args).await,
            BenchCommand::Progress(args) => crate::progress::run(args).await,
            BenchCommand::Cluster(args) => crate::nodes::run(args).await,
            BenchCommand::Service(args) => crate::service::run(args).await,
        }
    };
    // Ctrl-C is polled first, so its handler is in place before the benchmark makes anything.
    tokio::select! {
        biased;
        signal = tokio::signal::ctrl_c() => {
            signal.context("listening for Ctrl-C")?;
            anyhow::bail!("interrupted; the benchmark's scratch directories are removed")
        }
        result = bench => result,
    }
}

/// Latency summary.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Maximum.
    pub max: Duration,
}

/// Summarises a set of latencies (sorts them).
pub fn summarize(samples: &mut [Duration]) -> Latency {
    samples.sort_unstable();
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Latency {
        p50: at(0.50),
        p99: at(0.99),
        max: samples.last().copied().unwrap_or_default(),
    }
}

/// CPU cores this process may run on (1 if that cannot be told).
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// CPU time (user and system) the whole process has used so far, every thread included.
pub fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage only writes the struct it is given, and RUSAGE_SELF is always valid;
    // the struct starts zeroed, so it is initialised even if the call failed.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Formats a duration in milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Distinct payloads the append bench cycles through.
const PAYLOAD_VARIANTS: u64 = 256;

fn payload(n: u64, bytes: usize) -> serde_json::Value {
    let filler = "x".repeat(bytes.saturating_sub(120));
    serde_json::json!({
        "goal_id": format!("goal-{}", n % 50),
        "value": n as f64 * 0.5,
        "confidence": 0.7,
        "status": "on_track",
        "note": filler,
    })
}

/// A progress bar for a benchmark phase.
pub fn progress_bar(total: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg:>24} {bar:30} {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(label.to_string());
    bar
}

/// A progress bar for many small operations done by many tasks: the tasks count into `done`
/// and a ticker task redraws the bar ten times a second. Ticking the bar itself on every
/// operation (a clock read and a shared lock each time) cost the tasks ~0.2 µs per operation,
/// which the benchmark would have counted against the code it measures.
pub struct CountedProgress {
    /// Operations finished so far.
    pub done: Arc<AtomicU64>,
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl CountedProgress {
    /// Starts the bar and its ticker (on the current runtime).
    pub fn start(total: u64, label: &str) -> Self {
        let bar = progress_bar(total, label);
        let done = Arc::new(AtomicU64::new(0));
        let ticker = tokio::spawn({
            let (bar, done) = (bar.clone(), done.clone());
            async move {
                let mut every = tokio::time::interval(Duration::from_millis(100));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    every.tick().await;
                    bar.set_position(done.load(Ordering::Relaxed));
                }
            }
        });
        Self { done, bar, ticker }
    }

    /// Stops the ticker and clears the bar (as dropping it does, on any way out of a bench).
    pub fn finish(self) {
        drop(self);
    }
}

impl Drop for CountedProgress {
    fn drop(&mut self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

struct AppendRun {
    events: u64,
    elapsed: Duration,
    latency: Latency,
    /// Events per fsync -> how many fsyncs: the unit the raw ceiling writes with `sync = true`.
    sync_sizes: Vec<(usize, u64)>,
    /// How many `WriteBatch`es the writer formed (several may share one fsync).
    batches: u64,
    stored_bytes: usize,
    /// Writer time spent on batches (not waiting), for the per-event cost column.
    writer_busy: Duration,
    /// CPU time the whole process used while appending (all threads: appenders, writer,
    /// syncer, RocksDB's own).
    cpu: Duration,
    /// Cluster mode: the events the log committed, as its committer was handed them (for the
    /// raw ceiling's messages). Empty in local mode.
    committed: Vec<CommitEvent>,
}

async fn run_appends(
    dir: &std::path::Path,
    concurrency: usize,
    total: u64,
    payload_bytes: usize,
    commit: Commit,
    tree: bool,
) -> Result<AppendRun> {
    let external = commit.is_external();
    let store = if external {
        // The committer blocks on the runtime: the log is opened (and catches up) off it.
        let dir = dir.to_path_buf();
        let store = tokio::task::spawn_blocking(move || {
            EventStore::open(
                dir,
                StoreOptions {
                    commit,
                    ..StoreOptions::default()
                },
            )
        })
        .await??;
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(store.health(), LogHealth::CatchingUp) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the cluster-mode log did not catch up with its stream"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        store
    } else {
        EventStore::open(
            dir,
            StoreOptions {
                merkle_tree: tree,
                ..StoreOptions::default()
            },
        )?
    };
    // Payloads are rendered before the clock starts (the raw ceiling reuses one prepared value
    // too): the bench measures the log, not serde_json building test data.
    let payloads: Arc<Vec<Box<serde_json::value::RawValue>>> = Arc::new(
        (0..PAYLOAD_VARIANTS)
            .map(|n| serde_json::value::to_raw_value(&payload(n, payload_bytes)))
            .collect::<Result<_, _>>()?,
    );
    let issued = Arc::new(AtomicU64::new(0));
    let progress = CountedProgress::start(total, &format!("append c={concurrency}"));
    let cpu_before = process_cpu();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for task in 0..concurrency {
        let store = store.clone();
        let issued = issued.clone();
        let done = progress.done.clone();
        let payloads = payloads.clone();
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("bench/plan-{task}")).expect("valid id");
            let mut latencies = Vec::new();
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let event = NewEvent::new(
                    "CheckInRecorded",
                    2,
                    jiff::Timestamp::now(),
                    payloads[(n % PAYLOAD_VARIANTS) as usize].clone(),
                );
                let t = Instant::now();
                store
                    .append(AppendRequest {
                        stream: stream.clone(),
                        expected: ExpectedVersion::Any,
                        events: vec![event],
                        meta: AppendMeta {
                            actor: "bench".into(),
                            ..AppendMeta::default()
                        },
                    })
                    .await
                    .expect("bench append");
                latencies.push(t.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(total as usize);
    for task in tasks {
        latencies.extend(task.await.context("append task")?);
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu().saturating_sub(cpu_before);
    progress.finish();
    let stats = store.writer_stats();
    let stored_bytes = store
        .read_raw(planledger_store::Position(1))?
        .map(|b| b.len())
        .unwrap_or(payload_bytes);
    let committed = if external {
        let events = crate::cluster::committed_events(&store)?;
        // Closing the log joins its threads, whose committer blocks on this runtime.
        tokio::task::spawn_blocking(move || drop(store)).await?;
        events
    } else {
        Vec::new()
    };
    Ok(AppendRun {
        events: total,
        elapsed,
        latency: summarize(&mut latencies),
        sync_sizes: stats.sync_sizes.into_iter().collect(),
        batches: stats.batches,
        stored_bytes,
        writer_busy: stats.busy,
        cpu,
        committed,
    })
}

/// Calls `write` for batches of the given sizes (each `count` times), with a progress bar, and
/// returns (events, elapsed, per-batch latencies).
fn time_batches(
    batch_sizes: &[(usize, u64)],
    label: &str,
    mut write: impl FnMut(usize) -> Result<()>,
) -> Result<(u64, Duration, Vec<Duration>)> {
    let total_batches: u64 = batch_sizes.iter().map(|(_, c)| c).sum();
    let bar = progress_bar(total_batches, label);
    let mut latencies = Vec::with_capacity(total_batches as usize);
    let mut events = 0u64;
    let started = Instant::now();
    for (size, count) in batch_sizes {
        for _ in 0..*count {
            let t = Instant::now();
            write(*size)?;
            latencies.push(t.elapsed());
            events += *size as u64;
            bar.inc(1);
        }
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok((events, elapsed, latencies))
}

/// Writes batches of the given sizes (each `count` times) with `sync = true` to a plain RocksDB
/// and returns (events, elapsed, per-batch latencies). The sizes are the log's events per
/// fsync, so the ceiling syncs exactly as often as the log did.
fn raw_ceiling(
    dir: &std::path::Path,
    batch_sizes: &[(usize, u64)],
    value_bytes: usize,
) -> Result<(u64, Duration, Vec<Duration>)> {
    let mut options = rocksdb::Options::default();
    options.create_if_missing(true);
    let db = rocksdb::DB::open(&options, dir)?;
    let mut write = rocksdb::WriteOptions::default();
    write.set_sync(true);
    let value = vec![b'v'; value_bytes];
    let mut key = 0u64;
    time_batches(batch_sizes, "raw rocksdb batches", |size| {
        let mut batch = rocksdb::WriteBatch::default();
        for _ in 0..size {
            key += 1;
            // Sequential keys: a log entry and a stream index entry per event, one head per
            // synced batch.
            batch.put(key.to_be_bytes(), &value);
            batch.put([&b"s"[..], &key.to_be_bytes()].concat(), key.to_be_bytes());
        }
        batch.put(b"head", key.to_be_bytes());
        Ok(db.write_opt(batch, &write)?)
    })
}

/// The same batches as [`raw_ceiling`], written with the log's own keys (`log`, `streams` of
/// `streams` streams taken in turn, and a `heads` entry per event, as appends of one event
/// write them) into a database configured as the log configures it: what RocksDB itself costs
/// for the log's layout. Returns events/s.
fn raw_log_layout(
    dir: &std::path::Path,
    batch_sizes: &[(usize, u64)],
    value_bytes: usize,
    streams: usize,
) -> Result<f64> {
    let db = plain_log::PlainLog::open(dir, StoreOptions::default())?;
    let ids = (0..streams.max(1))
        .map(|task| StreamId::new(format!("bench/plan-{task}")))
        .collect::<Result<Vec<_>, _>>()?;
    let value = vec![b'v'; value_bytes];
    let mut next = 0usize;
    let (events, elapsed, _) = time_batches(batch_sizes, "raw rocksdb, log's keys", |size| {
        let batch: Vec<_> = (next..next + size)
            .map(|index| {
                let stream = &ids[index % ids.len()];
                let version = Version((index / ids.len()) as u64 + 1);
                (
                    Position(index as u64 + 1),
                    stream,
                    version,
                    value.as_slice(),
                )
            })
            .collect();
        next += size;
        Ok(db.write_synced(&batch)?)
    })?;
    Ok(events as f64 / elapsed.as_secs_f64())
}

async fn append(args: AppendArgs) -> Result<()> {
    if args.log_commit == LogCommit::Jetstream {
        return append_cluster(args).await;
    }
    let base = ScratchDir::new(args.dir.as_deref())?;
    println!(
        "bench append: payload ~{} B, {} CPU cores",
        args.payload_bytes,
        cores()
    );
    println!(
        "{:>11} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12} {:>6} {:>12} {:>12} {:>9} {:>14} {:>6}",
        "concurrency",
        "events",
        "events/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "ev/batch",
        "ev/fsync",
        "raw events/s",
        "ratio",
        "ratio range",
        "writer µs/ev",
        "cpu µs/ev",
        "log-keys raw/s",
        "ratio"
    );
    let mut serial_raw_p50 = None;
    let mut serial_p50 = None;
    let mut tree_costs = Vec::with_capacity(args.concurrency.len());
    for (index, &concurrency) in args.concurrency.iter().enumerate() {
        let total = if concurrency <= 1 {
            args.events_serial
        } else {
            args.events
        };
        // Each round measures the log and then the raw ceiling on fresh databases; the round
        // with the median ratio is printed, so one slow fsync spell does not decide the result.
        let mut rounds = Vec::with_capacity(args.rounds.max(1));
        let mut tree_rounds: Vec<TreeRound> = Vec::with_capacity(args.rounds.max(1));
        for round in 0..args.rounds.max(1) {
            // The log and the same appends into a log that keeps no Merkle tree (a bench-only
            // switch), one right after the other, in turns first: whichever runs second finds
            // the first one's files still being written back, so a fixed order would favour
            // one of them.
            let payload_bytes = args.payload_bytes;
            let appends = |name: &str, tree: bool| {
                let dir = base.join(format!("{name}-{index}-{round}"));
                async move {
                    run_appends(
                        &dir,
                        concurrency.max(1),
                        total,
                        payload_bytes,
                        Commit::LocalFsync,
                        tree,
                    )
                    .await
                }
            };
            let (run, bare) = if round % 2 == 0 {
                let run = appends("log", true).await?;
                (run, appends("log-no-tree", false).await?)
            } else {
                let bare = appends("log-no-tree", false).await?;
                (appends("log", true).await?, bare)
            };
            let base_dir = base.join(format!("raw-{index}-{round}"));
            let sizes = run.sync_sizes.clone();
            let value_bytes = run.stored_bytes;
            let (raw_events, raw_elapsed, mut raw_latencies) =
                tokio::task::spawn_blocking(move || raw_ceiling(&base_dir, &sizes, value_bytes))
                    .await??;
            let layout_dir = base.join(format!("raw-log-keys-{index}-{round}"));
            let sizes = run.sync_sizes.clone();
            let streams = concurrency.max(1);
            let layout_rate = tokio::task::spawn_blocking(move || {
                raw_log_layout(&layout_dir, &sizes, value_bytes, streams)
            })
            .await??;
            let rate = run.events as f64 / run.elapsed.as_secs_f64();
            let raw_rate = raw_events as f64 / raw_elapsed.as_secs_f64();
            let raw_latency = summarize(&mut raw_latencies);
            let bare_rate = bare.events as f64 / bare.elapsed.as_secs_f64();
            tree_rounds.push(TreeRound {
                ratio: rate / bare_rate,
                with: RunShape::of(&run),
                without: RunShape::of(&bare),
            });
            rounds.push((
                rate / raw_rate,
                rate,
                raw_rate,
                raw_latency,
                run,
                layout_rate,
            ));
        }
        tree_rounds.sort_by(|a, b| a.ratio.total_cmp(&b.ratio));
        let median = tree_rounds[tree_rounds.len() / 2];
        tree_costs.push(TreeCost {
            concurrency,
            median,
            lowest: tree_rounds.first().map_or(0.0, |r| r.ratio),
            highest: tree_rounds.last().map_or(0.0, |r| r.ratio),
        });
        rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let lowest = rounds.first().map_or(0.0, |r| r.0);
        let highest = rounds.last().map_or(0.0, |r| r.0);
        let (ratio, rate, raw_rate, raw_latency, run, layout_rate) =
            rounds.swap_remove(rounds.len() / 2);
        let syncs: u64 = run.sync_sizes.iter().map(|(_, c)| c).sum();
        let per_event = |busy: Duration| busy.as_secs_f64() * 1e6 / run.events.max(1) as f64;
        if concurrency <= 1 {
            serial_raw_p50 = Some(raw_latency.p50);
            serial_p50 = Some(run.latency.p50);
        }
        println!(
            "{:>11} {:>8} {:>10.0} {:>9} {:>9} {:>9} {:>9.1} {:>9.1} {:>12.0} {:>6.2} {:>12} {:>12.2} {:>9.2} {:>14.0} {:>6.2}",
            concurrency,
            run.events,
            rate,
            ms(run.latency.p50),
            ms(run.latency.p99),
            ms(run.latency.max),
            run.events as f64 / run.batches.max(1) as f64,
            run.events as f64 / syncs.max(1) as f64,
            raw_rate,
            ratio,
            format!("{lowest:.2}-{highest:.2}"),
            per_event(run.writer_busy),
            per_event(run.cpu),
            layout_rate,
            rate / layout_rate
        );
    }
    if let (Some(raw), Some(ours)) = (serial_raw_p50, serial_p50) {
        println!(
            "concurrency 1: append p50 {} ms vs one raw synced write p50 {} ms (ratio {:.2})",
            ms(ours),
            ms(raw),
            ours.as_secs_f64() / raw.as_secs_f64().max(1e-9)
        );
    }
    print_tree_costs(&tree_costs);
    Ok(())
}

/// What the Merkle tree costs appends at one concurrency: the round with the median ratio,
/// and the range of all rounds' ratios.
struct TreeCost {
    concurrency: usize,
    median: TreeRound,
    lowest: f64,
    highest: f64,
}

/// One round of the same appends with the tree and without it.
#[derive(Clone, Copy)]
struct TreeRound {
    /// Events/s with the tree over events/s without it.
    ratio: f64,
    with: RunShape,
    without: RunShape,
}

/// A run's rate and where its time went, per event.
#[derive(Clone, Copy)]
struct RunShape {
    events_per_second: f64,
    events_per_batch: f64,
    writer_us: f64,
    cpu_us: f64,
}

impl RunShape {
    fn of(run: &AppendRun) -> Self {
        let per_event = |d: Duration| d.as_secs_f64() * 1e6 / run.events.max(1) as f64;
        Self {
            events_per_second: run.events as f64 / run.elapsed.as_secs_f64(),
            events_per_batch: run.events as f64 / run.batches.max(1) as f64,
            writer_us: per_event(run.writer_busy),
            cpu_us: per_event(run.cpu),
        }
    }
}

/// The Merkle tree's cost: the log's append rate with the tree and without it (same appends,
/// fresh databases, each round), and their ratio.
fn print_tree_costs(costs: &[TreeCost]) {
    println!(
        "Merkle tree: the log's append rate with the tree vs the same log keeping none (with / without)"
    );
    println!(
        "{:>11} {:>14} {:>14} {:>6} {:>12} {:>13} {:>15} {:>13}",
        "concurrency",
        "with tree ev/s",
        "no tree ev/s",
        "ratio",
        "ratio range",
        "ev/batch",
        "writer µs/ev",
        "cpu µs/ev"
    );
    for cost in costs {
        let (with, without) = (cost.median.with, cost.median.without);
        println!(
            "{:>11} {:>14.0} {:>14.0} {:>6.2} {:>12} {:>13} {:>15} {:>13}",
            cost.concurrency,
            with.events_per_second,
            without.events_per_second,
            cost.median.ratio,
            format!("{:.2}-{:.2}", cost.lowest, cost.highest),
            format!(
                "{:.0} / {:.0}",
                with.events_per_batch, without.events_per_batch
            ),
            format!("{:.2} / {:.2}", with.writer_us, without.writer_us),
            format!("{:.2} / {:.2}", with.cpu_us, without.cpu_us),
        );
    }
}

/// The median of a commit-size distribution (events per commit -> how many commits).
fn median_size(sizes: &[(usize, u64)]) -> usize {
    let total: u64 = sizes.iter().map(|(_, c)| c).sum();
    let mut seen = 0;
    for (size, count) in sizes {
        seen += count;
        if seen * 2 >= total {
            return *size;
        }
    }
    0
}

/// One round of `bench append --log-commit jetstream` at one concurrency.
struct ClusterRound {
    ratio: f64,
    rate: f64,
    raw_rate: f64,
    raw_latency: Latency,
    raw_batch: usize,
    median_commit: usize,
    run: AppendRun,
    local_rate: f64,
    local: AppendRun,
}

/// `bench append --log-commit jetstream`: per concurrency, the log in cluster mode on a private
/// 3-server JetStream cluster, the raw ceiling of atomic batches of the commits' mean size on
/// the same cluster, and the log in local mode, each on a fresh stream and database.
async fn append_cluster(args: AppendArgs) -> Result<()> {
    let base = ScratchDir::new(args.dir.as_deref())?;
    let rounds = args.rounds.max(1);
    println!(
        "bench append --log-commit jetstream: payload ~{} B, {} CPU cores; a private 3-server \
         JetStream cluster on loopback (R3, sync_interval: always)",
        args.payload_bytes,
        cores()
    );
    let cluster = crate::cluster::PrivateCluster::start().await?;
    let streams = u32::try_from(args.concurrency.len() * rounds * 2)
        .context("too many concurrency levels and rounds")?;
    let (client, names) = crate::cluster::provision(&cluster, streams).await?;
    println!(
        "{:>11} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>12} {:>9} {:>9} {:>6} {:>11} {:>10} {:>9} {:>9} {:>8}",
        "concurrency",
        "events",
        "events/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "ev/commit",
        "median",
        "raw events/s",
        "raw p50",
        "raw p99",
        "ratio",
        "ratio range",
        "local ev/s",
        "local p50",
        "local p99",
        "vs local"
    );
    for (index, &concurrency) in args.concurrency.iter().enumerate() {
        let total = if concurrency <= 1 {
            args.events_serial
        } else {
            args.events
        };
        let mut rounds_done = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let local = run_appends(
                &base.join(format!("local-{index}-{round}")),
                concurrency.max(1),
                total,
                args.payload_bytes,
                Commit::LocalFsync,
                true,
            )
            .await?;
            let log_index = 2 * (index * rounds + round);
            let partition = u32::try_from(log_index)?;
            let committer = planledger_bus::JetStreamCommitter::open(
                client.clone(),
                planledger_bus::PartitionLogConfig::new(partition),
            )
            .await
            .with_context(|| format!("opening partition {partition}'s stream"))?;
            let run = run_appends(
                &base.join(format!("cluster-{index}-{round}")),
                concurrency.max(1),
                total,
                args.payload_bytes,
                Commit::External(Arc::new(committer)),
                true,
            )
            .await?;
            let commits: u64 = run.sync_sizes.iter().map(|(_, c)| c).sum();
            let raw_batch = ((run.events as f64 / commits.max(1) as f64).round() as usize).max(1);
            let (raw_events, raw_elapsed, mut raw_latencies) = crate::cluster::raw_batches(
                &client,
                partition + 1,
                &names[log_index + 1],
                &run.committed,
                raw_batch,
            )
            .await?;
            let rate = run.events as f64 / run.elapsed.as_secs_f64();
            let raw_rate = raw_events as f64 / raw_elapsed.as_secs_f64();
            rounds_done.push(ClusterRound {
                ratio: rate / raw_rate,
                rate,
                raw_rate,
                raw_latency: summarize(&mut raw_latencies),
                raw_batch,
                median_commit: median_size(&run.sync_sizes),
                run,
                local_rate: local.events as f64 / local.elapsed.as_secs_f64(),
                local,
            });
        }
        rounds_done.sort_by(|a, b| a.ratio.total_cmp(&b.ratio));
        let lowest = rounds_done.first().map_or(0.0, |r| r.ratio);
        let highest = rounds_done.last().map_or(0.0, |r| r.ratio);
        let r = rounds_done.swap_remove(rounds_done.len() / 2);
        println!(
            "{:>11} {:>8} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>7} {:>12.0} {:>9} {:>9} {:>6.2} {:>11} {:>10.0} {:>9} {:>9} {:>8.2}",
            concurrency,
            r.run.events,
            r.rate,
            ms(r.run.latency.p50),
            ms(r.run.latency.p99),
            ms(r.run.latency.max),
            r.raw_batch,
            r.median_commit,
            r.raw_rate,
            ms(r.raw_latency.p50),
            ms(r.raw_latency.p99),
            r.ratio,
            format!("{lowest:.2}-{highest:.2}"),
            r.local_rate,
            ms(r.local.latency.p50),
            ms(r.local.latency.p99),
            r.rate / r.local_rate
        );
    }
    println!(
        "events/s, p50/p99/max: appends in cluster mode (each commit one atomic batch on an R3 \
         stream); ev/commit (mean, the raw batch size) and median: events per commit; raw: \
         atomic batches of that size, one in flight, same messages, straight to a fresh stream \
         (ms per batch); ratio: cluster / raw; local: the same appends in local mode (fsync); \
         vs local: cluster events/s / local events/s"
    );
    drop(client);
    drop(cluster);
    Ok(())
}

/// A fresh directory for one benchmark's databases, under `parent` (default: the system temp
/// dir), removed when dropped: on an error as well as at the end.
pub struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    pub fn new(parent: Option<&std::path::Path>) -> Result<Self> {
        let parent = parent.map_or_else(std::env::temp_dir, std::path::Path::to_path_buf);
        let dir = parent.join(format!("planledger-bench-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // A database still closing (an interrupted run) may add a file while the tree is being
        // removed, which fails that attempt.
        for _ in 0..5 {
            match std::fs::remove_dir_all(&self.0) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => return,
            }
        }
    }
}

/// A nats-server started for one benchmark, killed when dropped.
pub(crate) struct PrivateNats {
    pub(crate) child: std::process::Child,
    /// Removed after the server is stopped (fields drop after `drop` runs).
    _dir: ScratchDir,
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start_private_nats() -> Result<(String, PrivateNats)> {
    let binary = std::env::var("PLANLEDGER_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = ScratchDir::new(None)?;
    let child = std::process::Command::new(&binary)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(&*dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {binary} (run `just setup`, or pass --nats URL)"))?;
    let guard = PrivateNats { child, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "nats-server did not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((format!("nats://127.0.0.1:{port}"), guard))
}

async fn run_relay(args: RelayArgs) -> Result<()> {
    let (url, _guard) = match args.nats {
        Some(url) => (url, None),
        None => {
            let (url, guard) = start_private_nats()?;
            (url, Some(guard))
        }
    };
    let dir = ScratchDir::new(None)?;
    println!(
        "bench relay: {} events, steady rate {}/s, NATS at {url}",
        args.events, args.steady_rate
    );
    let report = relay::bench_relay(relay::RelayBenchConfig {
        nats_url: url,
        data_dir: dir.join("logs"),
        events: args.events,
        steady_rate: args.steady_rate,
        ..relay::RelayBenchConfig::default()
    })
    .await;
    println!("{}", report?);
    Ok(())
}

/// How often the metrics recorder's histogram samples are drained when nobody scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Installs a Prometheus recorder as `serve` installs it, drained every 5 s as there (the
/// samples would pile up otherwise): the HTTP bench's commands pay for their metrics as the
/// service's do. Call it from inside the runtime.
pub fn install_metrics() -> Result<metrics_exporter_prometheus::PrometheusHandle> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the Prometheus metrics recorder")?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(METRICS_UPKEEP);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Sets up `tracing` output as `serve`'s pretty format does, without colour: filtered by
/// `RUST_LOG` (default `info,tower_http=info`), to standard error.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
}
