//! `planledger projector quarantine`: pass over one event a stopped projector cannot apply.

use std::path::PathBuf;

use anyhow::{Context, Result};
use planledger_projections::{ProjectionError, QuarantineRequest};
use planledger_store::{EventStore, Position, StoreOptions};

/// Flags of `projector quarantine`.
#[derive(clap::Args, Debug)]
pub struct QuarantineArgs {
    /// Data directory of the stopped service or projector (the read model is in
    /// <DIR>/projections/<NAME>).
    #[arg(long, env = "PLANLEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The read model: progress, accountability or agility.
    #[arg(long)]
    pub name: String,
    /// The position to pass over: the one the projector is stopped at (GET /v1/projections
    /// shows it as `poison.position`), or any position of the local log.
    #[arg(long)]
    pub position: u64,
    /// Why the event is passed over (kept in the record).
    #[arg(long)]
    pub reason: String,
    /// Who decides (kept in the record); default the USER environment variable.
    #[arg(long, env = "USER", default_value = "operator")]
    pub by: String,
    /// Cluster mode (`projector --cluster`): the partition whose projector is stopped at the
    /// position (`partition` in GET /v1/projections).
    #[arg(long)]
    pub partition: Option<u32>,
}

/// Runs `projector quarantine`.
pub fn run(args: QuarantineArgs) -> Result<()> {
    planledger_projections::projector(&args.name)?;
    if args.position == 0 {
        anyhow::bail!("--position must be at least 1 (positions start at 1)");
    }
    if args.reason.trim().is_empty() {
        anyhow::bail!("--reason must say why the event is passed over; it is kept in the record");
    }
    let db = match planledger_projections::open_model(&args.data_dir, &args.name) {
        Ok(db) => db,
        Err(error @ ProjectionError::Locked { .. }) => {
            return Err(error).context(format!(
                "the {} read model is open in a running process: quarantine there with POST /v1/projections/{}/quarantine",
                args.name, args.name
            ));
        }
        Err(error) => return Err(error.into()),
    };
    let db = match (db.claimed_partitions()?, args.partition) {
        (None, None) => db,
        (Some(count), Some(p)) if p < count => db.for_partition(p, count),
        (Some(count), Some(p)) => anyhow::bail!(
            "--partition {p} is out of range: this read model covers partitions 0 to {}",
            count - 1
        ),
        (Some(count), None) => anyhow::bail!(
            "this read model covers {count} partitions (cluster mode): name the one stopped at the position with --partition"
        ),
        (None, Some(_)) => {
            anyhow::bail!("this read model was built from a single log: leave out --partition")
        }
    };
    let log = args.data_dir.join("log");
    let envelope = if log.is_dir() {
        let store = EventStore::open(&log, StoreOptions::default()).with_context(|| {
            format!(
                "opening the event log in {} (stop the service first, or quarantine with POST /v1/projections/{}/quarantine while it runs)",
                log.display(),
                args.name
            )
        })?;
        store
            .read_all(Position(args.position), 1)
            .with_context(|| format!("reading position {} of the event log", args.position))?
            .into_iter()
            .find(|e| e.position.get() == args.position)
    } else {
        None
    };
    let request = QuarantineRequest {
        position: args.position,
        reason: args.reason.clone(),
        by: args.by.clone(),
    };
    let record = planledger_projections::quarantine_offline(&db, &request, envelope.as_ref())?;
    println!(
        "{}: quarantined position {} ({} v{} on {}, event {}) by {} at {}: {}",
        args.name,
        record.position,
        record.event_type,
        record.schema_version,
        record.stream,
        record.event_id,
        record.by,
        record.at,
        record.reason
    );
    println!(
        "the projector passes over it from its next start, in the live model and in every rebuild"
    );
    Ok(())
}
