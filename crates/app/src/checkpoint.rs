//! Signed checkpoints of the log's Merkle tree, and the offline checks of checkpoints and
//! proofs (no log needed: what `planledger audit verify-event` and `verify-consistency` run).
//!
//! A checkpoint is a C2SP `tlog-checkpoint`: a signed note whose text is three lines, the
//! origin (`planledger/<log id>`), the tree size and the base64 root hash, each ending in a
//! newline; then a blank line and a signature line `— <key name> base64(key id || signature)`
//! (C2SP `signed-note`, Ed25519: the key name is the origin, the key id the first four bytes of
//! `SHA-256(key name || 0x0A || 0x01 || public key)`, the signature covers the note text). It
//! is signed with the digest key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, VerifyingKey};
use planledger_store::merkle::proof::{
    self, ConsistencyProof, InclusionProof, ProofError, base64_hash,
};
use planledger_store::merkle::{self, Hash};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::audit::{DigestKeyError, PublicKey};

/// What a checkpoint's origin line starts with; the log id follows.
pub const ORIGIN_PREFIX: &str = "planledger/";
/// The signed-note signature type of Ed25519.
const ED25519_TYPE: u8 = 0x01;
/// Starts a signature line.
pub(crate) const SIGNATURE_MARK: &str = "\u{2014} ";

/// The origin line (and key name) of a log's checkpoints.
pub fn origin(log_id: &str) -> String {
    format!("{ORIGIN_PREFIX}{log_id}")
}

/// A tree head: the log, the tree size and its root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The origin line: `planledger/<log id>`.
    pub origin: String,
    /// Leaves in the tree (the log's last position when taken).
    pub tree_size: u64,
    /// The root hash of the tree of that size.
    pub root: Hash,
}

impl Checkpoint {
    /// The note text the signature covers: three lines, each ending in a newline.
    pub fn note_text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.tree_size,
            base64_hash(&self.root)
        )
    }
}

/// The signed-note key id of an Ed25519 key under a key name.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([0x0A, ED25519_TYPE])
        .chain_update(public_key)
        .finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The whole signed note: the text, a blank line, the signature line.
pub(crate) fn signed_note(
    checkpoint: &Checkpoint,
    public_key: &[u8; 32],
    signature: &[u8; 64],
) -> String {
    let mut signed = Vec::with_capacity(68);
    signed.extend_from_slice(&key_id(&checkpoint.origin, public_key));
    signed.extend_from_slice(signature);
    format!(
        "{}\n{SIGNATURE_MARK}{} {}\n",
        checkpoint.note_text(),
        checkpoint.origin,
        STANDARD.encode(signed)
    )
}

/// Why a checkpoint, a proof or an event file did not check out; each names what did not
/// match.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The checkpoint is not a signed note of the tlog-checkpoint form.
    #[error("{file} is not a checkpoint: {what}")]
    MalformedCheckpoint {
        /// Which file.
        file: String,
        /// What is wrong.
        what: String,
    },
    /// No signature line of the given key.
    #[error(
        "{file} carries no signature by key {key_id} under the name {name} (the key given with --public-key): it was signed by another key, or not by this log"
    )]
    NotSigned {
        /// Which file.
        file: String,
        /// The key name looked for (the origin).
        name: String,
        /// The key id looked for, hex.
        key_id: String,
    },
    /// The signature of the given key does not verify.
    #[error(
        "the signature on {file} does not verify with key {key_id}: the checkpoint's text was changed after it was signed"
    )]
    BadSignature {
        /// Which file.
        file: String,
        /// The key id, hex.
        key_id: String,
    },
    /// No cosignature of the given witness.
    #[error(
        "{file} carries no cosignature by witness {name} (key id {key_id}): that witness did not cosign it, or with another key"
    )]
    NotCosigned {
        /// Which file.
        file: String,
        /// The witness name looked for.
        name: String,
        /// The cosignature key id looked for, hex.
        key_id: String,
    },
    /// The cosignature of the given witness does not verify.
    #[error(
        "the cosignature of witness {name} (key id {key_id}) on {file} does not verify: the checkpoint's text or the cosignature's time was changed after it was cosigned"
    )]
    BadCosignature {
        /// Which file.
        file: String,
        /// The witness name.
        name: String,
        /// The key id, hex.
        key_id: String,
    },
    /// The proof file is not a proof.
    #[error("{file} is not a proof: {what}")]
    MalformedProof {
        /// Which file.
        file: String,
        /// What is wrong.
        what: String,
    },
    /// The event file is not an envelope.
    #[error("the event file is not an event envelope as the log stores it: {0}")]
    MalformedEvent(String),
    /// Two things that must name the same log or size do not.
    #[error("{0}")]
    Mismatch(String),
    /// The proof does not verify.
    #[error("{context}: {source}")]
    Proof {
        /// What was checked.
        context: String,
        /// What did not match.
        source: ProofError,
    },
    /// The public key is unusable.
    #[error(transparent)]
    Key(#[from] DigestKeyError),
}

