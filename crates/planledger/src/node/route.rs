//! Routing in cluster mode: both doors take any command and any plan read, and send it to the
//! partition's owner.
//!
//! - HTTP: the plan routes (`/v1/plans/{plan_id}`, `.../events`, `.../commands`) authenticate
//!   the caller (to learn the tenant), compute the partition, and run the request through the
//!   partition's single-node router when it is served here; otherwise the whole request
//!   (method, path, headers including `Authorization`, body) goes to
//!   `planledger.node.<owner instance>.http` and the owner's answer comes back unchanged.
//! - NATS: `planledger.cmd.<tenant>.<plan>` is served by every node in one queue group; a
//!   command for a partition served elsewhere goes to `planledger.node.<owner>.cmd.<tenant>.<plan>`
//!   with its headers and body, and the owner's reply is passed back unchanged.
//!
//! The owner runs a forwarded request only for a partition it serves (`not_owner` otherwise,
//! never forwarded again). The forwarding node retries only answers that prove nothing ran (no
//! responders, `not_owner`); a forwarded command that gets no answer in time may have been
//! appended, so it is answered `log_outcome_unknown` (resend it with the same
//! `Idempotency-Key`).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{HeaderMap, RequestErrorKind};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures::StreamExt;
use planledger_api::{Problem, UiConfig};
use planledger_app::Refusal;
use planledger_bus::refusal_reply;
use planledger_proto::v1::{CommandReply, command_reply};
use planledger_proto::{Message as _, subjects};
use serde_json::json;
use tower::ServiceExt as _;

use super::{Located, Node, not_owner, unavailable};
use crate::forwarded::{
    self, HEADER_FORWARDED, HEADER_METHOD, HEADER_NOT_OWNER, HEADER_STATUS, HEADER_URI,
    NATS_HEADROOM,
};

/// The NATS queue group every node serves public commands in.
const COMMAND_QUEUE_GROUP: &str = "planledger-nodes";
/// How many times a request is sent again after an answer that proves nothing ran.
const FORWARD_ATTEMPTS: usize = 4;

/// Marks an HTTP request another node forwarded here.
#[derive(Clone, Copy, Debug)]
struct ForwardedMark;

/// The node's HTTP router.
pub(super) fn http_router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/v1/plans/{plan_id}/commands", post(plan_request))
        .route("/v1/plans/{plan_id}", get(plan_request))
        .route("/v1/plans/{plan_id}/events", get(plan_request))
        .route("/v1/plans", get(read_model_request))
        .route("/v1/plans/{plan_id}/progress", get(plan_read_model))
        .route("/v1/plans/{plan_id}/progress/history", get(plan_read_model))
        .route("/v1/plans/{plan_id}/accountability", get(plan_read_model))
        .route("/v1/plans/{plan_id}/agility", get(plan_read_model))
        .route("/v1/plans/{plan_id}/drift", get(plan_read_model))
        .route("/v1/plans/{plan_id}/restatements", get(plan_read_model))
        .route(
            "/v1/people/{person}/accountability",
            get(read_model_request),
        )
        .route("/v1/events", get(super::feed::events))
        .route("/v1/audit/verify", get(partition_request))
        .route("/v1/audit/digest", get(partition_request))
        .route("/v1/audit/keys", get(partition_request))
        .route("/v1/audit/checkpoint", get(partition_request))
        .route("/v1/audit/proof/inclusion", get(partition_request))
        .route("/v1/audit/proof/consistency", get(partition_request))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .merge(planledger_api::ui_routes(UiConfig::Cluster {
            partitions: node.count.get(),
        }))
        .fallback(not_served)
        .with_state(node)
}

async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        planledger_api::openapi_document(),
    )
        .into_response()
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        node.prometheus.render(),
    )
        .into_response()
}

/// Ready when connected to NATS and every partition this node holds is serving.
async fn readyz(State(node): State<Arc<Node>>) -> Response {
    let connected = node.client.connection_state() == async_nats::connection::State::Connected;
    let states = node.partition_states();
    let ready = connected
        && !node.shutdown.is_cancelled()
        && states.values().all(|state| *state == "serving");
    let partitions: serde_json::Map<String, serde_json::Value> = states
        .iter()
        .map(|(p, state)| (p.to_string(), json!(state)))
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({
            "ready": ready,
            "node_id": node.node_id,
            "instance_id": node.instance_id,
            "nats_connected": connected,
            "partition_count": node.count.get(),
            "partitions": partitions,
        })),
    )
        .into_response()
}

