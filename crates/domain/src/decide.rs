//! `decide`: validates a command against the plan's state and returns the events it causes.

use jiff::Timestamp;
use jiff::civil::Date;

use crate::calendar;
use crate::command::{
    AddStep, AdjustGoal, ArchivePlan, AssignRole, CloseGoal, Command, CompleteStep, CreatePlan,
    DefineGoal, KpiInput, RecordCheckIn, ReopenStep, SetBaseline,
};
use crate::error::DomainError;
use crate::event::{
    BaselineSet, CheckInRecorded, Event, GoalAdjusted, GoalClosed, GoalDefined, PlanArchived,
    PlanCreated, RoleAssigned, StepAdded, StepCompleted, StepReopened,
};
use crate::id::{GoalId, StepId, validate_id};
use crate::plan::{
    BaselineGoal, BaselineStep, Change, Direction, Goal, Kpi, Plan, Role, RoleSubject, Step,
};

/// Longest title, in characters.
pub const MAX_TITLE: usize = 200;
/// Longest note, in characters.
pub const MAX_NOTE: usize = 2000;
/// Longest reason, in characters.
pub const MAX_REASON: usize = 2000;
/// Longest plan outcome text, in characters.
pub const MAX_OUTCOME_TEXT: usize = 2000;
/// Longest KPI unit, in characters.
pub const MAX_UNIT: usize = 50;
/// Most blockers in one check-in.
pub const MAX_BLOCKERS: usize = 20;
/// Longest blocker, in characters.
pub const MAX_BLOCKER: usize = 200;
/// Largest goal weight.
pub const MAX_WEIGHT: f64 = 1000.0;
/// Largest step estimate, in days.
pub const MAX_ESTIMATE_DAYS: f64 = 3660.0;
/// Longest plan horizon, in days (about ten years).
pub const MAX_HORIZON_DAYS: i64 = 3660;
/// Largest check-in cadence and grace, in days.
pub const MAX_CADENCE_DAYS: u32 = 366;

/// Decides what a command means for the plan at time `now`: the events to append, or why not.
pub fn decide(plan: &Plan, command: &Command, now: Timestamp) -> Result<Vec<Event>, DomainError> {
    if let Command::CreatePlan(c) = command {
        return create_plan(plan, c, now);
    }
    if !plan.exists() {
        return Err(DomainError::PlanNotFound);
    }
    if plan.is_archived() {
        return Err(DomainError::PlanArchived {
            command: command.name(),
        });
    }
    match command {
        Command::CreatePlan(c) => create_plan(plan, c, now),
        Command::DefineGoal(c) => define_goal(plan, c, now),
        Command::AddStep(c) => add_step(plan, c, now),
        Command::AssignRole(c) => assign_role(plan, c, now),
        Command::RevokeRole(c) => revoke_role(plan, c, now),
        Command::RecordCheckIn(c) => record_check_in(plan, c, now),
        Command::CompleteStep(c) => complete_step(plan, c, now),
        Command::ReopenStep(c) => reopen_step(plan, c, now),
        Command::AdjustGoal(c) => adjust_goal(plan, c, now),
        Command::SetBaseline(c) => set_baseline(plan, c, now),
        Command::CloseGoal(c) => close_goal(plan, c, now),
        Command::ArchivePlan(c) => archive_plan(c, now),
    }
}

fn create_plan(plan: &Plan, c: &CreatePlan, now: Timestamp) -> Result<Vec<Event>, DomainError> {
    if plan.exists() {
        return Err(DomainError::PlanAlreadyExists {
            version: plan.version,
        });
    }
    let title = required_text("data.title", &c.title, MAX_TITLE)?;
    let outcome = optional_text("data.outcome", c.outcome.as_deref(), MAX_OUTCOME_TEXT)?;
    if c.ends_on < c.starts_on {
        return Err(DomainError::HorizonInverted {
            starts_on: c.starts_on,
            ends_on: c.ends_on,
        });
    }
    let days = calendar::days_between(c.starts_on, c.ends_on);
    if days > MAX_HORIZON_DAYS {
        return Err(DomainError::HorizonTooLong {
            ends_on: c.ends_on,
            days,
            max: MAX_HORIZON_DAYS,
        });
    }
    whole_in_range(
        "data.checkin_cadence_days",
        c.checkin_cadence_days,
        1,
        MAX_CADENCE_DAYS,
    )?;
    let grace = c.checkin_grace_days.unwrap_or(0);
    whole_in_range("data.checkin_grace_days", grace, 0, MAX_CADENCE_DAYS)?;
    Ok(vec![Event::PlanCreated(PlanCreated {
        plan_id: c.plan_id.clone(),
        title,
        outcome,
        starts_on: c.starts_on,
        ends_on: c.ends_on,
        checkin_cadence_days: c.checkin_cadence_days,
        checkin_grace_days: grace,
        at: now,
    })])
}

