//! dynamcp as an MCP server: the engine's own tools (search the catalog, plan, create, list and
//! run agents, call an agent's tools) for MCP clients such as Claude Desktop or Cursor. Served
//! over stdio by `dynamcp mcp`, and over streamable HTTP at `/mcp` by `serve` (mounted in
//! [`crate::api`], behind the same API keys and rate limits).
//!
//! Credentials never travel through MCP: no tool takes or returns a credential value. Where a
//! workflow needs some, the tools answer with the playground page and the HTTP route where the
//! user enters them, and `create_agent` picks the session up again afterwards.
//!
//! Errors are tool results with `isError` and the API's one error shape,
//! `{"error": {"code", "message"}}`, so a model can read and act on them.

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{CallToolResult, ProgressNotificationParam, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::access::Tenant;
use crate::ops::{self, OpError};
use crate::planner::{ChatOutcome, ChatTurn, PlannedNeed, RequiredCredential, RequiredFile};
use crate::state::AppState;

/// What the server tells clients about itself at initialization.
const INSTRUCTIONS: &str = "dynamcp turns a plain-language request into an AI agent built from MCP \
servers. Typical flow: search_servers or plan_workflow to see what a request needs; create_agent to \
create it (when credentials are missing, it answers where the user enters them: never send \
credentials through MCP); then run_agent, or call_agent_tool to call one of the agent's tools \
directly. list_agents shows what exists.";

/// The MCP face of one dynamcp instance.
#[derive(Clone)]
pub struct DynamcpMcp {
    state: AppState,
    /// The tenant of every call over stdio; over HTTP each request names its own (see [`tenant`]).
    stdio_tenant: Option<Tenant>,
    tool_router: ToolRouter<Self>,
}

/// A tool's failure: a result with `isError` and `{"error": {"code", "message"}}`.
type Failure = CallToolResult;

fn failure(code: &str, message: impl Into<String>) -> Failure {
    CallToolResult::structured_error(json!({ "error": { "code": code, "message": message.into() } }))
}

/// The same code and message the HTTP API answers with (a failure of dynamcp's own is logged, not
/// sent).
fn fail(error: impl Into<OpError>) -> Failure {
    let error = error.into();
    failure(error.code(), error.public_message())
}

/// `value` as a JSON object (every value this is used on serializes to one).
fn object(value: &impl Serialize) -> Result<Map<String, Value>, Failure> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(fail(OpError::Internal(anyhow::anyhow!("expected a JSON object, got {other}")))),
        Err(e) => Err(fail(OpError::Internal(e.into()))),
    }
}

/// Makes a generated schema portable across MCP clients and model providers: a nullable
/// `"type": [T, "null"]` becomes `"anyOf": [{"type": T, …}, {"type": "null"}]` (one type per
/// branch, which single-type dialects such as Gemini's accept), at every depth.
fn portable(schema: &mut schemars::Schema) {
    if let Some(object) = schema.as_object_mut() {
        portable_object(object);
    }
}

fn portable_object(object: &mut Map<String, Value>) {
    if let Some(Value::Array(types)) = object.get("type")
        && types.len() == 2
        && types.iter().any(|t| t == "null")
        && let Some(kind) = types.iter().find(|t| *t != "null").cloned()
    {
        // Type-specific keywords move into the typed branch; notes (description, default) stay.
        let mut typed = Map::new();
        typed.insert("type".to_owned(), kind);
        for key in [
            "format",
            "minimum",
            "maximum",
            "items",
            "properties",
            "additionalProperties",
            "required",
            "enum",
        ] {
            if let Some(value) = object.remove(key) {
                typed.insert(key.to_owned(), value);
            }
        }
        object.remove("type");
        object.insert("anyOf".to_owned(), json!([Value::Object(typed), {"type": "null"}]));
    }
    for value in object.values_mut() {
        match value {
            Value::Object(inner) => portable_object(inner),
            Value::Array(items) => {
                items.iter_mut().filter_map(Value::as_object_mut).for_each(portable_object)
            }
            _ => {}
        }
    }
}

