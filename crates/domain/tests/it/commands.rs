//! Command JSON forms: tagged `{"type", "data"}`, unknown fields refused, ids validated on parse.

use planledger_domain::Command;
use serde_json::json;

#[test]
fn command_parses_from_type_and_data() {
    let command: Command = serde_json::from_value(json!({"type": "AssignRole",
        "data": {"person": "alice", "role": "accountable", "goal_id": "g1"}}))
    .expect("parses");
    assert_eq!(command.name(), "AssignRole");
}

#[test]
fn command_with_unknown_field_does_not_parse() {
    let parsed = serde_json::from_value::<Command>(json!({"type": "CompleteStep",
        "data": {"step_id": "s1", "actor": "mallory"}}));
    assert!(parsed.is_err());
}

#[test]
fn command_with_invalid_id_does_not_parse() {
    let parsed = serde_json::from_value::<Command>(json!({"type": "CompleteStep",
        "data": {"step_id": "s/1"}}));
    let error = parsed.expect_err("refused");
    assert!(error.to_string().contains("step_id"), "{error}");
}

#[test]
fn unknown_command_type_does_not_parse() {
    let parsed = serde_json::from_value::<Command>(json!({"type": "DeletePlan", "data": {}}));
    assert!(parsed.is_err());
}

#[test]
fn archive_plan_takes_an_empty_object() {
    let command: Command =
        serde_json::from_value(json!({"type": "ArchivePlan", "data": {}})).expect("parses");
    assert_eq!(command.name(), "ArchivePlan");
}

#[test]
fn every_command_name_round_trips_through_json() {
    let samples = [
        json!({"type": "CreatePlan", "data": {"title": "t", "starts_on": "2026-01-01", "ends_on": "2026-12-31", "checkin_cadence_days": 7}}),
        json!({"type": "DefineGoal", "data": {"goal_id": "g1", "title": "t", "due": "2026-05-01"}}),
        json!({"type": "AddStep", "data": {"step_id": "s1", "goal_id": "g1", "title": "t", "due": "2026-05-01"}}),
        json!({"type": "AssignRole", "data": {"person": "a", "role": "responsible"}}),
        json!({"type": "RevokeRole", "data": {"person": "a", "role": "responsible"}}),
        json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "confidence": 0.5}}),
        json!({"type": "CompleteStep", "data": {"step_id": "s1"}}),
        json!({"type": "ReopenStep", "data": {"step_id": "s1"}}),
        json!({"type": "AdjustGoal", "data": {"goal_id": "g1", "title": "u", "reason": "r"}}),
        json!({"type": "SetBaseline", "data": {"label": "b1"}}),
        json!({"type": "CloseGoal", "data": {"goal_id": "g1", "outcome": "dropped"}}),
        json!({"type": "ArchivePlan", "data": {}}),
    ];
    for (sample, name) in samples.iter().zip(Command::NAMES) {
        let command: Command = serde_json::from_value(sample.clone()).expect("parses");
        assert_eq!(command.name(), name);
        let back = serde_json::to_value(&command).expect("serializes");
        assert_eq!(&back, sample);
    }
}
