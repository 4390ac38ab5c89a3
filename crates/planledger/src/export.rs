//! `planledger export`: writes a range of the event log to an NDJSON or Parquet file, reading
//! the log as a secondary instance, so it works while `planledger serve` holds it.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use planledger_export::{ExportOptions, ExportReport, Format};
use planledger_store::{LogReader, Position, StoreOptions};

/// File formats of `export`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// One envelope JSON per line, exactly as `GET /v1/events` renders it.
    Ndjson,
    /// Apache Parquet: one typed row per event, snappy-compressed.
    Parquet,
}

impl From<ExportFormat> for Format {
    fn from(format: ExportFormat) -> Self {
        match format {
            ExportFormat::Ndjson => Format::Ndjson,
            ExportFormat::Parquet => Format::Parquet,
        }
    }
}

/// Flags of `export`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Incremental feeds: the summary names the position an export read \
through; the next run with --from-position of that position + 1 continues it, and the files \
together equal one full export."
)]
pub struct ExportArgs {
    /// Data directory of the service (its log is read without taking the lock, so the service
    /// may keep running).
    #[arg(long, env = "PLANLEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// File format.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// First global position to export.
    #[arg(long, default_value_t = 1)]
    pub from_position: u64,
    /// Last global position to export (default: the end of the log when the export starts).
    #[arg(long)]
    pub to_position: Option<u64>,
    /// Export only this tenant's events.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Output file; `-` writes NDJSON to standard output. A file is written beside the target
    /// first and renamed into place once complete.
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
}

/// Runs `export`.
pub fn run(args: ExportArgs) -> Result<()> {
    let to_stdout = args.to.as_os_str() == "-";
    if to_stdout && args.format == ExportFormat::Parquet {
        bail!(
            "--to - writes to standard output, which only NDJSON can stream; give a file name for Parquet (e.g. --to events.parquet)"
        );
    }
    let log_dir = args.data_dir.join("log");
    let reader = LogReader::open(&log_dir, &StoreOptions::default())
        .with_context(|| format!("opening the event log in {} to read", log_dir.display()))?;
    let options = ExportOptions {
        format: args.format.into(),
        from: Position(args.from_position.max(1)),
        to: args.to_position.map(Position),
        tenant: args.tenant.clone(),
    };
    let view = reader.view();
    let end = options
        .to
        .unwrap_or(view.last_position())
        .min(view.last_position());
    let bar = progress_bar(
        end.get()
            .saturating_sub(options.from.get().saturating_sub(1)),
    );
    let first = options.from.get();
    let mut shown = 0u64;
    let progress = |position: Position| {
        let done = position.get() + 1 - first;
        if done - shown >= 4096 {
            bar.set_position(done);
            shown = done;
        }
    };
    let started = Instant::now();
    let report = if to_stdout {
        let stdout = std::io::stdout();
        planledger_export::export(&view, &options, stdout, progress)?
    } else {
        write_file(&args.to, |file| {
            Ok(planledger_export::export(&view, &options, file, progress)?)
        })?
    };
    bar.finish_and_clear();
    eprintln!(
        "{}",
        summary(
            &report,
            options.format,
            &args.to,
            started.elapsed().as_secs_f64()
        )
    );
    Ok(())
}

/// Writes through `write` into a partial file beside `target`, and renames it into place only
/// when `write` succeeded (a failed export leaves no half file under the target's name).
fn write_file(
    target: &Path,
    write: impl FnOnce(&mut std::fs::File) -> Result<ExportReport>,
) -> Result<ExportReport> {
    let mut partial = target.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut file = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let report = match write(&mut file).and_then(|report| {
        file.flush()?;
        file.sync_all()
            .with_context(|| format!("syncing {}", partial.display()))?;
        Ok(report)
    }) {
        Ok(report) => report,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
    };
    std::fs::rename(&partial, target)
        .with_context(|| format!("renaming {} to {}", partial.display(), target.display()))?;
    Ok(report)
}

/// A bar on standard error when it is a terminal (standard output may carry the export).
fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>10} {bar:40} {pos}/{len} positions  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("exporting");
    bar
}

/// The line printed when an export is done: what it wrote and where the next one starts.
pub fn summary(report: &ExportReport, format: Format, to: &Path, seconds: f64) -> String {
    let target = if to.as_os_str() == "-" {
        "standard output".to_owned()
    } else {
        to.display().to_string()
    };
    let range = match (report.first_position, report.last_position) {
        (Some(first), Some(last)) => format!("positions {first} to {last}"),
        _ => "no positions".to_owned(),
    };
    format!(
        "exported {} events ({range}) as {} to {target}: {} bytes in {seconds:.2} s ({:.0} events/s); read through position {} (continue with --from-position {})",
        report.events,
        format.as_str(),
        report.bytes,
        report.events as f64 / seconds.max(1e-9),
        report.through_position,
        report.through_position.get() + 1,
    )
}
