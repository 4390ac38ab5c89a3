//! Accountability: check-in punctuality with grace, staleness, say/do ratio, overdue steps,
//! ownership coverage, open blockers and confidence calibration (Brier score), per plan and person.

use std::collections::BTreeSet;

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::{chronological, goal_start, ratio};
use crate::calendar;
use crate::id::{GoalId, PersonId, PlanId, StepId};
use crate::plan::{Goal, Outcome, Plan, Role, RoleSubject, Step};

/// A role a person holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleHeld {
    /// The role.
    pub role: Role,
    /// On this goal.
    pub goal_id: Option<GoalId>,
    /// On this step.
    pub step_id: Option<StepId>,
}

/// A step past its due date and not completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverdueStep {
    /// The step.
    pub step_id: StepId,
    /// Its goal.
    pub goal_id: GoalId,
    /// Its due date.
    pub due: Date,
    /// Whole days since the due date.
    pub days_overdue: i64,
}

/// A blocker named in the latest check-in of an open goal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenBlocker {
    /// The goal.
    pub goal_id: GoalId,
    /// The check-in that named it.
    pub checkin_id: String,
    /// The blocker.
    pub blocker: String,
}

/// Accountability figures of one goal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GoalAccountability {
    /// The goal.
    pub goal_id: GoalId,
    /// The accountable person, if exactly one.
    pub accountable: Option<PersonId>,
    /// Responsible people.
    pub responsible: Vec<PersonId>,
    /// On-time cadence slots / slots due.
    pub punctuality: Option<f64>,
    /// Slots whose check-in deadline has passed.
    pub slots_due: u32,
    /// Of those, slots with a check-in recorded in time.
    pub slots_on_time: u32,
    /// Days since the last check-in was recorded (since definition, if none).
    pub staleness_days: Option<f64>,
    /// Steps completed by their due date / steps due.
    pub say_do_ratio: Option<f64>,
    /// Open steps past due.
    pub overdue_steps: u32,
    /// Blockers in the latest check-in.
    pub open_blockers: u32,
}

/// Accountability figures of one person over what they own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PersonAccountability {
    /// The person.
    pub person: PersonId,
    /// Roles held now.
    pub roles: Vec<RoleHeld>,
    /// Goals they own (accountable or responsible).
    pub goals_owned: Vec<GoalId>,
    /// On-time slots / slots due over owned goals.
    pub punctuality: Option<f64>,
    /// Slots due over owned goals.
    pub slots_due: u32,
    /// On-time slots over owned goals.
    pub slots_on_time: u32,
    /// The largest staleness among owned open goals.
    pub staleness_days: Option<f64>,
    /// Say/do ratio over owned steps.
    pub say_do_ratio: Option<f64>,
    /// Owned steps due.
    pub steps_due: u32,
    /// Owned steps completed by their due date.
    pub steps_done_on_time: u32,
    /// Owned open steps past due.
    pub overdue_steps: u32,
    /// Of the open goals they hold any role on, the share with exactly one accountable.
    pub ownership_coverage: Option<f64>,
    /// Blockers on owned open goals.
    pub open_blockers: u32,
    /// Brier score over owned closed goals (achieved = 1, missed = 0).
    pub brier_score: Option<f64>,
    /// Closed goals scored.
    pub brier_goals: u32,
}

/// Accountability of a plan, its goals and its people.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountabilityReport {
    /// The plan.
    pub plan_id: Option<PlanId>,
    /// Evaluation time.
    pub as_of: Timestamp,
    /// On-time slots / slots due over all goals.
    pub punctuality: Option<f64>,
    /// Slots due.
    pub slots_due: u32,
    /// On-time slots.
    pub slots_on_time: u32,
    /// The largest staleness among open goals.
    pub staleness_days: Option<f64>,
    /// Steps completed by their due date / steps due.
    pub say_do_ratio: Option<f64>,
    /// Steps due.
    pub steps_due: u32,
    /// Steps completed by their due date.
    pub steps_done_on_time: u32,
    /// Open steps past due.
    pub overdue_steps: u32,
    /// Those steps.
    pub overdue: Vec<OverdueStep>,
    /// Open goals with exactly one accountable / open goals.
    pub ownership_coverage: Option<f64>,
    /// Open goals without an accountable person.
    pub goals_without_accountable: Vec<GoalId>,
    /// Blockers in the latest check-in of each open goal.
    pub open_blockers: u32,
    /// Those blockers.
    pub blockers: Vec<OpenBlocker>,
    /// Brier score over closed goals (achieved = 1, missed = 0).
    pub brier_score: Option<f64>,
    /// Closed goals scored.
    pub brier_goals: u32,
    /// One row per goal.
    pub goals: Vec<GoalAccountability>,
    /// One row per person holding a role, in id order.
    pub people: Vec<PersonAccountability>,
}