fn parse_id(name: &str, value: &str) -> Result<Uuid, Failure> {
    Uuid::parse_str(value.trim()).map_err(|_| failure("invalid_id", format!("`{name}` must be a UUID")))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = portable)]
pub struct SearchServersInput {
    /// What the workflow needs, in plain language; several needs ("… and …") are searched apart.
    pub query: String,
    /// How many servers to return: 1 to 50 (default 5).
    #[schemars(range(min = 1, max = 50))]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = portable)]
pub struct SearchServersOutput {
    /// Best first.
    pub results: Vec<crate::catalog::SearchResult>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = portable)]
pub struct GetServerInput {
    /// The catalog id, as `search_servers` returns it.
    pub id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = portable)]
pub struct GetServerOutput {
    /// Has a launch option dynamcp can run.
    pub runnable: bool,
    /// The full record: launch options, tools with their input schemas, credential requirements
    /// with instructions.
    pub server: Map<String, Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = portable)]
pub struct PlanWorkflowInput {
    /// The workflow, in plain language, e.g. "check my Gmail for invoices and put them in a
    /// Google Sheet".
    pub request: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = portable)]
pub struct Need {
    pub need: String,
    /// The server chosen for it; none when the agent's model does it itself or nothing fits.
    pub server: Option<ChosenServer>,
    /// Work for the agent's model (e.g. "summarise"), not a tool.
    pub by_model: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = portable)]
pub struct ChosenServer {
    pub id: String,
    pub name: String,
    /// Why it was chosen.
    pub why: String,
    pub tools: Vec<String>,
    /// Whether it installs and starts on this machine ("started here with 2 tools …").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_here: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = portable)]
pub struct Credential {
    /// The server it is for.
    pub mcp_server: String,
    /// The environment variable the server reads (for files: the one that holds the path).
    pub key: String,
    pub description: String,
    /// Where to get it: the steps, scopes and format.
    pub instructions: String,
    /// A file (e.g. a service-account JSON) rather than a value.
    pub file: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = portable)]
pub struct PlanWorkflowOutput {
    pub request: String,
    pub needs: Vec<Need>,
    pub workflow: Vec<String>,
    /// Every required credential and file the chosen servers read. Their values are never sent
    /// through MCP: see `create_agent`.
    pub required_credentials: Vec<Credential>,
    pub note: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = portable)]
pub struct CreateAgentInput {
    /// The workflow, in plain language. Starts a new session, or, with `session_id`, changes
    /// that session's plan.
    pub request: Option<String>,
    /// A session `create_agent` answered before: without `request`, says where it stands now
    /// (e.g. after the user entered the credentials) and creates the agent when nothing is
    /// missing.
    pub session_id: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = portable)]
pub struct CreateAgentOutput {
    /// `success` (the agent exists) or `pending_credentials`.
    pub status: String,
    pub session_id: String,
    pub agent_created: bool,
    pub agent_id: Option<String>,
    /// The master agent's answer, for the user.
    pub reply: String,
    /// What is still missing, with instructions. Values are never accepted here.
    pub required_credentials: Vec<Credential>,
    /// Where the user enters the missing credentials; then call `create_agent` with this
    /// `session_id` again.
    pub credentials_entry: Option<CredentialsEntry>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = portable)]
pub struct CredentialsEntry {
    /// The playground page, opened on this session: a form with the instructions beside each
    /// field.
    pub playground_url: String,
    /// Or over HTTP: `POST` this URL with `{"session_id", "message": "", "credentials":
    /// {"<mcp_server>": {"<KEY>": "<value>"}}}`.
    pub http_route: String,
    /// Files go here, as multipart parts named by their key.
    pub files_route: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = portable)]
pub struct ListAgentsInput {
    /// 1 to 100 (default 20).
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<u32>,
    pub offset: Option<u64>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = portable)]
pub struct AgentSummary {
    pub id: String,
    pub name: String,
    pub session_id: String,
    pub workflow: String,
    pub model: Option<String>,
    /// Its servers: the keys of its `mcpServers` config.
    pub servers: Vec<String>,
    pub created_at: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = portable)]
