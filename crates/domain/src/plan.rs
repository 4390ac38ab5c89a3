//! The Plan aggregate: its full state, and `evolve`, which folds one event into it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use imbl::{OrdMap, Vector};

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::event::{
    BaselineSet, CheckInRecorded, Event, GoalAdjusted, GoalClosed, GoalDefined, PlanArchived,
    PlanCreated, RoleAssigned, RoleRevoked, StepAdded, StepCompleted, StepReopened,
};
use crate::id::{GoalId, PersonId, PlanId, StepId};

/// Whether a KPI should go up or down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Higher is better.
    Increase,
    /// Lower is better.
    Decrease,
}

impl Direction {
    /// "increase" or "decrease".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Increase => "increase",
            Self::Decrease => "decrease",
        }
    }
}

/// A RACI role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Does the work.
    Responsible,
    /// Answers for the result; exactly one per subject.
    Accountable,
    /// Gives input before.
    Consulted,
    /// Is told after.
    Informed,
}

impl Role {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Responsible => "responsible",
            Self::Accountable => "accountable",
            Self::Consulted => "consulted",
            Self::Informed => "informed",
        }
    }
}

/// A goal's status, as reported in a check-in or computed from progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TrackStatus {
    /// Progress keeps pace with time.
    OnTrack,
    /// Somewhat behind.
    AtRisk,
    /// Clearly behind.
    OffTrack,
}

impl TrackStatus {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnTrack => "on_track",
            Self::AtRisk => "at_risk",
            Self::OffTrack => "off_track",
        }
    }

    /// Whether this status asks for a course correction.
    pub fn is_warning(self) -> bool {
        matches!(self, Self::AtRisk | Self::OffTrack)
    }
}

/// How a goal ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Reached.
    Achieved,
    /// Not reached.
    Missed,
    /// Abandoned on purpose (removed from scope).
    Dropped,
}

impl Outcome {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Achieved => "achieved",
            Self::Missed => "missed",
            Self::Dropped => "dropped",
        }
    }
}

/// What an adjustment changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentKind {
    /// The KPI target moved.
    Target,
    /// The due date moved.
    Due,
    /// What the goal covers changed (title reworded; in metrics also steps/goals added or dropped after a baseline).
    Scope,
    /// The roll-up weight changed.
    Weight,
}

/// A goal in another plan.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GoalRef {
    /// The other plan.
    pub plan_id: PlanId,
    /// The goal there.
    pub goal_id: GoalId,
}

/// How a goal is measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Kpi {
    /// Unit of measure.
    pub unit: String,
    /// Value at the start.
    pub baseline: f64,
    /// Value to reach (current; adjustments move it).
    pub target: f64,
    /// Whether higher or lower is better.
    pub direction: Direction,
}

/// The before and after value of one changed field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Change<T> {
    /// Value before the change.
    pub before: T,
    /// Value after the change.
    pub after: T,
}

/// A report on a goal. Bitemporal: `effective_on` is the day described, `recorded_at` when it was told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckIn {
    /// Unique in the plan.
    pub checkin_id: String,
    /// KPI value, if reported.
    pub value: Option<f64>,
    /// Probability of achieving the goal.
    pub confidence: f64,
    /// Reported status, if given.
    pub status: Option<TrackStatus>,
    /// The day the report describes.
    pub effective_on: Date,
    /// When it was recorded.
    pub recorded_at: Timestamp,
    /// Free text.
    pub note: Option<String>,
    /// What stands in the way.
    pub blockers: Vec<String>,
    /// Stream version of the `CheckInRecorded` event (0 in state stored before versions were
    /// kept).
    #[serde(default)]
    pub version: u64,
}

/// A goal's closure: outcome on record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GoalClosure {
    /// What happened.
    pub outcome: Outcome,
    /// Free text.
    pub note: Option<String>,
    /// When it was closed.
    pub at: Timestamp,
    /// Stream version of the `GoalClosed` event (0 in state stored before versions were kept).
    #[serde(default)]
    pub version: u64,
}

