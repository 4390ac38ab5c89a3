//! `planledger backup` and `planledger restore`: consistent copies of a data directory's event
//! logs (one node's `log`, or a cluster node's partition caches `partitions/<p>/log`) taken
//! while the service runs, with a manifest, and their checked return.
//!
//! A running service takes the RocksDB checkpoints itself, asked over its control socket
//! (`control.rs`); a log nobody holds open is opened and checkpointed here.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use planledger_store::{LogCopy, Position};

use crate::control;

/// The manifest's file name in a backup.
pub const MANIFEST: &str = "backup.json";
/// The manifest's format.
const FORMAT: &str = "planledger-backup-v1";
/// Files of the data directory a restore needs besides the logs (when they exist): the digest
/// signing key (digests signed before stay checkable) and the token signing key.
const KEY_FILES: [&str; 2] = [
    planledger_app::audit::DIGEST_KEY_FILE,
    planledger_app::auth::KEY_FILE,
];

/// Flags of `backup`.
#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// Data directory of a node, running or not.
    #[arg(long, env = "PLANLEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Directory to write the backup to: new or empty.
    #[arg(long)]
    pub to: PathBuf,
}

/// Flags of `restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// A directory `planledger backup` wrote.
    #[arg(long)]
    pub from: PathBuf,
    /// Data directory to restore into: new or empty (with `--partition`: a stopped node's, in
    /// which that partition's cache is missing).
    #[arg(long, env = "PLANLEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Restore only this partition's cache (cluster mode).
    #[arg(long)]
    pub partition: Option<u32>,
    /// One node: NATS URL of the relay's event stream; events published after the backup are
    /// read back from it into the restored log, so the relay resumes at the stream's end.
    #[arg(long, env = "PLANLEDGER_NATS")]
    pub nats: Option<String>,
    /// The relay's JetStream stream.
    #[arg(
        long,
        env = "PLANLEDGER_NATS_STREAM",
        default_value = "PLANLEDGER_EVENTS"
    )]
    pub nats_stream: String,
}

/// The manifest of a backup.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct Manifest {
    /// `planledger-backup-v1`.
    pub format: String,
    /// When the backup was taken.
    pub created_at: jiff::Timestamp,
    /// The data directory it was taken of.
    pub source: PathBuf,
    /// The log id of a single node's log (`None` for a cluster node's caches).
    pub log_id: Option<String>,
    /// Each log copied.
    pub logs: Vec<LogEntry>,
    /// Other files copied (key files).
    pub files: Vec<String>,
}

/// One log of a backup.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct LogEntry {
    /// Its path relative to the data directory (`log`, `partitions/<p>/log`).
    pub path: String,
    /// The log's identity.
    pub log_id: Option<String>,
    /// Its last position when copied.
    pub last_position: u64,
    /// The hash at that position.
    pub last_hash: String,
}

/// The event logs of a data directory, as paths relative to it.
fn logs_in(data_dir: &Path) -> Result<Vec<String>> {
    let mut logs = Vec::new();
    if data_dir.join("log").join("CURRENT").is_file() {
        logs.push("log".to_string());
    }
    let partitions = data_dir.join("partitions");
    if partitions.is_dir() {
        let mut found: Vec<u32> = std::fs::read_dir(&partitions)
            .with_context(|| format!("listing {}", partitions.display()))?
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .filter(|p: &u32| {
                partitions
                    .join(p.to_string())
                    .join("log")
                    .join("CURRENT")
                    .is_file()
            })
            .collect();
        found.sort_unstable();
        logs.extend(found.into_iter().map(|p| format!("partitions/{p}/log")));
    }
    Ok(logs)
}

/// Fails unless `dir` does not exist or is an empty directory.
fn require_empty(dir: &Path, what: &str) -> Result<()> {
    match std::fs::read_dir(dir) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error).with_context(|| format!("reading {}", dir.display())),
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => bail!(
                "{} is not empty: {what} only into a new or empty directory (nothing is overwritten); name another directory or remove this one",
                dir.display()
            ),
        },
    }
}

