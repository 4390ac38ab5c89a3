//! Edge cases of every formula: no KPI, target == baseline, zero-length horizon, no check-ins yet,
//! nothing due, undefined ratios as null.

use crate::support::{Scenario, day, ts};
use planledger_domain::metrics::{
    self, MeasuredBy, RollUp, computed_status, expected_progress, kpi_progress,
};
use planledger_domain::plan::{Direction, TrackStatus};
use planledger_domain::{ErrorKind, GoalId};
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

#[test]
fn kpi_progress_when_target_equals_baseline_is_met_or_not() {
    let table = [
        (5.0, 5.0, Direction::Increase, 5.0, 1.0),
        (5.0, 5.0, Direction::Increase, 4.9, 0.0),
        (5.0, 5.0, Direction::Decrease, 4.0, 1.0),
        (5.0, 5.0, Direction::Decrease, 6.0, 0.0),
    ];
    for (baseline, target, direction, current, expected) in table {
        assert_eq!(kpi_progress(baseline, target, direction, current), expected);
    }
}

#[test]
fn kpi_progress_for_a_decrease_kpi_counts_downward_movement() {
    assert_eq!(kpi_progress(40.0, 20.0, Direction::Decrease, 35.0), 0.25);
    assert_eq!(kpi_progress(40.0, 20.0, Direction::Decrease, 45.0), 0.0);
    assert_eq!(kpi_progress(40.0, 20.0, Direction::Decrease, 10.0), 1.0);
}

#[test]
fn expected_progress_table() {
    let start = day("2026-01-01");
    let due = day("2026-04-11");
    let table = [
        ("2025-12-01", 0.0),
        ("2026-01-01", 0.0),
        ("2026-02-20", 0.5),
        ("2026-04-11", 1.0),
        ("2026-06-01", 1.0),
    ];
    for (today, expected) in table {
        assert_eq!(
            expected_progress(start, due, day(today)),
            expected,
            "{today}"
        );
    }
}

#[test]
fn computed_status_thresholds() {
    let table = [
        (0.0, 0.0, TrackStatus::OnTrack),
        (0.95, 1.0, TrackStatus::OnTrack),
        (0.9499, 1.0, TrackStatus::AtRisk),
        (0.75, 1.0, TrackStatus::AtRisk),
        (0.7499, 1.0, TrackStatus::OffTrack),
        (0.0, 0.5, TrackStatus::OffTrack),
    ];
    for (p, e, expected) in table {
        assert_eq!(computed_status(p, e), expected, "p={p} e={e}");
    }
}

#[test]
fn goal_without_kpi_steps_or_children_has_undefined_progress() {
    let plan = Scenario::year_2026()
        .plain_goal("2026-01-01", "g", "2026-06-30")
        .plan;
    let report = metrics::progress_report(&plan, ts("2026-02-01"), RollUp::Weighted);
    assert_eq!(report.goals[0].measured_by, MeasuredBy::None);
    assert_eq!(report.goals[0].progress, None);
    assert_eq!(report.goals[0].status, None);
    assert_eq!(report.progress, None);
    assert_eq!(report.spi, None);
    assert_eq!(report.earned_schedule_days, None);
}

#[test]
fn goal_without_kpi_uses_completed_steps() {
    let plan = Scenario::year_2026()
        .plain_goal("2026-01-01", "g", "2026-06-30")
        .step("2026-01-01", "s1", "g", "2026-02-01")
        .step("2026-01-01", "s2", "g", "2026-03-01")
        .complete("2026-01-15", "s1")
        .plan;
    let report = metrics::progress_report(&plan, ts("2026-02-01"), RollUp::Weighted);
    assert_eq!(report.goals[0].measured_by, MeasuredBy::Steps);
    close(report.goals[0].progress, 0.5);
    assert_eq!(
        (report.goals[0].steps_total, report.goals[0].steps_completed),
        (2, 1)
    );
}

#[test]
fn kpi_goal_without_check_ins_yet_has_zero_progress() {
    let plan = Scenario::year_2026()
        .kpi_goal("2026-01-01", "g", 0.0, 10.0, "2026-06-30")
        .plan;
    let report = metrics::progress_report(&plan, ts("2026-02-01"), RollUp::Weighted);
    close(report.goals[0].progress, 0.0);
    assert_eq!(report.goals[0].current_value, None);
    assert_eq!(report.goals[0].last_check_in, None);
    assert_eq!(report.goals[0].reported_status, None);
    assert_eq!(report.goals[0].confidence_trend, None);
}

