//! Loading plans from the log: cache, snapshots, and historic states.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use planledger_domain::{Event, Plan, PlanId, evolve};
use planledger_store::{Envelope, EventStore, LogView, Position, ReadDirection, StreamId, Version};

use crate::AppError;

/// Events read per page while replaying a stream.
const PAGE: usize = 1024;

/// The stream id of a tenant's plan: `<tenant>/<plan_id>`.
pub fn stream_of(tenant: &str, plan_id: &PlanId) -> Result<StreamId, AppError> {
    StreamId::new(format!("{tenant}/{}", plan_id.as_str())).map_err(|e| AppError::Invalid {
        field: "plan_id".into(),
        message: e.to_string(),
    })
}

/// Decodes a stored envelope into the current shape of its domain event (upcasting old versions).
pub fn decode_event(envelope: &Envelope) -> Result<Event, AppError> {
    Event::from_stored_json(
        &envelope.event_type,
        envelope.schema_version,
        envelope.data.get(),
    )
    .map_err(|e| AppError::Corrupt {
        position: envelope.position.get(),
        message: e.to_string(),
    })
}

/// Versions between two snapshots of a plan at `version`: `every` while the plan is small, then
/// doubled as often as it stays at most a quarter of `version` (so between an eighth and a
/// quarter of it).
///
/// A snapshot holds the whole plan, so with a fixed interval each command's share of snapshot
/// work would grow with the plan; with this one it stays under ~8 events' worth of state per
/// command, and a load replays fewer events after its snapshot than the larger of `every` and a
/// quarter of the plan's version (snapshots lost in a crash aside: they skip the write-ahead
/// log).
///
/// Every interval is `every` times a power of two, so the versions that get a snapshot at a
/// larger interval are among those of every smaller one.
pub fn snapshot_interval(every: u64, version: u64) -> u64 {
    let mut interval = every.max(1);
    while interval <= version / 8 {
        interval *= 2;
    }
    interval
}

/// A plan at a version.
#[derive(Clone, Debug)]
pub struct LoadedPlan {
    /// The state.
    pub plan: Arc<Plan>,
    /// The stream version it reflects (0: the plan does not exist).
    pub version: Version,
}

/// Loads plans: from the in-memory cache kept current by the command path, else from the
/// newest snapshot plus the events after it.
pub struct PlanLoader {
    store: EventStore,
    cache: Mutex<HashMap<StreamId, LoadedPlan>>,
    cache_capacity: usize,
    snapshot_every: u64,
    ladder: StateLadder,
}

impl std::fmt::Debug for PlanLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanLoader")
            .field("snapshot_every", &self.snapshot_every)
            .finish()
    }
}

impl PlanLoader {
    /// A loader over `store` whose snapshot interval starts at `snapshot_every` versions and
    /// grows with the plan ([`snapshot_interval`]).
    pub fn new(store: EventStore, cache_capacity: usize, snapshot_every: u64) -> Self {
        Self::with_ladder(
            store,
            cache_capacity,
            snapshot_every,
            StateLadder::default(),
        )
    }

    /// [`PlanLoader::new`] with historic reads going through `ladder`.
    pub fn with_ladder(
        store: EventStore,
        cache_capacity: usize,
        snapshot_every: u64,
        ladder: StateLadder,
    ) -> Self {
        Self {
            store,
            cache: Mutex::new(HashMap::new()),
            cache_capacity,
            snapshot_every: snapshot_every.max(1),
            ladder,
        }
    }

    /// The decoded states historic reads of this log start from.
    pub fn ladder(&self) -> &StateLadder {
        &self.ladder
    }