/// A goal with its KPI, check-ins and adjustment history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Goal {
    /// Its id.
    pub goal_id: GoalId,
    /// Current title.
    pub title: String,
    /// Parent goal in this plan.
    pub parent_goal_id: Option<GoalId>,
    /// Goal of another plan this one contributes to.
    pub aligns_to: Option<GoalRef>,
    /// KPI, with the current target.
    pub kpi: Option<Kpi>,
    /// Current due date.
    pub due: Date,
    /// Current roll-up weight.
    pub weight: f64,
    /// When it was defined.
    pub defined_at: Timestamp,
    /// Outcome, once closed.
    pub closed: Option<GoalClosure>,
    /// Check-ins in recorded order. A persistent vector: a clone of the plan shares it, so
    /// states of the plan at many versions cost memory in proportion to what changed between
    /// them (serialized as a JSON array, like a `Vec`).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<CheckIn>))]
    pub check_ins: Vector<CheckIn>,
    /// Adjustments in recorded order (a persistent vector, as `check_ins`).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<GoalAdjusted>))]
    pub adjustments: Vector<GoalAdjusted>,
    /// Stream version of the `GoalDefined` event (0 in state stored before versions were kept).
    #[serde(default)]
    pub defined_version: u64,
    /// Stream version of the latest `GoalAdjusted` that moved the due date.
    #[serde(default)]
    pub due_version: Option<u64>,
    /// Stream version of the latest `GoalAdjusted` that moved the KPI target.
    #[serde(default)]
    pub target_version: Option<u64>,
}

impl Goal {
    /// Whether the goal still accepts changes.
    pub fn is_open(&self) -> bool {
        self.closed.is_none()
    }

    /// The outcome, if closed.
    pub fn outcome(&self) -> Option<Outcome> {
        self.closed.as_ref().map(|c| c.outcome)
    }

    /// Whether the goal was closed as dropped (removed from scope).
    pub fn is_dropped(&self) -> bool {
        self.outcome() == Some(Outcome::Dropped)
    }
}

/// A reopening of a step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepReopening {
    /// When.
    pub at: Timestamp,
    /// Why.
    pub reason: Option<String>,
}

/// An actionable step under a goal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Step {
    /// Its id.
    pub step_id: StepId,
    /// The goal it serves.
    pub goal_id: GoalId,
    /// Title.
    pub title: String,
    /// Due date.
    pub due: Date,
    /// Estimated effort in days.
    pub estimate_days: Option<f64>,
    /// When it was added.
    pub added_at: Timestamp,
    /// When it was (last) completed; `None` while open or after a reopening.
    pub completed_at: Option<Timestamp>,
    /// Every completion, in order.
    pub completions: Vec<Timestamp>,
    /// Every reopening, in order.
    pub reopenings: Vec<StepReopening>,
    /// Stream version of the `StepAdded` event (0 in state stored before versions were kept).
    #[serde(default)]
    pub added_version: u64,
}

impl Step {
    /// Whether the step is currently done.
    pub fn is_completed(&self) -> bool {
        self.completed_at.is_some()
    }
}

/// What a role applies to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RoleSubject {
    /// The whole plan.
    Plan,
    /// One goal.
    Goal(GoalId),
    /// One step.
    Step(StepId),
}

impl RoleSubject {
    /// The subject named by optional goal/step ids (goal wins if both are given).
    pub fn from_ids(goal_id: Option<&GoalId>, step_id: Option<&StepId>) -> Self {
        match (goal_id, step_id) {
            (Some(goal), _) => Self::Goal(goal.clone()),
            (None, Some(step)) => Self::Step(step.clone()),
            (None, None) => Self::Plan,
        }
    }
}

impl fmt::Display for RoleSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plan => f.write_str("the plan"),
            Self::Goal(goal) => write!(f, "goal {goal}"),
            Self::Step(step) => write!(f, "step {step}"),
        }
    }
}

/// A person holding a role on the plan, a goal or a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoleAssignment {
    /// Who.
    pub person: PersonId,
    /// Which role.
    pub role: Role,
    /// On this goal (if any).
    pub goal_id: Option<GoalId>,
    /// On this step (if any).
    pub step_id: Option<StepId>,
    /// Since when.
    pub assigned_at: Timestamp,
}

impl RoleAssignment {
    /// What the role applies to.
    pub fn subject(&self) -> RoleSubject {
        RoleSubject::from_ids(self.goal_id.as_ref(), self.step_id.as_ref())
    }
}

