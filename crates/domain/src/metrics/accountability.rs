//! Accountability: check-in punctuality with grace, staleness, say/do ratio, overdue steps,
//! ownership coverage, open blockers and confidence calibration (Brier score), per plan and person.
//! Person figures follow the plan's role history: each item goes to whoever held the goal (or
//! step) when it fell due or was reported.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::{chronological, goal_start, ratio};
use crate::calendar;
use crate::id::{GoalId, PersonId, PlanId, StepId};
use crate::plan::{CheckIn, Goal, Outcome, Plan, Role, RoleSubject, Step, Tenure};

/// A role a person holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// Accountability figures of one person: each slot, step, blocker and forecast credited to
/// whoever answered for it (accountable, else responsible) at the moment it fell due or was
/// reported, so a handover splits a goal's history between the people who held it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PersonAccountability {
    /// The person.
    pub person: PersonId,
    /// Roles held now.
    pub roles: Vec<RoleHeld>,
    /// Goals they own now (accountable or responsible).
    pub goals_owned: Vec<GoalId>,
    /// On-time slots / slots due, over the slots they answered for when each fell due.
    pub punctuality: Option<f64>,
    /// Slots that fell due while they answered for the goal.
    pub slots_due: u32,
    /// Of those, slots with a check-in recorded in time.
    pub slots_on_time: u32,
    /// The largest staleness among the open goals they answer for now, each counted from the
    /// later of its last check-in and their taking it over.
    pub staleness_days: Option<f64>,
    /// Say/do ratio over the steps they answered for when each fell due.
    pub say_do_ratio: Option<f64>,
    /// Steps that fell due while they answered for them.
    pub steps_due: u32,
    /// Of those, steps completed by their due date.
    pub steps_done_on_time: u32,
    /// Of those, open steps of open goals.
    pub overdue_steps: u32,
    /// Of the open goals they hold any role on now, the share with exactly one accountable.
    pub ownership_coverage: Option<f64>,
    /// Blockers in the latest check-in of open goals, reported while they answered for the goal.
    pub open_blockers: u32,
    /// Brier score over closed goals whose scored forecast was reported while they answered for
    /// the goal (achieved = 1, missed = 0).
    pub brier_score: Option<f64>,
    /// Closed goals scored.
    pub brier_goals: u32,
}

/// Accountability of a plan, its goals and its people.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    let tallies = tallies(plan, now, today);
    let none = Tally::default();
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
        people: people(plan)
            .into_iter()
            .map(|p| person_row(plan, p, tallies.get(p).unwrap_or(&none)))
            .collect(),
    }
}

