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
    /// What the expert's server needs before it starts (`starts_with`), where labelled.
    pub starts_with: Option<StartLabel>,
}

/// A labeller's `starts_with`: the values the expert's server needs, and free notes.
#[derive(Debug, Clone, Default)]
pub struct StartLabel {
    /// `(name as written, kind)`: kinds `secret`, `setting`, `file`, `oauth`.
    pub values: Vec<(String, String)>,
    pub notes: String,
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
                starts_with: s.get("starts_with").map(start_label),
            })
            .collect()
    } else if let Some(needs) = v.get("needs").and_then(Value::as_array) {
        needs
            .iter()
            .map(|n| LabelledStep {
                step: n.get("need").and_then(Value::as_str).unwrap_or_default().to_owned(),
                acceptable: ids(n, "ids"),
                expert: None,
                starts_with: None,
            })
            .collect()
    } else {
        return Err("missing `steps` (or `needs`)".to_owned());
    };
    Ok(PlanCase { id, request, steps })
}

fn start_label(v: &Value) -> StartLabel {
    let values = v
        .get("credentials")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let name = c.get("name").and_then(Value::as_str)?;
            Some((name.to_owned(), c.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned()))
        })
        .collect();
    StartLabel { values, notes: v.get("notes").and_then(Value::as_str).unwrap_or_default().to_owned() }
}

/// How the asked values of each labelled expert server compare with what it needs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequirementReport {
    /// Labelled steps whose expert's record is in the catalog.
    pub steps: usize,
    /// Steps whose asked set equals the needed set (environment values and files).
    pub exact: usize,
    /// Needed values not asked, and values asked that are not needed.
    pub missing: usize,
    pub extra: usize,
    /// Asked values the labeller marks as having a default or being optional.
    pub defaults_asked: usize,
    /// Needed paths dynamcp fills with a place in the server's sandbox (met without asking).
    pub paths_filled: usize,
    /// The same figures under the rule before requirement kinds (every required variable asked
    /// but nine named settings), for comparison in the same run.
    pub before_exact: usize,
    pub before_defaults_asked: usize,
    /// Steps whose expert also needs something no variable carries (a browser login, a file
    /// at a fixed place in the home folder): dynamcp cannot take those as values.
    pub other_needs: usize,
    pub misses: Vec<RequirementMiss>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequirementMiss {
    pub case: String,
    pub server: String,
    pub missing: Vec<String>,
    pub extra: Vec<String>,
}

/// The environment-variable name a label starts with (`NOTION_TOKEN (ntn_…)` → `NOTION_TOKEN`),
/// or `None` for a label that names no variable (`Google account login`, `~/.x/keys.json`).
fn variable(label: &str) -> Option<String> {
    let token: String = label.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    let rest = label.trim()[token.len()..].chars().next();
    let upper = token.len() > 1
        && token.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && token == token.to_ascii_uppercase()
        && token.chars().any(|c| c.is_ascii_alphabetic());
    (upper && rest.is_none_or(|c| c.is_whitespace() || c == '(' || c == ',' || c == ':')).then_some(token)
}

/// The variables a label names, as alternatives each needing all of its variables:
/// `CLIENT_ID / CLIENT_SECRET (…)` → `[[CLIENT_ID, CLIENT_SECRET]]`,
/// `AIRFLOW_USERNAME / AIRFLOW_PASSWORD or AIRFLOW_JWT_TOKEN` → two alternatives. Only the text
/// before the first parenthesis is read, unless it names no variable: `App Secret (-s /
/// APP_SECRET)` names `APP_SECRET` in its parenthesis. An alternative that names no variable
/// (`TEMPORAL_API_KEY or TLS client cert/key`) ends the list: the label then needs the first.
fn variables(label: &str) -> Vec<Vec<String>> {
    let head = label.split('(').next().unwrap_or_default();
    let mut alternatives = Vec::new();
    for (i, part) in head.split(" or ").enumerate() {
        let mut names = Vec::new();
        let mut rest = part.trim();
        while let Some(name) = variable(rest) {
            rest = rest[name.len()..].trim_start();
            names.push(name);
            match ["/", ",", "and "].iter().find(|sep| rest.starts_with(**sep)) {
                Some(sep) => rest = rest[sep.len()..].trim_start(),
                None => break,
            }
        }
        // A later alternative counts only when it names a variable plainly (with an underscore).
        if names.is_empty() || (i > 0 && !names[0].contains('_')) {
            break;
        }
        alternatives.push(names);
    }
    if alternatives.is_empty() {
        let inner = label.split_once('(').map(|(_, t)| t.split(')').next().unwrap_or_default()).unwrap_or("");
        let named: Vec<String> = inner
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|t| t.contains('_') && variable(t).is_some())
            .map(str::to_owned)
            .collect();
        if !named.is_empty() {
            alternatives.push(named);
        }
    }
    alternatives
}

