//! NDJSON: one envelope per line.

use std::io::{BufWriter, Write};

use planledger_store::Position;

use crate::{ExportError, Sink};

/// Writes each envelope's stored bytes and a newline. The log stores an envelope as its serde
/// JSON (the store's tests hold it to that), which is what `GET /v1/events` sends, so a line
/// is the envelope exactly as the API renders it, without decoding and rendering it again.
pub(crate) struct NdjsonSink<W: Write> {
    out: BufWriter<W>,
}

impl<W: Write> NdjsonSink<W> {
    pub(crate) fn new(out: W) -> Self {
        Self {
            out: BufWriter::with_capacity(1 << 20, out),
        }
    }
}

impl<W: Write> Sink for NdjsonSink<W> {
    fn write(&mut self, _position: Position, stored: &[u8]) -> Result<(), ExportError> {
        self.out.write_all(stored)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ExportError> {
        self.out.flush()?;
        Ok(())
    }
}