    /// The current state of a stream, at least at version `at_least` (which forces a reload
    /// when the cache is behind).
    pub fn current(&self, stream: &StreamId, at_least: Version) -> Result<LoadedPlan, AppError> {
        // The cache may trail the log by an append whose caller has not yet remembered its
        // result; deciding on it then fails the append's version check and is retried.
        if let Some(hit) = self.cached(stream)
            && hit.version >= at_least
        {
            return Ok(hit);
        }
        // The current state is not a historic read: newest snapshot and tail, no ladder (a
        // ladder would fill rungs on the command path).
        let loaded = load_at_version(&self.store.view(), stream, Version(u64::MAX))?;
        self.remember(stream, loaded.clone());
        Ok(loaded)
    }

    fn cached(&self, stream: &StreamId) -> Option<LoadedPlan> {
        self.cache
            .lock()
            .expect("plan cache lock is never poisoned")
            .get(stream)
            .cloned()
    }

    /// Records a newer state of a stream (after an append), and snapshots it on schedule.
    pub fn remember(&self, stream: &StreamId, loaded: LoadedPlan) {
        {
            let mut cache = self
                .cache
                .lock()
                .expect("plan cache lock is never poisoned");
            if cache.len() >= self.cache_capacity && !cache.contains_key(stream) {
                // Bounded memory: drop an arbitrary entry; it reloads from its snapshot.
                if let Some(victim) = cache.keys().next().cloned() {
                    cache.remove(&victim);
                }
            }
            match cache.get(stream) {
                Some(existing) if existing.version >= loaded.version => {}
                _ => {
                    cache.insert(stream.clone(), loaded.clone());
                }
            }
        }
    }

    /// The plan of `loaded`, owned, to evolve after an append. The cache entry is removed if it
    /// holds this very state, so that when no reader holds it either the plan is taken without
    /// a copy (a copy costs one allocation per check-in, adjustment, step and role); the caller
    /// [`PlanLoader::remember`]s the evolved state.
    pub fn take_for_update(&self, stream: &StreamId, loaded: LoadedPlan) -> Plan {
        {
            let mut cache = self
                .cache
                .lock()
                .expect("plan cache lock is never poisoned");
            if cache
                .get(stream)
                .is_some_and(|entry| Arc::ptr_eq(&entry.plan, &loaded.plan))
            {
                cache.remove(stream);
            }
        }
        Arc::try_unwrap(loaded.plan).unwrap_or_else(|shared| (*shared).clone())
    }

    /// Writes a snapshot if the append from `before` to `after` crossed a multiple of the
    /// snapshot interval at `after`'s version (see [`snapshot_interval`]).
    pub fn maybe_snapshot(
        &self,
        stream: &StreamId,
        before: Version,
        after: &LoadedPlan,
    ) -> Result<(), AppError> {
        let interval = snapshot_interval(self.snapshot_every, after.version.get());
        if before.get() / interval == after.version.get() / interval {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&*after.plan).map_err(|e| AppError::Corrupt {
            position: 0,
            message: format!("plan does not serialize for a snapshot: {e}"),
        })?;
        self.store.put_snapshot(stream, after.version, &bytes)?;
        metrics::counter!("planledger_snapshots_written_total").increment(1);
        Ok(())
    }

    /// The state of a stream after version `version` (or its last version if lower): a
    /// historic read, through the ladder.
    pub fn at_version(&self, stream: &StreamId, version: Version) -> Result<LoadedPlan, AppError> {
        load_at_version_via(&self.store.view(), Some(&self.ladder), stream, version)
    }

    /// The state of a stream as of global position `position`: a historic read, through the
    /// ladder.
    pub fn at_position(
        &self,
        stream: &StreamId,
        position: Position,
    ) -> Result<LoadedPlan, AppError> {
        load_at_position_via(&self.store.view(), Some(&self.ladder), stream, position)
    }

    /// The event store this loader reads.
    pub fn store(&self) -> &EventStore {
        &self.store
    }
}

/// The state of a stream after version `version` (or its last version if lower), read through
/// `log` (the writer's [`EventStore::view`] or a [`planledger_store::LogReader`]'s): the newest
/// snapshot at or below it, then the events after that.
pub fn load_at_version(
    log: &LogView<'_>,
    stream: &StreamId,
    version: Version,
) -> Result<LoadedPlan, AppError> {
    load_at_version_via(log, None, stream, version)
}

