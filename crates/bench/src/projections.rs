//! `planledger-bench projections`: how fast a read model is rebuilt from a log of a million
//! events, and how far the embedded projectors trail the log while commands keep arriving.
//!
//! The log is generated with well-formed domain events (plans with goals, KPIs, steps, roles, a
//! baseline, then weekly check-ins, completions, new steps and weight adjustments), spread over
//! many plans and interleaved the way concurrent writers interleave them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use jiff::Timestamp;
use jiff::civil::{Date, date};
use planledger_domain::event::{
    BaselineSet, CheckInRecorded, GoalAdjusted, GoalDefined, PlanCreated, RoleAssigned, StepAdded,
    StepCompleted,
};
use planledger_domain::plan::{
    AdjustmentKind, BaselineGoal, BaselineStep, Change, Direction, Kpi, Role, TrackStatus,
};
use planledger_domain::{Event, GoalId, PersonId, PlanId, StepId};
use planledger_projections::{LocalLogSource, ProjectionHandle, RuntimeOptions};
use planledger_store::{
    AppendMeta, AppendRequest, EventStore, ExpectedVersion, NewEvent, StoreOptions, StreamId,
};
use tokio_util::sync::CancellationToken;

use crate::{ScratchDir, ms, summarize};

/// Flags of `bench projections`.
#[derive(clap::Args, Debug)]
pub struct ProjectionsArgs {
    /// Events in the generated log.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Plans the events are spread over.
    #[arg(long, default_value_t = 5_000)]
    pub plans: u64,
    /// Read models to rebuild, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "progress,accountability,agility"
    )]
    pub projections: Vec<String>,
    /// Seconds of live load after the rebuilds.
    #[arg(long, default_value_t = 10)]
    pub load_seconds: u64,
    /// Concurrent appenders during the live load.
    #[arg(long, default_value_t = 64)]
    pub load_concurrency: usize,
    /// Target appends per second during the live load, comma-separated runs (0 = as fast as
    /// the log takes them).
    #[arg(long, value_delimiter = ',', default_value = "0,5000")]
    pub load_rate: Vec<u64>,
    /// Directory for the temporary databases (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the generated log in this directory (`<DIR>/log`) and reuse it on the next run, so
    /// `planledger replay --data-dir <DIR>` can rebuild from it too.
    #[arg(long)]
    pub keep_log: Option<PathBuf>,
    /// Also rebuild each read model in cluster mode from the same events committed to
    /// partition streams on a private 3-server JetStream cluster (instead of the live-load
    /// measurement), and print its rate beside the single-node rate.
    #[arg(long)]
    pub cluster: bool,
    /// Partitions in cluster mode.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
}

pub(crate) const GOALS: u64 = 4;
const STEPS: u64 = 8;
/// Events before the weekly cycle: plan, goals, steps, roles, baseline.
pub(crate) const SETUP: u64 = 1 + GOALS + STEPS + GOALS + 1;
/// Events per simulated week: a check-in per goal, a step completed or added, an adjustment.
const WEEK: u64 = GOALS + 2;

fn id<T>(make: impl FnOnce(String) -> Result<T, planledger_domain::IdError>, text: String) -> T {
    make(text).expect("generated ids follow the id rule")
}

pub(crate) fn day(offset: u64) -> Date {
    date(2026, 1, 5)
        .checked_add(jiff::Span::new().days(offset as i64))
        .expect("benchmark dates stay inside 2026-2027")
}

pub(crate) fn instant(days: u64, hours: u64, seconds: u64) -> Timestamp {
    let base: Timestamp = "2026-01-05T08:00:00Z".parse().expect("valid instant");
    base.checked_add(jiff::SignedDuration::from_secs(
        (days * 86_400 + hours * 3_600 + seconds) as i64,
    ))
    .expect("benchmark instants stay in range")
}

pub(crate) fn goal(k: u64) -> GoalId {
    id(GoalId::new, format!("g{k}"))
}

pub(crate) fn step(k: u64) -> StepId {
    id(StepId::new, format!("s{k}"))
}

