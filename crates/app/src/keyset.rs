//! The public keys of an OpenID Connect provider (its JWKS), as the authenticator uses them.
//!
//! The key set is data here: the binary reads the JWKS (a file, or a URL over HTTP), hands the
//! bytes to [`KeySet::parse`] and [`KeySet::install`]s the result, periodically and whenever
//! [`KeySet::refresh_wanted`] fires (a token named a key id the set does not hold). This crate
//! never speaks HTTP itself.
//!
//! Only signature keys of two kinds are taken: RSA keys (verifying RS256 only) and OKP Ed25519
//! keys (verifying EdDSA only). Symmetric (`oct`) keys, elliptic-curve keys, encryption keys and
//! keys whose `alg` says something else are skipped, so a key set can never hand out a key for
//! another algorithm than its own.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Notify, watch};

/// How long a request waits for a refetch it asked for (unknown `kid`) before it is answered.
pub const REFETCH_WAIT: Duration = Duration::from_secs(5);

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// What kind of key a JWK is, and so the one algorithm it verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// An RSA public key: RS256 only.
    Rsa,
    /// An OKP Ed25519 public key: EdDSA only.
    Ed25519,
}

impl KeyKind {
    /// The one algorithm a key of this kind verifies.
    pub fn algorithm(self) -> Algorithm {
        match self {
            Self::Rsa => Algorithm::RS256,
            Self::Ed25519 => Algorithm::EdDSA,
        }
    }

    /// The kind's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rsa => "RSA",
            Self::Ed25519 => "Ed25519",
        }
    }
}

/// One usable key of the set.
#[derive(Clone)]
pub struct ProviderKey {
    /// Its `kid`, if the JWK has one.
    pub kid: Option<String>,
    /// Its kind.
    pub kind: KeyKind,
    decoding: DecodingKey,
}

impl std::fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl ProviderKey {
    /// The key to verify with.
    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

/// A parsed JWKS: the keys taken and why the others were skipped.
#[derive(Clone, Debug)]
pub struct ParsedKeys {
    /// The usable keys.
    pub keys: Vec<ProviderKey>,
    /// One line per skipped key: its kid (or index) and the reason.
    pub skipped: Vec<String>,
    /// The usable JWKs as given, to tell whether a refresh changed anything.
    fingerprint: Vec<Jwk>,
}

/// Why a JWKS could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    /// Not a JSON object with a `keys` array.
    #[error("the key set is not a JWKS (a JSON object with a \"keys\" array): {0}")]
    NotJwks(String),
    /// No key in it is usable.
    #[error(
        "the key set holds no usable signature key (RSA for RS256 or OKP Ed25519 for EdDSA){}",
        if .skipped.is_empty() { String::new() } else { format!("; skipped: {}", .skipped.join("; ")) }
    )]
    NoUsableKey {
        /// Why each key was skipped.
        skipped: Vec<String>,
    },
}

/// What a token's header asks of the key set.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// The key to verify with.
    Found(ProviderKey),
    /// No key has this kid.
    UnknownKid,
    /// The token has no kid and the set does not hold exactly one key of its kind.
    Ambiguous {
        /// Keys of the kind.
        candidates: usize,
    },
}

struct Current {
    keys: Vec<ProviderKey>,
    fingerprint: Vec<Jwk>,
}

impl Current {
    fn find(&self, kid: Option<&str>, kind: KeyKind) -> Lookup {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|key| key.kid.as_deref() == Some(kid))
                .map_or(Lookup::UnknownKid, |key| Lookup::Found(key.clone())),
            None => {
                let mut of_kind = self.keys.iter().filter(|key| key.kind == kind);
                match (of_kind.next(), of_kind.count()) {
                    (Some(key), 0) => Lookup::Found(key.clone()),
                    (first, rest) => Lookup::Ambiguous {
                        candidates: usize::from(first.is_some()) + rest,
                    },
                }
            }
        }
    }
}

