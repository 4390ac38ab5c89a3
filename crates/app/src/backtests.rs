//! The forecast back-test's rows of closed goals, kept between progress reads.
//!
//! A plan's back-test (docs/metrics.md, "Forecast back-test") replays a forecast at every
//! check-in of every closed KPI goal: on a plan of 200 goals and 20,000 check-ins that was
//! nine tenths of a progress read (docs/performance.md, "Progress reads"). A closed goal takes
//! no more check-ins or adjustments (`decide` refuses them), so its row never changes once it
//! is computed. Rows are kept per plan stream and goal, beside the goal they were computed
//! from, and used only for a goal equal to it: whatever the plan came from (the read model,
//! the log as of a time, a model rebuilt with a quarantine), the answer is the one
//! `forecast_backtest` computes. A goal closed after `now` has no row, as there.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use jiff::Timestamp;
use planledger_domain::metrics::{
    BacktestGoal, FORECAST_MIN_POINTS, FORECAST_WINDOW, ForecastBacktest, backtest_goal,
};
use planledger_domain::plan::Goal;
use planledger_domain::{GoalId, Plan};

/// Check-ins of the goals kept, at most: about 50 MB of goals and rows.
pub(crate) const MAX_KEPT_CHECK_INS: usize = 200_000;

/// Back-test rows of closed goals, by plan stream and goal (a bounded, first-in first-out
/// memo shared by the read paths of one process).
#[derive(Debug, Default)]
pub(crate) struct BacktestRows {
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    rows: HashMap<(String, GoalId), Row>,
    order: VecDeque<(String, GoalId)>,
    check_ins: usize,
}

/// One closed goal as its row was computed from, and the row (`None`: dropped, no KPI, or no
/// trend forecast to judge).
#[derive(Debug)]
struct Row {
    goal: Goal,
    row: Option<BacktestGoal>,
}

impl BacktestRows {
    /// The back-test of `plan` (the stream `stream`) as of `now`: equal to
    /// `forecast_backtest(plan, now, FORECAST_WINDOW, FORECAST_MIN_POINTS)`, computing only the
    /// rows of goals closed since they were last asked for.
    pub(crate) fn backtest(&self, stream: &str, plan: &Plan, now: Timestamp) -> ForecastBacktest {
        let rows = plan
            .goals
            .values()
            .filter(|g| g.closed.as_ref().is_some_and(|c| c.at <= now))
            .filter_map(|goal| self.row(stream, goal, now))
            .collect();
        ForecastBacktest::of(rows)
    }

    fn row(&self, stream: &str, goal: &Goal, now: Timestamp) -> Option<BacktestGoal> {
        let key = (stream.to_owned(), goal.goal_id.clone());
        if let Some(kept) = self.lock().rows.get(&key).filter(|r| r.goal == *goal) {
            return kept.row.clone();
        }
        let row = backtest_goal(goal, now, FORECAST_WINDOW, FORECAST_MIN_POINTS);
        self.keep(key, goal, row.clone());
        row
    }

    fn keep(&self, key: (String, GoalId), goal: &Goal, row: Option<BacktestGoal>) {
        let size = goal.check_ins.len().max(1);
        if size > MAX_KEPT_CHECK_INS {
            return;
        }
        let mut kept = self.lock();
        if let Some(old) = kept.rows.remove(&key) {
            kept.check_ins -= old.goal.check_ins.len().max(1);
            kept.order.retain(|k| *k != key);
        }
        while kept.check_ins + size > MAX_KEPT_CHECK_INS {
            let Some(oldest) = kept.order.pop_front() else {
                break;
            };
            if let Some(old) = kept.rows.remove(&oldest) {
                kept.check_ins -= old.goal.check_ins.len().max(1);
            }
        }
        kept.check_ins += size;
        kept.order.push_back(key.clone());
        kept.rows.insert(
            key,
            Row {
                goal: goal.clone(),
                row,
            },
        );
        assert_eq!(kept.rows.len(), kept.order.len(), "one order entry per row");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        // A panic while the memo was held leaves whole entries only (each change is one
        // insert or remove): what is kept is still right.
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::{Date, date};
    use planledger_domain::event::{CheckInRecorded, GoalClosed, GoalDefined, PlanCreated};
    use planledger_domain::metrics::forecast_backtest;
    use planledger_domain::plan::{Direction, Kpi, Outcome, TrackStatus};
    use planledger_domain::{Event, evolve};

    fn day(n: i64) -> Date {
        date(2026, 1, 1)
            .checked_add(jiff::Span::new().days(n))
            .expect("in range")
    }

    /// 09:00 UTC on `day(n)` (2026-01-01 is 1,767,225,600 s after the epoch).
    fn at(n: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + n * 86_400 + 9 * 3_600).expect("in range")
    }

