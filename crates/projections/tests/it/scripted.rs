//! A scripted plan — goals with KPIs, steps, roles, check-ins over several simulated weeks, an
//! adjustment, a closed goal — appended to a real log, projected by the real runtime, and every
//! read-model figure checked against values computed by hand (the arithmetic is in the comments).
//!
//! Calendar (D0 = 2026-03-02, the plan start; all goals start on D0):
//! signups KPI 100 -> 500 (increase), due 2026-04-11 = D0+40, weight 2; target lowered to 400 on D0+15
//! churn   KPI 10 -> 4 (decrease),    due 2026-03-22 = D0+20, weight 1; closed `missed` on D0+21
//! docs    no KPI, steps s1 (due D0+7), s2 (D0+14), s3 (D0+21), s4 (D0+28, added after the baseline)
//! Evaluated at now = 2026-03-26T12:00Z, so today = D0+24.

use std::sync::Arc;

use crate::support::{self, *};
use planledger_domain::metrics::RollUp;
use planledger_domain::{PersonId, PlanId};
use planledger_projections::accountability::{person_prefix, person_view};
use planledger_projections::agility::agility_view;
use planledger_projections::progress::{drift_view, progress_view};
use planledger_projections::{
    AccountabilityProjector, AgilityProjector, LocalLogSource, ProgressProjector, Projector,
    ReadModelDb, spawn,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NOW: &str = "2026-03-26T12:00:00Z";
const EPS: f64 = 1e-9;

fn script() -> Script {
    let mut s = Script::new("acme", "launch");
    s.run("2026-03-02T09:00:00Z", json!({"type": "CreatePlan", "data": {
        "plan_id": "launch", "title": "Spring launch", "starts_on": "2026-03-02",
        "ends_on": "2026-04-26", "checkin_cadence_days": 7, "checkin_grace_days": 2}}))
    .run("2026-03-02T09:01:00Z", json!({"type": "DefineGoal", "data": {
        "goal_id": "signups", "title": "Signups", "due": "2026-04-11", "weight": 2.0,
        "kpi": {"unit": "users", "baseline": 100.0, "target": 500.0, "direction": "increase"}}}))
    .run("2026-03-02T09:02:00Z", json!({"type": "DefineGoal", "data": {
        "goal_id": "churn", "title": "Churn", "due": "2026-03-22",
        "kpi": {"unit": "pct", "baseline": 10.0, "target": 4.0, "direction": "decrease"}}}))
    .run("2026-03-02T09:03:00Z", json!({"type": "DefineGoal", "data": {
        "goal_id": "docs", "title": "Docs", "due": "2026-04-01"}}))
    .run("2026-03-02T09:04:00Z", json!({"type": "AddStep", "data": {
        "step_id": "s1", "goal_id": "docs", "title": "Outline", "due": "2026-03-09"}}))
    .run("2026-03-02T09:05:00Z", json!({"type": "AddStep", "data": {
        "step_id": "s2", "goal_id": "docs", "title": "Draft", "due": "2026-03-16"}}))
    .run("2026-03-02T09:06:00Z", json!({"type": "AddStep", "data": {
        "step_id": "s3", "goal_id": "docs", "title": "Review", "due": "2026-03-23"}}))
    .run("2026-03-02T09:07:00Z", json!({"type": "AssignRole", "data": {
        "person": "alice", "role": "accountable", "goal_id": "signups"}}))
    .run("2026-03-02T09:08:00Z", json!({"type": "AssignRole", "data": {
        "person": "alice", "role": "responsible", "goal_id": "docs"}}))
    .run("2026-03-02T09:09:00Z", json!({"type": "AssignRole", "data": {
        "person": "bob", "role": "accountable", "goal_id": "churn"}}))
    .run("2026-03-02T09:10:00Z", json!({"type": "AssignRole", "data": {
        "person": "bob", "role": "responsible", "goal_id": "churn"}}))
    .run("2026-03-02T09:11:00Z", json!({"type": "AssignRole", "data": {
        "person": "carol", "role": "informed"}}))
    .run("2026-03-02T09:12:00Z", json!({"type": "AssignRole", "data": {
        "person": "dave", "role": "consulted", "goal_id": "signups"}}))
    .run("2026-03-02T10:00:00Z", json!({"type": "SetBaseline", "data": {"label": "v1"}}))
    .run("2026-03-08T10:00:00Z", json!({"type": "RecordCheckIn", "data": {
        "goal_id": "signups", "checkin_id": "c1", "value": 140.0, "confidence": 0.8, "status": "on_track"}}))
    .run("2026-03-08T15:00:00Z", json!({"type": "CompleteStep", "data": {"step_id": "s1"}}))
    .run("2026-03-09T10:00:00Z", json!({"type": "RecordCheckIn", "data": {
        "goal_id": "churn", "checkin_id": "c4", "value": 9.0, "confidence": 0.5, "status": "off_track",
        "blockers": ["vendor contract"]}}))
    .run("2026-03-10T09:00:00Z", json!({"type": "RevokeRole", "data": {
        "person": "dave", "role": "consulted", "goal_id": "signups"}}))
    .run("2026-03-11T12:00:00Z", json!({"type": "RecordCheckIn", "data": {
        "goal_id": "docs", "checkin_id": "c6", "confidence": 0.9, "status": "at_risk"}}))
    .run("2026-03-15T10:00:00Z", json!({"type": "RecordCheckIn", "data": {
        "goal_id": "signups", "checkin_id": "c2", "value": 180.0, "confidence": 0.6, "status": "at_risk"}}))
    .run("2026-03-17T10:00:00Z", json!({"type": "AdjustGoal", "data": {
        "goal_id": "signups", "target": 400.0, "reason": "the market is smaller",
        "in_response_to_checkin": "c2"}}))
    .run("2026-03-18T15:00:00Z", json!({"type": "CompleteStep", "data": {"step_id": "s2"}}))
    .run("2026-03-19T09:00:00Z", json!({"type": "AddStep", "data": {
        "step_id": "s4", "goal_id": "docs", "title": "Publish", "due": "2026-03-30"}}))
    .run("2026-03-20T10:00:00Z", json!({"type": "RecordCheckIn", "data": {
        "goal_id": "churn", "checkin_id": "c5", "value": 7.0, "confidence": 0.4, "status": "off_track",
        "blockers": ["vendor contract", "staffing"]}}))
    .run("2026-03-23T10:00:00Z", json!({"type": "CloseGoal", "data": {
        "goal_id": "churn", "outcome": "missed"}}))
    .run("2026-03-24T10:00:00Z", json!({"type": "RecordCheckIn", "data": {
        "goal_id": "signups", "checkin_id": "c3", "value": 220.0, "confidence": 0.7, "status": "on_track"}}))
    .run("2026-03-25T12:00:00Z", json!({"type": "RecordCheckIn", "data": {
        "goal_id": "docs", "checkin_id": "c7", "confidence": 0.5, "status": "off_track",
        "blockers": ["no writer"]}}));
    s
}

/// A noisy neighbour in another tenant, interleaved with the scripted plan.
fn neighbour() -> Script {
    let mut s = Script::new("globex", "launch");
    s.run(
        "2026-03-02T09:00:00Z",
        json!({"type": "CreatePlan", "data": {
        "plan_id": "launch", "title": "Other tenant", "starts_on": "2026-03-02",
        "ends_on": "2026-04-26", "checkin_cadence_days": 7}}),
    )
    .run(
        "2026-03-02T09:30:00Z",
        json!({"type": "DefineGoal", "data": {
        "goal_id": "signups", "title": "Theirs", "due": "2026-04-11",
        "kpi": {"unit": "users", "baseline": 0.0, "target": 10.0, "direction": "increase"}}}),
    )
    .run(
        "2026-03-02T09:31:00Z",
        json!({"type": "AssignRole", "data": {
        "person": "alice", "role": "accountable", "goal_id": "signups"}}),
    )
    .run(
        "2026-03-20T10:00:00Z",
        json!({"type": "RecordCheckIn", "data": {
        "goal_id": "signups", "value": 10.0, "confidence": 1.0, "status": "on_track"}}),
    );
    s
}

/// Projects the scripted history into the three read models and returns their databases.
async fn project() -> (tempfile::TempDir, Vec<ReadModelDb>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path());
    let (ours, theirs) = (script(), neighbour());
    append_scripts(&store, &[&ours, &theirs]).await;
    let last = store.last_position().get();
    let shutdown = CancellationToken::new();
    let projectors: Vec<Arc<dyn Projector>> = vec![
        Arc::new(ProgressProjector),
        Arc::new(AccountabilityProjector),
        Arc::new(AgilityProjector),
    ];
    let mut dbs = Vec::new();
    let mut tasks = Vec::new();
    for projector in projectors {
        let name = projector.name();
        let db = ReadModelDb::open(dir.path().join(name), name).expect("open read model");
        let (handle, task) = spawn(
            projector,
            db.clone(),
            LocalLogSource::new(store.clone()),
            small_batches(),
            shutdown.clone(),
        )
        .expect("spawn projector");
        caught_up(&handle, last).await;
        dbs.push(db);
        tasks.push(task);
    }
    shutdown.cancel();
    for task in tasks {
        task.await
            .expect("projector task")
            .expect("projector ends cleanly");
    }
    (dir, dbs)
}

