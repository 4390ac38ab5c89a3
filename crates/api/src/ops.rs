//! Operational endpoints: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use planledger_store::LogHealth;
use serde_json::json;

use crate::SharedState;

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    summary = "Liveness",
    security(()),
    responses((status = 200, description = "Alive", body = Object, example = json!({"status": "ok"}))),
)]
pub async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// Readiness: the log is open and every registered component reports ready.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    summary = "Readiness with component detail",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Object),
        (status = 503, description = "Not ready: a component is not; components.log carries state, reason, detail and restart_required when the log cannot take writes (storage_full, write_failed)", body = Object),
    ),
)]
pub async fn readyz(State(state): State<SharedState>) -> Response {
    let mut ready = !state.shutdown.is_cancelled();
    let mut components = serde_json::Map::new();
    // Reads keep working whatever the log's state; only commands need it writable.
    let health = state.app.store.health();
    let writable = health == LogHealth::Writable;
    ready &= writable;
    let mut log = json!({
        "ready": writable,
        "state": health.code(),
        "last_position": state.app.store.last_position().get(),
    });
    if let Some(detail) = health.detail() {
        log["reason"] = json!(health.code());
        log["detail"] = json!(detail);
        log["restart_required"] = json!(health.restart_required());
    }
    components.insert("log".into(), log);
    for check in state.readiness.iter() {
        let (name, ok, detail) = check.report();
        ready &= ok;
        components.insert(name.to_string(), json!({ "ready": ok, "detail": detail }));
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({ "ready": ready, "components": components })),
    )
        .into_response()
}

/// Prometheus text exposition of every metric.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    security(()),
    responses((status = 200, description = "Text exposition", body = String, content_type = "text/plain")),
)]
pub async fn metrics(State(state): State<SharedState>) -> Response {
    match &state.prometheus {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}

/// The OpenAPI 3.1 document, generated from the code ([`crate::openapi`]).
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    summary = "This document",
    security(()),
    responses((status = 200, description = "OpenAPI 3.1", body = Object)),
)]
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document(),
    )
        .into_response()
}

/// A component that can tell whether it is ready (the relay, a projector).
pub trait Readiness: Send + Sync {
    /// Name, readiness, and detail for `/readyz`.
    fn report(&self) -> (&'static str, bool, serde_json::Value);
}
