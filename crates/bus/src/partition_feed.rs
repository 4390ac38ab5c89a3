//! A partition's stream read as a feed (cluster mode): pages and a live tail of one tenant's
//! events in one partition, straight from the stream `PLANLEDGER_P<nn>`, which is the truth of
//! the partition's log. Any node can read any partition this way, whoever owns it, and so can
//! `planledger export`.
//!
//! Each read is an ordered consumer (ephemeral, flow-controlled, recreated by the client on a
//! gap) from the stream sequence after the caller's position, filtered to the tenant's
//! subjects `planledger.evt.p<partition>.<tenant>.>`. The stream sequence of an event is its
//! position (the partition log's invariant); each message is checked against it as the cache's
//! catch-up checks it ([`committed_event`]).

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::{self, stream};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use planledger_proto::subjects;
use planledger_store::Envelope;

use crate::BusError;
use crate::partition_log::committed_event;

/// How long one page read may take before it is refused as unavailable.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A page of one partition's feed.
#[derive(Debug)]
pub struct FeedPage {
    /// The events after the position asked for, in position order (at most the limit).
    pub events: Vec<Envelope>,
    /// Whether the page holds every event the stream had after that position when read.
    pub at_end: bool,
}

/// Reads one partition's stream; cheap to clone.
#[derive(Clone, Debug)]
pub struct PartitionFeed {
    stream: stream::Stream,
    partition: u32,
}

impl PartitionFeed {
    /// The feed of `partition`, whose stream must exist.
    pub async fn open(js: &jetstream::Context, partition: u32) -> Result<Self, BusError> {
        let name = subjects::partition_stream_name(partition);
        let stream = crate::connection::find_stream(js, &name)
            .await?
            .ok_or(BusError::PartitionStreamMissing { stream: name })?;
        Ok(Self { stream, partition })
    }

