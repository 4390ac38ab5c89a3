//! Exports with proofs: every row carries its event's RFC 9162 inclusion proof in one tree
//! size for the whole file (the export's last position), with the event's stored bytes, so a
//! row checks alone against a signed checkpoint of that size.
//!
//! - NDJSON: one object per line, `{"event":<the stored envelope, byte for byte>,"proof":{...}}`,
//!   the proof as `GET /v1/audit/proof/inclusion` serves it (`origin`, `position`,
//!   `leaf_index`, `tree_size`, `inclusion_path` in base64) and the tree's `leaf_hash` of the
//!   event.
//! - Parquet: the columns of an export and `envelope` (the stored bytes, UTF-8), `leaf_index`,
//!   `proof_tree_size`, `leaf_hash` (32 bytes) and `proof_hashes` (a list of 32-byte hashes,
//!   the audit path from the leaf's sibling up).
//!
//! The proofs are read with [`SequentialProofs`]: each tree node once, in key order, not a
//! `MultiGet` per row. The leaf hash is the tree's own (the stored node): a verifier computes
//! the leaf from the bytes, and when the proof fails, a leaf that differs from it says the
//! event's bytes changed, a leaf equal to it says the path did.
//!
//! [`read_proved`] reads such a file back, row by row, for the offline check.

use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::path::Path;
use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_array::builder::{FixedSizeBinaryBuilder, ListBuilder, StringBuilder, UInt64Builder};
use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use arrow_schema::{DataType, Field};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use planledger_store::merkle::Hash;
use planledger_store::merkle::sequential::SequentialProofs;
use planledger_store::{LogView, Position};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::parquet_file::{BATCH_ROWS, finish_number, finish_text};
use crate::{ExportError, ExportOptions, ExportReport, Format, envelope_error};

/// What an export with proofs wrote, and the tree its proofs are in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvedExport {
    /// What was written.
    pub report: ExportReport,
    /// The tree size of every row's proof: the export's last position.
    pub tree_size: u64,
    /// The root of that tree (the checkpoint to publish with the file signs it).
    pub root: Hash,
}

/// One row's proof, as a sink writes it.
pub(crate) struct ProofRow<'a> {
    /// The log's checkpoint origin (`planledger/<log id>`).
    pub(crate) origin: &'a str,
    /// The event's leaf index (its position - 1).
    pub(crate) leaf_index: u64,
    /// The tree size of the proof.
    pub(crate) tree_size: u64,
    /// The tree's leaf hash of the event.
    pub(crate) leaf_hash: Hash,
    /// The audit path, from the leaf's sibling up.
    pub(crate) path: &'a [Hash],
}

/// Writes the events of `view` selected by `options` to `out` as [`crate::export`] does, each
/// row with its inclusion proof in the tree of the export's last position (the end of the
/// range, or of the log as the view shows it); `origin` names the log in NDJSON proofs.
pub fn export_with_proofs(
    view: &LogView<'_>,
    options: &ExportOptions,
    origin: &str,
    out: crate::Output<'_>,
    progress: impl FnMut(Position),
) -> Result<ProvedExport, ExportError> {
    let to = crate::end_of_range(view, options)?;
    let proofs = view.sequential_proofs(to.get())?;
    let root = proofs.root()?;
    let schema = crate::parquet_file::proved_schema();
    let mut path = Vec::with_capacity(64);
    let report = crate::write_with(options.format, schema, out, |sink| {
        crate::scan(
            view,
            options,
            to,
            sink,
            progress,
            |sink, position, stored| write_row(&proofs, origin, &mut path, sink, position, stored),
        )
    })?;
    Ok(ProvedExport {
        report,
        tree_size: proofs.tree_size(),
        root,
    })
}

/// Writes one event with its proof to `sink`.
fn write_row(
    proofs: &SequentialProofs<'_>,
    origin: &str,
    path: &mut Vec<Hash>,
    sink: &mut dyn crate::Sink,
    position: Position,
    stored: &[u8],
) -> Result<(), ExportError> {
    let leaf_hash = proofs.leaf(position)?;
    proofs.path_into(position, path)?;
    sink.write_proved(
        position,
        stored,
        &ProofRow {
            origin,
            leaf_index: position.get() - 1,
            tree_size: proofs.tree_size(),
            leaf_hash,
            path,
        },
    )
}

