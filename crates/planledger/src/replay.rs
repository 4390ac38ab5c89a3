//! `planledger replay --projection NAME`: rebuilds a read model from position 0 in a new
//! generation beside the live one, with a progress bar, then switches to it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use planledger_projections::{LocalLogSource, PROJECTION_NAMES, ProjectionError, RuntimeOptions};
use planledger_store::{EventStore, StoreOptions};

/// Flags of `replay`.
#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// The read model to rebuild (progress, accountability, agility), or `all`.
    #[arg(long)]
    pub projection: String,
    /// Data directory of a stopped service (while it runs, use POST /v1/projections/NAME/rebuild).
    #[arg(long, env = "PLANLEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// Runs `replay`.
pub async fn run(args: ReplayArgs) -> Result<()> {
    let names: Vec<&str> = if args.projection == "all" {
        PROJECTION_NAMES.to_vec()
    } else {
        planledger_projections::projector(&args.projection)?;
        vec![args.projection.as_str()]
    };
    let log = args.data_dir.join("log");
    let store = EventStore::open(&log, StoreOptions::default()).with_context(|| {
        format!(
            "opening the event log in {} (stop the service first, or use POST /v1/projections/<name>/rebuild while it runs)",
            log.display()
        )
    })?;
    for name in names {
        rebuild_one(&store, &args.data_dir, name).await?;
    }
    Ok(())
}

async fn rebuild_one(store: &EventStore, data_dir: &std::path::Path, name: &str) -> Result<()> {
    let db = match planledger_projections::open_model(data_dir, name) {
        Ok(db) => db,
        Err(error @ ProjectionError::Locked { .. }) => {
            return Err(error).context(format!(
                "the {name} read model is open in a running service: use POST /v1/projections/{name}/rebuild there"
            ));
        }
        Err(error) => return Err(error.into()),
    };
    let target = store.last_position();
    let bar = ProgressBar::new(target.get());
    bar.set_style(
        ProgressStyle::with_template("{msg:>16} {bar:40} {pos}/{len} events  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(name.to_owned());
    let progress = bar.clone();
    let report = planledger_projections::rebuild_to(
        planledger_projections::projector(name)?,
        db,
        LocalLogSource::new(store.clone()),
        RuntimeOptions::default(),
        target,
        move |position| progress.set_position(position),
    )
    .await
    .with_context(|| format!("rebuilding {name}"))?;
    bar.finish_and_clear();
    println!(
        "{name}: rebuilt generation {} from position 0 to {} ({} events in {:.1} s, {:.0} events/s); it is now live",
        report.generation,
        report.checkpoint,
        report.events,
        report.elapsed.as_secs_f64(),
        report.events_per_second()
    );
    Ok(())
}
