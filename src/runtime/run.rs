//! An agent run: start the agent's servers, give the language model every tool (named
//! `<server>__<tool>`), call what it asks for, and stream what happens as [`RunEvent`]s until it
//! answers or runs out of rounds. The input and the outcome (with the event log) are stored in the
//! agent's session. Dropping the event receiver cancels the run, in-flight tool calls included.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rmcp::model::{CallToolResult, ContentBlock};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::server::{Live, Redactor};
use super::{Runtime, RuntimeError};
use crate::access::Tenant;
use crate::llm::{self, LlmClient, Message, Part, ToolSpec};
use crate::store::{Agent, NewMessage, Role};

/// What a run reports, in order. Sent as Server-Sent Events named by `type`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunEvent {
    /// A server is being started (`cached`: its package was downloaded before).
    ServerStarting {
        server: String,
        launch: String,
        cached: bool,
        timeout_secs: u64,
    },
    ServerReady {
        server: String,
        tools: usize,
        ms: u64,
    },
    /// Text the model said on its way (also its final answer, before `done`).
    LlmMessage {
        round: usize,
        text: String,
    },
    /// A tool call; argument values are redacted, only their names are shown.
    ToolCall {
        round: usize,
        server: String,
        tool: String,
        #[schema(value_type = Object)]
        arguments: Value,
    },
    ToolResult {
        round: usize,
        server: String,
        tool: String,
        is_error: bool,
        content: String,
        ms: u64,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        server: Option<String>,
        code: String,
        message: String,
    },
    /// A server's tool definitions differ from the ones approved for this agent (changed or new
    /// since its first start): those tools are held, not offered nor called, until the owner
    /// approves them (`POST /api/agents/{id}/tools/approve`).
    ToolsChanged {
        server: String,
        tools: Vec<String>,
    },
    Done {
        run_id: Uuid,
        status: RunStatus,
        answer: String,
        usage: RunUsage,
        rounds: usize,
    },
}

impl RunEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            RunEvent::ServerStarting { .. } => "server_starting",
            RunEvent::ServerReady { .. } => "server_ready",
            RunEvent::LlmMessage { .. } => "llm_message",
            RunEvent::ToolCall { .. } => "tool_call",
            RunEvent::ToolResult { .. } => "tool_result",
            RunEvent::Error { .. } => "error",
            RunEvent::ToolsChanged { .. } => "tools_changed",
            RunEvent::Done { .. } => "done",
        }
    }

    fn error(server: Option<&str>, e: &RuntimeError) -> Self {
        RunEvent::Error {
            server: server.map(str::to_owned),
            code: e.code().to_owned(),
            message: e.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The model answered.
    Completed,
    /// The run could not finish (no server started, the model failed, or it ran out of rounds).
    Failed,
    /// The client went away.
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RunUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Where events go: a channel to the client (optional) and the log stored with the run.
pub struct Emitter {
    tx: Option<mpsc::UnboundedSender<RunEvent>>,
    log: std::sync::Mutex<Vec<RunEvent>>,
}

/// The longest tool result text kept in an event (the model gets the whole result).
const EVENT_TEXT: usize = 4000;

impl Emitter {
    /// Events go nowhere (direct tool calls and tool listings).
    pub fn discard() -> Self {
        Self { tx: None, log: std::sync::Mutex::new(Vec::new()) }
    }

    fn channel() -> (Self, mpsc::UnboundedReceiver<RunEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx: Some(tx), log: std::sync::Mutex::new(Vec::new()) }, rx)
    }

    /// Logs `event` for the stored run and sends it to the client.
    pub fn emit(&self, event: RunEvent) {
        if self.tx.is_none() {
            return;
        }
        if let Ok(mut log) = self.log.lock() {
            log.push(event.clone());
        }
        self.send(event);
    }

    /// Sends `event` to the client only.
    fn send(&self, event: RunEvent) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(event);
        }
    }

    fn log(&self) -> Vec<RunEvent> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// A run that has started: its id and its events, ending with `done`.
pub struct StartedRun {
    pub run_id: Uuid,
    pub events: mpsc::UnboundedReceiver<RunEvent>,
}

/// A run that has ended: what `done` said, and every event, `done` last.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FinishedRun {
    pub run_id: Uuid,
    pub status: RunStatus,
    pub answer: String,
    pub usage: RunUsage,
    pub rounds: usize,
    /// Every event of the run, `done` last.
    pub events: Vec<RunEvent>,
}

