//! Search on the real default catalog (9,465 servers) with the real local model: clear requests
//! find the expected servers, and multi-service requests surface every service.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Db, TestServer};
use serde_json::{Value, json};

async fn default_catalog_server() -> TestServer {
    let (mut args, dir) = common::test_args(Db::Sqlite).await;
    common::with_default_catalog(&mut args);
    TestServer::start_with(args, dir).await
}

fn names(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r["id"].as_str().unwrap(), r["name"].as_str().unwrap()).to_lowercase())
        .collect()
}

#[tokio::test]
async fn clear_requests_find_the_expected_servers() {
    let server = default_catalog_server().await;
    let cases: &[(&str, &[&str])] = &[
        ("what time is it in Tokyo", &["time"]),
        ("find invoices in my Gmail and add them to a Google Sheet", &["gmail", "sheet"]),
        ("monitor Gmail and send Slack notifications", &["gmail", "slack"]),
        ("run a SQL query against my postgres database", &["postgres"]),
        ("open an issue on GitHub", &["github"]),
    ];
    for (query, expected) in cases {
        let (status, body) = server.post("/api/servers/search", json!({"query": query, "limit": 5})).await;
        assert_eq!(status, 200);
        let got = names(&body);
        for word in *expected {
            assert!(got.iter().any(|n| n.contains(word)), "{query:?}: no {word} server in {got:?}");
        }
    }
    // The top hit for a plain single-need request is on target, not just somewhere in the five.
    let (_, body) =
        server.post("/api/servers/search", json!({"query": "what time is it in Tokyo", "limit": 1})).await;
    assert!(names(&body)[0].contains("time"), "{body}");
    server.stop().await;
}
