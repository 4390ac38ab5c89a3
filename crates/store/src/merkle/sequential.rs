//! Inclusion proofs of many positions in one tree size, taken in ascending order (an export
//! with proofs): each node is read once, not once per proof.
//!
//! In a tree of `n` leaves, the audit path of leaf `i` holds, bottom up, the sibling of each
//! of its ancestors: a perfect subtree, stored as the node `(L, (i >> L) ^ 1)`, except on the
//! tree's right edge, where the sibling on the right may be a non-perfect subtree (computed
//! from perfect ones). For ascending leaves the sibling of level `L` changes every `2^L`
//! leaves and moves forward, so one forward iterator per level reads each level's nodes in key
//! order, once (about two node reads per leaf in all, where a proof read alone costs a
//! batched `MultiGet`); the few non-perfect right-edge subtrees are computed once and kept.

use std::cell::RefCell;
use std::collections::HashMap;

use rocksdb::{DB, DBRawIteratorWithThreadMode, ReadOptions};

use super::proof::{self, InclusionProof, Nodes};
use super::stored::read_node;
use super::{Hash, split_point};
use crate::keys::{self, CF_MERKLE};
use crate::log::corrupt;
use crate::{LogView, Position, StoreError};

/// The inclusion proofs of positions in one tree size, for positions asked in ascending order
/// (any order is answered, an out-of-order one with a read of its own).
pub struct SequentialProofs<'a> {
    tree_size: u64,
    levels: RefCell<Vec<Level<'a>>>,
    db: &'a DB,
    /// The roots of the non-perfect subtrees on the right edge, by (start, end).
    edge: RefCell<HashMap<(u64, u64), Hash>>,
}

impl std::fmt::Debug for SequentialProofs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequentialProofs")
            .field("tree_size", &self.tree_size)
            .finish()
    }
}

/// One level's reader: the pair of sibling nodes `2k` and `2k + 1` last read, and a forward
/// iterator over the level's keys, opened at its first use.
#[derive(Default)]
struct Level<'a> {
    iter: Option<DBRawIteratorWithThreadMode<'a, DB>>,
    /// `k`, and the nodes `2k` and `2k + 1` (the second absent past the stored tree).
    pair: Option<(u64, Hash, Option<Hash>)>,
}

impl LogView<'_> {
    /// Inclusion proofs in the tree of `tree_size` positions (at most [`Self::tree_size`]),
    /// cheapest for positions asked in ascending order.
    pub fn sequential_proofs(&self, tree_size: u64) -> Result<SequentialProofs<'_>, StoreError> {
        let last = self.tree_size();
        if tree_size > last {
            return Err(StoreError::TreeRange {
                field: "tree_size",
                value: tree_size,
                rule: format!("at most the log's current size {last}"),
            });
        }
        let db = self.db();
        db.cf_handle(CF_MERKLE).ok_or_else(|| {
            corrupt(
                "the merkle column family",
                "missing: the service writing this log has not run a version that keeps the Merkle tree yet; restart it with this version",
            )
        })?;
        Ok(SequentialProofs {
            tree_size,
            levels: RefCell::new((0..64).map(|_| Level::default()).collect()),
            db,
            edge: RefCell::new(HashMap::new()),
        })
    }
}

