//! Why a command was refused: one variant per rule, each naming the field, the value and the rule.

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::id::IdError;

/// How a caller should treat an error (the API maps these to HTTP statuses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Malformed input, wrong regardless of the plan's state (HTTP 400).
    Invalid,
    /// A rule violated against the plan's current state (HTTP 422).
    Conflict,
    /// The plan (or a queried baseline) does not exist (HTTP 404).
    NotFound,
}

/// A command rejected by `decide`, or a query that cannot be answered.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// A command other than CreatePlan was sent to a plan that does not exist.
    #[error("plan does not exist; send CreatePlan first")]
    PlanNotFound,
    /// CreatePlan was sent to a plan that already exists.
    #[error("plan already exists (version {version}); choose another plan_id")]
    PlanAlreadyExists {
        /// The plan's current version.
        version: u64,
    },
    /// The plan is archived and accepts no further commands.
    #[error("plan is archived; {command} is not accepted on an archived plan")]
    PlanArchived {
        /// The refused command's name.
        command: &'static str,
    },
    /// An identifier is outside `[A-Za-z0-9._-]{1,64}`.
    #[error(
        "{field} {value:?} is not a valid id: {rule}; use 1 to 64 characters from A-Z a-z 0-9 . _ -"
    )]
    InvalidId {
        /// The JSON field at fault.
        field: String,
        /// The rejected value.
        value: String,
        /// The rule that was broken.
        rule: &'static str,
    },
    /// A required text field is empty or only whitespace.
    #[error("{field} is required and must not be blank")]
    TextRequired {
        /// The JSON field at fault.
        field: String,
    },
    /// A text field is longer than allowed.
    #[error("{field} is {len} characters long; the limit is {max}")]
    TextTooLong {
        /// The JSON field at fault.
        field: String,
        /// Its length in characters.
        len: usize,
        /// The limit in characters.
        max: usize,
    },
    /// A check-in lists more blockers than allowed.
    #[error("data.blockers has {count} entries; the limit is {max}")]
    TooManyBlockers {
        /// How many were sent.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A number is NaN or infinite.
    #[error("{field} is {value}; it must be a finite number")]
    NotFinite {
        /// The JSON field at fault.
        field: String,
        /// The rejected value.
        value: f64,
    },
    /// Confidence outside [0, 1].
    #[error("data.confidence {value} is outside [0, 1]; give a probability between 0 and 1")]
    ConfidenceOutOfRange {
        /// The rejected value.
        value: f64,
    },
    /// A number outside its allowed range.
    #[error("{field} {value} is outside [{min}, {max}]")]
    OutOfRange {
        /// The JSON field at fault.
        field: String,
        /// The rejected value.
        value: f64,
        /// Smallest allowed value.
        min: f64,
        /// Largest allowed value.
        max: f64,
    },
    /// The plan would end before it starts.
    #[error(
        "data.ends_on {ends_on} is before data.starts_on {starts_on}; a plan must end on or after its start"
    )]
    HorizonInverted {
        /// Requested start.
        starts_on: Date,
        /// Requested end.
        ends_on: Date,
    },
    /// The plan horizon is longer than allowed.
    #[error(
        "data.ends_on {ends_on} is {days} days after data.starts_on; a plan spans at most {max} days"
    )]
    HorizonTooLong {
        /// Requested end.
        ends_on: Date,
        /// Length asked for, in days.
        days: i64,
        /// The limit, in days.
        max: i64,
    },
    /// A due date outside the plan horizon.
    #[error(
        "{field} {due} is {side} the plan's {bound_name} {bound}; choose a date inside the horizon {starts_on}..{ends_on}"
    )]
    DueOutsideHorizon {
        /// The JSON field at fault.
        field: String,
        /// The rejected date.
        due: Date,
        /// "before" or "after".
        side: &'static str,
        /// "start" or "end".
        bound_name: &'static str,
        /// The bound that was crossed.
        bound: Date,
        /// Plan start.
        starts_on: Date,
        /// Plan end.
        ends_on: Date,
    },
    /// A check-in's effective day is in the future or before the plan starts.
    #[error(
        "data.effective_on {effective_on} is {rule}; give a day between {earliest} and {latest}"
    )]
    EffectiveOnOutOfRange {
        /// The rejected date.
        effective_on: Date,
        /// The rule that was broken.
        rule: &'static str,
        /// Earliest day accepted.
        earliest: Date,
        /// Latest day accepted (today, UTC).
        latest: Date,
    },
    /// A KPI target that points the wrong way for its direction.
    #[error(
        "{field} {target} contradicts direction {direction} from baseline {baseline}; an {direction} KPI needs a target {needed} the baseline"
    )]
    TargetAgainstDirection {
        /// The JSON field at fault.
        field: String,
        /// KPI baseline value.
        baseline: f64,
        /// Rejected target.
        target: f64,
        /// "increase" or "decrease".
        direction: &'static str,
        /// "at or above" or "at or below".
        needed: &'static str,
    },
    /// A role assignment names both a goal and a step.
    #[error(
        "give data.goal_id or data.step_id, not both; a role applies to the plan, one goal or one step"
    )]
    RoleSubjectAmbiguous,
    /// The goal does not exist in this plan.
    #[error("{field} {goal_id:?} names no goal of this plan; define it first with DefineGoal")]
    UnknownGoal {
        /// The JSON field at fault.
        field: String,
        /// The unknown goal id.
        goal_id: String,
    },
    /// The step does not exist in this plan.
    #[error("{field} {step_id:?} names no step of this plan; add it first with AddStep")]
    UnknownStep {
        /// The JSON field at fault.
        field: String,
        /// The unknown step id.
        step_id: String,
    },
    /// The check-in does not exist on that goal.
    #[error("data.in_response_to_checkin {checkin_id:?} names no check-in of goal {goal_id:?}")]
    UnknownCheckIn {
        /// Goal the adjustment targets.
        goal_id: String,
        /// The unknown check-in id.
        checkin_id: String,
    },
    /// A parent link that would make the goal tree cyclic.
    #[error(
        "data.parent_goal_id {parent_goal_id:?} would make goal {goal_id:?} its own ancestor; goals form a tree"
    )]
    ParentCycle {
        /// The goal being defined.
        goal_id: String,
        /// The requested parent.
        parent_goal_id: String,
    },
    /// A goal id already in use.
    #[error("data.goal_id {goal_id:?} is already defined in this plan; choose another id")]
    DuplicateGoal {
        /// The duplicate id.
        goal_id: String,
    },
    /// A step id already in use.
    #[error("data.step_id {step_id:?} is already added to this plan; choose another id")]
    DuplicateStep {
        /// The duplicate id.
        step_id: String,
    },
    /// A check-in id already in use.
    #[error("data.checkin_id {checkin_id:?} is already recorded in this plan; choose another id")]
    DuplicateCheckIn {
        /// The duplicate id.
        checkin_id: String,
    },
    /// A baseline label already in use.
    #[error(
        "data.label {label:?} is already a baseline of this plan; baselines are immutable, choose another label"
    )]
    DuplicateBaseline {
        /// The duplicate label.
        label: String,
    },
    /// The goal is closed and accepts no further changes.
    #[error("{field} {goal_id:?} is closed ({outcome}); a closed goal accepts no further changes")]
    GoalClosed {
        /// The JSON field at fault.
        field: String,
        /// The closed goal.
        goal_id: String,
        /// Its recorded outcome.
        outcome: &'static str,
    },
    /// The step is already completed.
    #[error("data.step_id {step_id:?} is already completed; reopen it first with ReopenStep")]
    StepAlreadyCompleted {
        /// The step.
        step_id: String,
    },
    /// The step is not completed, so it cannot be reopened.
    #[error("data.step_id {step_id:?} is not completed; only a completed step can be reopened")]
    StepNotCompleted {
        /// The step.
        step_id: String,
    },
    /// A second accountable person for the same subject.
    #[error(
        "{subject} already has {existing:?} as accountable; exactly one person is accountable, revoke that role first"
    )]
    SecondAccountable {
        /// "the plan", "goal ID" or "step ID".
        subject: String,
        /// The current accountable person.
        existing: String,
    },
    /// The same role is already assigned.
    #[error("{person:?} already holds {role} on {subject}")]
    RoleAlreadyAssigned {
        /// The person.
        person: String,
        /// The role.
        role: &'static str,
        /// "the plan", "goal ID" or "step ID".
        subject: String,
    },
    /// The role to revoke is not assigned.
    #[error("{person:?} does not hold {role} on {subject}; nothing to revoke")]
    RoleNotAssigned {
        /// The person.
        person: String,
        /// The role.
        role: &'static str,
        /// "the plan", "goal ID" or "step ID".
        subject: String,
    },
    /// AdjustGoal without any actual change.
    #[error(
        "AdjustGoal changes nothing on goal {goal_id:?}; give at least one of target, due, title, weight with a new value"
    )]
    NoChange {
        /// The goal.
        goal_id: String,
    },
    /// A target was given for a goal without a KPI.
    #[error("data.target is given but goal {goal_id:?} has no KPI; only KPI goals have a target")]
    TargetWithoutKpi {
        /// The goal.
        goal_id: String,
    },
    /// A check-in value was given for a goal without a KPI.
    #[error(
        "data.value is given but goal {goal_id:?} has no KPI; omit value or define the goal with a KPI"
    )]
    ValueWithoutKpi {
        /// The goal.
        goal_id: String,
    },
    /// A query named a baseline the plan does not have.
    #[error("baseline {label:?} does not exist in this plan; set it with SetBaseline")]
    UnknownBaseline {
        /// The unknown label.
        label: String,
    },
}

