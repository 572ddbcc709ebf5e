//! A plan: the request's needs, one chosen server per need, and the workflow steps. Planners
//! produce it; the master agent turns it into credential requests and, once complete, an agent.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::PlannerError;
use super::choice::{self, ChoiceSettings, Scored};
use super::steps;
use crate::catalog::verified::Verification;
use crate::catalog::{Catalog, SearchConfig};
use crate::store::Message;

/// One server chosen for a need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChosenServer {
    /// Catalog id: the `mcp_server` string in `required_credentials` and the `mcpServers` key.
    pub id: String,
    pub name: String,
    /// Why it was picked, in a sentence.
    pub why: String,
    /// The tools that answer the need.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Whether it installs and starts here (see `planner::verify`); `None` when not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Verification>,
}

/// A candidate that was chosen and did not start here, so the next one was used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotStarted {
    pub id: String,
    pub name: String,
    pub why: String,
}

/// One need of the request and the server chosen for it (`None`: the agent's model does it
/// itself, or nothing in the catalog fits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedNeed {
    pub need: String,
    pub server: Option<ChosenServer>,
    /// A step such as "extract the data" or "summarise it": work for the agent's model, not a tool.
    #[serde(default)]
    pub by_model: bool,
    /// Other servers that would do, best first: the user can pick one by number or id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alternatives: Vec<ChosenServer>,
    /// Further candidates, never offered: the next tried when a server does not start here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reserve: Vec<ChosenServer>,
    /// Why no server was chosen, when none was and the model cannot do it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub none_because: Option<String>,
    /// Servers chosen first that did not install or start here, in the order tried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub did_not_start: Vec<NotStarted>,
}

impl PlannedNeed {
    /// A step the agent's model does itself.
    pub fn by_model(need: &str) -> Self {
        Self { by_model: true, ..Self::served(need, None) }
    }

