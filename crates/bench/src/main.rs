//! The `planledger-bench` binary: throughput and latency figures of Planledger's parts, printed
//! next to a ceiling measured in the same run (`just bench WHAT`). The product binary
//! `planledger` has no benchmark in it; `planledger-bench cluster` starts it as writer nodes.

use anyhow::Result;
use clap::Parser;
use planledger_bench::BenchCommand;

/// The service's allocator: what is measured in process runs as it runs in `serve` (see
/// docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Planledger's benchmarks: measure throughput and latency (prints figures; never asserts them).
#[derive(Parser, Debug)]
#[command(name = "planledger-bench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    what: BenchCommand,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(planledger_bench::run(cli.what))
}
