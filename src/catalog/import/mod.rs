//! Import: reads a catalog file in any of the supported formats, detects which one it is, and
//! converts every valid entry into a [`ServerRecord`] (or credential instructions). Invalid
//! entries are reported with their index and reason; the valid rest is kept.
//!
//! Formats:
//! - the design's `servers.json`: `{"servers": [{"name", "description", "tools": [...]}]}`;
//! - the design's `credinfo.json`: `{"credential_instructions": {"<slug>": {"KEY": ...}}}`;
//! - dynamcp's merged catalog (`mcp_catalog.json.gz`, gzip or plain);
//! - the official MCP registry's `server.json`, one object, a list, or a `{"servers": [...]}` page;
//! - an MCP client's server list: Claude Desktop's and Cursor's `{"mcpServers": {...}}`, VS
//!   Code's `{"servers": {...}}` (the operator's own launch specs; values of `env` not kept).
//!
//! Parsing is pure: nothing here touches the store.

mod client;
mod credinfo;
mod design;
mod merged;
mod registry;

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::record::ServerRecord;
pub use credinfo::{CredentialInstruction, credential_instructions_slug};
pub(crate) use merged::credential_kind;

/// Which format a file was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    DesignServers,
    DesignCredinfo,
    MergedCatalog,
    Registry,
    ClientConfig,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::DesignServers => "servers.json (design)",
            Format::DesignCredinfo => "credinfo.json (design)",
            Format::MergedCatalog => "dynamcp merged catalog",
            Format::Registry => "MCP registry server.json",
            Format::ClientConfig => "MCP client config (mcpServers)",
        })
    }
}

/// An entry that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryIssue {
    /// Position in the file's list (or the key, for keyed formats).
    pub index: String,
    pub reason: String,
}

/// Everything valid in one file, and what was not.
#[derive(Debug, Default)]
pub struct Parsed {
    pub servers: Vec<ServerRecord>,
    pub instructions: Vec<CredentialInstruction>,
    pub issues: Vec<EntryIssue>,
}

impl Parsed {
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.instructions.is_empty()
    }

    /// Converts every entry with `convert`, keeping the valid records and reporting the rest by
    /// position; an id seen twice keeps its first entry.
    fn from_entries<'a>(
        entries: impl IntoIterator<Item = &'a Value>,
        convert: impl Fn(&Value) -> Result<ServerRecord, String>,
    ) -> Self {
        let mut parsed = Parsed::default();
        let mut seen = HashSet::new();
        for (index, entry) in entries.into_iter().enumerate() {
            let result =
                if entry.is_object() { convert(entry) } else { Err("entry must be an object".to_owned()) };
            parsed.push_server(index, result, &mut seen);
        }
        parsed
    }

    fn push_server(
        &mut self,
        index: impl ToString,
        result: Result<ServerRecord, String>,
        seen: &mut HashSet<String>,
    ) {
        let result = result.and_then(|record| {
            match record.launch.iter().find_map(|l| l.url.as_deref().and_then(metadata_url)) {
                Some(why) => Err(why),
                None => Ok(record),
            }
        });
        match result {
            Ok(record) if !seen.insert(record.id.clone()) => self.issues.push(EntryIssue {
                index: index.to_string(),
                reason: format!("duplicate id `{}` (the first entry with it was kept)", record.id),
            }),
            Ok(record) => self.servers.push(record),
            Err(reason) => self.issues.push(EntryIssue { index: index.to_string(), reason }),
        }
    }
}

/// Why a remote URL is never importable: it points at a link-local address or a cloud metadata
/// name, where no MCP server lives and instance credentials do. (Loopback and private addresses
/// may be an operator's own servers: the runtime refuses them at connect unless allowed.)
fn metadata_url(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let metadata = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_link_local(),
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.segments()[0] & 0xffc0 == 0xfe80
                || ip.segments()[..3] == [0xfd00, 0x0ec2, 0]
                || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local())
        }
        Err(_) => host == "metadata.google.internal" || host == "metadata",
    };
    metadata.then(|| format!("its remote URL {url} points at a cloud metadata or link-local address"))
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("could not read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {reason}")]
    Json { path: String, reason: String },
    #[error("{path}: unrecognised format: {reason}")]
    UnknownFormat { path: String, reason: String },
}

/// Reads and parses one file (gzip is detected by its magic bytes).
pub fn read_file(path: &Path) -> Result<(Format, Parsed), ImportError> {
    let shown = path.display().to_string();
    let raw = std::fs::read(path).map_err(|source| ImportError::Read { path: shown.clone(), source })?;
    read_bytes(&shown, &raw)
}

/// Parses a document's bytes, plain or gzip; `shown` names it in errors.
pub fn read_bytes(shown: &str, raw: &[u8]) -> Result<(Format, Parsed), ImportError> {
    let shown = shown.to_owned();
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 6);
        flate2::read::GzDecoder::new(raw)
            .read_to_end(&mut out)
            .map_err(|source| ImportError::Read { path: shown.clone(), source })?;
        out
    } else {
        raw.to_vec()
    };
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ImportError::Json { path: shown.clone(), reason: e.to_string() })?;
    parse(&value).map_err(|reason| ImportError::UnknownFormat { path: shown, reason })
}

/// Detects the format of a parsed JSON document and converts it.
pub fn parse(value: &Value) -> Result<(Format, Parsed), String> {
    let format = detect(value)?;
    let parsed = match format {
        Format::DesignServers => design::parse(value),
        Format::DesignCredinfo => credinfo::parse(value),
        Format::MergedCatalog => merged::parse(value),
        Format::Registry => registry::parse(value),
        Format::ClientConfig => client::parse(value),
    };
    Ok((format, parsed))
}

