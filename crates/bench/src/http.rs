//! `planledger-bench http`: RecordCheckIn commands/s and latency through the real router,
//! next to a trivial axum JSON handler and a durable echo (the trivial handler plus one append
//! to the log) measured with the same client in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use planledger_api::{ApiConfig, ApiState, RateLimit};
use planledger_app::{App, Authenticator, Role};
use planledger_store::{
    AppendMeta, AppendRequest, EventStore, ExpectedVersion, NewEvent, StoreOptions, StreamId,
    WriterStats,
};
use serde_json::json;

use tokio_util::sync::CancellationToken;

use crate::{HttpArgs, Latency, ScratchDir, ms, summarize};

struct Measured {
    requests: u64,
    elapsed: Duration,
    latency: Latency,
    failures: u64,
    /// CPU time of the whole process (client, server, log) during the run.
    cpu: Duration,
}

impl Measured {
    /// Requests per second.
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// What the log's writer and syncer did during one phase.
struct LogShare {
    /// Every fsync: the syncer's and a lone append's own synced write.
    fsyncs: u64,
    /// The syncer's fsyncs, and its time in them.
    syncer_fsyncs: u64,
    syncing: Duration,
    batches: u64,
}

impl LogShare {
    fn between(before: &WriterStats, after: &WriterStats) -> Self {
        let fsyncs = |stats: &WriterStats| stats.sync_sizes.values().sum::<u64>();
        let fsyncs = fsyncs(after).saturating_sub(fsyncs(before));
        let inline = after.inline_syncs.saturating_sub(before.inline_syncs);
        Self {
            fsyncs,
            syncer_fsyncs: fsyncs.saturating_sub(inline),
            syncing: after.syncing.saturating_sub(before.syncing),
            batches: after.batches.saturating_sub(before.batches),
        }
    }

    /// One line: fsyncs, requests per fsync, the syncer's mean fsync and the share of the
    /// phase it spent in fsyncs (near 100%: the disk's fsync latency alone paces the phase).
    fn print(&self, name: &str, run: &Measured) {
        let seconds = run.elapsed.as_secs_f64();
        println!(
            "{name}: {} fsyncs ({:.1} requests per fsync, {:.0} fsyncs/s, mean fsync {:.0} µs, syncer in fsync {:.0}% of the phase), {:.1} requests per written batch",
            self.fsyncs,
            run.requests as f64 / self.fsyncs.max(1) as f64,
            self.fsyncs as f64 / seconds,
            self.syncing.as_secs_f64() * 1e6 / self.syncer_fsyncs.max(1) as f64,
            self.syncing.as_secs_f64() * 100.0 / seconds,
            run.requests as f64 / self.batches.max(1) as f64
        );
    }
}

/// The bench's servers. They hold the log (through the router's state), so they are
/// stopped and awaited before the scratch directory is removed.
#[derive(Default)]
struct Servers {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Servers {
    async fn serve(&mut self, router: axum::Router) -> Result<std::net::SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = self.stop.clone();
        self.tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        }));
        Ok(addr)
    }

    /// Stops accepting, lets open connections finish (the clients are gone by now) and waits
    /// for each server, giving up on one after 10 s.
    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

/// Sends `total` requests from `concurrency` clients; `make` builds request `n` of client `c`.
async fn load<F>(label: &str, concurrency: usize, total: u64, make: F) -> Result<Measured>
where
    F: Fn(&reqwest::Client, usize, u64) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let make = Arc::new(make);
    let issued = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let progress = crate::CountedProgress::start(total, label);
    let cpu_before = crate::process_cpu();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let (client, make, issued, failures, done) = (
            client.clone(),
            make.clone(),
            issued.clone(),
            failures.clone(),
            progress.done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let t = Instant::now();
                let ok = match make(&client, c, n).send().await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        let _ = response.bytes().await;
                        ok
                    }
                    Err(_) => false,
                };
                latencies.push(t.elapsed());
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.context("load task")?);
    }
    let elapsed = started.elapsed();
    let cpu = crate::process_cpu().saturating_sub(cpu_before);
    progress.finish();
    Ok(Measured {
        requests: total,
        elapsed,
        latency: summarize(&mut latencies),
        failures: failures.load(Ordering::Relaxed),
        cpu,
    })
}

/// Loads one of the echo handlers (client `c` posts to `url(c)`) with a body the size of a
/// check-in command's.
async fn load_echo<U>(label: &str, args: &HttpArgs, url: U) -> Result<Measured>
where
    U: Fn(usize) -> String + Send + Sync + 'static,
{
    load(
        label,
        args.concurrency,
        args.requests,
        move |client, c, n| {
            client
                .post(url(c))
                .json(&json!({"goal_id": "g", "value": n as f64, "confidence": 0.7, "client": c}))
        },
    )
    .await
}

/// Runs the HTTP benchmark.
pub async fn run(args: HttpArgs) -> Result<()> {
    // The router runs as `serve` runs it under a supervisor: with the service's log subscriber
    // (its default filter, or `RUST_LOG`) writing plain text, and its Prometheus recorder. Both
    // are installed in every `serve`, and every command's spans and metrics cost their share.
    // (`serve`'s embedded projectors are not: they are a choice of deployment.)
    crate::init_tracing();
    let _ = crate::install_metrics();
    let dir = ScratchDir::new(args.dir.as_deref())?;
    let mut servers = Servers::default();
    let result = measure(&args, &dir, &mut servers).await;
    // Then the log closes (its last handle is the router's state), then `dir` is removed.
    servers.stop().await;
    result
}

