//! What is known of a server starting on this machine: installed at a pinned version, started
//! with no credentials, its live tools listed. A plan asks for credentials only for servers that
//! pass (or that need those credentials to start at all); agents run the version verified.
//!
//! The runtime produces [`Verification`]s, the store keeps them per server, launch and version
//! (as opaque JSON), and the planner reads them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::record::ServerRecord;

/// The longest reason a reply gives for a server that did not start.
const BRIEF_CHARS: usize = 160;

/// How long a verification of a launch whose version the catalog does not know stays valid.
pub const UNVERSIONED_TTL_DAYS: i64 = 7;

/// The outcome of starting a server once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Installed, started and listed its tools.
    Started,
    /// Installed, and did not start without the credentials it declares: not verified, not
    /// failed (most servers check their token at start).
    NeedsCredentials,
    /// Could not be installed, or crashed though it needs no credentials: it will not run here.
    Failed,
    /// Not tried: no sandbox, docker, capacity, or the time budget ran out first (the check
    /// goes on in the background and its result is kept).
    Unchecked,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::NeedsCredentials => "needs_credentials",
            Self::Failed => "failed",
            Self::Unchecked => "unchecked",
        }
    }
}

/// One verification of one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verification {
    pub server: String,
    pub verdict: Verdict,
    /// What was launched, without its version: `npm @scope/name`, `pypi name`, a URL, a command.
    pub launch: String,
    /// `npm` or `pypi` for a package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecosystem: Option<String>,
    /// The package's name, for a package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// The version installed and started (agents are pinned to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The live tools' names, when it started.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Why it failed or was not checked (secrets redacted, shortened).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Install and start, in milliseconds.
    #[serde(default)]
    pub ms: u64,
    #[schema(value_type = String)]
    pub checked_at: DateTime<Utc>,
}

impl Verification {
    /// A verdict reached without launching anything.
    pub fn unchecked(record: &ServerRecord, launch: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            server: record.id.clone(),
            verdict: Verdict::Unchecked,
            launch: launch.into(),
            ecosystem: None,
            package: None,
            version: None,
            tools: Vec::new(),
            detail: Some(detail.into()),
            ms: 0,
            checked_at: Utc::now(),
        }
    }

    /// Whether this stored verification still describes `record`'s launch: the same launch, and
    /// the version the catalog expects now (the spec's pin or the registry's latest), or, when
    /// the catalog knows no version, checked recently.
    pub fn still_holds(&self, launch: &str, expected_version: Option<&str>, now: DateTime<Utc>) -> bool {
        if self.launch != launch || self.verdict == Verdict::Unchecked {
            return false;
        }
        match (expected_version, self.version.as_deref()) {
            (Some(expected), Some(version)) => expected == version,
            // Failed installs have no version: valid while the catalog expects the same one,
            // which the stored launch text cannot tell; keep them for the short period too.
            _ => now - self.checked_at < chrono::Duration::days(UNVERSIONED_TTL_DAYS),
        }
    }

    /// Why it did not start, in one short line for a reply: npm's 404, the Python it needs, or
    /// the last line the server said (a traceback's error, not its frames).
    pub fn brief(&self) -> String {
        let detail = self.detail.as_deref().unwrap_or("it did not start");
        let lower = detail.to_lowercase();
        let line = if lower.contains("could not be installed") && lower.contains(" 404") {
            "its package is not published (the registry answers 404)".to_owned()
        } else if let Some(at) = lower.find("python>=") {
            let wanted: String = detail[at + "python>=".len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            format!("it needs Python {wanted} or newer")
        } else if let Some((_, said)) = detail.split_once("it said: ") {
            last_line(said).to_owned()
        } else {
            detail.split(" | ").next().unwrap_or(detail).to_owned()
        };
        one_line(&line)
    }

    /// A few words for a reply: "started here, 2 tools (npm mcp-server-time 1.0.3)".
    pub fn summary(&self) -> String {
        let what = match (&self.package, &self.version, &self.ecosystem) {
            (Some(p), Some(v), Some(e)) => format!(" ({e} {p} {v})"),
            _ => String::new(),
        };
        match self.verdict {
            Verdict::Started => {
                let n = self.tools.len();
                format!("started here with {n} tool{}{what}", if n == 1 { "" } else { "s" })
            }
            Verdict::NeedsCredentials => match self.detail.as_deref().and_then(|d| d.split_once("it said: "))
            {
                Some((_, said)) => {
                    format!("installed{what}; without its credentials it says: {}", one_line(last_line(said)))
                }
                None => format!("installed{what}; starts once its credentials are set"),
            },
            Verdict::Failed => format!("does not start here: {}", self.brief()),
            Verdict::Unchecked => format!("not checked yet: {}", self.detail.as_deref().unwrap_or("")),
        }
    }
}