fn num(value: &Value, path: &str) -> f64 {
    let mut current = value;
    for part in path.split('.') {
        current = match part.parse::<usize>() {
            Ok(index) => &current[index],
            Err(_) => &current[part],
        };
    }
    current
        .as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {current}"))
}

fn at_path<'a>(value: &'a Value, path: &str) -> &'a Value {
    let mut current = value;
    for part in path.split('.') {
        current = match part.parse::<usize>() {
            Ok(index) => &current[index],
            Err(_) => &current[part],
        };
    }
    current
}

#[track_caller]
fn close(value: &Value, path: &str, expected: f64) {
    let got = num(value, path);
    assert!(
        (got - expected).abs() < EPS,
        "{path}: expected {expected}, got {got}"
    );
}

#[track_caller]
fn is(value: &Value, path: &str, expected: Value) {
    assert_eq!(at_path(value, path), &expected, "{path}");
}

fn row<'a>(value: &'a Value, list: &str, key: &str, id: &str) -> &'a Value {
    value[list]
        .as_array()
        .unwrap_or_else(|| panic!("{list} is not a list"))
        .iter()
        .find(|r| r[key] == id)
        .unwrap_or_else(|| panic!("no {list} row with {key} = {id}"))
}

fn plan_from(db: &ReadModelDb, stream: &str) -> planledger_domain::Plan {
    db.view()
        .expect("view")
        .plan(stream)
        .expect("read plan")
        .expect("the plan is in the read model")
}

