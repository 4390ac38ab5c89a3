//! Table tests: every rule `decide` enforces, each with its code, kind and field.

use crate::support::{Scenario, cmd, day, ts};
use planledger_domain::command::{AdjustGoal, DefineGoal, KpiInput, RecordCheckIn};
use planledger_domain::plan::Direction;
use planledger_domain::{Command, ErrorKind, GoalId, decide};
use serde_json::json;

/// The time rejected commands are attempted at.
const NOW: &str = "2026-02-01";

/// A plan with: g1 (KPI 0 -> 100, due 2026-06-30, alice accountable, check-in c1), g2 (no KPI,
/// steps s1 open and s2 completed), gc (closed, achieved, with step s3), baseline b1.
fn ruled() -> Scenario {
    Scenario::year_2026()
        .kpi_goal("2026-01-02", "g1", 0.0, 100.0, "2026-06-30")
        .plain_goal("2026-01-02", "g2", "2026-09-30")
        .plain_goal("2026-01-02", "gc", "2026-03-31")
        .step("2026-01-03", "s1", "g2", "2026-03-31")
        .step("2026-01-03", "s2", "g2", "2026-04-30")
        .step("2026-01-03", "s3", "gc", "2026-03-01")
        .complete("2026-01-04", "s2")
        .role("2026-01-04", "alice", "accountable", "g1")
        .value("2026-01-05", "g1", 10.0, 0.7)
        .baseline("2026-01-06", "b1")
        .with(
            "2026-01-07",
            json!({"type": "CloseGoal", "data": {"goal_id": "gc", "outcome": "achieved"}}),
        )
}

fn archived() -> Scenario {
    ruled().with("2026-01-08", json!({"type": "ArchivePlan", "data": {}}))
}

fn nan_confidence() -> Command {
    Command::RecordCheckIn(RecordCheckIn {
        goal_id: GoalId::new("g1").expect("valid id"),
        checkin_id: None,
        value: None,
        confidence: f64::NAN,
        status: None,
        effective_on: None,
        note: None,
        blockers: Vec::new(),
    })
}

fn infinite_value() -> Command {
    Command::RecordCheckIn(RecordCheckIn {
        goal_id: GoalId::new("g1").expect("valid id"),
        checkin_id: None,
        value: Some(f64::INFINITY),
        confidence: 0.5,
        status: None,
        effective_on: None,
        note: None,
        blockers: Vec::new(),
    })
}

fn infinite_target() -> Command {
    Command::AdjustGoal(AdjustGoal {
        goal_id: GoalId::new("g1").expect("valid id"),
        target: Some(f64::NEG_INFINITY),
        due: None,
        title: None,
        weight: None,
        reason: Some("why".into()),
        in_response_to_checkin: None,
    })
}

fn nan_kpi_baseline() -> Command {
    Command::DefineGoal(DefineGoal {
        goal_id: GoalId::new("g9").expect("valid id"),
        title: "t".into(),
        parent_goal_id: None,
        aligns_to: None,
        kpi: Some(KpiInput {
            unit: "u".into(),
            baseline: f64::NAN,
            target: 1.0,
            direction: Direction::Increase,
        }),
        due: day("2026-05-01"),
        weight: None,
    })
}

fn infinite_weight() -> Command {
    Command::DefineGoal(DefineGoal {
        goal_id: GoalId::new("g9").expect("valid id"),
        title: "t".into(),
        parent_goal_id: None,
        aligns_to: None,
        kpi: None,
        due: day("2026-05-01"),
        weight: Some(f64::INFINITY),
    })
}

/// One behaviour-named test per rule: scenario, command => code, kind, field.
macro_rules! rejects {
    ($($name:ident: $scenario:expr, $command:expr => $code:literal, $kind:ident, $field:expr;)*) => {
        $(
            #[test]
            fn $name() {
                let scenario: Scenario = $scenario;
                let command: Command = $command;
                let before = scenario.plan.clone();
                let error = decide(&scenario.plan, &command, ts(NOW))
                    .expect_err("the command must be rejected");
                assert_eq!(error.code(), $code, "{error}");
                assert_eq!(error.kind(), ErrorKind::$kind, "{error}");
                let field: Option<&str> = $field;
                assert_eq!(error.field(), field, "{error}");
                assert!(!error.to_string().is_empty());
                assert_eq!(scenario.plan, before, "a rejected command changes nothing");
            }
        )*
    };
}

