//! `planledger-bench history`: as-of query latency on one large plan in a large log, and export
//! throughput (NDJSON and Parquet) next to the raw read rate of the `log` column family,
//! measured in the same run; and the latency of Merkle inclusion and consistency proofs over
//! the whole log.
//!
//! The log holds one plan of `--plan-events` events (goals, steps, roles, a baseline, then
//! check-ins and new steps, 30 s apart) and `--events` minus that over plans of 1,000 events
//! each (the projections bench's generator), written through the store's append API in
//! batches. The large plan is snapshotted on the command path's schedule while it is written,
//! so as-of reads go the API's way: the newest snapshot at or below the point, then the events
//! after it.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use jiff::Timestamp;
use planledger_app::{LoadedPlan, PlanLoader, Principal, QueryService, Role, StateAt};
use planledger_domain::event::{CheckInRecorded, StepAdded};
use planledger_domain::plan::{Plan, TrackStatus};
use planledger_domain::{Event, PlanId, evolve};
use planledger_export::{ExportOptions, Format, Output};
use planledger_store::{
    EventStore, LogReader, Position, StoreError, StoreOptions, StreamId, Version,
};

use crate::projections::{
    GOALS, SETUP, append_interleaved, bar, day, event, goal, instant, new_event, request, step,
};
use crate::{ScratchDir, ms, summarize};

/// Flags of `bench history`.
#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// Events in the log, the large plan's included.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Events of the one large plan the as-of queries read.
    #[arg(long, default_value_t = 100_000)]
    pub plan_events: u64,
    /// As-of queries per kind (version, position, time).
    #[arg(long, default_value_t = 500)]
    pub samples: usize,
    /// Directory for the temporary log and export files (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

/// Events per plan of the rest of the log.
const SMALL_PLAN_EVENTS: u64 = 1_000;
/// Events per append while generating.
const CHUNK: u64 = 256;
/// Concurrent writers of the small plans.
const WRITERS: u64 = 32;
/// Seconds between two events of the large plan after its setup.
const LARGE_PLAN_SPACING_SECONDS: u64 = 30;

/// The `j`-th event of the large plan: the projections bench's setup, then per cycle one
/// check-in per goal and a new step.
fn large_plan_event(j: u64) -> Event {
    if j < SETUP {
        return event(0, j);
    }
    let m = j - SETUP;
    let cycle = m / (GOALS + 1);
    let r = m % (GOALS + 1);
    let seconds = 3_600 + m * LARGE_PLAN_SPACING_SECONDS;
    let at = instant(seconds / 86_400, 0, seconds % 86_400);
    let on = day(seconds / 86_400);
    if r < GOALS {
        Event::CheckInRecorded(CheckInRecorded {
            checkin_id: format!("c{m}"),
            goal_id: goal(r),
            value: Some(((cycle / 50) % 100) as f64),
            confidence: 0.6,
            status: Some(if cycle % 7 == 3 {
                TrackStatus::AtRisk
            } else {
                TrackStatus::OnTrack
            }),
            effective_on: on,
            note: None,
            blockers: Vec::new(),
            at,
        })
    } else {
        Event::StepAdded(StepAdded {
            step_id: step(100 + cycle),
            goal_id: goal(cycle % GOALS),
            title: format!("Step {}", 100 + cycle),
            due: day(seconds / 86_400 + 14),
            estimate_days: None,
            at,
        })
    }
}

/// Writes the large plan, snapshotting it as the command path does.
async fn write_large_plan(
    store: &EventStore,
    loader: &PlanLoader,
    stream: &StreamId,
    total: u64,
    progress: &indicatif::ProgressBar,
) -> Result<()> {
    let mut plan = Arc::new(Plan::default());
    let mut j = 0;
    while j < total {
        let end = (j + CHUNK).min(total);
        let events: Vec<Event> = (j..end).map(large_plan_event).collect();
        store
            .append(request(stream, events.iter().map(new_event).collect()))
            .await?;
        for event in &events {
            let state = Arc::make_mut(&mut plan);
            *state = evolve(std::mem::take(state), event);
        }
        let loaded = LoadedPlan {
            plan,
            version: Version(end),
        };
        loader.maybe_snapshot(stream, Version(j), &loaded)?;
        plan = loaded.plan;
        progress.inc(end - j);
        j = end;
    }
    Ok(())
}

/// A small deterministic generator of sample points (xorshift64*).
struct Points(u64);

impl Points {
    /// A number in `low..=high`.
    fn within(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let n = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        low + n % (high - low + 1)
    }
}

