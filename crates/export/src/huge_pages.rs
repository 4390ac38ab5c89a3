//! Transparent huge pages off while an export runs.
//!
//! The Parquet writer allocates and frees large buffers page after page and row group after
//! row group (its page buffers, each page's compressed copy, the column chunks), which the
//! allocator hands back to the kernel and takes again. With transparent huge pages, each
//! fresh touch of such memory is a 2 MiB page the kernel zeroes first, for a buffer that may
//! use a fraction of it: measured on a 2-core machine, a third of the encoders' CPU was
//! `clear_page_erms` under `do_huge_pmd_anonymous_page`, and none with huge pages off. So an
//! export turns them off for its process while it runs (`PR_SET_THP_DISABLE`, Linux 3.15 and
//! later) and restores the setting it found; where the call is refused, nothing changes.
//! The flag is the process's: exports are run by `planledger export` and the benchmark, one
//! at a time, never inside the service.

/// Huge pages off until dropped, then as they were.
pub(crate) struct HugePagesOff {
    /// Whether they were on (so this guard turned them off).
    were_on: bool,
}

impl HugePagesOff {
    pub(crate) fn new() -> Self {
        // SAFETY: PR_GET_THP_DISABLE and PR_SET_THP_DISABLE read and set a flag of the calling
        // process; no memory is passed.
        let were_on = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) } == 0
            && unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } == 0;
        Self { were_on }
    }
}

impl Drop for HugePagesOff {
    fn drop(&mut self) {
        if self.were_on {
            // SAFETY: as in `new`.
            unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0) };
        }
    }
}