#[test]
fn parent_rolls_up_children_by_weight_or_equally() {
    let plan = Scenario::year_2026()
        .plain_goal("2026-01-01", "p", "2026-12-31")
        .with(
            "2026-01-01",
            json!({"type": "DefineGoal", "data": {"goal_id": "c1", "title": "c1", "parent_goal_id": "p", "due": "2026-06-30", "weight": 3,
                "kpi": {"unit": "u", "baseline": 0, "target": 10, "direction": "increase"}}}),
        )
        .with(
            "2026-01-01",
            json!({"type": "DefineGoal", "data": {"goal_id": "c2", "title": "c2", "parent_goal_id": "p", "due": "2026-06-30",
                "kpi": {"unit": "u", "baseline": 0, "target": 10, "direction": "increase"}}}),
        )
        .value("2026-02-01", "c1", 10.0, 0.9)
        .plan;
    let weighted = metrics::progress_report(&plan, ts("2026-02-01"), RollUp::Weighted);
    let parent = weighted
        .goals
        .iter()
        .find(|g| g.goal_id == gid("p"))
        .expect("p");
    assert_eq!(parent.measured_by, MeasuredBy::Children);
    close(parent.progress, 0.75);
    close(weighted.progress, 0.75);
    let equal = metrics::progress_report(&plan, ts("2026-02-01"), RollUp::Equal);
    close(equal.progress, 0.5);
}

#[test]
fn parent_counts_its_own_steps_as_one_more_child_of_weight_one() {
    let plan = Scenario::year_2026()
        .plain_goal("2026-01-01", "p", "2026-12-31")
        .with(
            "2026-01-01",
            json!({"type": "DefineGoal", "data": {"goal_id": "c", "title": "c", "parent_goal_id": "p", "due": "2026-06-30", "weight": 3,
                "kpi": {"unit": "u", "baseline": 0, "target": 10, "direction": "increase"}}}),
        )
        .step("2026-01-01", "s", "p", "2026-03-01")
        .complete("2026-01-10", "s")
        .plan;
    let report = metrics::progress_report(&plan, ts("2026-02-01"), RollUp::Weighted);
    // (3 * 0 + 1 * 1) / 4
    close(report.progress, 0.25);
}

#[test]
fn dropped_goal_leaves_the_roll_up_and_achieved_goal_counts_as_done() {
    let plan = Scenario::year_2026()
        .kpi_goal("2026-01-01", "kept", 0.0, 10.0, "2026-06-30")
        .kpi_goal("2026-01-01", "done", 0.0, 10.0, "2026-06-30")
        .kpi_goal("2026-01-01", "gone", 0.0, 10.0, "2026-06-30")
        .with(
            "2026-01-10",
            json!({"type": "CloseGoal", "data": {"goal_id": "done", "outcome": "achieved"}}),
        )
        .with(
            "2026-01-10",
            json!({"type": "CloseGoal", "data": {"goal_id": "gone", "outcome": "dropped"}}),
        )
        .plan;
    let report = metrics::progress_report(&plan, ts("2026-02-01"), RollUp::Weighted);
    close(report.progress, 0.5);
    let done = report
        .goals
        .iter()
        .find(|g| g.goal_id == gid("done"))
        .expect("done");
    assert_eq!(
        done.status, None,
        "closed goals carry an outcome, not a computed status"
    );
}

#[test]
fn zero_length_horizon_expects_everything_on_its_only_day() {
    let plan = Scenario::empty()
        .with(
            "2026-03-01",
            json!({"type": "CreatePlan", "data": {"title": "Launch day", "starts_on": "2026-03-01", "ends_on": "2026-03-01", "checkin_cadence_days": 7}}),
        )
        .kpi_goal("2026-03-01", "g", 0.0, 1.0, "2026-03-01")
        .plan;
    let report = metrics::progress_report(&plan, ts("2026-03-01T18:00:00Z"), RollUp::Weighted);
    close(report.expected_progress, 1.0);
    assert_eq!(report.goals[0].status, Some(TrackStatus::OffTrack));
    assert_eq!(report.goals[0].earned_schedule_days, None);
    assert_eq!(report.spi_t, None, "no actual time has elapsed");
    let acc = metrics::accountability_report(&plan, ts("2026-03-01T18:00:00Z"));
    assert_eq!(acc.slots_due, 0);
    assert_eq!(acc.punctuality, None);
}

