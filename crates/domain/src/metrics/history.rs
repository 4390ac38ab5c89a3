//! Progress history: each goal's progress day by day (against the current and the baseline
//! target) beside its expected progress, with its check-ins and adjustments marked, for charts.
//!
//! A point on day `d` uses the facts effective by the end of `d` (check-ins by `effective_on`,
//! completions by their day) and the plan's current targets: the distance between the
//! current-target and the baseline-target lines is the goalpost effect over time.

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::{Lens, RollUp, expected_progress, goal_start};
use crate::calendar;
use crate::id::{GoalId, PlanId};
use crate::plan::{AdjustmentKind, Baseline, Change, Goal, Plan};

/// One day on a goal's chart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryPoint {
    /// The day.
    pub date: Date,
    /// Progress against the current target with the facts effective by then.
    pub progress: Option<f64>,
    /// Progress against the baseline target with the same facts.
    pub progress_vs_baseline: Option<f64>,
    /// Expected progress on that day (current due date).
    pub expected_progress: f64,
    /// Latest KPI value effective by then.
    pub value: Option<f64>,
    /// Check-ins of this goal effective on that day.
    pub check_ins: Vec<String>,
}

/// An adjustment of a goal, placed on its chart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdjustmentMark {
    /// When it was decided.
    pub at: Timestamp,
    /// Its UTC day.
    pub date: Date,
    /// What changed.
    pub kinds: Vec<AdjustmentKind>,
    /// KPI target before and after.
    pub target: Option<Change<f64>>,
    /// Due date before and after.
    pub due: Option<Change<Date>>,
    /// Why.
    pub reason: String,
}

/// One goal's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GoalHistory {
    /// The goal.
    pub goal_id: GoalId,
    /// Its title.
    pub title: String,
    /// The day its clock starts.
    pub start: Date,
    /// Current due date.
    pub due: Date,
    /// KPI unit, if measured by a KPI.
    pub unit: Option<String>,
    /// Current KPI target.
    pub target: Option<f64>,
    /// KPI target in the baseline.
    pub baseline_target: Option<f64>,
    /// Points at the goal's start, every day something effective happened in the plan (a
    /// check-in may describe a day before the goal was defined), and today.
    pub points: Vec<HistoryPoint>,
    /// Its adjustments, oldest first.
    pub adjustments: Vec<AdjustmentMark>,
}

/// Every goal's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProgressHistory {
    /// The plan.
    pub plan_id: Option<PlanId>,
    /// Evaluation time (its UTC day is the last point).
    pub as_of: Timestamp,
    /// Baseline compared against.
    pub baseline_label: Option<String>,
    /// One entry per goal, in id order.
    pub goals: Vec<GoalHistory>,
}

/// Days on which an effective fact of the plan changed: check-ins, completions, reopenings,
/// closures and adjustments.
fn fact_days(plan: &Plan) -> Vec<Date> {
    let mut days: Vec<Date> = Vec::new();
    for goal in plan.goals.values() {
        days.extend(goal.check_ins.iter().map(|c| c.effective_on));
        days.extend(goal.adjustments.iter().map(|a| calendar::utc_date(a.at)));
        days.extend(goal.closed.iter().map(|c| calendar::utc_date(c.at)));
    }
    for step in plan.steps.values() {
        days.extend(step.completions.iter().map(|t| calendar::utc_date(*t)));
        days.extend(step.reopenings.iter().map(|r| calendar::utc_date(r.at)));
    }
    days
}

fn goal_history(
    plan: &Plan,
    baseline: Option<&Baseline>,
    goal: &Goal,
    facts: &[Date],
    today: Date,
) -> GoalHistory {
    let start = goal_start(plan, goal);
    let mut days: Vec<Date> = facts.iter().copied().filter(|d| *d <= today).collect();
    days.push(start.min(today));
    days.push(today);
    days.sort_unstable();
    days.dedup();
    let lens = Lens::current(plan, RollUp::Weighted);
    let points = days
        .into_iter()
        .map(|date| {
            let at_day = lens.with_cutoff(date);
            HistoryPoint {
                date,
                progress: at_day.measure(goal).progress,
                progress_vs_baseline: baseline
                    .and_then(|b| at_day.against(b).measure(goal).progress),
                expected_progress: expected_progress(start, goal.due, date),
                value: at_day.current_value(goal),
                check_ins: goal
                    .check_ins
                    .iter()
                    .filter(|c| c.effective_on == date)
                    .map(|c| c.checkin_id.clone())
                    .collect(),
            }
        })
        .collect();
    GoalHistory {
        goal_id: goal.goal_id.clone(),
        title: goal.title.clone(),
        start,
        due: goal.due,
        unit: goal.kpi.as_ref().map(|k| k.unit.clone()),
        target: goal.kpi.as_ref().map(|k| k.target),
        baseline_target: baseline
            .and_then(|b| b.goals.get(&goal.goal_id))
            .and_then(|g| g.target),
        points,
        adjustments: goal
            .adjustments
            .iter()
            .map(|a| AdjustmentMark {
                at: a.at,
                date: calendar::utc_date(a.at),
                kinds: a.kinds.clone(),
                target: a.target.clone(),
                due: a.due.clone(),
                reason: a.reason.clone(),
            })
            .collect(),
    }
}

/// Each goal's progress history as of `now`, compared with `baseline` (none: no baseline line).
pub fn progress_history(
    plan: &Plan,
    now: Timestamp,
    baseline: Option<&Baseline>,
) -> ProgressHistory {
    let today = calendar::utc_date(now);
    let facts = fact_days(plan);
    ProgressHistory {
        plan_id: plan.plan_id.clone(),
        as_of: now,
        baseline_label: baseline.map(|b| b.label.clone()),
        goals: plan
            .goals
            .values()
            .map(|goal| goal_history(plan, baseline, goal, &facts, today))
            .collect(),
    }
}
