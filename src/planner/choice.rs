//! Choosing is not searching. Search returns the servers relevant to a step; the choice picks
//! the one an expert would run and says why in a few words, keeping up to two alternatives.
//!
//! Candidates are the search's best for one step and, when the step names a product, the
//! product's published servers that search ranked lower (a terse record of the most used one is
//! often outranked by dozens of near-duplicates); when it names none, the MCP reference servers
//! that hold the step's catalog words (the reference fetch server for "grab https://…"). One
//! server listed twice is offered once.
//!
//! Signals, per candidate:
//! - *identity*: when the step names a service ("Google Sheet", "GitHub"), a candidate must be
//!   for that service: its name, id, package, repository or description names it. An Excel
//!   server is never chosen for a Google Sheet;
//! - *coverage*: how much of the step's wording (idf-weighted) the candidate's own text holds.
//!   Servers that rank for everything through meaning alone (memory, sequential thinking) cover
//!   little of a specific step, and below [`ChoiceSettings::min_coverage`] nothing is chosen:
//!   the planner says so instead of guessing;
//! - *official*: the product's own organisation publishes it (repository owner, package scope,
//!   or the domain of its hosted endpoint), or it is one of the MCP reference servers;
//! - *popularity*: registry use (npm downloads a month, PyPI download rank, Smithery uses);
//! - *launchable*: a published package for a runtime this machine has, a listed image or a
//!   remote URL; a package name no registry confirms is a last resort;
//! - *relevance*: the search's own score, relative to the step's best; a step that names no
//!   service takes only servers within [`ChoiceSettings::min_relevance`] of it, and a step that
//!   is nothing but a service's name only servers relevant to the whole request.
//!
//! Once a server clearly does the step, provenance and registry use weigh more than small
//! differences of relevance: an expert runs the product's own server, else a reference one,
//! else the most used.

use serde::{Deserialize, Serialize};

use crate::catalog::text::terms;
use crate::catalog::{Hit, LaunchKind, Launchability, SearchIndex, ServerRecord, intents};

/// How the planner chooses; plain settings, filled by whoever builds the planner.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceSettings {
    /// Launch kinds this machine can run; servers with none of them are never chosen.
    pub runnable: Vec<LaunchKind>,
    /// The least idf-weighted share of a step's words the chosen server's text must hold.
    pub min_coverage: f32,
    /// The least search score, relative to the step's best, of a server chosen for a step that
    /// names no service.
    pub min_relevance: f32,
    /// Alternatives kept per step (offered to the user).
    pub alternatives: usize,
    /// Further candidates kept behind them, best first, for a server that does not start here
    /// to be replaced by (never offered).
    pub reserve: usize,
    /// The rule before the choice step, kept to compare with: the most relevant server that
    /// can be launched, no other signal.
    pub relevance_only: bool,
}

impl Default for ChoiceSettings {
    fn default() -> Self {
        Self {
            runnable: vec![LaunchKind::Npm, LaunchKind::Pypi, LaunchKind::Docker, LaunchKind::Remote],
            min_coverage: 0.3,
            min_relevance: 0.5,
            alternatives: 2,
            reserve: 5,
            relevance_only: false,
        }
    }
}

/// Whether the product's own organisation publishes a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provenance {
    Community,
    /// One of the Model Context Protocol project's reference servers.
    Reference,
    /// Published by the organisation of the service the step names.
    Vendor,
}

/// One candidate, scored.
#[derive(Debug, Clone)]
pub struct Scored<'a> {
    pub record: &'a ServerRecord,
    pub tools: Vec<String>,
    pub score: f32,
    pub provenance: Provenance,
    pub coverage: f32,
    pub launch: Launchability,
    /// The service the step names that this server is for, as the user wrote it.
    pub service: Option<String>,
    /// Why, in a few words.
    pub why: String,
}

/// The choice for one step.
#[derive(Debug, Clone, Default)]
pub struct Choice<'a> {
    pub chosen: Option<Scored<'a>>,
    pub alternatives: Vec<Scored<'a>>,
    /// The next candidates after the alternatives (see [`ChoiceSettings::reserve`]).
    pub reserve: Vec<Scored<'a>>,
    /// Why nothing was chosen, when nothing was.
    pub none_because: Option<String>,
}