#[test]
fn on_the_start_day_expected_progress_is_zero_and_status_on_track() {
    let plan = Scenario::year_2026()
        .kpi_goal("2026-01-01", "g", 0.0, 10.0, "2026-06-30")
        .plan;
    let report = metrics::progress_report(&plan, ts("2026-01-01T20:00:00Z"), RollUp::Weighted);
    assert_eq!(report.goals[0].expected_progress, 0.0);
    assert_eq!(report.goals[0].status, Some(TrackStatus::OnTrack));
    assert_eq!(report.spi, None, "PV is 0");
}

#[test]
fn goal_clock_starts_when_the_goal_is_defined() {
    let plan = Scenario::year_2026()
        .kpi_goal("2026-02-01", "late", 0.0, 10.0, "2026-03-03")
        .plan;
    let report = metrics::progress_report(&plan, ts("2026-02-16"), RollUp::Weighted);
    close(Some(report.goals[0].expected_progress), 0.5);
}

#[test]
fn latest_effective_day_wins_over_latest_recording() {
    let plan = Scenario::year_2026()
        .kpi_goal("2026-01-01", "g", 0.0, 100.0, "2026-06-30")
        .with(
            "2026-01-23",
            json!({"type": "RecordCheckIn", "data": {"goal_id": "g", "value": 40, "confidence": 0.5, "effective_on": "2026-01-22"}}),
        )
        .with(
            "2026-01-25",
            json!({"type": "RecordCheckIn", "data": {"goal_id": "g", "value": 50, "confidence": 0.6, "effective_on": "2026-01-20"}}),
        )
        .plan;
    let report = metrics::progress_report(&plan, ts("2026-01-26"), RollUp::Weighted);
    assert_eq!(report.goals[0].current_value, Some(40.0));
    close(report.goals[0].confidence_trend, -0.1);
}

#[test]
fn unknown_baseline_is_not_found() {
    let plan = Scenario::year_2026().plan;
    let error =
        metrics::drift_report(&plan, "nope", ts("2026-02-01")).expect_err("no such baseline");
    assert_eq!(error.kind(), ErrorKind::NotFound);
    assert_eq!(error.code(), "unknown_baseline");
    let error = metrics::progress_report_against(&plan, ts("2026-02-01"), RollUp::Weighted, "nope")
        .expect_err("no such baseline");
    assert_eq!(error.code(), "unknown_baseline");
}

#[test]
fn progress_against_a_named_baseline_uses_its_targets() {
    let plan = Scenario::year_2026()
        .kpi_goal("2026-01-01", "g", 0.0, 100.0, "2026-06-30")
        .baseline("2026-01-01", "first")
        .with(
            "2026-01-05",
            json!({"type": "AdjustGoal", "data": {"goal_id": "g", "target": 50, "reason": "r"}}),
        )
        .baseline("2026-01-05", "second")
        .value("2026-01-10", "g", 25.0, 0.5)
        .plan;
    let first = metrics::progress_report(&plan, ts("2026-01-10"), RollUp::Weighted);
    close(first.progress_vs_baseline, 0.25);
    let second =
        metrics::progress_report_against(&plan, ts("2026-01-10"), RollUp::Weighted, "second")
            .expect("exists");
    close(second.progress_vs_baseline, 0.5);
    close(second.goalpost_effect, 0.0);
}

#[test]
fn no_baseline_means_no_goalpost_effect() {
    let plan = Scenario::year_2026()
        .kpi_goal("2026-01-01", "g", 0.0, 100.0, "2026-06-30")
        .plan;
    let report = metrics::progress_report(&plan, ts("2026-02-01"), RollUp::Weighted);
    assert_eq!(report.progress_vs_baseline, None);
    assert_eq!(report.goalpost_effect, None);
    assert_eq!(report.baseline_label, None);
}

#[test]
fn target_drift_is_undefined_when_baseline_target_equals_start() {
    assert_eq!(metrics::target_drift(12.0, 10.0, 10.0), None);
    assert_eq!(metrics::target_drift(8.0, 10.0, 0.0), Some(-0.2));
}