/// Appends the NDJSON line of an event and its proof (without the newline) to `line`: the
/// stored bytes are embedded as they are, so the line's `event` is the stored envelope.
pub(crate) fn ndjson_line(line: &mut Vec<u8>, stored: &[u8], proof: &ProofRow<'_>) {
    line.extend_from_slice(b"{\"event\":");
    line.extend_from_slice(stored);
    line.extend_from_slice(b",\"proof\":{\"origin\":");
    serde_json::to_writer(&mut *line, proof.origin).expect("a string renders into memory");
    let _ = write!(
        line,
        ",\"position\":{},\"leaf_index\":{},\"tree_size\":{},\"leaf_hash\":",
        proof.leaf_index + 1,
        proof.leaf_index,
        proof.tree_size,
    );
    push_base64(line, &proof.leaf_hash);
    line.extend_from_slice(b",\"inclusion_path\":[");
    for (n, hash) in proof.path.iter().enumerate() {
        if n > 0 {
            line.push(b',');
        }
        push_base64(line, hash);
    }
    line.extend_from_slice(b"]}}");
}

/// Appends a hash as a JSON string of its base64 (standard alphabet, padded, as proofs are
/// served), encoded in place.
fn push_base64(line: &mut Vec<u8>, hash: &Hash) {
    const ENCODED: usize = 44;
    line.push(b'"');
    let start = line.len();
    line.resize(start + ENCODED, 0);
    let written = STANDARD
        .encode_slice(hash, &mut line[start..])
        .expect("32 bytes encode to 44 base64 characters");
    debug_assert_eq!(written, ENCODED);
    line.push(b'"');
}

/// The columns a Parquet export with proofs adds after the export's own.
pub(crate) fn parquet_fields() -> Vec<Field> {
    vec![
        Field::new("envelope", DataType::Utf8, false),
        Field::new("leaf_index", DataType::UInt64, false),
        Field::new("proof_tree_size", DataType::UInt64, false),
        Field::new("leaf_hash", DataType::FixedSizeBinary(32), false),
        Field::new("proof_hashes", DataType::List(path_item()), false),
    ]
}

/// The element of `proof_hashes`.
fn path_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::FixedSizeBinary(32), false))
}

/// The builders of the proof columns: an encoder's, reused batch after batch.
pub(crate) struct ProofColumns {
    envelope: StringBuilder,
    leaf_index: UInt64Builder,
    tree_size: UInt64Builder,
    leaf_hash: FixedSizeBinaryBuilder,
    path: ListBuilder<FixedSizeBinaryBuilder>,
}

impl ProofColumns {
    pub(crate) fn new() -> Self {
        Self {
            envelope: StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 512),
            leaf_index: UInt64Builder::with_capacity(BATCH_ROWS),
            tree_size: UInt64Builder::with_capacity(BATCH_ROWS),
            leaf_hash: FixedSizeBinaryBuilder::with_capacity(BATCH_ROWS, 32),
            path: ListBuilder::with_capacity(
                FixedSizeBinaryBuilder::with_capacity(BATCH_ROWS * 24, 32),
                BATCH_ROWS,
            )
            .with_field(path_item()),
        }
    }

    /// Adds the row of the event stored at `position` with its proof.
    pub(crate) fn push(
        &mut self,
        position: Position,
        stored: &[u8],
        proof: &StoredProof<'_>,
    ) -> Result<(), ExportError> {
        let text = std::str::from_utf8(stored).map_err(|e| envelope_error(position, e))?;
        self.envelope.append_value(text);
        self.leaf_index.append_value(position.get() - 1);
        self.tree_size.append_value(proof.tree_size);
        self.leaf_hash
            .append_value(proof.leaf_hash)
            .map_err(ExportError::Arrow)?;
        for hash in proof.path {
            self.path
                .values()
                .append_value(hash)
                .map_err(ExportError::Arrow)?;
        }
        self.path.append(true);
        Ok(())
    }

    /// The columns so far, in field order; the builders start over empty.
    pub(crate) fn finish(&mut self) -> [ArrayRef; 5] {
        [
            finish_text(&mut self.envelope),
            finish_number(&mut self.leaf_index),
            finish_number(&mut self.tree_size),
            Arc::new(self.leaf_hash.finish()),
            Arc::new(self.path.finish()),
        ]
    }
}

