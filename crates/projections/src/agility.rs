//! The agility read model: per plan and goal, adjustments by kind, volatility, course-correction
//! latency, signals never acted on and re-baselines.
//!
//! Stored facts: the evolved plan per stream (its adjustments, check-in statuses, steps and
//! baselines). Figures are computed at query time by the domain's formulas.

use jiff::Timestamp;
use planledger_domain::metrics::{AgilityReport, agility_report};
use planledger_domain::{Plan, PlanId};

use crate::projector::{IndexChange, ProjectedEvent, Projector, fold};

/// The agility projector.
#[derive(Clone, Copy, Debug, Default)]
pub struct AgilityProjector;

impl Projector for AgilityProjector {
    fn name(&self) -> &'static str {
        "agility"
    }

    fn apply(&self, plan: &mut Plan, event: &ProjectedEvent<'_>, _index: &mut Vec<IndexChange>) {
        fold(plan, event.event);
    }
}

/// Agility of `plan` as of `now`.
pub fn agility_view(plan: &Plan, plan_id: &PlanId, now: Timestamp) -> AgilityReport {
    let mut report = agility_report(plan, now);
    report.plan_id.get_or_insert_with(|| plan_id.clone());
    report
}
