//! Hybrid retrieval over the catalog: each retriever (BM25 now; dense server and dense tool
//! vectors when an embedder is loaded) ranks servers, reciprocal-rank fusion combines the
//! rankings, small priors prefer runnable servers with known tools when relevance is close, and
//! near-duplicates of one repository collapse into their best record. Multi-need requests are
//! split (see `needs`), searched per need, and interleaved so every need is represented.

use std::collections::{HashMap, HashSet};

use super::bm25::{Bm25, top_k};
use super::dense::{DenseHits, DenseIndex};
use super::needs::{self, ServiceLexicon};
use super::record::{ServerRecord, Tool};
use super::text::words;

/// How many candidates each retriever contributes to fusion.
pub(crate) const CANDIDATES: usize = 100;
/// Reciprocal-rank fusion constant: larger flattens the head of each ranking.
const RRF_K: f32 = 60.0;

/// Retrieval switches (for the ablation in `dynamcp eval`) and fusion weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchConfig {
    pub lexical: bool,
    pub dense: bool,
    pub tools: bool,
    pub decompose: bool,
    /// Add catalog words to everyday phrasings (see `intents`).
    pub intents: bool,
    /// Rank a need's named services (see `needs::ServiceLexicon`) on their own too, so the
    /// service a step names outweighs the rest of its wording. Off by default: it helped the sets
    /// it was built on and cost 5–6 points of Recall@5 on two later blind sets (eval/README.md).
    pub named: bool,
    pub priors: bool,
    pub weights: Weights,
}

/// How much each ranking counts in reciprocal-rank fusion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub lexical: f32,
    pub dense: f32,
    pub tools: f32,
    /// Weight of the whole request's ranking inside each need's fusion: a guard against a
    /// request split where it should not have been.
    pub whole: f32,
    /// Weight of the lexical ranking of the services a need names.
    pub named: f32,
}

impl Default for Weights {
    fn default() -> Self {
        // Chosen on eval/queries.jsonl (see eval/README.md): lexical evidence counts most, a
        // server's own vector next, its best tool least (many tools make that ranking noisy).
        // `named` (used only when `SearchConfig::named` is on) was set once and not tuned.
        Self { lexical: 1.0, dense: 0.7, tools: 0.3, whole: 0.3, named: 0.5 }
    }
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            lexical: true,
            dense: true,
            tools: true,
            decompose: true,
            intents: true,
            named: false,
            priors: true,
            weights: Weights::default(),
        }
    }
}

/// A query text and, when an embedder is loaded, its vector; with dense hits computed elsewhere
/// (pgvector), the index uses those instead of its own vectors.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryText<'a> {
    pub text: &'a str,
    pub vector: Option<&'a [f32]>,
    pub hits: Option<&'a DenseHits>,
}

/// One server found, with the tools that matched and the need it answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub doc: u32,
    pub score: f32,
    /// Index into [`Found::needs`].
    pub need: usize,
    pub matched_tools: Vec<String>,
}

/// The result of a search: the needs the request was split into, and the hits, best first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    pub needs: Vec<String>,
    pub hits: Vec<Hit>,
}

/// The in-memory search index over every catalog record.
pub struct SearchIndex {
    pub(super) servers: Vec<ServerRecord>,
    by_id: HashMap<String, u32>,
    /// Records that share a repository share a group; others are alone in theirs.
    group: Vec<u32>,
    prior: Vec<f32>,
    bm25: Bm25,
    dense: Option<DenseIndex>,
    lexicon: ServiceLexicon,
    /// The MCP project's reference servers ([`ServerRecord::is_reference`]), by document.
    references: Vec<u32>,
    /// What the records came from, for a reload to reuse the unchanged ones.
    pub(super) source: Source,
}

/// What an index was built from: a reload reuses the records whose stored content is unchanged,
/// as long as the same credential instructions apply.
#[derive(Debug, Default, Clone)]
pub(super) struct Source {
    /// Each server's stored content hash, by id.
    pub content: HashMap<String, String>,
    /// A digest of the credential instructions merged into the records.
    pub instructions: String,
}

