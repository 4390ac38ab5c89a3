//! The relay benchmark (`planledger-bench relay`).
//!
//! Three measurements against one NATS server, in one run:
//! 1. **Raw ceiling**: the same protobuf bodies, subjects and headers the relay would send, built
//!    in memory beforehand and published with JetStream async publish, a window of
//!    `ack_window` acks awaited in order. Nothing is read from the log.
//! 2. **Fast-ingest ceiling**: the same messages, each with its expected last sequence, published
//!    as one fast-ingest batch (nats-server 2.14+, stream setting `allow_batched`): core
//!    publishes whose reply subject names the batch, acknowledged by the server every up to
//!    [`FAST_INGEST_ACK_EVERY`] messages instead of one ack per message. What the relay could
//!    reach with fewer acks.
//! 3. **Relay throughput**: a [`Relay`] publishing the same events from the log, from start to
//!    the last ack.
//! 4. **Relay lag at a steady rate**: events appended at `steady_rate` per second (one event per
//!    append, as commands do) while a caught-up relay runs; the lag of an event is the time from
//!    its append being answered (durable) to JetStream acknowledging it.
//!
//! Streams made here are named after the run and deleted at the end. Numbers are printed, never
//! asserted.

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage as Publish};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use jiff::Timestamp;
use planledger_store::{
    AppendMeta, AppendRequest, EventStore, ExpectedVersion, NewEvent, Position, StoreOptions,
    StreamId,
};
use tokio::sync::oneshot;

use planledger_bus::bench::{parts_for, publish_for};
use planledger_bus::{
    BusError, Relay, RelayConfig, RelayState, StreamSpec, connect, ensure_stream, envelope_to_proto,
};

/// What to measure.
#[derive(Clone, Debug)]
pub struct RelayBenchConfig {
    /// NATS server URL.
    pub nats_url: String,
    /// An empty (or missing) directory for the benchmark's event logs.
    pub data_dir: PathBuf,
    /// Events for the throughput comparison.
    pub events: u64,
    /// Approximate size of each event's JSON `data`, in bytes.
    pub payload_bytes: usize,
    /// Publishes awaiting their ack at once, for both the raw publisher and the relay.
    pub ack_window: usize,
    /// Rounds of (raw, relay); the best round of each is reported.
    pub rounds: u32,
    /// Events per second for the lag measurement.
    pub steady_rate: u64,
    /// Duration of the lag measurement.
    pub steady_duration: Duration,
    /// Stream replicas.
    pub replicas: usize,
}

impl Default for RelayBenchConfig {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            data_dir: PathBuf::from("bench-relay-data"),
            events: 100_000,
            payload_bytes: 200,
            ack_window: 1024,
            rounds: 2,
            steady_rate: 5_000,
            steady_duration: Duration::from_secs(10),
            replicas: 1,
        }
    }
}

/// What the benchmark measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RelayBenchReport {
    /// Events in the throughput comparison.
    pub events: u64,
    /// Mean protobuf body size, in bytes.
    pub message_bytes: u64,
    /// Ack window used by both publishers.
    pub ack_window: usize,
    /// Raw JetStream async-publish ceiling, messages per second (best round).
    pub raw_per_second: f64,
    /// The same messages as one fast-ingest batch, messages per second (best round).
    pub fast_ingest_per_second: f64,
    /// The publishing process's CPU per message with async publish, microseconds (best round).
    pub raw_cpu_us: f64,
    /// The publishing process's CPU per message in a fast-ingest batch, microseconds (best
    /// round).
    pub fast_ingest_cpu_us: f64,
    /// Relay throughput from the log, events per second (best round).
    pub relay_per_second: f64,
    /// `relay_per_second / raw_per_second`.
    pub relay_to_raw: f64,
    /// Target rate of the lag measurement, events per second.
    pub steady_rate: u64,
    /// Rate actually appended during the lag measurement.
    pub steady_achieved_rate: f64,
    /// Events in the lag measurement.
    pub steady_events: u64,
    /// Median lag (append answered -> JetStream ack), milliseconds.
    pub lag_p50_ms: f64,
    /// 99th percentile lag, milliseconds.
    pub lag_p99_ms: f64,
    /// Largest lag, milliseconds.
    pub lag_max_ms: f64,
}