/// [`load_at_version`], starting from the nearest state `ladder` holds when that is closer
/// than the newest snapshot, and leaving a rung in `ladder` at every multiple of its step the
/// replay passes.
pub fn load_at_version_via(
    log: &LogView<'_>,
    ladder: Option<&StateLadder>,
    stream: &StreamId,
    version: Version,
) -> Result<LoadedPlan, AppError> {
    let rung = ladder.and_then(|ladder| ladder.below(stream, version));
    let below = rung.as_ref().map_or(Version(0), |(at, _)| *at);
    // With a ladder, replaying from its highest rung (or from version 1) fills the rungs on
    // the way, so every later read in that stretch replays at most a step. Up to `FILL_STEPS`
    // steps that is worth it; past it the snapshot is read (the first read of a very long
    // plan, or a plan longer than the ladder holds).
    let fill = ladder.is_some_and(|ladder| {
        let steps = FILL_STEPS.min(ladder.capacity as u64);
        version.get() - below.get() <= ladder.step.saturating_mul(steps)
    });
    let snapshot = if fill {
        None
    } else {
        match log.latest_snapshot(stream, version)? {
            Some((snap_version, _)) if snap_version <= below => None,
            Some((snap_version, bytes)) => match serde_json::from_slice::<Plan>(&bytes) {
                Ok(plan) => Some((plan, snap_version)),
                Err(error) => {
                    // An unreadable snapshot (e.g. written by an older build) is only a cache.
                    tracing::warn!(%stream, %error, "ignoring unreadable snapshot");
                    None
                }
            },
            None => None,
        }
    };
    let (start, mut plan, mut at) = match (snapshot, rung) {
        (Some((plan, at)), _) => ("snapshot", plan, at),
        (None, Some((at, plan))) => ("rung", Arc::unwrap_or_clone(plan), at),
        (None, None) => ("empty", Plan::default(), Version(0)),
    };
    let from = at;
    while at < version {
        // No more than the versions still wanted: a page's envelopes are all read and parsed.
        let wanted = (version.get() - at.get()).min(PAGE as u64) as usize;
        let page = log.read_stream(
            stream,
            Version(at.get() + 1),
            ReadDirection::Forward,
            wanted,
        )?;
        if page.is_empty() {
            break;
        }
        for envelope in &page {
            if envelope.version > version {
                break;
            }
            assert_eq!(
                envelope.version.get(),
                at.get() + 1,
                "a stream's versions are dense: replaying {stream} after version {at}"
            );
            plan = evolve(plan, &decode_event(envelope)?);
            at = envelope.version;
            if let Some(ladder) = ladder
                && at.get() % ladder.step == 0
            {
                // A clone shares the plan's histories and steps (persistent structures), so a
                // rung costs what changed since the one before it.
                ladder.put(stream, at, Arc::new(plan.clone()));
            }
        }
        if page.len() < wanted {
            break;
        }
    }
    if let Some(ladder) = ladder {
        ladder.count(start, at.get() - from.get());
    }
    Ok(LoadedPlan {
        plan: Arc::new(plan),
        version: at,
    })
}

/// The state of a stream as of global position `position`, read through `log`.
pub fn load_at_position(
    log: &LogView<'_>,
    stream: &StreamId,
    position: Position,
) -> Result<LoadedPlan, AppError> {
    load_at_position_via(log, None, stream, position)
}

/// [`load_at_position`] through a [`StateLadder`], as [`load_at_version_via`].
pub fn load_at_position_via(
    log: &LogView<'_>,
    ladder: Option<&StateLadder>,
    stream: &StreamId,
    position: Position,
) -> Result<LoadedPlan, AppError> {
    let version = log.stream_version_at(stream, position)?;
    if version.get() == 0 {
        return Ok(LoadedPlan {
            plan: Arc::new(Plan::default()),
            version,
        });
    }
    load_at_version_via(log, ladder, stream, version)
}

