//! `planledger-bench progress`: the latency of a progress read (`GET /v1/plans/{id}/progress`
//! as the API computes it, `ReadModels::progress`) on a plan with many goals and check-ins, half
//! of its goals closed, so its forecast back-test has a long history to replay; current reads
//! from the progress read model and `as_of` reads from the log, each cold (nothing kept: every
//! closed goal's back-test row computed) and warm (the rows kept between reads), with the
//! domain's share (the back-test alone, and the whole report on a plan already in memory).
//!
//! The plan: `--goals` KPI goals (0 -> 100) defined on its first day, then `--check-ins`
//! check-ins in rounds (one per goal every three days, each goal on its own noisy trend), then
//! every other goal closed (achieved when its last value met 100, else missed). Written through
//! the store's append API and snapshotted on the command path's schedule; the progress
//! projector runs over the log as in `serve`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use planledger_app::{
    LoadedPlan, PlanLoader, Principal, ProgressQuery, QueryService, ReadAfter, ReadModels, Role,
};
use planledger_domain::event::{CheckInRecorded, GoalClosed, GoalDefined, PlanCreated};
use planledger_domain::metrics::{self, RollUp};
use planledger_domain::plan::{Direction, Kpi, Outcome, Plan, TrackStatus};
use planledger_domain::{Event, PlanId, evolve};
use planledger_projections::{LocalLogSource, ReadModelDb, RuntimeOptions};
use planledger_store::{EventStore, StoreOptions, StreamId, Version};
use tokio_util::sync::CancellationToken;

use crate::projections::{bar, day, goal, instant, new_event, request};
use crate::{ScratchDir, ms, summarize};

