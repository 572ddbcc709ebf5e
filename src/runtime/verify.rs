//! Verifying a server before anyone is asked for its credentials: its package installed at the
//! version the catalog knows, started once inside the sandbox with no credentials, as a tenant of
//! its own (no user's files or values are in reach), its live tools listed, then stopped.
//!
//! Results are stored per server, launch and version ([`crate::catalog::verified`]), so each is
//! checked once; concurrent checks of one server share one attempt, and an attempt that outlives
//! the caller's budget goes on in the background and is stored when it ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;

use super::launch::Target;
use super::{Runtime, RuntimeError, run};
use crate::catalog::LaunchKind;
use crate::catalog::ServerRecord;
use crate::catalog::verified::{self, Verdict, Verification};
use crate::store::{Agent, VerificationRow};

/// The tenant verifications run as: its name is not a valid tenant name, so no user shares its
/// sandbox identity's folders.
const VERIFY_TENANT: &str = "#verify";
/// The agent id verifications run under (their servers' homes live in its folder).
const VERIFY_AGENT: Uuid = Uuid::from_u128(0x7665_7269_6679_0000_0000_0000_0000_0001);
/// The detail of a hosted server that answered asking for a sign-in.
pub const SIGNS_IN: &str = "signs its users in through the browser (OAuth); not verified without a sign-in";
/// The longest failure text kept.
const DETAIL_CHARS: usize = 400;

/// Checks in flight, by server id.
pub(super) type InFlight = std::sync::Mutex<HashMap<String, watch::Receiver<Option<Verification>>>>;

impl Runtime {
    /// What is known of `record` starting on this machine: a stored verification that still
    /// holds, or a new one, waited for at most `budget`. Past the budget the answer is
    /// [`Verdict::Unchecked`] and the check goes on; its result is stored for the next call.
    pub async fn verify(self: &Arc<Self>, record: &ServerRecord, budget: Duration) -> Verification {
        self.verify_with(record, budget, true).await
    }

    /// [`Runtime::verify`]; with `stored` false, checked again even where a stored result holds.
    pub async fn verify_with(
        self: &Arc<Self>,
        record: &ServerRecord,
        budget: Duration,
        stored: bool,
    ) -> Verification {
        let target = match self.launcher.target(record) {
            Ok(target) => target,
            Err(e) => {
                let mut v = Verification::unchecked(record, "", e.to_string());
                v.verdict = Verdict::Failed;
                return v;
            }
        };
        let launch = launch_key(&target);
        if let Target::Command { kind: LaunchKind::Docker, .. } = target {
            return Verification::unchecked(record, launch, "a docker image is not pulled just to check it");
        }
        let expected = expected_version(record, &target);
        if stored && let Some(known) = self.stored_verification(record, &launch, expected.as_deref()).await {
            return known;
        }
        let mut rx = self.verification_in_flight(record, target, launch.clone(), expected);
        let done = tokio::time::timeout(budget, rx.wait_for(Option::is_some)).await;
        match done {
            Ok(Ok(v)) => v.clone().unwrap_or_else(|| Verification::unchecked(record, launch, "interrupted")),
            Ok(Err(_)) => Verification::unchecked(record, launch, "the check was interrupted"),
            Err(_) => Verification::unchecked(
                record,
                launch,
                format!("still installing after {} s; checked in the background", budget.as_secs()),
            ),
        }
    }

    /// Every stored verification of `server`, newest first.
    pub async fn verifications(&self, server: &str) -> Result<Vec<Verification>, RuntimeError> {
        Ok(self
            .store
            .verifications(server)
            .await?
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect())
    }

    /// The stored verification of `record`'s launch that still holds, if any: nothing is
    /// launched or installed.
    pub async fn known_verification(&self, record: &ServerRecord) -> Option<Verification> {
        let target = self.launcher.target(record).ok()?;
        let launch = launch_key(&target);
        let expected = expected_version(record, &target);
        self.stored_verification(record, &launch, expected.as_deref()).await
    }

