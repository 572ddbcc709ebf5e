//! The master agent: turns a chat turn into a plan (needs, one server per need, workflow), the
//! credentials still missing with instructions, and, when nothing is missing, a created agent.
//!
//! Owns the conversation flow; asks [`Planner`] for plans, the catalog for records, the vault to
//! seal what the user sends, and the store to persist. Never knows HTTP.

pub mod agent_config;
pub mod choice;
pub mod eval;
pub mod instructions;
mod language;
mod llm_planner;
mod plan;
pub mod progress;
pub mod schedule;
mod steps;
pub mod verify;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use choice::ChoiceSettings;
pub use llm_planner::LlmPlanner;
pub use plan::{ChosenServer, NotStarted, OfflinePlanner, Plan, PlannedNeed, Planner};
pub use verify::{Verifier, VerifySettings};

use crate::access::Tenant;
use crate::catalog::requirements::{self, Fill, Provide, Requirement};
use crate::catalog::{Catalog, CatalogError, CredentialKind, CredentialSpec, ServerRecord};
use crate::runtime::launch::env_name_allowed;
use crate::store::{
    Agent, NewAgent, NewMessage, Role, SealedCredential, SecretKind, Session, SessionState, Store,
    StoreError, TurnWrite,
};
use crate::vault::{Binding, Secret, SecretBytes, Vault, VaultError};

/// What the user sent in one turn.
#[derive(Debug, Default)]
pub struct ChatTurn {
    /// Who is asking: a session of another tenant is "not found".
    pub tenant: Tenant,
    pub message: String,
    pub session_id: Option<Uuid>,
    /// `{"<mcp_server>": {"KEY": value}}`.
    pub credentials: BTreeMap<String, BTreeMap<String, Secret>>,
    pub files: Vec<InlineFile>,
}

/// A file sent inline with a turn (e.g. a service-account JSON), base64-encoded.
#[derive(Debug)]
pub struct InlineFile {
    /// The file's key (`GOOGLE_APPLICATION_CREDENTIALS`), or `<mcp_server>/<key>`.
    pub name: String,
    pub content_base64: Secret,
}

/// Where the session stands after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChatStatus {
    /// Something is still needed from the user before an agent can be created.
    PendingCredentials,
    /// Every required credential is present.
    Success,
}

impl ChatStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatStatus::PendingCredentials => "pending_credentials",
            ChatStatus::Success => "success",
        }
    }
}

/// One credential the user still has to provide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RequiredCredential {
    /// The server it is for; send the value back keyed by this exact string.
    pub mcp_server: String,
    /// The environment variable the server reads.
    pub credential_key: String,
    pub description: String,
    /// Steps to obtain it: where to create it, which scopes, what format.
    pub instructions: String,
    /// `secret` (stored encrypted, never shown) or `setting` (a value only the user knows, such
    /// as an account id or their own site's address; stored the same way). Not in the design's
    /// shape, whose clients ignore it.
    #[serde(default)]
    pub kind: ValueKind,
}

/// What a value the user is asked for is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    #[default]
    Secret,
    Setting,
}

/// A declared variable nobody is asked for, because dynamcp fills it in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FilledSetting {
    pub mcp_server: String,
    pub key: String,
    /// The value it gets (a default, or where in the server's sandbox a path points).
    pub value: String,
    /// Why that value.
    pub reason: String,
}

/// A declared variable the workflow does not need; the user may still send it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OptionalSetting {
    pub mcp_server: String,
    pub key: String,
    pub description: String,
}

/// One file the user still has to provide (e.g. a Google service-account JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RequiredFile {
    pub mcp_server: String,
    /// The environment variable that will hold the file's path.
    pub file_key: String,
    pub description: String,
    pub instructions: String,
}

/// A hosted server of the agent that signs its users in through the browser (OAuth): open `url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignInLink {
    pub mcp_server: String,
    pub url: String,
}

/// The master agent's answer to a turn.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatOutcome {
    pub reply: String,
    pub session_id: Uuid,
    pub required_credentials: Vec<RequiredCredential>,
    pub required_files: Vec<RequiredFile>,
    /// Settings filled in with their defaults (never asked).
    pub defaults: Vec<FilledSetting>,
    /// Settings the user may send but need not.
    pub optional: Vec<OptionalSetting>,
    pub status: ChatStatus,
    pub agent_id: Option<Uuid>,
    /// The created agent's hosted servers to sign in to (filled in by the operations layer,
    /// which opens the sign-ins).
    pub sign_in: Vec<SignInLink>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlannerError {
    #[error("`message` must not be empty")]
    EmptyMessage,
    #[error("session {0} not found")]
    SessionNotFound(Uuid),
    #[error("agent {0} not found")]
    AgentNotFound(Uuid),
    #[error("session {0} has no plan yet: describe the workflow first")]
    NoPlan(Uuid),
    #[error(
        "this session has no plan yet, so it expects no credentials or files (got some for `{server}`); \
         describe the workflow first. Nothing was stored"
    )]
    UnexpectedCredentials { server: String },
    #[error("`{server}` is not a server of this session's plan; expected one of: {}. Nothing was stored", expected.join(", "))]
    UnknownServer { server: String, expected: Vec<String> },
    #[error("`{server}` has no credential `{key}`; expected one of: {}. Nothing was stored", expected.join(", "))]
    UnknownKey { server: String, key: String, expected: Vec<String> },
    #[error("the value of `{server}`/`{key}` is empty. Nothing was stored")]
    EmptyCredential { server: String, key: String },
    #[error("`{name}` is not a file this session's plan asks for; expected one of: {}. Nothing was stored", expected.join(", "))]
    UnknownFile { name: String, expected: Vec<String> },
    #[error("the file `{name}` is empty or not valid base64. Nothing was stored")]
    InvalidFile { name: String },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PlannerError {
    /// Stable machine-readable code for the client-facing variants.
    pub fn code(&self) -> &'static str {
        match self {
            PlannerError::EmptyMessage => "empty_message",
            PlannerError::SessionNotFound(_) => "session_not_found",
            PlannerError::AgentNotFound(_) => "agent_not_found",
            PlannerError::NoPlan(_) => "no_plan",
            PlannerError::UnexpectedCredentials { .. } => "unexpected_credentials",
            PlannerError::UnknownServer { .. } => "unknown_credential_server",
            PlannerError::UnknownKey { .. } => "unknown_credential_key",
            PlannerError::EmptyCredential { .. } => "empty_credential",
            PlannerError::UnknownFile { .. } => "unknown_file",
            PlannerError::InvalidFile { .. } => "invalid_file",
            PlannerError::Catalog(_) | PlannerError::Vault(_) | PlannerError::Store(_) => "internal_error",
        }
    }

    /// Whether the client caused it (a 4xx) rather than the service.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, PlannerError::Catalog(_) | PlannerError::Vault(_) | PlannerError::Store(_))
    }
}

/// A plan made without a session: what a request would need.
#[derive(Debug, Clone)]
pub struct Preview {
    pub plan: Plan,
    pub required_credentials: Vec<RequiredCredential>,
    pub required_files: Vec<RequiredFile>,
}

/// The reply when the catalog has nothing for a request.
pub const NO_SERVER_FOUND: &str = "I could not find an MCP server in the catalog for this request. Try naming \
the service or the action, e.g. \"read my Gmail\" or \"post to Slack\".";

