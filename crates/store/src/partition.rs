//! Partitions: which of a fixed number of logs a stream belongs to.
//!
//! When plans are spread over several writer nodes, each node owns some partitions and each
//! partition has a log of its own. The mapping must never change for the life of a deployment
//! (a plan's events live in exactly one partition's log), so it is a pure function of the stream
//! id and the partition count, defined byte for byte here and pinned by fixed test vectors:
//!
//! `partition = u64::from_be_bytes(sha256(stream_id)[0..8]) mod count`
//!
//! SHA-256 rather than a faster hash: it is already the log's hash, it is specified the same way
//! in every language a router or analytics job might be written in, and the cost (well under a
//! microsecond for a stream id) is nothing next to an append.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{StoreError, StreamId};

/// Most partitions a deployment may have.
pub const MAX_PARTITIONS: u32 = 4096;

/// How many partitions a deployment has: 1 to [`MAX_PARTITIONS`], fixed when it is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct PartitionCount(u32);

impl PartitionCount {
    /// Validates a partition count.
    pub fn new(count: u32) -> Result<Self, StoreError> {
        if count == 0 || count > MAX_PARTITIONS {
            return Err(StoreError::InvalidPartitionCount {
                count,
                max: MAX_PARTITIONS,
            });
        }
        Ok(Self(count))
    }

    /// The count as a number.
    pub fn get(self) -> u32 {
        self.0
    }

    /// Every partition of the deployment, in order.
    pub fn partitions(self) -> impl Iterator<Item = Partition> {
        (0..self.0).map(Partition)
    }

    /// The partition that owns `stream`.
    pub fn partition_of(self, stream: &StreamId) -> Partition {
        let digest = Sha256::digest(stream.as_str().as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        let index = u64::from_be_bytes(first) % u64::from(self.0);
        Partition(u32::try_from(index).expect("a remainder of a u32 count fits in a u32"))
    }
}

impl TryFrom<u32> for PartitionCount {
    type Error = StoreError;
    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<PartitionCount> for u32 {
    fn from(value: PartitionCount) -> Self {
        value.0
    }
}

/// One partition, `0..count`. Obtained from [`PartitionCount::partition_of`] or
/// [`PartitionCount::partitions`], so it is always in range for the count it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Partition(u32);

impl Partition {
    /// The partition's index.
    pub fn index(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(id: &str) -> StreamId {
        StreamId::new(id).expect("valid stream id")
    }

    fn count(n: u32) -> PartitionCount {
        PartitionCount::new(n).expect("valid count")
    }

    /// Fixed vectors: if one of these changes, plans would move between partitions and their
    /// logs would no longer be found. Computed independently as
    /// `int.from_bytes(hashlib.sha256(id).digest()[:8], "big") % n`.
    #[test]
    fn partition_of_matches_fixed_vectors() {
        let vectors: &[(&str, u32, u32)] = &[
            ("demo/launch-2027", 16, 11),
            ("demo/launch-2027", 3, 1),
            ("acme/q3-plan", 16, 13),
            ("acme/q3-plan", 4096, 205),
            ("t1/p1", 16, 12),
            ("t1/p2", 16, 1),
        ];
        for &(id, n, expected) in vectors {
            assert_eq!(
                count(n).partition_of(&stream(id)).index(),
                expected,
                "{id} over {n} partitions"
            );
        }
    }

    #[test]
    fn one_partition_owns_everything() {
        for id in ["a/b", "demo/launch-2027", "x/y.z-1"] {
            assert_eq!(count(1).partition_of(&stream(id)).index(), 0);
        }
    }

    #[test]
    fn partition_count_outside_its_range_is_refused() {
        assert!(matches!(
            PartitionCount::new(0),
            Err(StoreError::InvalidPartitionCount { count: 0, .. })
        ));
        assert!(PartitionCount::new(MAX_PARTITIONS + 1).is_err());
        assert!(PartitionCount::new(MAX_PARTITIONS).is_ok());
    }

    #[test]
    fn streams_spread_over_all_partitions() {
        let n = count(16);
        let mut seen = [0u32; 16];
        for i in 0..1600 {
            let index = n.partition_of(&stream(&format!("tenant/plan-{i}"))).index();
            seen[index as usize] += 1;
        }
        // 100 expected per partition; a hash that ignored part of its input or clustered would
        // leave some far below (the binomial spread puts each within ~70..130).
        for (index, &hits) in seen.iter().enumerate() {
            assert!(
                (50..=150).contains(&hits),
                "partition {index} got {hits} of 1600"
            );
        }
    }
}
