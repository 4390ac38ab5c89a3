//! Auditing the log: walking its hash chain, and signed digests of its last durable position.
//!
//! A digest is a statement signed with the service's Ed25519 key: "log `log_id` had hash
//! `hash` at position `position`, recorded at `recorded_at`". An auditor keeps it; later,
//! [`check_digest`] proves that the log still holds that position with that hash and that the
//! chain from position 1 to it verifies, so nothing up to it was changed since. The signed bytes
//! are [`signed_text`]; the key lives in `<data_dir>/digest-signing.key` and is never served.

use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use jiff::Timestamp;
use planledger_store::{EventStore, Position, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::AppError;
use crate::auth::{Permission, Principal};
use crate::checkpoint::{Checkpoint, ConsistencyProofBody, InclusionProofBody, origin};

/// Name of the digest signing key file kept in the data directory.
pub const DIGEST_KEY_FILE: &str = "digest-signing.key";
/// The first line of the signed text, naming its layout.
pub const DIGEST_FORMAT: &str = "planledger-digest-v1";
/// The signature algorithm of digests.
pub const ALGORITHM: &str = "Ed25519";

/// What can go wrong with a digest key.
#[derive(Debug, thiserror::Error)]
pub enum DigestKeyError {
    /// The key file could not be read or created.
    #[error("digest key {path}: {message}")]
    File {
        /// The key file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A public key given as text is not 64 hex digits of an Ed25519 key.
    #[error("public key {given:?} is not an Ed25519 public key (64 hex digits): {message}")]
    PublicKey {
        /// The text given.
        given: String,
        /// What is wrong.
        message: String,
    },
}

/// The Ed25519 key digests are signed with. Its `Debug` shows only the key id.
pub struct DigestKey {
    signing: SigningKey,
    public: PublicKey,
}

impl std::fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DigestKey {{ key_id: {}, secret: <redacted> }}",
            self.public.key_id
        )
    }
}

impl DigestKey {
    /// A key from its 32-byte secret seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&seed);
        let public = PublicKey::of(&signing.verifying_key());
        Self { signing, public }
    }

    /// A fresh random key (not stored anywhere).
    pub fn random() -> Self {
        Self::from_seed(rand::random())
    }

    /// Loads `<data_dir>/digest-signing.key` (the seed in hex), creating a random one with
    /// mode 0600 the first time.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, DigestKeyError> {
        let path = data_dir.join(DIGEST_KEY_FILE);
        if !path.exists() {
            let seed: [u8; 32] = rand::random();
            crate::key_file::create_secret_file(&path, hex::encode(seed).as_bytes())
                .map_err(|e| key_file_error(&path, e.to_string()))?;
        }
        Self::load(data_dir)
    }

    /// Loads `<data_dir>/digest-signing.key`; fails if it does not exist.
    pub fn load(data_dir: &Path) -> Result<Self, DigestKeyError> {
        Self::load_file(&data_dir.join(DIGEST_KEY_FILE))
    }

    /// Loads a digest key file (the seed in hex, as `digest-signing.key` holds it).
    pub fn load_file(path: &Path) -> Result<Self, DigestKeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            key_file_error(
                path,
                format!("{e} (the first `planledger serve` on this data directory creates it)"),
            )
        })?;
        let seed: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| key_file_error(path, "not 64 hex digits (a 32-byte seed)".into()))?;
        Ok(Self::from_seed(seed))
    }

    /// The public half, as served.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Signs the digest of `log_id` at `position` (with that position's hash and time).
    pub fn sign(
        &self,
        log_id: &str,
        position: u64,
        hash: &str,
        recorded_at: Timestamp,
    ) -> SignedDigest {
        let text = signed_text(log_id, position, hash, recorded_at);
        let signature = self.signing.sign(text.as_bytes());
        SignedDigest {
            format: DIGEST_FORMAT.to_string(),
            log_id: log_id.to_string(),
            position,
            hash: hash.to_string(),
            recorded_at,
            algorithm: ALGORITHM.to_string(),
            key_id: self.public.key_id.clone(),
            signature: hex::encode(signature.to_bytes()),
        }
    }
}