/// Accountability of the plan and of every person holding a role, as of `now`.
pub fn accountability_report(plan: &Plan, now: Timestamp) -> AccountabilityReport {
    let today = calendar::utc_date(now);
    let all_goals: Vec<&Goal> = plan.goals.values().collect();
    let all_steps: Vec<&Step> = plan.steps.values().collect();
    let slots = slot_totals(plan, &all_goals, today);
    let say_do = say_do(plan, &all_steps, today);
    let overdue = overdue(plan, &all_steps, today);
    let open: Vec<&Goal> = all_goals.iter().copied().filter(|g| g.is_open()).collect();
    let covered: Vec<&Goal> = open
        .iter()
        .copied()
        .filter(|g| accountable_count(plan, g) == 1)
        .collect();
    let blockers = open_blockers(&open);
    let brier = brier(&all_goals);
    let goals = all_goals
        .iter()
        .map(|g| goal_row(plan, g, now, today))
        .collect();
    let people: BTreeSet<&PersonId> = plan.roles.iter().map(|r| &r.person).collect();
    AccountabilityReport {
        plan_id: plan.plan_id.clone(),
        as_of: now,
        punctuality: ratio(f64::from(slots.1), f64::from(slots.0)),
        slots_due: slots.0,
        slots_on_time: slots.1,
        staleness_days: max_staleness(&open, now),
        say_do_ratio: ratio(f64::from(say_do.1), f64::from(say_do.0)),
        steps_due: say_do.0,
        steps_done_on_time: say_do.1,
        overdue_steps: count(overdue.len()),
        overdue,
        ownership_coverage: ratio(covered.len() as f64, open.len() as f64),
        goals_without_accountable: open
            .iter()
            .filter(|g| accountable_count(plan, g) == 0)
            .map(|g| g.goal_id.clone())
            .collect(),
        open_blockers: count(blockers.len()),
        blockers,
        brier_score: brier.0,
        brier_goals: brier.1,
        goals,
        people: people
            .into_iter()
            .map(|p| person_row(plan, p, now, today))
            .collect(),
    }
}