/// Routes the node does not serve in cluster mode (projector status and operations, the
/// audit routes over no one log).
async fn not_served(request: Request) -> Problem {
    if request.uri().path().starts_with("/v1/") {
        Problem(Refusal::new(
            501,
            "not_in_cluster_mode",
            format!(
                "{} is not served by cluster nodes: a cluster node serves commands, a plan's state and events (/v1/plans/{{plan_id}}, /v1/plans/{{plan_id}}/events), the read models (passed to `planledger projector --cluster`), the event feed (/v1/events, tenant-wide or ?partition=P) and the audit routes per partition (?partition=P); a projector's status, rebuilds and quarantines are served by the projector itself (`planledger projector --cluster --http ADDR`)",
                request.uri().path()
            ),
        ))
    } else {
        Problem(Refusal::new(
            404,
            "no_route",
            "no such endpoint; see /openapi.json for the API",
        ))
    }
}

/// A plan route: run here when the partition is served here, else forward to its owner.
async fn plan_request(
    State(node): State<Arc<Node>>,
    Path(plan_id): Path<String>,
    request: Request,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = match node.auth.authenticate(authorization).await {
        Ok(principal) => principal,
        Err(error) => return Problem(Refusal::from(error)).into_response(),
    };
    let plan = match planledger_app::door::parse_plan_id(&plan_id) {
        Ok(plan) => plan,
        Err(refusal) => return Problem(refusal).into_response(),
    };
    let partition = match node.partition_of(&principal.tenant, plan.as_str()) {
        Ok(partition) => partition,
        Err(refusal) => return Problem(refusal).into_response(),
    };
    dispatch(&node, partition, request, None).await
}

/// The read model a read-model route is answered from.
fn read_model_of(path: &str) -> &'static str {
    if path.ends_with("/accountability") {
        "accountability"
    } else if path.ends_with("/agility") {
        "agility"
    } else {
        "progress"
    }
}

/// A plan's read model: as of a past time, from the log (the plan's partition owner answers it
/// from its cache, as a single node does); otherwise from the read model's projector.
async fn plan_read_model(
    State(node): State<Arc<Node>>,
    Path(plan_id): Path<String>,
    request: Request,
) -> Response {
    let as_of = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .any(|pair| pair == "as_of" || pair.starts_with("as_of="));
    if as_of {
        plan_request(State(node), Path(plan_id), request).await
    } else {
        read_model_request(State(node), request).await
    }
}

/// A read-model route: forwarded over NATS to a projector of the read model (`planledger
/// projector --cluster`, which serves every partition's records from one database), whose
/// answer comes back unchanged.
async fn read_model_request(State(node): State<Arc<Node>>, request: Request) -> Response {
    let name = read_model_of(request.uri().path());
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, node.api.body_limit_bytes).await {
        Ok(body) => body,
        Err(_) => {
            return Problem(Refusal::body_too_large(node.api.body_limit_bytes)).into_response();
        }
    };
    let route = forwarded::projector_route(name);
    let why = match forward_http(&node, &route, &parts, body, false).await {
        Forwarded::Answer(response) => return response,
        Forwarded::NothingRan(_) => format!(
            "no projector of the {name} read model answers on this cluster's NATS: start `planledger projector --cluster --name {name} --nats URLS` (docs/operations.md, \"Projector services\")"
        ),
        Forwarded::Unknown(_) => format!(
            "the {name} read model's projector did not answer within {} ms",
            forward_timeout(&node).as_millis()
        ),
    };
    metrics::counter!("planledger_route_unavailable_total", "door" => "read_model").increment(1);
    Problem(Refusal::new(503, "read_model_unavailable", why).retry_after(1)).into_response()
}

