//! Commands: what a user asks the plan to do. JSON form `{"type": "AssignRole", "data": {...}}`.
//!
//! The actor never appears here: it comes from the authenticated token, outside the domain.

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::id::{GoalId, PersonId, PlanId, StepId};
use crate::plan::{Direction, GoalRef, Outcome, Role, TrackStatus};

/// A request to change a plan; `decide` turns it into events or refuses it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", content = "data")]
pub enum Command {
    /// Start a plan.
    CreatePlan(CreatePlan),
    /// Define a goal (optionally under a parent goal, with a KPI).
    DefineGoal(DefineGoal),
    /// Add a small actionable step under a goal.
    AddStep(AddStep),
    /// Give a person a RACI role on the plan, a goal or a step.
    AssignRole(AssignRole),
    /// Take a RACI role away.
    RevokeRole(RevokeRole),
    /// Report on a goal: value, confidence, status, blockers.
    RecordCheckIn(RecordCheckIn),
    /// Mark a step done.
    CompleteStep(CompleteStep),
    /// Mark a completed step not done again.
    ReopenStep(ReopenStep),
    /// Change a goal's target, due date, title or weight, with a reason.
    AdjustGoal(AdjustGoal),
    /// Freeze the plan's current targets and dates as a named reference.
    SetBaseline(SetBaseline),
    /// Put an outcome on record and stop changes to a goal.
    CloseGoal(CloseGoal),
    /// Stop all changes to the plan.
    ArchivePlan(ArchivePlan),
}

impl Command {
    /// The command's type name, as in its JSON `type` field.
    pub fn name(&self) -> &'static str {
        match self {
            Self::CreatePlan(_) => "CreatePlan",
            Self::DefineGoal(_) => "DefineGoal",
            Self::AddStep(_) => "AddStep",
            Self::AssignRole(_) => "AssignRole",
            Self::RevokeRole(_) => "RevokeRole",
            Self::RecordCheckIn(_) => "RecordCheckIn",
            Self::CompleteStep(_) => "CompleteStep",
            Self::ReopenStep(_) => "ReopenStep",
            Self::AdjustGoal(_) => "AdjustGoal",
            Self::SetBaseline(_) => "SetBaseline",
            Self::CloseGoal(_) => "CloseGoal",
            Self::ArchivePlan(_) => "ArchivePlan",
        }
    }

    /// Every command type name, in declaration order.
    pub const NAMES: [&'static str; 12] = [
        "CreatePlan",
        "DefineGoal",
        "AddStep",
        "AssignRole",
        "RevokeRole",
        "RecordCheckIn",
        "CompleteStep",
        "ReopenStep",
        "AdjustGoal",
        "SetBaseline",
        "CloseGoal",
        "ArchivePlan",
    ];
}

/// Data of [`Command::CreatePlan`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreatePlan {
    /// The plan's own id (the application fills it from the URL so events are self-describing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<PlanId>,
    /// Title, 1..=200 characters.
    pub title: String,
    /// The intended outcome in words, up to 2000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// First day of the plan horizon.
    pub starts_on: Date,
    /// Last day of the plan horizon (inclusive).
    pub ends_on: Date,
    /// Days between expected check-ins on each goal, 1..=366.
    pub checkin_cadence_days: u32,
    /// Days of grace after a cadence slot ends, 0..=366 (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkin_grace_days: Option<u32>,
}

/// A KPI as given in DefineGoal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KpiInput {
    /// Unit of measure, up to 50 characters (e.g. "%", "EUR", "customers").
    pub unit: String,
    /// The value at the start.
    pub baseline: f64,
    /// The value to reach.
    pub target: f64,
    /// Whether higher or lower is better.
    pub direction: Direction,
}

/// Data of [`Command::DefineGoal`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DefineGoal {
    /// New goal's id.
    pub goal_id: GoalId,
    /// Title, 1..=200 characters.
    pub title: String,
    /// Parent goal in this plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_goal_id: Option<GoalId>,
    /// A goal of another plan this goal contributes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aligns_to: Option<GoalRef>,
    /// How progress is measured; without it progress comes from steps or child goals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kpi: Option<KpiInput>,
    /// Due date, inside the plan horizon.
    pub due: Date,
    /// Roll-up weight, (0, 1000] (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

/// Data of [`Command::AddStep`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddStep {
    /// New step's id.
    pub step_id: StepId,
    /// The goal the step serves.
    pub goal_id: GoalId,
    /// Title, 1..=200 characters.
    pub title: String,
    /// Due date, inside the plan horizon.
    pub due: Date,
    /// Estimated effort in days, (0, 3660].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate_days: Option<f64>,
}

/// Data of [`Command::AssignRole`]: a role on the plan (no ids), one goal, or one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AssignRole {
    /// Who.
    pub person: PersonId,
    /// Which RACI role.
    pub role: Role,
    /// On this goal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal_id: Option<GoalId>,
    /// On this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<StepId>,
}

/// Data of [`Command::RevokeRole`]; same shape as [`AssignRole`].
pub type RevokeRole = AssignRole;

/// Data of [`Command::RecordCheckIn`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RecordCheckIn {
    /// The goal reported on.
    pub goal_id: GoalId,
    /// Client-chosen id; derived ("c1", "c2", ...) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._-]{1,64}$"))]
    pub checkin_id: Option<String>,
    /// Current KPI value (only for goals with a KPI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Probability, in [0, 1], that the goal will be achieved.
    pub confidence: f64,
    /// Reported status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TrackStatus>,
    /// The day the report describes (default: today, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_on: Option<Date>,
    /// Free text, up to 2000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// What stands in the way: at most 20 entries of up to 200 characters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blockers: Vec<String>,
}

/// Data of [`Command::CompleteStep`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CompleteStep {
    /// The step.
    pub step_id: StepId,
}

/// Data of [`Command::ReopenStep`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReopenStep {
    /// The step.
    pub step_id: StepId,
    /// Why, up to 2000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Data of [`Command::AdjustGoal`]: at least one field must change; the reason is required.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AdjustGoal {
    /// The goal.
    pub goal_id: GoalId,
    /// New KPI target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    /// New due date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<Date>,
    /// New title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// New weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Why (required, up to 2000 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The check-in (of this goal) this adjustment answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_response_to_checkin: Option<String>,
}

/// Data of [`Command::SetBaseline`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetBaseline {
    /// Name of the baseline, `[A-Za-z0-9._-]{1,64}`, unique in the plan.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._-]{1,64}$"))]
    pub label: String,
}

/// Data of [`Command::CloseGoal`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CloseGoal {
    /// The goal.
    pub goal_id: GoalId,
    /// What happened.
    pub outcome: Outcome,
    /// Free text, up to 2000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Data of [`Command::ArchivePlan`] (`{}` or with a reason).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ArchivePlan {
    /// Why, up to 2000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