/// An exported agent config.
#[derive(Debug)]
pub enum Exported {
    Json(serde_json::Value),
    Yaml(String),
}

/// The planner-owned part of a session, kept in `sessions.context`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Context {
    #[serde(default)]
    plan: Option<Plan>,
    /// The agent created for the current plan, if any.
    #[serde(default)]
    agent_id: Option<Uuid>,
    /// Every agent this session created.
    #[serde(default)]
    agents: Vec<Uuid>,
    /// Files the plan still needs (the credentials still needed are the session's
    /// `required_credentials`).
    #[serde(default)]
    required_files: Vec<RequiredFile>,
}

impl Context {
    /// The plan, when it has servers that credentials and files could be for.
    fn plan_with_servers(&self) -> Option<&Plan> {
        self.plan.as_ref().filter(|p| !p.servers().is_empty())
    }
}

/// What one credential or file of a plan is, with the user-facing texts.
struct Need<'a> {
    server: &'a ServerRecord,
    spec: &'a CredentialSpec,
}

impl Need<'_> {
    /// How the value travels: as the runtime gives it to the server (a file only where the
    /// record says so; the requirement decides whether it is asked at all).
    fn kind(&self) -> SecretKind {
        if self.spec.kind == CredentialKind::File { SecretKind::File } else { SecretKind::Env }
    }

    fn requirement(&self) -> Requirement {
        requirements::classify(self.spec)
    }
}

/// A turn worked out, not yet written: the answer, the session's next state, and the agent it
/// creates, if any.
struct Settled {
    outcome: ChatOutcome,
    state: SessionState,
    agent: Option<Agent>,
}

/// What the user said in a turn: what the message means, and the values it stored (`KEY (server)`).
#[derive(Clone, Copy)]
struct Said<'a> {
    intent: &'a Intent,
    received: &'a [String],
    /// What the turn changed in the plan, in a sentence.
    change: Option<&'a str>,
}

/// What the user is doing with a turn's message.
enum Intent {
    /// A (new) workflow request.
    Request(String),
    /// "use X instead of Y": the current request with Y swapped for X.
    Refine { old: String, new: String },
    /// Commentary alongside credentials, or small talk: the plan stands.
    Keep,
    /// "also email me the chart": steps added to the current plan.
    Extend(String),
    /// "drop the Slack step", "remove step 2": steps taken out of the current plan.
    Drop(String),
    /// "2", "use time-mcp-server instead": a step's server swapped for one the user names (an
    /// alternative by its number, or any catalog server by id or exact name).
    Pick(Pick),
}

#[derive(Debug, Clone, PartialEq)]
struct Pick {
    /// The step whose server changes.
    need: usize,
    /// The catalog id chosen.
    server: String,
}

/// The master agent.
pub struct MasterAgent {
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    vault: Arc<Vault>,
    planner: Arc<dyn Planner>,
    /// The LLM model agents are created with (`None`: none configured).
    agent_model: Option<String>,
    /// Checks that chosen servers start here before anything is asked (`None`: plans are not
    /// verified).
    verifier: Option<(Arc<dyn Verifier>, std::time::Duration)>,
    /// How long a whole turn may take (the HTTP request timeout): the checks get only what
    /// planning left of it.
    turn_limit: Option<std::time::Duration>,
}

/// What a turn keeps for writing its answer after the checks.
const WRITE_MARGIN: std::time::Duration = std::time::Duration::from_secs(3);

impl MasterAgent {
    pub fn new(
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        vault: Arc<Vault>,
        planner: Arc<dyn Planner>,
        agent_model: Option<String>,
    ) -> Self {
        Self { store, catalog, vault, planner, agent_model, verifier: None, turn_limit: None }
    }

    /// Bounds each turn's checks by what is left of `limit` after planning.
    pub fn with_turn_limit(mut self, limit: std::time::Duration) -> Self {
        self.turn_limit = Some(limit);
        self
    }

    /// Verifies plans with `verifier`, each turn waiting at most `budget` for the checks.
    pub fn with_verifier(mut self, verifier: Arc<dyn Verifier>, budget: std::time::Duration) -> Self {
        self.verifier = Some((verifier, budget));
        self
    }

    /// Handles one turn. Everything the turn sends is validated before anything is written, so a
    /// rejected turn leaves no trace.
    #[tracing::instrument(skip_all, fields(session_id = ?turn.session_id, planner = self.planner.name()))]
    pub async fn chat(&self, turn: ChatTurn) -> Result<ChatOutcome, PlannerError> {
        let started = std::time::Instant::now();
        let sends_values = !turn.credentials.is_empty() || !turn.files.is_empty();
        if turn.message.trim().is_empty() && !sends_values {
            return Err(PlannerError::EmptyMessage);
        }
        let existing = match turn.session_id {
            Some(id) => Some(self.session(&turn.tenant, id).await?),
            None => None,
        };
        let mut context: Context = existing
            .as_ref()
            .and_then(|s| serde_json::from_value(s.context.clone()).ok())
            .unwrap_or_default();
        let history = match &existing {
            Some(s) => self.store.messages(s.id).await?,
            None => Vec::new(),
        };

        // Credentials and files answer a plan's requests: with no plan (or one that found no
        // server) nothing asks for them.
        let first_value =
            || turn.credentials.keys().next().cloned().or_else(|| turn.files.first().map(|f| f.name.clone()));
        if sends_values && context.plan_with_servers().is_none() {
            return Err(PlannerError::UnexpectedCredentials { server: first_value().unwrap_or_default() });
        }

        // 1. The plan this turn leaves in place.
        let intent = match context.plan.as_ref().and_then(|p| self.pick(&turn.message, p)) {
            Some(pick) => Intent::Pick(pick),
            None => classify(&turn.message, context.plan.as_ref(), sends_values),
        };
        if matches!(intent, Intent::Request(_) | Intent::Refine { .. } | Intent::Extend(_)) {
            progress::report(progress::PlanEvent::Planning { planner: self.planner.name().to_owned() });
        }
        let plan = match (&intent, &context.plan) {
            (Intent::Pick(pick), Some(current)) => Some(self.picked(current, pick)),
            (Intent::Request(text), _) => Some(self.planner.plan(text, &history).await?),
            (Intent::Refine { old, new }, Some(current)) => {
                Some(self.planner.replan(&refined(&current.request, old, new), current, &history).await?)
            }
            (Intent::Extend(addition), Some(current)) => {
                let added = self.planner.plan(addition, &history).await?;
                Some(extended(current, added, addition))
            }
            (Intent::Drop(target), Some(current)) => Some(dropped(current, target)),
            _ => context.plan.clone(),
        };
        let Some(mut plan) = plan else {
            return Err(PlannerError::UnexpectedCredentials { server: first_value().unwrap_or_default() });
        };
        // Whichever planner made it, a plan keeps the schedule its request asks for, and says
        // when the request is not in English.
        plan.schedule = schedule::of(&plan.request);
        if let Some(language) = language::not_english(&plan.request)
            && plan.note.is_none()
        {
            plan.note = Some(language::note(language));
        }
        // A new plan's servers are checked before anything is asked for them; so are those of a
        // plan still waiting for credentials (a check that ran past a turn's budget ends later).
        let replanned = matches!(
            intent,
            Intent::Request(_) | Intent::Refine { .. } | Intent::Pick(_) | Intent::Extend(_)
        );
        if let Some((verifier, budget)) = &self.verifier
            && (replanned || context.agent_id.is_none())
        {
            // The checks get what planning left of the turn; a check cut short goes on in the
            // background and the next turn sees its result.
            let servers: Vec<String> =
                plan.needs.iter().filter_map(|n| n.server.as_ref().map(|s| s.id.clone())).collect();
            if !servers.is_empty() {
                progress::report(progress::PlanEvent::Checking { servers });
            }
            let left = self
                .turn_limit
                .map_or(*budget, |limit| limit.saturating_sub(started.elapsed() + WRITE_MARGIN));
            verify::verify_plan(&mut plan, &self.catalog.index(), verifier.as_ref(), (*budget).min(left))
                .await;
        }
        let records = self.records(&plan);

        // 2. Write. The values, all checked and sealed first, in their own transaction (only an
        // existing session can receive any: a new one has no plan yet to ask for them). Then
        // everything else in one: the session when new, the agent, the state, the messages.
        let new_session = existing.is_none();
        let session = existing.unwrap_or_else(|| Session::new(turn.tenant.as_str()));
        let sealed = self.seal_turn(session.id, &records, &turn)?;
        if !sealed.is_empty() {
            self.store
                .put_credentials(session.id, &sealed)
                .await
                .map_err(|e| missing_session(e, session.id))?;
        }
        let change = context.plan.as_ref().and_then(|before| what_changed(before, &plan, &intent));
        let plan_changed = context.plan.as_ref() != Some(&plan);
        if plan_changed {
            context.agent_id = None;
        }
        let received = received(&sealed);
        let settled = self
            .settle(
                &session,
                new_session,
                &mut context,
                plan,
                records,
                Said { intent: &intent, received: &received, change: change.as_deref() },
            )
            .await?;
        let outcome = &settled.outcome;

        let mut reply = NewMessage::new(Role::Assistant, &outcome.reply);
        reply.agent_id = outcome.agent_id;
        reply.metadata = serde_json::json!({
            "status": outcome.status.as_str(),
            "planner": self.planner.name(),
            "credentials_received": sealed.iter().map(|c| format!("{}/{}", c.server, c.key)).collect::<Vec<_>>(),
        });
        let user =
            if turn.message.trim().is_empty() { "(credentials sent)".to_owned() } else { turn.message };
        let messages = [NewMessage::new(Role::User, user), reply];
        self.save(&session, new_session, &settled, &messages).await?;
        Ok(settled.outcome)
    }

