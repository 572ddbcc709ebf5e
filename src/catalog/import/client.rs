//! An MCP client's own server list, as the operator runs it: Claude Desktop's and Cursor's
//! `{"mcpServers": {"<name>": {...}}}`, VS Code's `{"servers": {"<name>": {...}}}`; and the launch
//! part of a design `servers.json` entry that has one. An entry is `{command, args, env}` (stdio)
//! or `{url, headers}` (remote; `type` says `sse` or `http`). The launch becomes the record's
//! runnable option, vouched for by the operator who imports it; it is validated like every launch
//! when it starts (allowed runtimes only, no shell).
//!
//! Environment variables and headers become credential requirements, **without their values**:
//! a config file holds the operator's own tokens, and the catalog is shared by every tenant. Each
//! user gives their own value, as for any catalog server.

use serde_json::{Map, Value};

use super::merged::credential_kind;
use super::{Parsed, str_field, string_list};
use crate::catalog::record::{
    CredentialKind, CredentialSpec, LaunchKind, LaunchOption, ServerRecord, Transport, slug,
};

pub(super) fn parse(doc: &Value) -> Parsed {
    let servers = doc.get("mcpServers").or_else(|| doc.get("servers")).and_then(Value::as_object);
    let mut parsed = Parsed::default();
    let mut seen = std::collections::HashSet::new();
    for (name, entry) in servers.into_iter().flatten() {
        let result = match entry {
            Value::Object(_) => server(name, entry),
            _ => Err("entry must be an object".to_owned()),
        };
        parsed.push_server(name, result, &mut seen);
    }
    parsed
}

fn server(name: &str, entry: &Value) -> Result<ServerRecord, String> {
    let id = slug(name);
    if id.is_empty() {
        return Err(format!("name `{name}` gives an empty id"));
    }
    let Some((option, credentials)) = launch(entry)? else {
        return Err("neither `command` nor `url`: nothing to launch".to_owned());
    };
    let how = match (&option.command, &option.url) {
        (Some(command), _) => format!("{command} {}", option.args.join(" ")),
        (None, Some(url)) => url.clone(),
        (None, None) => String::new(),
    };
    Ok(ServerRecord {
        id,
        name: name.to_owned(),
        description: str_field(entry, "description")
            .map_or_else(|| format!("The operator's own server `{name}`: {}", how.trim()), str::to_owned),
        categories: Vec::new(),
        repository: None,
        homepage: None,
        license: None,
        tools: Vec::new(),
        launch: vec![option],
        credentials,
        popularity: 0,
        origin: "client_config".to_owned(),
    })
}

/// The launch option an entry describes, with the credentials its `env` or `headers` name;
/// `None` when it has neither `command` nor `url`.
pub(super) fn launch(entry: &Value) -> Result<Option<(LaunchOption, Vec<CredentialSpec>)>, String> {
    let command = match entry.get("command") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) if !c.trim().is_empty() => Some(c.trim()),
        Some(_) => return Err("`command` must be a non-empty string".to_owned()),
    };
    let url = str_field(entry, "url");
    let declared = str_field(entry, "type");
    match (command, url) {
        (Some(_), Some(_)) => Err("both `command` and `url`: give one".to_owned()),
        (None, None) => Ok(None),
        (Some(command), None) => {
            if command.contains(char::is_whitespace) {
                return Err(format!(
                    "`command` is one program, not a command line: put the arguments of `{command}` in `args`"
                ));
            }
            if !matches!(declared, None | Some("stdio")) {
                return Err(format!("`type` {declared:?} with a `command`: a command speaks stdio"));
            }
            let args = string_list(entry, "args")?;
            let (kind, package) = match command {
                "npx" => (LaunchKind::Npm, first_operand(&args, &["-p", "--package"])),
                "uvx" => (LaunchKind::Pypi, first_operand(&args, &["--from"])),
                "docker" => (LaunchKind::Docker, None),
                _ => (LaunchKind::Command, None),
            };
            let option = LaunchOption {
                kind,
                transport: Transport::Stdio,
                command: Some(command.to_owned()),
                args,
                package,
                url: None,
                verified: true,
                registry: None,
            };
            Ok(Some((option, named(entry, "env", CredentialKind::Env)?)))
        }
        (None, Some(url)) => {
            let transport = match declared {
                Some("sse") => Transport::Sse,
                None | Some("http" | "streamable-http" | "streamableHttp") => Transport::StreamableHttp,
                Some(other) => return Err(format!("unknown `type` `{other}` for a URL")),
            };
            let option = LaunchOption {
                kind: LaunchKind::Remote,
                transport,
                command: None,
                args: Vec::new(),
                package: None,
                url: Some(url.to_owned()),
                verified: true,
                registry: None,
            };
            Ok(Some((option, named(entry, "headers", CredentialKind::Header)?)))
        }
    }
}

