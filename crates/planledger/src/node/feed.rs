//! `GET /v1/events` on a cluster node: the caller's events, read from the partition streams (the
//! truth of each partition's log), whichever node owns them.
//!
//! - `?partition=P` without `Accept: text/event-stream`: a page of that partition's log from
//!   its owner's cache, exactly as a single node answers (`from_position`, `limit`, `proof`);
//!   `route.rs` forwards it.
//! - `?partition=P` live: the partition's events as they are committed, as server-sent events
//!   whose id is the position (a reconnecting `EventSource` resumes after it).
//! - No partition: the **tenant-wide feed**, every partition merged. Pages take `?cursor=` (the
//!   `next_cursor` of the page before, or nothing to start at the beginning) and `?limit=`;
//!   live, each event's SSE id is the cursor after it. A cursor is a vector of positions, one
//!   per partition (the bookmark format, `pb1.`...), so resuming loses and repeats nothing.
//!   Within a partition events come in position order; across partitions a page is merged by
//!   `recorded_at` (then partition), and the live feed in the order events are committed.
//!   `?recent=N` (a page, instead of `?cursor=`) is where a view of the recent activity starts:
//!   the newest N of the caller's events among each partition's last N positions, merged by
//!   `recorded_at`, with the `next_cursor` to follow live from.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use planledger_api::Problem;
use planledger_app::{Bookmark, LogRef, Permission, Principal, Refusal};
use planledger_bus::partition_feed::{PartitionFeed, event_json};
use planledger_store::Envelope;
use serde::Deserialize;

use super::Node;

/// Default and largest page of the tenant-wide feed (as a single node's `/v1/events`).
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// The query of `GET /v1/events` on a cluster node.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    partition: Option<String>,
    cursor: Option<String>,
    from_position: Option<u64>,
    limit: Option<usize>,
    proof: Option<bool>,
    recent: Option<usize>,
}

/// `GET /v1/events`.
pub(super) async fn events(State(node): State<Arc<Node>>, request: Request) -> Response {
    match serve(&node, request).await {
        Ok(response) => response,
        Err(refusal) => Problem(refusal).into_response(),
    }
}

