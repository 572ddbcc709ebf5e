//! Catalog import through the real `dynamcp catalog import` binary, every format, malformed
//! files included; and the catalog HTTP endpoints with whole-body assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Db, TestServer, error_body};
use serde_json::{Value, json};

fn dynamcp(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dynamcp"))
        .args(args)
        .env_clear()
        .env("DYNAMCP_DATA_DIR", data_dir)
        .env("DYNAMCP_DEFAULT_CATALOG", "false")
        .env("DYNAMCP_NO_MODEL", "true")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn write(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path.display().to_string()
}

fn search_ids(data_dir: &Path, query: &str) -> Vec<String> {
    let out = dynamcp(data_dir, &["search", "--json", "--limit", "10", query]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["results"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

fn design_servers() -> Value {
    json!({"servers": [
        {"name": "Gmail", "description": "Read, search and send Gmail messages",
         "tools": ["search_emails", {"name": "send_email", "description": "Send an email", "inputSchema": {"type": "object"}}]},
        {"name": "Google Sheets", "description": "Read and write Google Sheets spreadsheets", "tools": ["append_row"]},
        {"description": "an entry without a name"}
    ]})
}

#[test]
fn every_format_imports_and_bad_entries_are_reported_by_file_and_index() {
    let data = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let servers = write(files.path(), "servers.json", &design_servers());
    let credinfo = write(
        files.path(),
        "credinfo.json",
        &json!({"credential_instructions": {
            "gmail": {"GMAIL_OAUTH_TOKEN": {"description": "OAuth token", "steps": ["Create an OAuth client", "Run the consent flow"], "required": true, "secret": true}},
            "google-sheets": {"GOOGLE_SERVICE_ACCOUNT_JSON": {"description": "Service account key file", "steps": ["Create a service account"], "required": true, "secret": true}}
        }}),
    );
    let registry = write(
        files.path(),
        "server.json",
        &json!({
            "name": "io.github.acme/weather", "description": "Weather forecasts for any city",
            "packages": [{"registryType": "npm", "identifier": "@acme/weather", "version": "1.0.0",
                          "environmentVariables": [{"name": "WEATHER_KEY", "isRequired": true, "isSecret": true}]}]
        }),
    );
    let merged = write(
        files.path(),
        "catalog.json",
        &json!({"schema_version": 1, "servers": [
            {"id": "time-server", "name": "Time", "description": "Current time and timezone conversion",
             "launch": [{"kind": "pypi", "transport": "stdio", "package": "mcp-server-time", "command": "uvx", "args": ["mcp-server-time"], "verified": true}],
             "tools": [{"name": "get_current_time", "description": "Current time in a timezone"}]}
        ]}),
    );
    let out = dynamcp(data.path(), &["catalog", "import", &servers, &credinfo, &registry, &merged]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("servers.json (design) — 2 servers (2 new, 0 updated, 0 unchanged), 0 credential instructions, 1 invalid"), "{log}");
    assert!(log.contains(&format!("{servers}[2]: missing `name`")), "{log}");
    assert!(
        log.contains(
            "credinfo.json (design) — 0 servers (0 new, 0 updated, 0 unchanged), 2 credential instructions"
        ),
        "{log}"
    );
    assert!(log.contains("MCP registry server.json — 1 servers (1 new"), "{log}");
    assert!(log.contains("dynamcp merged catalog — 1 servers (1 new"), "{log}");

    // Re-importing unchanged files changes nothing.
    let again = dynamcp(data.path(), &["catalog", "import", &servers, &merged]);
    assert!(text(&again).contains("2 servers (0 new, 0 updated, 2 unchanged)"), "{}", text(&again));

    assert_eq!(search_ids(data.path(), "send an email")[0], "gmail");
    assert_eq!(search_ids(data.path(), "what time is it in Tokyo")[0], "time-server");
    assert_eq!(search_ids(data.path(), "weather forecast")[0], "io.github.acme-weather");
}

#[test]
fn a_file_with_nothing_valid_fails_and_changes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let good = write(files.path(), "servers.json", &design_servers());
    assert!(dynamcp(data.path(), &["catalog", "import", &good]).status.success());

    let bad = write(files.path(), "bad.json", &json!({"servers": [{"description": "x"}, 42]}));
    let not_json = files.path().join("broken.json");
    std::fs::write(&not_json, b"{\"servers\": [").unwrap();
    let unknown = write(files.path(), "unknown.json", &json!({"hello": "world"}));
    let missing = files.path().join("missing.json").display().to_string();
    for (file, expect) in [
        (bad.clone(), format!("{bad}: no valid entry; nothing was imported from it")),
        (not_json.display().to_string(), "is not valid JSON".to_owned()),
        (unknown.clone(), format!("{unknown}: unrecognised format")),
        (missing.clone(), format!("could not read {missing}")),
    ] {
        let out = dynamcp(data.path(), &["catalog", "import", "--replace", &file]);
        assert!(!out.status.success(), "{file}");
        assert!(text(&out).contains(&expect), "{}", text(&out));
        assert!(text(&out).contains("--replace: skipped"), "{}", text(&out));
    }
    // The earlier import is untouched.
    assert_eq!(search_ids(data.path(), "gmail")[0], "gmail");
}

#[test]
fn replace_removes_servers_that_are_in_no_given_file() {
    let data = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let both = write(files.path(), "both.json", &design_servers());
    let one = write(
        files.path(),
        "one.json",
        &json!({"servers": [{"name": "Gmail", "description": "Read, search and send Gmail messages"}]}),
    );
    assert!(dynamcp(data.path(), &["catalog", "import", &both]).status.success());
    let out = dynamcp(data.path(), &["catalog", "import", "--replace", &one]);
    assert!(text(&out).contains("--replace: removed 1 servers"), "{}", text(&out));
    assert_eq!(search_ids(data.path(), "spreadsheets gmail"), vec!["gmail"]);
}

async fn server_with(servers: Value) -> TestServer {
    let (args, dir) = common::test_args(Db::Sqlite).await;
    let file = dir.path().join("servers.json");
    std::fs::write(&file, serde_json::to_vec(&servers).unwrap()).unwrap();
    let out = dynamcp(dir.path(), &["catalog", "import", &file.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    TestServer::start_with(args, dir).await
}

#[tokio::test]
async fn search_endpoint_answers_the_documented_shape() {
    let server = server_with(json!({"schema_version": 1, "servers": [
        {"id": "gmail-mcp", "name": "Gmail", "description": "Read and send Gmail messages",
         "launch": [{"kind": "npm", "transport": "stdio", "package": "gmail-mcp", "command": "npx", "args": ["-y", "gmail-mcp"]}],
         "tools": [{"name": "send_email", "description": "Send an email"}, {"name": "list_labels", "description": "Labels"}],
         "credentials": [{"name": "GMAIL_TOKEN", "description": "OAuth token", "required": true, "secret": true}]},
        {"id": "sheets", "name": "Google Sheets", "description": "Spreadsheets"}
    ]})).await;
    let (status, body) =
        server.post("/api/servers/search", json!({"query": "send an email with gmail", "limit": 1})).await;
    assert_eq!(status, 200);
    let score = body["results"][0]["score"].clone();
    assert!(score.as_f64().unwrap() > 0.0);
    assert_eq!(
        body,
        json!({"results": [{
            "id": "gmail-mcp", "name": "Gmail", "description": "Read and send Gmail messages", "score": score,
            "matched_tools": ["send_email"],
            "credentials": [{"key": "GMAIL_TOKEN", "required": true, "secret": true}],
            "runnable": true
        }]})
    );
    for (body, message) in [
        (json!({"query": "x", "limit": 0}), "limit must be between 1 and 50"),
        (json!({"query": "x", "limit": 51}), "limit must be between 1 and 50"),
        (json!({"query": "  "}), "query must not be empty"),
    ] {
        assert_eq!(
            server.post("/api/servers/search", body).await,
            (422, error_body("invalid_request", message))
        );
    }
    let (status, body) = server.post("/api/servers/search", json!({"limit": 3})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_request")));
    server.stop().await;
}

#[tokio::test]
async fn server_detail_and_browse() {
    let server = server_with(design_servers()).await;
    let (status, body) = server.get("/api/servers/gmail").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "id": "gmail", "name": "Gmail", "description": "Read, search and send Gmail messages",
            "categories": [],
            "tools": [
                {"name": "search_emails", "description": ""},
                {"name": "send_email", "description": "Send an email", "input_schema": {"type": "object"}}
            ],
            "launch": [], "credentials": [], "popularity": 0, "origin": "design_servers", "runnable": false
        })
    );
    assert_eq!(
        server.get("/api/servers/nope").await,
        (404, error_body("server_not_found", "server `nope` is not in the catalog"))
    );
    let (status, list) = server.get("/api/servers?limit=1&offset=1").await;
    assert_eq!(status, 200);
    assert_eq!(
        list,
        json!({"servers": [{"id": "google-sheets", "name": "Google Sheets",
                             "description": "Read and write Google Sheets spreadsheets", "runnable": false, "tools": 1}],
               "total": 2, "limit": 1, "offset": 1})
    );
    let (_, filtered) = server.get("/api/servers?q=spreadsheet").await;
    assert_eq!(filtered["total"], 1);
    assert_eq!(filtered["servers"][0]["id"], "google-sheets");
    assert_eq!(
        server.get("/api/servers?limit=500").await,
        (400, error_body("invalid_query", "limit must be between 1 and 100"))
    );
    server.stop().await;
}

/// Results are cached per index: a repeated search is answered the same, and an import (which
/// replaces the index) is seen by the very next search.
#[tokio::test]
async fn a_repeated_search_is_stable_and_an_import_is_seen_at_once() {
    let (store, dir) = common::fresh_store(Db::Sqlite).await;
    let catalog = dynamcp::catalog::Catalog::open(store, None, dynamcp::catalog::DenseBackend::InProcess)
        .await
        .unwrap();
    let first = write(
        dir.path(),
        "first.json",
        &json!({"servers": [{"name": "Gmail", "description": "Read and send Gmail messages"}]}),
    );
    catalog.import_file(Path::new(&first), &|_, _| {}).await.unwrap();
    catalog.reload().await.unwrap();
    let ids =
        |found: Vec<dynamcp::catalog::SearchResult>| found.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let query = "write rows to a google spreadsheet";
    let before = ids(catalog.search_results(query, 5).await.unwrap());
    assert_eq!(ids(catalog.search_results(query, 5).await.unwrap()), before, "a repeat answers the same");
    assert!(!before.contains(&"google-sheets".to_owned()));

    let second = write(
        dir.path(),
        "second.json",
        &json!({"servers": [{"name": "Google Sheets", "description": "Write rows to a Google spreadsheet"}]}),
    );
    catalog.import_file(Path::new(&second), &|_, _| {}).await.unwrap();
    catalog.reload().await.unwrap();
    assert_eq!(ids(catalog.search_results(query, 5).await.unwrap())[0], "google-sheets");
}