    /// Commits a settled turn: the session when new, the agent it created, its state and the
    /// messages, in one transaction.
    async fn save(
        &self,
        session: &Session,
        new_session: bool,
        settled: &Settled,
        messages: &[NewMessage],
    ) -> Result<(), PlannerError> {
        let turn = TurnWrite {
            new_session: new_session.then_some(session),
            session_id: session.id,
            agent: settled.agent.as_ref(),
            state: &settled.state,
            messages,
        };
        if !self.store.save_turn(&turn).await.map_err(|e| missing_session(e, session.id))? {
            return Err(PlannerError::SessionNotFound(session.id));
        }
        if let Some(agent) = &settled.agent {
            tracing::info!(agent_id = %agent.id, session_id = %session.id, "agent created");
        }
        Ok(())
    }

    /// Stores files sent apart from a chat turn (`POST /api/sessions/{id}/files`): each named by
    /// its key or `<mcp_server>/<key>`; all or none. Returns what is still missing.
    pub async fn add_files(
        &self,
        tenant: &Tenant,
        session_id: Uuid,
        files: Vec<(String, SecretBytes)>,
    ) -> Result<ChatOutcome, PlannerError> {
        let session = self.session(tenant, session_id).await?;
        let mut context: Context = serde_json::from_value(session.context.clone()).unwrap_or_default();
        let Some(plan) = context.plan_with_servers().cloned() else {
            let name = files.first().map(|(n, _)| n.clone()).unwrap_or_default();
            return Err(PlannerError::UnexpectedCredentials { server: name });
        };
        let records = self.records(&plan);
        let needs = needs_of(&records);
        let sealed = files
            .into_iter()
            .map(|(name, content)| self.seal_file(session_id, &needs, &name, move || Some(content)))
            .collect::<Result<Vec<_>, _>>()?;
        if !sealed.is_empty() {
            self.store
                .put_credentials(session_id, &sealed)
                .await
                .map_err(|e| missing_session(e, session_id))?;
        }
        let received = received(&sealed);
        let settled = self.settle_kept(&session, &mut context, plan, records, &received).await?;
        self.save(&session, false, &settled, &[]).await?;
        Ok(settled.outcome)
    }

    /// Plans `request` without writing anything: the needs, the chosen servers and every
    /// credential and file they would ask for.
    pub async fn preview(&self, request: &str) -> Result<Preview, PlannerError> {
        if request.trim().is_empty() {
            return Err(PlannerError::EmptyMessage);
        }
        let plan = self.planner.plan(request, &[]).await?;
        let Missing { credentials, files, .. } = missing(&self.records(&plan), &BTreeSet::new());
        Ok(Preview { plan, required_credentials: credentials, required_files: files })
    }

    /// Where session `session_id` stands now, without a new turn: what is still missing, and the
    /// agent, created here if the last credential arrived some other way (e.g. a file upload).
    pub async fn resume(&self, tenant: &Tenant, session_id: Uuid) -> Result<ChatOutcome, PlannerError> {
        let session = self.session(tenant, session_id).await?;
        let mut context: Context = serde_json::from_value(session.context.clone()).unwrap_or_default();
        let Some(plan) = context.plan.clone() else {
            return Err(PlannerError::NoPlan(session_id));
        };
        let records = self.records(&plan);
        let settled = self.settle_kept(&session, &mut context, plan, records, &[]).await?;
        self.save(&session, false, &settled, &[]).await?;
        Ok(settled.outcome)
    }

    /// An agent's config for a client. Credential references become placeholders, or, only with
    /// `include_secrets`, the decrypted values (files stay placeholders: they live on this host).
    pub async fn export_config(
        &self,
        tenant: &Tenant,
        agent_id: Uuid,
        format: agent_config::ExportFormat,
        include_secrets: bool,
    ) -> Result<Exported, PlannerError> {
        let agent = crate::access::owned_agent(self.store.as_ref(), tenant, agent_id)
            .await?
            .ok_or(PlannerError::AgentNotFound(agent_id))?;
        let mut values: BTreeMap<(String, String), String> = BTreeMap::new();
        if include_secrets {
            for sealed in self.store.credentials(agent.session_id).await? {
                // A hosted server's sign-in ("#oauth") is dynamcp's own, for no other client.
                if sealed.kind == SecretKind::Env && !sealed.key.starts_with('#') {
                    let value = self.vault.open_sealed(&sealed)?;
                    values.insert(
                        (sealed.server, sealed.key),
                        String::from_utf8_lossy(value.expose()).into_owned(),
                    );
                }
            }
            tracing::info!(agent_id = %agent_id, count = values.len(), "exported an agent config with its secrets");
        }
        let resolve = |reference: &str| match agent_config::parse_ref(reference) {
            Some((false, server, key)) => values
                .get(&(server.to_owned(), key.to_owned()))
                .cloned()
                .unwrap_or_else(|| format!("REPLACE_WITH_{key}")),
            Some((true, _, key)) => format!("REPLACE_WITH_PATH_TO_{key}"),
            None => reference.to_owned(),
        };
        let config = agent_config::export(&agent.mcp_config, format, &resolve);
        Ok(match format {
            agent_config::ExportFormat::FastAgent => Exported::Yaml(agent_config::fast_agent_yaml(&config)),
            _ => Exported::Json(config),
        })
    }

