//! Cosignatures of checkpoints: C2SP `tlog-cosignature`, the Ed25519 `cosignature/v1` type, as
//! a witness adds them to a checkpoint it checked.
//!
//! A cosignature is one more signed-note signature line on the checkpoint,
//! `— <witness name> base64(key id || timestamp || signature)`: the key id is the first four
//! bytes of `SHA-256(name || 0x0A || 0x04 || public key)`, the timestamp eight bytes big-endian
//! (POSIX seconds), and the Ed25519 signature covers `cosignature/v1\ntime <timestamp>\n`
//! followed by the checkpoint's note text (every line up to the blank one, final newline
//! included). It states: as of that time, this is the largest tree of this log the witness has
//! seen, and it is consistent with every smaller one the witness saw.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::checkpoint::{CheckError, SIGNATURE_MARK, split_note};

/// The signed-note signature type of an Ed25519 `cosignature/v1`.
pub const COSIGNATURE_TYPE: u8 = 0x04;
/// The first line of the signed message (domain separation).
pub const HEADER: &str = "cosignature/v1";
/// Name of the witness's key file in its state directory (the seed in hex).
pub const WITNESS_KEY_FILE: &str = "witness.key";

/// The key id of a witness key under its name.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([0x0A, COSIGNATURE_TYPE])
        .chain_update(public_key)
        .finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The bytes a cosignature of `note_text` made at `timestamp` signs.
pub fn signed_message(timestamp: u64, note_text: &str) -> String {
    format!("{HEADER}\ntime {timestamp}\n{note_text}")
}

/// What can go wrong with a witness key.
#[derive(Debug, thiserror::Error)]
pub enum WitnessKeyError {
    /// The name is not usable as a signed-note key name.
    #[error(
        "witness name {0:?} is not a key name: it must be non-empty, without whitespace or '+' (e.g. witness.example.com/w1)"
    )]
    Name(String),
    /// The key file could not be read or created.
    #[error("witness key {path}: {message}")]
    File {
        /// The key file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// A witness's Ed25519 key and the name it cosigns under. `Debug` shows only the key id.
pub struct WitnessKey {
    name: String,
    signing: SigningKey,
}

impl std::fmt::Debug for WitnessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WitnessKey {{ name: {}, key_id: {}, secret: <redacted> }}",
            self.name,
            hex::encode(self.key_id())
        )
    }
}

impl WitnessKey {
    /// A key from its 32-byte seed, under `name`.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, WitnessKeyError> {
        // Signed-note key names hold no whitespace of any kind and no '+'.
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
            return Err(WitnessKeyError::Name(name.to_string()));
        }
        Ok(Self {
            name: name.to_string(),
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// Loads `<dir>/witness.key`, creating a random one with mode 0600 the first time; the
    /// second value says whether it was created.
    pub fn load_or_create(dir: &Path, name: &str) -> Result<(Self, bool), WitnessKeyError> {
        let path = dir.join(WITNESS_KEY_FILE);
        let file_error = |message: String| WitnessKeyError::File {
            path: path.display().to_string(),
            message,
        };
        let created = !path.exists();
        if created {
            let seed: [u8; 32] = rand::random();
            crate::key_file::create_secret_file(&path, hex::encode(seed).as_bytes())
                .map_err(|e| file_error(e.to_string()))?;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| file_error(e.to_string()))?;
        let seed: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| file_error("not 64 hex digits (a 32-byte seed)".into()))?;
        Ok((Self::from_seed(name, seed)?, created))
    }

    /// The name cosignatures are made under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 32 public key bytes.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The key id of this key under its name.
    pub fn key_id(&self) -> [u8; 4] {
        key_id(&self.name, &self.public_key())
    }

    /// The signed-note verifier key: `<name>+<key id hex>+base64(0x04 || public key)`.
    pub fn verifier_key(&self) -> String {
        let mut typed = vec![COSIGNATURE_TYPE];
        typed.extend_from_slice(&self.public_key());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id()),
            STANDARD.encode(typed)
        )
    }

    /// The signed checkpoint `signed_note` with this witness's cosignature, made at
    /// `timestamp`, appended as its last signature line.
    pub fn cosign(&self, signed_note: &str, timestamp: u64) -> Result<String, CheckError> {
        let (note, _) = split_note(signed_note).ok_or_else(|| CheckError::MalformedCheckpoint {
            file: "the checkpoint to cosign".into(),
            what: "no blank line between the note text and its signatures".into(),
        })?;
        let signature = self
            .signing
            .sign(signed_message(timestamp, note).as_bytes());
        let mut bytes = Vec::with_capacity(76);
        bytes.extend_from_slice(&self.key_id());
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&signature.to_bytes());
        let mut cosigned = signed_note.to_string();
        if !cosigned.ends_with('\n') {
            cosigned.push('\n');
        }
        cosigned.push_str(&format!(
            "{SIGNATURE_MARK}{} {}\n",
            self.name,
            STANDARD.encode(bytes)
        ));
        Ok(cosigned)
    }
}

