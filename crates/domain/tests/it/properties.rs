//! Properties of decide/evolve over arbitrary command sequences.

use jiff::{SignedDuration, Timestamp};
use planledger_domain::command::{
    AddStep, AdjustGoal, ArchivePlan, AssignRole, CloseGoal, CompleteStep, CreatePlan, DefineGoal,
    KpiInput, RecordCheckIn, ReopenStep, SetBaseline,
};
use planledger_domain::metrics::{self, RollUp};
use planledger_domain::plan::{Direction, Outcome, Role, TrackStatus};
use planledger_domain::{Command, Event, GoalId, PersonId, Plan, StepId, as_of, decide, evolve};
use proptest::prelude::*;

fn goal_id() -> impl Strategy<Value = GoalId> {
    prop::sample::select(vec!["g1", "g2", "g3", "g4"])
        .prop_map(|s| GoalId::new(s).expect("valid literal"))
}

fn step_id() -> impl Strategy<Value = StepId> {
    prop::sample::select(vec!["s1", "s2", "s3", "s4", "s5"])
        .prop_map(|s| StepId::new(s).expect("valid literal"))
}

fn person() -> impl Strategy<Value = PersonId> {
    prop::sample::select(vec!["alice", "bob", "carol"])
        .prop_map(|s| PersonId::new(s).expect("valid literal"))
}

/// Mostly days of 2026; sometimes outside the plan horizon on purpose.
fn date() -> impl Strategy<Value = jiff::civil::Date> {
    prop_oneof![
        9 => 0i64..365,
        1 => -30i64..420,
    ]
    .prop_map(|d| planledger_domain::calendar::add_days(jiff::civil::date(2026, 1, 1), d))
}

fn weight() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        3 => Just(None),
        6 => (1i32..=8).prop_map(|n| Some(f64::from(n) / 2.0)),
        1 => number().prop_map(Some),
    ]
}

fn kpi() -> impl Strategy<Value = Option<KpiInput>> {
    let sensible = (number(), 0i32..100, any::<bool>()).prop_map(|(baseline, delta, up)| {
        let baseline = if baseline.is_finite() { baseline } else { 0.0 };
        let delta = f64::from(delta);
        Some(KpiInput {
            unit: "u".into(),
            baseline,
            target: if up {
                baseline + delta
            } else {
                baseline - delta
            },
            direction: if up {
                Direction::Increase
            } else {
                Direction::Decrease
            },
        })
    });
    let raw = (number(), number()).prop_map(|(baseline, target)| {
        Some(KpiInput {
            unit: "u".into(),
            baseline,
            target,
            direction: Direction::Increase,
        })
    });
    prop_oneof![3 => Just(None), 6 => sensible, 1 => raw]
}

/// Numbers that survive JSON exactly, plus the occasional non-finite one.
fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        18 => (-20i32..=220).prop_map(|n| f64::from(n) / 2.0),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
    ]
}

fn confidence() -> impl Strategy<Value = f64> {
    prop_oneof![
        18 => (0i32..=10).prop_map(|n| f64::from(n) / 10.0),
        1 => Just(1.5),
        1 => Just(f64::NAN),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        18 => "[a-z][a-z ]{0,11}",
        1 => Just(String::new()),
        1 => Just("x".repeat(2001)),
    ]
}

fn status() -> impl Strategy<Value = Option<TrackStatus>> {
    prop::option::of(prop::sample::select(vec![
        TrackStatus::OnTrack,
        TrackStatus::AtRisk,
        TrackStatus::OffTrack,
    ]))
}

fn role() -> impl Strategy<Value = Role> {
    prop::sample::select(vec![
        Role::Responsible,
        Role::Accountable,
        Role::Consulted,
        Role::Informed,
    ])
}

