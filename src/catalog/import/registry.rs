//! The official MCP registry's `server.json`: one object, a list of them, or an API page
//! `{"servers": [{"server": {...}, "_meta": {...}}]}`. Packages become launch options run by their
//! runtime (npm by `npx`, PyPI by `uvx`, OCI by `docker`), remotes become URL options, and
//! environment variables and headers become credential requirements. Both the current camelCase
//! schema and the older snake_case one are read. The id is the slug of the name.

use serde_json::Value;

use super::merged::credential_kind;
use super::{Parsed, name_and_slug, optional_string, required_str, str_field};
use crate::catalog::record::{
    CredentialKind, CredentialSpec, LaunchKind, LaunchOption, ServerRecord, Transport,
};

pub(super) fn parse(doc: &Value) -> Parsed {
    let items: Vec<&Value> = match doc {
        Value::Array(items) => items.iter().collect(),
        Value::Object(map) => match map.get("servers") {
            Some(Value::Array(items)) => items.iter().collect(),
            _ => vec![doc],
        },
        _ => Vec::new(),
    };
    let entries = items.into_iter().map(|item| item.get("server").filter(|s| s.is_object()).unwrap_or(item));
    Parsed::from_entries(entries, server)
}

/// Reads a field under its camelCase name or its older snake_case one.
fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake)).filter(|x| !x.is_null())
}

fn server(entry: &Value) -> Result<ServerRecord, String> {
    let (name, id) = name_and_slug(entry)?;
    let mut launch = Vec::new();
    let mut credentials: Vec<CredentialSpec> = Vec::new();
    for (i, package) in
        field(entry, "packages", "packages").and_then(Value::as_array).into_iter().flatten().enumerate()
    {
        let (option, creds) = package_option(package).map_err(|e| format!("package {i}: {e}"))?;
        launch.extend(option);
        merge_credentials(&mut credentials, creds);
    }
    for (i, remote) in
        field(entry, "remotes", "remotes").and_then(Value::as_array).into_iter().flatten().enumerate()
    {
        let (option, creds) = remote_option(remote).map_err(|e| format!("remote {i}: {e}"))?;
        launch.push(option);
        merge_credentials(&mut credentials, creds);
    }
    let repository = match entry.get("repository") {
        Some(Value::String(url)) => Some(url.clone()),
        Some(repo) => str_field(repo, "url").map(str::to_owned),
        None => None,
    };
    Ok(ServerRecord {
        id,
        name: str_field(entry, "title").map_or_else(|| name.clone(), str::to_owned),
        description: optional_string(entry, "description")?,
        categories: Vec::new(),
        repository,
        homepage: field(entry, "websiteUrl", "website_url").and_then(Value::as_str).map(str::to_owned),
        license: None,
        tools: Vec::new(),
        launch,
        credentials,
        popularity: 0,
        origin: "registry".to_owned(),
    })
}

fn merge_credentials(into: &mut Vec<CredentialSpec>, new: Vec<CredentialSpec>) {
    for c in new {
        if !into.iter().any(|e| e.name == c.name) {
            into.push(c);
        }
    }
}

fn transport(v: &Value) -> Result<Transport, String> {
    let t = v
        .get("transport")
        .and_then(|t| t.get("type").or(Some(t)))
        .and_then(Value::as_str)
        .or_else(|| field(v, "type", "transport_type").and_then(Value::as_str));
    match t {
        None | Some("stdio") => Ok(Transport::Stdio),
        Some("sse") => Ok(Transport::Sse),
        Some("streamable-http" | "streamable_http" | "http") => Ok(Transport::StreamableHttp),
        Some(other) => Err(format!("unknown transport `{other}`")),
    }
}

fn package_option(p: &Value) -> Result<(Option<LaunchOption>, Vec<CredentialSpec>), String> {
    let registry = field(p, "registryType", "registry_type")
        .or_else(|| p.get("registry_name"))
        .and_then(Value::as_str)
        .ok_or("missing `registryType`")?;
    let identifier = field(p, "identifier", "name").and_then(Value::as_str).ok_or("missing `identifier`")?;
    let version = p.get("version").and_then(Value::as_str).filter(|v| !v.is_empty() && *v != "latest");
    let (kind, command, mut args) = match registry {
        "npm" => {
            let spec = version.map_or_else(|| identifier.to_owned(), |v| format!("{identifier}@{v}"));
            (LaunchKind::Npm, "npx", vec!["-y".to_owned(), spec])
        }
        "pypi" => {
            let spec = version.map_or_else(|| identifier.to_owned(), |v| format!("{identifier}=={v}"));
            (LaunchKind::Pypi, "uvx", vec![spec])
        }
        "oci" | "docker" => {
            let image = match version {
                Some(v) if !identifier.contains(':') => format!("{identifier}:{v}"),
                _ => identifier.to_owned(),
            };
            (LaunchKind::Docker, "docker", vec!["run".into(), "-i".into(), "--rm".into(), image])
        }
        // Runtimes dynamcp does not launch (nuget, mcpb): the entry stays, without this option.
        _ => return Ok((None, env_credentials(p)?)),
    };
    for arg in
        field(p, "packageArguments", "package_arguments").and_then(Value::as_array).into_iter().flatten()
    {
        args.extend(argument(arg));
    }
    let option = LaunchOption {
        kind,
        transport: transport(p)?,
        command: Some(command.to_owned()),
        args,
        package: Some(identifier.to_owned()),
        url: None,
        verified: false,
        registry: None,
    };
    Ok((Some(option), env_credentials(p)?))
}

