//! Drift against a baseline: deadline slip, target drift, scope added/removed, execution gap.

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::agility::dropped_after;
use super::{Lens, RollUp, expected_progress, goal_start, ratio};
use crate::calendar;
use crate::error::DomainError;
use crate::id::{GoalId, PlanId, StepId};
use crate::plan::{Baseline, Direction, Plan};

/// Goals and steps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScopeItems {
    /// Goal ids.
    pub goals: Vec<GoalId>,
    /// Step ids.
    pub steps: Vec<StepId>,
}

impl ScopeItems {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.goals.len() + self.steps.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An event a figure rests on: its stream version, and its global log position once the
/// application layer has looked it up (`None` where the log is not at hand). The domain knows
/// versions only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventRef {
    /// The plan's stream version of the event.
    pub version: u64,
    /// The event's position in the global log.
    pub position: Option<u64>,
}

impl EventRef {
    /// The event at `version`, if known (0: state stored before versions were kept).
    pub fn at(version: u64) -> Option<Self> {
        (version > 0).then_some(Self {
            version,
            position: None,
        })
    }
}

/// A goal or step that entered or left the scope, and the event that did it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScopeChange {
    /// The goal (for a goal, or the goal whose drop removed a step).
    pub goal_id: GoalId,
    /// The step, for a step.
    pub step_id: Option<StepId>,
    /// `GoalDefined` or `StepAdded` for an addition, the `GoalClosed` (dropped) for a removal.
    pub event: Option<EventRef>,
}

/// Drift of one goal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GoalDrift {
    /// The goal.
    pub goal_id: GoalId,
    /// Whether it is in the baseline.
    pub in_baseline: bool,
    /// Whether it was dropped after the baseline.
    pub dropped: bool,
    /// Due date in the baseline.
    pub baseline_due: Option<Date>,
    /// Due date now.
    pub due: Date,
    /// `due - baseline_due` in days (positive = later).
    pub deadline_slip_days: Option<i64>,
    /// KPI starting value.
    pub kpi_start: Option<f64>,
    /// KPI target in the baseline.
    pub baseline_target: Option<f64>,
    /// KPI target now.
    pub target: Option<f64>,
    /// `(target_now - target_baseline) / |target_baseline - start|`.
    pub target_drift: Option<f64>,
    /// Whether the target moved in the easier direction.
    pub bar_lowered: Option<bool>,
    /// The `GoalDefined` event.
    pub defined_event: Option<EventRef>,
    /// The latest `GoalAdjusted` after the baseline that moved the due date: with the
    /// baseline's `BaselineSet`, what `deadline_slip_days` rests on (`None`: not moved since).
    pub due_adjusted_event: Option<EventRef>,
    /// The latest `GoalAdjusted` after the baseline that moved the target: with the
    /// baseline's `BaselineSet`, what `target_drift` rests on (`None`: not moved since).
    pub target_adjusted_event: Option<EventRef>,
    /// The `GoalClosed` event that dropped it, when `dropped`.
    pub dropped_event: Option<EventRef>,
}

/// One point of the execution-gap series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GapPoint {
    /// The day.
    pub date: Date,
    /// Expected progress under the baseline's dates and weights.
    pub planned: Option<f64>,
    /// Progress from facts effective on or before that day.
    pub actual: Option<f64>,
    /// `planned - actual` (positive = behind the baseline).
    pub gap: Option<f64>,
}

/// Drift of a plan against one baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DriftReport {
    /// The plan.
    pub plan_id: Option<PlanId>,
    /// Evaluation time.
    pub as_of: Timestamp,
    /// The baseline.
    pub baseline_label: String,
    /// When it was set.
    pub baseline_set_at: Timestamp,
    /// The `BaselineSet` event: the "then" of every figure.
    pub baseline_event: Option<EventRef>,
    /// Latest due now minus latest due then, over baseline goals not dropped (days).
    pub deadline_slip_days: Option<i64>,
    /// Mean of the goals' target drifts.
    pub target_drift: Option<f64>,
    /// Items not in the baseline.
    pub scope_added: ScopeItems,
    /// Baseline items removed (goals dropped after the baseline, with their steps).
    pub scope_removed: ScopeItems,
    /// The events behind `scope_added`, one per item, goals first.
    pub scope_added_events: Vec<ScopeChange>,
    /// The events behind `scope_removed`, one per item, goals first.
    pub scope_removed_events: Vec<ScopeChange>,
    /// One row per goal (baseline or current), in id order.
    pub goals: Vec<GoalDrift>,
    /// Weekly planned vs actual progress from the plan start to today.
    pub execution_gap: Vec<GapPoint>,
}