fn define_goal(plan: &Plan, c: &DefineGoal, now: Timestamp) -> Result<Vec<Event>, DomainError> {
    let title = required_text("data.title", &c.title, MAX_TITLE)?;
    let kpi = c.kpi.as_ref().map(validate_kpi).transpose()?;
    due_in_horizon(plan, "data.due", c.due)?;
    let weight = match c.weight {
        Some(w) => weight_in_range("data.weight", w)?,
        None => 1.0,
    };
    if plan.goals.contains_key(&c.goal_id) {
        return Err(DomainError::DuplicateGoal {
            goal_id: c.goal_id.to_string(),
        });
    }
    if let Some(parent) = &c.parent_goal_id {
        if parent == &c.goal_id || is_ancestor(plan, &c.goal_id, parent) {
            return Err(DomainError::ParentCycle {
                goal_id: c.goal_id.to_string(),
                parent_goal_id: parent.to_string(),
            });
        }
        open_goal(plan, "data.parent_goal_id", parent)?;
    }
    Ok(vec![Event::GoalDefined(GoalDefined {
        goal_id: c.goal_id.clone(),
        title,
        parent_goal_id: c.parent_goal_id.clone(),
        aligns_to: c.aligns_to.clone(),
        kpi,
        due: c.due,
        weight,
        at: now,
    })])
}

fn add_step(plan: &Plan, c: &AddStep, now: Timestamp) -> Result<Vec<Event>, DomainError> {
    let title = required_text("data.title", &c.title, MAX_TITLE)?;
    due_in_horizon(plan, "data.due", c.due)?;
    if let Some(estimate) = c.estimate_days {
        finite("data.estimate_days", estimate)?;
        if estimate <= 0.0 || estimate > MAX_ESTIMATE_DAYS {
            return Err(DomainError::OutOfRange {
                field: "data.estimate_days".into(),
                value: estimate,
                min: 0.0,
                max: MAX_ESTIMATE_DAYS,
            });
        }
    }
    if plan.steps.contains_key(&c.step_id) {
        return Err(DomainError::DuplicateStep {
            step_id: c.step_id.to_string(),
        });
    }
    open_goal(plan, "data.goal_id", &c.goal_id)?;
    Ok(vec![Event::StepAdded(StepAdded {
        step_id: c.step_id.clone(),
        goal_id: c.goal_id.clone(),
        title,
        due: c.due,
        estimate_days: c.estimate_days,
        at: now,
    })])
}

/// Checks that the subject of a role exists and is open; returns it.
fn role_subject(plan: &Plan, c: &AssignRole) -> Result<RoleSubject, DomainError> {
    match (&c.goal_id, &c.step_id) {
        (Some(_), Some(_)) => Err(DomainError::RoleSubjectAmbiguous),
        (Some(goal_id), None) => {
            open_goal(plan, "data.goal_id", goal_id)?;
            Ok(RoleSubject::Goal(goal_id.clone()))
        }
        (None, Some(step_id)) => {
            let step = known_step(plan, step_id)?;
            open_goal(plan, "data.step_id", &step.goal_id)?;
            Ok(RoleSubject::Step(step_id.clone()))
        }
        (None, None) => Ok(RoleSubject::Plan),
    }
}

fn assign_role(plan: &Plan, c: &AssignRole, now: Timestamp) -> Result<Vec<Event>, DomainError> {
    let subject = role_subject(plan, c)?;
    if plan.holders(c.role, &subject).any(|p| p == &c.person) {
        return Err(DomainError::RoleAlreadyAssigned {
            person: c.person.to_string(),
            role: c.role.as_str(),
            subject: subject.to_string(),
        });
    }
    if c.role == Role::Accountable
        && let Some(existing) = plan.holders(Role::Accountable, &subject).next()
    {
        return Err(DomainError::SecondAccountable {
            subject: subject.to_string(),
            existing: existing.to_string(),
        });
    }
    Ok(vec![Event::RoleAssigned(role_event(c, now))])
}