/// Runs `bench history`.
pub async fn run(args: HistoryArgs) -> Result<()> {
    let base = ScratchDir::new(args.dir.as_deref())?;
    let plan_events = args.plan_events.max(SETUP + 1);
    let small_plans = args
        .events
        .saturating_sub(plan_events)
        .div_ceil(SMALL_PLAN_EVENTS);
    let total = plan_events + small_plans * SMALL_PLAN_EVENTS;
    println!(
        "bench history: a log of {total} events, one plan of {plan_events} and {small_plans} of {SMALL_PLAN_EVENTS}, {} CPU cores",
        crate::cores()
    );
    let log_dir = base.join("log");
    let store = EventStore::open(&log_dir, StoreOptions::default())
        .with_context(|| format!("opening {}", log_dir.display()))?;
    let loader = Arc::new(PlanLoader::new(
        store.clone(),
        16,
        planledger_app::DEFAULT_SNAPSHOT_EVERY,
    ));
    let large = StreamId::new("bench/plan-0")?;

    let started = Instant::now();
    let progress = bar(total, "generating the log");
    let (large_written, small_written) = tokio::join!(
        write_large_plan(&store, &loader, &large, plan_events, &progress),
        append_interleaved(
            &store,
            (1..small_plans + 1).collect(),
            SMALL_PLAN_EVENTS,
            WRITERS,
            CHUNK / 4,
            &progress,
        ),
    );
    large_written?;
    small_written?;
    progress.finish_and_clear();
    let last = store.last_position();
    println!(
        "log generated: {} events in {:.1} s ({:.0} events/s appended)",
        last.get(),
        started.elapsed().as_secs_f64(),
        last.get() as f64 / started.elapsed().as_secs_f64()
    );

    as_of_latency(&store, loader, &large, plan_events, args.samples)?;
    proof_latency(&store, args.samples * 10)?;
    export_throughput(&store, &log_dir, &base)?;
    drop(store);
    Ok(())
}

/// p50/p99 of `GET /v1/plans/{id}?version=|position=|as_of=` as the API computes them
/// (`QueryService::plan_state`), at random points of the large plan.
fn as_of_latency(
    store: &EventStore,
    loader: Arc<PlanLoader>,
    large: &StreamId,
    plan_events: u64,
    samples: usize,
) -> Result<()> {
    let queries = QueryService::new(loader.clone());
    let principal = Principal {
        subject: "bench".into(),
        tenant: "bench".into(),
        roles: vec![Role::Viewer],
    };
    let plan_id = PlanId::new("plan-0")?;
    let first = store
        .read_stream(
            large,
            Version(1),
            planledger_store::ReadDirection::Forward,
            1,
        )?
        .first()
        .map(|e| e.position)
        .context("the large plan has a first event")?;
    let last = store.last_position();
    let time_of = |position: Position| -> Result<Timestamp> {
        Ok(store
            .read_position(position)?
            .context("every position up to the last is in the log")?
            .recorded_at)
    };
    let (from_time, to_time) = (time_of(first)?, time_of(last)?);
    let span = to_time.duration_since(from_time).as_nanos().max(1) as u64;
    let mut points = Points(0x9e37_79b9_7f4a_7c15);
    let snapshot = store
        .latest_snapshot(large, Version(plan_events))?
        .map(|(version, bytes)| (version.get(), bytes.len()));
    let ladder = loader.ladder();
    println!(
        "\nas-of reads of {} ({plan_events} events), {samples} random points per kind, through the API's query path:",
        large
    );
    match snapshot {
        Some((version, bytes)) => println!(
            "newest snapshot: version {version}, {:.1} MB of JSON; state ladder: a rung every {} versions, at most {} rungs",
            bytes as f64 / 1e6,
            ladder.step(),
            planledger_app::LADDER_RUNGS
        ),
        None => println!("no snapshot of the large plan"),
    }
    // The first read of the plan in this process finds no rung: it decodes a snapshot and
    // replays up to a quarter of the plan, leaving rungs on its way.
    let started = Instant::now();
    queries.plan_state(&principal, &plan_id, StateAt::Version(plan_events))?;
    println!(
        "first read (at the head, no rung yet): {} ms, {} rungs after it",
        ms(started.elapsed()),
        ladder.len()
    );
    println!(
        "{:>10} {:>9} {:>9} {:>9} {:>14} {:>10} {:>16}",
        "as of", "p50 ms", "p99 ms", "max ms", "mean version", "replayed", "rung/snap/empty"
    );
    let mut all = Vec::new();
    for kind in ["version", "position", "time"] {
        let mut latencies = Vec::with_capacity(samples);
        let mut versions = 0u64;
        let before = ladder.stats();
        for _ in 0..samples {
            let at = match kind {
                "version" => StateAt::Version(points.within(1, plan_events)),
                "position" => StateAt::Position(points.within(first.get(), last.get())),
                _ => {
                    let offset = points.within(0, span) as i64;
                    StateAt::Time(from_time + jiff::SignedDuration::from_nanos(offset))
                }
            };
            let started = Instant::now();
            let state = queries.plan_state(&principal, &plan_id, at)?;
            latencies.push(started.elapsed());
            versions += state.version;
        }
        all.extend_from_slice(&latencies);
        let latency = summarize(&mut latencies);
        let after = ladder.stats();
        println!(
            "{kind:>10} {:>9} {:>9} {:>9} {:>14} {:>10} {:>16}",
            ms(latency.p50),
            ms(latency.p99),
            ms(latency.max),
            versions / samples.max(1) as u64,
            (after.replayed - before.replayed) / samples.max(1) as u64,
            format!(
                "{}/{}/{}",
                after.from_rung - before.from_rung,
                after.from_snapshot - before.from_snapshot,
                after.from_empty - before.from_empty
            )
        );
    }
    let latency = summarize(&mut all);
    println!(
        "{:>10} {:>9} {:>9} {:>9}",
        "all",
        ms(latency.p50),
        ms(latency.p99),
        ms(latency.max)
    );
    // The same reads without the ladder (newest snapshot at or below the point, then the
    // events after it: what `planledger replay --plan` does, and what the service did before
    // the ladder), on a fifth of the samples.
    let mut latencies = Vec::new();
    let mut versions = 0u64;
    let view = store.view();
    for _ in 0..(samples / 5).max(1) {
        let at = StateAt::Version(points.within(1, plan_events));
        let started = Instant::now();
        let state = planledger_app::plan_state_in(&view, &principal.tenant, &plan_id, at)?;
        latencies.push(started.elapsed());
        versions += state.version;
    }
    let count = latencies.len() as u64;
    let latency = summarize(&mut latencies);
    println!(
        "{:>10} {:>9} {:>9} {:>9} {:>14}   (by version, snapshot and replay, {count} reads)",
        "no ladder",
        ms(latency.p50),
        ms(latency.p99),
        ms(latency.max),
        versions / count.max(1)
    );
    Ok(())
}

