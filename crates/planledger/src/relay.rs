//! `planledger relay reset`: start a new event stream after the relay halted, and republish
//! the log into it, with a progress bar.

use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use planledger_bus::{Relay, RelayConfig, reset_stream};
use planledger_store::{EventStore, Position, StoreOptions};

/// Subcommands of `planledger relay`.
#[derive(clap::Subcommand, Debug)]
pub enum RelayCommand {
    /// Delete the JetStream event stream, create it anew and republish the log into it
    /// (service stopped): after the relay halted because the stream was deleted or purged.
    Reset(ResetArgs),
}

/// Flags of `relay reset`.
#[derive(clap::Args, Debug)]
pub struct ResetArgs {
    /// Data directory of the stopped service (its event log is read, never written).
    #[arg(long, env = "PLANLEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// NATS URL.
    #[arg(long, env = "PLANLEDGER_NATS")]
    pub nats: String,
    /// JetStream stream to replace.
    #[arg(
        long,
        env = "PLANLEDGER_NATS_STREAM",
        default_value = "PLANLEDGER_EVENTS"
    )]
    pub nats_stream: String,
    /// JetStream replicas of the new stream.
    #[arg(long, env = "PLANLEDGER_NATS_REPLICAS", default_value_t = 1)]
    pub nats_replicas: usize,
    /// First position the new stream holds (at sequence 1); earlier events are not
    /// republished. Default 1: the whole log.
    #[arg(long, default_value_t = 1)]
    pub from_position: u64,
}

/// Runs `planledger relay ...`.
pub async fn run(command: RelayCommand) -> Result<()> {
    match command {
        RelayCommand::Reset(args) => reset(args).await,
    }
}

async fn reset(args: ResetArgs) -> Result<()> {
    crate::init_tracing(crate::config::LogFormat::Pretty);
    let log = args.data_dir.join("log");
    let store = EventStore::open(&log, StoreOptions::default()).with_context(|| {
        format!(
            "opening the event log in {} (stop the service first: the reset replaces the stream its relay publishes to)",
            log.display()
        )
    })?;
    let config = RelayConfig {
        url: args.nats.clone(),
        stream: args.nats_stream.clone(),
        replicas: args.nats_replicas,
        client_name: "planledger-relay-reset".into(),
        ..RelayConfig::default()
    };
    let target = store.last_position();
    let reset = reset_stream(&store, &config, Position(args.from_position))
        .await
        .with_context(|| format!("resetting stream {} at {}", config.stream, config.url))?;
    match reset.deleted_messages {
        Some(messages) => println!(
            "deleted stream {} ({messages} messages) and created it anew",
            config.stream
        ),
        None => println!("created stream {}", config.stream),
    }

    let relay = Relay::new(store.clone(), config.clone()).context("configuring the relay")?;
    let status = relay.status();
    let waiter = status.clone();
    let task = tokio::spawn(relay.run(async move {
        let _ = waiter.wait_published(target).await;
    }));
    let bar = ProgressBar::new(target.get());
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} {bar:40} {pos}/{len} events  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("republish");
    bar.set_position(reset.from.get() - 1);
    let mut published = status.published_position();
    let mut halted = status.watch();
    loop {
        if published.borrow().get() >= target.get() {
            break;
        }
        tokio::select! {
            changed = published.changed() => {
                if changed.is_err() {
                    break;
                }
                bar.set_position(published.borrow().get());
            }
            changed = halted.changed() => {
                if changed.is_err() {
                    break;
                }
                let current = halted.borrow().clone();
                if let Some(reason) = current.halted {
                    bar.abandon();
                    anyhow::bail!(
                        "the relay halted during the reset ({}): {}",
                        reason.as_str(),
                        current.last_error.unwrap_or_default()
                    );
                }
            }
        }
    }
    task.await
        .context("relay task")?
        .context("republishing the log")?;
    bar.finish_and_clear();
    let last = status.current();
    if last.published_position < target.get() {
        anyhow::bail!(
            "the relay stopped at position {} of {}: {}",
            last.published_position,
            target,
            last.last_error
                .unwrap_or_else(|| "no error was reported".into())
        );
    }
    println!(
        "republished positions {} to {} into stream {} (position p at sequence p - {}); start the service again",
        reset.from,
        last.published_position,
        config.stream,
        reset.from.get() - 1
    );
    println!(
        "consumers of the old stream were deleted with it: recreate them (projectors over NATS recreate theirs at start)"
    );
    drop(store);
    Ok(())
}

