//! A plan: the request's needs, one chosen server per need, and the workflow steps. Planners
//! produce it; the master agent turns it into credential requests and, once complete, an agent.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::PlannerError;
use super::choice::{self, ChoiceSettings, Scored};
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
}

/// Hits considered per need: enough for the choice to find the product's own server and a
/// published one among near-duplicates.
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
        let steps = steps_of(&index, needs_text);
        // Each need is ranked on its own (the request-wide search interleaves the needs and gives
        // each server to one need only); the needs are embedded together.
        let searched: Vec<String> = steps.iter().filter(|s| !s.by_model).map(|s| s.text.clone()).collect();
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
            let choice = choice::choose(&index, need, &found.hits, whole.as_ref(), &self.choice);
            needs.push(PlannedNeed {
                alternatives: choice.alternatives.iter().map(ChosenServer::from_scored).collect(),
                reserve: choice.reserve.iter().map(ChosenServer::from_scored).collect(),
                none_because: choice.none_because,
                ..PlannedNeed::served(need, choice.chosen.as_ref().map(ChosenServer::from_scored))
            });
        }
        let workflow = needs.iter().map(workflow_step).collect();
        Ok(Plan { request: request.trim().to_owned(), needs, workflow, note: None })
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

/// The steps of a plan from the search's needs. A short fragment that names no service and
/// implies none ("Oct 10-14", "priority High", "label it bug") is an argument of the step before
/// it, not a step; a step that asks for an answer ("tell me who is on call", "give me the gist")
/// is the model's, unless it says where the answer goes ("tell me on Slack").
fn steps_of(index: &crate::catalog::SearchIndex, needs: Vec<String>) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::with_capacity(needs.len());
    for need in needs {
        let names = index.products(&need);
        let implied = crate::catalog::intents::extra(&need).is_some();
        let short = need.split_whitespace().count() <= ARGUMENT_WORDS && !opens_a_step(&need);
        match out.last_mut() {
            // Never onto a service's bare name, split from a clause that names two.
            Some(previous)
                if short
                    && names.is_empty()
                    && !implied
                    && !choice::is_bare_name(&previous.text, &index.products(&previous.text)) =>
            {
                previous.text.push_str(", ");
                previous.text.push_str(&need);
            }
            _ => {
                let by_model =
                    is_model_step(&need) || (!out.is_empty() && !implied && is_asking(&need, &names));
                out.push(Step { text: need, by_model });
            }
        }
    }
    out
}

/// One step of a request: its words, and whether the agent's model does it without a tool.
struct Step {
    text: String,
    by_model: bool,
}

/// At most this many words, a fragment with no service in it is an argument of the step before.
const ARGUMENT_WORDS: usize = 4;

/// Whether a short fragment is a step of its own: it opens with an action ("run the tests",
/// "email Tom"). An action on "it" is one on the step before ("call it 'focus'", "label it
/// bug"), unless it sends or keeps that ("email it to Tom", "save it").
fn opens_a_step(fragment: &str) -> bool {
    let words = crate::catalog::text::plain_words(fragment);
    let Some(verb) = words.first().map(String::as_str) else { return false };
    if DELIVERY.contains(&verb) {
        return true;
    }
    ACTIONS.contains(&verb) && !matches!(words.get(1).map(String::as_str), Some("it" | "them"))
}

/// Verbs that send or keep what the steps before produced.
const DELIVERY: &[&str] = &[
    "email", "mail", "send", "text", "message", "post", "notify", "ping", "share", "remind", "alert",
    "tweet", "forward", "upload", "save", "store", "export", "book", "schedule",
];

/// Verbs of other actions a step can open with.
const ACTIONS: &[&str] = &[
    "run",
    "execute",
    "open",
    "create",
    "add",
    "delete",
    "remove",
    "update",
    "buy",
    "order",
    "find",
    "search",
    "get",
    "fetch",
    "check",
    "read",
    "write",
    "download",
    "install",
    "deploy",
    "translate",
    "convert",
    "play",
    "skip",
    "pause",
    "turn",
    "set",
    "start",
    "stop",
    "restart",
    "scale",
    "close",
    "merge",
    "approve",
    "assign",
    "move",
    "rename",
    "copy",
    "print",
    "look",
    "query",
    "draft",
    "reply",
    "invite",
    "cancel",
    "track",
    "monitor",
    "watch",
    "scrape",
    "crawl",
    "browse",
    "generate",
    "make",
];

/// Openings of a step that asks the model for an answer.
const ASKING: &[&str] =
    &["tell me", "give me", "let me know", "explain", "show me", "summarize", "summarise"];

/// Words that open a question.
const QUESTION_WORDS: &[&str] =
    &["who", "what", "which", "whether", "if", "when", "where", "how", "why", "whose", "whom"];

/// Words for a digest of what other steps fetched.
const DIGESTS: &[&str] =
    &["gist", "summary", "tldr", "tl dr", "short version", "highlights", "key points", "main points"];

/// Whether `need` asks for an answer and names no service as where it goes ("on Slack", "to
/// my Notion"): a service named after a preposition is a destination, not the answer's subject.
fn is_asking(need: &str, names: &[String]) -> bool {
    let plain = crate::catalog::text::plain_words(need);
    let mut rest: &[String] = &plain;
    while let Some((first, tail)) = rest.split_first()
        && matches!(first.as_str(), "just" | "then" | "and" | "also" | "please" | "so" | "now")
    {
        rest = tail;
    }
    let opening = rest.join(" ");
    let Some(asked) = ASKING
        .iter()
        .find_map(|a| if opening == *a { Some("") } else { opening.strip_prefix(&format!("{a} ")) })
    else {
        return false;
    };
    // "tell me who is on call", "give me the gist": a question about, or a digest of, what was
    // fetched. "tell me the current time in Tokyo" asks for something new.
    let first = asked.split(' ').next().unwrap_or_default();
    if !QUESTION_WORDS.contains(&first)
        && !DIGESTS.iter().any(|d| format!(" {asked} ").contains(&format!(" {d} ")))
    {
        return false;
    }
    let padded = format!(" {opening} ");
    !names.iter().any(|n| {
        let n = crate::catalog::text::plain_words(n).join(" ");
        ["on", "in", "via", "through", "with", "to", "into", "using", "from"]
            .iter()
            .any(|p| padded.contains(&format!(" {p} {n} ")) || padded.contains(&format!(" {p} my {n} ")))
    })
}