    async fn stored_verification(
        &self,
        record: &ServerRecord,
        launch: &str,
        expected: Option<&str>,
    ) -> Option<Verification> {
        let stored = match self.verifications(&record.id).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(server = %record.id, error = %e, "could not read stored verifications");
                return None;
            }
        };
        let now = Utc::now();
        stored.into_iter().find(|v| v.still_holds(launch, expected, now))
    }

    /// The running check of `record`, or a new one.
    fn verification_in_flight(
        self: &Arc<Self>,
        record: &ServerRecord,
        target: Target,
        launch: String,
        expected: Option<String>,
    ) -> watch::Receiver<Option<Verification>> {
        let mut checks = self.verifying.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(rx) = checks.get(&record.id) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        checks.insert(record.id.clone(), rx.clone());
        drop(checks);
        let runtime = self.clone();
        let record = record.clone();
        tokio::spawn(async move {
            let v = runtime.check(&record, &target, launch, expected).await;
            let row = VerificationRow {
                server: v.server.clone(),
                launch: v.launch.clone(),
                version: v.version.clone().unwrap_or_default(),
                verdict: v.verdict.as_str().to_owned(),
                detail: serde_json::to_value(&v).unwrap_or(Value::Null),
            };
            // A network failure says nothing lasting about the server: it is checked again.
            let lasting = v.verdict != Verdict::Unchecked && !v.detail.as_deref().is_some_and(transient);
            if lasting && let Err(e) = runtime.store.put_verification(&row).await {
                tracing::warn!(server = %v.server, error = %e, "could not store a verification");
            }
            tracing::info!(server = %v.server, verdict = v.verdict.as_str(), version = ?v.version, tools = v.tools.len(), ms = v.ms, "verified");
            if let Ok(mut checks) = runtime.verifying.lock() {
                checks.remove(&v.server);
            }
            let _ = tx.send(Some(v));
        });
        rx
    }

    /// Installs and starts `record` once, with no credentials.
    async fn check(
        &self,
        record: &ServerRecord,
        target: &Target,
        launch: String,
        expected: Option<String>,
    ) -> Verification {
        let began = Instant::now();
        let package = match target {
            Target::Package { package, .. } => Some(package),
            _ => None,
        };
        // The version the catalog knows is the one installed: a verification is of that version.
        let pins = match (package, &expected) {
            (Some(p), Some(v)) => {
                json!({ "pins": { &record.id: { "ecosystem": p.ecosystem, "name": p.name, "version": v } } })
            }
            _ => json!({}),
        };
        let now = Utc::now();
        let agent = Agent {
            id: VERIFY_AGENT,
            tenant: VERIFY_TENANT.to_owned(),
            session_id: Uuid::nil(),
            name: "verification".to_owned(),
            mcp_config: json!({}),
            workflow: String::new(),
            model: None,
            status: "verifying".to_owned(),
            metadata: pins,
            created_at: now,
            updated_at: now,
        };
        let started = self.start(&agent, &record.id, &run::Emitter::discard()).await;
        let installed = package.and_then(|p| self.packages.installed(p, expected.as_deref()));
        let mut v = Verification {
            server: record.id.clone(),
            verdict: Verdict::Started,
            launch,
            ecosystem: package.map(|p| p.ecosystem.as_str().to_owned()),
            package: package.map(|p| p.name.clone()),
            version: installed.map(|i| i.version),
            tools: Vec::new(),
            detail: None,
            ms: 0,
            checked_at: Utc::now(),
        };
        match started {
            Ok(live) => {
                v.tools = live.tools().iter().map(|t| t.name.to_string()).collect();
                live.stop().await;
            }
            Err(RuntimeError::SignInNeeded { .. }) => {
                v.verdict = Verdict::NeedsCredentials;
                v.detail = Some(SIGNS_IN.to_owned());
            }
            Err(e) => {
                v.verdict = verdict_of(&e, record);
                v.detail = Some(crate::catalog::text::clip(&e.to_string(), DETAIL_CHARS));
            }
        }
        let work = self.launcher.work_dir(VERIFY_AGENT, &record.id);
        if let Err(e) = std::fs::remove_dir_all(&work)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::debug!(dir = %work.display(), error = %e, "could not remove a verification's folder");
        }
        v.ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
        v
    }
}

/// What a failed start says about the server: a crash of the package itself is a failure; a
/// server that declares credentials, or whose own words ask for one, needs them to start.
fn verdict_of(error: &RuntimeError, record: &ServerRecord) -> Verdict {
    match error {
        RuntimeError::InstallFailed { .. }
        | RuntimeError::NotLaunchable { .. }
        | RuntimeError::NotInCatalog(_) => Verdict::Failed,
        RuntimeError::StartFailed { .. }
        | RuntimeError::StartTimeout { .. }
        | RuntimeError::ServerGone { .. }
        | RuntimeError::RemoteRefused { .. } => {
            let said = error.to_string().to_lowercase();
            if CRASHES.iter().any(|c| said.contains(c)) {
                Verdict::Failed
            } else if verified::needs_credentials(record) || ASKS.iter().any(|a| said.contains(a)) {
                Verdict::NeedsCredentials
            } else {
                Verdict::Failed
            }
        }
        _ => Verdict::Unchecked,
    }
}