    /// The partition read.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The position of the partition's last event now (its stream's last sequence).
    pub async fn last_position(&self) -> Result<u64, BusError> {
        let mut stream = self.stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| BusError::nats("read a partition stream's info", e))?;
        Ok(info.state.last_sequence)
    }

    /// The subjects read: one tenant's, or every tenant's.
    fn filter(&self, tenant: Option<&str>) -> String {
        let prefix = subjects::partition_subject_prefix(self.partition);
        match tenant {
            Some(tenant) => format!("{prefix}.{}.>", subjects::encode_token(tenant)),
            None => format!("{prefix}.>"),
        }
    }

    async fn consumer(
        &self,
        tenant: Option<&str>,
        after: u64,
    ) -> Result<jetstream::consumer::Consumer<pull::OrderedConfig>, BusError> {
        self.stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: self.filter(tenant),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: after.saturating_add(1),
                },
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::nats("create a feed consumer", e))
    }

    fn decode(&self, message: &jetstream::Message) -> Result<Envelope, BusError> {
        let sequence = message
            .info()
            .map_err(|e| BusError::nats("read a feed message's metadata", e))?
            .stream_sequence;
        Ok(committed_event(
            self.partition,
            sequence,
            message.headers.as_ref(),
            &message.payload,
        )?
        .envelope)
    }

    /// Up to `limit` events (of `tenant`, or of every tenant) after position `after`.
    pub async fn page(
        &self,
        tenant: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<FeedPage, BusError> {
        let work = async {
            let consumer = self.consumer(tenant, after).await?;
            let name = consumer.cached_info().name.clone();
            let read = self.read_page(consumer, after, limit).await;
            // The consumer is ephemeral and would otherwise linger on the server until its
            // inactivity threshold; a page is done with it.
            if let Err(error) = self.stream.delete_consumer(&name).await {
                tracing::debug!(partition = self.partition, %error, "a feed consumer was not deleted");
            }
            read
        };
        tokio::time::timeout(PAGE_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| {
                Err(BusError::nats(
                    "read a partition stream",
                    format!(
                        "partition {}'s stream did not answer within {PAGE_TIMEOUT:?}",
                        self.partition
                    ),
                ))
            })
    }

    async fn read_page(
        &self,
        consumer: jetstream::consumer::Consumer<pull::OrderedConfig>,
        after: u64,
        limit: usize,
    ) -> Result<FeedPage, BusError> {
        // Counted by the server when it created the consumer, under the filter.
        let pending = consumer.cached_info().num_pending;
        let want = (pending as usize).min(limit);
        let mut events = Vec::with_capacity(want);
        let mut drained = pending == 0;
        if want > 0 {
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| BusError::nats("read a partition stream", e))?;
            let mut last = after;
            while events.len() < want && !drained {
                let message = match messages.next().await {
                    Some(Ok(message)) => message,
                    Some(Err(error)) => {
                        return Err(BusError::nats("read a partition stream", error));
                    }
                    None => {
                        return Err(BusError::nats(
                            "read a partition stream",
                            format!(
                                "partition {}'s consumer ended after {} of {want} events",
                                self.partition,
                                events.len()
                            ),
                        ));
                    }
                };
                // The server's count of what is left after this message: fewer messages than
                // counted at creation (a stream repaired meanwhile) ends the page, not a wait.
                drained = message.info().is_ok_and(|info| info.pending == 0);
                // Skips repeats after the client recreated the consumer (see `tail`).
                let envelope = self.decode(&message)?;
                if envelope.position.get() > last {
                    last = envelope.position.get();
                    events.push(envelope);
                }
            }
        }
        debug_assert!(
            events
                .windows(2)
                .all(|pair: &[Envelope]| pair[0].position < pair[1].position),
            "a partition feed page is in position order"
        );
        Ok(FeedPage {
            at_end: drained || events.len() as u64 >= pending,
            events,
        })
    }

    /// Every event (of `tenant`, or of every tenant) after position `after`, as it is
    /// committed; the stream ends only with an error.
    pub async fn tail(
        &self,
        tenant: Option<&str>,
        after: u64,
    ) -> Result<BoxStream<'static, Result<Envelope, BusError>>, BusError> {
        let messages = self
            .consumer(tenant, after)
            .await?
            .messages()
            .await
            .map_err(|e| BusError::nats("tail a partition stream", e))?;
        let feed = self.clone();
        // The client recreates an ordered consumer after a gap or missed heartbeats from the
        // last sequence it delivered, or from the stream's start if it delivered none yet: an
        // event at or before the last one handed out is such a repeat, and is skipped.
        let mut last = after;
        Ok(messages
            .filter_map(move |message| {
                let item = match message {
                    Ok(message) => feed.decode(&message),
                    Err(error) => Err(BusError::nats("tail a partition stream", error)),
                };
                let keep = match item {
                    Ok(envelope) if envelope.position.get() <= last => None,
                    Ok(envelope) => {
                        last = envelope.position.get();
                        Some(Ok(envelope))
                    }
                    Err(error) => Some(Err(error)),
                };
                std::future::ready(keep)
            })
            .boxed())
    }
}

/// An envelope as a cluster renders it (the feed, exports): its JSON with `partition` first.
pub fn event_json(partition: u32, envelope: &Envelope) -> Result<String, serde_json::Error> {
    let json = serde_json::to_string(envelope)?;
    // An envelope serializes as an object with fields.
    assert!(
        json.starts_with('{') && json.len() > 2,
        "an envelope serializes as a non-empty object"
    );
    Ok(format!("{{\"partition\":{partition},{}", &json[1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_json_puts_the_partition_first_and_keeps_every_field() {
        let envelope: Envelope = serde_json::from_str(
            r#"{"position":7,"stream":"acme/q3","version":2,"event_id":"0190f7a0-0000-7000-8000-000000000001","type":"PlanCreated","schema_version":1,"occurred_at":"2026-01-01T00:00:00Z","recorded_at":"2026-01-01T00:00:00Z","actor":"ana","command_id":null,"correlation_id":null,"causation_id":null,"traceparent":null,"data":{"title":"Q3"},"prev_hash":"00","hash":"11"}"#,
        )
        .expect("a valid envelope");
        let json = event_json(3, &envelope).expect("renders");
        assert!(
            json.starts_with(r#"{"partition":3,"position":7,"#),
            "{json}"
        );
        let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(value["partition"], 3);
        assert_eq!(value["data"]["title"], "Q3");
        let mut without = value.clone();
        without
            .as_object_mut()
            .expect("an object")
            .remove("partition");
        assert_eq!(without, serde_json::to_value(&envelope).expect("a value"));
    }
}
