//! Restatements: check-ins told after the day they describe, and the figures of earlier days
//! each one changed — what a reader was told on those days vs what the check-in made true
//! (docs/metrics.md, "Restatements").

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::{EventRef, Lens, RollUp, Told, computed_status, expected_progress, goal_start, ratio};
use crate::calendar;
use crate::id::{GoalId, PlanId};
use crate::plan::{CheckIn, Goal, Plan, TrackStatus};

/// How one goal's figures changed over a run of days.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FigureChange {
    /// The goal (the check-in's goal, or one of its ancestors).
    pub goal_id: GoalId,
    /// First day of the run.
    pub from: Date,
    /// Last day of the run.
    pub to: Date,
    /// Progress on those days before the check-in was told.
    pub progress_before: Option<f64>,
    /// Progress on those days with it.
    pub progress_after: Option<f64>,
    /// Computed status before (open goals only).
    pub status_before: Option<TrackStatus>,
    /// Computed status with it.
    pub status_after: Option<TrackStatus>,
}

/// How the plan's own figures (its roll-up over root goals) changed over a run of days.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanFigureChange {
    /// First day of the run.
    pub from: Date,
    /// Last day of the run.
    pub to: Date,
    /// Plan progress on those days before the check-in was told.
    pub progress_before: Option<f64>,
    /// Plan progress with it.
    pub progress_after: Option<f64>,
    /// Plan status before.
    pub status_before: Option<TrackStatus>,
    /// Plan status with it.
    pub status_after: Option<TrackStatus>,
}

/// A check-in that changed figures of days before it was told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Restatement {
    /// The check-in.
    pub checkin_id: String,
    /// Its goal.
    pub goal_id: GoalId,
    /// The day it describes.
    pub effective_on: Date,
    /// When it was told.
    pub recorded_at: Timestamp,
    /// Whole days between the day described and the day told.
    pub days_late: i64,
    /// Who told it (the event's actor; filled in where the log is at hand).
    pub reported_by: Option<String>,
    /// The `CheckInRecorded` event.
    pub event: Option<EventRef>,
    /// The figures it changed, per goal in runs of days with the same change.
    pub changes: Vec<FigureChange>,
    /// The plan's progress and status it changed, in runs of days with the same change.
    pub plan_changes: Vec<PlanFigureChange>,
}

/// The restatements of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestatementReport {
    /// The plan.
    pub plan_id: Option<PlanId>,
    /// Evaluation time.
    pub as_of: Timestamp,
    /// Only check-ins told at or after this instant.
    pub since: Option<Timestamp>,
    /// In the order they were told.
    pub restatements: Vec<Restatement>,
}

/// Check-ins told at or after `since` (all when `None`) and by `now` about an earlier day, each
/// with the figures it changed: for every goal from its own up through its ancestors, and for
/// the plan, on each day from the day it describes to the day before it was told, progress and
/// computed status with the check-ins told before it vs with it too, measured with the
/// targets, due dates, weights, goals and steps in force at the end of that day (what that
/// day's dashboard showed). Check-ins that changed nothing are left out.
pub fn restatements(plan: &Plan, since: Option<Timestamp>, now: Timestamp) -> RestatementReport {
    let today = calendar::utc_date(now);
    let mut late: Vec<(&Goal, &CheckIn)> = plan
        .goals
        .values()
        .flat_map(|g| g.check_ins.iter().map(move |c| (g, c)))
        .filter(|(_, c)| c.recorded_at <= now && since.is_none_or(|s| c.recorded_at >= s))
        .filter(|(_, c)| c.effective_on < calendar::utc_date(c.recorded_at))
        .collect();
    late.sort_by(|a, b| {
        a.1.recorded_at
            .cmp(&b.1.recorded_at)
            .then(a.1.checkin_id.cmp(&b.1.checkin_id))
    });
    let restatements = late
        .into_iter()
        .filter_map(|(goal, check_in)| restatement(plan, goal, check_in, today))
        .collect();
    RestatementReport {
        plan_id: plan.plan_id.clone(),
        as_of: now,
        since,
        restatements,
    }
}

