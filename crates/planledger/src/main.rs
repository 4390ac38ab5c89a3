//! The `planledger` binary: wires the crates into commands an operator runs.
//!
//! `serve` runs the API, the writer, the relay and the projectors; `token` mints JWTs; `verify`
//! walks the hash chain; `export` writes the log to NDJSON or Parquet; `replay` rebuilds a read
//! model or prints a plan as it stood; `demo` seeds a sample plan and serves it; `cluster init`
//! creates cluster mode's partition streams; `backup` and `restore` copy a node's logs. The benchmarks are not here: they are the
//! `planledger-bench` binary (crates/bench).

mod backup;
mod cluster;
mod config;
mod control;
mod demo;
mod export;
mod forwarded;
mod identity;
mod node;
mod projector;
mod quarantine;
mod relay;
mod repair;
mod replay;
mod replay_plan;
mod serve;
mod token;
mod verify;
mod verify_export;
mod witness;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: the writer thread allocates envelopes that the
/// request tasks free on other threads, which glibc's per-arena locks serialise (measured with
/// `planledger-bench append` and `planledger-bench http`, see docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Planledger: an event-sourced backend that turns plans into execution, on the record.
#[derive(Parser, Debug)]
#[command(name = "planledger", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Run the service: HTTP API, event log writer, NATS relay and projectors.
    Serve(config::ServeArgs),
    /// Seed a demo plan, print a token and curl lines, then serve.
    Demo(config::ServeArgs),
    /// Mint API tokens.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// Walk the event log's hash chain and report the first broken position, then rebuild its
    /// Merkle tree and report the first stored node that differs; or check a signed digest
    /// (`--digest FILE`) against the log.
    Verify(verify::VerifyArgs),
    /// Auditing helpers: the public key digests are signed with; offline checks of signed
    /// checkpoints, inclusion proofs and consistency proofs; a witness that cosigns checkpoints.
    Audit {
        #[command(subcommand)]
        command: verify::AuditCommand,
    },
    /// Run one read model (progress, accountability, agility) as its own process, or
    /// quarantine an event it is stopped at (`projector quarantine`).
    Projector(projector::ProjectorCommand),
    /// Rebuild a read model from position 0 (--projection), or print a plan as it stood at a
    /// time, version or position (--plan; works while the service runs).
    Replay(replay::ReplayArgs),
    /// Write the event log (a position range, one tenant or all) to NDJSON or Parquet; works
    /// while the service runs.
    Export(export::ExportArgs),
    /// Operate the NATS relay: `relay reset` replaces a deleted or purged event stream.
    Relay {
        #[command(subcommand)]
        command: relay::RelayCommand,
    },
    /// Write a consistent copy of a node's event logs (its `log`, or a cluster node's
    /// partition caches) and key files to a new directory, with a manifest; works while the
    /// service runs (it takes the RocksDB checkpoints itself).
    Backup(backup::BackupArgs),
    /// Check a backup (manifest, every chain) and put it into a new data directory (or one
    /// partition cache into a stopped node's); `--nats` catches a single node's log up with
    /// the events its relay published after the backup.
    Restore(backup::RestoreArgs),
    /// Cluster mode: `cluster init` creates the partition streams and the cluster's
    /// configuration on a JetStream cluster.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Print the OpenAPI 3.1 document the service serves at `/openapi.json` (generated from
    /// the code), e.g. to generate a client without a running service.
    Openapi,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Commands::Serve(args) => serve::run(args, None).await,
            Commands::Demo(args) => demo::run(args).await,
            Commands::Token { command } => token::run(command),
            Commands::Verify(args) => verify::run(args),
            Commands::Audit { command } => verify::run_audit(command).await,
            Commands::Projector(command) => projector::command(command).await,
            Commands::Replay(args) => replay::run(args).await,
            Commands::Export(args) => export::command(args).await,
            Commands::Relay { command } => relay::run(command).await,
            Commands::Cluster { command } => cluster::run(command).await,
            Commands::Backup(args) => backup::run_backup(args).await,
            Commands::Restore(args) => backup::run_restore(args).await,
            Commands::Openapi => {
                println!("{}", planledger_api::openapi_document());
                Ok(())
            }
        }
    })
}

/// How often the metrics recorder's histogram samples are drained when nobody scrapes.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the process's Prometheus recorder and keeps it drained. Histogram samples wait in
/// the recorder until something drains them; a scrape of `/metrics` does, but without scrapes
/// they would pile up for as long as the process runs (~35 bytes per command), so a task on
/// the runtime drains them every 5 s. Call it from inside the runtime.
pub fn install_metrics() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    use anyhow::Context;
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the Prometheus metrics recorder")?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(METRICS_UPKEEP);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// A progress bar of `len` steps drawn as `template` with `message`, on standard error when
/// it is a terminal (hidden otherwise: standard output may carry the command's data).
pub fn progress_bar(len: u64, template: &str, message: &'static str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(message);
    bar
}

/// Sets up `tracing` output in the chosen format, filtered by `RUST_LOG` (default `info`).
/// Pretty output is coloured only on a terminal (and not with a non-empty `NO_COLOR`): a log
/// collector reading a pipe gets plain text, not escape codes.
pub fn init_tracing(format: config::LogFormat) {
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    init_tracing_with(format, colour);
}

/// [`init_tracing`] with colour chosen by the caller.
pub fn init_tracing_with(format: config::LogFormat, colour: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let _ = match format {
        config::LogFormat::Pretty => builder.try_init(),
        config::LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