/// One row's proof as a Parquet batch carries it.
pub(crate) struct StoredProof<'a> {
    pub(crate) tree_size: u64,
    pub(crate) leaf_hash: &'a Hash,
    pub(crate) path: &'a [Hash],
}

/// The proofs of the rows of a Parquet batch, beside their envelopes.
#[derive(Default)]
pub(crate) struct BatchProofs {
    /// Each row's tree size, leaf hash and the end of its path in `hashes`.
    rows: Vec<(u64, Hash, usize)>,
    hashes: Vec<Hash>,
}

impl BatchProofs {
    pub(crate) fn push(&mut self, proof: &ProofRow<'_>) {
        self.hashes.extend_from_slice(proof.path);
        self.rows
            .push((proof.tree_size, proof.leaf_hash, self.hashes.len()));
    }

    pub(crate) fn clear(&mut self) {
        self.rows.clear();
        self.hashes.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// The proof of row `n` of the batch.
    pub(crate) fn get(&self, n: usize) -> StoredProof<'_> {
        let start = if n == 0 { 0 } else { self.rows[n - 1].2 };
        let (tree_size, leaf_hash, end) = &self.rows[n];
        StoredProof {
            tree_size: *tree_size,
            leaf_hash,
            path: &self.hashes[start..*end],
        }
    }
}

/// One row of an export with proofs, read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvedRow {
    /// The row's number in the file, from 1 (an NDJSON file's line).
    pub row: u64,
    /// The event's stored bytes.
    pub envelope: Vec<u8>,
    /// The position the row names (NDJSON: the proof's `position`; Parquet: the `position`
    /// column).
    pub position: u64,
    /// The log the proof names (NDJSON only).
    pub origin: Option<String>,
    /// The proof's leaf index.
    pub leaf_index: u64,
    /// The proof's tree size.
    pub tree_size: u64,
    /// The tree's leaf hash of the event, as the export wrote it.
    pub leaf_hash: Hash,
    /// The audit path.
    pub path: Vec<Hash>,
}

/// How far a read of a file with proofs is: rows read, and of how many (Parquet) or bytes
/// read of how many (NDJSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadProgress {
    /// Rows read so far.
    pub rows: u64,
    /// Units done: rows (Parquet) or bytes (NDJSON).
    pub done: u64,
    /// Units in the file.
    pub total: u64,
}

/// Reads an export with proofs (NDJSON or Parquet, told apart by Parquet's magic bytes) and
/// calls `visit` with each row in file order; stops at the first error, `visit`'s own
/// included. Returns the format and the number of rows.
pub fn read_proved<E: From<ExportError>>(
    path: &Path,
    mut visit: impl FnMut(ProvedRow, ReadProgress) -> Result<(), E>,
) -> Result<(Format, u64), E> {
    let mut file = std::fs::File::open(path).map_err(ExportError::Io)?;
    let mut magic = [0u8; 4];
    let is_parquet = file.read_exact(&mut magic).is_ok() && &magic == b"PAR1";
    file.rewind().map_err(ExportError::Io)?;
    if is_parquet {
        let rows = read_parquet(file, &mut visit)?;
        Ok((Format::Parquet, rows))
    } else {
        let rows = read_ndjson(file, &mut visit)?;
        Ok((Format::Ndjson, rows))
    }
}

fn malformed(row: u64, detail: impl ToString) -> ExportError {
    ExportError::MalformedRow {
        row,
        detail: detail.to_string(),
    }
}

/// A line of an NDJSON export with proofs.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    event: &'a RawValue,
    proof: LineProof,
}

#[derive(Deserialize)]
struct LineProof {
    origin: String,
    position: u64,
    leaf_index: u64,
    tree_size: u64,
    leaf_hash: String,
    inclusion_path: Vec<String>,
}

fn decode_hash(row: u64, field: &str, text: &str) -> Result<Hash, ExportError> {
    STANDARD
        .decode(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| malformed(row, format!("{field} {text:?} is not 32 bytes in base64")))
}