fn plan_id() -> PlanId {
    PlanId::new("launch").expect("valid id")
}

#[tokio::test]
async fn scripted_plan_progress_matches_hand_computed_figures() {
    let (_dir, dbs) = project().await;
    let plan = plan_from(&dbs[0], "acme/launch");
    let view = progress_view(
        &plan,
        &plan_id(),
        support::at(NOW),
        RollUp::Weighted,
        None,
        None,
    )
    .expect("progress");
    let v = serde_json::to_value(&view).expect("json");

    // signups: p = (220-100)/(400-100) = 0.4; e = 24/40 = 0.6; p/e = 0.667 -> off_track.
    let g = row(&v, "goals", "goal_id", "signups");
    close(g, "progress", 0.4);
    close(g, "expected_progress", 0.6);
    is(g, "status", json!("off_track"));
    is(g, "reported_status", json!("on_track"));
    is(g, "status_mismatch", json!("optimistic"));
    close(g, "spi", 0.4 / 0.6);
    // Against the baseline target 500: (220-100)/400 = 0.3; goalpost effect 0.4 - 0.3.
    close(g, "progress_vs_baseline", 0.3);
    close(g, "goalpost_effect", 0.1);
    // Earned schedule 0.4 * 40 = 16 days after 24 actual: SPI(t) 16/24, slip 8 days.
    close(g, "earned_schedule_days", 16.0);
    close(g, "spi_t", 16.0 / 24.0);
    close(g, "schedule_slip_days", 8.0);
    close(g, "current_value", 220.0);
    close(g, "target", 400.0);
    close(g, "baseline_target", 500.0);
    close(g, "weight", 2.0);
    is(g, "measured_by", json!("kpi"));
    is(g, "last_check_in.checkin_id", json!("c3"));
    close(g, "confidence", 0.7);
    close(g, "confidence_trend", 0.1);

    // churn: p = (7-10)/(4-10) = 0.5; due passed, e = 1; closed -> no computed status.
    let g = row(&v, "goals", "goal_id", "churn");
    close(g, "progress", 0.5);
    close(g, "expected_progress", 1.0);
    is(g, "status", Value::Null);
    is(g, "reported_status", json!("off_track"));
    is(g, "outcome", json!("missed"));
    close(g, "spi", 0.5);
    close(g, "goalpost_effect", 0.0);
    close(g, "earned_schedule_days", 10.0);
    close(g, "schedule_slip_days", 14.0);
    close(g, "confidence_trend", -0.1);

    // docs: 2 of 4 steps done = 0.5; e = 24/30 = 0.8; p/e = 0.625 -> off_track;
    // against the baseline's 3 steps: 2/3, so the added step cost 1/6 (goalpost -1/6).
    let g = row(&v, "goals", "goal_id", "docs");
    close(g, "progress", 0.5);
    close(g, "expected_progress", 0.8);
    is(g, "status", json!("off_track"));
    is(g, "reported_status", json!("off_track"));
    is(g, "status_mismatch", json!("aligned"));
    close(g, "progress_vs_baseline", 2.0 / 3.0);
    close(g, "goalpost_effect", 0.5 - 2.0 / 3.0);
    is(g, "measured_by", json!("steps"));
    is(g, "steps_total", json!(4));
    is(g, "steps_completed", json!(2));
    close(g, "confidence_trend", -0.4);

    // Plan: EV = 2*0.4 + 0.5 + 0.5 = 1.8; PV = 2*0.6 + 1 + 0.8 = 3.0; sum w = 4.
    close(&v, "progress", 0.45);
    close(&v, "expected_progress", 0.75);
    is(&v, "status", json!("off_track"));
    close(&v, "ev", 1.8);
    close(&v, "pv", 3.0);
    close(&v, "spi", 0.6);
    // Baseline: (2*0.3 + 0.5 + 2/3) / 4.
    close(&v, "progress_vs_baseline", (0.6 + 0.5 + 2.0 / 3.0) / 4.0);
    close(&v, "goalpost_effect", 0.45 - (0.6 + 0.5 + 2.0 / 3.0) / 4.0);
    // PV(k) = 2k/15 for k <= 20: PV(13) = 1.733, PV(14) = 1.867; ES = 13.5 days.
    close(&v, "earned_schedule_days", 13.5);
    is(&v, "actual_time_days", json!(24));
    close(&v, "spi_t", 13.5 / 24.0);
    close(&v, "schedule_slip_days", 10.5);
    is(&v, "plan_id", json!("launch"));
    is(&v, "baseline_label", json!("v1"));

    // Momentum: weeks [D0,D0+7) 1 check-in + 1 completion, [D0+7,D0+14) 3 + 0,
    // [D0+14,D0+21) 1 + 1, 3 active goals each: rate 7/9; fewer than 8 weeks -> no ratio.
    close(&v, "momentum.rate", 7.0 / 9.0);
    is(&v, "momentum.momentum", Value::Null);
    close(&v, "momentum.weeks.1.per_active_goal", 1.0);
}

