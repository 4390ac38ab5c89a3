//! Metric formulas (stated with edge cases and worked examples in docs/metrics.md).
//!
//! Every function here is pure over `(&Plan, now)`. Days are UTC calendar days: `today` is the UTC
//! date of `now`. "As of a past time T" means: build the plan from the events decided at or before
//! T ([`crate::as_of`]) and pass `now = T`. Another roll-up rule is another [`RollUp`] argument.
//! An undefined ratio (nothing due yet, nothing to divide by) is `None` (JSON `null`), never 0.

mod accountability;
mod agility;
mod backtest;
mod drift;
mod forecast;
mod history;
mod momentum;
mod progress;
mod restatement;

pub use accountability::{
    AccountabilityReport, GoalAccountability, OpenBlocker, OverdueStep, PersonAccountability,
    RoleHeld, accountability_report, person_accountability,
};
pub use agility::{
    AdjustmentCounts, AgilityReport, BaselineInfo, GoalAgility, UnansweredSignal, agility_report,
};
pub use backtest::{
    BacktestForecast, BacktestGoal, ForecastBacktest, backtest_goal, forecast_backtest,
};
pub use drift::{
    DriftReport, EventRef, GapPoint, GoalDrift, ScopeChange, ScopeItems, drift_report, target_drift,
};
pub use forecast::{
    CompletionForecast, FORECAST_HORIZON_DAYS, FORECAST_MIN_POINTS, FORECAST_WINDOW, TrendForecast,
    completion_forecast, normal_cdf,
};
pub use history::{AdjustmentMark, GoalHistory, HistoryPoint, ProgressHistory, progress_history};
pub use momentum::{Momentum, MomentumWeek, momentum};
pub use progress::{
    CheckInSummary, GoalProgress, MeasuredBy, ProgressReport, StatusMismatch, progress_report,
    progress_report_against, progress_report_with,
};
pub use restatement::{
    FigureChange, PlanFigureChange, Restatement, RestatementReport, restatements,
};

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::calendar;
use crate::plan::{Baseline, CheckIn, Direction, Goal, Outcome, Plan, Step, TrackStatus};

/// How parent goals and the plan combine their children's progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RollUp {
    /// `sum(w*p) / sum(w)` with each goal's weight.
    #[default]
    Weighted,
    /// Every goal counts the same (w = 1).
    Equal,
}

/// Computed-status thresholds on `p / e` (docs/metrics.md).
pub const ON_TRACK_AT: f64 = 0.95;
/// Below [`ON_TRACK_AT`] and at or above this: at risk; below: off track.
pub const AT_RISK_AT: f64 = 0.75;
/// Course corrections within this many days count as prompt.
pub const PROMPT_CORRECTION_DAYS: f64 = 14.0;

/// KPI progress `clamp((current - baseline) / (target - baseline), 0, 1)`; when
/// `target == baseline`, 1 if `current` meets the target in the KPI's direction, else 0.
pub fn kpi_progress(baseline: f64, target: f64, direction: Direction, current: f64) -> f64 {
    let span = target - baseline;
    if span == 0.0 {
        let met = match direction {
            Direction::Increase => current >= target,
            Direction::Decrease => current <= target,
        };
        return if met { 1.0 } else { 0.0 };
    }
    clamp01((current - baseline) / span)
}

/// Expected progress `e(t) = clamp((t - start) / (due - start), 0, 1)` in whole days; for a
/// zero-length (or inverted) span, 1 from the due day on and 0 before.
pub fn expected_progress(start: Date, due: Date, today: Date) -> f64 {
    let span = calendar::days_between(start, due);
    if span <= 0 {
        return if today >= due { 1.0 } else { 0.0 };
    }
    clamp01(calendar::days_between(start, today) as f64 / span as f64)
}

/// Computed status from progress `p` and expected progress `e`: on_track when `e == 0` or
/// `p/e >= 0.95`, at_risk when `p/e >= 0.75`, otherwise off_track.
pub fn computed_status(p: f64, e: f64) -> TrackStatus {
    if e <= 0.0 {
        return TrackStatus::OnTrack;
    }
    let ratio = p / e;
    if ratio >= ON_TRACK_AT {
        TrackStatus::OnTrack
    } else if ratio >= AT_RISK_AT {
        TrackStatus::AtRisk
    } else {
        TrackStatus::OffTrack
    }
}

/// The day a goal's clock starts: the later of the plan's start and the day the goal was defined.
pub fn goal_start(plan: &Plan, goal: &Goal) -> Date {
    plan.starts_on.max(calendar::utc_date(goal.defined_at))
}

