//! The one error type that maps to HTTP, and the middleware that gives every error response,
//! including those axum and tower produce themselves (405, 408, 413), the same JSON shape:
//! `{"error": {"code": "...", "message": "..."}, "detail": "..."}` (`detail`, the message again, is
//! what FastAPI clients of the design read). 5xx bodies are generic; details go to the log.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::access::AccessError;
use crate::ops::OpError;
use crate::planner::PlannerError;
use crate::runtime::RuntimeError;
use crate::store::StoreError;

/// An HTTP answer that is not a success: a failed operation ([`OpError`]), or what HTTP itself
/// refuses before any operation runs.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Op(#[from] OpError),
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidId(String),
    #[error("{0}")]
    InvalidForm(String),
    #[error("{0}")]
    Unauthorized(String),
    /// The `Host` header names a host this service does not have (DNS rebinding).
    #[error("{0}")]
    HostNotAllowed(String),
    /// A browser page of another origin sent a request that changes state, or any to `/mcp`.
    #[error("{0}")]
    CrossOrigin(String),
    /// An `Mcp-Session-Id` that is not a live session of the caller's tenant.
    #[error(
        "MCP session not found: it ended, or it was opened with another API key; send `initialize` to start a new one"
    )]
    McpSessionNotFound,
    #[error("request body must be JSON with `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("request body is larger than the configured limit")]
    PayloadTooLarge,
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
}

impl ApiError {
    /// The request's content is wrong (HTTP 422).
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Op(OpError::InvalidRequest(message.into()))
    }

    /// A query string that does not parse or is out of range (HTTP 400).
    pub fn invalid_query(message: impl Into<String>) -> Self {
        ApiError::Op(OpError::InvalidQuery(message.into()))
    }

    /// A failure of the service's own (HTTP 500, detail logged only).
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        ApiError::Op(OpError::Internal(error.into()))
    }
}

/// The JSON error body. Stable: clients match on `code`. `detail` repeats the message where
/// FastAPI clients of the design read it (`{"detail": "..."}`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    pub detail: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable, stable, snake_case.
    #[schema(example = "session_not_found")]
    pub code: String,
    /// Human-readable; safe to show to the user.
    pub message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Op(e) => op_status(e),
            ApiError::InvalidJson(_) | ApiError::InvalidId(_) | ApiError::InvalidForm(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::HostNotAllowed(_) | ApiError::CrossOrigin(_) => StatusCode::FORBIDDEN,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RouteNotFound { .. } | ApiError::McpSessionNotFound => StatusCode::NOT_FOUND,
        }
    }

    /// The message a client may see (see [`OpError::public_message`]).
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Op(e) => e.public_message(),
            e => e.to_string(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Op(e) => e.code(),
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidId(_) => "invalid_id",
            ApiError::InvalidForm(_) => "invalid_form",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::HostNotAllowed(_) => "host_not_allowed",
            ApiError::CrossOrigin(_) => "cross_origin_refused",
            ApiError::McpSessionNotFound => "mcp_session_not_found",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::RouteNotFound { .. } => "not_found",
        }
    }
}

fn op_status(e: &OpError) -> StatusCode {
    match e {
        OpError::InvalidQuery(_) => StatusCode::BAD_REQUEST,
        OpError::InvalidRequest(_) | OpError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        OpError::SessionNotFound(_) | OpError::AgentNotFound(_) | OpError::ServerNotFound(_) => {
            StatusCode::NOT_FOUND
        }
        OpError::Runtime(e) => runtime_status(e),
        OpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        OpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::Op(err.into())
    }
}

impl From<PlannerError> for ApiError {
    fn from(err: PlannerError) -> Self {
        ApiError::Op(err.into())
    }
}

impl From<RuntimeError> for ApiError {
    fn from(err: RuntimeError) -> Self {
        ApiError::Op(err.into())
    }
}