    /// Session `id`, if it is `tenant`'s: another tenant's session is "not found" as well.
    async fn session(&self, tenant: &Tenant, id: Uuid) -> Result<Session, PlannerError> {
        crate::access::owned_session(self.store.as_ref(), tenant, id)
            .await?
            .ok_or(PlannerError::SessionNotFound(id))
    }

    /// The step and server a message picks, if it picks one: an alternative's number ("2",
    /// "option 2"), a catalog id or exact name alone, or "use <id or name> instead (of <old>)".
    fn pick(&self, message: &str, plan: &Plan) -> Option<Pick> {
        let text = message.trim().trim_end_matches(['.', '!']).trim().to_lowercase();
        let bare = ["use ", "pick ", "take ", "choose ", "go with ", "switch to "]
            .iter()
            .fold(text.as_str(), |t, p| t.strip_prefix(p).unwrap_or(t));
        let bare = ["option ", "alternative ", "number ", "#"]
            .iter()
            .fold(bare, |t, p| t.strip_prefix(p).unwrap_or(t));
        if let Some(n) = ordinal(bare).or_else(|| bare.trim().parse::<usize>().ok()) {
            return numbered_alternatives(plan)
                .into_iter()
                .nth(n.checked_sub(1)?)
                .map(|(need, server)| Pick { need, server });
        }
        let (old, named) = match refinement(&text) {
            Some((old, new)) => (Some(old), new),
            None => (None, bare.trim_end_matches(" instead").trim().to_owned()),
        };
        let index = self.catalog.index();
        let record = index.get(&named).or_else(|| {
            // An exact name, when only one server has it.
            let mut same = index
                .lexical(&named, usize::MAX)
                .into_iter()
                .map(|d| index.record(d))
                .filter(|r| r.name.eq_ignore_ascii_case(&named));
            match (same.next(), same.next()) {
                (Some(one), None) => Some(one),
                _ => None,
            }
        })?;
        let served: Vec<usize> = (0..plan.needs.len()).filter(|&i| plan.needs[i].server.is_some()).collect();
        let mentions = |i: &usize, what: &str| {
            let n = &plan.needs[*i];
            n.need.to_lowercase().contains(what)
                || n.server
                    .as_ref()
                    .is_some_and(|s| s.id.contains(what) || s.name.to_lowercase().contains(what))
        };
        let need = plan
            .needs
            .iter()
            .position(|n| n.alternatives.iter().any(|a| a.id == record.id))
            .or_else(|| old.as_deref().and_then(|old| served.iter().copied().find(|i| mentions(i, old))))
            .or_else(|| (served.len() == 1).then(|| served[0]))
            .or_else(|| {
                (0..plan.needs.len()).find(|&i| plan.needs[i].server.is_none() && !plan.needs[i].by_model)
            })?;
        Some(Pick { need, server: record.id.clone() })
    }

    /// `current` with step `pick.need` served by `pick.server`; the server it had becomes the
    /// first alternative.
    fn picked(&self, current: &Plan, pick: &Pick) -> Plan {
        let mut plan = current.clone();
        let index = self.catalog.index();
        let (Some(record), Some(need)) = (index.get(&pick.server), plan.needs.get_mut(pick.need)) else {
            return plan;
        };
        let tools =
            need.alternatives.iter().find(|a| a.id == record.id).map(|a| a.tools.clone()).unwrap_or_default();
        let chosen = ChosenServer {
            id: record.id.clone(),
            name: record.name.clone(),
            why: "your choice".to_owned(),
            tools,
            start: None,
        };
        need.alternatives.retain(|a| a.id != record.id);
        if let Some(old) = need.server.replace(chosen) {
            for step in &mut plan.workflow {
                *step = step.replace(&old.name, &record.name);
            }
            need.alternatives.insert(0, old);
        } else if let Some(step) = plan.workflow.get_mut(pick.need) {
            *step = format!("{} — with {}", need.need, record.name);
        }
        need.by_model = false;
        need.none_because = None;
        plan
    }

    /// The catalog records of a plan's servers (a server gone from the catalog is left out).
    fn records(&self, plan: &Plan) -> Vec<ServerRecord> {
        let index = self.catalog.index();
        plan.servers().iter().filter_map(|s| index.get(&s.id).cloned()).collect()
    }

    fn seal_one(
        &self,
        session_id: Uuid,
        need: &Need<'_>,
        value: &[u8],
    ) -> Result<SealedCredential, PlannerError> {
        let binding =
            Binding { session_id, server: &need.server.id, key: &need.spec.name, kind: need.kind() };
        Ok(self.vault.seal(binding, value)?)
    }

    /// Checks every credential and file of a turn against the plan and seals them all; the first
    /// problem fails the whole turn.
    fn seal_turn(
        &self,
        session_id: Uuid,
        records: &[ServerRecord],
        turn: &ChatTurn,
    ) -> Result<Vec<SealedCredential>, PlannerError> {
        let needs = needs_of(records);
        let mut sealed = Vec::new();
        for (server, values) in &turn.credentials {
            let record = resolve_server(records, server)?;
            for (key, value) in values {
                let need = resolve_key(&needs, record, key)?;
                if value.is_blank() {
                    return Err(PlannerError::EmptyCredential { server: server.clone(), key: key.clone() });
                }
                sealed.push(self.seal_one(session_id, &need, value.expose().trim().as_bytes())?);
            }
        }
        for file in &turn.files {
            let decode = || {
                base64::engine::general_purpose::STANDARD
                    .decode(file.content_base64.expose().trim())
                    .ok()
                    .map(SecretBytes::new)
            };
            sealed.push(self.seal_file(session_id, &needs, &file.name, decode)?);
        }
        Ok(sealed)
    }

