//! Events: immutable facts, past tense, each with a schema version and an upcaster for old versions.
//!
//! Every payload carries `at`, the decision time given to `decide`, so `evolve` and the metrics
//! never need the storage envelope. Stored form: type name + schema version + payload
//! ([`Event::to_data`]); [`Event::from_stored`] brings any version ever written to the current shape.

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::calendar;
use crate::error::UpcastError;
use crate::id::{GoalId, PersonId, PlanId, StepId};
use crate::plan::{
    AdjustmentKind, BaselineGoal, BaselineStep, Change, GoalRef, Kpi, Outcome, Role, TrackStatus,
};

/// A fact that happened to a plan. JSON form `{"type": "GoalAdjusted", "data": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", content = "data")]
pub enum Event {
    /// A plan was started.
    PlanCreated(PlanCreated),
    /// A goal was defined.
    GoalDefined(GoalDefined),
    /// A step was added under a goal.
    StepAdded(StepAdded),
    /// A person was given a role.
    RoleAssigned(RoleAssigned),
    /// A person's role was taken away.
    RoleRevoked(RoleRevoked),
    /// A check-in on a goal was recorded.
    CheckInRecorded(CheckInRecorded),
    /// A step was completed.
    StepCompleted(StepCompleted),
    /// A completed step was reopened.
    StepReopened(StepReopened),
    /// A goal's target, due date, title or weight changed.
    GoalAdjusted(GoalAdjusted),
    /// A baseline was frozen.
    BaselineSet(BaselineSet),
    /// A goal was closed with an outcome.
    GoalClosed(GoalClosed),
    /// The plan was archived.
    PlanArchived(PlanArchived),
}

/// Payload of [`Event::PlanCreated`] (schema v1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanCreated {
    /// The plan's id, when the command carried it.
    #[serde(default)]
    pub plan_id: Option<PlanId>,
    /// Title.
    pub title: String,
    /// Intended outcome in words.
    #[serde(default)]
    pub outcome: Option<String>,
    /// First day of the horizon.
    pub starts_on: Date,
    /// Last day of the horizon (inclusive).
    pub ends_on: Date,
    /// Days between expected check-ins per goal.
    pub checkin_cadence_days: u32,
    /// Grace days after each cadence slot.
    pub checkin_grace_days: u32,
    /// Decision time.
    pub at: Timestamp,
}

/// Payload of [`Event::GoalDefined`] (schema v1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GoalDefined {
    /// New goal.
    pub goal_id: GoalId,
    /// Title.
    pub title: String,
    /// Parent goal in this plan.
    #[serde(default)]
    pub parent_goal_id: Option<GoalId>,
    /// Goal of another plan it contributes to.
    #[serde(default)]
    pub aligns_to: Option<GoalRef>,
    /// KPI.
    #[serde(default)]
    pub kpi: Option<Kpi>,
    /// Due date.
    pub due: Date,
    /// Roll-up weight.
    pub weight: f64,
    /// Decision time.
    pub at: Timestamp,
}

/// Payload of [`Event::StepAdded`] (schema v1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepAdded {
    /// New step.
    pub step_id: StepId,
    /// Its goal.
    pub goal_id: GoalId,
    /// Title.
    pub title: String,
    /// Due date.
    pub due: Date,
    /// Estimated effort in days.
    #[serde(default)]
    pub estimate_days: Option<f64>,
    /// Decision time.
    pub at: Timestamp,
}

/// Payload of [`Event::RoleAssigned`] (schema v1); no goal/step id means the whole plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoleAssigned {
    /// Who.
    pub person: PersonId,
    /// Which role.
    pub role: Role,
    /// On this goal.
    #[serde(default)]
    pub goal_id: Option<GoalId>,
    /// On this step.
    #[serde(default)]
    pub step_id: Option<StepId>,
    /// Decision time.
    pub at: Timestamp,
}

/// Payload of [`Event::RoleRevoked`] (schema v1); same shape as [`RoleAssigned`].
pub type RoleRevoked = RoleAssigned;

