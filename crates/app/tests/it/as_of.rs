//! Every historic read (by version and by position) equals a replay of the plan's events from
//! version 1, whatever the plan's history, its snapshot schedule, the ladder's step and capacity,
//! and the order of the reads.

use std::sync::Arc;

use planledger_app::{
    CommandRequest, CommandService, PlanLoader, Principal, QueryService, Role, StateAt,
    StateLadder, decode_event, stream_of,
};
use planledger_domain::{Command, Plan, PlanId};
use planledger_store::{EventStore, ReadDirection, StoreOptions, Version};
use proptest::prelude::*;
use serde_json::json;

/// One command of a random history; goals `g0`-`g2` and steps `s0`-`s5` exist or are added.
#[derive(Clone, Debug)]
enum Op {
    CheckIn { goal: u8, value: u8, days: u8 },
    AddStep { step: u8, goal: u8 },
    CompleteStep { step: u8 },
    ReopenStep { step: u8 },
    AdjustTarget { goal: u8, target: u8 },
    AssignRole { person: u8, goal: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..3, any::<u8>(), 0u8..60)
            .prop_map(|(goal, value, days)| Op::CheckIn { goal, value, days }),
        2 => (0u8..6, 0u8..3).prop_map(|(step, goal)| Op::AddStep { step, goal }),
        2 => (0u8..6).prop_map(|step| Op::CompleteStep { step }),
        1 => (0u8..6).prop_map(|step| Op::ReopenStep { step }),
        1 => (0u8..3, 1u8..200).prop_map(|(goal, target)| Op::AdjustTarget { goal, target }),
        1 => (0u8..3, 0u8..3).prop_map(|(person, goal)| Op::AssignRole { person, goal }),
    ]
}

fn command(op: &Op) -> Command {
    let value = match op {
        Op::CheckIn { goal, value, days } => json!({"type": "RecordCheckIn", "data": {
            "goal_id": format!("g{goal}"), "value": f64::from(*value), "confidence": 0.5,
            "effective_on": jiff::civil::date(2026, 1, 1)
                .checked_add(jiff::Span::new().days(i64::from(*days)))
                .expect("a day of 2026")
                .to_string()}}),
        Op::AddStep { step, goal } => json!({"type": "AddStep", "data": {
            "step_id": format!("s{step}"), "goal_id": format!("g{goal}"),
            "title": format!("step {step}"), "due": "2026-06-01"}}),
        Op::CompleteStep { step } => {
            json!({"type": "CompleteStep", "data": {"step_id": format!("s{step}")}})
        }
        Op::ReopenStep { step } => json!({"type": "ReopenStep", "data": {
            "step_id": format!("s{step}"), "reason": "not done"}}),
        Op::AdjustTarget { goal, target } => json!({"type": "AdjustGoal", "data": {
            "goal_id": format!("g{goal}"), "target": f64::from(*target),
            "reason": "re-planned"}}),
        Op::AssignRole { person, goal } => json!({"type": "AssignRole", "data": {
            "person": format!("p{person}"), "role": "accountable",
            "goal_id": format!("g{goal}")}}),
    };
    serde_json::from_value(value).expect("a well-formed command")
}

fn setup() -> Vec<Command> {
    let mut script = vec![json!({"type": "CreatePlan", "data": {"title": "as-of",
        "starts_on": "2026-01-01", "ends_on": "2026-12-31", "checkin_cadence_days": 7}})];
    for goal in 0..3 {
        script.push(
            json!({"type": "DefineGoal", "data": {"goal_id": format!("g{goal}"),
            "title": format!("goal {goal}"), "due": "2026-12-01",
            "kpi": {"unit": "u", "baseline": 0.0, "target": 100.0, "direction": "increase"}}}),
        );
    }
    script
        .into_iter()
        .map(|value| serde_json::from_value(value).expect("a well-formed command"))
        .collect()
}

/// The plan's state after each version, folded from version 1: `states[v - 1]` is the state
/// after version `v`.
fn replayed(store: &EventStore, stream: &planledger_store::StreamId) -> Vec<serde_json::Value> {
    let events = store
        .view()
        .read_stream(stream, Version(1), ReadDirection::Forward, usize::MAX)
        .expect("read the stream");
    let mut plan = Plan::default();
    let mut states = Vec::new();
    for envelope in &events {
        plan = planledger_domain::evolve(plan, &decode_event(envelope).expect("decodes"));
        states.push(serde_json::to_value(&plan).expect("serializes"));
    }
    states
}

/// A log in a temp dir with the plan `ops` describes written through the command path (which
/// snapshots every `snapshot_every` versions at first), read through a ladder of `step` and
/// `capacity`.
struct Written {
    _dir: tempfile::TempDir,
    store: EventStore,
    plans: Arc<PlanLoader>,
    principal: Principal,
    plan_id: PlanId,
    /// Commands the plan refused (a step completed twice, ...): they add nothing.
    refused: usize,
}

