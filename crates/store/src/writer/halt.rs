//! Failure handling: the stop switch a failed write or fsync throws, and the free-space
//! reserve that refuses batches before the disk fills.

use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use super::request::Answers;
use crate::StoreError;

/// Why an append is refused once a write or fsync has failed.
pub(crate) const WRITES_STOPPED: &str = "an earlier write or fsync of the event log failed; appends are refused until the service is restarted (check the disk)";

/// Why an append is refused once a write failed for want of space.
const FULL_STOPPED: &str = "a write of the event log failed because its file system is full; free space on it, then restart the service (RocksDB does not resume after a failed write-ahead-log write, and nothing is retried in this process)";

/// Why the write path stopped, once it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteFailure {
    /// Cluster mode: the cache of the partition's log disagrees with the log itself
    /// (`cache_diverged`), or the log lost events this cache has (`stream_behind`). The node
    /// stops serving the partition until an operator acts (docs/operations.md).
    Partition {
        /// `cache_diverged` or `stream_behind`.
        reason: &'static str,
        /// What was found.
        detail: String,
    },
    /// A write found the log's file system full (`ENOSPC`). Nothing more is written until the
    /// service is restarted with space freed.
    StorageFull(String),
    /// Any other failed write or fsync (a failing disk): restart once the disk is sound.
    Io(String),
}

impl WriteFailure {
    /// What the storage layer reported.
    pub fn message(&self) -> &str {
        match self {
            Self::StorageFull(message) | Self::Io(message) => message,
            Self::Partition { detail, .. } => detail,
        }
    }
}

/// Whether a RocksDB error message reports a full file system (`ENOSPC`, which RocksDB maps to
/// its `NoSpace` status, or its own space limit).
fn is_no_space(message: &str) -> bool {
    message.contains("No space left on device") || message.contains("Max allowed space")
}

/// The write path's stop switch, shared by the writer, the syncer and readers: once a write or
/// fsync has failed, nothing more is written in this process, and the first failure says why.
#[derive(Debug, Default)]
pub(crate) struct Halt {
    stopped: AtomicBool,
    why: OnceLock<WriteFailure>,
}

impl Halt {
    /// Whether a write or fsync has failed.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// The first failure, once there is one.
    pub(crate) fn failure(&self) -> Option<WriteFailure> {
        self.why.get().cloned()
    }

    /// Marks the write path failed (once, logging why): the writer refuses every later append.
    pub(super) fn stop(&self, message: &str) {
        let failure = if is_no_space(message) {
            WriteFailure::StorageFull(message.to_string())
        } else {
            WriteFailure::Io(message.to_string())
        };
        self.stop_with(failure);
    }

    /// Marks the write path failed for `failure` (the first one is kept).
    pub(super) fn stop_with(&self, failure: WriteFailure) {
        let message = failure.message().to_string();
        // The reason is set before the flag, so whoever sees the flag finds the reason.
        let _ = self.why.set(failure);
        if !self.stopped.swap(true, Ordering::SeqCst) {
            tracing::error!(error = %message, "event log write path stopped; refusing further appends");
            metrics::counter!("planledger_log_sync_failures_total").increment(1);
        }
    }

    /// The error for an append refused after the failure (nothing of it was written).
    pub(crate) fn refusal(&self) -> StoreError {
        match self.why.get() {
            Some(WriteFailure::StorageFull(_)) => StoreError::StorageFull(FULL_STOPPED.to_string()),
            Some(WriteFailure::Partition { reason, detail }) => StoreError::PartitionHalted {
                reason,
                detail: detail.clone(),
            },
            _ => StoreError::WriteFailed(WRITES_STOPPED.to_string()),
        }
    }

    /// Answers the callers of a batch whose write or fsync failed. An append that was written
    /// (or a repeat answered with events that may be among them) may or may not be in the log
    /// after a restart: its caller learns that the outcome is unknown. A request the batch
    /// refused appended nothing.
    pub(super) fn fail_answers(&self, answers: Answers, message: &str) {
        for (reply, answer) in answers {
            let error = match answer {
                Ok(_) => StoreError::OutcomeUnknown(message.to_string()),
                Err(_) => self.refusal(),
            };
            let _ = reply.send(Err(error));
        }
    }
}

