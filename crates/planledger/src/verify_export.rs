//! `planledger audit verify-export`: checks offline (no log) an export written with
//! `planledger export --proof`: the checkpoint's signature, then every row's inclusion proof
//! against the checkpoint's root, naming the first row that fails and why.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use planledger_app::audit::PublicKey;
use planledger_app::checkpoint::{Checkpoint, open_checkpoint};
use planledger_export::{ProvedRow, ReadProgress, read_proved};
use planledger_store::merkle::leaf_hash;
use planledger_store::merkle::proof::{InclusionProof, base64_hash, verify_inclusion_of_hash};

/// Flags of `audit verify-export`.
#[derive(clap::Args, Debug)]
pub struct VerifyExportArgs {
    /// The signed checkpoint `planledger export --proof` wrote beside the export
    /// (FILE.checkpoint).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The Ed25519 public key the checkpoint is signed with (64 hex digits, from
    /// `GET /v1/audit/keys` or `planledger audit public-key`).
    #[arg(long)]
    pub public_key: String,
    /// The export with proofs (NDJSON or Parquet, told apart by its content).
    #[arg(long)]
    pub export: PathBuf,
}

/// Runs `audit verify-export`.
pub fn run(args: &VerifyExportArgs) -> Result<()> {
    let key = PublicKey::from_hex(&args.public_key)?;
    let name = args.checkpoint.display().to_string();
    let text = std::fs::read_to_string(&args.checkpoint)
        .with_context(|| format!("reading the checkpoint {name}"))?;
    let head = open_checkpoint(&name, &text, &key)
        .map_err(|e| anyhow!("verify-export failed: {e}"))?
        .0;
    let bar = crate::progress_bar(0, "{msg:>10} {bar:40} {percent}%  eta {eta}", "verifying");
    let mut range: Option<(u64, u64)> = None;
    let mut ascending = true;
    let mut check = |row: ProvedRow, progress: ReadProgress| -> Result<()> {
        let (number, position) = (row.row, row.position);
        check_row(&head, row).map_err(|reason| {
            anyhow!(
                "verify-export failed at row {number} of {} (position {position}): {reason}",
                args.export.display(),
            )
        })?;
        if let Some((_, last)) = range {
            ascending &= position > last;
        }
        range = Some(range.map_or((position, position), |(first, last)| {
            (first.min(position), last.max(position))
        }));
        if progress.rows.is_multiple_of(4096) {
            bar.set_length(progress.total);
            bar.set_position(progress.done);
        }
        Ok(())
    };
    let read = read_proved(&args.export, &mut check);
    bar.finish_and_clear();
    let (format, rows) = read.with_context(|| format!("checking {}", args.export.display()))?;
    let positions = match range {
        None => "no positions".to_owned(),
        Some((first, last)) if ascending && last - first + 1 == rows => {
            format!("every position from {first} to {last}")
        }
        Some((first, last)) if ascending => format!(
            "{rows} of the positions {first} to {last}: the export was of one tenant, or rows were left out"
        ),
        Some((first, last)) => format!(
            "positions {first} to {last}, not in ascending order: rows were repeated or moved"
        ),
    };
    println!(
        "ok: all {rows} rows of {} ({}, {positions}) are in the tree of {} events the checkpoint names (signed with key {})",
        args.export.display(),
        format.as_str(),
        head.tree_size,
        key.key_id
    );
    Ok(())
}

/// Checks one row against the checkpoint: the same log and tree size, a proof of the row's
/// own position, and the proof from the leaf of the row's bytes to the root. A failed proof is
/// told apart by the leaf hash the export wrote: a leaf of the bytes that differs from it means
/// the event's bytes changed; one equal to it, the proof's hashes.
fn check_row(head: &Checkpoint, row: ProvedRow) -> Result<(), String> {
    if let Some(origin) = &row.origin
        && origin != &head.origin
    {
        return Err(format!(
            "its proof is of log {origin}, but the checkpoint is of {}: the checkpoint is not the one written with this export",
            head.origin
        ));
    }
    if row.tree_size != head.tree_size {
        return Err(format!(
            "its proof is for tree size {}, but the checkpoint is of tree size {}: the checkpoint is not the one written with this export",
            row.tree_size, head.tree_size
        ));
    }
    if row.leaf_index.checked_add(1) != Some(row.position) {
        return Err(format!(
            "its proof is of leaf {} (position {}), not of the row's position",
            row.leaf_index,
            row.leaf_index.saturating_add(1)
        ));
    }
    let stored = event_position(&row.envelope)?;
    if stored != row.position {
        return Err(format!(
            "the event holds position {stored}, not the row's: the event's bytes were changed or moved"
        ));
    }
    let leaf = leaf_hash(&row.envelope);
    let proof = InclusionProof {
        leaf_index: row.leaf_index,
        tree_size: row.tree_size,
        path: row.path,
    };
    match verify_inclusion_of_hash(&leaf, &proof, &head.root) {
        Ok(()) => Ok(()),
        Err(error) if leaf != row.leaf_hash => Err(format!(
            "the event's bytes are not the ones the log holds: their leaf hash is {}, but the tree's leaf at this position is {} (a byte of the event was changed), and {error}",
            base64_hash(&leaf),
            base64_hash(&row.leaf_hash)
        )),
        Err(error) => Err(format!(
            "the event's bytes are the log's (their leaf hash is the tree's, {}), but its inclusion proof does not lead to the checkpoint's root (a hash of the proof was changed): {error}",
            base64_hash(&leaf)
        )),
    }
}

/// The `position` of an envelope's JSON.
fn event_position(event: &[u8]) -> Result<u64, String> {
    #[derive(serde::Deserialize)]
    struct Positioned {
        position: u64,
    }
    serde_json::from_slice::<Positioned>(event)
        .map(|p| p.position)
        .map_err(|e| format!("the event is not an envelope as the log stores it: {e}"))
}