/// A latency in microseconds, for figures well under a millisecond.
fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// p50/p99 of the Merkle proofs as `GET /v1/audit/proof/inclusion` and `/consistency` compute
/// them (the store's proof over a view of the log, then the served body with its hashes in
/// base64), for random positions, tree sizes and pairs of sizes of the whole log.
fn proof_latency(store: &EventStore, samples: usize) -> Result<()> {
    let last = store.last_position().get();
    let origin = planledger_app::checkpoint::origin(store.log_id());
    let mut points = Points(0x2545_f491_4f6c_dd1d);
    println!(
        "
Merkle proofs over the tree of {last} events, {samples} random ones per kind, as the API computes them:"
    );
    println!(
        "{:>12} {:>9} {:>9} {:>9} {:>12}",
        "proof", "p50 µs", "p99 µs", "max µs", "mean hashes"
    );
    for kind in ["inclusion", "consistency"] {
        let mut latencies = Vec::with_capacity(samples);
        let mut hashes = 0usize;
        for _ in 0..samples {
            let started = Instant::now();
            let view = store.view();
            let length = if kind == "inclusion" {
                let position = points.within(1, last);
                let size = points.within(position, last);
                let proof = view.inclusion_proof(Position(position), size)?;
                planledger_app::checkpoint::InclusionProofBody::of(origin.clone(), &proof)
                    .inclusion_path
                    .len()
            } else {
                let from = points.within(1, last);
                let to = points.within(from, last);
                let proof = view.consistency_proof(from, to)?;
                planledger_app::checkpoint::ConsistencyProofBody::of(origin.clone(), &proof)
                    .consistency_path
                    .len()
            };
            latencies.push(started.elapsed());
            hashes += length;
        }
        let latency = summarize(&mut latencies);
        println!(
            "{kind:>12} {:>9} {:>9} {:>9} {:>12.1}",
            us(latency.p50),
            us(latency.p99),
            us(latency.max),
            hashes as f64 / samples.max(1) as f64
        );
    }
    Ok(())
}

/// One timed pass: events, bytes and seconds.
struct Pass {
    events: u64,
    bytes: u64,
    elapsed: Duration,
}