/// Picks a server for `step` among its search hits (best first). `request`: for a step split
/// from a longer request, the servers relevant to the whole request; a server for a step that
/// names no service must be one of them (a fragment such as "priority High" or "around 30
/// songs" is an argument of another step, and servers that match only it are noise).
pub fn choose<'a>(
    index: &'a SearchIndex,
    step: &str,
    hits: &[Hit],
    request: Option<&std::collections::HashSet<u32>>,
    settings: &ChoiceSettings,
) -> Choice<'a> {
    let Some(top) = hits.first().map(|h| h.score).filter(|s| *s > 0.0) else {
        return Choice {
            none_because: Some("nothing in the catalog matches it".to_owned()),
            ..Choice::default()
        };
    };
    let named: Vec<String> = index.products(step).iter().map(|p| brand(p)).collect();
    let bare = is_bare_name(step, &named);
    let implied = intents::extra(step);
    let extra = if settings.relevance_only {
        Vec::new()
    } else if named.is_empty() {
        reference_candidates(index, step, implied.as_deref(), hits, settings)
    } else {
        product_candidates(index, &named, hits, settings)
    };
    let covers =
        |doc: u32| index.coverage(doc, step).max(implied.as_deref().map_or(0.0, |e| index.coverage(doc, e)));
    // The most used server for the product the step names, and the most of the step any of its
    // servers holds: what an official server is credited with when its channel counts no use or
    // its record lists no tools (see `vendor_use`). Not when the vendor also publishes a package
    // with counted use: its container image is then the lesser way to run the same server.
    let mut product_use = 0.0;
    let mut product_coverage = 0.0;
    let mut vendor_counted = false;
    let mut vendor_runs_locally = false;
    for hit in hits.iter().chain(&extra) {
        let record = index.record(hit.doc);
        let Some(service) = named.iter().find(|s| identity(record, s).is_some()) else {
            continue;
        };
        product_use = f32::max(product_use, popularity(record));
        product_coverage = f32::max(product_coverage, covers(hit.doc));
        let vendor = provenance(record, Some(service)) == Provenance::Vendor;
        vendor_counted |= record.monthly_use() > 0 && vendor;
        vendor_runs_locally |= vendor && !signs_in_by_browser(record);
    }
    let credited = if vendor_counted { 0.0 } else { product_use };
    let mut eligible = Vec::new();
    let mut wrong_service = 0;
    let mut unlaunchable = 0;
    let mut weak = 0;
    for hit in hits.iter().chain(&extra) {
        let record = index.record(hit.doc);
        let launch = launchability(record, &settings.runnable);
        if launch == Launchability::No {
            unlaunchable += 1;
            continue;
        }
        if settings.relevance_only {
            let only = Scored {
                record,
                tools: hit.matched_tools.clone(),
                score: hit.score,
                provenance: Provenance::Community,
                coverage: 0.0,
                launch,
                service: None,
                why: "the most relevant server that can be launched".to_owned(),
            };
            return Choice { chosen: Some(only), ..Choice::default() };
        }
        let service = if named.is_empty() {
            None
        } else {
            match named
                .iter()
                .filter_map(|s| identity(record, s).map(|w| (s, w)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
            {
                Some((s, weight)) => Some((s.clone(), weight)),
                None => {
                    wrong_service += 1;
                    continue;
                }
            }
        };
        let coverage = covers(hit.doc);
        let relevance = hit.score / top;
        // A server for the service the step names needs no more proof of relevance, unless the
        // step is nothing but that name ("deep" split from "deep work"): then it must also be
        // relevant to the whole request.
        let off_request = request.is_some_and(|r| !r.contains(&hit.doc)) && implied.is_none();
        if (service.is_none() && (coverage < settings.min_coverage || relevance < settings.min_relevance))
            || (off_request && (service.is_none() || bare))
        {
            weak += 1;
            continue;
        }
        let provenance = provenance(record, service.as_ref().map(|(s, _)| s.as_str()));
        // The product's own server whose record lists no tools is taken to do what the
        // product's other servers do: an empty record says nothing against it.
        let coverage = if provenance == Provenance::Vendor && record.tools.is_empty() {
            coverage.max(product_coverage)
        } else {
            coverage
        };
        // Among servers that do the step, an expert runs the product's own, else a reference
        // server, else the most used: relevance decides less once a server clearly does it, and
        // among servers for the product the step names, search's wording differences say
        // little about which one an expert runs; registry use says more.
        let (relevance_weight, use_weight) = if service.is_some() { (0.10, 0.40) } else { (0.25, 0.30) };
        let score = relevance_weight * relevance
            + 0.15 * coverage
            + use_weight * vendor_use(record, provenance, credited, vendor_runs_locally)
            + match provenance {
                Provenance::Vendor => 0.25,
                Provenance::Reference => 0.15,
                Provenance::Community => 0.0,
            }
            + service.as_ref().map_or(0.0, |(_, w)| 0.10 * w)
            + match launch {
                Launchability::Published => 0.05,
                Launchability::Listed => 0.03,
                Launchability::Unknown => 0.0,
                // Most such names were guessed from a server's name and were never published.
                Launchability::Unconfirmed | Launchability::No => -0.25,
            }
            + if record.tools.is_empty() { 0.0 } else { 0.02 };
        eligible.push(Scored {
            record,
            tools: hit.matched_tools.clone(),
            score,
            provenance,
            coverage,
            launch,
            service: service.map(|(s, _)| s),
            why: String::new(),
        });
    }
    eligible.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.record.id.cmp(&b.record.id)));
    // One server listed twice is offered once: an alternative that launches the same package
    // is no alternative.
    let mut launches = std::collections::HashSet::new();
    eligible.retain(|s| s.record.launch_key().is_none_or(|k| launches.insert(k)));
    let most_used = eligible.iter().map(|s| s.record.monthly_use()).max().unwrap_or(0);
    let count = eligible.len();
    for s in &mut eligible {
        s.why = why(s, most_used, count);
    }
    let mut rest = eligible.into_iter();
    let chosen = rest.next();
    let none_because = chosen.is_none().then(|| {
        if wrong_service > 0 && !named.is_empty() {
            format!("no server in the catalog that I can start is for {}", named.join(" or "))
        } else if unlaunchable > 0 && weak == 0 {
            "the servers that match it cannot be started here (no published package or launch spec)"
                .to_owned()
        } else {
            "no server in the catalog does this clearly enough".to_owned()
        }
    });
    let alternatives = rest.by_ref().take(settings.alternatives).collect();
    Choice { chosen, alternatives, reserve: rest.take(settings.reserve).collect(), none_because }
}

/// Parts of a product that name no product of their own: "GitHub issues" are GitHub's.
const FEATURES: &[&str] = &[
    "issue",
    "issues",
    "pull",
    "pulls",
    "request",
    "requests",
    "pr",
    "prs",
    "repo",
    "repos",
    "repository",
    "repositories",
    "api",
    "apis",
    "ticket",
    "tickets",
];

/// The product a mention names, without the feature it names with it: a server for GitHub
/// serves "GitHub issues" whether or not its record says "issues".
fn brand(product: &str) -> String {
    let mut words: Vec<&str> = product.split_whitespace().collect();
    while words.len() > 1 && words.last().is_some_and(|w| FEATURES.contains(&w.to_lowercase().as_str())) {
        words.pop();
    }
    words.join(" ")
}

/// Most servers for a named product that join a step's candidates beyond its search hits.
const PRODUCT_CANDIDATES: usize = 10;

