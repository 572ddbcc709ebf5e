//! The catalog's record of one MCP server: what it does (tools), how to launch it, and which
//! credentials it needs. Every import format is converted into this one shape.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// One MCP server in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServerRecord {
    /// Stable id: the catalog's own id, or the slug of the name for formats that have none.
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    #[serde(default)]
    pub tools: Vec<Tool>,
    /// Ways to launch it, best first. Only these are ever executed.
    #[serde(default)]
    pub launch: Vec<LaunchOption>,
    #[serde(default)]
    pub credentials: Vec<CredentialSpec>,
    /// Usage count where a registry reports one (Smithery), else 0.
    #[serde(default)]
    pub popularity: u64,
    /// The import format the record came from.
    #[serde(default)]
    pub origin: String,
}

/// A tool the server exposes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Tool {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments, where the source had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub input_schema: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LaunchKind {
    Npm,
    Pypi,
    Docker,
    Remote,
    Command,
    /// Only a source repository: not runnable as is.
    Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    Stdio,
    Sse,
    StreamableHttp,
}

/// One way to launch a server: a package run by its runtime, a container, or a remote URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LaunchOption {
    pub kind: LaunchKind,
    pub transport: Transport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// True only when a source vouches that this launch works.
    #[serde(default)]
    pub verified: bool,
    /// What the package's registry said of it when the catalog was made (npm and PyPI options).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryFacts>,
}

/// Registry facts about a launch option's package, taken when the catalog was built (not live).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegistryFacts {
    /// The registry lists the package with real use. `false`: no such package, or (npm) fewer
    /// than ~480 downloads a month.
    pub listed: bool,
    /// `Some(false)`: the name belongs to another library (its summary never mentions MCP), so
    /// the option would run the wrong program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_package: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_version: Option<String>,
    /// npm downloads a month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downloads_month: Option<u64>,
    /// PyPI: rank among the most downloaded projects (1 = most).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_rank: Option<u64>,
}

/// How sure the catalog is that a launch option starts the right program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Launchability {
    /// No launch spec, or the registry shows it cannot be the server: the package does not exist
    /// or is another library.
    No,
    /// A package the registry facts do not list: most such names were guessed from a server's
    /// name and never published.
    Unconfirmed,
    /// A launch spec the catalog has no registry facts about (e.g. an operator's own import).
    Unknown,
    /// A container image or a remote URL from a registry that lists it.
    Listed,
    /// A published MCP package with real use.
    Published,
}

impl LaunchOption {
    pub fn is_runnable(&self) -> bool {
        self.launchability() > Launchability::No
    }

    pub fn launchability(&self) -> Launchability {
        let has_spec = match self.kind {
            LaunchKind::Source => false,
            LaunchKind::Remote => self.url.is_some(),
            _ => self.command.is_some(),
        };
        if !has_spec {
            return Launchability::No;
        }
        match (&self.registry, self.kind) {
            (Some(r), _) if r.mcp_package == Some(false) => Launchability::No,
            (Some(r), _) if r.listed => Launchability::Published,
            // PyPI's list is complete: unlisted means no such project.
            (Some(_), LaunchKind::Pypi) => Launchability::No,
            (Some(_), _) => Launchability::Unconfirmed,
            (None, _) if self.verified => Launchability::Listed,
            (None, _) => Launchability::Unknown,
        }
    }

    /// npm downloads a month, or for PyPI an equivalent read off the download rank.
    pub fn monthly_use(&self) -> u64 {
        let Some(r) = self.registry.as_ref().filter(|r| r.listed && r.mcp_package != Some(false)) else {
            return 0;
        };
        if let Some(d) = r.downloads_month {
            return d;
        }
        // The 15,000th most downloaded PyPI project still has tens of thousands of downloads a
        // month; rank 1 has hundreds of millions. A log-linear read between those is enough to
        // compare with npm counts. A listed project without a rank: a small one.
        match r.download_rank {
            Some(rank) => {
                let rank = rank.clamp(1, 15_000) as f64;
                let log = 8.5 - (rank.log10() / 15_000f64.log10()) * (8.5 - 4.5);
                10f64.powf(log) as u64
            }
            None => 1_000,
        }
    }
}

/// How a credential reaches the server: an environment value, a file whose path goes in the
/// environment, or an HTTP header of a remote server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    #[default]
    Env,
    File,
    Header,
}

/// A credential (environment variable or header) a server needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CredentialSpec {
    /// The environment variable (or header) name.
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub kind: CredentialKind,
    /// Steps to obtain it, where known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instructions: Vec<String>,
}

impl ServerRecord {
    /// Has at least one launch option dynamcp can run.
    pub fn runnable(&self) -> bool {
        self.launch.iter().any(LaunchOption::is_runnable)
    }

    /// Has a runnable launch option that a source vouches for.
    pub fn verified(&self) -> bool {
        self.launch.iter().any(|l| l.is_runnable() && l.verified)
    }