    /// Seals a file for the plan's file credential that `name` names. `content` is read only once
    /// the name is known; unreadable (`None`) or empty content is refused.
    fn seal_file(
        &self,
        session_id: Uuid,
        needs: &[Need<'_>],
        name: &str,
        content: impl FnOnce() -> Option<SecretBytes>,
    ) -> Result<SealedCredential, PlannerError> {
        let need = resolve_file(needs, name)?;
        let content = content()
            .filter(|c| !c.expose().is_empty())
            .ok_or_else(|| PlannerError::InvalidFile { name: name.to_owned() })?;
        self.seal_one(session_id, &need, content.expose())
    }

    /// [`MasterAgent::settle`] for a turn that keeps the plan (files uploaded, a status asked),
    /// with the values it stored (`KEY (server)`).
    async fn settle_kept(
        &self,
        session: &Session,
        context: &mut Context,
        plan: Plan,
        records: Vec<ServerRecord>,
        received: &[String],
    ) -> Result<Settled, PlannerError> {
        let said = Said { intent: &Intent::Keep, received, change: None };
        self.settle(session, false, context, plan, records, said).await
    }

    /// Works out what is missing, makes the agent when nothing is, and writes the reply and the
    /// session's next state. Writes nothing: [`MasterAgent::save`] commits it all at once.
    async fn settle(
        &self,
        session: &Session,
        new_session: bool,
        context: &mut Context,
        plan: Plan,
        records: Vec<ServerRecord>,
        said: Said<'_>,
    ) -> Result<Settled, PlannerError> {
        let Said { intent, received, change } = said;
        // A session this turn opens has nothing stored yet.
        let stored: BTreeSet<(String, String)> = if new_session {
            BTreeSet::new()
        } else {
            self.store.credentials(session.id).await?.into_iter().map(|c| (c.server, c.key)).collect()
        };
        let missing = missing(&records, &stored);
        // Success needs something to run: a plan without servers stays pending, and so does one
        // with a step that needs a server and has none (its agent could not do the workflow).
        let complete = missing.credentials.is_empty()
            && missing.files.is_empty()
            && !records.is_empty()
            && unserved_steps(&plan).is_empty();
        let mut created = None;
        if complete && context.agent_id.is_none() {
            let record_refs: Vec<&ServerRecord> = records.iter().collect();
            let (mcp_config, skipped) = agent_config::mcp_config(&record_refs, &stored);
            let agent = Agent::new(&NewAgent {
                tenant: session.tenant.clone(),
                session_id: session.id,
                name: agent_name(&plan),
                mcp_config,
                workflow: workflow_text(&plan),
                model: self.agent_model.clone(),
                metadata: serde_json::json!({
                    "planner": self.planner.name(),
                    "servers": records.iter().map(|r| &r.id).collect::<Vec<_>>(),
                    "not_launchable": skipped,
                    "pins": verify::pins(&plan),
                    "plan": plan,
                }),
            });
            context.agent_id = Some(agent.id);
            context.agents.push(agent.id);
            created = Some(agent);
        }
        let status = if complete { ChatStatus::Success } else { ChatStatus::PendingCredentials };
        let agent_id = if complete { context.agent_id } else { None };
        let reply = compose_reply(&ReplyFacts {
            plan: &plan,
            records: &records,
            missing: &missing,
            agent_id,
            created_now: created.is_some(),
            intent,
            received,
            change,
        });
        context.plan = Some(plan);
        context.required_files = missing.files.clone();
        let state = SessionState {
            status: status.as_str().to_owned(),
            context: serde_json::to_value(&*context).unwrap_or_default(),
            required_credentials: serde_json::to_value(&missing.credentials).unwrap_or_default(),
        };
        let outcome = ChatOutcome {
            reply,
            session_id: session.id,
            required_credentials: missing.credentials,
            required_files: missing.files,
            defaults: missing.defaults,
            optional: missing.optional,
            status,
            agent_id,
            sign_in: Vec::new(),
        };
        Ok(Settled { outcome, state, agent: created })
    }
}

/// What a turn stored, as the reply acknowledges it: `KEY (server)`, never a value.
fn received(sealed: &[SealedCredential]) -> Vec<String> {
    sealed.iter().map(|c| format!("{} ({})", c.key, c.server)).collect()
}

fn missing_session(e: StoreError, id: Uuid) -> PlannerError {
    match e {
        // Deleted between the lookup and the write.
        StoreError::MissingParent(_) => PlannerError::SessionNotFound(id),
        other => other.into(),
    }
}

/// Every variable the plan's servers declare that a user may send: all but the names the
/// runtime never sets and the paths it gives each server inside its sandbox.
fn needs_of(records: &[ServerRecord]) -> Vec<Need<'_>> {
    records
        .iter()
        .flat_map(|server| server.credentials.iter().map(move |spec| Need { server, spec }))
        .filter(|n| {
            env_name_allowed(&n.spec.name)
                && !matches!(n.requirement().provide, Provide::Filled(Fill::Folder | Fill::FilePath))
        })
        .collect()
}

/// What a plan's servers still need, given the (server, key) pairs already stored.
struct Missing {
    credentials: Vec<RequiredCredential>,
    files: Vec<RequiredFile>,
    /// Settings dynamcp fills in (with what, and why).
    defaults: Vec<FilledSetting>,
    /// Settings not needed and not sent.
    optional: Vec<OptionalSetting>,
}

/// The value a filled setting gets, as the user is shown it, and why.
pub fn filled_value(spec: &CredentialSpec, fill: &Fill) -> (String, &'static str) {
    let slug = crate::catalog::record::slug(&spec.name);
    match fill {
        Fill::Value(v) => (v.clone(), "its documented default"),
        Fill::Folder => {
            (format!("{}/{slug}", crate::runtime::sandbox::HOME), "a folder of its own in its sandbox")
        }
        Fill::FilePath => {
            (format!("{}/{slug}", crate::runtime::sandbox::HOME), "a file of its own in its sandbox")
        }
        Fill::ServerDefault => ("(unset)".to_owned(), "the server's own default applies"),
    }
}

fn missing(records: &[ServerRecord], stored: &BTreeSet<(String, String)>) -> Missing {
    let mut out =
        Missing { credentials: Vec::new(), files: Vec::new(), defaults: Vec::new(), optional: Vec::new() };
    let declared =
        records.iter().flat_map(|server| server.credentials.iter().map(move |spec| Need { server, spec }));
    for need in declared.filter(|n| env_name_allowed(&n.spec.name)) {
        if stored.contains(&(need.server.id.clone(), need.spec.name.clone())) {
            continue;
        }
        let requirement = need.requirement();
        if requirement.asked()
            && let Some(app) = instructions::foreign_app(need.spec, need.server)
        {
            // Declared by the catalog, but for a product this server never mentions.
            out.optional.push(OptionalSetting {
                mcp_server: need.server.id.clone(),
                key: need.spec.name.clone(),
                description: format!(
                    "{} names {app}, which {} never mentions: most likely a catalog error, so it is not asked",
                    need.spec.name, need.server.name
                ),
            });
            continue;
        }
        match &requirement.provide {
            Provide::Filled(fill) => {
                let (value, reason) = filled_value(need.spec, fill);
                out.defaults.push(FilledSetting {
                    mcp_server: need.server.id.clone(),
                    key: need.spec.name.clone(),
                    value,
                    reason: reason.to_owned(),
                });
                continue;
            }
            Provide::Optional => {
                out.optional.push(OptionalSetting {
                    mcp_server: need.server.id.clone(),
                    key: need.spec.name.clone(),
                    description: instructions::description(need.spec, need.server),
                });
                continue;
            }
            Provide::User => {}
        }
        let description = instructions::description(need.spec, need.server);
        let steps = instructions::instructions(need.spec, need.server);
        match need.kind() {
            SecretKind::File => out.files.push(RequiredFile {
                mcp_server: need.server.id.clone(),
                file_key: need.spec.name.clone(),
                description,
                instructions: steps,
            }),
            SecretKind::Env => out.credentials.push(RequiredCredential {
                mcp_server: need.server.id.clone(),
                credential_key: need.spec.name.clone(),
                description,
                instructions: steps,
                kind: if requirement.secret { ValueKind::Secret } else { ValueKind::Setting },
            }),
        }
    }
    out
}

/// The plan's server a user-sent name means: the `mcp_server` string (the catalog id) exactly,
/// or the id or the name in any case.
fn resolve_server<'a>(records: &'a [ServerRecord], name: &str) -> Result<&'a ServerRecord, PlannerError> {
    let name = name.trim();
    records
        .iter()
        .find(|r| r.id == name)
        .or_else(|| {
            records.iter().find(|r| r.id.eq_ignore_ascii_case(name) || r.name.eq_ignore_ascii_case(name))
        })
        .ok_or_else(|| PlannerError::UnknownServer {
            server: name.to_owned(),
            expected: records.iter().map(|r| r.id.clone()).collect(),
        })
}