/// The servers for a product the step names that its search hits missed, most used first: the
/// product's own or most used server often has a terse record ("Tavily MCP", no tools listed)
/// that dozens of near-duplicates outrank, so search alone would never offer it. Only servers
/// whose own name, id, package or repository names the product and that are published or
/// listed join, after the hits and as relevant as the last of them (search ranked them lower).
fn product_candidates(
    index: &SearchIndex,
    named: &[String],
    hits: &[Hit],
    settings: &ChoiceSettings,
) -> Vec<Hit> {
    let Some(floor) = hits.last().map(|h| h.score) else {
        return Vec::new();
    };
    let mut seen: std::collections::HashSet<u32> = hits.iter().map(|h| h.doc).collect();
    let mut found: Vec<(u32, (bool, u64))> = Vec::new();
    for product in named {
        for doc in index.lexical(product, usize::MAX) {
            let record = index.record(doc);
            let own = provenance(record, Some(product)) == Provenance::Vendor;
            // The product's own container image has no registry facts to confirm it; its
            // publisher does.
            let least = if own { Launchability::Unknown } else { Launchability::Listed };
            // The product's own server may be named for its suite ("Atlassian" for Jira).
            let named_enough = if own { 0.8 } else { 1.0 };
            if seen.contains(&doc)
                || launchability(record, &settings.runnable) < least
                || identity(record, product).is_none_or(|w| w < named_enough)
            {
                continue;
            }
            seen.insert(doc);
            found.push((doc, (own, record.monthly_use())));
        }
    }
    found.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    found
        .into_iter()
        .take(PRODUCT_CANDIDATES)
        .map(|(doc, _)| Hit { doc, score: floor, need: hits[0].need, matched_tools: Vec::new() })
        .collect()
}

/// The least share of a step's catalog words (its own or those its phrasing implies) a
/// reference server's text must hold to join the step's candidates.
const REFERENCE_COVERAGE: f32 = 0.5;

/// How high a reference server must rank lexically, for the step's catalog words, to join.
const REFERENCE_RANK: usize = 50;

/// Reference servers that do no task of a user's: the protocol's test server and a thinking aid.
const NOT_TASKS: &[&str] = &["server-everything", "server-sequential-thinking"];

/// The MCP project's reference servers that do a step naming no product and that its search
/// hits missed: an expert fetches a page with the reference fetch server and tells the time with
/// the reference time server, but dozens of near-duplicates repeat their words and outrank their
/// terse records. Only a published or listed one that holds most of the step's catalog words
/// joins, as relevant as the least a chosen server may be.
fn reference_candidates(
    index: &SearchIndex,
    step: &str,
    implied: Option<&str>,
    hits: &[Hit],
    settings: &ChoiceSettings,
) -> Vec<Hit> {
    let Some(first) = hits.first() else {
        return Vec::new();
    };
    let seen: std::collections::HashSet<u32> = hits.iter().map(|h| h.doc).collect();
    let score = first.score * (settings.min_relevance + 0.01).min(1.0);
    // A step phrased indirectly ("grab https://…", "compare prices at amazon") is judged by the
    // catalog words its phrasing implies. Among the servers that hold those words best
    // lexically: a server whose registry category merely shares them (a page fetcher filed
    // under "browser automation", for "click through the signup flow") ranks far below.
    let text = implied.unwrap_or(step);
    let near: std::collections::HashSet<u32> = index.lexical(text, REFERENCE_RANK).into_iter().collect();
    index
        .references()
        .iter()
        .copied()
        .filter(|doc| !seen.contains(doc) && near.contains(doc))
        .filter(|&doc| {
            let record = index.record(doc);
            let task = !record
                .launch
                .iter()
                .any(|l| l.package.as_deref().is_some_and(|p| NOT_TASKS.iter().any(|n| p.ends_with(n))));
            task && index.coverage(doc, text) >= REFERENCE_COVERAGE
                && launchability(record, &settings.runnable) >= Launchability::Listed
        })
        .map(|doc| Hit { doc, score, need: first.need, matched_tools: Vec::new() })
        .collect()
}

/// Whether `step` is nothing but the one service it `named`: a need split from a clause that
/// names two ("deep" from "deep work in Google Calendar").
pub(crate) fn is_bare_name(step: &str, named: &[String]) -> bool {
    named.len() == 1 && terms(step) == terms(&named[0])
}

/// Whether `record` has a launch option this machine can start (a published or unconfirmed
/// package of a runtime it has, a listed image or remote URL, an operator's own command).
pub(crate) fn can_launch(record: &ServerRecord, runnable: &[LaunchKind]) -> bool {
    launchability(record, runnable) > Launchability::No
}

/// What the choice weighs, in a few words, for a server found with no step's service in view
/// (the LLM planner's search results): a reference server or not, registry use, the launch
/// ("an MCP reference server, 240k downloads a month, npm @modelcontextprotocol/server-memory").
pub(crate) fn signals(record: &ServerRecord, runnable: &[LaunchKind]) -> String {
    let scored = Scored {
        record,
        tools: Vec::new(),
        score: 0.0,
        provenance: provenance(record, None),
        coverage: 0.0,
        launch: launchability(record, runnable),
        service: None,
        why: String::new(),
    };
    why(&scored, 0, 1)
}

/// How startable a record is with the launch kinds this machine runs.
fn launchability(record: &ServerRecord, runnable: &[LaunchKind]) -> Launchability {
    record
        .launch
        .iter()
        .filter(|l| runnable.contains(&l.kind) || l.kind == LaunchKind::Command)
        .map(|l| l.launchability())
        .max()
        .unwrap_or(Launchability::No)
}

