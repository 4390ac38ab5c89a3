//! `planledger export`: writes a range of the event log to an NDJSON or Parquet file, reading
//! the log as a secondary instance, so it works while `planledger serve` holds it. With
//! `--proof` every row carries its event's inclusion proof and the signed checkpoint of their
//! tree is written beside the file (`audit verify-export` checks both offline).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::ProgressBar;
use planledger_export::{ExportOptions, ExportReport, Format, Output};
use planledger_store::{LogReader, Position, StoreOptions};

/// File formats of `export`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// One envelope JSON per line, exactly as `GET /v1/events` renders it.
    Ndjson,
    /// Apache Parquet: one typed row per event, zstd-compressed.
    Parquet,
}

impl From<ExportFormat> for Format {
    fn from(format: ExportFormat) -> Self {
        match format {
            ExportFormat::Ndjson => Format::Ndjson,
            ExportFormat::Parquet => Format::Parquet,
        }
    }
}

/// Flags of `export`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Incremental feeds: the summary names the position an export read \
through; the next run with --from-position of that position + 1 continues it, and the files \
together equal one full export."
)]
pub struct ExportArgs {
    /// Data directory of the service (its log is read without taking the lock, so the service
    /// may keep running).
    #[arg(long, env = "PLANLEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// File format.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// First global position to export.
    #[arg(long, default_value_t = 1)]
    pub from_position: u64,
    /// Last global position to export (default: the end of the log when the export starts).
    #[arg(long)]
    pub to_position: Option<u64>,
    /// Export only this tenant's events.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Output file; `-` writes NDJSON to standard output. A file is written beside the target
    /// first and renamed into place once complete.
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
    /// Cluster mode: read the partition streams of the JetStream cluster at this NATS URL (the
    /// truth of each partition's log) instead of a data directory; every row carries its
    /// partition.
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// Cluster mode: export only this partition (--from-position and --to-position are its
    /// positions). Default: every partition, one after another.
    #[arg(long, requires = "nats")]
    pub partition: Option<u32>,
    /// Cluster mode, every partition: continue after this cursor (the one the previous
    /// export printed).
    #[arg(long, requires = "nats", conflicts_with = "partition")]
    pub from_cursor: Option<String>,
    /// Every row carries its event's stored envelope and its Merkle inclusion proof in the
    /// tree of the export's last position; the checkpoint of that tree, signed with the
    /// service's digest key, is written beside the file as FILE.checkpoint. Check both offline
    /// with `planledger audit verify-export`.
    #[arg(long)]
    pub proof: bool,
    /// With --proof: the digest key file to sign the checkpoint with (default: the data
    /// directory's digest-signing.key, the key `planledger serve` signs with).
    #[arg(long, value_name = "FILE", requires = "proof")]
    pub digest_key: Option<PathBuf>,
}

/// Runs `export`: from a data directory, or with `--nats` from a cluster's partition streams.
pub async fn command(args: ExportArgs) -> Result<()> {
    if args.proof && args.nats.is_some() {
        bail!(
            "--proof reads the Merkle tree a log's data directory keeps, and a cluster's partition streams hold none: export one partition with proofs from a node's cache of it, `planledger export --proof --data-dir NODE_DATA_DIR/partitions/P --digest-key NODE_DATA_DIR/digest-signing.key` (its positions and checkpoint are the partition's), or read events with their proofs through a node, GET /v1/events?partition=P&proof=true"
        );
    }
    match args.nats.clone() {
        Some(nats) => run_cluster(args, &nats).await,
        None => run(args),
    }
}

