//! Helpers shared by the projection tests: scripted plans driven through the real domain,
//! a real event log in a temp dir, and in-memory sources.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use planledger_domain::{Command, Event, Plan, decide, evolve};
use planledger_projections::{
    Delivery, EventSource, ProjectionHandle, ReadModelDb, RuntimeOptions, SourceError, SourceHead,
};
use planledger_store::{
    AppendMeta, AppendRequest, Envelope, EventStore, ExpectedVersion, NewEvent, Position,
    StoreOptions, StreamId,
};

/// Parses an RFC 3339 instant written in a test.
pub fn at(text: &str) -> Timestamp {
    text.parse().expect("test timestamps are valid RFC 3339")
}

/// A plan driven through `decide` and `evolve` with explicit times, remembering the events
/// each command produced so they can be appended to a real log.
pub struct Script {
    /// `<tenant>/<plan_id>`.
    pub stream: String,
    /// The plan after every command so far.
    pub plan: Plan,
    /// (decision time, events) per command, in order.
    pub commands: Vec<(Timestamp, Vec<Event>)>,
}

impl Script {
    /// A script for `tenant`'s plan `plan_id`.
    pub fn new(tenant: &str, plan_id: &str) -> Self {
        Self {
            stream: format!("{tenant}/{plan_id}"),
            plan: Plan::default(),
            commands: Vec::new(),
        }
    }

    /// Runs a command (`{"type": ..., "data": ...}`) at `when`; panics if the domain rejects it.
    pub fn run(&mut self, when: &str, command: serde_json::Value) -> &mut Self {
        let now = at(when);
        let text = command.to_string();
        let command: Command = serde_json::from_value(command).expect("test commands parse");
        let events = decide(&self.plan, &command, now)
            .unwrap_or_else(|e| panic!("the domain rejected {text}: {e}"));
        for event in &events {
            self.plan = evolve(std::mem::take(&mut self.plan), event);
        }
        self.commands.push((now, events));
        self
    }

    /// Every event of the script, in order.
    pub fn events(&self) -> Vec<Event> {
        self.commands.iter().flat_map(|(_, e)| e.clone()).collect()
    }
}

/// The log request that appends one command's events.
pub fn append_request(stream: &str, when: Timestamp, events: &[Event]) -> AppendRequest {
    AppendRequest {
        stream: StreamId::new(stream).expect("valid stream id"),
        expected: ExpectedVersion::Any,
        events: events
            .iter()
            .map(|e| NewEvent::new(e.event_type(), e.schema_version(), when, e.to_raw_data()))
            .collect(),
        meta: AppendMeta {
            actor: "tester".into(),
            ..AppendMeta::default()
        },
    }
}

/// Appends every command of the scripts to the log, interleaving the scripts command by command.
pub async fn append_scripts(store: &EventStore, scripts: &[&Script]) {
    let longest = scripts.iter().map(|s| s.commands.len()).max().unwrap_or(0);
    for index in 0..longest {
        for script in scripts {
            if let Some((when, events)) = script.commands.get(index) {
                store
                    .append(append_request(&script.stream, *when, events))
                    .await
                    .expect("append scripted events");
            }
        }
    }
}

/// A fresh log in `dir/log`.
pub fn open_store(dir: &std::path::Path) -> EventStore {
    EventStore::open(dir.join("log"), StoreOptions::default()).expect("open the log")
}

/// Every envelope of the log.
pub fn all_envelopes(store: &EventStore) -> Vec<Envelope> {
    store
        .read_all(Position(1), usize::MAX)
        .expect("read the whole log")
}

/// Small batches and frequent commits, so tests cross many commit boundaries.
pub fn small_batches() -> RuntimeOptions {
    RuntimeOptions {
        batch_size: 7,
        commit_events: 13,
        commit_interval: Duration::from_millis(20),
        cache_plans: 2,
    }
}

/// Waits (bounded by a generous deadline, not asserted as a time) until the projector has
/// applied `position`.
pub async fn caught_up(handle: &ProjectionHandle, position: u64) {
    handle
        .wait_for(position, Duration::from_secs(60))
        .await
        .unwrap_or_else(|reached| {
            panic!(
                "projector {} stopped at {reached} before {position}: {:?}",
                handle.name(),
                handle.status()
            )
        });
}

/// The live generation of a read model, every key and value.
pub fn dump_live(db: &ReadModelDb) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.dump_generation(db.live_generation())
        .expect("dump the live generation")
}

/// An in-memory source over fixed envelopes that delivers every batch starting `replay`
/// positions before what the runtime asks for (as a redelivering broker would) and, when
/// `duplicate` is set, sends each event twice in a row.
pub struct RedeliveringSource {
    pub envelopes: Arc<Vec<Envelope>>,
    pub replay: u64,
    pub duplicate: bool,
    /// When set, the next batches come from this position on, whatever the runtime asks
    /// (a broker redelivering its whole retention).
    pub cursor: Option<u64>,
    /// Set once a cursor replay has handed out its last batch.
    pub replayed: Arc<std::sync::atomic::AtomicBool>,
    pub acknowledged: Arc<std::sync::Mutex<Vec<u64>>>,
}

impl RedeliveringSource {
    pub fn new(envelopes: Vec<Envelope>, replay: u64, duplicate: bool) -> Self {
        Self {
            envelopes: Arc::new(envelopes),
            replay,
            duplicate,
            cursor: None,
            replayed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            acknowledged: Arc::new(std::sync::Mutex::new(Vec::new())),
        }
    }

