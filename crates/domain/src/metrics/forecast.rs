//! Completion forecast of an open KPI goal: when its trend reaches the target (P50, P85) and how
//! likely it is to do so by the due date, from the goal's check-in history.
//!
//! Method (docs/metrics.md, "Completion forecast"): the KPI values of the last `window`
//! effective days with a value (one value per day: the latest told about that day), a
//! least-squares line `v(t) = a + b*t` over them (t in days), and the residual standard error
//! `s = sqrt(sum(r^2) / (n - 2))`. The value predicted for day t is normally distributed around
//! the line with the prediction standard error
//! `se(t) = s * sqrt(1 + 1/n + (t - mean_t)^2 / Sxx)`.

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::EventRef;
use crate::calendar;
use crate::id::GoalId;
use crate::plan::{CheckIn, Direction, Plan};

/// How many of the latest check-in days a forecast uses, by default.
pub const FORECAST_WINDOW: usize = 6;
/// Fewer check-in days than this give "not enough data".
pub const FORECAST_MIN_POINTS: usize = 3;
/// How far past today a forecast date may lie, in days; a trend that needs longer never
/// reaches the target as far as a forecast is concerned.
pub const FORECAST_HORIZON_DAYS: i64 = 3660;

/// The answer of [`completion_forecast`]. Each answer names the `CheckInRecorded` events whose
/// values form its series (`events`, oldest first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CompletionForecast {
    /// Fewer than the minimum number of check-in days with a value.
    NotEnoughData {
        /// Check-in days with a value.
        points: usize,
        /// The minimum.
        needed: usize,
        /// The check-ins those days' values come from.
        events: Vec<EventRef>,
    },
    /// The latest value already meets the target.
    Reached {
        /// The day it was first told to meet it (among the points used).
        on: Date,
        /// The check-ins of the points used.
        events: Vec<EventRef>,
    },
    /// A trend forecast.
    Trend(TrendForecast),
}

/// A forecast from the trend of the latest check-ins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrendForecast {
    /// Check-in days used.
    pub points: usize,
    /// First effective day used.
    pub from: Date,
    /// Last effective day used.
    pub to: Date,
    /// Trend in KPI units per day.
    pub slope_per_day: f64,
    /// Residual standard error of the fit, in KPI units.
    pub residual_std: f64,
    /// The day the trend line reaches the target; `None` when it moves away from it (or is
    /// flat) or needs more than the forecast horizon.
    pub p50: Option<Date>,
    /// The first day from which the target is reached with probability at least 0.85;
    /// `None` when that does not happen within the horizon.
    pub p85: Option<Date>,
    /// Probability that the value on the due date meets the target.
    pub probability_by_due: f64,
    /// Due date used.
    pub due: Date,
    /// The check-ins whose values the line was fitted to, oldest first.
    pub events: Vec<EventRef>,
}

/// Completion forecast of `goal` as of `now` (the check-ins effective by then), with the
/// latest `window` check-in days and at least `min_points`. `None` for a goal without a KPI or
/// a closed goal.
pub fn completion_forecast(
    plan: &Plan,
    goal_id: &GoalId,
    now: Timestamp,
    window: usize,
    min_points: usize,
) -> Option<CompletionForecast> {
    let goal = plan.goals.get(goal_id)?;
    let kpi = goal.kpi.as_ref()?;
    if !goal.is_open() {
        return None;
    }
    let aim = Aim {
        target: kpi.target,
        direction: kpi.direction,
        due: goal.due,
    };
    Some(forecast(
        goal.check_ins.iter(),
        aim,
        calendar::utc_date(now),
        window,
        min_points,
    ))
}

/// What a forecast aims at: the KPI's target and direction, and the due date.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Aim {
    pub target: f64,
    pub direction: Direction,
    pub due: Date,
}

impl Aim {
    /// Whether `value` meets the target in the KPI's direction.
    pub(crate) fn met_by(&self, value: f64) -> bool {
        match self.direction {
            Direction::Increase => value >= self.target,
            Direction::Decrease => value <= self.target,
        }
    }
}