/// Accountability of one person in this plan as of `now` (`None` if they hold no role here
/// and never were accountable or responsible for anything here).
pub fn person_accountability(
    plan: &Plan,
    person: &PersonId,
    now: Timestamp,
) -> Option<PersonAccountability> {
    if !people(plan).contains(person) {
        return None;
    }
    let tallies = tallies(plan, now, calendar::utc_date(now));
    let none = Tally::default();
    Some(person_row(
        plan,
        person,
        tallies.get(person).unwrap_or(&none),
    ))
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn accountable_count(plan: &Plan, goal: &Goal) -> usize {
    let subject = RoleSubject::Goal(goal.goal_id.clone());
    plan.holders(Role::Accountable, &subject).count()
}

/// Cadence slots of one goal: (due, on time).
pub(crate) fn slots(plan: &Plan, goal: &Goal, today: Date) -> (u32, u32) {
    due_slots(plan, goal, today)
        .iter()
        .fold((0, 0), |(due, on_time), slot| {
            (due + 1, on_time + u32::from(slot.on_time))
        })
}

/// A cadence slot that has fallen due.
#[derive(Clone, Copy, Debug)]
struct DueSlot {
    /// UTC day number of its deadline `S + (k+1)*c + grace`: it fell due at that day's 00:00.
    deadline: i64,
    /// Whether a check-in filled it in time.
    on_time: bool,
}

/// The due cadence slots of one goal, in order.
///
/// Slot k covers days `[S + k*c, S + (k+1)*c)` from the goal's start S. It is due once it lies
/// wholly before the goal stopped needing check-ins (plan end + 1 day, or the closing day) and
/// its deadline `S + (k+1)*c + grace` has been reached. It is on time when a check-in on the goal
/// was recorded (UTC day) in `[S + k*c, S + (k+1)*c + grace)`; each check-in counts for at most
/// one slot (slots take the earliest unused check-in in their window, in order).
fn due_slots(plan: &Plan, goal: &Goal, today: Date) -> Vec<DueSlot> {
    let cadence = i64::from(plan.checkin_cadence_days);
    if cadence <= 0 {
        return Vec::new();
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
    let mut due = Vec::new();
    let mut k = 0i64;
    loop {
        let slot_start = start + k * cadence;
        let slot_end = slot_start + cadence;
        if slot_end > stop || slot_end + grace > today {
            break;
        }
        while unused.next_if(|d| *d < slot_start).is_some() {}
        due.push(DueSlot {
            deadline: slot_end + grace,
            on_time: unused.next_if(|d| *d < slot_end + grace).is_some(),
        });
        k += 1;
    }
    due
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

/// The forecast a closed goal is scored on, with its outcome (achieved = 1, missed = 0): the
/// latest check-in recorded before closing. `None` for open or dropped goals and goals closed
/// without a check-in.
fn scored_forecast(goal: &Goal) -> Option<(&CheckIn, f64)> {
    let closure = goal.closed.as_ref()?;
    let outcome = match closure.outcome {
        Outcome::Achieved => 1.0,
        Outcome::Missed => 0.0,
        Outcome::Dropped => return None,
    };
    // Latest by effective day, then recording time (the last of equals, as `chronological`).
    goal.check_ins
        .iter()
        .filter(|c| c.recorded_at <= closure.at)
        .max_by(|a, b| {
            a.effective_on
                .cmp(&b.effective_on)
                .then(a.recorded_at.cmp(&b.recorded_at))
        })
        .map(|c| (c, outcome))
}

/// Mean of `(f - o)^2` over closed goals with an outcome of achieved (o = 1) or missed (o = 0)
/// and a check-in recorded before closing; f = confidence of the latest such check-in.
pub(crate) fn brier(goals: &[&Goal]) -> (Option<f64>, u32) {
    let mut sum = 0.0;
    let mut n = 0u32;
    for (forecast, o) in goals.iter().filter_map(|g| scored_forecast(g)) {
        sum += (forecast.confidence - o) * (forecast.confidence - o);
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

/// Who held which role when, indexed by subject (built once per report).
struct RoleHistory<'a> {
    by_subject: HashMap<RoleSubject, Vec<Tenure<'a>>>,
}

impl<'a> RoleHistory<'a> {
    fn of(plan: &'a Plan) -> Self {
        let mut by_subject: HashMap<RoleSubject, Vec<Tenure<'a>>> = HashMap::new();
        for tenure in plan.tenures() {
            let subject = RoleSubject::from_ids(tenure.goal_id, tenure.step_id);
            by_subject.entry(subject).or_default().push(tenure);
        }
        Self { by_subject }
    }

    /// Holders of `role` on `subject` at `t`, each with the start of the tenure that covers `t`.
    fn held_at(&self, subject: &RoleSubject, role: Role, t: Timestamp) -> Vec<Owner<'a>> {
        let mut held: Vec<Owner<'a>> = self
            .by_subject
            .get(subject)
            .into_iter()
            .flatten()
            .filter(|r| r.role == role && r.covers(t))
            .map(|r| Owner {
                person: r.person,
                since: r.from,
            })
            .collect();
        held.sort_by(|a, b| a.person.cmp(b.person).then(a.since.cmp(&b.since)));
        held.dedup_by(|later, earlier| later.person == earlier.person);
        held
    }

    /// Who answers for `subject` at `t`: its accountable holders then, else its responsible ones.
    fn answerable_at(&self, subject: &RoleSubject, t: Timestamp) -> Vec<Owner<'a>> {
        let accountable = self.held_at(subject, Role::Accountable, t);
        if accountable.is_empty() {
            self.held_at(subject, Role::Responsible, t)
        } else {
            accountable
        }
    }

    /// Who answers for a goal at `t`.
    fn goal_owners_at(&self, goal_id: &GoalId, t: Timestamp) -> Vec<Owner<'a>> {
        self.answerable_at(&RoleSubject::Goal(goal_id.clone()), t)
    }

    /// Who answers for a step at `t`: the step's own accountable (else responsible) holders
    /// then, or, when it had none, its goal's.
    fn step_owners_at(&self, step: &Step, t: Timestamp) -> Vec<Owner<'a>> {
        let own = self.answerable_at(&RoleSubject::Step(step.step_id.clone()), t);
        if own.is_empty() {
            self.goal_owners_at(&step.goal_id, t)
        } else {
            own
        }
    }
}

/// A person answering for something at an instant, and since when they held that role.
#[derive(Clone, Copy, Debug)]
struct Owner<'a> {
    person: &'a PersonId,
    since: Timestamp,
}

/// What one person is credited with.
#[derive(Clone, Debug, Default)]
struct Tally {
    slots_due: u32,
    slots_on_time: u32,
    steps_due: u32,
    steps_done_on_time: u32,
    overdue_steps: u32,
    open_blockers: u32,
    staleness_days: Option<f64>,
    brier_sum: f64,
    brier_goals: u32,
}

/// The instant a step fell due: the start of the day after its due date (a step is due once
/// `due < today`), or when it was added if that was later.
fn step_due_moment(step: &Step) -> Timestamp {
    calendar::start_of_day(calendar::day_number(step.due) + 1).max(step.added_at)
}