#[tokio::test]
async fn scripted_plan_progress_under_the_equal_rule() {
    let (_dir, dbs) = project().await;
    let plan = plan_from(&dbs[0], "acme/launch");
    let view = progress_view(
        &plan,
        &plan_id(),
        support::at(NOW),
        RollUp::Equal,
        None,
        None,
    )
    .expect("progress");
    let v = serde_json::to_value(&view).expect("json");
    // Every weight 1: EV = 0.4 + 0.5 + 0.5 = 1.4, PV = 0.6 + 1 + 0.8 = 2.4, sum w = 3.
    close(&v, "progress", 1.4 / 3.0);
    close(&v, "expected_progress", 0.8);
    close(&v, "spi", 1.4 / 2.4);
    close(&v, "progress_vs_baseline", (0.3 + 0.5 + 2.0 / 3.0) / 3.0);
    is(&v, "roll_up", json!("equal"));
    close(row(&v, "goals", "goal_id", "signups"), "weight", 1.0);
}

#[tokio::test]
async fn scripted_plan_accountability_matches_hand_computed_figures() {
    let (_dir, dbs) = project().await;
    let plan = plan_from(&dbs[1], "acme/launch");
    let report = planledger_projections::accountability::accountability_view(
        &plan,
        &plan_id(),
        support::at(NOW),
    );
    let v = serde_json::to_value(&report).expect("json");

    // Slots of 7 days with 2 days' grace; at D0+24 slots ending D0+7, D0+14, D0+21 are due;
    // slot k takes the first unused check-in recorded in [7k, 7k+9).
    // signups check-ins on D0+6, D0+13, D0+22: 3 of 3. churn (closed D0+21): D0+7 fills the
    // first window, none is left for [7,16), D0+18 fills [14,23): 2 of 3. docs: D0+9 misses
    // [0,9) and fills [7,16); D0+23 misses [14,23): 1 of 3. Plan: 6 of 9.
    close(&v, "punctuality", 6.0 / 9.0);
    is(&v, "slots_due", json!(9));
    is(&v, "slots_on_time", json!(6));
    // Open goals: signups last heard 2026-03-24T10:00 (2 d 2 h ago), docs 1 d ago.
    close(&v, "staleness_days", 2.0 + 2.0 / 24.0);
    // Steps due before D0+24: s1 (done D0+6, on time), s2 (done D0+16, late), s3 (open).
    close(&v, "say_do_ratio", 1.0 / 3.0);
    is(&v, "steps_due", json!(3));
    is(&v, "overdue_steps", json!(1));
    is(&v, "overdue.0.step_id", json!("s3"));
    is(&v, "overdue.0.days_overdue", json!(3));
    // Open goals signups (alice accountable) and docs (nobody): 1 of 2.
    close(&v, "ownership_coverage", 0.5);
    is(&v, "goals_without_accountable", json!(["docs"]));
    // Latest docs check-in names one blocker; churn's blockers are closed with it.
    is(&v, "open_blockers", json!(1));
    is(&v, "blockers.0.blocker", json!("no writer"));
    // churn missed (o = 0) with last confidence 0.4: (0.4 - 0)^2.
    close(&v, "brier_score", 0.16);
    is(&v, "brier_goals", json!(1));

    let g = row(&v, "goals", "goal_id", "docs");
    close(g, "punctuality", 1.0 / 3.0);
    close(g, "staleness_days", 1.0);
    close(g, "say_do_ratio", 1.0 / 3.0);
    is(g, "overdue_steps", json!(1));
    is(g, "open_blockers", json!(1));
    is(g, "accountable", Value::Null);
    is(g, "responsible", json!(["alice"]));
    let g = row(&v, "goals", "goal_id", "churn");
    is(g, "staleness_days", Value::Null);
    close(g, "punctuality", 2.0 / 3.0);
    is(g, "say_do_ratio", Value::Null);

    // People with a role now (dave's was revoked): alice, bob, carol.
    let people: Vec<&str> = v["people"]
        .as_array()
        .expect("people")
        .iter()
        .filter_map(|p| p["person"].as_str())
        .collect();
    assert_eq!(people, ["alice", "bob", "carol"]);
    // alice owns signups (3/3) and docs (1/3) and, through docs, s1..s4.
    let alice = row(&v, "people", "person", "alice");
    close(alice, "punctuality", 4.0 / 6.0);
    close(alice, "say_do_ratio", 1.0 / 3.0);
    is(alice, "overdue_steps", json!(1));
    close(alice, "ownership_coverage", 0.5);
    is(alice, "open_blockers", json!(1));
    close(alice, "staleness_days", 2.0 + 2.0 / 24.0);
    is(alice, "brier_score", Value::Null);
    let bob = row(&v, "people", "person", "bob");
    close(bob, "punctuality", 2.0 / 3.0);
    close(bob, "brier_score", 0.16);
    is(bob, "ownership_coverage", Value::Null);
    is(bob, "say_do_ratio", Value::Null);
    let carol = row(&v, "people", "person", "carol");
    is(carol, "punctuality", Value::Null);
    is(carol, "roles.0.role", json!("informed"));
}