fn revoke_role(plan: &Plan, c: &AssignRole, now: Timestamp) -> Result<Vec<Event>, DomainError> {
    let subject = role_subject(plan, c)?;
    if !plan.holders(c.role, &subject).any(|p| p == &c.person) {
        return Err(DomainError::RoleNotAssigned {
            person: c.person.to_string(),
            role: c.role.as_str(),
            subject: subject.to_string(),
        });
    }
    Ok(vec![Event::RoleRevoked(role_event(c, now))])
}

fn role_event(c: &AssignRole, now: Timestamp) -> RoleAssigned {
    RoleAssigned {
        person: c.person.clone(),
        role: c.role,
        goal_id: c.goal_id.clone(),
        step_id: c.step_id.clone(),
        at: now,
    }
}

fn record_check_in(
    plan: &Plan,
    c: &RecordCheckIn,
    now: Timestamp,
) -> Result<Vec<Event>, DomainError> {
    if let Some(id) = &c.checkin_id {
        validate_id("checkin_id", id).map_err(|e| DomainError::invalid_id("data.checkin_id", e))?;
    }
    if let Some(value) = c.value {
        finite("data.value", value)?;
    }
    finite("data.confidence", c.confidence)?;
    if !(0.0..=1.0).contains(&c.confidence) {
        return Err(DomainError::ConfidenceOutOfRange {
            value: c.confidence,
        });
    }
    let today = calendar::utc_date(now);
    let effective_on = match c.effective_on {
        None => today,
        Some(day) if day > today => {
            return Err(DomainError::EffectiveOnOutOfRange {
                effective_on: day,
                rule: "in the future",
                earliest: plan.starts_on,
                latest: today,
            });
        }
        Some(day) if day < plan.starts_on => {
            return Err(DomainError::EffectiveOnOutOfRange {
                effective_on: day,
                rule: "before the plan starts",
                earliest: plan.starts_on,
                latest: today,
            });
        }
        Some(day) => day,
    };
    let note = optional_text("data.note", c.note.as_deref(), MAX_NOTE)?;
    if c.blockers.len() > MAX_BLOCKERS {
        return Err(DomainError::TooManyBlockers {
            count: c.blockers.len(),
            max: MAX_BLOCKERS,
        });
    }
    let blockers = c
        .blockers
        .iter()
        .enumerate()
        .map(|(i, b)| required_text(&format!("data.blockers[{i}]"), b, MAX_BLOCKER))
        .collect::<Result<Vec<_>, _>>()?;
    let goal = open_goal(plan, "data.goal_id", &c.goal_id)?;
    if c.value.is_some() && goal.kpi.is_none() {
        return Err(DomainError::ValueWithoutKpi {
            goal_id: c.goal_id.to_string(),
        });
    }
    let checkin_id = match &c.checkin_id {
        Some(id) => {
            if plan.check_in(id).is_some() {
                return Err(DomainError::DuplicateCheckIn {
                    checkin_id: id.clone(),
                });
            }
            id.clone()
        }
        None => plan.next_checkin_id(),
    };
    Ok(vec![Event::CheckInRecorded(CheckInRecorded {
        checkin_id,
        goal_id: c.goal_id.clone(),
        value: c.value,
        confidence: c.confidence,
        status: c.status,
        effective_on,
        note,
        blockers,
        at: now,
    })])
}

fn complete_step(plan: &Plan, c: &CompleteStep, now: Timestamp) -> Result<Vec<Event>, DomainError> {
    let step = known_step(plan, &c.step_id)?;
    open_goal(plan, "data.step_id", &step.goal_id)?;
    if step.is_completed() {
        return Err(DomainError::StepAlreadyCompleted {
            step_id: c.step_id.to_string(),
        });
    }
    Ok(vec![Event::StepCompleted(StepCompleted {
        step_id: c.step_id.clone(),
        goal_id: step.goal_id.clone(),
        at: now,
    })])
}

fn reopen_step(plan: &Plan, c: &ReopenStep, now: Timestamp) -> Result<Vec<Event>, DomainError> {
    let reason = optional_text("data.reason", c.reason.as_deref(), MAX_REASON)?;
    let step = known_step(plan, &c.step_id)?;
    open_goal(plan, "data.step_id", &step.goal_id)?;
    if !step.is_completed() {
        return Err(DomainError::StepNotCompleted {
            step_id: c.step_id.to_string(),
        });
    }
    Ok(vec![Event::StepReopened(StepReopened {
        step_id: c.step_id.clone(),
        goal_id: step.goal_id.clone(),
        reason,
        at: now,
    })])
}

