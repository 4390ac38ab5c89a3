//! The OpenAPI 3.1 document, generated from the code: every operation from the `#[utoipa::path]`
//! attribute on its handler, every schema from the request, answer and problem types (their
//! serde attributes and doc comments), so the document cannot drift from what the service
//! parses and sends. Served at `GET /openapi.json`; `planledger openapi` prints it.
//!
//! What the handlers share is written once here: the refusals every authenticated route can
//! answer, the read-your-writes parameters, the bearer scheme, and the 414/431 the HTTP layer
//! answers before any route runs.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, ObjectBuilder, Ref, RefOr, Required, Response, ResponseBuilder, Type,
};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi};

use crate::{audit, commands, events, ops, plans, read_models, ui};

/// The generated document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Planledger API",
        version = "1.0.0",
        description = "Event-sourced plans: commands, history, read models. Errors are RFC 9457 problem+json.",
    ),
    servers((url = "http://127.0.0.1:8080")),
    security(("bearer" = [])),
    paths(
        read_models::get_plans,
        commands::post_command,
        plans::get_plan,
        plans::get_plan_events,
        events::get_events,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi,
        ui::ui_redirect,
        ui::ui_index,
        ui::ui_config,
        ui::ui_file,
        read_models::get_progress,
        read_models::get_history,
        read_models::get_accountability,
        read_models::get_agility,
        read_models::get_drift,
        read_models::get_restatements,
        read_models::get_person_accountability,
        read_models::get_projections,
        read_models::post_rebuild,
        read_models::post_quarantine,
        audit::get_verify,
        audit::get_digest,
        audit::get_keys,
        audit::get_checkpoint,
        audit::get_inclusion_proof,
        audit::get_consistency_proof,
    ),
    components(schemas(
        crate::problem::ProblemBody,
        planledger_domain::Command,
        EventType,
        crate::events::LogPageResponse,
        FeedPage,
    )),
    modifiers(&Bearer, &TransportLimits),
)]
pub struct ApiDoc;

/// The document as served, rendered once.
pub fn document() -> &'static str {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes")
    });
    &DOCUMENT
}

/// The bearer scheme every `/v1` route requires.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT with claims sub, tenant, roles and exp: HS256 from `planledger token issue`, or RS256/EdDSA from the configured OpenID Connect provider (its JWKS; iss and aud checked when configured). Each key verifies one algorithm only; alg none is refused. Every refusal is 401 invalid_token with a detail naming the failed check.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The refusals the HTTP layer answers before any route runs, on every operation.
struct TransportLimits;

impl Modify for TransportLimits {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.responses.insert(
            "UriTooLong".into(),
            RefOr::T(
                ResponseBuilder::new()
                    .description("The request's target is longer than 65,534 bytes: refused by the HTTP layer before any route, without a body")
                    .build(),
            ),
        );
        components.responses.insert(
            "HeadersTooLarge".into(),
            RefOr::T(
                ResponseBuilder::new()
                    .description("The request line and headers are larger than the HTTP layer reads (about 400 KiB): refused before any route, without a body")
                    .build(),
            ),
        );
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                let responses = &mut operation.responses.responses;
                responses.insert(
                    "414".into(),
                    RefOr::Ref(Ref::new("#/components/responses/UriTooLong")),
                );
                responses.insert(
                    "431".into(),
                    RefOr::Ref(Ref::new("#/components/responses/HeadersTooLarge")),
                );
            }
        }
    }
}

/// A problem+json answer with `description`.
pub(crate) fn problem(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build(),
    )
}

fn responses<const N: usize>(list: [(&str, &str); N]) -> BTreeMap<String, RefOr<Response>> {
    list.into_iter()
        .map(|(status, description)| (status.to_string(), problem(description)))
        .collect()
}

/// What every authenticated route can refuse: 401, 403 and 429.
pub(crate) struct AuthRefusals;

impl IntoResponses for AuthRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([
            ("401", "Missing or invalid token"),
            ("403", "Role does not allow this"),
            ("429", "Rate limited (see Retry-After)"),
        ])
    }
}

/// What an audit route can refuse besides [`AuthRefusals`].
pub(crate) struct AuditRefusals;

