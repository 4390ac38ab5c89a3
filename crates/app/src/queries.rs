//! Read side of the log: plan state now or in the past, a plan's audit trail, the global log.

use std::sync::Arc;

use planledger_domain::{Event, Plan, PlanId};
use planledger_store::{Envelope, LogView, Position, ReadDirection, Version};

use crate::AppError;
use crate::auth::{Permission, Principal};
use crate::plans::{
    PlanLoader, StateLadder, load_at_position, load_at_position_via, load_at_version_via, stream_of,
};

/// Largest page of events a query returns.
pub const MAX_PAGE: usize = 1000;

/// Which state of a plan to return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateAt {
    /// The current state.
    Current,
    /// After this stream version.
    Version(u64),
    /// As of this global position.
    Position(u64),
    /// As recorded by this time.
    Time(jiff::Timestamp),
}

/// A plan's state at some point.
#[derive(Clone, Debug)]
pub struct PlanState {
    /// The plan.
    pub plan_id: PlanId,
    /// The version the state reflects.
    pub version: u64,
    /// For historic reads by position or time: the global position the state is as of.
    pub as_of_position: Option<u64>,
    /// The state.
    pub plan: Arc<Plan>,
}

/// A page of the global log.
#[derive(Clone, Debug)]
pub struct LogPage {
    /// Events of the caller's tenant, in position order.
    pub events: Vec<Envelope>,
    /// Where the next page starts.
    pub next_position: u64,
    /// The last position in the log when read.
    pub last_position: u64,
}

/// Which of a plan's events an audit-trail query returns; every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events caused by this subject.
    pub actor: Option<String>,
    /// Only events of these types (empty: every type).
    pub types: Vec<String>,
    /// Only events recorded at or after this time (inclusive).
    pub from: Option<jiff::Timestamp>,
    /// Only events recorded before this time (exclusive).
    pub to: Option<jiff::Timestamp>,
}

impl EventFilter {
    /// Parses a filter from query values, naming the parameter at fault: `type` must name
    /// known event types (each value may also list several, comma-separated), `from` and `to`
    /// must be RFC 3339 times with `from` at or before `to`, and `actor` must not be empty.
    pub fn parse(
        actor: Option<String>,
        types: &[String],
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Self, AppError> {
        let invalid = |field: &str, message: String| AppError::Invalid {
            field: field.into(),
            message,
        };
        if actor.as_deref().is_some_and(|a| a.trim().is_empty()) {
            return Err(invalid(
                "actor",
                "must not be empty; give the subject (token `sub`) whose events you want".into(),
            ));
        }
        let mut wanted = Vec::new();
        for name in types.iter().flat_map(|value| value.split(',')) {
            let name = name.trim();
            if !Event::TYPES.iter().any(|(known, _)| *known == name) {
                let known: Vec<&str> = Event::TYPES.iter().map(|(known, _)| *known).collect();
                return Err(invalid(
                    "type",
                    format!(
                        "{name:?} is not an event type; use one of {}",
                        known.join(", ")
                    ),
                ));
            }
            if !wanted.iter().any(|w| w == name) {
                wanted.push(name.to_string());
            }
        }
        let time = |field: &str, raw: Option<&str>| {
            raw.map(|raw| {
                raw.parse::<jiff::Timestamp>().map_err(|e| {
                    invalid(
                        field,
                        format!("{raw:?} is not an RFC 3339 time ({e}); e.g. 2026-11-25T12:00:00Z"),
                    )
                })
            })
            .transpose()
        };
        let (from, to) = (time("from", from)?, time("to", to)?);
        if let (Some(from), Some(to)) = (from, to)
            && from > to
        {
            return Err(invalid(
                "from",
                format!("{from} is after to ({to}); from is inclusive and to exclusive"),
            ));
        }
        Ok(Self {
            actor,
            types: wanted,
            from,
            to,
        })
    }

    /// Whether nothing is filtered.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether `envelope` passes.
    pub fn matches(&self, envelope: &Envelope) -> bool {
        self.actor.as_ref().is_none_or(|a| *a == envelope.actor)
            && (self.types.is_empty() || self.types.contains(&envelope.event_type))
            && self.from.is_none_or(|from| envelope.recorded_at >= from)
            && self.to.is_none_or(|to| envelope.recorded_at < to)
    }
}

/// A page of a plan's audit trail.
#[derive(Clone, Debug)]
pub struct EventsPage {
    /// The matching events, oldest first.
    pub events: Vec<Envelope>,
    /// The version to continue from, when the trail (as filtered) may go on; `None` at its end.
    pub next_from_version: Option<u64>,
}

/// Answers queries over the log. Shared by the HTTP API and the NATS doors.
#[derive(Clone, Debug)]
pub struct QueryService {
    plans: Arc<PlanLoader>,
}

impl QueryService {
    /// A query service over the given loader.
    pub fn new(plans: Arc<PlanLoader>) -> Self {
        Self { plans }
    }

