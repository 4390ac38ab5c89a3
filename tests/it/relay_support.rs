//! Helpers shared by the relay tests: a real event log, appends, a relay task, and a reader of
//! everything in the JetStream stream.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use jiff::Timestamp;
use planledger_bus::{Relay, RelayConfig, RelayStatusHandle, envelope_from_proto};
use planledger_proto::Message as _;
use planledger_proto::v1::EventEnvelope;
use planledger_store::{
    AppendMeta, AppendRequest, Envelope, EventStore, ExpectedVersion, NewEvent, Position,
    StoreOptions, StreamId,
};
use tokio::task::JoinHandle;

/// Upper bound on any wait in these tests: a guard against hangs, not a timing assertion.
pub const GUARD: Duration = Duration::from_secs(180);

/// Event types the generated history cycles through.
pub const EVENT_TYPES: [&str; 5] = [
    "PlanCreated",
    "GoalDefined",
    "StepAdded",
    "CheckInRecorded",
    "GoalAdjusted",
];

/// Streams the generated history spreads over (one plan id has a '.', one tenant differs).
pub const STREAMS: [&str; 4] = [
    "acme/q3-launch",
    "acme/q3.hiring",
    "acme/ops_2025",
    "globex/roadmap",
];

/// Opens a fresh event log in `dir`.
pub fn open_store(dir: &std::path::Path) -> EventStore {
    EventStore::open(dir.join("log"), StoreOptions::default()).expect("the event log opens")
}

/// Relay settings for tests: the server's URL, short ack timeout and backoff.
pub fn relay_config(url: &str) -> RelayConfig {
    RelayConfig {
        url: url.to_string(),
        ack_timeout: Duration::from_secs(2),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ack_window: 256,
        read_batch: 128,
        ..RelayConfig::default()
    }
}

/// Sends logs to the test output when `RUST_LOG` is set (e.g. `RUST_LOG=planledger_bus=debug`).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Spawns a relay that runs until its task is aborted (as if the process were killed).
pub fn spawn_relay(
    store: &EventStore,
    config: &RelayConfig,
) -> (JoinHandle<()>, RelayStatusHandle) {
    init_logs();
    let relay = Relay::new(store.clone(), config.clone()).expect("the relay config is valid");
    let status = relay.status();
    let task = tokio::spawn(async move {
        if let Err(error) = relay.run(std::future::pending()).await {
            panic!("relay failed: {error}");
        }
    });
    (task, status)
}

/// Aborts a relay task and waits until it is gone.
pub async fn kill_relay(task: JoinHandle<()>) {
    task.abort();
    let _ = task.await;
}

/// Appends the events numbered `range` (1 to 3 events per append, 16 appends in flight).
pub async fn append_events(store: &EventStore, range: std::ops::Range<u64>) {
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut next = range.start;
    while next < range.end {
        let size = (1 + next % 3).min(range.end - next);
        let events = (next..next + size)
            .map(|n| {
                NewEvent::from_json(
                    EVENT_TYPES[(n % EVENT_TYPES.len() as u64) as usize],
                    1 + (n % 2) as u32,
                    Timestamp::now(),
                    &serde_json::json!({"n": n, "note": format!("event number {n}")}),
                )
            })
            .collect();
        let request = AppendRequest {
            stream: StreamId::new(STREAMS[(next % STREAMS.len() as u64) as usize])
                .expect("test stream ids are valid"),
            expected: ExpectedVersion::Any,
            events,
            meta: AppendMeta {
                actor: "tester".into(),
                correlation_id: Some(format!("corr-{next}")),
                ..AppendMeta::default()
            },
        };
        let store = store.clone();
        pending.push(async move { store.append(request).await });
        next += size;
        if pending.len() >= 16 {
            let outcome = pending.next().await.expect("a pending append");
            outcome.expect("appends succeed whatever the state of NATS");
        }
    }
    while let Some(outcome) = pending.next().await {
        outcome.expect("appends succeed whatever the state of NATS");
    }
}

/// Runs `future`, failing the test with `what` if it has not finished within [`GUARD`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(GUARD, future).await {
        Ok(value) => value,
        Err(_) => panic!("gave up waiting for {what} after {GUARD:?}"),
    }
}

/// Waits until the relay has had `position` acknowledged.
pub async fn wait_published(status: &RelayStatusHandle, position: u64) {
    within(&format!("position {position} to be acknowledged"), async {
        status
            .wait_published(Position(position))
            .await
            .expect("the relay is running");
    })
    .await;
}