impl IntoResponses for AuditRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([
            (
                "400",
                "A parameter out of range or a query parameter this route does not take (named in errors[0].field; a single node takes no partition: it has one log); cluster mode: partition_required without ?partition=P (one partition's log is served per request), invalid_query for a partition outside 0 to count - 1",
            ),
            ("503", "Timed out"),
        ])
    }
}

/// What a read-model query can refuse besides [`AuthRefusals`].
pub(crate) struct ReadModelRefusals;

impl IntoResponses for ReadModelRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([
            ("400", "Invalid input (field-level detail)"),
            ("404", "No such plan for this tenant"),
            (
                "503",
                "Not caught up to min_position, or timed out; read_model_unavailable (cluster mode: a writer node passes the read to a projector of the read model over NATS, and none answered; start `planledger projector --cluster --name NAME`; as_of reads come from the log and need none)",
            ),
        ])
    }
}

/// What a projector operation can refuse besides [`AuthRefusals`].
pub(crate) struct ProjectorRefusals;

impl IntoResponses for ProjectorRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([
            ("400", "Invalid input"),
            (
                "404",
                "No such projection in this process, or it is not running",
            ),
            ("503", "Not caught up to min_position, or timed out"),
            (
                "501",
                "Cluster mode: not_in_cluster_mode (a writer node does not serve a projector's status and operations; `planledger projector --cluster --http ADDR` does)",
            ),
        ])
    }
}

/// A plan id in the path.
pub(crate) struct PlanIdPath;

impl IntoParams for PlanIdPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![id_param("plan_id", ParameterIn::Path, "The plan's id")]
    }
}

/// `?min_position=` and `?bookmark=`: what a read-model query must reflect before it answers.
pub(crate) struct ReadAfterParams;

impl IntoParams for ReadAfterParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("min_position")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(
                    "Single-node mode: wait (up to 5 s) until the read model has applied this position; a position beyond the end of the log is refused with 400 (cluster mode: 400, use bookmark)",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::UInt64,
                        )))
                        .minimum(Some(0)),
                ))
                .build(),
            ParameterBuilder::new()
                .name("bookmark")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(
                    "Wait (up to 5 s) until the read model reflects this bookmark (the `bookmark` of a command's answer; both modes). Malformed: 400. Not with min_position.",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(131_072)),
                ))
                .build(),
        ]
    }
}

/// An optional id-shaped query parameter or a required id-shaped path parameter.
fn id_param(name: &str, at: ParameterIn, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(at.clone())
        .required(if at == ParameterIn::Path {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(planledger_domain::id::id_schema()))
        .build()
}

/// `?as_of=`: a read model's figures as of a time, from history.
pub(crate) struct AsOfParam;

impl IntoParams for AsOfParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("as_of")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some("Figures as of this time (RFC 3339), from history"))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String).format(
                    Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::DateTime,
                    )),
                )))
                .build(),
        ]
    }
}

/// `?baseline=`: the baseline a figure compares with.
pub(crate) struct BaselineParam;

impl IntoParams for BaselineParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![id_param(
            "baseline",
            ParameterIn::Query,
            "Baseline to compare with (default: the first one)",
        )]
    }
}

/// `?after=`: where a page of the plans list continues.
pub(crate) struct AfterParam;

impl IntoParams for AfterParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![id_param(
            "after",
            ParameterIn::Query,
            "Continue after this plan id (the previous page's next_after)",
        )]
    }
}

/// A person (a token subject) in the path.
pub(crate) struct PersonPath;

impl IntoParams for PersonPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![id_param(
            "person",
            ParameterIn::Path,
            "The person (a token subject)",
        )]
    }
}

/// What a plan's state and events can refuse besides [`AuthRefusals`].
pub(crate) struct PlanRefusals;

impl IntoResponses for PlanRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([
            ("404", "No such plan for this tenant"),
            (
                "503",
                "Timed out or not caught up; partition_unavailable (cluster mode: no node serves the plan's partition right now; retry after Retry-After)",
            ),
        ])
    }
}

/// `?partition=`: which partition's log an audit or event read is about (cluster mode).
pub(crate) struct PartitionParam;

