//! Restatements: check-ins told after the day they describe, and the figures of earlier days
//! each one changed — what a reader was told on those days vs what the check-in made true
//! (docs/metrics.md, "Restatements").

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::{EventRef, Lens, RollUp, Told, computed_status, expected_progress, goal_start};
use crate::calendar;
use crate::id::{GoalId, PlanId};
use crate::plan::{CheckIn, Goal, Plan, TrackStatus};

/// How one goal's figures changed over a run of days.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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

/// A check-in that changed figures of days before it was told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
}

/// The restatements of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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

impl RestatementReport {
    /// Every event reference in the report, to fill in log positions and actors.
    pub fn restatements_mut(&mut self) -> impl Iterator<Item = &mut Restatement> {
        self.restatements.iter_mut()
    }
}

/// Check-ins told at or after `since` (all when `None`) and by `now` about an earlier day, each
/// with the figures it changed: for every goal from its own up through its ancestors, and each
/// day from the day it describes to the day before it was told, progress and computed status
/// with the check-ins told before it vs with it too (targets, due dates and steps as the plan
/// has them now, as the progress history does). Check-ins that changed nothing are left out.
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
    let mut changes = Vec::new();
    for affected in lineage(plan, goal) {
        let start = goal_start(plan, affected);
        let mut day = check_in.effective_on;
        let mut run: Option<FigureChange> = None;
        while day <= last {
            let figures = |lens: Lens<'_>| {
                let at_day = lens.with_cutoff(day);
                let progress = at_day.measure(affected).progress;
                let open = affected
                    .closed
                    .as_ref()
                    .is_none_or(|c| calendar::utc_date(c.at) > day);
                let e = expected_progress(start, affected.due, day);
                let status = progress.filter(|_| open).map(|p| computed_status(p, e));
                (progress, status)
            };
            let (p0, s0) = figures(before);
            let (p1, s1) = figures(after);
            let changed = p0 != p1 || s0 != s1;
            match &mut run {
                Some(r)
                    if changed
                        && r.progress_before == p0
                        && r.progress_after == p1
                        && r.status_before == s0
                        && r.status_after == s1 =>
                {
                    r.to = day;
                }
                _ => {
                    changes.extend(run.take());
                    run = changed.then(|| FigureChange {
                        goal_id: affected.goal_id.clone(),
                        from: day,
                        to: day,
                        progress_before: p0,
                        progress_after: p1,
                        status_before: s0,
                        status_after: s1,
                    });
                }
            }
            day = calendar::add_days(day, 1);
        }
        changes.extend(run);
    }
    (!changes.is_empty()).then(|| Restatement {
        checkin_id: check_in.checkin_id.clone(),
        goal_id: goal.goal_id.clone(),
        effective_on: check_in.effective_on,
        recorded_at: check_in.recorded_at,
        days_late: calendar::days_between(check_in.effective_on, told_on),
        reported_by: None,
        event: EventRef::at(check_in.version),
        changes,
    })
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
