//! `planledger verify`: walks the hash chain and rebuilds the Merkle tree with a progress bar
//! (naming the first bad position, or the first stored tree node that differs), or checks a
//! signed digest against the log; `planledger audit public-key` prints the digest key, and
//! `audit verify-event`/`verify-consistency` check proofs offline, `audit verify-cosignature`
//! a witness's cosignature (`audit witness`: witness.rs, `audit verify-export`:
//! verify_export.rs).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use planledger_app::DigestKey;
use planledger_app::audit::{PublicKey, SignedDigest, check_digest};
use planledger_app::checkpoint;
use planledger_app::cosignature::{VerifierKey, check_cosignature};
use planledger_store::{EventStore, Position, StoreOptions};

/// Flags of `verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Data directory of a stopped service (the log is opened exclusively).
    #[arg(long, env = "PLANLEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// A digest (the JSON `GET /v1/audit/digest` answered) to check: its signature, that the log
    /// still holds its position with its hash, and the chain from 1 to it.
    #[arg(long)]
    pub digest: Option<PathBuf>,
    /// The Ed25519 public key (64 hex digits, from `GET /v1/audit/keys`; in cluster mode
    /// `?partition=P`) to check the digest's
    /// signature with; default: the data directory's digest key.
    #[arg(long, requires = "digest")]
    pub public_key: Option<String>,
}

/// `audit` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Print the public key digests are signed with (hex; `--json` for the key record).
    PublicKey(PublicKeyArgs),
    /// Check offline (no log needed) that an event is in the tree a signed checkpoint names.
    VerifyEvent(VerifyEventArgs),
    /// Check offline that a newer signed checkpoint extends an older one.
    VerifyConsistency(VerifyConsistencyArgs),
    /// Check offline an export written with `planledger export --proof`: the checkpoint's
    /// signature and every row's inclusion proof (naming the first row that fails).
    VerifyExport(crate::verify_export::VerifyExportArgs),
    /// Check offline that a checkpoint is signed by the log and cosigned by a witness.
    VerifyCosignature(VerifyCosignatureArgs),
    /// Witness a log: fetch its newest checkpoint, check that it extends the last one seen,
    /// cosign it (C2SP tlog-cosignature); refuse a rewritten history or a rollback.
    Witness(crate::witness::WitnessArgs),
}

/// Flags of `audit verify-event`.
#[derive(clap::Args, Debug)]
pub struct VerifyEventArgs {
    /// The signed checkpoint (the text `GET /v1/audit/checkpoint` answered).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The inclusion proof (the JSON `GET /v1/audit/proof/inclusion?position=P&tree_size=N`
    /// answered, N being the checkpoint's tree size).
    #[arg(long)]
    pub proof: PathBuf,
    /// The event: its envelope JSON exactly as the log stores it (one line of
    /// `planledger export --format ndjson`, or the event as `GET /v1/events` serves it).
    #[arg(long)]
    pub event: PathBuf,
    /// The Ed25519 public key the checkpoint is signed with (64 hex digits, from
    /// `GET /v1/audit/keys`, in cluster mode `GET /v1/audit/keys?partition=P`, or
    /// `planledger audit public-key`).
    #[arg(long)]
    pub public_key: String,
}

/// Flags of `audit verify-consistency`.
#[derive(clap::Args, Debug)]
pub struct VerifyConsistencyArgs {
    /// The older signed checkpoint.
    pub old: PathBuf,
    /// The newer signed checkpoint.
    pub new: PathBuf,
    /// The consistency proof between their tree sizes (the JSON
    /// `GET /v1/audit/proof/consistency?from=M&to=N` answered); not needed for equal sizes.
    #[arg(long)]
    pub proof: Option<PathBuf>,
    /// The Ed25519 public key both checkpoints are signed with (64 hex digits).
    #[arg(long)]
    pub public_key: String,
}