/// Payload of [`Event::CheckInRecorded`] (schema v2). Bitemporal: `effective_on` is the day
/// described, `at` the time it was recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckInRecorded {
    /// Unique in the plan.
    pub checkin_id: String,
    /// The goal reported on.
    pub goal_id: GoalId,
    /// KPI value.
    #[serde(default)]
    pub value: Option<f64>,
    /// Probability of achieving the goal, in [0, 1].
    pub confidence: f64,
    /// Reported status.
    #[serde(default)]
    pub status: Option<TrackStatus>,
    /// The day described (v2; v1 upcasts to the UTC date of `at`).
    pub effective_on: Date,
    /// Free text.
    #[serde(default)]
    pub note: Option<String>,
    /// What stands in the way (v2; v1 upcasts to none).
    #[serde(default)]
    pub blockers: Vec<String>,
    /// Decision (recording) time.
    pub at: Timestamp,
}

/// An event's payload alone (no type tag), serialized as its payload struct.
struct Payload<'a>(&'a Event);

impl Serialize for Payload<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Event::PlanCreated(e) => e.serialize(serializer),
            Event::GoalDefined(e) => e.serialize(serializer),
            Event::StepAdded(e) => e.serialize(serializer),
            Event::RoleAssigned(e) | Event::RoleRevoked(e) => e.serialize(serializer),
            Event::CheckInRecorded(e) => e.serialize(serializer),
            Event::StepCompleted(e) => e.serialize(serializer),
            Event::StepReopened(e) => e.serialize(serializer),
            Event::GoalAdjusted(e) => e.serialize(serializer),
            Event::BaselineSet(e) => e.serialize(serializer),
            Event::GoalClosed(e) => e.serialize(serializer),
            Event::PlanArchived(e) => e.serialize(serializer),
        }
    }
}

/// Payload of [`Event::StepCompleted`] (schema v1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepCompleted {
    /// The step.
    pub step_id: StepId,
    /// Its goal.
    pub goal_id: GoalId,
    /// Decision time.
    pub at: Timestamp,
}

/// Payload of [`Event::StepReopened`] (schema v1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepReopened {
    /// The step.
    pub step_id: StepId,
    /// Its goal.
    pub goal_id: GoalId,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
    /// Decision time.
    pub at: Timestamp,
}

/// Payload of [`Event::GoalAdjusted`] (schema v2): before/after of each changed field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GoalAdjusted {
    /// The goal.
    pub goal_id: GoalId,
    /// What changed (v2; v1 upcasts by looking at which fields are present).
    pub kinds: Vec<AdjustmentKind>,
    /// KPI target change.
    #[serde(default)]
    pub target: Option<Change<f64>>,
    /// Due date change.
    #[serde(default)]
    pub due: Option<Change<Date>>,
    /// Title change.
    #[serde(default)]
    pub title: Option<Change<String>>,
    /// Weight change.
    #[serde(default)]
    pub weight: Option<Change<f64>>,
    /// Why.
    pub reason: String,
    /// The check-in this answers.
    #[serde(default)]
    pub in_response_to_checkin: Option<String>,
    /// Decision time.
    pub at: Timestamp,
}

impl GoalAdjusted {
    /// The kinds implied by which fields changed, in canonical order (target, due, scope, weight).
    pub fn derived_kinds(&self) -> Vec<AdjustmentKind> {
        let mut kinds = Vec::new();
        if self.target.is_some() {
            kinds.push(AdjustmentKind::Target);
        }
        if self.due.is_some() {
            kinds.push(AdjustmentKind::Due);
        }
        if self.title.is_some() {
            kinds.push(AdjustmentKind::Scope);
        }
        if self.weight.is_some() {
            kinds.push(AdjustmentKind::Weight);
        }
        kinds
    }
}

/// Payload of [`Event::BaselineSet`] (schema v1): the frozen copy travels with the event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BaselineSet {
    /// Its label.
    pub label: String,
    /// Goals frozen.
    pub goals: BTreeMap<GoalId, BaselineGoal>,
    /// Steps frozen.
    pub steps: BTreeMap<StepId, BaselineStep>,
    /// Decision time.
    pub at: Timestamp,
}

/// Payload of [`Event::GoalClosed`] (schema v1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GoalClosed {
    /// The goal.
    pub goal_id: GoalId,
    /// What happened.
    pub outcome: Outcome,
    /// Free text.
    #[serde(default)]
    pub note: Option<String>,
    /// Decision time.
    pub at: Timestamp,
}

/// Payload of [`Event::PlanArchived`] (schema v1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanArchived {
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
    /// Decision time.
    pub at: Timestamp,
}

