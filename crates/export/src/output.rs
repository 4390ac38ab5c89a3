//! An export's output: a file, written with direct I/O where the filesystem allows it, or any
//! other writer, written as given.
//!
//! Written through the page cache, a large export would evict the pages the service reads
//! from (its log's tables, on the same machine) and pay the kernel for allocating and filling
//! a fresh cache page per 4 KiB of file. With direct I/O (`O_DIRECT`) the export's own buffers
//! go to the disk. Direct I/O writes whole blocks from block-aligned memory at block-aligned
//! offsets, so the sinks fill [`Block`]s of a fixed size and only the file's last write holds
//! a partial block: its whole blocks are written directly, then direct I/O is turned off for
//! the rest. Where direct I/O is refused (`EINVAL`: tmpfs on older kernels, some network
//! filesystems) or the file is not at a block boundary, the file is written through the page
//! cache instead. The bytes are the same either way.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

/// The alignment and size unit of direct I/O: a multiple of the logical block size of common
/// disks (512 or 4096 bytes) and the page size.
pub(crate) const BLOCK: usize = 4096;

/// Where an export's bytes go.
pub enum Output<'a> {
    /// A file, written from its current offset: with direct I/O where the filesystem allows it
    /// and the offset is a multiple of 4096, else through the page cache. The file's flags are
    /// as given again when the export returns.
    File(&'a mut File),
    /// Any other writer (standard output, memory), written as given.
    Writer(&'a mut (dyn Write + Send)),
}

/// A buffer of a fixed capacity, a multiple of [`BLOCK`], starting at a [`BLOCK`]-aligned
/// address: what direct I/O writes from.
pub(crate) struct Block {
    start: NonNull<u8>,
    /// Bytes filled, from the start.
    len: usize,
    capacity: usize,
}

// SAFETY: a block owns its memory alone, as a `Vec<u8>` does; nothing else points into it.
unsafe impl Send for Block {}

impl Block {
    /// An empty block of `capacity` bytes, a nonzero multiple of [`BLOCK`].
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let layout = Self::layout(capacity);
        // SAFETY: the layout's size is nonzero (`layout` asserts it).
        let start = unsafe { alloc(layout) };
        let start = NonNull::new(start).unwrap_or_else(|| handle_alloc_error(layout));
        Self {
            start,
            len: 0,
            capacity,
        }
    }

    fn layout(capacity: usize) -> Layout {
        assert!(
            capacity > 0 && capacity.is_multiple_of(BLOCK),
            "a block's capacity is whole blocks"
        );
        Layout::from_size_align(capacity, BLOCK).expect("a block's capacity fits in isize")
    }

    /// The bytes filled so far.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `len` bytes were written by `fill`, and `len <= capacity`.
        unsafe { std::slice::from_raw_parts(self.start.as_ptr(), self.len) }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len == self.capacity
    }

    /// Copies as much of `bytes` as fits after what is filled; answers how many bytes it copied.
    pub(crate) fn fill(&mut self, bytes: &[u8]) -> usize {
        let copied = bytes.len().min(self.capacity - self.len);
        // SAFETY: `len + copied <= capacity`, so the copy stays inside the block's memory, which
        // `bytes` (a shared borrow) cannot overlap while the block is borrowed mutably.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.start.as_ptr().add(self.len),
                copied,
            );
        }
        self.len += copied;
        copied
    }

    /// Empties it, keeping its memory.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: allocated in `with_capacity` with this very layout, and freed only here.
        unsafe { dealloc(self.start.as_ptr(), Self::layout(self.capacity)) }
    }
}

/// The writing end of an [`Output`], on the thread that writes it: takes blocks, every one but
/// the last full.
pub(crate) struct Destination<'a> {
    target: Target<'a>,
    /// Bytes written so far.
    written: u64,
    /// A partial block was written, so the output has ended.
    ended: bool,
}

enum Target<'a> {
    /// A file; `direct` while direct I/O is on.
    File {
        file: &'a mut File,
        direct: bool,
    },
    Writer(&'a mut (dyn Write + Send)),
}

impl<'a> Destination<'a> {
    /// Opens `output` for writing: a file at a block boundary gets direct I/O if its filesystem
    /// takes it.
    pub(crate) fn new(output: Output<'a>) -> io::Result<Self> {
        let target = match output {
            Output::File(file) => {
                let aligned = file.stream_position()?.is_multiple_of(BLOCK as u64);
                let direct = aligned && set_direct(file, true).is_ok();
                Target::File { file, direct }
            }
            Output::Writer(writer) => Target::Writer(writer),
        };
        Ok(Self {
            target,
            written: 0,
            ended: false,
        })
    }

    /// Writes `block`. Only the output's last block may be partial: its whole blocks go out
    /// directly, the rest through the page cache.
    pub(crate) fn write(&mut self, block: &Block) -> io::Result<()> {
        assert!(
            !self.ended,
            "only an output's last write holds a partial block"
        );
        let bytes = block.as_slice();
        match &mut self.target {
            Target::File { file, direct } => {
                let mut done = 0;
                if *direct {
                    done = write_direct(file, &bytes[..bytes.len() / BLOCK * BLOCK])?;
                    if done < bytes.len() {
                        // A partial block, or direct I/O refused: the page cache takes the rest.
                        set_direct(file, false)?;
                        *direct = false;
                    }
                }
                file.write_all(&bytes[done..])?;
            }
            Target::Writer(writer) => writer.write_all(bytes)?,
        }
        self.written += bytes.len() as u64;
        self.ended = !bytes.len().is_multiple_of(BLOCK);
        Ok(())
    }