fn write(ops: &[Op], snapshot_every: u64, step: u64, capacity: usize) -> Written {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EventStore::open(dir.path().join("log"), StoreOptions::default()).expect("open");
    let plans = Arc::new(PlanLoader::with_ladder(
        store.clone(),
        16,
        snapshot_every,
        StateLadder::new(step, capacity),
    ));
    let commands = CommandService::new(plans.clone());
    let principal = Principal {
        subject: "ana".into(),
        tenant: "t".into(),
        roles: vec![Role::Planner, Role::Auditor],
    };
    let plan_id = PlanId::new("as-of").expect("plan id");
    let mut refused = 0;
    runtime.block_on(async {
        for command in setup().into_iter().chain(ops.iter().map(command)) {
            let request = CommandRequest::new(plan_id.clone(), command);
            if commands.execute(&principal, request).await.is_err() {
                refused += 1;
            }
        }
    });
    Written {
        _dir: dir,
        store,
        plans,
        principal,
        plan_id,
        refused,
    }
}

fn check(ops: &[Op], snapshot_every: u64, step: u64, capacity: usize, order: u64) {
    let Written {
        store,
        plans,
        principal,
        plan_id,
        ..
    } = write(ops, snapshot_every, step, capacity);
    let stream = stream_of("t", &plan_id).expect("stream");
    let states = replayed(&store, &stream);
    let head = states.len() as u64;
    let queries = QueryService::new(plans.clone());

    // Every version once, in an order that jumps back and forth (a stride coprime to the
    // count), so reads start from rungs, snapshots and nothing, below and above each other.
    let stride = (order % head.max(1)) | 1;
    let stride = (stride..)
        .find(|s| gcd(*s, head) == 1)
        .expect("a stride coprime to the head");
    for i in 0..head {
        let version = (i * stride) % head + 1;
        let read = queries
            .plan_state(&principal, &plan_id, StateAt::Version(version))
            .expect("a version in range");
        assert_eq!(read.version, version);
        assert_eq!(
            serde_json::to_value(&*read.plan).expect("serializes"),
            states[(version - 1) as usize],
            "state at version {version} (ladder step {step}, capacity {capacity}, snapshots every {snapshot_every})"
        );
    }
    // By position: the plan is the only stream, so position p is version p.
    for i in 0..head {
        let position = (i * stride) % head + 1;
        let read = queries
            .plan_state(&principal, &plan_id, StateAt::Position(position))
            .expect("a position in the log");
        assert_eq!(
            serde_json::to_value(&*read.plan).expect("serializes"),
            states[(position - 1) as usize],
            "state at position {position}"
        );
    }
    assert!(
        plans.ladder().len() <= capacity,
        "the ladder keeps its bound"
    );
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_historic_read_equals_a_replay_from_version_one(
        ops in prop::collection::vec(op(), 1..160),
        snapshot_every in 1u64..40,
        step in 1u64..24,
        capacity in 0usize..12,
        order in any::<u64>(),
    ) {
        check(&ops, snapshot_every, step, capacity, order);
    }
}

/// The ladder is what makes a long plan's reads cheap: after one read near the head, reads
/// below it start from a rung (the `planledger_as_of_ladder_total` counter), and the answers
/// still equal the replay.
#[test]
fn a_read_near_the_head_leaves_rungs_below_it() {
    let ops: Vec<Op> = (0..300)
        .map(|n| Op::CheckIn {
            goal: (n % 3) as u8,
            value: (n % 200) as u8,
            days: (n % 60) as u8,
        })
        .collect();
    let written = write(&ops, 1_000, 16, 64);
    assert_eq!(written.refused, 0);
    assert!(written.plans.ladder().is_empty(), "writes leave no rungs");
    // Nor does loading the current state cold (the command path's load after a cache miss).
    let cold = PlanLoader::with_ladder(written.store.clone(), 16, 1_000, StateLadder::new(16, 64));
    let stream = stream_of("t", &written.plan_id).expect("stream");
    let current = cold.current(&stream, Version(0)).expect("current state");
    assert_eq!(current.version, Version(304));
    assert!(cold.ladder().is_empty(), "a current load leaves no rungs");
    let queries = QueryService::new(written.plans.clone());
    let read = queries
        .plan_state(&written.principal, &written.plan_id, StateAt::Version(300))
        .expect("read near the head");
    assert_eq!(read.plan.checkin_count, 296);
    // No snapshot below 1,000 versions: the read replayed from version 1 and left a rung at
    // every multiple of 16 up to 288.
    assert_eq!(written.plans.ladder().len(), 300 / 16);
}
