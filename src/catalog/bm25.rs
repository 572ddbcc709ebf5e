//! Lexical retrieval: BM25 over a server's name, categories, description, tool names and tool
//! descriptions, each field weighted (a word in the name says more than one in a tool's prose).
//!
//! Every posting stores its final BM25 contribution, so a query is a sum over a few posting lists
//! into a dense accumulator: well under a millisecond at 10k servers.

use std::collections::HashMap;

use super::record::ServerRecord;
use super::text::{alphanumeric_runs, terms};

const K1: f32 = 1.2;
const B: f32 = 0.75;

/// Field weights (BM25F-style): a term's frequency counts this many times per occurrence.
const NAME: f32 = 3.0;
const CATEGORY: f32 = 1.5;
const DESCRIPTION: f32 = 1.0;
const TOOL_NAME: f32 = 1.5;
const TOOL_DESCRIPTION: f32 = 0.5;

/// Fewer servers than this use a word (in a catalog of thousands): it names something, it does
/// not describe a capability.
const VOCABULARY_DF: usize = 5;

/// An inverted index: term -> (document, precomputed BM25 weight).
#[derive(Debug, Default)]
pub struct Bm25 {
    /// Term -> its id, the index into `postings`.
    vocab: HashMap<String, u32>,
    postings: Vec<Vec<(u32, f32)>>,
    /// Per document, per tool: the tool's term ids (name and description), sorted, unique.
    tool_terms: Vec<Vec<Vec<u32>>>,
    docs: usize,
}

/// Turns texts into term ids while building the index. Catalog texts repeat the same words
/// endlessly, so each distinct run of letters and digits is analysed (split, stop-listed,
/// stemmed, interned) once.
#[derive(Default)]
struct Analyser<'a> {
    vocab: HashMap<String, u32>,
    runs: HashMap<&'a str, Vec<u32>>,
}

impl<'a> Analyser<'a> {
    /// Appends the term ids of `text` to `out`, in order.
    fn analyse(&mut self, text: &'a str, out: &mut Vec<u32>) {
        for run in alphanumeric_runs(text) {
            let vocab = &mut self.vocab;
            let ids = self.runs.entry(run).or_insert_with(|| {
                terms(run)
                    .into_iter()
                    .map(|t| {
                        let next = vocab.len() as u32;
                        *vocab.entry(t).or_insert(next)
                    })
                    .collect()
            });
            out.extend_from_slice(ids);
        }
    }
}