fn long(n: usize) -> String {
    "x".repeat(n)
}

rejects! {
    command_on_missing_plan_is_not_found: Scenario::empty(),
        cmd(json!({"type": "DefineGoal", "data": {"goal_id": "g1", "title": "t", "due": "2026-05-01"}}))
        => "plan_not_found", NotFound, None;
    create_plan_twice_is_rejected: ruled(),
        cmd(json!({"type": "CreatePlan", "data": {"title": "t", "starts_on": "2026-01-01", "ends_on": "2026-12-31", "checkin_cadence_days": 7}}))
        => "plan_exists", Conflict, None;
    create_plan_ending_before_start_is_rejected: Scenario::empty(),
        cmd(json!({"type": "CreatePlan", "data": {"title": "t", "starts_on": "2026-05-01", "ends_on": "2026-04-30", "checkin_cadence_days": 7}}))
        => "horizon_inverted", Invalid, Some("data.ends_on");
    create_plan_longer_than_ten_years_is_rejected: Scenario::empty(),
        cmd(json!({"type": "CreatePlan", "data": {"title": "t", "starts_on": "2026-01-01", "ends_on": "2036-12-31", "checkin_cadence_days": 7}}))
        => "horizon_too_long", Invalid, Some("data.ends_on");
    create_plan_with_zero_cadence_is_rejected: Scenario::empty(),
        cmd(json!({"type": "CreatePlan", "data": {"title": "t", "starts_on": "2026-01-01", "ends_on": "2026-12-31", "checkin_cadence_days": 0}}))
        => "out_of_range", Invalid, Some("data.checkin_cadence_days");
    create_plan_with_excessive_grace_is_rejected: Scenario::empty(),
        cmd(json!({"type": "CreatePlan", "data": {"title": "t", "starts_on": "2026-01-01", "ends_on": "2026-12-31", "checkin_cadence_days": 7, "checkin_grace_days": 400}}))
        => "out_of_range", Invalid, Some("data.checkin_grace_days");
    create_plan_with_blank_title_is_rejected: Scenario::empty(),
        cmd(json!({"type": "CreatePlan", "data": {"title": "   ", "starts_on": "2026-01-01", "ends_on": "2026-12-31", "checkin_cadence_days": 7}}))
        => "text_required", Invalid, Some("data.title");
    create_plan_with_overlong_title_is_rejected: Scenario::empty(),
        cmd(json!({"type": "CreatePlan", "data": {"title": long(201), "starts_on": "2026-01-01", "ends_on": "2026-12-31", "checkin_cadence_days": 7}}))
        => "text_too_long", Invalid, Some("data.title");
    create_plan_with_overlong_outcome_is_rejected: Scenario::empty(),
        cmd(json!({"type": "CreatePlan", "data": {"title": "t", "outcome": long(2001), "starts_on": "2026-01-01", "ends_on": "2026-12-31", "checkin_cadence_days": 7}}))
        => "text_too_long", Invalid, Some("data.outcome");
    define_goal_with_duplicate_id_is_rejected: ruled(),
        cmd(json!({"type": "DefineGoal", "data": {"goal_id": "g1", "title": "t", "due": "2026-05-01"}}))
        => "goal_exists", Conflict, Some("data.goal_id");
    define_goal_due_after_plan_end_is_rejected: ruled(),
        cmd(json!({"type": "DefineGoal", "data": {"goal_id": "g9", "title": "t", "due": "2027-03-01"}}))
        => "due_outside_horizon", Invalid, Some("data.due");
    define_goal_due_before_plan_start_is_rejected: ruled(),
        cmd(json!({"type": "DefineGoal", "data": {"goal_id": "g9", "title": "t", "due": "2025-12-31"}}))
        => "due_outside_horizon", Invalid, Some("data.due");
    define_goal_under_unknown_parent_is_rejected: ruled(),
        cmd(json!({"type": "DefineGoal", "data": {"goal_id": "g9", "title": "t", "due": "2026-05-01", "parent_goal_id": "nope"}}))
        => "unknown_goal", Conflict, Some("data.parent_goal_id");
    define_goal_as_its_own_parent_is_rejected: ruled(),
        cmd(json!({"type": "DefineGoal", "data": {"goal_id": "g9", "title": "t", "due": "2026-05-01", "parent_goal_id": "g9"}}))
        => "parent_cycle", Conflict, Some("data.parent_goal_id");
    define_goal_under_closed_parent_is_rejected: ruled(),
        cmd(json!({"type": "DefineGoal", "data": {"goal_id": "g9", "title": "t", "due": "2026-05-01", "parent_goal_id": "gc"}}))
        => "goal_closed", Conflict, Some("data.parent_goal_id");
    define_goal_with_target_against_direction_is_rejected: ruled(),
        cmd(json!({"type": "DefineGoal", "data": {"goal_id": "g9", "title": "t", "due": "2026-05-01",
            "kpi": {"unit": "u", "baseline": 10, "target": 5, "direction": "increase"}}}))
        => "target_against_direction", Invalid, Some("data.kpi.target");
    define_goal_with_non_finite_kpi_is_rejected: ruled(), nan_kpi_baseline()
        => "not_finite", Invalid, Some("data.kpi.baseline");
    define_goal_with_blank_kpi_unit_is_rejected: ruled(),
        cmd(json!({"type": "DefineGoal", "data": {"goal_id": "g9", "title": "t", "due": "2026-05-01",
            "kpi": {"unit": "", "baseline": 0, "target": 5, "direction": "increase"}}}))
        => "text_required", Invalid, Some("data.kpi.unit");
    define_goal_with_zero_weight_is_rejected: ruled(),
        cmd(json!({"type": "DefineGoal", "data": {"goal_id": "g9", "title": "t", "due": "2026-05-01", "weight": 0}}))
        => "out_of_range", Invalid, Some("data.weight");
    define_goal_with_infinite_weight_is_rejected: ruled(), infinite_weight()
        => "not_finite", Invalid, Some("data.weight");
    add_step_to_unknown_goal_is_rejected: ruled(),
        cmd(json!({"type": "AddStep", "data": {"step_id": "s9", "goal_id": "nope", "title": "t", "due": "2026-05-01"}}))
        => "unknown_goal", Conflict, Some("data.goal_id");
    add_step_to_closed_goal_is_rejected: ruled(),
        cmd(json!({"type": "AddStep", "data": {"step_id": "s9", "goal_id": "gc", "title": "t", "due": "2026-05-01"}}))
        => "goal_closed", Conflict, Some("data.goal_id");
    add_step_with_duplicate_id_is_rejected: ruled(),
        cmd(json!({"type": "AddStep", "data": {"step_id": "s1", "goal_id": "g2", "title": "t", "due": "2026-05-01"}}))
        => "step_exists", Conflict, Some("data.step_id");
    add_step_due_outside_horizon_is_rejected: ruled(),
        cmd(json!({"type": "AddStep", "data": {"step_id": "s9", "goal_id": "g2", "title": "t", "due": "2027-01-01"}}))
        => "due_outside_horizon", Invalid, Some("data.due");
    add_step_with_negative_estimate_is_rejected: ruled(),
        cmd(json!({"type": "AddStep", "data": {"step_id": "s9", "goal_id": "g2", "title": "t", "due": "2026-05-01", "estimate_days": -1}}))
        => "out_of_range", Invalid, Some("data.estimate_days");
    assign_second_accountable_is_rejected: ruled(),
        cmd(json!({"type": "AssignRole", "data": {"person": "bob", "role": "accountable", "goal_id": "g1"}}))
        => "second_accountable", Conflict, Some("data.role");
    assign_same_role_twice_is_rejected: ruled(),
        cmd(json!({"type": "AssignRole", "data": {"person": "alice", "role": "accountable", "goal_id": "g1"}}))
        => "role_already_assigned", Conflict, Some("data.person");
    assign_role_on_goal_and_step_is_rejected: ruled(),
        cmd(json!({"type": "AssignRole", "data": {"person": "bob", "role": "responsible", "goal_id": "g1", "step_id": "s1"}}))
        => "role_subject_ambiguous", Invalid, Some("data.step_id");
    assign_role_on_unknown_step_is_rejected: ruled(),
        cmd(json!({"type": "AssignRole", "data": {"person": "bob", "role": "responsible", "step_id": "nope"}}))
        => "unknown_step", Conflict, Some("data.step_id");
    assign_role_on_closed_goal_is_rejected: ruled(),
        cmd(json!({"type": "AssignRole", "data": {"person": "bob", "role": "informed", "goal_id": "gc"}}))
        => "goal_closed", Conflict, Some("data.goal_id");
    revoke_role_not_held_is_rejected: ruled(),
        cmd(json!({"type": "RevokeRole", "data": {"person": "bob", "role": "accountable", "goal_id": "g1"}}))
        => "role_not_assigned", Conflict, Some("data.person");
    check_in_with_confidence_above_one_is_rejected: ruled(),
        cmd(json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "confidence": 1.01}}))
        => "confidence_out_of_range", Invalid, Some("data.confidence");
    check_in_with_negative_confidence_is_rejected: ruled(),
        cmd(json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "confidence": -0.1}}))
        => "confidence_out_of_range", Invalid, Some("data.confidence");
    check_in_with_nan_confidence_is_rejected: ruled(), nan_confidence()
        => "not_finite", Invalid, Some("data.confidence");
    check_in_with_infinite_value_is_rejected: ruled(), infinite_value()
        => "not_finite", Invalid, Some("data.value");
    check_in_on_unknown_goal_is_rejected: ruled(),
        cmd(json!({"type": "RecordCheckIn", "data": {"goal_id": "nope", "confidence": 0.5}}))
        => "unknown_goal", Conflict, Some("data.goal_id");
    check_in_on_closed_goal_is_rejected: ruled(),
        cmd(json!({"type": "RecordCheckIn", "data": {"goal_id": "gc", "confidence": 0.5}}))
        => "goal_closed", Conflict, Some("data.goal_id");
    check_in_value_on_goal_without_kpi_is_rejected: ruled(),
        cmd(json!({"type": "RecordCheckIn", "data": {"goal_id": "g2", "value": 3, "confidence": 0.5}}))
        => "value_without_kpi", Conflict, Some("data.value");
    check_in_effective_in_the_future_is_rejected: ruled(),
        cmd(json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "confidence": 0.5, "effective_on": "2026-02-02"}}))
        => "effective_on_out_of_range", Invalid, Some("data.effective_on");
    check_in_effective_before_plan_start_is_rejected: ruled(),
        cmd(json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "confidence": 0.5, "effective_on": "2025-12-31"}}))
        => "effective_on_out_of_range", Invalid, Some("data.effective_on");
    check_in_with_duplicate_id_is_rejected: ruled(),
        cmd(json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "checkin_id": "c1", "confidence": 0.5}}))
        => "checkin_exists", Conflict, Some("data.checkin_id");
    check_in_with_invalid_id_is_rejected: ruled(),
        cmd(json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "checkin_id": "a b", "confidence": 0.5}}))
        => "invalid_id", Invalid, Some("data.checkin_id");
    check_in_with_too_many_blockers_is_rejected: ruled(),
        cmd(json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "confidence": 0.5, "blockers": vec!["b"; 21]}}))
        => "too_many_blockers", Invalid, Some("data.blockers");
    check_in_with_overlong_blocker_is_rejected: ruled(),
        cmd(json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "confidence": 0.5, "blockers": [long(201)]}}))
        => "text_too_long", Invalid, Some("data.blockers[0]");
    check_in_with_blank_blocker_is_rejected: ruled(),
        cmd(json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "confidence": 0.5, "blockers": ["ok", " "]}}))
        => "text_required", Invalid, Some("data.blockers[1]");
    check_in_with_overlong_note_is_rejected: ruled(),
        cmd(json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "confidence": 0.5, "note": long(2001)}}))
        => "text_too_long", Invalid, Some("data.note");
    complete_unknown_step_is_rejected: ruled(),
        cmd(json!({"type": "CompleteStep", "data": {"step_id": "nope"}}))
        => "unknown_step", Conflict, Some("data.step_id");
    complete_already_completed_step_is_rejected: ruled(),
        cmd(json!({"type": "CompleteStep", "data": {"step_id": "s2"}}))
        => "step_already_completed", Conflict, Some("data.step_id");
    complete_step_of_closed_goal_is_rejected: ruled(),
        cmd(json!({"type": "CompleteStep", "data": {"step_id": "s3"}}))
        => "goal_closed", Conflict, Some("data.step_id");
    reopen_open_step_is_rejected: ruled(),
        cmd(json!({"type": "ReopenStep", "data": {"step_id": "s1"}}))
        => "step_not_completed", Conflict, Some("data.step_id");
    adjust_goal_without_reason_is_rejected: ruled(),
        cmd(json!({"type": "AdjustGoal", "data": {"goal_id": "g1", "target": 80}}))
        => "text_required", Invalid, Some("data.reason");
    adjust_goal_with_blank_reason_is_rejected: ruled(),
        cmd(json!({"type": "AdjustGoal", "data": {"goal_id": "g1", "target": 80, "reason": "  "}}))
        => "text_required", Invalid, Some("data.reason");
    adjust_goal_with_overlong_reason_is_rejected: ruled(),
        cmd(json!({"type": "AdjustGoal", "data": {"goal_id": "g1", "target": 80, "reason": long(2001)}}))
        => "text_too_long", Invalid, Some("data.reason");
    adjust_goal_without_change_is_rejected: ruled(),
        cmd(json!({"type": "AdjustGoal", "data": {"goal_id": "g1", "target": 100, "due": "2026-06-30", "reason": "same"}}))
        => "no_change", Conflict, None;
    adjust_goal_without_any_field_is_rejected: ruled(),
        cmd(json!({"type": "AdjustGoal", "data": {"goal_id": "g1", "reason": "nothing"}}))
        => "no_change", Conflict, None;
    adjust_goal_target_without_kpi_is_rejected: ruled(),
        cmd(json!({"type": "AdjustGoal", "data": {"goal_id": "g2", "target": 5, "reason": "r"}}))
        => "target_without_kpi", Conflict, Some("data.target");
    adjust_goal_target_against_direction_is_rejected: ruled(),
        cmd(json!({"type": "AdjustGoal", "data": {"goal_id": "g1", "target": -5, "reason": "r"}}))
        => "target_against_direction", Invalid, Some("data.target");
    adjust_goal_with_infinite_target_is_rejected: ruled(), infinite_target()
        => "not_finite", Invalid, Some("data.target");
    adjust_goal_due_outside_horizon_is_rejected: ruled(),
        cmd(json!({"type": "AdjustGoal", "data": {"goal_id": "g1", "due": "2027-03-01", "reason": "r"}}))
        => "due_outside_horizon", Invalid, Some("data.due");
    adjust_goal_in_response_to_unknown_checkin_is_rejected: ruled(),
        cmd(json!({"type": "AdjustGoal", "data": {"goal_id": "g1", "target": 80, "reason": "r", "in_response_to_checkin": "c99"}}))
        => "unknown_checkin", Conflict, Some("data.in_response_to_checkin");
    adjust_goal_in_response_to_another_goals_checkin_is_rejected: ruled(),
        cmd(json!({"type": "AdjustGoal", "data": {"goal_id": "g2", "title": "New", "reason": "r", "in_response_to_checkin": "c1"}}))
        => "unknown_checkin", Conflict, Some("data.in_response_to_checkin");
    adjust_closed_goal_is_rejected: ruled(),
        cmd(json!({"type": "AdjustGoal", "data": {"goal_id": "gc", "title": "New", "reason": "r"}}))
        => "goal_closed", Conflict, Some("data.goal_id");
    set_baseline_with_duplicate_label_is_rejected: ruled(),
        cmd(json!({"type": "SetBaseline", "data": {"label": "b1"}}))
        => "baseline_exists", Conflict, Some("data.label");
    set_baseline_with_invalid_label_is_rejected: ruled(),
        cmd(json!({"type": "SetBaseline", "data": {"label": "Q1 plan"}}))
        => "invalid_id", Invalid, Some("data.label");
    close_closed_goal_is_rejected: ruled(),
        cmd(json!({"type": "CloseGoal", "data": {"goal_id": "gc", "outcome": "missed"}}))
        => "goal_closed", Conflict, Some("data.goal_id");
    close_unknown_goal_is_rejected: ruled(),
        cmd(json!({"type": "CloseGoal", "data": {"goal_id": "nope", "outcome": "missed"}}))
        => "unknown_goal", Conflict, Some("data.goal_id");
    command_on_archived_plan_is_rejected: archived(),
        cmd(json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "confidence": 0.5}}))
        => "plan_archived", Conflict, None;
    archiving_an_archived_plan_is_rejected: archived(),
        cmd(json!({"type": "ArchivePlan", "data": {}}))
        => "plan_archived", Conflict, None;
}

