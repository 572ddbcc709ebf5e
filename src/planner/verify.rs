//! Agents that start: before the user is asked for anything, each step's chosen server is
//! installed and started once here (by a [`Verifier`], the runtime in service). A server that
//! does not start is replaced by the step's next alternative that does, and the reply says so; one
//! that needs its credentials to start is kept and marked so.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::plan::{NotStarted, Plan, PlannedNeed};
use crate::catalog::verified::{Verdict, Verification};
use crate::catalog::{SearchIndex, ServerRecord};
use crate::runtime::Runtime;

/// Alternatives offered after a replacement, when the step had fewer.
const ALTERNATIVES: usize = 2;

/// Whether and how long plans are verified (from the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifySettings {
    pub enabled: bool,
    /// The longest a chat turn waits for its servers' checks; the rest go on in the background
    /// and their results are kept for the next turn.
    pub budget: Duration,
}

impl Default for VerifySettings {
    fn default() -> Self {
        Self { enabled: true, budget: Duration::from_secs(15) }
    }
}

/// Tells whether a server installs and starts on this machine.
#[async_trait]
pub trait Verifier: Send + Sync {
    /// What is known of `record` starting here, waiting at most `budget` for a new check.
    async fn verify(&self, record: &ServerRecord, budget: Duration) -> Verification;

    /// What an earlier check found of `record` that still holds, without launching anything.
    async fn known(&self, _record: &ServerRecord) -> Option<Verification> {
        None
    }
}

#[async_trait]
impl Verifier for Arc<Runtime> {
    async fn verify(&self, record: &ServerRecord, budget: Duration) -> Verification {
        Runtime::verify(self, record, budget).await
    }

    async fn known(&self, record: &ServerRecord) -> Option<Verification> {
        Runtime::known_verification(self, record).await
    }
}

/// Checks every step's server of `plan` within `budget` (the steps at once), replacing those
/// that do not start by their next alternative that does. Servers already checked are kept as
/// they are, so a plan carried from an earlier turn costs nothing.
pub async fn verify_plan(plan: &mut Plan, index: &SearchIndex, verifier: &dyn Verifier, budget: Duration) {
    let deadline = Instant::now() + budget;
    let needs = std::mem::take(&mut plan.needs);
    let checked =
        futures::future::join_all(needs.into_iter().map(|n| verify_need(n, index, verifier, deadline)));
    plan.needs = checked.await;
    // A step whose server changed is described anew (the planner's text named the old one).
    if plan.workflow.len() == plan.needs.len() {
        for (need, step) in plan.needs.iter().zip(plan.workflow.iter_mut()) {
            if !need.did_not_start.is_empty() {
                *step = super::plan::workflow_step(need);
            }
        }
    }
}

async fn verify_need(
    mut need: PlannedNeed,
    index: &SearchIndex,
    verifier: &dyn Verifier,
    deadline: Instant,
) -> PlannedNeed {
    let Some(first) = need.server.take() else { return need };
    if first.start.as_ref().is_some_and(|v| v.verdict != Verdict::Unchecked) {
        need.server = Some(first);
        return need;
    }
    let offered = need.alternatives.len().max(ALTERNATIVES);
    let mut candidates: VecDeque<_> =
        std::iter::once(first).chain(need.alternatives.drain(..)).chain(need.reserve.drain(..)).collect();
    while let Some(mut candidate) = candidates.pop_front() {
        let Some(record) = index.get(&candidate.id) else {
            need.did_not_start.push(NotStarted {
                id: candidate.id.clone(),
                name: candidate.name.clone(),
                why: "it is no longer in the catalog".to_owned(),
            });
            continue;
        };
        let verification = match candidate.start.take() {
            Some(known) if known.verdict != Verdict::Unchecked => known,
            _ => verifier.verify(record, deadline.saturating_duration_since(Instant::now())).await,
        };
        if verification.verdict == Verdict::Failed {
            need.did_not_start.push(NotStarted {
                id: candidate.id.clone(),
                name: candidate.name.clone(),
                why: verification.brief(),
            });
            continue;
        }
        candidate.start = Some(verification);
        need.server = Some(candidate);
        break;
    }
    let mut rest: Vec<_> = candidates.into();
    need.reserve = rest.split_off(offered.min(rest.len()));
    need.alternatives = rest;
    if need.server.is_none() {
        let tried: Vec<&str> = need.did_not_start.iter().map(|n| n.id.as_str()).collect();
        need.none_because =
            Some(format!("none of the servers that fit starts here (tried {})", tried.join(", ")));
    }
    need
}

/// The package versions a plan's servers were verified at, as the runtime pins them
/// (`{server: {ecosystem, name, version}}`): an agent never runs a newer version than the one
/// that started here.
pub fn pins(plan: &Plan) -> serde_json::Value {
    let pins: serde_json::Map<String, serde_json::Value> = plan
        .servers()
        .into_iter()
        .filter_map(|s| {
            let v = s
                .start
                .as_ref()
                .filter(|v| matches!(v.verdict, Verdict::Started | Verdict::NeedsCredentials))?;
            let (ecosystem, name, version) =
                (v.ecosystem.as_ref()?, v.package.as_ref()?, v.version.as_ref()?);
            Some((
                s.id.clone(),
                serde_json::json!({ "ecosystem": ecosystem, "name": name, "version": version }),
            ))
        })
        .collect();
    serde_json::Value::Object(pins)
}