/// A checkpoint read back from its text, with its signature checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedCheckpoint(pub Checkpoint);

/// Parses a signed checkpoint (`file` names it in errors) and checks its signature by `key`.
pub fn open_checkpoint(
    file: &str,
    text: &str,
    key: &PublicKey,
) -> Result<VerifiedCheckpoint, CheckError> {
    let malformed = |what: String| CheckError::MalformedCheckpoint {
        file: file.to_string(),
        what,
    };
    let (note, _) = split_note(text).ok_or_else(|| {
        malformed("no blank line between the note text and its signatures".into())
    })?;
    let checkpoint = parse_note(note).map_err(malformed)?;
    check_note_signature(file, text, &checkpoint.origin, &key.bytes()?)?;
    Ok(VerifiedCheckpoint(checkpoint))
}

/// A signed note's text (with its final newline) and its signature lines.
pub(crate) fn split_note(text: &str) -> Option<(&str, &str)> {
    let split = text.rfind("\n\n")?;
    Some((&text[..split + 1], &text[split + 2..]))
}

/// Checks the Ed25519 signature of `public` under `name` on a signed note (C2SP
/// `signed-note`): the signature line with that name and key id must verify over the text.
pub fn check_note_signature(
    file: &str,
    text: &str,
    name: &str,
    public: &[u8; 32],
) -> Result<(), CheckError> {
    let (note, signatures) = split_note(text).ok_or_else(|| CheckError::MalformedCheckpoint {
        file: file.to_string(),
        what: "no blank line between the note text and its signatures".into(),
    })?;
    let wanted_id = key_id(name, public);
    let signature = signatures
        .lines()
        .filter_map(|line| line.strip_prefix(SIGNATURE_MARK))
        .filter_map(|line| line.split_once(' '))
        .filter(|(line_name, _)| *line_name == name)
        .filter_map(|(_, signature)| STANDARD.decode(signature.trim_end()).ok())
        .find(|bytes| bytes.len() == 68 && bytes[..4] == wanted_id)
        .ok_or_else(|| CheckError::NotSigned {
            file: file.to_string(),
            name: name.to_string(),
            key_id: hex::encode(wanted_id),
        })?;
    let signature: [u8; 64] = signature[4..].try_into().expect("68 bytes less the key id");
    VerifyingKey::from_bytes(public)
        .map_err(|e| DigestKeyError::PublicKey {
            given: hex::encode(public),
            message: e.to_string(),
        })?
        .verify_strict(note.as_bytes(), &Signature::from_bytes(&signature))
        .map_err(|_| CheckError::BadSignature {
            file: file.to_string(),
            key_id: hex::encode(wanted_id),
        })
}

/// The checkpoint in a note text (origin, tree size, root; extension lines are ignored).
fn parse_note(note: &str) -> Result<Checkpoint, String> {
    let mut lines = note.lines();
    let origin = lines
        .next()
        .filter(|l| !l.is_empty())
        .ok_or("no origin line")?;
    let size_line = lines.next().ok_or("no tree size line")?;
    let tree_size = size_line
        .parse::<u64>()
        .ok()
        .filter(|size| size.to_string() == size_line)
        .ok_or_else(|| format!("tree size {size_line:?} is not a decimal number"))?;
    let root_line = lines.next().ok_or("no root hash line")?;
    let root = decode_hash(root_line)
        .ok_or_else(|| format!("root hash {root_line:?} is not 32 bytes in base64"))?;
    Ok(Checkpoint {
        origin: origin.to_string(),
        tree_size,
        root,
    })
}

fn decode_hash(text: &str) -> Option<Hash> {
    STANDARD.decode(text).ok()?.try_into().ok()
}

/// An inclusion proof as the API serves it (RFC 9162 shape, hashes in base64).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InclusionProofBody {
    /// The log's checkpoint origin.
    pub origin: String,
    /// The event's log position.
    pub position: u64,
    /// Its leaf index: position - 1.
    pub leaf_index: u64,
    /// The tree size the proof is for.
    pub tree_size: u64,
    /// The audit path, base64, from the leaf's sibling up.
    pub inclusion_path: Vec<String>,
}