impl fmt::Display for RelayBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "relay benchmark: {} events of {} protobuf bytes, ack window {}",
            self.events, self.message_bytes, self.ack_window
        )?;
        writeln!(
            f,
            "  raw JetStream async publish  {:>10.0} msg/s  ({:.1} µs of the publisher's CPU each)",
            self.raw_per_second, self.raw_cpu_us
        )?;
        writeln!(
            f,
            "  raw fast-ingest batch        {:>10.0} msg/s  ({:.1} µs of the publisher's CPU each; {:.2}x raw; an ack per up to {} messages)",
            self.fast_ingest_per_second,
            self.fast_ingest_cpu_us,
            if self.raw_per_second > 0.0 {
                self.fast_ingest_per_second / self.raw_per_second
            } else {
                0.0
            },
            FAST_INGEST_ACK_EVERY
        )?;
        writeln!(
            f,
            "  relay (log -> JetStream)     {:>10.0} events/s  ({:.2}x raw)",
            self.relay_per_second, self.relay_to_raw
        )?;
        write!(
            f,
            "  lag at {} events/s (achieved {:.0}, {} events): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.steady_rate,
            self.steady_achieved_rate,
            self.steady_events,
            self.lag_p50_ms,
            self.lag_p99_ms,
            self.lag_max_ms
        )
    }
}

/// Streams the benchmark writes to; plan ids per stream.
const BENCH_PLANS: u64 = 64;
/// Events per append in the bulk fill.
const FILL_EVENTS_PER_APPEND: u64 = 100;

fn bench_event(index: u64, payload_bytes: usize) -> NewEvent {
    let note = "x".repeat(payload_bytes.saturating_sub(60));
    let data = serde_json::json!({
        "goal_id": format!("goal-{}", index % 16),
        "confidence": 0.75,
        "note": note,
    });
    NewEvent::from_json("CheckInRecorded", 1, Timestamp::now(), &data)
}

fn bench_stream(index: u64) -> StreamId {
    StreamId::new(format!("bench/plan-{}", index % BENCH_PLANS))
        .expect("bench stream ids are short and printable")
}

/// Appends `count` events in appends of up to 100 events, many in flight at once.
async fn fill(store: &EventStore, count: u64, payload_bytes: usize) -> Result<(), BusError> {
    let mut pending = FuturesUnordered::new();
    let mut appended = 0u64;
    let mut index = 0u64;
    while appended < count {
        let size = FILL_EVENTS_PER_APPEND.min(count - appended);
        let events = (0..size)
            .map(|i| bench_event(appended + i, payload_bytes))
            .collect();
        let store = store.clone();
        let request = AppendRequest {
            stream: bench_stream(index),
            expected: ExpectedVersion::Any,
            events,
            meta: AppendMeta {
                actor: "bench".into(),
                ..AppendMeta::default()
            },
        };
        pending.push(async move { store.append(request).await });
        appended += size;
        index += 1;
        if pending.len() >= 64
            && let Some(result) = pending.next().await
        {
            result?;
        }
    }
    while let Some(result) = pending.next().await {
        result?;
    }
    Ok(())
}

/// A unique, stream-name-safe id for this run.
fn run_id() -> String {
    format!(
        "{}{}",
        std::process::id(),
        Timestamp::now().as_millisecond() % 1_000_000
    )
}

