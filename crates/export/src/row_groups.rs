//! The Parquet file's writing, off the scan's thread: each row group is encoded and compressed
//! whole by one of a few encoder threads (row groups taken in turn), and a writer thread
//! appends the finished groups to the file in order, then writes the footer.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

use crate::{ExportError, WriterThread};

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
    /// The next rows of the group.
    Batch(RecordBatch),
    /// The group is complete: close its column chunks and pass them to the file's writer.
    Close,
}

/// An encoded row group: its index and its column chunks in schema order.
type Encoded = (usize, Vec<ArrowColumnChunk>);

/// The scan's end of the pipeline: cuts the batches it is given into row groups of
/// [`ROW_GROUP_ROWS`] rows and hands each group to the next encoder.
pub(crate) struct RowGroups {
    factory: ArrowRowGroupWriterFactory,
    /// One queue per encoder; empty once finished.
    encoders: Vec<SyncSender<Job>>,
    /// The row group being filled.
    index: usize,
    /// Rows sent of it so far.
    rows: usize,
}

/// Starts the encoders and the file's writer on threads of `scope`, writing to `out` with
/// `properties`: the returned [`RowGroups`] takes the batches, the thread answers how the
/// writing ended (an encoder's error before the writer's own).
pub(crate) fn spawn<'scope, W: Write + Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    out: W,
    schema: SchemaRef,
    properties: WriterProperties,
) -> Result<(RowGroups, WriterThread<'scope>), ExportError> {
    // The Arrow writer sets up the file (schema, properties, the Arrow schema in its
    // metadata); its lower half writes the row groups the encoders make.
    let (file, factory) =
        ArrowWriter::try_new(out, schema.clone(), Some(properties))?.into_serialized_writer()?;
    let encoders = encoder_count();
    let (encoded, finished) = std::sync::mpsc::sync_channel::<Encoded>(encoders);
    let mut queues = Vec::with_capacity(encoders);
    let mut threads = Vec::with_capacity(encoders);
    for n in 0..encoders {
        // Two batches wait at most per encoder, so memory stays bounded.
        let (queue, jobs) = std::sync::mpsc::sync_channel::<Job>(2);
        let (schema, encoded) = (schema.clone(), encoded.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("planledger-export-encode-{n}"))
                .spawn_scoped(scope, move || encode(&jobs, &schema, &encoded))?,
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
        index: 0,
        rows: 0,
    };
    Ok((row_groups, writer))
}

/// Encoders: one per core the machine offers beyond the scan's, two to four.
fn encoder_count() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |cores| cores.get().saturating_sub(1))
        .clamp(2, 4)
}

impl RowGroups {
    /// Queues `batch` for the group being filled; a batch never spans two groups.
    pub(crate) fn send(&mut self, batch: RecordBatch) -> Result<(), ExportError> {
        assert!(
            self.rows + batch.num_rows() <= ROW_GROUP_ROWS,
            "a batch fits in the rest of its row group"
        );
        if self.rows == 0 {
            let writers = self.factory.create_column_writers(self.index)?;
            self.to_encoder(Job::Start {
                index: self.index,
                writers,
            })?;
        }
        self.rows += batch.num_rows();
        self.to_encoder(Job::Batch(batch))?;
        if self.rows == ROW_GROUP_ROWS {
            self.close_group()?;
        }
        Ok(())
    }

    /// Rows the group being filled still takes.
    pub(crate) fn room(&self) -> usize {
        ROW_GROUP_ROWS - self.rows
    }

    /// Closes the last group and the encoders' queues: the writer then writes the footer.
    pub(crate) fn finish(&mut self) -> Result<(), ExportError> {
        if self.rows > 0 {
            self.close_group()?;
        }
        self.encoders.clear();
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

/// An encoder: encodes and compresses the row groups it is given, one at a time, and passes
/// each finished group on.
fn encode(
    jobs: &Receiver<Job>,
    schema: &SchemaRef,
    encoded: &SyncSender<Encoded>,
) -> Result<(), ExportError> {
    let mut group: Option<(usize, Vec<ArrowColumnWriter>)> = None;
    for job in jobs {
        match job {
            Job::Start { index, writers } => {
                assert!(group.is_none(), "a row group starts after the last closed");
                group = Some((index, writers));
            }
            Job::Batch(batch) => {
                let (_, writers) = group
                    .as_mut()
                    .expect("a batch comes after its group's start");
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

/// The file's writer: appends the encoded groups in order as they come, then the footer.
fn write_file<W: Write + Send>(
    mut file: SerializedFileWriter<W>,
    finished: &Receiver<Encoded>,
) -> Result<(), ExportError> {
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
    file.finish()?;
    file.inner_mut().flush()?;
    Ok(())
}