fn read_ndjson<E: From<ExportError>>(
    file: std::fs::File,
    visit: &mut impl FnMut(ProvedRow, ReadProgress) -> Result<(), E>,
) -> Result<u64, E> {
    let total = file.metadata().map_err(ExportError::Io)?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::with_capacity(4096);
    let (mut row, mut done) = (0u64, 0u64);
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(ExportError::Io)?;
        if read == 0 {
            return Ok(row);
        }
        done += read as u64;
        row += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let parsed: Line<'_> = serde_json::from_slice(text).map_err(|e| {
            malformed(
                row,
                format!(
                    "not a line of an export with proofs ({{\"event\": ..., \"proof\": ...}}): {e}"
                ),
            )
        })?;
        let proof = parsed.proof;
        let path = proof
            .inclusion_path
            .iter()
            .enumerate()
            .map(|(n, hash)| decode_hash(row, &format!("inclusion_path[{n}]"), hash))
            .collect::<Result<Vec<_>, _>>()?;
        let proved = ProvedRow {
            row,
            envelope: parsed.event.get().as_bytes().to_vec(),
            position: proof.position,
            origin: Some(proof.origin),
            leaf_index: proof.leaf_index,
            tree_size: proof.tree_size,
            leaf_hash: decode_hash(row, "leaf_hash", &proof.leaf_hash)?,
            path,
        };
        visit(
            proved,
            ReadProgress {
                rows: row,
                done,
                total,
            },
        )?;
    }
}

/// The columns [`read_parquet`] reads, in this order.
const PARQUET_COLUMNS: [&str; 6] = [
    "position",
    "envelope",
    "leaf_index",
    "proof_tree_size",
    "leaf_hash",
    "proof_hashes",
];

fn read_parquet<E: From<ExportError>>(
    file: std::fs::File,
    visit: &mut impl FnMut(ProvedRow, ReadProgress) -> Result<(), E>,
) -> Result<u64, E> {
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(ExportError::Parquet)?;
    let total = builder.metadata().file_metadata().num_rows().max(0) as u64;
    let schema = builder.schema().clone();
    let mut roots = Vec::with_capacity(PARQUET_COLUMNS.len());
    for name in PARQUET_COLUMNS {
        let (index, _) = schema.column_with_name(name).ok_or_else(|| {
            malformed(
                0,
                format!(
                    "the Parquet file has no column {name}: it is not an export with proofs (planledger export --proof)"
                ),
            )
        })?;
        roots.push(index);
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(ExportError::Parquet)?;
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.map_err(ExportError::Arrow)?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .expect("the projection holds the column")
        };
        let wrong = |name: &str| {
            malformed(
                row + 1,
                format!("the column {name} is not of the type an export with proofs writes"),
            )
        };
        let position = column("position")
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| wrong("position"))?;
        let envelope = column("envelope")
            .as_string_opt::<i32>()
            .ok_or_else(|| wrong("envelope"))?;
        let leaf_index = column("leaf_index")
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| wrong("leaf_index"))?;
        let tree_size = column("proof_tree_size")
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| wrong("proof_tree_size"))?;
        let leaf_hash = column("leaf_hash")
            .as_fixed_size_binary_opt()
            .filter(|array| array.value_length() == 32)
            .ok_or_else(|| wrong("leaf_hash"))?;
        let paths = column("proof_hashes")
            .as_list_opt::<i32>()
            .ok_or_else(|| wrong("proof_hashes"))?;
        let hashes = paths
            .values()
            .as_fixed_size_binary_opt()
            .filter(|array| array.value_length() == 32)
            .ok_or_else(|| wrong("proof_hashes"))?;
        for n in 0..batch.num_rows() {
            row += 1;
            let offsets = paths.value_offsets();
            let (start, end) = (offsets[n] as usize, offsets[n + 1] as usize);
            let path = (start..end)
                .map(|at| hashes.value(at).try_into().expect("32 bytes, checked"))
                .collect();
            let proved = ProvedRow {
                row,
                envelope: envelope.value(n).as_bytes().to_vec(),
                position: position.value(n),
                origin: None,
                leaf_index: leaf_index.value(n),
                tree_size: tree_size.value(n),
                leaf_hash: leaf_hash.value(n).try_into().expect("32 bytes, checked"),
                path,
            };
            visit(
                proved,
                ReadProgress {
                    rows: row,
                    done: row,
                    total,
                },
            )?;
        }
    }
    Ok(row)
}