/// Measures relay throughput next to the raw JetStream ceiling, and relay lag at a steady rate.
#[tracing::instrument(skip_all, fields(events = config.events, ack_window = config.ack_window))]
pub async fn bench_relay(config: RelayBenchConfig) -> Result<RelayBenchReport, BusError> {
    if config.events == 0 || config.ack_window == 0 || config.rounds == 0 {
        return Err(BusError::InvalidConfig {
            field: "events/ack_window/rounds",
            rule: "must each be at least 1",
        });
    }
    let run = run_id();
    let client = connect(&config.nats_url, "planledger-bench").await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_ack_inflight(config.ack_window * 2)
        .backpressure_on_inflight(true)
        .build(client);

    tracing::info!("filling the bench log");
    let store = EventStore::open(config.data_dir.join("throughput"), StoreOptions::default())?;
    fill(&store, config.events, config.payload_bytes).await?;
    let envelopes = store.read_all(Position(1), config.events as usize)?;

    // Same subject length for both publishers: `plbench.<kind>.<run>` with 5-letter kinds.
    let raw_prefix = format!("plbench.rawpb.r{run}");
    let fast_prefix = format!("plbench.fasti.r{run}");
    let fast_messages: Vec<_> = envelopes
        .iter()
        .map(|envelope| parts_for(envelope, &fast_prefix))
        .collect();
    let mut raw_messages = Vec::with_capacity(envelopes.len());
    let mut body_bytes = 0u64;
    for envelope in &envelopes {
        let (subject, publish) = publish_for(envelope, &raw_prefix);
        raw_messages.push((subject, publish));
    }
    for envelope in &envelopes {
        body_bytes += planledger_proto::Message::encoded_len(&envelope_to_proto(envelope)) as u64;
    }
    drop(envelopes);

    let mut raw_best = 0f64;
    let mut fast_best = 0f64;
    let (mut raw_cpu, mut fast_cpu) = (f64::INFINITY, f64::INFINITY);
    let cpu_per_message = |since: Duration| {
        (crate::process_cpu().saturating_sub(since)).as_secs_f64() * 1e6 / config.events as f64
    };
    let mut relay_best = 0f64;
    let spec = |name: &str, subject_prefix: &str| StreamSpec {
        name: name.to_owned(),
        subject_prefix: subject_prefix.to_owned(),
        replicas: config.replicas,
        duplicate_window: Duration::from_secs(120),
    };
    for round in 0..config.rounds {
        let raw_stream = format!("PLBENCH_RAW_{run}_{round}");
        ensure_stream(&js, &spec(&raw_stream, &raw_prefix)).await?;
        let cpu = crate::process_cpu();
        let rate = raw_publish(&js, &raw_messages, config.ack_window).await?;
        raw_cpu = raw_cpu.min(cpu_per_message(cpu));
        tracing::info!(round, rate, "raw JetStream publish");
        raw_best = raw_best.max(rate);
        delete_stream(&js, &raw_stream).await;

        let fast_stream = format!("PLBENCH_FST_{run}_{round}");
        ensure_stream(&js, &spec(&fast_stream, &fast_prefix)).await?;
        allow_fast_ingest(&js, &fast_stream).await?;
        let cpu = crate::process_cpu();
        let rate = fast_ingest_publish(&js.client(), &fast_messages).await?;
        fast_cpu = fast_cpu.min(cpu_per_message(cpu));
        tracing::info!(round, rate, "raw fast-ingest publish");
        fast_best = fast_best.max(rate);
        delete_stream(&js, &fast_stream).await;

        let relay_stream = format!("PLBENCH_RLY_{run}_{round}");
        let rate = relay_publish(
            &store,
            &config,
            &relay_stream,
            &format!("plbench.relay.r{run}"),
            Position(config.events),
        )
        .await?;
        tracing::info!(round, rate, "relay publish");
        relay_best = relay_best.max(rate);
        delete_stream(&js, &relay_stream).await;
    }
    drop(raw_messages);
    drop(fast_messages);
    drop(store);

    tracing::info!(
        rate = config.steady_rate,
        "measuring relay lag at a steady rate"
    );
    let steady = steady_lag(&js, &config, &run).await?;

    Ok(RelayBenchReport {
        events: config.events,
        message_bytes: body_bytes / config.events,
        ack_window: config.ack_window,
        raw_per_second: raw_best,
        fast_ingest_per_second: fast_best,
        raw_cpu_us: raw_cpu,
        fast_ingest_cpu_us: fast_cpu,
        relay_per_second: relay_best,
        relay_to_raw: if raw_best > 0.0 {
            relay_best / raw_best
        } else {
            0.0
        },
        steady_rate: config.steady_rate,
        steady_achieved_rate: steady.achieved_rate,
        steady_events: steady.lags_ms.len() as u64,
        lag_p50_ms: percentile(&steady.lags_ms, 0.50),
        lag_p99_ms: percentile(&steady.lags_ms, 0.99),
        lag_max_ms: steady.lags_ms.last().copied().unwrap_or(0.0),
    })
}