/// A partition route (a page of `/v1/events?partition=P`, `/v1/audit/verify`, `/digest`,
/// `/keys`, `/checkpoint`, `/proof/…`) with `?partition=P`: the single-node endpoint of that
/// partition's log, run by its owner (so `/keys` names the keys that sign that partition's
/// digests and checkpoints: its owner's). Without the parameter there is no one log to answer
/// from: 400 naming the parameter and its range. `Accept: text/event-stream` changes nothing.
pub(super) async fn partition_request(State(node): State<Arc<Node>>, request: Request) -> Response {
    let query = request.uri().query().unwrap_or("");
    let mut partition = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("partition", value)) => partition = Some(value.to_string()),
            _ => rest.push(pair),
        }
    }
    let count = node.count.get();
    // Asked for as server-sent events too: these routes have no live form, and the owner's
    // single-node endpoint answers its JSON whatever the request accepts, as a single node does.
    let Some(raw) = partition else {
        return Problem(
            Refusal::new(
                400,
                "partition_required",
                format!(
                    "{} answers for one partition's log on a cluster node: add ?partition=P with P from 0 to {} (each partition's log has its own chain, tree and signer)",
                    request.uri().path(),
                    count - 1
                ),
            )
            .with_field("partition", format!("0 to {}", count - 1)),
        )
        .into_response();
    };
    let partition = match raw.parse::<u32>() {
        Ok(p) if p < count => p,
        _ => {
            return Problem(
                Refusal::new(
                    400,
                    "invalid_query",
                    format!(
                        "partition={raw:?} is not a partition of this cluster: use 0 to {}",
                        count - 1
                    ),
                )
                .with_field("partition", format!("0 to {}", count - 1)),
            )
            .into_response();
        }
    };
    // The partition's own router does not know the parameter.
    let path = request.uri().path().to_string();
    let local_uri = if rest.is_empty() {
        path
    } else {
        format!("{path}?{}", rest.join("&"))
    };
    dispatch(&node, partition, request, Some(local_uri)).await
}

/// Runs `request` for `partition`: through the partition's router when it is served here
/// (with `local_uri` instead of the request's URI when given), else forwarded to its owner.
async fn dispatch(
    node: &Arc<Node>,
    partition: u32,
    request: Request,
    local_uri: Option<String>,
) -> Response {
    // Set only by `run_forwarded_http` (a request extension, which a client cannot send).
    let forwarded = request.extensions().get::<ForwardedMark>().is_some();
    let is_command = request.method() == Method::POST;
    let (mut parts, body) = request.into_parts();
    // The outer router's path parameters must not reach the partition's router.
    parts.extensions = axum::http::Extensions::new();
    let body = match axum::body::to_bytes(body, node.api.body_limit_bytes).await {
        Ok(body) => body,
        Err(_) => {
            return Problem(Refusal::body_too_large(node.api.body_limit_bytes)).into_response();
        }
    };
    let mut last = unavailable(format!("partition {partition} has no owner right now"));
    for attempt in 0..FORWARD_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(150 * attempt as u64)).await;
        }
        match node.locate(partition) {
            Located::Local(served) => {
                let mut local = parts.clone();
                if let Some(uri) = local_uri.as_deref().and_then(|u| u.parse().ok()) {
                    local.uri = uri;
                }
                let request = Request::from_parts(local, Body::from(body.clone()));
                let response = match served.router.clone().oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                if response.status() == StatusCode::NOT_FOUND {
                    match served.is_behind(&node.client).await {
                        Ok(false) => {}
                        Ok(true) => return Problem(behind(node, served).await).into_response(),
                        Err(error) => {
                            return Problem(unavailable(format!(
                                "partition {partition}'s stream cannot be asked whether this node's cache is current ({error}); retry"
                            )))
                            .into_response();
                        }
                    }
                }
                return response;
            }
            Located::Remote { .. } if forwarded => {
                return Problem(not_owner(partition)).into_response();
            }
            Located::Remote { route, .. } => {
                match forward_http(node, &route, &parts, body.clone(), is_command).await {
                    Forwarded::Answer(response) => return response,
                    Forwarded::NothingRan(refusal) => last = refusal,
                    Forwarded::Unknown(refusal) => return Problem(refusal).into_response(),
                }
            }
            Located::Unavailable { .. } if forwarded => {
                return Problem(not_owner(partition)).into_response();
            }
            Located::Unavailable { why, .. } => last = unavailable(why),
        }
    }
    metrics::counter!("planledger_route_unavailable_total", "door" => "http").increment(1);
    Problem(last).into_response()
}

/// A "does not exist" answered from a cache that is behind its stream is not an answer: the
/// cache is opened again (catching up) and the caller asked to retry.
async fn behind(node: &Arc<Node>, served: Arc<super::partition::Served>) -> Refusal {
    let partition = served.partition;
    drop(served);
    let node = node.clone();
    tokio::spawn(async move { super::leases::reopen(&node, partition).await });
    unavailable(format!(
        "partition {partition}'s cache on this node is behind its stream (a previous owner's last commit landed after the takeover); it is catching up"
    ))
}

