//! What a witness decides before it cosigns: that the newest checkpoint of a log extends the
//! last one it saw. Pure (no IO): `planledger audit witness` fetches the checkpoint and the
//! proof, keeps the state and signs.

use planledger_store::merkle::proof::{self, ConsistencyProof, ProofError, base64_hash};

use crate::checkpoint::{Checkpoint, ConsistencyProofBody};

/// Why a witness refuses a checkpoint. Each names the tree the witness saw and the one offered.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The checkpoint is of another log than the one the witness follows.
    #[error(
        "the checkpoint is of log {offered}, but this witness follows {seen} (a state directory follows one log)"
    )]
    OtherLog {
        /// The origin the witness saw before.
        seen: String,
        /// The origin offered.
        offered: String,
    },
    /// The tree is smaller than one the witness saw: the log was rolled back.
    #[error(
        "ROLLBACK: the log's tree shrank from size {old_size} (root {old_root}) to size {new_size} (root {new_root}); events this witness saw are gone"
    )]
    Rollback {
        /// The size seen before.
        old_size: u64,
        /// Its root, base64.
        old_root: String,
        /// The size offered.
        new_size: u64,
        /// Its root, base64.
        new_root: String,
    },
    /// Same size, another root: the history was rewritten.
    #[error(
        "FORK: the tree of size {size} had root {old_root} when this witness saw it, and now has root {new_root}: the log's history was rewritten"
    )]
    Fork {
        /// The tree size.
        size: u64,
        /// The root seen before, base64.
        old_root: String,
        /// The root offered, base64.
        new_root: String,
    },
    /// The log served a proof of other sizes or of another log.
    #[error(
        "the log answered a consistency proof from {from} to {to} of log {origin}, but the witness asked for {old_size} to {new_size} of {expected}"
    )]
    ProofMismatch {
        /// The proof's older size.
        from: u64,
        /// The proof's newer size.
        to: u64,
        /// The proof's origin.
        origin: String,
        /// The size asked from.
        old_size: u64,
        /// The size asked to.
        new_size: u64,
        /// The origin expected.
        expected: String,
    },
    /// A proof hash is not 32 bytes of base64.
    #[error(
        "the log's consistency proof is malformed: consistency_path[{0}] is not 32 bytes in base64"
    )]
    MalformedProof(usize),
    /// The consistency proof does not verify: the newer tree does not extend the older one.
    #[error(
        "NOT AN EXTENSION: the tree of size {new_size} (root {new_root}) does not extend the tree of size {old_size} (root {old_root}) this witness saw: {source}; the log's history was rewritten"
    )]
    NotAnExtension {
        /// The size seen before.
        old_size: u64,
        /// Its root, base64.
        old_root: String,
        /// The size offered.
        new_size: u64,
        /// Its root, base64.
        new_root: String,
        /// What did not match.
        source: Box<ProofError>,
    },
}

/// What the witness needs from the log to move from `seen` to `offered`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needed {
    /// Nothing: no earlier tree (or an empty one), or the same size.
    Nothing,
    /// The consistency proof from the first size to the second.
    Proof(u64, u64),
}

/// What the witness must fetch before [`check_extension`], or an early refusal (another log,
/// a smaller tree).
pub fn needed(seen: Option<&Checkpoint>, offered: &Checkpoint) -> Result<Needed, Refusal> {
    let Some(seen) = seen else {
        return Ok(Needed::Nothing);
    };
    if seen.origin != offered.origin {
        return Err(Refusal::OtherLog {
            seen: seen.origin.clone(),
            offered: offered.origin.clone(),
        });
    }
    if offered.tree_size < seen.tree_size {
        return Err(Refusal::Rollback {
            old_size: seen.tree_size,
            old_root: base64_hash(&seen.root),
            new_size: offered.tree_size,
            new_root: base64_hash(&offered.root),
        });
    }
    if seen.tree_size == 0 || seen.tree_size == offered.tree_size {
        return Ok(Needed::Nothing);
    }
    Ok(Needed::Proof(seen.tree_size, offered.tree_size))
}

/// Checks that `offered` extends `seen` (with the proof [`needed`] asked for): the same log, no
/// smaller tree, the same root at the same size, and a verifying consistency proof.
pub fn check_extension(
    seen: Option<&Checkpoint>,
    offered: &Checkpoint,
    proof: Option<&ConsistencyProofBody>,
) -> Result<(), Refusal> {
    let needed = needed(seen, offered)?;
    let Some(seen) = seen else {
        return Ok(());
    };
    if seen.tree_size == offered.tree_size && seen.root != offered.root {
        return Err(Refusal::Fork {
            size: seen.tree_size,
            old_root: base64_hash(&seen.root),
            new_root: base64_hash(&offered.root),
        });
    }
    let Needed::Proof(from, to) = needed else {
        return Ok(());
    };
    let not_an_extension = |source| Refusal::NotAnExtension {
        old_size: from,
        old_root: base64_hash(&seen.root),
        new_size: to,
        new_root: base64_hash(&offered.root),
        source: Box::new(source),
    };
    let path = match proof {
        Some(body)
            if (body.tree_size_1, body.tree_size_2) == (from, to)
                && body.origin == offered.origin =>
        {
            decode_path(&body.consistency_path)?
        }
        Some(body) => {
            return Err(Refusal::ProofMismatch {
                from: body.tree_size_1,
                to: body.tree_size_2,
                origin: body.origin.clone(),
                old_size: from,
                new_size: to,
                expected: offered.origin.clone(),
            });
        }
        None => {
            return Err(not_an_extension(ProofError::WrongPathLength {
                len: 0,
                what: format!("consistency from {from} to {to}"),
            }));
        }
    };
    let consistency = ConsistencyProof { from, to, path };
    proof::verify_consistency(&consistency, &seen.root, &offered.root).map_err(not_an_extension)
}

