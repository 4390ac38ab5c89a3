//! RFC 9162 2.1: the root of a tree, inclusion proofs (2.1.3) and consistency proofs (2.1.4),
//! computed over a source of perfect-subtree hashes, and their verification (which needs only
//! the proof, the leaf or the two roots: no log).
//!
//! Every range the algorithms recurse into starts at a multiple of the largest power of two
//! not above its size, so a perfect range is one stored node, and a non-perfect one is split
//! into perfect ones. A proof reads O(log n) nodes: while the recursion goes right, the
//! sibling on the left is perfect (one read); the first time it goes left, the sibling on the
//! right is computed from at most log n perfect subtrees, and below that every range is
//! perfect.

use serde::{Deserialize, Serialize};

use super::{Hash, empty_root, leaf_hash, node_hash, split_point};
use crate::StoreError;

/// A source of perfect-subtree hashes: the node of `level` and `index` covers leaves
/// `index * 2^level .. (index + 1) * 2^level`.
pub(crate) trait Nodes {
    /// The hash of a perfect subtree the tree holds.
    fn node(&self, level: u8, index: u64) -> Result<Hash, StoreError>;
}

/// A source that answers every node with zeros and lists the nodes asked for: which nodes the
/// algorithms here read depends only on the sizes and indexes they are given, so a run over a
/// recorder lists the reads a run over the real tree will make.
#[derive(Default)]
pub(crate) struct Recorder(std::cell::RefCell<Vec<(u8, u64)>>);

impl Recorder {
    /// The nodes asked for, sorted by (level, index) as the `merkle` keys sort, without repeats.
    pub(crate) fn into_sorted(self) -> Vec<(u8, u64)> {
        let mut wanted = self.0.into_inner();
        wanted.sort_unstable();
        wanted.dedup();
        wanted
    }
}

impl Nodes for Recorder {
    fn node(&self, level: u8, index: u64) -> Result<Hash, StoreError> {
        self.0.borrow_mut().push((level, index));
        Ok([0; 32])
    }
}

/// Nodes read ahead of a run (sorted by (level, index)), as a source for it.
pub(crate) struct Fetched {
    wanted: Vec<(u8, u64)>,
    hashes: Vec<Hash>,
}

impl Fetched {
    /// The hashes of `wanted` (sorted, as [`Recorder::into_sorted`] gives them), in its order.
    pub(crate) fn new(wanted: Vec<(u8, u64)>, hashes: Vec<Hash>) -> Self {
        assert_eq!(wanted.len(), hashes.len(), "one hash per node read");
        Self { wanted, hashes }
    }
}

impl Nodes for Fetched {
    fn node(&self, level: u8, index: u64) -> Result<Hash, StoreError> {
        let at = self
            .wanted
            .binary_search(&(level, index))
            .expect("a run reads the nodes its recorded run read");
        Ok(self.hashes[at])
    }
}

/// An inclusion proof: the audit path of leaf `leaf_index` in the tree of `tree_size` leaves
/// (RFC 9162 2.1.3.1), from the leaf's sibling up to the root's child.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The leaf's index (a log position minus one).
    pub leaf_index: u64,
    /// The size of the tree the proof is for.
    pub tree_size: u64,
    /// The audit path.
    pub path: Vec<Hash>,
}

/// A consistency proof between the trees of `from` and `to` leaves (RFC 9162 2.1.4.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// The older tree's size.
    pub from: u64,
    /// The newer tree's size.
    pub to: u64,
    /// The proof's hashes.
    pub path: Vec<Hash>,
}

