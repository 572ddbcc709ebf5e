//! An agent's `mcpServers` config, built only from catalog launch specs. Credential values are
//! never in it: each env value or header *references* the vault entry that holds it, and is
//! resolved only when the server is launched (or, on explicit request, for an export).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::catalog::requirements::{self, Fill, Provide};
use crate::catalog::{CredentialKind, LaunchKind, ServerRecord};
use crate::runtime::launch::env_name_allowed;

/// The reference to an env credential: `${vault:<server id>/<KEY>}`.
pub fn vault_ref(server: &str, key: &str) -> String {
    format!("${{vault:{server}/{key}}}")
}

/// The reference to a file credential; at launch it becomes the path of the decrypted file.
pub fn vault_file_ref(server: &str, key: &str) -> String {
    format!("${{vault-file:{server}/{key}}}")
}

/// Parses a reference back into `(file?, server, key)`.
pub fn parse_ref(value: &str) -> Option<(bool, &str, &str)> {
    let (file, rest) = if let Some(r) = value.strip_prefix("${vault-file:") {
        (true, r)
    } else {
        (false, value.strip_prefix("${vault:")?)
    };
    let inner = rest.strip_suffix('}')?;
    let (server, key) = inner.split_once('/')?;
    Some((file, server, key))
}

/// `{"mcpServers": {...}}` for `servers`: each server's first runnable launch option, with env
/// (or headers) for its required credentials and for the optional ones in `provided`
/// (`(server id, key)`). Servers without a runnable launch option are returned apart.
pub fn mcp_config(servers: &[&ServerRecord], provided: &BTreeSet<(String, String)>) -> (Value, Vec<String>) {
    let mut entries = Map::new();
    let mut skipped = Vec::new();
    for record in servers {
        let Some(launch) = record.best_launch() else {
            skipped.push(record.id.clone());
            continue;
        };
        let mut env = Map::new();
        let mut headers = Map::new();
        for c in record.credentials.iter().filter(|c| env_name_allowed(&c.name)) {
            let requirement = requirements::classify(c);
            let asked = super::instructions::is_asked(c, record);
            let value = if provided.contains(&(record.id.clone(), c.name.clone())) || asked {
                // The user's value, by reference.
                if c.kind == CredentialKind::File {
                    vault_file_ref(&record.id, &c.name)
                } else {
                    vault_ref(&record.id, &c.name)
                }
            } else if let Provide::Filled(Fill::Value(default)) = requirement.provide {
                // A documented default, written out so an exported config behaves the same.
                default
            } else {
                continue;
            };
            match c.kind {
                crate::catalog::CredentialKind::Header => {
                    headers.insert(c.name.clone(), Value::String(value))
                }
                _ => env.insert(c.name.clone(), Value::String(value)),
            };
        }
        let entry = if launch.kind == LaunchKind::Remote {
            // Remote servers take credentials as headers; env-style ones go there by name too.
            headers.extend(env);
            json!({ "url": launch.url, "headers": headers })
        } else {
            json!({ "command": launch.command, "args": launch.args, "env": env })
        };
        entries.insert(record.id.clone(), entry);
    }
    (json!({ "mcpServers": entries }), skipped)
}

/// The client formats an agent's config exports to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ExportFormat {
    /// Claude Desktop's `claude_desktop_config.json` (stdio servers; remote ones through `mcp-remote`).
    Claude,
    /// Cursor's `.cursor/mcp.json` (stdio and `url` servers).
    Cursor,
    /// fast-agent's `fastagent.config.yaml`.
    FastAgent,
}

/// Renders a stored `mcp_config` for a client. `resolve` maps each vault reference to the text
/// to put in its place (the value itself only when the caller asked for secrets).
pub fn export(config: &Value, format: ExportFormat, resolve: &dyn Fn(&str) -> String) -> Value {
    let servers = config.get("mcpServers").and_then(Value::as_object).cloned().unwrap_or_default();
    let fill = |map: Option<&Value>| -> Map<String, Value> {
        map.and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::String(resolve(v.as_str().unwrap_or_default()))))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Map::new();
    for (name, entry) in servers {
        let env = fill(entry.get("env"));
        let headers = fill(entry.get("headers"));
        let rendered = match (entry.get("url"), format) {
            (Some(url), ExportFormat::Claude) => {
                let mut args = vec![json!("-y"), json!("mcp-remote"), url.clone()];
                for (k, v) in &headers {
                    args.push(json!("--header"));
                    args.push(json!(format!("{k}:{}", v.as_str().unwrap_or_default())));
                }
                json!({ "command": "npx", "args": args })
            }
            (Some(url), _) => json!({ "url": url, "headers": headers }),
            (None, _) => json!({ "command": entry.get("command"), "args": entry.get("args"), "env": env }),
        };
        out.insert(name, rendered);
    }
    json!({ "mcpServers": out })
}