    /// Redelivers everything from position 1 once before behaving normally.
    pub fn replaying_everything(mut self) -> Self {
        self.cursor = Some(0);
        self
    }
}

impl EventSource for RedeliveringSource {
    fn describe(&self) -> String {
        "redelivering-test-source".into()
    }

    async fn next_batch(
        &mut self,
        after: Position,
        max: usize,
    ) -> Result<Vec<Delivery>, SourceError> {
        let last = self.envelopes.len() as u64;
        let start = match self.cursor {
            Some(cursor) if cursor < last => {
                self.cursor = Some(cursor + max as u64);
                if cursor + max as u64 >= last {
                    self.replayed
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                }
                cursor
            }
            _ => {
                self.cursor = None;
                if after.get() >= last {
                    // Like a quiet broker: nothing new until more is published (never, here).
                    std::future::pending::<()>().await;
                }
                after.get().saturating_sub(self.replay)
            }
        };
        // Old positions are repeated on top of `max` new ones, so the stream still advances.
        let repeated = after.get().saturating_sub(start) as usize;
        let mut out = Vec::new();
        for envelope in self
            .envelopes
            .iter()
            .skip(start as usize)
            .take(repeated + max)
        {
            let delivery = Delivery::new(envelope.position, envelope.clone());
            if self.duplicate {
                out.push(delivery.clone());
            }
            out.push(delivery);
        }
        Ok(out)
    }

    async fn acknowledge(&mut self, through: Position) -> Result<(), SourceError> {
        self.acknowledged
            .lock()
            .expect("ack log lock")
            .push(through.get());
        Ok(())
    }

    fn head(&self) -> Option<SourceHead> {
        Some(SourceHead {
            position: Position(self.envelopes.len() as u64),
        })
    }

    async fn replay_from(&mut self, _after: Position) -> Result<Self, SourceError> {
        Ok(Self {
            envelopes: self.envelopes.clone(),
            replay: self.replay,
            duplicate: self.duplicate,
            cursor: None,
            replayed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            acknowledged: Arc::new(std::sync::Mutex::new(Vec::new())),
        })
    }
}

/// A plan with goals, steps, roles and check-ins over `weeks` weeks, for volume tests.
pub fn busy_plan(tenant: &str, plan_id: &str, weeks: u32) -> Script {
    let mut script = Script::new(tenant, plan_id);
    script.run(
        "2026-01-05T09:00:00Z",
        serde_json::json!({"type": "CreatePlan", "data": {
            "plan_id": plan_id, "title": "Busy", "starts_on": "2026-01-05",
            "ends_on": "2026-12-27", "checkin_cadence_days": 7, "checkin_grace_days": 1}}),
    );
    for g in 0..3 {
        script.run(
            "2026-01-05T09:01:00Z",
            serde_json::json!({"type": "DefineGoal", "data": {
                "goal_id": format!("g{g}"), "title": format!("Goal {g}"), "due": "2026-12-01",
                "kpi": {"unit": "n", "baseline": 0.0, "target": 100.0, "direction": "increase"},
                "weight": f64::from(g + 1)}}),
        );
        script.run(
            "2026-01-05T09:02:00Z",
            serde_json::json!({"type": "AssignRole", "data": {
                "person": format!("p{g}"), "role": "accountable", "goal_id": format!("g{g}")}}),
        );
    }
    script.run(
        "2026-01-05T10:00:00Z",
        serde_json::json!({"type": "SetBaseline", "data": {"label": "start"}}),
    );
    for week in 0..weeks {
        let day = jiff::civil::date(2026, 1, 6)
            .checked_add(jiff::Span::new().days(i64::from(week) * 7))
            .expect("dates in range");
        for g in 0..3u32 {
            let when = format!("{day}T1{g}:00:00Z");
            script.run(
                &when,
                serde_json::json!({"type": "RecordCheckIn", "data": {
                    "goal_id": format!("g{g}"), "value": f64::from(week * (g + 1)),
                    "confidence": 0.5, "status": if week % 3 == 0 { "at_risk" } else { "on_track" }}}),
            );
        }
        let step = format!("s{week}");
        script.run(
            &format!("{day}T15:00:00Z"),
            serde_json::json!({"type": "AddStep", "data": {
                "step_id": step, "goal_id": "g0", "title": "Step", "due": "2026-11-30"}}),
        );
        if week % 2 == 0 {
            script.run(
                &format!("{day}T16:00:00Z"),
                serde_json::json!({"type": "CompleteStep", "data": {"step_id": step}}),
            );
        }
        if week % 5 == 4 {
            script.run(
                &format!("{day}T17:00:00Z"),
                serde_json::json!({"type": "AdjustGoal", "data": {
                    "goal_id": "g1", "weight": f64::from(week + 2), "reason": "rebalanced"}}),
            );
        }
        if week % 4 == 1 {
            script.run(
                &format!("{day}T18:00:00Z"),
                serde_json::json!({"type": "AssignRole", "data": {
                    "person": format!("helper{week}"), "role": "consulted", "goal_id": "g2"}}),
            );
        }
        if week % 4 == 3 {
            script.run(
                &format!("{day}T18:00:00Z"),
                serde_json::json!({"type": "RevokeRole", "data": {
                    "person": format!("helper{}", week - 2), "role": "consulted", "goal_id": "g2"}}),
            );
        }
    }
    script
}