fn resolve_key<'a>(needs: &[Need<'a>], record: &ServerRecord, key: &str) -> Result<Need<'a>, PlannerError> {
    let own: Vec<&Need<'a>> =
        needs.iter().filter(|n| n.server.id == record.id && n.kind() == SecretKind::Env).collect();
    own.iter()
        .find(|n| n.spec.name == key.trim())
        .or_else(|| own.iter().find(|n| n.spec.name.eq_ignore_ascii_case(key.trim())))
        .map(|n| Need { server: n.server, spec: n.spec })
        .ok_or_else(|| PlannerError::UnknownKey {
            server: record.id.clone(),
            key: key.to_owned(),
            expected: own.iter().map(|n| n.spec.name.clone()).collect(),
        })
}

/// A file named by its key (when only one server asks for it) or by `<mcp_server>/<key>`.
fn resolve_file<'a>(needs: &[Need<'a>], name: &str) -> Result<Need<'a>, PlannerError> {
    let files: Vec<&Need<'a>> = needs.iter().filter(|n| n.kind() == SecretKind::File).collect();
    let name = name.trim();
    let matching: Vec<&&Need<'a>> = match name.split_once('/') {
        Some((server, key)) => files
            .iter()
            .filter(|n| {
                (n.server.id.eq_ignore_ascii_case(server) || n.server.name.eq_ignore_ascii_case(server))
                    && n.spec.name.eq_ignore_ascii_case(key)
            })
            .collect(),
        None => files.iter().filter(|n| n.spec.name.eq_ignore_ascii_case(name)).collect(),
    };
    match matching.as_slice() {
        [one] => Ok(Need { server: one.server, spec: one.spec }),
        _ => Err(PlannerError::UnknownFile {
            name: name.to_owned(),
            expected: files.iter().map(|n| format!("{}/{}", n.server.id, n.spec.name)).collect(),
        }),
    }
}

/// Decides what a message means given the current plan.
fn classify(message: &str, plan: Option<&Plan>, sends_values: bool) -> Intent {
    let text = message.trim();
    if text.is_empty() {
        return Intent::Keep;
    }
    if plan.is_some()
        && let Some((old, new)) = refinement(text)
    {
        return Intent::Refine { old, new };
    }
    if plan.is_some() {
        if let Some(target) = removal(text) {
            return Intent::Drop(target);
        }
        if let Some(addition) = addition(text) {
            return Intent::Extend(addition);
        }
    }
    match plan {
        None => Intent::Request(text.to_owned()),
        // With a plan in place, a message sent with credentials comments on them, and a word or two
        // ("thanks", "done") is small talk; anything longer asks for something new.
        Some(_) if sends_values || text.split_whitespace().count() < 3 => Intent::Keep,
        Some(_) => Intent::Request(text.to_owned()),
    }
}

/// "use Outlook instead of Gmail", "Outlook rather than Gmail", "replace Gmail with Outlook",
/// "swap Gmail for Outlook", "switch from Gmail to Outlook" → `(old, new)`.
fn refinement(text: &str) -> Option<(String, String)> {
    let lower = text.to_lowercase();
    let lower = lower.trim_end_matches(['.', '!', '?']).trim();
    let clean = |s: &str| {
        let s = s.trim().trim_matches(|c: char| !c.is_alphanumeric()).trim();
        let s = ["please ", "let's ", "lets ", "can you ", "could you "]
            .iter()
            .fold(s, |s, p| s.strip_prefix(p).unwrap_or(s));
        let s = ["use ", "switch to ", "go with ", "try ", "pick "]
            .iter()
            .fold(s, |s, p| s.strip_prefix(p).unwrap_or(s));
        s.trim().to_owned()
    };
    let pair = |old: &str, new: &str| {
        let (old, new) = (clean(old), clean(new));
        (!old.is_empty() && !new.is_empty() && old != new).then_some((old, new))
    };
    for marker in [" instead of ", " rather than "] {
        if let Some((new, old)) = lower.split_once(marker) {
            return pair(old, new);
        }
    }
    for (start, middle) in
        [("replace ", " with "), ("swap ", " for "), ("switch from ", " to "), ("change ", " to ")]
    {
        if let Some(rest) = lower.strip_prefix(start).or_else(|| lower.split_once(start).map(|(_, r)| r))
            && let Some((old, new)) = rest.split_once(middle)
        {
            return pair(old, new);
        }
    }
    None
}

/// The request with `old` swapped for `new` (case-insensitively), or, when it does not mention
/// `old`, the request with the preference added.
/// The new name takes the case the request wrote the old one in ("Gmail" → "Outlook"), as a
/// writer marks a product.
fn refined(request: &str, old: &str, new: &str) -> String {
    let lower = request.to_ascii_lowercase(); // byte offsets stay those of `request`
    match lower.find(&old.to_ascii_lowercase()) {
        Some(at) => {
            let marked = request[at..].starts_with(|c: char| c.is_uppercase());
            let new = if marked { title_case(new) } else { new.to_owned() };
            format!("{}{}{}", &request[..at], new, &request[at + old.len()..])
        }
        None => format!("{request} (use {new}, not {old})"),
    }
}