/// The weight goal `k` has before the adjustment of `week` (each goal is adjusted every
/// `GOALS` weeks; the first time from its defined weight).
fn weight_before(k: u64, week: u64) -> f64 {
    if week > GOALS {
        (10 + week - GOALS) as f64
    } else {
        (k + 1) as f64
    }
}

/// The `j`-th event of plan `plan`.
pub(crate) fn event(plan: u64, j: u64) -> Event {
    let spread = plan % 3_600;
    if j == 0 {
        return Event::PlanCreated(PlanCreated {
            plan_id: Some(id(PlanId::new, format!("plan-{plan}"))),
            title: format!("Benchmark plan {plan}"),
            outcome: None,
            starts_on: day(0),
            ends_on: day(700),
            checkin_cadence_days: 7,
            checkin_grace_days: 2,
            at: instant(0, 0, spread),
        });
    }
    if j <= GOALS {
        let k = j - 1;
        return Event::GoalDefined(GoalDefined {
            goal_id: goal(k),
            title: format!("Goal {k}"),
            parent_goal_id: None,
            aligns_to: None,
            kpi: Some(Kpi {
                unit: "points".into(),
                baseline: 0.0,
                target: 100.0,
                direction: Direction::Increase,
            }),
            due: day(300),
            weight: (k + 1) as f64,
            at: instant(0, 0, spread + j),
        });
    }
    if j <= GOALS + STEPS {
        let k = j - GOALS - 1;
        return Event::StepAdded(StepAdded {
            step_id: step(k),
            goal_id: goal(k % GOALS),
            title: format!("Step {k}"),
            due: day(7 * (k + 1)),
            estimate_days: Some(3.0),
            at: instant(0, 0, spread + j),
        });
    }
    if j <= GOALS + STEPS + GOALS {
        let k = j - GOALS - STEPS - 1;
        return Event::RoleAssigned(RoleAssigned {
            person: id(PersonId::new, format!("person-{}", (plan + k) % 500)),
            role: Role::Accountable,
            goal_id: Some(goal(k)),
            step_id: None,
            at: instant(0, 0, spread + j),
        });
    }
    if j == SETUP - 1 {
        let goals: BTreeMap<GoalId, BaselineGoal> = (0..GOALS)
            .map(|k| {
                (
                    goal(k),
                    BaselineGoal {
                        title: format!("Goal {k}"),
                        parent_goal_id: None,
                        kpi_baseline: Some(0.0),
                        target: Some(100.0),
                        direction: Some(Direction::Increase),
                        due: day(300),
                        weight: (k + 1) as f64,
                    },
                )
            })
            .collect();
        let steps: BTreeMap<StepId, BaselineStep> = (0..STEPS)
            .map(|k| {
                (
                    step(k),
                    BaselineStep {
                        goal_id: goal(k % GOALS),
                        title: format!("Step {k}"),
                        due: day(7 * (k + 1)),
                    },
                )
            })
            .collect();
        return Event::BaselineSet(BaselineSet {
            label: "kickoff".into(),
            goals,
            steps,
            at: instant(0, 1, spread),
        });
    }
    let m = j - SETUP;
    let week = m / WEEK + 1;
    let r = m % WEEK;
    let at = instant(7 * week, r, spread);
    match r {
        r if r < GOALS => Event::CheckInRecorded(CheckInRecorded {
            checkin_id: format!("c{m}"),
            goal_id: goal(r),
            value: Some((week * 2 + r) as f64),
            confidence: 0.6,
            status: Some(if week % 4 == 3 {
                TrackStatus::AtRisk
            } else {
                TrackStatus::OnTrack
            }),
            effective_on: day(7 * week),
            note: None,
            blockers: Vec::new(),
            at,
        }),
        r if r == GOALS && week <= STEPS => Event::StepCompleted(StepCompleted {
            step_id: step(week - 1),
            goal_id: goal((week - 1) % GOALS),
            at,
        }),
        r if r == GOALS => Event::StepAdded(StepAdded {
            step_id: step(STEPS + week),
            goal_id: goal(week % GOALS),
            title: format!("Step {}", STEPS + week),
            due: day(7 * week + 14),
            estimate_days: None,
            at,
        }),
        _ => {
            let k = week % GOALS;
            Event::GoalAdjusted(GoalAdjusted {
                goal_id: goal(k),
                kinds: vec![AdjustmentKind::Weight],
                target: None,
                due: None,
                title: None,
                weight: Some(Change {
                    before: weight_before(k, week),
                    after: (10 + week) as f64,
                }),
                reason: "rebalanced after the weekly review".into(),
                in_response_to_checkin: None,
                at,
            })
        }
    }
}

