//! The design's `servers.json`: `{"servers": [{"name", "description", "tools": [...]}]}`.
//! The id is the slug of the name. The design had no launch specs, so these records are
//! catalog-only until another source adds one.

use serde_json::Value;

use super::{Parsed, name_and_slug, optional_string, string_list, tools};
use crate::catalog::record::ServerRecord;

pub(super) fn parse(doc: &Value) -> Parsed {
    Parsed::from_entries(doc["servers"].as_array().into_iter().flatten(), server)
}

fn server(entry: &Value) -> Result<ServerRecord, String> {
    let (name, id) = name_and_slug(entry)?;
    Ok(ServerRecord {
        id,
        name,
        description: optional_string(entry, "description")?,
        categories: string_list(entry, "categories")?,
        repository: None,
        homepage: None,
        license: None,
        tools: tools(entry)?,
        launch: Vec::new(),
        credentials: Vec::new(),
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
            "not an object"
        ]});
        let parsed = parse(&doc);
        assert_eq!(parsed.servers.len(), 1);
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
            ]
        );
    }
}
