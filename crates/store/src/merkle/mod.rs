//! The Merkle tree over the log's positions (RFC 6962 / RFC 9162 hashing): leaf `i` is the
//! event at position `i + 1`, hashed as `SHA-256(0x00 || stored envelope bytes)` (the bytes
//! exactly as the `log` column family holds them), and an inner node as
//! `SHA-256(0x01 || left || right)`.
//!
//! Files by job: [`proof`] (the RFC 9162 algorithms over any source of perfect-subtree hashes:
//! roots, inclusion and consistency proofs, and their verification, which needs no log),
//! [`frontier`] (the right edge the writer keeps in memory to add leaves), [`stored`] (the
//! `merkle` column family: reads through a [`crate::LogView`], the build of a missing tree
//! when a log is opened, and the check `verify` runs), [`sequential`] (the proofs of many
//! positions in one tree size, in ascending order, each node read once: an export's).
//!
//! Stored are the hashes of *perfect* subtrees only, keyed by `(level u8, index u64 BE)`: the
//! subtree of level `L` and index `i` covers leaves `i * 2^L .. (i + 1) * 2^L` (level 0 holds
//! the leaf hashes). They never change once written. The root of any tree size, and every
//! non-perfect subtree a proof needs, is computed from O(log n) of them.

pub(crate) mod frontier;
pub mod proof;
pub mod sequential;
pub mod stored;

use sha2::{Digest, Sha256};

/// A SHA-256 hash in the tree.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of no bytes (RFC 9162 2.1.1).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The hash of a leaf: `SHA-256(0x00 || entry)`, `entry` being the stored envelope bytes.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(entry);
    hasher.finalize().into()
}

/// The hash of an inner node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The largest power of two strictly below `n` (`n` > 1): where RFC 9162 splits a tree of `n`
/// leaves.
pub(crate) fn split_point(n: u64) -> u64 {
    debug_assert!(n > 1, "only a tree of two or more leaves is split");
    1 << (63 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_point_is_the_largest_power_of_two_below() {
        for (n, k) in [
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 4),
            (8, 4),
            (9, 8),
            (1 << 40, 1 << 39),
        ] {
            assert_eq!(split_point(n), k, "split of {n}");
        }
    }

    #[test]
    fn empty_root_is_the_hash_of_nothing() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