impl SequentialProofs<'_> {
    /// The tree size every proof is in.
    pub fn tree_size(&self) -> u64 {
        self.tree_size
    }

    /// The root of the tree.
    pub fn root(&self) -> Result<Hash, StoreError> {
        proof::root(&PointReads(self.db), self.tree_size)
    }

    /// The inclusion proof of the event at `position` (1 to the tree size).
    pub fn proof(&self, position: Position) -> Result<InclusionProof, StoreError> {
        let mut path = Vec::with_capacity(64);
        self.path_into(position, &mut path)?;
        Ok(InclusionProof {
            leaf_index: position.0 - 1,
            tree_size: self.tree_size,
            path,
        })
    }

    /// The audit path of the event at `position` (1 to the tree size) into `path` (emptied
    /// first), as [`Self::proof`] gives it, without a new vector per proof.
    pub fn path_into(&self, position: Position, path: &mut Vec<Hash>) -> Result<(), StoreError> {
        self.check_position(position)?;
        path.clear();
        self.path(position.0 - 1, 0, self.tree_size, path)
    }

    /// The leaf hash of the event at `position`, as the tree holds it (read with its
    /// sibling, so free beside its proof).
    pub fn leaf(&self, position: Position) -> Result<Hash, StoreError> {
        self.check_position(position)?;
        self.node(0, position.0 - 1)
    }

    fn check_position(&self, position: Position) -> Result<(), StoreError> {
        if position.0 == 0 || position.0 > self.tree_size {
            return Err(StoreError::TreeRange {
                field: "position",
                value: position.0,
                rule: format!(
                    "1 to the tree size {} (positions start at 1)",
                    self.tree_size
                ),
            });
        }
        Ok(())
    }

    /// PATH(leaf, D[start:end]) as [`proof::inclusion_proof`] computes it, appended to `out`
    /// from the bottom up.
    fn path(&self, leaf: u64, start: u64, end: u64, out: &mut Vec<Hash>) -> Result<(), StoreError> {
        if end - start == 1 {
            return Ok(());
        }
        let middle = start + split_point(end - start);
        if leaf < middle {
            self.path(leaf, start, middle, out)?;
            out.push(self.subtree(middle, end)?);
        } else {
            self.path(leaf, middle, end, out)?;
            out.push(self.subtree(start, middle)?);
        }
        Ok(())
    }

    /// The root of the leaves `start..end`, a sibling in a path: a perfect one is a stored
    /// node read through its level's iterator, a non-perfect one (on the right edge) is
    /// computed once.
    fn subtree(&self, start: u64, end: u64) -> Result<Hash, StoreError> {
        let size = end - start;
        if size.is_power_of_two() {
            let level = size.trailing_zeros() as u8;
            return self.node(level, start >> level);
        }
        assert_eq!(end, self.tree_size, "only the right edge is not perfect");
        if let Some(hash) = self.edge.borrow().get(&(start, end)) {
            return Ok(*hash);
        }
        let hash = proof::subtree_root(&PointReads(self.db), start, end)?;
        self.edge.borrow_mut().insert((start, end), hash);
        Ok(hash)
    }

    /// The node of `level` and `index`, from the pair its level read last, or the next pair.
    fn node(&self, level: u8, index: u64) -> Result<Hash, StoreError> {
        let mut levels = self.levels.borrow_mut();
        let reader = &mut levels[level as usize];
        let pair = index >> 1;
        match reader.pair {
            Some((k, left, _)) if k == pair && index & 1 == 0 => return Ok(left),
            Some((k, _, Some(right))) if k == pair => return Ok(right),
            // An earlier pair than the last read: positions out of order.
            Some((k, _, _)) if pair < k => return read_node(self.db, level, index),
            _ => {}
        }
        let (left, right) = read_pair(self.db, reader, level, pair)?;
        reader.pair = Some((pair, left, right));
        match (index & 1, right) {
            (0, _) => Ok(left),
            (_, Some(right)) => Ok(right),
            (_, None) => Err(missing(level, index)),
        }
    }
}

/// Reads the nodes `2 * pair` and `2 * pair + 1` of `level` with the level's iterator (a seek
/// only when it is not already there).
fn read_pair<'a>(
    db: &'a DB,
    reader: &mut Level<'a>,
    level: u8,
    pair: u64,
) -> Result<(Hash, Option<Hash>), StoreError> {
    if reader.iter.is_none() {
        let mut read = ReadOptions::default();
        read.fill_cache(false);
        read.set_readahead_size(1 << 20);
        read.set_iterate_upper_bound(keys::merkle_key(level, u64::MAX).to_vec());
        let cf = db
            .cf_handle(CF_MERKLE)
            .expect("checked when the proofs were set up");
        reader.iter = Some(db.raw_iterator_cf_opt(cf, read));
    }
    let iter = reader.iter.as_mut().expect("opened above");
    let first = keys::merkle_key(level, pair << 1);
    if iter.key() != Some(&first[..]) {
        iter.seek(first);
    }
    let hash_at =
        |iter: &DBRawIteratorWithThreadMode<'a, DB>, index: u64| match (iter.key(), iter.value()) {
            (Some(key), Some(value)) if key == keys::merkle_key(level, index) => {
                let hash: Hash = value.try_into().map_err(|_| {
                    corrupt(
                        format!("merkle node at level {level} index {index}"),
                        format!("{} bytes, not 32", value.len()),
                    )
                })?;
                Ok(Some(hash))
            }
            _ => Ok::<_, StoreError>(None),
        };
    let left = hash_at(iter, pair << 1)?;
    iter.status()?;
    let left = left.ok_or_else(|| missing(level, pair << 1))?;
    iter.next();
    let right = hash_at(iter, (pair << 1) + 1)?;
    if right.is_some() {
        iter.next();
    }
    iter.status()?;
    Ok((left, right))
}

fn missing(level: u8, index: u64) -> StoreError {
    corrupt(
        format!("merkle node at level {level} index {index}"),
        "missing from the merkle column family; run planledger verify",
    )
}

/// Stored nodes read one at a time (the few a right-edge subtree or a root needs).
struct PointReads<'a>(&'a DB);

impl Nodes for PointReads<'_> {
    fn node(&self, level: u8, index: u64) -> Result<Hash, StoreError> {
        read_node(self.0, level, index)
    }
}