/// "microsoft outlook" → "Microsoft Outlook".
fn title_case(text: &str) -> String {
    text.split(' ')
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// "also email me the chart", "and also post it to Slack", "add a step that …" → the addition.
fn addition(text: &str) -> Option<String> {
    let lower = text.trim().to_ascii_lowercase(); // byte offsets stay those of `text`
    let rest = [
        "and also ",
        "also ",
        "additionally, ",
        "additionally ",
        "then also ",
        "plus ",
        "add a step to ",
        "add a step that ",
    ]
    .iter()
    .find_map(|p| lower.strip_prefix(p))?;
    let start = text.trim().len() - rest.len();
    let addition = text.trim()[start..].trim().trim_end_matches(['.', '!']).trim();
    (addition.split_whitespace().count() >= 2).then(|| addition.to_owned())
}

/// "drop the Slack step", "remove step 2", "skip the email step", "without Slack", "don't use
/// Slack" → what to drop (a step number or a word of the step or its server).
fn removal(text: &str) -> Option<String> {
    let lower = text.trim().trim_end_matches(['.', '!']).trim().to_lowercase();
    let rest = [
        "drop ",
        "remove ",
        "skip ",
        "delete ",
        "without ",
        "no ",
        "don't use ",
        "do not use ",
        "leave out ",
    ]
    .iter()
    .find_map(|p| {
        lower.strip_prefix(p).or_else(|| lower.strip_prefix("please ").and_then(|l| l.strip_prefix(p)))
    })?;
    let target = rest.trim_start_matches("the ").trim_end_matches(" step").trim_end_matches(" part").trim();
    let target = target.strip_prefix("step ").unwrap_or(target).trim();
    (!target.is_empty() && target.split_whitespace().count() <= 4).then(|| target.to_owned())
}

/// "first", "the second option", "third one" → 1, 2, 3.
fn ordinal(text: &str) -> Option<usize> {
    const WORDS: &[&str] = &["first", "second", "third", "fourth", "fifth", "sixth"];
    let t = text.trim().trim_start_matches("the ").trim();
    let word = t.split_whitespace().next()?;
    let rest: Vec<&str> = t.split_whitespace().skip(1).collect();
    let tail_ok =
        rest.is_empty() || matches!(rest.as_slice(), ["option"] | ["one"] | ["alternative"] | ["choice"]);
    WORDS.iter().position(|w| *w == word).filter(|_| tail_ok).map(|i| i + 1)
}

/// The current plan with the addition's steps after its own.
fn extended(current: &Plan, added: Plan, addition: &str) -> Plan {
    let mut plan = current.clone();
    plan.request = format!("{}; also {addition}", current.request.trim_end_matches(['.', '!']));
    plan.needs.extend(added.needs);
    plan.workflow.extend(added.workflow);
    plan.note = added.note.or(plan.note);
    plan
}

/// The steps `target` names: a step number, or a word of the step's text or of its server.
fn steps_named(plan: &Plan, target: &str) -> Vec<usize> {
    if let Ok(n) = target.parse::<usize>() {
        return if (1..=plan.needs.len()).contains(&n) { vec![n - 1] } else { Vec::new() };
    }
    let target = target.to_lowercase();
    (0..plan.needs.len())
        .filter(|&i| {
            let need = &plan.needs[i];
            need.need.to_lowercase().contains(&target)
                || need.server.as_ref().is_some_and(|s| {
                    s.id.to_lowercase().contains(&target) || s.name.to_lowercase().contains(&target)
                })
        })
        .collect()
}

/// The current plan without the steps `target` names (unchanged when it names none).
fn dropped(current: &Plan, target: &str) -> Plan {
    let gone = steps_named(current, target);
    let mut plan = current.clone();
    let same_shape = plan.workflow.len() == plan.needs.len();
    for &i in gone.iter().rev() {
        plan.needs.remove(i);
        if same_shape {
            plan.workflow.remove(i);
        }
    }
    if !same_shape {
        let target = target.to_lowercase();
        plan.workflow.retain(|w| !w.to_lowercase().contains(&target));
    }
    plan
}

/// What an edit did to the plan, in a sentence for the reply.
fn what_changed(before: &Plan, after: &Plan, intent: &Intent) -> Option<String> {
    let describe = |n: &PlannedNeed| match &n.server {
        Some(s) => format!("\"{}\" → {}", n.need, s.id),
        None => format!("\"{}\"", n.need),
    };
    match intent {
        Intent::Drop(target) => {
            let gone = steps_named(before, target);
            Some(if gone.is_empty() {
                let steps: Vec<String> =
                    before.needs.iter().enumerate().map(|(i, n)| format!("{}. {}", i + 1, n.need)).collect();
                format!(
                    "No step matches \"{target}\", so the plan is unchanged; its steps are: {}.",
                    steps.join("; ")
                )
            } else {
                let list: Vec<String> = gone
                    .iter()
                    .map(|&i| format!("step {} ({})", i + 1, describe(&before.needs[i])))
                    .collect();
                format!("Dropped {}.", list.join(" and "))
            })
        }
        Intent::Extend(_) => {
            let added: Vec<String> =
                after.needs[before.needs.len().min(after.needs.len())..].iter().map(describe).collect();
            Some(format!(
                "Added to the plan: {}.",
                if added.is_empty() { "nothing I could plan".to_owned() } else { added.join("; ") }
            ))
        }
        _ => None,
    }
}

/// Every step's alternatives in reply order, numbered from 1: `(step, server id)`.
fn numbered_alternatives(plan: &Plan) -> Vec<(usize, String)> {
    plan.needs
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.by_model)
        .flat_map(|(i, n)| n.alternatives.iter().map(move |a| (i, a.id.clone())))
        .collect()
}

fn agent_name(plan: &Plan) -> String {
    let names: Vec<&str> = plan.servers().iter().map(|s| s.name.as_str()).collect();
    if names.is_empty() {
        return "Agent".to_owned();
    }
    format!("{} agent", names.join(" + "))
}

fn workflow_text(plan: &Plan) -> String {
    let steps: Vec<String> =
        plan.workflow.iter().enumerate().map(|(i, s)| format!("{}. {s}", i + 1)).collect();
    let when = plan
        .schedule
        .as_ref()
        .map(|w| format!("Runs: {w} (each run is triggered from outside).\n"))
        .unwrap_or_default();
    format!("{}\n\n{when}{}", plan.request, steps.join("\n"))
}

/// Everything a reply tells.
struct ReplyFacts<'a> {
    plan: &'a Plan,
    records: &'a [ServerRecord],
    missing: &'a Missing,
    agent_id: Option<Uuid>,
    created_now: bool,
    intent: &'a Intent,
    /// What this turn stored, as `KEY (server)`.
    received: &'a [String],
    change: Option<&'a str>,
}

fn compose_reply(facts: &ReplyFacts<'_>) -> String {
    let ReplyFacts { plan, records, missing, agent_id, created_now, intent, received, change } = *facts;
    let mut out = String::new();
    if !received.is_empty() {
        out.push_str(&format!("Received and stored encrypted: {}.\n", received.join(", ")));
    }
    if let Some(change) = change {
        out.push_str(change);
        out.push('\n');
    }
    match intent {
        Intent::Refine { old, new } => out.push_str(&format!("Switched from {old} to {new}. ")),
        Intent::Pick(pick) => {
            let step = pick.need + 1;
            let need = plan.needs.get(pick.need);
            let refused = need.and_then(|n| n.did_not_start.iter().find(|g| g.id == pick.server));
            match (need.and_then(|n| n.server.as_ref()), refused) {
                (Some(s), _) if s.id == pick.server => {
                    out.push_str(&format!("Step {step} now uses {} ({}), as you asked. ", s.name, s.id))
                }
                (Some(s), Some(gone)) => out.push_str(&format!(
                    "You asked for {} ({}) in step {step}, but it does not start here ({}), so step {step} uses {} ({}). ",
                    gone.name, gone.id, gone.why, s.name, s.id
                )),
                (None, Some(gone)) => out.push_str(&format!(
                    "You asked for {} ({}) in step {step}, but it does not start here ({}). ",
                    gone.name, gone.id, gone.why
                )),
                _ => {}
            }
        }
        _ => {}
    }
    if let Some(note) = &plan.note {
        out.push_str(note);
        out.push('\n');
    }
    let servers = plan.servers();
    let options = plan.needs.iter().any(|n| n.server.is_none() && !n.alternatives.is_empty());
    if servers.is_empty() && !options {
        out.push_str(NO_SERVER_FOUND);
        for need in plan.needs.iter().filter(|n| !n.by_model) {
            out.push_str(&format!(
                "\n- \"{}\": {}.",
                need.need,
                need.none_because.as_deref().unwrap_or("nothing in the catalog fits")
            ));
        }
        return out;
    }
    if matches!(intent, Intent::Keep) {
        // The plan did not change this turn: name it in one line rather than repeat it.
        let ids: Vec<&str> = servers.iter().map(|s| s.id.as_str()).collect();
        out.push_str(&format!("The plan is unchanged ({}).\n", ids.join(", ")));
    } else {
        describe_plan(plan, records, &mut out);
    }
    if let Some(when) = plan.schedule.as_deref().filter(|_| !matches!(intent, Intent::Keep)) {
        out.push_str(&format!("\n{}\n", schedule::advice(when)));
    }
    let (credentials, files) = (&missing.credentials, &missing.files);
    if !missing.defaults.is_empty() && !matches!(intent, Intent::Keep) {
        let filled: Vec<String> = missing
            .defaults
            .iter()
            .filter(|d| d.value != "(unset)")
            .map(|d| format!("{}={} ({})", d.key, d.value, d.reason))
            .collect();
        if !filled.is_empty() {
            out.push_str(&format!("\nSettings filled in, nothing to do: {}.", filled.join(", ")));
        }
    }
    if !credentials.is_empty() || !files.is_empty() {
        let mut wanted: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for c in credentials {
            wanted.entry(&c.mcp_server).or_default().push(&c.credential_key);
        }
        for f in files {
            wanted.entry(&f.mcp_server).or_default().push(&f.file_key);
        }
        let list: Vec<String> = wanted.iter().map(|(s, keys)| format!("{s}: {}", keys.join(", "))).collect();
        out.push_str(&format!(
            "\nStill needed before I can create the agent — {}. Each item in required_credentials and required_files says how to get it. Send values as credentials {{\"<mcp_server>\": {{\"KEY\": \"value\"}}}} and files inline or to /api/sessions/<id>/files; they are stored encrypted and never shown again.",
            list.join("; ")
        ));
    } else if let Some(id) = agent_id {
        if created_now {
            out.push_str(&format!(
                "\nEverything required is in place. I created the agent {id}; its mcpServers config references your stored credentials without containing them. Export it with GET /api/agents/{id}/config?format=claude (or cursor, fast-agent)."
            ));
        } else {
            out.push_str(&format!("\nEverything required is in place; the agent is {id}."));
        }
    }
    let unserved = unserved_steps(plan);
    if agent_id.is_none() && !unserved.is_empty() {
        let steps: Vec<String> = unserved.iter().map(|i| (i + 1).to_string()).collect();
        out.push_str(&format!(
            "\nI have not created the agent: step {} needs a server and none here does it. Name a catalog server for it (\"use <id>\"), or ask again without that step.",
            steps.join(" and ")
        ));
    }
    if !missing.optional.is_empty() && !matches!(intent, Intent::Keep) {
        let keys: Vec<String> =
            missing.optional.iter().map(|o| format!("{} ({})", o.key, o.mcp_server)).collect();
        out.push_str(&format!("\nOptional, not needed for this workflow: {}.", keys.join(", ")));
    }
    out
}