pub(crate) fn new_event(event: &Event) -> NewEvent {
    // The stored form the command path writes.
    NewEvent::new(
        event.event_type(),
        event.schema_version(),
        event.at(),
        event.to_raw_data(),
    )
}

pub(crate) fn request(stream: &StreamId, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest {
        stream: stream.clone(),
        expected: ExpectedVersion::Any,
        events,
        meta: AppendMeta {
            actor: "bench".into(),
            ..AppendMeta::default()
        },
    }
}

pub(crate) fn bar(total: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg:>22} {bar:30} {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(label.to_owned());
    bar
}

/// Appends `per_plan` events to each of `plans` plans, interleaved, 8 events per append.
async fn generate(store: &EventStore, plans: u64, per_plan: u64) -> Result<()> {
    let progress = bar(plans * per_plan, "generating the log");
    append_interleaved(store, (0..plans).collect(), per_plan, 128, 8, &progress).await?;
    progress.finish_and_clear();
    Ok(())
}

/// Appends `per_plan` sample events to each plan numbered in `plans` (stream `bench/plan-N`):
/// `writers` tasks each take every `writers`-th plan and append `chunk` events to each of its
/// plans in turn, so the log interleaves plans as a busy service's does.
pub(crate) async fn append_interleaved(
    store: &EventStore,
    plans: Vec<u64>,
    per_plan: u64,
    writers: u64,
    chunk: u64,
    progress: &ProgressBar,
) -> Result<()> {
    let mut tasks = Vec::new();
    for writer in 0..writers.min(plans.len() as u64) {
        let (store, progress) = (store.clone(), progress.clone());
        let mine: Vec<u64> = plans
            .iter()
            .copied()
            .skip(writer as usize)
            .step_by(writers as usize)
            .collect();
        tasks.push(tokio::spawn(async move {
            let streams: Vec<StreamId> = mine
                .iter()
                .map(|p| StreamId::new(format!("bench/plan-{p}")))
                .collect::<Result<_, _>>()?;
            let mut j = 0;
            while j < per_plan {
                let end = (j + chunk).min(per_plan);
                for (plan, stream) in mine.iter().zip(&streams) {
                    let events = (j..end).map(|k| new_event(&event(*plan, k))).collect();
                    store.append(request(stream, events)).await?;
                    progress.inc(end - j);
                }
                j = end;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await.context("generator task")??;
    }
    Ok(())
}

/// Latencies from "append answered" to "the projector's checkpoint covers it".
async fn watch_lag(
    handle: ProjectionHandle,
    mut appended: tokio::sync::mpsc::UnboundedReceiver<(u64, Instant)>,
) -> (Vec<Duration>, u64) {
    let mut status = handle.subscribe();
    let mut pending: BinaryHeap<Reverse<(u64, Instant)>> = BinaryHeap::new();
    let mut lags = Vec::new();
    let mut max_behind = 0u64;
    let mut closed = false;
    loop {
        let (checkpoint, behind) = {
            let s = status.borrow_and_update();
            (s.checkpoint, s.lag_positions.unwrap_or(0))
        };
        max_behind = max_behind.max(behind);
        while let Some(Reverse((position, at))) = pending.peek().copied() {
            if position > checkpoint {
                break;
            }
            lags.push(at.elapsed());
            pending.pop();
        }
        if closed && pending.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            message = appended.recv(), if !closed => match message {
                Some(entry) => {
                    pending.push(Reverse(entry));
                    // Take everything already queued, so the watcher never trails the appenders.
                    loop {
                        match appended.try_recv() {
                            Ok(entry) => pending.push(Reverse(entry)),
                            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                                closed = true;
                                break;
                            }
                        }
                    }
                }
                None => closed = true,
            },
        }
    }
    (lags, max_behind)
}

/// Runs the lag watchers on their own thread, so that appenders saturating the benchmark's
/// runtime do not delay the observation (and inflate the lag measured).
fn spawn_watchers(
    watchers: Vec<(
        ProjectionHandle,
        tokio::sync::mpsc::UnboundedReceiver<(u64, Instant)>,
    )>,
) -> std::thread::JoinHandle<Vec<(Vec<Duration>, u64)>> {
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("cannot start the lag watchers: {error}");
                return Vec::new();
            }
        };
        runtime.block_on(async move {
            let tasks: Vec<_> = watchers
                .into_iter()
                .map(|(handle, rx)| tokio::spawn(watch_lag(handle, rx)))
                .collect();
            let mut out = Vec::new();
            for task in tasks {
                out.push(task.await.unwrap_or_default());
            }
            out
        })
    })
}