/// Median of a list (mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// `numerator / denominator`, or `None` when the denominator is zero.
pub fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator != 0.0).then(|| numerator / denominator)
}

fn clamp01(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// Check-ins in "describes a later state" order: by effective day, then recording time.
fn chronological<'a>(check_ins: impl IntoIterator<Item = &'a CheckIn>) -> Vec<&'a CheckIn> {
    let mut sorted: Vec<&CheckIn> = check_ins.into_iter().collect();
    sorted.sort_by(|a, b| {
        a.effective_on
            .cmp(&b.effective_on)
            .then(a.recorded_at.cmp(&b.recorded_at))
    });
    sorted
}

/// Whether a step counts as done by the end of `day` (completions and reopenings replayed).
fn completed_by(step: &Step, day: Option<Date>) -> bool {
    let Some(day) = day else {
        return step.is_completed();
    };
    let last_completion = step
        .completions
        .iter()
        .filter(|t| calendar::utc_date(**t) <= day)
        .max();
    let last_reopening = step
        .reopenings
        .iter()
        .map(|r| r.at)
        .filter(|t| calendar::utc_date(*t) <= day)
        .max();
    match (last_completion, last_reopening) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(done), Some(reopened)) => *done > reopened,
    }
}

/// How progress is measured: against the current plan or against a baseline, with facts
/// known up to an effective day.
#[derive(Clone, Copy)]
pub(crate) struct Lens<'a> {
    plan: &'a Plan,
    rule: RollUp,
    /// Only facts effective on or before this day count (check-ins by `effective_on`,
    /// completions and closures by their UTC date). `None`: every fact in the plan.
    cutoff: Option<Date>,
    /// Measure against this baseline's targets, steps and weights instead of the current ones.
    baseline: Option<&'a Baseline>,
    /// Only the check-ins told by then count. `None`: every check-in in the plan.
    told: Option<Told<'a>>,
    /// Targets, due dates, weights, goals and steps as they stood at the end of this day
    /// (later adjustments undone; goals and steps defined later, and goals dropped later, as
    /// they were then). `None`: the plan's current ones. Ignored against a baseline.
    in_force_on: Option<Date>,
}

/// What a goal's definition said at the end of a day: its target, due date and weight with
/// every adjustment decided on a later UTC day undone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct InForce {
    pub target: Option<f64>,
    pub due: Date,
    pub weight: f64,
}

impl InForce {
    pub(crate) fn on(goal: &Goal, day: Date) -> Self {
        let mut definition = Self {
            target: goal.kpi.as_ref().map(|k| k.target),
            due: goal.due,
            weight: goal.weight,
        };
        let later = |t: &Timestamp| calendar::utc_date(*t) > day;
        for adjustment in goal.adjustments.iter().rev().filter(|a| later(&a.at)) {
            if let (Some(change), Some(_)) = (&adjustment.target, definition.target) {
                definition.target = Some(change.before);
            }
            if let Some(change) = &adjustment.due {
                definition.due = change.before;
            }
            if let Some(change) = &adjustment.weight {
                definition.weight = change.before;
            }
        }
        definition
    }
}

/// Whether the goal had been defined by the end of `day`.
fn defined_by(goal: &Goal, day: Date) -> bool {
    calendar::utc_date(goal.defined_at) <= day
}

/// Whether the goal had been dropped by the end of `day`.
fn dropped_by(goal: &Goal, day: Date) -> bool {
    goal.closed
        .as_ref()
        .is_some_and(|c| c.outcome == Outcome::Dropped && calendar::utc_date(c.at) <= day)
}

/// Which check-ins were known: those recorded before an instant, and at most one more.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Told<'a> {
    /// Check-ins recorded before this instant count.
    pub before: Timestamp,
    /// This check-in counts too.
    pub also: Option<&'a str>,
}

impl Told<'_> {
    fn includes(&self, check_in: &CheckIn) -> bool {
        check_in.recorded_at < self.before || self.also == Some(check_in.checkin_id.as_str())
    }
}

/// A goal's progress and how it was obtained.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Measured {
    pub progress: Option<f64>,
    pub measured_by: MeasuredBy,
}

impl<'a> Lens<'a> {
    pub(crate) fn current(plan: &'a Plan, rule: RollUp) -> Self {
        Self {
            plan,
            rule,
            cutoff: None,
            baseline: None,
            told: None,
            in_force_on: None,
        }
    }

    /// Measure with the definitions in force at the end of `day` instead of the current ones.
    pub(crate) fn in_force_on(mut self, day: Date) -> Self {
        self.in_force_on = Some(day);
        self
    }