/// Every person's credited figures: each slot, step, blocker and forecast goes to whoever held
/// the relevant role (accountable, else responsible) at the moment it fell due or was reported.
fn tallies<'a>(plan: &'a Plan, now: Timestamp, today: Date) -> BTreeMap<&'a PersonId, Tally> {
    let history = RoleHistory::of(plan);
    let mut tally: BTreeMap<&'a PersonId, Tally> = BTreeMap::new();
    for goal in plan.goals.values() {
        // Punctuality: a slot belongs to whoever answered for the goal when its deadline came.
        for slot in due_slots(plan, goal, today) {
            let moment = calendar::start_of_day(slot.deadline);
            for owner in history.goal_owners_at(&goal.goal_id, moment) {
                let t = tally.entry(owner.person).or_default();
                t.slots_due += 1;
                t.slots_on_time += u32::from(slot.on_time);
            }
        }
        if goal.is_open() {
            // Staleness: the current owners, counted from the last check-in or from when they
            // took the goal over, whichever is later.
            let last = goal
                .check_ins
                .iter()
                .map(|c| c.recorded_at)
                .max()
                .unwrap_or(goal.defined_at);
            for owner in history.goal_owners_at(&goal.goal_id, now) {
                let days = calendar::days_between_instants(last.max(owner.since), now);
                let t = tally.entry(owner.person).or_default();
                t.staleness_days = Some(t.staleness_days.map_or(days, |d| d.max(days)));
            }
            // Open blockers: to whoever answered for the goal when they were reported.
            if let Some(latest) = chronological(&goal.check_ins).last()
                && !latest.blockers.is_empty()
            {
                for owner in history.goal_owners_at(&goal.goal_id, latest.recorded_at) {
                    tally.entry(owner.person).or_default().open_blockers +=
                        count(latest.blockers.len());
                }
            }
        }
        // Brier score: the forecast scored belongs to whoever answered for the goal when it
        // was reported.
        if let Some((forecast, outcome)) = scored_forecast(goal) {
            let error = (forecast.confidence - outcome) * (forecast.confidence - outcome);
            for owner in history.goal_owners_at(&goal.goal_id, forecast.recorded_at) {
                let t = tally.entry(owner.person).or_default();
                t.brier_sum += error;
                t.brier_goals += 1;
            }
        }
    }
    for step in plan.steps.values() {
        let goal = plan.goals.get(&step.goal_id);
        if goal.is_some_and(Goal::is_dropped) || step.due >= today {
            continue;
        }
        let kept = step
            .completed_at
            .is_some_and(|at| calendar::utc_date(at) <= step.due);
        let overdue = !step.is_completed() && goal.is_some_and(Goal::is_open);
        for owner in history.step_owners_at(step, step_due_moment(step)) {
            let t = tally.entry(owner.person).or_default();
            t.steps_due += 1;
            t.steps_done_on_time += u32::from(kept);
            t.overdue_steps += u32::from(overdue);
        }
    }
    tally
}

/// Whether `person` owns `goal` now (accountable or responsible on it).
fn owns_goal(plan: &Plan, person: &PersonId, goal_id: &GoalId) -> bool {
    let subject = RoleSubject::Goal(goal_id.clone());
    plan.holders(Role::Accountable, &subject)
        .chain(plan.holders(Role::Responsible, &subject))
        .any(|p| p == person)
}

/// People with a row: everyone holding a role now, and everyone who ever was accountable or
/// responsible for something here (a handover does not erase their record).
fn people(plan: &Plan) -> BTreeSet<&PersonId> {
    plan.roles
        .iter()
        .map(|r| &r.person)
        .chain(
            plan.past_roles
                .iter()
                .filter(|r| matches!(r.role, Role::Accountable | Role::Responsible))
                .map(|r| &r.person),
        )
        .collect()
}

fn person_row(plan: &Plan, person: &PersonId, tally: &Tally) -> PersonAccountability {
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
    PersonAccountability {
        person: person.clone(),
        roles,
        goals_owned: owned.iter().map(|g| g.goal_id.clone()).collect(),
        punctuality: ratio(f64::from(tally.slots_on_time), f64::from(tally.slots_due)),
        slots_due: tally.slots_due,
        slots_on_time: tally.slots_on_time,
        staleness_days: tally.staleness_days,
        say_do_ratio: ratio(
            f64::from(tally.steps_done_on_time),
            f64::from(tally.steps_due),
        ),
        steps_due: tally.steps_due,
        steps_done_on_time: tally.steps_done_on_time,
        overdue_steps: tally.overdue_steps,
        ownership_coverage: ratio(covered as f64, involved.len() as f64),
        open_blockers: tally.open_blockers,
        brier_score: ratio(tally.brier_sum, f64::from(tally.brier_goals)),
        brier_goals: tally.brier_goals,
    }
}