impl DigestKey {
    /// Signs a checkpoint: the signed note (C2SP `tlog-checkpoint` text, a blank line and the
    /// signature line of this key under the checkpoint's origin as key name).
    pub fn sign_checkpoint(&self, checkpoint: &Checkpoint) -> String {
        let signature = self.signing.sign(checkpoint.note_text().as_bytes());
        crate::checkpoint::signed_note(
            checkpoint,
            &self.signing.verifying_key().to_bytes(),
            &signature.to_bytes(),
        )
    }
}

fn key_file_error(path: &Path, message: String) -> DigestKeyError {
    DigestKeyError::File {
        path: path.display().to_string(),
        message,
    }
}

/// A public key that checks digests, as `GET /v1/audit/keys` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublicKey {
    /// The first 16 hex digits of sha256 of the 32 public key bytes.
    pub key_id: String,
    /// Always `Ed25519`.
    pub algorithm: String,
    /// The 32 public key bytes, hex.
    pub public_key: String,
}

impl PublicKey {
    fn of(key: &VerifyingKey) -> Self {
        let bytes = key.to_bytes();
        Self {
            key_id: hex::encode(&Sha256::digest(bytes)[..8]),
            algorithm: ALGORITHM.to_string(),
            public_key: hex::encode(bytes),
        }
    }

    /// Parses a public key given as 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, DigestKeyError> {
        Ok(Self::of(&verifying_key(text)?))
    }

    /// The 32 public key bytes.
    pub fn bytes(&self) -> Result<[u8; 32], DigestKeyError> {
        verifying_key(&self.public_key).map(|key| key.to_bytes())
    }
}

/// The Ed25519 key in `text` (64 hex digits).
fn verifying_key(text: &str) -> Result<VerifyingKey, DigestKeyError> {
    let error = |message: String| DigestKeyError::PublicKey {
        given: text.to_string(),
        message,
    };
    let bytes: [u8; 32] = hex::decode(text.trim())
        .map_err(|e| error(e.to_string()))?
        .try_into()
        .map_err(|bytes: Vec<u8>| error(format!("{} bytes, not 32", bytes.len())))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| error(e.to_string()))
}

/// The exact bytes a digest's signature covers (UTF-8, lines separated by `\n`, no trailing
/// newline):
///
/// ```text
/// planledger-digest-v1
/// <log_id>
/// <position, decimal>
/// <hash, 64 lowercase hex digits>
/// <recorded_at, RFC 3339 in UTC as the envelope stores it, e.g. 2026-12-04T18:00:00.123456789Z>
/// ```
pub fn signed_text(log_id: &str, position: u64, hash: &str, recorded_at: Timestamp) -> String {
    format!("{DIGEST_FORMAT}\n{log_id}\n{position}\n{hash}\n{recorded_at}")
}

/// A signed digest: what `GET /v1/audit/digest` answers and `planledger verify --digest` reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedDigest {
    /// Layout of the signed text: `planledger-digest-v1`.
    pub format: String,
    /// The log's identity (`meta/log_id`).
    pub log_id: String,
    /// The last durable position when the digest was taken.
    pub position: u64,
    /// The envelope hash at that position.
    pub hash: String,
    /// When that position was recorded.
    pub recorded_at: Timestamp,
    /// Always `Ed25519`.
    pub algorithm: String,
    /// The signing key's id (see [`PublicKey::key_id`]).
    pub key_id: String,
    /// Ed25519 signature of [`signed_text`], hex (64 bytes).
    pub signature: String,
}

impl SignedDigest {
    /// The bytes the signature covers.
    pub fn signed_text(&self) -> String {
        signed_text(&self.log_id, self.position, &self.hash, self.recorded_at)
    }
}