/// A historic read through a [`StateLadder`] replays from the ladder's highest rung below its
/// point (or from version 1), filling the rungs between, when that is at most this many steps
/// of events (and no more than the ladder holds); else it starts from the newest snapshot. So
/// the first historic read of a plan of up to 131,072 versions replays it once, and every later
/// one replays at most a step.
pub const FILL_STEPS: u64 = 128;

/// Versions between two rungs of a [`StateLadder`] by default.
pub const LADDER_STEP: u64 = 1024;
/// Rungs a [`StateLadder`] keeps by default, over all plans.
pub const LADDER_RUNGS: usize = 512;

/// Decoded states of plans at every multiple of a fixed version step, kept in memory for
/// historic reads (as-of reads, the time slider, the read models' `as_of`).
///
/// A historic read starts from the highest rung at or below its point and replays at most a
/// step of events, however long the plan has lived; the replay leaves a rung at each multiple
/// of the step it passes, so the first read of a region pays for the ones after it. A stream's
/// events never change once written, so a rung never goes stale. States share their check-ins,
/// adjustments and steps (persistent structures), so a rung costs the memory of what changed
/// since the rung before it, not of the whole plan. At most `capacity` rungs are kept: past
/// it, the plan read least recently loses its rungs.
pub struct StateLadder {
    step: u64,
    capacity: usize,
    inner: Mutex<LadderInner>,
    stats: Mutex<LadderStats>,
}

/// What historic reads through a [`StateLadder`] did since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LadderStats {
    /// Reads that started from a rung.
    pub from_rung: u64,
    /// Reads that started from a snapshot.
    pub from_snapshot: u64,
    /// Reads that started from an empty plan (no rung or snapshot below the point).
    pub from_empty: u64,
    /// Events replayed by all of them.
    pub replayed: u64,
}

#[derive(Default)]
struct LadderInner {
    plans: HashMap<StreamId, Rungs>,
    rungs: usize,
    clock: u64,
}

struct Rungs {
    states: std::collections::BTreeMap<Version, Arc<Plan>>,
    used: u64,
}

impl std::fmt::Debug for StateLadder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateLadder")
            .field("step", &self.step)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Default for StateLadder {
    fn default() -> Self {
        Self::new(LADDER_STEP, LADDER_RUNGS)
    }
}

impl StateLadder {
    /// A ladder with a rung every `step` versions and at most `capacity` rungs.
    pub fn new(step: u64, capacity: usize) -> Self {
        Self {
            step: step.max(1),
            capacity,
            inner: Mutex::new(LadderInner::default()),
            stats: Mutex::new(LadderStats::default()),
        }
    }

    /// What reads through it did so far.
    pub fn stats(&self) -> LadderStats {
        *self
            .stats
            .lock()
            .expect("ladder stats lock is never poisoned")
    }

    fn count(&self, start: &'static str, replayed: u64) {
        let mut stats = self
            .stats
            .lock()
            .expect("ladder stats lock is never poisoned");
        match start {
            "rung" => stats.from_rung += 1,
            "snapshot" => stats.from_snapshot += 1,
            _ => stats.from_empty += 1,
        }
        stats.replayed += replayed;
        metrics::counter!("planledger_as_of_reads_total", "start" => start).increment(1);
        metrics::counter!("planledger_as_of_replayed_events_total").increment(replayed);
    }

    /// Versions between two rungs.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Rungs held now, over all plans.
    pub fn len(&self) -> usize {
        self.lock().rungs
    }

