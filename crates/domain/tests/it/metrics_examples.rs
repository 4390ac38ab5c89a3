//! The worked examples of docs/metrics.md, with the same numbers.

use crate::support::{self, Scenario, day, ts};
use planledger_domain::metrics::{self, RollUp, StatusMismatch};
use planledger_domain::plan::TrackStatus;
use planledger_domain::{GoalId, StepId, as_of};
use serde_json::json;

fn close(actual: Option<f64>, expected: f64) {
    let actual = actual.unwrap_or_else(|| panic!("expected {expected}, got None"));
    assert!(
        (actual - expected).abs() < 1e-9,
        "expected {expected}, got {actual}"
    );
}

fn gid(id: &str) -> GoalId {
    GoalId::new(id).expect("valid id")
}

/// docs/metrics.md, example 1: a KPI goal whose target was lowered after a baseline.
fn example_1() -> Scenario {
    Scenario::year_2026()
        .kpi_goal("2026-01-01", "customers", 20.0, 120.0, "2026-04-11")
        .baseline("2026-01-01", "q1")
        .with(
            "2026-03-01",
            json!({"type": "RecordCheckIn", "data": {"goal_id": "customers", "value": 70, "confidence": 0.8, "status": "on_track"}}),
        )
        .with(
            "2026-03-02",
            json!({"type": "AdjustGoal", "data": {"goal_id": "customers", "target": 100, "reason": "smaller market"}}),
        )
}

#[test]
fn example_1_goal_progress_against_current_and_baseline_target() {
    let report = metrics::progress_report(
        &example_1().plan,
        ts("2026-03-22T12:00:00Z"),
        RollUp::Weighted,
    );
    let goal = &report.goals[0];
    close(goal.progress, 0.625);
    close(goal.progress_vs_baseline, 0.5);
    close(goal.goalpost_effect, 0.125);
    close(Some(goal.expected_progress), 0.8);
    assert_eq!(goal.status, Some(TrackStatus::AtRisk));
    assert_eq!(goal.reported_status, Some(TrackStatus::OnTrack));
    assert_eq!(goal.status_mismatch, Some(StatusMismatch::Optimistic));
    close(goal.spi, 0.78125);
    close(goal.earned_schedule_days, 62.5);
    close(goal.spi_t, 0.78125);
    close(goal.schedule_slip_days, 17.5);
}

#[test]
fn example_1_plan_figures_equal_the_single_goal() {
    let report = metrics::progress_report(
        &example_1().plan,
        ts("2026-03-22T12:00:00Z"),
        RollUp::Weighted,
    );
    close(report.progress, 0.625);
    close(report.progress_vs_baseline, 0.5);
    close(report.goalpost_effect, 0.125);
    close(report.expected_progress, 0.8);
    assert_eq!(report.status, Some(TrackStatus::AtRisk));
    close(Some(report.pv), 0.8);
    close(Some(report.ev), 0.625);
    close(report.spi, 0.78125);
    close(report.earned_schedule_days, 62.5);
    assert_eq!(report.actual_time_days, 80);
    close(report.spi_t, 0.78125);
    close(report.schedule_slip_days, 17.5);
    assert_eq!(report.baseline_label.as_deref(), Some("q1"));
}

/// docs/metrics.md, example 2: two goals, weighted and equal roll-up.
fn example_2() -> Scenario {
    let mut s = Scenario::year_2026()
        .with(
            "2026-01-01",
            json!({"type": "DefineGoal", "data": {"goal_id": "a", "title": "Ship", "due": "2026-04-11", "weight": 3}}),
        )
        .with(
            "2026-01-01",
            json!({"type": "DefineGoal", "data": {"goal_id": "b", "title": "Revenue", "due": "2026-07-20",
                "kpi": {"unit": "kEUR", "baseline": 0, "target": 10, "direction": "increase"}}}),
        );
    for (step, due) in [
        ("a1", "2026-01-31"),
        ("a2", "2026-02-15"),
        ("a3", "2026-02-28"),
        ("a4", "2026-04-11"),
    ] {
        s = s.step("2026-01-01", step, "a", due);
    }
    s.complete("2026-01-30", "a1")
        .complete("2026-02-14", "a2")
        .complete("2026-02-27", "a3")
        .value("2026-03-01", "b", 2.0, 0.5)
}

#[test]
fn example_2_weighted_roll_up() {
    let report = metrics::progress_report(&example_2().plan, ts("2026-03-02"), RollUp::Weighted);
    close(report.goals[0].progress, 0.75);
    close(report.goals[1].progress, 0.2);
    close(Some(report.ev), 2.45);
    close(Some(report.pv), 2.1);
    close(report.spi, 2.45 / 2.1);
    close(report.progress, 0.6125);
    close(report.expected_progress, 0.525);
    close(report.earned_schedule_days, 70.0);
    assert_eq!(report.actual_time_days, 60);
    close(report.spi_t, 70.0 / 60.0);
    close(report.schedule_slip_days, -10.0);
}

#[test]
fn example_2_equal_roll_up_settles_the_rule_dispute_from_the_same_events() {
    let report = metrics::progress_report(&example_2().plan, ts("2026-03-02"), RollUp::Equal);
    close(Some(report.ev), 0.95);
    close(Some(report.pv), 0.9);
    close(report.spi, 0.95 / 0.9);
    close(report.progress, 0.475);
    close(report.expected_progress, 0.45);
    close(report.earned_schedule_days, 0.95 / 0.015);
    close(report.schedule_slip_days, 60.0 - 0.95 / 0.015);
}