/// CheckInRecorded as written by schema v1 (no `effective_on`, no `blockers`).
#[derive(Deserialize)]
struct CheckInRecordedV1 {
    checkin_id: String,
    goal_id: GoalId,
    #[serde(default)]
    value: Option<f64>,
    confidence: f64,
    #[serde(default)]
    status: Option<TrackStatus>,
    #[serde(default)]
    note: Option<String>,
    at: Timestamp,
}

/// GoalAdjusted as written by schema v1 (no `kinds`).
#[derive(Deserialize)]
struct GoalAdjustedV1 {
    goal_id: GoalId,
    #[serde(default)]
    target: Option<Change<f64>>,
    #[serde(default)]
    due: Option<Change<Date>>,
    #[serde(default)]
    title: Option<Change<String>>,
    #[serde(default)]
    weight: Option<Change<f64>>,
    reason: String,
    #[serde(default)]
    in_response_to_checkin: Option<String>,
    at: Timestamp,
}

impl Event {
    /// Every event type name with its current schema version.
    pub const TYPES: [(&'static str, u32); 12] = [
        ("PlanCreated", 1),
        ("GoalDefined", 1),
        ("StepAdded", 1),
        ("RoleAssigned", 1),
        ("RoleRevoked", 1),
        ("CheckInRecorded", 2),
        ("StepCompleted", 1),
        ("StepReopened", 1),
        ("GoalAdjusted", 2),
        ("BaselineSet", 1),
        ("GoalClosed", 1),
        ("PlanArchived", 1),
    ];

    /// The event's type name (e.g. "GoalAdjusted").
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::PlanCreated(_) => "PlanCreated",
            Self::GoalDefined(_) => "GoalDefined",
            Self::StepAdded(_) => "StepAdded",
            Self::RoleAssigned(_) => "RoleAssigned",
            Self::RoleRevoked(_) => "RoleRevoked",
            Self::CheckInRecorded(_) => "CheckInRecorded",
            Self::StepCompleted(_) => "StepCompleted",
            Self::StepReopened(_) => "StepReopened",
            Self::GoalAdjusted(_) => "GoalAdjusted",
            Self::BaselineSet(_) => "BaselineSet",
            Self::GoalClosed(_) => "GoalClosed",
            Self::PlanArchived(_) => "PlanArchived",
        }
    }

    /// The current schema version of this event's type (what `to_data` writes).
    pub fn schema_version(&self) -> u32 {
        current_version(self.event_type()).unwrap_or(1)
    }

    /// The decision time carried by the payload.
    pub fn at(&self) -> Timestamp {
        match self {
            Self::PlanCreated(e) => e.at,
            Self::GoalDefined(e) => e.at,
            Self::StepAdded(e) => e.at,
            Self::RoleAssigned(e) | Self::RoleRevoked(e) => e.at,
            Self::CheckInRecorded(e) => e.at,
            Self::StepCompleted(e) => e.at,
            Self::StepReopened(e) => e.at,
            Self::GoalAdjusted(e) => e.at,
            Self::BaselineSet(e) => e.at,
            Self::GoalClosed(e) => e.at,
            Self::PlanArchived(e) => e.at,
        }
    }

    /// The goal this event is about, if any.
    pub fn goal_id(&self) -> Option<&GoalId> {
        match self {
            Self::GoalDefined(e) => Some(&e.goal_id),
            Self::StepAdded(e) => Some(&e.goal_id),
            Self::RoleAssigned(e) | Self::RoleRevoked(e) => e.goal_id.as_ref(),
            Self::CheckInRecorded(e) => Some(&e.goal_id),
            Self::StepCompleted(e) => Some(&e.goal_id),
            Self::StepReopened(e) => Some(&e.goal_id),
            Self::GoalAdjusted(e) => Some(&e.goal_id),
            Self::GoalClosed(e) => Some(&e.goal_id),
            Self::PlanCreated(_) | Self::BaselineSet(_) | Self::PlanArchived(_) => None,
        }
    }

    /// The payload as a JSON value, without the type tag (keys sorted, as `Value` keeps them).
    pub fn to_data(&self) -> serde_json::Value {
        // Payloads are plain structs with string map keys and finite numbers (decide rejects
        // NaN and infinity); a non-finite number from a hand-built event becomes null.
        serde_json::to_value(Payload(self)).unwrap_or(serde_json::Value::Null)
    }

    /// The payload as JSON text, ready to store (the stored `data`): the same JSON as
    /// [`Event::to_data`], with the fields in declaration order, serialized straight from the
    /// payload without building a value tree.
    pub fn to_raw_data(&self) -> Box<serde_json::value::RawValue> {
        use serde_json::value::to_raw_value;
        // As in `to_data`: this only fails for map keys that are not strings, which no payload has.
        to_raw_value(&Payload(self))
            .unwrap_or_else(|_| to_raw_value(&serde_json::Value::Null).expect("null serializes"))
    }

    /// Reads a stored event of any version ever written, upcasting it to the current shape.
    pub fn from_stored(
        event_type: &str,
        schema_version: u32,
        data: serde_json::Value,
    ) -> Result<Event, UpcastError> {
        let current = current_version(event_type).ok_or_else(|| UpcastError::UnknownType {
            event_type: event_type.to_owned(),
        })?;
        if schema_version == 0 || schema_version > current {
            return Err(UpcastError::UnknownVersion {
                event_type: event_type.to_owned(),
                schema_version,
                current,
            });
        }
        let malformed = |source| UpcastError::Malformed {
            event_type: event_type.to_owned(),
            schema_version,
            source,
        };
        let event = match (event_type, schema_version) {
            ("CheckInRecorded", 1) => {
                let v1: CheckInRecordedV1 = serde_json::from_value(data).map_err(malformed)?;
                Event::CheckInRecorded(CheckInRecorded {
                    checkin_id: v1.checkin_id,
                    goal_id: v1.goal_id,
                    value: v1.value,
                    confidence: v1.confidence,
                    status: v1.status,
                    effective_on: calendar::utc_date(v1.at),
                    note: v1.note,
                    blockers: Vec::new(),
                    at: v1.at,
                })
            }
            ("GoalAdjusted", 1) => {
                let v1: GoalAdjustedV1 = serde_json::from_value(data).map_err(malformed)?;
                let mut adjusted = GoalAdjusted {
                    goal_id: v1.goal_id,
                    kinds: Vec::new(),
                    target: v1.target,
                    due: v1.due,
                    title: v1.title,
                    weight: v1.weight,
                    reason: v1.reason,
                    in_response_to_checkin: v1.in_response_to_checkin,
                    at: v1.at,
                };
                adjusted.kinds = adjusted.derived_kinds();
                Event::GoalAdjusted(adjusted)
            }
            _ => {
                let tagged = serde_json::json!({ "type": event_type, "data": data });
                serde_json::from_value(tagged).map_err(malformed)?
            }
        };
        Ok(event)
    }
}