fn restatement(plan: &Plan, goal: &Goal, check_in: &CheckIn, today: Date) -> Option<Restatement> {
    let told_on = calendar::utc_date(check_in.recorded_at);
    let last = calendar::add_days(told_on, -1).min(today);
    let lens = Lens::current(plan, RollUp::Weighted);
    let before = lens.told(Told {
        before: check_in.recorded_at,
        also: None,
    });
    let after = lens.told(Told {
        before: check_in.recorded_at,
        also: Some(check_in.checkin_id.as_str()),
    });
    let days = || Days {
        next: check_in.effective_on,
        last,
    };
    let mut changes = Vec::new();
    for affected in lineage(plan, goal) {
        let start = goal_start(plan, affected);
        let figures = |lens: Lens<'_>, day: Date| {
            let progress = lens.measure(affected).progress;
            let open = affected
                .closed
                .as_ref()
                .is_none_or(|c| calendar::utc_date(c.at) > day);
            let e = expected_progress(start, lens.due(affected), day);
            let status = progress.filter(|_| open).map(|p| computed_status(p, e));
            (progress, status)
        };
        let runs = runs(days().map(|day| {
            let (p0, s0) = figures(on(before, day), day);
            let (p1, s1) = figures(on(after, day), day);
            (day, (p0, p1, s0, s1))
        }));
        changes.extend(runs.into_iter().map(|run| FigureChange {
            goal_id: affected.goal_id.clone(),
            from: run.from,
            to: run.to,
            progress_before: run.change.0,
            progress_after: run.change.1,
            status_before: run.change.2,
            status_after: run.change.3,
        }));
    }
    let plan_figures = |lens: Lens<'_>, day: Date| {
        let sums = lens.plan_sums(day);
        let progress = ratio(sums.ev, sums.weight);
        let expected = ratio(sums.pv, sums.weight);
        (
            progress,
            progress.zip(expected).map(|(p, e)| computed_status(p, e)),
        )
    };
    let plan_changes: Vec<PlanFigureChange> = runs(days().map(|day| {
        let (p0, s0) = plan_figures(on(before, day), day);
        let (p1, s1) = plan_figures(on(after, day), day);
        (day, (p0, p1, s0, s1))
    }))
    .into_iter()
    .map(|run| PlanFigureChange {
        from: run.from,
        to: run.to,
        progress_before: run.change.0,
        progress_after: run.change.1,
        status_before: run.change.2,
        status_after: run.change.3,
    })
    .collect();
    (!changes.is_empty() || !plan_changes.is_empty()).then(|| Restatement {
        checkin_id: check_in.checkin_id.clone(),
        goal_id: goal.goal_id.clone(),
        effective_on: check_in.effective_on,
        recorded_at: check_in.recorded_at,
        days_late: calendar::days_between(check_in.effective_on, told_on),
        reported_by: None,
        event: EventRef::at(check_in.version),
        changes,
        plan_changes,
    })
}

/// The lens of day `day`: the facts effective by its end, measured with the definitions in
/// force at its end (what that day's dashboard showed, give or take the check-in).
fn on(lens: Lens<'_>, day: Date) -> Lens<'_> {
    lens.in_force_on(day).with_cutoff(day)
}

/// Progress and status before and after a check-in.
type Figures = (
    Option<f64>,
    Option<f64>,
    Option<TrackStatus>,
    Option<TrackStatus>,
);

/// A run of consecutive days with the same change.
struct Run {
    from: Date,
    to: Date,
    change: Figures,
}

/// The days `next..=last`.
struct Days {
    next: Date,
    last: Date,
}

impl Iterator for Days {
    type Item = Date;

    fn next(&mut self) -> Option<Date> {
        let day = self.next;
        (day <= self.last).then(|| {
            self.next = calendar::add_days(day, 1);
            day
        })
    }
}

/// Consecutive days with the same change as one run; days whose figures did not change (before
/// equals after) are left out and end the run.
fn runs(days: impl Iterator<Item = (Date, Figures)>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let mut open = false;
    for (day, change) in days {
        let (p0, p1, s0, s1) = change;
        if p0 == p1 && s0 == s1 {
            open = false;
            continue;
        }
        match runs.last_mut() {
            Some(run) if open && run.change == change => run.to = day,
            _ => {
                runs.push(Run {
                    from: day,
                    to: day,
                    change,
                });
                open = true;
            }
        }
    }
    runs
}

/// The goal and its ancestors, nearest first (bounded by the number of goals: the tree is
/// acyclic by construction, the bound only guards hand-built state).
fn lineage<'a>(plan: &'a Plan, goal: &'a Goal) -> Vec<&'a Goal> {
    let mut chain = vec![goal];
    let mut current = goal;
    while let Some(parent) = current
        .parent_goal_id
        .as_ref()
        .and_then(|id| plan.goals.get(id))
    {
        if chain.len() > plan.goals.len() {
            break;
        }
        chain.push(parent);
        current = parent;
    }
    chain
}