/// What a forward came to.
enum Forwarded<T> {
    /// The owner's answer.
    Answer(T),
    /// Nothing ran (no responders, `not_owner`): look the owner up again.
    NothingRan(Refusal),
    /// No answer in time: a command may have run.
    Unknown(Refusal),
}

/// The refusal for a forward that got no answer in time.
fn no_answer(partition_route: &str, is_command: bool, timeout: Duration) -> Refusal {
    if is_command {
        Refusal::new(
            503,
            "log_outcome_unknown",
            format!(
                "the partition's owner did not answer within {} ms, so the command may or may not have been stored; send it again with the same Idempotency-Key",
                timeout.as_millis()
            ),
        )
        .retry_after(1)
    } else {
        tracing::debug!(route = partition_route, "a forwarded read got no answer");
        unavailable(format!(
            "the partition's owner did not answer within {} ms",
            timeout.as_millis()
        ))
    }
}

/// Sends a forwarded request to an owner and waits (bounded) for its answer, timing it in
/// `planledger_route_forward_seconds{door}`.
async fn send_forward(
    node: &Node,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
    door: &'static str,
) -> Result<async_nats::Message, async_nats::RequestError> {
    let started = std::time::Instant::now();
    let answer = node
        .client
        .send_request(
            subject,
            async_nats::Request::new()
                .headers(headers)
                .payload(payload)
                .timeout(Some(forward_timeout(node))),
        )
        .await;
    metrics::histogram!("planledger_route_forward_seconds", "door" => door)
        .record(started.elapsed().as_secs_f64());
    answer
}

/// How long a forwarded request may take: a commit's own bound plus a second.
fn forward_timeout(node: &Node) -> Duration {
    (node.commit_timeout + Duration::from_secs(1)).max(node.api.request_timeout)
}

async fn forward_http(
    node: &Arc<Node>,
    route: &str,
    parts: &axum::http::request::Parts,
    body: Bytes,
    is_command: bool,
) -> Forwarded<Response> {
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || name == header::TE
            || name == header::UPGRADE
            || name.as_str().starts_with("planledger-http-")
            || name.as_str() == "planledger-forwarded"
            || name.as_str() == "planledger-not-owner"
        {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            async_nats::HeaderName::from_str(name.as_str()),
            value.to_str(),
        ) else {
            continue;
        };
        if value.contains(['\r', '\n']) {
            continue;
        }
        headers.append(name, value);
    }
    headers.insert(HEADER_METHOD, parts.method.as_str());
    headers.insert(
        HEADER_URI,
        parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
    );
    headers.insert(HEADER_FORWARDED, node.instance_id.as_str());
    let max_payload = node.client.server_info().max_payload;
    if body.len() + NATS_HEADROOM > max_payload {
        // Refused before anything is sent: nothing ran.
        return Forwarded::Answer(
            Problem(Refusal::new(
                413,
                "body_too_large",
                format!(
                    "the body ({} bytes) is larger than a forwarded request can carry (the NATS server's max_payload is {max_payload} bytes); send it to the node that owns the plan's partition (`planledger cluster status`), or raise max_payload",
                    body.len()
                ),
            ))
            .into_response(),
        );
    }
    let timeout = forward_timeout(node);
    let answer = send_forward(node, format!("{route}.http"), headers, body, "http").await;
    let message = match answer {
        Ok(message) => message,
        Err(error) if error.kind() == RequestErrorKind::NoResponders => {
            return Forwarded::NothingRan(unavailable(
                "the partition's owner is not reachable (no responders)",
            ));
        }
        Err(error) if error.kind() == RequestErrorKind::TimedOut => {
            return Forwarded::Unknown(no_answer(route, is_command, timeout));
        }
        Err(error) => {
            // The request may or may not have been sent.
            tracing::warn!(%error, "forwarding a request failed");
            return Forwarded::Unknown(no_answer(route, is_command, timeout));
        }
    };
    let mut response = Response::new(Body::from(message.payload));
    // An answer without a status is not an owner's answer.
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    let mut refused_not_owner = false;
    if let Some(headers) = &message.headers {
        for (name, values) in headers.iter() {
            let name: &str = name.as_ref();
            if name.eq_ignore_ascii_case(HEADER_STATUS) {
                if let Some(status) = values
                    .first()
                    .and_then(|v| v.as_str().parse::<u16>().ok())
                    .and_then(|s| StatusCode::from_u16(s).ok())
                {
                    *response.status_mut() = status;
                }
                continue;
            }
            if name.eq_ignore_ascii_case(HEADER_NOT_OWNER) {
                refused_not_owner = true;
                continue;
            }
            let Ok(name) = axum::http::HeaderName::from_str(name) else {
                continue;
            };
            for value in values {
                if let Ok(value) = HeaderValue::from_str(value.as_str()) {
                    response.headers_mut().append(name.clone(), value);
                }
            }
        }
    }
    if refused_not_owner {
        return Forwarded::NothingRan(unavailable(
            "the partition moved while the request was forwarded",
        ));
    }
    Forwarded::Answer(response)
}