impl Bm25 {
    pub fn build<'a>(servers: &'a [ServerRecord]) -> Self {
        let mut analyser = Analyser::default();
        let mut per_doc: Vec<HashMap<u32, f32>> = Vec::with_capacity(servers.len());
        let mut lengths = Vec::with_capacity(servers.len());
        let mut tool_terms = Vec::with_capacity(servers.len());
        for s in servers {
            let mut tf: HashMap<u32, f32> = HashMap::new();
            let mut len = 0.0;
            let mut ids = Vec::new();
            let mut add = |text: &'a str, weight: f32, seen: &mut Vec<u32>| {
                ids.clear();
                analyser.analyse(text, &mut ids);
                for &id in &ids {
                    seen.push(id);
                    *tf.entry(id).or_default() += weight;
                    len += weight;
                }
            };
            let mut ignored = Vec::new();
            add(&s.name, NAME, &mut ignored);
            add(&s.id, NAME / 3.0, &mut ignored);
            for c in &s.categories {
                add(c, CATEGORY, &mut ignored);
            }
            add(&s.description, DESCRIPTION, &mut ignored);
            let mut tools = Vec::with_capacity(s.tools.len());
            for tool in &s.tools {
                let mut ids = Vec::new();
                add(&tool.name, TOOL_NAME, &mut ids);
                add(&tool.description, TOOL_DESCRIPTION, &mut ids);
                ids.sort_unstable();
                ids.dedup();
                tools.push(ids);
            }
            tool_terms.push(tools);
            per_doc.push(tf);
            lengths.push(len);
        }
        let vocab = analyser.vocab;
        let docs = servers.len();
        let avg = (lengths.iter().sum::<f32>() / docs.max(1) as f32).max(1.0);
        let mut df = vec![0u32; vocab.len()];
        for tf in &per_doc {
            for &t in tf.keys() {
                df[t as usize] += 1;
            }
        }
        let idf: Vec<f32> = df
            .into_iter()
            .map(|n| {
                let n = n as f32;
                (1.0 + (docs as f32 - n + 0.5) / (n + 0.5)).ln()
            })
            .collect();
        let mut postings: Vec<Vec<(u32, f32)>> = vec![Vec::new(); vocab.len()];
        for (doc, tf) in per_doc.into_iter().enumerate() {
            let norm = K1 * (1.0 - B + B * lengths[doc] / avg);
            for (term, f) in tf {
                let weight = idf[term as usize] * f * (K1 + 1.0) / (f + norm);
                postings[term as usize].push((doc as u32, weight));
            }
        }
        Self { vocab, postings, tool_terms, docs }
    }

    fn posting(&self, term: &str) -> &[(u32, f32)] {
        self.vocab.get(term).map_or(&[], |&id| &self.postings[id as usize])
    }

    /// The ids of the query's terms that occur in the index, sorted, unique.
    pub fn term_ids(&self, query: &str) -> Vec<u32> {
        let mut ids: Vec<u32> = terms(query).iter().filter_map(|t| self.vocab.get(t).copied()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// How many of `wanted` (sorted term ids) each tool of a document shares: `(tool, overlap)`
    /// for the tools sharing at least one.
    pub fn tool_overlaps(&self, doc: u32, wanted: &[u32]) -> Vec<(u32, usize)> {
        let Some(tools) = self.tool_terms.get(doc as usize) else { return Vec::new() };
        tools
            .iter()
            .enumerate()
            .map(|(i, ids)| (i as u32, ids.iter().filter(|t| wanted.binary_search(t).is_ok()).count()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Scores every document against the query's terms; returns `(doc, score)` for the matches,
    /// best first, at most `limit`.
    pub fn search(&self, query: &str, limit: usize) -> Vec<(u32, f32)> {
        let mut query_terms = terms(query);
        query_terms.sort_unstable();
        query_terms.dedup();
        let mut scores = vec![0f32; self.docs];
        let mut touched = Vec::new();
        for t in &query_terms {
            for &(doc, w) in self.posting(t) {
                let slot = &mut scores[doc as usize];
                if *slot == 0.0 {
                    touched.push(doc);
                }
                *slot += w;
            }
        }
        let mut hits: Vec<(u32, f32)> = touched.into_iter().map(|d| (d, scores[d as usize])).collect();
        top_k(&mut hits, limit);
        hits
    }

    /// How much of the query's catalog vocabulary a document covers: the share of the query's
    /// distinct terms it contains, each weighted by its rarity (idf). Terms fewer than
    /// [`VOCABULARY_DF`] servers use are names and arguments ("Tokyo", "acme-backups"), not
    /// what a server does, and do not count; a query with none left has coverage 0.
    pub fn coverage(&self, doc: u32, query: &str) -> f32 {
        let mut query_terms = terms(query);
        query_terms.sort_unstable();
        query_terms.dedup();
        let docs = self.docs as f32;
        let idf = |df: usize| (1.0 + (docs - df as f32 + 0.5) / (df as f32 + 0.5)).ln();
        let (mut covered, mut total) = (0.0, 0.0);
        // A catalog of a few dozen servers has no word that many use.
        let vocabulary = VOCABULARY_DF.min(1 + self.docs / 2000);
        for t in &query_terms {
            let posting = self.posting(t);
            if posting.len() < vocabulary {
                continue;
            }
            let weight = idf(posting.len());
            total += weight;
            if posting.binary_search_by_key(&doc, |&(d, _)| d).is_ok() {
                covered += weight;
            }
        }
        if total > 0.0 { covered / total } else { 0.0 }
    }

    /// In how many documents a (stemmed) term occurs.
    pub fn document_frequency(&self, term: &str) -> usize {
        self.posting(term).len()
    }

    /// Whether any of the query's terms occur in the index at all.
    pub fn knows_any(&self, query: &str) -> bool {
        terms(query).iter().any(|t| self.vocab.contains_key(t))
    }
}

/// Keeps the `k` best `(doc, score)` pairs, sorted best first (ties by doc for determinism).
pub fn top_k(hits: &mut Vec<(u32, f32)>, k: usize) {
    let cmp = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if hits.len() > k && k > 0 {
        hits.select_nth_unstable_by(k - 1, cmp);
        hits.truncate(k);
    }
    hits.sort_unstable_by(cmp);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::record::Tool;

    fn server(id: &str, name: &str, description: &str, tools: &[&str]) -> ServerRecord {
        let mut r = crate::catalog::record::tests::record(id);
        r.name = name.into();
        r.description = description.into();
        r.tools = tools
            .iter()
            .map(|t| Tool { name: (*t).into(), description: String::new(), input_schema: None })
            .collect();
        r
    }

    #[test]
    fn name_matches_outrank_tool_prose_and_unrelated_docs_score_nothing() {
        let servers = vec![
            server("gmail", "Gmail", "Read and send email", &["send_email", "search_emails"]),
            server("sheets", "Google Sheets", "Spreadsheets", &["append_row"]),
            server("notes", "Notes", "Keeps notes; can email a summary", &[]),
        ];
        let index = Bm25::build(&servers);
        let hits = index.search("send an email from gmail", 10);
        let ids: Vec<u32> = hits.iter().map(|h| h.0).collect();
        assert_eq!(ids, vec![0, 2]);
        assert!(hits[0].1 > 2.0 * hits[1].1);
        assert!(index.search("kubernetes", 10).is_empty());
        assert_eq!(index.search("spreadsheet rows", 1)[0].0, 1);
    }

    #[test]
    fn top_k_keeps_the_best_in_order() {
        let mut v = vec![(0, 1.0), (1, 3.0), (2, 2.0), (3, 3.0)];
        top_k(&mut v, 3);
        assert_eq!(v, vec![(1, 3.0), (3, 3.0), (2, 2.0)]);
    }
}