/// A witness's signed-note verifier key, `<name>+<key id hex>+base64(0x04 || public key)` (what
/// `planledger audit witness` prints when it creates its key): the name and public key its
/// cosignatures are checked with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    /// The name the witness cosigns under.
    pub name: String,
    /// Its Ed25519 public key.
    pub public_key: [u8; 32],
}

/// Why a verifier key could not be read; each names the part that is wrong.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifierKeyError {
    /// Not three parts separated by '+'.
    #[error(
        "{0:?} is not a witness verifier key: expected <name>+<key id, 8 hex digits>+<base64 key>, as the witness printed it when it created its key"
    )]
    Shape(String),
    /// The key part is not base64 of 33 bytes starting with the cosignature type.
    #[error(
        "the key part of the verifier key {0:?} is not base64 of 0x04 followed by a 32-byte Ed25519 public key (a cosignature/v1 key)"
    )]
    Key(String),
    /// The key id does not belong to the name and key.
    #[error(
        "the verifier key {text:?} says key id {given}, but its name and key give {computed}: the key was altered or mistyped"
    )]
    KeyId {
        /// The verifier key.
        text: String,
        /// The key id it carries, hex.
        given: String,
        /// The key id its name and key give, hex.
        computed: String,
    },
}

impl VerifierKey {
    /// Reads a verifier key, checking its type byte and its key id.
    pub fn parse(text: &str) -> Result<Self, VerifierKeyError> {
        let text = text.trim();
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(VerifierKeyError::Shape(text.to_string()));
        };
        let given: [u8; 4] = hex::decode(id)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| VerifierKeyError::Shape(text.to_string()))?;
        if name.is_empty() || name.chars().any(char::is_whitespace) {
            return Err(VerifierKeyError::Shape(text.to_string()));
        }
        let typed = STANDARD
            .decode(key)
            .map_err(|_| VerifierKeyError::Key(text.to_string()))?;
        let public_key: [u8; 32] = match typed.split_first() {
            Some((&COSIGNATURE_TYPE, rest)) => rest
                .try_into()
                .map_err(|_| VerifierKeyError::Key(text.to_string()))?,
            _ => return Err(VerifierKeyError::Key(text.to_string())),
        };
        let computed = key_id(name, &public_key);
        if computed != given {
            return Err(VerifierKeyError::KeyId {
                text: text.to_string(),
                given: hex::encode(given),
                computed: hex::encode(computed),
            });
        }
        Ok(Self {
            name: name.to_string(),
            public_key,
        })
    }
}