#[test]
fn due_outside_horizon_message_names_field_value_and_rule() {
    let error = ruled()
        .attempt(
            NOW,
            json!({"type": "DefineGoal", "data": {"goal_id": "g9", "title": "t", "due": "2027-03-01"}}),
        )
        .expect_err("rejected");
    assert_eq!(
        error.to_string(),
        "data.due 2027-03-01 is after the plan's end 2026-12-31; choose a date inside the horizon 2026-01-01..2026-12-31"
    );
}

#[test]
fn second_accountable_message_names_the_current_holder() {
    let error = ruled()
        .attempt(
            NOW,
            json!({"type": "AssignRole", "data": {"person": "bob", "role": "accountable", "goal_id": "g1"}}),
        )
        .expect_err("rejected");
    assert!(error.to_string().contains("\"alice\""), "{error}");
}

#[test]
fn accountable_can_be_replaced_after_revoking() {
    let mut scenario = ruled();
    scenario.run(
        NOW,
        json!({"type": "RevokeRole", "data": {"person": "alice", "role": "accountable", "goal_id": "g1"}}),
    );
    scenario.run(
        NOW,
        json!({"type": "AssignRole", "data": {"person": "bob", "role": "accountable", "goal_id": "g1"}}),
    );
    let holders: Vec<&str> = scenario
        .plan
        .roles
        .iter()
        .map(|r| r.person.as_str())
        .collect();
    assert_eq!(holders, vec!["bob"]);
}