/// A consistency proof as the API serves it (RFC 9162 shape, hashes in base64).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsistencyProofBody {
    /// The log's checkpoint origin.
    pub origin: String,
    /// The older tree size.
    pub tree_size_1: u64,
    /// The newer tree size.
    pub tree_size_2: u64,
    /// The proof's hashes, base64.
    pub consistency_path: Vec<String>,
}

impl InclusionProofBody {
    /// The body of a store proof.
    pub fn of(origin: String, proof: &InclusionProof) -> Self {
        Self {
            origin,
            position: proof.leaf_index + 1,
            leaf_index: proof.leaf_index,
            tree_size: proof.tree_size,
            inclusion_path: proof.path.iter().map(base64_hash).collect(),
        }
    }
}

impl ConsistencyProofBody {
    /// The body of a store proof.
    pub fn of(origin: String, proof: &ConsistencyProof) -> Self {
        Self {
            origin,
            tree_size_1: proof.from,
            tree_size_2: proof.to,
            consistency_path: proof.path.iter().map(base64_hash).collect(),
        }
    }
}

/// The hashes of a proof file's path.
fn decode_path(file: &str, field: &str, path: &[String]) -> Result<Vec<Hash>, CheckError> {
    path.iter()
        .enumerate()
        .map(|(index, text)| {
            decode_hash(text).ok_or_else(|| CheckError::MalformedProof {
                file: file.to_string(),
                what: format!("{field}[{index}] is not 32 bytes in base64"),
            })
        })
        .collect()
}

/// What [`check_event`] established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventCheck {
    /// The event's position.
    pub position: u64,
    /// The checkpoint's tree size.
    pub tree_size: u64,
}

/// Checks, with no log, that `event` (the stored envelope bytes) is in the tree `checkpoint`
/// signs: the signature by `key`, that the proof is for the checkpoint's log and size and for
/// the event's position, and the inclusion proof from the event's leaf hash to the root.
pub fn check_event(
    checkpoint: (&str, &str),
    proof: (&str, &str),
    event: &[u8],
    key: &PublicKey,
) -> Result<EventCheck, CheckError> {
    let VerifiedCheckpoint(head) = open_checkpoint(checkpoint.0, checkpoint.1, key)?;
    let body: InclusionProofBody =
        serde_json::from_str(proof.1).map_err(|e| CheckError::MalformedProof {
            file: proof.0.to_string(),
            what: e.to_string(),
        })?;
    if body.origin != head.origin {
        return Err(CheckError::Mismatch(format!(
            "the proof is of log {}, but the checkpoint is of {}",
            body.origin, head.origin
        )));
    }
    if body.tree_size != head.tree_size {
        return Err(CheckError::Mismatch(format!(
            "the proof is for tree size {}, but the checkpoint is of tree size {}: ask for the proof with tree_size={}",
            body.tree_size, head.tree_size, head.tree_size
        )));
    }
    let event = trim_newline(event);
    let position = event_position(event)?;
    if position != body.leaf_index + 1 {
        return Err(CheckError::Mismatch(format!(
            "the event file holds position {position}, but the proof is for position {}",
            body.leaf_index + 1
        )));
    }
    let inclusion = InclusionProof {
        leaf_index: body.leaf_index,
        tree_size: body.tree_size,
        path: decode_path(proof.0, "inclusion_path", &body.inclusion_path)?,
    };
    proof::verify_inclusion(event, &inclusion, &head.root).map_err(|source| CheckError::Proof {
        context: format!(
            "the event at position {position} is not in the checkpoint's tree of {} (leaf hash {})",
            head.tree_size,
            base64_hash(&merkle::leaf_hash(event))
        ),
        source,
    })?;
    Ok(EventCheck {
        position,
        tree_size: head.tree_size,
    })
}

/// The bytes of an event file without the newline a download may end with.
fn trim_newline(bytes: &[u8]) -> &[u8] {
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &bytes[..end]
}

/// The `position` of an envelope's JSON.
fn event_position(event: &[u8]) -> Result<u64, CheckError> {
    #[derive(Deserialize)]
    struct Positioned {
        position: u64,
    }
    serde_json::from_slice::<Positioned>(event)
        .map(|p| p.position)
        .map_err(|e| CheckError::MalformedEvent(e.to_string()))
}