/// Checks the cosignature of the witness `name` with `public_key` on a checkpoint (`file` names
/// it in errors); answers the cosignature's timestamp.
pub fn check_cosignature(
    file: &str,
    text: &str,
    name: &str,
    public_key: &[u8; 32],
) -> Result<u64, CheckError> {
    let (note, signatures) = split_note(text).ok_or_else(|| CheckError::MalformedCheckpoint {
        file: file.to_string(),
        what: "no blank line between the note text and its signatures".into(),
    })?;
    let wanted_id = key_id(name, public_key);
    let bytes = signatures
        .lines()
        .filter_map(|line| line.strip_prefix(SIGNATURE_MARK))
        .filter_map(|line| line.split_once(' '))
        .filter(|(line_name, _)| *line_name == name)
        .filter_map(|(_, signature)| STANDARD.decode(signature.trim_end()).ok())
        .find(|bytes| bytes.len() == 76 && bytes[..4] == wanted_id)
        .ok_or_else(|| CheckError::NotCosigned {
            file: file.to_string(),
            name: name.to_string(),
            key_id: hex::encode(wanted_id),
        })?;
    let timestamp = u64::from_be_bytes(bytes[4..12].try_into().expect("8 bytes of 76"));
    let signature: [u8; 64] = bytes[12..].try_into().expect("64 bytes of 76");
    let bad = || CheckError::BadCosignature {
        file: file.to_string(),
        name: name.to_string(),
        key_id: hex::encode(wanted_id),
    };
    VerifyingKey::from_bytes(public_key)
        .map_err(|_| bad())?
        .verify_strict(
            signed_message(timestamp, note).as_bytes(),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| bad())?;
    Ok(timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DigestKey;
    use crate::checkpoint::{Checkpoint, open_checkpoint, origin};

    fn signed_checkpoint() -> (DigestKey, String) {
        let log = DigestKey::random();
        let note = log.sign_checkpoint(&Checkpoint {
            origin: origin("01234567-89ab-7def-8123-456789abcdef"),
            tree_size: 7,
            root: [3; 32],
        });
        (log, note)
    }

    #[test]
    fn a_verifier_key_reads_back_and_a_changed_one_is_refused() {
        let key = WitnessKey::from_seed("witness.example.com/w1", [9; 32]).expect("name");
        let text = key.verifier_key();
        assert_eq!(
            VerifierKey::parse(&text),
            Ok(VerifierKey {
                name: "witness.example.com/w1".into(),
                public_key: key.public_key(),
            })
        );
        let renamed = text.replacen("w1", "w2", 1);
        assert!(matches!(
            VerifierKey::parse(&renamed),
            Err(VerifierKeyError::KeyId { .. })
        ));
        assert!(matches!(
            VerifierKey::parse("witness.example.com/w1"),
            Err(VerifierKeyError::Shape(_))
        ));
        let (head, _) = text.rsplit_once('+').expect("three parts");
        assert!(matches!(
            VerifierKey::parse(&format!("{head}+AAAA")),
            Err(VerifierKeyError::Key(_))
        ));
    }

    #[test]
    fn the_key_id_hashes_the_name_a_newline_the_type_0x04_and_the_key() {
        let key = WitnessKey::from_seed("witness.example.com/w1", [9; 32]).expect("name");
        let mut preimage = b"witness.example.com/w1\n".to_vec();
        preimage.push(0x04);
        preimage.extend_from_slice(&key.public_key());
        assert_eq!(key.key_id(), Sha256::digest(&preimage)[..4]);
        // Not the signed-note Ed25519 (0x01) id of the same key and name.
        assert_ne!(
            key.key_id(),
            crate::checkpoint::key_id("witness.example.com/w1", &key.public_key())
        );
        let vkey = key.verifier_key();
        let parts: Vec<&str> = vkey.split('+').collect();
        assert_eq!(parts[0], "witness.example.com/w1");
        assert_eq!(parts[1], hex::encode(key.key_id()));
        let typed = STANDARD.decode(parts[2]).expect("base64");
        assert_eq!(typed[0], COSIGNATURE_TYPE);
        assert_eq!(typed[1..], key.public_key());
    }

    #[test]
    fn a_cosignature_round_trips_and_keeps_the_log_signature() {
        let (log, note) = signed_checkpoint();
        let witness = WitnessKey::from_seed("witness.example.com/w1", [9; 32]).expect("name");
        let cosigned = witness.cosign(&note, 1_679_315_147).expect("cosigned");
        assert!(cosigned.starts_with(&note), "{cosigned}");
        assert_eq!(cosigned.lines().count(), note.lines().count() + 1);
        let line = cosigned.lines().last().expect("a line");
        assert!(
            line.starts_with("\u{2014} witness.example.com/w1 "),
            "{line}"
        );
        let bytes = STANDARD
            .decode(line.rsplit(' ').next().expect("base64"))
            .expect("base64");
        assert_eq!(bytes.len(), 4 + 8 + 64);
        assert_eq!(bytes[..4], witness.key_id());
        assert_eq!(bytes[4..12], 1_679_315_147u64.to_be_bytes());
        // The signature is over the cosignature/v1 message, checkable with the plain key.
        let (text, _) = split_note(&note).expect("note");
        let message = signed_message(1_679_315_147, text);
        assert!(message.starts_with("cosignature/v1\ntime 1679315147\nplanledger/"));
        VerifyingKey::from_bytes(&witness.public_key())
            .expect("key")
            .verify_strict(
                message.as_bytes(),
                &Signature::from_bytes(&bytes[12..].try_into().expect("64")),
            )
            .expect("verifies");
        assert_eq!(
            check_cosignature("cp", &cosigned, witness.name(), &witness.public_key())
                .expect("checks"),
            1_679_315_147
        );
        // The log's own signature still verifies on the cosigned checkpoint.
        open_checkpoint("cp", &cosigned, log.public()).expect("log signature");
    }

    #[test]
    fn a_cosignature_fails_on_another_text_time_name_or_key() {
        let (_, note) = signed_checkpoint();
        let witness = WitnessKey::from_seed("w1", [9; 32]).expect("name");
        let cosigned = witness.cosign(&note, 100).expect("cosigned");
        let changed = cosigned.replacen("\n7\n", "\n8\n", 1);
        assert!(matches!(
            check_cosignature("cp", &changed, "w1", &witness.public_key()),
            Err(CheckError::BadCosignature { .. })
        ));
        // Another timestamp under the same signature.
        let line = cosigned.lines().last().expect("line");
        let mut bytes = STANDARD
            .decode(line.rsplit(' ').next().expect("b64"))
            .expect("b64");
        bytes[11] ^= 1;
        let retimed = cosigned.replace(line, &format!("\u{2014} w1 {}", STANDARD.encode(bytes)));
        assert!(matches!(
            check_cosignature("cp", &retimed, "w1", &witness.public_key()),
            Err(CheckError::BadCosignature { .. })
        ));
        assert!(matches!(
            check_cosignature("cp", &cosigned, "w2", &witness.public_key()),
            Err(CheckError::NotCosigned { .. })
        ));
        let other = WitnessKey::from_seed("w1", [8; 32]).expect("name");
        assert!(matches!(
            check_cosignature("cp", &cosigned, "w1", &other.public_key()),
            Err(CheckError::NotCosigned { .. })
        ));
    }

    #[test]
    fn a_witness_key_is_created_once_and_names_are_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let (first, created) = WitnessKey::load_or_create(dir.path(), "w1").expect("created");
        assert!(created);
        let (again, created) = WitnessKey::load_or_create(dir.path(), "w1").expect("loaded");
        assert!(!created);
        assert_eq!(first.public_key(), again.public_key());
        assert!(matches!(
            WitnessKey::from_seed("a b", [1; 32]),
            Err(WitnessKeyError::Name(_))
        ));
        for name in ["a+b", "a\tb", "a\rb", ""] {
            assert!(
                matches!(
                    WitnessKey::from_seed(name, [1; 32]),
                    Err(WitnessKeyError::Name(_))
                ),
                "{name:?} is refused"
            );
        }
    }
}
