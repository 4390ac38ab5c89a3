//! Generates the Rust types of `proto/planledger/v1/*.proto` with prost.
//!
//! The .proto files are parsed by `protox` (pure Rust), so no system `protoc` is needed.

use std::path::PathBuf;

/// The contract files, relative to the `proto/` root.
const FILES: &[&str] = &[
    "planledger/v1/envelope.proto",
    "planledger/v1/commands.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.join("../../proto");
    for file in FILES {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let descriptors = protox::compile(FILES, [&root])?;
    prost_build::Config::new()
        .enable_type_names()
        .compile_fds(descriptors)?;
    Ok(())
}
