//! Selection quality on a labelled set: each query lists its needs, each need the catalog ids
//! that satisfy it. A need counts as found at k when any of its ids is among the first k hits.
//!
//! Recall@k is the share of a query's needs found at k, averaged over queries (so a two-need
//! query has Recall@1 of at most 0.5); MRR averages, over all needs, 1/rank of the first
//! acceptable hit within the first 10 (0 when none).

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::search::{Found, SearchIndex};

#[derive(Debug, Clone, Deserialize)]
pub struct EvalQuery {
    pub id: String,
    pub query: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub style: String,
    pub needs: Vec<EvalNeed>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EvalNeed {
    pub need: String,
    pub ids: Vec<String>,
}

/// A need that was not found in the first 5 hits.
#[derive(Debug, Clone, Serialize)]
pub struct Miss {
    pub query_id: String,
    pub query: String,
    pub need: String,
    /// Rank of the first acceptable hit within 10, if any.
    pub rank: Option<usize>,
    /// What came back instead (first 5 ids).
    pub got: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub queries: usize,
    pub needs: usize,
    pub recall_at_1: f64,
    pub recall_at_5: f64,
    pub recall_at_10: f64,
    pub mrr: f64,
    /// Labelled ids that are not in the catalog (a stale label set).
    pub unknown_ids: usize,
    pub misses: Vec<Miss>,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("could not read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Parse { path: String, line: usize, reason: String },
}

/// Reads a JSONL file of labelled queries (blank lines and `#` comments are skipped).
pub fn load(path: &Path) -> Result<Vec<EvalQuery>, EvalError> {
    let shown = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|source| EvalError::Read { path: shown.clone(), source })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let q: EvalQuery = serde_json::from_str(line).map_err(|e| EvalError::Parse {
            path: shown.clone(),
            line: i + 1,
            reason: e.to_string(),
        })?;
        if q.needs.is_empty() || q.needs.iter().any(|n| n.ids.is_empty()) {
            return Err(EvalError::Parse { path: shown, line: i + 1, reason: "every need needs ids".into() });
        }
        out.push(q);
    }
    Ok(out)
}

/// Scores the search results (`found[i]` answers `queries[i]`; `index` resolves their ids).
pub fn evaluate(index: &SearchIndex, queries: &[EvalQuery], found: &[Found]) -> EvalReport {
    let mut recall = [0.0f64; 3];
    let mut reciprocal = 0.0;
    let mut needs = 0;
    let mut unknown_ids = 0;
    let mut misses = Vec::new();
    for (q, found) in queries.iter().zip(found) {
        let got: Vec<&str> = found.hits.iter().map(|h| index.record(h.doc).id.as_str()).collect();
        let mut found_at = [0usize; 3];
        for need in &q.needs {
            needs += 1;
            unknown_ids += need.ids.iter().filter(|id| index.get(id).is_none()).count();
            let wanted: HashSet<&str> = need.ids.iter().map(String::as_str).collect();
            let rank = got.iter().position(|id| wanted.contains(id)).map(|p| p + 1);
            for (slot, k) in [1, 5, 10].into_iter().enumerate() {
                if rank.is_some_and(|r| r <= k) {
                    found_at[slot] += 1;
                }
            }
            reciprocal += rank.map_or(0.0, |r| 1.0 / r as f64);
            if rank.is_none_or(|r| r > 5) {
                misses.push(Miss {
                    query_id: q.id.clone(),
                    query: q.query.clone(),
                    need: need.need.clone(),
                    rank,
                    got: got.iter().take(5).map(|s| (*s).to_owned()).collect(),
                });
            }
        }
        for slot in 0..3 {
            recall[slot] += found_at[slot] as f64 / q.needs.len() as f64;
        }
    }
    let n = queries.len().max(1) as f64;
    EvalReport {
        queries: queries.len(),
        needs,
        recall_at_1: recall[0] / n,
        recall_at_5: recall[1] / n,
        recall_at_10: recall[2] / n,
        mrr: reciprocal / needs.max(1) as f64,
        unknown_ids,
        misses,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every labelled set in `eval/` parses, has unique query ids, a `kind` that agrees with its
    /// needs, and only ids the shipped default catalog holds (a renamed or dropped server would
    /// otherwise silently lower every figure).
    #[test]
    fn every_labelled_set_matches_the_default_catalog() {
        let (_, parsed) =
            crate::catalog::import::read_bytes("default catalog", crate::catalog::DEFAULT_CATALOG)
                .expect("the default catalog parses");
        let known: HashSet<&str> = parsed.servers.iter().map(|s| s.id.as_str()).collect();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("eval");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("eval/ exists")
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            // Plan sets (`steps`, not `needs`) are checked by the planner's evaluation.
            .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("plans")))
            .collect();
        files.sort();
        assert!(files.len() >= 6, "expected the own set and five held-out sets, found {files:?}");
        for file in files {
            let queries = load(&file).unwrap_or_else(|e| panic!("{e}"));
            assert!(queries.len() >= 50, "{}: only {} queries", file.display(), queries.len());
            let mut ids = HashSet::new();
            for q in &queries {
                assert!(ids.insert(q.id.as_str()), "{}: {} repeats", file.display(), q.id);
                let expected = if q.needs.len() == 1 { "single" } else { "multi" };
                assert_eq!(q.kind, expected, "{}: {}", file.display(), q.id);
                for need in &q.needs {
                    let unknown: Vec<&String> =
                        need.ids.iter().filter(|id| !known.contains(id.as_str())).collect();
                    assert!(unknown.is_empty(), "{}: {} [{}] {unknown:?}", file.display(), q.id, need.need);
                }
            }
        }
    }

    #[test]
    fn metrics_count_needs_per_query() {
        let mut gmail = crate::catalog::record::tests::record("gmail");
        gmail.name = "Gmail".into();
        let mut sheets = crate::catalog::record::tests::record("sheets");
        sheets.name = "Google Sheets".into();
        let index = SearchIndex::build(vec![gmail, sheets]);
        let queries = vec![
            EvalQuery {
                id: "q1".into(),
                query: "gmail".into(),
                kind: "single".into(),
                style: String::new(),
                needs: vec![EvalNeed { need: "gmail".into(), ids: vec!["gmail".into()] }],
            },
            EvalQuery {
                id: "q2".into(),
                query: "gmail and sheets".into(),
                kind: "multi".into(),
                style: String::new(),
                needs: vec![
                    EvalNeed { need: "gmail".into(), ids: vec!["gmail".into()] },
                    EvalNeed { need: "drive".into(), ids: vec!["drive".into()] },
                ],
            },
        ];
        let found: Vec<Found> =
            queries.iter().map(|q| crate::catalog::search::tests::search(&index, &q.query, 10)).collect();
        let r = evaluate(&index, &queries, &found);
        assert_eq!((r.queries, r.needs, r.unknown_ids), (2, 3, 1));
        assert!((r.recall_at_1 - 0.75).abs() < 1e-9, "{r:?}");
        assert!((r.recall_at_5 - 0.75).abs() < 1e-9);
        assert!((r.mrr - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(r.misses.len(), 1);
        assert_eq!(r.misses[0].need, "drive");
    }
}