    /// The definitions in force, when measuring with a past day's (and no baseline).
    fn definitions_on(&self) -> Option<Date> {
        self.in_force_on.filter(|_| self.baseline.is_none())
    }

    pub(crate) fn told(mut self, told: Told<'a>) -> Self {
        self.told = Some(told);
        self
    }

    pub(crate) fn with_cutoff(mut self, day: Date) -> Self {
        self.cutoff = Some(day);
        self
    }

    pub(crate) fn against(mut self, baseline: &'a Baseline) -> Self {
        self.baseline = Some(baseline);
        self
    }

    fn weight_of(&self, goal: &Goal) -> f64 {
        match self.rule {
            RollUp::Equal => 1.0,
            RollUp::Weighted => match (self.baseline, self.definitions_on()) {
                (Some(b), _) => b.goals.get(&goal.goal_id).map_or(goal.weight, |g| g.weight),
                (None, Some(day)) => InForce::on(goal, day).weight,
                (None, None) => goal.weight,
            },
        }
    }

    /// The latest KPI value known under this lens, if any.
    pub(crate) fn current_value(&self, goal: &Goal) -> Option<f64> {
        chronological(&goal.check_ins)
            .into_iter()
            .filter(|c| self.cutoff.is_none_or(|d| c.effective_on <= d))
            .filter(|c| self.told.is_none_or(|t| t.includes(c)))
            .filter_map(|c| c.value)
            .next_back()
    }

    fn closed_outcome(&self, goal: &Goal) -> Option<Outcome> {
        let closure = goal.closed.as_ref()?;
        match self.cutoff {
            Some(day) if calendar::utc_date(closure.at) > day => None,
            _ => Some(closure.outcome),
        }
    }

    /// Goals that take part in roll-ups under this lens (not dropped; in the baseline, when one is set).
    fn counts(&self, goal: &Goal) -> bool {
        let present = match self.definitions_on() {
            Some(day) => defined_by(goal, day) && !dropped_by(goal, day),
            None => !goal.is_dropped(),
        };
        present
            && self
                .baseline
                .is_none_or(|b| b.goals.contains_key(&goal.goal_id))
    }

    /// Children that roll up into `goal` under this lens.
    fn children(&self, goal: &'a Goal) -> Vec<&'a Goal> {
        match self.baseline {
            None => self.plan.children_of(&goal.goal_id).collect(),
            Some(b) => b
                .goals
                .iter()
                .filter(|(_, g)| g.parent_goal_id.as_ref() == Some(&goal.goal_id))
                .filter_map(|(id, _)| self.plan.goals.get(id))
                .collect(),
        }
    }

    /// Steps of `goal` under this lens: (total, completed).
    pub(crate) fn step_counts(&self, goal: &Goal) -> (usize, usize) {
        let steps: Vec<&Step> = match self.baseline {
            None => self
                .plan
                .steps_of(&goal.goal_id)
                .filter(|s| {
                    self.definitions_on()
                        .is_none_or(|day| calendar::utc_date(s.added_at) <= day)
                })
                .collect(),
            Some(b) => b
                .steps
                .iter()
                .filter(|(_, s)| s.goal_id == goal.goal_id)
                .filter_map(|(id, _)| self.plan.steps.get(id))
                .collect(),
        };
        let done = steps
            .iter()
            .filter(|s| completed_by(s, self.cutoff))
            .count();
        (steps.len(), done)
    }

    /// The target under this lens (baseline target when measuring against a baseline).
    pub(crate) fn target(&self, goal: &Goal) -> Option<f64> {
        let kpi = goal.kpi.as_ref()?;
        match (self.baseline, self.definitions_on()) {
            (Some(b), _) => b.goals.get(&goal.goal_id).and_then(|g| g.target),
            (None, Some(day)) => InForce::on(goal, day).target,
            (None, None) => Some(kpi.target),
        }
    }

    /// Progress of one goal: achieved = 1; else KPI; else children (and own steps as one more
    /// child of weight 1); else steps; else undefined.
    pub(crate) fn measure(&self, goal: &Goal) -> Measured {
        self.measure_at_depth(goal, 0)
    }

    fn measure_at_depth(&self, goal: &Goal, depth: usize) -> Measured {
        let absent = match (self.baseline, self.definitions_on()) {
            (Some(b), _) => !b.goals.contains_key(&goal.goal_id),
            (None, Some(day)) => !defined_by(goal, day),
            (None, None) => false,
        };
        if absent {
            return Measured {
                progress: None,
                measured_by: MeasuredBy::None,
            };
        }
        let achieved = self.closed_outcome(goal) == Some(Outcome::Achieved);
        if let Some(kpi) = &goal.kpi {
            let progress = self.target(goal).map(|target| {
                if achieved {
                    return 1.0;
                }
                let current = self.current_value(goal).unwrap_or(kpi.baseline);
                kpi_progress(kpi.baseline, target, kpi.direction, current)
            });
            return Measured {
                progress,
                measured_by: MeasuredBy::Kpi,
            };
        }
        let mut parts: Vec<(f64, f64)> = Vec::new();
        // The goal tree is acyclic by construction; the depth bound only guards hand-built state.
        if depth <= self.plan.goals.len() {
            for child in self.children(goal) {
                if !self.counts(child) {
                    continue;
                }
                if let Some(p) = self.measure_at_depth(child, depth + 1).progress {
                    parts.push((self.weight_of(child), p));
                }
            }
        }
        let has_children = !parts.is_empty();
        let (total, done) = self.step_counts(goal);
        if total > 0 {
            parts.push((1.0, done as f64 / total as f64));
        }
        let measured_by = match (has_children, total > 0) {
            (true, _) => MeasuredBy::Children,
            (false, true) => MeasuredBy::Steps,
            (false, false) => MeasuredBy::None,
        };
        let progress = if achieved {
            Some(1.0)
        } else {
            weighted_mean(&parts)
        };
        Measured {
            progress,
            measured_by,
        }
    }

    /// Root goals that take part in the plan roll-up, with their weights.
    pub(crate) fn roots(&self) -> Vec<(&'a Goal, f64)> {
        let plan = self.plan;
        let roots: Vec<&'a Goal> = match self.baseline {
            None => plan.root_goals().collect(),
            Some(b) => b
                .goals
                .iter()
                .filter(|(_, g)| {
                    g.parent_goal_id
                        .as_ref()
                        .is_none_or(|p| !b.goals.contains_key(p))
                })
                .filter_map(|(id, _)| plan.goals.get(id))
                .collect(),
        };
        roots
            .into_iter()
            .filter(|g| self.counts(g))
            .map(|g| (g, self.weight_of(g)))
            .collect()
    }

