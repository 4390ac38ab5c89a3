//! The application layer: the one place both doors (HTTP in `api`, NATS in `bus`) call.
//!
//! It owns the command path (authorize, load the plan from cache or snapshot plus tail, decide,
//! append with the expected version, retry once, remember), authentication (JWT: its own HS256
//! tokens, and an OpenID Connect provider's, whose key set the binary fetches and hands in) and
//! the role matrix, and the query services over the log. It never speaks HTTP or NATS itself,
//! but [`door`] is what both doors call to decode a command and to refuse one.

pub mod audit;
pub mod auth;
mod backtests;
pub mod bookmark;
pub mod checkpoint;
mod commands;
pub mod cosignature;
pub mod door;
mod error;
mod key_file;
pub mod keyset;
pub mod limits;
mod plans;
mod queries;
mod read_models;
pub mod witness;

pub use audit::{AuditService, DigestKey};
pub use auth::{AuthError, Authenticator, IdentityProvider, Permission, Principal, Role};
pub use bookmark::{Bookmark, LogRef};
pub use commands::{CommandRequest, CommandResult, CommandService, MAX_COMMAND_ID_LEN};
pub use door::{CommandBody, CommandInput, FieldError, IfMatch, Refusal};
pub use error::AppError;
pub use keyset::{KeyKind, KeySet, KeySetError, ParsedKeys};
pub use limits::{RateLimit, RateLimiter};
pub use plans::{
    LADDER_RUNGS, LADDER_STEP, LadderStats, LoadedPlan, PlanLoader, StateLadder, decode_event,
    load_at_position, load_at_position_via, load_at_version, load_at_version_via,
    snapshot_interval, stream_of,
};
pub use queries::{
    EventFilter, EventsPage, LogPage, MAX_PAGE, PlanState, QueryService, StateAt, plan_state_in,
    plan_state_via,
};
pub use read_models::{
    DEFAULT_MIN_POSITION_WAIT, MAX_PLANS_PAGE, PlanList, PlanSummary, ProgressQuery, ReadAfter,
    ReadModelResponse, ReadModels,
};

use std::sync::Arc;

use planledger_store::EventStore;

/// Plans kept in memory by the command path.
pub const DEFAULT_PLAN_CACHE: usize = 10_000;
/// Versions between snapshots of a small plan; the interval doubles as a plan grows
/// ([`snapshot_interval`]).
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 100;

/// Everything the doors need, wired over one event store.
#[derive(Clone, Debug)]
pub struct App {
    /// The command path.
    pub commands: CommandService,
    /// The log queries.
    pub queries: QueryService,
    /// Token verification.
    pub auth: Authenticator,
    /// The event store.
    pub store: EventStore,
    /// The read models (none until the binary starts projectors and sets them).
    pub read_models: ReadModels,
    /// Chain verification and signed digests (no digests until a key is set with
    /// [`App::with_digest_key`]).
    pub audit: AuditService,
}

impl App {
    /// Wires the services over `store` with default cache and snapshot settings.
    pub fn new(store: EventStore, auth: Authenticator) -> Self {
        let plans = Arc::new(PlanLoader::new(
            store.clone(),
            DEFAULT_PLAN_CACHE,
            DEFAULT_SNAPSHOT_EVERY,
        ));
        let queries = QueryService::new(plans.clone());
        Self {
            commands: CommandService::new(plans),
            read_models: ReadModels::new(Vec::new(), Some(queries.clone())),
            queries,
            auth,
            audit: AuditService::new(store.clone(), None),
            store,
        }
    }

    /// The same services, signing digests with `key`.
    pub fn with_digest_key(mut self, key: DigestKey) -> Self {
        self.audit = AuditService::new(self.store.clone(), Some(Arc::new(key)));
        self
    }
}
