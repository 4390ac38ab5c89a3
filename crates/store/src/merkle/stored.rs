//! The tree as the `merkle` column family holds it: node reads, roots and proofs through a
//! [`LogView`], the build of a missing tree when a log is opened, and the check `verify` runs.
//!
//! The writer adds each event's nodes in the event's own batch, so the stored tree always
//! covers exactly the log's positions (a batch is atomic). A log written before the tree
//! existed gets it when it is opened ([`build_missing`]): the writer does not start until the
//! tree covers the whole log.

use std::time::Instant;

use rocksdb::{ColumnFamily, DB, ReadOptions, WriteBatch};

use super::frontier::Frontier;
use super::proof::{self, ConsistencyProof, InclusionProof, Nodes};
use super::{Hash, leaf_hash};
use crate::keys::{self, CF_LOG, CF_MERKLE};
use crate::log::{cf, corrupt};
use crate::{LogView, Position, StoreError};

/// Leaves a build or a check handles per batch of writes.
const BUILD_BATCH: u64 = 10_000;

/// The `merkle` column family (absent only from a log a [`crate::LogReader`] opened before
/// its writer ever ran this version).
fn merkle_cf(db: &DB) -> Result<&ColumnFamily, StoreError> {
    db.cf_handle(CF_MERKLE).ok_or_else(|| {
        corrupt(
            "the merkle column family",
            "missing: the service writing this log has not run a version that keeps the Merkle tree yet; restart it with this version",
        )
    })
}

/// A stored node's hash, if there is one.
fn find_node(db: &DB, level: u8, index: u64) -> Result<Option<Hash>, StoreError> {
    let Some(bytes) = db.get_pinned_cf(merkle_cf(db)?, keys::merkle_key(level, index))? else {
        return Ok(None);
    };
    let hash: Hash = bytes.as_ref().try_into().map_err(|_| {
        corrupt(
            format!("merkle node at level {level} index {index}"),
            format!("{} bytes, not 32", bytes.len()),
        )
    })?;
    Ok(Some(hash))
}

/// A stored node's hash; a missing one is corruption (the tree covers the whole log).
pub(crate) fn read_node(db: &DB, level: u8, index: u64) -> Result<Hash, StoreError> {
    find_node(db, level, index)?.ok_or_else(|| {
        corrupt(
            format!("merkle node at level {level} index {index}"),
            "missing from the merkle column family; run planledger verify",
        )
    })
}

/// Runs `compute` (a root or a proof) over the stored tree with all its reads made at once:
/// which nodes the algorithms read depends only on the sizes and indexes asked for, never on
/// a hash, so a first run over [`proof::Recorder`] lists them, one batched `MultiGet` reads
/// them (sorted, so nodes sharing a table block are read together), and the second run is
/// answered from those.
fn with_stored_nodes<T>(
    db: &DB,
    compute: impl Fn(&dyn Nodes) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let recorder = proof::Recorder::default();
    compute(&recorder)?;
    let wanted = recorder.into_sorted();
    let keys: Vec<[u8; 9]> = wanted
        .iter()
        .map(|&(level, index)| keys::merkle_key(level, index))
        .collect();
    let found = db.batched_multi_get_cf(merkle_cf(db)?, &keys, true);
    let mut hashes = Vec::with_capacity(wanted.len());
    for (&(level, index), value) in wanted.iter().zip(found) {
        let bytes = value?.ok_or_else(|| {
            corrupt(
                format!("merkle node at level {level} index {index}"),
                "missing from the merkle column family; run planledger verify",
            )
        })?;
        let hash: Hash = bytes.as_ref().try_into().map_err(|_| {
            corrupt(
                format!("merkle node at level {level} index {index}"),
                format!("{} bytes, not 32", bytes.len()),
            )
        })?;
        hashes.push(hash);
    }
    compute(&proof::Fetched::new(wanted, hashes))
}

/// A tree size or position outside the tree this view shows.
fn out_of_range(field: &'static str, value: u64, rule: String) -> StoreError {
    StoreError::TreeRange { field, value, rule }
}