/// Runs `export` over a data directory's log.
fn run(args: ExportArgs) -> Result<()> {
    let to_stdout = args.to.as_os_str() == "-";
    if to_stdout && args.format == ExportFormat::Parquet {
        bail!(
            "--to - writes to standard output, which only NDJSON can stream; give a file name for Parquet (e.g. --to events.parquet)"
        );
    }
    if args.proof && to_stdout {
        bail!(
            "--proof writes the signed checkpoint of the proofs beside the export (FILE.checkpoint): give a file name with --to (e.g. --to events.ndjson)"
        );
    }
    // The key is read before anything is exported: a refusal costs nothing.
    let signer = args.proof.then(|| proof_signer(&args)).transpose()?;
    let log_dir = args.data_dir.join("log");
    let reader = LogReader::open(&log_dir, &StoreOptions::default())
        .with_context(|| format!("opening the event log in {} to read", log_dir.display()))?;
    let origin = match &signer {
        Some(_) => Some(planledger_app::checkpoint::origin(
            &reader.log_id()?.with_context(|| {
                format!(
                    "the log in {} has no log id yet, so its checkpoints have no origin: start `planledger serve` on it once",
                    log_dir.display()
                )
            })?,
        )),
        None => None,
    };
    let options = ExportOptions {
        format: args.format.into(),
        from: Position(args.from_position.max(1)),
        to: args.to_position.map(Position),
        tenant: args.tenant.clone(),
    };
    let view = reader.view();
    let end = options
        .to
        .unwrap_or(view.last_position())
        .min(view.last_position());
    let bar = progress_bar(
        end.get()
            .saturating_sub(options.from.get().saturating_sub(1)),
    );
    let first = options.from.get();
    let mut shown = 0u64;
    let progress = |position: Position| {
        let done = position.get() + 1 - first;
        if done - shown >= 4096 {
            bar.set_position(done);
            shown = done;
        }
    };
    let started = Instant::now();
    let (report, proved) = match (&signer, &origin) {
        (Some(key), Some(origin)) => {
            let mut proved = None;
            let report = write_file(&args.to, |file| {
                let export = planledger_export::export_with_proofs(
                    &view,
                    &options,
                    origin,
                    Output::File(file),
                    progress,
                )?;
                let report = export.report.clone();
                proved = Some(export);
                Ok(report)
            })?;
            let export = proved.expect("written with its proofs");
            let checkpoint =
                write_checkpoint(&args.to, key, origin, export.tree_size, export.root)?;
            (report, Some((export.tree_size, checkpoint, key)))
        }
        _ if to_stdout => {
            let mut stdout = std::io::stdout();
            let report =
                planledger_export::export(&view, &options, Output::Writer(&mut stdout), progress)?;
            (report, None)
        }
        _ => {
            let report = write_file(&args.to, |file| {
                Ok(planledger_export::export(
                    &view,
                    &options,
                    Output::File(file),
                    progress,
                )?)
            })?;
            (report, None)
        }
    };
    bar.finish_and_clear();
    let mut line = summary(
        &report,
        options.format,
        &args.to,
        started.elapsed().as_secs_f64(),
    );
    if let Some((tree_size, checkpoint, key)) = proved {
        line.push_str(&format!(
            "; every row's inclusion proof is in the tree of {tree_size} events, whose checkpoint (signed with key {}) is in {}: check with `planledger audit verify-export --checkpoint {} --public-key {} --export {}`",
            key.public().key_id,
            checkpoint.display(),
            checkpoint.display(),
            key.public().public_key,
            args.to.display(),
        ));
    }
    eprintln!("{line}");
    Ok(())
}

/// The digest key `export --proof` signs its checkpoint with: `--digest-key`, or the data
/// directory's.
fn proof_signer(args: &ExportArgs) -> Result<planledger_app::DigestKey> {
    let path = args
        .digest_key
        .clone()
        .unwrap_or_else(|| args.data_dir.join(planledger_app::audit::DIGEST_KEY_FILE));
    planledger_app::DigestKey::load_file(&path).map_err(|e| {
        anyhow::anyhow!(
            "--proof signs the checkpoint of the proofs' tree with the service's digest key, and it cannot be read ({e}): run the export as a user who may read {}, or pass --digest-key FILE (the digest-signing.key of the service that writes this log)",
            path.display()
        )
    })
}

/// Signs the checkpoint of the tree of `tree_size` events (root `root`) and writes it beside
/// `target` as `<target>.checkpoint`, renamed into place once complete; returns its path.
fn write_checkpoint(
    target: &Path,
    key: &planledger_app::DigestKey,
    origin: &str,
    tree_size: u64,
    root: planledger_store::merkle::Hash,
) -> Result<PathBuf> {
    let note = key.sign_checkpoint(&planledger_app::checkpoint::Checkpoint {
        origin: origin.to_owned(),
        tree_size,
        root,
    });
    let path = checkpoint_path(target);
    crate::witness::write_atomically(&path, note.as_bytes())?;
    Ok(path)
}

/// Where `export --proof` writes the checkpoint of an export to `target`: `<target>.checkpoint`.
pub fn checkpoint_path(target: &Path) -> PathBuf {
    let mut path = target.as_os_str().to_owned();
    path.push(".checkpoint");
    PathBuf::from(path)
}

/// What the reader of a cluster export hands the writer.
enum Read {
    /// An event, or why reading stopped.
    Event(Result<planledger_export::PartitionedEvent, planledger_export::ExportError>),
    /// Every partition was read to its end.
    Done,
}