    /// The launch option to run: the most certain one, catalog order among equals.
    pub fn best_launch(&self) -> Option<&LaunchOption> {
        let best = self.launch.iter().map(LaunchOption::launchability).max()?;
        self.launch.iter().find(|l| l.launchability() == best && best > Launchability::No)
    }

    /// Whether the Model Context Protocol project publishes it: one of its reference servers
    /// (repository under its organisation, or an npm package in its scope).
    pub fn is_reference(&self) -> bool {
        const OWNER: &str = "modelcontextprotocol";
        self.repository_key().is_some_and(|k| k.split('/').nth(1) == Some(OWNER))
            || self.launch.iter().any(|l| {
                l.kind == LaunchKind::Npm
                    && l.package
                        .as_deref()
                        .is_some_and(|p| p.strip_prefix('@').and_then(|p| p.split('/').next()) == Some(OWNER))
            })
    }

    /// What the server runs: its best launch option's package, with its kind, or its URL.
    /// Records with the same key are one server listed twice (the catalog merges several
    /// registries, and `tavily-mcp` and `tavily-mcp-4` both launch npm `tavily-mcp`).
    pub fn launch_key(&self) -> Option<String> {
        let l = self.best_launch()?;
        let (kind, what) = match l.kind {
            LaunchKind::Remote => ("remote", l.url.as_deref()?.trim_end_matches('/')),
            LaunchKind::Npm => ("npm", l.package.as_deref()?),
            LaunchKind::Pypi => ("pypi", l.package.as_deref()?),
            LaunchKind::Docker => ("docker", l.package.as_deref()?),
            LaunchKind::Command | LaunchKind::Source => return None,
        };
        Some(format!("{kind}:{}", what.to_lowercase()))
    }

    /// How sure the catalog is that this server can be started at all.
    pub fn launchability(&self) -> Launchability {
        self.launch.iter().map(LaunchOption::launchability).max().unwrap_or(Launchability::No)
    }

    /// Use a month of its most used published package (0 when none is known).
    pub fn monthly_use(&self) -> u64 {
        self.launch.iter().map(LaunchOption::monthly_use).max().unwrap_or(0)
    }

    /// A stable hash of the whole record: unchanged records are skipped on re-import.
    pub fn content_hash(&self) -> String {
        // serde_json writes struct fields in declaration order, so this is canonical.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex(&Sha256::digest(&bytes))
    }

    /// `owner/repo` of a GitHub-like repository URL, lowercased: records that share it are the
    /// same server listed twice.
    pub fn repository_key(&self) -> Option<String> {
        let url = self.repository.as_deref()?.trim().trim_end_matches('/').trim_end_matches(".git");
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let mut parts = rest.split('/');
        let host = parts.next()?;
        let owner = parts.next()?;
        let repo = parts.next()?;
        if host.is_empty() || owner.is_empty() || repo.is_empty() {
            return None;
        }
        let sub: Vec<&str> = parts.filter(|p| !matches!(*p, "tree" | "blob" | "main" | "master")).collect();
        let mut key = format!("{host}/{owner}/{repo}").to_lowercase();
        if !sub.is_empty() {
            key.push('/');
            key.push_str(&sub.join("/").to_lowercase());
        }
        Some(key)
    }
}

/// The design's slug: lowercase, spaces to `-`. Other characters outside `[a-z0-9._-]` also
/// become `-`, so any name gives a usable id.
pub fn slug(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.trim().chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_design() {
        assert_eq!(slug("Google Sheets"), "google-sheets");
        assert_eq!(slug("  Gmail MCP  "), "gmail-mcp");
        assert_eq!(slug("io.github.user/weather"), "io.github.user-weather");
        assert_eq!(slug("A & B"), "a-b");
    }

    #[test]
    fn repository_keys_ignore_scheme_case_and_suffixes() {
        let mut r = record("x");
        r.repository = Some("https://github.com/Owner/Repo.git".into());
        assert_eq!(r.repository_key().as_deref(), Some("github.com/owner/repo"));
        r.repository = Some("https://github.com/owner/repo/tree/main/src/gmail".into());
        assert_eq!(r.repository_key().as_deref(), Some("github.com/owner/repo/src/gmail"));
        r.repository = Some("not a url".into());
        assert_eq!(r.repository_key(), None);
    }

    #[test]
    fn the_hash_changes_with_the_content() {
        let a = record("a");
        let mut b = a.clone();
        assert_eq!(a.content_hash(), b.content_hash());
        b.description.push('!');
        assert_ne!(a.content_hash(), b.content_hash());
    }

    pub(crate) fn record(id: &str) -> ServerRecord {
        ServerRecord {
            id: id.into(),
            name: id.into(),
            description: String::new(),
            categories: vec![],
            repository: None,
            homepage: None,
            license: None,
            tools: vec![],
            launch: vec![],
            credentials: vec![],
            popularity: 0,
            origin: "test".into(),
        }
    }
}