/// The forecast from `check_ins` (any order) as of `today`: the method of
/// [`completion_forecast`], over whichever check-ins the caller says were known.
pub(crate) fn forecast<'a>(
    check_ins: impl Iterator<Item = &'a CheckIn>,
    aim: Aim,
    today: Date,
    window: usize,
    min_points: usize,
) -> CompletionForecast {
    let points = series(check_ins, today, window);
    let events: Vec<EventRef> = points
        .iter()
        .filter_map(|p| EventRef::at(p.version))
        .collect();
    let needed = min_points.max(3);
    if points.len() < needed {
        return CompletionForecast::NotEnoughData {
            points: points.len(),
            needed,
            events,
        };
    }
    if let Some(last) = points.last()
        && aim.met_by(last.value)
    {
        let first = points
            .iter()
            .rev()
            .take_while(|p| aim.met_by(p.value))
            .last()
            .map_or(last.day, |p| p.day);
        return CompletionForecast::Reached { on: first, events };
    }
    let from = points[0].day;
    let to = points[points.len() - 1].day;
    let xs: Vec<f64> = points
        .iter()
        .map(|p| calendar::days_between(from, p.day) as f64)
        .collect();
    let ys: Vec<f64> = points.iter().map(|p| p.value).collect();
    let fit = Fit::of(&xs, &ys);
    // Signed distance past the target in the KPI's direction: >= 0 means met.
    let sign = match aim.direction {
        Direction::Increase => 1.0,
        Direction::Decrease => -1.0,
    };
    let probability_at = |t: f64| -> f64 {
        let margin = sign * (fit.at(t) - aim.target);
        let se = fit.prediction_se(t);
        if se > 0.0 {
            normal_cdf(margin / se)
        } else if margin >= 0.0 {
            1.0
        } else {
            0.0
        }
    };
    let day_of = |t: i64| calendar::add_days(from, t);
    let start = calendar::days_between(from, today).max(calendar::days_between(from, to));
    let end = start + FORECAST_HORIZON_DAYS;
    let first_day = |reached: &dyn Fn(f64) -> bool| -> Option<Date> {
        (start..=end).find(|t| reached(*t as f64)).map(day_of)
    };
    let p50 = (sign * fit.slope > 0.0)
        .then(|| first_day(&|t| sign * (fit.at(t) - aim.target) >= 0.0))
        .flatten();
    let p85 = first_day(&|t| probability_at(t) >= 0.85);
    let due_t = calendar::days_between(from, aim.due) as f64;
    CompletionForecast::Trend(TrendForecast {
        points: points.len(),
        from,
        to,
        slope_per_day: fit.slope,
        residual_std: fit.residual_std,
        p50,
        p85,
        probability_by_due: probability_at(due_t),
        due: aim.due,
        events,
    })
}

/// One point of a forecast's series.
#[derive(Clone, Copy, Debug)]
struct Point {
    day: Date,
    value: f64,
    /// Stream version of the check-in the value comes from.
    version: u64,
}

/// The latest value told about each effective day, effective by `today`, the last `window`
/// days, oldest first.
fn series<'a>(
    check_ins: impl Iterator<Item = &'a CheckIn>,
    today: Date,
    window: usize,
) -> Vec<Point> {
    let mut ordered: Vec<&CheckIn> = check_ins.collect();
    ordered.sort_by(|a, b| {
        a.effective_on
            .cmp(&b.effective_on)
            .then(a.recorded_at.cmp(&b.recorded_at))
    });
    let mut points: Vec<Point> = Vec::new();
    for check_in in ordered {
        let Some(value) = check_in.value.filter(|v| v.is_finite()) else {
            continue;
        };
        if check_in.effective_on > today {
            continue;
        }
        let point = Point {
            day: check_in.effective_on,
            value,
            version: check_in.version,
        };
        match points.last_mut() {
            Some(last) if last.day == check_in.effective_on => *last = point,
            _ => points.push(point),
        }
    }
    let skip = points.len().saturating_sub(window.max(1));
    points.split_off(skip)
}

/// A least-squares line with what its prediction interval needs.
#[derive(Clone, Copy, Debug)]
struct Fit {
    intercept: f64,
    slope: f64,
    n: f64,
    mean_x: f64,
    sxx: f64,
    residual_std: f64,
}

impl Fit {
    fn of(xs: &[f64], ys: &[f64]) -> Self {
        let n = xs.len() as f64;
        let mean_x = xs.iter().sum::<f64>() / n;
        let mean_y = ys.iter().sum::<f64>() / n;
        let sxx: f64 = xs.iter().map(|x| (x - mean_x) * (x - mean_x)).sum();
        let sxy: f64 = xs
            .iter()
            .zip(ys)
            .map(|(x, y)| (x - mean_x) * (y - mean_y))
            .sum();
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        let intercept = mean_y - slope * mean_x;
        let sse: f64 = xs
            .iter()
            .zip(ys)
            .map(|(x, y)| {
                let r = y - (intercept + slope * x);
                r * r
            })
            .sum();
        let residual_std = if n > 2.0 {
            (sse / (n - 2.0)).sqrt()
        } else {
            0.0
        };
        Self {
            intercept,
            slope,
            n,
            mean_x,
            sxx,
            residual_std,
        }
    }

    fn at(&self, x: f64) -> f64 {
        self.intercept + self.slope * x
    }

    fn prediction_se(&self, x: f64) -> f64 {
        let spread = if self.sxx > 0.0 {
            (x - self.mean_x) * (x - self.mean_x) / self.sxx
        } else {
            0.0
        };
        self.residual_std * (1.0 + 1.0 / self.n + spread).sqrt()
    }
}

/// The standard normal distribution function, from `erf` (Abramowitz and Stegun 7.1.26,
/// absolute error below 1.5e-7).
pub fn normal_cdf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    let erf = if x >= 0.0 { erf } else { -erf };
    0.5 * (1.0 + erf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_cdf_matches_table_values() {
        for (z, p) in [
            (0.0, 0.5),
            (1.0, 0.841_344_746),
            (-1.959_963_985, 0.025),
            (1.036_433_389_493_79, 0.85),
            (3.0, 0.998_650_102),
        ] {
            assert!(
                (normal_cdf(z) - p).abs() < 2e-7,
                "Phi({z}) = {}",
                normal_cdf(z)
            );
        }
    }
}