async fn delete_stream(js: &jetstream::Context, name: &str) {
    if let Err(error) = js.delete_stream(name).await {
        tracing::warn!(stream = name, %error, "could not delete a bench stream");
    }
}

/// Publishes prebuilt messages with a window of acks awaited in order; messages per second.
async fn raw_publish(
    js: &jetstream::Context,
    messages: &[(String, Publish)],
    window: usize,
) -> Result<f64, BusError> {
    let started = Instant::now();
    let mut in_flight = VecDeque::with_capacity(window);
    for (sequence, (subject, publish)) in messages.iter().enumerate() {
        if in_flight.len() >= window
            && let Some(ack) = in_flight.pop_front()
        {
            ack_ok(ack).await?;
        }
        let publish = publish.clone().expected_last_sequence(sequence as u64);
        let ack = js
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| BusError::nats("raw publish", e))?;
        in_flight.push_back(ack);
    }
    while let Some(ack) = in_flight.pop_front() {
        ack_ok(ack).await?;
    }
    Ok(messages.len() as f64 / started.elapsed().as_secs_f64())
}

/// The most messages a fast-ingest batch asks the server to publish before acknowledging them
/// (the server may ask for acks more often).
pub const FAST_INGEST_ACK_EVERY: u16 = 500;

/// Turns on fast-ingest batches (`allow_batched`) on an existing stream, keeping the rest of
/// its configuration.
async fn allow_fast_ingest(js: &jetstream::Context, name: &str) -> Result<(), BusError> {
    // The lookup fetches the stream's info, configuration included: one request, not two.
    let stream = js
        .get_stream(name)
        .await
        .map_err(|e| BusError::nats("fast-ingest stream lookup", e))?;
    let mut config = serde_json::to_value(&stream.cached_info().config)
        .map_err(|e| BusError::nats("fast-ingest stream config", e))?;
    config["allow_batched"] = serde_json::Value::Bool(true);
    let body =
        serde_json::to_vec(&config).map_err(|e| BusError::nats("fast-ingest stream config", e))?;
    let answer = js
        .client()
        .request(format!("$JS.API.STREAM.UPDATE.{name}"), body.into())
        .await
        .map_err(|e| BusError::nats("fast-ingest stream update", e))?;
    let answer: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap_or_default();
    if answer["config"]["allow_batched"] != serde_json::Value::Bool(true) {
        return Err(BusError::nats(
            "fast-ingest stream update",
            format!(
                "the server did not turn on fast-ingest batches (nats-server 2.14 or later is needed): {answer}"
            ),
        ));
    }
    Ok(())
}