/// Whether the label or the notes say `name` is optional, has a default, or is needed only in
/// some setups (`only for GitHub Enterprise Server`).
fn labelled_optional(name: &str, label: &str, notes: &str) -> bool {
    let says = |t: &str| {
        let t = t.to_lowercase();
        ["optional", "default", "only for", "only if", "only when", "only needed"]
            .iter()
            .any(|w| t.contains(w))
    };
    if says(&label.replace(name, "")) {
        return true;
    }
    notes.match_indices(name).any(|(at, _)| {
        let after: String = notes[at + name.len()..].chars().take(40).collect();
        let before: String =
            notes[..at].chars().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect();
        says(&after) || before.to_lowercase().contains("optional")
    })
}

/// The rule before requirement kinds: a variable was a setting (never asked) only when it had
/// one of these names and was not marked secret.
fn is_setting_before(spec: &crate::catalog::CredentialSpec) -> bool {
    const SETTINGS: &[&str] = &[
        "MCP_TRANSPORT",
        "TRANSPORT",
        "PORT",
        "MCP_PORT",
        "HOST",
        "LOG_LEVEL",
        "DEBUG",
        "NODE_ENV",
        "TIMEOUT",
    ];
    !spec.secret && SETTINGS.iter().any(|s| spec.name.eq_ignore_ascii_case(s))
}

/// Compares, for every labelled step, the values dynamcp asks of the expert's server with the
/// values it needs. `record` looks a server up in the catalog.
pub fn score_requirements(
    cases: &[PlanCase],
    record: impl Fn(&str) -> Option<crate::catalog::ServerRecord>,
) -> RequirementReport {
    use std::collections::BTreeSet;
    let mut r = RequirementReport::default();
    for case in cases {
        for step in &case.steps {
            let (Some(expert), Some(label)) = (&step.expert, &step.starts_with) else { continue };
            let Some(server) = record(expert) else { continue };
            r.steps += 1;
            let mut needed = BTreeSet::new();
            let mut defaulted = BTreeSet::new();
            let mut other = false;
            let asked: BTreeSet<String> = server
                .credentials
                .iter()
                .filter(|c| {
                    crate::runtime::launch::env_name_allowed(&c.name)
                        && super::instructions::is_asked(c, &server)
                })
                .map(|c| c.name.to_ascii_uppercase())
                .collect();
            for (text, _kind) in &label.values {
                let alternatives = variables(text);
                // The alternative dynamcp asks in full, else the label's first.
                let Some(names) = alternatives
                    .iter()
                    .find(|names| names.iter().all(|n| asked.contains(n)))
                    .or(alternatives.first())
                else {
                    other = true;
                    continue;
                };
                for name in names {
                    if labelled_optional(name, text, &label.notes) {
                        defaulted.insert(name.clone());
                    } else {
                        needed.insert(name.clone());
                    }
                }
            }
            // A data path the labeller calls needed is met by the place dynamcp gives it.
            let filled: BTreeSet<String> = server
                .credentials
                .iter()
                .filter(|c| {
                    use crate::catalog::requirements::{Fill, Provide, classify};
                    matches!(classify(c).provide, Provide::Filled(Fill::Folder | Fill::FilePath))
                })
                .map(|c| c.name.to_ascii_uppercase())
                .collect();
            r.paths_filled += needed.intersection(&filled).count();
            needed.retain(|n| !filled.contains(n));
            r.other_needs += usize::from(other);
            let before: BTreeSet<String> = server
                .credentials
                .iter()
                .filter(|c| c.required && !is_setting_before(c))
                .map(|c| c.name.to_ascii_uppercase())
                .collect();
            let needed_before: BTreeSet<String> = needed.union(&filled).cloned().collect();
            r.before_exact += usize::from(before == needed_before);
            r.before_defaults_asked += before.intersection(&defaulted).count();
            r.defaults_asked += asked.intersection(&defaulted).count();
            let missing: Vec<String> = needed.difference(&asked).cloned().collect();
            let extra: Vec<String> = asked.difference(&needed).cloned().collect();
            r.missing += missing.len();
            r.extra += extra.len();
            if missing.is_empty() && extra.is_empty() {
                r.exact += 1;
            } else {
                r.misses.push(RequirementMiss {
                    case: case.id.clone(),
                    server: expert.clone(),
                    missing,
                    extra,
                });
            }
        }
    }
    r
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
    /// Steps whose expert's server was chosen: its record, or another record that launches the
    /// same package or URL (the catalog lists some servers twice, and the labeller named one).
    pub expert: f64,
    /// Steps whose expert's very record was chosen.
    pub expert_record: f64,
    pub nonsense: usize,
    pub refused: f64,
    /// Chosen servers that fit no labelled step, and steps left without an acceptable server.
    pub wrong: Vec<PlanMiss>,
    pub uncovered: Vec<PlanMiss>,
}