/// fast-agent's YAML for an exported (already resolved) `{"mcpServers": ...}`.
pub fn fast_agent_yaml(exported: &Value) -> String {
    let mut yaml = String::from("# fastagent.config.yaml, exported by dynamcp\nmcp:\n  servers:\n");
    let quote = |v: &Value| {
        serde_json::to_string(&v.as_str().map_or_else(|| v.to_string(), str::to_owned)).unwrap_or_default()
    };
    if let Some(servers) = exported.get("mcpServers").and_then(Value::as_object) {
        for (name, entry) in servers {
            yaml.push_str(&format!("    {}:\n", serde_json::to_string(name).unwrap_or_default()));
            if let Some(url) = entry.get("url") {
                yaml.push_str(&format!("      transport: http\n      url: {}\n", quote(url)));
                push_map(&mut yaml, "headers", entry.get("headers"), &quote);
            } else {
                yaml.push_str(&format!(
                    "      command: {}\n",
                    quote(entry.get("command").unwrap_or(&Value::Null))
                ));
                let args: Vec<String> = entry
                    .get("args")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(&quote).collect())
                    .unwrap_or_default();
                yaml.push_str(&format!("      args: [{}]\n", args.join(", ")));
                push_map(&mut yaml, "env", entry.get("env"), &quote);
            }
        }
    }
    yaml
}

fn push_map(yaml: &mut String, name: &str, map: Option<&Value>, quote: &dyn Fn(&Value) -> String) {
    let Some(map) = map.and_then(Value::as_object).filter(|m| !m.is_empty()) else { return };
    yaml.push_str(&format!("      {name}:\n"));
    for (k, v) in map {
        yaml.push_str(&format!("        {}: {}\n", serde_json::to_string(k).unwrap_or_default(), quote(v)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: Value) -> ServerRecord {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn config_comes_from_launch_specs_and_references_the_vault() {
        let gmail = record(json!({
            "id": "gmail-x", "name": "Gmail",
            "launch": [{"kind": "npm", "transport": "stdio", "command": "npx", "args": ["-y", "@x/gmail"], "package": "@x/gmail"}],
            "credentials": [
                {"name": "TOKEN", "required": true, "secret": true, "kind": "env"},
                {"name": "OPTIONAL", "required": false, "secret": true, "kind": "env"},
                {"name": "SA_FILE", "required": true, "secret": true, "kind": "file"},
                {"name": "MCP_TRANSPORT", "required": true, "secret": false, "kind": "env"},
                {"name": "CACHE_MAX_AGE", "description": "1", "required": true, "secret": false},
                {"name": "LOG_PATH", "description": "[set an accessible absolute path]", "required": true}
            ]
        }));
        let remote = record(json!({
            "id": "remote-y", "name": "Remote",
            "launch": [{"kind": "remote", "transport": "streamable-http", "url": "https://mcp.example.com/mcp"}],
            "credentials": [{"name": "Authorization", "required": true, "secret": true, "kind": "header"}]
        }));
        let source_only = record(
            json!({"id": "src-z", "name": "Src", "launch": [{"kind": "source", "transport": "stdio"}]}),
        );
        let (config, skipped) = mcp_config(&[&gmail, &remote, &source_only], &BTreeSet::new());
        assert_eq!(skipped, ["src-z"]);
        assert_eq!(
            config,
            json!({"mcpServers": {
                "gmail-x": {"command": "npx", "args": ["-y", "@x/gmail"], "env": {
                    "TOKEN": "${vault:gmail-x/TOKEN}", "SA_FILE": "${vault-file:gmail-x/SA_FILE}",
                    "CACHE_MAX_AGE": "1"}},
                "remote-y": {"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "${vault:remote-y/Authorization}"}}
            }})
        );
        assert_eq!(parse_ref("${vault-file:gmail-x/SA_FILE}"), Some((true, "gmail-x", "SA_FILE")));
        assert_eq!(parse_ref("plain"), None);

        let claude = export(&config, ExportFormat::Claude, &|r| format!("<{r}>"));
        assert_eq!(claude["mcpServers"]["remote-y"]["command"], "npx");
        assert_eq!(claude["mcpServers"]["remote-y"]["args"][2], "https://mcp.example.com/mcp");
        let cursor = export(&config, ExportFormat::Cursor, &|_| "[set me]".into());
        assert_eq!(cursor["mcpServers"]["gmail-x"]["env"]["TOKEN"], "[set me]");
        let yaml = fast_agent_yaml(&cursor);
        assert!(
            yaml.contains(
                "    \"gmail-x\":\n      command: \"npx\"\n      args: [\"-y\", \"@x/gmail\"]\n      env:\n"
            ),
            "{yaml}"
        );
        assert!(yaml.contains("transport: http\n      url: \"https://mcp.example.com/mcp\""), "{yaml}");
    }
}