async fn measure(args: &HttpArgs, dir: &ScratchDir, servers: &mut Servers) -> Result<()> {
    let store = EventStore::open(dir.join("log"), StoreOptions::default())?;
    let auth = Authenticator::from_data_dir(dir)?;
    let token = auth.issue(
        "bench",
        "bench",
        vec![Role::Planner],
        jiff::Timestamp::now(),
        3600,
    )?;
    let app = App::new(store, auth);
    let state = ApiState::new(
        app.clone(),
        ApiConfig {
            rate_limit: RateLimit {
                per_second: 0.0,
                burst: 0.0,
            },
            ..ApiConfig::default()
        },
    );
    let api = servers.serve(planledger_api::router(state)).await?;
    let trivial = servers
        .serve(axum::Router::new().route(
            "/echo",
            axum::routing::post(
                |axum::Json(body): axum::Json<serde_json::Value>| async move {
                    axum::Json(json!({ "ok": true, "got": body }))
                },
            ),
        ))
        .await?;
    let durable = {
        let store = app.store.clone();
        servers
            .serve(axum::Router::new().route(
                "/durable/{client}",
                axum::routing::post(
                    move |axum::extract::Path(client): axum::extract::Path<u32>,
                          body: axum::body::Bytes| {
                        durable_echo(store.clone(), client, body)
                    },
                ),
            ))
            .await?
    };

    // One plan with one KPI goal per client.
    let http = reqwest::Client::new();
    let today = planledger_domain::calendar::utc_date(jiff::Timestamp::now());
    let day = |offset: i64| {
        today
            .checked_add(jiff::Span::new().days(offset))
            .unwrap_or(today)
            .to_string()
    };
    for c in 0..args.concurrency {
        for body in [
            json!({"type": "CreatePlan", "data": {"title": "bench", "starts_on": day(-1), "ends_on": day(90), "checkin_cadence_days": 7}}),
            json!({"type": "DefineGoal", "data": {"goal_id": "g", "title": "g", "due": day(60),
                "kpi": {"unit": "u", "baseline": 0.0, "target": 100.0, "direction": "increase"}}}),
        ] {
            let response = http
                .post(format!("http://{api}/v1/plans/bench-{c}/commands"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "seeding failed: {}",
                response.text().await?
            );
        }
    }

    let trivial_run = load_echo("trivial axum json", args, move |_| {
        format!("http://{trivial}/echo")
    })
    .await?;
    let before = app.store.writer_stats();
    let durable_run = load_echo("durable echo", args, move |c| {
        format!("http://{durable}/durable/{c}")
    })
    .await?;
    let after = app.store.writer_stats();
    let durable_log = LogShare::between(&before, &after);
    let token = Arc::new(token);
    let before = after;
    let api_run = load("RecordCheckIn", args.concurrency, args.requests, move |client, c, n| {
        client
            .post(format!("http://{api}/v1/plans/bench-{c}/commands"))
            .bearer_auth(token.as_str())
            .json(&json!({"type": "RecordCheckIn", "data": {"goal_id": "g", "value": (n % 100) as f64, "confidence": 0.7}}))
    })
    .await?;
    let api_log = LogShare::between(&before, &app.store.writer_stats());

    let cores = crate::cores();
    println!(
        "bench http: concurrency {}, {} requests each, {} CPU cores",
        args.concurrency, args.requests, cores
    );
    println!(
        "{:>20} {:>10} {:>9} {:>9} {:>9} {:>9} {:>11} {:>9}",
        "handler", "req/s", "p50 ms", "p99 ms", "max ms", "failures", "cpu µs/req", "cpu use"
    );
    for (name, run) in [
        ("trivial axum json", &trivial_run),
        ("durable echo", &durable_run),
        ("RecordCheckIn", &api_run),
    ] {
        // The share of all cores the phase kept busy: what is left was idle, the closed loop's
        // clients all waiting (for fsyncs, in the durable phases).
        let used = run.cpu.as_secs_f64() / (run.elapsed.as_secs_f64() * cores as f64);
        println!(
            "{:>20} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>11.1} {:>8.0}%",
            name,
            run.rate(),
            ms(run.latency.p50),
            ms(run.latency.p99),
            ms(run.latency.max),
            run.failures,
            run.cpu.as_secs_f64() * 1e6 / run.requests.max(1) as f64,
            used * 100.0
        );
    }
    println!(
        "RecordCheckIn / trivial ceiling: {:.2}",
        api_run.rate() / trivial_run.rate()
    );
    println!(
        "durable echo / trivial ceiling: {:.2} (the trivial handler plus one append to the log: what durability alone leaves)",
        durable_run.rate() / trivial_run.rate()
    );
    for (name, run, log) in [
        ("durable echo", &durable_run, &durable_log),
        ("RecordCheckIn", &api_run, &api_log),
    ] {
        log.print(name, run);
    }
    Ok(())
}

/// The durable echo: the trivial handler plus one append of the request's body to the log
/// (group commit and fsync, as a command's events get), with no authentication, domain,
/// snapshot or spans. It shows what durability alone costs through the same closed loop.
async fn durable_echo(
    store: EventStore,
    client: u32,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let data = match serde_json::from_slice::<Box<serde_json::value::RawValue>>(&body) {
        Ok(data) => data,
        Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    };
    let stream = match StreamId::new(format!("echo/{client}")) {
        Ok(stream) => stream,
        Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    };
    let appended = store
        .append(AppendRequest {
            stream,
            expected: ExpectedVersion::Any,
            events: vec![NewEvent::new("Echoed", 1, jiff::Timestamp::now(), data)],
            meta: AppendMeta {
                actor: "bench".into(),
                ..AppendMeta::default()
            },
        })
        .await;
    match appended {
        Ok(outcome) => {
            axum::Json(json!({ "ok": true, "position": outcome.position().0 })).into_response()
        }
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}
