//! Parquet: one typed row per event, snappy-compressed, in row groups of [`ROW_GROUP_ROWS`].

use std::borrow::Cow;
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use arrow_array::builder::{
    StringBuilder, TimestampNanosecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use planledger_store::Position;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{ExportError, Sink, envelope_error, tenant_and_plan};

/// Rows per row group: large enough for column compression and scans to pay off, small enough
/// that a reader can skip by position and the writer's buffered group stays tens of MiB.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Rows per Arrow batch handed to the writer (the builders' memory).
const BATCH_ROWS: usize = 8 * 1024;

/// Columns whose values are (nearly) all distinct: dictionary encoding would only cost time.
const DISTINCT_COLUMNS: [&str; 7] = [
    "event_id",
    "occurred_at",
    "recorded_at",
    "traceparent",
    "data",
    "prev_hash",
    "hash",
];

/// The Arrow schema of an export: the envelope's fields in its order, with the stream also
/// split into `tenant` and `plan_id`, and both times as UTC timestamps in nanoseconds.
pub fn schema() -> SchemaRef {
    schema_with(false)
}

/// The Arrow schema of an export of a cluster's partitions: [`schema`] and a last column
/// `partition`.
pub fn partitioned_schema() -> SchemaRef {
    schema_with(true)
}

fn schema_with(partitioned: bool) -> SchemaRef {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let time = |name: &str| {
        Field::new(
            name,
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        )
    };
    let mut fields = vec![
        Field::new("position", DataType::UInt64, false),
        text("stream", false),
        text("tenant", false),
        text("plan_id", true),
        Field::new("version", DataType::UInt64, false),
        text("event_id", false),
        text("type", false),
        Field::new("schema_version", DataType::UInt32, false),
        time("occurred_at"),
        time("recorded_at"),
        text("actor", false),
        text("command_id", true),
        text("correlation_id", true),
        text("causation_id", true),
        text("traceparent", true),
        text("data", false),
        text("prev_hash", false),
        text("hash", false),
    ];
    if partitioned {
        fields.push(Field::new("partition", DataType::UInt32, false));
    }
    Arc::new(Schema::new(fields))
}

/// A stored envelope, borrowed from its bytes where no unescaping is needed.
#[derive(Deserialize)]
struct Row<'a> {
    position: u64,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    version: u64,
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
    schema_version: u32,
    #[serde(borrow)]
    occurred_at: Cow<'a, str>,
    #[serde(borrow)]
    recorded_at: Cow<'a, str>,
    #[serde(borrow)]
    actor: Cow<'a, str>,
    #[serde(borrow)]
    command_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    correlation_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    causation_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    traceparent: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow)]
    prev_hash: Cow<'a, str>,
    #[serde(borrow)]
    hash: Cow<'a, str>,
    /// A cluster's events carry their partition.
    #[serde(default)]
    partition: Option<u32>,
}

/// One builder per column, in schema order.
struct Columns {
    position: UInt64Builder,
    stream: StringBuilder,
    tenant: StringBuilder,
    plan_id: StringBuilder,
    version: UInt64Builder,
    event_id: StringBuilder,
    event_type: StringBuilder,
    schema_version: UInt32Builder,
    occurred_at: TimestampNanosecondBuilder,
    recorded_at: TimestampNanosecondBuilder,
    actor: StringBuilder,
    command_id: StringBuilder,
    correlation_id: StringBuilder,
    causation_id: StringBuilder,
    traceparent: StringBuilder,
    data: StringBuilder,
    prev_hash: StringBuilder,
    hash: StringBuilder,
    /// Only in an export of a cluster's partitions.
    partition: Option<UInt32Builder>,
    rows: usize,
}