/// Why a digest does not check out against a log; each names what to look at.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// The digest's layout is not one this build knows.
    #[error("the digest's format is {found:?}; this build checks {DIGEST_FORMAT:?} digests")]
    UnknownFormat {
        /// The format the digest names.
        found: String,
    },
    /// The digest was taken of another log.
    #[error(
        "the digest is from another log: it names log {digest_log}, but this data directory's log is {this_log}"
    )]
    ForeignLog {
        /// The log the digest names.
        digest_log: String,
        /// This log's id.
        this_log: String,
    },
    /// The digest names another signing key than the one it is checked with.
    #[error(
        "the digest was signed with key {digest_key}, not with key {key} it is checked against; pass the key it was signed with (--public-key, from GET /v1/audit/keys)"
    )]
    OtherKey {
        /// The key id the digest names.
        digest_key: String,
        /// The key id checked against.
        key: String,
    },
    /// The signature does not verify.
    #[error(
        "the digest's signature does not verify with key {key_id}: the digest was altered after it was signed, or was not signed by this key"
    )]
    BadSignature {
        /// The key checked against.
        key_id: String,
    },
    /// The log ends before the digest's position.
    #[error(
        "the log is truncated: it ends at position {last}, before the digest's position {position} (events {from} to {position} are gone)",
        from = last + 1
    )]
    Truncated {
        /// The digest's position.
        position: u64,
        /// The log's last position.
        last: u64,
    },
    /// The chain breaks at or before the digest's position.
    #[error(
        "chain broken at position {position}: {reason} ({checked} events before it verified); the log was changed after the digest of position {digest_position} was taken"
    )]
    ChainBroken {
        /// The first bad position.
        position: u64,
        /// Why it is bad.
        reason: String,
        /// Positions that verified before it.
        checked: u64,
        /// The digest's position.
        digest_position: u64,
    },
    /// The chain holds, but ends in another hash at the digest's position.
    #[error(
        "position {position} holds hash {found}, but the digest says {expected}: the log up to it was rewritten with a recomputed chain, or the digest is of another log"
    )]
    HashMismatch {
        /// The digest's position.
        position: u64,
        /// The hash the log holds there.
        found: String,
        /// The hash the digest carries.
        expected: String,
    },
    /// The chain and hash hold, but the position's time differs from the digest's.
    #[error("position {position} was recorded at {found}, but the digest says {expected}")]
    TimeMismatch {
        /// The digest's position.
        position: u64,
        /// The time the log holds.
        found: Timestamp,
        /// The time the digest carries.
        expected: Timestamp,
    },
    /// The key is unusable.
    #[error(transparent)]
    Key(#[from] DigestKeyError),
    /// The log could not be read.
    #[error("reading the log: {0}")]
    Store(#[from] StoreError),
}

/// What a successful [`check_digest`] established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestCheck {
    /// The digest's position: the chain from 1 to it verifies and ends in the digest's hash.
    pub position: u64,
    /// Events verified.
    pub checked: u64,
    /// The log's last position now (at or after the digest's).
    pub last_position: u64,
}

/// Checks a digest against a log, in this order: its format, that it names this log, that it
/// names `key` and its signature verifies with it, then that the chain from position 1 to the
/// digest's position verifies and ends in the digest's hash and time.
///
/// `progress` is called with each verified position. Blocking: it reads the log up to the
/// digest's position.
pub fn check_digest(
    store: &EventStore,
    digest: &SignedDigest,
    key: &PublicKey,
    progress: impl FnMut(Position),
) -> Result<DigestCheck, DigestError> {
    if digest.format != DIGEST_FORMAT {
        return Err(DigestError::UnknownFormat {
            found: digest.format.clone(),
        });
    }
    if digest.log_id != store.log_id() {
        return Err(DigestError::ForeignLog {
            digest_log: digest.log_id.clone(),
            this_log: store.log_id().to_string(),
        });
    }
    if digest.key_id != key.key_id {
        return Err(DigestError::OtherKey {
            digest_key: digest.key_id.clone(),
            key: key.key_id.clone(),
        });
    }
    let bad_signature = || DigestError::BadSignature {
        key_id: key.key_id.clone(),
    };
    let signature: [u8; 64] = hex::decode(&digest.signature)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(bad_signature)?;
    verifying_key(&key.public_key)?
        .verify_strict(
            digest.signed_text().as_bytes(),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| bad_signature())?;

    let report = store.verify_to(Some(Position(digest.position)), progress)?;
    if let Some((position, reason)) = report.first_broken {
        return Err(DigestError::ChainBroken {
            position: position.get(),
            reason,
            checked: report.checked,
            digest_position: digest.position,
        });
    }
    if report.last_position.get() < digest.position {
        return Err(DigestError::Truncated {
            position: digest.position,
            last: report.last_position.get(),
        });
    }
    if report.last_hash != digest.hash {
        return Err(DigestError::HashMismatch {
            position: digest.position,
            found: report.last_hash,
            expected: digest.hash.clone(),
        });
    }
    if report.last_recorded_at != Some(digest.recorded_at) {
        return Err(DigestError::TimeMismatch {
            position: digest.position,
            found: report.last_recorded_at.unwrap_or(Timestamp::UNIX_EPOCH),
            expected: digest.recorded_at,
        });
    }
    Ok(DigestCheck {
        position: digest.position,
        checked: report.checked,
        last_position: store.last_position().get().max(digest.position),
    })
}

