//! Authentication and authorization: JWT bearer tokens and the role matrix.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use planledger_domain::Command;

use crate::keyset::{KeyKind, KeySet, Lookup};

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;

/// A role a token can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads plans and read models.
    Viewer,
    /// Records check-ins and completes or reopens steps.
    Contributor,
    /// Runs every plan command.
    Planner,
    /// Reads the event history and verifies the chain.
    Auditor,
    /// Everything, including projection rebuilds.
    Admin,
}

impl Role {
    /// Parses a role name (`viewer`, `contributor`, `planner`, `auditor`, `admin`).
    pub fn parse(name: &str) -> Result<Self, AuthError> {
        match name.trim() {
            "viewer" => Ok(Self::Viewer),
            "contributor" => Ok(Self::Contributor),
            "planner" => Ok(Self::Planner),
            "auditor" => Ok(Self::Auditor),
            "admin" => Ok(Self::Admin),
            other => Err(AuthError::UnknownRole(other.to_string())),
        }
    }
}

/// What a token says about its bearer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The subject: recorded as the actor of every event it causes.
    pub sub: String,
    /// The tenant whose plans it may see.
    pub tenant: String,
    /// Its roles.
    pub roles: Vec<Role>,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expires at (seconds since the epoch).
    pub exp: i64,
}

/// The authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Subject (the actor).
    pub subject: String,
    /// Tenant.
    pub tenant: String,
    /// Roles.
    pub roles: Vec<Role>,
}

/// What an action needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Read plan state and read models.
    Read,
    /// Record check-ins, complete or reopen steps.
    Contribute,
    /// Any plan command.
    Plan,
    /// Read event history, verify the chain.
    Audit,
    /// Operate the service (rebuild projections).
    Admin,
}

impl Permission {
    /// The permission a command needs.
    pub fn for_command(command: &Command) -> Self {
        match command {
            Command::RecordCheckIn(_) | Command::CompleteStep(_) | Command::ReopenStep(_) => {
                Self::Contribute
            }
            _ => Self::Plan,
        }
    }

    /// Roles that grant it, for error messages.
    pub fn roles(self) -> &'static str {
        match self {
            Self::Read => "viewer, contributor, planner, auditor or admin",
            Self::Contribute => "contributor, planner or admin",
            Self::Plan => "planner or admin",
            Self::Audit => "auditor or admin",
            Self::Admin => "admin",
        }
    }
}

impl Principal {
    /// Whether this caller holds the permission.
    pub fn can(&self, permission: Permission) -> bool {
        self.roles.iter().any(|role| {
            matches!(
                (role, permission),
                (Role::Admin, _)
                    | (_, Permission::Read)
                    | (Role::Planner, Permission::Plan | Permission::Contribute)
                    | (Role::Contributor, Permission::Contribute)
                    | (Role::Auditor, Permission::Audit)
            )
        })
    }

    /// `Ok` if the caller holds the permission, else [`AuthError::Forbidden`].
    pub fn require(&self, permission: Permission) -> Result<(), AuthError> {
        if self.can(permission) {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                needed: permission.roles(),
            })
        }
    }
}