/// The package a runtime's arguments name: the value of one of `options`, else the first
/// argument that is not an option (`npx -y @scope/name --flag` → `@scope/name`).
fn first_operand(args: &[String], options: &[&str]) -> Option<String> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if options.contains(&arg.as_str()) {
            return iter.next().cloned();
        }
        if let Some((option, value)) = arg.split_once('=')
            && options.contains(&option)
        {
            return Some(value.to_owned());
        }
        if !arg.starts_with('-') {
            return Some(arg.clone());
        }
    }
    None
}

/// The names under `key` (an object) as required credentials; their values are dropped.
fn named(entry: &Value, key: &str, kind: CredentialKind) -> Result<Vec<CredentialSpec>, String> {
    let names: Vec<&String> = match entry.get(key) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => Map::keys(map).collect(),
        Some(_) => return Err(format!("`{key}` must be an object of names and values")),
    };
    Ok(names
        .into_iter()
        .map(|name| {
            let description = "Set for this server in the imported config (its value there is not kept: each user gives their own).".to_owned();
            CredentialSpec {
                kind: if kind == CredentialKind::Header { kind } else { credential_kind(name, &description) },
                name: name.clone(),
                description,
                required: true,
                secret: true,
                instructions: Vec::new(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn claude_cursor_and_vs_code_configs_become_runnable_records_without_their_values() {
        let claude = json!({"mcpServers": {
            "filesystem": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/data"]},
            "time": {"command": "uvx", "args": ["mcp-server-time", "--local-timezone=Europe/Paris"]},
            "github": {"command": "docker", "args": ["run", "-i", "--rm", "-e", "GITHUB_PERSONAL_ACCESS_TOKEN", "ghcr.io/github/github-mcp-server"],
                       "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "ghp_secretvalue123"}},
            "linear": {"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer lin_secret"}},
            "shell line": {"command": "npx -y some-server"},
            "nothing": {"args": []},
            "both": {"command": "npx", "url": "https://x.example/mcp"}
        }});
        let parsed = parse(&claude);
        let ids: Vec<&str> = parsed.servers.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["filesystem", "github", "linear", "time"]);
        let fs = &parsed.servers[0];
        assert_eq!(fs.launch[0].kind, LaunchKind::Npm);
        assert_eq!(fs.launch[0].package.as_deref(), Some("@modelcontextprotocol/server-filesystem"));
        assert!(fs.launch[0].verified && fs.launch[0].is_runnable());
        let time = &parsed.servers[3];
        assert_eq!(
            (time.launch[0].kind, time.launch[0].package.as_deref()),
            (LaunchKind::Pypi, Some("mcp-server-time"))
        );
        let github = &parsed.servers[1];
        assert_eq!(github.launch[0].kind, LaunchKind::Docker);
        assert_eq!(github.credentials[0].name, "GITHUB_PERSONAL_ACCESS_TOKEN");
        assert!(github.credentials[0].required && github.credentials[0].secret);
        let linear = &parsed.servers[2];
        assert_eq!(
            (linear.launch[0].kind, linear.launch[0].transport),
            (LaunchKind::Remote, Transport::StreamableHttp)
        );
        assert_eq!(
            (linear.credentials[0].name.as_str(), linear.credentials[0].kind),
            ("Authorization", CredentialKind::Header)
        );
        let everything = format!("{:?}", parsed.servers);
        assert!(
            !everything.contains("ghp_secretvalue123") && !everything.contains("lin_secret"),
            "{everything}"
        );
        let issues: Vec<(&str, &str)> =
            parsed.issues.iter().map(|i| (i.index.as_str(), i.reason.as_str())).collect();
        assert_eq!(
            issues,
            [
                ("both", "both `command` and `url`: give one"),
                ("nothing", "neither `command` nor `url`: nothing to launch"),
                (
                    "shell line",
                    "`command` is one program, not a command line: put the arguments of `npx -y some-server` in `args`"
                ),
            ]
        );

        let vs_code = json!({"inputs": [{"id": "token", "type": "promptString"}], "servers": {
            "fetch": {"type": "stdio", "command": "uvx", "args": ["mcp-server-fetch"]},
            "remote": {"type": "sse", "url": "https://old.example.com/sse"}
        }});
        let parsed = parse(&vs_code);
        assert_eq!(parsed.servers.len(), 2, "{:?}", parsed.issues);
        assert_eq!(parsed.servers[1].launch[0].transport, Transport::Sse);
    }

    #[test]
    fn the_package_is_the_first_operand_or_an_options_value() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(first_operand(&args(&["-y", "pkg", "x"]), &["-p"]), Some("pkg".into()));
        assert_eq!(first_operand(&args(&["-p", "pkg", "bin"]), &["-p"]), Some("pkg".into()));
        assert_eq!(
            first_operand(&args(&["--from=pkg[extra]", "bin"]), &["--from"]),
            Some("pkg[extra]".into())
        );
        assert_eq!(first_operand(&args(&["-y"]), &["-p"]), None);
    }
}
