//! Extractors that wrap axum's, so a malformed body, query or path answers in our error shape
//! instead of axum's plain-text rejections.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::{ApiError, redact_quoted};

/// A JSON body. Syntax errors are 400 `invalid_json`, type errors 422 `invalid_request`, a missing
/// content type 415, an oversized body 413.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge;
    }
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::invalid(redact_quoted(&strip_prefix(&e.body_text()))),
        JsonRejection::JsonSyntaxError(e) => ApiError::InvalidJson(format!(
            "request body is not valid JSON: {}",
            redact_quoted(&strip_prefix(&e.body_text()))
        )),
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        other => ApiError::InvalidJson(format!("could not read the request body: {}", other.body_text())),
    }
}

/// axum prefixes serde's message with its own sentence; keep only serde's part.
fn strip_prefix(text: &str) -> String {
    match text.split_once(": ") {
        Some((head, rest)) if head.starts_with("Failed to") => rest.to_owned(),
        _ => text.to_owned(),
    }
}

/// A path parameter. Anything that does not parse (a non-UUID id) is 400 `invalid_id`.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => {
                Err(ApiError::InvalidId("the id in the path must be a UUID".to_owned()))
            }
            Err(other) => Err(ApiError::InvalidId(other.body_text())),
        }
    }
}

/// A query string. Anything that does not parse is 400 `invalid_query`.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::invalid_query(redact_quoted(&strip_prefix(&e.body_text()))))
            }
            Err(other) => Err(ApiError::invalid_query(other.body_text())),
        }
    }
}

/// The request's `Accept` header as text (empty when absent or not text).
pub(crate) fn accept(headers: &axum::http::HeaderMap) -> &str {
    headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default()
}