impl DomainError {
    /// Stable snake_case code for clients (e.g. "unknown_goal").
    pub fn code(&self) -> &'static str {
        match self {
            Self::PlanNotFound => "plan_not_found",
            Self::PlanAlreadyExists { .. } => "plan_exists",
            Self::PlanArchived { .. } => "plan_archived",
            Self::InvalidId { .. } => "invalid_id",
            Self::TextRequired { .. } => "text_required",
            Self::TextTooLong { .. } => "text_too_long",
            Self::TooManyBlockers { .. } => "too_many_blockers",
            Self::NotFinite { .. } => "not_finite",
            Self::ConfidenceOutOfRange { .. } => "confidence_out_of_range",
            Self::OutOfRange { .. } => "out_of_range",
            Self::HorizonInverted { .. } => "horizon_inverted",
            Self::HorizonTooLong { .. } => "horizon_too_long",
            Self::DueOutsideHorizon { .. } => "due_outside_horizon",
            Self::EffectiveOnOutOfRange { .. } => "effective_on_out_of_range",
            Self::TargetAgainstDirection { .. } => "target_against_direction",
            Self::RoleSubjectAmbiguous => "role_subject_ambiguous",
            Self::UnknownGoal { .. } => "unknown_goal",
            Self::UnknownStep { .. } => "unknown_step",
            Self::UnknownCheckIn { .. } => "unknown_checkin",
            Self::ParentCycle { .. } => "parent_cycle",
            Self::DuplicateGoal { .. } => "goal_exists",
            Self::DuplicateStep { .. } => "step_exists",
            Self::DuplicateCheckIn { .. } => "checkin_exists",
            Self::DuplicateBaseline { .. } => "baseline_exists",
            Self::GoalClosed { .. } => "goal_closed",
            Self::StepAlreadyCompleted { .. } => "step_already_completed",
            Self::StepNotCompleted { .. } => "step_not_completed",
            Self::SecondAccountable { .. } => "second_accountable",
            Self::RoleAlreadyAssigned { .. } => "role_already_assigned",
            Self::RoleNotAssigned { .. } => "role_not_assigned",
            Self::NoChange { .. } => "no_change",
            Self::TargetWithoutKpi { .. } => "target_without_kpi",
            Self::ValueWithoutKpi { .. } => "value_without_kpi",
            Self::UnknownBaseline { .. } => "unknown_baseline",
        }
    }

    /// The JSON field at fault (e.g. "data.goal_id"), when one field is to blame.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::PlanNotFound | Self::PlanAlreadyExists { .. } | Self::PlanArchived { .. } => None,
            Self::InvalidId { field, .. }
            | Self::TextRequired { field }
            | Self::TextTooLong { field, .. }
            | Self::NotFinite { field, .. }
            | Self::OutOfRange { field, .. }
            | Self::DueOutsideHorizon { field, .. }
            | Self::TargetAgainstDirection { field, .. }
            | Self::UnknownGoal { field, .. }
            | Self::UnknownStep { field, .. }
            | Self::GoalClosed { field, .. } => Some(field),
            Self::TooManyBlockers { .. } => Some("data.blockers"),
            Self::ConfidenceOutOfRange { .. } => Some("data.confidence"),
            Self::HorizonInverted { .. } | Self::HorizonTooLong { .. } => Some("data.ends_on"),
            Self::EffectiveOnOutOfRange { .. } => Some("data.effective_on"),
            Self::RoleSubjectAmbiguous => Some("data.step_id"),
            Self::UnknownCheckIn { .. } => Some("data.in_response_to_checkin"),
            Self::ParentCycle { .. } => Some("data.parent_goal_id"),
            Self::DuplicateGoal { .. } => Some("data.goal_id"),
            Self::DuplicateStep { .. } => Some("data.step_id"),
            Self::DuplicateCheckIn { .. } => Some("data.checkin_id"),
            Self::DuplicateBaseline { .. } => Some("data.label"),
            Self::StepAlreadyCompleted { .. } | Self::StepNotCompleted { .. } => {
                Some("data.step_id")
            }
            Self::SecondAccountable { .. } => Some("data.role"),
            Self::RoleAlreadyAssigned { .. } | Self::RoleNotAssigned { .. } => Some("data.person"),
            Self::NoChange { .. } => None,
            Self::TargetWithoutKpi { .. } => Some("data.target"),
            Self::ValueWithoutKpi { .. } => Some("data.value"),
            Self::UnknownBaseline { .. } => Some("baseline"),
        }
    }

    /// Whether the input is malformed, conflicts with the state, or names a missing plan.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::PlanNotFound | Self::UnknownBaseline { .. } => ErrorKind::NotFound,
            Self::InvalidId { .. }
            | Self::TextRequired { .. }
            | Self::TextTooLong { .. }
            | Self::TooManyBlockers { .. }
            | Self::NotFinite { .. }
            | Self::ConfidenceOutOfRange { .. }
            | Self::OutOfRange { .. }
            | Self::HorizonInverted { .. }
            | Self::HorizonTooLong { .. }
            | Self::DueOutsideHorizon { .. }
            | Self::EffectiveOnOutOfRange { .. }
            | Self::TargetAgainstDirection { .. }
            | Self::RoleSubjectAmbiguous => ErrorKind::Invalid,
            Self::PlanAlreadyExists { .. }
            | Self::PlanArchived { .. }
            | Self::UnknownGoal { .. }
            | Self::UnknownStep { .. }
            | Self::UnknownCheckIn { .. }
            | Self::ParentCycle { .. }
            | Self::DuplicateGoal { .. }
            | Self::DuplicateStep { .. }
            | Self::DuplicateCheckIn { .. }
            | Self::DuplicateBaseline { .. }
            | Self::GoalClosed { .. }
            | Self::StepAlreadyCompleted { .. }
            | Self::StepNotCompleted { .. }
            | Self::SecondAccountable { .. }
            | Self::RoleAlreadyAssigned { .. }
            | Self::RoleNotAssigned { .. }
            | Self::NoChange { .. }
            | Self::TargetWithoutKpi { .. }
            | Self::ValueWithoutKpi { .. } => ErrorKind::Conflict,
        }
    }

    /// Wraps an id parse failure as an Invalid error on `field`.
    pub fn invalid_id(field: impl Into<String>, error: IdError) -> Self {
        Self::InvalidId {
            field: field.into(),
            value: error.value,
            rule: error.rule,
        }
    }
}

/// An event read from storage cannot be brought to the current shape.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpcastError {
    /// The type name is not an event type of this domain.
    #[error("unknown event type {event_type:?}")]
    UnknownType {
        /// The stored type name.
        event_type: String,
    },
    /// The version is newer than this build understands, or was never written.
    #[error(
        "{event_type} has no schema version {schema_version}; this build knows versions 1..={current}"
    )]
    UnknownVersion {
        /// The stored type name.
        event_type: String,
        /// The stored version.
        schema_version: u32,
        /// The newest version this build knows.
        current: u32,
    },
    /// The payload does not match the declared type and version.
    #[error("{event_type} v{schema_version} payload does not parse: {source}")]
    Malformed {
        /// The stored type name.
        event_type: String,
        /// The stored version.
        schema_version: u32,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}