/// Serves requests other nodes forward to this one (`planledger.node.<instance>.>`).
pub(super) async fn serve_forwarded(node: Arc<Node>) {
    let subject = format!("{}.>", node.route);
    let mut subscriber = match node.client.subscribe(subject.clone()).await {
        Ok(subscriber) => subscriber,
        Err(error) => {
            tracing::error!(%error, subject, "cannot serve forwarded requests");
            return;
        }
    };
    let http_subject = format!("{}.http", node.route);
    let cmd_prefix = format!("{}.cmd.", node.route);
    loop {
        let message = tokio::select! {
            () = node.shutdown.cancelled() => break,
            message = subscriber.next() => message,
        };
        let Some(message) = message else { break };
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        let node = node.clone();
        let http_subject = http_subject.clone();
        let cmd_prefix = cmd_prefix.clone();
        tokio::spawn(async move {
            let subject = message.subject.as_str();
            let (headers, payload) = if subject == http_subject {
                run_forwarded_http(&node, message.headers.as_ref(), message.payload).await
            } else if let Some(rest) = subject.strip_prefix(cmd_prefix.as_str()) {
                let public = format!("{}.{rest}", subjects::COMMAND_SUBJECT_PREFIX);
                run_command_here(
                    &node,
                    &public,
                    message.headers.as_ref(),
                    &message.payload,
                    true,
                )
                .await
            } else {
                return;
            };
            if let Err(error) = node
                .client
                .publish_with_headers(reply_to, headers, payload)
                .await
            {
                tracing::warn!(%error, "could not answer a forwarded request");
            }
        });
    }
    let _ = subscriber.unsubscribe().await;
}

/// Runs a forwarded HTTP request through this node's router (marked forwarded, so it is run
/// only for a partition served here) and encodes the answer as a reply message.
async fn run_forwarded_http(
    node: &Arc<Node>,
    headers: Option<&HeaderMap>,
    payload: Bytes,
) -> (HeaderMap, Bytes) {
    let response = match forwarded::request(headers, payload) {
        Ok(mut request) => {
            request.extensions_mut().insert(ForwardedMark);
            match node.router.get() {
                Some(router) => match router.clone().oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
                None => Problem(unavailable("the node is starting")).into_response(),
            }
        }
        Err(refusal) => Problem(refusal).into_response(),
    };
    forwarded::reply(response, node.client.server_info().max_payload).await
}