/// Drift of the plan against the baseline `baseline_label`, as of `now`.
pub fn drift_report(
    plan: &Plan,
    baseline_label: &str,
    now: Timestamp,
) -> Result<DriftReport, DomainError> {
    let baseline =
        plan.baselines
            .get(baseline_label)
            .ok_or_else(|| DomainError::UnknownBaseline {
                label: baseline_label.to_owned(),
            })?;
    let goals: Vec<GoalDrift> = plan
        .goals
        .values()
        .map(|goal| {
            let frozen = baseline.goals.get(&goal.goal_id);
            let kpi = goal.kpi.as_ref();
            let baseline_target = frozen.and_then(|b| b.target);
            let target = kpi.map(|k| k.target);
            let drift = kpi
                .zip(baseline_target)
                .and_then(|(k, tb)| target_drift(k.target, tb, k.baseline));
            let since_baseline = |version: Option<u64>| {
                version
                    .filter(|v| *v > baseline.version)
                    .and_then(EventRef::at)
            };
            let dropped = dropped_after(goal, baseline);
            GoalDrift {
                goal_id: goal.goal_id.clone(),
                in_baseline: frozen.is_some(),
                dropped,
                defined_event: EventRef::at(goal.defined_version),
                due_adjusted_event: frozen.and_then(|_| since_baseline(goal.due_version)),
                target_adjusted_event: baseline_target
                    .and_then(|_| since_baseline(goal.target_version)),
                dropped_event: goal
                    .closed
                    .as_ref()
                    .filter(|_| dropped)
                    .and_then(|c| EventRef::at(c.version)),
                baseline_due: frozen.map(|b| b.due),
                due: goal.due,
                deadline_slip_days: frozen.map(|b| calendar::days_between(b.due, goal.due)),
                kpi_start: kpi.map(|k| k.baseline),
                baseline_target,
                target,
                target_drift: drift,
                bar_lowered: kpi
                    .zip(baseline_target)
                    .map(|(k, tb)| bar_lowered(k.direction, tb, k.target)),
            }
        })
        .collect();
    let kept: Vec<&GoalDrift> = goals
        .iter()
        .filter(|g| g.in_baseline && !g.dropped)
        .collect();
    let latest_now = kept.iter().map(|g| g.due).max();
    let latest_then = kept.iter().filter_map(|g| g.baseline_due).max();
    let drifts: Vec<f64> = goals.iter().filter_map(|g| g.target_drift).collect();
    let scope_added = ScopeItems {
        goals: plan
            .goals
            .keys()
            .filter(|id| !baseline.goals.contains_key(*id))
            .cloned()
            .collect(),
        steps: plan
            .steps
            .keys()
            .filter(|id| !baseline.steps.contains_key(*id))
            .cloned()
            .collect(),
    };
    let scope_removed = scope_removed(plan, baseline);
    let goal_event = |id: &GoalId| {
        plan.goals
            .get(id)
            .and_then(|g| EventRef::at(g.defined_version))
    };
    let step_event = |id: &StepId| {
        plan.steps
            .get(id)
            .and_then(|s| EventRef::at(s.added_version))
    };
    let drop_event = |id: &GoalId| {
        plan.goals
            .get(id)
            .and_then(|g| g.closed.as_ref())
            .and_then(|c| EventRef::at(c.version))
    };
    let step_goal = |id: &StepId| {
        plan.steps
            .get(id)
            .map(|s| s.goal_id.clone())
            .or_else(|| baseline.steps.get(id).map(|s| s.goal_id.clone()))
    };
    let changes = |items: &ScopeItems,
                   goal_ref: &dyn Fn(&GoalId) -> Option<EventRef>,
                   step_ref: &dyn Fn(&StepId) -> Option<EventRef>| {
        let goals = items.goals.iter().map(|id| ScopeChange {
            goal_id: id.clone(),
            step_id: None,
            event: goal_ref(id),
        });
        let steps = items.steps.iter().filter_map(|id| {
            step_goal(id).map(|goal_id| ScopeChange {
                event: step_ref(id),
                goal_id,
                step_id: Some(id.clone()),
            })
        });
        goals.chain(steps).collect::<Vec<_>>()
    };
    let scope_added_events = changes(&scope_added, &goal_event, &step_event);
    // A removed step left with its goal: the goal's drop is the event behind it.
    let scope_removed_events = changes(&scope_removed, &drop_event, &|id: &StepId| {
        step_goal(id).and_then(|goal| drop_event(&goal))
    });
    Ok(DriftReport {
        plan_id: plan.plan_id.clone(),
        as_of: now,
        baseline_label: baseline.label.clone(),
        baseline_set_at: baseline.set_at,
        baseline_event: EventRef::at(baseline.version),
        deadline_slip_days: latest_now
            .zip(latest_then)
            .map(|(now_due, then_due)| calendar::days_between(then_due, now_due)),
        target_drift: ratio(drifts.iter().sum(), drifts.len() as f64),
        scope_added,
        scope_removed,
        scope_added_events,
        scope_removed_events,
        goals,
        execution_gap: execution_gap(plan, baseline, now),
    })
}