    /// Due date under this lens.
    pub(crate) fn due(&self, goal: &Goal) -> Date {
        match (self.baseline, self.definitions_on()) {
            (Some(b), _) => b.goals.get(&goal.goal_id).map_or(goal.due, |g| g.due),
            (None, Some(day)) => InForce::on(goal, day).due,
            (None, None) => goal.due,
        }
    }

    /// Plan roll-up at `today`: (sum w*p, sum w*e, sum w) over root goals with defined progress.
    pub(crate) fn plan_sums(&self, today: Date) -> PlanSums {
        let mut sums = PlanSums::default();
        for (goal, w) in self.roots() {
            let Some(p) = self.measure(goal).progress else {
                continue;
            };
            let e = expected_progress(goal_start(self.plan, goal), self.due(goal), today);
            sums.ev += w * p;
            sums.pv += w * e;
            sums.weight += w;
        }
        sums
    }
}

/// Weighted sums over a plan's root goals.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct PlanSums {
    /// Earned value `sum(w*p)`.
    pub ev: f64,
    /// Planned value `sum(w*e)`.
    pub pv: f64,
    /// `sum(w)`.
    pub weight: f64,
}

/// `sum(w*p) / sum(w)`, `None` when there is nothing to average.
fn weighted_mean(parts: &[(f64, f64)]) -> Option<f64> {
    let weight: f64 = parts.iter().map(|(w, _)| w).sum();
    ratio(parts.iter().map(|(w, p)| w * p).sum(), weight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn kpi_progress_is_direction_aware_and_clamped() {
        assert_eq!(kpi_progress(10.0, 20.0, Direction::Increase, 15.0), 0.5);
        assert_eq!(kpi_progress(10.0, 4.0, Direction::Decrease, 7.0), 0.5);
        assert_eq!(kpi_progress(10.0, 20.0, Direction::Increase, 25.0), 1.0);
        assert_eq!(kpi_progress(10.0, 20.0, Direction::Increase, 5.0), 0.0);
    }

    #[test]
    fn expected_progress_on_zero_length_span_is_a_step() {
        let d = date(2026, 1, 10);
        assert_eq!(expected_progress(d, d, date(2026, 1, 9)), 0.0);
        assert_eq!(expected_progress(d, d, d), 1.0);
    }

    #[test]
    fn median_of_even_count_is_mean_of_middle_pair() {
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