/// Accountability of one person in this plan as of `now` (`None` if they hold no role here).
pub fn person_accountability(
    plan: &Plan,
    person: &PersonId,
    now: Timestamp,
) -> Option<PersonAccountability> {
    plan.roles
        .iter()
        .any(|r| &r.person == person)
        .then(|| person_row(plan, person, now, calendar::utc_date(now)))
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn accountable_count(plan: &Plan, goal: &Goal) -> usize {
    let subject = RoleSubject::Goal(goal.goal_id.clone());
    plan.holders(Role::Accountable, &subject).count()
}

/// Cadence slots of one goal: (due, on time).
///
/// Slot k covers days `[S + k*c, S + (k+1)*c)` from the goal's start S. It is due once it lies
/// wholly before the goal stopped needing check-ins (plan end + 1 day, or the closing day) and
/// its deadline `S + (k+1)*c + grace` has been reached. It is on time when a check-in on the goal
/// was recorded (UTC day) in `[S + k*c, S + (k+1)*c + grace)`; each check-in counts for at most
/// one slot (slots take the earliest unused check-in in their window, in order).
pub(crate) fn slots(plan: &Plan, goal: &Goal, today: Date) -> (u32, u32) {
    let cadence = i64::from(plan.checkin_cadence_days);
    if cadence <= 0 {
        return (0, 0);
    }
    let grace = i64::from(plan.checkin_grace_days);
    let start = calendar::day_number(goal_start(plan, goal));
    let mut stop = calendar::day_number(plan.ends_on) + 1;
    if let Some(closure) = &goal.closed {
        stop = stop.min(calendar::utc_day_number(closure.at));
    }
    let today = calendar::day_number(today);
    let mut recorded: Vec<i64> = goal
        .check_ins
        .iter()
        .map(|c| calendar::utc_day_number(c.recorded_at))
        .collect();
    recorded.sort_unstable();
    let mut unused = recorded.into_iter().peekable();
    let (mut due, mut on_time) = (0u32, 0u32);
    let mut k = 0i64;
    loop {
        let slot_start = start + k * cadence;
        let slot_end = slot_start + cadence;
        if slot_end > stop || slot_end + grace > today {
            break;
        }
        due += 1;
        while unused.next_if(|d| *d < slot_start).is_some() {}
        if unused.next_if(|d| *d < slot_end + grace).is_some() {
            on_time += 1;
        }
        k += 1;
    }
    (due, on_time)
}

fn slot_totals(plan: &Plan, goals: &[&Goal], today: Date) -> (u32, u32) {
    goals.iter().fold((0, 0), |(d, o), g| {
        let (gd, go) = slots(plan, g, today);
        (d + gd, o + go)
    })
}

/// Days since the goal's last check-in was recorded, or since it was defined if none.
pub(crate) fn staleness(goal: &Goal, now: Timestamp) -> f64 {
    let last = goal
        .check_ins
        .iter()
        .map(|c| c.recorded_at)
        .max()
        .unwrap_or(goal.defined_at);
    calendar::days_between_instants(last, now)
}

fn max_staleness(open: &[&Goal], now: Timestamp) -> Option<f64> {
    open.iter()
        .map(|g| staleness(g, now))
        .max_by(f64::total_cmp)
}

/// Steps of goals not dropped whose due date has passed: (due, completed by their due date).
fn say_do(plan: &Plan, steps: &[&Step], today: Date) -> (u32, u32) {
    let mut due = 0;
    let mut kept = 0;
    for step in steps {
        let dropped = plan.goals.get(&step.goal_id).is_some_and(Goal::is_dropped);
        if dropped || step.due >= today {
            continue;
        }
        due += 1;
        if step
            .completed_at
            .is_some_and(|at| calendar::utc_date(at) <= step.due)
        {
            kept += 1;
        }
    }
    (due, kept)
}

fn overdue(plan: &Plan, steps: &[&Step], today: Date) -> Vec<OverdueStep> {
    steps
        .iter()
        .filter(|s| !s.is_completed() && s.due < today)
        .filter(|s| plan.goals.get(&s.goal_id).is_some_and(Goal::is_open))
        .map(|s| OverdueStep {
            step_id: s.step_id.clone(),
            goal_id: s.goal_id.clone(),
            due: s.due,
            days_overdue: calendar::days_between(s.due, today),
        })
        .collect()
}

fn open_blockers(open: &[&Goal]) -> Vec<OpenBlocker> {
    open.iter()
        .filter_map(|g| {
            chronological(&g.check_ins)
                .last()
                .map(|c| (g, c.checkin_id.clone(), c.blockers.clone()))
        })
        .flat_map(|(g, checkin_id, blockers)| {
            blockers.into_iter().map(move |blocker| OpenBlocker {
                goal_id: g.goal_id.clone(),
                checkin_id: checkin_id.clone(),
                blocker,
            })
        })
        .collect()
}

/// Mean of `(f - o)^2` over closed goals with an outcome of achieved (o = 1) or missed (o = 0)
/// and a check-in recorded before closing; f = confidence of the latest such check-in.
pub(crate) fn brier(goals: &[&Goal]) -> (Option<f64>, u32) {
    let mut sum = 0.0;
    let mut n = 0u32;
    for goal in goals {
        let Some(closure) = &goal.closed else {
            continue;
        };
        let o = match closure.outcome {
            Outcome::Achieved => 1.0,
            Outcome::Missed => 0.0,
            Outcome::Dropped => continue,
        };
        let before: Vec<_> = goal
            .check_ins
            .iter()
            .filter(|c| c.recorded_at <= closure.at)
            .cloned()
            .collect();
        let Some(forecast) = chronological(&before).last().map(|c| c.confidence) else {
            continue;
        };
        sum += (forecast - o) * (forecast - o);
        n += 1;
    }
    (ratio(sum, f64::from(n)), n)
}

fn goal_row(plan: &Plan, goal: &Goal, now: Timestamp, today: Date) -> GoalAccountability {
    let subject = RoleSubject::Goal(goal.goal_id.clone());
    let accountable: Vec<&PersonId> = plan.holders(Role::Accountable, &subject).collect();
    let (due, on_time) = slots(plan, goal, today);
    let steps: Vec<&Step> = plan.steps_of(&goal.goal_id).collect();
    let (steps_due, kept) = say_do(plan, &steps, today);
    let blockers = if goal.is_open() {
        open_blockers(&[goal]).len()
    } else {
        0
    };
    GoalAccountability {
        goal_id: goal.goal_id.clone(),
        accountable: match accountable.as_slice() {
            [one] => Some((*one).clone()),
            _ => None,
        },
        responsible: plan.holders(Role::Responsible, &subject).cloned().collect(),
        punctuality: ratio(f64::from(on_time), f64::from(due)),
        slots_due: due,
        slots_on_time: on_time,
        staleness_days: goal.is_open().then(|| staleness(goal, now)),
        say_do_ratio: ratio(f64::from(kept), f64::from(steps_due)),
        overdue_steps: count(overdue(plan, &steps, today).len()),
        open_blockers: count(blockers),
    }
}

/// Whether `person` owns `goal` (accountable or responsible on it).
fn owns_goal(plan: &Plan, person: &PersonId, goal_id: &GoalId) -> bool {
    let subject = RoleSubject::Goal(goal_id.clone());
    plan.holders(Role::Accountable, &subject)
        .chain(plan.holders(Role::Responsible, &subject))
        .any(|p| p == person)
}

/// Whether `person` owns `step`: accountable or responsible on the step, or, when nobody is,
/// owner of its goal.
fn owns_step(plan: &Plan, person: &PersonId, step: &Step) -> bool {
    let subject = RoleSubject::Step(step.step_id.clone());
    let mut owners = plan
        .holders(Role::Accountable, &subject)
        .chain(plan.holders(Role::Responsible, &subject))
        .peekable();
    if owners.peek().is_none() {
        return owns_goal(plan, person, &step.goal_id);
    }
    owners.any(|p| p == person)
}

fn person_row(plan: &Plan, person: &PersonId, now: Timestamp, today: Date) -> PersonAccountability {
    let roles: Vec<RoleHeld> = plan
        .roles
        .iter()
        .filter(|r| &r.person == person)
        .map(|r| RoleHeld {
            role: r.role,
            goal_id: r.goal_id.clone(),
            step_id: r.step_id.clone(),
        })
        .collect();
    let owned: Vec<&Goal> = plan
        .goals
        .values()
        .filter(|g| owns_goal(plan, person, &g.goal_id))
        .collect();
    let owned_open: Vec<&Goal> = owned.iter().copied().filter(|g| g.is_open()).collect();
    let steps: Vec<&Step> = plan
        .steps
        .values()
        .filter(|s| owns_step(plan, person, s))
        .collect();
    let slots = slot_totals(plan, &owned, today);
    let say_do = say_do(plan, &steps, today);
    let involved: Vec<&Goal> = plan
        .goals
        .values()
        .filter(|g| g.is_open())
        .filter(|g| roles.iter().any(|r| r.goal_id.as_ref() == Some(&g.goal_id)))
        .collect();
    let covered = involved
        .iter()
        .filter(|g| accountable_count(plan, g) == 1)
        .count();
    let brier = brier(&owned);
    PersonAccountability {
        person: person.clone(),
        roles,
        goals_owned: owned.iter().map(|g| g.goal_id.clone()).collect(),
        punctuality: ratio(f64::from(slots.1), f64::from(slots.0)),
        slots_due: slots.0,
        slots_on_time: slots.1,
        staleness_days: max_staleness(&owned_open, now),
        say_do_ratio: ratio(f64::from(say_do.1), f64::from(say_do.0)),
        steps_due: say_do.0,
        steps_done_on_time: say_do.1,
        overdue_steps: count(overdue(plan, &steps, today).len()),
        ownership_coverage: ratio(covered as f64, involved.len() as f64),
        open_blockers: count(open_blockers(&owned_open).len()),
        brier_score: brier.0,
        brier_goals: brier.1,
    }
}