/// Whether a failure came from the network (a registry, a download a package's install script
/// makes, a remote server unreachable from here) rather than from the server itself.
fn transient(detail: &str) -> bool {
    let detail = detail.to_lowercase();
    NETWORK.iter().any(|n| detail.contains(n))
}

/// What a failure of the network looks like (lower case).
const NETWORK: &[&str] = &[
    "enotfound",
    "eai_again",
    "etimedout",
    "econnreset",
    "econnrefused",
    "getaddrinfo",
    "network is unreachable",
    "self-signed certificate",
    "unable to get local issuer certificate",
    "failed to fetch",
    "did not answer as an mcp server",
    "did not start within",
];

/// What a package that cannot run says (lower case): missing modules, syntax the runtime does not
/// know, a wrong runtime version.
const CRASHES: &[&str] = &[
    "cannot find module",
    "cannot find package",
    "err_module_not_found",
    "err_require_esm",
    "modulenotfounderror",
    "no module named",
    "importerror",
    "syntaxerror",
    "unsupported engine",
    "requires python",
    "command not found",
    "exec format error",
];

/// What a server that wants a credential or a setting says when it has none (lower case).
const ASKS: &[&str] = &[
    "api key",
    "api_key",
    "apikey",
    "access token",
    "_token",
    "token is",
    "token not",
    "credential",
    "oauth",
    "unauthori",
    "authenticat",
    "password",
    "secret",
    "keys file",
    "key file",
    "client id",
    "client_id",
    "environment variable",
    "env var",
    "must be set",
    "is not set",
    "are not set",
    "is required",
    "are required",
    "missing required",
    "please set",
    "please provide",
    "not configured",
];

/// A launch without its version: what a verification is of.
fn launch_key(target: &Target) -> String {
    match target {
        Target::Package { package, .. } => format!("{} {}", package.ecosystem.as_str(), package.name),
        other => other.describe(),
    }
}

/// The version the catalog expects: the spec's own pin, else the registry's latest release.
fn expected_version(record: &ServerRecord, target: &Target) -> Option<String> {
    let Target::Package { package, .. } = target else { return None };
    package.version.clone().or_else(|| {
        let kind = match package.ecosystem {
            super::packages::Ecosystem::Npm => LaunchKind::Npm,
            super::packages::Ecosystem::Pypi => LaunchKind::Pypi,
        };
        record
            .launch
            .iter()
            .filter(|o| o.kind == kind)
            .find_map(|o| o.registry.as_ref().and_then(|r| r.latest_version.clone()))
            .filter(|v| super::packages::valid_version(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(credentials: bool) -> ServerRecord {
        let mut record: ServerRecord =
            serde_json::from_value(json!({"id": "s", "name": "S"})).expect("a minimal record");
        if credentials {
            record.credentials = serde_json::from_value(json!([{"name": "S_API_KEY", "required": true}]))
                .expect("a credential");
        }
        record
    }

    fn exited(said: &str) -> RuntimeError {
        RuntimeError::StartFailed {
            server: "s".into(),
            reason: format!("it stopped before answering; it said: {said}"),
        }
    }

    #[test]
    fn a_failed_start_is_told_apart_from_one_that_wants_credentials() {
        let install = RuntimeError::InstallFailed { server: "s".into(), reason: "npm error 404".into() };
        assert_eq!(verdict_of(&install, &record(true)), Verdict::Failed);
        let asks =
            exited("Error: OAuth keys file not found. Please place gcp-oauth.keys.json in ~/.gmail-mcp");
        assert_eq!(
            verdict_of(&asks, &record(false)),
            Verdict::NeedsCredentials,
            "its own words ask for a file"
        );
        assert_eq!(verdict_of(&exited("GITHUB_TOKEN is not set"), &record(false)), Verdict::NeedsCredentials);
        assert_eq!(
            verdict_of(&exited("segfault"), &record(true)),
            Verdict::NeedsCredentials,
            "it declares one"
        );
        assert_eq!(verdict_of(&exited("segfault"), &record(false)), Verdict::Failed);
        let crash = exited("Error: Cannot find module 'zod'. API_KEY is required");
        assert_eq!(
            verdict_of(&crash, &record(true)),
            Verdict::Failed,
            "a broken package fails whatever it declares"
        );
        assert_eq!(verdict_of(&RuntimeError::Capacity { max: 1 }, &record(false)), Verdict::Unchecked);
        assert!(transient("installing npm x failed: npm error code: 'ENOTFOUND', syscall: 'getaddrinfo'"));
        assert!(!transient("installing npm x failed: npm error 404"), "a 404 is the package's, and lasts");
    }
}