/// Where the chain first breaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BrokenLink {
    /// The first bad position.
    pub position: u64,
    /// Why it is bad.
    pub reason: String,
}

/// What `GET /v1/audit/verify` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChainReport {
    /// Events verified.
    pub checked: u64,
    /// The first broken link, if any.
    pub first_broken: Option<BrokenLink>,
    /// The last position verified (the bound asked for, or the last durable position).
    pub last_position: u64,
    /// The hash at `last_position` (64 zeros for an empty log).
    pub last_hash: String,
}

/// Auditing over the log: chain verification, digests and their keys.
#[derive(Clone, Debug)]
pub struct AuditService {
    store: EventStore,
    key: Option<Arc<DigestKey>>,
}

impl AuditService {
    /// The service over `store`; without a key it answers no digests.
    pub fn new(store: EventStore, key: Option<Arc<DigestKey>>) -> Self {
        Self { store, key }
    }

    fn key(&self) -> Result<&DigestKey, AppError> {
        self.key.as_deref().ok_or_else(|| {
            AppError::NotFound(
                "this service signs no digests: it was started without a digest key".into(),
            )
        })
    }

    /// Walks the chain from position 1 to `to_position` (default and at most: the last durable
    /// position). Blocking: call it off the async runtime.
    pub fn verify_chain(
        &self,
        principal: &Principal,
        to_position: Option<u64>,
    ) -> Result<ChainReport, AppError> {
        principal.require(Permission::Audit)?;
        let durable = self.store.last_position().get();
        let to = to_position.map_or(durable, |asked| asked.min(durable));
        let report = self.store.verify_to(Some(Position(to)), |_| {})?;
        metrics::counter!("planledger_audit_verifications_total").increment(1);
        Ok(ChainReport {
            checked: report.checked,
            last_position: match report.first_broken {
                Some(_) => report.checked,
                None => report.last_position.get(),
            },
            first_broken: report.first_broken.map(|(position, reason)| BrokenLink {
                position: position.get(),
                reason,
            }),
            last_hash: report.last_hash,
        })
    }

    /// A signed digest of the last durable position. Blocking (one read of the log).
    pub fn digest(&self, principal: &Principal) -> Result<SignedDigest, AppError> {
        principal.require(Permission::Audit)?;
        let key = self.key()?;
        let position = self.store.last_position();
        if position.get() == 0 {
            return Err(AppError::NotFound(
                "the log holds no events yet: a digest signs the last durable position, so ask again after the first command".into(),
            ));
        }
        let envelope = self
            .store
            .read_position(position)?
            .ok_or_else(|| AppError::Corrupt {
                position: position.get(),
                message: "the last durable position is missing from the log".into(),
            })?;
        let digest = key.sign(
            self.store.log_id(),
            position.get(),
            &envelope.hash,
            envelope.recorded_at,
        );
        metrics::counter!("planledger_audit_digests_issued_total").increment(1);
        tracing::info!(position = position.get(), key_id = %digest.key_id, actor = %principal.subject, "digest issued");
        Ok(digest)
    }

    /// A signed checkpoint of the Merkle tree of the last durable position (C2SP
    /// `tlog-checkpoint`, signed with the digest key). Blocking (O(log n) reads).
    pub fn checkpoint(&self, principal: &Principal) -> Result<String, AppError> {
        principal.require(Permission::Audit)?;
        let key = self.key()?;
        let view = self.store.view();
        let tree_size = view.tree_size();
        let checkpoint = Checkpoint {
            origin: origin(self.store.log_id()),
            tree_size,
            root: view.tree_root(tree_size).map_err(tree_range)?,
        };
        tracing::info!(tree_size, key_id = %key.public().key_id, actor = %principal.subject, "checkpoint issued");
        Ok(key.sign_checkpoint(&checkpoint))
    }