#[test]
fn several_responsible_people_are_allowed_on_one_goal() {
    let scenario =
        ruled()
            .role(NOW, "bob", "responsible", "g1")
            .role(NOW, "carol", "responsible", "g1");
    assert_eq!(scenario.plan.roles.len(), 3);
}

#[test]
fn check_in_without_id_gets_the_next_derived_id() {
    let mut scenario = ruled();
    let events = scenario.run(
        NOW,
        json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "confidence": 0.5}}),
    );
    let planledger_domain::Event::CheckInRecorded(recorded) = &events[0] else {
        panic!("expected CheckInRecorded, got {events:?}");
    };
    assert_eq!(recorded.checkin_id, "c2");
    assert_eq!(recorded.effective_on, day("2026-02-01"));
}

#[test]
fn derived_check_in_id_skips_ids_taken_by_clients() {
    let mut scenario = ruled().with(
        NOW,
        json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "checkin_id": "c3", "confidence": 0.5}}),
    );
    let events = scenario.run(
        NOW,
        json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "confidence": 0.5}}),
    );
    let planledger_domain::Event::CheckInRecorded(recorded) = &events[0] else {
        panic!("expected CheckInRecorded");
    };
    assert_eq!(recorded.checkin_id, "c4");
}

#[test]
fn check_in_ids_are_found_across_goals_and_in_a_plan_read_back_from_json() {
    let scenario = ruled().with(
        NOW,
        json!({"type": "RecordCheckIn", "data": {"goal_id": "g2", "checkin_id": "x1", "confidence": 0.4}}),
    );
    // A snapshot is the plan's JSON form; the check-in index is rebuilt from its goals.
    let text = serde_json::to_string(&scenario.plan).expect("plan serializes");
    let back: planledger_domain::Plan = serde_json::from_str(&text).expect("plan parses");
    for plan in [&scenario.plan, &back] {
        let found = |id: &str| {
            plan.check_in(id)
                .map(|(goal, check_in)| (goal.goal_id.as_str().to_string(), check_in.confidence))
        };
        assert_eq!(found("c1"), Some(("g1".to_string(), 0.7)));
        assert_eq!(found("x1"), Some(("g2".to_string(), 0.4)));
        assert_eq!(found("c2"), None);
        let error = decide(
            plan,
            &cmd(json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "checkin_id": "x1", "confidence": 0.5}})),
            ts(NOW),
        )
        .expect_err("x1 is taken on another goal");
        assert_eq!(error.code(), "checkin_exists");
        assert_eq!(plan.next_checkin_id(), "c3");
    }
}

