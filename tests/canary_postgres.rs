//! The secret canary on PostgreSQL: credentials sent through chat (the design's Gmail → Google
//! Sheets example, on real catalog records) never appear in a `pg_dump` of the whole database,
//! nor in any process's command line. (SQLite's files, the logs and every response are checked
//! in `master_agent.rs`; the servers' environments in `runtime.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Db, TestServer};
use serde_json::{Map, Value, json};

#[tokio::test]
async fn credentials_never_reach_a_pg_dump_or_a_command_line() {
    let (args, dir) = common::test_args(Db::Postgres).await;
    let database_url = args.store.database_url.clone().unwrap();
    common::import_fixture_catalog(&args).await;
    let server = TestServer::start_with(args, dir).await;
    let canary = format!("canary{}", uuid::Uuid::new_v4().simple());

    let (status, mut body) = server
        .post("/api/chat", json!({"message": "Check my Gmail for invoices and put them in a Google Sheet"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let session = body["session_id"].as_str().unwrap().to_owned();
    let mut sent = 0;
    while body["status"] == "pending_credentials" {
        let mut credentials = Map::new();
        for item in body["required_credentials"].as_array().unwrap() {
            let server_entry = credentials
                .entry(item["mcp_server"].as_str().unwrap().to_owned())
                .or_insert_with(|| json!({}));
            let key = item["credential_key"].as_str().unwrap();
            server_entry[key] = Value::String(format!("{canary}-{key}"));
            sent += 1;
        }
        let files: Vec<Value> = body["required_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                use base64::Engine;
                let content = base64::engine::general_purpose::STANDARD.encode(format!("{{\"secret\":\"{canary}\"}}"));
                json!({"name": format!("{}/{}", f["mcp_server"].as_str().unwrap(), f["file_key"].as_str().unwrap()),
                       "content_base64": content})
            })
            .collect();
        let (status, next) = server
            .post(
                "/api/chat",
                json!({"message": "", "session_id": session, "credentials": credentials, "files": files}),
            )
            .await;
        assert_eq!(status, 200, "{next}");
        assert_ne!(next["required_credentials"], body["required_credentials"], "progress: {next}");
        body = next;
    }
    assert_eq!(body["status"], "success", "{body}");
    assert!(sent >= 2, "the example needs credentials: {sent}");
    assert!(!body.to_string().contains(&canary));

    let dump =
        tokio::process::Command::new("pg_dump").arg("--no-owner").arg(&database_url).output().await.unwrap();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(text.contains(&session), "the dump holds the session");
    assert!(text.contains("COPY public.credentials"), "the dump holds the credentials table");
    assert!(!text.contains(&canary), "a credential value is readable in pg_dump");

    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            assert!(!String::from_utf8_lossy(&cmdline).contains(&canary), "in {:?}", entry.path());
        }
    }
    server.stop().await;
}
