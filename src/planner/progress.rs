//! Progress of a planning turn, for clients that stream it (`POST /api/chat` with `Accept:
//! text/event-stream`). The turn's task sets a sink; the planners and the checks report to it;
//! without a sink, reports go nowhere. Never carries a credential: only the planner's steps.

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

/// One step of a planning turn.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PlanEvent {
    /// Planning began, with this planner (`llm` or `offline`).
    Planning { planner: String },
    /// The planner's model began round `round`.
    ModelRound { round: usize },
    /// The model called one of the planner's tools: a search with its query, a lookup with the
    /// server's id.
    PlannerTool { round: usize, tool: String, detail: String },
    /// The model could not plan; the offline planner answers, for this reason.
    Offline { reason: String },
    /// The chosen servers are being checked: installed and started once here, without
    /// credentials.
    Checking { servers: Vec<String> },
}

tokio::task_local! {
    static SINK: UnboundedSender<PlanEvent>;
}

/// Runs `turn` with its progress reported to `sink`.
pub async fn reporting_to<F: std::future::Future>(sink: UnboundedSender<PlanEvent>, turn: F) -> F::Output {
    SINK.scope(sink, turn).await
}

/// Reports `event` to the turn's sink, if it has one.
pub(crate) fn report(event: PlanEvent) {
    let _ = SINK.try_with(|sink| sink.send(event));
}