/// Whether `record` is for `service` (every word of it): 1.0 when its name, id, package or
/// repository says so, 0.6 when only its description does, `None` when nothing does.
fn identity(record: &ServerRecord, service: &str) -> Option<f32> {
    let wanted = terms(service);
    if wanted.is_empty() {
        return None;
    }
    let mut own = format!("{} {}", record.name, record.id);
    for l in &record.launch {
        own.push(' ');
        own.push_str(l.package.as_deref().unwrap_or_default());
    }
    // The repository's owner and name, not its host: every server kept on GitHub is not a
    // server for GitHub.
    if let Some(path) = record.repository_key().as_deref().and_then(|k| k.split_once('/')).map(|(_, p)| p) {
        own.push(' ');
        own.push_str(path);
    }
    // The official registry names servers `io.github.<owner>/<name>` (ids `io-github-…`): the
    // namespace of where the code is kept, not a server for GitHub.
    let own = own.to_lowercase().replace("io-github-", " ").replace("io.github.", " ");
    let holds = |text: &str| {
        let have = terms(text);
        wanted.iter().all(|w| have.contains(w))
    };
    let described = format!("{own} {}", record.description);
    if holds(&own) {
        return Some(1.0);
    }
    // A server for the whole suite serves each of its products: Outlook mail is read by a
    // Microsoft 365 server that never says "Outlook" in its name, and a server named for the
    // suite is more surely for the product than one whose description merely mentions it.
    let suite = SUITES.iter().find(|(products, _)| products.iter().any(|p| terms(p) == wanted));
    let names_suite = |text: &str| {
        let have = terms(text);
        suite.is_some_and(|(_, names)| names.iter().any(|name| terms(name).iter().all(|w| have.contains(w))))
    };
    if names_suite(&own) {
        Some(0.8)
    } else if holds(&described) {
        Some(0.6)
    } else if names_suite(&described) {
        Some(0.5)
    } else {
        None
    }
}

/// Products sold as one suite, and the names a server for the whole suite goes by.
const SUITES: &[(&[&str], &[&str])] = &[
    (
        &["outlook", "onedrive", "sharepoint", "microsoft teams"],
        &["microsoft 365", "ms 365", "ms365", "m365", "office 365", "microsoft graph"],
    ),
    (
        &["gmail", "google sheets", "google drive", "google calendar", "google docs"],
        &["google workspace", "g suite", "gsuite"],
    ),
    (&["jira", "confluence", "compass"], &["atlassian"]),
];

/// The company that sells the suite `service` belongs to: the first word of the suite's first
/// name (`atlassian` for Jira, `microsoft` for Outlook).
fn suite_company(service: &str) -> Option<&'static str> {
    let wanted = terms(service);
    SUITES
        .iter()
        .find(|(products, _)| products.iter().any(|p| terms(p) == wanted))
        .and_then(|(_, names)| names.first()?.split_whitespace().next())
}

/// Who publishes `record`: the organisations behind its repository and packages.
fn publishers(record: &ServerRecord) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(repo) = &record.repository {
        let rest = repo.split_once("://").map_or(repo.as_str(), |(_, r)| r);
        if let Some(owner) = rest.split('/').nth(1) {
            out.push(owner.to_lowercase());
        }
    }
    for l in &record.launch {
        match (l.kind, l.package.as_deref()) {
            (LaunchKind::Npm, Some(p)) if p.starts_with('@') => {
                out.extend(p[1..].split('/').next().map(str::to_lowercase));
            }
            (LaunchKind::Docker, Some(p)) if p.contains('/') => {
                out.extend(p.split('/').next().map(str::to_lowercase));
            }
            // A hosted endpoint on the product's own domain: `mcp.linear.app` is Linear's.
            (LaunchKind::Remote, _) => {
                let host =
                    l.url.as_deref().and_then(|u| reqwest::Url::parse(u).ok()?.host_str().map(str::to_owned));
                if let Some(host) = host {
                    let labels: Vec<&str> = host.split('.').collect();
                    // The registrable name: the label before the top-level domain.
                    out.extend(
                        labels.len().checked_sub(2).and_then(|i| labels.get(i)).map(|l| l.to_lowercase()),
                    );
                }
            }
            _ => {}
        }
    }
    out
}

fn provenance(record: &ServerRecord, service: Option<&str>) -> Provenance {
    let publishers = publishers(record);
    if let Some(service) = service {
        // Brand words: "notion" is in "makenotion" and "notionhq"; "google" in "googleapis".
        // An organisation named after MCP work on a brand ("notion-mcp-dev") is not the brand.
        // The company behind a suite publishes for each of its products: Atlassian's hosted
        // server is Jira's own.
        let brands: Vec<String> = service
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() >= 4)
            .map(str::to_lowercase)
            .chain(suite_company(service).map(str::to_owned))
            .collect();
        if publishers.iter().any(|p| !p.contains("mcp") && brands.iter().any(|b| p.contains(b.as_str()))) {
            return Provenance::Vendor;
        }
    }
    if record.is_reference() {
        return Provenance::Reference;
    }
    Provenance::Community
}

/// Registry use, except that the product's own server counts as used as the most used server
/// for the product: its channel (a container image on its own registry, a hosted endpoint) often
/// counts no downloads, and an expert runs the official server over a community one with more
/// (GitHub's own image over the MCP project's archived GitHub server, Linear's hosted server
/// over community packages). A hosted endpoint that takes no credential signs its users in
/// through the browser (dynamcp's sign-in); it is credited only when the vendor runs no server
/// of its own that takes a key (`vendor_runs_locally`), since not every vendor's sign-in lets a
/// new client register.
fn vendor_use(
    record: &ServerRecord,
    provenance: Provenance,
    product_use: f32,
    vendor_runs_locally: bool,
) -> f32 {
    let own = popularity(record);
    if provenance != Provenance::Vendor || (signs_in_by_browser(record) && vendor_runs_locally) {
        own
    } else {
        own.max(product_use)
    }
}

/// A hosted endpoint that declares no value to send: it signs its users in through the browser.
pub(crate) fn signs_in_by_browser(record: &ServerRecord) -> bool {
    record.best_launch().is_some_and(|l| l.kind == LaunchKind::Remote) && record.credentials.is_empty()
}

/// Registry use on a 0–1 log scale: a million npm downloads a month is 1, a thousand 0.5;
/// Smithery use counts weigh less (they count calls through one hosting service).
fn popularity(record: &ServerRecord) -> f32 {
    let registry = ((1.0 + record.monthly_use() as f32).log10() / 6.0).min(1.0);
    let smithery = ((1.0 + record.popularity as f32).log10() / 4.0).min(1.0) * 0.6;
    registry.max(smithery)
}

