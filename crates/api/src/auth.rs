//! The `Principal` extractor: bearer token, then the caller's rate limit.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use planledger_app::{Authenticator, Principal};

use crate::{Problem, SharedState};
use planledger_app::{RateLimiter, Refusal};

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Caller(pub Principal);

/// Verifies the bearer token of a request (refetching the identity provider's key set once when
/// the token names a key it does not hold) and takes one token from the caller's bucket.
pub async fn authenticate(
    auth: &Authenticator,
    limiter: &RateLimiter,
    parts: &Parts,
) -> Result<Principal, Problem> {
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = auth.authenticate(header).await?;
    if let Err(wait) = limiter.check_principal(&principal) {
        metrics::counter!("planledger_http_rate_limited_total").increment(1);
        return Err(Problem(Refusal::rate_limited(&principal, wait)));
    }
    Ok(principal)
}

impl FromRequestParts<SharedState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Problem> {
        authenticate(&state.app.auth, &state.limiter, parts)
            .await
            .map(Self)
    }
}
