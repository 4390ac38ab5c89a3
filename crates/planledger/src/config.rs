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

/// How an append becomes durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogCommit {
    /// One node: the local write-ahead log is fsynced before an answer (the default).
    #[default]
    Local,
    /// Cluster mode: each append is committed to the partition's JetStream stream (the truth)
    /// before it is applied to the local log (a cache) and answered.
    Jetstream,
}

/// The default free-space reserve of the event log's file system: room for RocksDB to flush
/// its memtables and write a new write-ahead log once the reserve has stopped the appends.
pub const DEFAULT_LOG_MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;

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
    /// Run the progress, accountability and agility read models inside `serve` (the default).
    /// `false` leaves them to `planledger projector --nats` processes consuming the relay's
    /// stream (needs `nats_url`); this process then serves no read-model route.
    pub embedded_projectors: bool,
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
    /// An OpenID Connect provider's key set (JWKS) as a file: accept its RS256/EdDSA tokens.
    pub jwt_jwks_file: Option<PathBuf>,
    /// The same, fetched from a URL (the provider's `jwks_uri`).
    pub jwt_jwks_url: Option<String>,
    /// How often the key set is read again, e.g. `5m`.
    pub jwt_jwks_refresh: String,
    /// Least time between two refetches asked for by tokens naming an unknown `kid`, e.g. `30s`.
    pub jwt_jwks_min_refetch: String,
    /// The `iss` the provider's tokens must carry (required in production).
    pub jwt_issuer: Option<String>,
    /// The `aud` the provider's tokens must include (required in production).
    pub jwt_audience: Option<String>,
    /// Longest a connection may take to send a request's headers, and may sit idle between
    /// requests, e.g. `10s`.
    pub http_header_read_timeout: String,
    /// Most HTTP connections open at once; more are answered 503 and closed.
    pub http_max_connections: usize,
    /// Free space kept on the event log's file system: below it commands are refused (503
    /// `storage_full`) and taken again once space is freed, without a restart (0 keeps none).
    pub log_min_free_bytes: u64,
    /// How appends become durable: `local` (fsync; one node) or `jetstream` (cluster mode).
    pub log_commit: LogCommit,
    /// Cluster mode: the partition this node serves.
    pub partition: Option<u32>,
    /// Cluster mode: how long a commit to the partition stream may take before its outcome is
    /// unknown, e.g. `5s`.
    pub commit_timeout: String,
    /// Cluster mode: this node's id. A node with an id serves every partition whose lease it
    /// holds (instead of the one `partition`), taking over partitions whose owner is gone.
    pub node_id: Option<String>,
    /// Cluster mode: how long a partition lease lasts without a renewal, e.g. `10s`.
    pub lease_ttl: String,
    /// Cluster mode: the partition count this node expects; it refuses to start when the
    /// cluster has another (unset: take the cluster's).
    pub partitions: Option<u32>,
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
            embedded_projectors: true,
            body_limit_bytes: 64 * 1024,
            request_timeout_ms: 10_000,
            rate_limit_per_second: 200.0,
            rate_limit_burst: 400.0,
            log_format: LogFormat::Pretty,
            jwt_secret_file: None,
            jwt_jwks_file: None,
            jwt_jwks_url: None,
            jwt_jwks_refresh: "5m".into(),
            jwt_jwks_min_refetch: "30s".into(),
            jwt_issuer: None,
            jwt_audience: None,
            http_header_read_timeout: "10s".into(),
            http_max_connections: 1024,
            log_min_free_bytes: DEFAULT_LOG_MIN_FREE_BYTES,
            log_commit: LogCommit::Local,
            partition: None,
            commit_timeout: "5s".into(),
            node_id: None,
            lease_ttl: "10s".into(),
            partitions: None,
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
    /// Do not run the read models in this process: they run as `planledger projector --name
    /// NAME --nats URL` processes over the stream the relay publishes (needs --nats), and their
    /// routes are served there.
    #[arg(long, env = "PLANLEDGER_NO_EMBEDDED_PROJECTORS")]
    pub no_embedded_projectors: bool,
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
    /// The token flags (`serve` and `projector` take the same).
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Longest a client may take to send a request's headers, and may keep a connection idle
    /// (e.g. 10s); the connection is closed after it.
    #[arg(long, env = "PLANLEDGER_HTTP_HEADER_READ_TIMEOUT")]
    pub http_header_read_timeout: Option<String>,
    /// Most HTTP connections open at once; further ones are answered 503 and closed.
    #[arg(long, env = "PLANLEDGER_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// Free bytes kept on the event log's file system: below them commands answer 503
    /// `storage_full` until space is freed (0 keeps no reserve; default 256 MiB).
    #[arg(long, env = "PLANLEDGER_LOG_MIN_FREE_BYTES")]
    pub log_min_free_bytes: Option<u64>,
    /// How appends become durable: `local` (the write-ahead log is fsynced; one node) or
    /// `jetstream` (cluster mode: committed to the partition's JetStream stream first, which
    /// needs --nats and --partition and a cluster made by `planledger cluster init`).
    #[arg(long, env = "PLANLEDGER_LOG_COMMIT", value_enum)]
    pub log_commit: Option<LogCommit>,
    /// Cluster mode: the partition this node serves (0 to the cluster's count - 1).
    #[arg(long, env = "PLANLEDGER_PARTITION")]
    pub partition: Option<u32>,
    /// Cluster mode: how long a commit may take before its outcome is unknown (e.g. 5s).
    #[arg(long, env = "PLANLEDGER_COMMIT_TIMEOUT")]
    pub commit_timeout: Option<String>,
    /// Cluster mode: this node's id (e.g. its host name). The node serves every partition whose
    /// lease it holds and forwards other partitions' commands to their owners.
    #[arg(long, env = "PLANLEDGER_NODE_ID")]
    pub node_id: Option<String>,
    /// Cluster mode: how long a partition lease lasts without a renewal (e.g. 10s; at least
    /// 1s, in whole seconds). A dead owner's partitions move after about this long.
    #[arg(long, env = "PLANLEDGER_LEASE_TTL")]
    pub lease_ttl: Option<String>,
    /// Cluster mode: the partition count this node expects; it refuses to start when the
    /// cluster was created with another.
    #[arg(long, env = "PLANLEDGER_PARTITIONS")]
    pub partitions: Option<u32>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// How tokens are checked: the service's own signing key and an identity provider's key set.
