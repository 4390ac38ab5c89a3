//! Progress: goal and plan progress (current and baseline target), expected progress, computed vs
//! reported status, PV/EV/SPI and earned schedule.

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::{
    CompletionForecast, FORECAST_MIN_POINTS, FORECAST_WINDOW, ForecastBacktest, Lens, RollUp,
    chronological, completion_forecast, computed_status, expected_progress, forecast_backtest,
    goal_start, ratio,
};
use crate::calendar;
use crate::error::DomainError;
use crate::id::{GoalId, PlanId};
use crate::plan::{Baseline, CheckIn, Goal, Outcome, Plan, TrackStatus};

/// Where a goal's progress comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MeasuredBy {
    /// Its KPI.
    Kpi,
    /// Its child goals (and its own steps as one more child).
    Children,
    /// Its steps: completed / total.
    Steps,
    /// Nothing to measure (progress undefined).
    None,
}

/// How a reported status compares with the computed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StatusMismatch {
    /// Same status.
    Aligned,
    /// Reported better than computed.
    Optimistic,
    /// Reported worse than computed.
    Pessimistic,
}

/// The essentials of one check-in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckInSummary {
    /// Its id.
    pub checkin_id: String,
    /// The day it describes.
    pub effective_on: Date,
    /// When it was recorded.
    pub recorded_at: Timestamp,
    /// KPI value.
    pub value: Option<f64>,
    /// Confidence.
    pub confidence: f64,
    /// Reported status.
    pub status: Option<TrackStatus>,
    /// Number of blockers.
    pub blockers: usize,
}

impl From<&CheckIn> for CheckInSummary {
    fn from(c: &CheckIn) -> Self {
        Self {
            checkin_id: c.checkin_id.clone(),
            effective_on: c.effective_on,
            recorded_at: c.recorded_at,
            value: c.value,
            confidence: c.confidence,
            status: c.status,
            blockers: c.blockers.len(),
        }
    }
}

/// Progress of one goal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GoalProgress {
    /// The goal.
    pub goal_id: GoalId,
    /// Its parent.
    pub parent_goal_id: Option<GoalId>,
    /// Title.
    pub title: String,
    /// Where progress comes from.
    pub measured_by: MeasuredBy,
    /// Weight used in roll-ups under the chosen rule.
    pub weight: f64,
    /// Current due date.
    pub due: Date,
    /// Outcome, if closed.
    pub outcome: Option<Outcome>,
    /// `p` against the current target, in [0, 1].
    pub progress: Option<f64>,
    /// `p` against the baseline target (and baseline steps/weights).
    pub progress_vs_baseline: Option<f64>,
    /// `progress - progress_vs_baseline`: progress that came from moving the goalposts.
    pub goalpost_effect: Option<f64>,
    /// `e(t)` in [0, 1].
    pub expected_progress: f64,
    /// Computed from `p / e` (open goals only).
    pub status: Option<TrackStatus>,
    /// Latest status reported in a check-in.
    pub reported_status: Option<TrackStatus>,
    /// Reported vs computed.
    pub status_mismatch: Option<StatusMismatch>,
    /// `p / e`.
    pub spi: Option<f64>,
    /// Earned schedule `ES = p * (due - start)`, in days.
    pub earned_schedule_days: Option<f64>,
    /// `SPI(t) = ES / AT`.
    pub spi_t: Option<f64>,
    /// `AT - ES` in days (positive = behind).
    pub schedule_slip_days: Option<f64>,
    /// Latest KPI value.
    pub current_value: Option<f64>,
    /// Current KPI target.
    pub target: Option<f64>,
    /// KPI target in the baseline.
    pub baseline_target: Option<f64>,
    /// Steps under the goal.
    pub steps_total: usize,
    /// Completed steps under the goal.
    pub steps_completed: usize,
    /// Latest check-in (by effective day, then recording time).
    pub last_check_in: Option<CheckInSummary>,
    /// Latest confidence.
    pub confidence: Option<f64>,
    /// Latest confidence minus the previous one.
    pub confidence_trend: Option<f64>,
    /// Completion forecast (open KPI goals): P50 and P85 dates the target is reached, and the
    /// probability of reaching it by the due date.
    pub forecast: Option<CompletionForecast>,
}