/// Runs `bench projections`.
pub async fn run(args: ProjectionsArgs) -> Result<()> {
    let base = ScratchDir::new(args.dir.as_deref())?;
    let plans = args.plans.max(1);
    let per_plan = args.events.div_ceil(plans).max(SETUP + 1);
    let cores = crate::cores();
    println!(
        "bench projections: {} events over {plans} plans ({per_plan} per plan), {cores} CPU cores",
        plans * per_plan
    );
    let log = match &args.keep_log {
        Some(dir) => dir.join("log"),
        None => base.join("log"),
    };
    let store = EventStore::open(&log, StoreOptions::default())
        .with_context(|| format!("opening {}", log.display()))?;
    if store.last_position().get() == 0 {
        let started = Instant::now();
        generate(&store, plans, per_plan).await?;
        let last = store.last_position();
        println!(
            "log generated: {} events in {:.1} s ({:.0} events/s appended)",
            last.get(),
            started.elapsed().as_secs_f64(),
            last.get() as f64 / started.elapsed().as_secs_f64()
        );
    } else {
        println!(
            "reusing the log in {} ({} events)",
            log.display(),
            store.last_position()
        );
    }
    let last = store.last_position();

    println!("\nrebuild from position 0 (one projection at a time, nothing else running):");
    println!(
        "{:>16} {:>10} {:>9} {:>12}",
        "projection", "events", "seconds", "events/s"
    );
    let mut models = Vec::new();
    let mut rates = Vec::new();
    for name in &args.projections {
        let db = planledger_projections::ReadModelDb::open(base.join("models").join(name), name)?;
        let progress = bar(last.get(), &format!("rebuild {name}"));
        let shown = progress.clone();
        let report = planledger_projections::rebuild_to(
            planledger_projections::projector(name)?,
            db.clone(),
            LocalLogSource::new(store.clone()),
            RuntimeOptions::default(),
            last,
            move |p| shown.set_position(p),
        )
        .await?;
        progress.finish_and_clear();
        println!(
            "{:>16} {:>10} {:>9.2} {:>12.0}",
            name,
            report.events,
            report.elapsed.as_secs_f64(),
            report.events_per_second()
        );
        rates.push(crate::projections_cluster::SingleRate {
            name: name.clone(),
            events_per_second: report.events_per_second(),
        });
        models.push((name.clone(), db));
    }

    if args.cluster {
        crate::projections_cluster::run(&base, args.partitions, plans, per_plan, &rates).await?;
    } else {
        live_lag(&args, &store, models, plans).await?;
    }
    drop(store);
    Ok(())
}

async fn live_lag(
    args: &ProjectionsArgs,
    store: &EventStore,
    models: Vec<(String, planledger_projections::ReadModelDb)>,
    plans: u64,
) -> Result<()> {
    let shutdown = CancellationToken::new();
    let mut handles = Vec::new();
    let mut tasks = Vec::new();
    for (name, db) in models {
        let (handle, task) = planledger_projections::spawn(
            planledger_projections::projector(&name)?,
            db,
            LocalLogSource::new(store.clone()),
            RuntimeOptions::default(),
            shutdown.clone(),
        )?;
        handles.push(handle);
        tasks.push(task);
    }
    let mut run = 0;
    println!("\n-- right after the rebuilds (RocksDB still compacting what they wrote) --");
    for rate in &args.load_rate {
        load_run(args, store, &handles, plans, *rate, run).await?;
        run += 1;
    }
    let waited = settle(&handles).await?;
    println!(
        "\n-- steady state (waited {:.0} s for flushes and compactions to finish) --",
        waited.as_secs_f64()
    );
    for rate in &args.load_rate {
        load_run(args, store, &handles, plans, *rate, run).await?;
        run += 1;
    }
    shutdown.cancel();
    for task in tasks {
        task.await.context("projector task")??;
    }
    Ok(())
}