#[tokio::test]
async fn person_index_follows_role_assignments_and_tenants() {
    let (_dir, dbs) = project().await;
    let view = dbs[1].view().expect("view");
    let plans_of = |tenant: &str, person: &str| -> Vec<String> {
        view.index_suffixes(&person_prefix(tenant, person))
            .expect("scan")
            .into_iter()
            .map(|s| String::from_utf8(s).expect("utf-8"))
            .collect()
    };
    assert_eq!(plans_of("acme", "alice"), ["launch"]);
    assert_eq!(plans_of("globex", "alice"), ["launch"]);
    assert_eq!(plans_of("acme", "bob"), ["launch"]);
    assert!(
        plans_of("acme", "dave").is_empty(),
        "a revoked role leaves the index"
    );
    assert!(plans_of("globex", "bob").is_empty());

    let plan = view.plan("acme/launch").expect("read").expect("plan");
    let alice = PersonId::new("alice").expect("id");
    let person = person_view(&alice, &[(plan_id(), plan)], support::at(NOW));
    let v = serde_json::to_value(&person).expect("json");
    is(&v, "plans.0.plan_id", json!("launch"));
    close(&v, "totals.punctuality", 4.0 / 6.0);
    close(&v, "totals.say_do_ratio", 1.0 / 3.0);
    is(&v, "totals.overdue_steps", json!(1));
}