fn bar(len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{msg:>22}} {{bar:30}} {{pos}}/{{len}} {unit}  {{elapsed}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Runs `backup`.
pub async fn run_backup(args: BackupArgs) -> Result<()> {
    let started = Instant::now();
    require_empty(&args.to, "a backup is written")?;
    let logs = logs_in(&args.data_dir)?;
    if logs.is_empty() {
        bail!(
            "{} holds no event log (neither log/ nor partitions/<p>/log/): give the --data-dir of a node that has run",
            args.data_dir.display()
        );
    }
    std::fs::create_dir_all(&args.to).with_context(|| format!("creating {}", args.to.display()))?;
    let to = std::path::absolute(&args.to)
        .with_context(|| format!("resolving {}", args.to.display()))?;
    let progress = bar(logs.len() as u64, "logs");
    progress.set_message("checkpoint");
    copy_logs(&args.data_dir, &to, &logs, &progress).await?;
    progress.finish_and_clear();

    let mut files = Vec::new();
    for name in KEY_FILES {
        let source = args.data_dir.join(name);
        if source.is_file() {
            std::fs::copy(&source, to.join(name))
                .with_context(|| format!("copying {}", source.display()))?;
            files.push(name.to_string());
        }
    }
    let mut entries = Vec::with_capacity(logs.len());
    for log in &logs {
        let summary = LogCopy::open(&to.join(log))
            .and_then(|copy| copy.summary())
            .with_context(|| format!("reading the copy of {log}"))?;
        entries.push(LogEntry {
            path: log.clone(),
            log_id: summary.log_id,
            last_position: summary.last_position.get(),
            last_hash: summary.last_hash,
        });
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        created_at: jiff::Timestamp::now(),
        source: std::path::absolute(&args.data_dir).unwrap_or(args.data_dir.clone()),
        log_id: entries
            .iter()
            .find(|entry| entry.path == "log")
            .and_then(|entry| entry.log_id.clone()),
        logs: entries,
        files,
    };
    let text = serde_json::to_string_pretty(&manifest)?;
    std::fs::write(to.join(MANIFEST), text + "\n")
        .with_context(|| format!("writing {}", to.join(MANIFEST).display()))?;
    for entry in &manifest.logs {
        println!(
            "{}: positions 1 to {} (hash {})",
            entry.path, entry.last_position, entry.last_hash
        );
    }
    println!(
        "backup of {} written to {} in {:.1} s ({} bytes); read models are not copied (they are rebuilt from the log)",
        args.data_dir.display(),
        to.display(),
        started.elapsed().as_secs_f64(),
        dir_size(&to)
    );
    Ok(())
}

/// Checkpoints every log: the running service's through its control socket, the others here.
async fn copy_logs(
    data_dir: &Path,
    to: &Path,
    logs: &[String],
    progress: &ProgressBar,
) -> Result<()> {
    let request = control::Request {
        to: to.to_path_buf(),
        logs: logs.to_vec(),
    };
    let mut left: Vec<String> = logs.to_vec();
    if let Some(answers) = control::request(data_dir, &request).await? {
        for answer in answers {
            match answer {
                control::Answer::Copied { log } => {
                    left.retain(|l| *l != log);
                    progress.inc(1);
                }
                control::Answer::NotOpen { .. } => {}
                control::Answer::Failed { log, error } => {
                    bail!("the running service could not checkpoint {log}: {error}")
                }
            }
        }
    }
    for log in left {
        let (from, target) = (data_dir.join(&log), to.join(&log));
        tokio::task::spawn_blocking(move || planledger_store::checkpoint_closed(&from, &target))
            .await
            .context("checkpoint task")?
            .with_context(|| {
                format!(
                    "checkpointing {} (a process holds it open but did not answer on {}: is it an older planledger? stop it, or back up while it serves)",
                    data_dir.join(&log).display(),
                    data_dir.join(control::SOCKET).display()
                )
            })?;
        progress.inc(1);
    }
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_size(&entry.path()),
            _ => entry.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// Reads and checks a backup's manifest.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is {} a directory `planledger backup` wrote?)",
            path.display(),
            dir.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a backup manifest", path.display()))?;
    if manifest.format != FORMAT {
        bail!(
            "{} has format {:?}; this build restores {FORMAT:?}",
            path.display(),
            manifest.format
        );
    }
    Ok(manifest)
}

/// Checks a backed-up log against its manifest entry and walks its chain.
pub fn check_copy(dir: &Path, entry: &LogEntry) -> Result<()> {
    let copy = LogCopy::open(&dir.join(&entry.path))
        .with_context(|| format!("opening the backup's {}", entry.path))?;
    let summary = copy.summary()?;
    if summary.log_id != entry.log_id
        || summary.last_position.get() != entry.last_position
        || summary.last_hash != entry.last_hash
    {
        bail!(
            "the backup's {} ends at position {} (hash {}, log {:?}) but its manifest says {} (hash {}, log {:?}): the backup was altered; use another one",
            entry.path,
            summary.last_position,
            summary.last_hash,
            summary.log_id,
            entry.last_position,
            entry.last_hash,
            entry.log_id
        );
    }
    let progress = bar(entry.last_position, "events");
    progress.set_message(format!("verify {}", entry.path));
    let report = copy.verify(|p: Position| {
        if p.get().is_multiple_of(1024) {
            progress.set_position(p.get());
        }
    })?;
    progress.finish_and_clear();
    if let Some((position, why)) = report.first_broken {
        bail!(
            "the backup's {} is broken at position {position}: {why}; use another backup",
            entry.path
        );
    }
    Ok(())
}

/// Runs `restore`.
pub async fn run_restore(args: RestoreArgs) -> Result<()> {
    let manifest = read_manifest(&args.from)?;
    let entries: Vec<LogEntry> = match args.partition {
        None => manifest.logs.clone(),
        Some(p) => {
            let path = format!("partitions/{p}/log");
            let entry = manifest
                .logs
                .iter()
                .find(|e| e.path == path)
                .with_context(|| {
                    format!(
                        "the backup in {} holds no cache of partition {p}",
                        args.from.display()
                    )
                })?;
            vec![entry.clone()]
        }
    };
    let _lock = match args.partition {
        None => {
            require_empty(&args.data_dir, "a backup is restored")?;
            None
        }
        Some(_) => {
            require_empty(
                &args.data_dir.join(&entries[0].path),
                "a partition cache is restored",
            )?;
            Some(crate::node::lock_data_dir(&args.data_dir)?)
        }
    };
    for entry in &entries {
        check_copy(&args.from, entry)?;
    }
    for entry in &entries {
        copy_dir(
            &args.from.join(&entry.path),
            &args.data_dir.join(&entry.path),
        )?;
    }
    for name in &manifest.files {
        let target = args.data_dir.join(name);
        if !target.exists() {
            std::fs::copy(args.from.join(name), &target)
                .with_context(|| format!("copying {name}"))?;
        }
    }
    for entry in &entries {
        println!(
            "restored {} (positions 1 to {}, verified) into {}",
            entry.path,
            entry.last_position,
            args.data_dir.join(&entry.path).display()
        );
    }
    if let (Some(url), None) = (&args.nats, args.partition) {
        crate::relay::catch_up_from_stream(&args.data_dir.join("log"), url, &args.nats_stream)
            .await?;
    }
    println!(
        "start the node on {}; read models are rebuilt from the log{}",
        args.data_dir.display(),
        if args.partition.is_some() {
            ", and the cache catches up with its partition stream"
        } else {
            ""
        }
    );
    Ok(())
}

/// Copies a directory (one level: a RocksDB directory has no subdirectories) into `to`, via a
/// temporary sibling renamed into place, so a failed copy leaves nothing half-written there.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let parent = to.parent().context("the target has a parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = parent.join(format!(
        ".{}.restoring",
        to.file_name().and_then(|n| n.to_str()).unwrap_or("log")
    ));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry?;
        std::fs::copy(entry.path(), staging.join(entry.file_name()))
            .with_context(|| format!("copying {}", entry.path().display()))?;
    }
    if to.exists() {
        std::fs::remove_dir(to).with_context(|| format!("removing the empty {}", to.display()))?;
    }
    std::fs::rename(&staging, to)
        .with_context(|| format!("moving {} to {}", staging.display(), to.display()))?;
    Ok(())
}
