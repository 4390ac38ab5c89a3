//! Event formats: the stored form, upcasting of every version ever written, and JSON snapshots.

use std::collections::BTreeMap;

use crate::support::{Scenario, day, ts};
use planledger_domain::event::current_version;
use planledger_domain::{Event, UpcastError};
use serde_json::{Value, json};

fn fixture() -> Vec<Value> {
    let text = include_str!("../fixtures/events.json");
    serde_json::from_str(text).expect("the fixture is valid JSON")
}

fn stored(entry: &Value) -> (String, u32, Value) {
    let event_type = entry["type"].as_str().expect("type").to_owned();
    let version = entry["schema_version"].as_u64().expect("schema_version");
    let version = u32::try_from(version).expect("small version");
    (event_type, version, entry["data"].clone())
}

#[test]
fn every_event_version_ever_written_reads_into_the_current_shape() {
    for entry in fixture() {
        let (event_type, version, data) = stored(&entry);
        let text = data.to_string();
        let event = Event::from_stored(&event_type, version, data)
            .unwrap_or_else(|e| panic!("{event_type} v{version}: {e}"));
        assert_eq!(event.event_type(), event_type);
        // From the stored text: the same event, current version or not.
        let from_text = Event::from_stored_json(&event_type, version, &text)
            .unwrap_or_else(|e| panic!("{event_type} v{version} from text: {e}"));
        assert_eq!(from_text, event);
        // Upcast events written again in the current version read back identically.
        let again = Event::from_stored(event.event_type(), event.schema_version(), event.to_data())
            .expect("current version reads back");
        assert_eq!(again, event);
    }
}

#[test]
fn fixture_holds_every_version_of_every_event_type() {
    let mut seen: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for entry in fixture() {
        let (event_type, version, _) = stored(&entry);
        seen.entry(event_type).or_default().push(version);
    }
    for (event_type, current) in Event::TYPES {
        let versions = seen.get(event_type).cloned().unwrap_or_default();
        for version in 1..=current {
            assert!(
                versions.contains(&version),
                "fixture lacks {event_type} v{version}"
            );
        }
    }
}

#[test]
fn check_in_v1_upcasts_with_effective_day_of_recording_and_no_blockers() {
    let entry = &fixture()[5];
    let (event_type, version, data) = stored(entry);
    assert_eq!((event_type.as_str(), version), ("CheckInRecorded", 1));
    let Event::CheckInRecorded(check_in) =
        Event::from_stored(&event_type, version, data).expect("upcasts")
    else {
        panic!("wrong type");
    };
    assert_eq!(check_in.effective_on, day("2026-01-10"));
    assert!(check_in.blockers.is_empty());
    assert_eq!(check_in.at, ts("2026-01-10T23:30:00Z"));
}

#[test]
fn goal_adjusted_v1_upcasts_with_kinds_derived_from_changed_fields() {
    let entry = &fixture()[9];
    let (event_type, version, data) = stored(entry);
    assert_eq!((event_type.as_str(), version), ("GoalAdjusted", 1));
    let event = Event::from_stored(&event_type, version, data).expect("upcasts");
    assert_eq!(event.to_data()["kinds"], json!(["target", "scope"]));
}