impl Pass {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Export throughput in both formats next to a plain scan of the `log` column family, all
/// through a secondary instance opened beside the live writer, as `planledger export` reads.
fn export_throughput(
    store: &EventStore,
    log_dir: &std::path::Path,
    base: &std::path::Path,
) -> Result<()> {
    // Everything in files, so the scans read tables as an export of an older log would.
    store.flush()?;
    let reader = LogReader::open(log_dir, &StoreOptions::default())?;
    let view = reader.view();
    let last = view.last_position();
    let raw = || -> Result<Pass> {
        let started = Instant::now();
        let (mut events, mut bytes) = (0u64, 0u64);
        view.scan_raw(Position(1), last, |_, stored| {
            events += 1;
            bytes += stored.len() as u64;
            Ok::<_, StoreError>(ControlFlow::Continue(()))
        })?;
        Ok(Pass {
            events,
            bytes,
            elapsed: started.elapsed(),
        })
    };
    let export = |format: Format, proofs: bool| -> Result<Pass> {
        let path = base.join(format!("export.{}", format.as_str()));
        let mut file = std::fs::File::create(&path)?;
        let options = ExportOptions {
            format,
            from: Position(1),
            to: None,
            tenant: None,
        };
        let progress = bar(last.get(), &format!("export {}", format.as_str()));
        let mut shown = 0u64;
        let show = |position: Position| {
            if position.get() - shown >= 16_384 {
                progress.set_position(position.get());
                shown = position.get();
            }
        };
        let started = Instant::now();
        let out = Output::File(&mut file);
        let report = if proofs {
            planledger_export::export_with_proofs(&view, &options, "planledger/bench", out, show)?
                .report
        } else {
            planledger_export::export(&view, &options, out, show)?
        };
        // As `planledger export` ends a file: on disk before it is renamed into place.
        file.sync_all()?;
        let elapsed = started.elapsed();
        progress.finish_and_clear();
        std::fs::remove_file(&path)?;
        Ok(Pass {
            events: report.events,
            bytes: report.bytes,
            elapsed,
        })
    };
    // The raw scan before and after the exports; the faster of the two is the reference.
    let first_raw = raw()?;
    let ndjson = export(Format::Ndjson, false)?;
    let ndjson_proved = export(Format::Ndjson, true)?;
    let parquet = export(Format::Parquet, false)?;
    let parquet_proved = export(Format::Parquet, true)?;
    let second_raw = raw()?;
    let raw = if second_raw.rate() > first_raw.rate() {
        second_raw
    } else {
        first_raw
    };
    println!(
        "\nexport of all {} positions through a secondary instance (as `planledger export` reads),\nvs a plain scan of the log column family (raw-scan; MB read, else MB written):",
        last.get()
    );
    println!(
        "{:>13} {:>10} {:>9} {:>12} {:>10} {:>8}",
        "", "events", "seconds", "events/s", "MB", "vs raw"
    );
    for (name, pass) in [
        ("raw-scan", &raw),
        ("ndjson", &ndjson),
        ("ndjson+proof", &ndjson_proved),
        ("parquet", &parquet),
        ("parquet+proof", &parquet_proved),
    ] {
        println!(
            "{name:>13} {:>10} {:>9.2} {:>12.0} {:>10.1} {:>8.2}",
            pass.events,
            pass.elapsed.as_secs_f64(),
            pass.rate(),
            pass.bytes as f64 / 1e6,
            pass.rate() / raw.rate()
        );
    }
    println!(
        "parquet / raw read rate: {:.2} (goal >= 0.5)",
        parquet.rate() / raw.rate()
    );
    println!(
        "with --proof / without: ndjson {:.2}, parquet {:.2}",
        ndjson_proved.rate() / ndjson.rate(),
        parquet_proved.rate() / parquet.rate()
    );
    proof_reads(&view)
}

/// The proofs of an export alone, without writing them: every position in order through one
/// sequential reader (as `export --proof` takes them) vs a sample read one proof at a time
/// (one batched `MultiGet` each, as `GET /v1/audit/proof/inclusion` reads).
fn proof_reads(view: &planledger_store::LogView<'_>) -> Result<()> {
    let size = view.tree_size();
    if size == 0 {
        return Ok(());
    }
    let started = Instant::now();
    let proofs = view.sequential_proofs(size)?;
    let mut path = Vec::with_capacity(64);
    for position in 1..=size {
        proofs.path_into(Position(position), &mut path)?;
        std::hint::black_box(&path);
    }
    let sequential = started.elapsed().as_secs_f64() / size as f64;
    let sample = size.min(20_000);
    let started = Instant::now();
    for n in 0..sample {
        // Spread over the log, in ascending order.
        let position = 1 + n * size / sample;
        std::hint::black_box(view.inclusion_proof(Position(position), size)?);
    }
    let single = started.elapsed().as_secs_f64() / sample as f64;
    println!(
        "proofs for an export: all {size} positions in order {:.2} µs each ({:.0}/s); one at a time ({sample} spread over the log) {:.1} µs each",
        sequential * 1e6,
        1.0 / sequential,
        single * 1e6
    );
    Ok(())
}
