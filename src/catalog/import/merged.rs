//! dynamcp's merged catalog (`shared/catalog/README.md` has the schema): records with their own
//! stable `id`, launch options, tools with schemas and credential requirements.

use serde_json::Value;

use super::{Parsed, list_of, optional_string, required_str, str_field, string_list, tools};
use crate::catalog::record::{
    CredentialKind, CredentialSpec, LaunchKind, LaunchOption, RegistryFacts, ServerRecord, Transport,
};

pub(super) fn parse(doc: &Value) -> Parsed {
    match doc.get("schema_version").and_then(Value::as_u64) {
        Some(1) => {}
        other => {
            let mut parsed = Parsed::default();
            parsed.issues.push(super::EntryIssue {
                index: "schema_version".into(),
                reason: format!("unsupported schema_version {other:?} (expected 1)"),
            });
            return parsed;
        }
    }
    Parsed::from_entries(doc["servers"].as_array().into_iter().flatten(), server)
}

fn server(entry: &Value) -> Result<ServerRecord, String> {
    let id = required_str(entry, "id")?;
    let launch = list_of(entry, "launch", |i, l| launch_option(l).map_err(|e| format!("launch {i}: {e}")))?;
    let credentials =
        list_of(entry, "credentials", |i, c| credential(c).map_err(|e| format!("credential {i}: {e}")))?;
    Ok(ServerRecord {
        id: id.clone(),
        // A few upstream rows have an empty name; the id is then the best name there is.
        name: str_field(entry, "name").map_or_else(|| id.clone(), str::to_owned),
        description: optional_string(entry, "description")?,
        categories: string_list(entry, "categories")?,
        repository: str_field(entry, "repository").map(str::to_owned),
        homepage: str_field(entry, "homepage").map(str::to_owned),
        license: str_field(entry, "license").map(str::to_owned),
        tools: tools(entry)?,
        launch,
        credentials,
        popularity: entry.pointer("/popularity/smithery_use_count").and_then(Value::as_u64).unwrap_or(0),
        origin: "merged_catalog".to_owned(),
    })
}

fn launch_option(value: &Value) -> Result<LaunchOption, String> {
    let kind = match str_field(value, "kind") {
        Some("npm") => LaunchKind::Npm,
        Some("pypi") => LaunchKind::Pypi,
        Some("docker") => LaunchKind::Docker,
        Some("remote") => LaunchKind::Remote,
        Some("command") => LaunchKind::Command,
        Some("source") => LaunchKind::Source,
        Some(other) => return Err(format!("unknown kind `{other}`")),
        None => return Err("missing `kind`".to_owned()),
    };
    let transport = match str_field(value, "transport") {
        None | Some("stdio") => Transport::Stdio,
        Some("sse") => Transport::Sse,
        // A server that speaks both is reached over the newer transport.
        Some("streamable-http" | "http" | "streamable_http" | "sse/streamable-http") => {
            Transport::StreamableHttp
        }
        Some(other) => return Err(format!("unknown transport `{other}`")),
    };
    Ok(LaunchOption {
        kind,
        transport,
        command: str_field(value, "command").map(str::to_owned),
        args: string_list(value, "args")?,
        package: str_field(value, "package").map(str::to_owned),
        url: str_field(value, "url").map(str::to_owned),
        verified: value.get("verified").and_then(Value::as_bool).unwrap_or(false),
        registry: value.get("registry").map(registry_facts),
    })
}

/// A launch option's `registry` object; unknown fields are ignored, a malformed one reads as
/// "not listed" (never as more certain than the data says).
fn registry_facts(value: &Value) -> RegistryFacts {
    RegistryFacts {
        listed: value.get("listed").and_then(Value::as_bool).unwrap_or(false),
        mcp_package: value.get("mcp_package").and_then(Value::as_bool),
        latest_version: str_field(value, "latest_version").map(str::to_owned),
        downloads_month: value.get("downloads_month").and_then(Value::as_u64),
        download_rank: value.get("download_rank").and_then(Value::as_u64),
    }
}

fn credential(value: &Value) -> Result<CredentialSpec, String> {
    let name = required_str(value, "name")?;
    let description = optional_string(value, "description")?;
    // A record that says how the value travels is taken at its word; otherwise it is inferred.
    let kind = match str_field(value, "kind") {
        Some("env") => CredentialKind::Env,
        Some("file") => CredentialKind::File,
        Some("header") => CredentialKind::Header,
        Some(other) => return Err(format!("credential {name}: unknown kind `{other}`")),
        None => credential_kind(&name, &description),
    };
    // Steps that produce the value, where the record has them (researched from the server's own
    // documentation: `catalog/server-facts.json`).
    let instructions = string_list(value, "instructions").map_err(|e| format!("credential {name}: {e}"))?;
    Ok(CredentialSpec {
        kind,
        name,
        description,
        required: value.get("required").and_then(Value::as_bool).unwrap_or(false),
        secret: value.get("secret").and_then(Value::as_bool).unwrap_or(false),
        instructions,
    })
}