impl LogView<'_> {
    /// The size of the tree this view shows: its last position (leaf `i` is position `i + 1`).
    pub fn tree_size(&self) -> u64 {
        self.last_position().0
    }

    /// The root of the tree of the first `size` positions (`size` at most [`Self::tree_size`]).
    pub fn tree_root(&self, size: u64) -> Result<Hash, StoreError> {
        self.check_size("tree_size", size)?;
        with_stored_nodes(self.db(), |nodes| proof::root(nodes, size))
    }

    /// The leaf hash of the event at `position`, as the tree holds it.
    pub fn tree_leaf(&self, position: Position) -> Result<Hash, StoreError> {
        self.check_position(position, self.tree_size())?;
        read_node(self.db(), 0, position.0 - 1)
    }

    /// The inclusion proof of the event at `position` in the tree of `tree_size` positions.
    pub fn inclusion_proof(
        &self,
        position: Position,
        tree_size: u64,
    ) -> Result<InclusionProof, StoreError> {
        self.check_size("tree_size", tree_size)?;
        self.check_position(position, tree_size)?;
        with_stored_nodes(self.db(), |nodes| {
            proof::inclusion_proof(nodes, position.0 - 1, tree_size)
        })
    }

    /// The consistency proof from the tree of `from` positions to the tree of `to`.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<ConsistencyProof, StoreError> {
        self.check_size("to", to)?;
        if from == 0 {
            return Err(out_of_range(
                "from",
                0,
                "at least 1 (every tree is consistent with the empty one; no proof is needed)"
                    .into(),
            ));
        }
        if from > to {
            return Err(out_of_range(
                "from",
                from,
                format!(
                    "at most to ({to}): a consistency proof goes from an older, smaller tree to a newer one"
                ),
            ));
        }
        with_stored_nodes(self.db(), |nodes| proof::consistency_proof(nodes, from, to))
    }

    fn check_size(&self, field: &'static str, size: u64) -> Result<(), StoreError> {
        let last = self.tree_size();
        if size > last {
            return Err(out_of_range(
                field,
                size,
                format!("at most the log's current size {last}"),
            ));
        }
        Ok(())
    }

    fn check_position(&self, position: Position, tree_size: u64) -> Result<(), StoreError> {
        if position.0 == 0 || position.0 > tree_size {
            return Err(out_of_range(
                "position",
                position.0,
                format!("1 to the tree size {tree_size} (positions start at 1)"),
            ));
        }
        Ok(())
    }
}

