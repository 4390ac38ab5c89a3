//! NDJSON: one envelope per line, written by a thread of its own while the scan reads on.

use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender};

use planledger_store::Position;

use crate::{ExportError, Sink, WriterThread};

/// Bytes of lines gathered before they go to the writer thread in one write.
const BUFFER_BYTES: usize = 4 << 20;

/// Gathers each envelope's stored bytes and a newline into large buffers that a writer thread
/// writes out. The log stores an envelope as its serde JSON (the store's tests hold it to that),
/// which is what `GET /v1/events` sends, so a line is the envelope exactly as the API renders
/// it, without decoding and rendering it again.
///
/// A few buffers at most exist (one filling, one queued, one being written, two waiting for
/// reuse), so memory stays bounded and the scan waits when the output is slower than the log.
pub(crate) struct NdjsonSink {
    buffer: Vec<u8>,
    /// Full buffers to the writer; `None` once finished.
    full: Option<SyncSender<Vec<u8>>>,
    /// Written buffers back from the writer, for reuse.
    empty: Receiver<Vec<u8>>,
}

/// Starts the thread of `scope` that writes the buffers sent to the returned sink to `out`,
/// in order, and flushes `out` once the sink is finished.
pub(crate) fn spawn_writer<'scope, W: Write + Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    mut out: W,
) -> Result<(NdjsonSink, WriterThread<'scope>), ExportError> {
    let (full, queue) = std::sync::mpsc::sync_channel::<Vec<u8>>(1);
    let (recycle, empty) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    let writer = std::thread::Builder::new()
        .name("planledger-export-ndjson".into())
        .spawn_scoped(scope, move || {
            for mut buffer in queue {
                out.write_all(&buffer)?;
                buffer.clear();
                // The sink may be gone already (its last buffer): nothing to reuse then.
                let _ = recycle.try_send(buffer);
            }
            out.flush()?;
            Ok(())
        })?;
    let sink = NdjsonSink {
        buffer: Vec::with_capacity(BUFFER_BYTES),
        full: Some(full),
        empty,
    };
    Ok((sink, writer))
}

impl NdjsonSink {
    /// Hands the gathered lines to the writer and takes an empty buffer to go on with.
    fn send(&mut self) -> Result<(), ExportError> {
        let next = self
            .empty
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BUFFER_BYTES));
        debug_assert!(next.is_empty(), "a recycled buffer comes back empty");
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
        if self.buffer.len() + stored.len() >= BUFFER_BYTES && !self.buffer.is_empty() {
            self.send()?;
        }
        self.buffer.extend_from_slice(stored);
        self.buffer.push(b'\n');
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ExportError> {
        if !self.buffer.is_empty() {
            self.send()?;
        }
        // Closing the queue lets the writer flush and end.
        self.full = None;
        Ok(())
    }
}