fn adjust_goal(plan: &Plan, c: &AdjustGoal, now: Timestamp) -> Result<Vec<Event>, DomainError> {
    let reason = match optional_text("data.reason", c.reason.as_deref(), MAX_REASON)? {
        Some(reason) => reason,
        None => {
            return Err(DomainError::TextRequired {
                field: "data.reason".into(),
            });
        }
    };
    let title = c
        .title
        .as_deref()
        .map(|t| required_text("data.title", t, MAX_TITLE))
        .transpose()?;
    if let Some(target) = c.target {
        finite("data.target", target)?;
    }
    let weight = c
        .weight
        .map(|w| weight_in_range("data.weight", w))
        .transpose()?;
    if let Some(due) = c.due {
        due_in_horizon(plan, "data.due", due)?;
    }
    let goal = open_goal(plan, "data.goal_id", &c.goal_id)?;
    if let Some(checkin_id) = &c.in_response_to_checkin
        && !goal.check_ins.iter().any(|ci| &ci.checkin_id == checkin_id)
    {
        return Err(DomainError::UnknownCheckIn {
            goal_id: c.goal_id.to_string(),
            checkin_id: checkin_id.clone(),
        });
    }
    let target = match (c.target, &goal.kpi) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(DomainError::TargetWithoutKpi {
                goal_id: c.goal_id.to_string(),
            });
        }
        (Some(target), Some(kpi)) => {
            target_follows_direction("data.target", kpi.baseline, target, kpi.direction)?;
            changed(kpi.target, target)
        }
    };
    let mut adjusted = GoalAdjusted {
        goal_id: c.goal_id.clone(),
        kinds: Vec::new(),
        target,
        due: c.due.and_then(|due| changed(goal.due, due)),
        title: title.and_then(|t| changed(goal.title.clone(), t)),
        weight: weight.and_then(|w| changed(goal.weight, w)),
        reason,
        in_response_to_checkin: c.in_response_to_checkin.clone(),
        at: now,
    };
    adjusted.kinds = adjusted.derived_kinds();
    if adjusted.kinds.is_empty() {
        return Err(DomainError::NoChange {
            goal_id: c.goal_id.to_string(),
        });
    }
    Ok(vec![Event::GoalAdjusted(adjusted)])
}

fn set_baseline(plan: &Plan, c: &SetBaseline, now: Timestamp) -> Result<Vec<Event>, DomainError> {
    validate_id("label", &c.label).map_err(|e| DomainError::invalid_id("data.label", e))?;
    if plan.baselines.contains_key(&c.label) {
        return Err(DomainError::DuplicateBaseline {
            label: c.label.clone(),
        });
    }
    let goals = plan
        .goals
        .iter()
        .map(|(id, g)| (id.clone(), freeze_goal(g)))
        .collect();
    let steps = plan
        .steps
        .iter()
        .map(|(id, s)| (id.clone(), freeze_step(s)))
        .collect();
    Ok(vec![Event::BaselineSet(BaselineSet {
        label: c.label.clone(),
        goals,
        steps,
        at: now,
    })])
}

fn freeze_goal(goal: &Goal) -> BaselineGoal {
    BaselineGoal {
        title: goal.title.clone(),
        parent_goal_id: goal.parent_goal_id.clone(),
        kpi_baseline: goal.kpi.as_ref().map(|k| k.baseline),
        target: goal.kpi.as_ref().map(|k| k.target),
        direction: goal.kpi.as_ref().map(|k| k.direction),
        due: goal.due,
        weight: goal.weight,
    }
}

fn freeze_step(step: &Step) -> BaselineStep {
    BaselineStep {
        goal_id: step.goal_id.clone(),
        title: step.title.clone(),
        due: step.due,
    }
}

fn close_goal(plan: &Plan, c: &CloseGoal, now: Timestamp) -> Result<Vec<Event>, DomainError> {
    let note = optional_text("data.note", c.note.as_deref(), MAX_NOTE)?;
    open_goal(plan, "data.goal_id", &c.goal_id)?;
    Ok(vec![Event::GoalClosed(GoalClosed {
        goal_id: c.goal_id.clone(),
        outcome: c.outcome,
        note,
        at: now,
    })])
}

fn archive_plan(c: &ArchivePlan, now: Timestamp) -> Result<Vec<Event>, DomainError> {
    let reason = optional_text("data.reason", c.reason.as_deref(), MAX_REASON)?;
    Ok(vec![Event::PlanArchived(PlanArchived { reason, at: now })])
}

// ---- rule helpers -------------------------------------------------------------------------

/// `Some(change)` when `after` differs from `before`.
fn changed<T: PartialEq>(before: T, after: T) -> Option<Change<T>> {
    (before != after).then_some(Change { before, after })
}