/// `serve` and `projector` take the same flags, so every process that answers the API accepts
/// the same tokens.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct IdentityArgs {
    /// JWT signing secret file (hex); default <DATA_DIR>/jwt-signing.key.
    #[arg(long, env = "PLANLEDGER_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// An OpenID Connect provider's key set (JWKS) file: accept its RS256 and EdDSA tokens.
    #[arg(
        long,
        env = "PLANLEDGER_JWT_JWKS_FILE",
        conflicts_with = "jwt_jwks_url"
    )]
    pub jwt_jwks_file: Option<PathBuf>,
    /// The provider's key set URL (its jwks_uri), fetched at start and refreshed.
    #[arg(long, env = "PLANLEDGER_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,
    /// How often the key set is read again (e.g. 5m; units ms, s, m, h).
    #[arg(long, env = "PLANLEDGER_JWT_JWKS_REFRESH")]
    pub jwt_jwks_refresh: Option<String>,
    /// Least time between refetches caused by tokens naming an unknown kid (e.g. 30s).
    #[arg(long, env = "PLANLEDGER_JWT_JWKS_MIN_REFETCH")]
    pub jwt_jwks_min_refetch: Option<String>,
    /// The issuer (iss) the provider's tokens must carry; required in production.
    #[arg(long, env = "PLANLEDGER_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The audience (aud) the provider's tokens must include; required in production.
    #[arg(long, env = "PLANLEDGER_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

impl IdentityArgs {
    /// Sets the configuration's token fields given on the command line or in the environment.
    pub fn apply(&self, config: &mut Config) {
        if let Some(v) = &self.jwt_secret_file {
            config.jwt_secret_file = Some(v.clone());
        }
        if let Some(v) = &self.jwt_jwks_file {
            config.jwt_jwks_file = Some(v.clone());
            config.jwt_jwks_url = None;
        }
        if let Some(v) = &self.jwt_jwks_url {
            config.jwt_jwks_url = Some(v.clone());
            config.jwt_jwks_file = None;
        }
        if let Some(v) = &self.jwt_jwks_refresh {
            config.jwt_jwks_refresh = v.clone();
        }
        if let Some(v) = &self.jwt_jwks_min_refetch {
            config.jwt_jwks_min_refetch = v.clone();
        }
        if let Some(v) = &self.jwt_issuer {
            config.jwt_issuer = Some(v.clone());
        }
        if let Some(v) = &self.jwt_audience {
            config.jwt_audience = Some(v.clone());
        }
    }
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
        if self.no_embedded_projectors {
            config.embedded_projectors = false;
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
        self.identity.apply(&mut config);
        if let Some(v) = &self.http_header_read_timeout {
            config.http_header_read_timeout = v.clone();
        }
        if let Some(v) = self.http_max_connections {
            config.http_max_connections = v;
        }
        if let Some(v) = self.log_min_free_bytes {
            config.log_min_free_bytes = v;
        }
        if let Some(v) = self.log_commit {
            config.log_commit = v;
        }
        if let Some(v) = self.partition {
            config.partition = Some(v);
        }
        if let Some(v) = &self.commit_timeout {
            config.commit_timeout = v.clone();
        }
        if let Some(v) = &self.node_id {
            config.node_id = Some(v.clone());
        }
        if let Some(v) = &self.lease_ttl {
            config.lease_ttl = v.clone();
        }
        if let Some(v) = self.partitions {
            config.partitions = Some(v);
        }
        config.validate()?;
        Ok(config)
    }
}