/// Authentication and authorization failures.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No bearer token was presented.
    #[error(
        "missing bearer token: send 'Authorization: Bearer <token>' (mint one with 'planledger token issue')"
    )]
    MissingToken,
    /// The token is not a well-formed JWT.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// `alg: none`.
    #[error("unsigned tokens (alg \"none\") are never accepted")]
    Unsigned,
    /// An algorithm this service never verifies.
    #[error(
        "the token's algorithm {alg:?} is not accepted: tokens are HS256 (minted by 'planledger token issue'), RS256 or EdDSA (from the identity provider)"
    )]
    UnsupportedAlgorithm {
        /// The token's `alg`.
        alg: String,
    },
    /// The token's algorithm is not the one of the key it names (algorithm confusion).
    #[error(
        "the token is signed with {alg} but names the key {kid:?}, an {} key that verifies {:?} only: a key is never used with another algorithm",
        .kind.name(), .kind.algorithm()
    )]
    AlgorithmMismatch {
        /// The token's `alg`.
        alg: String,
        /// The key it names.
        kid: String,
        /// That key's kind.
        kind: KeyKind,
    },
    /// An RS256 or EdDSA token, and no identity provider is configured.
    #[error(
        "{alg} tokens come from an identity provider, and none is configured here (--jwt-jwks-file or --jwt-jwks-url)"
    )]
    NoProvider {
        /// The token's `alg`.
        alg: String,
    },
    /// The token's `kid` is not in the provider's key set.
    #[error(
        "the token's key id (kid) {kid:?} is not in the identity provider's key set: the key was retired or is not published yet; get a new token"
    )]
    UnknownKey {
        /// The token's `kid`.
        kid: String,
    },
    /// The token has no `kid` and the key set has several keys (or none) of its kind.
    #[error(
        "the token has no key id (kid), and the identity provider's key set holds {candidates} {alg} keys: the token must name its key"
    )]
    NoKeyId {
        /// The token's `alg`.
        alg: String,
        /// Keys of that algorithm in the set.
        candidates: usize,
    },
    /// The signature does not verify.
    #[error(
        "the token's signature does not verify with {signer}: it was altered or signed with another key"
    )]
    BadSignature {
        /// Which key was tried.
        signer: String,
    },
    /// `exp` is past.
    #[error(
        "the token has expired (its exp is in the past, beyond {LEEWAY_SECONDS} s of leeway): get a new token"
    )]
    Expired,
    /// `nbf` is ahead.
    #[error(
        "the token is not valid yet (its nbf is in the future, beyond {LEEWAY_SECONDS} s of leeway): check the clocks of the issuer and of this server"
    )]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error(
        "the token's issuer (iss) is not {expected:?}, the issuer this service trusts (--jwt-issuer)"
    )]
    WrongIssuer {
        /// The configured issuer.
        expected: String,
    },
    /// `aud` does not name the configured audience.
    #[error(
        "the token's audience (aud) does not include {expected:?}, this service's audience (--jwt-audience)"
    )]
    WrongAudience {
        /// The configured audience.
        expected: String,
    },
    /// A claim this service requires is missing.
    #[error("the token has no {claim} claim, which this service requires")]
    MissingClaim {
        /// The claim.
        claim: String,
    },
    /// The claims are not what a bearer needs.
    #[error("the token's claims are not usable (planledger needs sub, tenant, roles and exp): {0}")]
    Claims(String),
    /// The token is valid but lacks a role.
    #[error("this action needs the role {needed}")]
    Forbidden {
        /// Roles that would allow it.
        needed: &'static str,
    },
    /// A role name is unknown.
    #[error("unknown role {0:?}: use viewer, contributor, planner, auditor or admin")]
    UnknownRole(String),
    /// A claim is malformed.
    #[error("invalid claim {field}: {message}")]
    InvalidClaim {
        /// Which claim.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The signing key could not be read or created.
    #[error("signing key {path}: {message}")]
    Key {
        /// The key file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// Mints and verifies HS256 tokens with one secret, and verifies RS256 and EdDSA tokens of an
/// OpenID Connect provider when one is configured ([`Authenticator::with_provider`]). Cheap to
/// clone (handlers get a copy of the state per request): the keys and validation rules are
/// shared.
///
/// A token's `alg` decides the key it is verified with, and each key verifies one algorithm
/// only: HS256 only with the service's secret, RS256 only with an RSA key of the provider's key
/// set, EdDSA only with an Ed25519 key of it; `none` and every other algorithm are refused. An
/// HS256 token naming a provider key (`kid`) is refused as algorithm confusion.
#[derive(Clone)]
pub struct Authenticator {
    keys: Arc<Keys>,
    provider: Option<Arc<Provider>>,
}

struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Tokens already verified, by their exact text, with the bearer, the expiry and, for a
    /// provider's token, the key set's generation it was verified against: a client sends the
    /// same token with every request, and checking its signature and claims again cost more
    /// than the rest of authentication. Only an identical token (signature included) hits,
    /// only before its `exp`, and a provider's token only while the key set is unchanged.
    verified: std::sync::Mutex<HashMap<String, Remembered>>,
}

#[derive(Clone)]
struct Remembered {
    principal: Principal,
    exp: i64,
    generation: Option<u64>,
}

/// An OpenID Connect provider whose tokens are accepted besides the service's own.
#[derive(Clone, Debug)]
pub struct IdentityProvider {
    /// Its public keys (kept current by the caller).
    pub keys: Arc<KeySet>,
    /// The `iss` its tokens must carry; `None` accepts any (not for production).
    pub issuer: Option<String>,
    /// The `aud` its tokens must include; `None` accepts any (not for production).
    pub audience: Option<String>,
}

struct Provider {
    keys: Arc<KeySet>,
    issuer: Option<String>,
    audience: Option<String>,
    rs256: Validation,
    eddsa: Validation,
}

impl Provider {
    fn new(provider: IdentityProvider) -> Self {
        let validation = |alg| {
            let mut validation = Validation::new(alg);
            validation.leeway = LEEWAY_SECONDS;
            validation.validate_nbf = true;
            let mut required = vec!["exp", "sub"];
            if let Some(issuer) = &provider.issuer {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            match &provider.audience {
                Some(audience) => {
                    validation.set_audience(&[audience]);
                    required.push("aud");
                }
                None => validation.validate_aud = false,
            }
            validation.set_required_spec_claims(&required);
            validation
        };
        Self {
            rs256: validation(Algorithm::RS256),
            eddsa: validation(Algorithm::EdDSA),
            keys: provider.keys,
            issuer: provider.issuer,
            audience: provider.audience,
        }
    }

    fn validation(&self, kind: KeyKind) -> &Validation {
        match kind {
            KeyKind::Rsa => &self.rs256,
            KeyKind::Ed25519 => &self.eddsa,
        }
    }
}

/// Verified tokens remembered at most; the memory is forgotten all at once when it is full.
const VERIFIED_TOKENS_MAX: usize = 10_000;

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("secret", &"<redacted>")
            .field(
                "provider",
                &self
                    .provider
                    .as_ref()
                    .map(|p| (&p.issuer, &p.audience, p.keys.kids())),
            )
            .finish()
    }
}

