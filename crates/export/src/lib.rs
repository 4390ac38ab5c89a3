//! Exports of the event log for downstream analytics: NDJSON (one envelope per line, as
//! `GET /v1/events` renders it) and Parquet (one typed row per event).
//!
//! What it is for: turning a range of the global log, optionally one tenant's events only, into
//! a file an analyst loads with DuckDB, pandas or Spark. An export covers the positions
//! `from..=through`, where `through` is the last position it read; the next export from
//! `through + 1` continues it, so incremental files concatenate to one full export.
//!
//! With proofs ([`export_with_proofs`], `proof.rs`), each row also carries its event's stored
//! bytes and its Merkle inclusion proof in the tree of the export's last position, for an
//! auditor to check against a signed checkpoint of that tree ([`read_proved`] reads them back).
//!
//! What it must never do: write to the log, or know what a plan is (it reads envelopes through a
//! [`LogView`], like any other reader of the store). Its Parquet dependencies live here, not in
//! `store`, so the service's own crates do not compile them.

mod envelope;
mod huge_pages;
mod ndjson;
mod output;
mod parquet_file;
mod proof;
mod row_groups;

use std::ops::ControlFlow;

use planledger_store::{LogView, Position, StoreError};

pub use output::Output;
pub use parquet_file::{partitioned_schema, proved_schema, schema};
pub use proof::{ProvedExport, ProvedRow, ReadProgress, export_with_proofs, read_proved};
pub use row_groups::ROW_GROUP_ROWS;

/// The file format of an export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One envelope JSON per line, byte for byte as the log stores it and `/v1/events` renders it.
    Ndjson,
    /// Apache Parquet, one row per event, zstd-compressed.
    Parquet,
}

impl Format {
    /// `ndjson` or `parquet`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ndjson => "ndjson",
            Self::Parquet => "parquet",
        }
    }
}

/// What to export.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// The file format.
    pub format: Format,
    /// First position to read (1 for the whole log).
    pub from: Position,
    /// Last position to read; `None` (or past the end) for the end of the log as the view shows it.
    pub to: Option<Position>,
    /// Only this tenant's events (streams `<tenant>/...`); `None` for every tenant.
    pub tenant: Option<String>,
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Events written.
    pub events: u64,
    /// Position of the first event written.
    pub first_position: Option<Position>,
    /// Position of the last event written.
    pub last_position: Option<Position>,
    /// The last position read: the next incremental export starts after it (with a tenant
    /// filter it may be past the last event written).
    pub through_position: Position,
    /// Bytes written to the output.
    pub bytes: u64,
}

/// Everything that can go wrong in an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the log failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored envelope did not decode.
    #[error("log position {position} does not decode as an envelope: {detail}")]
    Envelope {
        /// Where.
        position: u64,
        /// What is wrong.
        detail: String,
    },
    /// Writing the output failed.
    #[error("writing the export failed: {0}")]
    Io(#[from] std::io::Error),
    /// The Parquet writer failed.
    #[error("writing Parquet failed: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Building an Arrow batch failed.
    #[error("building an Arrow batch failed: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The thread writing the file stopped before the scan ended (its own error is reported
    /// instead).
    #[error("the export's writer thread stopped")]
    EncoderStopped,
    /// Reading the events to export failed (a cluster's partition streams).
    #[error("reading the events to export failed: {0}")]
    Source(String),
    /// A row of a file read back with [`read_proved`] is not a row with a proof.
    #[error("row {row} of the export is not a row with a proof: {detail}")]
    MalformedRow {
        /// The row's number, from 1 (0: the file as a whole).
        row: u64,
        /// What is wrong.
        detail: String,
    },
    /// The range asked for is empty.
    #[error("--from-position {from} is past --to-position {to}; give a range with from <= to")]
    EmptyRange {
        /// First position asked for.
        from: u64,
        /// Last position asked for.
        to: u64,
    },
}

/// Writes the events of `view` selected by `options` to `out` in the chosen format, calling
/// `progress` with each position read (for progress bars), and reports what it wrote.
///
/// Memory stays bounded: NDJSON goes out in buffers of a few MiB, Parquet in batches of a few
/// thousand rows (up to half a row group queued per encoder), each encoder holding the one row
/// group of [`ROW_GROUP_ROWS`] rows it makes.
/// A file is written with direct I/O where its filesystem allows it (see [`Output::File`]).
pub fn export(
    view: &LogView<'_>,
    options: &ExportOptions,
    out: Output<'_>,
    progress: impl FnMut(Position),
) -> Result<ExportReport, ExportError> {
    let to = end_of_range(view, options)?;
    write_with(options.format, parquet_file::schema(), out, |sink| {
        scan(
            view,
            options,
            to,
            sink,
            progress,
            |sink, position, stored| sink.write(position, stored),
        )
    })
}

/// The last position an export of `options` reads: the end asked for, or of the log as the
/// view shows it, whichever comes first; a range that ends before it starts is refused.
fn end_of_range(view: &LogView<'_>, options: &ExportOptions) -> Result<Position, ExportError> {
    if let Some(asked) = options.to
        && asked < options.from
    {
        return Err(ExportError::EmptyRange {
            from: options.from.get(),
            to: asked.get(),
        });
    }
    Ok(options
        .to
        .unwrap_or(view.last_position())
        .min(view.last_position()))
}