pub struct ListAgentsOutput {
    /// Newest first.
    pub agents: Vec<AgentSummary>,
    /// All agents, across pages.
    pub total: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = portable)]
pub struct RunAgentInput {
    pub agent_id: String,
    /// What the agent should do now.
    pub input: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = portable)]
pub struct RunAgentOutput {
    pub run_id: String,
    /// `completed`, `failed` or `cancelled`.
    pub status: String,
    pub answer: String,
    pub rounds: usize,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Every event of the run (servers starting, model messages, tool calls and results), `done`
    /// last.
    pub events: Vec<Map<String, Value>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = portable)]
pub struct CallAgentToolInput {
    pub agent_id: String,
    /// One of the agent's servers (its catalog id).
    pub server: String,
    pub tool: String,
    /// Checked against the tool's input schema first.
    pub arguments: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = portable)]
pub struct CallAgentToolOutput {
    pub server: String,
    pub tool: String,
    /// The tool reported a failure in its result.
    pub is_error: bool,
    /// The MCP `CallToolResult` as the server sent it.
    pub result: Map<String, Value>,
}

#[tool_router]
impl DynamcpMcp {
    /// For `serve`'s `/mcp`: each request's tenant comes from its API key.
    pub fn over_http(state: AppState) -> Self {
        Self { state, stdio_tenant: None, tool_router: Self::tool_router() }
    }

    /// For `dynamcp mcp`: every call acts as `tenant`.
    pub fn over_stdio(state: AppState, tenant: Tenant) -> Self {
        Self { state, stdio_tenant: Some(tenant), tool_router: Self::tool_router() }
    }