impl Columns {
    fn new(partitioned: bool) -> Self {
        let text = |bytes_per_row: usize| {
            StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * bytes_per_row)
        };
        let time = || TimestampNanosecondBuilder::with_capacity(BATCH_ROWS).with_timezone("UTC");
        Self {
            position: UInt64Builder::with_capacity(BATCH_ROWS),
            stream: text(32),
            tenant: text(16),
            plan_id: text(16),
            version: UInt64Builder::with_capacity(BATCH_ROWS),
            event_id: text(36),
            event_type: text(16),
            schema_version: UInt32Builder::with_capacity(BATCH_ROWS),
            occurred_at: time(),
            recorded_at: time(),
            actor: text(16),
            command_id: text(36),
            correlation_id: text(36),
            causation_id: text(0),
            traceparent: text(55),
            data: text(128),
            prev_hash: text(64),
            hash: text(64),
            partition: partitioned.then(|| UInt32Builder::with_capacity(BATCH_ROWS)),
            rows: 0,
        }
    }

    fn push(&mut self, position: Position, row: &Row<'_>) -> Result<(), ExportError> {
        let (tenant, plan_id) = tenant_and_plan(&row.stream);
        self.position.append_value(row.position);
        self.stream.append_value(&row.stream);
        self.tenant.append_value(tenant);
        self.plan_id.append_option(plan_id);
        self.version.append_value(row.version);
        self.event_id.append_value(&row.event_id);
        self.event_type.append_value(&row.event_type);
        self.schema_version.append_value(row.schema_version);
        self.occurred_at
            .append_value(nanoseconds(position, "occurred_at", &row.occurred_at)?);
        self.recorded_at
            .append_value(nanoseconds(position, "recorded_at", &row.recorded_at)?);
        self.actor.append_value(&row.actor);
        self.command_id.append_option(row.command_id.as_deref());
        self.correlation_id
            .append_option(row.correlation_id.as_deref());
        self.causation_id.append_option(row.causation_id.as_deref());
        self.traceparent.append_option(row.traceparent.as_deref());
        self.data.append_value(row.data.get());
        self.prev_hash.append_value(&row.prev_hash);
        self.hash.append_value(&row.hash);
        if let Some(partition) = &mut self.partition {
            let value = row.partition.ok_or_else(|| {
                envelope_error(
                    position,
                    "an event of a partitioned export names no partition",
                )
            })?;
            partition.append_value(value);
        }
        self.rows += 1;
        Ok(())
    }

    /// The rows so far as one batch; the builders start over empty.
    fn take(&mut self, schema: &SchemaRef) -> Result<RecordBatch, ExportError> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.position.finish()),
            Arc::new(self.stream.finish()),
            Arc::new(self.tenant.finish()),
            Arc::new(self.plan_id.finish()),
            Arc::new(self.version.finish()),
            Arc::new(self.event_id.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.schema_version.finish()),
            Arc::new(self.occurred_at.finish()),
            Arc::new(self.recorded_at.finish()),
            Arc::new(self.actor.finish()),
            Arc::new(self.command_id.finish()),
            Arc::new(self.correlation_id.finish()),
            Arc::new(self.causation_id.finish()),
            Arc::new(self.traceparent.finish()),
            Arc::new(self.data.finish()),
            Arc::new(self.prev_hash.finish()),
            Arc::new(self.hash.finish()),
        ];
        if let Some(partition) = &mut self.partition {
            columns.push(Arc::new(partition.finish()));
        }
        self.rows = 0;
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// An RFC 3339 time as nanoseconds since the Unix epoch (what the timestamp columns hold).
fn nanoseconds(position: Position, field: &str, text: &str) -> Result<i64, ExportError> {
    let time: jiff::Timestamp = text
        .parse()
        .map_err(|e| envelope_error(position, format!("{field} {text:?}: {e}")))?;
    i64::try_from(time.as_nanosecond()).map_err(|_| {
        envelope_error(
            position,
            format!(
                "{field} {text} is outside the years 1677 to 2262 that nanosecond timestamps hold"
            ),
        )
    })
}

/// The thread encoding and writing the Parquet file; it answers how the writing ended.
pub(crate) type WriterThread<'scope> =
    std::thread::ScopedJoinHandle<'scope, Result<(), ExportError>>;

/// Starts parquet's Arrow writer over `out` on a thread of `scope`: it encodes and compresses
/// the batches sent to the returned queue (at most two wait in it, so memory stays bounded),
/// and writes the footer once the queue closes.
pub(crate) fn spawn_writer<'scope, W: Write + Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    out: W,
    schema: SchemaRef,
) -> Result<(SyncSender<RecordBatch>, WriterThread<'scope>), ExportError> {
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        // Min/max per column chunk (enough to skip row groups by position or time);
        // per-page statistics of long strings would cost more than they save.
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_created_by(format!("planledger {}", env!("CARGO_PKG_VERSION")));
    for column in DISTINCT_COLUMNS {
        properties = properties.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    let mut writer = ArrowWriter::try_new(
        BufWriter::with_capacity(1 << 20, out),
        schema,
        Some(properties.build()),
    )?;
    let (batches, queue) = std::sync::mpsc::sync_channel::<RecordBatch>(2);
    let encoder = std::thread::Builder::new()
        .name("planledger-export-parquet".into())
        .spawn_scoped(scope, move || {
            for batch in queue {
                writer.write(&batch)?;
            }
            writer.finish()?;
            writer.inner_mut().flush()?;
            Ok(())
        })?;
    Ok((batches, encoder))
}

/// Builds Arrow batches from stored envelopes and queues them for the writer thread.
pub(crate) struct ParquetSink {
    batches: Option<SyncSender<RecordBatch>>,
    columns: Columns,
    schema: SchemaRef,
}

impl ParquetSink {
    pub(crate) fn new(batches: SyncSender<RecordBatch>, schema: SchemaRef) -> Self {
        let partitioned = schema.field_with_name("partition").is_ok();
        Self {
            batches: Some(batches),
            columns: Columns::new(partitioned),
            schema,
        }
    }

    fn send_batch(&mut self) -> Result<(), ExportError> {
        if self.columns.rows > 0 {
            let batch = self.columns.take(&self.schema)?;
            self.batches
                .as_ref()
                .ok_or(ExportError::EncoderStopped)?
                .send(batch)
                .map_err(|_| ExportError::EncoderStopped)?;
        }
        Ok(())
    }
}

impl Sink for ParquetSink {
    fn write(&mut self, position: Position, stored: &[u8]) -> Result<(), ExportError> {
        let row: Row<'_> =
            serde_json::from_slice(stored).map_err(|e| envelope_error(position, e))?;
        self.columns.push(position, &row)?;
        if self.columns.rows >= BATCH_ROWS {
            self.send_batch()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ExportError> {
        self.send_batch()?;
        // Closing the queue lets the writer thread write the footer.
        self.batches = None;
        Ok(())
    }
}