#[test]
fn unknown_event_type_is_refused() {
    let error = Event::from_stored("GoalDeleted", 1, json!({})).expect_err("refused");
    assert!(matches!(
        Event::from_stored_json("GoalDeleted", 1, "{}"),
        Err(UpcastError::UnknownType { .. })
    ));
    assert!(matches!(
        Event::from_stored_json("CheckInRecorded", 3, "{}"),
        Err(UpcastError::UnknownVersion { .. })
    ));
    assert!(matches!(
        Event::from_stored_json("StepCompleted", 1, r#"{"step_id": 5}"#),
        Err(UpcastError::Malformed { .. })
    ));
    assert!(matches!(error, UpcastError::UnknownType { .. }));
}

#[test]
fn future_schema_version_is_refused() {
    let error = Event::from_stored("CheckInRecorded", 3, json!({})).expect_err("refused");
    assert!(matches!(
        error,
        UpcastError::UnknownVersion { current: 2, .. }
    ));
}

#[test]
fn malformed_payload_is_refused_with_the_parse_error() {
    let error = Event::from_stored("StepCompleted", 1, json!({"step_id": 5})).expect_err("refused");
    assert!(matches!(error, UpcastError::Malformed { .. }), "{error}");
}

#[test]
fn schema_versions_match_the_type_table() {
    for (event_type, version) in Event::TYPES {
        assert_eq!(current_version(event_type), Some(version));
    }
    assert_eq!(current_version("Nope"), None);
}

/// A scenario that produces at least one event of every type.
fn every_event() -> Vec<Event> {
    let mut s = Scenario::year_2026()
        .with(
            "2026-01-02",
            json!({"type": "DefineGoal", "data": {"goal_id": "g1", "title": "Reach 100 customers",
                "aligns_to": {"plan_id": "company", "goal_id": "growth"},
                "kpi": {"unit": "customers", "baseline": 0, "target": 100, "direction": "increase"},
                "due": "2026-06-30", "weight": 2}}),
        )
        .with(
            "2026-01-03",
            json!({"type": "AddStep", "data": {"step_id": "s1", "goal_id": "g1", "title": "Launch the landing page", "due": "2026-02-15", "estimate_days": 3}}),
        )
        .role("2026-01-03", "alice", "accountable", "g1")
        .with(
            "2026-01-04",
            json!({"type": "RevokeRole", "data": {"person": "alice", "role": "accountable", "goal_id": "g1"}}),
        )
        .baseline("2026-01-05", "q1")
        .with(
            "2026-01-17",
            json!({"type": "RecordCheckIn", "data": {"goal_id": "g1", "value": 20, "confidence": 0.6, "status": "at_risk",
                "effective_on": "2026-01-15", "blockers": ["no budget"]}}),
        )
        .with(
            "2026-01-20",
            json!({"type": "AdjustGoal", "data": {"goal_id": "g1", "target": 80, "reason": "market shrank", "in_response_to_checkin": "c1"}}),
        )
        .complete("2026-02-10", "s1")
        .with(
            "2026-02-11",
            json!({"type": "ReopenStep", "data": {"step_id": "s1", "reason": "broken form"}}),
        )
        .with(
            "2026-06-01",
            json!({"type": "CloseGoal", "data": {"goal_id": "g1", "outcome": "achieved", "note": "done early"}}),
        );
    s.run(
        "2027-01-05",
        json!({"type": "ArchivePlan", "data": {"reason": "year over"}}),
    );
    s.events
}

#[test]
fn scenario_covers_every_event_type() {
    let events = every_event();
    for (event_type, _) in Event::TYPES {
        assert!(
            events.iter().any(|e| e.event_type() == event_type),
            "no {event_type}"
        );
    }
}

#[test]
fn event_json_forms_are_stable() {
    let mut done = Vec::new();
    for event in every_event() {
        let name = event.event_type();
        if done.contains(&name) {
            continue;
        }
        done.push(name);
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(snapshots_dir());
        settings.bind(|| insta::assert_json_snapshot!(name, event));
    }
}

/// This checkout's `tests/snapshots`, found when the test runs. Checkouts share one build
/// directory (docs/decisions/0002), and cargo reuses a test binary that another checkout built
/// from the same sources, with that checkout's paths compiled in: insta's own default would then
/// compare against (and write into) the other checkout's snapshots, or fail if it is gone.
fn snapshots_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("tests/snapshots")
}

#[test]
fn the_stored_payload_text_is_the_payload_json() {
    for event in every_event() {
        let raw = event.to_raw_data();
        let value: Value = serde_json::from_str(raw.get()).expect("stored text is JSON");
        assert_eq!(value, event.to_data(), "{}", event.event_type());
        let back = Event::from_stored(event.event_type(), event.schema_version(), value)
            .expect("reads back");
        assert_eq!(back, event);
    }
}

#[test]
fn tagged_json_round_trips() {
    for event in every_event() {
        let text = serde_json::to_string(&event).expect("serializes");
        let back: Event = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, event);
        let value: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(value["type"], json!(event.event_type()));
        assert_eq!(value["data"], event.to_data());
    }
}