/// Publishes prebuilt messages as one fast-ingest batch (gap mode `fail`), each with its
/// expected last sequence as the relay sends it, keeping at most two ack intervals in flight;
/// messages per second, from the first publish to the batch's final ack.
async fn fast_ingest_publish(
    client: &async_nats::Client,
    messages: &[(String, async_nats::HeaderMap, bytes::Bytes)],
) -> Result<f64, BusError> {
    let failed = |detail: String| BusError::nats("fast-ingest batch", detail);
    let inbox = client.new_inbox();
    let batch = uuid::Uuid::now_v7().simple().to_string();
    let mut answers = client
        .subscribe(format!("{inbox}.>"))
        .await
        .map_err(|e| BusError::nats("fast-ingest subscribe", e))?;
    let last = messages.len() as u64;
    // Reads one answer: a flow ack moves `acked` and the interval; the batch's final ack ends it.
    let read = |message: async_nats::Message, acked: &mut u64, every: &mut u64| {
        let answer: serde_json::Value = serde_json::from_slice(&message.payload)
            .map_err(|e| failed(format!("an answer that is not JSON: {e}")))?;
        match answer["type"].as_str() {
            Some("ack") => {
                *acked = (*acked).max(answer["seq"].as_u64().unwrap_or(0));
                *every = answer["msgs"].as_u64().unwrap_or(1).max(1);
                Ok(false)
            }
            Some(other) => Err(failed(format!("the server answered {other}: {answer}"))),
            None if answer.get("error").is_some() => {
                Err(failed(format!("the batch was refused: {answer}")))
            }
            // The batch's final ack names how many messages it stored: all of them, or the
            // batch fell short.
            None if answer.get("stream").is_some() => match answer["count"].as_u64() {
                Some(count) if count == last => Ok(true),
                _ => Err(failed(format!("the batch stored fewer messages: {answer}"))),
            },
            None => Ok(false),
        }
    };
    let started = Instant::now();
    let (mut acked, mut every) = (0u64, u64::from(FAST_INGEST_ACK_EVERY));
    for (index, (subject, headers, body)) in messages.iter().enumerate() {
        let seq = index as u64 + 1;
        while seq > acked + 2 * every {
            let message = answers
                .next()
                .await
                .ok_or_else(|| failed("the answers' subscription ended".into()))?;
            read(message, &mut acked, &mut every)?;
        }
        let op = if seq == last {
            2
        } else if seq == 1 {
            0
        } else {
            1
        };
        let reply = format!("{inbox}.{batch}.{FAST_INGEST_ACK_EVERY}.fail.{seq}.{op}.$FI");
        let mut headers = headers.clone();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
            (seq - 1).to_string(),
        );
        client
            .publish_with_reply_and_headers(subject.clone(), reply, headers, body.clone())
            .await
            .map_err(|e| BusError::nats("fast-ingest publish", e))?;
    }
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), answers.next())
            .await
            .map_err(|_| failed("no final ack within 30 s".into()))?
            .ok_or_else(|| failed("the answers' subscription ended".into()))?;
        if read(message, &mut acked, &mut every)? {
            break;
        }
    }
    Ok(messages.len() as f64 / started.elapsed().as_secs_f64())
}

async fn ack_ok(ack: jetstream::context::PublishAckFuture) -> Result<(), BusError> {
    ack.await
        .map(|_| ())
        .map_err(|e| BusError::nats("raw publish ack", e))
}

fn relay_config(config: &RelayBenchConfig, stream: &str, prefix: &str) -> RelayConfig {
    RelayConfig {
        url: config.nats_url.clone(),
        stream: stream.to_string(),
        subject_prefix: prefix.to_string(),
        replicas: config.replicas,
        ack_window: config.ack_window,
        checkpoint: format!("relay-{stream}"),
        client_name: "planledger-bench-relay".into(),
        ..RelayConfig::default()
    }
}

/// Runs a relay from an empty stream until `last` is acknowledged; events per second.
async fn relay_publish(
    store: &EventStore,
    config: &RelayBenchConfig,
    stream: &str,
    prefix: &str,
    last: Position,
) -> Result<f64, BusError> {
    let relay = Relay::new(store.clone(), relay_config(config, stream, prefix))?;
    let status = relay.status();
    let (stop, stopped) = oneshot::channel::<()>();
    let started = Instant::now();
    let task = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));
    status.wait_published(last).await?;
    let elapsed = started.elapsed();
    let _ = stop.send(());
    task.await
        .map_err(|e| BusError::nats("join the bench relay", e))??;
    Ok(last.get() as f64 / elapsed.as_secs_f64())
}

struct SteadyOutcome {
    /// Lags in milliseconds, sorted.
    lags_ms: Vec<f64>,
    achieved_rate: f64,
}

