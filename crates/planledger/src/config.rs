//! Configuration: one struct, from the config file, then `PLANLEDGER_*` variables, then flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// How logs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Everything `serve` needs; loaded from `planledger.toml`, the environment and flags.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the event log, read models and signing key live.
    pub data_dir: PathBuf,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// NATS server URL; `None` runs embedded (projectors tail the local log, nothing is published).
    pub nats_url: Option<String>,
    /// JetStream stream the relay publishes to.
    pub nats_stream: String,
    /// JetStream replicas for that stream (3 on a cluster).
    pub nats_replicas: usize,
    /// The stream's duplicate window (JetStream drops a repeated `Nats-Msg-Id` within it), seconds.
    pub nats_duplicate_window_secs: u64,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// Request timeout, in milliseconds.
    pub request_timeout_ms: u64,
    /// Sustained requests per second per token (0 disables limiting).
    pub rate_limit_per_second: f64,
    /// Burst size per token.
    pub rate_limit_burst: f64,
    /// Log format.
    pub log_format: LogFormat,
    /// A file holding the JWT signing secret (hex); default `<data_dir>/jwt-signing.key`.
    pub jwt_secret_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            nats_url: None,
            nats_stream: "PLANLEDGER_EVENTS".into(),
            nats_replicas: 1,
            nats_duplicate_window_secs: 120,
            body_limit_bytes: 64 * 1024,
            request_timeout_ms: 10_000,
            rate_limit_per_second: 200.0,
            rate_limit_burst: 400.0,
            log_format: LogFormat::Pretty,
            jwt_secret_file: None,
        }
    }
}

/// Flags of `serve` (and `demo`); each also reads `PLANLEDGER_<FLAG>`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// Config file (TOML); default `planledger.toml` in the working directory, if present.
    #[arg(long, env = "PLANLEDGER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (event log, read models, signing key).
    #[arg(long, env = "PLANLEDGER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address, e.g. 127.0.0.1:8080.
    #[arg(long, env = "PLANLEDGER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// NATS URL, e.g. nats://127.0.0.1:4222: publish events to JetStream and accept commands.
    #[arg(long, env = "PLANLEDGER_NATS", conflicts_with = "no_nats")]
    pub nats: Option<String>,
    /// Run without NATS (embedded mode; the default when --nats is not given).
    #[arg(long, env = "PLANLEDGER_NO_NATS")]
    pub no_nats: bool,
    /// JetStream stream name.
    #[arg(long, env = "PLANLEDGER_NATS_STREAM")]
    pub nats_stream: Option<String>,
    /// JetStream replicas.
    #[arg(long, env = "PLANLEDGER_NATS_REPLICAS")]
    pub nats_replicas: Option<usize>,
    /// JetStream duplicate window of the event stream, in seconds (default 120).
    #[arg(long, env = "PLANLEDGER_NATS_DUPLICATE_WINDOW_SECS")]
    pub nats_duplicate_window_secs: Option<u64>,
    /// Largest request body in bytes (413 above it).
    #[arg(long, env = "PLANLEDGER_BODY_LIMIT_BYTES")]
    pub body_limit_bytes: Option<usize>,
    /// Request timeout in milliseconds (503 after it).
    #[arg(long, env = "PLANLEDGER_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Requests per second per token (0 disables; 429 above it).
    #[arg(long, env = "PLANLEDGER_RATE_LIMIT_PER_SECOND")]
    pub rate_limit_per_second: Option<f64>,
    /// Burst of requests per token.
    #[arg(long, env = "PLANLEDGER_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<f64>,
    /// Log format.
    #[arg(long, env = "PLANLEDGER_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// JWT signing secret file (hex).
    #[arg(long, env = "PLANLEDGER_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl ServeArgs {
    /// The effective configuration: defaults, then the file, then environment and flags.
    pub fn load(&self) -> Result<Config> {
        let path = self.config.clone().or_else(|| {
            let default = PathBuf::from("planledger.toml");
            default.exists().then_some(default)
        });
        let mut config = match &path {
            Some(path) => load_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = &self.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = &self.nats {
            config.nats_url = Some(v.clone());
        }
        if self.no_nats {
            config.nats_url = None;
        }
        if let Some(v) = &self.nats_stream {
            config.nats_stream = v.clone();
        }
        if let Some(v) = self.nats_replicas {
            config.nats_replicas = v;
        }
        if let Some(v) = self.nats_duplicate_window_secs {
            config.nats_duplicate_window_secs = v;
        }
        if let Some(v) = self.body_limit_bytes {
            config.body_limit_bytes = v;
        }
        if let Some(v) = self.request_timeout_ms {
            config.request_timeout_ms = v;
        }
        if let Some(v) = self.rate_limit_per_second {
            config.rate_limit_per_second = v;
        }
        if let Some(v) = self.rate_limit_burst {
            config.rate_limit_burst = v;
        }
        if let Some(v) = self.log_format {
            config.log_format = v;
        }
        if let Some(v) = &self.jwt_secret_file {
            config.jwt_secret_file = Some(v.clone());
        }
        config.validate()?;
        Ok(config)
    }
}

fn load_file(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

impl Config {
    /// Checks ranges so a bad value fails at start with a clear message.
    pub fn validate(&self) -> Result<()> {
        if self.body_limit_bytes < 1024 || self.body_limit_bytes > 16 * 1024 * 1024 {
            bail!(
                "body_limit_bytes = {} is out of range: use 1024 to 16777216",
                self.body_limit_bytes
            );
        }
        if self.request_timeout_ms == 0 {
            bail!("request_timeout_ms must be positive");
        }
        if !(self.rate_limit_per_second >= 0.0 && self.rate_limit_per_second.is_finite()) {
            bail!("rate_limit_per_second must be a finite number >= 0 (0 disables limiting)");
        }
        if self.rate_limit_per_second > 0.0 && self.rate_limit_burst < 1.0 {
            bail!("rate_limit_burst must be at least 1 when rate limiting is on");
        }
        if !(1..=5).contains(&self.nats_replicas) {
            bail!("nats_replicas must be 1 to 5");
        }
        if self.nats_duplicate_window_secs == 0 {
            bail!("nats_duplicate_window_secs must be at least 1");
        }
        Ok(())
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The configuration as TOML, with the NATS URL's credentials redacted.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if let Some(url) = &shown.nats_url
            && let Some((scheme, rest)) = url.split_once("://")
            && let Some((_, host)) = rest.rsplit_once('@')
        {
            shown.nats_url = Some(format!("{scheme}://<redacted>@{host}"));
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# not printable: {e}"))
    }
}
