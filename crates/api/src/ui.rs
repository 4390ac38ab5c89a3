//! `GET /ui`: the web dashboard, a few static files compiled into the binary.
//!
//! The page renders the answers of the `/v1` API and nothing else: every figure it shows comes
//! from a read model or the log. Its Content-Security-Policy allows only this origin, so the page
//! cannot load or send anything elsewhere.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Serialize;

use crate::Problem;

/// The dashboard's files: name, content type, bytes.
pub const UI_ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/api.js"),
    ),
    (
        "chart.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/chart.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../ui/app.css"),
    ),
];

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// What the page needs to know of the deployment that serves it (`GET /ui/config.json`): which
/// form of `GET /v1/events` to follow, and which position read-your-writes waits for.
#[derive(Clone, Copy, Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum UiConfig {
    /// One log: positions, `?min_position=`.
    Single,
    /// A cluster's writer node: the tenant-wide feed with its vector cursor, `?bookmark=`.
    Cluster {
        /// The cluster's partition count.
        #[schema(minimum = 1)]
        partitions: u32,
    },
}

/// The dashboard's routes: `/ui`, `/ui/`, `/ui/{file}` and `/ui/config.json`.
pub fn routes<S: Clone + Send + Sync + 'static>(config: UiConfig) -> Router<S> {
    let config = serde_json::to_string(&config).expect("the dashboard's settings serialize");
    Router::new()
        .route("/ui", get(ui_redirect))
        .route("/ui/", get(ui_index))
        .route("/ui/config.json", get(move || ui_config(config.clone())))
        .route("/ui/{file}", get(ui_file))
}

fn asset(name: &str) -> Response {
    let Some(&(_, content_type, body)) = UI_ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!("the dashboard has no file {name:?}; open /ui/"),
        )
        .into_response();
    };
    with_headers(body.into_response(), content_type)
}

/// A dashboard file's headers: its type, revalidation, and the page's security policy.
fn with_headers(mut response: Response, content_type: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Small files that change with the binary: revalidate instead of caching stale copies.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `GET /ui`: to `/ui/`, so the page's relative asset paths resolve under it.
#[utoipa::path(
    get,
    path = "/ui",
    operation_id = "dashboardRedirect",
    summary = "The web dashboard (redirects to /ui/)",
    security(()),
    responses((status = 308, description = "Redirect to /ui/")),
)]
pub(crate) async fn ui_redirect() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `GET /ui/`: the page.
#[utoipa::path(
    get,
    path = "/ui/",
    operation_id = "dashboard",
    summary = "The web dashboard's page (sign in with a token; it calls this API)",
    security(()),
    responses((status = 200, description = "The page", body = String, content_type = "text/html")),
)]
pub(crate) async fn ui_index() -> Response {
    asset("index.html")
}

/// `GET /ui/config.json`: the deployment's [`UiConfig`], rendered once when the routes are made.
#[utoipa::path(
    get,
    path = "/ui/config.json",
    operation_id = "dashboardConfig",
    summary = "What the dashboard needs to know of the deployment serving it: {\"mode\": \"single\"}, or on a cluster's writer node {\"mode\": \"cluster\", \"partitions\": N}",
    security(()),
    responses((status = 200, description = "The settings", body = UiConfig)),
)]
pub(crate) async fn ui_config(body: String) -> Response {
    with_headers(body.into_response(), "application/json")
}

/// `GET /ui/{file}`: one of its files.
#[utoipa::path(
    get,
    path = "/ui/{file}",
    operation_id = "dashboardFile",
    summary = "One of the dashboard's files (scripts, styles), embedded in the binary",
    security(()),
    params(("file" = String, Path, description = "The file's name")),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/javascript"),
            (String = "text/css"),
        )),
        (status = 404, description = "No such file", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn ui_file(Path(name): Path<String>) -> Response {
    asset(&name)
}