/// The line of what a server said that tells why: a traceback's error, not its frames (lines
/// are joined by " | " when stored).
fn last_line(said: &str) -> &str {
    said.split(" | ").map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('^')).last().unwrap_or(said)
}

/// A reason as a reply shows it: trimmed, without its full stop, at most [`BRIEF_CHARS`].
fn one_line(reason: &str) -> String {
    super::text::clip(reason.trim().trim_end_matches('.'), BRIEF_CHARS)
}

/// Whether a server declares credentials it cannot start without.
pub fn needs_credentials(record: &ServerRecord) -> bool {
    record.credentials.iter().any(|c| c.required)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(version: Option<&str>, days_ago: i64) -> Verification {
        Verification {
            server: "s".into(),
            verdict: Verdict::Started,
            launch: "npm s".into(),
            ecosystem: Some("npm".into()),
            package: Some("s".into()),
            version: version.map(str::to_owned),
            tools: vec!["a".into(), "b".into()],
            detail: None,
            ms: 10,
            checked_at: Utc::now() - chrono::Duration::days(days_ago),
        }
    }

    #[test]
    fn a_verification_holds_for_its_launch_and_version_only() {
        let now = Utc::now();
        let v = started(Some("1.2.0"), 30);
        assert!(v.still_holds("npm s", Some("1.2.0"), now));
        assert!(!v.still_holds("npm s", Some("1.3.0"), now), "a newer release is verified again");
        assert!(!v.still_holds("npm t", Some("1.2.0"), now));
        assert!(!v.still_holds("npm s", None, now), "without a known version it expires");
        assert!(started(Some("1.2.0"), 1).still_holds("npm s", None, now));
        let mut unchecked = started(None, 0);
        unchecked.verdict = Verdict::Unchecked;
        assert!(!unchecked.still_holds("npm s", None, now), "an unchecked server is checked again");
        assert_eq!(v.summary(), "started here with 2 tools (npm s 1.2.0)");
    }

    #[test]
    fn a_failure_is_told_in_one_short_line() {
        let failed = |detail: &str| Verification {
            verdict: Verdict::Failed,
            detail: Some(detail.to_owned()),
            ..started(None, 0)
        };
        let npm = "server \"x\" could not be installed: installing npm x failed: npm error 404 | npm error 404  The requested resource";
        assert_eq!(failed(npm).brief(), "its package is not published (the registry answers 404)");
        let python = "server \"x\" could not be installed: installing pypi x==0.1.3 failed: error: No solution | cause: Because the current Python version (3.11.2) does not satisfy Python>=3.12 and x";
        assert_eq!(failed(python).brief(), "it needs Python 3.12 or newer");
        let trace = "server \"x\" failed to start: it stopped before answering; it said:   File \"/opt/x.py\", line 9, in <module> |     from x import y | ImportError: cannot import name 'y' | ";
        assert_eq!(failed(trace).brief(), "ImportError: cannot import name 'y'");
        assert_eq!(failed(trace).summary(), "does not start here: ImportError: cannot import name 'y'");
        // A server that asks for its key says so in its last line, not with its stack.
        let asks = Verification {
            verdict: Verdict::NeedsCredentials,
            detail: Some(
                "it stopped; it said: at main (/opt/x.js:9) | Error: DEEPL_API_KEY is required.".into(),
            ),
            ..started(Some("1.2.0"), 0)
        };
        assert_eq!(
            asks.summary(),
            "installed (npm s 1.2.0); without its credentials it says: Error: DEEPL_API_KEY is required"
        );
    }
}