/// Runs `export --nats`: reads each partition's stream in turn (one tenant's subjects with
/// `--tenant`) and writes its events with their partition.
async fn run_cluster(args: ExportArgs, nats: &str) -> Result<()> {
    use planledger_bus::partition_feed::{PartitionFeed, event_json};
    let to_stdout = args.to.as_os_str() == "-";
    if to_stdout && args.format == ExportFormat::Parquet {
        bail!(
            "--to - writes to standard output, which only NDJSON can stream; give a file name for Parquet (e.g. --to events.parquet)"
        );
    }
    let client = planledger_bus::connect(nats, "planledger-export").await?;
    let config = crate::cluster::configuration(&client, nats).await?;
    let count = config.partition_count;
    let js = async_nats::jetstream::new(client.clone());
    let mut starts = std::collections::BTreeMap::new();
    let partitions: Vec<u32> = match args.partition {
        Some(p) if p >= count => bail!(
            "--partition {p} is not a partition of this cluster: it has partitions 0 to {}",
            count - 1
        ),
        Some(p) => {
            starts.insert(p, args.from_position.max(1));
            vec![p]
        }
        None => {
            if args.from_position != 1 || args.to_position.is_some() {
                bail!(
                    "--from-position and --to-position name positions of one partition's log: add --partition P, or continue an export of every partition with --from-cursor"
                );
            }
            if let Some(text) = &args.from_cursor {
                let cursor = planledger_app::Bookmark::parse(text)
                    .map_err(|e| anyhow::anyhow!("--from-cursor: {e}"))?;
                for (log, position) in cursor.positions() {
                    match log.partition() {
                        Some(p) if p < count => {
                            let next = position.checked_add(1).with_context(|| {
                                format!("--from-cursor names position {position} of partition {p}, past any log")
                            })?;
                            starts.insert(p, next);
                        }
                        _ => bail!(
                            "--from-cursor names a log this cluster does not have; pass the cursor a previous export of this cluster printed"
                        ),
                    }
                }
            }
            (0..count).collect()
        }
    };
    let mut feeds = Vec::with_capacity(partitions.len());
    // (partition, first position, last position) of each partition read, in partition order.
    let mut parts: Vec<(u32, u64, u64)> = Vec::new();
    for p in partitions {
        let feed = PartitionFeed::open(&js, p).await.map_err(|e| match e {
            planledger_bus::BusError::PartitionStreamMissing { stream } => anyhow::anyhow!(
                "the partition stream {stream} does not exist: recreate it with `planledger cluster repair --partition {p} --from DIR`, or export the other partitions one by one with --partition"
            ),
            other => other.into(),
        })?;
        let last = feed.last_position().await?;
        let first = starts.get(&p).copied().unwrap_or(1);
        let end = args.to_position.map_or(last, |to| to.min(last));
        if let Some(to) = args.to_position
            && to < first
        {
            bail!(
                "--from-position {first} is past --to-position {to}; give a range with from <= to"
            );
        }
        parts.push((p, first, end));
        feeds.push(feed);
    }
    let total: u64 = parts
        .iter()
        .map(|(_, first, end)| (end + 1).saturating_sub(*first))
        .sum();
    let bar = progress_bar(total);
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Read>(8192);
    let tenant = args.tenant.clone();
    let read_parts = parts.clone();
    let reader = tokio::spawn(async move {
        for (feed, (partition, first, end)) in feeds.into_iter().zip(read_parts) {
            let mut after = first - 1;
            while after < end {
                let page = match feed.page(tenant.as_deref(), after, 4096).await {
                    Ok(page) => page,
                    Err(error) => {
                        let _ = sender
                            .send(Read::Event(Err(planledger_export::ExportError::Source(
                                format!("partition {partition}: {error}"),
                            ))))
                            .await;
                        return;
                    }
                };
                for envelope in &page.events {
                    let position = envelope.position.get();
                    if position > end {
                        break;
                    }
                    let item = event_json(partition, envelope)
                        .map(|json| planledger_export::PartitionedEvent {
                            partition,
                            position: envelope.position,
                            json: json.into_bytes(),
                        })
                        .map_err(|e| planledger_export::ExportError::Envelope {
                            position,
                            detail: e.to_string(),
                        });
                    if sender.send(Read::Event(item)).await.is_err() {
                        return;
                    }
                }
                match page.events.last() {
                    // The stream holds nothing more of this tenant up to the end.
                    _ if page.at_end => break,
                    Some(last) => after = last.position.get(),
                    None => break,
                }
            }
        }
        let _ = sender.send(Read::Done).await;
    });
    let format: Format = args.format.into();
    let started = Instant::now();
    let target = args.to.clone();
    let bar_in = bar.clone();
    let firsts: std::collections::BTreeMap<u32, u64> =
        parts.iter().map(|(p, first, _)| (*p, first - 1)).collect();
    let written = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut cursor = planledger_app::Bookmark::default();
        // Positions read so far per partition (for the bar: with a tenant filter positions
        // are skipped, and the bar counts positions).
        let mut read: std::collections::BTreeMap<u32, u64> = firsts;
        let mut done = 0u64;
        let mut finished = false;
        // Only an explicit end from the reader ends the events: a reader that stopped without
        // it (a panic) fails the export instead of leaving a short file under the target name.
        let events = std::iter::from_fn(|| {
            if finished {
                return None;
            }
            match receiver.blocking_recv() {
                Some(Read::Event(item)) => Some(item),
                Some(Read::Done) => {
                    finished = true;
                    None
                }
                None => {
                    finished = true;
                    Some(Err(planledger_export::ExportError::Source(
                        "the reader of the partition streams stopped before the end".into(),
                    )))
                }
            }
        });
        let mut progress = |event: &planledger_export::PartitionedEvent| {
            let position = event.position.get();
            cursor.add(planledger_app::LogRef::Partition(event.partition), position);
            let previous = read.insert(event.partition, position).unwrap_or(0);
            let step = position.saturating_sub(previous);
            done += step;
            if done % 4096 < step {
                bar_in.set_position(done);
            }
        };
        let report = if to_stdout {
            let mut stdout = std::io::stdout();
            planledger_export::export_partitioned(
                events,
                format,
                Output::Writer(&mut stdout),
                &mut progress,
            )?
        } else {
            write_file(&target, |file| {
                Ok(planledger_export::export_partitioned(
                    events,
                    format,
                    Output::File(file),
                    &mut progress,
                )?)
            })?
        };
        Ok((report, cursor))
    })
    .await
    .context("the export's writer stopped")
    .and_then(|written| written);
    if written.is_err() {
        reader.abort();
    }
    let (report, cursor) = written?;
    reader.await.context("the export's reader stopped")?;
    bar.finish_and_clear();
    // Where the next export continues: every partition read through its end.
    let mut next = planledger_app::Bookmark::default();
    for (partition, first, end) in &parts {
        next.add(
            planledger_app::LogRef::Partition(*partition),
            (*end).max(first - 1),
        );
    }
    debug_assert!(
        cursor
            .positions()
            .all(|(log, position)| next.positions().any(|(l, p)| l == log && p >= position))
    );
    let seconds = started.elapsed().as_secs_f64();
    let target = if to_stdout {
        "standard output".to_owned()
    } else {
        args.to.display().to_string()
    };
    let continuation = match args.partition {
        Some(p) => format!(
            "continue with --partition {p} --from-position {}",
            parts
                .first()
                .map_or(1, |(_, first, end)| (*end).max(first - 1) + 1)
        ),
        None => format!("continue with --from-cursor {next}"),
    };
    eprintln!(
        "exported {} events of {} partition(s) as {} to {target}: {} bytes in {seconds:.2} s ({:.0} events/s); read through {}; {continuation}",
        report.events,
        parts.len(),
        format.as_str(),
        report.bytes,
        report.events as f64 / seconds.max(1e-9),
        parts
            .iter()
            .map(|(p, _, end)| format!("p{p}={end}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    Ok(())
}

/// Writes through `write` into a partial file beside `target`, and renames it into place only
/// when `write` succeeded (a failed export leaves no half file under the target's name).
fn write_file(
    target: &Path,
    write: impl FnOnce(&mut std::fs::File) -> Result<ExportReport>,
) -> Result<ExportReport> {
    let mut partial = target.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut file = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let report = match write(&mut file).and_then(|report| {
        file.flush()?;
        file.sync_all()
            .with_context(|| format!("syncing {}", partial.display()))?;
        Ok(report)
    }) {
        Ok(report) => report,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
    };
    std::fs::rename(&partial, target)
        .with_context(|| format!("renaming {} to {}", partial.display(), target.display()))?;
    Ok(report)
}

/// The export's bar (hidden unless standard error is a terminal).
fn progress_bar(total: u64) -> ProgressBar {
    crate::progress_bar(
        total,
        "{msg:>10} {bar:40} {pos}/{len} positions  {per_sec}  eta {eta}",
        "exporting",
    )
}

/// The line printed when an export is done: what it wrote and where the next one starts.
pub fn summary(report: &ExportReport, format: Format, to: &Path, seconds: f64) -> String {
    let target = if to.as_os_str() == "-" {
        "standard output".to_owned()
    } else {
        to.display().to_string()
    };
    let range = match (report.first_position, report.last_position) {
        (Some(first), Some(last)) => format!("positions {first} to {last}"),
        _ => "no positions".to_owned(),
    };
    format!(
        "exported {} events ({range}) as {} to {target}: {} bytes in {seconds:.2} s ({:.0} events/s); read through position {} (continue with --from-position {})",
        report.events,
        format.as_str(),
        report.bytes,
        report.events as f64 / seconds.max(1e-9),
        report.through_position,
        report.through_position.get() + 1,
    )
}