// A refusal is the cold path, and the door's plain serde type (see `app::door`).
#[allow(clippy::result_large_err)]
async fn serve(node: &Arc<Node>, request: Request) -> Result<Response, Refusal> {
    let axum::extract::Query(query) = axum::extract::Query::<FeedQuery>::try_from_uri(request.uri())
        .map_err(|e| {
            Refusal::new(
                400,
                "invalid_query",
                format!(
                    "the query of /v1/events does not parse ({}); it takes partition, cursor, from_position, limit, proof and recent",
                    e.body_text()
                ),
            )
        })?;
    let live = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let last_event_id = request
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let count = node.count.get();
    let partition = query
        .partition
        .as_deref()
        .map(|raw| match raw.parse::<u32>() {
            Ok(p) if p < count => Ok(p),
            _ => Err(Refusal::new(
                400,
                "invalid_query",
                format!(
                    "partition={raw:?} is not a partition of this cluster: use 0 to {}",
                    count - 1
                ),
            )
            .with_field("partition", format!("0 to {}", count - 1))),
        })
        .transpose()?;
    if let (Some(_), false) = (partition, live) {
        // A page of one partition: its owner's single-node endpoint.
        return Ok(super::route::partition_request(State(node.clone()), request).await);
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    drop(request);
    let principal = node.auth.authenticate(authorization.as_deref()).await?;
    principal.require(Permission::Audit)?;
    let feeds = open_feeds(node, partition).await?;
    match partition {
        Some(partition) => {
            if query.cursor.is_some() {
                return Err(only_merged("cursor"));
            }
            // Resume after the last id seen, else from `from_position`.
            let after = match last_event_id {
                Some(id) => id.parse::<u64>().map_err(|_| {
                    Refusal::new(
                        400,
                        "invalid_header",
                        format!(
                            "Last-Event-ID {id:?} is not a position of partition {partition}'s feed"
                        ),
                    )
                })?,
                None => query.from_position.unwrap_or(1).saturating_sub(1),
            };
            live_feed(
                node,
                principal,
                feeds,
                BTreeMap::from([(partition, after)]),
                LiveIds::Position,
            )
            .await
        }
        None => {
            if query.from_position.is_some() {
                return Err(Refusal::new(
                    400,
                    "invalid_query",
                    "from_position names a position of one partition's log: add ?partition=P, or page the tenant-wide feed with ?cursor= (the next_cursor of the page before)",
                )
                .with_field("from_position", "only with partition"));
            }
            if query.proof.is_some() {
                return Err(Refusal::new(
                    400,
                    "invalid_query",
                    "inclusion proofs are per partition's tree: add ?partition=P to page one partition's log with ?proof=true",
                )
                .with_field("proof", "only with partition"));
            }
            let resumes = query.cursor.is_some() || (live && last_event_id.is_some());
            // A reconnecting EventSource resumes after the last id it saw; a page follows ?cursor=.
            let resume = if live {
                last_event_id.or(query.cursor)
            } else {
                query.cursor
            };
            let cursor = match resume {
                Some(text) => parse_cursor(&text, count)?,
                None => BTreeMap::new(),
            };
            if let Some(recent) = query.recent {
                if live || resumes || query.limit.is_some() {
                    return Err(Refusal::new(
                        400,
                        "invalid_query",
                        "recent starts the tenant-wide feed with its newest events: it is a page (not live) and takes no cursor or limit; follow its next_cursor afterwards (live, or ?cursor=)",
                    )
                    .with_field("recent", "alone, on a page"));
                }
                if !(1..=MAX_LIMIT).contains(&recent) {
                    return Err(Refusal::new(
                        400,
                        "invalid_query",
                        format!("recent={recent} is out of range: ask for 1 to {MAX_LIMIT} events"),
                    )
                    .with_field("recent", format!("1 to {MAX_LIMIT}")));
                }
                let ends = last_positions(&feeds).await?;
                let start = ends
                    .iter()
                    .map(|(p, last)| (*p, last.saturating_sub(recent as u64)))
                    .collect();
                return merged_page(&principal, &feeds, start, ends, recent, Keep::Newest).await;
            }
            if live {
                live_feed(node, principal, feeds, cursor, LiveIds::Cursor).await
            } else {
                let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
                let ends = last_positions(&feeds).await?;
                merged_page(&principal, &feeds, cursor, ends, limit, Keep::Oldest).await
            }
        }
    }
}

fn only_merged(field: &str) -> Refusal {
    Refusal::new(
        400,
        "invalid_query",
        format!("{field} belongs to the tenant-wide feed (without ?partition=); one partition's feed takes from_position"),
    )
    .with_field(field, "only without partition")
}

/// The feeds of `partition`, or of every partition.
#[allow(clippy::result_large_err)]
async fn open_feeds(node: &Node, partition: Option<u32>) -> Result<Vec<PartitionFeed>, Refusal> {
    let js = async_nats::jetstream::new(node.client.clone());
    let partitions: Vec<u32> = match partition {
        Some(p) => vec![p],
        None => (0..node.count.get()).collect(),
    };
    futures::future::try_join_all(partitions.into_iter().map(|p| {
        let js = js.clone();
        async move { PartitionFeed::open(&js, p).await }
    }))
    .await
    .map_err(feed_refusal)
}

/// A feed's failure as a refusal: a missing partition stream is for an operator to repair
/// (no point retrying), anything else is passing.
fn feed_refusal(error: planledger_bus::BusError) -> Refusal {
    match error {
        planledger_bus::BusError::PartitionStreamMissing { stream } => Refusal::new(
            503,
            "partition_unavailable",
            format!(
                "the partition stream {stream} does not exist, so its events cannot be read; an operator must recreate it from a cache or backup (`planledger cluster repair`, docs/operations.md \"Repairing a lost partition stream\"); `planledger cluster status` shows which partitions are affected"
            ),
        ),
        other => super::unavailable(format!("the partition streams cannot be read: {other}")),
    }
}

/// A cursor's position per partition; refuses a single-node bookmark or a foreign partition.
#[allow(clippy::result_large_err)]
fn parse_cursor(text: &str, count: u32) -> Result<BTreeMap<u32, u64>, Refusal> {
    let invalid = |why: String| {
        Refusal::new(400, "invalid_query", format!("cursor {why}; pass the next_cursor of the page before (or the id of the last live event), unchanged"))
            .with_field("cursor", "a feed cursor")
    };
    let bookmark = Bookmark::parse(text).map_err(|e| invalid(format!("is not a cursor ({e})")))?;
    bookmark
        .positions()
        .map(|(log, position)| match log {
            LogRef::Partition(p) if p < count => Ok((p, position)),
            LogRef::Partition(p) => Err(invalid(format!(
                "names partition {p}, and this cluster has {count}"
            ))),
            LogRef::Single => Err(invalid("is a single node's".to_string())),
        })
        .collect()
}

/// The cursor after `positions`.
fn cursor_text(positions: &BTreeMap<u32, u64>) -> String {
    let mut bookmark = Bookmark::default();
    for (partition, position) in positions {
        bookmark.add(LogRef::Partition(*partition), *position);
    }
    bookmark.to_string()
}

/// Each partition's last position, read before its page (as a single node's page tells its
/// `last_position`): the live feed from `last_cursor` delivers only what is committed after.
#[allow(clippy::result_large_err)]
async fn last_positions(feeds: &[PartitionFeed]) -> Result<BTreeMap<u32, u64>, Refusal> {
    let ends = futures::future::try_join_all(feeds.iter().map(|feed| async move {
        feed.last_position()
            .await
            .map(|last| (feed.partition(), last))
    }))
    .await
    .map_err(feed_refusal)?;
    Ok(ends.into_iter().collect())
}

/// Which events of the merged partitions a page keeps.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// The first `limit` (paging forward from a cursor).
    Oldest,
    /// The last `limit` (`?recent=`): every event read moves the cursor, the older ones are
    /// left out.
    Newest,
}