/// Keeps a reserve of free space on the log's file system: while less than `min_free_bytes`
/// is free, every batch is refused before anything of it is written
/// ([`StoreError::StorageFull`]), and appends are taken again as soon as the reserve is back.
/// RocksDB itself never sees a full disk while the reserve lasts, so no restart is needed.
pub(crate) struct SpaceGuard {
    /// The log's directory (any path on its file system).
    pub path: std::ffi::CString,
    /// The reserve.
    pub min_free_bytes: u64,
    /// Free bytes seen by the last check that found less than the reserve; `None` while there
    /// is enough (read by readers, for `/readyz`).
    pub low: Mutex<Option<u64>>,
}

impl SpaceGuard {
    /// Why the batch is refused, if the file system has less than the reserve free; `None` to
    /// write it.
    pub(super) fn check(&self) -> Option<String> {
        self.recheck()
            .map(|free| low_space_message(free, self.min_free_bytes))
    }

    /// Whether the last check found less than the reserve.
    pub(crate) fn is_low(&self) -> bool {
        self.low.lock().map(|low| low.is_some()).unwrap_or(false)
    }

    /// Looks at the file system again; the free bytes if they are less than the reserve.
    pub(crate) fn recheck(&self) -> Option<u64> {
        let free = free_bytes(&self.path)?;
        let low = (free < self.min_free_bytes).then_some(free);
        if let Ok(mut seen) = self.low.lock() {
            if seen.is_none() && low.is_some() {
                tracing::warn!(
                    free_bytes = free,
                    min_free_bytes = self.min_free_bytes,
                    "event log's file system is below its free-space reserve; refusing appends until space is freed"
                );
            } else if seen.is_some() && low.is_none() {
                tracing::info!(
                    free_bytes = free,
                    "event log's file system has its free-space reserve again; taking appends"
                );
            }
            *seen = low;
        }
        low
    }
}

/// Counts appends refused because the log's file system is full.
pub(super) fn count_storage_full(appends: usize) {
    metrics::counter!("planledger_log_storage_full_refusals_total").increment(appends as u64);
}

/// Why appends are refused while the reserve is short.
pub(crate) fn low_space_message(free: u64, min_free_bytes: u64) -> String {
    format!(
        "only {free} bytes are free on the event log's file system, less than its reserve of {min_free_bytes} bytes (log_min_free_bytes); free space there and commands are taken again without a restart"
    )
}

/// Bytes an unprivileged writer may still use on the file system holding `path`, or `None`
/// when it cannot be told (the guard then lets writes through).
fn free_bytes(path: &std::ffi::CStr) -> Option<u64> {
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stats` is a buffer of the size statvfs(3) fills.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stats`.
    let stats = unsafe { stats.assume_init() };
    // Both fields are 32 bits wide on some targets.
    #[allow(clippy::unnecessary_cast)]
    let (blocks, block_size) = (stats.f_bavail as u64, stats.f_frsize as u64);
    Some(blocks.saturating_mul(block_size))
}

/// Another copy of a refusal that answers several appends (a [`StoreError`] is not `Clone`:
/// it may hold a RocksDB error). Anything but the refusals the write path repeats becomes
/// [`StoreError::WriteFailed`] with its message.
pub(super) fn copy_refusal(error: &StoreError) -> StoreError {
    match error {
        StoreError::PartitionMoved => StoreError::PartitionMoved,
        StoreError::PartitionUnavailable(message) => {
            StoreError::PartitionUnavailable(message.clone())
        }
        StoreError::PartitionHalted { reason, detail } => StoreError::PartitionHalted {
            reason,
            detail: detail.clone(),
        },
        StoreError::StorageFull(message) => StoreError::StorageFull(message.clone()),
        StoreError::WriteFailed(message) => StoreError::WriteFailed(message.clone()),
        StoreError::OutcomeUnknown(message) => StoreError::OutcomeUnknown(message.clone()),
        other => StoreError::WriteFailed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_failing_for_want_of_space_stops_the_log_as_storage_full() {
        let halt = Halt::default();
        halt.stop("IO error: No space left on device: While appending to file: 000012.log: No space left on device");
        assert!(halt.is_stopped());
        assert!(matches!(halt.failure(), Some(WriteFailure::StorageFull(_))));
        assert!(
            matches!(halt.refusal(), StoreError::StorageFull(message) if message.contains("restart")),
        );
        // The first failure is the one reported.
        halt.stop("IO error: fsync failed");
        assert!(matches!(halt.failure(), Some(WriteFailure::StorageFull(_))));
    }

    #[test]
    fn any_other_failed_write_stops_the_log_as_a_write_failure() {
        let halt = Halt::default();
        halt.stop("IO error: Input/output error");
        assert!(matches!(halt.failure(), Some(WriteFailure::Io(_))));
        assert!(matches!(halt.refusal(), StoreError::WriteFailed(_)));
    }
}
