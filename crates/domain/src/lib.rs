//! The Planledger domain: commands, events, the Plan aggregate and the metric formulas.
//!
//! What it is for: everything that gives a plan meaning. A [`Command`] is checked against the
//! current [`Plan`] by [`decide`], which returns the [`Event`]s it causes or a [`DomainError`]
//! that names the field, the value and the rule. [`evolve`] folds an event into the plan, so a
//! plan is always `Plan::replay(events)`. The [`metrics`] module computes progress,
//! accountability, agility, drift and momentum from a plan and a clock value.
//!
//! What it must never do: IO of any kind (disk, network, environment), async, reading the
//! clock, or randomness. Time is always an argument (`jiff::Timestamp` for instants,
//! `jiff::civil::Date` for days), so the same events and the same `now` always give the same
//! answer. This crate depends on no other Planledger crate.

#![warn(missing_docs)]

pub mod calendar;
pub mod command;
mod decide;
pub mod error;
pub mod event;
pub mod id;
pub mod metrics;
pub mod plan;

pub use command::Command;
pub use decide::{
    MAX_BLOCKER, MAX_BLOCKERS, MAX_CADENCE_DAYS, MAX_ESTIMATE_DAYS, MAX_HORIZON_DAYS, MAX_NOTE,
    MAX_OUTCOME_TEXT, MAX_REASON, MAX_TITLE, MAX_UNIT, MAX_WEIGHT, decide,
};
pub use error::{DomainError, ErrorKind, UpcastError};
pub use event::Event;
pub use id::{GoalId, IdError, PersonId, PlanId, StepId};
pub use plan::{Plan, as_of, evolve};