/// A role a person held and no longer holds: from its `RoleAssigned` to its `RoleRevoked`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PastRole {
    /// Who.
    pub person: PersonId,
    /// Which role.
    pub role: Role,
    /// On this goal (if any).
    pub goal_id: Option<GoalId>,
    /// On this step (if any).
    pub step_id: Option<StepId>,
    /// Held from this instant (the `RoleAssigned` decision time) ...
    pub assigned_at: Timestamp,
    /// ... until this one, excluded (the `RoleRevoked` decision time).
    pub revoked_at: Timestamp,
}

impl PastRole {
    /// What the role applied to.
    pub fn subject(&self) -> RoleSubject {
        RoleSubject::from_ids(self.goal_id.as_ref(), self.step_id.as_ref())
    }
}

/// One stretch of time during which a person held a role: a current assignment (open-ended)
/// or a past one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tenure<'a> {
    /// Who.
    pub person: &'a PersonId,
    /// Which role.
    pub role: Role,
    /// On this goal (if any).
    pub goal_id: Option<&'a GoalId>,
    /// On this step (if any).
    pub step_id: Option<&'a StepId>,
    /// From this instant (included).
    pub from: Timestamp,
    /// Until this instant (excluded); `None` while still held.
    pub until: Option<Timestamp>,
}

impl Tenure<'_> {
    /// Whether the role was held at instant `t`: `from <= t < until`.
    pub fn covers(&self, t: Timestamp) -> bool {
        self.from <= t && self.until.is_none_or(|until| t < until)
    }
}

/// A goal as frozen in a baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BaselineGoal {
    /// Title then.
    pub title: String,
    /// Parent then.
    pub parent_goal_id: Option<GoalId>,
    /// KPI starting value (if KPI).
    pub kpi_baseline: Option<f64>,
    /// KPI target then (if KPI).
    pub target: Option<f64>,
    /// KPI direction (if KPI).
    pub direction: Option<Direction>,
    /// Due date then.
    pub due: Date,
    /// Weight then.
    pub weight: f64,
}

/// A step as frozen in a baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BaselineStep {
    /// Its goal.
    pub goal_id: GoalId,
    /// Title then.
    pub title: String,
    /// Due date then.
    pub due: Date,
}

/// A named, frozen copy of the plan's goals and steps, the reference for drift.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Baseline {
    /// Its label.
    pub label: String,
    /// 1 for the first baseline set, 2 for the next, ...
    pub sequence: u32,
    /// When it was set.
    pub set_at: Timestamp,
    /// Goals then.
    pub goals: BTreeMap<GoalId, BaselineGoal>,
    /// Steps then.
    pub steps: BTreeMap<StepId, BaselineStep>,
    /// Stream version of the `BaselineSet` event (0 in state stored before versions were kept).
    #[serde(default)]
    pub version: u64,
}

impl Baseline {
    /// Number of items (goals + steps) frozen in it.
    pub fn size(&self) -> usize {
        self.goals.len() + self.steps.len()
    }
}

/// The full state of one plan. `Plan::default()` is a plan that does not exist yet.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Plan {
    /// Its id, when the creating command carried it.
    pub plan_id: Option<PlanId>,
    /// Title.
    pub title: String,
    /// Intended outcome in words.
    pub outcome: Option<String>,
    /// First day of the horizon.
    pub starts_on: Date,
    /// Last day of the horizon (inclusive).
    pub ends_on: Date,
    /// Days between expected check-ins per goal.
    pub checkin_cadence_days: u32,
    /// Grace days after each cadence slot.
    pub checkin_grace_days: u32,
    /// When it was created; `None` means the plan does not exist.
    pub created_at: Option<Timestamp>,
    /// Goals by id.
    pub goals: BTreeMap<GoalId, Goal>,
    /// Steps by id: a persistent ordered map, shared between clones like the goals' histories
    /// (serialized as a JSON object, like a `BTreeMap`).
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, Step>))]
    pub steps: OrdMap<StepId, Step>,
    /// Current role assignments in assignment order.
    pub roles: Vec<RoleAssignment>,
    /// Revoked role assignments, in revocation order: with `roles`, who held which role when.
    /// (Empty in state stored before it was kept, until the plan is replayed from its events.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub past_roles: Vec<PastRole>,
    /// Baselines by label.
    pub baselines: BTreeMap<String, Baseline>,
    /// When it was archived; `Some` means no further commands are accepted.
    pub archived_at: Option<Timestamp>,
    /// Why it was archived.
    pub archive_reason: Option<String>,
    /// Number of check-ins ever recorded.
    pub checkin_count: u64,
    /// Number of events applied (the stream version).
    pub version: u64,
    /// Decision time of the last event applied.
    pub updated_at: Option<Timestamp>,
    /// Where each check-in id is: derived from `goals`, never serialized.
    #[serde(skip)]
    checkin_index: CheckInIndex,
}