/// Verbs of a step the model does on its own: processing what other steps fetched.
const MODEL_VERBS: &[&str] = &[
    "extract",
    "extracts",
    "extracting",
    "parse",
    "parses",
    "parsing",
    "summarize",
    "summarizes",
    "summarise",
    "summarises",
    "summarizing",
    "analyze",
    "analyzes",
    "analyse",
    "analyses",
    "classify",
    "classifies",
    "categorize",
    "categorise",
    "process",
    "processes",
    "pull",
    "pulls",
    "figure",
    "determine",
];

/// Objects such a step works on.
const MODEL_OBJECTS: &[&str] = &[
    "out",
    "data",
    "details",
    "detail",
    "info",
    "information",
    "fields",
    "content",
    "contents",
    "key",
    "relevant",
    "important",
    "amounts",
    "totals",
    "text",
    "summary",
    "it",
    "them",
    "this",
    "that",
    "these",
    "those",
    "each",
    "one",
];

/// Whether a need is only processing ("extracts the data", "summarise them"): a processing verb,
/// and nothing but generic objects besides (no service, no place to read or write).
fn is_model_step(need: &str) -> bool {
    let words: Vec<String> = crate::catalog::text::words(need)
        .into_iter()
        .filter(|w| !crate::catalog::text::is_stop_word(w))
        .collect();
    words.iter().any(|w| MODEL_VERBS.contains(&w.as_str()))
        && words.iter().all(|w| MODEL_VERBS.contains(&w.as_str()) || MODEL_OBJECTS.contains(&w.as_str()))
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
    fn framing_and_processing_steps_are_not_services() {
        assert_eq!(strip_preamble("Create an agent that monitors my Gmail"), "monitors my Gmail");
        assert_eq!(strip_preamble("build me a bot to post to Slack"), "post to Slack");
        assert_eq!(strip_preamble("what time is it in Tokyo"), "what time is it in Tokyo");
        assert!(is_model_step("extracts the data"));
        assert!(is_model_step("summarise them"));
        assert!(!is_model_step("saves it to a Google Sheet"));
        assert!(!is_model_step("extract text from a PDF"));
        assert!(!is_model_step("the data"));
    }

    fn index(names: &[&str]) -> crate::catalog::SearchIndex {
        let servers = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut r = crate::catalog::record::tests::record(&format!("s{i}"));
                r.name = (*name).to_owned();
                r
            })
            .collect();
        crate::catalog::SearchIndex::build(servers)
    }

    fn shaped(index: &crate::catalog::SearchIndex, needs: &[&str]) -> Vec<(String, bool)> {
        steps_of(index, needs.iter().map(|n| (*n).to_owned()).collect())
            .into_iter()
            .map(|s| (s.text, s.by_model))
            .collect()
    }

    #[test]
    fn arguments_join_their_step_and_questions_are_the_model_s() {
        let index = index(&[
            "Slack MCP",
            "Slack Server",
            "Slack Bot",
            "Airbnb MCP",
            "Airbnb Search",
            "Airbnb Finder",
        ]);
        // "Oct 10-14" and "under $150 a night" say which listings; they are not steps.
        assert_eq!(
            shaped(&index, &["find an airbnb in Lisbon for 2 people", "Oct 10-14", "under $150 a night"]),
            [("find an airbnb in Lisbon for 2 people, Oct 10-14, under $150 a night".to_owned(), false)]
        );
        // An answer the model gives from what the step before fetched.
        assert_eq!(
            shaped(&index, &["find the on-call page", "tell me who is on call next week"]),
            [
                ("find the on-call page".to_owned(), false),
                ("tell me who is on call next week".to_owned(), true)
            ]
        );
        assert_eq!(
            shaped(&index, &["read the report", "just give me the gist"])[1],
            ("just give me the gist".to_owned(), true)
        );
        // Where the answer goes is a step of its own, and so is a need the words imply.
        assert_eq!(
            shaped(&index, &["read the report", "tell me on Slack"])[1],
            ("tell me on Slack".to_owned(), false)
        );
        assert_eq!(
            shaped(&index, &["look up the museum", "give me directions from the station"])[1],
            ("give me directions from the station".to_owned(), false)
        );
        // However short, a step that sends or keeps something, or that acts, is a step.
        assert_eq!(shaped(&index, &["find the invoice", "email it to Tom"]).len(), 2);
        assert_eq!(shaped(&index, &["check the time", "run `touch /tmp/x`"]).len(), 2);
        assert_eq!(shaped(&index, &["block two hours", "call it 'focus'"]).len(), 1);
        // Asked for something new, not about what was fetched: a step of its own.
        assert_eq!(
            shaped(&index, &["echo my messages back", "tell me the current time in Tokyo"])[1],
            ("tell me the current time in Tokyo".to_owned(), false)
        );
        // A question alone is the request, not an answer to another step.
        assert_eq!(shaped(&index, &["tell me the weather"]), [("tell me the weather".to_owned(), false)]);
    }
}