/// Waits (at most two minutes) until no read model is flushing or compacting.
async fn settle(handles: &[ProjectionHandle]) -> Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        let mut busy = false;
        for handle in handles {
            busy |= handle.db().background_busy()?;
        }
        if !busy {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(started.elapsed())
}

/// One live-load run at `rate` appends per second (0: unpaced).
async fn load_run(
    args: &ProjectionsArgs,
    store: &EventStore,
    handles: &[ProjectionHandle],
    plans: u64,
    rate: u64,
    run: u64,
) -> Result<()> {
    let mut senders = Vec::new();
    let mut watchers = Vec::new();
    for handle in handles {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        senders.push(tx);
        watchers.push((handle.clone(), rx));
    }
    let watchers = spawn_watchers(watchers);
    let pace = if rate == 0 {
        "as fast as the log takes them".to_owned()
    } else {
        format!("paced at {rate} appends/s")
    };
    println!(
        "live lag: {} appenders for {} s ({pace}), one check-in per append, all {} projectors embedded:",
        args.load_concurrency,
        args.load_seconds,
        handles.len()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut writers = Vec::new();
    for writer in 0..args.load_concurrency as u64 {
        let store = store.clone();
        let stop = stop.clone();
        let appended = appended.clone();
        let senders = senders.clone();
        let per_writer = rate as f64 / args.load_concurrency.max(1) as f64;
        let concurrency = args.load_concurrency.max(1) as u64;
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            let began = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if per_writer > 0.0 {
                    let due = began + Duration::from_secs_f64(n as f64 / per_writer);
                    tokio::time::sleep_until(due.into()).await;
                }
                let event = Event::CheckInRecorded(CheckInRecorded {
                    checkin_id: format!("live-{run}-{writer}-{n}"),
                    goal_id: goal(n % GOALS),
                    value: Some(n as f64),
                    confidence: 0.7,
                    status: Some(TrackStatus::OnTrack),
                    effective_on: day(400),
                    note: None,
                    blockers: Vec::new(),
                    at: instant(400, 0, n),
                });
                // Spread over every plan, as many people checking in on many plans would.
                let plan = (writer + n * concurrency) % plans;
                let stream = StreamId::new(format!("bench/plan-{plan}"))?;
                let outcome = store
                    .append(request(&stream, vec![new_event(&event)]))
                    .await?;
                let answered = Instant::now();
                for sender in &senders {
                    let _ = sender.send((outcome.position().get(), answered));
                }
                appended.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            anyhow::Ok(())
        }));
    }
    drop(senders);
    tokio::time::sleep(Duration::from_secs(args.load_seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.context("appender task")??;
    }
    let elapsed = started.elapsed();
    let total = appended.load(Ordering::Relaxed);
    println!(
        "appended {total} events in {:.1} s ({:.0} events/s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "{:>16} {:>10} {:>10} {:>10} {:>16}",
        "projection", "lag p50 ms", "lag p99 ms", "lag max ms", "max behind (pos)"
    );
    let observed = tokio::task::spawn_blocking(move || watchers.join())
        .await
        .context("lag watcher thread")?
        .map_err(|_| anyhow::anyhow!("the lag watcher thread panicked"))?;
    for (handle, (mut lags, behind)) in handles.iter().zip(observed) {
        let latency = summarize(&mut lags);
        println!(
            "{:>16} {:>10} {:>10} {:>10} {:>16}",
            handle.name(),
            ms(latency.p50),
            ms(latency.p99),
            ms(latency.max),
            behind
        );
    }
    Ok(())
}