/// Appends at a steady rate while a relay runs, and measures each event's lag.
async fn steady_lag(
    js: &jetstream::Context,
    config: &RelayBenchConfig,
    run: &str,
) -> Result<SteadyOutcome, BusError> {
    let store = EventStore::open(config.data_dir.join("steady"), StoreOptions::default())?;
    let stream = format!("PLBENCH_LAG_{run}");
    let relay = Relay::new(
        store.clone(),
        relay_config(config, &stream, &format!("plbench.steady.r{run}")),
    )?;
    let status = relay.status();
    let mut acks = status.published_position();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));
    status
        .watch()
        .wait_for(|s| s.state == RelayState::CaughtUp)
        .await
        .map_err(|_| BusError::RelayGone)?;

    // Record when each acknowledged position was first seen.
    let (done_tx, mut done_rx) = oneshot::channel::<()>();
    let recorder = tokio::spawn(async move {
        let mut seen: Vec<(Position, Instant)> = Vec::new();
        loop {
            tokio::select! {
                changed = acks.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let position = *acks.borrow_and_update();
                    seen.push((position, Instant::now()));
                }
                _ = &mut done_rx => {
                    // The last change may not have been seen by this loop yet.
                    let position = *acks.borrow_and_update();
                    if seen.last().is_none_or(|(last, _)| *last < position) {
                        seen.push((position, Instant::now()));
                    }
                    break;
                }
            }
        }
        seen
    });

    // One event per append, paced in 10 ms ticks.
    let ticks_per_second = 100u64;
    let per_tick = config.steady_rate.div_ceil(ticks_per_second).max(1);
    let total_ticks = (config.steady_duration.as_millis() as u64 / 10).max(1);
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    // Each append is its own task, so the moment it is answered is taken when it happens.
    let mut appends = Vec::with_capacity((per_tick * total_ticks) as usize);
    let started = Instant::now();
    let mut index = 0u64;
    for _ in 0..total_ticks {
        interval.tick().await;
        for _ in 0..per_tick {
            let store = store.clone();
            let request = AppendRequest {
                stream: bench_stream(index),
                expected: ExpectedVersion::Any,
                events: vec![bench_event(index, config.payload_bytes)],
                meta: AppendMeta {
                    actor: "bench".into(),
                    ..AppendMeta::default()
                },
            };
            index += 1;
            appends.push(tokio::spawn(async move {
                let outcome = store.append(request).await;
                (outcome, Instant::now())
            }));
        }
    }
    let mut answered: Vec<(Position, Instant)> = Vec::with_capacity(appends.len());
    for append in appends {
        let (outcome, at) = append
            .await
            .map_err(|e| BusError::nats("join a bench append", e))?;
        answered.push((outcome?.position(), at));
    }
    let achieved_rate = answered.len() as f64 / started.elapsed().as_secs_f64();
    let last = store.last_position();
    status.wait_published(last).await?;
    let _ = done_tx.send(());
    let seen = recorder
        .await
        .map_err(|e| BusError::nats("join the lag recorder", e))?;
    let _ = stop.send(());
    task.await
        .map_err(|e| BusError::nats("join the bench relay", e))??;
    delete_stream(js, &stream).await;

    answered.sort_by_key(|(position, _)| *position);
    let mut lags_ms = Vec::with_capacity(answered.len());
    let mut cursor = 0usize;
    for (position, at) in answered {
        while cursor < seen.len() && seen[cursor].0 < position {
            cursor += 1;
        }
        if let Some((_, acked_at)) = seen.get(cursor) {
            lags_ms.push(acked_at.saturating_duration_since(at).as_secs_f64() * 1000.0);
        }
    }
    lags_ms.sort_by(f64::total_cmp);
    Ok(SteadyOutcome {
        lags_ms,
        achieved_rate,
    })
}

/// The `q` quantile of sorted values (nearest rank); 0 when empty.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_uses_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&values, 0.50), 50.0);
        assert_eq!(percentile(&[], 0.99), 0.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn bench_events_have_roughly_the_asked_size() {
        let event = bench_event(3, 200);
        let size = event.data.get().len();
        assert!((180..=220).contains(&size), "data is {size} bytes");
    }
}