impl IntoParams for PartitionParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("partition")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(
                    "Cluster mode (writer nodes): the partition whose log to read, 0 to the cluster's count - 1; required there (without it: 400 partition_required naming the range). Not accepted by a single node.",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::Int32,
                        )))
                        .minimum(Some(0))
                        .maximum(Some(planledger_store::MAX_PARTITIONS - 1)),
                ))
                .build(),
        ]
    }
}

/// An event type name, as `?type=` takes it: one of the domain's event types.
pub(crate) struct EventType;

impl utoipa::PartialSchema for EventType {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(
                planledger_domain::Event::TYPES
                    .iter()
                    .map(|(name, _)| *name),
            ))
            .into()
    }
}

impl utoipa::ToSchema for EventType {}

/// Cluster mode: a page of the tenant-wide feed, every partition merged. A writer node renders
/// it (the node's feed module); this type is its schema.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct FeedPage {
    /// Envelopes, each with its partition first, merged by recorded_at (each partition in
    /// position order).
    #[schema(value_type = Vec<Object>)]
    events: Vec<serde_json::Value>,
    /// Pass as `?cursor=` for the next page.
    next_cursor: String,
    /// Whether every partition was read to its end.
    at_end: bool,
    /// The cursor at every partition's last position, read before the page: a live feed from
    /// it delivers only what is committed after.
    last_cursor: String,
}

/// The JSON answer of `GET /v1/events`: a page of one log, or of the tenant-wide feed.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub(crate) enum LogOrFeedPage {
    /// One log (a single node, or `?partition=` on a writer node).
    Log(crate::events::LogPageResponse),
    /// The tenant-wide feed (a writer node without `?partition=`).
    Feed(FeedPage),
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn document() -> Value {
        serde_json::from_str(super::document()).expect("the document is JSON")
    }

    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    out.push(target);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let document = document();
        let mut found = Vec::new();
        refs(&document, &mut found);
        assert!(found.len() > 50, "the document references its schemas");
        for target in found {
            let pointer = target
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("an external reference: {target}"));
            assert!(
                document.pointer(pointer).is_some(),
                "{target} is referenced but not in the document"
            );
        }
    }

    #[test]
    fn every_operation_is_named_and_answers_its_refusals() {
        let document = document();
        let paths = document["paths"].as_object().expect("paths");
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in paths {
            for (method, operation) in item.as_object().expect("a path item") {
                let id = operation["operationId"].as_str().expect("an operationId");
                assert!(ids.insert(id.to_string()), "{id} is used twice");
                assert!(
                    operation["summary"].is_string(),
                    "{method} {path}: a summary"
                );
                let responses = operation["responses"].as_object().expect("responses");
                for status in ["414", "431"] {
                    assert!(responses.contains_key(status), "{method} {path}: {status}");
                }
                let public = operation.get("security") == Some(&serde_json::json!([{}]));
                if path.starts_with("/v1/") {
                    assert!(!public, "{method} {path} needs a token");
                    for status in ["401", "403", "429"] {
                        assert!(responses.contains_key(status), "{method} {path}: {status}");
                    }
                } else {
                    assert!(public, "{method} {path} is public: {operation}");
                }
            }
        }
    }

    #[test]
    fn commands_and_ids_are_described_as_the_door_parses_them() {
        let document = document();
        let schemas = &document["components"]["schemas"];
        // Each variant's `type` tag, as the door reads it.
        let tags: Vec<&str> = schemas["Command"]["oneOf"]
            .as_array()
            .expect("Command is one of its variants")
            .iter()
            .map(|variant| {
                variant["properties"]["type"]["enum"][0]
                    .as_str()
                    .expect("a variant names its type")
            })
            .collect();
        assert_eq!(tags, planledger_domain::Command::NAMES);
        for id in ["PlanId", "GoalId", "StepId", "PersonId"] {
            assert_eq!(
                schemas[id]["pattern"],
                planledger_domain::id::ID_PATTERN,
                "{id} carries the pattern the door checks"
            );
        }
        let check_in = &schemas["RecordCheckIn"];
        assert_eq!(
            check_in["properties"]["goal_id"]["$ref"],
            "#/components/schemas/GoalId"
        );
        assert_eq!(
            check_in["additionalProperties"], false,
            "unknown fields are refused: {check_in}"
        );
    }
}
