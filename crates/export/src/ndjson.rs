//! NDJSON: one envelope per line, written by a thread of its own while the scan reads on.

use std::sync::mpsc::{Receiver, SyncSender};

use planledger_store::Position;

use crate::output::{Block, Destination};
use crate::{ExportError, Sink, WriterThread};

/// Bytes of lines gathered before they go to the writer thread in one write: whole blocks of
/// direct I/O ([`crate::output::BLOCK`]).
const BUFFER_BYTES: usize = 4 << 20;

/// Gathers each envelope's stored bytes and a newline into large blocks that a writer thread
/// writes out. The log stores an envelope as its serde JSON (the store's tests hold it to that),
/// which is what `GET /v1/events` sends, so a line is the envelope exactly as the API renders
/// it, without decoding and rendering it again.
///
/// The lines run on from block to block, so every block sent is full but the last, and the
/// file goes out in whole blocks of direct I/O (see [`crate::output`]). A few blocks at most
/// exist (one filling, one queued, one being written, two waiting for reuse), so memory stays
/// bounded and the scan waits when the output is slower than the log.
pub(crate) struct NdjsonSink {
    buffer: Block,
    /// Full blocks to the writer; `None` once finished.
    full: Option<SyncSender<Block>>,
    /// Written blocks back from the writer, for reuse.
    empty: Receiver<Block>,
    /// The line of an event with its proof, made here and reused for the next.
    line: Vec<u8>,
}

/// Starts the thread of `scope` that writes the blocks sent to the returned sink to `out`,
/// in order, and finishes `out` once the sink is finished: it answers the bytes written.
pub(crate) fn spawn_writer<'scope, 'out: 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    mut out: Destination<'out>,
) -> Result<(NdjsonSink, WriterThread<'scope>), ExportError> {
    let (full, queue) = std::sync::mpsc::sync_channel::<Block>(1);
    let (recycle, empty) = std::sync::mpsc::sync_channel::<Block>(2);
    let writer = std::thread::Builder::new()
        .name("planledger-export-ndjson".into())
        .spawn_scoped(scope, move || {
            for mut block in queue {
                out.write(&block)?;
                block.clear();
                // The sink may be gone already (its last block): nothing to reuse then.
                let _ = recycle.try_send(block);
            }
            Ok(out.finish()?)
        })?;
    let sink = NdjsonSink {
        buffer: Block::with_capacity(BUFFER_BYTES),
        full: Some(full),
        empty,
        line: Vec::new(),
    };
    Ok((sink, writer))
}

impl NdjsonSink {
    /// Appends `bytes`, sending each block that fills on to the writer.
    fn put(&mut self, mut bytes: &[u8]) -> Result<(), ExportError> {
        loop {
            bytes = &bytes[self.buffer.fill(bytes)..];
            if self.buffer.is_full() {
                self.send()?;
            }
            if bytes.is_empty() {
                return Ok(());
            }
        }
    }

    /// Hands the gathered lines to the writer and takes an empty block to go on with.
    fn send(&mut self) -> Result<(), ExportError> {
        let next = self
            .empty
            .try_recv()
            .unwrap_or_else(|_| Block::with_capacity(BUFFER_BYTES));
        debug_assert!(next.is_empty(), "a recycled block comes back empty");
        let full = std::mem::replace(&mut self.buffer, next);
        self.full
            .as_ref()
            .ok_or(ExportError::EncoderStopped)?
            .send(full)
            .map_err(|_| ExportError::EncoderStopped)
    }
}

impl Sink for NdjsonSink {
    fn write(&mut self, _position: Position, stored: &[u8]) -> Result<(), ExportError> {
        self.put(stored)?;
        self.put(b"\n")
    }

    fn write_proved(
        &mut self,
        position: Position,
        stored: &[u8],
        proof: &crate::proof::ProofRow<'_>,
    ) -> Result<(), ExportError> {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        crate::proof::ndjson_line(&mut line, stored, proof);
        let written = self.write(position, &line);
        self.line = line;
        written
    }

    fn finish(&mut self) -> Result<(), ExportError> {
        if !self.buffer.is_empty() {
            self.send()?;
        }
        // Closing the queue lets the writer finish and end.
        self.full = None;
        Ok(())
    }
}