/// The provider's current keys, shared by the authenticator (reading) and the binary's
/// refresher (installing).
pub struct KeySet {
    current: RwLock<Arc<Current>>,
    /// Bumped each time the installed keys change (remembered tokens of older keys are dropped).
    generation: std::sync::atomic::AtomicU64,
    /// Woken when a token named an unknown kid and a refetch is allowed.
    wanted: Notify,
    /// Counts finished refresh attempts (success or failure), for requests waiting on one.
    attempts: watch::Sender<u64>,
    /// When the last refetch was asked for by a request.
    last_demand: Mutex<Option<Instant>>,
    /// Least time between two refetches asked for by requests.
    min_refetch: Duration,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.current().keys)
            .field("min_refetch", &self.min_refetch)
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// An empty key set; requests may ask for a refetch at most once per `min_refetch`.
    pub fn new(min_refetch: Duration) -> Self {
        Self {
            current: RwLock::new(Arc::new(Current {
                keys: Vec::new(),
                fingerprint: Vec::new(),
            })),
            generation: std::sync::atomic::AtomicU64::new(0),
            wanted: Notify::new(),
            attempts: watch::Sender::new(0),
            last_demand: Mutex::new(None),
            min_refetch,
        }
    }

    /// Parses a JWKS document, keeping the RSA and Ed25519 signature keys.
    pub fn parse(json: &[u8]) -> Result<ParsedKeys, KeySetError> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document =
            serde_json::from_slice(json).map_err(|e| KeySetError::NotJwks(e.to_string()))?;
        let mut parsed = ParsedKeys {
            keys: Vec::new(),
            skipped: Vec::new(),
            fingerprint: Vec::new(),
        };
        let mut seen: HashSet<String> = HashSet::new();
        for (index, value) in document.keys.into_iter().enumerate() {
            let label = value
                .get("kid")
                .and_then(serde_json::Value::as_str)
                .map_or_else(|| format!("key #{index}"), |kid| format!("kid {kid:?}"));
            let jwk: Jwk = match serde_json::from_value(value) {
                Ok(jwk) => jwk,
                Err(e) => {
                    parsed
                        .skipped
                        .push(format!("{label}: not a supported JWK ({e})"));
                    continue;
                }
            };
            match usable(&jwk) {
                Ok(key) => {
                    if let Some(kid) = &key.kid
                        && !seen.insert(kid.clone())
                    {
                        parsed
                            .skipped
                            .push(format!("{label}: the kid appears twice; the first is used"));
                        continue;
                    }
                    parsed.keys.push(key);
                    parsed.fingerprint.push(jwk);
                }
                Err(reason) => parsed.skipped.push(format!("{label}: {reason}")),
            }
        }
        if parsed.keys.is_empty() {
            return Err(KeySetError::NoUsableKey {
                skipped: parsed.skipped,
            });
        }
        Ok(parsed)
    }

    /// Makes `parsed` the current keys; `true` if they differ from the keys before.
    pub fn install(&self, parsed: ParsedKeys) -> bool {
        let changed = self.current().fingerprint != parsed.fingerprint;
        if changed {
            *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(Current {
                keys: parsed.keys,
                fingerprint: parsed.fingerprint,
            });
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        changed
    }

    /// Tells requests waiting for a refetch that an attempt finished (call after every fetch,
    /// successful or not).
    pub fn attempted(&self) {
        self.attempts.send_modify(|n| *n += 1);
    }

    /// Resolves when a request asked for a refetch (the refresher fetches at once then).
    pub async fn refresh_wanted(&self) {
        self.wanted.notified().await;
    }

    /// The kids of the current keys (`None` for a key without one).
    pub fn kids(&self) -> Vec<Option<String>> {
        self.current().keys.iter().map(|k| k.kid.clone()).collect()
    }

    /// Changes whenever the installed keys change.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Asks the refresher for a refetch and waits (at most [`REFETCH_WAIT`]) until it has
    /// tried; `false` without asking when a refetch was asked for less than `min_refetch` ago.
    pub(crate) async fn refetch(&self) -> bool {
        {
            let mut last = self
                .last_demand
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if last.is_some_and(|at| now.duration_since(at) < self.min_refetch) {
                metrics::counter!("planledger_jwks_refetches_refused_total").increment(1);
                return false;
            }
            *last = Some(now);
        }
        let mut attempts = self.attempts.subscribe();
        attempts.borrow_and_update();
        self.wanted.notify_one();
        tokio::time::timeout(REFETCH_WAIT, attempts.changed())
            .await
            .is_ok_and(|changed| changed.is_ok())
    }

    /// The key a token's `kid` (or, without one, its algorithm's kind) names.
    pub(crate) fn lookup(&self, kid: Option<&str>, kind: KeyKind) -> Lookup {
        self.current().find(kid, kind)
    }

    fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The key a JWK gives, or why it is not used.
fn usable(jwk: &Jwk) -> Result<ProviderKey, String> {
    if let Some(use_) = &jwk.common.public_key_use
        && *use_ != PublicKeyUse::Signature
    {
        return Err("not a signature key (\"use\" is not \"sig\")".into());
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let bits = modulus_bits(&rsa.n)?;
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "an RSA key of {bits} bits (at least {MIN_RSA_BITS} are needed)"
                ));
            }
            KeyKind::Rsa
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            KeyKind::Ed25519
        }
        AlgorithmParameters::OctetKeyPair(_) => {
            return Err("an OKP key on another curve than Ed25519".into());
        }
        AlgorithmParameters::EllipticCurve(_) => {
            return Err("an EC key (ES256/ES384 are not accepted)".into());
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err(
                "a symmetric (oct) key: shared secrets are never taken from a key set".into(),
            );
        }
    };
    let expected = match kind {
        KeyKind::Rsa => KeyAlgorithm::RS256,
        KeyKind::Ed25519 => KeyAlgorithm::EdDSA,
    };
    if let Some(alg) = jwk.common.key_algorithm
        && alg != expected
    {
        return Err(format!(
            "its \"alg\" is {alg}, but only {expected} is accepted for {} keys",
            kind.name()
        ));
    }
    let decoding = DecodingKey::from_jwk(jwk).map_err(|e| format!("unreadable key ({e})"))?;
    if kind == KeyKind::Ed25519 && decoding.as_bytes().len() != 32 {
        return Err("an Ed25519 key whose \"x\" is not 32 bytes".into());
    }
    Ok(ProviderKey {
        kid: jwk.common.key_id.clone(),
        kind,
        decoding,
    })
}

/// The size of a base64url-encoded RSA modulus, in bits.
fn modulus_bits(n: &str) -> Result<usize, String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(n.trim_end_matches('='))
        .map_err(|e| format!("its modulus \"n\" is not base64url ({e})"))?;
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let significant = &bytes[first..];
    Ok(match significant.first() {
        Some(top) => significant.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    })
}