/// How long a catch-up from the event stream may go without progress before it gives up.
const CATCH_UP_STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// Says how many caught-up appends came without their command record: a resend of one of
/// their `Idempotency-Key`s is appended again instead of being answered as a repeat.
fn report_command_records(caught_up: &planledger_bus::CaughtUp) {
    if caught_up.without_command == 0 {
        println!(
            "every one of the {} caught-up appends carried its command record: a resent Idempotency-Key of any of them is answered as a repeat",
            caught_up.appends
        );
        return;
    }
    println!(
        "{} of the {} caught-up appends ({} events) had no command record: their commands had no Idempotency-Key, or a relay that did not publish command headers yet published them; a resent key of one of those is appended again",
        caught_up.without_command, caught_up.appends, caught_up.events_without_command
    );
}

/// Brings the log in `log` (restored from a backup, no service running on it) up to what the
/// relay's event stream holds: the events published after the backup are read back from the
/// stream and applied with the writer's checks (the log must be a prefix of the stream), so a
/// relay started on it resumes at the stream's end instead of halting (`log_behind`).
pub async fn catch_up_from_stream(log: &std::path::Path, url: &str, stream: &str) -> Result<()> {
    let client = planledger_bus::connect(url, "planledger-restore")
        .await
        .with_context(|| format!("connecting to NATS at {url}"))?;
    let Some(source) = planledger_bus::EventStreamLog::open(client, stream)
        .await
        .with_context(|| format!("reading the event stream {stream}"))?
    else {
        println!("the event stream {stream} holds no events: nothing to catch up");
        return Ok(());
    };
    let stream_last = source.last_position_now().await?;
    let log_last = planledger_store::LogCopy::open(log)?
        .summary()?
        .last_position;
    if stream_last <= log_last {
        println!(
            "the event stream {stream} ends at position {stream_last}, the log at {log_last}: nothing to catch up (the relay publishes the rest)"
        );
        return Ok(());
    }
    let source = std::sync::Arc::new(source);
    let options = StoreOptions {
        commit: planledger_store::Commit::External(source.clone()),
        ..StoreOptions::default()
    };
    let path = log.to_path_buf();
    let store = tokio::task::spawn_blocking(move || EventStore::open(&path, options))
        .await
        .context("opening the restored log")??;
    let bar = ProgressBar::new(stream_last.get());
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} {bar:40} {pos}/{len} events  {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("catch up");
    let mut last_progress = (store.last_position(), std::time::Instant::now());
    loop {
        bar.set_position(store.last_position().get());
        match store.health() {
            planledger_store::LogHealth::CatchingUp => {}
            planledger_store::LogHealth::Stopped(failure) => {
                bar.abandon();
                anyhow::bail!(
                    "the restored log is not a prefix of the event stream {stream}, so it cannot be caught up from it: {}; restore a backup of this stream's log, or start without --nats and reset the stream (planledger relay reset)",
                    failure.message()
                );
            }
            _ => break,
        }
        if store.last_position() != last_progress.0 {
            last_progress = (store.last_position(), std::time::Instant::now());
        } else if last_progress.1.elapsed() > CATCH_UP_STALL {
            bar.abandon();
            anyhow::bail!(
                "the catch-up from the event stream {stream} made no progress for {CATCH_UP_STALL:?} at position {}: check that NATS answers, then run the restore again into a new directory",
                store.last_position()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    bar.finish_and_clear();
    let caught_up = store.last_position();
    if caught_up < stream_last {
        anyhow::bail!(
            "the catch-up from the event stream {stream} stopped at position {caught_up} of {stream_last} (the stream could not be read; see the log above): check that NATS answers, then run the restore again into a new directory"
        );
    }
    tokio::task::spawn_blocking(move || store.flush())
        .await
        .context("flushing the restored log")??;
    println!(
        "caught up positions {} to {caught_up} from the event stream {stream}; the relay resumes after {caught_up}",
        log_last.get() + 1
    );
    report_command_records(&source.caught_up());
    Ok(())
}
