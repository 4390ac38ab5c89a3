//! HTTP requests carried over NATS request/reply, between the processes of a cluster: a writer
//! node forwards a plan request to the partition's owner, and a read-model request to the
//! read model's projector (`planledger projector --cluster`), with the caller's headers; the
//! receiver runs it through its own router (authenticating again) and replies with the answer.
//!
//! A request is a message whose headers are the request's, plus `Planledger-Http-Method` and
//! `Planledger-Http-Uri`, and whose payload is the body; the reply's headers are the answer's
//! plus `Planledger-Http-Status`, its payload the answer's body. Both must fit the NATS
//! server's `max_payload` (less [`NATS_HEADROOM`] for headers).

use std::str::FromStr;

use async_nats::{Client, HeaderMap};
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt as _;
use planledger_api::Problem;
use planledger_app::Refusal;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// Marks a request forwarded by a node (its instance id): the owner runs it only if the
/// partition is served there.
pub(crate) const HEADER_FORWARDED: &str = "Planledger-Forwarded";
/// The HTTP method of a forwarded request.
pub(crate) const HEADER_METHOD: &str = "Planledger-Http-Method";
/// The path and query of a forwarded request.
pub(crate) const HEADER_URI: &str = "Planledger-Http-Uri";
/// The status of a forwarded request's answer.
pub(crate) const HEADER_STATUS: &str = "Planledger-Http-Status";
/// Set on the answer of an owner that refused `not_owner` (nothing ran).
pub(crate) const HEADER_NOT_OWNER: &str = "Planledger-Not-Owner";
/// Room left in a NATS message for the headers of a forwarded request or answer.
pub(crate) const NATS_HEADROOM: usize = 16 * 1024;

/// The subject prefix the projectors of read model `name` answer forwarded requests under
/// (`<prefix>.http`, in one queue group per read model).
pub(crate) fn projector_route(name: &str) -> String {
    format!("planledger.projector.{name}")
}

/// The request a forwarded message carries.
// A refusal is the cold path, and the door's plain serde type (see `app::door`).
#[allow(clippy::result_large_err)]
pub(crate) fn request(headers: Option<&HeaderMap>, payload: Bytes) -> Result<Request, Refusal> {
    let mut builder = Request::builder();
    let mut method = Method::GET;
    let mut uri = "/".to_string();
    if let Some(headers) = headers {
        for (name, values) in headers.iter() {
            let name: &str = name.as_ref();
            if name.eq_ignore_ascii_case(HEADER_METHOD) {
                if let Some(m) = values
                    .first()
                    .and_then(|v| Method::from_str(v.as_str()).ok())
                {
                    method = m;
                }
                continue;
            }
            if name.eq_ignore_ascii_case(HEADER_URI) {
                if let Some(u) = values.first() {
                    uri = u.as_str().to_string();
                }
                continue;
            }
            for value in values {
                builder = builder.header(name, value.as_str());
            }
        }
    }
    builder
        .method(method)
        .uri(uri)
        .body(Body::from(payload))
        .map_err(|error| {
            Refusal::new(
                400,
                "invalid_input",
                format!("a forwarded request could not be rebuilt: {error}"),
            )
        })
}

/// The reply message of `response`, or of a 413 `answer_too_large` when its body would not fit
/// `max_payload`.
pub(crate) async fn reply(response: Response, max_payload: usize) -> (HeaderMap, Bytes) {
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let (parts, body) = if body.len() + NATS_HEADROOM > max_payload {
        // The answer cannot travel back over NATS: say so rather than leave the caller to time
        // out.
        let refusal = Refusal::new(
            413,
            "answer_too_large",
            format!(
                "the answer ({} bytes) is larger than a forwarded answer can carry (the NATS server's max_payload is {max_payload} bytes); ask for less (a smaller limit), or send the request to the node that owns the plan's partition",
                body.len()
            ),
        );
        let (parts, body) = Problem(refusal).into_response().into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        (parts, body)
    } else {
        (parts, body)
    };
    let mut out = HeaderMap::new();
    out.insert(HEADER_STATUS, parts.status.as_u16().to_string().as_str());
    let refused_not_owner = parts.status == StatusCode::SERVICE_UNAVAILABLE
        && body
            .windows(b"\"code\":\"not_owner\"".len())
            .any(|w| w == b"\"code\":\"not_owner\"");
    if refused_not_owner {
        out.insert(HEADER_NOT_OWNER, "1");
    }
    for (name, value) in &parts.headers {
        if let (Ok(name), Ok(value)) = (
            async_nats::HeaderName::from_str(name.as_str()),
            value.to_str(),
        ) {
            out.append(name, value);
        }
    }
    (out, body)
}

/// Answers the requests forwarded to `<route>.http` through `router`, in the queue group
/// `queue` (so one of the processes serving `route` answers each), until `shutdown`.
pub(crate) async fn serve(
    client: Client,
    route: String,
    queue: String,
    router: Router,
    shutdown: CancellationToken,
) {
    let subject = format!("{route}.http");
    let mut subscriber = match client.queue_subscribe(subject.clone(), queue).await {
        Ok(subscriber) => subscriber,
        Err(error) => {
            tracing::error!(%error, subject, "cannot serve forwarded requests");
            return;
        }
    };
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => break,
            message = subscriber.next() => message,
        };
        let Some(message) = message else { break };
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        let (client, router) = (client.clone(), router.clone());
        tokio::spawn(async move {
            let response = match request(message.headers.as_ref(), message.payload) {
                Ok(request) => match router.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
                Err(refusal) => Problem(refusal).into_response(),
            };
            let (headers, payload) = reply(response, client.server_info().max_payload).await;
            if let Err(error) = client
                .publish_with_headers(reply_to, headers, payload)
                .await
            {
                tracing::warn!(%error, "could not answer a forwarded request");
            }
        });
    }
    let _ = subscriber.unsubscribe().await;
}
