//! Projections: the projector runtime and the progress, accountability and agility read models.
//!
//! What it is for: turning the event log into read models that answer "how is this plan
//! doing?" quickly. A projector ([`Projector`]) is pure logic from (stored facts, event) to
//! writes; the runtime ([`spawn`]) feeds it events in global order from an [`EventSource`] and
//! commits the writes and the checkpoint in one RocksDB batch in the read model's own database
//! ([`ReadModelDb`], `<data_dir>/projections/<name>`), so a crash never applies an event twice or
//! skips one. Rebuilds fill a new generation beside the live one and switch atomically.
//!
//! The read models store facts (each plan's evolved state, and a person -> plan index), not
//! figures: every time-based figure is computed at query time for the instant asked, by the
//! domain's formulas in `planledger_domain::metrics` (the only implementation of any formula).
//!
//! What it must never do: depend on NATS code (the JetStream source lives in `planledger-bus`
//! and implements [`EventSource`]), write to the event log or its database, implement a metric
//! formula of its own, or know about HTTP or authentication (the `app` crate scopes queries to
//! a tenant).

#![warn(missing_docs)]

pub mod accountability;
pub mod agility;
mod db;
mod decode;
mod error;
mod local;
pub mod progress;
mod projector;
mod quarantine;
mod runtime;
mod source;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use accountability::AccountabilityProjector;
pub use agility::AgilityProjector;
pub use db::{
    Checkpoint, ReadModelDb, ReadView, Record, SNAPSHOT_MIN_TAIL_BYTES, is_bookkeeping_key,
};
pub use decode::{decode_event, split_stream};
pub use error::{ProjectionError, SourceError};
pub use local::{LocalLogSource, SharedTail};
pub use progress::ProgressProjector;
pub use projector::{IndexChange, ProjectedEvent, Projector, fold};
pub use quarantine::{Poison, Quarantine, QuarantineRequest, quarantine_offline};
pub use runtime::{
    ProjectionHandle, ProjectorState, ProjectorStatus, REDACTED_STREAM, RebuildReport,
    RebuildStatus, RuntimeOptions, rebuild_to, spawn,
};
pub use source::{Delivery, EventSource, SourceHead};

use planledger_store::EventStore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The read models this build knows, in the order they are started.
pub const PROJECTION_NAMES: [&str; 3] = ["progress", "accountability", "agility"];

/// The projector of the read model `name`.
pub fn projector(name: &str) -> Result<Arc<dyn Projector>, ProjectionError> {
    match name {
        "progress" => Ok(Arc::new(ProgressProjector)),
        "accountability" => Ok(Arc::new(AccountabilityProjector)),
        "agility" => Ok(Arc::new(AgilityProjector)),
        other => Err(ProjectionError::UnknownProjection {
            name: other.to_owned(),
            known: PROJECTION_NAMES.join(", "),
        }),
    }
}

/// Where the read model `name` lives under a data directory: `<data_dir>/projections/<name>`.
pub fn model_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("projections").join(name)
}

/// Opens the read model `name` under `data_dir`.
pub fn open_model(data_dir: &Path, name: &str) -> Result<ReadModelDb, ProjectionError> {
    projector(name)?;
    ReadModelDb::open(model_dir(data_dir, name), name)
}

/// A projector started by [`spawn_embedded`]: its handle and its task.
pub type Running = (ProjectionHandle, JoinHandle<Result<(), ProjectionError>>);

/// Starts every read model inside this process, each tailing the local event log (embedded
/// mode, the default of `planledger serve`).
pub fn spawn_embedded(
    data_dir: &Path,
    store: &EventStore,
    options: RuntimeOptions,
    shutdown: CancellationToken,
) -> Result<Vec<Running>, ProjectionError> {
    // The read models follow the same log: what one reads and decodes, the others reuse.
    let tail = SharedTail::new();
    PROJECTION_NAMES
        .iter()
        .map(|name| {
            let db = open_model(data_dir, name)?;
            spawn(
                projector(name)?,
                db,
                LocalLogSource::with_tail(store.clone(), tail.clone()),
                options.clone(),
                shutdown.clone(),
            )
        })
        .collect()
}