/// docs/metrics.md, example 3: punctuality with a 7-day cadence and 2 days of grace.
fn example_3() -> Scenario {
    Scenario::year_2026()
        .plain_goal("2026-01-01", "g", "2026-06-30")
        .status("2026-01-05", "g", "on_track", 0.8)
        .status("2026-01-16", "g", "on_track", 0.8)
        .status("2026-01-24", "g", "on_track", 0.8)
}

#[test]
fn example_3_punctuality_with_grace_and_staleness() {
    let report = metrics::accountability_report(&example_3().plan, ts("2026-01-31"));
    assert_eq!(report.slots_due, 4);
    assert_eq!(report.slots_on_time, 3);
    close(report.punctuality, 0.75);
    close(report.staleness_days, 7.0);
}

/// docs/metrics.md, example 4: say/do, overdue steps, ownership, blockers, Brier score.
fn example_4() -> Scenario {
    Scenario::year_2026()
        .plain_goal("2026-01-01", "g1", "2026-06-30")
        .plain_goal("2026-01-01", "g2", "2026-06-30")
        .plain_goal("2026-01-01", "g3", "2026-06-30")
        .plain_goal("2026-01-01", "x", "2026-06-30")
        .plain_goal("2026-01-01", "y", "2026-06-30")
        .plain_goal("2026-01-01", "z", "2026-06-30")
        .role("2026-01-01", "alice", "accountable", "g1")
        .role("2026-01-01", "bob", "accountable", "g3")
        .step("2026-01-01", "s1", "g1", "2026-01-10")
        .step("2026-01-01", "s2", "g1", "2026-01-20")
        .step("2026-01-01", "s3", "g1", "2026-01-25")
        .step("2026-01-01", "s4", "g1", "2026-02-10")
        .complete("2026-01-09", "s1")
        .complete("2026-01-22", "s2")
        .with(
            "2026-01-20",
            json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "confidence": 0.6, "blockers": ["budget"]}}),
        )
        .with(
            "2026-01-27",
            json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "confidence": 0.5, "blockers": ["legal review", "hiring"]}}),
        )
        .status("2026-01-10", "x", "on_track", 0.8)
        .status("2026-01-10", "y", "at_risk", 0.3)
        .status("2026-01-10", "z", "at_risk", 0.1)
        .with("2026-01-15", json!({"type": "CloseGoal", "data": {"goal_id": "x", "outcome": "achieved"}}))
        .with("2026-01-15", json!({"type": "CloseGoal", "data": {"goal_id": "y", "outcome": "missed"}}))
        .with("2026-01-15", json!({"type": "CloseGoal", "data": {"goal_id": "z", "outcome": "dropped"}}))
}

#[test]
fn example_4_say_do_ratio_counts_steps_done_by_their_due_date() {
    let report = metrics::accountability_report(&example_4().plan, ts("2026-01-31"));
    assert_eq!(report.steps_due, 3);
    assert_eq!(report.steps_done_on_time, 1);
    close(report.say_do_ratio, 1.0 / 3.0);
}

#[test]
fn example_4_overdue_steps_list_open_steps_past_due() {
    let report = metrics::accountability_report(&example_4().plan, ts("2026-01-31"));
    assert_eq!(report.overdue_steps, 1);
    assert_eq!(report.overdue[0].step_id, StepId::new("s3").expect("id"));
    assert_eq!(report.overdue[0].days_overdue, 6);
}

#[test]
fn example_4_ownership_coverage_counts_open_goals_with_one_accountable() {
    let report = metrics::accountability_report(&example_4().plan, ts("2026-01-31"));
    close(report.ownership_coverage, 2.0 / 3.0);
    assert_eq!(report.goals_without_accountable, vec![gid("g2")]);
}

#[test]
fn example_4_open_blockers_come_from_the_latest_check_in_only() {
    let report = metrics::accountability_report(&example_4().plan, ts("2026-01-31"));
    assert_eq!(report.open_blockers, 2);
    let named: Vec<&str> = report.blockers.iter().map(|b| b.blocker.as_str()).collect();
    assert_eq!(named, vec!["legal review", "hiring"]);
}

#[test]
fn example_4_brier_score_scores_confidence_against_outcomes() {
    let report = metrics::accountability_report(&example_4().plan, ts("2026-01-31"));
    assert_eq!(report.brier_goals, 2);
    close(report.brier_score, 0.065);
}

#[test]
fn example_4_person_figures_cover_what_they_own() {
    let report = metrics::accountability_report(&example_4().plan, ts("2026-01-31"));
    let alice = report
        .people
        .iter()
        .find(|p| p.person.as_str() == "alice")
        .expect("alice holds a role");
    assert_eq!(alice.goals_owned, vec![gid("g1")]);
    close(alice.say_do_ratio, 1.0 / 3.0);
    assert_eq!(alice.overdue_steps, 1);
    assert_eq!(alice.open_blockers, 2);
    close(alice.ownership_coverage, 1.0);
    assert_eq!(alice.brier_score, None);
}