/// Scores `plans[i]` against `cases[i]`. `launch_key`: what a catalog id launches (see
/// [`crate::catalog::ServerRecord::launch_key`]), to tell one server listed twice.
pub fn score(cases: &[PlanCase], plans: &[Plan], launch_key: impl Fn(&str) -> Option<String>) -> PlanReport {
    let mut r = PlanReport { requests: cases.len(), ..PlanReport::default() };
    let (mut acceptable_chosen, mut covered, mut expert_hits, mut refused) = (0, 0, 0, 0);
    let mut expert_records = 0;
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
                let key = launch_key(expert);
                if chosen.contains(expert) {
                    expert_records += 1;
                    expert_hits += 1;
                } else if key.is_some() && chosen.iter().any(|id| launch_key(id) == key) {
                    expert_hits += 1;
                }
            }
        }
    }
    let share = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    r.precision = share(acceptable_chosen, r.chosen);
    r.coverage = share(covered, r.steps);
    r.expert = share(expert_hits, r.expert_steps);
    r.expert_record = share(expert_records, r.expert_steps);
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
        Plan { request: String::new(), needs, workflow: vec![], note: None, schedule: None }
    }

    #[test]
    fn asked_values_are_compared_with_the_labelled_needs() {
        let line = r#"{"id":"w1","request":"r","steps":[
            {"step":"slack","acceptable":["slack"],"expert":"slack","starts_with":{"runtime":"node","credentials":[
                {"name":"SLACK_BOT_TOKEN (xoxb-…)","kind":"secret"},{"name":"SLACK_TEAM_ID","kind":"setting"},
                {"name":"SLACK_REGION","kind":"setting"},{"name":"SLACK_DATA_DIR","kind":"setting"}],
                "notes":"SLACK_REGION is optional"}},
            {"step":"mail","acceptable":["gmail"],"expert":"gmail","starts_with":{"runtime":"node","credentials":[
                {"name":"Google account login","kind":"oauth"}],"notes":""}},
            {"step":"gone","acceptable":["nope"],"expert":"nope","starts_with":{"runtime":"node","credentials":[],"notes":""}}]}"#;
        let cases = vec![case(&serde_json::from_str(&line.replace('\n', "")).expect("json")).expect("case")];
        let slack: crate::catalog::ServerRecord = serde_json::from_value(serde_json::json!({
            "id": "slack", "name": "Slack", "credentials": [
                {"name": "SLACK_BOT_TOKEN", "required": true, "secret": true},
                {"name": "SLACK_TEAM_ID", "description": "T01234567", "required": true},
                {"name": "SLACK_REGION", "required": true},
                {"name": "SLACK_DATA_DIR", "description": "/path/to/data", "required": true}]}))
        .expect("record");
        let gmail: crate::catalog::ServerRecord =
            serde_json::from_value(serde_json::json!({"id": "gmail", "name": "Gmail"})).expect("record");
        let r = score_requirements(&cases, |id| [&slack, &gmail].into_iter().find(|s| s.id == id).cloned());
        // The unknown expert is skipped; Slack asks a region the label calls optional, and its
        // data folder, needed, is filled in.
        assert_eq!((r.steps, r.exact, r.other_needs, r.paths_filled), (2, 1, 1, 1));
        assert_eq!((r.missing, r.extra, r.defaults_asked), (0, 1, 1));
        assert_eq!(r.misses[0].extra, ["SLACK_REGION"]);
        assert_eq!(
            variable("NOTION_TOKEN (internal integration secret ntn_...)").as_deref(),
            Some("NOTION_TOKEN")
        );
        assert_eq!(variable("~/.gmail-mcp/gcp-oauth.keys.json"), None);
        assert_eq!(variable("Google account login"), None);
    }

    #[test]
    fn a_label_names_every_variable_and_its_alternatives() {
        let v = |s: &[&[&str]]| -> Vec<Vec<String>> {
            s.iter().map(|a| a.iter().map(|n| (*n).to_owned()).collect()).collect()
        };
        assert_eq!(
            variables("CLIENT_ID / CLIENT_SECRET (Google OAuth client)"),
            v(&[&["CLIENT_ID", "CLIENT_SECRET"]])
        );
        assert_eq!(
            variables("OKTA_PRIVATE_KEY and OKTA_KEY_ID (JWT)"),
            v(&[&["OKTA_PRIVATE_KEY", "OKTA_KEY_ID"]])
        );
        assert_eq!(
            variables("AIRFLOW_USERNAME / AIRFLOW_PASSWORD (basic auth) or AIRFLOW_JWT_TOKEN"),
            v(&[&["AIRFLOW_USERNAME", "AIRFLOW_PASSWORD"]])
        );
        assert_eq!(variables("A_USER / A_PASS or A_TOKEN"), v(&[&["A_USER", "A_PASS"], &["A_TOKEN"]]));
        assert_eq!(variables("TEMPORAL_API_KEY or TLS client cert/key"), v(&[&["TEMPORAL_API_KEY"]]));
        assert_eq!(variables("BALLDONTLIE API key (Authorization header)"), v(&[&["BALLDONTLIE"]]));
        assert_eq!(variables("App Secret (-s / APP_SECRET)"), v(&[&["APP_SECRET"]]));
        assert_eq!(variables("--dsn (command-line argument or DSN env var)"), v(&[]));
        assert_eq!(variables("Google account login"), v(&[]));
        assert!(labelled_optional("GITHUB_HOST", "GITHUB_HOST (only for GitHub Enterprise Server)", ""));
        assert!(!labelled_optional("DEFAULT_MODEL", "DEFAULT_MODEL (e.g. gpt-4o)", ""));
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
        let plans = [plan(&["g2", "excel"]), plan(&["memory"]), plan(&["t1"])];
        let r = score(&cases, &plans, |_| None);
        assert_eq!((r.requests, r.steps, r.nonsense), (3, 3, 1));
        // g2 and t1 are acceptable, excel is not; the nonsense request's pick is counted apart.
        assert!((r.precision - 2.0 / 3.0).abs() < 1e-9, "{}", r.precision);
        assert!((r.coverage - 2.0 / 3.0).abs() < 1e-9);
        assert!((r.expert - 0.0).abs() < 1e-9, "g1 and s1 were the experts");
        // g2 launching g1's package is g1's server listed twice: the expert's server, not its record.
        let same = |id: &str| match id {
            "g1" | "g2" => Some("npm:gmail".to_owned()),
            "s1" => Some("npm:sheets".to_owned()),
            _ => None,
        };
        let r = score(&cases, &plans, same);
        assert!((r.expert - 1.0 / 2.0).abs() < 1e-9, "{}", r.expert);
        assert!((r.expert_record - 0.0).abs() < 1e-9);
        assert!((r.refused - 0.0).abs() < 1e-9);
        assert_eq!(r.uncovered.len(), 1);
        assert_eq!(r.wrong.len(), 2);
    }
}
