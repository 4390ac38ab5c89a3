//! A small HTTP client for the suites that drive the service's API: run a command, read a route,
//! and seed a plan with a known history.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::server::Planledger;

/// An HTTP client with the few calls the read-model suites need.
#[derive(Clone, Debug, Default)]
pub struct Client {
    http: reqwest::Client,
}

impl Client {
    /// A client with its own connection pool (make a new one after the server was killed).
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs a command on `plan` and returns the log position it reached; panics on any error.
    pub async fn command(&self, server: &Planledger, token: &str, plan: &str, body: Value) -> u64 {
        let response = self
            .http
            .post(server.url(&format!("/v1/plans/{plan}/commands")))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("the command request is sent");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::OK, "command failed: {body}");
        body["position"]
            .as_u64()
            .expect("the command's answer carries its position")
    }

    /// `POST {base}{path}` with an empty body and the bearer token: the status and JSON body.
    pub async fn post(&self, base: &str, token: &str, path: &str) -> (StatusCode, Value) {
        answer(self.http.post(format!("{base}{path}")).bearer_auth(token)).await
    }

    /// `GET {base}{path}` with the bearer token: the status and the JSON body (null if none).
    pub async fn get(&self, base: &str, token: &str, path: &str) -> (StatusCode, Value) {
        answer(self.http.get(format!("{base}{path}")).bearer_auth(token)).await
    }
}

/// The service's `/metrics` text.
pub async fn metrics(server: &Planledger) -> String {
    reqwest::get(server.url("/metrics"))
        .await
        .expect("the metrics request is sent")
        .text()
        .await
        .expect("the metrics are text")
}

/// `GET /readyz` (no token needed): the status and the readiness body, which is JSON whatever
/// the service's state.
pub async fn readyz(server: &Planledger) -> (StatusCode, Value) {
    let response = reqwest::get(server.url("/readyz"))
        .await
        .expect("the readiness request is sent");
    let status = response.status();
    (status, response.json().await.expect("/readyz answers JSON"))
}

/// Sends `request`: the status and the JSON body (null if none).
async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("the request is sent");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Today plus `days`, as a civil date in UTC (`YYYY-MM-DD`).
pub fn today_plus(days: i64) -> String {
    let instant = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * days);
    instant.strftime("%Y-%m-%d").to_string()
}

/// Creates `plan` with one KPI goal `signups` (100 -> 200, due in 30 days) owned by `owner`
/// (accountable), a baseline, and one check-in at 150; returns the last position.
pub async fn seed_plan(
    server: &Planledger,
    client: &Client,
    token: &str,
    plan: &str,
    owner: &str,
) -> u64 {
    let commands = [
        json!({"type": "CreatePlan", "data": {
            "title": "Q plan", "starts_on": today_plus(-14), "ends_on": today_plus(60),
            "checkin_cadence_days": 7}}),
        json!({"type": "DefineGoal", "data": {
            "goal_id": "signups", "title": "Signups", "due": today_plus(30),
            "kpi": {"unit": "users", "baseline": 100.0, "target": 200.0, "direction": "increase"}}}),
        json!({"type": "AssignRole", "data": {
            "person": owner, "role": "accountable", "goal_id": "signups"}}),
        json!({"type": "SetBaseline", "data": {"label": "v1"}}),
        json!({"type": "RecordCheckIn", "data": {
            "goal_id": "signups", "value": 150.0, "confidence": 0.7, "status": "on_track"}}),
    ];
    let mut position = 0;
    for body in commands {
        position = client.command(server, token, plan, body).await;
    }
    position
}