#[test]
fn a_redefined_goal_drops_its_check_ins_from_the_index() {
    let mut scenario = Scenario::year_2026();
    let defined = scenario.run(
        "2026-01-02",
        json!({"type": "DefineGoal", "data": {"goal_id": "g9", "title": "G", "due": "2026-06-30"}}),
    );
    for id in ["a", "b"] {
        scenario.run(
            "2026-01-03",
            json!({"type": "RecordCheckIn", "data": {"goal_id": "g9", "checkin_id": id, "confidence": 0.5}}),
        );
    }
    assert!(scenario.plan.check_in("b").is_some());
    // `decide` never defines a goal twice; `evolve` applies it anyway (a hand-written log).
    scenario.plan = planledger_domain::evolve(scenario.plan.clone(), &defined[0]);
    assert!(scenario.plan.check_in("a").is_none());
    assert!(scenario.plan.check_in("b").is_none());
    scenario.run(
        "2026-01-04",
        json!({"type": "RecordCheckIn", "data": {"goal_id": "g9", "checkin_id": "b", "confidence": 0.6}}),
    );
    let (goal, check_in) = scenario.plan.check_in("b").expect("b is recorded again");
    assert_eq!((goal.goal_id.as_str(), check_in.confidence), ("g9", 0.6));
}

