//! The accountability read model: per plan and per person, roles held, check-in punctuality,
//! staleness, say/do ratio, overdue steps, ownership coverage, open blockers and Brier score.
//!
//! Stored facts: the evolved plan per stream, and an index `<tenant> NUL <person> NUL <plan_id>`
//! of the people holding a role on each plan, so a person's figures across plans are one prefix
//! scan away. Figures are computed at query time by the domain's formulas.

use std::collections::BTreeSet;

use jiff::Timestamp;
use planledger_domain::metrics::{
    AccountabilityReport, PersonAccountability, accountability_report, person_accountability, ratio,
};
use planledger_domain::{PersonId, Plan, PlanId};
use serde::Serialize;

use crate::projector::{IndexChange, ProjectedEvent, Projector, fold};

/// The accountability projector.
#[derive(Clone, Copy, Debug, Default)]
pub struct AccountabilityProjector;

/// The index key of a person's role on a plan.
pub fn person_plan_key(tenant: &str, person: &str, plan_id: &str) -> Vec<u8> {
    let mut key = person_prefix(tenant, person);
    key.extend_from_slice(plan_id.as_bytes());
    key
}

/// The index prefix of every plan a person holds a role on.
pub fn person_prefix(tenant: &str, person: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(tenant.len() + person.len() + 2);
    key.extend_from_slice(tenant.as_bytes());
    key.push(0);
    key.extend_from_slice(person.as_bytes());
    key.push(0);
    key
}

fn people(plan: &Plan) -> BTreeSet<PersonId> {
    plan.roles.iter().map(|r| r.person.clone()).collect()
}

impl Projector for AccountabilityProjector {
    fn name(&self) -> &'static str {
        "accountability"
    }

    fn apply(&self, plan: &mut Plan, event: &ProjectedEvent<'_>, index: &mut Vec<IndexChange>) {
        let role_change = matches!(
            event.event,
            planledger_domain::Event::RoleAssigned(_) | planledger_domain::Event::RoleRevoked(_)
        );
        let before = if role_change {
            people(plan)
        } else {
            BTreeSet::new()
        };
        fold(plan, event.event);
        if !role_change {
            return;
        }
        let after = people(plan);
        for gone in before.difference(&after) {
            index.push(IndexChange {
                key: person_plan_key(event.tenant, gone.as_str(), event.plan_id),
                present: false,
            });
        }
        for new in after.difference(&before) {
            index.push(IndexChange {
                key: person_plan_key(event.tenant, new.as_str(), event.plan_id),
                present: true,
            });
        }
    }
}

/// Accountability of `plan` (plan, goal and person rows) as of `now`.
pub fn accountability_view(plan: &Plan, plan_id: &PlanId, now: Timestamp) -> AccountabilityReport {
    let mut report = accountability_report(plan, now);
    report.plan_id.get_or_insert_with(|| plan_id.clone());
    report
}

/// One plan's row in a person's accountability.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PersonPlanRow {
    /// The plan.
    pub plan_id: PlanId,
    /// The person's figures in that plan.
    #[serde(flatten)]
    pub figures: PersonAccountability,
}

/// A person's figures pooled over every plan they hold a role on: counts are summed and the
/// ratios recomputed from the sums (not averaged), so a plan with more slots weighs more.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PersonTotals {
    /// On-time slots / slots due, over all plans.
    pub punctuality: Option<f64>,
    /// Slots due.
    pub slots_due: u32,
    /// On-time slots.
    pub slots_on_time: u32,
    /// The largest staleness among owned open goals.
    pub staleness_days: Option<f64>,
    /// Steps completed by their due date / steps due, over all plans.
    pub say_do_ratio: Option<f64>,
    /// Owned steps due.
    pub steps_due: u32,
    /// Owned steps completed by their due date.
    pub steps_done_on_time: u32,
    /// Owned open steps past due.
    pub overdue_steps: u32,
    /// Blockers on owned open goals.
    pub open_blockers: u32,
    /// Brier score over every scored goal of every plan.
    pub brier_score: Option<f64>,
    /// Goals scored.
    pub brier_goals: u32,
}

/// A person's accountability across plans.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PersonView {
    /// The person.
    pub person: PersonId,
    /// Evaluation time.
    pub as_of: Timestamp,
    /// One row per plan they hold a role on, in plan id order.
    pub plans: Vec<PersonPlanRow>,
    /// Pooled over those plans.
    pub totals: PersonTotals,
}

/// A person's accountability over `plans` (plan id and facts) as of `now`.
pub fn person_view(person: &PersonId, plans: &[(PlanId, Plan)], now: Timestamp) -> PersonView {
    let rows: Vec<PersonPlanRow> = plans
        .iter()
        .filter_map(|(plan_id, plan)| {
            person_accountability(plan, person, now).map(|figures| PersonPlanRow {
                plan_id: plan_id.clone(),
                figures,
            })
        })
        .collect();
    let mut totals = PersonTotals::default();
    let mut brier_sum = 0.0;
    for row in &rows {
        let f = &row.figures;
        totals.slots_due += f.slots_due;
        totals.slots_on_time += f.slots_on_time;
        totals.steps_due += f.steps_due;
        totals.steps_done_on_time += f.steps_done_on_time;
        totals.overdue_steps += f.overdue_steps;
        totals.open_blockers += f.open_blockers;
        totals.brier_goals += f.brier_goals;
        brier_sum += f.brier_score.unwrap_or(0.0) * f64::from(f.brier_goals);
        totals.staleness_days = match (totals.staleness_days, f.staleness_days) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    totals.punctuality = ratio(f64::from(totals.slots_on_time), f64::from(totals.slots_due));
    totals.say_do_ratio = ratio(
        f64::from(totals.steps_done_on_time),
        f64::from(totals.steps_due),
    );
    totals.brier_score = ratio(brier_sum, f64::from(totals.brier_goals));
    PersonView {
        person: person.clone(),
        as_of: now,
        plans: rows,
        totals,
    }
}
