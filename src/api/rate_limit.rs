//! Per-caller rate limits: a tenant's requests share one budget (whatever key they use); without
//! keys, each client IP has its own. A generic cell-rate algorithm: `per_sec` sustained, `burst`
//! at once; over it, 429 with `Retry-After` and the usual error body.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::auth::Caller;
use super::error::error_response;
use crate::state::AppState;

/// Applies the limit to `/api/` and `/mcp` requests (after [`super::auth::authenticate`] named the caller).
pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.rate_limiter.is_none() || !super::auth::is_guarded(request.uri().path()) {
        return next.run(request).await;
    }
    let tenant = request.extensions().get::<Caller>().map(|c| c.0.as_str().to_owned()).unwrap_or_default();
    let key = if tenant.is_empty() { ip_key(&request) } else { format!("tenant:{tenant}") };
    match over_limit(&state, &key).await {
        Some(limited) => limited,
        None => next.run(request).await,
    }
}

/// The budget key of the request's client IP.
pub fn ip_key(request: &Request) -> String {
    let ip = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
    format!("ip:{}", ip.unwrap_or_default())
}

/// Counts one request against `key`'s budget: the 429 to answer when it is over, else `None`.
pub async fn over_limit(state: &AppState, key: &str) -> Option<Response> {
    let wait = state.rate_limiter.as_deref()?.take(key).await.err()?;
    metrics::counter!("dynamcp_rate_limited_total").increment(1);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests: try again in {secs} s"),
    );
    if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    Some(response)
}