/// Parses a duration such as `500ms`, `10s`, `5m` or `1h`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .with_context(|| format!("{text:?} needs a unit: ms, s, m or h (e.g. 10s)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .with_context(|| format!("{text:?} must start with a number, e.g. 10s"))?;
    let millis = match unit {
        "ms" => Some(number),
        "s" => number.checked_mul(1000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => bail!("the unit of {text:?} is unknown: use ms, s, m or h"),
    }
    .filter(|ms| *ms <= 366 * 86_400_000)
    .with_context(|| format!("{text:?} is too long (at most 366 days)"))?;
    Ok(Duration::from_millis(millis))
}

fn load_file(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

impl Config {
    /// Cluster mode: how long a partition lease lasts without a renewal.
    pub fn lease_ttl(&self) -> Result<Duration> {
        parse_duration(&self.lease_ttl).context("lease_ttl")
    }

    /// Cluster mode: how long a commit may take before its outcome is unknown.
    pub fn commit_timeout(&self) -> Result<Duration> {
        parse_duration(&self.commit_timeout)
    }

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
        if self.log_commit == LogCommit::Jetstream {
            if self.nats_url.is_none() {
                bail!(
                    "log_commit = jetstream needs the NATS cluster's URL (--nats): the partition's stream is the log"
                );
            }
            match (&self.node_id, self.partition) {
                (None, None) => bail!(
                    "log_commit = jetstream needs --node-id ID (serve the partitions this node's leases give it) or --partition P (serve one partition, without leases)"
                ),
                (Some(_), Some(_)) => bail!(
                    "--node-id and --partition exclude each other: a node with an id serves the partitions it holds leases for"
                ),
                (Some(id), None) => {
                    if id.is_empty()
                        || id.len() > 64
                        || !id.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
                        })
                    {
                        bail!(
                            "--node-id {id:?}: use 1 to 64 letters, digits, '-', '_' or '.' (e.g. the host name)"
                        );
                    }
                    let ttl = self.lease_ttl()?;
                    if ttl < Duration::from_secs(1) || ttl.subsec_nanos() != 0 {
                        bail!(
                            "lease_ttl = {:?}: use whole seconds, at least 1s (e.g. 10s)",
                            self.lease_ttl
                        );
                    }
                }
                (None, Some(_)) => {}
            }
            if parse_duration(&self.commit_timeout)? < Duration::from_millis(100) {
                bail!("commit_timeout must be at least 100ms");
            }
        } else if self.partition.is_some() || self.node_id.is_some() {
            bail!(
                "--partition and --node-id are for cluster mode only: add --log-commit jetstream"
            );
        }
        if !self.embedded_projectors && self.nats_url.is_none() {
            bail!(
                "embedded_projectors = false (--no-embedded-projectors) needs --nats: the read models then run as `planledger projector --name NAME --nats URL` processes over the stream this service publishes, and without NATS nothing would feed them"
            );
        }
        if !(1..=5).contains(&self.nats_replicas) {
            bail!("nats_replicas must be 1 to 5");
        }
        self.validate_identity()?;
        if self.header_read_timeout()? < Duration::from_millis(100) {
            bail!("http_header_read_timeout must be at least 100ms");
        }
        if !(1..=1_000_000).contains(&self.http_max_connections) {
            bail!("http_max_connections must be 1 to 1000000");
        }
        if self.nats_duplicate_window_secs == 0 {
            bail!("nats_duplicate_window_secs must be at least 1");
        }
        Ok(())
    }

    /// Checks the token fields (what `projector` checks of the same flags).
    pub fn validate_identity(&self) -> Result<()> {
        if self.jwt_jwks_file.is_some() && self.jwt_jwks_url.is_some() {
            bail!("set one of jwt_jwks_file and jwt_jwks_url, not both");
        }
        if let Some(url) = &self.jwt_jwks_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            bail!("jwt_jwks_url = {url:?} must be an https:// (or http://) URL");
        }
        if self.jwks_refresh()? < Duration::from_secs(1) {
            bail!("jwt_jwks_refresh must be at least 1s");
        }
        self.jwks_min_refetch()?;
        for (name, value) in [
            ("jwt_issuer", &self.jwt_issuer),
            ("jwt_audience", &self.jwt_audience),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                bail!("{name} must not be empty (leave it out to accept any)");
            }
        }
        Ok(())
    }

    /// How often the identity provider's key set is read again.
    pub fn jwks_refresh(&self) -> Result<Duration> {
        parse_duration(&self.jwt_jwks_refresh).context("jwt_jwks_refresh")
    }

    /// Least time between two refetches of the key set asked for by tokens.
    pub fn jwks_min_refetch(&self) -> Result<Duration> {
        parse_duration(&self.jwt_jwks_min_refetch).context("jwt_jwks_min_refetch")
    }

    /// The HTTP header read (and idle connection) timeout.
    pub fn header_read_timeout(&self) -> Result<Duration> {
        parse_duration(&self.http_header_read_timeout).context("http_header_read_timeout")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_number_and_a_unit() {
        assert_eq!(
            parse_duration("500ms").expect("ms"),
            Duration::from_millis(500)
        );
        assert_eq!(parse_duration("10s").expect("s"), Duration::from_secs(10));
        assert_eq!(parse_duration("5m").expect("m"), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").expect("h"), Duration::from_secs(7200));
        for bad in ["10", "s", "10d", "-1s", "99999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identity_and_connection_settings_are_validated() {
        let ok = Config::default();
        assert!(ok.validate().is_ok());
        assert_eq!(
            ok.header_read_timeout().expect("default"),
            Duration::from_secs(10)
        );
        let both = Config {
            jwt_jwks_file: Some("jwks.json".into()),
            jwt_jwks_url: Some("https://idp.example/jwks".into()),
            ..Config::default()
        };
        assert!(both.validate().is_err());
        let not_a_url = Config {
            jwt_jwks_url: Some("idp.example/jwks".into()),
            ..Config::default()
        };
        assert!(not_a_url.validate().is_err());
        let empty_issuer = Config {
            jwt_issuer: Some(" ".into()),
            ..Config::default()
        };
        assert!(empty_issuer.validate().is_err());
        let no_connections = Config {
            http_max_connections: 0,
            ..Config::default()
        };
        assert!(no_connections.validate().is_err());
        let too_short = Config {
            http_header_read_timeout: "10ms".into(),
            ..Config::default()
        };
        assert!(too_short.validate().is_err());
    }

    #[test]
    fn a_jwks_flag_replaces_the_other_source_from_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("planledger.toml");
        std::fs::write(&path, "jwt_jwks_url = \"https://idp.example/jwks\"\n").expect("write");
        let args = ServeArgs {
            config: Some(path),
            identity: IdentityArgs {
                jwt_jwks_file: Some("local.json".into()),
                ..IdentityArgs::default()
            },
            ..ServeArgs::default()
        };
        let config = args.load().expect("loads");
        assert_eq!(config.jwt_jwks_file, Some(PathBuf::from("local.json")));
        assert_eq!(config.jwt_jwks_url, None);
    }

    #[test]
    fn read_models_leave_the_process_only_where_a_stream_feeds_them() {
        let alone = Config {
            embedded_projectors: false,
            ..Config::default()
        };
        let refused = alone
            .validate()
            .expect_err("nothing would feed the read models");
        assert!(refused.to_string().contains("needs --nats"), "{refused}");
        let relayed = Config {
            embedded_projectors: false,
            nats_url: Some("nats://127.0.0.1:4222".into()),
            ..Config::default()
        };
        assert!(relayed.validate().is_ok());
        let args = ServeArgs {
            nats: Some("nats://127.0.0.1:4222".into()),
            no_embedded_projectors: true,
            ..ServeArgs::default()
        };
        let config = args.load().expect("loads");
        assert!(!config.embedded_projectors);
        assert!(Config::default().embedded_projectors, "embedded by default");
    }
}