/// Why a proof did not verify: each variant names what did not match.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf's index is not inside the tree.
    #[error("leaf index {leaf_index} is not inside a tree of {tree_size} leaves")]
    LeafOutsideTree {
        /// The leaf's index.
        leaf_index: u64,
        /// The tree's size.
        tree_size: u64,
    },
    /// The path has more or fewer hashes than a proof for these sizes has.
    #[error("the proof's path has {len} hashes, which is not the length of a proof for {what}")]
    WrongPathLength {
        /// The number of hashes.
        len: usize,
        /// The leaf and tree sizes the proof claims to be for.
        what: String,
    },
    /// The root computed from the leaf and the path is not the tree's root.
    #[error(
        "the root computed from the leaf and the inclusion proof ({computed}) is not the tree's root ({expected}): the entry or the proof is not part of that tree"
    )]
    InclusionRootMismatch {
        /// What the proof gives, base64.
        computed: String,
        /// The root it was checked against, base64.
        expected: String,
    },
    /// The older tree is larger than the newer one (or empty).
    #[error(
        "a consistency proof goes from a tree of 1 or more leaves to one at least as large; got {from} to {to}"
    )]
    SizesOutOfOrder {
        /// The older size.
        from: u64,
        /// The newer size.
        to: u64,
    },
    /// The proof does not give the older tree's root.
    #[error(
        "the consistency proof gives {computed} as the root of the tree of {size} leaves, but the older checkpoint says {expected}: the older tree is not a prefix of the newer one"
    )]
    OldRootMismatch {
        /// The older size.
        size: u64,
        /// What the proof gives, base64.
        computed: String,
        /// The older checkpoint's root, base64.
        expected: String,
    },
    /// The proof does not give the newer tree's root.
    #[error(
        "the consistency proof gives {computed} as the root of the tree of {size} leaves, but the newer checkpoint says {expected}: the newer tree does not extend the older one"
    )]
    NewRootMismatch {
        /// The newer size.
        size: u64,
        /// What the proof gives, base64.
        computed: String,
        /// The newer checkpoint's root, base64.
        expected: String,
    },
}

/// A hash as base64 (standard alphabet, padded), as checkpoints and the API write them.
pub fn base64_hash(hash: &Hash) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(hash)
}

/// The root of the leaves `start..end` (`end > start`, `start` a multiple of the largest power
/// of two not above `end - start`).
pub(crate) fn subtree_root(nodes: &dyn Nodes, start: u64, end: u64) -> Result<Hash, StoreError> {
    let size = end - start;
    assert!(size > 0, "a subtree holds at least one leaf");
    if size.is_power_of_two() {
        let level = size.trailing_zeros();
        assert_eq!(
            start % size,
            0,
            "a perfect subtree starts at a multiple of its size"
        );
        return nodes.node(level as u8, start >> level);
    }
    let k = split_point(size);
    let left = subtree_root(nodes, start, start + k)?;
    let right = subtree_root(nodes, start + k, end)?;
    Ok(node_hash(&left, &right))
}

/// The root of the tree of the first `size` leaves (RFC 9162 2.1.1; the empty tree's root for 0).
pub(crate) fn root(nodes: &dyn Nodes, size: u64) -> Result<Hash, StoreError> {
    if size == 0 {
        return Ok(empty_root());
    }
    subtree_root(nodes, 0, size)
}

/// The inclusion proof of leaf `leaf_index` in the tree of `tree_size` leaves (RFC 9162
/// 2.1.3.1; `leaf_index < tree_size`).
pub(crate) fn inclusion_proof(
    nodes: &dyn Nodes,
    leaf_index: u64,
    tree_size: u64,
) -> Result<InclusionProof, StoreError> {
    assert!(leaf_index < tree_size, "the leaf is inside the tree");
    let mut path = Vec::with_capacity(64);
    inclusion_path(nodes, leaf_index, 0, tree_size, &mut path)?;
    Ok(InclusionProof {
        leaf_index,
        tree_size,
        path,
    })
}

/// PATH(m, D[start:end]), appended to `out` from the bottom up.
fn inclusion_path(
    nodes: &dyn Nodes,
    leaf: u64,
    start: u64,
    end: u64,
    out: &mut Vec<Hash>,
) -> Result<(), StoreError> {
    if end - start == 1 {
        return Ok(());
    }
    let middle = start + split_point(end - start);
    if leaf < middle {
        inclusion_path(nodes, leaf, start, middle, out)?;
        out.push(subtree_root(nodes, middle, end)?);
    } else {
        inclusion_path(nodes, leaf, middle, end, out)?;
        out.push(subtree_root(nodes, start, middle)?);
    }
    Ok(())
}