/// Check-in id -> (goal, index in its `check_ins`). Built from the goals on the first lookup
/// (so a plan read from a snapshot has one too) and kept current by [`evolve`]; check-ins are
/// only ever appended, so the indexes stay valid (a redefined goal, which `decide` never
/// produces, drops the index). Of an id recorded twice (also never produced by `decide`), one
/// is found. Without it, every `RecordCheckIn` scanned every check-in of the plan twice.
#[derive(Clone, Debug, Default)]
struct CheckInIndex(std::sync::OnceLock<HashMap<String, (GoalId, usize)>>);

impl PartialEq for CheckInIndex {
    /// Derived data: two plans are equal by their goals, whatever either has looked up.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl CheckInIndex {
    fn get(&self, goals: &BTreeMap<GoalId, Goal>) -> &HashMap<String, (GoalId, usize)> {
        self.0.get_or_init(|| {
            let mut index = HashMap::new();
            for goal in goals.values() {
                for (at, check_in) in goal.check_ins.iter().enumerate() {
                    index
                        .entry(check_in.checkin_id.clone())
                        .or_insert_with(|| (goal.goal_id.clone(), at));
                }
            }
            index
        })
    }
}

impl Plan {
    /// Whether the plan has been created.
    pub fn exists(&self) -> bool {
        self.created_at.is_some()
    }

    /// Whether the plan is archived.
    pub fn is_archived(&self) -> bool {
        self.archived_at.is_some()
    }

    /// Folds events, in order, into a new plan.
    pub fn replay<'a>(events: impl IntoIterator<Item = &'a Event>) -> Plan {
        events.into_iter().fold(Plan::default(), evolve)
    }

    /// The baseline set first, if any.
    pub fn first_baseline(&self) -> Option<&Baseline> {
        self.baselines.values().min_by_key(|b| b.sequence)
    }

    /// The check-in with this id, and its goal.
    pub fn check_in(&self, checkin_id: &str) -> Option<(&Goal, &CheckIn)> {
        let (goal_id, at) = self.checkin_index.get(&self.goals).get(checkin_id)?;
        let goal = self.goals.get(goal_id)?;
        goal.check_ins
            .get(*at)
            .filter(|check_in| check_in.checkin_id == checkin_id)
            .map(|check_in| (goal, check_in))
    }

    /// Direct children of a goal, in id order.
    pub fn children_of<'a>(&'a self, goal_id: &'a GoalId) -> impl Iterator<Item = &'a Goal> + 'a {
        self.goals
            .values()
            .filter(move |g| g.parent_goal_id.as_ref() == Some(goal_id))
    }

    /// Steps of a goal, in id order.
    pub fn steps_of<'a>(&'a self, goal_id: &'a GoalId) -> impl Iterator<Item = &'a Step> + 'a {
        self.steps.values().filter(move |s| &s.goal_id == goal_id)
    }

    /// Goals without a parent, in id order.
    pub fn root_goals(&self) -> impl Iterator<Item = &Goal> {
        self.goals
            .values()
            .filter(move |g| match &g.parent_goal_id {
                None => true,
                // A dangling parent (never produced by decide) is treated as a root.
                Some(parent) => !self.goals.contains_key(parent),
            })
    }

    /// Current holders of `role` on `subject`.
    pub fn holders<'a>(
        &'a self,
        role: Role,
        subject: &'a RoleSubject,
    ) -> impl Iterator<Item = &'a PersonId> + 'a {
        self.roles
            .iter()
            .filter(move |r| r.role == role && &r.subject() == subject)
            .map(|r| &r.person)
    }

    /// Every stretch of time a role was held on this plan: past ones in revocation order, then
    /// current ones in assignment order.
    pub fn tenures(&self) -> impl Iterator<Item = Tenure<'_>> + '_ {
        let past = self.past_roles.iter().map(|r| Tenure {
            person: &r.person,
            role: r.role,
            goal_id: r.goal_id.as_ref(),
            step_id: r.step_id.as_ref(),
            from: r.assigned_at,
            until: Some(r.revoked_at),
        });
        let current = self.roles.iter().map(|r| Tenure {
            person: &r.person,
            role: r.role,
            goal_id: r.goal_id.as_ref(),
            step_id: r.step_id.as_ref(),
            from: r.assigned_at,
            until: None,
        });
        past.chain(current)
    }

    /// The check-in id `decide` derives when the client gives none: "c{n}", first free n.
    pub fn next_checkin_id(&self) -> String {
        let mut n = self.checkin_count + 1;
        loop {
            let candidate = format!("c{n}");
            if self.check_in(&candidate).is_none() {
                return candidate;
            }
            n += 1;
        }
    }
}

