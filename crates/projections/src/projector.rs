//! The pure part of a read model: how one event changes its stored facts.

use planledger_domain::{Event, Plan, evolve};
use planledger_store::Position;

/// An event as a projector sees it: decoded, with the plan it belongs to.
#[derive(Clone, Copy, Debug)]
pub struct ProjectedEvent<'a> {
    /// Its global position.
    pub position: Position,
    /// Its stream id, `<tenant>/<plan_id>`.
    pub stream: &'a str,
    /// The tenant part of the stream id.
    pub tenant: &'a str,
    /// The plan id part of the stream id.
    pub plan_id: &'a str,
    /// The decoded event (upcast to its current schema).
    pub event: &'a Event,
}

/// One index entry a projector adds or removes beside a plan's facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexChange {
    /// The index key (read back with a prefix scan).
    pub key: Vec<u8>,
    /// `true` to add the entry, `false` to remove it.
    pub present: bool,
}

/// A read model's logic: a pure function from (stored facts, event) to writes.
///
/// The runtime loads the plan's stored facts (an empty `Plan` for a new stream), calls
/// [`Projector::apply`], and commits the changed facts, the index changes and the checkpoint in
/// one batch. A projector must not do IO, read the clock or keep state of its own: everything
/// it knows is in the facts it is handed, so a rebuild from position 0 produces the same bytes.
pub trait Projector: Send + Sync + 'static {
    /// The read model's name (`progress`, `accountability`, `agility`): its directory and metrics label.
    fn name(&self) -> &'static str;

    /// Folds `event` into `plan` and pushes the index entries it adds or removes onto `index`.
    fn apply(&self, plan: &mut Plan, event: &ProjectedEvent<'_>, index: &mut Vec<IndexChange>);
}

/// Folds an event into a plan with the domain's `evolve` (the facts every read model keeps).
pub fn fold(plan: &mut Plan, event: &Event) {
    *plan = evolve(std::mem::take(plan), event);
}
