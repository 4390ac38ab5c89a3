//! Parquet: one typed row per event, zstd-compressed, in row groups of [`ROW_GROUP_ROWS`].

use std::sync::Arc;

use arrow_array::builder::{
    PrimitiveBuilder, StringBuilder, TimestampNanosecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::types::ArrowPrimitiveType;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use planledger_store::Position;

use crate::envelope::{self, Fields};
use crate::output::{BlockWriter, Destination};
use crate::proof::{BatchProofs, ProofColumns, ProofRow};
use crate::row_groups::{self, ROW_GROUP_ROWS, RowGroups};
use crate::{ExportError, WriterThread, envelope_error, tenant_and_plan};

/// Rows per Arrow batch an encoder builds (the builders' memory).
pub(crate) const BATCH_ROWS: usize = 8 * 1024;

/// Columns whose values are (nearly) all distinct, or too many to fit one dictionary page:
/// dictionary encoding would only cost time (hashing each value, then falling back to plain).
const DISTINCT_COLUMNS: [&str; 15] = [
    "position",
    "version",
    "event_id",
    "occurred_at",
    "recorded_at",
    "command_id",
    "correlation_id",
    "traceparent",
    "data",
    "prev_hash",
    "hash",
    "envelope",
    "leaf_index",
    "leaf_hash",
    "proof_hashes.list.item",
];

/// Text columns of (nearly) distinct values, written with their lengths apart from their bytes
/// (`DELTA_LENGTH_BYTE_ARRAY`) instead of each value after its 4-byte length (`PLAIN`).
///
/// In random hex the lengths are the only repeats zstd finds, and every repeat found restarts
/// its search at every byte: with the lengths apart, it finds none in the hashes and skips
/// ahead over them as over any incompressible run, then compresses the hex by its letters alone
/// (measured: a third of the encoders' zstd time, and a file 4% smaller).
const LENGTHS_APART_COLUMNS: [&str; 8] = [
    "event_id",
    "command_id",
    "correlation_id",
    "traceparent",
    "data",
    "prev_hash",
    "hash",
    "envelope",
];

/// Number columns whose values run in order or close to it, written as differences from
/// value to value (`DELTA_BINARY_PACKED`): a position or a time is then a few bits instead of
/// eight bytes zstd has to search for repeats.
const ORDERED_NUMBER_COLUMNS: [&str; 5] = [
    "position",
    "version",
    "occurred_at",
    "recorded_at",
    "leaf_index",
];

/// Columns no reader selects by range (a JSON payload, random hex, names and ids that every
/// row group spans): min/max would only cost two comparisons per value. Positions, versions,
/// times, the time-ordered event ids and the stream, tenant and plan keep theirs.
const UNORDERED_COLUMNS: [&str; 12] = [
    "type",
    "actor",
    "command_id",
    "correlation_id",
    "causation_id",
    "traceparent",
    "data",
    "prev_hash",
    "hash",
    "envelope",
    "leaf_hash",
    "proof_hashes.list.item",
];

/// The Arrow schema of an export: the envelope's fields in its order, with the stream also
/// split into `tenant` and `plan_id`, and both times as UTC timestamps in nanoseconds.
pub fn schema() -> SchemaRef {
    schema_with(false, false)
}

/// The Arrow schema of an export of a cluster's partitions: [`schema`] and a last column
/// `partition`.
pub fn partitioned_schema() -> SchemaRef {
    schema_with(true, false)
}

/// The Arrow schema of an export with proofs: [`schema`] and the proof columns (`envelope`,
/// `leaf_index`, `proof_tree_size`, `leaf_hash`, `proof_hashes`).
pub fn proved_schema() -> SchemaRef {
    schema_with(false, true)
}

fn schema_with(partitioned: bool, proved: bool) -> SchemaRef {
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
    if proved {
        fields.extend(crate::proof::parquet_fields());
    }
    Arc::new(Schema::new(fields))
}

/// One builder per column, in schema order: an encoder's, reused batch after batch.
pub(crate) struct Columns {
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
    /// Only in an export with proofs.
    proof: Option<ProofColumns>,
    rows: usize,
}

impl Columns {
    /// The builders of `schema`'s columns.
    pub(crate) fn of(schema: &SchemaRef) -> Self {
        let mut columns = Self::new(schema.field_with_name("partition").is_ok());
        if schema.field_with_name("proof_hashes").is_ok() {
            columns.proof = Some(ProofColumns::new());
        }
        columns
    }

    pub(crate) fn new(partitioned: bool) -> Self {
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
            proof: None,
            rows: 0,
        }
    }

    fn push(&mut self, position: Position, row: &Fields<'_>) -> Result<(), ExportError> {
        let (tenant, plan_id) = tenant_and_plan(&row.stream);
        self.position.append_value(row.position);
        self.stream.append_value(&row.stream);
        self.tenant.append_value(tenant);
        self.plan_id.append_option(plan_id);
        self.version.append_value(row.version);
        self.event_id.append_value(&row.event_id);
        self.event_type.append_value(&row.event_type);
        self.schema_version.append_value(row.schema_version);
        self.occurred_at.append_value(row.occurred_at);
        self.recorded_at.append_value(row.recorded_at);
        self.actor.append_value(&row.actor);
        self.command_id.append_option(row.command_id.as_deref());
        self.correlation_id
            .append_option(row.correlation_id.as_deref());
        self.causation_id.append_option(row.causation_id.as_deref());
        self.traceparent.append_option(row.traceparent.as_deref());
        self.data.append_value(row.data);
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

    /// The batch of `envelopes`, each decoded once.
    pub(crate) fn batch_of(
        &mut self,
        envelopes: &Envelopes,
        schema: &SchemaRef,
    ) -> Result<RecordBatch, ExportError> {
        for (n, (position, stored)) in envelopes.iter().enumerate() {
            let row = envelope::decode(position, stored)?;
            self.push(position, &row)?;
            if let Some(proof) = &mut self.proof {
                proof.push(position, stored, &envelopes.proofs.get(n))?;
            }
        }
        assert_eq!(self.rows, envelopes.len(), "one row per envelope");
        self.take(schema)
    }

    /// The rows so far as one batch; the builders start over empty.
    fn take(&mut self, schema: &SchemaRef) -> Result<RecordBatch, ExportError> {
        let mut columns: Vec<ArrayRef> = vec![
            finish_number(&mut self.position),
            finish_text(&mut self.stream),
            finish_text(&mut self.tenant),
            finish_text(&mut self.plan_id),
            finish_number(&mut self.version),
            finish_text(&mut self.event_id),
            finish_text(&mut self.event_type),
            finish_number(&mut self.schema_version),
            finish_number(&mut self.occurred_at),
            finish_number(&mut self.recorded_at),
            finish_text(&mut self.actor),
            finish_text(&mut self.command_id),
            finish_text(&mut self.correlation_id),
            finish_text(&mut self.causation_id),
            finish_text(&mut self.traceparent),
            finish_text(&mut self.data),
            finish_text(&mut self.prev_hash),
            finish_text(&mut self.hash),
        ];
        if let Some(partition) = &mut self.partition {
            columns.push(finish_number(partition));
        }
        if let Some(proof) = &mut self.proof {
            columns.extend(proof.finish());
        }
        self.rows = 0;
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// The text column `builder` built, as an array; the builder is left empty with room for as
/// much again, so the next batch's values go in without its buffers growing (a growth copies
/// what is in, and a finished builder starts from nothing).
pub(crate) fn finish_text(builder: &mut StringBuilder) -> ArrayRef {
    let array = builder.finish();
    let bytes = array.value_data().len();
    *builder = StringBuilder::with_capacity(BATCH_ROWS, bytes + bytes / 8);
    Arc::new(array)
}

/// The number column `builder` built, as an array; the builder is left empty with room for a
/// batch (see [`finish_text`]).
pub(crate) fn finish_number<T: ArrowPrimitiveType>(builder: &mut PrimitiveBuilder<T>) -> ArrayRef {
    let array = builder.finish();
    *builder =
        PrimitiveBuilder::with_capacity(BATCH_ROWS).with_data_type(array.data_type().clone());
    Arc::new(array)
}

/// How the file is written: zstd, dictionaries only where values repeat, min/max per chunk.
fn properties() -> WriterProperties {
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        // Min/max per column chunk (enough to skip row groups by position or time);
        // per-page statistics of long strings would cost more than they save.
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_created_by(format!("planledger {}", env!("CARGO_PKG_VERSION")));
    for column in DISTINCT_COLUMNS {
        properties = properties.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    for column in UNORDERED_COLUMNS {
        properties = properties
            .set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
    }
    for column in LENGTHS_APART_COLUMNS {
        properties = properties
            .set_column_encoding(ColumnPath::from(column), Encoding::DELTA_LENGTH_BYTE_ARRAY);
    }
    for column in ORDERED_NUMBER_COLUMNS {
        properties =
            properties.set_column_encoding(ColumnPath::from(column), Encoding::DELTA_BINARY_PACKED);
    }
    properties.build()
}

/// Starts the threads that decode, encode and write the file over `out` (see [`row_groups`])
/// and returns the sink that feeds them.
pub(crate) fn spawn_writer<'scope, 'out: 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    out: Destination<'out>,
    schema: SchemaRef,
) -> Result<(RowGroups, WriterThread<'scope>), ExportError> {
    let out = BlockWriter::new(out, 1 << 20);
    row_groups::spawn(scope, out, schema, properties())
}

/// Stored envelopes gathered for one batch: their bytes end to end, and where each ends.
#[derive(Default)]
pub(crate) struct Envelopes {
    bytes: Vec<u8>,
    /// Each envelope's position and the end of its bytes.
    ends: Vec<(Position, usize)>,
    /// Each envelope's proof, in an export with proofs.
    proofs: BatchProofs,
}

impl Envelopes {
    /// An empty batch with room for `batch`'s envelopes and a margin, so that it does not grow
    /// by doubling.
    pub(crate) fn like(batch: &Envelopes) -> Self {
        Self {
            // A batch's size varies a little: with room for a quarter more, the next does not
            // grow (each growth is a copy, into memory fresh from the kernel).
            bytes: Vec::with_capacity(batch.bytes.len() + batch.bytes.len() / 4),
            ends: Vec::with_capacity(BATCH_ROWS),
            proofs: BatchProofs::default(),
        }
    }

    pub(crate) fn push(&mut self, position: Position, stored: &[u8]) {
        self.bytes.extend_from_slice(stored);
        self.ends.push((position, self.bytes.len()));
    }

    /// Adds the proof of the envelope pushed next.
    pub(crate) fn push_proof(&mut self, proof: &ProofRow<'_>) {
        debug_assert_eq!(
            self.proofs.len(),
            self.ends.len(),
            "every envelope of a batch with proofs has one"
        );
        self.proofs.push(proof);
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Empties it, keeping its memory for the next batch.
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.proofs.clear();
    }

    fn iter(&self) -> impl Iterator<Item = (Position, &[u8])> {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|&(_, end)| end));
        self.ends
            .iter()
            .zip(starts)
            .map(|(&(position, end), start)| (position, &self.bytes[start..end]))
    }
}