/// The plan step by step: each step's server and why, its start check and alternatives, then
/// the workflow.
fn describe_plan(plan: &Plan, records: &[ServerRecord], out: &mut String) {
    let n = plan.needs.len();
    out.push_str(&format!(
        "I read your request as {n} step{} and chose an MCP server for each step that needs one:\n",
        if n == 1 { "" } else { "s" }
    ));
    let mut number = 0;
    for (i, need) in plan.needs.iter().enumerate() {
        match &need.server {
            Some(s) => {
                out.push_str(&format!("{}. \"{}\" → {} ({}): {}.\n", i + 1, need.need, s.name, s.id, s.why));
                for gone in &need.did_not_start {
                    out.push_str(&format!(
                        "   {} ({}) was the first choice but does not start here ({}), so {} is used instead.\n",
                        gone.name, gone.id, gone.why, s.name
                    ));
                }
                if let Some(start) = &s.start {
                    out.push_str(&format!("   Checked: {}.\n", start.summary()));
                }
                for a in &need.alternatives {
                    number += 1;
                    out.push_str(&format!("   [{number}] or {} ({}): {}\n", a.name, a.id, a.why));
                }
            }
            None if need.by_model => out.push_str(&format!(
                "{}. \"{}\" → the agent's model does this itself; no server needed.\n",
                i + 1,
                need.need
            )),
            None => {
                out.push_str(&format!(
                    "{}. \"{}\" → no server chosen: {}.\n",
                    i + 1,
                    need.need,
                    need.none_because.as_deref().unwrap_or("nothing in the catalog fits")
                ));
                for a in &need.alternatives {
                    number += 1;
                    out.push_str(&format!("   [{number}] {} ({}): {}\n", a.name, a.id, a.why));
                }
            }
        }
    }
    if number > 0 {
        out.push_str("To use an alternative, reply with its number (or any catalog server's id).\n");
    }
    out.push_str("\nWorkflow:\n");
    for (i, step) in plan.workflow.iter().enumerate() {
        out.push_str(&format!("{}. {step}\n", i + 1));
    }
    let not_launchable: Vec<&str> = records.iter().filter(|r| !r.runnable()).map(|r| r.id.as_str()).collect();
    if !not_launchable.is_empty() {
        out.push_str(&format!(
            "\nNote: {} has no launch spec in the catalog, so the agent cannot start it.\n",
            not_launchable.join(", ")
        ));
    }
}

/// The steps (0-based) that need a server and have none.
fn unserved_steps(plan: &Plan) -> Vec<usize> {
    (0..plan.needs.len()).filter(|&i| !plan.needs[i].by_model && plan.needs[i].server.is_none()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refinements_are_recognised() {
        assert_eq!(refinement("use Outlook instead of Gmail"), Some(("gmail".into(), "outlook".into())));
        assert_eq!(
            refinement("Please use outlook rather than gmail."),
            Some(("gmail".into(), "outlook".into()))
        );
        assert_eq!(refinement("replace gmail with outlook"), Some(("gmail".into(), "outlook".into())));
        assert_eq!(refinement("switch from Slack to Discord"), Some(("slack".into(), "discord".into())));
        assert_eq!(refinement("check my gmail for invoices"), None);
        assert_eq!(refined("monitor my Gmail inbox", "gmail", "outlook"), "monitor my Outlook inbox");
        assert_eq!(refined("monitor my gmail inbox", "gmail", "outlook"), "monitor my outlook inbox");
        assert_eq!(refined("monitor mail", "gmail", "outlook"), "monitor mail (use outlook, not gmail)");
    }

    #[test]
    fn messages_are_classified_against_the_plan() {
        let plan = Plan { request: "x".into(), needs: vec![], workflow: vec![], note: None, schedule: None };
        assert!(matches!(classify("monitor gmail", None, false), Intent::Request(_)));
        assert!(matches!(classify("thanks!", Some(&plan), false), Intent::Keep));
        assert!(matches!(classify("here is my token for gmail", Some(&plan), true), Intent::Keep));
        assert!(matches!(
            classify("now also post a summary to slack", Some(&plan), false),
            Intent::Request(_)
        ));
        assert!(matches!(classify("use Outlook instead of Gmail", Some(&plan), true), Intent::Refine { .. }));
        assert!(
            matches!(classify("also email me the chart", Some(&plan), false), Intent::Extend(a) if a == "email me the chart")
        );
        assert!(
            matches!(classify("drop the Slack step", Some(&plan), false), Intent::Drop(t) if t == "slack")
        );
        assert!(matches!(classify("remove step 2", Some(&plan), false), Intent::Drop(t) if t == "2"));
        assert!(matches!(classify("also email me the chart", None, false), Intent::Request(_)));
        assert!(
            matches!(classify("also İstanbul weather to Slack", Some(&plan), false), Intent::Extend(a) if a == "İstanbul weather to Slack")
        );
        assert_eq!(ordinal("the second option"), Some(2));
        assert_eq!(ordinal("first"), Some(1));
        assert_eq!(ordinal("second thoughts about slack"), None);
    }
}