fn assign() -> impl Strategy<Value = AssignRole> {
    (
        person(),
        role(),
        prop::option::of(goal_id()),
        prop::option::weighted(0.3, step_id()),
    )
        .prop_map(|(person, role, goal_id, step_id)| AssignRole {
            person,
            role,
            goal_id,
            step_id,
        })
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        1 => (date(), date(), 0u32..20, prop::option::of(0u32..5)).prop_map(|(a, b, cadence, grace)| {
            Command::CreatePlan(CreatePlan {
                plan_id: None,
                title: "Plan".into(),
                outcome: None,
                starts_on: a.min(b),
                ends_on: a.max(b),
                checkin_cadence_days: cadence,
                checkin_grace_days: grace,
            })
        }),
        6 => (goal_id(), text(), prop::option::weighted(0.3, goal_id()), kpi(), date(), weight())
            .prop_map(|(goal_id, title, parent, kpi, due, weight)| {
                Command::DefineGoal(DefineGoal {
                    goal_id,
                    title,
                    parent_goal_id: parent,
                    aligns_to: None,
                    kpi,
                    due,
                    weight,
                })
            }),
        4 => (step_id(), goal_id(), date()).prop_map(|(step_id, goal_id, due)| {
            Command::AddStep(AddStep { step_id, goal_id, title: "Step".into(), due, estimate_days: None })
        }),
        2 => assign().prop_map(Command::AssignRole),
        1 => assign().prop_map(Command::RevokeRole),
        5 => (goal_id(), prop::option::weighted(0.4, number()), confidence(), status(), prop::option::weighted(0.1, date()), prop::collection::vec("[a-z]{0,3}", 0..3))
            .prop_map(|(goal_id, value, confidence, status, effective_on, blockers)| {
                Command::RecordCheckIn(RecordCheckIn {
                    goal_id,
                    checkin_id: None,
                    value,
                    confidence,
                    status,
                    effective_on,
                    note: None,
                    blockers,
                })
            }),
        3 => step_id().prop_map(|step_id| Command::CompleteStep(CompleteStep { step_id })),
        1 => step_id().prop_map(|step_id| Command::ReopenStep(ReopenStep { step_id, reason: None })),
        3 => (goal_id(), prop::option::weighted(0.3, number()), prop::option::weighted(0.4, date()), prop::option::weighted(0.2, text()), prop::option::weighted(0.3, (1i32..=8).prop_map(|n| f64::from(n) / 2.0)), prop::option::weighted(0.9, text()))
            .prop_map(|(goal_id, target, due, title, weight, reason)| {
                Command::AdjustGoal(AdjustGoal { goal_id, target, due, title, weight, reason, in_response_to_checkin: None })
            }),
        1 => prop::sample::select(vec!["b1", "b2", "bad label"]).prop_map(|l| Command::SetBaseline(SetBaseline { label: l.into() })),
        1 => (goal_id(), prop::sample::select(vec![Outcome::Achieved, Outcome::Missed, Outcome::Dropped]))
            .prop_map(|(goal_id, outcome)| Command::CloseGoal(CloseGoal { goal_id, outcome, note: None })),
    ]
}

/// Commands with the hours elapsed before each (the clock only moves forward).
fn history() -> impl Strategy<Value = Vec<(u32, Command)>> {
    let create = Command::CreatePlan(CreatePlan {
        plan_id: None,
        title: "Plan".into(),
        outcome: None,
        starts_on: jiff::civil::date(2026, 1, 1),
        ends_on: jiff::civil::date(2026, 12, 31),
        checkin_cadence_days: 7,
        checkin_grace_days: Some(2),
    });
    let archive = Command::ArchivePlan(ArchivePlan::default());
    (
        prop::collection::vec((0u32..200, command()), 0..60),
        prop::option::weighted(0.2, (0u32..200, Just(archive))),
    )
        .prop_map(move |(mut cmds, archive)| {
            cmds.insert(0, (0, create.clone()));
            // Archiving ends the story; put it somewhere in the second half when it happens.
            if let Some(archive) = archive {
                let at = cmds.len() - cmds.len() / 4;
                cmds.insert(at, archive);
            }
            cmds
        })
}