    /// The inclusion proof of the event at `position` in the tree of `tree_size` (default:
    /// the last durable position). Blocking (O(log n) reads).
    pub fn inclusion_proof(
        &self,
        principal: &Principal,
        position: u64,
        tree_size: Option<u64>,
    ) -> Result<InclusionProofBody, AppError> {
        principal.require(Permission::Audit)?;
        let view = self.store.view();
        let tree_size = tree_size.unwrap_or_else(|| view.tree_size());
        let proof = view
            .inclusion_proof(Position(position), tree_size)
            .map_err(tree_range)?;
        Ok(InclusionProofBody::of(origin(self.store.log_id()), &proof))
    }

    /// The consistency proof from the tree of `from` to the tree of `to` (default: the last
    /// durable position). Blocking (O(log n) reads).
    pub fn consistency_proof(
        &self,
        principal: &Principal,
        from: u64,
        to: Option<u64>,
    ) -> Result<ConsistencyProofBody, AppError> {
        principal.require(Permission::Audit)?;
        let view = self.store.view();
        let to = to.unwrap_or_else(|| view.tree_size());
        let proof = view.consistency_proof(from, to).map_err(tree_range)?;
        Ok(ConsistencyProofBody::of(
            origin(self.store.log_id()),
            &proof,
        ))
    }

    /// The inclusion proofs of events just read (their positions), in one tree: the last
    /// durable position now, which is at or after each of them. For `?proof=true` on event
    /// reads, whose callers were authorized to read the events. Blocking.
    pub fn proofs_of(
        &self,
        positions: impl IntoIterator<Item = u64>,
    ) -> Result<Vec<InclusionProofBody>, AppError> {
        let view = self.store.view();
        let tree_size = view.tree_size();
        let origin = origin(self.store.log_id());
        positions
            .into_iter()
            .map(|position| {
                view.inclusion_proof(Position(position), tree_size)
                    .map(|proof| InclusionProofBody::of(origin.clone(), &proof))
                    .map_err(tree_range)
            })
            .collect()
    }

    /// The public keys digests are signed with.
    pub fn keys(&self, principal: &Principal) -> Result<Vec<PublicKey>, AppError> {
        principal.require(Permission::Audit)?;
        Ok(vec![self.key()?.public().clone()])
    }
}