fn runtime_status(e: &RuntimeError) -> StatusCode {
    use crate::runtime::oauth::SignInError;
    match e {
        RuntimeError::AgentNotFound(_)
        | RuntimeError::ServerNotInAgent { .. }
        | RuntimeError::ToolNotFound { .. } => StatusCode::NOT_FOUND,
        RuntimeError::InvalidArguments { .. }
        | RuntimeError::NotInCatalog(_)
        | RuntimeError::NotLaunchable { .. }
        | RuntimeError::BadCredential { .. }
        | RuntimeError::CallRejected { .. }
        | RuntimeError::RemoteRefused { .. }
        | RuntimeError::EmptyInput => StatusCode::UNPROCESSABLE_ENTITY,
        RuntimeError::NoLlm | RuntimeError::ToolNotApproved { .. } | RuntimeError::SignInNeeded { .. } => {
            StatusCode::CONFLICT
        }
        RuntimeError::SignIn(e) => match e {
            SignInError::BadLink | SignInError::Expired => StatusCode::BAD_REQUEST,
            SignInError::NotHosted(_) | SignInError::NoRegistration { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            SignInError::Refused(_) | SignInError::Unreachable { .. } => StatusCode::BAD_GATEWAY,
        },
        RuntimeError::Capacity { .. } | RuntimeError::TooManyRuns { .. } => StatusCode::TOO_MANY_REQUESTS,
        RuntimeError::StartFailed { .. }
        | RuntimeError::InstallFailed { .. }
        | RuntimeError::ServerGone { .. } => StatusCode::BAD_GATEWAY,
        RuntimeError::NoSandbox { .. } => StatusCode::SERVICE_UNAVAILABLE,
        RuntimeError::StartTimeout { .. } | RuntimeError::CallTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        RuntimeError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        RuntimeError::Store(_) | RuntimeError::Vault(_) | RuntimeError::Io { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(err: AccessError) -> Self {
        match err {
            AccessError::Store(e) => e.into(),
            e => ApiError::Unauthorized(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = matches!(
            self,
            ApiError::Op(OpError::Runtime(RuntimeError::Capacity { .. } | RuntimeError::TooManyRuns { .. }))
        );
        let challenge = matches!(self, ApiError::Unauthorized(_));
        let message = self.public_message();
        let mut response = error_response(status, self.code(), message);
        if retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if challenge {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    let body =
        ErrorBody { error: ErrorDetail { code: code.to_owned(), message: message.clone() }, detail: message };
    (status, axum::Json(body)).into_response()
}

/// serde's messages quote the offending input (`invalid type: string "sk-..."`), which can be a
/// credential. Keep the path and the reason, drop every quoted value.
pub fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut inside = true;
    for part in parts {
        if inside {
            out.push_str("\"…");
        } else {
            out.push('"');
            out.push_str(part);
        }
        inside = !inside;
    }
    out
}

/// Gives error responses built outside our handlers (axum's 405, tower's 408 and 413, a caught
/// panic) the standard JSON shape, so clients see one error format everywhere.
pub async fn normalize_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "method not allowed on this route".to_owned())
        }
        StatusCode::REQUEST_TIMEOUT => {
            ("request_timeout", "the request took too long and was cancelled".to_owned())
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", ApiError::PayloadTooLarge.to_string()),
        StatusCode::NOT_FOUND => ("not_found", "not found".to_owned()),
        s if s.is_server_error() => ("internal_error", "internal server error".to_owned()),
        s => ("bad_request", s.canonical_reason().unwrap_or("bad request").to_lowercase()),
    };
    let mut normalized = error_response(status, code, message);
    // Keep headers that matter to clients (Allow on 405, Retry-After, CORS), drop the old body's.
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = std::mem::replace(normalized.body_mut(), Body::empty());
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_dropped_but_the_reason_stays() {
        let msg = r#"credentials.gmail.KEY: invalid type: string "sk-live-123", expected a map"#;
        assert_eq!(redact_quoted(msg), r#"credentials.gmail.KEY: invalid type: string "…", expected a map"#);
        assert_eq!(redact_quoted("missing field `message`"), "missing field `message`");
    }

    #[test]
    fn server_errors_never_carry_their_detail() {
        let err = ApiError::internal(anyhow::anyhow!("password=hunter2 in connection string"));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err.code(), "internal_error");
    }
}
