//! Momentum (execution fatigue): check-ins and step completions per active goal per week, and
//! the rate of the last four weeks relative to the first four after planning.

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::ratio;
use crate::calendar;
use crate::id::PlanId;
use crate::plan::Plan;

/// Weeks in each window compared by the momentum ratio.
pub const MOMENTUM_WINDOW_WEEKS: usize = 4;

/// Activity in one week.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MomentumWeek {
    /// First day of the week (weeks run from the anchor day).
    pub week_start: Date,
    /// Check-ins recorded in the week.
    pub check_ins: u32,
    /// Step completions in the week.
    pub completions: u32,
    /// Goals defined before the week ended and not closed before it began.
    pub active_goals: u32,
    /// `(check_ins + completions) / active_goals`.
    pub per_active_goal: Option<f64>,
}

/// Momentum of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Momentum {
    /// The plan.
    pub plan_id: Option<PlanId>,
    /// Evaluation time.
    pub as_of: Timestamp,
    /// Day week 0 starts: the later of the plan start and the first baseline's day.
    pub anchor: Date,
    /// Activity per active goal per week over all complete weeks.
    pub rate: Option<f64>,
    /// Pooled rate of the first four complete weeks.
    pub first_four_weeks_rate: Option<f64>,
    /// Pooled rate of the last four complete weeks.
    pub last_four_weeks_rate: Option<f64>,
    /// `last_four_weeks_rate / first_four_weeks_rate` (needs eight complete weeks).
    pub momentum: Option<f64>,
    /// Complete weeks, oldest first.
    pub weeks: Vec<MomentumWeek>,
}

/// Momentum of the plan as of `now`, over complete weeks inside the horizon.
pub fn momentum(plan: &Plan, now: Timestamp) -> Momentum {
    let today = calendar::day_number(calendar::utc_date(now));
    let anchor_date = plan.first_baseline().map_or(plan.starts_on, |b| {
        plan.starts_on.max(calendar::utc_date(b.set_at))
    });
    let anchor = calendar::day_number(anchor_date);
    let stop = today.min(calendar::day_number(plan.ends_on) + 1);
    let check_ins: Vec<i64> = plan
        .goals
        .values()
        .flat_map(|g| &g.check_ins)
        .map(|c| calendar::utc_day_number(c.recorded_at))
        .collect();
    let completions: Vec<i64> = plan
        .steps
        .values()
        .flat_map(|s| &s.completions)
        .map(|t| calendar::utc_day_number(*t))
        .collect();
    let in_week = |days: &[i64], start: i64| -> u32 {
        let n = days
            .iter()
            .filter(|d| **d >= start && **d < start + 7)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    };
    let mut weeks = Vec::new();
    let mut start = anchor;
    while start + 7 <= stop {
        let end = start + 7;
        let active = plan
            .goals
            .values()
            .filter(|g| calendar::utc_day_number(g.defined_at) < end)
            .filter(|g| {
                g.closed
                    .as_ref()
                    .is_none_or(|c| calendar::utc_day_number(c.at) >= start)
            })
            .count();
        let active = u32::try_from(active).unwrap_or(u32::MAX);
        let ci = in_week(&check_ins, start);
        let co = in_week(&completions, start);
        weeks.push(MomentumWeek {
            week_start: calendar::date_from_day_number(start),
            check_ins: ci,
            completions: co,
            active_goals: active,
            per_active_goal: ratio(f64::from(ci + co), f64::from(active)),
        });
        start = end;
    }
    let first =
        (weeks.len() >= MOMENTUM_WINDOW_WEEKS).then(|| pooled(&weeks[..MOMENTUM_WINDOW_WEEKS]));
    let last = (weeks.len() >= MOMENTUM_WINDOW_WEEKS)
        .then(|| pooled(&weeks[weeks.len() - MOMENTUM_WINDOW_WEEKS..]));
    let first = first.flatten();
    let last = last.flatten();
    let comparable = weeks.len() >= 2 * MOMENTUM_WINDOW_WEEKS;
    Momentum {
        plan_id: plan.plan_id.clone(),
        as_of: now,
        anchor: anchor_date,
        rate: pooled(&weeks),
        first_four_weeks_rate: first,
        last_four_weeks_rate: last,
        momentum: if comparable {
            first.zip(last).and_then(|(f, l)| ratio(l, f))
        } else {
            None
        },
        weeks,
    }
}

/// `sum(check_ins + completions) / sum(active_goals)` over the weeks.
fn pooled(weeks: &[MomentumWeek]) -> Option<f64> {
    let events: u32 = weeks.iter().map(|w| w.check_ins + w.completions).sum();
    let active: u32 = weeks.iter().map(|w| w.active_goals).sum();
    ratio(f64::from(events), f64::from(active))
}