/// A tree size or position out of range is the caller's input at fault (400, naming it).
fn tree_range(error: StoreError) -> AppError {
    match error {
        StoreError::TreeRange { field, .. } => AppError::Invalid {
            field: field.to_string(),
            message: error.to_string(),
        },
        other => AppError::Store(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use planledger_store::StreamId;
    use planledger_store::{AppendMeta, AppendRequest, ExpectedVersion, NewEvent, StoreOptions};

    fn open(dir: &Path) -> EventStore {
        EventStore::open(dir.join("log"), StoreOptions::default()).expect("open the log")
    }

    async fn append(store: &EventStore, count: u64) {
        for n in 0..count {
            store
                .append(AppendRequest {
                    stream: StreamId::new("t/plan").expect("stream id"),
                    expected: ExpectedVersion::Any,
                    events: vec![NewEvent::from_json(
                        "Synthetic",
                        1,
                        Timestamp::UNIX_EPOCH,
                        &serde_json::json!({ "n": n }),
                    )],
                    meta: AppendMeta {
                        actor: "tester".into(),
                        ..AppendMeta::default()
                    },
                })
                .await
                .expect("append");
        }
    }

    fn auditor() -> Principal {
        Principal {
            subject: "audrey".into(),
            tenant: "t".into(),
            roles: vec![crate::Role::Auditor],
        }
    }

    fn digest_of(store: &EventStore, key: &DigestKey) -> SignedDigest {
        AuditService::new(
            store.clone(),
            Some(Arc::new(DigestKey::from_seed(seed(key)))),
        )
        .digest(&auditor())
        .expect("digest")
    }

    fn seed(key: &DigestKey) -> [u8; 32] {
        key.signing.to_bytes()
    }

    fn check(
        store: &EventStore,
        digest: &SignedDigest,
        key: &DigestKey,
    ) -> Result<DigestCheck, DigestError> {
        check_digest(store, digest, key.public(), |_| {})
    }

    #[tokio::test]
    async fn a_digest_verifies_now_and_after_more_appends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let key = DigestKey::random();
        append(&store, 5).await;
        let digest = digest_of(&store, &key);
        assert_eq!(digest.position, 5);
        assert_eq!(digest.log_id, store.log_id());
        let fifth = store
            .read_position(Position(5))
            .expect("read")
            .expect("there");
        assert_eq!(
            (digest.hash.as_str(), digest.recorded_at),
            (fifth.hash.as_str(), fifth.recorded_at)
        );
        assert_eq!(check(&store, &digest, &key).expect("verifies").checked, 5);

        append(&store, 3).await;
        let later = check(&store, &digest, &key).expect("still verifies after more appends");
        assert_eq!(
            (later.position, later.checked, later.last_position),
            (5, 5, 8)
        );
        // Through JSON, as an auditor keeps it.
        let kept: SignedDigest =
            serde_json::from_str(&serde_json::to_string(&digest).expect("json")).expect("parse");
        check(&store, &kept, &key).expect("the kept copy verifies");
    }

    #[test]
    fn the_signed_text_is_the_documented_one() {
        let at: Timestamp = "2026-12-04T18:00:00.5Z".parse().expect("time");
        assert_eq!(
            signed_text("0193-log", 42, &"ab".repeat(32), at),
            format!(
                "planledger-digest-v1\n0193-log\n42\n{}\n2026-12-04T18:00:00.5Z",
                "ab".repeat(32)
            )
        );
        let key = DigestKey::from_seed([7; 32]);
        let digest = key.sign("0193-log", 42, &"ab".repeat(32), at);
        let signature: [u8; 64] = hex::decode(&digest.signature)
            .expect("hex")
            .try_into()
            .expect("64 bytes");
        let public: [u8; 32] = hex::decode(&key.public().public_key)
            .expect("hex")
            .try_into()
            .expect("32 bytes");
        VerifyingKey::from_bytes(&public)
            .expect("key")
            .verify_strict(
                digest.signed_text().as_bytes(),
                &Signature::from_bytes(&signature),
            )
            .expect("an independent check of the documented bytes");
        assert_eq!(
            key.public().key_id,
            hex::encode(&Sha256::digest(public)[..8])
        );
        assert_eq!(key.public().key_id.len(), 16);
    }

    #[tokio::test]
    async fn a_tampered_byte_names_the_first_bad_position() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let key = DigestKey::random();
        append(&store, 6).await;
        let digest = digest_of(&store, &key);
        let mut bytes = store.read_raw(Position(3)).expect("raw").expect("there");
        let at = bytes
            .windows(5)
            .position(|w| w == b"\"n\":2")
            .expect("payload")
            + 4;
        bytes[at] = b'8';
        store
            .overwrite_raw_for_tests(Position(3), &bytes)
            .expect("tamper");
        match check(&store, &digest, &key) {
            Err(DigestError::ChainBroken {
                position: 3,
                checked: 2,
                digest_position: 6,
                reason,
            }) => {
                assert!(reason.contains("hash"), "{reason}");
            }
            other => panic!("expected a broken chain at 3, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_truncated_log_is_named_as_such() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let key = DigestKey::random();
        append(&store, 6).await;
        let digest = digest_of(&store, &key);
        store.truncate_for_tests(Position(4)).expect("truncate");
        let error = check(&store, &digest, &key).expect_err("truncated");
        assert!(
            matches!(
                error,
                DigestError::Truncated {
                    position: 6,
                    last: 4
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("truncated"), "{error}");
    }

    #[tokio::test]
    async fn a_digest_of_another_log_is_foreign() {
        let (one, two) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let (first, second) = (open(one.path()), open(two.path()));
        let key = DigestKey::random();
        append(&first, 3).await;
        append(&second, 3).await;
        let digest = digest_of(&first, &key);
        let error = check(&second, &digest, &key).expect_err("foreign");
        assert!(matches!(error, DigestError::ForeignLog { .. }), "{error:?}");
        assert!(error.to_string().contains("another log"), "{error}");

        // Claiming the other log's id breaks the signature.
        let mut relabelled = digest.clone();
        relabelled.log_id = second.log_id().to_string();
        let error = check(&second, &relabelled, &key).expect_err("forged");
        assert!(
            matches!(error, DigestError::BadSignature { .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn an_altered_digest_or_another_key_fails_on_the_signature() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let key = DigestKey::random();
        append(&store, 4).await;
        let digest = digest_of(&store, &key);

        let mut moved = digest.clone();
        moved.position = 3;
        moved.hash = store
            .read_position(Position(3))
            .expect("read")
            .expect("there")
            .hash;
        let error = check(&store, &moved, &key).expect_err("altered");
        assert!(
            matches!(error, DigestError::BadSignature { .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("signature does not verify"),
            "{error}"
        );

        let mut garbled = digest.clone();
        garbled.signature = "00".repeat(64);
        assert!(matches!(
            check(&store, &garbled, &key),
            Err(DigestError::BadSignature { .. })
        ));

        let other = DigestKey::random();
        let error = check(&store, &digest, &other).expect_err("other key");
        assert!(matches!(error, DigestError::OtherKey { .. }), "{error:?}");

        // A forger with another key who also names it is caught by the key id.
        let forged = other.sign(store.log_id(), 4, &digest.hash, digest.recorded_at);
        assert!(matches!(
            check(&store, &forged, &key),
            Err(DigestError::OtherKey { .. })
        ));
    }

    #[tokio::test]
    async fn a_recomputed_chain_ends_in_another_hash() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let key = DigestKey::random();
        append(&store, 3).await;
        let digest = digest_of(&store, &key);
        // A forger rewrites position 2 and recomputes every hash after it: the chain verifies,
        // but no longer ends in the signed hash.
        let mut prev = store
            .read_position(Position(1))
            .expect("read")
            .expect("there")
            .hash;
        for position in 2..=3 {
            let mut envelope = store
                .read_position(Position(position))
                .expect("read")
                .expect("there");
            if position == 2 {
                envelope.actor = "mallory".into();
            }
            envelope.prev_hash = prev;
            envelope.hash = envelope.compute_hash();
            prev = envelope.hash.clone();
            store
                .overwrite_raw_for_tests(
                    Position(position),
                    &serde_json::to_vec(&envelope).expect("json"),
                )
                .expect("rewrite");
        }
        store
            .verify(|_| {})
            .map(|r| assert_eq!(r.first_broken, None))
            .expect("chain holds");
        let error = check(&store, &digest, &key).expect_err("rewritten");
        assert!(
            matches!(error, DigestError::HashMismatch { position: 3, .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn the_key_is_created_once_with_owner_only_permissions() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(DigestKey::load(dir.path()).is_err());
        let created = DigestKey::load_or_create(dir.path()).expect("created");
        let again = DigestKey::load_or_create(dir.path()).expect("loaded");
        assert_eq!(created.public(), again.public());
        assert_eq!(
            DigestKey::load(dir.path()).expect("load").public(),
            created.public()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(DIGEST_KEY_FILE))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{created:?}").contains(&hex::encode(seed(&created))));
        let parsed = PublicKey::from_hex(&created.public().public_key).expect("parse");
        assert_eq!(&parsed, created.public());
        assert!(PublicKey::from_hex("abcd").is_err());
    }

    #[tokio::test]
    async fn verify_and_digests_are_for_auditors_and_admins() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let audit = AuditService::new(store.clone(), Some(Arc::new(DigestKey::random())));
        let planner = Principal {
            roles: vec![crate::Role::Planner],
            ..auditor()
        };
        let admin = Principal {
            roles: vec![crate::Role::Admin],
            ..auditor()
        };
        assert!(matches!(audit.digest(&planner), Err(AppError::Auth(_))));
        assert!(matches!(
            audit.verify_chain(&planner, None),
            Err(AppError::Auth(_))
        ));
        assert!(matches!(audit.keys(&planner), Err(AppError::Auth(_))));
        // An empty log has nothing to sign.
        assert!(matches!(audit.digest(&admin), Err(AppError::NotFound(_))));
        append(&store, 4).await;
        assert_eq!(audit.digest(&admin).expect("digest").position, 4);
        let report = audit.verify_chain(&admin, Some(2)).expect("bounded verify");
        let second = store
            .read_position(Position(2))
            .expect("read")
            .expect("there");
        assert_eq!(
            report,
            ChainReport {
                checked: 2,
                first_broken: None,
                last_position: 2,
                last_hash: second.hash
            }
        );
        // A bound past the end stops at the last durable position.
        assert_eq!(
            audit
                .verify_chain(&admin, Some(99))
                .expect("verify")
                .last_position,
            4
        );
    }
}