/// Replays only the events decided at or before `t`: the plan as it was known at `t`.
pub fn as_of<'a>(events: impl IntoIterator<Item = &'a Event>, t: Timestamp) -> Plan {
    events
        .into_iter()
        .filter(|e| e.at() <= t)
        .fold(Plan::default(), evolve)
}

/// Applies one event to the plan. Total: an event that does not fit the state is counted but changes nothing else.
pub fn evolve(mut plan: Plan, event: &Event) -> Plan {
    plan.version += 1;
    plan.updated_at = Some(event.at());
    match event {
        Event::PlanCreated(e) => apply_plan_created(&mut plan, e),
        Event::GoalDefined(e) => apply_goal_defined(&mut plan, e),
        Event::StepAdded(e) => apply_step_added(&mut plan, e),
        Event::RoleAssigned(e) => apply_role_assigned(&mut plan, e),
        Event::RoleRevoked(e) => apply_role_revoked(&mut plan, e),
        Event::CheckInRecorded(e) => apply_check_in(&mut plan, e),
        Event::StepCompleted(e) => apply_step_completed(&mut plan, e),
        Event::StepReopened(e) => apply_step_reopened(&mut plan, e),
        Event::GoalAdjusted(e) => apply_goal_adjusted(&mut plan, e),
        Event::BaselineSet(e) => apply_baseline_set(&mut plan, e),
        Event::GoalClosed(e) => apply_goal_closed(&mut plan, e),
        Event::PlanArchived(e) => apply_plan_archived(&mut plan, e),
    }
    plan
}

fn apply_plan_created(plan: &mut Plan, e: &PlanCreated) {
    plan.plan_id = e.plan_id.clone();
    plan.title = e.title.clone();
    plan.outcome = e.outcome.clone();
    plan.starts_on = e.starts_on;
    plan.ends_on = e.ends_on;
    plan.checkin_cadence_days = e.checkin_cadence_days;
    plan.checkin_grace_days = e.checkin_grace_days;
    plan.created_at = Some(e.at);
}

fn apply_goal_defined(plan: &mut Plan, e: &GoalDefined) {
    // `decide` never defines a goal twice, but `evolve` is total: a redefined goal loses its
    // check-ins, so the index of where they were is rebuilt on the next lookup.
    if plan.goals.contains_key(&e.goal_id) {
        plan.checkin_index = CheckInIndex::default();
    }
    plan.goals.insert(
        e.goal_id.clone(),
        Goal {
            goal_id: e.goal_id.clone(),
            title: e.title.clone(),
            parent_goal_id: e.parent_goal_id.clone(),
            aligns_to: e.aligns_to.clone(),
            kpi: e.kpi.clone(),
            due: e.due,
            weight: e.weight,
            defined_at: e.at,
            closed: None,
            check_ins: Vector::new(),
            adjustments: Vector::new(),
            defined_version: plan.version,
            due_version: None,
            target_version: None,
        },
    );
}

fn apply_step_added(plan: &mut Plan, e: &StepAdded) {
    plan.steps.insert(
        e.step_id.clone(),
        Step {
            step_id: e.step_id.clone(),
            goal_id: e.goal_id.clone(),
            title: e.title.clone(),
            due: e.due,
            estimate_days: e.estimate_days,
            added_at: e.at,
            completed_at: None,
            completions: Vec::new(),
            reopenings: Vec::new(),
            added_version: plan.version,
        },
    );
}