/// Waits until the relay reports itself caught up at `position` (acknowledged, checkpoint saved,
/// status refreshed).
pub async fn wait_caught_up(
    status: &RelayStatusHandle,
    position: u64,
) -> planledger_bus::RelayStatus {
    within(&format!("the relay to be caught up at {position}"), async {
        status
            .watch()
            .wait_for(|s| s.is_caught_up() && s.published_position == position)
            .await
            .expect("the relay is running")
            .clone()
    })
    .await
}

/// One message as read back from the stream.
#[derive(Debug)]
pub struct StoredMessage {
    pub sequence: u64,
    pub subject: String,
    pub msg_id: Option<String>,
    pub position_header: Option<String>,
    pub content_type: Option<String>,
    pub envelope: EventEnvelope,
}

/// Reads every message of `stream` in sequence order with an ordered consumer.
pub async fn read_stream(url: &str, stream: &str) -> Vec<StoredMessage> {
    let client = async_nats::connect(url)
        .await
        .expect("the test connects to NATS");
    let js = jetstream::new(client);
    let mut handle = js.get_stream(stream).await.expect("the stream exists");
    let total = handle.info().await.expect("stream info").state.messages;
    let consumer = handle
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .expect("an ordered consumer can be created");
    let mut messages = consumer.messages().await.expect("the consumer delivers");
    let mut out = Vec::with_capacity(total as usize);
    within("reading the whole stream", async {
        while (out.len() as u64) < total {
            let message = messages
                .next()
                .await
                .expect("the ordered consumer keeps delivering")
                .expect("a message");
            let info = message.info().expect("a JetStream message has info");
            let header = |name: &str| {
                message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_string())
            };
            out.push(StoredMessage {
                sequence: info.stream_sequence,
                subject: message.subject.to_string(),
                msg_id: header("Nats-Msg-Id"),
                position_header: header("Planledger-Position"),
                content_type: header("Content-Type"),
                envelope: EventEnvelope::decode(message.payload.clone())
                    .expect("every body decodes as planledger.v1.EventEnvelope"),
            });
        }
    })
    .await;
    out
}

/// The stream's message count and last sequence.
pub async fn stream_counts(url: &str, stream: &str) -> (u64, u64) {
    let client = async_nats::connect(url)
        .await
        .expect("the test connects to NATS");
    let js = jetstream::new(client);
    let mut handle = js.get_stream(stream).await.expect("the stream exists");
    let state = &handle.info().await.expect("stream info").state;
    (state.messages, state.last_sequence)
}

/// Asserts the stream holds exactly the log, one message per event, in position order, each
/// body decoding to the stored envelope, with the contract's subject and headers.
pub async fn assert_stream_mirrors_log(url: &str, stream: &str, store: &EventStore) {
    let log: Vec<Envelope> = store
        .read_all(Position(1), usize::MAX)
        .expect("the log reads back");
    let (messages, last_sequence) = stream_counts(url, stream).await;
    if messages != log.len() as u64 {
        let read = read_stream(url, stream).await;
        let mut seen = std::collections::BTreeSet::new();
        let mut out_of_order = Vec::new();
        for message in &read {
            let position = message.envelope.position;
            if !seen.insert(position) || message.sequence != position {
                out_of_order.push((message.sequence, position));
            }
        }
        let missing: Vec<u64> = (1..=log.len() as u64)
            .filter(|p| !seen.contains(p))
            .collect();
        eprintln!(
            "stream/log mismatch: missing positions {missing:?}; (sequence, position) off their place: {:?}",
            &out_of_order[..out_of_order.len().min(40)]
        );
    }
    assert_eq!(
        messages,
        log.len() as u64,
        "the stream must hold exactly one message per event"
    );
    assert_eq!(
        last_sequence,
        log.len() as u64,
        "no message was ever added and removed"
    );
    let read = read_stream(url, stream).await;
    assert_eq!(read.len(), log.len());
    for (message, stored) in read.into_iter().zip(log) {
        let position = stored.position.get();
        assert_eq!(
            message.sequence, position,
            "stream sequence follows log position"
        );
        assert_eq!(
            message.msg_id.as_deref(),
            Some(stored.event_id.to_string().as_str())
        );
        assert_eq!(message.position_header, Some(position.to_string()));
        assert_eq!(
            message.content_type.as_deref(),
            Some(planledger_proto::EVENT_ENVELOPE_CONTENT_TYPE)
        );
        let (tenant, plan_id) = planledger_proto::split_stream(stored.stream.as_str());
        assert_eq!(
            message.subject,
            planledger_proto::subjects::event_subject(
                "planledger.evt",
                tenant,
                plan_id,
                &stored.event_type
            )
        );
        let decoded = envelope_from_proto(message.envelope).expect("the body is a valid envelope");
        assert_eq!(
            decoded, stored,
            "the body decodes to the stored envelope at {position}"
        );
    }
}
