//! The Parquet file's making, off the scan's thread: the scan gathers the stored envelopes of
//! each row group and hands them to one of a few encoder threads (row groups taken in turn),
//! which decodes each envelope once, builds the columns, encodes and compresses them; a writer
//! thread appends the finished groups to the file in order, then writes the footer.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender};

use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

use planledger_store::Position;

use crate::output::BlockWriter;
use crate::parquet_file::{BATCH_ROWS, Columns, Envelopes};
use crate::{ExportError, Sink, WriterThread};

/// Rows per row group: large enough for column compression and scans to pay off, small enough
/// that a reader can skip by position and each encoder's buffered group stays tens of MiB.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// What the scan hands an encoder.
enum Job {
    /// Row group `index` starts, to be encoded by these column writers.
    Start {
        index: usize,
        writers: Vec<ArrowColumnWriter>,
    },
    /// The next rows of the group, as stored.
    Batch(Envelopes),
    /// The group is complete: close its column chunks and pass them to the file's writer.
    Close,
}

/// An encoded row group: its index and its column chunks in schema order.
type Encoded = (usize, Vec<ArrowColumnChunk>);

/// The scan's end of the pipeline, the Parquet sink: gathers the stored envelopes into batches,
/// cuts them into row groups of [`ROW_GROUP_ROWS`] rows and hands each group to the next
/// encoder.
pub(crate) struct RowGroups {
    factory: ArrowRowGroupWriterFactory,
    /// One queue per encoder; empty once finished.
    encoders: Vec<SyncSender<Job>>,
    /// The batch being gathered.
    pending: Envelopes,
    /// Batches the encoders are done with, for reuse.
    spare: Receiver<Envelopes>,
    /// The row group being filled.
    index: usize,
    /// Rows sent of it so far.
    rows: usize,
}

/// Starts the encoders and the file's writer on threads of `scope`, writing to `out` with
/// `properties`: the returned [`RowGroups`] takes the batches, the thread answers how the
/// writing ended (an encoder's error before the writer's own).
pub(crate) fn spawn<'scope, 'out: 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    out: BlockWriter<'out>,
    schema: SchemaRef,
    properties: WriterProperties,
) -> Result<(RowGroups, WriterThread<'scope>), ExportError> {
    // The Arrow writer sets up the file (schema, properties, the Arrow schema in its
    // metadata); its lower half writes the row groups the encoders make.
    let (file, factory) =
        ArrowWriter::try_new(out, schema.clone(), Some(properties))?.into_serialized_writer()?;
    let encoders = encoder_count();
    let (encoded, finished) = std::sync::mpsc::sync_channel::<Encoded>(encoders);
    // Room for every batch that can be out at once, so none is dropped and made again.
    let in_flight = encoders * (queued_batches(encoders) + 1) + 1;
    let (recycle, spare) = std::sync::mpsc::sync_channel::<Envelopes>(in_flight);
    let mut queues = Vec::with_capacity(encoders);
    let mut threads = Vec::with_capacity(encoders);
    for n in 0..encoders {
        let (queue, jobs) = std::sync::mpsc::sync_channel::<Job>(queued_batches(encoders));
        let (schema, encoded, recycle) = (schema.clone(), encoded.clone(), recycle.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("planledger-export-encode-{n}"))
                .spawn_scoped(scope, move || encode(&jobs, &schema, &encoded, &recycle))?,
        );
        queues.push(queue);
    }
    drop(encoded);
    let writer = std::thread::Builder::new()
        .name("planledger-export-parquet".into())
        .spawn_scoped(scope, move || {
            let written = write_file(file, &finished);
            drop(finished);
            let encoded = threads.into_iter().try_for_each(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            });
            // A stopped encoder leaves the writer short of a group: report the encoder's error.
            encoded.and(written)
        })?;
    let row_groups = RowGroups {
        factory,
        encoders: queues,
        pending: Envelopes::default(),
        spare,
        index: 0,
        rows: 0,
    };
    Ok((row_groups, writer))
}

/// Batches that may wait for each of `encoders` encoders.
///
/// The scan fills the groups in turn, so it reaches the next encoder's group only once the
/// group before is all queued: for `n` encoders to work at once, the scan runs ahead by
/// `(n - 1) / n` of a group, queued. Half a group at most per encoder (8 batches of 8,192
/// stored envelopes, ~40 MiB in the benchmark's log) bounds the memory.
fn queued_batches(encoders: usize) -> usize {
    let group = ROW_GROUP_ROWS / BATCH_ROWS;
    (group * (encoders - 1) / encoders).clamp(2, group / 2)
}

/// Encoders: one per core the machine offers beyond the scan's, two to four.
fn encoder_count() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |cores| cores.get().saturating_sub(1))
        .clamp(2, 4)
}