#[test]
fn raising_a_decrease_target_lowers_the_bar() {
    let plan = Scenario::year_2026()
        .with(
            "2026-01-01",
            json!({"type": "DefineGoal", "data": {"goal_id": "churn", "title": "Cut churn", "due": "2026-06-30",
                "kpi": {"unit": "%", "baseline": 10, "target": 5, "direction": "decrease"}}}),
        )
        .baseline("2026-01-01", "b1")
        .with(
            "2026-02-01",
            json!({"type": "AdjustGoal", "data": {"goal_id": "churn", "target": 6, "reason": "r"}}),
        )
        .plan;
    let report = metrics::drift_report(&plan, "b1", ts("2026-02-02")).expect("exists");
    close(report.goals[0].target_drift, 0.2);
    assert_eq!(report.goals[0].bar_lowered, Some(true));
}

#[test]
fn nothing_due_yet_gives_null_ratios_never_zero() {
    let plan = Scenario::year_2026()
        .plain_goal("2026-01-01", "g", "2026-06-30")
        .step("2026-01-01", "s", "g", "2026-03-01")
        .plan;
    let report = metrics::accountability_report(&plan, ts("2026-01-03"));
    assert_eq!(report.punctuality, None);
    assert_eq!(report.say_do_ratio, None);
    assert_eq!(report.brier_score, None);
    let json = serde_json::to_value(&report).expect("serializes");
    assert_eq!(json["punctuality"], json!(null));
    assert_eq!(json["say_do_ratio"], json!(null));
    assert_eq!(json["brier_score"], json!(null));
    close(report.ownership_coverage, 0.0);
}

#[test]
fn staleness_without_check_ins_counts_from_the_goal_definition() {
    let plan = Scenario::year_2026()
        .plain_goal("2026-01-01", "g", "2026-06-30")
        .plan;
    let report = metrics::accountability_report(&plan, ts("2026-01-11"));
    close(report.staleness_days, 10.0);
}

#[test]
fn ownership_coverage_is_null_without_open_goals() {
    let plan = Scenario::year_2026().plan;
    assert_eq!(
        metrics::accountability_report(&plan, ts("2026-01-11")).ownership_coverage,
        None
    );
}

#[test]
fn a_check_in_counts_for_one_slot_only() {
    let plan = Scenario::year_2026()
        .plain_goal("2026-01-01", "g", "2026-06-30")
        .status("2026-01-09", "g", "on_track", 0.5)
        .plan;
    // Recorded on day 9: inside slot 1's grace and slot 2's own window; it satisfies slot 1 only.
    let report = metrics::accountability_report(&plan, ts("2026-01-17"));
    assert_eq!((report.slots_due, report.slots_on_time), (2, 1));
}

#[test]
fn closed_goal_needs_no_check_ins_after_closing() {
    let plan = Scenario::year_2026()
        .plain_goal("2026-01-01", "g", "2026-06-30")
        .status("2026-01-05", "g", "on_track", 0.5)
        .with(
            "2026-01-09",
            json!({"type": "CloseGoal", "data": {"goal_id": "g", "outcome": "missed"}}),
        )
        .plan;
    let report = metrics::accountability_report(&plan, ts("2026-03-01"));
    assert_eq!((report.slots_due, report.slots_on_time), (1, 1));
    assert_eq!(report.staleness_days, None);
    close(report.brier_score, 0.25);
}

#[test]
fn person_without_a_role_has_no_accountability_row() {
    let plan = Scenario::year_2026().plan;
    let nobody = planledger_domain::PersonId::new("nobody").expect("id");
    assert_eq!(
        metrics::person_accountability(&plan, &nobody, ts("2026-01-11")),
        None
    );
}

#[test]
fn agility_without_baseline_has_no_volatility() {
    let plan = Scenario::year_2026()
        .plain_goal("2026-01-01", "g", "2026-06-30")
        .plan;
    let report = metrics::agility_report(&plan, ts("2026-02-01"));
    assert_eq!(report.volatility, None);
    assert_eq!(report.volatility_per_week, None);
    assert_eq!(report.course_correction_latency_days, None);
    assert_eq!(report.corrected_within_14_days, None);
    assert_eq!(report.signals, 0);
}

