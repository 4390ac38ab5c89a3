//! Concurrent command load with `Idempotency-Key`s, and the check that every command the
//! service acknowledged is in its log: for the fault suites (crash loop, disk full).
//!
//! Each writer task owns one plan and sends `RecordCheckIn` commands to it, each with a key of
//! its own. An answer of 200 is an acknowledgement; a command without an answer (the
//! connection broke, the service was killed) or refused with a 503 is sent again, with the
//! same key, until it is answered: the service must then either append it once or answer with
//! the first append.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::client::{Client, seed_plan};
use crate::server::Planledger;

/// A command the service answered with 200.
#[derive(Clone, Debug)]
pub struct Acked {
    /// Its `Idempotency-Key`.
    pub key: String,
    /// The plan it went to.
    pub plan: String,
    /// The command's body, as sent (a resend with the key sends it again).
    pub body: Value,
    /// Each event's position and id, as answered.
    pub events: Vec<(u64, String)>,
    /// How many times it was sent before this answer.
    pub attempts: u32,
    /// Whether the answer was a repeat (`deduplicated`): an earlier attempt had appended it.
    pub deduplicated: bool,
}

/// A refusal seen by the writers: status, problem code and the `Retry-After` header.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// The problem's `code`.
    pub code: String,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
}

/// What one writer task holds between runs.
#[derive(Debug, Default)]
struct WriterState {
    plan: String,
    next: u64,
    /// The command sent and not answered yet, sent again with the same key next.
    pending: Option<(String, Value, u32)>,
    acked: Vec<Acked>,
    /// Refusals (503s) by kind, with how many.
    refusals: BTreeMap<Refusal, u64>,
    /// Attempts that got no answer at all (connection refused or broken).
    unanswered: u64,
}

/// Writer tasks sending commands to a service until stopped.
pub struct CommandLoad {
    base_url: String,
    token: String,
    /// Prefix of every `Idempotency-Key` (several loads on the same plans keep apart).
    key_prefix: String,
    /// Whether a 409 (a version conflict another writer node caused) is a refusal to send
    /// again rather than a failure.
    conflicts_allowed: bool,
    states: Vec<WriterState>,
    running: Option<(Arc<AtomicBool>, Vec<tokio::task::JoinHandle<WriterState>>)>,
}

impl CommandLoad {
    /// Seeds one plan per writer (`load-0`, `load-1`, ...) on `server` and returns the load,
    /// not started yet. `token` needs the planner role.
    pub async fn seed(server: &Planledger, token: &str, writers: usize) -> Self {
        Self::seed_prefixed(server, token, writers, "").await
    }

    /// As [`CommandLoad::seed`], with the plans named `<prefix>load-0`, `<prefix>load-1`, ...
    /// (several loads through several nodes keep to their own plans).
    pub async fn seed_prefixed(
        server: &Planledger,
        token: &str,
        writers: usize,
        prefix: &str,
    ) -> Self {
        let client = Client::new();
        let mut states = Vec::with_capacity(writers);
        for writer in 0..writers {
            let plan = format!("{prefix}load-{writer}");
            seed_plan(server, &client, token, &plan, "owner").await;
            states.push(WriterState {
                plan,
                ..WriterState::default()
            });
        }
        Self {
            base_url: server.base_url.clone(),
            token: token.to_string(),
            key_prefix: String::new(),
            conflicts_allowed: false,
            states,
            running: None,
        }
    }

    /// A load on plans that exist already (`load-0` .. `load-<writers - 1>`, seeded by another
    /// load), through `server`, its keys prefixed with `key_prefix`; version conflicts caused
    /// by another writer node are sent again instead of failing the test.
    pub fn on_existing_plans(
        server: &Planledger,
        token: &str,
        writers: usize,
        key_prefix: &str,
    ) -> Self {
        Self {
            base_url: server.base_url.clone(),
            token: token.to_string(),
            key_prefix: key_prefix.to_string(),
            conflicts_allowed: true,
            states: (0..writers)
                .map(|writer| WriterState {
                    plan: format!("load-{writer}"),
                    ..WriterState::default()
                })
                .collect(),
            running: None,
        }
    }

