//! `planledger verify`: walks the hash chain with a progress bar.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use planledger_store::{EventStore, StoreOptions};

/// Flags of `verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Data directory of a stopped service.
    #[arg(long, env = "PLANLEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// Runs `verify`; exits non-zero if the chain is broken.
pub fn run(args: VerifyArgs) -> Result<()> {
    let path = args.data_dir.join("log");
    let store = EventStore::open(&path, StoreOptions::default()).with_context(|| {
        format!(
            "opening {} (stop the service first, or use GET /v1/audit/verify while it runs)",
            path.display()
        )
    })?;
    let total = store.last_position().get();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = store.verify(|p| {
        if p.get() % 1024 == 0 {
            bar.set_position(p.get());
        }
    })?;
    bar.finish_and_clear();
    match report.first_broken {
        None => {
            println!("ok: {} events verified, chain intact", report.checked);
            Ok(())
        }
        Some((position, why)) => {
            bail!(
                "chain broken at position {position}: {why} ({} events before it verified)",
                report.checked
            )
        }
    }
}