#[test]
fn volatility_per_week_is_null_on_the_day_of_the_baseline() {
    let plan = Scenario::year_2026()
        .plain_goal("2026-01-01", "g", "2026-06-30")
        .baseline("2026-01-01", "b1")
        .plan;
    let report = metrics::agility_report(&plan, ts("2026-01-01T20:00:00Z"));
    close(report.volatility, 0.0);
    assert_eq!(report.volatility_per_week, None);
}

#[test]
fn re_baselines_count_every_baseline_after_the_first() {
    let plan = Scenario::year_2026()
        .baseline("2026-01-01", "b1")
        .baseline("2026-02-01", "b2")
        .baseline("2026-03-01", "b3")
        .plan;
    let report = metrics::agility_report(&plan, ts("2026-03-02"));
    assert_eq!(report.re_baselines, 2);
    let labels: Vec<&str> = report.baselines.iter().map(|b| b.label.as_str()).collect();
    assert_eq!(labels, vec!["b1", "b2", "b3"]);
}

#[test]
fn young_unanswered_signal_is_not_yet_counted_against_promptness() {
    let plan = Scenario::year_2026()
        .plain_goal("2026-01-01", "g", "2026-06-30")
        .status("2026-01-10", "g", "off_track", 0.2)
        .plan;
    let report = metrics::agility_report(&plan, ts("2026-01-15"));
    assert_eq!(report.signals_never_acted_on, 1);
    assert_eq!(report.corrected_within_14_days, None);
}

#[test]
fn momentum_needs_eight_complete_weeks() {
    let plan = Scenario::year_2026()
        .plain_goal("2026-01-01", "g", "2026-06-30")
        .status("2026-01-02", "g", "on_track", 0.5)
        .plan;
    let m = metrics::momentum(&plan, ts("2026-02-01"));
    assert_eq!(m.weeks.len(), 4);
    close(m.first_four_weeks_rate, 0.25);
    assert_eq!(m.momentum, None);
}

#[test]
fn momentum_is_null_when_the_first_weeks_were_silent() {
    let plan = Scenario::year_2026()
        .plain_goal("2026-01-01", "g", "2026-06-30")
        .status("2026-02-20", "g", "on_track", 0.5)
        .plan;
    let m = metrics::momentum(&plan, ts("2026-03-01"));
    assert_eq!(m.first_four_weeks_rate, Some(0.0));
    assert_eq!(m.momentum, None);
}

#[test]
fn momentum_weeks_start_after_planning_ends() {
    let plan = Scenario::year_2026()
        .plain_goal("2026-01-01", "g", "2026-06-30")
        .baseline("2026-01-15", "b1")
        .plan;
    assert_eq!(
        metrics::momentum(&plan, ts("2026-03-01")).anchor,
        day("2026-01-15")
    );
}

#[test]
fn late_check_in_counts_in_the_gap_series_on_its_effective_day() {
    let plan = Scenario::year_2026()
        .kpi_goal("2026-01-01", "g", 0.0, 100.0, "2026-04-11")
        .baseline("2026-01-01", "b1")
        .with(
            "2026-01-20",
            json!({"type": "RecordCheckIn", "data": {"goal_id": "g", "value": 30, "confidence": 0.5, "effective_on": "2026-01-08"}}),
        )
        .plan;
    let report = metrics::drift_report(&plan, "b1", ts("2026-01-20")).expect("exists");
    let jan8 = report
        .execution_gap
        .iter()
        .find(|p| p.date == day("2026-01-08"))
        .expect("point");
    close(jan8.actual, 0.3);
    let jan1 = &report.execution_gap[0];
    close(jan1.actual, 0.0);
}

#[test]
fn gap_series_is_empty_before_the_plan_starts() {
    let plan = Scenario::empty()
        .with(
            "2025-12-01",
            json!({"type": "CreatePlan", "data": {"title": "t", "starts_on": "2026-01-01", "ends_on": "2026-12-31", "checkin_cadence_days": 7}}),
        )
        .baseline("2025-12-01", "b1")
        .plan;
    let report = metrics::drift_report(&plan, "b1", ts("2025-12-02")).expect("exists");
    assert!(report.execution_gap.is_empty());
    assert_eq!(report.deadline_slip_days, None);
}

