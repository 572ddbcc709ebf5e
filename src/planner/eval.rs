//! Plan quality on a labelled set: does the plan choose, for each step, a server the labeller
//! accepts, and the one an expert would pick?
//!
//! Two file shapes are read: plan sets (`{id, request, steps: [{step, acceptable, expert}]}`,
//! `steps: []` for a request no server should serve) and the search sets
//! (`{id, query, needs: [{need, ids}]}`, where every id is acceptable and no expert is named).
//!
//! - **precision**: the share of chosen servers that are acceptable for some step of their
//!   request (over all chosen servers of all requests);
//! - **coverage**: the share of labelled steps with an acceptable server chosen;
//! - **expert**: the share of steps with an expert whose expert was chosen;
//! - **refused**: the share of no-step requests for which nothing was chosen.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::Plan;

#[derive(Debug, Clone)]
pub struct PlanCase {
    pub id: String,
    pub request: String,
    pub steps: Vec<LabelledStep>,
}

#[derive(Debug, Clone)]
pub struct LabelledStep {
    pub step: String,
    pub acceptable: Vec<String>,
    pub expert: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanEvalError {
    #[error("could not read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} line {line}: {reason}")]
    Line { path: String, line: usize, reason: String },
}

/// Reads a plan set or a search set.
pub fn load(path: &Path) -> Result<Vec<PlanCase>, PlanEvalError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| PlanEvalError::Read { path: path.display().to_string(), source })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let fail =
            |reason: String| PlanEvalError::Line { path: path.display().to_string(), line: i + 1, reason };
        let v: Value = serde_json::from_str(line).map_err(|e| fail(e.to_string()))?;
        out.push(case(&v).map_err(fail)?);
    }
    Ok(out)
}

fn case(v: &Value) -> Result<PlanCase, String> {
    let text = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let id = text("id").ok_or("missing `id`")?;
    let request = text("request").or_else(|| text("query")).ok_or("missing `request` (or `query`)")?;
    let ids = |s: &Value, key: &str| -> Vec<String> {
        s.get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    let steps = if let Some(steps) = v.get("steps").and_then(Value::as_array) {
        steps
            .iter()
            .map(|s| LabelledStep {
                step: s.get("step").and_then(Value::as_str).unwrap_or_default().to_owned(),
                acceptable: ids(s, "acceptable"),
                expert: s.get("expert").and_then(Value::as_str).map(str::to_owned),
            })
            .collect()
    } else if let Some(needs) = v.get("needs").and_then(Value::as_array) {
        needs
            .iter()
            .map(|n| LabelledStep {
                step: n.get("need").and_then(Value::as_str).unwrap_or_default().to_owned(),
                acceptable: ids(n, "ids"),
                expert: None,
            })
            .collect()
    } else {
        return Err("missing `steps` (or `needs`)".to_owned());
    };
    Ok(PlanCase { id, request, steps })
}

/// A chosen server no step accepts, or a step with no acceptable server chosen.
#[derive(Debug, Clone, Serialize)]
pub struct PlanMiss {
    pub case: String,
    pub request: String,
    /// The labelled step (empty for a chosen server that fits no step).
    pub step: String,
    pub chosen: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PlanReport {
    pub requests: usize,
    pub steps: usize,
    /// Servers chosen for requests that have steps.
    pub chosen: usize,
    pub precision: f64,
    pub coverage: f64,
    pub expert_steps: usize,
    pub expert: f64,
    pub nonsense: usize,
    pub refused: f64,
    /// Chosen servers that fit no labelled step, and steps left without an acceptable server.
    pub wrong: Vec<PlanMiss>,
    pub uncovered: Vec<PlanMiss>,
}

/// Scores `plans[i]` against `cases[i]`.
pub fn score(cases: &[PlanCase], plans: &[Plan]) -> PlanReport {
    let mut r = PlanReport { requests: cases.len(), ..PlanReport::default() };
    let (mut acceptable_chosen, mut covered, mut expert_hits, mut refused) = (0, 0, 0, 0);
    for (case, plan) in cases.iter().zip(plans) {
        let chosen: Vec<String> = plan.servers().iter().map(|s| s.id.clone()).collect();
        if case.steps.is_empty() {
            r.nonsense += 1;
            if chosen.is_empty() {
                refused += 1;
            } else {
                r.wrong.push(miss(case, "", &chosen));
            }
            continue;
        }
        r.chosen += chosen.len();
        for id in &chosen {
            if case.steps.iter().any(|s| s.acceptable.contains(id)) {
                acceptable_chosen += 1;
            } else {
                r.wrong.push(miss(case, "", std::slice::from_ref(id)));
            }
        }
        for step in &case.steps {
            r.steps += 1;
            if chosen.iter().any(|id| step.acceptable.contains(id)) {
                covered += 1;
            } else {
                r.uncovered.push(miss(case, &step.step, &chosen));
            }
            if let Some(expert) = &step.expert {
                r.expert_steps += 1;
                if chosen.contains(expert) {
                    expert_hits += 1;
                }
            }
        }
    }
    let share = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    r.precision = share(acceptable_chosen, r.chosen);
    r.coverage = share(covered, r.steps);
    r.expert = share(expert_hits, r.expert_steps);
    r.refused = share(refused, r.nonsense);
    r
}

fn miss(case: &PlanCase, step: &str, chosen: &[String]) -> PlanMiss {
    PlanMiss {
        case: case.id.clone(),
        request: case.request.clone(),
        step: step.to_owned(),
        chosen: chosen.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::{ChosenServer, PlannedNeed};

    fn plan(ids: &[&str]) -> Plan {
        let needs = ids
            .iter()
            .map(|id| {
                PlannedNeed::served(
                    id,
                    Some(ChosenServer {
                        id: (*id).into(),
                        name: (*id).into(),
                        why: String::new(),
                        tools: vec![],
                        start: None,
                    }),
                )
            })
            .collect();
        Plan { request: String::new(), needs, workflow: vec![], note: None }
    }

    #[test]
    fn plans_are_scored_per_step_and_per_chosen_server() {
        let lines = [
            r#"{"id":"w1","request":"gmail to sheets","steps":[{"step":"gmail","acceptable":["g1","g2"],"expert":"g1"},{"step":"sheets","acceptable":["s1"],"expert":"s1"}]}"#,
            r#"{"id":"w2","request":"purple monkey","steps":[]}"#,
            r#"{"id":"q1","query":"time in tokyo","needs":[{"need":"time","ids":["t1"]}]}"#,
        ];
        let cases: Vec<PlanCase> =
            lines.iter().map(|l| case(&serde_json::from_str(l).expect("json")).expect("case")).collect();
        let r = score(&cases, &[plan(&["g2", "excel"]), plan(&["memory"]), plan(&["t1"])]);
        assert_eq!((r.requests, r.steps, r.nonsense), (3, 3, 1));
        // g2 and t1 are acceptable, excel is not; the nonsense request's pick is counted apart.
        assert!((r.precision - 2.0 / 3.0).abs() < 1e-9, "{}", r.precision);
        assert!((r.coverage - 2.0 / 3.0).abs() < 1e-9);
        assert!((r.expert - 0.0).abs() < 1e-9, "g1 and s1 were the experts");
        assert!((r.refused - 0.0).abs() < 1e-9);
        assert_eq!(r.uncovered.len(), 1);
        assert_eq!(r.wrong.len(), 2);
    }
}
