//! The design's `servers.json`: `{"servers": [{"name", "description", "tools": [...]}]}`.
//! The id is the slug of the name. The design had no launch specs: an entry is catalog-only
//! unless it has one as an MCP client config writes it (`command`, `args`, `env`, or `url`), the
//! operator's own, which makes it runnable.

use serde_json::Value;

use super::{Parsed, name_and_slug, optional_string, string_list, tools};
use crate::catalog::record::ServerRecord;

pub(super) fn parse(doc: &Value) -> Parsed {
    Parsed::from_entries(doc["servers"].as_array().into_iter().flatten(), server)
}

fn server(entry: &Value) -> Result<ServerRecord, String> {
    let (name, id) = name_and_slug(entry)?;
    let (launch, credentials) = match super::client::launch(entry)? {
        Some((option, credentials)) => (vec![option], credentials),
        None => (Vec::new(), Vec::new()),
    };
    Ok(ServerRecord {
        id,
        name,
        description: optional_string(entry, "description")?,
        categories: string_list(entry, "categories")?,
        repository: None,
        homepage: None,
        license: None,
        tools: tools(entry)?,
        launch,
        credentials,
        popularity: 0,
        origin: "design_servers".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tools_may_be_names_or_objects_and_bad_entries_are_reported() {
        let doc = json!({"servers": [
            {"name": "Google Sheets", "description": "Sheets", "tools": [
                "read_sheet",
                {"name": "append_row", "description": "Append", "inputSchema": {"type": "object"}},
                {"name": "clear", "input_schema": {"type": "object"}}
            ]},
            {"description": "no name"},
            {"name": "Bad Tools", "tools": [{"description": "nameless"}]},
            {"name": "google sheets"},
            "not an object",
            {"name": "Time", "description": "Time", "command": "uvx", "args": ["mcp-server-time"]},
            {"name": "Broken", "command": "uvx --from x"}
        ]});
        let parsed = parse(&doc);
        assert_eq!(parsed.servers.len(), 2);
        let time = &parsed.servers[1];
        assert_eq!((time.id.as_str(), time.launch[0].package.as_deref()), ("time", Some("mcp-server-time")));
        assert!(time.launch[0].is_runnable());
        let s = &parsed.servers[0];
        assert_eq!((s.id.as_str(), s.name.as_str()), ("google-sheets", "Google Sheets"));
        let tools: Vec<(&str, bool)> =
            s.tools.iter().map(|t| (t.name.as_str(), t.input_schema.is_some())).collect();
        assert_eq!(tools, vec![("read_sheet", false), ("append_row", true), ("clear", true)]);
        let issues: Vec<(&str, &str)> =
            parsed.issues.iter().map(|i| (i.index.as_str(), i.reason.as_str())).collect();
        assert_eq!(
            issues,
            vec![
                ("1", "missing `name`"),
                ("2", "tool 0: missing `name`"),
                ("3", "duplicate id `google-sheets` (the first entry with it was kept)"),
                ("4", "entry must be an object"),
                (
                    "6",
                    "`command` is one program, not a command line: put the arguments of `uvx --from x` in `args`"
                ),
            ]
        );
    }
}
