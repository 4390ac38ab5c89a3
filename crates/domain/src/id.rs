//! Client-chosen identifiers: `[A-Za-z0-9._-]{1,64}`, validated once at the boundary.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest identifier accepted, in characters.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid identifier.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{kind} {value:?} is not a valid id: {rule}; use 1 to 64 characters from A-Z a-z 0-9 . _ -"
)]
pub struct IdError {
    /// Which identifier type was being parsed (e.g. "goal_id").
    pub kind: &'static str,
    /// The rejected value (truncated to 80 characters).
    pub value: String,
    /// The rule that was broken.
    pub rule: &'static str,
}

/// Checks `value` against `[A-Za-z0-9._-]{1,64}`; `kind` names the id in the error.
pub fn validate_id(kind: &'static str, value: &str) -> Result<(), IdError> {
    let rule = if value.is_empty() {
        Some("it is empty")
    } else if value.len() > MAX_ID_LEN {
        Some("it is longer than 64 characters")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("it contains a character outside A-Z a-z 0-9 . _ -")
    } else {
        None
    };
    match rule {
        None => Ok(()),
        Some(rule) => Err(IdError {
            kind,
            value: value.chars().take(80).collect(),
            rule,
        }),
    }
}

/// The pattern every identifier matches, as the API document states it.
pub const ID_PATTERN: &str = "^[A-Za-z0-9._-]{1,64}$";

/// The JSON schema of an identifier: a string matching [`ID_PATTERN`] (the id types' component
/// schemas, and path parameters inline).
#[cfg(feature = "openapi")]
pub fn id_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(ID_PATTERN))
        .into()
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate_id($kind, &value)?;
                Ok(Self(value))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The identifier as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                id_schema()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(value: &str) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// Identifies a plan (the aggregate; its stream is `<tenant>/<plan_id>`).
    PlanId,
    "plan_id"
);
id_type!(
    /// Identifies a goal inside a plan.
    GoalId,
    "goal_id"
);
id_type!(
    /// Identifies a step inside a plan.
    StepId,
    "step_id"
);
id_type!(
    /// Identifies a person (the subject of a role assignment).
    PersonId,
    "person"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_accepts_the_documented_alphabet() {
        assert!(GoalId::new("Goal_1.a-b").is_ok());
        assert!(GoalId::new("x".repeat(64)).is_ok());
    }

    #[test]
    fn id_rejects_empty_long_and_foreign_characters() {
        assert!(GoalId::new("").is_err());
        assert!(GoalId::new("x".repeat(65)).is_err());
        assert!(GoalId::new("a b").is_err());
        assert!(GoalId::new("a/b").is_err());
        assert!(GoalId::new("é").is_err());
    }

    #[test]
    fn id_deserialization_validates() {
        let ok: Result<StepId, _> = serde_json::from_str("\"s1\"");
        assert!(ok.is_ok());
        let bad: Result<StepId, _> = serde_json::from_str("\"s 1\"");
        assert!(bad.is_err());
    }
}