/// One event of a cluster's partition, for [`export_partitioned`].
#[derive(Clone, Debug)]
pub struct PartitionedEvent {
    /// Its partition.
    pub partition: u32,
    /// Its position in the partition's log.
    pub position: Position,
    /// The envelope's JSON with a `partition` field (as a cluster node's `/v1/events` renders it).
    pub json: Vec<u8>,
}

/// Writes `events` (a cluster's partitions, read by the caller) to `out` in `format`: NDJSON
/// lines as given, Parquet rows with a last column `partition`. `progress` sees each event.
/// The report's positions are those of the first and last event written (of their partitions).
pub fn export_partitioned(
    events: impl Iterator<Item = Result<PartitionedEvent, ExportError>>,
    format: Format,
    out: Output<'_>,
    mut progress: impl FnMut(&PartitionedEvent),
) -> Result<ExportReport, ExportError> {
    write_with(format, parquet_file::partitioned_schema(), out, |sink| {
        let mut report = ExportReport::default();
        for event in events {
            let event = event?;
            progress(&event);
            sink.write(event.position, &event.json)?;
            report.events += 1;
            report.first_position.get_or_insert(event.position);
            report.last_position = Some(event.position);
            report.through_position = event.position;
        }
        Ok(report)
    })
}

/// Runs `feed` into the sink of `format` over `out` and reports what it wrote.
///
/// Both formats write on threads of their own, fed through small queues, while this one scans
/// (Parquet's encoders also decode the envelopes and build the columns): on two cores or more
/// the scan and the rest overlap.
fn write_with(
    format: Format,
    schema: arrow_schema::SchemaRef,
    out: Output<'_>,
    feed: impl FnOnce(&mut dyn Sink) -> Result<ExportReport, ExportError>,
) -> Result<ExportReport, ExportError> {
    let _huge_pages_off = huge_pages::HugePagesOff::new();
    std::thread::scope(|scope| {
        let out = output::Destination::new(out)?;
        match format {
            Format::Ndjson => {
                let (sink, writer) = ndjson::spawn_writer(scope, out)?;
                feed_then_join(sink, writer, feed)
            }
            Format::Parquet => {
                let (sink, writer) = parquet_file::spawn_writer(scope, out, schema)?;
                feed_then_join(sink, writer, feed)
            }
        }
    })
}

/// The thread writing an export's file; it answers how the writing ended: the bytes written.
type WriterThread<'scope> = std::thread::ScopedJoinHandle<'scope, Result<u64, ExportError>>;

/// Runs `feed` into `sink`, finishes it and waits for its writer thread.
fn feed_then_join<S: Sink>(
    mut sink: S,
    writer: WriterThread<'_>,
    feed: impl FnOnce(&mut dyn Sink) -> Result<ExportReport, ExportError>,
) -> Result<ExportReport, ExportError> {
    let scanned = feed(&mut sink).and_then(|report| {
        sink.finish()?;
        Ok(report)
    });
    // Dropping the sink closes the writer's queue, whatever happened to the scan.
    drop(sink);
    let written = writer
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    // A failed write stops the scan too (its queue is gone): report the write's error.
    let bytes = written?;
    Ok(ExportReport { bytes, ..scanned? })
}

/// Feeds `sink` the selected events of `from..=to`, each through `write`: what was written
/// and read through.
fn scan(
    view: &LogView<'_>,
    options: &ExportOptions,
    to: Position,
    sink: &mut dyn Sink,
    mut progress: impl FnMut(Position),
    mut write: impl FnMut(&mut dyn Sink, Position, &[u8]) -> Result<(), ExportError>,
) -> Result<ExportReport, ExportError> {
    let mut report = ExportReport::default();
    let through = view.scan_raw(options.from, to, |position, bytes| {
        progress(position);
        if let Some(tenant) = &options.tenant
            && tenant_and_plan(&envelope::stream(position, bytes)?).0 != tenant.as_str()
        {
            return Ok::<_, ExportError>(ControlFlow::Continue(()));
        }
        write(sink, position, bytes)?;
        report.events += 1;
        report.first_position.get_or_insert(position);
        report.last_position = Some(position);
        Ok(ControlFlow::Continue(()))
    })?;
    report.through_position = if through.get() == 0 {
        // Nothing read: the range is past the end (or the log is empty).
        Position(options.from.get().saturating_sub(1).min(to.get()))
    } else {
        through
    };
    Ok(report)
}

/// Where exported events go, one format each.
trait Sink {
    /// Adds one event, given as its stored bytes.
    fn write(&mut self, position: Position, stored: &[u8]) -> Result<(), ExportError>;
    /// Adds one event with its inclusion proof (an export with proofs). A sink of lines writes
    /// the line [`proof::ndjson_line`] makes; Parquet's adds the proof columns.
    fn write_proved(
        &mut self,
        position: Position,
        stored: &[u8],
        proof: &proof::ProofRow<'_>,
    ) -> Result<(), ExportError>;
    /// Writes whatever is buffered and the file's footer, if the format has one.
    fn finish(&mut self) -> Result<(), ExportError>;
}

/// A stream id's tenant and plan id: `<tenant>/<plan_id>`, split at the last slash (plan ids
/// hold none); a stream without a slash is all tenant.
pub fn tenant_and_plan(stream: &str) -> (&str, Option<&str>) {
    match stream.rsplit_once('/') {
        Some((tenant, plan_id)) => (tenant, Some(plan_id)),
        None => (stream, None),
    }
}

fn envelope_error(position: Position, detail: impl ToString) -> ExportError {
    ExportError::Envelope {
        position: position.get(),
        detail: detail.to_string(),
    }
}
