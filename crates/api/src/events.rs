//! `GET /v1/events`: the global log, paged, or live as server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use planledger_app::Principal;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::plans::query_rejection;
use crate::{Problem, SharedState};

/// Query of `GET /v1/events`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// First position to return (default 1).
    pub from_position: Option<u64>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<usize>,
    /// `true`: attach each event's inclusion proof in the tree of the last durable position.
    pub proof: Option<bool>,
}

/// A page of the global log (the caller's tenant only).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = LogPage)]
pub struct LogPageResponse {
    /// Events in position order.
    pub events: Vec<planledger_store::Envelope>,
    /// Where to continue.
    pub next_position: u64,
    /// The last position in the log when read.
    pub last_position: u64,
    /// With `?proof=true`: each event's inclusion proof, in the order of `events`, all in one
    /// tree size (at or after `last_position`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proofs: Option<Vec<planledger_app::checkpoint::InclusionProofBody>>,
}

/// Pages through the global log, or tails it live with `Accept: text/event-stream`.
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "getEvents",
    summary = "The global log of your tenant, paged; live with Accept: text/event-stream (auditor, admin)",
    params(
        ("from_position" = Option<u64>, Query, minimum = 0, description = "First position"),
        ("limit" = Option<u64>, Query, minimum = 0, description = "Page size; values outside 1-1000 are clamped to that range"),
        ("partition" = Option<u32>, Query, minimum = 0, maximum = 4095, description = "Cluster mode (writer nodes): one partition's log, 0 to the cluster's count - 1 (paged from its owner's cache, or live); without it, the tenant-wide feed of every partition (see cursor). Not accepted by a single node."),
        ("cursor" = Option<String>, Query, description = "Cluster mode, tenant-wide feed (without partition): resume after this cursor (a page's next_cursor or last_cursor, or a live event's id); without it the feed starts at the beginning. Not accepted by a single node."),
        ("proof" = Option<bool>, Query, description = "true: add proofs, each event's Merkle inclusion proof"),
        ("recent" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Cluster mode, tenant-wide feed (without partition): a page of the newest events, where a view of the recent activity starts: each partition's last N positions (the caller's events among them) merged by recorded_at, the newest N, oldest first; follow its next_cursor afterwards. Not with cursor, limit or live. Not accepted by a single node."),
    ),
    responses(
        (status = 200, description = "A page (JSON) or a live stream (text/event-stream)", content(
            (crate::openapi::LogOrFeedPage = "application/json"),
            (String = "text/event-stream"),
        )),
        (status = 400, description = "Invalid input (field-level detail)", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        crate::openapi::AuthRefusals,
        (status = 503, description = "Timed out or not caught up", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn get_events(
    State(state): State<SharedState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) = query.map_err(query_rejection)?;
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    // A reconnecting EventSource resumes after the last id it saw.
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|p| p + 1);
    let from = resume.or(query.from_position).unwrap_or(1);
    let limit = query.limit.unwrap_or(100);
    principal.require(planledger_app::Permission::Audit)?;
    if wants_stream {
        return Ok(Sse::new(live_tail(state, principal, from))
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response());
    }
    let (page, proofs) = crate::audit::events_with_proofs(
        state.app.clone(),
        query.proof == Some(true),
        move |app| app.queries.log_page(&principal, from, limit),
        |page| page.events.iter().map(|e| e.position.get()).collect(),
    )
    .await?;
    Ok(axum::Json(LogPageResponse {
        events: page.events,
        next_position: page.next_position,
        last_position: page.last_position,
        proofs,
    })
    .into_response())
}

/// What the live tail carries from one step to the next.
struct Tail {
    state: SharedState,
    principal: Principal,
    published: tokio::sync::watch::Receiver<planledger_store::Position>,
    next: u64,
    buffered: Vec<SseEvent>,
}

fn live_tail(
    state: SharedState,
    principal: Principal,
    from: u64,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let tail = Tail {
        published: state.app.store.subscribe(),
        state,
        principal,
        next: from.max(1),
        buffered: Vec::new(),
    };
    futures::stream::unfold(tail, |mut tail| async move {
        loop {
            if let Some(event) = tail.buffered.pop() {
                return Some((Ok(event), tail));
            }
            if tail.next > tail.state.app.store.last_position().get() {
                // Wait for new events; end the stream when the service shuts down.
                tokio::select! {
                    changed = tail.published.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                    () = tail.state.shutdown.cancelled() => return None,
                }
                continue;
            }
            let app = tail.state.app.clone();
            let who = tail.principal.clone();
            let from = tail.next;
            let page =
                tokio::task::spawn_blocking(move || app.queries.log_page(&who, from, 200)).await;
            let Ok(Ok(page)) = page else {
                return None;
            };
            tail.next = page.next_position;
            tail.buffered = page
                .events
                .iter()
                .rev()
                .filter_map(|envelope| {
                    SseEvent::default()
                        .id(envelope.position.to_string())
                        .event(envelope.event_type.as_str())
                        .json_data(envelope)
                        .ok()
                })
                .collect();
        }
    })
}