    /// A plan's state now or in the past.
    pub fn plan_state(
        &self,
        principal: &Principal,
        plan_id: &PlanId,
        at: StateAt,
    ) -> Result<PlanState, AppError> {
        principal.require(Permission::Read)?;
        if at != StateAt::Current {
            return plan_state_via(
                &self.plans.store().view(),
                Some(self.plans.ladder()),
                &principal.tenant,
                plan_id,
                at,
            );
        }
        let stream = stream_of(&principal.tenant, plan_id)?;
        // Readers see durable events only: the command path may already have loaded (and
        // cached) a batch whose fsync is still running.
        let store = self.plans.store();
        let durable = store.last_position();
        let current = self.plans.current(&stream, Version(0))?;
        let loaded = if current.version > store.stream_version_at(&stream, durable)? {
            // The durable state just behind the cache: newest snapshot and tail, not the
            // ladder (a first fill would replay the whole plan on a current read).
            load_at_position(&store.view(), &stream, durable)?
        } else {
            current
        };
        if loaded.version.get() == 0 {
            return Err(not_found(plan_id));
        }
        Ok(PlanState {
            plan_id: plan_id.clone(),
            version: loaded.version.get(),
            as_of_position: None,
            plan: loaded.plan,
        })
    }

    /// A page of a plan's audit trail from `from_version`, oldest first, holding only the
    /// events `filter` lets through.
    ///
    /// Without a filter the page is the next `limit` events. With one, it scans at most
    /// `limit * 20 + 1000` versions (a rare actor or type on a long plan still gets an
    /// answer), so a page may hold fewer than `limit` events, even none, while
    /// `next_from_version` says where to continue. A `from` time starts the scan at the first
    /// version recorded then or later (recorded_at never decreases along a stream), and the
    /// first event at or after `to` ends the trail.
    pub fn plan_events(
        &self,
        principal: &Principal,
        plan_id: &PlanId,
        from_version: u64,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<EventsPage, AppError> {
        principal.require(Permission::Audit)?;
        let stream = stream_of(&principal.tenant, plan_id)?;
        let store = self.plans.store();
        // Events of a batch whose fsync is still running are not shown yet.
        let end = store
            .stream_version_at(&stream, store.last_position())?
            .get();
        if end == 0 {
            return Err(not_found(plan_id));
        }
        let limit = limit.clamp(1, MAX_PAGE);
        let mut next = from_version.max(1);
        if let Some(from) = filter.from {
            // The last position recorded before `from`, and the stream's version by then.
            let before = from
                .checked_sub(jiff::SignedDuration::from_nanos(1))
                .map_or(Ok(Position(0)), |t| store.position_at(t))?;
            next = next.max(store.stream_version_at(&stream, before)?.get() + 1);
        }
        let budget = if filter.is_empty() {
            limit as u64
        } else {
            (limit * 20 + 1000) as u64
        };
        let stop = next.saturating_add(budget).min(end + 1);
        let mut events = Vec::new();
        while next < stop && events.len() < limit {
            let page = store.read_stream(
                &stream,
                Version(next),
                ReadDirection::Forward,
                usize::try_from(stop - next).map_or(512, |n| n.min(512)),
            )?;
            if page.is_empty() {
                break;
            }
            for envelope in page {
                if filter.to.is_some_and(|to| envelope.recorded_at >= to) {
                    return Ok(EventsPage {
                        events,
                        next_from_version: None,
                    });
                }
                next = envelope.version.get() + 1;
                if filter.matches(&envelope) {
                    events.push(envelope);
                    if events.len() >= limit {
                        break;
                    }
                }
            }
        }
        Ok(EventsPage {
            events,
            next_from_version: (next <= end).then_some(next),
        })
    }

    /// A page of the global log, holding only the caller's tenant's events.
    ///
    /// Scans at most `limit * 20 + 1000` positions per page so a quiet tenant on a busy log
    /// still gets an answer; `next_position` says where to continue.
    pub fn log_page(
        &self,
        principal: &Principal,
        from_position: u64,
        limit: usize,
    ) -> Result<LogPage, AppError> {
        principal.require(Permission::Audit)?;
        let limit = limit.clamp(1, MAX_PAGE);
        let store = self.plans.store();
        let last = store.last_position().get();
        let prefix = format!("{}/", principal.tenant);
        let budget = (limit * 20 + 1000) as u64;
        let mut events = Vec::new();
        let mut next = from_position.max(1);
        let stop = next.saturating_add(budget);
        while next <= last && next < stop && events.len() < limit {
            let page = store.read_all(Position(next), 512.min((stop - next) as usize))?;
            if page.is_empty() {
                break;
            }
            for envelope in page {
                next = envelope.position.get() + 1;
                if envelope.stream.as_str().starts_with(&prefix) {
                    events.push(envelope);
                    if events.len() >= limit {
                        break;
                    }
                }
            }
        }
        Ok(LogPage {
            events,
            next_position: next,
            last_position: last,
        })
    }

    /// The plan loader behind this service.
    pub fn plans(&self) -> &Arc<PlanLoader> {
        &self.plans
    }
}

fn not_found(plan_id: &PlanId) -> AppError {
    AppError::NotFound(format!("plan {plan_id} does not exist"))
}

/// A tenant's plan as it stood at `at`, read through `log` alone (no cache): the answer of
/// `GET /v1/plans/{plan_id}?version=|position=|as_of=`, and of `planledger replay --plan`, which
/// reads a [`planledger_store::LogReader`]'s view while the service runs. Positions past the
/// view's last one are read as the last one; `Current` is the state at the last one.
pub fn plan_state_in(
    log: &LogView<'_>,
    tenant: &str,
    plan_id: &PlanId,
    at: StateAt,
) -> Result<PlanState, AppError> {
    plan_state_via(log, None, tenant, plan_id, at)
}

/// [`plan_state_in`], starting from `ladder`'s nearest decoded state when it has one (see
/// [`StateLadder`]); the answer is the same.
pub fn plan_state_via(
    log: &LogView<'_>,
    ladder: Option<&StateLadder>,
    tenant: &str,
    plan_id: &PlanId,
    at: StateAt,
) -> Result<PlanState, AppError> {
    let stream = stream_of(tenant, plan_id)?;
    let durable = log.last_position();
    let (loaded, as_of_position) = match at {
        StateAt::Current => (load_at_position_via(log, ladder, &stream, durable)?, None),
        StateAt::Version(v) => {
            let head = log.stream_version_at(&stream, durable)?;
            if head.get() == 0 {
                return Err(not_found(plan_id));
            }
            if v == 0 || v > head.get() {
                return Err(AppError::Invalid {
                    field: "version".into(),
                    message: format!("plan {plan_id} has versions 1 to {head}; {v} is outside"),
                });
            }
            (load_at_version_via(log, ladder, &stream, Version(v))?, None)
        }
        StateAt::Position(p) => (
            load_at_position_via(log, ladder, &stream, Position(p.min(durable.get())))?,
            Some(p),
        ),
        StateAt::Time(t) => {
            let position = log.position_at(t)?.min(durable);
            (
                load_at_position_via(log, ladder, &stream, position)?,
                Some(position.get()),
            )
        }
    };
    if loaded.version.get() == 0 {
        return Err(match at {
            StateAt::Current => not_found(plan_id),
            _ => AppError::NotFound(format!("plan {plan_id} did not exist at that point")),
        });
    }
    Ok(PlanState {
        plan_id: plan_id.clone(),
        version: loaded.version.get(),
        as_of_position,
        plan: loaded.plan,
    })
}