    fn goal(id: &str) -> GoalId {
        GoalId::new(id).expect("a valid id")
    }

    /// A plan with KPI goals `a` and `b` (0 -> 100), each checked in on weekly days with
    /// `step` more each time.
    fn plan(step: f64) -> Plan {
        let mut events = vec![Event::PlanCreated(PlanCreated {
            plan_id: None,
            title: "p".into(),
            outcome: None,
            starts_on: day(0),
            ends_on: day(300),
            checkin_cadence_days: 7,
            checkin_grace_days: 2,
            at: at(0),
        })];
        for id in ["a", "b"] {
            events.push(Event::GoalDefined(GoalDefined {
                goal_id: goal(id),
                title: id.into(),
                parent_goal_id: None,
                aligns_to: None,
                kpi: Some(Kpi {
                    unit: "u".into(),
                    baseline: 0.0,
                    target: 100.0,
                    direction: Direction::Increase,
                }),
                due: day(200),
                weight: 1.0,
                at: at(0),
            }));
        }
        for week in 0..8 {
            for id in ["a", "b"] {
                events.push(Event::CheckInRecorded(CheckInRecorded {
                    checkin_id: format!("{id}{week}"),
                    goal_id: goal(id),
                    value: Some(step * week as f64 + if week % 2 == 0 { 1.0 } else { -1.0 }),
                    confidence: 0.5,
                    status: Some(TrackStatus::OnTrack),
                    effective_on: day(7 * week),
                    note: None,
                    blockers: Vec::new(),
                    at: at(7 * week),
                }));
            }
        }
        Plan::replay(&events)
    }

    fn close(plan: Plan, id: &str, outcome: Outcome, on: i64) -> Plan {
        evolve(
            plan,
            &Event::GoalClosed(GoalClosed {
                goal_id: goal(id),
                outcome,
                note: None,
                at: at(on),
            }),
        )
    }

    fn fresh(plan: &Plan, now: Timestamp) -> ForecastBacktest {
        forecast_backtest(plan, now, FORECAST_WINDOW, FORECAST_MIN_POINTS)
    }

    #[test]
    fn kept_rows_give_the_back_test_computed_afresh() {
        let rows = BacktestRows::default();
        let now = at(100);
        let open = plan(10.0);
        assert_eq!(rows.backtest("t/p", &open, now), fresh(&open, now));
        assert_eq!(rows.lock().rows.len(), 0, "open goals have no row to keep");

        let one = close(open, "a", Outcome::Missed, 60);
        let first = rows.backtest("t/p", &one, now);
        assert!(!first.goals.is_empty(), "{first:?}");
        assert_eq!(first, fresh(&one, now));
        assert_eq!(rows.backtest("t/p", &one, now), first, "kept");
        assert_eq!(rows.lock().rows.len(), 1);

        let both = close(one.clone(), "b", Outcome::Missed, 70);
        assert_eq!(rows.backtest("t/p", &both, now), fresh(&both, now));
        assert_eq!(rows.lock().rows.len(), 2);
        // As of before b closed, b has no row: the same as computed afresh.
        let then = at(65);
        assert_eq!(rows.backtest("t/p", &both, then), fresh(&both, then));
        assert_eq!(rows.backtest("t/p", &one, then), fresh(&one, then));
    }

    #[test]
    fn a_goal_that_differs_from_the_kept_one_is_computed_again() {
        let rows = BacktestRows::default();
        let now = at(100);
        let slow = close(plan(10.0), "a", Outcome::Missed, 60);
        let fast = close(plan(14.0), "a", Outcome::Achieved, 60);
        let kept = rows.backtest("t/p", &slow, now);
        assert_eq!(kept, fresh(&slow, now));
        // Same stream and goal id, other history (a read model rebuilt with a quarantine).
        let again = rows.backtest("t/p", &fast, now);
        assert_eq!(again, fresh(&fast, now));
        assert_ne!(again, kept);
        assert_eq!(rows.lock().rows.len(), 1, "the row replaced");
        // Another stream with an equal goal shares nothing but the answer.
        assert_eq!(rows.backtest("t/q", &fast, now), again);
        assert_eq!(rows.lock().rows.len(), 2);
    }
}