impl StartedRun {
    /// Waits for the run to end; `on_event` sees each event as it comes. `None` if the run
    /// stopped without `done` (it always sends one; this is a guard).
    pub async fn finish(mut self, mut on_event: impl FnMut(&RunEvent)) -> Option<FinishedRun> {
        let mut events = Vec::new();
        while let Some(event) = self.events.recv().await {
            on_event(&event);
            if let RunEvent::Done { run_id, status, answer, usage, rounds } = &event {
                let (run_id, status, answer, usage, rounds) =
                    (*run_id, *status, answer.clone(), *usage, *rounds);
                events.push(event);
                return Some(FinishedRun { run_id, status, answer, usage, rounds, events });
            }
            events.push(event);
        }
        None
    }
}

impl Runtime {
    /// Checks the request, stores the input, and starts the run in the background. The run is
    /// cancelled when `events` is dropped.
    pub async fn start_run(
        self: &Arc<Self>,
        tenant: &Tenant,
        agent_id: Uuid,
        input: &str,
    ) -> Result<StartedRun, RuntimeError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(RuntimeError::EmptyInput);
        }
        let agent = self.agent(tenant, agent_id).await?;
        let llm = self.llm().cloned().ok_or(RuntimeError::NoLlm)?;
        let permit = self.run_permit()?;
        let run_id = Uuid::new_v4();
        let mut opening = NewMessage::new(Role::User, input);
        opening.agent_id = Some(agent.id);
        opening.metadata = json!({ "kind": "agent_run", "run_id": run_id });
        self.store().append_messages(agent.session_id, &[opening]).await?;
        let (emitter, events) = Emitter::channel();
        let runtime = self.clone();
        let input = input.to_owned();
        tokio::spawn(async move {
            let _permit = permit;
            let closed = emitter.tx.clone();
            let outcome = tokio::select! {
                outcome = runtime.drive(&agent, llm.as_ref(), &input, &emitter) => outcome,
                () = async { if let Some(tx) = closed { tx.closed().await } } => Outcome::cancelled(),
            };
            tracing::info!(agent = %agent.id, run = %run_id, status = outcome.status.as_str(), rounds = outcome.rounds,
                input_tokens = outcome.usage.input_tokens, output_tokens = outcome.usage.output_tokens, "agent run ended");
            let done = RunEvent::Done {
                run_id,
                status: outcome.status,
                answer: outcome.answer.clone(),
                usage: outcome.usage,
                rounds: outcome.rounds,
            };
            // Stored before `done` is sent: a client that saw `done` finds the run in the session.
            let mut log = emitter.log();
            log.push(done.clone());
            runtime.record(&agent, run_id, &outcome, log).await;
            emitter.send(done);
        });
        Ok(StartedRun { run_id, events })
    }

    async fn record(&self, agent: &Agent, run_id: Uuid, outcome: &Outcome, events: Vec<RunEvent>) {
        let mut message = NewMessage::new(Role::Assistant, outcome.answer.clone());
        message.agent_id = Some(agent.id);
        message.metadata = json!({
            "kind": "agent_run",
            "run_id": run_id,
            "status": outcome.status,
            "usage": outcome.usage,
            "rounds": outcome.rounds,
            "events": events,
        });
        if let Err(e) = self.store().append_messages(agent.session_id, &[message]).await {
            tracing::error!(agent = %agent.id, run = %run_id, error = %e, "could not store a finished run");
        }
    }

    async fn drive(&self, agent: &Agent, llm: &dyn LlmClient, input: &str, events: &Emitter) -> Outcome {
        let mut outcome = Outcome {
            status: RunStatus::Failed,
            answer: String::new(),
            usage: RunUsage::default(),
            rounds: 0,
        };
        let mut live: Vec<Arc<Live>> = Vec::new();
        let started = self.start_all(agent, events).await;
        let total = started.len();
        for (server, result) in started {
            match result {
                Ok(l) => live.push(l),
                Err(e) => events.emit(RunEvent::error(Some(&server), &e)),
            }
        }
        if live.is_empty() && total > 0 {
            outcome.answer = "None of the agent's servers started, so it could not run.".to_owned();
            return outcome;
        }
        let tools = ToolTable::new(&live);
        let request_tools = tools.specs();
        let system = format!(
            "You are \"{}\", an agent created by dynamcp.\nYour workflow: {}\n\nUse the tools to do what the \
             user asks. Tool names are `<server>__<tool>`. When you are done, answer the user plainly with \
             the results; do not invent results a tool did not return.",
            agent.name, agent.workflow
        );
        let mut messages = vec![Message::user(input)];
        for round in 1..=self.settings().max_rounds.max(1) {
            outcome.rounds = round;
            let request = llm::Request {
                system: system.clone(),
                messages: messages.clone(),
                tools: request_tools.clone(),
                max_tokens: 4096,
            };
            let reply = match llm.complete(&request).await {
                Ok(reply) => reply,
                Err(e) => {
                    events.emit(RunEvent::Error {
                        server: None,
                        code: "llm_failed".to_owned(),
                        message: e.to_string(),
                    });
                    outcome.answer = format!("The language model failed: {e}");
                    return outcome;
                }
            };
            outcome.usage.input_tokens += reply.usage.input_tokens;
            outcome.usage.output_tokens += reply.usage.output_tokens;
            let text = tools.redact(&reply.text());
            if !text.trim().is_empty() {
                events.emit(RunEvent::LlmMessage { round, text: text.clone() });
            }
            let calls: Vec<(String, String, Value)> = reply
                .tool_calls()
                .map(|(id, name, input)| (id.to_owned(), name.to_owned(), input.clone()))
                .collect();
            messages.push(Message { role: llm::Role::Assistant, parts: reply.parts });
            if calls.is_empty() {
                outcome.status = RunStatus::Completed;
                outcome.answer = text;
                return outcome;
            }
            let mut results = Vec::with_capacity(calls.len());
            for (id, name, arguments) in calls {
                let (content, is_error) =
                    self.call_for_model(agent, &tools, round, &name, arguments, events).await;
                results.push(Part::ToolResult { id, content, is_error });
            }
            messages.push(Message { role: llm::Role::User, parts: results });
        }
        let rounds = self.settings().max_rounds;
        events.emit(RunEvent::Error {
            server: None,
            code: "max_rounds".to_owned(),
            message: format!("the model did not finish within {rounds} rounds (DYNAMCP_RUN_MAX_ROUNDS)"),
        });
        outcome.answer = format!("The agent did not finish within {rounds} rounds.");
        outcome
    }

    /// One tool call the model asked for: events out, the result text (or error) back.
    async fn call_for_model(
        &self,
        agent: &Agent,
        tools: &ToolTable,
        round: usize,
        name: &str,
        arguments: Value,
        events: &Emitter,
    ) -> (String, bool) {
        let Some((live, tool)) = tools.get(name) else {
            return (format!("There is no tool named {name:?}. Use one of the tools you were given."), true);
        };
        let server = live.server.clone();
        events.emit(RunEvent::ToolCall {
            round,
            server: server.clone(),
            tool: tool.clone(),
            arguments: redacted(&arguments),
        });
        let started = Instant::now();
        let (content, is_error) = match self.call_live(agent, live, tool, arguments).await {
            Ok(result) => (render(&result, &live.redactor), result.is_error.unwrap_or(false)),
            Err(e) => {
                if matches!(e, RuntimeError::ServerGone { .. } | RuntimeError::CallTimeout { .. }) {
                    events.emit(RunEvent::error(Some(&server), &e));
                }
                (e.to_string(), true)
            }
        };
        events.emit(RunEvent::ToolResult {
            round,
            server,
            tool: tool.clone(),
            is_error,
            content: truncate(&content, EVENT_TEXT),
            ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        (content, is_error)
    }
}

struct Outcome {
    status: RunStatus,
    answer: String,
    usage: RunUsage,
    rounds: usize,
}

impl Outcome {
    fn cancelled() -> Self {
        Self {
            status: RunStatus::Cancelled,
            answer: "The run was cancelled: the client disconnected.".to_owned(),
            usage: RunUsage::default(),
            rounds: 0,
        }
    }
}

/// The tools the model sees, by qualified name.
struct ToolTable {
    by_name: HashMap<String, (Arc<Live>, String)>,
    specs: Vec<ToolSpec>,
    redactor: Vec<Redactor>,
}

/// Providers accept `^[a-zA-Z0-9_-]{1,64}$` as a tool name.
const MAX_TOOL_NAME: usize = 64;

impl ToolTable {
    fn new(live: &[Arc<Live>]) -> Self {
        let mut by_name = HashMap::new();
        let mut specs = Vec::new();
        for server in live {
            for tool in server.tools.iter().filter(|t| !server.is_held(&t.name)) {
                let name = qualified(&server.server, &tool.name, |n| by_name.contains_key(n));
                specs.push(ToolSpec {
                    name: name.clone(),
                    description: tool.description.as_deref().unwrap_or_default().to_owned(),
                    input_schema: Value::Object((*tool.input_schema).clone()),
                });
                by_name.insert(name, (server.clone(), tool.name.to_string()));
            }
        }
        Self { by_name, specs, redactor: live.iter().map(|l| l.redactor.clone()).collect() }
    }

    fn specs(&self) -> Vec<ToolSpec> {
        self.specs.clone()
    }

    fn get(&self, name: &str) -> Option<(&Arc<Live>, &String)> {
        self.by_name.get(name).map(|(l, t)| (l, t))
    }

    fn redact(&self, text: &str) -> String {
        self.redactor.iter().fold(text.to_owned(), |t, r| r.redact(&t))
    }
}

/// `<server>__<tool>` in the characters providers accept, at most 64 long, unique.
fn qualified(server: &str, tool: &str, taken: impl Fn(&str) -> bool) -> String {
    let clean = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
    };
    let (server, tool) = (clean(server), clean(tool));
    let mut name = format!("{server}__{tool}");
    if name.len() > MAX_TOOL_NAME {
        let keep = MAX_TOOL_NAME.saturating_sub(tool.len() + 2).max(8);
        let server: String = server.chars().take(keep).collect();
        name = format!("{server}__{tool}").chars().take(MAX_TOOL_NAME).collect();
    }
    let mut n = 2;
    let base = name.clone();
    while taken(&name) {
        let suffix = format!("_{n}");
        name = format!("{}{suffix}", base.chars().take(MAX_TOOL_NAME - suffix.len()).collect::<String>());
        n += 1;
    }
    name
}

