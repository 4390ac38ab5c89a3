//! Crash test: a child process appends under load and prints every acknowledged append; the
//! test kills it with SIGKILL at a random moment, reopens the database and checks that every
//! acknowledged event is there, positions are gap-free and the hash chain verifies.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use planledger_store::{EventStore, ExpectedVersion, Position, StoreOptions};
use rand::Rng;

const CHILD_ENV: &str = "PLANLEDGER_CRASH_CHILD_DIR";
const ROUNDS: usize = 5;

/// The harness's name for this module's test `name` (`crash::name`): the test binary holds
/// every module's tests, and `--exact` matches the whole path.
fn test_path(name: &str) -> String {
    let module = module_path!()
        .split_once("::")
        .map_or(module_path!(), |(_crate, module)| module);
    format!("{module}::{name}")
}

/// Re-executes this test binary to run only the test `name`, with `env` naming the database;
/// its stdout is piped to the caller.
fn spawn_child(name: &str, env: &str, db: &std::path::Path) -> std::process::Child {
    Command::new(std::env::current_exe().expect("test binary path"))
        .arg(test_path(name))
        .args(["--exact", "--nocapture", "--test-threads", "1"])
        .env(env, db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child")
}

/// A child's body: runs `body` over the store named by `env`, only when the parent
/// re-executed this test binary with `env` set (a plain test run skips it).
fn as_child<F, Fut>(env: &str, body: F)
where
    F: FnOnce(EventStore) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Ok(dir) = std::env::var(env) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let store = EventStore::open(&dir, StoreOptions::default()).expect("child open");
        body(store).await;
    });
}

/// The child of the append crash test: appends under load and prints every acknowledgement.
#[test]
fn crash_child() {
    as_child(CHILD_ENV, |store| async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for task in 0..64u64 {
            let store = store.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                loop {
                    let stream = format!("t/crash-{}", task % 8);
                    let outcome = store
                        .append(request(
                            &stream,
                            ExpectedVersion::Any,
                            vec![event(n), event(n + 1)],
                        ))
                        .await
                        .expect("append");
                    for e in outcome.envelopes() {
                        let _ = tx.send(format!("ACK {} {}\n", e.position.get(), e.event_id));
                    }
                    n += 2;
                }
            });
        }
        drop(tx);
        let mut stdout = std::io::stdout().lock();
        while let Some(line) = rx.recv().await {
            stdout.write_all(line.as_bytes()).expect("stdout");
            stdout.flush().expect("flush");
        }
    });
}

#[test]
fn every_acknowledged_append_survives_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("log");
    let mut rng = rand::rng();
    let mut acknowledged: HashMap<u64, String> = HashMap::new();
    for round in 0..ROUNDS {
        let mut child = spawn_child("crash_child", CHILD_ENV, &db);
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel::<(u64, String)>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.split_whitespace();
                if parts.next() != Some("ACK") {
                    continue;
                }
                let (Some(position), Some(id)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let Ok(position) = position.parse() else {
                    continue;
                };
                if tx.send((position, id.to_string())).is_err() {
                    break;
                }
            }
        });
        // Wait for the first acknowledgement, then let it run a random while before the kill.
        let (first_position, first_id) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("child acknowledges appends");
        acknowledged.insert(first_position, first_id);
        let run_for = Duration::from_millis(rng.random_range(20..400));
        let started = Instant::now();
        while started.elapsed() < run_for {
            if let Ok((position, id)) = rx.recv_timeout(Duration::from_millis(5)) {
                acknowledged.insert(position, id);
            }
        }
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap child");
        reader.join().expect("reader thread");
        acknowledged.extend(rx.try_iter());

        let store = EventStore::open(&db, StoreOptions::default()).expect("reopen after kill");
        let last = store.last_position().get();
        let max_acked = acknowledged.keys().copied().max().unwrap_or(0);
        assert!(
            last >= max_acked,
            "round {round}: log ends at {last}, but {max_acked} was acknowledged"
        );
        for (position, id) in &acknowledged {
            let envelope = store
                .read_position(Position(*position))
                .expect("read")
                .unwrap_or_else(|| {
                    panic!("round {round}: acknowledged position {position} is missing")
                });
            assert_eq!(
                &envelope.event_id.to_string(),
                id,
                "round {round}: position {position} holds another event"
            );
        }
        assert_log_invariants(&store);
        eprintln!(
            "crash round {round}: killed after {run_for:?}, {} acknowledged so far, log at {last}",
            acknowledged.len()
        );
    }
    assert!(
        acknowledged.len() > ROUNDS,
        "the child acknowledged appends in every round"
    );
}

const CHECKPOINT_CHILD_ENV: &str = "PLANLEDGER_CHECKPOINT_CHILD_DIR";

/// The child's body for the checkpoint test: one synced append, then a checkpoint, then
/// nothing more (no later batch would carry the checkpoint to the file), until it is killed.
#[test]
fn checkpoint_child() {
    as_child(CHECKPOINT_CHILD_ENV, |store| async move {
        let outcome = store
            .append(request(
                "t/checkpoint",
                ExpectedVersion::Any,
                vec![event(0)],
            ))
            .await
            .expect("append");
        store
            .put_checkpoint("crash", outcome.position())
            .expect("checkpoint");
        println!("CHECKPOINT {}", outcome.position().get());
        std::io::stdout().flush().expect("flush");
        tokio::time::sleep(Duration::from_secs(600)).await;
    });
}

#[test]
fn a_written_checkpoint_survives_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() || std::env::var(CHECKPOINT_CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("log");
    let mut child = spawn_child("checkpoint_child", CHECKPOINT_CHILD_ENV, &db);
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let reader = std::thread::spawn(move || {
        // The test harness may print its own text before the child's on the same line.
        let found = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                let (_, after) = line.split_once("CHECKPOINT ")?;
                after.trim().parse::<u64>().ok()
            });
        if let Some(position) = found {
            let _ = tx.send(position);
        }
    });
    let written = rx.recv_timeout(Duration::from_secs(60));
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap child");
    reader.join().expect("reader thread");
    let written = written.expect("the child reports its checkpoint within 60 s");

    let store = EventStore::open(&db, StoreOptions::default()).expect("reopen after kill");
    assert_eq!(store.last_position().get(), written);
    assert_eq!(
        store.checkpoint("crash").expect("read checkpoint"),
        Some(Position(written)),
        "a checkpoint written before the kill is on file after it"
    );
}