fn apply_role_assigned(plan: &mut Plan, e: &RoleAssigned) {
    let subject = RoleSubject::from_ids(e.goal_id.as_ref(), e.step_id.as_ref());
    let already = plan
        .roles
        .iter()
        .any(|r| r.person == e.person && r.role == e.role && r.subject() == subject);
    if !already {
        plan.roles.push(RoleAssignment {
            person: e.person.clone(),
            role: e.role,
            goal_id: e.goal_id.clone(),
            step_id: e.step_id.clone(),
            assigned_at: e.at,
        });
    }
}

fn apply_role_revoked(plan: &mut Plan, e: &RoleRevoked) {
    let subject = RoleSubject::from_ids(e.goal_id.as_ref(), e.step_id.as_ref());
    let (ended, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut plan.roles)
        .into_iter()
        .partition(|r| r.person == e.person && r.role == e.role && r.subject() == subject);
    plan.roles = kept;
    plan.past_roles.extend(ended.into_iter().map(|r| PastRole {
        person: r.person,
        role: r.role,
        goal_id: r.goal_id,
        step_id: r.step_id,
        assigned_at: r.assigned_at,
        revoked_at: e.at,
    }));
}

fn apply_check_in(plan: &mut Plan, e: &CheckInRecorded) {
    plan.checkin_count += 1;
    if let Some(goal) = plan.goals.get_mut(&e.goal_id) {
        if let Some(index) = plan.checkin_index.0.get_mut() {
            index
                .entry(e.checkin_id.clone())
                .or_insert_with(|| (e.goal_id.clone(), goal.check_ins.len()));
        }
        goal.check_ins.push_back(CheckIn {
            checkin_id: e.checkin_id.clone(),
            value: e.value,
            confidence: e.confidence,
            status: e.status,
            effective_on: e.effective_on,
            recorded_at: e.at,
            note: e.note.clone(),
            blockers: e.blockers.clone(),
            version: plan.version,
        });
    }
}

fn apply_step_completed(plan: &mut Plan, e: &StepCompleted) {
    if let Some(step) = plan.steps.get_mut(&e.step_id) {
        step.completed_at = Some(e.at);
        step.completions.push(e.at);
    }
}

fn apply_step_reopened(plan: &mut Plan, e: &StepReopened) {
    if let Some(step) = plan.steps.get_mut(&e.step_id) {
        step.completed_at = None;
        step.reopenings.push(StepReopening {
            at: e.at,
            reason: e.reason.clone(),
        });
    }
}

fn apply_goal_adjusted(plan: &mut Plan, e: &GoalAdjusted) {
    if let Some(goal) = plan.goals.get_mut(&e.goal_id) {
        if let (Some(change), Some(kpi)) = (&e.target, goal.kpi.as_mut()) {
            kpi.target = change.after;
            goal.target_version = Some(plan.version);
        }
        if let Some(change) = &e.due {
            goal.due = change.after;
            goal.due_version = Some(plan.version);
        }
        if let Some(change) = &e.title {
            goal.title = change.after.clone();
        }
        if let Some(change) = &e.weight {
            goal.weight = change.after;
        }
        goal.adjustments.push_back(e.clone());
    }
}

fn apply_baseline_set(plan: &mut Plan, e: &BaselineSet) {
    let sequence = plan
        .baselines
        .values()
        .map(|b| b.sequence)
        .max()
        .unwrap_or(0)
        + 1;
    plan.baselines.insert(
        e.label.clone(),
        Baseline {
            label: e.label.clone(),
            sequence,
            set_at: e.at,
            goals: e.goals.clone(),
            steps: e.steps.clone(),
            version: plan.version,
        },
    );
}

fn apply_goal_closed(plan: &mut Plan, e: &GoalClosed) {
    if let Some(goal) = plan.goals.get_mut(&e.goal_id) {
        goal.closed = Some(GoalClosure {
            outcome: e.outcome,
            note: e.note.clone(),
            at: e.at,
            version: plan.version,
        });
    }
}

fn apply_plan_archived(plan: &mut Plan, e: &PlanArchived) {
    plan.archived_at = Some(e.at);
    plan.archive_reason = e.reason.clone();
}
