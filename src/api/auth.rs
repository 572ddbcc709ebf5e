//! API keys on the wire: `Authorization: Bearer <key>` on every `/api/` route and on `/mcp`,
//! resolved to a tenant by [`crate::access::Access`] and handed to handlers (and MCP tools) as
//! [`Caller`]. The service's identity and playground (`/`), `/health` and the API docs stay public.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
pub use crate::access::Caller;
use crate::state::AppState;

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // `authenticate` runs on every /api/ route; a handler reached without it would be a
        // wiring mistake, so it fails closed.
        parts.extensions.get::<Caller>().cloned().ok_or(ApiError::Unauthorized(
            "this route needs an API key: send `Authorization: Bearer <key>`".to_owned(),
        ))
    }
}

/// Whether `path` needs a caller: the API and the MCP endpoint.
pub fn is_guarded(path: &str) -> bool {
    path.starts_with("/api/") || path == "/mcp" || path.starts_with("/mcp/")
}

/// Resolves the caller of every guarded request, or answers 401.
pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if !is_guarded(request.uri().path()) {
        return next.run(request).await;
    }
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    match state.access.authenticate(bearer).await {
        Ok(tenant) => {
            request.extensions_mut().insert(Caller(tenant));
            next.run(request).await
        }
        Err(e) => {
            // Failed attempts count against the client IP's budget, so guessing keys (or just
            // hammering the key lookup) is throttled like any other traffic.
            if let Some(limited) =
                super::rate_limit::over_limit(&state, &super::rate_limit::ip_key(&request)).await
            {
                return limited;
            }
            ApiError::from(e).into_response()
        }
    }
}
