//! `planledger_http_requests_total` and `planledger_http_request_seconds`, with the metric
//! handles of each (route, method, status) registered once: building the label strings and
//! looking them up in the recorder on every request cost more than the rest of the middleware.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::Method;
use metrics::{Counter, Histogram};

type Handles = (Counter, Histogram);

/// The handles of one route, by (method, status).
type RouteHandles = HashMap<(Method, u16), Handles>;

/// Metric handles by route, then by (method, status).
#[derive(Debug, Default)]
pub struct HttpMetrics {
    by_route: Mutex<HashMap<String, RouteHandles>>,
}

impl HttpMetrics {
    /// Counts one request and records its duration.
    pub fn record(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        let handles = {
            let mut by_route = self
                .by_route
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let per_route = match by_route.get_mut(route) {
                Some(per_route) => per_route,
                None => by_route.entry(route.to_string()).or_default(),
            };
            per_route
                .entry((method.clone(), status))
                .or_insert_with(|| register(route, method, status))
                .clone()
        };
        handles.0.increment(1);
        handles.1.record(elapsed.as_secs_f64());
    }
}

fn register(route: &str, method: &Method, status: u16) -> Handles {
    let counter = metrics::counter!(
        "planledger_http_requests_total",
        "method" => method.to_string(),
        "route" => route.to_string(),
        "status" => status.to_string()
    );
    let histogram = metrics::histogram!(
        "planledger_http_request_seconds",
        "method" => method.to_string(),
        "route" => route.to_string()
    );
    (counter, histogram)
}