/// Flags of `bench progress`.
#[derive(clap::Args, Debug)]
pub struct ProgressArgs {
    /// Goals of the plan (every other one closed after its check-ins).
    #[arg(long, default_value_t = 200)]
    pub goals: u64,
    /// Check-ins over all goals.
    #[arg(long, default_value_t = 20_000)]
    pub check_ins: u64,
    /// Reads timed per kind.
    #[arg(long, default_value_t = 30)]
    pub samples: usize,
    /// Directory for the temporary log and read model (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

/// Days between two check-ins of a goal.
const CADENCE_DAYS: u64 = 3;
/// Events per append while generating.
const CHUNK: usize = 256;

/// A deterministic noise in [-3, 3] for goal `k`'s `r`-th value.
fn noise(k: u64, r: u64) -> f64 {
    let mut x = (k << 32 | r).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 29;
    (x % 601) as f64 / 100.0 - 3.0
}

/// The plan's events, in order.
fn plan_events(goals: u64, check_ins: u64) -> Vec<Event> {
    let rounds = check_ins.div_ceil(goals.max(1));
    let last_day = rounds * CADENCE_DAYS + 1;
    let mut events = vec![Event::PlanCreated(PlanCreated {
        plan_id: Some(PlanId::new("big").expect("a valid id")),
        title: "A plan with a long history".into(),
        outcome: None,
        starts_on: day(0),
        ends_on: day(last_day + 60),
        checkin_cadence_days: CADENCE_DAYS as u32,
        checkin_grace_days: 1,
        at: instant(0, 0, 0),
    })];
    for k in 0..goals {
        events.push(Event::GoalDefined(GoalDefined {
            goal_id: goal(k),
            title: format!("Goal {k}"),
            parent_goal_id: None,
            aligns_to: None,
            kpi: Some(Kpi {
                unit: "u".into(),
                baseline: 0.0,
                target: 100.0,
                direction: Direction::Increase,
            }),
            due: day(last_day + 30),
            weight: 1.0,
            at: instant(0, 0, k + 1),
        }));
    }
    let mut last_value = vec![0.0; goals as usize];
    for n in 0..check_ins {
        let (r, k) = (n / goals, n % goals);
        let slope = 100.0 / rounds as f64 * (0.9 + (k % 5) as f64 * 0.05);
        let value = (r as f64 * slope + noise(k, r)).max(0.0);
        last_value[k as usize] = value;
        events.push(Event::CheckInRecorded(CheckInRecorded {
            checkin_id: format!("c{n}"),
            goal_id: goal(k),
            value: Some(value),
            confidence: 0.7,
            status: Some(TrackStatus::OnTrack),
            effective_on: day(r * CADENCE_DAYS),
            note: None,
            blockers: Vec::new(),
            at: instant(r * CADENCE_DAYS, 1, k),
        }));
    }
    for k in (0..goals).step_by(2) {
        let outcome = if last_value[k as usize] >= 100.0 {
            Outcome::Achieved
        } else {
            Outcome::Missed
        };
        events.push(Event::GoalClosed(GoalClosed {
            goal_id: goal(k),
            outcome,
            note: None,
            at: instant(last_day, 2, k),
        }));
    }
    events
}

/// Runs `bench progress`.
pub async fn run(args: ProgressArgs) -> Result<()> {
    let base = ScratchDir::new(args.dir.as_deref())?;
    let events = plan_events(args.goals.max(1), args.check_ins);
    println!(
        "bench progress: one plan of {} events ({} goals, {} check-ins, every other goal closed), {} CPU cores",
        events.len(),
        args.goals,
        args.check_ins,
        crate::cores()
    );
    let store = EventStore::open(base.join("log"), StoreOptions::default())?;
    let loader = Arc::new(PlanLoader::new(
        store.clone(),
        16,
        planledger_app::DEFAULT_SNAPSHOT_EVERY,
    ));
    let stream = StreamId::new("bench/big")?;
    let plan = write(&store, &loader, &stream, &events).await?;

    let shutdown = CancellationToken::new();
    let db = ReadModelDb::open(base.join("models").join("progress"), "progress")?;
    let (handle, task) = planledger_projections::spawn(
        planledger_projections::projector("progress")?,
        db,
        LocalLogSource::new(store.clone()),
        RuntimeOptions::default(),
        shutdown.clone(),
    )?;
    let queries = QueryService::new(loader);
    let read_models = ReadModels::new(vec![handle.clone()], Some(queries.clone()))
        .with_wait(Duration::from_secs(600));
    let principal = Principal {
        subject: "bench".into(),
        tenant: "bench".into(),
        roles: vec![Role::Viewer],
    };
    let plan_id = PlanId::new("big")?;
    let last = store.last_position().get();
    let caught_up = ReadAfter::from(Some(last));
    read_models
        .progress(&principal, &plan_id, query(None, caught_up))
        .await
        .context("the progress read model catches up with the log")?;

    // As of now: every event was recorded by then (they are recorded when appended, whatever
    // their decision times), so it is the same state, read from the log.
    let recorded = jiff::Timestamp::now();
    println!(
        "\n{} reads per kind through ReadModels::progress, current (read-model) and as of now \
         (as-of-log); cold: a new ReadModels per read, nothing kept between reads (a process's \
         first read); warm: one ReadModels, its first read included:",
        args.samples
    );
    println!("{:>28} {:>9} {:>9} {:>9}", "", "p50 ms", "p99 ms", "max ms");
    for (label, as_of, cold) in [
        ("cold-read-model", None, true),
        ("cold-as-of-log", Some(recorded), true),
        ("warm-read-model", None, false),
        ("warm-as-of-log", Some(recorded), false),
    ] {
        let mut latencies = Vec::with_capacity(args.samples);
        let mut bytes = 0;
        for _ in 0..args.samples {
            let models = if cold {
                ReadModels::new(vec![handle.clone()], Some(queries.clone()))
            } else {
                read_models.clone()
            };
            let started = Instant::now();
            let answer = models
                .progress(&principal, &plan_id, query(as_of, ReadAfter::default()))
                .await?;
            latencies.push(started.elapsed());
            bytes = serde_json::to_vec(&answer.body)?.len();
        }
        let latency = summarize(&mut latencies);
        println!(
            "{label:>28} {:>9} {:>9} {:>9}   ({:.1} MB answer)",
            ms(latency.p50),
            ms(latency.p99),
            ms(latency.max),
            bytes as f64 / 1e6
        );
    }

    let now = jiff::Timestamp::now();
    println!("\nthe domain's share, on the plan in memory:");
    let timed = |label: &str, f: &dyn Fn()| {
        let mut latencies: Vec<Duration> = (0..args.samples.max(1))
            .map(|_| {
                let started = Instant::now();
                f();
                started.elapsed()
            })
            .collect();
        let latency = summarize(&mut latencies);
        println!(
            "{label:>28} {:>9} {:>9} {:>9}",
            ms(latency.p50),
            ms(latency.p99),
            ms(latency.max)
        );
    };
    timed("forecast_backtest", &|| {
        std::hint::black_box(metrics::forecast_backtest(
            &plan,
            now,
            metrics::FORECAST_WINDOW,
            metrics::FORECAST_MIN_POINTS,
        ));
    });
    timed("progress_report", &|| {
        std::hint::black_box(metrics::progress_report(&plan, now, RollUp::Weighted));
    });

    shutdown.cancel();
    task.await.context("projector task")??;
    drop(store);
    Ok(())
}

fn query(as_of: Option<jiff::Timestamp>, min_position: ReadAfter) -> ProgressQuery {
    ProgressQuery {
        rule: RollUp::Weighted,
        as_of,
        baseline: None,
        min_position,
    }
}

/// Appends the plan's events and snapshots it as the command path does; the plan as folded.
async fn write(
    store: &EventStore,
    loader: &PlanLoader,
    stream: &StreamId,
    events: &[Event],
) -> Result<Plan> {
    let progress = bar(events.len() as u64, "writing the plan");
    let mut plan = Arc::new(Plan::default());
    let mut written = 0usize;
    for chunk in events.chunks(CHUNK) {
        store
            .append(request(stream, chunk.iter().map(new_event).collect()))
            .await?;
        for event in chunk {
            let state = Arc::make_mut(&mut plan);
            *state = evolve(std::mem::take(state), event);
        }
        let loaded = LoadedPlan {
            plan,
            version: Version((written + chunk.len()) as u64),
        };
        loader.maybe_snapshot(stream, Version(written as u64), &loaded)?;
        plan = loaded.plan;
        written += chunk.len();
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    Ok(Arc::unwrap_or_clone(plan))
}
