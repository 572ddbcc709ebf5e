//! Binds each `/mcp` session to the tenant that opened it. rmcp hands out an `Mcp-Session-Id`
//! on `initialize` and accepts it from anyone who sends it back; here the id is recorded with the
//! tenant of the key that opened it, and a request carrying an id that is not a live session of
//! the caller's own tenant is answered 404 `mcp_session_not_found`: exactly what an ended or
//! unknown session gets, so another tenant cannot even tell the session exists (as with
//! sessions and agents on `/api/`), and an MCP client that gets it starts a new session, as the
//! protocol says. Runs inside [`super::auth::authenticate`], which names the caller.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

use super::auth::Caller;
use super::error::ApiError;
use crate::access::Tenant;

const SESSION_HEADER: &str = "mcp-session-id";

/// Below this many recorded sessions, ended ones are not looked for.
const PRUNE_FLOOR: usize = 64;

/// Which tenant opened each live MCP session.
pub struct McpSessions {
    owners: std::sync::Mutex<Owners>,
    /// rmcp's own sessions: an id it no longer has is dropped from `owners`, so the table never
    /// outgrows rmcp's.
    manager: Arc<LocalSessionManager>,
}

struct Owners {
    by_id: HashMap<String, Tenant>,
    /// Look for ended sessions when the table reaches this size (doubles with the live ones).
    prune_at: usize,
}

impl McpSessions {
    pub fn new(manager: Arc<LocalSessionManager>) -> Self {
        Self {
            owners: std::sync::Mutex::new(Owners { by_id: HashMap::new(), prune_at: PRUNE_FLOOR }),
            manager,
        }
    }

    fn owner_is(&self, id: &str, tenant: &Tenant) -> bool {
        self.owners.lock().is_ok_and(|owners| owners.by_id.get(id) == Some(tenant))
    }

    async fn record(&self, id: String, tenant: Tenant) {
        let due = self.owners.lock().map(|owners| owners.by_id.len() >= owners.prune_at).unwrap_or(false);
        if due {
            self.prune().await;
        }
        if let Ok(mut owners) = self.owners.lock() {
            owners.by_id.insert(id, tenant);
        }
    }

    fn forget(&self, id: &str) {
        if let Ok(mut owners) = self.owners.lock() {
            owners.by_id.remove(id);
        }
    }

    /// Drops the sessions rmcp has closed (ended by the client, idle, or failed).
    async fn prune(&self) {
        let live = self.manager.sessions.read().await;
        if let Ok(mut owners) = self.owners.lock() {
            owners.by_id.retain(|id, _| live.contains_key(id.as_str()));
            owners.prune_at = (owners.by_id.len() * 2).max(PRUNE_FLOOR);
        }
    }
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Lets a request with an `Mcp-Session-Id` through only for the session's own tenant, and
/// records the tenant of every session an `initialize` opens.
pub async fn bind(State(sessions): State<Arc<McpSessions>>, request: Request, next: Next) -> Response {
    let Some(Caller(tenant)) = request.extensions().get::<Caller>().cloned() else {
        // `authenticate` runs before this on /mcp; without a caller, fail closed.
        return ApiError::Unauthorized(
            "this route needs an API key: send `Authorization: Bearer <key>`".to_owned(),
        )
        .into_response();
    };
    let sent = session_id(request.headers());
    if let Some(id) = &sent
        && !sessions.owner_is(id, &tenant)
    {
        tracing::warn!(%tenant, "refused an MCP session id that is not a live session of the caller's tenant");
        return ApiError::McpSessionNotFound.into_response();
    }
    let closing = request.method() == Method::DELETE;
    let response = next.run(request).await;
    match sent {
        None => {
            if let Some(opened) = session_id(response.headers()) {
                sessions.record(opened, tenant).await;
            }
        }
        Some(id) if closing && response.status().is_success() => sessions.forget(&id),
        Some(_) => {}
    }
    response
}
