//! Crash test: a child process projects a log into a read model and is killed with SIGKILL
//! again and again while it consumes; the read model it finally completes is byte-identical to
//! a clean rebuild from position 0.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use planledger_projections::{
    AccountabilityProjector, Delivery, EventSource, LocalLogSource, ReadModelDb, RuntimeOptions,
    SourceError, SourceHead, rebuild_to, spawn,
};
use planledger_store::{EventStore, Position, StoreOptions};
use rand::Rng;
use tokio_util::sync::CancellationToken;

const CHILD_ENV: &str = "PLANLEDGER_PROJECTION_CRASH_CHILD_DIR";
/// Rounds that end in SIGKILL; the round after them runs to completion.
const KILLS: usize = 12;

/// The local log, handed out in small slices with a pause between them, so the child is
/// caught in the middle of its work when it is killed.
struct Slow {
    inner: LocalLogSource,
}

impl EventSource for Slow {
    fn describe(&self) -> String {
        "slow-local-log".into()
    }

    async fn next_batch(
        &mut self,
        after: Position,
        _max: usize,
    ) -> Result<Vec<Delivery>, SourceError> {
        tokio::time::sleep(Duration::from_millis(3)).await;
        self.inner.next_batch(after, 50).await
    }

    fn head(&self) -> Option<SourceHead> {
        self.inner.head()
    }

    async fn replay_from(&mut self, after: Position) -> Result<Self, SourceError> {
        Ok(Self {
            inner: self.inner.replay_from(after).await?,
        })
    }
}

/// The harness's name for this module's test `name` (`crash::name`): the test binary holds
/// every module's tests, and `--exact` matches the whole path.
fn test_path(name: &str) -> String {
    let module = module_path!()
        .split_once("::")
        .map_or(module_path!(), |(_crate, module)| module);
    format!("{module}::{name}")
}

/// The child's body: runs only when the parent re-executes this test binary with `CHILD_ENV`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let store = EventStore::open(dir.join("log"), StoreOptions::default()).expect("open log");
        let last = store.last_position().get();
        let db = ReadModelDb::open(dir.join("model"), "accountability").expect("open model");
        println!(
            "START {}",
            db.checkpoint(db.live_generation())
                .expect("checkpoint")
                .position
        );
        let options = RuntimeOptions {
            batch_size: 50,
            commit_events: 120,
            commit_interval: Duration::from_millis(5),
            cache_plans: 8,
        };
        let source = Slow {
            inner: LocalLogSource::new(store.clone()),
        };
        let (handle, _task) = spawn(
            Arc::new(AccountabilityProjector),
            db,
            source,
            options,
            CancellationToken::new(),
        )
        .expect("spawn");
        handle
            .wait_for(last, Duration::from_secs(600))
            .await
            .expect("the child catches up");
        println!("DONE {last}");
    });
}

/// Kills the child with SIGKILL when dropped, whatever happened.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn read_model_survives_repeated_sigkill_byte_identical_to_a_clean_rebuild() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let last = runtime.block_on(async {
        let store = open_store(dir.path());
        let plans: Vec<Script> = (0..40)
            .map(|i| {
                busy_plan(
                    if i % 2 == 0 { "acme" } else { "globex" },
                    &format!("plan-{i}"),
                    40,
                )
            })
            .collect();
        append_scripts(&store, &plans.iter().collect::<Vec<_>>()).await;
        store.last_position().get()
    });

    let exe = std::env::current_exe().expect("test binary path");
    let mut rng = rand::rng();
    let mut kills = 0;
    let mut resumed_from = Vec::new();
    let mut done = false;
    for round in 0..=KILLS {
        let mut child = KillOnDrop(
            Command::new(&exe)
                .arg(test_path("crash_child"))
                .args(["--exact", "--nocapture", "--test-threads", "1"])
                .env(CHILD_ENV, dir.path())
                .stdout(Stdio::piped())
                .stderr(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(dir.path().join("child.log"))
                        .expect("child log"),
                )
                .spawn()
                .expect("spawn child"),
        );
        let stdout = child.0.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Let it start, then kill it a random while later, unless it finishes first.
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(120))
                .expect("the child starts");
            // The test harness may print its own text before ours on the same line.
            if let Some((_, position)) = line.split_once("START ") {
                resumed_from.push(position.trim().parse::<u64>().expect("position"));
                break;
            }
        }
        // The last round is never killed: it runs until the child has caught up.
        let pause = if round == KILLS {
            Duration::from_secs(600)
        } else {
            Duration::from_millis(rng.random_range(30..250))
        };
        let deadline = std::time::Instant::now() + pause;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("DONE ") => {
                    done = true;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if !done {
            drop(child);
            kills += 1;
        }
        reader.join().expect("reader thread");
        if done {
            break;
        }
    }
    assert!(
        done,
        "the child never finished, even unkilled; its log:\n{}",
        std::fs::read_to_string(dir.path().join("child.log")).unwrap_or_default()
    );
    eprintln!(
        "killed {kills} times; each restart resumed from {resumed_from:?}; log ends at {last}"
    );
    assert!(
        resumed_from.windows(2).all(|w| w[0] <= w[1]),
        "a restart never resumes before an earlier one: {resumed_from:?}"
    );

    let crashed = ReadModelDb::open(dir.path().join("model"), "accountability").expect("reopen");
    assert_eq!(
        crashed
            .checkpoint(crashed.live_generation())
            .expect("checkpoint")
            .position,
        last
    );
    let clean = runtime.block_on(async {
        let store = EventStore::open(dir.path().join("log"), StoreOptions::default()).expect("log");
        let db = ReadModelDb::open(dir.path().join("clean"), "accountability").expect("open");
        rebuild_to(
            Arc::new(AccountabilityProjector),
            db.clone(),
            LocalLogSource::new(store),
            RuntimeOptions::default(),
            Position(last),
            |_| {},
        )
        .await
        .expect("clean rebuild");
        dump_live(&db)
    });
    let survived = dump_live(&crashed);
    assert_eq!(survived.len(), clean.len(), "same number of records");
    assert!(
        survived == clean,
        "the crashed model differs from a clean rebuild"
    );
}