impl Event {
    /// [`Event::from_stored`] from the stored JSON text of `data`. An event of its type's
    /// current schema version is parsed straight from the text (the same result, without an
    /// intermediate `serde_json::Value`); older versions go through the upcasters.
    pub fn from_stored_json(
        event_type: &str,
        schema_version: u32,
        data: &str,
    ) -> Result<Event, UpcastError> {
        let malformed = |source| UpcastError::Malformed {
            event_type: event_type.to_owned(),
            schema_version,
            source,
        };
        match current_version(event_type) {
            Some(current) if current == schema_version => {
                // Type names are plain identifiers (`current_version` knows this one), so the
                // tag needs no escaping.
                let mut tagged = String::with_capacity(event_type.len() + data.len() + 20);
                tagged.push_str("{\"type\":\"");
                tagged.push_str(event_type);
                tagged.push_str("\",\"data\":");
                tagged.push_str(data);
                tagged.push('}');
                serde_json::from_str::<Event>(&tagged).map_err(malformed)
            }
            // An unknown type or version is refused before the data is looked at.
            None => Self::from_stored(event_type, schema_version, serde_json::Value::Null),
            Some(_) => Self::from_stored(
                event_type,
                schema_version,
                serde_json::from_str(data).map_err(malformed)?,
            ),
        }
    }
}

/// The current schema version of an event type name, if it is one.
pub fn current_version(event_type: &str) -> Option<u32> {
    Event::TYPES
        .iter()
        .find(|(name, _)| *name == event_type)
        .map(|(_, version)| *version)
}