/// A package argument as command-line words: its fixed value, or a `{{name}}` placeholder the
/// user must fill before the server can launch.
fn argument(arg: &Value) -> Vec<String> {
    let value = str_field(arg, "value")
        .or_else(|| str_field(arg, "default"))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "{{{{{}}}}}",
                str_field(arg, "valueHint").or_else(|| str_field(arg, "name")).unwrap_or("value")
            )
        });
    match (str_field(arg, "type"), str_field(arg, "name")) {
        (Some("named"), Some(name)) => vec![name.to_owned(), value],
        _ => vec![value],
    }
}

fn env_credentials(p: &Value) -> Result<Vec<CredentialSpec>, String> {
    let vars = field(p, "environmentVariables", "environment_variables").and_then(Value::as_array);
    vars.into_iter()
        .flatten()
        .enumerate()
        .map(|(i, v)| spec(v, false).map_err(|e| format!("environment variable {i}: {e}")))
        .collect()
}

fn spec(v: &Value, header: bool) -> Result<CredentialSpec, String> {
    let name = required_str(v, "name")?;
    let description = optional_string(v, "description")?;
    let flag = |camel: &str, snake: &str| field(v, camel, snake).and_then(Value::as_bool).unwrap_or(false);
    Ok(CredentialSpec {
        kind: if header { CredentialKind::Header } else { credential_kind(&name, &description) },
        name,
        description,
        required: flag("isRequired", "is_required") || flag("required", "required"),
        secret: flag("isSecret", "is_secret"),
        instructions: Vec::new(),
    })
}

fn remote_option(r: &Value) -> Result<(LaunchOption, Vec<CredentialSpec>), String> {
    let url = required_str(r, "url")?;
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(format!("url `{url}` is not http(s)"));
    }
    let headers = r.get("headers").and_then(Value::as_array);
    let creds = headers
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, h)| spec(h, true).map_err(|e| format!("header {i}: {e}")))
        .collect::<Result<_, _>>()?;
    let option = LaunchOption {
        kind: LaunchKind::Remote,
        transport: transport(r)?,
        command: None,
        args: Vec::new(),
        package: None,
        url: Some(url),
        verified: false,
        registry: None,
    };
    Ok((option, creds))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn packages_remotes_and_secrets_are_read() {
        let doc = json!({
            "$schema": "https://static.modelcontextprotocol.io/schemas/2025-09-29/server.schema.json",
            "name": "io.github.acme/weather",
            "title": "Weather",
            "description": "Forecasts",
            "version": "1.2.0",
            "repository": {"url": "https://github.com/acme/weather", "source": "github"},
            "packages": [
                {"registryType": "npm", "identifier": "@acme/weather", "version": "1.2.0",
                 "transport": {"type": "stdio"},
                 "packageArguments": [{"type": "named", "name": "--units", "default": "metric"}],
                 "environmentVariables": [
                    {"name": "WEATHER_API_KEY", "description": "API key", "isRequired": true, "isSecret": true},
                    {"name": "WEATHER_REGION", "description": "Region"}
                 ]},
                {"registryType": "pypi", "identifier": "acme-weather", "version": "1.2.0"},
                {"registryType": "nuget", "identifier": "Acme.Weather"}
            ],
            "remotes": [{"type": "streamable-http", "url": "https://weather.acme.dev/mcp",
                          "headers": [{"name": "Authorization", "isRequired": true, "isSecret": true}]}]
        });
        let parsed = parse(&doc);
        assert!(parsed.issues.is_empty(), "{:?}", parsed.issues);
        let s = &parsed.servers[0];
        assert_eq!((s.id.as_str(), s.name.as_str()), ("io.github.acme-weather", "Weather"));
        assert_eq!(s.repository.as_deref(), Some("https://github.com/acme/weather"));
        let launches: Vec<(LaunchKind, Option<&str>, Vec<&str>)> = s
            .launch
            .iter()
            .map(|l| (l.kind, l.command.as_deref(), l.args.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            launches,
            vec![
                (LaunchKind::Npm, Some("npx"), vec!["-y", "@acme/weather@1.2.0", "--units", "metric"]),
                (LaunchKind::Pypi, Some("uvx"), vec!["acme-weather==1.2.0"]),
                (LaunchKind::Remote, None, vec![]),
            ]
        );
        assert_eq!(s.launch[2].transport, Transport::StreamableHttp);
        let creds: Vec<(&str, bool, bool, CredentialKind)> =
            s.credentials.iter().map(|c| (c.name.as_str(), c.required, c.secret, c.kind)).collect();
        assert_eq!(
            creds,
            vec![
                ("WEATHER_API_KEY", true, true, CredentialKind::Env),
                ("WEATHER_REGION", false, false, CredentialKind::Env),
                ("Authorization", true, true, CredentialKind::Header),
            ]
        );
    }

    #[test]
    fn api_pages_and_lists_are_unwrapped_and_bad_entries_reported() {
        let page = json!({"servers": [
            {"server": {"name": "a.b/c", "description": "x", "packages": [{"registry_name": "npm", "name": "c", "environment_variables": [{"name": "TOKEN", "is_secret": true}]}]}, "_meta": {}},
            {"server": {"description": "nameless", "packages": []}},
            {"server": {"name": "d.e/f", "remotes": [{"type": "sse", "url": "ftp://nope"}]}}
        ]});
        let parsed = parse(&page);
        assert_eq!(parsed.servers.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), vec!["a.b-c"]);
        assert!(parsed.servers[0].credentials[0].secret);
        let issues: Vec<(&str, &str)> =
            parsed.issues.iter().map(|i| (i.index.as_str(), i.reason.as_str())).collect();
        assert_eq!(issues, vec![("1", "missing `name`"), ("2", "remote 0: url `ftp://nope` is not http(s)")]);
    }
}
