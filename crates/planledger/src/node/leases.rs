//! The node's side of partition ownership: it watches every lease, renews its own at a third of
//! the TTL, gives a partition up at once when a renewal is refused and before the TTL runs out
//! without an acknowledged one, takes free partitions while under its fair share, and hands one
//! back when it holds more than its share while another live node holds less.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use planledger_bus::leases::{Lease, LeaseChange, Renewal, fair_share};
use rand::seq::SliceRandom;

use super::partition::{self, Served};
use super::{Node, Session};

/// How long a node leaves a partition alone after giving it back or failing to open it.
const COOLDOWN: Duration = Duration::from_secs(5);

/// Keeps the node's copy of the bucket current; restarts the watch when it fails.
pub(super) async fn watch_loop(node: Arc<Node>) {
    loop {
        match node.owners.watch().await {
            Ok(changes) => {
                // The watch starts with every current value: forget what an earlier watch left
                // (an expiry marker missed while it was down would leave a dead holder forever).
                {
                    let mut table = node.table();
                    table.holders.clear();
                    table.live.clear();
                    table.live.insert(node.instance_id.clone());
                }
                let mut changes = std::pin::pin!(changes);
                loop {
                    let change = tokio::select! {
                        () = node.shutdown.cancelled() => return,
                        change = changes.next() => change,
                    };
                    match change {
                        Some(LeaseChange::Changed { partition, holder }) => {
                            let mut table = node.table();
                            match holder {
                                Some(held) => {
                                    table.holders.insert(partition, held);
                                    table.free_since.remove(&partition);
                                }
                                None => {
                                    table.holders.remove(&partition);
                                    table.free_since.insert(partition, Instant::now());
                                }
                            }
                        }
                        Some(LeaseChange::Node { instance_id, alive }) => {
                            let mut table = node.table();
                            if alive {
                                table.live.insert(instance_id);
                            } else {
                                table.live.remove(&instance_id);
                            }
                        }
                        Some(LeaseChange::Failed(error)) => {
                            tracing::warn!(%error, "the lease watch failed; starting it again");
                            break;
                        }
                        None => break,
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot watch the partition leases"),
        }
        tokio::select! {
            () = node.shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Announces the node, renews its leases, and rebalances, every third of the TTL.
pub(super) async fn lease_loop(node: Arc<Node>) {
    let tick = node.ttl / 3;
    loop {
        announce(&node).await;
        renew_all(&node).await;
        rebalance(&node).await;
        catch_up_stale(&node).await;
        export_metrics(&node);
        // A little jitter so that nodes started together do not race for the same partitions.
        let jitter = Duration::from_millis(rand::random_range(0..=tick.as_millis() as u64 / 4));
        tokio::select! {
            () = node.shutdown.cancelled() => return,
            () = tokio::time::sleep(tick - tick / 8 + jitter) => {}
        }
    }
}

async fn announce(node: &Arc<Node>) {
    let announced = tokio::time::timeout(
        node.ttl / 3,
        node.owners
            .announce(&node.instance_id, &node.node_id, node.ttl),
    )
    .await;
    match announced {
        Ok(Ok(())) => {
            node.table().live.insert(node.instance_id.clone());
        }
        Ok(Err(error)) => tracing::warn!(%error, "cannot announce the node"),
        Err(_) => tracing::warn!("announcing the node timed out"),
    }
}

/// The cache position a lease reports (for `cluster status`).
fn position_of(session: &Session) -> Option<u64> {
    session
        .served
        .as_ref()
        .map(|served| served.store.last_position().get())
}

async fn renew_all(node: &Arc<Node>) {
    let held: Vec<(u32, Lease, u64, Instant)> = {
        let mut table = node.table();
        table
            .sessions
            .iter_mut()
            .map(|(p, session)| {
                session.lease.position = position_of(session);
                (
                    *p,
                    session.lease.clone(),
                    session.revision,
                    session.acked_at,
                )
            })
            .collect()
    };
    // All at once: one slow or refused renewal must not delay the others.
    let renewals = held
        .into_iter()
        .map(|(partition, lease, revision, acked_at)| async move {
            let sent = Instant::now();
            let renewed = tokio::time::timeout(
                node.ttl / 3,
                node.owners.renew(partition, &lease, revision, node.ttl),
            )
            .await;
            (partition, acked_at, sent, renewed)
        });
    for (partition, acked_at, sent, renewed) in futures::future::join_all(renewals).await {
        match renewed {
            Ok(Ok(Renewal::Renewed(revision))) => {
                let mut table = node.table();
                if let Some(session) = table.sessions.get_mut(&partition) {
                    session.revision = revision;
                    session.acked_at = sent;
                }
            }
            Ok(Ok(Renewal::Lost)) => {
                give_up(
                    node,
                    partition,
                    "lost",
                    "a renewal was refused: another node holds the lease",
                )
                .await;
            }
            Ok(Err(error)) => {
                tracing::warn!(partition, %error, "renewing a lease failed");
                expire_if_late(node, partition, acked_at).await;
            }
            Err(_) => {
                tracing::warn!(partition, "renewing a lease timed out");
                expire_if_late(node, partition, acked_at).await;
            }
        }
    }
}

/// Reopens every served partition whose cache has fallen behind its stream without a refused
/// commit to say so: a deposed owner's last commit that landed after this node caught up at
/// takeover. Checked every tick, so such a cache serves reads that lag by those events for at
/// most about a third of the TTL (plus the second the check gives the cache to apply its own
/// acknowledged commits).
async fn catch_up_stale(node: &Arc<Node>) {
    let served: Vec<Arc<Served>> = node
        .table()
        .sessions
        .values()
        .filter_map(|session| session.served.clone())
        .collect();
    let checks = served.into_iter().map(|served| async move {
        let behind = matches!(served.is_behind(&node.client).await, Ok(true));
        (served.partition, behind)
    });
    for (partition, behind) in futures::future::join_all(checks).await {
        if behind {
            metrics::counter!("planledger_partition_stale_caught_total").increment(1);
            reopen(node, partition).await;
        }
    }
}

/// Gives a partition up when no renewal has been acknowledged for the TTL less the margin.
async fn expire_if_late(node: &Arc<Node>, partition: u32, acked_at: Instant) {
    if acked_at.elapsed() + node.lease_margin() >= node.ttl {
        give_up(
            node,
            partition,
            "expired",
            "no renewal was acknowledged before the lease would run out",
        )
        .await;
    }
}

/// Stops serving `partition` (it no longer routes here), then closes its cache.
async fn give_up(node: &Arc<Node>, partition: u32, reason: &'static str, detail: &str) {
    let removed = node.table().sessions.remove(&partition);
    if let Some(session) = removed {
        tracing::warn!(partition, reason, detail, "no longer serving a partition");
        metrics::counter!("planledger_partition_ownership_changes_total", "change" => reason)
            .increment(1);
        if let Some(served) = session.served {
            // In the background: the lease loop must keep renewing the other partitions.
            let wait = node.drain_wait();
            tokio::spawn(partition::close(served, wait));
        }
    }
}

/// Gives a partition back on purpose: stops routing to it, drains it, closes the cache, then
/// deletes the lease (expecting the revision held) so another node takes it at once.
async fn hand_back(node: &Arc<Node>, partition: u32) {
    let removed = {
        let mut table = node.table();
        table.cooldown.insert(partition, Instant::now() + COOLDOWN);
        table.sessions.remove(&partition)
    };
    let Some(session) = removed else { return };
    if let Some(served) = session.served {
        partition::close(served, node.drain_wait()).await;
    }
    match node.owners.release(partition, session.revision).await {
        Ok(()) => {
            tracing::info!(partition, "gave a partition back");
            metrics::counter!("planledger_partition_ownership_changes_total", "change" => "released")
                .increment(1);
        }
        Err(error) => {
            tracing::warn!(partition, %error, "releasing a lease failed (it expires instead)")
        }
    }
}

/// At shutdown: every partition is drained and its lease given back (all at once).
pub(super) async fn release_all(node: &Arc<Node>) {
    let partitions: Vec<u32> = node.table().sessions.keys().copied().collect();
    futures::future::join_all(partitions.into_iter().map(|p| hand_back(node, p))).await;
    if let Err(error) = node.owners.withdraw(&node.instance_id).await {
        tracing::debug!(%error, "withdrawing the node's announcement");
    }
}

/// Takes free partitions while under the fair share; hands one back when over it while another
/// live node is under its floor.
async fn rebalance(node: &Arc<Node>) {
    if node.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let count = node.count.get();
    let (mine, free, long_free, owned_by, live) = {
        let mut table = node.table();
        let now = Instant::now();
        table.cooldown.retain(|_, until| *until > now);
        let mut free: Vec<u32> = (0..count)
            .filter(|p| {
                !table.holders.contains_key(p)
                    && !table.sessions.contains_key(p)
                    && !table.cooldown.contains_key(p)
            })
            .collect();
        free.shuffle(&mut rand::rng());
        // Partitions nobody has taken for half a TTL are taken whatever the shares say
        // (availability first; hand-backs even the load out afterwards).
        let long_free: Vec<u32> = free
            .iter()
            .copied()
            .filter(|p| {
                table
                    .free_since
                    .get(p)
                    .is_some_and(|since| since.elapsed() >= node.ttl / 2)
            })
            .collect();
        let mut owned_by: std::collections::BTreeMap<String, u32> =
            table.live.iter().map(|id| (id.clone(), 0)).collect();
        for held in table.holders.values() {
            *owned_by.entry(held.lease.instance_id.clone()).or_default() += 1;
        }
        owned_by.insert(node.instance_id.clone(), table.sessions.len() as u32);
        let live = table.live.len().max(1);
        (table.sessions.len() as u32, free, long_free, owned_by, live)
    };
    let high = fair_share(count, live);
    let low = count / live as u32;
    if mine < high || !long_free.is_empty() {
        let mut wanted: Vec<u32> = free
            .into_iter()
            .take(high.saturating_sub(mine) as usize)
            .collect();
        for partition in long_free {
            if !wanted.contains(&partition) {
                wanted.push(partition);
            }
        }
        for partition in wanted {
            acquire(node, partition).await;
        }
        return;
    }
    // Over the floor while some live node is under it: the most loaded node (ties: the
    // greatest instance id) gives one partition back.
    let starving = owned_by.values().any(|owned| *owned < low);
    let most_loaded = owned_by
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)))
        .map(|(id, _)| id.clone());
    if mine > low && starving && most_loaded.as_deref() == Some(node.instance_id.as_str()) {
        let last = node.table().sessions.keys().next_back().copied();
        if let Some(partition) = last {
            let node = node.clone();
            tokio::spawn(async move { hand_back(&node, partition).await });
        }
    }
}

/// Tries to take `partition`'s lease; when taken, opens its cache in the background.
async fn acquire(node: &Arc<Node>, partition: u32) {
    let lease = Lease {
        node_id: node.node_id.clone(),
        instance_id: node.instance_id.clone(),
        route: node.route.clone(),
        http: Some(node.http_addr.clone()),
        acquired_at: jiff::Timestamp::now(),
        position: None,
    };
    let sent = Instant::now();
    let taken = tokio::time::timeout(
        node.ttl / 3,
        node.owners.acquire(partition, &lease, node.ttl),
    )
    .await;
    let revision = match taken {
        Ok(Ok(Some(revision))) => revision,
        Ok(Ok(None)) => return,
        Ok(Err(error)) => {
            tracing::warn!(partition, %error, "taking a lease failed");
            return;
        }
        Err(_) => {
            tracing::warn!(partition, "taking a lease timed out");
            return;
        }
    };
    tracing::info!(
        partition,
        revision,
        "took a partition's lease; opening its cache"
    );
    metrics::counter!("planledger_partition_ownership_changes_total", "change" => "acquired")
        .increment(1);
    let generation = node
        .generations
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        + 1;
    node.table().sessions.insert(
        partition,
        Session {
            lease,
            revision,
            acked_at: sent,
            served: None,
            generation,
        },
    );
    let node = node.clone();
    tokio::spawn(open_and_install(node, partition, generation));
}

/// Opens `partition`'s cache for the session of `generation` and puts it in service; gives the
/// partition back if it cannot be opened (unless the session has changed meanwhile).
async fn open_and_install(node: Arc<Node>, partition: u32, generation: u64) {
    match partition::open(&node, partition).await {
        Ok(served) => install(&node, partition, generation, served).await,
        Err(error) => {
            tracing::error!(
                partition,
                error = format!("{error:#}"),
                "cannot open a partition; giving it back"
            );
            let current = node
                .table()
                .sessions
                .get(&partition)
                .is_some_and(|session| session.generation == generation);
            if current {
                hand_back(&node, partition).await;
            }
        }
    }
}

/// Takes a served partition out of service and opens it again (its cache catches up with the
/// stream at open): used when the cache was found behind the stream, which happens when a
/// deposed owner's last commit landed after this node caught up at takeover.
pub(super) async fn reopen(node: &Arc<Node>, partition: u32) {
    let taken = {
        let mut table = node.table();
        table.sessions.get_mut(&partition).and_then(|session| {
            session
                .served
                .take()
                .map(|served| (served, session.generation))
        })
    };
    let Some((served, generation)) = taken else {
        return;
    };
    tracing::warn!(
        partition,
        "the partition's cache is behind its stream; opening it again"
    );
    metrics::counter!("planledger_partition_reopened_total").increment(1);
    let node = node.clone();
    // In the background: the lease loop must keep renewing while the cache closes and reopens.
    tokio::spawn(async move {
        partition::close(served, node.drain_wait()).await;
        open_and_install(node, partition, generation).await;
    });
}

/// Puts an opened partition in service, unless the node gave it up while it opened.
async fn install(node: &Arc<Node>, partition: u32, generation: u64, served: Served) {
    let served = Arc::new(served);
    let installed = {
        let mut table = node.table();
        match table.sessions.get_mut(&partition) {
            Some(session) if session.generation == generation && session.served.is_none() => {
                session.served = Some(served.clone());
                true
            }
            _ => false,
        }
    };
    if installed {
        tracing::info!(
            partition,
            position = served.store.last_position().get(),
            "serving a partition"
        );
    } else {
        partition::close(served, node.drain_wait()).await;
    }
}

/// `planledger_partition_owned{partition}` and `planledger_partition_state{partition,state}`.
fn export_metrics(node: &Arc<Node>) {
    let states = node.partition_states();
    for partition in 0..node.count.get() {
        let label = partition.to_string();
        let state = states.get(&partition).copied();
        metrics::gauge!("planledger_partition_owned", "partition" => label.clone())
            .set(if state.is_some() { 1.0 } else { 0.0 });
        for name in ["opening", "catching_up", "serving", "halted"] {
            metrics::gauge!("planledger_partition_state", "partition" => label.clone(), "state" => name)
                .set(if state == Some(name) { 1.0 } else { 0.0 });
        }
    }
    metrics::gauge!("planledger_partitions_owned").set(states.len() as f64);
}
