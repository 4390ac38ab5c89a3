//! Agility: adjustments by kind, plan volatility, course-correction latency, signals never acted
//! on, re-baselines — per plan and per goal.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{PROMPT_CORRECTION_DAYS, median, ratio};
use crate::calendar;
use crate::id::{GoalId, PlanId};
use crate::plan::{AdjustmentKind, Baseline, Goal, Plan, TrackStatus};

/// Adjustment counts by kind; each changed field counts once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdjustmentCounts {
    /// KPI target changes.
    pub target: u32,
    /// Due date changes.
    pub due: u32,
    /// Scope changes: title rewordings, and after the first baseline: goals and steps added, goals dropped.
    pub scope: u32,
    /// Weight changes.
    pub weight: u32,
    /// Sum of the four.
    pub total: u32,
}

impl AdjustmentCounts {
    fn add(&mut self, kind: AdjustmentKind) {
        match kind {
            AdjustmentKind::Target => self.target += 1,
            AdjustmentKind::Due => self.due += 1,
            AdjustmentKind::Scope => self.scope += 1,
            AdjustmentKind::Weight => self.weight += 1,
        }
        self.total += 1;
    }

    fn merge(&mut self, other: &AdjustmentCounts) {
        self.target += other.target;
        self.due += other.due;
        self.scope += other.scope;
        self.weight += other.weight;
        self.total += other.total;
    }
}

/// An at_risk/off_track check-in not yet followed by a correction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnansweredSignal {
    /// The goal.
    pub goal_id: GoalId,
    /// The check-in that raised it.
    pub checkin_id: String,
    /// Its status.
    pub status: TrackStatus,
    /// When it was recorded.
    pub since: Timestamp,
    /// Days it has been open.
    pub days_open: f64,
}

/// A baseline of the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BaselineInfo {
    /// Its label.
    pub label: String,
    /// Its order (1 = first).
    pub sequence: u32,
    /// When it was set.
    pub set_at: Timestamp,
}

/// Agility figures of one goal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GoalAgility {
    /// The goal.
    pub goal_id: GoalId,
    /// Adjustments by kind.
    pub adjustments: AdjustmentCounts,
    /// (added + changed + removed) / baseline size, for the goal and its steps.
    pub volatility: Option<f64>,
    /// (added + changed + removed) / weeks since the first baseline.
    pub volatility_per_week: Option<f64>,
    /// Median days from a warning signal to the next correction.
    pub course_correction_latency_days: Option<f64>,
    /// Warning episodes (first at_risk/off_track after a correction).
    pub signals: u32,
    /// Episodes still without a correction.
    pub signals_never_acted_on: u32,
}

/// Agility of a plan and its goals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgilityReport {
    /// The plan.
    pub plan_id: Option<PlanId>,
    /// Evaluation time.
    pub as_of: Timestamp,
    /// Adjustments by kind.
    pub adjustments: AdjustmentCounts,
    /// Adjustments that name the check-in they answer.
    pub adjustments_in_response_to_check_ins: u32,
    /// The baseline volatility is measured against (the first one).
    pub baseline_label: Option<String>,
    /// Items (goals + steps) in that baseline.
    pub baseline_size: u32,
    /// Items added since.
    pub scope_added: u32,
    /// Baseline goals whose title, target, due date or weight differ now.
    pub scope_changed: u32,
    /// Baseline items removed (goals dropped, with their steps).
    pub scope_removed: u32,
    /// (added + changed + removed) / baseline size.
    pub volatility: Option<f64>,
    /// (added + changed + removed) / weeks since the baseline was set.
    pub volatility_per_week: Option<f64>,
    /// Median days from a warning signal to the next correction.
    pub course_correction_latency_days: Option<f64>,
    /// Share of decided episodes corrected within 14 days.
    pub corrected_within_14_days: Option<f64>,
    /// Warning episodes.
    pub signals: u32,
    /// Episodes still without a correction.
    pub signals_never_acted_on: u32,
    /// Those episodes.
    pub unanswered: Vec<UnansweredSignal>,
    /// Baselines set after the first.
    pub re_baselines: u32,
    /// All baselines in order.
    pub baselines: Vec<BaselineInfo>,
    /// One row per goal.
    pub goals: Vec<GoalAgility>,
}

