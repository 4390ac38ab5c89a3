//! Bookmarks: read-your-writes across the partitions of a cluster.
//!
//! A command's answer carries a bookmark naming the log it was written to (its partition in
//! cluster mode, or the single log) and the position of its last event. A read-model query given
//! `?bookmark=` waits, bounded, until the projector of each named log has applied that position,
//! so it sees the command's effect. A query's answer carries the bookmark of what it reflected
//! (every partition's checkpoint), which a later query may pass on to see at least as much.
//!
//! The text is opaque to clients: `pb1.` and the unpadded URL-safe base64 of `log=P` (single
//! node) or `pN=P` entries joined by `,` (partition N at position P). Parsing refuses anything
//! else with a message naming what is wrong.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::AppError;

const PREFIX: &str = "pb1.";
/// Most logs one bookmark may name (a deployment has at most 4,096 partitions).
const MAX_ENTRIES: usize = 4096;
/// Longest bookmark text accepted (4,096 entries of `p4095=<u64>` fit).
const MAX_TEXT_BYTES: usize = 131_072;

/// A log a bookmark names: the single log of a single node, or a partition of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogRef {
    /// The single log (single-node mode).
    Single,
    /// One partition's log (cluster mode).
    Partition(u32),
}

impl LogRef {
    /// The partition, in cluster mode.
    pub fn partition(self) -> Option<u32> {
        match self {
            LogRef::Single => None,
            LogRef::Partition(p) => Some(p),
        }
    }

    /// The log of `partition` (`None`: the single log).
    pub fn of(partition: Option<u32>) -> Self {
        partition.map_or(LogRef::Single, LogRef::Partition)
    }
}

/// For each log it names, a position a read must have reached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bookmark {
    positions: BTreeMap<LogRef, u64>,
}

impl Bookmark {
    /// A bookmark of one log at `position`.
    pub fn at(log: LogRef, position: u64) -> Self {
        let mut positions = BTreeMap::new();
        positions.insert(log, position);
        Self { positions }
    }

    /// Adds `log` at `position`, keeping the higher position if it is already named.
    pub fn add(&mut self, log: LogRef, position: u64) {
        let entry = self.positions.entry(log).or_insert(position);
        *entry = (*entry).max(position);
    }

    /// The logs named and their positions, in log order.
    pub fn positions(&self) -> impl Iterator<Item = (LogRef, u64)> + '_ {
        self.positions
            .iter()
            .map(|(log, position)| (*log, *position))
    }

    /// Whether it names no log.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Parses the text a command answer carried; refuses anything else, naming the problem.
    pub fn parse(text: &str) -> Result<Self, AppError> {
        let invalid = |why: &str| AppError::Invalid {
            field: "bookmark".into(),
            message: format!(
                "{why}; pass the bookmark a command or query answer carried, unchanged"
            ),
        };
        if text.len() > MAX_TEXT_BYTES {
            return Err(invalid("too long to be a bookmark"));
        }
        let encoded = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| invalid("not a bookmark (it does not start with \"pb1.\")"))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| invalid("not a bookmark (its body is not URL-safe base64)"))?;
        let body = String::from_utf8(bytes)
            .map_err(|_| invalid("not a bookmark (its body is not text)"))?;
        let mut bookmark = Bookmark::default();
        for entry in body.split(',') {
            let (log, position) = entry
                .split_once('=')
                .ok_or_else(|| invalid("a bookmark entry is not log=position"))?;
            let position: u64 = position
                .parse()
                .map_err(|_| invalid("a bookmark position is not a number"))?;
            let log = match log {
                "log" => LogRef::Single,
                other => {
                    let partition = other
                        .strip_prefix('p')
                        .and_then(|n| n.parse::<u32>().ok())
                        .ok_or_else(|| invalid("a bookmark names an unknown log"))?;
                    LogRef::Partition(partition)
                }
            };
            bookmark.add(log, position);
            if bookmark.positions.len() > MAX_ENTRIES {
                return Err(invalid("a bookmark names more logs than a deployment has"));
            }
        }
        Ok(bookmark)
    }
}

impl fmt::Display for Bookmark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = self
            .positions
            .iter()
            .map(|(log, position)| match log {
                LogRef::Single => format!("log={position}"),
                LogRef::Partition(p) => format!("p{p}={position}"),
            })
            .collect::<Vec<_>>()
            .join(",");
        write!(f, "{PREFIX}{}", URL_SAFE_NO_PAD.encode(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookmarks_round_trip_and_merge() {
        let mut bookmark = Bookmark::at(LogRef::Partition(3), 120);
        bookmark.add(LogRef::Partition(7), 5);
        bookmark.add(LogRef::Partition(3), 90);
        let text = bookmark.to_string();
        assert!(text.starts_with("pb1."), "{text}");
        let parsed = Bookmark::parse(&text).expect("parses");
        assert_eq!(parsed, bookmark);
        assert_eq!(
            parsed.positions().collect::<Vec<_>>(),
            vec![(LogRef::Partition(3), 120), (LogRef::Partition(7), 5)]
        );
        let single = Bookmark::at(LogRef::Single, 42);
        assert_eq!(
            Bookmark::parse(&single.to_string()).expect("parses"),
            single
        );
    }

    #[test]
    fn malformed_bookmarks_are_refused_with_a_reason() {
        let encode = |body: &str| format!("pb1.{}", URL_SAFE_NO_PAD.encode(body));
        for (text, why) in [
            ("42".to_owned(), "does not start"),
            ("pb1.***".to_owned(), "base64"),
            (encode("p3"), "log=position"),
            (encode("p3=x"), "not a number"),
            (encode("q3=4"), "unknown log"),
            (encode("p-1=4"), "unknown log"),
            (format!("pb1.{}", "A".repeat(200_000)), "too long"),
        ] {
            match Bookmark::parse(&text) {
                Err(AppError::Invalid { field, message }) => {
                    assert_eq!(field, "bookmark");
                    assert!(message.contains(why), "{text}: {message}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