/// docs/metrics.md, example 10: three goals handed from alice to bob on 2026-01-20 12:00.
fn example_10() -> Scenario {
    let handover = "2026-01-20T12:00:00Z";
    Scenario::year_2026()
        .plain_goal("2026-01-01", "g", "2026-06-30")
        .plain_goal("2026-01-01", "h", "2026-06-30")
        .plain_goal("2026-01-01", "k", "2026-06-30")
        .role("2026-01-01", "alice", "accountable", "g")
        .role("2026-01-01", "alice", "accountable", "h")
        .role("2026-01-01", "alice", "accountable", "k")
        .step("2026-01-01", "s1", "g", "2026-01-15")
        .step("2026-01-01", "s2", "g", "2026-01-25")
        .step("2026-01-01", "s3", "g", "2026-01-28")
        .status("2026-01-05", "g", "on_track", 0.7)
        .status("2026-01-06", "h", "on_track", 0.9)
        .status("2026-01-06", "k", "on_track", 0.8)
        .complete("2026-01-14", "s1")
        .status("2026-01-16", "g", "on_track", 0.6)
        .handover(handover, "alice", "bob", "g")
        .handover(handover, "alice", "bob", "h")
        .handover(handover, "alice", "bob", "k")
        .status("2026-01-21", "k", "off_track", 0.3)
        .close("2026-01-22", "h", "achieved")
        .close("2026-01-22", "k", "missed")
        .with(
            "2026-01-24",
            json!({"type": "RecordCheckIn", "data": {"goal_id": "g", "confidence": 0.5, "blockers": ["vendor"]}}),
        )
        .complete("2026-01-27", "s2")
}

fn person<'a>(
    report: &'a metrics::AccountabilityReport,
    name: &str,
) -> &'a metrics::PersonAccountability {
    report
        .people
        .iter()
        .find(|p| p.person.as_str() == name)
        .unwrap_or_else(|| panic!("{name} has a row"))
}

#[test]
fn example_10_punctuality_is_split_at_the_handover() {
    let report = metrics::accountability_report(&example_10().plan, ts("2026-01-31"));
    let slots = |goal: &str| {
        let row = report
            .goals
            .iter()
            .find(|g| g.goal_id == gid(goal))
            .expect("goal row");
        (row.slots_due, row.slots_on_time)
    };
    assert_eq!(
        [slots("g"), slots("h"), slots("k")],
        [(4, 3), (3, 1), (3, 2)]
    );
    assert_eq!((report.slots_due, report.slots_on_time), (10, 6));
    let alice = person(&report, "alice");
    assert_eq!((alice.slots_due, alice.slots_on_time), (6, 4));
    close(alice.punctuality, 4.0 / 6.0);
    let bob = person(&report, "bob");
    assert_eq!((bob.slots_due, bob.slots_on_time), (4, 2));
    close(bob.punctuality, 0.5);
}

#[test]
fn example_10_say_do_and_overdue_steps_go_to_the_holder_when_each_step_fell_due() {
    let report = metrics::accountability_report(&example_10().plan, ts("2026-01-31"));
    assert_eq!((report.steps_due, report.steps_done_on_time), (3, 1));
    let alice = person(&report, "alice");
    assert_eq!((alice.steps_due, alice.steps_done_on_time), (1, 1));
    close(alice.say_do_ratio, 1.0);
    assert_eq!(alice.overdue_steps, 0);
    let bob = person(&report, "bob");
    assert_eq!((bob.steps_due, bob.steps_done_on_time), (2, 0));
    close(bob.say_do_ratio, 0.0);
    assert_eq!(bob.overdue_steps, 1);
}

#[test]
fn example_10_each_forecast_is_scored_against_whoever_reported_it() {
    let report = metrics::accountability_report(&example_10().plan, ts("2026-01-31"));
    close(report.brier_score, 0.05);
    let alice = person(&report, "alice");
    assert_eq!(alice.brier_goals, 1);
    close(alice.brier_score, 0.01);
    let bob = person(&report, "bob");
    assert_eq!(bob.brier_goals, 1);
    close(bob.brier_score, 0.09);
}