/// A command on the public NATS subject, or forwarded to this node (`forwarded`): run it here
/// when its partition is served here; otherwise forward it (public) or refuse `not_owner`.
async fn run_command_here(
    node: &Arc<Node>,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &Bytes,
    forwarded: bool,
) -> (HeaderMap, Bytes) {
    let Some((tenant, plan)) = subjects::parse_command_subject(subject) else {
        return planledger_bus::reply_message(&refusal_reply(
            Refusal::new(
                400,
                "invalid_subject",
                format!(
                    "{subject:?} is not a command subject; send to {}.<tenant>.<plan_id>",
                    subjects::COMMAND_SUBJECT_PREFIX
                ),
            )
            .with_field("subject", "expected planledger.cmd.<tenant>.<plan_id>"),
        ));
    };
    let partition = match node.partition_of(&tenant, &plan) {
        Ok(partition) => partition,
        Err(refusal) => return planledger_bus::reply_message(&refusal_reply(refusal)),
    };
    let mut last = unavailable(format!("partition {partition} has no owner right now"));
    for attempt in 0..FORWARD_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(150 * attempt as u64)).await;
        }
        match node.locate(partition) {
            Located::Local(served) => {
                let reply = served.ingress.handle(subject, headers, payload).await;
                let not_found = matches!(&reply.outcome, Some(command_reply::Outcome::Problem(p)) if p.status == 404);
                if not_found {
                    match served.is_behind(&node.client).await {
                        Ok(false) => {}
                        Ok(true) => {
                            return planledger_bus::reply_message(&refusal_reply(
                                behind(node, served).await,
                            ));
                        }
                        Err(error) => {
                            return planledger_bus::reply_message(&refusal_reply(unavailable(
                                format!(
                                    "partition {partition}'s stream cannot be asked whether this node's cache is current ({error}); retry"
                                ),
                            )));
                        }
                    }
                }
                return planledger_bus::reply_message(&reply);
            }
            Located::Remote { .. } | Located::Unavailable { .. } if forwarded => {
                return planledger_bus::reply_message(&refusal_reply(not_owner(partition)));
            }
            Located::Remote { route, .. } => {
                match forward_command(node, &route, subject, headers, payload.clone()).await {
                    Forwarded::Answer(answer) => return answer,
                    Forwarded::NothingRan(refusal) => last = refusal,
                    Forwarded::Unknown(refusal) => {
                        return planledger_bus::reply_message(&refusal_reply(refusal));
                    }
                }
            }
            Located::Unavailable { why, .. } => last = unavailable(why),
        }
    }
    metrics::counter!("planledger_route_unavailable_total", "door" => "nats").increment(1);
    planledger_bus::reply_message(&refusal_reply(last))
}

async fn forward_command(
    node: &Arc<Node>,
    route: &str,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: Bytes,
) -> Forwarded<(HeaderMap, Bytes)> {
    let rest = subject
        .strip_prefix(subjects::COMMAND_SUBJECT_PREFIX)
        .unwrap_or(subject);
    let mut forwarded = headers.cloned().unwrap_or_default();
    forwarded.insert(HEADER_FORWARDED, node.instance_id.as_str());
    let timeout = forward_timeout(node);
    let answer = send_forward(
        node,
        format!("{route}.cmd{rest}"),
        forwarded,
        payload,
        "nats",
    )
    .await;
    match answer {
        Ok(message) => {
            let not_owner = CommandReply::decode(message.payload.as_ref()).is_ok_and(|reply| {
                matches!(reply.outcome, Some(command_reply::Outcome::Problem(ref p)) if p.r#type.ends_with("/not_owner"))
            });
            if not_owner {
                return Forwarded::NothingRan(unavailable(
                    "the partition moved while the command was forwarded",
                ));
            }
            Forwarded::Answer((message.headers.unwrap_or_default(), message.payload))
        }
        Err(error) if error.kind() == RequestErrorKind::NoResponders => Forwarded::NothingRan(
            unavailable("the partition's owner is not reachable (no responders)"),
        ),
        Err(error) => {
            tracing::warn!(%error, "forwarding a command failed");
            Forwarded::Unknown(no_answer(route, true, timeout))
        }
    }
}

/// Serves the public NATS command subject in the nodes' queue group, reconnecting until
/// shutdown.
pub(super) async fn serve_public_commands(node: Arc<Node>) {
    let subject = format!("{}.>", subjects::COMMAND_SUBJECT_PREFIX);
    let mut subscriber = match node
        .client
        .queue_subscribe(subject.clone(), COMMAND_QUEUE_GROUP.to_string())
        .await
    {
        Ok(subscriber) => subscriber,
        Err(error) => {
            tracing::error!(%error, subject, "cannot serve commands over NATS");
            return;
        }
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(1024));
    loop {
        let message = tokio::select! {
            () = node.shutdown.cancelled() => break,
            message = subscriber.next() => message,
        };
        let Some(message) = message else { break };
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let (headers, payload) = run_command_here(
                &node,
                message.subject.as_str(),
                message.headers.as_ref(),
                &message.payload,
                false,
            )
            .await;
            if let Err(error) = node
                .client
                .publish_with_headers(reply_to, headers, payload)
                .await
            {
                tracing::warn!(%error, "could not send a command reply");
            }
            drop(permit);
        });
    }
    let _ = subscriber.unsubscribe().await;
    // Wait for the commands in flight to be answered.
    let _ = permits.acquire_many(1024).await;
}