impl Sink for RowGroups {
    fn write(&mut self, position: Position, stored: &[u8]) -> Result<(), ExportError> {
        self.pending.push(position, stored);
        // A batch never spans two groups.
        if self.pending.len() >= BATCH_ROWS.min(ROW_GROUP_ROWS - self.rows) {
            self.send_batch()?;
        }
        Ok(())
    }

    fn write_proved(
        &mut self,
        position: Position,
        stored: &[u8],
        proof: &crate::proof::ProofRow<'_>,
    ) -> Result<(), ExportError> {
        self.pending.push_proof(proof);
        self.write(position, stored)
    }

    /// Sends the last batch, closes the last group and the encoders' queues: the writer then
    /// writes the footer.
    fn finish(&mut self) -> Result<(), ExportError> {
        self.send_batch()?;
        if self.rows > 0 {
            self.close_group()?;
        }
        self.encoders.clear();
        Ok(())
    }
}

impl RowGroups {
    /// Queues the gathered batch for the group being filled, and closes the group when full.
    fn send_batch(&mut self) -> Result<(), ExportError> {
        let rows = self.pending.len();
        if rows == 0 {
            return Ok(());
        }
        assert!(
            self.rows + rows <= ROW_GROUP_ROWS,
            "a batch fits in the rest of its row group"
        );
        if self.rows == 0 {
            let writers = self.factory.create_column_writers(self.index)?;
            self.to_encoder(Job::Start {
                index: self.index,
                writers,
            })?;
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Envelopes::like(&self.pending));
        debug_assert_eq!(next.len(), 0, "a spare batch comes back empty");
        let batch = std::mem::replace(&mut self.pending, next);
        self.to_encoder(Job::Batch(batch))?;
        self.rows += rows;
        if self.rows == ROW_GROUP_ROWS {
            self.close_group()?;
        }
        Ok(())
    }

    fn close_group(&mut self) -> Result<(), ExportError> {
        self.to_encoder(Job::Close)?;
        self.index += 1;
        self.rows = 0;
        Ok(())
    }

    /// Sends `job` to the encoder of the group being filled.
    fn to_encoder(&self, job: Job) -> Result<(), ExportError> {
        let encoders = self.encoders.len();
        if encoders == 0 {
            return Err(ExportError::EncoderStopped);
        }
        self.encoders[self.index % encoders]
            .send(job)
            .map_err(|_| ExportError::EncoderStopped)
    }
}

/// An encoder: decodes, encodes and compresses the row groups it is given, one at a time, and
/// passes each finished group on.
fn encode(
    jobs: &Receiver<Job>,
    schema: &SchemaRef,
    encoded: &SyncSender<Encoded>,
    recycle: &SyncSender<Envelopes>,
) -> Result<(), ExportError> {
    let mut columns = Columns::of(schema);
    let mut group: Option<(usize, Vec<ArrowColumnWriter>)> = None;
    for job in jobs {
        match job {
            Job::Start { index, writers } => {
                assert!(group.is_none(), "a row group starts after the last closed");
                group = Some((index, writers));
            }
            Job::Batch(mut envelopes) => {
                let (_, writers) = group
                    .as_mut()
                    .expect("a batch comes after its group's start");
                let batch = columns.batch_of(&envelopes, schema)?;
                envelopes.clear();
                // The scan may have enough spares already: then this one goes.
                let _ = recycle.try_send(envelopes);
                let mut writers = writers.iter_mut();
                for (field, column) in schema.fields().iter().zip(batch.columns()) {
                    for leaf in compute_leaves(field, column)? {
                        writers
                            .next()
                            .expect("one column writer per leaf column")
                            .write(&leaf)?;
                    }
                }
            }
            Job::Close => {
                let (index, writers) = group.take().expect("a group closes after its start");
                let chunks = writers
                    .into_iter()
                    .map(ArrowColumnWriter::close)
                    .collect::<Result<Vec<_>, _>>()?;
                encoded
                    .send((index, chunks))
                    .map_err(|_| ExportError::EncoderStopped)?;
            }
        }
    }
    Ok(())
}

/// The file's writer: appends the encoded groups in order as they come, then the footer; it
/// answers the bytes written.
fn write_file(
    mut file: SerializedFileWriter<BlockWriter<'_>>,
    finished: &Receiver<Encoded>,
) -> Result<u64, ExportError> {
    // Groups that came before the one due next (at most one per other encoder).
    let mut early = BTreeMap::new();
    let mut next = 0;
    for (index, chunks) in finished {
        assert!(index >= next, "each row group is encoded once");
        early.insert(index, chunks);
        while let Some(chunks) = early.remove(&next) {
            let mut group = file.next_row_group()?;
            for chunk in chunks {
                chunk.append_to_row_group(&mut group)?;
            }
            group.close()?;
            next += 1;
        }
    }
    if !early.is_empty() {
        // An encoder stopped before finishing its group: no footer over a gap.
        return Err(ExportError::EncoderStopped);
    }
    Ok(file.into_inner()?.finish()?)
}