/// Progress of a plan and each of its goals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProgressReport {
    /// The plan.
    pub plan_id: Option<PlanId>,
    /// Evaluation time.
    pub as_of: Timestamp,
    /// Roll-up rule used.
    pub roll_up: RollUp,
    /// Baseline compared against.
    pub baseline_label: Option<String>,
    /// Plan progress `sum(w*p)/sum(w)` over root goals.
    pub progress: Option<f64>,
    /// Plan progress against the baseline.
    pub progress_vs_baseline: Option<f64>,
    /// `progress - progress_vs_baseline`.
    pub goalpost_effect: Option<f64>,
    /// `sum(w*e)/sum(w)` over root goals.
    pub expected_progress: Option<f64>,
    /// Computed from progress / expected_progress.
    pub status: Option<TrackStatus>,
    /// Planned value `sum(w*e)`.
    pub pv: f64,
    /// Earned value `sum(w*p)`.
    pub ev: f64,
    /// `EV / PV`.
    pub spi: Option<f64>,
    /// Earned schedule in days from the plan start.
    pub earned_schedule_days: Option<f64>,
    /// Actual time in days from the plan start.
    pub actual_time_days: i64,
    /// `ES / AT`.
    pub spi_t: Option<f64>,
    /// `AT - ES` in days (positive = behind).
    pub schedule_slip_days: Option<f64>,
    /// One row per goal, in id order.
    pub goals: Vec<GoalProgress>,
    /// The completion forecast back-tested over the plan's closed KPI goals.
    pub forecast_backtest: ForecastBacktest,
}

/// Progress as of `now` under `rule`, compared with the first baseline (if any).
pub fn progress_report(plan: &Plan, now: Timestamp, rule: RollUp) -> ProgressReport {
    build(
        plan,
        now,
        rule,
        plan.first_baseline(),
        default_backtest(plan, now),
    )
}

/// [`progress_report`] (`baseline_label: None`) or [`progress_report_against`], carrying
/// `backtest` as its forecast back-test: for a caller that keeps the back-test's rows of
/// closed goals between reads. `backtest` must be
/// `forecast_backtest(plan, now, FORECAST_WINDOW, FORECAST_MIN_POINTS)` (asserted in debug
/// builds), so the report is the same either way.
pub fn progress_report_with(
    plan: &Plan,
    now: Timestamp,
    rule: RollUp,
    baseline_label: Option<&str>,
    backtest: ForecastBacktest,
) -> Result<ProgressReport, DomainError> {
    debug_assert_eq!(backtest, default_backtest(plan, now));
    let baseline = match baseline_label {
        Some(label) => Some(named_baseline(plan, label)?),
        None => plan.first_baseline(),
    };
    Ok(build(plan, now, rule, baseline, backtest))
}

fn default_backtest(plan: &Plan, now: Timestamp) -> ForecastBacktest {
    forecast_backtest(plan, now, FORECAST_WINDOW, FORECAST_MIN_POINTS)
}

fn named_baseline<'a>(plan: &'a Plan, label: &str) -> Result<&'a Baseline, DomainError> {
    plan.baselines
        .get(label)
        .ok_or_else(|| DomainError::UnknownBaseline {
            label: label.to_owned(),
        })
}

/// Progress as of `now` under `rule`, compared with the baseline named `baseline_label`.
pub fn progress_report_against(
    plan: &Plan,
    now: Timestamp,
    rule: RollUp,
    baseline_label: &str,
) -> Result<ProgressReport, DomainError> {
    let baseline = named_baseline(plan, baseline_label)?;
    Ok(build(
        plan,
        now,
        rule,
        Some(baseline),
        default_backtest(plan, now),
    ))
}

fn build(
    plan: &Plan,
    now: Timestamp,
    rule: RollUp,
    baseline: Option<&Baseline>,
    backtest: ForecastBacktest,
) -> ProgressReport {
    let today = calendar::utc_date(now);
    let lens = Lens::current(plan, rule);
    let goals = plan
        .goals
        .values()
        .map(|g| goal_row(plan, lens, baseline, g, now))
        .collect();

    let sums = lens.plan_sums(today);
    let progress = ratio(sums.ev, sums.weight);
    let expected = ratio(sums.pv, sums.weight);
    let progress_vs_baseline = baseline.and_then(|b| {
        let sums = lens.against(b).plan_sums(today);
        ratio(sums.ev, sums.weight)
    });
    let actual_time_days = calendar::days_between(plan.starts_on, today);
    let es = (sums.weight > 0.0).then(|| earned_schedule(lens, sums.ev));
    let spi_t = es.and_then(|es| (actual_time_days > 0).then(|| es / actual_time_days as f64));
    let slip = es.and_then(|es| (actual_time_days > 0).then_some(actual_time_days as f64 - es));
    ProgressReport {
        plan_id: plan.plan_id.clone(),
        as_of: now,
        roll_up: rule,
        baseline_label: baseline.map(|b| b.label.clone()),
        progress,
        progress_vs_baseline,
        goalpost_effect: difference(progress, progress_vs_baseline),
        expected_progress: expected,
        status: progress.zip(expected).map(|(p, e)| computed_status(p, e)),
        pv: sums.pv,
        ev: sums.ev,
        spi: ratio(sums.ev, sums.pv),
        earned_schedule_days: es,
        actual_time_days,
        spi_t,
        schedule_slip_days: slip,
        goals,
        forecast_backtest: backtest,
    }
}

fn difference(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    a.zip(b).map(|(a, b)| a - b)
}