/// Flags of `audit verify-cosignature`.
#[derive(clap::Args, Debug)]
pub struct VerifyCosignatureArgs {
    /// The cosigned checkpoint (a witness's `cosigned.checkpoint`, or what it printed).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The Ed25519 public key the log signs its checkpoints with (64 hex digits, from
    /// `GET /v1/audit/keys`, in cluster mode `GET /v1/audit/keys?partition=P`).
    #[arg(long)]
    pub public_key: String,
    /// The witness's verifier key (`<name>+<key id>+<base64 key>`, printed by
    /// `planledger audit witness` when it created its key).
    #[arg(long)]
    pub witness_key: String,
}

/// Flags of `audit public-key`.
#[derive(clap::Args, Debug)]
pub struct PublicKeyArgs {
    /// Data directory holding `digest-signing.key`.
    #[arg(long, env = "PLANLEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Print `{key_id, algorithm, public_key}` as JSON, as `GET /v1/audit/keys` lists it.
    #[arg(long)]
    pub json: bool,
}

/// Runs an `audit` subcommand.
pub async fn run_audit(command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::PublicKey(args) => {
            let key = DigestKey::load(&args.data_dir)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(key.public())?);
            } else {
                println!("{}", key.public().public_key);
            }
            Ok(())
        }
        AuditCommand::VerifyEvent(args) => verify_event(&args),
        AuditCommand::VerifyConsistency(args) => verify_consistency(&args),
        AuditCommand::VerifyExport(args) => crate::verify_export::run(&args),
        AuditCommand::VerifyCosignature(args) => verify_cosignature(&args),
        AuditCommand::Witness(args) => crate::witness::run(args).await,
    }
}

/// A file's name (as given) and its text.
fn read_text(path: &Path, what: &str) -> Result<(String, String)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the {what} {}", path.display()))?;
    Ok((path.display().to_string(), text))
}

fn verify_event(args: &VerifyEventArgs) -> Result<()> {
    let key = PublicKey::from_hex(&args.public_key)?;
    let checkpoint = read_text(&args.checkpoint, "checkpoint")?;
    let proof = read_text(&args.proof, "proof")?;
    let event = std::fs::read(&args.event)
        .with_context(|| format!("reading the event {}", args.event.display()))?;
    let checked = checkpoint::check_event(
        (&checkpoint.0, &checkpoint.1),
        (&proof.0, &proof.1),
        &event,
        &key,
    )
    .map_err(|e| anyhow::anyhow!("verify-event failed: {e}"))?;
    println!(
        "ok: the event at position {} is in the tree of {} events the checkpoint names (signed with key {})",
        checked.position, checked.tree_size, key.key_id
    );
    Ok(())
}

fn verify_consistency(args: &VerifyConsistencyArgs) -> Result<()> {
    let key = PublicKey::from_hex(&args.public_key)?;
    let old = read_text(&args.old, "older checkpoint")?;
    let new = read_text(&args.new, "newer checkpoint")?;
    let proof = args
        .proof
        .as_ref()
        .map(|path| read_text(path, "consistency proof"))
        .transpose()?;
    let checked = checkpoint::check_consistency(
        (&old.0, &old.1),
        (&new.0, &new.1),
        proof
            .as_ref()
            .map(|(name, text)| (name.as_str(), text.as_str())),
        &key,
    )
    .map_err(|e| anyhow::anyhow!("verify-consistency failed: {e}"))?;
    println!(
        "ok: the tree of {} events extends the tree of {} events (both checkpoints signed with key {})",
        checked.to, checked.from, key.key_id
    );
    Ok(())
}