#[test]
fn roll_up_rule_is_snake_case_and_weighted_by_default() {
    assert_eq!(RollUp::default(), RollUp::Weighted);
    assert_eq!(
        serde_json::to_value(RollUp::Equal).expect("json"),
        json!("equal")
    );
    let parsed: RollUp = serde_json::from_value(json!("weighted")).expect("parses");
    assert_eq!(parsed, RollUp::Weighted);
}

#[test]
fn report_json_uses_the_documented_names() {
    let plan = Scenario::year_2026()
        .kpi_goal("2026-01-01", "g", 0.0, 100.0, "2026-06-30")
        .baseline("2026-01-01", "b1")
        .plan;
    let now = ts("2026-02-01");
    let progress =
        serde_json::to_value(metrics::progress_report(&plan, now, RollUp::Weighted)).expect("json");
    for name in [
        "plan_id",
        "progress",
        "expected_progress",
        "status",
        "spi",
        "goalpost_effect",
        "goals",
    ] {
        assert!(progress.get(name).is_some(), "progress report lacks {name}");
    }
    for name in [
        "goal_id",
        "progress",
        "expected_progress",
        "status",
        "reported_status",
        "spi",
        "goalpost_effect",
    ] {
        assert!(
            progress["goals"][0].get(name).is_some(),
            "goal row lacks {name}"
        );
    }
    let acc = serde_json::to_value(metrics::accountability_report(&plan, now)).expect("json");
    for name in [
        "punctuality",
        "say_do_ratio",
        "overdue_steps",
        "ownership_coverage",
        "open_blockers",
        "staleness_days",
        "brier_score",
        "people",
    ] {
        assert!(
            acc.get(name).is_some(),
            "accountability report lacks {name}"
        );
    }
    let agility = serde_json::to_value(metrics::agility_report(&plan, now)).expect("json");
    for name in [
        "adjustments",
        "volatility_per_week",
        "course_correction_latency_days",
    ] {
        assert!(agility.get(name).is_some(), "agility report lacks {name}");
    }
    let drift = serde_json::to_value(metrics::drift_report(&plan, "b1", now).expect("exists"))
        .expect("json");
    for name in ["deadline_slip_days", "target_drift"] {
        assert!(drift.get(name).is_some(), "drift report lacks {name}");
    }
    let momentum = serde_json::to_value(metrics::momentum(&plan, now)).expect("json");
    assert!(momentum.get("momentum").is_some());
}

#[test]
fn metrics_of_a_plan_that_does_not_exist_are_empty() {
    let plan = planledger_domain::Plan::default();
    let now = ts("2026-02-01");
    let progress = metrics::progress_report(&plan, now, RollUp::Weighted);
    assert!(progress.goals.is_empty());
    assert_eq!(progress.progress, None);
    assert_eq!(metrics::accountability_report(&plan, now).punctuality, None);
    assert_eq!(metrics::agility_report(&plan, now).volatility, None);
    assert!(metrics::momentum(&plan, now).weeks.is_empty());
}

// Earned schedule at the edges (docs/metrics.md, "Earned schedule").

/// A plan over 2026 whose two goals are defined three weeks after its start: `checkout` (4 steps, due 02-21, 30 days) and `signups` (KPI 0 -> 10,
/// weight 2, due 03-23, 60 days).
fn late_goals() -> Scenario {
    Scenario::year_2026()
        .plain_goal("2026-01-22", "checkout", "2026-02-21")
        .step("2026-01-22", "s1", "checkout", "2026-02-01")
        .step("2026-01-22", "s2", "checkout", "2026-02-08")
        .step("2026-01-22", "s3", "checkout", "2026-02-15")
        .step("2026-01-22", "s4", "checkout", "2026-02-20")
        .with(
            "2026-01-22",
            json!({"type": "DefineGoal", "data": {"goal_id": "signups", "title": "Signups", "weight": 2.0,
                "kpi": {"unit": "u", "baseline": 0.0, "target": 10.0, "direction": "increase"},
                "due": "2026-03-23"}}),
        )
}