struct Run {
    plan: Plan,
    events: Vec<Event>,
    clock: Timestamp,
}

fn run(
    history: &[(u32, Command)],
    mut each: impl FnMut(&Plan, &Command, &Result<Vec<Event>, planledger_domain::DomainError>, &Plan),
) -> Run {
    let mut clock: Timestamp = "2026-01-01T08:00:00Z".parse().expect("literal");
    let mut plan = Plan::default();
    let mut events = Vec::new();
    for (hours, command) in history {
        clock = clock
            .checked_add(SignedDuration::from_hours(i64::from(*hours)))
            .expect("in range");
        let before = plan.clone();
        let decided = decide(&plan, command, clock);
        if let Ok(new) = &decided {
            for event in new {
                plan = evolve(plan, event);
            }
            events.extend(new.iter().cloned());
        }
        each(&before, command, &decided, &plan);
    }
    Run {
        plan,
        events,
        clock,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn replaying_decided_events_reproduces_the_state(history in history()) {
        let out = run(&history, |_, _, _, _| {});
        prop_assert_eq!(Plan::replay(&out.events), out.plan.clone());
        prop_assert_eq!(as_of(&out.events, out.clock), out.plan);
    }

    #[test]
    fn no_command_sequence_panics(history in history()) {
        let out = run(&history, |_, _, decided, _| {
            if let Err(error) = decided {
                let _ = (error.code(), error.field(), error.kind(), error.to_string());
            }
        });
        for rule in [RollUp::Weighted, RollUp::Equal] {
            let _ = metrics::progress_report(&out.plan, out.clock, rule);
        }
        let _ = metrics::accountability_report(&out.plan, out.clock);
        let _ = metrics::agility_report(&out.plan, out.clock);
        let _ = metrics::momentum(&out.plan, out.clock);
        for label in out.plan.baselines.keys() {
            prop_assert!(metrics::drift_report(&out.plan, label, out.clock).is_ok());
        }
    }

    #[test]
    fn every_rejected_command_leaves_the_state_unchanged(history in history()) {
        let mut violations = Vec::new();
        run(&history, |before, command, decided, after| {
            if decided.is_err() && before != after {
                violations.push(command.name());
            }
        });
        prop_assert!(violations.is_empty(), "{:?}", violations);
    }

    #[test]
    fn every_decided_event_survives_the_stored_form(history in history()) {
        let out = run(&history, |_, _, _, _| {});
        for event in &out.events {
            let back = Event::from_stored(event.event_type(), event.schema_version(), event.to_data());
            prop_assert_eq!(back.ok(), Some(event.clone()));
        }
        let json = serde_json::to_string(&out.plan).expect("plan serializes");
        let back: Plan = serde_json::from_str(&json).expect("plan parses");
        prop_assert_eq!(back, out.plan);
    }

    #[test]
    fn accepted_commands_advance_the_version_by_their_event_count(history in history()) {
        let mut wrong = 0;
        run(&history, |before, _, decided, after| {
            if let Ok(events) = decided
                && after.version != before.version + events.len() as u64
            {
                wrong += 1;
            }
        });
        prop_assert_eq!(wrong, 0);
    }

    #[test]
    fn reported_ratios_stay_in_the_unit_interval(history in history()) {
        let out = run(&history, |_, _, _, _| {});
        let unit = |x: Option<f64>| x.is_none_or(|v| (0.0..=1.0).contains(&v));
        let progress = metrics::progress_report(&out.plan, out.clock, RollUp::Weighted);
        prop_assert!(unit(progress.progress) && unit(progress.expected_progress));
        for goal in &progress.goals {
            prop_assert!(unit(goal.progress) && unit(Some(goal.expected_progress)));
        }
        let acc = metrics::accountability_report(&out.plan, out.clock);
        prop_assert!(unit(acc.punctuality) && unit(acc.say_do_ratio) && unit(acc.ownership_coverage) && unit(acc.brier_score));
    }
}

use crate::support;

/// A goal's accountable role passed along a chain of people, with check-ins and maybe a
/// responsible stand-in: each handover revokes the holder at `revoke` hours after the previous
/// assignment and assigns the next person `gap` hours later (0: at the same instant).
#[derive(Clone, Debug)]
struct RoleStory {
    first: usize,
    handovers: Vec<(u32, u32, usize)>,
    standin: Option<(u32, u32)>,
    check_ins: Vec<u32>,
    close_after: Option<(u32, bool)>,
    look_after: u32,
}

const HOLDERS: [&str; 3] = ["ann", "ben", "cat"];
const STANDIN: &str = "rita";

fn role_story(gaps: bool) -> impl Strategy<Value = RoleStory> {
    let gap = if gaps { 0u32..72 } else { 0u32..1 };
    (
        0usize..3,
        prop::collection::vec((1u32..900, gap, 0usize..3), 0..6),
        prop::option::of((0u32..2000, 1u32..2000)),
        prop::collection::vec(0u32..5000, 0..30),
        prop::option::of((0u32..900, any::<bool>())),
        0u32..3000,
    )
        .prop_map(
            |(first, handovers, standin, check_ins, close_after, look_after)| RoleStory {
                first,
                handovers,
                standin,
                check_ins,
                close_after,
                look_after,
            },
        )
}

struct Told {
    scenario: support::Scenario,
    /// (person, from, until) of every accountable tenure.
    accountable: Vec<(&'static str, Timestamp, Option<Timestamp>)>,
    /// The stand-in's responsible tenure.
    standin: Option<(Timestamp, Option<Timestamp>)>,
    now: Timestamp,
}

fn hours(from: Timestamp, n: u32) -> Timestamp {
    from.checked_add(SignedDuration::from_hours(i64::from(n)))
        .expect("in range")
}

/// Runs the story through decide/evolve, in time order, on a plan over 2026 (cadence 7, grace 2).
fn tell(story: &RoleStory) -> Told {
    use serde_json::json;
    let t0: Timestamp = "2026-01-01T09:00:00Z".parse().expect("literal");
    // (time, order, command); the order keeps a revoke before the assign at the same instant.
    let mut script: Vec<(Timestamp, usize, serde_json::Value)> = Vec::new();
    let role = |verb: &str, person: &str, role: &str| json!({"type": verb, "data": {"person": person, "role": role, "goal_id": "g"}});
    let mut accountable = Vec::new();
    let mut holder = HOLDERS[story.first];
    let mut since = t0;
    script.push((t0, 0, role("AssignRole", holder, "accountable")));
    for (held, gap, next) in &story.handovers {
        let revoke = hours(since, *held);
        let assign = hours(revoke, *gap);
        script.push((
            revoke,
            script.len(),
            role("RevokeRole", holder, "accountable"),
        ));
        script.push((
            assign,
            script.len(),
            role("AssignRole", HOLDERS[*next], "accountable"),
        ));
        accountable.push((holder, since, Some(revoke)));
        holder = HOLDERS[*next];
        since = assign;
    }
    let last_role_change = since;
    let mut standin = None;
    if let Some((from, length)) = story.standin {
        let (from, until) = (hours(t0, from), hours(hours(t0, from), length));
        script.push((
            from,
            script.len(),
            role("AssignRole", STANDIN, "responsible"),
        ));
        script.push((
            until,
            script.len(),
            role("RevokeRole", STANDIN, "responsible"),
        ));
        standin = Some((from, Some(until)));
    }
    for at in &story.check_ins {
        script.push((
            hours(t0, *at),
            script.len(),
            json!({"type": "RecordCheckIn", "data": {"goal_id": "g", "confidence": 0.5}}),
        ));
    }
    let mut end = script.iter().map(|(t, _, _)| *t).max().unwrap_or(t0);
    let mut closed_at = None;
    if let Some((after, achieved)) = story.close_after {
        // Roles cannot change on a closed goal, so it closes after the last change.
        let at = hours(end.max(last_role_change), after);
        let outcome = if achieved { "achieved" } else { "missed" };
        script.push((
            at,
            script.len(),
            json!({"type": "CloseGoal", "data": {"goal_id": "g", "outcome": outcome}}),
        ));
        closed_at = Some(at);
        end = at;
    }
    accountable.push((holder, since, None));
    script.sort_by_key(|(t, order, _)| (*t, *order));
    let mut scenario = support::Scenario::year_2026().plain_goal("2026-01-01", "g", "2026-12-31");
    for (at, _, command) in script {
        // A check-in after the goal closed is refused; everything else must be accepted.
        if closed_at.is_some_and(|c| at > c) {
            continue;
        }
        scenario.run(&at.to_string(), command);
    }
    Told {
        scenario,
        accountable,
        standin,
        now: hours(end, story.look_after),
    }
}

/// The instants at which the goal's due slots fell due: 00:00 UTC of `S + 7(k+1) + 2`.
fn slot_moments(due: u32) -> Vec<Timestamp> {
    (0..i64::from(due))
        .map(|k| {
            let start = planledger_domain::calendar::day_number(jiff::civil::date(2026, 1, 1));
            planledger_domain::calendar::start_of_day(start + 7 * (k + 1) + 2)
        })
        .collect()
}

fn covers(from: Timestamp, until: Option<Timestamp>, t: Timestamp) -> bool {
    from <= t && until.is_none_or(|u| t < u)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn slots_of_a_goal_are_split_between_its_accountable_holders_without_loss(story in role_story(false)) {
        let told = tell(&story);
        let report = metrics::accountability_report(&told.scenario.plan, told.now);
        let goal = &report.goals[0];
        let ever: Vec<&str> = told.accountable.iter().map(|(p, _, _)| *p).collect();
        let (mut due, mut on_time) = (0, 0);
        for person in &report.people {
            if ever.contains(&person.person.as_str()) {
                due += person.slots_due;
                on_time += person.slots_on_time;
            } else {
                // With an accountable person at every moment, the stand-in is never credited.
                prop_assert_eq!(person.slots_due, 0);
            }
        }
        prop_assert_eq!((due, on_time), (goal.slots_due, goal.slots_on_time));
        for holder in &ever {
            prop_assert!(report.people.iter().any(|p| p.person.as_str() == *holder));
        }
    }

    #[test]
    fn slots_in_a_gap_go_to_the_stand_in_or_to_nobody(story in role_story(true)) {
        let told = tell(&story);
        let report = metrics::accountability_report(&told.scenario.plan, told.now);
        let goal = &report.goals[0];
        let moments = slot_moments(goal.slots_due);
        let held = |t: Timestamp| told.accountable.iter().any(|(_, from, until)| covers(*from, *until, t));
        let stood_in = |t: Timestamp| told.standin.is_some_and(|(from, until)| covers(from, until, t));
        let with_accountable = moments.iter().filter(|t| held(**t)).count() as u32;
        let standin_expected = moments.iter().filter(|t| !held(**t) && stood_in(**t)).count() as u32;
        let nobody = moments.len() as u32 - with_accountable - standin_expected;
        let slots_of = |name: &str| {
            report.people.iter().find(|p| p.person.as_str() == name).map_or((0, 0), |p| (p.slots_due, p.slots_on_time))
        };
        let holders: Vec<&str> = HOLDERS.to_vec();
        let (due, on_time) = holders.iter().map(|h| slots_of(h)).fold((0, 0), |(d, o), (pd, po)| (d + pd, o + po));
        let standin = slots_of(STANDIN);
        prop_assert_eq!(due, with_accountable);
        prop_assert_eq!(standin.0, standin_expected);
        prop_assert!(on_time + standin.1 <= goal.slots_on_time);
        if nobody == 0 {
            prop_assert_eq!(on_time + standin.1, goal.slots_on_time);
        }
    }
}