fn open_goal<'a>(plan: &'a Plan, field: &str, goal_id: &GoalId) -> Result<&'a Goal, DomainError> {
    let goal = plan
        .goals
        .get(goal_id)
        .ok_or_else(|| DomainError::UnknownGoal {
            field: field.into(),
            goal_id: goal_id.to_string(),
        })?;
    match &goal.closed {
        None => Ok(goal),
        Some(closure) => Err(DomainError::GoalClosed {
            field: field.into(),
            goal_id: goal_id.to_string(),
            outcome: closure.outcome.as_str(),
        }),
    }
}

fn known_step<'a>(plan: &'a Plan, step_id: &StepId) -> Result<&'a Step, DomainError> {
    plan.steps
        .get(step_id)
        .ok_or_else(|| DomainError::UnknownStep {
            field: "data.step_id".into(),
            step_id: step_id.to_string(),
        })
}

/// Whether `goal_id` is `start` or one of its ancestors (bounded by the number of goals).
fn is_ancestor(plan: &Plan, goal_id: &GoalId, start: &GoalId) -> bool {
    let mut current = Some(start);
    for _ in 0..=plan.goals.len() {
        match current {
            Some(id) if id == goal_id => return true,
            Some(id) => current = plan.goals.get(id).and_then(|g| g.parent_goal_id.as_ref()),
            None => return false,
        }
    }
    // A walk longer than the number of goals means the stored tree already loops.
    true
}

fn required_text(field: &str, value: &str, max: usize) -> Result<String, DomainError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(DomainError::TextRequired {
            field: field.into(),
        });
    }
    bounded(field, trimmed, max)
}

fn optional_text(
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, DomainError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => bounded(field, text, max).map(Some),
    }
}

fn bounded(field: &str, text: &str, max: usize) -> Result<String, DomainError> {
    let len = text.chars().count();
    if len > max {
        return Err(DomainError::TextTooLong {
            field: field.into(),
            len,
            max,
        });
    }
    Ok(text.to_owned())
}

fn finite(field: &str, value: f64) -> Result<f64, DomainError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(DomainError::NotFinite {
            field: field.into(),
            value,
        })
    }
}

fn weight_in_range(field: &str, weight: f64) -> Result<f64, DomainError> {
    finite(field, weight)?;
    if weight <= 0.0 || weight > MAX_WEIGHT {
        return Err(DomainError::OutOfRange {
            field: field.into(),
            value: weight,
            min: 0.0,
            max: MAX_WEIGHT,
        });
    }
    Ok(weight)
}

fn whole_in_range(field: &str, value: u32, min: u32, max: u32) -> Result<(), DomainError> {
    if value < min || value > max {
        return Err(DomainError::OutOfRange {
            field: field.into(),
            value: f64::from(value),
            min: f64::from(min),
            max: f64::from(max),
        });
    }
    Ok(())
}

fn due_in_horizon(plan: &Plan, field: &str, due: Date) -> Result<(), DomainError> {
    let outside = |side, bound_name, bound| DomainError::DueOutsideHorizon {
        field: field.into(),
        due,
        side,
        bound_name,
        bound,
        starts_on: plan.starts_on,
        ends_on: plan.ends_on,
    };
    if due < plan.starts_on {
        Err(outside("before", "start", plan.starts_on))
    } else if due > plan.ends_on {
        Err(outside("after", "end", plan.ends_on))
    } else {
        Ok(())
    }
}

fn validate_kpi(kpi: &KpiInput) -> Result<Kpi, DomainError> {
    let unit = required_text("data.kpi.unit", &kpi.unit, MAX_UNIT)?;
    finite("data.kpi.baseline", kpi.baseline)?;
    finite("data.kpi.target", kpi.target)?;
    target_follows_direction("data.kpi.target", kpi.baseline, kpi.target, kpi.direction)?;
    Ok(Kpi {
        unit,
        baseline: kpi.baseline,
        target: kpi.target,
        direction: kpi.direction,
    })
}

fn target_follows_direction(
    field: &str,
    baseline: f64,
    target: f64,
    direction: Direction,
) -> Result<(), DomainError> {
    let (ok, needed) = match direction {
        Direction::Increase => (target >= baseline, "at or above"),
        Direction::Decrease => (target <= baseline, "at or below"),
    };
    if ok {
        Ok(())
    } else {
        Err(DomainError::TargetAgainstDirection {
            field: field.into(),
            baseline,
            target,
            direction: direction.as_str(),
            needed,
        })
    }
}
