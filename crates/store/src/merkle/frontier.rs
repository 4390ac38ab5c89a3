//! The right edge of the tree, which the writer keeps in memory to add leaves: for a tree of
//! `n` leaves, the root of each perfect subtree in `n`'s binary decomposition (level `L` is
//! present when bit `L` of `n` is set).

use rocksdb::DB;

use super::stored::read_node;
use super::{Hash, node_hash};
use crate::StoreError;

/// The tree's right edge and size.
#[derive(Clone)]
pub(crate) struct Frontier {
    size: u64,
    /// By level; meaningful where bit `level` of `size` is set.
    edge: [Hash; 64],
}

impl std::fmt::Debug for Frontier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontier")
            .field("size", &self.size)
            .finish()
    }
}

impl Frontier {
    /// The edge of the empty tree.
    pub(crate) fn empty() -> Self {
        Self {
            size: 0,
            edge: [[0; 32]; 64],
        }
    }

    /// The edge of the stored tree of `size` leaves: one read per set bit of `size`.
    pub(crate) fn load(db: &DB, size: u64) -> Result<Self, StoreError> {
        let mut frontier = Self::empty();
        frontier.size = size;
        for level in 0..64u8 {
            if size >> level & 1 == 1 {
                frontier.edge[level as usize] = read_node(db, level, (size >> level) - 1)?;
            }
        }
        Ok(frontier)
    }

    /// How many leaves the tree holds.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Adds a leaf and hands every node it completes to `put` (level, index, hash): the leaf
    /// itself, then one node per level its index carries into.
    pub(crate) fn append(&mut self, leaf: Hash, mut put: impl FnMut(u8, u64, &Hash)) {
        let index = self.size;
        put(0, index, &leaf);
        let mut carry = leaf;
        let mut level = 0usize;
        while index >> level & 1 == 1 {
            carry = node_hash(&self.edge[level], &carry);
            level += 1;
            put(level as u8, index >> level, &carry);
        }
        self.edge[level] = carry;
        self.size += 1;
    }

    /// The root of the tree as it stands (the empty tree's root when it has no leaf).
    pub(crate) fn root(&self) -> Hash {
        let mut root: Option<Hash> = None;
        for level in 0..64 {
            if self.size >> level & 1 == 1 {
                root = Some(match root {
                    None => self.edge[level],
                    Some(right) => node_hash(&self.edge[level], &right),
                });
            }
        }
        root.unwrap_or_else(super::empty_root)
    }
}