#[tokio::test]
async fn scripted_plan_agility_matches_hand_computed_figures() {
    let (_dir, dbs) = project().await;
    let plan = plan_from(&dbs[2], "acme/launch");
    let v = serde_json::to_value(agility_view(&plan, &plan_id(), support::at(NOW))).expect("json");

    // One target change (signups) and one step added after the baseline (docs, scope).
    is(
        &v,
        "adjustments",
        json!({"target": 1, "due": 0, "scope": 1, "weight": 0, "total": 2}),
    );
    is(&v, "adjustments_in_response_to_check_ins", json!(1));
    // Baseline v1: 3 goals + 3 steps. Added s4, changed signups' target, nothing removed.
    is(&v, "baseline_size", json!(6));
    is(&v, "scope_added", json!(1));
    is(&v, "scope_changed", json!(1));
    is(&v, "scope_removed", json!(0));
    close(&v, "volatility", 2.0 / 6.0);
    // 2 changes over 24 days = 24/7 weeks.
    close(&v, "volatility_per_week", 2.0 / (24.0 / 7.0));
    // Warning -> correction: signups at_risk D0+13 10:00 -> adjusted D0+15 10:00 = 2 d;
    // churn off_track D0+7 10:00 -> closed D0+21 10:00 = 14 d; docs at_risk D0+9 12:00 ->
    // step added D0+17 09:00 = 7.875 d. Median 7.875; all three within 14 days.
    close(&v, "course_correction_latency_days", 7.875);
    close(&v, "corrected_within_14_days", 1.0);
    // Episodes: signups 1, churn 1, docs 2 (the off_track of D0+23 12:00 still open, 1 day).
    is(&v, "signals", json!(4));
    is(&v, "signals_never_acted_on", json!(1));
    is(&v, "unanswered.0.checkin_id", json!("c7"));
    close(&v, "unanswered.0.days_open", 1.0);
    is(&v, "re_baselines", json!(0));

    let g = row(&v, "goals", "goal_id", "signups");
    close(g, "volatility", 1.0);
    close(g, "volatility_per_week", 7.0 / 24.0);
    close(g, "course_correction_latency_days", 2.0);
    let g = row(&v, "goals", "goal_id", "docs");
    // docs: baseline size 1 + 3 steps, one step added.
    close(g, "volatility", 0.25);
    close(g, "course_correction_latency_days", 7.875);
    is(g, "signals", json!(2));
    is(g, "signals_never_acted_on", json!(1));
    let g = row(&v, "goals", "goal_id", "churn");
    close(g, "volatility", 0.0);
    close(g, "course_correction_latency_days", 14.0);
}