fn decode_path(path: &[String]) -> Result<Vec<planledger_store::merkle::Hash>, Refusal> {
    use base64::Engine as _;
    path.iter()
        .enumerate()
        .map(|(index, text)| {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or(Refusal::MalformedProof(index))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use planledger_store::merkle::Hash;

    /// The roots of trees of 1..=n leaves `b"leaf i"`, computed the RFC 9162 2.1.1 way.
    fn root(leaves: &[Vec<u8>]) -> Hash {
        use sha2::{Digest as _, Sha256};
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => Sha256::new()
                .chain_update([0])
                .chain_update(&leaves[0])
                .finalize()
                .into(),
            n => {
                let k = n.next_power_of_two() / 2;
                Sha256::new()
                    .chain_update([1])
                    .chain_update(root(&leaves[..k]))
                    .chain_update(root(&leaves[k..]))
                    .finalize()
                    .into()
            }
        }
    }

    fn leaves(n: usize, tag: &str) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("{tag} {i}").into_bytes()).collect()
    }

    fn checkpoint(leaves: &[Vec<u8>]) -> Checkpoint {
        Checkpoint {
            origin: "planledger/log".into(),
            tree_size: leaves.len() as u64,
            root: root(leaves),
        }
    }

    /// RFC 9162 2.1.4.1 SUBPROOF, to make the proofs these tests offer.
    fn subproof(m: usize, leaves: &[Vec<u8>], whole: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if whole { vec![] } else { vec![root(leaves)] };
        }
        let k = n.next_power_of_two() / 2;
        if m <= k {
            let mut path = subproof(m, &leaves[..k], whole);
            path.push(root(&leaves[k..]));
            path
        } else {
            let mut path = subproof(m - k, &leaves[k..], false);
            path.push(root(&leaves[..k]));
            path
        }
    }

    fn proof(m: usize, leaves: &[Vec<u8>]) -> ConsistencyProofBody {
        use base64::Engine as _;
        ConsistencyProofBody {
            origin: "planledger/log".into(),
            tree_size_1: m as u64,
            tree_size_2: leaves.len() as u64,
            consistency_path: subproof(m, leaves, true)
                .iter()
                .map(|h| base64::engine::general_purpose::STANDARD.encode(h))
                .collect(),
        }
    }

    #[test]
    fn an_extension_with_its_proof_is_accepted() {
        let all = leaves(13, "leaf");
        let old = checkpoint(&all[..6]);
        let new = checkpoint(&all);
        assert_eq!(needed(Some(&old), &new).expect("ok"), Needed::Proof(6, 13));
        check_extension(Some(&old), &new, Some(&proof(6, &all))).expect("extends");
        check_extension(None, &new, None).expect("first sight");
        check_extension(Some(&new), &new, None).expect("same tree");
    }

    #[test]
    fn a_rewritten_tail_is_not_an_extension() {
        let all = leaves(13, "leaf");
        let old = checkpoint(&all[..6]);
        let mut rewritten = all.clone();
        rewritten[4] = b"changed".to_vec();
        let new = checkpoint(&rewritten);
        let refusal =
            check_extension(Some(&old), &new, Some(&proof(6, &rewritten))).expect_err("refused");
        assert!(
            matches!(refusal, Refusal::NotAnExtension { .. }),
            "{refusal}"
        );
        let text = refusal.to_string();
        assert!(
            text.contains("size 13") && text.contains("size 6"),
            "{text}"
        );
    }

    #[test]
    fn a_smaller_tree_another_root_or_another_log_is_refused() {
        let all = leaves(9, "leaf");
        let old = checkpoint(&all);
        let smaller = checkpoint(&all[..5]);
        assert!(matches!(
            check_extension(Some(&old), &smaller, None),
            Err(Refusal::Rollback {
                old_size: 9,
                new_size: 5,
                ..
            })
        ));
        let forked = checkpoint(&leaves(9, "other"));
        assert!(matches!(
            check_extension(Some(&old), &forked, None),
            Err(Refusal::Fork { size: 9, .. })
        ));
        let mut elsewhere = checkpoint(&leaves(12, "leaf"));
        elsewhere.origin = "planledger/another".into();
        assert!(matches!(
            check_extension(Some(&old), &elsewhere, None),
            Err(Refusal::OtherLog { .. })
        ));
        let bigger = leaves(12, "leaf");
        let wrong_sizes = proof(8, &bigger);
        assert!(matches!(
            check_extension(Some(&old), &checkpoint(&bigger), Some(&wrong_sizes)),
            Err(Refusal::ProofMismatch { .. })
        ));
    }
}
