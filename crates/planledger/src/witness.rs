//! `planledger audit witness`: fetches a log's newest checkpoint, checks its signature and that
//! it extends the last one this witness saw (a consistency proof from the log), cosigns it
//! (C2SP `tlog-cosignature`) and keeps it as the new state; refuses, with a non-zero exit, a
//! checkpoint that is not an extension (a rewritten history) or a smaller tree (a rollback).
//!
//! The state directory holds `witness.key` (created on the first run), `checkpoint` (the last
//! checkpoint accepted, as the log signed it) and `cosigned.checkpoint` (it with this witness's
//! cosignature), both replaced atomically.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use planledger_app::audit::PublicKey;
use planledger_app::checkpoint::{self, Checkpoint, ConsistencyProofBody};
use planledger_app::cosignature::WitnessKey;
use planledger_app::witness::{self, Needed};
use planledger_store::merkle::proof::base64_hash;

/// The last checkpoint the witness accepted, as the log signed it.
const STATE_FILE: &str = "checkpoint";
/// That checkpoint with the witness's cosignature.
const COSIGNED_FILE: &str = "cosigned.checkpoint";

/// Flags of `audit witness`.
#[derive(clap::Args, Debug)]
pub struct WitnessArgs {
    /// The service's base URL (e.g. https://planledger.example.com).
    #[arg(long)]
    pub url: String,
    /// The witness's state directory: its key and the last checkpoint it accepted (one log per
    /// directory; created if missing).
    #[arg(long)]
    pub state: PathBuf,
    /// The log's checkpoint public key: 64 hex digits, from `GET /v1/audit/keys` (in cluster
    /// mode `GET /v1/audit/keys?partition=P`, the partition witnessed) or `planledger audit
    /// public-key` on the signing node's data directory, obtained out of band.
    #[arg(long)]
    pub log_key: String,
    /// The name this witness cosigns under (a signed-note key name, e.g.
    /// witness.example.com/w1); part of its key id.
    #[arg(long, env = "PLANLEDGER_WITNESS_NAME")]
    pub name: String,
    /// A bearer token with the auditor (or admin) role, for the audit endpoints.
    #[arg(long, env = "PLANLEDGER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Cluster mode: the partition whose log to witness (each partition is a log of its own,
    /// with its own checkpoints: one state directory per partition).
    #[arg(long)]
    pub partition: Option<u32>,
    /// Seconds to wait for each answer of the service.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
}

/// Runs one witness round; exits non-zero on a refusal, naming both trees.
pub async fn run(args: WitnessArgs) -> Result<()> {
    let log_key = PublicKey::from_hex(&args.log_key).context("--log-key")?;
    std::fs::create_dir_all(&args.state)
        .with_context(|| format!("creating the state directory {}", args.state.display()))?;
    // One run at a time per state directory (overlapping runs from a scheduler would each read
    // the same state, and the one that accepted the smaller tree could write last).
    let lock_path = args.state.join(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    // SAFETY: flock on a file descriptor this function owns; no memory is shared.
    let locked = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&lock),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    if locked != 0 {
        bail!(
            "another witness run holds {}; runs on one state directory take turns",
            lock_path.display()
        );
    }
    let (key, created) = WitnessKey::load_or_create(&args.state, &args.name)?;
    if created {
        eprintln!(
            "created the witness key {}; clients check this witness's cosignatures with the verifier key {}",
            args.state
                .join(planledger_app::cosignature::WITNESS_KEY_FILE)
                .display(),
            key.verifier_key()
        );
    }
    let log = Log::new(&args)?;
    let state_path = args.state.join(STATE_FILE);
    let seen = read_seen(&state_path, &log_key)?;
    let fetched_from = format!("the checkpoint from {}", log.base);
    let note = log.get("/v1/audit/checkpoint").await?;
    let offered = checkpoint::open_checkpoint(&fetched_from, &note, &log_key)?.0;
    let proof = match witness::needed(seen.as_ref(), &offered).map_err(refused)? {
        Needed::Nothing => None,
        Needed::Proof(from, to) => Some(log.consistency(from, to).await?),
    };
    witness::check_extension(seen.as_ref(), &offered, proof.as_ref()).map_err(refused)?;
    let now = jiff::Timestamp::now().as_second();
    let timestamp =
        u64::try_from(now).map_err(|_| anyhow!("the clock reads {now}, before 1970"))?;
    let cosigned = key.cosign(&note, timestamp)?;
    // The state first: a crash between the two writes must never leave a cosignature of a
    // tree newer than the state records (a later run could then cosign a fork of it).
    write_atomically(&state_path, note.as_bytes())?;
    write_atomically(&args.state.join(COSIGNED_FILE), cosigned.as_bytes())?;
    print!("{cosigned}");
    eprintln!("{}", summary(seen.as_ref(), &offered, key.name()));
    Ok(())
}

