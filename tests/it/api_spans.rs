//! The log's context for every request and command: one `http` span per request (method, path,
//! a well-formed W3C `traceparent` when sent) and one `command` span per command (command, plan,
//! tenant, and the command and correlation ids when given; a request the command door refuses,
//! such as one with a malformed command id, opens none). Fields a request did not carry are left out of the spans, not written as empty
//! strings. The router runs in-process on a real port, and a layer records every span's fields
//! as the log's formatter would receive them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use planledger_api::{ApiConfig, ApiState};
use planledger_app::{App, Authenticator, Role};
use planledger_store::{EventStore, StoreOptions};
use serde_json::json;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Every span's id, name and fields (including those recorded after it was created), in the
/// order the spans were created.
type SpanLog = Vec<(u64, String, BTreeMap<String, String>)>;

#[derive(Clone, Default)]
struct Spans(Arc<Mutex<SpanLog>>);

impl Spans {
    /// The fields of every span called `name`, oldest first.
    fn named(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        let spans = self.0.lock().expect("spans lock");
        spans
            .iter()
            .filter(|(_, span, _)| span == name)
            .map(|(_, _, fields)| fields.clone())
            .collect()
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: Context<'_, S>,
    ) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let name = attrs.metadata().name().to_string();
        let mut spans = self.0.lock().expect("spans lock");
        spans.push((id.into_u64(), name, fields));
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: Context<'_, S>,
    ) {
        // The newest span with this id: the ids of closed spans are reused.
        let mut spans = self.0.lock().expect("spans lock");
        if let Some((_, _, fields)) = spans.iter_mut().rev().find(|s| s.0 == id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
}

fn field<'a>(fields: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    fields.get(name).map(String::as_str)
}

// A current-thread runtime: the server's tasks run on the test's thread, where the recording
// subscriber is the default.
#[tokio::test(flavor = "current_thread")]
async fn requests_and_commands_get_spans_with_their_ids_and_nothing_empty() {
    let spans = Spans::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EventStore::open(dir.path().join("log"), StoreOptions::default()).expect("open");
    let auth = Authenticator::from_data_dir(dir.path()).expect("signing key");
    let token = auth
        .issue(
            "ana",
            "acme",
            vec![Role::Planner],
            jiff::Timestamp::now(),
            600,
        )
        .expect("token");
    let router = planledger_api::router(ApiState::new(App::new(store, auth), ApiConfig::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router).await });

    let http = reqwest::Client::new();
    let create = |plan: &str| {
        http.post(format!("http://{addr}/v1/plans/{plan}/commands"))
            .bearer_auth(&token)
            .json(&json!({"type": "CreatePlan", "data": {"title": "q3",
                "starts_on": "2026-07-01", "ends_on": "2026-09-30", "checkin_cadence_days": 7}}))
    };
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let with_ids = create("with-ids")
        .header("traceparent", traceparent)
        .header("Idempotency-Key", "cmd-1")
        .header("X-Correlation-Id", "corr-1")
        .send()
        .await
        .expect("request sent");
    assert!(with_ids.status().is_success(), "{}", with_ids.status());
    let without = create("without-ids").send().await.expect("request sent");
    assert!(without.status().is_success(), "{}", without.status());
    let malformed = create("malformed-trace")
        .header("traceparent", "not-a-trace-context")
        .send()
        .await
        .expect("request sent");
    assert_eq!(
        malformed.status(),
        400,
        "a malformed traceparent is refused, not stored"
    );
    let refused_key = format!("bad key {}", "x".repeat(300));
    let refused = create("refused-key")
        .header("Idempotency-Key", &refused_key)
        .send()
        .await
        .expect("request sent");
    assert_eq!(
        refused.status(),
        400,
        "an invalid Idempotency-Key is refused"
    );

    let requests = spans.named("http");
    assert_eq!(requests.len(), 4, "one span per request: {requests:?}");
    assert_eq!(field(&requests[0], "method"), Some("POST"));
    assert_eq!(
        field(&requests[0], "path"),
        Some("/v1/plans/with-ids/commands")
    );
    assert_eq!(field(&requests[0], "traceparent"), Some(traceparent));
    assert_eq!(
        field(&requests[1], "path"),
        Some("/v1/plans/without-ids/commands")
    );
    assert_eq!(field(&requests[1], "traceparent"), None);
    assert_eq!(
        field(&requests[2], "traceparent"),
        None,
        "a malformed traceparent is not logged"
    );

    let commands = spans.named("command");
    assert_eq!(
        commands.len(),
        2,
        "one span per command the door lets through (a malformed traceparent or command id is refused before the command path): {commands:?}"
    );
    assert_eq!(field(&commands[0], "command"), Some("CreatePlan"));
    assert_eq!(field(&commands[0], "plan_id"), Some("with-ids"));
    assert_eq!(field(&commands[0], "tenant"), Some("acme"));
    assert_eq!(field(&commands[0], "command_id"), Some("cmd-1"));
    assert_eq!(field(&commands[0], "correlation_id"), Some("corr-1"));
    assert_eq!(field(&commands[1], "plan_id"), Some("without-ids"));
    assert_eq!(field(&commands[1], "command_id"), None);
    assert_eq!(field(&commands[1], "correlation_id"), None);
    assert!(
        commands
            .iter()
            .all(|span| field(span, "command_id") != Some(refused_key.as_str())),
        "a command id the request is refused for is not logged"
    );
}
