//! Lexical retrieval: BM25 over a server's name, categories, description, tool names and tool
//! descriptions, each field weighted (a word in the name says more than one in a tool's prose).
//!
//! Every posting stores its final BM25 contribution, so a query is a sum over a few posting lists
//! into a dense accumulator: well under a millisecond at 10k servers.

use std::collections::HashMap;

use super::record::ServerRecord;
use super::text::terms;

const K1: f32 = 1.2;
const B: f32 = 0.75;

/// Field weights (BM25F-style): a term's frequency counts this many times per occurrence.
const NAME: f32 = 3.0;
const CATEGORY: f32 = 1.5;
const DESCRIPTION: f32 = 1.0;
const TOOL_NAME: f32 = 1.5;
const TOOL_DESCRIPTION: f32 = 0.5;

/// An inverted index: term -> (document, precomputed BM25 weight).
#[derive(Debug, Default)]
pub struct Bm25 {
    postings: HashMap<String, Vec<(u32, f32)>>,
    docs: usize,
}

impl Bm25 {
    pub fn build(servers: &[ServerRecord]) -> Self {
        let mut per_doc: Vec<HashMap<String, f32>> = Vec::with_capacity(servers.len());
        let mut lengths = Vec::with_capacity(servers.len());
        for s in servers {
            let mut tf: HashMap<String, f32> = HashMap::new();
            let mut len = 0.0;
            let mut add = |text: &str, weight: f32| {
                for t in terms(text) {
                    *tf.entry(t).or_default() += weight;
                    len += weight;
                }
            };
            add(&s.name, NAME);
            add(&s.id, NAME / 3.0);
            for c in &s.categories {
                add(c, CATEGORY);
            }
            add(&s.description, DESCRIPTION);
            for tool in &s.tools {
                add(&tool.name, TOOL_NAME);
                add(&tool.description, TOOL_DESCRIPTION);
            }
            per_doc.push(tf);
            lengths.push(len);
        }
        let docs = servers.len();
        let avg = (lengths.iter().sum::<f32>() / docs.max(1) as f32).max(1.0);
        let mut df: HashMap<&str, u32> = HashMap::new();
        for tf in &per_doc {
            for t in tf.keys() {
                *df.entry(t.as_str()).or_default() += 1;
            }
        }
        let idf: HashMap<String, f32> = df
            .into_iter()
            .map(|(t, n)| {
                let n = n as f32;
                (t.to_owned(), (1.0 + (docs as f32 - n + 0.5) / (n + 0.5)).ln())
            })
            .collect();
        let mut postings: HashMap<String, Vec<(u32, f32)>> = HashMap::new();
        for (doc, tf) in per_doc.into_iter().enumerate() {
            let norm = K1 * (1.0 - B + B * lengths[doc] / avg);
            for (term, f) in tf {
                let weight = idf[&term] * f * (K1 + 1.0) / (f + norm);
                postings.entry(term).or_default().push((doc as u32, weight));
            }
        }
        Self { postings, docs }
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
            for &(doc, w) in self.postings.get(t).map(Vec::as_slice).unwrap_or_default() {
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

    /// In how many documents a (stemmed) term occurs.
    pub fn document_frequency(&self, term: &str) -> usize {
        self.postings.get(term).map_or(0, Vec::len)
    }

    /// Whether any of the query's terms occur in the index at all.
    pub fn knows_any(&self, query: &str) -> bool {
        terms(query).iter().any(|t| self.postings.contains_key(t))
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