    /// Flushes the output and answers the bytes written; a file's flags are as given again.
    pub(crate) fn finish(mut self) -> io::Result<u64> {
        match &mut self.target {
            Target::File { file, direct } => {
                if std::mem::take(direct) {
                    set_direct(file, false)?;
                }
                file.flush()?;
            }
            Target::Writer(writer) => writer.flush()?,
        }
        Ok(self.written)
    }
}

impl Drop for Destination<'_> {
    fn drop(&mut self) {
        // An export that failed leaves the file as it was given too.
        if let Target::File { file, direct: true } = &self.target {
            let _ = set_direct(file, false);
        }
    }
}

/// Writes `bytes` (whole blocks from a block's memory) with direct I/O; answers how many were
/// written before the end or before the filesystem refused direct I/O (`EINVAL`).
fn write_direct(file: &mut File, bytes: &[u8]) -> io::Result<usize> {
    debug_assert!(bytes.len().is_multiple_of(BLOCK));
    debug_assert!((bytes.as_ptr() as usize).is_multiple_of(BLOCK));
    let mut done = 0;
    while done < bytes.len() {
        match file.write(&bytes[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => done += written,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Refused (or a short write left the offset between blocks): no more direct I/O.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Turns direct I/O on or off for `file`.
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL and F_SETFL read and set the status flags of a descriptor `file` keeps
    // open for the duration of the call; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let wanted = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if wanted != flags && unsafe { libc::fcntl(fd, libc::F_SETFL, wanted) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A [`Write`] over a [`Destination`] that gathers the bytes into blocks (what the Parquet
/// writer writes through). `flush` writes nothing: only the last block may be partial, so the
/// bytes gathered go out when a block fills and at [`BlockWriter::finish`].
pub(crate) struct BlockWriter<'a> {
    destination: Destination<'a>,
    block: Block,
}

impl<'a> BlockWriter<'a> {
    pub(crate) fn new(destination: Destination<'a>, capacity: usize) -> Self {
        Self {
            destination,
            block: Block::with_capacity(capacity),
        }
    }

    /// Writes the last block and finishes the destination: the bytes written.
    pub(crate) fn finish(mut self) -> io::Result<u64> {
        if !self.block.is_empty() {
            self.destination.write(&self.block)?;
        }
        self.destination.finish()
    }
}

impl Write for BlockWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let copied = self.block.fill(bytes);
        if self.block.is_full() {
            self.destination.write(&self.block)?;
            self.block.clear();
        }
        Ok(copied)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom, Write};

    use super::{BLOCK, Block, BlockWriter, Destination, Output};

    /// Bytes that differ from block to block, so a misplaced block shows.
    fn pattern(length: usize) -> Vec<u8> {
        (0..length).map(|i| (i % 251) as u8).collect()
    }

    fn written_to(mut file: std::fs::File) -> Vec<u8> {
        let mut read = Vec::new();
        file.seek(SeekFrom::Start(0)).expect("seek");
        file.read_to_end(&mut read).expect("read back");
        read
    }

    #[test]
    fn a_file_holds_whole_blocks_then_the_partial_last_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut file = std::fs::File::create_new(dir.path().join("out")).expect("create");
        let bytes = pattern(5 * BLOCK + 123);
        let mut destination = Destination::new(Output::File(&mut file)).expect("open");
        let mut block = Block::with_capacity(2 * BLOCK);
        for chunk in bytes.chunks(2 * BLOCK) {
            assert_eq!(block.fill(chunk), chunk.len());
            destination.write(&block).expect("write");
            block.clear();
        }
        assert_eq!(destination.finish().expect("finish"), bytes.len() as u64);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .open(dir.path().join("out"))
            .expect("open");
        assert_eq!(written_to(file), bytes);
    }

    #[test]
    fn a_file_not_at_a_block_boundary_is_written_through_the_page_cache() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out");
        let mut file = std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create");
        file.write_all(b"head").expect("write");
        let bytes = pattern(3 * BLOCK + 7);
        let mut writer = BlockWriter::new(
            Destination::new(Output::File(&mut file)).expect("open"),
            BLOCK,
        );
        writer.write_all(&bytes).expect("write");
        assert_eq!(writer.finish().expect("finish"), bytes.len() as u64);
        assert_eq!(written_to(file), [b"head".as_slice(), &bytes].concat());
    }

    #[test]
    fn a_writer_gets_the_bytes_as_given() {
        let mut out = Vec::new();
        let bytes = pattern(2 * BLOCK + 1);
        let mut writer = BlockWriter::new(
            Destination::new(Output::Writer(&mut out)).expect("open"),
            BLOCK,
        );
        for chunk in bytes.chunks(1000) {
            writer.write_all(chunk).expect("write");
        }
        assert_eq!(writer.finish().expect("finish"), bytes.len() as u64);
        assert_eq!(out, bytes);
    }

    #[test]
    #[should_panic(expected = "only an output's last write holds a partial block")]
    fn nothing_is_written_after_a_partial_block() {
        let mut out = Vec::new();
        let mut destination = Destination::new(Output::Writer(&mut out)).expect("open");
        let mut block = Block::with_capacity(BLOCK);
        block.fill(b"partial");
        destination.write(&block).expect("write");
        let _ = destination.write(&block);
    }
}