/// Agility of the plan and each goal as of `now` (volatility against the first baseline).
pub fn agility_report(plan: &Plan, now: Timestamp) -> AgilityReport {
    let baseline = plan.first_baseline();
    let mut adjustments = AdjustmentCounts::default();
    let mut latencies = Vec::new();
    let mut unanswered = Vec::new();
    let mut signals = 0;
    let mut goals = Vec::new();
    for goal in plan.goals.values() {
        let counts = goal_adjustments(plan, goal, baseline);
        adjustments.merge(&counts);
        let episodes = episodes(plan, goal, now);
        signals += count(episodes.len());
        let goal_latencies: Vec<f64> = episodes.iter().filter_map(|e| e.latency).collect();
        let open: Vec<UnansweredSignal> = episodes.iter().filter_map(|e| e.open.clone()).collect();
        let change = baseline.and_then(|b| goal_volatility(plan, goal, b));
        goals.push(GoalAgility {
            goal_id: goal.goal_id.clone(),
            adjustments: counts,
            volatility: change.and_then(|(n, size)| ratio(f64::from(n), f64::from(size))),
            volatility_per_week: change.and_then(|(n, _)| per_week(n, baseline, now)),
            course_correction_latency_days: median(&goal_latencies),
            signals: count(episodes.len()),
            signals_never_acted_on: count(open.len()),
        });
        latencies.extend(goal_latencies);
        unanswered.extend(open);
    }
    if let Some(b) = baseline {
        let defined_after = plan.goals.values().filter(|g| g.defined_at > b.set_at);
        for _ in defined_after {
            adjustments.add(AdjustmentKind::Scope);
        }
    }
    let scope = baseline.map(|b| scope_change(plan, b)).unwrap_or_default();
    let numerator = scope.added + scope.changed + scope.removed;
    let prompt = latencies
        .iter()
        .filter(|l| **l <= PROMPT_CORRECTION_DAYS)
        .count();
    let decided = latencies.len()
        + unanswered
            .iter()
            .filter(|u| u.days_open >= PROMPT_CORRECTION_DAYS)
            .count();
    let mut baselines: Vec<BaselineInfo> = plan
        .baselines
        .values()
        .map(|b| BaselineInfo {
            label: b.label.clone(),
            sequence: b.sequence,
            set_at: b.set_at,
        })
        .collect();
    baselines.sort_by_key(|b| b.sequence);
    AgilityReport {
        plan_id: plan.plan_id.clone(),
        as_of: now,
        adjustments,
        adjustments_in_response_to_check_ins: count(
            plan.goals
                .values()
                .flat_map(|g| &g.adjustments)
                .filter(|a| a.in_response_to_checkin.is_some())
                .count(),
        ),
        baseline_label: baseline.map(|b| b.label.clone()),
        baseline_size: scope.size,
        scope_added: scope.added,
        scope_changed: scope.changed,
        scope_removed: scope.removed,
        volatility: baseline.and_then(|_| ratio(f64::from(numerator), f64::from(scope.size))),
        volatility_per_week: baseline.and_then(|_| per_week(numerator, baseline, now)),
        course_correction_latency_days: median(&latencies),
        corrected_within_14_days: ratio(prompt as f64, decided as f64),
        signals,
        signals_never_acted_on: count(unanswered.len()),
        unanswered,
        re_baselines: count(plan.baselines.len().saturating_sub(1)),
        baselines,
        goals,
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Changes per week since the baseline was set (whole UTC days / 7); `None` on the day it was set.
fn per_week(changes: u32, baseline: Option<&Baseline>, now: Timestamp) -> Option<f64> {
    let b = baseline?;
    let days = calendar::days_between(calendar::utc_date(b.set_at), calendar::utc_date(now));
    (days > 0).then(|| f64::from(changes) / (days as f64 / 7.0))
}

fn goal_adjustments(plan: &Plan, goal: &Goal, baseline: Option<&Baseline>) -> AdjustmentCounts {
    let mut counts = AdjustmentCounts::default();
    for adjustment in &goal.adjustments {
        for kind in &adjustment.kinds {
            counts.add(*kind);
        }
    }
    if let Some(b) = baseline {
        let added = plan
            .steps_of(&goal.goal_id)
            .filter(|s| s.added_at > b.set_at)
            .count();
        for _ in 0..added {
            counts.add(AdjustmentKind::Scope);
        }
        if dropped_after(goal, b) {
            counts.add(AdjustmentKind::Scope);
        }
    }
    counts
}

/// Scope change of the whole plan against a baseline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ScopeChange {
    pub size: u32,
    pub added: u32,
    pub changed: u32,
    pub removed: u32,
}

/// Whether the goal was closed as dropped after the baseline was set.
pub(crate) fn dropped_after(goal: &Goal, baseline: &Baseline) -> bool {
    goal.is_dropped() && goal.closed.as_ref().is_some_and(|c| c.at > baseline.set_at)
}

/// Whether a baseline goal's title, target, due date or weight differ now.
pub(crate) fn goal_changed(goal: &Goal, baseline: &Baseline) -> bool {
    baseline.goals.get(&goal.goal_id).is_some_and(|b| {
        b.title != goal.title
            || b.target != goal.kpi.as_ref().map(|k| k.target)
            || b.due != goal.due
            || b.weight != goal.weight
    })
}

pub(crate) fn scope_change(plan: &Plan, baseline: &Baseline) -> ScopeChange {
    let dropped = |goal_id: &GoalId| {
        plan.goals
            .get(goal_id)
            .is_some_and(|g| dropped_after(g, baseline))
    };
    let added = plan
        .goals
        .keys()
        .filter(|id| !baseline.goals.contains_key(*id))
        .count()
        + plan
            .steps
            .keys()
            .filter(|id| !baseline.steps.contains_key(*id))
            .count();
    let removed = baseline
        .goals
        .keys()
        .filter(|id| dropped(id) || !plan.goals.contains_key(*id))
        .count()
        + baseline
            .steps
            .iter()
            .filter(|(id, s)| dropped(&s.goal_id) || !plan.steps.contains_key(*id))
            .count();
    let changed = plan
        .goals
        .values()
        .filter(|g| !dropped_after(g, baseline) && goal_changed(g, baseline))
        .count();
    ScopeChange {
        size: count(baseline.size()),
        added: count(added),
        changed: count(changed),
        removed: count(removed),
    }
}

/// (added + changed + removed, baseline size) for one goal and its steps; `None` if the goal is
/// not in the baseline.
fn goal_volatility(plan: &Plan, goal: &Goal, baseline: &Baseline) -> Option<(u32, u32)> {
    baseline.goals.get(&goal.goal_id)?;
    let baseline_steps = baseline
        .steps
        .values()
        .filter(|s| s.goal_id == goal.goal_id)
        .count();
    let size = 1 + baseline_steps;
    let added = plan
        .steps_of(&goal.goal_id)
        .filter(|s| !baseline.steps.contains_key(&s.step_id))
        .count();
    let (changed, removed) = if dropped_after(goal, baseline) {
        (0, size)
    } else {
        (usize::from(goal_changed(goal, baseline)), 0)
    };
    Some((count(added + changed + removed), count(size)))
}

/// One warning episode: from the first at_risk/off_track check-in to the next correction.
struct Episode {
    latency: Option<f64>,
    open: Option<UnansweredSignal>,
}

/// Warning episodes of a goal. A correction is an adjustment, a new step, an on_track
/// check-in, or closing the goal; the first warning after a correction opens the next episode.
fn episodes(plan: &Plan, goal: &Goal, now: Timestamp) -> Vec<Episode> {
    // (time, order at equal times, warning?) where warnings sort before corrections.
    enum Mark<'a> {
        Warning(&'a str, TrackStatus),
        Correction,
    }
    let mut marks: Vec<(Timestamp, u8, Mark<'_>)> = Vec::new();
    for c in &goal.check_ins {
        match c.status {
            Some(status) if status.is_warning() => {
                marks.push((c.recorded_at, 0, Mark::Warning(&c.checkin_id, status)));
            }
            Some(_) => marks.push((c.recorded_at, 1, Mark::Correction)),
            None => {}
        }
    }
    for a in &goal.adjustments {
        marks.push((a.at, 1, Mark::Correction));
    }
    for s in plan.steps_of(&goal.goal_id) {
        marks.push((s.added_at, 1, Mark::Correction));
    }
    if let Some(closure) = &goal.closed {
        marks.push((closure.at, 1, Mark::Correction));
    }
    marks.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut out = Vec::new();
    let mut pending: Option<(Timestamp, &str, TrackStatus)> = None;
    for (at, _, mark) in marks {
        match (mark, pending) {
            (Mark::Warning(id, status), None) => pending = Some((at, id, status)),
            (Mark::Warning(..), Some(_)) => {}
            (Mark::Correction, Some((since, _, _))) => {
                out.push(Episode {
                    latency: Some(calendar::days_between_instants(since, at)),
                    open: None,
                });
                pending = None;
            }
            (Mark::Correction, None) => {}
        }
    }
    if let Some((since, id, status)) = pending {
        out.push(Episode {
            latency: None,
            open: Some(UnansweredSignal {
                goal_id: goal.goal_id.clone(),
                checkin_id: id.to_owned(),
                status,
                since,
                days_open: calendar::days_between_instants(since, now),
            }),
        });
    }
    out
}