/// A tool's text to embed, with its `(document, tool position)`.
pub type ToolText = ((u32, u32), String);

/// A fused ranking, and for servers found through a tool, which tool.
struct Ranked {
    list: Vec<(u32, f32)>,
    best_tool: HashMap<u32, u32>,
}

impl SearchIndex {
    pub fn build(mut servers: Vec<ServerRecord>) -> Self {
        servers.sort_by(|a, b| a.id.cmp(&b.id));
        let by_id = servers.iter().enumerate().map(|(i, s)| (s.id.clone(), i as u32)).collect();
        let mut groups: HashMap<String, u32> = HashMap::new();
        let group = servers
            .iter()
            .enumerate()
            .map(|(i, s)| match s.repository_key() {
                Some(key) => *groups.entry(key).or_insert(i as u32),
                None => i as u32,
            })
            .collect();
        let prior = servers.iter().map(prior).collect();
        let bm25 = Bm25::build(&servers);
        let lexicon =
            ServiceLexicon::build(servers.iter().map(|s| s.name.as_str()), |t| bm25.document_frequency(t));
        let references =
            servers.iter().enumerate().filter(|(_, s)| s.is_reference()).map(|(i, _)| i as u32).collect();
        Self {
            servers,
            by_id,
            group,
            prior,
            bm25,
            dense: None,
            lexicon,
            references,
            source: Source::default(),
        }
    }

    /// The MCP project's reference servers, by document number.
    pub fn references(&self) -> &[u32] {
        &self.references
    }

    /// Adds dense vectors, aligned with [`SearchIndex::embedding_texts`].
    pub fn attach_dense(&mut self, dense: DenseIndex) {
        self.dense = Some(dense);
    }

    pub fn dense(&self) -> Option<&DenseIndex> {
        self.dense.as_ref()
    }