    /// Whether it holds no rung.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LadderInner> {
        self.inner.lock().expect("ladder lock is never poisoned")
    }

    /// The highest rung of `stream` at or below `version`.
    fn below(&self, stream: &StreamId, version: Version) -> Option<(Version, Arc<Plan>)> {
        let mut inner = self.lock();
        inner.clock += 1;
        let clock = inner.clock;
        let rungs = inner.plans.get_mut(stream)?;
        rungs.used = clock;
        let (at, plan) = rungs.states.range(..=version).next_back()?;
        Some((*at, Arc::clone(plan)))
    }

    /// Keeps `plan` as the state of `stream` after `version`.
    fn put(&self, stream: &StreamId, version: Version, plan: Arc<Plan>) {
        assert_eq!(
            plan.version,
            version.get(),
            "a rung holds the state after its own version"
        );
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let clock = inner.clock;
        let rungs = inner.plans.entry(stream.clone()).or_insert_with(|| Rungs {
            states: std::collections::BTreeMap::new(),
            used: clock,
        });
        rungs.used = clock;
        if rungs.states.insert(version, plan).is_none() {
            inner.rungs += 1;
        }
        while inner.rungs > self.capacity {
            // The plan read least recently, but never the one just written unless it is alone.
            let victim = inner
                .plans
                .iter()
                .filter(|(id, _)| *id != stream || inner.plans.len() == 1)
                .min_by_key(|(_, r)| r.used)
                .map(|(id, _)| id.clone());
            let Some(victim) = victim else { break };
            if victim == *stream {
                // One plan over the whole capacity: drop its lowest rung.
                let rungs = inner.plans.get_mut(stream).expect("the plan just written");
                rungs.states.pop_first();
                inner.rungs -= 1;
            } else if let Some(gone) = inner.plans.remove(&victim) {
                inner.rungs -= gone.states.len();
            }
        }
        metrics::gauge!("planledger_as_of_ladder_rungs").set(inner.rungs as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CommandRequest, CommandService, Principal, Role};
    use planledger_domain::Command;
    use planledger_store::StoreOptions;
    use serde_json::json;

    #[test]
    fn the_snapshot_interval_doubles_as_the_plan_grows() {
        assert_eq!(snapshot_interval(100, 0), 100);
        assert_eq!(snapshot_interval(100, 799), 100);
        assert_eq!(snapshot_interval(100, 800), 200);
        assert_eq!(snapshot_interval(100, 1_599), 200);
        assert_eq!(snapshot_interval(100, 1_600), 400);
        assert_eq!(snapshot_interval(0, 7), 1);
        for version in [1u64, 500, 12_345, 1_000_000, u64::MAX] {
            let interval = snapshot_interval(100, version);
            assert_eq!(interval % 100, 0);
            assert!((interval / 100).is_power_of_two());
            if interval > 100 {
                assert!(interval <= version / 4, "{interval} at {version}");
                assert!(interval > version / 8, "{interval} at {version}");
            }
        }
    }

    fn command(value: serde_json::Value) -> Command {
        serde_json::from_value(value).expect("a valid command")
    }

    #[tokio::test]
    async fn snapshots_thin_out_as_a_plan_grows_and_a_cold_load_matches_the_cache() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            EventStore::open(dir.path().join("log"), StoreOptions::default()).expect("open");
        let plans = Arc::new(PlanLoader::new(store.clone(), 16, 10));
        let commands = CommandService::new(plans.clone());
        let principal = Principal {
            subject: "ana".into(),
            tenant: "t".into(),
            roles: vec![Role::Planner],
        };
        let plan_id = PlanId::new("grow").expect("plan id");
        let mut script = vec![
            command(json!({"type": "CreatePlan", "data": {"title": "grow",
                "starts_on": "2026-01-01", "ends_on": "2026-12-31", "checkin_cadence_days": 7}})),
            command(
                json!({"type": "DefineGoal", "data": {"goal_id": "g", "title": "g",
                "due": "2026-12-01",
                "kpi": {"unit": "u", "baseline": 0.0, "target": 100.0, "direction": "increase"}}}),
            ),
        ];
        for n in 0..400 {
            script.push(command(json!({"type": "RecordCheckIn",
                "data": {"goal_id": "g", "value": f64::from(n % 100), "confidence": 0.7}})));
        }
        for (n, command) in script.into_iter().enumerate() {
            let result = commands
                .execute(&principal, CommandRequest::new(plan_id.clone(), command))
                .await
                .expect("command accepted");
            // One event per command, so every version is crossed on its own.
            assert_eq!(result.version(), n as u64 + 1);
        }

        let stream = stream_of("t", &plan_id).expect("stream");
        let mut snapshots = std::collections::BTreeSet::new();
        for version in 1..=402 {
            if let Some((at, _)) = store
                .latest_snapshot(&stream, Version(version))
                .expect("read snapshot")
            {
                snapshots.insert(at.get());
            }
        }
        // Every 10 versions below 80, every 20 below 160, 40 below 320, then 80.
        let expected = [
            10, 20, 30, 40, 50, 60, 70, 80, 100, 120, 140, 160, 200, 240, 280, 320, 400,
        ];
        assert_eq!(snapshots.into_iter().collect::<Vec<_>>(), expected);

        let hot = plans.current(&stream, Version(0)).expect("cached plan");
        let cold = PlanLoader::new(store.clone(), 16, 10)
            .current(&stream, Version(0))
            .expect("plan loaded from its snapshot and tail");
        assert_eq!(cold.version, Version(402));
        assert_eq!(
            serde_json::to_value(&*cold.plan).expect("json"),
            serde_json::to_value(&*hot.plan).expect("json")
        );
        let historic = plans
            .at_version(&stream, Version(399))
            .expect("plan at 399 (snapshot 320 and 79 events)");
        assert_eq!(historic.plan.version, 399);
        assert_eq!(historic.plan.checkin_count, 397);

        // Loads start from the newest snapshot at or below the version: a marked copy of the
        // one at 320 shows up in the state at 399, and not in the state at 319.
        let (_, bytes) = store
            .latest_snapshot(&stream, Version(320))
            .expect("read snapshot")
            .expect("snapshot at 320");
        let mut marked: Plan = serde_json::from_slice(&bytes).expect("snapshot decodes");
        marked.title = "from the snapshot".into();
        store
            .put_snapshot(
                &stream,
                Version(320),
                &serde_json::to_vec(&marked).expect("json"),
            )
            .expect("overwrite snapshot");
        // (A loader whose ladder holds no rung, and fills none: capacity 0, one-version step,
        // so every read that is not within a step of the version it asks for reads a snapshot.)
        let loader = PlanLoader::with_ladder(store.clone(), 16, 10, StateLadder::new(1, 0));
        let at_399 = loader.at_version(&stream, Version(399)).expect("load");
        assert_eq!(at_399.plan.title, "from the snapshot");
        assert_eq!(at_399.plan.checkin_count, 397);
        let at_319 = loader.at_version(&stream, Version(319)).expect("load");
        assert_eq!(at_319.plan.title, "grow");
        // Without a ladder, the same: the free function reads the snapshot too.
        let view = store.view();
        let at_399 = load_at_version(&view, &stream, Version(399)).expect("load");
        assert_eq!(at_399.plan.title, "from the snapshot");

        // Through a ladder, a read fills the rungs from version 1 instead (fewer than
        // `FILL_STEPS` steps to replay), so the marked snapshot is not what it starts from, and
        // a later read starts from a rung.
        let filled = PlanLoader::with_ladder(store.clone(), 16, 10, StateLadder::new(50, 16));
        let at_399 = filled.at_version(&stream, Version(399)).expect("load");
        assert_eq!(at_399.plan.title, "grow");
        assert_eq!(filled.ladder().len(), 7);
        let at_210 = filled.at_version(&stream, Version(210)).expect("load");
        assert_eq!(at_210.plan.checkin_count, 208);
        let stats = filled.ladder().stats();
        assert_eq!(
            (stats.from_empty, stats.from_rung, stats.from_snapshot),
            (1, 1, 0)
        );
        assert_eq!(stats.replayed, 399 + 10);
    }
}
