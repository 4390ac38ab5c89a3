//! Property: any sequence of appends and reads keeps the log's invariants and agrees with a
//! simple in-memory model of streams, versions and command ids.

use std::collections::HashMap;

use crate::support::{self, *};
use planledger_store::{ExpectedVersion, Position, ReadDirection, StoreError, Version};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Expect {
    Any,
    NoStream,
    Exact(u64),
    Current,
}

#[derive(Clone, Debug)]
enum Op {
    Append {
        stream: usize,
        expect: Expect,
        events: usize,
        command: Option<(usize, u8)>,
    },
    ReadStream {
        stream: usize,
        from: u64,
        backward: bool,
        limit: usize,
    },
    ReadAll {
        from: u64,
        limit: usize,
    },
    /// The stream's version as of a global position.
    VersionAt {
        stream: usize,
        position: u64,
    },
    /// Memtables to files: later reads merge both.
    Flush,
    /// Close and open again: the write-ahead log is replayed.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let expect = prop_oneof![
        Just(Expect::Any),
        Just(Expect::NoStream),
        (0u64..6).prop_map(Expect::Exact),
        Just(Expect::Current),
    ];
    prop_oneof![
        4 => (0usize..3, expect, 1usize..4, proptest::option::of((0usize..4, 0u8..2)))
            .prop_map(|(stream, expect, events, command)| Op::Append { stream, expect, events, command }),
        1 => (0usize..3, 0u64..8, any::<bool>(), 0usize..5)
            .prop_map(|(stream, from, backward, limit)| Op::ReadStream { stream, from, backward, limit }),
        1 => (0u64..20, 0usize..6).prop_map(|(from, limit)| Op::ReadAll { from, limit }),
        1 => (0usize..3, 0u64..40).prop_map(|(stream, position)| Op::VersionAt { stream, position }),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    /// stream -> positions of its events, index = version - 1.
    streams: HashMap<usize, Vec<u64>>,
    /// command -> (stream, fingerprint, positions).
    commands: HashMap<usize, (usize, u8, Vec<u64>)>,
    last: u64,
}

fn name(stream: usize) -> String {
    format!("t/s{stream}")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn appends_and_reads_agree_with_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let (dir, mut store) = open_temp();
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Append { stream, expect, events, command } => {
                    let current = model.streams.get(&stream).map_or(0, Vec::len) as u64;
                    let expected = match expect {
                        Expect::Any => ExpectedVersion::Any,
                        Expect::NoStream => ExpectedVersion::NoStream,
                        Expect::Exact(v) => ExpectedVersion::Exact(Version(v)),
                        Expect::Current => ExpectedVersion::Exact(Version(current)),
                    };
                    let mut req = request(&name(stream), expected, (0..events as u64).map(event).collect());
                    if let Some((id, fingerprint)) = command {
                        req = with_command(req, &format!("c{id}"), &format!("f{fingerprint}"));
                    }
                    let result = runtime.block_on(store.append(req));
                    // What the model predicts.
                    if let Some((id, fingerprint)) = command
                        && let Some((first_stream, first_fingerprint, positions)) = model.commands.get(&id)
                    {
                        if *first_stream == stream && *first_fingerprint == fingerprint {
                            let outcome = result.expect("repeat returns the first result");
                            prop_assert!(outcome.deduplicated);
                            let got: Vec<u64> = outcome.envelopes().iter().map(|e| e.position.get()).collect();
                            prop_assert_eq!(&got, positions);
                        } else {
                            prop_assert!(matches!(result, Err(StoreError::CommandIdReused { .. })), "{:?}", result);
                        }
                        continue;
                    }
                    if expected.matches(Version(current)) {
                        let outcome = result.expect("matching expectation appends");
                        let positions: Vec<u64> = (model.last + 1..=model.last + events as u64).collect();
                        let got: Vec<u64> = outcome.envelopes().iter().map(|e| e.position.get()).collect();
                        prop_assert_eq!(&got, &positions);
                        let versions: Vec<u64> = outcome.envelopes().iter().map(|e| e.version.get()).collect();
                        prop_assert_eq!(versions, (current + 1..=current + events as u64).collect::<Vec<_>>());
                        model.last += events as u64;
                        model.streams.entry(stream).or_default().extend(&positions);
                        if let Some((id, fingerprint)) = command {
                            model.commands.insert(id, (stream, fingerprint, positions));
                        }
                    } else {
                        match result {
                            Err(StoreError::Conflict { current: c, .. }) => prop_assert_eq!(c, Version(current)),
                            other => prop_assert!(false, "expected conflict, got {:?}", other),
                        }
                    }
                }
                Op::ReadStream { stream, from, backward, limit } => {
                    let direction = if backward { ReadDirection::Backward } else { ReadDirection::Forward };
                    let got: Vec<u64> = store
                        .read_stream(&support::stream(&name(stream)), Version(from), direction, limit)
                        .expect("read")
                        .iter()
                        .map(|e| e.position.get())
                        .collect();
                    let positions = model.streams.get(&stream).cloned().unwrap_or_default();
                    let expected: Vec<u64> = if backward {
                        let top = (from as usize).min(positions.len());
                        positions[..top].iter().rev().take(limit).copied().collect()
                    } else {
                        let start = (from.max(1) as usize - 1).min(positions.len());
                        positions[start..].iter().take(limit).copied().collect()
                    };
                    prop_assert_eq!(got, expected);
                }
                Op::ReadAll { from, limit } => {
                    let got: Vec<u64> = store
                        .read_all(Position(from), limit)
                        .expect("read")
                        .iter()
                        .map(|e| e.position.get())
                        .collect();
                    let expected: Vec<u64> = (from.max(1)..=model.last).take(limit).collect();
                    prop_assert_eq!(got, expected);
                }
                Op::VersionAt { stream, position } => {
                    let got = store
                        .stream_version_at(&support::stream(&name(stream)), Position(position))
                        .expect("version at");
                    let positions = model.streams.get(&stream).cloned().unwrap_or_default();
                    let expected = positions.iter().filter(|p| **p <= position).count() as u64;
                    prop_assert_eq!(got, Version(expected));
                }
                Op::Flush => store.flush().expect("flush"),
                Op::Reopen => {
                    drop(store);
                    store = reopen(&dir);
                }
            }
        }
        prop_assert_eq!(store.last_position().get(), model.last);
        assert_log_invariants(&store);
    }
}
