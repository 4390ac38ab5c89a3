//! The HTTP door (axum): commands, plan state and history, the global log, operations, and the
//! web dashboard at `/ui` (static files that only render API answers).
//!
//! It parses and checks requests (auth, limits, JSON shape), calls the application layer, and
//! turns results into JSON and errors into RFC 9457 problem+json. It holds no domain logic and
//! never touches RocksDB or NATS directly.

// Handlers return `Result<_, Problem>`; a problem is built only on the error path and becomes
// the response body, so boxing it would add indirection for nothing.
#![allow(clippy::result_large_err)]

mod audit;
mod auth;
mod commands;
mod connections;
mod events;
mod http_metrics;
mod openapi;
mod ops;
mod plans;
mod problem;
mod read_models;
mod ui;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use planledger_app::App;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

pub use auth::Caller;
pub use commands::parse_plan_id;
pub use connections::{ConnectionLimits, serve};
pub use openapi::{ApiDoc, document as openapi_document};
pub use ops::Readiness;
pub use planledger_app::{RateLimit, RateLimiter};
pub use plans::query_rejection;
pub use problem::{FieldError, Problem};
pub use read_models::{ReadModelState, projector_router};
pub use ui::{UI_ASSETS, UiConfig, routes as ui_routes};

/// Settings of the HTTP door.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// Longest a request may take before it is answered 503.
    pub request_timeout: Duration,
    /// Per-caller rate limit.
    pub rate_limit: RateLimit,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            rate_limit: RateLimit {
                per_second: 200.0,
                burst: 400.0,
            },
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    /// The application services.
    pub app: App,
    /// Settings.
    pub config: ApiConfig,
    /// Per-caller buckets.
    pub limiter: Arc<RateLimiter>,
    /// Components `/readyz` asks.
    pub readiness: Arc<Vec<Arc<dyn Readiness>>>,
    /// Renders `/metrics`, if a recorder is installed.
    pub prometheus: Option<PrometheusHandle>,
    /// Request counters and timers, registered once per route, method and status.
    pub http_metrics: Arc<http_metrics::HttpMetrics>,
    /// Cancelled when the service shuts down (ends live streams). Behind an `Arc` because axum
    /// clones the state for every request, and cloning a token takes a lock.
    pub shutdown: Arc<CancellationToken>,
}

/// The state the router holds: axum clones it for every request (and again for middleware), so
/// it is one reference count rather than a clone of every service handle in [`ApiState`].
pub type SharedState = Arc<ApiState>;

impl ApiState {
    /// State for a router over `app`.
    pub fn new(app: App, config: ApiConfig) -> Self {
        Self {
            limiter: Arc::new(RateLimiter::new(config.rate_limit)),
            app,
            config,
            readiness: Arc::new(Vec::new()),
            prometheus: None,
            http_metrics: Arc::default(),
            shutdown: Arc::new(CancellationToken::new()),
        }
    }
}

/// The `/v1` routes that need an authenticated caller, plus operations routes.
pub fn router(state: ApiState) -> Router {
    let state: SharedState = Arc::new(state);
    let body_limit = state.config.body_limit_bytes;
    Router::new()
        .route("/v1/plans/{plan_id}/commands", post(commands::post_command))
        .route("/v1/plans/{plan_id}", get(plans::get_plan))
        .route("/v1/plans/{plan_id}/events", get(plans::get_plan_events))
        .route("/v1/events", get(events::get_events))
        .route("/v1/audit/verify", get(audit::get_verify))
        .route("/v1/audit/digest", get(audit::get_digest))
        .route("/v1/audit/keys", get(audit::get_keys))
        .route("/v1/audit/checkpoint", get(audit::get_checkpoint))
        .route("/v1/audit/proof/inclusion", get(audit::get_inclusion_proof))
        .route(
            "/v1/audit/proof/consistency",
            get(audit::get_consistency_proof),
        )
        .merge(read_models::routes::<SharedState>())
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .merge(ui::routes(ui::UiConfig::Single))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                // `traceparent` only when a well-formed one was sent, as the events store it
                // (`None` leaves the field out; an empty string would still be formatted into
                // every request's span).
                tracing::info_span!(
                    "http",
                    method = %request.method(),
                    path = %request.uri().path(),
                    traceparent = request
                        .headers()
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .filter(|t| planledger_app::door::valid_traceparent(t)),
                )
            }),
        )
        .with_state(state)
}

async fn not_found() -> Problem {
    Problem::new(
        axum::http::StatusCode::NOT_FOUND,
        "no_route",
        "no such endpoint; see /openapi.json for the API",
    )
}

/// The path of the one route with a live form (server-sent events, as long as the client
/// listens), as routed in [`router`].
const LIVE_ROUTE: &str = "/v1/events";

/// Request metrics and the request timeout (answered as problem+json).
async fn observe(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    // Only the live log is exempt from the request timeout: the other routes have no live
    // form and answer `Accept: text/event-stream` as they answer without it, timeout included.
    let streaming = route.as_ref().is_some_and(|r| r.as_str() == LIVE_ROUTE)
        && request
            .headers()
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
    let response = if streaming {
        next.run(request).await
    } else {
        match tokio::time::timeout(state.config.request_timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => Problem::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the request took longer than {} ms; retry, and if it persists check the service's health",
                    state.config.request_timeout.as_millis()
                ),
            )
            .retry_after(1)
            .into_response(),
        }
    };
    state.http_metrics.record(
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