fn verify_cosignature(args: &VerifyCosignatureArgs) -> Result<()> {
    let key = PublicKey::from_hex(&args.public_key)?;
    let witness = VerifierKey::parse(&args.witness_key).context("--witness-key")?;
    let (file, text) = read_text(&args.checkpoint, "cosigned checkpoint")?;
    let fail = |e: checkpoint::CheckError| anyhow::anyhow!("verify-cosignature failed: {e}");
    // The log's signature first: a cosignature of a checkpoint the log did not sign proves
    // nothing about the log.
    let checked = checkpoint::open_checkpoint(&file, &text, &key)
        .map_err(fail)?
        .0;
    let timestamp =
        check_cosignature(&file, &text, &witness.name, &witness.public_key).map_err(fail)?;
    let at = i64::try_from(timestamp)
        .ok()
        .and_then(|seconds| jiff::Timestamp::from_second(seconds).ok())
        .map_or_else(|| format!("{timestamp} s"), |at| at.to_string());
    println!(
        "ok: witness {} cosigned the tree of {} events of {} (root {}) at {at}; the checkpoint is signed with key {}",
        witness.name,
        checked.tree_size,
        checked.origin,
        planledger_store::merkle::proof::base64_hash(&checked.root),
        key.key_id
    );
    Ok(())
}

fn open_stopped(data_dir: &Path) -> Result<EventStore> {
    let path = data_dir.join("log");
    if !path.exists() {
        bail!("{} holds no event log", data_dir.display());
    }
    EventStore::open(&path, StoreOptions::default()).with_context(|| {
        format!(
            "opening {} (stop the service first, or use GET /v1/audit/verify while it runs)",
            path.display()
        )
    })
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn tick(bar: &ProgressBar) -> impl FnMut(Position) + '_ {
    move |p| {
        if p.get() % 1024 == 0 {
            bar.set_position(p.get());
        }
    }
}

/// Runs `verify`; exits non-zero if the chain is broken or the digest does not check out.
pub fn run(args: VerifyArgs) -> Result<()> {
    match &args.digest {
        Some(file) => run_digest(&args, file),
        None => run_chain(&args.data_dir),
    }
}

fn run_chain(data_dir: &Path) -> Result<()> {
    let store = open_stopped(data_dir)?;
    let bar = progress_bar(store.last_position().get());
    let report = store.verify(tick(&bar))?;
    bar.finish_and_clear();
    if let Some((position, why)) = report.first_broken {
        bail!(
            "chain broken at position {position}: {why} ({} events before it verified)",
            report.checked
        );
    }
    let bar = progress_bar(store.last_position().get());
    let tree = store.verify_tree(tick(&bar))?;
    bar.finish_and_clear();
    if let Some(mismatch) = tree.first_mismatch {
        bail!(
            "Merkle tree broken: {mismatch} (the tree was rebuilt from the {} events of the log, whose chain is intact)",
            tree.leaves
        );
    }
    println!(
        "ok: {} events verified, chain intact; Merkle tree of {} leaves matches the log (root {})",
        report.checked,
        tree.leaves,
        planledger_store::merkle::proof::base64_hash(&tree.root)
    );
    Ok(())
}

fn run_digest(args: &VerifyArgs, file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the digest {}", file.display()))?;
    let digest: SignedDigest = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a digest (the JSON GET /v1/audit/digest answers)",
            file.display()
        )
    })?;
    let key = match &args.public_key {
        Some(hex) => PublicKey::from_hex(hex)?,
        None => DigestKey::load(&args.data_dir)
            .context("no --public-key given, and the data directory's digest key")?
            .public()
            .clone(),
    };
    let store = open_stopped(&args.data_dir)?;
    let bar = progress_bar(digest.position);
    let checked = check_digest(&store, &digest, &key, tick(&bar));
    bar.finish_and_clear();
    let checked = checked.map_err(|e| anyhow::anyhow!("digest check failed: {e}"))?;
    println!(
        "ok: digest of position {} (hash {}) verified with key {}: the log still holds it and the chain from 1 to it is intact ({} events checked; the log now ends at {})",
        checked.position, digest.hash, key.key_id, checked.checked, checked.last_position
    );
    Ok(())
}
