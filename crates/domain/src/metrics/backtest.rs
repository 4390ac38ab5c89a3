//! Back-test of the completion forecast over a plan's closed KPI goals: what the forecast said at
//! each check-in before the goal closed, against the day the target was actually reached, and
//! the share of P85 (and P50) dates that held (docs/metrics.md, "Forecast back-test").

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::forecast::{Aim, CompletionForecast, forecast};
use super::{EventRef, ratio};
use crate::calendar;
use crate::id::GoalId;
use crate::plan::{CheckIn, Goal, Outcome, Plan};

/// What the forecast said at one past check-in, and whether its dates held.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BacktestForecast {
    /// When the forecast was made: the check-in's recording time.
    pub made_at: Timestamp,
    /// The check-in (`CheckInRecorded`) after which it was made.
    pub event: Option<EventRef>,
    /// Its P50 date.
    pub p50: Option<Date>,
    /// Its P85 date.
    pub p85: Option<Date>,
    /// Whether the target was reached by the P50 date (`None`: cannot be judged).
    pub p50_held: Option<bool>,
    /// Whether the target was reached by the P85 date (`None`: cannot be judged).
    pub p85_held: Option<bool>,
}

/// The back-test of one closed KPI goal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BacktestGoal {
    /// The goal.
    pub goal_id: GoalId,
    /// Achieved or missed.
    pub outcome: Outcome,
    /// The day the target was reached (achieved goals): the effective day of the first
    /// check-in told before closing whose value met the target at closing, else the closing day.
    pub reached_on: Option<Date>,
    /// The day the goal was closed.
    pub closed_on: Date,
    /// The `GoalClosed` event.
    pub closed_event: Option<EventRef>,
    /// The trend forecasts made at its check-ins before closing, in recording order.
    pub forecasts: Vec<BacktestForecast>,
}

/// The back-test of a plan's completion forecasts over its closed KPI goals.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ForecastBacktest {
    /// Trend forecasts made (over all goals below).
    pub forecasts: u32,
    /// Of those, forecasts whose P85 date can be judged.
    pub p85_judged: u32,
    /// Of those, forecasts whose P85 date held.
    pub p85_held: u32,
    /// `p85_held / p85_judged`: about 0.85 when the interval is honest.
    pub p85_coverage: Option<f64>,
    /// Forecasts whose P50 date can be judged.
    pub p50_judged: u32,
    /// Of those, forecasts whose P50 date held.
    pub p50_held: u32,
    /// `p50_held / p50_judged`: about 0.5 when the trend is unbiased.
    pub p50_coverage: Option<f64>,
    /// One row per closed (achieved or missed) KPI goal with at least one trend forecast.
    pub goals: Vec<BacktestGoal>,
}

impl ForecastBacktest {
    /// The back-test made of these goal rows (in goal id order), with its counts and coverages.
    pub fn of(goals: Vec<BacktestGoal>) -> Self {
        let mut report = Self::default();
        for f in goals.iter().flat_map(|g| &g.forecasts) {
            report.forecasts += 1;
            if let Some(held) = f.p85_held {
                report.p85_judged += 1;
                report.p85_held += u32::from(held);
            }
            if let Some(held) = f.p50_held {
                report.p50_judged += 1;
                report.p50_held += u32::from(held);
            }
        }
        report.p85_coverage = ratio(f64::from(report.p85_held), f64::from(report.p85_judged));
        report.p50_coverage = ratio(f64::from(report.p50_held), f64::from(report.p50_judged));
        report.goals = goals;
        report
    }
}

/// The back-test of `plan`'s completion forecasts as of `now` (over the goals closed by then),
/// each forecast made with `window` and `min_points` as [`super::completion_forecast`].
pub fn forecast_backtest(
    plan: &Plan,
    now: Timestamp,
    window: usize,
    min_points: usize,
) -> ForecastBacktest {
    ForecastBacktest::of(
        plan.goals
            .values()
            .filter_map(|goal| backtest_goal(goal, now, window, min_points))
            .collect(),
    )
}

/// One goal's row of the back-test as of `now`: `None` unless it is a KPI goal closed achieved
/// or missed by `now` with at least one trend forecast. A function of the goal alone, which
/// takes no check-in or adjustment once closed: a caller may keep the row of a closed goal
/// and reuse it for an equal goal (the API does, `app::backtests`).
pub fn backtest_goal(
    goal: &Goal,
    now: Timestamp,
    window: usize,
    min_points: usize,
) -> Option<BacktestGoal> {
    let closure = goal.closed.as_ref().filter(|c| c.at <= now)?;
    if closure.outcome == Outcome::Dropped {
        return None;
    }
    let closed_on = calendar::utc_date(closure.at);
    let told: Vec<&CheckIn> = goal
        .check_ins
        .iter()
        .filter(|c| c.recorded_at <= closure.at)
        .collect();
    let at_close = aim_at(goal, closure.at)?;
    let reached_on = (closure.outcome == Outcome::Achieved).then(|| {
        told.iter()
            .filter(|c| c.value.is_some_and(|v| at_close.met_by(v)))
            .map(|c| c.effective_on)
            .min()
            .unwrap_or(closed_on)
    });
    let mut moments: Vec<&CheckIn> = told.clone();
    moments.sort_by_key(|c| c.recorded_at);
    let mut forecasts = Vec::new();
    for made in moments {
        let Some(aim) = aim_at(goal, made.recorded_at) else {
            continue;
        };
        let known = told
            .iter()
            .copied()
            .filter(|c| c.recorded_at <= made.recorded_at);
        let today = calendar::utc_date(made.recorded_at);
        let CompletionForecast::Trend(trend) = forecast(known, aim, today, window, min_points)
        else {
            continue;
        };
        // No date: the bound lies past the forecast horizon. Achieved goals are judged on
        // whether they were reached by the date; missed goals only when the date came by the
        // closing day (it did not hold), later dates stay open.
        let judge = |date: Option<Date>| -> Option<bool> {
            match (reached_on, date) {
                (Some(reached), Some(date)) => Some(reached <= date),
                (Some(_), None) => Some(true),
                (None, Some(date)) => (date <= closed_on).then_some(false),
                (None, None) => None,
            }
        };
        forecasts.push(BacktestForecast {
            made_at: made.recorded_at,
            event: EventRef::at(made.version),
            p50: trend.p50,
            p85: trend.p85,
            p50_held: judge(trend.p50),
            p85_held: judge(trend.p85),
        });
    }
    if forecasts.is_empty() {
        return None;
    }
    Some(BacktestGoal {
        goal_id: goal.goal_id.clone(),
        outcome: closure.outcome,
        reached_on,
        closed_on,
        closed_event: EventRef::at(closure.version),
        forecasts,
    })
}

/// The goal's target and due date as they stood at `t` (later adjustments undone).
fn aim_at(goal: &Goal, t: Timestamp) -> Option<Aim> {
    let kpi = goal.kpi.as_ref()?;
    let mut aim = Aim {
        target: kpi.target,
        direction: kpi.direction,
        due: goal.due,
    };
    for adjustment in goal.adjustments.iter().rev().filter(|a| a.at > t) {
        if let Some(change) = &adjustment.target {
            aim.target = change.before;
        }
        if let Some(change) = &adjustment.due {
            aim.due = change.before;
        }
    }
    Some(aim)
}