/// The refusal as the command's error, loud and naming both trees.
fn refused(refusal: witness::Refusal) -> anyhow::Error {
    anyhow!("witness REFUSES to cosign: {refusal}; the state was left as it was")
}

fn summary(seen: Option<&Checkpoint>, offered: &Checkpoint, name: &str) -> String {
    let now = format!(
        "tree size {} (root {})",
        offered.tree_size,
        base64_hash(&offered.root)
    );
    match seen {
        None => format!(
            "cosigned {now} of {} as {name}: first checkpoint seen",
            offered.origin
        ),
        Some(seen) => format!(
            "cosigned {now} of {} as {name}: consistent with tree size {} (root {}) seen before",
            offered.origin,
            seen.tree_size,
            base64_hash(&seen.root)
        ),
    }
}

/// The checkpoint in the state, checked with the log's key (a state of another key is not
/// this log's, or the key changed: the operator must decide).
fn read_seen(path: &Path, log_key: &PublicKey) -> Result<Option<Checkpoint>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let file = path.display().to_string();
    let seen = checkpoint::open_checkpoint(&file, &text, log_key).with_context(|| {
        format!(
            "the witness state {file} does not check with --log-key: a state directory follows one log and its key"
        )
    })?;
    Ok(Some(seen.0))
}

/// Replaces `path` with `bytes`: a temporary file beside it, synced, renamed over it, and the
/// directory synced, so a crash leaves the old file or the new one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("renaming {} to {}", temporary.display(), path.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing the directory {}", dir.display()))
}

/// The service's audit endpoints.
struct Log {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    partition: Option<u32>,
}

impl Log {
    fn new(args: &WitnessArgs) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(args.timeout_secs))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: args.url.trim_end_matches('/').to_string(),
            token: args.token.clone().filter(|token| !token.is_empty()),
            partition: args.partition,
        })
    }

    /// The body of a GET of `path` (with the partition, if one was given), which must answer
    /// 200.
    async fn get(&self, path: &str) -> Result<String> {
        let url = match self.partition {
            None => format!("{}{path}", self.base),
            Some(partition) => {
                let join = if path.contains('?') { '&' } else { '?' };
                format!("{}{path}{join}partition={partition}", self.base)
            }
        };
        let mut request = self.http.get(&url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .with_context(|| format!("reading the answer of GET {url}"))?;
        if !status.is_success() {
            let hint = if status == reqwest::StatusCode::UNAUTHORIZED
                || status == reqwest::StatusCode::FORBIDDEN
            {
                " (give a token with the auditor role: --token or PLANLEDGER_TOKEN)"
            } else {
                ""
            };
            bail!("GET {url} answered {status}{hint}: {body}");
        }
        Ok(body)
    }

    async fn consistency(&self, from: u64, to: u64) -> Result<ConsistencyProofBody> {
        let path = format!("/v1/audit/proof/consistency?from={from}&to={to}");
        let body = self.get(&path).await?;
        serde_json::from_str(&body)
            .with_context(|| format!("the answer of GET {path} is not a consistency proof"))
    }
}