/// "official Notion server, 239k downloads a month, npm @notionhq/notion-mcp-server 2.5.2".
fn why(s: &Scored<'_>, most_used: u64, candidates: usize) -> String {
    let record = s.record;
    let mut parts: Vec<String> = Vec::new();
    match (s.provenance, &s.service) {
        (Provenance::Vendor, Some(service)) => parts.push(format!("official {} server", title(service))),
        (Provenance::Reference, _) => parts.push("an MCP reference server".to_owned()),
        _ => {}
    }
    let uses = record.monthly_use();
    if uses > 0 {
        let ranked = record.launch.iter().find_map(|l| l.registry.as_ref()?.download_rank);
        let amount = match (
            ranked,
            record.launch.iter().any(|l| l.registry.as_ref().is_some_and(|r| r.downloads_month.is_some())),
        ) {
            (_, true) => format!("{} downloads a month", compact(uses)),
            (Some(rank), false) => format!("#{} on PyPI by downloads", compact(rank)),
            (None, false) => "published on PyPI".to_owned(),
        };
        if uses == most_used && candidates > 1 && s.provenance == Provenance::Community {
            parts.push(format!("the most used of {candidates} matches ({amount})"));
        } else {
            parts.push(amount);
        }
    } else if record.popularity > 0 {
        parts.push(format!("{} uses on Smithery", compact(record.popularity)));
    }
    if let Some(l) = record.best_launch() {
        let version = l.registry.as_ref().and_then(|r| r.latest_version.as_deref());
        let package = l.package.as_deref().unwrap_or(&record.id);
        parts.push(match (l.kind, s.launch) {
            (LaunchKind::Npm | LaunchKind::Pypi, Launchability::Unconfirmed) => {
                format!("its package {package} is not confirmed published")
            }
            (LaunchKind::Npm, _) => {
                format!("npm {package}{}", version.map(|v| format!(" {v}")).unwrap_or_default())
            }
            (LaunchKind::Pypi, _) => {
                format!("PyPI {package}{}", version.map(|v| format!(" {v}")).unwrap_or_default())
            }
            (LaunchKind::Docker, _) => format!("Docker image {package}"),
            (LaunchKind::Remote, _) => "hosted (remote)".to_owned(),
            (LaunchKind::Command | LaunchKind::Source, _) => "an operator's launch command".to_owned(),
        });
    }
    if !s.tools.is_empty() {
        parts.push(format!("tools: {}", s.tools.iter().take(3).cloned().collect::<Vec<_>>().join(", ")));
    }
    parts.join(", ")
}