/// Argument names with their values hidden: events show what was asked, never what was sent.
fn redacted(arguments: &Value) -> Value {
    match arguments {
        Value::Object(map) => Value::Object(map.keys().map(|k| (k.clone(), json!("[redacted]"))).collect()),
        Value::Null => json!({}),
        _ => json!("[redacted]"),
    }
}

/// A tool result as text for the model: text blocks, else the structured content, with the
/// server's credential values redacted.
pub fn render(result: &CallToolResult, redactor: &Redactor) -> String {
    let mut parts: Vec<String> = Vec::new();
    for block in &result.content {
        match block {
            ContentBlock::Text(t) => parts.push(t.text.clone()),
            ContentBlock::Image(i) => parts.push(format!("[image: {}]", i.mime_type)),
            ContentBlock::Audio(a) => parts.push(format!("[audio: {}]", a.mime_type)),
            other => parts.push(serde_json::to_string(other).unwrap_or_default()),
        }
    }
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        parts.push(structured.to_string());
    }
    redactor.redact(&parts.join("\n"))
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} more bytes]", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_are_provider_safe_and_unique() {
        assert_eq!(
            qualified("time-mcp-server", "get_current_time", |_| false),
            "time-mcp-server__get_current_time"
        );
        assert_eq!(qualified("a.b", "x/y z", |_| false), "a_b__x_y_z");
        let long = qualified(&"s".repeat(80), "get_current_time", |_| false);
        assert!(long.len() <= 64 && long.ends_with("__get_current_time"), "{long}");
        assert_eq!(qualified("a", "b", |n| n == "a__b"), "a__b_2");
    }

    #[test]
    fn arguments_are_redacted_by_value() {
        assert_eq!(
            redacted(&json!({"token": "abc", "n": 1})),
            json!({"token": "[redacted]", "n": "[redacted]"})
        );
        assert_eq!(redacted(&Value::Null), json!({}));
    }

    #[test]
    fn events_serialise_with_their_type() {
        let e = RunEvent::ServerReady { server: "s".into(), tools: 2, ms: 5 };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"type": "server_ready", "server": "s", "tools": 2, "ms": 5})
        );
        assert_eq!(e.name(), "server_ready");
        assert_eq!(truncate("héllo", 2), "h… [5 more bytes]");
    }
}
