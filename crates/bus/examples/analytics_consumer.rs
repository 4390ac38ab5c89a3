//! A downstream analytics consumer of the Planledger event stream.
//!
//! It follows the JetStream stream `PLANLEDGER_EVENTS` with a **durable pull consumer** (so a
//! restart continues where it stopped), decodes each message as `planledger.v1.EventEnvelope`,
//! skips redeliveries by position, and prints per-event-type counts.
//!
//! ```text
//! cargo run --release -p planledger-bus --example analytics_consumer -- \
//!     --url nats://127.0.0.1:4222 [--stream PLANLEDGER_EVENTS] [--durable analytics] \
//!     [--filter 'planledger.evt.acme.>'] [--every 5] [--once]
//! ```
//!
//! `--once` prints the counts and exits when the consumer has nothing pending.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt as _;
use planledger_proto::Message as _;
use planledger_proto::v1::EventEnvelope;

struct Args {
    url: String,
    stream: String,
    durable: String,
    filter: String,
    every: Duration,
    once: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        url: std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
        stream: "PLANLEDGER_EVENTS".into(),
        durable: "analytics".into(),
        filter: "planledger.evt.>".into(),
        every: Duration::from_secs(5),
        once: false,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || {
            given
                .next()
                .with_context(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--url" => args.url = value()?,
            "--stream" => args.stream = value()?,
            "--durable" => args.durable = value()?,
            "--filter" => args.filter = value()?,
            "--every" => {
                let seconds: u64 = value()?.parse().context("--every takes whole seconds")?;
                args.every = Duration::from_secs(seconds.max(1));
            }
            "--once" => args.once = true,
            "-h" | "--help" => {
                println!(
                    "analytics_consumer [--url URL] [--stream NAME] [--durable NAME] [--filter SUBJECT] [--every SECONDS] [--once]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; see --help"),
        }
    }
    Ok(args)
}

/// Counts per event type, plus the highest position seen (for dedupe on redelivery).
#[derive(Default)]
struct Tally {
    by_type: BTreeMap<String, u64>,
    last_position: u64,
    skipped: u64,
}

impl Tally {
    fn print(&self) {
        let total: u64 = self.by_type.values().sum();
        println!(
            "{total} events up to position {} ({} redeliveries skipped)",
            self.last_position, self.skipped
        );
        for (event_type, count) in &self.by_type {
            println!("  {event_type:<24} {count:>8}");
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = parse_args()?;
    let client = async_nats::connect(&args.url)
        .await
        .with_context(|| format!("connecting to {}", args.url))?;
    let js = jetstream::new(client);
    let stream = js
        .get_stream(&args.stream)
        .await
        .with_context(|| format!("stream {} (is the relay running?)", args.stream))?;
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &args.durable,
            consumer::pull::Config {
                durable_name: Some(args.durable.clone()),
                filter_subject: args.filter.clone(),
                ack_policy: consumer::AckPolicy::Explicit,
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            },
        )
        .await
        .context("creating the durable consumer")?;

    let mut tally = Tally::default();
    let mut ticker = tokio::time::interval(args.every);
    ticker.tick().await;
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .context("fetching")?;
        let mut received = 0usize;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!("receiving: {e}"))?;
            received += 1;
            match EventEnvelope::decode(message.payload.clone()) {
                Ok(envelope) if envelope.position <= tally.last_position => tally.skipped += 1,
                Ok(envelope) => {
                    tally.last_position = envelope.position;
                    *tally.by_type.entry(envelope.r#type).or_default() += 1;
                }
                Err(error) => {
                    // Not an envelope: terminate it so it is not redelivered forever.
                    eprintln!("message on {} does not decode: {error}", message.subject);
                    message
                        .ack_with(AckKind::Term)
                        .await
                        .map_err(|e| anyhow::anyhow!("terminating: {e}"))?;
                    continue;
                }
            }
            message
                .ack()
                .await
                .map_err(|e| anyhow::anyhow!("acknowledging: {e}"))?;
        }
        if args.once && received == 0 {
            tally.print();
            return Ok(());
        }
        if tokio::time::timeout(Duration::ZERO, ticker.tick())
            .await
            .is_ok()
        {
            tally.print();
        }
    }
}