#[test]
fn nothing_planned_and_nothing_earned_is_no_slip() {
    // On 01-22: AT = 21, every goal starts today, so PV(d) = 0 for d <= 21 and EV = 0.
    // C = 21 (the last day with PV <= EV), ES = 21 + 0 / PV(22) = 21: slip 0, SPI(t) = 1.
    let report = metrics::progress_report(&late_goals().plan, ts("2026-01-22"), RollUp::Weighted);
    close(report.expected_progress, 0.0);
    close(report.progress, 0.0);
    assert_eq!(report.pv, 0.0);
    assert_eq!(
        report.spi, None,
        "SPI = EV / PV is undefined with nothing planned"
    );
    assert_eq!(report.actual_time_days, 21);
    close(report.earned_schedule_days, 21.0);
    close(report.spi_t, 1.0);
    close(report.schedule_slip_days, 0.0);
}

#[test]
fn nothing_earned_slips_only_the_days_since_value_was_planned() {
    // On 01-25 (AT = 24) nothing is earned yet: PV(d) = 0 up to day 21, PV(22) > 0, so C = 21
    // and ES = 21; slip 3 days (the goals' own three days), SPI(t) = 21 / 24.
    // Expected progress follows the same curve: PV(24) = 1 * 3/30 + 2 * 3/60 = 0.2 of 3.
    let report = metrics::progress_report(&late_goals().plan, ts("2026-01-25"), RollUp::Weighted);
    close(Some(report.pv), 0.2);
    close(report.expected_progress, 0.2 / 3.0);
    close(report.earned_schedule_days, 21.0);
    close(report.spi_t, 21.0 / 24.0);
    close(report.schedule_slip_days, 3.0);
}

#[test]
fn nothing_earned_on_a_plan_planned_from_its_start_slips_all_elapsed_days() {
    // PV rises from day 0 (PV(1) = 1/100 > 0 = EV): C = 0, ES = 0, slip = AT = 10.
    let plan = Scenario::year_2026()
        .kpi_goal("2026-01-01", "g", 0.0, 10.0, "2026-04-11")
        .plan;
    let report = metrics::progress_report(&plan, ts("2026-01-11"), RollUp::Weighted);
    close(Some(report.pv), 0.1);
    close(report.earned_schedule_days, 0.0);
    close(report.spi_t, 0.0);
    close(report.schedule_slip_days, 10.0);
}

#[test]
fn goals_defined_after_the_start_are_measured_from_their_own_start() {
    // docs example: one goal defined 01-22, due 02-21 (30 days), value 3 of 10 on 01-31.
    // PV(d) = (d - 21) / 30 from day 21; EV = 0.3 = PV(30), PV(31) = 10/30 > EV: ES = 30,
    // AT = 30, slip 0; the goal's own e = 9/30 = 0.3, so SPI = 1 as well.
    let plan = Scenario::year_2026()
        .kpi_goal("2026-01-22", "g", 0.0, 10.0, "2026-02-21")
        .value("2026-01-31", "g", 3.0, 0.5)
        .plan;
    let report = metrics::progress_report(&plan, ts("2026-01-31"), RollUp::Weighted);
    close(report.expected_progress, 0.3);
    close(report.spi, 1.0);
    close(report.earned_schedule_days, 30.0);
    close(report.schedule_slip_days, 0.0);
    // One day later, nothing new: PV(31) = 1/3 > EV, ES stays 30, slip 1 day.
    let report = metrics::progress_report(&plan, ts("2026-02-01"), RollUp::Weighted);
    close(report.earned_schedule_days, 30.0);
    close(report.schedule_slip_days, 1.0);
}

#[test]
fn earned_value_at_the_curves_end_stops_at_the_last_due_date() {
    // Everything done by 03-02 (AT = 60); the goals are due on days 51 (02-21) and 81 (03-23)
    // of the plan: EV = 3 = PV(81), the curve's end, so ES = 81, slip = 60 - 81 = -21 (ahead).
    let plan = late_goals()
        .complete("2026-02-01", "s1")
        .complete("2026-02-08", "s2")
        .complete("2026-02-15", "s3")
        .complete("2026-02-20", "s4")
        .value("2026-03-02", "signups", 10.0, 0.9)
        .plan;
    let report = metrics::progress_report(&plan, ts("2026-03-02"), RollUp::Weighted);
    close(Some(report.ev), 3.0);
    assert_eq!(report.actual_time_days, 60);
    close(report.earned_schedule_days, 81.0);
    close(report.spi_t, 81.0 / 60.0);
    close(report.schedule_slip_days, -21.0);
}