#[test]
fn example_10_current_figures_belong_to_the_current_holder() {
    let plan = example_10().plan;
    let report = metrics::accountability_report(&plan, ts("2026-01-31"));
    let names: Vec<&str> = report.people.iter().map(|p| p.person.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    let bob = person(&report, "bob");
    close(bob.staleness_days, 7.0);
    assert_eq!(bob.open_blockers, 1);
    close(bob.ownership_coverage, 1.0);
    assert_eq!(bob.goals_owned, vec![gid("g"), gid("h"), gid("k")]);
    let alice = person(&report, "alice");
    assert!(alice.roles.is_empty() && alice.goals_owned.is_empty());
    assert_eq!(alice.staleness_days, None);
    assert_eq!(alice.ownership_coverage, None);
    assert_eq!(alice.open_blockers, 0);
    // The single-person entry point answers the same as the report's row.
    let alone = metrics::person_accountability(
        &plan,
        &planledger_domain::PersonId::new("alice").expect("id"),
        ts("2026-01-31"),
    );
    assert_eq!(alone.as_ref(), Some(alice));
}

#[test]
fn example_10_as_of_before_the_handover_alice_holds_everything() {
    let scenario = example_10();
    let at = ts("2026-01-20T11:00:00Z");
    let plan = as_of(&scenario.events, at);
    let report = metrics::accountability_report(&plan, at);
    let names: Vec<&str> = report.people.iter().map(|p| p.person.as_str()).collect();
    assert_eq!(names, ["alice"]);
    let alice = person(&report, "alice");
    // Slots with deadlines 01-10 and 01-17 on g, h and k: g 2 of 2, h 1 of 2, k 1 of 2.
    assert_eq!((alice.slots_due, alice.slots_on_time), (6, 4));
    assert_eq!((alice.steps_due, alice.steps_done_on_time), (1, 1));
}

/// docs/metrics.md, example 11: completion forecasts from a linear and a noisy series.
fn example_11(values: [f64; 4], target: f64, due: &str) -> Scenario {
    let mut s = Scenario::year_2026().kpi_goal("2026-01-01", "g", 0.0, target, due);
    for (day, value) in ["2026-01-01", "2026-01-08", "2026-01-15", "2026-01-22"]
        .into_iter()
        .zip(values)
    {
        s = s.value(day, "g", value, 0.5);
    }
    s
}

fn forecast(s: &Scenario, now: &str) -> metrics::CompletionForecast {
    metrics::completion_forecast(
        &s.plan,
        &gid("g"),
        ts(now),
        metrics::FORECAST_WINDOW,
        metrics::FORECAST_MIN_POINTS,
    )
    .expect("an open KPI goal has a forecast")
}

fn trend(f: metrics::CompletionForecast) -> metrics::TrendForecast {
    match f {
        metrics::CompletionForecast::Trend(t) => t,
        other => panic!("expected a trend, got {other:?}"),
    }
}

#[test]
fn example_11_a_linear_series_has_no_spread() {
    let t = trend(forecast(
        &example_11([10.0, 17.0, 24.0, 31.0], 100.0, "2026-03-01"),
        "2026-01-22",
    ));
    assert_eq!(t.points, 4);
    close(Some(t.slope_per_day), 1.0);
    close(Some(t.residual_std), 0.0);
    assert_eq!(t.p50, Some(day("2026-04-01")));
    assert_eq!(t.p85, Some(day("2026-04-01")));
    close(Some(t.probability_by_due), 0.0);
    let later = trend(forecast(
        &example_11([10.0, 17.0, 24.0, 31.0], 100.0, "2026-04-30"),
        "2026-01-22",
    ));
    close(Some(later.probability_by_due), 1.0);
}

#[test]
fn example_11_a_noisy_series_gets_an_interval_from_its_residuals() {
    let t = trend(forecast(
        &example_11([10.0, 20.0, 22.0, 32.0], 50.0, "2026-02-20"),
        "2026-01-22",
    ));
    close(Some(t.slope_per_day), 34.0 / 35.0);
    close(Some(t.residual_std), 6.4f64.sqrt());
    assert_eq!(t.p50, Some(day("2026-02-11")));
    assert_eq!(t.p85, Some(day("2026-02-18")));
    let p = t.probability_by_due;
    assert!((p - 0.9102).abs() < 1e-4, "probability by due {p}");
}

#[test]
fn example_11_below_the_minimum_there_is_not_enough_data() {
    let s = Scenario::year_2026()
        .kpi_goal("2026-01-01", "g", 0.0, 100.0, "2026-03-01")
        .value("2026-01-01", "g", 10.0, 0.5)
        .value("2026-01-08", "g", 17.0, 0.5);
    assert_eq!(
        forecast(&s, "2026-01-22"),
        metrics::CompletionForecast::NotEnoughData {
            points: 2,
            needed: 3,
            events: refs(&[3, 4]),
        }
    );
    // Two reports about the same day count once.
    let s = s.value("2026-01-09", "g", 18.0, 0.5).with(
        "2026-01-10",
        json!({"type": "RecordCheckIn", "data": {"goal_id": "g", "value": 19.0, "confidence": 0.5, "effective_on": "2026-01-09"}}),
    );
    assert_eq!(trend(forecast(&s, "2026-01-22")).points, 3);
}

#[test]
fn example_11_a_trend_away_from_the_target_never_reaches_it() {
    let t = trend(forecast(
        &example_11([31.0, 24.0, 17.0, 10.0], 100.0, "2026-03-01"),
        "2026-01-22",
    ));
    assert_eq!((t.p50, t.p85), (None, None));
    close(Some(t.probability_by_due), 0.0);
}

#[test]
fn example_11_a_met_target_is_reached_not_forecast() {
    let s = example_11([10.0, 17.0, 24.0, 31.0], 20.0, "2026-03-01");
    assert_eq!(
        forecast(&s, "2026-01-22"),
        metrics::CompletionForecast::Reached {
            on: day("2026-01-15"),
            events: refs(&[3, 4, 5, 6]),
        }
    );
}

fn refs(versions: &[u64]) -> Vec<metrics::EventRef> {
    versions
        .iter()
        .filter_map(|v| metrics::EventRef::at(*v))
        .collect()
}

#[test]
fn example_11_a_forecast_names_the_check_ins_of_its_series() {
    // Versions: 1 PlanCreated, 2 GoalDefined, 3-6 the four check-ins.
    let t = trend(forecast(
        &example_11([10.0, 20.0, 22.0, 32.0], 50.0, "2026-02-20"),
        "2026-01-22",
    ));
    assert_eq!(t.events, refs(&[3, 4, 5, 6]));
}

#[test]
fn example_11_the_progress_report_carries_the_forecast_as_of_any_moment() {
    let s = example_11([10.0, 20.0, 22.0, 32.0], 50.0, "2026-02-20");
    let now = metrics::progress_report(&s.plan, ts("2026-01-22"), RollUp::Weighted);
    let row = &now.goals[0];
    assert_eq!(
        trend(row.forecast.clone().expect("an open KPI goal")).p85,
        Some(day("2026-02-18"))
    );
    // As of 01-15 12:00 the plan knew three check-ins: 10, 20, 22 on days 0, 7, 14.
    let then_at = ts("2026-01-15T12:00:00Z");
    let then = metrics::progress_report(&as_of(&s.events, then_at), then_at, RollUp::Weighted);
    let earlier = trend(then.goals[0].forecast.clone().expect("an open KPI goal"));
    assert_eq!(earlier.points, 3);
    close(Some(earlier.slope_per_day), 6.0 / 7.0);
    assert_eq!(earlier.events, refs(&[3, 4, 5]));
}

/// docs/metrics.md, example 12: the forecast back-tested over two closed goals.
fn example_12(raise_target: bool) -> Scenario {
    let mut s = Scenario::year_2026()
        .kpi_goal("2026-01-01", "g", 0.0, 40.0, "2026-03-01")
        .kpi_goal("2026-01-01", "m", 0.0, 100.0, "2026-02-28");
    for (at, g, m) in [
        ("2026-01-01", 10.0, 40.0),
        ("2026-01-08", 17.0, 47.0),
        ("2026-01-15", 24.0, 54.0),
    ] {
        s = s.value(at, "g", g, 0.5).value(at, "m", m, 0.5);
    }
    s = s
        .value("2026-01-22", "g", 28.0, 0.5)
        .value("2026-02-03", "g", 41.0, 0.9);
    if raise_target {
        s = s.with(
            "2026-02-04",
            json!({"type": "AdjustGoal", "data": {"goal_id": "g", "target": 60, "reason": "more"}}),
        );
    }
    s.close("2026-02-05", "g", "achieved")
        .close("2026-03-10", "m", "missed")
}

#[test]
fn example_12_back_test_reports_how_often_the_p85_date_held() {
    let s = example_12(false);
    let report = metrics::progress_report(&s.plan, ts("2026-03-20"), RollUp::Weighted);
    let bt = &report.forecast_backtest;
    let g = bt.goals.iter().find(|r| r.goal_id == gid("g")).expect("g");
    assert_eq!(g.reached_on, Some(day("2026-02-03")));
    let dates: Vec<_> = g
        .forecasts
        .iter()
        .map(|f| (f.p50, f.p85, f.p50_held, f.p85_held))
        .collect();
    assert_eq!(
        dates,
        [
            // 01-15: 10, 17, 24 on a line of 1/day, s = 0: 40 on day 30.
            (
                Some(day("2026-01-31")),
                Some(day("2026-01-31")),
                Some(false),
                Some(false)
            ),
            // 01-22: + 28; b = 0.8714, s = 1.1619: P50 day 34, P85 day 37.
            (
                Some(day("2026-02-04")),
                Some(day("2026-02-07")),
                Some(true),
                Some(true)
            ),
        ]
    );
    // Versions: 1 plan, 2 g, 3 m, 4-9 g and m on 01-01, 01-08, 01-15, 10-11 g on 01-22 and
    // 02-03, 12 g closed, 13 m closed.
    assert_eq!(
        g.forecasts.iter().map(|f| f.event).collect::<Vec<_>>(),
        [metrics::EventRef::at(8), metrics::EventRef::at(10)]
    );
    assert_eq!(g.closed_event, metrics::EventRef::at(12));
    let m = bt.goals.iter().find(|r| r.goal_id == gid("m")).expect("m");
    assert_eq!(m.reached_on, None);
    assert_eq!(m.closed_event, metrics::EventRef::at(13));
    assert_eq!(
        m.forecasts
            .iter()
            .map(|f| (f.p85, f.p85_held))
            .collect::<Vec<_>>(),
        [(Some(day("2026-03-02")), Some(false))]
    );
    assert_eq!((bt.forecasts, bt.p85_judged, bt.p85_held), (3, 3, 1));
    close(bt.p85_coverage, 1.0 / 3.0);
    assert_eq!((bt.p50_judged, bt.p50_held), (3, 1));
    // As of 02-04 nothing was closed yet.
    let before_at = ts("2026-02-04");
    let before =
        metrics::progress_report(&as_of(&s.events, before_at), before_at, RollUp::Weighted);
    assert_eq!(
        before.forecast_backtest,
        metrics::ForecastBacktest::default()
    );
}

#[test]
fn example_12_a_forecast_aims_at_the_target_of_its_moment() {
    // g's target is raised to 60 after its forecasts: they are judged as made, against 40,
    // but the day it was reached is read against the target at closing (60 never told: the
    // closing day).
    let s = example_12(true);
    let report = metrics::progress_report(&s.plan, ts("2026-03-20"), RollUp::Weighted);
    let g = report
        .forecast_backtest
        .goals
        .iter()
        .find(|r| r.goal_id == gid("g"))
        .expect("g");
    assert_eq!(g.reached_on, Some(day("2026-02-05")));
    assert_eq!(g.forecasts[0].p85, Some(day("2026-01-31")));
    assert_eq!(g.forecasts[1].p50, Some(day("2026-02-04")));
}

/// docs/metrics.md, example 5: adjustments, volatility and course-correction latency.
fn example_5() -> Scenario {
    Scenario::year_2026()
        .kpi_goal("2026-01-01", "g1", 0.0, 100.0, "2026-06-30")
        .plain_goal("2026-01-01", "g2", "2026-06-30")
        .step("2026-01-01", "s1", "g2", "2026-03-31")
        .step("2026-01-01", "s2", "g2", "2026-04-30")
        .baseline("2026-01-01", "b1")
        .status("2026-01-10", "g1", "off_track", 0.3)
        .with(
            "2026-01-15",
            json!({"type": "AdjustGoal", "data": {"goal_id": "g1", "target": 80, "due": "2026-07-31",
                "reason": "supplier lost", "in_response_to_checkin": "c1"}}),
        )
        .step("2026-01-20", "s3", "g2", "2026-05-31")
        .status("2026-02-01", "g2", "at_risk", 0.5)
        .status("2026-02-05", "g1", "at_risk", 0.5)
        .status("2026-02-25", "g1", "on_track", 0.7)
}

#[test]
fn example_5_adjustments_by_kind() {
    let report = metrics::agility_report(&example_5().plan, ts("2026-02-26"));
    assert_eq!(report.adjustments.target, 1);
    assert_eq!(report.adjustments.due, 1);
    assert_eq!(report.adjustments.scope, 1);
    assert_eq!(report.adjustments.weight, 0);
    assert_eq!(report.adjustments.total, 3);
    assert_eq!(report.adjustments_in_response_to_check_ins, 1);
}

#[test]
fn example_5_volatility_against_the_first_baseline() {
    let report = metrics::agility_report(&example_5().plan, ts("2026-02-26"));
    assert_eq!(report.baseline_size, 4);
    assert_eq!(
        (
            report.scope_added,
            report.scope_changed,
            report.scope_removed
        ),
        (1, 1, 0)
    );
    close(report.volatility, 0.5);
    close(report.volatility_per_week, 0.25);
}

#[test]
fn example_5_course_correction_latency_and_signals_never_acted_on() {
    let report = metrics::agility_report(&example_5().plan, ts("2026-02-26"));
    assert_eq!(report.signals, 3);
    close(report.course_correction_latency_days, 12.5);
    close(report.corrected_within_14_days, 1.0 / 3.0);
    assert_eq!(report.signals_never_acted_on, 1);
    assert_eq!(report.unanswered[0].goal_id, gid("g2"));
    close(Some(report.unanswered[0].days_open), 25.0);
    assert_eq!(report.re_baselines, 0);
}

/// docs/metrics.md, example 6: drift against a baseline.
fn example_6() -> Scenario {
    Scenario::year_2026()
        .kpi_goal("2026-01-01", "g1", 20.0, 120.0, "2026-05-01")
        .plain_goal("2026-01-01", "g2", "2026-06-30")
        .plain_goal("2026-01-01", "g4", "2026-06-30")
        .step("2026-01-01", "s4", "g4", "2026-03-31")
        .baseline("2026-01-01", "b1")
        .with(
            "2026-02-01",
            json!({"type": "AdjustGoal", "data": {"goal_id": "g1", "target": 100, "due": "2026-07-15", "reason": "late start"}}),
        )
        .plain_goal("2026-02-02", "g3", "2026-07-31")
        .step("2026-02-02", "s9", "g3", "2026-07-01")
        .with("2026-02-03", json!({"type": "CloseGoal", "data": {"goal_id": "g4", "outcome": "dropped"}}))
}

#[test]
fn example_6_deadline_slip_target_drift_and_scope() {
    let report =
        metrics::drift_report(&example_6().plan, "b1", ts("2026-02-10")).expect("baseline exists");
    let g1 = report
        .goals
        .iter()
        .find(|g| g.goal_id == gid("g1"))
        .expect("g1");
    assert_eq!(g1.deadline_slip_days, Some(75));
    close(g1.target_drift, -0.2);
    assert_eq!(g1.bar_lowered, Some(true));
    assert_eq!(report.deadline_slip_days, Some(15));
    close(report.target_drift, -0.2);
    assert_eq!(report.scope_added.goals, vec![gid("g3")]);
    assert_eq!(
        report.scope_added.steps,
        vec![StepId::new("s9").expect("id")]
    );
    assert_eq!(report.scope_removed.goals, vec![gid("g4")]);
    assert_eq!(
        report.scope_removed.steps,
        vec![StepId::new("s4").expect("id")]
    );
}

#[test]
fn example_6_names_the_events_behind_each_figure() {
    use metrics::{EventRef, ScopeChange};
    // Versions in the order the scenario writes them: 1 CreatePlan, 2-4 goals g1 g2 g4,
    // 5 step s4, 6 baseline b1, 7 the adjustment of g1, 8 g3, 9 s9, 10 g4 dropped.
    let at = |version| {
        Some(EventRef {
            version,
            position: None,
        })
    };
    let report =
        metrics::drift_report(&example_6().plan, "b1", ts("2026-02-10")).expect("baseline exists");
    assert_eq!(report.baseline_event, at(6));
    let goal = |id: &str| {
        report
            .goals
            .iter()
            .find(|g| g.goal_id == gid(id))
            .expect("goal row")
    };
    let g1 = goal("g1");
    assert_eq!(
        (
            g1.defined_event,
            g1.due_adjusted_event,
            g1.target_adjusted_event,
            g1.dropped_event
        ),
        (at(2), at(7), at(7), None)
    );
    let g2 = goal("g2");
    assert_eq!(
        (g2.due_adjusted_event, g2.target_adjusted_event),
        (None, None)
    );
    assert_eq!(goal("g4").dropped_event, at(10));
    let change = |goal: &str, step: Option<&str>, version| ScopeChange {
        goal_id: gid(goal),
        step_id: step.map(|s| StepId::new(s).expect("id")),
        event: at(version),
    };
    assert_eq!(
        report.scope_added_events,
        vec![change("g3", None, 8), change("g3", Some("s9"), 9)]
    );
    assert_eq!(
        report.scope_removed_events,
        vec![change("g4", None, 10), change("g4", Some("s4"), 10)]
    );
}

#[test]
fn adjustments_before_the_baseline_are_not_named_behind_its_drift() {
    let scenario = Scenario::year_2026()
        .kpi_goal("2026-01-01", "g1", 20.0, 120.0, "2026-05-01")
        .with(
            "2026-01-02",
            json!({"type": "AdjustGoal", "data": {"goal_id": "g1", "target": 130, "due": "2026-05-10", "reason": "early"}}),
        )
        .baseline("2026-01-03", "b1");
    let report =
        metrics::drift_report(&scenario.plan, "b1", ts("2026-02-10")).expect("baseline exists");
    let g1 = &report.goals[0];
    assert_eq!(g1.deadline_slip_days, Some(0));
    assert_eq!(
        (g1.due_adjusted_event, g1.target_adjusted_event),
        (None, None)
    );
    assert_eq!(report.baseline_event.map(|e| e.version), Some(4));
}

/// docs/metrics.md, example 7: the execution-gap series.
fn example_7() -> Scenario {
    let mut s = Scenario::year_2026().plain_goal("2026-01-01", "g", "2026-04-11");
    for step in ["s1", "s2", "s3", "s4"] {
        s = s.step("2026-01-01", step, "g", "2026-04-11");
    }
    s.baseline("2026-01-01", "b1").complete("2026-01-20", "s1")
}

#[test]
fn example_7_execution_gap_series() {
    let report =
        metrics::drift_report(&example_7().plan, "b1", ts("2026-02-20")).expect("baseline exists");
    let gap = &report.execution_gap;
    assert_eq!(gap.first().map(|p| p.date), Some(day("2026-01-01")));
    let feb19 = gap
        .iter()
        .find(|p| p.date == day("2026-02-19"))
        .expect("weekly point");
    close(feb19.planned, 0.49);
    close(feb19.actual, 0.25);
    close(feb19.gap, 0.24);
    let last = gap.last().expect("today's point");
    assert_eq!(last.date, day("2026-02-20"));
    close(last.planned, 0.5);
    close(last.actual, 0.25);
    close(last.gap, 0.25);
    let jan15 = gap
        .iter()
        .find(|p| p.date == day("2026-01-15"))
        .expect("weekly point");
    close(jan15.actual, 0.0);
}

/// docs/metrics.md, example 8: momentum fades from 1.5 to 0.5 events per goal-week.
fn example_8() -> Scenario {
    let mut s = Scenario::year_2026()
        .plain_goal("2026-01-01", "g1", "2026-12-31")
        .plain_goal("2026-01-01", "g2", "2026-12-31");
    for week in 0..4 {
        let monday = support::day("2026-01-01");
        let d = |offset: i64| {
            planledger_domain::calendar::add_days(monday, week * 7 + offset).to_string()
        };
        let step = format!("s{week}");
        s = s
            .step(&d(0), &step, "g1", "2026-12-31")
            .status(&d(1), "g1", "on_track", 0.8)
            .status(&d(2), "g2", "on_track", 0.8)
            .complete(&d(3), &step);
    }
    for week in 4..8 {
        let d = planledger_domain::calendar::add_days(support::day("2026-01-01"), week * 7 + 1)
            .to_string();
        s = s.status(&d, "g1", "on_track", 0.7);
    }
    s
}

#[test]
fn example_8_momentum_compares_last_four_weeks_with_first_four() {
    let m = metrics::momentum(&example_8().plan, ts("2026-02-26"));
    assert_eq!(m.weeks.len(), 8);
    close(m.first_four_weeks_rate, 1.5);
    close(m.last_four_weeks_rate, 0.5);
    close(m.momentum, 1.0 / 3.0);
    close(m.rate, 1.0);
}

#[test]
fn figures_as_of_a_past_time_come_from_the_events_up_to_then() {
    let scenario = example_1();
    let t = ts("2026-03-01T12:00:00Z");
    let then = as_of(&scenario.events, t);
    let report = metrics::progress_report(&then, t, RollUp::Weighted);
    // Before the target was lowered on 2026-03-02, progress was measured against 120.
    close(report.goals[0].progress, 0.5);
    close(report.goals[0].goalpost_effect, 0.0);
}

/// docs/metrics.md, example 9: example 1's goal day by day, the goalpost effect over time.
#[test]
fn example_9_progress_history_marks_check_ins_and_the_target_change() {
    let plan = example_1().plan;
    let history =
        metrics::progress_history(&plan, ts("2026-03-22T12:00:00Z"), plan.first_baseline());
    let goal = &history.goals[0];
    let days: Vec<String> = goal.points.iter().map(|p| p.date.to_string()).collect();
    assert_eq!(
        days,
        ["2026-01-01", "2026-03-01", "2026-03-02", "2026-03-22"]
    );
    let start = &goal.points[0];
    close(start.progress, 0.0);
    assert_eq!(start.expected_progress, 0.0);
    assert!(start.check_ins.is_empty());
    let checked = &goal.points[1];
    close(checked.progress, 0.625);
    close(checked.progress_vs_baseline, 0.5);
    close(Some(checked.expected_progress), 0.59);
    assert_eq!(checked.value, Some(70.0));
    assert_eq!(checked.check_ins.len(), 1);
    close(Some(goal.points[3].expected_progress), 0.8);
    assert_eq!(goal.target, Some(100.0));
    assert_eq!(goal.baseline_target, Some(120.0));
    let adjustment = &goal.adjustments[0];
    assert_eq!(adjustment.date, day("2026-03-02"));
    let target = adjustment.target.as_ref().expect("the target moved");
    assert_eq!((target.before, target.after), (120.0, 100.0));
    assert_eq!(adjustment.reason, "smaller market");
}

/// docs/metrics.md, example 13: a check-in back-dated over a status change, then g's target
/// lowered and a step added to h after the days it restated.
fn example_13() -> Scenario {
    Scenario::year_2026()
        .with(
            "2026-01-01",
            json!({"type": "DefineGoal", "data": {"goal_id": "root", "title": "Goal root",
                "due": "2026-04-11", "weight": 3}}),
        )
        .with(
            "2026-01-01",
            json!({"type": "DefineGoal", "data": {"goal_id": "g", "title": "Goal g",
                "parent_goal_id": "root", "due": "2026-04-11",
                "kpi": {"unit": "u", "baseline": 0, "target": 100, "direction": "increase"}}}),
        )
        .plain_goal("2026-01-01", "h", "2026-04-11")
        .step("2026-01-01", "s1", "h", "2026-04-11")
        .step("2026-01-01", "s2", "h", "2026-04-11")
        .complete("2026-01-10", "s1")
        .value("2026-01-21", "g", 20.0, 0.6)
        .value("2026-02-06", "g", 25.0, 0.5)
        .with(
            "2026-02-10",
            json!({"type": "RecordCheckIn", "data": {"goal_id": "g", "value": 30, "confidence": 0.7,
                "effective_on": "2026-02-01"}}),
        )
        .with(
            "2026-02-20",
            json!({"type": "AdjustGoal", "data": {"goal_id": "g", "target": 80,
                "reason": "smaller market"}}),
        )
        .step("2026-02-20", "s3", "h", "2026-04-11")
}

type Run<'a> = (
    &'a str,
    jiff::civil::Date,
    jiff::civil::Date,
    Option<f64>,
    Option<f64>,
    Option<TrackStatus>,
    Option<TrackStatus>,
);