/// Name of the signing key file kept in the data directory.
pub const KEY_FILE: &str = "jwt-signing.key";

/// What a bearer token's claims must hold.
#[derive(Deserialize)]
struct Bearer {
    sub: String,
    tenant: String,
    roles: Vec<Role>,
    exp: i64,
}

/// The parts of a JOSE header the key choice depends on, read before anything is verified.
#[derive(Deserialize)]
struct TokenHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl TokenHeader {
    fn peek(token: &str) -> Result<Self, AuthError> {
        use base64::Engine;
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::InvalidToken(
                "a JWT has three base64url parts separated by dots".into(),
            ));
        };
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|e| AuthError::InvalidToken(format!("its header is not base64url: {e}")))?;
        serde_json::from_slice(&json).map_err(|e| {
            AuthError::InvalidToken(format!("its header is not a JOSE header with alg: {e}"))
        })
    }
}

impl Authenticator {
    /// An authenticator for the given secret (at least 32 bytes).
    pub fn from_secret(secret: &[u8]) -> Result<Self, AuthError> {
        if secret.len() < 32 {
            return Err(AuthError::InvalidClaim {
                field: "secret",
                message: "the signing secret must be at least 32 bytes".into(),
            });
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self {
            keys: Arc::new(Keys {
                encoding: EncodingKey::from_secret(secret),
                decoding: DecodingKey::from_secret(secret),
                validation,
                verified: std::sync::Mutex::new(HashMap::new()),
            }),
            provider: None,
        })
    }

    /// Also accepts the RS256 and EdDSA tokens of `provider` (its keys, issuer and audience).
    pub fn with_provider(mut self, provider: IdentityProvider) -> Self {
        self.provider = Some(Arc::new(Provider::new(provider)));
        self
    }

    /// Loads the signing key from `<data_dir>/jwt-signing.key`, creating a random one (mode 0600)
    /// the first time.
    pub fn from_data_dir(data_dir: &Path) -> Result<Self, AuthError> {
        let path = data_dir.join(KEY_FILE);
        let key_error = |message: String| AuthError::Key {
            path: path.display().to_string(),
            message,
        };
        if !path.exists() {
            let secret: [u8; 32] = rand::random();
            crate::key_file::create_secret_file(&path, hex::encode(secret).as_bytes())
                .map_err(|e| key_error(e.to_string()))?;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| key_error(e.to_string()))?;
        let secret = hex::decode(text.trim())
            .map_err(|e| key_error(format!("not hex: {e}; delete it to make a new one")))?;
        Self::from_secret(&secret)
    }