/// A credential that names a file (a service-account JSON, a key file) is collected as a file.
pub(crate) fn credential_kind(name: &str, description: &str) -> CredentialKind {
    let n = name.to_ascii_uppercase();
    let d = description.to_ascii_lowercase();
    let path_like = n.ends_with("_PATH") || n.ends_with("_FILE") || n.ends_with("_CREDENTIALS_FILE");
    let names_file = d.contains("path to") || d.contains("file path") || d.contains(".json file");
    let credentials_file = n.contains("CREDENTIALS") && (d.contains("json") || d.contains("file"));
    if (path_like || names_file || credentials_file) && !d.contains("directory") && !n.ends_with("_DIR") {
        CredentialKind::File
    } else {
        CredentialKind::Env
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::catalog::record::Launchability;

    #[test]
    fn registry_facts_rank_launch_options() {
        let doc = json!({"schema_version": 1, "servers": [
            {"id": "gmail", "name": "Gmail", "launch": [
                {"kind": "npm", "package": "gmail-guess", "command": "npx", "args": ["-y", "gmail-guess"],
                 "registry": {"listed": false}},
                {"kind": "npm", "package": "slack", "command": "npx", "args": ["-y", "slack"],
                 "registry": {"listed": true, "mcp_package": false, "downloads_month": 90000}},
                {"kind": "npm", "package": "@a/gmail-mcp", "command": "npx", "args": ["-y", "@a/gmail-mcp"],
                 "registry": {"listed": true, "mcp_package": true, "latest_version": "1.2.0", "downloads_month": 5000}}
            ]},
            {"id": "time", "name": "Time", "launch": [
                {"kind": "pypi", "package": "nope", "command": "uvx", "args": ["nope"], "registry": {"listed": false}},
                {"kind": "pypi", "package": "mcp-server-time", "command": "uvx", "args": ["mcp-server-time"],
                 "registry": {"listed": true, "mcp_package": true, "download_rank": 7873}}
            ]},
            {"id": "wrong", "name": "Wrong", "launch": [
                {"kind": "npm", "package": "fetch", "command": "npx", "args": ["fetch"],
                 "registry": {"listed": true, "mcp_package": false}}
            ]}
        ]});
        let parsed = parse(&doc);
        let [gmail, time, wrong] = &parsed.servers[..] else { panic!("three records") };
        // A guessed name stays startable but unconfirmed; another library's name is not the server.
        assert_eq!(gmail.launch[0].launchability(), Launchability::Unconfirmed);
        assert_eq!(gmail.launch[1].launchability(), Launchability::No);
        assert_eq!(gmail.best_launch().and_then(|l| l.package.as_deref()), Some("@a/gmail-mcp"));
        assert_eq!(gmail.monthly_use(), 5000, "another library's downloads are not the server's");
        assert_eq!(
            gmail.launch[2].registry.as_ref().and_then(|r| r.latest_version.as_deref()),
            Some("1.2.0")
        );
        // PyPI lists every project: an unlisted one does not exist.
        assert_eq!(time.launch[0].launchability(), Launchability::No);
        assert_eq!(time.best_launch().and_then(|l| l.package.as_deref()), Some("mcp-server-time"));
        assert!(time.monthly_use() > 10_000 && time.monthly_use() < 1_000_000, "{}", time.monthly_use());
        assert!(!wrong.runnable());
        assert_eq!(wrong.launchability(), Launchability::No);
    }

    #[test]
    fn records_keep_launch_options_tools_and_credentials() {
        let doc = json!({"schema_version": 1, "servers": [
            {"id": "gmail-mcp", "name": "Gmail MCP", "description": "Mail", "tier": "runnable",
             "repository": "https://github.com/a/b", "categories": ["email"],
             "tools": [{"name": "send_email", "description": "Send", "input_schema": {"type": "object"}}],
             "launch": [{"kind": "npm", "transport": "stdio", "package": "gmail-mcp", "command": "npx", "args": ["-y", "gmail-mcp"], "verified": true, "source": "toolsdk"}],
             "credentials": [
                {"name": "GMAIL_TOKEN", "description": "token", "required": true, "secret": true},
                {"name": "GOOGLE_APPLICATION_CREDENTIALS", "description": "Path to the service account .json file", "required": true, "secret": false,
                 "instructions": ["Create a service account", "Download its key"]}
             ],
             "popularity": {"smithery_use_count": 42}},
            {"id": "bad", "name": "Bad", "launch": [{"kind": "teleport"}]},
            {"name": "No id"}
        ]});
        let parsed = parse(&doc);
        assert_eq!(parsed.servers.len(), 1);
        let s = &parsed.servers[0];
        assert!(s.runnable() && s.verified());
        assert_eq!(s.popularity, 42);
        assert_eq!(s.launch[0].args, vec!["-y", "gmail-mcp"]);
        assert_eq!(s.tools[0].input_schema, Some(json!({"type": "object"})));
        let kinds: Vec<(&str, CredentialKind)> =
            s.credentials.iter().map(|c| (c.name.as_str(), c.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                ("GMAIL_TOKEN", CredentialKind::Env),
                ("GOOGLE_APPLICATION_CREDENTIALS", CredentialKind::File)
            ]
        );
        assert!(s.credentials[0].instructions.is_empty());
        assert_eq!(s.credentials[1].instructions, ["Create a service account", "Download its key"]);
        let issues: Vec<(&str, &str)> =
            parsed.issues.iter().map(|i| (i.index.as_str(), i.reason.as_str())).collect();
        assert_eq!(issues, vec![("1", "launch 0: unknown kind `teleport`"), ("2", "missing `id`")]);
    }

    #[test]
    fn an_unknown_schema_version_imports_nothing() {
        let parsed = parse(&json!({"schema_version": 2, "servers": [{"id": "a", "name": "A"}]}));
        assert!(parsed.is_empty());
        assert_eq!(parsed.issues.len(), 1);
    }
}
