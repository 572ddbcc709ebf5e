//! What an operation can fail with, in terms both faces translate: HTTP into a status and the
//! one error body, MCP into a tool result with `isError` and the same code and message.

use uuid::Uuid;

use crate::planner::PlannerError;
use crate::runtime::RuntimeError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The request's content is wrong (an empty query, a limit out of range).
    #[error("{0}")]
    InvalidRequest(String),
    /// A paging parameter is out of range.
    #[error("{0}")]
    InvalidQuery(String),
    #[error("session {0} not found")]
    SessionNotFound(Uuid),
    #[error("agent {0} not found")]
    AgentNotFound(Uuid),
    #[error("server `{0}` is not in the catalog")]
    ServerNotFound(String),
    /// The planner refused the turn for a reason the user can act on.
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// Running an agent or one of its servers failed.
    #[error(transparent)]
    Runtime(RuntimeError),
    #[error("the store is unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Whose the failure is, which decides what a client may read of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The caller's request: the message says what to change.
    Caller,
    /// Where an agent's servers run: one did not install, start or answer in time, there is no
    /// sandbox, or the service is stopping. Shown, for the user can act on it.
    Upstream,
    /// dynamcp's own: the detail is logged, the client reads a general message.
    Service,
}

impl OpError {
    pub fn code(&self) -> &'static str {
        match self {
            OpError::InvalidRequest(_) => "invalid_request",
            OpError::InvalidQuery(_) => "invalid_query",
            OpError::SessionNotFound(_) => "session_not_found",
            OpError::AgentNotFound(_) => "agent_not_found",
            OpError::ServerNotFound(_) => "server_not_found",
            OpError::Unprocessable { code, .. } => code,
            OpError::Runtime(e) if e.code() == "internal" => "internal_error",
            OpError::Runtime(e) => e.code(),
            OpError::Unavailable(_) => "unavailable",
            OpError::Internal(_) => "internal_error",
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            OpError::Runtime(e) if e.code() == "internal" => Fault::Service,
            OpError::Runtime(
                RuntimeError::StartFailed { .. }
                | RuntimeError::InstallFailed { .. }
                | RuntimeError::ServerGone { .. }
                | RuntimeError::NoSandbox { .. }
                | RuntimeError::StartTimeout { .. }
                | RuntimeError::CallTimeout { .. }
                | RuntimeError::ShuttingDown
                | RuntimeError::SignIn(
                    crate::runtime::oauth::SignInError::Refused(_)
                    | crate::runtime::oauth::SignInError::Unreachable { .. },
                ),
            ) => Fault::Upstream,
            OpError::Unavailable(_) | OpError::Internal(_) => Fault::Service,
            _ => Fault::Caller,
        }
    }

    /// The message a client may see. A failure of dynamcp's own is logged here with its detail
    /// and told in general terms.
    pub fn public_message(&self) -> String {
        match self.fault() {
            Fault::Caller => self.to_string(),
            Fault::Upstream => {
                tracing::warn!(error = %self, "request failed upstream");
                self.to_string()
            }
            Fault::Service => {
                tracing::error!(error = ?self, "request failed");
                match self {
                    OpError::Unavailable(_) => "the service is temporarily unavailable".to_owned(),
                    _ => "internal server error".to_owned(),
                }
            }
        }
    }
}

impl From<StoreError> for OpError {
    fn from(err: StoreError) -> Self {
        OpError::Internal(err.into())
    }
}

impl From<PlannerError> for OpError {
    fn from(err: PlannerError) -> Self {
        match err {
            PlannerError::SessionNotFound(id) => OpError::SessionNotFound(id),
            PlannerError::AgentNotFound(id) => OpError::AgentNotFound(id),
            PlannerError::Store(e) => e.into(),
            e if e.is_client_error() => OpError::Unprocessable { code: e.code(), message: e.to_string() },
            e => OpError::Internal(e.into()),
        }
    }
}

impl From<RuntimeError> for OpError {
    fn from(err: RuntimeError) -> Self {
        match err {
            RuntimeError::AgentNotFound(id) => OpError::AgentNotFound(id),
            e => OpError::Runtime(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_of_our_own_never_carries_its_detail() {
        let err = OpError::Internal(anyhow::anyhow!("password=hunter2 in connection string"));
        assert_eq!(err.code(), "internal_error");
        assert_eq!(err.fault(), Fault::Service);
        assert_eq!(err.public_message(), "internal server error");
        let caller = OpError::InvalidRequest("query must not be empty".to_owned());
        assert_eq!(
            (caller.fault(), caller.public_message().as_str()),
            (Fault::Caller, "query must not be empty")
        );
    }
}
