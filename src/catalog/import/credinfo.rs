//! The design's `credinfo.json`: `{"credential_instructions": {"<slug>": {"KEY": <value>}}}`, where
//! the slug is the server name in lowercase with spaces turned into `-`.
//!
//! dynamcp defines the value shape (documented in `docs/credinfo.md`) as an object
//! `{"description": str, "steps": [str], "required": bool, "secret": bool}`; every field is
//! optional. For older files, a bare string is one step and a list of strings is the steps.

use serde_json::Value;

use super::{EntryIssue, Parsed};

/// How to obtain one credential of one server: the stored row itself, since the file's entries
/// are stored as they are. `required`/`secret` are `None` when the file does not say, and the
/// catalog's own flags then stand.
pub type CredentialInstruction = crate::store::InstructionRow;

/// The slug the design keys instructions by.
pub fn credential_instructions_slug(server_name: &str) -> String {
    server_name.trim().to_lowercase().replace(' ', "-")
}

pub(super) fn parse(doc: &Value) -> Parsed {
    let mut parsed = Parsed::default();
    let Some(servers) = doc["credential_instructions"].as_object() else {
        parsed.issues.push(EntryIssue {
            index: "credential_instructions".into(),
            reason: "must be an object keyed by server slug".into(),
        });
        return parsed;
    };
    for (server, keys) in servers {
        let Some(keys) = keys.as_object() else {
            parsed.issues.push(EntryIssue {
                index: server.clone(),
                reason: "must be an object keyed by credential name".into(),
            });
            continue;
        };
        for (key, value) in keys {
            match instruction(server, key, value) {
                Ok(i) => parsed.instructions.push(i),
                Err(reason) => parsed.issues.push(EntryIssue { index: format!("{server}.{key}"), reason }),
            }
        }
    }
    parsed
}

fn instruction(server: &str, key: &str, value: &Value) -> Result<CredentialInstruction, String> {
    if server.trim().is_empty() || key.trim().is_empty() {
        return Err("server and key must not be empty".into());
    }
    let mut out = CredentialInstruction {
        server: server.trim().to_lowercase(),
        key: key.trim().to_owned(),
        description: String::new(),
        steps: Vec::new(),
        required: None,
        secret: None,
    };
    match value {
        Value::String(s) => out.steps = vec![s.trim().to_owned()],
        Value::Array(items) => out.steps = strings(items)?,
        Value::Object(map) => {
            if let Some(d) = map.get("description") {
                out.description = d.as_str().ok_or("`description` must be a string")?.trim().to_owned();
            }
            match map.get("steps").or_else(|| map.get("instructions")) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => out.steps = vec![s.trim().to_owned()],
                Some(Value::Array(items)) => out.steps = strings(items)?,
                Some(_) => return Err("`steps` must be a list of strings".into()),
            }
            out.required = flag(map.get("required"), "required")?;
            out.secret = flag(map.get("secret"), "secret")?;
        }
        _ => return Err("must be an object, a list of steps, or a string".into()),
    }
    out.steps.retain(|s| !s.is_empty());
    if out.description.is_empty() && out.steps.is_empty() {
        return Err("has neither a description nor steps".into());
    }
    Ok(out)
}

fn strings(items: &[Value]) -> Result<Vec<String>, String> {
    items
        .iter()
        .map(|v| v.as_str().map(|s| s.trim().to_owned()).ok_or_else(|| "steps must be strings".into()))
        .collect()
}

fn flag(value: Option<&Value>, name: &str) -> Result<Option<bool>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("`{name}` must be true or false")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn all_value_shapes_are_read() {
        let doc = json!({"credential_instructions": {
            "gmail": {
                "GMAIL_CLIENT_ID": {"description": "OAuth client id", "steps": ["Open Google Cloud Console", "Create an OAuth client"], "required": true, "secret": false},
                "GMAIL_TOKEN": "Run the auth flow",
                "GMAIL_SCOPES": ["a", "b"],
                "BAD": 12,
                "EMPTY": {}
            },
            "slack": "nope"
        }});
        let parsed = parse(&doc);
        let got: Vec<(&str, &str, usize, Option<bool>)> = parsed
            .instructions
            .iter()
            .map(|i| (i.server.as_str(), i.key.as_str(), i.steps.len(), i.required))
            .collect();
        assert_eq!(
            got,
            vec![
                ("gmail", "GMAIL_CLIENT_ID", 2, Some(true)),
                ("gmail", "GMAIL_SCOPES", 2, None),
                ("gmail", "GMAIL_TOKEN", 1, None),
            ]
        );
        let issues: Vec<&str> = parsed.issues.iter().map(|i| i.index.as_str()).collect();
        assert_eq!(issues, vec!["gmail.BAD", "gmail.EMPTY", "slack"]);
    }

    #[test]
    fn slug_matches_the_design() {
        assert_eq!(credential_instructions_slug("Google Sheets"), "google-sheets");
    }
}