fn detect(value: &Value) -> Result<Format, String> {
    let looks_registry = |item: &Value| {
        item.get("server").is_some_and(Value::is_object)
            || item.get("packages").is_some()
            || item.get("remotes").is_some()
            || item.get("$schema").and_then(Value::as_str).is_some_and(|s| s.contains("server.schema"))
    };
    match value {
        Value::Object(map) if map.contains_key("credential_instructions") => Ok(Format::DesignCredinfo),
        Value::Object(map) if map.contains_key("schema_version") && map.contains_key("servers") => {
            Ok(Format::MergedCatalog)
        }
        Value::Object(map) if map.get("mcpServers").is_some_and(Value::is_object) => Ok(Format::ClientConfig),
        Value::Object(map) => match map.get("servers") {
            Some(Value::Array(items)) if items.iter().any(looks_registry) => Ok(Format::Registry),
            Some(Value::Array(_)) => Ok(Format::DesignServers),
            // VS Code's `.vscode/mcp.json`: servers by name.
            Some(Value::Object(_)) => Ok(Format::ClientConfig),
            Some(_) => Err("`servers` must be a list, or an object of servers by name".to_owned()),
            None if looks_registry(value) => Ok(Format::Registry),
            None => {
                Err("expected `servers`, `mcpServers`, `credential_instructions`, or a registry server.json"
                    .to_owned())
            }
        },
        Value::Array(items) if items.iter().any(looks_registry) => Ok(Format::Registry),
        Value::Array(_) => Err("a top-level list must hold MCP registry server.json objects".to_owned()),
        _ => Err("the document must be a JSON object or list".to_owned()),
    }
}

// Small helpers shared by the format parsers.

/// The `name` of an entry and the id it gives (its slug), for formats without ids of their own.
fn name_and_slug(entry: &Value) -> Result<(String, String), String> {
    let name = required_str(entry, "name")?;
    let id = super::record::slug(&name);
    if id.is_empty() {
        return Err(format!("name `{name}` gives an empty id"));
    }
    Ok((name, id))
}

fn str_field<'a>(entry: &'a Value, key: &str) -> Option<&'a str> {
    entry.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

fn required_str(entry: &Value, key: &str) -> Result<String, String> {
    match entry.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Some(Value::String(_)) => Err(format!("`{key}` is empty")),
        Some(_) => Err(format!("`{key}` must be a string")),
        None => Err(format!("missing `{key}`")),
    }
}

fn optional_string(entry: &Value, key: &str) -> Result<String, String> {
    match entry.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.trim().to_owned()),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

fn string_list(entry: &Value, key: &str) -> Result<Vec<String>, String> {
    match entry.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| format!("`{key}` must hold strings")))
            .collect(),
        Some(_) => Err(format!("`{key}` must be a list of strings")),
    }
}

/// Parses a tool given as a bare name or `{name, description, inputSchema|input_schema}`.
fn tool(value: &Value, index: usize) -> Result<super::record::Tool, String> {
    match value {
        Value::String(name) if !name.trim().is_empty() => Ok(super::record::Tool {
            name: name.trim().to_owned(),
            description: String::new(),
            input_schema: None,
        }),
        Value::Object(_) => {
            let name = required_str(value, "name").map_err(|e| format!("tool {index}: {e}"))?;
            let description =
                optional_string(value, "description").map_err(|e| format!("tool {index}: {e}"))?;
            let input_schema = value
                .get("inputSchema")
                .or_else(|| value.get("input_schema"))
                .filter(|v| !v.is_null())
                .cloned();
            if let Some(schema) = &input_schema
                && !schema.is_object()
            {
                return Err(format!("tool {index}: the input schema must be an object"));
            }
            Ok(super::record::Tool { name, description, input_schema })
        }
        _ => Err(format!("tool {index} must be a name or an object with `name`")),
    }
}

fn tools(entry: &Value) -> Result<Vec<super::record::Tool>, String> {
    list_of(entry, "tools", |i, t| tool(t, i))
}

/// Parses the list under `key` (absent or null: empty) with `parse(position, item)`; the first
/// item that fails fails the whole list.
fn list_of<T>(
    entry: &Value,
    key: &str,
    parse: impl Fn(usize, &Value) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    match entry.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().enumerate().map(|(i, item)| parse(i, item)).collect(),
        Some(_) => Err(format!("`{key}` must be a list")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn formats_are_told_apart() {
        let cases = [
            (json!({"servers": [{"name": "Gmail", "tools": []}]}), Format::DesignServers),
            (json!({"credential_instructions": {}}), Format::DesignCredinfo),
            (json!({"schema_version": 1, "servers": []}), Format::MergedCatalog),
            (json!({"name": "io.github.x/y", "packages": []}), Format::Registry),
            (json!([{"name": "io.github.x/y", "remotes": []}]), Format::Registry),
            (json!({"servers": [{"server": {"name": "a"}}]}), Format::Registry),
            (json!({"mcpServers": {"a": {"command": "npx"}}}), Format::ClientConfig),
            (json!({"servers": {"a": {"command": "npx"}}}), Format::ClientConfig),
        ];
        for (doc, format) in cases {
            assert_eq!(detect(&doc), Ok(format), "{doc}");
        }
        assert!(detect(&json!({"hello": 1})).is_err());
        assert!(detect(&json!([1, 2])).is_err());
        assert!(detect(&json!("x")).is_err());
    }
}
