//! Signing in to hosted MCP servers (Linear, Atlassian, Sentry…), which sign their users in
//! through the browser (OAuth) instead of taking a key:
//!
//! - `POST /api/agents/{id}/servers/{server}/sign-in` (the agent's owner) answers the link to
//!   open, good for 30 minutes;
//! - `GET /api/sign-in?state=…` (the browser, with no API key: the link's `state` is the proof)
//!   sends the browser on to the server's own sign-in page;
//! - `GET /api/sign-in/callback` is where that page sends the browser back; the grant is then
//!   stored, sealed, for the agent's runs. A small page says it worked.
//!
//! The links are built on the address the request came to (a `Host` the guard already
//! accepted), over https when the public URL is.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::{Path, Query};
use crate::ops;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(offer)).routes(routes!(begin)).routes(routes!(callback))
}

/// Where the sign-in pages send the browser back.
pub const CALLBACK_PATH: &str = "/api/sign-in/callback";

/// A sign-in to open in the browser.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignInLink {
    pub mcp_server: String,
    /// Open it in a browser; it leads to the server's own sign-in page.
    pub url: String,
    pub expires_in: i64,
}

/// A link that signs this agent in to one of its hosted servers (OAuth in the browser). A newer
/// link replaces an older one.
#[utoipa::path(post, path = "/api/agents/{id}/servers/{server}/sign-in", tag = "agents",
    params(("id" = Uuid, Path, description = "Agent id"), ("server" = String, Path, description = "The server's catalog id")),
    responses(
        (status = 200, body = SignInLink),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such agent, or the agent has no such server", body = ErrorBody),
        (status = 422, description = "The server is not a hosted one", body = ErrorBody),
    ))]
async fn offer(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    headers: HeaderMap,
    Path((id, server)): Path<(Uuid, String)>,
) -> Result<axum::Json<SignInLink>, ApiError> {
    let offer = ops::offer_sign_in(&state, &tenant, id, &server).await?;
    let url = format!("{}/api/sign-in?state={}", base(&headers, &state.public_url), offer.state);
    Ok(axum::Json(SignInLink { mcp_server: offer.server, url, expires_in: offer.expires_in_secs }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BeginQuery {
    /// From the sign-in link.
    pub state: String,
}

/// Opened in the browser from a sign-in link: on to the server's own sign-in page.
#[utoipa::path(get, path = "/api/sign-in", tag = "agents", params(BeginQuery),
    responses(
        (status = 303, description = "To the server's sign-in page"),
        (status = 400, description = "The link is not valid or expired", body = ErrorBody),
        (status = 422, description = "The server offers no sign-in dynamcp can use", body = ErrorBody),
        (status = 502, description = "The server's sign-in could not be reached", body = ErrorBody),
    ))]
async fn begin(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<BeginQuery>,
) -> Result<Response, ApiError> {
    let redirect_uri = format!("{}{CALLBACK_PATH}", base(&headers, &state.public_url));
    let to = ops::begin_sign_in(&state, &query.state, &redirect_uri).await?;
    Ok(no_store(Redirect::to(&to).into_response()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    pub state: Option<String>,
    pub code: Option<String>,
    /// Set instead of `code` when the user (or the server) declined.
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// Where the server's sign-in page sends the browser back.
#[utoipa::path(get, path = "/api/sign-in/callback", tag = "agents", params(CallbackQuery),
    responses(
        (status = 200, description = "Signed in: a page that says so", content_type = "text/html"),
        (status = 400, description = "Declined, or the link is not valid", body = ErrorBody),
        (status = 502, description = "The server's sign-in refused the code", body = ErrorBody),
    ))]
async fn callback(
    State(state): State<AppState>,
    Query(query): Query<CallbackQuery>,
) -> Result<Response, ApiError> {
    if let Some(error) = &query.error {
        let said = query.error_description.as_deref().unwrap_or_default();
        let said = crate::catalog::text::clip(&format!("{error} {said}"), 200);
        return Err(ApiError::invalid_query(format!("the sign-in was not completed: {}", said.trim())));
    }
    let (Some(sign_in), Some(code)) = (&query.state, &query.code) else {
        return Err(ApiError::invalid_query("the sign-in answer has no `state` or no `code`".to_owned()));
    };
    let done = ops::finish_sign_in(&state, sign_in, code).await?;
    let page = format!(
        "<!doctype html><meta charset=utf-8><title>Signed in</title>\
         <p>Signed in to <b>{}</b>. You can close this tab; the agent uses the sign-in from now on.</p>",
        escape(&done.server)
    );
    Ok(no_store(Html(page).into_response()))
}

/// The service's address as this request reached it: the `Host` it was sent to (which the guard
/// accepted), over the public URL's scheme when it names the same host.
fn base(headers: &HeaderMap, public_url: &str) -> String {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| !h.is_empty()) else {
        return public_url.trim_end_matches('/').to_owned();
    };
    let public_host =
        public_url.split_once("://").map(|(_, rest)| rest.split('/').next().unwrap_or_default());
    let scheme = match public_host {
        Some(h) if h.eq_ignore_ascii_case(host) && public_url.starts_with("https://") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_built_on_the_address_the_request_came_to() {
        let mut headers = HeaderMap::new();
        assert_eq!(base(&headers, "http://127.0.0.1:8000/"), "http://127.0.0.1:8000");
        headers.insert(header::HOST, header::HeaderValue::from_static("dynamcp.example.com"));
        assert_eq!(base(&headers, "https://dynamcp.example.com"), "https://dynamcp.example.com");
        assert_eq!(base(&headers, "http://127.0.0.1:8000"), "http://dynamcp.example.com");
    }
}