    /// A step served by `server` (or, with `None`, by nothing found).
    pub fn served(need: &str, server: Option<ChosenServer>) -> Self {
        Self {
            need: need.to_owned(),
            server,
            by_model: false,
            alternatives: vec![],
            reserve: vec![],
            none_because: None,
            did_not_start: vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The request this plan answers (after refinements).
    pub request: String,
    pub needs: Vec<PlannedNeed>,
    pub workflow: Vec<String>,
    /// Something the user should know about how the plan was made (e.g. the model failed and the
    /// offline planner answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When the request wants the agent to run ("every Friday"), as written: kept in the
    /// workflow; dynamcp itself schedules nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

impl Plan {
    /// The chosen servers, each once, in need order.
    pub fn servers(&self) -> Vec<&ChosenServer> {
        let mut out: Vec<&ChosenServer> = Vec::new();
        for s in self.needs.iter().filter_map(|n| n.server.as_ref()) {
            if !out.iter().any(|o| o.id == s.id) {
                out.push(s);
            }
        }
        out
    }
}

/// Turns a request (and the conversation so far) into a plan.
#[async_trait]
pub trait Planner: Send + Sync {
    /// A short name for logs and the agent's metadata.
    fn name(&self) -> &'static str;
    async fn plan(&self, request: &str, history: &[Message]) -> Result<Plan, PlannerError>;

    /// Plans `request`, a change of `current` ("use Outlook instead of Gmail"). By default a new
    /// plan; a planner that can keep the servers of the steps the change leaves alone does.
    async fn replan(&self, request: &str, current: &Plan, history: &[Message]) -> Result<Plan, PlannerError> {
        let _ = current;
        self.plan(request, history).await
    }
}

/// Hits considered per need: enough for the choice to find the product's own server and a
/// published one among near-duplicates. Most hits are records that cannot be launched (no
/// published package), so fifteen often left the choice two or three.
const CANDIDATES: usize = 40;
/// Servers relevant to a whole request, which a step's server that names no service must be among.
const REQUEST_CANDIDATES: usize = 80;

/// The deterministic planner that needs no LLM: the search engine splits the request into needs
/// and ranks servers per need; [`choice::choose`] picks the one an expert would run.
pub struct OfflinePlanner {
    catalog: Arc<Catalog>,
    choice: ChoiceSettings,
}

impl OfflinePlanner {
    pub fn new(catalog: Arc<Catalog>, choice: ChoiceSettings) -> Self {
        Self { catalog, choice }
    }
}

impl ChosenServer {
    pub fn from_scored(s: &Scored<'_>) -> Self {
        Self {
            id: s.record.id.clone(),
            name: s.record.name.clone(),
            why: s.why.clone(),
            tools: s.tools.clone(),
            start: None,
        }
    }
}

#[async_trait]
impl Planner for OfflinePlanner {
    fn name(&self) -> &'static str {
        "offline"
    }

    async fn plan(&self, request: &str, _history: &[Message]) -> Result<Plan, PlannerError> {
        let index = self.catalog.index();
        let request = strip_preamble(request);
        let mut needs_text = index.plan_needs(request);
        if needs_text.is_empty() {
            needs_text.push(request.trim().to_owned());
        }
        // A request that names no product and no task the catalog knows ("help me be more
        // productive", "purple monkey dishwasher") gets a question, not a guess.
        let vague = needs_text.len() == 1
            && index.services(request).is_empty()
            && crate::catalog::intents::extra(request).is_none();
        let steps = steps::steps_of(&index, needs_text);
        // Each need is ranked on its own (the request-wide search interleaves the needs and gives
        // each server to one need only); the needs are embedded together.
        // A step that sends an email and names no provider is searched as sending email: its
        // message's words would pull in servers for their subject.
        let query = |text: &str| match crate::catalog::intents::message_step(text) {
            Some(q) if index.services(text).is_empty() => q.to_owned(),
            _ => text.to_owned(),
        };
        let searched: Vec<String> = steps.iter().filter(|s| !s.by_model).map(|s| query(&s.text)).collect();
        let single = SearchConfig { decompose: false, ..SearchConfig::default() };
        let mut found = self.catalog.search_each(&searched, CANDIDATES, single).await?.into_iter();
        // What the whole request is about, for the steps split from it.
        let whole = if searched.len() > 1 {
            let found =
                self.catalog.search_each(&[request.trim().to_owned()], REQUEST_CANDIDATES, single).await?;
            Some(found.into_iter().flat_map(|f| f.hits).map(|h| h.doc).collect::<HashSet<u32>>())
        } else {
            None
        };
        let mut needs = Vec::with_capacity(steps.len());
        for step in &steps {
            let need = step.text.as_str();
            if step.by_model {
                needs.push(PlannedNeed::by_model(need));
                continue;
            }
            let found = found.next().unwrap_or_default();
            let choice = choice::choose(&index, &query(need), &found.hits, whole.as_ref(), &self.choice);
            let sure = choice.chosen.as_ref().is_some_and(|c| c.coverage >= SURE_COVERAGE);
            if vague && !sure {
                needs.push(question(need, &choice));
                continue;
            }
            needs.push(PlannedNeed {
                alternatives: choice.alternatives.iter().map(ChosenServer::from_scored).collect(),
                reserve: choice.reserve.iter().map(ChosenServer::from_scored).collect(),
                none_because: choice.none_because,
                ..PlannedNeed::served(need, choice.chosen.as_ref().map(ChosenServer::from_scored))
            });
        }
        let workflow = needs.iter().map(workflow_step).collect();
        Ok(Plan { request: request.trim().to_owned(), needs, workflow, note: None, schedule: None })
    }
}

/// How much of a vague request's wording (idf-weighted) the best server's own text must hold
/// for it to be chosen without asking: half. Set on the development plan set (`plans.jsonl`),
/// where it kept all but three of the 150 steps served before and refused half the nonsense.
const SURE_COVERAGE: f32 = 0.5;

/// The step of a request too vague to plan: no server chosen, the best candidates offered as
/// options the user picks by number, or none when nothing relevant was found.
fn question(need: &str, choice: &choice::Choice<'_>) -> PlannedNeed {
    let options: Vec<ChosenServer> =
        choice.chosen.iter().chain(&choice.alternatives).take(3).map(ChosenServer::from_scored).collect();
    PlannedNeed {
        // With no candidate at all, the search's own reason says it best.
        none_because: if options.is_empty() {
            choice.none_because.clone()
        } else {
            Some(
                "it names no service or task I can match with confidence; which of these do you mean? Reply with its number, or name the service"
                    .to_owned(),
            )
        },
        alternatives: options,
        ..PlannedNeed::served(need, None)
    }
}

/// "Create an agent that monitors my Gmail" → "monitors my Gmail": the framing names no need.
fn strip_preamble(request: &str) -> &str {
    let trimmed = request.trim();
    let lower = trimmed.to_lowercase();
    for verb in ["create", "build", "make", "set up", "setup", "give me", "i want", "i need", "i'd like"] {
        for article in [" an ", " a ", " me an ", " me a "] {
            for noun in ["agent", "bot", "assistant", "workflow", "automation"] {
                for link in [" that ", " which ", " to ", " who "] {
                    let prefix = format!("{verb}{article}{noun}{link}");
                    if lower.starts_with(&prefix) {
                        return trimmed[prefix.len()..].trim();
                    }
                }
            }
        }
    }
    trimmed
}

/// One step of a plan's workflow: the need and what does it.
pub fn workflow_step(n: &PlannedNeed) -> String {
    match &n.server {
        Some(s) if !s.tools.is_empty() => {
            format!("{} — with {} ({})", capitalise(&n.need), s.name, s.tools.join(", "))
        }
        Some(s) => format!("{} — with {}", capitalise(&n.need), s.name),
        None if n.by_model => format!("{} — by the agent's model, no tool needed", capitalise(&n.need)),
        None => format!(
            "{} — no server chosen: {}",
            capitalise(&n.need),
            n.none_because.as_deref().unwrap_or("nothing in the catalog fits")
        ),
    }
}

fn capitalise(s: &str) -> String {
    let mut chars = s.trim().chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_framing_of_a_request_is_not_a_need() {
        assert_eq!(strip_preamble("Create an agent that monitors my Gmail"), "monitors my Gmail");
        assert_eq!(strip_preamble("build me a bot to post to Slack"), "post to Slack");
        assert_eq!(strip_preamble("what time is it in Tokyo"), "what time is it in Tokyo");
    }
}