// Role history: who is credited when nobody, or only a responsible person, held the goal.

#[test]
fn a_responsible_person_answers_only_while_nobody_is_accountable() {
    // alice responsible from 01-01; bob accountable from 01-12. Slot deadlines 01-10 (alice:
    // nobody accountable then), 01-17, 01-24, 01-31 (bob). No check-ins: all missed.
    let plan = Scenario::year_2026()
        .plain_goal("2026-01-01", "g", "2026-06-30")
        .role("2026-01-01", "alice", "responsible", "g")
        .role("2026-01-12", "bob", "accountable", "g")
        .plan;
    let report = metrics::accountability_report(&plan, ts("2026-01-31"));
    assert_eq!(report.slots_due, 4);
    let slots = |name: &str| {
        let p = report
            .people
            .iter()
            .find(|p| p.person.as_str() == name)
            .expect("row");
        (p.slots_due, p.slots_on_time)
    };
    assert_eq!(slots("alice"), (1, 0));
    assert_eq!(slots("bob"), (3, 0));
}

#[test]
fn items_falling_due_while_nobody_held_the_goal_are_credited_to_nobody() {
    // Slots 01-10 and 01-17 and step s (fell due 01-16 00:00) come before alice's role on
    // 01-20: the plan counts 4 slots and 1 step, alice 2 slots (01-24, 01-31) and no step.
    let plan = Scenario::year_2026()
        .plain_goal("2026-01-01", "g", "2026-06-30")
        .step("2026-01-01", "s", "g", "2026-01-15")
        .role("2026-01-20", "alice", "accountable", "g")
        .plan;
    let report = metrics::accountability_report(&plan, ts("2026-01-31"));
    assert_eq!(
        (report.slots_due, report.steps_due, report.overdue_steps),
        (4, 1, 1)
    );
    let alice = &report.people[0];
    assert_eq!(alice.person.as_str(), "alice");
    assert_eq!(
        (alice.slots_due, alice.steps_due, alice.overdue_steps),
        (2, 0, 0)
    );
    // Her staleness counts from when she took the goal (11 days), not from its definition (30).
    close(report.staleness_days, 30.0);
    close(alice.staleness_days, 11.0);
}

#[test]
fn a_step_with_its_own_owner_goes_to_that_owner() {
    // bob is accountable for g, carol responsible for step s2 (from 01-05); both steps are
    // open and past due on 01-31: s1 is bob's, s2 carol's.
    let plan = Scenario::year_2026()
        .plain_goal("2026-01-01", "g", "2026-06-30")
        .step("2026-01-01", "s1", "g", "2026-01-15")
        .step("2026-01-01", "s2", "g", "2026-01-20")
        .role("2026-01-01", "bob", "accountable", "g")
        .with(
            "2026-01-05",
            json!({"type": "AssignRole", "data": {"person": "carol", "role": "responsible", "step_id": "s2"}}),
        )
        .plan;
    let report = metrics::accountability_report(&plan, ts("2026-01-31"));
    let steps = |name: &str| {
        let p = report
            .people
            .iter()
            .find(|p| p.person.as_str() == name)
            .expect("row");
        (p.steps_due, p.overdue_steps)
    };
    assert_eq!(steps("bob"), (1, 1));
    assert_eq!(steps("carol"), (1, 1));
}

#[test]
fn a_consulted_person_whose_role_ended_has_no_row() {
    let plan = Scenario::year_2026()
        .plain_goal("2026-01-01", "g", "2026-06-30")
        .role("2026-01-01", "dave", "consulted", "g")
        .role("2026-01-01", "erin", "accountable", "g")
        .revoke("2026-01-02", "dave", "consulted", "g")
        .revoke("2026-01-03", "erin", "accountable", "g")
        .plan;
    let report = metrics::accountability_report(&plan, ts("2026-01-31"));
    let names: Vec<&str> = report.people.iter().map(|p| p.person.as_str()).collect();
    assert_eq!(
        names,
        ["erin"],
        "a past owner keeps a row; a past consultee does not"
    );
    let dave = planledger_domain::PersonId::new("dave").expect("id");
    assert_eq!(
        metrics::person_accountability(&plan, &dave, ts("2026-01-31")),
        None
    );
}
