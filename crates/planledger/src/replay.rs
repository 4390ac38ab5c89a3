//! `planledger replay`: two modes of one subcommand.
//!
//! - `--projection NAME` rebuilds a read model from position 0 in a new generation beside the
//!   live one, with a progress bar, then switches to it (the service must be stopped).
//! - `--plan TENANT/PLAN --until WHEN` prints a plan as it stood at a time, version or position
//!   (`replay_plan`), reading the log as a secondary instance, so the service may keep running.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::ArgGroup;
use indicatif::{ProgressBar, ProgressStyle};
use planledger_projections::{LocalLogSource, PROJECTION_NAMES, ProjectionError, RuntimeOptions};
use planledger_store::{EventStore, StoreOptions};

use crate::replay_plan::Until;

/// Flags of `replay`: exactly one of `--projection` and `--plan`.
#[derive(clap::Args, Debug)]
#[command(group(
    ArgGroup::new("mode")
        .required(true)
        .args(["projection", "plan"])
))]
pub struct ReplayArgs {
    /// Rebuild this read model (progress, accountability, agility), or `all`, from position 0.
    /// The service must be stopped (while it runs, use POST /v1/projections/NAME/rebuild).
    #[arg(long, value_name = "NAME")]
    pub projection: Option<String>,
    /// Print this plan as it stood (goals tree with targets, due dates, progress, status,
    /// steps and roles), given as TENANT/PLAN. Works while the service runs.
    #[arg(long, value_name = "TENANT/PLAN")]
    pub plan: Option<String>,
    /// With --plan: the point to replay to: an RFC 3339 time (the plan as recorded by then,
    /// e.g. 2026-11-25T12:00:00Z), `version:N` (after the plan's N-th event) or `position:P`
    /// (as of global log position P). Default: the end of the log.
    #[arg(long, value_name = "WHEN", requires = "plan")]
    pub until: Option<Until>,
    /// With --plan: print JSON (the body of GET /v1/plans/{id} at that point, plus the
    /// progress figures as of then) instead of tables.
    #[arg(long, requires = "plan")]
    pub json: bool,
    /// Data directory of the service.
    #[arg(long, env = "PLANLEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// Runs `replay`.
pub async fn run(args: ReplayArgs) -> Result<()> {
    match (&args.projection, &args.plan) {
        (Some(projection), None) => rebuild(projection, &args.data_dir).await,
        (None, Some(plan)) => crate::replay_plan::run(
            &args.data_dir,
            plan,
            args.until.unwrap_or(Until::End),
            args.json,
        ),
        // clap's group already refuses both and neither; this keeps the message if it did not.
        _ => anyhow::bail!(
            "give exactly one of --projection NAME (rebuild a read model) and --plan TENANT/PLAN (print a plan as it stood)"
        ),
    }
}

async fn rebuild(projection: &str, data_dir: &std::path::Path) -> Result<()> {
    let names: Vec<&str> = if projection == "all" {
        PROJECTION_NAMES.to_vec()
    } else {
        planledger_projections::projector(projection)?;
        vec![projection]
    };
    let log = data_dir.join("log");
    let store = EventStore::open(&log, StoreOptions::default()).with_context(|| {
        format!(
            "opening the event log in {} (stop the service first, or use POST /v1/projections/<name>/rebuild while it runs)",
            log.display()
        )
    })?;
    for name in names {
        rebuild_one(&store, data_dir, name).await?;
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
