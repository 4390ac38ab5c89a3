//! Scenario helpers shared by the domain's integration tests.
#![allow(dead_code)]

use jiff::Timestamp;
use jiff::civil::Date;
use planledger_domain::{Command, DomainError, Event, Plan, decide, evolve};
use serde_json::{Value, json};

/// An instant from RFC 3339 text, or a date ("2026-01-05") at 09:00 UTC.
pub fn ts(text: &str) -> Timestamp {
    let full = if text.len() == 10 {
        format!("{text}T09:00:00Z")
    } else {
        text.to_owned()
    };
    full.parse().expect("test timestamps are well formed")
}

/// A civil date from "YYYY-MM-DD".
pub fn day(text: &str) -> Date {
    text.parse().expect("test dates are well formed")
}

/// A command from its JSON form.
pub fn cmd(value: Value) -> Command {
    serde_json::from_value(value).expect("test commands are well formed")
}

/// A plan built by running commands through decide/evolve, keeping every event.
#[derive(Clone, Debug, Default)]
pub struct Scenario {
    pub plan: Plan,
    pub events: Vec<Event>,
}

impl Scenario {
    /// An empty scenario (the plan does not exist).
    pub fn empty() -> Self {
        Self::default()
    }

    /// A plan over 2026 (cadence 7 days, grace 2 days) created on 2026-01-01.
    pub fn year_2026() -> Self {
        Self::empty().with(
            "2026-01-01",
            json!({"type": "CreatePlan", "data": {
                "plan_id": "p1", "title": "Grow 2026", "starts_on": "2026-01-01",
                "ends_on": "2026-12-31", "checkin_cadence_days": 7, "checkin_grace_days": 2}}),
        )
    }

    /// Runs a command that must be accepted; panics with the error otherwise.
    pub fn run(&mut self, at: &str, command: Value) -> Vec<Event> {
        let command = cmd(command);
        let events = decide(&self.plan, &command, ts(at))
            .unwrap_or_else(|e| panic!("{} rejected: {e}", command.name()));
        for event in &events {
            self.plan = evolve(self.plan.clone(), event);
        }
        self.events.extend(events.iter().cloned());
        events
    }

    /// Builder form of [`Scenario::run`].
    pub fn with(mut self, at: &str, command: Value) -> Self {
        self.run(at, command);
        self
    }

    /// Decides a command without applying it.
    pub fn attempt(&self, at: &str, command: Value) -> Result<Vec<Event>, DomainError> {
        decide(&self.plan, &cmd(command), ts(at))
    }

    /// Defines a KPI goal (increase) due on `due`.
    pub fn kpi_goal(self, at: &str, goal: &str, baseline: f64, target: f64, due: &str) -> Self {
        self.with(
            at,
            json!({"type": "DefineGoal", "data": {"goal_id": goal, "title": format!("Goal {goal}"),
                "kpi": {"unit": "u", "baseline": baseline, "target": target, "direction": "increase"},
                "due": due}}),
        )
    }

    /// Defines a goal without a KPI due on `due`.
    pub fn plain_goal(self, at: &str, goal: &str, due: &str) -> Self {
        self.with(
            at,
            json!({"type": "DefineGoal", "data": {"goal_id": goal, "title": format!("Goal {goal}"), "due": due}}),
        )
    }

    /// Adds a step under a goal.
    pub fn step(self, at: &str, step: &str, goal: &str, due: &str) -> Self {
        self.with(
            at,
            json!({"type": "AddStep", "data": {"step_id": step, "goal_id": goal, "title": format!("Step {step}"), "due": due}}),
        )
    }

    /// Completes a step.
    pub fn complete(self, at: &str, step: &str) -> Self {
        self.with(
            at,
            json!({"type": "CompleteStep", "data": {"step_id": step}}),
        )
    }

    /// Records a check-in with a value and confidence.
    pub fn value(self, at: &str, goal: &str, value: f64, confidence: f64) -> Self {
        self.with(
            at,
            json!({"type": "RecordCheckIn", "data": {"goal_id": goal, "value": value, "confidence": confidence}}),
        )
    }

    /// Records a check-in with a status and confidence.
    pub fn status(self, at: &str, goal: &str, status: &str, confidence: f64) -> Self {
        self.with(
            at,
            json!({"type": "RecordCheckIn", "data": {"goal_id": goal, "status": status, "confidence": confidence}}),
        )
    }

    /// Assigns a role on a goal.
    pub fn role(self, at: &str, person: &str, role: &str, goal: &str) -> Self {
        self.with(
            at,
            json!({"type": "AssignRole", "data": {"person": person, "role": role, "goal_id": goal}}),
        )
    }

    /// Sets a baseline.
    pub fn baseline(self, at: &str, label: &str) -> Self {
        self.with(at, json!({"type": "SetBaseline", "data": {"label": label}}))
    }

    /// Revokes a role on a goal.
    pub fn revoke(self, at: &str, person: &str, role: &str, goal: &str) -> Self {
        self.with(
            at,
            json!({"type": "RevokeRole", "data": {"person": person, "role": role, "goal_id": goal}}),
        )
    }

    /// Hands a goal's accountable role from one person to another at one instant.
    pub fn handover(self, at: &str, from: &str, to: &str, goal: &str) -> Self {
        self.revoke(at, from, "accountable", goal)
            .role(at, to, "accountable", goal)
    }

    /// Closes a goal with an outcome.
    pub fn close(self, at: &str, goal: &str, outcome: &str) -> Self {
        self.with(
            at,
            json!({"type": "CloseGoal", "data": {"goal_id": goal, "outcome": outcome}}),
        )
    }
}