#[test]
fn late_check_in_keeps_effective_day_and_recording_time_apart() {
    let scenario = ruled().with(
        NOW,
        json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "value": 20, "confidence": 0.6, "effective_on": "2026-01-20"}}),
    );
    let check_in = scenario.plan.goals[&GoalId::new("g1").expect("id")]
        .check_ins
        .last()
        .cloned()
        .expect("recorded");
    assert_eq!(check_in.effective_on, day("2026-01-20"));
    assert_eq!(check_in.recorded_at, ts(NOW));
}

#[test]
fn adjust_goal_records_before_after_kinds_reason_and_check_in() {
    let mut scenario = ruled();
    let events = scenario.run(
        NOW,
        json!({"type": "AdjustGoal", "data": {"goal_id": "g1", "target": 80, "due": "2026-07-31",
            "title": "Goal g1", "reason": "market shrank", "in_response_to_checkin": "c1"}}),
    );
    let data = events[0].to_data();
    assert_eq!(data["target"], json!({"before": 100.0, "after": 80.0}));
    assert_eq!(
        data["due"],
        json!({"before": "2026-06-30", "after": "2026-07-31"})
    );
    assert_eq!(
        data["title"],
        json!(null),
        "an unchanged title is not a change"
    );
    assert_eq!(data["kinds"], json!(["target", "due"]));
    assert_eq!(data["reason"], json!("market shrank"));
    assert_eq!(data["in_response_to_checkin"], json!("c1"));
    let goal = &scenario.plan.goals[&GoalId::new("g1").expect("id")];
    assert_eq!(goal.kpi.as_ref().map(|k| k.target), Some(80.0));
    assert_eq!(goal.due, day("2026-07-31"));
}

