//! Authentication and authorization: JWT bearer tokens and the role matrix.

use std::collections::HashMap;
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use planledger_domain::Command;

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
    /// The token did not verify.
    #[error("invalid token: {0}")]
    InvalidToken(String),
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

/// Mints and verifies HS256 tokens with one secret. Cheap to clone (handlers get a copy of
/// the state per request): the keys and validation rules are shared.
#[derive(Clone)]
pub struct Authenticator {
    keys: std::sync::Arc<Keys>,
}

struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Tokens already verified, by their exact text, with the bearer and the expiry: a client
    /// sends the same token with every request, and checking its signature and claims again
    /// cost more than the rest of authentication. Only an identical token (signature included)
    /// hits, and only before its `exp`.
    verified: std::sync::Mutex<HashMap<String, (Principal, i64)>>,
}

/// Verified tokens remembered at most; the memory is forgotten all at once when it is full.
const VERIFIED_TOKENS_MAX: usize = 10_000;

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator { secret: <redacted> }")
    }
}

/// Name of the signing key file kept in the data directory.
pub const KEY_FILE: &str = "jwt-signing.key";

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
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self {
            keys: std::sync::Arc::new(Keys {
                encoding: EncodingKey::from_secret(secret),
                decoding: DecodingKey::from_secret(secret),
                validation,
                verified: std::sync::Mutex::new(HashMap::new()),
            }),
        })
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
            .filter(|(_, exp)| now < *exp)
            .map(|(principal, _)| principal.clone());
        if let Some(principal) = cached {
            return Ok(principal);
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.keys.decoding, &self.keys.validation)
                .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        let claims = data.claims;
        planledger_domain::PlanId::new(claims.tenant.as_str()).map_err(|e| {
            AuthError::InvalidClaim {
                field: "tenant",
                message: e.to_string(),
            }
        })?;
        let principal = Principal {
            subject: claims.sub,
            tenant: claims.tenant,
            roles: claims.roles,
        };
        let mut verified = self.verified();
        if verified.len() >= VERIFIED_TOKENS_MAX {
            verified.clear();
        }
        verified.insert(token.to_string(), (principal.clone(), claims.exp));
        Ok(principal)
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Principal, i64)>> {
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
            Err(AuthError::InvalidToken(_))
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
        a.verified()
            .insert("not-a-token".into(), (principal, expired));
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
        assert!(matches!(a.verify(&token), Err(AuthError::InvalidToken(_))));
    }

    #[test]
    fn token_signed_with_another_key_is_rejected() {
        let other = Authenticator::from_secret(&[9u8; 32]).expect("secret");
        let token = token_for(&other, vec![Role::Admin], 60);
        assert!(matches!(
            auth().verify(&token),
            Err(AuthError::InvalidToken(_))
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