    /// Sends version conflicts again instead of failing (several writer nodes on one plan).
    pub fn allowing_conflicts(mut self) -> Self {
        self.conflicts_allowed = true;
        self
    }

    /// Starts the writer tasks (each resumes with the command it had not had answered).
    pub fn start(&mut self) {
        assert!(self.running.is_none(), "the load is already running");
        let stop = Arc::new(AtomicBool::new(false));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client");
        let tasks = self
            .states
            .drain(..)
            .map(|state| {
                tokio::spawn(write_until_stopped(
                    state,
                    http.clone(),
                    Target {
                        base_url: self.base_url.clone(),
                        token: self.token.clone(),
                        key_prefix: self.key_prefix.clone(),
                        conflicts_allowed: self.conflicts_allowed,
                    },
                    stop.clone(),
                ))
            })
            .collect();
        self.running = Some((stop, tasks));
    }

    /// Stops the writer tasks and waits for them (a request in flight is finished or fails).
    pub async fn stop(&mut self) {
        let Some((stop, tasks)) = self.running.take() else {
            return;
        };
        stop.store(true, Ordering::SeqCst);
        for task in tasks {
            self.states
                .push(task.await.expect("a writer task panicked"));
        }
    }

    /// Every acknowledged command so far (the load must be stopped).
    pub fn acked(&self) -> Vec<Acked> {
        self.states.iter().flat_map(|s| s.acked.clone()).collect()
    }

    /// Refusals seen so far, by kind, with how many (the load must be stopped).
    pub fn refusals(&self) -> BTreeMap<Refusal, u64> {
        let mut all = BTreeMap::new();
        for state in &self.states {
            for (refusal, count) in &state.refusals {
                *all.entry(refusal.clone()).or_default() += count;
            }
        }
        all
    }

    /// Attempts that got no answer (the load must be stopped).
    pub fn unanswered(&self) -> u64 {
        self.states.iter().map(|s| s.unanswered).sum()
    }

    /// Commands sent and not answered yet (the load must be stopped).
    pub fn pending(&self) -> usize {
        self.states.iter().filter(|s| s.pending.is_some()).count()
    }
}

/// Where a writer sends its commands, and how.
#[derive(Clone)]
struct Target {
    base_url: String,
    token: String,
    key_prefix: String,
    conflicts_allowed: bool,
}