    /// Mints a token for `sub` in `tenant` with `roles`, valid for `ttl_seconds` from `now`.
    pub fn issue(
        &self,
        sub: &str,
        tenant: &str,
        roles: Vec<Role>,
        now: jiff::Timestamp,
        ttl_seconds: i64,
    ) -> Result<String, AuthError> {
        if sub.trim().is_empty() {
            return Err(AuthError::InvalidClaim {
                field: "sub",
                message: "must not be empty".into(),
            });
        }
        planledger_domain::PlanId::new(tenant).map_err(|e| AuthError::InvalidClaim {
            field: "tenant",
            message: e.to_string(),
        })?;
        if roles.is_empty() {
            return Err(AuthError::InvalidClaim {
                field: "roles",
                message: "name at least one role".into(),
            });
        }
        let claims = Claims {
            sub: sub.to_string(),
            tenant: tenant.to_string(),
            roles,
            iat: now.as_second(),
            exp: now.as_second() + ttl_seconds,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.keys.encoding)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))
    }

    /// Verifies a token and returns its bearer.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let now = jiff::Timestamp::now().as_second();
        let cached = self
            .verified()
            .get(token)
            .filter(|remembered| now < remembered.exp && self.current(remembered.generation))
            .map(|remembered| remembered.principal.clone());
        if let Some(principal) = cached {
            return Ok(principal);
        }
        let header = TokenHeader::peek(token)?;
        let (bearer, generation) = match header.alg.as_str() {
            "HS256" => (self.verify_own(token, &header)?, None),
            "RS256" => self.verify_provider(token, &header, KeyKind::Rsa)?,
            "EdDSA" => self.verify_provider(token, &header, KeyKind::Ed25519)?,
            alg if alg.eq_ignore_ascii_case("none") => return Err(AuthError::Unsigned),
            alg => {
                return Err(AuthError::UnsupportedAlgorithm {
                    alg: alg.to_string(),
                });
            }
        };
        planledger_domain::PlanId::new(bearer.tenant.as_str()).map_err(|e| {
            AuthError::InvalidClaim {
                field: "tenant",
                message: e.to_string(),
            }
        })?;
        if bearer.sub.trim().is_empty() {
            return Err(AuthError::InvalidClaim {
                field: "sub",
                message: "must not be empty".into(),
            });
        }
        let principal = Principal {
            subject: bearer.sub,
            tenant: bearer.tenant,
            roles: bearer.roles,
        };
        let mut verified = self.verified();
        if verified.len() >= VERIFIED_TOKENS_MAX {
            verified.clear();
        }
        verified.insert(
            token.to_string(),
            Remembered {
                principal: principal.clone(),
                exp: bearer.exp,
                generation,
            },
        );
        Ok(principal)
    }

    /// Whether a token remembered at key-set `generation` may still be used.
    fn current(&self, generation: Option<u64>) -> bool {
        match (generation, &self.provider) {
            (None, _) => true,
            (Some(generation), Some(provider)) => provider.keys.generation() == generation,
            (Some(_), None) => false,
        }
    }

    /// An HS256 token: the service's own secret, unless it names a provider key.
    fn verify_own(&self, token: &str, header: &TokenHeader) -> Result<Bearer, AuthError> {
        if let (Some(provider), Some(kid)) = (&self.provider, &header.kid)
            && let Lookup::Found(key) = provider.keys.lookup(Some(kid), KeyKind::Rsa)
        {
            return Err(AuthError::AlgorithmMismatch {
                alg: header.alg.clone(),
                kid: kid.clone(),
                kind: key.kind,
            });
        }
        jsonwebtoken::decode::<Bearer>(token, &self.keys.decoding, &self.keys.validation)
            .map(|data| data.claims)
            .map_err(|e| self.refusal(e, "this service's signing key".into()))
    }

    /// An RS256 or EdDSA token: the provider key it names, which must be of `kind`.
    fn verify_provider(
        &self,
        token: &str,
        header: &TokenHeader,
        kind: KeyKind,
    ) -> Result<(Bearer, Option<u64>), AuthError> {
        let Some(provider) = &self.provider else {
            return Err(AuthError::NoProvider {
                alg: header.alg.clone(),
            });
        };
        // Read before the lookup: a token verified against keys installed meanwhile is
        // remembered under the older generation and checked again on its next use.
        let generation = provider.keys.generation();
        let key = match provider.keys.lookup(header.kid.as_deref(), kind) {
            Lookup::Found(key) => key,
            Lookup::UnknownKid => {
                return Err(AuthError::UnknownKey {
                    kid: header.kid.clone().unwrap_or_default(),
                });
            }
            Lookup::Ambiguous { candidates } => {
                return Err(AuthError::NoKeyId {
                    alg: header.alg.clone(),
                    candidates,
                });
            }
        };
        if key.kind != kind {
            return Err(AuthError::AlgorithmMismatch {
                alg: header.alg.clone(),
                kid: key.kid.clone().unwrap_or_default(),
                kind: key.kind,
            });
        }
        let signer = match &key.kid {
            Some(kid) => format!("the identity provider's key {kid:?}"),
            None => "the identity provider's key".into(),
        };
        jsonwebtoken::decode::<Bearer>(token, key.decoding(), provider.validation(kind))
            .map(|data| (data.claims, Some(generation)))
            .map_err(|e| self.refusal(e, signer))
    }

    /// The refusal for a failed `jsonwebtoken::decode`.
    fn refusal(&self, error: jsonwebtoken::errors::Error, signer: String) -> AuthError {
        let provider = self.provider.as_deref();
        match error.into_kind() {
            JwtErrorKind::InvalidSignature => AuthError::BadSignature { signer },
            JwtErrorKind::ExpiredSignature => AuthError::Expired,
            JwtErrorKind::ImmatureSignature => AuthError::NotYetValid,
            JwtErrorKind::InvalidIssuer => AuthError::WrongIssuer {
                expected: provider.and_then(|p| p.issuer.clone()).unwrap_or_default(),
            },
            JwtErrorKind::InvalidAudience => AuthError::WrongAudience {
                expected: provider
                    .and_then(|p| p.audience.clone())
                    .unwrap_or_default(),
            },
            JwtErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim { claim },
            JwtErrorKind::Json(e) => AuthError::Claims(e.to_string()),
            JwtErrorKind::InvalidClaimFormat(claim) => {
                AuthError::Claims(format!("{claim} has the wrong type"))
            }
            other => AuthError::InvalidToken(jsonwebtoken::errors::Error::from(other).to_string()),
        }
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashMap<String, Remembered>> {
        self.keys
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Verifies an `Authorization` header value of the form `Bearer <token>`.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::MissingToken)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(AuthError::MissingToken)?;
        self.verify(token.trim())
    }

    /// [`Self::verify_header`], and when the token names a key id the provider's key set does
    /// not hold, a refetch of the key set (at most one per the set's least interval, waiting at
    /// most [`crate::keyset::REFETCH_WAIT`]) and a second try: a key the provider has just
    /// published is accepted at its first use.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let first = self.verify_header(header);
        if let (Err(AuthError::UnknownKey { .. }), Some(provider)) = (&first, &self.provider)
            && provider.keys.refetch().await
        {
            return self.verify_header(header);
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::from_secret(&[7u8; 32]).expect("secret")
    }

    /// A token for ana of acme with `roles`, issued now by `a`, valid for `seconds`.
    fn token_for(a: &Authenticator, roles: Vec<Role>, seconds: i64) -> String {
        a.issue("ana", "acme", roles, jiff::Timestamp::now(), seconds)
            .expect("issue")
    }

    #[test]
    fn issued_token_verifies_to_its_claims() {
        let a = auth();
        let token = token_for(&a, vec![Role::Planner], 3600);
        let principal = a.verify(&token).expect("verify");
        assert_eq!(principal.subject, "ana");
        assert_eq!(principal.tenant, "acme");
        assert_eq!(principal.roles, vec![Role::Planner]);
    }

    #[test]
    fn remembered_token_verifies_again_and_a_tampered_copy_does_not() {
        let a = auth();
        let token = token_for(&a, vec![Role::Viewer], 3600);
        let first = a.verify(&token).expect("first verify");
        assert_eq!(a.verify(&token).expect("remembered"), first);
        // Another signature: a character well inside it changed (the last one carries padding
        // bits).
        let mut bytes = token.clone().into_bytes();
        let at = bytes.len() - 6;
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).expect("ASCII token");
        assert!(matches!(
            a.verify(&tampered),
            Err(AuthError::BadSignature { .. })
        ));
    }

    #[test]
    fn a_remembered_token_is_not_used_after_its_expiry() {
        let a = auth();
        let principal = Principal {
            subject: "ana".into(),
            tenant: "acme".into(),
            roles: vec![Role::Admin],
        };
        let expired = jiff::Timestamp::now().as_second() - 1;
        a.verified().insert(
            "not-a-token".into(),
            Remembered {
                principal,
                exp: expired,
                generation: None,
            },
        );
        assert!(matches!(
            a.verify("not-a-token"),
            Err(AuthError::InvalidToken(_))
        ));
    }

    #[test]
    fn expired_token_is_rejected() {
        let a = auth();
        let past = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2);
        let token = a
            .issue("ana", "acme", vec![Role::Viewer], past, 60)
            .expect("issue");
        assert!(matches!(a.verify(&token), Err(AuthError::Expired)));
    }

    #[test]
    fn token_signed_with_another_key_is_rejected() {
        let other = Authenticator::from_secret(&[9u8; 32]).expect("secret");
        let token = token_for(&other, vec![Role::Admin], 60);
        assert!(matches!(
            auth().verify(&token),
            Err(AuthError::BadSignature { .. })
        ));
    }

    #[test]
    fn role_matrix_grants_what_the_docs_say() {
        let p = |roles: Vec<Role>| Principal {
            subject: "s".into(),
            tenant: "t".into(),
            roles,
        };
        let viewer = p(vec![Role::Viewer]);
        assert!(viewer.can(Permission::Read));
        assert!(!viewer.can(Permission::Contribute));
        let contributor = p(vec![Role::Contributor]);
        assert!(contributor.can(Permission::Contribute));
        assert!(!contributor.can(Permission::Plan));
        let planner = p(vec![Role::Planner]);
        assert!(planner.can(Permission::Plan) && planner.can(Permission::Contribute));
        assert!(!planner.can(Permission::Audit));
        let auditor = p(vec![Role::Auditor]);
        assert!(auditor.can(Permission::Audit) && !auditor.can(Permission::Plan));
        let admin = p(vec![Role::Admin]);
        assert!(admin.can(Permission::Admin) && admin.can(Permission::Plan));
        assert!(!planner.can(Permission::Admin));
    }

    #[test]
    fn key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().expect("dir");
        let first = Authenticator::from_data_dir(dir.path()).expect("create");
        let token = token_for(&first, vec![Role::Viewer], 60);
        let second = Authenticator::from_data_dir(dir.path()).expect("reuse");
        assert!(second.verify(&token).is_ok());
    }
}

