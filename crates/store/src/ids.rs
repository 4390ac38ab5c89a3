//! Identifiers the log deals in: stream ids, global positions, stream versions.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// Longest accepted stream id, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 200;

/// A stream id such as `acme/q3-plan`: 1 to 200 bytes, printable, no NUL.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

impl StreamId {
    /// Validates and wraps a stream id.
    pub fn new(id: impl Into<String>) -> Result<Self, StoreError> {
        let id = id.into();
        if id.is_empty() || id.len() > MAX_STREAM_ID_LEN || id.chars().any(char::is_control) {
            return Err(StoreError::InvalidStreamId {
                id,
                rule: "1 to 200 bytes without control characters",
            });
        }
        Ok(Self(id))
    }

    /// The stream id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamId {
    type Error = StoreError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<StreamId> for String {
    fn from(value: StreamId) -> Self {
        value.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! counter {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw number.
            pub fn get(self) -> u64 {
                self.0
            }

            /// Big-endian bytes, so that key order is numeric order.
            pub fn to_be_bytes(self) -> [u8; 8] {
                self.0.to_be_bytes()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

counter!(
    /// A global log position: 1 for the first event ever appended, gap-free after that.
    Position
);
counter!(
    /// A stream version: the number of events in the stream; 0 means the stream has none.
    Version
);

/// What the appender believes the stream's version to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "version")]
pub enum ExpectedVersion {
    /// Append whatever the current version.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must be at exactly this version (0 means it must not exist yet).
    Exact(Version),
}

impl ExpectedVersion {
    /// Whether a stream currently at `current` satisfies this expectation.
    pub fn matches(self, current: Version) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => current.0 == 0,
            Self::Exact(v) => v == current,
        }
    }
}