    /// The tenant a call acts for: the stdio one, or the one the HTTP request's key named (the
    /// auth middleware put it there; without it the call is refused, failing closed).
    fn tenant(&self, ctx: &RequestContext<RoleServer>) -> Result<Tenant, Failure> {
        if let Some(tenant) = &self.stdio_tenant {
            return Ok(tenant.clone());
        }
        ctx.extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<crate::access::Caller>())
            .map(|caller| caller.0.clone())
            .ok_or_else(|| failure("unauthorized", "this endpoint needs an API key"))
    }

    /// Where the user enters credentials for `session_id`.
    fn credentials_entry(&self, session_id: Uuid) -> CredentialsEntry {
        let base = &self.state.public_url;
        CredentialsEntry {
            playground_url: format!("{base}/?session={session_id}"),
            http_route: format!("{base}/api/chat"),
            files_route: format!("{base}/api/sessions/{session_id}/files"),
        }
    }

    #[tool(
        description = "Search the catalog of MCP servers by meaning. Returns the best servers for a plain-language need, with the tools that match and the credentials each reads (names only).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn search_servers(
        &self,
        Parameters(input): Parameters<SearchServersInput>,
    ) -> Result<Json<SearchServersOutput>, Failure> {
        let limit = input.limit.map(|l| l as usize);
        let results = ops::search(&self.state, &input.query, limit).await.map_err(fail)?;
        Ok(Json(SearchServersOutput { results }))
    }

    #[tool(
        description = "One catalog server's full record: launch options, tools with their input schemas, and credential requirements with instructions.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_server(
        &self,
        Parameters(input): Parameters<GetServerInput>,
    ) -> Result<Json<GetServerOutput>, Failure> {
        let detail = ops::server(&self.state, &input.id).map_err(fail)?;
        let server = object(&detail.record)?;
        Ok(Json(GetServerOutput { runnable: detail.runnable, server }))
    }

    #[tool(
        description = "Plan a workflow without creating anything: its needs, the server chosen for each and why, the workflow steps, and every credential the servers would need (with instructions).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn plan_workflow(
        &self,
        Parameters(input): Parameters<PlanWorkflowInput>,
    ) -> Result<Json<PlanWorkflowOutput>, Failure> {
        let preview = ops::preview(&self.state, &input.request).await.map_err(fail)?;
        let plan = preview.plan;
        Ok(Json(PlanWorkflowOutput {
            request: plan.request,
            needs: plan.needs.into_iter().map(need).collect(),
            workflow: plan.workflow,
            required_credentials: credentials(preview.required_credentials, preview.required_files),
            note: plan.note,
        }))
    }

    #[tool(
        description = "Create an agent for a workflow (a persisted mcpServers config, workflow and model). If credentials are missing it answers which, with instructions, and where the user enters them (never through MCP); call it again with the session_id afterwards.",
        annotations(read_only_hint = false, destructive_hint = false, open_world_hint = false)
    )]
    async fn create_agent(
        &self,
        Parameters(input): Parameters<CreateAgentInput>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<CreateAgentOutput>, Failure> {
        let tenant = self.tenant(&ctx)?;
        let session_id = input.session_id.as_deref().map(|s| parse_id("session_id", s)).transpose()?;
        let request = input.request.filter(|r| !r.trim().is_empty());
        let outcome = match (request, session_id) {
            (None, None) => {
                return Err(failure("invalid_request", "give a `request`, or the `session_id` to resume"));
            }
            (None, Some(id)) => ops::resume(&self.state, &tenant, id).await.map_err(fail)?,
            (Some(message), session_id) => {
                let turn = ChatTurn { tenant, message, session_id, ..ChatTurn::default() };
                ops::chat(&self.state, turn).await.map_err(fail)?
            }
        };
        Ok(Json(self.created(outcome)))
    }

    fn created(&self, outcome: ChatOutcome) -> CreateAgentOutput {
        let pending = !outcome.required_credentials.is_empty() || !outcome.required_files.is_empty();
        CreateAgentOutput {
            status: outcome.status.as_str().to_owned(),
            session_id: outcome.session_id.to_string(),
            agent_created: outcome.agent_id.is_some(),
            agent_id: outcome.agent_id.map(|id| id.to_string()),
            reply: outcome.reply,
            required_credentials: credentials(outcome.required_credentials, outcome.required_files),
            credentials_entry: pending.then(|| self.credentials_entry(outcome.session_id)),
        }
    }

    #[tool(
        description = "The agents created so far, newest first, with their servers and workflow.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_agents(
        &self,
        Parameters(input): Parameters<ListAgentsInput>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<ListAgentsOutput>, Failure> {
        let tenant = self.tenant(&ctx)?;
        let page = ops::page(input.limit, input.offset).map_err(fail)?;
        let (agents, total) = ops::agents(&self.state, &tenant, page).await.map_err(fail)?;
        let agents = agents
            .into_iter()
            .map(|a| AgentSummary {
                servers: ops::servers_of(&a),
                id: a.id.to_string(),
                name: a.name,
                session_id: a.session_id.to_string(),
                workflow: a.workflow,
                model: a.model,
                created_at: a.created_at.to_rfc3339(),
            })
            .collect();
        Ok(Json(ListAgentsOutput { agents, total }))
    }

    #[tool(
        description = "Run an agent on an input: its MCP servers start, the language model calls their tools, and the answer comes back with every event of the run. Needs a configured language model.",
        annotations(read_only_hint = false, destructive_hint = true, open_world_hint = true)
    )]
    async fn run_agent(
        &self,
        Parameters(input): Parameters<RunAgentInput>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<RunAgentOutput>, Failure> {
        let tenant = self.tenant(&ctx)?;
        let agent_id = parse_id("agent_id", &input.agent_id)?;
        let run = ops::start_run(&self.state, &tenant, agent_id, &input.input).await.map_err(fail)?;
        let run_id = run.run_id;
        // Each event is also a progress notification, when the client asked for them.
        let progress = ctx.meta.get_progress_token().map(|token| (token, ctx.peer.clone()));
        let mut step = 0u32;
        let finished = run
            .finish(|event| {
                if let Some((token, peer)) = &progress {
                    step += 1;
                    let note = ProgressNotificationParam::new(token.clone(), f64::from(step))
                        .with_message(event.name());
                    let peer = peer.clone();
                    tokio::spawn(async move {
                        let _ = peer.notify_progress(note).await;
                    });
                }
            })
            .await
            .ok_or_else(|| {
                fail(OpError::Internal(anyhow::anyhow!("run {run_id} ended without a done event")))
            })?;
        Ok(Json(RunAgentOutput {
            run_id: finished.run_id.to_string(),
            status: finished.status.as_str().to_owned(),
            events: finished.events.iter().map(object).collect::<Result<_, _>>()?,
            answer: finished.answer,
            rounds: finished.rounds,
            input_tokens: finished.usage.input_tokens,
            output_tokens: finished.usage.output_tokens,
        }))
    }

    #[tool(
        description = "Call one tool of one of an agent's MCP servers directly, without a language model. The arguments are checked against the tool's input schema first.",
        annotations(read_only_hint = false, destructive_hint = true, open_world_hint = true)
    )]
    async fn call_agent_tool(
        &self,
        Parameters(input): Parameters<CallAgentToolInput>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<CallAgentToolOutput>, Failure> {
        let tenant = self.tenant(&ctx)?;
        let agent_id = parse_id("agent_id", &input.agent_id)?;
        let arguments = Value::Object(input.arguments.unwrap_or_default());
        let result = ops::call_tool(&self.state, &tenant, agent_id, &input.server, &input.tool, arguments)
            .await
            .map_err(fail)?;
        let is_error = result.is_error.unwrap_or(false);
        let result = object(&result)?;
        Ok(Json(CallAgentToolOutput { server: input.server, tool: input.tool, is_error, result }))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for DynamcpMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(rmcp::model::Implementation::new("dynamcp", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

fn need(n: PlannedNeed) -> Need {
    Need {
        need: n.need,
        by_model: n.by_model,
        server: n.server.map(|s| ChosenServer {
            starts_here: s.start.as_ref().map(|v| v.summary()),
            id: s.id,
            name: s.name,
            why: s.why,
            tools: s.tools,
        }),
    }
}

fn credentials(values: Vec<RequiredCredential>, files: Vec<RequiredFile>) -> Vec<Credential> {
    let values = values.into_iter().map(|c| Credential {
        mcp_server: c.mcp_server,
        key: c.credential_key,
        description: c.description,
        instructions: c.instructions,
        file: false,
    });
    let files = files.into_iter().map(|f| Credential {
        mcp_server: f.mcp_server,
        key: f.file_key,
        description: f.description,
        instructions: f.instructions,
        file: true,
    });
    values.chain(files).collect()
}

/// `dynamcp mcp`: dynamcp's tools over MCP on stdin/stdout. Logs go to stderr; stdout carries
/// only the protocol.
pub async fn run(args: crate::config::McpArgs) -> anyhow::Result<()> {
    let mut state = crate::state::AppState::build(&args.serve).await?;
    // Over stdio no one else can connect, so the listen address plays no part: a store that never
    // had a key is open; one that had keys (revoked ones too) needs one.
    state.access = std::sync::Arc::new(crate::access::Access::new(state.store.clone(), true));
    let key = args.api_key.as_ref().map(|k| k.expose());
    let tenant = state.access.authenticate(key).await.map_err(|e| {
        anyhow::anyhow!(
            "{e}: this store has (or had) API keys, so `dynamcp mcp` acts for one; set DYNAMCP_API_KEY \
             to an active key from `dynamcp keys create`"
        )
    })?;
    tracing::info!(tenant = %tenant, "serving dynamcp's tools over MCP on stdio");
    let lease = state.lease.clone();
    let served = serve_stdio(state, tenant).await;
    if let Some(lease) = lease {
        lease.release().await;
    }
    served
}

/// Serves the tools on stdin/stdout until the client closes them, then stops the agents' servers.
async fn serve_stdio(state: AppState, tenant: Tenant) -> anyhow::Result<()> {
    let runtime = Arc::clone(&state.runtime);
    let service = DynamcpMcp::over_stdio(state, tenant).serve(rmcp::transport::stdio()).await?;
    let ended = service.waiting().await;
    runtime.shutdown().await;
    ended?;
    Ok(())
}
