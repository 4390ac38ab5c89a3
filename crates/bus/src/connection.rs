//! NATS connection and JetStream stream helpers shared by the relay, consumers and ingress.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{Client, ConnectOptions, Event};

use crate::BusError;

/// Opens a NATS connection that reconnects on its own, forever, with a capped backoff. `url`
/// may list several servers of a cluster, comma-separated (`nats://n1:4222,nats://n2:4222`).
///
/// Fails only when the first connection attempt fails; callers retry that themselves.
#[tracing::instrument(skip_all, fields(url = %url, name = %name))]
pub async fn connect(url: &str, name: &str) -> Result<Client, BusError> {
    // A list the client parses whole; a malformed one is passed on as given, so that the error
    // names it.
    let servers: Option<Vec<async_nats::ServerAddr>> = url
        .split(',')
        .map(|server| server.trim().parse().ok())
        .collect();
    let options = ConnectOptions::new()
        .name(name)
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(|event| async move {
            match event {
                Event::Connected => tracing::info!("nats connected"),
                Event::Disconnected => tracing::warn!("nats disconnected; reconnecting"),
                other => tracing::debug!(event = %other, "nats event"),
            }
        });
    let connected = match servers {
        Some(servers) if !servers.is_empty() => options.connect(servers).await,
        _ => options.connect(url).await,
    };
    let client = connected.map_err(|source| BusError::Connect {
        url: url.to_string(),
        source,
    })?;
    Ok(client)
}

/// Delay before reconnect attempt `attempts`: 50 ms doubling, at most 2 s.
fn reconnect_delay(attempts: usize) -> Duration {
    let exponent = u32::try_from(attempts.min(6)).unwrap_or(6);
    Duration::from_millis(50 * 2u64.pow(exponent)).min(Duration::from_secs(2))
}

/// What the event stream must look like; everything else an operator set is kept.
#[derive(Clone, Debug)]
pub struct StreamSpec {
    /// Stream name, e.g. `PLANLEDGER_EVENTS`.
    pub name: String,
    /// Subject prefix; the stream captures `<prefix>.>`.
    pub subject_prefix: String,
    /// Replicas (1 on one node, 3 on a cluster).
    pub replicas: usize,
    /// Window in which JetStream drops a repeated `Nats-Msg-Id`.
    pub duplicate_window: Duration,
}

impl StreamSpec {
    /// The wildcard subject the stream captures.
    pub fn subjects(&self) -> String {
        format!("{}.>", self.subject_prefix)
    }
}

/// The stream `name`, or `None` if it does not exist.
pub async fn find_stream(
    context: &jetstream::Context,
    name: &str,
) -> Result<Option<stream::Stream>, BusError> {
    match context.get_stream(name).await {
        Ok(existing) => Ok(Some(existing)),
        Err(error)
            if matches!(
                error.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref inner)
                    if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            Ok(None)
        }
        Err(error) => Err(BusError::nats("look up stream", error)),
    }
}

/// Whether a stream with `config` keeps every message it is given: no age, count, size or
/// per-subject limit and the limits retention policy (work-queue and interest streams delete
/// messages once consumed). Only in such a stream is a missing message a sign of a purge.
pub fn keeps_everything(config: &stream::Config) -> bool {
    config.retention == stream::RetentionPolicy::Limits
        && config.max_age.is_zero()
        && config.max_messages <= 0
        && config.max_bytes <= 0
        && config.max_messages_per_subject <= 0
}

/// Creates the stream, or updates an existing one to the spec (file storage, subjects, replicas,
/// duplicate window), keeping limits an operator set.
#[tracing::instrument(skip_all, fields(stream = %spec.name))]
pub async fn ensure_stream(
    context: &jetstream::Context,
    spec: &StreamSpec,
) -> Result<stream::Stream, BusError> {
    let subjects = vec![spec.subjects()];
    match find_stream(context, &spec.name).await? {
        Some(mut existing) => {
            let info = existing
                .info()
                .await
                .map_err(|e| BusError::nats("read stream info", e))?;
            let mut config = info.config.clone();
            if config.storage != stream::StorageType::File {
                tracing::warn!(
                    storage = ?config.storage,
                    "the event stream does not use file storage; JetStream cannot change that in place"
                );
            }
            let changed = config.subjects != subjects
                || config.num_replicas != spec.replicas
                || config.duplicate_window != spec.duplicate_window;
            if changed {
                tracing::info!(
                    replicas = spec.replicas,
                    duplicate_window_ms = spec.duplicate_window.as_millis() as u64,
                    "updating the event stream to the configured settings"
                );
                config.subjects = subjects;
                config.num_replicas = spec.replicas;
                config.duplicate_window = spec.duplicate_window;
                context
                    .update_stream(config)
                    .await
                    .map_err(|e| BusError::nats("update stream", e))?;
            }
            Ok(existing)
        }
        None => {
            tracing::info!(subjects = %spec.subjects(), "creating the event stream");
            context
                .create_stream(stream::Config {
                    name: spec.name.clone(),
                    description: Some("Planledger events, published by the relay".into()),
                    subjects,
                    storage: stream::StorageType::File,
                    num_replicas: spec.replicas,
                    duplicate_window: spec.duplicate_window,
                    allow_direct: true,
                    ..Default::default()
                })
                .await
                .map_err(|e| BusError::nats("create stream", e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delay_doubles_and_is_capped() {
        assert_eq!(reconnect_delay(0), Duration::from_millis(50));
        assert_eq!(reconnect_delay(1), Duration::from_millis(100));
        assert_eq!(reconnect_delay(5), Duration::from_millis(1600));
        assert_eq!(reconnect_delay(100), Duration::from_secs(2));
    }
}