/// What [`check_consistency`] established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyCheck {
    /// The older tree size.
    pub from: u64,
    /// The newer tree size.
    pub to: u64,
}

/// Checks, with no log, that the newer checkpoint extends the older one: both signatures by
/// `key`, the same log, and the consistency proof (needed unless the sizes are equal, when the
/// roots must be).
pub fn check_consistency(
    old: (&str, &str),
    new: (&str, &str),
    proof: Option<(&str, &str)>,
    key: &PublicKey,
) -> Result<ConsistencyCheck, CheckError> {
    let VerifiedCheckpoint(older) = open_checkpoint(old.0, old.1, key)?;
    let VerifiedCheckpoint(newer) = open_checkpoint(new.0, new.1, key)?;
    if older.origin != newer.origin {
        return Err(CheckError::Mismatch(format!(
            "{} is of log {}, but {} is of {}",
            old.0, older.origin, new.0, newer.origin
        )));
    }
    let path = match proof {
        None if older.tree_size == newer.tree_size => Vec::new(),
        None => {
            return Err(CheckError::Mismatch(format!(
                "the checkpoints have tree sizes {} and {}: give the consistency proof between them (--proof, from GET /v1/audit/proof/consistency?from={}&to={})",
                older.tree_size, newer.tree_size, older.tree_size, newer.tree_size
            )));
        }
        Some((file, text)) => {
            let body: ConsistencyProofBody =
                serde_json::from_str(text).map_err(|e| CheckError::MalformedProof {
                    file: file.to_string(),
                    what: e.to_string(),
                })?;
            if body.origin != older.origin
                || (body.tree_size_1, body.tree_size_2) != (older.tree_size, newer.tree_size)
            {
                return Err(CheckError::Mismatch(format!(
                    "the proof is from tree size {} to {} of log {}, but the checkpoints are of sizes {} and {} of log {}",
                    body.tree_size_1,
                    body.tree_size_2,
                    body.origin,
                    older.tree_size,
                    newer.tree_size,
                    older.origin
                )));
            }
            decode_path(file, "consistency_path", &body.consistency_path)?
        }
    };
    let consistency = ConsistencyProof {
        from: older.tree_size,
        to: newer.tree_size,
        path,
    };
    proof::verify_consistency(&consistency, &older.root, &newer.root).map_err(|source| {
        CheckError::Proof {
            context: format!(
                "{} (tree size {}) is not a prefix of {} (tree size {})",
                old.0, older.tree_size, new.0, newer.tree_size
            ),
            source,
        }
    })?;
    Ok(ConsistencyCheck {
        from: older.tree_size,
        to: newer.tree_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DigestKey;

    #[test]
    fn the_signed_note_specification_example_verifies() {
        // c2sp.org/signed-note: the verifier key example.com/foo+530d903a+AekyeRrm… and the
        // note it signs.
        let vkey = STANDARD
            .decode("AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")
            .expect("base64");
        assert_eq!(vkey[0], ED25519_TYPE);
        let public: [u8; 32] = vkey[1..].try_into().expect("32 bytes");
        assert_eq!(hex::encode(key_id("example.com/foo", &public)), "530d903a");
        let note = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
        check_note_signature("example", note, "example.com/foo", &public).expect("verifies");
        let changed = note.replace("example message", "example massage");
        assert!(matches!(
            check_note_signature("example", &changed, "example.com/foo", &public),
            Err(CheckError::BadSignature { .. })
        ));
    }

    #[test]
    fn a_signed_checkpoint_opens_with_its_key_only() {
        let key = DigestKey::random();
        let checkpoint = Checkpoint {
            origin: origin("01234567-89ab-7def-8123-456789abcdef"),
            tree_size: 42,
            root: [7; 32],
        };
        let note = key.sign_checkpoint(&checkpoint);
        assert!(note.starts_with(&format!(
            "planledger/01234567-89ab-7def-8123-456789abcdef\n42\n{}\n\n\u{2014} planledger/",
            base64_hash(&[7; 32])
        )));
        let opened = open_checkpoint("cp", &note, key.public()).expect("opens");
        assert_eq!(opened.0, checkpoint);
        let other = DigestKey::random();
        assert!(matches!(
            open_checkpoint("cp", &note, other.public()),
            Err(CheckError::NotSigned { .. })
        ));
        let changed = note.replacen("\n42\n", "\n43\n", 1);
        assert!(matches!(
            open_checkpoint("cp", &changed, key.public()),
            Err(CheckError::BadSignature { .. })
        ));
    }
}