/// Tokens of an identity provider: the key choice, the algorithm rule and the claims checks.
#[cfg(test)]
mod provider_tests {
    use super::*;
    use base64::Engine;
    use serde_json::json;

    const ISSUER: &str = "https://idp.example";
    const AUDIENCE: &str = "planledger";

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// An Ed25519 key pair: its signing key and its public JWK.
    fn ed25519(kid: &str) -> (EncodingKey, serde_json::Value) {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let signing = ed25519_dalek::SigningKey::from_bytes(&rand::random());
        let der = signing.to_pkcs8_der().expect("pkcs8");
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig",
            "x": b64(signing.verifying_key().as_bytes())});
        (EncodingKey::from_ed_der(der.as_bytes()), jwk)
    }

    /// An RSA key pair of `bits`: its signing key and its public JWK.
    fn rsa(kid: &str, bits: usize) -> (EncodingKey, serde_json::Value) {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).expect("rsa");
        let der = private.to_pkcs1_der().expect("pkcs1");
        let jwk = json!({"kty": "RSA", "kid": kid, "alg": "RS256",
            "n": b64(&private.n().to_bytes_be()), "e": b64(&private.e().to_bytes_be())});
        (EncodingKey::from_rsa_der(der.as_bytes()), jwk)
    }

    fn install(keys: &KeySet, jwks: &[&serde_json::Value]) -> bool {
        let document = json!({ "keys": jwks });
        keys.install(KeySet::parse(document.to_string().as_bytes()).expect("usable key set"))
    }

    fn authenticator(jwks: &[&serde_json::Value]) -> (Authenticator, Arc<KeySet>) {
        let keys = Arc::new(KeySet::new(std::time::Duration::from_secs(60)));
        install(&keys, jwks);
        let auth = Authenticator::from_secret(&[7u8; 32])
            .expect("secret")
            .with_provider(IdentityProvider {
                keys: keys.clone(),
                issuer: Some(ISSUER.into()),
                audience: Some(AUDIENCE.into()),
            });
        (auth, keys)
    }

    fn claims() -> serde_json::Value {
        let now = jiff::Timestamp::now().as_second();
        json!({"sub": "ana", "tenant": "acme", "roles": ["planner"], "iss": ISSUER,
            "aud": AUDIENCE, "iat": now, "exp": now + 600})
    }

    fn sign(
        alg: Algorithm,
        kid: Option<&str>,
        claims: &serde_json::Value,
        key: &EncodingKey,
    ) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, key).expect("sign")
    }

    #[test]
    fn tokens_of_both_provider_keys_verify_and_name_their_bearer() {
        let (ed_key, ed_jwk) = ed25519("ed-1");
        let (rsa_key, rsa_jwk) = rsa("rsa-1", 2048);
        let (auth, _) = authenticator(&[&ed_jwk, &rsa_jwk]);
        for token in [
            sign(Algorithm::EdDSA, Some("ed-1"), &claims(), &ed_key),
            sign(Algorithm::RS256, Some("rsa-1"), &claims(), &rsa_key),
        ] {
            let principal = auth.verify(&token).expect("verifies");
            assert_eq!(
                (principal.subject.as_str(), principal.tenant.as_str()),
                ("ana", "acme")
            );
            assert_eq!(principal.roles, vec![Role::Planner]);
        }
        // The service's own tokens are still accepted beside them.
        let own = auth
            .issue("bo", "acme", vec![Role::Viewer], jiff::Timestamp::now(), 60)
            .expect("issue");
        assert_eq!(auth.verify(&own).expect("own token").subject, "bo");
    }

    #[test]
    fn a_key_is_used_only_with_its_own_algorithm() {
        let (ed_key, ed_jwk) = ed25519("ed-1");
        let (_, rsa_jwk) = rsa("rsa-1", 2048);
        let (auth, _) = authenticator(&[&ed_jwk, &rsa_jwk]);
        // An EdDSA signature presented as RS256 and naming the Ed25519 key.
        let eddsa = sign(Algorithm::EdDSA, Some("ed-1"), &claims(), &ed_key);
        let mut parts: Vec<&str> = eddsa.split('.').collect();
        let rs256_header = b64(br#"{"alg":"RS256","kid":"ed-1"}"#);
        parts[0] = &rs256_header;
        assert!(matches!(
            auth.verify(&parts.join(".")),
            Err(AuthError::AlgorithmMismatch {
                kind: KeyKind::Ed25519,
                ..
            })
        ));
        // HS256 with the RSA key's public modulus as the HMAC secret, naming the RSA key.
        let modulus = rsa_jwk["n"].as_str().expect("n").as_bytes().to_vec();
        let confused = sign(
            Algorithm::HS256,
            Some("rsa-1"),
            &claims(),
            &EncodingKey::from_secret(&modulus),
        );
        assert!(matches!(
            auth.verify(&confused),
            Err(AuthError::AlgorithmMismatch {
                kind: KeyKind::Rsa,
                ..
            })
        ));
        // The same without a kid is checked against the service's own secret, and fails.
        let unnamed = sign(
            Algorithm::HS256,
            None,
            &claims(),
            &EncodingKey::from_secret(&modulus),
        );
        assert!(matches!(
            auth.verify(&unnamed),
            Err(AuthError::BadSignature { .. })
        ));
    }

    #[test]
    fn unsigned_and_unsupported_algorithms_are_refused() {
        let (_, ed_jwk) = ed25519("ed-1");
        let (auth, _) = authenticator(&[&ed_jwk]);
        let body = b64(claims().to_string().as_bytes());
        for alg in ["none", "None", "NONE"] {
            let header = b64(format!(r#"{{"alg":"{alg}","kid":"ed-1"}}"#).as_bytes());
            let token = format!("{header}.{body}.");
            assert!(
                matches!(auth.verify(&token), Err(AuthError::Unsigned)),
                "{alg}"
            );
        }
        let header = b64(br#"{"alg":"RS384","kid":"ed-1"}"#);
        assert!(matches!(
            auth.verify(&format!("{header}.{body}.c2ln")),
            Err(AuthError::UnsupportedAlgorithm { alg }) if alg == "RS384"
        ));
    }

    #[test]
    fn claims_checks_each_give_their_own_refusal() {
        let (key, jwk) = ed25519("ed-1");
        let (auth, _) = authenticator(&[&jwk]);
        let now = jiff::Timestamp::now().as_second();
        let with = |field: &str, value: serde_json::Value| {
            let mut c = claims();
            c[field] = value;
            sign(Algorithm::EdDSA, Some("ed-1"), &c, &key)
        };
        assert!(matches!(
            auth.verify(&with("iss", json!("https://other.example"))),
            Err(AuthError::WrongIssuer { expected }) if expected == ISSUER
        ));
        assert!(matches!(
            auth.verify(&with("aud", json!("someone-else"))),
            Err(AuthError::WrongAudience { expected }) if expected == AUDIENCE
        ));
        assert!(matches!(
            auth.verify(&with("exp", json!(now - 3600))),
            Err(AuthError::Expired)
        ));
        assert!(matches!(
            auth.verify(&with("nbf", json!(now + 3600))),
            Err(AuthError::NotYetValid)
        ));
        assert!(matches!(
            auth.verify(&sign(Algorithm::EdDSA, Some("ed-9"), &claims(), &key)),
            Err(AuthError::UnknownKey { kid }) if kid == "ed-9"
        ));
        let mut no_issuer = claims();
        no_issuer.as_object_mut().expect("object").remove("iss");
        assert!(matches!(
            auth.verify(&sign(Algorithm::EdDSA, Some("ed-1"), &no_issuer, &key)),
            Err(AuthError::MissingClaim { claim }) if claim == "iss"
        ));
    }

    #[test]
    fn a_token_without_kid_needs_a_single_key_of_its_kind() {
        let (key, jwk) = ed25519("ed-1");
        let (_, other) = ed25519("ed-2");
        let (auth, keys) = authenticator(&[&jwk]);
        let unnamed = sign(Algorithm::EdDSA, None, &claims(), &key);
        assert!(auth.verify(&unnamed).is_ok());
        install(&keys, &[&jwk, &other]);
        assert!(matches!(
            auth.verify(&unnamed),
            Err(AuthError::NoKeyId { candidates: 2, .. })
        ));
    }

    #[test]
    fn a_remembered_token_is_refused_once_its_key_left_the_set() {
        let (old_key, old_jwk) = ed25519("old");
        let (new_key, new_jwk) = ed25519("new");
        let (auth, keys) = authenticator(&[&old_jwk, &new_jwk]);
        let old = sign(Algorithm::EdDSA, Some("old"), &claims(), &old_key);
        let new = sign(Algorithm::EdDSA, Some("new"), &claims(), &new_key);
        assert!(auth.verify(&old).is_ok() && auth.verify(&new).is_ok());
        assert!(
            !install(&keys, &[&old_jwk, &new_jwk]),
            "the same keys change nothing"
        );
        assert!(install(&keys, &[&new_jwk]));
        assert!(matches!(
            auth.verify(&old),
            Err(AuthError::UnknownKey { .. })
        ));
        assert!(auth.verify(&new).is_ok());
    }

    #[test]
    fn the_key_set_keeps_only_signature_keys_it_can_bind_to_one_algorithm() {
        let (_, ed_jwk) = ed25519("ed-1");
        let (_, small) = rsa("small", 1024);
        let mut wrong_alg = ed_jwk.clone();
        wrong_alg["kid"] = json!("ed-alg");
        wrong_alg["alg"] = json!("RS256");
        let mut encryption = ed_jwk.clone();
        encryption["kid"] = json!("ed-enc");
        encryption["use"] = json!("enc");
        let document = json!({"keys": [
            ed_jwk,
            {"kty": "oct", "kid": "shared", "k": b64(b"a shared secret of some length")},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32])},
            small, wrong_alg, encryption, ed_jwk,
        ]});
        let parsed = KeySet::parse(document.to_string().as_bytes()).expect("one usable key");
        assert_eq!(parsed.keys.len(), 1);
        assert_eq!(parsed.skipped.len(), 6, "{:?}", parsed.skipped);
        for (kid, reason) in [
            ("shared", "symmetric"),
            ("ec", "EC key"),
            ("small", "1024 bits"),
            ("ed-alg", "\"alg\" is RS256"),
            ("ed-enc", "not a signature key"),
            ("ed-1", "twice"),
        ] {
            assert!(
                parsed
                    .skipped
                    .iter()
                    .any(|line| line.contains(&format!("{kid:?}")) && line.contains(reason)),
                "{kid}: {:?}",
                parsed.skipped
            );
        }
        assert!(matches!(
            KeySet::parse(br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#),
            Err(crate::keyset::KeySetError::NoUsableKey { .. })
        ));
        assert!(matches!(
            KeySet::parse(b"[]"),
            Err(crate::keyset::KeySetError::NotJwks(_))
        ));
    }
}