/// The consistency proof from the tree of `from` leaves to the tree of `to` leaves (RFC 9162
/// 2.1.4.1; `0 < from <= to`, empty when they are equal).
pub(crate) fn consistency_proof(
    nodes: &dyn Nodes,
    from: u64,
    to: u64,
) -> Result<ConsistencyProof, StoreError> {
    assert!(
        0 < from && from <= to,
        "a consistency proof goes forwards from a non-empty tree"
    );
    let mut path = Vec::with_capacity(64);
    if from < to {
        subproof(nodes, from, 0, to, true, &mut path)?;
    }
    Ok(ConsistencyProof { from, to, path })
}

/// SUBPROOF(m, D[start:end], complete), appended to `out` from the bottom up; `m` counts the
/// older tree's leaves inside `start..end`.
fn subproof(
    nodes: &dyn Nodes,
    m: u64,
    start: u64,
    end: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<(), StoreError> {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(subtree_root(nodes, start, end)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(nodes, m, start, start + k, complete, out)?;
        out.push(subtree_root(nodes, start + k, end)?);
    } else {
        subproof(nodes, m - k, start + k, end, false, out)?;
        out.push(subtree_root(nodes, start, start + k)?);
    }
    Ok(())
}

/// Checks that `entry` (the stored envelope bytes) is leaf `proof.leaf_index` of the tree whose
/// root is `root` (RFC 9162 2.1.3.2).
pub fn verify_inclusion(
    entry: &[u8],
    proof: &InclusionProof,
    root: &Hash,
) -> Result<(), ProofError> {
    verify_inclusion_of_hash(&leaf_hash(entry), proof, root)
}

/// [`verify_inclusion`] for a leaf hash.
pub fn verify_inclusion_of_hash(
    leaf: &Hash,
    proof: &InclusionProof,
    root: &Hash,
) -> Result<(), ProofError> {
    let (leaf_index, tree_size) = (proof.leaf_index, proof.tree_size);
    if leaf_index >= tree_size {
        return Err(ProofError::LeafOutsideTree {
            leaf_index,
            tree_size,
        });
    }
    let wrong_length = || ProofError::WrongPathLength {
        len: proof.path.len(),
        what: format!("leaf {leaf_index} of a tree of {tree_size} leaves"),
    };
    let (mut fnode, mut snode) = (leaf_index, tree_size - 1);
    let mut computed = *leaf;
    for sibling in &proof.path {
        if snode == 0 {
            return Err(wrong_length());
        }
        if fnode & 1 == 1 || fnode == snode {
            computed = node_hash(sibling, &computed);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            computed = node_hash(&computed, sibling);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(wrong_length());
    }
    if &computed != root {
        return Err(ProofError::InclusionRootMismatch {
            computed: base64_hash(&computed),
            expected: base64_hash(root),
        });
    }
    Ok(())
}

/// Checks that the tree of `proof.from` leaves with root `old_root` is a prefix of the tree of
/// `proof.to` leaves with root `new_root` (RFC 9162 2.1.4.2; equal sizes need equal roots and
/// an empty proof).
pub fn verify_consistency(
    proof: &ConsistencyProof,
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), ProofError> {
    let (from, to) = (proof.from, proof.to);
    if from == 0 || from > to {
        return Err(ProofError::SizesOutOfOrder { from, to });
    }
    let wrong_length = || ProofError::WrongPathLength {
        len: proof.path.len(),
        what: format!("tree sizes {from} to {to}"),
    };
    if from == to {
        if !proof.path.is_empty() {
            return Err(wrong_length());
        }
        return check_roots(from, old_root, old_root, to, old_root, new_root);
    }
    let mut path = proof.path.iter();
    let seed = if from.is_power_of_two() {
        *old_root
    } else {
        *path.next().ok_or_else(wrong_length)?
    };
    let (mut fnode, mut snode) = (from - 1, to - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut old, mut new) = (seed, seed);
    for hash in path {
        if snode == 0 {
            return Err(wrong_length());
        }
        if fnode & 1 == 1 || fnode == snode {
            old = node_hash(hash, &old);
            new = node_hash(hash, &new);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            new = node_hash(&new, hash);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(wrong_length());
    }
    check_roots(from, &old, old_root, to, &new, new_root)
}

/// Compares the roots a consistency proof gave with the two checkpoints' roots.
fn check_roots(
    from: u64,
    old: &Hash,
    old_root: &Hash,
    to: u64,
    new: &Hash,
    new_root: &Hash,
) -> Result<(), ProofError> {
    if old != old_root {
        return Err(ProofError::OldRootMismatch {
            size: from,
            computed: base64_hash(old),
            expected: base64_hash(old_root),
        });
    }
    if new != new_root {
        return Err(ProofError::NewRootMismatch {
            size: to,
            computed: base64_hash(new),
            expected: base64_hash(new_root),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The algorithms against a reference written separately, straight from RFC 9162's
    //! recursive definitions over the list of leaves (no stored nodes, no frontier).

    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::merkle::frontier::Frontier;

    /// The nodes a frontier writes while `size` leaves are appended.
    struct MemoryNodes(HashMap<(u8, u64), Hash>);

    impl Nodes for MemoryNodes {
        fn node(&self, level: u8, index: u64) -> Result<Hash, StoreError> {
            self.0.get(&(level, index)).copied().ok_or_else(|| {
                crate::log::corrupt(format!("node {level}/{index}"), "never written")
            })
        }
    }

    fn entries(size: u64) -> Vec<Vec<u8>> {
        (0..size)
            .map(|i| format!("entry {i}").into_bytes())
            .collect()
    }

    fn build(entries: &[Vec<u8>]) -> (MemoryNodes, Frontier) {
        let mut nodes = HashMap::new();
        let mut frontier = Frontier::empty();
        for entry in entries {
            frontier.append(leaf_hash(entry), |level, index, hash| {
                assert!(
                    nodes.insert((level, index), *hash).is_none(),
                    "a node is written once"
                );
            });
        }
        (MemoryNodes(nodes), frontier)
    }

    /// The largest power of two smaller than `n`.
    fn reference_k(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    /// MTH(D[n]).
    fn reference_mth(d: &[Vec<u8>]) -> Hash {
        use sha2::{Digest, Sha256};
        match d.len() {
            0 => Sha256::digest(b"").into(),
            1 => Sha256::new()
                .chain_update([0])
                .chain_update(&d[0])
                .finalize()
                .into(),
            n => {
                let k = reference_k(n);
                Sha256::new()
                    .chain_update([1])
                    .chain_update(reference_mth(&d[..k]))
                    .chain_update(reference_mth(&d[k..]))
                    .finalize()
                    .into()
            }
        }
    }

    /// PATH(m, D[n]).
    fn reference_path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
        let n = d.len();
        if n == 1 {
            return Vec::new();
        }
        let k = reference_k(n);
        if m < k {
            let mut path = reference_path(m, &d[..k]);
            path.push(reference_mth(&d[k..]));
            path
        } else {
            let mut path = reference_path(m - k, &d[k..]);
            path.push(reference_mth(&d[..k]));
            path
        }
    }

    /// SUBPROOF(m, D[n], b).
    fn reference_subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b {
                Vec::new()
            } else {
                vec![reference_mth(d)]
            };
        }
        let k = reference_k(n);
        if m <= k {
            let mut proof = reference_subproof(m, &d[..k], b);
            proof.push(reference_mth(&d[k..]));
            proof
        } else {
            let mut proof = reference_subproof(m - k, &d[k..], false);
            proof.push(reference_mth(&d[..k]));
            proof
        }
    }

    /// A tree size, with the leaf or older size picked by `pick`.
    fn size_and_pick() -> impl Strategy<Value = (u64, u64)> {
        (1u64..300).prop_flat_map(|size| (Just(size), 0..size))
    }

    proptest! {
        #[test]
        fn roots_equal_the_reference_for_every_prefix(size in 0u64..300) {
            let d = entries(size);
            let (nodes, frontier) = build(&d);
            prop_assert_eq!(frontier.root(), reference_mth(&d));
            for prefix in 0..=size {
                prop_assert_eq!(root(&nodes, prefix)?, reference_mth(&d[..prefix as usize]));
            }
        }

        #[test]
        fn inclusion_proofs_equal_the_reference_and_verify((size, leaf) in size_and_pick()) {
            let d = entries(size);
            let (nodes, _) = build(&d);
            let proof = inclusion_proof(&nodes, leaf, size)?;
            prop_assert_eq!(&proof.path, &reference_path(leaf as usize, &d));
            let root = reference_mth(&d);
            prop_assert_eq!(verify_inclusion(&d[leaf as usize], &proof, &root), Ok(()));
            // Another entry, or the right entry at another index, does not verify.
            let other = b"another entry".to_vec();
            prop_assert!(verify_inclusion(&other, &proof, &root).is_err());
            if size > 1 {
                let moved = InclusionProof { leaf_index: (leaf + 1) % size, ..proof.clone() };
                prop_assert!(verify_inclusion(&d[leaf as usize], &moved, &root).is_err());
            }
        }

        #[test]
        fn consistency_proofs_equal_the_reference_and_verify((size, older) in size_and_pick()) {
            let from = older + 1;
            let d = entries(size);
            let (nodes, _) = build(&d);
            let proof = consistency_proof(&nodes, from, size)?;
            let expected = if from == size {
                Vec::new()
            } else {
                reference_subproof(from as usize, &d, true)
            };
            prop_assert_eq!(&proof.path, &expected);
            let (old_root, new_root) = (reference_mth(&d[..from as usize]), reference_mth(&d));
            prop_assert_eq!(verify_consistency(&proof, &old_root, &new_root), Ok(()));
            // A rewritten history (the first entry changed) is not consistent with the old root.
            let mut rewritten = d.clone();
            rewritten[0] = b"rewritten".to_vec();
            let (rewritten_nodes, _) = build(&rewritten);
            let forged = consistency_proof(&rewritten_nodes, from, size)?;
            prop_assert!(
                verify_consistency(&forged, &old_root, &reference_mth(&rewritten)).is_err()
            );
        }

        #[test]
        fn a_changed_proof_hash_fails((size, leaf) in size_and_pick(), flip in 0usize..64) {
            let d = entries(size);
            let (nodes, _) = build(&d);
            let mut proof = inclusion_proof(&nodes, leaf, size)?;
            prop_assume!(!proof.path.is_empty());
            let at = flip % proof.path.len();
            proof.path[at][0] ^= 1;
            let result = verify_inclusion(&d[leaf as usize], &proof, &reference_mth(&d));
            prop_assert!(
                matches!(result, Err(ProofError::InclusionRootMismatch { .. })),
                "got {:?}",
                result
            );
        }
    }

    #[test]
    fn a_proof_with_a_hash_too_many_or_too_few_fails_by_length() {
        let d = entries(11);
        let (nodes, _) = build(&d);
        let root = reference_mth(&d);
        let proof = inclusion_proof(&nodes, 4, 11).expect("proof");
        let mut long = proof.clone();
        long.path.push([0; 32]);
        assert!(matches!(
            verify_inclusion(&d[4], &long, &root),
            Err(ProofError::WrongPathLength { .. })
        ));
        let mut short = proof;
        short.path.pop();
        assert!(matches!(
            verify_inclusion(&d[4], &short, &root),
            Err(ProofError::WrongPathLength { .. })
        ));
    }

    #[test]
    fn consistency_between_equal_sizes_is_an_empty_proof_and_equal_roots() {
        let d = entries(6);
        let (nodes, _) = build(&d);
        let proof = consistency_proof(&nodes, 6, 6).expect("proof");
        assert!(proof.path.is_empty());
        let root = reference_mth(&d);
        assert_eq!(verify_consistency(&proof, &root, &root), Ok(()));
        let other = reference_mth(&d[..5]);
        assert!(matches!(
            verify_consistency(&proof, &root, &other),
            Err(ProofError::NewRootMismatch { .. })
        ));
    }

    #[test]
    fn a_consistency_proof_from_zero_or_backwards_is_refused() {
        let root = [0; 32];
        for (from, to) in [(0, 5), (6, 5)] {
            let proof = ConsistencyProof {
                from,
                to,
                path: Vec::new(),
            };
            assert_eq!(
                verify_consistency(&proof, &root, &root),
                Err(ProofError::SizesOutOfOrder { from, to })
            );
        }
    }
}