fn goal_row(
    plan: &Plan,
    lens: Lens<'_>,
    baseline: Option<&Baseline>,
    goal: &Goal,
    now: Timestamp,
) -> GoalProgress {
    let today = calendar::utc_date(now);
    let measured = lens.measure(goal);
    let vs_baseline = baseline.and_then(|b| lens.against(b).measure(goal).progress);
    let start = goal_start(plan, goal);
    let expected = expected_progress(start, goal.due, today);
    let status = if goal.is_open() {
        measured.progress.map(|p| computed_status(p, expected))
    } else {
        None
    };
    let ordered = chronological(&goal.check_ins);
    let reported_status = ordered.iter().rev().find_map(|c| c.status);
    let last = ordered.last().copied();
    let previous = ordered.len().checked_sub(2).and_then(|i| ordered.get(i));
    let span = calendar::days_between(start, goal.due);
    let actual = calendar::days_between(start, today);
    let es = measured
        .progress
        .filter(|_| span > 0)
        .map(|p| p * span as f64);
    let (total, done) = lens.step_counts(goal);
    GoalProgress {
        goal_id: goal.goal_id.clone(),
        parent_goal_id: goal.parent_goal_id.clone(),
        title: goal.title.clone(),
        measured_by: measured.measured_by,
        weight: match lens.rule {
            RollUp::Weighted => goal.weight,
            RollUp::Equal => 1.0,
        },
        due: goal.due,
        outcome: goal.outcome(),
        progress: measured.progress,
        progress_vs_baseline: vs_baseline,
        goalpost_effect: difference(measured.progress, vs_baseline),
        expected_progress: expected,
        status,
        reported_status,
        status_mismatch: status.zip(reported_status).map(|(c, r)| mismatch(c, r)),
        spi: measured.progress.and_then(|p| ratio(p, expected)),
        earned_schedule_days: es,
        spi_t: es.and_then(|es| (actual > 0).then(|| es / actual as f64)),
        schedule_slip_days: es.and_then(|es| (actual > 0).then_some(actual as f64 - es)),
        current_value: lens.current_value(goal),
        target: goal.kpi.as_ref().map(|k| k.target),
        baseline_target: baseline
            .and_then(|b| b.goals.get(&goal.goal_id))
            .and_then(|g| g.target),
        steps_total: total,
        steps_completed: done,
        last_check_in: last.map(CheckInSummary::from),
        confidence: last.map(|c| c.confidence),
        confidence_trend: last.zip(previous).map(|(l, p)| l.confidence - p.confidence),
        forecast: completion_forecast(
            plan,
            &goal.goal_id,
            now,
            FORECAST_WINDOW,
            FORECAST_MIN_POINTS,
        ),
    }
}

fn rank(status: TrackStatus) -> u8 {
    match status {
        TrackStatus::OnTrack => 0,
        TrackStatus::AtRisk => 1,
        TrackStatus::OffTrack => 2,
    }
}

fn mismatch(computed: TrackStatus, reported: TrackStatus) -> StatusMismatch {
    match rank(reported).cmp(&rank(computed)) {
        std::cmp::Ordering::Equal => StatusMismatch::Aligned,
        std::cmp::Ordering::Less => StatusMismatch::Optimistic,
        std::cmp::Ordering::Greater => StatusMismatch::Pessimistic,
    }
}

/// Earned schedule (days from the plan start) on the planned-value curve
/// `PV(d) = sum(w * e(d))`, the curve expected progress is read from: `C` = the last whole day
/// with `PV(C) <= EV` (every day up to it has earned at least what it planned), and
/// `ES = C + (EV - PV(C)) / (PV(C+1) - PV(C))`. `PV` never falls, so the days with
/// `PV <= EV` come first. Nothing planned yet and nothing earned is therefore no slip: `ES`
/// runs to the end of the flat start. `ES` stops at the curve's end (the last due date) when
/// `EV` reaches its last value, and is 0 when even day 0 planned more than was earned.
fn earned_schedule(lens: Lens<'_>, ev: f64) -> f64 {
    let plan = lens.plan;
    let roots: Vec<(Date, Date, f64)> = lens
        .roots()
        .into_iter()
        .filter(|(g, _)| lens.measure(g).progress.is_some())
        .map(|(g, w)| (goal_start(plan, g), lens.due(g), w))
        .collect();
    if roots.is_empty() {
        return 0.0;
    }
    let last_due = roots
        .iter()
        .map(|(_, due, _)| *due)
        .max()
        .unwrap_or(plan.starts_on);
    let horizon = calendar::days_between(plan.starts_on, last_due).max(0);
    let pv_on = |k: i64| -> f64 {
        let day = calendar::add_days(plan.starts_on, k);
        roots
            .iter()
            .map(|(start, due, w)| w * expected_progress(*start, *due, day))
            .sum()
    };
    let mut previous = pv_on(0);
    if previous > ev {
        return 0.0;
    }
    for k in 1..=horizon {
        let pv = pv_on(k);
        if pv > ev {
            // Day k - 1 is C: PV(C) <= EV < PV(C + 1).
            return (k - 1) as f64 + (ev - previous) / (pv - previous);
        }
        previous = pv;
    }
    horizon as f64
}