#[tokio::test]
async fn scripted_plan_drift_matches_hand_computed_figures() {
    let (_dir, dbs) = project().await;
    let plan = plan_from(&dbs[0], "acme/launch");
    let v =
        serde_json::to_value(drift_view(&plan, &plan_id(), "v1", support::at(NOW)).expect("drift"))
            .expect("json");
    // No due date moved; signups' target went 500 -> 400: (400-500)/|500-100| = -0.25 (bar
    // lowered); churn's did not move: 0. Mean -0.125.
    is(&v, "deadline_slip_days", json!(0));
    close(&v, "target_drift", -0.125);
    let g = row(&v, "goals", "goal_id", "signups");
    close(g, "target_drift", -0.25);
    is(g, "bar_lowered", json!(true));
    is(&v, "scope_added", json!({"goals": [], "steps": ["s4"]}));
    is(&v, "scope_removed", json!({"goals": [], "steps": []}));
    // Weekly points D0, D0+7, D0+14, D0+21 and today (D0+24).
    let gap = v["execution_gap"].as_array().expect("series");
    assert_eq!(gap.len(), 5);
    close(&v, "execution_gap.0.planned", 0.0);
    close(&v, "execution_gap.0.actual", 0.0);
    // D0+14: planned (2*14/40 + 14/20 + 14/30)/4; actual with facts effective by then:
    // signups 180 -> (180-100)/300, churn 9 -> 1/6, docs 1 of 4 steps.
    let planned = (2.0 * 14.0 / 40.0 + 14.0 / 20.0 + 14.0 / 30.0) / 4.0;
    let actual = (2.0 * 80.0 / 300.0 + 1.0 / 6.0 + 0.25) / 4.0;
    close(&v, "execution_gap.2.planned", planned);
    close(&v, "execution_gap.2.actual", actual);
    close(&v, "execution_gap.2.gap", planned - actual);
    close(&v, "execution_gap.4.planned", 0.75);
    close(&v, "execution_gap.4.actual", 0.45);
}

#[tokio::test]
async fn read_models_use_the_json_names_of_the_design() {
    let (_dir, dbs) = project().await;
    let now = support::at(NOW);
    let plan = plan_from(&dbs[0], "acme/launch");
    let progress = serde_json::to_value(
        progress_view(&plan, &plan_id(), now, RollUp::Weighted, None, None).expect("progress"),
    )
    .expect("json");
    for key in [
        "progress",
        "expected_progress",
        "status",
        "spi",
        "goalpost_effect",
        "momentum",
        "plan_id",
    ] {
        assert!(progress.get(key).is_some(), "progress lacks {key}");
    }
    assert!(progress["goals"][0].get("reported_status").is_some());
    assert!(progress["goals"][0].get("goal_id").is_some());
    let accountability = serde_json::to_value(
        planledger_projections::accountability::accountability_view(&plan, &plan_id(), now),
    )
    .expect("json");
    for key in [
        "punctuality",
        "say_do_ratio",
        "overdue_steps",
        "ownership_coverage",
        "open_blockers",
        "staleness_days",
        "brier_score",
    ] {
        assert!(
            accountability.get(key).is_some(),
            "accountability lacks {key}"
        );
    }
    assert!(accountability["people"][0].get("person").is_some());
    assert!(accountability["overdue"][0].get("step_id").is_some());
    let agility = serde_json::to_value(agility_view(&plan, &plan_id(), now)).expect("json");
    for key in [
        "adjustments",
        "volatility_per_week",
        "course_correction_latency_days",
    ] {
        assert!(agility.get(key).is_some(), "agility lacks {key}");
    }
    let drift = serde_json::to_value(drift_view(&plan, &plan_id(), "v1", now).expect("drift"))
        .expect("json");
    for key in ["deadline_slip_days", "target_drift"] {
        assert!(drift.get(key).is_some(), "drift lacks {key}");
    }
}

#[tokio::test]
async fn tenants_do_not_see_each_other() {
    let (_dir, dbs) = project().await;
    let view = dbs[0].view().expect("view");
    let ours = view
        .plan("acme/launch")
        .expect("read")
        .expect("acme's plan");
    let theirs = view
        .plan("globex/launch")
        .expect("read")
        .expect("globex's plan");
    assert_eq!(ours.title, "Spring launch");
    assert_eq!(theirs.title, "Other tenant");
    assert!(view.plan("initech/launch").expect("read").is_none());
}