/// A page of the tenant-wide feed: up to `limit` events from each partition after the cursor,
/// merged by `recorded_at` (each partition's order kept), the first `limit` of them (or the
/// last, with [`Keep::Newest`]). `last_cursor` is `ends`.
#[allow(clippy::result_large_err)]
async fn merged_page(
    principal: &Principal,
    feeds: &[PartitionFeed],
    mut cursor: BTreeMap<u32, u64>,
    last_cursor: BTreeMap<u32, u64>,
    limit: usize,
    keep: Keep,
) -> Result<Response, Refusal> {
    let tenant = principal.tenant.as_str();
    let pages = futures::future::try_join_all(feeds.iter().map(|feed| {
        let after = cursor.get(&feed.partition()).copied().unwrap_or(0);
        async move {
            feed.page(Some(tenant), after, limit)
                .await
                .map(|page| (feed.partition(), page))
        }
    }))
    .await
    .map_err(feed_refusal)?;
    // Every partition is named, so even a cursor before any event parses back.
    for feed in feeds {
        cursor.entry(feed.partition()).or_insert(0);
    }
    let mut at_end = pages.iter().all(|(_, page)| page.at_end);
    let mut heads: Vec<(u32, VecDeque<Envelope>)> = pages
        .into_iter()
        .map(|(p, page)| (p, page.events.into()))
        .collect();
    let mut events = VecDeque::new();
    while keep == Keep::Newest || events.len() < limit {
        let next = heads
            .iter_mut()
            .filter_map(|(p, queue)| {
                let key = queue.front().map(|e| (e.recorded_at, *p))?;
                Some((key, queue))
            })
            .min_by_key(|(key, _)| *key);
        let Some(((_, partition), queue)) = next else {
            break;
        };
        let Some(envelope) = queue.pop_front() else {
            break;
        };
        let previous = cursor.insert(partition, envelope.position.get());
        assert!(
            previous.is_none_or(|p| p < envelope.position.get()),
            "the feed cursor only moves forward in each partition"
        );
        events.push_back(
            event_json(partition, &envelope)
                .map_err(|e| Refusal::new(500, "internal", e.to_string()))?,
        );
        if events.len() > limit {
            events.pop_front();
        }
    }
    at_end &= heads.iter().all(|(_, queue)| queue.is_empty());
    let body = format!(
        "{{\"events\":[{}],\"next_cursor\":{},\"at_end\":{at_end},\"last_cursor\":{}}}",
        Vec::from(events).join(","),
        serde_json::Value::String(cursor_text(&cursor)),
        serde_json::Value::String(cursor_text(&last_cursor)),
    );
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// How a live feed names its events (the SSE `id` a reconnect sends back as `Last-Event-ID`).
#[derive(Clone, Copy)]
enum LiveIds {
    /// One partition's feed: the event's position.
    Position,
    /// The tenant-wide feed: the cursor after the event.
    Cursor,
}

/// The events of `feeds` as they are committed, each partition after its position in `cursor`.
/// The tails are opened before the answer, so a failure is a problem the client sees, not an
/// empty stream; the answer's stream ends (and the client reconnects) at the first error.
#[allow(clippy::result_large_err)]
async fn live_feed(
    node: &Arc<Node>,
    principal: Principal,
    feeds: Vec<PartitionFeed>,
    cursor: BTreeMap<u32, u64>,
    ids: LiveIds,
) -> Result<Response, Refusal> {
    let mut tails = Vec::with_capacity(feeds.len());
    for feed in &feeds {
        let partition = feed.partition();
        let after = cursor.get(&partition).copied().unwrap_or(0);
        let tail = feed
            .tail(Some(&principal.tenant), after)
            .await
            .map_err(feed_refusal)?;
        tails.push(tail.map(move |next| (partition, next)));
    }
    let events =
        futures::stream::select_all(tails).scan(cursor, move |cursor, (partition, next)| {
            let event = match next {
                Ok(envelope) => {
                    let position = envelope.position.get();
                    let previous = cursor.insert(partition, position);
                    assert!(
                        previous.is_none_or(|p| p < position),
                        "the feed cursor only moves forward in each partition"
                    );
                    event_json(partition, &envelope).ok().map(|data| {
                        let id = match ids {
                            LiveIds::Position => position.to_string(),
                            LiveIds::Cursor => cursor_text(cursor),
                        };
                        SseEvent::default()
                            .id(id)
                            .event(envelope.event_type.as_str())
                            .data(data)
                    })
                }
                Err(error) => {
                    tracing::warn!(partition, %error, "the live feed stopped");
                    None
                }
            };
            std::future::ready(event)
        });
    Ok(sse(events, node.shutdown.clone()))
}

fn sse(
    stream: impl futures::Stream<Item = SseEvent> + Send + 'static,
    shutdown: tokio_util::sync::CancellationToken,
) -> Response {
    let stream = stream
        .map(Ok::<_, Infallible>)
        .take_until(shutdown.cancelled_owned());
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