/// How many leaves the stored tree holds, among the `positions` the log holds: leaves are
/// written in the batches of their events, so the stored ones are a prefix (a log written
/// before the tree existed has none).
fn stored_leaves(db: &DB, positions: u64) -> Result<u64, StoreError> {
    if positions == 0 || find_node(db, 0, positions - 1)?.is_some() {
        return Ok(positions);
    }
    // The first missing leaf, by bisection: leaves below `low` are stored, `high` is missing.
    let (mut low, mut high) = (0u64, positions - 1);
    while low < high {
        let middle = low + (high - low) / 2;
        if find_node(db, 0, middle)?.is_some() {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    Ok(low)
}

/// Makes the stored tree cover the log up to `head` (adding the leaves and nodes of the
/// positions it lacks, from the log, with progress in the service's log) and returns its right
/// edge. Run when a log is opened, before its writer starts.
pub(crate) fn build_missing(db: &DB, head: Position) -> Result<Frontier, StoreError> {
    let stored = stored_leaves(db, head.0)?;
    let mut frontier = Frontier::load(db, stored)?;
    if stored == head.0 {
        return Ok(frontier);
    }
    tracing::info!(
        from = stored + 1,
        to = head.0,
        "building the Merkle tree of positions the log holds without one"
    );
    let started = Instant::now();
    let mut logged = Instant::now();
    let cfs = keys::AppendCfs::of(db);
    let mut batch = WriteBatch::default();
    scan_log(db, Position(stored + 1), head, |position, entry| {
        frontier.append(leaf_hash(entry), |level, index, hash| {
            keys::put_node(&cfs, &mut batch, level, index, hash);
        });
        if position.0 % BUILD_BATCH == 0 || position == head {
            db.write(std::mem::take(&mut batch))?;
        }
        if logged.elapsed().as_secs() >= 5 {
            tracing::info!(
                position = position.0,
                to = head.0,
                "building the Merkle tree"
            );
            logged = Instant::now();
        }
        Ok(())
    })?;
    db.flush_wal(true)?;
    assert_eq!(frontier.size(), head.0, "the built tree covers the log");
    tracing::info!(
        leaves = head.0,
        seconds = started.elapsed().as_secs_f64(),
        "the Merkle tree covers the log"
    );
    Ok(frontier)
}

/// Calls `visit` with each position and stored bytes of the log from `from` to `to`, checking
/// that the positions are dense.
fn scan_log(
    db: &DB,
    from: Position,
    to: Position,
    mut visit: impl FnMut(Position, &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut read = ReadOptions::default();
    read.fill_cache(false);
    read.set_readahead_size(4 * 1024 * 1024);
    read.set_iterate_upper_bound(keys::log_key(Position(to.0 + 1)).to_vec());
    let mut iter = db.raw_iterator_cf_opt(cf(db, CF_LOG), read);
    iter.seek(keys::log_key(from));
    let mut expected = from.0;
    while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
        let position = keys::decode_u64(key).ok_or_else(|| corrupt("log key", "not 8 bytes"))?;
        if position != expected {
            return Err(corrupt(
                format!("log position {expected}"),
                format!("missing (the next stored position is {position})"),
            ));
        }
        visit(Position(position), value)?;
        expected += 1;
        iter.next();
    }
    iter.status()?;
    if expected != to.0 + 1 {
        return Err(corrupt(
            format!("log position {expected}"),
            format!("missing (the log's head is {to})"),
        ));
    }
    Ok(())
}

/// What the check of the stored tree against the log found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeReport {
    /// Leaves rebuilt from the log (its positions).
    pub leaves: u64,
    /// The root rebuilt from the log.
    pub root: Hash,
    /// The first stored node (in the order the rebuild reaches them) that differs from the
    /// rebuilt one; `None` if every one matches.
    pub first_mismatch: Option<TreeMismatch>,
}

/// A stored node that is not what the log gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeMismatch {
    /// Its level (0: a leaf).
    pub level: u8,
    /// Its index within the level.
    pub index: u64,
    /// What the `merkle` column family holds (`None`: nothing).
    pub stored: Option<Hash>,
    /// What the log gives.
    pub rebuilt: Hash,
}

impl std::fmt::Display for TreeMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let first = self.index << self.level;
        let last = first + (1u64 << self.level);
        write!(
            f,
            "the Merkle tree node at level {} index {} (positions {}..={}) is {}, but the log gives {}",
            self.level,
            self.index,
            first + 1,
            last,
            self.stored
                .as_ref()
                .map_or_else(|| "missing".to_string(), proof::base64_hash),
            proof::base64_hash(&self.rebuilt)
        )
    }
}

/// Rebuilds the tree of positions `1..=last` from the log and compares every node with the
/// stored one; `progress` is called with each position.
pub(crate) fn check(
    db: &DB,
    last: Position,
    mut progress: impl FnMut(Position),
) -> Result<TreeReport, StoreError> {
    let mut frontier = Frontier::empty();
    let mut first_mismatch = None;
    let mut nodes = Vec::with_capacity(64);
    scan_log(db, Position(1), last, |position, entry| {
        nodes.clear();
        frontier.append(leaf_hash(entry), |level, index, hash| {
            nodes.push((level, index, *hash));
        });
        if first_mismatch.is_none() {
            for (level, index, rebuilt) in &nodes {
                let stored = find_node(db, *level, *index)?;
                if stored.as_ref() != Some(rebuilt) {
                    first_mismatch = Some(TreeMismatch {
                        level: *level,
                        index: *index,
                        stored,
                        rebuilt: *rebuilt,
                    });
                    break;
                }
            }
        }
        progress(position);
        Ok(())
    })?;
    Ok(TreeReport {
        leaves: frontier.size(),
        root: frontier.root(),
        first_mismatch,
    })
}

/// Deletes every node that covers a position after `last` (for a log truncated by a test).
pub(crate) fn delete_after(db: &DB, last: Position) -> Result<(), StoreError> {
    let merkle = merkle_cf(db)?;
    let mut batch = WriteBatch::default();
    for level in 0..64u8 {
        // The first node of this level that reaches past `last`.
        let first = last.0 >> level;
        batch.delete_range_cf(
            merkle,
            keys::merkle_key(level, first),
            keys::merkle_key(level, u64::MAX),
        );
    }
    db.write(batch)?;
    Ok(())
}