impl DriftReport {
    /// Every event reference in the report, to fill in log positions.
    pub fn event_refs_mut(&mut self) -> impl Iterator<Item = &mut EventRef> {
        let goals = self.goals.iter_mut().flat_map(|g| {
            [
                &mut g.defined_event,
                &mut g.due_adjusted_event,
                &mut g.target_adjusted_event,
                &mut g.dropped_event,
            ]
        });
        let scope = self
            .scope_added_events
            .iter_mut()
            .chain(self.scope_removed_events.iter_mut())
            .map(|c| &mut c.event);
        std::iter::once(&mut self.baseline_event)
            .chain(goals)
            .chain(scope)
            .flatten()
    }
}

/// `(target_now - target_baseline) / |target_baseline - start|`; `None` when the baseline target
/// equals the KPI start.
pub fn target_drift(target_now: f64, target_baseline: f64, start: f64) -> Option<f64> {
    let scale = (target_baseline - start).abs();
    (scale != 0.0).then(|| (target_now - target_baseline) / scale)
}

fn bar_lowered(direction: Direction, target_baseline: f64, target_now: f64) -> bool {
    match direction {
        Direction::Increase => target_now < target_baseline,
        Direction::Decrease => target_now > target_baseline,
    }
}

fn scope_removed(plan: &Plan, baseline: &Baseline) -> ScopeItems {
    let dropped = |id: &GoalId| {
        plan.goals
            .get(id)
            .is_some_and(|g| dropped_after(g, baseline))
    };
    ScopeItems {
        goals: baseline
            .goals
            .keys()
            .filter(|id| dropped(id))
            .cloned()
            .collect(),
        steps: baseline
            .steps
            .iter()
            .filter(|(_, s)| dropped(&s.goal_id))
            .map(|(id, _)| id.clone())
            .collect(),
    }
}

/// Planned progress on `day` under the baseline: `sum(w_b * e_b(day)) / sum(w_b)` over the
/// baseline's root goals, with baseline dues and weights.
fn planned_on(plan: &Plan, baseline: &Baseline, day: Date) -> Option<f64> {
    let mut weighted = 0.0;
    let mut weight = 0.0;
    for (id, frozen) in &baseline.goals {
        let is_root = frozen
            .parent_goal_id
            .as_ref()
            .is_none_or(|p| !baseline.goals.contains_key(p));
        let Some(goal) = plan.goals.get(id) else {
            continue;
        };
        if !is_root {
            continue;
        }
        weighted += frozen.weight * expected_progress(goal_start(plan, goal), frozen.due, day);
        weight += frozen.weight;
    }
    ratio(weighted, weight)
}

/// Weekly points from the plan start to `min(today, plan end)`, plus that last day.
fn execution_gap(plan: &Plan, baseline: &Baseline, now: Timestamp) -> Vec<GapPoint> {
    let today = calendar::utc_date(now);
    let last = today.min(plan.ends_on);
    let mut days = Vec::new();
    let mut day = plan.starts_on;
    while day < last {
        days.push(day);
        day = calendar::add_days(day, 7);
    }
    if last >= plan.starts_on {
        days.push(last);
    }
    days.into_iter()
        .map(|date| {
            let planned = planned_on(plan, baseline, date);
            let sums = Lens::current(plan, RollUp::Weighted)
                .with_cutoff(date)
                .plan_sums(date);
            let actual = ratio(sums.ev, sums.weight);
            GapPoint {
                date,
                planned,
                actual,
                gap: planned.zip(actual).map(|(p, a)| p - a),
            }
        })
        .collect()
}