/// One writer: sends its plan's next command (or the unanswered one again) until `stop`.
async fn write_until_stopped(
    mut state: WriterState,
    http: reqwest::Client,
    target: Target,
    stop: Arc<AtomicBool>,
) -> WriterState {
    let Target {
        base_url,
        token,
        key_prefix,
        conflicts_allowed,
    } = target;
    while !stop.load(Ordering::SeqCst) {
        let (key, body, attempts) = match state.pending.take() {
            Some(pending) => pending,
            None => {
                state.next += 1;
                let key = format!("{key_prefix}{}-cmd-{}", state.plan, state.next);
                let body = json!({"type": "RecordCheckIn", "data": {
                    "goal_id": "signups", "value": 100.0 + state.next as f64,
                    "confidence": 0.5}});
                (key, body, 0)
            }
        };
        let attempts = attempts + 1;
        let sent = http
            .post(format!("{base_url}/v1/plans/{}/commands", state.plan))
            .bearer_auth(&token)
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(_) => {
                // No answer: the outcome is unknown, so the same key goes again.
                state.unanswered += 1;
                state.pending = Some((key, body, attempts));
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let Ok(answer) = response.json::<Value>().await else {
            // The body broke off (the service was killed while answering).
            state.unanswered += 1;
            state.pending = Some((key, body, attempts));
            continue;
        };
        if status == StatusCode::OK {
            let events = answer["events"]
                .as_array()
                .expect("a command's answer lists its events")
                .iter()
                .map(|e| {
                    (
                        e["position"].as_u64().expect("an event's position"),
                        e["event_id"].as_str().expect("an event's id").to_string(),
                    )
                })
                .collect();
            state.acked.push(Acked {
                key,
                plan: state.plan.clone(),
                body,
                events,
                attempts,
                deduplicated: answer["deduplicated"].as_bool().unwrap_or(false),
            });
            continue;
        }
        assert!(
            status == StatusCode::SERVICE_UNAVAILABLE
                || (conflicts_allowed && status == StatusCode::CONFLICT),
            "only 200 and 503 (and 409 with several writer nodes) are expected under this load; got {status}: {answer}"
        );
        let refusal = Refusal {
            status: status.as_u16(),
            code: answer["code"].as_str().unwrap_or_default().to_string(),
            retry_after,
        };
        *state.refusals.entry(refusal).or_default() += 1;
        state.pending = Some((key, body, attempts));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    state
}

/// What the log holds, read back over `GET /v1/events`.
#[derive(Debug, Default)]
pub struct LogContents {
    /// Position -> (event id, command id).
    pub events: BTreeMap<u64, (String, Option<String>)>,
}

impl LogContents {
    /// Reads the whole global log (`token` needs the auditor or admin role), checking on the
    /// way that positions run 1, 2, 3, ... with no gap and that each plan's versions do too.
    pub async fn read(server: &Planledger, token: &str) -> Self {
        let client = Client::new();
        let mut contents = Self::default();
        let mut versions: HashMap<String, u64> = HashMap::new();
        let mut from = 1u64;
        loop {
            let (status, page) = client
                .get(
                    &server.base_url,
                    token,
                    &format!("/v1/events?from_position={from}&limit=1000"),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "reading the log: {page}");
            let events = page["events"].as_array().expect("a page lists events");
            for event in events {
                let position = event["position"].as_u64().expect("position");
                assert_eq!(
                    position,
                    contents.events.len() as u64 + 1,
                    "the log's positions have a gap before {position}"
                );
                let stream = event["stream"].as_str().expect("stream").to_string();
                let version = event["version"].as_u64().expect("version");
                let last = versions.entry(stream.clone()).or_default();
                assert_eq!(
                    version,
                    *last + 1,
                    "stream {stream} jumps from version {last} to {version}"
                );
                *last = version;
                contents.events.insert(
                    position,
                    (
                        event["event_id"].as_str().expect("event_id").to_string(),
                        event["command_id"].as_str().map(str::to_string),
                    ),
                );
            }
            let next = page["next_position"].as_u64().expect("next_position");
            if events.is_empty() || next <= from {
                break;
            }
            from = next;
        }
        contents
    }

    /// The acknowledged commands whose events are not all in the log at the positions and
    /// with the ids they were answered with, or whose key appended more than one command's
    /// worth of events (applied twice).
    pub fn missing<'a>(&self, acked: &'a [Acked]) -> Vec<&'a Acked> {
        let mut per_command: HashMap<&str, usize> = HashMap::new();
        for (_, command) in self.events.values() {
            if let Some(command) = command {
                *per_command.entry(command.as_str()).or_default() += 1;
            }
        }
        acked
            .iter()
            .filter(|ack| {
                let in_place = ack.events.iter().all(|(position, id)| {
                    self.events.get(position).is_some_and(|(found, command)| {
                        found == id && command.as_deref() == Some(ack.key.as_str())
                    })
                });
                let once = per_command.get(ack.key.as_str()) == Some(&ack.events.len());
                !(in_place && once)
            })
            .collect()
    }
}

impl LogContents {
    /// Panics, naming `when`, unless every acknowledged command is in the log once
    /// ([`LogContents::missing`] is empty).
    pub fn assert_holds(&self, acked: &[Acked], when: &str) {
        let missing = self.missing(acked);
        assert!(
            missing.is_empty(),
            "{when}: {} of {} acknowledged commands are not in the log once each, e.g. {:?}",
            missing.len(),
            acked.len(),
            missing.first()
        );
    }
}

/// The `q`-quantile (0..=1) of `samples` (nearest rank), or 0 with none.
pub fn quantile(samples: &[Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