fn runs(r: &metrics::Restatement) -> Vec<Run<'_>> {
    let goals = r.changes.iter().map(|c| {
        (
            c.goal_id.as_str(),
            c.from,
            c.to,
            c.progress_before,
            c.progress_after,
            c.status_before,
            c.status_after,
        )
    });
    let plan = r.plan_changes.iter().map(|c| {
        (
            "(plan)",
            c.from,
            c.to,
            c.progress_before,
            c.progress_after,
            c.status_before,
            c.status_after,
        )
    });
    goals.chain(plan).collect()
}

/// Rounds the progress figures of runs to 1e-9, so hand-computed decimals compare.
fn rounded(runs: Vec<Run<'_>>) -> Vec<Run<'_>> {
    let round = |p: Option<f64>| p.map(|p| (p * 1e9).round() / 1e9);
    runs.into_iter()
        .map(|(g, from, to, p0, p1, s0, s1)| (g, from, to, round(p0), round(p1), s0, s1))
        .collect()
}

#[test]
fn example_13_a_back_dated_check_in_restates_the_days_it_describes() {
    let s = example_13();
    let report = metrics::restatements(&s.plan, None, ts("2026-02-21"));
    assert_eq!(report.restatements.len(), 1);
    let r = &report.restatements[0];
    assert_eq!(r.effective_on, day("2026-02-01"));
    assert_eq!(r.days_late, 9);
    // Versions: 1 plan, 2 root, 3 g, 4 h, 5-6 its steps, 7 s1 done, 8-10 the check-ins.
    assert_eq!(r.event, metrics::EventRef::at(10));
    let (on, risk, off) = (
        Some(TrackStatus::OnTrack),
        Some(TrackStatus::AtRisk),
        Some(TrackStatus::OffTrack),
    );
    // With the definitions in force on those days (target 100, h with two steps), not today's
    // (target 80, three steps). 02-01: e = 31/100, g 0.2 / 0.31 = 0.65 -> 0.3 / 0.31 = 0.97;
    // 02-02..02-05: e up to 0.35, 0.3 / 0.35 = 0.86 at risk. From 02-06 the 25 told on that day
    // is the latest either way. The plan: (3 * p_root + 1 * 0.5) / 4 against e:
    // 0.275 / 0.31 = 0.89 .. 0.275 / 0.35 = 0.79 at risk -> 0.35 / 0.35 = 1 on track.
    let goal = |id| {
        [
            (
                id,
                day("2026-02-01"),
                day("2026-02-01"),
                Some(0.2),
                Some(0.3),
                off,
                on,
            ),
            (
                id,
                day("2026-02-02"),
                day("2026-02-05"),
                Some(0.2),
                Some(0.3),
                off,
                risk,
            ),
        ]
    };
    let mut want = goal("g").to_vec();
    want.extend(goal("root"));
    want.push((
        "(plan)",
        day("2026-02-01"),
        day("2026-02-05"),
        Some(0.275),
        Some(0.35),
        risk,
        on,
    ));
    assert_eq!(rounded(runs(r)), want);
}

#[test]
fn example_13_later_definitions_do_not_change_what_earlier_days_were_told() {
    let s = example_13();
    // As of 02-12 (before the target change and the new step) the restatement is the same.
    let then_at = ts("2026-02-12");
    let then = metrics::restatements(&as_of(&s.events, then_at), None, then_at);
    let now = metrics::restatements(&s.plan, None, ts("2026-02-21"));
    assert_eq!(then.restatements, now.restatements);
    // Today's definitions would tell another story: the progress history, which measures
    // every day against the current target (80), has g at 30 / 80 = 0.375 on 02-01, where the
    // restatement says 0.3 (30 against the 100 in force then).
    let history = metrics::progress_history(&s.plan, ts("2026-02-21"), None);
    let g = history
        .goals
        .iter()
        .find(|h| h.goal_id == gid("g"))
        .expect("g has a history");
    let point = g
        .points
        .iter()
        .find(|p| p.date == day("2026-02-01"))
        .expect("a point on the day the check-in describes");
    close(point.progress, 0.375);
    let restated = &now.restatements[0].changes[0];
    assert_eq!(
        (restated.from, restated.progress_after),
        (day("2026-02-01"), Some(0.3))
    );
}

#[test]
fn example_13_on_time_check_ins_and_older_ones_are_not_restatements() {
    let s = example_13();
    let since = metrics::restatements(&s.plan, Some(ts("2026-02-11")), ts("2026-02-12"));
    assert!(since.restatements.is_empty());
    // As of 02-09 the back-dated check-in was not told yet.
    let before_at = ts("2026-02-09");
    let then = metrics::restatements(&as_of(&s.events, before_at), None, before_at);
    assert!(then.restatements.is_empty());
}
