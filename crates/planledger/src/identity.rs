//! The OpenID Connect provider's key set: read at start, then kept current.
//!
//! `app` holds the keys ([`KeySet`]) and decides what a token may be verified with; this module
//! does the IO it must not: reading the JWKS file or fetching the URL, periodically and whenever
//! a token named a key id the set does not hold (rate-limited by the set).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use planledger_app::{Authenticator, IdentityProvider, KeySet};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Largest key set accepted, in bytes.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Longest one fetch of the key set URL may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the key set comes from.
#[derive(Clone, Debug)]
pub enum JwksSource {
    /// A file, read again at every refresh.
    File(PathBuf),
    /// A URL (the provider's `jwks_uri`).
    Url {
        /// The URL.
        url: String,
        /// The client fetching it.
        client: reqwest::Client,
    },
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Url { url, .. } => f.write_str(url),
        }
    }
}

impl JwksSource {
    /// The source `config` names, if any.
    pub fn from_config(config: &Config) -> Result<Option<Self>> {
        if let Some(path) = &config.jwt_jwks_file {
            return Ok(Some(Self::File(path.clone())));
        }
        let Some(url) = &config.jwt_jwks_url else {
            return Ok(None);
        };
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("planledger/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client for the key set")?;
        Ok(Some(Self::Url {
            url: url.clone(),
            client,
        }))
    }

    /// The key set's bytes as they are now.
    async fn read(&self) -> Result<Vec<u8>> {
        match self {
            Self::File(path) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .with_context(|| format!("reading the key set file {}", path.display()))?;
                if bytes.len() > MAX_JWKS_BYTES {
                    bail!("the key set file {} is over 1 MiB", path.display());
                }
                Ok(bytes)
            }
            Self::Url { url, client } => {
                let response = client
                    .get(url)
                    .header(reqwest::header::ACCEPT, "application/json")
                    .send()
                    .await
                    .with_context(|| format!("fetching the key set from {url}"))?;
                let status = response.status();
                if !status.is_success() {
                    bail!("fetching the key set from {url}: the server answered {status}");
                }
                if response
                    .content_length()
                    .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
                {
                    bail!("the key set at {url} is over 1 MiB");
                }
                let bytes = response
                    .bytes()
                    .await
                    .with_context(|| format!("reading the key set from {url}"))?;
                if bytes.len() > MAX_JWKS_BYTES {
                    bail!("the key set at {url} is over 1 MiB");
                }
                Ok(bytes.to_vec())
            }
        }
    }

    /// Reads the key set and installs it in `keys`; `true` if the keys changed.
    async fn load_into(&self, keys: &KeySet) -> Result<bool> {
        let bytes = self.read().await?;
        let parsed = KeySet::parse(&bytes)
            .with_context(|| format!("the key set from {self} is unusable"))?;
        for reason in &parsed.skipped {
            tracing::warn!(source = %self, skipped = %reason, "key set entry skipped");
        }
        let count = parsed.keys.len();
        let changed = keys.install(parsed);
        metrics::gauge!("planledger_jwks_keys").set(count as f64);
        if changed {
            tracing::info!(source = %self, kids = ?keys.kids(), "identity provider keys installed");
        }
        Ok(changed)
    }
}

/// The identity provider `config` names, with its key set read once; `None` without one. The
/// caller keeps it current with [`keep_current`].
pub async fn provider(config: &Config) -> Result<Option<(IdentityProvider, JwksSource)>> {
    let Some(source) = JwksSource::from_config(config)? else {
        if config.jwt_issuer.is_some() || config.jwt_audience.is_some() {
            bail!(
                "jwt_issuer and jwt_audience apply to an identity provider's tokens: set jwt_jwks_file or jwt_jwks_url too"
            );
        }
        return Ok(None);
    };
    let keys = Arc::new(KeySet::new(config.jwks_min_refetch()?));
    source
        .load_into(&keys)
        .await
        .with_context(|| format!("loading the identity provider's key set from {source}"))?;
    metrics::counter!("planledger_jwks_refreshes_total", "outcome" => "ok").increment(1);
    if config.jwt_issuer.is_none() || config.jwt_audience.is_none() {
        tracing::warn!(
            "an identity provider is configured without jwt_issuer and jwt_audience: any token its keys signed is accepted, whoever it was issued to; set both in production"
        );
    }
    Ok(Some((
        IdentityProvider {
            keys,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
        },
        source,
    )))
}

/// Reads the key set again every `every`, and at once when a request asks for it (a token
/// named an unknown `kid`), until `shutdown`. A failed read keeps the keys it had.
pub async fn keep_current(
    source: JwksSource,
    keys: Arc<KeySet>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let asked = tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => false,
            () = keys.refresh_wanted() => true,
        };
        match source.load_into(&keys).await {
            Ok(changed) => {
                metrics::counter!("planledger_jwks_refreshes_total", "outcome" => "ok")
                    .increment(1);
                tracing::debug!(source = %source, changed, asked, "key set read again");
            }
            Err(error) => {
                metrics::counter!("planledger_jwks_refreshes_total", "outcome" => "failed")
                    .increment(1);
                tracing::warn!(source = %source, error = format!("{error:#}"), "key set refresh failed; the keys read before stay in use");
            }
        }
        keys.attempted();
    }
}

/// The token checks `config` names, as every process that answers the API builds them (`serve`,
/// a writer node, `projector`): the service's own HS256 key (`jwt_secret_file`, else the data
/// directory's) and, with `jwt_jwks_file`/`jwt_jwks_url`, the identity provider's keys
/// (`jwt_issuer`, `jwt_audience` checked) with the task that keeps them current until
/// `shutdown`.
pub async fn authenticator(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<(Authenticator, Option<JoinHandle<()>>)> {
    let auth = crate::token::authenticator(&config.data_dir, config.jwt_secret_file.as_deref())?;
    let Some((provider, source)) = provider(config).await? else {
        return Ok((auth, None));
    };
    let refresh = tokio::spawn(keep_current(
        source,
        provider.keys.clone(),
        config.jwks_refresh()?,
        shutdown.clone(),
    ));
    Ok((auth.with_provider(provider), Some(refresh)))
}