    /// The texts to embed, in index order: one per server, then one per tool with its
    /// `(document, tool position)`.
    pub fn embedding_texts(&self) -> (Vec<String>, Vec<ToolText>) {
        let servers = self.servers.iter().map(server_text).collect();
        let tools = self
            .servers
            .iter()
            .enumerate()
            .flat_map(|(doc, s)| {
                s.tools.iter().enumerate().map(move |(t, tool)| ((doc as u32, t as u32), tool_text(s, tool)))
            })
            .collect();
        (servers, tools)
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&ServerRecord> {
        self.by_id.get(id).map(|&i| &self.servers[i as usize])
    }

    /// The document number of a server id.
    pub fn doc(&self, id: &str) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    /// The needs of a request: its workflow steps, or, when it names more services than it has
    /// steps, one need per named service. Prose (see [`needs::is_prose`]) is one need.
    pub fn needs(&self, request: &str) -> Vec<String> {
        self.split_needs(request, false)
    }

    /// The needs of a request for a plan: as [`SearchIndex::needs`], but a service name the
    /// writer did not mark as one (see [`needs::as_written`]) is not a need of its own. Search
    /// keeps every mention: an extra need costs it nothing, while a plan would choose a server
    /// for it ("deep" in "deep work").
    pub fn plan_needs(&self, request: &str) -> Vec<String> {
        // A request written as a list is planned item by item, however long its background.
        if let Some(items) = needs::list_items(request) {
            return items;
        }
        self.split_needs(request, true)
    }

    fn split_needs(&self, request: &str, marked_only: bool) -> Vec<String> {
        let mentions_in = |text: &str| if marked_only { self.products(text) } else { self.services(text) };
        if needs::is_prose(request) {
            return vec![request.split_whitespace().collect::<Vec<_>>().join(" ")];
        }
        let steps = needs::split(request);
        let mentions = mentions_in(request);
        if mentions.len() >= 2 && mentions.len() > steps.len() && mentions.len() <= needs::MAX_NEEDS {
            return mentions;
        }
        // A step that names two services ("post today's weather on telegram") is a need per
        // service; the other steps stay as they are.
        let mut refined: Vec<String> = Vec::with_capacity(steps.len());
        for step in &steps {
            let named = mentions_in(step);
            if named.len() >= 2 {
                refined.extend(named.into_iter().filter(|n| !refined.contains(n)).collect::<Vec<_>>());
            } else {
                refined.push(step.clone());
            }
        }
        if refined.len() > steps.len() && refined.len() <= needs::MAX_NEEDS {
            return refined;
        }
        steps
    }

    /// The services a text names ("google sheet", "gmail"), as its own words.
    pub fn services(&self, text: &str) -> Vec<String> {
        self.lexicon.mentions(text)
    }

    /// The products a text names for a plan: [`SearchIndex::services`] as the writer marked
    /// them (see [`needs::as_written`]).
    pub fn products(&self, text: &str) -> Vec<String> {
        needs::as_written(text, self.lexicon.mentions(text))
    }

    /// The idf-weighted share of `text`'s terms that server `doc`'s name, description and tools
    /// contain (see [`Bm25::coverage`]).
    pub fn coverage(&self, doc: u32, text: &str) -> f32 {
        self.bm25.coverage(doc, text)
    }

    /// The `limit` best servers matching `query` lexically, best first (`usize::MAX`: every one,
    /// for browsing).
    pub fn lexical(&self, query: &str, limit: usize) -> Vec<u32> {
        self.bm25.search(query, limit).into_iter().map(|(d, _)| d).collect()
    }

    pub fn record(&self, doc: u32) -> &ServerRecord {
        &self.servers[doc as usize]
    }

    /// Searches for a request split into `needs` (pass the request alone for a single need),
    /// returning at most `limit` hits.
    pub fn search(
        &self,
        request: QueryText,
        needs: &[QueryText],
        limit: usize,
        config: SearchConfig,
    ) -> Found {
        let mut needs: Vec<QueryText> = needs.iter().copied().filter(|n| self.is_need(*n)).collect();
        if needs.len() < 2 {
            needs = vec![request];
        }
        let whole = (needs.len() > 1).then(|| self.rank(request, config));
        let mut best_tools: Vec<HashMap<u32, u32>> = Vec::with_capacity(needs.len());
        let per_need: Vec<Vec<(u32, f32)>> = needs
            .iter()
            .map(|need| {
                let ranked = self.rank(*need, config);
                let mut lists = vec![(1.0, ranked.list)];
                if config.named {
                    let named = self.lexicon.mentions(need.text);
                    if !named.is_empty() {
                        lists.push((config.weights.named, self.bm25.search(&named.join(" "), CANDIDATES)));
                    }
                }
                if let Some(whole) = &whole {
                    lists.push((config.weights.whole, whole.list.clone()));
                }
                best_tools.push(ranked.best_tool);
                self.finish(fuse(&lists), config)
            })
            .collect();
        let wanted: Vec<Vec<u32>> = needs.iter().map(|n| self.bm25.term_ids(n.text)).collect();
        let hits = interleave(&per_need, limit)
            .into_iter()
            .map(|(need, doc, score)| Hit {
                doc,
                score,
                need,
                matched_tools: self.matched_tools(doc, &wanted[need], best_tools[need].get(&doc).copied()),
            })
            .collect();
        Found { needs: needs.iter().map(|n| n.text.to_owned()).collect(), hits }
    }

    /// One query's fused ranking across the enabled retrievers.
    fn rank(&self, query: QueryText, config: SearchConfig) -> Ranked {
        let mut lists = Vec::new();
        let mut best_tool = HashMap::new();
        let computed;
        let dense = match (query.hits, &self.dense, query.vector) {
            _ if !(config.dense || config.tools) => None,
            (Some(hits), _, _) => Some(hits),
            (None, Some(d), Some(v)) => {
                computed = d.hits(v, CANDIDATES, config.dense, config.tools);
                Some(&computed)
            }
            _ => None,
        };
        let w = config.weights;
        if config.lexical || dense.is_none() {
            lists.push((w.lexical, self.bm25.search(query.text, CANDIDATES)));
        }
        if let Some(hits) = dense {
            if config.dense {
                lists.push((w.dense, hits.servers.clone()));
            }
            if config.tools {
                best_tool = hits.tools.iter().map(|&(doc, _, tool)| (doc, tool)).collect();
                lists.push((w.tools, hits.tools.iter().map(|&(doc, s, _)| (doc, s)).collect()));
            }
        }
        Ranked { list: fuse(&lists), best_tool }
    }

    /// Whether a split-off fragment can be searched at all: it has a vector, or one of its words
    /// is in the index.
    fn is_need(&self, need: QueryText) -> bool {
        need.vector.is_some() || self.bm25.knows_any(need.text)
    }

    /// Applies priors and collapses near-duplicates: one record per repository, the best one.
    fn finish(&self, mut ranked: Vec<(u32, f32)>, config: SearchConfig) -> Vec<(u32, f32)> {
        if config.priors {
            for (doc, score) in &mut ranked {
                *score *= self.prior[*doc as usize];
            }
            top_k(&mut ranked, usize::MAX);
        }
        let mut seen = HashSet::new();
        ranked.retain(|(doc, _)| seen.insert(self.group[*doc as usize]));
        ranked
    }

    /// The tools that answer the need: the one dense retrieval matched first, then those sharing
    /// terms with it (`wanted`, the need's term ids), most overlapping first.
    fn matched_tools(&self, doc: u32, wanted: &[u32], dense_tool: Option<u32>) -> Vec<String> {
        let tools = &self.servers[doc as usize].tools;
        let mut scored = self.bm25.tool_overlaps(doc, wanted);
        scored.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut out: Vec<String> =
            dense_tool.and_then(|t| tools.get(t as usize)).map(|t| t.name.clone()).into_iter().collect();
        for (i, _) in scored {
            if out.len() == 5 {
                break;
            }
            if let Some(tool) = tools.get(i as usize)
                && !out.contains(&tool.name)
            {
                out.push(tool.name.clone());
            }
        }
        out
    }
}

/// What a server's own vector encodes: its name, description, categories and tool names.
pub fn server_text(s: &ServerRecord) -> String {
    let mut text = format!("{}: {}", s.name, s.description.trim());
    if !s.categories.is_empty() {
        text.push_str(&format!(" Categories: {}.", s.categories.join(", ")));
    }
    if !s.tools.is_empty() {
        let names: Vec<String> = s.tools.iter().take(20).map(|t| words(&t.name).join(" ")).collect();
        text.push_str(&format!(" Tools: {}.", names.join(", ")));
    }
    text
}

/// What a tool's vector encodes: its server, its name in words, and its description.
pub fn tool_text(s: &ServerRecord, t: &Tool) -> String {
    format!("{} — {}: {}", s.name, words(&t.name).join(" "), t.description.trim())
}

/// A multiplier near 1 that prefers servers a user can run today: runnable, vouched for, with
/// known tools. Small on purpose: adjacent ranks differ by about 1.6% after reciprocal-rank
/// fusion, so at most 2% breaks ties without overturning clear wins (at 8% a runnable server with
/// a quarter of the lexical score of a better match outranked it).
fn prior(s: &ServerRecord) -> f32 {
    let mut p = 1.0;
    if s.runnable() {
        p += 0.01;
    }
    if s.verified() {
        p += 0.005;
    }
    if !s.tools.is_empty() {
        p += 0.005;
    }
    p
}

/// Weighted reciprocal-rank fusion of several rankings.
fn fuse(lists: &[(f32, Vec<(u32, f32)>)]) -> Vec<(u32, f32)> {
    let mut scores: HashMap<u32, f32> = HashMap::new();
    for (weight, list) in lists {
        // Equal scores share a rank, so a tie stays a tie for the priors to break.
        let mut rank = 0;
        for (i, (doc, score)) in list.iter().enumerate() {
            if i > 0 && *score != list[i - 1].1 {
                rank = i;
            }
            *scores.entry(*doc).or_default() += weight / (RRF_K + rank as f32 + 1.0);
        }
    }
    let mut fused: Vec<(u32, f32)> = scores.into_iter().collect();
    top_k(&mut fused, usize::MAX);
    fused
}

/// Takes hits round-robin from each need's ranking (skipping servers already taken), so every
/// need is represented near the top.
fn interleave(per_need: &[Vec<(u32, f32)>], limit: usize) -> Vec<(usize, u32, f32)> {
    let mut out = Vec::new();
    let mut taken = HashSet::new();
    let mut cursors = vec![0usize; per_need.len()];
    while out.len() < limit {
        let mut progressed = false;
        for (need, list) in per_need.iter().enumerate() {
            while let Some(&(doc, score)) = list.get(cursors[need]) {
                cursors[need] += 1;
                if taken.insert(doc) {
                    out.push((need, doc, score));
                    progressed = true;
                    break;
                }
            }
            if out.len() == limit {
                break;
            }
        }
        if !progressed {
            break;
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::catalog::record::{LaunchKind, LaunchOption, Transport};

    /// A lexical-only search, as the index runs without an embedder.
    pub(crate) fn search(index: &SearchIndex, request: &str, limit: usize) -> Found {
        let needs = index.needs(request);
        let needs: Vec<QueryText> =
            needs.iter().map(|n| QueryText { text: n, ..QueryText::default() }).collect();
        index.search(
            QueryText { text: request, ..QueryText::default() },
            &needs,
            limit,
            SearchConfig::default(),
        )
    }

    fn server(id: &str, name: &str, description: &str, runnable: bool, repo: Option<&str>) -> ServerRecord {
        let mut r = crate::catalog::record::tests::record(id);
        r.name = name.into();
        r.description = description.into();
        r.repository = repo.map(Into::into);
        if runnable {
            r.launch.push(LaunchOption {
                kind: LaunchKind::Npm,
                transport: Transport::Stdio,
                command: Some("npx".into()),
                args: vec!["-y".into(), id.into()],
                package: Some(id.into()),
                url: None,
                verified: false,
                registry: None,
            });
        }
        r
    }

    #[test]
    fn multi_need_requests_surface_every_service() {
        let mut servers = vec![
            server("gmail", "Gmail", "Read Gmail messages", true, Some("https://github.com/a/gmail")),
            server("sheets", "Google Sheets", "Edit spreadsheets", true, None),
            server("slack", "Slack", "Post Slack messages", true, None),
        ];
        for i in 0..20 {
            servers.push(server(
                &format!("gmail-{i}"),
                &format!("Gmail helper {i}"),
                "Gmail inbox",
                false,
                None,
            ));
        }
        let index = SearchIndex::build(servers);
        let found = search(&index, "find invoices in my Gmail and add them to a Google Sheet", 5);
        assert_eq!(found.needs.len(), 2);
        let ids: Vec<&str> = found.hits.iter().map(|h| index.record(h.doc).id.as_str()).collect();
        assert_eq!(ids[0], "gmail");
        assert_eq!(ids[1], "sheets");
        assert_eq!(found.hits[1].need, 1);
    }

    #[test]
    fn runnable_wins_a_near_tie_and_repository_duplicates_collapse() {
        let servers = vec![
            server(
                "weather-one",
                "Weather",
                "Weather forecasts",
                false,
                Some("https://github.com/x/weather"),
            ),
            server(
                "weather-two",
                "Weather",
                "Weather forecasts",
                true,
                Some("https://github.com/x/weather/"),
            ),
            server("weather-six", "Weather", "Weather forecasts", false, None),
        ];
        let index = SearchIndex::build(servers);
        let found = search(&index, "weather", 10);
        let ids: Vec<&str> = found.hits.iter().map(|h| index.record(h.doc).id.as_str()).collect();
        // Equal relevance: the runnable one of the two listings of one repository wins.
        assert_eq!(ids, vec!["weather-two", "weather-six"]);
    }

    #[test]
    fn matched_tools_are_reported() {
        let mut s = server("time", "Time", "Time and timezones", true, None);
        s.tools = vec![
            Tool {
                name: "get_current_time".into(),
                description: "Current time in a timezone".into(),
                input_schema: None,
            },
            Tool { name: "convert_units".into(), description: "Units".into(), input_schema: None },
        ];
        let index = SearchIndex::build(vec![s]);
        let found = search(&index, "current time in Tokyo", 1);
        assert_eq!(found.hits[0].matched_tools, vec!["get_current_time"]);
    }
}