/// 239565 → "240k", 1133453 → "1.1M".
fn compact(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{}k", (n + 500) / 1_000),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

fn title(service: &str) -> String {
    service
        .split(' ')
        .map(|w| {
            let mut c = w.chars();
            c.next().map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::record::Transport;
    use crate::catalog::record::tests::record;
    use crate::catalog::{LaunchOption, RegistryFacts};

    fn npm(package: &str, listed: bool, downloads: Option<u64>) -> LaunchOption {
        LaunchOption {
            kind: LaunchKind::Npm,
            transport: Transport::Stdio,
            command: Some("npx".into()),
            args: vec!["-y".into(), package.into()],
            package: Some(package.into()),
            url: None,
            verified: false,
            registry: Some(RegistryFacts {
                listed,
                mcp_package: listed.then_some(true),
                latest_version: listed.then(|| "1.0.0".into()),
                downloads_month: downloads,
                download_rank: None,
            }),
        }
    }

    fn server(
        id: &str,
        name: &str,
        description: &str,
        repo: &str,
        launch: Vec<LaunchOption>,
    ) -> ServerRecord {
        let mut r = record(id);
        r.name = name.into();
        r.description = description.into();
        r.repository = Some(repo.into());
        r.launch = launch;
        r
    }

    fn hits(index: &SearchIndex, ids: &[&str]) -> Vec<Hit> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| Hit {
                doc: index.doc(id).expect("id"),
                score: 1.0 - i as f32 * 0.05,
                need: 0,
                matched_tools: vec![],
            })
            .collect()
    }

    /// Enough servers for the lexicon to know the services, as in the real catalog.
    fn catalog() -> SearchIndex {
        let mut servers = vec![
            server(
                "notion-guess",
                "Notion MCP",
                "Read and write Notion pages",
                "https://github.com/someone/notion-mcp",
                vec![npm("notion-mcp-guess", false, None)],
            ),
            server(
                "notion-official",
                "Notion MCP Server",
                "Notion API: pages and databases",
                "https://github.com/makenotion/notion-mcp-server",
                vec![npm("@notionhq/notion-mcp-server", true, Some(239_565))],
            ),
            // The same package listed by a second registry, with a terser record.
            server(
                "notion-official-2",
                "Notion",
                "Notion",
                "https://github.com/makenotion/notion-mcp-server",
                vec![npm("@notionhq/notion-mcp-server", true, Some(239_565))],
            ),
            server(
                "notion-small",
                "Notion Tools",
                "Notion pages",
                "https://github.com/x/notion-tools",
                vec![npm("notion-tools-mcp", true, Some(900))],
            ),
            server(
                "excel",
                "Excel MCP",
                "Read and write Excel spreadsheets and sheets",
                "https://github.com/y/excel-mcp",
                vec![npm("excel-mcp", true, Some(50_000))],
            ),
            server(
                "gsheets",
                "Google Sheets MCP",
                "Google Sheets read and write",
                "https://github.com/z/gsheets",
                vec![npm("gsheets-mcp", true, Some(3_000))],
            ),
            server(
                "gsheets-2",
                "Google Sheets Server",
                "Google Sheets",
                "https://github.com/w/gs",
                vec![npm("gs-mcp", true, Some(800))],
            ),
            server("gsheets-3", "Google Sheets Tools", "Sheets", "https://github.com/v/gs", vec![]),
            server(
                "memory",
                "Memory",
                "Knowledge graph memory for everything",
                "https://github.com/modelcontextprotocol/servers",
                vec![npm("@modelcontextprotocol/server-memory", true, Some(400_000))],
            ),
        ];
        // A service the catalog knows only through servers that cannot be started.
        for i in 0..3 {
            servers.push(server(
                &format!("airtable-{i}"),
                "Airtable Tools",
                "Airtable bases",
                "https://github.com/u/at",
                vec![],
            ));
        }
        for i in 0..3 {
            servers.push(server(
                &format!("notion-{i}"),
                "Notion Server",
                "Notion",
                "https://github.com/n/n",
                vec![],
            ));
        }
        SearchIndex::build(servers)
    }

    #[test]
    fn a_suite_s_server_serves_each_of_its_products() {
        let ms365 = server(
            "ms-365-mcp-server",
            "MS 365 MCP Server",
            "Access to email, calendar, OneDrive files and Excel through the Microsoft Graph API",
            "https://github.com/softeria/ms-365-mcp-server",
            vec![npm("@softeria/ms-365-mcp-server", true, Some(25_000))],
        );
        assert_eq!(identity(&ms365, "outlook"), Some(0.8));
        assert_eq!(identity(&ms365, "onedrive"), Some(0.8), "named for the suite, not only described");
        let atlassian = server(
            "atlassian",
            "Atlassian",
            "Interact with Jira, Confluence, and Compass",
            "https://github.com/atlassian/mcp",
            vec![],
        );
        assert_eq!(identity(&atlassian, "jira"), Some(0.8));
        assert_eq!(identity(&ms365, "gmail"), None, "another suite's product");
        let calendar = server(
            "outlook-calendar-mcp",
            "Outlook Calendar MCP",
            "Outlook calendar events",
            "https://github.com/someone/outlook-calendar-mcp",
            vec![],
        );
        assert_eq!(identity(&calendar, "outlook"), Some(1.0));
        let workspace = server(
            "google-workspace-mcp",
            "Google Workspace MCP",
            "Gmail, Drive, Calendar, Docs and Sheets",
            "https://github.com/someone/google-workspace-mcp",
            vec![],
        );
        assert_eq!(identity(&workspace, "google sheets"), Some(0.8));
        assert_eq!(identity(&workspace, "google docs"), Some(0.8));
        let workspace_only = server(
            "gworkspace",
            "Google Workspace MCP",
            "Mail and files",
            "https://github.com/someone/gworkspace",
            vec![],
        );
        assert_eq!(identity(&workspace_only, "gmail"), Some(0.8));
    }

    #[test]
    fn the_named_product_wins_over_a_neighbour_and_the_vendor_over_the_crowd() {
        let index = catalog();
        let settings = ChoiceSettings::default();
        let choice = choose(
            &index,
            "write the rows to a Google Sheet",
            &hits(&index, &["excel", "gsheets-2", "gsheets"]),
            None,
            &settings,
        );
        let chosen = choice.chosen.expect("a Sheets server");
        assert_eq!(chosen.record.id, "gsheets", "the most used Google Sheets server, never Excel");
        assert!(choice.alternatives.iter().all(|a| a.record.id != "excel"));
        assert!(chosen.why.contains("3k downloads a month"), "{}", chosen.why);

        let choice = choose(
            &index,
            "add a page to Notion",
            &hits(&index, &["notion-guess", "notion-small", "notion-official"]),
            None,
            &settings,
        );
        let chosen = choice.chosen.expect("a Notion server");
        assert_eq!(chosen.record.id, "notion-official");
        assert_eq!(chosen.provenance, Provenance::Vendor);
        assert!(
            chosen.why.starts_with(
                "official Notion server, 240k downloads a month, npm @notionhq/notion-mcp-server 1.0.0"
            ),
            "{}",
            chosen.why
        );
        // The unpublished guess is the last resort, behind both published servers.
        let alternatives: Vec<&str> = choice.alternatives.iter().map(|a| a.record.id.as_str()).collect();
        assert_eq!(alternatives, ["notion-small", "notion-guess"]);
    }

    #[test]
    fn nothing_is_chosen_for_a_service_no_startable_server_serves_or_for_nonsense() {
        let index = catalog();
        let settings = ChoiceSettings::default();
        let choice = choose(
            &index,
            "update my Airtable base",
            &hits(&index, &["airtable-0", "excel"]),
            None,
            &settings,
        );
        assert!(choice.chosen.is_none());
        assert!(choice.none_because.expect("a reason").contains("airtable"));
        // A hub server that ranks for everything does not answer words it does not hold.
        let choice = choose(&index, "purple monkey dishwasher", &hits(&index, &["memory"]), None, &settings);
        assert!(choice.chosen.is_none(), "{:?}", choice.chosen.map(|c| c.record.id.clone()));
        assert_eq!(
            choose(&index, "anything", &[], None, &settings).chosen.map(|c| c.record.id.clone()),
            None
        );
    }

    #[test]
    fn a_fragment_of_a_longer_request_takes_only_servers_relevant_to_the_whole() {
        let index = catalog();
        let settings = ChoiceSettings::default();
        let step = "knowledge graph memory";
        let memory = hits(&index, &["memory"]);
        assert!(choose(&index, step, &memory, None, &settings).chosen.is_some());
        let unrelated: std::collections::HashSet<u32> = [index.doc("excel").expect("doc")].into();
        assert!(choose(&index, step, &memory, Some(&unrelated), &settings).chosen.is_none());
    }

    #[test]
    fn runtimes_this_machine_lacks_are_not_chosen() {
        let index = catalog();
        let settings = ChoiceSettings { runnable: vec![LaunchKind::Pypi], ..ChoiceSettings::default() };
        let choice =
            choose(&index, "add a page to Notion", &hits(&index, &["notion-official"]), None, &settings);
        assert!(choice.chosen.is_none());
        assert!(choice.none_because.expect("why").contains("cannot be started here"));
    }

    #[test]
    fn a_hosted_endpoint_on_the_product_s_domain_is_the_vendor_s() {
        let mut linear = record("linear");
        linear.launch = vec![remote("https://mcp.linear.app/mcp")];
        assert_eq!(provenance(&linear, Some("linear")), Provenance::Vendor);
        linear.launch[0].url = Some("https://linear-mcp.example.workers.dev/mcp".into());
        assert_eq!(provenance(&linear, Some("linear")), Provenance::Community);
    }

    #[test]
    fn a_bare_service_name_must_be_relevant_to_the_whole_request() {
        let index = catalog();
        let settings = ChoiceSettings::default();
        let notion = hits(&index, &["notion-official"]);
        let unrelated: std::collections::HashSet<u32> = [index.doc("excel").expect("doc")].into();
        assert!(is_bare_name("notion", &index.products("notion")));
        assert!(choose(&index, "notion", &notion, Some(&unrelated), &settings).chosen.is_none());
        // With the step's own words, the name is enough.
        assert!(
            choose(&index, "add a page to Notion", &notion, Some(&unrelated), &settings).chosen.is_some()
        );
    }

    #[test]
    fn a_product_s_own_server_that_search_missed_is_still_weighed_and_offered_once() {
        let index = catalog();
        let settings = ChoiceSettings::default();
        // Search ranked only the small and the unpublished Notion servers.
        let choice = choose(
            &index,
            "add a page to Notion",
            &hits(&index, &["notion-guess", "notion-small"]),
            None,
            &settings,
        );
        let chosen = choice.chosen.expect("a Notion server");
        assert!(chosen.record.id.starts_with("notion-official"), "{}", chosen.record.id);
        assert_eq!(chosen.provenance, Provenance::Vendor);
        // Its second listing launches the same package: not an alternative to itself.
        let offered: Vec<&str> =
            choice.alternatives.iter().chain(&choice.reserve).map(|a| a.record.id.as_str()).collect();
        assert_eq!(offered, ["notion-small", "notion-guess"]);
        // The unpublished guess is never pulled in by name; only what search found is kept.
        let choice = choose(&index, "add a page to Notion", &hits(&index, &["excel"]), None, &settings);
        assert!(choice.chosen.is_some_and(|c| c.record.id.starts_with("notion-official")));
        assert!(choice.alternatives.iter().chain(&choice.reserve).all(|a| a.record.id != "notion-guess"));
    }

    #[test]
    fn a_feature_of_a_product_is_served_by_the_product_s_servers() {
        assert_eq!(brand("github issues"), "github");
        assert_eq!(brand("GitHub pull requests"), "GitHub");
        assert_eq!(brand("jira tickets"), "jira");
        assert_eq!(brand("google sheets"), "google sheets");
        assert_eq!(brand("issues"), "issues", "a feature alone is left as written");
    }

    #[test]
    fn a_repository_s_host_is_not_the_product() {
        let plane = server(
            "plane-mcp-server",
            "Plane MCP Server",
            "Projects, issues and cycles in Plane",
            "https://github.com/makeplane/plane-mcp-server",
            vec![],
        );
        assert_eq!(identity(&plane, "github"), None, "kept on GitHub, not for GitHub");
        let github = server(
            "github-mcp",
            "GitHub MCP",
            "Issues and pull requests",
            "https://github.com/github/github-mcp-server",
            vec![],
        );
        assert_eq!(identity(&github, "github"), Some(1.0));
    }

    #[test]
    fn a_registry_namespace_is_not_the_product() {
        let mut duck = server(
            "io-github-motherduckdb-mcp-server-motherduck",
            "io.github.motherduckdb/mcp-server-motherduck",
            "Query DuckDB and MotherDuck",
            "https://github.com/motherduckdb/mcp-server-motherduck",
            vec![],
        );
        assert_eq!(identity(&duck, "github"), None, "published under io.github, not for GitHub");
        assert_eq!(identity(&duck, "motherduck"), Some(1.0));
        duck.id = "toolsdk-remote-io-github-github-github-mcp-server".into();
        assert_eq!(identity(&duck, "github"), Some(1.0), "GitHub's own, under the same namespace");
    }

    fn remote(url: &str) -> LaunchOption {
        LaunchOption {
            kind: LaunchKind::Remote,
            transport: Transport::StreamableHttp,
            command: None,
            args: vec![],
            package: None,
            url: Some(url.into()),
            verified: true,
            registry: None,
        }
    }

    fn image(package: &str) -> LaunchOption {
        LaunchOption {
            kind: LaunchKind::Docker,
            transport: Transport::Stdio,
            command: Some("docker".into()),
            args: vec!["run".into(), "-i".into(), "--rm".into(), package.into()],
            package: Some(package.into()),
            url: None,
            verified: true,
            registry: None,
        }
    }

    #[test]
    fn the_product_s_own_image_outranks_a_community_server_with_more_downloads() {
        let mut official = server(
            "github-official",
            "GitHub Official",
            "",
            "https://github.com/github/github-mcp-server",
            vec![image("ghcr.io/github/github-mcp-server")],
        );
        official.credentials = vec![crate::catalog::CredentialSpec {
            name: "GITHUB_PERSONAL_ACCESS_TOKEN".into(),
            description: String::new(),
            required: true,
            secret: true,
            kind: crate::catalog::CredentialKind::Env,
            instructions: vec![],
        }];
        let mut hosted = record("github-hosted");
        hosted.name = "GitHub".into();
        hosted.launch = vec![remote("https://api.github.com/mcp")];
        let servers = vec![
            server(
                "github-archived",
                "GitHub MCP Server",
                "Manage repositories, issues and pull requests via the GitHub API",
                "https://github.com/modelcontextprotocol/servers-archived/tree/HEAD/src/github",
                vec![npm("@modelcontextprotocol/server-github", true, Some(280_000))],
            ),
            server(
                "github-small",
                "GitHub Tools",
                "GitHub pull requests",
                "https://github.com/someone/github-tools",
                vec![npm("github-tools-mcp", true, Some(6_000))],
            ),
            official,
            hosted,
        ];
        let index = SearchIndex::build(servers);
        let settings = ChoiceSettings::default();
        // Search found the archived reference server and a small one, not the official image.
        let found = hits(&index, &["github-archived", "github-small"]);
        let choice = choose(&index, "list the open pull requests on GitHub", &found, None, &settings);
        let chosen = choice.chosen.expect("a GitHub server");
        assert_eq!(chosen.record.id, "github-official", "{}", chosen.why);
        assert_eq!(chosen.provenance, Provenance::Vendor);
        // The hosted endpoint that takes no credential signs in through a browser: beside the
        // vendor's own image it is offered, not credited with the product's use; a vendor's
        // only server, it is.
        let hosted = index.get("github-hosted").expect("record");
        assert_eq!(vendor_use(hosted, Provenance::Vendor, 0.9, true), popularity(hosted));
        assert_eq!(vendor_use(hosted, Provenance::Vendor, 0.9, false), 0.9);
        let official = index.get("github-official").expect("record");
        assert_eq!(vendor_use(official, Provenance::Vendor, 0.9, true), 0.9);
        assert_eq!(vendor_use(official, Provenance::Community, 0.9, true), 0.0, "only the vendor's own");
    }

    #[test]
    fn a_vendor_s_only_server_hosted_with_a_browser_sign_in_outranks_community_packages() {
        let mut hosted = server(
            "linear-hosted",
            "Linear",
            "Linear's hosted MCP server: issues, projects and comments",
            "",
            vec![remote("https://mcp.linear.app/mcp")],
        );
        hosted.repository = None;
        let servers = vec![
            server(
                "linear-community",
                "Linear MCP",
                "Create and list Linear issues",
                "https://github.com/someone/linear-mcp",
                vec![npm("linear-mcp-community", true, Some(20_000))],
            ),
            server(
                "linear-small",
                "Linear Tools",
                "Linear issues",
                "https://github.com/x/linear-tools",
                vec![npm("linear-tools-mcp", true, Some(900))],
            ),
            hosted,
        ];
        let index = SearchIndex::build(servers);
        let found = hits(&index, &["linear-community", "linear-small", "linear-hosted"]);
        let step = "create a Linear issue for the login bug";
        let choice = choose(&index, step, &found, None, &ChoiceSettings::default());
        let chosen = choice.chosen.expect("a Linear server");
        assert_eq!(chosen.record.id, "linear-hosted", "{}", chosen.why);
        assert_eq!(chosen.provenance, Provenance::Vendor);
        assert_eq!(choice.alternatives[0].record.id, "linear-community");
    }

    #[test]
    fn the_company_behind_a_suite_is_the_vendor_of_each_of_its_products() {
        let mut hosted = server(
            "atlassian",
            "Atlassian",
            "Interact with Jira, Confluence and Compass",
            "",
            vec![remote("https://mcp.atlassian.com/v1/mcp")],
        );
        hosted.repository = None;
        assert_eq!(provenance(&hosted, Some("jira")), Provenance::Vendor);
        assert_eq!(provenance(&hosted, Some("confluence")), Provenance::Vendor);
        assert_eq!(provenance(&hosted, Some("linear")), Provenance::Community);
        // A package whose scope is named after MCP work on the suite is not the company's.
        let community = server(
            "atlassian-dc-mcp-jira",
            "@atlassian-dc-mcp/jira",
            "Jira Data Center",
            "https://github.com/b1ff/atlassian-dc-mcp",
            vec![npm("@atlassian-dc-mcp/jira", true, Some(18_000))],
        );
        assert_eq!(provenance(&community, Some("jira")), Provenance::Community);
        assert_eq!(suite_company("Outlook"), Some("microsoft"));
        assert_eq!(suite_company("Slack"), None);
    }

    #[test]
    fn a_reference_server_search_missed_joins_a_step_that_names_no_product() {
        let mut servers = vec![
            server(
                "fetch-reference",
                "Fetch",
                "Fetches a URL from the internet and extracts the page's content as markdown",
                "https://github.com/modelcontextprotocol/servers/tree/HEAD/src/fetch",
                vec![npm("@modelcontextprotocol/server-fetch", true, Some(100_000))],
            ),
            server(
                "everything",
                "Everything",
                "Fetch web page url content and every other protocol feature, for testing",
                "https://github.com/modelcontextprotocol/servers/tree/HEAD/src/everything",
                vec![npm("@modelcontextprotocol/server-everything", true, Some(50_000))],
            ),
        ];
        for i in 0..6 {
            servers.push(server(
                &format!("fetcher-{i}"),
                "Web Page Fetcher",
                "Fetch a web page url and return its content",
                &format!("https://github.com/someone{i}/fetcher"),
                vec![npm(&format!("fetcher-{i}"), true, Some(2_000))],
            ));
        }
        let index = SearchIndex::build(servers);
        let settings = ChoiceSettings::default();
        let found = hits(&index, &["fetcher-0", "fetcher-1", "fetcher-2"]);
        let step = "grab https://example.org/changelog and list the biggest changes";
        let choice = choose(&index, step, &found, None, &settings);
        let chosen = choice.chosen.expect("a fetch server");
        assert_eq!(chosen.record.id, "fetch-reference", "{}", chosen.why);
        assert_eq!(chosen.provenance, Provenance::Reference);
        // The protocol's test server holds the words too, and never joins.
        let offered: Vec<&str> =
            choice.alternatives.iter().chain(&choice.reserve).map(|a| a.record.id.as_str()).collect();
        assert!(!offered.contains(&"everything"), "{offered:?}");
        // A step the reference server's words do not cover is left to search's hits.
        let choice = choose(&index, "purple monkey dishwasher", &found, None, &settings);
        assert!(choice.chosen.is_none_or(|c| c.record.id != "fetch-reference"));
    }

    #[test]
    fn numbers_read_short() {
        assert_eq!(compact(239_565), "240k");
        assert_eq!(compact(1_133_453), "1.1M");
        assert_eq!(compact(480), "480");
    }
}