#[test]
fn reopened_step_can_be_completed_again() {
    let scenario = ruled()
        .with(
            NOW,
            json!({"type": "ReopenStep", "data": {"step_id": "s2", "reason": "bug"}}),
        )
        .complete(NOW, "s2");
    let step = &scenario.plan.steps[&planledger_domain::StepId::new("s2").expect("id")];
    assert_eq!(step.completions.len(), 2);
    assert_eq!(step.reopenings.len(), 1);
    assert!(step.is_completed());
}

#[test]
fn baseline_freezes_targets_dues_and_weights() {
    let scenario = ruled();
    let baseline = &scenario.plan.baselines["b1"];
    let g1 = &baseline.goals[&GoalId::new("g1").expect("id")];
    assert_eq!(g1.target, Some(100.0));
    assert_eq!(g1.due, day("2026-06-30"));
    assert_eq!(g1.weight, 1.0);
    assert_eq!(baseline.steps.len(), 3);
    assert_eq!(baseline.sequence, 1);
}

#[test]
fn zero_length_plan_is_accepted() {
    let scenario = Scenario::empty().with(
        "2026-01-01",
        json!({"type": "CreatePlan", "data": {"title": "One day", "starts_on": "2026-03-01", "ends_on": "2026-03-01", "checkin_cadence_days": 1}}),
    );
    assert_eq!(scenario.plan.starts_on, scenario.plan.ends_on);
}

#[test]
fn texts_are_stored_trimmed() {
    let scenario = ruled().with(
        NOW,
        json!({"type": "DefineGoal", "data": {"goal_id": "g9", "title": "  Padded  ", "due": "2026-05-01"}}),
    );
    assert_eq!(
        scenario.plan.goals[&GoalId::new("g9").expect("id")].title,
        "Padded"
    );
}

#[test]
fn every_event_carries_the_decision_time() {
    let scenario = ruled();
    let created = scenario.events.first().expect("events");
    assert_eq!(created.at(), ts("2026-01-01"));
    assert!(scenario.events.windows(2).all(|w| w[0].at() <= w[1].at()));
}
